//! labpool's Prometheus metrics (served by `GET /metrics`, `http::metrics`).
//!
//! Two kinds of series:
//!
//! - **Events**, counted where they happen: launches, refusals, reconcile
//!   passes and actions, boots. Counters and histograms only, so the launch
//!   path pays an atomic add and a label lookup, never a store query.
//! - **State** (VMs by state, live sessions, waiting launches, hosts up, the
//!   revision's age, open terminals), read from the store at scrape time
//!   into a registry made for that one scrape: a gauge never goes stale (a
//!   removed course's series simply stop), nothing has to keep gauges in step
//!   with the store, and a standby labpool reports the leader's state.
//!
//! Labels come only from fixed sets in this file (outcomes, refusal reasons,
//! action kinds, VM states) or from names in labpool's configuration and
//! course files (course and host names, validated when loaded); never from a
//! request. Each `Metrics` has a registry of its own, never the process-wide
//! default, so several labpools in one process (the tests) do not collide.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::store::{Store, StoreError, VmState};

/// The Content-Type of the text exposition format this module writes.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Launch latency: a warm claim takes milliseconds, a platform JWKS fetch
/// or a busy store can take seconds.
const LAUNCH_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One reconcile pass: tens of milliseconds on a quiet store, seconds when a
/// host is slow to list its domains.
const PASS_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Create started to proven ready: seconds for a tiny guest, minutes for a
/// desktop image (the readiness timeout's default is 5 minutes).
const BOOT_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
];

/// Why launches are refused: the `kind`s of `lti::Refusal`, plus
/// `no-course` (nothing says which course the link opens). The
/// `labpool_launch_refusals_total` series of each exist from the start.
pub const REFUSAL_REASONS: &[&str] = &[
    "forged",
    "expired",
    "replayed",
    "state",
    "unregistered",
    "invalid",
    "platform-unreachable",
    "internal",
    "no-course",
    "role",
    "course-scope",
    "user-limit",
];

/// What a launch request led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Claimed a warm VM.
    Warm,
    /// Back to the key's live session.
    Resumed,
    /// No warm VM: a wait ticket, the pool grows for it.
    OnDemand,
    /// The course is at its max.
    Full,
    /// Refused (see the refusal counter for why).
    Refused,
    /// An instructor's Deep Linking request: the course picker.
    DeepLink,
    /// The browser kept no cookie: the platform-storage check page, after
    /// which the same launch is posted again.
    StorageCheck,
}

impl Outcome {
    /// The outcomes that decide a lab launch for a course.
    pub const DECIDED: [Outcome; 4] = [
        Outcome::Warm,
        Outcome::Resumed,
        Outcome::OnDemand,
        Outcome::Full,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Warm => "warm",
            Outcome::Resumed => "resumed",
            Outcome::OnDemand => "on_demand",
            Outcome::Full => "full",
            Outcome::Refused => "refused",
            Outcome::DeepLink => "deep_link",
            Outcome::StorageCheck => "storage_check",
        }
    }
}

/// A reconcile action, as `labpool_actions_total` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Create,
    Destroy,
    CollectOrphan,
    ForgetCourse,
    /// A legacy domain re-marked with this instance.
    Adopt,
}

impl ActionKind {
    pub const ALL: [ActionKind; 5] = [
        ActionKind::Create,
        ActionKind::Destroy,
        ActionKind::CollectOrphan,
        ActionKind::ForgetCourse,
        ActionKind::Adopt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Create => "create",
            ActionKind::Destroy => "destroy",
            ActionKind::CollectOrphan => "collect_orphan",
            ActionKind::ForgetCourse => "forget_course",
            ActionKind::Adopt => "adopt",
        }
    }
}

fn result(ok: bool) -> &'static str {
    if ok { "ok" } else { "failed" }
}

/// The event series of one labpool; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    launches: IntCounterVec,
    wait_claims: IntCounterVec,
    refusals: IntCounterVec,
    launch_duration: HistogramVec,
    passes: IntCounterVec,
    pass_duration: HistogramVec,
    actions: IntCounterVec,
    boot: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("valid histogram");
            registry.register(Box::new(h.clone())).expect("unique name");
            h
        };
        let inner = Inner {
            launches: counter(
                "labpool_launches_total",
                "Lab launches decided, by course and outcome: warm (claimed a warm VM), resumed (back to the live session), on_demand (waits for a VM), full (the course is at its max).",
                &["course", "outcome"],
            ),
            wait_claims: counter(
                "labpool_wait_claims_total",
                "Waiting launches (outcome on_demand) that got their VM, by course.",
                &["course"],
            ),
            refusals: counter(
                "labpool_launch_refusals_total",
                "Launches refused, by reason (forged, expired, replayed, state, unregistered, invalid, platform-unreachable, internal, no-course).",
                &["reason"],
            ),
            launch_duration: histogram(
                "labpool_launch_duration_seconds",
                "Time from a launch request's arrival to labpool's answer (redirect, waiting page or refusal), by outcome.",
                &["outcome"],
                LAUNCH_BUCKETS,
            ),
            passes: counter(
                "labpool_reconcile_passes_total",
                "Reconcile passes run by this labpool, by result (ok, failed).",
                &["result"],
            ),
            pass_duration: histogram(
                "labpool_reconcile_duration_seconds",
                "Time one reconcile pass takes (read source, observe, plan, start actions), by result.",
                &["result"],
                PASS_BUCKETS,
            ),
            actions: counter(
                "labpool_actions_total",
                "Reconcile actions finished, by kind (create, destroy, collect_orphan, forget_course) and result (ok, failed). A create is ok once its VM is warm.",
                &["kind", "result"],
            ),
            boot: histogram(
                "labpool_vm_boot_seconds",
                "Time from a VM's create starting to the VM proven ready (warm), by course.",
                &["course"],
                BOOT_BUCKETS,
            ),
            registry,
        };
        // Series that exist before their first event: a counter first seen
        // at 1 would hide that first event from rate() and increase().
        for reason in REFUSAL_REASONS {
            inner.refusals.with_label_values(&[*reason]);
        }
        for kind in ActionKind::ALL {
            for ok in [true, false] {
                inner
                    .actions
                    .with_label_values(&[kind.as_str(), result(ok)]);
            }
        }
        for ok in [true, false] {
            inner.passes.with_label_values(&[result(ok)]);
        }
        Metrics {
            inner: Arc::new(inner),
        }
    }

    /// A lab launch for `course` was decided (one of [`Outcome::DECIDED`]).
    pub fn launched(&self, course: &str, outcome: Outcome) {
        self.inner
            .launches
            .with_label_values(&[course, outcome.as_str()])
            .inc();
    }

    /// A waiting launch for `course` got its VM.
    pub fn wait_claimed(&self, course: &str) {
        self.inner.wait_claims.with_label_values(&[course]).inc();
    }

    /// A launch was refused. `reason` is a `Refusal::kind` or `no-course`:
    /// a `&'static str`, so it can only be one of the words in the code.
    pub fn refused(&self, reason: &'static str) {
        debug_assert!(
            REFUSAL_REASONS.contains(&reason),
            "refusal reason `{reason}` missing from REFUSAL_REASONS"
        );
        self.inner.refusals.with_label_values(&[reason]).inc();
    }

    /// A launch request was answered after `took`.
    pub fn launch_answered(&self, outcome: Outcome, took: Duration) {
        self.inner
            .launch_duration
            .with_label_values(&[outcome.as_str()])
            .observe(took.as_secs_f64());
    }

    /// A reconcile pass ended.
    pub fn pass(&self, ok: bool, took: Duration) {
        self.inner.passes.with_label_values(&[result(ok)]).inc();
        self.inner
            .pass_duration
            .with_label_values(&[result(ok)])
            .observe(took.as_secs_f64());
    }

    /// Reconcile passes run so far (ok or failed): the next pass's number
    /// is this plus one.
    pub fn passes_run(&self) -> u64 {
        ["ok", "failed"]
            .iter()
            .map(|r| self.inner.passes.with_label_values(&[*r]).get())
            .sum()
    }

    /// A reconcile action finished.
    pub fn action(&self, kind: ActionKind, ok: bool) {
        self.inner
            .actions
            .with_label_values(&[kind.as_str(), result(ok)])
            .inc();
    }

    /// A VM of `course` became warm `took` after its create started.
    pub fn booted(&self, course: &str, took: Duration) {
        self.inner
            .boot
            .with_label_values(&[course])
            .observe(took.as_secs_f64());
    }

    /// The text exposition of every series: the events counted so far and
    /// the state in `snapshot` (`None`: the store did not answer, and
    /// `labpool_store_up` says so).
    pub fn render(&self, snapshot: Option<&Snapshot>) -> String {
        let state = Registry::new();
        int_gauge(
            &state,
            "labpool_store_up",
            "Whether the store answered this scrape's queries (1) or not (0: the state series are missing).",
        )
        .set(i64::from(snapshot.is_some()));
        if let Some(s) = snapshot {
            self.render_state(s, &state);
        }
        let mut families = self.inner.registry.gather();
        families.extend(state.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut text = String::new();
        TextEncoder::new()
            .encode_utf8(&families, &mut text)
            .expect("every family has a name and a metric");
        text
    }

    /// Registers the state series of `s` in `state`, the scrape's registry.
    fn render_state(&self, s: &Snapshot, state: &Registry) {
        // Every course the store knows, with all its states, zeros included:
        // a dashboard shows "0 warm" rather than no line at all.
        let mut courses: Vec<&str> = s.courses.iter().map(String::as_str).collect();
        courses.extend(s.vms.iter().map(|(c, _, _)| c.as_str()));
        courses.extend(s.sessions.iter().map(|(c, _)| c.as_str()));
        courses.sort_unstable();
        courses.dedup();

        let vms = int_gauge_vec(
            state,
            "labpool_vms",
            "VMs by course and state (creating, booting, warm, assigned, failed, deleting), from the store.",
            &["course", "state"],
        );
        let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for (course, st, n) in &s.vms {
            // A state this labpool does not know (a newer one wrote it) is
            // not a label it may invent: it is left out.
            if let Ok(known) = st.parse::<VmState>() {
                *counts.entry((course.as_str(), known.as_str())).or_default() += n;
            }
        }
        for course in &courses {
            for st in VmState::ALL {
                let n = counts.get(&(*course, st.as_str())).copied().unwrap_or(0);
                vms.with_label_values(&[*course, st.as_str()]).set(n);
            }
        }

        let sessions = int_gauge_vec(
            state,
            "labpool_sessions",
            "Live lab sessions (a student holds a VM) by course.",
            &["course"],
        );
        let waiting = int_gauge_vec(
            state,
            "labpool_launches_waiting",
            "Launches waiting for a VM (their waiting page still polls) by course.",
            &["course"],
        );
        let live: BTreeMap<&str, i64> = s.sessions.iter().map(|(c, n)| (c.as_str(), *n)).collect();
        let waits: BTreeMap<&str, i64> = s.waiting.iter().map(|(c, n)| (c.as_str(), *n)).collect();
        for course in &courses {
            sessions
                .with_label_values(&[*course])
                .set(live.get(course).copied().unwrap_or(0));
            waiting
                .with_label_values(&[*course])
                .set(waits.get(course).copied().unwrap_or(0));
            // The event series of every course exist from its first scrape.
            for outcome in Outcome::DECIDED {
                self.inner
                    .launches
                    .with_label_values(&[*course, outcome.as_str()]);
            }
            self.inner.wait_claims.with_label_values(&[*course]);
        }

        let hosts = int_gauge_vec(
            state,
            "labpool_host_up",
            "Whether a configured host answered the reconciler's last look (1) or not (0).",
            &["host"],
        );
        for (host, up) in &s.hosts {
            hosts
                .with_label_values(&[host.as_str()])
                .set(i64::from(*up));
        }

        let foreign = int_gauge_vec(
            state,
            "labpool_foreign_objects",
            "Objects on a host marked by another labpool instance (instance: its id, or `legacy` for an earlier version's unknown to this store), as the last pass saw them; never touched.",
            &["host", "instance"],
        );
        for (host, instance, objects) in &s.foreign {
            foreign
                .with_label_values(&[host.as_str(), instance.as_str()])
                .set(*objects);
        }

        int_gauge(
            state,
            "labpool_open_terminals",
            "Sessions whose terminal console this labpool holds open (a page attached or not).",
        )
        .set(i64::try_from(s.open_terminals).unwrap_or(i64::MAX));

        if let Some(age) = s.revision_age {
            let g = Gauge::new(
                "labpool_revision_age_seconds",
                "Seconds since the course revision in force was applied (a restart keeps the time it was first applied).",
            )
            .expect("valid gauge");
            state.register(Box::new(g.clone())).expect("unique name");
            g.set(age.as_secs_f64());
        }
        if let Some(rejected) = s.revision_rejected {
            int_gauge(
                state,
                "labpool_revision_rejected",
                "Whether the newest course revision read was rejected as invalid (1; the last good one stays in force) or not (0).",
            )
            .set(i64::from(rejected));
        }
        if let Some(held) = s.revision_held {
            int_gauge(
                state,
                "labpool_revision_held",
                "Whether a newer course revision is held back because it removes too much (1: the pools stay on the revision in force until an admin confirms it or a later revision removes less) or not (0).",
            )
            .set(i64::from(held));
        }
    }
}

fn int_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
    registry.register(Box::new(g.clone())).expect("unique name");
    g
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid gauge");
    registry.register(Box::new(g.clone())).expect("unique name");
    g
}

/// The state half of a scrape, read from the store.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Courses the store knows (applied or draining).
    pub courses: Vec<String>,
    /// `(course, state, count)`.
    pub vms: Vec<(String, String, i64)>,
    /// Live sessions per course.
    pub sessions: Vec<(String, i64)>,
    /// Waiting launches per course.
    pub waiting: Vec<(String, i64)>,
    /// Configured hosts and whether they are up.
    pub hosts: Vec<(String, bool)>,
    /// `(host, instance, objects)` of other instances, configured hosts only.
    pub foreign: Vec<(String, String, i64)>,
    /// Since the revision in force was applied; `None` before one was.
    pub revision_age: Option<Duration>,
    /// Whether the newest revision read was rejected; `None` before the
    /// reconciler wrote its status.
    pub revision_rejected: Option<bool>,
    /// Whether a newer revision is held back for an admin's confirmation;
    /// `None` before the reconciler wrote its status.
    pub revision_held: Option<bool>,
    pub open_terminals: usize,
}

/// What `/readyz` and the revision series read from the source status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceState {
    /// Id and unix ms of the revision in force.
    pub applied: Option<(String, i64)>,
    pub rejected: bool,
    /// A newer revision is held back until an admin confirms it.
    pub held: bool,
    /// The last fetch of a Git source failed (the revision in force stays).
    pub fetch_error: bool,
}

impl SourceState {
    /// The source status the reconciler writes (`None`: never written).
    pub async fn read(store: &Store) -> Result<Option<SourceState>, StoreError> {
        let Some(text) = store.source_status().await? else {
            return Ok(None);
        };
        let status: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let applied = &status["applied"];
        // The store's record of the revision in force, whatever the status
        // document says (a restart before the source answered).
        let recorded = store
            .source_revision("applied")
            .await?
            .map(|row| (row.revision, row.at));
        Ok(Some(SourceState {
            applied: recorded.or_else(|| {
                applied["id"]
                    .as_str()
                    .map(|id| (id.to_owned(), applied["at"].as_i64().unwrap_or_default()))
            }),
            rejected: !status["rejected"].is_null(),
            held: store.source_revision("held").await?.is_some(),
            fetch_error: status["last_fetch_error"].is_string(),
        }))
    }
}

impl Snapshot {
    /// Reads the store's state; `hosts` are the configured host names.
    pub async fn read(
        store: &Store,
        hosts: &[&str],
        open_terminals: usize,
        now: i64,
    ) -> Result<Snapshot, StoreError> {
        let rows = store.hosts().await?;
        let source = SourceState::read(store).await?;
        Ok(Snapshot {
            courses: store.course_names().await?,
            vms: store.vm_counts().await?,
            sessions: store.live_session_counts().await?,
            waiting: store.waiting_by_course(now).await?,
            hosts: hosts
                .iter()
                .filter_map(|h| rows.iter().find(|r| r.name == *h))
                .map(|r| (r.name.clone(), r.up))
                .collect(),
            // Instance ids are validated (or `legacy`/`invalid`) when judged,
            // and hosts are configured: the series stay bounded.
            foreign: store
                .foreign_objects()
                .await?
                .into_iter()
                .filter(|f| hosts.contains(&f.host.as_str()))
                .map(|f| (f.host, f.instance, f.objects))
                .collect(),
            revision_age: source
                .as_ref()
                .and_then(|s| s.applied.as_ref())
                .map(|(_, at)| Duration::from_millis(u64::try_from(now - at).unwrap_or(0))),
            revision_rejected: source.as_ref().map(|s| s.rejected),
            revision_held: source.map(|s| s.held),
            open_terminals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lti::Refusal;

    /// Every kind a refusal can have is a known label, so none is missing
    /// from the pre-made series (and `refused`'s debug check never fires).
    #[test]
    fn every_refusal_kind_is_a_known_reason() {
        let kinds = [
            Refusal::forged("").kind,
            Refusal::expired("").kind,
            Refusal::replayed("").kind,
            Refusal::state("").kind,
            Refusal::unknown_platform("").kind,
            Refusal::bad_launch("").kind,
            Refusal::platform_unreachable("").kind,
            Refusal::internal("").kind,
        ];
        for kind in kinds {
            assert!(REFUSAL_REASONS.contains(&kind), "{kind}");
        }
    }

    #[test]
    fn state_series_come_from_the_snapshot_only() {
        let m = Metrics::new();
        m.launched("linux", Outcome::Warm);
        let text = m.render(Some(&Snapshot {
            courses: vec!["linux".into()],
            vms: vec![
                ("linux".into(), "warm".into(), 2),
                ("linux".into(), "from-the-future".into(), 9),
            ],
            hosts: vec![("h1".into(), true)],
            ..Snapshot::default()
        }));
        assert!(text.contains("labpool_vms{course=\"linux\",state=\"warm\"} 2\n"));
        assert!(text.contains("labpool_vms{course=\"linux\",state=\"failed\"} 0\n"));
        assert!(!text.contains("from-the-future"));
        assert!(text.contains("labpool_launches_total{course=\"linux\",outcome=\"warm\"} 1\n"));
        assert!(text.contains("labpool_launches_total{course=\"linux\",outcome=\"full\"} 0\n"));
        assert!(text.contains("labpool_host_up{host=\"h1\"} 1\n"));
        assert!(text.contains("labpool_store_up 1\n"));
        // A second scrape without the store: no stale state series.
        let text = m.render(None);
        assert!(text.contains("labpool_store_up 0\n"));
        assert!(!text.contains("labpool_vms{"));
        assert!(text.contains("labpool_launches_total{course=\"linux\",outcome=\"warm\"} 1\n"));
    }
}
