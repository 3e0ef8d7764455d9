//! Container courses on the local Docker engine (`deploy/dev/docker`, which
//! scripts/setup runs; image `labpool/busybox:1`): real containers, real
//! networks, no mocks. A pool fills with containers carrying labpool's
//! labels and the course's limits, each alone on an internal network of its
//! own; a launch claims one and the pool refills; the terminal socket gives
//! a shell in it; an expired session takes its container and network with
//! it; labelled containers and networks unknown to the store are collected
//! after `orphan_grace`, unlabelled ones are left alone; and two students'
//! containers reach neither each other nor the host.
//!
//! A labpool collects the containers labelled with its own instance that
//! it does not know (another instance's are only reported: tested below),
//! and each test cleans up what earlier runs left, so these tests take
//! turns: one shared lock in this process, and a file lock against another
//! test process on the same engine. All but the orphan and the ownership
//! tests run with `orphan_grace: 1h`; the orphan test, whose grace is
//! short, waits before every pass until the engine holds no labelled object
//! that is not its own (another labpool's, say `serve --dev`) — what older
//! versions, without an instance label, needed.
//! Each test removes what it made, and only that: labpool's containers and
//! networks of its own courses (all named `itc-…`), found by label.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ExecConfig, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
};
use futures_util::StreamExt;
use labpool::hosts::docker::{LABEL_COURSE, LABEL_INSTANCE, LABEL_SPEC, LABEL_VM};
use labpool::store::{VmRow, VmState};
use tokio::io::AsyncWriteExt;

use crate::lab::{Lab, converge, count};
use crate::lti::{CONTEXT, Db, World, lti_block, session_of};
use crate::terminal::{Cred, Term};
use labpool::lms::Platform;

/// The engine: `DOCKER_HOST` when it names a unix socket (the docker CLI
/// these tests also run reads it too), else the one scripts/setup starts.
fn socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| h.starts_with("unix://"))
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into())
}
const IMAGE: &str = "labpool/busybox:1";
/// Every course of these tests starts with this: their leftovers are found
/// by it (the course label), and nothing else is ever removed.
const PREFIX: &str = "itc-";
/// A label of these tests' own on what they make by hand (not labpool's).
const TEST_LABEL: &str = "dev.labpool.it";
const LOCK_FILE: &str = "/tmp/labpool-it-docker.lock";
const CPUS: f64 = 0.5;
const MEMORY: i64 = 96 << 20;

// ---------------------------------------------------------------------------
// Taking turns on the engine.

static DOCKER_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This test's turn on the engine: no other Docker test of this process or
/// of another test process runs until it is dropped.
struct Turn {
    _file: std::fs::File,
    _guard: tokio::sync::MutexGuard<'static, ()>,
}

async fn turn() -> Turn {
    crate::support::init_test_logs();
    let guard = DOCKER_TESTS.lock().await;
    let file = tokio::task::spawn_blocking(|| {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .expect("the lock file opens");
        // SAFETY: flock on a descriptor this function owns; released when
        // the file is closed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {LOCK_FILE}");
        file
    })
    .await
    .unwrap();
    // Holding both locks, no test of these is running anywhere: what their
    // courses left on the engine is a killed run's, and goes.
    let leftovers = remove_labelled(LABEL_COURSE, |labels| {
        labels
            .get(LABEL_COURSE)
            .is_some_and(|c| c.starts_with(PREFIX))
    }) + remove_labelled(TEST_LABEL, |_| true);
    if leftovers > 0 {
        eprintln!("removed {leftovers} containers and networks an earlier run left");
    }
    Turn {
        _file: file,
        _guard: guard,
    }
}

/// The docker CLI (drops cannot wait on bollard).
fn cli(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the containers, then the networks, that carry `label` and whose
/// labels `mine` accepts; returns how many.
fn remove_labelled(label: &str, mine: impl Fn(&HashMap<String, String>) -> bool) -> usize {
    let mut removed = 0;
    let filter = format!("label={label}");
    for (kind, list) in [
        ("container", ["ps", "-aq", "--filter", filter.as_str()]),
        ("network", ["network", "ls", "-qf", filter.as_str()]),
    ] {
        let ids = cli(&list);
        for id in ids.split_whitespace() {
            let json = cli(&[kind, "inspect", "--format", "{{json .}}", id]);
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&json) else {
                continue;
            };
            let labels = match kind {
                "container" => &v["Config"]["Labels"],
                _ => &v["Labels"],
            };
            let labels: HashMap<String, String> =
                serde_json::from_value(labels.clone()).unwrap_or_default();
            if !mine(&labels) {
                continue;
            }
            match kind {
                "container" => cli(&["rm", "-f", "-v", id]),
                _ => cli(&["network", "rm", id]),
            };
            removed += 1;
        }
    }
    removed
}

/// Removes, when dropped (however the test ended), the containers and
/// networks whose label `.0` is `.1`: labpool's of one course of these
/// tests, or what a test made by hand.
struct Cleanup(&'static str, &'static str);

impl Cleanup {
    fn course(course: &'static str) -> Cleanup {
        assert!(course.starts_with(PREFIX));
        Cleanup(LABEL_COURSE, course)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (label, value) = (self.0, self.1);
        remove_labelled(label, |l| l.get(label).map(String::as_str) == Some(value));
    }
}

// ---------------------------------------------------------------------------
// The engine, as the tests see it.

async fn engine() -> Docker {
    Docker::connect_with_unix(&socket(), 60, bollard::API_DEFAULT_VERSION)
        .expect("Docker socket")
        .negotiate_version()
        .await
        .expect("the Docker engine answers (scripts/setup starts it: deploy/dev/docker all)")
}

/// Names of the containers and of the networks that carry labpool's label.
async fn labelled(docker: &Docker) -> Vec<(String, HashMap<String, String>)> {
    let filters = HashMap::from([("label", vec![LABEL_VM])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    let mut out: Vec<(String, HashMap<String, String>)> = containers
        .into_iter()
        .map(|c| {
            let name = c.names.unwrap_or_default().join(",");
            (
                name.trim_start_matches('/').to_string(),
                c.labels.unwrap_or_default(),
            )
        })
        .collect();
    out.extend(
        networks
            .into_iter()
            .map(|n| (n.name.unwrap_or_default(), n.labels.unwrap_or_default())),
    );
    out
}

async fn container_exists(docker: &Docker, name: &str) -> bool {
    match docker.inspect_container(name, None).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(e) => panic!("inspect container {name}: {e}"),
    }
}

async fn network_exists(docker: &Docker, name: &str) -> bool {
    match docker.inspect_network(name, None).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(e) => panic!("inspect network {name}: {e}"),
    }
}

/// Runs `script` with `sh -c` in `container` as `user`: exit code and
/// output (stdout and stderr).
async fn exec(docker: &Docker, container: &str, user: &str, script: &str) -> (i64, String) {
    let run = async {
        let created = docker
            .create_exec(
                container,
                ExecConfig {
                    cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
                    user: Some(user.into()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut text = String::new();
        if let StartExecResults::Attached { mut output, .. } =
            docker.start_exec(&created.id, None).await.unwrap()
        {
            while let Some(chunk) = output.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.unwrap().into_bytes()));
            }
        }
        let done = docker.inspect_exec(&created.id).await.unwrap();
        (done.exit_code.unwrap_or(-1), text)
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap_or_else(|_| panic!("`{script}` in {container} did not end within 30 s"))
}

/// Starts `cmd` in `container` as `user` and leaves it running.
async fn spawn(docker: &Docker, container: &str, user: &str, cmd: &[&str]) {
    let created = docker
        .create_exec(
            container,
            ExecConfig {
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                user: Some(user.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
}

/// The container's address on its (only) network, and that network's
/// gateway address.
async fn address(docker: &Docker, container: &str) -> (String, String) {
    let c = docker.inspect_container(container, None).await.unwrap();
    let networks = c.network_settings.unwrap().networks.unwrap();
    assert_eq!(networks.len(), 1, "{container}: {networks:?}");
    let endpoint = networks.into_values().next().unwrap();
    (
        endpoint.ip_address.unwrap_or_default(),
        endpoint.gateway.unwrap_or_default(),
    )
}

// ---------------------------------------------------------------------------
// labpool, as the tests run it.

/// A Docker host for these tests; `orphan_grace` is `1h` but in the
/// orphan test.
fn head(orphan_grace: &str) -> String {
    format!(
        "reconcile: {{ boots_per_host: 4, orphan_grace: {orphan_grace}, backoff: 1s }}\nhosts:\n  - name: docker\n    runtime: container\n    uri: \"{socket}\"\n    capacity: {{ vms: 12, memory: 4GiB, vcpus: 8, cpu_overcommit: 4 }}\n",
        socket = socket()
    )
}

/// A container course; launchable from `lms` when given.
fn course_text(name: &str, warm: u32, max: u32, session: &str, lms: Option<&Platform>) -> String {
    format!(
        "name: {name}\ntitle: Container lab {name}\nruntime: container\ncontainer:\n  image: {IMAGE}\n  cpus: {CPUS}\n  memory: 96MiB\n  user: student\npool: {{ warm: {warm}, max: {max} }}\nsession: {session}\n{}",
        lms.map(|l| lti_block(l, &[CONTEXT])).unwrap_or_default()
    )
}

/// labpool serving HTTP with one container course, once `warm` are warm.
async fn world(course: &'static str, warm: u32, max: u32, session: &str) -> World {
    assert!(course.starts_with(PREFIX));
    let lab = Lab::new();
    let lms = Platform::start().await.expect("platform starts");
    lab.course_text(course, &course_text(course, warm, max, session, Some(&lms)));
    World::start(
        lab,
        lms,
        Db::Sqlite,
        &head("1h"),
        "warm containers",
        move |vms| count(vms, course, VmState::Warm) == warm as usize,
    )
    .await
}

/// The VM row of a live session.
async fn vm_of(w: &World, session: &str) -> VmRow {
    let row = w.store.session(session).await.unwrap().expect("session");
    w.store.vm(&row.vm_id).await.unwrap().expect("its VM row")
}

/// Types a command whose output differs from its echo (`hel''lo` prints
/// `hello`) and waits for the output line.
async fn run(term: &mut Term, command: &str, expect: &str) {
    let at = term.out.len();
    term.send(&format!("{command}\r")).await;
    term.read_until(at, &format!("\n{expect}"), Duration::from_secs(20))
        .await;
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_pool_fills_with_limited_labelled_isolated_containers() {
    const COURSE: &str = "itc-fill";
    let _turn = turn().await;
    let _clean = Cleanup::course(COURSE);
    let w = world(COURSE, 2, 4, "{ expiry: 1h, idle: 30m }").await;
    let docker = engine().await;
    let vms: Vec<VmRow> = w
        .store
        .vms()
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.course == COURSE)
        .collect();
    assert_eq!(vms.len(), 2, "{vms:#?}");
    let networks: BTreeSet<&str> = vms.iter().map(|v| v.volume.as_str()).collect();
    assert_eq!(networks.len(), 2, "a network per container: {vms:#?}");
    for vm in &vms {
        assert_eq!(vm.state, VmState::Warm);
        assert_eq!(vm.domain, format!("labpool-{COURSE}-{}", vm.id));
        assert_eq!(vm.volume, format!("labpool-net-{}", vm.id));

        let c = docker.inspect_container(&vm.domain, None).await.unwrap();
        assert_eq!(
            c.state.as_ref().and_then(|s| s.running),
            Some(true),
            "{} runs",
            vm.domain
        );
        let config = c.config.as_ref().unwrap();
        assert_eq!(config.image.as_deref(), Some(IMAGE));
        let labels = config.labels.as_ref().unwrap();
        assert_eq!(labels.get(LABEL_VM), Some(&vm.id), "{labels:?}");
        assert_eq!(labels.get(LABEL_COURSE).map(String::as_str), Some(COURSE));
        assert_eq!(labels.get(LABEL_SPEC), Some(&vm.spec_hash));
        let limits = c.host_config.as_ref().unwrap();
        assert_eq!(limits.nano_cpus, Some((CPUS * 1e9) as i64), "CPU limit");
        assert_eq!(limits.memory, Some(MEMORY), "memory limit");
        assert_eq!(limits.memory_swap, Some(MEMORY), "no swap beyond it");
        assert_eq!(limits.network_mode.as_deref(), Some(vm.volume.as_str()));
        // On its own network, and on no other.
        let on: Vec<String> = c
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .map(|n| n.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(on, vec![vm.volume.clone()], "{}'s networks", vm.domain);

        let n = docker.inspect_network(&vm.volume, None).await.unwrap();
        assert_eq!(n.internal, Some(true), "{} is internal", vm.volume);
        assert_eq!(n.driver.as_deref(), Some("bridge"));
        let options = n.options.clone().unwrap_or_default();
        assert_eq!(
            options
                .get("com.docker.network.bridge.enable_icc")
                .map(String::as_str),
            Some("false"),
            "{options:?}"
        );
        assert_eq!(
            options
                .get("com.docker.network.bridge.inhibit_ipv4")
                .map(String::as_str),
            Some("true"),
            "{options:?}"
        );
        let labels = n.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(LABEL_VM), Some(&vm.id), "{labels:?}");
        assert_eq!(labels.get(LABEL_COURSE).map(String::as_str), Some(COURSE));
        // The network holds this container alone.
        let members: Vec<String> = n
            .containers
            .unwrap_or_default()
            .into_values()
            .filter_map(|e| e.name)
            .collect();
        assert_eq!(members, vec![vm.domain.clone()], "on {}", vm.volume);
    }
    // The engine holds exactly the store's containers and networks of the
    // course.
    let on_engine: BTreeSet<String> = labelled(&docker)
        .await
        .into_iter()
        .filter(|(_, l)| l.get(LABEL_COURSE).map(String::as_str) == Some(COURSE))
        .map(|(name, _)| name)
        .collect();
    let in_store: BTreeSet<String> = vms
        .iter()
        .flat_map(|v| [v.domain.clone(), v.volume.clone()])
        .collect();
    assert_eq!(on_engine, in_store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_claims_a_warm_container_and_the_pool_refills() {
    const COURSE: &str = "itc-claim";
    let _turn = turn().await;
    let _clean = Cleanup::course(COURSE);
    let w = world(COURSE, 2, 5, "{ expiry: 1h, idle: 30m }").await;
    let docker = engine().await;
    let warm: BTreeSet<String> = w
        .store
        .vms()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();

    let (session, code) = session_of(&w.launch(&w.student("alice")).await);
    let row = w.store.session(&session).await.unwrap().expect("session");
    assert_eq!(row.course, COURSE);
    assert_eq!(row.key.user_sub, "alice");
    let vm = vm_of(&w, &session).await;
    assert!(
        warm.contains(&vm.id),
        "one of the warm containers was claimed"
    );
    assert_eq!(vm.state, VmState::Assigned);
    let started = docker.inspect_container(&vm.domain, None).await.unwrap();
    assert_eq!(started.state.and_then(|s| s.running), Some(true));
    // The session page for it.
    let page = reqwest::get(format!("{}/session/{session}", w.base))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);

    // A relaunch returns to the same session and the same container.
    let (again, code2) = session_of(&w.launch(&w.student("alice")).await);
    assert_eq!(again, session);
    assert_ne!(code2, code);
    assert_eq!(vm_of(&w, &again).await.id, vm.id);
    let same = docker.inspect_container(&vm.domain, None).await.unwrap();
    assert_eq!(same.id, started.id, "the very container, not a new one");

    // The pool refills behind the claim; the claimed container stays.
    let vms = converge(&w.reconciler, Duration::from_secs(60), "refilled", |vms| {
        count(vms, COURSE, VmState::Warm) == 2 && count(vms, COURSE, VmState::Assigned) == 1
    })
    .await;
    for v in vms.iter().filter(|v| v.course == COURSE) {
        assert!(container_exists(&docker, &v.domain).await, "{}", v.domain);
    }
    assert!(container_exists(&docker, &vm.domain).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_socket_gives_a_shell_in_the_students_container() {
    const COURSE: &str = "itc-term";
    let _turn = turn().await;
    let _clean = Cleanup::course(COURSE);
    let w = world(COURSE, 1, 3, "{ expiry: 1h, idle: 30m }").await;
    let docker = engine().await;
    let (session, code) = session_of(&w.launch(&w.student("erin")).await);
    let vm = vm_of(&w, &session).await;

    let mut tab = Term::connect(&w.base, &session, &Cred::Code(code), 0).await;
    let token = tab.token();
    tab.read_until(0, "$ ", Duration::from_secs(20)).await;
    run(&mut tab, "echo hel''lo", "hello").await;
    run(&mut tab, "id -un", "student").await;
    tab.resize(123, 45).await;
    run(&mut tab, "stty size", "45 123").await;
    assert!(
        tab.statuses.contains(&"connected".to_string()),
        "{:?}",
        tab.statuses
    );
    // The shell is in this session's container: what it writes is there.
    run(
        &mut tab,
        "echo from-the-term''inal > /tmp/mark; cat /tmp/mark",
        "from-the-terminal",
    )
    .await;
    let (code, out) = exec(&docker, &vm.domain, "student", "cat /tmp/mark").await;
    assert_eq!((code, out.trim()), (0, "from-the-terminal"));

    // A reload carries on where the page was, in the same shell.
    let end = tab.end();
    tab.close().await;
    let mut again = Term::connect(&w.base, &session, &token, end).await;
    assert_eq!(again.offset, end);
    run(&mut again, "echo ag''ain", "again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_takes_its_container_and_network_and_the_pool_refills() {
    const COURSE: &str = "itc-expiry";
    let _turn = turn().await;
    let _clean = Cleanup::course(COURSE);
    let w = world(COURSE, 1, 3, "{ expiry: 5s, idle: 5s }").await;
    let docker = engine().await;
    let (session, code) = session_of(&w.launch(&w.student("carol")).await);
    let vm = vm_of(&w, &session).await;
    assert!(container_exists(&docker, &vm.domain).await);
    assert!(network_exists(&docker, &vm.volume).await);
    let mut tab = Term::connect(&w.base, &session, &Cred::Code(code), 0).await;

    let vms = converge(
        &w.reconciler,
        Duration::from_secs(60),
        "the session ended, its container destroyed, the pool refilled",
        |vms| vms.iter().all(|v| v.id != vm.id) && count(vms, COURSE, VmState::Warm) == 1,
    )
    .await;
    assert_eq!(count(&vms, COURSE, VmState::Assigned), 0);
    let ended = w.store.session(&session).await.unwrap().unwrap();
    assert_eq!(ended.end_reason.as_deref(), Some("expired"));
    assert!(ended.ended_at.is_some());
    let (code, said) = tab.closed(Duration::from_secs(30)).await;
    assert_eq!(
        (code, said.as_str()),
        (4000, "expired"),
        "what the page heard"
    );

    // Gone from the engine: the container, its network, anything labelled
    // with its id.
    assert!(
        !container_exists(&docker, &vm.domain).await,
        "{}",
        vm.domain
    );
    assert!(!network_exists(&docker, &vm.volume).await, "{}", vm.volume);
    let left: Vec<String> = labelled(&docker)
        .await
        .into_iter()
        .filter(|(_, l)| l.get(LABEL_VM) == Some(&vm.id))
        .map(|(name, _)| name)
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The refill is a fresh container on a fresh network.
    let fresh = vms.iter().find(|v| v.course == COURSE).unwrap();
    assert_ne!(fresh.volume, vm.volume);
    assert!(container_exists(&docker, &fresh.domain).await);
    assert!(network_exists(&docker, &fresh.volume).await);
}

/// Makes a network and a container on it with `labels` (and this test's
/// own label); the container just sleeps.
async fn make(docker: &Docker, container: &str, network: &str, labels: &HashMap<String, String>) {
    let mut labels = labels.clone();
    labels.insert(TEST_LABEL.into(), "containers".into());
    docker
        .create_network(NetworkCreateRequest {
            name: network.into(),
            driver: Some("bridge".into()),
            internal: Some(true),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(container)
                    .build(),
            ),
            ContainerCreateBody {
                image: Some(IMAGE.into()),
                cmd: Some(vec!["sleep".into(), "3600".into()]),
                labels: Some(labels),
                host_config: Some(HostConfig {
                    init: Some(true),
                    network_mode: Some(network.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(container, None).await.unwrap();
}

/// Waits until the engine holds no labelled container or network that is
/// not `mine`: another labpool's (a `serve --dev`, another test process).
/// A short orphan grace must never see one.
async fn alone_on_the_engine(docker: &Docker, mine: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let foreign: Vec<String> = labelled(docker)
            .await
            .into_iter()
            .filter(|(_, l)| {
                !l.get(LABEL_COURSE)
                    .is_some_and(|c| mine.contains(&c.as_str()))
            })
            .map(|(name, _)| name)
            .collect();
        if foreign.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "another labpool's containers or networks are on this Docker engine: {foreign:?}. \
             This test's labpool collects labelled objects it does not know; stop the other \
             labpool (serve --dev, scripts/check-examples) and run it again"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A pass and its actions, once no other labpool's objects are about.
async fn orphan_pass(docker: &Docker, r: &labpool::reconcile::Reconciler, mine: &[&str]) {
    alone_on_the_engine(docker, mine).await;
    r.pass().await.expect("pass");
    r.settle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_orphans_are_collected_after_the_grace_and_unlabelled_ones_left_alone() {
    const COURSE: &str = "itc-orphans";
    // The course named on the orphans' labels: one labpool no longer knows.
    const GONE: &str = "itc-orphans-gone";
    const GRACE: Duration = Duration::from_secs(3);
    let _turn = turn().await;
    let _clean = Cleanup::course(COURSE);
    let _clean_orphans = Cleanup::course(GONE);
    let _clean_bystanders = Cleanup(TEST_LABEL, "containers");
    let docker = engine().await;
    let lab = Lab::new();
    lab.course_text(
        COURSE,
        &course_text(COURSE, 1, 2, "{ expiry: 1h, idle: 30m }", None),
    );
    let config = lab.config(&head(&format!("{}s", GRACE.as_secs())));
    let r = lab.reconciler(config).await;
    // Labelled as this labpool's (its instance), unknown to its store.
    let id = format!("{:016x}", rand::random::<u64>());
    let (orphan, orphan_net) = (format!("labpool-{GONE}-{id}"), format!("labpool-net-{id}"));
    let labels = HashMap::from([
        (LABEL_VM.to_string(), id.clone()),
        (LABEL_COURSE.to_string(), GONE.to_string()),
        (LABEL_SPEC.to_string(), "0000000000000000".to_string()),
        (LABEL_INSTANCE.to_string(), r.instance().to_string()),
    ]);
    make(&docker, &orphan, &orphan_net, &labels).await;
    // Bystanders named exactly as labpool names its own, without its label.
    let other = format!("{:016x}", rand::random::<u64>());
    let (bystander, bystander_net) = (
        format!("labpool-{GONE}-{other}"),
        format!("labpool-net-{other}"),
    );
    make(&docker, &bystander, &bystander_net, &HashMap::new()).await;
    let mine = [COURSE, GONE];

    // The first pass sees the orphans, and leaves them for the grace.
    let first_seen = Instant::now();
    orphan_pass(&docker, &r, &mine).await;
    assert!(
        container_exists(&docker, &orphan).await,
        "collected at once"
    );
    assert!(
        network_exists(&docker, &orphan_net).await,
        "collected at once"
    );

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        orphan_pass(&docker, &r, &mine).await;
        let vms = r.store().vms().await.unwrap();
        if !container_exists(&docker, &orphan).await
            && !network_exists(&docker, &orphan_net).await
            && count(&vms, COURSE, VmState::Warm) == 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphans not collected: container {} network {}; VMs {vms:#?}",
            container_exists(&docker, &orphan).await,
            network_exists(&docker, &orphan_net).await,
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        first_seen.elapsed() >= GRACE,
        "collected after {:?}, before the grace",
        first_seen.elapsed()
    );
    let events = r.store().events(50).await.unwrap();
    let collected: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "orphan-collected")
        .map(|e| e.message.as_str())
        .collect();
    // One collection, one event: the container took its network with it.
    assert_eq!(
        collected,
        vec![format!("container {orphan} with its network {orphan_net}").as_str()],
        "{collected:?}"
    );

    // Another pass, well past the grace: the unlabelled pair stays, and so
    // does labpool's own warm container.
    orphan_pass(&docker, &r, &mine).await;
    assert!(container_exists(&docker, &bystander).await, "{bystander}");
    assert!(
        network_exists(&docker, &bystander_net).await,
        "{bystander_net}"
    );
    let vms = r.store().vms().await.unwrap();
    let warm = vms.iter().find(|v| v.course == COURSE).expect("a warm VM");
    assert_eq!(warm.state, VmState::Warm);
    assert!(container_exists(&docker, &warm.domain).await);
    assert!(network_exists(&docker, &warm.volume).await);
}

/// Issue 16 §1 on one Docker engine: labpool A (a live session and a warm
/// container), B (its own store and course) and C (no course at all), each
/// with a 2 s grace, pass in turn for many grace periods. Nobody loses a
/// container, a network or a session; each reports the others' objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_labpools_on_one_engine_never_collect_each_others_labs() {
    const A: &str = "itc-own-a";
    const B: &str = "itc-own-b";
    const GRACE: Duration = Duration::from_secs(2);
    let _turn = turn().await;
    let (_clean_a, _clean_b) = (Cleanup::course(A), Cleanup::course(B));
    let docker = engine().await;
    let (lab_a, lab_b, lab_c) = (Lab::new(), Lab::new(), Lab::new());
    lab_a.course_text(A, &course_text(A, 1, 2, "{ expiry: 1h, idle: 30m }", None));
    lab_b.course_text(B, &course_text(B, 1, 1, "{ expiry: 1h, idle: 30m }", None));
    let a = lab_a.reconciler(lab_a.config(&head("2s"))).await;
    let b = lab_b.reconciler(lab_b.config(&head("2s"))).await;
    let c = lab_c.reconciler(lab_c.config(&head("2s"))).await;
    let vms = converge(&a, Duration::from_secs(60), "A warm", |v| {
        count(v, A, VmState::Warm) == 1
    })
    .await;
    let now = labpool::reconcile::now_ms();
    let key = labpool::store::SessionKey {
        issuer: "https://lms.example".into(),
        deployment_id: "d".into(),
        user_sub: "alice".into(),
        context_id: "ctx".into(),
        resource_link_id: "rl".into(),
    };
    let claimed = a
        .store()
        .claim(A, &vms[0].spec_hash, &key, now, now + 3_600_000)
        .await
        .unwrap()
        .expect("a warm container for alice");
    converge(&a, Duration::from_secs(60), "A: 1 warm, 1 assigned", |v| {
        count(v, A, VmState::Warm) == 1 && count(v, A, VmState::Assigned) == 1
    })
    .await;
    converge(&b, Duration::from_secs(60), "B warm", |v| {
        count(v, B, VmState::Warm) == 1
    })
    .await;
    let rows = |r: &labpool::reconcile::Reconciler| {
        let store = r.store().clone();
        async move {
            let vms: BTreeSet<(String, String)> = store
                .vms()
                .await
                .unwrap()
                .into_iter()
                .map(|v| (v.id, v.state.to_string()))
                .collect();
            vms
        }
    };
    let (before_a, before_b) = (rows(&a).await, rows(&b).await);

    let started = Instant::now();
    while started.elapsed() < GRACE * 7 {
        for (name, r) in [("A", &a), ("B", &b), ("C", &c)] {
            let report = r.pass().await.expect("pass");
            r.settle().await;
            assert!(
                !report.plan.actions.iter().any(|x| matches!(
                    x,
                    labpool::reconcile::plan::Action::CollectOrphan { .. }
                        | labpool::reconcile::plan::Action::Destroy { .. }
                )),
                "{name} would touch something after {:?}: {:?}",
                started.elapsed(),
                report.plan.actions
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(rows(&a).await, before_a);
    assert_eq!(rows(&b).await, before_b);
    for r in [&a, &b] {
        for vm in r.store().vms().await.unwrap() {
            assert!(container_exists(&docker, &vm.domain).await, "{}", vm.domain);
            assert!(network_exists(&docker, &vm.volume).await, "{}", vm.volume);
            let labels = docker
                .inspect_container(&vm.domain, None)
                .await
                .unwrap()
                .config
                .and_then(|c| c.labels)
                .unwrap_or_default();
            assert_eq!(
                labels.get(LABEL_INSTANCE).map(String::as_str),
                Some(r.instance())
            );
        }
    }
    let session = a
        .store()
        .session(&claimed.session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.ended_at, None, "alice's session is live");
    let foreign = |r: &labpool::reconcile::Reconciler, other: &labpool::reconcile::Reconciler| {
        let (store, other) = (r.store().clone(), other.instance().to_string());
        async move {
            store
                .foreign_objects()
                .await
                .unwrap()
                .into_iter()
                .find(|f| f.host == "docker" && f.instance == other)
                .map(|f| f.objects)
        }
    };
    // A container and a network per lab.
    assert_eq!(foreign(&a, &b).await, Some(2));
    assert_eq!(foreign(&b, &a).await, Some(4));
    assert_eq!(foreign(&c, &a).await, Some(4));
    assert_eq!(foreign(&c, &b).await, Some(2));
    let said = a
        .store()
        .events(1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "foreign-objects" && e.message.contains(b.instance()))
        .count();
    assert_eq!(said, 1, "said once, not every pass");
    a.store()
        .end_session(
            &claimed.session.id,
            "test over",
            labpool::reconcile::now_ms(),
        )
        .await
        .unwrap();
}

/// Every IPv4 address of this machine but loopback.
fn host_addresses() -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`; it is walked while alive, then freed.
    unsafe {
        assert_eq!(libc::getifaddrs(&mut list), 0, "getifaddrs");
        let mut at = list;
        while !at.is_null() {
            let addr = (*at).ifa_addr;
            if !addr.is_null() && i32::from((*addr).sa_family) == libc::AF_INET {
                let sin = &*(addr as *const libc::sockaddr_in);
                out.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            at = (*at).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out.retain(|a| !a.is_loopback());
    out
}

/// Connects from `container` to `ip:port` (busybox nc, 3 s to connect):
/// what the listener said, if it was reached.
async fn connect_from(docker: &Docker, container: &str, ip: &str, port: u16) -> String {
    let (_, out) = exec(
        docker,
        container,
        "student",
        &format!("timeout 5 nc -w 3 {ip} {port} </dev/null"),
    )
    .await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn students_containers_reach_neither_each_other_nor_the_host() {
    const COURSE: &str = "itc-isolation";
    let _turn = turn().await;
    let _clean = Cleanup::course(COURSE);
    let w = world(COURSE, 2, 4, "{ expiry: 1h, idle: 30m }").await;
    let docker = engine().await;
    let (a, _) = session_of(&w.launch(&w.student("ann")).await);
    let (b, _) = session_of(&w.launch(&w.student("ben")).await);
    let (a, b) = (vm_of(&w, &a).await, vm_of(&w, &b).await);
    assert_ne!(a.id, b.id);
    let (a_ip, a_gateway) = address(&docker, &a.domain).await;
    let (b_ip, _) = address(&docker, &b.domain).await;
    assert!(!a_ip.is_empty() && !b_ip.is_empty(), "{a_ip:?} {b_ip:?}");

    // A listener in each, as the student could start one.
    spawn(
        &docker,
        &b.domain,
        "student",
        &["nc", "-ll", "-p", "8080", "-e", "echo", "pong-b"],
    )
    .await;
    spawn(
        &docker,
        &a.domain,
        "student",
        &["nc", "-ll", "-p", "8080", "-e", "echo", "pong-a"],
    )
    .await;
    // Controls: each reaches its own listener at its own address, so a
    // failure below is the network's doing, not the listener's or nc's.
    for (vm, ip, said) in [(&b, &b_ip, "pong-b"), (&a, &a_ip, "pong-a")] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = connect_from(&docker, &vm.domain, ip, 8080).await;
            if out.contains(said) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} does not reach its own listener at {ip}: {out:?}",
                vm.domain
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A does not reach B's listener, nor B A's.
    let out = connect_from(&docker, &a.domain, &b_ip, 8080).await;
    assert!(!out.contains("pong"), "A reached B at {b_ip}: {out:?}");
    let out = connect_from(&docker, &b.domain, &a_ip, 8080).await;
    assert!(!out.contains("pong"), "B reached A at {a_ip}: {out:?}");

    // The host: a listener on all its addresses, reachable from here...
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let serving = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(b"pong-host\n").await;
        }
    });
    let docker0 = docker
        .inspect_network("bridge", None)
        .await
        .ok()
        .and_then(|n| n.ipam?.config?.into_iter().find_map(|c| c.gateway));
    let mut targets: BTreeSet<String> = host_addresses()
        .into_iter()
        .map(|a| a.to_string())
        .collect();
    targets.extend(docker0);
    assert!(!targets.is_empty());
    for ip in &targets {
        let mut s = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect((ip.as_str(), port)),
        )
        .await
        .unwrap_or_else(|_| panic!("the host's listener at {ip}"))
        .unwrap_or_else(|e| panic!("the host's listener at {ip}: {e}"));
        let mut line = [0u8; 10];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut line)
            .await
            .unwrap();
        assert_eq!(&line, b"pong-host\n");
    }
    let before = accepted.load(Ordering::SeqCst);
    assert_eq!(before, targets.len());
    // ...and not from A, at any of them, nor at A's network's gateway
    // address (which no host interface holds).
    if !a_gateway.is_empty() {
        targets.insert(a_gateway);
    }
    let script: String = targets
        .iter()
        .map(|ip| {
            format!(
                "(o=$(timeout 5 nc -w 3 {ip} {port} </dev/null 2>&1); echo \"{ip} rc=$? $o\") & "
            )
        })
        .chain(["wait".to_string()])
        .collect();
    let (_, out) = exec(&docker, &a.domain, "student", &script).await;
    assert!(!out.contains("pong-host"), "A reached the host: {out}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        before,
        "the host's listener accepted a connection from A: {out}"
    );
    // Every attempt ended (none is still connecting when counted).
    for ip in &targets {
        assert!(out.contains(&format!("{ip} rc=")), "{ip}: {out}");
    }
    serving.abort();
}

// ---------------------------------------------------------------------------
// A Docker host reached over TCP with TLS client certificates.

/// Where `deploy/dev/docker tls` keeps the dev engine's CA and labpool's
/// client certificate; the engine also listens on TLS_ENGINE with them.
const TLS_DIR: &str = "/var/lib/labpool/docker-tls";
const TLS_ENGINE: &str = "tcp://127.0.0.1:2376";

fn tls_host(name: &str, cert: &str, key: &str) -> labpool::config::HostConfig {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "runtime": "container",
        "uri": TLS_ENGINE,
        "tls": {
            "ca": format!("{TLS_DIR}/ca.pem"),
            "cert": format!("{TLS_DIR}/{cert}"),
            "key": format!("{TLS_DIR}/{key}"),
        },
        "capacity": { "vms": 4, "memory": "1GiB", "vcpus": 2 },
    }))
    .expect("a host configuration")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_host_over_tls_needs_labpools_client_certificate() {
    const COURSE: &str = "itc-tls";
    let _turn = turn().await;
    let _cleanup = Cleanup::course(COURSE);
    // The engine's own certificate is not a client's (serverAuth only): the
    // engine refuses it, and the host is unreachable, saying why.
    let refused =
        labpool::hosts::Host::new(tls_host("tls-bad", "server-cert.pem", "server-key.pem"));
    let err = refused
        .inventory_any()
        .await
        .expect_err("the engine refuses a certificate that is not a client's");
    assert!(err.is_unreachable(), "{err}");
    assert!(err.to_string().contains("tls-bad"), "{err}");
    // Usually the engine's alert ("BadCertificate"); in TLS 1.3 the client
    // may write its request before the alert arrives, and then hears only
    // that the engine hung up (reset, EOF, or hyper's "connection was not
    // ready" when it drops the half-made connection).
    let why = err.to_string().to_lowercase();
    assert!(
        [
            "certificate",
            "reset",
            "broken pipe",
            "closed",
            "eof",
            "not ready"
        ]
        .iter()
        .any(|w| why.contains(w)),
        "the reason says what happened: {err}"
    );
    // labpool's client certificate: the inventory answers...
    let good = labpool::hosts::Host::new(tls_host("tls", "cert.pem", "key.pem"));
    good.inventory_any()
        .await
        .expect("the engine answers labpool's client certificate");
    // ...and a whole pool comes up through it, as on the socket.
    let lab = Lab::new();
    let lms = Platform::start().await.expect("platform starts");
    lab.course_text(
        COURSE,
        &course_text(COURSE, 1, 2, "{ expiry: 1h }", Some(&lms)),
    );
    let head = format!(
        "reconcile: {{ boots_per_host: 2, orphan_grace: 1h, backoff: 1s }}\nhosts:\n  - name: tls\n    runtime: container\n    uri: \"{TLS_ENGINE}\"\n    tls: {{ ca: {TLS_DIR}/ca.pem, cert: {TLS_DIR}/cert.pem, key: {TLS_DIR}/key.pem }}\n    capacity: {{ vms: 4, memory: 1GiB, vcpus: 2 }}\n"
    );
    let w = World::start(
        lab,
        lms,
        Db::Sqlite,
        &head,
        "a warm container over TLS",
        |vms| count(vms, COURSE, VmState::Warm) == 1,
    )
    .await;
    let vms = w.store.vms().await.unwrap();
    let warm = vms.iter().find(|v| v.course == COURSE).expect("its row");
    // Seen on the engine's socket too: the same engine, reached over TLS.
    assert!(container_exists(&engine().await, &warm.domain).await);
}

// ---------------------------------------------------------------------------
// Where Docker is missing.

#[tokio::test]
async fn without_docker_the_vm_courses_run_and_the_missing_engine_is_named() {
    // No engine on the socket: the container course waits, the VM course
    // (on a libvirt test host) comes up all the same. Needs no Docker.
    let lab = Lab::new();
    lab.course("vm-only", "tiny", "64MiB", 1, 2);
    lab.course_text(
        "itc-no-engine",
        &course_text("itc-no-engine", 1, 2, "{ expiry: 1h }", None),
    );
    let head = format!(
        "reconcile: {{ boots_per_host: 4, orphan_grace: 1h, backoff: 1s }}\nhosts:\n  - name: vms\n    uri: \"{}\"\n    storage_pool: labpool\n    capacity: {{ vms: 10, memory: 16GiB, vcpus: 16 }}\n  - name: gone-docker\n    runtime: container\n    uri: unix:///nonexistent/docker.sock\n    capacity: {{ vms: 4, memory: 1GiB, vcpus: 2 }}\nimages:\n  tiny: {{ volume: base.qcow2 }}\n",
        lab.test_host("vms")
    );
    let r = lab.reconciler(lab.config(&head)).await;
    assert_eq!(r.check_engines().await, vec!["gone-docker".to_string()]);
    converge(&r, Duration::from_secs(30), "the VM course warm", |vms| {
        count(vms, "vm-only", VmState::Warm) == 1
    })
    .await;
    let (plan, down) = r.dry_run().await.unwrap();
    let (host, why) = down.first().expect("the missing engine is named");
    assert_eq!(host, "gone-docker");
    assert!(why.contains("/nonexistent/docker.sock"), "{why}");
    let waiting = plan
        .courses
        .iter()
        .find(|c| c.course == "itc-no-engine")
        .expect("the container course is planned");
    assert_eq!(waiting.warm, 0);
    assert!(waiting.shortfall.is_some(), "{waiting:?}");
    let vms = r.store().vms().await.unwrap();
    assert_eq!(count(&vms, "itc-no-engine", VmState::Warm), 0);
    assert!(vms.iter().all(|v| v.host == "vms"), "{vms:?}");
}

// ---------------------------------------------------------------------------
// Reset and removal, as for VMs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_and_a_removed_course_treat_containers_as_they_treat_vms() {
    const COURSE: &str = "itc-reset";
    let _turn = turn().await;
    let _clean = Cleanup::course(COURSE);
    let w = world(COURSE, 1, 3, "{ expiry: 1h, idle: 30m }").await;
    let docker = engine().await;
    let (session, code) = session_of(&w.launch(&w.student("dave")).await);
    let first = vm_of(&w, &session).await;
    converge(
        &w.reconciler,
        Duration::from_secs(60),
        "a warm container again",
        |vms| count(vms, COURSE, VmState::Warm) == 1,
    )
    .await;
    let mut tab = Term::connect(&w.base, &session, &Cred::Code(code), 0).await;
    tab.read_until(0, "$ ", Duration::from_secs(20)).await;
    run(&mut tab, "touch /tmp/mine; ls /tmp/mi''ne", "/tmp/mine").await;

    // An admin reset: a fresh container for the same session; the open page
    // moves to it at once, and the old container and its network go.
    let admin = labpool::admin::Admin::new(w.reconciler.clone(), w.gateway.clone());
    let by = labpool::admin::Principal {
        token_id: "t".into(),
        name: "instructor".into(),
        scope: labpool::admin::Scope::Admin,
        courses: None,
    };
    let at = tab.out.len();
    let done = admin.reset_session(&session, &by).await.expect("reset");
    assert_eq!(done.old_vm, first.id);
    tab.read_until(at, "Your VM was reset", Duration::from_secs(10))
        .await;
    run(&mut tab, "test -e /tmp/mine || echo fre''sh", "fresh").await;
    let fresh = vm_of(&w, &session).await;
    assert_ne!(fresh.domain, first.domain);
    converge(
        &w.reconciler,
        Duration::from_secs(60),
        "the old container gone",
        |vms| vms.iter().all(|v| v.id != first.id),
    )
    .await;
    assert!(!container_exists(&docker, &first.domain).await);
    assert!(!network_exists(&docker, &first.volume).await);

    // The course leaves the source: its warm containers go, the student
    // keeps theirs, and the terminal still works in it.
    w.lab.remove_course(COURSE);
    crate::lab::confirm_removal(&w.reconciler).await;
    converge(
        &w.reconciler,
        Duration::from_secs(60),
        "the removed course's warm container gone",
        |vms| count(vms, COURSE, VmState::Warm) == 0 && vms.iter().any(|v| v.id == fresh.id),
    )
    .await;
    assert!(container_exists(&docker, &fresh.domain).await);
    run(&mut tab, "echo st''ill", "still").await;
    let warm_gone: Vec<String> = labelled(&docker)
        .await
        .into_iter()
        .filter(|(_, l)| l.get(LABEL_COURSE).map(String::as_str) == Some(COURSE))
        .filter(|(_, l)| l.get(LABEL_VM) != Some(&fresh.id))
        .map(|(name, _)| name)
        .collect();
    assert!(warm_gone.is_empty(), "left behind: {warm_gone:?}");
}

// ---------------------------------------------------------------------------
// A course's own command, proved ready by a marker in its output.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_running_its_own_command_is_ready_by_its_output_marker() {
    const COURSE: &str = "itc-marker";
    let _turn = turn().await;
    let _clean = Cleanup::course(COURSE);
    let lab = Lab::new();
    // The marker comes a moment after start, from the course's own command;
    // the terminal's shell is another program than the main process.
    lab.course_text(
        COURSE,
        &format!(
            "name: {COURSE}\ntitle: Marker\nruntime: container\ncontainer:\n  image: {IMAGE}\n  cpus: 0.25\n  memory: 64MiB\n  command: [sh, -c, 'sleep 1; echo LAB-READY; exec sleep 100000']\n  shell: [/bin/sh, -l]\npool: {{ warm: 1, max: 2 }}\nreadiness: {{ console_marker: LAB-READY, timeout: 30s }}\nlti: {{ contexts: [{CONTEXT}] }}\n"
        ),
    );
    let r = lab.reconciler(lab.config(&head("1h"))).await;
    let vms = converge(&r, Duration::from_secs(60), "warm by its marker", |vms| {
        count(vms, COURSE, VmState::Warm) == 1
    })
    .await;
    let vm = vms.iter().find(|v| v.course == COURSE).unwrap();
    // Warm only once the marker was printed: at least the command's second.
    let ready_after = vm.ready_at.expect("ready_at") - vm.created_at;
    assert!(ready_after >= 1000, "warm {ready_after} ms after creation");
    let docker = engine().await;
    let (code, out) = exec(
        &docker,
        &vm.domain,
        "root",
        "cat /proc/1/cmdline | tr '\\0' ' '",
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.contains("sleep 100000"), "PID 1 runs {out:?}");
}

/// Issue 15 §7: at `LABPOOL_LOG=trace`, tungstenite logged every frame,
/// with the refreshed session tokens and the terminal's bytes. Now `labpool
/// serve` at trace, through a real terminal in a container: neither the
/// token nor what was typed nor what the shell printed reaches the log, in
/// text or as the hex of a frame dump. The socket also outlives the
/// listener's idle and header timeouts (1 s here): an upgraded terminal is
/// no longer hyper's connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_log_holds_no_token_and_no_terminal_bytes() {
    use labpool::lms::{Browser, ToolRegistration};
    const COURSE: &str = "itc-trace";
    let _turn = turn().await;
    let _clean = Cleanup::course(COURSE);
    let lab = Lab::new();
    let platform = Platform::start().await.expect("platform starts");
    lab.course_text(
        COURSE,
        &course_text(COURSE, 1, 2, "{ expiry: 1h, idle: 30m }", Some(&platform)),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    std::fs::write(
        lab.path().join("labpool.yaml"),
        format!(
            "database: \"sqlite:labpool.db\"\nsource: {{ folder: courses }}\nhttp: {{ listen: \"127.0.0.1:{port}\", limits: {{ header_timeout: 1s, idle_timeout: 1s, body_timeout: 1s }} }}\n{head}lti:\n  base_url: \"{base}\"\n  platforms:\n    - issuer: \"{iss}\"\n      client_id: {client}\n      deployment_ids: [{deployment}]\n      auth_login_url: \"{auth}\"\n      token_url: \"{token}\"\n      jwks_url: \"{jwks}\"\n",
            head = head("1h"),
            client = crate::lti::CLIENT,
            deployment = crate::lti::DEPLOYMENT,
            iss = platform.issuer(),
            auth = platform.auth_url(),
            token = platform.token_url(),
            jwks = platform.jwks_url(),
        ),
    )
    .unwrap();
    platform.register_tool(ToolRegistration::labpool_at(
        &base,
        crate::lti::CLIENT,
        crate::lti::DEPLOYMENT,
    ));
    let log_path = lab.path().join("serve.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(
        std::process::Command::new(env!("CARGO_BIN_EXE_labpool"))
            .args(["serve", "--config", "labpool.yaml"])
            .current_dir(lab.path())
            // Whatever the operator asks for, everything at trace included.
            .env(
                "LABPOOL_LOG",
                "trace,tungstenite=trace,tokio_tungstenite=trace",
            )
            .env_remove("LABPOOL_CONFIG")
            .env_remove("LABPOOL_DATABASE_URL")
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("serve starts"),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !log().contains("VM warm") {
        assert!(Instant::now() < deadline, "no warm container: {}", log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let student = labpool::lms::Launch::new(
        crate::lti::CLIENT,
        crate::lti::DEPLOYMENT,
        "trace-student",
        "link-1",
    )
    .in_context(CONTEXT, "Linux 101");
    let page = Browser::new().launch(&platform, &student).await.unwrap();
    let (session, code) = session_of(&page);
    let mut tab = Term::connect(&base, &session, &Cred::Code(code.clone()), 0).await;
    tab.read_until(0, "$ ", Duration::from_secs(20)).await;
    // Longer than every listener timeout, with nothing moving.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let typed = "echo typed-sec''ret-7f3a9c";
    run(&mut tab, typed, "typed-secret-7f3a9c").await;
    // The one-time code the page traded and every token labpool gave it.
    let mut secrets = vec![code.clone()];
    secrets.extend(tab.tokens.iter().cloned());
    assert!(secrets.len() > 1, "the socket handed the page a token");
    tab.close().await;
    let _ = child.0.kill();
    let _ = child.0.wait();

    let text = log();
    assert!(text.contains("TRACE"), "the trace level is on");
    secrets.extend(["typed-sec''ret-7f3a9c".into(), "typed-secret-7f3a9c".into()]);
    for secret in &secrets {
        let secret = secret.as_str();
        assert!(!text.contains(secret), "{secret:?} in the log");
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!text.contains(&hex), "{secret:?} as hex in the log");
    }
    assert!(
        !text.contains("tungstenite"),
        "a payload crate logged below warn"
    );
}
