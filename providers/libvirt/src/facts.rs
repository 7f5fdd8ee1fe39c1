//! What a libvirt host is: [`HostFacts`], and which domain type its guests get.
//!
//! The domain type deserves its own note. On QEMU, `kvm` is right when the host's KVM can run a
//! standard guest, and `qemu` (TCG, emulation) otherwise. libvirt's capabilities list `kvm` whenever
//! `/dev/kvm` opens, which is not enough: on the lab machines `/dev/kvm` belongs to PVM (the `kvm_pvm`
//! module), which opens fine but hangs a stock guest kernel right after decompression. So on a local
//! URI nestform also requires the hardware module (`kvm_intel` or `kvm_amd`) to be loaded, which is
//! what a machine with VMX/SVM has, and takes TCG when only `kvm_pvm` is there. On a remote URI the
//! local `/sys` says nothing about the remote host, so libvirt's capabilities decide.

use std::path::Path;

use nestform_provider::{HostFacts, ProviderError};
use virt::connect::Connect;

use crate::error::op;
use crate::xml::Element;

/// Whether a libvirt URI names this machine: no host part (`qemu:///system`, `test+unix:///default`).
pub(crate) fn is_local(uri: &str) -> bool {
    match uri.split_once("://") {
        Some((_, rest)) => {
            let authority = rest.split(['/', '?']).next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or("");
            host.is_empty() || host == "localhost"
        }
        // A bare driver name is libvirt's shorthand for a local URI.
        None => true,
    }
}

/// libvirt's packed version (`major * 1_000_000 + minor * 1_000 + micro`) as `major.minor.micro`.
pub(crate) fn version_string(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, v / 1_000 % 1_000, v % 1_000)
}

/// libvirt names CPU vendors `Intel` and `AMD`; nestform reports the CPUID strings everyone knows.
fn cpuid_vendor(libvirt: &str) -> String {
    match libvirt {
        "Intel" => "GenuineIntel".into(),
        "AMD" => "AuthenticAMD".into(),
        other => other.into(),
    }
}

/// The local kernel's nesting switch (`/sys/module/kvm_{intel,amd}/parameters/nested`, `Y` or `1`).
fn local_nesting(sys_module: &Path) -> Option<bool> {
    ["kvm_intel", "kvm_amd"].iter().find_map(|m| {
        let value = std::fs::read_to_string(sys_module.join(m).join("parameters/nested")).ok()?;
        Some(matches!(value.trim(), "Y" | "y" | "1"))
    })
}

/// Whether this machine's KVM runs standard guests: a hardware KVM module is loaded (see the module
/// doc for why `/dev/kvm` alone does not tell).
fn local_hardware_kvm(sys_module: &Path) -> bool {
    Path::new("/dev/kvm").exists() && ["kvm_intel", "kvm_amd"].iter().any(|m| sys_module.join(m).exists())
}

pub(crate) fn host_facts(conn: &Connect, uri: &str) -> Result<HostFacts, ProviderError> {
    let hostname = conn.hostname().map_err(op("read hostname of", uri))?;
    let node = conn.node_info().map_err(op("read node info of", uri))?;
    let caps = Element::parse(&conn.capabilities().map_err(op("read capabilities of", uri))?)
        .map_err(|e| ProviderError::op("parse capabilities of", uri, e))?;
    let driver = conn.driver_type().map_err(op("read driver type of", uri))?;
    let hyp_version = conn.hyp_version().map_err(op("read hypervisor version of", uri))?;
    let lib_version = conn.lib_version().map_err(op("read libvirt version of", uri))?;
    let nesting = if driver.eq_ignore_ascii_case("qemu") && is_local(uri) {
        local_nesting(Path::new("/sys/module"))
    } else {
        None
    };
    Ok(HostFacts {
        hostname,
        cpus: node.cpus,
        memory_bytes: node.memory.saturating_mul(1024),
        cpu_vendor: caps.text_at(&["host", "cpu", "vendor"]).filter(|v| !v.is_empty()).map(cpuid_vendor),
        libvirt_version: version_string(lib_version),
        hypervisor: format!("{driver} {}", version_string(hyp_version)),
        nesting,
        ..HostFacts::default()
    })
}

/// The `<domain type>` guests on this connection get: `test` on the test driver, `kvm` or `qemu` on
/// QEMU (module doc), and the driver's own name otherwise.
pub(crate) fn domain_type(conn: &Connect, uri: &str) -> Result<String, ProviderError> {
    let driver = conn.driver_type().map_err(op("read driver type of", uri))?;
    if !driver.eq_ignore_ascii_case("qemu") {
        return Ok(driver.to_ascii_lowercase());
    }
    let caps = Element::parse(&conn.capabilities().map_err(op("read capabilities of", uri))?)
        .map_err(|e| ProviderError::op("parse capabilities of", uri, e))?;
    let kvm_offered = caps_offer_kvm(&caps);
    let usable = kvm_offered && (!is_local(uri) || local_hardware_kvm(Path::new("/sys/module")));
    Ok(if usable { "kvm" } else { "qemu" }.to_string())
}

/// Whether the capabilities offer domain type `kvm` for x86_64 guests.
fn caps_offer_kvm(caps: &Element) -> bool {
    caps.children("guest")
        .filter_map(|g| g.child("arch"))
        .filter(|a| a.attr("name") == Some("x86_64"))
        .any(|a| a.children("domain").any(|d| d.attr("type") == Some("kvm")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_uris_have_no_host() {
        assert!(is_local("qemu:///system"));
        assert!(is_local("test+unix:///default"));
        assert!(is_local("test:///default"));
        assert!(is_local("qemu+ssh://localhost/system"));
        assert!(!is_local("qemu+ssh://root@lab1/system"));
        assert!(!is_local("qemu+tcp://10.0.0.2:16509/system?no_verify=1"));
    }

    #[test]
    fn versions_unpack() {
        assert_eq!(version_string(11_003_000), "11.3.0");
        assert_eq!(version_string(10_000_002), "10.0.2");
        assert_eq!(version_string(2), "0.0.2");
    }

    #[test]
    fn vendors_become_cpuid_strings() {
        assert_eq!(cpuid_vendor("AMD"), "AuthenticAMD");
        assert_eq!(cpuid_vendor("Intel"), "GenuineIntel");
        assert_eq!(cpuid_vendor("Hygon"), "Hygon");
    }

    #[test]
    fn nesting_reads_the_module_parameter() {
        let dir = std::env::temp_dir().join(format!("nf-sysmod-{}", std::process::id()));
        let params = dir.join("kvm_amd/parameters");
        std::fs::create_dir_all(&params).unwrap();
        assert_eq!(local_nesting(&dir.join("nothing")), None);
        std::fs::write(params.join("nested"), "1\n").unwrap();
        assert_eq!(local_nesting(&dir), Some(true));
        std::fs::write(params.join("nested"), "N\n").unwrap();
        assert_eq!(local_nesting(&dir), Some(false));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kvm_offer_is_read_from_capabilities() {
        let with = "<capabilities><guest><arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest></capabilities>";
        let without = "<capabilities><guest><arch name='x86_64'><domain type='qemu'/></arch></guest>\
                       <guest><arch name='i686'><domain type='kvm'/></arch></guest></capabilities>";
        assert!(caps_offer_kvm(&Element::parse(with).unwrap()));
        assert!(!caps_offer_kvm(&Element::parse(without).unwrap()));
    }
}
