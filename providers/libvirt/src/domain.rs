//! Domain XML: what nestform writes for a [`GuestRequest`], and what it reads back from libvirt's
//! description of a domain. Pure functions; the calls to libvirt live in `hypervisor`.

use std::io;

use nestform_provider::{BootRequest, CpuRequest, DiskRequest, GuestRequest};
use nestform_types::{DiskBus, DiskCache, Owner};

use crate::xml::{finish, owner_of, writer, Element, XmlExt};
use crate::{AGENT_CHANNELS, AGENT_CHANNEL_PREFIX, POOL_NAME};

/// The 9p tag under which a kernel-booted guest sees its parent's root directory.
pub const ROOT_SHARE_TAG: &str = "nestform-root";

/// The volume that holds a disk: `<guest>-<disk>.<format>`.
pub(crate) fn volume_name(guest: &str, disk: &DiskRequest) -> String {
    format!("{guest}-{}.{}", disk.name, disk.format.as_str())
}

/// The disk name of a volume of guest `guest`, the inverse of [`volume_name`].
pub(crate) fn disk_of_volume<'v>(guest: &str, volume: &'v str) -> Option<&'v str> {
    let rest = volume.strip_prefix(guest)?.strip_prefix('-')?;
    rest.strip_suffix(".qcow2").or_else(|| rest.strip_suffix(".raw"))
}

/// Target device names as libvirt and Linux name them: `vda` on virtio, `sda` on SATA and SCSI, `hda`
/// on IDE; the letters continue `z`, `aa`, `ab` like the kernel's.
fn target_dev(bus: DiskBus, index: usize) -> String {
    let prefix = match bus {
        DiskBus::Virtio => "vd",
        DiskBus::Sata | DiskBus::Scsi => "sd",
        DiskBus::Ide => "hd",
    };
    let mut letters = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        n -= 1;
        letters.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    letters.reverse();
    format!("{prefix}{}", String::from_utf8(letters).expect("ASCII letters"))
}

/// The domain XML for `req`. `domain_type` is `kvm`, `qemu` or `test` (see `facts::domain_type`);
/// `uuid` is given when redefining an existing domain, so libvirt updates it instead of refusing a
/// second domain of the same name.
pub(crate) fn domain_xml(req: &GuestRequest, owner: &Owner, domain_type: &str, uuid: Option<&str>) -> String {
    let mut w = writer();
    write_domain(&mut w, req, owner, domain_type, uuid).expect("writing to memory does not fail");
    finish(w)
}

fn write_domain(
    w: &mut crate::xml::XmlWriter,
    req: &GuestRequest,
    owner: &Owner,
    domain_type: &str,
    uuid: Option<&str>,
) -> io::Result<()> {
    w.elem("domain", &[("type", domain_type)], |w| {
        w.text("name", &[], &req.name)?;
        if let Some(uuid) = uuid {
            w.text("uuid", &[], uuid)?;
        }
        w.metadata(owner)?;
        w.text("memory", &[("unit", "KiB")], &req.memory_bytes.div_ceil(1024).to_string())?;
        w.text("vcpu", &[], &req.vcpus.to_string())?;
        w.elem("os", &[], |w| {
            w.text("type", &[("arch", "x86_64")], "hvm")?;
            match &req.boot {
                BootRequest::Disk => w.empty("boot", &[("dev", "hd")]),
                BootRequest::Kernel { kernel, initrd, cmdline, .. } => {
                    w.text("kernel", &[], kernel)?;
                    w.text("initrd", &[], initrd)?;
                    w.text("cmdline", &[], cmdline)
                }
            }
        })?;
        // ACPI is what a graceful `shutdown` sends the guest.
        w.elem("features", &[], |w| {
            w.empty("acpi", &[])?;
            w.empty("apic", &[])
        })?;
        match &req.cpu {
            CpuRequest::HostPassthrough => w.empty("cpu", &[("mode", "host-passthrough")])?,
            CpuRequest::HostModel => w.empty("cpu", &[("mode", "host-model")])?,
            CpuRequest::Model { name, require } => {
                w.elem("cpu", &[("mode", "custom"), ("match", "exact")], |w| {
                    w.text("model", &[], name)?;
                    for feature in require {
                        w.empty("feature", &[("policy", "require"), ("name", feature)])?;
                    }
                    Ok(())
                })?;
            }
        }
        w.elem("devices", &[], |w| write_devices(w, req))
    })
}

fn write_devices(w: &mut crate::xml::XmlWriter, req: &GuestRequest) -> io::Result<()> {
    let mut per_prefix = std::collections::BTreeMap::<&str, usize>::new();
    for disk in &req.disks {
        let dev_prefix = match disk.bus {
            DiskBus::Virtio => "vd",
            DiskBus::Sata | DiskBus::Scsi => "sd",
            DiskBus::Ide => "hd",
        };
        let index = per_prefix.entry(dev_prefix).or_default();
        let dev = target_dev(disk.bus, *index);
        *index += 1;
        let volume = volume_name(&req.name, disk);
        w.elem("disk", &[("type", "volume"), ("device", "disk")], |w| {
            let format = disk.format.as_str();
            match disk.cache {
                DiskCache::Default => w.empty("driver", &[("name", "qemu"), ("type", format)])?,
                cache => {
                    w.empty("driver", &[("name", "qemu"), ("type", format), ("cache", cache.as_str())])?
                }
            }
            w.empty("source", &[("pool", POOL_NAME), ("volume", &volume)])?;
            w.empty("target", &[("dev", &dev), ("bus", disk.bus.as_str())])
        })?;
    }
    if let BootRequest::Kernel { root_share: Some(dir), .. } = &req.boot {
        w.elem("filesystem", &[("type", "mount"), ("accessmode", "passthrough")], |w| {
            w.empty("source", &[("dir", dir)])?;
            w.empty("target", &[("dir", ROOT_SHARE_TAG)])?;
            w.empty("readonly", &[])
        })?;
    }
    for iface in &req.interfaces {
        w.elem("interface", &[("type", "network")], |w| {
            if let Some(mac) = &iface.mac {
                w.empty("mac", &[("address", mac)])?;
            }
            w.empty("source", &[("network", &iface.network)])?;
            w.empty("model", &[("type", "virtio")])
        })?;
    }
    // virtlogd keeps everything the guest writes on its serial console, from the first boot message:
    // what an error about a guest that never came up shows (`channel::console_tail`).
    w.elem("serial", &[("type", "pty")], |w| {
        let log = crate::channel::console_log_path(&req.name);
        w.empty("log", &[("file", &log.to_string_lossy()), ("append", "off")])
    })?;
    for channel in AGENT_CHANNELS {
        w.elem("channel", &[("type", "unix")], |w| {
            w.empty("source", &[("mode", "bind")])?;
            w.empty("target", &[("type", "virtio"), ("name", channel)])
        })?;
    }
    Ok(())
}

/// The agent channels a domain's XML declares, in order, with the socket path of each where libvirt
/// filled one in (a running domain's XML): all of [`AGENT_CHANNELS`] for a guest nestform defined, only
/// the first for one defined before there were several.
pub(crate) fn agent_channels(xml: &str) -> Vec<(String, Option<String>)> {
    let Ok(root) = Element::parse(xml) else { return Vec::new() };
    let Some(devices) = root.child("devices") else { return Vec::new() };
    let mut found: Vec<(String, Option<String>)> = devices
        .children("channel")
        .filter(|c| c.attr("type") == Some("unix"))
        .filter_map(|c| {
            let name = c.child("target")?.attr("name")?;
            name.starts_with(AGENT_CHANNEL_PREFIX).then(|| {
                (name.to_string(), c.child("source").and_then(|s| s.attr("path")).map(str::to_string))
            })
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// What nestform reads back from a domain's (inactive) XML.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DomainFacts {
    pub name: String,
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// `(disk name, volume name)` of each disk in nestform's pool, in order.
    pub volumes: Vec<(String, String)>,
    /// The network of each `type='network'` interface, in order.
    pub networks: Vec<String>,
    pub owner: Option<Owner>,
}

/// Reads a domain's XML. Disks outside nestform's pool (added by hand) are not nestform's and are left
/// out.
pub(crate) fn parse_domain(xml: &str) -> Result<DomainFacts, String> {
    let root = Element::parse(xml)?;
    let name = root.text_at(&["name"]).ok_or("no `<name>`")?.to_string();
    let vcpus = root.text_at(&["vcpu"]).ok_or("no `<vcpu>`")?;
    let vcpus = vcpus.parse().map_err(|_| format!("`<vcpu>` is `{vcpus}`"))?;
    let memory = root.child("memory").ok_or("no `<memory>`")?;
    let memory_bytes = scaled(memory.text.trim(), memory.attr("unit").unwrap_or("KiB"))?;
    let mut volumes = Vec::new();
    let mut networks = Vec::new();
    if let Some(devices) = root.child("devices") {
        for source in devices.children("disk").filter_map(|d| d.child("source")) {
            if let (Some(POOL_NAME), Some(volume)) = (source.attr("pool"), source.attr("volume")) {
                let disk = disk_of_volume(&name, volume).unwrap_or(volume);
                volumes.push((disk.to_string(), volume.to_string()));
            }
        }
        for iface in devices.children("interface").filter(|i| i.attr("type") == Some("network")) {
            if let Some(net) = iface.child("source").and_then(|s| s.attr("network")) {
                networks.push(net.to_string());
            }
        }
    }
    Ok(DomainFacts { name, vcpus, memory_bytes, volumes, networks, owner: owner_of(&root) })
}

/// A libvirt scaled integer (`<memory unit='KiB'>`) in bytes.
fn scaled(value: &str, unit: &str) -> Result<u64, String> {
    let n: u64 = value.parse().map_err(|_| format!("`{value}` is not a number"))?;
    let factor: u64 = match unit {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1000 * 1000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1000 * 1000 * 1000,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        other => return Err(format!("unknown unit `{other}`")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("`{value}` `{unit}` overflows"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_agent_channel_sockets_of_a_running_domain() {
        let xml = r#"<domain type="qemu"><name>g2</name><devices>
            <channel type="pty"><target type="virtio" name="other"/></channel>
            <channel type="unix"><source mode="bind" path="/run/libvirt/qemu/channel/3-g2/org.x"/>
              <target type="virtio" name="org.x"/></channel>
            <channel type="unix"><source mode="bind" path="/run/libvirt/qemu/channel/3-g2/dev.nestform.agent.0"/>
              <target type="virtio" name="dev.nestform.agent.0" state="connected"/></channel>
            </devices></domain>"#;
        assert_eq!(agent_channels("<domain/>"), []);
        assert_eq!(
            agent_channels(xml),
            [(
                "dev.nestform.agent.0".to_string(),
                Some("/run/libvirt/qemu/channel/3-g2/dev.nestform.agent.0".to_string())
            )]
        );
    }

    #[test]
    fn a_guest_gets_every_agent_channel_in_order() {
        let xml = domain_xml(&request(), &owner(), "qemu", None);
        let names: Vec<String> = agent_channels(&xml).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, AGENT_CHANNELS);
    }
    use nestform_provider::InterfaceRequest;
    use nestform_types::{DiskFormat, Preallocation};

    fn owner() -> Owner {
        Owner { lineage: "lin".into(), address: "nested_guest.l1".into() }
    }

    fn request() -> GuestRequest {
        let disk = |name: &str, format, cache, bus| DiskRequest {
            name: name.into(),
            size_bytes: 1 << 30,
            format,
            preallocation: Preallocation::Metadata,
            cache,
            bus,
        };
        GuestRequest {
            name: "l1".into(),
            vcpus: 2,
            memory_bytes: 3 << 30,
            cpu: CpuRequest::Model { name: "EPYC".into(), require: vec!["svm".into()] },
            disks: vec![
                disk("root", DiskFormat::Qcow2, DiskCache::Unsafe, DiskBus::Virtio),
                disk("data", DiskFormat::Raw, DiskCache::Default, DiskBus::Virtio),
                disk("old", DiskFormat::Raw, DiskCache::None, DiskBus::Sata),
            ],
            interfaces: vec![
                InterfaceRequest { network: "lan".into(), mac: Some("52:54:00:00:00:01".into()) },
                InterfaceRequest { network: "wan".into(), mac: None },
            ],
            boot: BootRequest::Kernel {
                kernel: "/k/vmlinuz".into(),
                initrd: "/k/initrd".into(),
                cmdline: "console=ttyS0 root=nestform-root".into(),
                root_share: Some("/".into()),
            },
            running: true,
        }
    }

    #[test]
    fn writes_the_whole_domain() {
        let xml = domain_xml(&request(), &owner(), "qemu", Some("7b1f0000-0000-4000-8000-000000000001"));
        let expected = r#"<domain type="qemu">
  <name>l1</name>
  <uuid>7b1f0000-0000-4000-8000-000000000001</uuid>
  <metadata>
    <nestform:owner xmlns:nestform="https://nestform.dev/xmlns/owner/1">
      <nestform:lineage>lin</nestform:lineage>
      <nestform:address>nested_guest.l1</nestform:address>
    </nestform:owner>
  </metadata>
  <memory unit="KiB">3145728</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch="x86_64">hvm</type>
    <kernel>/k/vmlinuz</kernel>
    <initrd>/k/initrd</initrd>
    <cmdline>console=ttyS0 root=nestform-root</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode="custom" match="exact">
    <model>EPYC</model>
    <feature policy="require" name="svm"/>
  </cpu>
  <devices>
    <disk type="volume" device="disk">
      <driver name="qemu" type="qcow2" cache="unsafe"/>
      <source pool="nestform" volume="l1-root.qcow2"/>
      <target dev="vda" bus="virtio"/>
    </disk>
    <disk type="volume" device="disk">
      <driver name="qemu" type="raw"/>
      <source pool="nestform" volume="l1-data.raw"/>
      <target dev="vdb" bus="virtio"/>
    </disk>
    <disk type="volume" device="disk">
      <driver name="qemu" type="raw" cache="none"/>
      <source pool="nestform" volume="l1-old.raw"/>
      <target dev="sda" bus="sata"/>
    </disk>
    <filesystem type="mount" accessmode="passthrough">
      <source dir="/"/>
      <target dir="nestform-root"/>
      <readonly/>
    </filesystem>
    <interface type="network">
      <mac address="52:54:00:00:00:01"/>
      <source network="lan"/>
      <model type="virtio"/>
    </interface>
    <interface type="network">
      <source network="wan"/>
      <model type="virtio"/>
    </interface>
    <serial type="pty">
      <log file="/var/log/libvirt/qemu/l1-console.log" append="off"/>
    </serial>
    <channel type="unix">
      <source mode="bind"/>
      <target type="virtio" name="dev.nestform.agent.0"/>
    </channel>
    <channel type="unix">
      <source mode="bind"/>
      <target type="virtio" name="dev.nestform.agent.1"/>
    </channel>
    <channel type="unix">
      <source mode="bind"/>
      <target type="virtio" name="dev.nestform.agent.2"/>
    </channel>
    <channel type="unix">
      <source mode="bind"/>
      <target type="virtio" name="dev.nestform.agent.3"/>
    </channel>
  </devices>
</domain>"#;
        assert_eq!(xml, expected);
    }

    #[test]
    fn cpu_modes_and_disk_boot() {
        let mut req = request();
        req.boot = BootRequest::Disk;
        req.cpu = CpuRequest::HostPassthrough;
        let xml = domain_xml(&req, &owner(), "kvm", None);
        assert!(xml.contains(r#"<cpu mode="host-passthrough"/>"#), "{xml}");
        assert!(xml.contains(r#"<boot dev="hd"/>"#), "{xml}");
        assert!(!xml.contains("<uuid>") && !xml.contains("<filesystem"), "{xml}");
        req.cpu = CpuRequest::HostModel;
        assert!(domain_xml(&req, &owner(), "kvm", None).contains(r#"<cpu mode="host-model"/>"#));
    }

    #[test]
    fn reads_back_what_it_wrote() {
        let facts = parse_domain(&domain_xml(&request(), &owner(), "test", None)).unwrap();
        assert_eq!(
            facts,
            DomainFacts {
                name: "l1".into(),
                vcpus: 2,
                memory_bytes: 3 << 30,
                volumes: vec![
                    ("root".into(), "l1-root.qcow2".into()),
                    ("data".into(), "l1-data.raw".into()),
                    ("old".into(), "l1-old.raw".into()),
                ],
                networks: vec!["lan".into(), "wan".into()],
                owner: Some(owner()),
            }
        );
    }

    #[test]
    fn reads_libvirts_own_rendering() {
        let xml = "<domain type='test' id='2'>\n  <name>g-1</name>\n  <memory unit='MiB'>512</memory>\n  \
                   <vcpu placement='static'>4</vcpu>\n  <devices>\n    <disk type='file'><source file='/x.img'/></disk>\n    \
                   <disk type='volume'><source pool='nestform' volume='g-1-root.qcow2'/></disk>\n    \
                   <interface type='bridge'><source bridge='br0'/></interface>\n  </devices>\n</domain>";
        let facts = parse_domain(xml).unwrap();
        assert_eq!((facts.vcpus, facts.memory_bytes), (4, 512 << 20));
        assert_eq!(facts.volumes, vec![("root".to_string(), "g-1-root.qcow2".to_string())]);
        assert!(facts.networks.is_empty());
        assert_eq!(facts.owner, None);
    }

    #[test]
    fn names_targets_like_the_kernel() {
        assert_eq!(target_dev(DiskBus::Virtio, 0), "vda");
        assert_eq!(target_dev(DiskBus::Scsi, 25), "sdz");
        assert_eq!(target_dev(DiskBus::Ide, 26), "hdaa");
        assert_eq!(target_dev(DiskBus::Virtio, 27), "vdab");
    }

    #[test]
    fn volume_names_round_trip() {
        assert_eq!(disk_of_volume("web", "web-root.qcow2"), Some("root"));
        assert_eq!(disk_of_volume("web", "web-a-b.raw"), Some("a-b"));
        assert_eq!(disk_of_volume("web", "webx-root.raw"), None);
    }
}
