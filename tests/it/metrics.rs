//! Operating labpool: `/metrics` read by an independent parser (Python's
//! `prometheus_client`) while real launches (the test LMS, libvirt test
//! hosts) move its counters; `/healthz` and `/readyz` before and after a
//! revision is applied; and `labpool serve`'s JSON log lines carrying the
//! launch's and the reconcile action's span fields.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use labpool::http::App;
use labpool::lms::{Browser, Forgery, Launch, Platform, ToolRegistration};
use labpool::store::VmState;
use serde_json::{Value, json};

use crate::lab::{Lab, converge, count};
use crate::lti::{CLIENT, CONTEXT, COURSE, DEPLOYMENT, Db, World, session_of};
use crate::support::root;

/// One scrape, as Python's prometheus_client parsed it.
struct Scrape {
    text: String,
    families: Vec<Value>,
}

impl Scrape {
    /// The sample `name` whose labels are exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        self.families
            .iter()
            .flat_map(|f| f["samples"].as_array().unwrap())
            .find(|s| s["name"] == name && s["labels"].as_object() == Some(&wanted))
            .map(|s| s["value"].as_f64().expect("a finite value"))
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{}", self.text))
    }

    /// The label values `label` takes across the samples of `name`.
    fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .families
            .iter()
            .flat_map(|f| f["samples"].as_array().unwrap())
            .filter(|s| s["name"] == name)
            .filter_map(|s| s["labels"][label].as_str().map(str::to_owned))
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

/// Parses a text exposition with `tests/prometheus_parse.py`.
fn parse(text: &str) -> Scrape {
    let python = std::env::var("LABPOOL_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(&python)
        .arg("tests/prometheus_parse.py")
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e} (scripts/setup installs it)"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client refused the exposition (scripts/setup installs it):\n{}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    Scrape {
        text: text.to_owned(),
        families: serde_json::from_slice(&output.stdout).unwrap(),
    }
}

async fn scrape(base: &str) -> Scrape {
    let page = Browser::new()
        .get(&format!("{base}/metrics"))
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.headers[axum::http::header::CONTENT_TYPE],
        "text/plain; version=0.0.4"
    );
    parse(&page.body)
}

/// A histogram's buckets are cumulative and its `+Inf` bucket is its count.
fn assert_histogram(s: &Scrape, name: &str, labels: &[(&str, &str)]) {
    let count = s.value(&format!("{name}_count"), labels);
    let mut last = 0.0;
    let mut les = 0;
    for family in &s.families {
        for sample in family["samples"].as_array().unwrap() {
            let mut sample_labels = sample["labels"].as_object().unwrap().clone();
            let Some(le) = sample_labels.remove("le") else {
                continue;
            };
            let ours = labels
                .iter()
                .all(|(k, v)| sample_labels.get(*k) == Some(&json!(v)))
                && sample_labels.len() == labels.len();
            if sample["name"] != format!("{name}_bucket") || !ours {
                continue;
            }
            let v = sample["value"].as_f64().unwrap();
            assert!(v >= last, "{name} {labels:?}: buckets not cumulative");
            last = v;
            les += 1;
            if le == "+Inf" {
                assert_eq!(v, count, "{name} {labels:?}: +Inf bucket is the count");
            }
        }
    }
    assert!(les > 3, "{name} {labels:?} has its buckets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_follow_the_pools_launches_and_refusals() {
    // One warm VM, at most two in use: the first launch is warm, the
    // second waits for a VM, the third finds the lab full.
    let w = World::new(Db::Sqlite, 1, 2).await;
    let s = scrape(&w.base).await;
    for family in &s.families {
        let name = family["name"].as_str().unwrap();
        assert!(name.starts_with("labpool_"), "{name}");
        assert!(!family["help"].as_str().unwrap().is_empty(), "{name} HELP");
    }
    // The pools, every state of every course, from the store.
    for course in [COURSE, "python"] {
        for state in VmState::ALL {
            let want = if state == VmState::Warm { 1.0 } else { 0.0 };
            let labels = [("course", course), ("state", state.as_str())];
            assert_eq!(s.value("labpool_vms", &labels), want, "{labels:?}");
        }
        assert_eq!(s.value("labpool_sessions", &[("course", course)]), 0.0);
        for outcome in ["warm", "resumed", "on_demand", "full"] {
            let labels = [("course", course), ("outcome", outcome)];
            assert_eq!(s.value("labpool_launches_total", &labels), 0.0);
        }
    }
    assert_eq!(s.label_values("labpool_host_up", "host"), ["h1", "h2"]);
    assert_eq!(s.value("labpool_host_up", &[("host", "h1")]), 1.0);
    assert_eq!(s.value("labpool_store_up", &[]), 1.0);
    assert_eq!(s.value("labpool_open_terminals", &[]), 0.0);
    assert_eq!(s.value("labpool_revision_rejected", &[]), 0.0);
    let age = s.value("labpool_revision_age_seconds", &[]);
    assert!((0.0..600.0).contains(&age), "revision age {age}");
    // The reconciler's passes, creates and boots that filled the pools.
    let passes = s.value("labpool_reconcile_passes_total", &[("result", "ok")]);
    assert!(passes >= 1.0);
    assert_eq!(
        s.value(
            "labpool_reconcile_duration_seconds_count",
            &[("result", "ok")]
        ),
        passes
    );
    assert_histogram(
        &s,
        "labpool_reconcile_duration_seconds",
        &[("result", "ok")],
    );
    let created = [("kind", "create"), ("result", "ok")];
    assert_eq!(s.value("labpool_actions_total", &created), 2.0);
    let failed = [("kind", "create"), ("result", "failed")];
    assert_eq!(s.value("labpool_actions_total", &failed), 0.0);
    for course in [COURSE, "python"] {
        let labels = [("course", course)];
        assert_eq!(s.value("labpool_vm_boot_seconds_count", &labels), 1.0);
        assert_histogram(&s, "labpool_vm_boot_seconds", &labels);
    }
    for reason in labpool::metrics::REFUSAL_REASONS {
        let labels = [("reason", *reason)];
        assert_eq!(s.value("labpool_launch_refusals_total", &labels), 0.0);
    }

    // A warm launch, then the same student again: resumed.
    let launched = |s: &Scrape, outcome| {
        s.value(
            "labpool_launches_total",
            &[("course", COURSE), ("outcome", outcome)],
        )
    };
    let answered = |s: &Scrape, outcome| {
        s.value(
            "labpool_launch_duration_seconds_count",
            &[("outcome", outcome)],
        )
    };
    let (alice, _) = session_of(&w.launch(&w.student("alice")).await);
    let s = scrape(&w.base).await;
    assert_eq!(launched(&s, "warm"), 1.0);
    assert_eq!(answered(&s, "warm"), 1.0);
    assert!(
        s.value(
            "labpool_launch_duration_seconds_sum",
            &[("outcome", "warm")]
        ) > 0.0
    );
    assert_histogram(
        &s,
        "labpool_launch_duration_seconds",
        &[("outcome", "warm")],
    );
    assert_eq!(s.value("labpool_sessions", &[("course", COURSE)]), 1.0);
    let assigned = [("course", COURSE), ("state", "assigned")];
    assert_eq!(s.value("labpool_vms", &assigned), 1.0);
    assert_eq!(
        s.value("labpool_vms", &[("course", COURSE), ("state", "warm")]),
        0.0
    );
    let (again, _) = session_of(&w.launch(&w.student("alice")).await);
    assert_eq!(again, alice);
    let s = scrape(&w.base).await;
    assert_eq!(launched(&s, "resumed"), 1.0);
    assert_eq!(answered(&s, "resumed"), 1.0);
    assert_eq!(launched(&s, "warm"), 1.0);

    // No warm VM left: bob waits; with alice in and bob waiting the lab is
    // full for carol.
    let bob = w.launch(&w.student("bob")).await;
    assert_eq!(bob.status, 303, "{}", bob.body);
    let waiting = bob.location.clone().unwrap();
    assert!(waiting.contains("/launch/wait/"), "{waiting}");
    let carol = w.launch(&w.student("carol")).await;
    assert_eq!(carol.status, 503, "{}", carol.body);
    let s = scrape(&w.base).await;
    assert_eq!(launched(&s, "on_demand"), 1.0);
    assert_eq!(launched(&s, "full"), 1.0);
    assert_eq!(answered(&s, "on_demand"), 1.0);
    assert_eq!(answered(&s, "full"), 1.0);
    assert_eq!(
        s.value("labpool_launches_waiting", &[("course", COURSE)]),
        1.0
    );
    assert_eq!(
        s.value("labpool_wait_claims_total", &[("course", COURSE)]),
        0.0
    );
    // The pool grows for bob, whose waiting page then gets the VM.
    converge(
        &w.reconciler,
        Duration::from_secs(30),
        "a VM for bob",
        |vms| count(vms, COURSE, VmState::Warm) == 1,
    )
    .await;
    let (_, status) = crate::lti::poll_wait(&waiting, Some(&crate::lti::pass_of(&waiting))).await;
    assert_eq!(status["state"], "ready", "{status}");
    let s = scrape(&w.base).await;
    assert_eq!(
        s.value("labpool_wait_claims_total", &[("course", COURSE)]),
        1.0
    );
    assert_eq!(s.value("labpool_sessions", &[("course", COURSE)]), 2.0);
    assert_eq!(
        s.value("labpool_actions_total", &created),
        3.0,
        "bob's VM was one more create"
    );

    // Refusals, each under its reason; words from the requests (a course
    // name the link asks for, an issuer) never become labels.
    let refused =
        |s: &Scrape, reason| s.value("labpool_launch_refusals_total", &[("reason", reason)]);
    let forged = |f: Forgery| w.student("mallory").forged(f);
    let cases = [
        (forged(Forgery::WrongKey), "forged", 401),
        (forged(Forgery::Expired), "expired", 401),
        (
            forged(Forgery::Claims(
                json!({ "iss": "https://attacker.invalid" }),
            )),
            "unregistered",
            403,
        ),
        (
            forged(Forgery::Claims(json!({
                "https://purl.imsglobal.org/spec/lti/claim/custom": { "labpool_course": "attacker-course" }
            }))),
            // A plain course name differing from the context's: refused
            // (issue 15 §5), never the named course.
            "course-scope",
            403,
        ),
    ];
    for (i, (launch, reason, status)) in cases.into_iter().enumerate() {
        let page = w.launch(&launch).await;
        assert_eq!(page.status, status, "{reason}: {}", page.body);
        let s = scrape(&w.base).await;
        assert_eq!(refused(&s, reason), 1.0, "{reason}");
        assert_eq!(answered(&s, "refused"), (i + 1) as f64, "{reason}");
        let moved: Vec<&str> = labpool::metrics::REFUSAL_REASONS
            .iter()
            .copied()
            .filter(|r| refused(&s, r) > 0.0)
            .collect();
        assert_eq!(moved.len(), i + 1, "only {reason} moved: {moved:?}");
    }
    let s = scrape(&w.base).await;
    for word in ["attacker", "mallory"] {
        assert!(!s.text.contains(word), "{word} in:\n{}", s.text);
    }
    assert_eq!(
        s.label_values("labpool_launches_total", "course"),
        [COURSE, "python"]
    );
}

async fn get_json(url: &str) -> (u16, Value) {
    let page = Browser::new().get(url).await.unwrap();
    let body = serde_json::from_str(&page.body)
        .unwrap_or_else(|e| panic!("JSON from {url} ({e}): {}", page.body));
    (page.status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_waits_for_a_revision_and_the_store() {
    let lab = Lab::new();
    lab.course("linux", "tiny", "64MiB", 1, 2);
    let config = lab.config(&format!(
        "reconcile: {{ boots_per_host: 4, orphan_grace: 1h, backoff: 1s }}\nhosts:\n  - name: h1\n    uri: \"{}\"\n    storage_pool: labpool\n    capacity: {{ vms: 10, memory: 16GiB, vcpus: 16 }}\nimages:\n  tiny: {{ volume: base.qcow2 }}\n",
        lab.test_host("h1")
    ));
    let r = lab.reconciler(config).await;
    let app = App::new(r.clone()).await.expect("app");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(labpool::http::serve(listener, app, std::future::pending()));

    let health = Browser::new()
        .get(&format!("{base}/healthz"))
        .await
        .unwrap();
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    // No pass yet: the store answers, but no revision says what to launch.
    let (status, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["store"]["ok"], true);
    assert_eq!(body["revision"]["ok"], false);
    assert!(
        body["revision"]["detail"]
            .as_str()
            .unwrap()
            .contains("no course revision"),
        "{body}"
    );
    let s = scrape(&base).await;
    assert_eq!(s.value("labpool_store_up", &[]), 1.0);
    assert!(s.get("labpool_revision_age_seconds", &[]).is_none());
    assert!(s.label_values("labpool_vms", "course").is_empty());

    let report = r.pass().await.expect("pass");
    r.settle().await;
    let revision = report.revision.expect("a revision applied");
    let (status, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["store"]["ok"], true);
    assert_eq!(body["revision"]["ok"], true);
    assert!(
        body["revision"]["detail"]
            .as_str()
            .unwrap()
            .contains(&revision),
        "{body}"
    );
    let s = scrape(&base).await;
    assert!(s.get("labpool_revision_age_seconds", &[]).is_some());
    assert_eq!(
        s.value("labpool_vms", &[("course", "linux"), ("state", "warm")]),
        1.0
    );

    // The store gone: not ready, and the scrape still answers with the
    // counters and `labpool_store_up 0`.
    r.store().close().await;
    let (status, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["store"]["ok"], false);
    let s = scrape(&base).await;
    assert_eq!(s.value("labpool_store_up", &[]), 0.0);
    assert!(s.label_values("labpool_vms", "course").is_empty());
    assert_eq!(
        s.value(
            "labpool_actions_total",
            &[("kind", "create"), ("result", "ok")]
        ),
        1.0
    );
}

/// `labpool serve` as a child process, its stderr read line by line; killed
/// when dropped, so a failing test leaves no server behind.
struct Serve {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line read so far.
    log: Vec<String>,
}

impl Serve {
    /// The first JSON line whose message is `message`, within `limit`.
    fn wait_for(&mut self, message: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            self.log.push(line.clone());
            let parsed: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            if parsed["fields"]["message"] == message {
                return parsed;
            }
        }
        panic!(
            "no log line {message:?} within {limit:?}:\n{}",
            self.log.join("\n")
        );
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_logs_carry_the_launch_and_action_span_fields() {
    let platform = Platform::start().await.expect("platform starts");
    let lab = Lab::new();
    lab.course_text(
        COURSE,
        &format!(
            "name: {COURSE}\ntitle: Linux basics\nimage: tiny\nvm: {{ vcpus: 1, memory: 64MiB }}\npool: {{ warm: 1, max: 2 }}\n{}",
            crate::lti::lti_block(&platform, &[CONTEXT])
        ),
    );
    // `serve` listens where the configuration says, so the port is picked
    // here (and freed just before the server binds it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    std::fs::write(
        lab.path().join("labpool.yaml"),
        format!(
            "database: \"sqlite:labpool.db\"\nsource: {{ folder: courses }}\nhttp: {{ listen: \"127.0.0.1:{port}\" }}\nreconcile: {{ boots_per_host: 4, orphan_grace: 1h, backoff: 1s }}\nhosts:\n  - name: h1\n    uri: \"{host}\"\n    storage_pool: labpool\n    capacity: {{ vms: 10, memory: 16GiB, vcpus: 16 }}\nimages:\n  tiny: {{ volume: base.qcow2 }}\nlti:\n  base_url: \"{base}\"\n  platforms:\n    - issuer: \"{iss}\"\n      client_id: {CLIENT}\n      deployment_ids: [{DEPLOYMENT}]\n      auth_login_url: \"{auth}\"\n      token_url: \"{token}\"\n      jwks_url: \"{jwks}\"\n",
            host = lab.test_host("h1"),
            iss = platform.issuer(),
            auth = platform.auth_url(),
            token = platform.token_url(),
            jwks = platform.jwks_url(),
        ),
    )
    .unwrap();
    platform.register_tool(ToolRegistration::labpool_at(&base, CLIENT, DEPLOYMENT));
    // JSON chosen by the environment, as a service manager would set it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_labpool"))
        .args(["serve", "--config", "labpool.yaml"])
        .current_dir(lab.path())
        .env("LABPOOL_LOG_FORMAT", "json")
        .env("LABPOOL_LOG", "labpool=info")
        .env_remove("LABPOOL_CONFIG")
        .env_remove("LABPOOL_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let lines = crate::support::stderr_lines(&mut child);
    let mut serve = Serve {
        child,
        lines,
        log: Vec::new(),
    };

    // A boot: its lines carry the action's fields and the pass that started it.
    let warm = serve.wait_for("VM warm", Duration::from_secs(60));
    let span = &warm["span"];
    assert_eq!(span["name"], "action", "{warm}");
    assert_eq!(span["kind"], "create", "{warm}");
    assert_eq!(span["course"], COURSE, "{warm}");
    assert_eq!(span["host"], "h1", "{warm}");
    assert_eq!(span["vm"].as_str().unwrap().len(), 16, "{warm}");
    let spans = warm["spans"].as_array().unwrap();
    assert_eq!(spans[0]["name"], "pass", "{warm}");
    assert!(spans[0]["pass"].as_u64().unwrap() >= 1, "{warm}");
    // Warm is in the store by the time it is logged: ready to launch.
    let (status, body) = get_json(&format!("{base}/readyz")).await;
    assert_eq!(status, 200, "{body}");

    // A launch: its line names course, outcome and session, never the code.
    let student =
        Launch::new(CLIENT, DEPLOYMENT, "alice", "link-1").in_context(CONTEXT, "Linux 101");
    let page = Browser::new().launch(&platform, &student).await.unwrap();
    let (session, code) = session_of(&page);
    let launch = serve.wait_for("launch", Duration::from_secs(10));
    let span = &launch["span"];
    assert_eq!(span["name"], "launch", "{launch}");
    assert_eq!(span["course"], COURSE, "{launch}");
    assert_eq!(span["outcome"], "warm", "{launch}");
    assert_eq!(span["session"], session.as_str(), "{launch}");

    // A refusal: named too, by its outcome.
    let forged = student.clone().forged(Forgery::WrongKey);
    let page = Browser::new().launch(&platform, &forged).await.unwrap();
    assert_eq!(page.status, 401, "{}", page.body);
    let refused = serve.wait_for("launch refused", Duration::from_secs(10));
    assert_eq!(refused["span"]["name"], "launch", "{refused}");
    assert_eq!(refused["span"]["outcome"], "refused", "{refused}");
    assert_eq!(refused["fields"]["kind"], "forged", "{refused}");

    let _ = serve.child.kill();
    let _ = serve.child.wait();
    // The rest of the log, up to the end of the process.
    while let Ok(line) = serve.lines.recv_timeout(Duration::from_secs(5)) {
        serve.log.push(line);
    }
    for line in &serve.log {
        assert!(!line.contains(&code), "a code in the log: {line}");
    }
}
