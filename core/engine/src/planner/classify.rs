//! The classification table: for each attribute of each resource type, how a change reaches the running
//! resource (live, with a restart, or only by replacing it) and why, in words a person understands.
//!
//! This is nestform's own knowledge of what libvirt can and cannot change on a running domain or network,
//! so it is written by hand, in one place.

use nestform_types::{ByteSize, ResourceType};
use serde_json::Value;

use crate::plan::Effect;

/// Where a changed attribute sits: a top-level attribute (`memory`), or one field of one element of a
/// keyed collection (`disks["root"].size`, where `key` is `root` and `field` is `size`). A whole element
/// added or removed has a `key` and no `field`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AttrPath<'a> {
    pub top: &'a str,
    pub key: Option<&'a str>,
    pub field: Option<&'a str>,
}

impl<'a> AttrPath<'a> {
    pub fn top(top: &'a str) -> Self {
        AttrPath { top, key: None, field: None }
    }

    /// The path as people and plan files write it: `memory`, `disks["root"]`, `disks["root"].size`.
    pub fn render(&self) -> String {
        let mut s = self.top.to_string();
        if let Some(k) = self.key {
            s.push('[');
            s.push_str(&serde_json::to_string(k).expect("a string serializes"));
            s.push(']');
        }
        if let Some(f) = self.field {
            s.push('.');
            s.push_str(f);
        }
        s
    }
}

/// How a change of one attribute from `before` to `after` (either absent) reaches the resource.
pub(crate) fn classify(
    ty: ResourceType,
    path: AttrPath<'_>,
    before: Option<&Value>,
    after: Option<&Value>,
) -> (Effect, String) {
    use Effect::*;
    let (effect, why): (Effect, String) = match ty {
        ResourceType::NestedGuest => match (path.top, path.key, path.field) {
            ("host", ..) => (Replace, "a guest cannot move to another host".into()),
            ("name", ..) => (Replace, "the domain name is how libvirt knows the guest".into()),
            ("install", ..) => {
                (Replace, "the operating system is installed only when the guest is created".into())
            }
            ("disks", Some(_), Some("format")) => {
                (Replace, "a volume's format is fixed when the volume is created".into())
            }
            ("disks", Some(_), Some("preallocation")) => {
                (Replace, "a volume is preallocated only when it is created".into())
            }
            ("disks", Some(_), Some("size")) => match (size(before), size(after)) {
                (Some(b), Some(a)) if a < b => (Replace, "a volume cannot shrink without losing data".into()),
                _ => (Live, "the volume is grown while the guest runs".into()),
            },
            ("disks", Some(_), Some("bus")) => {
                (Restart, "a disk moves to another bus only at the next boot".into())
            }
            ("disks", Some(_), Some("cache")) => {
                (Restart, "a disk's cache mode takes effect at the next boot".into())
            }
            ("disks", Some(_), None) if before.is_none() => {
                (Restart, "the new disk is attached when the domain starts again".into())
            }
            ("disks", Some(_), None) if after.is_none() => {
                (Restart, "the disk is detached when the domain stops".into())
            }
            ("disks", None, None) => {
                (Restart, "the disks are attached in the new order at the next boot".into())
            }
            ("vcpus", ..) => (Restart, "libvirt cannot change the vCPUs of a running domain".into()),
            ("memory", ..) => (Restart, "libvirt cannot change the memory of a running domain".into()),
            ("cpu", ..) => (Restart, "the CPU model is fixed while the domain runs".into()),
            ("networks", ..) => (Restart, "interfaces are plugged in when the domain starts".into()),
            ("running", ..) => match after.and_then(Value::as_bool) {
                Some(false) => (Live, "the guest is shut down".into()),
                _ => (Live, "the guest is started".into()),
            },
            _ => unknown(&path),
        },
        ResourceType::NatNetwork => match path.top {
            "host" => (Replace, "a network cannot move to another host".into()),
            "name" => (Replace, "the network name is how libvirt knows the network".into()),
            "cidr" => (Replace, "the bridge's address is fixed while the network exists".into()),
            "dhcp" => (Replace, "the DHCP range is fixed while the network exists".into()),
            "domain" => (Replace, "the DNS domain is fixed while the network exists".into()),
            _ => unknown(&path),
        },
        ResourceType::KvmHost => match path.top {
            "uri" => (Replace, "a different URI is a different hypervisor".into()),
            "guest" => (Replace, "a different guest is a different hypervisor".into()),
            "nested" => (Live, "nesting is checked against what the host reports".into()),
            "kvm_module_options" => (Live, "the kvm module is reloaded with the new options".into()),
            _ => unknown(&path),
        },
        ResourceType::Benchmark => {
            (Replace, "a benchmark is measured again when its definition changes".into())
        }
    };
    (effect, why)
}

/// An attribute the table does not know: replacing is the one change that is always correct.
fn unknown(path: &AttrPath<'_>) -> (Effect, String) {
    (Effect::Replace, format!("nestform cannot change `{}` in place", path.render()))
}

fn size(v: Option<&Value>) -> Option<ByteSize> {
    v.and_then(|v| serde_json::from_value(v.clone()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use Effect::*;

    fn c(ty: ResourceType, path: AttrPath<'_>, b: Option<Value>, a: Option<Value>) -> Effect {
        classify(ty, path, b.as_ref(), a.as_ref()).0
    }

    fn disk(field: &'static str) -> AttrPath<'static> {
        AttrPath { top: "disks", key: Some("root"), field: Some(field) }
    }

    #[test]
    fn guest_table() {
        use ResourceType::NestedGuest as G;
        let v = |s: &str| Some(json!(s));
        let table: Vec<(AttrPath<'_>, Option<Value>, Option<Value>, Effect)> = vec![
            (AttrPath::top("host"), v("kvm_host.a"), v("kvm_host.b"), Replace),
            (AttrPath::top("name"), v("a"), v("b"), Replace),
            (AttrPath::top("install"), None, Some(json!({"lab": {}})), Replace),
            (disk("format"), v("qcow2"), v("raw"), Replace),
            (disk("preallocation"), v("off"), v("full"), Replace),
            (disk("size"), v("10GiB"), v("8GiB"), Replace),
            (disk("size"), v("8GiB"), v("10GiB"), Live),
            (disk("bus"), v("virtio"), v("sata"), Restart),
            (disk("cache"), v("none"), v("unsafe"), Restart),
            (AttrPath { top: "disks", key: Some("data"), field: None }, None, Some(json!({})), Restart),
            (AttrPath { top: "disks", key: Some("data"), field: None }, Some(json!({})), None, Restart),
            (AttrPath::top("vcpus"), Some(json!(1)), Some(json!(2)), Restart),
            (AttrPath::top("memory"), v("512MiB"), v("1GiB"), Restart),
            (AttrPath::top("cpu"), v("host-model"), v("EPYC"), Restart),
            (AttrPath::top("networks"), Some(json!([])), Some(json!([{}])), Restart),
            (AttrPath::top("running"), Some(json!(true)), Some(json!(false)), Live),
            (AttrPath::top("something_new"), None, Some(json!(1)), Replace),
        ];
        for (path, b, a, want) in table {
            assert_eq!(c(G, path, b, a), want, "{}", path.render());
        }
    }

    #[test]
    fn network_host_and_benchmark_tables() {
        use ResourceType::*;
        for top in ["host", "name", "cidr", "dhcp", "domain"] {
            assert_eq!(c(NatNetwork, AttrPath::top(top), None, Some(json!("x"))), Replace, "{top}");
        }
        assert_eq!(c(KvmHost, AttrPath::top("uri"), None, Some(json!("x"))), Replace);
        assert_eq!(c(KvmHost, AttrPath::top("guest"), None, Some(json!("x"))), Replace);
        assert_eq!(c(KvmHost, AttrPath::top("nested"), None, Some(json!(true))), Live);
        let opt = AttrPath { top: "kvm_module_options", key: Some("nested"), field: None };
        assert_eq!(c(KvmHost, opt, None, Some(json!("1"))), Live);
        assert_eq!(c(Benchmark, AttrPath::top("repeat"), Some(json!(1)), Some(json!(2))), Replace);
    }

    #[test]
    fn explains_memory_like_the_plan_shows_it() {
        let (_, why) = classify(
            ResourceType::NestedGuest,
            AttrPath::top("memory"),
            Some(&json!("512MiB")),
            Some(&json!("1GiB")),
        );
        assert_eq!(why, "libvirt cannot change the memory of a running domain");
        assert_eq!(disk("size").render(), "disks[\"root\"].size");
    }
}
