//! The resolved, typed form of each resource block, after the configuration has been evaluated.
//!
//! These are what the engine plans with and what it stores (serialized, plus computed attributes) in
//! state. Every field is known: references to other resources are resolved to their [`ResourceAddr`],
//! defaults are filled in, sizes are parsed. The JSON Schemas in `schemas/` are generated from them, so
//! the doc comments here are the language reference for each attribute.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ByteSize, ResourceAddr};

/// A typed resource body: one variant per block type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResourceSpec {
    KvmHost(KvmHostSpec),
    NatNetwork(NatNetworkSpec),
    NestedGuest(NestedGuestSpec),
    Benchmark(BenchmarkSpec),
}

impl ResourceSpec {
    pub fn resource_type(&self) -> crate::ResourceType {
        match self {
            ResourceSpec::KvmHost(_) => crate::ResourceType::KvmHost,
            ResourceSpec::NatNetwork(_) => crate::ResourceType::NatNetwork,
            ResourceSpec::NestedGuest(_) => crate::ResourceType::NestedGuest,
            ResourceSpec::Benchmark(_) => crate::ResourceType::Benchmark,
        }
    }

    /// The spec's attributes as plans and state hold them: its own fields (absent optional ones left
    /// out), without the `type` tag a whole serialized `ResourceSpec` carries. The one place a spec
    /// becomes attributes, so that the planner's drift detection, the state apply records and the
    /// configuration's references all read the same thing.
    pub fn attributes(&self) -> serde_json::Map<String, serde_json::Value> {
        let v = match self {
            ResourceSpec::KvmHost(s) => serde_json::to_value(s),
            ResourceSpec::NatNetwork(s) => serde_json::to_value(s),
            ResourceSpec::NestedGuest(s) => serde_json::to_value(s),
            ResourceSpec::Benchmark(s) => serde_json::to_value(s),
        };
        match v {
            Ok(serde_json::Value::Object(m)) => m,
            // Every spec is a struct of plain data; anything else is a bug in a spec type.
            other => unreachable!("a spec serializes to an object, got {other:?}"),
        }
    }

    /// The `kvm_host` this resource lives on, for networks and guests.
    pub fn host(&self) -> Option<&ResourceAddr> {
        match self {
            ResourceSpec::NatNetwork(n) => Some(&n.host),
            ResourceSpec::NestedGuest(g) => Some(&g.host),
            ResourceSpec::KvmHost(_) | ResourceSpec::Benchmark(_) => None,
        }
    }
}

impl NestedGuestSpec {
    /// Whether nestform installs the guest itself as an instant lab guest (`install = lab { ... }`):
    /// its kernel booted directly, its parent's root shared, nestform's agent inside.
    pub fn is_lab(&self) -> bool {
        matches!(self.install, Some(InstallSpec::Lab(_)))
    }

    /// Whether the guest runs nestform's agent once it is up: a lab guest that is configured running.
    pub fn runs_agent(&self) -> bool {
        self.running && self.is_lab()
    }
}

/// Whether a guest's attributes, as a plan or state records them, are a lab guest's
/// ([`NestedGuestSpec::is_lab`] of what was configured then).
pub fn is_lab_attributes(attributes: &serde_json::Value) -> bool {
    attributes.pointer("/install/lab").is_some()
}

/// `kvm_host "NAME"`: a hypervisor nestform manages guests on.
///
/// Exactly one of `uri` (a hypervisor that already exists, level 0) and `guest` (a `nested_guest` that
/// this block promotes to a hypervisor, one level below its own host) is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvmHostSpec {
    /// Any libvirt URI: `qemu:///system`, `qemu+ssh://root@h1/system`, `test:///default`,
    /// `test+unix:///default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The guest promoted to a hypervisor, such as `nested_guest.guest1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<ResourceAddr>,
    /// Nesting must be available on this host: guests placed on it can run hypervisors themselves.
    #[serde(default)]
    pub nested: bool,
    /// Options for the kvm vendor module (`kvm_intel` or `kvm_amd`), such as
    /// `{ nested = 1, enable_shadow_vmcs = 1, enable_apicv = 1, ept = 1 }`. Booleans are written as 1/0.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kvm_module_options: BTreeMap<String, String>,
}

/// `nat_network "NAME"`: a libvirt network with NAT forwarding on one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatNetworkSpec {
    /// The `kvm_host` the network lives on.
    pub host: ResourceAddr,
    /// The libvirt network name; defaults to the block label (with the instance key appended).
    pub name: String,
    /// The IPv4 network, such as `192.168.100.0/24`. The host side takes its first address.
    #[schemars(with = "String")]
    pub cidr: Ipv4Net,
    /// The DHCP range handed to guests; defaults to the second address up to the last usable one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpRange>,
    /// The DNS domain of the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// A DHCP range: `dhcp { start = "...", end = "..." }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DhcpRange {
    pub start: std::net::Ipv4Addr,
    pub end: std::net::Ipv4Addr,
}

/// `nested_guest "NAME"`: a virtual machine on a `kvm_host`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NestedGuestSpec {
    /// The `kvm_host` the guest runs on.
    pub host: ResourceAddr,
    /// The libvirt domain name; defaults to the block label (with the instance key appended).
    pub name: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory, such as `"4GiB"`.
    pub memory: ByteSize,
    /// `"host-passthrough"`, `"host-model"`, or a CPU model name such as `"EPYC"`.
    #[serde(default = "default_cpu")]
    pub cpu: String,
    /// Disks, in the order written: `disk "NAME" { ... }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskSpec>,
    /// Network interfaces, in the order written: `network "NAME" { nat_network = ... }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<InterfaceSpec>,
    /// Whether the guest should be running.
    #[serde(default = "default_true")]
    pub running: bool,
    /// How the guest's operating system gets there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallSpec>,
}

pub fn default_cpu() -> String {
    "host-passthrough".to_string()
}

fn default_true() -> bool {
    true
}

/// `disk "NAME" { size, format, preallocation, cache, bus }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// The disk's label in configuration; the volume is named `<guest>-<name>`.
    pub name: String,
    pub size: ByteSize,
    #[serde(default)]
    pub format: DiskFormat,
    #[serde(default)]
    pub preallocation: Preallocation,
    #[serde(default)]
    pub cache: DiskCache,
    #[serde(default)]
    pub bus: DiskBus,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiskFormat {
    #[default]
    Qcow2,
    Raw,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Preallocation {
    #[default]
    Off,
    Metadata,
    Falloc,
    Full,
}

/// The QEMU cache mode. `unsafe` ignores flushes: fast, and data reaches the disk only on a clean
/// shutdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiskCache {
    #[default]
    Default,
    None,
    Writethrough,
    Writeback,
    Directsync,
    Unsafe,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiskBus {
    #[default]
    Virtio,
    Sata,
    Scsi,
    Ide,
}

macro_rules! enum_words {
    ($($ty:ident { $($v:ident = $s:literal),* $(,)? })*) => {$(
        impl $ty {
            /// The word used in configuration and in libvirt XML.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$v => $s),* }
            }
            /// Every accepted word, for "must be one of" messages.
            pub const WORDS: &'static [&'static str] = &[$($s),*];
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($ty::$v),)* _ => None }
            }
        }
    )*};
}

enum_words! {
    DiskFormat { Qcow2 = "qcow2", Raw = "raw" }
    Preallocation { Off = "off", Metadata = "metadata", Falloc = "falloc", Full = "full" }
    DiskCache {
        Default = "default", None = "none", Writethrough = "writethrough", Writeback = "writeback",
        Directsync = "directsync", Unsafe = "unsafe",
    }
    DiskBus { Virtio = "virtio", Sata = "sata", Scsi = "scsi", Ide = "ide" }
}

/// `network "NAME" { nat_network = nat_network.X }`: one interface of a guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSpec {
    /// The interface's label in configuration.
    pub name: String,
    /// The `nat_network` the interface is plugged into; it must be on the guest's host.
    pub nat_network: ResourceAddr,
    /// A fixed MAC address; libvirt picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// How a guest's operating system gets there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum InstallSpec {
    /// `lab { kernel, modules }`: an instant guest that boots a kernel directly and shares its parent's
    /// root filesystem read-only under a tmpfs overlay.
    Lab(LabInstall),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabInstall {
    /// Path of the kernel image to boot; defaults to the host's running kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Directory holding that kernel's modules (`.../lib/modules/VERSION`); defaults to the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<String>,
}

/// `benchmark "NAME"`: a measurement taken on each target, with results stored in state. The
/// configuration fills each kind's defaults (the article's), so a plan shows what will run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkSpec {
    pub kind: BenchmarkKind,
    /// Where to measure: `kvm_host` and `nested_guest` addresses.
    pub targets: Vec<ResourceAddr>,
    /// `sha256`: the bytes hashed; `network`: the bytes served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<ByteSize>,
    /// `block_read`: how much of the disk each read covers, one series per size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sizes: Vec<ByteSize>,
    /// `block_read`: whose caches are dropped before the first read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold: Option<ColdCache>,
    /// `shell_loop`: the loop's iterations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u64>,
    /// Measured runs on each target; results keep every one.
    #[serde(default = "default_repeat")]
    pub repeat: u32,
    /// Runs before the measured ones, whose figures are discarded.
    #[serde(default)]
    pub warmup: u32,
}

fn default_repeat() -> u32 {
    1
}

impl BenchmarkSpec {
    /// The loop's iterations when none are written.
    pub const DEFAULT_ITERATIONS: u64 = 100_000;

    /// A benchmark of `kind` on `targets` with the article's settings: a 2 GB file hashed, a 2.5 GB
    /// file served, disk reads of 1 to 32 GB with the target's caches dropped first, three measured
    /// runs after one warm-up (boot: one, when the guest was created; block reads: the first read
    /// is the cold one).
    pub fn article(kind: BenchmarkKind, targets: Vec<ResourceAddr>) -> Self {
        use BenchmarkKind::*;
        BenchmarkSpec {
            kind,
            targets,
            size: match kind {
                Sha256 => Some(ByteSize::gib(2)),
                Network => Some(ByteSize::mib(2560)),
                _ => None,
            },
            sizes: match kind {
                BlockRead => [1, 2, 4, 8, 16, 32].map(ByteSize::gib).to_vec(),
                _ => vec![],
            },
            cold: (kind == BlockRead).then_some(ColdCache::Target),
            iterations: (kind == ShellLoop).then_some(Self::DEFAULT_ITERATIONS),
            repeat: if kind == Boot { 1 } else { 3 },
            warmup: u32::from(matches!(kind, Sha256 | ShellLoop | Network)),
        }
    }
}

/// Whose caches a `block_read` drops before its first read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColdCache {
    /// The target's own.
    Target,
    /// The target's and every level's below it on its path: the article saw lower levels' caches
    /// make guests read faster than their hypervisor.
    Path,
}

enum_words! {
    ColdCache { Target = "target", Path = "path" }
}

/// The measurements of the nested-KVM article.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BenchmarkKind {
    /// Time from define to a ready agent.
    Boot,
    /// Sequential read of a disk with cold caches (dropped first), then hot.
    BlockRead,
    /// sha256 over `size` bytes.
    Sha256,
    /// A shell loop of `iterations` iterations.
    ShellLoop,
    /// TCP throughput between the target and its host.
    Network,
}

enum_words! {
    BenchmarkKind {
        Boot = "boot", BlockRead = "block_read", Sha256 = "sha256", ShellLoop = "shell_loop",
        Network = "network",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_serializes_with_readable_sizes() {
        let g = NestedGuestSpec {
            host: "kvm_host.l0".parse().unwrap(),
            name: "g1".into(),
            vcpus: 2,
            memory: ByteSize::gib(4),
            cpu: default_cpu(),
            disks: vec![DiskSpec {
                name: "root".into(),
                size: ByteSize::gib(36),
                format: DiskFormat::Qcow2,
                preallocation: Preallocation::Metadata,
                cache: DiskCache::Unsafe,
                bus: DiskBus::Virtio,
            }],
            networks: vec![],
            running: true,
            install: Some(InstallSpec::Lab(LabInstall::default())),
        };
        let v = serde_json::to_value(&g).unwrap();
        assert_eq!(v["memory"], "4GiB");
        assert_eq!(v["disks"][0]["cache"], "unsafe");
        assert_eq!(v["install"], serde_json::json!({ "lab": {} }));
        let back: NestedGuestSpec = serde_json::from_value(v).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn words_round_trip() {
        for w in DiskCache::WORDS {
            assert_eq!(DiskCache::parse(w).unwrap().as_str(), *w);
        }
    }
}
