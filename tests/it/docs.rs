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
