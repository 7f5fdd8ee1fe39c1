//! What a libvirt host is: [`HostFacts`], which domain type its guests get, and the CPU a guest gets
//! under TCG ([`tcg_cpu_for`]).
//!
//! The domain type deserves its own note. On QEMU, `kvm` is right when the host's KVM can run a
//! standard guest, and `qemu` (TCG, emulation) otherwise. libvirt's capabilities list `kvm` whenever
//! `/dev/kvm` opens, which is not enough: on the lab machines `/dev/kvm` belongs to PVM (the `kvm_pvm`
//! module), which opens fine but hangs a stock guest kernel right after decompression. So on a local
//! URI nestform also requires the hardware module (`kvm_intel` or `kvm_amd`) to be loaded, which is
//! what a machine with VMX/SVM has, and takes TCG when only `kvm_pvm` is there. On a remote URI the
//! local `/sys` says nothing about the remote host, so libvirt's capabilities decide.
//!
//! One function, [`decide`], makes that choice from a [`Probe`] (what libvirt and, on a local URI,
//! this machine's `/proc` and `/sys` say); both the domain type a connection uses and the
//! `acceleration` its facts report come from it, so the plan shows what apply does.

use nestform_provider::{HostFacts, ProviderError};
use virt::connect::Connect;
use virt::error::ErrorNumber;

use crate::error::{is, op};
use crate::kvm::{KvmModules, LocalKvm, PVM_MODULE};
use crate::xml::Element;

/// The directory-name prefix of nestform's tunnels into guests (`nestform_provider_promoted::tunnel`): a unix socket
/// there reaches the libvirtd of a guest, not of this machine.
const TUNNEL_DIR_PREFIX: &str = "/nestform-tunnel-";

/// Whether a libvirt URI names this machine: no host part (`qemu:///system`, `test+unix:///default`),
/// and not one of nestform's tunnels into a guest (`qemu+unix:///system?socket=.../nestform-tunnel-X/...`),
/// whose `/sys`, logs and KVM module are the guest's.
pub(crate) fn is_local(uri: &str) -> bool {
    if uri.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|kv| kv.strip_prefix("socket=").is_some_and(|p| p.contains(TUNNEL_DIR_PREFIX)))
    }) {
        return false;
    }
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

/// The CPU model a guest gets under TCG in place of `host-passthrough`, and the features it
/// requires: `EPYC` with `svm`.
///
/// On every host, whatever its vendor: QEMU's TCG emulates AMD's SVM (with nested paging) but not
/// Intel's VMX; asked for `vmx` it warns "TCG doesn't support requested feature: CPUID.01H:ECX.vmx"
/// and drops it (QEMU 10.0, checked with `Skylake-Client,vmx=on` and `Nehalem,vmx=on`), so an Intel
/// model would leave the guest unable to nest. Under TCG the guest's CPU is emulated, so an AMD model
/// runs on an Intel host just the same. On this project's machines `EPYC` + `svm` gives the level-1
/// guest `svm` and `npt`, and `kvm_amd` loads inside it with nested virtualization and nested paging.
/// libvirt's domain capabilities mark `EPYC` not usable under TCG because of a few features TCG
/// lacks (`xsavec`, `topoext`, ...); QEMU leaves those out with a warning and the guest runs.
///
/// Meant for hosts whose `acceleration` is `tcg`; on a KVM host `host-passthrough` is right.
pub fn tcg_cpu_for(facts: &HostFacts) -> (String, Vec<String>) {
    // The facts do not change the answer (see above); the parameter keeps the door open for a host
    // whose QEMU learns VMX under TCG, without changing callers.
    let _ = facts;
    ("EPYC".to_string(), vec!["svm".to_string()])
}

/// Everything the acceleration decision and the facts rest on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Probe {
    /// libvirt's driver name: `QEMU`, `Test`, ...
    pub driver: String,
    /// Whether the capabilities (or the domain capabilities) offer domain type `kvm` for x86_64.
    pub kvm_offered: bool,
    /// The host CPU as libvirt's capabilities describe it.
    pub host_cpu: HostCpu,
    /// The default domain capabilities' `host-model` CPU, when the driver has domain capabilities.
    pub host_model: Option<HostCpu>,
    /// This machine's `/proc` and `/sys`, on a local URI of the QEMU driver.
    pub local: Option<LocalKvm>,
}

/// A CPU libvirt describes: model, vendor and features.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct HostCpu {
    pub model: Option<String>,
    /// libvirt's vendor name (`AMD`, `Intel`).
    pub vendor: Option<String>,
    pub features: Vec<String>,
}

impl HostCpu {
    fn from_element(cpu: &Element) -> HostCpu {
        let text = |name: &str| cpu.text_at(&[name]).filter(|t| !t.is_empty()).map(str::to_string);
        HostCpu {
            model: text("model"),
            vendor: text("vendor"),
            features: cpu
                .children("feature")
                .filter(|f| !matches!(f.attr("policy"), Some("disable" | "forbid")))
                .filter_map(|f| f.attr("name").map(str::to_string))
                .collect(),
        }
    }

    /// `svm` or `vmx` when the features list one.
    fn virt_extension(&self) -> Option<String> {
        ["vmx", "svm"].into_iter().find(|x| self.features.iter().any(|f| f == x)).map(str::to_string)
    }
}

/// The decision: the `<domain type>` and, on QEMU, the acceleration with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub domain_type: String,
    /// `kvm` or `tcg` on QEMU; `None` on drivers without a choice (the test driver).
    pub acceleration: Option<&'static str>,
    pub reason: Option<String>,
}

/// `AMD-V` or `VT-x`, the names people know the extensions by.
fn extension_name(ext: &str) -> &'static str {
    if ext == "svm" {
        "AMD-V"
    } else {
        "VT-x"
    }
}

/// The one place that picks a host's acceleration (module doc).
pub(crate) fn decide(p: &Probe) -> Decision {
    if !p.driver.eq_ignore_ascii_case("qemu") {
        return Decision { domain_type: p.driver.to_ascii_lowercase(), acceleration: None, reason: None };
    }
    let tcg = |why: String| Decision {
        domain_type: "qemu".into(),
        acceleration: Some("tcg"),
        reason: Some(format!("{why}, so guests are emulated (TCG)")),
    };
    let kvm =
        |why: String| Decision { domain_type: "kvm".into(), acceleration: Some("kvm"), reason: Some(why) };
    if !p.kvm_offered {
        return tcg("libvirt offers no `kvm` domain type on this host".into());
    }
    let Some(local) = &p.local else {
        let ext = p.host_cpu.virt_extension().or_else(|| p.host_model.as_ref()?.virt_extension());
        return kvm(match ext {
            Some(ext) => format!("KVM with {}", extension_name(&ext)),
            None => "KVM (libvirt offers the `kvm` domain type)".into(),
        });
    };
    match local.module.as_deref() {
        Some(module) => {
            let ext = if module == "kvm_amd" { "svm" } else { "vmx" };
            kvm(format!("KVM with {}", extension_name(ext)))
        }
        None if local.pvm => tcg(format!(
            "`/dev/kvm` belongs to PVM (module `{PVM_MODULE}`), which cannot run a standard guest kernel"
        )),
        None => match &local.virt_extension {
            Some(ext) => {
                let module = if ext == "svm" { "kvm_amd" } else { "kvm_intel" };
                tcg(format!("the CPU has `{ext}` but module `{module}` is not loaded (`modprobe {module}`)"))
            }
            None if local.dev_kvm => {
                tcg("`/dev/kvm` is there but no `kvm_intel` or `kvm_amd` module is loaded".into())
            }
            None => tcg("there is no `/dev/kvm` and no `kvm_intel` or `kvm_amd` module".into()),
        },
    }
}

/// Whether the capabilities offer domain type `kvm` for x86_64 guests.
fn caps_offer_kvm(caps: &Element) -> bool {
    caps.children("guest")
        .filter_map(|g| g.child("arch"))
        .filter(|a| a.attr("name") == Some("x86_64"))
        .any(|a| a.children("domain").any(|d| d.attr("type") == Some("kvm")))
}

/// From the default domain capabilities: whether their domain type is `kvm`, and the `host-model`
/// CPU (model and the features it requires).
fn parse_domain_caps(domcaps: &Element) -> (bool, Option<HostCpu>) {
    let kvm = domcaps.text_at(&["domain"]) == Some("kvm");
    let host_model = domcaps
        .child("cpu")
        .and_then(|cpu| cpu.children("mode").find(|m| m.attr("name") == Some("host-model")))
        .filter(|m| m.attr("supported") != Some("no"))
        .map(HostCpu::from_element);
    (kvm, host_model)
}

/// Gathers a [`Probe`]: capabilities, domain capabilities (where the driver has them) and, on a
/// local QEMU URI, what `local` reads from this machine.
pub(crate) fn probe(conn: &Connect, uri: &str, local: &KvmModules) -> Result<Probe, ProviderError> {
    let driver = conn.driver_type().map_err(op("read driver type of", uri))?;
    let caps = conn.capabilities().map_err(op("read capabilities of", uri))?;
    let qemu = driver.eq_ignore_ascii_case("qemu");
    let domcaps = if qemu {
        match conn.domain_capabilities(None, Some("x86_64"), None, None, 0) {
            Ok(xml) => Some(xml),
            // Capabilities alone still decide; the host-model CPU only adds detail.
            Err(e) if is(&e, ErrorNumber::NoSupport) || is(&e, ErrorNumber::InvalidArg) => None,
            Err(e) => return Err(op("read domain capabilities of", uri)(e)),
        }
    } else {
        None
    };
    let local = (qemu && is_local(uri)).then(|| local.probe());
    probe_from(driver, &caps, domcaps.as_deref(), local)
        .map_err(|e| ProviderError::op("parse capabilities of", uri, e))
}

/// The pure half of [`probe`]: a [`Probe`] from the driver name, the capabilities and domain
/// capabilities XML, and the local machine's KVM.
fn probe_from(
    driver: String,
    caps: &str,
    domcaps: Option<&str>,
    local: Option<LocalKvm>,
) -> Result<Probe, String> {
    let caps = Element::parse(caps)?;
    let (domcaps_kvm, host_model) = match domcaps {
        Some(xml) => parse_domain_caps(&Element::parse(xml)?),
        None => (false, None),
    };
    Ok(Probe {
        kvm_offered: caps_offer_kvm(&caps) || domcaps_kvm,
        host_cpu: caps.path(&["host", "cpu"]).map(HostCpu::from_element).unwrap_or_default(),
        host_model,
        local,
        driver,
    })
}

/// The facts of a probed host, with the decision [`decide`] makes for it.
pub(crate) fn facts_from(
    probe: &Probe,
    hostname: String,
    cpus: u32,
    memory_bytes: u64,
    lib_version: u32,
    hyp_version: u32,
) -> HostFacts {
    let decision = decide(probe);
    let local = probe.local.as_ref();
    let virt_extension = local
        .and_then(|l| l.virt_extension.clone())
        .or_else(|| probe.host_cpu.virt_extension())
        .or_else(|| probe.host_model.as_ref()?.virt_extension());
    let nesting = match decision.acceleration {
        // TCG emulates SVM for its guests (`tcg_cpu_for`), whatever the host's modules say.
        Some("tcg") => Some(true),
        Some(_) => {
            local.and_then(|l| l.parameters.get("nested")).map(|v| matches!(v.as_str(), "Y" | "y" | "1"))
        }
        None => None,
    };
    let qemu = probe.driver.eq_ignore_ascii_case("qemu");
    HostFacts {
        hostname,
        cpus,
        memory_bytes,
        memory_source: None,
        cpu_vendor: probe
            .host_cpu
            .vendor
            .as_deref()
            .map(cpuid_vendor)
            .or_else(|| local.and_then(|l| l.cpu_vendor.clone())),
        libvirt_version: version_string(lib_version),
        hypervisor: format!("{} {}", probe.driver, version_string(hyp_version)),
        nesting,
        virt_extension,
        acceleration: decision.acceleration.map(str::to_string),
        acceleration_reason: decision.reason,
        kvm_module: local.and_then(|l| l.module.clone()),
        kvm_parameters: local.map(|l| l.parameters.clone()).unwrap_or_default(),
        qemu_version: qemu.then(|| version_string(hyp_version)),
    }
}

pub(crate) fn host_facts(conn: &Connect, uri: &str) -> Result<HostFacts, ProviderError> {
    let probe = probe(conn, uri, &KvmModules::system())?;
    let hostname = conn.hostname().map_err(op("read hostname of", uri))?;
    let node = conn.node_info().map_err(op("read node info of", uri))?;
    let hyp_version = conn.hyp_version().map_err(op("read hypervisor version of", uri))?;
    let lib_version = conn.lib_version().map_err(op("read libvirt version of", uri))?;
    let (memory_bytes, memory_source) = match node_memory_total(conn) {
        Some(kib) => (kib.saturating_mul(1024), MEMORY_FROM_STATS),
        None => (node.memory.saturating_mul(1024), MEMORY_FROM_NODE_INFO),
    };
    let mut facts = facts_from(&probe, hostname, node.cpus, memory_bytes, lib_version, hyp_version);
    facts.memory_source = Some(memory_source.to_string());
    Ok(facts)
}

/// Where a host's memory figure comes from, as the plan says it.
const MEMORY_FROM_STATS: &str = "the host's total memory, from libvirt's node memory statistics";
const MEMORY_FROM_NODE_INFO: &str = "libvirt's node info; the driver keeps no memory statistics";

/// The host's total memory in KiB, as `virsh nodememstats` shows it: `MemTotal` of the host's
/// `/proc/meminfo`, over all NUMA cells. `virNodeGetInfo`'s figure is not used when this is there: on
/// QEMU hosts it is NUMA node 0's memory, which on the lab machines was between 6.2 and 13 GB of 24 and
/// changed from one run to the next, so plans refused guests that fit. The virt crate has no binding
/// for this call, hence the raw one. `None` where the driver has no statistics (the test driver).
fn node_memory_total(conn: &Connect) -> Option<u64> {
    use std::os::raw::c_int;
    use virt::sys;
    // SAFETY: `conn` is a live connection for the whole call. The first call (no buffer) only counts
    // the fields; the second fills exactly `n` entries of a buffer of that many, which libvirt writes
    // NUL-terminated field names into.
    unsafe {
        let ptr = conn.as_ptr();
        let mut n: c_int = 0;
        if sys::virNodeGetMemoryStats(
            ptr,
            sys::VIR_NODE_MEMORY_STATS_ALL_CELLS,
            std::ptr::null_mut(),
            &mut n,
            0,
        ) < 0
            || n <= 0
        {
            sys::virResetLastError();
            return None;
        }
        let mut stats = vec![sys::virNodeMemoryStats { field: [0; 80], value: 0 }; n as usize];
        if sys::virNodeGetMemoryStats(
            ptr,
            sys::VIR_NODE_MEMORY_STATS_ALL_CELLS,
            stats.as_mut_ptr(),
            &mut n,
            0,
        ) < 0
        {
            sys::virResetLastError();
            return None;
        }
        stats.truncate(n.max(0) as usize);
        stats.iter().find_map(|s| {
            let name = std::ffi::CStr::from_ptr(s.field.as_ptr()).to_str().ok()?;
            (name == "total" && s.value > 0).then_some(s.value)
        })
    }
}

/// The `<domain type>` guests on this connection get: `test` on the test driver, `kvm` or `qemu` on
/// QEMU (module doc), and the driver's own name otherwise.
pub(crate) fn domain_type(conn: &Connect, uri: &str) -> Result<String, ProviderError> {
    Ok(decide(&probe(conn, uri, &KvmModules::system())?).domain_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::tests::fake_root;

    /// Capabilities shaped like this lab machine's (QEMU 10.0.2 under PVM): `kvm` offered, an AMD host
    /// CPU without `svm`.
    const CAPS_PVM: &str = "<capabilities><host><cpu><arch>x86_64</arch><model>kvm64-v1</model><vendor>AMD</vendor>\
        <feature name='pclmuldq'/><feature name='hypervisor'/></cpu></host>\
        <guest><os_type>hvm</os_type><arch name='i686'><domain type='qemu'/><domain type='kvm'/></arch></guest>\
        <guest><os_type>hvm</os_type><arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest>\
        </capabilities>";
    /// A real AMD machine's capabilities.
    const CAPS_AMD: &str =
        "<capabilities><host><cpu><arch>x86_64</arch><model>EPYC-Rome</model><vendor>AMD</vendor>\
        <feature name='svm'/><feature name='npt'/></cpu></host>\
        <guest><arch name='x86_64'><domain type='qemu'/><domain type='kvm'/></arch></guest></capabilities>";
    /// A host without KVM at all.
    const CAPS_TCG_ONLY: &str = "<capabilities><host><cpu><arch>x86_64</arch><vendor>Intel</vendor>\
        <feature name='vmx'/></cpu></host><guest><arch name='x86_64'><domain type='qemu'/></arch></guest>\
        <guest><arch name='i686'><domain type='kvm'/></arch></guest></capabilities>";
    /// Domain capabilities of an Intel KVM host: `host-model` requires `vmx`.
    const DOMCAPS_INTEL: &str = "<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path><domain>kvm</domain>\
        <arch>x86_64</arch><cpu><mode name='host-passthrough' supported='yes'/>\
        <mode name='host-model' supported='yes'><model fallback='forbid'>Skylake-Client-IBRS</model>\
        <vendor>Intel</vendor><feature policy='require' name='vmx'/><feature policy='disable' name='hle'/></mode>\
        <mode name='custom' supported='yes'><model usable='yes' vendor='Intel'>Skylake-Client</model></mode>\
        </cpu></domainCapabilities>";
    /// A test-driver-like host: no guest types QEMU would know.
    const CAPS_TEST: &str = "<capabilities><host><cpu><arch>i686</arch></cpu></host>\
        <guest><arch name='i686'><domain type='test'/></arch></guest></capabilities>";

    fn local(flags: &str, modules: &[(&str, &[(&str, &str)])]) -> LocalKvm {
        let dir = fake_root(flags, true, modules);
        KvmModules::at(dir.path(), "/nonexistent/modprobe").probe()
    }

    fn qemu(caps: &str, domcaps: Option<&str>, local: Option<LocalKvm>) -> Probe {
        probe_from("QEMU".into(), caps, domcaps, local).unwrap()
    }

    fn pvm() -> LocalKvm {
        local("hypervisor", &[("kvm", &[("halt_poll_ns", "200000")]), ("kvm_pvm", &[("force", "N")])])
    }

    /// Facts as `host_facts` would build them for QEMU 10.0.2 on libvirt 11.3.0.
    fn facts(p: &Probe) -> HostFacts {
        facts_from(p, "lab".into(), 2, 24 << 30, 11_003_000, 10_000_002)
    }

    #[test]
    fn local_uris_have_no_host() {
        assert!(is_local("qemu:///system"));
        assert!(is_local("test+unix:///default"));
        assert!(is_local("test:///default"));
        assert!(is_local("qemu+ssh://localhost/system"));
        assert!(!is_local("qemu+ssh://root@lab1/system"));
        assert!(is_local("qemu+unix:///system?socket=/run/libvirt/libvirt-sock"));
        assert!(!is_local("qemu+unix:///system?socket=/tmp/nestform-tunnel-Ab12/libvirt-sock"));
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
    fn kvm_offer_is_read_from_capabilities() {
        assert!(caps_offer_kvm(&Element::parse(CAPS_PVM).unwrap()));
        assert!(!caps_offer_kvm(&Element::parse(CAPS_TCG_ONLY).unwrap()), "i686 `kvm` does not count");
    }

    #[test]
    fn domain_capabilities_give_the_host_model() {
        let (kvm, model) = parse_domain_caps(&Element::parse(DOMCAPS_INTEL).unwrap());
        assert!(kvm);
        let model = model.unwrap();
        assert_eq!(model.model.as_deref(), Some("Skylake-Client-IBRS"));
        assert_eq!(model.vendor.as_deref(), Some("Intel"));
        assert_eq!(model.features, vec!["vmx"], "disabled features are not the CPU's");
        assert_eq!(model.virt_extension().as_deref(), Some("vmx"));
    }

    #[test]
    fn pvm_means_tcg_with_the_reason() {
        let d = decide(&qemu(CAPS_PVM, None, Some(pvm())));
        assert_eq!(d.domain_type, "qemu");
        assert_eq!(d.acceleration, Some("tcg"));
        assert_eq!(
            d.reason.unwrap(),
            "`/dev/kvm` belongs to PVM (module `kvm_pvm`), which cannot run a standard guest kernel, so guests \
             are emulated (TCG)"
        );
    }

    #[test]
    fn a_hardware_module_means_kvm() {
        let amd = local("svm", &[("kvm", &[]), ("kvm_amd", &[("nested", "1")])]);
        let d = decide(&qemu(CAPS_AMD, None, Some(amd)));
        assert_eq!((d.domain_type.as_str(), d.acceleration), ("kvm", Some("kvm")));
        assert_eq!(d.reason.as_deref(), Some("KVM with AMD-V"));
        let intel = local("vmx", &[("kvm_intel", &[("nested", "Y")])]);
        assert_eq!(decide(&qemu(CAPS_PVM, None, Some(intel))).reason.as_deref(), Some("KVM with VT-x"));
    }

    #[test]
    fn a_cpu_with_svm_but_no_module_says_what_to_load() {
        let d = decide(&qemu(CAPS_AMD, None, Some(local("svm", &[("kvm", &[])]))));
        assert_eq!(d.domain_type, "qemu");
        assert_eq!(
            d.reason.unwrap(),
            "the CPU has `svm` but module `kvm_amd` is not loaded (`modprobe kvm_amd`), so guests are emulated (TCG)"
        );
    }

    #[test]
    fn no_kvm_in_libvirt_means_tcg_even_with_a_module() {
        let intel = local("vmx", &[("kvm_intel", &[("nested", "Y")])]);
        for l in [Some(intel), None] {
            let d = decide(&qemu(CAPS_TCG_ONLY, None, l));
            assert_eq!((d.domain_type.as_str(), d.acceleration), ("qemu", Some("tcg")));
            assert_eq!(
                d.reason.unwrap(),
                "libvirt offers no `kvm` domain type on this host, so guests are emulated (TCG)"
            );
        }
    }

    #[test]
    fn remote_hosts_are_judged_by_libvirt_alone() {
        // A local PVM machine's `/sys` must not decide for a remote AMD host.
        let d = decide(&qemu(CAPS_AMD, None, None));
        assert_eq!((d.domain_type.as_str(), d.reason.as_deref()), ("kvm", Some("KVM with AMD-V")));
        let d = decide(&qemu(CAPS_PVM, Some(DOMCAPS_INTEL), None));
        assert_eq!(d.reason.as_deref(), Some("KVM with VT-x"), "the host-model CPU shows `vmx`");
        let d = decide(&qemu(CAPS_PVM, None, None));
        assert_eq!(d.reason.as_deref(), Some("KVM (libvirt offers the `kvm` domain type)"));
    }

    #[test]
    fn other_drivers_keep_their_own_type() {
        let p = probe_from("Test".into(), CAPS_TEST, None, None).unwrap();
        assert_eq!(decide(&p), Decision { domain_type: "test".into(), acceleration: None, reason: None });
        let f = facts(&p);
        assert_eq!((f.acceleration, f.nesting, f.qemu_version, f.kvm_module), (None, None, None, None));
        assert_eq!(f.hypervisor, "Test 10.0.2");
    }

    #[test]
    fn acceleration_always_matches_the_domain_type() {
        let amd = || local("svm", &[("kvm_amd", &[("nested", "1")])]);
        let probes = [
            qemu(CAPS_PVM, None, Some(pvm())),
            qemu(CAPS_AMD, None, Some(amd())),
            qemu(CAPS_AMD, None, Some(local("svm", &[]))),
            qemu(CAPS_TCG_ONLY, None, Some(amd())),
            qemu(CAPS_AMD, Some(DOMCAPS_INTEL), None),
            qemu(CAPS_TCG_ONLY, None, None),
        ];
        for p in &probes {
            let (d, f) = (decide(p), facts(p));
            let expected = if d.domain_type == "kvm" { "kvm" } else { "tcg" };
            assert_eq!(f.acceleration.as_deref(), Some(expected), "{p:?}");
            assert!(f.acceleration_reason.is_some(), "{p:?}");
        }
    }

    #[test]
    fn facts_of_a_pvm_host() {
        let f = facts(&qemu(CAPS_PVM, None, Some(pvm())));
        assert_eq!(f.hypervisor, "QEMU 10.0.2");
        assert_eq!(f.qemu_version.as_deref(), Some("10.0.2"));
        assert_eq!(f.libvirt_version, "11.3.0");
        assert_eq!(f.cpu_vendor.as_deref(), Some("AuthenticAMD"));
        assert_eq!(f.acceleration.as_deref(), Some("tcg"));
        assert_eq!(f.virt_extension, None, "neither cpuinfo nor libvirt shows `svm`");
        assert_eq!(f.kvm_module, None, "`kvm_pvm` is not a vendor module");
        assert!(f.kvm_parameters.is_empty());
        assert_eq!(f.nesting, Some(true), "TCG emulates SVM, so guests can nest");
    }

    #[test]
    fn facts_of_an_intel_host_with_nesting_off() {
        let intel = local("vmx", &[("kvm", &[]), ("kvm_intel", &[("nested", "N"), ("ept", "Y")])]);
        let f =
            facts(&qemu(CAPS_TCG_ONLY.replace("i686", "x86_64").as_str(), Some(DOMCAPS_INTEL), Some(intel)));
        assert_eq!(f.acceleration.as_deref(), Some("kvm"));
        assert_eq!(f.acceleration_reason.as_deref(), Some("KVM with VT-x"));
        assert_eq!(f.virt_extension.as_deref(), Some("vmx"));
        assert_eq!(f.cpu_vendor.as_deref(), Some("GenuineIntel"));
        assert_eq!(f.kvm_module.as_deref(), Some("kvm_intel"));
        let params: Vec<_> = f.kvm_parameters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(params, ["ept=Y", "nested=N"]);
        assert_eq!(f.nesting, Some(false));
    }

    #[test]
    fn tcg_guests_get_epyc_with_svm_on_any_host() {
        for vendor in ["AuthenticAMD", "GenuineIntel"] {
            let f = HostFacts {
                cpu_vendor: Some(vendor.into()),
                acceleration: Some("tcg".into()),
                ..Default::default()
            };
            assert_eq!(tcg_cpu_for(&f), ("EPYC".to_string(), vec!["svm".to_string()]), "{vendor}");
        }
    }
}
