//! `labpool diff` as a pull-request comment: the marker, a heading, a
//! table of course | change, the details as lists, the warning and notes.

use std::io::Write;

use super::{DiffReport, MARKER, Side, details, headline, short};
use crate::source::Rejected;
use crate::source::diff::{Change, CourseDiff, plural};

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

/// The whole report as a pull-request comment.
pub(super) fn write(out: &mut dyn Write, r: &DiffReport) -> std::io::Result<()> {
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

/// An invalid HEAD: that merging would be rejected, then its diagnostics
/// as a list.
pub(super) fn write_rejected(
    out: &mut dyn Write,
    base: &Side,
    head: &Side,
    rejected: &Rejected,
) -> std::io::Result<()> {
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
