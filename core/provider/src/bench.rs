//! Measuring: the runners of the benchmark kinds, behind one trait. The engine decides when a
//! benchmark runs and where (its targets, one at a time, after everything else of the apply) and
//! keeps what comes back as samples in state; how a kind measures is the runner's business.
//!
//! A target is reached through a [`GuestAgent`]: a guest's own agent, or, for a level-0
//! `kvm_host`, [`Benchmarks::controller`], the machine nestform runs on. Runners time the work
//! inside the target ([`CommandStatus::elapsed`](crate::CommandStatus::elapsed), or the tool's own
//! figure), never as a round trip from the controller.

use std::collections::BTreeMap;
use std::sync::Arc;

use nestform_types::BenchmarkSpec;

use crate::{BoxError, GuestAgent};

/// One benchmark to run on one target.
#[derive(Clone, Copy, Debug)]
pub struct BenchRun<'a> {
    /// `benchmark.NAME`, for messages.
    pub benchmark: &'a str,
    pub spec: &'a BenchmarkSpec,
    /// The target's address (`nested_guest.guest2`, `kvm_host.guest0`).
    pub target: &'a str,
    /// The target's nesting level (0 for a host by URI).
    pub level: u32,
    /// What state records of the target: a guest's `boot_seconds`, `memory`, `disks`.
    pub recorded: &'a serde_json::Value,
}

/// One measured run, as the runner reports it; the engine adds where and when it ran.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    /// `shell_loop_time`, `sha256_time`, `block_read_cold`, ...
    pub metric: String,
    pub value: f64,
    /// `s` or `MB/s`.
    pub unit: String,
    /// The run's own details: its number, the size read, the load before it.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// Runs benchmarks. Blocking, like the other provider traits.
pub trait Benchmarks: Send + Sync {
    /// The machine nestform runs on, where level-0 targets (a `kvm_host` by a local URI) are
    /// measured.
    fn controller(&self) -> Result<Arc<dyn GuestAgent>, BoxError>;

    /// Whether the runners can take `spec`, asked before anything of the apply runs.
    fn check(&self, spec: &BenchmarkSpec) -> Result<(), BoxError>;

    /// Runs `run` on the target reached through `on`: its warm-up runs, then its measured runs,
    /// naming each as a [`step`](crate::progress::step); returns the measured runs. A failed run
    /// fails the whole benchmark on this target, with the reason.
    fn run(&self, run: &BenchRun<'_>, on: &dyn GuestAgent) -> Result<Vec<Measured>, BoxError>;
}
