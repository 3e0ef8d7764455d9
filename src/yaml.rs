//! YAML documents that remember where every value came from.
//!
//! serde-based YAML loaders stop at the first problem and forget positions once
//! the value is built. labpool needs the opposite: a plain JSON value (to check
//! against the JSON Schema and to deserialize into typed structs) *and* the
//! line and column of every key and value, so that any later problem — found
//! by the schema, by serde, or by a semantic check — can be reported at the
//! right place. This module builds both in one pass over saphyr's event stream,
//! resolving plain scalars with the YAML 1.2 core schema (so `no` is a string
//! and `09:45` is not a number).

use std::collections::HashMap;
use std::path::Path;

use saphyr::Scalar;
use saphyr_parser::{Event, Marker, Parser, Span};
use serde_json::{Map, Number, Value};

use crate::diagnostic::{Code, Diagnostic, Position};

/// Where a node sits in its file: its key (for mapping values) and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpan {
    pub key: Option<Position>,
    pub value: Position,
}

/// One parsed YAML document: its value and the position of every node,
/// indexed by JSON pointer (`/pool/schedule/0/from`).
#[derive(Debug, Clone)]
pub struct Document {
    pub value: Value,
    spans: HashMap<String, NodeSpan>,
}

/// What parsing a file gave: the document if the text was well-formed, and
/// every problem noticed on the way (duplicate keys, extra documents, …).
#[derive(Debug)]
pub struct Parsed {
    pub document: Option<Document>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Document {
    /// The position of the value at `pointer`, or of its nearest ancestor
    /// that exists (a missing field is reported at the mapping that lacks it).
    pub fn value_position(&self, pointer: &str) -> Position {
        self.nearest(pointer).value
    }

    /// Where to report a problem with the node at `pointer`: its value for a
    /// scalar (the most precise place), its key for a mapping or a list
    /// (whose value starts wherever its first entry does, often a line later).
    pub fn position(&self, pointer: &str) -> Position {
        match self.value.pointer(pointer) {
            Some(Value::Object(_) | Value::Array(_)) => self.key_position(pointer),
            _ => self.value_position(pointer),
        }
    }

    /// The position of the key that introduces `pointer` (falling back to the
    /// value, then to the nearest ancestor).
    pub fn key_position(&self, pointer: &str) -> Position {
        let span = self.nearest(pointer);
        span.key.unwrap_or(span.value)
    }

    fn nearest(&self, pointer: &str) -> NodeSpan {
        let mut p = pointer;
        loop {
            if let Some(span) = self.spans.get(p) {
                return *span;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => {
                    return NodeSpan {
                        key: None,
                        value: Position::START,
                    };
                }
            }
        }
    }
}

/// Appends one reference token to a JSON pointer (RFC 6901 escaping).
pub fn pointer_push(pointer: &str, token: &str) -> String {
    let escaped = token.replace('~', "~0").replace('/', "~1");
    format!("{pointer}/{escaped}")
}

/// The JSON pointer of the place a serde error happened, so that errors from
/// deserializing a [`Document`]'s value can be positioned in its text.
pub fn pointer_from_serde_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .fold(String::new(), |pointer, segment| match segment {
            Segment::Seq { index } => pointer_push(&pointer, &index.to_string()),
            Segment::Map { key } => pointer_push(&pointer, key),
            Segment::Enum { variant } => pointer_push(&pointer, variant),
            Segment::Unknown => pointer,
        })
}

/// Parses `text` (the contents of `file`) into a located document.
pub fn parse(file: &Path, text: &str) -> Parsed {
    let mut builder = Builder::new(file);
    let mut parser = Parser::new_from_str(text).keep_tags(true);
    let mut documents = 0;
    while let Some(next) = parser.next_event() {
        match next {
            Err(e) => {
                builder.problem(
                    position(e.marker()),
                    Code::YamlSyntax,
                    without_period(e.info()),
                );
                return Parsed {
                    document: None,
                    diagnostics: builder.diagnostics,
                };
            }
            Ok((Event::DocumentStart(_), span)) => {
                documents += 1;
                if documents > 1 {
                    // One course per file: a second document is a mistake, not
                    // something to merge or silently ignore.
                    builder.problem(
                        position(&span.start),
                        Code::MultipleDocuments,
                        "a second YAML document; a course file holds exactly one",
                    );
                    break;
                }
            }
            Ok((event, span)) => builder.event(event, span),
        }
    }
    let document = match builder.root.take() {
        Some(value) => Some(Document {
            value,
            spans: std::mem::take(&mut builder.spans),
        }),
        None => {
            builder.problem(
                Position::START,
                Code::EmptyFile,
                "the file holds no YAML document",
            );
            None
        }
    };
    Parsed {
        document,
        diagnostics: builder.diagnostics,
    }
}

fn position(marker: &Marker) -> Position {
    Position {
        line: marker.line(),
        column: marker.col() + 1,
    }
}

fn without_period(s: &str) -> String {
    // The project's messages end without a period; saphyr's sometimes have one.
    s.trim_end_matches('.').to_string()
}

/// A container being filled while its events arrive.
struct Frame {
    /// JSON pointer of this node, or `None` when it is not addressable (a
    /// complex key, or the value of a duplicate key that is being dropped).
    pointer: Option<String>,
    anchor: usize,
    start: Position,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Value>),
    Map {
        map: Map<String, Value>,
        /// The key waiting for its value, with its position.
        pending_key: Option<(String, Position)>,
        /// First position of each key, to report duplicates.
        key_lines: HashMap<String, Position>,
        /// True while the value of a duplicate key is being parsed (it is dropped).
        dropping: bool,
    },
}

struct Builder<'f> {
    file: &'f Path,
    stack: Vec<Frame>,
    root: Option<Value>,
    anchors: HashMap<usize, Value>,
    spans: HashMap<String, NodeSpan>,
    diagnostics: Vec<Diagnostic>,
}

impl<'f> Builder<'f> {
    fn new(file: &'f Path) -> Self {
        Builder {
            file,
            stack: Vec::new(),
            root: None,
            anchors: HashMap::new(),
            spans: HashMap::new(),
            diagnostics: Vec::new(),
        }
    }

    fn problem(&mut self, at: Position, code: Code, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::new(self.file, at, code, message));
    }

    fn event(&mut self, event: Event<'_>, span: Span) {
        let at = position(&span.start);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value =
                    match Scalar::parse_from_cow_and_metadata(text.clone(), style, tag.as_ref()) {
                        Some(scalar) => scalar_to_json(scalar, &text),
                        // A core-schema tag whose text does not fit (`!!int abc`): keep the text.
                        None => Value::String(text.into_owned()),
                    };
                self.record_span(at);
                self.emit(value, anchor, at);
            }
            Event::SequenceStart(anchor, _) => {
                let pointer = self.record_span(at);
                self.stack.push(Frame {
                    pointer,
                    anchor,
                    start: at,
                    kind: FrameKind::Seq(Vec::new()),
                });
            }
            Event::MappingStart(anchor, _) => {
                let pointer = self.record_span(at);
                self.stack.push(Frame {
                    pointer,
                    anchor,
                    start: at,
                    kind: FrameKind::Map {
                        map: Map::new(),
                        pending_key: None,
                        key_lines: HashMap::new(),
                        dropping: false,
                    },
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let value = match frame.kind {
                        FrameKind::Seq(items) => Value::Array(items),
                        FrameKind::Map { map, .. } => Value::Object(map),
                    };
                    self.emit(value, frame.anchor, frame.start);
                }
            }
            Event::Alias(id) => {
                let value = self.anchors.get(&id).cloned().unwrap_or(Value::Null);
                self.record_span(at);
                self.emit(value, 0, at);
            }
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => {}
        }
    }

    /// The pointer the next node will have, or `None` if it is a key or
    /// lives under a dropped value.
    fn next_pointer(&self) -> Option<(String, Option<Position>)> {
        let Some(top) = self.stack.last() else {
            return Some((String::new(), None));
        };
        let parent = top.pointer.as_deref()?;
        match &top.kind {
            FrameKind::Seq(items) => Some((pointer_push(parent, &items.len().to_string()), None)),
            FrameKind::Map {
                pending_key: Some((key, key_at)),
                dropping: false,
                ..
            } => Some((pointer_push(parent, key), Some(*key_at))),
            FrameKind::Map { .. } => None,
        }
    }

    /// Records where the node that starts at `at` lives; returns its pointer.
    fn record_span(&mut self, at: Position) -> Option<String> {
        let (pointer, key) = self.next_pointer()?;
        self.spans
            .insert(pointer.clone(), NodeSpan { key, value: at });
        Some(pointer)
    }

    /// Hands a finished node to its parent.
    fn emit(&mut self, value: Value, anchor: usize, at: Position) {
        if anchor != 0 {
            self.anchors.insert(anchor, value.clone());
        }
        let file = self.file;
        let Some(top) = self.stack.last_mut() else {
            self.root = Some(value);
            return;
        };
        match &mut top.kind {
            FrameKind::Seq(items) => items.push(value),
            FrameKind::Map {
                map,
                pending_key,
                key_lines,
                dropping,
            } => match pending_key.take() {
                None => {
                    // This node is a key.
                    let key = key_text(&value);
                    if let Some(first) = key_lines.get(&key) {
                        self.diagnostics.push(Diagnostic::new(
                            file,
                            at,
                            Code::DuplicateKey,
                            format!(
                                "`{key}` appears twice in this mapping (first on line {})",
                                first.line
                            ),
                        ));
                        *dropping = true;
                    } else {
                        key_lines.insert(key.clone(), at);
                        *dropping = false;
                    }
                    *pending_key = Some((key, at));
                }
                Some((key, _)) => {
                    if !*dropping {
                        map.insert(key, value);
                    }
                    *dropping = false;
                }
            },
        }
    }
}

/// The text of a mapping key: strings as they are, anything else as JSON.
fn key_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn scalar_to_json(scalar: Scalar<'_>, text: &str) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(b),
        Scalar::Integer(i) => Value::Number(i.into()),
        // JSON has no NaN or infinity: keep such values as their text, which the
        // schema then rejects wherever a number is expected.
        Scalar::FloatingPoint(f) => Number::from_f64(f.into_inner())
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(text.to_string())),
        Scalar::String(s) => Value::String(s.into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(text: &str) -> Document {
        let parsed = parse(Path::new("t.yaml"), text);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        parsed.document.unwrap()
    }

    fn at(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    #[test]
    fn values_and_positions_of_block_and_flow_nodes() {
        let d = doc("# header\nname: x\nvm: { vcpus: 2, memory: 1GiB }\nlist:\n  - a\n  - b: 1\n");
        assert_eq!(
            d.value,
            json!({"name": "x", "vm": {"vcpus": 2, "memory": "1GiB"}, "list": ["a", {"b": 1}]})
        );
        assert_eq!(d.value_position("/name"), at(2, 7));
        assert_eq!(d.key_position("/name"), at(2, 1));
        assert_eq!(d.value_position("/vm/memory"), at(3, 25));
        assert_eq!(d.key_position("/vm/memory"), at(3, 17));
        assert_eq!(d.value_position("/list/1/b"), at(6, 8));
        // A missing node is reported at its nearest existing ancestor.
        assert_eq!(d.value_position("/vm/disk"), d.value_position("/vm"));
        assert_eq!(d.value_position("/nothing/here"), d.value_position(""));
    }

    #[test]
    fn plain_scalars_follow_the_yaml_1_2_core_schema() {
        let d = doc(
            "a: no\nb: '09:45'\nc: 09:45\nd: 1.5\ne: ~\nf: true\ng: !!str 123\nh: \"7\"\ni: .nan\n",
        );
        assert_eq!(
            d.value,
            json!({"a": "no", "b": "09:45", "c": "09:45", "d": 1.5, "e": null, "f": true, "g": "123", "h": "7", "i": ".nan"})
        );
    }

    #[test]
    fn aliases_copy_their_anchor() {
        let d = doc("base: &b { vcpus: 1 }\nother: *b\n");
        assert_eq!(d.value["other"], json!({"vcpus": 1}));
    }

    #[test]
    fn duplicate_keys_are_reported_and_the_first_kept() {
        let parsed = parse(
            Path::new("t.yaml"),
            "a: 1\nb:\n  c: 2\n  c: 3\na: { x: 1 }\n",
        );
        let found: Vec<_> = parsed
            .diagnostics
            .iter()
            .map(|d| (d.position, d.code))
            .collect();
        assert_eq!(
            found,
            vec![
                (at(4, 3), Code::DuplicateKey),
                (at(5, 1), Code::DuplicateKey)
            ]
        );
        let d = parsed.document.unwrap();
        assert_eq!(d.value, json!({"a": 1, "b": {"c": 2}}));
        // The dropped value's positions do not replace the kept one's.
        assert_eq!(d.value_position("/a"), at(1, 4));
    }

    #[test]
    fn syntax_errors_and_empty_or_multiple_documents() {
        let p = parse(Path::new("t.yaml"), "a: [1, 2\nb: 3\n");
        assert!(p.document.is_none());
        assert_eq!(p.diagnostics[0].code, Code::YamlSyntax);

        let p = parse(Path::new("t.yaml"), "# nothing\n");
        assert_eq!(p.diagnostics[0].code, Code::EmptyFile);

        let p = parse(Path::new("t.yaml"), "a: 1\n---\nb: 2\n");
        assert_eq!(
            (p.diagnostics[0].code, p.diagnostics[0].position.line),
            (Code::MultipleDocuments, 2)
        );
        assert_eq!(p.document.unwrap().value, json!({"a": 1}));
    }

    #[test]
    fn pointers_escape_slash_and_tilde() {
        assert_eq!(pointer_push("/a", "b/c~d"), "/a/b~1c~0d");
        let d = doc("\"x/y\": 1\n");
        assert_eq!(d.value_position("/x~1y"), at(1, 8));
    }
}
