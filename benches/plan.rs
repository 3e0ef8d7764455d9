//! The planner on a large installation: 50 hosts, 1,000 courses, 10,000 VMs.
//!
//! `cargo bench --bench plan` builds one busy world (VMs in every state, some
//! outdated, some assigned with sessions, courses short of VMs, a host down,
//! removed courses, orphans) and one where nothing is to be done, then times
//! `labpool::reconcile::plan::plan` on each (warm-up, then several runs) and
//! prints min/median/max. Target: a plan of the busy world in under 100 ms.

use std::hint::black_box;
use std::time::{Duration, Instant};

use labpool::course::spec::Runtime;
use labpool::reconcile::desired::DesiredCourse;
use labpool::reconcile::plan::{
    Action, DomainSeen, Observed, ObservedHost, ObservedVm, Orphan, OrphanKind, Plan, Policy, plan,
};
use labpool::store::VmState;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

const HOSTS: usize = 50;
const COURSES: usize = 1_000;
const VMS: usize = 10_000;
const WARMUP: usize = 3;
const RUNS: usize = 20;
const TARGET: Duration = Duration::from_millis(100);
const NOW: i64 = 1_800_000_000_000;
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const IMAGES: [&str; 4] = ["busybox", "debian", "alpine", "windows"];

const POLICY: Policy = Policy {
    orphan_grace_ms: 120_000,
    default_ready_timeout_ms: 300_000,
};

fn hosts(down: usize) -> Vec<ObservedHost> {
    (0..HOSTS)
        .map(|i| ObservedHost {
            name: format!("host-{i:02}"),
            up: i >= down,
            max_vms: 300,
            memory: 512 * GIB,
            vcpu_slots: 64 * 8,
            // Every fifth host lacks the Windows image.
            images: (i % 5 == 0).then(|| IMAGES[..3].iter().map(|s| s.to_string()).collect()),
            boots_per_host: 8,
            draining: false,
            runtime: Runtime::Vm,
        })
        .collect()
}

fn course(i: usize, warm: u32) -> DesiredCourse {
    DesiredCourse {
        name: format!("course-{i:04}"),
        spec_hash: format!("{:016x}", i * 7919 + 1),
        warm,
        max: warm + 4,
        vcpus: 1 + (i % 2) as u32,
        memory: 256 * MIB * (1 + (i % 4) as u64),
        image: Some(IMAGES[i % IMAGES.len()].to_string()),
        runtime: Runtime::Vm,
        in_class: i % 10 == 3,
        ready_timeout_ms: 300_000,
        idle_ms: 1_800_000,
        backoff_until: i.is_multiple_of(97).then_some(NOW + 60_000),
    }
}

fn vm(id: usize, c: &DesiredCourse, host: usize, state: VmState) -> ObservedVm {
    ObservedVm {
        id: format!("{id:016x}"),
        course: c.name.clone(),
        host: format!("host-{host:02}"),
        spec_hash: c.spec_hash.clone(),
        state,
        since: NOW - 10_000,
        vcpus: c.vcpus,
        memory: c.memory,
        session_expires: (state == VmState::Assigned).then_some(NOW + 3_600_000),
        session_active: None,
        domain: if state == VmState::Creating {
            DomainSeen::Unknown
        } else {
            DomainSeen::Running
        },
    }
}

/// 10,000 VMs over 1,000 courses with plenty to do.
fn busy_world() -> (Vec<DesiredCourse>, Observed) {
    let rng = &mut StdRng::seed_from_u64(7);
    let desired: Vec<DesiredCourse> = (0..COURSES).map(|i| course(i, 6)).collect();
    let removed: Vec<DesiredCourse> = (0..10).map(|i| course(COURSES + i, 0)).collect();
    let mut vms = Vec::with_capacity(VMS);
    while vms.len() < VMS {
        let id = vms.len();
        // One course in ten is short of VMs: fewer of its VMs exist.
        let ci = rng.random_range(0..COURSES + removed.len());
        let c = desired.get(ci).unwrap_or_else(|| &removed[ci - COURSES]);
        if ci % 10 == 1 && rng.random_bool(0.7) {
            continue;
        }
        let state = match rng.random_range(0..100) {
            0..62 => VmState::Warm,
            62..92 => VmState::Assigned,
            92..93 => VmState::Booting,
            93..94 => VmState::Creating,
            94..97 => VmState::Failed,
            _ => VmState::Deleting,
        };
        let host = rng.random_range(0..HOSTS);
        let mut v = vm(id, c, host, state);
        if host == 0 {
            v.domain = DomainSeen::Unknown;
        }
        match rng.random_range(0..100) {
            // Outdated: built from an older spec.
            0..8 => v.spec_hash = format!("old-{}", v.spec_hash),
            // A session past its expiry, or none at all.
            8..10 if state == VmState::Assigned => v.session_expires = Some(NOW - 1),
            10..11 if state == VmState::Assigned => v.session_expires = None,
            // Domains that vanished or stopped.
            11..12 => v.domain = DomainSeen::Missing,
            12..13 => v.domain = DomainSeen::Stopped,
            // Boots that take too long.
            13..15 if matches!(state, VmState::Creating | VmState::Booting) => {
                v.since = NOW - 600_000
            }
            _ => {}
        }
        vms.push(v);
    }
    let orphans = (0..20)
        .map(|i| Orphan {
            host: format!("host-{:02}", i % HOSTS),
            kind: if i % 2 == 0 {
                OrphanKind::Domain
            } else {
                OrphanKind::Volume
            },
            name: format!("labpool-{i:016x}.qcow2"),
            first_seen: NOW - 60_000 * i as i64,
        })
        .collect();
    let mut known_courses: Vec<String> = desired.iter().map(|c| c.name.clone()).collect();
    known_courses.extend(removed.iter().map(|c| c.name.clone()));
    let observed = Observed {
        now: NOW,
        // host-00 is down.
        hosts: hosts(1),
        vms,
        orphans,
        known_courses,
        stored_idle_ms: Default::default(),
    };
    (desired, observed)
}

/// 1,000 courses at their targets: 10 warm or assigned VMs each.
fn quiet_world() -> (Vec<DesiredCourse>, Observed) {
    let desired: Vec<DesiredCourse> = (0..COURSES)
        .map(|i| DesiredCourse {
            backoff_until: None,
            ..course(i, 7)
        })
        .collect();
    let mut vms = Vec::with_capacity(VMS);
    for (i, c) in desired.iter().enumerate() {
        for k in 0..VMS / COURSES {
            let state = if k < 7 {
                VmState::Warm
            } else {
                VmState::Assigned
            };
            vms.push(vm(vms.len(), c, (i * 7 + k) % HOSTS, state));
        }
    }
    let observed = Observed {
        now: NOW,
        hosts: hosts(0),
        vms,
        orphans: Vec::new(),
        known_courses: desired.iter().map(|c| c.name.clone()).collect(),
        stored_idle_ms: Default::default(),
    };
    (desired, observed)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Times `plan` and prints min/median/max; returns the median and the plan.
fn time(label: &str, desired: &[DesiredCourse], observed: &Observed) -> (Duration, Plan) {
    for _ in 0..WARMUP {
        black_box(plan(black_box(desired), black_box(observed), &POLICY));
    }
    let mut times = Vec::with_capacity(RUNS);
    let mut last = Plan::default();
    for _ in 0..RUNS {
        let start = Instant::now();
        last = black_box(plan(black_box(desired), black_box(observed), &POLICY));
        times.push(start.elapsed());
    }
    times.sort();
    let median = times[RUNS / 2];
    let count = |f: fn(&Action) -> bool| last.actions.iter().filter(|a| f(a)).count();
    println!(
        "plan: {label}: min {:>6.2} ms  median {:>6.2} ms  max {:>6.2} ms  ({} runs); {} actions: {} create, {} destroy, {} orphan, {} forget",
        ms(times[0]),
        ms(median),
        ms(times[RUNS - 1]),
        RUNS,
        last.actions.len(),
        count(|a| matches!(a, Action::Create { .. })),
        count(|a| matches!(a, Action::Destroy { .. })),
        count(|a| matches!(a, Action::CollectOrphan { .. })),
        count(|a| matches!(a, Action::ForgetCourse { .. })),
    );
    (median, last)
}

fn main() {
    let (desired, observed) = busy_world();
    println!(
        "plan: {} hosts ({} down), {} courses, {} VMs, {} orphans",
        observed.hosts.len(),
        observed.hosts.iter().filter(|h| !h.up).count(),
        desired.len(),
        observed.vms.len(),
        observed.orphans.len()
    );
    let (busy, p) = time("busy world ", &desired, &observed);
    assert!(!p.is_empty(), "the busy world has work to do");

    let (desired, observed) = quiet_world();
    let (quiet, p) = time("nothing to do", &desired, &observed);
    assert!(
        p.is_empty(),
        "the quiet world is at its targets: {:?}",
        p.actions.first()
    );

    let met = busy.max(quiet) < TARGET;
    println!(
        "plan: target < {} ms: {}",
        TARGET.as_millis(),
        if met { "met" } else { "NOT met" }
    );
}
