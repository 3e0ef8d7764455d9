//! The executor: turns a plan's actions into store writes and host calls.
//!
//! Each action records its intent in the store first (a `creating` row, a
//! `deleting` state) and then runs on a background task; host calls go to the
//! blocking pool. A VM with work in flight is *busy* and later actions on it
//! wait for the next pass. Per-host boot concurrency is bounded by the
//! planner, which counts `creating`/`booting` VMs against each host's slots.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tracing::Instrument as _;

use super::observe::World;
use super::plan::{Action, CourseCounts, DestroyReason, OrphanKind, Plan, Shortfall};
use super::{Reconciler, now_ms};
use crate::course::spec::Runtime;
use crate::course::{Console, Course, Probe};
use crate::hosts::owner::Removal;
use crate::hosts::{Driver, Host, NewVm, docker, ready, xml};
use crate::metrics::ActionKind;
use crate::store::{StoreError, VmRow, VmState};

/// A course's condition, derived from its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// `Ready`, `Progressing`, `Degraded`, or `Draining` (a removed course
    /// whose students still hold VMs).
    pub status: &'static str,
    pub reason: String,
}

/// A removed course's reason: `draining (2 students, hard stop 2026-12-04
/// 18:30 UTC)`, the hard stop being the last of its sessions' hard expiry.
pub fn draining_reason(students: u32, hard_stop: i64) -> String {
    if students == 0 {
        return "draining (no students left)".into();
    }
    let at = chrono::DateTime::from_timestamp_millis(hard_stop)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| hard_stop.to_string());
    let who = if students == 1 { "student" } else { "students" };
    format!("draining ({students} {who}, hard stop {at})")
}

pub fn condition(c: &CourseCounts) -> Condition {
    if !c.desired {
        let d = c.draining.unwrap_or_default();
        return Condition {
            status: "Draining",
            reason: draining_reason(d.students, d.hard_stop),
        };
    }
    let degraded = |reason: String| Condition {
        status: "Degraded",
        reason,
    };
    match &c.shortfall {
        Some(Shortfall::NoHostFits) => {
            return degraded("no host that is up can hold this VM".into());
        }
        Some(Shortfall::CapacityFull) => return degraded("hosts are full".into()),
        Some(Shortfall::BackingOff { .. }) => {
            return degraded("boots failed; backing off before the next".into());
        }
        _ => {}
    }
    if c.warm >= c.target {
        Condition {
            status: "Ready",
            reason: format!("{} of {} warm", c.warm, c.target),
        }
    } else {
        Condition {
            status: "Progressing",
            reason: format!("{} of {} warm, {} booting", c.warm, c.target, c.booting),
        }
    }
}

/// Starts every action of the plan; returns how many started.
pub async fn execute(
    r: &Reconciler,
    plan: &Plan,
    world: &World,
    courses: &HashMap<&str, &Course>,
    now: i64,
) -> Result<usize, StoreError> {
    let mut started = 0;
    // Forwarded ports in use per host, from the rows (and this pass's creates).
    let mut ports: HashMap<String, HashSet<u16>> = HashMap::new();
    for vm in world.vms.values() {
        if let Some(p) = vm.ssh_port.and_then(|p| u16::try_from(p).ok()) {
            ports.entry(vm.host.clone()).or_default().insert(p);
        }
    }
    // An orphan domain's collection takes its VM's own volume with it: that
    // volume is not collected apart in the same pass (one collection, one
    // event).
    let with_domain: HashSet<(&str, &str)> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::CollectOrphan {
                host,
                kind: OrphanKind::Domain,
                name,
            } => world
                .orphan_vm
                .get(&(host.clone(), name.clone()))
                .map(|vm| (host.as_str(), vm.as_str())),
            _ => None,
        })
        .collect();
    for action in &plan.actions {
        let ok = match action {
            Action::Create {
                course,
                host,
                spec_hash,
            } => {
                let (Some(course), Some(h)) = (courses.get(course.as_str()), r.host(host)) else {
                    continue;
                };
                let used = ports.entry(host.clone()).or_default();
                create(r, course, h, spec_hash, used, now).await?
            }
            Action::Destroy { vm, reason, .. } => match world.vms.get(vm) {
                Some(row) => destroy(r, row, *reason, world, now).await?,
                None => false,
            },
            Action::CollectOrphan { host, kind, name } => {
                let volume_of_domain = *kind == OrphanKind::Volume
                    && (xml::vm_id_of_volume(name).or_else(|| docker::vm_id_of_network(name)))
                        .is_some_and(|vm| with_domain.contains(&(host.as_str(), vm)));
                match r.host(host) {
                    Some(h) if !volume_of_domain => collect_orphan(r, h, *kind, name),
                    _ => false,
                }
            }
            Action::Adopt { host, name } => match r.host(host) {
                Some(h) if h.runtime() == Runtime::Vm => adopt(r, h, name, now).await,
                _ => false,
            },
            Action::ForgetCourse { course } => {
                let span = action_span(ActionKind::ForgetCourse, Some(course), None, None);
                let forgotten = r.inner.store.forget_course(course).instrument(span).await;
                r.inner
                    .metrics
                    .action(ActionKind::ForgetCourse, forgotten.is_ok());
                forgotten?;
                r.event(
                    now,
                    "course-forgotten",
                    Some(course),
                    None,
                    None,
                    "removed from the source and drained".into(),
                )
                .await;
                true
            }
        };
        started += usize::from(ok);
    }
    Ok(started)
}

/// The span of one action: every log line of the action (and of the
/// background task that finishes it) names what it works on.
fn action_span(
    kind: ActionKind,
    course: Option<&str>,
    host: Option<&str>,
    vm: Option<&str>,
) -> tracing::Span {
    tracing::info_span!("action", kind = kind.as_str(), course, host, vm)
}

/// A free port of the host's forward range, picked at random: a port that
/// something outside labpool holds then only fails one boot (which backs off
/// and retries on another port), not every boot in turn.
fn free_port(range: &crate::config::SshForward, used: &HashSet<u16>) -> Option<u16> {
    let free: Vec<u16> = (range.first_port..=range.last_port)
        .filter(|p| !used.contains(p))
        .collect();
    if free.is_empty() {
        return None;
    }
    Some(free[rand::random_range(0..free.len())])
}

fn new_vm_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The guest port forwarded to the host, if the course needs one: its SSH
/// port for `console: ssh`, or the readiness port.
fn forwarded_port(course: &Course) -> Option<u16> {
    match (course.probe(), course.session.console) {
        (Probe::Port(p), _) => Some(p),
        (_, Console::Ssh) => Some(course.session.ssh.as_ref().map_or(22, |s| s.port)),
        _ => None,
    }
}

async fn create(
    r: &Reconciler,
    course: &Course,
    host: &Arc<Host>,
    spec_hash: &str,
    used_ports: &mut HashSet<u16>,
    now: i64,
) -> Result<bool, StoreError> {
    let store = &r.inner.store;
    let id = new_vm_id();
    let name = course.name.as_str();
    let span = action_span(ActionKind::Create, Some(name), Some(host.name()), Some(&id));
    let guest_port = forwarded_port(course);
    let ssh_port = match guest_port {
        Some(_) => match free_port(&host.config.ssh_forward, used_ports) {
            Some(p) => {
                used_ports.insert(p);
                Some(p)
            }
            None => {
                r.inner.metrics.action(ActionKind::Create, false);
                r.event(
                    now,
                    "create-refused",
                    Some(name),
                    Some(host.name()),
                    None,
                    "no free port in the host's ssh_forward range".into(),
                )
                .await;
                return Ok(false);
            }
        },
        None => None,
    };
    let row = VmRow {
        id: id.clone(),
        course: name.to_string(),
        host: host.name().to_string(),
        domain: xml::domain_name(name, &id),
        volume: match course.runtime {
            Runtime::Vm => xml::volume_name(r.instance(), &id),
            Runtime::Container => docker::network_name(&id),
        },
        spec_hash: spec_hash.to_string(),
        state: VmState::Creating,
        vcpus: i64::from(course.size().vcpus),
        memory: course.size().memory.as_bytes() as i64,
        ssh_port: ssh_port.map(i64::from),
        created_at: now,
        state_changed_at: now,
        ready_at: None,
        reason: None,
    };
    // Intent first: from here on the store names this VM, whatever happens.
    store.insert_vm(&row).await?;
    r.inner.state.lock().expect("state").busy.insert(id.clone());
    span.in_scope(|| tracing::info!("creating VM"));
    let task = boot(r.clone(), Arc::clone(host), row, course.clone(), guest_port);
    r.inner
        .tasks
        .lock()
        .expect("tasks")
        .spawn(task.instrument(span));
    Ok(true)
}

/// Builds, starts and proves one VM, then records the outcome.
async fn boot(r: Reconciler, host: Arc<Host>, row: VmRow, course: Course, guest_port: Option<u16>) {
    let started_at = Instant::now();
    let outcome = boot_steps(&r, &host, &row, &course, guest_port).await;
    let store = &r.inner.store;
    let now = now_ms();
    let id = row.id.as_str();
    let name = course.name.as_str();
    match outcome {
        Ok(()) => {
            let took = started_at.elapsed();
            let ms = took.as_millis();
            let warm = store
                .transition_vm(id, &[VmState::Booting], VmState::Warm, now, None)
                .await;
            // Ok only once the VM is warm: a VM changed while it booted (its
            // course removed, say) did not come of this create.
            r.inner
                .metrics
                .action(ActionKind::Create, matches!(warm, Ok(true)));
            match warm {
                Ok(true) => {
                    r.inner.state.lock().expect("state").backoff.succeeded(name);
                    r.inner.metrics.booted(name, took);
                    tracing::info!(boot_ms = ms as u64, "VM warm");
                    r.event(
                        now,
                        "vm-warm",
                        Some(name),
                        Some(host.name()),
                        Some(id),
                        format!("ready after {ms} ms"),
                    )
                    .await;
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "could not record a warm VM"),
            }
        }
        Err(why) => {
            r.inner.metrics.action(ActionKind::Create, false);
            let until = r
                .inner
                .state
                .lock()
                .expect("state")
                .backoff
                .failed(name, now);
            tracing::warn!(reason = %why, backoff_until = until, "VM failed to boot");
            let _ = store
                .transition_vm(
                    id,
                    &[VmState::Creating, VmState::Booting],
                    VmState::Failed,
                    now,
                    Some(&why),
                )
                .await;
            r.event(
                now,
                "vm-failed",
                Some(name),
                Some(host.name()),
                Some(id),
                why,
            )
            .await;
        }
    }
    r.inner.state.lock().expect("state").busy.remove(id);
    r.wake();
}

/// Made on its host: the VM (or container) is now booting.
async fn mark_booting(r: &Reconciler, row: &VmRow) -> Result<(), String> {
    let moved = r
        .inner
        .store
        .transition_vm(
            &row.id,
            &[VmState::Creating],
            VmState::Booting,
            now_ms(),
            None,
        )
        .await
        .map_err(|e| e.to_string())?;
    if !moved {
        return Err("the VM was changed while it was created".into());
    }
    Ok(())
}

/// Makes, starts and proves one container lab (its network with it).
async fn boot_container(
    r: &Reconciler,
    host: &Arc<Host>,
    row: &VmRow,
    course: &Course,
) -> Result<(), String> {
    let spec = course
        .container
        .as_ref()
        .ok_or("a container course needs `container`")?;
    let engine = host.engine().await.map_err(|e| e.to_string())?;
    let new = docker::NewContainer {
        mark: xml::Mark {
            vm_id: row.id.clone(),
            course: row.course.clone(),
            spec_hash: row.spec_hash.clone(),
            instance: Some(r.instance().to_string()),
        },
        name: &row.domain,
        network: &row.volume,
        spec,
    };
    docker::create(&engine, host.name(), &new)
        .await
        .map_err(|e| e.to_string())?;
    mark_booting(r, row).await?;
    let user = spec.user.as_deref();
    let wait = async {
        match course.probe() {
            Probe::Command(cmd) => {
                docker::wait_for_command(&engine, host.name(), &row.domain, &cmd, user).await
            }
            Probe::ConsoleMarker(marker) => {
                docker::wait_for_marker(&engine, &row.domain, &marker).await
            }
            Probe::Port(p) => Err(format!("a container has no readiness port ({p})")),
        }
    };
    match tokio::time::timeout(course.readiness.timeout.get(), wait).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "not ready within {} ({:?} did not succeed)",
            course.readiness.timeout,
            course.probe()
        )),
    }
}

async fn boot_steps(
    r: &Reconciler,
    host: &Arc<Host>,
    row: &VmRow,
    course: &Course,
    guest_port: Option<u16>,
) -> Result<(), String> {
    if course.runtime == Runtime::Container {
        return boot_container(r, host, row, course).await;
    }
    let (Some(image_name), Some(size)) = (&course.image, &course.vm) else {
        return Err("a VM course needs `image` and `vm`".into());
    };
    let image = r
        .inner
        .config
        .images
        .get(image_name)
        .cloned()
        .ok_or_else(|| format!("image `{image_name}` is not in the catalog"))?;
    let vm = row.clone();
    let size = size.clone();
    let instance = r.instance().to_string();
    let started = host
        .run(move |h| {
            h.create(&NewVm {
                mark: xml::Mark {
                    vm_id: vm.id.clone(),
                    course: vm.course.clone(),
                    spec_hash: vm.spec_hash.clone(),
                    instance: Some(instance),
                },
                domain: &vm.domain,
                volume: &vm.volume,
                vcpus: size.vcpus,
                memory: size.memory.as_bytes(),
                disk: size.disk.map(|d| d.as_bytes()),
                image: &image,
                ssh: vm.ssh_port.zip(guest_port).map(|(h, g)| (h as u16, g)),
            })
        })
        .await
        .map_err(|e| e.to_string())?;
    mark_booting(r, row).await?;
    let timeout = course.readiness.timeout.get();
    let driver = host.driver().map_err(|e| e.to_string())?;
    if driver == Driver::Test {
        // The test driver has no guest: a running domain is all there is.
        return Ok(());
    }
    let probe = course.probe();
    let wait = async {
        match (probe, started.console) {
            (Probe::ConsoleMarker(marker), Some(stream)) => {
                // A thread of its own: the watch lasts the whole boot (and
                // then holds the console while the VM is warm), and must not
                // hold one of the blocking pool's few threads.
                let (tx, rx) = tokio::sync::oneshot::channel();
                let (keeper, domain) = (Arc::clone(host), row.domain.clone());
                std::thread::Builder::new()
                    .name("console-watch".into())
                    .stack_size(256 << 10)
                    .spawn(move || {
                        let keep = Some((&*keeper, domain.as_str()));
                        ready::watch_console(stream, &marker, keep, |result| {
                            let _ = tx.send(result);
                        });
                    })
                    .map_err(|e| e.to_string())?;
                rx.await
                    .map_err(|_| "console watch ended".to_string())?
                    .map_err(|e| e.to_string())
            }
            (Probe::ConsoleMarker(_), None) => Err("no console to watch".to_string()),
            (Probe::Command(_), _) => Err("a VM has no readiness command".to_string()),
            (Probe::Port(port), console) => {
                if let Some(stream) = console {
                    let _ = stream.abort();
                }
                let ip = host.config.ssh_forward.address;
                let host_port = row.ssh_port.ok_or("no forwarded port")? as u16;
                let ssh = course.session.console == Console::Ssh
                    && course.session.ssh.as_ref().map_or(22, |s| s.port) == port;
                ready::wait_for_port(SocketAddr::new(ip, host_port), ssh).await;
                Ok(())
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "not ready within {} ({})",
            course.readiness.timeout,
            match course.probe() {
                Probe::ConsoleMarker(m) => format!("console marker `{m}` not seen"),
                Probe::Port(p) => format!("port {p} did not answer"),
                Probe::Command(c) => format!("command {c:?} did not succeed"),
            }
        )),
    }
}

async fn destroy(
    r: &Reconciler,
    row: &VmRow,
    reason: DestroyReason,
    world: &World,
    now: i64,
) -> Result<bool, StoreError> {
    let store = &r.inner.store;
    let Some(host) = r.host(&row.host).cloned() else {
        return Ok(false);
    };
    if !r
        .inner
        .state
        .lock()
        .expect("state")
        .busy
        .insert(row.id.clone())
    {
        return Ok(false);
    }
    let span = action_span(
        ActionKind::Destroy,
        Some(&row.course),
        Some(&row.host),
        Some(&row.id),
    );
    let release = || {
        r.inner.state.lock().expect("state").busy.remove(&row.id);
    };
    if let Some(session) = world.sessions_by_vm.get(&row.id) {
        let why = match reason {
            DestroyReason::Expired => "expired",
            DestroyReason::Vanished => "vm vanished",
            _ => reason.as_str(),
        };
        if let Err(e) = store.end_session(&session.id, why, now).await {
            release();
            return Err(e);
        }
    }
    // Intent first: once `deleting`, a crash leads to a retry, never a leak.
    // Only from the state this pass planned on: a warm VM that a launch or a
    // reset claimed since then is a student's now, not surplus.
    let marked = if row.state == VmState::Deleting {
        Ok(true)
    } else {
        store
            .transition_vm(
                &row.id,
                &[row.state],
                VmState::Deleting,
                now,
                Some(reason.as_str()),
            )
            .await
    };
    match marked {
        Ok(true) => {}
        Ok(false) => {
            span.in_scope(|| {
                tracing::info!(
                    reason = reason.as_str(),
                    "not destroying VM: its state changed since the pass looked"
                )
            });
            release();
            return Ok(false);
        }
        // An earlier destroy finished after this pass looked: nothing left.
        Err(StoreError::VmNotFound(_)) => {
            release();
            return Ok(false);
        }
        Err(e) => {
            release();
            return Err(e);
        }
    }
    span.in_scope(|| tracing::info!(reason = reason.as_str(), "destroying VM"));
    let r2 = r.clone();
    let row = row.clone();
    let task = async move {
        let result = host.destroy_any(&row.domain, &row.volume).await;
        let now = now_ms();
        r2.inner.metrics.action(ActionKind::Destroy, result.is_ok());
        match result {
            Ok(()) => {
                if let Err(e) = r2.inner.store.delete_vm(&row.id, now).await {
                    tracing::error!(error = %e, "could not delete the VM's row");
                }
                r2.event(
                    now,
                    "vm-destroyed",
                    Some(&row.course),
                    Some(&row.host),
                    Some(&row.id),
                    reason.as_str().to_string(),
                )
                .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "destroy failed; will retry");
                r2.event(
                    now,
                    "destroy-failed",
                    Some(&row.course),
                    Some(&row.host),
                    Some(&row.id),
                    e.to_string(),
                )
                .await;
            }
        }
        r2.inner.state.lock().expect("state").busy.remove(&row.id);
        r2.wake();
    };
    r.inner
        .tasks
        .lock()
        .expect("tasks")
        .spawn(task.instrument(span));
    Ok(true)
}

/// Re-marks a legacy domain the store knows with this instance.
async fn adopt(r: &Reconciler, host: &Arc<Host>, name: &str, now: i64) -> bool {
    let span = action_span(ActionKind::Adopt, None, Some(host.name()), None);
    let (instance, domain) = (r.instance().to_string(), name.to_string());
    let result = host
        .run(move |h| h.adopt_domain(&domain, &instance))
        .instrument(span.clone())
        .await;
    r.inner.metrics.action(ActionKind::Adopt, result.is_ok());
    match result {
        Ok(true) => {
            span.in_scope(|| tracing::info!(domain = name, "legacy domain adopted"));
            r.event(
                now,
                "legacy-adopted",
                None,
                Some(host.name()),
                None,
                format!("domain {name} now names instance {}", r.instance()),
            )
            .await;
            true
        }
        Ok(false) => false,
        Err(e) => {
            span.in_scope(
                || tracing::warn!(domain = name, error = %e, "legacy domain not adopted"),
            );
            false
        }
    }
}

/// Starts collecting an orphan unless its collection is in flight already.
fn collect_orphan(r: &Reconciler, host: &Arc<Host>, kind: OrphanKind, name: &str) -> bool {
    let key = (host.name().to_string(), kind, name.to_string());
    if !r
        .inner
        .state
        .lock()
        .expect("state")
        .collecting
        .insert(key.clone())
    {
        return false;
    }
    // An orphan has no row: no course and no VM id, only its name.
    let span = action_span(ActionKind::CollectOrphan, None, Some(host.name()), None);
    let (r2, host, name) = (r.clone(), Arc::clone(host), name.to_string());
    let task = async move {
        let owners = r2.owners();
        let result = host
            .remove_orphan_any(kind == OrphanKind::Domain, &name, &owners)
            .await;
        let now = now_ms();
        r2.inner
            .metrics
            .action(ActionKind::CollectOrphan, result.is_ok());
        let what = match (kind, host.runtime()) {
            (OrphanKind::Domain, Runtime::Vm) => "domain",
            (OrphanKind::Volume, Runtime::Vm) => "volume",
            (OrphanKind::Domain, Runtime::Container) => "container",
            (OrphanKind::Volume, Runtime::Container) => "network",
        };
        match result {
            // One event per object actually removed: one already gone (a
            // collection that finished since the pass looked) is none.
            Ok(Removal::Removed(with)) => {
                let with_what = match (with, kind) {
                    (Some(v), OrphanKind::Domain) => format!(
                        " with its {} {v}",
                        if host.runtime() == Runtime::Vm {
                            "volume"
                        } else {
                            "network"
                        }
                    ),
                    _ => String::new(),
                };
                tracing::info!(name = %name, what, "orphan collected{with_what}");
                r2.event(
                    now,
                    "orphan-collected",
                    None,
                    Some(host.name()),
                    None,
                    format!("{what} {name}{with_what}"),
                )
                .await;
            }
            Ok(Removal::Gone) => {}
            Ok(Removal::NotOurs) => {
                tracing::info!(name = %name, what, "not collected: its mark is not this instance's")
            }
            Ok(Removal::InUse) => {
                tracing::info!(name = %name, what, "not collected yet: a domain still uses it")
            }
            Err(e) => {
                tracing::warn!(name = %name, error = %e, "orphan not collected")
            }
        }
        r2.inner.state.lock().expect("state").collecting.remove(&(
            host.name().to_string(),
            kind,
            name,
        ));
    };
    r.inner
        .tasks
        .lock()
        .expect("tasks")
        .spawn(task.instrument(span));
    true
}
