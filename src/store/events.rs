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

    /// Deletes up to `batch` events recorded before `before` (unix ms), the
    /// oldest first, and says how many went. Bounded, so a pass over a large
    /// backlog stays short: the next pass takes the next batch.
    pub async fn prune_events(&self, before: i64, batch: i64) -> Result<u64, StoreError> {
        let gone = sqlx::query(
            "DELETE FROM events WHERE id IN
             (SELECT id FROM events WHERE at < $1 ORDER BY at, id LIMIT $2)",
        )
        .bind(before)
        .bind(batch)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if gone > 0 {
            self.reclaim().await?;
        }
        Ok(gone)
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
