//! Decoding a `benchmark` block: what it measures and which hosts or guests it runs on. Each kind
//! takes its own settings; one it does not take is an error at the attribute, and the ones left out
//! get the article's values, so the plan shows what will run.

use hcl::edit::structure::Body;
use hcl::edit::Span;
use nestform_types::{
    BenchmarkKind, BenchmarkSpec, ByteSize, ColdCache, ResourceAddr, ResourceSpec, ResourceType,
};

use super::Inst;
use crate::diag::{Diagnostic, SourceRange};
use crate::load::Loader;
use crate::value;

/// The settings every kind may take, and which kinds take each.
const SETTINGS: [(&str, &[BenchmarkKind]); 6] = {
    use BenchmarkKind::*;
    [
        ("size", &[Sha256, Network]),
        ("sizes", &[BlockRead]),
        ("cold", &[BlockRead]),
        ("iterations", &[ShellLoop]),
        ("repeat", &[BlockRead, Sha256, ShellLoop, Network]),
        ("warmup", &[Sha256, ShellLoop, Network]),
    ]
};

/// What a kind does with each setting, for the help of a setting it does not take.
fn takes(kind: BenchmarkKind) -> String {
    let names: Vec<String> = SETTINGS
        .iter()
        .filter(|(_, kinds)| kinds.contains(&kind))
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    match names.as_slice() {
        [] => format!("a `{}` benchmark takes no settings besides `targets`", kind.as_str()),
        [one] => format!("a `{}` benchmark takes {one}", kind.as_str()),
        [init @ .., last] => format!("a `{}` benchmark takes {} and {last}", kind.as_str(), init.join(", ")),
    }
}

impl Loader {
    /// A `sha256` file is held in the page cache of each target guest, next to everything else the
    /// guest runs: it may take at most half of a guest's memory.
    fn check_fits_in_memory(&mut self, cx: &mut Inst, size: ByteSize, targets: &[ResourceAddr]) {
        for target in targets {
            let Some(ResourceSpec::NestedGuest(g)) = self.config.resources.get(target).map(|r| &r.spec)
            else {
                continue;
            };
            if size.bytes() > g.memory.bytes() / 2 {
                let fits = ByteSize(g.memory.bytes() / 2);
                let what = if cx.ranges.contains_key("size") {
                    format!("`size` {size}")
                } else {
                    format!("the default `size`, {size} (the article's),")
                };
                self.check(
                    cx,
                    "size",
                    Err(value::Mismatch {
                        summary: format!(
                            "{what} does not fit in `{target}`, which has {} of memory",
                            g.memory
                        ),
                        help: format!(
                            "the file is held in the target's page cache next to everything else it runs: \
                             give `size` at most {fits} (half its memory), or the guest more memory"
                        ),
                    }),
                );
                return;
            }
        }
    }

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
        let kind = kind?;
        if let (BenchmarkKind::Boot, Some(host)) =
            (kind, targets.iter().flatten().find(|t| t.ty == ResourceType::KvmHost))
        {
            let host = host.clone();
            self.check(
                cx,
                "targets",
                Err(value::Mismatch {
                    summary: format!("`{host}` cannot be a target of a `boot` benchmark"),
                    help: "a boot is measured when nestform creates a guest: name `nested_guest` targets"
                        .into(),
                }),
            );
        }
        for (name, kinds) in SETTINGS {
            if let Some(attr) = body.get_attribute(name).filter(|_| !kinds.contains(&kind)) {
                cx.ok = false;
                self.error(
                    Diagnostic::error(format!("`{name}` does not apply to a `{}` benchmark", kind.as_str()))
                        .with_range(crate::load::range_of(cx.file, attr.key.span()))
                        .with_help(format!("{}; remove `{name}`", takes(kind))),
                );
            }
        }
        let article = BenchmarkSpec::article(kind, vec![]);
        let size = self.opt(cx, body, "", "size", value::nonzero_size).or(article.size);
        if let (BenchmarkKind::Sha256, Some(size), Some(targets)) = (kind, size, &targets) {
            self.check_fits_in_memory(cx, size, targets);
        }
        let takes = |name: &str| SETTINGS.iter().any(|(n, kinds)| *n == name && kinds.contains(&kind));
        let sizes = match self.opt(cx, body, "", "sizes", |v, n| value::list(v, n, value::nonzero_size)) {
            Some(s) if s.is_empty() && takes("sizes") => {
                self.check(
                    cx,
                    "sizes",
                    Err(value::Mismatch {
                        summary: "`sizes` is empty".into(),
                        help: "give at least one size, e.g. `sizes = [\"1GiB\"]`".into(),
                    }),
                );
                s
            }
            Some(s) => s,
            None => article.sizes,
        };
        let cold = self
            .opt(cx, body, "", "cold", |v, n| value::word(v, n, ColdCache::WORDS, ColdCache::parse))
            .or(article.cold);
        let iterations =
            self.opt(cx, body, "", "iterations", |v, n| value::whole_number(v, n, 1)).or(article.iterations);
        // Settings a kind does not take were reported above; its own values stand.
        let repeat = self.opt(cx, body, "", "repeat", |v, n| value::u32_number(v, n, 1));
        let warmup = self.opt(cx, body, "", "warmup", |v, n| value::u32_number(v, n, 0));
        let repeat = repeat.filter(|_| takes("repeat")).unwrap_or(article.repeat);
        let warmup = warmup.filter(|_| takes("warmup")).unwrap_or(article.warmup);
        Some(BenchmarkSpec { kind, targets: targets?, size, sizes, cold, iterations, repeat, warmup })
    }
}
