//! The labpool the benchmarks run against: a configuration file of the
//! bench's own (its hosts, images and courses), labpool's HTTP server on a
//! loopback port, and the test LMS platform registered with it, so launches
//! go through the whole LTI 1.3 flow. Shared by several benches (each
//! includes this file); not every bench uses every piece.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use labpool::config::Config;
use labpool::http::App;
use labpool::lms::{Platform, ToolRegistration};
use labpool::reconcile::Reconciler;
use labpool::store::{Store, VmRow};
use tokio_tungstenite::tungstenite::Message;

pub const CLIENT: &str = "bench-client";
pub const DEPLOYMENT: &str = "bench-deployment";

pub struct Bed {
    pub dir: tempfile::TempDir,
    pub platform: Platform,
    pub reconciler: Reconciler,
    pub store: Store,
    pub app: App,
    pub base: String,
}

/// Starts labpool on `body` (its configuration without `lti`, which this
/// adds: the platform registered both ways) in `dir`, where the bench put
/// its course files. Every simulated student logs in from loopback, one
/// address, so the per-client login bucket is set out of the way (a class
/// of real students comes from many addresses). The simulated browsers run
/// at the lowest priority on the server's own cores, so under a burst one
/// may take longer to send its request line than a real browser on its own
/// machine ever would: the header timeout, a guard against slow clients,
/// is lifted too.
pub async fn start(dir: tempfile::TempDir, platform: Platform, body: &str) -> Bed {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let text = format!(
        "{body}http: {{ limits: {{ header_timeout: 5m }} }}\nlti:\n  base_url: \"{base}\"\n  logins: {{ burst: 100000, per_second: 100000 }}\n  platforms:\n    - issuer: \"{iss}\"\n      client_id: {CLIENT}\n      deployment_ids: [{DEPLOYMENT}]\n      auth_login_url: \"{auth}\"\n      token_url: \"{token}\"\n      jwks_url: \"{jwks}\"\n",
        iss = platform.issuer(),
        auth = platform.auth_url(),
        token = platform.token_url(),
        jwks = platform.jwks_url(),
    );
    // A PostgreSQL store needs a secret key file shared by its replicas
    // (labpool generates one only beside a SQLite file).
    let text = if body.contains("postgres") {
        let key = dir.path().join("secret.key");
        std::fs::write(&key, hex::encode(rand::random::<[u8; 32]>())).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        format!("{text}secret_key_file: secret.key\n")
    } else {
        text
    };
    let file = dir.path().join("labpool.yaml");
    std::fs::write(&file, text).unwrap();
    let config = Config::load(&file).unwrap_or_else(|e| panic!("{:#?}", e.diagnostics));
    let store = Store::open(config.database.expose()).await.unwrap();
    let reconciler = Reconciler::new(config, store.clone()).await.unwrap();
    let app = App::new(reconciler.clone()).await.unwrap();
    tokio::spawn(labpool::http::serve(
        listener,
        app.clone(),
        std::future::pending(),
    ));
    platform.register_tool(ToolRegistration::labpool_at(&base, CLIENT, DEPLOYMENT));
    Bed {
        dir,
        platform,
        reconciler,
        store,
        app,
        base,
    }
}

/// Runs reconcile passes until `done` holds for the VMs.
pub async fn converge(bed: &Bed, what: &str, done: impl Fn(&[VmRow]) -> bool) -> Vec<VmRow> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        bed.reconciler.pass().await.unwrap();
        bed.reconciler.settle().await;
        let vms = bed.store.vms().await.unwrap();
        if done(&vms) {
            return vms;
        }
        if Instant::now() > deadline {
            let events = bed.store.events(20).await.unwrap_or_default();
            panic!("{what}: not reached; VMs: {vms:#?}\nevents: {events:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Empties the course folder's effect on purpose: a revision removing every
/// course is held until an admin confirms it (README, Held revisions), so
/// one pass holds it and this confirms it, as an operator would; the next
/// pass (the caller's `converge`) applies it.
pub async fn confirm_removal(bed: &Bed) {
    bed.reconciler.pass().await.unwrap();
    bed.reconciler.settle().await;
    let held = bed
        .store
        .source_revision("held")
        .await
        .unwrap()
        .expect("a revision removing every course is held");
    labpool::admin::actions::confirm_revision(&bed.store, &held.revision, "bench")
        .await
        .unwrap();
}

/// A page's terminal socket: where it is, the origin the page is on, and
/// the page's first message (its credential: never in the URL).
pub struct PageSocket {
    pub url: String,
    pub origin: String,
    pub auth: String,
}

/// The terminal socket of the session page a launch redirected to: the
/// page trades the one-time code in the redirect's fragment for its token
/// in the socket's first message.
pub fn socket_of(base: &str, location: &str) -> PageSocket {
    let url = url::Url::parse(location).unwrap();
    let code = url
        .fragment()
        .and_then(|f| f.strip_prefix("code="))
        .unwrap_or_else(|| panic!("no code in {location}"));
    PageSocket {
        url: format!("{}{}/terminal", base.replacen("http", "ws", 1), url.path()),
        origin: base.to_owned(),
        auth: serde_json::json!({"type": "auth", "code": code, "from": 0}).to_string(),
    }
}

/// The socket of a page that already holds a session token.
pub fn socket_with_token(base: &str, session: &str, token: &str) -> PageSocket {
    PageSocket {
        url: format!(
            "{}/session/{session}/terminal",
            base.replacen("http", "ws", 1)
        ),
        origin: base.to_owned(),
        auth: serde_json::json!({"type": "auth", "token": token, "from": 0}).to_string(),
    }
}

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the socket from the page's origin and authenticates.
pub async fn open(page: &PageSocket) -> Socket {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = page.url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", page.origin.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("socket");
    ws.send(Message::Text(page.auth.clone().into()))
        .await
        .expect("auth message");
    ws
}

/// Reads frames until the first byte of console output; also says when the
/// gateway reported the console open. The clock includes the socket's
/// upgrade and the code's trade.
pub async fn first_output(page: &PageSocket) -> (Duration, Option<Duration>) {
    let start = Instant::now();
    let mut ws = open(page).await;
    let mut connected = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) if !b.is_empty() => {
                return (start.elapsed(), connected);
            }
            Ok(Some(Ok(Message::Text(t)))) if t.contains("\"connected\"") => {
                connected.get_or_insert(start.elapsed());
            }
            Ok(Some(Ok(Message::Close(c)))) => panic!("closed: {c:?}"),
            Ok(Some(Ok(_))) => {}
            other => panic!("no console output: {other:?}"),
        }
    }
}
