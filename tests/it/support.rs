//! Running the built `labpool` binary from the crate root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What one run of `labpool` produced.
#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub status: i32,
}

/// The crate root: tests run `labpool` from there, as README's commands do.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `labpool ARGS...` in `dir` (with no colour and no inherited config).
pub fn labpool_in(dir: &Path, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_labpool"))
        .args(args)
        .current_dir(dir)
        .env_remove("LABPOOL_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .expect("labpool runs");
    Run {
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
        status: output.status.code().expect("exited, not killed"),
    }
}

/// Runs `labpool ARGS...` from the crate root.
pub fn labpool(args: &[&str]) -> Run {
    labpool_in(&root(), args)
}

/// Runs validate with `--format json` and returns its diagnostics.
pub fn diagnostics(args: &[&str]) -> (Vec<serde_json::Value>, i32) {
    let mut all = vec!["validate", "--format", "json"];
    all.extend_from_slice(args);
    let run = labpool(&all);
    let report: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("JSON report ({e}): {}\n{}", run.stdout, run.stderr));
    (
        report["diagnostics"].as_array().unwrap().clone(),
        run.status,
    )
}

/// With `LABPOOL_TEST_LOG` set (an env-filter such as `labpool=debug`), the
/// in-process labpool of a test logs to the test's output: what a failing
/// run on CI left behind to read.
pub fn init_test_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("LABPOOL_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// The lines `child` writes to its piped stderr, read on a thread of their
/// own so the child never blocks on a full pipe.
pub fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}
