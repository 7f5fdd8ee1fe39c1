//! Decoding a `kvm_host` block: an existing hypervisor (`uri`) or a promoted guest (`guest`), and
//! its KVM module options.

use std::collections::BTreeMap;

use hcl::edit::structure::Body;
use hcl::edit::Span;
use hcl::Value;
use nestform_types::{KvmHostSpec, ResourceType};

use super::Inst;
use crate::diag::{Diagnostic, SourceRange};
use crate::load::{range_of, Loader};
use crate::value::{self, Mismatch};

impl Loader {
    pub(super) fn decode_host(
        &mut self,
        cx: &mut Inst,
        body: &Body,
        header: &SourceRange,
    ) -> Option<KvmHostSpec> {
        let uri = self.opt(cx, body, "", "uri", value::string);
        let guest = self.reference(cx, body, "", "guest", ResourceType::NestedGuest, false);
        let nested = self.opt(cx, body, "", "nested", value::boolean).unwrap_or(false);
        let kvm_module_options =
            self.opt(cx, body, "", "kvm_module_options", module_options).unwrap_or_default();
        match (body.get_attribute("uri"), body.get_attribute("guest")) {
            (Some(u), Some(g)) => {
                cx.ok = false;
                self.error(
                    Diagnostic::error(format!("`{}` has both `uri` and `guest`", cx.addr.block()))
                        .with_range(range_of(cx.file, g.key.span()))
                        .with_related(range_of(cx.file, u.key.span()), "`uri` is set here")
                        .with_help("keep `uri` for a hypervisor that already exists, or `guest` to promote a `nested_guest` to a hypervisor"),
                );
            }
            (None, None) => {
                cx.ok = false;
                self.error(
                    Diagnostic::error(format!("`{}` needs either `uri` or `guest`", cx.addr.block()))
                        .with_range(header.clone())
                        .with_help("add `uri = \"qemu:///system\"` for an existing hypervisor, or `guest = nested_guest.NAME` to promote a guest"),
                );
            }
            _ => {}
        }
        Some(KvmHostSpec { uri, guest, nested, kvm_module_options })
    }
}

fn module_options(v: &Value, name: &str) -> Result<BTreeMap<String, String>, Mismatch> {
    let Value::Object(o) = v else {
        return Err(Mismatch {
            summary: format!("`{name}` must be a map, got {}", value::type_name(v)),
            help: format!("write `{name} = {{ nested = 1 }}`"),
        });
    };
    o.iter()
        .map(|(k, v)| {
            let s = match v {
                Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                other => {
                    return Err(Mismatch {
                        summary: format!(
                            "`{name}.{k}` must be a number, bool or string, got {}",
                            value::type_name(other)
                        ),
                        help: "module options are plain values, like `nested = 1`".to_string(),
                    })
                }
            };
            Ok((k.clone(), s))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_options_write_bools_as_digits() {
        let v = hcl::value!({ nested = true, ept = false, mode = "x", n = 3 });
        let m = module_options(&v, "kvm_module_options").unwrap();
        assert_eq!(m["nested"], "1");
        assert_eq!(m["ept"], "0");
        assert_eq!(m["mode"], "x");
        assert_eq!(m["n"], "3");
        assert!(module_options(&hcl::value!({ a = [1] }), "kvm_module_options").is_err());
    }
}
