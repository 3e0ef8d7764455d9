//! Aggregates for `/metrics` and `/readyz`: counted by the database (GROUP
//! BY over indexed columns), so a scrape costs a few small result sets
//! however many VMs and sessions there are.

use super::{Store, StoreError};

impl Store {
    /// Answers a trivial query: the store is reachable and serving.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The names of the courses the store knows (applied, or draining).
    pub async fn course_names(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT name FROM courses ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    /// VMs per `(course, state)`, with the state as stored.
    pub async fn vm_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT course, state, COUNT(*) FROM vms GROUP BY course, state ORDER BY course, state",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Live (not ended) sessions per course.
    pub async fn live_session_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT course, COUNT(*) FROM sessions WHERE ended_at IS NULL
             GROUP BY course ORDER BY course",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
