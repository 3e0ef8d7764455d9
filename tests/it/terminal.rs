//! The browser terminal's gateway over its WebSocket: a real TCG guest's
//! serial console (typing, resize, two tabs, scrollback while away, a
//! console taken away and back, the session ending), token refusals, and
//! idle and hard-expiry ends on libvirt test hosts.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use labpool::session_token::SessionTokens;
use labpool::store::VmState;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::lab::{Lab, converge, count};
use crate::lti::{CONTEXT, Db, World, lti_block, session_of};
use crate::qemu::{OwnPool, qemu_config};
use labpool::lms::Platform;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One page's side of the terminal socket.
pub struct Term {
    ws: Socket,
    /// Output bytes seen, from `offset`.
    pub out: Vec<u8>,
    /// Where the replay started.
    pub offset: u64,
    pub statuses: Vec<String>,
    pub tokens: Vec<String>,
    /// The ids (`jti`) of `tokens`, which a page acknowledges them by.
    pub token_ids: Vec<String>,
    /// The latest `session` message (title, expiry, idle).
    pub session: Option<serde_json::Value>,
}

/// What a page authenticates its socket with (its first message).
#[derive(Debug, Clone)]
pub enum Cred {
    /// The launch's one-time code, from the redirect's fragment.
    Code(String),
    /// A session token labpool gave a page.
    Token(String),
}

impl Cred {
    pub fn auth(&self, from: u64) -> Message {
        let msg = match self {
            Cred::Code(c) => json!({"type": "auth", "code": c, "from": from}),
            Cred::Token(t) => json!({"type": "auth", "token": t, "from": from}),
        };
        Message::Text(msg.to_string().into())
    }
}

impl Term {
    /// The socket's URL: no query, nothing secret.
    pub fn url(base: &str, session: &str) -> String {
        format!(
            "{}/session/{session}/terminal",
            base.replacen("http", "ws", 1)
        )
    }

    /// Opens the socket as a page of `origin` would (`None`: no `Origin`).
    pub async fn upgrade(base: &str, session: &str, origin: Option<&str>) -> Socket {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = Term::url(base, session).into_client_request().unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("socket upgrade");
        ws
    }

    /// Connects as labpool's page, authenticates with `cred` and reads up
    /// to the `attached` message (and, for a code, the token it is traded
    /// for).
    pub async fn connect(base: &str, session: &str, cred: &Cred, from: u64) -> Term {
        let mut ws = Term::upgrade(base, session, Some(base)).await;
        ws.send(cred.auth(from)).await.expect("auth message");
        let mut term = Term {
            ws,
            out: Vec::new(),
            offset: 0,
            statuses: Vec::new(),
            tokens: Vec::new(),
            token_ids: Vec::new(),
            session: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut attached = false;
        while !attached || (matches!(cred, Cred::Code(_)) && term.tokens.is_empty()) {
            match term.next(deadline).await {
                Some(Message::Text(t)) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == "attached" {
                        term.offset = v["offset"].as_u64().unwrap();
                        attached = true;
                    }
                }
                other => panic!("expected `attached`, got {other:?}"),
            }
        }
        term
    }

    /// The page's newest session token, to reconnect with.
    pub fn token(&self) -> Cred {
        Cred::Token(self.tokens.last().expect("a token").clone())
    }

    async fn next(&mut self, deadline: Instant) -> Option<Message> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.ws.next()).await {
            Ok(Some(Ok(msg))) => {
                self.note(&msg);
                Some(msg)
            }
            Ok(_) => None,
            Err(_) => panic!(
                "socket quiet until the deadline; statuses {:?}; output so far: {:?}",
                self.statuses,
                self.text()
            ),
        }
    }

    fn note(&mut self, msg: &Message) {
        match msg {
            Message::Binary(b) => self.out.extend_from_slice(b),
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                match v["type"].as_str() {
                    Some("status") => self.statuses.push(v["state"].as_str().unwrap().into()),
                    Some("token") => {
                        self.tokens.push(v["token"].as_str().unwrap().into());
                        self.token_ids.push(v["id"].as_str().unwrap().into());
                    }
                    Some("session") => self.session = Some(v),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Reads until the `session` message has come (within `limit`).
    pub async fn session_info(&mut self, limit: Duration) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        while self.session.is_none() {
            if self.next(deadline).await.is_none() {
                panic!("the socket closed before a `session` message");
            }
        }
        self.session.clone().unwrap()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// Output bytes this page holds in all (what it would send as `from`).
    pub fn end(&self) -> u64 {
        self.offset + self.out.len() as u64
    }

    pub async fn send(&mut self, keys: &str) {
        self.ws
            .send(Message::Binary(keys.as_bytes().to_vec().into()))
            .await
            .expect("send keys");
    }

    pub async fn resize(&mut self, cols: u16, rows: u16) {
        let msg = json!({"type": "resize", "cols": cols, "rows": rows}).to_string();
        self.ws.send(Message::Text(msg.into())).await.unwrap();
    }

    /// Reads until the output (from byte `after` of what this page saw)
    /// contains `needle`.
    pub async fn read_until(&mut self, after: usize, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !String::from_utf8_lossy(&self.out[after.min(self.out.len())..]).contains(needle) {
            match self.next(deadline).await {
                Some(Message::Close(c)) => {
                    panic!("closed ({c:?}) before {needle:?}: {:?}", self.text())
                }
                None => panic!("socket ended before {needle:?}: {:?}", self.text()),
                Some(_) => {}
            }
        }
    }

    /// Like [`Term::read_until`], but says whether `needle` came within
    /// `limit` instead of failing.
    pub async fn saw_within(&mut self, after: usize, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !String::from_utf8_lossy(&self.out[after.min(self.out.len())..]).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.ws.next()).await {
                Ok(Some(Ok(msg))) => self.note(&msg),
                Ok(_) => panic!("socket ended before {needle:?}: {:?}", self.text()),
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads until a `status` message names `state` again, after the first
    /// `seen` statuses: what the page shows before the student types on.
    pub async fn wait_status(&mut self, seen: usize, state: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.statuses[seen.min(self.statuses.len())..]
            .iter()
            .any(|s| s == state)
        {
            match self.next(deadline).await {
                Some(Message::Close(c)) => panic!("closed ({c:?}) before status {state}"),
                None => panic!("socket ended before status {state}"),
                Some(_) => {}
            }
        }
    }

    /// Reads to the close frame: its code and reason.
    pub async fn closed(&mut self, limit: Duration) -> (u16, String) {
        let deadline = Instant::now() + limit;
        loop {
            match self.next(deadline).await {
                Some(Message::Close(Some(frame))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Message::Close(None)) | None => return (0, String::new()),
                Some(_) => {}
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Types a command whose output differs from its echo (`hel''lo` prints
/// `hello`) and waits for the output line.
async fn run(term: &mut Term, command: &str, expect: &str) {
    let at = term.out.len();
    term.send(&format!("{command}\r")).await;
    term.read_until(at, &format!("\n{expect}"), Duration::from_secs(20))
        .await;
}

/// [`run`] right after a console changed hands (stolen, reconnected,
/// reset): while libvirt hands a serial console from one stream to the
/// next, both can read the guest's output for a moment, and what the old one
/// read is gone (on a loaded machine the moment lasts long enough to lose a
/// command's output). A student types again; so does this, up to 3 times.
async fn run_after_handover(term: &mut Term, command: &str, expect: &str) {
    for _ in 0..3 {
        let at = term.out.len();
        term.send(&format!("{command}\r")).await;
        if term
            .saw_within(at, &format!("\n{expect}"), Duration::from_secs(10))
            .await
        {
            return;
        }
    }
    panic!("{command:?} never gave {expect:?}: {:?}", term.text());
}

const SERIAL: &str = "term-serial";

/// A world with one real TCG guest kept warm for a serial course.
async fn serial_world(pool_name: &str) -> (World, OwnPool) {
    let lab = Lab::new();
    let pool = OwnPool::create(&lab, pool_name, SERIAL);
    let lms = Platform::start().await.expect("platform starts");
    lab.course_text(
        SERIAL,
        &format!(
            "name: {SERIAL}\ntitle: Shell on a serial line\nimage: busybox\nvm: {{ vcpus: 1, memory: 192MiB }}\npool: {{ warm: 1, max: 2 }}\nsession: {{ expiry: 1h, idle: 30m }}\n{}readiness: {{ console_marker: GUEST-READY }}\n",
            lti_block(&lms, &[CONTEXT])
        ),
    );
    let head = qemu_config(&pool.0);
    let world = World::start(lab, lms, Db::Sqlite, &head, "1 warm guest", |vms| {
        count(vms, SERIAL, VmState::Warm) == 1
    })
    .await;
    (world, pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_student_works_in_the_terminal_of_a_real_vm() {
    let (w, _pool) = serial_world("labpool-test-terminal").await;
    let (session, code) = session_of(&w.launch(&w.student("alice")).await);

    // The page: the scripts, no CDN (the course's title comes over the
    // socket).
    let page = reqwest::get(format!("{}/session/{session}", w.base))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("/assets/xterm.js"), "{html}");
    let js = reqwest::get(format!("{}/assets/xterm.js", w.base))
        .await
        .unwrap();
    assert_eq!(js.status(), 200);

    // Typing: the command's output comes back; the prompt came unasked.
    let mut tab = Term::connect(&w.base, &session, &Cred::Code(code), 0).await;
    let token = tab.token();
    assert_eq!(tab.offset, 0);
    tab.read_until(0, "# ", Duration::from_secs(20)).await;
    let before = w.store.session(&session).await.unwrap().unwrap();
    run(&mut tab, "echo hel''lo", "hello").await;
    assert!(
        tab.statuses.contains(&"connected".to_string()),
        "{:?}",
        tab.statuses
    );

    // Resize: the serial guest's shell learns the size, without the page
    // seeing the line that told it.
    tab.resize(123, 45).await;
    run(&mut tab, "stty size", "45 123").await;
    assert!(!tab.text().contains("stty rows"), "{:?}", tab.text());

    // Typing counts as activity.
    let touched = w.store.session(&session).await.unwrap().unwrap();
    assert!(touched.last_activity_at >= before.last_activity_at);

    // A second tab takes over from the first, and carries on from its byte.
    let mut tab2 = Term::connect(&w.base, &session, &token, tab.end()).await;
    assert_eq!(tab2.offset, tab.end());
    assert_eq!(tab.closed(Duration::from_secs(5)).await.0, 4001);
    run(&mut tab2, "echo tw''o", "two").await;

    // Output while nobody watches is kept and replayed, and only that.
    let away_from = tab2.end();
    let away = "sleep 1; echo lat''er";
    tab2.send(&format!("{away}\r")).await;
    tab2.close().await;
    // The command's echo, then `later` on a line of its own.
    let later = away_from + (away.len() + "\r\nlater\r\n".len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.gateway.output_end(&session).unwrap_or(0) < later {
        assert!(Instant::now() < deadline, "no output while away");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tab3 = Term::connect(&w.base, &session, &token, away_from).await;
    tab3.read_until(0, "\nlater", Duration::from_secs(20)).await;
    assert!(
        !tab3.text().contains("two"),
        "replayed too much: {:?}",
        tab3.text()
    );

    // The console taken away (as by a dropped host connection): the page is
    // told, and the gateway gets it back.
    let host = w.reconciler.host("local").unwrap().clone();
    let vm = w
        .store
        .vm(&touched.vm_id)
        .await
        .unwrap()
        .expect("the session's VM");
    let domain = vm.domain.clone();
    let thief = host.run(move |h| h.open_console(&domain)).await.unwrap();
    let at = tab3.out.len();
    let seen = tab3.statuses.len();
    tab3.read_until(at, "reconnecting", Duration::from_secs(20))
        .await;
    drop(thief);
    // Keys typed while there is no console go nowhere: type once the page
    // says connected again, as a student would.
    tab3.wait_status(seen, "connected", Duration::from_secs(20))
        .await;
    run_after_handover(&mut tab3, "echo ba''ck", "back").await;

    // The course is removed from the source: its warm VM goes, the student
    // keeps theirs, and the terminal still finds its way in (from the
    // course's last stored file) when the console has to be opened again.
    w.lab.remove_course(SERIAL);
    crate::lab::confirm_removal(&w.reconciler).await;
    converge(
        &w.reconciler,
        Duration::from_secs(60),
        "the removed course's warm VM gone",
        |vms| count(vms, SERIAL, VmState::Warm) == 0 && vms.iter().any(|v| v.id == vm.id),
    )
    .await;
    let domain = vm.domain.clone();
    let thief = host.run(move |h| h.open_console(&domain)).await.unwrap();
    let at = tab3.out.len();
    let seen = tab3.statuses.len();
    tab3.read_until(at, "reconnecting", Duration::from_secs(20))
        .await;
    drop(thief);
    tab3.wait_status(seen, "connected", Duration::from_secs(20))
        .await;
    run_after_handover(&mut tab3, "echo st''ill", "still").await;

    // The session ends: the page is told why and the VM goes.
    assert!(
        w.store
            .end_session(&session, "ended by a test", labpool::reconcile::now_ms())
            .await
            .unwrap()
    );
    let (code, reason) = tab3.closed(Duration::from_secs(30)).await;
    assert_eq!((code, reason.as_str()), (4000, "ended by a test"));
    converge(
        &w.reconciler,
        Duration::from_secs(60),
        "the VM gone",
        |vms| vms.iter().all(|v| v.id != vm.id),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_moves_the_open_terminal_to_a_fresh_vm() {
    let (w, _pool) = serial_world("labpool-test-reset").await;
    let (session, code) = session_of(&w.launch(&w.student("rae")).await);
    let first = w.store.session(&session).await.unwrap().unwrap().vm_id;
    // The pool refills, so there is a warm VM to reset onto.
    converge(
        &w.reconciler,
        Duration::from_secs(60),
        "a warm guest again",
        |vms| count(vms, SERIAL, VmState::Warm) == 1,
    )
    .await;
    let mut tab = Term::connect(&w.base, &session, &Cred::Code(code), 0).await;
    tab.read_until(0, "# ", Duration::from_secs(20)).await;
    run(&mut tab, "touch /tmp/mine; ls /tmp/mi''ne", "/tmp/mine").await;

    let admin = labpool::admin::Admin::new(w.reconciler.clone(), w.gateway.clone());
    let by = labpool::admin::Principal {
        token_id: "t".into(),
        name: "instructor".into(),
        scope: labpool::admin::Scope::Admin,
        courses: None,
    };
    let at = tab.out.len();
    let done = admin.reset_session(&session, &by).await.expect("reset");
    assert_eq!(done.old_vm, first);
    // The same page, without reconnecting, is now on the fresh VM.
    tab.read_until(at, "Your VM was reset", Duration::from_secs(10))
        .await;
    tab.read_until(at, "# ", Duration::from_secs(20)).await;
    run(&mut tab, "test -e /tmp/mine || echo fre''sh", "fresh").await;
    converge(
        &w.reconciler,
        Duration::from_secs(60),
        "the old VM gone",
        |vms| vms.iter().all(|v| v.id != first),
    )
    .await;
    // The terminal still works once the old VM is gone. On a loaded machine
    // the console can drop and come back meanwhile (the page then says
    // "reconnecting"), losing what was typed in between; a student would
    // type again once connected, and so does this test, once.
    let at = tab.out.len();
    let seen = tab.statuses.len();
    tab.send("echo sti''ll\r").await;
    if !tab.saw_within(at, "\nstill", Duration::from_secs(10)).await {
        assert!(
            tab.text()[at..].contains("reconnecting"),
            "{:?}",
            tab.text()
        );
        tab.wait_status(seen, "connected", Duration::from_secs(45))
            .await;
        run_after_handover(&mut tab, "echo sti''ll", "still").await;
    }
}

/// Sends `first` (if any) on `ws` and reads to the close: its code and
/// reason, and every frame before it.
pub async fn refused(mut ws: Socket, first: Option<Message>) -> (u16, String, Vec<Message>) {
    if let Some(first) = first {
        ws.send(first).await.unwrap();
    }
    let mut before = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (u16::from(frame.code), frame.reason.to_string(), before);
            }
            Ok(Some(Ok(msg))) => before.push(msg),
            other => panic!("no close frame: {other:?} after {before:?}"),
        }
    }
}

/// Refused with `code` and a reason containing `reason`, and nothing else
/// sent first: no output, no token (no renewal to a refused socket).
fn only_refused(got: (u16, String, Vec<Message>), code: u16, reason: &str, what: &str) {
    let (got_code, got_reason, before) = got;
    assert_eq!(got_code, code, "{what}: {got_reason}");
    assert!(got_reason.contains(reason), "{what}: {got_reason}");
    assert!(
        before.is_empty(),
        "{what}: sent before the close: {before:?}"
    );
}

/// Issue 15 §3: every credential that is not a live one for this session,
/// from labpool's own page, is refused with its reason before anything of
/// the VM (or a token) is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_refuses_bad_credentials_origins_and_ended_sessions() {
    let w = World::new(Db::Sqlite, 2, 10).await;
    let (alice, alice_code) = session_of(&w.launch(&w.student("alice")).await);
    let (bob, bob_code) = session_of(&w.launch(&w.student("bob")).await);
    let now = labpool::reconcile::now_ms() / 1000;
    let real = SessionTokens::load_or_create(w.reconciler.store(), now * 1000)
        .await
        .unwrap();
    let page = |first: Option<Message>| {
        let base = w.base.clone();
        let alice = alice.clone();
        async move { refused(Term::upgrade(&base, &alice, Some(&base)).await, first).await }
    };

    // Another site's page, or none: closed before the credential is read.
    // (The attack: `Origin: http://evil.example` attached.)
    for origin in [Some("http://evil.example"), Some("null"), None] {
        let ws = Term::upgrade(&w.base, &alice, origin).await;
        let got = refused(ws, Some(Cred::Code(alice_code.clone()).auth(0))).await;
        only_refused(
            got,
            4403,
            "only labpool's own pages",
            &format!("{origin:?}"),
        );
    }

    // Tokens: none, expired, forged, another session's.
    let bob_token = Term::connect(&w.base, &bob, &Cred::Code(bob_code.clone()), 0)
        .await
        .token();
    let cases = [
        ("no token", Cred::Token(String::new()), "no token"),
        (
            "expired",
            Cred::Token(real.issue(&alice, now - 3600)),
            "expired",
        ),
        (
            "forged",
            Cred::Token(SessionTokens::from_secret(b"not labpool's key").issue(&alice, now)),
            "not one labpool signed",
        ),
        ("bob's", bob_token.clone(), "another session"),
        // Codes: another session's, a spent one, an expired one.
        (
            "bob's code",
            Cred::Code(bob_code.clone()),
            "another session",
        ),
        (
            "expired code",
            Cred::Code(real.issue_code(&alice, now - 120)),
            "expired",
        ),
    ];
    for (what, cred, reason) in &cases {
        only_refused(page(Some(cred.auth(0))).await, 4401, reason, what);
    }
    // A first message that is not the auth message, or none at all.
    let keys = Message::Binary(b"ls\r".to_vec().into());
    only_refused(page(Some(keys)).await, 4401, "first message", "keys first");
    let resize = Message::Text(
        json!({"type": "resize", "cols": 80, "rows": 24})
            .to_string()
            .into(),
    );
    only_refused(
        page(Some(resize)).await,
        4401,
        "first message",
        "resize first",
    );
    only_refused(page(None).await, 4401, "no auth message within", "silent");

    // The code works once: the page gets a token; the same code again (a
    // code seen in a log, a history entry) gets nothing.
    let mut tab = Term::connect(&w.base, &alice, &Cred::Code(alice_code.clone()), 0).await;
    let alice_token = tab.token();
    only_refused(
        page(Some(Cred::Code(alice_code.clone()).auth(0))).await,
        4401,
        "already used",
        "spent code",
    );
    // A token issued before the attached page's (an older page's, or one
    // stolen from it) cannot take the terminal over; the page stays.
    let stale = Cred::Token(real.issue(&alice, now - 30));
    only_refused(
        page(Some(stale.auth(0))).await,
        4401,
        "a newer one is in use",
        "stale",
    );
    tab.resize(100, 30).await;
    // The page's own token reconnects (a reload); a fresh launch, from the
    // LMS, always takes over.
    let mut reload = Term::connect(&w.base, &alice, &alice_token, 0).await;
    assert_eq!(tab.closed(Duration::from_secs(5)).await.0, 4001);
    let (_, fresh) = session_of(&w.launch(&w.student("alice")).await);
    let _newest = Term::connect(&w.base, &alice, &Cred::Code(fresh), 0).await;
    assert_eq!(reload.closed(Duration::from_secs(5)).await.0, 4001);
    // …after which the earlier page's token is stale too.
    only_refused(
        page(Some(alice_token.auth(0))).await,
        4401,
        "a newer one is in use",
        "old",
    );

    // A token for a session that does not exist; an ended session.
    let ghost = Cred::Token(real.issue("no-such-session", now));
    let ws = Term::upgrade(&w.base, "no-such-session", Some(&w.base)).await;
    only_refused(
        refused(ws, Some(ghost.auth(0))).await,
        4404,
        "no such session",
        "ghost",
    );
    w.store
        .end_session(&bob, "expired", labpool::reconcile::now_ms())
        .await
        .unwrap();
    let ws = Term::upgrade(&w.base, &bob, Some(&w.base)).await;
    only_refused(
        refused(ws, Some(bob_token.auth(0))).await,
        4000,
        "expired",
        "ended",
    );
    // A relaunch (once the pool refilled) gives a new session with a fresh
    // code, which works.
    converge(&w.reconciler, Duration::from_secs(20), "refilled", |vms| {
        count(vms, crate::lti::COURSE, VmState::Warm) == 2
    })
    .await;
    let (bob2, code2) = session_of(&w.launch(&w.student("bob")).await);
    assert_ne!(bob2, bob);
    Term::connect(&w.base, &bob2, &Cred::Code(code2), 0).await;
}

/// Issue 15 §3: "newest tab wins" let a holder of any live token close the
/// student's socket and then receive a fresh token every minute. Now the
/// renewal goes to the attached page only, and once the page acknowledges
/// it, every older token (the one it attached with, say, seen by someone)
/// is refused; the renewed one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_goes_to_the_attached_page_and_retires_older_tokens() {
    let w = World::new(Db::Sqlite, 2, 10).await;
    let (alice, code) = session_of(&w.launch(&w.student("alice")).await);
    let mut tab = Term::connect(&w.base, &alice, &Cred::Code(code), 0).await;
    let first = tab.token();
    let floor = w.gateway.token_floor(&alice).unwrap();
    // The renewal comes within a minute, to this socket.
    let deadline = Instant::now() + Duration::from_secs(75);
    while tab.tokens.len() < 2 {
        match tab.next(deadline).await {
            Some(Message::Close(c)) => panic!("closed before a renewal: {c:?}"),
            None => panic!("socket ended before a renewal"),
            Some(_) => {}
        }
    }
    let renewed = tab.token();
    // Not acknowledged yet: nothing changes for older tokens.
    assert_eq!(w.gateway.token_floor(&alice), Some(floor));
    let ack = json!({"type": "ack", "token_id": tab.token_ids[1]}).to_string();
    tab.ws.send(Message::Text(ack.into())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.gateway.token_floor(&alice) == Some(floor) {
        assert!(Instant::now() < deadline, "the ack did not raise the floor");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An ack naming a token this socket was not sent changes nothing.
    let bogus = json!({"type": "ack", "token_id": "not-one-we-sent"}).to_string();
    tab.ws.send(Message::Text(bogus.into())).await.unwrap();
    let ws = Term::upgrade(&w.base, &alice, Some(&w.base)).await;
    only_refused(
        refused(ws, Some(first.auth(0))).await,
        4401,
        "a newer one is in use",
        "the token before the renewal",
    );
    // The renewed token is the page's: a reload with it takes over.
    let _reload = Term::connect(&w.base, &alice, &renewed, tab.end()).await;
    assert_eq!(tab.closed(Duration::from_secs(5)).await.0, 4001);
}

/// A world of test hosts with one course whose sessions last `session`.
async fn short_sessions(session: &str) -> World {
    let lab = Lab::new();
    let lms = Platform::start().await.expect("platform starts");
    lab.course_text(
        "short",
        &format!(
            "name: short\ntitle: Short lab\nimage: tiny\nvm: {{ vcpus: 1, memory: 64MiB }}\npool: {{ warm: 1, max: 3 }}\nsession: {session}\n{}",
            lti_block(&lms, &[CONTEXT])
        ),
    );
    let head = format!(
        "reconcile: {{ boots_per_host: 10, orphan_grace: 1h, backoff: 1s }}\nhosts:\n  - name: h1\n    uri: \"{}\"\n    storage_pool: labpool\n    capacity: {{ vms: 10, memory: 8GiB, vcpus: 8 }}\nimages:\n  tiny: {{ volume: base.qcow2 }}\n",
        lab.test_host("h1")
    );
    World::start(lab, lms, Db::Sqlite, &head, "1 warm", |vms| {
        count(vms, "short", VmState::Warm) == 1
    })
    .await
}

/// Launches, attaches a page, and waits for the reconciler to end the
/// session; returns the reason the page was given.
async fn session_ends(w: &World, reason: &str) {
    let (session, code) = session_of(&w.launch(&w.student("carol")).await);
    let row = w.store.session(&session).await.unwrap().unwrap();
    // Test hosts have no consoles: the page attaches and is told the VM
    // cannot be reached, but the session is just as live.
    let mut tab = Term::connect(&w.base, &session, &Cred::Code(code), 0).await;
    let vms = converge(
        &w.reconciler,
        Duration::from_secs(30),
        "the session ended and the pool refilled",
        |vms| vms.iter().all(|v| v.id != row.vm_id) && count(vms, "short", VmState::Warm) == 1,
    )
    .await;
    assert_eq!(count(&vms, "short", VmState::Assigned), 0);
    let ended = w.store.session(&session).await.unwrap().unwrap();
    assert_eq!(ended.end_reason.as_deref(), Some(reason));
    assert!(ended.ended_at.is_some());
    let (code, said) = tab.closed(Duration::from_secs(20)).await;
    assert_eq!((code, said.as_str()), (4000, reason), "what the page heard");
    assert!(
        tab.text().contains(&format!("has ended ({reason})")),
        "{:?}",
        tab.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_ends_and_the_pool_refills() {
    let w = short_sessions("{ expiry: 1h, idle: 1s }").await;
    session_ends(&w, "idle").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_ends_and_the_pool_refills() {
    let w = short_sessions("{ expiry: 2s, idle: 2s }").await;
    session_ends(&w, "expired").await;
}

/// The whole student path in a real browser: the LMS's launch, labpool's
/// login and launch, the session page with xterm.js, a typed command and
/// its output on the screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_in_chromium_ends_in_a_working_terminal() {
    let (w, _pool) = serial_world("labpool-test-chromium").await;
    let chrome = crate::browser::Chrome::start().await;
    let launch = w.student("dana");
    chrome.goto(&w.platform.launch_url(&launch)).await;
    chrome
        .wait_js(
            "return document.body.dataset.state || null",
            json!("connected"),
            Duration::from_secs(30),
        )
        .await;
    let url = chrome.client().current_url().await.unwrap();
    // Issue 15 §3: the code is gone from the address bar (and so from
    // history); no credential was in any URL the page loaded.
    assert!(url.path().starts_with("/session/"), "{url}");
    assert_eq!((url.query(), url.fragment()), (None, None), "{url}");
    let fetched = chrome
        .client()
        .execute(
            // What went to a server: each URL the page loaded, without the
            // fragment (which a browser never sends).
            "return performance.getEntries().map(e => e.name.split('#')[0])",
            vec![],
        )
        .await
        .unwrap();
    let socket = chrome
        .client()
        .execute("return labpool.socketUrl()", vec![])
        .await
        .unwrap();
    let socket = url::Url::parse(socket.as_str().unwrap()).unwrap();
    assert_eq!(socket.path(), format!("{}/terminal", url.path()));
    assert_eq!(
        (socket.query(), socket.fragment()),
        (None, None),
        "{socket}"
    );
    for name in fetched.as_array().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            !name.contains("code=") && !name.contains("token="),
            "{name}"
        );
    }
    chrome
        .wait_text("#title", "Shell on a serial line", Duration::from_secs(5))
        .await;
    // The prompt, asked for by the gateway, is on the screen before anyone types.
    chrome
        .wait_text(".xterm-rows", "#", Duration::from_secs(20))
        .await;
    chrome
        .type_keys(".xterm-helper-textarea", "echo hel''lo-from-chromium\n")
        .await;
    chrome
        .wait_text(
            ".xterm-rows",
            "hello-from-chromium",
            Duration::from_secs(20),
        )
        .await;
    // xterm.js's size reached the serial guest.
    chrome
        .type_keys(".xterm-helper-textarea", "stty size\n")
        .await;
    let (cols, rows) = {
        let v = chrome
            .client()
            .execute("return [labpool.term.cols, labpool.term.rows]", vec![])
            .await
            .unwrap();
        (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
    };
    let screen = chrome
        .wait_text(
            ".xterm-rows",
            &format!("{rows} {cols}"),
            Duration::from_secs(20),
        )
        .await;
    assert!(
        !screen.contains("stty rows"),
        "the sizer's line shows: {screen}"
    );
    // The session ends: the page says so.
    let session = url.path().trim_start_matches("/session/").to_string();
    w.store
        .end_session(&session, "expired", labpool::reconcile::now_ms())
        .await
        .unwrap();
    chrome
        .wait_js(
            "return document.body.dataset.state",
            json!("ended"),
            Duration::from_secs(30),
        )
        .await;
    chrome
        .wait_text("#notice-text", "has ended", Duration::from_secs(5))
        .await;
    chrome.close().await;
}

/// A `console: ssh` course through the same socket: the gateway logs in as
/// the course's user with `terminal.ssh_key`, and the page's size is the
/// PTY's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssh_course_terminal_works_through_the_socket() {
    let lab = Lab::new();
    let pool = OwnPool::create(&lab, "labpool-test-terminal-ssh", "term-ssh");
    let lms = Platform::start().await.expect("platform starts");
    lab.course_text(
        "term-ssh",
        &format!(
            "name: term-ssh\ntitle: Shell over SSH\nimage: busybox-ssh\nvm: {{ vcpus: 1, memory: 192MiB }}\npool: {{ warm: 1, max: 2 }}\nsession: {{ console: ssh, ssh: {{ user: student }} }}\n{}",
            lti_block(&lms, &[CONTEXT])
        ),
    );
    let head = crate::terminal_ssh::config_text(&pool.0);
    let w = World::start(lab, lms, Db::Sqlite, &head, "1 warm SSH guest", |vms| {
        count(vms, "term-ssh", VmState::Warm) == 1
    })
    .await;
    let (session, code) = session_of(&w.launch(&w.student("erin")).await);
    let mut tab = Term::connect(&w.base, &session, &Cred::Code(code), 0).await;
    let token = tab.token();
    tab.resize(97, 31).await;
    tab.read_until(0, "$ ", Duration::from_secs(20)).await;
    run(&mut tab, "id -un", "student").await;
    run(&mut tab, "stty size", "31 97").await;
    // A reload carries on where the page was: the hub kept the login.
    let end = tab.end();
    tab.close().await;
    let mut again = Term::connect(&w.base, &session, &token, end).await;
    assert_eq!(again.offset, end);
    run(&mut again, "echo ag''ain", "again").await;
    drop(pool);
}
