//! Hosts: the libvirt hosts from the configuration, and whether they answer.

use super::{HostRow, Store, StoreError};

impl Store {
    /// Adds a host (as `up`: nothing says otherwise yet) or updates its URI,
    /// keeping its status.
    pub async fn upsert_host(&self, name: &str, uri: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO hosts (name, uri, up, last_error, changed_at) VALUES ($1, $2, 1, NULL, $3)
             ON CONFLICT (name) DO UPDATE SET uri = excluded.uri",
        )
        .bind(name)
        .bind(uri)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a health check. Returns whether `up` flipped (and only then
    /// moves `changed_at`), so the caller records one event per flip;
    /// `last_error` is always the latest.
    pub async fn set_host_status(
        &self,
        name: &str,
        up: bool,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let flipped = sqlx::query(
            "UPDATE hosts SET up = $2, last_error = $3, changed_at = $4 WHERE name = $1 AND up <> $2",
        )
        .bind(name)
        .bind(i64::from(up))
        .bind(error)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !flipped {
            let found = sqlx::query("UPDATE hosts SET last_error = $2 WHERE name = $1")
                .bind(name)
                .bind(error)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if !found {
                return Err(StoreError::HostNotFound(name.to_owned()));
            }
        }
        tx.commit().await?;
        Ok(flipped)
    }

    /// All hosts, by name.
    pub async fn hosts(&self) -> Result<Vec<HostRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM hosts ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Drains (or undrains) host `name`; returns whether the flag changed.
    /// [`StoreError::HostNotFound`] for a host the store does not know.
    pub async fn set_host_draining(&self, name: &str, draining: bool) -> Result<bool, StoreError> {
        let changed =
            sqlx::query("UPDATE hosts SET draining = $2 WHERE name = $1 AND draining <> $2")
                .bind(name)
                .bind(i64::from(draining))
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1;
        if !changed && !self.hosts().await?.iter().any(|h| h.name == name) {
            return Err(StoreError::HostNotFound(name.to_owned()));
        }
        Ok(changed)
    }
}
