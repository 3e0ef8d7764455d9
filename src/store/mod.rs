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
mod instance;
mod launch_batch;
mod launches;
mod leases;
mod lti;
mod registration_links;
mod rows;
pub mod seal;
mod sealing;
mod sessions;
mod source_revisions;
mod source_status;
mod tokens;
mod vms;

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, Executor, Transaction};

pub use instance::ForeignRow;
pub use launch_batch::LaunchConnection;
pub use launches::{
    LaunchOutcome, LaunchRequest, LoginMatch, LoginRow, WAIT_STALE_MS, WaitOutcome, WaitTicket,
};
pub use leases::Lease;
pub use lti::{PlatformRow, ToolKeyRow};
pub use registration_links::LinkUse;
pub use rows::{
    Claimed, CourseRow, EventRow, HostRow, NewEvent, SessionKey, SessionRow, UnknownVmState, VmRow,
    VmState,
};
pub use sealing::Unlocked;
pub use source_revisions::{Confirmed, SourceRevisionRow};
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
    #[error("the store's secrets are sealed and no secret key was given to open them")]
    Locked,
    #[error("the store's secrets were sealed with another key: {0}")]
    WrongKey(String),
    #[error("cannot create the SQLite file {0} with mode 0600")]
    Create(String, #[source] std::io::Error),
}

/// How long SQLite waits for another connection's write lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on the store; cheap to clone (it shares one connection pool).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The key that seals the secrets, once [`Store::unlock`] checked it;
    /// shared by every clone, so the reconciler's and the tool's handles
    /// agree.
    sealer: std::sync::Arc<std::sync::OnceLock<seal::Sealer>>,
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
        if let Some(db) = sqlite_file(&url).filter(|_| url.contains("mode=rwc")) {
            // Before SQLite sees it: SQLite creates a missing file with the
            // umask's mode (0644), and gives -wal and -shm the main file's.
            create_private(&db)?;
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
        if backend == Backend::Sqlite && !is_sqlite_memory(&url) {
            // Space freed by deletes goes back to the file system
            // (`Store::reclaim`) rather than staying in the file for ever:
            // pending logins come and go by the thousand. Only possible
            // before the first table exists; older files switch below.
            retry_while_locked(|| async {
                pool.execute("PRAGMA auto_vacuum = INCREMENTAL").await?;
                Ok(())
            })
            .await?;
        }
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
        if backend == Backend::Sqlite && !is_sqlite_memory(&url) {
            switch_to_incremental_vacuum(&pool).await;
        }
        Ok(Store {
            pool,
            backend,
            sealer: Default::default(),
        })
    }

    /// Gives the pages of deleted rows back to the file system: on SQLite
    /// `incremental_vacuum` moves them to the end of the file and truncates
    /// it, and a checkpoint lets the WAL file shrink too. (PostgreSQL's
    /// autovacuum reuses dead rows' space by itself.)
    pub async fn reclaim(&self) -> Result<(), StoreError> {
        if self.backend == Backend::Sqlite {
            self.pool.execute("PRAGMA incremental_vacuum").await?;
            // Best effort: a reader in the middle of a snapshot only
            // postpones the truncation to the next checkpoint.
            let _ = self.pool.execute("PRAGMA wal_checkpoint(TRUNCATE)").await;
        }
        Ok(())
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

/// A file made before labpool set `auto_vacuum` keeps deleted rows' pages
/// for ever; one `VACUUM` rewrites it in incremental mode. It runs under the
/// migration lock; when another labpool has the file open the VACUUM
/// cannot get its lock, and the file is left as it is (it still works, it
/// just does not shrink) and switched at a later start.
async fn switch_to_incremental_vacuum(pool: &AnyPool) {
    const INCREMENTAL: i64 = 2;
    let switched = async {
        let mut conn = pool.acquire().await?;
        let (mode,): (i64,) = sqlx::query_as("PRAGMA auto_vacuum")
            .fetch_one(&mut *conn)
            .await?;
        if mode == INCREMENTAL {
            return Ok::<bool, sqlx::Error>(false);
        }
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL").await?;
        conn.execute("VACUUM").await?;
        Ok(true)
    }
    .await;
    match switched {
        Ok(true) => tracing::info!("SQLite store switched to incremental auto_vacuum"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e,
            "cannot switch the SQLite store to incremental auto_vacuum now (another labpool has it open?); it keeps working and is switched at a later start"),
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
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .mode(0o600)
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

/// Creates the SQLite file `db` empty with mode 0600 unless it exists (an
/// existing file keeps its mode: `serve` refuses a readable one).
fn create_private(db: &std::path::Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Create(db.display().to_string(), e)),
    }
}

/// The files of a SQLite store at `url`: the database first, then the
/// journals SQLite keeps beside it (none for PostgreSQL or an in-memory
/// database). The `.lock` file beside them holds nothing.
pub fn sqlite_files(url: &str) -> Vec<std::path::PathBuf> {
    let Some(db) = url.strip_prefix("sqlite:").and(sqlite_file(url)) else {
        return Vec::new();
    };
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    vec![db.clone(), with("-wal"), with("-shm"), with("-journal")]
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
