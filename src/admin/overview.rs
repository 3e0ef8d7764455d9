//! What labpool is doing, read from the store only (so it answers even while
//! a host hangs): per course, per host, live sessions, recent events and the
//! course source. `labpool status`, the admin API and the dashboard all show
//! this one view.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::config::Config;
use crate::course::Course;
use crate::reconcile::desired::{WindowTimes, next_window};
use crate::store::{EventRow, SessionRow, Store, StoreError, VmRow, VmState};

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CourseStatus {
    pub name: String,
    pub title: String,
    /// The course repository's revision it was applied from.
    pub revision: String,
    /// Warm VMs wanted now (schedule-adjusted, capped so warm plus assigned
    /// stays within `max`): what the reconciler's last pass aimed for. 0 for
    /// a removed course.
    pub target: u64,
    pub max: u32,
    pub warm: u32,
    /// Being created or booting.
    pub booting: u32,
    pub assigned: u32,
    pub failed: u32,
    pub deleting: u32,
    /// `Ready`, `Progressing`, `Degraded`, `Draining` (removed from the
    /// source; its students keep their VMs) or `Unknown`.
    pub condition: String,
    pub reason: String,
    /// A removed course still draining: the last of its students' hard
    /// expiries (unix ms), when its last VM goes at the latest.
    pub hard_stop: Option<i64>,
    /// The schedule window open now, else the next one (none: no schedule).
    pub next_window: Option<WindowTimes>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HostStatus {
    pub name: String,
    pub uri: String,
    pub up: bool,
    /// Drained by an admin: no new VMs.
    pub draining: bool,
    /// Why it is down, or the last error.
    pub error: Option<String>,
    pub vms: u32,
    pub max_vms: u32,
    /// Bytes.
    pub memory_used: u64,
    pub memory: u64,
    pub vcpus_used: u64,
    pub vcpu_slots: u64,
    /// The busiest of VMs, memory and vCPUs, as a fraction of the host (0–1).
    pub load: f64,
}

/// A session as operators see it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SessionView {
    pub id: String,
    pub course: String,
    /// The student: the LMS's user id (`sub`).
    pub student: String,
    /// The LMS course (context) and link launched from.
    pub context_id: String,
    pub resource_link_id: String,
    pub issuer: String,
    pub vm: String,
    pub host: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_activity_at: i64,
    /// Until the hard expiry (ms; 0 once past).
    pub time_left_ms: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
}

impl SessionView {
    pub fn new(s: SessionRow, vms: &[VmRow], now: i64) -> SessionView {
        SessionView {
            host: vms.iter().find(|v| v.id == s.vm_id).map(|v| v.host.clone()),
            time_left_ms: (s.expires_at - now).max(0),
            id: s.id,
            course: s.course,
            student: s.key.user_sub,
            context_id: s.key.context_id,
            resource_link_id: s.key.resource_link_id,
            issuer: s.key.issuer,
            vm: s.vm_id,
            created_at: s.created_at,
            expires_at: s.expires_at,
            last_activity_at: s.last_activity_at,
            ended_at: s.ended_at,
            end_reason: s.end_reason,
        }
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Overview {
    /// When this was read (unix ms).
    pub now: i64,
    /// This labpool's instance id (its store's): every mark it puts on a
    /// host names it, and only objects naming it are ever collected.
    pub instance: String,
    /// Objects on the hosts marked by other labpool instances (or by an
    /// earlier version, unknown to this store: instance `legacy`), by host
    /// and instance, as the last pass saw them. Never touched.
    pub foreign: Vec<crate::store::ForeignRow>,
    /// The course source: applied revision, last fetch, last rejection.
    pub source: serde_json::Value,
    pub courses: Vec<CourseStatus>,
    pub hosts: Vec<HostStatus>,
    /// Live sessions, newest first.
    pub sessions: Vec<SessionView>,
    /// The most recent events, newest first.
    pub events: Vec<EventRow>,
}

impl Overview {
    /// What `who` may see of it: a course-scoped read token sees its
    /// courses, their sessions and events, and nothing that is not a
    /// course's (hosts, the course source, events of no course).
    pub fn seen_by(mut self, who: &crate::admin::Principal) -> Overview {
        if !who.is_scoped() {
            return self;
        }
        self.courses.retain(|c| who.sees(&c.name));
        self.sessions.retain(|s| who.sees(&s.course));
        self.events
            .retain(|e| e.course.as_deref().is_some_and(|c| who.sees(c)));
        self.hosts.clear();
        self.foreign.clear();
        self.source = serde_json::Value::Null;
        self
    }
}

/// Reads the overview at `now`, with the latest `events` events.
pub async fn overview(
    config: &Config,
    store: &Store,
    now: i64,
    events: i64,
) -> Result<Overview, StoreError> {
    let vms = store.vms().await?;
    Ok(Overview {
        now,
        instance: store.instance_id().await?,
        foreign: store
            .foreign_objects()
            .await?
            .into_iter()
            .filter(|f| config.hosts.iter().any(|h| h.name == f.host))
            .collect(),
        source: source(store).await?,
        courses: courses(store, &vms, now).await?,
        hosts: hosts(config, store, &vms).await?,
        sessions: store
            .sessions(true, 1_000)
            .await?
            .into_iter()
            .map(|s| SessionView::new(s, &vms, now))
            .collect(),
        events: store.events(events).await?,
    })
}

/// The course source as the reconciler last wrote it, with the revision
/// held back as the store has it now (a confirmation shows before the
/// reconciler's next pass).
pub async fn source(store: &Store) -> Result<serde_json::Value, StoreError> {
    let mut source = match store.source_status().await? {
        Some(text) => serde_json::from_str(&text).unwrap_or_default(),
        None => serde_json::Value::Null,
    };
    let held = store
        .source_revision("held")
        .await?
        .map(|row| crate::source::hold::Held::from_row(&row));
    if let Some(object) = source.as_object_mut() {
        object.insert(
            "held".into(),
            serde_json::to_value(held).expect("held serializes"),
        );
    }
    Ok(source)
}

/// Every course the store knows, with live counts.
pub async fn courses(
    store: &Store,
    vms: &[VmRow],
    now: i64,
) -> Result<Vec<CourseStatus>, StoreError> {
    let mut per_course: BTreeMap<&str, [u32; 6]> = BTreeMap::new();
    for vm in vms {
        let slot = VmState::ALL
            .iter()
            .position(|s| *s == vm.state)
            .unwrap_or(0);
        per_course.entry(vm.course.as_str()).or_default()[slot] += 1;
    }
    let count = |course: &str, state: VmState| {
        let slot = VmState::ALL.iter().position(|s| *s == state).unwrap_or(0);
        per_course.get(course).map_or(0, |c| c[slot])
    };
    let at = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
    Ok(store
        .courses()
        .await?
        .into_iter()
        .map(|row| {
            let conditions: serde_json::Value =
                serde_json::from_str(&row.conditions_json).unwrap_or_default();
            let course: Option<Course> = serde_json::from_str(&row.spec_json).ok();
            let name = row.name.as_str();
            let removed = conditions["counts"]["desired"] == serde_json::Value::Bool(false);
            let target = match removed {
                true => 0,
                false => conditions["counts"]["target"].as_u64().unwrap_or(0),
            };
            let hard_stop = conditions["counts"]["draining"]["hard_stop"]
                .as_i64()
                .filter(|_| removed);
            let warm = count(name, VmState::Warm);
            let booting = count(name, VmState::Creating) + count(name, VmState::Booting);
            let assigned = count(name, VmState::Assigned);
            // Counts are live; the condition is the last pass's, brought up
            // to date where the counts alone decide it.
            let (condition, reason) = match conditions["condition"]["status"].as_str() {
                None => ("Unknown".to_string(), "not reconciled yet".to_string()),
                _ if removed => (
                    "Draining".to_string(),
                    crate::reconcile::execute::draining_reason(assigned, hard_stop.unwrap_or(0)),
                ),
                Some("Degraded") => (
                    "Degraded".to_string(),
                    conditions["condition"]["reason"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                ),
                Some(_) if u64::from(warm) >= target => {
                    ("Ready".to_string(), format!("{warm} of {target} warm"))
                }
                Some(_) => (
                    "Progressing".to_string(),
                    format!("{warm} of {target} warm, {booting} booting"),
                ),
            };
            CourseStatus {
                target,
                max: course.as_ref().map_or(0, |c| c.pool.max),
                warm,
                booting,
                assigned,
                hard_stop,
                failed: count(name, VmState::Failed),
                deleting: count(name, VmState::Deleting),
                condition,
                reason,
                next_window: course.as_ref().and_then(|c| next_window(c, at)),
                name: row.name,
                title: row.title,
                revision: row.revision,
            }
        })
        .collect())
}

/// Every configured host, with what is on it.
pub async fn hosts(
    config: &Config,
    store: &Store,
    vms: &[VmRow],
) -> Result<Vec<HostStatus>, StoreError> {
    let rows = store.hosts().await?;
    Ok(config
        .hosts
        .iter()
        .map(|h| {
            let row = rows.iter().find(|r| r.name == h.name);
            let on_host = vms.iter().filter(|v| v.host == h.name);
            let vms = on_host.clone().count() as u32;
            let memory_used: u64 = on_host.clone().map(|v| v.memory as u64).sum();
            let vcpus_used: u64 = on_host.map(|v| v.vcpus as u64).sum();
            let memory = h.capacity.memory.as_bytes();
            let vcpu_slots = u64::from(h.capacity.vcpu_slots());
            let frac = |used: f64, cap: f64| if cap > 0.0 { used / cap } else { 1.0 };
            HostStatus {
                name: h.name.clone(),
                uri: h.uri.clone(),
                up: row.is_some_and(|r| r.up),
                draining: row.is_some_and(|r| r.draining),
                error: row.and_then(|r| r.last_error.clone()),
                vms,
                max_vms: h.capacity.vms,
                memory_used,
                memory,
                vcpus_used,
                vcpu_slots,
                load: frac(f64::from(vms), f64::from(h.capacity.vms))
                    .max(frac(memory_used as f64, memory as f64))
                    .max(frac(vcpus_used as f64, vcpu_slots as f64)),
            }
        })
        .collect())
}
