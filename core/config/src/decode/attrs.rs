//! Reading one attribute of an instance: evaluating it, remembering where it was written, and
//! converting it to the type a spec field wants (optional or required).

use hcl::edit::structure::Body;
use hcl::edit::Span;
use hcl::Value;

use super::Inst;
use crate::diag::{Diagnostic, SourceRange};
use crate::load::{range_of, Loader, Usage};
use crate::value::Mismatch;

/// The result of reading one attribute.
pub(super) enum Got {
    Missing,
    Failed,
    Value(Value, SourceRange),
}

impl Loader {
    pub(super) fn mismatch(&mut self, m: Mismatch, range: SourceRange) {
        self.error(Diagnostic::error(m.summary).with_range(range).with_help(m.help));
    }

    pub(super) fn get(&mut self, cx: &mut Inst, body: &Body, path: &str, name: &str) -> Got {
        let Some(attr) = body.get_attribute(name) else { return Got::Missing };
        let range = range_of(cx.file, attr.value.span());
        cx.ranges.insert(path.to_string(), range.clone());
        let self_block = Some((cx.addr.ty, cx.addr.name.as_str()));
        match self.eval(&attr.value, cx.file, cx.vars, Usage::Plan, self_block) {
            Some(v) => Got::Value(v, range),
            None => {
                cx.ok = false;
                Got::Failed
            }
        }
    }

    /// Reads an optional attribute and converts it.
    pub(super) fn opt<T>(
        &mut self,
        cx: &mut Inst,
        body: &Body,
        prefix: &str,
        name: &str,
        conv: impl Fn(&Value, &str) -> Result<T, Mismatch>,
    ) -> Option<T> {
        let path = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
        match self.get(cx, body, &path, name) {
            Got::Value(Value::Null, _) | Got::Missing | Got::Failed => None,
            Got::Value(v, range) => match conv(&v, name) {
                Ok(t) => Some(t),
                Err(m) => {
                    cx.ok = false;
                    self.mismatch(m, range);
                    None
                }
            },
        }
    }

    /// Reports a failed check of a decoded value at the attribute `path`, or at the block's header
    /// when the attribute was not written (a defaulted value). False when it failed.
    pub(super) fn check(&mut self, cx: &mut Inst, path: &str, result: Result<(), Mismatch>) -> bool {
        let Err(m) = result else { return true };
        cx.ok = false;
        let range = cx.ranges.get(path).cloned().unwrap_or_else(|| cx.header.clone());
        self.mismatch(m, range);
        false
    }

    /// Checks a guest's or network's libvirt name; a name defaulted from the block's label and
    /// instance key is reported at the header, with a hint to set `name`.
    pub(super) fn check_name(&mut self, cx: &mut Inst, name: &str) -> bool {
        let result = crate::names::object_name(name, "name").map_err(|mut m| {
            if !cx.ranges.contains_key("name") {
                m.summary = format!("{} (the name comes from `{}`)", m.summary, cx.addr);
                m.help = format!("set `name = \"...\"` in the block; {}", m.help);
            }
            m
        });
        self.check(cx, "name", result)
    }

    /// Reads a required attribute; a missing one is reported at `at` (the block's header).
    pub(super) fn req<T>(
        &mut self,
        cx: &mut Inst,
        body: &Body,
        prefix: &str,
        name: &str,
        at: &SourceRange,
        conv: impl Fn(&Value, &str) -> Result<T, Mismatch>,
    ) -> Option<T> {
        if body.get_attribute(name).is_none() {
            cx.ok = false;
            let what = if prefix.is_empty() {
                format!("`{}`", cx.addr.block())
            } else {
                format!("`{prefix}` of `{}`", cx.addr.block())
            };
            self.error(
                Diagnostic::error(format!("{what} is missing the required attribute `{name}`"))
                    .with_range(at.clone())
                    .with_help(format!("add `{name} = ...` to the block")),
            );
            return None;
        }
        self.opt(cx, body, prefix, name, conv)
    }
}
