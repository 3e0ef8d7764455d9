//! The checks a JSON Schema cannot express: relations between fields, between
//! files, and between a course and the hosts that must run it.
//!
//! Each check reads only the fields it needs, through a [`View`] that hides
//! fields with problems of their own. So one mistake yields one diagnostic (a
//! `pool.warm` of "five" is a type error, not also a bad warm/max relation),
//! and an unrelated mistake elsewhere in the file never hides a check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::spec::{Console, ContainerSpec, Readiness, Runtime, SessionSpec, VmSpec, Window};
use super::values::{CourseName, ImageName, TimeOfDay, closest};
use crate::config::Config;
use crate::diagnostic::{Code, Diagnostic, Position};
use crate::yaml::Document;

/// A course document as the checks see it: typed fields on demand, minus the
/// ones already reported as broken.
pub struct View<'a> {
    file: &'a Path,
    doc: &'a Document,
    /// The document with unknown fields removed.
    value: &'a Value,
    /// Pointers of values that already have a diagnostic.
    broken: &'a [String],
}

impl<'a> View<'a> {
    pub fn new(file: &'a Path, doc: &'a Document, value: &'a Value, broken: &'a [String]) -> Self {
        View {
            file,
            doc,
            value,
            broken,
        }
    }

    /// The field at `pointer`, typed: `None` when it is absent, or it (or
    /// something inside it) already has a diagnostic, or it does not parse.
    pub fn get<T: DeserializeOwned>(&self, pointer: &str) -> Option<T> {
        let inside = |p: &String| {
            p == pointer || p.strip_prefix(pointer).is_some_and(|r| r.starts_with('/'))
        };
        if self.broken.iter().any(inside) {
            return None;
        }
        T::deserialize(self.value.pointer(pointer)?).ok()
    }

    /// Like [`View::get`], but an absent field is its default.
    fn get_or<T: DeserializeOwned>(&self, pointer: &str, default: impl FnOnce() -> T) -> Option<T> {
        match self.value.pointer(pointer) {
            None => Some(default()),
            Some(_) => self.get(pointer),
        }
    }

    fn report(&self, out: &mut Vec<Diagnostic>, pointer: &str, code: Code, message: String) {
        let position = self.doc.position(pointer);
        out.push(Diagnostic::new(self.file, position, code, message));
    }
}

/// Checks one course on its own (and against the hosts, when known).
pub fn course(view: &View<'_>, config: Option<&Config>, out: &mut Vec<Diagnostic>) {
    pool(view, out);
    session(view, out);
    readiness(view, out);
    runtime(view, out);
    if let Some(config) = config {
        hosts(view, config, out);
    }
}

fn pool(view: &View<'_>, out: &mut Vec<Diagnostic>) {
    let warm = view.get::<u32>("/pool/warm");
    let max = view.get::<u32>("/pool/max");
    if let (Some(warm), Some(max)) = (warm, max)
        && warm > max
    {
        view.report(
            out,
            "/pool/warm",
            Code::WarmExceedsMax,
            format!(
                "`pool.warm` is {warm} but `pool.max` is {max}: warm VMs count toward the maximum"
            ),
        );
    }
    let count = view
        .value
        .pointer("/pool/schedule")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let windows: Vec<Option<Window>> = (0..count)
        .map(|i| view.get(&format!("/pool/schedule/{i}")))
        .collect();
    for (i, window) in windows.iter().enumerate() {
        let here = format!("/pool/schedule/{i}");
        // Field by field, so a window with a bad time zone still has its
        // times and its size checked.
        let from = view.get::<TimeOfDay>(&format!("{here}/from"));
        let to = view.get::<TimeOfDay>(&format!("{here}/to"));
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            view.report(
                out,
                &format!("{here}/to"),
                Code::WindowEmpty,
                format!(
                    "schedule window {} ends at {to}, which is not after its start {from}; a window cannot cross midnight, split it in two",
                    i + 1,
                ),
            );
        }
        if let (Some(warm), Some(max)) = (view.get::<u32>(&format!("{here}/warm")), max)
            && warm > max
        {
            view.report(
                out,
                &format!("{here}/warm"),
                Code::WindowWarmExceedsMax,
                format!(
                    "schedule window {} asks for {warm} warm VMs but `pool.max` is {max}",
                    i + 1
                ),
            );
        }
        let Some(w) = window else { continue };
        // Overlap with an earlier window in the same zone on a shared day. Windows
        // in different zones are not compared: their overlap moves with DST.
        for (j, earlier) in windows[..i].iter().enumerate() {
            let Some(earlier) = earlier else { continue };
            if earlier.tz != w.tz || earlier.from >= earlier.to || w.from >= w.to {
                continue;
            }
            let shared: Vec<String> = w
                .days
                .iter()
                .filter(|d| earlier.days.contains(d))
                .map(ToString::to_string)
                .collect();
            if !shared.is_empty() && w.from < earlier.to && earlier.from < w.to {
                let line = view.doc.value_position(&format!("/pool/schedule/{j}")).line;
                view.report(
                    out,
                    &here,
                    Code::WindowOverlap,
                    format!(
                        "schedule window {} ({}–{}) overlaps window {} ({}–{}, line {line}) on {}",
                        i + 1,
                        w.from,
                        w.to,
                        j + 1,
                        earlier.from,
                        earlier.to,
                        shared.join(", ")
                    ),
                );
            }
        }
    }
}

fn session(view: &View<'_>, out: &mut Vec<Diagnostic>) {
    let defaults = SessionSpec::default();
    let expiry = view.get_or("/session/expiry", || defaults.expiry);
    let idle = view.get_or("/session/idle", || defaults.idle);
    for (field, value) in [("expiry", expiry), ("idle", idle)] {
        if value.is_some_and(|v| v.is_zero()) {
            view.report(
                out,
                &format!("/session/{field}"),
                Code::DurationNotPositive,
                format!("`session.{field}` must be longer than zero"),
            );
        }
    }
    if let (Some(idle), Some(expiry)) = (idle, expiry)
        && idle > expiry
    {
        view.report(
            out,
            "/session/idle",
            Code::IdleExceedsExpiry,
            format!(
                "`session.idle` ({idle}) is longer than `session.expiry` ({expiry}): the session would always end by expiry first"
            ),
        );
    }
    let console = view.get_or("/session/console", Console::default);
    let has_ssh = view.value.pointer("/session/ssh").is_some();
    match (console, has_ssh) {
        (Some(Console::Ssh), false) => view.report(
            out,
            "/session/console",
            Code::SshSettingsMissing,
            "`session.console` is ssh but `session.ssh` is missing: add `ssh: { user: … }`".to_string(),
        ),
        (Some(Console::Serial), true) => view.report(
            out,
            "/session/ssh",
            Code::SshSettingsUnused,
            "`session.ssh` is set but `session.console` is serial: set `console: ssh` or remove `ssh`".to_string(),
        ),
        _ => {}
    }
}

fn readiness(view: &View<'_>, out: &mut Vec<Diagnostic>) {
    let Some(r) = view.get_or("/readiness", Readiness::default) else {
        return;
    };
    if r.console_marker.is_some() && r.port.is_some() {
        view.report(
            out,
            "/readiness/port",
            Code::ReadinessConflict,
            "`readiness` names both `console_marker` and `port`: keep the one that proves the VM is ready".to_string(),
        );
    }
    if r.timeout.is_zero() {
        view.report(
            out,
            "/readiness/timeout",
            Code::DurationNotPositive,
            "`readiness.timeout` must be longer than zero".to_string(),
        );
    }
}

/// A course is one runtime through and through: no block or setting of the
/// other one.
fn runtime(view: &View<'_>, out: &mut Vec<Diagnostic>) {
    let Some(runtime) = view.get_or("/runtime", Runtime::default) else {
        return;
    };
    let present = |p: &str| view.value.pointer(p).is_some();
    let misplaced: &[(&str, &str)] = match runtime {
        Runtime::Container => &[
            (
                "/image",
                "`image` names a VM base image; a container course names its image in `container.image`",
            ),
            (
                "/vm",
                "`vm` sizes a VM; a container's limits are `container.cpus` and `container.memory`",
            ),
            (
                "/session/ssh",
                "a container has no SSH login: its terminal is a shell started in it (`container.shell`, `container.user`)",
            ),
            (
                "/readiness/port",
                "a container has no readiness port: use `readiness.command` or `readiness.console_marker`",
            ),
        ],
        Runtime::Vm => &[
            (
                "/container",
                "`container` is for `runtime: container` courses; add that, or remove `container`",
            ),
            (
                "/readiness/command",
                "`readiness.command` runs in a container; a VM course proves readiness by `console_marker` or `port`",
            ),
        ],
    };
    for (pointer, message) in misplaced {
        if present(pointer) {
            view.report(out, pointer, Code::RuntimeMismatch, (*message).to_string());
        }
    }
    if runtime == Runtime::Container
        && view.get::<Console>("/session/console") == Some(Console::Ssh)
    {
        view.report(
            out,
            "/session/console",
            Code::RuntimeMismatch,
            "`console: ssh` is for VMs: a container's terminal is a shell started in it"
                .to_string(),
        );
    }
    if runtime == Runtime::Container
        && present("/readiness/console_marker")
        && present("/readiness/command")
    {
        view.report(
            out,
            "/readiness/command",
            Code::ReadinessConflict,
            "`readiness` names both `console_marker` and `command`: keep the one that proves the container is ready".to_string(),
        );
    }
}

fn hosts(view: &View<'_>, config: &Config, out: &mut Vec<Diagnostic>) {
    if view.get_or("/runtime", Runtime::default) == Some(Runtime::Container) {
        container_hosts(view, config, out);
        return;
    }
    if view.get_or("/session/console", Console::default) == Some(Console::Ssh)
        && config.terminal.ssh_key.is_none()
    {
        view.report(
            out,
            "/session/console",
            Code::SshKeyMissing,
            "`console: ssh` needs `terminal.ssh_key` in labpool's configuration: the key the terminal logs in with".to_string(),
        );
    }
    let Some(image) = view.get::<ImageName>("/image") else {
        return;
    };
    if !config.images.contains_key(&image) {
        let known: Vec<&str> = config.images.keys().map(|i| i.as_str()).collect();
        let hint = closest(image.as_str(), known.iter().copied())
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        let listed = if known.is_empty() {
            "the catalog is empty".to_string()
        } else {
            format!("known images: {}", known.join(", "))
        };
        view.report(
            out,
            "/image",
            Code::UnknownImage,
            format!("image `{image}` is not in the hosts' image catalog{hint}; {listed}"),
        );
        return;
    }
    let Some(vm) = view.get::<VmSpec>("/vm") else {
        return;
    };
    let carriers: Vec<_> = config
        .hosts
        .iter()
        .filter(|h| h.runtime == Runtime::Vm && h.carries(&image))
        .collect();
    if carriers.iter().any(|h| h.fits(vm.vcpus, vm.memory)) {
        return;
    }
    let detail = match carriers
        .iter()
        .max_by_key(|h| (h.capacity.memory, h.capacity.vcpus))
    {
        None => format!("no host carries image `{image}`"),
        Some(h) => format!(
            "the largest host with image `{image}` is `{}` with {} vCPUs and {}",
            h.name, h.capacity.vcpus, h.capacity.memory
        ),
    };
    view.report(
        out,
        "/vm",
        Code::NoHostFits,
        format!(
            "no host can hold one VM of {} vCPUs and {}: {detail}",
            vm.vcpus, vm.memory
        ),
    );
}

/// A container course needs a Docker host big enough for one container.
fn container_hosts(view: &View<'_>, config: &Config, out: &mut Vec<Diagnostic>) {
    let Some(container) = view.get::<ContainerSpec>("/container") else {
        return;
    };
    let engines: Vec<_> = config
        .hosts
        .iter()
        .filter(|h| h.runtime == Runtime::Container)
        .collect();
    let vcpus = (container.cpus.ceil() as u32).max(1);
    if engines.iter().any(|h| h.fits(vcpus, container.memory)) {
        return;
    }
    let detail = match engines
        .iter()
        .max_by_key(|h| (h.capacity.memory, h.capacity.vcpus))
    {
        None => "no host has `runtime: container` (a Docker engine)".to_string(),
        Some(h) => format!(
            "the largest Docker host is `{}` with {} vCPUs and {}",
            h.name, h.capacity.vcpus, h.capacity.memory
        ),
    };
    view.report(
        out,
        "/container",
        Code::NoHostFits,
        format!(
            "no host can hold one container of {} CPUs and {}: {detail}",
            container.cpus, container.memory
        ),
    );
}

/// What cross-file checks need from a file, read even when the file has other
/// problems, so that a duplicate name is reported alongside a typo.
#[derive(Debug, Clone)]
pub struct Identity {
    pub file: PathBuf,
    pub name: Option<(CourseName, Position)>,
    pub contexts: Vec<(String, Position)>,
}

impl Identity {
    pub fn of(file: &Path, doc: &Document) -> Identity {
        let name = doc
            .value
            .get("name")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<CourseName>().ok())
            .map(|n| (n, doc.value_position("/name")));
        let contexts = doc
            .value
            .pointer("/lti/contexts")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, v)| {
                let id = v.as_str().filter(|s| !s.is_empty())?;
                Some((
                    id.to_string(),
                    doc.value_position(&format!("/lti/contexts/{i}")),
                ))
            })
            .collect();
        Identity {
            file: file.to_path_buf(),
            name,
            contexts,
        }
    }

    /// The file name must say which course it holds.
    pub fn check_file_name(&self, out: &mut Vec<Diagnostic>) {
        let Some((name, at)) = &self.name else { return };
        let stem = self
            .file
            .file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default();
        if stem != name.as_str() {
            out.push(Diagnostic::new(
                &self.file,
                *at,
                Code::NameMismatch,
                format!(
                    "course `{name}` is in a file named `{stem}`: rename the file to `{name}.yaml` or the course to `{stem}`"
                ),
            ));
        }
    }
}

/// Checks that span files: names and LMS contexts must be unique. The first
/// file (in path order) keeps the name; each later one is reported.
pub fn across(files: &[Identity], out: &mut Vec<Diagnostic>) {
    let mut names: HashMap<&CourseName, (&Path, Position)> = HashMap::new();
    let mut contexts: HashMap<&str, (&Path, Position)> = HashMap::new();
    for id in files {
        if let Some((name, at)) = &id.name {
            match names.get(name) {
                Some((first, first_at)) => out.push(Diagnostic::new(
                    &id.file,
                    *at,
                    Code::DuplicateName,
                    format!(
                        "course `{name}` is already defined in {}:{}",
                        first.display(),
                        first_at.line
                    ),
                )),
                None => {
                    names.insert(name, (&id.file, *at));
                }
            }
        }
        for (context, at) in &id.contexts {
            match contexts.get(context.as_str()) {
                // A repeat inside one file is the schema's `uniqueItems` finding.
                Some((first, first_at)) if *first != id.file.as_path() => {
                    out.push(Diagnostic::new(
                        &id.file,
                        *at,
                        Code::DuplicateLtiContext,
                        format!(
                            "LMS context `{context}` is already mapped in {}:{}; a context can launch one course only",
                            first.display(),
                            first_at.line
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    contexts.insert(context, (&id.file, *at));
                }
            }
        }
    }
}
