//! Compares a resource's attributes in state ("before") with its configuration ("after") and lists every
//! attribute that differs, each classified by [`classify`](super::classify).
//!
//! "After" is the spec serialized with serde_json. State holds the same plus the attributes computed
//! when the resource was created or refreshed: every state key that is not a field of the spec. Those
//! are kept on update; the ones apply sets ([`crate::computed`]) are "known after apply" on create and
//! replace.

use std::sync::OnceLock;

use foldhash::HashSet;

use nestform_types::{BenchmarkSpec, KvmHostSpec, NatNetworkSpec, NestedGuestSpec, ResourceType};
use serde_json::{Map, Value};

use super::classify::{classify, AttrPath};
use crate::plan::AttributeChange;

/// The `type` tag a serialized [`ResourceSpec`] carries; state written from a whole `ResourceSpec` may
/// hold it, and it is not an attribute.
pub(crate) const TAG: &str = "type";

/// Splits state attributes into the configured part (compared with the spec) and the computed part.
pub(crate) fn split_state(ty: ResourceType, attributes: &Value) -> (Map<String, Value>, Map<String, Value>) {
    let mut configured = Map::new();
    let mut kept = Map::new();
    if let Value::Object(m) = attributes {
        for (k, v) in m.iter().filter(|(k, _)| *k != TAG) {
            if is_configured(ty, k) {
                configured.insert(k.clone(), v.clone());
            } else {
                kept.insert(k.clone(), v.clone());
            }
        }
    }
    (configured, kept)
}

/// Whether a state attribute is configured (one of the spec's fields, compared with the spec) rather
/// than computed (anything else a provider recorded, kept as it is).
pub(crate) fn is_configured(ty: ResourceType, key: &str) -> bool {
    key != TAG && spec_fields(ty).contains(key)
}

/// Whether a state attribute was computed by a provider (not a spec field, not the `type` tag).
pub(crate) fn is_computed(ty: ResourceType, key: &str) -> bool {
    key != TAG && !spec_fields(ty).contains(key)
}

/// The fields of each spec type, read once from its JSON Schema so that a field added to a spec is
/// compared without anyone updating a list here.
fn spec_fields(ty: ResourceType) -> &'static HashSet<String> {
    static FIELDS: OnceLock<[HashSet<String>; 4]> = OnceLock::new();
    fn fields(schema: schemars::Schema) -> HashSet<String> {
        schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }
    let all = FIELDS.get_or_init(|| {
        [
            fields(schemars::schema_for!(KvmHostSpec)),
            fields(schemars::schema_for!(NatNetworkSpec)),
            fields(schemars::schema_for!(NestedGuestSpec)),
            fields(schemars::schema_for!(BenchmarkSpec)),
        ]
    });
    match ty {
        ResourceType::KvmHost => &all[0],
        ResourceType::NatNetwork => &all[1],
        ResourceType::NestedGuest => &all[2],
        ResourceType::Benchmark => &all[3],
    }
}

/// Every attribute that differs between `before` (state; computed attributes are skipped) and
/// `after` (the spec), in the spec's attribute order, then attributes only in state.
pub(crate) fn diff(
    ty: ResourceType,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> Vec<AttributeChange> {
    let mut out = Vec::new();
    let only_before = before.keys().filter(|k| is_configured(ty, k) && !after.contains_key(*k));
    let keys = after.keys().chain(only_before);
    for key in keys {
        let (b, a) = (before.get(key), after.get(key));
        if b == a {
            continue;
        }
        match (ty, key.as_str()) {
            (ResourceType::NestedGuest, "disks") => diff_keyed(ty, key, b, a, &mut out),
            (ResourceType::KvmHost, "kvm_module_options") => diff_map(ty, key, b, a, &mut out),
            _ => push(ty, AttrPath::top(key), b, a, &mut out),
        }
    }
    out
}

fn push(
    ty: ResourceType,
    path: AttrPath<'_>,
    b: Option<&Value>,
    a: Option<&Value>,
    out: &mut Vec<AttributeChange>,
) {
    let (effect, why) = classify(ty, path, b, a);
    out.push(AttributeChange {
        path: path.render(),
        before: b.cloned(),
        after: a.cloned(),
        after_unknown: false,
        effect,
        why,
    });
}

/// A list of blocks with a `name` (disks): elements are matched by name, not position, so inserting a
/// disk does not read as every later disk changing.
fn diff_keyed(
    ty: ResourceType,
    top: &str,
    b: Option<&Value>,
    a: Option<&Value>,
    out: &mut Vec<AttributeChange>,
) {
    let named = |v: Option<&Value>| -> Vec<(String, Map<String, Value>)> {
        v.and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| {
                        let m = i.as_object()?;
                        Some((m.get("name")?.as_str()?.to_string(), m.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (before, after) = (named(b), named(a));
    let start = out.len();
    let find = |list: &[(String, Map<String, Value>)], name: &str| {
        list.iter().find(|(n, _)| n == name).map(|(_, m)| m.clone())
    };
    let mut names: Vec<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
    names.extend(before.iter().map(|(n, _)| n.as_str()).filter(|n| find(&after, n).is_none()));
    for name in names {
        match (find(&before, name), find(&after, name)) {
            (Some(bm), Some(am)) => {
                let fields = am.keys().chain(bm.keys().filter(|k| !am.contains_key(*k)));
                for field in fields {
                    let (bv, av) = (bm.get(field), am.get(field));
                    if bv != av {
                        let path = AttrPath { top, key: Some(name), field: Some(field) };
                        push(ty, path, bv, av, out);
                    }
                }
            }
            (bm, am) => {
                let path = AttrPath { top, key: Some(name), field: None };
                let (bv, av) = (bm.map(Value::Object), am.map(Value::Object));
                push(ty, path, bv.as_ref(), av.as_ref(), out);
            }
        }
    }
    // Same disks, only in another order: the boot disk may differ, which needs a restart.
    if out.len() == start {
        push(ty, AttrPath::top(top), b, a, out);
    }
}

/// A map attribute: one change per key.
fn diff_map(
    ty: ResourceType,
    top: &str,
    b: Option<&Value>,
    a: Option<&Value>,
    out: &mut Vec<AttributeChange>,
) {
    let empty = Map::new();
    let bm = b.and_then(Value::as_object).unwrap_or(&empty);
    let am = a.and_then(Value::as_object).unwrap_or(&empty);
    for key in am.keys().chain(bm.keys().filter(|k| !am.contains_key(*k))) {
        let (bv, av) = (bm.get(key), am.get(key));
        if bv != av {
            push(ty, AttrPath { top, key: Some(key), field: None }, bv, av, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Effect;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn disks_match_by_name() {
        let before = obj(json!({"disks": [
            {"name": "root", "size": "8GiB", "format": "qcow2"},
            {"name": "old", "size": "1GiB", "format": "qcow2"}
        ]}));
        let after = obj(json!({"disks": [
            {"name": "new", "size": "1GiB", "format": "qcow2"},
            {"name": "root", "size": "10GiB", "format": "qcow2"}
        ]}));
        let changes = diff(ResourceType::NestedGuest, &before, &after);
        let paths: Vec<_> = changes.iter().map(|c| (c.path.as_str(), c.effect)).collect();
        assert_eq!(
            paths,
            vec![
                ("disks[\"new\"]", Effect::Restart),
                ("disks[\"root\"].size", Effect::Live),
                ("disks[\"old\"]", Effect::Restart),
            ]
        );
    }

    #[test]
    fn reordered_disks_restart() {
        let a = json!({"name": "a", "size": "1GiB"});
        let b = json!({"name": "b", "size": "1GiB"});
        let before = obj(json!({"disks": [a.clone(), b.clone()]}));
        let after = obj(json!({"disks": [b, a]}));
        let changes = diff(ResourceType::NestedGuest, &before, &after);
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].path.as_str(), changes[0].effect), ("disks", Effect::Restart));
    }

    #[test]
    fn removed_optional_attribute_is_a_change_and_computed_ones_are_kept() {
        let state = json!({"type": "nat_network", "host": "kvm_host.l0", "name": "lan",
            "cidr": "10.0.0.0/24", "domain": "lab", "id": "uuid", "bridge": "virbr1"});
        let (configured, kept) = split_state(ResourceType::NatNetwork, &state);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["id", "bridge"]);
        let after = obj(json!({"host": "kvm_host.l0", "name": "lan", "cidr": "10.0.0.0/24"}));
        let changes = diff(ResourceType::NatNetwork, &configured, &after);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].path, "domain");
        assert_eq!(changes[0].after, None);
        assert_eq!(changes[0].effect, Effect::Replace);
    }

    #[test]
    fn any_state_key_that_is_not_a_spec_field_is_computed() {
        let state = json!({"host": "kvm_host.l0", "name": "g", "vcpus": 1, "memory": "1GiB",
            "cpu": "host-passthrough", "running": true, "id": "u", "mac_addresses": ["52:54:00:00:00:01"]});
        let (configured, kept) = split_state(ResourceType::NestedGuest, &state);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["id", "mac_addresses"]);
        let after = obj(json!({"host": "kvm_host.l0", "name": "g", "vcpus": 1, "memory": "1GiB",
            "cpu": "host-passthrough", "running": true}));
        assert!(diff(ResourceType::NestedGuest, &configured, &after).is_empty());
        assert!(diff(ResourceType::NestedGuest, state.as_object().unwrap(), &after).is_empty());
        // Optional fields absent from the serialized spec are still fields.
        assert!(is_configured(ResourceType::NestedGuest, "install"));
        assert!(is_configured(ResourceType::NatNetwork, "dhcp"));
        assert!(is_configured(ResourceType::KvmHost, "kvm_module_options"));
        assert!(is_configured(ResourceType::Benchmark, "iterations"));
        assert!(!is_configured(ResourceType::KvmHost, "facts"));
        assert!(is_computed(ResourceType::KvmHost, "facts"));
        assert!(!is_computed(ResourceType::KvmHost, "type") && !is_configured(ResourceType::KvmHost, "type"));
    }

    #[test]
    fn module_options_diff_per_key() {
        let before = obj(json!({"kvm_module_options": {"nested": "0", "ept": "1"}}));
        let after = obj(json!({"kvm_module_options": {"nested": "1", "ept": "1"}}));
        let changes = diff(ResourceType::KvmHost, &before, &after);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].path, "kvm_module_options[\"nested\"]");
        assert_eq!(changes[0].effect, Effect::Live);
    }
}
