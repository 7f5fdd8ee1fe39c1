//! One dependency graph across every nesting level.
//!
//! Each resource instance in configuration (and each one left only in state, so it can be destroyed in
//! order) is one node. Edges come from `depends_on` and from the references nestform itself knows:
//! a guest runs after its host and its networks, a network after its host, a promoted `kvm_host` after
//! the guest it promotes, a benchmark after its targets. Those nesting edges are what join the levels
//! into one graph: `kvm_host.l1 { guest = nested_guest.g1 }` sits after `g1`, and everything on `l1`
//! after it.
//!
//! Each node also carries its nesting level: 0 for a `kvm_host` with a `uri`, a guest's host's level
//! plus one for a guest, its guest's level for a promoted host, and its host's level for a network.

use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt};

use nestform_config::{Config, Diagnostic, Diagnostics};
use nestform_dag::{graph::Dag, graph::NodeId};
use nestform_state::State;
use nestform_types::{ResourceAddr, ResourceSpec, ResourceType};

/// One resource instance in the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphNode {
    pub addr: ResourceAddr,
    /// Nesting level (see the module doc).
    pub level: u32,
    /// The `kvm_host` a guest or network lives on.
    pub host: Option<ResourceAddr>,
    /// For a promoted `kvm_host`: the guest it promotes.
    pub promotes: Option<ResourceAddr>,
    /// False for a resource only in state.
    pub in_config: bool,
}

/// A resource as configuration declares it, for [`ResourceGraph::from_resources`].
#[derive(Clone, Copy, Debug)]
pub struct DesiredResource<'a> {
    pub addr: &'a ResourceAddr,
    pub spec: &'a ResourceSpec,
    pub depends_on: &'a BTreeSet<ResourceAddr>,
}

/// Something that keeps the graph from being built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GraphProblem {
    /// The resources depend on each other in a circle; every member is listed, in address order.
    Cycle(Vec<ResourceAddr>),
    /// `from`'s attribute `attr` names a resource that is not declared.
    UnknownReference { from: ResourceAddr, attr: &'static str, to: ResourceAddr },
}

/// The graph of every resource instance, acyclic once built.
#[derive(Clone, Debug)]
pub struct ResourceGraph {
    dag: Dag<GraphNode>,
    index: HashMap<ResourceAddr, NodeId>,
    order: Vec<NodeId>,
}

impl ResourceGraph {
    /// The graph of a configuration and the resources only in state. Cycles and references to
    /// undeclared resources are reported as diagnostics pointing at the blocks and attributes involved.
    pub fn build(config: &Config, state: &State) -> Result<ResourceGraph, Diagnostics> {
        let desired = config.resources.values().map(|r| DesiredResource {
            addr: &r.addr,
            spec: &r.spec,
            depends_on: &r.depends_on,
        });
        let (graph, problems) = ResourceGraph::from_resources(desired, state);
        if problems.is_empty() {
            Ok(graph)
        } else {
            Err(diagnostics(config, problems))
        }
    }

    /// The graph of `desired` plus every resource only in `state`, and what is wrong with it. When the
    /// problems are not empty the graph is only good for drawing.
    pub fn from_resources<'a>(
        desired: impl IntoIterator<Item = DesiredResource<'a>>,
        state: &'a State,
    ) -> (ResourceGraph, Vec<GraphProblem>) {
        let mut desired: Vec<DesiredResource<'a>> = desired.into_iter().collect();
        desired.sort_by(|a, b| a.addr.cmp(b.addr));
        let declared: HashMap<&ResourceAddr, &DesiredResource<'a>> =
            desired.iter().map(|d| (d.addr, d)).collect();

        // Nodes in address order, configuration and state merged, so ids (and every order derived
        // from them) do not depend on how the input was collected.
        let mut addrs: Vec<&ResourceAddr> = desired.iter().map(|d| d.addr).collect();
        addrs.extend(state.resources.keys().filter(|a| !declared.contains_key(a)));
        addrs.sort();

        let mut levels = Levels { declared: &declared, state, memo: HashMap::new() };
        let mut dag = Dag::new();
        let mut index = HashMap::with_capacity(addrs.len());
        for addr in &addrs {
            let node = match declared.get(addr) {
                Some(d) => GraphNode {
                    addr: (*addr).clone(),
                    level: levels.level(addr),
                    host: d.spec.host().cloned(),
                    promotes: promoted_guest(d.spec).cloned(),
                    in_config: true,
                },
                None => {
                    let s = &state.resources[*addr];
                    GraphNode {
                        addr: (*addr).clone(),
                        level: s.level,
                        host: s.host.clone(),
                        promotes: state_promotes(addr, &s.attributes),
                        in_config: false,
                    }
                }
            };
            index.insert((*addr).clone(), dag.add_node(node));
        }

        let mut problems = Vec::new();
        for addr in &addrs {
            let id = index[*addr];
            match declared.get(addr) {
                Some(d) => {
                    for (attr, to) in references(d) {
                        // A resource only in state is about to be destroyed: nothing may refer to it.
                        match index.get(to).filter(|_| declared.contains_key(to)) {
                            Some(&dep) => dag.add_dependency(id, dep),
                            None => problems.push(GraphProblem::UnknownReference {
                                from: (*addr).clone(),
                                attr,
                                to: to.clone(),
                            }),
                        }
                    }
                }
                None => {
                    let s = &state.resources[*addr];
                    // A resource only in state is destroyed; what it depended on may be gone too.
                    for to in s.dependencies.iter().chain(s.host.iter()) {
                        if let Some(&dep) = index.get(to) {
                            dag.add_dependency(id, dep);
                        }
                    }
                }
            }
        }

        let order = match dag.topological_order() {
            Ok(order) => order,
            Err(cycles) => {
                for c in cycles {
                    problems.push(GraphProblem::Cycle(
                        c.into_iter().map(|id| dag.node(id).addr.clone()).collect(),
                    ));
                }
                dag.node_ids().collect()
            }
        };
        (ResourceGraph { dag, index, order }, problems)
    }

    /// The node of `addr`, if it is in the graph.
    pub fn get(&self, addr: &ResourceAddr) -> Option<&GraphNode> {
        self.index.get(addr).map(|&id| self.dag.node(id))
    }

    /// Every node, dependencies before dependents; ties in address order.
    pub fn in_order(&self) -> impl DoubleEndedIterator<Item = &GraphNode> + '_ {
        self.order.iter().map(|&id| self.dag.node(id))
    }

    /// The number of resource instances.
    pub fn len(&self) -> usize {
        self.dag.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dag.is_empty()
    }

    /// What `addr` directly depends on.
    pub fn dependencies(&self, addr: &ResourceAddr) -> Vec<&ResourceAddr> {
        self.neighbours(addr, true)
    }

    /// What directly depends on `addr`.
    pub fn dependents(&self, addr: &ResourceAddr) -> Vec<&ResourceAddr> {
        self.neighbours(addr, false)
    }

    /// Everything `addr` depends on, directly or not.
    pub fn transitive_dependencies(&self, addr: &ResourceAddr) -> BTreeSet<&ResourceAddr> {
        match self.index.get(addr) {
            Some(&id) => {
                self.dag.transitive_dependencies(id).into_iter().map(|n| &self.dag.node(n).addr).collect()
            }
            None => BTreeSet::new(),
        }
    }

    /// Everything that depends on `addr`, directly or not.
    pub fn transitive_dependents(&self, addr: &ResourceAddr) -> BTreeSet<&ResourceAddr> {
        match self.index.get(addr) {
            Some(&id) => {
                self.dag.transitive_dependents(id).into_iter().map(|n| &self.dag.node(n).addr).collect()
            }
            None => BTreeSet::new(),
        }
    }

    /// Graphviz DOT with one cluster per nesting level, for `nestform graph`.
    pub fn to_dot(&self) -> String {
        self.dag.to_dot(
            |n| n.addr.to_string(),
            // Zero-padded so that level 10 sorts after level 9.
            |n| Some((format!("level_{:03}", n.level), format!("level {}", n.level))),
        )
    }

    fn neighbours(&self, addr: &ResourceAddr, dependencies: bool) -> Vec<&ResourceAddr> {
        let Some(&id) = self.index.get(addr) else { return Vec::new() };
        let ids: Vec<NodeId> = if dependencies {
            self.dag.dependencies(id).collect()
        } else {
            self.dag.dependents(id).collect()
        };
        ids.into_iter().map(|n| &self.dag.node(n).addr).collect()
    }
}

/// Graph problems as diagnostics: a cycle points at its first member's block and names the others
/// as related; an unknown reference points at the attribute that makes it.
pub(crate) fn diagnostics(config: &Config, problems: Vec<GraphProblem>) -> Diagnostics {
    let block = |a: &ResourceAddr| config.resources.get(a).map(|r| r.range.clone());
    let mut diags = Diagnostics::new();
    for p in problems {
        match p {
            GraphProblem::Cycle(members) => {
                let names: Vec<String> = members.iter().map(|m| format!("`{m}`")).collect();
                let mut d = Diagnostic::error(format!("dependency cycle between {}", names.join(", ")))
                    .with_detail("each of these resources waits for another one of them, so none can be created first")
                    .with_help(
                        "remove a `depends_on` entry or a reference (`host`, `guest`, `nat_network`, `targets`) \
                         that closes the circle",
                    );
                let mut ranges = members.iter().filter_map(|m| Some((m, block(m)?)));
                if let Some((m, first)) = ranges.next() {
                    d = d.with_range(first).with_label(format!("`{m}` is part of the cycle"));
                }
                for (m, r) in ranges {
                    d = d.with_related(r, format!("`{m}` is part of the cycle"));
                }
                diags.push(d);
            }
            GraphProblem::UnknownReference { from, attr, to } => {
                let mut d = Diagnostic::error(format!("`{from}` refers to `{to}`, which is not declared"))
                    .with_help(format!("declare `{} \"{}\"` or fix the reference", to.ty, to.name));
                if let Some(r) = config.resources.get(&from) {
                    d = d.with_range(r.attr_range(attr));
                }
                diags.push(d);
            }
        }
    }
    diags
}

/// The guest a `kvm_host` spec promotes.
fn promoted_guest(spec: &ResourceSpec) -> Option<&ResourceAddr> {
    match spec {
        ResourceSpec::KvmHost(h) => h.guest.as_ref(),
        _ => None,
    }
}

/// The guest a `kvm_host` only in state promoted, read from its stored attributes.
fn state_promotes(addr: &ResourceAddr, attributes: &serde_json::Value) -> Option<ResourceAddr> {
    if addr.ty != ResourceType::KvmHost {
        return None;
    }
    attributes.get("guest")?.as_str()?.parse().ok()
}

/// Every resource `d` refers to, with the attribute that names it.
fn references<'a>(d: &DesiredResource<'a>) -> Vec<(&'static str, &'a ResourceAddr)> {
    let mut refs: Vec<(&'static str, &'a ResourceAddr)> = Vec::new();
    match d.spec {
        ResourceSpec::KvmHost(h) => refs.extend(h.guest.iter().map(|g| ("guest", g))),
        ResourceSpec::NatNetwork(n) => refs.push(("host", &n.host)),
        ResourceSpec::NestedGuest(g) => {
            refs.push(("host", &g.host));
            refs.extend(g.networks.iter().map(|n| ("networks", &n.nat_network)));
        }
        ResourceSpec::Benchmark(b) => refs.extend(b.targets.iter().map(|t| ("targets", t))),
    }
    refs.extend(d.depends_on.iter().map(|a| ("depends_on", a)));
    refs
}

/// Nesting levels, computed on demand along `host` and `guest` references.
struct Levels<'a, 'b> {
    declared: &'b HashMap<&'a ResourceAddr, &'b DesiredResource<'a>>,
    state: &'a State,
    /// `None` while a level is being computed: a reference loop (reported as a cycle) stops there.
    memo: HashMap<&'a ResourceAddr, Option<u32>>,
}

impl<'a> Levels<'a, '_> {
    fn level(&mut self, addr: &'a ResourceAddr) -> u32 {
        match self.memo.get(addr) {
            Some(Some(l)) => return *l,
            Some(None) => return 0,
            None => {}
        }
        self.memo.insert(addr, None);
        let level = match self.declared.get(addr).map(|d| d.spec) {
            Some(ResourceSpec::KvmHost(h)) => match &h.guest {
                Some(g) => self.level(g),
                None => 0,
            },
            Some(ResourceSpec::NestedGuest(g)) => self.level(&g.host) + 1,
            Some(ResourceSpec::NatNetwork(n)) => self.level(&n.host),
            Some(ResourceSpec::Benchmark(b)) => b.targets.iter().map(|t| self.level(t)).max().unwrap_or(0),
            None => self.state.resources.get(addr).map(|s| s.level).unwrap_or(0),
        };
        self.memo.insert(addr, Some(level));
        level
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::tests::{addr, three_levels};

    fn graph_of(conf: &crate::planner::tests::Conf, state: &State) -> ResourceGraph {
        let (g, problems) = ResourceGraph::from_resources(conf.desired(), state);
        assert!(problems.is_empty(), "{problems:?}");
        g
    }

    #[test]
    fn levels_and_nesting_edges() {
        let g = graph_of(&three_levels(), &State::new());
        let level = |a: &str| g.get(&addr(a)).unwrap().level;
        assert_eq!(
            [
                "kvm_host.l0",
                "nat_network.lan",
                "nested_guest.g1",
                "kvm_host.l1",
                "nested_guest.g2",
                "kvm_host.l2",
                "nested_guest.g3"
            ]
            .map(level),
            [0, 0, 1, 1, 2, 2, 3]
        );
        assert_eq!(g.dependencies(&addr("kvm_host.l1")), [&addr("nested_guest.g1")]);
        assert_eq!(
            g.dependencies(&addr("nested_guest.g1")),
            [&addr("kvm_host.l0"), &addr("nat_network.lan")]
        );
        assert_eq!(g.get(&addr("kvm_host.l2")).unwrap().promotes, Some(addr("nested_guest.g2")));
        let inside_g1: Vec<String> =
            g.transitive_dependents(&addr("nested_guest.g1")).into_iter().map(|a| a.to_string()).collect();
        assert_eq!(inside_g1, ["kvm_host.l1", "kvm_host.l2", "nested_guest.g2", "nested_guest.g3"]);
    }

    #[test]
    fn resources_only_in_state_keep_their_recorded_edges() {
        let full = three_levels();
        let state = full.applied();
        let conf = full.without("nested_guest.g3");
        let g = graph_of(&conf, &state);
        let g3 = g.get(&addr("nested_guest.g3")).unwrap();
        assert!(!g3.in_config);
        assert_eq!(g3.level, 3);
        assert_eq!(g.dependencies(&addr("nested_guest.g3")), [&addr("kvm_host.l2")]);
    }

    #[test]
    fn referring_to_a_resource_only_in_state_is_an_error() {
        let full = three_levels();
        let state = full.applied();
        let conf = full.without("kvm_host.l2");
        let (_, problems) = ResourceGraph::from_resources(conf.desired(), &state);
        assert_eq!(
            problems,
            [GraphProblem::UnknownReference {
                from: addr("nested_guest.g3"),
                attr: "host",
                to: addr("kvm_host.l2")
            }]
        );
    }

    #[test]
    fn dot_has_one_cluster_per_level() {
        let dot = graph_of(&three_levels(), &State::new()).to_dot();
        for level in 0..=3 {
            assert!(dot.contains(&format!("subgraph \"cluster_level_{level:03}\"")), "{dot}");
            assert!(dot.contains(&format!("label = \"level {level}\";")));
        }
        assert!(dot.contains("[label = \"nested_guest.g3\"]"));
        // g1 (n4) waits for l0 (n0).
        assert!(dot.contains("n4 -> n0;"), "{dot}");
    }
}
