//! VMs: inserted when the reconciler starts creating one, moved between
//! states by compare-and-set, deleted once gone from their host.

use super::{Store, StoreError, VmRow, VmState};

impl Store {
    pub async fn insert_vm(&self, vm: &VmRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO vms (id, course, host, domain, volume, spec_hash, state, vcpus, memory,
                              ssh_port, created_at, state_changed_at, ready_at, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&vm.id)
        .bind(&vm.course)
        .bind(&vm.host)
        .bind(&vm.domain)
        .bind(&vm.volume)
        .bind(&vm.spec_hash)
        .bind(vm.state.as_str())
        .bind(vm.vcpus)
        .bind(vm.memory)
        .bind(vm.ssh_port)
        .bind(vm.created_at)
        .bind(vm.state_changed_at)
        .bind(vm.ready_at)
        .bind(vm.reason.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// All VMs, oldest first.
    pub async fn vms(&self) -> Result<Vec<VmRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM vms ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn vm(&self, id: &str) -> Result<Option<VmRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM vms WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Compare-and-set: moves the VM to `to` only if its state is one of
    /// `from`; returns whether it moved. Sets `state_changed_at` to `now`,
    /// `ready_at` to `now` when `to` is Warm, and `reason` (None clears it).
    /// A VM that does not exist is [`StoreError::VmNotFound`], not `false`:
    /// `false` means someone else moved it first.
    pub async fn transition_vm(
        &self,
        id: &str,
        from: &[VmState],
        to: VmState,
        now: i64,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let moved = if from.is_empty() {
            false
        } else {
            // One placeholder per allowed state: $6, $7, …
            let allowed = (6..6 + from.len())
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "UPDATE vms SET state = $2, state_changed_at = $3, ready_at = COALESCE($4, ready_at),
                                reason = $5
                 WHERE id = $1 AND state IN ({allowed})"
            );
            let mut query = sqlx::query(&sql)
                .bind(id)
                .bind(to.as_str())
                .bind(now)
                .bind((to == VmState::Warm).then_some(now))
                .bind(reason);
            for state in from {
                query = query.bind(state.as_str());
            }
            query.execute(&self.pool).await?.rows_affected() == 1
        };
        if !moved && self.vm(id).await?.is_none() {
            return Err(StoreError::VmNotFound(id.to_owned()));
        }
        Ok(moved)
    }

    /// Deletes the VM's row and ends its live session, if any, with the
    /// reason "vm deleted", in one transaction. Deleting a VM that is not
    /// there is not an error (the reconciler may retry a deletion).
    pub async fn delete_vm(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE sessions SET ended_at = $2, end_reason = 'vm deleted'
             WHERE vm_id = $1 AND ended_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM vms WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
