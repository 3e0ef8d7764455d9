//! Issue 15 §4 (Dynamic Registration: SSRF and takeover) and §7 (Host,
//! admin login CSRF, security headers), each attack reproduced against a
//! real `labpool serve` router and refused. Registration runs against the
//! real test LMS (`lms::Platform`) where it should work, and against a
//! hostile server (`Hostile`, below) that plays an attacker's "platform".

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use labpool::lms::{Browser, Launch, Platform};
use labpool::store::{LinkUse, Store};
use serde_json::{Value, json};

use crate::lab::{Lab, count};
use crate::lti::{CONTEXT, Db, World, session_of};
use crate::store::PostgresDb;

const SECRET_BODY: &str = "INTERNAL-ONLY: db_password=hunter2";

/// A world whose registrations may reach loopback (the test LMSs) or not.
async fn world(db: Db, allow_loopback: bool) -> World {
    world_naming(db, allow_loopback, &[]).await
}

/// [`world`], whose course may also be launched from `also` (LMSs a test
/// registers dynamically: a course names the platforms it launches from).
async fn world_naming(db: Db, allow_loopback: bool, also: &[&Platform]) -> World {
    let platform = Platform::start().await.expect("platform starts");
    let lab = Lab::new();
    let hosts = format!(
        "  - name: h1\n    uri: \"{}\"\n    storage_pool: labpool\n    capacity: {{ vms: 20, memory: 64GiB, vcpus: 64 }}\n",
        lab.test_host("h1")
    );
    let issuers: Vec<String> = std::iter::once(&platform)
        .chain(also.iter().copied())
        .map(|p| format!("{{ issuer: \"{}\" }}", p.issuer()))
        .collect();
    lab.course_text(
        "linux",
        &format!(
            "name: linux\ntitle: Linux basics\nimage: tiny\nvm: {{ vcpus: 1, memory: 64MiB }}\npool: {{ warm: 1, max: 5 }}\nlti: {{ platforms: [{}], contexts: [{CONTEXT}] }}\n",
            issuers.join(", ")
        ),
    );
    let head = format!(
        "reconcile: {{ boots_per_host: 10, orphan_grace: 1h, backoff: 1s }}\nhosts:\n{hosts}images:\n  tiny: {{ volume: base.qcow2 }}\n"
    );
    World::start_tuned(
        lab,
        platform,
        &[],
        db,
        &head,
        "1 warm",
        |vms| count(vms, "linux", labpool::store::VmState::Warm) == 1,
        false,
        move |config| {
            // Worlds allow loopback (the test LMSs) by default.
            if !allow_loopback {
                config.lti.registration.allowed_networks.clear();
            }
        },
    )
    .await
}

/// What the hostile server answers and what it saw.
#[derive(Default)]
struct Script {
    /// The openid configuration served at /config (None: 500 with a secret).
    config: Option<Value>,
    /// The registration answer (None: 500 with a secret).
    client_id: Option<String>,
    hits: Vec<String>,
}

/// An attacker's server on a loopback port of its own.
#[derive(Clone)]
struct Hostile {
    base: String,
    script: Arc<Mutex<Script>>,
}

impl Hostile {
    async fn start() -> Hostile {
        let script = Arc::new(Mutex::new(Script::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        async fn config(State(s): State<Arc<Mutex<Script>>>) -> axum::response::Response {
            let mut s = s.lock().unwrap();
            s.hits.push("config".into());
            match &s.config {
                Some(c) => axum::Json(c.clone()).into_response(),
                None => (StatusCode::INTERNAL_SERVER_ERROR, SECRET_BODY).into_response(),
            }
        }
        async fn register(State(s): State<Arc<Mutex<Script>>>) -> axum::response::Response {
            let mut s = s.lock().unwrap();
            s.hits.push("register".into());
            match &s.client_id {
                Some(id) => axum::Json(json!({ "client_id": id })).into_response(),
                None => (StatusCode::INTERNAL_SERVER_ERROR, SECRET_BODY).into_response(),
            }
        }
        let app = axum::Router::new()
            .route("/config", axum::routing::get(config))
            .route("/register", axum::routing::post(register))
            .with_state(script.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Hostile { base, script }
    }

    /// A configuration naming `issuer`, with this server's endpoints.
    fn configuration(&self, issuer: &str, jwks: &str) -> Value {
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{}/authorize", self.base),
            "registration_endpoint": format!("{}/register", self.base),
            "jwks_uri": jwks,
            "token_endpoint": format!("{}/token", self.base),
        })
    }

    fn set(&self, config: Option<Value>, client_id: Option<&str>) {
        let mut s = self.script.lock().unwrap();
        s.config = config;
        s.client_id = client_id.map(str::to_owned);
    }

    fn hits(&self) -> Vec<String> {
        self.script.lock().unwrap().hits.clone()
    }
}

/// Opens `link` as an LMS would, naming `config_url`.
async fn open(link: &str, config_url: &str) -> labpool::lms::Page {
    let mut url = url::Url::parse(link).unwrap();
    url.query_pairs_mut()
        .append_pair("openid_configuration", config_url)
        .append_pair("registration_token", "tok");
    Browser::new().get(url.as_str()).await.unwrap()
}

fn assert_generic(page: &labpool::lms::Page) {
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(
        page.body.contains("could not read the platform"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("hunter2"), "{}", page.body);
    assert!(!page.body.contains("INTERNAL-ONLY"), "{}", page.body);
}

/// The page of a refused registration without the URL it was given
/// (which differs per case by design): what a prober learns.
fn refusal_text(page: &labpool::lms::Page) -> (u16, String) {
    (page.status, page.body.clone())
}

// Attack (§4): the static, reusable secret in the path. A link works once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registration_link_works_once_and_a_reused_or_expired_one_is_refused() {
    for db in [Db::Sqlite, Db::Postgres] {
        let lms = Platform::start().await.unwrap();
        let w = world_naming(db, true, &[&lms]).await;
        let link = w.registration_link().await;
        let registered = lms
            .register_dynamically(&Browser::new(), &link)
            .await
            .expect("the first use registers");
        // The same link again, by the same LMS or anyone else: refused
        // before anything is fetched.
        let other = Platform::start().await.unwrap();
        let before = other.configuration_requests().len();
        let again = open(&link, &other.openid_configuration_url()).await;
        assert_eq!(again.status, 404, "{db:?}: {}", again.body);
        assert!(again.body.contains("used already"), "{}", again.body);
        assert_eq!(other.configuration_requests().len(), before);
        // An expired link.
        let now = labpool::reconcile::now_ms();
        let expired = labpool::lti::register::make_link(&w.store, &w.base, -1, "test", now)
            .await
            .unwrap();
        let page = open(&expired.url, &other.openid_configuration_url()).await;
        assert_eq!(page.status, 404, "{}", page.body);
        assert!(page.body.contains("expired"), "{}", page.body);
        assert!(other.configuration_requests().is_empty());
        // The static secret of old is no link at all.
        let page = open(
            &format!("{}/lti/register/let-me-register", w.base),
            &other.openid_configuration_url(),
        )
        .await;
        assert_eq!(page.status, 404);
        // The registered platform launches.
        let launch = Launch::new(
            &registered.client_id,
            &registered.deployment_id,
            "gina",
            "l1",
        )
        .in_context(CONTEXT, "Linux 101");
        session_of(&Browser::new().launch(&lms, &launch).await.unwrap());
    }
}

/// One link, spent by many requests at once: exactly one wins, on both
/// databases (a replica each would be the same store).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_link_is_spent_once_under_concurrent_use() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PostgresDb::create().await;
    let sqlite = format!("sqlite:{}/l.db", dir.path().display());
    for url in [sqlite.as_str(), pg.url.as_str()] {
        let store = Store::open(url).await.unwrap();
        let now = labpool::reconcile::now_ms();
        store
            .insert_registration_link("h", "test", now, now + 60_000)
            .await
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let store = store.clone();
            tasks.spawn(async move { store.spend_registration_link("h", now).await.unwrap() });
        }
        let uses = tasks.join_all().await;
        assert_eq!(
            uses.iter().filter(|u| **u == LinkUse::Spent).count(),
            1,
            "{url}: {uses:?}"
        );
        assert!(
            uses.iter()
                .all(|u| matches!(u, LinkUse::Spent | LinkUse::Used))
        );
        assert_eq!(
            store.spend_registration_link("nope", now).await.unwrap(),
            LinkUse::Unknown
        );
    }
}

// Attack (§4): loopback, private, metadata and oddly spelt addresses were
// fetched; a non-2xx body was reflected; open and closed ports differed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn internal_addresses_are_refused_with_one_generic_page() {
    let w = world(Db::Sqlite, false).await;
    let hostile = Hostile::start().await;
    let port = url::Url::parse(&hostile.base).unwrap().port().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut pages = Vec::new();
    for config_url in [
        format!("{}/config", hostile.base),
        format!("http://0x7f000001:{port}/config"),
        format!("http://2130706433:{port}/config"),
        format!("http://127.1:{port}/config"),
        format!("http://[::ffff:127.0.0.1]:{port}/config"),
        format!("http://localhost:{port}/config"),
        format!("http://127.0.0.1:{closed}/config"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fd00:ec2::254]/".to_owned(),
        "http://10.0.0.1/config".to_owned(),
        "http://192.168.0.1/config".to_owned(),
        "http://100.64.0.1/config".to_owned(),
        "http://[fe80::1]/config".to_owned(),
    ] {
        let page = open(&w.registration_link().await, &config_url).await;
        assert_generic(&page);
        pages.push(refusal_text(&page));
    }
    // Nothing reached the hostile server, and every page is the same.
    assert!(hostile.hits().is_empty(), "{:?}", hostile.hits());
    assert!(pages.windows(2).all(|p| p[0] == p[1]), "{pages:#?}");
}

// Attack (§4): a 500 body holding a secret appeared on the refusal page,
// from the configuration fetch and from the registration POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remote_body_never_reaches_the_page() {
    let w = world(Db::Sqlite, true).await;
    let hostile = Hostile::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // The configuration answers 500 with a secret.
    hostile.set(None, None);
    let from_config = open(
        &w.registration_link().await,
        &format!("{}/config", hostile.base),
    )
    .await;
    assert_generic(&from_config);
    // The configuration is fine, the registration answers 500 with a secret.
    hostile.set(
        Some(hostile.configuration(&hostile.base, &format!("{}/jwks", hostile.base))),
        None,
    );
    let from_post = open(
        &w.registration_link().await,
        &format!("{}/config", hostile.base),
    )
    .await;
    assert_generic(&from_post);
    assert_eq!(hostile.hits(), ["config", "config", "register"]);
    // A closed port reads exactly as both.
    let page = open(
        &w.registration_link().await,
        &format!("http://127.0.0.1:{closed}/config"),
    )
    .await;
    assert_eq!(refusal_text(&page), refusal_text(&from_config));
    assert_eq!(refusal_text(&page), refusal_text(&from_post));
    assert!(w.store.platforms().await.unwrap().is_empty());
}

// Attack (§4): a configuration on another port of the LMS's host named the
// LMS as its issuer (the check ignored the port) and took it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_issuer_on_another_port_is_refused() {
    let w = world(Db::Sqlite, true).await;
    let hostile = Hostile::start().await;
    // The victim is the world's platform, http://127.0.0.1:<its port>.
    let victim = w.platform.issuer().to_owned();
    hostile.set(
        Some(hostile.configuration(&victim, &format!("{}/jwks", hostile.base))),
        Some(crate::lti::CLIENT),
    );
    let page = open(
        &w.registration_link().await,
        &format!("{}/config", hostile.base),
    )
    .await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(page.body.contains("scheme, host and port"), "{}", page.body);
    assert_eq!(hostile.hits(), ["config"]);
    assert!(w.store.platforms().await.unwrap().is_empty());
    // The victim still launches.
    session_of(&w.launch(&w.student("victim")).await);
}

// Attack (§4): re-registering an existing issuer and client id replaced its
// jwks_url (ON CONFLICT … DO UPDATE). Now 409, and the row is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registration_never_replaces_an_existing_one() {
    for db in [Db::Sqlite, Db::Postgres] {
        let w = world(db, true).await;
        let lms = Hostile::start().await;
        let jwks = format!("{}/jwks", lms.base);
        lms.set(Some(lms.configuration(&lms.base, &jwks)), Some("client-1"));
        let first = open(
            &w.registration_link().await,
            &format!("{}/config", lms.base),
        )
        .await;
        assert_eq!(first.status, 200, "{db:?}: {}", first.body);
        // The same issuer and client id again, same keys: 409.
        let again = open(
            &w.registration_link().await,
            &format!("{}/config", lms.base),
        )
        .await;
        assert_eq!(again.status, 409, "{}", again.body);
        assert!(
            again.body.contains("labpool lti platform remove"),
            "{}",
            again.body
        );
        // The same issuer with other keys (the takeover): 409 before
        // labpool even registers at the endpoint.
        lms.set(
            Some(lms.configuration(&lms.base, &format!("{}/attacker-jwks", lms.base))),
            Some("client-1"),
        );
        let hits = lms.hits().len();
        let takeover = open(
            &w.registration_link().await,
            &format!("{}/config", lms.base),
        )
        .await;
        assert_eq!(takeover.status, 409, "{}", takeover.body);
        assert_eq!(
            lms.hits().len(),
            hits + 1,
            "only the configuration was read"
        );
        let rows = w.store.platforms().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].jwks_url, jwks);
        // Removing it on purpose lets a registration in again.
        assert!(
            w.store
                .delete_platform(&lms.base, "client-1")
                .await
                .unwrap()
        );
        let replaced = open(
            &w.registration_link().await,
            &format!("{}/config", lms.base),
        )
        .await;
        assert_eq!(replaced.status, 200, "{}", replaced.body);
        assert_eq!(
            w.store.platforms().await.unwrap()[0].jwks_url,
            format!("{}/attacker-jwks", lms.base)
        );
    }
}

// The platform JWKS of a dynamic registration goes through the same
// guard: a world that does not allow loopback never fetches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dynamic_platforms_jwks_is_fetched_only_from_allowed_addresses() {
    let w = world(Db::Sqlite, false).await;
    let lms = Platform::start().await.unwrap();
    // Stored as if registered earlier, when loopback was allowed.
    w.store
        .insert_platform(&labpool::store::PlatformRow {
            issuer: lms.issuer().into(),
            client_id: "dyn".into(),
            auth_login_url: lms.auth_url(),
            token_url: lms.token_url(),
            jwks_url: lms.jwks_url(),
            deployment_ids: "[]".into(),
            product: None,
            registered_at: 0,
        })
        .await
        .unwrap();
    lms.register_tool(labpool::lms::ToolRegistration::labpool_at(
        &w.base, "dyn", "d1",
    ));
    let page = Browser::new()
        .launch(
            &lms,
            &Launch::new("dyn", "d1", "u", "l").in_context(CONTEXT, "x"),
        )
        .await
        .unwrap();
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(w.store.live_sessions().await.unwrap().is_empty());
}

// Attack (§7): any Host was accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_for_another_host_is_refused() {
    let w = world(Db::Sqlite, true).await;
    let http = reqwest::Client::new();
    for path in ["/lti/jwks", "/admin/login", "/lti/config.json"] {
        let r = http
            .get(format!("{}{path}", w.base))
            .header("host", "evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 421, "{path}");
        let ok = http.get(format!("{}{path}", w.base)).send().await.unwrap();
        assert_eq!(ok.status(), 200, "{path}");
    }
    // Probes by address still work.
    let r = http
        .get(format!("{}/healthz", w.base))
        .header("host", "10.1.2.3:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

// Attack (§7): /admin/login accepted a cross-site post (login CSRF).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cross_site_admin_login_is_refused() {
    let w = world(Db::Sqlite, true).await;
    let (_, token) = labpool::admin::tokens::create(
        &w.store,
        "attacker",
        labpool::admin::Scope::Read,
        labpool::reconcile::now_ms(),
    )
    .await
    .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |headers: Vec<(&'static str, String)>| {
        let mut r = http
            .post(format!("{}/admin/login", w.base))
            .form(&[("token", token.as_str())]);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        async move { r.send().await.unwrap() }
    };
    for forged in [
        vec![("origin", "https://evil.example".to_owned())],
        vec![("origin", "null".to_owned())],
        vec![
            ("sec-fetch-site", "cross-site".to_owned()),
            ("origin", w.base.clone()),
        ],
        vec![("referer", "https://evil.example/page".to_owned())],
    ] {
        let r = login(forged.clone()).await;
        assert_eq!(r.status(), 403, "{forged:?}");
        assert!(r.headers().get("set-cookie").is_none(), "{forged:?}");
    }
    let own = login(vec![
        ("origin", w.base.clone()),
        ("sec-fetch-site", "same-origin".into()),
    ])
    .await;
    assert_eq!(own.status(), 303);
    assert!(own.headers().get("set-cookie").is_some());
}

// Attack (§7): LTI pages had no CSP and no nosniff.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lti_pages_carry_security_headers() {
    let w = world(Db::Sqlite, true).await;
    let http = reqwest::Client::new();
    for path in [
        "/lti/register/nope?openid_configuration=x",
        "/launch/wait/nope",
        "/admin/login",
        "/lti/jwks",
    ] {
        let r = http.get(format!("{}{path}", w.base)).send().await.unwrap();
        let h = r.headers();
        assert_eq!(
            h.get("x-content-type-options").unwrap(),
            "nosniff",
            "{path}"
        );
        // base_url is http here: no HSTS.
        assert!(h.get("strict-transport-security").is_none(), "{path}");
        if h.get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/html")
        {
            let csp = h
                .get("content-security-policy")
                .expect(path)
                .to_str()
                .unwrap();
            assert!(csp.starts_with("default-src 'none'"), "{path}: {csp}");
            assert!(
                !csp.contains("unsafe-inline") || path == "/admin/login",
                "{path}: {csp}"
            );
        }
    }
}

// Attack (§7): the try-it page trusted `Origin == Host`; a cross-site post
// with both forged launched a lab.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_origin_and_host_do_not_launch_from_the_try_it_page() {
    let w = World::new_with(Db::Sqlite, 1, 2, true).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = |host: Option<&str>, origin: &str| {
        let mut r = http
            .post(format!("{}/dev/launch", w.base))
            .form(&[("student", "ada"), ("course", "linux")])
            .header("origin", origin);
        if let Some(host) = host {
            r = r.header("host", host);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    // Both forged: the Host is not labpool's.
    assert_eq!(post(Some("evil.example"), "http://evil.example").await, 421);
    // Origin forged to match the (real) Host's spelling of another name.
    assert_eq!(post(None, "http://evil.example").await, 403);
    assert!(w.store.live_sessions().await.unwrap().is_empty());
    // labpool's own origin launches.
    assert_eq!(post(None, &w.base).await, 303);
}

/// The admin's two ways to make a link: the CLI and the dashboard (admin
/// scope, CSRF-checked like the other dashboard actions). Both links work;
/// `labpool lti platform remove` removes what one registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admins_make_links_with_the_cli_and_the_dashboard() {
    let w = world(Db::Sqlite, true).await;
    let dir = w.lab.path();
    let made = crate::support::labpool_in(
        dir,
        &["lti", "registration-link", "--config", "labpool.yaml"],
    );
    assert_eq!(made.status, 0, "{made:?}");
    let cli_link = made.stdout.trim().to_owned();
    assert!(
        cli_link.starts_with(&format!("{}/lti/register/", w.base)),
        "{cli_link}"
    );
    assert!(made.stderr.contains("shown only now"), "{}", made.stderr);
    let lms = Platform::start().await.unwrap();
    let registered = lms
        .register_dynamically(&Browser::new(), &cli_link)
        .await
        .expect("the CLI's link registers");

    let now = labpool::reconcile::now_ms();
    let (_, admin) =
        labpool::admin::tokens::create(&w.store, "root", labpool::admin::Scope::Admin, now)
            .await
            .unwrap();
    let (_, reader) =
        labpool::admin::tokens::create(&w.store, "look", labpool::admin::Scope::Read, now)
            .await
            .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = |token: &str| {
        http.post(format!("{}/admin/registration-link", w.base))
            .bearer_auth(token)
            .form(&[("csrf", "")])
            .send()
    };
    assert_eq!(post(&reader).await.unwrap().status(), 403);
    let page = post(&admin).await.unwrap();
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    let start = body
        .find(&format!("{}/lti/register/", w.base))
        .expect(&body);
    let link: String = body[start..].chars().take_while(|c| *c != '"').collect();
    let other = Platform::start().await.unwrap();
    other
        .register_dynamically(&Browser::new(), &link)
        .await
        .expect("the dashboard's link registers");
    assert_eq!(w.store.platforms().await.unwrap().len(), 2);
    let removed = crate::support::labpool_in(
        dir,
        &[
            "lti",
            "platform",
            "remove",
            lms.issuer(),
            &registered.client_id,
            "--config",
            "labpool.yaml",
        ],
    );
    assert_eq!(removed.status, 0, "{removed:?}");
    assert_eq!(w.store.platforms().await.unwrap().len(), 1);
}
