//! Events: what happened, newest first.

use super::{EventRow, NewEvent, Store, StoreError};

impl Store {
    pub async fn record_event(&self, event: &NewEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO events (at, kind, course, host, vm, message) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event.at)
        .bind(&event.kind)
        .bind(event.course.as_deref())
        .bind(event.host.as_deref())
        .bind(event.vm.as_deref())
        .bind(&event.message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest `limit` events, newest first (by `at`, then by insertion).
    pub async fn events(&self, limit: i64) -> Result<Vec<EventRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM events ORDER BY at DESC, id DESC LIMIT $1")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
