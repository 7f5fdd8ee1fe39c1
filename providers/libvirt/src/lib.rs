//! The libvirt provider: domains, networks, a storage pool and volumes on any libvirt URI.
//!
//! [`LibvirtProvider`] opens a [`LibvirtHypervisor`] per URI through the `virt` crate. Each object
//! nestform creates carries its owner in `<metadata>` (namespace
//! [`nestform_types::owner::METADATA_NAMESPACE`]), so `list_owned` finds them again.
//!
//! - `xml`: quick-xml reading (a small element tree) and writing helpers.
//! - `domain`, `network`: the XML nestform writes and what it reads back; pure.
//! - `storage`: the `nestform` pool and its volumes.
//! - `facts`: host facts and the domain type (`kvm`, `qemu` for TCG, `test`), the CPU of TCG guests.
//! - `kvm`: this machine's KVM modules (`/proc`, `/sys`) and `kvm_module_options`.
//! - `hypervisor`: the trait implementation, the only place that calls libvirt for objects.
//! - `snapshot`: domain snapshots, stamped with nestform's owner in their description.
//! - `channel`: a guest's agent channel (`virDomainOpenChannel`) and the tail of its console log.
//!
//! What libvirt's test driver (`test:///default`, `test+unix:///default`) cannot do, and how the
//! provider copes: it rejects `VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA` (the volume is created
//! without it), cannot resize volumes (`update_guest` does everything else and then returns
//! [`ProviderError::Unsupported`]), and keeps pool "directories" in memory only. Network and domain
//! metadata, pools, volumes and undefine flags it handles like QEMU does.

pub mod channel;
mod domain;
mod error;
mod facts;
mod hypervisor;
mod kvm;
mod network;
mod snapshot;
mod storage;
mod xml;

use std::path::PathBuf;
use std::sync::{Arc, Once};

use nestform_provider::{Hypervisor, Provider, ProviderError};

pub use channel::abort_open_channels;
pub use domain::ROOT_SHARE_TAG;
pub use facts::tcg_cpu_for;
pub use hypervisor::LibvirtHypervisor;

/// The virtio-serial channels nestform's agent listens on inside each guest
/// (`/dev/virtio-ports/dev.nestform.agent.N`), each opened with `virDomainOpenChannel` by one client
/// at a time: several nestform runs reach one guest side by side, each on a channel of its own, and
/// none takes a channel over from another (see `channel`). The lab boot's `AGENT_PORTS` are the same.
pub const AGENT_CHANNELS: [&str; 4] =
    ["dev.nestform.agent.0", "dev.nestform.agent.1", "dev.nestform.agent.2", "dev.nestform.agent.3"];
/// The first of [`AGENT_CHANNELS`], the only one of guests defined before there were several.
pub const AGENT_CHANNEL: &str = AGENT_CHANNELS[0];
/// What every agent channel's name begins with.
pub const AGENT_CHANNEL_PREFIX: &str = "dev.nestform.agent.";
/// The storage pool that holds every guest's volumes.
pub const POOL_NAME: &str = "nestform";
/// Where the pool keeps its files unless [`LibvirtProvider::with_pool_dir`] says otherwise.
pub const DEFAULT_POOL_DIR: &str = "/var/lib/nestform/pool";

/// Opens libvirt connections.
#[derive(Clone, Debug)]
pub struct LibvirtProvider {
    pool_dir: PathBuf,
}

impl Default for LibvirtProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl LibvirtProvider {
    /// A provider whose storage pool lives in [`DEFAULT_POOL_DIR`].
    pub fn new() -> Self {
        LibvirtProvider { pool_dir: PathBuf::from(DEFAULT_POOL_DIR) }
    }

    /// Keeps the storage pool in `dir` instead (on the host the URI names).
    pub fn with_pool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pool_dir = dir.into();
        self
    }

    /// Opens `uri` and returns the concrete hypervisor (for what the trait does not cover).
    pub fn open(&self, uri: &str) -> Result<LibvirtHypervisor, ProviderError> {
        // libvirt's default error handler prints every error to stderr, including the expected
        // "no domain with matching uuid" of a lookup; nestform reports errors itself.
        static QUIET: Once = Once::new();
        QUIET.call_once(virt::error::clear_error_callback);
        LibvirtHypervisor::open(uri, self.pool_dir.clone())
    }
}

impl Provider for LibvirtProvider {
    fn connect(&self, uri: &str) -> Result<Arc<dyn Hypervisor>, ProviderError> {
        Ok(Arc::new(self.open(uri)?))
    }
}
