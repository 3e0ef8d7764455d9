//! The planner: (desired courses, observed world) -> actions. Pure: no I/O, no
//! clock (the time is part of the observation), so `labpool plan` prints
//! exactly what `serve` would do and the tests run it as a plain function.
//!
//! Rules, per VM (first match wins):
//! - on a host that is down: left alone and not counted (its course gets
//!   replacements elsewhere; when the host returns, the surplus goes);
//! - `deleting` (a destroy that was interrupted): destroyed again;
//! - domain gone while it should run (`booting`, `warm`, `assigned`), or shut
//!   off while `warm`/`assigned`: destroyed (its session ends) and replaced;
//! - `failed`, or `creating`/`booting` past the readiness timeout: destroyed;
//! - `assigned` past its hard expiry, idle past its course's `idle` (a
//!   removed course's from its last stored file), or with no live session:
//!   destroyed;
//! - course removed: `creating`/`booting`/`warm` destroyed at once,
//!   `assigned` left to its student (drain: target 0, and the counts say how
//!   many students are left and when the last hard expiry comes);
//! - otherwise counted as *fresh* (spec hash matches, host not drained) or
//!   *outdated* (an older spec, or a drained host: replaced the same way).
//!
//! Per course: the target is the schedule-adjusted warm count, capped so warm
//! plus assigned never exceeds `max` (assigned VMs on hosts that are down
//! count: their students hold them, as the launch's `max` check counts
//! their sessions). Missing fresh VMs are created; outdated ones are
//! replaced rolling: an outdated warm VM stays until a fresh one is warm in
//! its place. At `max` the replacement surges by one (like a rolling
//! update's `maxSurge: 1`): one outdated warm VM stays past `max` while its
//! replacement boots, if some host has room for one more VM (or the surge's
//! VM is already booting); only when no host has room does the outdated VM
//! go first to make it, and then only if a fresh one can start now.
//! Surplus goes.
//! During class time (`in_class`) nothing is taken away.
//!
//! Creates are placed round-robin over courses, each on the host with the
//! fewest VMs of that course, then the lowest load, among the hosts that are
//! up, carry the image, fit the VM's memory and vCPUs, and have a free boot
//! slot. Destroys in the same plan free their capacity first.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::desired::DesiredCourse;
use crate::course::spec::Runtime;
use crate::store::VmState;

/// What the reconciler saw, at `now` (unix ms).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Observed {
    pub now: i64,
    pub hosts: Vec<ObservedHost>,
    pub vms: Vec<ObservedVm>,
    /// Things on hosts that carry labpool's mark but are unknown to the store.
    pub orphans: Vec<Orphan>,
    /// Courses the store knows (applied earlier), present or removed.
    pub known_courses: Vec<String>,
    /// `session.idle` (ms) of courses the store knows, from their last
    /// applied file: a removed course's sessions still end when idle.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stored_idle_ms: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservedHost {
    pub name: String,
    pub up: bool,
    pub max_vms: u32,
    pub memory: u64,
    /// vCPUs that may be handed out: physical vCPUs times the overcommit.
    pub vcpu_slots: u32,
    /// Images on the host; `None`: the whole catalog.
    pub images: Option<Vec<String>>,
    pub boots_per_host: u32,
    /// An admin drained it: nothing new is placed here, and its unassigned
    /// VMs are replaced elsewhere like outdated ones.
    pub draining: bool,
    /// VMs (libvirt) or containers (Docker): a course's labs go only to
    /// hosts of its runtime.
    pub runtime: Runtime,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservedVm {
    pub id: String,
    pub course: String,
    pub host: String,
    pub spec_hash: String,
    pub state: VmState,
    /// When the VM entered its state (unix ms).
    pub since: i64,
    pub vcpus: u32,
    pub memory: u64,
    /// The live session on the VM: its hard expiry (unix ms).
    pub session_expires: Option<i64>,
    /// The live session's last terminal activity (unix ms).
    pub session_active: Option<i64>,
    pub domain: DomainSeen,
}

/// What the host says about a VM's domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainSeen {
    Running,
    /// Defined but not running (shut off, crashed, paused).
    Stopped,
    Missing,
    /// Not looked at (host down, or not asked).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    pub host: String,
    pub kind: OrphanKind,
    pub name: String,
    /// When labpool first saw it (unix ms); it is collected after the grace.
    pub first_seen: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrphanKind {
    Domain,
    Volume,
}

/// Knobs that are not part of the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub orphan_grace_ms: i64,
    /// Readiness timeout for VMs of courses that are gone from the desired set.
    pub default_ready_timeout_ms: i64,
}

/// One step for the executor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Create {
        course: String,
        host: String,
        spec_hash: String,
    },
    Destroy {
        vm: String,
        course: String,
        host: String,
        reason: DestroyReason,
    },
    CollectOrphan {
        host: String,
        kind: OrphanKind,
        name: String,
    },
    /// The course is gone from the source and has no VM left: drop its row.
    ForgetCourse { course: String },
    /// A domain an earlier version marked with no instance, whose VM the
    /// store knows: its mark gets this labpool's instance (libvirt only).
    /// Added after planning, from the observation ([`adopt_legacy`]).
    Adopt { host: String, name: String },
}

/// The re-marks a pass makes: one per legacy domain the store knows.
pub fn adopt_legacy(legacy_known: &[(String, String)]) -> Vec<Action> {
    legacy_known
        .iter()
        .map(|(host, name)| Action::Adopt {
            host: host.clone(),
            name: name.clone(),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DestroyReason {
    /// More warm VMs than the target.
    Surplus,
    /// Built from an older spec.
    Outdated,
    /// Failed to boot or become ready.
    Failed,
    /// Did not become ready within the course's readiness timeout.
    BootTimeout,
    /// The domain disappeared or stopped behind labpool's back.
    Vanished,
    /// The session reached its hard expiry.
    Expired,
    /// Nobody typed in the session's terminal for the course's idle timeout.
    Idle,
    /// The VM is marked assigned but no live session holds it.
    SessionEnded,
    /// The course is gone from the source.
    CourseRemoved,
    /// An earlier destroy did not finish.
    Unfinished,
    /// Its host is drained; a VM elsewhere took its place.
    Drained,
}

impl DestroyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DestroyReason::Surplus => "surplus",
            DestroyReason::Outdated => "outdated",
            DestroyReason::Failed => "failed",
            DestroyReason::BootTimeout => "boot-timeout",
            DestroyReason::Vanished => "vanished",
            DestroyReason::Expired => "expired",
            DestroyReason::Idle => "idle",
            DestroyReason::SessionEnded => "session-ended",
            DestroyReason::CourseRemoved => "course-removed",
            DestroyReason::Unfinished => "unfinished",
            DestroyReason::Drained => "drained",
        }
    }
}

/// Why a course has fewer VMs coming than it wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Shortfall {
    /// No host that is up carries the image and could ever hold the VM.
    NoHostFits,
    /// Hosts that could hold it are full.
    CapacityFull,
    /// Waiting for boot slots on the hosts (boots in progress).
    WaitingForBootSlots,
    /// Warm plus assigned is at the course's `max`.
    AtMax,
    /// Boots failed recently; no new VM before `until` (unix ms).
    BackingOff { until: i64 },
}

/// Counts per course, as seen by this plan (before its actions run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CourseCounts {
    pub course: String,
    pub desired: bool,
    pub target: u32,
    pub warm: u32,
    pub booting: u32,
    pub assigned: u32,
    pub failed: u32,
    pub outdated: u32,
    /// VMs on hosts that are down (not counted above, except their live
    /// assigned VMs, which are in `assigned`).
    pub unreachable: u32,
    pub in_class: bool,
    pub shortfall: Option<Shortfall>,
    /// A removed course still draining: its students' VMs and when the last
    /// of their sessions reaches its hard expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draining: Option<Draining>,
}

/// What is left of a removed course: its students keep their VMs until
/// their sessions end, at the latest at their hard expiry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Draining {
    /// Live sessions (students) still holding a VM of the course.
    pub students: u32,
    /// The latest hard expiry among them (unix ms): by then the course is
    /// gone.
    pub hard_stop: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub courses: Vec<CourseCounts>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// Running totals of one host while the plan is built.
struct HostLoad<'a> {
    host: &'a ObservedHost,
    vms: u32,
    memory: u64,
    vcpus: u32,
    booting: u32,
    per_course: HashMap<&'a str, u32>,
}

impl HostLoad<'_> {
    fn carries(&self, image: Option<&str>) -> bool {
        match (&self.host.images, image) {
            (Some(list), Some(image)) => list.iter().any(|i| i == image),
            _ => true,
        }
    }

    /// Could the VM ever run here, on an empty host?
    fn could_hold(&self, c: &DesiredCourse) -> bool {
        self.host.up
            && !self.host.draining
            && self.host.runtime == c.runtime
            && self.carries(c.image.as_deref())
            && self.host.max_vms >= 1
            && c.memory <= self.host.memory
            && c.vcpus <= self.host.vcpu_slots
    }

    fn has_room(&self, c: &DesiredCourse) -> bool {
        self.vms < self.host.max_vms
            && self.memory + c.memory <= self.host.memory
            && self.vcpus + c.vcpus <= self.host.vcpu_slots
    }

    fn has_boot_slot(&self) -> bool {
        self.booting < self.host.boots_per_host
    }

    /// The busiest of the three resources, as a fraction of the host.
    fn load(&self) -> f64 {
        let frac = |used: f64, cap: f64| if cap > 0.0 { used / cap } else { 1.0 };
        frac(f64::from(self.vms), f64::from(self.host.max_vms))
            .max(frac(self.memory as f64, self.host.memory as f64))
            .max(frac(f64::from(self.vcpus), f64::from(self.host.vcpu_slots)))
    }

    fn add(&mut self, vcpus: u32, memory: u64, booting: bool) {
        self.vms += 1;
        self.memory += memory;
        self.vcpus += vcpus;
        self.booting += u32::from(booting);
    }

    fn remove(&mut self, vcpus: u32, memory: u64, booting: bool) {
        self.vms = self.vms.saturating_sub(1);
        self.memory = self.memory.saturating_sub(memory);
        self.vcpus = self.vcpus.saturating_sub(vcpus);
        self.booting = self.booting.saturating_sub(u32::from(booting));
    }
}

fn is_booting(state: VmState) -> bool {
    matches!(state, VmState::Creating | VmState::Booting)
}

/// The VMs of one course that are alive and unassigned, by freshness.
#[derive(Default)]
struct Pool<'a> {
    fresh_warm: Vec<&'a ObservedVm>,
    fresh_booting: Vec<&'a ObservedVm>,
    stale_warm: Vec<&'a ObservedVm>,
    stale_booting: Vec<&'a ObservedVm>,
    assigned: u32,
}

/// Plans the actions that take `observed` towards `desired`.
pub fn plan(desired: &[DesiredCourse], observed: &Observed, policy: &Policy) -> Plan {
    let now = observed.now;
    let by_name: HashMap<&str, &DesiredCourse> =
        desired.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut hosts: BTreeMap<&str, HostLoad> = observed
        .hosts
        .iter()
        .map(|h| {
            let load = HostLoad {
                host: h,
                vms: 0,
                memory: 0,
                vcpus: 0,
                booting: 0,
                per_course: HashMap::new(),
            };
            (h.name.as_str(), load)
        })
        .collect();
    for vm in &observed.vms {
        if let Some(load) = hosts.get_mut(vm.host.as_str()) {
            load.add(vm.vcpus, vm.memory, is_booting(vm.state));
            *load.per_course.entry(vm.course.as_str()).or_default() += 1;
        }
    }
    let up: std::collections::HashSet<&str> = observed
        .hosts
        .iter()
        .filter(|h| h.up)
        .map(|h| h.name.as_str())
        .collect();
    let host_up = |name: &str| up.contains(name);
    let drained: std::collections::HashSet<&str> = observed
        .hosts
        .iter()
        .filter(|h| h.draining)
        .map(|h| h.name.as_str())
        .collect();
    // Why an outdated VM goes: its build, or its host's drain.
    let replaced = |vm: &ObservedVm| {
        if drained.contains(vm.host.as_str()) {
            DestroyReason::Drained
        } else {
            DestroyReason::Outdated
        }
    };

    let mut actions = Vec::new();
    let mut counts: BTreeMap<&str, CourseCounts> = BTreeMap::new();
    for c in desired {
        counts.insert(
            &c.name,
            CourseCounts {
                course: c.name.clone(),
                desired: true,
                in_class: c.in_class,
                ..CourseCounts::default()
            },
        );
    }
    let mut pools: HashMap<&str, Pool> = HashMap::new();
    let mut destroyed: Vec<&ObservedVm> = Vec::new();
    let destroy = |vm: &ObservedVm, reason: DestroyReason, actions: &mut Vec<Action>| {
        actions.push(Action::Destroy {
            vm: vm.id.clone(),
            course: vm.course.clone(),
            host: vm.host.clone(),
            reason,
        });
    };

    // A removed course's student: counted, and the last hard expiry kept.
    let drain = |entry: &mut CourseCounts, vm: &ObservedVm| {
        let d = entry.draining.get_or_insert_with(Draining::default);
        d.students += 1;
        d.hard_stop = d.hard_stop.max(vm.session_expires.unwrap_or(0));
    };

    for vm in &observed.vms {
        let course = by_name.get(vm.course.as_str()).copied();
        let entry = counts.entry(&vm.course).or_insert_with(|| CourseCounts {
            course: vm.course.clone(),
            ..CourseCounts::default()
        });
        if !host_up(&vm.host) {
            entry.unreachable += 1;
            // Its student still holds it (and the launch counts the
            // session against `max`): the target leaves room for it.
            if vm.state == VmState::Assigned && vm.session_expires.is_some_and(|e| e > now) {
                entry.assigned += 1;
                match course {
                    Some(_) => pools.entry(&vm.course).or_default().assigned += 1,
                    None => drain(entry, vm),
                }
            }
            continue;
        }
        let timeout = course.map_or(policy.default_ready_timeout_ms, |c| c.ready_timeout_ms);
        let should_run = matches!(
            vm.state,
            VmState::Booting | VmState::Warm | VmState::Assigned
        );
        let reason = match vm.state {
            VmState::Deleting => Some(DestroyReason::Unfinished),
            _ if should_run && vm.domain == DomainSeen::Missing => Some(DestroyReason::Vanished),
            VmState::Warm | VmState::Assigned if vm.domain == DomainSeen::Stopped => {
                Some(DestroyReason::Vanished)
            }
            VmState::Failed => Some(DestroyReason::Failed),
            VmState::Creating | VmState::Booting if now - vm.since > timeout => {
                Some(DestroyReason::BootTimeout)
            }
            VmState::Assigned => match vm.session_expires {
                Some(expires) if expires <= now => Some(DestroyReason::Expired),
                Some(_)
                    if course
                        .map(|c| c.idle_ms)
                        .or_else(|| observed.stored_idle_ms.get(&vm.course).copied())
                        .zip(vm.session_active)
                        .is_some_and(|(idle, active)| {
                            idle > 0 && active.saturating_add(idle) <= now
                        }) =>
                {
                    Some(DestroyReason::Idle)
                }
                Some(_) => None,
                None => Some(DestroyReason::SessionEnded),
            },
            _ if course.is_none() => Some(DestroyReason::CourseRemoved),
            _ => None,
        };
        match vm.state {
            VmState::Failed => entry.failed += 1,
            VmState::Assigned if reason.is_none() => {
                entry.assigned += 1;
                if course.is_none() {
                    drain(entry, vm);
                }
            }
            _ => {}
        }
        if let Some(reason) = reason {
            destroy(vm, reason, &mut actions);
            destroyed.push(vm);
            continue;
        }
        let Some(course) = course else { continue };
        let pool = pools.entry(&vm.course).or_default();
        if vm.spec_hash != course.spec_hash && vm.state != VmState::Assigned {
            entry.outdated += 1;
        }
        let fresh = vm.spec_hash == course.spec_hash && !drained.contains(vm.host.as_str());
        match (vm.state, fresh) {
            (VmState::Assigned, _) => pool.assigned += 1,
            (VmState::Warm, true) => pool.fresh_warm.push(vm),
            (VmState::Warm, false) => pool.stale_warm.push(vm),
            (_, true) => pool.fresh_booting.push(vm),
            (_, false) => pool.stale_booting.push(vm),
        }
    }
    for vm in &destroyed {
        if let Some(load) = hosts.get_mut(vm.host.as_str()) {
            load.remove(vm.vcpus, vm.memory, is_booting(vm.state));
        }
    }

    // Per course: take away what is too much, work out what is missing.
    let mut wants: Vec<(&DesiredCourse, u32)> = Vec::new();
    // Outdated warm VMs kept past `max` for a surge judged on room that
    // this plan's creates may yet take: (course, VM, alive, need).
    let mut surges: Vec<(&DesiredCourse, &ObservedVm, u32, u32)> = Vec::new();
    for c in desired {
        let pool = pools.remove(c.name.as_str()).unwrap_or_default();
        let entry = counts
            .get_mut(c.name.as_str())
            .expect("desired course counted");
        let warm_now = (pool.fresh_warm.len() + pool.stale_warm.len()) as u32;
        let booting_now = (pool.fresh_booting.len() + pool.stale_booting.len()) as u32;
        entry.warm = warm_now;
        entry.booting = booting_now;
        let target = c.warm.min(c.max.saturating_sub(pool.assigned));
        entry.target = target;
        if c.warm > target {
            entry.shortfall = Some(Shortfall::AtMax);
        }

        let mut gone: Vec<(&ObservedVm, DestroyReason)> = Vec::new();
        let mut fresh_booting = pool.fresh_booting;
        let mut fresh_warm = pool.fresh_warm;
        let mut stale_booting = pool.stale_booting;
        let mut stale_warm = pool.stale_warm;
        let fresh = (fresh_warm.len() + fresh_booting.len()) as u32;
        if !c.in_class {
            // Surplus: not-yet-warm VMs go first, then the newest warm ones.
            let mut surplus = fresh.saturating_sub(target) as usize;
            while surplus > 0 {
                let vm = match fresh_booting.pop() {
                    Some(vm) => vm,
                    None => fresh_warm.pop().expect("surplus counts existing VMs"),
                };
                gone.push((vm, DestroyReason::Surplus));
                surplus -= 1;
            }
            // Outdated VMs still booting serve nobody: they go at once.
            gone.extend(stale_booting.drain(..).map(|vm| (vm, replaced(vm))));
            // Outdated warm VMs stay while fresh warm ones cannot cover the target.
            let fresh_warm_n = fresh_warm.len() as u32;
            let excess = (fresh_warm_n + stale_warm.len() as u32).saturating_sub(target);
            for _ in 0..excess.min(stale_warm.len() as u32) {
                let vm = stale_warm.pop().expect("counted");
                gone.push((vm, replaced(vm)));
            }
        }
        // What goes so far frees its capacity before the surge is judged.
        for (vm, reason) in gone.drain(..) {
            destroy(vm, reason, &mut actions);
            if let Some(load) = hosts.get_mut(vm.host.as_str()) {
                load.remove(vm.vcpus, vm.memory, is_booting(vm.state));
            }
        }
        let fresh = (fresh_warm.len() + fresh_booting.len()) as u32;
        let need = target.saturating_sub(fresh);
        // May exceed `max` (a host came back, `max` was lowered): room is
        // what is left below `max`, so counted on `alive`, never added to.
        let mut alive = pool.assigned + fresh + (stale_warm.len() + stale_booting.len()) as u32;
        let backoff = c.backoff_until.filter(|until| *until > now);
        // Outdated warm VMs still serve: they are given up only for VMs that
        // can start now, not while backing off or when no host could hold one.
        let can_start = backoff.is_none() && hosts.values().any(|h| h.could_hold(c));
        // A replacement at `max` surges by one: an outdated warm VM stays
        // past `max` while a fresh one boots, if some host has room for the
        // extra VM now, or the surge is under way (a fresh VM booting).
        let surge = u32::from(
            !c.in_class
                && !stale_warm.is_empty()
                && (!fresh_booting.is_empty()
                    || hosts.values().any(|h| h.could_hold(c) && h.has_room(c))),
        );
        let limit = c.max + surge;
        if !c.in_class && can_start {
            // No room to surge: give up outdated warm VMs to make some.
            while alive + need > limit {
                let Some(vm) = stale_warm.pop() else { break };
                gone.push((vm, replaced(vm)));
                alive -= 1;
            }
            if surge == 1
                && alive + need > c.max
                && fresh_booting.is_empty()
                && let Some(vm) = stale_warm.last()
            {
                surges.push((c, vm, alive, need));
            }
        }
        for (vm, reason) in gone {
            destroy(vm, reason, &mut actions);
            if let Some(load) = hosts.get_mut(vm.host.as_str()) {
                load.remove(vm.vcpus, vm.memory, is_booting(vm.state));
            }
        }
        if need > 0 {
            let room = limit.saturating_sub(alive);
            match backoff {
                Some(until) => entry.shortfall = Some(Shortfall::BackingOff { until }),
                None if room > 0 => wants.push((c, need.min(room))),
                None if !can_start => entry.shortfall = Some(Shortfall::NoHostFits),
                None => {}
            }
        }
    }

    // Placement, round-robin over courses so that one big course does not
    // take every boot slot.
    let mut round = 0;
    while !wants.is_empty() {
        wants.retain_mut(|(c, need)| {
            let best = best_host(&mut hosts, c);
            let Some(host) = best else {
                let entry = counts.get_mut(c.name.as_str()).expect("counted");
                entry.shortfall = Some(shortfall(c, hosts.values()));
                return false;
            };
            host.add(c.vcpus, c.memory, true);
            *host.per_course.entry(c.name.as_str()).or_default() += 1;
            actions.push(Action::Create {
                course: c.name.clone(),
                host: host.host.name.clone(),
                spec_hash: c.spec_hash.clone(),
            });
            *need -= 1;
            *need > 0
        });
        round += 1;
        // Every round but the last takes a boot slot.
        debug_assert!(
            round
                <= 1 + observed
                    .hosts
                    .iter()
                    .map(|h| h.boots_per_host as usize)
                    .sum::<usize>()
        );
    }

    // A surge judged on room the creates above took after all: no VM of
    // the course could be placed and no host has room now. The outdated VM
    // goes first, as when there was no room (its destroy before the
    // creates), and its capacity takes what it can of the replacements.
    for (c, vm, alive, need) in surges {
        let placed = actions
            .iter()
            .any(|a| matches!(a, Action::Create { course, .. } if *course == c.name));
        if placed || hosts.values().any(|h| h.could_hold(c) && h.has_room(c)) {
            continue;
        }
        let first_create = actions
            .iter()
            .position(|a| matches!(a, Action::Create { .. }))
            .unwrap_or(actions.len());
        actions.insert(
            first_create,
            Action::Destroy {
                vm: vm.id.clone(),
                course: vm.course.clone(),
                host: vm.host.clone(),
                reason: replaced(vm),
            },
        );
        if let Some(load) = hosts.get_mut(vm.host.as_str()) {
            load.remove(vm.vcpus, vm.memory, false);
        }
        let entry = counts.get_mut(c.name.as_str()).expect("counted");
        entry.shortfall = None;
        for _ in 0..need.min(c.max.saturating_sub(alive - 1)) {
            let Some(host) = best_host(&mut hosts, c) else {
                entry.shortfall = Some(shortfall(c, hosts.values()));
                break;
            };
            host.add(c.vcpus, c.memory, true);
            *host.per_course.entry(c.name.as_str()).or_default() += 1;
            actions.push(Action::Create {
                course: c.name.clone(),
                host: host.host.name.clone(),
                spec_hash: c.spec_hash.clone(),
            });
        }
    }

    // Orphans past their grace, on hosts that answer.
    for orphan in &observed.orphans {
        if host_up(&orphan.host) && now - orphan.first_seen >= policy.orphan_grace_ms {
            actions.push(Action::CollectOrphan {
                host: orphan.host.clone(),
                kind: orphan.kind,
                name: orphan.name.clone(),
            });
        }
    }

    // A removed course is forgotten once nothing of it is left after this
    // plan (the store row is its finalizer).
    for name in &observed.known_courses {
        if by_name.contains_key(name.as_str()) {
            continue;
        }
        let remaining = observed.vms.iter().filter(|vm| &vm.course == name).count();
        let going = actions
            .iter()
            .filter(|a| matches!(a, Action::Destroy { course, .. } if course == name))
            .count();
        if remaining == going {
            actions.push(Action::ForgetCourse {
                course: name.clone(),
            });
        }
    }

    Plan {
        actions,
        courses: counts.into_values().collect(),
    }
}

/// Where the next VM of `c` goes: among hosts that could hold it, have room
/// and a free boot slot, the one with the fewest VMs of the course, then the
/// lowest load, then by name.
fn best_host<'m, 'a>(
    hosts: &'m mut BTreeMap<&'a str, HostLoad<'a>>,
    c: &DesiredCourse,
) -> Option<&'m mut HostLoad<'a>> {
    hosts
        .values_mut()
        .filter(|h| h.could_hold(c) && h.has_room(c) && h.has_boot_slot())
        .min_by(|a, b| {
            let ka = a.per_course.get(c.name.as_str()).copied().unwrap_or(0);
            let kb = b.per_course.get(c.name.as_str()).copied().unwrap_or(0);
            ka.cmp(&kb)
                .then(a.load().total_cmp(&b.load()))
                .then(a.host.name.cmp(&b.host.name))
        })
}

/// Why nothing could be placed for `c`.
fn shortfall<'a>(c: &DesiredCourse, hosts: impl Iterator<Item = &'a HostLoad<'a>>) -> Shortfall {
    let mut any_fits = false;
    let mut any_room = false;
    for h in hosts {
        if h.could_hold(c) {
            any_fits = true;
            any_room |= h.has_room(c);
        }
    }
    match (any_fits, any_room) {
        (false, _) => Shortfall::NoHostFits,
        (true, false) => Shortfall::CapacityFull,
        (true, true) => Shortfall::WaitingForBootSlots,
    }
}
