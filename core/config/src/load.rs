//! Loading: parse every file, collect the top-level blocks, order blocks and locals by their
//! references, and evaluate them in that order.
//!
//! Problems are collected, never returned early: a block or local that fails is marked failed, and
//! whatever refers to it is skipped silently so one mistake is reported once.
//!
//! This module owns the loader's state and the order of the phases ([`Loader::run`]); collecting
//! the top-level blocks (`collect`), ordering and evaluating blocks and locals (`order`), reading
//! `output` blocks (`output_blocks`) and the names each block may hold (`schema`) have their own
//! modules.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use hcl::edit::expr::Expression;
use hcl::edit::structure::Block;
use hcl::edit::Span;
use hcl::eval::Context;
use hcl::{Map, Value};
use nestform_types::{ResourceAddr, ResourceType};

use crate::diag::{Diagnostic, Diagnostics, SourceFile, SourceRange};
use crate::model::Config;
use crate::VarInputs;

mod collect;
mod order;
mod output_blocks;
mod schema;

pub(crate) use schema::{spec_fields, COMPUTED};

/// The hidden attribute that carries a resource instance's address in evaluated values, so
/// `host = kvm_host.l0` (which evaluates to the instance's attributes) resolves to an address.
pub(crate) const ADDR_KEY: &str = "__nestform_address";

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
    /// Evaluation contexts by what their expressions read (`crate::eval`), until a value changes.
    pub ctx_cache: std::cell::RefCell<HashMap<Vec<crate::eval::Root>, Context<'static>>>,
    /// The functions of the language, declared once.
    pub functions: Context<'static>,
    parse_failed: bool,
}

pub(crate) fn range_of(file: &Arc<SourceFile>, span: Option<Range<usize>>) -> SourceRange {
    SourceRange::new(file, span.unwrap_or(0..0))
}

pub(crate) fn header_range(file: &Arc<SourceFile>, block: &Block) -> SourceRange {
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
            ctx_cache: std::cell::RefCell::new(HashMap::new()),
            functions: {
                let mut ctx = Context::new();
                crate::funcs::declare_all(&mut ctx);
                ctx
            },
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_range_covers_type_and_labels() {
        let file = Arc::new(SourceFile::new("a.nf.hcl", "nested_guest \"g1\" {\n  vcpus = 1\n}\n"));
        let body = hcl::edit::parser::parse_body(&file.text).unwrap();
        let block = body.blocks().next().unwrap();
        assert_eq!(header_range(&file, block).text(), "nested_guest \"g1\"");
    }
}
