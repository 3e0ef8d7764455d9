//! LTI 1.3 launches, end to end: labpool's HTTP server with a reconciler on
//! libvirt test hosts, and a real LTI platform (`labpool::lms`, own keys and
//! JWKS on a loopback port) driving a scripted browser through login
//! initiation, the platform's authorization, the signed launch and the
//! redirect to the session page. Then every refusal path, Deep Linking,
//! Dynamic Registration, key rotation, and launches racing on SQLite and on
//! PostgreSQL.

use std::collections::HashSet;
use std::time::Duration;

use labpool::http::App;
use labpool::lms::{Browser, Forgery, Launch, Page, Platform, ToolRegistration};
use labpool::reconcile::Reconciler;
use labpool::store::{Store, VmState};
use serde_json::json;

use crate::lab::{Lab, converge, count};
use crate::store::PostgresDb;

pub const CLIENT: &str = "labpool-client";
pub const DEPLOYMENT: &str = "deployment-1";
pub const COURSE: &str = "linux";
pub const CONTEXT: &str = "lms-course-1";
/// The test LMSs listen on loopback: Dynamic Registration must be allowed
/// to reach it (`lti.registration.allowed_networks`).
pub const LOOPBACK_REGISTRATION: &str = "  registration: { allowed_networks: [\"127.0.0.0/8\"] }\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// labpool serving HTTP over test hosts, with one course, and a platform
/// that knows it (and that it knows).
pub struct World {
    /// Holds the temporary folder (course files, SQLite file) open.
    pub lab: Lab,
    pub gateway: labpool::terminal::gateway::Gateway,
    pub platform: Platform,
    pub base: String,
    pub reconciler: Reconciler,
    pub store: Store,
    /// The try-it LMS, in worlds served as `serve --dev` does.
    pub try_it: Option<std::sync::Arc<labpool::http::try_it::TryIt>>,
    _postgres: Option<PostgresDb>,
}

impl World {
    pub async fn new(db: Db, warm: u32, max: u32) -> World {
        World::new_with(db, warm, max, false).await
    }

    /// [`World::new`], with the try-it LMS when `dev`.
    pub async fn new_with(db: Db, warm: u32, max: u32, dev: bool) -> World {
        World::new_among(db, warm, max, dev, &[]).await
    }

    /// [`World::new_with`], with `tune` applied to the configuration
    /// before labpool starts on it.
    pub async fn new_tuned(
        db: Db,
        warm: u32,
        max: u32,
        dev: bool,
        tune: impl FnOnce(&mut labpool::config::Config),
    ) -> World {
        World::new_among_tuned(db, warm, max, dev, &[], tune).await
    }

    /// [`World::new_with`], with `others` registered as well; the courses
    /// name only the world's own platform.
    pub async fn new_among(db: Db, warm: u32, max: u32, dev: bool, others: &[Platform]) -> World {
        World::new_among_tuned(db, warm, max, dev, others, |_| {}).await
    }

    /// [`World::new_among`] with `tune` applied to the configuration.
    pub async fn new_among_tuned(
        db: Db,
        warm: u32,
        max: u32,
        dev: bool,
        others: &[Platform],
        tune: impl FnOnce(&mut labpool::config::Config),
    ) -> World {
        let platform = Platform::start().await.expect("platform starts");
        let lab = Lab::new();
        let mut hosts = String::new();
        for name in ["h1", "h2"] {
            hosts.push_str(&format!(
                "  - name: {name}\n    uri: \"{}\"\n    storage_pool: labpool\n    capacity: {{ vms: 150, memory: 64GiB, vcpus: 64, cpu_overcommit: 4 }}\n",
                lab.test_host(name)
            ));
        }
        lab.course_text(
            COURSE,
            &format!(
                "name: {COURSE}\ntitle: Linux basics\nimage: tiny\nvm: {{ vcpus: 1, memory: 64MiB }}\npool: {{ warm: {warm}, max: {max} }}\n{}",
                lti_block(&platform, &[CONTEXT])
            ),
        );
        lab.course_text(
            "python",
            &format!(
                "name: python\ntitle: Python lab\nimage: tiny\nvm: {{ vcpus: 1, memory: 64MiB }}\npool: {{ warm: 1, max: 5 }}\n{}",
                lti_block(&platform, &[])
            ),
        );
        let head = format!(
            "reconcile: {{ boots_per_host: 100, orphan_grace: 1h, backoff: 1s }}\nhosts:\n{hosts}images:\n  tiny: {{ volume: base.qcow2 }}\n"
        );
        let ready = move |vms: &[labpool::store::VmRow]| {
            count(vms, COURSE, VmState::Warm) == warm as usize
                && count(vms, "python", VmState::Warm) == 1
        };
        World::start_tuned(
            lab,
            platform,
            others,
            db,
            &head,
            "pools warm",
            ready,
            dev,
            tune,
        )
        .await
    }

    /// A world of `lab`'s courses on the hosts and images of `head` (YAML
    /// before the `lti` section), with `platform` registered, serving once
    /// the pools satisfy `ready`. Courses that launch from `platform` name
    /// it (see [`lti_block`]).
    pub async fn start(
        lab: Lab,
        platform: Platform,
        db: Db,
        head: &str,
        what: &str,
        ready: impl Fn(&[labpool::store::VmRow]) -> bool,
    ) -> World {
        World::start_with(lab, platform, db, head, what, ready, false).await
    }

    /// [`World::start`], with the try-it LMS installed as `serve --dev`
    /// installs it when `dev`.
    pub async fn start_with(
        lab: Lab,
        platform: Platform,
        db: Db,
        head: &str,
        what: &str,
        ready: impl Fn(&[labpool::store::VmRow]) -> bool,
        dev: bool,
    ) -> World {
        World::start_among(lab, platform, &[], db, head, what, ready, dev).await
    }

    /// [`World::start_with`], with `others` registered too (same client
    /// and deployment ids as `platform`): other LMSs labpool trusts.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_among(
        lab: Lab,
        platform: Platform,
        others: &[Platform],
        db: Db,
        head: &str,
        what: &str,
        ready: impl Fn(&[labpool::store::VmRow]) -> bool,
        dev: bool,
    ) -> World {
        World::start_tuned(lab, platform, others, db, head, what, ready, dev, |_| {}).await
    }

    /// [`World::start_among`], with `tune` applied to the configuration.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_tuned(
        lab: Lab,
        platform: Platform,
        others: &[Platform],
        db: Db,
        head: &str,
        what: &str,
        ready: impl Fn(&[labpool::store::VmRow]) -> bool,
        dev: bool,
        tune: impl FnOnce(&mut labpool::config::Config),
    ) -> World {
        crate::support::init_test_logs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let postgres = match db {
            Db::Postgres => Some(PostgresDb::create().await),
            Db::Sqlite => None,
        };
        let database = postgres
            .as_ref()
            .map(|p| p.url.clone())
            .unwrap_or_else(|| "sqlite:labpool.db".into());
        let others_yaml: String = others
            .iter()
            .map(|p| {
                format!(
                    "    - issuer: \"{}\"\n      client_id: {CLIENT}\n      deployment_ids: [{DEPLOYMENT}]\n      auth_login_url: \"{}\"\n      token_url: \"{}\"\n      jwks_url: \"{}\"\n",
                    p.issuer(),
                    p.auth_url(),
                    p.token_url(),
                    p.jwks_url()
                )
            })
            .collect();
        let mut config = lab.config_on(
            &database,
            &format!(
                "{head}lti:\n  base_url: \"{base}\"\n{LOOPBACK_REGISTRATION}  platforms:\n    - issuer: \"{iss}\"\n      client_id: {CLIENT}\n      deployment_ids: [{DEPLOYMENT}]\n      auth_login_url: \"{auth}\"\n      token_url: \"{token}\"\n      jwks_url: \"{jwks}\"\n{others_yaml}",
                iss = platform.issuer(),
                auth = platform.auth_url(),
                token = platform.token_url(),
                jwks = platform.jwks_url(),
            ),
        );
        tune(&mut config);
        let try_it = if dev {
            let installed = labpool::http::try_it::TryIt::install(&mut config, false).await;
            Some(installed.expect("the try-it LMS installs"))
        } else {
            None
        };
        let reconciler = lab.reconciler(config).await;
        let store = reconciler.store().clone();
        converge(&reconciler, Duration::from_secs(60), what, ready).await;
        let mut app = App::new(reconciler.clone()).await.expect("app");
        app.try_it = try_it.clone();
        let gateway = app.gateway.clone();
        tokio::spawn(labpool::http::serve(listener, app, std::future::pending()));
        for p in std::iter::once(&platform).chain(others) {
            p.register_tool(ToolRegistration::labpool_at(&base, CLIENT, DEPLOYMENT));
        }
        World {
            lab,
            platform,
            base,
            reconciler,
            store,
            gateway,
            try_it,
            _postgres: postgres,
        }
    }

    /// A one-time registration link, as `labpool lti registration-link`
    /// makes it.
    pub async fn registration_link(&self) -> String {
        let ttl = self
            .reconciler
            .config()
            .lti
            .registration
            .link_ttl
            .get()
            .as_millis() as i64;
        labpool::lti::register::make_link(
            &self.store,
            &self.base,
            ttl,
            "test",
            labpool::reconcile::now_ms(),
        )
        .await
        .expect("link made")
        .url
    }

    pub fn student(&self, user: &str) -> Launch {
        Launch::new(CLIENT, DEPLOYMENT, user, "link-1").in_context(CONTEXT, "Linux 101")
    }

    /// Launches in a fresh browser; returns the tool's final answer.
    pub async fn launch(&self, launch: &Launch) -> Page {
        Browser::new()
            .launch(&self.platform, launch)
            .await
            .expect("launch runs")
    }
}

/// A course file's `lti` block: `platform` may launch it, from `contexts`
/// without Deep Linking.
pub fn lti_block(platform: &Platform, contexts: &[&str]) -> String {
    format!(
        "lti: {{ platforms: [{{ issuer: \"{}\" }}], contexts: [{}] }}\n",
        platform.issuer(),
        contexts.join(", ")
    )
}

/// The session id and one-time code of a redirect to the session page. The
/// code is in the fragment, which no browser sends to a server; the URL has
/// no query, so nothing secret reaches a request line or an access log.
pub fn session_of(page: &Page) -> (String, String) {
    assert_eq!(page.status, 303, "a redirect to the session: {}", page.body);
    code_of(page.location.as_deref().expect("location"))
}

/// The session id and one-time code of a session page's URL.
pub fn code_of(location: &str) -> (String, String) {
    let url = url::Url::parse(location).expect("absolute URL");
    let id = url
        .path()
        .strip_prefix("/session/")
        .unwrap_or_else(|| panic!("not a session URL: {location}"))
        .to_owned();
    assert_eq!(
        url.query(),
        None,
        "nothing in the session URL's query: {location}"
    );
    let code = url
        .fragment()
        .and_then(|f| f.strip_prefix("code="))
        .unwrap_or_else(|| panic!("no code in the fragment: {location}"))
        .to_owned();
    (id, code)
}

/// A waiting page's poll, as its script makes it: the ticket's status URL,
/// with the pass from the redirect's fragment in a header (`pass: None`
/// leaves it out, as another browser would).
pub async fn poll_wait(location: &str, pass: Option<&str>) -> (u16, serde_json::Value) {
    let url = url::Url::parse(location).expect("absolute URL");
    assert_eq!(
        url.query(),
        None,
        "nothing in the waiting URL's query: {location}"
    );
    let mut status = url.clone();
    status.set_fragment(None);
    status.set_path(&format!("{}/status", url.path()));
    let mut request = reqwest::Client::new().get(status);
    if let Some(pass) = pass {
        request = request.header(labpool::http::lti::WAIT_PASS_HEADER, pass);
    }
    let response = request.send().await.unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap())
}

/// The pass in a waiting page's URL.
pub fn pass_of(location: &str) -> String {
    let url = url::Url::parse(location).expect("absolute URL");
    url.fragment()
        .and_then(|f| f.strip_prefix("pass="))
        .unwrap_or_else(|| panic!("no pass in the fragment: {location}"))
        .to_owned()
}

/// The refusal page: its status and the reason it gives.
pub fn assert_refused(page: &Page, status: u16, reason: &str) {
    assert_eq!(page.status, status, "status of: {}", page.body);
    assert!(
        page.body.contains(reason),
        "reason {reason:?} not in page: {}",
        page.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_launch_claims_a_warm_vm_and_a_relaunch_returns_to_it() {
    let w = World::new(Db::Sqlite, 2, 10).await;
    let browser = Browser::new();
    let followed = browser
        .launch_followed(&w.platform, &w.student("alice"))
        .await
        .unwrap();
    // login initiation → platform authorization → form post → session.
    assert!(followed.hops[0].starts_with(&format!("{}/lti/login?", w.base)));
    assert!(followed.hops.iter().any(|h| h.contains("/authorize")));
    let (session, code) = session_of(&followed.page);
    // Issue 15 §3: no credential in any URL the browser requests (the code
    // is only in the redirect's fragment, which is never sent).
    for hop in &followed.hops {
        assert!(!hop.contains(&code) && !hop.contains("token="), "{hop}");
    }

    // The state cookie crossed sites as a browser would let it.
    let state = browser
        .cookies()
        .into_iter()
        .find(|c| c.name.starts_with("lti_state_"))
        .expect("a state cookie");
    let attrs = state.attributes.to_ascii_lowercase();
    for wanted in ["samesite=none", "secure", "httponly", "path=/lti/"] {
        assert!(attrs.contains(wanted), "{wanted} in {attrs}");
    }

    let page = browser
        .get(followed.page.location.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&session));
    let row = w.store.session(&session).await.unwrap().expect("session");
    assert_eq!(row.key.user_sub, "alice");
    assert_eq!(row.key.context_id, CONTEXT);
    assert_eq!(row.key.resource_link_id, "link-1");
    assert_eq!(row.course, COURSE);
    let vm = w.store.vm(&row.vm_id).await.unwrap().unwrap();
    assert_eq!(vm.state, VmState::Assigned);
    // The hard expiry starts at the claim (course default 4h).
    assert_eq!(row.expires_at - row.created_at, 4 * 3600 * 1000);

    // Launching again (another browser, even) returns to the same VM with
    // a new code.
    let again = w.launch(&w.student("alice")).await;
    let (session2, code2) = session_of(&again);
    assert_eq!(session2, session);
    assert_ne!(code2, code);
    // Another student gets another VM.
    let (bob, _) = session_of(&w.launch(&w.student("bob")).await);
    let bob = w.store.session(&bob).await.unwrap().unwrap();
    assert_ne!(bob.vm_id, row.vm_id);

    // The pool refills behind the claims.
    converge(&w.reconciler, Duration::from_secs(20), "refilled", |vms| {
        count(vms, COURSE, VmState::Warm) == 2 && count(vms, COURSE, VmState::Assigned) == 2
    })
    .await;
}

/// The session page tells nobody anything (its credential goes over the
/// socket), and only labpool and the registered LMSs may frame it (issue 15
/// §7: it had no `frame-ancestors`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_session_page_is_a_shell_framed_only_by_labpool_and_its_platforms() {
    let w = World::new(Db::Sqlite, 2, 10).await;
    let (alice, _) = session_of(&w.launch(&w.student("alice")).await);
    let browser = Browser::new();
    let page = browser
        .get(&format!("{}/session/{alice}", w.base))
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        !page.body.contains(COURSE) && !page.body.contains("Linux"),
        "{}",
        page.body
    );
    // Any id gets the same shell: a request learns nothing of a session.
    let other = browser
        .get(&format!("{}/session/no-such-session", w.base))
        .await
        .unwrap();
    assert_eq!(other.status, 200);
    assert_eq!(
        other.body.replace("no-such-session", &alice),
        page.body,
        "the shell differs by session"
    );
    let csp = page.header("content-security-policy").unwrap().to_owned();
    let ancestors = csp
        .split(';')
        .map(str::trim)
        .find_map(|d| d.strip_prefix("frame-ancestors "))
        .unwrap_or_else(|| panic!("no frame-ancestors in {csp}"));
    let platform = url::Url::parse(w.platform.issuer())
        .unwrap()
        .origin()
        .ascii_serialization();
    let mut sources: Vec<&str> = ancestors.split(' ').collect();
    sources.sort();
    assert_eq!(sources, ["'self'", platform.as_str()], "{csp}");
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_forged_or_mismatched_launch_is_refused_with_its_reason() {
    let w = World::new(Db::Sqlite, 2, 10).await;
    let forged = |f: Forgery| w.student("mallory").forged(f);
    let cases: Vec<(&str, Launch, u16, &str)> = vec![
        (
            "wrong key",
            forged(Forgery::WrongKey),
            401,
            "signature does not verify",
        ),
        (
            "alg none",
            forged(Forgery::AlgNone),
            401,
            "algorithm `none` refused",
        ),
        (
            "HS256 keyed with the public key",
            forged(Forgery::Hs256WithPublicKey),
            401,
            "algorithm `HS256` refused",
        ),
        ("no kid", forged(Forgery::NoKid), 401, "no `kid`"),
        ("expired", forged(Forgery::Expired), 401, "expired"),
        (
            "wrong audience",
            forged(Forgery::Claims(
                json!({ "aud": "another-tool", "azp": null }),
            )),
            401,
            "does not contain labpool&#39;s client id",
        ),
        (
            "azp another",
            forged(Forgery::Claims(
                json!({ "aud": [CLIENT], "azp": "another-tool" }),
            )),
            401,
            "azp `another-tool` is not labpool&#39;s client id",
        ),
        (
            // Issue 15 §6: labpool's client id plus an audience it does not
            // trust, azp naming labpool, was accepted and claimed a VM.
            "an untrusted extra audience",
            forged(Forgery::Claims(
                json!({ "aud": [CLIENT, "evil-tool"], "azp": CLIENT }),
            )),
            401,
            "audience `evil-tool` is not one labpool trusts",
        ),
        (
            // Issue 15 §6: refused as "issued over an hour ago".
            "no iat",
            forged(Forgery::Claims(json!({ "iat": null }))),
            401,
            "id_token has no `iat`",
        ),
        (
            "unknown issuer",
            forged(Forgery::Claims(json!({ "iss": "https://lms.invalid" }))),
            403,
            "is not registered with labpool",
        ),
        (
            "unknown deployment",
            forged(Forgery::Claims(json!({
                "https://purl.imsglobal.org/spec/lti/claim/deployment_id": "deployment-9"
            }))),
            403,
            "deployment `deployment-9`",
        ),
        (
            "wrong version",
            forged(Forgery::Claims(json!({
                "https://purl.imsglobal.org/spec/lti/claim/version": "1.1"
            }))),
            400,
            "is not 1.3.0",
        ),
        (
            "wrong message type",
            forged(Forgery::Claims(json!({
                "https://purl.imsglobal.org/spec/lti/claim/message_type": "LtiSubmissionReviewRequest"
            }))),
            400,
            "not one labpool handles",
        ),
        (
            "no nonce",
            forged(Forgery::Claims(json!({ "nonce": null }))),
            401,
            "no nonce",
        ),
        (
            "a nonce labpool never issued",
            forged(Forgery::Nonce("made-up".into())),
            401,
            "not the one issued for this login",
        ),
        (
            "foreign target_link_uri",
            forged(Forgery::Claims(json!({
                "https://purl.imsglobal.org/spec/lti/claim/target_link_uri": "https://evil.invalid/"
            }))),
            400,
            "is not a labpool URL",
        ),
        (
            "no resource link",
            forged(Forgery::Claims(json!({
                "https://purl.imsglobal.org/spec/lti/claim/resource_link": null
            }))),
            400,
            "no resource_link.id",
        ),
    ];
    for (what, launch, status, reason) in cases {
        let page = w.launch(&launch).await;
        assert_eq!(page.status, status, "{what}: {}", page.body);
        assert!(
            page.body.contains(reason),
            "{what}: reason {reason:?} not in {}",
            page.body
        );
    }
    // Nothing was claimed by any of them.
    let vms = w.store.vms().await.unwrap();
    assert_eq!(count(&vms, COURSE, VmState::Assigned), 0);
    assert!(w.store.live_sessions().await.unwrap().is_empty());
}

/// The id_token form the platform makes the browser post, not yet posted.
async fn pending_launch(browser: &Browser, w: &World, launch: &Launch) -> labpool::lms::Form {
    let login = browser.get(&w.platform.launch_url(launch)).await.unwrap();
    assert_eq!(login.status, 303, "login redirects: {}", login.body);
    let authorize = browser
        .get(login.location.as_deref().unwrap())
        .await
        .unwrap();
    authorize
        .autosubmit_form()
        .unwrap_or_else(|| panic!("the platform's form post: {}", authorize.body))
}

pub async fn post(browser: &Browser, form: &labpool::lms::Form) -> Page {
    browser.post_form(&form.action, &form.fields).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replays_and_browsers_that_did_not_log_in_are_refused() {
    let w = World::new(Db::Sqlite, 2, 10).await;

    // The same launch posted twice: the second is a replay.
    let browser = Browser::new();
    let form = pending_launch(&browser, &w, &w.student("alice")).await;
    session_of(&post(&browser, &form).await);
    assert_refused(&post(&browser, &form).await, 401, "already used");

    // Posted from a browser that did not start the login (login CSRF):
    // no state cookie. The page offers a new window, where cookies work.
    let form = pending_launch(&Browser::new(), &w, &w.student("bob")).await;
    let elsewhere = post(&Browser::new(), &form).await;
    assert_refused(&elsewhere, 401, "no state cookie");
    assert!(elsewhere.body.contains("Open the lab in a new window"));
    assert!(elsewhere.body.contains("/lti/login?iss="));

    // Two logins in one browser, the states swapped: the nonce gives it away.
    let browser = Browser::new();
    let a = pending_launch(&browser, &w, &w.student("carol")).await;
    let b = pending_launch(&browser, &w, &w.student("carol")).await;
    let state_of = |f: &labpool::lms::Form| {
        f.fields
            .iter()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .clone()
    };
    let mut swapped = a.clone();
    for field in &mut swapped.fields {
        if field.0 == "state" {
            field.1 = state_of(&b);
        }
    }
    assert_refused(
        &post(&browser, &swapped).await,
        401,
        "not the one issued for this login",
    );
    // No state at all.
    let mut stateless = a.clone();
    stateless.fields.retain(|(k, _)| k != "state");
    assert_refused(&post(&browser, &stateless).await, 401, "no state");
    // The untouched launch still works: refusals used nothing up.
    session_of(&post(&browser, &a).await);

    // An OIDC error from the platform is shown, not ignored.
    let error = browser
        .post_form(
            &format!("{}/lti/launch", w.base),
            &[
                ("error".into(), "login_required".into()),
                ("error_description".into(), "Session expired".into()),
            ],
        )
        .await
        .unwrap();
    assert_refused(&error, 400, "login_required");

    // Login initiations that must not redirect anywhere.
    let bad_target = browser
        .get(&format!(
            "{}/lti/login?iss={}&login_hint=x&target_link_uri=https://evil.invalid/&client_id={CLIENT}",
            w.base,
            w.platform.issuer()
        ))
        .await
        .unwrap();
    assert_refused(&bad_target, 400, "is not a labpool URL");
    let unknown = browser
        .get(&format!(
            "{}/lti/login?iss=https://lms.invalid&login_hint=x&target_link_uri={}/lti/launch",
            w.base, w.base
        ))
        .await
        .unwrap();
    assert_refused(&unknown, 403, "not registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn platform_storage_stands_in_for_a_blocked_cookie() {
    let w = World::new(Db::Sqlite, 2, 10).await;
    let browser = Browser::new().with_cookies(false);
    let (login_url, mut fields) = w.platform.login_form(&w.student("dana"));
    fields.push((
        "lti_storage_target".into(),
        "post_message_forwarding".into(),
    ));
    let login = browser.post_form(&login_url, &fields).await.unwrap();
    assert_eq!(login.status, 200, "{}", login.body);
    assert!(login.body.contains("lti.put_data"));
    // What the page's script puts in the platform's storage.
    let secret = login
        .body
        .split("value = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the secret in the page")
        .to_owned();
    let next = login
        .body
        .split("next = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the next URL")
        .replace("\\u0026", "&");
    let authorize = browser.get(&next).await.unwrap();
    let mut form = authorize
        .autosubmit_form()
        .expect("the platform's form post");
    form.fields.push((
        "lti_storage_target".into(),
        "post_message_forwarding".into(),
    ));
    // No cookie: the tool asks the platform's storage first.
    let check = post(&browser, &form).await;
    assert_eq!(check.status, 200, "{}", check.body);
    assert!(check.body.contains("lti.get_data"));
    // A wrong value is refused; the right one opens the lab.
    let mut wrong = form.clone();
    wrong.fields.push(("storage_secret".into(), "guess".into()));
    assert_refused(&post(&browser, &wrong).await, 401, "platform&#39;s storage");
    let mut right = form.clone();
    right.fields.push(("storage_secret".into(), secret));

    // Issue 15 §6: the same post from another site (a page there making a
    // student's browser post an attacker's launch and secret: login CSRF)
    // is refused; so is one that names no origin.
    for origin in [Some("https://evil.example"), None] {
        let mut request = reqwest::Client::new()
            .post(&right.action)
            .form(&right.fields);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 401, "from {origin:?}");
        let body = answer.text().await.unwrap();
        assert!(body.contains("another site than labpool"), "{body}");
    }
    // From labpool's own page (the storage check's form), it opens the lab.
    session_of(&post(&browser, &right).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_course_comes_from_the_link_or_the_lms_context_or_the_instructor_is_told() {
    let w = World::new(Db::Sqlite, 2, 10).await;
    // The context id listed in the course file.
    let (s, _) = session_of(&w.launch(&w.student("erin")).await);
    assert_eq!(w.store.session(&s).await.unwrap().unwrap().course, COURSE);
    // A typed custom parameter naming the context's own course adds
    // nothing and is let through; naming another course is refused (see
    // a_typed_course_parameter_opens_nothing).
    let mut launch = w.student("erin");
    launch.custom.insert("labpool_course".into(), json!(COURSE));
    let (again, _) = session_of(&w.launch(&launch).await);
    assert_eq!(again, s);
    // Neither: the instructor is told what to configure.
    let mut unmapped =
        Launch::new(CLIENT, DEPLOYMENT, "teacher", "link-3").in_context("lms-course-9", "Networks");
    unmapped.roles = vec![labpool::lms::ROLE_INSTRUCTOR.into()];
    let page = w.launch(&unmapped).await;
    assert_eq!(page.status, 404, "{}", page.body);
    assert!(page.body.contains("lms-course-9"));
    assert!(page.body.contains("content picker"));
    assert!(
        page.body
            .contains(&format!("issuer: \"{}\"", w.platform.issuer()))
    );
    assert!(page.body.contains("<code>linux</code>"));
    // A student sees a plain message instead.
    let student = Launch::new(CLIENT, DEPLOYMENT, "sam", "link-3").in_context("lms-course-9", "N");
    let page = w.launch(&student).await;
    assert_eq!(page.status, 404);
    assert!(
        page.body
            .contains("Your instructor has not connected this link")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deep_linking_places_a_course_that_later_launches_open() {
    let w = World::new(Db::Sqlite, 2, 10).await;
    let browser = Browser::new();
    let teacher = Launch::new(CLIENT, DEPLOYMENT, "teacher", "placement")
        .in_context("lms-course-7", "Shell scripting")
        .deep_linking();
    let picker = browser.launch(&w.platform, &teacher).await.unwrap();
    assert_eq!(picker.status, 200, "{}", picker.body);
    let mut form = picker
        .forms()
        .into_iter()
        .find(|f| f.action.ends_with("/lti/deep-link"))
        .expect("the course picker");
    assert!(picker.body.contains("Python lab"));
    for field in &mut form.fields {
        if field.0 == "course" {
            field.1 = "python".into();
        }
    }
    let answer = browser
        .post_form(&format!("{}{}", w.base, form.action), &form.fields)
        .await
        .unwrap();
    let done = browser.follow(answer).await.unwrap();
    assert_eq!(done.page.status, 200, "{}", done.page.body);
    let items = w.platform.deep_link_results();
    assert_eq!(items.len(), 1, "refusals: {:?}", w.platform.refusals());
    let item = &items[0][0];
    assert_eq!(item["type"], "ltiResourceLink");
    assert_eq!(item["custom"]["labpool_course"], "python");
    assert!(item["custom"]["labpool_placement"].is_string());
    assert_eq!(item["url"], format!("{}/lti/launch", w.base));

    // A student launching the placed link lands on the chosen course,
    // through the placement labpool signed (context lms-course-7 maps to
    // no course).
    let mut student = Launch::new(CLIENT, DEPLOYMENT, "fred", "placed-link")
        .in_context("lms-course-7", "Shell scripting");
    student.custom = item["custom"].as_object().unwrap().clone();
    let (s, _) = session_of(&w.launch(&student).await);
    assert_eq!(w.store.session(&s).await.unwrap().unwrap().course, "python");
    // The placement copied into another course's link still opens python
    // (LMS course copy), and relaunching returns the same session.
    let (again, _) = session_of(&w.launch(&student).await);
    assert_eq!(again, s);
    // A placement edited by hand is refused with its reason.
    let mut edited = student.clone();
    edited.user = "gus".into();
    let token = item["custom"]["labpool_placement"].as_str().unwrap();
    edited
        .custom
        .insert("labpool_placement".into(), json!(format!("{token}x")));
    assert_refused(&w.launch(&edited).await, 403, "not one labpool signed");

    // A tampered picker form is refused.
    let mut tampered = form.clone();
    for field in &mut tampered.fields {
        if field.0 == "request" {
            field.1.push('x');
        }
    }
    let page = browser
        .post_form(&format!("{}{}", w.base, form.action), &tampered.fields)
        .await
        .unwrap();
    assert_refused(&page, 401, "course picker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamic_registration_registers_the_platform_that_then_launches() {
    let w = World::new(Db::Sqlite, 2, 10).await;
    // A second platform, known to nobody yet.
    let lms = Platform::start().await.unwrap();
    let browser = Browser::new();
    let wrong = browser
        .get(&format!(
            "{}/lti/register/guess?openid_configuration=x",
            w.base
        ))
        .await
        .unwrap();
    assert_eq!(wrong.status, 404);
    let link = w.registration_link().await;
    let registered = lms
        .register_dynamically(&browser, &link)
        .await
        .expect("registration completes");
    assert_eq!(
        registered.registration.login_url,
        format!("{}/lti/login", w.base)
    );
    assert_eq!(
        registered.registration.jwks_url,
        format!("{}/lti/jwks", w.base)
    );
    // The configuration was fetched with the registration token.
    assert!(!lms.configuration_requests().is_empty());
    // The store has the platform; a launch from it works.
    let platforms = w.store.platforms().await.unwrap();
    assert_eq!(platforms.len(), 1);
    assert_eq!(platforms[0].issuer, lms.issuer());
    assert_eq!(platforms[0].client_id, registered.client_id);
    let launch = Launch::new(
        &registered.client_id,
        &registered.deployment_id,
        "gina",
        "link-1",
    )
    .in_context(CONTEXT, "Linux 101");
    // Registered is not enough: no course names this LMS yet.
    let page = Browser::new().launch(&lms, &launch).await.unwrap();
    assert_refused(&page, 403, "course `linux` may not be launched from");
    // A course file naming it makes the launch work.
    w.lab.course_text(
        "dr-lab",
        &format!(
            "name: dr-lab\ntitle: DR lab\nimage: tiny\nvm: {{ vcpus: 1, memory: 64MiB }}\npool: {{ warm: 1, max: 2 }}\n{}",
            lti_block(&lms, &["dr-class"])
        ),
    );
    converge(
        &w.reconciler,
        Duration::from_secs(30),
        "dr-lab warm",
        |vms| count(vms, "dr-lab", VmState::Warm) == 1,
    )
    .await;
    let launch = Launch::new(
        &registered.client_id,
        &registered.deployment_id,
        "gina",
        "link-1",
    )
    .in_context("dr-class", "DR");
    let mut page = Browser::new().launch(&lms, &launch).await.unwrap();
    // The catalog of launchable courses is read again within a second.
    for _ in 0..20 {
        if page.status == 303 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        page = Browser::new().launch(&lms, &launch).await.unwrap();
    }
    let (s, _) = session_of(&page);
    let row = w.store.session(&s).await.unwrap().unwrap();
    assert_eq!(row.key.issuer, lms.issuer());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_rotate_on_both_sides_without_breaking_launches() {
    let w = World::new(Db::Sqlite, 3, 10).await;
    let jwks = |base: String| async move {
        reqwest::get(format!("{base}/lti/jwks"))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let before = jwks(w.base.clone()).await;
    let keys = before["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "RSA");
    assert_eq!(keys[0]["alg"], "RS256");
    assert_eq!(keys[0]["use"], "sig");
    let old_kid = keys[0]["kid"].as_str().unwrap().to_owned();

    // The tool's key: the new one signs, the old one stays published.
    let new_kid = labpool::lti::keys::ToolKeys::rotate(&w.store, labpool::reconcile::now_ms())
        .await
        .unwrap();
    let after = jwks(w.base.clone()).await;
    let kids: HashSet<&str> = after["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, HashSet::from([old_kid.as_str(), new_kid.as_str()]));

    // The platform's key: a launch signed with a kid labpool has not seen
    // makes it fetch the platform's JWKS again.
    let first = w.launch(&w.student("hana")).await;
    session_of(&first);
    let rotated = w.platform.rotate_key().unwrap();
    let second = w.launch(&w.student("ivan")).await;
    session_of(&second);
    assert!(
        w.platform
            .issued_tokens()
            .iter()
            .any(|t| jsonwebtoken::decode_header(&t.id_token).unwrap().kid == Some(rotated.clone())),
        "the second launch was signed with the new key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_course_says_so_with_503() {
    let w = World::new(Db::Sqlite, 1, 1).await;
    session_of(&w.launch(&w.student("jo")).await);
    let full = w.launch(&w.student("kim")).await;
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.header("retry-after"), Some("60"));
    assert!(full.body.contains("The lab is full"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canvas_configuration_names_every_endpoint() {
    let w = World::new(Db::Sqlite, 0, 5).await;
    let config: serde_json::Value = reqwest::get(format!("{}/lti/config.json", w.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        config["oidc_initiation_url"],
        format!("{}/lti/login", w.base)
    );
    assert_eq!(config["target_link_uri"], format!("{}/lti/launch", w.base));
    assert_eq!(config["public_jwk_url"], format!("{}/lti/jwks", w.base));
    let placements = &config["extensions"][0]["settings"]["placements"];
    assert_eq!(placements[0]["message_type"], "LtiDeepLinkingRequest");
}

/// Issue 15 §5: a launch with `labpool_course=alpha` from an unrelated LMS
/// course launched alpha, so any instructor on any registered LMS could
/// type the parameter and drain any pool. Now a typed name opens nothing,
/// and a course launches only from the platforms (and deployments) its
/// file names.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_typed_course_parameter_or_an_unnamed_platform_opens_nothing() {
    let platform = Platform::start().await.expect("platform starts");
    // Another LMS labpool trusts, which no course names.
    let stranger = Platform::start().await.expect("platform starts");
    let lab = Lab::new();
    let hosts = format!(
        "  - name: h1\n    uri: \"{}\"\n    storage_pool: labpool\n    capacity: {{ vms: 20, memory: 8GiB, vcpus: 16 }}\n",
        lab.test_host("h1")
    );
    let course = |name: &str, lti: String| {
        format!(
            "name: {name}\ntitle: {name}\nimage: tiny\nvm: {{ vcpus: 1, memory: 64MiB }}\npool: {{ warm: 2, max: 4 }}\n{lti}"
        )
    };
    lab.course_text(
        "alpha",
        &course("alpha", lti_block(&platform, &["alpha-class"])),
    );
    lab.course_text("beta", &course("beta", lti_block(&platform, &[CONTEXT])));
    // Only through another deployment of the same platform.
    lab.course_text(
        "gamma",
        &course(
            "gamma",
            format!(
                "lti: {{ platforms: [{{ issuer: \"{}\", deployment: deployment-2 }}], contexts: [gamma-class] }}\n",
                platform.issuer()
            ),
        ),
    );
    // Names no platform at all.
    lab.course_text(
        "delta",
        &course("delta", "lti: { contexts: [delta-class] }\n".into()),
    );
    let head = format!(
        "reconcile: {{ boots_per_host: 100, orphan_grace: 1h, backoff: 1s }}\nhosts:\n{hosts}images:\n  tiny: {{ volume: base.qcow2 }}\n"
    );
    let w = World::start_among(
        lab,
        platform,
        std::slice::from_ref(&stranger),
        Db::Sqlite,
        &head,
        "pools warm",
        |vms| {
            ["alpha", "beta", "gamma", "delta"]
                .iter()
                .all(|c| count(vms, c, VmState::Warm) == 2)
        },
        false,
    )
    .await;
    let typed = |user: &str, context: &str, course: &str| {
        let mut l =
            Launch::new(CLIENT, DEPLOYMENT, user, "link-typed").in_context(context, "Other");
        l.roles = vec![labpool::lms::ROLE_INSTRUCTOR.into()];
        l.custom.insert("labpool_course".into(), json!(course));
        l
    };
    // From an LMS course mapped to nothing, and from beta's.
    let page = w
        .launch(&typed("mallory", "unrelated-class", "alpha"))
        .await;
    assert_refused(&page, 403, "plain `labpool_course` custom parameter");
    assert_refused(
        &w.launch(&typed("mallory", CONTEXT, "alpha")).await,
        403,
        "content picker",
    );
    // From a platform the course does not name, by its own context.
    let other = Launch::new(CLIENT, DEPLOYMENT, "sam", "link-1").in_context("alpha-class", "A");
    let page = Browser::new().launch(&stranger, &other).await.unwrap();
    assert_refused(&page, 403, "course `alpha` may not be launched from");
    // Through a deployment the course does not name.
    let page = w
        .launch(&Launch::new(CLIENT, DEPLOYMENT, "sam", "link-g").in_context("gamma-class", "G"))
        .await;
    assert_refused(&page, 403, "course `gamma` may not be launched from");
    // A course that names no platform launches from none.
    let page = w
        .launch(&Launch::new(CLIENT, DEPLOYMENT, "sam", "link-d").in_context("delta-class", "D"))
        .await;
    assert_refused(&page, 403, "course `delta` may not be launched from");
    // The picker offers only what this platform and deployment may
    // launch, and a form edited to pick another course is refused.
    let teacher = Launch::new(CLIENT, DEPLOYMENT, "teacher", "p")
        .in_context("x", "X")
        .deep_linking();
    let browser = Browser::new();
    let picker = browser.launch(&w.platform, &teacher).await.unwrap();
    assert_eq!(picker.status, 200, "{}", picker.body);
    assert!(picker.body.contains("value=\"alpha\""), "{}", picker.body);
    for hidden in ["gamma", "delta"] {
        assert!(
            !picker.body.contains(&format!("value=\"{hidden}\"")),
            "{}",
            picker.body
        );
    }
    let mut form = picker
        .forms()
        .into_iter()
        .find(|f| f.action.ends_with("/lti/deep-link"))
        .expect("the course picker");
    form.fields.retain(|(k, _)| k != "course");
    form.fields.push(("course".into(), "delta".into()));
    let page = browser
        .post_form(&format!("{}{}", w.base, form.action), &form.fields)
        .await
        .unwrap();
    assert_refused(&page, 403, "course `delta` may not be launched from");
    // Nothing was claimed by any of them...
    assert!(w.store.live_sessions().await.unwrap().is_empty());
    // ...and the legitimate launch, mapped by context, works.
    let (s, _) = session_of(
        &w.launch(&Launch::new(CLIENT, DEPLOYMENT, "ann", "link-a").in_context("alpha-class", "A"))
            .await,
    );
    assert_eq!(w.store.session(&s).await.unwrap().unwrap().course, "alpha");
}

/// Issue 15 §5: a placement made on one platform opens nothing on another,
/// and a course the platform may not launch cannot be picked by editing
/// the picker's form.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_placement_opens_its_course_only_where_it_was_made() {
    let stranger = Platform::start().await.expect("platform starts");
    let w = World::new_among(Db::Sqlite, 2, 10, false, std::slice::from_ref(&stranger)).await;
    let browser = Browser::new();
    let teacher = Launch::new(CLIENT, DEPLOYMENT, "teacher", "placement")
        .in_context("lms-course-7", "Shell scripting")
        .deep_linking();
    let picker = browser.launch(&w.platform, &teacher).await.unwrap();
    let mut form = picker
        .forms()
        .into_iter()
        .find(|f| f.action.ends_with("/lti/deep-link"))
        .expect("the course picker");
    for field in &mut form.fields {
        if field.0 == "course" {
            field.1 = "python".into();
        }
    }
    let answer = browser
        .post_form(&format!("{}{}", w.base, form.action), &form.fields)
        .await
        .unwrap();
    let jwt = answer
        .autosubmit_form()
        .and_then(|f| f.fields.into_iter().find(|(k, _)| k == "JWT"))
        .expect("the signed answer")
        .1;
    let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode_claims(&jwt).unwrap();
    let custom = claims["https://purl.imsglobal.org/spec/lti-dl/claim/content_items"][0]["custom"]
        .as_object()
        .unwrap()
        .clone();
    // The same custom parameters, on a link of another LMS labpool
    // trusts: placed elsewhere, refused.
    let mut moved = Launch::new(CLIENT, DEPLOYMENT, "fred", "placed")
        .in_context("lms-course-7", "Shell scripting");
    moved.custom = custom.clone();
    let page = Browser::new().launch(&stranger, &moved).await.unwrap();
    assert_refused(&page, 403, "placed on another platform or deployment");
    // A course the platform may not launch is not in the stranger's
    // picker, and editing the form to pick it is refused.
    let teacher = Launch::new(CLIENT, DEPLOYMENT, "teacher", "p")
        .in_context("x", "X")
        .deep_linking();
    let browser = Browser::new();
    let picker = browser.launch(&stranger, &teacher).await.unwrap();
    assert_eq!(picker.status, 200, "{}", picker.body);
    assert!(!picker.body.contains("Python lab"), "{}", picker.body);
    assert!(
        picker.body.contains("No labs to choose from"),
        "{}",
        picker.body
    );
    // Without the signed value, the readable course name alone is refused.
    let mut bare = Launch::new(CLIENT, DEPLOYMENT, "fred", "placed")
        .in_context("lms-course-7", "Shell scripting");
    bare.custom
        .insert("labpool_course".into(), custom["labpool_course"].clone());
    assert_refused(&w.launch(&bare).await, 403, "plain `labpool_course`");
    assert!(w.store.live_sessions().await.unwrap().is_empty());
}

/// Issue 15 §6: Deep Linking `data` sent as a JSON object was refused (400),
/// and a Learner's Deep Linking request got the course picker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deep_linking_echoes_any_data_and_is_for_instructors_only() {
    let w = World::new(Db::Sqlite, 1, 5).await;
    let data = json!({ "state": "abc", "n": 1 });
    let teacher = Launch::new(CLIENT, DEPLOYMENT, "teacher", "placement")
        .in_context("lms-course-7", "Shell scripting")
        .deep_linking()
        .forged(Forgery::Claims(json!({
            "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings": { "data": data }
        })));
    let browser = Browser::new();
    let picker = browser.launch(&w.platform, &teacher).await.unwrap();
    assert_eq!(picker.status, 200, "{}", picker.body);
    let form = picker
        .forms()
        .into_iter()
        .find(|f| f.action.ends_with("/lti/deep-link"))
        .expect("the course picker");
    let answer = browser
        .post_form(&format!("{}{}", w.base, form.action), &form.fields)
        .await
        .unwrap();
    let jwt = answer
        .autosubmit_form()
        .and_then(|f| f.fields.into_iter().find(|(k, _)| k == "JWT"))
        .expect("the signed answer")
        .1;
    let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode_claims(&jwt).unwrap();
    assert_eq!(
        claims["https://purl.imsglobal.org/spec/lti-dl/claim/data"],
        data
    );

    // A Learner (and a role that only ends like an instructor's) is refused.
    for role in [
        labpool::lms::ROLE_LEARNER,
        "https://evil.example/roles#Instructor",
    ] {
        let mut learner = Launch::new(CLIENT, DEPLOYMENT, "sam", "placement")
            .in_context("lms-course-7", "Shell scripting")
            .deep_linking();
        learner.roles = vec![role.into()];
        let page = w.launch(&learner).await;
        assert_refused(&page, 403, "needs an instructor");
        assert!(
            !page.body.contains("/lti/deep-link"),
            "no picker for {role}"
        );
    }
}

/// Issue 15 §5: one user through 10 resource links got 2 sessions, 6 waits
/// and 2 "full", and the next student got 503. Now one lab per course per
/// user: the other links are told which lab they already have, a relaunch
/// returns the same session, and the next student gets a VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_user_cannot_take_a_pool_through_many_links() {
    let w = World::new(Db::Sqlite, 2, 8).await;
    let link = |n: usize| {
        Launch::new(CLIENT, DEPLOYMENT, "hoarder", format!("link-{n}"))
            .in_context(CONTEXT, "Linux 101")
    };
    let (first, _) = session_of(&w.launch(&link(0)).await);
    for n in 1..10 {
        let page = w.launch(&link(n)).await;
        assert_refused(&page, 409, "You already have a lab");
        assert!(
            page.body.contains("<strong>Linux basics</strong>"),
            "{}",
            page.body
        );
    }
    // The same link again is the same session, not a new one.
    let (again, _) = session_of(&w.launch(&link(0)).await);
    assert_eq!(again, first);
    assert_eq!(w.store.live_sessions().await.unwrap().len(), 1);
    // The next student is served.
    session_of(&w.launch(&w.student("next")).await);
}

// ---- races, on both databases ---------------------------------------------

/// Launches every `launch` at once, each in its own browser.
async fn launch_all(w: &World, launches: Vec<Launch>) -> Vec<Page> {
    let mut tasks = tokio::task::JoinSet::new();
    for launch in launches {
        let platform = w.platform.clone();
        tasks.spawn(async move {
            Browser::new()
                .launch(&platform, &launch)
                .await
                .expect("launch")
        });
    }
    tasks.join_all().await
}

async fn many_users_get_distinct_vms(db: Db) {
    let w = World::new(db, 200, 250).await;
    let launches = (0..200).map(|i| w.student(&format!("user-{i}"))).collect();
    let pages = launch_all(&w, launches).await;
    let sessions: Vec<String> = pages.iter().map(|p| session_of(p).0).collect();
    let mut vms = HashSet::new();
    for s in &sessions {
        let row = w.store.session(s).await.unwrap().unwrap();
        assert!(vms.insert(row.vm_id), "a VM handed out twice");
    }
    assert_eq!(vms.len(), 200);
    let assigned = count(&w.store.vms().await.unwrap(), COURSE, VmState::Assigned);
    assert_eq!(assigned, 200);
}

async fn one_user_launching_many_times_gets_one_vm(db: Db) {
    let w = World::new(db, 10, 20).await;
    let launches = (0..50).map(|_| w.student("same-user")).collect();
    let pages = launch_all(&w, launches).await;
    let sessions: HashSet<String> = pages.iter().map(|p| session_of(p).0).collect();
    assert_eq!(sessions.len(), 1, "one session for one key");
    assert_eq!(w.store.live_sessions().await.unwrap().len(), 1);
    let assigned = count(&w.store.vms().await.unwrap(), COURSE, VmState::Assigned);
    assert_eq!(assigned, 1);
}

async fn launches_beyond_the_warm_pool_wait_then_get_vms(db: Db) {
    let w = World::new(db, 100, 200).await;
    let launches = (0..150).map(|i| w.student(&format!("user-{i}"))).collect();
    let pages = launch_all(&w, launches).await;
    let mut waiting = Vec::new();
    let mut claimed = 0;
    for page in &pages {
        assert_eq!(page.status, 303, "{}", page.body);
        let location = page.location.as_deref().unwrap();
        if location.contains("/session/") {
            claimed += 1;
        } else {
            assert!(location.contains("/launch/wait/"), "{location}");
            waiting.push(location.to_owned());
        }
    }
    assert_eq!((claimed, waiting.len()), (100, 50));
    // The waiting page is a page that says so.
    let browser = Browser::new();
    let page = browser.get(&waiting[0]).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Preparing your lab"));
    let (code, status) = poll_wait(&waiting[0], Some(&pass_of(&waiting[0]))).await;
    assert_eq!((code, &status["state"]), (200, &json!("waiting")));
    // Issue 15 §3: a poll from another browser (the ticket seen in a log or
    // over a shoulder, without the pass the launch gave its own browser, or
    // with another ticket's pass) gets nothing, now or once a VM is ready.
    let strangers = [None, Some(pass_of(&waiting[1]))];
    for pass in &strangers {
        let (code, status) = poll_wait(&waiting[0], pass.as_deref()).await;
        assert_eq!((code, &status), (403, &json!({"state": "refused"})));
    }

    // The reconciler builds one VM per waiting launch; each page moves on.
    let looping = w.reconciler.clone();
    let stop = tokio::spawn(async move { looping.run(std::future::pending()).await });
    let mut ready = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ready.len() < waiting.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "waiting launches served: {}",
            ready.len()
        );
        for url in &waiting {
            if ready.contains(url) {
                continue;
            }
            if url == &waiting[0] {
                for pass in &strangers {
                    let (code, _) = poll_wait(url, pass.as_deref()).await;
                    assert_eq!(code, 403, "a stranger's poll");
                }
            }
            let (_, status) = poll_wait(url, Some(&pass_of(url))).await;
            if status["state"] == "ready" {
                let target = status["url"].as_str().unwrap().to_owned();
                // The hand-off carries a one-time code, like a launch's.
                let (_, code) = code_of(&target);
                assert!(!code.is_empty());
                assert_eq!(browser.get(&target).await.unwrap().status, 200);
                ready.insert(url.clone());
            }
        }
        w.reconciler.wake();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.abort();
    let sessions = w.store.live_sessions().await.unwrap();
    assert_eq!(sessions.len(), 150);
    let vms: HashSet<&String> = sessions.iter().map(|s| &s.vm_id).collect();
    assert_eq!(vms.len(), 150, "never two sessions on one VM");
}

macro_rules! on_both {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::Db::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::$test(super::Db::Postgres).await;
                }
            )*
        }
    };
}

on_both!(
    many_users_get_distinct_vms,
    one_user_launching_many_times_gets_one_vm,
    launches_beyond_the_warm_pool_wait_then_get_vms,
);

/// Issue 16 §4: a student of a removed course that is still draining gets
/// their live VM back through the LMS (the launch looked the course up in
/// the catalog first, found nothing and refused). Only the very binding
/// (user, LMS context, resource link) of a verified launch finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_course_still_draining_gives_its_students_their_vms_back() {
    let w = World::new(Db::Sqlite, 1, 10).await;
    let context = "drain-ctx";
    w.lab.course_text(
        "drain-lti",
        &format!(
            "name: drain-lti\ntitle: Draining lab\nimage: tiny\nvm: {{ vcpus: 1, memory: 64MiB }}\npool: {{ warm: 1, max: 3 }}\n{}",
            lti_block(&w.platform, &[context])
        ),
    );
    converge(
        &w.reconciler,
        Duration::from_secs(20),
        "drain-lti warm",
        |vms| count(vms, "drain-lti", VmState::Warm) == 1,
    )
    .await;
    let student = |user: &str, link: &str| {
        Launch::new(CLIENT, DEPLOYMENT, user, link).in_context(context, "Draining 101")
    };
    // The catalog is cached for a second: launch until it has the course.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let first = loop {
        let page = w.launch(&student("alice", "link-d")).await;
        if page.status == 303 {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "{}", page.body);
    };
    let (session, _) = session_of(&first);
    let row = w.store.session(&session).await.unwrap().unwrap();
    assert_eq!(row.course, "drain-lti");

    w.lab.remove_course("drain-lti");
    w.reconciler.pass().await.unwrap();
    w.reconciler.settle().await;
    let vms = w.store.vms().await.unwrap();
    assert_eq!(count(&vms, "drain-lti", VmState::Assigned), 1, "draining");
    assert_eq!(count(&vms, "drain-lti", VmState::Warm), 0);
    // Until the cached catalog forgets the course a new launch may still
    // wait for it: launch until the link opens nothing.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = w.launch(&student("bob", "link-d")).await;
        if page.status == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", page.body);
    }

    // Alice relaunches from the same link: her session, a new code.
    let again = w.launch(&student("alice", "link-d")).await;
    let (back, code) = session_of(&again);
    assert_eq!(back, session, "the live session of the removed course");
    assert!(!code.is_empty());
    let page = Browser::new()
        .get(again.location.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    // Its terminal names the course and its idle from the stored file.
    let mut term = crate::terminal::Term::connect(
        &w.base,
        &back,
        &crate::terminal::Cred::Code(code.clone()),
        0,
    )
    .await;
    let info = term.session_info(Duration::from_secs(10)).await;
    assert_eq!(
        (info["title"].as_str(), info["idle_ms"].as_i64()),
        (Some("Draining lab"), Some(30 * 60 * 1000)),
        "{info}"
    );
    term.close().await;

    // Not from another link, not as another user, not with a forged token.
    let other_link = w.launch(&student("alice", "link-e")).await;
    assert_eq!(other_link.status, 404, "{}", other_link.body);
    let forged = w
        .launch(&student("alice", "link-d").forged(Forgery::WrongKey))
        .await;
    assert_refused(&forged, 401, "signature does not verify");

    // Once her session ends, the link opens nothing, as for anyone.
    assert!(
        w.store
            .end_session(&session, "done", labpool::reconcile::now_ms())
            .await
            .unwrap()
    );
    let after = w.launch(&student("alice", "link-d")).await;
    assert_eq!(after.status, 404, "{}", after.body);
}
