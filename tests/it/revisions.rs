//! Issue 16 §2, §3, §5: course revisions from a real Git remote (a repository
//! made by the test, reached over file://) on libvirt test hosts. A revision
//! removing most of what runs is held until an admin confirms it or a later
//! one removes less; a commit without the course folder is rejected; a
//! restart while the remote is down reports the revision in force; a moved
//! tag is not followed unless the configuration says so.

use std::path::Path;

use labpool::reconcile::{Reconciler, now_ms};
use labpool::store::{VmRow, VmState};
use serde_json::Value;

use crate::lab::{Lab, count};
use crate::source_git::commit;
use crate::source_git::following::config;
use crate::support::labpool_in;

fn course(name: &str, warm: u32) -> String {
    format!(
        "name: {name}\ntitle: {name}\nimage: busybox\nvm: {{ vcpus: 1, memory: 192MiB }}\npool: {{ warm: {warm}, max: 10 }}\n"
    )
}

/// The four courses the tests start from: 7 warm VMs.
const FOUR: [(&str, u32); 4] = [("revs-a", 2), ("revs-b", 2), ("revs-c", 2), ("revs-d", 1)];

fn path_of(name: &str) -> String {
    format!("courses/{name}.yaml")
}

/// A remote whose first commit holds [`FOUR`]; its branch's name.
fn remote_with_four(dir: &Path) -> (git2::Repository, String, String) {
    let repo = git2::Repository::init(dir).unwrap();
    let texts: Vec<(String, String)> = FOUR
        .iter()
        .map(|(n, w)| (path_of(n), course(n, *w)))
        .collect();
    let files: Vec<(&str, Option<&str>)> = texts
        .iter()
        .map(|(p, t)| (p.as_str(), Some(t.as_str())))
        .collect();
    let first = commit(&repo, &files, "Four courses");
    let branch = repo.head().unwrap().shorthand().unwrap().to_string();
    (repo, branch, first)
}

async fn pass(r: &Reconciler) -> Vec<VmRow> {
    r.pass().await.unwrap();
    r.settle().await;
    r.store().vms().await.unwrap()
}

fn warm(vms: &[VmRow]) -> Vec<usize> {
    FOUR.iter()
        .map(|(n, _)| count(vms, n, VmState::Warm))
        .collect()
}

/// The value of a gauge without labels, as `/metrics` would show it now.
async fn gauge(r: &Reconciler, name: &str) -> Option<String> {
    let snapshot = labpool::metrics::Snapshot::read(r.store(), &["a"], 0, now_ms())
        .await
        .unwrap();
    let text = r.metrics().render(Some(&snapshot));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
}

fn status_json(lab: &Lab) -> Value {
    let file = lab.path().join("labpool.yaml");
    let run = labpool_in(
        lab.path(),
        &[
            "status",
            "--config",
            file.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

fn labpool(lab: &Lab, args: &[&str]) -> crate::support::Run {
    let file = lab.path().join("labpool.yaml");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", file.to_str().unwrap()]);
    labpool_in(lab.path(), &all)
}

async fn events_of(r: &Reconciler, kind: &str) -> Vec<String> {
    r.store()
        .events(200)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.message)
        .collect()
}

/// Issue 16 §2: a commit removing 3 of 4 courses destroyed 7 VMs within 8 s.
/// Now it is held: the pools stay, status, the metric, an event (once) and
/// `plan` say so, a confirmation of another id changes nothing, and
/// `labpool revision confirm` with its id applies it at the next pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_of_four_removed_is_held_until_confirmed_on_the_command_line() {
    let lab = Lab::new();
    let remote_dir = tempfile::tempdir().unwrap();
    let (remote, branch, first) = remote_with_four(remote_dir.path());
    let r = lab
        .reconciler(config(
            &lab,
            remote_dir.path(),
            &format!("branch: {branch}"),
            "1h",
        ))
        .await;
    assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1]);
    assert_eq!(
        gauge(&r, "labpool_revision_held").await.as_deref(),
        Some("0")
    );

    let cut = commit(
        &remote,
        &[
            (&path_of("revs-b"), None),
            (&path_of("revs-c"), None),
            (&path_of("revs-d"), None),
        ],
        "End of term",
    );
    r.fetch_now();
    for _ in 0..3 {
        assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1], "nothing is removed");
    }
    assert_eq!(r.store().courses().await.unwrap()[0].revision, first);
    let held = events_of(&r, "revision-held").await;
    assert_eq!(held.len(), 1, "one event per held revision: {held:?}");
    assert!(
        held[0].contains(&cut) && held[0].contains("removes 3 of 4 courses (warm VMs -5)"),
        "{}",
        held[0]
    );
    assert_eq!(
        gauge(&r, "labpool_revision_held").await.as_deref(),
        Some("1")
    );
    let source = status_json(&lab)["source"].clone();
    assert_eq!(source["applied"]["id"], first, "{source}");
    assert_eq!(source["held"]["id"], cut, "{source}");
    assert_eq!(source["held"]["courses_before"], 4);
    assert_eq!(source["held"]["warm_removed"], 5);
    assert_eq!(
        source["held"]["removed"],
        serde_json::json!(["revs-b", "revs-c", "revs-d"])
    );
    let human = labpool(&lab, &["status"]);
    assert!(
        human.stdout.contains(&format!(
            "held     {cut} \"End of term\": removes 3 of 4 courses (warm VMs -5)"
        )),
        "{}",
        human.stdout
    );
    let plan = labpool(&lab, &["plan"]);
    assert!(
        plan.stderr.contains(&format!(
            "warning: revision {cut} removes 3 of 4 courses (warm VMs -5)"
        )) && plan.stderr.contains("until an admin confirms it"),
        "{}",
        plan.stderr
    );

    // A confirmation is for that exact revision.
    let wrong = labpool(&lab, &["revision", "confirm", &first]);
    assert_eq!(wrong.status, 1, "{}{}", wrong.stdout, wrong.stderr);
    assert!(
        wrong.stderr.contains("not the one held"),
        "{}",
        wrong.stderr
    );
    assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1]);

    let ok = labpool(&lab, &["revision", "confirm", &cut, "--by", "ada"]);
    assert_eq!(ok.status, 0, "{}{}", ok.stdout, ok.stderr);
    let confirmed = events_of(&r, "revision-confirmed").await;
    assert!(
        confirmed.len() == 1 && confirmed[0].contains(&cut) && confirmed[0].contains("by ada"),
        "{confirmed:?}"
    );
    assert_eq!(
        warm(&pass(&r).await),
        [2, 0, 0, 0],
        "applied once confirmed"
    );
    let applied = events_of(&r, "revision-applied").await;
    assert!(
        applied[0].contains(&cut) && applied[0].contains("confirmed by ada"),
        "{applied:?}"
    );
    assert_eq!(
        gauge(&r, "labpool_revision_held").await.as_deref(),
        Some("0")
    );
    assert!(status_json(&lab)["source"]["held"].is_null());
}

/// A labpool following `remote` serving HTTP on its base URL, with an admin
/// token: the reconciler, the address and the token.
async fn serving(
    lab: &Lab,
    remote: &Path,
    pin: &str,
) -> (Reconciler, std::net::SocketAddr, String) {
    let mut config = config(lab, remote, pin, "1h");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    config.lti.base_url = Some(format!("http://{addr}"));
    let r = lab.reconciler(config).await;
    let app = labpool::http::App::new(r.clone()).await.unwrap();
    tokio::spawn(labpool::http::serve(listener, app, std::future::pending()));
    let (_, token) = labpool::admin::tokens::create(
        r.store(),
        "operator",
        labpool::admin::Scope::Admin,
        now_ms(),
    )
    .await
    .unwrap();
    (r, addr, token)
}

async fn post(addr: std::net::SocketAddr, path: &str, token: &str) -> (u16, String) {
    let res = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// Issue 16 §2: a commit leaving the course folder with only `.gitkeep`
/// removed all 4 pools and 8 VMs in under 3 s. Now it is held (removing
/// every course always is, whatever the shares), the dashboard shows it with
/// a confirm form, and the admin API confirms it (that exact id only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_folder_is_held_and_confirmed_through_the_api() {
    let lab = Lab::new();
    let remote_dir = tempfile::tempdir().unwrap();
    let (remote, branch, first) = remote_with_four(remote_dir.path());
    let (r, addr, token) = serving(&lab, remote_dir.path(), &format!("branch: {branch}")).await;
    assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1]);

    let mut files: Vec<(String, Option<&str>)> =
        FOUR.iter().map(|(n, _)| (path_of(n), None)).collect();
    files.push(("courses/.gitkeep".into(), Some("")));
    let files: Vec<(&str, Option<&str>)> = files.iter().map(|(p, t)| (p.as_str(), *t)).collect();
    let empty = commit(&remote, &files, "Empty the folder");
    r.fetch_now();
    assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1], "nothing is removed");
    let (status, body) = get(addr, "/api/v1/source", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let source: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(source["held"]["id"], empty, "{source}");
    assert_eq!(source["held"]["reason"], "it removes every course");
    assert_eq!(source["held"]["courses_after"], 0);
    assert_eq!(source["applied"]["id"], first);
    let (status, page) = get(addr, "/admin", Some(&token)).await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!(r#"data-held="{empty}""#))
            && page.contains(&format!(r#"action="/admin/revisions/{empty}/confirm""#))
            && page.contains("removes 4 of 4 courses (warm VMs -7)"),
        "{page}"
    );

    // Another id is refused; nothing is held under it.
    let (status, body) = post(addr, &format!("/api/v1/revisions/{first}/confirm"), &token).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1]);

    let (status, body) = post(addr, &format!("/api/v1/revisions/{empty}/confirm"), &token).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["confirmed_by"], "operator");
    assert_eq!(
        warm(&pass(&r).await),
        [0, 0, 0, 0],
        "applied once confirmed"
    );
    let confirmed = events_of(&r, "revision-confirmed").await;
    assert!(confirmed[0].contains("by operator"), "{confirmed:?}");
    let source = status_json(&lab)["source"].clone();
    assert_eq!(source["applied"]["id"], empty);
    assert_eq!(source["applied"]["courses"], 0);
    // Nothing is held now: confirming again finds nothing.
    let (status, _) = post(addr, &format!("/api/v1/revisions/{empty}/confirm"), &token).await;
    assert_eq!(status, 404);
}

/// Issue 16 §2: a held revision stops being held when the next revision no
/// longer removes too much; that one applies at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_revision_is_superseded_by_one_removing_less() {
    let lab = Lab::new();
    let remote_dir = tempfile::tempdir().unwrap();
    let (remote, branch, _) = remote_with_four(remote_dir.path());
    let r = lab
        .reconciler(config(
            &lab,
            remote_dir.path(),
            &format!("branch: {branch}"),
            "1h",
        ))
        .await;
    assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1]);
    let cut = commit(
        &remote,
        &[
            (&path_of("revs-b"), None),
            (&path_of("revs-c"), None),
            (&path_of("revs-d"), None),
        ],
        "Too much",
    );
    r.fetch_now();
    assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1]);
    assert_eq!(
        gauge(&r, "labpool_revision_held").await.as_deref(),
        Some("1")
    );

    // Two of four back: half is not more than half.
    let b = course("revs-b", 2);
    let c = course("revs-c", 2);
    let less = commit(
        &remote,
        &[
            (&path_of("revs-b"), Some(&b)),
            (&path_of("revs-c"), Some(&c)),
        ],
        "Only revs-d goes",
    );
    r.fetch_now();
    assert_eq!(warm(&pass(&r).await), [2, 2, 2, 0]);
    let superseded = events_of(&r, "revision-hold-superseded").await;
    assert!(
        superseded.len() == 1 && superseded[0].contains(&cut) && superseded[0].contains(&less),
        "{superseded:?}"
    );
    assert_eq!(
        gauge(&r, "labpool_revision_held").await.as_deref(),
        Some("0")
    );
    let source = status_json(&lab)["source"].clone();
    assert_eq!(source["applied"]["id"], less);
    assert!(source["held"].is_null(), "{source}");
}

/// Issue 16 §2: a commit with no course folder was only an event whose
/// message ended in an empty reason. It is a rejected revision: status, the
/// metric and the event name the folder; the pools stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_without_the_course_folder_is_rejected() {
    let lab = Lab::new();
    let remote_dir = tempfile::tempdir().unwrap();
    let (remote, branch, first) = remote_with_four(remote_dir.path());
    let r = lab
        .reconciler(config(
            &lab,
            remote_dir.path(),
            &format!("branch: {branch}"),
            "1h",
        ))
        .await;
    assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1]);
    assert_eq!(
        gauge(&r, "labpool_revision_rejected").await.as_deref(),
        Some("0")
    );
    let mut files: Vec<(String, Option<&str>)> =
        FOUR.iter().map(|(n, _)| (path_of(n), None)).collect();
    files.push(("README.md".into(), Some("moved elsewhere")));
    let files: Vec<(&str, Option<&str>)> = files.iter().map(|(p, t)| (p.as_str(), *t)).collect();
    let gone = commit(&remote, &files, "Move the courses away");
    r.fetch_now();
    assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1], "nothing is removed");
    assert_eq!(
        gauge(&r, "labpool_revision_rejected").await.as_deref(),
        Some("1")
    );
    assert_eq!(
        gauge(&r, "labpool_revision_held").await.as_deref(),
        Some("0")
    );
    let rejected = events_of(&r, "revision-rejected").await;
    assert!(
        rejected.len() == 1
            && rejected[0].contains(&format!("commit {gone} has no folder `courses`")),
        "{rejected:?}"
    );
    let source = status_json(&lab)["source"].clone();
    assert_eq!(source["applied"]["id"], first);
    assert_eq!(source["rejected"]["commit"], gone);
    let diagnostics = source["rejected"]["diagnostics"].to_string();
    assert!(diagnostics.contains("no folder `courses`"), "{diagnostics}");
    let human = labpool(&lab, &["status"]);
    assert!(
        human.stdout.contains(&format!("rejected commit {gone}")),
        "{}",
        human.stdout
    );
}

/// Issue 16 §3: restarted while the remote was unreachable, `/readyz` stayed
/// 503 and status said `applied nothing yet`. The revision in force is in
/// the store: a restarted labpool reports it, is ready on it, and still
/// shows the fetch error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_the_remote_is_down_keeps_the_revision_in_force() {
    let lab = Lab::new();
    let remote_dir = tempfile::tempdir().unwrap();
    let (_remote, branch, first) = remote_with_four(remote_dir.path());
    let pin = format!("branch: {branch}");
    {
        let r = lab
            .reconciler(config(&lab, remote_dir.path(), &pin, "1h"))
            .await;
        assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1]);
    }
    // The forge goes away; labpool restarts.
    let moved = remote_dir.path().with_extension("gone");
    std::fs::rename(remote_dir.path(), &moved).unwrap();
    let (r, addr, _) = serving(&lab, remote_dir.path(), &pin).await;
    for _ in 0..2 {
        assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1]);
    }
    let (status, body) = get(addr, "/readyz", None).await;
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    let detail = ready["revision"]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&first) && detail.contains("the last fetch failed"),
        "{detail}"
    );
    let source = status_json(&lab)["source"].clone();
    assert_eq!(source["applied"]["id"], first, "{source}");
    assert_eq!(source["applied"]["commit"]["subject"], "Four courses");
    assert_eq!(source["applied"]["courses"], 4);
    assert!(source["last_fetch_error"].is_string(), "{source}");
    let human = labpool(&lab, &["status"]);
    assert!(
        human.stdout.contains(&format!(
            "applied  {first} \"Four courses\" by Ada Instructor"
        )) && human.stdout.contains("FAILED"),
        "{}",
        human.stdout
    );
    assert!(gauge(&r, "labpool_revision_age_seconds").await.is_some());
    std::fs::rename(&moved, remote_dir.path()).unwrap();
}

/// Issue 16 §5: a force-moved tag was followed at the next poll. A moved
/// pinned tag is reported (event, `last_fetch_error`) and the commit it
/// first named stays in force; with `follow_moved_tags: true` it is followed
/// (and reported).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tag_is_reported_and_followed_only_when_configured() {
    let lab = Lab::new();
    let remote_dir = tempfile::tempdir().unwrap();
    let (remote, _, first) = remote_with_four(remote_dir.path());
    let tag = |id: &str| {
        remote
            .tag_lightweight("term-1", &remote.revparse_single(id).unwrap(), true)
            .unwrap();
    };
    tag(&first);
    let r = lab
        .reconciler(config(&lab, remote_dir.path(), "tag: term-1", "1h"))
        .await;
    assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1]);
    let a = course("revs-a", 3);
    let second = commit(
        &remote,
        &[(&path_of("revs-a"), Some(&a))],
        "Three for revs-a",
    );
    tag(&second);
    r.fetch_now();
    assert_eq!(
        warm(&pass(&r).await),
        [2, 2, 2, 1],
        "the moved tag is not followed"
    );
    assert_eq!(r.store().courses().await.unwrap()[0].revision, first);
    let moved = events_of(&r, "tag-moved").await;
    assert!(
        moved.len() == 1
            && moved[0].contains(&format!(
                "tag `term-1` was moved on the remote from {first} to {second}"
            )),
        "{moved:?}"
    );
    let source = status_json(&lab)["source"].clone();
    assert!(
        source["last_fetch_error"]
            .as_str()
            .is_some_and(|e| e.contains("follow_moved_tags")),
        "{source}"
    );
    assert_eq!(source["applied"]["id"], first);
    drop(r);

    // The configuration allows it: the same mirror follows the tag.
    let r = lab
        .reconciler(config(
            &lab,
            remote_dir.path(),
            "tag: term-1, follow_moved_tags: true",
            "1h",
        ))
        .await;
    assert_eq!(warm(&pass(&r).await), [3, 2, 2, 1], "followed");
    let moved = events_of(&r, "tag-moved").await;
    assert!(moved[0].contains("following it"), "{moved:?}");
    assert_eq!(status_json(&lab)["source"]["applied"]["id"], second);
}

/// Issue 16 §5: a `duplicate-name` diagnostic of a Git revision named a
/// scratch folder (`/tmp/…/courses/gamma.yaml:1`); it names the repository
/// path.
#[test]
fn a_duplicate_name_in_a_commit_names_repository_paths() {
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(dir.path()).unwrap();
    let text = course("revs-gamma", 1);
    commit(
        &repo,
        &[
            ("courses/revs-gamma.yaml", Some(&text)),
            ("courses/more/revs-gamma.yaml", Some(&text)),
        ],
        "Twice",
    );
    let rejected =
        labpool::source::git::load_git(dir.path(), "HEAD", Some(Path::new("courses")), None)
            .unwrap()
            .unwrap_err();
    let shown: Vec<String> = rejected.diagnostics.iter().map(|d| d.to_string()).collect();
    let duplicate = shown
        .iter()
        .find(|d| d.contains("duplicate-name"))
        .unwrap_or_else(|| panic!("{shown:?}"));
    // Files in path order: `more/` comes first and keeps the name.
    assert!(
        duplicate.starts_with("courses/revs-gamma.yaml:1:")
            && duplicate.contains("already defined in courses/more/revs-gamma.yaml:1"),
        "{duplicate}"
    );
    let tmp = std::env::temp_dir();
    assert!(
        shown.iter().all(|d| !d.contains(tmp.to_str().unwrap())),
        "{shown:?}"
    );
}

/// Issue 16 §2: the hold and its confirmation are in the store: a restart
/// neither applies a held revision nor records it again, and a confirmation
/// given while labpool was down applies after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_neither_applies_a_held_revision_nor_forgets_its_confirmation() {
    let lab = Lab::new();
    let remote_dir = tempfile::tempdir().unwrap();
    let (remote, branch, first) = remote_with_four(remote_dir.path());
    let pin = format!("branch: {branch}");
    let cut = {
        let r = lab
            .reconciler(config(&lab, remote_dir.path(), &pin, "1h"))
            .await;
        assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1]);
        let cut = commit(
            &remote,
            &[
                (&path_of("revs-a"), None),
                (&path_of("revs-b"), None),
                (&path_of("revs-c"), None),
            ],
            "Only revs-d",
        );
        r.fetch_now();
        assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1]);
        cut
    };
    let r = lab
        .reconciler(config(&lab, remote_dir.path(), &pin, "1h"))
        .await;
    assert_eq!(
        warm(&pass(&r).await),
        [2, 2, 2, 1],
        "still held after a restart"
    );
    assert_eq!(events_of(&r, "revision-held").await.len(), 1);
    assert_eq!(status_json(&lab)["source"]["applied"]["id"], first);
    drop(r);

    let ok = labpool(&lab, &["revision", "confirm", &cut]);
    assert_eq!(ok.status, 0, "{}{}", ok.stdout, ok.stderr);
    let show = labpool(&lab, &["revision", "show"]);
    assert!(
        show.stdout.contains(&format!("held     {cut}"))
            && show.stdout.contains("confirmed by cli:"),
        "{}",
        show.stdout
    );
    let r = lab
        .reconciler(config(&lab, remote_dir.path(), &pin, "1h"))
        .await;
    assert_eq!(
        warm(&pass(&r).await),
        [0, 0, 0, 1],
        "the confirmation is kept"
    );
    assert_eq!(status_json(&lab)["source"]["applied"]["id"], cut);
}

/// Issue 16 §2 with a local folder: removing 3 of 4 course files is held
/// just the same, and `labpool plan` warns and plans on what runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_edit_removing_most_courses_is_held_and_plan_warns() {
    let lab = Lab::new();
    let uri = lab.test_host("a");
    let config = lab.config(&format!(
        "reconcile: {{ boots_per_host: 8, orphan_grace: 1h }}\nhosts:\n  - name: a\n    uri: \"{uri}\"\n    storage_pool: labpool\n    capacity: {{ vms: 40, memory: 64GiB, vcpus: 64 }}\nimages:\n  busybox: {{ volume: base.qcow2 }}\n"
    ));
    for (n, w) in FOUR {
        lab.course_text(n, &course(n, w));
    }
    let r = lab.reconciler(config).await;
    assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1]);
    for n in ["revs-a", "revs-b", "revs-c"] {
        lab.remove_course(n);
    }
    assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1], "held");
    let plan = labpool(&lab, &["plan"]);
    assert!(
        plan.stderr.contains("removes 3 of 4 courses (warm VMs -6)")
            && plan.stderr.contains("planning on the revision in force"),
        "{}",
        plan.stderr
    );
    // (The test host of another process has none of this one's VMs: only
    // the courses planned for matter here.)
    let planned = |name: &str| {
        plan.stdout
            .lines()
            .any(|l| l.starts_with(name) && !l.contains("removed"))
    };
    assert!(
        FOUR.iter().all(|(n, _)| planned(n)),
        "planned on the four courses in force: {}",
        plan.stdout
    );
    assert_eq!(
        gauge(&r, "labpool_revision_held").await.as_deref(),
        Some("1")
    );
    // One back: 2 of 4 courses is not more than half, but 4 of 7 warm VMs is.
    lab.course_text("revs-a", &course("revs-a", 2));
    assert_eq!(warm(&pass(&r).await), [2, 2, 2, 1], "held for its warm VMs");
    let held = status_json(&lab)["source"]["held"].clone();
    assert!(
        held["reason"]
            .as_str()
            .unwrap()
            .contains("max_warm_removed_share"),
        "{held}"
    );
    // Two back: 1 of 4 courses, 2 of 7 warm VMs: applied.
    lab.course_text("revs-b", &course("revs-b", 2));
    assert_eq!(warm(&pass(&r).await), [2, 2, 0, 1]);
    assert_eq!(
        gauge(&r, "labpool_revision_held").await.as_deref(),
        Some("0")
    );
}
