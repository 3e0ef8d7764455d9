//! Every clap definition of the `labpool` command line: the commands, their
//! arguments, and how library enums are spelled on it. Running them is
//! `cli/mod.rs`.

use std::path::PathBuf;

use clap::builder::PossibleValue;
use clap::{Parser, Subcommand};

use crate::admin::Scope;
use crate::diagnostic::Format;
use crate::source::diff::render::Format as DiffFormat;

#[derive(Debug, Parser)]
#[command(
    name = "labpool",
    version,
    about = "Pools of pre-warmed lab VMs for LMS courses",
    long_about = None,
    after_help = "Exit statuses (every command; README \"Exit statuses\"): 0 ok or no changes, \
                  1 invalid input or findings, 2 changes (plan, diff), 64 usage, \
                  69 unavailable (store, host, remote), 74 I/O"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check course files: YAML syntax, the schema, and the rules between
    /// fields, files and hosts. Exit status: 0 valid, 1 invalid, 74 a path or
    /// file that cannot be read (README: Exit statuses).
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
    /// 0 nothing to do, 2 changes to make (README: Exit statuses).
    Plan {
        #[command(flatten)]
        common: Common,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Human)]
        format: Output,
    },
    /// Run one reconcile pass and wait for its actions (boots included) to
    /// finish. For when `serve` is not running: it also recovers boots a
    /// crashed labpool left behind.
    Reconcile {
        #[command(flatten)]
        common: Common,
        /// Run one pass (required; continuous reconciling is `serve`).
        #[arg(long)]
        once: bool,
    },
    /// Run labpool: keep every course's pool at its target until stopped
    /// (Ctrl-C or SIGTERM).
    Serve {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        dev: Dev,
        /// Log format: `text` or `json` (JSON lines with the span fields).
        #[arg(long, value_enum, env = "LABPOOL_LOG_FORMAT", default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// This labpool's instance; per course: target, warm, booting, assigned,
    /// failed and condition; per host: VMs, memory and vCPUs in use, up or
    /// down; other labpools' objects on the hosts.
    Status {
        #[command(flatten)]
        common: Common,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Human)]
        format: Output,
    },
    /// Take over a lost labpool instance's objects on the hosts: marked with
    /// its id and unknown to this store, they become this labpool's orphans,
    /// destroyed after `reconcile.orphan_grace` by the next passes.
    Adopt {
        #[command(flatten)]
        common: Common,
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
    /// Exit status: 0 no changes, 2 changes, 1 invalid HEAD (README: Exit
    /// statuses).
    Diff(DiffArgs),
    /// Admin API and dashboard tokens: create (printed once, stored as a
    /// hash), list, revoke.
    Token {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Course revisions held back because they remove too much: show the
    /// one held, or confirm it so that it applies.
    Revision {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        action: RevisionAction,
    },
    /// LTI platforms: make a one-time Dynamic Registration link, list or
    /// remove dynamically registered platforms.
    Lti {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        action: LtiAction,
    },
    /// The LTI tool's signing keys: list them, or rotate (a new key signs;
    /// the old one stays published for `lti.key_grace`).
    Keys {
        #[command(flatten)]
        common: Common,
        #[arg(value_enum, default_value_t = KeysAction::List)]
        action: KeysAction,
    },
}

/// Options every operating command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// labpool's configuration file.
    #[arg(
        long,
        env = "LABPOOL_CONFIG",
        default_value = "labpool.yaml",
        global = true
    )]
    pub config: PathBuf,
    /// The state store, overriding the configuration's `database`.
    #[arg(
        long,
        env = "LABPOOL_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    pub database: Option<String>,
}

/// `serve`'s try-it LMS (`crate::http::try_it`).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct Dev {
    /// Also serve the try-it LMS at <base_url>/dev/: a page acting as an LMS
    /// registered with this labpool, where you launch any course as a
    /// made-up student. Development only: whoever reaches it can launch
    /// anything as anyone. Refused unless http.listen and lti.base_url are
    /// loopback addresses.
    #[arg(long, env = "LABPOOL_DEV", value_parser = clap::builder::BoolishValueParser::new())]
    pub dev: bool,
    /// With --dev: serve it even though http.listen or lti.base_url is
    /// reachable from other machines.
    #[arg(long, requires = "dev")]
    pub dev_allow_remote: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Human,
    Json,
}

/// How `serve` writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What `labpool keys` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeysAction {
    List,
    Rotate,
}

/// What `labpool revision` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum RevisionAction {
    /// Show the revision held back (what it removes and why), if one is.
    Show,
    /// Confirm the held revision ID (that exact id, as `status` prints it):
    /// `serve` applies it at its next pass.
    Confirm {
        id: String,
        /// Who confirms, for the event. Default `cli:$USER`.
        #[arg(long)]
        by: Option<String>,
    },
}

/// What `labpool token` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenAction {
    /// Make a token and print it (once: only its hash is stored).
    Create {
        /// A name that says whose or what it is (`grafana`, `alice`).
        #[arg(long)]
        name: String,
        /// `read`: look only; `admin`: also end and reset sessions, drain
        /// hosts, resync.
        #[arg(long, value_enum, default_value_t = Scope::Read)]
        scope: Scope,
        /// A read token that sees only this course (repeat for several):
        /// an instructor's token. Default: every course.
        #[arg(long = "course", value_name = "COURSE")]
        courses: Vec<String>,
    },
    /// List tokens (never the tokens themselves).
    List,
    /// Revoke the token named NAME: it stops working at once.
    Revoke { name: String },
}

/// What `labpool lti` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum LtiAction {
    /// Print a one-time Dynamic Registration link for an LMS admin to paste
    /// (it works once, for `lti.registration.link_ttl`; only its hash is kept).
    RegistrationLink,
    /// Dynamically registered platforms.
    Platform {
        #[command(subcommand)]
        action: PlatformAction,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PlatformAction {
    /// List platforms registered through Dynamic Registration.
    List,
    /// Remove a dynamically registered platform: its launches stop at once;
    /// the LMS may then register again (a registration never replaces one).
    Remove { issuer: String, client_id: String },
}

/// Arguments of `labpool diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The revision merged into: a folder of course files, or a Git revision
    /// in --repo (branch, tag, commit, `HEAD~1`, `origin/main`).
    pub base: String,
    /// The revision to merge: a folder or a Git revision, as BASE.
    pub head: String,
    /// The Git repository that revisions are read from.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// The folder of course files inside the repository (for Git revisions).
    #[arg(long, default_value = "courses")]
    pub folder: PathBuf,
    /// labpool's configuration file: adds the image and host checks, and
    /// image catalog entries count in the build comparison.
    #[arg(long, env = "LABPOOL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DiffFormat::Human)]
    pub format: DiffFormat,
}

impl clap::ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &[Format::Human, Format::Github, Format::Json]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Format::Human => PossibleValue::new("human")
                .help("`file:line:column: code: message`, coloured on a terminal"),
            Format::Github => PossibleValue::new("github").help(
                "GitHub Actions workflow commands (`::error file=…`), shown as annotations on the pull request",
            ),
            Format::Json => {
                PossibleValue::new("json").help("One JSON document with every diagnostic")
            }
        })
    }
}

impl clap::ValueEnum for DiffFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[DiffFormat::Human, DiffFormat::Markdown, DiffFormat::Json]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            DiffFormat::Human => PossibleValue::new("human")
                .help("Plain text, one line per created or removed course, details indented"),
            DiffFormat::Markdown => PossibleValue::new("markdown")
                .help("A pull-request comment: a marker, a heading, a table and details"),
            DiffFormat::Json => PossibleValue::new("json").help("One JSON document"),
        })
    }
}

impl clap::ValueEnum for Scope {
    fn value_variants<'a>() -> &'a [Self] {
        &[Scope::Read, Scope::Admin]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Scope::Read => {
                PossibleValue::new("read").help("Look: every GET of the API and the dashboard")
            }
            Scope::Admin => PossibleValue::new("admin")
                .help("Look and act: end and reset sessions, drain hosts, resync"),
        })
    }
}
