//! `cargo bench --bench logins`: what unauthenticated login initiations
//! cost the store (issue 15 §2: one client wrote 547 MiB in 5.3 s and the
//! SQLite file never shrank). 10,000 logins through labpool's HTTP listener,
//! each with the largest hints labpool accepts (4 KiB `login_hint` and
//! `lti_message_hint`: the worst a client can do), 16 at a time; prints the
//! SQLite file's size (database plus WAL) before, after and after pruning
//! them, and the rate. Then one more login, past `lti.logins.max_pending`
//! (default 10,000), must get 503 and store nothing. The per-client bucket
//! is set out of the way (`support/bed.rs`): every login comes from loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use labpool::lms::Platform;
use labpool::lti::login::MAX_PARAM_BYTES;
use labpool::reconcile::now_ms;

#[path = "support/bed.rs"]
mod bed;
use bed::CLIENT;

const LOGINS: usize = 10_000;
const AT_ONCE: usize = 16;

fn on_disk(dir: &std::path::Path) -> u64 {
    let size = |name: &str| {
        std::fs::metadata(dir.join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    size("labpool.db") + size("labpool.db-wal")
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "logins: measured by `cargo bench --bench logins` only; nothing to do under `cargo test`"
        );
        return;
    }
    let runtime = labpool::ops::runtime().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("courses")).unwrap();
        let platform = Platform::start().await.unwrap();
        let body = "database: \"sqlite:labpool.db\"\nsource: { folder: courses }\n";
        let bed = bed::start(dir, platform, body).await;
        let folder = bed.dir.path().to_path_buf();
        bed.store.reclaim().await.unwrap();
        let before = on_disk(&folder);

        let mut url = url::Url::parse(&format!("{}/lti/login", bed.base)).unwrap();
        let hint = "h".repeat(MAX_PARAM_BYTES);
        url.query_pairs_mut()
            .append_pair("iss", bed.platform.issuer())
            .append_pair("login_hint", &hint)
            .append_pair("lti_message_hint", &hint)
            .append_pair("target_link_uri", &format!("{}/lti/launch", bed.base))
            .append_pair("client_id", CLIENT);
        let url = Arc::new(url.to_string());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                let (http, url, next) = (http.clone(), url.clone(), next.clone());
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < LOGINS {
                        let r = http.get(url.as_str()).send().await.unwrap();
                        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let took = started.elapsed();
        let after = on_disk(&folder);
        let pending = bed.store.pending_logins(now_ms()).await.unwrap();
        assert_eq!(pending, LOGINS as i64);

        // The cap: one more is refused, and stores nothing.
        let r = http.get(url.as_str()).send().await.unwrap();
        assert_eq!(r.status(), 503, "past max_pending");
        assert_eq!(
            bed.store.pending_logins(now_ms()).await.unwrap(),
            LOGINS as i64
        );

        // Every login expired and pruned, as the reconciler's pass does.
        bed.store
            .prune_launches(now_ms() + labpool::lti::login::LOGIN_TTL_MS + 1)
            .await
            .unwrap();
        let pruned = on_disk(&folder);
        println!(
            "logins: {LOGINS} logins with {MAX_PARAM_BYTES}-byte hints in {:.2} s ({:.0}/s, {AT_ONCE} at once)",
            took.as_secs_f64(),
            LOGINS as f64 / took.as_secs_f64()
        );
        println!(
            "logins: SQLite store before {} ({before} B), after {} ({after} B, +{} B, {} B per login), after pruning {} ({pruned} B)",
            mib(before),
            mib(after),
            after.saturating_sub(before),
            after.saturating_sub(before) / LOGINS as u64,
            mib(pruned),
        );
        println!("logins: login {} past max_pending: 503, nothing stored", LOGINS + 1);
        let shrank = pruned <= before + (1 << 20);
        println!(
            "logins: target: the store gives the space back after pruning (within 1 MiB of where it started): {}",
            if shrank { "met" } else { "NOT met" }
        );
        bed.platform.shutdown().await;
    });
}
