//! The vocabulary every nestform crate shares.
//!
//! This crate sits at the bottom of the workspace and depends on no other nestform crate:
//!
//! ```text
//!                      nestform (core/cli)
//!                     /        |          \
//!        nestform-engine   nestform-provider-libvirt   nestform-provider-memory
//!        /    |     \   \            |                       |
//!  config   state   dag  \----- nestform-provider -----------/
//!        \    |          /
//!         nestform-types
//! ```
//!
//! - [`addr`]: `ResourceAddr` (`nested_guest.web["a"]`), the name of one resource instance everywhere.
//! - [`spec`]: the resolved, typed form of each block (`kvm_host`, `nat_network`, `nested_guest`,
//!   `benchmark`) after the configuration has been evaluated. The JSON Schemas in `schemas/` are generated
//!   from these types.
//! - [`size`]: `ByteSize`, the `"4GiB"` / `"512MiB"` sizes the language accepts.
//! - [`owner`]: the metadata nestform writes into every libvirt object it creates.
//! - [`bench`]: what benchmarks measure, as state keeps it: every run a `Sample`, per target a `Summary`.
//! - [`kvm`]: `kvm_module_options` compared with what the KVM module has, in one spelling.

pub mod addr;
pub mod bench;
pub mod kvm;
pub mod owner;
pub mod size;
pub mod spec;
pub mod timeouts;

pub use addr::{AddrParseError, InstanceKey, ResourceAddr, ResourceType};
pub use owner::Owner;
pub use size::{ByteSize, ByteSizeError};
pub use spec::*;
pub use timeouts::{parse_duration, Timeouts};
