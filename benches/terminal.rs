//! `cargo bench --bench terminal`: the browser terminal on real TCG guests
//! of the local libvirtd (scripts/setup prepares it).
//!
//! 1. **Redirect to first console byte.** A student launches through the
//!    whole LTI flow (labpool's test platform) against a warm serial-console
//!    pool; from the moment the launch's redirect arrives, the bench loads
//!    the session page and opens its terminal socket as the page would, and
//!    stops the clock at the first byte of console output. Target < 1 s.
//! 2. **Memory per open terminal.** 200 sessions of an SSH-console course,
//!    each with its page attached and its shell's first output received,
//!    all logged in to one real guest (one VM's forwarded SSH port stands in
//!    for 200 VMs: the gateway's side is the same). The pages run in a
//!    child process, so the figure is the server's resident memory growth
//!    alone, divided by 200.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use labpool::lms::{Browser, Launch, Platform};
use labpool::reconcile::now_ms;
use labpool::session_token::SessionTokens;
use labpool::store::{SessionKey, VmRow, VmState};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/bed.rs"]
mod bed;
use bed::{Bed, CLIENT, DEPLOYMENT, converge, first_output, socket_of};

const ROUNDS: usize = 5;
const TERMINALS: usize = 200;
const TARGET_FIRST_BYTE_MS: f64 = 1000.0;
const IMAGES: &str = "/var/lib/labpool/images";
const SERIAL: &str = "bench-term-serial";
const SSH: &str = "bench-term-ssh";
/// The child process that plays the 200 pages reads its URLs from here.
const CLIENTS_ENV: &str = "LABPOOL_BENCH_TERMINAL_URLS";

async fn bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let courses = dir.path().join("courses");
    std::fs::create_dir(&courses).unwrap();
    let platform = Platform::start().await.unwrap();
    std::fs::write(
        courses.join(format!("{SERIAL}.yaml")),
        format!("name: {SERIAL}\ntitle: Serial\nimage: busybox\nvm: {{ vcpus: 1, memory: 192MiB }}\npool: {{ warm: 2, max: 8 }}\nlti: {{ platforms: [{{ issuer: \"{}\" }}], contexts: [bench-class] }}\nreadiness: {{ console_marker: GUEST-READY }}\n", platform.issuer()),
    )
    .unwrap();
    std::fs::write(
        courses.join(format!("{SSH}.yaml")),
        format!("name: {SSH}\ntitle: SSH\nimage: busybox-ssh\nvm: {{ vcpus: 1, memory: 768MiB }}\npool: {{ warm: 1, max: {} }}\nsession: {{ console: ssh, ssh: {{ user: student }} }}\n", TERMINALS + 1),
    )
    .unwrap();
    let body = format!(
        "database: \"sqlite:labpool.db\"\nsource: {{ folder: courses }}\nreconcile: {{ boots_per_host: 2, resync: 1s, orphan_grace: 1h }}\n\
         hosts:\n  - name: local\n    uri: qemu:///system\n    storage_pool: labpool\n    domain_type: qemu\n    capacity: {{ vms: 8, memory: 4GiB, vcpus: 2, cpu_overcommit: 4 }}\n\
         images:\n  busybox: {{ volume: busybox-base.qcow2, kernel: {IMAGES}/vmlinux, initrd: {IMAGES}/busybox.cpio.gz, cmdline: console=ttyS0 quiet panic=-1 }}\n\
         \x20 busybox-ssh: {{ volume: busybox-base.qcow2, kernel: {IMAGES}/vmlinux, initrd: {IMAGES}/busybox-ssh.cpio.gz, cmdline: console=ttyS0 quiet panic=-1 }}\n\
         terminal: {{ ssh_key: {IMAGES}/id_ed25519 }}\n\
         ",
    );
    bed::start(dir, platform, &body).await
}

fn warm(vms: &[VmRow], course: &str) -> usize {
    vms.iter()
        .filter(|v| v.course == course && v.state == VmState::Warm)
        .count()
}

async fn first_byte(bed: &Bed) {
    let mut ms = Vec::new();
    for round in 0..ROUNDS {
        converge(bed, "a warm serial VM", |v| warm(v, SERIAL) >= 1).await;
        let launch = Launch::new(CLIENT, DEPLOYMENT, format!("student-{round}"), "lab")
            .in_context("bench-class", "Class");
        let page = Browser::new().launch(&bed.platform, &launch).await.unwrap();
        assert_eq!(page.status, 303, "{}", page.body);
        let location = page.location.clone().unwrap();
        // The clock starts at the redirect: the page, then its socket.
        let start = Instant::now();
        let html = reqwest::get(&location).await.unwrap();
        assert_eq!(html.status(), 200);
        html.text().await.unwrap();
        let (socket, opened) = first_output(&socket_of(&bed.base, &location)).await;
        let total = start.elapsed();
        let booting = bed
            .store
            .vms()
            .await
            .unwrap()
            .iter()
            .filter(|v| matches!(v.state, VmState::Creating | VmState::Booting))
            .count();
        println!(
            "  round {}: redirect -> first console byte {:.0} ms (socket -> console open {:.0} ms, -> first byte {:.0} ms; {booting} VMs booting meanwhile)",
            round + 1,
            total.as_secs_f64() * 1000.0,
            opened.unwrap_or_default().as_secs_f64() * 1000.0,
            socket.as_secs_f64() * 1000.0
        );
        ms.push(total.as_secs_f64() * 1000.0);
        let id = url::Url::parse(&location).unwrap().path()[9..].to_string();
        bed.store.end_session(&id, "bench", now_ms()).await.unwrap();
    }
    ms.sort_by(f64::total_cmp);
    let verdict = if ms[ms.len() - 1] < TARGET_FIRST_BYTE_MS {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "terminal: launch redirect -> first console byte (warm serial VM, {ROUNDS} launches): p50 {:.0} ms, max {:.0} ms (target < {TARGET_FIRST_BYTE_MS:.0} ms: {verdict})",
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

async fn memory(bed: &Bed) {
    let vms = converge(bed, "a warm SSH VM", |v| warm(v, SSH) >= 1).await;
    let real = vms
        .iter()
        .find(|v| v.course == SSH && v.state == VmState::Warm)
        .unwrap()
        .clone();
    // 199 more VMs in the store, all reaching the one guest's SSH port.
    let now = now_ms();
    for i in 1..TERMINALS {
        let fake = VmRow {
            id: format!("bench-fake-{i}"),
            domain: format!("bench-fake-{i}"),
            volume: format!("bench-fake-{i}.qcow2"),
            ..real.clone()
        };
        bed.store.insert_vm(&fake).await.unwrap();
    }
    let tokens = SessionTokens::load_or_create(&bed.store, now)
        .await
        .unwrap();
    let mut urls = Vec::new();
    for i in 0..TERMINALS {
        let key = SessionKey {
            issuer: "bench".into(),
            deployment_id: DEPLOYMENT.into(),
            user_sub: format!("ssh-student-{i}"),
            context_id: "bench".into(),
            resource_link_id: "lab".into(),
        };
        let claimed = bed
            .store
            .claim(SSH, &real.spec_hash, &key, now, now + 3_600_000)
            .await
            .unwrap()
            .expect("a VM for every session");
        let id = claimed.session.id;
        let token = tokens.issue(&id, now / 1000);
        urls.push(format!("{}\t{id}\t{token}", bed.base));
    }
    let list = bed.dir.path().join("urls");
    std::fs::write(&list, urls.join("\n")).unwrap();
    let before = rss_kib();
    let start = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CLIENTS_ENV, &list)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::task::spawn_blocking(move || lines.next())
        .await
        .unwrap()
        .expect("the pages report")
        .unwrap();
    assert_eq!(
        ready,
        format!("ready {TERMINALS}"),
        "every page got its shell"
    );
    let open = start.elapsed();
    assert_eq!(bed.app.gateway.open_terminals(), TERMINALS);
    let after = rss_kib();
    println!(
        "terminal: {TERMINALS} SSH terminals attached in {:.1} s; server RSS {:.1} MiB -> {:.1} MiB: {:.0} KiB per open terminal",
        open.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / TERMINALS as f64
    );
    drop(child.stdin.take());
    let _ = child.wait();
    for s in bed.store.live_sessions().await.unwrap() {
        bed.store
            .end_session(&s.id, "bench", now_ms())
            .await
            .unwrap();
    }
    for i in 1..TERMINALS {
        bed.store
            .delete_vm(&format!("bench-fake-{i}"), now_ms())
            .await
            .unwrap();
    }
}

/// The child: opens every page's socket (each line of `list`: labpool's
/// base URL, a session and its token) (a few at a time: the guest's SSH
/// server takes only so many logins at once), waits for each shell's first
/// output, says so, and holds them open until its stdin closes.
fn pages(list: PathBuf) {
    let urls: Vec<String> = std::fs::read_to_string(list)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
        let mut tasks = tokio::task::JoinSet::new();
        for url in urls {
            let gate = gate.clone();
            tasks.spawn(async move {
                let _turn = gate.acquire().await.unwrap();
                let fields: Vec<&str> = url.split('\t').collect();
                let mut ws =
                    bed::open(&bed::socket_with_token(fields[0], fields[1], fields[2])).await;
                loop {
                    match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
                        Ok(Some(Ok(Message::Binary(b)))) if !b.is_empty() => break,
                        Ok(Some(Ok(Message::Close(c)))) => panic!("closed: {c:?}"),
                        Ok(Some(Ok(_))) => {}
                        other => panic!("no shell output: {other:?}"),
                    }
                }
                ws
            });
        }
        let sockets = tasks.join_all().await;
        println!("ready {}", sockets.len());
        std::io::stdout().flush().unwrap();
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await;
        drop(sockets);
    });
}

fn main() {
    if let Some(list) = std::env::var_os(CLIENTS_ENV) {
        return pages(PathBuf::from(list));
    }
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test` runs benches without --bench: they need real VMs.
        return;
    }
    // The runtime (and allocator settings) of `labpool serve`.
    let rt = labpool::ops::runtime().unwrap();
    rt.block_on(async {
        let bed = bed().await;
        std::env::set_current_dir(bed.dir.path()).unwrap();
        first_byte(&bed).await;
        memory(&bed).await;
        // Everything goes: the courses are removed and their VMs destroyed.
        std::fs::remove_dir_all(bed.dir.path().join("courses")).unwrap();
        std::fs::create_dir(bed.dir.path().join("courses")).unwrap();
        bed::confirm_removal(&bed).await;
        converge(&bed, "every VM removed", |v| v.is_empty()).await;
    });
}
