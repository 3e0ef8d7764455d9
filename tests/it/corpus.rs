//! The corpus of invalid course files under tests/corpus.
//!
//! Every mistake in a corpus file is marked on its line with a comment such as
//! `# expect: unknown-field` (several codes separated by commas). Two checks
//! per case:
//! - the diagnostics are exactly the marked ones, at the marked files and
//!   lines (independent of the wording);
//! - the full output equals the golden file next to the case (`x.yaml` →
//!   `x.expected`, folder `d` → `d.expected`), so columns and messages are
//!   pinned too. Run with `LABPOOL_BLESS=1` to rewrite golden files after a
//!   deliberate change, then review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::support::{diagnostics, labpool, root};

/// One corpus case: what to validate and the extra arguments it needs.
struct Case {
    path: PathBuf,
    args: Vec<String>,
}

fn cases() -> Vec<Case> {
    let corpus = Path::new("tests/corpus");
    let mut cases = Vec::new();
    let entries = |dir: &str| {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join(corpus).join(dir))
            .unwrap()
            .map(|e| corpus.join(dir).join(e.unwrap().file_name()))
            .collect();
        paths.sort();
        paths
    };
    for group in ["schema", "semantic", "syntax"] {
        for path in entries(group) {
            if path.extension().is_some_and(|e| e == "yaml") {
                cases.push(Case { path, args: vec![] });
            }
        }
    }
    for path in entries("cross-file") {
        if root().join(&path).is_dir() {
            cases.push(Case { path, args: vec![] });
        }
    }
    cases.push(Case {
        path: corpus.join("hosts"),
        args: vec![
            "--config".into(),
            "tests/fixtures/labpool-hosts.yaml".into(),
        ],
    });
    cases.push(Case {
        path: corpus.join("twenty-mistakes"),
        args: vec![],
    });
    cases
}

/// `(file, line) → codes` from the `# expect:` markers under `path`.
fn markers(path: &Path) -> BTreeMap<(String, u64), Vec<String>> {
    let mut out = BTreeMap::new();
    let files: Vec<PathBuf> = if root().join(path).is_dir() {
        walk(&root().join(path))
    } else {
        vec![root().join(path)]
    };
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let shown = file
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for (i, line) in text.lines().enumerate() {
            if let Some((_, codes)) = line.split_once("# expect: ") {
                let mut codes: Vec<String> =
                    codes.split(',').map(|c| c.trim().to_string()).collect();
                codes.sort();
                out.insert((shown.clone(), i as u64 + 1), codes);
            }
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    files
}

#[test]
fn every_marked_mistake_is_reported_at_its_line_and_nothing_else() {
    let mut failures = Vec::new();
    for case in cases() {
        let mut args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let path = case.path.to_string_lossy().into_owned();
        args.push(&path);
        let (found, status) = diagnostics(&args);
        let mut got: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
        for d in &found {
            got.entry((
                d["file"].as_str().unwrap().to_string(),
                d["line"].as_u64().unwrap(),
            ))
            .or_default()
            .push(d["code"].as_str().unwrap().to_string());
        }
        got.values_mut().for_each(|codes| codes.sort());
        let want = markers(&case.path);
        assert!(!want.is_empty(), "{path} has no `# expect:` markers");
        if got != want {
            failures.push(format!("{path}:\n  expected {want:?}\n  got      {got:?}"));
        }
        if status != 1 {
            failures.push(format!("{path}: exit status {status}, expected 1"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn output_matches_the_golden_files() {
    let bless = std::env::var_os("LABPOOL_BLESS").is_some();
    let mut failures = Vec::new();
    for case in cases() {
        let mut args = vec!["validate", "--quiet"];
        args.extend(case.args.iter().map(String::as_str));
        let path = case.path.to_string_lossy().into_owned();
        args.push(&path);
        let run = labpool(&args);
        let golden = root().join(case.path.with_extension("expected"));
        if bless {
            std::fs::write(&golden, &run.stdout).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
            panic!("{} is missing: run with LABPOOL_BLESS=1", golden.display())
        });
        if run.stdout != want {
            failures.push(format!(
                "{path}:\n--- expected\n{want}--- got\n{}",
                run.stdout
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn twenty_mistakes_over_five_files_give_twenty_diagnostics() {
    let (found, status) = diagnostics(&["tests/corpus/twenty-mistakes"]);
    assert_eq!(status, 1);
    assert_eq!(found.len(), 20, "{found:#?}");
    let mut files: Vec<&str> = found.iter().map(|d| d["file"].as_str().unwrap()).collect();
    files.dedup();
    assert_eq!(files.len(), 5);
}

#[test]
fn the_whole_corpus_at_once_reports_what_each_part_reports() {
    // One run over every group: a broken file never hides another's problems.
    let groups = [
        "tests/corpus/schema",
        "tests/corpus/semantic",
        "tests/corpus/syntax",
    ];
    let (together, status) = diagnostics(&groups);
    assert_eq!(status, 1);
    let separately: usize = groups.iter().map(|g| diagnostics(&[g]).0.len()).sum();
    assert_eq!(together.len(), separately);
}
