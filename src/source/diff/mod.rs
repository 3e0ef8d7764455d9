//! `labpool diff BASE HEAD`: what merging a course change will do to the
//! pools, course by course — for a pull request's CI comment.
//!
//! Along the data flow: [`sides`] reads each side (a folder of course
//! files or a Git revision); [`diff`] here is pure (two sets of valid
//! courses in, a [`CourseDiff`] per differing course out); [`report`] adds
//! the notes and the hold warning; [`render`] prints it as text, Markdown
//! or JSON. The command itself is `crate::cli::diff`. What replaces running
//! VMs is decided by [`spec_hash`], exactly as the reconciler decides it.

pub mod render;
pub mod report;
pub mod sides;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::config::ImageConfig;
use crate::course::Course;
use crate::course::spec::Window;
use crate::course::values::ImageName;
use crate::reconcile::desired::{BuildField, build_fields, spec_hash};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Created,
    Removed,
    Changed,
}

/// A value on each side; `None` where the course does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FromTo<T> {
    pub from: Option<T>,
    pub to: Option<T>,
}

/// How a course's VMs are built (the head's, or the base's for a removed course).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Build {
    /// `vm` or `container`.
    pub runtime: &'static str,
    pub image: String,
    pub vcpus: u32,
    pub memory: String,
    pub disk: Option<String>,
}

/// One field that changed, as people write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub from: String,
    pub to: String,
}

/// A window whose days, times and zone stayed but whose warm count changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowChange {
    pub before: Window,
    pub after: Window,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Windows {
    pub added: Vec<Window>,
    pub removed: Vec<Window>,
    pub changed: Vec<WindowChange>,
}

impl Windows {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// What merging does to one course.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CourseDiff {
    pub name: String,
    pub change: Change,
    /// `pool.warm` (outside schedule windows).
    pub warm: FromTo<u32>,
    pub max: FromTo<u32>,
    pub build: Build,
    /// The spec hash changed: warm VMs are replaced, one at a time.
    pub replaces_warm_vms: bool,
    /// The build fields that changed (`image`, `vcpus`, `memory`, `disk`,
    /// `console`, `ssh.port`, `readiness`).
    pub replaced_fields: Vec<String>,
    /// The same, with their values.
    pub build_changes: Vec<FieldChange>,
    pub windows: Windows,
    /// Changes that touch no running VM (title, session, LTI, readiness timeout).
    pub settings: Vec<FieldChange>,
    /// For a created course: the removed course it looks like a rename of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rename_of: Option<String>,
}

impl CourseDiff {
    /// Change in warm VMs outside schedule windows.
    pub fn warm_delta(&self) -> i64 {
        i64::from(self.warm.to.unwrap_or(0)) - i64::from(self.warm.from.unwrap_or(0))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub created: usize,
    pub removed: usize,
    pub changed: usize,
    /// Changed courses whose warm VMs are replaced.
    pub replacing: usize,
    pub unchanged: usize,
    /// Sum of the changes of `pool.warm`.
    pub warm_delta: i64,
}

impl Summary {
    pub fn has_changes(&self) -> bool {
        self.created + self.removed + self.changed > 0
    }

    /// `2 created, 1 removed, 3 changed (1 replaces warm VMs); warm VMs +12`.
    pub fn line(&self) -> String {
        if !self.has_changes() {
            return format!(
                "no changes ({})",
                plural(self.unchanged, "course", "courses")
            );
        }
        let mut line = format!(
            "{} created, {} removed, {} changed",
            self.created, self.removed, self.changed
        );
        if self.replacing > 0 {
            let verb = if self.replacing == 1 {
                "replaces"
            } else {
                "replace"
            };
            line += &format!(" ({} {verb} warm VMs)", self.replacing);
        }
        line += &format!("; warm VMs {:+}", self.warm_delta);
        line
    }
}

/// The courses that differ between `base` and `head` (sorted by name), the
/// rename notes, and the counts. `images` is the configuration's image
/// catalog, when there is one: its entries are part of the spec hash.
pub fn diff(
    base: &[Course],
    head: &[Course],
    images: Option<&BTreeMap<ImageName, ImageConfig>>,
) -> (Vec<CourseDiff>, Vec<String>, Summary) {
    let mut pairs: BTreeMap<&str, (Option<&Course>, Option<&Course>)> = BTreeMap::new();
    for c in base {
        pairs.entry(c.name.as_str()).or_default().0 = Some(c);
    }
    for c in head {
        pairs.entry(c.name.as_str()).or_default().1 = Some(c);
    }
    let catalog = |c: &Course| images.and_then(|i| c.image.as_ref().and_then(|name| i.get(name)));
    let mut courses = Vec::new();
    let mut summary = Summary::default();
    for (name, pair) in &pairs {
        let d = match *pair {
            (None, Some(h)) => created(h),
            (Some(b), None) => removed(b),
            (Some(b), Some(h)) => match changed(b, h, catalog(b), catalog(h)) {
                Some(d) => d,
                None => {
                    summary.unchanged += 1;
                    continue;
                }
            },
            (None, None) => unreachable!("course {name} is on one side at least"),
        };
        courses.push(d);
    }

    // A removed and a created course alike but for their names: a rename.
    let mut notes = Vec::new();
    let mut matched = BTreeSet::new();
    for i in 0..courses.len() {
        if courses[i].change != Change::Created {
            continue;
        }
        let new = pairs[courses[i].name.as_str()]
            .1
            .expect("created is in head");
        let old = pairs.iter().find_map(|(name, (b, h))| match (b, h) {
            (Some(b), None) if !matched.contains(name) && same_but_name(b, new) => {
                Some((*name, *b))
            }
            _ => None,
        });
        if let Some((old_name, _)) = old {
            matched.insert(old_name);
            notes.push(format!(
                "looks like a rename of {old_name} to {}: students on {old_name} keep their VMs until their sessions end; {} starts empty",
                new.name, new.name
            ));
            courses[i].rename_of = Some(old_name.to_string());
        }
    }

    for d in &courses {
        match d.change {
            Change::Created => summary.created += 1,
            Change::Removed => summary.removed += 1,
            Change::Changed => {
                summary.changed += 1;
                summary.replacing += usize::from(d.replaces_warm_vms);
            }
        }
        summary.warm_delta += d.warm_delta();
    }
    (courses, notes, summary)
}

fn same_but_name(old: &Course, new: &Course) -> bool {
    let mut renamed = new.clone();
    renamed.name = old.name.clone();
    renamed.title = old.title.clone();
    renamed == *old
}

fn build(c: &Course) -> Build {
    let size = c.size();
    Build {
        runtime: c.runtime.as_str(),
        image: image_of(c),
        vcpus: size.vcpus,
        memory: size.memory.to_string(),
        disk: c.vm.as_ref().and_then(|vm| vm.disk).map(|d| d.to_string()),
    }
}

/// The image a course's labs start from: a catalog name or a Docker image.
fn image_of(c: &Course) -> String {
    match (&c.image, &c.container) {
        (Some(image), _) => image.to_string(),
        (None, Some(container)) => container.image.clone(),
        (None, None) => String::new(),
    }
}

fn blank(c: &Course, change: Change, warm: FromTo<u32>, max: FromTo<u32>) -> CourseDiff {
    CourseDiff {
        name: c.name.to_string(),
        change,
        warm,
        max,
        build: build(c),
        replaces_warm_vms: false,
        replaced_fields: Vec::new(),
        build_changes: Vec::new(),
        windows: Windows::default(),
        settings: Vec::new(),
        rename_of: None,
    }
}

fn created(c: &Course) -> CourseDiff {
    let mut d = blank(
        c,
        Change::Created,
        FromTo {
            from: None,
            to: Some(c.pool.warm),
        },
        FromTo {
            from: None,
            to: Some(c.pool.max),
        },
    );
    d.windows.added = c.pool.schedule.clone();
    d
}

fn removed(c: &Course) -> CourseDiff {
    let mut d = blank(
        c,
        Change::Removed,
        FromTo {
            from: Some(c.pool.warm),
            to: None,
        },
        FromTo {
            from: Some(c.pool.max),
            to: None,
        },
    );
    d.windows.removed = c.pool.schedule.clone();
    d
}

fn change(field: &str, from: impl ToString, to: impl ToString) -> FieldChange {
    FieldChange {
        field: field.to_string(),
        from: from.to_string(),
        to: to.to_string(),
    }
}

fn or_none<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

/// The build fields that differ, head's order first, then those only base
/// has (a runtime change swaps `vcpus` for `cpus`); "none" where a side
/// has no such field.
fn build_changes(base: &[BuildField], head: &[BuildField]) -> Vec<FieldChange> {
    let find = |fields: &'_ [BuildField], name| fields.iter().find(|f| f.name == name).cloned();
    let names = head
        .iter()
        .chain(
            base.iter()
                .filter(|b| !head.iter().any(|h| h.name == b.name)),
        )
        .map(|f| f.name);
    let mut changes = Vec::new();
    for name in names {
        let (from, to) = (find(base, name), find(head, name));
        let same = matches!((&from, &to), (Some(f), Some(t)) if f.same(t));
        if !same {
            let shown = |f: Option<BuildField>| f.map_or_else(|| "none".to_string(), |f| f.shown);
            changes.push(change(name, shown(from), shown(to)));
        }
    }
    changes
}

fn changed(
    b: &Course,
    h: &Course,
    b_image: Option<&ImageConfig>,
    h_image: Option<&ImageConfig>,
) -> Option<CourseDiff> {
    if b == h && b_image == h_image {
        return None;
    }
    let mut d = blank(
        h,
        Change::Changed,
        FromTo {
            from: Some(b.pool.warm),
            to: Some(h.pool.warm),
        },
        FromTo {
            from: Some(b.pool.max),
            to: Some(h.pool.max),
        },
    );

    // Windows, matched by days, times and zone.
    let key = |w: &Window| {
        let mut days = w.days.clone();
        days.sort();
        (days, w.from, w.to, w.tz.to_string())
    };
    let before: BTreeMap<_, &Window> = b.pool.schedule.iter().map(|w| (key(w), w)).collect();
    let after: BTreeMap<_, &Window> = h.pool.schedule.iter().map(|w| (key(w), w)).collect();
    for (k, w) in &before {
        match after.get(k) {
            None => d.windows.removed.push((*w).clone()),
            Some(a) if a.warm != w.warm => d.windows.changed.push(WindowChange {
                before: (*w).clone(),
                after: (*a).clone(),
            }),
            Some(_) => {}
        }
    }
    for (k, w) in &after {
        if !before.contains_key(k) {
            d.windows.added.push((*w).clone());
        }
    }

    // The build: what the reconciler compares to replace VMs, field by
    // field from the one list the spec hash is written from.
    if spec_hash(b, b_image) != spec_hash(h, h_image) {
        d.replaces_warm_vms = true;
        let mut fields = build_changes(&build_fields(b, b_image), &build_fields(h, h_image));
        if fields.is_empty() {
            fields.push(change("build", "", ""));
        }
        d.replaced_fields = fields.iter().map(|f| f.field.clone()).collect();
        d.build_changes = fields;
    }

    // Settings: nothing running changes.
    let s = &mut d.settings;
    if b.title != h.title {
        s.push(change(
            "title",
            format!("{:?}", b.title),
            format!("{:?}", h.title),
        ));
    }
    if b.session.expiry != h.session.expiry {
        s.push(change("session.expiry", b.session.expiry, h.session.expiry));
    }
    if b.session.idle != h.session.idle {
        s.push(change("session.idle", b.session.idle, h.session.idle));
    }
    let user = |c: &Course| c.session.ssh.as_ref().map(|s| s.user.clone());
    if user(b) != user(h) {
        s.push(change("ssh.user", or_none(user(b)), or_none(user(h))));
    }
    if b.session.per_user != h.session.per_user {
        s.push(change(
            "session.per_user",
            b.session.per_user,
            h.session.per_user,
        ));
    }
    if b.lti.platforms != h.lti.platforms {
        // Who may launch the course: a reviewer should see it change.
        let list = |c: &Course| {
            let names: Vec<String> = c
                .lti
                .platforms
                .iter()
                .map(|p| match &p.deployment {
                    Some(d) => format!("{} (deployment {d})", p.issuer),
                    None => p.issuer.clone(),
                })
                .collect();
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        s.push(change("lti.platforms", list(b), list(h)));
    }
    if b.lti.contexts != h.lti.contexts {
        let list = |c: &Course| match c.lti.contexts.join(", ") {
            l if l.is_empty() => "none".to_string(),
            l => l,
        };
        s.push(change("lti.contexts", list(b), list(h)));
    }
    if b.readiness.timeout != h.readiness.timeout {
        s.push(change(
            "readiness.timeout",
            b.readiness.timeout,
            h.readiness.timeout,
        ));
    }

    let nothing = d.warm.from == d.warm.to
        && d.max.from == d.max.to
        && d.windows.is_empty()
        && !d.replaces_warm_vms
        && d.settings.is_empty();
    // Written differently, same meaning (a default spelled out): no change.
    (!nothing).then_some(d)
}

/// `1 course`, `3 courses`.
pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn course(name: &str, extra: serde_json::Value) -> Course {
        let mut v = serde_json::json!({
            "name": name, "title": "T", "image": "busybox",
            "vm": { "vcpus": 1, "memory": "256MiB" },
            "pool": { "warm": 2, "max": 6 },
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn spelled_out_defaults_are_no_change() {
        let a = course("a", serde_json::json!({}));
        let b = course(
            "a",
            serde_json::json!({"readiness": {"console_marker": "login:"}}),
        );
        assert_ne!(a, b);
        let (courses, _, summary) = diff(&[a], &[b], None);
        assert!(courses.is_empty());
        assert_eq!(summary.unchanged, 1);
    }

    #[test]
    fn who_may_launch_and_the_per_user_limit_show_as_settings() {
        let a = course("a", serde_json::json!({}));
        let b = course(
            "a",
            serde_json::json!({
                "lti": { "platforms": [{ "issuer": "https://lms.example", "deployment": "d1" }] },
                "session": { "per_user": 2 },
            }),
        );
        let (courses, _, _) = diff(&[a], &[b], None);
        let settings: Vec<(String, String, String)> = courses[0]
            .settings
            .iter()
            .map(|c| (c.field.clone(), c.from.clone(), c.to.clone()))
            .collect();
        assert_eq!(
            settings,
            [
                ("session.per_user".into(), "1".into(), "2".into()),
                (
                    "lti.platforms".into(),
                    "none".into(),
                    "https://lms.example (deployment d1)".into()
                ),
            ]
        );
    }

    /// Issue 17 §5: the diff's build fields are the spec hash's, from one
    /// list: each field that moves the hash is named, in the hash's order.
    #[test]
    fn every_build_field_that_moves_the_hash_is_named() {
        let a = course("a", serde_json::json!({}));
        let b = course(
            "a",
            serde_json::json!({
                "vm": { "vcpus": 2, "memory": "512MiB", "disk": "10GiB" },
                "session": { "console": "ssh", "ssh": { "user": "student", "port": 2222 } },
                "readiness": { "port": 2222 },
            }),
        );
        let (courses, _, _) = diff(&[a], &[b], None);
        assert_eq!(
            courses[0].replaced_fields,
            [
                "vcpus",
                "memory",
                "disk",
                "console",
                "ssh.port",
                "readiness"
            ]
        );
        let shown: Vec<String> = courses[0]
            .build_changes
            .iter()
            .map(|f| format!("{} {} → {}", f.field, f.from, f.to))
            .collect();
        assert_eq!(
            shown,
            [
                "vcpus 1 → 2",
                "memory 256MiB → 512MiB",
                "disk default → 10GiB",
                "console serial → ssh",
                "ssh.port none → 2222",
                "readiness console marker \"login:\" → port 2222",
            ]
        );

        let lab = |extra: serde_json::Value| {
            let mut v = serde_json::json!({
                "name": "c", "title": "C", "runtime": "container",
                "container": { "image": "busybox:1", "cpus": 0.5, "memory": "64MiB" },
                "pool": { "warm": 1, "max": 2 },
            });
            for (k, x) in extra.as_object().unwrap() {
                v["container"][k] = x.clone();
            }
            serde_json::from_value::<Course>(v).unwrap()
        };
        let (courses, _, _) = diff(
            &[lab(serde_json::json!({}))],
            &[lab(serde_json::json!({ "cpus": 1, "user": "student" }))],
            None,
        );
        assert_eq!(courses[0].replaced_fields, ["cpus", "user"]);
        assert_eq!(courses[0].build_changes[1].from, "none");

        // From a VM to a container: the runtime, and each side's own fields.
        let (courses, _, _) = diff(
            &[course("c", serde_json::json!({}))],
            &[lab(serde_json::json!({}))],
            None,
        );
        assert_eq!(courses[0].replaced_fields[..2], ["runtime", "image"]);
        assert!(courses[0].replaced_fields.contains(&"vcpus".to_string()));
    }

    #[test]
    fn window_warm_change_is_one_changed_window() {
        let w = |warm| {
            serde_json::json!({"pool": {"warm": 2, "max": 40, "schedule": [
                {"days": ["wed", "mon"], "from": "09:45", "to": "11:30", "tz": "UTC", "warm": warm}
            ]}})
        };
        let (courses, _, _) = diff(&[course("a", w(4))], &[course("a", w(30))], None);
        assert_eq!(courses[0].windows.changed.len(), 1);
        assert!(courses[0].windows.added.is_empty());
        assert_eq!(
            render::details(&courses[0]),
            ["window changed: wed,mon 09:45–11:30 UTC: 4 → 30 warm"]
        );
    }
}
