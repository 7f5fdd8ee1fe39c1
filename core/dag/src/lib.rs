//! A directed acyclic graph of work, and a concurrent walker over it. Knows nothing about nestform.
//!
//! - [`graph`]: `Dag<N>` over petgraph, with cycle reports that name every member (Tarjan's strongly
//!   connected components), topological order, and DOT output.
//! - [`walk`]: runs one async task per node as soon as that node's own dependencies have finished, at
//!   most `parallelism` at once; a failed node skips everything that depends on it while independent work
//!   goes on; a stop (any `Fn() -> bool`, asked before each start) stops new starts and lets running
//!   ones finish.
//!
//! ```
//! use nestform_dag::graph::Dag;
//! use nestform_dag::walk::{walk, NodeOutcome};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut dag = Dag::new();
//! let host = dag.add_node("kvm_host.l0");
//! let net = dag.add_node("nat_network.lan");
//! let guest = dag.add_node("nested_guest.g1");
//! dag.add_dependency(net, host);
//! dag.add_dependency(guest, net);
//! assert_eq!(dag.topological_order().unwrap(), vec![host, net, guest]);
//!
//! let report = walk(&dag, 4, || false, move |id| async move {
//!     if id == net { Err("network `lan` overlaps `default`".to_string()) } else { Ok(()) }
//! })
//! .await;
//! assert_eq!(report.outcomes[&host], NodeOutcome::Succeeded);
//! assert_eq!(report.outcomes[&guest], NodeOutcome::Skipped { because: net });
//! # }
//! ```

pub mod graph;
pub mod walk;
