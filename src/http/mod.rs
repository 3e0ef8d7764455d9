//! labpool's HTTP side: the LTI tool (login, launch, JWKS, Deep Linking,
//! Dynamic Registration), the waiting page, the session page and its
//! terminal socket, the Git webhook
//! and the operating endpoints (health, readiness, metrics); with `serve --dev`, the try-it LMS (`try_it`). Handlers never call libvirt: they work on the store
//! and ask the reconciler to act (wake, fetch now).

pub mod admin;
pub mod client;
pub mod dashboard;
pub mod headers;
pub mod host;
pub mod listener;
pub mod lti;
pub mod metrics;
pub mod openapi;
pub mod terminal;
pub mod try_it;
pub mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{get, post};

use crate::lti::Lti;
use crate::reconcile::Reconciler;
use crate::terminal::gateway::Gateway;

/// What the handlers share.
#[derive(Clone)]
pub struct App {
    pub reconciler: Reconciler,
    pub lti: Arc<Lti>,
    pub gateway: Gateway,
    /// The admin actions (API and dashboard).
    pub admin: crate::admin::Admin,
    /// The try-it LMS, with `serve --dev` only.
    pub try_it: Option<Arc<try_it::TryIt>>,
    /// Who may start how many logins (`lti.logins`, `http.trusted_proxies`).
    pub logins: Arc<client::LoginGate>,
    /// Webhook deliveries already served (replays fetch nothing).
    pub deliveries: Arc<webhook::Deliveries>,
}

impl FromRef<App> for Arc<webhook::Deliveries> {
    fn from_ref(app: &App) -> Arc<webhook::Deliveries> {
        app.deliveries.clone()
    }
}

impl FromRef<App> for Arc<client::LoginGate> {
    fn from_ref(app: &App) -> Arc<client::LoginGate> {
        app.logins.clone()
    }
}

impl FromRef<App> for Reconciler {
    fn from_ref(app: &App) -> Reconciler {
        app.reconciler.clone()
    }
}

impl FromRef<App> for Arc<Lti> {
    fn from_ref(app: &App) -> Arc<Lti> {
        app.lti.clone()
    }
}

impl App {
    /// The app of `reconciler`'s configuration and store. Creates the
    /// tool's keys on first start.
    pub async fn new(reconciler: Reconciler) -> Result<App, crate::lti::keys::KeyError> {
        let waker = reconciler.clone();
        let lti = Lti::new(
            reconciler.config(),
            reconciler.store().clone(),
            Box::new(move || waker.wake()),
            reconciler.metrics().clone(),
        )
        .await?;
        let gateway = Gateway::new(&reconciler);
        let logins = Arc::new(client::LoginGate::new(reconciler.config()));
        Ok(App {
            logins,
            deliveries: Arc::default(),
            admin: crate::admin::Admin::new(reconciler.clone(), gateway.clone()),
            gateway,
            reconciler,
            lti,
            try_it: None,
        })
    }
}

/// The router of `labpool serve`: every route behind the Host check
/// (`host`) and the security headers (`headers`).
pub fn router(app: App) -> Router {
    let config = app.reconciler.config();
    let hosts = Arc::new(host::AllowedHosts::from_config(config));
    let security = headers::SecurityHeaders {
        hsts: config.base_url().starts_with("https://"),
    };
    routes(app)
        .layer(axum::middleware::from_fn_with_state(
            hosts,
            host::check_host,
        ))
        .layer(axum::middleware::from_fn_with_state(security, headers::add))
}

fn routes(app: App) -> Router {
    Router::new()
        .merge(try_it::routes(app.try_it.as_ref()))
        .route("/lti/login", get(lti::login_get).post(lti::login_post))
        .route("/lti/launch", post(lti::launch))
        .route("/lti/jwks", get(lti::jwks))
        .route("/lti/config.json", get(lti::canvas_config))
        .route("/lti/register/{secret}", get(lti::register))
        .route("/lti/deep-link", post(lti::deep_link))
        .route("/launch/wait/{ticket}", get(lti::wait_page))
        .route("/launch/wait/{ticket}/status", get(lti::wait_status))
        .route("/session/{id}", get(terminal::session_page))
        .route("/session/{id}/terminal", get(terminal::socket))
        .route("/assets/{name}", get(terminal::asset))
        .route("/hooks/git", post(webhook::receive))
        .route("/readyz", get(metrics::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .nest("/api/v1", admin::router())
        .nest("/admin", dashboard::router())
        .route(
            "/admin/",
            get(|| async { axum::response::Redirect::to("/admin") }),
        )
        .with_state(app)
}

/// Serves `app` on `listener` until `shutdown` resolves; requests in flight
/// are finished first. `http.limits` bounds slow clients (`listener`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Open terminals are upgraded connections the graceful shutdown does not
    // wait for: the gateway tells their pages to reconnect first.
    let gateway = app.gateway.clone();
    let shutdown = async move {
        shutdown.await;
        gateway.shutdown();
    };
    let limits = app.reconciler.config().http.limits.clone();
    listener::serve(listener, router(app), &limits, shutdown).await
}
