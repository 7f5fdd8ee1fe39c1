//! Evaluating expressions: the context (functions, what the expression reads of `var`, `local`
//! and the resources evaluated so far, `each` / `count`), the reference checks done first, and
//! diagnostics for evaluation errors.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use hcl::edit::expr::Expression;
use hcl::edit::Span;
use hcl::eval::Context;
use hcl::{Map, Value};
use nestform_types::{InstanceKey, ResourceAddr, ResourceType};

use crate::diag::{Diagnostic, SourceFile, SourceRange};
use crate::funcs;
use crate::limits::{self, Failure};
use crate::load::{range_of, spec_fields, InstanceVars, Loader, Node, Shape, Usage, COMPUTED};
use crate::refs::{self, KeyRef, RefRoot, Reference};
use crate::suggest;

/// A value an expression reads from the context: one variable, local or resource block, or (for
/// a bare `var`, `local` or block type) all of them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Root {
    Var(Option<String>),
    Local(Option<String>),
    Resource(ResourceType, Option<String>),
}

/// What `refs` read from the context, sorted: the key of a cached context.
fn roots(refs: &[Reference]) -> Vec<Root> {
    let mut out: Vec<Root> = refs
        .iter()
        .filter_map(|r| match &r.root {
            RefRoot::Var(n) => Some(Root::Var(Some(n.clone()))),
            RefRoot::Local(n) => Some(Root::Local(Some(n.clone()))),
            RefRoot::Resource(ty, n) => Some(Root::Resource(*ty, Some(n.clone()))),
            RefRoot::Other(o) if o == "var" => Some(Root::Var(None)),
            RefRoot::Other(o) if o == "local" => Some(Root::Local(None)),
            RefRoot::Other(o) => ResourceType::parse(o).map(|ty| Root::Resource(ty, None)),
            RefRoot::Each | RefRoot::Count => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

impl Loader {
    /// The evaluation context of an expression that reads `roots`: the functions, those values,
    /// and the instance's own `each`/`count`.
    pub fn with_context<T>(&self, roots: Vec<Root>, inst: &InstanceVars, f: impl FnOnce(&Context) -> T) -> T {
        // A context holds only what the expression reads: one with every value evaluated so far,
        // rebuilt after each local, made a chain of n locals copy n²/2 values. Instances of a
        // block read the same roots, so contexts are kept until a value changes. `each` and
        // `count` are overwritten per instance: reference checks keep other blocks from reading a
        // stale one.
        let mut cache = self.ctx_cache.borrow_mut();
        let ctx = match cache.entry(roots) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let ctx = self.context_of(e.key());
                e.insert(ctx)
            }
        };
        if let Some((k, v)) = &inst.each {
            let mut each = Map::new();
            each.insert("key".to_string(), Value::from(k.clone()));
            each.insert("value".to_string(), v.clone());
            ctx.declare_var("each", Value::Object(each));
        }
        if let Some(i) = inst.count {
            let mut count = Map::new();
            count.insert("index".to_string(), Value::from(i));
            ctx.declare_var("count", Value::Object(count));
        }
        f(ctx)
    }

    /// Forgets the cached contexts after a value changed.
    pub fn values_changed(&mut self) {
        self.ctx_cache.get_mut().clear();
    }

    fn context_of(&self, roots: &[Root]) -> Context<'static> {
        let mut ctx = self.functions.clone();
        let mut vars = Map::new();
        let mut locals = Map::new();
        let mut blocks: BTreeMap<ResourceType, Map<String, Value>> = BTreeMap::new();
        let pick = |all: &Map<String, Value>, name: &Option<String>, into: &mut Map<String, Value>| match name
        {
            Some(n) => {
                if let Some(v) = all.get(n) {
                    into.insert(n.clone(), v.clone());
                }
            }
            None => into.extend(all.iter().map(|(k, v)| (k.clone(), v.clone()))),
        };
        let none = Map::new();
        for root in roots {
            match root {
                Root::Var(n) => pick(&self.var_values, n, &mut vars),
                Root::Local(n) => pick(&self.local_values, n, &mut locals),
                Root::Resource(ty, n) => {
                    pick(self.resource_values.get(ty).unwrap_or(&none), n, blocks.entry(*ty).or_default())
                }
            }
        }
        ctx.declare_var("var", Value::Object(vars));
        ctx.declare_var("local", Value::Object(locals));
        for ty in ResourceType::ALL {
            ctx.declare_var(ty.as_str(), Value::Object(blocks.remove(&ty).unwrap_or_default()));
        }
        ctx
    }

    /// Checks the references of `expr` and evaluates it. `None` when it failed (reported) or refers
    /// to something that failed (already reported).
    pub fn eval(
        &mut self,
        expr: &Expression,
        file: &Arc<SourceFile>,
        inst: &InstanceVars,
        usage: Usage,
        self_block: Option<(ResourceType, &str)>,
    ) -> Option<Value> {
        if !self.check_references(expr, file, inst, usage, self_block) {
            return None;
        }
        let plain = limits::guarded(expr);
        let roots = roots(&refs::references(expr));
        let result = self.with_context(roots, inst, |ctx| {
            funcs::with_base_dir(self.base_dir.as_deref(), || limits::evaluate(&plain, ctx))
        });
        match result {
            Ok(v) => Some(v),
            Err(Failure::Eval(e)) => {
                self.error(eval_diagnostic(&e, expr, file));
                None
            }
            Err(Failure::TooLarge(why)) => {
                // The first `for` is where the work is; a value built otherwise has none.
                let at = refs::first_for(expr)
                    .map_or_else(|| range_of(file, expr.span()), |s| SourceRange::new(file, s));
                self.error(
                    Diagnostic::error(format!("this expression is too large: {why}"))
                        .with_range(at)
                        .with_help(limits::too_large_help()),
                );
                None
            }
        }
    }

    /// Reports unknown names and plan-time uses of values known only after apply. False when the
    /// expression must not be evaluated.
    pub fn check_references(
        &mut self,
        expr: &Expression,
        file: &Arc<SourceFile>,
        inst: &InstanceVars,
        usage: Usage,
        self_block: Option<(ResourceType, &str)>,
    ) -> bool {
        let mut ok = true;
        for r in refs::references(expr) {
            let range = SourceRange::new(file, r.span.clone());
            let problem = match &r.root {
                RefRoot::Var(n) if !self.variables.iter().any(|v| v.block.labels[0].as_str() == n) => {
                    let names: Vec<&str> =
                        self.variables.iter().map(|v| v.block.labels[0].as_str()).collect();
                    Some(Diagnostic::error(format!("unknown variable `var.{n}`")).with_help(
                        match suggest::nearest(n, names.iter().copied()) {
                            Some(s) => format!("did you mean `var.{s}`?"),
                            None => format!("declare it with `variable \"{n}\" {{ default = ... }}`"),
                        },
                    ))
                }
                RefRoot::Var(n) if !self.var_values.contains_key(n.as_str()) => {
                    ok = false;
                    None
                }
                RefRoot::Local(n) if !self.locals.contains_key(n) => {
                    let names: Vec<&str> = self.locals.keys().map(String::as_str).collect();
                    Some(Diagnostic::error(format!("unknown local value `local.{n}`")).with_help(
                        match suggest::nearest(n, names.iter().copied()) {
                            Some(s) => format!("did you mean `local.{s}`?"),
                            None => format!("declare it in a `locals {{ {n} = ... }}` block"),
                        },
                    ))
                }
                RefRoot::Local(n) if self.failed.contains(&Node::Local(n.clone())) => {
                    ok = false;
                    None
                }
                RefRoot::Resource(ty, n) => self.check_resource_ref(&r, *ty, n, usage, self_block, &mut ok),
                RefRoot::Each if inst.each.is_none() => Some(
                    Diagnostic::error("`each` is only defined in a block with `for_each`")
                        .with_help("add `for_each = ...` to the block, or use a plain value"),
                ),
                RefRoot::Count if inst.count.is_none() => Some(
                    Diagnostic::error("`count` is only defined in a block with `count`")
                        .with_help("add `count = N` to the block, or use a plain value"),
                ),
                _ => None,
            };
            if let Some(d) = problem {
                self.error(d.with_range(range));
                ok = false;
            }
        }
        ok
    }

    fn check_resource_ref(
        &mut self,
        r: &Reference,
        ty: ResourceType,
        name: &str,
        usage: Usage,
        self_block: Option<(ResourceType, &str)>,
        ok: &mut bool,
    ) -> Option<Diagnostic> {
        let key = (ty, name.to_string());
        if !self.resources.contains_key(&key) {
            let names: Vec<&str> =
                self.resources.keys().filter(|(t, _)| *t == ty).map(|(_, n)| n.as_str()).collect();
            let help = match suggest::nearest(name, names.iter().copied()) {
                Some(s) => format!("did you mean `{ty}.{s}`?"),
                None if names.is_empty() => {
                    format!("declare `{ty} \"{name}\" {{ ... }}`; there is no `{ty}` yet")
                }
                None => format!(
                    "declare `{ty} \"{name}\"`, or use one of {}",
                    suggest::quoted_list(names.iter().copied())
                ),
            };
            return Some(
                Diagnostic::error(format!("unknown reference `{ty}.{name}`"))
                    .with_label("not declared")
                    .with_help(help),
            );
        }
        if self_block == Some((ty, name)) || self.failed.contains(&Node::Resource(ty, name.to_string())) {
            *ok = false;
            return None;
        }
        if let KeyRef::Literal(k) = &r.key {
            let instances = self.instances.get(&key).cloned().unwrap_or_default();
            if !instances.iter().any(|a| a.key.as_ref() == Some(k)) && usage == Usage::Plan {
                let have: Vec<String> = instances.iter().map(|a| a.to_string()).collect();
                return Some(Diagnostic::error(format!("`{ty}.{name}` has no instance `{k}`")).with_help(
                    if have.is_empty() {
                        "it has no instances".to_string()
                    } else {
                        format!("its instances are {}", suggest::quoted_list(have.iter().map(String::as_str)))
                    },
                ));
            }
        }
        let attr = r.attr.as_deref()?;
        if usage == Usage::Output || spec_fields(ty).contains(&attr) {
            return None;
        }
        if COMPUTED.contains(&attr) {
            return Some(
                Diagnostic::error(format!("`{ty}.{name}.{attr}` must be known when planning"))
                    .with_detail(format!("`{attr}` is known only after `{ty}.{name}` has been applied"))
                    .with_label("known only after apply")
                    .with_help("use it in an `output` instead, or write the value here directly"),
            );
        }
        let mut known: Vec<&str> = spec_fields(ty).to_vec();
        known.extend(COMPUTED);
        Some(Diagnostic::error(format!("`{ty}` has no attribute `{attr}`")).with_help(suggest::help_for(
            attr,
            "attributes",
            &known,
        )))
    }

    /// Every instance address a reference may name, for `depends_on`.
    pub fn addrs_of_ref(&self, r: &Reference) -> Vec<ResourceAddr> {
        let RefRoot::Resource(ty, name) = &r.root else { return vec![] };
        let all = self.instances.get(&(*ty, name.clone())).cloned().unwrap_or_default();
        match &r.key {
            KeyRef::Literal(k) => all.into_iter().filter(|a| a.key.as_ref() == Some(k)).collect(),
            _ => all,
        }
    }

    /// Records an instance key's value in the resource objects.
    pub fn store_instance(&mut self, addr: &ResourceAddr, shape: Shape, value: Value) {
        self.values_changed();
        let objs = self.resource_values.entry(addr.ty).or_default();
        match (&addr.key, shape) {
            (None, _) => {
                objs.insert(addr.name.clone(), value);
            }
            (Some(InstanceKey::Int(_)), _) => {
                let entry = objs.entry(addr.name.clone()).or_insert_with(|| Value::Array(vec![]));
                if let Value::Array(a) = entry {
                    a.push(value);
                }
            }
            (Some(InstanceKey::Str(k)), _) => {
                let entry = objs.entry(addr.name.clone()).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(o) = entry {
                    o.insert(k.clone(), value);
                }
            }
        }
    }
}

/// A diagnostic for an evaluation error, at the `file(...)` call when reading a file failed.
fn eval_diagnostic(e: &hcl::eval::Error, expr: &Expression, file: &Arc<SourceFile>) -> Diagnostic {
    use hcl::eval::ErrorKind;
    let whole = range_of(file, expr.span());
    match e.kind() {
        ErrorKind::FuncCall(name, msg) => {
            // With several calls of the function, the one whose text the message quotes failed.
            let calls = refs::calls_of(expr, name.name.as_str());
            let quoted = |s: &Range<usize>| {
                let text = file.text.get(s.clone()).unwrap_or_default();
                let arg = text.split('"').nth(1).unwrap_or_default();
                !arg.is_empty() && msg.contains(arg)
            };
            let at = calls
                .iter()
                .find(|s| quoted(s))
                .or(calls.first())
                .map_or(whole, |s| SourceRange::new(file, s.clone()));
            let help = if name.name.as_str() == "file" {
                "the path is relative to the configuration directory; check that the file exists".to_string()
            } else {
                format!("check the arguments of `{}`", name.name.as_str())
            };
            Diagnostic::error(format!("`{}` failed: {msg}", name.name.as_str())).with_range(at).with_help(help)
        }
        ErrorKind::UndefinedFunc(name) => {
            let known = [
                "cidrsubnet", "cidrhost", "cidrnetmask", "format", "join", "split", "lookup", "length", "toset",
                "tolist", "keys", "values", "merge", "concat", "range", "min", "max", "upper", "lower", "replace",
                "file", "jsonencode", "element", "contains", "coalesce",
            ];
            Diagnostic::error(format!("unknown function `{}`", name.name.as_str()))
                .with_range(whole)
                .with_help(suggest::help_for(name.name.as_str(), "functions", &known))
        }
        ErrorKind::UndefinedVar(name) => Diagnostic::error(format!("unknown name `{name}`"))
            .with_range(whole)
            .with_help("references start with `var.`, `local.`, `each.`, `count.` or a block type such as `nested_guest.`"),
        other => Diagnostic::error(format!("cannot evaluate this expression: {other}"))
            .with_range(whole)
            .with_help("check the types of the values used here"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_is_found_by_its_argument() {
        let file = Arc::new(SourceFile::new("m.nf.hcl", r#"join("", [file("a.txt"), file("b.txt")])"#));
        let expr = hcl::edit::parser::parse_expr(&file.text).unwrap();
        let mut loader = Loader::new(vec![], None);
        let got = loader.eval(&expr, &file, &InstanceVars::default(), Usage::Plan, None);
        assert!(got.is_none());
        let d = &loader.diags.0[0];
        // `a.txt` is missing too, but evaluation stops at the first failing call.
        assert_eq!(d.range.as_ref().unwrap().text(), r#"file("a.txt")"#);
        assert!(d.summary.contains("a.txt"), "{}", d.summary);
    }
}
