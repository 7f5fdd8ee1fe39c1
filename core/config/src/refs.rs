//! Finding the references in an expression: `var.x`, `local.y`, `nested_guest.g1.name`, and the
//! `file(...)` calls, with their byte ranges.
//!
//! Evaluation (hcl-rs) knows no spans, so every check that must point at a reference (unknown
//! names, values known only after apply, the dependency graph) works from this syntactic walk over
//! the `hcl::edit` tree.

use std::ops::Range;

use hcl::edit::expr::{Expression, FuncCall, Traversal, TraversalOperator};
use hcl::edit::visit::{self, Visit};
use hcl::edit::{Decorated, Ident, Span};
use nestform_types::{InstanceKey, ResourceType};

/// What a reference starts with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefRoot {
    Var(String),
    Local(String),
    Resource(ResourceType, String),
    Each,
    Count,
    /// Any other variable: a `for` expression's own names, or a mistake found when evaluating.
    Other(String),
}

/// How a resource reference picks an instance: `nested_guest.web[0]`, `nested_guest.web[var.k]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    None,
    Literal(InstanceKey),
    /// An index computed by an expression, or a splat: any instance.
    Dynamic,
}

/// One reference found in an expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub root: RefRoot,
    pub key: KeyRef,
    /// For resources: the attribute read after the instance (`name` in `nested_guest.g1.name`).
    pub attr: Option<String>,
    /// The whole traversal, such as `nested_guest.g1.name`.
    pub span: Range<usize>,
}

/// Every reference in `expr`, in source order.
pub fn references(expr: &Expression) -> Vec<Reference> {
    let mut v = RefVisitor::default();
    v.visit_expr(expr);
    v.found
}

/// Every reference anywhere in a block body, nested blocks included.
pub fn block_references(body: &hcl::edit::structure::Body) -> Vec<Reference> {
    let mut v = RefVisitor::default();
    v.visit_body(body);
    v.found
}

/// The ranges of every call to function `name` in `expr`.
pub fn calls_of(expr: &Expression, name: &str) -> Vec<Range<usize>> {
    struct Calls<'a> {
        name: &'a str,
        found: Vec<Range<usize>>,
    }
    impl Visit for Calls<'_> {
        fn visit_func_call(&mut self, node: &FuncCall) {
            if node.name.name.as_str() == self.name {
                if let Some(s) = node.span() {
                    self.found.push(s);
                }
            }
            visit::visit_func_call(self, node);
        }
    }
    let mut c = Calls { name, found: vec![] };
    c.visit_expr(expr);
    c.found
}

/// The range of the first (outermost) `for` expression in `expr`.
pub fn first_for(expr: &Expression) -> Option<Range<usize>> {
    #[derive(Default)]
    struct First(Option<Range<usize>>);
    impl Visit for First {
        fn visit_for_expr(&mut self, node: &hcl::edit::expr::ForExpr) {
            if self.0.is_none() {
                self.0 = node.span();
            }
        }
    }
    let mut f = First::default();
    f.visit_expr(expr);
    f.0
}

#[derive(Default)]
struct RefVisitor {
    found: Vec<Reference>,
}

fn root_of(ident: &str, first: Option<&str>) -> Option<RefRoot> {
    Some(match ident {
        "var" => RefRoot::Var(first?.to_string()),
        "local" => RefRoot::Local(first?.to_string()),
        "each" => RefRoot::Each,
        "count" => RefRoot::Count,
        other => match ResourceType::parse(other) {
            Some(ty) => RefRoot::Resource(ty, first?.to_string()),
            None => RefRoot::Other(other.to_string()),
        },
    })
}

fn literal_key(expr: &Expression) -> KeyRef {
    match expr {
        Expression::Number(n) => n.as_u64().map_or(KeyRef::Dynamic, |i| KeyRef::Literal(InstanceKey::Int(i))),
        Expression::String(s) => KeyRef::Literal(InstanceKey::Str(s.value().clone())),
        _ => KeyRef::Dynamic,
    }
}

impl RefVisitor {
    fn push_bare(&mut self, ident: &Decorated<Ident>) {
        let Some(span) = ident.span() else { return };
        // A bare `var` or `nested_guest` has no name; report it as its own root so evaluation
        // explains it.
        let root =
            root_of(ident.as_str(), None).unwrap_or_else(|| RefRoot::Other(ident.as_str().to_string()));
        self.found.push(Reference { root, key: KeyRef::None, attr: None, span });
    }
}

impl Visit for RefVisitor {
    fn visit_expr(&mut self, node: &Expression) {
        if let Expression::Variable(ident) = node {
            self.push_bare(ident);
        } else {
            visit::visit_expr(self, node);
        }
    }

    fn visit_traversal(&mut self, node: &Traversal) {
        let Expression::Variable(ident) = &node.expr else {
            visit::visit_traversal(self, node);
            return;
        };
        let ops: Vec<&TraversalOperator> = node.operators.iter().map(|o| o.value()).collect();
        let first = match ops.first() {
            Some(TraversalOperator::GetAttr(a)) => Some(a.as_str()),
            _ => None,
        };
        let span = node.span().unwrap_or_else(|| ident.span().unwrap_or(0..0));
        match root_of(ident.as_str(), first) {
            Some(root @ RefRoot::Resource(..)) => {
                let (key, next) = match ops.get(1) {
                    Some(TraversalOperator::Index(e)) => (literal_key(e), 2),
                    Some(TraversalOperator::LegacyIndex(i)) => {
                        (KeyRef::Literal(InstanceKey::Int(*i.value())), 2)
                    }
                    Some(TraversalOperator::AttrSplat(_) | TraversalOperator::FullSplat(_)) => {
                        (KeyRef::Dynamic, 2)
                    }
                    _ => (KeyRef::None, 1),
                };
                let attr = match ops.get(next) {
                    Some(TraversalOperator::GetAttr(a)) => Some(a.as_str().to_string()),
                    _ => None,
                };
                self.found.push(Reference { root, key, attr, span });
            }
            Some(root) => {
                self.found.push(Reference { root, key: KeyRef::None, attr: first.map(str::to_string), span })
            }
            None => self.push_bare(ident),
        }
        for op in ops {
            if let TraversalOperator::Index(e) = op {
                self.visit_expr(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(src: &str) -> Vec<Reference> {
        references(&hcl::edit::parser::parse_expr(src).unwrap())
    }

    #[test]
    fn finds_resource_references_with_keys_and_attributes() {
        let r = refs(r#""${nested_guest.g1.name}-${nested_guest.web[0].vcpus}" == var.x"#);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].root, RefRoot::Resource(ResourceType::NestedGuest, "g1".into()));
        assert_eq!(r[0].attr.as_deref(), Some("name"));
        assert_eq!(r[1].key, KeyRef::Literal(InstanceKey::Int(0)));
        assert_eq!(r[1].attr.as_deref(), Some("vcpus"));
        assert_eq!(r[2].root, RefRoot::Var("x".into()));
    }

    #[test]
    fn spans_cover_the_traversal() {
        let src = "upper(local.abc)";
        let r = refs(src);
        assert_eq!(&src[r[0].span.clone()], "local.abc");
    }

    #[test]
    fn index_expressions_are_references_too() {
        let r = refs("nat_network.lan[each.key]");
        assert_eq!(r[0].key, KeyRef::Dynamic);
        assert_eq!(r[1].root, RefRoot::Each);
    }

    #[test]
    fn finds_calls() {
        let src = r#"join("", [file("a"), file("b")])"#;
        let expr = hcl::edit::parser::parse_expr(src).unwrap();
        let calls = calls_of(&expr, "file");
        assert_eq!(calls.len(), 2);
        assert_eq!(&src[calls[0].clone()], r#"file("a")"#);
    }
}
