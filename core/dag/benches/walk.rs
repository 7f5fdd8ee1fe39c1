//! What the graph and the walker cost per node, with work that does nothing: a layered graph of
//! 10,000 nodes (100 layers of 100, each node depending on three nodes of the layer before).
//!
//! Plain `std::time::Instant` (no harness): `cargo bench -p nestform-dag --bench walk` (or
//! `cargo test -p nestform-dag --bench walk` for an unoptimised run). Prints the time of each step and
//! per node; fails if the walk does not succeed everywhere.

use std::time::Instant;

use nestform_dag::graph::Dag;
use nestform_dag::walk::walk;

const LAYERS: usize = 100;
const WIDTH: usize = 100;

fn main() {
    let started = Instant::now();
    let mut dag = Dag::new();
    let mut previous = Vec::new();
    for layer in 0..LAYERS {
        let ids: Vec<_> = (0..WIDTH).map(|i| dag.add_node((layer, i))).collect();
        if !previous.is_empty() {
            for (i, &id) in ids.iter().enumerate() {
                for k in 0..3 {
                    dag.add_dependency(id, previous[(i * 7 + k * 13) % WIDTH]);
                }
            }
        }
        previous = ids;
    }
    report("build", started, dag.len());

    let started = Instant::now();
    let order = dag.topological_order().expect("the layered graph is acyclic");
    assert_eq!(order.len(), dag.len());
    report("topological_order", started, dag.len());

    let started = Instant::now();
    assert!(dag.cycles().is_empty());
    report("cycles", started, dag.len());

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let started = Instant::now();
    let walked = runtime.block_on(walk(&dag, 8, || false, |_| async { Ok(()) }));
    assert!(walked.all_succeeded());
    report("walk (parallelism 8, no-op work)", started, dag.len());
}

fn report(step: &str, started: Instant, nodes: usize) {
    let elapsed = started.elapsed();
    println!("{step:<34} {:>10.2?}  {:>8.2?}/node", elapsed, elapsed / nodes as u32);
}
