//! Opening the store's secrets with a key (`Store::unlock`): the key is
//! checked against the store's key-check row, and an old store's plaintext
//! secrets are sealed in place (idempotent, safe with replicas starting at
//! once: each row is rewritten only while it still holds the plaintext read).

use super::seal::{Sealer, is_sealed};
use super::{Store, StoreError};

/// The `secrets` row that proves which key sealed the store: a constant,
/// sealed. A key that does not open it is another key.
const CHECK: &str = "labpool-seal-check";
const CHECK_VALUE: &str = "labpool sealed store";

/// The associated data of a `secrets` row.
pub(super) fn secret_row(name: &str) -> String {
    format!("secrets/{name}")
}

/// The associated data of a `tool_keys` row.
pub(super) fn tool_key_row(kid: &str) -> String {
    format!("tool_keys/{kid}")
}

/// What [`Store::unlock`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unlocked {
    /// Plaintext secrets of an older labpool, sealed now.
    pub sealed_now: usize,
    /// Whether this key sealed the store first (a new store, or an old one).
    pub first_key: bool,
}

impl Store {
    /// Checks `sealer` against the store and keeps it for reading and
    /// writing secrets. A wrong key changes nothing and fails with
    /// [`StoreError::WrongKey`]; plaintext rows of an older labpool are
    /// sealed in the same transaction.
    pub async fn unlock(&self, sealer: Sealer) -> Result<Unlocked, StoreError> {
        if let Some(current) = self.sealer.get() {
            return if current.same_key(&sealer) {
                Ok(Unlocked::default())
            } else {
                Err(StoreError::WrongKey(
                    "this store is already open with a different key".into(),
                ))
            };
        }
        let mut tx = self.begin_write().await?;
        let secrets: Vec<(String, String)> = sqlx::query_as("SELECT name, value FROM secrets")
            .fetch_all(&mut *tx)
            .await?;
        let keys: Vec<(String, String)> = sqlx::query_as("SELECT kid, private_pem FROM tool_keys")
            .fetch_all(&mut *tx)
            .await?;
        let check = secrets.iter().find(|(name, _)| name == CHECK);
        if let Some((_, value)) = check
            && sealer.open(&secret_row(CHECK), value).as_deref() != Ok(CHECK_VALUE)
        {
            tx.rollback().await?;
            return Err(wrong_key("it does not open the store's key check"));
        }
        // Every sealed row must open too (a store sealed before the check
        // row existed cannot happen, but a damaged row should say so now,
        // not at the first launch).
        let rows = secrets
            .iter()
            .filter(|(name, _)| name != CHECK)
            .map(|(name, v)| (secret_row(name), v))
            .chain(keys.iter().map(|(kid, v)| (tool_key_row(kid), v)));
        for (row, value) in rows {
            if is_sealed(value) && sealer.open(&row, value).is_err() {
                tx.rollback().await?;
                return Err(wrong_key(&format!("{row} does not open with it")));
            }
        }
        let mut sealed_now = 0;
        for (name, value) in secrets.iter().filter(|(_, v)| !is_sealed(v)) {
            sealed_now +=
                sqlx::query("UPDATE secrets SET value = $1 WHERE name = $2 AND value = $3")
                    .bind(sealer.seal(&secret_row(name), value))
                    .bind(name)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected() as usize;
        }
        for (kid, pem) in keys.iter().filter(|(_, v)| !is_sealed(v)) {
            sealed_now += sqlx::query(
                "UPDATE tool_keys SET private_pem = $1 WHERE kid = $2 AND private_pem = $3",
            )
            .bind(sealer.seal(&tool_key_row(kid), pem))
            .bind(kid)
            .bind(pem)
            .execute(&mut *tx)
            .await?
            .rows_affected() as usize;
        }
        let first_key = check.is_none()
            && sqlx::query(
                "INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(CHECK)
            .bind(sealer.seal(&secret_row(CHECK), CHECK_VALUE))
            .bind(crate::reconcile::now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
        tx.commit().await?;
        if check.is_none() && !first_key {
            // Another replica sealed the store between our read and our
            // insert: its key must be ours.
            let (value,): (String,) = sqlx::query_as("SELECT value FROM secrets WHERE name = $1")
                .bind(CHECK)
                .fetch_one(&self.pool)
                .await?;
            if sealer.open(&secret_row(CHECK), &value).as_deref() != Ok(CHECK_VALUE) {
                return Err(wrong_key("it does not open the store's key check"));
            }
        }
        let _ = self.sealer.set(sealer);
        Ok(Unlocked {
            sealed_now,
            first_key,
        })
    }

    /// Whether some key sealed this store already (its key-check row exists).
    pub async fn is_sealed(&self) -> Result<bool, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM secrets WHERE name = $1")
            .bind(CHECK)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// The key given to [`Store::unlock`].
    pub(super) fn sealer(&self) -> Result<&Sealer, StoreError> {
        self.sealer.get().ok_or(StoreError::Locked)
    }
}

fn wrong_key(why: &str) -> StoreError {
    StoreError::WrongKey(format!(
        "{why}. Use the key file the store was sealed with (every replica needs the same one); \
         nothing was changed"
    ))
}
