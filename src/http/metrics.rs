//! Operating endpoints: `/metrics` (Prometheus text format) and `/readyz`
//! (`/healthz` is the router's one-liner: the process answers).
//!
//! Both are unauthenticated, like `/healthz`: they show counts per course
//! and host, never a person, a session or a secret. Scrape them from inside
//! your network; the README says so.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;

use super::App;
use crate::metrics::{CONTENT_TYPE, Snapshot, SourceState};
use crate::reconcile::now_ms;

/// How long a scrape or a readiness check waits for the store: a store that
/// hangs makes them answer "not ready" / `labpool_store_up 0` in time for
/// the prober's own timeout, rather than hang with it.
const STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /metrics`: every series, state read from the store now.
pub async fn metrics(State(app): State<App>) -> Response {
    let hosts: Vec<&str> = app
        .reconciler
        .config()
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    let read = Snapshot::read(
        app.reconciler.store(),
        &hosts,
        app.gateway.open_terminals(),
        now_ms(),
    );
    let snapshot = match tokio::time::timeout(STORE_TIMEOUT, read).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: the store did not answer");
            None
        }
        Err(_) => {
            tracing::warn!(timeout = ?STORE_TIMEOUT, "metrics: the store did not answer in time");
            None
        }
    };
    // Counters still count while the store is away: the scrape succeeds
    // with them, and `labpool_store_up 0` instead of the state series.
    let text = app.reconciler.metrics().render(snapshot.as_ref());
    (
        [
            (header::CONTENT_TYPE, CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

/// One readiness check.
#[derive(Debug, Serialize)]
pub struct Check {
    pub ok: bool,
    /// What was found, or what is wrong.
    pub detail: String,
}

/// `/readyz`'s body, the same shape whether ready or not.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// The store answers a trivial query.
    pub store: Check,
    /// A course revision has been applied, so launches find their courses.
    pub revision: Check,
}

/// `GET /readyz`: 200 when this labpool can serve launches, else 503; the
/// JSON body names each check either way.
pub async fn readyz(State(app): State<App>) -> Response {
    let store = app.reconciler.store();
    let checks = async {
        store.ping().await?;
        SourceState::read(store).await
    };
    let (store, revision) = match tokio::time::timeout(STORE_TIMEOUT, checks).await {
        Ok(Ok(source)) => (
            Check {
                ok: true,
                detail: "answers".into(),
            },
            match source.map(|s| (s.applied, s.fetch_error, s.held)) {
                Some((Some((id, _)), fetch_error, held)) => Check {
                    ok: true,
                    detail: format!(
                        "revision {id} applied{}{}",
                        if fetch_error {
                            "; the last fetch failed (see labpool status)"
                        } else {
                            ""
                        },
                        if held {
                            "; a newer revision is held for an admin's confirmation"
                        } else {
                            ""
                        }
                    ),
                },
                _ => Check {
                    ok: false,
                    detail: "no course revision has been applied yet".into(),
                },
            },
        ),
        failed => {
            // The error itself goes to the log, not to an unauthenticated page.
            match failed {
                Ok(Err(e)) => tracing::warn!(error = %e, "readyz: the store did not answer"),
                _ => {
                    tracing::warn!(timeout = ?STORE_TIMEOUT, "readyz: the store did not answer in time")
                }
            }
            (
                Check {
                    ok: false,
                    detail: "does not answer".into(),
                },
                Check {
                    ok: false,
                    detail: "unknown: the store does not answer".into(),
                },
            )
        }
    };
    let ready = store.ok && revision.ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(Readiness {
            ready,
            store,
            revision,
        }),
    )
        .into_response()
}
