//! Sessions: a student's claim on a VM, from launch until it ends.

use sqlx::{Any, Transaction};

use super::{Backend, Claimed, SessionKey, SessionRow, Store, StoreError, VmRow};

impl Store {
    /// Hands `key` a VM: the oldest-ready warm VM of `course` built from
    /// `spec_hash`, now Assigned, with a new live session. If `key` already
    /// has a live session, returns it and its VM unchanged (`resumed`).
    /// None when no such VM is warm.
    ///
    /// Safe under concurrent calls, from any number of processes: a VM is
    /// never handed out twice and a key never gets two live sessions.
    pub async fn claim(
        &self,
        course: &str,
        spec_hash: &str,
        key: &SessionKey,
        now: i64,
        expires_at: i64,
    ) -> Result<Option<Claimed>, StoreError> {
        let mut tx = self.begin_write().await?;
        let claimed = self
            .claim_in(&mut tx, course, spec_hash, key, now, expires_at, 0)
            .await?;
        match claimed {
            Some(_) => tx.commit().await?,
            None => tx.rollback().await?,
        }
        Ok(claimed)
    }

    /// The body of a claim, inside the caller's write transaction. Leaves
    /// the `skip` oldest-ready warm VMs to others (launches that have been
    /// waiting longer), so a waiting page is served first come, first
    /// served.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn claim_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        course: &str,
        spec_hash: &str,
        key: &SessionKey,
        now: i64,
        expires_at: i64,
        skip: i64,
    ) -> Result<Option<Claimed>, StoreError> {
        // SQLite: the transaction holds the write lock, so claims run one at
        // a time and everything below sees the latest state.
        if self.backend == Backend::Postgres {
            // Claims for the same key take turns; without this, two launches
            // at once would both miss the other's uncommitted session and
            // take two VMs (one then fails on sessions_live_key). Different
            // keys hash apart and do not wait for each other.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(key.lock_name())
                .execute(&mut **tx)
                .await?;
        }

        if let Some(resumed) = self.live_claim_in(tx, key).await? {
            return Ok(Some(resumed));
        }

        let Some(vm) = self.take_warm_in(tx, course, spec_hash, now, skip).await? else {
            return Ok(None);
        };

        let session = SessionRow {
            id: format!("{:032x}", rand::random::<u128>()),
            vm_id: vm.id.clone(),
            course: vm.course.clone(),
            key: key.clone(),
            created_at: now,
            expires_at,
            last_activity_at: now,
            ended_at: None,
            end_reason: None,
        };
        sqlx::query(
            "INSERT INTO sessions (id, vm_id, course, issuer, deployment_id, user_sub, context_id,
                                   resource_link_id, created_at, expires_at, last_activity_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&session.id)
        .bind(&session.vm_id)
        .bind(&session.course)
        .bind(&key.issuer)
        .bind(&key.deployment_id)
        .bind(&key.user_sub)
        .bind(&key.context_id)
        .bind(&key.resource_link_id)
        .bind(session.created_at)
        .bind(session.expires_at)
        .bind(session.last_activity_at)
        .execute(&mut **tx)
        .await?;
        Ok(Some(Claimed {
            session,
            vm,
            resumed: false,
        }))
    }

    /// Assigns the oldest-ready warm VM of `course` built from `spec_hash`
    /// (or, when none is warm, of an older build: the one a replacement
    /// keeps until its successor is warm), past the `skip` oldest, inside
    /// the caller's write transaction; None when there is none.
    async fn take_warm_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        course: &str,
        spec_hash: &str,
        now: i64,
        skip: i64,
    ) -> Result<Option<VmRow>, StoreError> {
        // PostgreSQL: SKIP LOCKED lets concurrent claims each lock a
        // different warm VM instead of queueing on the oldest one. Ordering
        // by COALESCE keeps NULLs (never expected) in the same place on both.
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        };
        Ok(sqlx::query_as(&format!(
            "UPDATE vms SET state = 'assigned', state_changed_at = $3, reason = NULL
             WHERE state = 'warm' AND id = (
                 SELECT id FROM vms
                 WHERE course = $1 AND state = 'warm'
                 ORDER BY CASE WHEN spec_hash = $2 THEN 0 ELSE 1 END,
                          COALESCE(ready_at, state_changed_at), id
                 LIMIT 1 OFFSET $4 {lock})
             RETURNING *"
        ))
        .bind(course)
        .bind(spec_hash)
        .bind(now)
        .bind(skip)
        .fetch_optional(&mut **tx)
        .await?)
    }

    /// The key's live session and its VM, if it has one.
    async fn live_claim_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        key: &SessionKey,
    ) -> Result<Option<Claimed>, StoreError> {
        let live: Option<SessionRow> = sqlx::query_as(
            "SELECT * FROM sessions
             WHERE issuer = $1 AND deployment_id = $2 AND user_sub = $3 AND context_id = $4
               AND resource_link_id = $5 AND ended_at IS NULL",
        )
        .bind(&key.issuer)
        .bind(&key.deployment_id)
        .bind(&key.user_sub)
        .bind(&key.context_id)
        .bind(&key.resource_link_id)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(session) = live else {
            return Ok(None);
        };
        let vm: Option<VmRow> = sqlx::query_as("SELECT * FROM vms WHERE id = $1")
            .bind(&session.vm_id)
            .fetch_optional(&mut **tx)
            .await?;
        // delete_vm ends a VM's session in the same transaction, so a live
        // session without its VM means someone edited the tables.
        let vm = vm.ok_or_else(|| StoreError::VmNotFound(session.vm_id.clone()))?;
        Ok(Some(Claimed {
            session,
            vm,
            resumed: true,
        }))
    }

    /// Sessions not yet ended, oldest first.
    pub async fn live_sessions(&self) -> Result<Vec<SessionRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM sessions WHERE ended_at IS NULL ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// One session, live or ended.
    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Ends a live session; returns false if it was not live (already ended,
    /// or unknown). The VM is left as it is: what happens to it is the
    /// reconciler's decision.
    pub async fn end_session(&self, id: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
        let ended = sqlx::query(
            "UPDATE sessions SET ended_at = $2, end_reason = $3 WHERE id = $1 AND ended_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .bind(reason)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(ended == 1)
    }

    /// Records activity on a live session. Never moves `last_activity_at`
    /// backwards (reports may arrive out of order); ended or unknown
    /// sessions are left alone.
    pub async fn touch_session(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sessions SET last_activity_at = $2
             WHERE id = $1 AND ended_at IS NULL AND last_activity_at < $2",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sessions, newest first: the live ones, or (`live_only` false) ended
    /// ones too, at most `limit`.
    pub async fn sessions(
        &self,
        live_only: bool,
        limit: i64,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let filter = if live_only {
            "WHERE ended_at IS NULL"
        } else {
            ""
        };
        Ok(sqlx::query_as(&format!(
            "SELECT * FROM sessions {filter} ORDER BY created_at DESC, id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Gives live session `id` a fresh VM: the oldest-ready warm VM of its
    /// course built from `spec_hash` becomes the session's, with the same
    /// id, key and expiry. The old VM keeps no session, so the reconciler
    /// destroys it (and the pool refills). Returns (session, old VM, new
    /// VM), or None when no warm VM is there to take (nothing changes).
    /// [`StoreError::SessionNotLive`] when the session is unknown or ended.
    pub async fn reset_session(
        &self,
        id: &str,
        spec_hash: &str,
        now: i64,
    ) -> Result<Option<(SessionRow, VmRow, VmRow)>, StoreError> {
        let mut tx = self.begin_write().await?;
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE",
        };
        let session: Option<SessionRow> = sqlx::query_as(&format!(
            "SELECT * FROM sessions WHERE id = $1 AND ended_at IS NULL {lock}"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(mut session) = session else {
            return Err(StoreError::SessionNotLive(id.to_owned()));
        };
        let course = session.course.clone();
        let Some(fresh) = self
            .take_warm_in(&mut tx, &course, spec_hash, now, 0)
            .await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        let old: VmRow = sqlx::query_as(
            "UPDATE vms SET reason = 'reset: its session moved to a fresh VM' WHERE id = $1 RETURNING *",
        )
        .bind(&session.vm_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::VmNotFound(session.vm_id.clone()))?;
        sqlx::query("UPDATE sessions SET vm_id = $2, last_activity_at = $3 WHERE id = $1")
            .bind(id)
            .bind(&fresh.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        session.vm_id = fresh.id.clone();
        session.last_activity_at = now;
        Ok(Some((session, old, fresh)))
    }
}
