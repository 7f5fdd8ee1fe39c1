//! Kernel modules of a lab guest: which to load, in which order, and their bytes.
//!
//! [`ModuleIndex`] reads `modules.dep` (made by `depmod`) and `modules.builtin` of one kernel. Given the
//! wanted module names, [`ModuleIndex::load_order`] returns every module to `insmod`, each after the ones
//! it needs. This is what `modprobe` does; busybox's `modprobe` would need the whole modules tree in the
//! initramfs, so nestform computes the order once on the host and the init script only runs `insmod`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::LabError;

/// Modules a lab guest cannot boot without: the 9p root share, the overlay on top of it, the PCI
/// transport of every virtio device and the agent's virtio-serial port. Missing ones are an error
/// (unless built in).
pub const REQUIRED_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_console"];

/// Modules loaded when the kernel has them: networking, disks, entropy, and what a guest needs to be a
/// hypervisor itself (KVM for either vendor, tap devices, bridges, vhost). The init script loads only
/// the KVM module of the CPU's vendor (`svm` or `vmx` in `/proc/cpuinfo`).
pub const OPTIONAL_MODULES: &[&str] = &[
    "virtio_net",
    "virtio_blk",
    "virtio_rng",
    "irqbypass",
    "kvm",
    "ccp",
    "kvm_amd",
    "kvm_intel",
    "tun",
    "bridge",
    "vhost_net",
    // NAT networks of a promoted guest's libvirtd: iptables (nft backend) and its matches and targets.
    // `libcrc32c` (which conntrack and nf_tables need) asks the crypto API for `crc32c` when it loads:
    // a soft dependency that modules.dep does not list, so it comes first by name.
    "crc32c_generic",
    "crc32c_intel",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nft_ct",
    "nft_masq",
    "nft_reject_inet",
    "nf_nat",
    "nf_conntrack",
    "x_tables",
    "xt_conntrack",
    "xt_MASQUERADE",
    "xt_CHECKSUM",
    "xt_comment",
    "xt_addrtype",
    "xt_tcpudp",
    "xt_mark",
    "ip_tables",
    "iptable_filter",
    "iptable_nat",
    "iptable_mangle",
    "ip6_tables",
    "ip6table_filter",
    "ip6table_nat",
    "ip6table_mangle",
    "ipt_REJECT",
    "ip6t_REJECT",
    "xt_nat",
    "xt_state",
    "br_netfilter",
];

/// A module as the kernel names it: `kvm-amd.ko.xz` and `kvm_amd` are both `kvm_amd`.
pub fn module_name(file_or_name: &str) -> String {
    let base = file_or_name.rsplit('/').next().unwrap_or(file_or_name);
    let base =
        [".ko.xz", ".ko.zst", ".ko.gz", ".ko"].iter().find_map(|s| base.strip_suffix(s)).unwrap_or(base);
    base.replace('-', "_")
}

/// One kernel's `modules.dep` and `modules.builtin`.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    dir: PathBuf,
    /// Module name to (path relative to `dir`, names of the modules it needs).
    modules: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
}

/// A module to load: its name and its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleFile {
    /// The kernel's name of the module (`kvm_amd`).
    pub name: String,
    /// Its file, possibly compressed.
    pub path: PathBuf,
}

/// What [`ModuleIndex::load_order`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOrder {
    /// Every module to load, each after the modules it needs.
    pub modules: Vec<ModuleFile>,
    /// Wanted modules the kernel has built in: nothing to load.
    pub builtin: Vec<String>,
    /// Optional modules this kernel does not have.
    pub absent: Vec<String>,
}

impl ModuleIndex {
    /// Reads the index of the modules directory `dir` (`.../lib/modules/VERSION`).
    pub fn read(dir: &Path) -> Result<ModuleIndex, LabError> {
        let dep_path = dir.join("modules.dep");
        let dep = std::fs::read_to_string(&dep_path).map_err(|e| LabError::io(&dep_path, e))?;
        // A kernel without built-in modules may have no modules.builtin at all.
        let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        Self::parse(dir, &dep, &builtin).map_err(|(line, message)| LabError::ModulesDep {
            path: dep_path,
            line,
            message,
        })
    }

    /// Parses the two files' text; an error is (line number, message).
    pub fn parse(dir: &Path, dep: &str, builtin: &str) -> Result<ModuleIndex, (usize, String)> {
        let mut modules = BTreeMap::new();
        for (n, line) in dep.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (file, needs) = line.split_once(':').ok_or_else(|| (n + 1, format!("no `:` in `{line}`")))?;
            let needs = needs.split_whitespace().map(module_name).collect();
            modules.insert(module_name(file), (file.trim().to_string(), needs));
        }
        let builtin = builtin.lines().filter(|l| !l.trim().is_empty()).map(module_name).collect();
        Ok(ModuleIndex { dir: dir.to_path_buf(), modules, builtin })
    }

    /// The modules to load for `required` and `optional`, dependencies first, each once. A required
    /// module that is neither a module nor built in is an error; an optional one is listed in `absent`.
    pub fn load_order(&self, required: &[&str], optional: &[&str]) -> Result<LoadOrder, LabError> {
        let mut order = LoadOrder::default();
        let mut done = BTreeSet::new();
        let wanted = required.iter().map(|m| (m, true)).chain(optional.iter().map(|m| (m, false)));
        for (wanted, is_required) in wanted {
            let name = module_name(wanted);
            if self.builtin.contains(&name) {
                order.builtin.push(name);
            } else if self.modules.contains_key(&name) {
                self.visit(&name, &mut Vec::new(), &mut done, &mut order.modules)?;
            } else if is_required {
                return Err(LabError::ModuleMissing { name, dir: self.dir.clone() });
            } else {
                order.absent.push(name);
            }
        }
        Ok(order)
    }

    /// Depth first: a module's needs go out before it. `path` is the chain being visited, to name a
    /// cycle (which `depmod` never writes, but a hand-edited file could).
    fn visit(
        &self,
        name: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<ModuleFile>,
    ) -> Result<(), LabError> {
        if done.contains(name) || self.builtin.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            path.push(name.to_string());
            return Err(LabError::ModuleCycle { chain: path.join(" -> ") });
        }
        let (file, needs) = self
            .modules
            .get(name)
            .ok_or_else(|| LabError::ModuleMissing { name: name.to_string(), dir: self.dir.clone() })?;
        path.push(name.to_string());
        for need in needs {
            self.visit(need, path, done, out)?;
        }
        path.pop();
        done.insert(name.to_string());
        out.push(ModuleFile { name: name.to_string(), path: self.dir.join(file) });
        Ok(())
    }
}

/// The module's ELF object, uncompressed: `.ko.xz`, `.ko.zst` and `.ko.gz` are unpacked here because
/// busybox's `insmod` may not read them.
pub fn read_module(path: &Path) -> Result<Vec<u8>, LabError> {
    let raw = std::fs::read(path).map_err(|e| LabError::io(path, e))?;
    let name = path.to_string_lossy();
    let bad = |message: String| LabError::Decompress { path: path.to_path_buf(), message };
    let mut out = Vec::new();
    if name.ends_with(".xz") {
        lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out).map_err(|e| bad(e.to_string()))?;
    } else if name.ends_with(".zst") {
        let mut decoder =
            ruzstd::decoding::StreamingDecoder::new(raw.as_slice()).map_err(|e| bad(e.to_string()))?;
        decoder.read_to_end(&mut out).map_err(|e| bad(e.to_string()))?;
    } else if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out).map_err(|e| bad(e.to_string()))?;
    } else {
        return Ok(raw);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shortened copy of Debian 6.1's own `modules.dep` (the order of each line's needs is depmod's).
    const DEP: &str = "\
kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko
kernel/arch/x86/kvm/kvm-amd.ko: kernel/drivers/crypto/ccp/ccp.ko kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko
kernel/fs/overlayfs/overlay.ko:
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/crypto/ccp/ccp.ko:
kernel/virt/lib/irqbypass.ko:
kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
";

    fn names(order: &LoadOrder) -> Vec<&str> {
        order.modules.iter().map(|m| m.name.as_str()).collect()
    }

    fn position(order: &LoadOrder, name: &str) -> usize {
        names(order).iter().position(|n| *n == name).unwrap_or_else(|| panic!("`{name}` not loaded"))
    }

    #[test]
    fn every_module_comes_after_what_it_needs() {
        let index = ModuleIndex::parse(Path::new("/m"), DEP, "kernel/net/9p/9pnet.ko\n").unwrap();
        let order = index.load_order(REQUIRED_MODULES, OPTIONAL_MODULES).unwrap();
        for (file, needs) in index.modules.values() {
            let name = module_name(file);
            if index.builtin.contains(&name) || !names(&order).contains(&name.as_str()) {
                continue;
            }
            for need in needs.iter().filter(|n| !index.builtin.contains(*n)) {
                assert!(position(&order, need) < position(&order, &name), "`{need}` after `{name}`");
            }
        }
        // fscache needs netfs although depmod listed netfs last for 9p.
        assert!(position(&order, "netfs") < position(&order, "fscache"));
        let unique: BTreeSet<_> = names(&order).into_iter().collect();
        assert_eq!(unique.len(), order.modules.len(), "loaded twice: {:?}", names(&order));
        assert!(!names(&order).contains(&"9pnet"), "built in, nothing to load");
        // The fixture has none of the netfilter modules either: all of them are reported absent.
        let netfilter =
            &OPTIONAL_MODULES[OPTIONAL_MODULES.iter().position(|m| *m == "crc32c_generic").unwrap()..];
        let mut absent = vec!["virtio_net", "virtio_blk", "kvm_intel", "tun", "bridge", "vhost_net"];
        absent.extend_from_slice(netfilter);
        assert_eq!(order.absent, absent);
        assert!(names(&order).contains(&"virtio_rng") && names(&order).contains(&"kvm_amd"));
        assert_eq!(
            order.modules[position(&order, "virtio_rng")].path,
            Path::new("/m/kernel/drivers/char/hw_random/virtio-rng.ko.xz")
        );
    }

    #[test]
    fn builtin_wanted_modules_are_reported_not_loaded() {
        let index = ModuleIndex::parse(Path::new("/m"), DEP, "kernel/fs/overlayfs/overlay.ko\n").unwrap();
        let order = index.load_order(&["overlay"], &[]).unwrap();
        assert!(order.modules.is_empty());
        assert_eq!(order.builtin, ["overlay"]);
    }

    #[test]
    fn a_missing_required_module_is_an_error() {
        let index = ModuleIndex::parse(Path::new("/m"), "kernel/fs/overlayfs/overlay.ko:\n", "").unwrap();
        let err = index.load_order(&["overlay", "9p"], &[]).unwrap_err();
        assert!(matches!(&err, LabError::ModuleMissing { name, .. } if name == "9p"), "{err}");
    }

    #[test]
    fn cycles_and_bad_lines_are_errors() {
        let dep = "a.ko: b.ko\nb.ko: a.ko\n";
        let index = ModuleIndex::parse(Path::new("/m"), dep, "").unwrap();
        let err = index.load_order(&["a"], &[]).unwrap_err();
        assert_eq!(err.to_string(), "kernel modules need each other in a cycle: `a -> b -> a`");
        assert_eq!(ModuleIndex::parse(Path::new("/m"), "x.ko\n", "").unwrap_err().0, 1);
    }

    #[test]
    fn names_as_the_kernel_does() {
        assert_eq!(module_name("kernel/arch/x86/kvm/kvm-amd.ko.zst"), "kvm_amd");
        assert_eq!(module_name("9pnet_virtio"), "9pnet_virtio");
        assert_eq!(module_name("kernel/fs/9p/9p.ko"), "9p");
    }

    #[test]
    fn compressed_modules_are_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"\x7fELF not really a module".repeat(100);
        let gz = dir.path().join("m.ko.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &body).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_module(&gz).unwrap(), body);
        let xz = dir.path().join("m.ko.xz");
        let mut packed = Vec::new();
        lzma_rs::xz_compress(&mut body.as_slice(), &mut packed).unwrap();
        std::fs::write(&xz, packed).unwrap();
        assert_eq!(read_module(&xz).unwrap(), body);
        let zst = dir.path().join("m.ko.zst");
        let packed =
            ruzstd::encoding::compress_to_vec(body.as_slice(), ruzstd::encoding::CompressionLevel::Fastest);
        std::fs::write(&zst, packed).unwrap();
        assert_eq!(read_module(&zst).unwrap(), body);
        let plain = dir.path().join("m.ko");
        std::fs::write(&plain, &body).unwrap();
        assert_eq!(read_module(&plain).unwrap(), body);
        let bad = dir.path().join("bad.ko.zst");
        std::fs::write(&bad, b"not zstd").unwrap();
        assert!(matches!(read_module(&bad), Err(LabError::Decompress { .. })));
    }
}
