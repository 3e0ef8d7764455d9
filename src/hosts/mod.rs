//! libvirt hosts: one connection per host, the calls labpool makes on it, and
//! what it finds there. Every call here blocks (libvirt's API is
//! synchronous); async callers go through [`Host::run`], which moves the call
//! onto tokio's blocking pool so the runtime's workers never wait on a host.
//!
//! Ownership: a domain carries labpool's mark when its metadata has
//! labpool's namespace ([`xml::NAMESPACE`]), and the mark names the labpool
//! instance that made it; an overlay volume has the exact form
//! `labpool-<instance>-<vm id>.qcow2` in the configured storage pool. The
//! reconciler only ever destroys what its store names, or what is marked
//! with its own instance ([`owner::Owners`]) — a volume only when no domain
//! on the host uses it.

pub mod docker;
pub mod owner;
pub mod ready;
pub mod xml;

use std::sync::{Arc, Mutex};

use virt::connect::Connect;
use virt::enumutil::Enum;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use crate::config::{DomainType, HostConfig, ImageConfig};
use owner::{Owners, Removal};
use xml::Mark;

/// A host call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// The host does not answer: the connection failed or broke.
    #[error("host `{host}` is unreachable: {message}")]
    Unreachable { host: String, message: String },
    /// The host answered with an error.
    #[error("host `{host}`: {op}: {message}")]
    Failed {
        host: String,
        op: &'static str,
        message: String,
    },
}

impl HostError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, HostError::Unreachable { .. })
    }
}

/// Which libvirt driver answers on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// QEMU/KVM: real guests, consoles, readiness probes.
    Qemu,
    /// libvirt's test driver: domains without guests, no consoles. A VM there
    /// is ready as soon as it runs, since there is nothing to probe.
    Test,
}

/// A domain that carries labpool's mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedDomain {
    pub name: String,
    pub mark: Mark,
    pub running: bool,
}

/// What labpool owns on a host right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub domains: Vec<OwnedDomain>,
    /// Overlay volume names (labpool's forms only), or container networks.
    pub volumes: Vec<String>,
    /// The instance label of each network that has one (Docker hosts: a
    /// volume's name says its instance, a network's label does).
    pub volume_instances: std::collections::HashMap<String, String>,
}

/// A VM to build.
#[derive(Debug, Clone)]
pub struct NewVm<'a> {
    pub mark: Mark,
    pub domain: &'a str,
    pub volume: &'a str,
    pub vcpus: u32,
    pub memory: u64,
    pub disk: Option<u64>,
    pub image: &'a ImageConfig,
    /// Host port for the guest's SSH port, and the guest port.
    pub ssh: Option<(u16, u16)>,
}

/// A started VM; its serial console was attached before the guest ran, so
/// nothing it printed is missed.
pub struct Started {
    pub console: Option<Stream>,
}

/// labpool's mark on a domain, if it carries one.
fn mark_of(dom: &virt::domain::Domain) -> Option<Mark> {
    let element = dom
        .metadata(
            virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(xml::NAMESPACE),
            0,
        )
        .ok()?;
    xml::parse_mark(&element)
}

/// The overlay of VM `vm_id` that a domain XML names in `pool`, if any:
/// `<source pool='…' volume='…'/>` with one of labpool's volume forms.
fn own_overlay<'a>(domain_xml: &'a str, pool: &str, vm_id: &str) -> Option<&'a str> {
    domain_xml.match_indices("volume=").find_map(|(at, _)| {
        let rest = &domain_xml[at + 7..];
        let quote = rest.chars().next()?;
        let value = &rest[1..rest[1..].find(quote)? + 1];
        let tag_start = domain_xml[..at].rfind('<')?;
        let tag = &domain_xml[tag_start..at];
        let in_pool =
            tag.contains(&format!("pool='{pool}'")) || tag.contains(&format!("pool=\"{pool}\""));
        (in_pool && xml::vm_id_of_volume(value) == Some(vm_id)).then_some(value)
    })
}

/// Blank disks (images without a base volume) get this size unless the
/// course says otherwise.
const DEFAULT_BLANK_DISK: u64 = 1 << 30;

/// One libvirt host: its configuration and a connection opened on demand and
/// reopened after it breaks.
pub struct Host {
    pub config: HostConfig,
    conn: Mutex<Option<(Connect, Driver)>>,
    /// Consoles of warm VMs, held open by their readiness watch until the
    /// terminal takes one over (by domain name).
    held: Mutex<std::collections::HashMap<String, HeldConsole>>,
    /// A Docker host's engine client, made on first use (`runtime: container`).
    engine: Mutex<Option<bollard::Docker>>,
}

/// A console a readiness watch keeps reading after the VM is ready. Its
/// output is discarded until someone sets `output`; from then on the watch
/// thread is that reader's.
pub struct HeldConsole {
    pub stream: Stream,
    pub output: Arc<Mutex<Option<tokio::sync::mpsc::Sender<Vec<u8>>>>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("name", &self.config.name)
            .finish()
    }
}

impl Host {
    pub fn new(config: HostConfig) -> Arc<Host> {
        // libvirt otherwise prints every error to stderr itself.
        virt::error::clear_error_callback();
        Arc::new(Host {
            config,
            conn: Mutex::new(None),
            held: Mutex::new(std::collections::HashMap::new()),
            engine: Mutex::new(None),
        })
    }

    /// What this host runs: VMs (libvirt) or containers (a Docker engine).
    pub fn runtime(&self) -> crate::course::spec::Runtime {
        self.config.runtime
    }

    /// The Docker engine's client, made if there is none yet. The API
    /// version is agreed with the engine first (Debian's docker.io speaks
    /// 1.41, older than bollard's default), so the first call needs the
    /// engine up; until then none is kept.
    pub async fn engine(&self) -> Result<bollard::Docker, HostError> {
        if let Some(docker) = self.engine.lock().expect("engine lock").as_ref() {
            return Ok(docker.clone());
        }
        let docker = docker::connect(&self.config)?
            .negotiate_version()
            .await
            .map_err(|e| docker::error(self.name(), "agree on the API version", e))?;
        *self.engine.lock().expect("engine lock") = Some(docker.clone());
        Ok(docker)
    }

    /// Every lab labpool owns here: domains and overlays, or containers and
    /// their networks.
    pub async fn inventory_any(self: &Arc<Self>) -> Result<Inventory, HostError> {
        match self.runtime() {
            crate::course::spec::Runtime::Vm => self.run(|h| h.inventory()).await,
            crate::course::spec::Runtime::Container => {
                docker::inventory(&self.engine().await?, self.name()).await
            }
        }
    }

    /// Removes a lab: its domain and overlay, or its container and network.
    pub async fn destroy_any(
        self: &Arc<Self>,
        domain: &str,
        volume: &str,
    ) -> Result<(), HostError> {
        match self.runtime() {
            crate::course::spec::Runtime::Vm => {
                let (domain, volume) = (domain.to_string(), volume.to_string());
                self.run(move |h| h.destroy(&domain, &volume)).await
            }
            crate::course::spec::Runtime::Container => {
                docker::destroy(&self.engine().await?, self.name(), domain, volume).await
            }
        }
    }

    /// Removes one orphan: a domain or container (`is_domain`), or a volume
    /// or network.
    pub async fn remove_orphan_any(
        self: &Arc<Self>,
        is_domain: bool,
        name: &str,
        owners: &Owners,
    ) -> Result<Removal, HostError> {
        match self.runtime() {
            crate::course::spec::Runtime::Vm => {
                let (name, owners) = (name.to_string(), owners.clone());
                self.run(move |h| h.remove_orphan(is_domain, &name, &owners))
                    .await
            }
            crate::course::spec::Runtime::Container => {
                docker::remove_orphan(&self.engine().await?, self.name(), is_domain, name, owners)
                    .await
            }
        }
    }

    /// Adds `instance` to a legacy domain's mark (one made before marks
    /// named an instance), after checking that it still has no instance:
    /// the store knows its VM, so this labpool adopts it.
    pub fn adopt_domain(&self, name: &str, instance: &str) -> Result<bool, HostError> {
        let (conn, _) = self.connection()?;
        let dom = match conn.lookup_domain_by_name(name) {
            Ok(d) => d,
            Err(e) if matches!(e.code(), Enum::Known(ErrorNumber::NoDomain)) => return Ok(false),
            Err(e) => return Err(self.error(&conn, "find domain", e)),
        };
        let Some(mut mark) = mark_of(&dom) else {
            return Ok(false);
        };
        if mark.instance.is_some() {
            return Ok(false);
        }
        mark.instance = Some(instance.to_string());
        let body = xml::mark_body(&mark);
        let kind = virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32;
        let both = virt::sys::VIR_DOMAIN_AFFECT_LIVE | virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
        let set = |flags: u32| {
            dom.set_metadata(
                kind,
                Some(&body),
                Some(xml::prefix()),
                Some(xml::NAMESPACE),
                flags,
            )
        };
        // A running persistent domain: its live and its saved definition;
        // anything else (inactive, or transient): what it has.
        set(both)
            .or_else(|_| set(virt::sys::VIR_DOMAIN_AFFECT_CURRENT))
            .map_err(|e| self.error(&conn, "set domain metadata", e))?;
        Ok(true)
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Runs a blocking host call on tokio's blocking pool.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        call: impl FnOnce(&Host) -> Result<T, HostError> + Send + 'static,
    ) -> Result<T, HostError> {
        let host = Arc::clone(self);
        let name = host.config.name.clone();
        tokio::task::spawn_blocking(move || call(&host))
            .await
            .unwrap_or_else(|e| {
                Err(HostError::Failed {
                    host: name,
                    op: "call",
                    message: format!("panicked: {e}"),
                })
            })
    }

    /// The connection, opened if there is none yet.
    fn connection(&self) -> Result<(Connect, Driver), HostError> {
        if self.runtime() == crate::course::spec::Runtime::Container {
            return Err(HostError::Failed {
                host: self.config.name.clone(),
                op: "libvirt call",
                message: "this is a Docker host".into(),
            });
        }
        let mut slot = self.conn.lock().expect("host connection lock");
        if let Some((conn, driver)) = slot.as_ref() {
            return Ok((conn.clone(), *driver));
        }
        let conn = Connect::open(Some(&self.config.uri)).map_err(|e| HostError::Unreachable {
            host: self.config.name.clone(),
            message: e.message().to_string(),
        })?;
        let driver = match conn.driver_type() {
            Ok(t) if t.eq_ignore_ascii_case("test") => Driver::Test,
            _ => Driver::Qemu,
        };
        *slot = Some((conn.clone(), driver));
        Ok((conn, driver))
    }

    /// Turns a libvirt error into a [`HostError`]; a broken connection is
    /// dropped so the next call reconnects.
    fn error(&self, conn: &Connect, op: &'static str, e: virt::error::Error) -> HostError {
        let alive = conn.is_alive().unwrap_or(false);
        let broken = !alive
            || matches!(
                e.code(),
                Enum::Known(ErrorNumber::NoConnect | ErrorNumber::InvalidConn | ErrorNumber::Rpc)
            );
        if broken {
            self.conn.lock().expect("host connection lock").take();
            HostError::Unreachable {
                host: self.config.name.clone(),
                message: e.message().to_string(),
            }
        } else {
            HostError::Failed {
                host: self.config.name.clone(),
                op,
                message: e.message().to_string(),
            }
        }
    }

    pub fn driver(&self) -> Result<Driver, HostError> {
        self.connection().map(|(_, d)| d)
    }

    /// Drops the connection (the next call reconnects).
    pub fn disconnect(&self) {
        self.conn.lock().expect("host connection lock").take();
    }

    fn storage_pool(&self, conn: &Connect) -> Result<StoragePool, HostError> {
        conn.lookup_storage_pool_by_name(&self.config.storage_pool)
            .map_err(|e| self.error(conn, "find storage pool", e))
    }

    /// Every domain and overlay volume on the host that is labpool's.
    pub fn inventory(&self) -> Result<Inventory, HostError> {
        let (conn, _) = self.connection()?;
        // Listing running and other domains apart gives each one's state
        // without a call per domain; only the metadata costs one. Paused
        // counts as not running: a guest stopped there serves nobody
        // (creates resume before they return).
        let mut domains = Vec::new();
        let not_running = virt::sys::VIR_CONNECT_LIST_DOMAINS_PAUSED
            | virt::sys::VIR_CONNECT_LIST_DOMAINS_SHUTOFF
            | virt::sys::VIR_CONNECT_LIST_DOMAINS_OTHER;
        for (flag, running) in [
            (virt::sys::VIR_CONNECT_LIST_DOMAINS_RUNNING, true),
            (not_running, false),
        ] {
            let listed = conn
                .list_all_domains(flag)
                .map_err(|e| self.error(&conn, "list domains", e))?;
            for dom in listed {
                // A domain without our metadata is someone else's; a domain
                // that vanished between list and lookup is simply not there.
                let Some(mark) = mark_of(&dom) else {
                    continue;
                };
                let Ok(name) = dom.name() else { continue };
                domains.push(OwnedDomain {
                    name,
                    mark,
                    running,
                });
            }
        }
        let pool = self.storage_pool(&conn)?;
        // New files in a dir pool are seen only after a refresh.
        let _ = pool.refresh(0);
        let volumes = pool
            .list_all_volumes(0)
            .map_err(|e| self.error(&conn, "list volumes", e))?
            .iter()
            .filter_map(|v| v.name().ok())
            .filter(|n| xml::vm_id_of_volume(n).is_some())
            .collect();
        Ok(Inventory {
            domains,
            volumes,
            volume_instances: Default::default(),
        })
    }

    /// Builds and starts a VM: overlay volume, domain definition, start
    /// paused, attach the serial console, resume. Any step that fails undoes
    /// the ones before it.
    pub fn create(&self, vm: &NewVm<'_>) -> Result<Started, HostError> {
        let (conn, driver) = self.connection()?;
        let pool = self.storage_pool(&conn)?;
        let backing = match &vm.image.volume {
            Some(base) => {
                let base_vol = pool
                    .lookup_storage_vol_by_name(base)
                    .map_err(|e| self.error(&conn, "find base volume", e))?;
                let path = base_vol
                    .path()
                    .map_err(|e| self.error(&conn, "base volume path", e))?;
                let info = base_vol
                    .info()
                    .map_err(|e| self.error(&conn, "base volume size", e))?;
                let format = base_vol
                    .xml_desc(0)
                    .ok()
                    .and_then(|x| xml::volume_format(&x))
                    .unwrap_or_else(|| "qcow2".into());
                Some((path, format, info.capacity))
            }
            None => None,
        };
        let capacity = match (&backing, vm.disk) {
            (Some((_, _, base)), Some(disk)) => disk.max(*base),
            (Some((_, _, base)), None) => *base,
            (None, disk) => disk.unwrap_or(DEFAULT_BLANK_DISK),
        };
        // A leftover volume with this exact name can only be from an earlier
        // attempt at this same VM: replace it.
        if let Ok(old) = pool.lookup_storage_vol_by_name(vm.volume) {
            let _ = old.delete(0);
        }
        let volume_xml = xml::overlay_volume(
            vm.volume,
            capacity,
            backing.as_ref().map(|(p, f, _)| (p.as_str(), f.as_str())),
        );
        let volume = StorageVol::create_xml(&pool, &volume_xml, 0)
            .map_err(|e| self.error(&conn, "create overlay volume", e))?;

        let domain_type = match (driver, self.config.domain_type) {
            (Driver::Test, _) => "test",
            (Driver::Qemu, DomainType::Kvm) => "kvm",
            (Driver::Qemu, DomainType::Qemu) => "qemu",
        };
        let direct_boot = match (&vm.image.kernel, &vm.image.initrd) {
            (Some(kernel), Some(initrd)) => Some(xml::DirectBoot {
                kernel,
                initrd,
                cmdline: vm
                    .image
                    .cmdline
                    .as_deref()
                    .unwrap_or("console=ttyS0 quiet panic=-1"),
            }),
            _ => None,
        };
        let domain_xml = xml::domain(&xml::DomainSpec {
            domain_type,
            name: vm.domain,
            mark: &vm.mark,
            vcpus: vm.vcpus,
            memory: vm.memory,
            storage_pool: &self.config.storage_pool,
            volume: vm.volume,
            direct_boot,
            ssh_forward: vm.ssh.map(|(host_port, guest_port)| xml::SshPortForward {
                address: self.config.ssh_forward.address,
                host_port,
                guest_port,
            }),
        });
        let undo_volume = |e: HostError| {
            let _ = volume.delete(0);
            e
        };
        let dom = conn
            .define_domain_xml(&domain_xml)
            .map_err(|e| undo_volume(self.error(&conn, "define domain", e)))?;
        let undo_domain = |e: HostError| {
            let _ = dom.destroy();
            let _ = dom.undefine();
            undo_volume(e)
        };
        // Paused first, so the console is attached before the guest prints
        // anything (the test driver has no guests and no paused start).
        let flags = match driver {
            Driver::Test => 0,
            Driver::Qemu => virt::sys::VIR_DOMAIN_START_PAUSED,
        };
        dom.create_with_flags(flags)
            .map_err(|e| undo_domain(self.error(&conn, "start domain", e)))?;
        let console = match driver {
            Driver::Test => None,
            Driver::Qemu => {
                let stream = Stream::new(&conn, 0)
                    .map_err(|e| undo_domain(self.error(&conn, "open stream", e)))?;
                dom.open_console(None, &stream, virt::sys::VIR_DOMAIN_CONSOLE_FORCE)
                    .map_err(|e| undo_domain(self.error(&conn, "open console", e)))?;
                Some(stream)
            }
        };
        if driver == Driver::Qemu {
            dom.resume()
                .map_err(|e| undo_domain(self.error(&conn, "resume domain", e)))?;
        }
        Ok(Started { console })
    }

    /// Destroys a VM's domain and deletes its volume. Anything already gone
    /// counts as done, so a retry after a crash is harmless.
    pub fn destroy(&self, domain: &str, volume: &str) -> Result<(), HostError> {
        let (conn, _) = self.connection()?;
        self.remove_domain(&conn, domain)?;
        self.remove_volume(&conn, volume)
    }

    /// Removes one orphan: a domain (with its own overlay, when no other
    /// domain uses it) or a volume.
    pub fn remove_orphan(
        &self,
        is_domain: bool,
        name: &str,
        owners: &Owners,
    ) -> Result<Removal, HostError> {
        let (conn, _) = self.connection()?;
        if is_domain {
            // Re-check the mark right before destroying: ownership is decided
            // by metadata naming our instance, never by a name from an
            // earlier listing.
            let dom = match conn.lookup_domain_by_name(name) {
                Ok(d) => d,
                Err(e) if matches!(e.code(), Enum::Known(ErrorNumber::NoDomain)) => {
                    return Ok(Removal::Gone);
                }
                Err(e) => return Err(self.error(&conn, "find domain", e)),
            };
            let Some(mark) = mark_of(&dom).filter(|m| owners.owns(m.instance.as_deref())) else {
                return Ok(Removal::NotOurs);
            };
            // Its own overlay (of its VM id, in our pool), which goes with it.
            let own_volume = dom.xml_desc(0).ok().and_then(|x| {
                own_overlay(&x, &self.config.storage_pool, &mark.vm_id).map(str::to_string)
            });
            self.remove_domain(&conn, name)?;
            let mut with = None;
            if let Some(volume) = own_volume
                && self.volume_users(&conn, &volume)? == 0
            {
                self.remove_volume(&conn, &volume)?;
                with = Some(volume);
            }
            Ok(Removal::Removed(with))
        } else {
            // A dir pool's volume has no metadata: its name must name our
            // instance, and no domain on the host may use it (a domain of
            // another labpool whose volume happens to look like ours, or one
            // of ours still being collected: a later pass takes it).
            let ours = xml::parse_volume(name).is_some_and(|v| owners.owns(v.instance));
            if !ours {
                return Ok(Removal::NotOurs);
            }
            let pool = self.storage_pool(&conn)?;
            if pool.lookup_storage_vol_by_name(name).is_err() {
                return Ok(Removal::Gone);
            }
            if self.volume_users(&conn, name)? > 0 {
                return Ok(Removal::InUse);
            }
            self.remove_volume(&conn, name)?;
            Ok(Removal::Removed(None))
        }
    }

    /// How many domains on the host (running or not, anyone's) use
    /// `volume` of the configured pool as a disk.
    fn volume_users(&self, conn: &Connect, volume: &str) -> Result<usize, HostError> {
        let path = self
            .storage_pool(conn)?
            .lookup_storage_vol_by_name(volume)
            .ok()
            .and_then(|v| v.path().ok());
        let domains = conn
            .list_all_domains(0)
            .map_err(|e| self.error(conn, "list domains", e))?;
        Ok(domains
            .iter()
            .filter_map(|d| d.xml_desc(0).ok())
            .filter(|x| xml::uses_volume(x, &self.config.storage_pool, volume, path.as_deref()))
            .count())
    }

    fn remove_domain(&self, conn: &Connect, name: &str) -> Result<(), HostError> {
        let dom = match conn.lookup_domain_by_name(name) {
            Ok(d) => d,
            Err(e) if matches!(e.code(), Enum::Known(ErrorNumber::NoDomain)) => return Ok(()),
            Err(e) => return Err(self.error(conn, "find domain", e)),
        };
        // "not running" is fine: it stopped between the two calls.
        if dom.is_active().unwrap_or(true)
            && let Err(e) = dom.destroy()
            && dom.is_active().unwrap_or(true)
        {
            return Err(self.error(conn, "destroy domain", e));
        }
        match dom.undefine() {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.code(), Enum::Known(ErrorNumber::NoDomain)) => Ok(()),
            Err(e) => Err(self.error(conn, "undefine domain", e)),
        }
    }

    fn remove_volume(&self, conn: &Connect, name: &str) -> Result<(), HostError> {
        let pool = self.storage_pool(conn)?;
        let vol = match pool.lookup_storage_vol_by_name(name) {
            Ok(v) => v,
            Err(e) if matches!(e.code(), Enum::Known(ErrorNumber::NoStorageVolume)) => {
                return Ok(());
            }
            Err(e) => return Err(self.error(conn, "find volume", e)),
        };
        vol.delete(0)
            .map_err(|e| self.error(conn, "delete volume", e))
    }

    /// Records `domain`'s console as held open (by its readiness watch).
    pub fn hold_console(&self, domain: &str, console: HeldConsole) {
        self.held
            .lock()
            .expect("held consoles")
            .insert(domain.to_string(), console);
    }

    /// Forgets `domain`'s held console (its watch ended).
    pub fn release_console(&self, domain: &str) {
        self.held.lock().expect("held consoles").remove(domain);
    }

    /// Takes over `domain`'s held console, if its watch still holds it.
    pub fn take_console(&self, domain: &str) -> Option<HeldConsole> {
        self.held.lock().expect("held consoles").remove(domain)
    }

    /// Opens a VM's serial console (for the terminal gateway and tests).
    pub fn open_console(&self, domain: &str) -> Result<Stream, HostError> {
        let (conn, _) = self.connection()?;
        let dom = conn
            .lookup_domain_by_name(domain)
            .map_err(|e| self.error(&conn, "find domain", e))?;
        let stream = Stream::new(&conn, 0).map_err(|e| self.error(&conn, "open stream", e))?;
        dom.open_console(None, &stream, virt::sys::VIR_DOMAIN_CONSOLE_FORCE)
            .map_err(|e| self.error(&conn, "open console", e))?;
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domains_own_overlay_is_its_vm_ids_in_the_pool() {
        let xml = "<domain><devices><disk type='volume' device='disk'>\n<source pool='labpool' volume='labpool-a1b2c3d4e5f6-0123456789abcdef.qcow2'/>\n</disk>\
            <disk type='volume'><source pool='other' volume='labpool-0123456789abcdef.qcow2'/></disk>\
            <disk type='volume'><source pool='labpool' volume='labpool-1123456789abcdef.qcow2'/></disk></devices></domain>";
        assert_eq!(
            own_overlay(xml, "labpool", "0123456789abcdef"),
            Some("labpool-a1b2c3d4e5f6-0123456789abcdef.qcow2")
        );
        // Another VM's volume, or one in another pool, is not its own.
        assert_eq!(own_overlay(xml, "other", "1123456789abcdef"), None);
        assert_eq!(own_overlay(xml, "labpool", "2123456789abcdef"), None);
        let legacy = "<source pool=\"labpool\" volume=\"labpool-0123456789abcdef.qcow2\"/>";
        assert_eq!(
            own_overlay(legacy, "labpool", "0123456789abcdef"),
            Some("labpool-0123456789abcdef.qcow2")
        );
    }
}
