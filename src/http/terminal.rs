//! The student's terminal: the session page, its assets, and the WebSocket
//! the page talks to the gateway over.
//!
//! No credential is ever in a URL. A launch redirects to
//! `/session/<id>#code=…`: the page (the same shell for every request,
//! nothing of the session in it) reads the one-time code from the fragment,
//! which browsers never send to a server, removes it from the address bar,
//! and sends it as its socket's first message; labpool records the code as
//! used (once, in the store) and answers with a session token, which the
//! page keeps in memory and in the tab's `sessionStorage` (for a reload)
//! and authenticates its reconnects with. A token is renewed over the
//! socket, so only the attached page gets renewals; the page acknowledges
//! each, and from then on older tokens cannot attach (`Gateway::attach`).
//!
//! Socket protocol: the socket must come from labpool's own origin, or it is
//! closed (4403) before anything is read. The page's first message is text:
//! `{"type":"auth","code"|"token":…,"from":N}` (`from`: output bytes the
//! page already has); anything else, or nothing within [`AUTH_TIMEOUT`],
//! closes it (4401). Then binary frames are terminal bytes both ways; text
//! frames are JSON — `resize` and `ack` (of a renewed token) from the page;
//! `attached`, `token`, `status` and `session` from labpool. Close codes:
//! 4000 the session ended (the reason follows), 4001 another tab took over,
//! 4401 credential refused (the reason says why), 4403 another site's page,
//! 4404 no such session, 1012 labpool restarting, 1013 the page fell behind
//! (reconnect). Every refusal is logged with its reason; codes and tokens
//! never are.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

use super::App;
use super::lti::sent_from;
use crate::reconcile::now_ms;
use crate::session_token::{SessionClaims, TokenError, code_id};
use crate::terminal::gateway::{AttachError, Status, ToPage};
use crate::terminal::page;

/// A fresh token goes to the page this often, well inside a token's life,
/// so a page that reconnects after a blip always holds a valid one.
const TOKEN_REFRESH: Duration = Duration::from_secs(60);
/// How long a socket may stay open without authenticating.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest frame a page may send (a big paste).
const MAX_FRAME: usize = 64 << 10;
/// A socket's read and write buffers. Terminal traffic is small frames; the
/// library's 128 KiB defaults would be most of an open terminal's memory.
const SOCKET_BUFFER: usize = 8 << 10;

pub const CLOSE_ENDED: u16 = 4000;
pub const CLOSE_REPLACED: u16 = 4001;
pub const CLOSE_REFUSED: u16 = 4401;
pub const CLOSE_ORIGIN: u16 = 4403;
pub const CLOSE_UNKNOWN: u16 = 4404;

/// The page's first message.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Hello {
    Auth {
        /// The launch's one-time code (a fresh page)…
        code: Option<String>,
        /// …or the session token the page holds (a reconnect, a reload).
        token: Option<String>,
        /// Output bytes the page already has.
        #[serde(default)]
        from: u64,
    },
}

/// The session page's headers: never cached, never sent on as a referrer,
/// scripts only from labpool, framed only by labpool and the LMSs it is
/// registered with (`frame_ancestors`).
fn page_headers(frame_ancestors: &str) -> [(header::HeaderName, String); 4] {
    [
        (header::CACHE_CONTROL, "no-store".into()),
        (header::REFERRER_POLICY, "no-referrer".into()),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
        (
            header::CONTENT_SECURITY_POLICY,
            format!(
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors {frame_ancestors}"
            ),
        ),
    ]
}

/// Who may show the session page in a frame: labpool itself (the try-it
/// LMS), the registered platforms' origins and `lti.frame_ancestors`.
async fn frame_ancestors(app: &App) -> String {
    let mut sources = vec!["'self'".to_owned()];
    match app.lti.registry.origins().await {
        Ok(origins) => sources.extend(origins),
        // Only the configured ones are missed; the page still works on
        // labpool's own origin and in a window of its own.
        Err(e) => tracing::error!(error = %e, "session page: registered platforms unreadable"),
    }
    sources.extend(
        app.lti
            .frame_ancestors
            .iter()
            .map(|o| o.trim_end_matches('/').to_owned()),
    );
    sources.join(" ")
}

/// The page: one shell for every session id, so it tells nobody anything;
/// what the session is comes over the authenticated socket.
pub async fn session_page(State(app): State<App>, Path(id): Path<String>) -> Response {
    let html = page::render(&id);
    (page_headers(&frame_ancestors(&app).await), Html(html)).into_response()
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match page::asset(&name) {
        Some((content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "public, max-age=86400"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The terminal's socket. Its origin is checked first and its credential
/// in its first message; a refusal is a close frame with its reason, which
/// a page (unlike an HTTP status on a failed upgrade) can read and explain.
pub async fn socket(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let origin = if sent_from(&headers, app.lti.origin()) {
        Ok(())
    } else {
        // Debug-formatted: whatever a client sent cannot break a log line.
        Err(format!(
            "{:?}",
            headers
                .get(header::ORIGIN)
                .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned())
        ))
    };
    ws.max_message_size(MAX_FRAME)
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        .on_upgrade(move |socket| bridge(app, id, origin, socket))
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    // A close reason is at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(&reason[..end]),
        })))
        .await;
}

fn text(value: serde_json::Value) -> Message {
    Message::Text(Utf8Bytes::from(value.to_string()))
}

fn status(s: &Status) -> Message {
    text(json!({"type": "status", "state": s.name(), "message": s.message()}))
}

/// Reads the page's first message and checks its credential: the token the
/// page is to hold from now on (a new one for a code) and, for a code,
/// that token to send it.
async fn authenticate(
    app: &App,
    id: &str,
    socket: &mut WebSocket,
) -> Result<(u64, SessionClaims, Option<String>), String> {
    let first = match tokio::time::timeout(AUTH_TIMEOUT, socket.recv()).await {
        Err(_) => {
            return Err(format!(
                "no auth message within {} s",
                AUTH_TIMEOUT.as_secs()
            ));
        }
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(Some(Ok(_))) => return Err("the first message must be the page's auth message".into()),
        Ok(Some(Err(_)) | None) => return Err("the page left before authenticating".into()),
    };
    let Ok(Hello::Auth { code, token, from }) = serde_json::from_str::<Hello>(first.as_str())
    else {
        return Err("the first message must be the page's auth message".into());
    };
    let now = now_ms();
    let tokens = app.lti.tokens();
    match (code, token) {
        (Some(code), None) => {
            let claims = tokens
                .open_code(&code, id, now / 1000)
                .map_err(|e| format!("code refused: {e}"))?;
            let first_use = app
                .lti
                .store()
                .redeem_code(&code_id(&claims), id, claims.exp * 1000, now)
                .await
                .map_err(|e| format!("code refused: labpool cannot reach its store ({e})"))?;
            if !first_use {
                return Err(format!("code refused: {}", TokenError::Spent));
            }
            let token = tokens.issue_at_ms(id, now);
            let claims = tokens
                .verify(Some(&token), id, now / 1000)
                .expect("a token just issued verifies");
            Ok((from, claims, Some(token)))
        }
        (None, token) => tokens
            .verify(token.as_deref(), id, now / 1000)
            .map(|claims| (from, claims, None))
            .map_err(|e| format!("token refused: {e}")),
        (Some(_), Some(_)) => Err("send a code or a token, not both".into()),
    }
}

async fn bridge(app: App, id: String, origin: Result<(), String>, mut socket: WebSocket) {
    if let Err(origin) = origin {
        tracing::warn!(session = %id, origin = %origin, "terminal refused: not labpool's origin");
        return close(
            socket,
            CLOSE_ORIGIN,
            "only labpool's own pages may open a terminal",
        )
        .await;
    }
    let (from, claims, new_token) = match authenticate(&app, &id, &mut socket).await {
        Ok(ok) => ok,
        Err(reason) => {
            tracing::warn!(session = %id, reason = %reason, "terminal refused");
            return close(socket, CLOSE_REFUSED, &reason).await;
        }
    };
    let session = match app.lti.store().session(&id).await {
        Ok(Some(s)) => s,
        Ok(None) => return close(socket, CLOSE_UNKNOWN, "no such session").await,
        Err(e) => {
            tracing::error!(session = %id, error = %e, "terminal: store");
            return close(socket, 1011, "labpool cannot reach its store").await;
        }
    };
    if session.ended_at.is_some() {
        let reason = session.end_reason.as_deref().unwrap_or("ended");
        return close(socket, CLOSE_ENDED, reason).await;
    }
    let mut attachment = match app.gateway.attach(&id, from, claims.issued_ms()) {
        Ok(a) => a,
        Err(AttachError::Ended(reason)) => return close(socket, CLOSE_ENDED, &reason).await,
        Err(AttachError::Superseded) => {
            let reason = "token refused: a newer one is in use by another page; open the lab from your course again";
            tracing::warn!(session = %id, reason, "terminal refused");
            return close(socket, CLOSE_REFUSED, reason).await;
        }
    };
    let mut course = app.lti.catalog.get().await.ok().and_then(|c| {
        c.course(&session.course)
            .map(|c| (c.title.clone(), c.idle_ms))
    });
    if course.is_none() {
        // A removed course still draining: its last stored file, whose
        // `idle` still ends the session.
        let stored = app
            .lti
            .store()
            .courses()
            .await
            .ok()
            .and_then(|rows| rows.into_iter().find(|r| r.name == session.course));
        course = stored.and_then(|r| {
            let spec = serde_json::from_str::<crate::course::Course>(&r.spec_json).ok()?;
            Some((r.title, spec.session.idle.get().as_millis() as i64))
        });
    }
    let (title, idle_ms) = course.unwrap_or_else(|| (session.course.clone(), 0));
    let session_info = |now: i64| {
        text(
            json!({"type": "session", "expires_at": session.expires_at, "now": now,
            "title": title, "idle_ms": idle_ms}),
        )
    };
    let mut hello = vec![text(
        json!({"type": "attached", "offset": attachment.offset}),
    )];
    if let Some(token) = new_token {
        hello.push(token_message(&token, &claims));
    }
    hello.extend([status(&attachment.status), session_info(now_ms())]);
    for chunk in std::mem::take(&mut attachment.replay).chunks(64 << 10) {
        hello.push(Message::Binary(chunk.to_vec().into()));
    }
    for msg in hello {
        if socket.send(msg).await.is_err() {
            return;
        }
    }
    let mut refresh = tokio::time::interval(TOKEN_REFRESH);
    refresh.tick().await;
    // The renewal sent last and not yet acknowledged: (jti, issued, ms).
    let mut renewal: Option<(String, i64)> = None;
    loop {
        tokio::select! {
            msg = attachment.messages.recv() => {
                let out = match msg {
                    Some(ToPage::Output(bytes)) => Message::Binary(bytes.into()),
                    Some(ToPage::Status(s)) => status(&s),
                    Some(ToPage::Replaced) => {
                        return close(socket, CLOSE_REPLACED, "opened in another tab").await;
                    }
                    Some(ToPage::Ended(reason)) => {
                        return close(socket, CLOSE_ENDED, &reason).await;
                    }
                    Some(ToPage::GoingAway) => return close(socket, 1012, "labpool is restarting").await,
                    None => return close(socket, 1013, "the page fell behind; reconnect").await,
                };
                if socket.send(out).await.is_err() {
                    return;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    if !attachment.input(bytes.to_vec()).await {
                        return;
                    }
                }
                Some(Ok(Message::Text(t))) => match serde_json::from_str(t.as_str()) {
                    Ok(Control::Resize { cols, rows }) => {
                        if !attachment.resize(cols, rows).await {
                            return;
                        }
                    }
                    // Only a renewal this socket sent counts: the page
                    // holds it now, and older tokens stop attaching.
                    Ok(Control::Ack { token_id }) => {
                        if let Some((jti, iat)) = &renewal
                            && *jti == token_id
                        {
                            attachment.holds_token_from(*iat);
                            renewal = None;
                        }
                    }
                    Err(_) => {}
                },
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            _ = refresh.tick() => {
                let now = now_ms();
                let token = app.lti.tokens().issue_at_ms(&id, now);
                let claims = app
                    .lti
                    .tokens()
                    .verify(Some(&token), &id, now / 1000)
                    .expect("a token just issued verifies");
                renewal = Some((claims.jti.clone(), claims.issued_ms()));
                let msgs = [token_message(&token, &claims), session_info(now)];
                for m in msgs {
                    if socket.send(m).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// A session token for the page, with the id it acknowledges it by.
fn token_message(token: &str, claims: &SessionClaims) -> Message {
    text(
        json!({"type": "token", "token": token, "id": claims.jti, "expires_at": claims.exp * 1000}),
    )
}

/// What a page may ask for besides keystrokes.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Resize {
        cols: u16,
        rows: u16,
    },
    /// The page holds the renewed token `token_id` (its `jti`).
    Ack {
        token_id: String,
    },
}
