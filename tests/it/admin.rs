//! The admin API and the dashboard: every documented route refuses callers
//! without a valid token (401) and read tokens where it acts (403); tokens
//! are stored only as hashes; ending, resetting, draining and resyncing do
//! what they say on real test hosts; and in headless Chromium the dashboard
//! shows the pools, ends a session and shows the pool refill.

use std::time::Duration;

use labpool::admin::{Scope, tokens};
use labpool::reconcile::now_ms;
use labpool::store::VmState;
use serde_json::{Value, json};

use crate::lab::{converge, count};
use crate::lti::{COURSE, Db, World, session_of};
use crate::support::labpool_in;

/// The world's tokens: one per scope, and a revoked one.
struct Tokens {
    read: String,
    admin: String,
    revoked: String,
}

async fn tokens(w: &World) -> Tokens {
    let now = now_ms();
    let (_, read) = tokens::create(&w.store, "reader", Scope::Read, now)
        .await
        .unwrap();
    let (_, admin) = tokens::create(&w.store, "operator", Scope::Admin, now)
        .await
        .unwrap();
    let (_, revoked) = tokens::create(&w.store, "gone", Scope::Admin, now)
        .await
        .unwrap();
    assert!(w.store.revoke_api_token("gone", now).await.unwrap());
    Tokens {
        read,
        admin,
        revoked,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn call(method: &str, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = match method {
        "get" => client().get(url),
        "post" => client().post(url),
        other => panic!("method {other}"),
    };
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = res.status().as_u16();
    if status == 401 {
        assert_eq!(
            res.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some(r#"Bearer realm="labpool""#),
            "{method} {url}"
        );
    }
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {url}: not JSON ({e}): {text}"));
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_wants_a_valid_token_and_acting_wants_admin() {
    let w = World::new(Db::Sqlite, 2, 5).await;
    let t = tokens(&w).await;
    let (session, _) = session_of(&w.launch(&w.student("ana")).await);
    let vm = w.store.session(&session).await.unwrap().unwrap().vm_id;

    // The description needs no token and lists every route.
    let (status, doc) = call("get", &format!("{}/api/v1/openapi.json", w.base), None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 13, "{paths:?}");
    let mut checked = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let url = format!(
                "{}{}",
                w.base,
                path.replace(
                    "{name}",
                    if path.starts_with("/api/v1/hosts") {
                        "h2"
                    } else {
                        COURSE
                    }
                )
                .replace(
                    "{id}",
                    if path.starts_with("/api/v1/vms") {
                        &vm
                    } else {
                        &session
                    }
                )
            );
            for (who, token) in [
                ("no token", None),
                ("not a labpool token", Some("hello")),
                (
                    "unknown token",
                    Some("lpt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                ),
                ("revoked token", Some(t.revoked.as_str())),
            ] {
                let (status, body) = call(method, &url, token).await;
                assert_eq!(status, 401, "{method} {path} with {who}: {body}");
                assert_eq!(body["error"], "unauthorized");
            }
            let scope = op["x-labpool-scope"].as_str().unwrap();
            if scope == "admin" {
                let (status, body) = call(method, &url, Some(&t.read)).await;
                assert_eq!(status, 403, "{method} {path} with a read token: {body}");
                assert_eq!(body["error"], "forbidden");
            } else {
                for token in [&t.read, &t.admin] {
                    let (status, body) = call(method, &url, Some(token)).await;
                    assert_eq!(status, 200, "{method} {path}: {body}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked} operations checked");

    // Reads say what is there.
    let get = |path: &str| {
        let url = format!("{}/api/v1{path}", w.base);
        let token = t.read.clone();
        async move { call("get", &url, Some(&token)).await.1 }
    };
    let pools = get("/pools").await;
    let linux = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == COURSE)
        .unwrap();
    assert_eq!(linux["assigned"], 1, "{linux}");
    assert_eq!(linux["max"], 5);
    let sessions = get("/sessions").await;
    assert_eq!(sessions.as_array().unwrap().len(), 1);
    assert_eq!(sessions[0]["id"], session.as_str());
    assert_eq!(sessions[0]["student"], "ana");
    assert!(sessions[0]["time_left_ms"].as_i64().unwrap() > 0);
    let course = get(&format!("/courses/{COURSE}")).await;
    assert_eq!(course["course"]["spec"]["pool"]["max"], 5);
    assert_eq!(course["sessions"][0]["id"], session.as_str());
    let warm = get(&format!("/vms?course={COURSE}&state=warm")).await;
    assert!(
        warm.as_array()
            .unwrap()
            .iter()
            .all(|v| v["state"] == "warm" && v["course"] == COURSE)
    );
    let (status, _) = call(
        "get",
        &format!("{}/api/v1/vms?state=sleepy", w.base),
        Some(&t.read),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        "get",
        &format!("{}/api/v1/sessions/nope", w.base),
        Some(&t.read),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        "get",
        &format!("{}/api/v1/nothing-here", w.base),
        Some(&t.read),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stored_as_hashes_and_revocable_from_the_command_line() {
    let w = World::new(Db::Sqlite, 1, 3).await;
    let dir = w.lab.path();
    let made = labpool_in(
        dir,
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--scope",
            "admin",
            "--config",
            "labpool.yaml",
        ],
    );
    assert_eq!(made.status, 0, "{made:?}");
    let secret = made.stdout.trim().to_string();
    assert!(secret.starts_with("lpt_") && secret.len() > 40, "{secret}");
    assert!(made.stderr.contains("shown only now"), "{}", made.stderr);

    // Nowhere in the database: not in any row, not in the files' bytes.
    let rows = w.store.api_tokens().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].token_sha256, tokens::hash(&secret));
    assert!(!format!("{rows:?}").contains(&secret));
    // Read by another process: opening and closing the database's files
    // here would drop this process's POSIX locks on them (SQLite's own
    // connections in this test among them) and corrupt what comes next.
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("labpool.db")
        })
        .collect();
    assert!(!files.is_empty(), "the SQLite files were looked at");
    let grep = std::process::Command::new("grep")
        .args(["-a", "-l", "-F", "-e", &secret])
        .args(&files)
        .output()
        .expect("grep runs");
    assert_eq!(
        grep.status.code(),
        Some(1),
        "the token is in {}",
        String::from_utf8_lossy(&grep.stdout)
    );

    // The token works, a second of the same name is refused, revoking stops it.
    let url = format!("{}/api/v1/hosts", w.base);
    assert_eq!(call("get", &url, Some(&secret)).await.0, 200);
    let again = labpool_in(
        dir,
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--config",
            "labpool.yaml",
        ],
    );
    assert_eq!(again.status, 1, "{again:?}");
    assert!(
        again.stderr.contains("labpool token revoke ci"),
        "{}",
        again.stderr
    );
    let list = labpool_in(dir, &["token", "list", "--config", "labpool.yaml"]);
    assert!(
        list.stdout.contains("ci") && list.stdout.contains("admin"),
        "{list:?}"
    );
    assert!(!list.stdout.contains(&secret));
    let revoked = labpool_in(dir, &["token", "revoke", "ci", "--config", "labpool.yaml"]);
    assert_eq!(revoked.status, 0, "{revoked:?}");
    let rows = w.store.api_tokens().await.unwrap();
    if rows[0].revoked_at.is_none() {
        // Seen once under heavy load, not reproduced since: say what a
        // fresh connection sees, to tell a lost write from a stale read.
        let url = format!("sqlite:{}/labpool.db", dir.display());
        let fresh = labpool::store::Store::open(&url).await.unwrap();
        panic!(
            "the revoke is not visible in labpool's store: {rows:?}; a fresh connection sees {:?}",
            fresh.api_tokens().await.unwrap()
        );
    }
    assert_eq!(call("get", &url, Some(&secret)).await.0, 401);
    assert!(
        w.store.api_tokens().await.unwrap()[0]
            .last_used_at
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_reset_drain_and_resync_act_on_the_pools() {
    let w = World::new(Db::Sqlite, 2, 6).await;
    let t = tokens(&w).await;
    let post = |path: String| {
        let url = format!("{}/api/v1{path}", w.base);
        let token = t.admin.clone();
        async move { call("post", &url, Some(&token)).await }
    };
    let launch = w.student("ben");
    let (session, _) = session_of(&w.launch(&launch).await);
    let first_vm = w.store.session(&session).await.unwrap().unwrap().vm_id;

    // Reset: same session, a fresh VM; the old one is destroyed, the pool refills.
    let (status, done) = post(format!("/sessions/{session}/reset")).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["old_vm"], first_vm.as_str());
    let second_vm = done["new_vm"].as_str().unwrap().to_string();
    assert_ne!(second_vm, first_vm);
    let row = w.store.session(&session).await.unwrap().unwrap();
    assert_eq!(row.vm_id, second_vm);
    assert!(row.ended_at.is_none());
    converge(
        &w.reconciler,
        Duration::from_secs(30),
        "old VM gone, pool refilled",
        |vms| {
            vms.iter().all(|v| v.id != first_vm)
                && count(vms, COURSE, VmState::Warm) == 2
                && count(vms, COURSE, VmState::Assigned) == 1
        },
    )
    .await;
    // A relaunch returns to the same session, now on the fresh VM.
    let (again, _) = session_of(&w.launch(&launch).await);
    assert_eq!(again, session);
    let events = w.store.events(20).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "session-reset" && e.message.contains("operator"))
    );

    // Drain h1: nothing new there, its warm VMs move to h2, ben's VM stays.
    let vms = w.store.vms().await.unwrap();
    let ben_host = vms.iter().find(|v| v.id == second_vm).unwrap().host.clone();
    let (status, host) = post(format!("/hosts/{ben_host}/drain")).await;
    assert_eq!(status, 200, "{host}");
    assert_eq!(host["draining"], true);
    converge(
        &w.reconciler,
        Duration::from_secs(30),
        "warm VMs off the drained host",
        |vms| {
            vms.iter()
                .filter(|v| v.host == ben_host)
                .all(|v| v.state == VmState::Assigned)
                && count(vms, COURSE, VmState::Warm) == 2
                && count(vms, "python", VmState::Warm) == 1
        },
    )
    .await;
    assert!(
        w.store
            .vms()
            .await
            .unwrap()
            .iter()
            .any(|v| v.id == second_vm && v.state == VmState::Assigned)
    );
    let (status, host) = post(format!("/hosts/{ben_host}/undrain")).await;
    assert_eq!((status, &host["draining"]), (200, &json!(false)));
    let (status, _) = post("/hosts/nowhere/drain".into()).await;
    assert_eq!(status, 404);

    // End: the session is over, its VM destroyed, the pool refills.
    let (status, ended) = post(format!("/sessions/{session}/end")).await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["end_reason"], "ended by operator");
    converge(
        &w.reconciler,
        Duration::from_secs(30),
        "ended session's VM gone",
        |vms| vms.iter().all(|v| v.id != second_vm) && count(vms, COURSE, VmState::Warm) == 2,
    )
    .await;
    let (status, _) = post(format!("/sessions/{session}/end")).await;
    assert_eq!(status, 404, "ending twice");
    let (status, body) = post(format!("/sessions/{session}/reset")).await;
    assert_eq!(status, 404, "{body}");

    // Resync is accepted (the reconciler is asked to fetch now).
    let (status, body) = post("/resync".into()).await;
    assert_eq!((status, body), (202, json!({ "accepted": true })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resetting_with_no_warm_vm_is_refused_and_changes_nothing() {
    let w = World::new(Db::Sqlite, 1, 1).await;
    let t = tokens(&w).await;
    let (session, _) = session_of(&w.launch(&w.student("cy")).await);
    let vm = w.store.session(&session).await.unwrap().unwrap().vm_id;
    let url = format!("{}/api/v1/sessions/{session}/reset", w.base);
    let (status, body) = call("post", &url, Some(&t.admin)).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("no warm VM"),
        "{body}"
    );
    assert_eq!(w.store.session(&session).await.unwrap().unwrap().vm_id, vm);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_shows_pools_and_ends_a_session() {
    let w = World::new(Db::Sqlite, 2, 5).await;
    let t = tokens(&w).await;
    let (session, _) = session_of(&w.launch(&w.student("dee")).await);
    let chrome = crate::browser::Chrome::start().await;

    // Without a login the dashboard sends you to sign in; a bad token stays there.
    chrome.goto(&format!("{}/admin", w.base)).await;
    chrome
        .wait_text("h1", "labpool dashboard", Duration::from_secs(10))
        .await;
    chrome.type_keys("input[name=token]", "lpt_wrong\n").await;
    chrome
        .wait_text(".error", "not valid", Duration::from_secs(10))
        .await;
    chrome
        .type_keys("input[name=token]", &format!("{}\n", t.admin))
        .await;

    // The pools, as the store has them (the claim took one warm VM; no
    // reconciler pass has refilled it yet).
    let row = |course: &str, field: &str| {
        format!(
            "const r = document.querySelector('tr[data-course=\"{course}\"]'); return r ? r.dataset.{field} : null"
        )
    };
    chrome
        .wait_js(
            &row(COURSE, "assigned"),
            json!("1"),
            Duration::from_secs(10),
        )
        .await;
    chrome
        .wait_js(&row(COURSE, "warm"), json!("1"), Duration::from_secs(10))
        .await;
    chrome
        .wait_js(&row("python", "warm"), json!("1"), Duration::from_secs(10))
        .await;
    chrome
        .wait_text(
            &format!("tr[data-session=\"{session}\"]"),
            "dee",
            Duration::from_secs(10),
        )
        .await;

    // End the session from the page.
    chrome
        .client()
        .execute(
            &format!("document.querySelector('tr[data-session=\"{session}\"] form[action$=\"/end\"] button').click()"),
            vec![],
        )
        .await
        .unwrap();
    chrome
        .wait_text(".note", "Session ended", Duration::from_secs(10))
        .await;
    let ended = w.store.session(&session).await.unwrap().unwrap();
    assert_eq!(ended.end_reason.as_deref(), Some("ended by operator"));

    // The reconciler destroys the VM and refills; the page, refreshing
    // itself, shows it.
    converge(
        &w.reconciler,
        Duration::from_secs(30),
        "pool refilled",
        |vms| count(vms, COURSE, VmState::Assigned) == 0 && count(vms, COURSE, VmState::Warm) == 2,
    )
    .await;
    chrome
        .wait_js(
            &row(COURSE, "assigned"),
            json!("0"),
            Duration::from_secs(15),
        )
        .await;
    chrome
        .wait_js(&row(COURSE, "warm"), json!("2"), Duration::from_secs(15))
        .await;
    chrome
        .wait_text(
            "body",
            "Nobody is in a lab right now",
            Duration::from_secs(15),
        )
        .await;

    // A read-only login sees no buttons that act.
    chrome.goto(&format!("{}/admin/login", w.base)).await;
    chrome
        .type_keys("input[name=token]", &format!("{}\n", t.read))
        .await;
    chrome
        .wait_text("header", "reader", Duration::from_secs(10))
        .await;
    chrome
        .wait_js(
            "return document.querySelectorAll('form[action^=\"/admin/hosts\"]').length",
            json!(0),
            Duration::from_secs(5),
        )
        .await;
    chrome.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_description_is_valid_openapi_3_1() {
    let w = World::new(Db::Sqlite, 1, 2).await;
    let (status, doc) = call("get", &format!("{}/api/v1/openapi.json", w.base), None).await;
    assert_eq!(status, 200);
    let file = w.lab.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    // An independent validator (scripts/setup installs it).
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))\nprint('valid')",
        ])
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the description:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 15 §5: read tokens could not be scoped, so an instructor's token
/// saw every course. A token made with `--course linux` sees linux only:
/// in lists, by name (404 for others), on the dashboard; hosts are 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_course_scoped_read_token_sees_only_its_courses() {
    let w = World::new(Db::Sqlite, 1, 3).await;
    let (linux, _) = session_of(&w.launch(&w.student("alice")).await);
    // A python session, claimed directly (python maps no LMS context).
    let python = w
        .store
        .courses()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "python")
        .unwrap();
    let now = now_ms();
    let mut key = w.store.session(&linux).await.unwrap().unwrap().key;
    key.resource_link_id = "python-link".into();
    let py = w
        .store
        .claim("python", &python.spec_hash, &key, now, now + 3_600_000)
        .await
        .unwrap()
        .expect("a warm python VM");
    // `labpool token create --scope read --course linux`, through the CLI.
    let create = |name: &str, scope: &str| {
        labpool_in(
            w.lab.path(),
            &[
                "token",
                "create",
                "--name",
                name,
                "--scope",
                scope,
                "--course",
                COURSE,
                "--config",
                "labpool.yaml",
            ],
        )
    };
    let out = create("teacher", "read");
    assert_eq!(out.status, 0, "{out:?}");
    let token = out.stdout.trim().to_owned();
    // Course scopes are for read tokens only.
    let refused = create("x", "admin");
    assert_ne!(refused.status, 0, "{refused:?}");

    let api = |path: &str| format!("{}/api/v1{path}", w.base);
    let names = |v: &Value, field: &str| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x[field].as_str().unwrap().to_owned())
            .collect()
    };
    let (s, courses) = call("get", &api("/courses"), Some(&token)).await;
    assert_eq!((s, names(&courses, "name")), (200, vec![COURSE.to_owned()]));
    let (_, pools) = call("get", &api("/pools"), Some(&token)).await;
    assert_eq!(names(&pools, "name"), [COURSE]);
    let (_, sessions) = call("get", &api("/sessions"), Some(&token)).await;
    assert_eq!(names(&sessions, "id"), std::slice::from_ref(&linux));
    let (_, vms) = call("get", &api("/vms"), Some(&token)).await;
    assert!(names(&vms, "course").iter().all(|c| c == COURSE), "{vms}");
    let (_, events) = call("get", &api("/events?limit=1000"), Some(&token)).await;
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["course"] == COURSE),
        "{events}"
    );
    for hidden in [
        "/courses/python".to_owned(),
        format!("/sessions/{}", py.session.id),
        format!("/vms/{}", py.vm.id),
    ] {
        assert_eq!(
            call("get", &api(&hidden), Some(&token)).await.0,
            404,
            "{hidden}"
        );
    }
    assert_eq!(call("get", &api("/hosts"), Some(&token)).await.0, 403);
    assert_eq!(call("get", &api("/hosts/h1"), Some(&token)).await.0, 403);
    // Its own course by name works.
    assert_eq!(
        call("get", &api(&format!("/courses/{COURSE}")), Some(&token))
            .await
            .0,
        200
    );

    // The dashboard shows the same.
    let page = client()
        .get(format!("{}/admin", w.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Linux basics") && html.contains(&linux),
        "{html}"
    );
    assert!(
        !html.contains("Python lab") && !html.contains(&py.session.id),
        "{html}"
    );
    // An unscoped read token still sees both.
    let all = tokens(&w).await;
    let (_, courses) = call("get", &api("/courses"), Some(&all.read)).await;
    assert_eq!(names(&courses, "name").len(), 2);
}
