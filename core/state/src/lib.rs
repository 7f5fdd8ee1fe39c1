//! The nestform state: what exists, as nestform last saw it.
//!
//! - [`State`] is the in-memory form the engine reads and updates.
//! - [`file`] (the versioned on-disk format with its upgrader and normalising sort), [`StateStore`]
//!   (atomic saves and the backup of the previous serial) and [`lock`] (the lock held while a command
//!   runs) are separate modules, so the engine never sees the file format.

pub mod error;
pub mod file;
pub mod journal;
pub mod lock;
pub mod store;

pub use error::StateError;
pub use file::{StateFileV1, CURRENT_FORMAT};
pub use journal::IncrementalStore;
pub use lock::{LockInfo, StateLock};
pub use store::StateStore;

use std::collections::{BTreeMap, BTreeSet};

use nestform_types::ResourceAddr;
use serde::{Deserialize, Serialize};

/// Everything nestform manages, as last recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct State {
    /// Identifies this state across its whole life; a saved plan or a libvirt object carries it.
    pub lineage: String,
    /// Grows by one every time the state is written.
    pub serial: u64,
    pub resources: BTreeMap<ResourceAddr, ResourceState>,
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputState>,
}

/// One resource instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResourceState {
    /// The provider's id: the libvirt UUID of a domain or network, the URI of a level-0 `kvm_host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The `kvm_host` the resource lives on (networks and guests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<ResourceAddr>,
    /// Nesting level: 0 for a `kvm_host` given by `uri`, and one more for each guest in between.
    pub level: u32,
    /// The resource's arguments as configured (the serialized spec) plus the attributes computed when it
    /// was created or refreshed.
    pub attributes: serde_json::Value,
    /// Every resource this one depended on when it was created, so it can be destroyed in the right
    /// order without the configuration.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub dependencies: BTreeSet<ResourceAddr>,
    /// Created but not known to be healthy (an agent that never answered): the next plan replaces it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tainted: bool,
}

/// One `output` value, as last applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OutputState {
    pub value: serde_json::Value,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

impl State {
    /// An empty state with a fresh lineage.
    pub fn new() -> Self {
        State {
            lineage: uuid::Uuid::new_v4().to_string(),
            serial: 0,
            resources: BTreeMap::new(),
            outputs: BTreeMap::new(),
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}
