//! `cargo bench --bench source`: how long from a commit in the course
//! repository to the desired state updated (the store's applied revision),
//! by webhook (target under 1 s) and by polling (target: within one
//! interval). Each commit is pushed after the previous one applied, and
//! the bench measures a push's latency, not a burst: webhook calls are not
//! folded (`webhook_min_interval: 0s`). Real parts: a Git repository reached over file://, labpool's
//! reconciler loop and HTTP listener, a libvirt test host.

use std::path::Path;
use std::time::{Duration, Instant};

use labpool::config::Config;
use labpool::reconcile::Reconciler;
use labpool::store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "bench-secret";
const ROUNDS: usize = 10;
const POLL_INTERVAL: &str = "2s";

fn course(warm: u32) -> String {
    format!(
        "name: lab\ntitle: Lab\nimage: tiny\nvm: {{ vcpus: 1, memory: 64MiB }}\npool: {{ warm: {warm}, max: 20 }}\n"
    )
}

fn commit(repo: &git2::Repository, text: &str, message: &str) -> String {
    let dir = repo.workdir().unwrap().to_path_buf();
    std::fs::create_dir_all(dir.join("courses")).unwrap();
    std::fs::write(dir.join("courses/lab.yaml"), text).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("courses/lab.yaml")).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("Bench", "bench@example.edu").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
        .to_string()
}

fn config(dir: &Path, remote: &Path, branch: &str, interval: &str) -> Config {
    let node = dir.join("host.xml");
    std::fs::write(
        &node,
        "<node><cpu><mhz>2000</mhz><model>x86</model><active>64</active><max>64</max><nodes>1</nodes><sockets>1</sockets><cores>64</cores><threads>1</threads></cpu><memory>67108864</memory><pool type='dir'><name>labpool</name><uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid><target><path>/fake</path></target><volume type='file'><name>base.qcow2</name><capacity unit='MiB'>64</capacity><target><path>/fake/base.qcow2</path></target></volume></pool></node>",
    )
    .unwrap();
    let text = format!(
        "database: sqlite:labpool.db\nsource:\n  git: {{ url: \"file://{}\", branch: {branch}, path: courses, interval: {interval}, webhook_secret: {SECRET}, webhook_min_interval: 0s }}\nreconcile: {{ resync: 30s, boots_per_host: 40, orphan_grace: 1h }}\nhosts:\n  - name: a\n    uri: \"test://{}\"\n    storage_pool: labpool\n    capacity: {{ vms: 40, memory: 64GiB, vcpus: 64 }}\nimages:\n  tiny: {{ volume: base.qcow2 }}\n",
        remote.display(),
        node.display()
    );
    let file = dir.join("labpool.yaml");
    std::fs::write(&file, text).unwrap();
    Config::load(&file).expect("bench config")
}

async fn post_webhook(addr: std::net::SocketAddr, body: &[u8]) {
    let signature = labpool::http::webhook::github_signature(SECRET, body);
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /hooks/git HTTP/1.1\r\nHost: {addr}\r\nX-Hub-Signature-256: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
}

/// Time from `commit` until the store's applied revision is `id`.
async fn until_applied(store: &Store, id: &str, since: Instant) -> Duration {
    loop {
        let courses = store.courses().await.unwrap();
        if courses.iter().any(|c| c.revision == id) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "revision {id} never applied"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn summary(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "source: {label}: min {:7.1} ms  median {:7.1} ms  max {:7.1} ms  ({} commits)",
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(*samples.last().unwrap()),
        samples.len()
    );
    *samples.last().unwrap()
}

async fn scenario(webhook: bool) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let remote_dir = dir.path().join("remote");
    let repo = git2::Repository::init(&remote_dir).unwrap();
    commit(&repo, &course(1), "start");
    let branch = repo.head().unwrap().shorthand().unwrap().to_string();
    let interval = if webhook { "1h" } else { POLL_INTERVAL };
    let mut config = config(dir.path(), &remote_dir, &branch, interval);
    // labpool answers only to its base URL's host and port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    config.lti.base_url = Some(format!("http://{addr}"));
    let store = Store::open(config.database.expose()).await.unwrap();
    let r = Reconciler::new(config, store.clone()).await.unwrap();
    let app = labpool::http::App::new(r.clone()).await.unwrap();
    tokio::spawn(labpool::http::serve(listener, app, std::future::pending()));
    let looping = r.clone();
    tokio::spawn(async move { looping.run(std::future::pending()).await });
    let first = repo.head().unwrap().target().unwrap().to_string();
    until_applied(&store, &first, Instant::now()).await;

    let mut samples = Vec::new();
    for round in 0..ROUNDS.min(if webhook { ROUNDS } else { 5 }) {
        let id = commit(
            &repo,
            &course(2 + round as u32 % 3),
            &format!("round {round}"),
        );
        let since = Instant::now();
        if webhook {
            // As GitHub sends it: the pushed commit in the (signed) body.
            let body = format!(r#"{{"ref":"refs/heads/main","after":"{id}"}}"#);
            post_webhook(addr, body.as_bytes()).await;
        }
        samples.push(until_applied(&store, &id, since).await);
    }
    samples
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "source: measured by `cargo bench --bench source` only; nothing to do under `cargo test`"
        );
        return;
    }
    let runtime = labpool::ops::runtime().expect("runtime");
    runtime.block_on(async {
        let worst = summary("commit → applied, by webhook", scenario(true).await);
        println!(
            "source: webhook target < 1000 ms: {}",
            if worst < Duration::from_secs(1) {
                "met"
            } else {
                "NOT met"
            }
        );
        let worst = summary(
            &format!("commit → applied, by polling every {POLL_INTERVAL}"),
            scenario(false).await,
        );
        let interval = Duration::from_secs(2);
        println!(
            "source: polling target within one interval ({POLL_INTERVAL}, plus the pass): {}",
            if worst <= interval + Duration::from_millis(500) {
                "met"
            } else {
                "NOT met"
            }
        );
    });
}
