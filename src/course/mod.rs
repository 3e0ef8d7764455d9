//! Courses: the course file format, its JSON Schema, loading and validation.
//!
//! Data flow: `load` reads files → `crate::yaml` parses them with positions →
//! `schema` checks structure → `spec` types are deserialized → `check` adds
//! the rules a schema cannot express. Problems are [`crate::diagnostic::Diagnostic`]s,
//! never panics or early returns.

pub mod check;
pub mod load;
pub mod schema;
pub mod spec;
pub mod values;

pub use load::{Loaded, LoadedCourse, load_paths};
pub use spec::{
    Console, Course, LtiSpec, PoolSpec, Probe, Readiness, SessionSpec, SshSpec, VmSpec, Window,
};
