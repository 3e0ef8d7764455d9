//! The state store: hosts, courses as last applied, VMs, sessions and events,
//! in SQLite (the embedded default) or PostgreSQL (production).
//!
//! One code path serves both: runtime queries (`sqlx::query`, never the
//! compile-time macros) over sqlx's `Any` driver, `$1` placeholders (which
//! both accept) and only the column types `Any` reads on both (TEXT, BIGINT).
//! Times are unix milliseconds passed in by the caller, so the store has no
//! clock of its own and tests control time.
//!
//! Every operation that must not interleave with another (a claim, deleting a
//! VM) runs in one write transaction: `BEGIN IMMEDIATE` on SQLite, so the
//! write lock is taken (and waited for, up to `busy_timeout`) before anything
//! is read; row locks on PostgreSQL. Partial unique indexes back the session
//! invariants in case code ever gets this wrong.

mod codes;
mod counts;
mod courses;
mod events;
mod hosts;
mod launch_batch;
mod launches;
mod leases;
mod lti;
mod rows;
mod sessions;
mod source_status;
mod tokens;
mod vms;

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, Executor, Transaction};

pub use launch_batch::LaunchConnection;
pub use launches::{
    LaunchOutcome, LaunchRequest, LoginMatch, LoginRow, WAIT_STALE_MS, WaitOutcome, WaitTicket,
};
pub use leases::Lease;
pub use lti::{PlatformRow, ToolKeyRow};
pub use rows::{
    Claimed, CourseRow, EventRow, HostRow, NewEvent, SessionKey, SessionRow, UnknownVmState, VmRow,
    VmState,
};
pub use tokens::ApiTokenRow;

/// Which database a [`Store`] talks to, chosen by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL `{0}`: use sqlite:… or postgres://…")]
    UnsupportedUrl(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("VM `{0}` not found")]
    VmNotFound(String),
    #[error("host `{0}` not found")]
    HostNotFound(String),
    #[error("course `{0}` not found")]
    CourseNotFound(String),
    #[error("session `{0}` not found or already ended")]
    SessionNotLive(String),
    #[error("a token named `{0}` exists; revoke it first or choose another name")]
    TokenNameTaken(String),
    #[error("cannot lock the SQLite file for migrations")]
    Lock(#[source] std::io::Error),
}

/// How long SQLite waits for another connection's write lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on the store; cheap to clone (it shares one connection pool).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Runs `step` again while SQLite answers "database is locked" (another
/// labpool is creating or migrating the same file), for up to ~6 s.
async fn retry_while_locked<F, Fut>(mut step: F) -> Result<(), StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut pause = std::time::Duration::from_millis(20);
    for _ in 0..12 {
        match step().await {
            Err(e) if is_locked(&e) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
            other => return other,
        }
    }
    step().await
}

fn is_locked(e: &StoreError) -> bool {
    let text = match e {
        StoreError::Database(e) => e.to_string(),
        StoreError::Migrate(e) => format!("{e} {:?}", e),
        _ => return false,
    };
    text.contains("database is locked") || text.contains("(code: 5)")
}

impl Store {
    /// Connects to `url` (`sqlite:PATH`, `sqlite::memory:`, `postgres://…`)
    /// and applies the migrations that are not applied yet. A SQLite file is
    /// created if missing; a relative path is relative to the current
    /// directory.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = classify(url)?;
        let mut options = AnyPoolOptions::new();
        if backend == Backend::Sqlite {
            // One writer at a time anyway (WAL); each connection brings its
            // own page cache, so a few are enough.
            options = options.max_connections(4);
            // Set on every connection, not left to sqlx's defaults, because
            // claims depend on them.
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    let ms = SQLITE_BUSY_TIMEOUT.as_millis();
                    conn.execute(format!("PRAGMA busy_timeout = {ms}").as_str())
                        .await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            });
            if is_sqlite_memory(&url) {
                // Through `Any` every new connection to `:memory:` opens a new,
                // empty database: keep exactly one connection, forever.
                options = options
                    .max_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None);
            }
        }
        let pool = options.connect(&url).await?;
        // sqlx's SQLite migrator takes no lock: two labpools opening a new
        // file at once would both run the first migration. A lock file next
        // to the database makes them take turns (PostgreSQL's migrator locks
        // by itself).
        let _turn = match sqlite_file(&url) {
            Some(db) if backend == Backend::Sqlite => Some(lock_beside(&db).await?),
            _ => None,
        };
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the writer. It is a property of the
            // file, so setting it once here (before anyone else writes) is
            // enough; switching needs a lock busy_timeout cannot wait for,
            // so two labpools opening a new file at once retry instead.
            retry_while_locked(|| async {
                pool.execute("PRAGMA journal_mode = WAL").await?;
                Ok(())
            })
            .await?;
        }
        match backend {
            Backend::Sqlite => {
                retry_while_locked(|| async {
                    Ok(sqlx::migrate!("migrations/sqlite").run(&pool).await?)
                })
                .await?
            }
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool, waiting for connections in use to be returned.
    /// Optional: dropping the last clone closes it too, just not gracefully.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a transaction that will write: on SQLite it takes the write
    /// lock up front, so its reads cannot go stale before its writes (and a
    /// busy database is waited for rather than failing mid-transaction).
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

/// The backend for `url`, and the URL to connect with: SQLite files get
/// `mode=rwc` (create if missing) unless the URL already says a mode.
fn classify(url: &str) -> Result<(Backend, String), StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_owned()));
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    };
    if rest.trim_start_matches("//").is_empty() {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    }
    let url = match url.split_once('?') {
        _ if is_sqlite_memory(url) => url.to_owned(),
        None => format!("{url}?mode=rwc"),
        Some((_, query)) if query.split('&').any(|p| p.starts_with("mode=")) => url.to_owned(),
        Some(_) => format!("{url}&mode=rwc"),
    };
    Ok((Backend::Sqlite, url))
}

/// The database file of a SQLite URL (none for in-memory databases).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    if is_sqlite_memory(url) {
        return None;
    }
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().filter(|p| !p.is_empty())?;
    Some(std::path::PathBuf::from(path))
}

/// Takes an exclusive lock on `DB.lock` (waiting for it on the blocking
/// pool); released when the file is dropped.
async fn lock_beside(db: &std::path::Path) -> Result<std::fs::File, StoreError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| StoreError::Lock(std::io::Error::other(e)))?;
    locked.map_err(StoreError::Lock)
}

fn is_sqlite_memory(url: &str) -> bool {
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    path.split('?').next() == Some(":memory:") || url.contains("mode=memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_a_backend() {
        let sqlite = |url: &str| match classify(url) {
            Ok((Backend::Sqlite, url)) => url,
            other => panic!("{other:?}"),
        };
        assert_eq!(sqlite("sqlite:state.db"), "sqlite:state.db?mode=rwc");
        assert_eq!(
            sqlite("sqlite:///var/lib/x.db"),
            "sqlite:///var/lib/x.db?mode=rwc"
        );
        assert_eq!(
            sqlite("sqlite:x.db?cache=shared"),
            "sqlite:x.db?cache=shared&mode=rwc"
        );
        assert_eq!(sqlite("sqlite:x.db?mode=ro"), "sqlite:x.db?mode=ro");
        assert_eq!(sqlite("sqlite::memory:"), "sqlite::memory:");
        for url in ["postgres://u@h/db", "postgresql://h/db"] {
            assert!(matches!(classify(url), Ok((Backend::Postgres, u)) if u == url));
        }
        for url in ["mysql://h/db", "state.db", "sqlite:", "sqlite://", ""] {
            assert!(
                matches!(classify(url), Err(StoreError::UnsupportedUrl(_))),
                "{url}"
            );
        }
    }
}
