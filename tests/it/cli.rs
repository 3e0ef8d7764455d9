//! `labpool validate` and `labpool schema` as a user and CI see them: exit
//! statuses, output formats, and files that cannot be read.

use std::fs;

use super::support::{diagnostics, labpool, labpool_in, root};

const VALID: &str = "name: ok\ntitle: OK\nimage: busybox\nvm: { vcpus: 1, memory: 256MiB }\npool: { warm: 1, max: 2 }\n";

#[test]
fn the_example_courses_are_valid_by_default_path_and_against_the_example_config() {
    let run = labpool(&["validate"]);
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("checked 4 files: no problems"),
        "{}",
        run.stderr
    );

    let run = labpool(&["validate", "--config", "labpool.yaml", "courses/"]);
    assert_eq!(run.status, 0, "{run:?}");
}

#[test]
fn an_unreadable_file_is_an_io_error_that_hides_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("ok.yaml"), VALID).unwrap();
    fs::write(
        dir.path().join("bad.yaml"),
        VALID
            .replace("name: ok", "name: bad")
            .replace("warm: 1", "warm: 3"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/nonexistent/labpool", dir.path().join("gone.yaml")).unwrap();

    let run = labpool_in(dir.path(), &["validate", "."]);
    assert_eq!(run.status, 2, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines[0].starts_with("./bad.yaml:5:15: warm-exceeds-max: "),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("./gone.yaml:1:1: io-error: cannot read: "),
        "{}",
        lines[1]
    );
    assert!(
        run.stderr
            .contains("checked 3 files: 2 problems in 2 files"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_path_is_an_io_error_and_other_paths_are_still_checked() {
    let run = labpool(&[
        "validate",
        "no/such/folder",
        "tests/corpus/semantic/warm-exceeds-max.yaml",
    ]);
    assert_eq!(run.status, 2, "{run:?}");
    assert!(
        run.stdout
            .contains("no/such/folder:1:1: io-error: no such file or folder")
    );
    assert!(
        run.stdout
            .contains("warm-exceeds-max.yaml:6:9: warm-exceeds-max:")
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(labpool(&["validate", "--format", "xml"]).status, 2);
    assert_eq!(labpool(&["frobnicate"]).status, 2);
}

#[test]
fn an_empty_folder_is_valid_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let run = labpool_in(dir.path(), &["validate", "."]);
    assert_eq!(run.status, 0);
    assert!(run.stderr.contains("checked 0 files"), "{}", run.stderr);
}

#[test]
fn github_format_writes_one_annotation_per_diagnostic() {
    let run = labpool(&[
        "validate",
        "--format",
        "github",
        "tests/corpus/twenty-mistakes",
    ]);
    assert_eq!(run.status, 1);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 20);
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("::error file=tests/corpus/twenty-mistakes/"))
    );
    assert!(
        lines.contains(&"::error file=tests/corpus/twenty-mistakes/algebra.yaml,line=10,col=9,title=warm-exceeds-max::`pool.warm` is 12 but `pool.max` is 8: warm VMs count toward the maximum"),
        "{}",
        run.stdout
    );
}

#[test]
fn json_format_has_every_field_of_every_diagnostic() {
    let (found, status) = diagnostics(&["tests/corpus/semantic/idle-exceeds-expiry.yaml"]);
    assert_eq!(status, 1);
    assert_eq!(
        found,
        vec![serde_json::json!({
            "file": "tests/corpus/semantic/idle-exceeds-expiry.yaml",
            "line": 8,
            "column": 9,
            "code": "idle-exceeds-expiry",
            "message": "`session.idle` (1h30m) is longer than `session.expiry` (1h): the session would always end by expiry first"
        })]
    );
}

#[test]
fn a_broken_config_is_a_usage_error_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("labpool.yaml");
    fs::write(
        &config,
        "hosts:\n  - name: a\n    uri: qemu:///system\n    capcity: {}\n",
    )
    .unwrap();
    let run = labpool(&["validate", "--config", config.to_str().unwrap(), "courses"]);
    assert_eq!(run.status, 2, "{run:?}");
    assert!(run.stdout.contains("labpool.yaml:4:5: invalid-value: hosts[0].capcity: unknown field `capcity`, expected one of"), "{}", run.stdout);
}

/// Addresses are parsed as the file is read: `validate --config` reports a
/// bad one at its line instead of the first boot (or start) failing on it.
#[test]
fn a_bad_address_in_the_config_is_reported_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("labpool.yaml");
    for (text, want) in [
        (
            "hosts:\n  - name: a\n    uri: qemu:///system\n    capacity: { vms: 1, memory: 1GiB, vcpus: 1 }\n    ssh_forward:\n      address: not an ip at all\n",
            "labpool.yaml:6:16: invalid-value: hosts[0].ssh_forward.address: `not an ip at all` is not an IP address such as 127.0.0.1 or ::1",
        ),
        (
            "http:\n  listen: localhost\n",
            "labpool.yaml:2:11: invalid-value: http.listen: `localhost` is not an address and port such as 127.0.0.1:8080",
        ),
    ] {
        fs::write(&config, text).unwrap();
        let run = labpool(&["validate", "--config", config.to_str().unwrap(), "courses"]);
        assert_ne!(run.status, 0, "{run:?}");
        assert!(run.stdout.contains(want), "{}", run.stdout);
    }
}

#[test]
fn config_adds_the_image_and_size_checks() {
    let dir = tempfile::tempdir().unwrap();
    let course = dir.path().join("ok.yaml");
    fs::write(&course, VALID.replace("busybox", "fedora")).unwrap();
    let config = root().join("labpool.yaml");
    let run = labpool(&[
        "validate",
        "--config",
        config.to_str().unwrap(),
        course.to_str().unwrap(),
    ]);
    assert_eq!(run.status, 1);
    assert!(
        run.stdout
            .contains(":3:8: unknown-image: image `fedora` is not in the hosts' image catalog"),
        "{}",
        run.stdout
    );
    // Without the config the same file is valid: the catalog is not guessed.
    assert_eq!(labpool(&["validate", course.to_str().unwrap()]).status, 0);
}

#[test]
fn keys_rotate_keeps_the_old_key_published() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("k.db").display());
    let run = labpool(&["keys", "--database", &db]);
    assert_eq!(run.status, 0, "{run:?}");
    assert!(run.stdout.contains("no keys yet"), "{}", run.stdout);
    for _ in 0..2 {
        let run = labpool(&["keys", "rotate", "--database", &db]);
        assert_eq!(run.status, 0, "{run:?}");
    }
    let run = labpool(&["keys", "--database", &db]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    // The first key (created by the first rotate) and two rotations.
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(
        lines[0].ends_with("signing"),
        "newest first: {}",
        run.stdout
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("retired, published until"))
            .count(),
        2
    );
}
