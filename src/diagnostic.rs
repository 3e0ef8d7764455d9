//! Problems found in user-written files, as data.
//!
//! A course file problem is never an exception: loaders return what they could
//! read together with a list of [`Diagnostic`]s, so one broken file never hides
//! the problems of the others. Every diagnostic has a stable [`Code`] that CI
//! scripts and the golden tests can rely on.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Stable identifiers of every problem `labpool validate` reports.
///
/// The string forms (kebab-case) are part of labpool's interface: they appear
/// in CI logs and in scripts. Never rename one; add a new code instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The file could not be read.
    IoError,
    /// The file is not valid UTF-8.
    NotUtf8,
    /// The text is not well-formed YAML.
    YamlSyntax,
    /// A mapping has the same key twice.
    DuplicateKey,
    /// More than one YAML document in a file that holds one course.
    MultipleDocuments,
    /// The file holds no document at all.
    EmptyFile,
    /// A field that the format does not define (usually a typo).
    UnknownField,
    /// A required field is absent.
    MissingField,
    /// A value of the wrong kind (a list where a number belongs, ...).
    WrongType,
    /// A value outside what the field accepts (range, choices, list rules).
    InvalidValue,
    /// A course name that is not a lowercase DNS label.
    InvalidName,
    /// A size such as `16GiB` that does not parse.
    InvalidSize,
    /// A duration such as `30m` that does not parse.
    InvalidDuration,
    /// A time of day such as `09:45` that does not parse.
    InvalidTime,
    /// A time zone that is not in the IANA database.
    UnknownTimeZone,
    /// The course name differs from the file's stem.
    NameMismatch,
    /// Two files define the same course name.
    DuplicateName,
    /// Two courses claim the same LMS context id.
    DuplicateLtiContext,
    /// More warm VMs than the pool's maximum.
    WarmExceedsMax,
    /// A schedule window whose end is not after its start.
    WindowEmpty,
    /// Two schedule windows overlap on one day.
    WindowOverlap,
    /// A schedule window asks for more warm VMs than the pool's maximum.
    WindowWarmExceedsMax,
    /// A zero duration where a positive one is required.
    DurationNotPositive,
    /// The idle timeout is longer than the hard expiry.
    IdleExceedsExpiry,
    /// `console: ssh` without the `ssh` settings.
    SshSettingsMissing,
    /// `ssh` settings on a course whose console is `serial`.
    SshSettingsUnused,
    /// Readiness names both a console marker and a port.
    ReadinessConflict,
    /// A field of the other runtime: `vm` on a container course, `container`
    /// on a VM course, or a VM-only setting on a container.
    RuntimeMismatch,
    /// The image is not in the hosts' image catalog.
    UnknownImage,
    /// No configured host can hold one VM of this course.
    NoHostFits,
    /// `console: ssh` while labpool's configuration has no `terminal.ssh_key`.
    SshKeyMissing,
}

impl Code {
    /// Every code, in declaration order (for documentation and tests).
    pub const ALL: &'static [Code] = &[
        Code::IoError,
        Code::NotUtf8,
        Code::YamlSyntax,
        Code::DuplicateKey,
        Code::MultipleDocuments,
        Code::EmptyFile,
        Code::UnknownField,
        Code::MissingField,
        Code::WrongType,
        Code::InvalidValue,
        Code::InvalidName,
        Code::InvalidSize,
        Code::InvalidDuration,
        Code::InvalidTime,
        Code::UnknownTimeZone,
        Code::NameMismatch,
        Code::DuplicateName,
        Code::DuplicateLtiContext,
        Code::WarmExceedsMax,
        Code::WindowEmpty,
        Code::WindowOverlap,
        Code::WindowWarmExceedsMax,
        Code::DurationNotPositive,
        Code::IdleExceedsExpiry,
        Code::SshSettingsMissing,
        Code::SshSettingsUnused,
        Code::ReadinessConflict,
        Code::RuntimeMismatch,
        Code::UnknownImage,
        Code::NoHostFits,
        Code::SshKeyMissing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::IoError => "io-error",
            Code::NotUtf8 => "not-utf8",
            Code::YamlSyntax => "yaml-syntax",
            Code::DuplicateKey => "duplicate-key",
            Code::MultipleDocuments => "multiple-documents",
            Code::EmptyFile => "empty-file",
            Code::UnknownField => "unknown-field",
            Code::MissingField => "missing-field",
            Code::WrongType => "wrong-type",
            Code::InvalidValue => "invalid-value",
            Code::InvalidName => "invalid-name",
            Code::InvalidSize => "invalid-size",
            Code::InvalidDuration => "invalid-duration",
            Code::InvalidTime => "invalid-time",
            Code::UnknownTimeZone => "unknown-time-zone",
            Code::NameMismatch => "name-mismatch",
            Code::DuplicateName => "duplicate-name",
            Code::DuplicateLtiContext => "duplicate-lti-context",
            Code::WarmExceedsMax => "warm-exceeds-max",
            Code::WindowEmpty => "window-empty",
            Code::WindowOverlap => "window-overlap",
            Code::WindowWarmExceedsMax => "window-warm-exceeds-max",
            Code::DurationNotPositive => "duration-not-positive",
            Code::IdleExceedsExpiry => "idle-exceeds-expiry",
            Code::SshSettingsMissing => "ssh-settings-missing",
            Code::SshSettingsUnused => "ssh-settings-unused",
            Code::ReadinessConflict => "readiness-conflict",
            Code::RuntimeMismatch => "runtime-mismatch",
            Code::UnknownImage => "unknown-image",
            Code::NoHostFits => "no-host-fits",
            Code::SshKeyMissing => "ssh-key-missing",
        }
    }

    /// Problems with reading the file rather than with what it says.
    pub fn is_io(self) -> bool {
        matches!(self, Code::IoError)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A 1-based line and column in a text file (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The start of a file: where problems that belong to no line are reported.
    pub const START: Position = Position { line: 1, column: 1 };
}

/// One problem at one place in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    #[serde(flatten)]
    pub position: Position,
    pub code: Code,
    pub message: String,
}

impl Diagnostic {
    pub fn new(file: &Path, position: Position, code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            position,
            code,
            message: message.into(),
        }
    }

    /// Sort key: by file, then by place in the file, then by code.
    fn sort_key(&self) -> (&Path, Position, Code, &str) {
        (&self.file, self.position, self.code, &self.message)
    }
}

impl fmt::Display for Diagnostic {
    /// `file:line:column: code: message`, the form compilers and editors understand.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.position.line,
            self.position.column,
            self.code,
            self.message
        )
    }
}

/// Orders diagnostics so that output is stable from run to run.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
}

/// How `labpool validate` prints what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `file:line:column: code: message`, coloured on a terminal.
    Human,
    /// GitHub Actions workflow commands (`::error file=…`), shown as annotations on the pull request.
    Github,
    /// One JSON document with every diagnostic.
    Json,
}

/// The outcome of checking a set of files, ready to print.
#[derive(Debug, Serialize)]
pub struct Report {
    pub files_checked: usize,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn files_with_problems(&self) -> usize {
        let mut files: Vec<&Path> = self.diagnostics.iter().map(|d| d.file.as_path()).collect();
        files.dedup();
        files.len()
    }

    /// Writes the report in `format`. Human output is coloured when `out` is a
    /// terminal that accepts it (anstream strips styles otherwise).
    pub fn write(&self, format: Format, out: &mut dyn Write) -> std::io::Result<()> {
        match format {
            Format::Human => self.write_human(out),
            Format::Github => self.write_github(out),
            Format::Json => {
                serde_json::to_writer_pretty(&mut *out, self)?;
                writeln!(out)
            }
        }
    }

    fn write_human(&self, out: &mut dyn Write) -> std::io::Result<()> {
        use anstyle::{AnsiColor, Style};
        let place = Style::new().bold();
        let code = AnsiColor::Red.on_default().bold();
        for d in &self.diagnostics {
            writeln!(
                out,
                "{place}{}:{}:{}:{place:#} {code}{}{code:#}: {}",
                d.file.display(),
                d.position.line,
                d.position.column,
                d.code,
                d.message
            )?;
        }
        Ok(())
    }

    fn write_github(&self, out: &mut dyn Write) -> std::io::Result<()> {
        for d in &self.diagnostics {
            writeln!(
                out,
                "::error file={},line={},col={},title={}::{}",
                escape_github_property(&d.file.display().to_string()),
                d.position.line,
                d.position.column,
                escape_github_property(d.code.as_str()),
                escape_github_data(&d.message)
            )?;
        }
        Ok(())
    }

    /// One line for a person: what was checked and how it went.
    pub fn summary(&self) -> String {
        let files = plural(self.files_checked, "file");
        match self.diagnostics.len() {
            0 => format!("checked {files}: no problems"),
            n => format!(
                "checked {files}: {} in {}",
                plural(n, "problem"),
                plural(self.files_with_problems(), "file")
            ),
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Escaping for the message part of a GitHub workflow command.
fn escape_github_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escaping for a `key=value` property of a GitHub workflow command.
fn escape_github_property(s: &str) -> String {
    escape_github_data(s)
        .replace(':', "%3A")
        .replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            files_checked: 2,
            diagnostics: vec![Diagnostic::new(
                Path::new("courses/a,b.yaml"),
                Position { line: 3, column: 7 },
                Code::WarmExceedsMax,
                "pool.warm is 50%\nbut max is 40",
            )],
        }
    }

    #[test]
    fn github_format_escapes_properties_and_data() {
        let mut out = Vec::new();
        sample().write(Format::Github, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "::error file=courses/a%2Cb.yaml,line=3,col=7,title=warm-exceeds-max::pool.warm is 50%25%0Abut max is 40\n"
        );
    }

    #[test]
    fn human_format_without_terminal_is_plain() {
        let mut out = anstream::StripStream::new(Vec::new());
        sample().write(Format::Human, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out.into_inner()).unwrap(),
            "courses/a,b.yaml:3:7: warm-exceeds-max: pool.warm is 50%\nbut max is 40\n"
        );
    }

    #[test]
    fn codes_are_unique_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-' || c.is_ascii_digit())
            );
            assert_eq!(serde_json::to_value(code).unwrap(), s);
        }
    }

    #[test]
    fn summary_counts_files_and_problems() {
        assert_eq!(sample().summary(), "checked 2 files: 1 problem in 1 file");
    }
}
