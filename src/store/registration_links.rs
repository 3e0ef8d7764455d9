//! One-time Dynamic Registration links: stored by hash, spent atomically.

use super::{Store, StoreError};

/// What spending a registration link found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkUse {
    /// The link was live; it is spent now.
    Spent,
    /// No such link (never made, or pruned).
    Unknown,
    /// It was used before.
    Used,
    /// It expired unused.
    Expired,
}

impl Store {
    /// Stores a registration link by the SHA-256 (hex) of its secret.
    pub async fn insert_registration_link(
        &self,
        hash: &str,
        created_by: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO registration_links (hash, created_by, created_at, expires_at, used_at)
             VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(hash)
        .bind(created_by)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Spends the link of `hash` if it is live: one UPDATE, so of any
    /// number of requests (on any replica) exactly one gets
    /// [`LinkUse::Spent`]. Otherwise says why not.
    pub async fn spend_registration_link(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<LinkUse, StoreError> {
        let spent = sqlx::query(
            "UPDATE registration_links SET used_at = $2
             WHERE hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(hash)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if spent == 1 {
            return Ok(LinkUse::Spent);
        }
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT used_at FROM registration_links WHERE hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            None => LinkUse::Unknown,
            Some((Some(_),)) => LinkUse::Used,
            Some((None,)) => LinkUse::Expired,
        })
    }

    /// Forgets links that expired before `before`.
    pub async fn prune_registration_links(&self, before: i64) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM registration_links WHERE expires_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}
