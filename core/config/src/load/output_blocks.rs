//! Reading `output` blocks into [`OutputConfig`]s and their expressions; evaluating them waits
//! for apply (`crate::outputs`).

use std::collections::BTreeSet;

use hcl::edit::Span;

use super::{range_of, InstanceVars, Loader, Usage};
use crate::diag::Diagnostic;
use crate::model::{OutputConfig, OutputExpr};
use crate::refs;

impl Loader {
    pub(super) fn collect_outputs(&mut self) {
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
}
