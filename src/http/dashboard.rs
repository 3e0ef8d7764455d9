//! The dashboard: server-rendered HTML for instructors and admins, behind
//! the admin API's tokens. A token is traded once for a cookie at
//! `/admin/login` (or sent as a bearer header by scripts); the page refreshes
//! itself every few seconds and carries no script at all.
//!
//! The cookie is HttpOnly, SameSite=Strict, scoped to `/admin`, signed by
//! labpool and names the token by id, so revoking the token ends the login.
//! Forms that act carry a CSRF value derived from the cookie.

use axum::Form;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::App;
use crate::admin::overview::{self, Overview};
use crate::admin::tokens::{self, AuthError};
use crate::admin::{ActionError, Principal, Scope};
use crate::html::escape;
use crate::reconcile::now_ms;

const COOKIE: &str = "labpool_admin";
const AUDIENCE: &str = "labpool-dashboard";
/// A dashboard login lasts a working day (the cookie itself ends with the
/// browser session).
const LOGIN_SECS: i64 = 12 * 3600;
/// The page reloads itself this often.
const REFRESH_SECS: u32 = 5;

#[derive(Debug, Serialize, Deserialize)]
struct LoginClaims {
    /// The token's id.
    tid: String,
    exp: i64,
    aud: String,
}

/// Who is looking, and the CSRF value their forms must carry (none for a
/// bearer header, which a browser never sends by itself).
struct Viewer {
    who: Principal,
    csrf: Option<String>,
}

fn csrf_of(cookie: &str) -> String {
    hex::encode(Sha256::digest(format!("csrf:{cookie}").as_bytes()))
}

/// The viewer of a request: bearer header, else the login cookie.
async fn viewer(app: &App, headers: &HeaderMap, jar: &CookieJar) -> Result<Viewer, AuthError> {
    let store = app.reconciler.store();
    let now = now_ms();
    if let Some(token) = super::admin::bearer_token(headers) {
        let who = tokens::authenticate(store, Some(token), now).await?;
        return Ok(Viewer { who, csrf: None });
    }
    let cookie = jar.get(COOKIE).ok_or(AuthError::Missing)?.value();
    let claims: LoginClaims = app
        .lti
        .tokens()
        .unseal(cookie, AUDIENCE, now / 1000)
        .map_err(|_| AuthError::Malformed)?;
    let who = tokens::by_id(store, &claims.tid, now).await?;
    Ok(Viewer {
        who,
        csrf: Some(csrf_of(cookie)),
    })
}

fn headers() -> [(header::HeaderName, &'static str); 4] {
    [
        (header::CACHE_CONTROL, "no-store"),
        // Not `no-referrer`: under it browsers post `Origin: null`, and the
        // login checks that its form came from labpool's own page.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ]
}

/// The dashboard's style: no policy hash, the dashboard allows inline
/// styles (it carries no script).
const STYLE: &str = "
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem; color: #1d2433; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; } h2 { font-size: 1.05rem; margin: 1.6rem 0 .4rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25rem .6rem; border-bottom: 1px solid #e3e7ee; vertical-align: top; }
th { color: #5a6478; font-weight: 600; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #5a6478; } .bad { color: #b42318; } .ok { color: #1a7f37; } .warn { color: #9a6700; }
form.inline { display: inline; } button { font: inherit; padding: .1rem .6rem; }
.note { background: #eef6ee; border: 1px solid #b7dbb7; padding: .4rem .8rem; margin: .6rem 0; }
.error { background: #fdeceb; border: 1px solid #f0b8b3; padding: .4rem .8rem; margin: .6rem 0; }
header { display: flex; justify-content: space-between; align-items: baseline; flex-wrap: wrap; gap: .5rem; }
";

fn html(status: StatusCode, title: &str, body: &str, refresh: bool) -> Response {
    let refresh = if refresh {
        format!(r#"<meta http-equiv="refresh" content="{REFRESH_SECS}; url=/admin">"#)
    } else {
        String::new()
    };
    let page = crate::html::page(&crate::html::Page {
        title,
        head: &refresh,
        style: Some(STYLE),
        body,
        ..Default::default()
    });
    (status, headers(), Html(page)).into_response()
}

fn login_page(status: StatusCode, problem: Option<&str>) -> Response {
    let problem = problem
        .map(|p| format!(r#"<p class="error">{}</p>"#, escape(p)))
        .unwrap_or_default();
    let body = format!(
        r#"<h1>labpool dashboard</h1>{problem}
<form method="post" action="/admin/login">
<p><label>Token <input type="password" name="token" size="50" autocomplete="off" autofocus></label>
<button type="submit">Sign in</button></p>
</form>
<p class="muted">A token comes from <code>labpool token create --name NAME</code> (add <code>--scope admin</code> to end and reset sessions and drain hosts).</p>"#
    );
    html(status, "labpool dashboard: sign in", &body, false)
}

pub async fn login_form() -> Response {
    login_page(StatusCode::OK, None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login(
    State(app): State<App>,
    request_headers: HeaderMap,
    jar: CookieJar,
    Form(f): Form<LoginForm>,
) -> Response {
    // Login CSRF: another site's form would sign the admin's browser in
    // with the forger's token.
    let hosts = super::host::AllowedHosts::from_config(app.reconciler.config());
    if let Err(why) = super::host::same_origin(&hosts, &request_headers) {
        tracing::warn!(
            reason = why,
            "dashboard login refused: not posted from labpool's login page"
        );
        return login_page(
            StatusCode::FORBIDDEN,
            Some(
                "This sign-in was not sent from labpool's own login page. Open /admin/login and sign in there.",
            ),
        );
    }
    let now = now_ms();
    match tokens::authenticate(app.reconciler.store(), Some(&f.token), now).await {
        Ok(who) => {
            let claims = LoginClaims {
                tid: who.token_id.clone(),
                exp: now / 1000 + LOGIN_SECS,
                aud: AUDIENCE.into(),
            };
            let sealed = app.lti.tokens().seal(&claims);
            let cookie = Cookie::build((COOKIE, sealed))
                .path("/admin")
                .http_only(true)
                .same_site(SameSite::Strict)
                .secure(app.reconciler.config().base_url().starts_with("https://"))
                .build();
            tracing::info!(token = %who.name, "dashboard login");
            (jar.add(cookie), Redirect::to("/admin")).into_response()
        }
        Err(AuthError::Store) => login_page(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("labpool cannot read its store right now."),
        ),
        Err(reason) => {
            tracing::warn!(%reason, "dashboard login refused");
            login_page(StatusCode::UNAUTHORIZED, Some("That token is not valid."))
        }
    }
}

pub async fn logout(jar: CookieJar) -> Response {
    let gone = Cookie::build((COOKIE, "")).path("/admin").build();
    (jar.remove(gone), Redirect::to("/admin/login")).into_response()
}

#[derive(Deserialize)]
pub struct Note {
    note: Option<String>,
}

/// What a finished action says on the next page (fixed texts: the query
/// string cannot put words on the page).
fn note_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "ended" => "Session ended; its VM is being destroyed and the pool refills.",
        "reset" => "Session moved to a fresh VM; the old one is being destroyed.",
        "drained" => "Host drained: no new VMs there; warm ones move elsewhere.",
        "undrained" => "Host undrained: it takes new VMs again.",
        "resync" => "Resync requested.",
        "confirmed" => "Revision confirmed: it applies at the next pass.",
        _ => return None,
    })
}

pub async fn page(
    State(app): State<App>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(q): Query<Note>,
) -> Response {
    let v = match viewer(&app, &headers, &jar).await {
        Ok(v) => v,
        Err(AuthError::Store) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Err(AuthError::Missing) => return Redirect::to("/admin/login").into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "dashboard refused");
            return login_page(
                StatusCode::UNAUTHORIZED,
                Some("Your sign-in is no longer valid."),
            );
        }
    };
    let now = now_ms();
    let view =
        match overview::overview(app.reconciler.config(), app.reconciler.store(), now, 20).await {
            Ok(view) => view.seen_by(&v.who),
            Err(e) => {
                tracing::error!(error = %e, "dashboard: store");
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        };
    let note = q.note.as_deref().and_then(note_text);
    html(
        StatusCode::OK,
        "labpool dashboard",
        &render(&view, &v, note),
        true,
    )
}

#[derive(Deserialize)]
pub struct ActForm {
    csrf: Option<String>,
}

/// Checks that the viewer may act and the form is theirs; the viewer's
/// principal, or the page to answer with.
async fn actor(
    app: &App,
    headers: &HeaderMap,
    jar: &CookieJar,
    form: &ActForm,
) -> Result<Principal, Response> {
    let v = match viewer(app, headers, jar).await {
        Ok(v) => v,
        Err(reason) => {
            tracing::warn!(%reason, "dashboard action refused");
            return Err(login_page(
                StatusCode::UNAUTHORIZED,
                Some("Sign in to do that."),
            ));
        }
    };
    if v.csrf.is_some() && v.csrf != form.csrf {
        tracing::warn!(token = %v.who.name, "dashboard action refused: CSRF value missing or wrong");
        return Err(problem(
            StatusCode::FORBIDDEN,
            "That form is stale; reload the dashboard and try again.",
        ));
    }
    if !v.who.may(Scope::Admin) {
        tracing::warn!(token = %v.who.name, "dashboard action refused: read-only token");
        return Err(problem(
            StatusCode::FORBIDDEN,
            "Your token is read-only; this needs an admin token.",
        ));
    }
    Ok(v.who)
}

/// An admin acting through a dashboard form: the viewer, allowed to act,
/// and the form's CSRF value checked. Rejected with the page to answer.
pub struct Actor(Principal);

impl FromRequest<App> for Actor {
    type Rejection = Response;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let Form(form) = Form::<ActForm>::from_request(req, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let jar = CookieJar::from_headers(&headers);
        actor(app, &headers, &jar, &form).await.map(Actor)
    }
}

fn problem(status: StatusCode, text: &str) -> Response {
    let body = format!(
        r#"<h1>Not done</h1><p class="error">{}</p><p><a href="/admin">Back to the dashboard</a></p>"#,
        escape(text)
    );
    html(status, "labpool dashboard", &body, false)
}

fn outcome(result: Result<(), ActionError>, note: &str) -> Response {
    match result {
        Ok(()) => Redirect::to(&format!("/admin?note={note}")).into_response(),
        Err(ActionError::NotFound(m)) => problem(StatusCode::NOT_FOUND, &m),
        Err(ActionError::Conflict(m)) => problem(StatusCode::CONFLICT, &m),
        Err(ActionError::Store(e)) => {
            tracing::error!(error = %e, "dashboard action: store");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "labpool cannot reach its store right now.",
            )
        }
    }
}

pub async fn end_session(
    State(app): State<App>,
    Path(id): Path<String>,
    Actor(who): Actor,
) -> Response {
    outcome(app.admin.end_session(&id, &who).await, "ended")
}

pub async fn reset_session(
    State(app): State<App>,
    Path(id): Path<String>,
    Actor(who): Actor,
) -> Response {
    let done = app.admin.reset_session(&id, &who).await;
    outcome(done.map(|_| ()), "reset")
}

pub async fn drain(
    State(app): State<App>,
    Path(name): Path<String>,
    Actor(who): Actor,
) -> Response {
    let done = app.admin.set_draining(&name, true, &who).await;
    outcome(done.map(|_| ()), "drained")
}

pub async fn undrain(
    State(app): State<App>,
    Path(name): Path<String>,
    Actor(who): Actor,
) -> Response {
    let done = app.admin.set_draining(&name, false, &who).await;
    outcome(done.map(|_| ()), "undrained")
}

pub async fn confirm_revision(
    State(app): State<App>,
    Path(id): Path<String>,
    Actor(who): Actor,
) -> Response {
    let done = app.admin.confirm_revision(&id, &who).await;
    outcome(done.map(|_| ()), "confirmed")
}

pub async fn resync(State(app): State<App>, Actor(who): Actor) -> Response {
    outcome(app.admin.resync(&who).await, "resync")
}

/// Makes a one-time Dynamic Registration link and shows it once (only its
/// hash is stored).
pub async fn registration_link(State(app): State<App>, Actor(who): Actor) -> Response {
    match app.lti.registration_link(&who.name, now_ms()).await {
        Ok(link) => {
            let body = format!(
                r#"<h1>Registration link</h1>
<p>Paste this into the LMS's Dynamic Registration screen (Moodle: <i>Site administration → Plugins → Manage tools</i>; Canvas: <i>Developer keys → LTI Registration</i>). It works once, until {}; it is shown only now.</p>
<p><input id="registration-link" type="text" readonly size="90" value="{}"></p>
<p><a href="/admin">Back to the dashboard</a></p>"#,
                clock(link.expires_at),
                escape(&link.url)
            );
            html(StatusCode::OK, "labpool: registration link", &body, false)
        }
        Err(e) => {
            tracing::error!(error = %e, "dashboard: registration link");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "labpool cannot reach its store right now.",
            )
        }
    }
}

// ---------------------------------------------------------------------------
// Rendering.

/// `ms` as a UTC clock time.
fn clock(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// A span of time for people: `45s`, `12m`, `3h 05m`, `2d 4h`.
pub fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

fn button(action: &str, label: &str, csrf: Option<&str>, enabled: bool) -> String {
    let csrf = csrf
        .map(|c| format!(r#"<input type="hidden" name="csrf" value="{}">"#, escape(c)))
        .unwrap_or_default();
    let disabled = if enabled { "" } else { " disabled" };
    format!(
        r#"<form class="inline" method="post" action="{}">{csrf}<button type="submit"{disabled}>{}</button></form>"#,
        escape(action),
        escape(label)
    )
}

fn render(view: &Overview, v: &Viewer, note: Option<&str>) -> String {
    let now = view.now;
    let admin = v.who.may(Scope::Admin);
    let csrf = v.csrf.as_deref();
    let mut out = String::new();

    let applied = &view.source["applied"];
    let revision = if applied.is_null() {
        "no revision applied yet".to_string()
    } else {
        let id = applied["id"].as_str().unwrap_or("?");
        let subject = applied["commit"]["subject"]
            .as_str()
            .map(|s| format!(" “{}”", escape(s)))
            .unwrap_or_default();
        let age = applied["at"]
            .as_i64()
            .map(|at| format!(", applied {} ago", span(now - at)))
            .unwrap_or_default();
        format!(
            "revision <code>{}</code>{subject}{age}",
            escape(&id[..id.len().min(12)])
        )
    };
    let mut rejected = if view.source["rejected"].is_null() {
        String::new()
    } else {
        r#" <span class="bad">(a newer revision was rejected: see events)</span>"#.to_string()
    };
    if let Some(error) = view.source["last_fetch_error"].as_str() {
        rejected.push_str(&format!(
            r#" <span class="bad" data-fetch-error>(the last fetch failed: {})</span>"#,
            escape(error)
        ));
    }
    out.push_str(&format!(
        r#"<header><div><h1>labpool</h1><div class="muted">{revision}{rejected}</div></div>
<div class="muted">signed in as <b>{}</b> ({}) {} {}</div></header>"#,
        escape(&v.who.name),
        v.who.scope.as_str(),
        if admin {
            format!(
                "{} {}",
                button("/admin/resync", "Resync now", csrf, true),
                button(
                    "/admin/registration-link",
                    "New LMS registration link",
                    csrf,
                    true
                )
            )
        } else {
            String::new()
        },
        if csrf.is_some() {
            button("/admin/logout", "Sign out", None, true)
        } else {
            String::new()
        },
    ));
    if let Some(note) = note {
        out.push_str(&format!(r#"<p class="note">{}</p>"#, escape(note)));
    }
    if let Ok(held) =
        serde_json::from_value::<crate::source::hold::Held>(view.source["held"].clone())
    {
        let subject = held.commit.as_ref().and_then(|c| c["subject"].as_str());
        let subject = subject
            .map(|s| format!(" “{}”", escape(s)))
            .unwrap_or_default();
        let removed = if held.removal.removed.is_empty() {
            String::new()
        } else {
            format!(" ({})", escape(&held.removal.removed.join(", ")))
        };
        let action = match (&held.confirmed_by, admin) {
            (Some(by), _) => format!(
                r#"Confirmed by <b>{}</b>: it applies at the next pass."#,
                escape(by)
            ),
            (None, true) => button(
                &format!("/admin/revisions/{}/confirm", held.id),
                "Confirm and apply",
                csrf,
                true,
            ),
            (None, false) => "An admin token can confirm it.".to_string(),
        };
        out.push_str(&format!(
            r#"<div class="error" data-held="{id}"><b>Revision <code>{short}</code>{subject} is held</b>: it {what}{removed}; {reason}. The pools stay on the revision in force until it is confirmed or a later revision removes less. {action}</div>"#,
            id = escape(&held.id),
            short = escape(&held.id[..held.id.len().min(12)]),
            what = escape(&held.removal.describe()),
            reason = escape(&held.reason),
        ));
    }

    out.push_str("<h2>Pools</h2><table><tr><th>Course</th><th>Target</th><th>Warm</th><th>Booting</th><th>Assigned</th><th>Failed</th><th>Max</th><th>Condition</th><th>Schedule</th></tr>");
    for c in &view.courses {
        let class = match c.condition.as_str() {
            "Ready" => "ok",
            "Degraded" => "bad",
            _ => "warn",
        };
        let window = match &c.next_window {
            None => r#"<span class="muted">no schedule</span>"#.to_string(),
            Some(w) if w.open => format!("in class until {} ({} warm)", clock(w.to), w.warm),
            Some(w) => format!(
                "next: {} in {} ({} warm)",
                clock(w.from),
                span(w.from - now),
                w.warm
            ),
        };
        out.push_str(&format!(
            r#"<tr data-course="{name}" data-warm="{warm}" data-target="{target}" data-assigned="{assigned}"><td><b>{name}</b><br><span class="muted">{title}</span></td><td class="n">{target}</td><td class="n">{warm}</td><td class="n">{booting}</td><td class="n">{assigned}</td><td class="n">{failed}</td><td class="n">{max}</td><td class="{class}">{condition}<br><span class="muted">{reason}</span></td><td>{window}</td></tr>"#,
            name = escape(&c.name),
            title = escape(&c.title),
            target = c.target,
            warm = c.warm,
            booting = c.booting,
            assigned = c.assigned,
            failed = c.failed,
            max = c.max,
            condition = escape(&c.condition),
            reason = escape(&c.reason),
        ));
    }
    if view.courses.is_empty() {
        out.push_str(r#"<tr><td colspan="9" class="muted">No courses applied yet.</td></tr>"#);
    }
    out.push_str("</table>");

    out.push_str(&format!(
        "<h2>Sessions ({})</h2><table><tr><th>Student</th><th>Course</th><th>Started</th><th>Time left</th><th>Last activity</th><th>Host</th><th></th></tr>",
        view.sessions.len()
    ));
    for s in &view.sessions {
        let actions = if admin {
            format!(
                "{} {}",
                button(&format!("/admin/sessions/{}/end", s.id), "End", csrf, true),
                button(
                    &format!("/admin/sessions/{}/reset", s.id),
                    "Reset VM",
                    csrf,
                    true
                )
            )
        } else {
            String::new()
        };
        let left_class = if s.time_left_ms < 10 * 60_000 {
            "warn"
        } else {
            ""
        };
        out.push_str(&format!(
            r#"<tr data-session="{id}"><td>{student}<br><span class="muted">{context}</span></td><td>{course}</td><td>{started}</td><td class="{left_class}">{left}</td><td>{active} ago</td><td>{host}</td><td>{actions}</td></tr>"#,
            id = escape(&s.id),
            student = escape(&s.student),
            context = escape(&s.context_id),
            course = escape(&s.course),
            started = clock(s.created_at),
            left = span(s.time_left_ms),
            active = span(now - s.last_activity_at),
            host = escape(s.host.as_deref().unwrap_or("?")),
        ));
    }
    if view.sessions.is_empty() {
        out.push_str(
            r#"<tr><td colspan="7" class="muted">Nobody is in a lab right now.</td></tr>"#,
        );
    }
    out.push_str("</table>");

    out.push_str("<h2>Hosts</h2><table><tr><th>Host</th><th>State</th><th>VMs</th><th>Memory</th><th>vCPUs</th><th>Load</th><th></th></tr>");
    for h in &view.hosts {
        let (state, class) = match (h.up, h.draining) {
            (true, false) => ("up", "ok"),
            (true, true) => ("draining", "warn"),
            (false, _) => ("down", "bad"),
        };
        let error = h
            .error
            .as_deref()
            .map(|e| format!(r#"<br><span class="muted">{}</span>"#, escape(e)))
            .unwrap_or_default();
        let action = match (admin, h.draining) {
            (false, _) => String::new(),
            (true, false) => button(
                &format!("/admin/hosts/{}/drain", h.name),
                "Drain",
                csrf,
                true,
            ),
            (true, true) => button(
                &format!("/admin/hosts/{}/undrain", h.name),
                "Undrain",
                csrf,
                true,
            ),
        };
        let mib = |b: u64| b / (1024 * 1024);
        out.push_str(&format!(
            r#"<tr data-host="{name}" data-state="{state}"><td><b>{name}</b><br><span class="muted">{uri}</span></td><td class="{class}">{state}{error}</td><td class="n">{vms}/{max}</td><td class="n">{mu}/{m} MiB</td><td class="n">{cu}/{c}</td><td class="n">{load:.0}%</td><td>{action}</td></tr>"#,
            name = escape(&h.name),
            uri = escape(&h.uri),
            vms = h.vms,
            max = h.max_vms,
            mu = mib(h.memory_used),
            m = mib(h.memory),
            cu = h.vcpus_used,
            c = h.vcpu_slots,
            load = h.load * 100.0,
        ));
    }
    out.push_str("</table>");
    if !view.hosts.is_empty() {
        out.push_str(&format!(
            r#"<p class="muted" data-instance="{id}">This labpool is instance <code>{id}</code>: it collects only what is marked with it.</p>"#,
            id = escape(&view.instance)
        ));
    }
    if !view.foreign.is_empty() {
        out.push_str("<h2>Other labpools' objects</h2><p class=\"muted\">Marked by another instance (or by an earlier version, unknown to this store: <code>legacy</code>). Reported, never touched.</p><table><tr><th>Host</th><th>Instance</th><th>Objects</th><th>Seen since</th></tr>");
        for f in &view.foreign {
            out.push_str(&format!(
                r#"<tr data-foreign="{instance}"><td>{host}</td><td><code>{instance}</code></td><td class="n">{n}</td><td>{since}</td></tr>"#,
                host = escape(&f.host),
                instance = escape(&f.instance),
                n = f.objects,
                since = chrono::DateTime::from_timestamp_millis(f.first_seen_at)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default(),
            ));
        }
        out.push_str("</table>");
    }

    out.push_str("<h2>Recent events</h2><table><tr><th>When</th><th>What</th><th>Where</th><th>Message</th></tr>");
    for e in &view.events {
        let subject = [e.course.as_deref(), e.host.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" @ ");
        out.push_str(&format!(
            "<tr><td>{} ago</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            span(now - e.at),
            escape(&e.kind),
            escape(&subject),
            escape(e.message.lines().next().unwrap_or_default()),
        ));
    }
    out.push_str("</table>");
    out.push_str(&format!(
        r#"<p class="muted">Refreshes every {REFRESH_SECS} s. JSON: <a href="/api/v1/openapi.json">/api/v1</a>. Metrics: <a href="/metrics">/metrics</a>.</p>"#
    ));
    out
}

/// The dashboard's routes, under `/admin`.
pub fn router() -> axum::Router<App> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/", get(page))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/sessions/{id}/end", post(end_session))
        .route("/sessions/{id}/reset", post(reset_session))
        .route("/hosts/{name}/drain", post(drain))
        .route("/hosts/{name}/undrain", post(undrain))
        .route("/resync", post(resync))
        .route("/revisions/{id}/confirm", post(confirm_revision))
        .route("/registration-link", post(registration_link))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_people_write_them() {
        assert_eq!(span(-5), "0s");
        assert_eq!(span(45_000), "45s");
        assert_eq!(span(12 * 60_000 + 5_000), "12m");
        assert_eq!(span(3 * 3_600_000 + 5 * 60_000), "3h 05m");
        assert_eq!(span(2 * 86_400_000 + 4 * 3_600_000), "2d 4h");
    }

    #[test]
    fn notes_come_from_a_fixed_list() {
        assert!(note_text("ended").is_some());
        assert!(note_text("<script>").is_none());
    }
}
