//! The commands that run labpool against its store and hosts: `plan`,
//! `reconcile --once`, `serve` and `status`. Each opens the configuration and
//! the store, does its work, and renders the outcome for people (text) or
//! programs (JSON).

use std::future::Future;
use std::io::Write;

use anyhow::Context as _;

use crate::cli::args::{
    Common, Dev, KeysAction, LtiAction, Output, PlatformAction, RevisionAction, TokenAction,
};
use crate::cli::exit::{Failure, OrStatus as _, Outcome, Status, print};
use crate::config::{Config, DatabaseUrl};
use crate::reconcile::Reconciler;
use crate::reconcile::plan::{Action, Plan};
use crate::store::Store;

/// Blocking threads for libvirt calls. Calls queue at the hosts anyway
/// (libvirtd serves a few requests per client at once), so more threads only
/// cost memory; console watchers have threads of their own.
const BLOCKING_THREADS: usize = 16;

/// The runtime every command runs on (and the benchmarks measure).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
}

/// glibc gives each thread that allocates its own arena (up to 8 per core)
/// and keeps their freed memory: with libvirt calls spread over many threads
/// that is most of labpool's resident memory. Two arenas hold it to what is
/// used. An explicit `MALLOC_ARENA_MAX` in the environment wins.
fn tune_allocator() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called
        // before the runtime starts its threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Runs an async command on a fresh runtime.
pub fn run(command: impl Future<Output = Outcome>) -> Outcome {
    let runtime = runtime()
        .context("cannot start the runtime")
        .or_status(Status::Unavailable)?;
    runtime.block_on(command)
}

/// `println!` that hands the write error back (a reader that went away ends
/// the command quietly: `crate::cli::exit::finish`) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)
    };
}

fn load_config(common: &Common) -> Result<Config, Failure> {
    let mut config = match Config::load(&common.config) {
        Ok(c) => c,
        Err(e) => {
            for d in &e.diagnostics {
                eprintln!("{d}");
            }
            return Err(Failure::msg(
                crate::cli::config_status(&e),
                format!("invalid configuration {}", common.config.display()),
            ));
        }
    };
    if let Some(url) = &common.database {
        config.database = DatabaseUrl::new(url.clone());
    }
    Ok(config)
}

async fn open(common: &Common) -> Result<(Config, Store), Failure> {
    let config = load_config(common)?;
    let store = Store::open(config.database.expose())
        .await
        .with_context(|| format!("cannot open the store {}", config.database))?;
    Ok((config, store))
}

/// [`open`] for the commands that read the store's secrets (`serve`,
/// `keys`): first refuses secret-holding files that group or others may
/// open (the configuration, when it holds a secret, and the SQLite store's
/// files), then opens the secrets with the secret key (`secret_key`), so a
/// wrong key stops the command before anything runs.
async fn open_secrets(common: &Common) -> Result<(Config, Store), Failure> {
    let held = match Config::load(&common.config) {
        Ok(file) => file.secrets_held(),
        Err(_) => Vec::new(), // `load_config` reports it below
    };
    if !held.is_empty() {
        crate::file_modes::refuse_shared(
            &common.config,
            &format!("the configuration, which holds {}", held.join(", ")),
        )?;
    }
    let config = load_config(common)?;
    for file in crate::store::sqlite_files(config.database.expose()) {
        crate::file_modes::refuse_shared(&file, "the state store, holding its secrets")?;
    }
    // Private keys the configuration points at: whoever reads one logs in to
    // every SSH lab, fetches the course repository, or drives a Docker host.
    let keys = config
        .terminal
        .ssh_key
        .iter()
        .map(|k| (k, "terminal.ssh_key"))
        .chain(
            config
                .source
                .git
                .iter()
                .filter_map(|g| g.ssh_key.as_ref())
                .map(|k| (k, "source.git.ssh_key")),
        )
        .chain(
            config
                .hosts
                .iter()
                .filter_map(|h| h.tls.as_ref())
                .map(|t| (&t.key, "hosts[].tls.key")),
        );
    for (key, what) in keys {
        crate::file_modes::refuse_shared(key, &format!("the private key of {what}"))?;
    }
    let (config, store) = open(common).await?;
    crate::secret_key::unlock(&config, &store).await?;
    Ok((config, store))
}

/// Crates that log what passes through them (WebSocket frames with the
/// session tokens and terminal bytes, HTTP/2 frames, SSH channel data,
/// Docker exec streams) at their debug and trace levels. They are held at
/// `warn` whatever `LABPOOL_LOG` says: tokens and terminal bytes never reach
/// a log.
pub const PAYLOAD_TARGETS: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "axum::extract::ws",
    "hyper",
    "hyper_util",
    "h2",
    "russh",
    "russh_keys",
    "bollard",
    "reqwest",
];

/// Whether an event or span of `target` at `level` may be logged at all.
pub fn loggable(target: &str, level: &tracing::Level) -> bool {
    let payload = PAYLOAD_TARGETS.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    });
    !payload || *level <= tracing::Level::WARN
}

fn init_logs(json: bool) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_env("LABPOOL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("labpool=info,warn"));
    // A filter of its own, not a directive added to the user's: directives
    // can be outdone by a more specific one (`tungstenite::protocol=trace`).
    let filter = filter.and(tracing_subscriber::filter::filter_fn(|meta| {
        loggable(meta.target(), meta.level())
    }));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = if json {
        // The span fields (a launch's course, outcome and session; a
        // reconcile action's kind, course, host and VM; the pass) on every
        // line: the innermost span as `span`, all of them as `spans`. These
        // are the defaults, stated so that no upgrade drops them silently.
        tracing_subscriber::registry()
            .with(
                layer
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_filter(filter),
            )
            .try_init()
    } else {
        tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .try_init()
    };
}

/// `labpool plan`: 0 nothing to do, 2 changes.
pub async fn plan(common: Common, format: Output) -> Outcome {
    let (config, store) = open(&common).await?;
    if config.source.git.is_some() {
        eprintln!("labpool: Git source: planning on the revision applied last");
    } else if let Err(rejected) = crate::source::load_folder(&config) {
        for d in &rejected.diagnostics {
            eprintln!("{d}");
        }
        eprintln!("labpool: the course folder is invalid; `serve` keeps the last good revision");
    }
    let reconciler = Reconciler::new(config, store).await?;
    if let Some(held) = reconciler.pending_hold().await? {
        eprintln!("labpool: {}", held.warning());
        if held.confirmed_by.is_none() {
            eprintln!("labpool: planning on the revision in force");
        }
    }
    let (plan, down) = reconciler.dry_run().await?;
    for (host, error) in &down {
        eprintln!("labpool: host `{host}` does not answer (nothing is planned on it): {error}");
    }
    let status = if plan.is_empty() {
        Status::Ok
    } else {
        Status::Changes
    };
    print(status, |out| match format {
        Output::Json => {
            serde_json::to_writer_pretty(&mut *out, &plan)?;
            writeln!(out)
        }
        Output::Human => write_plan(out, &plan),
    })
}

fn write_plan(out: &mut dyn Write, plan: &Plan) -> std::io::Result<()> {
    for c in &plan.courses {
        let mut line = format!(
            "{:<20} target {:>3}  warm {:>3}  booting {:>3}  assigned {:>3}",
            c.course, c.target, c.warm, c.booting, c.assigned
        );
        if !c.desired {
            let d = c.draining.unwrap_or_default();
            line.push_str(&format!(
                "  (removed: {})",
                crate::reconcile::execute::draining_reason(d.students, d.hard_stop)
            ));
        }
        if c.in_class {
            line.push_str("  (class time: additive changes only)");
        }
        if let Some(s) = &c.shortfall {
            line.push_str(&format!(
                "  short: {}",
                serde_json::to_value(s).unwrap_or_default()["reason"]
                    .as_str()
                    .unwrap_or("?")
            ));
        }
        writeln!(out, "{line}")?;
    }
    if plan.actions.is_empty() {
        return writeln!(out, "\nnothing to do");
    }
    writeln!(out, "\n{} action(s):", plan.actions.len())?;
    for a in &plan.actions {
        match a {
            Action::Create { course, host, .. } => {
                writeln!(out, "  + create   {course} VM on {host}")?
            }
            Action::Destroy {
                vm,
                course,
                host,
                reason,
            } => writeln!(
                out,
                "  - destroy  {course} VM {vm} on {host} ({})",
                reason.as_str()
            )?,
            Action::CollectOrphan { host, kind, name } => {
                writeln!(out, "  - collect  orphan {kind:?} {name} on {host}")?
            }
            Action::ForgetCourse { course } => {
                writeln!(out, "  - forget   course {course} (drained)")?
            }
            Action::Adopt { host, name } => writeln!(
                out,
                "  ~ adopt    legacy domain {name} on {host} (the store knows it)"
            )?,
        }
    }
    Ok(())
}

/// `labpool reconcile --once`.
pub async fn reconcile_once(common: Common) -> Outcome {
    init_logs(false);
    let (config, store) = open(&common).await?;
    let reconciler = Reconciler::new(config, store).await?;
    if let Some(other) = reconciler.take_lease().await? {
        let until = chrono::DateTime::from_timestamp_millis(other.expires_at)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        return Err(Failure::msg(
            Status::Unavailable,
            format!(
                "another labpool ({}) is reconciling this store (lease until {until}); stop it, or let `serve` do the work",
                other.holder
            ),
        ));
    }
    reconciler.recover().await?;
    let report = reconciler.pass().await?;
    reconciler.settle().await;
    reconciler.release_lease().await?;
    outln!(
        "revision {}: {} action(s) planned, {} started and finished",
        report.revision.as_deref().unwrap_or("(none)"),
        report.plan.actions.len(),
        report.started
    )?;
    Ok(Status::Ok)
}

/// `labpool keys [list|rotate]`.
pub async fn keys(common: Common, action: KeysAction) -> Outcome {
    let (config, store) = open_secrets(&common).await?;
    let now = crate::reconcile::now_ms();
    let grace = config.lti.key_grace.get().as_millis() as i64;
    if action == KeysAction::Rotate {
        crate::lti::keys::ToolKeys::load_or_create(&store, now).await?;
        let kid = crate::lti::keys::ToolKeys::rotate(&store, now).await?;
        let dropped = store.drop_retired_tool_keys(now - grace).await?;
        outln!("new signing key {kid}; {dropped} key(s) past their grace period removed")?;
    }
    let keys = crate::lti::keys::ToolKeys::load(&store).await?;
    for key in keys.all() {
        let state = match key.retired_at {
            None => "signing".to_owned(),
            Some(at) if now < at + grace => format!(
                "retired, published until {}",
                chrono::DateTime::from_timestamp_millis(at + grace).unwrap_or_default()
            ),
            Some(_) => "retired, no longer published".to_owned(),
        };
        outln!(
            "{}  created {}  {state}",
            key.kid,
            chrono::DateTime::from_timestamp_millis(key.created_at).unwrap_or_default()
        )?;
    }
    if keys.all().is_empty() {
        outln!("no keys yet: `labpool serve` creates the first on start")?;
    }
    Ok(Status::Ok)
}

/// `labpool revision show|confirm`.
pub async fn revision(common: Common, action: RevisionAction) -> Outcome {
    let (_, store) = open(&common).await?;
    match action {
        RevisionAction::Show => match store.source_revision("held").await? {
            None => {
                outln!("no revision is held")?;
                Ok(Status::Ok)
            }
            Some(row) => {
                let held = crate::source::hold::Held::from_row(&row);
                outln!("{}", held_line(&held))?;
                Ok(Status::Ok)
            }
        },
        RevisionAction::Confirm { id, by } => {
            let by = by.unwrap_or_else(|| {
                format!(
                    "cli:{}",
                    std::env::var("USER")
                        .or_else(|_| std::env::var("LOGNAME"))
                        .unwrap_or_else(|_| "unknown".into())
                )
            });
            match crate::admin::actions::confirm_revision(&store, &id, &by).await {
                Ok(first) if first == by => {
                    outln!(
                        "revision {id} confirmed by {by}: labpool serve applies it at its next pass (within reconcile.resync)"
                    )?;
                    Ok(Status::Ok)
                }
                Ok(first) => {
                    outln!("revision {id} was already confirmed by {first}")?;
                    Ok(Status::Ok)
                }
                Err(crate::admin::ActionError::Store(e)) => Err(e.into()),
                Err(e) => {
                    eprintln!("labpool: {e}");
                    Ok(Status::Invalid)
                }
            }
        }
    }
}

/// `held   <id> "subject": removes 3 of 4 courses (warm VMs -7) …`.
fn held_line(held: &crate::source::hold::Held) -> String {
    let subject = held
        .commit
        .as_ref()
        .and_then(|c| c["subject"].as_str())
        .map(|s| format!(" \"{s}\""))
        .unwrap_or_default();
    let removed = if held.removal.removed.is_empty() {
        String::new()
    } else {
        format!(" [{}]", held.removal.removed.join(", "))
    };
    let state = match &held.confirmed_by {
        Some(by) => format!("confirmed by {by}; applies at the next pass"),
        None => format!(
            "the applied revision stays until an admin confirms it (labpool revision confirm {})",
            held.id
        ),
    };
    format!(
        "held     {}{subject}: {}{removed}: {}; {state}",
        held.id,
        held.removal.describe(),
        held.reason
    )
}

/// `labpool token create|list|revoke`.
pub async fn token(common: Common, action: TokenAction) -> Outcome {
    let (_, store) = open(&common).await?;
    let now = crate::reconcile::now_ms();
    let time = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "-".into())
    };
    match action {
        TokenAction::Create {
            name,
            scope,
            courses,
        } => {
            if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                eprintln!("labpool: a token name is 1 to 64 printable characters");
                return Ok(Status::Usage);
            }
            if !courses.is_empty() && scope != crate::admin::Scope::Read {
                eprintln!(
                    "labpool: --course makes a read token for some courses; admin tokens act on hosts and every course"
                );
                return Ok(Status::Usage);
            }
            if let Some(bad) = courses
                .iter()
                .find(|c| c.parse::<crate::course::values::CourseName>().is_err())
            {
                eprintln!("labpool: `{bad}` is not a course name");
                return Ok(Status::Usage);
            }
            let scoped = (!courses.is_empty()).then_some(courses.as_slice());
            match crate::admin::tokens::create_scoped(&store, &name, scope, scoped, now).await {
                Ok((_, secret)) => {
                    let seen = match scoped {
                        Some(c) => format!(", courses {}", c.join(", ")),
                        None => String::new(),
                    };
                    eprintln!(
                        "token `{name}` ({} scope{seen}) created; it is shown only now:",
                        scope.as_str()
                    );
                    outln!("{secret}")?;
                    Ok(Status::Ok)
                }
                Err(crate::store::StoreError::TokenNameTaken(_)) => {
                    eprintln!(
                        "labpool: a token named `{name}` exists; `labpool token revoke {name}` first, or choose another name"
                    );
                    Ok(Status::Invalid)
                }
                Err(e) => Err(e.into()),
            }
        }
        TokenAction::List => {
            let tokens = store.api_tokens().await?;
            if tokens.is_empty() {
                outln!("no tokens: `labpool token create --name NAME` makes one")?;
            }
            for t in tokens {
                let state = match t.revoked_at {
                    Some(at) => format!("revoked {}", time(Some(at))),
                    None => "active".into(),
                };
                let courses = match t.course_scope() {
                    Some(c) => format!("  courses {}", c.join(",")),
                    None => String::new(),
                };
                outln!(
                    "{:<20} {:<6} created {}  last used {}  {state}{courses}",
                    t.name,
                    t.scope,
                    time(Some(t.created_at)),
                    time(t.last_used_at)
                )?;
            }
            Ok(Status::Ok)
        }
        TokenAction::Revoke { name } => {
            if store.revoke_api_token(&name, now).await? {
                outln!("token `{name}` revoked")?;
                Ok(Status::Ok)
            } else {
                eprintln!("labpool: no active token named `{name}`");
                Ok(Status::Invalid)
            }
        }
    }
}

/// `labpool lti registration-link | platform list | platform remove`.
pub async fn lti(common: Common, action: LtiAction) -> Outcome {
    let (config, store) = open(&common).await?;
    let now = crate::reconcile::now_ms();
    match action {
        LtiAction::RegistrationLink => {
            let ttl = config.lti.registration.link_ttl.get().as_millis() as i64;
            let link = crate::lti::register::make_link(&store, &config.base_url(), ttl, "cli", now)
                .await?;
            eprintln!(
                "one-time registration link, valid until {} (shown only now):",
                chrono::DateTime::from_timestamp_millis(link.expires_at).unwrap_or_default()
            );
            outln!("{}", link.url)?;
            Ok(Status::Ok)
        }
        LtiAction::Platform {
            action: PlatformAction::List,
        } => {
            let platforms = store.platforms().await?;
            if platforms.is_empty() {
                outln!("no dynamically registered platforms")?;
            }
            for p in platforms {
                outln!(
                    "{}  client id {}  keys {}  {}",
                    p.issuer,
                    p.client_id,
                    p.jwks_url,
                    p.product.as_deref().unwrap_or("")
                )?;
            }
            Ok(Status::Ok)
        }
        LtiAction::Platform {
            action: PlatformAction::Remove { issuer, client_id },
        } => {
            if store.delete_platform(&issuer, &client_id).await? {
                outln!("platform {issuer} (client id {client_id}) removed")?;
                Ok(Status::Ok)
            } else {
                eprintln!(
                    "labpool: no dynamically registered platform {issuer} with client id {client_id} \
                     (platforms in lti.platforms are removed from the configuration file)"
                );
                Ok(Status::Invalid)
            }
        }
    }
}

/// Where the courses come from, for the start-up line: the Git remote
/// (without any credentials written into its URL) and the folder in it, or
/// the local folder.
fn source_of(config: &Config) -> String {
    match &config.source.git {
        Some(git) => format!(
            "git {} ({}, {})",
            without_userinfo(&git.url),
            match git.target() {
                crate::config::GitTarget::Branch(b) => format!("branch {b}"),
                crate::config::GitTarget::Tag(t) => format!("tag {t}"),
                crate::config::GitTarget::Commit(c) => format!("commit {c}"),
            },
            git.path.display()
        ),
        None => format!("folder {}", config.source.folder.display()),
    }
}

/// `url` without a user or token written into it (`https://user:tok@…`).
fn without_userinfo(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// `labpool serve`: runs the reconciler until Ctrl-C or SIGTERM.
pub async fn serve(common: Common, log_json: bool, dev: Dev) -> Outcome {
    init_logs(log_json);
    // Ctrl-C and SIGTERM are caught from the start: one that comes while
    // the store opens still stops labpool in order (with status 0).
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let (mut config, store) = open_secrets(&common).await?;
    let instance = store.instance_id().await?;
    tracing::info!(
        config = %common.config.display(),
        instance = %instance,
        database = %config.database,
        source = %source_of(&config),
        hosts = config.hosts.len(),
        "labpool serve starting"
    );
    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))
        .or_status(Status::Unavailable)?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening");
    // Without a configured base URL labpool is reached where it listens: with
    // `http.listen` on port 0, that is the port it was given, which origin
    // checks and every LTI URL must name.
    if config.lti.base_url.is_none() {
        config.lti.base_url = Some(format!("http://{address}"));
    }
    // Before the LTI tool is built: it registers the try-it LMS in `config`.
    let try_it = if dev.dev {
        Some(crate::http::try_it::TryIt::install(&mut config, dev.dev_allow_remote).await?)
    } else {
        None
    };
    let reconciler = Reconciler::new(config, store).await?;
    reconciler.check_engines().await;
    // One stop signal for both the reconciler and the HTTP server.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping: VMs keep running and are picked up at the next start");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut app = crate::http::App::new(reconciler.clone())
        .await
        .context("cannot set up the LTI tool's keys")?;
    app.try_it = try_it;
    let http = tokio::spawn(crate::http::serve(listener, app, stopped(stop_rx.clone())));
    reconciler.run(stopped(stop_rx)).await;
    if let Ok(Err(e)) = http.await {
        tracing::error!(error = %e, "HTTP server failed");
    }
    Ok(Status::Ok)
}

/// `labpool status`: read from the store only, so it answers even while a
/// host hangs.
pub async fn status(common: Common, format: Output) -> Outcome {
    let (config, store) = open(&common).await?;
    let report =
        crate::admin::overview::overview(&config, &store, crate::reconcile::now_ms(), 10).await?;
    let mut out = std::io::stdout().lock();
    match format {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Output::Human => {
            writeln!(out, "INSTANCE  {}", report.instance)?;
            write_source(&mut out, &report.source)?;
            writeln!(
                out,
                "{:<20} {:>6} {:>5} {:>8} {:>9} {:>7}  CONDITION",
                "COURSE", "TARGET", "WARM", "BOOTING", "ASSIGNED", "FAILED"
            )?;
            for c in &report.courses {
                writeln!(
                    out,
                    "{:<20} {:>6} {:>5} {:>8} {:>9} {:>7}  {}: {}",
                    c.name,
                    c.target,
                    c.warm,
                    c.booting,
                    c.assigned,
                    c.failed,
                    c.condition,
                    c.reason
                )?;
            }
            writeln!(
                out,
                "\n{:<12} {:>8} {:>5} {:>17} {:>9}  URI",
                "HOST", "STATE", "VMS", "MEMORY", "VCPUS"
            )?;
            for h in &report.hosts {
                let mib = |b: u64| b / (1024 * 1024);
                writeln!(
                    out,
                    "{:<12} {:>8} {:>5} {:>17} {:>9}  {}{}",
                    h.name,
                    match (h.up, h.draining) {
                        (true, false) => "up",
                        (true, true) => "draining",
                        (false, _) => "down",
                    },
                    format!("{}/{}", h.vms, h.max_vms),
                    format!("{}/{} MiB", mib(h.memory_used), mib(h.memory)),
                    format!("{}/{}", h.vcpus_used, h.vcpu_slots),
                    h.uri,
                    h.error
                        .as_deref()
                        .map(|e| format!("  ({e})"))
                        .unwrap_or_default()
                )?;
            }
            if !report.foreign.is_empty() {
                writeln!(
                    out,
                    "\nOTHER INSTANCES' OBJECTS (reported, never touched)\n{:<12} {:<14} {:>7}  SEEN SINCE",
                    "HOST", "INSTANCE", "OBJECTS"
                )?;
            }
            for f in &report.foreign {
                let since = chrono::DateTime::from_timestamp_millis(f.first_seen_at)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:<12} {:<14} {:>7}  {since}",
                    f.host, f.instance, f.objects
                )?;
            }
            if !report.events.is_empty() {
                writeln!(out, "\nRECENT EVENTS")?;
            }
            for e in &report.events {
                let at = chrono::DateTime::from_timestamp_millis(e.at)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                let subject = [e.course.as_deref(), e.host.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("@");
                let first_line = e.message.lines().next().unwrap_or_default();
                writeln!(out, "{at}  {:<18} {subject:<24} {first_line}", e.kind)?;
            }
        }
    }
    Ok(Status::Ok)
}

/// `labpool adopt`: records (or forgets) that this labpool takes a lost
/// instance's objects over; `--list` shows what is adopted.
pub async fn adopt(common: Common, instance: Option<String>, forget: bool, list: bool) -> Outcome {
    let (config, store) = open(&common).await?;
    let own = store.instance_id().await?;
    let mut out = std::io::stdout().lock();
    if list {
        writeln!(out, "this instance: {own}")?;
        for id in &config.reconcile.adopt_instances {
            writeln!(out, "adopted: {id} (reconcile.adopt_instances)")?;
        }
        for (id, at) in store.adopted_instances().await? {
            let at = chrono::DateTime::from_timestamp_millis(at)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            writeln!(out, "adopted: {id} (labpool adopt, {at})")?;
        }
        return Ok(Status::Ok);
    }
    let instance = instance.unwrap_or_default();
    if !crate::hosts::xml::is_instance_id(&instance) {
        return Err(Failure::msg(
            Status::Usage,
            format!(
                "`{instance}` is not an instance id (12 lowercase hex digits, as `labpool status` shows them)"
            ),
        ));
    }
    if instance == own {
        return Err(Failure::msg(
            Status::Invalid,
            format!("{instance} is this labpool's own instance"),
        ));
    }
    if forget {
        if store.forget_adoption(&instance).await? {
            writeln!(
                out,
                "no longer adopted: {instance}'s objects are reported and left alone again"
            )?;
        } else {
            writeln!(out, "{instance} was not adopted with `labpool adopt`")?;
        }
        if config.reconcile.adopt_instances.contains(&instance) {
            writeln!(
                out,
                "note: reconcile.adopt_instances still names it; remove it there too"
            )?;
        }
        return Ok(Status::Ok);
    }
    let new = store
        .adopt_instance(&instance, crate::reconcile::now_ms())
        .await?;
    writeln!(
        out,
        "{} instance {instance}: its objects on this labpool's hosts that this store does not know          are orphans now, destroyed after reconcile.orphan_grace ({}) by the next passes of `serve`          (students of that instance lose their labs). `labpool adopt --forget --instance {instance}` undoes it.",
        if new { "adopted" } else { "already adopted:" },
        config.reconcile.orphan_grace
    )?;
    Ok(Status::Ok)
}

/// The source lines of `labpool status`.
fn write_source(out: &mut impl Write, source: &serde_json::Value) -> std::io::Result<()> {
    if source.is_null() {
        return writeln!(out, "SOURCE  not read yet\n");
    }
    let time = |v: &serde_json::Value| {
        v.as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let follows = source["follows"]
        .as_str()
        .map(|f| format!(", {f}"))
        .unwrap_or_default();
    writeln!(
        out,
        "SOURCE  {} {}{follows}",
        source["kind"].as_str().unwrap_or("?"),
        source["location"].as_str().unwrap_or("?")
    )?;
    let applied = &source["applied"];
    if applied.is_null() {
        writeln!(out, "applied  nothing yet")?;
    } else {
        let commit = &applied["commit"];
        let what = if commit.is_null() {
            String::new()
        } else {
            format!(
                " \"{}\" by {}, committed {}",
                commit["subject"].as_str().unwrap_or(""),
                commit["author"].as_str().unwrap_or(""),
                commit["time"]
                    .as_i64()
                    .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default()
            )
        };
        writeln!(
            out,
            "applied  {}{what} ({} courses, at {})",
            applied["id"].as_str().unwrap_or("?"),
            applied["courses"],
            time(&applied["at"])
        )?;
    }
    if !source["last_fetch_at"].is_null() {
        match source["last_fetch_error"].as_str() {
            None => writeln!(out, "fetched  {} ok", time(&source["last_fetch_at"]))?,
            Some(e) => writeln!(
                out,
                "fetched  {} FAILED: {e}",
                time(&source["last_fetch_at"])
            )?,
        }
    }
    if let Ok(held) = serde_json::from_value::<crate::source::hold::Held>(source["held"].clone()) {
        writeln!(out, "{}", held_line(&held))?;
    }
    let rejected = &source["rejected"];
    if !rejected.is_null() {
        writeln!(
            out,
            "rejected {}at {}; the applied revision stays:",
            rejected["commit"]
                .as_str()
                .map(|c| format!("commit {c} "))
                .unwrap_or_default(),
            time(&rejected["at"])
        )?;
        for line in rejected["diagnostics"].as_array().into_iter().flatten() {
            writeln!(out, "  {}", line.as_str().unwrap_or_default())?;
        }
    }
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    /// Issue 15 §7: `serve`'s start-up line named the folder of courses even
    /// when the source is Git; it names the remote, without credentials.
    #[test]
    fn the_start_up_line_names_the_git_remote_without_its_credentials() {
        let mut config = crate::config::Config::default();
        assert!(super::source_of(&config).starts_with("folder "));
        let git = serde_json::json!({
            "url": "https://ci:s3cret@git.example.edu/labs.git",
            "path": "courses",
        });
        config.source.git = Some(serde_json::from_value(git).unwrap());
        let line = super::source_of(&config);
        assert_eq!(
            line,
            "git https://git.example.edu/labs.git (branch main, courses)"
        );
        assert!(!line.contains("s3cret"));
    }

    /// Issue 15 §7: at `LABPOOL_LOG=trace` tungstenite logged frames with
    /// tokens and terminal bytes. Payload crates stop at warn, whatever
    /// the directive; labpool's own trace stays available.
    #[test]
    fn payload_crates_never_log_below_warn() {
        for target in [
            "tungstenite",
            "tungstenite::protocol",
            "tokio_tungstenite::compat",
            "h2::codec",
            "russh::channels",
            "bollard::docker",
        ] {
            assert!(!super::loggable(target, &Level::TRACE), "{target}");
            assert!(!super::loggable(target, &Level::DEBUG), "{target}");
            assert!(!super::loggable(target, &Level::INFO), "{target}");
            assert!(super::loggable(target, &Level::WARN), "{target}");
        }
        assert!(super::loggable("labpool::http", &Level::TRACE));
        assert!(super::loggable("tungstenitex", &Level::TRACE));
    }
}
