//! The admin API's OpenAPI 3.1 description, generated from
//! [`admin::ROUTES`](super::admin::ROUTES) and the response types' JSON
//! Schemas (schemars), so it cannot drift from what the handlers return.

use serde_json::{Map, Value, json};

use super::admin::{ErrorBody, ROUTES};
use crate::admin::Scope;

pub const PREFIX: &str = "/api/v1";

/// The description, with `base_url` as its server.
pub fn document(base_url: &str) -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
    });
    let mut generator = settings.into_generator();
    let error = generator.subschema_for::<ErrorBody>();
    let mut paths: Map<String, Value> = Map::new();
    for route in ROUTES {
        let mut parameters: Vec<Value> = path_params(route.path)
            .map(|name| {
                json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
            })
            .collect();
        parameters.extend(route.query.iter().map(|(name, description)| {
            json!({ "name": name, "in": "query", "required": false,
                    "description": description, "schema": { "type": "string" } })
        }));
        let ok = (route.response)(&mut generator);
        let error_response = |description: &str| {
            json!({ "description": description,
                    "content": { "application/json": { "schema": error.clone() } } })
        };
        let mut responses = json!({
            if route.method == "post" && route.path == "/resync" { "202" } else { "200" }: {
                "description": "OK",
                "content": { "application/json": { "schema": ok } }
            },
            "401": error_response("No token, or not a valid one."),
        });
        if route.scope == Scope::Admin {
            responses["403"] = error_response("The token's scope is `read`; this needs `admin`.");
        } else if route.path.starts_with("/hosts") {
            responses["403"] =
                error_response("The token is scoped to courses; hosts are for unscoped tokens.");
        }
        if route.path.contains('{') {
            responses["404"] = error_response("No such thing.");
        }
        if route.path.ends_with("/reset") {
            responses["409"] = error_response("No warm VM is ready to reset onto.");
        }
        let operation = json!({
            "summary": route.summary,
            "operationId": operation_id(route.method, route.path),
            "security": [{ "bearer": [] }],
            "x-labpool-scope": route.scope.as_str(),
            "parameters": parameters,
            "responses": responses,
        });
        paths
            .entry(format!("{PREFIX}{}", route.path))
            .or_insert_with(|| json!({}))[route.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "labpool admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Courses, pools, VMs, sessions, hosts and events of one labpool, and the actions an admin takes. Every route needs `Authorization: Bearer <token>` (`labpool token create`); `read` tokens may GET, `admin` tokens may also POST. A read token made with `--course` (an instructor's) sees only those courses: other courses, their VMs, sessions and events are left out of lists and are 404 by name, and hosts are 403.",
        },
        "servers": [{ "url": base_url }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "A token from `labpool token create`." }
            },
            "schemas": generator.take_definitions(true),
        },
    })
}

/// The `{name}` parameters of a path.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
}

/// `get /sessions/{id}/end` → `get_sessions_id_end`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.push_str(seg.trim_start_matches('{').trim_end_matches('}'));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_with_its_scope_and_schemas_resolve() {
        let doc = document("http://127.0.0.1:8080");
        for route in ROUTES {
            let op = &doc["paths"][format!("{PREFIX}{}", route.path)][route.method];
            assert_eq!(
                op["x-labpool-scope"],
                route.scope.as_str(),
                "{}",
                route.path
            );
            assert!(op["responses"]["401"].is_object());
            assert_eq!(
                op["responses"]["403"].is_object(),
                route.scope == Scope::Admin || route.path.starts_with("/hosts"),
                "{}",
                route.path
            );
        }
        // Every $ref points into components.schemas, and is there.
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"").skip(1) {
            let target = &part[..part.find('"').unwrap()];
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("ref outside components: {target}"));
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "dangling ref {target}"
            );
        }
        let ids: std::collections::HashSet<String> = ROUTES
            .iter()
            .map(|r| operation_id(r.method, r.path))
            .collect();
        assert_eq!(ids.len(), ROUTES.len(), "operation ids are unique");
    }
}
