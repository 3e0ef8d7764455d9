//! Documentation that must not drift from the code.

use labpool::diagnostic::Code;

use super::support::root;

#[test]
fn readme_documents_every_diagnostic_code() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !readme.contains(&format!("`{c}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md does not document: {missing:?}"
    );
}

#[test]
fn readme_documents_every_course_field() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let schema = labpool::course::schema::course_schema().to_value();
    let mut missing = Vec::new();
    let mut objects = vec![("".to_string(), &schema)];
    objects.extend(
        schema["definitions"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v)),
    );
    for (owner, object) in objects {
        for field in object["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !readme.contains(&format!("`{field}`")) {
                missing.push(format!("{owner}.{field}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "README.md does not document: {missing:?}"
    );
}

#[test]
fn readme_documents_every_admin_api_route() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let missing: Vec<String> = labpool::http::admin::ROUTES
        .iter()
        .map(|r| {
            // Routes that share a row are written as `/a`, `/a/{x}`.
            let last = r.path.rsplit('/').next().unwrap_or_default();
            (r.path, format!("/{last}`"))
        })
        .filter(|(path, tail)| {
            !readme.contains(&format!("/api/v1{path}`")) && !readme.contains(tail.as_str())
        })
        .map(|(path, _)| path.to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "README.md does not document: {missing:?}"
    );
}

/// Issue 17 §4: README's "Exit statuses" table has a row for every status
/// of `labpool::cli::exit::Status`, and no other.
#[test]
fn readme_documents_every_exit_status() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("\n## Exit statuses\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has an Exit statuses section");
    let rows: Vec<u8> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| **"))
        .filter_map(|l| l.split("**").next())
        .map(|code| code.parse().expect("a status code"))
        .collect();
    let codes: Vec<u8> = labpool::cli::exit::Status::ALL
        .iter()
        .map(|s| s.code())
        .collect();
    assert_eq!(rows, codes);
}
