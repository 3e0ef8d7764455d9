//! Loading course files: from paths to parsed courses plus every problem found.
//!
//! Each file goes through the same stages, and a stage's problems never stop
//! the other files:
//!
//! 1. read (io-error, not-utf8)
//! 2. YAML syntax, with positions for every node ([`crate::yaml`])
//! 3. the JSON Schema ([`SchemaChecker`]): every structural problem at once
//!    and its formats (what a pattern cannot say, such as a real time zone).
//!    Unknown fields are reported, then dropped, so a typo hides nothing
//! 4. semantic checks ([`super::check`]) on every field that has no problem
//!    of its own, then the checks across files
//! 5. a file without problems becomes a typed [`Course`]

use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use super::check::{self, Identity, View};
use super::schema::{SchemaChecker, describe};
use super::spec::Course;
use super::values;
use crate::config::Config;
use crate::diagnostic::{self, Code, Diagnostic, Position};
use crate::yaml::{self, Document};

/// A course that parsed, with the document it came from (for positions).
#[derive(Debug, Clone)]
pub struct LoadedCourse {
    pub file: PathBuf,
    pub course: Course,
    pub document: Document,
}

/// The outcome of loading a set of course files.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Courses that parsed. A course that parsed may still have semantic
    /// problems: only an empty `diagnostics` means the set is valid.
    pub courses: Vec<LoadedCourse>,
    pub diagnostics: Vec<Diagnostic>,
    pub files_checked: usize,
}

impl Loaded {
    pub fn is_valid(&self) -> bool {
        self.diagnostics.is_empty()
    }

    /// True when some file could not be read at all (exit status 2).
    pub fn has_io_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.code.is_io())
    }
}

/// Is this a course file by its name? (`.yaml` or `.yml`, not hidden.)
fn is_course_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    yaml && !hidden
}

/// The course files named by `paths`: files as given, folders searched
/// recursively (hidden entries skipped), in a stable order. Paths that cannot
/// be listed become io-error diagnostics.
pub fn discover(paths: &[PathBuf], diagnostics: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
            continue;
        }
        if !path.exists() && path.symlink_metadata().is_err() {
            diagnostics.push(Diagnostic::new(
                path,
                Position::START,
                Code::IoError,
                "no such file or folder",
            ));
            continue;
        }
        let walk = WalkDir::new(path)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walk {
            match entry {
                Ok(e) if !e.file_type().is_dir() && is_course_file(e.path()) => {
                    files.push(e.into_path())
                }
                Ok(_) => {}
                Err(e) => {
                    let at = e.path().unwrap_or(path).to_path_buf();
                    // A dangling symlink named like a course file is a file we
                    // were meant to read: report it as one that cannot be read.
                    let why = match e.io_error() {
                        Some(io) => format!("cannot read: {io}"),
                        None => e.to_string(),
                    };
                    diagnostics.push(Diagnostic::new(&at, Position::START, Code::IoError, why));
                }
            }
        }
    }
    files
}

/// Loads and checks every course file under `paths`. `config`, when given,
/// adds the checks against the hosts and the image catalog.
pub fn load_paths(paths: &[PathBuf], config: Option<&Config>) -> Loaded {
    let mut loaded = Loaded::default();
    let files = discover(paths, &mut loaded.diagnostics);
    // Paths that could not even be listed count as checked (and failed).
    loaded.files_checked = loaded.diagnostics.len();
    let mut identities = Vec::new();
    for file in &files {
        loaded.files_checked += 1;
        match std::fs::read(file) {
            Err(e) => loaded.diagnostics.push(Diagnostic::new(
                file,
                Position::START,
                Code::IoError,
                format!("cannot read: {e}"),
            )),
            Ok(bytes) => match String::from_utf8(bytes) {
                Err(e) => loaded
                    .diagnostics
                    .push(not_utf8(file, e.as_bytes(), e.utf8_error())),
                Ok(text) => {
                    let (course, identity) =
                        check_text(file, &text, config, &mut loaded.diagnostics);
                    identities.extend(identity);
                    loaded.courses.extend(course);
                }
            },
        }
    }
    check::across(&identities, &mut loaded.diagnostics);
    diagnostic::sort(&mut loaded.diagnostics);
    loaded
}

fn not_utf8(file: &Path, bytes: &[u8], e: std::str::Utf8Error) -> Diagnostic {
    let good = &bytes[..e.valid_up_to()];
    let line = good.iter().filter(|b| **b == b'\n').count() + 1;
    let column = good.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    Diagnostic::new(
        file,
        Position { line, column },
        Code::NotUtf8,
        "the file is not UTF-8 text",
    )
}

/// Checks the text of one course file. Returns the course if it parsed and
/// what the cross-file checks need.
pub fn check_text(
    file: &Path,
    text: &str,
    config: Option<&Config>,
    out: &mut Vec<Diagnostic>,
) -> (Option<LoadedCourse>, Option<Identity>) {
    let parsed = yaml::parse(file, text);
    out.extend(parsed.diagnostics);
    let Some(mut document) = parsed.document else {
        return (None, None);
    };

    let identity = Identity::of(file, &document);
    identity.check_file_name(out);

    let findings = SchemaChecker::shared().check(file, &document);
    let mut broken = Vec::new();
    let mut value = document.value.clone();
    for finding in findings {
        match &finding.unknown_field {
            // Unknown fields are reported; drop them so the rest can be checked.
            Some(pointer) => remove(&mut value, pointer),
            None => broken.push(finding.pointer),
        }
        out.push(finding.diagnostic);
    }
    check::course(&View::new(file, &document, &value, &broken), config, out);

    if !broken.is_empty() {
        return (None, Some(identity));
    }
    let course = match serde_path_to_error::deserialize::<_, Course>(&value) {
        Ok(course) => course,
        Err(e) => {
            // Unexpected once the schema and its formats passed; reported
            // rather than lost all the same.
            out.push(values::serde_diagnostic(file, &document, &e, describe));
            return (None, Some(identity));
        }
    };
    // The spans stay as they were: positions still point into the original text.
    document.value = value;
    (
        Some(LoadedCourse {
            file: file.to_path_buf(),
            course,
            document,
        }),
        Some(identity),
    )
}

/// Removes the member a JSON pointer names (if it exists).
fn remove(value: &mut serde_json::Value, pointer: &str) {
    let Some((parent, key)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = key.replace("~1", "/").replace("~0", "~");
    if let Some(serde_json::Value::Object(map)) = value.pointer_mut(parent) {
        map.remove(&key);
    }
}
