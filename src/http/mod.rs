//! labpool's HTTP side. For now: the Git webhook and a health check; LTI
//! launches and terminals come with their issues. Handlers never call
//! libvirt: they ask the reconciler (here, to fetch now).

pub mod webhook;

use axum::Router;
use axum::routing::{get, post};

use crate::reconcile::Reconciler;

/// The router of `labpool serve`.
pub fn router(reconciler: Reconciler) -> Router {
    Router::new()
        .route("/hooks/git", post(webhook::receive))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(reconciler)
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    reconciler: Reconciler,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(reconciler))
        .with_graceful_shutdown(shutdown)
        .await
}
