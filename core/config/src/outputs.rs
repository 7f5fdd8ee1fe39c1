//! Evaluating outputs once resources have attribute values (spec fields plus computed ones).

use std::collections::BTreeMap;

use hcl::eval::Context;
use hcl::{Map, Value};
use nestform_types::{InstanceKey, ResourceAddr, ResourceType};

use crate::diag::{Diagnostic, Diagnostics};
use crate::load::Shape;
use crate::model::{Config, OutputValue};
use crate::refs::{self, KeyRef, RefRoot};
use crate::value::{from_json, to_json};

impl Config {
    /// Evaluates every output with the given attribute objects of resources (spec fields and
    /// computed attributes, keyed by instance address). A reference to an attribute missing from
    /// these objects (known only after apply) makes the output `Unknown`. Errors are diagnostics
    /// pointing at the output.
    pub fn evaluate_outputs(
        &self,
        resources: &BTreeMap<ResourceAddr, serde_json::Value>,
    ) -> Result<BTreeMap<String, OutputValue>, Diagnostics> {
        let scope = &self.output_scope;
        let mut ctx = Context::new();
        crate::funcs::declare_all(&mut ctx);
        ctx.declare_var("var", Value::Object(scope.vars.clone()));
        ctx.declare_var("local", Value::Object(scope.locals.clone()));
        let mut by_type: BTreeMap<ResourceType, Map<String, Value>> = BTreeMap::new();
        for ((ty, name), shape) in &scope.shapes {
            let empty = match shape {
                Shape::Count => Value::Array(vec![]),
                Shape::ForEach => Value::Object(Map::new()),
                Shape::Single => continue,
            };
            by_type.entry(*ty).or_default().insert(name.clone(), empty);
        }
        // Address order puts `[0]`, `[1]`, ... in index order, so pushing builds the list.
        for (addr, attrs) in resources {
            let objs = by_type.entry(addr.ty).or_default();
            let v = from_json(attrs);
            match &addr.key {
                None => drop(objs.insert(addr.name.clone(), v)),
                Some(InstanceKey::Int(_)) => {
                    if let Value::Array(a) =
                        objs.entry(addr.name.clone()).or_insert_with(|| Value::Array(vec![]))
                    {
                        a.push(v);
                    }
                }
                Some(InstanceKey::Str(k)) => {
                    if let Value::Object(o) =
                        objs.entry(addr.name.clone()).or_insert_with(|| Value::Object(Map::new()))
                    {
                        o.insert(k.clone(), v);
                    }
                }
            }
        }
        for ty in ResourceType::ALL {
            ctx.declare_var(ty.as_str(), Value::Object(by_type.remove(&ty).unwrap_or_default()));
        }
        let mut out = BTreeMap::new();
        let mut diags = Diagnostics::new();
        for (name, o) in &scope.exprs {
            if !self.known(&o.expr, resources) {
                out.insert(name.clone(), OutputValue::Unknown);
                continue;
            }
            let plain = crate::limits::guarded(&o.expr);
            match crate::funcs::with_base_dir(scope.base_dir.as_deref(), || {
                crate::limits::evaluate(&plain, &ctx)
            }) {
                Ok(v) => drop(out.insert(name.clone(), OutputValue::Known(to_json(&v)))),
                Err(e) => diags.push(
                    Diagnostic::error(format!("output `{name}` cannot be evaluated: {e}"))
                        .with_range(o.range.clone())
                        .with_help("check the references and types used in `value`"),
                ),
            }
        }
        diags.into_result(out)
    }

    /// False when the expression reads an instance or attribute the resources do not have yet.
    fn known(
        &self,
        expr: &hcl::edit::expr::Expression,
        resources: &BTreeMap<ResourceAddr, serde_json::Value>,
    ) -> bool {
        refs::references(expr).iter().all(|r| {
            let RefRoot::Resource(ty, name) = &r.root else { return true };
            let block = ResourceAddr::new(*ty, name.clone());
            let wanted: Vec<&ResourceAddr> = self.resources.keys().filter(|a| block.contains(a)).collect();
            let wanted: Vec<&ResourceAddr> = match &r.key {
                KeyRef::Literal(k) => wanted.into_iter().filter(|a| a.key.as_ref() == Some(k)).collect(),
                _ => wanted,
            };
            wanted.iter().all(|a| match (resources.get(*a), &r.attr) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(obj), Some(attr)) => obj.get(attr).is_some(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load_sources, SourceFile, VarInputs};

    #[test]
    fn a_block_without_instances_is_an_empty_list() {
        let text = r#"
kvm_host "l0" {
  uri = "test:///default"
}
nested_guest "g" {
  count  = 0
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
}
output "names" {
  value = [for g in nested_guest.g : g.name]
}
"#;
        let c = load_sources(vec![SourceFile::new("m.nf.hcl", text)], &VarInputs::default()).unwrap();
        assert!(c.resources.keys().all(|a| a.ty != ResourceType::NestedGuest));
        let out = c.evaluate_outputs(&BTreeMap::new()).unwrap();
        assert_eq!(out["names"], OutputValue::Known(serde_json::json!([])));
    }
}
