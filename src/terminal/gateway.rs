//! The gateway: one hub per session between its page and its VM.
//!
//! A hub opens the VM's console when the page first connects and keeps it
//! while the session lives, so output that arrives while the student is
//! away lands in the hub's scrollback and is replayed when a page attaches
//! again (from the byte it had, so nothing shows twice). One page is
//! attached at a time: a newer tab takes over and the older one is told so,
//! but only with a credential at least as new as the newest the hub knows
//! the attached page holds (`Shared::floor`): a stale or stolen session token
//! cannot take the terminal from the page that holds the current one, and
//! a launch from the LMS (a fresh token) always can.
//! When the console drops (a VM restart, a host gone, the guest's SSH gone)
//! the hub says so in the terminal and opens it again while the session
//! lives; when the session ends it tells the page why and goes away.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::console::{Console, ConsoleError, ConsoleInput};
use super::{container, serial, ssh};
use crate::course::spec::Console as ConsoleKind;
use crate::course::spec::Runtime;
use crate::hosts::Host;
use crate::lti::catalog::Catalogs;
use crate::reconcile::{Reconciler, now_ms};
use crate::store::Store;

/// Messages queued for a page before it counts as too slow and is detached
/// (it reconnects and catches up from the scrollback).
const PAGE_QUEUE: usize = 256;
/// Activity is written to the store at most this often per session.
const TOUCH_EVERY: Duration = Duration::from_secs(15);
/// A session that ends without its console closing (it ended in the store
/// first) is noticed within this.
const SESSION_CHECK: Duration = Duration::from_secs(5);
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// A console that has not opened by then counts as unavailable, and is tried
/// again: a host that stopped answering must not leave the page waiting
/// forever on one attempt.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// What a page is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToPage {
    Output(Vec<u8>),
    Status(Status),
    /// Another tab attached to this session.
    Replaced,
    /// The session ended, with the reason the store gives.
    Ended(String),
    /// labpool is shutting down: reconnect later.
    GoingAway,
}

/// The console's state as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Connecting,
    Connected,
    /// The console dropped or cannot be opened yet; why.
    Reconnecting(String),
}

impl Status {
    pub fn name(&self) -> &'static str {
        match self {
            Status::Connecting => "connecting",
            Status::Connected => "connected",
            Status::Reconnecting(_) => "reconnecting",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Status::Connecting => "Connecting to your VM…",
            Status::Connected => "Connected",
            Status::Reconnecting(why) => why,
        }
    }
}

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    reconciler: Reconciler,
    catalog: Catalogs,
    scrollback: usize,
    /// The SSH key, loaded at the first `console: ssh` session.
    ssh_key: tokio::sync::OnceCell<Result<Arc<russh::keys::PrivateKey>, String>>,
    hubs: Mutex<HashMap<String, Arc<Hub>>>,
    shutdown: watch::Sender<bool>,
}

/// A page's hold on a hub; detaches when dropped.
pub struct Attachment {
    /// The output offset the replay starts at.
    pub offset: u64,
    pub replay: Vec<u8>,
    pub status: Status,
    pub messages: mpsc::Receiver<ToPage>,
    hub: Arc<Hub>,
    page: u64,
}

/// Why a page may not attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachError {
    /// The session is over, with the reason the store gives.
    Ended(String),
    /// The page's token was issued before the newest one a page of this
    /// session holds: it belongs to an earlier page (or was stolen from one).
    Superseded,
}

impl Attachment {
    /// The attached page confirmed it holds a token issued at `issued_at`
    /// (unix ms): from now on no older token may attach. Does nothing once another page took over.
    pub fn holds_token_from(&self, issued_at: i64) {
        let mut shared = self.hub.shared.lock().expect("hub");
        if shared.page.as_ref().is_some_and(|p| p.id == self.page) {
            shared.floor = shared.floor.max(issued_at);
        }
    }

    /// Keystrokes; false once the hub is gone.
    pub async fn input(&self, bytes: Vec<u8>) -> bool {
        self.hub.input.send(ConsoleInput::Data(bytes)).await.is_ok()
    }

    pub async fn resize(&self, cols: u16, rows: u16) -> bool {
        if cols == 0 || rows == 0 {
            return true;
        }
        self.hub
            .input
            .send(ConsoleInput::Resize { cols, rows })
            .await
            .is_ok()
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut shared = self.hub.shared.lock().expect("hub");
        if shared.page.as_ref().is_some_and(|p| p.id == self.page) {
            shared.page = None;
        }
    }
}

struct Hub {
    session: String,
    input: mpsc::Sender<ConsoleInput>,
    /// The session was moved to another VM (an admin reset it): drop the
    /// console and open the new VM's.
    moved: tokio::sync::Notify,
    shared: Mutex<Shared>,
}

struct Shared {
    scrollback: Scrollback,
    page: Option<Page>,
    next_page: u64,
    status: Status,
    ended: Option<String>,
    /// When (unix ms) the newest session token a page of this
    /// session is known to hold was issued: one it attached with, or a
    /// renewal it acknowledged. Older tokens may not attach.
    floor: i64,
}

struct Page {
    id: u64,
    tx: mpsc::Sender<ToPage>,
}

impl Hub {
    /// Console output: kept, and passed to the page if one is attached.
    fn output(&self, bytes: Vec<u8>) {
        let mut shared = self.shared.lock().expect("hub");
        shared.scrollback.push(&bytes);
        shared.send(ToPage::Output(bytes));
    }

    fn set_status(&self, status: Status) {
        let mut shared = self.shared.lock().expect("hub");
        if shared.status != status {
            shared.status = status.clone();
            shared.send(ToPage::Status(status));
        }
    }

    /// A line from labpool itself, in the terminal (and its scrollback).
    fn say(&self, text: &str) {
        self.output(format!("\r\n\x1b[33m[labpool] {text}\x1b[0m\r\n").into_bytes());
    }
}

impl Shared {
    /// To the attached page; a page whose queue is full is detached rather
    /// than slowing the console down for everyone.
    fn send(&mut self, msg: ToPage) {
        if let Some(page) = &self.page
            && page.tx.try_send(msg).is_err()
        {
            self.page = None;
        }
    }
}

/// The last `cap` bytes of a console's output, numbered from the first
/// byte the hub ever saw.
struct Scrollback {
    buf: VecDeque<u8>,
    start: u64,
    cap: usize,
}

impl Scrollback {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
        if self.buf.len() > self.cap {
            let drop = self.buf.len() - self.cap;
            self.buf.drain(..drop);
            self.start += drop as u64;
        }
    }

    /// What a page that has `from` bytes lacks: (offset it starts at, bytes).
    fn since(&self, from: u64) -> (u64, Vec<u8>) {
        let end = self.start + self.buf.len() as u64;
        let from = from.clamp(self.start, end);
        let skip = (from - self.start) as usize;
        (from, self.buf.range(skip..).copied().collect())
    }
}

/// Why a console cannot be opened now.
enum Unavailable {
    /// The session is over (the reason the store gives).
    Ended(String),
    /// Try again later; the message is for the student.
    Retry(String),
}

impl Gateway {
    pub fn new(reconciler: &Reconciler) -> Gateway {
        let store = reconciler.store().clone();
        Gateway {
            inner: Arc::new(Inner {
                catalog: Catalogs::new(store.clone()),
                store,
                reconciler: reconciler.clone(),
                scrollback: reconciler.config().terminal.scrollback.as_bytes() as usize,
                ssh_key: tokio::sync::OnceCell::new(),
                hubs: Mutex::new(HashMap::new()),
                shutdown: watch::channel(false).0,
            }),
        }
    }

    /// Attaches a page to `session`'s hub, starting the hub if needed. The
    /// caller has checked the session's token, issued at `issued_at` (unix
    /// ms). `from` is how many output bytes the page
    /// already has.
    pub fn attach(
        &self,
        session: &str,
        from: u64,
        issued_at: i64,
    ) -> Result<Attachment, AttachError> {
        let hub = {
            let mut hubs = self.inner.hubs.lock().expect("hubs");
            match hubs.get(session) {
                Some(hub) => hub.clone(),
                None => {
                    let (tx, rx) = mpsc::channel(64);
                    let hub = Arc::new(Hub {
                        session: session.to_string(),
                        input: tx,
                        moved: tokio::sync::Notify::new(),
                        shared: Mutex::new(Shared {
                            scrollback: Scrollback {
                                buf: VecDeque::new(),
                                start: 0,
                                cap: self.inner.scrollback.max(1024),
                            },
                            page: None,
                            next_page: 0,
                            status: Status::Connecting,
                            ended: None,
                            floor: 0,
                        }),
                    });
                    hubs.insert(session.to_string(), hub.clone());
                    tokio::spawn(run_hub(self.inner.clone(), hub.clone(), rx));
                    hub
                }
            }
        };
        let mut shared = hub.shared.lock().expect("hub");
        if let Some(reason) = &shared.ended {
            return Err(AttachError::Ended(reason.clone()));
        }
        if issued_at < shared.floor {
            return Err(AttachError::Superseded);
        }
        shared.floor = issued_at;
        // The newest tab takes over: the older one is told, then let go.
        if let Some(old) = shared.page.take() {
            let _ = old.tx.try_send(ToPage::Replaced);
        }
        let (tx, messages) = mpsc::channel(PAGE_QUEUE);
        shared.next_page += 1;
        let page = shared.next_page;
        shared.page = Some(Page { id: page, tx });
        let (offset, replay) = shared.scrollback.since(from);
        let status = shared.status.clone();
        drop(shared);
        let store = self.inner.store.clone();
        let id = session.to_string();
        tokio::spawn(async move { store.touch_session(&id, now_ms()).await });
        Ok(Attachment {
            offset,
            replay,
            status,
            messages,
            hub,
            page,
        })
    }

    /// How many output bytes `session`'s console has produced so far, if
    /// its hub is open.
    pub fn output_end(&self, session: &str) -> Option<u64> {
        let hub = self.inner.hubs.lock().expect("hubs").get(session)?.clone();
        let shared = hub.shared.lock().expect("hub");
        Some(shared.scrollback.start + shared.scrollback.buf.len() as u64)
    }

    /// When (unix ms) the newest token a page of `session` holds was
    /// issued, as far as its hub knows; older tokens may not attach.
    pub fn token_floor(&self, session: &str) -> Option<i64> {
        let hub = self.inner.hubs.lock().expect("hubs").get(session)?.clone();
        Some(hub.shared.lock().expect("hub").floor)
    }

    /// `session` now runs on another VM (reset): its open terminal, if any,
    /// switches to the new VM's console at once rather than when the old
    /// VM's console drops.
    pub fn session_moved(&self, session: &str) {
        if let Some(hub) = self.inner.hubs.lock().expect("hubs").get(session) {
            hub.moved.notify_one();
        }
    }

    /// Hubs open now (sessions with a live console or trying to get one).
    pub fn open_terminals(&self) -> usize {
        self.inner.hubs.lock().expect("hubs").len()
    }

    /// Tells every page labpool is going away (they reconnect to the next
    /// labpool) and closes the consoles.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

async fn run_hub(inner: Arc<Inner>, hub: Arc<Hub>, mut input: mpsc::Receiver<ConsoleInput>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut size: Option<(u16, u16)> = None;
    let mut last_touch: Option<Instant> = None;
    let mut pinned: Option<(String, String)> = None; // (vm id, SSH host key)
    let mut opened_before = false;
    let mut retry = RETRY_FIRST;
    let reason = 'hub: loop {
        let console = tokio::select! {
            c = inner.open(&hub.session, size, &mut pinned) => c,
            _ = stopping(&mut shutdown) => break 'hub None,
        };
        let (mut console, serial) = match console {
            Ok(c) => c,
            Err(Unavailable::Ended(reason)) => break Some(reason),
            Err(Unavailable::Retry(why)) => {
                hub.set_status(Status::Reconnecting(why));
                let wait = tokio::time::sleep(retry);
                tokio::pin!(wait);
                retry = (retry * 2).min(RETRY_MAX);
                // Keystrokes while there is no console go nowhere; the size
                // is remembered for the next one.
                loop {
                    tokio::select! {
                        _ = &mut wait => continue 'hub,
                        _ = stopping(&mut shutdown) => break 'hub None,
                        msg = input.recv() => if let Some(ConsoleInput::Resize { cols, rows }) = msg {
                            size = Some((cols, rows));
                        },
                    }
                }
            }
        };
        retry = RETRY_FIRST;
        hub.set_status(Status::Connected);
        if let Some((cols, rows)) = size {
            let _ = console
                .input
                .send(ConsoleInput::Resize { cols, rows })
                .await;
        }
        if serial && !opened_before {
            // The shell printed its prompt before anyone listened: ask for
            // a fresh one so the student sees where to type.
            let _ = console.input.send(ConsoleInput::Data(b"\r".to_vec())).await;
        }
        opened_before = true;
        let mut check = tokio::time::interval(SESSION_CHECK);
        check.tick().await;
        let mut moved = false;
        loop {
            tokio::select! {
                out = console.output.recv() => match out {
                    Some(bytes) => hub.output(bytes),
                    None => break,
                },
                msg = input.recv() => {
                    let Some(msg) = msg else { break 'hub None };
                    match &msg {
                        ConsoleInput::Resize { cols, rows } => size = Some((*cols, *rows)),
                        ConsoleInput::Data(_)
                            if last_touch.is_none_or(|t| t.elapsed() >= TOUCH_EVERY) =>
                        {
                            last_touch = Some(Instant::now());
                            let store = inner.store.clone();
                            let id = hub.session.clone();
                            tokio::spawn(async move { store.touch_session(&id, now_ms()).await });
                        }
                        ConsoleInput::Data(_) => {}
                    }
                    if console.input.send(msg).await.is_err() {
                        break;
                    }
                }
                _ = check.tick() => if let Some(reason) = inner.ended(&hub.session).await {
                    break 'hub Some(reason);
                },
                _ = hub.moved.notified() => {
                    moved = true;
                    break;
                }
                _ = stopping(&mut shutdown) => break 'hub None,
            }
        }
        // The console ended: the session too, or only the connection?
        if let Some(reason) = inner.ended(&hub.session).await {
            break Some(reason);
        }
        if moved {
            hub.say("Your VM was reset: connecting to a fresh one…");
            // The fresh VM's shell prompted before anyone listened.
            opened_before = false;
            continue;
        }
        hub.say("The connection to your VM dropped; reconnecting…");
        hub.set_status(Status::Reconnecting(
            "The connection to your VM dropped; reconnecting…".into(),
        ));
    };
    let mut hubs = inner.hubs.lock().expect("hubs");
    hubs.remove(&hub.session);
    let mut shared = hub.shared.lock().expect("hub");
    match reason {
        Some(reason) => {
            let text = format!("This lab session has ended ({reason}).");
            let line = format!("\r\n\x1b[33m[labpool] {text}\x1b[0m\r\n").into_bytes();
            shared.scrollback.push(&line);
            shared.send(ToPage::Output(line));
            shared.send(ToPage::Ended(reason.clone()));
            shared.ended = Some(reason);
        }
        None => {
            shared.send(ToPage::GoingAway);
            shared.ended = Some("labpool restarted".into());
        }
    }
    shared.page = None;
}

/// Resolves once labpool is shutting down.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across the caller's awaits.
    let _ = shutdown.wait_for(|down| *down).await.map(|_| ());
}

impl Inner {
    /// Why `session` is over, if it is.
    async fn ended(&self, session: &str) -> Option<String> {
        match self.store.session(session).await {
            Ok(Some(s)) if s.ended_at.is_none() => None,
            Ok(Some(s)) => Some(s.end_reason.unwrap_or_else(|| "ended".into())),
            Ok(None) => Some("no such session".into()),
            // The store is briefly unreachable: not a reason to end.
            Err(_) => None,
        }
    }

    /// Opens the console of `session`'s VM, the way its course says.
    /// Returns it and whether it is a serial console.
    async fn open(
        &self,
        session: &str,
        size: Option<(u16, u16)>,
        pinned: &mut Option<(String, String)>,
    ) -> Result<(Console, bool), Unavailable> {
        let unreachable = |e: &dyn std::fmt::Display| {
            tracing::warn!(session, error = %e, "terminal: console unavailable");
            Unavailable::Retry("Your VM cannot be reached right now; retrying…".into())
        };
        let row = match self.store.session(session).await {
            Ok(Some(s)) if s.ended_at.is_none() => s,
            Ok(Some(s)) => {
                return Err(Unavailable::Ended(
                    s.end_reason.unwrap_or_else(|| "ended".into()),
                ));
            }
            Ok(None) => return Err(Unavailable::Ended("no such session".into())),
            Err(e) => return Err(unreachable(&e)),
        };
        let vm = match self.store.vm(&row.vm_id).await {
            Ok(Some(vm)) => vm,
            Ok(None) => return Err(Unavailable::Ended("its VM is gone".into())),
            Err(e) => return Err(unreachable(&e)),
        };
        let (kind, ssh_user) = self
            .console_of(&row.course)
            .await
            .map_err(|e| unreachable(&e))?;
        // A VM built before its course moved to `console: ssh` has no SSH
        // port; its serial console still works.
        let kind = match (kind, vm.ssh_port) {
            (ConsoleKind::Ssh, None) => ConsoleKind::Serial,
            (kind, _) => kind,
        };
        let Some(host) = self.reconciler.host(&vm.host).cloned() else {
            return Err(unreachable(&format!(
                "host `{}` is not configured",
                vm.host
            )));
        };
        if host.runtime() == Runtime::Container {
            return self
                .open_container(session, &host, &row.course, &vm.domain, size)
                .await;
        }
        let ssh_key = match kind {
            ConsoleKind::Ssh => Some(
                self.ssh_key
                    .get_or_init(|| async { self.load_ssh_key() })
                    .await
                    .clone()
                    .map_err(|e| unreachable(&e))?,
            ),
            ConsoleKind::Serial => None,
        };
        let opening = async {
            match kind {
                ConsoleKind::Serial => serial::open(host, vm.domain.clone())
                    .await
                    .map(|c| (c, true)),
                ConsoleKind::Ssh => {
                    let key = ssh_key.expect("loaded for ssh consoles");
                    let port = vm.ssh_port.unwrap_or_default();
                    let expect = pinned
                        .as_ref()
                        .filter(|(vm_id, _)| *vm_id == vm.id)
                        .map(|(_, fp)| fp.clone());
                    let target = ssh::SshTarget {
                        addr: std::net::SocketAddr::new(
                            host.config.ssh_forward.address,
                            u16::try_from(port).unwrap_or_default(),
                        )
                        .to_string(),
                        user: ssh_user.unwrap_or_else(|| "root".into()),
                        key,
                        expect_host_key: expect,
                    };
                    let (cols, rows) = size.unwrap_or((80, 24));
                    ssh::open(&target, cols, rows).await.map(|(c, fp)| {
                        *pinned = Some((vm.id.clone(), fp));
                        (c, false)
                    })
                }
            }
        };
        let Ok(console) = tokio::time::timeout(OPEN_TIMEOUT, opening).await else {
            return Err(unreachable(&format!(
                "the console did not open within {}s",
                OPEN_TIMEOUT.as_secs()
            )));
        };
        console.map_err(|e| match e {
            ConsoleError::Host(e) if !e.is_unreachable() => {
                tracing::warn!(session, error = %e, "terminal: cannot open the console");
                Unavailable::Retry("Your VM's console cannot be opened; retrying…".into())
            }
            e => unreachable(&e),
        })
    }

    /// A shell in `session`'s container.
    async fn open_container(
        &self,
        session: &str,
        host: &Arc<Host>,
        course: &str,
        container: &str,
        size: Option<(u16, u16)>,
    ) -> Result<(Console, bool), Unavailable> {
        let unreachable = |e: &dyn std::fmt::Display| {
            tracing::warn!(session, error = %e, "terminal: container unavailable");
            Unavailable::Retry("Your lab cannot be reached right now; retrying…".into())
        };
        let spec = self
            .store
            .courses()
            .await
            .map_err(|e| unreachable(&e))?
            .into_iter()
            .find(|r| r.name == course)
            .and_then(|r| serde_json::from_str::<crate::course::Course>(&r.spec_json).ok())
            .and_then(|c| c.container);
        let target = container::ExecTarget {
            host: host.name().to_string(),
            container: container.to_string(),
            user: spec.as_ref().and_then(|s| s.user.clone()),
            shell: spec.map_or_else(|| vec!["/bin/sh".into()], |s| s.shell()),
        };
        let engine = host.engine().await.map_err(|e| unreachable(&e))?;
        let (cols, rows) = size.unwrap_or((80, 24));
        let opening = container::open(engine, &target, cols, rows);
        match tokio::time::timeout(OPEN_TIMEOUT, opening).await {
            Ok(Ok(console)) => Ok((console, false)),
            Ok(Err(e)) => Err(unreachable(&e)),
            Err(_) => Err(unreachable(&format!(
                "the shell did not start within {}s",
                OPEN_TIMEOUT.as_secs()
            ))),
        }
    }

    /// How `course`'s terminal reaches its VMs, and the SSH user. A course
    /// removed from the source is no longer launchable, but its students
    /// keep their sessions: its last stored file answers.
    async fn console_of(
        &self,
        course: &str,
    ) -> Result<(ConsoleKind, Option<String>), crate::store::StoreError> {
        if let Some(c) = self.catalog.get().await?.course(course) {
            return Ok((c.console, c.ssh_user.clone()));
        }
        let stored = self
            .store
            .courses()
            .await?
            .into_iter()
            .find(|r| r.name == course);
        let spec =
            stored.and_then(|r| serde_json::from_str::<crate::course::Course>(&r.spec_json).ok());
        Ok(spec.map_or((ConsoleKind::Serial, None), |c| {
            (c.session.console, c.session.ssh.map(|s| s.user))
        }))
    }

    fn load_ssh_key(&self) -> Result<Arc<russh::keys::PrivateKey>, String> {
        let Some(path) = &self.reconciler.config().terminal.ssh_key else {
            return Err("no terminal.ssh_key in the configuration".into());
        };
        ssh::load_key(path).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrollback_replays_what_a_page_lacks() {
        let mut s = Scrollback {
            buf: VecDeque::new(),
            start: 0,
            cap: 8,
        };
        s.push(b"hello ");
        assert_eq!(s.since(0), (0, b"hello ".to_vec()));
        assert_eq!(s.since(3), (3, b"lo ".to_vec()));
        s.push(b"world");
        // 11 bytes seen, 8 kept: a page with nothing starts at byte 3.
        assert_eq!(s.since(0), (3, b"lo world".to_vec()));
        assert_eq!(s.since(11), (11, Vec::new()));
        assert_eq!(
            s.since(99),
            (11, Vec::new()),
            "a page from before a restart"
        );
    }
}
