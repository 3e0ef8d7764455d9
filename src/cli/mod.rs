//! The command line: parses arguments (`args`), runs a command, and ends it
//! with a status of the one table in `exit`. Commands are thin: the work
//! lives in the library modules (`crate::ops` for the commands on the store
//! and hosts).

pub mod args;
pub mod diff;
pub mod exit;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use self::args::{Cli, Command, LogFormat};
use std::io::Write as _;

use self::exit::{Failure, Outcome, Status, finish, print, written};
use crate::config::{Config, ConfigError};
use crate::course::{self, schema};
use crate::diagnostic::{Code, Format, Report};
use crate::ops;

/// Runs the command line of this process.
pub fn main() -> ExitCode {
    ExitCode::from(parse_and_run(std::env::args_os()))
}

/// Parses `argv` and runs it. A command line clap refuses is a usage error
/// (64); `--help` and `--version` print and end with 0 — also when their
/// reader went away.
pub fn parse_and_run(argv: impl IntoIterator<Item = std::ffi::OsString>) -> Status {
    match Cli::try_parse_from(argv) {
        Ok(cli) => run(cli),
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                Status::Usage
            } else {
                Status::Ok
            }
        }
    }
}

/// Runs a parsed command line; returns the exit status.
pub fn run(cli: Cli) -> Status {
    finish(dispatch(cli))
}

fn dispatch(cli: Cli) -> Outcome {
    match cli.command {
        Command::Validate {
            paths,
            format,
            config,
            quiet,
        } => validate(&paths, format, config.as_deref(), quiet),
        Command::Schema => print(Status::Ok, |out| {
            out.write_all(schema::course_schema_text().as_bytes())
        }),
        Command::Plan { common, format } => ops::run(ops::plan(common, format)),
        Command::Reconcile { common, once } => {
            if !once {
                return Err(Failure::msg(
                    Status::Usage,
                    "`reconcile` needs --once (continuous reconciling is `labpool serve`)",
                ));
            }
            ops::run(ops::reconcile_once(common))
        }
        Command::Serve {
            common,
            dev,
            log_format,
        } => ops::run(ops::serve(common, log_format == LogFormat::Json, dev)),
        Command::Status { common, format } => ops::run(ops::status(common, format)),
        Command::Adopt {
            common,
            instance,
            forget,
            list,
        } => ops::run(ops::adopt(common, instance, forget, list)),
        Command::Diff(args) => diff::command(&args),
        Command::Keys { common, action } => ops::run(ops::keys(common, action)),
        Command::Lti { common, action } => ops::run(ops::lti(common, action)),
        Command::Token { common, action } => ops::run(ops::token(common, action)),
        Command::Revision { common, action } => ops::run(ops::revision(common, action)),
    }
}

/// The status of a configuration file that did not load: one that cannot
/// be read is I/O (74), one with problems is invalid (1).
pub fn config_status(e: &ConfigError) -> Status {
    if e.diagnostics.iter().any(|d| d.code == Code::IoError) {
        Status::Io
    } else {
        Status::Invalid
    }
}

/// Loads an optional `--config`; its problems are printed on stderr.
pub fn load_config_reported(path: Option<&Path>) -> Result<Option<Config>, Failure> {
    path.map(Config::load).transpose().map_err(|e| {
        for d in &e.diagnostics {
            eprintln!("{d}");
        }
        Failure::msg(config_status(&e), "the configuration file has problems")
    })
}

fn validate(
    paths: &[std::path::PathBuf],
    format: Format,
    config: Option<&Path>,
    quiet: bool,
) -> Outcome {
    let config = match config.map(Config::load).transpose() {
        Ok(config) => config,
        Err(e) => {
            // The configuration is labpool's own input, not a course: its
            // problems are printed in the same form, and no course is checked.
            let report = Report {
                files_checked: 0,
                diagnostics: e.diagnostics.clone(),
            };
            let status = config_status(&e);
            let mut out = anstream::stdout();
            written(
                status,
                report.write(format, &mut out).and_then(|()| out.flush()),
            )?;
            eprintln!("labpool: the configuration file has problems; courses were not checked");
            return Ok(status);
        }
    };
    let loaded = course::load_paths(paths, config.as_ref());
    let status = if loaded.has_io_errors() {
        Status::Io
    } else if loaded.is_valid() {
        Status::Ok
    } else {
        Status::Invalid
    };
    let report = Report {
        files_checked: loaded.files_checked,
        diagnostics: loaded.diagnostics,
    };
    let mut out = anstream::stdout();
    written(
        status,
        report.write(format, &mut out).and_then(|()| out.flush()),
    )?;
    if !quiet && format == Format::Human {
        eprintln!("{}", report.summary());
    }
    Ok(status)
}
