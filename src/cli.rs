//! The command line: parses arguments, runs a command, maps outcomes to exit
//! statuses. Commands are thin: the work lives in the library modules.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::course::{self, schema};
use crate::diagnostic::{Format, Report};
use crate::ops;

/// Exit statuses shared by every command.
pub mod exit {
    /// Success: everything checked is valid.
    pub const OK: u8 = 0;
    /// The input has problems (invalid course files).
    pub const INVALID: u8 = 1;
    /// Usage, configuration or I/O error: the check itself could not be done.
    pub const ERROR: u8 = 2;
}

#[derive(Debug, Parser)]
#[command(name = "labpool", version, about = "Pools of pre-warmed lab VMs for LMS courses", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check course files: YAML syntax, the schema, and the rules between
    /// fields, files and hosts. Exit status: 0 valid, 1 invalid, 2 usage or I/O error.
    Validate {
        /// Course files or folders (searched recursively for *.yaml and *.yml).
        #[arg(default_value = "courses")]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// labpool's configuration file; adds the checks that images exist and
        /// that each course's VM fits some host.
        #[arg(long, env = "LABPOOL_CONFIG")]
        config: Option<PathBuf>,
        /// Print nothing but the diagnostics (no summary line).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print the JSON Schema of course files (for editors and other validators).
    Schema,
    /// Show what the reconciler would do now, without doing it. Exit status:
    /// 0 nothing to do, 2 changes to make, 1 error.
    Plan {
        #[command(flatten)]
        common: ops::Common,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ops::Output::Human)]
        format: ops::Output,
    },
    /// Run one reconcile pass and wait for its actions (boots included) to
    /// finish. For when `serve` is not running: it also recovers boots a
    /// crashed labpool left behind.
    Reconcile {
        #[command(flatten)]
        common: ops::Common,
        /// Run one pass (required; continuous reconciling is `serve`).
        #[arg(long)]
        once: bool,
    },
    /// Run labpool: keep every course's pool at its target until stopped
    /// (Ctrl-C or SIGTERM).
    Serve {
        #[command(flatten)]
        common: ops::Common,
        /// Log as JSON lines instead of text (the same as `--log-format json`).
        #[arg(long)]
        log_json: bool,
        #[command(flatten)]
        dev: ops::Dev,
        /// Log format: `text` or `json` (JSON lines with the span fields).
        #[arg(long, value_enum, env = "LABPOOL_LOG_FORMAT", default_value_t = ops::LogFormat::Text)]
        log_format: ops::LogFormat,
    },
    /// This labpool's instance; per course: target, warm, booting, assigned,
    /// failed and condition; per host: VMs, memory and vCPUs in use, up or
    /// down; other labpools' objects on the hosts.
    Status {
        #[command(flatten)]
        common: ops::Common,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ops::Output::Human)]
        format: ops::Output,
    },
    /// Take over a lost labpool instance's objects on the hosts: marked with
    /// its id and unknown to this store, they become this labpool's orphans,
    /// destroyed after `reconcile.orphan_grace` by the next passes.
    Adopt {
        #[command(flatten)]
        common: ops::Common,
        /// The lost instance's id (12 hex digits, as its `labpool status`
        /// or this one's "other instances' objects" show it).
        #[arg(long, required_unless_present = "list")]
        instance: Option<String>,
        /// Undo an adoption made with this command.
        #[arg(long, requires = "instance")]
        forget: bool,
        /// List the adopted instances (this command's and the configuration's).
        #[arg(long, conflicts_with_all = ["instance", "forget"])]
        list: bool,
    },
    /// What merging a course change does: pools created, removed, resized or
    /// rebuilt, course by course. BASE and HEAD are folders or Git revisions.
    /// Exit status: 0 no changes, 2 changes, 1 error or invalid HEAD.
    Diff(crate::source::diff::DiffArgs),
    /// Admin API and dashboard tokens: create (printed once, stored as a
    /// hash), list, revoke.
    Token {
        #[command(flatten)]
        common: ops::Common,
        #[command(subcommand)]
        action: ops::TokenAction,
    },
    /// Course revisions held back because they remove too much: show the
    /// one held, or confirm it so that it applies.
    Revision {
        #[command(flatten)]
        common: ops::Common,
        #[command(subcommand)]
        action: ops::RevisionAction,
    },
    /// LTI platforms: make a one-time Dynamic Registration link, list or
    /// remove dynamically registered platforms.
    Lti {
        #[command(flatten)]
        common: ops::Common,
        #[command(subcommand)]
        action: ops::LtiAction,
    },
    /// The LTI tool's signing keys: list them, or rotate (a new key signs;
    /// the old one stays published for `lti.key_grace`).
    Keys {
        #[command(flatten)]
        common: ops::Common,
        #[arg(value_enum, default_value_t = ops::KeysAction::List)]
        action: ops::KeysAction,
    },
}

/// Runs the command line of this process.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(run(cli))
}

/// Runs a parsed command line; returns the exit status.
pub fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Validate {
            paths,
            format,
            config,
            quiet,
        } => validate(&paths, format, config.as_deref(), quiet),
        Command::Schema => {
            print!("{}", schema::course_schema_text());
            exit::OK
        }
        Command::Plan { common, format } => ops::run(ops::plan(common, format)),
        Command::Reconcile { common, once } => {
            if !once {
                eprintln!(
                    "labpool: `reconcile` needs --once (continuous reconciling is `labpool serve`)"
                );
                return exit::ERROR;
            }
            ops::run(ops::reconcile_once(common))
        }
        Command::Serve {
            common,
            log_json,
            dev,
            log_format,
        } => ops::run(ops::serve(
            common,
            log_json || log_format == ops::LogFormat::Json,
            dev,
        )),
        Command::Status { common, format } => ops::run(ops::status(common, format)),
        Command::Adopt {
            common,
            instance,
            forget,
            list,
        } => ops::run(ops::adopt(common, instance, forget, list)),
        Command::Diff(args) => crate::source::diff::command(&args),
        Command::Keys { common, action } => ops::run(ops::keys(common, action)),
        Command::Lti { common, action } => ops::run(ops::lti(common, action)),
        Command::Token { common, action } => ops::run(ops::token(common, action)),
        Command::Revision { common, action } => ops::run(ops::revision(common, action)),
    }
}

fn validate(
    paths: &[PathBuf],
    format: Format,
    config: Option<&std::path::Path>,
    quiet: bool,
) -> u8 {
    let mut stdout = anstream::stdout();
    let config = match config.map(Config::load).transpose() {
        Ok(config) => config,
        Err(e) => {
            // The configuration is labpool's own input, not a course: its
            // problems are a usage error, printed in the same form.
            let report = Report {
                files_checked: 0,
                diagnostics: e.diagnostics,
            };
            let _ = report.write(format, &mut stdout);
            eprintln!("labpool: the configuration file has problems; courses were not checked");
            return exit::ERROR;
        }
    };
    let loaded = course::load_paths(paths, config.as_ref());
    let status = if loaded.has_io_errors() {
        exit::ERROR
    } else if loaded.is_valid() {
        exit::OK
    } else {
        exit::INVALID
    };
    let report = Report {
        files_checked: loaded.files_checked,
        diagnostics: loaded.diagnostics,
    };
    if let Err(e) = report
        .write(format, &mut stdout)
        .and_then(|()| stdout.flush())
    {
        eprintln!("labpool: cannot write the report: {e}");
        return exit::ERROR;
    }
    if !quiet && format == Format::Human {
        eprintln!("{}", report.summary());
    }
    status
}
