//! Launches: OIDC logins in flight, the one transaction that turns a
//! verified launch into a session, and launches waiting for a VM.
//!
//! A launch writes once: consuming its login (state and nonce, single use),
//! claiming a VM and, when none is warm, queueing a wait ticket all happen in
//! one write transaction, shared by every launch that arrived meanwhile
//! (see `launch_batch.rs`).

use sqlx::{Any, FromRow, Transaction};

use super::{Claimed, SessionKey, Store, StoreError};

/// A waiting page polls every few seconds; a ticket not polled for this long
/// belongs to a student who left, and stops counting as demand.
pub const WAIT_STALE_MS: i64 = 90_000;

/// An OIDC login labpool started for a platform, until the launch uses it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LoginRow {
    pub state: String,
    pub nonce: String,
    pub issuer: String,
    pub client_id: String,
    /// `lti_deployment_id` of the login request, when the platform sent one.
    pub deployment_id: Option<String>,
    pub target_link_uri: String,
    pub login_hint: String,
    pub message_hint: Option<String>,
    /// Put in the platform's storage when the browser may not keep cookies.
    pub storage_secret: Option<String>,
    /// The platform-storage frame the login named (`lti_storage_target`),
    /// for launches that do not name it again (Blackboard Learn).
    pub storage_target: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// What a launch's id_token says, checked against its login in the store.
#[derive(Debug, Clone, Copy)]
pub struct LoginMatch<'a> {
    pub state: &'a str,
    pub nonce: &'a str,
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub deployment_id: &'a str,
}

/// A verified launch of a course, to be turned into a session.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub state: String,
    pub nonce: String,
    pub issuer: String,
    pub client_id: String,
    pub course: String,
    pub spec_hash: String,
    /// Who launched; carries the deployment id the login must match.
    pub key: SessionKey,
    /// The course's `pool.max`: live sessions plus launches waiting ahead.
    pub max: u32,
    /// How long a new session lasts (ms), from the claim.
    pub expiry_ms: i64,
    /// The course's `session.per_user`: labs of this course the user may
    /// hold (live sessions plus live wait tickets).
    pub per_user: u32,
    /// `lti.limits.labs_per_user`: labs the user may hold in all courses.
    pub labs_per_user: u32,
    /// The launch resolved no course (the link's course was removed from
    /// the source, say): it may only get the key's live session back,
    /// whatever course that is; without one it is
    /// [`LaunchOutcome::NoLiveSession`]. Its login is used up either way.
    pub resume_only: bool,
}

impl LaunchRequest {
    pub fn login(&self) -> LoginMatch<'_> {
        LoginMatch {
            state: &self.state,
            nonce: &self.nonce,
            issuer: &self.issuer,
            client_id: &self.client_id,
            deployment_id: &self.key.deployment_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchOutcome {
    /// The login is unknown, used, expired, or was for another platform,
    /// client or deployment; [`Store::login`] tells which.
    LoginRejected,
    Claimed(Box<Claimed>),
    /// No warm VM: the launch waits for one the reconciler builds.
    Waiting(WaitTicket),
    /// The course is at its max: every VM it may have is taken.
    Full {
        in_use: i64,
    },
    /// The user (issuer and `sub`) already holds as many labs as the course
    /// or labpool allows; `held` names their courses, sorted.
    UserLimit {
        held: Vec<String>,
    },
    /// A [`LaunchRequest::resume_only`] launch whose key has no live
    /// session: nothing is claimed or queued.
    NoLiveSession,
}

/// A launch waiting for a VM.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct WaitTicket {
    pub id: String,
    pub course: String,
    #[sqlx(flatten)]
    pub key: SessionKey,
    pub created_at: i64,
    pub seen_at: i64,
}

/// What polling a ticket gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    Claimed(Box<Claimed>),
    /// Still waiting, behind `ahead` earlier launches of the same course.
    Waiting {
        ahead: i64,
    },
    /// No such ticket (it lapsed, or was served on another tab).
    Gone,
}

impl Store {
    pub async fn insert_login(&self, login: &LoginRow) -> Result<(), StoreError> {
        self.insert_login_bounded(login, u32::MAX).await?;
        Ok(())
    }

    /// Stores `login` unless `max_pending` logins (unused, unexpired) are
    /// already waiting for their launch; false when it was not stored. The
    /// count and the insert are one statement, so concurrent logins
    /// overshoot the cap by at most the number racing.
    pub async fn insert_login_bounded(
        &self,
        login: &LoginRow,
        max_pending: u32,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO lti_logins (state, nonce, issuer, client_id, deployment_id,
                 target_link_uri, login_hint, message_hint, storage_secret, storage_target,
                 created_at, expires_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
             WHERE (SELECT COUNT(*) FROM lti_logins
                    WHERE used_at IS NULL AND expires_at > $11) < $13",
        )
        .bind(&login.state)
        .bind(&login.nonce)
        .bind(&login.issuer)
        .bind(&login.client_id)
        .bind(&login.deployment_id)
        .bind(&login.target_link_uri)
        .bind(&login.login_hint)
        .bind(&login.message_hint)
        .bind(&login.storage_secret)
        .bind(&login.storage_target)
        .bind(login.created_at)
        .bind(login.expires_at)
        .bind(i64::from(max_pending))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Logins started and not yet used nor expired.
    pub async fn pending_logins(&self, now: i64) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM lti_logins WHERE used_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// A login by its state, used or not.
    pub async fn login(&self, state: &str) -> Result<Option<LoginRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM lti_logins WHERE state = $1")
            .bind(state)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// A login by its nonce, used or not.
    pub async fn login_by_nonce(&self, nonce: &str) -> Result<Option<LoginRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM lti_logins WHERE nonce = $1")
            .bind(nonce)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Marks the login used if everything matches; false otherwise (and
    /// nothing changes).
    pub async fn consume_login(&self, login: LoginMatch<'_>, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let used = consume_login_in(&mut tx, login, now).await?;
        tx.commit().await?;
        Ok(used)
    }

    /// A wait ticket by id.
    pub async fn wait_ticket(&self, id: &str) -> Result<Option<WaitTicket>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM launch_waits WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// A waiting page's poll: claims a VM for the ticket when one is warm and
    /// no earlier launch of the course is still waiting for it; else keeps
    /// the ticket alive.
    pub async fn poll_wait(
        &self,
        id: &str,
        spec_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<WaitOutcome, StoreError> {
        let mut tx = self.begin_write().await?;
        let ticket: Option<WaitTicket> = sqlx::query_as("SELECT * FROM launch_waits WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(ticket) = ticket else {
            tx.rollback().await?;
            return Ok(WaitOutcome::Gone);
        };
        let ahead = waiting_ahead_in(&mut tx, &ticket.course, Some(&ticket), now).await?;
        let claimed = self
            .claim_in(
                &mut tx,
                &ticket.course,
                spec_hash,
                &ticket.key,
                now,
                expires_at,
                ahead,
            )
            .await?;
        let outcome = match claimed {
            Some(claimed) => {
                delete_ticket_in(&mut tx, &ticket.id).await?;
                WaitOutcome::Claimed(Box::new(claimed))
            }
            None => {
                touch_ticket_in(&mut tx, &ticket.id, now).await?;
                WaitOutcome::Waiting { ahead }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Live wait tickets per course: demand the reconciler adds to the warm
    /// target.
    pub async fn waiting_by_course(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT course, COUNT(*) FROM launch_waits WHERE seen_at > $1
             GROUP BY course ORDER BY course",
        )
        .bind(now - WAIT_STALE_MS)
        .fetch_all(&self.pool)
        .await?)
    }

    /// For a waiting page: the course's VMs being built, and the reason its
    /// pool is stuck when the reconciler says it is (Degraded).
    pub async fn course_progress(&self, course: &str) -> Result<(i64, Option<String>), StoreError> {
        let (booting,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM vms WHERE course = $1 AND state IN ('creating', 'booting')",
        )
        .bind(course)
        .fetch_one(&self.pool)
        .await?;
        let conditions: Option<(String,)> =
            sqlx::query_as("SELECT conditions_json FROM courses WHERE name = $1")
                .bind(course)
                .fetch_optional(&self.pool)
                .await?;
        let problem = conditions
            .and_then(|(json,)| serde_json::from_str::<serde_json::Value>(&json).ok())
            .and_then(|v| {
                let condition = v.get("condition")?;
                (condition.get("status")?.as_str()? == "Degraded")
                    .then(|| condition.get("reason")?.as_str().map(str::to_owned))
                    .flatten()
            });
        Ok((booting, problem))
    }

    /// Forgets expired logins, lapsed wait tickets and used codes that have
    /// expired, and gives the space
    /// they took back (SQLite: to the file system, see [`Store::reclaim`]).
    pub async fn prune_launches(&self, now: i64) -> Result<(), StoreError> {
        self.prune_codes(now).await?;
        let logins = sqlx::query("DELETE FROM lti_logins WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let waits = sqlx::query("DELETE FROM launch_waits WHERE seen_at <= $1")
            .bind(now - WAIT_STALE_MS)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if logins + waits > 0 {
            self.reclaim().await?;
        }
        Ok(())
    }
}

async fn consume_login_in(
    tx: &mut Transaction<'static, Any>,
    login: LoginMatch<'_>,
    now: i64,
) -> Result<bool, StoreError> {
    // Every condition in one UPDATE: a login is used at most once even when
    // the same launch is posted twice at the same instant.
    let used = sqlx::query(
        "UPDATE lti_logins SET used_at = $6
         WHERE state = $1 AND nonce = $2 AND issuer = $3 AND client_id = $4
           AND (deployment_id IS NULL OR deployment_id = $5)
           AND used_at IS NULL AND expires_at > $6",
    )
    .bind(login.state)
    .bind(login.nonce)
    .bind(login.issuer)
    .bind(login.client_id)
    .bind(login.deployment_id)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(used == 1)
}

/// Live tickets of `course` that came before `own` (all of them when the
/// launch has no ticket yet): the warm VMs they are owed.
async fn waiting_ahead_in(
    tx: &mut Transaction<'static, Any>,
    course: &str,
    own: Option<&WaitTicket>,
    now: i64,
) -> Result<i64, StoreError> {
    let (before, own_id) = match own {
        Some(t) => (t.created_at, t.id.as_str()),
        None => (i64::MAX, ""),
    };
    let (ahead,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM launch_waits
         WHERE course = $1 AND seen_at > $2 AND id <> $4
           AND (created_at < $3 OR (created_at = $3 AND id < $4))",
    )
    .bind(course)
    .bind(now - WAIT_STALE_MS)
    .bind(before)
    .bind(own_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(ahead)
}

async fn touch_ticket_in(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE launch_waits SET seen_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn delete_ticket_in(tx: &mut Transaction<'static, Any>, id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM launch_waits WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
