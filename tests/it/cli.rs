//! The `labpool` command line as a user and CI see it: `validate` and
//! `schema` (output formats, files that cannot be read), and the one
//! exit-status table every command follows.

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
    assert_eq!(run.status, 74, "{run:?}");
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
    assert_eq!(run.status, 74, "{run:?}");
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
fn usage_errors_exit_64_and_help_0() {
    assert_eq!(labpool(&["validate", "--format", "xml"]).status, 64);
    assert_eq!(labpool(&["frobnicate"]).status, 64);
    let help = labpool(&["validate", "--help"]);
    assert_eq!(help.status, 0);
    assert!(help.stdout.contains("--format"), "{}", help.stdout);
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
fn a_broken_config_is_invalid_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("labpool.yaml");
    fs::write(
        &config,
        "hosts:\n  - name: a\n    uri: qemu:///system\n    capcity: {}\n",
    )
    .unwrap();
    let run = labpool(&["validate", "--config", config.to_str().unwrap(), "courses"]);
    assert_eq!(run.status, 1, "{run:?}");
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

/// A labpool world for the exit-status table: `labpool.yaml` (a test host,
/// one course to warm up), `empty.yaml` (no hosts, no courses), `bad.yaml`
/// (a configuration with a problem), an invalid course folder.
fn world() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    fs::create_dir_all(p.join("courses")).unwrap();
    fs::create_dir_all(p.join("empty")).unwrap();
    fs::create_dir_all(p.join("invalid")).unwrap();
    fs::write(p.join("node.xml"), crate::lab::test_node_xml(16)).unwrap();
    fs::write(p.join("courses/ok.yaml"), VALID.replace("busybox", "tiny")).unwrap();
    fs::write(
        p.join("invalid/bad.yaml"),
        VALID
            .replace("name: ok", "name: bad")
            .replace("warm: 1", "warm: 3"),
    )
    .unwrap();
    let host = format!(
        "hosts:\n  - name: a\n    uri: \"test://{}\"\n    storage_pool: labpool\n    capacity: {{ vms: 4, memory: 4GiB, vcpus: 4 }}\nimages:\n  tiny: {{ volume: base.qcow2 }}\n",
        p.join("node.xml").display()
    );
    crate::lab::write_private(
        &p.join("labpool.yaml"),
        &format!(
            "database: \"sqlite:labpool.db\"\nsource: {{ folder: courses }}\nhttp: {{ listen: \"127.0.0.1:0\" }}\n{host}"
        ),
    );
    crate::lab::write_private(
        &p.join("empty.yaml"),
        "database: \"sqlite:empty.db\"\nsource: { folder: empty }\nhttp: { listen: \"127.0.0.1:0\" }\nhosts: []\n",
    );
    crate::lab::write_private(
        &p.join("bad.yaml"),
        "hosts:\n  - name: a\n    capcity: {}\n",
    );
    dir
}

/// A store that cannot be reached: a PostgreSQL URL whose "server" hangs
/// up on every connection (nothing listening at all would have the pool
/// retry for its 30 s timeout).
fn unreachable_store() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    format!("postgres://labpool:labpool@127.0.0.1:{port}/labpool")
}

/// Issue 17 §4: one exit-status table (README "Exit statuses") followed by
/// every command: 0 ok or no changes, 1 invalid or refused, 2 changes, 64
/// usage, 69 unavailable, 74 I/O.
#[test]
fn every_command_ends_with_a_status_of_the_one_table() {
    let dir = world();
    let corpus = root().join("tests/corpus/semantic/warm-exceeds-max.yaml");
    let corpus = corpus.to_str().unwrap();
    let down = unreachable_store();
    let down = down.as_str();
    let own = {
        let run = labpool_in(
            dir.path(),
            &["status", "--config", "empty.yaml", "--format", "json"],
        );
        assert_eq!(run.status, 0, "{run:?}");
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        v["instance"].as_str().unwrap().to_string()
    };
    // A store whose reconciler lease another labpool holds.
    let leased = format!("sqlite:{}", dir.path().join("leased.db").display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = labpool::store::Store::open(&leased).await.unwrap();
        store
            .acquire_lease("reconciler", "elsewhere.example:1", 0, i64::MAX, None)
            .await
            .unwrap();
    });
    let cases: &[(&[&str], i32)] = &[
        (&["--help"], 0),
        (&["--version"], 0),
        (&["plan", "--help"], 0),
        (&[], 64),
        (&["frobnicate"], 64),
        // validate
        (&["validate", "courses"], 0),
        (&["validate", corpus], 1),
        (&["validate", "--config", "bad.yaml", "courses"], 1),
        (&["validate", "--format", "xml"], 64),
        (&["validate", "no/such/folder"], 74),
        (&["validate", "--config", "missing.yaml", "courses"], 74),
        // schema
        (&["schema"], 0),
        (&["schema", "extra"], 64),
        // plan
        (&["plan", "--config", "empty.yaml"], 0),
        (&["plan", "--config", "bad.yaml"], 1),
        (&["plan", "--config", "labpool.yaml"], 2),
        (&["plan", "--config", "labpool.yaml", "--format", "json"], 2),
        (&["plan", "--format", "xml"], 64),
        (&["plan", "--config", "empty.yaml", "--database", down], 69),
        (&["plan", "--config", "missing.yaml"], 74),
        // reconcile
        (&["reconcile", "--once", "--config", "empty.yaml"], 0),
        (&["reconcile", "--once", "--config", "bad.yaml"], 1),
        (&["reconcile", "--config", "empty.yaml"], 64),
        (
            &[
                "reconcile",
                "--once",
                "--config",
                "empty.yaml",
                "--database",
                down,
            ],
            69,
        ),
        (
            &[
                "reconcile",
                "--once",
                "--config",
                "empty.yaml",
                "--database",
                &leased,
            ],
            69,
        ),
        (&["reconcile", "--once", "--config", "missing.yaml"], 74),
        // serve (0: `serve_stops_with_0_on_sigterm`)
        (&["serve", "--config", "bad.yaml"], 1),
        (&["serve", "--log-json"], 64),
        (&["serve", "--log-format", "yaml"], 64),
        (&["serve", "--config", "empty.yaml", "--database", down], 69),
        (&["serve", "--config", "missing.yaml"], 74),
        // status
        (&["status", "--config", "empty.yaml"], 0),
        (&["status", "--config", "bad.yaml"], 1),
        (&["status", "--format", "xml"], 64),
        (
            &["status", "--config", "empty.yaml", "--database", down],
            69,
        ),
        (&["status", "--config", "missing.yaml"], 74),
        // adopt
        (&["adopt", "--list", "--config", "empty.yaml"], 0),
        (&["adopt", "--instance", &own, "--config", "empty.yaml"], 1),
        (&["adopt", "--config", "empty.yaml"], 64),
        (
            &["adopt", "--instance", "not-hex", "--config", "empty.yaml"],
            64,
        ),
        (
            &[
                "adopt",
                "--list",
                "--config",
                "empty.yaml",
                "--database",
                down,
            ],
            69,
        ),
        (&["adopt", "--list", "--config", "missing.yaml"], 74),
        // diff
        (&["diff", "courses", "courses"], 0),
        (&["diff", "empty", "invalid"], 1),
        (&["diff", "no-such-revision", "courses", "--repo", "."], 74),
        (&["diff", "empty", "courses"], 2),
        (&["diff", "empty"], 64),
        (
            &["diff", "empty", "courses", "--config", "missing.yaml"],
            74,
        ),
        // token
        (
            &["token", "create", "--name", "ci", "--config", "empty.yaml"],
            0,
        ),
        (
            &["token", "create", "--name", "ci", "--config", "empty.yaml"],
            1,
        ),
        (&["token", "revoke", "nobody", "--config", "empty.yaml"], 1),
        (
            &["token", "create", "--name", " ", "--config", "empty.yaml"],
            64,
        ),
        (
            &[
                "token",
                "list",
                "--config",
                "empty.yaml",
                "--database",
                down,
            ],
            69,
        ),
        (&["token", "list", "--config", "missing.yaml"], 74),
        (&["token", "list", "--config", "empty.yaml"], 0),
        // revision
        (&["revision", "show", "--config", "empty.yaml"], 0),
        (
            &["revision", "confirm", "0123abcd", "--config", "empty.yaml"],
            1,
        ),
        (&["revision", "--config", "empty.yaml"], 64),
        (
            &[
                "revision",
                "show",
                "--config",
                "empty.yaml",
                "--database",
                down,
            ],
            69,
        ),
        // lti
        (&["lti", "platform", "list", "--config", "empty.yaml"], 0),
        (
            &[
                "lti",
                "platform",
                "remove",
                "https://lms.example",
                "x",
                "--config",
                "empty.yaml",
            ],
            1,
        ),
        (&["lti", "platform", "--config", "empty.yaml"], 64),
        (&["lti", "platform", "list", "--config", "missing.yaml"], 74),
        // keys
        (&["keys", "--config", "empty.yaml"], 0),
        (&["keys", "--config", "bad.yaml"], 1),
        (&["keys", "turn", "--config", "empty.yaml"], 64),
        (&["keys", "--config", "missing.yaml"], 74),
    ];
    let mut wrong = Vec::new();
    for (args, want) in cases {
        let run = labpool_in(dir.path(), args);
        if run.status != *want || run.stderr.contains("panicked") {
            wrong.push(format!(
                "labpool {}: {} (want {want})\n{}",
                args.join(" "),
                run.status,
                run.stderr
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// `serve` stopped by SIGTERM ends with 0; `--log-format json` logs JSON lines.
#[test]
fn serve_stops_with_0_on_sigterm() {
    let dir = world();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_labpool"))
        .args(["serve", "--config", "empty.yaml", "--log-format", "json"])
        .current_dir(dir.path())
        .env_remove("LABPOOL_CONFIG")
        .env_remove("LABPOOL_LOG_FORMAT")
        .env_remove("LABPOOL_DEV")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = crate::support::stderr_lines(&mut child);
    let listening = lines
        .iter()
        .find(|l| l.contains("listening"))
        .expect("serve logs that it listens");
    let _: serde_json::Value = serde_json::from_str(&listening).expect("a JSON log line");
    // SAFETY: kill only sends a signal to the child started above.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// Issue 17 §4: a reader that went away (`labpool status | head -1`) ends
/// the command quietly with its own status: no panic, no "failed printing
/// to stdout", no error line. The pipe's read end is closed before the
/// command starts, so every write fails.
#[test]
fn a_closed_pipe_ends_quietly_with_the_commands_status() {
    let dir = world();
    let corpus = root().join("tests/corpus/twenty-mistakes");
    let cases: &[(&[&str], i32)] = &[
        (&["status", "--config", "empty.yaml"], 0),
        (&["validate", corpus.to_str().unwrap()], 1),
        (&["plan", "--config", "labpool.yaml"], 2),
        (&["diff", "empty", "courses"], 2),
        (&["schema"], 0),
        (&["token", "list", "--config", "empty.yaml"], 0),
        (&["keys", "--config", "empty.yaml"], 0),
        (&["--help"], 0),
    ];
    for (args, want) in cases {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_labpool"))
            .args(*args)
            .current_dir(dir.path())
            .env_remove("LABPOOL_CONFIG")
            .env("NO_COLOR", "1")
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(*want), "{args:?}: {stderr}");
        for noise in [
            "panicked",
            "failed printing",
            "Broken pipe",
            "cannot write",
            "labpool:",
        ] {
            assert!(!stderr.contains(noise), "{args:?}: {stderr}");
        }
    }
}
