//! labpool's own configuration file: the libvirt hosts and their image catalog.
//!
//! Written by the platform admin, read by `labpool validate --config` (to check
//! that courses fit the hosts) and, later, by `labpool serve`. The file is
//! YAML, read with the same located parser as course files, so every problem
//! is reported as `file:line:column: code: message`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::course::values::{ByteSize, ImageName, serde_diagnostic};
use crate::diagnostic::{Code, Diagnostic, Position};
use crate::yaml::{self, Document};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The libvirt hosts VMs may be placed on.
    #[serde(default)]
    pub hosts: Vec<HostConfig>,
    /// Base images by name; course files refer to these names.
    #[serde(default)]
    pub images: BTreeMap<ImageName, ImageConfig>,
}

/// One libvirt host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// A short name for logs and status.
    pub name: String,
    /// libvirt connection URI: `qemu:///system`, `qemu+ssh://user@host/system`, `test:///…`.
    pub uri: String,
    /// The libvirt storage pool holding base images and overlays.
    #[serde(default = "default_storage_pool")]
    pub storage_pool: String,
    /// What the host may give to labpool's VMs.
    pub capacity: Capacity,
    /// `kvm` in production, `qemu` (TCG emulation) where KVM is missing.
    #[serde(default)]
    pub domain_type: DomainType,
    /// The catalog images present on this host. Default: all of them.
    #[serde(default)]
    pub images: Option<Vec<ImageName>>,
}

fn default_storage_pool() -> String {
    "default".to_string()
}

/// The share of a host labpool may use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// The most labpool VMs on the host at once.
    pub vms: u32,
    /// Memory for labpool's VMs (never overcommitted).
    pub memory: ByteSize,
    /// Physical CPUs for labpool's VMs. One VM never gets more vCPUs than this.
    pub vcpus: u32,
    /// How many vCPUs may be handed out per physical CPU, summed over VMs.
    #[serde(default = "default_overcommit")]
    pub cpu_overcommit: f64,
}

fn default_overcommit() -> f64 {
    1.0
}

/// The libvirt domain type VMs are created with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    #[default]
    Kvm,
    Qemu,
}

/// Where an image's bits are: a base volume in the host's storage pool, or a
/// kernel and initrd booted directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Name of the read-only base volume in the host's storage pool.
    #[serde(default)]
    pub volume: Option<String>,
    /// Kernel image path on the host, for direct boot.
    #[serde(default)]
    pub kernel: Option<String>,
    /// Initrd path on the host, for direct boot.
    #[serde(default)]
    pub initrd: Option<String>,
    /// Kernel command line, for direct boot.
    #[serde(default)]
    pub cmdline: Option<String>,
}

impl HostConfig {
    /// Does this host hold the image?
    pub fn carries(&self, image: &ImageName) -> bool {
        self.images.as_ref().is_none_or(|list| list.contains(image))
    }

    /// Could one VM of this size ever run here (ignoring what already runs)?
    pub fn fits(&self, vcpus: u32, memory: ByteSize) -> bool {
        vcpus <= self.capacity.vcpus && memory <= self.capacity.memory
    }
}

/// Reading the configuration failed; the diagnostics say where and why.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration file")]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl Config {
    /// Reads and checks the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |d: Diagnostic| ConfigError {
            diagnostics: vec![d],
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(Diagnostic::new(
                path,
                Position::START,
                Code::IoError,
                e.to_string(),
            ))
        })?;
        Config::parse(path, &text)
    }

    /// Parses configuration text (`path` names it in diagnostics).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let parsed = yaml::parse(path, text);
        let mut diagnostics = parsed.diagnostics;
        let Some(doc) = parsed.document else {
            return Err(ConfigError { diagnostics });
        };
        match serde_path_to_error::deserialize::<_, Config>(&doc.value) {
            Err(e) => {
                diagnostics.push(serde_diagnostic(path, &doc, &e, |_| e.path().to_string()));
                Err(ConfigError { diagnostics })
            }
            Ok(config) => {
                config.check(path, &doc, &mut diagnostics);
                if diagnostics.is_empty() {
                    Ok(config)
                } else {
                    Err(ConfigError { diagnostics })
                }
            }
        }
    }

    fn check(&self, path: &Path, doc: &Document, out: &mut Vec<Diagnostic>) {
        let mut names = HashMap::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let at = |field: &str| doc.value_position(&format!("/hosts/{i}/{field}"));
            if let Some(first) = names.insert(host.name.as_str(), i) {
                out.push(Diagnostic::new(
                    path,
                    at("name"),
                    Code::DuplicateName,
                    format!("host `{}` is already defined as hosts[{first}]", host.name),
                ));
            }
            for image in host.images.iter().flatten() {
                if !self.images.contains_key(image) {
                    out.push(Diagnostic::new(
                        path,
                        at("images"),
                        Code::UnknownImage,
                        format!(
                            "host `{}` lists image `{image}`, which is not in `images`",
                            host.name
                        ),
                    ));
                }
            }
            if host.capacity.vms == 0
                || host.capacity.vcpus == 0
                || host.capacity.cpu_overcommit.is_nan()
                || host.capacity.cpu_overcommit < 1.0
            {
                out.push(Diagnostic::new(
                    path,
                    at("capacity"),
                    Code::InvalidValue,
                    "capacity needs vms and vcpus above zero and cpu_overcommit of at least 1",
                ));
            }
        }
        for (name, image) in &self.images {
            let direct = image.kernel.is_some() || image.initrd.is_some();
            let complete_direct = image.kernel.is_some() && image.initrd.is_some();
            if image.volume.is_some() == direct || (direct && !complete_direct) {
                out.push(Diagnostic::new(
                    path,
                    doc.key_position(&yaml::pointer_push("/images", name.as_str())),
                    Code::InvalidValue,
                    format!("image `{name}` needs either `volume`, or `kernel` and `initrd`"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_images() {
        let text = "hosts:\n  - name: a\n    uri: test:///default\n    capacity: { vms: 4, memory: 8GiB, vcpus: 4 }\nimages:\n  tiny: { volume: tiny.qcow2 }\n";
        let config = Config::parse(Path::new("labpool.yaml"), text).unwrap();
        assert_eq!(config.hosts[0].storage_pool, "default");
        assert_eq!(config.hosts[0].capacity.cpu_overcommit, 1.0);
        assert!(config.hosts[0].carries(&"tiny".parse().unwrap()));
        assert!(config.hosts[0].fits(4, ByteSize::gib(8)));
        assert!(!config.hosts[0].fits(5, ByteSize::gib(8)));
    }

    #[test]
    fn reports_problems_with_positions() {
        let text =
            "hosts:\n  - name: a\n    uri: x\n    capacity: { vms: 4, memory: 8 gigs, vcpus: 4 }\n";
        let err = Config::parse(Path::new("c.yaml"), text).unwrap_err();
        let d = &err.diagnostics[0];
        assert_eq!((d.position.line, d.code), (4, Code::InvalidSize));
        assert!(
            d.message
                .starts_with("hosts[0].capacity.memory: size \"8 gigs\""),
            "{}",
            d.message
        );

        let text = "images:\n  both: { volume: v, kernel: k, initrd: i }\n  none: {}\n";
        let err = Config::parse(Path::new("c.yaml"), text).unwrap_err();
        let lines: Vec<usize> = err.diagnostics.iter().map(|d| d.position.line).collect();
        assert_eq!(lines, vec![2, 3]);
    }
}
