//! `facts`: what the guest is, read from `/proc`, `/sys` and `getifaddrs`.
//!
//! Each fact that cannot be read falls back to an empty or zero value instead of failing the whole
//! request: facts are for planning and display, and a partial answer beats none.

use std::fs::{self, OpenOptions};
use std::path::Path;

use crate::proto::{Facts, KvmNested, NetAddress};

/// KVM vendor modules whose `nested` parameter says whether guests may run their own guests.
const KVM_MODULES: &[&str] = &["kvm_intel", "kvm_amd", "kvm_pvm"];

/// Reads the facts of the machine the agent runs on.
pub fn gather() -> Facts {
    let read = |path: &str| fs::read_to_string(path).unwrap_or_default().trim().to_string();
    let kvm = Path::new("/dev/kvm");
    Facts {
        hostname: read("/proc/sys/kernel/hostname"),
        kernel_release: read("/proc/sys/kernel/osrelease"),
        cpu_count: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
        memory_bytes: parse_mem_total(&read("/proc/meminfo")).unwrap_or(0),
        nesting_level: parse_nesting_level(&read("/proc/cmdline")),
        kvm_present: kvm.exists(),
        kvm_openable: OpenOptions::new().read(true).write(true).open(kvm).is_ok(),
        kvm_nested: KVM_MODULES.iter().find_map(|module| {
            let value = fs::read_to_string(format!("/sys/module/{module}/parameters/nested")).ok()?;
            Some(KvmNested { module: module.to_string(), enabled: parse_nested_param(&value) })
        }),
        addresses: addresses(),
    }
}

fn addresses() -> Vec<NetAddress> {
    let mut out: Vec<NetAddress> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|iface| {
            let prefix_len = match &iface.addr {
                if_addrs::IfAddr::V4(v4) => v4.prefixlen,
                if_addrs::IfAddr::V6(v6) => v6.prefixlen,
            };
            NetAddress { address: iface.ip(), interface: iface.name, prefix_len }
        })
        .collect();
    out.sort_by(|a, b| (&a.interface, a.address).cmp(&(&b.interface, b.address)));
    out
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub(crate) fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    let unit = match words.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    Some(value * unit)
}

/// `nestform.level=N` from a kernel command line; 0 when absent or not a number.
pub(crate) fn parse_nesting_level(cmdline: &str) -> u32 {
    // The last occurrence wins, as the kernel treats repeated parameters.
    cmdline
        .split_whitespace()
        .rev()
        .find_map(|word| word.strip_prefix("nestform.level="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A module's boolean parameter as the kernel prints it: `Y`/`N` or `1`/`0`.
pub(crate) fn parse_nested_param(value: &str) -> bool {
    matches!(value.trim(), "Y" | "y" | "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_converted_to_bytes() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:  100 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(24_576_000 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB"), None);
    }

    #[test]
    fn nesting_level_comes_from_the_command_line() {
        assert_eq!(parse_nesting_level("console=ttyS0 nestform.level=2 quiet"), 2);
        assert_eq!(parse_nesting_level("console=ttyS0 quiet"), 0);
        assert_eq!(parse_nesting_level("nestform.level=x"), 0);
        assert_eq!(parse_nesting_level("nestform.level=1 nestform.level=3"), 3);
    }

    #[test]
    fn nested_parameter_accepts_both_spellings() {
        assert!(parse_nested_param("Y\n"));
        assert!(parse_nested_param("1"));
        assert!(!parse_nested_param("N"));
        assert!(!parse_nested_param("0\n"));
    }

    #[test]
    fn gather_reads_this_machine() {
        let facts = gather();
        assert!(!facts.kernel_release.is_empty());
        assert!(facts.cpu_count >= 1);
        assert!(facts.memory_bytes > 0);
        assert!(facts.addresses.iter().any(|a| a.address.is_loopback()));
    }
}
