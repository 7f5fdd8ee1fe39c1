//! The on-disk state format, its own versioned type separate from [`State`]: [`StateFileV1`], the
//! conversions to and from [`State`], the normalising sort that makes equal states give equal bytes,
//! and [`upgrade`], which reads any known format into the current one.
//!
//! Unknown fields are refused rather than ignored: the next save would silently drop them, and a field
//! this nestform does not know means the file was written by something else (a newer nestform adds
//! fields only together with a new format number).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use nestform_types::{InstanceKey, ResourceAddr, ResourceType};
use serde::{Deserialize, Serialize};

use crate::{OutputState, ResourceState, State, StateError};

/// The format this nestform writes.
pub const CURRENT_FORMAT: u64 = 1;

/// Format 1 of `nestform.state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "nestform state file, format 1")]
pub struct StateFileV1 {
    /// The format of this file; always 1 here.
    pub version: u64,
    /// The nestform that last wrote the file.
    pub nestform_version: String,
    /// Grows by one every time the state is written.
    pub serial: u64,
    /// Identifies this state across its whole life.
    pub lineage: String,
    /// Every resource instance, sorted by address.
    pub resources: Vec<ResourceEntry>,
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputState>,
}

/// One resource instance in the state file. `address` is repeated as `type`, `name` and `index_key`
/// so that tools reading the JSON need not parse addresses; loading checks that they agree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceEntry {
    pub address: ResourceAddr,
    #[serde(rename = "type")]
    pub ty: ResourceType,
    pub name: String,
    /// The `count` index or `for_each` key, when the block has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_key: Option<IndexKey>,
    /// The provider's id: a libvirt UUID, or the URI of a level-0 `kvm_host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The `kvm_host` the resource lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<ResourceAddr>,
    /// Nesting level: 0 for a `kvm_host` given by `uri`, one more per guest in between.
    pub level: u32,
    /// Configured arguments and computed attributes.
    pub attributes: serde_json::Value,
    /// What the resource depended on when it was created, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<ResourceAddr>,
    /// Created but not known to be healthy: the next plan replaces it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tainted: bool,
}

impl ResourceEntry {
    /// The file form of one resource, normalised like [`StateFileV1::from_state`].
    pub fn from_resource(addr: &ResourceAddr, r: &ResourceState) -> Self {
        ResourceEntry {
            address: addr.clone(),
            ty: addr.ty,
            name: addr.name.clone(),
            index_key: addr.key.as_ref().map(IndexKey::from),
            id: r.id.clone(),
            host: r.host.clone(),
            level: r.level,
            attributes: sorted_json(&r.attributes),
            dependencies: r.dependencies.iter().cloned().collect(),
            tainted: r.tainted,
        }
    }
}

/// An instance key as JSON: a number for `count`, a string for `for_each`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum IndexKey {
    Int(u64),
    Str(String),
}

impl From<&InstanceKey> for IndexKey {
    fn from(key: &InstanceKey) -> Self {
        match key {
            InstanceKey::Int(i) => IndexKey::Int(*i),
            InstanceKey::Str(s) => IndexKey::Str(s.clone()),
        }
    }
}

impl From<IndexKey> for InstanceKey {
    fn from(key: IndexKey) -> Self {
        match key {
            IndexKey::Int(i) => InstanceKey::Int(i),
            IndexKey::Str(s) => InstanceKey::Str(s),
        }
    }
}

impl StateFileV1 {
    /// The file form of `state`, normalised: resources and dependencies sorted by address, and every
    /// JSON object inside attributes and outputs with its keys sorted, so equal states give equal bytes.
    pub fn from_state(state: &State) -> Self {
        let resources =
            state.resources.iter().map(|(addr, r)| ResourceEntry::from_resource(addr, r)).collect();
        let outputs = state
            .outputs
            .iter()
            .map(|(name, o)| {
                (name.clone(), OutputState { value: sorted_json(&o.value), sensitive: o.sensitive })
            })
            .collect();
        StateFileV1 {
            version: CURRENT_FORMAT,
            nestform_version: env!("CARGO_PKG_VERSION").to_string(),
            serial: state.serial,
            lineage: state.lineage.clone(),
            resources,
            outputs,
        }
    }

    /// The in-memory state, after checking that each entry's `type`, `name` and `index_key` agree
    /// with its `address` and that no address appears twice. `path` is only for messages.
    pub fn into_state(self, path: &Path) -> Result<State, StateError> {
        let invalid = |reason: String| StateError::Invalid { path: path.to_path_buf(), reason };
        if self.lineage.is_empty() {
            return Err(invalid("`lineage` is empty".to_string()));
        }
        let mut resources = BTreeMap::new();
        for entry in self.resources {
            let expected = ResourceAddr {
                ty: entry.ty,
                name: entry.name.clone(),
                key: entry.index_key.clone().map(InstanceKey::from),
            };
            if expected != entry.address {
                return Err(invalid(format!(
                    "resource `{}` has `type`, `name` and `index_key` that make `{expected}`",
                    entry.address
                )));
            }
            let resource = ResourceState {
                id: entry.id,
                host: entry.host,
                level: entry.level,
                attributes: entry.attributes,
                dependencies: entry.dependencies.into_iter().collect::<BTreeSet<_>>(),
                tainted: entry.tainted,
            };
            if resources.insert(entry.address.clone(), resource).is_some() {
                return Err(invalid(format!("resource `{}` appears twice", entry.address)));
            }
        }
        Ok(State { lineage: self.lineage, serial: self.serial, resources, outputs: self.outputs })
    }

    /// The bytes written to disk: pretty JSON ending in a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a state file always serializes");
        bytes.push(b'\n');
        bytes
    }

    /// The JSON Schema of the state file, from these types.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(StateFileV1)).expect("a schema always serializes")
    }
}

/// Reads a state file of any known format, given as JSON, into the current format. `path` is only
/// for messages.
pub fn upgrade(raw: serde_json::Value, path: &Path) -> Result<StateFileV1, StateError> {
    let version = match raw.get("version") {
        Some(v) => v.as_u64().ok_or_else(|| StateError::Invalid {
            path: path.to_path_buf(),
            reason: format!("`version` is `{v}`, not a format number"),
        })?,
        None => {
            return Err(StateError::Invalid {
                path: path.to_path_buf(),
                reason: "it has no `version` field".to_string(),
            })
        }
    };
    match version {
        // Older formats get an arm here that turns them into the next one, e.g.
        // `1 => upgrade(v1_to_v2(serde_json::from_value(raw)?), path)` once format 2 exists.
        1 => serde_json::from_value(raw)
            .map_err(|source| StateError::Invalid { path: path.to_path_buf(), reason: source.to_string() }),
        found if found > CURRENT_FORMAT => Err(StateError::NewerFormat { path: path.to_path_buf(), found }),
        found => {
            Err(StateError::UnsupportedFormat { path: path.to_path_buf(), found, current: CURRENT_FORMAT })
        }
    }
}

/// Parses state file bytes of any known format into a [`State`].
pub fn parse(bytes: &[u8], path: &Path) -> Result<State, StateError> {
    let raw: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|source| StateError::Parse { path: path.to_path_buf(), source })?;
    upgrade(raw, path)?.into_state(path)
}

/// A copy of `value` with every object's keys sorted. `serde_json` here keeps insertion order
/// (`preserve_order`), so two equal values may otherwise print differently.
fn sorted_json(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted_json(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted_json).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    fn addr(s: &str) -> ResourceAddr {
        s.parse().unwrap()
    }

    pub(crate) fn sample_state() -> State {
        let mut state = State::new();
        state.lineage = "3f0c1f3e-0000-4000-8000-000000000001".to_string();
        state.serial = 7;
        state.resources.insert(
            addr("kvm_host.l0"),
            ResourceState {
                id: Some("test:///default".into()),
                host: None,
                level: 0,
                attributes: json!({ "uri": "test:///default" }),
                dependencies: BTreeSet::new(),
                tainted: false,
            },
        );
        state.resources.insert(
            addr("nested_guest.web[10]"),
            ResourceState {
                id: Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427".into()),
                host: Some(addr("kvm_host.l0")),
                level: 1,
                attributes: json!({ "vcpus": 2, "memory": "1GiB" }),
                dependencies: BTreeSet::from([addr("kvm_host.l0"), addr("nat_network.lan[\"a\"]")]),
                tainted: true,
            },
        );
        state.resources.insert(
            addr("nested_guest.web[2]"),
            ResourceState {
                id: None,
                host: Some(addr("kvm_host.l0")),
                level: 1,
                attributes: json!({}),
                dependencies: BTreeSet::new(),
                tainted: false,
            },
        );
        state.resources.insert(
            addr("nat_network.lan[\"a\"]"),
            ResourceState {
                id: Some("net-uuid".into()),
                host: Some(addr("kvm_host.l0")),
                level: 0,
                attributes: json!({ "cidr": "10.0.0.0/24" }),
                dependencies: BTreeSet::from([addr("kvm_host.l0")]),
                tainted: false,
            },
        );
        state.outputs.insert("ip".into(), OutputState { value: json!("10.0.0.2"), sensitive: false });
        state
            .outputs
            .insert("token".into(), OutputState { value: json!({ "b": 1, "a": 2 }), sensitive: true });
        state
    }

    #[test]
    fn state_round_trips_through_the_file_format() {
        let state = sample_state();
        let bytes = StateFileV1::from_state(&state).to_bytes();
        let back = parse(&bytes, Path::new("s.json")).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn resources_are_sorted_by_address_with_numeric_keys_in_order() {
        let file = StateFileV1::from_state(&sample_state());
        let order: Vec<String> = file.resources.iter().map(|r| r.address.to_string()).collect();
        assert_eq!(
            order,
            ["kvm_host.l0", "nat_network.lan[\"a\"]", "nested_guest.web[2]", "nested_guest.web[10]"]
        );
        assert_eq!(file.resources[3].index_key, Some(IndexKey::Int(10)));
        assert_eq!(file.resources[1].index_key, Some(IndexKey::Str("a".into())));
    }

    #[test]
    fn equal_states_give_equal_bytes_whatever_the_key_order() {
        let a = sample_state();
        let mut b = sample_state();
        // Same objects, keys inserted in the other order.
        b.resources.get_mut(&addr("nested_guest.web[10]")).unwrap().attributes =
            serde_json::from_str(r#"{ "memory": "1GiB", "vcpus": 2 }"#).unwrap();
        b.outputs.get_mut("token").unwrap().value = serde_json::from_str(r#"{ "a": 2, "b": 1 }"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(StateFileV1::from_state(&a).to_bytes(), StateFileV1::from_state(&b).to_bytes());
    }

    #[test]
    fn file_bytes_snapshot() {
        let bytes = StateFileV1::from_state(&sample_state()).to_bytes();
        let text = String::from_utf8(bytes).unwrap().replace(env!("CARGO_PKG_VERSION"), "VERSION");
        insta::assert_snapshot!(text);
    }

    #[test]
    fn upgrade_refuses_a_newer_format() {
        let raw = json!({ "version": 2, "whatever": true });
        let err = upgrade(raw, Path::new("nestform.state.json")).unwrap_err();
        assert!(matches!(err, StateError::NewerFormat { found: 2, .. }));
        assert_eq!(
            err.to_string(),
            "state file `nestform.state.json` was written by a newer nestform (format 2); upgrade nestform"
        );
    }

    #[test]
    fn upgrade_refuses_a_missing_or_unknown_older_version() {
        let err = upgrade(json!({ "serial": 1 }), Path::new("s.json")).unwrap_err();
        assert!(err.to_string().contains("it has no `version` field"), "{err}");
        let err = upgrade(json!({ "version": 0 }), Path::new("s.json")).unwrap_err();
        assert!(matches!(err, StateError::UnsupportedFormat { found: 0, current: 1, .. }), "{err}");
        let err = upgrade(json!({ "version": "1" }), Path::new("s.json")).unwrap_err();
        assert!(err.to_string().contains("not a format number"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused_and_named() {
        let mut raw = serde_json::to_value(StateFileV1::from_state(&sample_state())).unwrap();
        raw["resources"][0]["colour"] = json!("blue");
        let err = upgrade(raw, Path::new("s.json")).unwrap_err();
        assert!(matches!(err, StateError::Invalid { .. }));
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");

        let mut raw = serde_json::to_value(StateFileV1::from_state(&sample_state())).unwrap();
        raw["checksum"] = json!("abc");
        let err = upgrade(raw, Path::new("s.json")).unwrap_err();
        assert!(err.to_string().contains("unknown field `checksum`"), "{err}");
    }

    #[test]
    fn unknown_keys_inside_attributes_are_kept() {
        let mut raw = serde_json::to_value(StateFileV1::from_state(&sample_state())).unwrap();
        raw["resources"][0]["attributes"]["future_thing"] = json!(1);
        let state = upgrade(raw, Path::new("s.json")).unwrap().into_state(Path::new("s.json")).unwrap();
        assert_eq!(state.resources[&addr("kvm_host.l0")].attributes["future_thing"], json!(1));
    }

    #[test]
    fn an_entry_whose_parts_disagree_with_its_address_is_refused() {
        let mut raw = serde_json::to_value(StateFileV1::from_state(&sample_state())).unwrap();
        raw["resources"][2]["index_key"] = json!(3);
        let err = parse(raw.to_string().as_bytes(), Path::new("s.json")).unwrap_err();
        assert!(
            err.to_string().contains("resource `nested_guest.web[2]` has `type`, `name` and `index_key` that make `nested_guest.web[3]`"),
            "{err}"
        );
    }

    #[test]
    fn a_duplicated_address_is_refused() {
        let mut raw = serde_json::to_value(StateFileV1::from_state(&sample_state())).unwrap();
        let first = raw["resources"][0].clone();
        raw["resources"].as_array_mut().unwrap().push(first);
        let err = parse(raw.to_string().as_bytes(), Path::new("s.json")).unwrap_err();
        assert!(err.to_string().contains("resource `kvm_host.l0` appears twice"), "{err}");
    }

    #[test]
    fn broken_json_names_the_file_and_the_backup() {
        let err = parse(b"{ \"version\": 1,", Path::new("dir/s.json")).unwrap_err();
        assert!(matches!(err, StateError::Parse { .. }));
        assert!(err.to_string().starts_with("state file `dir/s.json` is not valid JSON"), "{err}");
        assert!(err.to_string().contains("restore it from `dir/s.json.backup`"), "{err}");
    }

    #[test]
    fn schema_describes_the_file() {
        let schema = StateFileV1::json_schema();
        let required = schema["required"].as_array().unwrap();
        for field in ["version", "nestform_version", "serial", "lineage", "resources"] {
            assert!(required.contains(&json!(field)), "`{field}` not required in {schema}");
        }
        assert_eq!(schema["additionalProperties"], json!(false));
    }
}
