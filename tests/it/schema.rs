//! The checked-in JSON Schema: in step with the Rust types, and accepted by an
//! independent validator (Python's jsonschema) the same way labpool accepts.

use std::process::Command;

use super::support::{labpool, root};

#[test]
fn the_checked_in_schema_is_what_the_types_generate() {
    let generated = labpool::course::schema::course_schema_text();
    let checked_in = std::fs::read_to_string(root().join("schemas/course.schema.json")).unwrap();
    assert!(
        generated == checked_in,
        "schemas/course.schema.json is stale: run `cargo run -- schema > schemas/course.schema.json` and commit it"
    );
    let printed = labpool(&["schema"]);
    assert_eq!(printed.status, 0);
    assert_eq!(printed.stdout, checked_in);
}

fn yaml_files(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            p.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    files
}

/// Python's jsonschema on each file: `file → errors` (empty = valid).
fn python_verdicts(files: &[String]) -> serde_json::Map<String, serde_json::Value> {
    let python = std::env::var("LABPOOL_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&python)
        .arg("tests/schema_conformance.py")
        .arg("schemas/course.schema.json")
        .args(files)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e} (scripts/setup installs it)"));
    assert!(
        output.status.success(),
        "schema_conformance.py failed (scripts/setup installs jsonschema and PyYAML):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn python_jsonschema_accepts_the_examples_and_the_semantic_fixtures() {
    // Semantic fixtures are well-formed: only labpool's own checks refuse them.
    let mut files = yaml_files("courses");
    files.extend(yaml_files("tests/corpus/semantic"));
    files.extend(yaml_files("tests/corpus/hosts"));
    assert!(files.len() >= 3 + 8);
    for (file, errors) in python_verdicts(&files) {
        assert_eq!(errors, serde_json::json!([]), "{file} should be valid");
    }
}

#[test]
fn python_jsonschema_rejects_every_schema_fixture() {
    let files = yaml_files("tests/corpus/schema");
    assert!(files.len() >= 10);
    let verdicts = python_verdicts(&files);
    assert_eq!(verdicts.len(), files.len());
    for (file, errors) in verdicts {
        assert_ne!(
            errors,
            serde_json::json!([]),
            "{file} should be refused by the schema"
        );
    }
}
