//! The student's terminal: the session page, its assets, and the WebSocket
//! the page talks to the gateway over.
//!
//! Both the page and the socket want the session's token (from the launch
//! redirect, refreshed over the socket): a missing, expired, forged or
//! other-session token gets 401 on the page and close code 4401 on the
//! socket, before anything of the VM is sent. Tokens are never logged.
//!
//! Socket protocol: binary frames are terminal bytes both ways; text frames
//! are JSON — `resize` from the page; `attached`, `status`, `session` and
//! `token` from labpool. Close codes: 4000 the session ended (the reason
//! follows), 4001 another tab took over, 4401 token refused, 4404 no such
//! session, 1012 labpool restarting, 1013 the page fell behind (reconnect).

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

use super::App;
use crate::lti::pages;
use crate::reconcile::now_ms;
use crate::session_token::TokenError;
use crate::terminal::gateway::{Status, ToPage};
use crate::terminal::page;

/// A fresh token goes to the page this often, well inside a token's life,
/// so a page that reconnects after a blip always holds a valid one.
const TOKEN_REFRESH: Duration = Duration::from_secs(60);
/// The largest frame a page may send (a big paste).
const MAX_FRAME: usize = 64 << 10;
/// A socket's read and write buffers. Terminal traffic is small frames; the
/// library's 128 KiB defaults would be most of an open terminal's memory.
const SOCKET_BUFFER: usize = 8 << 10;

pub const CLOSE_ENDED: u16 = 4000;
pub const CLOSE_REPLACED: u16 = 4001;
pub const CLOSE_REFUSED: u16 = 4401;
pub const CLOSE_UNKNOWN: u16 = 4404;

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SocketQuery {
    token: Option<String>,
    /// Output bytes the page already has.
    from: Option<u64>,
}

/// Pages with a token in their URL: never cached, never sent on as a
/// referrer, scripts only from labpool. Framing stays allowed: LMSs show
/// tools inside their own pages.
fn page_headers() -> [(header::HeaderName, &'static str); 3] {
    [
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'none'",
        ),
    ]
}

pub async fn session_page(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let now = now_ms();
    if let Err(e) = app.lti.tokens().verify(q.token.as_deref(), &id, now / 1000) {
        tracing::warn!(session = %id, reason = %e, "session page refused");
        let body = format!(
            "<h1>This link does not open a lab</h1><p>{}. Open the lab from your course again.</p>",
            pages::escape(&e.to_string())
        );
        return (
            StatusCode::UNAUTHORIZED,
            page_headers(),
            Html(pages::page("Not allowed", &body)),
        )
            .into_response();
    }
    let session = match app.lti.store().session(&id).await {
        Ok(Some(s)) => s,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!(session = %id, error = %e, "session page: store");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    if session.ended_at.is_some() {
        let body = format!(
            "<h1>This lab session has ended</h1><p>It ended ({}). Launch the lab again from your course to start a new one.</p>",
            pages::escape(session.end_reason.as_deref().unwrap_or("ended"))
        );
        return (
            StatusCode::GONE,
            page_headers(),
            Html(pages::page("Session ended", &body)),
        )
            .into_response();
    }
    let course = app.lti.catalog.get().await.ok().and_then(|c| {
        c.course(&session.course)
            .map(|c| (c.title.clone(), c.idle_ms))
    });
    let (title, idle_ms) = course.unwrap_or_else(|| (session.course.clone(), 0));
    let html = page::render(&page::PageInfo {
        session_id: &session.id,
        title: &title,
        token: q.token.as_deref().unwrap_or_default(),
        expires_at_ms: session.expires_at,
        now_ms: now,
        idle_ms,
    });
    (page_headers(), Html(html)).into_response()
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

/// The terminal's socket. The token is checked before anything else; a
/// refusal is a close frame with its reason, which a page (unlike an HTTP
/// status on a failed upgrade) can read and explain.
pub async fn socket(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<SocketQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let verdict = app
        .lti
        .tokens()
        .verify(q.token.as_deref(), &id, now_ms() / 1000)
        .map(|_| ());
    ws.max_message_size(MAX_FRAME)
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        .on_upgrade(move |socket| bridge(app, id, verdict, q.from.unwrap_or(0), socket))
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

async fn bridge(
    app: App,
    id: String,
    verdict: Result<(), TokenError>,
    from: u64,
    mut socket: WebSocket,
) {
    if let Err(e) = verdict {
        tracing::warn!(session = %id, reason = %e, "terminal refused");
        return close(socket, CLOSE_REFUSED, &e.to_string()).await;
    }
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
    let mut attachment = match app.gateway.attach(&id, from) {
        Ok(a) => a,
        Err(reason) => return close(socket, CLOSE_ENDED, &reason).await,
    };
    let session_info =
        |now: i64| text(json!({"type": "session", "expires_at": session.expires_at, "now": now}));
    let mut hello = vec![
        text(json!({"type": "attached", "offset": attachment.offset})),
        status(&attachment.status),
        session_info(now_ms()),
    ];
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
                Some(Ok(Message::Text(t))) => {
                    if let Ok(Control::Resize { cols, rows }) = serde_json::from_str(t.as_str())
                        && !attachment.resize(cols, rows).await
                    {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            _ = refresh.tick() => {
                let now = now_ms();
                let token = app.lti.tokens().issue(&id, now / 1000);
                let msgs = [text(json!({"type": "token", "token": token})), session_info(now)];
                for m in msgs {
                    if socket.send(m).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// What a page may ask for besides keystrokes.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Control {
    Resize { cols: u16, rows: u16 },
}
