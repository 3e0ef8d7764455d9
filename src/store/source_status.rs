//! The course source's status (applied revision, last fetch, last error),
//! written by the reconciler and read by `labpool status`.

use super::{Store, StoreError};

impl Store {
    /// Replaces the source status document.
    pub async fn set_source_status(&self, status_json: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO source_status (name, status, updated_at) VALUES ('source', $1, $2)
             ON CONFLICT (name) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at",
        )
        .bind(status_json)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The source status document, if the reconciler wrote one.
    pub async fn source_status(&self) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT status FROM source_status WHERE name = 'source'")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(s,)| s))
    }
}
