//! Issue 15 §2 and §6: login initiation is open to anyone (it needs only a
//! public issuer), so what it stores is bounded: each parameter is capped,
//! each client address has a bucket of logins, all clients together a cap
//! of pending logins, and the SQLite file gives back what pruning frees.
//! And the platform-storage frame a login names is remembered for the
//! launch (Blackboard Learn does not send it again).

use std::net::IpAddr;

use labpool::lms::Browser;
use labpool::reconcile::now_ms;
use labpool::store::{LoginRow, Store};

use crate::lti::{CLIENT, Db, World, assert_refused, post, session_of};

/// A client that does not follow redirects, bound to `from` (loopback has
/// all of 127.0.0.0/8, so 127.0.0.2 is another address on this machine).
fn client(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// A login initiation as a platform would send it, with `headers`.
async fn login(
    w: &World,
    http: &reqwest::Client,
    hint: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut url = url::Url::parse(&format!("{}/lti/login", w.base)).unwrap();
    url.query_pairs_mut()
        .append_pair("iss", w.platform.issuer())
        .append_pair("login_hint", hint)
        .append_pair("target_link_uri", &format!("{}/lti/launch", w.base))
        .append_pair("client_id", CLIENT);
    let mut req = http.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn pending(w: &World) -> i64 {
    w.store.pending_logins(now_ms()).await.unwrap()
}

fn limits(
    burst: u32,
    per_second: u32,
    max_pending: u32,
) -> impl FnOnce(&mut labpool::config::Config) {
    move |c| {
        c.lti.logins.burst = burst;
        c.lti.logins.per_second = per_second;
        c.lti.logins.max_pending = max_pending;
    }
}

/// Attack: 2 MB hints stored for 600 s each (547 MiB in 5.3 s), echoed in
/// the 303's Location. Now: over 4 KiB is a 400 with the reason, and
/// nothing is stored.
async fn a_hint_over_the_cap_is_refused_and_nothing_is_stored(db: Db) {
    let w = World::new(db, 1, 5).await;
    let http = client("127.0.0.1");
    let huge = "h".repeat(labpool::lti::login::MAX_PARAM_BYTES + 1);
    let r = login(&w, &http, &huge, &[]).await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    let body = r.text().await.unwrap();
    assert!(body.contains("login_hint"), "{body}");
    assert!(body.contains("at most 4096"), "{body}");
    // The message hint too (a form post this time).
    let r = http
        .post(format!("{}/lti/login", w.base))
        .form(&[
            ("iss", w.platform.issuer()),
            ("login_hint", "alice"),
            ("target_link_uri", &format!("{}/lti/launch", w.base)),
            ("client_id", CLIENT),
            ("lti_message_hint", &huge),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(pending(&w).await, 0, "nothing stored");
    // A hint at the cap is fine, and so is its redirect.
    let at_cap = "h".repeat(labpool::lti::login::MAX_PARAM_BYTES);
    let r = login(&w, &http, &at_cap, &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(pending(&w).await, 1);
}

/// Attack: one client started logins as fast as it could. Now: a bucket
/// per address, then 429 with Retry-After; another address is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_from_one_address_gets_429_and_another_address_is_served() {
    let w = World::new_tuned(Db::Sqlite, 1, 5, false, limits(5, 0, 1000)).await;
    let one = client("127.0.0.1");
    for i in 0..5 {
        assert_eq!(
            login(&w, &one, "alice", &[]).await.status(),
            303,
            "login {i}"
        );
    }
    let refused = login(&w, &one, "alice", &[]).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("retry-after").is_some());
    // A forged X-Forwarded-For from an untrusted peer changes nothing.
    let spoofed = login(&w, &one, "alice", &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!(spoofed.status(), 429);
    let other = client("127.0.0.2");
    assert_eq!(login(&w, &other, "bob", &[]).await.status(), 303);
    assert_eq!(pending(&w).await, 6);
}

/// Behind a trusted proxy the client is the right-most untrusted
/// X-Forwarded-For address; from anyone else the header is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarded_for_is_honoured_only_from_a_trusted_proxy() {
    let w = World::new_tuned(Db::Sqlite, 1, 5, false, |c| {
        limits(2, 0, 1000)(c);
        c.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let proxy = client("127.0.0.1");
    let a = [("x-forwarded-for", "203.0.113.1")];
    // The client wrote the left part itself: it does not make a new client.
    let a_spoofing = [("x-forwarded-for", "6.6.6.6, 203.0.113.1")];
    assert_eq!(login(&w, &proxy, "a", &a).await.status(), 303);
    assert_eq!(login(&w, &proxy, "a", &a_spoofing).await.status(), 303);
    assert_eq!(login(&w, &proxy, "a", &a).await.status(), 429);
    let b = [("x-forwarded-for", "203.0.113.2")];
    assert_eq!(login(&w, &proxy, "b", &b).await.status(), 303);
    // 127.0.0.2 is no trusted proxy: counted as itself, whatever it claims.
    let direct = client("127.0.0.2");
    for (i, claimed) in ["203.0.113.3", "203.0.113.4"].iter().enumerate() {
        let h = [("x-forwarded-for", *claimed)];
        assert_eq!(login(&w, &direct, "c", &h).await.status(), 303, "{i}");
    }
    let h = [("x-forwarded-for", "203.0.113.5")];
    assert_eq!(login(&w, &direct, "c", &h).await.status(), 429);
}

/// Attack: many clients together (two wrote 1,072 MiB in 10 s). Now: past
/// `max_pending` logins waiting for their launch, 503 with Retry-After and
/// no new row.
async fn the_pending_cap_refuses_with_503_and_the_store_does_not_grow(db: Db) {
    let w = World::new_tuned(db, 1, 5, false, limits(1000, 0, 3)).await;
    let http = client("127.0.0.1");
    for i in 0..3 {
        assert_eq!(login(&w, &http, "alice", &[]).await.status(), 303, "{i}");
    }
    let full = login(&w, &http, "alice", &[]).await;
    assert_eq!(full.status(), 503);
    assert_eq!(
        full.headers().get("retry-after").unwrap().to_str().unwrap(),
        "60"
    );
    assert!(full.text().await.unwrap().contains("max_pending"));
    assert_eq!(pending(&w).await, 3);
    // A launch uses a login up and makes room again.
    let page = w.launch(&w.student("alice")).await;
    assert_eq!(
        page.status, 503,
        "the cap holds for the LMS too: {}",
        page.body
    );
    w.store
        .prune_launches(now_ms() + 11 * 60 * 1000)
        .await
        .unwrap();
    session_of(&w.launch(&w.student("alice")).await);
}

/// Blackboard Learn names `lti_storage_target` in the login only: a browser
/// without our cookie is still asked through the platform's storage.
async fn the_storage_target_of_the_login_serves_a_launch_without_it(db: Db) {
    let w = World::new(db, 1, 5).await;
    let browser = Browser::new().with_cookies(false);
    let (login_url, mut fields) = w.platform.login_form(&w.student("dana"));
    fields.push(("lti_storage_target".into(), "_parent".into()));
    let login = browser.post_form(&login_url, &fields).await.unwrap();
    assert_eq!(login.status, 200, "{}", login.body);
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
    // As Blackboard posts it: no lti_storage_target.
    let form = authorize
        .autosubmit_form()
        .expect("the platform's form post");
    assert!(!form.fields.iter().any(|(k, _)| k == "lti_storage_target"));
    let check = post(&browser, &form).await;
    assert_eq!(check.status, 200, "{}", check.body);
    assert!(check.body.contains("lti.get_data"), "{}", check.body);
    assert!(check.body.contains("_parent"), "{}", check.body);
    let mut wrong = form.clone();
    wrong.fields.push(("storage_secret".into(), "guess".into()));
    assert_refused(&post(&browser, &wrong).await, 401, "platform&#39;s storage");
    let mut right = form.clone();
    right.fields.push(("storage_secret".into(), secret));
    session_of(&post(&browser, &right).await);
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_hint_over_the_cap_is_refused_and_nothing_is_stored() {
        super::a_hint_over_the_cap_is_refused_and_nothing_is_stored(Db::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_pending_cap_refuses_with_503_and_the_store_does_not_grow() {
        super::the_pending_cap_refuses_with_503_and_the_store_does_not_grow(Db::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_storage_target_of_the_login_serves_a_launch_without_it() {
        super::the_storage_target_of_the_login_serves_a_launch_without_it(Db::Sqlite).await
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_hint_over_the_cap_is_refused_and_nothing_is_stored() {
        super::a_hint_over_the_cap_is_refused_and_nothing_is_stored(Db::Postgres).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_pending_cap_refuses_with_503_and_the_store_does_not_grow() {
        super::the_pending_cap_refuses_with_503_and_the_store_does_not_grow(Db::Postgres).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_storage_target_of_the_login_serves_a_launch_without_it() {
        super::the_storage_target_of_the_login_serves_a_launch_without_it(Db::Postgres).await
    }
}

fn login_row(i: usize, hint: &str, now: i64) -> LoginRow {
    LoginRow {
        state: format!("state-{i}"),
        nonce: format!("nonce-{i}"),
        issuer: "https://lms.example.edu".into(),
        client_id: "client".into(),
        deployment_id: None,
        target_link_uri: "https://labs.example.edu/lti/launch".into(),
        login_hint: hint.into(),
        message_hint: Some(hint.into()),
        storage_secret: None,
        storage_target: None,
        created_at: now,
        expires_at: now + 60_000,
        used_at: None,
    }
}

/// SQLite file and WAL size.
fn on_disk(db: &std::path::Path) -> u64 {
    let wal = db.with_extension("db-wal");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    size(db) + size(&wal)
}

/// Attack: pruned logins left a 1.1 GB file of free pages. Now the file
/// gives the space back after a prune, and a file made before (no
/// auto_vacuum) is switched when labpool opens it.
#[tokio::test]
async fn a_pruned_sqlite_store_shrinks_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("labpool.db");
    let url = format!("sqlite:{}", db.display());
    {
        // A file as labpool made it before: no auto_vacuum.
        let store = Store::open(&url).await.unwrap();
        store.close().await;
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        conn.execute("PRAGMA auto_vacuum = NONE").await.unwrap();
        conn.execute("VACUUM").await.unwrap();
        let (mode,): (i64,) = sqlx::query_as("PRAGMA auto_vacuum")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(mode, 0);
        conn.close().await.unwrap();
    }
    let store = Store::open(&url).await.unwrap();
    store.reclaim().await.unwrap();
    let empty = on_disk(&db);
    let now = now_ms();
    let hint = "x".repeat(labpool::lti::login::MAX_PARAM_BYTES);
    for i in 0..2_000 {
        store.insert_login(&login_row(i, &hint, now)).await.unwrap();
    }
    store.reclaim().await.unwrap();
    let full = on_disk(&db);
    assert!(full > empty + 10_000_000, "{empty} → {full}");
    store.prune_launches(now + 120_000).await.unwrap();
    let pruned = on_disk(&db);
    assert_eq!(store.pending_logins(now).await.unwrap(), 0);
    assert!(
        pruned < empty + 1_000_000,
        "the file gave the space back: empty {empty}, full {full}, pruned {pruned}"
    );
}
