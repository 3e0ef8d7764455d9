//! The course file format, version 1: one YAML file per course.
//!
//! These types are the single source of truth: serde reads course files into
//! them, schemars turns them (with their doc comments) into
//! `schemas/course.schema.json`, and README's format reference follows them.
//! Every struct refuses unknown fields, so a typo is an error, not a silent
//! default.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{ByteSize, CourseName, Day, Duration, ImageName, TimeOfDay, TimeZone};

/// A lab course: the VM every student gets, how many are kept warm, and how
/// long a student keeps one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "labpool course", example = example_course())]
pub struct Course {
    /// The course's unique name, equal to the file name without `.yaml`. It
    /// appears in VM names and URLs, so it is a lowercase DNS label. Renaming a
    /// course removes the old pool and creates a new one.
    pub name: CourseName,
    /// The title students see on the terminal page and instructors see in the
    /// LMS when they pick a lab.
    #[schemars(length(min = 1), example = &"RHEL System Administration I")]
    pub title: String,
    /// What each student gets: `vm` (a libvirt VM, the default) or
    /// `container` (a container on a Docker host). A VM course needs `image`
    /// and `vm`; a container course needs `container` and has neither.
    #[serde(default, skip_serializing_if = "Runtime::is_vm")]
    pub runtime: Runtime,
    /// The base image every VM of this course boots from, by its name in the
    /// hosts' image catalog. Each VM gets a thin copy-on-write overlay of it.
    /// VM courses only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageName>,
    /// The size of each VM. VM courses only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmSpec>,
    /// The container each student gets. Container courses only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
    /// How many VMs are kept booted and waiting, and the most that may exist.
    pub pool: PoolSpec,
    /// How long a student keeps a VM and how they reach it. Defaults: expiry
    /// 4h, idle 30m, serial console.
    #[serde(default)]
    pub session: SessionSpec,
    /// How LMS courses map to this lab without Deep Linking.
    #[serde(default, skip_serializing_if = "LtiSpec::is_empty")]
    pub lti: LtiSpec,
    /// What proves a freshly booted VM is ready for a student. Default: the
    /// line `login:` on the serial console, or the SSH port answering for
    /// `console: ssh`.
    #[serde(default, skip_serializing_if = "Readiness::is_default")]
    pub readiness: Readiness,
}

/// The size of one VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Virtual CPUs.
    #[schemars(range(min = 1, max = 512), example = 2)]
    pub vcpus: u32,
    /// Memory, with a unit: `512MiB`, `4GiB`, `16GiB`.
    pub memory: ByteSize,
    /// Disk size of the VM's overlay. Default: the size of the base image.
    /// Larger than the base image grows the disk; smaller is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<ByteSize>,
}

/// Where a course's labs run. On the variants, no doc comments (see
/// [`Console`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    #[default]
    Vm,
    Container,
}

impl Runtime {
    pub fn is_vm(&self) -> bool {
        *self == Runtime::Vm
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Runtime::Vm => "vm",
            Runtime::Container => "container",
        }
    }
}

/// One student's container: its image, its limits (enforced by the engine)
/// and how the terminal enters it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// The image, as the Docker hosts name it: `labpool/busybox:1`,
    /// `python:3.12-slim`. Hosts must already hold it: labpool never pulls.
    #[schemars(
        length(min = 1),
        regex(pattern = r"^[a-z0-9][a-z0-9._/:@-]*$"),
        example = &"labpool/busybox:1"
    )]
    pub image: String,
    /// CPU limit in CPUs; fractions are allowed (`0.5`). Capacity accounting
    /// counts a started CPU as a whole vCPU.
    #[schemars(range(min = 0.01, max = 512.0), example = 0.5)]
    pub cpus: f64,
    /// Memory limit, with a unit: `128MiB`, `1GiB`. The container gets no
    /// swap beyond it.
    pub memory: ByteSize,
    /// The container's main process. Default: the image's own command, kept
    /// running on a terminal of its own (as `docker run -dit` does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = [&"sleep", &"infinity"])]
    pub command: Option<Vec<String>>,
    /// The account the student's terminal runs as: a user name or uid known
    /// to the image. Default: the image's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"student")]
    pub user: Option<String>,
    /// The program the terminal starts. Default `["/bin/sh"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = [&"/bin/bash", &"-l"])]
    pub shell: Option<Vec<String>>,
}

impl ContainerSpec {
    /// The terminal's program, default resolved.
    pub fn shell(&self) -> Vec<String> {
        self.shell.clone().unwrap_or_else(|| vec!["/bin/sh".into()])
    }

    /// The CPU limit in billionths of a CPU, as the engine takes it.
    pub fn nano_cpus(&self) -> i64 {
        (self.cpus * 1e9).round() as i64
    }
}

/// The pool of VMs of one course.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// VMs kept booted, ready and unassigned outside schedule windows. A launch
    /// takes one and the pool boots a replacement.
    #[schemars(example = 2)]
    pub warm: u32,
    /// The most VMs this course may have at once, warm and assigned together.
    /// When all are assigned, further students are told the lab is full.
    #[schemars(range(min = 1), example = 40)]
    pub max: u32,
    /// Windows (class times) during which a different number of VMs is kept
    /// warm. Pre-warming starts early enough to finish before a window opens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<Window>,
}

/// A weekly window, such as a class meeting, with its own warm target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Days of the week the window applies to.
    #[schemars(length(min = 1), extend("uniqueItems" = true), example = [Day::Mon, Day::Wed])]
    pub days: Vec<Day>,
    /// Start, `HH:MM` local time in `tz` (quote it: "09:45").
    pub from: TimeOfDay,
    /// End, `HH:MM` local time in `tz`, later than `from` (`24:00` for midnight).
    pub to: TimeOfDay,
    /// IANA time zone the times are in, such as `America/Chicago`.
    pub tz: TimeZone,
    /// VMs kept warm during the window, instead of `pool.warm`.
    #[schemars(example = 30)]
    pub warm: u32,
}

/// A student's session on a VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// Hard limit from the first launch; then the VM is destroyed. Default 4h.
    #[serde(default = "default_expiry")]
    pub expiry: Duration,
    /// The VM is destroyed after this long without terminal activity. Default
    /// 30m; at most `expiry`.
    #[serde(default = "default_idle")]
    pub idle: Duration,
    /// How the browser terminal reaches the VM: `serial` (the VM's serial
    /// console, the default) or `ssh` (then `ssh` settings are required).
    #[serde(default)]
    pub console: Console,
    /// SSH settings, for `console: ssh` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSpec>,
    /// Labs of this course one student may hold at once: live sessions plus
    /// launches waiting for a VM. A relaunch of the same link returns the
    /// same session and does not count again. Default 1.
    #[serde(default = "default_per_user")]
    #[schemars(range(min = 1, max = 100), example = 1)]
    pub per_user: u32,
}

fn default_per_user() -> u32 {
    1
}

fn default_expiry() -> Duration {
    Duration::from_secs(4 * 3600)
}

fn default_idle() -> Duration {
    Duration::from_secs(30 * 60)
}

impl Default for SessionSpec {
    fn default() -> Self {
        SessionSpec {
            expiry: default_expiry(),
            idle: default_idle(),
            console: Console::default(),
            ssh: None,
            per_user: default_per_user(),
        }
    }
}

/// The terminal's path into the VM: `serial`, the VM's first serial port
/// through libvirt (needs nothing in the guest but a getty or shell on
/// ttyS0), or `ssh`, an SSH login as `ssh.user`.
// No doc comments on the variants: they would turn the schema's plain `enum`
// into a `oneOf`, which validators explain far less clearly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Console {
    #[default]
    Serial,
    Ssh,
}

/// How labpool logs in over SSH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshSpec {
    /// The account the student's terminal logs in as.
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_-]{0,31}$"), example = &"student")]
    pub user: String,
    /// The guest's SSH port. Default 22.
    #[serde(default = "default_ssh_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
}

fn default_ssh_port() -> u16 {
    22
}

/// LMS settings of a course: which platforms may launch it, and which LMS
/// courses open it without Deep Linking.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LtiSpec {
    /// The LMS platforms (and, optionally, which of labpool's deployments
    /// on each) that may launch this lab, by link or by context. A launch
    /// from any other platform is refused. Default: none, so the lab
    /// launches from no LMS (only from the try-it LMS of `serve --dev`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("uniqueItems" = true))]
    pub platforms: Vec<LtiPlatform>,
    /// LMS course (context) ids that launch this lab directly, for LMS links
    /// made without Deep Linking. Each id may belong to one course only.
    /// Launches from these contexts must still come from one of `platforms`.
    #[serde(default)]
    #[schemars(inner(length(min = 1)), extend("uniqueItems" = true), example = [&"canvas-4821"])]
    pub contexts: Vec<String>,
}

impl LtiSpec {
    fn is_empty(&self) -> bool {
        self.contexts.is_empty() && self.platforms.is_empty()
    }

    /// Whether a launch from `issuer`'s deployment `deployment` may open
    /// this course.
    pub fn allows(&self, issuer: &str, deployment: &str) -> bool {
        self.platforms
            .iter()
            .any(|p| p.issuer == issuer && p.deployment.as_deref().is_none_or(|d| d == deployment))
    }
}

/// An LMS platform that may launch a course.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LtiPlatform {
    /// The platform's issuer (`iss` of its launches), exactly as registered
    /// with labpool: `https://canvas.instructure.com`.
    #[schemars(regex(pattern = r"^https?://\S+$"), example = &"https://canvas.instructure.com")]
    pub issuer: String,
    /// Only launches through this deployment of labpool on the platform
    /// (`deployment_id`). Default: any deployment labpool knows there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), example = &"1:8865aa05b4b79b64a91a86042e43af5ea8ae79eb")]
    pub deployment: Option<String>,
}

/// What proves a VM is ready. Give a console marker or a port, not both;
/// with neither, the default for the course's console applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// Text whose appearance on the serial console means the VM is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = &"login:")]
    pub console_marker: Option<String>,
    /// A TCP port on the VM that accepts connections once it is ready. VM
    /// courses only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), example = 22)]
    pub port: Option<u16>,
    /// A command run in the container that exits 0 once it is ready.
    /// Container courses only. (There, `console_marker` is looked for in the
    /// container's output.) Default for containers: the terminal's shell
    /// runs `exit 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), example = [&"test", &"-e", &"/tmp/ready"])]
    pub command: Option<Vec<String>>,
    /// How long a VM may take to become ready before it is failed and
    /// replaced. Default 5m.
    #[serde(default = "default_ready_timeout")]
    pub timeout: Duration,
}

fn default_ready_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            console_marker: None,
            port: None,
            command: None,
            timeout: default_ready_timeout(),
        }
    }
}

impl Readiness {
    fn is_default(&self) -> bool {
        *self == Readiness::default()
    }
}

/// The readiness check that applies to a course, defaults resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    ConsoleMarker(String),
    Port(u16),
    /// A command in the container that must exit 0.
    Command(Vec<String>),
}

/// The marker used when a serial-console course names none: a getty's prompt.
pub const DEFAULT_CONSOLE_MARKER: &str = "login:";

impl Course {
    /// The readiness check for this course's VMs.
    pub fn probe(&self) -> Probe {
        if let Some(container) = &self.container {
            return match (&self.readiness.console_marker, &self.readiness.command) {
                (Some(marker), _) => Probe::ConsoleMarker(marker.clone()),
                (None, Some(command)) => Probe::Command(command.clone()),
                (None, None) => {
                    let mut shell = container.shell();
                    shell.extend(["-c".to_string(), "exit 0".to_string()]);
                    Probe::Command(shell)
                }
            };
        }
        match (&self.readiness.console_marker, self.readiness.port) {
            (Some(marker), _) => Probe::ConsoleMarker(marker.clone()),
            (None, Some(port)) => Probe::Port(port),
            (None, None) => match (&self.session.console, &self.session.ssh) {
                (Console::Ssh, Some(ssh)) => Probe::Port(ssh.port),
                (Console::Ssh, None) => Probe::Port(default_ssh_port()),
                (Console::Serial, _) => Probe::ConsoleMarker(DEFAULT_CONSOLE_MARKER.to_string()),
            },
        }
    }
}

/// Cores and bytes one lab of a course takes from a host's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub vcpus: u32,
    pub memory: ByteSize,
}

impl Course {
    /// What one lab takes from its host: the VM's size, or the container's
    /// limits (a started CPU counts whole). A course that failed its checks
    /// never gets here, so both runtimes have their block.
    pub fn size(&self) -> Size {
        match (&self.vm, &self.container) {
            (Some(vm), _) => Size {
                vcpus: vm.vcpus,
                memory: vm.memory,
            },
            (None, Some(c)) => Size {
                vcpus: (c.cpus.ceil() as u32).max(1),
                memory: c.memory,
            },
            (None, None) => Size {
                vcpus: 1,
                memory: ByteSize::bytes(0),
            },
        }
    }
}

fn example_course() -> serde_json::Value {
    serde_json::json!({
        "name": "rhel-101",
        "title": "RHEL System Administration I",
        "image": "rhel-9.4-academy",
        "vm": { "vcpus": 2, "memory": "4GiB" },
        "pool": {
            "warm": 5,
            "max": 40,
            "schedule": [
                { "days": ["mon", "wed"], "from": "09:45", "to": "11:30", "tz": "America/Chicago", "warm": 30 }
            ]
        },
        "session": { "expiry": "4h", "idle": "30m", "console": "serial" }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn course(yaml_session: serde_json::Value, readiness: serde_json::Value) -> Course {
        let mut value = example_course();
        value["session"] = yaml_session;
        value["readiness"] = readiness;
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_container_course_sizes_and_probes_from_its_container_block() {
        let c: Course = serde_json::from_value(serde_json::json!({
            "name": "box", "title": "Box", "runtime": "container",
            "container": { "image": "labpool/busybox:1", "cpus": 1.5, "memory": "128MiB",
                           "user": "student", "shell": ["/bin/ash", "-l"] },
            "pool": { "warm": 1, "max": 2 }
        }))
        .unwrap();
        assert_eq!(c.runtime, Runtime::Container);
        // A started CPU counts whole in capacity; the engine gets the fraction.
        assert_eq!(c.size().vcpus, 2);
        assert_eq!(c.size().memory, ByteSize::mib(128));
        assert_eq!(c.container.as_ref().unwrap().nano_cpus(), 1_500_000_000);
        // Default readiness: the terminal's own shell starts and exits 0.
        assert_eq!(
            c.probe(),
            Probe::Command(vec![
                "/bin/ash".into(),
                "-l".into(),
                "-c".into(),
                "exit 0".into()
            ])
        );
        // Written back, a VM course stays as it was: no `runtime: vm` added.
        let vm =
            serde_json::to_value(course(serde_json::json!({}), serde_json::json!({}))).unwrap();
        assert!(vm.get("runtime").is_none() && vm.get("container").is_none());
    }

    #[test]
    fn readiness_probe_defaults_follow_the_console() {
        use serde_json::json;
        let serial = course(json!({}), json!({}));
        assert_eq!(serial.probe(), Probe::ConsoleMarker("login:".into()));
        assert_eq!(serial.session, SessionSpec::default());
        assert_eq!(serial.readiness.timeout, Duration::from_secs(300));

        let ssh = course(
            json!({"console": "ssh", "ssh": {"user": "student", "port": 2222}}),
            json!({}),
        );
        assert_eq!(ssh.probe(), Probe::Port(2222));

        let marked = course(json!({}), json!({"console_marker": "READY"}));
        assert_eq!(marked.probe(), Probe::ConsoleMarker("READY".into()));
        let port = course(json!({}), json!({"port": 8080}));
        assert_eq!(port.probe(), Probe::Port(8080));
    }
}
