//! Reading one side of `labpool diff`: a folder of course files if such a
//! directory exists, else a Git revision in the repository.

use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::course::Course;
use crate::source::git::{Commit, GitError, load_git};
use crate::source::{Rejected, Revision, load_dir};

/// One side of the comparison, as given and as read.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// BASE or HEAD as given on the command line.
    #[serde(rename = "ref")]
    pub reference: String,
    /// `folder` or `git`.
    pub source: &'static str,
    /// The revision id (commit id, or `folder:` + hash), when it was read.
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<Commit>,
    /// Its course files are valid.
    pub valid: bool,
    /// How many problems its course files have.
    pub problems: usize,
}

/// A side that was read: its courses, or why they are not valid.
pub struct Loaded {
    pub side: Side,
    pub courses: Result<Vec<Course>, Rejected>,
    /// The Git revision has no course folder at all.
    pub no_folder: bool,
}

fn git_commit(repo: &Path, rev: &str) -> Option<Commit> {
    let repository = git2::Repository::open(repo).ok()?;
    let commit = repository
        .revparse_single(rev)
        .ok()?
        .peel_to_commit()
        .ok()?;
    Some(Commit {
        id: commit.id().to_string(),
        subject: commit
            .message()
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        author: commit.author().name().unwrap_or_default().to_string(),
        time: commit.time().seconds(),
    })
}

/// Reads the side `reference`: a folder, else a revision of `repo` whose
/// courses are under `folder`. A base revision without that folder holds no
/// courses (`no_folder`).
pub fn load_side(
    reference: &str,
    repo: &Path,
    folder: &Path,
    config: Option<&Config>,
    is_base: bool,
) -> Result<Loaded, GitError> {
    let dir = Path::new(reference);
    let (source, result) = if dir.is_dir() {
        ("folder", load_dir(dir, config))
    } else {
        match load_git(repo, reference, Some(folder), config) {
            Ok(result) => ("git", result),
            // A base without the course folder (the first courses arrive in
            // this change) holds no courses.
            Err(GitError::NoFolder { commit, .. }) if is_base => {
                let side = Side {
                    reference: reference.to_string(),
                    source: "git",
                    id: Some(commit),
                    commit: git_commit(repo, reference),
                    valid: true,
                    problems: 0,
                };
                return Ok(Loaded {
                    side,
                    courses: Ok(Vec::new()),
                    no_folder: true,
                });
            }
            Err(e) => return Err(e),
        }
    };
    let (id, commit, courses) = match result {
        Ok(Revision {
            id,
            courses,
            commit,
        }) => (Some(id), commit, Ok(courses)),
        Err(rejected) => {
            let commit = (source == "git")
                .then(|| git_commit(repo, reference))
                .flatten();
            (commit.as_ref().map(|c| c.id.clone()), commit, Err(rejected))
        }
    };
    let side = Side {
        reference: reference.to_string(),
        source,
        id,
        commit,
        valid: courses.is_ok(),
        problems: courses.as_ref().err().map_or(0, |r| r.diagnostics.len()),
    };
    Ok(Loaded {
        side,
        courses,
        no_folder: false,
    })
}
