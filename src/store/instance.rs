//! The labpool instance this store belongs to, and the objects of other
//! instances the reconciler found on its hosts.

use super::{Store, StoreError};

/// Objects of another instance on one host, as the last pass saw them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, schemars::JsonSchema)]
pub struct ForeignRow {
    pub host: String,
    /// The other instance's id, or `legacy` for objects an earlier version
    /// of labpool marked with no instance, unknown to this store.
    pub instance: String,
    /// Domains and volumes (or containers and networks).
    pub objects: i64,
    pub first_seen_at: i64,
    pub seen_at: i64,
}

impl Store {
    /// This store's instance id: made by migration 0010 when the store was
    /// first opened, made here if that row was ever removed. Every replica
    /// of one store reads the same id.
    pub async fn instance_id(&self) -> Result<String, StoreError> {
        let select = "SELECT id FROM instance WHERE name = 'instance'";
        // Read first: status and the dashboard read it on every request.
        if let Some((id,)) = sqlx::query_as::<_, (String,)>(select)
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(id);
        }
        let fresh = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        sqlx::query(
            "INSERT INTO instance (name, id, created_at) VALUES ('instance', $1, $2)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&fresh)
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(&self.pool)
        .await?;
        let (id,): (String,) = sqlx::query_as(select).fetch_one(&self.pool).await?;
        Ok(id)
    }

    /// Replaces what `host` holds of other instances (`(instance, objects)`)
    /// with what a pass saw at `now`. Returns the instances seen there for
    /// the first time (no row before), for one event each.
    pub async fn set_foreign_objects(
        &self,
        host: &str,
        seen: &[(String, i64)],
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let before: Vec<(String,)> =
            sqlx::query_as("SELECT instance FROM foreign_objects WHERE host = $1")
                .bind(host)
                .fetch_all(&mut *tx)
                .await?;
        let mut new = Vec::new();
        for (instance, objects) in seen {
            if !before.iter().any(|(i,)| i == instance) {
                new.push(instance.clone());
            }
            sqlx::query(
                "INSERT INTO foreign_objects (host, instance, objects, first_seen_at, seen_at)
                 VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (host, instance) DO UPDATE SET objects = excluded.objects, seen_at = excluded.seen_at",
            )
            .bind(host)
            .bind(instance)
            .bind(*objects)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for (instance,) in &before {
            if !seen.iter().any(|(i, _)| i == instance) {
                sqlx::query("DELETE FROM foreign_objects WHERE host = $1 AND instance = $2")
                    .bind(host)
                    .bind(instance)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(new)
    }

    /// Records that this labpool takes `instance`'s objects over (`labpool
    /// adopt`). Returns false when it was adopted already.
    pub async fn adopt_instance(&self, instance: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO adopted_instances (instance, adopted_at) VALUES ($1, $2)
             ON CONFLICT (instance) DO NOTHING",
        )
        .bind(instance)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Undoes [`Store::adopt_instance`]; false when it was not adopted.
    pub async fn forget_adoption(&self, instance: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM adopted_instances WHERE instance = $1")
            .bind(instance)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The instances adopted with `labpool adopt`, with when (unix ms).
    pub async fn adopted_instances(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT instance, adopted_at FROM adopted_instances ORDER BY instance")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Every host's objects of other instances, by host and instance.
    pub async fn foreign_objects(&self) -> Result<Vec<ForeignRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT host, instance, objects, first_seen_at, seen_at FROM foreign_objects
             ORDER BY host, instance",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
