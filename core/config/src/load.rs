//! Loading: parse every file, collect the top-level blocks, order blocks and locals by their
//! references, and evaluate them in that order.
//!
//! Problems are collected, never returned early: a block or local that fails is marked failed, and
//! whatever refers to it is skipped silently so one mistake is reported once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use hcl::edit::expr::Expression;
use hcl::edit::structure::{Block, Body, Structure};
use hcl::edit::Span;
use hcl::eval::Context;
use hcl::{Map, Value};
use nestform_types::{ResourceAddr, ResourceType};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::diag::{Diagnostic, Diagnostics, SourceFile, SourceRange};
use crate::model::{Config, OutputConfig, OutputExpr};
use crate::refs::{self, RefRoot, Reference};
use crate::suggest;
use crate::VarInputs;

/// The hidden attribute that carries a resource instance's address in evaluated values, so
/// `host = kvm_host.l0` (which evaluates to the instance's attributes) resolves to an address.
pub(crate) const ADDR_KEY: &str = "__nestform_address";

pub(crate) const BLOCK_TYPES: [&str; 7] =
    ["kvm_host", "nat_network", "nested_guest", "benchmark", "variable", "locals", "output"];

/// Attributes of each resource type known only after apply.
pub(crate) const COMPUTED: [&str; 12] = [
    "id",
    "uuid",
    "addresses",
    "address",
    "ip",
    "mac",
    "kernel",
    "boot_seconds",
    "results",
    "facts",
    "level",
    "state",
];

/// The attributes a resource instance has when planning (its spec fields).
pub(crate) fn spec_fields(ty: ResourceType) -> &'static [&'static str] {
    match ty {
        ResourceType::KvmHost => &["uri", "guest", "nested", "kvm_module_options"],
        ResourceType::NatNetwork => &["host", "name", "cidr", "dhcp", "domain"],
        ResourceType::NestedGuest => {
            &["host", "name", "vcpus", "memory", "cpu", "disks", "networks", "running", "install"]
        }
        ResourceType::Benchmark => &["kind", "targets", "size", "iterations", "repeat"],
    }
}

/// A top-level block with the file it came from.
#[derive(Clone, Debug)]
pub(crate) struct Located {
    pub block: Block,
    pub file: Arc<SourceFile>,
    pub header: SourceRange,
}

/// A node of the evaluation order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Node {
    Local(String),
    Resource(ResourceType, String),
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Local(n) => write!(f, "local.{n}"),
            Node::Resource(t, n) => write!(f, "{t}.{n}"),
        }
    }
}

/// Where an expression is used, which decides what it may refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Usage {
    /// A resource argument or local: values must be known when planning.
    Plan,
    /// An output: values known only after apply are allowed.
    Output,
}

/// The per-instance names: `each.key`/`each.value` or `count.index`.
#[derive(Clone, Debug, Default)]
pub(crate) struct InstanceVars {
    pub each: Option<(String, Value)>,
    pub count: Option<u64>,
}

/// Whether a block is one instance, `count` instances, or `for_each` instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Single,
    Count,
    ForEach,
}

pub(crate) struct Loader {
    pub diags: Diagnostics,
    pub base_dir: Option<PathBuf>,
    pub files: Vec<Arc<SourceFile>>,
    pub variables: Vec<Located>,
    pub locals: BTreeMap<String, (Expression, Arc<SourceFile>, SourceRange)>,
    pub resources: BTreeMap<(ResourceType, String), Located>,
    pub outputs: BTreeMap<String, Located>,
    /// Evaluated values: `var`, `local` and one object per resource type.
    pub var_values: Map<String, Value>,
    pub local_values: Map<String, Value>,
    pub resource_values: BTreeMap<ResourceType, Map<String, Value>>,
    pub instances: BTreeMap<(ResourceType, String), Vec<ResourceAddr>>,
    pub shapes: BTreeMap<(ResourceType, String), Shape>,
    pub failed: HashSet<Node>,
    pub config: Config,
    pub ctx_cache: std::cell::RefCell<Option<Context<'static>>>,
    parse_failed: bool,
}

pub(crate) fn range_of(file: &Arc<SourceFile>, span: Option<Range<usize>>) -> SourceRange {
    SourceRange::new(file, span.unwrap_or(0..0))
}

fn header_range(file: &Arc<SourceFile>, block: &Block) -> SourceRange {
    let start = block.ident.span().map_or(0, |s| s.start);
    let end =
        block.labels.last().and_then(|l| l.span()).or_else(|| block.ident.span()).map_or(start, |s| s.end);
    SourceRange::new(file, start..end)
}

impl Loader {
    pub fn new(files: Vec<SourceFile>, base_dir: Option<PathBuf>) -> Loader {
        let files: Vec<Arc<SourceFile>> = files.into_iter().map(Arc::new).collect();
        Loader {
            diags: Diagnostics::new(),
            base_dir,
            files,
            variables: vec![],
            locals: BTreeMap::new(),
            resources: BTreeMap::new(),
            outputs: BTreeMap::new(),
            var_values: Map::new(),
            local_values: Map::new(),
            resource_values: BTreeMap::new(),
            instances: BTreeMap::new(),
            shapes: BTreeMap::new(),
            failed: HashSet::new(),
            config: Config::default(),
            ctx_cache: std::cell::RefCell::new(None),
            parse_failed: false,
        }
    }

    pub fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Runs every phase and returns the configuration or every problem found.
    pub fn run(mut self, vars: &VarInputs) -> Result<Config, Diagnostics> {
        for file in self.files.clone() {
            self.collect_file(&file);
        }
        self.config.sources = self.files.clone();
        // With a file that does not parse, its blocks are missing and every reference to them
        // would be reported too; the syntax errors alone say what to fix first.
        if !self.parse_failed {
            self.resolve_variables(vars);
            self.evaluate_graph();
            self.check_all();
            self.collect_outputs();
        }
        let mut seen = HashSet::new();
        // Instances of one block repeat the same mistake; report it once.
        let diags: Vec<Diagnostic> = std::mem::take(&mut self.diags)
            .into_iter()
            .filter(|d| {
                seen.insert((
                    d.summary.clone(),
                    d.range.as_ref().map(|r| (r.file.name.clone(), r.span.clone())),
                ))
            })
            .collect();
        let mut diags = diags;
        // Source order reads best; problems without a place (command-line values) come first.
        let order: HashMap<String, usize> =
            self.files.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        diags.sort_by_key(|d| {
            d.range.as_ref().map(|r| (order.get(&r.file.name).copied().unwrap_or(usize::MAX), r.span.start))
        });
        let diags = Diagnostics(diags);
        if diags.has_errors() {
            return Err(diags);
        }
        let mut config = self.config;
        config.warnings = diags;
        config.variables =
            self.var_values.iter().map(|(k, v)| (k.clone(), crate::value::to_json(v))).collect();
        config.output_scope.vars = self.var_values;
        config.output_scope.locals = self.local_values;
        config.output_scope.base_dir = self.base_dir;
        config.output_scope.shapes = self.shapes;
        Ok(config)
    }

    fn collect_file(&mut self, file: &Arc<SourceFile>) {
        let body = match hcl::edit::parser::parse_body(&file.text) {
            Ok(body) => body,
            Err(e) => {
                let at = e.location().offset().min(file.text.len());
                let end = file.text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
                self.parse_failed = true;
                self.error(
                    Diagnostic::error(format!("cannot parse `{}`: {}", file.name, e.message()))
                        .with_range(SourceRange::new(file, at..end))
                        .with_label(e.message().to_string())
                        .with_help("fix the syntax here; blocks look like `nested_guest \"NAME\" { ... }` and attributes like `key = value`"),
                );
                return;
            }
        };
        for structure in body.iter() {
            match structure {
                Structure::Attribute(attr) => self.error(
                    Diagnostic::error(format!(
                        "unexpected attribute `{}` at the top level",
                        attr.key.as_str()
                    ))
                    .with_range(range_of(file, attr.span()))
                    .with_help(
                        "attributes go inside a block; top-level values go in a `locals { ... }` block",
                    ),
                ),
                Structure::Block(block) => self.collect_block(file, block),
            }
        }
    }

    fn collect_block(&mut self, file: &Arc<SourceFile>, block: &Block) {
        let kind = block.ident.as_str();
        let header = header_range(file, block);
        let labels: Vec<&str> = block.labels.iter().map(|l| l.as_str()).collect();
        if !BLOCK_TYPES.contains(&kind) {
            self.error(
                Diagnostic::error(format!("unknown block type `{kind}`"))
                    .with_range(range_of(file, block.ident.span()))
                    .with_help(suggest::help_for(kind, "block types", &BLOCK_TYPES)),
            );
            return;
        }
        let want = if kind == "locals" { 0 } else { 1 };
        if labels.len() != want {
            let help = if want == 0 {
                "write `locals { ... }` without a name".to_string()
            } else {
                format!("write `{kind} \"NAME\" {{ ... }}` with exactly one name")
            };
            self.error(
                Diagnostic::error(format!(
                    "`{kind}` takes {want} label{}, got {}",
                    if want == 1 { "" } else { "s" },
                    labels.len()
                ))
                .with_range(header)
                .with_help(help),
            );
            return;
        }
        if let Some(name) = labels.first() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                self.error(
                    Diagnostic::error(format!("`{name}` is not a valid name"))
                        .with_range(header)
                        .with_help("names have only letters, digits, `_` and `-`"),
                );
                return;
            }
        }
        let located = Located { block: block.clone(), file: file.clone(), header: header.clone() };
        let prior = match (kind, ResourceType::parse(kind)) {
            ("locals", _) => {
                for attr in block.body.attributes() {
                    let name = attr.key.as_str().to_string();
                    let range = range_of(file, attr.key.span());
                    if let Some((_, _, first)) = self.locals.get(&name) {
                        let first = first.clone();
                        self.duplicate(&format!("local.{name}"), range, first);
                    } else {
                        self.locals.insert(name, (attr.value.clone(), file.clone(), range));
                    }
                }
                for inner in block.body.blocks() {
                    self.error(
                        Diagnostic::error(format!("unexpected block `{}` in `locals`", inner.ident.as_str()))
                            .with_range(header_range(file, inner))
                            .with_help("`locals` holds only attributes, like `name = value`"),
                    );
                }
                None
            }
            ("variable", _) => {
                let prior = self
                    .variables
                    .iter()
                    .find(|v| v.block.labels[0].as_str() == labels[0])
                    .map(|v| v.header.clone());
                if prior.is_none() {
                    self.variables.push(located);
                }
                prior
            }
            ("output", _) => {
                let prior = self.outputs.get(labels[0]).map(|o| o.header.clone());
                if prior.is_none() {
                    self.outputs.insert(labels[0].to_string(), located);
                }
                prior
            }
            (_, Some(ty)) => {
                let key = (ty, labels[0].to_string());
                let prior = self.resources.get(&key).map(|r| r.header.clone());
                if prior.is_none() {
                    self.resources.insert(key, located);
                }
                prior
            }
            _ => None,
        };
        if let Some(first) = prior {
            self.duplicate(&format!("{kind}.{}", labels[0]), header, first);
        }
    }

    fn duplicate(&mut self, what: &str, here: SourceRange, first: SourceRange) {
        self.error(
            Diagnostic::error(format!("`{what}` is declared twice"))
                .with_range(here)
                .with_label("declared again here")
                .with_related(first, "first declared here")
                .with_help("rename one of them or remove the duplicate"),
        );
    }

    /// Orders locals and resource blocks so each comes after what it refers to, reports cycles, and
    /// evaluates them in that order.
    fn evaluate_graph(&mut self) {
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
        // Tarjan's order puts each component after the components it points to: dependencies first.
        for scc in petgraph::algo::tarjan_scc(&graph) {
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

    fn collect_outputs(&mut self) {
        for (name, o) in self.outputs.clone() {
            let file = o.file.clone();
            let body = &o.block.body;
            self.unknown_attributes(
                body,
                &file,
                &["value", "description", "sensitive", "depends_on"],
                &[],
                "output",
            );
            let Some(value) = body.get_attribute("value") else {
                self.error(
                    Diagnostic::error(format!("`output.{name}` has no `value`"))
                        .with_range(o.header.clone())
                        .with_help("add `value = ...`"),
                );
                continue;
            };
            let inst = InstanceVars::default();
            let mut depends_on = BTreeSet::new();
            let mut found = refs::references(&value.value);
            if let Some(d) = body.get_attribute("depends_on") {
                found.extend(refs::references(&d.value));
            }
            if !self.check_references(&value.value, &file, &inst, Usage::Output, None) {
                continue;
            }
            for r in &found {
                depends_on.extend(self.addrs_of_ref(r));
            }
            let description = body
                .get_attribute("description")
                .and_then(|a| self.eval(&a.value, &file, &inst, Usage::Plan, None))
                .map(|v| crate::value::string(&v, "description"));
            let sensitive = body
                .get_attribute("sensitive")
                .and_then(|a| self.eval(&a.value, &file, &inst, Usage::Plan, None))
                .map(|v| crate::value::boolean(&v, "sensitive"));
            let (description, sensitive) = match (description.transpose(), sensitive.transpose()) {
                (Ok(d), Ok(s)) => (d, s.unwrap_or(false)),
                (Err(m), _) | (_, Err(m)) => {
                    self.error(Diagnostic::error(m.summary).with_range(o.header.clone()).with_help(m.help));
                    continue;
                }
            };
            let value_range = range_of(&file, value.value.span());
            self.config
                .output_scope
                .exprs
                .insert(name.clone(), OutputExpr { expr: value.value.clone(), range: value_range });
            self.config.outputs.insert(
                name.clone(),
                OutputConfig { name, range: o.header.clone(), description, sensitive, depends_on },
            );
        }
    }

    /// Reports attributes and nested blocks that `what` does not have.
    pub fn unknown_attributes(
        &mut self,
        body: &Body,
        file: &Arc<SourceFile>,
        attrs: &[&str],
        blocks: &[&str],
        what: &str,
    ) {
        for attr in body.attributes() {
            let key = attr.key.as_str();
            if !attrs.contains(&key) {
                let help = if blocks.contains(&key) {
                    format!("`{key}` is a block: write `{key} \"NAME\" {{ ... }}`")
                } else {
                    suggest::help_for(key, "attributes", attrs)
                };
                self.error(
                    Diagnostic::error(format!("`{what}` has no attribute `{key}`"))
                        .with_range(range_of(file, attr.key.span()))
                        .with_help(help),
                );
            }
        }
        for block in body.blocks() {
            let key = block.ident.as_str();
            if !blocks.contains(&key) {
                let help = if attrs.contains(&key) {
                    format!("`{key}` is an attribute: write `{key} = ...`")
                } else {
                    suggest::help_for(key, "blocks", blocks)
                };
                self.error(
                    Diagnostic::error(format!("`{what}` has no block `{key}`"))
                        .with_range(header_range(file, block))
                        .with_help(help),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nestform_types::*;

    #[test]
    fn header_range_covers_type_and_labels() {
        let file = Arc::new(SourceFile::new("a.nf.hcl", "nested_guest \"g1\" {\n  vcpus = 1\n}\n"));
        let body = hcl::edit::parser::parse_body(&file.text).unwrap();
        let block = body.blocks().next().unwrap();
        assert_eq!(header_range(&file, block).text(), "nested_guest \"g1\"");
    }

    #[test]
    fn spec_fields_are_the_serialized_fields() {
        // Plan-time objects are built from serialized specs; the field lists must not drift.
        let host: ResourceAddr = "kvm_host.l0".parse().unwrap();
        let specs = [
            serde_json::to_value(KvmHostSpec {
                uri: Some("x".into()),
                guest: Some(host.clone()),
                nested: true,
                kvm_module_options: [("a".to_string(), "1".to_string())].into(),
            }),
            serde_json::to_value(NatNetworkSpec {
                host: host.clone(),
                name: "n".into(),
                cidr: "10.0.0.0/24".parse().unwrap(),
                dhcp: Some(DhcpRange {
                    start: "10.0.0.2".parse().unwrap(),
                    end: "10.0.0.9".parse().unwrap(),
                }),
                domain: Some("d".into()),
            }),
            serde_json::to_value(NestedGuestSpec {
                host: host.clone(),
                name: "g".into(),
                vcpus: 1,
                memory: ByteSize::mib(1),
                cpu: default_cpu(),
                disks: vec![DiskSpec {
                    name: "d".into(),
                    size: ByteSize::mib(1),
                    format: Default::default(),
                    preallocation: Default::default(),
                    cache: Default::default(),
                    bus: Default::default(),
                }],
                networks: vec![InterfaceSpec { name: "n".into(), nat_network: host.clone(), mac: None }],
                running: true,
                install: Some(InstallSpec::Lab(LabInstall::default())),
            }),
            serde_json::to_value(BenchmarkSpec {
                kind: BenchmarkKind::Boot,
                targets: vec![host],
                size: Some(ByteSize::mib(1)),
                iterations: Some(1),
                repeat: 1,
            }),
        ];
        for (ty, spec) in ResourceType::ALL.into_iter().zip(specs) {
            let mut keys: Vec<String> = spec.unwrap().as_object().unwrap().keys().cloned().collect();
            let mut want: Vec<String> = spec_fields(ty).iter().map(|s| s.to_string()).collect();
            keys.sort();
            want.sort();
            assert_eq!(keys, want, "{ty}");
        }
    }
}
