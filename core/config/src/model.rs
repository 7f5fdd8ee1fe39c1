//! The evaluated configuration: one [`ResourceConfig`] per resource instance, the outputs, and what
//! is needed to evaluate outputs once resources have their computed attributes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use nestform_types::{ResourceAddr, ResourceSpec};

use crate::diag::{Diagnostics, SourceFile, SourceRange};

/// A loaded, evaluated configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub sources: Vec<Arc<SourceFile>>,
    /// The final value of every variable.
    pub variables: BTreeMap<String, serde_json::Value>,
    /// One entry per instance: `count` and `for_each` are expanded.
    pub resources: BTreeMap<ResourceAddr, ResourceConfig>,
    pub outputs: BTreeMap<String, OutputConfig>,
    pub warnings: Diagnostics,
    /// What [`Config::evaluate_outputs`] needs besides the resources (added to the agreed API so
    /// outputs can be evaluated after apply; build it with `Default` when constructing a `Config`
    /// by hand).
    pub output_scope: OutputScope,
}

/// One resource instance as configured.
#[derive(Clone, Debug)]
pub struct ResourceConfig {
    pub addr: ResourceAddr,
    pub spec: ResourceSpec,
    /// The block's header, such as `nested_guest "g1"`.
    pub range: SourceRange,
    /// Ranges of attribute values by path: `vcpus`, `disk.root.size`, `network.lan.nat_network`.
    pub attr_ranges: BTreeMap<String, SourceRange>,
    /// Every resource referenced anywhere in the block.
    pub depends_on: BTreeSet<ResourceAddr>,
    /// Its `timeouts` block: limits of its operations, not part of what it is (a change of them alone
    /// changes nothing on a host).
    pub timeouts: nestform_types::Timeouts,
}

impl ResourceConfig {
    /// The range of attribute `path`, or the block's header when it was not written.
    pub fn attr_range(&self, path: &str) -> SourceRange {
        self.attr_ranges.get(path).cloned().unwrap_or_else(|| self.range.clone())
    }
}

/// `output "NAME"` as configured; its value is computed by [`Config::evaluate_outputs`].
#[derive(Clone, Debug)]
pub struct OutputConfig {
    pub name: String,
    pub range: SourceRange,
    pub description: Option<String>,
    pub sensitive: bool,
    pub depends_on: BTreeSet<ResourceAddr>,
}

/// An output's value, or `Unknown` while it depends on attributes known only after apply.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputValue {
    Known(serde_json::Value),
    Unknown,
}

/// The parts of evaluation kept for outputs: variables, locals, the output expressions and the
/// directory `file()` reads from.
#[derive(Clone, Debug, Default)]
pub struct OutputScope {
    pub(crate) vars: hcl::Map<String, hcl::Value>,
    pub(crate) locals: hcl::Map<String, hcl::Value>,
    pub(crate) exprs: BTreeMap<String, OutputExpr>,
    pub(crate) base_dir: Option<PathBuf>,
    pub(crate) shapes: BTreeMap<(nestform_types::ResourceType, String), crate::load::Shape>,
}

#[derive(Clone, Debug)]
pub(crate) struct OutputExpr {
    pub(crate) expr: hcl::edit::expr::Expression,
    pub(crate) range: SourceRange,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_range_falls_back_to_the_block() {
        let file = Arc::new(SourceFile::new("m.nf.hcl", "nested_guest \"g\" {\n  vcpus = 2\n}\n"));
        let mut ranges = BTreeMap::new();
        ranges.insert("vcpus".to_string(), SourceRange::new(&file, 29..30));
        let rc = ResourceConfig {
            addr: "nested_guest.g".parse().unwrap(),
            spec: ResourceSpec::Benchmark(nestform_types::BenchmarkSpec::article(
                nestform_types::BenchmarkKind::Boot,
                vec![],
            )),
            range: SourceRange::new(&file, 0..16),
            attr_ranges: ranges,
            depends_on: BTreeSet::new(),
            timeouts: Default::default(),
        };
        assert_eq!(rc.attr_range("vcpus").text(), "2");
        assert_eq!(rc.attr_range("memory").text(), "nested_guest \"g\"");
    }
}
