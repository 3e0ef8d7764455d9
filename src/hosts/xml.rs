//! libvirt XML for labpool's volumes and domains, and the metadata that marks
//! a domain as labpool's. Pure text in, text out, so it is tested without a
//! host.

use crate::html::escape;
use std::fmt::Write as _;

/// labpool's XML namespace for domain metadata. A domain is labpool's if and
/// only if it carries an element in this namespace: names are never trusted.
pub const NAMESPACE: &str = "https://labpool.dev/xmlns/vm/1";
const PREFIX: &str = "labpool";

/// What labpool writes into a domain's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub vm_id: String,
    pub course: String,
    pub spec_hash: String,
    /// The labpool instance (its store's id) that made the domain; `None`
    /// on marks of versions before instances existed (legacy marks).
    pub instance: Option<String>,
}

/// Is `id` an instance id as labpool makes them: 12 lowercase hex digits?
/// Anything else found on a host is never taken for an instance's id.
pub fn is_instance_id(id: &str) -> bool {
    id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_vm_id(id: &str) -> bool {
    id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Everything a domain definition needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec<'a> {
    /// `kvm`, `qemu` (TCG) or `test` (libvirt's test driver).
    pub domain_type: &'a str,
    pub name: &'a str,
    pub mark: &'a Mark,
    pub vcpus: u32,
    pub memory: u64,
    pub storage_pool: &'a str,
    pub volume: &'a str,
    pub direct_boot: Option<DirectBoot<'a>>,
    /// User networking (passt) with the guest's SSH port forwarded here.
    pub ssh_forward: Option<SshPortForward>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectBoot<'a> {
    pub kernel: &'a str,
    pub initrd: &'a str,
    pub cmdline: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshPortForward {
    pub address: std::net::IpAddr,
    pub host_port: u16,
    pub guest_port: u16,
}

/// Reads back what [`escape`] and libvirt (`&apos;`) write.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The metadata element, as stored in the domain XML.
pub fn mark_element(mark: &Mark) -> String {
    let instance = mark
        .instance
        .as_deref()
        .map(|i| format!(" instance=\"{}\"", escape(i)))
        .unwrap_or_default();
    format!(
        "<{PREFIX}:vm xmlns:{PREFIX}=\"{NAMESPACE}\" id=\"{}\" course=\"{}\" spec=\"{}\"{instance}/>",
        escape(&mark.vm_id),
        escape(&mark.course),
        escape(&mark.spec_hash)
    )
}

/// The metadata element alone, without its namespace declaration, as
/// `virDomainSetMetadata` takes it (with the namespace and prefix apart).
pub fn mark_body(mark: &Mark) -> String {
    mark_element(mark).replacen(
        &format!("{PREFIX}:vm xmlns:{PREFIX}=\"{NAMESPACE}\""),
        "vm",
        1,
    )
}

/// The prefix labpool's metadata element is written with.
pub const fn prefix() -> &'static str {
    PREFIX
}

/// Reads a mark back from what `virDomainGetMetadata` returns for our
/// namespace (libvirt rewrites the prefix, so only attributes are read).
pub fn parse_mark(element: &str) -> Option<Mark> {
    let attr = |name: &str| -> Option<String> {
        let start = element.find(&format!(" {name}=\""))? + name.len() + 3;
        let len = element[start..].find('"')?;
        Some(unescape(&element[start..start + len]))
    };
    Some(Mark {
        vm_id: attr("id")?,
        course: attr("course")?,
        spec_hash: attr("spec")?,
        // Absent on marks older than instances. A value of any other form
        // is kept as it is: it names no instance labpool could be.
        instance: attr("instance"),
    })
}

/// The domain definition. Every domain gets a serial console (the terminal's
/// default path and where readiness markers appear) and labpool's mark; it
/// is destroyed rather than rebooted on any exit, so a guest that powers
/// itself off shows up as stopped and gets replaced.
pub fn domain(spec: &DomainSpec<'_>) -> String {
    let mut x = String::with_capacity(2048);
    let _ = write!(
        x,
        "<domain type='{}'>\n  <name>{}</name>\n  <metadata>{}</metadata>\n  <memory unit='KiB'>{}</memory>\n  <vcpu>{}</vcpu>\n  <os>\n    <type arch='x86_64'>hvm</type>\n",
        escape(spec.domain_type),
        escape(spec.name),
        mark_element(spec.mark),
        spec.memory / 1024,
        spec.vcpus
    );
    if let Some(boot) = &spec.direct_boot {
        let _ = write!(
            x,
            "    <kernel>{}</kernel>\n    <initrd>{}</initrd>\n    <cmdline>{}</cmdline>\n",
            escape(boot.kernel),
            escape(boot.initrd),
            escape(boot.cmdline)
        );
    } else {
        x.push_str("    <boot dev='hd'/>\n");
    }
    x.push_str("  </os>\n  <features><acpi/></features>\n");
    x.push_str("  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n  <devices>\n");
    let _ = write!(
        x,
        "    <disk type='volume' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      <source pool='{}' volume='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n",
        escape(spec.storage_pool),
        escape(spec.volume)
    );
    if let Some(fwd) = &spec.ssh_forward {
        let _ = write!(
            x,
            "    <interface type='user'>\n      <backend type='passt'/>\n      <model type='virtio'/>\n      <portForward proto='tcp' address='{}'>\n        <range start='{}' to='{}'/>\n      </portForward>\n    </interface>\n",
            fwd.address, fwd.host_port, fwd.guest_port
        );
    }
    x.push_str("    <serial type='pty'><target port='0'/></serial>\n    <console type='pty'><target type='serial' port='0'/></console>\n");
    if spec.domain_type != "test" {
        x.push_str("    <memballoon model='none'/>\n");
    }
    x.push_str("  </devices>\n</domain>\n");
    x
}

/// An overlay volume: a qcow2 backed by the base volume at `backing` (an
/// absolute path on the host, as libvirt reports it), or a blank disk.
pub fn overlay_volume(name: &str, capacity: u64, backing: Option<(&str, &str)>) -> String {
    let mut x = format!(
        "<volume>\n  <name>{}</name>\n  <capacity unit='bytes'>{capacity}</capacity>\n  <target><format type='qcow2'/></target>\n",
        escape(name)
    );
    if let Some((path, format)) = backing {
        let _ = writeln!(
            x,
            "  <backingStore><path>{}</path><format type='{}'/></backingStore>",
            escape(path),
            escape(format)
        );
    }
    x.push_str("</volume>\n");
    x
}

/// The `<format type='…'/>` of a volume's target, from its XML description.
pub fn volume_format(volume_xml: &str) -> Option<String> {
    let target = &volume_xml[volume_xml.find("<target>")?..];
    let start = target
        .find("<format type='")
        .map(|i| (i, '\''))
        .or_else(|| target.find("<format type=\"").map(|i| (i, '"')))?;
    let value = &target[start.0 + 14..];
    Some(value[..value.find(start.1)?].to_string())
}

/// Name of a VM's domain: readable in `virsh list`, unique through the id.
pub fn domain_name(course: &str, vm_id: &str) -> String {
    format!("labpool-{course}-{vm_id}")
}

/// Name of a VM's overlay volume: `labpool-<instance>-<vm id>.qcow2`.
/// A dir pool keeps no metadata on a volume, so its name says whose it is.
pub fn volume_name(instance: &str, vm_id: &str) -> String {
    format!("labpool-{instance}-{vm_id}.qcow2")
}

/// What an overlay volume's name says, if it has one of labpool's exact
/// forms: `labpool-<instance>-<vm id>.qcow2`, or the legacy
/// `labpool-<vm id>.qcow2` of versions before instances (`instance: None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeName<'a> {
    pub instance: Option<&'a str>,
    pub vm_id: &'a str,
}

pub fn parse_volume(name: &str) -> Option<VolumeName<'_>> {
    let rest = name.strip_prefix("labpool-")?.strip_suffix(".qcow2")?;
    if is_vm_id(rest) {
        return Some(VolumeName {
            instance: None,
            vm_id: rest,
        });
    }
    let (instance, vm_id) = rest.split_once('-')?;
    (is_instance_id(instance) && is_vm_id(vm_id)).then_some(VolumeName {
        instance: Some(instance),
        vm_id,
    })
}

/// The VM id in an overlay volume's name, if the name has labpool's exact
/// form (either one). Volumes carry no metadata: the name, the store and
/// the domains that use the volume decide.
pub fn vm_id_of_volume(name: &str) -> Option<&str> {
    parse_volume(name).map(|v| v.vm_id)
}

/// Does this domain XML use `volume` of `pool` as a disk? (Domains made by
/// labpool name it as `<source pool='…' volume='…'/>`; others may give the
/// volume's path, `path`.)
pub fn uses_volume(domain_xml: &str, pool: &str, volume: &str, path: Option<&str>) -> bool {
    // libvirt writes an apostrophe in a value as `&apos;`.
    let quoted = |v: &str| {
        let v = escape(v).replace("&#39;", "&apos;");
        [format!("'{v}'"), format!("\"{v}\"")]
    };
    let by_name = quoted(pool)
        .iter()
        .any(|p| domain_xml.contains(&format!("pool={p}")))
        && quoted(volume)
            .iter()
            .any(|v| domain_xml.contains(&format!("volume={v}")));
    by_name || path.is_some_and(|p| quoted(p).iter().any(|q| domain_xml.contains(q.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark() -> Mark {
        Mark {
            vm_id: "0123456789abcdef".into(),
            course: "intro-shell".into(),
            spec_hash: "feedface00000000".into(),
            instance: Some("a1b2c3d4e5f6".into()),
        }
    }

    #[test]
    fn mark_round_trips_through_the_forms_libvirt_returns() {
        let m = mark();
        let element = mark_element(&m);
        assert!(element.contains(" instance=\"a1b2c3d4e5f6\""), "{element}");
        assert_eq!(parse_mark(&element), Some(m.clone()));
        // libvirt hands the element back with its own prefix and quoting.
        let back = "<vm xmlns=\"https://labpool.dev/xmlns/vm/1\" id=\"0123456789abcdef\" course=\"intro-shell\" spec=\"feedface00000000\" instance=\"a1b2c3d4e5f6\"/>";
        assert_eq!(parse_mark(back), Some(m.clone()));
        assert_eq!(parse_mark("<vm id=\"x\"/>"), None);
        // What virDomainSetMetadata is given: the element without its
        // namespace declaration, the same attributes.
        let body = mark_body(&m);
        assert!(body.starts_with("<vm id="), "{body}");
        assert_eq!(parse_mark(&body), Some(m));
    }

    /// Marks written before instances existed name none: they still parse
    /// (as legacy marks), and print back without the attribute.
    #[test]
    fn legacy_marks_without_an_instance_parse_as_none() {
        let old = "<vm xmlns=\"https://labpool.dev/xmlns/vm/1\" id=\"0123456789abcdef\" course=\"intro-shell\" spec=\"feedface00000000\"/>";
        let m = parse_mark(old).expect("an old mark parses");
        assert_eq!(m.instance, None);
        assert_eq!(m.vm_id, "0123456789abcdef");
        assert!(!mark_element(&m).contains("instance="));
        assert_eq!(parse_mark(&mark_element(&m)), Some(m));
    }

    #[test]
    fn instance_ids_have_one_form() {
        assert!(is_instance_id("a1b2c3d4e5f6"));
        assert!(is_instance_id("000000000000"));
        for bad in [
            "",
            "a1b2c3d4e5f",
            "a1b2c3d4e5f6a",
            "A1B2C3D4E5F6",
            "a1b2c3d4e5fg",
            "legacy",
        ] {
            assert!(!is_instance_id(bad), "{bad}");
        }
    }

    #[test]
    fn volume_names_name_their_instance_and_old_ones_still_parse() {
        let name = volume_name("a1b2c3d4e5f6", "0123456789abcdef");
        assert_eq!(name, "labpool-a1b2c3d4e5f6-0123456789abcdef.qcow2");
        assert_eq!(
            parse_volume(&name),
            Some(VolumeName {
                instance: Some("a1b2c3d4e5f6"),
                vm_id: "0123456789abcdef"
            })
        );
        assert_eq!(
            parse_volume("labpool-0123456789abcdef.qcow2"),
            Some(VolumeName {
                instance: None,
                vm_id: "0123456789abcdef"
            })
        );
        assert_eq!(vm_id_of_volume(&name), Some("0123456789abcdef"));
        for bad in [
            "labpool-A1B2C3D4E5F6-0123456789abcdef.qcow2",
            "labpool-a1b2c3d4e5f6-0123456789abcde.qcow2",
            "labpool-a1b2c3d4e5f-0123456789abcdef.qcow2",
            "labpool-a1b2c3d4e5f6-0123456789abcdef-x.qcow2",
            "labpool-a1b2c3d4e5f6_0123456789abcdef.qcow2",
            "labpool-a1b2c3d4e5f6-0123456789abcdef.raw",
        ] {
            assert_eq!(parse_volume(bad), None, "{bad}");
        }
    }

    /// The shared escape writes `'` as `&#39;`; marks still read back, and
    /// a path is still matched in libvirt's own form (`&apos;`).
    #[test]
    fn apostrophes_read_back_in_both_forms() {
        let mut m = mark();
        m.course = "o'brien".into();
        assert_eq!(parse_mark(&mark_element(&m)), Some(m.clone()));
        let libvirt = "<vm id=\"0123456789abcdef\" course=\"o&apos;brien\" spec=\"feedface00000000\" instance=\"a1b2c3d4e5f6\"/>";
        assert_eq!(parse_mark(libvirt), Some(m));
        let by_path = "<disk type='file'><source file='/pool/o&apos;brien.qcow2'/></disk>";
        assert!(uses_volume(by_path, "p", "v", Some("/pool/o'brien.qcow2")));
    }

    #[test]
    fn a_domain_using_a_volume_is_found_by_pool_and_name_or_path() {
        let m = mark();
        let xml = domain(&DomainSpec {
            domain_type: "qemu",
            name: "d",
            mark: &m,
            vcpus: 1,
            memory: 1 << 28,
            storage_pool: "labpool",
            volume: "labpool-a1b2c3d4e5f6-0123456789abcdef.qcow2",
            direct_boot: None,
            ssh_forward: None,
        });
        let vol = "labpool-a1b2c3d4e5f6-0123456789abcdef.qcow2";
        assert!(uses_volume(&xml, "labpool", vol, None));
        assert!(!uses_volume(
            &xml,
            "labpool",
            "labpool-a1b2c3d4e5f6-1123456789abcdef.qcow2",
            None
        ));
        let by_path = "<disk type='file'><source file='/pool/x.qcow2'/></disk>";
        assert!(uses_volume(by_path, "labpool", vol, Some("/pool/x.qcow2")));
        assert!(!uses_volume(by_path, "labpool", vol, Some("/pool/y.qcow2")));
    }

    #[test]
    fn domain_has_console_mark_and_overlay() {
        let m = mark();
        let xml = domain(&DomainSpec {
            domain_type: "qemu",
            name: "labpool-intro-shell-0123456789abcdef",
            mark: &m,
            vcpus: 1,
            memory: 192 * 1024 * 1024,
            storage_pool: "labpool",
            volume: "labpool-a1b2c3d4e5f6-0123456789abcdef.qcow2",
            direct_boot: Some(DirectBoot {
                kernel: "/k",
                initrd: "/i",
                cmdline: "console=ttyS0 a<b",
            }),
            ssh_forward: Some(SshPortForward {
                address: [127, 0, 0, 1].into(),
                host_port: 22001,
                guest_port: 22,
            }),
        });
        assert!(xml.contains("<domain type='qemu'>"));
        assert!(xml.contains("<memory unit='KiB'>196608</memory>"));
        assert!(xml.contains("<serial type='pty'>"));
        assert!(xml.contains(NAMESPACE));
        assert!(xml.contains(
            "<source pool='labpool' volume='labpool-a1b2c3d4e5f6-0123456789abcdef.qcow2'/>"
        ));
        assert!(xml.contains("instance=\"a1b2c3d4e5f6\""));
        assert!(xml.contains("<cmdline>console=ttyS0 a&lt;b</cmdline>"));
        assert!(xml.contains("<range start='22001' to='22'/>"));
    }

    #[test]
    fn volumes_and_names() {
        let v = overlay_volume(
            "labpool-0123456789abcdef.qcow2",
            1 << 30,
            Some(("/p/base.qcow2", "qcow2")),
        );
        assert!(v.contains(
            "<backingStore><path>/p/base.qcow2</path><format type='qcow2'/></backingStore>"
        ));
        assert!(!overlay_volume("x", 1, None).contains("backingStore"));
        assert_eq!(
            vm_id_of_volume("labpool-0123456789abcdef.qcow2"),
            Some("0123456789abcdef")
        );
        assert_eq!(vm_id_of_volume("labpool-0123.qcow2"), None);
        assert_eq!(vm_id_of_volume("busybox-base.qcow2"), None);
        let vol = "<volume type='file'>\n  <name>b</name>\n  <target>\n    <path>/x</path>\n    <format type='raw'/>\n  </target>\n</volume>";
        assert_eq!(volume_format(vol).as_deref(), Some("raw"));
    }
}
