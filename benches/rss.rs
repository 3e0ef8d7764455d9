//! The control plane's memory with 10,000 VMs, for real: a fresh SQLite
//! store, 10 libvirt test-driver hosts served by libvirtd
//! (`test+unix:///…/hostN.xml`, so the fake domains and volumes live in
//! libvirtd, not in this process), 100 course files of 100 warm VMs each, and
//! the reconciler (`pass` + `settle`) driven until all 10,000 are warm.
//!
//! `cargo bench --bench rss` prints the time to reach 10,000 warm, the time
//! of a pass with nothing to do (and of its observation), this process's
//! peak (VmHWM) and current (VmRSS) resident memory, and where the resident
//! memory is (anonymous or file-backed, largest mappings). Target: peak
//! under 64 MiB. Needs a running libvirtd; without one it says so and exits.
//!
//! The runtime is `labpool::ops::runtime()`, the one `labpool serve` runs on.
//! To see what moves the figure: `RSS_BOOTS_PER_HOST=20` (default 200) and
//! glibc's `MALLOC_ARENA_MAX` (labpool sets 2 unless it is given).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use labpool::config::{Config, DatabaseUrl};
use labpool::hosts::Host;
use labpool::reconcile::{Reconciler, now_ms, observe};
use labpool::store::{Store, VmState};

const HOSTS: usize = 10;
const COURSES: usize = 100;
const WARM_PER_COURSE: usize = 100;
const TOTAL: usize = COURSES * WARM_PER_COURSE;
const BOOTS_PER_HOST: u32 = 200;
const STEADY_PASSES: usize = 5;
const LIMIT: Duration = Duration::from_secs(30 * 60);
const TARGET_KIB: u64 = 64 * 1024;

/// The system allocator, counting the bytes Rust code holds (C libraries
/// such as libvirt and SQLite call malloc themselves and are not counted):
/// live data versus resident memory.
struct Counting;

static HEAP_NOW: AtomicUsize = AtomicUsize::new(0);
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = HEAP_NOW.fetch_add(bytes, Relaxed) + bytes;
    HEAP_PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed on to `System` unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc_zeroed`'s contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        HEAP_NOW.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                HEAP_NOW.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn heap_mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident memory by mapping (a file, `[heap]`, or anonymous), largest first.
fn rss_by_mapping() -> Vec<(String, u64)> {
    let text = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut by: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            current = fields.nth(4).unwrap_or("[anonymous]").to_string();
        } else if first == "Rss:" {
            let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *by.entry(current.clone()).or_default() += kib;
        }
    }
    let mut list: Vec<(String, u64)> = by.into_iter().collect();
    list.sort_by_key(|(_, kib)| std::cmp::Reverse(*kib));
    list
}

fn print_mappings(when: &str) {
    let list = rss_by_mapping();
    let files: u64 = list
        .iter()
        .filter(|(n, _)| n.starts_with('/'))
        .map(|(_, k)| k)
        .sum();
    let anon: u64 = list
        .iter()
        .filter(|(n, _)| !n.starts_with('/'))
        .map(|(_, k)| k)
        .sum();
    println!(
        "rss: {when}: {:.1} MiB anonymous, {:.1} MiB file-backed; largest:",
        mib(anon),
        mib(files)
    );
    for (name, kib) in list.iter().take(5) {
        println!("rss:   {:>6.1} MiB  {name}", mib(*kib));
    }
}

/// A number from the environment, for experiments.
fn knob(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn boots_per_host() -> u32 {
    knob("RSS_BOOTS_PER_HOST").map_or(BOOTS_PER_HOST, |n| n as u32)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn threads() -> u64 {
    status_kib("Threads")
}

/// A test-driver node: plenty of CPUs and memory, and a `labpool` storage
/// pool holding the base volume.
fn node_xml(i: usize) -> String {
    format!(
        "<node>\n  <cpu><mhz>2000</mhz><model>x86</model><active>64</active><max>64</max><nodes>1</nodes><sockets>1</sockets><cores>64</cores><threads>1</threads></cpu>\n  <memory>1073741824</memory>\n  <pool type='dir'><name>labpool</name><uuid>35bb2ad9-388a-cdfe-461a-{i:012x}</uuid><target><path>/fake/labpool</path></target>\n    <volume type='file'><name>busybox-base.qcow2</name><capacity unit='MiB'>64</capacity><target><path>/fake/labpool/busybox-base.qcow2</path></target></volume>\n  </pool>\n</node>\n"
    )
}

fn course_yaml(name: &str) -> String {
    format!(
        "name: {name}\ntitle: Memory benchmark {name}\nimage: busybox\nvm: {{ vcpus: 1, memory: 64MiB }}\npool: {{ warm: {WARM_PER_COURSE}, max: {} }}\nsession: {{ expiry: 1h, idle: 15m, console: serial }}\nreadiness: {{ console_marker: GUEST-READY, timeout: 10m }}\n",
        WARM_PER_COURSE + 20
    )
}

fn config(dir: &Path) -> Config {
    let mut text = format!(
        "reconcile: {{ boots_per_host: {}, orphan_grace: 1h }}\nimages:\n  busybox: {{ volume: busybox-base.qcow2 }}\nhosts:\n",
        boots_per_host()
    );
    for i in 0..HOSTS {
        let node = dir.join(format!("host{i}.xml"));
        std::fs::write(&node, node_xml(i)).expect("node file");
        text.push_str(&format!(
            "  - name: host{i}\n    uri: \"test+unix://{}\"\n    storage_pool: labpool\n    capacity: {{ vms: {}, memory: 1024GiB, vcpus: 256, cpu_overcommit: 8 }}\n",
            node.display(),
            TOTAL / HOSTS + 200
        ));
    }
    let path = dir.join("labpool.yaml");
    let mut config = match Config::parse(&path, &text) {
        Ok(c) => c,
        Err(e) => panic!("benchmark config invalid: {:#?}", e.diagnostics),
    };
    config.source.folder = dir.join("courses");
    config.database = DatabaseUrl::new(format!("sqlite:{}", dir.join("labpool.db").display()));
    config
}

async fn warm_count(store: &Store) -> (usize, usize) {
    let vms = store.vms().await.expect("vms");
    let warm = vms.iter().filter(|v| v.state == VmState::Warm).count();
    (warm, vms.len())
}

async fn run(config: Config) -> Result<(), String> {
    let store = Store::open(config.database.expose())
        .await
        .map_err(|e| format!("store: {e}"))?;
    let r = Reconciler::new(config, store.clone())
        .await
        .map_err(|e| format!("reconciler: {e}"))?;
    let start = Instant::now();
    let mut passes = 0;
    loop {
        let t = Instant::now();
        let report = r.pass().await.map_err(|e| format!("pass: {e}"))?;
        let planned = report.plan.actions.len();
        let pass_ms = t.elapsed().as_secs_f64() * 1e3;
        r.settle().await;
        passes += 1;
        let (warm, rows) = warm_count(&store).await;
        println!(
            "rss: pass {passes:>2}: {planned:>5} actions ({:>7.0} ms), settled at {:>6.1} s: {warm:>5} warm of {rows:>5} VMs; RSS {:>5.1} MiB, peak {:>5.1} MiB, {} threads",
            pass_ms,
            start.elapsed().as_secs_f64(),
            mib(status_kib("VmRSS")),
            mib(status_kib("VmHWM")),
            threads(),
        );
        if warm >= TOTAL {
            break;
        }
        if planned == 0 && passes > 1 {
            let down: Vec<_> = store
                .hosts()
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|h| !h.up)
                .map(|h| format!("{}: {:?}", h.name, h.last_error))
                .collect();
            return Err(format!(
                "stuck at {warm} warm with nothing planned; hosts down: {down:?}; events: {:?}",
                store.events(5).await.unwrap_or_default()
            ));
        }
        if start.elapsed() > LIMIT {
            return Err(format!("only {warm} warm after {LIMIT:?}"));
        }
    }
    let to_warm = start.elapsed();
    println!(
        "rss: {TOTAL} VMs warm on {HOSTS} hosts after {:.1} s ({passes} passes); peak so far {:.1} MiB",
        to_warm.as_secs_f64(),
        mib(status_kib("VmHWM"))
    );

    let mut times = Vec::new();
    for _ in 0..STEADY_PASSES {
        let t = Instant::now();
        let report = r.pass().await.map_err(|e| format!("pass: {e}"))?;
        times.push(t.elapsed());
        r.settle().await;
        if !report.plan.actions.is_empty() {
            return Err(format!(
                "steady state planned {} actions, e.g. {:?}",
                report.plan.actions.len(),
                report.plan.actions.first()
            ));
        }
    }
    times.sort();
    println!(
        "rss: steady-state pass with {TOTAL} VMs (nothing to do): min {:.0} ms, median {:.0} ms, max {:.0} ms ({STEADY_PASSES} passes)",
        times[0].as_secs_f64() * 1e3,
        times[STEADY_PASSES / 2].as_secs_f64() * 1e3,
        times[STEADY_PASSES - 1].as_secs_f64() * 1e3,
    );

    // Where a steady pass spends its time.
    let hosts: Vec<Arc<Host>> = (0..HOSTS)
        .filter_map(|i| r.host(&format!("host{i}")).cloned())
        .collect();
    let t = Instant::now();
    let known: Vec<String> = store
        .courses()
        .await
        .map_err(|e| format!("courses: {e}"))?
        .into_iter()
        .map(|c| c.name)
        .collect();
    let world = observe::observe(
        &store,
        &hosts,
        boots_per_host(),
        known,
        now_ms(),
        &mut HashMap::new(),
        &labpool::hosts::owner::Owners::new(r.instance(), &[]),
    )
    .await
    .map_err(|e| format!("observe: {e}"))?;
    let observe_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(world);
    let t = Instant::now();
    let inventory = hosts[0]
        .run(|h| h.inventory())
        .await
        .map_err(|e| format!("inventory: {e}"))?;
    let inventory_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let rows = store.vms().await.map_err(|e| format!("vms: {e}"))?.len();
    let rows_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "rss: of which observing {observe_ms:.0} ms (all hosts at once, then the store); one host's inventory ({} domains, {} volumes) {inventory_ms:.0} ms; reading {rows} VM rows {rows_ms:.0} ms",
        inventory.domains.len(),
        inventory.volumes.len(),
    );
    drop(inventory);
    println!(
        "rss: between passes, with {TOTAL} VMs: Rust heap {:.1} MiB, RSS {:.1} MiB",
        heap_mib(HEAP_NOW.load(Relaxed)),
        mib(status_kib("VmRSS"))
    );
    Ok(())
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, unoptimized and
    // without `--bench`: 10,000 VMs there would only measure a debug build.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "rss: measured by `cargo bench --bench rss` only (an optimized build); nothing to do under `cargo test`"
        );
        return;
    }
    let start_kib = status_kib("VmRSS");
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::create_dir(dir.path().join("courses")).unwrap();
    for i in 0..COURSES {
        let name = format!("rss-{i:03}");
        std::fs::write(
            dir.path().join("courses").join(format!("{name}.yaml")),
            course_yaml(&name),
        )
        .unwrap();
    }
    let config = config(dir.path());
    let probe = &config.hosts[0].uri;
    if let Err(e) = virt::connect::Connect::open(Some(probe)).map(drop) {
        println!("rss: skipped: cannot reach libvirtd at {probe}: {e}");
        return;
    }
    println!(
        "rss: {HOSTS} test hosts via libvirtd, {COURSES} courses x {WARM_PER_COURSE} warm, boots_per_host {}; RSS at start {:.1} MiB, after loading libvirt {:.1} MiB",
        boots_per_host(),
        mib(start_kib),
        mib(status_kib("VmRSS"))
    );

    // As `labpool serve` builds it (ops.rs), unless asked otherwise.
    let runtime = labpool::ops::runtime().expect("tokio runtime");
    let result = runtime.block_on(run(config));
    let (peak, now) = (status_kib("VmHWM"), status_kib("VmRSS"));
    print_mappings("resident at the end");
    drop(runtime);
    if let Err(e) = result {
        println!("rss: FAILED: {e}");
        std::process::exit(1);
    }
    println!(
        "rss: Rust heap (live data; libvirt's and SQLite's own mallocs not counted): peak {:.1} MiB",
        heap_mib(HEAP_PEAK.load(Relaxed)),
    );
    println!(
        "rss: peak RSS (VmHWM) {:.1} MiB, current RSS (VmRSS) {:.1} MiB",
        mib(peak),
        mib(now)
    );
    println!(
        "rss: target < {} MiB: {}",
        TARGET_KIB / 1024,
        if peak < TARGET_KIB { "met" } else { "NOT met" }
    );
}
