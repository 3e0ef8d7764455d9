//! What an admin may do: end or reset a session, drain or undrain a host,
//! resync. Each works on the store and asks the reconciler to act; none
//! touches a host (the reconciler destroys and creates). Each is recorded as
//! an event naming the token that did it.

use super::overview::SessionView;
use super::tokens::Principal;
use crate::reconcile::{Reconciler, now_ms};
use crate::store::StoreError;
use crate::terminal::gateway::Gateway;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No such thing (404).
    #[error("{0}")]
    NotFound(String),
    /// Cannot be done now (409); the message says why.
    #[error("{0}")]
    Conflict(String),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
}

/// A reset's outcome.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct ResetDone {
    pub session: SessionView,
    /// The VM the session left (the reconciler destroys it).
    pub old_vm: String,
    pub new_vm: String,
}

/// The admin actions, shared by the API and the dashboard.
#[derive(Clone)]
pub struct Admin {
    reconciler: Reconciler,
    gateway: Gateway,
}

impl Admin {
    pub fn new(reconciler: Reconciler, gateway: Gateway) -> Admin {
        Admin {
            reconciler,
            gateway,
        }
    }

    /// Ends live session `id`: its page is told, its VM destroyed, the pool
    /// refills.
    pub async fn end_session(&self, id: &str, by: &Principal) -> Result<(), ActionError> {
        let store = self.reconciler.store();
        let session = store
            .session(id)
            .await?
            .filter(|s| s.ended_at.is_none())
            .ok_or_else(|| ActionError::NotFound(format!("no live session `{id}`")))?;
        let reason = format!("ended by {}", by.name);
        if !store.end_session(id, &reason, now_ms()).await? {
            return Err(ActionError::NotFound(format!("no live session `{id}`")));
        }
        self.record("session-ended", &session.course, &session.vm_id, reason)
            .await;
        self.reconciler.wake();
        Ok(())
    }

    /// Gives live session `id` a fresh warm VM of its course, keeping the
    /// session (same student, link, expiry; the open page switches over).
    pub async fn reset_session(&self, id: &str, by: &Principal) -> Result<ResetDone, ActionError> {
        let store = self.reconciler.store();
        let now = now_ms();
        let session = store
            .session(id)
            .await?
            .filter(|s| s.ended_at.is_none())
            .ok_or_else(|| ActionError::NotFound(format!("no live session `{id}`")))?;
        let course = store
            .courses()
            .await?
            .into_iter()
            .find(|c| c.name == session.course)
            .ok_or_else(|| ActionError::Conflict(format!("course `{}` is gone", session.course)))?;
        let moved = match store.reset_session(id, &course.spec_hash, now).await {
            Err(StoreError::SessionNotLive(_)) => {
                return Err(ActionError::NotFound(format!("no live session `{id}`")));
            }
            other => other?,
        };
        let Some((session, old, new)) = moved else {
            return Err(ActionError::Conflict(format!(
                "no warm VM of `{}` to reset onto; the pool is refilling, try again shortly",
                session.course
            )));
        };
        self.gateway.session_moved(id);
        self.record(
            "session-reset",
            &session.course,
            &old.id,
            format!("reset by {}: session {id} moved to VM {}", by.name, new.id),
        )
        .await;
        self.reconciler.wake();
        let vms = [new.clone()];
        Ok(ResetDone {
            session: SessionView::new(session, &vms, now),
            old_vm: old.id,
            new_vm: new.id,
        })
    }

    /// Drains host `name` (or undrains it): returns whether anything changed.
    pub async fn set_draining(
        &self,
        name: &str,
        draining: bool,
        by: &Principal,
    ) -> Result<bool, ActionError> {
        // Only configured hosts: the store may remember hosts that left the file.
        if !self
            .reconciler
            .config()
            .hosts
            .iter()
            .any(|h| h.name == name)
        {
            return Err(ActionError::NotFound(format!("no host `{name}`")));
        }
        let changed = match self
            .reconciler
            .store()
            .set_host_draining(name, draining)
            .await
        {
            Err(StoreError::HostNotFound(_)) => {
                return Err(ActionError::NotFound(format!("no host `{name}`")));
            }
            other => other?,
        };
        if changed {
            let (kind, what) = if draining {
                ("host-drained", "drained")
            } else {
                ("host-undrained", "undrained")
            };
            let message = format!("{what} by {}", by.name);
            self.reconciler
                .event(now_ms(), kind, None, Some(name), None, message)
                .await;
            self.reconciler.wake();
        }
        Ok(changed)
    }

    /// Confirms the held revision `id` (that exact id): it applies at the
    /// reconciler's next pass, asked for now. Returns who confirmed it (an
    /// earlier confirmation stands).
    pub async fn confirm_revision(&self, id: &str, by: &Principal) -> Result<String, ActionError> {
        let done = confirm_revision(self.reconciler.store(), id, &by.name).await?;
        self.reconciler.wake();
        Ok(done)
    }

    /// Asks the reconciler to fetch the course source and reconcile now.
    pub async fn resync(&self, by: &Principal) -> Result<(), ActionError> {
        tracing::info!(by = %by.name, "resync requested");
        self.reconciler.fetch_now();
        Ok(())
    }

    async fn record(&self, kind: &str, course: &str, vm: &str, message: String) {
        self.reconciler
            .event(now_ms(), kind, Some(course), None, Some(vm), message)
            .await;
    }
}

/// Records an admin's confirmation of the held revision `id` (the token's
/// name, or `cli:<user>` from `labpool revision confirm`) and its event;
/// shared by the API, the dashboard and the command line. Returns who
/// confirmed it.
pub async fn confirm_revision(
    store: &crate::store::Store,
    id: &str,
    by: &str,
) -> Result<String, ActionError> {
    use crate::store::Confirmed;
    let now = now_ms();
    match store.confirm_held_revision(id, by, now).await? {
        Confirmed::Now => {
            tracing::info!(revision = %id, by, "held revision confirmed");
            let event = crate::store::NewEvent {
                at: now,
                kind: "revision-confirmed".into(),
                course: None,
                host: None,
                vm: None,
                message: format!(
                    "held revision {id} confirmed by {by}: it applies at the next pass"
                ),
            };
            if let Err(e) = store.record_event(&event).await {
                tracing::error!(error = %e, "could not record the confirmation's event");
            }
            Ok(by.to_string())
        }
        Confirmed::Already(first) => Ok(first),
        Confirmed::NotHeld(None) => Err(ActionError::NotFound(format!(
            "revision `{id}` is not held: no revision is held now"
        ))),
        Confirmed::NotHeld(Some(held)) => Err(ActionError::Conflict(format!(
            "revision `{id}` is not the one held: {held} is (a confirmation is for that exact revision)"
        ))),
    }
}
