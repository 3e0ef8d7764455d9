//! Where desired courses come from: a local folder (read again on every
//! pass) or a revision of a Git repository ([`git`]). Remote fetching and
//! webhooks come later behind the same shape.
//!
//! A revision is loaded and validated as a whole (the checks of `labpool
//! validate`). Only a valid revision is ever handed on: a broken file leaves
//! the last good revision in force, so pools never shrink because of a typo.

pub mod diff;
pub mod git;
pub mod hold;
pub mod remote;
pub mod watch;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::course::{Course, load_paths};
use crate::diagnostic::Diagnostic;

/// A valid set of courses, with an id that changes when any course does.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// `folder:` and 12 hex digits of a hash over the courses, or the
    /// commit id for a Git revision.
    pub id: String,
    pub courses: Vec<Course>,
    /// The commit, for a Git revision.
    pub commit: Option<git::Commit>,
}

/// The folder did not hold a valid set of courses.
#[derive(Debug, Clone, thiserror::Error)]
#[error("course folder {} has {} problem(s)", folder.display(), diagnostics.len())]
pub struct Rejected {
    pub folder: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

/// Loads the course folder named in the configuration.
pub fn load_folder(config: &Config) -> Result<Revision, Rejected> {
    load_dir(&config.source.folder, Some(config))
}

/// Loads and validates a folder of course files as one revision; with a
/// configuration, images and host fit are checked too.
pub fn load_dir(folder: &Path, config: Option<&Config>) -> Result<Revision, Rejected> {
    let folder = folder.to_path_buf();
    let loaded = load_paths(std::slice::from_ref(&folder), config);
    if !loaded.is_valid() {
        return Err(Rejected {
            folder,
            diagnostics: loaded.diagnostics,
        });
    }
    let mut courses: Vec<Course> = loaded.courses.into_iter().map(|c| c.course).collect();
    courses.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    Ok(Revision {
        id: revision_id(&courses),
        courses,
        commit: None,
    })
}

fn revision_id(courses: &[Course]) -> String {
    let mut hash = Sha256::new();
    for c in courses {
        hash.update(serde_json::to_vec(c).expect("courses serialize"));
        hash.update(b"\n");
    }
    format!("folder:{}", &hex::encode(hash.finalize())[..12])
}
