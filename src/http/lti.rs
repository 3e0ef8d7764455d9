//! The LTI routes: requests in, `crate::lti` decides, pages and redirects
//! out. Every refusal is logged with its reason here.

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::Form;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Redirect, Response};
use axum_extra::extract::CookieJar;
use serde::Deserialize;
use tracing::Instrument as _;
use tracing::field::Empty;

use crate::http::client::LoginGate;
use crate::http::listener::Peer;
use crate::lti::login::{LOGIN_TTL_MS, state_cookie_name};
use crate::lti::register::RegistrationStart;
use crate::lti::{LaunchForm, LaunchResult, LoginRequest, Lti, Refusal, WaitStatus, pages};
use crate::metrics::Outcome;
use crate::reconcile::now_ms;

/// How long a full lab asks the browser to wait before retrying.
const FULL_RETRY_AFTER_SECS: u32 = 60;

fn refused(r: Refusal, what: &str) -> Response {
    tracing::warn!(kind = r.kind, reason = %r.reason, status = r.status.as_u16(), "{what} refused");
    let mut response = (r.status, no_store(), Html(pages::refusal(&r))).into_response();
    if let Some(secs) = r.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Whether the request's `Origin` is exactly `origin` (a missing one is not).
pub(crate) fn sent_from(headers: &HeaderMap, origin: &str) -> bool {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o == origin)
}

/// Launch pages are per-user and single-use: never cached.
fn no_store() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "no-store")]
}

pub async fn login_get(
    State(lti): State<Arc<Lti>>,
    State(gate): State<Arc<LoginGate>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Query(req): Query<LoginRequest>,
) -> Response {
    login(lti, &gate, peer, &headers, req).await
}

pub async fn login_post(
    State(lti): State<Arc<Lti>>,
    State(gate): State<Arc<LoginGate>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Form(req): Form<LoginRequest>,
) -> Response {
    login(lti, &gate, peer, &headers, req).await
}

async fn login(
    lti: Arc<Lti>,
    gate: &LoginGate,
    peer: Option<Extension<Peer>>,
    headers: &HeaderMap,
    req: LoginRequest,
) -> Response {
    // Anyone may start a login and each is stored until it expires: a
    // client gets a bucket of them (the router outside `serve` has no
    // peer, and no limit).
    if let Some(Extension(ConnectInfo(peer))) = peer
        && let Err((client, wait)) = gate.admit(peer.ip(), headers)
    {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("client {client} started too many logins (lti.logins.burst, per_second)"),
        );
        r.retry_after = Some(secs);
        return refused(r, "login");
    }
    let start = match lti.login(req, now_ms()).await {
        Ok(start) => start,
        Err(r) => return refused(r, "login"),
    };
    // The launch comes back as a cross-site form post from the platform:
    // only a SameSite=None (hence Secure) cookie is sent with it.
    let cookie = format!(
        "{}={}; Path=/lti/; Max-Age={}; HttpOnly; Secure; SameSite=None",
        start.cookie_name,
        start.state,
        LOGIN_TTL_MS / 1000
    );
    let jar = [(header::SET_COOKIE, cookie)];
    match &start.storage {
        Some((target, secret)) => (
            jar,
            no_store(),
            Html(pages::login_storage(
                target,
                &start.state,
                secret,
                &start.platform_origin,
                &start.redirect,
            )),
        )
            .into_response(),
        None => (jar, no_store(), Redirect::to(&start.redirect)).into_response(),
    }
}

pub async fn launch(
    State(lti): State<Arc<Lti>>,
    jar: CookieJar,
    headers: HeaderMap,
    Form(form): Form<LaunchForm>,
) -> Response {
    let started = Instant::now();
    // The post carrying the platform-storage secret comes from labpool's
    // own page (`pages::storage_check`), never from another site: without
    // this a page elsewhere could post an attacker's launch and secret from
    // a student's browser and open the attacker's lab in it (login CSRF).
    // Browsers send `Origin` with every form post.
    if form.storage_secret.is_some() && !sent_from(&headers, lti.origin()) {
        lti.metrics().refused("forged");
        return refused(
            Refusal::forged(
                "the platform-storage launch was posted from another site than labpool (its Origin is not labpool's)",
            ),
            "launch",
        );
    }
    let state_cookie = form
        .state
        .as_deref()
        .map(state_cookie_name)
        .and_then(|name| jar.get(&name).map(|c| c.value().to_owned()));
    let cookie_name = form.state.as_deref().map(state_cookie_name);
    // Every log line of the launch carries these (tokens never: they are
    // not fields). `Lti::launch` fills in the course, the session and the
    // outcome of a decided launch; the other outcomes are named below.
    let span = tracing::info_span!("launch", course = Empty, outcome = Empty, session = Empty);
    let result = lti
        .launch(form, state_cookie.as_deref(), now_ms())
        .instrument(span.clone())
        .await;
    let _in_span = span.enter();
    let outcome = match &result {
        Err(r) => {
            lti.metrics().refused(r.kind);
            Outcome::Refused
        }
        Ok(LaunchResult::Session { resumed: true, .. }) => Outcome::Resumed,
        Ok(LaunchResult::Session { .. }) => Outcome::Warm,
        Ok(LaunchResult::Waiting { .. }) => Outcome::OnDemand,
        Ok(LaunchResult::Full { .. }) => Outcome::Full,
        // Counted (`user-limit`) and named by `Lti::launch`.
        Ok(LaunchResult::UserLimit(_)) => Outcome::Refused,
        // Counted (`no-course`) and named by `Lti::launch`.
        Ok(LaunchResult::NeedsCourse(_)) => Outcome::Refused,
        Ok(LaunchResult::DeepLinking(_)) => Outcome::DeepLink,
        Ok(LaunchResult::StorageCheck { .. }) => Outcome::StorageCheck,
    };
    if matches!(
        result,
        Err(_) | Ok(LaunchResult::DeepLinking(_) | LaunchResult::StorageCheck { .. })
    ) {
        span.record("outcome", outcome.as_str());
    }
    let mut response = match result {
        Err(r) => refused(r, "launch"),
        Ok(LaunchResult::Session {
            session_id, code, ..
        }) => Redirect::to(&lti.session_url(&session_id, &code)).into_response(),
        Ok(LaunchResult::Waiting { ticket, pass, .. }) => {
            Redirect::to(&lti.wait_url(&ticket, &pass)).into_response()
        }
        Ok(LaunchResult::Full { title }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, FULL_RETRY_AFTER_SECS.to_string())],
            Html(pages::full(&title)),
        )
            .into_response(),
        Ok(LaunchResult::UserLimit(limit)) => {
            (StatusCode::CONFLICT, Html(pages::user_limit(&limit))).into_response()
        }
        Ok(LaunchResult::NeedsCourse(needs)) => {
            (StatusCode::NOT_FOUND, Html(pages::needs_course(&needs))).into_response()
        }
        Ok(LaunchResult::DeepLinking(picker)) => Html(pages::picker(&picker)).into_response(),
        Ok(LaunchResult::StorageCheck {
            target,
            state,
            id_token,
            platform_origin,
        }) => Html(pages::storage_check(
            &target,
            &state,
            &id_token,
            &platform_origin,
        ))
        .into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The state cookie has done its job (it is single-use anyway).
    if let Some(name) = cookie_name
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{name}=; Path=/lti/; Max-Age=0; HttpOnly; Secure; SameSite=None"
        ))
    {
        headers.append(header::SET_COOKIE, v);
    }
    // Lets benchmarks read the server-side time of each launch.
    let took = started.elapsed();
    lti.metrics().launch_answered(outcome, took);
    let micros = took.as_micros();
    if let Ok(v) = HeaderValue::from_str(&format!("launch;dur={:.3}", micros as f64 / 1000.0)) {
        headers.insert("server-timing", v);
    }
    response
}

pub async fn jwks(State(lti): State<Arc<Lti>>) -> Response {
    match lti.jwks().await {
        Ok(set) => ([(header::CACHE_CONTROL, "public, max-age=300")], Json(set)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the JWKS");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

pub async fn canvas_config(State(lti): State<Arc<Lti>>) -> Json<serde_json::Value> {
    Json(lti.canvas_config())
}

pub async fn register(
    State(lti): State<Arc<Lti>>,
    Path(secret): Path<String>,
    Query(start): Query<RegistrationStart>,
) -> Response {
    match lti.register(&secret, start, now_ms()).await {
        Ok(done) => (no_store(), Html(pages::registered(&done))).into_response(),
        Err(r) => {
            tracing::warn!(kind = r.kind, reason = %r.reason, status = r.status.as_u16(),
                "dynamic registration refused");
            (r.status, no_store(), Html(pages::registration_refused(&r))).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct DeepLinkChoice {
    request: String,
    course: String,
}

pub async fn deep_link(
    State(lti): State<Arc<Lti>>,
    Form(choice): Form<DeepLinkChoice>,
) -> Response {
    match lti
        .deep_link_answer(&choice.request, &choice.course, now_ms())
        .await
    {
        Ok(answer) => (
            no_store(),
            Html(pages::auto_post(
                &answer.return_url,
                &[("JWT", &answer.jwt)],
            )),
        )
            .into_response(),
        Err(r) => refused(r, "deep link"),
    }
}

pub async fn wait_page(State(lti): State<Arc<Lti>>, Path(ticket): Path<String>) -> Response {
    let found = match lti.store().wait_ticket(&ticket).await {
        Ok(found) => found,
        Err(e) => return refused(e.into(), "waiting page"),
    };
    match found {
        Some(t) => (no_store(), Html(pages::waiting(&ticket, &t.course))).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Html(pages::page(
                "Launch again",
                "<h1>This wait has lapsed</h1><p>Go back to your course and open the lab again.</p>",
            )),
        )
            .into_response(),
    }
}

/// The header a waiting page sends its pass in (never the query: URLs end
/// up in access logs).
pub const WAIT_PASS_HEADER: &str = "x-labpool-wait-pass";

pub async fn wait_status(
    State(lti): State<Arc<Lti>>,
    Path(ticket): Path<String>,
    headers: HeaderMap,
) -> Response {
    let pass = headers.get(WAIT_PASS_HEADER).and_then(|v| v.to_str().ok());
    match lti.poll_wait(&ticket, pass, now_ms()).await {
        Ok(status) => {
            let code = match status {
                WaitStatus::Gone => StatusCode::NOT_FOUND,
                WaitStatus::Refused => StatusCode::FORBIDDEN,
                _ => StatusCode::OK,
            };
            (code, no_store(), Json(status)).into_response()
        }
        Err(r) => {
            tracing::error!(reason = %r.reason, "waiting page poll failed");
            (r.status, Json(serde_json::json!({ "state": "error" }))).into_response()
        }
    }
}
