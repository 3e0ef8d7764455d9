//! Leases: at most one labpool reconciles a store at a time. `serve` holds
//! the `reconciler` lease and renews it on every pass; `reconcile --once`
//! needs it too, so it cannot fail the boots a running `serve` is watching.

use super::{Store, StoreError};

/// Who holds a lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub expires_at: i64,
}

impl Store {
    /// Takes or renews `name` for `holder` until `expires_at`. Succeeds when
    /// the lease is free, already `holder`'s, expired at `now`, or held by
    /// `dead_holder` (a holder the caller proved dead). Returns the lease as
    /// it now stands: the caller has it iff `holder` matches.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        expires_at: i64,
        dead_holder: Option<&str>,
    ) -> Result<Lease, StoreError> {
        sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4 OR leases.holder = $5",
        )
        .bind(name)
        .bind(holder)
        .bind(expires_at)
        .bind(now)
        .bind(dead_holder.unwrap_or(""))
        .execute(&self.pool)
        .await?;
        self.lease(name)
            .await?
            .ok_or_else(|| StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// The lease's current holder, if any.
    pub async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT holder, expires_at FROM leases WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(holder, expires_at)| Lease { holder, expires_at }))
    }

    /// Gives the lease up if `holder` has it (a clean shutdown).
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
