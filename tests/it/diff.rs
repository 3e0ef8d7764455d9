//! `labpool diff BASE HEAD`: folders and real Git repositories, run through
//! the built binary in every format.

use std::path::Path;

use crate::support::{Run, labpool_in, root};

fn course(name: &str, title: &str, image: &str, warm: u32) -> String {
    format!(
        "name: {name}\ntitle: {title}\nimage: {image}\nvm: {{ vcpus: 2, memory: 4GiB }}\npool: {{ warm: {warm}, max: 40 }}\n"
    )
}

fn write(dir: &Path, files: &[(&str, String)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(format!("{name}.yaml")), text).unwrap();
    }
}

fn diff_in(dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["diff"];
    all.extend_from_slice(args);
    labpool_in(dir, &all)
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("JSON ({e}): {}\n{}", run.stdout, run.stderr))
}

fn has_line(run: &Run, line: &str) {
    assert!(
        run.stdout.lines().any(|l| l.trim_end() == line),
        "no line {line:?} in:\n{}{}",
        run.stdout,
        run.stderr
    );
}

/// base and head folders under one temporary directory.
fn folders(base: &[(&str, String)], head: &[(&str, String)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("base"), base);
    write(&tmp.path().join("head"), head);
    tmp
}

#[test]
fn folders_created_removed_changed_and_renamed() {
    let keep = course("keep", "Keep", "busybox", 1);
    let tmp = folders(
        &[
            ("warmer", course("warmer", "Warmer", "busybox", 2)),
            ("rebuilt", course("rebuilt", "Rebuilt", "busybox", 3)),
            ("retitled", course("retitled", "Old title", "busybox", 1)),
            ("old-lab", course("old-lab", "Old", "busybox", 4)),
            ("keep", keep.clone()),
        ],
        &[
            ("warmer", course("warmer", "Warmer", "busybox", 5)),
            ("rebuilt", course("rebuilt", "Rebuilt", "alpine", 3)),
            ("retitled", course("retitled", "New title", "busybox", 1)),
            ("rhel-101", course("rhel-101", "RHEL", "rhel-9", 5)),
            ("new-lab", course("new-lab", "New", "busybox", 4)),
            ("keep", keep),
        ],
    );

    let human = diff_in(tmp.path(), &["base", "head"]);
    assert_eq!(human.status, 2, "{}{}", human.stdout, human.stderr);
    has_line(
        &human,
        "+ rhel-101: new pool, 5 warm (max 40), image rhel-9, 2 vCPU / 4GiB",
    );
    has_line(
        &human,
        "- old-lab: removed: its warm VMs are destroyed at once, assigned VMs drain as their sessions end",
    );
    has_line(&human, "~ warmer:");
    has_line(&human, "    warm 2 → 5 (+3 warm VMs)");
    has_line(
        &human,
        "    build: image busybox → alpine; replaces 3 warm VMs (rolling); assigned VMs keep the old build until their sessions end",
    );
    has_line(
        &human,
        "    settings: title \"Old title\" → \"New title\" (no VM is replaced)",
    );
    has_line(
        &human,
        "note: looks like a rename of old-lab to new-lab: students on old-lab keep their VMs until their sessions end; new-lab starts empty",
    );
    has_line(
        &human,
        "2 created, 1 removed, 3 changed (1 replaces warm VMs); warm VMs +8",
    );
    assert!(!human.stdout.contains(" keep:"), "{}", human.stdout);

    let md = diff_in(tmp.path(), &["base", "head", "--format", "markdown"]);
    assert_eq!(md.status, 2);
    assert!(
        md.stdout.starts_with("<!-- labpool-diff -->\n"),
        "{}",
        md.stdout
    );
    has_line(&md, "| course | change |");
    has_line(&md, "| `warmer` | **changed**: warm 2 → 5 |");
    has_line(
        &md,
        "| `rebuilt` | **changed**: **replaces warm VMs** (image) |",
    );
    has_line(&md, "| `retitled` | **changed**: settings (title) |");
    has_line(
        &md,
        "| `old-lab` | **removed**: its warm VMs are destroyed at once, assigned VMs drain as their sessions end |",
    );
    has_line(
        &md,
        "| `rhel-101` | **created**: new pool, 5 warm (max 40), image rhel-9, 2 vCPU / 4GiB |",
    );
    has_line(
        &md,
        "**2 created, 1 removed, 3 changed (1 replaces warm VMs); warm VMs +8**",
    );
    has_line(&md, "- warm 2 → 5 (+3 warm VMs)");

    let run = diff_in(tmp.path(), &["base", "head", "--format", "json"]);
    assert_eq!(run.status, 2);
    let v = json(&run);
    let by_name = |name: &str| {
        v["courses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {v:#}"))
            .clone()
    };
    let names: Vec<&str> = v["courses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "new-lab", "old-lab", "rebuilt", "retitled", "rhel-101", "warmer"
        ]
    );
    assert_eq!(by_name("rhel-101")["change"], "created");
    assert_eq!(
        by_name("rhel-101")["warm"],
        serde_json::json!({"from": null, "to": 5})
    );
    assert_eq!(by_name("old-lab")["change"], "removed");
    assert_eq!(
        by_name("warmer")["warm"],
        serde_json::json!({"from": 2, "to": 5})
    );
    assert_eq!(by_name("warmer")["replaces_warm_vms"], false);
    assert_eq!(by_name("rebuilt")["replaces_warm_vms"], true);
    assert_eq!(
        by_name("rebuilt")["replaced_fields"],
        serde_json::json!(["image"])
    );
    assert_eq!(by_name("retitled")["replaces_warm_vms"], false);
    assert_eq!(by_name("retitled")["settings"][0]["field"], "title");
    assert_eq!(by_name("new-lab")["rename_of"], "old-lab");
    assert_eq!(
        v["summary"],
        serde_json::json!({"created": 2, "removed": 1, "changed": 3, "replacing": 1, "unchanged": 1, "warm_delta": 8})
    );
    assert_eq!(v["base"]["source"], "folder");
    assert_eq!(v["head"]["valid"], true);
}

#[test]
fn no_changes_exit_zero() {
    let c = course("lab", "Lab", "busybox", 1);
    let tmp = folders(&[("lab", c.clone())], &[("lab", c)]);
    let run = diff_in(tmp.path(), &["base", "head"]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    has_line(&run, "no changes (1 course)");
    let run = diff_in(tmp.path(), &["base", "head", "--format", "json"]);
    assert_eq!(run.status, 0);
    assert_eq!(json(&run)["courses"], serde_json::json!([]));
    let run = diff_in(tmp.path(), &["base", "head", "--format", "markdown"]);
    assert_eq!(run.status, 0);
    assert!(run.stdout.contains("**No changes**"), "{}", run.stdout);
}

#[test]
fn an_invalid_base_counts_as_nothing_applied() {
    let tmp = folders(
        &[("lab", "name: lab\ntitle: Lab\n".to_string())],
        &[("lab", course("lab", "Lab", "busybox", 2))],
    );
    let run = diff_in(tmp.path(), &["base", "head", "--format", "json"]);
    assert_eq!(run.status, 2, "{}{}", run.stdout, run.stderr);
    let v = json(&run);
    assert_eq!(v["base"]["valid"], false);
    assert_eq!(v["courses"][0]["change"], "created");
    assert!(
        v["notes"][0].as_str().unwrap().contains("is invalid"),
        "{v:#}"
    );
}

/// Commits the files (path → text) on HEAD; returns the commit id.
fn commit(repo: &git2::Repository, files: &[(String, String)], message: &str) -> String {
    let workdir = repo.workdir().unwrap().to_path_buf();
    let mut index = repo.index().unwrap();
    for (path, text) in files {
        let full = workdir.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, text).unwrap();
        index.add_path(Path::new(path)).unwrap();
    }
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("Ada Instructor", "ada@example.edu").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
        .to_string()
}

fn example(name: &str) -> String {
    std::fs::read_to_string(root().join("courses").join(format!("{name}.yaml"))).unwrap()
}

/// A repository whose first commit holds the example courses and whose
/// second raises intro-shell's warm and gives linux-101 a third window.
fn repository() -> (tempfile::TempDir, git2::Repository) {
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(dir.path()).unwrap();
    let files: Vec<(String, String)> = ["intro-shell", "linux-101", "net-201"]
        .iter()
        .map(|n| (format!("courses/{n}.yaml"), example(n)))
        .collect();
    commit(&repo, &files, "Example courses");
    let intro = example("intro-shell").replace("warm: 1 ", "warm: 3 ");
    let linux = example("linux-101").replace(
        "    - { days: [fri]",
        "    - { days: [tue, thu], from: \"18:00\", to: \"20:00\", tz: UTC, warm: 5 }\n    - { days: [fri]",
    );
    assert_ne!(intro, example("intro-shell"));
    assert_ne!(linux, example("linux-101"));
    commit(
        &repo,
        &[
            ("courses/intro-shell.yaml".into(), intro),
            ("courses/linux-101.yaml".into(), linux),
        ],
        "More warm VMs for intro-shell, an evening class for linux-101",
    );
    (dir, repo)
}

#[test]
fn git_revisions_in_every_format() {
    let (dir, repo) = repository();
    let head = repo
        .head()
        .unwrap()
        .peel_to_commit()
        .unwrap()
        .id()
        .to_string();
    let args = ["HEAD~1", "HEAD", "--repo", dir.path().to_str().unwrap()];
    let elsewhere = tempfile::tempdir().unwrap();

    let human = diff_in(elsewhere.path(), &args);
    assert_eq!(human.status, 2, "{}{}", human.stdout, human.stderr);
    has_line(&human, "~ intro-shell:");
    has_line(&human, "    warm 1 → 3 (+2 warm VMs)");
    has_line(&human, "~ linux-101:");
    has_line(&human, "    window added: tue,thu 18:00–20:00 UTC: 5 warm");
    has_line(&human, "0 created, 0 removed, 2 changed; warm VMs +2");
    assert!(human.stdout.contains(&head[..10]), "{}", human.stdout);

    let mut md_args = args.to_vec();
    md_args.extend(["--format", "markdown"]);
    let md = diff_in(elsewhere.path(), &md_args);
    assert_eq!(md.status, 2);
    assert!(md.stdout.starts_with("<!-- labpool-diff -->"));
    has_line(&md, "| `intro-shell` | **changed**: warm 1 → 3 |");
    has_line(&md, "| `linux-101` | **changed**: schedule |");
    has_line(&md, "- window added: tue,thu 18:00–20:00 UTC: 5 warm");

    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    let run = diff_in(elsewhere.path(), &json_args);
    assert_eq!(run.status, 2);
    let v = json(&run);
    assert_eq!(v["head"]["id"], head);
    assert_eq!(v["head"]["commit"]["author"], "Ada Instructor");
    assert_eq!(v["base"]["commit"]["subject"], "Example courses");
    assert_eq!(
        v["courses"][0]["warm"],
        serde_json::json!({"from": 1, "to": 3})
    );
    assert_eq!(
        v["courses"][1]["windows"]["added"],
        serde_json::json!([{"days": ["tue", "thu"], "from": "18:00", "to": "20:00", "tz": "UTC", "warm": 5}])
    );
    assert_eq!(v["summary"]["unchanged"], 1);
    assert_eq!(v["summary"]["warm_delta"], 2);

    // The same revision on both sides: nothing to do.
    let run = diff_in(
        elsewhere.path(),
        &["HEAD", "HEAD", "--repo", dir.path().to_str().unwrap()],
    );
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
}

#[test]
fn an_invalid_head_commit_is_rejected_with_file_and_line() {
    let (dir, repo) = repository();
    let broken = example("net-201").replace("max: 3", "max: three");
    commit(
        &repo,
        &[("courses/net-201.yaml".into(), broken.clone())],
        "Oops",
    );
    let line = broken
        .lines()
        .position(|l| l.contains("max: three"))
        .unwrap()
        + 1;
    let repo_arg = dir.path().to_str().unwrap();

    let human = diff_in(dir.path(), &["HEAD~1", "HEAD", "--repo", repo_arg]);
    assert_eq!(human.status, 1, "{}{}", human.stdout, human.stderr);
    let place = format!("courses/net-201.yaml:{line}:");
    assert!(
        human.stdout.lines().any(|l| l.starts_with(&place)),
        "no {place} in:\n{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("merging it would be rejected"),
        "{}",
        human.stdout
    );

    let md = diff_in(
        dir.path(),
        &["HEAD~1", "HEAD", "--repo", repo_arg, "--format", "markdown"],
    );
    assert_eq!(md.status, 1);
    assert!(md.stdout.starts_with("<!-- labpool-diff -->"));
    assert!(
        md.stdout.contains("**Merging this would be rejected**"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout
            .contains(&format!("- `courses/net-201.yaml:{line}:")),
        "{}",
        md.stdout
    );

    let run = diff_in(
        dir.path(),
        &["HEAD~1", "HEAD", "--repo", repo_arg, "--format", "json"],
    );
    assert_eq!(run.status, 1);
    let v = json(&run);
    assert_eq!(v["head"]["valid"], false);
    assert_eq!(v["diagnostics"][0]["file"], "courses/net-201.yaml");
    assert_eq!(v["diagnostics"][0]["line"], line);
}

#[test]
fn an_unknown_revision_is_invalid_and_an_unreadable_repository_io() {
    let (dir, _repo) = repository();
    let run = diff_in(dir.path(), &["main-typo", "HEAD"]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.contains("labpool: no commit `main-typo` in ."),
        "{}",
        run.stderr
    );
    let not_a_repo = tempfile::tempdir().unwrap();
    let run = diff_in(not_a_repo.path(), &["HEAD~1", "HEAD"]);
    assert_eq!(run.status, 74, "an unreadable repository is I/O");
    assert!(
        run.stderr.contains("cannot open the Git repository"),
        "{}",
        run.stderr
    );
}

/// Issue 16 §2: `labpool diff` printed "3 removed; warm VMs -7" with no
/// warning. A HEAD that labpool would hold says so, in every format.
#[test]
fn a_head_removing_most_courses_warns_that_labpool_holds_it() {
    let four: Vec<(&str, String)> = [("revs-a", 2), ("revs-b", 2), ("revs-c", 2), ("revs-d", 1)]
        .iter()
        .map(|(n, w)| (*n, course(n, n, "busybox", *w)))
        .collect();
    let tmp = folders(&four, &four[..1]);
    let run = diff_in(tmp.path(), &["base", "head"]);
    assert_eq!(run.status, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.lines().any(|l| l.starts_with(
            "warning: this revision removes 3 of 4 courses (warm VMs -5): it removes more than source.hold.max_removed_share (0.5) of the courses; labpool will hold it until an admin confirms it"
        )),
        "{}",
        run.stdout
    );
    let md = diff_in(tmp.path(), &["base", "head", "--format", "markdown"]);
    assert!(
        md.stdout
            .contains("> **Warning**: this revision removes 3 of 4 courses"),
        "{}",
        md.stdout
    );
    let v = json(&diff_in(tmp.path(), &["base", "head", "--format", "json"]));
    assert_eq!(v["hold"]["warm_removed"], 5, "{v:#}");
    // Half of them is not held.
    let tmp = folders(&four, &four[..2]);
    let run = diff_in(tmp.path(), &["base", "head"]);
    assert!(!run.stdout.contains("warning:"), "{}", run.stdout);
    assert!(json(&diff_in(tmp.path(), &["base", "head", "--format", "json"]))["hold"].is_null());

    // A commit leaving only `.gitkeep` removes every course: held.
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(dir.path()).unwrap();
    let text = course("revs-a", "A", "busybox", 1);
    crate::source_git::commit(&repo, &[("courses/revs-a.yaml", Some(&text))], "One");
    let empty = crate::source_git::commit(
        &repo,
        &[
            ("courses/revs-a.yaml", None),
            ("courses/.gitkeep", Some("")),
        ],
        "Empty",
    );
    let run = diff_in(
        dir.path(),
        &["HEAD~1", "HEAD", "--repo", dir.path().to_str().unwrap()],
    );
    assert_eq!(run.status, 2, "{}{}", run.stdout, run.stderr);
    has_line(
        &run,
        &format!(
            "warning: this revision removes 1 of 1 courses (warm VMs -1): it removes every course; labpool will hold it until an admin confirms it (labpool revision confirm {empty})"
        ),
    );
}
