//! The admin API: JSON over HTTP under `/api/v1`, behind bearer tokens
//! (`labpool token create`). Every route needs a token; `read` tokens may
//! look, `admin` tokens may also act. 401 for a missing, unknown or revoked
//! token (the reason goes to the log, never the token), 403 for a read token
//! on an acting route. `GET /api/v1/openapi.json` describes it all and needs
//! no token.
//!
//! [`ROUTES`] is the one list of routes: the router is checked against it
//! (every route answers 401 without a token) and the OpenAPI description is
//! generated from it.

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::App;
use crate::admin::actions::ResetDone;
use crate::admin::overview::{self, CourseStatus, HostStatus, SessionView};
use crate::admin::tokens::{self, AuthError};
use crate::admin::{ActionError, Principal, Scope};
use crate::reconcile::now_ms;
use crate::store::{EventRow, StoreError, VmRow};

/// An error answer: `{"error": kind, "message": …}`.
#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    Forbidden(Scope),
    /// A course-scoped read token asked for what is not a course's.
    CoursesOnly,
    NotFound(String),
    Conflict(String),
    BadRequest(String),
    Internal,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorBody {
    /// `unauthorized`, `forbidden`, `not_found`, `conflict`, `bad_request`,
    /// `internal`.
    pub error: String,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, message) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required (labpool token create)".to_string(),
            ),
            ApiError::Forbidden(needed) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs a token of scope `{}`", needed.as_str()),
            ),
            ApiError::CoursesOnly => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token sees only its courses; hosts and the course source are shown to unscoped tokens".to_string(),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "labpool could not read its store; see its log".to_string(),
            ),
        };
        let body = Json(ErrorBody {
            error: kind.into(),
            message,
        });
        if status == StatusCode::UNAUTHORIZED {
            (
                status,
                [(header::WWW_AUTHENTICATE, r#"Bearer realm="labpool""#)],
                body,
            )
                .into_response()
        } else {
            (status, body).into_response()
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "admin API: store");
        ApiError::Internal
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> ApiError {
        match e {
            ActionError::NotFound(m) => ApiError::NotFound(m),
            ActionError::Conflict(m) => ApiError::Conflict(m),
            ActionError::Store(e) => e.into(),
        }
    }
}

/// A caller with a valid bearer token (any scope).
pub struct Bearer(pub Principal);

impl FromRequestParts<App> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let presented = bearer_token(&parts.headers);
        match tokens::authenticate(app.reconciler.store(), presented, now_ms()).await {
            Ok(p) => Ok(Bearer(p)),
            Err(AuthError::Store) => Err(ApiError::Internal),
            Err(reason) => {
                tracing::warn!(path = %parts.uri.path(), %reason, "admin API refused");
                Err(ApiError::Unauthorized)
            }
        }
    }
}

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

trait Unscoped: Sized {
    /// Refuses a course-scoped token (403, logged): what follows is not
    /// any one course's.
    fn unscoped(self) -> Result<Self, ApiError>;
}

impl Unscoped for Principal {
    fn unscoped(self) -> Result<Principal, ApiError> {
        if self.is_scoped() {
            tracing::warn!(token = %self.name, "admin API: a course-scoped token asked for hosts");
            Err(ApiError::CoursesOnly)
        } else {
            Ok(self)
        }
    }
}

impl Bearer {
    /// The principal, if its scope allows `needed`; else 403 (logged).
    fn allowed(self, needed: Scope) -> Result<Principal, ApiError> {
        if self.0.may(needed) {
            Ok(self.0)
        } else {
            tracing::warn!(token = %self.0.name, needed = needed.as_str(), "admin API: scope too small");
            Err(ApiError::Forbidden(needed))
        }
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

// ---------------------------------------------------------------------------
// The routes, as documented.

/// One documented route.
pub struct RouteDoc {
    pub method: &'static str,
    /// Under `/api/v1`, axum-style parameters (`{id}`).
    pub path: &'static str,
    pub scope: Scope,
    pub summary: &'static str,
    /// Query parameters: (name, description).
    pub query: &'static [(&'static str, &'static str)],
    /// The 200 body's schema.
    pub response: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
}

fn schema<T: JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

pub const ROUTES: &[RouteDoc] = &[
    RouteDoc {
        method: "get",
        path: "/courses",
        scope: Scope::Read,
        summary: "Courses as last applied: title, revision, spec.",
        query: &[],
        response: schema::<Vec<CourseInfo>>,
    },
    RouteDoc {
        method: "get",
        path: "/courses/{name}",
        scope: Scope::Read,
        summary: "One course: its spec, pool counts, VMs and live sessions.",
        query: &[],
        response: schema::<CourseDetail>,
    },
    RouteDoc {
        method: "get",
        path: "/pools",
        scope: Scope::Read,
        summary: "Per course: target, warm, booting, assigned, failed, condition, the schedule's next window.",
        query: &[],
        response: schema::<Vec<CourseStatus>>,
    },
    RouteDoc {
        method: "get",
        path: "/vms",
        scope: Scope::Read,
        summary: "VMs, oldest first.",
        query: &[
            ("course", "Only this course's."),
            ("host", "Only this host's."),
            (
                "state",
                "Only in this state (creating, booting, warm, assigned, failed, deleting).",
            ),
        ],
        response: schema::<Vec<VmRow>>,
    },
    RouteDoc {
        method: "get",
        path: "/vms/{id}",
        scope: Scope::Read,
        summary: "One VM.",
        query: &[],
        response: schema::<VmRow>,
    },
    RouteDoc {
        method: "get",
        path: "/sessions",
        scope: Scope::Read,
        summary: "Sessions, newest first: live ones, or all with `all=true`.",
        query: &[
            ("all", "`true`: ended sessions too."),
            ("course", "Only this course's."),
            ("limit", "At most this many (default 500, at most 5000)."),
        ],
        response: schema::<Vec<SessionView>>,
    },
    RouteDoc {
        method: "get",
        path: "/sessions/{id}",
        scope: Scope::Read,
        summary: "One session, live or ended.",
        query: &[],
        response: schema::<SessionView>,
    },
    RouteDoc {
        method: "post",
        path: "/sessions/{id}/end",
        scope: Scope::Admin,
        summary: "End a live session: its page is told, its VM destroyed, the pool refills.",
        query: &[],
        response: schema::<SessionView>,
    },
    RouteDoc {
        method: "post",
        path: "/sessions/{id}/reset",
        scope: Scope::Admin,
        summary: "Give a live session a fresh warm VM (same session, student and expiry; the old VM is destroyed). 409 when no warm VM is ready.",
        query: &[],
        response: schema::<ResetDone>,
    },
    RouteDoc {
        method: "get",
        path: "/hosts",
        scope: Scope::Read,
        summary: "Hosts: up or down, drained, load and capacity.",
        query: &[],
        response: schema::<Vec<HostStatus>>,
    },
    RouteDoc {
        method: "get",
        path: "/hosts/{name}",
        scope: Scope::Read,
        summary: "One host and its VMs.",
        query: &[],
        response: schema::<HostDetail>,
    },
    RouteDoc {
        method: "post",
        path: "/hosts/{name}/drain",
        scope: Scope::Admin,
        summary: "Drain a host: no new VMs; warm ones are replaced elsewhere, then destroyed; students' VMs are left to finish.",
        query: &[],
        response: schema::<HostStatus>,
    },
    RouteDoc {
        method: "post",
        path: "/hosts/{name}/undrain",
        scope: Scope::Admin,
        summary: "Undrain a host: it takes new VMs again.",
        query: &[],
        response: schema::<HostStatus>,
    },
    RouteDoc {
        method: "get",
        path: "/events",
        scope: Scope::Read,
        summary: "Recent events, newest first.",
        query: &[
            ("limit", "At most this many (default 100, at most 1000)."),
            ("course", "Only this course's."),
            ("host", "Only this host's."),
        ],
        response: schema::<Vec<EventRow>>,
    },
    RouteDoc {
        method: "post",
        path: "/resync",
        scope: Scope::Admin,
        summary: "Fetch the course source and reconcile now.",
        query: &[],
        response: schema::<Accepted>,
    },
    RouteDoc {
        method: "get",
        path: "/source",
        scope: Scope::Read,
        summary: "The course source: the revision in force, the last fetch and its error, the last rejected revision, and the revision held back (what it removes, why, whether confirmed).",
        query: &[],
        response: schema::<SourceView>,
    },
    RouteDoc {
        method: "post",
        path: "/revisions/{id}/confirm",
        scope: Scope::Admin,
        summary: "Confirm the held revision `id` (that exact id): it applies at the next pass. 404 when nothing is held, 409 when another revision is.",
        query: &[],
        response: schema::<RevisionConfirmed>,
    },
];

// ---------------------------------------------------------------------------
// Bodies.

#[derive(Debug, Serialize, JsonSchema)]
pub struct CourseInfo {
    pub name: String,
    pub title: String,
    pub revision: String,
    /// The course file as applied (JSON form of the YAML).
    pub spec: serde_json::Value,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CourseDetail {
    pub course: CourseInfo,
    pub pool: Option<CourseStatus>,
    pub vms: Vec<VmRow>,
    pub sessions: Vec<SessionView>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct HostDetail {
    pub host: HostStatus,
    pub vms: Vec<VmRow>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Accepted {
    pub accepted: bool,
}

/// The course source, as `labpool status` shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SourceView {
    /// `folder` or `git`, where, what it follows, `applied`, `last_fetch_at`,
    /// `last_fetch_error`, `rejected`, as the reconciler last wrote them.
    #[serde(flatten)]
    pub status: serde_json::Map<String, serde_json::Value>,
    /// The revision held back, if one is.
    pub held: Option<crate::source::hold::Held>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RevisionConfirmed {
    pub revision: String,
    /// Who confirmed it (the first confirmation stands).
    pub confirmed_by: String,
}

// ---------------------------------------------------------------------------
// Handlers.

pub async fn courses(State(app): State<App>, b: Bearer) -> ApiResult<Vec<CourseInfo>> {
    let p = b.allowed(Scope::Read)?;
    let rows = app.reconciler.store().courses().await?;
    Ok(Json(
        rows.into_iter()
            .filter(|c| p.sees(&c.name))
            .map(course_info)
            .collect(),
    ))
}

/// A course a scoped token does not see is not found: it learns nothing of
/// other courses, not even that they exist.
fn unseen(what: String) -> ApiError {
    ApiError::NotFound(what)
}

fn course_info(row: crate::store::CourseRow) -> CourseInfo {
    CourseInfo {
        spec: serde_json::from_str(&row.spec_json).unwrap_or_default(),
        name: row.name,
        title: row.title,
        revision: row.revision,
    }
}

pub async fn course(
    State(app): State<App>,
    b: Bearer,
    Path(name): Path<String>,
) -> ApiResult<CourseDetail> {
    let p = b.allowed(Scope::Read)?;
    let store = app.reconciler.store();
    let row = store
        .courses()
        .await?
        .into_iter()
        .find(|c| c.name == name && p.sees(&c.name))
        .ok_or_else(|| unseen(format!("no course `{name}`")))?;
    let now = now_ms();
    let all_vms = store.vms().await?;
    let pool = overview::courses(store, &all_vms, now)
        .await?
        .into_iter()
        .find(|c| c.name == name);
    let sessions = store
        .sessions(true, 5_000)
        .await?
        .into_iter()
        .filter(|s| s.course == name)
        .map(|s| SessionView::new(s, &all_vms, now))
        .collect();
    Ok(Json(CourseDetail {
        course: course_info(row),
        pool,
        vms: all_vms.into_iter().filter(|v| v.course == name).collect(),
        sessions,
    }))
}

pub async fn pools(State(app): State<App>, b: Bearer) -> ApiResult<Vec<CourseStatus>> {
    let p = b.allowed(Scope::Read)?;
    let store = app.reconciler.store();
    let vms = store.vms().await?;
    let mut pools = overview::courses(store, &vms, now_ms()).await?;
    pools.retain(|c| p.sees(&c.name));
    Ok(Json(pools))
}

#[derive(Debug, Deserialize)]
pub struct VmFilter {
    course: Option<String>,
    host: Option<String>,
    state: Option<String>,
}

pub async fn vms(
    State(app): State<App>,
    b: Bearer,
    Query(f): Query<VmFilter>,
) -> ApiResult<Vec<VmRow>> {
    let p = b.allowed(Scope::Read)?;
    let state = match f.state.as_deref() {
        None => None,
        Some(s) => Some(
            s.parse::<crate::store::VmState>()
                .map_err(|e| ApiError::BadRequest(e.to_string()))?,
        ),
    };
    let vms = app.reconciler.store().vms().await?;
    Ok(Json(
        vms.into_iter()
            .filter(|v| p.sees(&v.course))
            .filter(|v| f.course.as_ref().is_none_or(|c| &v.course == c))
            .filter(|v| f.host.as_ref().is_none_or(|h| &v.host == h))
            .filter(|v| state.is_none_or(|s| v.state == s))
            .collect(),
    ))
}

pub async fn vm(State(app): State<App>, b: Bearer, Path(id): Path<String>) -> ApiResult<VmRow> {
    let p = b.allowed(Scope::Read)?;
    let vm = app.reconciler.store().vm(&id).await?;
    vm.filter(|v| p.sees(&v.course))
        .map(Json)
        .ok_or_else(|| unseen(format!("no VM `{id}`")))
}

#[derive(Debug, Deserialize)]
pub struct SessionFilter {
    all: Option<bool>,
    course: Option<String>,
    limit: Option<i64>,
}

pub async fn sessions(
    State(app): State<App>,
    b: Bearer,
    Query(f): Query<SessionFilter>,
) -> ApiResult<Vec<SessionView>> {
    let p = b.allowed(Scope::Read)?;
    let store = app.reconciler.store();
    let limit = f.limit.unwrap_or(500).clamp(1, 5_000);
    let rows = store.sessions(!f.all.unwrap_or(false), limit).await?;
    let vms = store.vms().await?;
    let now = now_ms();
    Ok(Json(
        rows.into_iter()
            .filter(|s| p.sees(&s.course))
            .filter(|s| f.course.as_ref().is_none_or(|c| &s.course == c))
            .map(|s| SessionView::new(s, &vms, now))
            .collect(),
    ))
}

async fn session_view(app: &App, id: &str, p: &Principal) -> Result<SessionView, ApiError> {
    let store = app.reconciler.store();
    let row = store
        .session(id)
        .await?
        .filter(|s| p.sees(&s.course))
        .ok_or_else(|| unseen(format!("no session `{id}`")))?;
    let vms = store.vms().await?;
    Ok(SessionView::new(row, &vms, now_ms()))
}

pub async fn session(
    State(app): State<App>,
    b: Bearer,
    Path(id): Path<String>,
) -> ApiResult<SessionView> {
    let p = b.allowed(Scope::Read)?;
    Ok(Json(session_view(&app, &id, &p).await?))
}

pub async fn end_session(
    State(app): State<App>,
    b: Bearer,
    Path(id): Path<String>,
) -> ApiResult<SessionView> {
    let by = b.allowed(Scope::Admin)?;
    app.admin.end_session(&id, &by).await?;
    tracing::info!(session = %id, by = %by.name, "session ended by an admin");
    Ok(Json(session_view(&app, &id, &by).await?))
}

pub async fn reset_session(
    State(app): State<App>,
    b: Bearer,
    Path(id): Path<String>,
) -> ApiResult<ResetDone> {
    let by = b.allowed(Scope::Admin)?;
    let done = app.admin.reset_session(&id, &by).await?;
    tracing::info!(session = %id, by = %by.name, old = %done.old_vm, new = %done.new_vm, "session reset by an admin");
    Ok(Json(done))
}

async fn host_status(app: &App, name: &str) -> Result<(HostStatus, Vec<VmRow>), ApiError> {
    let store = app.reconciler.store();
    let vms = store.vms().await?;
    let host = overview::hosts(app.reconciler.config(), store, &vms)
        .await?
        .into_iter()
        .find(|h| h.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no host `{name}`")))?;
    Ok((host, vms.into_iter().filter(|v| v.host == name).collect()))
}

pub async fn hosts(State(app): State<App>, b: Bearer) -> ApiResult<Vec<HostStatus>> {
    b.allowed(Scope::Read)?.unscoped()?;
    let store = app.reconciler.store();
    let vms = store.vms().await?;
    Ok(Json(
        overview::hosts(app.reconciler.config(), store, &vms).await?,
    ))
}

pub async fn host(
    State(app): State<App>,
    b: Bearer,
    Path(name): Path<String>,
) -> ApiResult<HostDetail> {
    b.allowed(Scope::Read)?.unscoped()?;
    let (host, vms) = host_status(&app, &name).await?;
    Ok(Json(HostDetail { host, vms }))
}

pub async fn drain(
    State(app): State<App>,
    b: Bearer,
    Path(name): Path<String>,
) -> ApiResult<HostStatus> {
    set_draining(app, b, name, true).await
}

pub async fn undrain(
    State(app): State<App>,
    b: Bearer,
    Path(name): Path<String>,
) -> ApiResult<HostStatus> {
    set_draining(app, b, name, false).await
}

async fn set_draining(app: App, b: Bearer, name: String, draining: bool) -> ApiResult<HostStatus> {
    let by = b.allowed(Scope::Admin)?;
    app.admin.set_draining(&name, draining, &by).await?;
    tracing::info!(host = %name, draining, by = %by.name, "host drain changed by an admin");
    Ok(Json(host_status(&app, &name).await?.0))
}

#[derive(Debug, Deserialize)]
pub struct EventFilter {
    limit: Option<i64>,
    course: Option<String>,
    host: Option<String>,
}

pub async fn events(
    State(app): State<App>,
    b: Bearer,
    Query(f): Query<EventFilter>,
) -> ApiResult<Vec<EventRow>> {
    let p = b.allowed(Scope::Read)?;
    let limit = f.limit.unwrap_or(100).clamp(1, 1_000);
    let filtered = f.course.is_some() || f.host.is_some() || p.is_scoped();
    // Filters apply to a larger window of recent events.
    let rows = app
        .reconciler
        .store()
        .events(if filtered { limit * 20 } else { limit })
        .await?;
    Ok(Json(
        rows.into_iter()
            // A scoped token: only events of its courses.
            .filter(|e| !p.is_scoped() || e.course.as_deref().is_some_and(|c| p.sees(c)))
            .filter(|e| f.course.is_none() || e.course == f.course)
            .filter(|e| f.host.is_none() || e.host == f.host)
            .take(limit as usize)
            .collect(),
    ))
}

pub async fn resync(State(app): State<App>, b: Bearer) -> Result<Response, ApiError> {
    let by = b.allowed(Scope::Admin)?;
    app.admin.resync(&by).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted: true })).into_response())
}

pub async fn source(State(app): State<App>, b: Bearer) -> ApiResult<SourceView> {
    b.allowed(Scope::Read)?.unscoped()?;
    let store = app.reconciler.store();
    let mut status = match overview::source(store).await? {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let held = status
        .remove("held")
        .and_then(|h| serde_json::from_value(h).ok());
    Ok(Json(SourceView { status, held }))
}

pub async fn confirm_revision(
    State(app): State<App>,
    b: Bearer,
    Path(id): Path<String>,
) -> ApiResult<RevisionConfirmed> {
    let by = b.allowed(Scope::Admin)?;
    let confirmed_by = app.admin.confirm_revision(&id, &by).await?;
    Ok(Json(RevisionConfirmed {
        revision: id,
        confirmed_by,
    }))
}

pub async fn openapi(State(app): State<App>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Json(super::openapi::document(
            &app.reconciler.config().base_url(),
        )),
    )
        .into_response()
}

/// The admin API's routes, under `/api/v1`.
pub fn router() -> axum::Router<App> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/courses", get(courses))
        .route("/courses/{name}", get(course))
        .route("/pools", get(pools))
        .route("/vms", get(vms))
        .route("/vms/{id}", get(vm))
        .route("/sessions", get(sessions))
        .route("/sessions/{id}", get(session))
        .route("/sessions/{id}/end", post(end_session))
        .route("/sessions/{id}/reset", post(reset_session))
        .route("/hosts", get(hosts))
        .route("/hosts/{name}", get(host))
        .route("/hosts/{name}/drain", post(drain))
        .route("/hosts/{name}/undrain", post(undrain))
        .route("/events", get(events))
        .route("/resync", post(resync))
        .route("/source", get(source))
        .route("/revisions/{id}/confirm", post(confirm_revision))
        .route("/openapi.json", get(openapi))
        .fallback(|| async {
            ApiError::NotFound("no such admin API route; see /api/v1/openapi.json".into())
        })
}
