//! The try-it LMS of `labpool serve --dev`: nothing of it without `--dev`;
//! with it, the page at `/dev/` launches through a genuine LTI 1.3 flow
//! (labpool's login, the platform's `/dev/lms/authorize`, the signed launch)
//! into a session, the same one again for the same student and course; and
//! in headless Chromium, from the page's Launch button to a command typed
//! into the terminal of a real TCG guest.

use std::time::Duration;

use fantoccini::Locator;
use labpool::http::try_it::{CLIENT_ID, DEPLOYMENT_ID, typed_user_id};
use labpool::lms::{Browser, Page};
use labpool::store::VmState;
use serde_json::json;

use crate::browser::Chrome;
use crate::lab::{Lab, count};
use crate::lti::{Db, World, session_of};
use crate::qemu::{OwnPool, qemu_config};

/// The try-it world: labpool's server as `serve --dev` runs it.
fn try_it(w: &World) -> &labpool::http::try_it::TryIt {
    w.try_it.as_deref().expect("a --dev world")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_dev_there_is_no_try_it_lms() {
    let w = World::new(Db::Sqlite, 1, 2).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in [
        "/dev",
        "/dev/",
        "/dev/lms/jwks",
        "/dev/lms/.well-known/openid-configuration",
        "/dev/lms/authorize",
    ] {
        let status = http
            .get(format!("{}{path}", w.base))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "GET {path}");
    }
    for path in ["/dev/launch", "/dev/lms/authorize", "/dev/lms/register"] {
        let status = http
            .post(format!("{}{path}", w.base))
            .form(&[("student", "ada"), ("course", "linux")])
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "POST {path}");
    }
    // Nor does labpool trust its issuer.
    let mut login = url::Url::parse(&format!("{}/lti/login", w.base)).unwrap();
    login.query_pairs_mut().extend_pairs([
        ("iss", format!("{}/dev/lms", w.base)),
        ("login_hint", "try-it-ada".into()),
        ("target_link_uri", format!("{}/lti/launch", w.base)),
        ("client_id", CLIENT_ID.into()),
        ("lti_deployment_id", DEPLOYMENT_ID.into()),
    ]);
    let login = http.get(login.as_str()).send().await.unwrap();
    assert_eq!(login.status(), 403);
}

/// Posts the try-it page's form in `browser`, follows the launch through,
/// and returns where it ended (the tool's redirect to the session) and the
/// hops taken.
async fn launch(w: &World, browser: &Browser, fields: &[(&str, &str)]) -> (Page, Vec<String>) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let first = browser
        .post_form(&format!("{}/dev/launch", w.base), &fields)
        .await
        .unwrap();
    assert_eq!(first.status, 303, "{}", first.body);
    let followed = browser.follow(first).await.unwrap();
    (followed.page, followed.hops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_try_it_page_launches_through_its_lms_into_a_session() {
    let w = World::new_with(Db::Sqlite, 3, 10, true).await;
    let issuer = format!("{}/dev/lms", w.base);
    assert_eq!(try_it(&w).platform().issuer(), issuer);
    let browser = Browser::new();

    // The page: the warning, the students, the courses with their warm VMs.
    let followed = browser.navigate(&format!("{}/dev", w.base)).await.unwrap();
    let page = followed.page;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.url.ends_with("/dev/"), "{}", page.url);
    assert!(page.body.contains("id=\"banner\""), "{}", page.body);
    assert!(page.body.contains("can launch any course as any student"));
    assert!(page.body.contains("Ada Lovelace") && page.body.contains("try-it-ada"));
    assert!(page.body.contains("Linux basics") && page.body.contains("Python lab"));
    assert!(
        page.body
            .contains("id=\"count-linux\"><span class=\"warm\">3 warm</span>"),
        "{}",
        page.body
    );
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(
        csp.starts_with("default-src 'none'; style-src 'sha256-"),
        "{csp}"
    );
    assert!(!page.body.contains("<script"), "the page needs no script");
    assert_eq!(page.header("cache-control"), Some("no-store"));

    // The platform is a real one: its configuration names its issuer.
    let config: serde_json::Value =
        reqwest::get(format!("{issuer}/.well-known/openid-configuration"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(config["issuer"], json!(issuer));

    // Launch: labpool's login, the platform's authorization, the signed
    // launch, the session.
    let ada = [("student", "ada"), ("name", ""), ("course", "linux")];
    let (page, hops) = launch(&w, &browser, &ada).await;
    assert!(
        hops[1].starts_with(&format!("{}/lti/login?", w.base)),
        "{hops:?}"
    );
    assert!(
        hops.iter()
            .any(|h| h.starts_with(&format!("{issuer}/authorize?"))),
        "{hops:?}"
    );
    assert!(hops.last().unwrap().ends_with("/lti/launch"), "{hops:?}");
    let (session, code) = session_of(&page);
    let row = w.store.session(&session).await.unwrap().expect("a session");
    assert_eq!(row.course, "linux");
    assert_eq!(row.key.issuer, issuer);
    assert_eq!(row.key.deployment_id, DEPLOYMENT_ID);
    assert_eq!(row.key.user_sub, "try-it-ada");
    let shown = browser
        .get(page.location.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert!(shown.body.contains(&session));
    // The platform signed it, and labpool verified it by the platform's kid.
    let issued = try_it(&w).platform().issued_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(
        issued[0].kid.as_deref(),
        Some(try_it(&w).platform().current_kid().as_str())
    );

    // Again, in another browser: the same session, a new code.
    let (again, _) = launch(&w, &Browser::new(), &ada).await;
    let (session2, code2) = session_of(&again);
    assert_eq!(session2, session);
    assert_ne!(code2, code);

    // Another course, another student, a typed name: sessions of their own.
    let (python, _) = launch(&w, &browser, &[("student", "ada"), ("course", "python")]).await;
    let python = session_of(&python).0;
    let (grace, _) = launch(&w, &browser, &[("student", "grace"), ("course", "linux")]).await;
    let grace = session_of(&grace).0;
    let typed = [
        ("student", "ada"),
        ("name", "Edsger Dijkstra"),
        ("course", "linux"),
    ];
    let (edsger, _) = launch(&w, &browser, &typed).await;
    let edsger = session_of(&edsger).0;
    let all = [&session, &python, &grace, &edsger];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b, "{all:?}");
        }
    }
    let row = w.store.session(&edsger).await.unwrap().unwrap();
    assert_eq!(row.key.user_sub, typed_user_id("Edsger Dijkstra"));
    let retyped = [("name", "  edsger dijkstra "), ("course", "linux")];
    let (edsger2, _) = launch(&w, &browser, &retyped).await;
    assert_eq!(session_of(&edsger2).0, edsger);
    let vms = w.store.vms().await.unwrap();
    assert_eq!(count(&vms, "linux", VmState::Assigned), 3);
    assert_eq!(count(&vms, "python", VmState::Assigned), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_try_it_page_refuses_what_it_cannot_launch() {
    let w = World::new_with(Db::Sqlite, 1, 2, true).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = |fields: Vec<(&'static str, String)>, origin: Option<&str>| {
        let mut request = http.post(format!("{}/dev/launch", w.base)).form(&fields);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let course = |c: &str| ("course", c.to_owned());
    let ada = ("student", "ada".to_owned());
    let cases = [
        (
            vec![ada.clone(), course("linux")],
            Some("http://evil.example"),
            403,
            "another site",
        ),
        (
            vec![ada.clone(), course("linux")],
            Some("null"),
            403,
            "another site",
        ),
        (
            vec![ada.clone(), course("nope")],
            None,
            400,
            "does not offer a course",
        ),
        (vec![ada.clone()], None, 400, "choose a course"),
        (
            vec![("student", "mallory".into()), course("linux")],
            None,
            400,
            "choose a student",
        ),
        (
            vec![("name", "x".repeat(81)), course("linux")],
            None,
            400,
            "too long",
        ),
    ];
    for (fields, origin, status, reason) in cases {
        let (got, body) = post(fields.clone(), origin).await;
        assert_eq!(got, status, "{fields:?}: {body}");
        assert!(body.contains(reason), "{reason:?} in {body}");
    }
    // The page's own origin launches.
    let (got, body) = post(vec![ada, course("linux")], Some(&w.base)).await;
    assert_eq!(got, 303, "{body}");
    assert!(w.store.live_sessions().await.unwrap().is_empty());
}

const COURSE: &str = "tryit-serial";
const TITLE: &str = "Try-it shell";

/// Clicks the element matching `css`.
async fn click(chrome: &Chrome, css: &str) {
    chrome
        .client()
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// On the try-it page: chooses `student` and the course, clicks Launch.
async fn launch_in(chrome: &Chrome, base: &str, student: &str) {
    chrome.goto(&format!("{base}/dev/")).await;
    chrome
        .wait_text(&format!("#count-{COURSE}"), "warm", Duration::from_secs(5))
        .await;
    click(chrome, &format!("#student-{student}")).await;
    click(chrome, &format!("#course-{COURSE}")).await;
    click(chrome, "#launch").await;
}

/// The student path of README's first command, in a real browser: the
/// try-it page, Launch, the terminal of a real guest, a command and its
/// output; the same student and course again land in the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_it_launch_in_chromium_ends_in_a_working_terminal() {
    let lab = Lab::new();
    let pool = OwnPool::create(&lab, "labpool-test-tryit", COURSE);
    lab.course_text(
        COURSE,
        &format!(
            "name: {COURSE}\ntitle: {TITLE}\nimage: busybox\nvm: {{ vcpus: 1, memory: 192MiB }}\npool: {{ warm: 1, max: 2 }}\nsession: {{ expiry: 1h, idle: 30m }}\nreadiness: {{ console_marker: GUEST-READY }}\n"
        ),
    );
    let head = qemu_config(&pool.0);
    let w = World::start_with(
        lab,
        labpool::lms::Platform::start()
            .await
            .expect("platform starts"),
        Db::Sqlite,
        &head,
        "1 warm guest",
        |vms| count(vms, COURSE, VmState::Warm) == 1,
        true,
    )
    .await;
    let chrome = Chrome::start().await;
    launch_in(&chrome, &w.base, "grace").await;
    let connected = "return document.body.dataset.state || null";
    chrome
        .wait_js(connected, json!("connected"), Duration::from_secs(30))
        .await;
    let url = chrome.client().current_url().await.unwrap();
    assert!(url.path().starts_with("/session/"), "{url}");
    let session = url.path().trim_start_matches("/session/").to_owned();
    chrome
        .wait_text("#title", TITLE, Duration::from_secs(5))
        .await;
    chrome
        .wait_text(".xterm-rows", "#", Duration::from_secs(20))
        .await;
    // The typed line shows `try''it-…`; only the output shows `tryit-…`.
    let marker = format!("{:016x}", rand::random::<u64>());
    chrome
        .type_keys(
            ".xterm-helper-textarea",
            &format!("echo try''it-{marker}\n"),
        )
        .await;
    chrome
        .wait_text(
            ".xterm-rows",
            &format!("tryit-{marker}"),
            Duration::from_secs(20),
        )
        .await;
    let row = w.store.session(&session).await.unwrap().expect("a session");
    assert_eq!(row.key.user_sub, "try-it-grace");
    assert_eq!(row.key.issuer, format!("{}/dev/lms", w.base));

    // The same student and course again: the same session, its screen kept.
    launch_in(&chrome, &w.base, "grace").await;
    chrome
        .wait_js(connected, json!("connected"), Duration::from_secs(30))
        .await;
    let again = chrome.client().current_url().await.unwrap();
    assert_eq!(again.path(), url.path(), "{again}");
    chrome
        .wait_text(
            ".xterm-rows",
            &format!("tryit-{marker}"),
            Duration::from_secs(20),
        )
        .await;

    // Another student does not get Grace's VM: the only warm one is hers,
    // so they wait for a boot.
    launch_in(&chrome, &w.base, "alan").await;
    chrome
        .wait_js(
            "return location.pathname.startsWith('/launch/wait/')",
            json!(true),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(w.store.live_sessions().await.unwrap().len(), 1);
    // The waiting page took its pass out of the address bar, polls with it,
    // and moves on by itself once the reconciler has booted Alan's VM: to
    // the session page, whose code it trades for a working terminal.
    let waiting = chrome.client().current_url().await.unwrap();
    assert_eq!(
        (waiting.query(), waiting.fragment()),
        (None, None),
        "{waiting}"
    );
    let looping = w.reconciler.clone();
    let reconciler = tokio::spawn(async move { looping.run(std::future::pending()).await });
    chrome
        .wait_js(connected, json!("connected"), Duration::from_secs(120))
        .await;
    let alan = chrome.client().current_url().await.unwrap();
    assert!(alan.path().starts_with("/session/"), "{alan}");
    assert_ne!(alan.path(), url.path());
    assert_eq!((alan.query(), alan.fragment()), (None, None), "{alan}");
    reconciler.abort();
    chrome.close().await;
    assert_eq!(w.store.live_sessions().await.unwrap().len(), 2);
}

/// `labpool serve ARGS` in a folder whose configuration listens on every
/// address, with `env`; returns the exit status and stderr. The refusal
/// comes before anything binds or boots.
fn serve_exposed(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("courses")).unwrap();
    std::fs::write(
        dir.path().join("labpool.yaml"),
        "database: \"sqlite:labpool.db\"\nhttp: { listen: \"0.0.0.0:0\" }\nhosts: []\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_labpool"))
        .arg("serve")
        .args(args)
        .current_dir(dir.path())
        .env_remove("LABPOOL_CONFIG")
        .env_remove("LABPOOL_DEV")
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        output.status.code().expect("exited"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn serve_dev_refuses_an_address_other_machines_reach() {
    let refusal = "http.listen 0.0.0.0:0 and lti.base_url http://0.0.0.0:";
    let (status, stderr) = serve_exposed(&["--dev"], &[]);
    assert_eq!(status, 1, "{stderr}");
    assert!(stderr.contains(refusal), "{stderr}");
    assert!(
        stderr.contains("are reachable beyond this machine"),
        "{stderr}"
    );
    assert!(stderr.contains("--dev-allow-remote"), "{stderr}");
    for on in ["1", "true", "yes"] {
        let (status, stderr) = serve_exposed(&[], &[("LABPOOL_DEV", on)]);
        assert_eq!(status, 1, "LABPOOL_DEV={on}: {stderr}");
        assert!(stderr.contains(refusal), "LABPOOL_DEV={on}: {stderr}");
    }
    // The override means nothing without --dev.
    let (status, stderr) = serve_exposed(&["--dev-allow-remote"], &[]);
    assert_eq!(status, 64, "{stderr}");
    assert!(stderr.contains("--dev"), "{stderr}");
}
