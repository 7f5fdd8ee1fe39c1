//! `Dag<N>`: nodes of any type joined by "runs after" edges, with cycle reports that name every member,
//! a deterministic topological order, transitive closures and Graphviz DOT output.
//!
//! Edges point from a dependency to its dependent, so petgraph's `Outgoing` neighbours of a node are
//! the nodes that wait for it. Nodes are never removed: a `StableDiGraph` keeps `NodeId`s equal to the
//! insertion order, which is what makes every order below deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use petgraph::graph::NodeIndex;
use petgraph::stable_graph::StableDiGraph;
use petgraph::Direction::{Incoming, Outgoing};

/// A node of a [`Dag`]. Ids grow in insertion order, so sorting ids sorts by insertion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub NodeIndex);

impl NodeId {
    /// The position of the node in insertion order (0 for the first node added).
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{}", self.0.index())
    }
}

/// A directed graph of work in which an edge means "runs after". It may hold cycles while it is being
/// built; [`Dag::cycles`] and [`Dag::topological_order`] report them.
#[derive(Clone, Debug)]
pub struct Dag<N> {
    graph: StableDiGraph<N, ()>,
}

impl<N> Default for Dag<N> {
    fn default() -> Self {
        Dag::new()
    }
}

impl<N> Dag<N> {
    /// An empty graph.
    pub fn new() -> Self {
        Dag { graph: StableDiGraph::new() }
    }

    /// Adds a node and returns its id.
    pub fn add_node(&mut self, n: N) -> NodeId {
        NodeId(self.graph.add_node(n))
    }

    /// The node's payload. Panics if `id` is not from this graph.
    pub fn node(&self, id: NodeId) -> &N {
        &self.graph[id.0]
    }

    /// The node's payload, mutable. Panics if `id` is not from this graph.
    pub fn node_mut(&mut self, id: NodeId) -> &mut N {
        &mut self.graph[id.0]
    }

    /// `dependent` runs after `dependency`. Duplicate edges are ignored. A node may depend on itself;
    /// that is kept so that [`Dag::cycles`] reports it rather than silently dropping it.
    pub fn add_dependency(&mut self, dependent: NodeId, dependency: NodeId) {
        if !self.graph.contains_edge(dependency.0, dependent.0) {
            self.graph.add_edge(dependency.0, dependent.0, ());
        }
    }

    /// Whether `dependent` directly depends on `dependency`.
    pub fn depends_on(&self, dependent: NodeId, dependency: NodeId) -> bool {
        self.graph.contains_edge(dependency.0, dependent.0)
    }

    /// The nodes `id` directly depends on, in insertion order.
    pub fn dependencies(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.sorted_neighbors(id, Incoming).into_iter()
    }

    /// The nodes that directly depend on `id`, in insertion order.
    pub fn dependents(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.sorted_neighbors(id, Outgoing).into_iter()
    }

    /// Every node, in insertion order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.graph.node_indices().map(NodeId)
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// Every cycle: each strongly connected component of more than one node, or a node depending on
    /// itself. Members are sorted by id and cycles by their first member, so the report is stable.
    pub fn cycles(&self) -> Vec<Vec<NodeId>> {
        let mut cycles: Vec<Vec<NodeId>> = petgraph::algo::tarjan_scc(&self.graph)
            .into_iter()
            .filter(|scc| scc.len() > 1 || self.graph.contains_edge(scc[0], scc[0]))
            .map(|scc| {
                let mut members: Vec<NodeId> = scc.into_iter().map(NodeId).collect();
                members.sort();
                members
            })
            .collect();
        cycles.sort();
        cycles
    }

    /// Dependencies before dependents; among nodes that are ready at the same moment the one added first
    /// comes first, so equal graphs always give equal orders. `Err` lists the cycles.
    pub fn topological_order(&self) -> Result<Vec<NodeId>, Vec<Vec<NodeId>>> {
        // Kahn's algorithm with an ordered ready set rather than petgraph's `toposort`, whose tie
        // order is a detail of its DFS and not insertion order.
        let mut waiting: BTreeMap<NodeId, usize> =
            self.node_ids().map(|id| (id, self.graph.neighbors_directed(id.0, Incoming).count())).collect();
        let mut ready: BTreeSet<NodeId> =
            waiting.iter().filter(|(_, &n)| n == 0).map(|(&id, _)| id).collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(id) = ready.pop_first() {
            order.push(id);
            for dependent in self.graph.neighbors_directed(id.0, Outgoing) {
                let count = waiting.get_mut(&NodeId(dependent)).expect("every node is counted");
                *count -= 1;
                if *count == 0 {
                    ready.insert(NodeId(dependent));
                }
            }
        }
        if order.len() == self.len() {
            Ok(order)
        } else {
            Err(self.cycles())
        }
    }

    /// Everything that (transitively) depends on `id`, not including `id` unless it is on a cycle.
    pub fn transitive_dependents(&self, id: NodeId) -> BTreeSet<NodeId> {
        self.reachable(id, Outgoing)
    }

    /// Everything that `id` (transitively) depends on, not including `id` unless it is on a cycle.
    pub fn transitive_dependencies(&self, id: NodeId) -> BTreeSet<NodeId> {
        self.reachable(id, Incoming)
    }

    /// Graphviz DOT. `label(n)` gives a node's label; `cluster(n)` an optional `(key, label)`: nodes
    /// with the same key are drawn in one `subgraph cluster_…` box with that label (the label of the
    /// first node seen for a key wins). Arrows point from a dependent to its dependency, as
    /// `terraform graph` draws them. Nodes, clusters and edges come out in a fixed order.
    pub fn to_dot(
        &self,
        label: impl Fn(&N) -> String,
        cluster: impl Fn(&N) -> Option<(String, String)>,
    ) -> String {
        let mut clusters: BTreeMap<String, (String, Vec<NodeId>)> = BTreeMap::new();
        let mut loose = Vec::new();
        for id in self.node_ids() {
            match cluster(self.node(id)) {
                Some((key, cluster_label)) => {
                    clusters.entry(key).or_insert_with(|| (cluster_label, Vec::new())).1.push(id)
                }
                None => loose.push(id),
            }
        }

        let mut out = String::from("digraph {\n  compound = true;\n  node [shape = box];\n");
        let node_line = |out: &mut String, indent: &str, id: NodeId| {
            let _ = writeln!(out, "{indent}{id} [label = {}];", dot_quote(&label(self.node(id))));
        };
        for (key, (cluster_label, members)) in &clusters {
            let _ = writeln!(out, "  subgraph {} {{", dot_quote(&format!("cluster_{key}")));
            let _ = writeln!(out, "    label = {};", dot_quote(cluster_label));
            for &id in members {
                node_line(&mut out, "    ", id);
            }
            out.push_str("  }\n");
        }
        for &id in &loose {
            node_line(&mut out, "  ", id);
        }
        for dependent in self.node_ids() {
            for dependency in self.dependencies(dependent) {
                let _ = writeln!(out, "  {dependent} -> {dependency};");
            }
        }
        out.push_str("}\n");
        out
    }

    fn sorted_neighbors(&self, id: NodeId, direction: petgraph::Direction) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.graph.neighbors_directed(id.0, direction).map(NodeId).collect();
        ids.sort();
        ids
    }

    fn reachable(&self, id: NodeId, direction: petgraph::Direction) -> BTreeSet<NodeId> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![id.0];
        while let Some(at) = stack.pop() {
            for next in self.graph.neighbors_directed(at, direction) {
                if seen.insert(NodeId(next)) {
                    stack.push(next);
                }
            }
        }
        seen
    }
}

/// A DOT double-quoted string: backslashes and quotes escaped, newlines as `\n`.
fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(names: &[&'static str]) -> (Dag<&'static str>, Vec<NodeId>) {
        let mut dag = Dag::new();
        let ids: Vec<NodeId> = names.iter().map(|n| dag.add_node(*n)).collect();
        (dag, ids)
    }

    #[test]
    fn duplicate_edges_are_ignored() {
        let (mut dag, ids) = chain(&["a", "b"]);
        dag.add_dependency(ids[1], ids[0]);
        dag.add_dependency(ids[1], ids[0]);
        assert_eq!(dag.dependencies(ids[1]).collect::<Vec<_>>(), vec![ids[0]]);
        assert_eq!(dag.dependents(ids[0]).collect::<Vec<_>>(), vec![ids[1]]);
        assert!(dag.depends_on(ids[1], ids[0]));
        assert!(!dag.depends_on(ids[0], ids[1]));
    }

    #[test]
    fn topological_order_puts_dependencies_first_and_breaks_ties_by_insertion() {
        // e depends on a and d; c depends on b; nothing else.
        let (mut dag, ids) = chain(&["a", "b", "c", "d", "e"]);
        let [a, b, c, d, e] = ids[..] else { unreachable!() };
        dag.add_dependency(e, a);
        dag.add_dependency(e, d);
        dag.add_dependency(c, b);
        dag.add_dependency(a, d);
        let order = dag.topological_order().unwrap();
        assert_eq!(order, vec![b, c, d, a, e]);
        // Same graph built again gives the same order.
        assert_eq!(dag.clone().topological_order().unwrap(), order);
    }

    #[test]
    fn topological_order_of_independent_nodes_is_insertion_order() {
        let (dag, ids) = chain(&["z", "y", "x"]);
        assert_eq!(dag.topological_order().unwrap(), ids);
    }

    #[test]
    fn cycles_name_every_member() {
        let (mut dag, ids) = chain(&["a", "b", "c", "d", "e", "f"]);
        let [a, b, c, d, e, f] = ids[..] else { unreachable!() };
        // a -> b -> c -> a is one cycle, e depends on itself, d and f are acyclic.
        dag.add_dependency(a, b);
        dag.add_dependency(b, c);
        dag.add_dependency(c, a);
        dag.add_dependency(d, a);
        dag.add_dependency(e, e);
        dag.add_dependency(f, d);
        assert_eq!(dag.cycles(), vec![vec![a, b, c], vec![e]]);
        assert_eq!(dag.topological_order(), Err(vec![vec![a, b, c], vec![e]]));
    }

    #[test]
    fn acyclic_graph_has_no_cycles() {
        let (mut dag, ids) = chain(&["a", "b"]);
        dag.add_dependency(ids[1], ids[0]);
        assert!(dag.cycles().is_empty());
    }

    #[test]
    fn transitive_closures() {
        let (mut dag, ids) = chain(&["a", "b", "c", "d"]);
        let [a, b, c, d] = ids[..] else { unreachable!() };
        dag.add_dependency(b, a);
        dag.add_dependency(c, b);
        dag.add_dependency(d, a);
        assert_eq!(dag.transitive_dependents(a), BTreeSet::from([b, c, d]));
        assert_eq!(dag.transitive_dependents(b), BTreeSet::from([c]));
        assert_eq!(dag.transitive_dependents(c), BTreeSet::new());
        assert_eq!(dag.transitive_dependencies(c), BTreeSet::from([a, b]));
        assert_eq!(dag.transitive_dependencies(a), BTreeSet::new());
    }

    #[test]
    fn dot_groups_clusters_and_is_deterministic() {
        let mut dag = Dag::new();
        let host = dag.add_node(("kvm_host.l0", 0));
        let guest = dag.add_node(("nested_guest.\"g1\"", 1));
        let net = dag.add_node(("nat_network.n", 0));
        let loose = dag.add_node(("output.x", 99));
        dag.add_dependency(guest, host);
        dag.add_dependency(guest, net);
        dag.add_dependency(net, host);
        dag.add_dependency(loose, guest);
        let render = |dag: &Dag<(&str, u32)>| {
            dag.to_dot(
                |n| n.0.to_string(),
                |n| (n.1 < 99).then(|| (format!("level{}", n.1), format!("level {}", n.1))),
            )
        };
        let dot = render(&dag);
        assert_eq!(
            dot,
            r#"digraph {
  compound = true;
  node [shape = box];
  subgraph "cluster_level0" {
    label = "level 0";
    n0 [label = "kvm_host.l0"];
    n2 [label = "nat_network.n"];
  }
  subgraph "cluster_level1" {
    label = "level 1";
    n1 [label = "nested_guest.\"g1\""];
  }
  n3 [label = "output.x"];
  n1 -> n0;
  n1 -> n2;
  n2 -> n0;
  n3 -> n1;
}
"#
        );
        assert_eq!(render(&dag), dot);
    }
}
