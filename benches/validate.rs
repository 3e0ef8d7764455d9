//! Validating a large course repository: 1,000 generated course files.
//!
//! `cargo bench --bench validate` prints the time `labpool::course::load_paths`
//! takes (in process, best and median of several runs) and the wall time of the
//! `labpool validate` command on the same folder. Target: under 1 s.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const COURSES: usize = 1_000;
const RUNS: usize = 7;
const TARGET: Duration = Duration::from_secs(1);

/// A realistic course file; every third has a schedule, every fifth SSH.
fn course(i: usize) -> String {
    let mut text = format!(
        "# yaml-language-server: $schema=../schemas/course.schema.json\n\
         name: course-{i:04}\n\
         title: Generated course number {i}\n\
         image: image-{}\n\
         vm: {{ vcpus: {}, memory: {}MiB, disk: 20GiB }}\n\
         pool:\n  warm: {}\n  max: {}\n",
        i % 7,
        1 + i % 4,
        256 * (1 + i % 8),
        i % 5,
        10 + i % 30,
    );
    if i.is_multiple_of(3) {
        text.push_str(
            "  schedule:\n\
             \x20   - { days: [mon, wed], from: \"09:45\", to: \"11:30\", tz: America/Chicago, warm: 8 }\n\
             \x20   - { days: [fri], from: \"13:00\", to: \"15:00\", tz: Europe/Berlin, warm: 4 }\n",
        );
    }
    if i.is_multiple_of(5) {
        text.push_str(
            "session:\n  expiry: 4h\n  idle: 30m\n  console: ssh\n  ssh: { user: student }\n",
        );
    } else {
        text.push_str("session: { expiry: 2h, idle: 20m }\n");
    }
    text.push_str(&format!("lti:\n  contexts: [canvas-{i}, moodle-{i}]\n"));
    text
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let folder = dir.path().join("courses");
    std::fs::create_dir(&folder).unwrap();
    let mut bytes = 0;
    for i in 0..COURSES {
        let text = course(i);
        bytes += text.len();
        std::fs::write(folder.join(format!("course-{i:04}.yaml")), text).unwrap();
    }
    println!("validate: {COURSES} course files, {} KiB", bytes / 1024);

    let paths = [PathBuf::from(&folder)];
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let loaded = labpool::course::load_paths(&paths, None);
        times.push(start.elapsed());
        assert_eq!(loaded.files_checked, COURSES);
        assert!(
            loaded.is_valid(),
            "generated courses are valid: {:?}",
            loaded.diagnostics.first()
        );
        assert_eq!(loaded.courses.len(), COURSES);
    }
    times.sort();
    let (best, median) = (times[0], times[RUNS / 2]);
    println!(
        "validate: in process  best {:>7.1} ms  median {:>7.1} ms  ({:.0} µs per file)",
        ms(best),
        ms(median),
        median.as_secs_f64() * 1e6 / COURSES as f64
    );

    let start = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_labpool"))
        .args(["validate", "--quiet"])
        .arg(&folder)
        .status()
        .expect("labpool runs");
    let command = start.elapsed();
    assert!(status.success());
    println!(
        "validate: `labpool validate` command {:>7.1} ms (process start included)",
        ms(command)
    );

    let verdict = if median.max(command) < TARGET {
        "met"
    } else {
        "MISSED"
    };
    println!(
        "validate: target under {} ms: {verdict}",
        TARGET.as_millis()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
