//! Real TCG guests on `qemu:///system` (set up by scripts/setup through
//! deploy/dev/libvirt): a pool boots, is proven ready by its console marker,
//! answers on its console, grows, and drains; and a labpool killed with
//! SIGKILL at many points of its work converges after a restart with no
//! orphan domain or volume.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use labpool::store::{Store, VmState};

use crate::lab::{Lab, converge, count};

const IMAGES: &str = "/var/lib/labpool/images";

/// Host and image catalog for the local libvirtd. Orphan grace is long:
/// other tests share this libvirtd, and their VMs are not ours to collect.
pub(crate) fn qemu_config(pool: &str) -> String {
    format!(
        "reconcile: {{ boots_per_host: 2, orphan_grace: 1h, backoff: 1s, resync: 1s }}\nhosts:\n  - name: local\n    uri: qemu:///system\n    storage_pool: {pool}\n    domain_type: qemu\n    capacity: {{ vms: 8, memory: 4GiB, vcpus: 2, cpu_overcommit: 4 }}\nimages:\n  busybox:\n    volume: busybox-base.qcow2\n    kernel: {IMAGES}/vmlinux\n    initrd: {IMAGES}/busybox.cpio.gz\n    cmdline: console=ttyS0 quiet panic=-1\n"
    )
}

fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system"])
        .args(args)
        .output()
        .expect("virsh runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A storage pool of this test's own (transient, in the lab folder) with
/// the base volume, so the volumes in it are this test's alone.
pub(crate) struct OwnPool(pub String, pub String); // (pool, course)

impl OwnPool {
    pub(crate) fn create(lab: &Lab, name: &str, course: &str) -> OwnPool {
        let dir = lab.path().join("pool");
        std::fs::create_dir(&dir).unwrap();
        // qemu runs as libvirt-qemu: it must be able to reach the overlays.
        use std::os::unix::fs::PermissionsExt;
        for d in [lab.path(), dir.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let _ = virsh(&["pool-destroy", name]);
        virsh(&[
            "pool-create-as",
            name,
            "dir",
            "--target",
            dir.to_str().unwrap(),
        ]);
        virsh(&[
            "vol-create-as",
            name,
            "busybox-base.qcow2",
            "64M",
            "--format",
            "qcow2",
        ]);
        assert!(
            virsh(&["vol-list", name]).contains("busybox-base.qcow2"),
            "test pool ready"
        );
        OwnPool(name.to_string(), course.to_string())
    }
}

impl Drop for OwnPool {
    /// Also removes any guest of the test's course a failed run left behind:
    /// only guests whose disk is a volume of this pool. Tests running at the same
    /// time may share a course name (the terminal tests all use one), and
    /// removing their guests by name pulled VMs from under their students.
    fn drop(&mut self) {
        let in_pool = format!("pool='{}'", self.0);
        for domain in virsh(&["list", "--all", "--name"]).lines() {
            if domain.starts_with(&format!("labpool-{}-", self.1))
                && virsh(&["dumpxml", domain]).contains(&in_pool)
            {
                virsh(&["destroy", domain]);
                virsh(&["undefine", domain]);
            }
        }
        virsh(&["pool-destroy", &self.0]);
    }
}

/// labpool's domains of one course, and labpool's overlay volumes in `pool`.
fn on_libvirt(course: &str, pool: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let domains = virsh(&["list", "--all", "--name"])
        .lines()
        .filter(|l| l.starts_with(&format!("labpool-{course}-")))
        .map(str::to_string)
        .collect();
    let volumes = virsh(&["vol-list", pool])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| v.starts_with("labpool-"))
        .map(str::to_string)
        .collect();
    (domains, volumes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_real_vms_proves_them_ready_grows_and_drains() {
    let lab = Lab::new();
    let pool = OwnPool::create(&lab, "labpool-test-e2e", "e2e-shell");
    let config = lab.config(&qemu_config(&pool.0));
    lab.course("e2e-shell", "busybox", "192MiB", 1, 4);
    let r = lab.reconciler(config).await;
    let vms = converge(&r, Duration::from_secs(120), "1 warm", |v| {
        count(v, "e2e-shell", VmState::Warm) == 1
    })
    .await;
    let vm = &vms[0];
    // The domain runs, carries labpool's mark, and its disk is an overlay
    // of the base volume.
    assert!(virsh(&["domstate", &vm.domain]).contains("running"));
    let meta = virsh(&["metadata", &vm.domain, labpool::hosts::xml::NAMESPACE]);
    assert!(meta.contains(&vm.id), "{meta}");
    let vol = virsh(&["vol-dumpxml", "--pool", &pool.0, &vm.volume]);
    assert!(
        vol.contains("<backingStore>") && vol.contains("busybox-base.qcow2"),
        "{vol}"
    );

    // It is a real guest: a command on its console comes back.
    let host = Arc::clone(r.host("local").unwrap());
    let domain = vm.domain.clone();
    let echoed = host
        .run(move |h| {
            let stream = h.open_console(&domain)?;
            stream.send(b"\recho lab-$((6*7))\r").ok();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                match stream.recv(&mut buf) {
                    Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n as usize]),
                    _ => break,
                }
                if String::from_utf8_lossy(&seen).contains("lab-42") {
                    break;
                }
            }
            let _ = stream.abort();
            Ok(String::from_utf8_lossy(&seen).into_owned())
        })
        .await
        .unwrap();
    assert!(echoed.contains("lab-42"), "console said: {echoed:?}");

    lab.course("e2e-shell", "busybox", "192MiB", 2, 4);
    converge(&r, Duration::from_secs(120), "2 warm", |v| {
        count(v, "e2e-shell", VmState::Warm) == 2
    })
    .await;
    let (domains, volumes) = on_libvirt("e2e-shell", &pool.0);
    assert_eq!((domains.len(), volumes.len()), (2, 2));

    lab.remove_course("e2e-shell");
    crate::lab::confirm_removal(&r).await;
    converge(&r, Duration::from_secs(60), "drained", |v| v.is_empty()).await;
    let (domains, volumes) = on_libvirt("e2e-shell", &pool.0);
    assert!(domains.is_empty(), "{domains:?}");
    assert!(volumes.is_empty(), "{volumes:?}");
}

/// `labpool serve` as a child process, its log read line by line.
struct Serve {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Serve {
    fn start(lab: &Lab) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_labpool"))
            .args(["serve", "--config"])
            .arg(lab.path().join("labpool.yaml"))
            .env("NO_COLOR", "1")
            .env("LABPOOL_LOG", "labpool=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let lines = crate::support::stderr_lines(&mut child);
        Serve { child, lines }
    }

    /// Waits for the `n`-th log line that says an action started or ended.
    fn wait_for_steps(&self, n: usize, limit: Duration) -> (bool, Vec<String>) {
        let deadline = Instant::now() + limit;
        let mut seen = 0;
        let mut log = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if ["creating VM", "destroying VM", "VM warm", "recovered"]
                        .iter()
                        .any(|s| line.contains(s))
                    {
                        seen += 1;
                    }
                    log.push(line);
                    if seen >= n {
                        return (true, log);
                    }
                }
                Err(_) => break,
            }
        }
        (false, log)
    }

    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_any_step_then_restarted_it_converges_without_orphans() {
    let lab = Lab::new();
    let course = "crash-shell";
    let pool = OwnPool::create(&lab, "labpool-test-crash", course);
    lab.config(&qemu_config(&pool.0));
    // Alternate the target so every run has creates and destroys in flight;
    // kill after the n-th logged step plus a random delay, which lands the
    // kill inside libvirt calls (a create takes 0.4-0.8 s) as often as
    // between them. The seed is printed so a failure can be replayed.
    let seed = std::env::var("LABPOOL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("crash test: seed {seed} (LABPOOL_CRASH_SEED to replay)");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut warm = 2;
    for round in 0..10 {
        lab.course(course, "busybox", "192MiB", warm, 4);
        let serve = Serve::start(&lab);
        // Round 2 grows the pool (1 → 2): cut right after its "creating VM",
        // so at least one kill surely lands inside a boot (about 3 s, longer
        // than any delay) whatever the seed draws for the other rounds.
        let drawn = rand::RngExt::random_range(&mut rng, 1..=4);
        let steps = if round == 2 { 1 } else { drawn };
        let delay = Duration::from_millis(rand::RngExt::random_range(&mut rng, 0..800));
        // A round whose pool already matches its target has fewer steps to
        // log; it is cut after a while all the same.
        let (reached, log) = serve.wait_for_steps(steps, Duration::from_secs(10));
        if !reached {
            eprintln!("crash test: round {round} log:\n{}", log.join("\n"));
        }
        std::thread::sleep(delay); // where to cut, not a wait for readiness
        serve.kill9();
        eprintln!(
            "crash test: round {round}: killed after {steps} step(s) + {delay:?} (reached: {reached})"
        );
        warm = if warm == 2 { 1 } else { 2 };
    }
    // Restart for good and let it converge.
    lab.course(course, "busybox", "192MiB", 2, 4);
    let serve = Serve::start(&lab);
    let store = Store::open(&format!(
        "sqlite:{}",
        lab.path().join("labpool.db").display()
    ))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let vms = loop {
        let vms = store.vms().await.unwrap();
        let settled = vms.iter().all(|v| v.state == VmState::Warm) && vms.len() == 2;
        if settled {
            // Destroys finish after the rows change state; wait for libvirt
            // to match the store too.
            let (domains, _) = on_libvirt(course, &pool.0);
            if domains.len() == 2 {
                break vms;
            }
        }
        assert!(Instant::now() < deadline, "not converged: {vms:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // No orphan: every labpool domain and overlay of this course is a row.
    let (domains, volumes) = on_libvirt(course, &pool.0);
    let rows_domains: BTreeSet<String> = vms.iter().map(|v| v.domain.clone()).collect();
    let rows_volumes: BTreeSet<String> = vms.iter().map(|v| v.volume.clone()).collect();
    assert_eq!(
        domains, rows_domains,
        "domains on libvirt == rows in the store"
    );
    assert_eq!(
        volumes, rows_volumes,
        "overlay volumes == rows in the store"
    );
    // The kills did land mid-work: boots they interrupted were failed at
    // the next start and cleaned up.
    let events = store.events(1000).await.unwrap();
    let interrupted = events
        .iter()
        .filter(|e| e.kind == "boot-interrupted")
        .count();
    eprintln!(
        "crash test: {interrupted} interrupted boot(s) recovered, {} events",
        events.len()
    );
    assert!(interrupted > 0, "no kill interrupted a boot");
    // While serve runs, a second reconciler on the same store is refused
    // (it would fail the boots serve is watching).
    let config = lab.path().join("labpool.yaml");
    let second = crate::support::labpool_in(
        lab.path(),
        &["reconcile", "--once", "--config", config.to_str().unwrap()],
    );
    assert_eq!(second.status, 69, "the store is taken: {second:?}");
    assert!(
        second.stderr.contains("another labpool"),
        "{}",
        second.stderr
    );
    serve.kill9();
    // Clean up the guests this test leaves running.
    lab.remove_course(course);
    let r = lab.reconciler(lab.config(&qemu_config(&pool.0))).await;
    crate::lab::confirm_removal(&r).await;
    converge(&r, Duration::from_secs(60), "drained", |v| v.is_empty()).await;
}
