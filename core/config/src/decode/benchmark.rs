//! Decoding a `benchmark` block: what it measures and which hosts or guests it runs on.

use hcl::edit::structure::Body;
use nestform_types::{BenchmarkKind, BenchmarkSpec, ResourceType};

use super::Inst;
use crate::diag::SourceRange;
use crate::load::Loader;
use crate::value;

impl Loader {
    pub(super) fn decode_benchmark(
        &mut self,
        cx: &mut Inst,
        body: &Body,
        header: &SourceRange,
    ) -> Option<BenchmarkSpec> {
        let kind = self.req(cx, body, "", "kind", header, |v, n| {
            value::word(v, n, BenchmarkKind::WORDS, BenchmarkKind::parse)
        });
        let targets = self.reference_list(
            cx,
            body,
            "",
            "targets",
            &[ResourceType::KvmHost, ResourceType::NestedGuest],
            true,
            true,
        );
        let size = self.opt(cx, body, "", "size", value::size);
        let iterations = self.opt(cx, body, "", "iterations", |v, n| value::whole_number(v, n, 1));
        let repeat = self.opt(cx, body, "", "repeat", |v, n| value::u32_number(v, n, 1)).unwrap_or(1);
        Some(BenchmarkSpec { kind: kind?, targets: targets?, size, iterations, repeat })
    }
}
