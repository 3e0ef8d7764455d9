//! Printing `labpool diff`'s result: plain text for people, a Markdown
//! pull-request comment, or one JSON document.

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
        Format::Human => write_human(out, report),
        Format::Markdown => write_markdown(out, report),
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

/// A side as the text output names it: `origin/main (3f1c0e9a2b "Spring term")`.
fn label(side: &Side) -> String {
    match (&side.commit, &side.id) {
        (Some(c), _) => format!("{} ({} \"{}\")", side.reference, short(&c.id), c.subject),
        (None, Some(id)) if side.source == "folder" => format!("{} ({id})", side.reference),
        _ => side.reference.clone(),
    }
}

/// A side as the Markdown output names it.
fn markdown_label(side: &Side) -> String {
    match (&side.commit, &side.id) {
        (Some(c), _) => format!(
            "`{}` ({} {})",
            side.reference,
            short(&c.id),
            escape_md(&c.subject)
        ),
        (None, Some(id)) => format!("`{}` ({id})", side.reference),
        _ => format!("`{}`", side.reference),
    }
}

fn short(id: &str) -> &str {
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
        Format::Human => {
            writeln!(out, "labpool diff: {} → {}", label(base), label(head))?;
            writeln!(out)?;
            for d in &rejected.diagnostics {
                writeln!(out, "{d}")?;
            }
            writeln!(out)?;
            writeln!(out, "{message}")
        }
        Format::Markdown => {
            writeln!(out, "{MARKER}")?;
            writeln!(out, "### labpool diff: the courses are invalid")?;
            writeln!(out)?;
            writeln!(out, "{} → {}", markdown_label(base), markdown_label(head))?;
            writeln!(out)?;
            writeln!(
                out,
                "**Merging this would be rejected**: {} in the course files, and labpool keeps the pools as they are until the courses are valid.",
                plural(rejected.diagnostics.len(), "problem", "problems")
            )?;
            writeln!(out)?;
            for d in &rejected.diagnostics {
                writeln!(
                    out,
                    "- `{}:{}:{}`: **{}**: {}",
                    d.file.display(),
                    d.position.line,
                    d.position.column,
                    d.code,
                    escape_md(&d.message)
                )?;
            }
            Ok(())
        }
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

fn window(w: &Window) -> String {
    format!("{}: {} warm", window_place(w), w.warm)
}

fn window_place(w: &Window) -> String {
    let days: Vec<String> = w.days.iter().map(ToString::to_string).collect();
    format!("{} {}–{} {}", days.join(","), w.from, w.to, w.tz)
}

fn vm_count(n: i64) -> String {
    let word = if n.abs() == 1 { "warm VM" } else { "warm VMs" };
    format!("{n:+} {word}")
}

fn build_line(b: &Build) -> String {
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
fn headline(d: &CourseDiff) -> String {
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

fn write_human(out: &mut dyn Write, r: &DiffReport) -> std::io::Result<()> {
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

/// Escapes text for a Markdown table cell or list item.
fn escape_md(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '|' | '<' | '>' | '*' | '_' | '`' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The short form of a course's change, for the table.
fn cell(d: &CourseDiff) -> String {
    match d.change {
        Change::Created => format!("**created**: {}", escape_md(&headline(d))),
        Change::Removed => format!(
            "**removed**: {}",
            escape_md(&headline(d)["removed: ".len()..])
        ),
        Change::Changed => {
            let mut parts = Vec::new();
            if d.warm.from != d.warm.to {
                parts.push(format!(
                    "warm {} → {}",
                    d.warm.from.unwrap_or(0),
                    d.warm.to.unwrap_or(0)
                ));
            }
            if d.max.from != d.max.to {
                parts.push(format!(
                    "max {} → {}",
                    d.max.from.unwrap_or(0),
                    d.max.to.unwrap_or(0)
                ));
            }
            if !d.windows.is_empty() {
                parts.push("schedule".to_string());
            }
            if d.replaces_warm_vms {
                parts.push(format!(
                    "**replaces warm VMs** ({})",
                    d.replaced_fields.join(", ")
                ));
            }
            if !d.settings.is_empty() {
                let fields: Vec<&str> = d.settings.iter().map(|f| f.field.as_str()).collect();
                parts.push(format!("settings ({})", fields.join(", ")));
            }
            format!("**changed**: {}", escape_md_keep_bold(&parts.join("; ")))
        }
    }
}

/// Escapes a cell built from our own words (bold kept) and course values.
fn escape_md_keep_bold(text: &str) -> String {
    text.replace('|', "\\|")
}

fn write_markdown(out: &mut dyn Write, r: &DiffReport) -> std::io::Result<()> {
    writeln!(out, "{MARKER}")?;
    writeln!(out, "### labpool diff: what merging this changes")?;
    writeln!(out)?;
    writeln!(
        out,
        "{} → {}",
        markdown_label(&r.base),
        markdown_label(&r.head)
    )?;
    writeln!(out)?;
    if r.courses.is_empty() {
        writeln!(
            out,
            "**No changes**: no pool or course setting changes ({}).",
            plural(r.summary.unchanged, "course", "courses")
        )?;
    } else {
        writeln!(out, "| course | change |")?;
        writeln!(out, "| --- | --- |")?;
        for d in &r.courses {
            writeln!(out, "| `{}` | {} |", d.name, cell(d))?;
        }
        writeln!(out)?;
        writeln!(out, "**{}**", r.summary.line())?;
        for d in &r.courses {
            let lines = details(d);
            if lines.is_empty() {
                continue;
            }
            writeln!(out)?;
            writeln!(out, "#### `{}`", d.name)?;
            writeln!(out)?;
            for line in lines {
                writeln!(out, "- {}", escape_md(&line))?;
            }
        }
    }
    if let Some(hold) = &r.hold {
        writeln!(out)?;
        writeln!(
            out,
            "> **Warning**: {}",
            escape_md(hold.warning.trim_start_matches("warning: "))
        )?;
    }
    if !r.notes.is_empty() {
        writeln!(out)?;
        for (i, note) in r.notes.iter().enumerate() {
            if i > 0 {
                writeln!(out, ">")?;
            }
            writeln!(out, "> **Note**: {}", escape_md(note))?;
        }
    }
    Ok(())
}
