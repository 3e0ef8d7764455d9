//! `cargo bench --bench containers`: container courses on the local Docker
//! engine (scripts/setup starts it with `deploy/dev/docker`; image
//! `labpool/busybox:1`).
//!
//! 1. **Cold start.** A container lab made from nothing until it is warm:
//!    its network, the container, its start, and the readiness check (the
//!    course's shell runs `exit 0` as the student). One at a time
//!    (`boots_per_host: 1`), each timed from the pass that creates it to the
//!    end of its boot task; also as labpool's own `vm-warm` event says.
//! 2. **Warm claim.** A student launches through the whole LTI 1.3 flow
//!    (labpool's test platform) while warm containers wait: the time of the
//!    launch post to its redirect to the session page, as the server
//!    measured it (`Server-Timing`) and as the client saw it, and of the
//!    whole flow (login initiation, the platform's authorization, the post).
//! 3. **Terminal first byte.** From that redirect: the session page, its
//!    terminal socket, and the first byte of the shell's output (a
//!    `docker exec` on a TTY).
//!
//! No pass runs between the launches, so no refill competes with them.

use std::collections::HashMap;
use std::time::Instant;

use labpool::lms::{Browser, Launch, Platform};
use labpool::reconcile::now_ms;
use labpool::store::{VmRow, VmState};

#[path = "support/bed.rs"]
mod bed;
use bed::{Bed, CLIENT, DEPLOYMENT, converge, first_output, socket_of};

/// Containers started cold, and launches then made.
const ROUNDS: usize = 10;
const COURSE: &str = "bench-containers";
const IMAGE: &str = "labpool/busybox:1";

/// Removes what a bench that failed half-way left on the engine: found by
/// the course label labpool gives its containers; nothing else goes.
struct LeftoversGo;

impl Drop for LeftoversGo {
    fn drop(&mut self) {
        let docker = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let label = format!("label=dev.labpool.course={COURSE}");
        for id in docker(&["ps", "-aq", "--filter", &label]).split_whitespace() {
            docker(&["rm", "-f", "-v", id]);
        }
        for id in docker(&["network", "ls", "-q", "--filter", &label]).split_whitespace() {
            docker(&["network", "rm", id]);
        }
    }
}

/// The course, launchable from the LMS at `issuer`.
fn course_text(warm: usize, issuer: &str) -> String {
    format!(
        "name: {COURSE}\ntitle: Containers\nruntime: container\ncontainer: {{ image: {IMAGE}, cpus: 0.5, memory: 96MiB, user: student }}\npool: {{ warm: {warm}, max: {} }}\nlti: {{ platforms: [{{ issuer: \"{issuer}\" }}], contexts: [bench-class] }}\n",
        2 * ROUNDS + 2
    )
}

async fn bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let courses = dir.path().join("courses");
    std::fs::create_dir(&courses).unwrap();
    let platform = Platform::start().await.unwrap();
    std::fs::write(
        courses.join(format!("{COURSE}.yaml")),
        course_text(0, platform.issuer()),
    )
    .unwrap();
    // orphan_grace: 1h, so another labpool's containers on this engine are
    // never this one's to collect.
    let body = format!(
        "database: \"sqlite:{db}\"\nsource: {{ folder: {courses} }}\nreconcile: {{ boots_per_host: 1, orphan_grace: 1h }}\n\
         hosts:\n  - name: docker\n    runtime: container\n    uri: unix:///var/run/docker.sock\n    capacity: {{ vms: {vms}, memory: 8GiB, vcpus: 8, cpu_overcommit: 4 }}\n",
        db = dir.path().join("labpool.db").display(),
        courses = courses.display(),
        vms = 2 * ROUNDS + 2,
    );
    bed::start(dir, platform, &body).await
}

fn warm(vms: &[VmRow]) -> usize {
    vms.iter().filter(|v| v.state == VmState::Warm).count()
}

fn p50_max(what: &str, mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "{what}: p50 {:.1} ms, max {:.1} ms (n={})",
        ms[(ms.len() - 1) / 2],
        ms[ms.len() - 1],
        ms.len()
    )
}

/// Containers made one at a time, each from its create to warm.
async fn cold_start(bed: &Bed) {
    let mut ms = Vec::new();
    for n in 1..=ROUNDS + 1 {
        std::fs::write(
            bed.dir
                .path()
                .join("courses")
                .join(format!("{COURSE}.yaml")),
            course_text(n, bed.platform.issuer()),
        )
        .unwrap();
        let start = Instant::now();
        // This pass creates one container (boots_per_host: 1); settling
        // waits for its boot task, readiness included.
        bed.reconciler.pass().await.unwrap();
        bed.reconciler.settle().await;
        let took = start.elapsed();
        let vms = bed.store.vms().await.unwrap();
        assert_eq!(
            (vms.len(), warm(&vms)),
            (n, n),
            "one more warm container: {:#?}",
            bed.store.events(5).await.unwrap()
        );
        // The first one also agrees the API version with the engine.
        if n > 1 {
            ms.push(took.as_secs_f64() * 1000.0);
        }
    }
    // labpool's own figure: from its boot task's start to warm.
    let events = bed.store.events(100).await.unwrap();
    let logged: Vec<f64> = events
        .iter()
        .filter(|e| e.kind == "vm-warm")
        .filter_map(|e| e.message.strip_prefix("ready after ")?.strip_suffix(" ms"))
        .filter_map(|ms| ms.parse().ok())
        .collect();
    println!(
        "containers: {}",
        p50_max(
            "cold start, pass creating it -> warm (network, container, start, readiness exec), one at a time",
            ms
        )
    );
    println!(
        "containers: {}",
        p50_max("cold start as labpool logs it (boot task -> warm)", logged)
    );
}

/// One launch through the whole flow: (launch post server ms, launch post
/// client ms, whole flow ms, the redirect's location).
async fn launch(bed: &Bed, student: &str) -> (f64, f64, f64, String) {
    let browser = Browser::new();
    let launch = Launch::new(CLIENT, DEPLOYMENT, student, "lab").in_context("bench-class", "Class");
    let start = Instant::now();
    let login = browser
        .get(&bed.platform.launch_url(&launch))
        .await
        .unwrap();
    let authorize = browser
        .get(login.location.as_deref().expect("login redirects"))
        .await
        .unwrap();
    let form = authorize
        .autosubmit_form()
        .expect("the platform's form post");
    let posted = Instant::now();
    let page = browser.post_form(&form.action, &form.fields).await.unwrap();
    let client = posted.elapsed().as_secs_f64() * 1000.0;
    let flow = start.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(page.status, 303, "{}", page.body);
    let location = page.location.clone().unwrap();
    assert!(location.contains("/session/"), "{location}");
    let server: f64 = page
        .header("server-timing")
        .and_then(|v| v.split("dur=").nth(1))
        .and_then(|d| d.parse().ok())
        .expect("Server-Timing");
    (server, client, flow, location)
}

async fn warm_claims(bed: &Bed) {
    let vms = converge(bed, "warm containers for every launch", |v| {
        warm(v) > ROUNDS
    })
    .await;
    let before: HashMap<String, VmState> = vms.into_iter().map(|v| (v.id, v.state)).collect();
    // A server that has served before: the platform's keys fetched, the
    // catalog loaded, connections open.
    launch(bed, "warm-up").await;
    // The page's browser: one client, as a browser keeps its own (a fresh
    // reqwest client per request costs tens of ms to set up, not labpool's).
    let page_client = reqwest::Client::new();
    let (mut server, mut client, mut flow, mut first) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        let (s, c, f, location) = launch(bed, &format!("student-{round}")).await;
        // The clock starts at the redirect: the page, then its socket.
        let start = Instant::now();
        let html = page_client.get(&location).send().await.unwrap();
        assert_eq!(html.status(), 200);
        html.text().await.unwrap();
        let page = start.elapsed();
        let (socket, _) = first_output(&socket_of(&bed.base, &location)).await;
        let total = start.elapsed().as_secs_f64() * 1000.0;
        println!(
            "  launch {}: post {s:.1} ms server-side, {c:.1} ms client-side, whole flow {f:.1} ms; redirect -> first shell byte {total:.0} ms (page {:.0} ms, socket -> byte {:.0} ms)",
            round + 1,
            page.as_secs_f64() * 1000.0,
            socket.as_secs_f64() * 1000.0
        );
        server.push(s);
        client.push(c);
        flow.push(f);
        first.push(total);
    }
    // Every launch got a container that was already warm.
    for s in bed.store.live_sessions().await.unwrap() {
        assert_eq!(
            before.get(&s.vm_id),
            Some(&VmState::Warm),
            "session {} on a container that was not warm",
            s.id
        );
    }
    println!(
        "containers: {}",
        p50_max(
            "warm claim, LTI launch post -> redirect to the session page, server-side",
            server
        )
    );
    println!(
        "containers: {}",
        p50_max("warm claim, launch post, client-side (loopback)", client)
    );
    println!(
        "containers: {}",
        p50_max(
            "warm claim, whole LTI flow (login initiation, platform authorization, launch post)",
            flow
        )
    );
    println!(
        "containers: {}",
        p50_max(
            "redirect -> session page -> terminal socket -> first shell byte",
            first
        )
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test` runs benches without --bench: this one needs Docker.
        return;
    }
    // The runtime (and allocator settings) of `labpool serve`.
    let rt = labpool::ops::runtime().unwrap();
    rt.block_on(async {
        let _leftovers = LeftoversGo;
        let bed = bed().await;
        cold_start(&bed).await;
        warm_claims(&bed).await;
        // Everything goes: the sessions end, the course is removed, and
        // labpool destroys its containers and their networks.
        for s in bed.store.live_sessions().await.unwrap() {
            bed.store
                .end_session(&s.id, "bench", now_ms())
                .await
                .unwrap();
        }
        std::fs::remove_file(
            bed.dir
                .path()
                .join("courses")
                .join(format!("{COURSE}.yaml")),
        )
        .unwrap();
        bed::confirm_removal(&bed).await;
        converge(&bed, "every container removed", |v| v.is_empty()).await;
        bed.platform.shutdown().await;
    });
}
