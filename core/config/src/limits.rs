//! Bounds on what a configuration may ask for, so a mistyped number (`count = 1e9`) or a runaway
//! expression is a diagnostic at plan time, not an out-of-memory abort or an hour of evaluation.
//!
//! The limits are far above what a lab of nested guests needs and far below what would exhaust
//! the machine that plans it.

use std::cell::Cell;

use hcl::edit::expr::{Expression, ForExpr, FuncArgs as EditFuncArgs, FuncCall, Null};
use hcl::edit::template::{Directive, Element, ForTemplateExpr, Interpolation, Template};
use hcl::edit::visit_mut::{self, VisitMut};
use hcl::edit::{Decorated, Ident};
use hcl::eval::{Context, ErrorKind, Evaluate, FuncArgs, FuncDef, ParamType};
use hcl::Value;

/// The most instances one block may have through `count` or `for_each`: a lab of nested guests
/// has tens of them, and each instance is a libvirt object on some host.
pub(crate) const MAX_INSTANCES: u64 = 1000;

/// The most elements one evaluated value may hold, nested ones counted too.
pub(crate) const MAX_ELEMENTS: u64 = 100_000;

/// The most bytes of text (strings and object keys) one evaluated value may hold.
pub(crate) const MAX_TEXT_BYTES: u64 = 16 << 20;

/// What the `for` expressions (and template `%{ for }` directives) of one evaluation may do in
/// all: steps (an iteration, or an element produced, its nested elements counted too, so an
/// element is counted again at each level of nesting) and bytes of text produced. Nested `for`
/// over ranges could otherwise build billions of values before anything looked at the result.
pub(crate) const MAX_FOR_STEPS: u64 = 10 * MAX_ELEMENTS;
pub(crate) const MAX_FOR_TEXT_BYTES: u64 = 4 * MAX_TEXT_BYTES;

/// The functions the rewritten expression calls (see [`guarded`]); `__` keeps them out of the way
/// of a configuration's own names.
pub(crate) const GUARD_COLLECTION: &str = "__nestform_for";
pub(crate) const GUARD_ELEMENT: &str = "__nestform_element";

thread_local! {
    /// What the `for` expressions of the evaluation running on this thread have used so far.
    static USED: Cell<Size> = const { Cell::new(Size { elements: 0, bytes: 0 }) };
}

/// What a value costs: its elements (list items and object entries, nested ones too) and the
/// bytes of its strings and keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Size {
    pub elements: u64,
    pub bytes: u64,
}

/// The limits of a value, and of what `for` expressions may do.
const VALUE: Size = Size { elements: MAX_ELEMENTS, bytes: MAX_TEXT_BYTES };
const FOR: Size = Size { elements: MAX_FOR_STEPS, bytes: MAX_FOR_TEXT_BYTES };

impl Size {
    fn over(self, limit: Size) -> bool {
        self.elements > limit.elements || self.bytes > limit.bytes
    }

    /// Why the size is over `limit`, for messages.
    fn why(self, limit: Size, what: &str, unit: &str) -> String {
        if self.elements > limit.elements {
            format!("{what} more than {} {unit}", limit.elements)
        } else {
            format!("{what} more than {} MiB of text", limit.bytes >> 20)
        }
    }
}

/// The size of `v`, counted up to just past the limits of a value (a huge value is not walked to
/// its end).
pub(crate) fn size_of(v: &Value) -> Size {
    let mut s = Size::default();
    add(v, &mut s);
    s
}

fn add(v: &Value, s: &mut Size) {
    if s.over(VALUE) {
        return;
    }
    match v {
        Value::Array(a) => {
            s.elements += a.len() as u64;
            a.iter().for_each(|v| add(v, s));
        }
        Value::Object(o) => {
            s.elements += o.len() as u64;
            for (k, v) in o {
                s.bytes += k.len() as u64;
                add(v, s);
            }
        }
        Value::String(t) => s.bytes += t.len() as u64,
        _ => {}
    }
}

/// Why evaluating an expression failed.
pub(crate) enum Failure {
    Eval(hcl::eval::Error),
    /// A limit was reached; the message says which.
    TooLarge(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Eval(e) => write!(f, "{e}"),
            Failure::TooLarge(why) => write!(f, "it is too large: {why}"),
        }
    }
}

/// What to do about a [`Failure::TooLarge`].
pub(crate) fn too_large_help() -> String {
    format!(
        "one expression may build a value of at most {MAX_ELEMENTS} elements and {} MiB of text, with `for` expressions taking at most {MAX_FOR_STEPS} steps; iterate over smaller collections",
        MAX_TEXT_BYTES >> 20
    )
}

/// Evaluates `expr` (rewritten by [`guarded`]) in `ctx` within the limits: its `for` expressions
/// may take [`MAX_FOR_STEPS`] and produce [`MAX_FOR_TEXT_BYTES`] of text in all, and the value may
/// hold [`MAX_ELEMENTS`] elements and [`MAX_TEXT_BYTES`] of text.
pub(crate) fn evaluate(expr: &hcl::Expression, ctx: &Context) -> Result<Value, Failure> {
    let before = USED.with(|u| u.replace(Size::default()));
    let result = expr.evaluate(ctx);
    USED.with(|u| u.set(before));
    let v = match result {
        Ok(v) => v,
        Err(e) => {
            return Err(match e.kind() {
                ErrorKind::FuncCall(name, msg)
                    if name.name.as_str() == GUARD_COLLECTION || name.name.as_str() == GUARD_ELEMENT =>
                {
                    Failure::TooLarge(msg.clone())
                }
                _ => Failure::Eval(e),
            })
        }
    };
    let size = size_of(&v);
    if size.over(VALUE) {
        return Err(Failure::TooLarge(size.why(VALUE, "the value has", "elements")));
    }
    Ok(v)
}

/// Charges `cost` to the running evaluation.
fn charge(cost: Size) -> Result<(), String> {
    USED.with(|u| {
        let used = u.get();
        let used = Size { elements: used.elements + cost.elements, bytes: used.bytes + cost.bytes };
        u.set(used);
        if used.over(FOR) {
            Err(used.why(FOR, "its `for` expressions take", "steps"))
        } else {
            Ok(())
        }
    })
}

/// `__nestform_for(collection, bytes)`: the collection a `for` iterates, charged one element per
/// item (each iteration costs time even when its condition drops it) and, in a template, the
/// `bytes` of literal text the body adds each time.
fn guard_collection(args: FuncArgs) -> Result<Value, String> {
    let mut args = args.into_values();
    let per_item = args.get(1).and_then(Value::as_number).and_then(|n| n.as_u64()).unwrap_or(0);
    let collection = args.swap_remove(0);
    let items = match &collection {
        Value::Array(a) => a.len() as u64,
        Value::Object(o) => o.len() as u64,
        _ => 0,
    };
    charge(Size { elements: items, bytes: items.saturating_mul(per_item) })?;
    Ok(collection)
}

/// `__nestform_element(value)`: one element a `for` produces (or one interpolation in a template),
/// charged its size.
fn guard_element(args: FuncArgs) -> Result<Value, String> {
    let v = args.into_values().swap_remove(0);
    let mut cost = size_of(&v);
    cost.elements += 1;
    charge(cost)?;
    Ok(v)
}

/// Declares the guard functions that [`guarded`] expressions call.
pub(crate) fn declare_guards(ctx: &mut Context) {
    ctx.declare_func(
        GUARD_COLLECTION,
        FuncDef::builder().params([ParamType::Any, ParamType::Any]).build(guard_collection),
    );
    ctx.declare_func(GUARD_ELEMENT, FuncDef::builder().param(ParamType::Any).build(guard_element));
}

/// `expr` for evaluation, with its `for` expressions and template `%{ for }` directives charging
/// what they iterate and produce (hcl-rs evaluates them with no hook of its own): the collection
/// goes through [`GUARD_COLLECTION`], each element and interpolation through [`GUARD_ELEMENT`].
pub(crate) fn guarded(expr: &Expression) -> hcl::Expression {
    let mut expr = expr.clone();
    Guard.visit_expr_mut(&mut expr);
    expr.into()
}

fn call(name: &str, args: Vec<Expression>) -> Expression {
    Expression::from(FuncCall::new(Ident::new(name), EditFuncArgs::from(args)))
}

fn wrap(expr: &mut Expression, name: &str, extra: Option<u64>) {
    let inner = std::mem::replace(expr, Expression::Null(Decorated::new(Null)));
    let mut args = vec![inner];
    args.extend(extra.map(|n| Expression::from(hcl::Number::from(n))));
    *expr = call(name, args);
}

/// The bytes of literal text a template adds each time it is included, nested `if` branches
/// counted (a nested `for` charges its own).
fn literal_bytes(t: &Template) -> u64 {
    t.iter()
        .map(|e| match e {
            Element::Literal(s) => s.len() as u64,
            Element::Directive(d) => match &**d {
                Directive::If(i) => {
                    literal_bytes(&i.if_expr.template)
                        + i.else_expr.as_ref().map_or(0, |e| literal_bytes(&e.template))
                }
                Directive::For(_) => 0,
            },
            Element::Interpolation(_) => 0,
        })
        .sum()
}

struct Guard;

impl VisitMut for Guard {
    fn visit_for_expr_mut(&mut self, node: &mut ForExpr) {
        visit_mut::visit_for_expr_mut(self, node);
        wrap(&mut node.intro.collection_expr, GUARD_COLLECTION, Some(0));
        wrap(&mut node.value_expr, GUARD_ELEMENT, None);
        if let Some(k) = &mut node.key_expr {
            wrap(k, GUARD_ELEMENT, None);
        }
    }

    fn visit_for_template_expr_mut(&mut self, node: &mut ForTemplateExpr) {
        visit_mut::visit_for_template_expr_mut(self, node);
        let bytes = literal_bytes(&node.template);
        wrap(&mut node.collection_expr, GUARD_COLLECTION, Some(bytes));
    }

    fn visit_interpolation_mut(&mut self, node: &mut Interpolation) {
        visit_mut::visit_interpolation_mut(self, node);
        wrap(&mut node.expr, GUARD_ELEMENT, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str) -> Result<Value, String> {
        let mut ctx = Context::new();
        crate::funcs::declare_all(&mut ctx);
        let expr = hcl::edit::parser::parse_expr(src).unwrap();
        evaluate(&guarded(&expr), &ctx).map_err(|f| match f {
            Failure::Eval(e) => format!("eval: {e}"),
            Failure::TooLarge(m) => m,
        })
    }

    #[test]
    fn guarded_expressions_evaluate_as_before() {
        for src in [
            "[for i in range(3) : i * 2]",
            "{ for k, v in { a = 1 } : k => v + 1 }",
            "{ for v in [1, 2, 3] : (v > 1 ? \"big\" : \"small\") => v... }",
            "[for v in [1, 2, 3] : v if v != 2]",
            "\"%{ for i in range(3) ~}\n  ${i},\n%{ endfor ~}\"",
            "\"%{ for i in [1, 2] }%{ if i > 1 }big%{ else }small%{ endif }%{ endfor }\"",
            "\"a-${1 + 1}\"",
            "[for a in [[1], [2, 3]] : [for b in a : b * 10]]",
        ] {
            let mut ctx = Context::new();
            crate::funcs::declare_all(&mut ctx);
            let plain: hcl::Expression = hcl::edit::parser::parse_expr(src).unwrap().into();
            assert_eq!(eval(src).unwrap(), plain.evaluate(&ctx).unwrap(), "{src}");
        }
    }

    #[test]
    fn nested_for_expressions_stop_at_the_limit() {
        let e = eval("[for a in range(1000) : [for b in range(1000) : b]]").unwrap_err();
        assert_eq!(e, "its `for` expressions take more than 1000000 steps");
        // Dropping every element still costs the iterations.
        let e = eval("[for a in range(1000) : [for b in range(1000) : b if false]]").unwrap_err();
        assert_eq!(e, "its `for` expressions take more than 1000000 steps");
        let text = "x".repeat(2000);
        let e = eval(&format!("[for a in range(1000) : [for b in range(400) : \"{text}\"]]")).unwrap_err();
        assert_eq!(e, "its `for` expressions take more than 64 MiB of text");
        let e = eval(&format!(
            "\"%{{ for a in range(1000) }}%{{ for b in range(400) }}{text}%{{ endfor }}%{{ endfor }}\""
        ))
        .unwrap_err();
        assert_eq!(e, "its `for` expressions take more than 64 MiB of text");
        assert_eq!(
            eval("length([for a in range(300) : [for b in range(300) : b]])").unwrap(),
            Value::from(300u64)
        );
    }
}
