//! The evaluation order: locals and resource blocks as a graph of their references, evaluated
//! dependencies first; a cycle is one diagnostic naming every member.

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};

use super::{InstanceVars, Loader, Node, Usage};
use crate::diag::{Diagnostic, SourceRange};
use crate::refs::{self, RefRoot, Reference};
use crate::suggest;

impl Loader {
    /// Orders locals and resource blocks so each comes after what it refers to, reports cycles, and
    /// evaluates them in that order.
    pub(super) fn evaluate_graph(&mut self) {
        let mut graph: DiGraph<Node, ()> = DiGraph::new();
        let mut index: HashMap<Node, NodeIndex> = HashMap::new();
        let mut nodes: Vec<(Node, Vec<Reference>)> = vec![];
        for (name, (expr, _, _)) in &self.locals {
            nodes.push((Node::Local(name.clone()), refs::references(expr)));
        }
        for ((ty, name), r) in &self.resources {
            nodes.push((Node::Resource(*ty, name.clone()), refs::block_references(&r.block.body)));
        }
        for (node, _) in &nodes {
            index.insert(node.clone(), graph.add_node(node.clone()));
        }
        for (node, found) in &nodes {
            for r in found {
                let dep = match &r.root {
                    RefRoot::Local(n) => Node::Local(n.clone()),
                    RefRoot::Resource(t, n) => Node::Resource(*t, n.clone()),
                    _ => continue,
                };
                if let Some(&to) = index.get(&dep) {
                    graph.update_edge(index[node], to, ());
                }
            }
        }
        // Kosaraju's order puts each component after the components it points to: dependencies
        // first. Tarjan's recursive walk overflowed the stack on a chain of 30,000 locals.
        for scc in petgraph::algo::kosaraju_scc(&graph) {
            let cyclic = scc.len() > 1 || graph.contains_edge(scc[0], scc[0]);
            if cyclic {
                let mut members: Vec<Node> = scc.iter().map(|i| graph[*i].clone()).collect();
                members.sort();
                self.report_cycle(&members);
                self.failed.extend(members);
                continue;
            }
            match graph[scc[0]].clone() {
                Node::Local(name) => self.evaluate_local(&name),
                Node::Resource(ty, name) => self.evaluate_resource(ty, &name),
            }
        }
    }

    fn node_range(&self, node: &Node) -> Option<SourceRange> {
        match node {
            Node::Local(n) => self.locals.get(n).map(|l| l.2.clone()),
            Node::Resource(t, n) => self.resources.get(&(*t, n.clone())).map(|r| r.header.clone()),
        }
    }

    fn report_cycle(&mut self, members: &[Node]) {
        let names = suggest::quoted_list(
            members.iter().map(|m| m.to_string()).collect::<Vec<_>>().iter().map(String::as_str),
        );
        let mut d = Diagnostic::error(format!("dependency cycle between {names}"))
            .with_detail("each of these refers to another one of them, so none can be evaluated first")
            .with_help("remove one of the references that close the circle");
        for (i, m) in members.iter().enumerate() {
            let Some(r) = self.node_range(m) else { continue };
            if i == 0 {
                d = d.with_range(r).with_label(format!("`{m}` is part of the cycle"));
            } else {
                d = d.with_related(r, format!("`{m}` is part of the cycle"));
            }
        }
        self.error(d);
    }

    fn evaluate_local(&mut self, name: &str) {
        let (expr, file, _) = self.locals[name].clone();
        match self.eval(&expr, &file, &InstanceVars::default(), Usage::Plan, None) {
            Some(v) => {
                self.local_values.insert(name.to_string(), v);
                self.values_changed();
            }
            None => {
                self.failed.insert(Node::Local(name.to_string()));
            }
        }
    }
}
