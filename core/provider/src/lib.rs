//! The provider traits: how the engine drives hypervisors and guests without knowing which they are.
//!
//! ```text
//!                         ┌─▶ dyn Provider ──connect(uri)──▶ dyn Hypervisor   networks, guests, snapshots
//!   nestform-engine ──▶ Backends
//!                         ├─▶ dyn Guests ──agent / promote──▶ dyn GuestAgent, dyn Hypervisor
//!                         ├─▶ dyn BootAssets ──boot(spec)───▶ BootRequest
//!                         └─▶ dyn Benchmarks ──run(benchmark, target agent)──▶ measured runs
//!
//!   implemented by: nestform-provider-libvirt (Provider, over the virt crate)
//!                   nestform-provider-promoted (Guests: agents, promoted hosts as Hypervisors)
//!                   nestform-lab-boot (BootAssets of lab guests)
//!                   nestform-bench (Benchmarks: the article's measurements, the controller as a target)
//!                   nestform-provider-memory (all three, the fake)
//! ```
//!
//! A [`Provider`] opens [`Hypervisor`] connections. A hypervisor is one libvirt host at any nesting
//! level: level 0 is opened by URI; a promoted guest's libvirt is what [`Guests::promote`] returns.
//! Every method is blocking: libvirt's API is, and the engine calls them from `spawn_blocking`, so
//! implementations need no async runtime. The CLI puts one of each into [`Backends`]; the engine names
//! none of them.
//!
//! The requests carry fully resolved values (libvirt names, sizes in bytes); the responses carry what the
//! hypervisor reports now, which the planner compares with the configuration to find drift.
//!
//! [`conformance`] is the suite every implementation must pass, written once.

pub mod bench;
pub mod conformance;
pub mod guest;
pub mod progress;

pub use bench::{BenchRun, Benchmarks, Measured};
pub use guest::{
    error_chain, AgentError, AgentWait, BootAssets, BoxError, CommandOutput, CommandStatus, GaveUp,
    GuestAddress, GuestAgent, GuestCommand, GuestFacts, GuestRef, Guests, OutputStream, PromoteRequest,
    PromotedNow,
};

use std::sync::Arc;

use nestform_types::{DiskBus, DiskCache, DiskFormat, Owner, Preallocation};
use serde::{Deserialize, Serialize};

/// Everything the engine reaches hosts and guests through. The CLI puts it together (libvirt for
/// URIs, promoted hosts and agents for guests, lab boot assets); tests give the memory provider's.
#[derive(Clone)]
pub struct Backends {
    /// Hosts by URI: level 0, and the tunnels into promoted guests.
    pub provider: Arc<dyn Provider>,
    /// Guests' agents, and guests made hosts.
    pub guests: Arc<dyn Guests>,
    /// What lab guests boot.
    pub boot: Arc<dyn BootAssets>,
    /// The runners of the benchmark kinds.
    pub bench: Arc<dyn Benchmarks>,
}

/// Opens connections to hypervisors.
pub trait Provider: Send + Sync {
    /// Opens the hypervisor at a libvirt URI (`qemu:///system`, `test+unix:///default`, ...).
    fn connect(&self, uri: &str) -> Result<Arc<dyn Hypervisor>, ProviderError>;
}

/// One hypervisor: a libvirt connection at some nesting level.
///
/// Objects are looked up by the provider's id (the libvirt UUID) that `create_*` returned and the
/// engine stored in state. Every object created carries the given [`Owner`] in its metadata.
pub trait Hypervisor: Send + Sync {
    /// The URI this connection was opened with.
    fn uri(&self) -> &str;

    /// What the host is: size, CPU vendor, nesting support, versions.
    fn facts(&self) -> Result<HostFacts, ProviderError>;

    /// Every network and domain on this host whose metadata names nestform as owner. An object whose
    /// definition cannot be read is skipped when it is not nestform's and listed as unreadable when
    /// it carries nestform's metadata, so one odd object never hides the rest.
    fn list_owned(&self) -> Result<Owned, ProviderError>;

    fn read_network(&self, id: &str) -> Result<Option<NetworkStatus>, ProviderError>;
    /// Defines the network, starts it and marks it autostart.
    fn create_network(&self, req: &NetworkRequest, owner: &Owner) -> Result<NetworkStatus, ProviderError>;
    /// Stops and undefines the network. Deleting a network that does not exist is not an error.
    fn delete_network(&self, id: &str) -> Result<(), ProviderError>;

    fn read_guest(&self, id: &str) -> Result<Option<GuestStatus>, ProviderError>;
    /// Creates the guest's volumes (in nestform's storage pool, created on first use), defines the domain
    /// and starts it when `req.running`.
    fn create_guest(&self, req: &GuestRequest, owner: &Owner) -> Result<GuestStatus, ProviderError>;
    /// Redefines the domain with `req` (same UUID). Changes to a running domain's definition take effect
    /// at its next start; the engine restarts it when the plan says so. Volumes that `req` adds are
    /// created; volumes it no longer names are deleted; a grown disk is resized.
    fn update_guest(&self, id: &str, req: &GuestRequest, owner: &Owner)
        -> Result<GuestStatus, ProviderError>;
    /// Starts a defined guest; starting a running guest is not an error.
    fn start_guest(&self, id: &str) -> Result<(), ProviderError>;
    /// Asks the guest to shut down and waits up to `timeout`, then powers it off. Stopping a stopped
    /// guest is not an error.
    fn stop_guest(&self, id: &str, timeout: std::time::Duration) -> Result<(), ProviderError>;
    /// Powers the guest off, undefines it and deletes its volumes; removes nestform's storage pool when
    /// it is left empty. Deleting a guest that does not exist is not an error.
    fn delete_guest(&self, id: &str) -> Result<(), ProviderError>;

    /// The definition `create_guest` would write for `req` (libvirt domain XML), so a plan can show a
    /// diff of it. Pure: touches nothing on the host.
    fn guest_definition(&self, req: &GuestRequest, owner: &Owner) -> String;

    /// Opens the guest's agent channel (nestform's own virtio-serial port) as a byte stream, through
    /// this connection, so it works wherever the connection reaches. A backend that cannot reach into
    /// guests says [`ProviderError::Unsupported`].
    fn open_agent(&self, id: &str) -> Result<AgentChannel, ProviderError> {
        Err(ProviderError::Unsupported(format!("reaching the agent of guest `{id}`")))
    }

    /// Whether this connection can still be used. A backend whose connection goes through something
    /// that can end under it (a promoted host's tunnel through its guest's agent) says `false` once
    /// that ended, and the engine reaches the host again rather than reusing it.
    fn is_alive(&self) -> bool {
        true
    }

    /// Where the running guest's agent channels are sockets on the host (libvirt names them per
    /// domain), in order, for a caller that reaches the host's files by other means (the agent of the
    /// guest a promoted host runs in) and connects to one directly instead of through a libvirt
    /// stream. Each serves one client at a time; a caller takes the first one free. Empty when the
    /// backend has no such sockets.
    fn agent_sockets(&self, id: &str) -> Result<Vec<String>, ProviderError> {
        let _ = id;
        Ok(Vec::new())
    }

    /// Makes the host's KVM vendor module load with `options` (persistently, e.g. in
    /// `/etc/modprobe.d/kvm_<vendor>.conf`) and reloads the module so they take effect now. Refuses,
    /// naming them, while guests run on the host, since reloading KVM under them would crash them.
    fn set_kvm_module_options(
        &self,
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        let _ = options;
        Err(ProviderError::Unsupported("setting KVM module options".into()))
    }

    /// The last `max_bytes` of the guest's serial console output, for errors about guests that did not
    /// come up.
    fn console_tail(&self, id: &str, max_bytes: usize) -> Result<String, ProviderError> {
        let _ = max_bytes;
        Err(ProviderError::Unsupported(format!("reading the console of guest `{id}`")))
    }

    /// Takes snapshot `name` of guest `id`, stamped with `owner` (in its description, which
    /// `virsh snapshot-dumpxml` shows). [`SnapshotMode::Live`] keeps a running guest's
    /// memory too; [`SnapshotMode::Offline`] takes the disks of a guest that is shut off and refuses a
    /// running one. An existing name is refused.
    fn create_snapshot(
        &self,
        id: &str,
        name: &str,
        mode: SnapshotMode,
        owner: &Owner,
    ) -> Result<SnapshotInfo, ProviderError> {
        let _ = (name, mode, owner);
        Err(ProviderError::Unsupported(format!("snapshots of guest `{id}`")))
    }

    /// Guest `id`'s snapshots, oldest first.
    fn list_snapshots(&self, id: &str) -> Result<Vec<SnapshotInfo>, ProviderError> {
        Err(ProviderError::Unsupported(format!("snapshots of guest `{id}`")))
    }

    /// Brings guest `id` back to snapshot `name`: its disks, and for a snapshot taken live its memory
    /// and running state. After an offline snapshot the guest is shut off. An unknown name is refused.
    fn revert_snapshot(&self, id: &str, name: &str) -> Result<(), ProviderError> {
        let _ = name;
        Err(ProviderError::Unsupported(format!("snapshots of guest `{id}`")))
    }

    /// Deletes snapshot `name` of guest `id` (its children are kept). An unknown name is refused.
    fn delete_snapshot(&self, id: &str, name: &str) -> Result<(), ProviderError> {
        let _ = name;
        Err(ProviderError::Unsupported(format!("snapshots of guest `{id}`")))
    }
}

/// A guest's agent channel as a byte stream: a reading half, a writing half, and a way to end the
/// stream that unblocks a read in progress.
pub struct AgentChannel {
    pub reader: Box<dyn std::io::Read + Send>,
    pub writer: Box<dyn std::io::Write + Send>,
    pub shutdown: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for AgentChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentChannel")
    }
}

/// How a snapshot is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Disks and, for a running guest, its memory: reverting resumes it where it was.
    Live,
    /// Disks only, of a guest that is shut off (after a clean shutdown its data is all on disk).
    Offline,
}

impl SnapshotMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMode::Live => "live",
            SnapshotMode::Offline => "offline",
        }
    }
}

/// One snapshot of a guest, as the host reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    /// Seconds since the Unix epoch when it was taken.
    pub created: i64,
    /// Whether the guest ran when it was taken (its memory is in the snapshot).
    pub running: bool,
    /// Whether it is the guest's current snapshot (the one it was last taken or reverted to).
    pub current: bool,
    /// Who made it, read back from its description; `None` for snapshots nestform did not make.
    pub owner: Option<Owner>,
    pub description: Option<String>,
}

/// The description nestform gives a snapshot it makes: readable in `virsh snapshot-list
/// --description`, and parsed back by [`snapshot_owner`].
pub fn snapshot_description(owner: &Owner) -> String {
    format!("made by nestform for {} (state lineage {})", owner.address, owner.lineage)
}

/// The owner a description written by [`snapshot_description`] names.
pub fn snapshot_owner(description: &str) -> Option<Owner> {
    let rest = description.strip_prefix("made by nestform for ")?;
    let (address, lineage) = rest.rsplit_once(" (state lineage ")?;
    let lineage = lineage.strip_suffix(')')?;
    Some(Owner { lineage: lineage.to_string(), address: address.to_string() })
}

/// What a provider call failed with.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot connect to `{uri}`: {message}")]
    Connect { uri: String, message: String },
    #[error("{operation} `{object}` failed: {message}")]
    Operation { operation: &'static str, object: String, message: String },
    #[error("`{0}` is not supported by this hypervisor")]
    Unsupported(String),
}

/// What opening a guest's agent fails with when all `channels` of its agent channels are held by
/// other clients: backends refuse rather than take a channel from whoever has it.
pub fn agent_channels_busy(channels: usize) -> String {
    format!(
        "all {channels} of its agent channels are in use by other clients (other nestform commands \
         reaching this guest now); wait for them to finish and run this again"
    )
}

impl ProviderError {
    pub fn op(operation: &'static str, object: impl Into<String>, message: impl ToString) -> Self {
        ProviderError::Operation { operation, object: object.into(), message: message.to_string() }
    }
}

/// What a host reports about itself. Fields a backend cannot tell are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HostFacts {
    pub hostname: String,
    /// Logical CPUs the host can give to guests.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Where [`memory_bytes`](Self::memory_bytes) comes from, as the plan says it (such as "the host's
    /// total memory, from libvirt's node memory statistics").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_source: Option<String>,
    /// `GenuineIntel`, `AuthenticAMD`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_vendor: Option<String>,
    /// libvirt's version, such as `11.3.0`.
    pub libvirt_version: String,
    /// The hypervisor driver and its version, such as `QEMU 10.0.2` or `Test 0.0.2`.
    pub hypervisor: String,
    /// Whether guests on this host can run hypervisors themselves (vmx/svm exposed with nesting on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nesting: Option<bool>,
    /// `svm` (AMD-V) or `vmx` (VT-x) when the host's CPU has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virt_extension: Option<String>,
    /// How guests on this host run: `kvm`, or `tcg` (emulation, slow but able to nest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceleration: Option<String>,
    /// Why that acceleration, for people: "`/dev/kvm` belongs to PVM, which cannot run a standard guest".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceleration_reason: Option<String>,
    /// The loaded KVM vendor module (`kvm_intel`, `kvm_amd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvm_module: Option<String>,
    /// That module's parameters as `/sys/module/<module>/parameters` shows them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub kvm_parameters: std::collections::BTreeMap<String, String>,
    /// QEMU's version, such as `10.0.2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_version: Option<String>,
}

/// A network the engine wants to exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    pub name: String,
    /// The host side's address (the first of the CIDR).
    pub address: std::net::Ipv4Addr,
    pub prefix_len: u8,
    pub dhcp_start: Option<std::net::Ipv4Addr>,
    pub dhcp_end: Option<std::net::Ipv4Addr>,
    pub domain: Option<String>,
}

/// A network as the host reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub id: String,
    pub name: String,
    pub active: bool,
    pub bridge: Option<String>,
    pub owner: Option<Owner>,
}

/// A guest the engine wants to exist, with every reference resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRequest {
    pub name: String,
    pub vcpus: u32,
    pub memory_bytes: u64,
    pub cpu: CpuRequest,
    pub disks: Vec<DiskRequest>,
    pub interfaces: Vec<InterfaceRequest>,
    pub boot: BootRequest,
    pub running: bool,
}

/// The CPU the guest sees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CpuRequest {
    HostPassthrough,
    HostModel,
    /// A named model, with features that must be present (`svm`, `vmx`) so the guest can nest.
    Model {
        name: String,
        require: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRequest {
    /// The disk's label; the volume is `<guest>-<name>.<format>`.
    pub name: String,
    pub size_bytes: u64,
    pub format: DiskFormat,
    pub preallocation: Preallocation,
    pub cache: DiskCache,
    pub bus: DiskBus,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceRequest {
    /// The libvirt network name.
    pub network: String,
    pub mac: Option<String>,
}

/// How the guest boots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BootRequest {
    /// Boot from the first disk (or nothing, for an empty guest).
    Disk,
    /// Boot a kernel directly with an initramfs and command line, sharing `root_share` (a directory on
    /// the host) read-only with the guest under the 9p tag `nestform-root`.
    Kernel { kernel: String, initrd: String, cmdline: String, root_share: Option<String> },
}

/// A guest as the host reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStatus {
    pub id: String,
    pub name: String,
    pub running: bool,
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// Names of the disks whose volumes exist, with their capacity in bytes.
    pub disks: Vec<(String, u64)>,
    /// The libvirt network of each interface, in order.
    pub interfaces: Vec<String>,
    pub owner: Option<Owner>,
}

/// What [`Hypervisor::list_owned`] finds on a host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    pub objects: Vec<OwnedObject>,
    /// Objects that carry nestform's metadata but whose definition could not be read.
    pub unreadable: Vec<UnreadableObject>,
}

/// An object with nestform's metadata whose definition could not be read: it cannot be adopted or
/// compared, and is left alone with a warning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadableObject {
    pub kind: ObjectKind,
    pub id: String,
    pub name: String,
    /// What failed to read.
    pub reason: String,
}

/// Something on a host that nestform's metadata claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedObject {
    pub kind: ObjectKind,
    pub id: String,
    pub name: String,
    pub owner: Owner,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectKind {
    Network,
    Guest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_descriptions_name_their_owner() {
        let owner = Owner { lineage: "5f0c".into(), address: r#"nested_guest.web["a (b)"]"#.into() };
        let text = snapshot_description(&owner);
        assert_eq!(text, r#"made by nestform for nested_guest.web["a (b)"] (state lineage 5f0c)"#);
        assert_eq!(snapshot_owner(&text), Some(owner));
        assert_eq!(snapshot_owner("taken by hand"), None);
    }
}
