//! Tests of the pure planner: one table-style test per rule of
//! [`super::plan`]'s module doc, then properties checked over many random
//! worlds (a small seeded generator, so every failure names a seed that
//! reproduces it).

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use super::desired::DesiredCourse;
use super::plan::{
    Action, CourseCounts, DestroyReason, DomainSeen, Draining, Observed, ObservedHost, ObservedVm,
    Orphan, OrphanKind, Plan, Policy, Shortfall, plan,
};
use crate::course::spec::Runtime;
use crate::store::VmState;

const NOW: i64 = 1_000_000_000;
const GIB: u64 = 1 << 30;
const HOUR: i64 = 3_600_000;
const POLICY: Policy = Policy {
    orphan_grace_ms: 120_000,
    default_ready_timeout_ms: 300_000,
};

// ---------------------------------------------------------------------------
// Builders and accessors.

fn host(name: &str) -> ObservedHost {
    ObservedHost {
        name: name.into(),
        up: true,
        max_vms: 10,
        memory: 64 * GIB,
        vcpu_slots: 64,
        images: None,
        boots_per_host: 2,
        draining: false,
        runtime: Runtime::Vm,
    }
}

fn down(name: &str) -> ObservedHost {
    ObservedHost {
        up: false,
        ..host(name)
    }
}

fn course(name: &str, warm: u32, max: u32) -> DesiredCourse {
    DesiredCourse {
        name: name.into(),
        spec_hash: format!("{name}-v1"),
        warm,
        max,
        vcpus: 1,
        memory: GIB,
        image: Some("busybox".into()),
        runtime: Runtime::Vm,
        in_class: false,
        ready_timeout_ms: 120_000,
        idle_ms: 1_800_000,
        backoff_until: None,
    }
}

/// The same course with a new build: its existing VMs become outdated.
fn respec(c: &DesiredCourse) -> DesiredCourse {
    DesiredCourse {
        spec_hash: format!("{}-v2", c.name),
        ..c.clone()
    }
}

/// A VM of `c` built from its current spec, in `state`, looking healthy: a
/// running domain (none yet while `creating`), a live session if assigned.
fn vm(id: &str, c: &DesiredCourse, host: &str, state: VmState) -> ObservedVm {
    ObservedVm {
        id: id.into(),
        course: c.name.clone(),
        host: host.into(),
        spec_hash: c.spec_hash.clone(),
        state,
        since: NOW - 1_000,
        vcpus: c.vcpus,
        memory: c.memory,
        session_expires: (state == VmState::Assigned).then_some(NOW + HOUR),
        session_active: None,
        domain: if state == VmState::Creating {
            DomainSeen::Unknown
        } else {
            DomainSeen::Running
        },
    }
}

fn world(hosts: Vec<ObservedHost>, vms: Vec<ObservedVm>) -> Observed {
    Observed {
        now: NOW,
        hosts,
        vms,
        orphans: Vec::new(),
        known_courses: Vec::new(),
        stored_idle_ms: BTreeMap::new(),
    }
}

fn creates(p: &Plan) -> Vec<(&str, &str)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Create { course, host, .. } => Some((course.as_str(), host.as_str())),
            _ => None,
        })
        .collect()
}

fn create_hosts(p: &Plan) -> Vec<&str> {
    creates(p).into_iter().map(|(_, h)| h).collect()
}

fn destroys(p: &Plan) -> Vec<(&str, DestroyReason)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Destroy { vm, reason, .. } => Some((vm.as_str(), *reason)),
            _ => None,
        })
        .collect()
}

fn counts<'a>(p: &'a Plan, course: &str) -> &'a CourseCounts {
    p.courses
        .iter()
        .find(|c| c.course == course)
        .unwrap_or_else(|| panic!("no counts for {course}: {:?}", p.courses))
}

fn forgets(p: &Plan) -> Vec<&str> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::ForgetCourse { course } => Some(course.as_str()),
            _ => None,
        })
        .collect()
}

/// `n` VMs of `c` on `host` in `state`, with ids `{prefix}0`, `{prefix}1`, ...
fn many(prefix: &str, n: usize, c: &DesiredCourse, host: &str, state: VmState) -> Vec<ObservedVm> {
    (0..n)
        .map(|i| vm(&format!("{prefix}{i}"), c, host, state))
        .collect()
}

// ---------------------------------------------------------------------------
// Filling and placing.

#[test]
fn empty_pool_fills_up_to_warm_capped_by_boot_slots() {
    // (hosts, boots per host, warm) -> creates, shortfall
    let table: &[(usize, u32, u32, usize, Option<Shortfall>)] = &[
        (1, 2, 1, 1, None),
        (1, 2, 2, 2, None),
        (1, 2, 5, 2, Some(Shortfall::WaitingForBootSlots)),
        (2, 2, 5, 4, Some(Shortfall::WaitingForBootSlots)),
        (3, 2, 5, 5, None),
        (3, 1, 3, 3, None),
        (1, 10, 0, 0, None),
    ];
    for &(n_hosts, boots, warm, want, ref shortfall) in table {
        let hosts = (0..n_hosts)
            .map(|i| ObservedHost {
                boots_per_host: boots,
                ..host(&format!("h{i}"))
            })
            .collect();
        let c = course("c", warm, 40);
        let p = plan(std::slice::from_ref(&c), &world(hosts, vec![]), &POLICY);
        let case = format!("{n_hosts} host(s), {boots} boot slot(s), warm {warm}");
        assert_eq!(creates(&p).len(), want, "{case}: {:?}", p.actions);
        assert!(
            p.actions
                .iter()
                .all(|a| matches!(a, Action::Create { spec_hash, .. } if spec_hash == "c-v1")),
            "{case}: only creates of the current spec: {:?}",
            p.actions
        );
        assert_eq!(&counts(&p, "c").shortfall, shortfall, "{case}");
        assert_eq!(counts(&p, "c").target, warm, "{case}");
        // No host gets more creates than its boot slots.
        let mut per_host: HashMap<&str, u32> = HashMap::new();
        for h in create_hosts(&p) {
            *per_host.entry(h).or_default() += 1;
        }
        assert!(
            per_host.values().all(|n| *n <= boots),
            "{case}: {per_host:?}"
        );
    }
}

#[test]
fn booting_vms_hold_their_boot_slots() {
    let c = course("c", 4, 40);
    // Two already booting on h0 (of another course): no slot left there.
    let other = course("o", 2, 2);
    let vms = vec![
        vm("o0", &other, "h0", VmState::Creating),
        vm("o1", &other, "h0", VmState::Booting),
    ];
    let p = plan(
        &[c, other],
        &world(vec![host("h0"), host("h1")], vms),
        &POLICY,
    );
    assert_eq!(create_hosts(&p), vec!["h1", "h1"], "{:?}", p.actions);
    assert_eq!(
        counts(&p, "c").shortfall,
        Some(Shortfall::WaitingForBootSlots)
    );
}

#[test]
fn a_course_spreads_over_hosts() {
    let c = course("c", 3, 40);
    let p = plan(
        std::slice::from_ref(&c),
        &world(vec![host("h0"), host("h1"), host("h2")], vec![]),
        &POLICY,
    );
    let mut hosts = create_hosts(&p);
    hosts.sort();
    assert_eq!(hosts, vec!["h0", "h1", "h2"]);

    // Existing VMs of the course count: the new ones go where it has fewest,
    // even when that host is busier with other courses.
    let other = course("o", 4, 4);
    let mut vms = many("c", 2, &c, "h0", VmState::Warm);
    vms.push(vm("c9", &c, "h2", VmState::Warm));
    vms.extend(many("o", 4, &other, "h1", VmState::Warm));
    let c4 = course("c", 4, 40);
    let p = plan(
        &[c4, other],
        &world(vec![host("h0"), host("h1"), host("h2")], vms),
        &POLICY,
    );
    assert_eq!(create_hosts(&p), vec!["h1"], "{:?}", p.actions);
}

#[test]
fn least_loaded_host_is_chosen() {
    // Another course that keeps its VMs and wants no more: only load.
    let other = DesiredCourse {
        in_class: true,
        ..course("o", 0, 20)
    };
    let big = DesiredCourse {
        memory: 16 * GIB,
        vcpus: 8,
        ..course("big", 1, 1)
    };
    // (vms of `o` on h0, h1, h2) -> host for the one new VM
    let table: &[([usize; 3], &str)] = &[
        ([5, 1, 3], "h1"),
        ([0, 1, 3], "h0"),
        ([2, 2, 1], "h2"),
        ([2, 2, 2], "h0"), // a tie: by name
    ];
    for (loads, want) in table {
        let mut vms = Vec::new();
        for (i, n) in loads.iter().enumerate() {
            vms.extend(many(
                &format!("o{i}-"),
                *n,
                &other,
                &format!("h{i}"),
                VmState::Warm,
            ));
        }
        let c = course("c", 1, 4);
        let p = plan(
            &[c, other.clone()],
            &world(vec![host("h0"), host("h1"), host("h2")], vms),
            &POLICY,
        );
        assert_eq!(create_hosts(&p), vec![*want], "loads {loads:?}");
    }
    // Load is the busiest resource: one big VM on h0 (1/4 of its memory)
    // outweighs two small ones on h1 (2/10 VMs, 2/64 memory).
    let mut vms = vec![vm("b", &big, "h0", VmState::Warm)];
    vms.extend(many("o", 2, &other, "h1", VmState::Warm));
    let p = plan(
        &[course("c", 1, 4), other, big],
        &world(vec![host("h0"), host("h1")], vms),
        &POLICY,
    );
    assert_eq!(create_hosts(&p), vec!["h1"]);
}

#[test]
fn no_placement_when_no_host_fits() {
    let c = course("c", 2, 4);
    let cases: Vec<(&str, Vec<ObservedHost>, DesiredCourse)> = vec![
        (
            "image not carried",
            vec![ObservedHost {
                images: Some(vec!["other".into()]),
                ..host("h0")
            }],
            c.clone(),
        ),
        ("no host at all", vec![], c.clone()),
        ("only host down", vec![down("h0")], c.clone()),
        (
            "VM larger than any host's memory",
            vec![host("h0")],
            DesiredCourse {
                memory: 65 * GIB,
                ..c.clone()
            },
        ),
        (
            "more vCPUs than any host's slots",
            vec![host("h0")],
            DesiredCourse {
                vcpus: 65,
                ..c.clone()
            },
        ),
        (
            "host with no VM capacity",
            vec![ObservedHost {
                max_vms: 0,
                ..host("h0")
            }],
            c.clone(),
        ),
    ];
    for (case, hosts, c) in cases {
        let p = plan(std::slice::from_ref(&c), &world(hosts, vec![]), &POLICY);
        assert!(p.actions.is_empty(), "{case}: {:?}", p.actions);
        assert_eq!(
            counts(&p, "c").shortfall,
            Some(Shortfall::NoHostFits),
            "{case}"
        );
    }
    // The host that carries the image is chosen even when it is the busier.
    let other = course("o", 3, 3);
    let hosts = vec![
        ObservedHost {
            images: Some(vec!["busybox".into()]),
            ..host("h0")
        },
        ObservedHost {
            images: Some(vec!["debian".into()]),
            ..host("h1")
        },
    ];
    let p = plan(
        &[c, other.clone()],
        &world(hosts, many("o", 3, &other, "h0", VmState::Warm)),
        &POLICY,
    );
    assert_eq!(create_hosts(&p), vec!["h0", "h0"]);
}

#[test]
fn full_hosts_report_capacity_full() {
    let c = course("c", 1, 4);
    let other = course("o", 2, 2);
    let filler = many("o", 2, &other, "h0", VmState::Warm);
    let cases: Vec<(&str, ObservedHost)> = vec![
        (
            "VM count",
            ObservedHost {
                max_vms: 2,
                ..host("h0")
            },
        ),
        (
            "memory",
            ObservedHost {
                memory: 2 * GIB,
                ..host("h0")
            },
        ),
        (
            "vCPU slots",
            ObservedHost {
                vcpu_slots: 2,
                ..host("h0")
            },
        ),
    ];
    for (case, h) in cases {
        let p = plan(
            &[c.clone(), other.clone()],
            &world(vec![h, down("h1")], filler.clone()),
            &POLICY,
        );
        assert!(p.actions.is_empty(), "{case}: {:?}", p.actions);
        assert_eq!(
            counts(&p, "c").shortfall,
            Some(Shortfall::CapacityFull),
            "{case}"
        );
    }
}

#[test]
fn destroys_free_capacity_for_creates_in_the_same_plan() {
    let c = course("c", 1, 4);
    let h = ObservedHost {
        max_vms: 1,
        ..host("h0")
    };
    let p = plan(
        std::slice::from_ref(&c),
        &world(vec![h], vec![vm("f", &c, "h0", VmState::Failed)]),
        &POLICY,
    );
    assert_eq!(destroys(&p), vec![("f", DestroyReason::Failed)]);
    assert_eq!(create_hosts(&p), vec!["h0"]);
}

#[test]
fn backoff_holds_creates() {
    // (backoff_until) -> creates
    let table: &[(Option<i64>, usize)] = &[
        (None, 2),
        (Some(NOW - 1), 2),
        (Some(NOW), 2),
        (Some(NOW + 1), 0),
        (Some(NOW + HOUR), 0),
    ];
    for &(until, want) in table {
        let c = DesiredCourse {
            backoff_until: until,
            ..course("c", 2, 4)
        };
        let p = plan(&[c], &world(vec![host("h0")], vec![]), &POLICY);
        assert_eq!(creates(&p).len(), want, "backoff until {until:?}");
        let expected = match until {
            Some(u) if u > NOW => Some(Shortfall::BackingOff { until: u }),
            _ => None,
        };
        assert_eq!(counts(&p, "c").shortfall, expected, "{until:?}");
    }
}

// ---------------------------------------------------------------------------
// Taking away: surplus, outdated, class time.

#[test]
fn surplus_goes_booting_first() {
    // (fresh warm, fresh booting, target) -> (booting destroyed, warm destroyed)
    let table: &[(usize, usize, u32, usize, usize)] = &[
        (3, 0, 3, 0, 0),
        (4, 0, 3, 0, 1),
        (3, 2, 3, 2, 0),
        (3, 2, 2, 2, 1),
        (0, 3, 1, 2, 0),
        (2, 2, 0, 2, 2),
    ];
    for &(warm, booting, target, want_booting, want_warm) in table {
        let c = course("c", target, 40);
        let mut vms = many("w", warm, &c, "h0", VmState::Warm);
        vms.extend(many("b", booting, &c, "h0", VmState::Booting));
        let p = plan(
            std::slice::from_ref(&c),
            &world(vec![host("h0")], vms),
            &POLICY,
        );
        let case = format!("{warm} warm + {booting} booting, target {target}");
        let gone = destroys(&p);
        assert!(
            gone.iter().all(|(_, r)| *r == DestroyReason::Surplus),
            "{case}: {gone:?}"
        );
        let booting_gone = gone.iter().filter(|(id, _)| id.starts_with('b')).count();
        let warm_gone = gone.iter().filter(|(id, _)| id.starts_with('w')).count();
        assert_eq!(
            (booting_gone, warm_gone),
            (want_booting, want_warm),
            "{case}"
        );
        assert!(creates(&p).is_empty(), "{case}");
    }
}

#[test]
fn spec_change_replaces_rolling() {
    let old = course("c", 2, 4);
    let new = respec(&old);
    let hosts = || vec![host("h0"), host("h1")];

    // 1. Two outdated warm: two fresh ones are created, the old ones stay.
    let vms = many("old", 2, &old, "h0", VmState::Warm);
    let p = plan(
        std::slice::from_ref(&new),
        &world(hosts(), vms.clone()),
        &POLICY,
    );
    assert_eq!(creates(&p).len(), 2, "{:?}", p.actions);
    assert!(destroys(&p).is_empty(), "{:?}", p.actions);
    assert!(
        p.actions
            .iter()
            .all(|a| matches!(a, Action::Create { spec_hash, .. } if spec_hash == "c-v2"))
    );
    assert_eq!(counts(&p, "c").outdated, 2);

    // 2. While the fresh ones boot: nothing to do.
    let mut vms2 = vms.clone();
    vms2.extend(many("new", 2, &new, "h1", VmState::Booting));
    let p = plan(std::slice::from_ref(&new), &world(hosts(), vms2), &POLICY);
    assert!(p.actions.is_empty(), "{:?}", p.actions);

    // 3. One fresh warm: one old one goes.
    let mut vms3 = vms.clone();
    vms3.push(vm("new0", &new, "h1", VmState::Warm));
    vms3.push(vm("new1", &new, "h1", VmState::Booting));
    let p = plan(std::slice::from_ref(&new), &world(hosts(), vms3), &POLICY);
    let gone = destroys(&p);
    assert_eq!(gone.len(), 1, "{:?}", p.actions);
    assert!(gone[0].0.starts_with("old") && gone[0].1 == DestroyReason::Outdated);
    assert!(creates(&p).is_empty());

    // 4. Both fresh warm: the old ones go.
    let mut vms4 = vms.clone();
    vms4.extend(many("new", 2, &new, "h1", VmState::Warm));
    let p = plan(std::slice::from_ref(&new), &world(hosts(), vms4), &POLICY);
    let mut gone = destroys(&p);
    gone.sort_by_key(|(id, _)| *id);
    assert_eq!(
        gone,
        vec![
            ("old0", DestroyReason::Outdated),
            ("old1", DestroyReason::Outdated)
        ]
    );
    assert!(creates(&p).is_empty());

    // Outdated VMs still booting serve nobody: they go at once.
    let vms5 = vec![
        vm("oc", &old, "h0", VmState::Creating),
        vm("ob", &old, "h0", VmState::Booting),
    ];
    let p = plan(std::slice::from_ref(&new), &world(hosts(), vms5), &POLICY);
    let mut gone = destroys(&p);
    gone.sort_by_key(|(id, _)| *id);
    assert_eq!(
        gone,
        vec![
            ("ob", DestroyReason::Outdated),
            ("oc", DestroyReason::Outdated)
        ]
    );
    assert_eq!(creates(&p).len(), 2);

    // Assigned VMs of the old spec are left to their students.
    let vms6 = vec![vm("oa", &old, "h0", VmState::Assigned)];
    let p = plan(std::slice::from_ref(&new), &world(hosts(), vms6), &POLICY);
    assert!(destroys(&p).is_empty());
    assert_eq!(counts(&p, "c").outdated, 0);
}

#[test]
fn a_replacement_at_max_surges_by_one_where_a_host_has_room() {
    // (max, outdated warm, assigned) -> (outdated destroyed, creates); target
    // 2 (capped to max - assigned), two hosts with room to spare.
    let table: &[(u32, usize, usize, usize, usize)] = &[
        (4, 2, 0, 0, 2), // room for all: rolling
        (3, 2, 0, 0, 2), // room for one more, plus the surge: none goes yet
        (2, 2, 0, 1, 2), // at max: one stays past max while the new boot
        (3, 2, 1, 1, 2), // the assigned one takes the room; one stays
        (2, 1, 1, 0, 1), // target capped to 1: the one outdated stays
    ];
    for &(max, outdated, assigned, want_gone, want_creates) in table {
        let old = course("c", 2, max);
        let new = respec(&old);
        let mut vms = many("old", outdated, &old, "h0", VmState::Warm);
        vms.extend(many("a", assigned, &new, "h0", VmState::Assigned));
        let p = plan(
            std::slice::from_ref(&new),
            &world(vec![host("h0"), host("h1")], vms.clone()),
            &POLICY,
        );
        let case = format!("max {max}, {outdated} outdated, {assigned} assigned");
        let gone = destroys(&p);
        assert!(
            gone.iter()
                .all(|(id, r)| id.starts_with("old") && *r == DestroyReason::Outdated),
            "{case}: {gone:?}"
        );
        assert_eq!(gone.len(), want_gone, "{case}: {:?}", p.actions);
        assert_eq!(creates(&p).len(), want_creates, "{case}: {:?}", p.actions);
        let alive = outdated + assigned - want_gone + want_creates;
        assert!(alive <= max as usize + 1, "{case}: {alive} alive");
        assert!(
            outdated > want_gone,
            "{case}: a warm VM stays while the new boot"
        );

        // The next pass, the replacements booting: nothing goes (the surge
        // is under way, though the hosts may be full now).
        let mut next = vms;
        next.retain(|v| !gone.iter().any(|(id, _)| *id == v.id));
        next.extend(many("new", want_creates, &new, "h1", VmState::Booting));
        let full = |name: &str| ObservedHost {
            max_vms: next.iter().filter(|v| v.host == name).count() as u32,
            ..host(name)
        };
        let p = plan(
            std::slice::from_ref(&new),
            &world(vec![full("h0"), full("h1")], next.clone()),
            &POLICY,
        );
        assert!(p.actions.is_empty(), "{case}, booting: {:?}", p.actions);

        // Once they are warm, the outdated ones go.
        for v in &mut next {
            if v.state == VmState::Booting {
                v.state = VmState::Warm;
            }
        }
        let p = plan(
            std::slice::from_ref(&new),
            &world(vec![host("h0"), host("h1")], next),
            &POLICY,
        );
        assert_eq!(
            destroys(&p).len(),
            outdated - want_gone,
            "{case}, warm: {:?}",
            p.actions
        );
        assert!(creates(&p).is_empty(), "{case}, warm: {:?}", p.actions);
    }
}

#[test]
fn no_room_to_surge_gives_up_outdated_warm_vms() {
    // No host has room for one more VM: at max the outdated warm VMs go
    // first to make room, as many as the creates need.
    // (max, outdated warm, assigned) -> (outdated destroyed, creates); target 2.
    let table: &[(u32, usize, usize, usize, usize)] = &[
        (2, 2, 0, 2, 2), // none: both go
        (3, 2, 1, 2, 2), // the assigned one takes the room
        (2, 1, 1, 1, 1), // target capped to max - assigned = 1
    ];
    for &(max, outdated, assigned, want_gone, want_creates) in table {
        let old = course("c", 2, max);
        let new = respec(&old);
        let mut vms = many("old", outdated, &old, "h0", VmState::Warm);
        vms.extend(many("a", assigned, &new, "h0", VmState::Assigned));
        let full = ObservedHost {
            max_vms: (outdated + assigned) as u32,
            ..host("h0")
        };
        let p = plan(std::slice::from_ref(&new), &world(vec![full], vms), &POLICY);
        let case = format!("max {max}, {outdated} outdated, {assigned} assigned");
        let gone = destroys(&p);
        assert!(
            gone.iter()
                .all(|(id, r)| id.starts_with("old") && *r == DestroyReason::Outdated),
            "{case}: {gone:?}"
        );
        assert_eq!(gone.len(), want_gone, "{case}: {:?}", p.actions);
        assert_eq!(creates(&p).len(), want_creates, "{case}: {:?}", p.actions);
        let alive = outdated + assigned - want_gone + want_creates;
        assert!(alive <= max as usize, "{case}: {alive} alive");
    }
}

#[test]
fn a_surge_whose_room_another_course_takes_falls_back_to_destroying_first() {
    // One host with one free slot. Course "a" (fresh, empty) and course "b"
    // (at max, an outdated warm VM) both want it; "a" is placed first (by
    // name), so "b"'s surge has no room after all: its outdated VM goes in
    // this plan and its replacement takes the capacity it frees, as when
    // there was no room, and a second plan has nothing to add.
    let a = course("a", 1, 4);
    let old = course("b", 1, 1);
    let b = respec(&old);
    let desired = vec![a, b.clone()];
    let vms = vec![vm("old", &old, "h0", VmState::Warm)];
    let h0 = ObservedHost {
        max_vms: 2,
        ..host("h0")
    };
    let w = world(vec![h0], vms);
    let p = plan(&desired, &w, &POLICY);
    assert_eq!(destroys(&p), vec![("old", DestroyReason::Outdated)]);
    let mut made = creates(&p);
    made.sort();
    assert_eq!(made, vec![("a", "h0"), ("b", "h0")], "{:?}", p.actions);
    let first_create = p
        .actions
        .iter()
        .position(|a| matches!(a, Action::Create { .. }))
        .unwrap();
    assert!(
        matches!(p.actions[first_create - 1], Action::Destroy { .. }),
        "destroys come before creates: {:?}",
        p.actions
    );
    assert_eq!(counts(&p, "b").shortfall, None);
    let again = plan(&desired, &simulate(&desired, &w, &p), &POLICY);
    assert!(again.actions.is_empty(), "{:?}", again.actions);
    check_plan(&desired, &w, &p).unwrap();
}

#[test]
fn creates_stay_within_max_when_a_course_is_over_it() {
    // A host came back: 1 assigned, 1 fresh warm, 1 fresh booting and 2
    // outdated warm VMs, 5 alive with `max` 4. The target (3) wants one more
    // fresh VM: with the surge of one (a fresh VM is booting) one outdated
    // VM stays, so one must go to make room for it, not none.
    let old = course("c", 3, 4);
    let new = respec(&old);
    let vms = vec![
        vm("a", &new, "h0", VmState::Assigned),
        vm("fw", &new, "h0", VmState::Warm),
        vm("fb", &new, "h0", VmState::Booting),
        vm("old0", &old, "h1", VmState::Warm),
        vm("old1", &old, "h1", VmState::Warm),
    ];
    let hosts = || vec![host("h0"), host("h1")];
    let p = plan(
        std::slice::from_ref(&new),
        &world(hosts(), vms.clone()),
        &POLICY,
    );
    assert_eq!(destroys(&p), vec![("old1", DestroyReason::Outdated)]);
    assert_eq!(creates(&p).len(), 1);

    // In class nothing goes, so there is no room: nothing is created.
    let in_class = DesiredCourse {
        in_class: true,
        ..new
    };
    let p = plan(
        std::slice::from_ref(&in_class),
        &world(hosts(), vms),
        &POLICY,
    );
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

#[test]
fn in_class_nothing_is_taken_away() {
    let old = course("c", 1, 10);
    let new = DesiredCourse {
        in_class: true,
        ..respec(&old)
    };
    let mut vms = many("fw", 3, &new, "h0", VmState::Warm); // surplus
    vms.extend(many("fb", 1, &new, "h0", VmState::Booting)); // surplus
    vms.extend(many("ow", 2, &old, "h0", VmState::Warm)); // outdated
    vms.extend(many("ob", 1, &old, "h0", VmState::Booting)); // outdated
    let p = plan(
        std::slice::from_ref(&new),
        &world(vec![host("h0")], vms),
        &POLICY,
    );
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(counts(&p, "c").in_class);

    // Broken VMs still go in class; creates stay within max.
    let c = DesiredCourse {
        in_class: true,
        ..course("c", 4, 4)
    };
    let new = DesiredCourse {
        spec_hash: "c-v2".into(),
        ..c.clone()
    };
    let mut vms = many("ow", 2, &c, "h0", VmState::Warm);
    vms.push(vm("f", &new, "h0", VmState::Failed));
    let p = plan(
        std::slice::from_ref(&new),
        &world(vec![host("h0"), host("h1")], vms),
        &POLICY,
    );
    assert_eq!(destroys(&p), vec![("f", DestroyReason::Failed)]);
    assert_eq!(creates(&p).len(), 2, "max 4 minus 2 outdated kept");
}

// ---------------------------------------------------------------------------
// Per-VM rules.

#[test]
fn broken_vms_are_destroyed_and_replaced() {
    let c = course("c", 1, 4);
    let timeout = c.ready_timeout_ms;
    let with = |state: VmState, domain: DomainSeen, since: i64| ObservedVm {
        domain,
        since,
        ..vm("v", &c, "h0", state)
    };
    let assigned = |expires: Option<i64>| ObservedVm {
        session_expires: expires,
        session_active: None,
        ..vm("v", &c, "h0", VmState::Assigned)
    };
    let recent = NOW - 1_000;
    use DestroyReason as R;
    use DomainSeen as D;
    use VmState as S;
    let table: Vec<(&str, ObservedVm, Option<DestroyReason>)> = vec![
        ("warm, running", with(S::Warm, D::Running, recent), None),
        (
            "warm, missing",
            with(S::Warm, D::Missing, recent),
            Some(R::Vanished),
        ),
        (
            "warm, stopped",
            with(S::Warm, D::Stopped, recent),
            Some(R::Vanished),
        ),
        (
            "booting, missing",
            with(S::Booting, D::Missing, recent),
            Some(R::Vanished),
        ),
        (
            "booting, stopped (paused)",
            with(S::Booting, D::Stopped, recent),
            None,
        ),
        (
            "creating, missing",
            with(S::Creating, D::Missing, recent),
            None,
        ),
        (
            "assigned, missing",
            ObservedVm {
                domain: D::Missing,
                ..assigned(Some(NOW + HOUR))
            },
            Some(R::Vanished),
        ),
        (
            "assigned, stopped",
            ObservedVm {
                domain: D::Stopped,
                ..assigned(Some(NOW + HOUR))
            },
            Some(R::Vanished),
        ),
        (
            "failed",
            with(S::Failed, D::Running, recent),
            Some(R::Failed),
        ),
        (
            "failed, missing",
            with(S::Failed, D::Missing, recent),
            Some(R::Failed),
        ),
        (
            "deleting",
            with(S::Deleting, D::Running, recent),
            Some(R::Unfinished),
        ),
        (
            "deleting, missing",
            with(S::Deleting, D::Missing, recent),
            Some(R::Unfinished),
        ),
        (
            "booting at the timeout",
            with(S::Booting, D::Running, NOW - timeout),
            None,
        ),
        (
            "booting past the timeout",
            with(S::Booting, D::Running, NOW - timeout - 1),
            Some(R::BootTimeout),
        ),
        (
            "creating past the timeout",
            with(S::Creating, D::Unknown, NOW - timeout - 1),
            Some(R::BootTimeout),
        ),
        (
            "warm for long",
            with(S::Warm, D::Running, NOW - 100 * timeout),
            None,
        ),
        ("assigned, live session", assigned(Some(NOW + 1)), None),
        (
            "assigned, expired now",
            assigned(Some(NOW)),
            Some(R::Expired),
        ),
        (
            "assigned, expired",
            assigned(Some(NOW - HOUR)),
            Some(R::Expired),
        ),
        (
            "assigned, no session",
            assigned(None),
            Some(R::SessionEnded),
        ),
        (
            "assigned, typed a moment ago",
            ObservedVm {
                session_active: Some(NOW - c.idle_ms + 1),
                ..assigned(Some(NOW + HOUR))
            },
            None,
        ),
        (
            "assigned, idle for the course's timeout",
            ObservedVm {
                session_active: Some(NOW - c.idle_ms),
                ..assigned(Some(NOW + HOUR))
            },
            Some(R::Idle),
        ),
        (
            "assigned, expired and idle",
            ObservedVm {
                session_active: Some(NOW - 2 * c.idle_ms),
                ..assigned(Some(NOW - 1))
            },
            Some(R::Expired),
        ),
    ];
    for (case, v, want) in table {
        let p = plan(
            std::slice::from_ref(&c),
            &world(vec![host("h0"), host("h1")], vec![v.clone()]),
            &POLICY,
        );
        let gone = destroys(&p);
        match want {
            Some(reason) => {
                assert_eq!(gone, vec![("v", reason)], "{case}");
                // Replaced at once (warm 1: there is no other VM).
                assert_eq!(creates(&p).len(), 1, "{case}: {:?}", p.actions);
            }
            None => {
                assert!(gone.is_empty(), "{case}: {gone:?}");
                let want_creates = usize::from(v.state == S::Assigned);
                assert_eq!(creates(&p).len(), want_creates, "{case}: {:?}", p.actions);
            }
        }
    }
}

#[test]
fn removed_course_drains() {
    let gone_course = course("old", 2, 4);
    let keep = course("c", 0, 4);
    let known = vec!["c".to_string(), "old".to_string()];
    let run = |vms: Vec<ObservedVm>, hosts: Vec<ObservedHost>| {
        let mut w = world(hosts, vms);
        w.known_courses = known.clone();
        plan(std::slice::from_ref(&keep), &w, &POLICY)
    };

    // Creating, booting and warm go at once; the assigned one stays: no forget.
    let vms = vec![
        vm("c", &gone_course, "h0", VmState::Creating),
        vm("b", &gone_course, "h0", VmState::Booting),
        vm("w", &gone_course, "h0", VmState::Warm),
        vm("a", &gone_course, "h0", VmState::Assigned),
    ];
    let p = run(vms, vec![host("h0")]);
    let mut gone = destroys(&p);
    gone.sort_by_key(|(id, _)| *id);
    assert_eq!(
        gone,
        vec![
            ("b", DestroyReason::CourseRemoved),
            ("c", DestroyReason::CourseRemoved),
            ("w", DestroyReason::CourseRemoved),
        ]
    );
    assert!(forgets(&p).is_empty());
    assert!(creates(&p).is_empty());
    let counts = counts(&p, "old");
    assert!(!counts.desired);
    assert_eq!(counts.assigned, 1);
    assert_eq!(counts.target, 0);
    assert_eq!(
        counts.draining,
        Some(Draining {
            students: 1,
            hard_stop: NOW + HOUR
        })
    );

    // Everything goes in this plan (the assigned one expired): forgotten.
    let vms = vec![
        vm("w", &gone_course, "h0", VmState::Warm),
        ObservedVm {
            session_expires: Some(NOW - 1),
            session_active: None,
            ..vm("a", &gone_course, "h0", VmState::Assigned)
        },
    ];
    let p = run(vms, vec![host("h0")]);
    assert_eq!(
        destroys(&p),
        vec![
            ("w", DestroyReason::CourseRemoved),
            ("a", DestroyReason::Expired)
        ]
    );
    assert_eq!(forgets(&p), vec!["old"]);

    // Nothing left at all: forgotten. A course still desired never is.
    let p = run(vec![], vec![host("h0")]);
    assert_eq!(forgets(&p), vec!["old"]);

    // A VM on a host that is down is left alone, and keeps the course known.
    let p = run(
        vec![vm("w", &gone_course, "h1", VmState::Warm)],
        vec![host("h0"), down("h1")],
    );
    assert!(p.actions.is_empty(), "{:?}", p.actions);

    // A VM of a removed course that times out booting uses the default timeout.
    let slow = ObservedVm {
        since: NOW - POLICY.default_ready_timeout_ms - 1,
        ..vm("s", &gone_course, "h0", VmState::Booting)
    };
    let p = run(vec![slow], vec![host("h0")]);
    assert_eq!(destroys(&p), vec![("s", DestroyReason::BootTimeout)]);
}

#[test]
fn a_draining_course_counts_its_students_and_its_hard_stop() {
    // Students on an up host and on a down one: all hold their VMs, and the
    // last hard expiry is the drain's hard stop. An expired or ended session
    // is not a student.
    let gone_course = course("old", 2, 4);
    let keep = course("c", 0, 4);
    let at = |id: &str, host: &str, expires: Option<i64>| ObservedVm {
        session_expires: expires,
        ..vm(id, &gone_course, host, VmState::Assigned)
    };
    let vms = vec![
        at("a0", "h0", Some(NOW + HOUR)),
        at("a1", "h0", Some(NOW + 3 * HOUR)),
        at("a2", "h1", Some(NOW + 2 * HOUR)),
        at("x0", "h0", Some(NOW - 1)),
        at("x1", "h0", None),
        vm("w", &gone_course, "h0", VmState::Warm),
    ];
    let mut w = world(vec![host("h0"), down("h1")], vms);
    w.known_courses = vec!["c".into(), "old".into()];
    let p = plan(std::slice::from_ref(&keep), &w, &POLICY);
    let counts = counts(&p, "old");
    assert_eq!((counts.target, counts.warm, counts.assigned), (0, 0, 3));
    assert_eq!(
        counts.draining,
        Some(Draining {
            students: 3,
            hard_stop: NOW + 3 * HOUR
        })
    );
    let condition = super::execute::condition(counts);
    assert_eq!(condition.status, "Draining");
    assert_eq!(
        condition.reason,
        super::execute::draining_reason(3, NOW + 3 * HOUR)
    );
    assert!(
        condition
            .reason
            .starts_with("draining (3 students, hard stop 1970-01-12 "),
        "{condition:?}"
    );
    // A removed course's sessions still end when idle (by its stored file's
    // `idle`), as README's sessions do.
    let idle = ObservedVm {
        session_active: Some(NOW - 2 * HOUR),
        ..at("i0", "h0", Some(NOW + HOUR))
    };
    let mut w2 = world(vec![host("h0")], vec![idle.clone()]);
    w2.known_courses = vec!["old".into()];
    w2.stored_idle_ms.insert("old".into(), HOUR);
    let p2 = plan(std::slice::from_ref(&keep), &w2, &POLICY);
    assert_eq!(destroys(&p2), vec![("i0", DestroyReason::Idle)]);
    w2.stored_idle_ms.insert("old".into(), 3 * HOUR);
    let p2 = plan(std::slice::from_ref(&keep), &w2, &POLICY);
    assert!(destroys(&p2).is_empty(), "{:?}", p2.actions);

    // A desired course never drains.
    assert_eq!(
        p.courses
            .iter()
            .find(|c| c.course == "c")
            .map(|c| c.draining),
        Some(None)
    );
}

// ---------------------------------------------------------------------------
// Hosts that are down, orphans.

#[test]
fn assigned_vms_on_a_down_host_count_against_max() {
    // max 3, warm 2: two students on h0, which is down, and one on h1. The
    // target is what the planner aims for, with all three students counted
    // (the launch counts their sessions against `max` too): 0, not 2.
    let c = course("c", 2, 3);
    let mut vms = many("a", 2, &c, "h0", VmState::Assigned);
    for v in &mut vms {
        v.domain = DomainSeen::Unknown;
    }
    vms.push(vm("b", &c, "h1", VmState::Assigned));
    let w = world(vec![down("h0"), host("h1"), host("h2")], vms.clone());
    let p = plan(std::slice::from_ref(&c), &w, &POLICY);
    assert!(creates(&p).is_empty(), "{:?}", p.actions);
    let c0 = counts(&p, "c");
    assert_eq!((c0.target, c0.assigned, c0.unreachable), (0, 3, 2));
    assert_eq!(c0.shortfall, Some(Shortfall::AtMax));
    assert!(c0.target + c0.assigned <= c.max);

    // One of them ended (its session expired while the host was down): it
    // no longer counts, and one warm VM has room.
    vms[0].session_expires = Some(NOW - 1);
    let p = plan(
        std::slice::from_ref(&c),
        &world(vec![down("h0"), host("h1"), host("h2")], vms),
        &POLICY,
    );
    let after = counts(&p, "c");
    assert_eq!((after.target, after.assigned), (1, 2));
    assert_eq!(creates(&p).len(), 1);
}

#[test]
fn down_host_is_left_alone_and_replaced_elsewhere() {
    let c = course("c", 2, 40);
    let mut vms = many("w", 2, &c, "h0", VmState::Warm);
    vms.push(vm("f", &c, "h0", VmState::Failed));
    vms.push(vm("d", &c, "h0", VmState::Deleting));
    vms.push(ObservedVm {
        session_expires: Some(NOW - HOUR),
        session_active: None,
        ..vm("a", &c, "h0", VmState::Assigned)
    });
    for v in &mut vms {
        v.domain = DomainSeen::Unknown;
    }
    let mut w = world(vec![down("h0"), host("h1"), host("h2")], vms);
    w.orphans.push(Orphan {
        host: "h0".into(),
        kind: OrphanKind::Domain,
        name: "labpool-x".into(),
        first_seen: NOW - HOUR,
    });
    let p = plan(std::slice::from_ref(&c), &w, &POLICY);
    assert!(
        p.actions.iter().all(|a| match a {
            Action::Create { host, .. }
            | Action::Destroy { host, .. }
            | Action::CollectOrphan { host, .. }
            | Action::Adopt { host, .. } => host != "h0",
            Action::ForgetCourse { .. } => true,
        }),
        "{:?}",
        p.actions
    );
    let mut hosts = create_hosts(&p);
    hosts.sort();
    assert_eq!(hosts, vec!["h1", "h2"]);
    let counts = counts(&p, "c");
    assert_eq!((counts.warm, counts.unreachable), (0, 5));

    // When it returns, the surplus goes.
    let mut vms = many("w", 2, &c, "h0", VmState::Warm);
    vms.extend(many("n", 2, &c, "h1", VmState::Warm));
    let p = plan(
        std::slice::from_ref(&c),
        &world(vec![host("h0"), host("h1")], vms),
        &POLICY,
    );
    assert_eq!(destroys(&p).len(), 2);
    assert!(
        destroys(&p)
            .iter()
            .all(|(_, r)| *r == DestroyReason::Surplus)
    );
}

#[test]
fn orphans_are_collected_after_the_grace_on_up_hosts() {
    let grace = POLICY.orphan_grace_ms;
    // (host, first seen) -> collected
    let table: &[(&str, i64, bool)] = &[
        ("h0", NOW, false),
        ("h0", NOW - grace + 1, false),
        ("h0", NOW - grace, true),
        ("h0", NOW - 10 * grace, true),
        ("h1", NOW - 10 * grace, false),   // down
        ("gone", NOW - 10 * grace, false), // not a configured host
    ];
    for &(h, first_seen, want) in table {
        for kind in [OrphanKind::Domain, OrphanKind::Volume] {
            let mut w = world(vec![host("h0"), down("h1")], vec![]);
            w.orphans.push(Orphan {
                host: h.into(),
                kind,
                name: "labpool-0123456789abcdef.qcow2".into(),
                first_seen,
            });
            let p = plan(&[], &w, &POLICY);
            let expected = if want {
                vec![Action::CollectOrphan {
                    host: h.into(),
                    kind,
                    name: "labpool-0123456789abcdef.qcow2".into(),
                }]
            } else {
                vec![]
            };
            assert_eq!(
                p.actions, expected,
                "{h}, first seen {first_seen}, {kind:?}"
            );
        }
    }
}

#[test]
fn a_drained_host_gets_nothing_new_and_its_warm_vms_move_away() {
    let c = course("c", 2, 6);
    let drained = ObservedHost {
        draining: true,
        ..host("h0")
    };
    let mut vms = many("w", 2, &c, "h0", VmState::Warm);
    vms.push(vm("a", &c, "h0", VmState::Assigned));
    vms.push(vm("b", &c, "h0", VmState::Booting));
    let p = plan(
        std::slice::from_ref(&c),
        &world(vec![drained.clone(), host("h1")], vms.clone()),
        &POLICY,
    );
    // Replacements go elsewhere; the warm VMs keep serving until they are
    // warm, the booting one goes at once, the student's VM stays.
    assert_eq!(create_hosts(&p), vec!["h1", "h1"], "{:?}", p.actions);
    assert_eq!(destroys(&p), vec![("b", DestroyReason::Drained)]);

    // Replacements warm: the drained host's warm VMs go, the assigned one stays.
    let mut vms: Vec<ObservedVm> = vms.into_iter().filter(|v| v.id != "b").collect();
    vms.extend(many("n", 2, &c, "h1", VmState::Warm));
    let p = plan(
        std::slice::from_ref(&c),
        &world(vec![drained.clone(), host("h1")], vms.clone()),
        &POLICY,
    );
    assert!(creates(&p).is_empty(), "{:?}", p.actions);
    let mut gone = destroys(&p);
    gone.sort_by_key(|(vm, _)| *vm);
    assert_eq!(
        gone,
        vec![
            ("w0", DestroyReason::Drained),
            ("w1", DestroyReason::Drained)
        ]
    );

    // Nowhere else to go: the drained host's warm VMs stay and keep serving.
    let p = plan(
        std::slice::from_ref(&c),
        &world(vec![drained], many("w", 2, &c, "h0", VmState::Warm)),
        &POLICY,
    );
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

#[test]
fn many_boot_slots_on_one_host() {
    // A large host that may boot many VMs at once (a valid configuration):
    // the planner places them all in one plan.
    let h = ObservedHost {
        max_vms: 5_000,
        memory: 10_000 * GIB,
        vcpu_slots: 10_000,
        boots_per_host: 3_000,
        ..host("h0")
    };
    let c = course("c", 2_000, 2_000);
    let p = plan(std::slice::from_ref(&c), &world(vec![h], vec![]), &POLICY);
    assert_eq!(creates(&p).len(), 2_000);
}

#[test]
fn outdated_warm_vms_stay_when_no_replacement_can_start() {
    // `max` leaves no room to surge, but nothing new can be created now:
    // giving up the outdated (still serving) VMs would only empty the pool.
    let old = course("c", 2, 2);
    let new = respec(&old);
    let vms = many("old", 2, &old, "h0", VmState::Warm);
    let backing_off = DesiredCourse {
        backoff_until: Some(NOW + 60_000),
        ..new.clone()
    };
    let p = plan(
        std::slice::from_ref(&backing_off),
        &world(vec![host("h0")], vms.clone()),
        &POLICY,
    );
    assert!(p.actions.is_empty(), "backing off: {:?}", p.actions);
    assert_eq!(
        counts(&p, "c").shortfall,
        Some(Shortfall::BackingOff {
            until: NOW + 60_000
        })
    );

    let too_big = DesiredCourse {
        memory: 128 * GIB,
        ..new.clone()
    };
    let p = plan(
        std::slice::from_ref(&too_big),
        &world(vec![host("h0")], vms.clone()),
        &POLICY,
    );
    assert!(p.actions.is_empty(), "no host fits: {:?}", p.actions);
    assert_eq!(counts(&p, "c").shortfall, Some(Shortfall::NoHostFits));

    // Otherwise they make room as before: with a surge of one where the
    // host has room for it, both where it has none.
    let p = plan(
        std::slice::from_ref(&new),
        &world(vec![host("h0")], vms.clone()),
        &POLICY,
    );
    assert_eq!(destroys(&p).len(), 1);
    assert_eq!(creates(&p).len(), 2);
    let full = ObservedHost {
        max_vms: 2,
        ..host("h0")
    };
    let p = plan(std::slice::from_ref(&new), &world(vec![full], vms), &POLICY);
    assert_eq!(destroys(&p).len(), 2);
    assert_eq!(creates(&p).len(), 2);
}

// ---------------------------------------------------------------------------
// Properties over random worlds.

const IMAGES: [&str; 4] = ["img0", "img1", "img2", "img3"];

struct World {
    desired: Vec<DesiredCourse>,
    observed: Observed,
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

/// A random world: hosts (some down, some full, with and without images),
/// courses (some in class, some backing off, some removed), VMs in every
/// state, fresh and outdated, with and without sessions, and orphans.
fn random_world(seed: u64) -> World {
    let rng = &mut StdRng::seed_from_u64(seed);
    let hosts: Vec<ObservedHost> = (0..rng.random_range(0..6))
        .map(|i| ObservedHost {
            name: format!("h{i}"),
            up: rng.random_bool(0.8),
            max_vms: rng.random_range(0..16),
            memory: rng.random_range(0..32) * GIB,
            vcpu_slots: rng.random_range(0..32),
            images: if rng.random_bool(0.5) {
                None
            } else {
                Some(
                    IMAGES[..3]
                        .iter()
                        .filter(|_| rng.random_bool(0.6))
                        .map(|s| s.to_string())
                        .collect(),
                )
            },
            boots_per_host: rng.random_range(1..5),
            draining: rng.random_bool(0.15),
            runtime: if rng.random_bool(0.25) {
                Runtime::Container
            } else {
                Runtime::Vm
            },
        })
        .collect();
    let desired: Vec<DesiredCourse> = (0..rng.random_range(0..6))
        .map(|i| {
            let warm = rng.random_range(0..7);
            let runtime = if rng.random_bool(0.25) {
                Runtime::Container
            } else {
                Runtime::Vm
            };
            DesiredCourse {
                name: format!("c{i}"),
                spec_hash: format!("c{i}-v{}", rng.random_range(1..3)),
                warm,
                max: (warm + rng.random_range(0..4)).saturating_sub(rng.random_range(0..2)),
                vcpus: rng.random_range(1..5),
                memory: rng.random_range(1..5) * GIB,
                image: match runtime {
                    Runtime::Vm => Some(pick(rng, &IMAGES).to_string()),
                    Runtime::Container => None,
                },
                runtime,
                in_class: rng.random_bool(0.2),
                ready_timeout_ms: 120_000,
                idle_ms: 1_800_000,
                backoff_until: match rng.random_range(0..10) {
                    0 => Some(NOW + 30_000),
                    1 => Some(NOW - 30_000),
                    _ => None,
                },
            }
        })
        .collect();
    let removed = ["gone0", "gone1", "gone2"];
    let mut names: Vec<String> = desired.iter().map(|c| c.name.clone()).collect();
    names.extend(removed.iter().map(|s| s.to_string()));
    let mut known_courses: Vec<String> = desired
        .iter()
        .filter(|_| rng.random_bool(0.8))
        .map(|c| c.name.clone())
        .collect();
    known_courses.extend(
        removed
            .iter()
            .filter(|_| rng.random_bool(0.7))
            .map(|s| s.to_string()),
    );
    let mut vms = Vec::new();
    if !hosts.is_empty() && !names.is_empty() {
        for i in 0..rng.random_range(0..40) {
            let h = pick(rng, &hosts);
            let name = pick(rng, &names).clone();
            let c = desired.iter().find(|c| c.name == name);
            let state = *pick(rng, &VmState::ALL);
            let spec_hash = match c {
                Some(c) if rng.random_bool(0.7) => c.spec_hash.clone(),
                _ => format!("{name}-v0"),
            };
            let domain = if !h.up {
                DomainSeen::Unknown
            } else {
                *pick(
                    rng,
                    &[
                        DomainSeen::Running,
                        DomainSeen::Running,
                        DomainSeen::Running,
                        DomainSeen::Stopped,
                        DomainSeen::Missing,
                    ],
                )
            };
            let session_expires = (state == VmState::Assigned)
                .then(|| match rng.random_range(0..5) {
                    0 => None,
                    1 => Some(NOW - rng.random_range(0..HOUR)),
                    _ => Some(NOW + rng.random_range(1..HOUR)),
                })
                .flatten();
            vms.push(ObservedVm {
                id: format!("v{i}"),
                course: name,
                host: h.name.clone(),
                spec_hash,
                state,
                since: NOW - rng.random_range(0..200_000),
                vcpus: c.map_or_else(|| rng.random_range(1..5), |c| c.vcpus),
                memory: c.map_or_else(|| rng.random_range(1..5) * GIB, |c| c.memory),
                session_expires,
                session_active: None,
                domain,
            });
        }
    }
    let mut orphans = Vec::new();
    if !hosts.is_empty() {
        for i in 0..rng.random_range(0..4) {
            orphans.push(Orphan {
                host: pick(rng, &hosts).name.clone(),
                kind: if rng.random_bool(0.5) {
                    OrphanKind::Domain
                } else {
                    OrphanKind::Volume
                },
                name: format!("orphan-{i}"),
                first_seen: NOW - rng.random_range(0..2 * POLICY.orphan_grace_ms),
            });
        }
    }
    World {
        desired,
        observed: Observed {
            now: NOW,
            hosts,
            vms,
            orphans,
            known_courses,
            stored_idle_ms: BTreeMap::new(),
        },
    }
}

/// The world after the plan's actions all succeeded: creates are new VMs
/// that are `creating` (their domain not looked at yet, or already running),
/// destroyed VMs and collected orphans are gone, forgotten courses unknown.
fn simulate(desired: &[DesiredCourse], observed: &Observed, plan: &Plan) -> Observed {
    let mut next = observed.clone();
    for (i, action) in plan.actions.iter().enumerate() {
        match action {
            Action::Create {
                course,
                host,
                spec_hash,
            } => {
                let c = desired
                    .iter()
                    .find(|c| &c.name == course)
                    .expect("creates are for desired courses");
                next.vms.push(ObservedVm {
                    id: format!("new-{}-{}-{i}", observed.vms.len(), plan.actions.len()),
                    course: course.clone(),
                    host: host.clone(),
                    spec_hash: spec_hash.clone(),
                    state: VmState::Creating,
                    since: observed.now,
                    vcpus: c.vcpus,
                    memory: c.memory,
                    session_expires: None,
                    session_active: None,
                    domain: if i % 2 == 0 {
                        DomainSeen::Unknown
                    } else {
                        DomainSeen::Running
                    },
                });
            }
            Action::Destroy { vm, .. } => next.vms.retain(|v| &v.id != vm),
            Action::CollectOrphan { host, kind, name } => next
                .orphans
                .retain(|o| !(&o.host == host && o.kind == *kind && &o.name == name)),
            Action::ForgetCourse { course } => next.known_courses.retain(|c| c != course),
            // Never planned: added from the observation, outside `plan`.
            Action::Adopt { .. } => {}
        }
    }
    next
}

/// Every `creating`/`booting` VM on a host that is up becomes warm.
fn boots_finish(observed: &mut Observed) {
    let up: HashSet<String> = observed
        .hosts
        .iter()
        .filter(|h| h.up)
        .map(|h| h.name.clone())
        .collect();
    for v in &mut observed.vms {
        if up.contains(&v.host) && matches!(v.state, VmState::Creating | VmState::Booting) {
            v.state = VmState::Warm;
            v.domain = DomainSeen::Running;
            v.since = observed.now;
        }
    }
}

/// Properties (b) to (f) of one plan, plus basic sanity of its actions.
fn check_plan(desired: &[DesiredCourse], observed: &Observed, p: &Plan) -> Result<(), String> {
    let hosts: HashMap<&str, &ObservedHost> = observed
        .hosts
        .iter()
        .map(|h| (h.name.as_str(), h))
        .collect();
    let courses: HashMap<&str, &DesiredCourse> =
        desired.iter().map(|c| (c.name.as_str(), c)).collect();
    let vms: HashMap<&str, &ObservedVm> = observed.vms.iter().map(|v| (v.id.as_str(), v)).collect();
    let mut destroyed: HashSet<&str> = HashSet::new();
    let mut creates_on: BTreeMap<&str, Vec<&DesiredCourse>> = BTreeMap::new();
    let mut creates_of: BTreeMap<&str, u32> = BTreeMap::new();
    let up = |h: &str| hosts.get(h).is_some_and(|h| h.up);
    for a in &p.actions {
        match a {
            Action::Create {
                course,
                host,
                spec_hash,
            } => {
                let c = courses
                    .get(course.as_str())
                    .ok_or_else(|| format!("create for a course not desired: {a:?}"))?;
                if spec_hash != &c.spec_hash {
                    return Err(format!("create of an old spec: {a:?}"));
                }
                if c.backoff_until.is_some_and(|u| u > observed.now) {
                    return Err(format!("create while backing off: {a:?}"));
                }
                // (c) only on hosts that are up and carry the image.
                let h = hosts
                    .get(host.as_str())
                    .ok_or_else(|| format!("create on an unknown host: {a:?}"))?;
                if !h.up {
                    return Err(format!("(c) create on a host that is down: {a:?}"));
                }
                if let (Some(list), Some(image)) = (&h.images, &c.image)
                    && !list.contains(image)
                {
                    return Err(format!("(c) create on a host without the image: {a:?}"));
                }
                if h.runtime != c.runtime {
                    return Err(format!("(c) create on a host of another runtime: {a:?}"));
                }
                if h.draining {
                    return Err(format!("(c) create on a drained host: {a:?}"));
                }
                creates_on.entry(host).or_default().push(c);
                *creates_of.entry(course).or_default() += 1;
            }
            Action::Destroy {
                vm,
                course,
                host,
                reason,
            } => {
                let v = vms
                    .get(vm.as_str())
                    .ok_or_else(|| format!("destroy of an unknown VM: {a:?}"))?;
                if &v.course != course || &v.host != host {
                    return Err(format!("destroy names the wrong course or host: {a:?}"));
                }
                if !up(host) {
                    return Err(format!("destroy on a host that is down: {a:?}"));
                }
                if !destroyed.insert(vm) {
                    return Err(format!("VM destroyed twice: {a:?}"));
                }
                // (f) an assigned VM goes only when its session is over or
                // its domain is gone.
                if v.state == VmState::Assigned
                    && !matches!(
                        reason,
                        DestroyReason::Expired
                            | DestroyReason::Idle
                            | DestroyReason::SessionEnded
                            | DestroyReason::Vanished
                    )
                {
                    return Err(format!("(f) assigned VM destroyed: {a:?}"));
                }
            }
            Action::CollectOrphan { host, kind, name } => {
                let o = observed
                    .orphans
                    .iter()
                    .find(|o| &o.host == host && o.kind == *kind && &o.name == name)
                    .ok_or_else(|| format!("collects an unknown orphan: {a:?}"))?;
                if !up(host) || observed.now - o.first_seen < POLICY.orphan_grace_ms {
                    return Err(format!(
                        "orphan collected too early or on a down host: {a:?}"
                    ));
                }
            }
            Action::ForgetCourse { course } => {
                if courses.contains_key(course.as_str()) {
                    return Err(format!("forgets a desired course: {a:?}"));
                }
                let left = observed
                    .vms
                    .iter()
                    .filter(|v| &v.course == course && !destroyed.contains(v.id.as_str()))
                    .count();
                if left > 0 {
                    return Err(format!("forgets a course with {left} VM(s) left: {a:?}"));
                }
            }
            Action::Adopt { .. } => return Err(format!("the planner adopts nothing: {a:?}")),
        }
    }
    let remaining = || {
        observed
            .vms
            .iter()
            .filter(|v| !destroyed.contains(v.id.as_str()))
    };
    for (host, new) in &creates_on {
        let h = hosts[host];
        let on_host: Vec<&ObservedVm> = remaining().filter(|v| v.host == *host).collect();
        // (b) within capacity after the creates.
        let n = on_host.len() + new.len();
        let memory: u64 = on_host.iter().map(|v| v.memory).sum::<u64>()
            + new.iter().map(|c| c.memory).sum::<u64>();
        let vcpus: u32 =
            on_host.iter().map(|v| v.vcpus).sum::<u32>() + new.iter().map(|c| c.vcpus).sum::<u32>();
        if n > h.max_vms as usize || memory > h.memory || vcpus > h.vcpu_slots {
            return Err(format!(
                "(b) {host} over capacity: {n}/{} VMs, {memory}/{} bytes, {vcpus}/{} vCPUs",
                h.max_vms, h.memory, h.vcpu_slots
            ));
        }
        // (d) within the free boot slots.
        let booting = on_host
            .iter()
            .filter(|v| matches!(v.state, VmState::Creating | VmState::Booting))
            .count();
        if booting + new.len() > h.boots_per_host as usize {
            return Err(format!(
                "(d) {host}: {} creates with {booting} booting, {} slots",
                new.len(),
                h.boots_per_host
            ));
        }
    }
    // (e) creates never take a course past `max` (counting VMs that stay,
    // on hosts that are up).
    for (course, n) in &creates_of {
        let c = courses[course];
        let alive = remaining()
            .filter(|v| v.course == *course && up(&v.host))
            .filter(|v| {
                matches!(
                    v.state,
                    VmState::Creating | VmState::Booting | VmState::Warm | VmState::Assigned
                )
            })
            .count() as u32;
        // A replacement surges by one: past `max` only while an outdated
        // warm VM stays for it.
        let drained = |h: &str| hosts.get(h).is_some_and(|h| h.draining);
        let outdated_warm = remaining()
            .filter(|v| v.course == *course && up(&v.host))
            .any(|v| v.state == VmState::Warm && (v.spec_hash != c.spec_hash || drained(&v.host)));
        let limit = c.max + u32::from(outdated_warm);
        if alive + n > limit {
            return Err(format!(
                "(e) {course}: {alive} alive + {n} creates > max {} (outdated warm left: {outdated_warm})",
                c.max
            ));
        }
    }
    Ok(())
}

/// Random worlds per property; `LABPOOL_PLAN_SEEDS=100000` for a deeper run.
fn seeds(default: u64) -> std::ops::Range<u64> {
    let n = std::env::var("LABPOOL_PLAN_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    0..n
}

/// Whether a VM is still on its way up on a host that is up.
fn booting_on_up_host(observed: &Observed) -> bool {
    observed.vms.iter().any(|v| {
        matches!(v.state, VmState::Creating | VmState::Booting)
            && observed.hosts.iter().any(|h| h.up && h.name == v.host)
    })
}

#[test]
fn property_plans_respect_capacity_slots_max_and_sessions() {
    // How often each kind of outcome occurs: the generator must reach them all.
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for seed in seeds(10_000) {
        let w = random_world(seed);
        let p = plan(&w.desired, &w.observed, &POLICY);
        if let Err(e) = check_plan(&w.desired, &w.observed, &p) {
            panic!(
                "seed {seed}: {e}\ndesired: {:#?}\nobserved: {:#?}\nplan: {:#?}",
                w.desired, w.observed, p.actions
            );
        }
        let mut kinds: HashSet<String> = p
            .actions
            .iter()
            .map(|a| match a {
                Action::Create { .. } => "create".to_string(),
                Action::Destroy { reason, .. } => format!("destroy {}", reason.as_str()),
                Action::CollectOrphan { .. } => "collect orphan".to_string(),
                Action::ForgetCourse { .. } => "forget course".to_string(),
                Action::Adopt { .. } => "adopt".to_string(),
            })
            .collect();
        kinds.extend(p.courses.iter().filter_map(|c| {
            c.shortfall.as_ref().map(|s| {
                format!("{s:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
        }));
        for k in kinds {
            *seen.entry(k).or_default() += 1;
        }
    }
    let expected = [
        "create",
        "destroy surplus",
        "destroy outdated",
        "destroy failed",
        "destroy boot-timeout",
        "destroy vanished",
        "destroy expired",
        "destroy session-ended",
        "destroy course-removed",
        "destroy unfinished",
        "collect orphan",
        "forget course",
        "NoHostFits",
        "CapacityFull",
        "WaitingForBootSlots",
        "AtMax",
        "BackingOff",
    ];
    for k in expected {
        assert!(
            seen.get(k).copied().unwrap_or(0) >= 20,
            "random worlds rarely reach `{k}`: {seen:?}"
        );
    }
}

#[test]
fn property_a_plan_applied_leaves_nothing_to_do() {
    for seed in seeds(10_000) {
        let w = random_world(seed);
        let p = plan(&w.desired, &w.observed, &POLICY);
        let after = simulate(&w.desired, &w.observed, &p);
        let again = plan(&w.desired, &after, &POLICY);
        assert!(
            again.actions.is_empty(),
            "seed {seed}: second plan {:#?}\nfirst plan {:#?}\ndesired {:#?}\nobserved {:#?}",
            again.actions,
            p.actions,
            w.desired,
            w.observed
        );
    }
}

/// Plans, applies and lets every boot finish until a plan is empty with
/// nothing booting. Returns the last (empty) plan, the world and the rounds.
fn converge(
    seed: u64,
    desired: &[DesiredCourse],
    mut observed: Observed,
    limit: usize,
) -> (Plan, Observed, usize) {
    let mut rounds = 0;
    loop {
        let p = plan(desired, &observed, &POLICY);
        if let Err(e) = check_plan(desired, &observed, &p) {
            panic!("seed {seed}, round {rounds}: {e}");
        }
        if p.actions.is_empty() && !booting_on_up_host(&observed) {
            return (p, observed, rounds);
        }
        rounds += 1;
        assert!(
            rounds <= limit,
            "seed {seed}: no fixed point after {limit} rounds; last plan {:#?}",
            p.actions
        );
        observed = simulate(desired, &observed, &p);
        boots_finish(&mut observed);
    }
}

/// At a fixed point every course that is not backing off has its target of
/// fresh warm VMs and nothing outdated left, unless no host has room for
/// more (`ample`: never) or, in class, `max` leaves no room.
fn check_targets(
    seed: u64,
    desired: &[DesiredCourse],
    observed: &Observed,
    last: &Plan,
    ample: bool,
) {
    let up: HashSet<&str> = observed
        .hosts
        .iter()
        .filter(|h| h.up)
        .map(|h| h.name.as_str())
        .collect();
    for c in desired {
        if c.backoff_until.is_some_and(|u| u > observed.now) {
            continue;
        }
        let counts = counts(last, &c.name);
        let mine: Vec<&ObservedVm> = observed
            .vms
            .iter()
            .filter(|v| v.course == c.name && up.contains(v.host.as_str()))
            .collect();
        let fresh_warm = mine
            .iter()
            .filter(|v| v.state == VmState::Warm && v.spec_hash == c.spec_hash)
            .count() as u32;
        let stale_warm = mine
            .iter()
            .filter(|v| v.state == VmState::Warm && v.spec_hash != c.spec_hash)
            .count() as u32;
        // Students on hosts that are down hold their VMs against `max` too.
        let held_elsewhere = observed
            .vms
            .iter()
            .filter(|v| v.course == c.name && !up.contains(v.host.as_str()))
            .filter(|v| v.state == VmState::Assigned)
            .filter(|v| v.session_expires.is_some_and(|e| e > observed.now))
            .count() as u32;
        let alive = held_elsewhere
            + mine
                .iter()
                .filter(|v| matches!(v.state, VmState::Warm | VmState::Assigned))
                .count() as u32;
        let no_capacity = matches!(
            counts.shortfall,
            Some(Shortfall::NoHostFits | Shortfall::CapacityFull)
        );
        let case = format!(
            "seed {seed}, course {}: {fresh_warm} fresh warm, {stale_warm} outdated, {counts:?}",
            c.name
        );
        assert!(!(ample && no_capacity), "{case}: room was ample");
        assert!(
            !matches!(counts.shortfall, Some(Shortfall::WaitingForBootSlots)),
            "{case}: nothing boots at a fixed point"
        );
        if c.in_class {
            assert!(
                fresh_warm >= counts.target || no_capacity || alive >= c.max,
                "{case}"
            );
        } else {
            assert!(fresh_warm == counts.target || no_capacity, "{case}");
            assert!(fresh_warm <= counts.target, "{case}: surplus left");
            if fresh_warm == counts.target {
                assert_eq!(stale_warm, 0, "{case}: outdated left");
            }
        }
    }
}

#[test]
fn property_g_pools_converge_to_their_targets() {
    let mut most_rounds = 0;
    for seed in seeds(3_000) {
        let w = random_world(seed);
        // Each round but the first boots at least one VM of some course.
        let limit = 3 + w.desired.iter().map(|c| c.warm as usize).sum::<usize>();
        let (last, observed, rounds) = converge(seed, &w.desired, w.observed, limit);
        check_targets(seed, &w.desired, &observed, &last, false);
        most_rounds = most_rounds.max(rounds);
    }
    assert!(most_rounds <= 20, "took up to {most_rounds} rounds");
}

#[test]
fn property_g_ample_capacity_reaches_every_target() {
    // One more host with room for everything: every course that is not
    // backing off gets exactly its target (in class: as far as `max` lets).
    for seed in seeds(3_000) {
        let w = ample_world(seed);
        let (last, observed, rounds) = converge(seed, &w.desired, w.observed, 30);
        check_targets(seed, &w.desired, &observed, &last, true);
        // 6 courses of at most 6 warm, 4 boots at a time on the big host.
        assert!(rounds <= 12, "seed {seed}: {rounds} rounds");
    }
}

/// The random world plus a host with room for everything, of each runtime.
fn ample_world(seed: u64) -> World {
    let mut w = random_world(seed);
    for (name, runtime) in [("big", Runtime::Vm), ("big-docker", Runtime::Container)] {
        w.observed.hosts.push(ObservedHost {
            name: name.into(),
            up: true,
            max_vms: 1_000,
            memory: 1_000 * GIB,
            vcpu_slots: 1_000,
            images: None,
            boots_per_host: 4,
            draining: false,
            runtime,
        });
    }
    w
}

#[test]
fn property_a_replacement_with_room_never_empties_a_pool() {
    // Where a host has room, a course that wants warm VMs and has one that
    // is healthy (on an up host, domain running) keeps at least one warm
    // through every plan of its convergence: outdated ones stay until their
    // replacements are warm, at `max` too (the surge of one).
    for seed in seeds(3_000) {
        let w = ample_world(seed);
        let mut observed = w.observed;
        for round in 0..30 {
            let p = plan(&w.desired, &observed, &POLICY);
            let gone: HashSet<&str> = destroys(&p).into_iter().map(|(id, _)| id).collect();
            let up: HashSet<&str> = observed
                .hosts
                .iter()
                .filter(|h| h.up)
                .map(|h| h.name.as_str())
                .collect();
            for c in &w.desired {
                let warm = |v: &&ObservedVm| {
                    v.course == c.name
                        && v.state == VmState::Warm
                        && v.domain == DomainSeen::Running
                        && up.contains(v.host.as_str())
                };
                let before = observed.vms.iter().filter(warm).count();
                let after = observed
                    .vms
                    .iter()
                    .filter(warm)
                    .filter(|v| !gone.contains(v.id.as_str()))
                    .count();
                assert!(
                    counts(&p, &c.name).target == 0 || before == 0 || after > 0,
                    "seed {seed}, round {round}, course {}: {before} warm, none left by {:?}",
                    c.name,
                    p.actions
                );
            }
            if p.actions.is_empty() && !booting_on_up_host(&observed) {
                break;
            }
            observed = simulate(&w.desired, &observed, &p);
            boots_finish(&mut observed);
        }
    }
}
