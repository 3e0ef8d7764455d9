//! The reconciler: keeps every course's pool at its target, level-triggered.
//!
//! Each pass: read the source (keep the last good revision if it is broken),
//! look at the hosts and the store ([`observe`]), work out the desired
//! counts ([`desired`]), plan ([`plan`], pure) and execute ([`execute`]).
//! Passes run on a timer (with jitter) and whenever something signals a
//! change (a boot finished, a destroy finished). Nothing assumes why a pass
//! started: every pass looks at everything.
//!
//! Intent before action: a VM's row is written (`creating`) before anything
//! is created on a host, and marked `deleting` before anything is destroyed,
//! so after a crash the store names everything that might exist on a host,
//! and anything marked as labpool's that the store does not name is an
//! orphan, collected after a grace period.

pub mod backoff;
pub mod desired;
pub mod execute;
pub mod observe;
pub mod plan;
#[cfg(test)]
mod plan_tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::course::Course;
use crate::hosts::Host;
use crate::source::{self, Revision};
use crate::store::{CourseRow, NewEvent, Store, StoreError, VmState};
use backoff::Backoff;
use desired::DesiredCourse;
use plan::{OrphanKind, Plan, Policy};

/// Events older than `reconcile.event_retention` deleted per pass at most.
pub const EVENT_PRUNE_BATCH: i64 = 5_000;

/// Longest wait between failed boots of one course.
const BACKOFF_CAP_MS: i64 = 5 * 60 * 1000;

/// The lease that makes one labpool at a time the reconciler of a store.
const LEASE: &str = "reconciler";

/// `hostname:pid:random`: unique per process, and enough to tell, on the
/// same machine, that a holder's process is gone.
fn lease_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A holder that ran on this machine and whose process no longer exists.
fn holder_is_dead(holder: &str) -> bool {
    let mine = lease_holder();
    let (Some((host, rest)), Some((my_host, _))) = (holder.split_once(':'), mine.split_once(':'))
    else {
        return false;
    };
    let pid = rest.split(':').next().unwrap_or_default();
    host == my_host
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && !std::path::Path::new("/proc").join(pid).exists()
}

/// The wall clock in unix milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// What one pass did.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    pub revision: Option<String>,
    pub plan: Plan,
    /// Actions started (some are skipped when their VM is already busy).
    pub started: usize,
}

/// Mutable state shared by passes and their background tasks.
pub(crate) struct State {
    /// The revision in force: the last one applied, in this process or (after
    /// a restart) as the store recorded it; `None` until there is one.
    revision: Option<Revision>,
    /// The store's revision in force was read (once per process).
    restored: bool,
    /// A valid revision held back because it removes too much (its row in
    /// the store says whether an admin confirmed it).
    held: Option<Revision>,
    /// Diagnostics of the last rejected load, to log each rejection once.
    last_rejection: Option<String>,
    /// When the revision in force was applied (by this process or, restored
    /// from the store, by an earlier one).
    applied_at: Option<i64>,
    /// When the last rejection happened.
    rejected_at: Option<i64>,
    backoff: Backoff,
    orphans_seen: HashMap<(String, OrphanKind, String), i64>,
    /// Orphans being collected now: a pass while one is in flight does not
    /// start it again (nor record it collected twice).
    collecting: HashSet<(String, OrphanKind, String)>,
    /// VMs with work in flight (a boot or a destroy): skipped by new actions.
    busy: HashSet<String>,
    /// Fetch bookkeeping of a Git source.
    fetch: FetchState,
}

/// When to fetch a Git source next, and what the last fetch gave.
#[derive(Debug, Default)]
struct FetchState {
    next_at: i64,
    failures: u32,
    /// The commit last loaded (valid or not): not loaded again until it moves.
    loaded: Option<String>,
    last_error: Option<String>,
    last_fetch_at: Option<i64>,
    /// When the latest webhook-requested fetch was (or is) due: requests
    /// within `webhook_min_interval` of it fold into one fetch.
    requested_at: Option<i64>,
    /// Fetches started in this process.
    started: u64,
}

pub(crate) struct Inner {
    /// This process's name on the reconciler lease: `host:pid:random`.
    pub(crate) holder: String,
    /// This store's instance id, and the instances adopted (configuration
    /// and `labpool adopt`, read again every pass): the only marks whose
    /// objects this labpool ever collects.
    pub(crate) owners: Mutex<crate::hosts::owner::Owners>,
    /// This store's instance id.
    pub(crate) instance: String,
    pub(crate) config: Config,
    pub(crate) store: Store,
    pub(crate) hosts: BTreeMap<String, Arc<Host>>,
    pub(crate) state: Mutex<State>,
    pub(crate) wake: Notify,
    pub(crate) tasks: Mutex<JoinSet<()>>,
    /// Passes completed, for status and tests.
    pub(crate) passes: std::sync::atomic::AtomicU64,
    /// This labpool's metrics; the HTTP side shares them.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Held while a Git fetch runs: at most one at a time, whoever calls
    /// `pass`.
    pub(crate) fetching: tokio::sync::Mutex<()>,
}

/// The reconciler; cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    pub(crate) inner: Arc<Inner>,
}

impl Reconciler {
    /// Builds a reconciler over the configured hosts and records them in the
    /// store. Connections open lazily.
    pub async fn new(config: Config, store: Store) -> Result<Reconciler, StoreError> {
        let now = now_ms();
        for host in &config.hosts {
            store.upsert_host(&host.name, &host.uri, now).await?;
        }
        let instance = store.instance_id().await?;
        let owners = Mutex::new(crate::hosts::owner::Owners::new(
            instance.clone(),
            &config.reconcile.adopt_instances,
        ));
        let hosts = config
            .hosts
            .iter()
            .map(|h| (h.name.clone(), Host::new(h.clone())))
            .collect();
        let backoff = Backoff::new(
            config.reconcile.backoff.get().as_millis() as i64,
            BACKOFF_CAP_MS,
        );
        Ok(Reconciler {
            inner: Arc::new(Inner {
                holder: lease_holder(),
                owners,
                instance,
                config,
                store,
                hosts,
                state: Mutex::new(State {
                    revision: None,
                    restored: false,
                    held: None,
                    last_rejection: None,
                    applied_at: None,
                    rejected_at: None,
                    backoff,
                    orphans_seen: HashMap::new(),
                    collecting: HashSet::new(),
                    busy: HashSet::new(),
                    fetch: FetchState::default(),
                }),
                wake: Notify::new(),
                tasks: Mutex::new(JoinSet::new()),
                passes: std::sync::atomic::AtomicU64::new(0),
                metrics: crate::metrics::Metrics::new(),
                fetching: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Takes or renews the reconciler lease. `Ok(None)`: this process holds
    /// it; `Ok(Some(lease))`: another labpool does. It lasts three resyncs, so
    /// a labpool that dies loses it within that time, at once if it ran on
    /// this machine (its process is gone).
    pub async fn take_lease(&self) -> Result<Option<crate::store::Lease>, StoreError> {
        let store = &self.inner.store;
        let now = now_ms();
        let ttl = (self.inner.config.reconcile.resync.get().as_millis() as i64 * 3).max(3_000);
        let dead = store
            .lease(LEASE)
            .await?
            .map(|l| l.holder)
            .filter(|h| *h != self.inner.holder && holder_is_dead(h));
        let lease = store
            .acquire_lease(LEASE, &self.inner.holder, now, now + ttl, dead.as_deref())
            .await?;
        Ok((lease.holder != self.inner.holder).then_some(lease))
    }

    /// Gives the lease up (clean shutdown), so another labpool may start at once.
    pub async fn release_lease(&self) -> Result<(), StoreError> {
        self.inner
            .store
            .release_lease(LEASE, &self.inner.holder)
            .await
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// This labpool's instance id (its store's): every mark it makes names it.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The instances whose objects count as this labpool's, as of the last
    /// [`Reconciler::refresh_owners`].
    pub fn owners(&self) -> crate::hosts::owner::Owners {
        self.inner.owners.lock().expect("owners").clone()
    }

    /// Reads the adopted instances again: the configuration's and those
    /// `labpool adopt` recorded in the store (never this store's own).
    pub async fn refresh_owners(&self) -> Result<crate::hosts::owner::Owners, StoreError> {
        let mut adopted = self.inner.config.reconcile.adopt_instances.clone();
        for (instance, _) in self.inner.store.adopted_instances().await? {
            if !adopted.contains(&instance) {
                adopted.push(instance);
            }
        }
        adopted.retain(|i| *i != self.inner.instance);
        let owners = crate::hosts::owner::Owners::new(self.inner.instance.clone(), &adopted);
        *self.inner.owners.lock().expect("owners") = owners.clone();
        Ok(owners)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn host(&self, name: &str) -> Option<&Arc<Host>> {
        self.inner.hosts.get(name)
    }

    /// Says, once at start, which Docker hosts do not answer and what that
    /// means: their container courses wait, VM courses run as usual. (The
    /// reconciler keeps trying them every pass.) Returns those hosts' names.
    pub async fn check_engines(&self) -> Vec<String> {
        let mut down = Vec::new();
        for host in self.inner.hosts.values() {
            if host.runtime() != crate::course::spec::Runtime::Container {
                continue;
            }
            let answer = match host.engine().await {
                Ok(engine) => engine
                    .ping()
                    .await
                    .map(|_| ())
                    .map_err(|e| crate::hosts::docker::error(host.name(), "ping", e)),
                Err(e) => Err(e),
            };
            if let Err(e) = answer {
                tracing::warn!(
                    host = host.name(),
                    uri = %host.config.uri,
                    error = %e,
                    "Docker host not reachable: container courses wait for it, VM courses run as usual (on a dev machine, `deploy/dev/docker start` starts Docker)"
                );
                down.push(host.name().to_string());
            }
        }
        down
    }

    /// The metrics of this labpool (reconciler, launches, terminals).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// How many passes have completed in this process.
    pub fn passes(&self) -> u64 {
        self.inner.passes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks for a pass now.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// After a restart, VMs left `creating` or `booting` have nobody watching
    /// their boot any more: they are failed, so the next pass destroys them
    /// (domain, volume and row) and boots replacements. Assigned VMs and
    /// their sessions are untouched. Only one reconciler may run at a time.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let store = &self.inner.store;
        let now = now_ms();
        let mut n = 0;
        for vm in store.vms().await? {
            if matches!(vm.state, VmState::Creating | VmState::Booting)
                && store
                    .transition_vm(
                        &vm.id,
                        &[VmState::Creating, VmState::Booting],
                        VmState::Failed,
                        now,
                        Some("interrupted: labpool restarted during its boot"),
                    )
                    .await?
            {
                n += 1;
                self.event(
                    now,
                    "boot-interrupted",
                    Some(&vm.course),
                    Some(&vm.host),
                    Some(&vm.id),
                    format!("was {} when labpool stopped; replaced", vm.state),
                )
                .await;
            }
        }
        if n > 0 {
            tracing::info!(vms = n, "recovered interrupted boots as failed");
        }
        Ok(n)
    }

    /// The desired courses: the revision in force (restored from the store
    /// after a restart, so a source that does not answer changes nothing).
    /// A new valid revision replaces it unless it removes too much
    /// ([`source::hold`]): then it is held until an admin confirms it or a
    /// later revision removes less.
    async fn refresh_source(&self, now: i64) -> Result<Vec<Course>, StoreError> {
        self.restore_applied().await?;
        let loaded = self.load_source(now).await;
        // Decide under the lock, act (store writes) after it is released.
        let (candidate, rejection) = {
            let mut state = self.inner.state.lock().expect("state");
            match loaded {
                None => (None, None),
                Some(loaded) => match loaded {
                    Ok(revision) => {
                        state.last_rejection = None;
                        state.rejected_at = None;
                        (Some(revision), None)
                    }
                    Err(rejected) => {
                        let text: Vec<String> =
                            rejected.diagnostics.iter().map(|d| d.to_string()).collect();
                        let text = text.join("\n");
                        if state.last_rejection.as_deref() == Some(text.as_str()) {
                            (None, None)
                        } else {
                            state.last_rejection = Some(text.clone());
                            state.rejected_at = Some(now);
                            (None, Some((rejected.folder, text)))
                        }
                    }
                },
            }
        };
        if let Some((folder, text)) = rejection {
            tracing::warn!(
                folder = %folder.display(),
                "course revision rejected; keeping the last good one:\n{text}"
            );
            self.event(now, "revision-rejected", None, None, None, text)
                .await;
        }
        // Nothing new read: a revision held earlier may have been confirmed.
        let candidate = match candidate {
            Some(c) => Some(c),
            None => self.inner.state.lock().expect("state").held.clone(),
        };
        if let Some(revision) = candidate {
            self.consider(revision, now).await?;
        }
        let status = self.source_status();
        self.inner
            .store
            .set_source_status(&status.to_string(), now)
            .await?;
        let current = self.inner.state.lock().expect("state").revision.clone();
        match current {
            Some(r) => Ok(r.courses),
            // Nothing applied, ever (or a store of an older labpool).
            None => self.applied_courses().await,
        }
    }

    /// Once per process: the revision in force as the store recorded it, so
    /// status, `/readyz` and the hold compare with it before the source
    /// answers (a forge outage during a restart changes nothing).
    async fn restore_applied(&self) -> Result<(), StoreError> {
        if self.inner.state.lock().expect("state").restored {
            return Ok(());
        }
        let store = &self.inner.store;
        let restored = match store.source_revision("applied").await? {
            Some(row) => Some((
                Revision {
                    id: row.revision,
                    courses: self.applied_courses().await?,
                    commit: row
                        .commit_json
                        .as_deref()
                        .and_then(|j| serde_json::from_str(j).ok()),
                },
                row.at,
            )),
            // A store of an older labpool: its newest course rows.
            None => {
                let rows = store.applied_courses().await?;
                rows.first().map(|first| {
                    (
                        Revision {
                            id: first.revision.clone(),
                            courses: rows
                                .iter()
                                .filter_map(|r| serde_json::from_str(&r.spec_json).ok())
                                .collect(),
                            commit: None,
                        },
                        rows.iter().map(|r| r.updated_at).max().unwrap_or_default(),
                    )
                })
            }
        };
        let mut state = self.inner.state.lock().expect("state");
        state.restored = true;
        if state.revision.is_none()
            && let Some((revision, at)) = restored
        {
            tracing::info!(revision = %revision.id, courses = revision.courses.len(), "the revision in force, as the store has it");
            state.revision = Some(revision);
            state.applied_at = Some(at);
        }
        Ok(())
    }

    /// A valid revision read from the source (or held earlier): applied,
    /// held, or nothing to do when it is the one in force.
    async fn consider(&self, revision: Revision, now: i64) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let current = self.inner.state.lock().expect("state").revision.clone();
        if current.as_ref().map(|r| &r.id) == Some(&revision.id) {
            // Back to the revision in force (a revert): nothing is held.
            self.inner.state.lock().expect("state").held = None;
            if let Some(held) = store.clear_held_revision().await? {
                self.event(
                    now,
                    "revision-hold-cleared",
                    None,
                    None,
                    None,
                    format!(
                        "revision {} is no longer held: the source is back on {}, the revision in force",
                        held.revision, revision.id
                    ),
                )
                .await;
            }
            return Ok(());
        }
        let before = current.as_ref().map_or(&[][..], |r| &r.courses[..]);
        let removal = source::hold::Removal::between(before, &revision.courses);
        let crosses = removal.crosses(&self.inner.config.source.hold);
        let held_row = store.source_revision("held").await?;
        let confirmed_by = held_row
            .as_ref()
            .filter(|h| h.revision == revision.id)
            .and_then(|h| h.confirmed_by.clone());
        match (crosses, confirmed_by) {
            (Some(reason), None) => {
                let commit_json = revision
                    .commit
                    .as_ref()
                    .map(|c| serde_json::to_string(c).expect("commit serializes"));
                let detail = serde_json::json!({ "removal": removal, "reason": reason });
                let new = store
                    .hold_revision(
                        &revision.id,
                        commit_json.as_deref(),
                        &detail.to_string(),
                        now,
                    )
                    .await?;
                if new {
                    let message = format!(
                        "revision {}{} {}: {reason}; the pools stay on {} until an admin confirms it (labpool revision confirm {})",
                        revision.id,
                        revision
                            .commit
                            .as_ref()
                            .map(|c| format!(" \"{}\" by {}", c.subject, c.author))
                            .unwrap_or_default(),
                        removal.describe(),
                        current.as_ref().map_or("nothing", |r| r.id.as_str()),
                        revision.id
                    );
                    tracing::warn!(revision = %revision.id, removed = ?removal.removed, "revision held: {message}");
                    self.event(now, "revision-held", None, None, None, message)
                        .await;
                }
                self.inner.state.lock().expect("state").held = Some(revision);
            }
            (crosses, confirmed_by) => {
                let superseded = held_row.filter(|h| h.revision != revision.id);
                store.clear_held_revision().await?;
                if let Some(old) = superseded {
                    self.event(
                        now,
                        "revision-hold-superseded",
                        None,
                        None,
                        None,
                        format!(
                            "held revision {} is superseded by {}, which {}{}",
                            old.revision,
                            revision.id,
                            removal.describe(),
                            if crosses.is_some() {
                                " (confirmed)"
                            } else {
                                ": applied"
                            }
                        ),
                    )
                    .await;
                }
                self.apply_revision(&revision, confirmed_by.as_deref(), now)
                    .await?;
                let mut state = self.inner.state.lock().expect("state");
                state.held = None;
                state.revision = Some(revision);
                state.applied_at = Some(now);
            }
        }
        Ok(())
    }

    /// The courses of the revision applied last, as the store has them:
    /// the rows of the recorded revision in force (none, when it has no
    /// courses); for a store of an older labpool, the newest rows.
    async fn applied_courses(&self) -> Result<Vec<Course>, StoreError> {
        let store = &self.inner.store;
        let rows = match store.source_revision("applied").await? {
            Some(applied) => store
                .courses()
                .await?
                .into_iter()
                .filter(|r| r.revision == applied.revision)
                .collect(),
            None => store.applied_courses().await?,
        };
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_str(&r.spec_json).ok())
            .collect())
    }

    /// The source as `labpool status` shows it.
    fn source_status(&self) -> serde_json::Value {
        let config = &self.inner.config;
        let state = self.inner.state.lock().expect("state");
        let (kind, location, follows) = match &config.source.git {
            Some(git) => (
                "git",
                format!("{} ({})", git.url, git.path.display()),
                Some(match git.target() {
                    crate::config::GitTarget::Branch(b) => format!("branch {b}"),
                    crate::config::GitTarget::Tag(t) => format!("tag {t}"),
                    crate::config::GitTarget::Commit(c) => format!("commit {c}"),
                }),
            ),
            None => ("folder", config.source.folder.display().to_string(), None),
        };
        serde_json::json!({
            "kind": kind,
            "location": location,
            "follows": follows,
            "applied": state.revision.as_ref().map(|r| serde_json::json!({
                "id": r.id,
                "commit": r.commit,
                "courses": r.courses.len(),
                "at": state.applied_at,
            })),
            "last_fetch_at": state.fetch.last_fetch_at,
            "last_fetch_error": state.fetch.last_error,
            "rejected": state.last_rejection.as_ref().map(|text| serde_json::json!({
                "commit": state.fetch.loaded,
                "at": state.rejected_at,
                "diagnostics": text.lines().collect::<Vec<_>>(),
            })),
        })
    }

    /// Reads the source: the folder every pass; a Git remote when its fetch
    /// is due (its interval, or sooner after [`Reconciler::fetch_now`]).
    /// `None`: nothing new to look at.
    async fn load_source(&self, now: i64) -> Option<Result<Revision, source::Rejected>> {
        let config = &self.inner.config;
        let Some(git) = &config.source.git else {
            return Some(source::load_folder(config));
        };
        if self.inner.state.lock().expect("state").fetch.next_at > now {
            return None;
        }
        // Another pass is fetching: its result is as new as ours would be.
        let Ok(_fetching) = self.inner.fetching.try_lock() else {
            return None;
        };
        self.inner.state.lock().expect("state").fetch.started += 1;
        let mirror = source::remote::Mirror::new(git);
        let m = mirror.clone();
        let fetched = tokio::task::spawn_blocking(move || m.fetch())
            .await
            .unwrap_or_else(|e| {
                Err(source::remote::FetchError {
                    url: git.url.clone(),
                    message: e.to_string(),
                    moved_tag: false,
                })
            });
        let interval = git.interval.get().as_millis() as i64;
        self.inner.state.lock().expect("state").fetch.last_fetch_at = Some(now);
        let commit = match fetched {
            Ok(fetched) => {
                if let Some(from) = &fetched.tag_moved_from {
                    let message = format!(
                        "tag `{}` was moved on the remote from {from} to {}; following it (source.git.follow_moved_tags)",
                        git.tag.as_deref().unwrap_or_default(),
                        fetched.commit
                    );
                    tracing::warn!("{message}");
                    self.event(now, "tag-moved", None, None, None, message)
                        .await;
                }
                let commit = fetched.commit;
                let mut state = self.inner.state.lock().expect("state");
                state.fetch.failures = 0;
                state.fetch.next_at = now + interval;
                state.fetch.last_error = None;
                if state.fetch.loaded.as_deref() == Some(commit.as_str()) {
                    return None;
                }
                commit
            }
            Err(e) => {
                // Retry sooner than the interval, backing off: 5 s, 10 s, …
                let message = e.to_string();
                let new_error = {
                    let mut state = self.inner.state.lock().expect("state");
                    state.fetch.failures += 1;
                    let wait =
                        (5_000_i64 << state.fetch.failures.min(10).saturating_sub(1)).min(interval);
                    state.fetch.next_at = now + wait;
                    let new = state.fetch.last_error.as_deref() != Some(message.as_str());
                    state.fetch.last_error = Some(message.clone());
                    new
                };
                if new_error {
                    tracing::warn!(error = %message, "fetch failed; keeping the last good revision");
                    let kind = if e.moved_tag {
                        "tag-moved"
                    } else {
                        "fetch-failed"
                    };
                    self.event(now, kind, None, None, None, message).await;
                }
                return None;
            }
        };
        let (path, cfg, id) = (mirror.path.clone(), config.clone(), commit.clone());
        let folder = git.path.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            source::git::load_git(&path, &id, Some(&folder), Some(&cfg))
        })
        .await;
        self.inner.state.lock().expect("state").fetch.loaded = Some(commit.clone());
        match loaded {
            Ok(Ok(result)) => Some(result),
            // A commit without the course folder is a rejected revision
            // (never "no courses"): the reason names the folder.
            Ok(Err(source::git::GitError::NoFolder { commit, folder })) => {
                Some(Err(source::Rejected {
                    diagnostics: vec![crate::diagnostic::Diagnostic::new(
                        &folder,
                        crate::diagnostic::Position::START,
                        crate::diagnostic::Code::IoError,
                        format!(
                            "commit {commit} has no folder `{}` (source.git.path); to remove every course, leave the folder with no course files (such a revision is held until an admin confirms it)",
                            folder.display()
                        ),
                    )],
                    folder,
                }))
            }
            Ok(Err(e)) => {
                let message = format!(
                    "{e}: {}",
                    std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                );
                tracing::warn!(commit = %commit, error = %message, "cannot read the fetched commit");
                self.event(now, "fetch-failed", None, None, None, message)
                    .await;
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "loading the fetched commit panicked");
                None
            }
        }
    }

    /// Makes the next pass fetch the Git source at once (an admin's resync).
    pub fn fetch_now(&self) {
        self.inner.state.lock().expect("state").fetch.next_at = 0;
        self.wake();
    }

    /// A webhook's request for a fetch. The first is served at once; those
    /// within `webhook_min_interval` of it fold into one fetch due at the end
    /// of that interval, so a burst (or a replayed delivery) costs at most
    /// two fetches per interval, and the last push is never missed. Returns
    /// when the fetch it joined is due (unix ms).
    pub fn request_fetch(&self) -> i64 {
        let Some(git) = &self.inner.config.source.git else {
            return 0;
        };
        let min = git.webhook_min_interval.get().as_millis() as i64;
        let now = now_ms();
        let changed = {
            let mut state = self.inner.state.lock().expect("state");
            let fetch = &mut state.fetch;
            let due = match fetch.requested_at {
                // A fetch is already scheduled: join it.
                Some(at) if at > now => at,
                Some(at) if now < at + min => at + min,
                _ => now,
            };
            fetch.requested_at = Some(due);
            let earlier = due < fetch.next_at;
            fetch.next_at = fetch.next_at.min(due);
            if earlier { Some(due) } else { None }
        };
        // Only a sooner fetch needs the loop to look again (one wake per
        // fold, not one per request).
        match changed {
            Some(due) => {
                self.wake();
                due
            }
            None => self.inner.state.lock().expect("state").fetch.next_at,
        }
    }

    /// Git fetches this process started (for tests and status).
    pub fn fetches_started(&self) -> u64 {
        self.inner.state.lock().expect("state").fetch.started
    }

    /// Records a valid revision's courses in the store, and the revision as
    /// the one in force.
    async fn apply_revision(
        &self,
        revision: &Revision,
        confirmed_by: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let store = &self.inner.store;
        for course in &revision.courses {
            let catalog = self.inner.config.catalog_entry(course);
            store
                .upsert_course(&CourseRow {
                    name: course.name.to_string(),
                    title: course.title.clone(),
                    revision: revision.id.clone(),
                    spec_hash: desired::spec_hash(course, catalog),
                    spec_json: serde_json::to_string(course).expect("course serializes"),
                    conditions_json: "{}".into(),
                    updated_at: now,
                })
                .await?;
        }
        let names: Vec<&str> = revision.courses.iter().map(|c| c.name.as_str()).collect();
        let commit_json = revision
            .commit
            .as_ref()
            .map(|c| serde_json::to_string(c).expect("commit serializes"));
        store
            .set_applied_revision(
                &revision.id,
                commit_json.as_deref(),
                &serde_json::json!({ "courses": names }).to_string(),
                now,
            )
            .await?;
        tracing::info!(revision = %revision.id, courses = ?names, confirmed_by, "revision applied");
        self.event(
            now,
            "revision-applied",
            None,
            None,
            None,
            format!(
                "{}{} with {} course(s): {}{}",
                revision.id,
                revision
                    .commit
                    .as_ref()
                    .map(|c| format!(" \"{}\" by {}", c.subject, c.author))
                    .unwrap_or_default(),
                names.len(),
                names.join(", "),
                confirmed_by
                    .map(|by| format!(" (held, confirmed by {by})"))
                    .unwrap_or_default()
            ),
        )
        .await;
        Ok(())
    }

    /// Desired courses at `now`, schedule and backoff applied.
    fn desired(&self, courses: &[Course], now: i64) -> Vec<DesiredCourse> {
        let config = &self.inner.config;
        let state = self.inner.state.lock().expect("state");
        let at = Utc
            .timestamp_millis_opt(now)
            .single()
            .unwrap_or_else(Utc::now);
        courses
            .iter()
            .map(|c| {
                let (warm, in_class) = desired::warm_target(c, at, config.reconcile.prewarm.get());
                let size = c.size();
                DesiredCourse {
                    name: c.name.to_string(),
                    spec_hash: desired::spec_hash(c, config.catalog_entry(c)),
                    warm,
                    max: c.pool.max,
                    vcpus: size.vcpus,
                    memory: size.memory.as_bytes(),
                    image: c.image.as_ref().map(|i| i.to_string()),
                    runtime: c.runtime,
                    in_class,
                    ready_timeout_ms: c.readiness.timeout.get().as_millis() as i64,
                    idle_ms: c.session.idle.get().as_millis() as i64,
                    backoff_until: state.backoff.until(c.name.as_str()),
                }
            })
            .collect()
    }

    /// [`Reconciler::desired`] plus launches waiting for a VM: each adds
    /// one to its course's warm target (the planner still caps at `max`),
    /// so an empty pool provisions on demand.
    async fn desired_with_demand(
        &self,
        courses: &[Course],
        now: i64,
    ) -> Result<Vec<DesiredCourse>, StoreError> {
        let waiting: HashMap<String, i64> = self
            .inner
            .store
            .waiting_by_course(now)
            .await?
            .into_iter()
            .collect();
        let mut desired = self.desired(courses, now);
        for course in &mut desired {
            let extra = waiting.get(&course.name).copied().unwrap_or(0);
            course.warm = course
                .warm
                .saturating_add(u32::try_from(extra).unwrap_or(u32::MAX));
        }
        Ok(desired)
    }

    fn policy(&self) -> Policy {
        Policy {
            orphan_grace_ms: self.inner.config.reconcile.orphan_grace.get().as_millis() as i64,
            default_ready_timeout_ms: 5 * 60 * 1000,
        }
    }

    /// The revision held back, if one is (or, for a folder source, would
    /// be at the next pass): what it removes and why. Reads only.
    pub async fn pending_hold(&self) -> Result<Option<source::hold::Held>, StoreError> {
        let store = &self.inner.store;
        let held = store.source_revision("held").await?;
        if self.inner.config.source.git.is_some() {
            return Ok(held.as_ref().map(source::hold::Held::from_row));
        }
        let Ok(revision) = source::load_folder(&self.inner.config) else {
            return Ok(None);
        };
        let applied = store.source_revision("applied").await?;
        if applied.as_ref().map(|a| &a.revision) == Some(&revision.id) {
            return Ok(None);
        }
        let before = self.applied_courses().await?;
        let removal = source::hold::Removal::between(&before, &revision.courses);
        let Some(reason) = removal.crosses(&self.inner.config.source.hold) else {
            return Ok(None);
        };
        let confirmed = held.filter(|h| h.revision == revision.id);
        Ok(Some(source::hold::Held {
            id: revision.id,
            commit: None,
            removal,
            reason,
            at: confirmed.as_ref().map_or_else(now_ms, |h| h.at),
            confirmed_by: confirmed.as_ref().and_then(|h| h.confirmed_by.clone()),
            confirmed_at: confirmed.as_ref().and_then(|h| h.confirmed_at),
        }))
    }

    /// Plans without acting or writing anything: what a pass would do now,
    /// and the hosts that did not answer (name, why).
    pub async fn dry_run(&self) -> Result<(Plan, Vec<(String, String)>), StoreError> {
        let now = now_ms();
        let courses = match &self.inner.config.source.git {
            // A Git source: what was fetched and applied last.
            Some(_) => self.applied_courses().await?,
            None => match source::load_folder(&self.inner.config) {
                // A folder that would be held: `serve` stays on what it applied.
                Ok(_)
                    if self
                        .pending_hold()
                        .await?
                        .is_some_and(|h| h.confirmed_by.is_none()) =>
                {
                    self.applied_courses().await?
                }
                Ok(r) => r.courses,
                // What `serve` runs on while the folder is broken; read only.
                Err(_) => self.applied_courses().await?,
            },
        };
        // Orphans count as first seen now: a dry run collects none.
        let world = self.observe_world(now, &mut HashMap::new()).await?;
        let mut plan = plan::plan(
            &self.desired_with_demand(&courses, now).await?,
            &world.observed,
            &self.policy(),
        );
        plan.actions.extend(plan::adopt_legacy(&world.legacy_known));
        let down = world
            .host_errors
            .into_iter()
            .filter_map(|(host, error)| error.map(|e| (host, e)))
            .collect();
        Ok((plan, down))
    }

    /// Looks at every host and the store (see [`observe::observe`]).
    async fn observe_world(
        &self,
        now: i64,
        orphans_seen: &mut HashMap<(String, OrphanKind, String), i64>,
    ) -> Result<observe::World, StoreError> {
        let known = self.inner.store.courses().await?;
        let owners = self.refresh_owners().await?;
        let hosts: Vec<Arc<Host>> = self.inner.hosts.values().cloned().collect();
        // A removed course's students still end idle, by its last file.
        let idle: BTreeMap<String, i64> = known
            .iter()
            .filter_map(|r| {
                let c = serde_json::from_str::<Course>(&r.spec_json).ok()?;
                Some((r.name.clone(), c.session.idle.get().as_millis() as i64))
            })
            .collect();
        let mut world = observe::observe(
            &self.inner.store,
            &hosts,
            self.inner.config.reconcile.boots_per_host,
            known.into_iter().map(|r| r.name).collect(),
            now,
            orphans_seen,
            &owners,
        )
        .await?;
        world.observed.stored_idle_ms = idle;
        Ok(world)
    }

    /// One pass: source, observe, plan, execute. Actions run in the
    /// background; [`Reconciler::settle`] waits for them. Every log line of
    /// the pass, and of the actions it starts, carries its number (failed
    /// passes count too, so no two passes share one).
    #[tracing::instrument(name = "pass", skip(self), fields(pass = self.inner.metrics.passes_run() + 1))]
    pub async fn pass(&self) -> Result<PassReport, StoreError> {
        let started = std::time::Instant::now();
        let report = self.pass_steps().await;
        self.inner.metrics.pass(report.is_ok(), started.elapsed());
        report
    }

    async fn pass_steps(&self) -> Result<PassReport, StoreError> {
        let now = now_ms();
        let courses = self.refresh_source(now).await?;
        let mut seen = std::mem::take(&mut self.inner.state.lock().expect("state").orphans_seen);
        let world = self.observe_world(now, &mut seen).await;
        self.inner.state.lock().expect("state").orphans_seen = seen;
        let world = world?;
        self.record_host_status(&world.host_errors, now).await?;
        self.record_foreign(&world.foreign, now).await?;
        self.inner.store.prune_launches(now).await?;
        let retention = self
            .inner
            .config
            .reconcile
            .event_retention
            .get()
            .as_millis() as i64;
        self.inner
            .store
            .prune_events(now.saturating_sub(retention), EVENT_PRUNE_BATCH)
            .await?;
        let desired = self.desired_with_demand(&courses, now).await?;
        let mut plan = plan::plan(&desired, &world.observed, &self.policy());
        plan.actions.extend(plan::adopt_legacy(&world.legacy_known));
        let by_name: HashMap<&str, &Course> =
            courses.iter().map(|c| (c.name.as_str(), c)).collect();
        let started = execute::execute(self, &plan, &world, &by_name, now).await?;
        self.record_conditions(&plan, now).await?;

        let revision = self
            .inner
            .state
            .lock()
            .expect("state")
            .revision
            .as_ref()
            .map(|r| r.id.clone());
        self.inner
            .passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(PassReport {
            revision,
            plan,
            started,
        })
    }

    /// Waits until every action started so far has finished (boots included).
    pub async fn settle(&self) {
        loop {
            let next = {
                let mut tasks = self.inner.tasks.lock().expect("tasks");
                if tasks.is_empty() {
                    return;
                }
                std::mem::take(&mut *tasks)
            };
            next.join_all().await;
        }
    }

    /// Runs passes until `shutdown` resolves: on every wake and at least
    /// every `resync` (plus up to 10% jitter, so replicas and hosts are not
    /// hit in lockstep).
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        let resync = self.inner.config.reconcile.resync.get();
        tokio::pin!(shutdown);
        // A course folder is watched, so an edit applies within moments; a
        // watch that cannot start (inotify limits) leaves the resync timer.
        let _watch = match &self.inner.config.source.git {
            Some(_) => None,
            None => {
                let me = self.clone();
                let folder = &self.inner.config.source.folder;
                match source::watch::watch_folder(folder, move || me.wake()) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::warn!(folder = %folder.display(), error = %e, "cannot watch the course folder; changes apply at the next resync");
                        None
                    }
                }
            }
        };
        let mut leading = false;
        loop {
            let started = std::time::Instant::now();
            match self.take_lease().await {
                Ok(None) if !leading => {
                    leading = true;
                    tracing::info!(holder = %self.inner.holder, "reconciler lease taken");
                    if let Err(e) = self.recover().await {
                        tracing::error!(error = %e, "recovery failed");
                    }
                }
                Ok(None) => {}
                Ok(Some(other)) => {
                    if leading {
                        tracing::warn!(holder = %other.holder, "reconciler lease lost; standing by");
                    } else {
                        tracing::info!(holder = %other.holder, "another labpool reconciles this store; standing by");
                    }
                    leading = false;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot reach the store for the lease");
                    leading = false;
                }
            }
            let outcome = if leading {
                Some(self.pass().await)
            } else {
                None
            };
            match outcome {
                None => {}
                Some(Ok(report)) if !report.plan.is_empty() => {
                    tracing::info!(
                        actions = report.plan.actions.len(),
                        started = report.started,
                        took_ms = started.elapsed().as_millis() as u64,
                        "pass"
                    );
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::error!(error = %e, source = ?std::error::Error::source(&e), "pass failed")
                }
            }
            let jitter = resync.mul_f64(rand::random::<f64>() * 0.1);
            // A Git source due for its fetch before the resync wakes the loop.
            let mut pause = resync + jitter;
            if self.inner.config.source.git.is_some() && leading {
                let due = self.inner.state.lock().expect("state").fetch.next_at - now_ms();
                pause = pause.min(Duration::from_millis(due.max(0) as u64));
            }
            tokio::select! {
                _ = &mut shutdown => {
                    if leading {
                        let _ = self.release_lease().await;
                    }
                    break;
                }
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
            // Coalesce a burst of wakes (several boots finishing) into one pass.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn record_host_status(
        &self,
        errors: &[(String, Option<String>)],
        now: i64,
    ) -> Result<(), StoreError> {
        for (host, error) in errors {
            let up = error.is_none();
            if self
                .inner
                .store
                .set_host_status(host, up, error.as_deref(), now)
                .await?
            {
                let (kind, message) = match error {
                    None => ("host-up", "answers again".to_string()),
                    Some(e) => ("host-down", e.clone()),
                };
                if up {
                    tracing::info!(host, "host is up");
                } else {
                    tracing::warn!(host, error = %message, "host is down");
                }
                self.event(now, kind, None, Some(host), None, message).await;
            }
        }
        Ok(())
    }

    /// Records what each host that answered holds of other instances; a
    /// host and instance seen for the first time get one event (and a log
    /// line), not one per pass.
    async fn record_foreign(
        &self,
        foreign: &[(String, Vec<(String, i64)>)],
        now: i64,
    ) -> Result<(), StoreError> {
        for (host, seen) in foreign {
            let new = self
                .inner
                .store
                .set_foreign_objects(host, seen, now)
                .await?;
            for instance in new {
                let objects = seen
                    .iter()
                    .find(|(i, _)| *i == instance)
                    .map_or(0, |(_, n)| *n);
                let whose = if instance == crate::hosts::owner::LEGACY {
                    "an earlier labpool version's, unknown to this store".to_string()
                } else {
                    format!("labpool instance {instance}'s")
                };
                tracing::warn!(
                    host,
                    instance,
                    objects,
                    "objects of another labpool on this host; left alone"
                );
                self.event(
                    now,
                    "foreign-objects",
                    None,
                    Some(host),
                    None,
                    format!("{objects} object(s) marked as {whose}: reported, never touched (this instance is {})", self.instance()),
                )
                .await;
            }
        }
        Ok(())
    }

    async fn record_conditions(&self, plan: &Plan, now: i64) -> Result<(), StoreError> {
        for counts in &plan.courses {
            let condition = execute::condition(counts);
            let json = serde_json::json!({ "counts": counts, "condition": condition });
            if counts.desired {
                self.inner
                    .store
                    .set_course_conditions(&counts.course, &json.to_string(), now)
                    .await?;
            } else {
                // A removed course still draining: target 0 and its
                // students, never the target it had (its row keeps its
                // revision and time: it is not part of the applied one).
                self.inner
                    .store
                    .set_removed_course_conditions(&counts.course, &json.to_string())
                    .await?;
            }
        }
        Ok(())
    }

    /// Stores and logs an event; a store failure here is logged, not fatal.
    pub(crate) async fn event(
        &self,
        at: i64,
        kind: &str,
        course: Option<&str>,
        host: Option<&str>,
        vm: Option<&str>,
        message: String,
    ) {
        let event = NewEvent {
            at,
            kind: kind.to_string(),
            course: course.map(str::to_string),
            host: host.map(str::to_string),
            vm: vm.map(str::to_string),
            message,
        };
        if let Err(e) = self.inner.store.record_event(&event).await {
            tracing::error!(error = %e, kind, "could not record event");
        }
    }
}
