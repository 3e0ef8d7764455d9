//! One-time codes: the store's part is remembering which were used. A code
//! is signed and self-describing (`session_token`); redeeming it is one
//! INSERT whose primary key is the code's hash, so of two replicas, or two
//! tabs, redeeming the same code at the same instant exactly one wins.

use super::{Store, StoreError};

impl Store {
    /// Records the code whose SHA-256 is `code_sha256` (for `session_id`,
    /// expiring at `expires_at`, unix ms) as used at `now`: true the first
    /// time, false ever after.
    pub async fn redeem_code(
        &self,
        code_sha256: &str,
        session_id: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO session_codes_used (code_sha256, session_id, used_at, expires_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (code_sha256) DO NOTHING",
        )
        .bind(code_sha256)
        .bind(session_id)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Forgets used codes that would have expired by now anyway (an expired
    /// code is refused before the store is asked).
    pub async fn prune_codes(&self, now: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM session_codes_used WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
