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
use std::net::{IpAddr, SocketAddr};
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
    /// The file holding the key that seals the store's secrets (64 hex
    /// digits, mode 0600). `LABPOOL_SECRET_KEY_FILE` overrides it; then
    /// systemd's `$CREDENTIALS_DIRECTORY/labpool-secret-key`. Unset with
    /// SQLite: `<database file>.key`, generated on first start. Unset with
    /// PostgreSQL: labpool refuses to start (replicas must share one key).
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
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
    /// Removed: a static registration secret was a reusable link. Set, it is
    /// a configuration error that points to `labpool lti registration-link`.
    #[serde(default, skip_serializing)]
    pub registration_secret: Option<Secret>,
    /// LTI Dynamic Registration: one-time links and where their requests
    /// may go.
    #[serde(default)]
    pub registration: RegistrationConfig,
    /// How long a retired tool key stays in the JWKS after a rotation.
    /// Default 72h: longer than platforms cache a JWKS.
    #[serde(default = "default_key_grace")]
    pub key_grace: Duration,
    /// Bounds on unauthenticated login initiations (`/lti/login`).
    #[serde(default)]
    pub logins: LoginLimits,
    /// Web origins, besides labpool's own and the registered platforms'
    /// (issuer and authorization endpoint), whose pages may show the
    /// session page in a frame (CSP `frame-ancestors`): an LMS whose pages
    /// live elsewhere, e.g. `https://school.instructure.com` for Canvas
    /// Cloud. Default none.
    #[serde(default)]
    pub frame_ancestors: Vec<String>,
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
            registration: RegistrationConfig::default(),
            key_grace: default_key_grace(),
            logins: LoginLimits::default(),
            frame_ancestors: Vec::new(),
            limits: LaunchLimits::default(),
        }
    }
}

/// LTI Dynamic Registration: links made by an admin (`labpool lti
/// registration-link`, or the dashboard), each usable once, and the
/// addresses its outgoing requests may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// How long a registration link works after it is made. Default 24h.
    #[serde(default = "default_link_ttl")]
    pub link_ttl: Duration,
    /// Let registrations (and the JWKS of platforms registered that way)
    /// reach loopback, private (RFC 1918, ULA), link-local and CGNAT
    /// addresses. Default false: only public addresses.
    #[serde(default)]
    pub allow_private_networks: bool,
    /// Networks (CIDR, e.g. `10.20.0.0/16`) registrations may reach whatever
    /// their kind; the only way to allow a cloud metadata address. Default none.
    #[serde(default)]
    pub allowed_networks: Vec<Cidr>,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            link_ttl: default_link_ttl(),
            allow_private_networks: false,
            allowed_networks: Vec::new(),
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

/// How many logins labpool starts before a platform answers: each stores a
/// row until its launch or its expiry, and anyone may start one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginLimits {
    /// Logins one client address may start at once (the token bucket's
    /// size). Default 200: a class behind one NAT launching together.
    #[serde(default = "default_login_burst")]
    pub burst: u32,
    /// Logins per second one client address regains. Default 2.
    #[serde(default = "default_login_rate")]
    pub per_second: u32,
    /// Logins started and not yet launched, over all clients; beyond it new
    /// logins get 503. Default 10000.
    #[serde(default = "default_max_pending")]
    pub max_pending: u32,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            burst: default_login_burst(),
            per_second: default_login_rate(),
            max_pending: default_max_pending(),
        }
    }
}

fn default_link_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_login_burst() -> u32 {
    200
}

fn default_login_rate() -> u32 {
    2
}

fn default_max_pending() -> u32 {
    10_000
}

fn default_labs_per_user() -> u32 {
    3
}

fn default_key_grace() -> Duration {
    Duration::from_secs(72 * 3600)
}

/// One LMS registration: the values its admin screen shows. A platform
/// registered through Dynamic Registration has the same values
/// (`lti::platforms::Registration` holds either).
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
    #[serde(default = "default_forward_address", deserialize_with = "ip_address")]
    pub address: IpAddr,
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

fn default_forward_address() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// An IP address, parsed as the file is read (so `validate` reports it at
/// its line, not the first boot that uses it).
fn ip_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not an IP address such as 127.0.0.1 or ::1"
        ))
    })
}

/// An address and port, parsed as the file is read.
fn socket_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not an address and port such as 127.0.0.1:8080"
        ))
    })
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

    /// Whether the URL carries a password (`user:password@` or a
    /// `password=` parameter).
    pub fn has_password(&self) -> bool {
        self.redacted() != self.0 || self.0.contains("password=")
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
    #[serde(default = "default_listen", deserialize_with = "socket_address")]
    pub listen: SocketAddr,
    /// Other names labpool answers to besides `lti.base_url`'s host
    /// (`host` or `host:port`; without a port, base_url's). Requests naming
    /// any other `Host` are refused (421), except `/healthz` and `/readyz`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed, as CIDRs
    /// (`10.0.0.0/8`, `::1/128`). Default none: the peer address is the
    /// client.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// Timeouts and the connection cap of the listener.
    #[serde(default)]
    pub limits: HttpLimits,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            allowed_hosts: Vec::new(),
            trusted_proxies: Vec::new(),
            limits: HttpLimits::default(),
        }
    }
}

/// How long the listener waits for slow clients, and how many it serves.
/// Terminal sockets, once upgraded, are exempt from the timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    /// A request's line and headers must arrive within this (counted from
    /// the first byte, or from the end of the previous request on a kept-alive
    /// connection). Default 10s.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Duration,
    /// A request's whole body must arrive within this. Default 30s.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: Duration,
    /// A connection with no bytes moving either way for this long is
    /// closed. Default 60s.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Connections served at once; more get 503 and are closed. Default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_max_connections() -> u32 {
    1024
}

/// An address block, `10.0.0.0/8` or `2001:db8::/32` (a bare address is one
/// address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

impl Cidr {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4 peer may arrive as an IPv4-mapped IPv6 address.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| Cidr(ipnet::IpNet::from(ip)))
            .map_err(|_| format!("`{s}` is not an address block like 10.0.0.0/8 or ::1/128"))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// Where course files come from: a local folder, or a Git repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A folder of course files, read again on every resync. Default `courses`.
    #[serde(default = "default_folder")]
    pub folder: PathBuf,
    /// A Git repository to follow instead of a folder.
    #[serde(default)]
    pub git: Option<GitSourceConfig>,
    /// When a new revision is held back until an admin confirms it.
    #[serde(default)]
    pub hold: HoldConfig,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            folder: default_folder(),
            git: None,
            hold: HoldConfig::default(),
        }
    }
}

/// A revision that removes more than these shares of what the revision in
/// force runs is held (and one that removes every course always is): the
/// pools stay as they are until an admin confirms it or a later revision
/// removes less.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldConfig {
    /// Share of the courses (0–1). Default 0.5: removing 3 of 4 is held,
    /// 2 of 4 applies.
    #[serde(default = "default_half")]
    pub max_removed_share: f64,
    /// Share of the warm VMs (`pool.warm` summed over courses, removed
    /// courses and lowered counts alike), 0–1. Default 0.5.
    #[serde(default = "default_half")]
    pub max_warm_removed_share: f64,
}

impl Default for HoldConfig {
    fn default() -> Self {
        HoldConfig {
            max_removed_share: default_half(),
            max_warm_removed_share: default_half(),
        }
    }
}

fn default_half() -> f64 {
    0.5
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
    /// Webhook calls within this of the fetch the last one started are
    /// folded into one fetch at its end. Default 5s.
    #[serde(default = "default_webhook_min_interval")]
    pub webhook_min_interval: Duration,
    /// With `tag`: follow the tag when it is moved on the remote (force-pushed
    /// to another commit). Default false: a moved tag is reported and the
    /// commit it first named stays in force.
    #[serde(default)]
    pub follow_moved_tags: bool,
}

fn default_webhook_min_interval() -> Duration {
    Duration::from_secs(5)
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
    /// Instance ids of lost labpools whose objects on the hosts this labpool
    /// takes over: marked with one of them and unknown to this store, they
    /// are orphans of this labpool (collected after `orphan_grace`). Default
    /// none: another instance's objects are only reported.
    #[serde(default)]
    pub adopt_instances: Vec<String>,
    /// How long events are kept; older ones are deleted by the passes, a
    /// bounded batch at a time. Default 30d.
    #[serde(default = "default_event_retention")]
    pub event_retention: Duration,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            resync: default_resync(),
            boots_per_host: default_boots_per_host(),
            orphan_grace: default_orphan_grace(),
            prewarm: default_prewarm(),
            backoff: default_backoff(),
            adopt_instances: Vec::new(),
            event_retention: default_event_retention(),
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
fn default_event_retention() -> Duration {
    Duration::from_secs(30 * 86_400)
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
            secret_key_file: None,
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

    /// The keys of this configuration that hold secrets: a file holding
    /// any must be private to labpool's user.
    pub fn secrets_held(&self) -> Vec<&'static str> {
        let git = self.source.git.as_ref();
        [
            (self.database.has_password(), "database (a password)"),
            (
                git.is_some_and(|g| g.webhook_secret.is_some()),
                "source.git.webhook_secret",
            ),
        ]
        .into_iter()
        .filter_map(|(held, key)| held.then_some(key))
        .collect()
    }

    /// The public base URL of labpool, without a trailing slash.
    pub fn base_url(&self) -> String {
        match &self.lti.base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.http.listen),
        }
    }

    /// Dynamic Registration's keys and `http.allowed_hosts`.
    fn check_registration(&self, path: &Path, doc: &Document, out: &mut Vec<Diagnostic>) {
        if self.lti.registration_secret.is_some() {
            out.push(Diagnostic::new(
                path,
                doc.key_position("/lti/registration_secret"),
                Code::InvalidValue,
                "`lti.registration_secret` is no longer supported: a static secret made a reusable registration link. \
                 Remove it and make a one-time link with `labpool lti registration-link` (or on the dashboard)",
            ));
        }
        if self.lti.registration.link_ttl.is_zero() {
            out.push(Diagnostic::new(
                path,
                doc.value_position("/lti/registration/link_ttl"),
                Code::InvalidValue,
                "a registration link must live above zero",
            ));
        }
        for (i, host) in self.http.allowed_hosts.iter().enumerate() {
            let ok = url::Url::parse(&format!("http://{host}/"))
                .is_ok_and(|u| u.path() == "/" && u.username().is_empty() && u.host().is_some())
                && !host.contains(['/', '@', '?', '#']);
            if !ok {
                out.push(Diagnostic::new(
                    path,
                    doc.value_position(&format!("/http/allowed_hosts/{i}")),
                    Code::InvalidValue,
                    format!("`{host}` is not a host name or host:port such as labs.example.edu or 10.0.0.5:8080"),
                ));
            }
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
        // Each goes into a CSP header as is: only a bare origin (a `*.`
        // host is fine), nothing that could add to the policy.
        for (i, o) in self.lti.frame_ancestors.iter().enumerate() {
            let bare = url::Url::parse(o).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.origin().ascii_serialization() == o.trim_end_matches('/')
            });
            if !bare {
                out.push(Diagnostic::new(
                    path,
                    doc.value_position(&format!("/lti/frame_ancestors/{i}")),
                    Code::InvalidValue,
                    format!("`{o}` is not a web origin like `https://lms.example.edu`"),
                ));
            }
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
        self.check_hold(path, doc, out);
    }

    fn check_hold(&self, path: &Path, doc: &Document, out: &mut Vec<Diagnostic>) {
        let hold = &self.source.hold;
        for (key, value) in [
            ("max_removed_share", hold.max_removed_share),
            ("max_warm_removed_share", hold.max_warm_removed_share),
        ] {
            if !(0.0..=1.0).contains(&value) {
                out.push(Diagnostic::new(
                    path,
                    doc.value_position(&format!("/source/hold/{key}")),
                    Code::InvalidValue,
                    format!("source.hold.{key} is a share of what runs: between 0 and 1"),
                ));
            }
        }
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
        if let Some(key) = &mut config.secret_key_file
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
        self.check_registration(path, doc, out);
        if self.reconcile.boots_per_host == 0 || self.reconcile.resync.is_zero() {
            out.push(Diagnostic::new(
                path,
                doc.value_position("/reconcile"),
                Code::InvalidValue,
                "reconcile needs boots_per_host and resync above zero",
            ));
        }
        for (i, id) in self.reconcile.adopt_instances.iter().enumerate() {
            if !crate::hosts::xml::is_instance_id(id) {
                out.push(Diagnostic::new(
                    path,
                    doc.value_position(&format!("/reconcile/adopt_instances/{i}")),
                    Code::InvalidValue,
                    format!("`{id}` is not an instance id (12 lowercase hex digits, as `labpool status` shows them)"),
                ));
            }
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
    fn the_static_registration_secret_is_refused_with_what_to_do_instead() {
        let text = "lti:\n  registration_secret: let-me-register\n";
        let err = Config::parse(Path::new("c.yaml"), text).unwrap_err();
        let d = &err.diagnostics[0];
        assert_eq!((d.position.line, d.code), (2, Code::InvalidValue));
        assert!(
            d.message.contains("labpool lti registration-link"),
            "{}",
            d.message
        );
        let ok = "lti:\n  registration: { link_ttl: 1h, allowed_networks: [10.0.0.0/8] }\nhttp: { allowed_hosts: [labs.example.edu, \"10.0.0.5:8080\"] }\n";
        let config = Config::parse(Path::new("c.yaml"), ok).unwrap();
        assert_eq!(config.lti.registration.allowed_networks.len(), 1);
        assert!(!config.lti.registration.allow_private_networks);
        let bad = "http: { allowed_hosts: [\"https://x/\"] }\nlti:\n  registration: { allowed_networks: [nope] }\n";
        assert!(Config::parse(Path::new("c.yaml"), bad).is_err());
    }

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
    fn frame_ancestors_are_bare_origins_only() {
        // Each goes into the session page's CSP as is: nothing that could
        // add a directive or a path.
        let text = "lti:\n  frame_ancestors: [\"https://school.instructure.com\", \"https://*.instructure.com/\"]\n";
        let config = Config::parse(Path::new("c.yaml"), text).unwrap();
        assert_eq!(config.lti.frame_ancestors.len(), 2);
        for bad in [
            "https://lms.example.edu/course",
            "https://a.example; script-src *",
            "javascript:alert(1)",
            "'self'",
        ] {
            let text = format!("lti:\n  frame_ancestors: [{bad:?}]\n");
            let err = Config::parse(Path::new("c.yaml"), &text).unwrap_err();
            assert!(
                err.diagnostics[0].message.contains("is not a web origin"),
                "{bad}: {:?}",
                err.diagnostics
            );
        }
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
    fn addresses_are_parsed_as_the_file_is_read() {
        let text = "http: { listen: \"[::1]:9000\" }\nhosts:\n  - name: a\n    uri: test:///default\n    capacity: { vms: 1, memory: 1GiB, vcpus: 1 }\n    ssh_forward: { address: 10.0.0.7 }\n  - name: b\n    uri: test:///default\n    capacity: { vms: 1, memory: 1GiB, vcpus: 1 }\n";
        let config = Config::parse(Path::new("c.yaml"), text).unwrap();
        assert_eq!(config.http.listen, "[::1]:9000".parse().unwrap());
        assert_eq!(config.base_url(), "http://[::1]:9000");
        assert_eq!(
            config.hosts[0].ssh_forward.address,
            IpAddr::from([10, 0, 0, 7])
        );
        assert_eq!(
            config.hosts[1].ssh_forward.address,
            IpAddr::from([127, 0, 0, 1])
        );
        assert_eq!(Config::default().http.listen.to_string(), "127.0.0.1:8080");
        for (text, line) in [
            (
                "hosts:\n  - name: a\n    uri: test:///default\n    capacity: { vms: 1, memory: 1GiB, vcpus: 1 }\n    ssh_forward:\n      address: not an ip at all\n",
                6,
            ),
            ("http:\n  listen: 127.0.0.1\n", 2),
        ] {
            let err = Config::parse(Path::new("c.yaml"), text).unwrap_err();
            let d = &err.diagnostics[0];
            assert_eq!(
                (d.position.line, d.code),
                (line, Code::InvalidValue),
                "{d:?}"
            );
        }
    }

    #[test]
    fn refuses_bad_database_reconcile_and_ports() {
        let text = "database: mysql://x\nreconcile: { boots_per_host: 0 }\nhosts:\n  - name: a\n    uri: nowhere\n    capacity: { vms: 1, memory: 1GiB, vcpus: 1 }\n    ssh_forward: { first_port: 30000, last_port: 20000 }\n";
        let err = Config::parse(Path::new("c.yaml"), text).unwrap_err();
        let lines: Vec<usize> = err.diagnostics.iter().map(|d| d.position.line).collect();
        assert_eq!(lines, vec![1, 2, 7, 5], "{:#?}", err.diagnostics);
    }
}
