//! Printing `labpool diff`'s result: plain text for people, a Markdown
//! pull-request comment (`markdown.rs`), or one JSON document; the text
//! both print (`details`, `headline`) is here, the plain text in `human.rs`.

mod human;
mod markdown;

use std::io::Write;

use serde::Serialize;

use super::report::DiffReport;
use super::sides::Side;
use super::{Build, Change, CourseDiff, plural};
use crate::course::spec::Window;
use crate::diagnostic::Diagnostic;
use crate::source::Rejected;

/// Output formats of `labpool diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain text, one line per created or removed course, details indented.
    Human,
    /// A pull-request comment: a marker, a heading, a table and details.
    Markdown,
    /// One JSON document.
    Json,
}

/// The marker that starts the Markdown output, so a workflow can find and
/// update its previous comment.
pub const MARKER: &str = "<!-- labpool-diff -->";

/// Prints `report` in `format`.
pub fn write(out: &mut dyn Write, format: Format, report: &DiffReport) -> std::io::Result<()> {
    match format {
        Format::Human => human::write(out, report),
        Format::Markdown => markdown::write(out, report),
        Format::Json => write_json(out, report),
    }
}

/// HEAD is invalid, as printed by `--format json`.
#[derive(Debug, Serialize)]
struct RejectedReport<'a> {
    base: &'a Side,
    head: &'a Side,
    message: &'a str,
    diagnostics: &'a [Diagnostic],
}

pub(super) fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

fn write_json(out: &mut dyn Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// Prints an invalid HEAD: its diagnostics, and that merging it would be
/// rejected.
pub fn write_rejected(
    out: &mut dyn Write,
    format: Format,
    base: &Side,
    head: &Side,
    rejected: &Rejected,
) -> std::io::Result<()> {
    let message = format!(
        "{} is invalid ({}): merging it would be rejected, and labpool would keep the pools as they are",
        head.reference,
        plural(rejected.diagnostics.len(), "problem", "problems")
    );
    match format {
        Format::Human => human::write_rejected(out, base, head, rejected, &message),
        Format::Markdown => markdown::write_rejected(out, base, head, rejected),
        Format::Json => write_json(
            out,
            &RejectedReport {
                base,
                head,
                message: &message,
                diagnostics: &rejected.diagnostics,
            },
        ),
    }
}

pub(super) fn window(w: &Window) -> String {
    format!("{}: {} warm", window_place(w), w.warm)
}

pub(super) fn window_place(w: &Window) -> String {
    let days: Vec<String> = w.days.iter().map(ToString::to_string).collect();
    format!("{} {}–{} {}", days.join(","), w.from, w.to, w.tz)
}

fn vm_count(n: i64) -> String {
    let word = if n.abs() == 1 { "warm VM" } else { "warm VMs" };
    format!("{n:+} {word}")
}

pub(super) fn build_line(b: &Build) -> String {
    let disk = b
        .disk
        .as_ref()
        .map(|d| format!(" / {d} disk"))
        .unwrap_or_default();
    format!(
        "image {}, {} / {}{disk}",
        b.image,
        plural(b.vcpus as usize, "vCPU", "vCPU"),
        b.memory
    )
}

/// The details of a course, one line each, in the order they are printed.
pub(crate) fn details(d: &CourseDiff) -> Vec<String> {
    let mut lines = Vec::new();
    match d.change {
        Change::Created => {
            for w in &d.windows.added {
                lines.push(format!("window: {}", window(w)));
            }
            if let Some(old) = &d.rename_of {
                lines.push(format!("looks like a rename of {old}"));
            }
            return lines;
        }
        Change::Removed => return lines,
        Change::Changed => {}
    }
    if let (Some(from), Some(to)) = (d.warm.from, d.warm.to)
        && from != to
    {
        lines.push(format!("warm {from} → {to} ({})", vm_count(d.warm_delta())));
    }
    if let (Some(from), Some(to)) = (d.max.from, d.max.to)
        && from != to
    {
        lines.push(format!("max {from} → {to}"));
    }
    for w in &d.windows.added {
        lines.push(format!("window added: {}", window(w)));
    }
    for w in &d.windows.removed {
        lines.push(format!("window removed: {}", window(w)));
    }
    for c in &d.windows.changed {
        lines.push(format!(
            "window changed: {}: {} → {} warm",
            window_place(&c.after),
            c.before.warm,
            c.after.warm
        ));
    }
    if d.replaces_warm_vms {
        let fields: Vec<String> = d
            .build_changes
            .iter()
            .map(|f| format!("{} {} → {}", f.field, f.from, f.to))
            .collect();
        let n = d.warm.from.unwrap_or(0);
        let vms = if n == 1 { "warm VM" } else { "warm VMs" };
        lines.push(format!(
            "build: {}; replaces {n} {vms} (rolling); assigned VMs keep the old build until their sessions end",
            fields.join(", ")
        ));
    }
    if !d.settings.is_empty() {
        let fields: Vec<String> = d
            .settings
            .iter()
            .map(|f| format!("{} {} → {}", f.field, f.from, f.to))
            .collect();
        lines.push(format!(
            "settings: {} (no VM is replaced)",
            fields.join(", ")
        ));
    }
    lines
}

/// The one-line form of a created or removed course.
pub(super) fn headline(d: &CourseDiff) -> String {
    match d.change {
        Change::Created => format!(
            "new pool, {} warm (max {}), {}",
            d.warm.to.unwrap_or(0),
            d.max.to.unwrap_or(0),
            build_line(&d.build)
        ),
        Change::Removed => {
            "removed: its warm VMs are destroyed at once, assigned VMs drain as their sessions end"
                .to_string()
        }
        Change::Changed => "changed".to_string(),
    }
}
