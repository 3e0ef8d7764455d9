//! Issue 16 §1: labpools sharing a libvirt host never touch each other's
//! labs. Every mark names the instance (the store's id) that made it; only
//! objects naming this instance are collected, the others are reported
//! (status, an event, a metric). Legacy objects (marks of versions before
//! instances) are adopted by the labpool whose store knows them and left
//! alone by any other; `reconcile.adopt_instances` takes a lost instance's
//! objects over on purpose.
//!
//! Two instances cannot share a `test:///` host (its state is per
//! connection), so the tests with two labpools run on `qemu:///system`:
//! real TCG guests for the labs in use, defined-only domains where a boot
//! proves nothing.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use labpool::hosts::{NewVm, xml};
use labpool::reconcile::Reconciler;
use labpool::reconcile::plan::Action;
use labpool::store::{SessionKey, VmRow, VmState};

use crate::lab::{Lab, converge, count};
use crate::qemu::{OwnPool, qemu_config};

const MINUTE: Duration = Duration::from_secs(60);
const TEST_IMAGES: &str = "images:\n  tiny: { volume: base.qcow2 }\n";

fn virsh(args: &[&str]) -> (bool, String) {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .expect("virsh runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn volumes_in(pool: &str) -> BTreeSet<String> {
    virsh(&["vol-list", pool])
        .1
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| v.starts_with("labpool-"))
        .map(str::to_string)
        .collect()
}

fn domain_running(name: &str) -> bool {
    virsh(&["domstate", name]).1.contains("running")
}

fn key(user: &str) -> SessionKey {
    SessionKey {
        issuer: "https://lms.example".into(),
        deployment_id: "d".into(),
        user_sub: user.into(),
        context_id: "ctx".into(),
        resource_link_id: "rl".into(),
    }
}

/// One pass and its actions; the actions it planned.
async fn pass(r: &Reconciler) -> Vec<Action> {
    let report = r.pass().await.expect("pass");
    r.settle().await;
    report.plan.actions
}

/// What this store says of `instance`'s objects on `host`.
async fn foreign_count(r: &Reconciler, host: &str, instance: &str) -> Option<i64> {
    r.store()
        .foreign_objects()
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.host == host && f.instance == instance)
        .map(|f| f.objects)
}

async fn events_of(r: &Reconciler, kind: &str) -> Vec<String> {
    r.store()
        .events(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.message)
        .collect()
}

/// The scrape's `labpool_foreign_objects` value for a host and instance.
async fn foreign_metric(r: &Reconciler, host: &str, instance: &str) -> Option<i64> {
    let snapshot =
        labpool::metrics::Snapshot::read(r.store(), &[host], 0, labpool::reconcile::now_ms())
            .await
            .unwrap();
    let text = r.metrics().render(Some(&snapshot));
    let series = format!("labpool_foreign_objects{{host=\"{host}\",instance=\"{instance}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map(|v| v.trim().parse().unwrap())
}

/// Legacy objects on a `test:///` host: the domain whose VM the store
/// knows is re-marked with this instance; one it does not know is never
/// collected, however short the grace, and is reported as `legacy`.
#[tokio::test]
async fn legacy_domains_the_store_knows_are_adopted_and_unknown_ones_left_alone() {
    const COURSE: &str = "own-legacy";
    let lab = Lab::new();
    let host_uri = lab.test_host("a");
    let config = lab.config(&format!(
        "reconcile: {{ boots_per_host: 8, orphan_grace: 0s, backoff: 1s }}\nhosts:\n  - name: a\n    uri: \"{host_uri}\"\n    storage_pool: labpool\n    capacity: {{ vms: 20, memory: 16GiB, vcpus: 16 }}\n{TEST_IMAGES}"
    ));
    lab.course(COURSE, "tiny", "256MiB", 2, 10);
    let r = lab.reconciler(config.clone()).await;
    let vms = converge(&r, MINUTE, "2 warm", |v| {
        count(v, COURSE, VmState::Warm) == 2
    })
    .await;
    let host = Arc::clone(r.host("a").unwrap());
    let image = config.images.values().next().unwrap().clone();

    // As an earlier version left them: one of the store's warm VMs with a
    // mark naming no instance, and a VM the store does not know, with the
    // old overlay name.
    let known = vms[0].clone();
    let unknown = "00000000000000ee".to_string();
    let unknown_domain = format!("labpool-{COURSE}-{unknown}");
    let unknown_volume = format!("labpool-{unknown}.qcow2");
    {
        let (known, unknown, unknown_domain, unknown_volume) = (
            known.clone(),
            unknown.clone(),
            unknown_domain.clone(),
            unknown_volume.clone(),
        );
        host.run(move |h| {
            h.destroy(&known.domain, &known.volume)?;
            for (id, domain, volume) in [
                (
                    known.id.as_str(),
                    known.domain.as_str(),
                    known.volume.as_str(),
                ),
                (&unknown, &unknown_domain, &unknown_volume),
            ] {
                h.create(&NewVm {
                    mark: xml::Mark {
                        vm_id: id.to_string(),
                        course: COURSE.into(),
                        spec_hash: known.spec_hash.clone(),
                        instance: None,
                    },
                    domain,
                    volume,
                    vcpus: 1,
                    memory: 256 << 20,
                    disk: None,
                    image: &image,
                    ssh: None,
                })?;
            }
            Ok(())
        })
        .await
        .unwrap();
    }

    for _ in 0..4 {
        let actions = pass(&r).await;
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::CollectOrphan { .. })),
            "nothing is ours to collect: {actions:?}"
        );
    }
    let inventory = host.run(|h| h.inventory()).await.unwrap();
    let mark_of = |id: &str| {
        inventory
            .domains
            .iter()
            .find(|d| d.mark.vm_id == id)
            .map(|d| d.mark.clone())
    };
    assert_eq!(
        mark_of(&known.id).and_then(|m| m.instance).as_deref(),
        Some(r.instance()),
        "the known legacy domain now names this instance"
    );
    assert_eq!(
        mark_of(&unknown).map(|m| m.instance),
        Some(None),
        "the unknown legacy domain is there, untouched"
    );
    assert!(inventory.volumes.contains(&unknown_volume));
    let rows = r.store().vms().await.unwrap();
    assert!(
        rows.iter()
            .any(|v| v.id == known.id && v.state == VmState::Warm),
        "the adopted VM is still a warm VM of the pool: {rows:#?}"
    );
    assert_eq!(events_of(&r, "legacy-adopted").await.len(), 1);
    assert_eq!(
        foreign_count(&r, "a", "legacy").await,
        Some(2),
        "the unknown domain and its volume are reported"
    );
    assert_eq!(foreign_metric(&r, "a", "legacy").await, Some(2));
    let said = events_of(&r, "foreign-objects").await;
    assert_eq!(said.len(), 1, "said once, not every pass: {said:?}");
}

/// A lost instance's objects on `qemu:///system` (domains defined, not
/// started: a boot proves nothing here): a labpool that does not adopt
/// it reports them and leaves them, however short its grace; after
/// `labpool adopt --instance` its next passes collect them, each once.
/// `reconcile.adopt_instances` does the same from the configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_instances_objects_are_left_until_adopted_then_collected() {
    const LOST: &str = "0000000abcde";
    const LOST_TOO: &str = "0000000abcdf";
    let lab = Lab::new();
    let pool = OwnPool::create(&lab, "labpool-test-own-adopt", "own-adopt");
    let body = qemu_config(&pool.0).replace("orphan_grace: 1h", "orphan_grace: 0s");
    let (id, spare) = (
        format!("{:016x}", rand::random::<u64>()),
        format!("{:016x}", rand::random::<u64>()),
    );
    let domain = format!("labpool-own-adopt-{id}");
    let volume = xml::volume_name(LOST, &id);
    // A volume of the lost instance whose domain was never defined (it
    // died in between), and a domain with its overlay.
    let spare_volume = xml::volume_name(LOST, &spare);
    for v in [&volume, &spare_volume] {
        let (ok, _) = virsh(&["vol-create-as", &pool.0, v, "16M", "--format", "qcow2"]);
        assert!(ok, "volume {v}");
    }
    let mark = xml::Mark {
        vm_id: id.clone(),
        course: "own-adopt".into(),
        spec_hash: "0000000000000000".into(),
        instance: Some(LOST.into()),
    };
    let definition = xml::domain(&xml::DomainSpec {
        domain_type: "qemu",
        name: &domain,
        mark: &mark,
        vcpus: 1,
        memory: 64 << 20,
        storage_pool: &pool.0,
        volume: &volume,
        direct_boot: None,
        ssh_forward: None,
    });
    let file = lab.path().join("lost.xml");
    std::fs::write(&file, definition).unwrap();
    let (ok, _) = virsh(&["define", file.to_str().unwrap()]);
    assert!(ok, "domain defined");
    let defined = || virsh(&["domstate", &domain]).0;

    // No courses, no adoption: a short grace, and nothing of the lost
    // instance's is touched.
    let r = lab.reconciler(lab.config(&body)).await;
    for _ in 0..3 {
        let actions = pass(&r).await;
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::CollectOrphan { .. })),
            "{actions:?}"
        );
    }
    assert!(defined(), "the lost instance's domain stays");
    let volumes = volumes_in(&pool.0);
    assert!(
        volumes.contains(&volume) && volumes.contains(&spare_volume),
        "{volumes:?}"
    );
    assert_eq!(foreign_count(&r, "local", LOST).await, Some(3));

    // A volume named as this instance's and unknown to its store, but used
    // by a domain (one without labpool's mark here): its name alone proves
    // nothing, so it stays while a domain uses it, and goes after.
    let used = format!("{:016x}", rand::random::<u64>());
    let used_volume = xml::volume_name(r.instance(), &used);
    let (ok, _) = virsh(&[
        "vol-create-as",
        &pool.0,
        &used_volume,
        "16M",
        "--format",
        "qcow2",
    ]);
    assert!(ok);
    let user = format!("own-adopt-user-{used}");
    let user_xml = format!(
        "<domain type='qemu'><name>{user}</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os><devices><disk type='volume' device='disk'><driver name='qemu' type='qcow2'/><source pool='{}' volume='{used_volume}'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
        pool.0
    );
    let user_file = lab.path().join("user.xml");
    std::fs::write(&user_file, user_xml).unwrap();
    assert!(
        virsh(&["define", user_file.to_str().unwrap()]).0,
        "user domain defined"
    );
    for _ in 0..3 {
        pass(&r).await;
    }
    let still = volumes_in(&pool.0).contains(&used_volume);
    virsh(&["undefine", &user]);
    assert!(still, "a volume a domain uses is never deleted");
    let deadline = Instant::now() + MINUTE;
    while volumes_in(&pool.0).contains(&used_volume) {
        assert!(
            Instant::now() < deadline,
            "{used_volume} not collected once unused"
        );
        pass(&r).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Adopted on purpose, while this labpool runs: its next passes take
    // the objects over.
    let config = lab.path().join("labpool.yaml");
    let config = config.to_str().unwrap();
    let run = crate::support::labpool_in(
        lab.path(),
        &["adopt", "--instance", LOST, "--config", config],
    );
    assert_eq!(run.status, 0, "{run:?}");
    assert!(
        run.stdout.contains("adopted instance 0000000abcde"),
        "{}",
        run.stdout
    );
    let own = crate::support::labpool_in(
        lab.path(),
        &["adopt", "--instance", r.instance(), "--config", config],
    );
    assert_ne!(own.status, 0, "its own instance is not adopted: {own:?}");
    let deadline = Instant::now() + MINUTE;
    loop {
        pass(&r).await;
        let volumes = volumes_in(&pool.0);
        if !defined() && !volumes.contains(&volume) && !volumes.contains(&spare_volume) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not collected: domain {} volumes {volumes:?}",
            defined()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A few more passes: nothing is collected twice.
    for _ in 0..3 {
        pass(&r).await;
    }
    let mut collected = events_of(&r, "orphan-collected").await;
    collected.sort();
    assert_eq!(
        collected,
        {
            let mut want = vec![
                format!("domain {domain} with its volume {volume}"),
                format!("volume {spare_volume}"),
                format!("volume {used_volume}"),
            ];
            want.sort();
            want
        },
        "one event per collection"
    );
    assert_eq!(foreign_count(&r, "local", LOST).await, None);
    drop(r);

    // The configuration's way: another lost instance's volume.
    let lost_volume = xml::volume_name(LOST_TOO, &spare);
    let (ok, _) = virsh(&[
        "vol-create-as",
        &pool.0,
        &lost_volume,
        "16M",
        "--format",
        "qcow2",
    ]);
    assert!(ok);
    let adopting = body.replace(
        "resync: 1s",
        &format!("resync: 1s, adopt_instances: [{LOST_TOO}]"),
    );
    let r = lab.reconciler(lab.config(&adopting)).await;
    let deadline = Instant::now() + MINUTE;
    while volumes_in(&pool.0).contains(&lost_volume) {
        assert!(Instant::now() < deadline, "{lost_volume} not collected");
        pass(&r).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = crate::support::labpool_in(lab.path(), &["adopt", "--list", "--config", config]);
    assert!(
        list.stdout
            .contains(&format!("adopted: {LOST} (labpool adopt"))
            && list
                .stdout
                .contains(&format!("adopted: {LOST_TOO} (reconcile.adopt_instances)")),
        "{}",
        list.stdout
    );
    let undo = crate::support::labpool_in(
        lab.path(),
        &["adopt", "--forget", "--instance", LOST, "--config", config],
    );
    assert!(undo.stdout.contains("no longer adopted"), "{undo:?}");
    assert!(r.refresh_owners().await.unwrap().adopted == vec![LOST_TOO.to_string()]);
}

/// The VMs and sessions one labpool has, to compare after the fight.
#[derive(Debug, PartialEq)]
struct Holding {
    vms: BTreeSet<(String, String, String, String)>,
    sessions: BTreeSet<String>,
}

async fn holding(r: &Reconciler) -> Holding {
    let vms: Vec<VmRow> = r.store().vms().await.unwrap();
    Holding {
        vms: vms
            .iter()
            .map(|v| {
                (
                    v.id.clone(),
                    v.state.to_string(),
                    v.domain.clone(),
                    v.volume.clone(),
                )
            })
            .collect(),
        sessions: r
            .store()
            .live_sessions()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect(),
    }
}

/// Issue 16 §1 as it was found: instance A (a live session and a warm VM)
/// and instance B (its own store, another course) on one `qemu:///system`,
/// real TCG guests, a 2 s grace, for many grace periods; and C, with no
/// course at all. Nobody loses a VM or a session; each reports the
/// others' objects (status, one event, the metric).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_labpools_on_one_libvirt_host_never_collect_each_others_labs() {
    const GRACE: Duration = Duration::from_secs(2);
    let (lab_a, lab_b, lab_c) = (Lab::new(), Lab::new(), Lab::new());
    // One storage pool for all three, as on a real host.
    let pool = OwnPool::create(&lab_a, "labpool-test-own-two", "own-two");
    let body = qemu_config(&pool.0).replace("orphan_grace: 1h", "orphan_grace: 2s");
    lab_a.course("own-two-a", "busybox", "192MiB", 1, 2);
    lab_b.course("own-two-b", "busybox", "192MiB", 1, 1);
    let a = lab_a.reconciler(lab_a.config(&body)).await;
    let b = lab_b.reconciler(lab_b.config(&body)).await;
    let c = lab_c.reconciler(lab_c.config(&body)).await;
    assert!(
        a.instance() != b.instance() && b.instance() != c.instance(),
        "each store has its own id"
    );

    let vms = converge(&a, Duration::from_secs(120), "A: 1 warm", |v| {
        count(v, "own-two-a", VmState::Warm) == 1
    })
    .await;
    let now = labpool::reconcile::now_ms();
    let claimed = a
        .store()
        .claim(
            "own-two-a",
            &vms[0].spec_hash,
            &key("alice"),
            now,
            now + 3_600_000,
        )
        .await
        .unwrap()
        .expect("a warm VM for alice");
    converge(&a, Duration::from_secs(120), "A: 1 warm, 1 assigned", |v| {
        count(v, "own-two-a", VmState::Warm) == 1 && count(v, "own-two-a", VmState::Assigned) == 1
    })
    .await;
    converge(&b, Duration::from_secs(120), "B: 1 warm", |v| {
        count(v, "own-two-b", VmState::Warm) == 1
    })
    .await;
    let (before_a, before_b) = (holding(&a).await, holding(&b).await);
    assert_eq!(before_a.sessions.len(), 1);
    assert!(before_a.sessions.contains(&claimed.session.id));

    // Many grace periods, every labpool passing in turn.
    let started = Instant::now();
    let mut passes = 0;
    while started.elapsed() < GRACE * 7 {
        for (name, r) in [("A", &a), ("B", &b), ("C", &c)] {
            let actions = pass(r).await;
            assert!(
                !actions.iter().any(|x| matches!(
                    x,
                    Action::CollectOrphan { .. } | Action::Destroy { .. } | Action::Adopt { .. }
                )),
                "{name} would touch something after {:?}: {actions:?}",
                started.elapsed()
            );
        }
        passes += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "ownership: {passes} rounds of passes in {:?}",
        started.elapsed()
    );

    // Nobody lost a VM or a session, in the stores or on the host.
    assert_eq!(holding(&a).await, before_a);
    assert_eq!(holding(&b).await, before_b);
    let volumes = volumes_in(&pool.0);
    for (id, _, domain, volume) in before_a.vms.iter().chain(&before_b.vms) {
        assert!(domain_running(domain), "{domain} ({id}) still runs");
        assert!(
            volumes.contains(volume),
            "{volume} still there: {volumes:?}"
        );
    }
    let session = a
        .store()
        .session(&claimed.session.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.ended_at, None, "alice's session is live");

    // Each reports the others' objects: a domain and a volume per VM.
    assert_eq!(foreign_count(&a, "local", b.instance()).await, Some(2));
    assert_eq!(foreign_count(&b, "local", a.instance()).await, Some(4));
    assert_eq!(foreign_count(&c, "local", a.instance()).await, Some(4));
    assert_eq!(foreign_count(&c, "local", b.instance()).await, Some(2));
    assert_eq!(foreign_count(&a, "local", c.instance()).await, None);
    assert_eq!(foreign_metric(&a, "local", b.instance()).await, Some(2));
    assert_eq!(foreign_metric(&b, "local", a.instance()).await, Some(4));
    for (r, other) in [(&a, &b), (&b, &a)] {
        let said: Vec<String> = events_of(r, "foreign-objects")
            .await
            .into_iter()
            .filter(|m| m.contains(other.instance()))
            .collect();
        assert_eq!(said.len(), 1, "one event, not one per pass: {said:?}");
    }
    // `labpool status` names the instance and the other's objects.
    let config = lab_b.path().join("labpool.yaml");
    let status = crate::support::labpool_in(
        lab_b.path(),
        &["status", "--config", config.to_str().unwrap()],
    );
    assert_eq!(status.status, 0, "{status:?}");
    assert!(
        status
            .stdout
            .contains(&format!("INSTANCE  {}", b.instance())),
        "{}",
        status.stdout
    );
    let line = status
        .stdout
        .lines()
        .find(|l| l.contains(a.instance()))
        .unwrap_or_else(|| panic!("A's objects in B's status:\n{}", status.stdout));
    assert!(line.starts_with("local") && line.contains(" 4 "), "{line}");

    // Clean up: each drains its own.
    for (lab, r, course) in [(&lab_a, &a, "own-two-a"), (&lab_b, &b, "own-two-b")] {
        let live = r.store().live_sessions().await.unwrap();
        for s in live {
            r.store()
                .end_session(&s.id, "test over", labpool::reconcile::now_ms())
                .await
                .unwrap();
        }
        lab.remove_course(course);
        crate::lab::confirm_removal(r).await;
        converge(r, MINUTE, "drained", |v| v.is_empty()).await;
    }
    assert!(volumes_in(&pool.0).is_empty(), "{:?}", volumes_in(&pool.0));
}

/// `serve`'s start line names the instance, which is the store's and stays
/// the same across starts; `labpool status` shows the same id.
#[tokio::test]
async fn serve_logs_the_stores_instance_and_status_shows_it() {
    let lab = Lab::new();
    let host_uri = lab.test_host("a");
    lab.config(&format!(
        "reconcile: {{ boots_per_host: 8, orphan_grace: 1h, backoff: 1s }}\nhosts:\n  - name: a\n    uri: \"{host_uri}\"\n    storage_pool: labpool\n    capacity: {{ vms: 20, memory: 16GiB, vcpus: 16 }}\n{TEST_IMAGES}"
    ));
    let config = lab.path().join("labpool.yaml");
    let start_line = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_labpool"))
            .args(["serve", "--config"])
            .arg(&config)
            .current_dir(lab.path())
            .env("NO_COLOR", "1")
            .env("LABPOOL_LOG", "labpool=info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("serve starts");
        let lines = crate::support::stderr_lines(&mut child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains("labpool serve starting") => break line,
                Ok(_) => {}
                Err(_) => panic!("no start line within 20 s"),
            }
        };
        child.kill().unwrap();
        child.wait().unwrap();
        line
    };
    let first = start_line();
    let second = start_line();
    let store = labpool::store::Store::open(&format!(
        "sqlite:{}",
        lab.path().join("labpool.db").display()
    ))
    .await
    .unwrap();
    let id = store.instance_id().await.unwrap();
    for line in [&first, &second] {
        assert!(line.contains(&format!("instance={id}")), "{line}");
    }
    let status = crate::support::labpool_in(
        lab.path(),
        &["status", "--config", config.to_str().unwrap()],
    );
    assert!(
        status.stdout.starts_with(&format!("INSTANCE  {id}\n")),
        "{}",
        status.stdout
    );
}
