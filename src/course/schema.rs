//! The course JSON Schema: generated from the Rust types, and used by labpool
//! itself as the structural check of every course file.
//!
//! Checking with the very schema that editors and other validators use means
//! labpool and yaml-language-server can never disagree about what is
//! well-formed, and — unlike serde, which stops at the first problem — a JSON
//! Schema validator reports every structural problem in a file at once. Each
//! validator error is turned into a [`Diagnostic`] at the right line, with a
//! message written for people rather than the validator's own wording.

use std::path::Path;
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use schemars::Schema;
use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::spec::Course;
use super::values::{self, closest};
use crate::diagnostic::{Code, Diagnostic};
use crate::yaml::{Document, pointer_push};

/// The URL editors see as the schema's `$id`.
pub const SCHEMA_ID: &str = "https://labpool.dev/schemas/course.schema.json";

/// The course schema, JSON Schema draft-07 (the draft every YAML editor and
/// validator understands).
pub fn course_schema() -> Schema {
    let mut schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Course>();
    schema.insert("$id".into(), SCHEMA_ID.into());
    let mut value = schema.to_value();
    tighten(&mut value);
    require_by_runtime(&mut value);
    Schema::try_from(value).expect("still a schema object")
}

/// Which blocks a course needs depends on its runtime: `container` for
/// `runtime: container`, else `image` and `vm`. Said in the schema itself so
/// editors and other validators ask for the same fields labpool does;
/// a block of the other runtime is labpool's own check (`runtime-mismatch`).
fn require_by_runtime(value: &mut Value) {
    let Value::Object(root) = value else { return };
    root.insert(
        "if".into(),
        serde_json::json!({
            "properties": { "runtime": { "const": "container" } },
            "required": ["runtime"]
        }),
    );
    root.insert(
        "then".into(),
        serde_json::json!({ "required": ["container"] }),
    );
    root.insert(
        "else".into(),
        serde_json::json!({ "required": ["image", "vm"] }),
    );
}

/// Two adjustments to what schemars generates, applied everywhere:
///
/// - `Option` fields accept `null` in schemars' output. An explicit `~` is
///   never a meaningful course value (leave the field out instead), and an
///   `anyOf` with a null branch makes every validator's message for a real
///   mistake vague. So `null` is dropped.
/// - `u16`/`u32` fields carry a `format` most validators ignore; their upper
///   bound becomes a `maximum` so every validator refuses an overflow.
fn tighten(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(branches)) = map.get_mut("anyOf") {
                branches.retain(|b| b.get("type").and_then(Value::as_str) != Some("null"));
                if branches.len() == 1 {
                    let Some(Value::Object(only)) = branches.pop() else {
                        unreachable!()
                    };
                    map.remove("anyOf");
                    for (k, v) in only {
                        map.entry(k).or_insert(v);
                    }
                }
            }
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.pop().expect("one type");
                    map.insert("type".into(), only);
                }
            }
            let max = match map.get("format").and_then(Value::as_str) {
                Some("uint16") => Some(u64::from(u16::MAX)),
                Some("uint32") => Some(u64::from(u32::MAX)),
                _ => None,
            };
            if let Some(max) = max {
                map.entry("maximum").or_insert(max.into());
            }
            map.values_mut().for_each(tighten);
        }
        Value::Array(items) => items.iter_mut().for_each(tighten),
        _ => {}
    }
}

/// The schema as it is checked in at `schemas/course.schema.json` and printed
/// by `labpool schema`: pretty JSON with a final newline.
pub fn course_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&course_schema()).expect("a schema serializes");
    text.push('\n');
    text
}

/// One structural problem, and whether it is an unknown field that can be
/// dropped so the rest of the file can still be checked.
#[derive(Debug)]
pub struct Finding {
    pub diagnostic: Diagnostic,
    /// The JSON pointer of the value the finding is about (for a missing
    /// field, the mapping that lacks it).
    pub pointer: String,
    /// Pointer of an unknown field, when that is what this finding is about.
    pub unknown_field: Option<String>,
    value_check: bool,
}

/// Checks documents against the course schema (compiled once).
pub struct SchemaChecker {
    schema: Value,
    validator: Validator,
}

impl SchemaChecker {
    /// The checker for the built-in course schema, shared by the process.
    pub fn shared() -> &'static SchemaChecker {
        static CHECKER: OnceLock<SchemaChecker> = OnceLock::new();
        CHECKER.get_or_init(|| {
            let schema = course_schema().to_value();
            let options = values::FORMATS.iter().fold(
                jsonschema::draft7::options().should_validate_formats(true),
                |options, (name, check)| {
                    options.with_format(*name, move |s: &str| check(s).is_none())
                },
            );
            let validator = options
                .build(&schema)
                .expect("the generated schema compiles");
            SchemaChecker { schema, validator }
        })
    }

    /// Every way `document` departs from the schema.
    pub fn check(&self, file: &Path, document: &Document) -> Vec<Finding> {
        let mut findings: Vec<Finding> = Vec::new();
        for error in self.validator.iter_errors(&document.value) {
            // A bad value fails both its `pattern` and its `format`: one
            // mistake, one diagnostic.
            let value_check = matches!(
                error.kind(),
                ValidationErrorKind::Pattern { .. } | ValidationErrorKind::Format { .. }
            );
            let at = error.instance_path().as_str();
            if value_check && findings.iter().any(|f| f.pointer == at && f.value_check) {
                continue;
            }
            let before = findings.len();
            self.explain(file, document, &error, &mut findings);
            for finding in &mut findings[before..] {
                finding.value_check = value_check;
            }
        }
        findings
    }

    fn explain(
        &self,
        file: &Path,
        doc: &Document,
        error: &ValidationError<'_>,
        out: &mut Vec<Finding>,
    ) {
        let at = error.instance_path().as_str();
        let what = describe(at);
        let instance = error.instance();
        let mut push = |position, code, message: String, unknown_field: Option<String>| {
            out.push(Finding {
                diagnostic: Diagnostic::new(file, position, code, message),
                pointer: at.to_string(),
                unknown_field,
                value_check: false,
            })
        };
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed = self.allowed_properties(error);
                for key in unexpected {
                    let pointer = pointer_push(at, key);
                    let hint = closest(key, allowed.iter().map(String::as_str))
                        .map(|k| format!(" (did you mean `{k}`?)"))
                        .unwrap_or_default();
                    let message = format!(
                        "unknown field `{key}` in {what}{hint}; expected one of: {}",
                        allowed.join(", ")
                    );
                    push(
                        doc.key_position(&pointer),
                        Code::UnknownField,
                        message,
                        Some(pointer),
                    );
                }
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                push(
                    doc.key_position(at),
                    Code::MissingField,
                    format!("missing field `{name}` in {what}"),
                    None,
                );
            }
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => article(&t.to_string()),
                    TypeKind::Multiple(ts) => ts
                        .iter()
                        .map(|t| article(&t.to_string()))
                        .collect::<Vec<_>>()
                        .join(" or "),
                };
                let message = if at.is_empty() {
                    format!(
                        "a course file must be a mapping of fields, not {}",
                        type_of(instance)
                    )
                } else {
                    format!("{what} must be {expected}, not {}", type_of(instance))
                };
                push(doc.position(at), Code::WrongType, message, None);
            }
            ValidationErrorKind::Pattern { .. } | ValidationErrorKind::Format { .. } => {
                let text = instance.as_str().unwrap_or_default();
                let explained = self
                    .owner(error)
                    .and_then(|owner| owner.get("format"))
                    .and_then(Value::as_str)
                    .and_then(|format| values::explain(format, text));
                let (code, message) = match explained {
                    Some(e) => (e.code, format!("{what}: {}", e.message)),
                    None => (
                        Code::InvalidValue,
                        format!("{what}: \"{text}\" {}", self.form_hint(error)),
                    ),
                };
                push(doc.position(at), code, message, None);
            }
            ValidationErrorKind::Enum { options } => {
                let choices: Vec<&str> = options
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let got = instance
                    .as_str()
                    .map_or_else(|| instance.to_string(), |s| format!("\"{s}\""));
                let hint = instance
                    .as_str()
                    .and_then(|s| closest(s, choices.iter().copied()))
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                let message = format!(
                    "{what} must be one of {}, not {got}{hint}",
                    choices.join(", ")
                );
                push(doc.position(at), Code::InvalidValue, message, None);
            }
            ValidationErrorKind::Minimum { limit } => push(
                doc.position(at),
                Code::InvalidValue,
                format!("{what} must be at least {limit}, not {instance}"),
                None,
            ),
            ValidationErrorKind::Maximum { limit } => push(
                doc.position(at),
                Code::InvalidValue,
                format!("{what} must be at most {limit}, not {instance}"),
                None,
            ),
            ValidationErrorKind::MinLength { .. } => push(
                doc.position(at),
                Code::InvalidValue,
                format!("{what} must not be empty"),
                None,
            ),
            ValidationErrorKind::MinItems { limit } => {
                let message = match limit {
                    1 => format!("{what} must not be empty"),
                    n => format!("{what} must list at least {n} items"),
                };
                push(doc.position(at), Code::InvalidValue, message, None)
            }
            ValidationErrorKind::UniqueItems => {
                let items = instance.as_array().cloned().unwrap_or_default();
                let (index, repeated) = items
                    .iter()
                    .enumerate()
                    .find(|(i, v)| items[..*i].contains(v))
                    .map(|(i, v)| (i, v.clone()))
                    .unwrap_or((0, Value::Null));
                let shown = repeated
                    .as_str()
                    .map_or_else(|| repeated.to_string(), str::to_string);
                push(
                    doc.value_position(&pointer_push(at, &index.to_string())),
                    Code::InvalidValue,
                    format!("{what} lists `{shown}` more than once"),
                    None,
                );
            }
            _ => push(
                doc.position(at),
                Code::InvalidValue,
                format!("{what}: {error}"),
                None,
            ),
        }
    }

    /// The schema object holding the keyword that failed (`schema_path` is
    /// the keyword's canonical location, after `$ref`s are resolved).
    fn owner(&self, error: &ValidationError<'_>) -> Option<&Value> {
        let keyword_path = error.schema_path().as_str();
        let owner = keyword_path.rsplit_once('/').map_or("", |(owner, _)| owner);
        self.schema.pointer(owner)
    }

    /// The property names the schema object owning the failed keyword allows.
    fn allowed_properties(&self, error: &ValidationError<'_>) -> Vec<String> {
        self.owner(error)
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object)
            .map(|props| props.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// "does not have the expected form (such as …)" from the schema's examples.
    fn form_hint(&self, error: &ValidationError<'_>) -> String {
        let examples = self
            .owner(error)
            .and_then(|s| s.get("examples"))
            .and_then(Value::as_array)
            .map(|ex| {
                ex.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if examples.is_empty() {
            "does not have the expected form".to_string()
        } else {
            format!(
                "does not have the expected form, such as \"{}\"",
                examples.join("\" or \"")
            )
        }
    }
}

/// A JSON pointer as a person would write the path: `pool.schedule[0].from`.
pub fn describe(pointer: &str) -> String {
    if pointer.is_empty() {
        return "the course".to_string();
    }
    let mut out = String::new();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if token.bytes().all(|b| b.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{token}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&token);
        }
    }
    format!("`{out}`")
}

fn article(noun: &str) -> String {
    match noun {
        "integer" => "an integer".into(),
        "object" => "a mapping".into(),
        "array" => "a list".into(),
        "null" => "empty".into(),
        other => format!("a {other}"),
    }
}

fn type_of(value: &Value) -> String {
    match value {
        Value::Null => "empty".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) if n.is_i64() || n.is_u64() => format!("an integer ({n})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("a string (\"{s}\")"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}
