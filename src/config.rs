//! labpool's own configuration file: the state store, the course source, the
//! reconciler's pace, the libvirt hosts and their image catalog.
//!
//! Written by the platform admin, read by `labpool serve`, `plan`, `status`
//! and `validate --config` (to check that courses fit the hosts). The file is
//! YAML, read with the same located parser as course files, so every problem
//! is reported as `file:line:column: code: message`. Relative paths in it
//! (the SQLite file, the course folder) are relative to the file's folder, so
//! a command works the same from any working directory.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::course::spec::Runtime;
use crate::course::values::{ByteSize, Duration, ImageName, serde_diagnostic};
use crate::diagnostic::{Code, Diagnostic, Position};
use crate::yaml::{self, Document};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The state store: `sqlite:PATH` (the default, `sqlite:labpool.db`) or
    /// `postgres://user:password@host/db`.
    #[serde(default = "default_database")]
    pub database: DatabaseUrl,
    /// Where the desired courses come from.
    #[serde(default)]
    pub source: SourceConfig,
    /// How often and how fast the reconciler works.
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    /// labpool's HTTP endpoint (webhooks now; launches and terminals later).
    #[serde(default)]
    pub http: HttpConfig,
    /// The libvirt hosts VMs may be placed on.
    #[serde(default)]
    pub hosts: Vec<HostConfig>,
    /// Base images by name; course files refer to these names.
    #[serde(default)]
    pub images: BTreeMap<ImageName, ImageConfig>,
    /// labpool as an LTI 1.3 tool: its public address and the LMS platforms
    /// it trusts.
    #[serde(default)]
    pub lti: LtiConfig,
    /// The browser terminal's gateway.
    #[serde(default)]
    pub terminal: TerminalConfig,
}

/// The browser terminal's gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalConfig {
    /// The private key (OpenSSH format, no passphrase) labpool logs in with
    /// on `console: ssh` courses; their images authorize its public half for
    /// the course's `ssh.user`. Needed only when such a course exists.
    #[serde(default)]
    pub ssh_key: Option<PathBuf>,
    /// Console output kept per session, replayed to a page that reconnects
    /// or reloads. Default 256KiB.
    #[serde(default = "default_scrollback")]
    pub scrollback: ByteSize,
}

fn default_scrollback() -> ByteSize {
    ByteSize::bytes(256 << 10)
}

impl Default for TerminalConfig {
    fn default() -> Self {
        TerminalConfig {
            ssh_key: None,
            scrollback: default_scrollback(),
        }
    }
}

/// The LTI side: how LMSs reach labpool and which ones may launch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LtiConfig {
    /// The URL browsers and LMSs reach labpool at, e.g.
    /// `https://labs.example.edu`. Default `http://` plus `http.listen`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Platforms registered by hand (from the LMS's developer key screen).
    #[serde(default)]
    pub platforms: Vec<PlatformConfig>,
    /// The secret part of the Dynamic Registration URL
    /// (`<base_url>/lti/register/<secret>`). Unset: Dynamic Registration is
    /// off, since anyone who can open that URL can register a platform.
    #[serde(default)]
    pub registration_secret: Option<Secret>,
    /// How long a retired tool key stays in the JWKS after a rotation.
    /// Default 72h: longer than platforms cache a JWKS.
    #[serde(default = "default_key_grace")]
    pub key_grace: Duration,
    /// What one student may hold across courses.
    #[serde(default)]
    pub limits: LaunchLimits,
}

impl Default for LtiConfig {
    fn default() -> Self {
        LtiConfig {
            base_url: None,
            platforms: Vec::new(),
            registration_secret: None,
            key_grace: default_key_grace(),
            limits: LaunchLimits::default(),
        }
    }
}

/// Limits on what one LMS user (an issuer's `sub`) may hold at once. Each
/// course adds its own, smaller limit (`session.per_user`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchLimits {
    /// Labs one user may hold across all courses: live sessions plus
    /// launches waiting for a VM. Default 3.
    #[serde(default = "default_labs_per_user")]
    pub labs_per_user: u32,
}

impl Default for LaunchLimits {
    fn default() -> Self {
        LaunchLimits {
            labs_per_user: default_labs_per_user(),
        }
    }
}

fn default_labs_per_user() -> u32 {
    3
}

fn default_key_grace() -> Duration {
    Duration::from_secs(72 * 3600)
}

/// One LMS registration: the values its admin screen shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// The platform's issuer (`iss`), e.g. `https://canvas.instructure.com`.
    pub issuer: String,
    /// The client id the platform gave labpool.
    pub client_id: String,
    /// Deployments of the tool allowed to launch.
    pub deployment_ids: Vec<String>,
    /// The platform's OIDC authorization endpoint.
    pub auth_login_url: String,
    /// The platform's OAuth2 token endpoint.
    pub token_url: String,
    /// The platform's JWKS: the only place its keys are taken from.
    pub jwks_url: String,
    /// May launch every course, even one that does not name it in
    /// `lti.platforms`, by a plain `labpool_course`: the try-it LMS of
    /// `serve --dev` only. Never read from a file (so no configuration can
    /// turn it on).
    #[serde(skip)]
    pub any_course: bool,
}

/// One host: a libvirt host (VM courses) or a Docker engine (container
/// courses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// A short name for logs and status.
    pub name: String,
    /// What the host runs: `vm` (libvirt, the default) or `container` (a
    /// Docker engine).
    #[serde(default)]
    pub runtime: Runtime,
    /// libvirt connection URI: `qemu:///system`, `qemu+ssh://user@host/system`,
    /// `test:///…`. For a Docker engine: `unix:///var/run/docker.sock` or
    /// `tcp://host:2376` (with `tls`).
    pub uri: String,
    /// A Docker engine over TCP: the client certificate labpool presents and
    /// the CA the engine's certificate must chain to (PEM files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<DockerTls>,
    /// The libvirt storage pool holding base images and overlays.
    #[serde(default = "default_storage_pool")]
    pub storage_pool: String,
    /// What the host may give to labpool's VMs.
    pub capacity: Capacity,
    /// `kvm` in production, `qemu` (TCG emulation) where KVM is missing.
    #[serde(default)]
    pub domain_type: DomainType,
    /// The catalog images present on this host. Default: all of them.
    #[serde(default)]
    pub images: Option<Vec<ImageName>>,
    /// For `console: ssh` courses: the host address and port range on which
    /// each VM's SSH port is forwarded (user networking, passt) and where
    /// labpool connects to it.
    #[serde(default)]
    pub ssh_forward: SshForward,
}

/// TLS client certificates for a Docker engine on TCP (`dockerd --tlsverify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerTls {
    /// The CA certificate the engine's certificate is checked against.
    pub ca: PathBuf,
    /// labpool's client certificate.
    pub cert: PathBuf,
    /// labpool's client key.
    pub key: PathBuf,
}

/// Host-side forwarding of guests' SSH ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshForward {
    /// The address the forwards listen on, reachable from labpool.
    /// Default `127.0.0.1` (labpool on the same machine as the host).
    #[serde(default = "default_forward_address")]
    pub address: String,
    /// First port of the range (inclusive). Default 22000.
    #[serde(default = "default_first_port")]
    pub first_port: u16,
    /// Last port of the range (inclusive). Default 22999.
    #[serde(default = "default_last_port")]
    pub last_port: u16,
}

impl Default for SshForward {
    fn default() -> Self {
        SshForward {
            address: default_forward_address(),
            first_port: default_first_port(),
            last_port: default_last_port(),
        }
    }
}

fn default_forward_address() -> String {
    "127.0.0.1".into()
}
fn default_first_port() -> u16 {
    22000
}
fn default_last_port() -> u16 {
    22999
}

/// A database URL. Its password never prints: `Debug` and `Display` show
/// `postgres://user:***@host/db`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The URL itself, password included: for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn redacted(&self) -> String {
        // scheme://user:password@rest -> scheme://user:***@rest
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        match rest.split_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}")
            }
            _ => self.0.clone(),
        }
    }

    /// Makes a relative SQLite path relative to `base` (the config's folder).
    fn resolve(&mut self, base: &Path) {
        let Some(path) = self.0.strip_prefix("sqlite:") else {
            return;
        };
        let path = path.strip_prefix("//").unwrap_or(path);
        let (file, query) = path
            .split_once('?')
            .map_or((path, None), |(f, q)| (f, Some(q)));
        if file.is_empty() || file == ":memory:" || Path::new(file).is_absolute() {
            return;
        }
        let joined = base.join(file);
        self.0 = match query {
            Some(q) => format!("sqlite:{}?{q}", joined.display()),
            None => format!("sqlite:{}", joined.display()),
        };
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn default_database() -> DatabaseUrl {
    DatabaseUrl::new("sqlite:labpool.db")
}

/// The HTTP listener of `labpool serve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port to listen on. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

/// Where course files come from: a local folder, or a Git repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A folder of course files, read again on every resync. Default `courses`.
    #[serde(default = "default_folder")]
    pub folder: PathBuf,
    /// A Git repository to follow instead of a folder.
    #[serde(default)]
    pub git: Option<GitSourceConfig>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            folder: default_folder(),
            git: None,
        }
    }
}

/// A Git repository of course files, fetched on an interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitSourceConfig {
    /// `https://…`, `ssh://git@host/…` (or `git@host:…`) or `file://…`.
    pub url: String,
    /// The branch to follow. Default `main` unless `tag` or `commit` is given.
    #[serde(default)]
    pub branch: Option<String>,
    /// A tag to stay on.
    #[serde(default)]
    pub tag: Option<String>,
    /// A commit to stay on.
    #[serde(default)]
    pub commit: Option<String>,
    /// The folder of course files inside the repository. Default `courses`.
    #[serde(default = "default_folder")]
    pub path: PathBuf,
    /// How often to fetch. Default 1m.
    #[serde(default = "default_fetch_interval")]
    pub interval: Duration,
    /// Private key for ssh URLs.
    #[serde(default)]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file the server's host key is checked against (ssh URLs).
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// Where the local mirror lives. Default `.labpool-git` next to this file.
    #[serde(default = "default_git_cache")]
    pub cache: PathBuf,
    /// Shared secret of the webhook (`POST /hooks/git`) that makes labpool
    /// fetch at once: GitHub's HMAC key, GitLab's token, or a bearer token.
    /// Without it the webhook is off.
    #[serde(default)]
    pub webhook_secret: Option<Secret>,
}

/// A secret from the configuration file; never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn default_fetch_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_git_cache() -> PathBuf {
    PathBuf::from(".labpool-git")
}

impl GitSourceConfig {
    /// The revision to follow, as a reference in the mirror.
    pub fn target(&self) -> GitTarget<'_> {
        match (&self.commit, &self.tag, &self.branch) {
            (Some(c), _, _) => GitTarget::Commit(c),
            (None, Some(t), _) => GitTarget::Tag(t),
            (None, None, Some(b)) => GitTarget::Branch(b),
            (None, None, None) => GitTarget::Branch("main"),
        }
    }
}

/// What a Git source follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitTarget<'a> {
    Branch(&'a str),
    Tag(&'a str),
    Commit(&'a str),
}

fn default_folder() -> PathBuf {
    PathBuf::from("courses")
}

/// The reconciler's pace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// A full pass runs at least this often, even when nothing signalled a
    /// change (a little jitter is added). Default 10s.
    #[serde(default = "default_resync")]
    pub resync: Duration,
    /// VMs booting at once on one host; more would only slow every boot down.
    /// Default 2.
    #[serde(default = "default_boots_per_host")]
    pub boots_per_host: u32,
    /// How long a domain or volume that carries labpool's mark but is unknown
    /// to the store is left alone before it is destroyed. Default 2m.
    #[serde(default = "default_orphan_grace")]
    pub orphan_grace: Duration,
    /// How long before a schedule window opens its warm target applies, so the
    /// VMs are booted when class starts. Default 15m.
    #[serde(default = "default_prewarm")]
    pub prewarm: Duration,
    /// First delay after a course's VM fails to boot; it doubles with every
    /// further failure (up to 5m) and resets when one becomes warm. Default 5s.
    #[serde(default = "default_backoff")]
    pub backoff: Duration,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            resync: default_resync(),
            boots_per_host: default_boots_per_host(),
            orphan_grace: default_orphan_grace(),
            prewarm: default_prewarm(),
            backoff: default_backoff(),
        }
    }
}

fn default_resync() -> Duration {
    Duration::from_secs(10)
}
fn default_boots_per_host() -> u32 {
    2
}
fn default_orphan_grace() -> Duration {
    Duration::from_secs(120)
}
fn default_prewarm() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_backoff() -> Duration {
    Duration::from_secs(5)
}

fn default_storage_pool() -> String {
    "default".to_string()
}

/// The share of a host labpool may use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// The most labpool VMs on the host at once.
    pub vms: u32,
    /// Memory for labpool's VMs (never overcommitted).
    pub memory: ByteSize,
    /// Physical CPUs for labpool's VMs. One VM never gets more vCPUs than this.
    pub vcpus: u32,
    /// How many vCPUs may be handed out per physical CPU, summed over VMs.
    #[serde(default = "default_overcommit")]
    pub cpu_overcommit: f64,
}

impl Capacity {
    /// vCPUs that may be handed out: physical vCPUs times the overcommit.
    pub fn vcpu_slots(&self) -> u32 {
        (f64::from(self.vcpus) * self.cpu_overcommit).floor() as u32
    }
}

fn default_overcommit() -> f64 {
    1.0
}

/// The libvirt domain type VMs are created with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    #[default]
    Kvm,
    Qemu,
}

/// Where an image's bits are: a base volume in the host's storage pool, a
/// kernel and initrd booted directly, or both (a root disk plus direct boot).
/// Every VM gets its own overlay volume: backed by `volume` when there is one,
/// otherwise a blank disk of the course's `vm.disk` size (default 1GiB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Name of the read-only base volume in the host's storage pool.
    #[serde(default)]
    pub volume: Option<String>,
    /// Kernel image path on the host, for direct boot.
    #[serde(default)]
    pub kernel: Option<String>,
    /// Initrd path on the host, for direct boot.
    #[serde(default)]
    pub initrd: Option<String>,
    /// Kernel command line, for direct boot.
    #[serde(default)]
    pub cmdline: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database: default_database(),
            source: SourceConfig::default(),
            reconcile: ReconcileConfig::default(),
            http: HttpConfig::default(),
            lti: LtiConfig::default(),
            terminal: TerminalConfig::default(),
            hosts: Vec::new(),
            images: BTreeMap::new(),
        }
    }
}

impl HostConfig {
    /// Does this host hold the image?
    pub fn carries(&self, image: &ImageName) -> bool {
        self.images.as_ref().is_none_or(|list| list.contains(image))
    }

    /// Could one VM of this size ever run here (ignoring what already runs)?
    pub fn fits(&self, vcpus: u32, memory: ByteSize) -> bool {
        vcpus <= self.capacity.vcpus && memory <= self.capacity.memory
    }
}

/// Reading the configuration failed; the diagnostics say where and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration file")]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl Config {
    /// The catalog entry of a VM course's image (`None` for containers, or
    /// an image the catalog lacks).
    pub fn catalog_entry(&self, course: &crate::course::Course) -> Option<&ImageConfig> {
        course.image.as_ref().and_then(|i| self.images.get(i))
    }

    /// The public base URL of labpool, without a trailing slash.
    pub fn base_url(&self) -> String {
        match &self.lti.base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.http.listen),
        }
    }

    fn check_lti(&self, path: &Path, doc: &Document, out: &mut Vec<Diagnostic>) {
        let mut bad_url = |pointer: String, url: &str| {
            let ok = url::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                out.push(Diagnostic::new(
                    path,
                    doc.value_position(&pointer),
                    Code::InvalidValue,
                    format!("`{url}` is not an http(s) URL"),
                ));
            }
        };
        if let Some(base) = &self.lti.base_url {
            bad_url("/lti/base_url".into(), base);
        }
        for (i, p) in self.lti.platforms.iter().enumerate() {
            bad_url(
                format!("/lti/platforms/{i}/auth_login_url"),
                &p.auth_login_url,
            );
            bad_url(format!("/lti/platforms/{i}/token_url"), &p.token_url);
            bad_url(format!("/lti/platforms/{i}/jwks_url"), &p.jwks_url);
        }
        let mut seen = HashMap::new();
        for (i, p) in self.lti.platforms.iter().enumerate() {
            if let Some(first) = seen.insert((&p.issuer, &p.client_id), i) {
                out.push(Diagnostic::new(
                    path,
                    doc.key_position(&format!("/lti/platforms/{i}")),
                    Code::DuplicateName,
                    format!(
                        "issuer `{}` with client id `{}` is already lti.platforms[{first}]",
                        p.issuer, p.client_id
                    ),
                ));
            }
            if p.deployment_ids.is_empty() || p.deployment_ids.iter().any(|d| d.is_empty()) {
                out.push(Diagnostic::new(
                    path,
                    doc.value_position(&format!("/lti/platforms/{i}/deployment_ids")),
                    Code::InvalidValue,
                    "list the deployment ids allowed to launch (the LMS shows them when the tool is deployed)",
                ));
            }
        }
        self.check_limits(path, doc, out);
    }

    fn check_limits(&self, path: &Path, doc: &Document, out: &mut Vec<Diagnostic>) {
        if self.lti.limits.labs_per_user == 0 {
            out.push(Diagnostic::new(
                path,
                doc.value_position("/lti/limits/labs_per_user"),
                Code::InvalidValue,
                "lti.limits.labs_per_user must be at least 1: with 0 nobody could launch",
            ));
        }
    }

    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |d: Diagnostic| ConfigError {
            diagnostics: vec![d],
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(Diagnostic::new(
                path,
                Position::START,
                Code::IoError,
                e.to_string(),
            ))
        })?;
        let mut config = Config::parse(path, &text)?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        config.database.resolve(base);
        if config.source.folder.is_relative() {
            config.source.folder = base.join(&config.source.folder);
        }
        if let Some(key) = &mut config.terminal.ssh_key
            && key.is_relative()
        {
            *key = base.join(&*key);
        }
        if let Some(git) = &mut config.source.git {
            for path in [
                Some(&mut git.cache),
                git.ssh_key.as_mut(),
                git.known_hosts.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
        }
        Ok(config)
    }

    /// Parses configuration text (`path` names it in diagnostics).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let parsed = yaml::parse(path, text);
        let mut diagnostics = parsed.diagnostics;
        let Some(doc) = parsed.document else {
            return Err(ConfigError { diagnostics });
        };
        match serde_path_to_error::deserialize::<_, Config>(&doc.value) {
            Err(e) => {
                diagnostics.push(serde_diagnostic(path, &doc, &e, |_| e.path().to_string()));
                Err(ConfigError { diagnostics })
            }
            Ok(config) => {
                config.check(path, &doc, &mut diagnostics);
                if diagnostics.is_empty() {
                    Ok(config)
                } else {
                    Err(ConfigError { diagnostics })
                }
            }
        }
    }

    fn check(&self, path: &Path, doc: &Document, out: &mut Vec<Diagnostic>) {
        let db = self.database.expose();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            out.push(Diagnostic::new(
                path,
                doc.value_position("/database"),
                Code::InvalidValue,
                format!(
                    "database `{}` is neither sqlite:PATH nor postgres://…",
                    self.database
                ),
            ));
        }
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            out.push(Diagnostic::new(
                path,
                doc.value_position("/http/listen"),
                Code::InvalidValue,
                format!(
                    "`{}` is not an address and port such as 127.0.0.1:8080",
                    self.http.listen
                ),
            ));
        }
        if let Some(git) = &self.source.git {
            let chosen = [&git.branch, &git.tag, &git.commit]
                .iter()
                .filter(|x| x.is_some())
                .count();
            if chosen > 1 {
                out.push(Diagnostic::new(
                    path,
                    doc.key_position("/source/git"),
                    Code::InvalidValue,
                    "give one of `branch`, `tag` or `commit`",
                ));
            }
            if doc.value.pointer("/source/folder").is_some() {
                out.push(Diagnostic::new(
                    path,
                    doc.key_position("/source/folder"),
                    Code::InvalidValue,
                    "give either `folder` or `git`, not both (the folder inside the repository is `git.path`)",
                ));
            }
            if git.interval.is_zero() {
                out.push(Diagnostic::new(
                    path,
                    doc.value_position("/source/git/interval"),
                    Code::InvalidValue,
                    "the fetch interval must be above zero",
                ));
            }
        }
        self.check_lti(path, doc, out);
        if self.reconcile.boots_per_host == 0 || self.reconcile.resync.is_zero() {
            out.push(Diagnostic::new(
                path,
                doc.value_position("/reconcile"),
                Code::InvalidValue,
                "reconcile needs boots_per_host and resync above zero",
            ));
        }
        let mut names = HashMap::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let at = |field: &str| doc.value_position(&format!("/hosts/{i}/{field}"));
            if let Some(first) = names.insert(host.name.as_str(), i) {
                out.push(Diagnostic::new(
                    path,
                    at("name"),
                    Code::DuplicateName,
                    format!("host `{}` is already defined as hosts[{first}]", host.name),
                ));
            }
            for image in host.images.iter().flatten() {
                if !self.images.contains_key(image) {
                    out.push(Diagnostic::new(
                        path,
                        at("images"),
                        Code::UnknownImage,
                        format!(
                            "host `{}` lists image `{image}`, which is not in `images`",
                            host.name
                        ),
                    ));
                }
            }
            let forward = &host.ssh_forward;
            if forward.first_port == 0 || forward.first_port > forward.last_port {
                out.push(Diagnostic::new(
                    path,
                    at("ssh_forward"),
                    Code::InvalidValue,
                    "ssh_forward needs 0 < first_port <= last_port",
                ));
            }
            if host.runtime == Runtime::Container {
                let tcp = host.uri.starts_with("tcp://");
                if !tcp && !host.uri.starts_with("unix://") {
                    out.push(Diagnostic::new(
                        path,
                        at("uri"),
                        Code::InvalidValue,
                        format!(
                            "`{}` is not a Docker engine address such as unix:///var/run/docker.sock or tcp://host:2376",
                            host.uri
                        ),
                    ));
                }
                if host.tls.is_some() && !tcp {
                    out.push(Diagnostic::new(
                        path,
                        at("tls"),
                        Code::InvalidValue,
                        "`tls` is for an engine reached over tcp://",
                    ));
                }
                if host.images.is_some() {
                    out.push(Diagnostic::new(
                        path,
                        at("images"),
                        Code::InvalidValue,
                        "`images` lists VM base images; a Docker host's images are the engine's own",
                    ));
                }
            } else if host.tls.is_some() {
                out.push(Diagnostic::new(
                    path,
                    at("tls"),
                    Code::InvalidValue,
                    "`tls` is for Docker hosts (`runtime: container`); libvirt's TLS is in its URI",
                ));
            } else if !host.uri.contains(':') {
                out.push(Diagnostic::new(
                    path,
                    at("uri"),
                    Code::InvalidValue,
                    format!(
                        "`{}` is not a libvirt URI such as qemu:///system, qemu+ssh://user@host/system or test:///default",
                        host.uri
                    ),
                ));
            }
            if host.capacity.vms == 0
                || host.capacity.vcpus == 0
                || host.capacity.cpu_overcommit.is_nan()
                || host.capacity.cpu_overcommit < 1.0
            {
                out.push(Diagnostic::new(
                    path,
                    at("capacity"),
                    Code::InvalidValue,
                    "capacity needs vms and vcpus above zero and cpu_overcommit of at least 1",
                ));
            }
        }
        for (name, image) in &self.images {
            let direct = image.kernel.is_some() || image.initrd.is_some();
            let complete_direct = image.kernel.is_some() && image.initrd.is_some();
            if (image.volume.is_none() && !direct) || (direct && !complete_direct) {
                out.push(Diagnostic::new(
                    path,
                    doc.key_position(&yaml::pointer_push("/images", name.as_str())),
                    Code::InvalidValue,
                    format!(
                        "image `{name}` needs `volume`, or `kernel` and `initrd`, or all three"
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_images() {
        let text = "hosts:\n  - name: a\n    uri: test:///default\n    capacity: { vms: 4, memory: 8GiB, vcpus: 4 }\nimages:\n  tiny: { volume: tiny.qcow2 }\n";
        let config = Config::parse(Path::new("labpool.yaml"), text).unwrap();
        assert_eq!(config.hosts[0].storage_pool, "default");
        assert_eq!(config.hosts[0].capacity.cpu_overcommit, 1.0);
        assert!(config.hosts[0].carries(&"tiny".parse().unwrap()));
        assert!(config.hosts[0].fits(4, ByteSize::gib(8)));
        assert!(!config.hosts[0].fits(5, ByteSize::gib(8)));
    }

    #[test]
    fn reports_problems_with_positions() {
        let text =
            "hosts:\n  - name: a\n    uri: x\n    capacity: { vms: 4, memory: 8 gigs, vcpus: 4 }\n";
        let err = Config::parse(Path::new("c.yaml"), text).unwrap_err();
        let d = &err.diagnostics[0];
        assert_eq!((d.position.line, d.code), (4, Code::InvalidSize));
        assert!(
            d.message
                .starts_with("hosts[0].capacity.memory: size \"8 gigs\""),
            "{}",
            d.message
        );

        let text = "images:\n  half: { volume: v, kernel: k }\n  none: {}\n  both: { volume: v, kernel: k, initrd: i }\n";
        let err = Config::parse(Path::new("c.yaml"), text).unwrap_err();
        let lines: Vec<usize> = err.diagnostics.iter().map(|d| d.position.line).collect();
        assert_eq!(lines, vec![2, 3]);
    }

    #[test]
    fn defaults_resolve_against_the_file_and_hide_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("labpool.yaml");
        std::fs::write(&file, "hosts: []\nterminal: { ssh_key: keys/id }\n").unwrap();
        let config = Config::load(&file).unwrap();
        assert_eq!(config.terminal.ssh_key, Some(dir.path().join("keys/id")));
        assert_eq!(
            config.database.expose(),
            format!("sqlite:{}", dir.path().join("labpool.db").display())
        );
        assert_eq!(config.source.folder, dir.path().join("courses"));
        assert_eq!(config.reconcile.boots_per_host, 2);

        let url = DatabaseUrl::new("postgres://lab:s3cret@db.example/labpool");
        assert_eq!(url.to_string(), "postgres://lab:***@db.example/labpool");
        assert!(!format!("{url:?}").contains("s3cret"));
        let mut abs = DatabaseUrl::new("sqlite:/var/lib/labpool/state.db?mode=rwc");
        abs.resolve(Path::new("/etc"));
        assert_eq!(abs.expose(), "sqlite:/var/lib/labpool/state.db?mode=rwc");
    }

    #[test]
    fn refuses_bad_database_reconcile_and_ports() {
        let text = "database: mysql://x\nreconcile: { boots_per_host: 0 }\nhosts:\n  - name: a\n    uri: nowhere\n    capacity: { vms: 1, memory: 1GiB, vcpus: 1 }\n    ssh_forward: { first_port: 30000, last_port: 20000 }\n";
        let err = Config::parse(Path::new("c.yaml"), text).unwrap_err();
        let lines: Vec<usize> = err.diagnostics.iter().map(|d| d.position.line).collect();
        assert_eq!(lines, vec![1, 2, 7, 5], "{:#?}", err.diagnostics);
    }
}
