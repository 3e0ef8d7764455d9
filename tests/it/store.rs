//! The state store. Every test is written once and run twice: on SQLite (a
//! file in a temporary directory) and on PostgreSQL (a fresh database on the
//! server at `LABPOOL_TEST_POSTGRES`, which scripts/setup provides, dropped
//! afterwards). An unreachable server fails the PostgreSQL half: a store
//! that is only tested on SQLite is not tested.

use std::collections::HashSet;
use std::future::Future;
use std::ops::Deref;

use labpool::store::{
    Backend, CourseRow, LaunchOutcome, LaunchRequest, LoginRow, NewEvent, SessionKey, Store,
    StoreError, VmRow, VmState, WaitOutcome,
};
use sqlx::{Connection, Executor};

/// Generates `store::sqlite::NAME` and `store::postgres::NAME` for each test.
macro_rules! on_both {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::on_sqlite(super::$test).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    super::on_postgres(super::$test).await;
                }
            )*
        }
    };
}

on_both!(
    migrations_are_idempotent,
    hosts_are_listed_by_name_and_track_status_flips,
    courses_are_upserted_listed_and_forgotten,
    vms_are_inserted_listed_and_moved_by_compare_and_set,
    deleting_a_vm_ends_its_live_session,
    claim_takes_the_oldest_warm_vm_of_the_right_spec,
    claim_resumes_and_ends_sessions,
    concurrent_claims_never_share_a_vm,
    concurrent_claims_with_one_key_make_one_session,
    events_come_newest_first,
    old_events_are_pruned_in_bounded_batches,
    one_lease_holder_at_a_time,
    a_batch_of_launches_is_decided_in_one_go,
    a_code_is_redeemed_once_even_by_racing_replicas,
    a_user_holds_labs_up_to_the_course_and_global_limits,
    one_users_launches_racing_on_two_connections_get_one_lab,
    a_held_revision_is_confirmed_by_its_exact_id_only,
    a_store_has_one_instance_id_for_every_replica,
    foreign_objects_are_replaced_per_host_and_new_instances_said_once,
);

/// Issue 16 §1: the instance id is made once and kept; replicas opening the
/// same store (at once, too) read the same id.
async fn a_store_has_one_instance_id_for_every_replica(db: Db) {
    let id = db.instance_id().await.unwrap();
    assert!(labpool::hosts::xml::is_instance_id(&id), "{id}");
    let opens = (0..4).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move {
            Store::open(&url)
                .await
                .unwrap()
                .instance_id()
                .await
                .unwrap()
        })
    });
    for other in opens {
        assert_eq!(other.await.unwrap(), id);
    }
    assert_eq!(db.instance_id().await.unwrap(), id);
}

async fn foreign_objects_are_replaced_per_host_and_new_instances_said_once(db: Db) {
    let seen = |list: &[(&str, i64)]| -> Vec<(String, i64)> {
        list.iter().map(|(i, n)| (i.to_string(), *n)).collect()
    };
    let new = db
        .set_foreign_objects("a", &seen(&[("aaaaaaaaaaaa", 2), ("legacy", 1)]), 10)
        .await
        .unwrap();
    assert_eq!(new, vec!["aaaaaaaaaaaa".to_string(), "legacy".to_string()]);
    db.set_foreign_objects("b", &seen(&[("bbbbbbbbbbbb", 4)]), 10)
        .await
        .unwrap();
    // The next pass: one instance still there (counted anew), one gone.
    let new = db
        .set_foreign_objects("a", &seen(&[("aaaaaaaaaaaa", 3)]), 20)
        .await
        .unwrap();
    assert!(new.is_empty(), "{new:?}");
    let rows: Vec<(String, String, i64, i64, i64)> = db
        .foreign_objects()
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.host, f.instance, f.objects, f.first_seen_at, f.seen_at))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("a".into(), "aaaaaaaaaaaa".into(), 3, 10, 20),
            ("b".into(), "bbbbbbbbbbbb".into(), 4, 10, 10),
        ]
    );
}

/// A store on a fresh database, and the URL it was opened with.
pub struct Db {
    pub store: Store,
    pub url: String,
}

impl Deref for Db {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

const DEFAULT_POSTGRES: &str = "postgres://labpool:labpool@127.0.0.1:5432/postgres";

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("state.db").display());
    if let Err(panic) = run(url, test).await {
        std::panic::resume_unwind(panic);
    }
}

async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let server = std::env::var("LABPOOL_TEST_POSTGRES").ok();
    let server = server.as_deref().unwrap_or(DEFAULT_POSTGRES);
    let mut admin = sqlx::PgConnection::connect(server).await.unwrap_or_else(|e| {
        panic!(
            "cannot reach PostgreSQL at LABPOOL_TEST_POSTGRES (default {DEFAULT_POSTGRES}): {e}\n\
             run scripts/setup to install and start a local server (or point \
             LABPOOL_TEST_POSTGRES at a server where the user may create databases)"
        )
    });
    let name = format!("labpool_test_{:016x}", rand::random::<u64>());
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let outcome = run(with_database(server, &name), test).await;
    // FORCE: a failed test may have left connections behind.
    admin
        .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
        .await
        .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A fresh, empty PostgreSQL database for one test; dropped with the value.
pub struct PostgresDb {
    pub url: String,
    server: String,
    name: String,
}

impl PostgresDb {
    pub async fn create() -> PostgresDb {
        let server =
            std::env::var("LABPOOL_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.to_owned());
        let mut admin = sqlx::PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot reach PostgreSQL at {server}: {e} (run scripts/setup)")
            });
        let name = format!("labpool_test_{:016x}", rand::random::<u64>());
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        PostgresDb {
            url: with_database(&server, &name),
            server,
            name,
        }
    }
}

impl Drop for PostgresDb {
    fn drop(&mut self) {
        // Drop runs outside any runtime's async context: a thread of its
        // own with a small runtime does the async cleanup.
        let (server, name) = (self.server.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok(mut admin) = sqlx::PgConnection::connect(&server).await {
                        let _ = admin
                            .execute(
                                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                            )
                            .await;
                    }
                });
        })
        .join();
    }
}

/// Runs `test` on a store at `url`, catching its panic so the caller can
/// clean up first. Opens the store twice, so every test also checks that
/// opening an up-to-date database migrates nothing and succeeds.
async fn run<F, Fut>(url: String, test: F) -> Result<(), Box<dyn std::any::Any + Send>>
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    Store::open(&url).await.unwrap().close().await;
    let store = Store::open(&url).await.unwrap();
    let outcome = tokio::spawn(test(Db {
        store: store.clone(),
        url,
    }))
    .await;
    store.close().await;
    outcome.map_err(|e| e.into_panic())
}

/// `server` (a postgres:// URL) with its database replaced by `name`.
fn with_database(server: &str, name: &str) -> String {
    let (scheme, rest) = server.split_once("://").expect("a postgres:// URL");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    let query = after.split_once('?').map(|(_, q)| q);
    match query {
        Some(query) => format!("{scheme}://{authority}/{name}?{query}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

// ---- fixtures ----------------------------------------------------------------

const COURSE: &str = "linux-101";
const SPEC: &str = "spec-1";

fn key(user: &str) -> SessionKey {
    SessionKey {
        issuer: "https://canvas.example.edu".into(),
        deployment_id: "deploy-1".into(),
        user_sub: user.into(),
        context_id: "canvas-4821".into(),
        resource_link_id: "link-1".into(),
    }
}

/// A VM of COURSE/SPEC created at `created_at`; warm ones are ready then too.
fn vm(id: &str, state: VmState, created_at: i64) -> VmRow {
    VmRow {
        id: id.into(),
        course: COURSE.into(),
        host: "host-a".into(),
        domain: format!("labpool-{id}"),
        volume: format!("labpool-{id}.qcow2"),
        spec_hash: SPEC.into(),
        state,
        vcpus: 1,
        memory: 256 << 20,
        ssh_port: None,
        created_at,
        state_changed_at: created_at,
        ready_at: (state == VmState::Warm).then_some(created_at),
        reason: None,
    }
}

async fn warm_vms(store: &Store, ids: &[&str]) {
    for (i, id) in ids.iter().enumerate() {
        store
            .insert_vm(&vm(id, VmState::Warm, 100 + i as i64))
            .await
            .unwrap();
    }
}

// ---- tests -------------------------------------------------------------------

async fn migrations_are_idempotent(db: Db) {
    db.upsert_host("host-a", "qemu:///system", 1).await.unwrap();
    let again = Store::open(&db.url).await.unwrap();
    assert_eq!(
        again.hosts().await.unwrap().len(),
        1,
        "data survives reopening"
    );
    let expected = if db.url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    assert_eq!(again.backend(), expected);
    again.close().await;
}

async fn hosts_are_listed_by_name_and_track_status_flips(db: Db) {
    db.upsert_host("host-b", "qemu+ssh://b/system", 10)
        .await
        .unwrap();
    db.upsert_host("host-a", "qemu:///system", 10)
        .await
        .unwrap();
    let hosts = db.hosts().await.unwrap();
    let names: Vec<_> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["host-a", "host-b"]);
    assert!(hosts[0].up, "new hosts start up");
    assert_eq!(
        (hosts[0].last_error.as_deref(), hosts[0].changed_at),
        (None, 10)
    );

    // Down: a flip. Down again, other error: no flip, but the latest error.
    assert!(
        db.set_host_status("host-a", false, Some("refused"), 20)
            .await
            .unwrap()
    );
    assert!(
        !db.set_host_status("host-a", false, Some("timeout"), 30)
            .await
            .unwrap()
    );
    let a = &db.hosts().await.unwrap()[0];
    assert_eq!(
        (a.up, a.last_error.as_deref(), a.changed_at),
        (false, Some("timeout"), 20)
    );

    // Upserting again changes the URI and keeps the status.
    db.upsert_host("host-a", "qemu+tls://a/system", 40)
        .await
        .unwrap();
    let a = &db.hosts().await.unwrap()[0];
    assert_eq!(
        (a.uri.as_str(), a.up, a.changed_at),
        ("qemu+tls://a/system", false, 20)
    );

    assert!(db.set_host_status("host-a", true, None, 50).await.unwrap());
    let a = &db.hosts().await.unwrap()[0];
    assert_eq!(
        (a.up, a.last_error.as_deref(), a.changed_at),
        (true, None, 50)
    );

    let missing = db.set_host_status("nope", true, None, 60).await;
    assert!(matches!(missing, Err(StoreError::HostNotFound(h)) if h == "nope"));
}

async fn courses_are_upserted_listed_and_forgotten(db: Db) {
    let course = |name: &str, revision: &str| CourseRow {
        name: name.into(),
        title: format!("Course {name}"),
        revision: revision.into(),
        spec_hash: format!("hash-{revision}"),
        spec_json: r#"{"vm":{"vcpus":1}}"#.into(),
        conditions_json: "[]".into(),
        updated_at: 1,
    };
    db.upsert_course(&course("net-201", "r1")).await.unwrap();
    db.upsert_course(&course("intro-shell", "r1"))
        .await
        .unwrap();
    let changed = CourseRow {
        updated_at: 2,
        ..course("net-201", "r2")
    };
    db.upsert_course(&changed).await.unwrap();
    assert_eq!(
        db.courses().await.unwrap(),
        [course("intro-shell", "r1"), changed.clone()]
    );

    let conditions = r#"[{"type":"Ready","status":"True"}]"#;
    db.set_course_conditions("net-201", conditions, 3)
        .await
        .unwrap();
    let net = db.courses().await.unwrap().pop().unwrap();
    assert_eq!(net.conditions_json, conditions);
    assert_eq!((net.revision.as_str(), net.updated_at), ("r2", 3));
    let missing = db.set_course_conditions("nope", "[]", 4).await;
    assert!(matches!(missing, Err(StoreError::CourseNotFound(c)) if c == "nope"));

    db.forget_course("net-201").await.unwrap();
    db.forget_course("net-201").await.unwrap();
    assert_eq!(db.courses().await.unwrap(), [course("intro-shell", "r1")]);
}

async fn vms_are_inserted_listed_and_moved_by_compare_and_set(db: Db) {
    let mut second = vm("vm-2", VmState::Creating, 20);
    second.ssh_port = Some(2222);
    second.reason = Some("replacing vm-0".into());
    db.insert_vm(&second).await.unwrap();
    db.insert_vm(&vm("vm-1", VmState::Creating, 10))
        .await
        .unwrap();
    let ids: Vec<_> = db.vms().await.unwrap().into_iter().map(|v| v.id).collect();
    assert_eq!(ids, ["vm-1", "vm-2"], "ordered by created_at");
    assert_eq!(db.vm("vm-2").await.unwrap(), Some(second.clone()));
    assert_eq!(db.vm("nope").await.unwrap(), None);
    assert!(
        matches!(db.insert_vm(&second).await, Err(StoreError::Database(_))),
        "ids are unique"
    );

    // Creating → Booting; a second identical move finds it already moved.
    let boot = [VmState::Creating];
    assert!(
        db.transition_vm("vm-2", &boot, VmState::Booting, 30, None)
            .await
            .unwrap()
    );
    let booting = db.vm("vm-2").await.unwrap().unwrap();
    assert_eq!(
        (
            booting.state,
            booting.state_changed_at,
            booting.ready_at,
            booting.reason.as_deref()
        ),
        (VmState::Booting, 30, None, None),
        "reason None clears the old one"
    );
    assert!(
        !db.transition_vm("vm-2", &boot, VmState::Failed, 40, Some("x"))
            .await
            .unwrap()
    );
    assert_eq!(
        db.vm("vm-2").await.unwrap().unwrap(),
        booting,
        "a failed CAS changes nothing"
    );
    assert!(
        !db.transition_vm("vm-2", &[], VmState::Failed, 40, None)
            .await
            .unwrap()
    );

    // → Warm stamps ready_at; moving on keeps it.
    let from = [VmState::Creating, VmState::Booting];
    assert!(
        db.transition_vm("vm-2", &from, VmState::Warm, 50, None)
            .await
            .unwrap()
    );
    let warm = db.vm("vm-2").await.unwrap().unwrap();
    assert_eq!((warm.state, warm.ready_at), (VmState::Warm, Some(50)));
    let any = VmState::ALL;
    let reason = Some("host-a down");
    assert!(
        db.transition_vm("vm-2", &any, VmState::Failed, 60, reason)
            .await
            .unwrap()
    );
    let failed = db.vm("vm-2").await.unwrap().unwrap();
    assert_eq!(
        (
            failed.state,
            failed.state_changed_at,
            failed.ready_at,
            failed.reason.as_deref()
        ),
        (VmState::Failed, 60, Some(50), reason)
    );

    let missing = db
        .transition_vm("nope", &any, VmState::Deleting, 70, None)
        .await;
    assert!(matches!(missing, Err(StoreError::VmNotFound(id)) if id == "nope"));
}

async fn deleting_a_vm_ends_its_live_session(db: Db) {
    warm_vms(&db, &["vm-1", "vm-2"]).await;
    let claimed = db
        .claim(COURSE, SPEC, &key("ana"), 200, 900)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.vm.id, "vm-1");

    db.delete_vm("vm-1", 300).await.unwrap();
    db.delete_vm("vm-1", 310).await.unwrap(); // already gone: fine
    assert_eq!(db.vm("vm-1").await.unwrap(), None);
    assert_eq!(db.live_sessions().await.unwrap(), []);
    let ended = db.session(&claimed.session.id).await.unwrap().unwrap();
    assert_eq!(
        (ended.ended_at, ended.end_reason.as_deref()),
        (Some(300), Some("vm deleted"))
    );

    // The key is free again: the next launch gets a fresh VM.
    let next = db
        .claim(COURSE, SPEC, &key("ana"), 400, 900)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((next.vm.id.as_str(), next.resumed), ("vm-2", false));
}

async fn claim_takes_the_oldest_warm_vm_of_the_right_spec(db: Db) {
    let mut old_spec = vm("old-spec", VmState::Warm, 1);
    old_spec.spec_hash = "spec-0".into();
    let mut other_course = vm("other-course", VmState::Warm, 2);
    other_course.course = "net-201".into();
    let mut newer = vm("newer", VmState::Warm, 3);
    newer.ready_at = Some(30);
    let mut older = vm("older", VmState::Warm, 4);
    older.ready_at = Some(20);
    for vm in [
        old_spec,
        other_course,
        newer,
        older,
        vm("booting", VmState::Booting, 5),
    ] {
        db.insert_vm(&vm).await.unwrap();
    }

    let first = db
        .claim(COURSE, SPEC, &key("ana"), 100, 900)
        .await
        .unwrap()
        .unwrap();
    assert!(!first.resumed);
    assert_eq!(first.vm.id, "older", "oldest ready first");
    assert_eq!(
        (first.vm.state, first.vm.state_changed_at),
        (VmState::Assigned, 100)
    );
    assert_eq!(db.vm("older").await.unwrap().unwrap(), first.vm);
    let session = &first.session;
    assert_eq!(session.id.len(), 32);
    assert!(session.id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        (
            session.vm_id.as_str(),
            session.course.as_str(),
            &session.key
        ),
        ("older", COURSE, &key("ana"))
    );
    assert_eq!(
        (
            session.created_at,
            session.expires_at,
            session.last_activity_at
        ),
        (100, 900, 100)
    );
    assert_eq!(
        (session.ended_at, session.end_reason.as_deref()),
        (None, None)
    );

    let second = db
        .claim(COURSE, SPEC, &key("ben"), 110, 900)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.vm.id, "newer");
    assert_ne!(second.session.id, first.session.id);

    // With none of the current build warm, the old build's warm VM (the
    // one a replacement keeps until its successor is warm) is next,
    // although it was ready first.
    let third = db
        .claim(COURSE, SPEC, &key("cy"), 120, 900)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.vm.id, "old-spec");
    // Left: one of another course, one still booting.
    assert_eq!(
        db.claim(COURSE, SPEC, &key("dee"), 130, 900).await.unwrap(),
        None
    );
    assert_eq!(
        db.live_sessions().await.unwrap(),
        [first.session, second.session, third.session]
    );
}

async fn claim_resumes_and_ends_sessions(db: Db) {
    warm_vms(&db, &["vm-1", "vm-2"]).await;
    let first = db
        .claim(COURSE, SPEC, &key("ana"), 200, 900)
        .await
        .unwrap()
        .unwrap();

    // Same key again: the same session and VM, untouched.
    let again = db
        .claim(COURSE, SPEC, &key("ana"), 210, 990)
        .await
        .unwrap()
        .unwrap();
    assert!(again.resumed);
    assert_eq!((&again.session, &again.vm), (&first.session, &first.vm));
    assert_eq!(db.vm("vm-2").await.unwrap().unwrap().state, VmState::Warm);

    // Activity only moves forward, and only on live sessions.
    db.touch_session(&first.session.id, 250).await.unwrap();
    db.touch_session(&first.session.id, 240).await.unwrap();
    db.touch_session("nope", 240).await.unwrap();
    assert_eq!(db.live_sessions().await.unwrap()[0].last_activity_at, 250);

    assert!(
        db.end_session(&first.session.id, "expired", 300)
            .await
            .unwrap()
    );
    assert!(
        !db.end_session(&first.session.id, "again", 310)
            .await
            .unwrap()
    );
    assert!(!db.end_session("nope", "never", 310).await.unwrap());
    db.touch_session(&first.session.id, 320).await.unwrap();
    assert_eq!(db.live_sessions().await.unwrap(), []);
    let ended = db.session(&first.session.id).await.unwrap().unwrap();
    assert_eq!(
        (
            ended.ended_at,
            ended.end_reason.as_deref(),
            ended.last_activity_at
        ),
        (Some(300), Some("expired"), 250)
    );
    assert_eq!(
        db.vm("vm-1").await.unwrap().unwrap().state,
        VmState::Assigned
    );

    // Ended, the key launches afresh on another VM.
    let next = db
        .claim(COURSE, SPEC, &key("ana"), 400, 900)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((next.vm.id.as_str(), next.resumed), ("vm-2", false));
    assert_ne!(next.session.id, first.session.id);
}

/// Runs `n` claims at once, each on its own task, the i-th with `key_of(i)`.
async fn claim_concurrently(
    db: &Db,
    n: usize,
    key_of: impl Fn(usize) -> SessionKey,
) -> Vec<Option<labpool::store::Claimed>> {
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (store, key, start) = (db.store.clone(), key_of(i), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                store.claim(COURSE, SPEC, &key, 500, 900).await.unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

async fn concurrent_claims_never_share_a_vm(db: Db) {
    warm_vms(&db, &["vm-1", "vm-2", "vm-3"]).await;
    let won: Vec<_> = claim_concurrently(&db, 20, |i| key(&format!("user-{i}")))
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(won.len(), 3, "one claim per warm VM: {won:#?}");
    assert!(won.iter().all(|c| !c.resumed));
    let vms: HashSet<_> = won.iter().map(|c| c.vm.id.as_str()).collect();
    assert_eq!(vms, HashSet::from(["vm-1", "vm-2", "vm-3"]));
    assert_eq!(db.live_sessions().await.unwrap().len(), 3);
    assert!(
        db.vms()
            .await
            .unwrap()
            .iter()
            .all(|v| v.state == VmState::Assigned)
    );

    // As many claims as warm VMs: every one gets a VM. A claim must not come
    // back empty because others were busy with the VM it looked at first.
    let more: Vec<_> = (4..12).map(|i| format!("vm-{i}")).collect();
    warm_vms(&db, &more.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let won = claim_concurrently(&db, more.len(), |i| key(&format!("late-{i}"))).await;
    let vms: HashSet<_> = won
        .iter()
        .map(|c| c.as_ref().expect("a VM").vm.id.clone())
        .collect();
    assert_eq!(vms, more.into_iter().collect());
}

async fn concurrent_claims_with_one_key_make_one_session(db: Db) {
    warm_vms(&db, &["vm-1", "vm-2", "vm-3"]).await;
    let results = claim_concurrently(&db, 20, |_| key("ana")).await;
    // Every launch gets the one session, even those that had to wait for it.
    let claims: Vec<_> = results.into_iter().map(|c| c.expect("a VM")).collect();
    assert_eq!(
        claims.iter().filter(|c| !c.resumed).count(),
        1,
        "{claims:#?}"
    );
    let sessions: HashSet<_> = claims.iter().map(|c| c.session.id.as_str()).collect();
    assert_eq!(sessions.len(), 1, "{claims:#?}");
    assert_eq!(db.live_sessions().await.unwrap().len(), 1);
    let warm = db
        .vms()
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.state == VmState::Warm);
    assert_eq!(warm.count(), 2, "only one VM taken");
}

async fn events_come_newest_first(db: Db) {
    let event = |at: i64, message: &str| NewEvent {
        at,
        kind: "vm-ready".into(),
        course: Some(COURSE.into()),
        host: None,
        vm: Some("vm-1".into()),
        message: message.into(),
    };
    for (at, message) in [(1, "first"), (3, "third"), (2, "second"), (3, "fourth")] {
        db.record_event(&event(at, message)).await.unwrap();
    }
    let events = db.events(10).await.unwrap();
    let messages: Vec<_> = events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["fourth", "third", "second", "first"]);
    assert!(events[0].id > events[1].id, "same time: later insert first");
    let newest = &events[0];
    assert_eq!(
        (
            newest.at,
            newest.kind.as_str(),
            newest.course.as_deref(),
            newest.host.as_deref()
        ),
        (3, "vm-ready", Some(COURSE), None)
    );
    assert_eq!(newest.vm.as_deref(), Some("vm-1"));
    assert_eq!(db.events(2).await.unwrap(), events[..2]);
}

async fn old_events_are_pruned_in_bounded_batches(db: Db) {
    let event = |at: i64, message: String| NewEvent {
        at,
        kind: "vm-ready".into(),
        course: Some(COURSE.into()),
        host: None,
        vm: None,
        message,
    };
    // 25 old events (at 0..25) and 5 recent ones (at 100..105), cut at 100.
    for at in (0..25).chain(100..105) {
        db.record_event(&event(at, format!("at {at}")))
            .await
            .unwrap();
    }
    assert_eq!(
        db.prune_events(100, 10).await.unwrap(),
        10,
        "a batch at most"
    );
    let left = db.events(100).await.unwrap();
    assert_eq!(left.len(), 20);
    assert!(
        left.iter().all(|e| e.at >= 10),
        "the oldest go first: {left:?}"
    );
    assert_eq!(db.prune_events(100, 10).await.unwrap(), 10);
    assert_eq!(db.prune_events(100, 10).await.unwrap(), 5);
    assert_eq!(
        db.prune_events(100, 10).await.unwrap(),
        0,
        "nothing old left"
    );
    let left: Vec<i64> = db.events(100).await.unwrap().iter().map(|e| e.at).collect();
    assert_eq!(left, [104, 103, 102, 101, 100], "the recent ones are kept");
}

// ---- SQLite only -------------------------------------------------------------

#[tokio::test]
async fn sqlite_creates_its_file_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    assert!(path.exists());
    store.close().await;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn sqlite_in_memory_keeps_its_data_across_queries() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    store
        .upsert_host("host-a", "qemu:///system", 1)
        .await
        .unwrap();
    warm_vms(&store, &["vm-1"]).await;
    assert_eq!(store.hosts().await.unwrap().len(), 1);
    assert!(
        store
            .claim(COURSE, SPEC, &key("ana"), 2, 9)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn other_urls_are_refused() {
    let error = Store::open("mysql://localhost/labpool").await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "unsupported database URL `mysql://localhost/labpool`: use sqlite:… or postgres://…"
    );
}

async fn one_lease_holder_at_a_time(db: Db) {
    assert_eq!(db.lease("reconciler").await.unwrap(), None);
    let a = db
        .acquire_lease("reconciler", "a", 0, 1_000, None)
        .await
        .unwrap();
    assert_eq!(a.holder, "a");
    // Held and not expired: b is refused, a renews.
    let b = db
        .acquire_lease("reconciler", "b", 500, 1_500, None)
        .await
        .unwrap();
    assert_eq!((b.holder.as_str(), b.expires_at), ("a", 1_000));
    let a = db
        .acquire_lease("reconciler", "a", 900, 1_900, None)
        .await
        .unwrap();
    assert_eq!((a.holder.as_str(), a.expires_at), ("a", 1_900));
    // Expired: b takes it.
    let b = db
        .acquire_lease("reconciler", "b", 2_000, 3_000, None)
        .await
        .unwrap();
    assert_eq!(b.holder, "b");
    // A holder proved dead is replaced before expiry; a live one is not.
    let c = db
        .acquire_lease("reconciler", "c", 2_100, 3_100, Some("x"))
        .await
        .unwrap();
    assert_eq!(c.holder, "b");
    let c = db
        .acquire_lease("reconciler", "c", 2_100, 3_100, Some("b"))
        .await
        .unwrap();
    assert_eq!(c.holder, "c");
    // Release: only by the holder.
    db.release_lease("reconciler", "b").await.unwrap();
    assert_eq!(db.lease("reconciler").await.unwrap().unwrap().holder, "c");
    db.release_lease("reconciler", "c").await.unwrap();
    assert_eq!(db.lease("reconciler").await.unwrap(), None);
}

/// `serve` and `status` started together on a new SQLite file both create
/// and migrate it: neither may fail with "database is locked".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_opened_by_many_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("new.db").display());
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::open(&url).await.map(|_| ()) })
        })
        .collect();
    for open in opens {
        open.await.unwrap().expect("every opener succeeds");
    }
}

// ---- launches ------------------------------------------------------------------

fn login_row(state: &str, deployment: Option<&str>, now: i64) -> LoginRow {
    LoginRow {
        state: state.into(),
        nonce: format!("nonce-{state}"),
        issuer: key("x").issuer,
        client_id: "client".into(),
        deployment_id: deployment.map(str::to_owned),
        target_link_uri: "https://labs.example.edu/lti/launch".into(),
        login_hint: "hint".into(),
        message_hint: None,
        storage_secret: None,
        storage_target: None,
        created_at: now,
        expires_at: now + 60_000,
        used_at: None,
    }
}

fn launch_of(state: &str, user: &str, max: u32) -> LaunchRequest {
    let key = key(user);
    LaunchRequest {
        state: state.into(),
        nonce: format!("nonce-{state}"),
        issuer: key.issuer.clone(),
        client_id: "client".into(),
        course: COURSE.into(),
        spec_hash: SPEC.into(),
        key,
        max,
        expiry_ms: 3_600_000,
        per_user: 1,
        labs_per_user: 3,
        resume_only: false,
    }
}

fn claimed(o: &LaunchOutcome) -> &labpool::store::Claimed {
    match o {
        LaunchOutcome::Claimed(c) => c,
        other => panic!("not claimed: {other:?}"),
    }
}

async fn a_batch_of_launches_is_decided_in_one_go(db: Db) {
    let now = 1_000;
    warm_vms(&db, &["vm-a", "vm-b"]).await;
    for s in ["s1", "s2", "s3", "s4", "s5"] {
        db.insert_login(&login_row(s, Some("deploy-1"), now))
            .await
            .unwrap();
    }
    let mut wrong_nonce = launch_of("s4", "u8", 10);
    wrong_nonce.nonce = "another".into();
    let batch = vec![
        launch_of("s1", "u1", 10),
        launch_of("s2", "u2", 10),
        launch_of("s3", "u1", 10),
        launch_of("s1", "u9", 10),
        wrong_nonce,
        launch_of("s5", "u3", 10),
    ];
    let out = db.launch_batch(&batch, now).await.unwrap();
    // The oldest-ready warm VM goes to the first launch in line.
    let u1 = claimed(&out[0]);
    assert_eq!((u1.vm.id.as_str(), u1.resumed), ("vm-a", false));
    assert_eq!(u1.vm.state, VmState::Assigned);
    assert_eq!(claimed(&out[1]).vm.id, "vm-b");
    // The same key again in the batch: the same session.
    let again = claimed(&out[2]);
    assert_eq!((&again.session.id, again.resumed), (&u1.session.id, true));
    // A state is used once; a nonce must be the login's.
    assert_eq!(out[3], LaunchOutcome::LoginRejected);
    assert_eq!(out[4], LaunchOutcome::LoginRejected);
    assert!(db.login("s4").await.unwrap().unwrap().used_at.is_none());
    // No warm VM left: the last waits.
    let LaunchOutcome::Waiting(u3) = &out[5] else {
        panic!("waits: {:?}", out[5]);
    };
    assert_eq!(
        db.waiting_by_course(now).await.unwrap(),
        vec![(COURSE.to_owned(), 1)]
    );

    // A later launch queues behind u3; a VM that turns warm is u3's first.
    db.insert_login(&login_row("s6", None, now)).await.unwrap();
    let out = db
        .launch_batch(&[launch_of("s6", "u4", 10)], now + 10)
        .await
        .unwrap();
    let LaunchOutcome::Waiting(u4) = &out[0] else {
        panic!("waits: {:?}", out[0]);
    };
    db.insert_vm(&vm("vm-c", VmState::Warm, 500)).await.unwrap();
    let poll = |id: String| {
        let store = db.store.clone();
        async move {
            store
                .poll_wait(&id, SPEC, now + 3_600_000, now + 20)
                .await
                .unwrap()
        }
    };
    assert_eq!(poll(u4.id.clone()).await, WaitOutcome::Waiting { ahead: 1 });
    let WaitOutcome::Claimed(c) = poll(u3.id.clone()).await else {
        panic!("u3 is served first");
    };
    assert_eq!(c.vm.id, "vm-c");
    assert_eq!(poll(u3.id.clone()).await, WaitOutcome::Gone);
    assert_eq!(poll(u4.id.clone()).await, WaitOutcome::Waiting { ahead: 0 });

    // At the max (3 live sessions), a new launch is told the lab is full.
    db.insert_login(&login_row("s7", None, now)).await.unwrap();
    let out = db
        .launch_batch(&[launch_of("s7", "u5", 3)], now + 30)
        .await
        .unwrap();
    assert!(
        matches!(out[0], LaunchOutcome::Full { in_use: 4 }),
        "{:?}",
        out[0]
    );
    // An expired login is refused.
    let mut old = login_row("s8", None, now);
    old.expires_at = now + 1;
    db.insert_login(&old).await.unwrap();
    let out = db
        .launch_batch(&[launch_of("s8", "u6", 10)], now + 40)
        .await
        .unwrap();
    assert_eq!(out[0], LaunchOutcome::LoginRejected);
}

/// Issue 15 §3: a launch's one-time code works once. Twenty redemptions at
/// the same instant (tabs, replicas, a code seen in a log) make one winner;
/// the code stays spent until it would have expired anyway, then is pruned.
async fn a_code_is_redeemed_once_even_by_racing_replicas(db: Db) {
    let now = 1_000_000;
    let racers = (0..20).map(|_| {
        let store = db.store.clone();
        tokio::spawn(async move { store.redeem_code("c0ffee", "s1", now + 60_000, now).await })
    });
    let mut wins = 0;
    for racer in racers {
        if racer.await.unwrap().unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "exactly one redemption wins");
    assert!(
        !db.redeem_code("c0ffee", "s1", now + 60_000, now + 1)
            .await
            .unwrap()
    );
    // Another code is another row.
    assert!(
        db.redeem_code("beef", "s1", now + 60_000, now)
            .await
            .unwrap()
    );
    // Pruned once expired: nothing of it is kept (an expired code is
    // refused by its signed expiry before the store is asked).
    db.prune_codes(now + 60_001).await.unwrap();
    assert!(
        db.redeem_code("c0ffee", "s1", now + 120_000, now + 60_001)
            .await
            .unwrap()
    );
}

/// A launch of `user` through resource link `link`, under the given limits.
fn launch_by(
    state: &str,
    user: &str,
    link: &str,
    per_user: u32,
    labs_per_user: u32,
) -> LaunchRequest {
    let mut l = launch_of(state, user, 100);
    l.key.resource_link_id = link.into();
    l.per_user = per_user;
    l.labs_per_user = labs_per_user;
    l
}

/// Logins for every launch of `batch`, then the batch at `now`.
async fn decide(db: &Store, batch: &[LaunchRequest], now: i64) -> Vec<LaunchOutcome> {
    for l in batch {
        if db.login(&l.state).await.unwrap().is_none() {
            db.insert_login(&login_row(&l.state, Some("deploy-1"), now))
                .await
                .unwrap();
        }
    }
    db.launch_batch(batch, now).await.unwrap()
}

fn user_limit(o: &LaunchOutcome) -> &[String] {
    match o {
        LaunchOutcome::UserLimit { held } => held,
        other => panic!("not refused for the user's limit: {other:?}"),
    }
}

/// Issue 15 §5: one user through 10 resource links took 2 sessions and 6
/// waits. Live sessions plus live wait tickets count against the course's
/// `per_user` and labpool's `labs_per_user`; the same key again is the
/// same lab, never a new one.
async fn a_user_holds_labs_up_to_the_course_and_global_limits(db: Db) {
    let now = 1_000;
    warm_vms(&db, &["vm-a", "vm-b", "vm-c", "vm-d", "vm-e"]).await;
    // One per course: the second link is refused, naming the course held;
    // the first link twice in one batch is one session.
    let out = decide(
        &db,
        &[
            launch_by("a1", "u1", "link-1", 1, 3),
            launch_by("a2", "u1", "link-2", 1, 3),
            launch_by("a3", "u1", "link-1", 1, 3),
            launch_by("a4", "u2", "link-1", 1, 3),
        ],
        now,
    )
    .await;
    let first = claimed(&out[0]).session.id.clone();
    assert_eq!(user_limit(&out[1]), [COURSE.to_owned()]);
    assert_eq!(claimed(&out[2]).session.id, first);
    assert!(!claimed(&out[3]).resumed);
    // Later: the first link comes back to its session; a third is refused.
    let out = decide(
        &db,
        &[
            launch_by("b1", "u1", "link-1", 1, 3),
            launch_by("b2", "u1", "link-3", 1, 3),
        ],
        now + 10,
    )
    .await;
    let back = claimed(&out[0]);
    assert_eq!(
        (back.session.id.as_str(), back.resumed),
        (first.as_str(), true)
    );
    user_limit(&out[1]);
    // The global cap: a course allowing 5, labpool allowing 2 in all.
    let out = decide(
        &db,
        &[
            launch_by("c1", "u3", "a", 5, 2),
            launch_by("c2", "u3", "b", 5, 2),
            launch_by("c3", "u3", "c", 5, 2),
        ],
        now + 20,
    )
    .await;
    claimed(&out[0]);
    claimed(&out[1]);
    assert_eq!(user_limit(&out[2]), [COURSE.to_owned()]);
    // Waiting counts: one VM left, u4 takes it, u5 waits and may not wait
    // through a second link; its own link again is the same ticket.
    let out = decide(
        &db,
        &[
            launch_by("d1", "u4", "a", 1, 3),
            launch_by("d2", "u5", "a", 1, 3),
            launch_by("d3", "u5", "b", 1, 3),
        ],
        now + 30,
    )
    .await;
    claimed(&out[0]);
    let LaunchOutcome::Waiting(ticket) = &out[1] else {
        panic!("waits: {:?}", out[1]);
    };
    user_limit(&out[2]);
    let out = decide(&db, &[launch_by("e1", "u5", "a", 1, 3)], now + 40).await;
    assert!(
        matches!(&out[0], LaunchOutcome::Waiting(t) if t.id == ticket.id),
        "{:?}",
        out[0]
    );
    // The same `sub` at another issuer is another user.
    let mut elsewhere = launch_by("f1", "u1", "link-9", 1, 3);
    elsewhere.key.issuer = "https://other.example".into();
    elsewhere.issuer = elsewhere.key.issuer.clone();
    db.insert_login(&LoginRow {
        issuer: elsewhere.issuer.clone(),
        ..login_row("f1", Some("deploy-1"), now)
    })
    .await
    .unwrap();
    let out = db.launch_batch(&[elsewhere], now + 50).await.unwrap();
    assert!(matches!(out[0], LaunchOutcome::Waiting(_)), "{:?}", out[0]);
}

/// The limit holds across concurrent batches (two labpools, or two
/// connections of one): per user, two links launched at the same instant
/// on two connections give one lab. PostgreSQL takes a per-user lock;
/// SQLite's write lock serializes the batches.
async fn one_users_launches_racing_on_two_connections_get_one_lab(db: Db) {
    let now = 1_000;
    let ids: Vec<String> = (0..40).map(|i| format!("vm-{i:02}")).collect();
    warm_vms(&db, &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let mut batches = Vec::new();
    for link in ["x", "y"] {
        let batch: Vec<LaunchRequest> = (0..20)
            .map(|u| launch_by(&format!("{link}-{u}"), &format!("racer-{u}"), link, 1, 3))
            .collect();
        for l in &batch {
            db.insert_login(&login_row(&l.state, Some("deploy-1"), now))
                .await
                .unwrap();
        }
        batches.push(batch);
    }
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let store = db.store.clone();
            tokio::spawn(async move { store.launch_batch(&batch, now).await.unwrap() })
        })
        .collect();
    let mut labs = std::collections::HashMap::new();
    for task in tasks {
        for (u, outcome) in task.await.unwrap().into_iter().enumerate() {
            if !matches!(outcome, LaunchOutcome::UserLimit { .. }) {
                *labs.entry(u).or_insert(0) += 1;
            }
        }
    }
    assert_eq!(labs.len(), 20);
    assert!(labs.values().all(|&n| n == 1), "{labs:?}");
    assert_eq!(db.live_sessions().await.unwrap().len(), 20);
}

/// Issue 16 §2: the revision in force and the one held back (migration
/// 0011): holding again keeps the confirmation, a new held revision drops
/// it, and a confirmation names one exact id.
async fn a_held_revision_is_confirmed_by_its_exact_id_only(db: Db) {
    use labpool::store::Confirmed;
    db.set_applied_revision("r1", Some(r#"{"id":"r1"}"#), r#"{"courses":["a"]}"#, 1)
        .await
        .unwrap();
    let applied = db.source_revision("applied").await.unwrap().unwrap();
    assert_eq!((applied.revision.as_str(), applied.at), ("r1", 1));
    assert_eq!(
        db.confirm_held_revision("r2", "ada", 2).await.unwrap(),
        Confirmed::NotHeld(None)
    );
    assert!(db.hold_revision("r2", None, "{}", 3).await.unwrap());
    assert!(
        !db.hold_revision("r2", None, "{}", 4).await.unwrap(),
        "held already"
    );
    assert_eq!(
        db.confirm_held_revision("r3", "ada", 5).await.unwrap(),
        Confirmed::NotHeld(Some("r2".into()))
    );
    assert_eq!(
        db.confirm_held_revision("r2", "ada", 5).await.unwrap(),
        Confirmed::Now
    );
    assert_eq!(
        db.confirm_held_revision("r2", "bob", 6).await.unwrap(),
        Confirmed::Already("ada".into())
    );
    // Held again (a restart): the confirmation stays, and so does the time.
    assert!(!db.hold_revision("r2", None, r#"{"x":1}"#, 7).await.unwrap());
    let held = db.source_revision("held").await.unwrap().unwrap();
    assert_eq!(
        (
            held.confirmed_by.as_deref(),
            held.at,
            held.detail_json.as_str()
        ),
        (Some("ada"), 3, r#"{"x":1}"#)
    );
    // Another revision held: the confirmation was for r2 only.
    assert!(db.hold_revision("r4", None, "{}", 8).await.unwrap());
    let held = db.source_revision("held").await.unwrap().unwrap();
    assert_eq!((held.revision.as_str(), held.confirmed_by), ("r4", None));
    assert_eq!(
        db.clear_held_revision().await.unwrap().unwrap().revision,
        "r4"
    );
    assert!(db.source_revision("held").await.unwrap().is_none());
    assert!(db.clear_held_revision().await.unwrap().is_none());
}
