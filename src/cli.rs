//! The command line: parses arguments, runs a command, maps outcomes to exit
//! statuses. Commands are thin: the work lives in the library modules.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::course::{self, schema};
use crate::diagnostic::{Format, Report};

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
