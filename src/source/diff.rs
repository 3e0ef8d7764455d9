//! `labpool diff BASE HEAD`: what merging a course change will do to the
//! pools, course by course — for a pull request's CI comment.
//!
//! Each side is a folder of course files or a Git revision. [`diff`] is pure
//! (two sets of valid courses in, a [`CourseDiff`] per differing course
//! out); [`command`] loads the sides and prints the result as text,
//! Markdown or JSON. What replaces running VMs is decided by
//! [`spec_hash`], exactly as the reconciler decides it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::git::{Commit, GitError, load_git};
use super::{Rejected, Revision, load_dir};
use crate::config::{Config, ImageConfig};
use crate::course::Course;
use crate::course::spec::{Probe, Window};
use crate::course::values::ImageName;
use crate::diagnostic::Diagnostic;
use crate::reconcile::desired::spec_hash;

/// Exit statuses of `labpool diff`.
pub mod exit {
    /// Nothing would change.
    pub const NO_CHANGES: u8 = 0;
    /// The revisions could not be read, or HEAD is invalid.
    pub const ERROR: u8 = 1;
    /// Merging would change pools or settings.
    pub const CHANGES: u8 = 2;
}

/// Output formats of `labpool diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    /// Plain text, one line per created or removed course, details indented.
    Human,
    /// A pull-request comment: a marker, a heading, a table and details.
    Markdown,
    /// One JSON document.
    Json,
}

/// The marker that starts the Markdown output, so a workflow can find and
/// update its previous comment.
pub const MARKER: &str = "<!-- labpool-diff -->";

// ---------------------------------------------------------------------------
// The diff itself (pure).

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
    fn is_empty(&self) -> bool {
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

fn or_default<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "default".to_string(), |v| v.to_string())
}

fn or_none<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

fn probe(p: &Probe) -> String {
    match p {
        Probe::ConsoleMarker(m) => format!("console marker \"{m}\""),
        Probe::Port(port) => format!("port {port}"),
        Probe::Command(cmd) => format!("command {cmd:?}"),
    }
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

    // The build: what the reconciler compares to replace VMs.
    if spec_hash(b, b_image) != spec_hash(h, h_image) {
        d.replaces_warm_vms = true;
        let mut fields = Vec::new();
        if b.runtime != h.runtime {
            fields.push(change("runtime", b.runtime.as_str(), h.runtime.as_str()));
        }
        if image_of(b) != image_of(h) {
            fields.push(change("image", image_of(b), image_of(h)));
        } else if b_image != h_image {
            fields.push(change("image", "catalog entry", "new catalog entry"));
        }
        let (bs, hs) = (b.size(), h.size());
        if let (Some(bc), Some(hc)) = (&b.container, &h.container) {
            if bc.cpus != hc.cpus {
                fields.push(change("cpus", bc.cpus, hc.cpus));
            }
        } else if bs.vcpus != hs.vcpus {
            fields.push(change("vcpus", bs.vcpus, hs.vcpus));
        }
        if bs.memory != hs.memory {
            fields.push(change("memory", bs.memory, hs.memory));
        }
        let disk = |c: &Course| c.vm.as_ref().and_then(|vm| vm.disk);
        if disk(b) != disk(h) {
            fields.push(change("disk", or_default(disk(b)), or_default(disk(h))));
        }
        if let (Some(bc), Some(hc)) = (&b.container, &h.container) {
            let list = |v: &Option<Vec<String>>| or_none(v.as_ref().map(|v| format!("{v:?}")));
            if bc.command != hc.command {
                fields.push(change("command", list(&bc.command), list(&hc.command)));
            }
            if bc.user != hc.user {
                fields.push(change(
                    "user",
                    or_none(bc.user.clone()),
                    or_none(hc.user.clone()),
                ));
            }
            if bc.shell != hc.shell {
                fields.push(change("shell", list(&bc.shell), list(&hc.shell)));
            }
        }
        if b.session.console != h.session.console {
            let name = |c| {
                serde_json::to_value(c)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
            };
            fields.push(change(
                "console",
                or_none(name(b.session.console)),
                or_none(name(h.session.console)),
            ));
        }
        let port = |c: &Course| c.session.ssh.as_ref().map(|s| s.port);
        if port(b) != port(h) {
            fields.push(change("ssh.port", or_none(port(b)), or_none(port(h))));
        }
        if b.probe() != h.probe() {
            fields.push(change("readiness", probe(&b.probe()), probe(&h.probe())));
        }
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

// ---------------------------------------------------------------------------
// Loading the two sides.

/// One side of the comparison, as given and as read.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// BASE or HEAD as given on the command line.
    #[serde(rename = "ref")]
    pub reference: String,
    /// `folder` or `git`.
    pub source: &'static str,
    /// The revision id (commit id, or `folder:` + hash), when it was read.
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<Commit>,
    /// Its course files are valid.
    pub valid: bool,
    /// How many problems its course files have.
    pub problems: usize,
}

impl Side {
    fn label(&self) -> String {
        match (&self.commit, &self.id) {
            (Some(c), _) => format!("{} ({} \"{}\")", self.reference, short(&c.id), c.subject),
            (None, Some(id)) if self.source == "folder" => format!("{} ({id})", self.reference),
            _ => self.reference.clone(),
        }
    }

    fn markdown_label(&self) -> String {
        match (&self.commit, &self.id) {
            (Some(c), _) => format!(
                "`{}` ({} {})",
                self.reference,
                short(&c.id),
                escape_md(&c.subject)
            ),
            (None, Some(id)) => format!("`{}` ({id})", self.reference),
            _ => format!("`{}`", self.reference),
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

/// A side that was read: its courses, or why they are not valid.
struct Loaded {
    side: Side,
    courses: Result<Vec<Course>, Rejected>,
    /// The Git revision has no course folder at all.
    no_folder: bool,
}

fn git_commit(repo: &Path, rev: &str) -> Option<Commit> {
    let repository = git2::Repository::open(repo).ok()?;
    let commit = repository
        .revparse_single(rev)
        .ok()?
        .peel_to_commit()
        .ok()?;
    Some(Commit {
        id: commit.id().to_string(),
        subject: commit
            .message()
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        author: commit.author().name().unwrap_or_default().to_string(),
        time: commit.time().seconds(),
    })
}

fn load_side(
    reference: &str,
    repo: &Path,
    folder: &Path,
    config: Option<&Config>,
    is_base: bool,
) -> Result<Loaded, GitError> {
    let dir = Path::new(reference);
    let (source, result) = if dir.is_dir() {
        ("folder", load_dir(dir, config))
    } else {
        match load_git(repo, reference, Some(folder), config) {
            Ok(result) => ("git", result),
            // A base without the course folder (the first courses arrive in
            // this change) holds no courses.
            Err(GitError::NoFolder { commit, .. }) if is_base => {
                let side = Side {
                    reference: reference.to_string(),
                    source: "git",
                    id: Some(commit),
                    commit: git_commit(repo, reference),
                    valid: true,
                    problems: 0,
                };
                return Ok(Loaded {
                    side,
                    courses: Ok(Vec::new()),
                    no_folder: true,
                });
            }
            Err(e) => return Err(e),
        }
    };
    let (id, commit, courses) = match result {
        Ok(Revision {
            id,
            courses,
            commit,
        }) => (Some(id), commit, Ok(courses)),
        Err(rejected) => {
            let commit = (source == "git")
                .then(|| git_commit(repo, reference))
                .flatten();
            (commit.as_ref().map(|c| c.id.clone()), commit, Err(rejected))
        }
    };
    let side = Side {
        reference: reference.to_string(),
        source,
        id,
        commit,
        valid: courses.is_ok(),
        problems: courses.as_ref().err().map_or(0, |r| r.diagnostics.len()),
    };
    Ok(Loaded {
        side,
        courses,
        no_folder: false,
    })
}

// ---------------------------------------------------------------------------
// The command.

/// The whole result, as printed by `--format json`.
#[derive(Debug, Serialize)]
pub struct DiffReport {
    pub base: Side,
    pub head: Side,
    pub courses: Vec<CourseDiff>,
    pub notes: Vec<String>,
    pub summary: Summary,
    /// HEAD removes so much of BASE that labpool would hold it until an
    /// admin confirms it (`source.hold`); `null` otherwise.
    pub hold: Option<HoldWarning>,
}

/// Why labpool would hold HEAD.
#[derive(Debug, Serialize)]
pub struct HoldWarning {
    #[serde(flatten)]
    pub removal: super::hold::Removal,
    pub reason: String,
    /// The line printed.
    pub warning: String,
}

/// HEAD is invalid, as printed by `--format json`.
#[derive(Debug, Serialize)]
struct RejectedReport<'a> {
    base: &'a Side,
    head: &'a Side,
    message: &'a str,
    diagnostics: &'a [Diagnostic],
}

/// Arguments of `labpool diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The revision merged into: a folder of course files, or a Git revision
    /// in --repo (branch, tag, commit, `HEAD~1`, `origin/main`).
    pub base: String,
    /// The revision to merge: a folder or a Git revision, as BASE.
    pub head: String,
    /// The Git repository that revisions are read from.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// The folder of course files inside the repository (for Git revisions).
    #[arg(long, default_value = "courses")]
    pub folder: PathBuf,
    /// labpool's configuration file: adds the image and host checks, and
    /// image catalog entries count in the build comparison.
    #[arg(long, env = "LABPOOL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DiffFormat::Human)]
    pub format: DiffFormat,
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        match s.downcast_ref::<git2::Error>() {
            Some(g) => text += &format!(": {}", g.message()),
            None => text += &format!(": {s}"),
        }
        source = s.source();
    }
    text
}

/// Runs `labpool diff`; returns the exit status.
pub fn command(args: &DiffArgs) -> u8 {
    let mut out = std::io::stdout().lock();
    let config = match args.config.as_deref().map(Config::load).transpose() {
        Ok(config) => config,
        Err(e) => {
            for d in &e.diagnostics {
                eprintln!("{d}");
            }
            eprintln!("labpool: the configuration file has problems");
            return exit::ERROR;
        }
    };
    let load = |reference: &str, is_base| {
        load_side(
            reference,
            &args.repo,
            &args.folder,
            config.as_ref(),
            is_base,
        )
    };
    let (base, head) = match (load(&args.base, true), load(&args.head, false)) {
        (Ok(base), Ok(head)) => (base, head),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("labpool: {}", error_chain(&e));
            return exit::ERROR;
        }
    };
    let written = match &head.courses {
        Err(rejected) => write_rejected(&mut out, args.format, &base.side, &head.side, rejected)
            .map(|()| exit::ERROR),
        Ok(head_courses) => {
            let mut notes = Vec::new();
            if base.no_folder {
                notes.push(format!(
                    "base {} has no folder {}: compared with no courses",
                    base.side.reference,
                    args.folder.display()
                ));
            }
            let base_courses: &[Course] = match &base.courses {
                Ok(courses) => courses,
                Err(rejected) => {
                    notes.push(format!(
                        "base {} is invalid ({}): labpool never applied it, so it is compared as no courses; the pools running are those of the last valid revision",
                        base.side.reference,
                        plural(rejected.diagnostics.len(), "problem", "problems")
                    ));
                    &[]
                }
            };
            let images = config.as_ref().map(|c| &c.images);
            let (courses, renames, summary) = diff(base_courses, head_courses, images);
            notes.extend(renames);
            let policy = config
                .as_ref()
                .map(|c| c.source.hold.clone())
                .unwrap_or_default();
            let removal = super::hold::Removal::between(base_courses, head_courses);
            let hold = removal.crosses(&policy).map(|reason| HoldWarning {
                warning: format!(
                    "warning: this revision {}: {reason}; labpool will hold it until an admin confirms it (labpool revision confirm {})",
                    removal.describe(),
                    head.side.id.as_deref().unwrap_or("<id>")
                ),
                removal,
                reason,
            });
            let report = DiffReport {
                base: base.side,
                head: head.side,
                courses,
                notes,
                summary,
                hold,
            };
            let status = if report.summary.has_changes() {
                exit::CHANGES
            } else {
                exit::NO_CHANGES
            };
            match args.format {
                DiffFormat::Human => write_human(&mut out, &report),
                DiffFormat::Markdown => write_markdown(&mut out, &report),
                DiffFormat::Json => write_json(&mut out, &report),
            }
            .map(|()| status)
        }
    };
    match written.and_then(|status| out.flush().map(|()| status)) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("labpool: cannot write the diff: {e}");
            exit::ERROR
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn write_json(out: &mut dyn Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

fn write_rejected(
    out: &mut dyn Write,
    format: DiffFormat,
    base: &Side,
    head: &Side,
    rejected: &Rejected,
) -> std::io::Result<()> {
    let message = format!(
        "{} is invalid ({}): merging it would be rejected, and labpool would keep the pools as they are",
        head.reference,
        plural(rejected.diagnostics.len(), "problem", "problems")
    );
    match format {
        DiffFormat::Human => {
            writeln!(out, "labpool diff: {} → {}", base.label(), head.label())?;
            writeln!(out)?;
            for d in &rejected.diagnostics {
                writeln!(out, "{d}")?;
            }
            writeln!(out)?;
            writeln!(out, "{message}")
        }
        DiffFormat::Markdown => {
            writeln!(out, "{MARKER}")?;
            writeln!(out, "### labpool diff: the courses are invalid")?;
            writeln!(out)?;
            writeln!(out, "{} → {}", base.markdown_label(), head.markdown_label())?;
            writeln!(out)?;
            writeln!(
                out,
                "**Merging this would be rejected**: {} in the course files, and labpool keeps the pools as they are until the courses are valid.",
                plural(rejected.diagnostics.len(), "problem", "problems")
            )?;
            writeln!(out)?;
            for d in &rejected.diagnostics {
                writeln!(
                    out,
                    "- `{}:{}:{}`: **{}**: {}",
                    d.file.display(),
                    d.position.line,
                    d.position.column,
                    d.code,
                    escape_md(&d.message)
                )?;
            }
            Ok(())
        }
        DiffFormat::Json => write_json(
            out,
            &RejectedReport {
                base,
                head,
                message: &message,
                diagnostics: &rejected.diagnostics,
            },
        ),
    }
}

fn window(w: &Window) -> String {
    format!("{}: {} warm", window_place(w), w.warm)
}

fn window_place(w: &Window) -> String {
    let days: Vec<String> = w.days.iter().map(ToString::to_string).collect();
    format!("{} {}–{} {}", days.join(","), w.from, w.to, w.tz)
}

fn vm_count(n: i64) -> String {
    let word = if n.abs() == 1 { "warm VM" } else { "warm VMs" };
    format!("{n:+} {word}")
}

fn build_line(b: &Build) -> String {
    let disk = b
        .disk
        .as_ref()
        .map(|d| format!(" / {d} disk"))
        .unwrap_or_default();
    format!(
        "image {}, {} / {}{disk}",
        b.image,
        plural(b.vcpus as usize, "vCPU", "vCPU"),
        b.memory
    )
}

/// The details of a course, one line each, in the order they are printed.
fn details(d: &CourseDiff) -> Vec<String> {
    let mut lines = Vec::new();
    match d.change {
        Change::Created => {
            for w in &d.windows.added {
                lines.push(format!("window: {}", window(w)));
            }
            if let Some(old) = &d.rename_of {
                lines.push(format!("looks like a rename of {old}"));
            }
            return lines;
        }
        Change::Removed => return lines,
        Change::Changed => {}
    }
    if let (Some(from), Some(to)) = (d.warm.from, d.warm.to)
        && from != to
    {
        lines.push(format!("warm {from} → {to} ({})", vm_count(d.warm_delta())));
    }
    if let (Some(from), Some(to)) = (d.max.from, d.max.to)
        && from != to
    {
        lines.push(format!("max {from} → {to}"));
    }
    for w in &d.windows.added {
        lines.push(format!("window added: {}", window(w)));
    }
    for w in &d.windows.removed {
        lines.push(format!("window removed: {}", window(w)));
    }
    for c in &d.windows.changed {
        lines.push(format!(
            "window changed: {}: {} → {} warm",
            window_place(&c.after),
            c.before.warm,
            c.after.warm
        ));
    }
    if d.replaces_warm_vms {
        let fields: Vec<String> = d
            .build_changes
            .iter()
            .map(|f| format!("{} {} → {}", f.field, f.from, f.to))
            .collect();
        let n = d.warm.from.unwrap_or(0);
        let vms = if n == 1 { "warm VM" } else { "warm VMs" };
        lines.push(format!(
            "build: {}; replaces {n} {vms} (rolling); assigned VMs keep the old build until their sessions end",
            fields.join(", ")
        ));
    }
    if !d.settings.is_empty() {
        let fields: Vec<String> = d
            .settings
            .iter()
            .map(|f| format!("{} {} → {}", f.field, f.from, f.to))
            .collect();
        lines.push(format!(
            "settings: {} (no VM is replaced)",
            fields.join(", ")
        ));
    }
    lines
}

/// The one-line form of a created or removed course.
fn headline(d: &CourseDiff) -> String {
    match d.change {
        Change::Created => format!(
            "new pool, {} warm (max {}), {}",
            d.warm.to.unwrap_or(0),
            d.max.to.unwrap_or(0),
            build_line(&d.build)
        ),
        Change::Removed => {
            "removed: its warm VMs are destroyed at once, assigned VMs drain as their sessions end"
                .to_string()
        }
        Change::Changed => "changed".to_string(),
    }
}

fn write_human(out: &mut dyn Write, r: &DiffReport) -> std::io::Result<()> {
    writeln!(out, "labpool diff: {} → {}", r.base.label(), r.head.label())?;
    writeln!(out)?;
    for d in &r.courses {
        match d.change {
            Change::Created => writeln!(out, "+ {}: {}", d.name, headline(d))?,
            Change::Removed => writeln!(out, "- {}: {}", d.name, headline(d))?,
            Change::Changed => writeln!(out, "~ {}:", d.name)?,
        }
        for line in details(d) {
            writeln!(out, "    {line}")?;
        }
    }
    if !r.courses.is_empty() {
        writeln!(out)?;
    }
    for note in &r.notes {
        writeln!(out, "note: {note}")?;
    }
    if !r.notes.is_empty() {
        writeln!(out)?;
    }
    if let Some(hold) = &r.hold {
        writeln!(out, "{}", hold.warning)?;
        writeln!(out)?;
    }
    writeln!(out, "{}", r.summary.line())
}

/// Escapes text for a Markdown table cell or list item.
fn escape_md(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '|' | '<' | '>' | '*' | '_' | '`' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The short form of a course's change, for the table.
fn cell(d: &CourseDiff) -> String {
    match d.change {
        Change::Created => format!("**created**: {}", escape_md(&headline(d))),
        Change::Removed => format!(
            "**removed**: {}",
            escape_md(&headline(d)["removed: ".len()..])
        ),
        Change::Changed => {
            let mut parts = Vec::new();
            if d.warm.from != d.warm.to {
                parts.push(format!(
                    "warm {} → {}",
                    d.warm.from.unwrap_or(0),
                    d.warm.to.unwrap_or(0)
                ));
            }
            if d.max.from != d.max.to {
                parts.push(format!(
                    "max {} → {}",
                    d.max.from.unwrap_or(0),
                    d.max.to.unwrap_or(0)
                ));
            }
            if !d.windows.is_empty() {
                parts.push("schedule".to_string());
            }
            if d.replaces_warm_vms {
                parts.push(format!(
                    "**replaces warm VMs** ({})",
                    d.replaced_fields.join(", ")
                ));
            }
            if !d.settings.is_empty() {
                let fields: Vec<&str> = d.settings.iter().map(|f| f.field.as_str()).collect();
                parts.push(format!("settings ({})", fields.join(", ")));
            }
            format!("**changed**: {}", escape_md_keep_bold(&parts.join("; ")))
        }
    }
}

/// Escapes a cell built from our own words (bold kept) and course values.
fn escape_md_keep_bold(text: &str) -> String {
    text.replace('|', "\\|")
}

fn write_markdown(out: &mut dyn Write, r: &DiffReport) -> std::io::Result<()> {
    writeln!(out, "{MARKER}")?;
    writeln!(out, "### labpool diff: what merging this changes")?;
    writeln!(out)?;
    writeln!(
        out,
        "{} → {}",
        r.base.markdown_label(),
        r.head.markdown_label()
    )?;
    writeln!(out)?;
    if r.courses.is_empty() {
        writeln!(
            out,
            "**No changes**: no pool or course setting changes ({}).",
            plural(r.summary.unchanged, "course", "courses")
        )?;
    } else {
        writeln!(out, "| course | change |")?;
        writeln!(out, "| --- | --- |")?;
        for d in &r.courses {
            writeln!(out, "| `{}` | {} |", d.name, cell(d))?;
        }
        writeln!(out)?;
        writeln!(out, "**{}**", r.summary.line())?;
        for d in &r.courses {
            let lines = details(d);
            if lines.is_empty() {
                continue;
            }
            writeln!(out)?;
            writeln!(out, "#### `{}`", d.name)?;
            writeln!(out)?;
            for line in lines {
                writeln!(out, "- {}", escape_md(&line))?;
            }
        }
    }
    if let Some(hold) = &r.hold {
        writeln!(out)?;
        writeln!(
            out,
            "> **Warning**: {}",
            escape_md(hold.warning.trim_start_matches("warning: "))
        )?;
    }
    if !r.notes.is_empty() {
        writeln!(out)?;
        for (i, note) in r.notes.iter().enumerate() {
            if i > 0 {
                writeln!(out, ">")?;
            }
            writeln!(out, "> **Note**: {}", escape_md(note))?;
        }
    }
    Ok(())
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
            details(&courses[0]),
            ["window changed: wed,mon 09:45–11:30 UTC: 4 → 30 warm"]
        );
    }
}
