//! The SSH way into a real TCG guest (the busybox-ssh image, dropbear):
//! labpool's reconciler boots a `console: ssh` course's VM and proves it
//! ready by its forwarded SSH port; then `terminal::ssh` logs in as
//! `student` with the dev key, runs commands, resizes the PTY, pins the host
//! key, and sees the console end when the VM is destroyed.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use labpool::store::VmState;
use labpool::terminal::console::{Console, ConsoleError, ConsoleInput};
use labpool::terminal::ssh::{self, SshTarget};

use crate::lab::{Lab, converge, count};
use crate::qemu::{OwnPool, qemu_config};

const IMAGES: &str = "/var/lib/labpool/images";
const COURSE: &str = "ssh-shell";

/// [`qemu_config`] plus the ssh image in the catalog and the key that logs
/// in to it.
pub(crate) fn config_text(pool: &str) -> String {
    format!(
        "{}  busybox-ssh:\n    volume: busybox-base.qcow2\n    kernel: {IMAGES}/vmlinux\n    initrd: {IMAGES}/busybox-ssh.cpio.gz\n    cmdline: console=ttyS0 quiet panic=-1\nterminal: {{ ssh_key: {IMAGES}/id_ed25519 }}\n",
        qemu_config(pool)
    )
}

/// A console and the output it printed that no expectation consumed yet.
struct Screen {
    console: Console,
    seen: String,
}

impl Screen {
    fn new(console: Console) -> Screen {
        Screen {
            console,
            seen: String::new(),
        }
    }

    async fn send(&self, input: ConsoleInput) {
        self.console.input.send(input).await.expect("console open");
    }

    async fn type_line(&self, line: &str) {
        self.send(ConsoleInput::Data(format!("{line}\n").into_bytes()))
            .await;
    }

    /// Reads until a complete output line is `want` (a command's result,
    /// not the command line typed), then forgets the output up to it.
    async fn expect_line(&mut self, want: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.line_end(want) {
                self.seen.drain(..end);
                return;
            }
            match tokio::time::timeout_at(deadline, self.console.output.recv()).await {
                Ok(Some(bytes)) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(None) => panic!(
                    "console closed waiting for {want:?}; output: {:?}",
                    self.seen
                ),
                Err(_) => panic!("no line {want:?} within {limit:?}; output: {:?}", self.seen),
            }
        }
    }

    /// Where the first complete line equal to `want` ends.
    fn line_end(&self, want: &str) -> Option<usize> {
        let mut start = 0;
        for (i, _) in self.seen.match_indices('\n') {
            if self.seen[start..i].trim_end_matches('\r') == want {
                return Some(i + 1);
            }
            start = i + 1;
        }
        None
    }

    /// Reads until the output channel closes; how long that took.
    async fn expect_closed(&mut self, limit: Duration) -> Duration {
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.console.output.recv()).await {
                Ok(Some(_)) => {}
                Ok(None) => return start.elapsed(),
                Err(_) => panic!("the console's output did not close within {limit:?}"),
            }
        }
    }
}

/// labpool's open TCP connections to `127.0.0.1:port` (the client ends of
/// established connections in /proc/net/tcp).
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// Polls until `connections_to(port)` is `n`.
async fn expect_connections(port: u16, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while connections_to(port) != n {
        assert!(
            Instant::now() < deadline,
            "{} connections to port {port} after {limit:?}, expected {n}",
            connections_to(port)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A marker no earlier output contains.
fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// `echo hel""lo-X` prints `hello-X`: seeing that line proves the shell ran
/// it (the echoed command line reads differently).
async fn echo_round_trip(screen: &mut Screen, what: &str) {
    let mark = marker(what);
    screen.type_line(&format!("echo hel\"\"lo-{mark}")).await;
    screen
        .expect_line(&format!("hello-{mark}"), Duration::from_secs(20))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_console_logs_in_runs_resizes_pins_and_ends_with_the_vm() {
    let lab = Lab::new();
    let pool = OwnPool::create(&lab, "labpool-test-ssh", COURSE);
    let config = lab.config(&config_text(&pool.0));
    lab.course_text(
        COURSE,
        &format!(
            "name: {COURSE}\ntitle: Test {COURSE}\nimage: busybox-ssh\nvm: {{ vcpus: 1, memory: 192MiB }}\npool: {{ warm: 1, max: 1 }}\nsession: {{ console: ssh, ssh: {{ user: student }} }}\nreadiness: {{ timeout: 90s }}\n"
        ),
    );
    let r = lab.reconciler(config).await;
    let vms = converge(&r, Duration::from_secs(120), "1 warm", |v| {
        count(v, COURSE, VmState::Warm) == 1
    })
    .await;
    let warm_at = Instant::now();
    let vm = &vms[0];
    let port = vm
        .ssh_port
        .and_then(|p| u16::try_from(p).ok())
        .expect("an ssh course's VM has a forwarded port");
    let key = ssh::load_key(&Path::new(IMAGES).join("id_ed25519")).expect("the dev key");
    let target = SshTarget {
        addr: format!("127.0.0.1:{port}"),
        user: "student".into(),
        key: Arc::clone(&key),
        expect_host_key: None,
    };

    // First login: trust on first use.
    let started = Instant::now();
    let (console, host_key) = ssh::open(&target, 80, 24).await.expect("ssh login");
    let connect = started.elapsed();
    let mut screen = Screen::new(console);
    let first = tokio::time::timeout(Duration::from_secs(20), screen.console.output.recv())
        .await
        .expect("the shell prints a prompt")
        .expect("console open");
    screen.seen.push_str(&String::from_utf8_lossy(&first));
    eprintln!(
        "terminal_ssh: connect (TCP to shell) {connect:?}; Warm to first output {:?}; host key {host_key}",
        warm_at.elapsed()
    );
    assert!(host_key.starts_with("SHA256:"), "{host_key}");

    echo_round_trip(&mut screen, "first").await;
    screen.type_line("id -un").await;
    screen.expect_line("student", Duration::from_secs(20)).await;

    // A resize reaches the PTY before the command typed after it.
    screen
        .send(ConsoleInput::Resize {
            cols: 123,
            rows: 45,
        })
        .await;
    screen.type_line("stty size").await;
    screen.expect_line("45 123", Duration::from_secs(20)).await;

    // Pinned to another key: refused, and the message says why.
    let wrong = SshTarget {
        expect_host_key: Some("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU".into()),
        ..target.clone()
    };
    match ssh::open(&wrong, 80, 24).await {
        Err(ConsoleError::Ssh { addr, message }) => {
            assert_eq!(addr, target.addr);
            assert!(message.contains("host key changed"), "{message}");
            assert!(message.contains(&host_key), "{message}");
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a wrong pinned host key was accepted"),
    }
    // Pinned to the key it has: in, and a console whose gateway leaves
    // (drops the input side) ends.
    let pinned = SshTarget {
        expect_host_key: Some(host_key.clone()),
        ..target.clone()
    };
    let started = Instant::now();
    let (console, again) = ssh::open(&pinned, 80, 24).await.expect("pinned login");
    eprintln!("terminal_ssh: pinned connect {:?}", started.elapsed());
    assert_eq!(again, host_key);
    let mut second = Screen::new(console);
    echo_round_trip(&mut second, "pinned").await;
    let (tx, _) = tokio::sync::mpsc::channel(1);
    drop(std::mem::replace(&mut second.console.input, tx));
    let closed = second.expect_closed(Duration::from_secs(10)).await;
    eprintln!("terminal_ssh: input dropped -> output closed in {closed:?}");
    // ... and its connection with it: only the first console's is left.
    expect_connections(port, 1, Duration::from_secs(5)).await;

    // A wrong user: refused with a clear message.
    let stranger = SshTarget {
        user: "nobody-here".into(),
        expect_host_key: Some(host_key.clone()),
        ..target.clone()
    };
    match ssh::open(&stranger, 80, 24).await {
        Err(ConsoleError::Ssh { message, .. }) => {
            assert!(
                message.contains("refused labpool's key for user `nobody-here`"),
                "{message}"
            );
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("an unknown user logged in"),
    }

    // Refused logins leave no connection behind either.
    expect_connections(port, 1, Duration::from_secs(5)).await;

    // The first console still works, and ends when its VM is destroyed.
    echo_round_trip(&mut screen, "before-destroy").await;
    let started = Instant::now();
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system", "destroy", &vm.domain])
        .output()
        .expect("virsh runs");
    assert!(out.status.success(), "virsh destroy: {out:?}");
    let destroy = started.elapsed();
    screen.expect_closed(Duration::from_secs(30)).await;
    eprintln!(
        "terminal_ssh: virsh destroy took {destroy:?}; output closed {:?} after it started",
        started.elapsed()
    );
    expect_connections(port, 0, Duration::from_secs(5)).await;
    // `pool` (dropped before `lab`) undefines the domain and the pool.
}
