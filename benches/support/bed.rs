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
/// of real students comes from many addresses).
pub async fn start(dir: tempfile::TempDir, platform: Platform, body: &str) -> Bed {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let text = format!(
        "{body}lti:\n  base_url: \"{base}\"\n  logins: {{ burst: 100000, per_second: 100000 }}\n  platforms:\n    - issuer: \"{iss}\"\n      client_id: {CLIENT}\n      deployment_ids: [{DEPLOYMENT}]\n      auth_login_url: \"{auth}\"\n      token_url: \"{token}\"\n      jwks_url: \"{jwks}\"\n",
        iss = platform.issuer(),
        auth = platform.auth_url(),
        token = platform.token_url(),
        jwks = platform.jwks_url(),
    );
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

/// The terminal socket of the session page a launch redirected to.
pub fn socket_url(base: &str, location: &str, from: u64) -> String {
    let url = url::Url::parse(location).unwrap();
    let token = url
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    format!(
        "{}{}/terminal?token={token}&from={from}",
        base.replacen("http", "ws", 1),
        url.path()
    )
}

/// Reads frames until the first byte of console output; also says when the
/// gateway reported the console open.
pub async fn first_output(url: &str) -> (Duration, Option<Duration>) {
    let start = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("socket");
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
