//! LTI records that outlive a launch: the tool's signing keys, generated
//! secrets, and platforms registered through Dynamic Registration.

use sqlx::FromRow;

use super::sealing::{secret_row, tool_key_row};
use super::{Store, StoreError};

/// One of the tool's RS256 keys.
#[derive(Clone, PartialEq, Eq, FromRow)]
pub struct ToolKeyRow {
    pub kid: String,
    /// PKCS#8 PEM; never logged (see the Debug impl).
    pub private_pem: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for ToolKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolKeyRow")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// A platform registered through Dynamic Registration.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct PlatformRow {
    pub issuer: String,
    pub client_id: String,
    pub auth_login_url: String,
    pub token_url: String,
    pub jwks_url: String,
    /// JSON array of deployment ids seen so far.
    pub deployment_ids: String,
    /// The platform's product family, for operators.
    pub product: Option<String>,
    pub registered_at: i64,
}

impl Store {
    /// All tool keys, newest first, their private keys unsealed.
    pub async fn tool_keys(&self) -> Result<Vec<ToolKeyRow>, StoreError> {
        let sealer = self.sealer()?;
        // Newest first; at equal times the signing key (not retired) first.
        let rows: Vec<ToolKeyRow> = sqlx::query_as(
            "SELECT * FROM tool_keys
             ORDER BY created_at DESC, COALESCE(retired_at, 9223372036854775807) DESC, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|mut row| {
                row.private_pem = sealer
                    .open(&tool_key_row(&row.kid), &row.private_pem)
                    .map_err(|e| StoreError::WrongKey(e.to_string()))?;
                Ok(row)
            })
            .collect()
    }

    /// Adds `key` as the signing key and retires every other live key at
    /// `key.created_at`, in one transaction (replicas never see two or none).
    pub async fn add_tool_key(&self, key: &ToolKeyRow) -> Result<(), StoreError> {
        self.sealer()?;
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE tool_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(key.created_at)
            .execute(&mut *tx)
            .await?;
        insert_tool_key_in(self, &mut tx, key).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds the first key unless one exists (two replicas starting at once
    /// both try; one wins). Returns whether `key` was added.
    pub async fn add_first_tool_key(&self, key: &ToolKeyRow) -> Result<bool, StoreError> {
        self.sealer()?;
        let mut tx = self.begin_write().await?;
        let (live,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM tool_keys WHERE retired_at IS NULL")
                .fetch_one(&mut *tx)
                .await?;
        if live > 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_tool_key_in(self, &mut tx, key).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes keys retired before `before`: no longer published.
    pub async fn drop_retired_tool_keys(&self, before: i64) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM tool_keys WHERE retired_at IS NOT NULL AND retired_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// The secret called `name`, created with `generate` on first use. Every
    /// replica gets the same value: the first writer wins. Stored sealed
    /// with the key given to [`Store::unlock`].
    pub async fn secret(
        &self,
        name: &str,
        generate: impl FnOnce() -> String,
        now: i64,
    ) -> Result<String, StoreError> {
        let sealer = self.sealer()?;
        let row = secret_row(name);
        sqlx::query(
            "INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(sealer.seal(&row, &generate()))
        .bind(now)
        .execute(&self.pool)
        .await?;
        let (value,): (String,) = sqlx::query_as("SELECT value FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        sealer
            .open(&row, &value)
            .map_err(|e| StoreError::WrongKey(e.to_string()))
    }

    /// Registers a platform unless its issuer and client id are registered
    /// already: an existing registration is never replaced (its JWKS URL is
    /// what launches are verified with). Returns whether `row` was added.
    pub async fn insert_platform(&self, row: &PlatformRow) -> Result<bool, StoreError> {
        let added = sqlx::query(
            "INSERT INTO lti_platforms (issuer, client_id, auth_login_url, token_url, jwks_url,
                 deployment_ids, product, registered_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (issuer, client_id) DO NOTHING",
        )
        .bind(&row.issuer)
        .bind(&row.client_id)
        .bind(&row.auth_login_url)
        .bind(&row.token_url)
        .bind(&row.jwks_url)
        .bind(&row.deployment_ids)
        .bind(&row.product)
        .bind(row.registered_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(added == 1)
    }

    /// Removes a dynamically registered platform (`labpool lti platform
    /// remove`): the way to replace one on purpose. Returns whether it existed.
    pub async fn delete_platform(&self, issuer: &str, client_id: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("DELETE FROM lti_platforms WHERE issuer = $1 AND client_id = $2")
                .bind(issuer)
                .bind(client_id)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1,
        )
    }

    /// Every platform registered through Dynamic Registration.
    pub async fn platforms(&self) -> Result<Vec<PlatformRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM lti_platforms ORDER BY issuer, client_id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Records a deployment id first seen in a verified launch of a
    /// dynamically registered platform.
    pub async fn set_platform_deployments(
        &self,
        issuer: &str,
        client_id: &str,
        deployment_ids: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE lti_platforms SET deployment_ids = $3 WHERE issuer = $1 AND client_id = $2",
        )
        .bind(issuer)
        .bind(client_id)
        .bind(deployment_ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Inserts `key` as a live (not retired) key.
async fn insert_tool_key_in(
    store: &Store,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    key: &ToolKeyRow,
) -> Result<(), StoreError> {
    let sealed = store
        .sealer()?
        .seal(&tool_key_row(&key.kid), &key.private_pem);
    sqlx::query(
        "INSERT INTO tool_keys (kid, private_pem, created_at, retired_at) VALUES ($1, $2, $3, NULL)",
    )
    .bind(&key.kid)
    .bind(sealed)
    .bind(key.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
