//! A directed acyclic graph of work, and a concurrent walker over it. Knows nothing about nestform.
//!
//! - [`graph`]: `Dag<N>` over petgraph, with cycle reports that name every member (Tarjan's strongly
//!   connected components), topological order, and DOT output.
//! - [`walk`]: runs one async task per node as soon as that node's own dependencies have finished, at
//!   most `parallelism` at once; a failed node skips everything that depends on it while independent work
//!   goes on; a cancel signal stops new starts and lets running ones finish.

pub mod graph;
pub mod walk;
