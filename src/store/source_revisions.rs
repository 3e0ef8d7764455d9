//! The revision in force and the revision held back (`source_revisions`):
//! written by the reconciler, confirmed by an admin, read by status and at
//! start-up.

use serde::Serialize;
use sqlx::FromRow;

use super::{Store, StoreError};

/// One row of `source_revisions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct SourceRevisionRow {
    /// `applied` or `held`.
    pub name: String,
    pub revision: String,
    pub commit_json: Option<String>,
    pub detail_json: String,
    pub at: i64,
    pub confirmed_by: Option<String>,
    pub confirmed_at: Option<i64>,
}

/// What a confirmation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    /// Recorded now.
    Now,
    /// It was confirmed before (by whom).
    Already(String),
    /// That revision is not held; the one held, if any.
    NotHeld(Option<String>),
}

impl Store {
    /// The row `name` (`applied` or `held`).
    pub async fn source_revision(
        &self,
        name: &str,
    ) -> Result<Option<SourceRevisionRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM source_revisions WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records the revision in force.
    pub async fn set_applied_revision(
        &self,
        revision: &str,
        commit_json: Option<&str>,
        detail_json: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO source_revisions (name, revision, commit_json, detail_json, at)
             VALUES ('applied', $1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET revision = excluded.revision,
                 commit_json = excluded.commit_json, detail_json = excluded.detail_json,
                 at = excluded.at, confirmed_by = NULL, confirmed_at = NULL",
        )
        .bind(revision)
        .bind(commit_json)
        .bind(detail_json)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Holds `revision` back (replacing any other held revision, whose
    /// confirmation goes with it). Holding the revision already held keeps
    /// its time and confirmation. Returns whether it was not held before.
    pub async fn hold_revision(
        &self,
        revision: &str,
        commit_json: Option<&str>,
        detail_json: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let before = self.source_revision("held").await?;
        if let Some(before) = before.filter(|r| r.revision == revision) {
            if before.detail_json == detail_json {
                return Ok(false);
            }
            sqlx::query("UPDATE source_revisions SET detail_json = $2 WHERE name = 'held' AND revision = $1")
                .bind(revision)
                .bind(detail_json)
                .execute(&self.pool)
                .await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO source_revisions (name, revision, commit_json, detail_json, at)
             VALUES ('held', $1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET revision = excluded.revision,
                 commit_json = excluded.commit_json, detail_json = excluded.detail_json,
                 at = excluded.at, confirmed_by = NULL, confirmed_at = NULL",
        )
        .bind(revision)
        .bind(commit_json)
        .bind(detail_json)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(true)
    }

    /// Nothing is held any more (applied, superseded or reverted).
    pub async fn clear_held_revision(&self) -> Result<Option<SourceRevisionRow>, StoreError> {
        let held = self.source_revision("held").await?;
        if held.is_some() {
            sqlx::query("DELETE FROM source_revisions WHERE name = 'held'")
                .execute(&self.pool)
                .await?;
        }
        Ok(held)
    }

    /// An admin confirms the held revision `revision` (that exact id, in the
    /// same statement that checks it is the one held).
    pub async fn confirm_held_revision(
        &self,
        revision: &str,
        by: &str,
        at: i64,
    ) -> Result<Confirmed, StoreError> {
        let done = sqlx::query(
            "UPDATE source_revisions SET confirmed_by = $2, confirmed_at = $3
             WHERE name = 'held' AND revision = $1 AND confirmed_at IS NULL",
        )
        .bind(revision)
        .bind(by)
        .bind(at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if done == 1 {
            return Ok(Confirmed::Now);
        }
        Ok(match self.source_revision("held").await? {
            Some(r) if r.revision == revision => {
                Confirmed::Already(r.confirmed_by.unwrap_or_default())
            }
            other => Confirmed::NotHeld(other.map(|r| r.revision)),
        })
    }
}
