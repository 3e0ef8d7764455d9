//! Desired state: what each course asks for at a given moment.
//!
//! A course file says `warm: 2` plus schedule windows; the reconciler needs one
//! number now ("keep 30 warm, class starts in 10 minutes"), and a fingerprint
//! of everything that would make an existing VM wrong (the spec hash). Both are
//! pure functions of the course, the image catalog and the clock.

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone as _, Utc, Weekday};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::ImageConfig;
use crate::course::Course;
use crate::course::spec::{Console, ContainerSpec, Probe, Runtime, Window};
use crate::course::values::Day;

/// One course as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesiredCourse {
    pub name: String,
    /// Fingerprint of what a VM is built from (image, size, console); a VM
    /// with another hash is outdated and is replaced once nobody uses it.
    pub spec_hash: String,
    /// VMs to keep warm now, schedule applied.
    pub warm: u32,
    /// Most VMs at once, warm and assigned together.
    pub max: u32,
    pub vcpus: u32,
    pub memory: u64,
    /// The catalog image (VM courses); `None` for containers.
    pub image: Option<String>,
    /// Only hosts of this runtime take the course's labs.
    pub runtime: Runtime,
    /// A schedule window (or its pre-warm lead) is on: class time is sacred,
    /// only additive changes apply until it ends.
    pub in_class: bool,
    /// How long a VM may take to become ready (ms).
    pub ready_timeout_ms: i64,
    /// A session without terminal activity for this long ends (ms).
    pub idle_ms: i64,
    /// No new VMs before this time (ms): the course's boots keep failing.
    pub backoff_until: Option<i64>,
}

/// The spec hash of a course's VMs: 16 hex digits of a SHA-256 over the build
/// inputs, including the image's catalog entry (a new base volume or kernel
/// replaces the pool too).
///
/// Only the fields that decide how a VM is built count: warm counts, titles,
/// sessions and LTI settings change nothing in a running VM, so raising
/// `warm` must not replace the pool. The inputs are written out by hand
/// (`build_inputs`), field by field, in the JSON form earlier versions
/// hashed, so that no derived `Serialize` or `Debug` can move a hash: a
/// moved hash replaces every VM of the course.
pub fn spec_hash(course: &Course, catalog: Option<&ImageConfig>) -> String {
    let digest = Sha256::digest(build_inputs(course, catalog).as_bytes());
    hex::encode(&digest[..8])
}

/// What the spec hash is taken over: a JSON object of the build fields, its
/// keys in their order.
fn build_inputs(course: &Course, catalog: Option<&ImageConfig>) -> String {
    let mut o = JsonObject::default();
    // The container's block, written where its first field comes.
    let mut block: Option<JsonObject> = None;
    for field in build_fields(course, catalog) {
        if let Place::Container(key) = field.place {
            let block = block.get_or_insert_with(JsonObject::default);
            if let Some(json) = field.json {
                block.field(key, json);
            }
            continue;
        }
        if let Some(block) = block.take() {
            o.field("container", block.finish());
        }
        if let (Place::Hashed(key), Some(json)) = (field.place, field.json) {
            o.field(key, json);
        }
    }
    if let Some(block) = block {
        o.field("container", block.finish());
    }
    o.finish()
}

/// One field a course's labs are built from: what the spec hash takes in
/// and how `labpool diff` shows it. [`build_fields`] is the one list of
/// them: the hash is written from it and the diff's build changes are the
/// fields of it that differ, so a new build field cannot be hashed and
/// left out of the diff, or the other way round.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildField {
    /// As course files name it: `vcpus`, `ssh.port`, `readiness`.
    pub name: &'static str,
    /// Where the hash takes it.
    place: Place,
    /// Its JSON in the hash; `None`: left out (an unset container option,
    /// a shown-only field).
    json: Option<String>,
    /// Its value as people read it: `256MiB`, `console marker "login:"`.
    pub shown: String,
}

/// Where a build field goes in the hashed JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Under this key.
    Hashed(&'static str),
    /// Under this key of the container's block (`container: {…}`).
    Container(&'static str),
    /// Nowhere: shown by the diff, decided by the other fields (a VM
    /// course's runtime).
    Shown,
}

impl BuildField {
    fn new(name: &'static str, place: Place, json: Option<String>, shown: String) -> BuildField {
        BuildField {
            name,
            place,
            json,
            shown,
        }
    }

    /// The same build on both sides (`shown` only for shown-only fields).
    pub fn same(&self, other: &BuildField) -> bool {
        self.json == other.json && self.shown == other.shown
    }
}

/// The build fields of `course` (with the image's catalog entry), in the
/// order the spec hash writes them: for a VM `image`, `catalog`, `vcpus`,
/// `memory`, `disk`, `console`, `ssh_port`, `probe`; for a container
/// `runtime`, `container` (`image`, `cpus`, `memory`, and `command`,
/// `user`, `shell` when set), `probe`.
pub fn build_fields(course: &Course, catalog: Option<&ImageConfig>) -> Vec<BuildField> {
    use Place::{Hashed, Shown};
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".to_string());
    let probe = course.probe();
    let mut fields = Vec::new();
    match (&course.image, &course.vm, &course.container) {
        (Some(image), Some(vm), _) => {
            fields.push(BuildField::new(
                "runtime",
                Shown,
                None,
                course.runtime.as_str().into(),
            ));
            fields.push(BuildField::new(
                "image",
                Hashed("image"),
                Some(json_str(image.as_str())),
                image.to_string(),
            ));
            fields.push(BuildField::new(
                "catalog",
                Hashed("catalog"),
                Some(catalog.map_or_else(null, catalog_json)),
                or_none(catalog.map(catalog_shown)),
            ));
            fields.push(BuildField::new(
                "vcpus",
                Hashed("vcpus"),
                Some(vm.vcpus.to_string()),
                vm.vcpus.to_string(),
            ));
            fields.push(BuildField::new(
                "memory",
                Hashed("memory"),
                Some(vm.memory.as_bytes().to_string()),
                vm.memory.to_string(),
            ));
            fields.push(BuildField::new(
                "disk",
                Hashed("disk"),
                Some(vm.disk.map_or_else(null, |d| d.as_bytes().to_string())),
                vm.disk
                    .map_or_else(|| "default".to_string(), |d| d.to_string()),
            ));
            let console = match course.session.console {
                Console::Serial => "serial",
                Console::Ssh => "ssh",
            };
            fields.push(BuildField::new(
                "console",
                Hashed("console"),
                Some(json_str(console)),
                console.to_string(),
            ));
            let port = course.session.ssh.as_ref().map(|s| s.port);
            fields.push(BuildField::new(
                "ssh.port",
                Hashed("ssh_port"),
                Some(port.map_or_else(null, |p| p.to_string())),
                or_none(port.map(|p| p.to_string())),
            ));
        }
        // A container is built from its whole block (image, limits,
        // command, user, shell) and its readiness probe.
        (_, _, container) => {
            fields.push(BuildField::new(
                "runtime",
                Hashed("runtime"),
                Some(json_str("container")),
                "container".to_string(),
            ));
            match container {
                None => fields.push(BuildField::new(
                    "container",
                    Hashed("container"),
                    Some(null()),
                    "none".to_string(),
                )),
                Some(c) => container_fields(c, &mut fields),
            }
        }
    }
    fields.push(BuildField::new(
        "readiness",
        Hashed("probe"),
        Some(json_str(&probe_text(&probe))),
        probe_shown(&probe),
    ));
    fields
}

/// The fields of a container's block.
fn container_fields(c: &ContainerSpec, fields: &mut Vec<BuildField>) {
    use Place::Container;
    let list = |v: &Option<Vec<String>>| v.as_ref().map(|v| format!("{v:?}"));
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".to_string());
    fields.push(BuildField::new(
        "image",
        Container("image"),
        Some(json_str(&c.image)),
        c.image.clone(),
    ));
    fields.push(BuildField::new(
        "cpus",
        Container("cpus"),
        Some(serde_json::to_string(&c.cpus).expect("a limit is finite")),
        c.cpus.to_string(),
    ));
    fields.push(BuildField::new(
        "memory",
        Container("memory"),
        Some(json_str(&c.memory.to_string())),
        c.memory.to_string(),
    ));
    // Unset ones are left out of the hash, not written as null.
    fields.push(BuildField::new(
        "command",
        Container("command"),
        c.command.as_deref().map(json_list),
        or_none(list(&c.command)),
    ));
    fields.push(BuildField::new(
        "user",
        Container("user"),
        c.user.as_deref().map(json_str),
        or_none(c.user.clone()),
    ));
    fields.push(BuildField::new(
        "shell",
        Container("shell"),
        c.shell.as_deref().map(json_list),
        or_none(list(&c.shell)),
    ));
}

/// A catalog entry as people read it: `volume rhel.qcow2, kernel /boot/vmlinuz`.
fn catalog_shown(image: &ImageConfig) -> String {
    let parts: Vec<String> = [
        ("volume", &image.volume),
        ("kernel", &image.kernel),
        ("initrd", &image.initrd),
        ("cmdline", &image.cmdline),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.as_ref().map(|v| format!("{key} {v}")))
    .collect();
    if parts.is_empty() {
        "empty entry".to_string()
    } else {
        parts.join(", ")
    }
}

/// A readiness probe as people read it.
fn probe_shown(probe: &Probe) -> String {
    match probe {
        Probe::ConsoleMarker(m) => format!("console marker \"{m}\""),
        Probe::Port(port) => format!("port {port}"),
        Probe::Command(cmd) => format!("command {cmd:?}"),
    }
}

fn catalog_json(image: &ImageConfig) -> String {
    let mut o = JsonObject::default();
    for (key, value) in [
        ("volume", &image.volume),
        ("kernel", &image.kernel),
        ("initrd", &image.initrd),
        ("cmdline", &image.cmdline),
    ] {
        o.field(key, value.as_deref().map_or_else(null, json_str));
    }
    o.finish()
}

/// The readiness probe as earlier versions wrote it (Rust's debug form of
/// the probe then): `ConsoleMarker("login:")`, `Port(22)`,
/// `Command(["test", "-e", "/tmp/ready"])`.
fn probe_text(probe: &Probe) -> String {
    match probe {
        Probe::ConsoleMarker(marker) => format!("ConsoleMarker({})", quoted(marker)),
        Probe::Port(port) => format!("Port({port})"),
        Probe::Command(argv) => {
            let argv: Vec<String> = argv.iter().map(|a| quoted(a)).collect();
            format!("Command([{}])", argv.join(", "))
        }
    }
}

/// `text` in double quotes, escaped as Rust's debug form of a string
/// escapes it: `\"`, `\\`, `\t`, `\r`, `\n`, `\0`, other ASCII controls as
/// `\u{1b}`; beyond ASCII, what `char::escape_debug` writes.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\0' => out.push_str("\\0"),
            c if c.is_ascii_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c if c.is_ascii() => out.push(c),
            c => out.extend(c.escape_debug()),
        }
    }
    out.push('"');
    out
}

fn null() -> String {
    "null".to_string()
}

fn json_str(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

fn json_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| json_str(i)).collect();
    format!("[{}]", items.join(","))
}

/// A compact JSON object written key by key.
#[derive(Default)]
struct JsonObject(String);

impl JsonObject {
    fn field(&mut self, key: &str, value: String) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        self.0.push_str(&json_str(key));
        self.0.push(':');
        self.0.push_str(&value);
    }

    fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

/// The warm target at `now`: the largest `warm` of the windows that are on
/// (counting `prewarm` before each opens), else `pool.warm`. The flag says
/// whether any window is on.
pub fn warm_target(
    course: &Course,
    now: DateTime<Utc>,
    prewarm: std::time::Duration,
) -> (u32, bool) {
    let lead = chrono::Duration::from_std(prewarm).unwrap_or_default();
    let active = course
        .pool
        .schedule
        .iter()
        .filter(|w| window_on(w, now, lead))
        .map(|w| w.warm)
        .max();
    match active {
        Some(warm) => (warm, true),
        None => (course.pool.warm, false),
    }
}

/// A schedule window's next (or current) occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct WindowTimes {
    /// Opens (unix ms).
    pub from: i64,
    /// Closes (unix ms).
    pub to: i64,
    /// Warm VMs during the window.
    pub warm: u32,
    /// Open now.
    pub open: bool,
}

/// The window of `course`'s schedule that is open at `now`, else the next to
/// open within a week; None for a course without a schedule.
pub fn next_window(course: &Course, now: DateTime<Utc>) -> Option<WindowTimes> {
    course
        .pool
        .schedule
        .iter()
        .flat_map(|w| {
            let tz = w.tz.tz();
            let today = now.with_timezone(&tz).date_naive();
            (-1..=8)
                .filter_map(move |d| today.checked_add_signed(chrono::Duration::days(d)))
                .filter(|day| w.days.iter().any(|d| weekday(*d) == day.weekday()))
                .filter_map(move |day| {
                    let from = local_instant(&tz, day, w.from.minutes())?;
                    let to = local_instant(&tz, day, w.to.minutes())?;
                    (to > now).then_some(WindowTimes {
                        from: from.timestamp_millis(),
                        to: to.timestamp_millis(),
                        warm: w.warm,
                        open: from <= now,
                    })
                })
        })
        // An open window first (the largest if several), else the earliest.
        .min_by_key(|t| (!t.open, t.from, std::cmp::Reverse(t.warm)))
}

/// Is `now` within [from - lead, to) of one of the window's days? Days are
/// local to the window's zone; yesterday and tomorrow are looked at too so a
/// lead time or a zone offset that crosses midnight is still caught.
fn window_on(window: &Window, now: DateTime<Utc>, lead: chrono::Duration) -> bool {
    let tz = window.tz.tz();
    let today = now.with_timezone(&tz).date_naive();
    [today.pred_opt(), Some(today), today.succ_opt()]
        .into_iter()
        .flatten()
        .filter(|day| window.days.iter().any(|d| weekday(*d) == day.weekday()))
        .any(|day| {
            let (Some(start), Some(end)) = (
                local_instant(&tz, day, window.from.minutes()),
                local_instant(&tz, day, window.to.minutes()),
            ) else {
                return false;
            };
            start - lead <= now && now < end
        })
}

/// `minutes` after local midnight of `day` in `tz`, as a UTC instant. A time
/// that a DST jump skips resolves to the first valid instant after it; an
/// ambiguous one to the earlier.
fn local_instant(tz: &chrono_tz::Tz, day: NaiveDate, minutes: u16) -> Option<DateTime<Utc>> {
    let (day, minutes) = if minutes >= 24 * 60 {
        (day.checked_add_days(Days::new(1))?, minutes - 24 * 60)
    } else {
        (day, minutes)
    };
    let naive = day.and_hms_opt(u32::from(minutes / 60), u32::from(minutes % 60), 0)?;
    (0..=120)
        .step_by(30)
        .find_map(|skip| {
            tz.from_local_datetime(&(naive + chrono::Duration::minutes(skip)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
}

fn weekday(day: Day) -> Weekday {
    match day {
        Day::Mon => Weekday::Mon,
        Day::Tue => Weekday::Tue,
        Day::Wed => Weekday::Wed,
        Day::Thu => Weekday::Thu,
        Day::Fri => Weekday::Fri,
        Day::Sat => Weekday::Sat,
        Day::Sun => Weekday::Sun,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn course(schedule: serde_json::Value) -> Course {
        serde_json::from_value(serde_json::json!({
            "name": "c", "title": "C", "image": "busybox",
            "vm": { "vcpus": 1, "memory": "192MiB" },
            "pool": { "warm": 2, "max": 40, "schedule": schedule },
        }))
        .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    const LEAD: std::time::Duration = std::time::Duration::from_secs(15 * 60);

    #[test]
    fn window_sets_the_target_with_prewarm_lead() {
        // Mon/Wed 09:45-11:30 Chicago (UTC-6 in November).
        let c = course(serde_json::json!([
            { "days": ["mon", "wed"], "from": "09:45", "to": "11:30", "tz": "America/Chicago", "warm": 30 }
        ]));
        // Monday 2026-11-23.
        assert_eq!(
            warm_target(&c, at("2026-11-23T15:29:00Z"), LEAD),
            (2, false)
        );
        assert_eq!(
            warm_target(&c, at("2026-11-23T15:30:00Z"), LEAD),
            (30, true)
        ); // 09:30 local
        assert_eq!(
            warm_target(&c, at("2026-11-23T17:29:59Z"), LEAD),
            (30, true)
        );
        assert_eq!(
            warm_target(&c, at("2026-11-23T17:30:00Z"), LEAD),
            (2, false)
        ); // 11:30 local
        // Tuesday: no window.
        assert_eq!(
            warm_target(&c, at("2026-11-24T16:00:00Z"), LEAD),
            (2, false)
        );
    }

    #[test]
    fn window_to_midnight_and_across_utc_midnight() {
        let c = course(serde_json::json!([
            { "days": ["sun"], "from": "20:00", "to": "24:00", "tz": "Asia/Tokyo", "warm": 5 }
        ]));
        // Sunday 2026-11-22 23:59 Tokyo = 14:59 UTC.
        assert_eq!(warm_target(&c, at("2026-11-22T14:59:00Z"), LEAD), (5, true));
        assert_eq!(
            warm_target(&c, at("2026-11-22T15:00:00Z"), LEAD),
            (2, false)
        );
    }

    #[test]
    fn overlapping_windows_take_the_largest() {
        let c = course(serde_json::json!([
            { "days": ["mon"], "from": "09:00", "to": "12:00", "tz": "UTC", "warm": 5 },
            { "days": ["mon"], "from": "10:00", "to": "11:00", "tz": "UTC", "warm": 9 }
        ]));
        assert_eq!(warm_target(&c, at("2026-11-23T10:30:00Z"), LEAD), (9, true));
        assert_eq!(warm_target(&c, at("2026-11-23T11:30:00Z"), LEAD), (5, true));
    }

    #[test]
    fn next_window_is_the_open_one_else_the_next_to_open() {
        let c = course(serde_json::json!([
            { "days": ["mon", "wed"], "from": "09:45", "to": "11:30", "tz": "America/Chicago", "warm": 4 }
        ]));
        // Monday 2026-11-30 10:00 Chicago (16:00 UTC): open.
        let open = next_window(&c, at("2026-11-30T16:00:00Z")).expect("window");
        assert!(open.open);
        assert_eq!(open.from, at("2026-11-30T15:45:00Z").timestamp_millis());
        assert_eq!(open.to, at("2026-11-30T17:30:00Z").timestamp_millis());
        assert_eq!(open.warm, 4);
        // Just after it closes: Wednesday's.
        let next = next_window(&c, at("2026-11-30T17:30:00Z")).expect("window");
        assert!(!next.open);
        assert_eq!(next.from, at("2026-12-02T15:45:00Z").timestamp_millis());
        // No schedule, no window.
        assert_eq!(
            next_window(&course(serde_json::json!([])), at("2026-11-30T16:00:00Z")),
            None
        );
    }

    #[test]
    fn spec_hash_ignores_pool_size_but_not_the_build() {
        let a = course(serde_json::json!([]));
        let mut b = a.clone();
        b.pool.warm = 7;
        b.title = "other".into();
        assert_eq!(spec_hash(&a, None), spec_hash(&b, None));
        b.vm.as_mut().unwrap().vcpus = 2;
        assert_ne!(spec_hash(&a, None), spec_hash(&b, None));
        // A container course: its limits and user are its build.
        let mut boxed = a.clone();
        boxed.runtime = crate::course::spec::Runtime::Container;
        boxed.image = None;
        boxed.vm = None;
        boxed.container = Some(crate::course::spec::ContainerSpec {
            image: "labpool/busybox:1".into(),
            cpus: 0.5,
            memory: crate::course::values::ByteSize::mib(128),
            command: None,
            user: None,
            shell: None,
        });
        let mut other = boxed.clone();
        other.pool.warm = 9;
        assert_eq!(spec_hash(&boxed, None), spec_hash(&other, None));
        other.container.as_mut().unwrap().user = Some("student".into());
        assert_ne!(spec_hash(&boxed, None), spec_hash(&other, None));
        let image = ImageConfig {
            volume: Some("v1".into()),
            kernel: None,
            initrd: None,
            cmdline: None,
        };
        assert_ne!(spec_hash(&a, None), spec_hash(&a, Some(&image)));
        assert_eq!(spec_hash(&a, None).len(), 16);
    }
}

/// The spec hashes of representative courses as the previous version
/// computed them: a change to how the hash is written must keep every one,
/// or the upgrade would replace every pool.
#[cfg(test)]
mod pinned_hashes {
    use super::*;

    fn course(extra: serde_json::Value) -> Course {
        let mut base = serde_json::json!({
            "name": "c", "title": "C",
            "pool": { "warm": 2, "max": 40 },
        });
        for (k, v) in extra.as_object().expect("an object") {
            base[k] = v.clone();
        }
        serde_json::from_value(base).expect("a course")
    }

    fn vm(extra: serde_json::Value) -> Course {
        let mut base = serde_json::json!({
            "image": "busybox", "vm": { "vcpus": 1, "memory": "192MiB" },
        });
        for (k, v) in extra.as_object().expect("an object") {
            base[k] = v.clone();
        }
        course(base)
    }

    fn container(extra: serde_json::Value) -> Course {
        let mut base = serde_json::json!({
            "runtime": "container",
            "container": { "image": "labpool/busybox:1", "cpus": 0.5, "memory": "128MiB" },
        });
        for (k, v) in extra.as_object().expect("an object") {
            base[k] = v.clone();
        }
        course(base)
    }

    /// The probe is written as Rust's debug form of a string wrote it
    /// when the hashes above were taken.
    #[test]
    fn probe_strings_are_quoted_as_debug_quoted_them() {
        let ascii: String = (0u8..128).map(char::from).collect();
        for text in [
            ascii.as_str(),
            "é ü 中文 \u{200b} \u{301}x \u{feff}",
            "",
            "'",
        ] {
            assert_eq!(quoted(text), format!("{text:?}"), "{text:?}");
        }
    }

    #[test]
    fn hashes_of_todays_courses_are_kept() {
        let volume = ImageConfig {
            volume: Some("busybox.qcow2".into()),
            kernel: None,
            initrd: None,
            cmdline: None,
        };
        let direct = ImageConfig {
            volume: Some("root.qcow2".into()),
            kernel: Some("/var/lib/labpool/vmlinuz".into()),
            initrd: Some("/var/lib/labpool/initrd \"x\".img".into()),
            cmdline: Some("console=ttyS0 quiet".into()),
        };
        let cases: Vec<(&str, Course, Option<&ImageConfig>, &str)> = vec![
            (
                "serial, default marker",
                vm(serde_json::json!({})),
                None,
                "d4aa0a692edce59b",
            ),
            (
                "serial, volume image",
                vm(serde_json::json!({})),
                Some(&volume),
                "7b8b1cefb308631f",
            ),
            (
                "serial, disk, direct boot",
                vm(serde_json::json!({
                    "vm": { "vcpus": 2, "memory": "1GiB", "disk": "4GiB" },
                })),
                Some(&direct),
                "11c8a5c5bc81efc7",
            ),
            (
                "serial, own marker with quotes",
                vm(serde_json::json!({
                    "readiness": { "console_marker": "ready \"now\" \\o/ \t é" },
                })),
                None,
                "df65c0bab423df63",
            ),
            (
                "serial, port readiness",
                vm(serde_json::json!({ "readiness": { "port": 8080 } })),
                None,
                "132478dd52de3532",
            ),
            (
                "ssh console, default port",
                vm(serde_json::json!({
                    "session": { "console": "ssh", "ssh": { "user": "student" } },
                })),
                Some(&volume),
                "717866045c372abb",
            ),
            (
                "ssh console, own port, disk",
                vm(serde_json::json!({
                    "vm": { "vcpus": 1, "memory": "512MiB", "disk": "1536MiB" },
                    "session": { "console": "ssh", "ssh": { "user": "student", "port": 2222 } },
                })),
                None,
                "47f84b09f934d6c4",
            ),
            (
                "ssh console, marker readiness",
                vm(serde_json::json!({
                    "session": { "console": "ssh", "ssh": { "user": "student" } },
                    "readiness": { "console_marker": "sshd started" },
                })),
                None,
                "c559874b17f6a83c",
            ),
            (
                "container, default probe",
                container(serde_json::json!({})),
                None,
                "e16764a8b6d8ccfe",
            ),
            (
                "container, everything set",
                container(serde_json::json!({
                    "container": {
                        "image": "python:3.12-slim", "cpus": 1.0, "memory": "1GiB",
                        "command": ["sleep", "infinity"], "user": "student",
                        "shell": ["/bin/bash", "-l"],
                    },
                    "readiness": { "command": ["test", "-e", "/tmp/ready"] },
                })),
                None,
                "5fa369c0b63e9ae6",
            ),
            (
                "container, marker readiness",
                container(serde_json::json!({
                    "readiness": { "console_marker": "ready" },
                })),
                None,
                "be3cc92107177580",
            ),
        ];
        let mut wrong = Vec::new();
        for (what, course, catalog, want) in &cases {
            let got = spec_hash(course, *catalog);
            if got != *want {
                wrong.push(format!("{what}: {got} (pinned {want})"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
