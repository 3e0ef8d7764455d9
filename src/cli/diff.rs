//! `labpool diff BASE HEAD`: reads both sides, compares them and prints the
//! result (see `crate::source::diff`). Status: 0 no changes, 2 changes,
//! 1 invalid HEAD, an unknown revision or a broken `--config`, 74 a
//! repository or file that cannot be read.

use super::args::DiffArgs;
use super::exit::{Failure, Outcome, Status, print};
use crate::source::diff::sides::{Loaded, load_side};
use crate::source::diff::{render, report};
use crate::source::git::GitError;

/// Runs `labpool diff`.
pub fn command(args: &DiffArgs) -> Outcome {
    let config = super::load_config_reported(args.config.as_deref())?;
    let load = |reference: &str, is_base| {
        load_side(
            reference,
            &args.repo,
            &args.folder,
            config.as_ref(),
            is_base,
        )
        .map_err(git_failure)
    };
    let base = load(&args.base, true)?;
    let Loaded {
        side: head,
        courses: head_courses,
        ..
    } = load(&args.head, false)?;
    let format = args.format;
    match head_courses {
        Err(rejected) => print(Status::Invalid, |out| {
            render::write_rejected(out, format, &base.side, &head, &rejected)
        }),
        Ok(head_courses) => {
            let report = report::compare(base, head, &head_courses, &args.folder, config.as_ref());
            let status = if report.summary.has_changes() {
                Status::Changes
            } else {
                Status::Ok
            };
            print(status, |out| render::write(out, format, &report))
        }
    }
}

/// A side that could not be read: a repository or commit that cannot be
/// read is I/O; a revision that names nothing is invalid input.
fn git_failure(e: GitError) -> Failure {
    let status = match e {
        GitError::Open { .. } | GitError::Read { .. } | GitError::Write(_) => Status::Io,
        GitError::Revision { .. } | GitError::NoFolder { .. } => Status::Invalid,
    };
    Failure::msg(status, error_chain(&e))
}

/// The error and its causes, git2's without their class and code.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        match s.downcast_ref::<git2::Error>() {
            Some(g) => text += &format!(": {}", g.message()),
            None => text += &format!(": {s}"),
        }
        source = s.source();
    }
    text
}
