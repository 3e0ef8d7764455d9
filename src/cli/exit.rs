//! The exit statuses of every `labpool` command: one table, documented in
//! README's "Exit statuses" section, followed by every command.
//!
//! | status | meaning |
//! | --- | --- |
//! | 0 | done: valid, nothing to change (`plan`, `diff`: no changes) |
//! | 1 | invalid input or findings: course files or a configuration with problems, an invalid `diff` HEAD, a request refused (no such token, revision or platform) |
//! | 2 | changes: `plan` and `diff` found something to do (as `terraform plan -detailed-exitcode`) |
//! | 64 | usage: the command line is wrong (unknown command or flag, a bad value) |
//! | 69 | unavailable: the store, a host or the Git remote cannot be reached or failed |
//! | 74 | I/O: a path or file cannot be read or written |

use std::io::Write;
use std::process::ExitCode;

/// One exit status of the table above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Status {
    /// Done: everything checked is valid; `plan`/`diff`: no changes.
    Ok = 0,
    /// Invalid input or findings.
    Invalid = 1,
    /// `plan`/`diff`: there are changes.
    Changes = 2,
    /// The command line is wrong (sysexits `EX_USAGE`).
    Usage = 64,
    /// The store, a host or the remote cannot be reached (`EX_UNAVAILABLE`).
    Unavailable = 69,
    /// A path or file cannot be read or written (`EX_IOERR`).
    Io = 74,
}

impl Status {
    /// Every status, in the table's order.
    pub const ALL: [Status; 6] = [
        Status::Ok,
        Status::Invalid,
        Status::Changes,
        Status::Usage,
        Status::Unavailable,
        Status::Io,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> ExitCode {
        ExitCode::from(status.code())
    }
}

/// A command that could not do its work: the error to print and the
/// status it ends with. `?` on any error classifies it ([`classify`]);
/// [`Failure::new`] states the status.
#[derive(Debug)]
pub struct Failure {
    pub status: Status,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(status: Status, error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            status,
            error: error.into(),
        }
    }

    /// A failure with a message of its own.
    pub fn msg(status: Status, message: impl std::fmt::Display) -> Failure {
        Failure::new(status, anyhow::anyhow!("{message}"))
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Failure {
        let error = error.into();
        Failure {
            status: classify(&error),
            error,
        }
    }
}

/// What a command returns: its status, or why it could not finish.
pub type Outcome = Result<Status, Failure>;

/// States the status of a fallible step: `store.x().await.or_status(Status::Unavailable)?`.
pub trait OrStatus<T> {
    fn or_status(self, status: Status) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> OrStatus<T> for Result<T, E> {
    fn or_status(self, status: Status) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(status, e))
    }
}

/// The status of an error that did not state one, from what caused it:
/// the store or a database → unavailable; a secret-holding file open to
/// others, a bad key, an unsupported URL or a refused `--dev` → invalid; a file → I/O;
/// anything else failed at run time on the store or a host → unavailable.
pub fn classify(error: &anyhow::Error) -> Status {
    use crate::secret_key::SecretKeyError;
    use crate::store::StoreError;
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return match e {
                StoreError::Database(_) | StoreError::Migrate(_) => Status::Unavailable,
                StoreError::Lock(_) | StoreError::Create(..) => Status::Io,
                _ => Status::Invalid,
            };
        }
        if let Some(e) = cause.downcast_ref::<SecretKeyError>() {
            match e {
                SecretKeyError::Read(..) | SecretKeyError::Create(..) => return Status::Io,
                // Its store error decides.
                SecretKeyError::Store { .. } => continue,
                _ => return Status::Invalid,
            }
        }
        if cause.is::<sqlx::Error>() {
            return Status::Unavailable;
        }
        if cause.is::<crate::file_modes::Exposed>()
            || matches!(
                cause.downcast_ref(),
                Some(crate::http::try_it::TryItError::Exposed(_))
            )
        {
            return Status::Invalid;
        }
        if cause.is::<std::io::Error>() {
            return Status::Io;
        }
    }
    Status::Unavailable
}

/// Whether `error` is a write to a reader that went away (`labpool status | head -1`).
pub fn is_closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes a command's output to stdout and ends with `status`. A reader
/// that went away (`| head -1`) ends it quietly with the same status; any
/// other write error is an I/O failure.
pub fn print(status: Status, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Outcome {
    let mut out = std::io::stdout().lock();
    written(status, write(&mut out).and_then(|()| out.flush()))
}

/// `status` once the output is written ([`print`] for another writer).
pub fn written(status: Status, result: std::io::Result<()>) -> Outcome {
    match result {
        Ok(()) => Ok(status),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(status),
        Err(e) => Err(Failure::new(
            Status::Io,
            anyhow::Error::new(e).context("cannot write the output"),
        )),
    }
}

/// Ends a command: prints a failure's causes on stderr (nothing for a
/// closed pipe) and returns the status.
pub fn finish(outcome: Outcome) -> Status {
    match outcome {
        Ok(status) => status,
        Err(failure) if is_closed_pipe(&failure.error) => match failure.status {
            // Output cut short by its reader is not an I/O failure.
            Status::Io => Status::Ok,
            status => status,
        },
        Err(failure) => {
            eprintln!("labpool: {:#}", failure.error);
            failure.status
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_the_documented_ones() {
        let codes: Vec<u8> = Status::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes, [0, 1, 2, 64, 69, 74]);
    }

    #[test]
    fn errors_are_classified_by_their_cause() {
        let io = anyhow::Error::new(std::io::Error::other("disk")).context("cannot read");
        assert_eq!(classify(&io), Status::Io);
        let store = anyhow::Error::new(crate::store::StoreError::Database(
            sqlx::Error::PoolTimedOut,
        ));
        assert_eq!(classify(&store), Status::Unavailable);
        let url = anyhow::Error::new(crate::store::StoreError::UnsupportedUrl("x".into()));
        assert_eq!(classify(&url), Status::Invalid);
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_closed_pipe(&pipe));
        assert_eq!(
            finish(Err(Failure::from(pipe))),
            Status::Ok,
            "a closed pipe ends quietly"
        );
    }
}
