//! Course revisions read from real Git repositories made by the test.

use std::path::Path;

use labpool::source::git::{GitError, load_git};

/// Commits `files` (path → text; `None` deletes) on HEAD of the repository at
/// `dir` and returns the new commit id.
pub fn commit(repo: &git2::Repository, files: &[(&str, Option<&str>)], message: &str) -> String {
    let workdir = repo.workdir().expect("non-bare").to_path_buf();
    let mut index = repo.index().unwrap();
    for (path, text) in files {
        let full = workdir.join(path);
        match text {
            Some(text) => {
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, text).unwrap();
                index.add_path(Path::new(path)).unwrap();
            }
            None => {
                std::fs::remove_file(&full).unwrap();
                index.remove_path(Path::new(path)).unwrap();
            }
        }
    }
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("Ada Instructor", "ada@example.edu").unwrap();
    let parents: Vec<git2::Commit> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parents: Vec<&git2::Commit> = parents.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
        .to_string()
}

fn course(name: &str, warm: u32) -> String {
    format!(
        "name: {name}\ntitle: {name}\nimage: busybox\nvm: {{ vcpus: 1, memory: 192MiB }}\npool: {{ warm: {warm}, max: 10 }}\n"
    )
}

#[test]
fn a_commit_is_read_from_its_tree_with_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(dir.path()).unwrap();
    let a = course("lab-a", 2);
    let first = commit(
        &repo,
        &[("courses/lab-a.yaml", Some(&a)), ("README.md", Some("hi"))],
        "Add lab-a\n\nbody",
    );
    let b = course("lab-b", 1);
    let second = commit(&repo, &[("courses/lab-b.yaml", Some(&b))], "Add lab-b");
    repo.tag_lightweight("v1", &repo.revparse_single(&first).unwrap(), false)
        .unwrap();
    // An uncommitted edit in the work tree is not part of any revision.
    std::fs::write(dir.path().join("courses/lab-a.yaml"), course("lab-a", 9)).unwrap();

    let head = load_git(dir.path(), "HEAD", Some(Path::new("courses")), None)
        .unwrap()
        .unwrap();
    assert_eq!(head.id, second);
    let names: Vec<&str> = head.courses.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["lab-a", "lab-b"]);
    assert_eq!(
        head.courses[0].pool.warm, 2,
        "committed text, not the work tree"
    );
    let commit_info = head.commit.unwrap();
    assert_eq!(commit_info.subject, "Add lab-b");
    assert_eq!(commit_info.author, "Ada Instructor");
    assert!(commit_info.time > 1_700_000_000);

    // A tag stays where it was while the branch moves on.
    let pinned = load_git(dir.path(), "v1", Some(Path::new("courses")), None)
        .unwrap()
        .unwrap();
    assert_eq!(pinned.id, first);
    assert_eq!(pinned.courses.len(), 1);
    assert_eq!(pinned.commit.unwrap().subject, "Add lab-a");
}

#[test]
fn an_invalid_commit_is_rejected_with_repository_paths() {
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(dir.path()).unwrap();
    let broken = "name: lab-a\ntitle: A\nimage: busybox\nvm: { vcpus: 1, memory: 192MiB }\npool: { warm: 5, max: 2 }\n";
    commit(&repo, &[("courses/lab-a.yaml", Some(broken))], "Break it");
    let rejected = load_git(dir.path(), "HEAD", Some(Path::new("courses")), None)
        .unwrap()
        .unwrap_err();
    let shown: Vec<String> = rejected.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        shown.iter().any(|d| d.starts_with("courses/lab-a.yaml:5:")),
        "{shown:?}"
    );
}

#[test]
fn unknown_revisions_and_folders_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(dir.path()).unwrap();
    commit(
        &repo,
        &[("courses/lab-a.yaml", Some(&course("lab-a", 1)))],
        "One",
    );
    let err = load_git(dir.path(), "no-such-branch", None, None).unwrap_err();
    assert!(matches!(err, GitError::Revision { .. }), "{err}");
    assert!(err.to_string().contains("no commit `no-such-branch`"));
    let err = load_git(dir.path(), "HEAD", Some(Path::new("labs")), None).unwrap_err();
    assert!(matches!(err, GitError::NoFolder { .. }), "{err}");
    let err = load_git(&dir.path().join("nowhere"), "HEAD", None, None).unwrap_err();
    assert!(matches!(err, GitError::Open { .. }), "{err}");
    // A whole repository as the folder works too.
    let all = load_git(dir.path(), "HEAD", None, None).unwrap().unwrap();
    assert_eq!(all.courses.len(), 1);
}

pub mod following {
    //! The reconciler following a Git remote (a repository made by the test,
    //! reached over file://) on libvirt test hosts.

    use std::time::{Duration, Instant};

    use labpool::store::VmState;

    use super::{commit, course};
    use crate::lab::{Lab, count};

    pub fn config(
        lab: &Lab,
        remote: &std::path::Path,
        pin: &str,
        interval: &str,
    ) -> labpool::config::Config {
        let uri = lab.test_host("a");
        lab.config(&format!(
            "reconcile: {{ boots_per_host: 8, orphan_grace: 1h }}\nhosts:\n  - name: a\n    uri: \"{uri}\"\n    storage_pool: labpool\n    capacity: {{ vms: 40, memory: 64GiB, vcpus: 64 }}\nimages:\n  busybox: {{ volume: base.qcow2 }}\n"
        ));
        // The lab's config has `source: { folder: courses }`: rewrite it.
        let file = lab.path().join("labpool.yaml");
        let text = std::fs::read_to_string(&file).unwrap().replace(
            "source: { folder: courses }",
            &format!(
                "source:\n  git: {{ url: \"file://{}\", {pin}, path: courses, interval: {interval} }}",
                remote.display()
            ),
        );
        std::fs::write(&file, text).unwrap();
        labpool::config::Config::load(&file).unwrap()
    }

    async fn warm(r: &labpool::reconcile::Reconciler, name: &str) -> usize {
        r.pass().await.unwrap();
        r.settle().await;
        count(&r.store().vms().await.unwrap(), name, VmState::Warm)
    }

    #[tokio::test]
    async fn follows_the_branch_after_an_interval_and_skips_broken_commits() {
        let lab = Lab::new();
        let remote_dir = tempfile::tempdir().unwrap();
        let remote = git2::Repository::init(remote_dir.path()).unwrap();
        commit(
            &remote,
            &[("courses/lab.yaml", Some(&course("lab", 2)))],
            "Two warm",
        );
        remote
            .branch(
                "main",
                &remote.head().unwrap().peel_to_commit().unwrap(),
                true,
            )
            .ok();
        let branch = remote.head().unwrap().shorthand().unwrap().to_string();
        let r = lab
            .reconciler(config(
                &lab,
                remote_dir.path(),
                &format!("branch: {branch}"),
                "1s",
            ))
            .await;
        assert_eq!(
            warm(&r, "lab").await,
            2,
            "first fetch applies the branch head"
        );
        let events = r.store().events(10).await.unwrap();
        let applied = events
            .iter()
            .find(|e| e.kind == "revision-applied")
            .unwrap();
        assert!(
            applied.message.contains("\"Two warm\" by Ada Instructor"),
            "{}",
            applied.message
        );

        // A new commit is picked up once the interval has passed, not before.
        let pushed = Instant::now();
        commit(
            &remote,
            &[("courses/lab.yaml", Some(&course("lab", 4)))],
            "Four warm",
        );
        assert_eq!(
            warm(&r, "lab").await,
            2,
            "within the interval nothing is fetched"
        );
        let mut n = 2;
        while n != 4 {
            assert!(
                pushed.elapsed() < Duration::from_secs(10),
                "not applied after the interval"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            n = warm(&r, "lab").await;
        }
        assert!(
            pushed.elapsed() >= Duration::from_millis(900),
            "applied after one interval"
        );

        // A broken commit: rejected with file:line, the pool stays; the next
        // good commit applies.
        let broken = "name: lab\ntitle: lab\nimage: busybox\nvm: { vcpus: 1, memory: 192MiB }\npool: { warm: 9, max: 2 }\n";
        commit(&remote, &[("courses/lab.yaml", Some(broken))], "Oops");
        r.fetch_now();
        assert_eq!(warm(&r, "lab").await, 4);
        let events = r.store().events(20).await.unwrap();
        let rejected = events
            .iter()
            .find(|e| e.kind == "revision-rejected")
            .expect("rejected");
        assert!(
            rejected.message.contains("lab.yaml:5:"),
            "{}",
            rejected.message
        );
        // `labpool status` shows the applied commit and the rejected one.
        let file = lab.path().join("labpool.yaml");
        let file = file.to_str().unwrap();
        let status_json = || {
            let run = crate::support::labpool_in(
                lab.path(),
                &["status", "--config", file, "--format", "json"],
            );
            serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()
        };
        let source = status_json()["source"].clone();
        assert_eq!(source["kind"], "git");
        assert_eq!(source["applied"]["commit"]["subject"], "Four warm");
        let diagnostics = source["rejected"]["diagnostics"].to_string();
        assert!(diagnostics.contains("lab.yaml:5:"), "{diagnostics}");
        let human = crate::support::labpool_in(lab.path(), &["status", "--config", file]);
        assert!(
            human.stdout.contains("\"Four warm\" by Ada Instructor"),
            "{}",
            human.stdout
        );
        assert!(human.stdout.contains("rejected commit"), "{}", human.stdout);
        commit(
            &remote,
            &[("courses/lab.yaml", Some(&course("lab", 3)))],
            "Fix",
        );
        r.fetch_now();
        assert_eq!(warm(&r, "lab").await, 3);

        // The remote disappears: fetches fail, the pool stays as it was.
        let moved = remote_dir.path().with_extension("gone");
        std::fs::rename(remote_dir.path(), &moved).unwrap();
        r.fetch_now();
        assert_eq!(warm(&r, "lab").await, 3);
        let events = r.store().events(20).await.unwrap();
        assert!(
            events.iter().any(|e| e.kind == "fetch-failed"),
            "{events:?}"
        );
        let source = status_json()["source"].clone();
        assert!(source["last_fetch_error"].is_string(), "{source}");
        assert_eq!(source["applied"]["commit"]["subject"], "Fix");
        std::fs::rename(&moved, remote_dir.path()).unwrap();
    }

    #[tokio::test]
    async fn a_pinned_tag_does_not_move_with_the_branch() {
        let lab = Lab::new();
        let remote_dir = tempfile::tempdir().unwrap();
        let remote = git2::Repository::init(remote_dir.path()).unwrap();
        let first = commit(
            &remote,
            &[("courses/lab.yaml", Some(&course("lab", 1)))],
            "One",
        );
        remote
            .tag_lightweight("term-1", &remote.revparse_single(&first).unwrap(), false)
            .unwrap();
        let r = lab
            .reconciler(config(&lab, remote_dir.path(), "tag: term-1", "1s"))
            .await;
        assert_eq!(warm(&r, "lab").await, 1);
        commit(
            &remote,
            &[("courses/lab.yaml", Some(&course("lab", 5)))],
            "Five",
        );
        r.fetch_now();
        assert_eq!(
            warm(&r, "lab").await,
            1,
            "the tag still names the first commit"
        );
        let courses = r.store().courses().await.unwrap();
        assert_eq!(courses[0].revision, first);
    }
}

mod webhook {
    //! `POST /hooks/git` on a running HTTP listener: a signed call fetches at
    //! once (the interval is an hour), a forged one gets 401 and fetches
    //! nothing.

    use labpool::http::webhook::github_signature;
    use labpool::store::VmState;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{commit, course};
    use crate::lab::{Lab, count};

    /// Sends one HTTP/1.1 POST and returns the status code.
    pub async fn post(addr: std::net::SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> u16 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut request = format!(
            "POST /hooks/git HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response.split(' ').nth(1).unwrap().parse().unwrap()
    }

    /// A labpool following a fresh remote (one course, the webhook secret
    /// `s3cret` and `extra` source keys), applied once and serving HTTP on
    /// its base URL: the lab, the remote's folder and repository, the
    /// reconciler and the address.
    async fn serving(
        extra: &str,
    ) -> (
        Lab,
        tempfile::TempDir,
        git2::Repository,
        labpool::reconcile::Reconciler,
        std::net::SocketAddr,
    ) {
        let lab = Lab::new();
        let remote_dir = tempfile::tempdir().unwrap();
        let remote = git2::Repository::init(remote_dir.path()).unwrap();
        commit(
            &remote,
            &[("courses/lab.yaml", Some(&course("lab", 1)))],
            "One",
        );
        let branch = remote.head().unwrap().shorthand().unwrap().to_string();
        let mut config = super::following::config(
            &lab,
            remote_dir.path(),
            &format!("branch: {branch}, webhook_secret: s3cret{extra}"),
            "1h",
        );
        // labpool answers only to its base URL's host and port.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        config.lti.base_url = Some(format!("http://{addr}"));
        let r = lab.reconciler(config).await;
        r.pass().await.unwrap();
        r.settle().await;
        let app = labpool::http::App::new(r.clone()).await.unwrap();
        tokio::spawn(labpool::http::serve(listener, app, std::future::pending()));
        (lab, remote_dir, remote, r, addr)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_signed_push_applies_at_once_and_a_forged_one_is_refused() {
        let (_lab, _remote_dir, remote, r, addr) = serving("").await;

        let pushed = commit(
            &remote,
            &[("courses/lab.yaml", Some(&course("lab", 3)))],
            "Three",
        );
        let body = br#"{"ref":"refs/heads/main"}"#;
        let forged = github_signature("guess", body);
        assert_eq!(
            post(addr, &[("X-Hub-Signature-256", &forged)], body).await,
            401
        );
        assert_eq!(post(addr, &[("X-Gitlab-Token", "guess")], body).await, 401);
        assert_eq!(post(addr, &[], body).await, 401);
        r.pass().await.unwrap();
        r.settle().await;
        assert_eq!(
            count(&r.store().vms().await.unwrap(), "lab", VmState::Warm),
            1,
            "nothing fetched"
        );

        let good = github_signature("s3cret", body);
        assert_eq!(
            post(addr, &[("X-Hub-Signature-256", &good)], body).await,
            202
        );
        r.pass().await.unwrap();
        r.settle().await;
        assert_eq!(
            count(&r.store().vms().await.unwrap(), "lab", VmState::Warm),
            3
        );
        assert_eq!(r.store().courses().await.unwrap()[0].revision, pushed);
    }

    /// Issue 15 §7: one captured signed delivery was accepted 96 times in
    /// 5 s and caused 91 fetches. Now a delivery seen before (same id, or
    /// same signed body under a new id) fetches nothing, and distinct
    /// deliveries within `webhook_min_interval` fold into one fetch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replayed_and_bursting_deliveries_cost_one_fetch() {
        let (_lab, _remote_dir, _remote, r, addr) = serving(", webhook_min_interval: 2s").await;
        let fetched = r.fetches_started();

        // One delivery, replayed 20 times: the first fetches.
        let body = br#"{"ref":"refs/heads/main","after":"1"}"#;
        let good = github_signature("s3cret", body);
        let delivery = [
            ("X-Hub-Signature-256", good.as_str()),
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ];
        let first_post = std::time::Instant::now();
        assert_eq!(post(addr, &delivery, body).await, 202);
        for _ in 0..19 {
            assert_eq!(post(addr, &delivery, body).await, 200);
        }
        // The same signed body under a fresh id is the same delivery.
        let renamed = [
            ("X-Hub-Signature-256", good.as_str()),
            ("X-GitHub-Delivery", "00000000-0000-0000-0000-000000000001"),
        ];
        assert_eq!(post(addr, &renamed, body).await, 200);
        // GitLab's id, with its token.
        let gitlab = [
            ("X-Gitlab-Token", "s3cret"),
            (
                "X-Gitlab-Event-UUID",
                "b1a2c3d4-0000-4000-8000-000000000001",
            ),
        ];
        for _ in 0..5 {
            r.pass().await.unwrap();
        }
        assert_eq!(
            r.fetches_started(),
            fetched + 1,
            "one fetch for the replays"
        );

        // A burst of distinct deliveries right after: folded into one fetch
        // at the end of the interval, none before.
        assert_eq!(post(addr, &gitlab, body).await, 202);
        assert_eq!(post(addr, &gitlab, body).await, 200, "a GitLab replay");
        for i in 0..20 {
            let body = format!(r#"{{"ref":"refs/heads/main","after":"{i}x"}}"#);
            let sig = github_signature("s3cret", body.as_bytes());
            let id = format!("burst-{i}");
            let h = [
                ("X-Hub-Signature-256", sig.as_str()),
                ("X-GitHub-Delivery", id.as_str()),
            ];
            assert_eq!(post(addr, &h, body.as_bytes()).await, 202);
        }
        let deadline = first_post + std::time::Duration::from_secs(10);
        while r.fetches_started() == fetched + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the folded fetch never ran"
            );
            r.pass().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            first_post.elapsed() >= std::time::Duration::from_millis(1900),
            "the folded fetch waited for the interval: {:?}",
            first_post.elapsed()
        );
        for _ in 0..5 {
            r.pass().await.unwrap();
        }
        assert_eq!(
            r.fetches_started(),
            fetched + 2,
            "22 deliveries, one more fetch"
        );
    }
}

/// An ssh remote's host key is checked against the configured known_hosts
/// file before anything else happens (a real dropbear server on loopback;
/// the checks run before authentication, so no login is needed).
#[test]
fn ssh_host_keys_are_checked_against_known_hosts() {
    use labpool::config::GitSourceConfig;
    use labpool::source::remote::Mirror;
    use std::process::Command;

    let dir = tempfile::tempdir().unwrap();
    let hostkey = dir.path().join("hostkey");
    let out = Command::new("dropbearkey")
        .args(["-t", "ed25519", "-f"])
        .arg(&hostkey)
        .output()
        .expect("dropbearkey (scripts/setup installs dropbear-bin)");
    let text = String::from_utf8_lossy(&out.stdout);
    let public = text
        .lines()
        .find(|l| l.starts_with("ssh-ed25519 "))
        .expect("public key line")
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("dropbear")
        .args(["-F", "-E", "-s", "-r"])
        .arg(&hostkey)
        .args(["-p", &format!("127.0.0.1:{port}"), "-P"])
        .arg(dir.path().join("pid"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dropbear runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "dropbear did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let fetch = |known_hosts: Option<&str>| {
        let file = known_hosts.map(|text| {
            let f = dir.path().join("known_hosts");
            std::fs::write(&f, text).unwrap();
            f
        });
        let config = GitSourceConfig {
            url: format!("ssh://git@127.0.0.1:{port}/srv/courses.git"),
            branch: None,
            tag: None,
            commit: None,
            path: "courses".into(),
            interval: "1m".parse().unwrap(),
            ssh_key: None,
            known_hosts: file,
            cache: dir.path().join("cache"),
            webhook_secret: None,
            webhook_min_interval: "10s".parse().unwrap(),
            follow_moved_tags: false,
        };
        Mirror::new(&config).fetch().unwrap_err().message
    };
    let unverified = fetch(None);
    let stranger = fetch(Some(
        "[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4\n",
    ));
    let known = fetch(Some(&format!("# test\n[127.0.0.1]:{port} {public}\n")));
    let _ = server.kill();
    let _ = server.wait();
    // (libgit2 words the refusal itself; labpool logs the reason.)
    assert!(unverified.contains("hostkey"), "{unverified}");
    assert!(stranger.contains("hostkey"), "{stranger}");
    assert!(
        !known.contains("hostkey"),
        "a listed key passes the check (then login fails): {known}"
    );
}
