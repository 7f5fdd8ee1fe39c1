//! Reference-valued attributes (`host = kvm_host.l0`, `targets = [...]`, `depends_on`): what a
//! reference value names, and the checks that it names a declared instance of the right type.

use hcl::edit::structure::Body;
use hcl::Value;
use nestform_types::{ResourceAddr, ResourceType};

use super::attrs::Got;
use super::Inst;
use crate::diag::Diagnostic;
use crate::load::{Loader, ADDR_KEY};
use crate::value;

impl Loader {
    /// Resolves a reference-valued attribute such as `host = kvm_host.l0`.
    pub(super) fn reference(
        &mut self,
        cx: &mut Inst,
        body: &Body,
        prefix: &str,
        name: &str,
        want: ResourceType,
        required: bool,
    ) -> Option<ResourceAddr> {
        let addrs = self.reference_list(cx, body, prefix, name, &[want], required, false)?;
        addrs.into_iter().next()
    }

    /// Resolves an attribute holding references; `many` allows a list.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reference_list(
        &mut self,
        cx: &mut Inst,
        body: &Body,
        prefix: &str,
        name: &str,
        want: &[ResourceType],
        required: bool,
        many: bool,
    ) -> Option<Vec<ResourceAddr>> {
        if required && body.get_attribute(name).is_none() {
            let at = cx.header.clone();
            self.req(cx, body, prefix, name, &at, |_, _| Ok(()));
            return None;
        }
        let path = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
        let Got::Value(v, range) = self.get(cx, body, &path, name) else { return None };
        let kinds = crate::suggest::quoted_list(want.iter().map(|t| t.as_str()));
        let example = format!("{}.NAME", want[0]);
        let mut found = vec![];
        let single = !many;
        let problem = match (&v, single) {
            (Value::Array(items), false) => {
                let mut p = None;
                for item in items {
                    if let Err(e) = flatten(item, &mut found) {
                        p = Some(e);
                    }
                }
                p
            }
            (Value::Array(_) | Value::Object(_), true) if is_instance_collection(&v) => {
                Some("every instance of a block with `count` or `for_each`".to_string())
            }
            (Value::Array(_), true) => Some("a list".to_string()),
            (Value::Object(o), true) if !o.contains_key(ADDR_KEY) => Some("an object".to_string()),
            _ => flatten(&v, &mut found).err(),
        };
        let fail = |this: &mut Loader, cx: &mut Inst, summary: String, help: String| {
            cx.ok = false;
            this.error(Diagnostic::error(summary).with_range(range.clone()).with_help(help));
            None
        };
        if let Some(got) = problem {
            let expect = if single {
                format!("a reference to a {kinds}")
            } else {
                format!("a list of references to {kinds}")
            };
            let help = if single {
                format!("write `{name} = {example}`; for a block with `count` or `for_each` pick one instance, like `{example}[0]`")
            } else {
                format!("write `{name} = [{example}, ...]`")
            };
            return fail(self, cx, format!("`{name}` must be {expect}, got {got}"), help);
        }
        for a in &found {
            if !want.contains(&a.ty) {
                let help = if a.ty == ResourceType::NestedGuest && want == [ResourceType::KvmHost] {
                    format!("to run on `{a}`, promote it with `kvm_host \"NAME\" {{ guest = {a} }}` and use `kvm_host.NAME`")
                } else {
                    format!("use a {kinds}, like `{example}`")
                };
                return fail(self, cx, format!("`{name}` must refer to a {kinds}, not `{a}`"), help);
            }
        }
        for a in &found {
            // Written as a string (`"kvm_host.l0"`) a reference skips the reference checks.
            let known = self.instances.get(&(a.ty, a.name.clone())).is_some_and(|all| all.contains(a));
            if !known {
                return fail(
                    self,
                    cx,
                    format!("unknown reference `{a}`"),
                    format!("declare `{} \"{}\"` or fix the name", a.ty, a.name),
                );
            }
        }
        cx.deps.extend(found.iter().cloned());
        Some(found)
    }
}

/// True for the value of a block with `count` or `for_each`: a list or map of instances.
fn is_instance_collection(v: &Value) -> bool {
    let is_instance = |v: &Value| v.as_object().is_some_and(|o| o.contains_key(ADDR_KEY));
    match v {
        Value::Array(a) => a.iter().all(is_instance),
        Value::Object(o) => !o.contains_key(ADDR_KEY) && o.values().all(is_instance),
        _ => false,
    }
}

/// Collects the addresses a reference value names: one instance, or every instance of a block.
fn flatten(v: &Value, out: &mut Vec<ResourceAddr>) -> Result<(), String> {
    match v {
        Value::Object(o) => match o.get(ADDR_KEY) {
            Some(Value::String(s)) => {
                out.push(s.parse().map_err(|_| "an unknown value".to_string())?);
                Ok(())
            }
            _ if o.is_empty() => Err("an object".to_string()),
            _ => o.values().try_for_each(|v| flatten(v, out)),
        },
        Value::Array(a) => a.iter().try_for_each(|v| flatten(v, out)),
        Value::String(s) => match s.parse::<ResourceAddr>() {
            Ok(a) => {
                out.push(a);
                Ok(())
            }
            Err(_) => Err(format!("string `\"{s}\"`")),
        },
        other => Err(value::type_name(other).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use hcl::Map;

    use super::*;

    fn inst(addr: &str) -> Value {
        let mut o = Map::new();
        o.insert(ADDR_KEY.to_string(), Value::from(addr));
        o.insert("name".to_string(), Value::from("x"));
        Value::Object(o)
    }

    #[test]
    fn flatten_expands_instance_collections() {
        let mut by_key = Map::new();
        by_key.insert("a".to_string(), inst("nested_guest.w[\"a\"]"));
        let v = Value::Array(vec![
            inst("kvm_host.l0"),
            Value::Array(vec![inst("nested_guest.c[0]")]),
            Value::Object(by_key),
        ]);
        let mut out = vec![];
        flatten(&v, &mut out).unwrap();
        let got: Vec<String> = out.iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["kvm_host.l0", "nested_guest.c[0]", "nested_guest.w[\"a\"]"]);
        assert!(flatten(&Value::from(3u64), &mut out).is_err());
        assert!(flatten(&Value::from("not an address"), &mut out).is_err());
    }
}
