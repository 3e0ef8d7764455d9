//! Admin API tokens: stored as the SHA-256 of the token, never the token.

use sqlx::FromRow;

use super::{Store, StoreError};

/// One admin API token, without the token (labpool never has it again after
/// `labpool token create` printed it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, FromRow)]
pub struct ApiTokenRow {
    pub id: String,
    pub name: String,
    /// `read` or `admin`.
    pub scope: String,
    #[serde(skip)]
    pub token_sha256: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// A read token scoped to courses: their names as a JSON array. None:
    /// every course.
    #[serde(skip)]
    pub courses: Option<String>,
}

impl ApiTokenRow {
    /// The courses the token is limited to; None for every course. A
    /// scope that does not parse is no course at all (never every one).
    pub fn course_scope(&self) -> Option<Vec<String>> {
        self.courses
            .as_deref()
            .map(|json| serde_json::from_str(json).unwrap_or_default())
    }
}

/// How often a token's `last_used_at` is written at most: every request
/// writing it would make a refreshing dashboard a steady writer.
const LAST_USED_EVERY_MS: i64 = 60_000;

impl Store {
    /// Stores a new token. Fails with [`StoreError::TokenNameTaken`] when a
    /// token of that name still works.
    pub async fn insert_api_token(&self, row: &ApiTokenRow) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let taken: Option<(String,)> =
            sqlx::query_as("SELECT id FROM api_tokens WHERE name = $1 AND revoked_at IS NULL")
                .bind(&row.name)
                .fetch_optional(&mut *tx)
                .await?;
        if taken.is_some() {
            return Err(StoreError::TokenNameTaken(row.name.clone()));
        }
        sqlx::query(
            "INSERT INTO api_tokens (id, name, scope, token_sha256, created_at, last_used_at,
                                     revoked_at, courses)
             VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6)",
        )
        .bind(&row.id)
        .bind(&row.name)
        .bind(&row.scope)
        .bind(&row.token_sha256)
        .bind(row.created_at)
        .bind(&row.courses)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The token whose hash is `sha256` (revoked or not: the caller says why
    /// it is refused).
    pub async fn api_token_by_hash(&self, sha256: &str) -> Result<Option<ApiTokenRow>, StoreError> {
        // fetch_all steps the statement to its end, so SQLite's read
        // snapshot never outlives the lookup (a revoke from another process
        // must be seen by the next request).
        let rows: Vec<ApiTokenRow> =
            sqlx::query_as("SELECT * FROM api_tokens WHERE token_sha256 = $1")
                .bind(sha256)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().next())
    }

    pub async fn api_token(&self, id: &str) -> Result<Option<ApiTokenRow>, StoreError> {
        let rows: Vec<ApiTokenRow> = sqlx::query_as("SELECT * FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Every token, revoked ones too, oldest first.
    pub async fn api_tokens(&self) -> Result<Vec<ApiTokenRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM api_tokens ORDER BY created_at, name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Revokes the working token named `name`; false if there is none.
    pub async fn revoke_api_token(&self, name: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Notes that token `id` was used at `now` (at most once a minute).
    pub async fn touch_api_token(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_tokens SET last_used_at = $2
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(id)
        .bind(now)
        .bind(now - LAST_USED_EVERY_MS)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
