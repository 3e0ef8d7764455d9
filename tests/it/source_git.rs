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
    let first = commit(&repo, &[("courses/lab-a.yaml", Some(&a)), ("README.md", Some("hi"))], "Add lab-a\n\nbody");
    let b = course("lab-b", 1);
    let second = commit(&repo, &[("courses/lab-b.yaml", Some(&b))], "Add lab-b");
    repo.tag_lightweight("v1", &repo.revparse_single(&first).unwrap(), false).unwrap();
    // An uncommitted edit in the work tree is not part of any revision.
    std::fs::write(dir.path().join("courses/lab-a.yaml"), course("lab-a", 9)).unwrap();

    let head = load_git(dir.path(), "HEAD", Some(Path::new("courses")), None).unwrap().unwrap();
    assert_eq!(head.id, second);
    let names: Vec<&str> = head.courses.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["lab-a", "lab-b"]);
    assert_eq!(head.courses[0].pool.warm, 2, "committed text, not the work tree");
    let commit_info = head.commit.unwrap();
    assert_eq!(commit_info.subject, "Add lab-b");
    assert_eq!(commit_info.author, "Ada Instructor");
    assert!(commit_info.time > 1_700_000_000);

    // A tag stays where it was while the branch moves on.
    let pinned = load_git(dir.path(), "v1", Some(Path::new("courses")), None).unwrap().unwrap();
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
    commit(&repo, &[("courses/lab-a.yaml", Some(&course("lab-a", 1)))], "One");
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
