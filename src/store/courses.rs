//! Courses as last applied: what the reconciler works towards.

use super::{CourseRow, Store, StoreError};

impl Store {
    /// Writes the whole row, inserting or replacing the course of that name.
    pub async fn upsert_course(&self, row: &CourseRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO courses (name, title, revision, spec_hash, spec_json, conditions_json, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (name) DO UPDATE SET
                 title = excluded.title,
                 revision = excluded.revision,
                 spec_hash = excluded.spec_hash,
                 spec_json = excluded.spec_json,
                 conditions_json = excluded.conditions_json,
                 updated_at = excluded.updated_at",
        )
        .bind(&row.name)
        .bind(&row.title)
        .bind(&row.revision)
        .bind(&row.spec_hash)
        .bind(&row.spec_json)
        .bind(&row.conditions_json)
        .bind(row.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces the course's conditions (its status, as JSON) and sets
    /// `updated_at`.
    pub async fn set_course_conditions(
        &self,
        name: &str,
        conditions_json: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let updated =
            sqlx::query("UPDATE courses SET conditions_json = $2, updated_at = $3 WHERE name = $1")
                .bind(name)
                .bind(conditions_json)
                .bind(now)
                .execute(&self.pool)
                .await?
                .rows_affected();
        if updated == 0 {
            return Err(StoreError::CourseNotFound(name.to_owned()));
        }
        Ok(())
    }

    /// Replaces the conditions of a removed course that is still draining,
    /// leaving `updated_at` alone: the row is not part of the revision
    /// applied last ([`Store::applied_courses`]). An unknown course (already
    /// forgotten) is not an error.
    pub async fn set_removed_course_conditions(
        &self,
        name: &str,
        conditions_json: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE courses SET conditions_json = $2 WHERE name = $1")
            .bind(name)
            .bind(conditions_json)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// All courses, by name.
    pub async fn courses(&self) -> Result<Vec<CourseRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM courses ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }

    /// The courses of the revision applied last: rows of removed courses
    /// keep their old revision while they drain, and the current revision's
    /// rows are the most recently written.
    pub async fn applied_courses(&self) -> Result<Vec<CourseRow>, StoreError> {
        let rows = self.courses().await?;
        let newest = rows
            .iter()
            .max_by_key(|r| r.updated_at)
            .map(|r| r.revision.clone());
        Ok(rows
            .into_iter()
            .filter(|r| Some(&r.revision) == newest.as_ref())
            .collect())
    }

    /// Removes the course's row; its VMs and sessions stay until the
    /// reconciler removes them. Forgetting an unknown course is not an error.
    pub async fn forget_course(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM courses WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
