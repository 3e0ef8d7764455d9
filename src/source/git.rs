//! Course revisions read from a Git repository: one commit's course files,
//! validated as a whole, with the commit's id, subject, author and time.
//!
//! The files are read from the commit's tree (never from a work tree, which
//! may hold uncommitted edits) and written to a private temporary folder so
//! that they go through exactly the loader `labpool validate` uses;
//! diagnostics then name them by their path in the repository.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Rejected, Revision, load_dir};
use crate::config::Config;

/// The commit a revision came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub id: String,
    pub subject: String,
    pub author: String,
    /// Commit time, unix seconds.
    pub time: i64,
}

/// The repository or the revision could not be read (not a course problem).
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot open the Git repository {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("no commit `{rev}` in {}", repo.display())]
    Revision {
        repo: PathBuf,
        rev: String,
        #[source]
        source: git2::Error,
    },
    #[error("commit {commit} has no folder `{}`", folder.display())]
    NoFolder { commit: String, folder: PathBuf },
    #[error("cannot read commit {commit}")]
    Read {
        commit: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot write the course files to a temporary folder")]
    Write(#[source] std::io::Error),
}

/// Loads the course files of `rev` (a branch, tag, commit id or any
/// revision expression) in the repository at `repo`, under `folder` (the
/// repository root when `None`). `Ok(Err(_))`: the revision was read but its
/// courses are invalid.
pub fn load_git(
    repo: &Path,
    rev: &str,
    folder: Option<&Path>,
    config: Option<&Config>,
) -> Result<Result<Revision, Rejected>, GitError> {
    let repository = git2::Repository::open(repo).map_err(|source| GitError::Open {
        path: repo.to_path_buf(),
        source,
    })?;
    let commit = repository
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|source| GitError::Revision {
            repo: repo.to_path_buf(),
            rev: rev.to_string(),
            source,
        })?;
    let id = commit.id().to_string();
    let read = |source| GitError::Read {
        commit: id.clone(),
        source,
    };
    let root = commit.tree().map_err(read)?;
    let tree = match folder.filter(|f| !f.as_os_str().is_empty()) {
        None => root,
        Some(f) => root
            .get_path(f)
            .and_then(|entry| entry.to_object(&repository))
            .and_then(|object| object.peel_to_tree())
            .map_err(|_| GitError::NoFolder {
                commit: id.clone(),
                folder: f.to_path_buf(),
            })?,
    };

    let scratch = tempfile::tempdir().map_err(GitError::Write)?;
    let prefix = folder.unwrap_or(Path::new(""));
    let base = scratch.path().join(prefix);
    std::fs::create_dir_all(&base).map_err(GitError::Write)?;
    let mut failure = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or_default();
        let is_file = entry.filemode() == i32::from(git2::FileMode::Blob)
            || entry.filemode() == i32::from(git2::FileMode::BlobExecutable);
        if !is_file || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            return git2::TreeWalkResult::Ok;
        }
        let written = entry
            .to_object(&repository)
            .map_err(|e| std::io::Error::other(e.message().to_string()))
            .and_then(|object| {
                let blob = object
                    .as_blob()
                    .ok_or_else(|| std::io::Error::other("not a blob"))?;
                let path = base.join(dir).join(name);
                std::fs::create_dir_all(path.parent().expect("has a parent"))?;
                std::fs::write(path, blob.content())
            });
        match written {
            Ok(()) => git2::TreeWalkResult::Ok,
            Err(e) => {
                failure = Some(e);
                git2::TreeWalkResult::Abort
            }
        }
    })
    .map_err(|source| failure.take().map_or_else(|| read(source), GitError::Write))?;
    if let Some(e) = failure {
        return Err(GitError::Write(e));
    }

    let message = commit.message().unwrap_or_default();
    let info = Commit {
        id: id.clone(),
        subject: message.lines().next().unwrap_or_default().to_string(),
        author: commit.author().name().unwrap_or_default().to_string(),
        time: commit.time().seconds(),
    };
    // Name files by their path in the repository, not the scratch folder.
    let relative = |p: &Path| {
        p.strip_prefix(scratch.path())
            .map_or_else(|_| p.to_path_buf(), Path::to_path_buf)
    };
    Ok(match load_dir(&base, config) {
        Ok(revision) => Ok(Revision {
            id,
            courses: revision.courses,
            commit: Some(info),
        }),
        Err(mut rejected) => {
            // Messages name files too (`duplicate-name`: "already defined in
            // <file>:<line>"): by their repository path as well.
            let scratch_prefix = format!("{}/", scratch.path().display());
            for d in &mut rejected.diagnostics {
                d.file = relative(&d.file);
                d.message = d.message.replace(&scratch_prefix, "");
            }
            rejected.folder = prefix.to_path_buf();
            Err(rejected)
        }
    })
}
