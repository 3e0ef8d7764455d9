//! `labpool diff` as plain text: a line per created or removed course, the
//! details of each change indented, the notes and the summary.

use std::io::Write;

use super::{DiffReport, Side, details, headline, short};
use crate::source::Rejected;
use crate::source::diff::Change;

/// A side as the text output names it: `origin/main (3f1c0e9a2b "Spring term")`.
fn label(side: &Side) -> String {
    match (&side.commit, &side.id) {
        (Some(c), _) => format!("{} ({} \"{}\")", side.reference, short(&c.id), c.subject),
        (None, Some(id)) if side.source == "folder" => format!("{} ({id})", side.reference),
        _ => side.reference.clone(),
    }
}

/// The whole report as plain text.
pub(super) fn write(out: &mut dyn Write, r: &DiffReport) -> std::io::Result<()> {
    writeln!(out, "labpool diff: {} → {}", label(&r.base), label(&r.head))?;
    writeln!(out)?;
    for d in &r.courses {
        match d.change {
            Change::Created => writeln!(out, "+ {}: {}", d.name, headline(d))?,
            Change::Removed => writeln!(out, "- {}: {}", d.name, headline(d))?,
            Change::Changed => writeln!(out, "~ {}:", d.name)?,
        }
        for line in details(d) {
            writeln!(out, "    {line}")?;
        }
    }
    if !r.courses.is_empty() {
        writeln!(out)?;
    }
    for note in &r.notes {
        writeln!(out, "note: {note}")?;
    }
    if !r.notes.is_empty() {
        writeln!(out)?;
    }
    if let Some(hold) = &r.hold {
        writeln!(out, "{}", hold.warning)?;
        writeln!(out)?;
    }
    writeln!(out, "{}", r.summary.line())
}

/// An invalid HEAD: its diagnostics, then `message`.
pub(super) fn write_rejected(
    out: &mut dyn Write,
    base: &Side,
    head: &Side,
    rejected: &Rejected,
    message: &str,
) -> std::io::Result<()> {
    writeln!(out, "labpool diff: {} → {}", label(base), label(head))?;
    writeln!(out)?;
    for d in &rejected.diagnostics {
        writeln!(out, "{d}")?;
    }
    writeln!(out)?;
    writeln!(out, "{message}")
}
