//! The reconciler against real libvirt: several independent test-driver
//! hosts (placement, capacity, a host going down, drains, expiry, orphans)
//! and real TCG guests on `qemu:///system`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use labpool::hosts::{NewVm, xml};
use labpool::reconcile::now_ms;
use labpool::store::{SessionKey, VmState};

use crate::lab::{Lab, confirm_removal, converge, count, on_host};

const MINUTE: Duration = Duration::from_secs(60);

fn host_yaml(name: &str, uri: &str, vms: u32) -> String {
    format!(
        "  - name: {name}\n    uri: \"{uri}\"\n    storage_pool: labpool\n    capacity: {{ vms: {vms}, memory: 16GiB, vcpus: 16 }}\n"
    )
}

const TEST_IMAGES: &str = "images:\n  tiny: { volume: base.qcow2 }\n";

fn fast(extra: &str) -> String {
    format!("reconcile: {{ boots_per_host: 8, orphan_grace: 1h, backoff: 1s {extra} }}\n")
}

fn warm_on(vms: &[labpool::store::VmRow], host: &str) -> usize {
    vms.iter()
        .filter(|v| v.host == host && v.state == VmState::Warm)
        .count()
}

#[tokio::test]
async fn spreads_courses_over_hosts_least_loaded_first() {
    let lab = Lab::new();
    let hosts: String = ["a", "b", "c"]
        .iter()
        .map(|h| host_yaml(h, &lab.test_host(h), 10))
        .collect();
    let config = lab.config(&format!("{}hosts:\n{hosts}{TEST_IMAGES}", fast("")));
    lab.course("wide", "tiny", "256MiB", 6, 20);
    let r = lab.reconciler(config).await;
    let vms = converge(&r, MINUTE, "6 warm", |v| {
        count(v, "wide", VmState::Warm) == 6
    })
    .await;
    for h in ["a", "b", "c"] {
        assert_eq!(warm_on(&vms, h), 2, "a course spreads evenly: {h}");
    }
    // A second course lands on the least-loaded host first.
    lab.course("narrow", "tiny", "256MiB", 3, 20);
    let vms = converge(&r, MINUTE, "3 warm", |v| {
        count(v, "narrow", VmState::Warm) == 3
    })
    .await;
    for h in ["a", "b", "c"] {
        assert_eq!(on_host(&vms, h), 3, "{h}");
    }
    // What the store says is what the hosts have.
    for h in ["a", "b", "c"] {
        let host = Arc::clone(r.host(h).unwrap());
        let inventory = host.run(|h| h.inventory()).await.unwrap();
        let mut on_host: Vec<String> = inventory
            .domains
            .iter()
            .map(|d| d.mark.vm_id.clone())
            .collect();
        let mut in_store: Vec<String> = vms
            .iter()
            .filter(|v| v.host == h)
            .map(|v| v.id.clone())
            .collect();
        on_host.sort();
        in_store.sort();
        assert_eq!(on_host, in_store);
        assert_eq!(inventory.volumes.len(), 3, "one overlay per VM");
        assert!(inventory.domains.iter().all(|d| d.running));
    }
}

#[tokio::test]
async fn full_hosts_are_never_overfilled_and_say_so() {
    let lab = Lab::new();
    let hosts = format!(
        "{}{}",
        host_yaml("a", &lab.test_host("a"), 2),
        host_yaml("b", &lab.test_host("b"), 2)
    );
    let config = lab.config(&format!("{}hosts:\n{hosts}{TEST_IMAGES}", fast("")));
    lab.course("big", "tiny", "256MiB", 6, 10);
    let r = lab.reconciler(config).await;
    let vms = converge(&r, MINUTE, "4 warm", |v| {
        count(v, "big", VmState::Warm) == 4
    })
    .await;
    assert_eq!((on_host(&vms, "a"), on_host(&vms, "b")), (2, 2));
    let report = r.pass().await.unwrap();
    assert!(report.plan.actions.is_empty(), "{:?}", report.plan.actions);
    let counts = report
        .plan
        .courses
        .iter()
        .find(|c| c.course == "big")
        .unwrap();
    assert_eq!(
        counts.shortfall,
        Some(labpool::reconcile::plan::Shortfall::CapacityFull)
    );
    let row = r.store().courses().await.unwrap();
    assert!(
        row[0].conditions_json.contains("Degraded"),
        "{}",
        row[0].conditions_json
    );
}

#[tokio::test]
async fn raising_warm_converges_in_one_pass_and_deleting_the_file_drains() {
    let lab = Lab::new();
    let config = lab.config(&format!(
        "{}hosts:\n{}{TEST_IMAGES}",
        fast(""),
        host_yaml("a", &lab.test_host("a"), 20)
    ));
    lab.course("grow", "tiny", "256MiB", 2, 10);
    let r = lab.reconciler(config).await;
    converge(&r, MINUTE, "2 warm", |v| {
        count(v, "grow", VmState::Warm) == 2
    })
    .await;

    lab.course("grow", "tiny", "256MiB", 5, 10);
    r.pass().await.unwrap();
    r.settle().await;
    let vms = r.store().vms().await.unwrap();
    assert_eq!(
        count(&vms, "grow", VmState::Warm),
        5,
        "one pass after the edit"
    );

    // A broken file: rejected, the pool stays as it was.
    lab.course_text(
        "grow",
        "name: grow\ntitle: T\nimage: tiny\nvm: { vcpus: 1, memory: 256MiB }\npool: { warm: many, max: 10 }\n",
    );
    let report = r.pass().await.unwrap();
    r.settle().await;
    assert!(report.plan.actions.is_empty(), "{:?}", report.plan.actions);
    assert_eq!(
        count(&r.store().vms().await.unwrap(), "grow", VmState::Warm),
        5
    );
    let events = r.store().events(50).await.unwrap();
    let rejected = events
        .iter()
        .find(|e| e.kind == "revision-rejected")
        .expect("rejection event");
    // `plan` on the broken folder shows the pools as kept, and writes nothing.
    let before = r.store().events(1000).await.unwrap().len();
    let (dry, _) = r.dry_run().await.unwrap();
    assert!(dry.actions.is_empty(), "{:?}", dry.actions);
    assert_eq!(dry.courses[0].target, 5);
    assert_eq!(r.store().events(1000).await.unwrap().len(), before);
    assert!(
        rejected.message.contains("grow.yaml:5:"),
        "{}",
        rejected.message
    );

    lab.remove_course("grow");
    confirm_removal(&r).await;
    assert_eq!(
        count(&r.store().vms().await.unwrap(), "grow", VmState::Warm),
        5,
        "held until confirmed"
    );
    r.pass().await.unwrap();
    r.settle().await;
    assert!(
        r.store().vms().await.unwrap().is_empty(),
        "warm VMs of a removed course go at once"
    );
    assert!(
        r.store().courses().await.unwrap().is_empty(),
        "and the course is forgotten"
    );
    let host = Arc::clone(r.host("a").unwrap());
    let inventory = host.run(|h| h.inventory()).await.unwrap();
    assert!(inventory.domains.is_empty() && inventory.volumes.is_empty());
}

#[tokio::test]
async fn expired_sessions_end_and_the_pool_refills_while_live_ones_stay() {
    let lab = Lab::new();
    let config = lab.config(&format!(
        "{}hosts:\n{}{TEST_IMAGES}",
        fast(""),
        host_yaml("a", &lab.test_host("a"), 20)
    ));
    lab.course("exam", "tiny", "256MiB", 2, 10);
    let r = lab.reconciler(config).await;
    let vms = converge(&r, MINUTE, "2 warm", |v| {
        count(v, "exam", VmState::Warm) == 2
    })
    .await;
    let hash = vms[0].spec_hash.clone();
    let key = |user: &str| SessionKey {
        issuer: "https://lms.example".into(),
        deployment_id: "d".into(),
        user_sub: user.into(),
        context_id: "ctx".into(),
        resource_link_id: "rl".into(),
    };
    let now = now_ms();
    let expired = r
        .store()
        .claim("exam", &hash, &key("alice"), now, now - 1)
        .await
        .unwrap()
        .unwrap();
    let live = r
        .store()
        .claim("exam", &hash, &key("bob"), now, now + 3_600_000)
        .await
        .unwrap()
        .unwrap();

    let vms = converge(&r, MINUTE, "refilled", |v| {
        count(v, "exam", VmState::Warm) == 2 && count(v, "exam", VmState::Assigned) == 1
    })
    .await;
    assert!(
        vms.iter().all(|v| v.id != expired.vm.id),
        "the expired VM is destroyed"
    );
    assert!(
        vms.iter()
            .any(|v| v.id == live.vm.id && v.state == VmState::Assigned)
    );
    let sessions = r.store().live_sessions().await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id, live.session.id);

    // A removed course drains: warm VMs go, the student keeps theirs.
    lab.remove_course("exam");
    confirm_removal(&r).await;
    r.pass().await.unwrap();
    r.settle().await;
    let vms = r.store().vms().await.unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(
        (vms[0].id.as_str(), vms[0].state),
        (live.vm.id.as_str(), VmState::Assigned)
    );
    assert_eq!(
        r.store().courses().await.unwrap().len(),
        1,
        "kept until drained"
    );
    let ended = r
        .store()
        .end_session(&live.session.id, "student done", now_ms())
        .await
        .unwrap();
    assert!(ended);
    r.pass().await.unwrap();
    r.settle().await;
    assert!(r.store().vms().await.unwrap().is_empty());
    r.pass().await.unwrap();
    assert!(r.store().courses().await.unwrap().is_empty());
}

#[tokio::test]
async fn orphans_are_collected_after_the_grace_and_vanished_vms_replaced() {
    let lab = Lab::new();
    let config = lab.config(&format!(
        "reconcile: {{ boots_per_host: 8, orphan_grace: 0s, backoff: 1s }}\nhosts:\n{}{TEST_IMAGES}",
        host_yaml("a", &lab.test_host("a"), 20)
    ));
    lab.course("tidy", "tiny", "256MiB", 1, 10);
    let r = lab.reconciler(config.clone()).await;
    let vms = converge(&r, MINUTE, "1 warm", |v| {
        count(v, "tidy", VmState::Warm) == 1
    })
    .await;

    // Something labpool marked but the store does not know (a crash between
    // a store loss and a cleanup): it must go.
    let host = Arc::clone(r.host("a").unwrap());
    let image = config.images.values().next().unwrap().clone();
    let instance = r.instance().to_string();
    let volume = xml::volume_name(&instance, "00000000000000ff");
    let orphan_volume = volume.clone();
    host.run(move |h| {
        h.create(&NewVm {
            mark: xml::Mark {
                vm_id: "00000000000000ff".into(),
                course: "tidy".into(),
                spec_hash: "x".into(),
                instance: Some(instance),
            },
            domain: "labpool-tidy-00000000000000ff",
            volume: &volume,
            vcpus: 1,
            memory: 1 << 28,
            disk: None,
            image: &image,
            ssh: None,
        })
        .map(|_| ())
    })
    .await
    .unwrap();
    // And the store's VM vanishes behind labpool's back.
    let gone = vms[0].clone();
    let vanished_id = gone.id.clone();
    host.run(move |h| h.destroy(&gone.domain, "none"))
        .await
        .unwrap();

    // Two passes at once: the second finds the first's collection in
    // flight and leaves it (issue 16 §5: events listed one orphan
    // collection twice).
    r.pass().await.unwrap();
    r.pass().await.unwrap();
    r.settle().await;
    let inventory = host.run(|h| h.inventory()).await.unwrap();
    assert!(
        inventory
            .domains
            .iter()
            .all(|d| d.mark.vm_id != "00000000000000ff"),
        "orphan domain collected"
    );
    assert!(
        !inventory
            .volumes
            .iter()
            .any(|v| v.contains("00000000000000ff"))
    );
    let vms = converge(&r, MINUTE, "replaced", |v| {
        count(v, "tidy", VmState::Warm) == 1
    })
    .await;
    assert_ne!(vms[0].id, vanished_id, "a new VM replaced the vanished one");
    let events = r.store().events(50).await.unwrap();
    let collected: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "orphan-collected")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        collected,
        vec![format!(
            "domain labpool-tidy-00000000000000ff with its volume {orphan_volume}"
        )],
        "one orphan, one collection, one event"
    );
    assert!(
        events
            .iter()
            .any(|e| e.kind == "vm-destroyed" && e.message == "vanished")
    );
}

/// A Unix-socket proxy in front of libvirtd: a `test+unix://` host reached
/// through it goes down when the proxy is cut, like a host whose network
/// fails.
struct Proxy {
    path: PathBuf,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    fn start(path: PathBuf) -> Proxy {
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).expect("proxy socket");
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let t2 = Arc::clone(&tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut daemon) =
                        tokio::net::UnixStream::connect("/run/libvirt/libvirt-sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut daemon).await;
                    }
                });
                t2.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Proxy { path, tasks }
    }

    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_stops_answering_is_marked_down_and_routed_around() {
    let lab = Lab::new();
    let node = lab.path().join("far.xml");
    std::fs::write(&node, crate::lab::test_node_xml(64)).unwrap();
    let socket = lab.path().join("proxy.sock");
    let proxy = Proxy::start(socket.clone());
    let far_uri = format!("test+unix://{}?socket={}", node.display(), socket.display());
    let config = lab.config(&format!(
        "{}hosts:\n{}{}{TEST_IMAGES}",
        fast(""),
        host_yaml("far", &far_uri, 2),
        host_yaml("near", &lab.test_host("near"), 4)
    ));
    lab.course("steady", "tiny", "256MiB", 4, 10);
    let r = lab.reconciler(config).await;
    let vms = converge(&r, MINUTE, "4 warm", |v| {
        count(v, "steady", VmState::Warm) == 4
    })
    .await;
    assert_eq!(warm_on(&vms, "far"), 2, "spread over both hosts");

    proxy.cut();
    let vms = converge(&r, MINUTE, "rebuilt on near", |v| warm_on(v, "near") == 4).await;
    let hosts = r.store().hosts().await.unwrap();
    let far = hosts.iter().find(|h| h.name == "far").unwrap();
    assert!(!far.up, "far is marked down");
    assert!(far.last_error.is_some());
    assert_eq!(
        on_host(&vms, "far"),
        2,
        "rows on the down host are left alone"
    );
    let events = r.store().events(100).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "host-down" && e.host.as_deref() == Some("far"))
    );

    // The host comes back empty (a fresh test node): its rows are vanished
    // VMs, destroyed; the course keeps 4 warm VMs.
    let _proxy = Proxy::start(socket);
    let vms = converge(&r, MINUTE, "far cleaned", |v| {
        on_host(v, "far") == 0 && count(v, "steady", VmState::Warm) == 4
    })
    .await;
    assert_eq!(count(&vms, "steady", VmState::Warm), 4);
    let hosts = r.store().hosts().await.unwrap();
    assert!(hosts.iter().find(|h| h.name == "far").unwrap().up);
}

#[test]
fn plan_reconcile_and_status_commands() {
    let lab = Lab::new();
    lab.config(&format!(
        "{}hosts:\n{}{TEST_IMAGES}",
        fast(""),
        host_yaml("a", &lab.test_host("a"), 20)
    ));
    lab.course("cli", "tiny", "256MiB", 3, 10);
    let config = lab.path().join("labpool.yaml");
    let config = config.to_str().unwrap();

    let plan = crate::support::labpool_in(lab.path(), &["plan", "--config", config]);
    assert_eq!(plan.status, 2, "changes to make: {plan:?}");
    assert_eq!(
        plan.stdout.matches("+ create   cli VM on a").count(),
        3,
        "{}",
        plan.stdout
    );

    let json = crate::support::labpool_in(
        lab.path(),
        &["plan", "--config", config, "--format", "json"],
    );
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("plan JSON");
    assert_eq!(value["actions"].as_array().unwrap().len(), 3);
    assert_eq!(value["actions"][0]["action"], "create");
    assert_eq!(value["courses"][0]["target"], 3);

    let once = crate::support::labpool_in(lab.path(), &["reconcile", "--once", "--config", config]);
    assert_eq!(once.status, 0, "{once:?}");
    assert!(
        once.stdout.contains("3 action(s) planned, 3 started"),
        "{}",
        once.stdout
    );

    // status reads the store only (the test host lived in that process).
    let status = crate::support::labpool_in(
        lab.path(),
        &["status", "--config", config, "--format", "json"],
    );
    let value: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(value["courses"][0]["name"], "cli");
    assert_eq!(value["courses"][0]["warm"], 3);
    assert_eq!(value["courses"][0]["condition"], "Ready");
    assert_eq!(value["hosts"][0]["vms"], 3);
    let human = crate::support::labpool_in(lab.path(), &["status", "--config", config]);
    assert!(
        human.stdout.contains("Ready: 3 of 3 warm"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("RECENT EVENTS") && human.stdout.contains("vm-warm"));

    let missing =
        crate::support::labpool_in(lab.path(), &["plan", "--config", "/nonexistent.yaml"]);
    assert_eq!(missing.status, 74);
    assert!(missing.stderr.contains("io-error"), "{}", missing.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_course_file_applies_without_waiting_for_the_resync() {
    let lab = Lab::new();
    let config = lab.config(&format!(
        "reconcile: {{ boots_per_host: 8, orphan_grace: 1h, resync: 1h }}\nhosts:\n{}{TEST_IMAGES}",
        host_yaml("a", &lab.test_host("a"), 20)
    ));
    lab.course("watched", "tiny", "256MiB", 1, 10);
    let r = lab.reconciler(config).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let r = r.clone();
        tokio::spawn(async move {
            r.run(async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let wait_for = |n: usize| {
        let r = r.clone();
        async move {
            let start = std::time::Instant::now();
            loop {
                let vms = r.store().vms().await.unwrap();
                if count(&vms, "watched", VmState::Warm) == n {
                    return start.elapsed();
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "never reached {n} warm"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(1).await;
    // The VM's boot woke the loop once more; once that pass is done the loop
    // idles (resync 1h), so only the folder watch can start the next one.
    // (If it already ran, no further pass comes: the loop is idle either way.)
    let seen = r.passes();
    let since = std::time::Instant::now();
    while r.passes() == seen && since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idle = r.passes();
    lab.course("watched", "tiny", "256MiB", 3, 10);
    let took = wait_for(3).await;
    eprintln!("edit applied after {took:?} (resync is 1h)");
    assert!(r.passes() > idle, "a pass ran because the file changed");
    let _ = stop.send(());
    running.await.unwrap();
}

/// Replaces `course`'s build (the edit `change` makes) at `pool.max` and
/// replays every change to its VMs' rows, in order: a trigger in the SQLite
/// store logs each insert, state change and delete, so no moment is missed
/// however fast the test hosts boot. Returns the fewest warm VMs and the
/// most VMs alive (not `deleting`) at any moment of the replacement.
async fn replace_at_max(
    lab: &Lab,
    r: &labpool::reconcile::Reconciler,
    course: &str,
    change: impl FnOnce(),
) -> (usize, usize) {
    use sqlx::{Connection as _, Executor as _};
    let url = format!("sqlite:{}", lab.path().join("labpool.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    db.execute(
        "CREATE TABLE vm_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, course TEXT, state TEXT);
         CREATE TRIGGER vm_log_insert AFTER INSERT ON vms BEGIN
             INSERT INTO vm_log (id, course, state) VALUES (new.id, new.course, new.state); END;
         CREATE TRIGGER vm_log_update AFTER UPDATE OF state ON vms BEGIN
             INSERT INTO vm_log (id, course, state) VALUES (new.id, new.course, new.state); END;
         CREATE TRIGGER vm_log_delete AFTER DELETE ON vms BEGIN
             INSERT INTO vm_log (id, course, state) VALUES (old.id, old.course, 'gone'); END;",
    )
    .await
    .unwrap();
    let before = r.store().vms().await.unwrap();
    let old_hash = before[0].spec_hash.clone();
    change();
    converge(r, MINUTE, "all of the new build", |vms| {
        vms.len() == 2
            && vms
                .iter()
                .all(|v| v.state == VmState::Warm && v.spec_hash != old_hash)
    })
    .await;
    let log: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id, course, state FROM vm_log ORDER BY seq")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert!(!log.is_empty());
    let mut states: std::collections::HashMap<String, String> = before
        .iter()
        .filter(|v| v.course == course)
        .map(|v| (v.id.clone(), v.state.as_str().to_string()))
        .collect();
    let (mut fewest_warm, mut most_alive) = (usize::MAX, 0);
    for (id, c, state) in log {
        if c != course {
            continue;
        }
        if state == "gone" {
            states.remove(&id);
        } else {
            states.insert(id, state);
        }
        fewest_warm = fewest_warm.min(states.values().filter(|s| *s == "warm").count());
        most_alive = most_alive.max(states.values().filter(|s| *s != "deleting").count());
    }
    (fewest_warm, most_alive)
}

#[tokio::test]
async fn a_replacement_at_max_keeps_a_warm_vm_where_a_host_has_room() {
    // warm 2 = max 2, and the host has room for a third VM: the new build
    // surges by one, so a warm VM is there through the whole replacement.
    let lab = Lab::new();
    let config = lab.config(&format!(
        "{}hosts:\n{}{TEST_IMAGES}",
        fast(""),
        host_yaml("a", &lab.test_host("a"), 3)
    ));
    lab.course("drain-roll", "tiny", "256MiB", 2, 2);
    let r = lab.reconciler(config).await;
    converge(&r, MINUTE, "2 warm", |v| {
        count(v, "drain-roll", VmState::Warm) == 2
    })
    .await;
    let (fewest_warm, most_alive) = replace_at_max(&lab, &r, "drain-roll", || {
        lab.course("drain-roll", "tiny", "320MiB", 2, 2)
    })
    .await;
    assert!(fewest_warm >= 1, "a moment with no warm VM");
    assert_eq!(most_alive, 3, "a surge of one past max, never more");
    let events = r.store().events(100).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == "vm-destroyed" && e.message == "outdated")
            .count(),
        2,
        "{events:?}"
    );
}

#[tokio::test]
async fn a_replacement_at_max_with_no_room_destroys_the_old_first() {
    // The same at max, on a host with room for two VMs only: the old go first
    // (what README says happens when no host can take the extra VM).
    let lab = Lab::new();
    let config = lab.config(&format!(
        "{}hosts:\n{}{TEST_IMAGES}",
        fast(""),
        host_yaml("a", &lab.test_host("a"), 2)
    ));
    lab.course("drain-tight", "tiny", "256MiB", 2, 2);
    let r = lab.reconciler(config).await;
    converge(&r, MINUTE, "2 warm", |v| {
        count(v, "drain-tight", VmState::Warm) == 2
    })
    .await;
    let (fewest_warm, most_alive) = replace_at_max(&lab, &r, "drain-tight", || {
        lab.course("drain-tight", "tiny", "320MiB", 2, 2)
    })
    .await;
    assert_eq!((fewest_warm, most_alive), (0, 2));
}

fn drain_key(user: &str) -> SessionKey {
    SessionKey {
        issuer: "https://lms.example".into(),
        deployment_id: "d".into(),
        user_sub: user.into(),
        context_id: "ctx".into(),
        resource_link_id: "rl".into(),
    }
}

#[tokio::test]
async fn a_removed_course_shows_target_0_and_draining_until_its_hard_stop() {
    let lab = Lab::new();
    let config = lab.config(&format!(
        "{}hosts:\n{}{TEST_IMAGES}",
        fast(""),
        host_yaml("a", &lab.test_host("a"), 20)
    ));
    lab.course("drain-gone", "tiny", "256MiB", 1, 4);
    let r = lab.reconciler(config.clone()).await;
    let vms = converge(&r, MINUTE, "1 warm", |v| {
        count(v, "drain-gone", VmState::Warm) == 1
    })
    .await;
    let now = now_ms();
    let expires = now + 2 * 3_600_000;
    r.store()
        .claim(
            "drain-gone",
            &vms[0].spec_hash,
            &drain_key("ann"),
            now,
            expires,
        )
        .await
        .unwrap()
        .unwrap();
    converge(&r, MINUTE, "refilled", |v| {
        count(v, "drain-gone", VmState::Warm) == 1
    })
    .await;

    // Ben last typed an hour ago (the course's idle is the default 30m).
    let ben = r
        .store()
        .claim(
            "drain-gone",
            &vms[0].spec_hash,
            &drain_key("ben"),
            now - 3_600_000,
            expires,
        )
        .await
        .unwrap()
        .unwrap();

    lab.remove_course("drain-gone");
    confirm_removal(&r).await;
    let report = r.pass().await.unwrap();
    r.settle().await;
    // A removed course's sessions still end when idle, as README says.
    let ben = r.store().session(&ben.session.id).await.unwrap().unwrap();
    assert!(ben.ended_at.is_some(), "{ben:?}");
    let counts = report
        .plan
        .courses
        .iter()
        .find(|c| c.course == "drain-gone")
        .unwrap();
    assert_eq!((counts.target, counts.assigned), (0, 1));
    let hard_stop = labpool::reconcile::execute::draining_reason(1, expires);
    assert!(
        hard_stop.starts_with("draining (1 student, hard stop 20"),
        "{hard_stop}"
    );
    let vms = r.store().vms().await.unwrap();
    let status = labpool::admin::overview::courses(r.store(), &vms, now_ms())
        .await
        .unwrap();
    let gone = status.iter().find(|c| c.name == "drain-gone").unwrap();
    assert_eq!(
        (gone.target, gone.warm, gone.assigned),
        (0, 0, 1),
        "{gone:?}"
    );
    assert_eq!(
        (gone.condition.as_str(), gone.reason.as_str()),
        ("Draining", hard_stop.as_str())
    );
    assert_eq!(gone.hard_stop, Some(expires));

    // `labpool status` says the same.
    let path = lab.path().join("labpool.yaml");
    let human =
        crate::support::labpool_in(lab.path(), &["status", "--config", path.to_str().unwrap()]);
    let line = human
        .stdout
        .lines()
        .find(|l| l.starts_with("drain-gone"))
        .unwrap_or_else(|| panic!("{}", human.stdout));
    assert!(line.contains(&format!("Draining: {hard_stop}")), "{line}");
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&columns[1..5], ["0", "0", "0", "1"], "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_host_is_down_its_students_count_against_max() {
    // 3 students at max 3, two of them on a host that stops answering: the
    // target is 0 (what the planner aims for), not 2.
    let lab = Lab::new();
    let node = lab.path().join("far.xml");
    std::fs::write(&node, crate::lab::test_node_xml(64)).unwrap();
    let socket = lab.path().join("proxy.sock");
    let proxy = Proxy::start(socket.clone());
    let far_uri = format!("test+unix://{}?socket={}", node.display(), socket.display());
    let config = lab.config(&format!(
        "{}hosts:\n{}{}{TEST_IMAGES}",
        fast(""),
        host_yaml("far", &far_uri, 2),
        host_yaml("near", &lab.test_host("near"), 2)
    ));
    lab.course("drain-down", "tiny", "256MiB", 3, 3);
    let r = lab.reconciler(config).await;
    let vms = converge(&r, MINUTE, "3 warm", |v| {
        count(v, "drain-down", VmState::Warm) == 3
    })
    .await;
    assert_eq!(warm_on(&vms, "far"), 2, "{vms:?}");
    let now = now_ms();
    for user in ["u1", "u2", "u3"] {
        r.store()
            .claim(
                "drain-down",
                &vms[0].spec_hash,
                &drain_key(user),
                now,
                now + 3_600_000,
            )
            .await
            .unwrap()
            .unwrap();
    }
    proxy.cut();
    let start = std::time::Instant::now();
    let counts = loop {
        let report = r.pass().await.unwrap();
        r.settle().await;
        let hosts = r.store().hosts().await.unwrap();
        if hosts.iter().any(|h| h.name == "far" && !h.up) {
            break report
                .plan
                .courses
                .into_iter()
                .find(|c| c.course == "drain-down")
                .unwrap();
        }
        assert!(start.elapsed() < MINUTE, "far never went down");
    };
    assert_eq!(
        (counts.target, counts.assigned, counts.unreachable),
        (0, 3, 2),
        "{counts:?}"
    );
    assert!(
        !r.store()
            .vms()
            .await
            .unwrap()
            .iter()
            .any(|v| v.host == "near" && v.state != VmState::Assigned),
        "nothing is built past max"
    );
    let vms = r.store().vms().await.unwrap();
    let status = labpool::admin::overview::courses(r.store(), &vms, now_ms())
        .await
        .unwrap();
    let c = &status[0];
    assert_eq!((c.target, c.assigned, c.max), (0, 3, 3), "{c:?}");
    assert!(c.target + u64::from(c.assigned) <= u64::from(c.max));
}

#[tokio::test]
async fn a_pass_prunes_events_past_the_retention() {
    let lab = Lab::new();
    let config = lab.config(&format!(
        "{}hosts:\n{}{TEST_IMAGES}",
        fast(", event_retention: 1d"),
        host_yaml("a", &lab.test_host("a"), 4)
    ));
    assert_eq!(
        config.reconcile.event_retention.get(),
        Duration::from_secs(86_400)
    );
    lab.course("drain-events", "tiny", "256MiB", 0, 1);
    let r = lab.reconciler(config).await;
    let day = 86_400_000;
    for (at, message) in [(now_ms() - 2 * day, "old"), (now_ms() - day / 2, "recent")] {
        r.store()
            .record_event(&labpool::store::NewEvent {
                at,
                kind: "drain-test".into(),
                course: None,
                host: None,
                vm: None,
                message: message.into(),
            })
            .await
            .unwrap();
    }
    r.pass().await.unwrap();
    let left: Vec<String> = r
        .store()
        .events(1_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "drain-test")
        .map(|e| e.message)
        .collect();
    assert_eq!(left, ["recent"]);
    // The default keeps 30 days.
    assert_eq!(
        labpool::config::ReconcileConfig::default()
            .event_retention
            .get(),
        Duration::from_secs(30 * 86_400)
    );
}
