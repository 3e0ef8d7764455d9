//! The whole result of `labpool diff` over two sides that were read: the
//! course diffs, the notes (renames, an invalid or missing base) and the
//! hold warning. Pure.

use std::path::Path;

use serde::Serialize;

use super::sides::{Loaded, Side};
use super::{CourseDiff, Summary, diff, plural};
use crate::config::Config;
use crate::course::Course;
use crate::source::hold::Removal;

/// The whole result, as printed by `--format json`.
#[derive(Debug, Serialize)]
pub struct DiffReport {
    pub base: Side,
    pub head: Side,
    pub courses: Vec<CourseDiff>,
    pub notes: Vec<String>,
    pub summary: Summary,
    /// HEAD removes so much of BASE that labpool would hold it until an
    /// admin confirms it (`source.hold`); `null` otherwise.
    pub hold: Option<HoldWarning>,
}

/// Why labpool would hold HEAD.
#[derive(Debug, Serialize)]
pub struct HoldWarning {
    #[serde(flatten)]
    pub removal: Removal,
    pub reason: String,
    /// The line printed.
    pub warning: String,
}

/// Compares `base` with a valid `head` (its courses `head_courses`).
/// `folder` is the course folder of Git revisions, for the note on a base
/// without one; `config` adds the image catalog and the hold policy.
pub fn compare(
    base: Loaded,
    head: Side,
    head_courses: &[Course],
    folder: &Path,
    config: Option<&Config>,
) -> DiffReport {
    let mut notes = Vec::new();
    if base.no_folder {
        notes.push(format!(
            "base {} has no folder {}: compared with no courses",
            base.side.reference,
            folder.display()
        ));
    }
    let base_courses: &[Course] = match &base.courses {
        Ok(courses) => courses,
        Err(rejected) => {
            notes.push(format!(
                "base {} is invalid ({}): labpool never applied it, so it is compared as no courses; the pools running are those of the last valid revision",
                base.side.reference,
                plural(rejected.diagnostics.len(), "problem", "problems")
            ));
            &[]
        }
    };
    let images = config.map(|c| &c.images);
    let (courses, renames, summary) = diff(base_courses, head_courses, images);
    notes.extend(renames);
    let policy = config.map(|c| c.source.hold.clone()).unwrap_or_default();
    let removal = Removal::between(base_courses, head_courses);
    let hold = removal.crosses(&policy).map(|reason| HoldWarning {
        warning: format!(
            "warning: this revision {}: {reason}; labpool will hold it until an admin confirms it (labpool revision confirm {})",
            removal.describe(),
            head.id.as_deref().unwrap_or("<id>")
        ),
        removal,
        reason,
    });
    DiffReport {
        base: base.side,
        head,
        courses,
        notes,
        summary,
        hold,
    }
}
