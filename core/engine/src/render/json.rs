//! The JSON plan: Terraform's plan representation (`format_version` `1.2`: `resource_changes` with
//! `address`, `mode`, `type`, `name`, `index`, `change { actions, before, after, after_unknown,
//! replace_paths }` and `action_reason`, and `output_changes`), so tools that read `terraform show
//! -json` read nestform's too. What Terraform has no words for (levels, hosts, restarts, effects) goes
//! in a `nestform` field on each change, which Terraform's readers ignore as an unknown property.
//!
//! [`JsonPlan`] is the serde type of that document; `schemas/plan.schema.json` is generated from it
//! (by the CLI's `schemas` test).

use std::collections::BTreeMap;

use nestform_types::{InstanceKey, ResourceAddr};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::{Action, ChangeReason, Effect, Plan, ResourceChange};

/// The version of Terraform's JSON plan representation this follows.
pub const JSON_FORMAT_VERSION: &str = "1.2";

/// `nestform show -json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JsonPlan {
    /// Always `"1.2"`.
    pub format_version: String,
    /// The nestform version that wrote the document.
    pub nestform_version: String,
    /// The variable values the plan was made with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, JsonVariable>,
    /// Every resource instance, in dependency order, no-ops included.
    pub resource_changes: Vec<JsonResourceChange>,
    pub output_changes: BTreeMap<String, JsonChange>,
    /// False when applying would change nothing.
    pub applyable: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JsonVariable {
    pub value: Value,
}

/// One resource instance's change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JsonResourceChange {
    /// `nested_guest.web[0]`.
    pub address: String,
    /// Always `"managed"`: nestform has no data sources.
    pub mode: String,
    /// The block type: `nested_guest`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The block label: `web`.
    pub name: String,
    /// The instance key: a number for `count`, a string for `for_each`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Value>,
    pub change: JsonChange,
    /// Why a replace or delete happens, in Terraform's words: `replace_because_cannot_update`,
    /// `replace_because_tainted`, `replace_by_request`, `replace_by_triggers`,
    /// `delete_because_no_resource_config`; and nestform's own for drift (a change made outside
    /// nestform, detailed in `nestform.reasons`): `create_because_drift`, `update_because_drift`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_reason: Option<String>,
    pub nestform: JsonNestform,
}

/// Terraform's change representation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JsonChange {
    /// `["no-op"]`, `["create"]`, `["update"]`, `["delete", "create"]` or `["delete"]`.
    pub actions: Vec<String>,
    pub before: Value,
    pub after: Value,
    /// The same shape as `after`, with `true` where the value is known only after apply.
    pub after_unknown: Value,
    /// The attribute paths that force a replacement, each a list of steps (names and list indices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_paths: Option<Vec<Vec<Value>>>,
    /// For outputs: whether the value is sensitive (Terraform prints it in JSON all the same, and
    /// marks it so that readers hide it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_sensitive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_sensitive: Option<bool>,
}

/// What nestform adds to each change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JsonNestform {
    /// Nesting level: 0 on a physical host, one more per guest in between.
    pub level: u32,
    /// The `kvm_host` the resource lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The resource is shut down, changed and started again.
    pub restart: bool,
    /// Each changed attribute with how it reaches the resource and why.
    pub effects: Vec<JsonEffect>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<ChangeReason>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JsonEffect {
    /// `memory`, `disks["root"].size`, ...
    pub path: String,
    pub effect: Effect,
    pub why: String,
}

/// The plan as a Terraform-shaped JSON document.
pub fn plan_json(plan: &Plan) -> Value {
    serde_json::to_value(json_plan(plan)).expect("a JSON plan serializes")
}

/// The JSON Schema of [`JsonPlan`].
pub fn plan_json_schema() -> schemars::Schema {
    schemars::schema_for!(JsonPlan)
}

/// The plan as the typed JSON document.
pub fn json_plan(plan: &Plan) -> JsonPlan {
    JsonPlan {
        format_version: JSON_FORMAT_VERSION.to_string(),
        nestform_version: env!("CARGO_PKG_VERSION").to_string(),
        variables: plan
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), JsonVariable { value: v.clone() }))
            .collect(),
        resource_changes: plan.changes.iter().map(resource_change).collect(),
        output_changes: plan
            .output_changes
            .iter()
            .map(|(name, o)| {
                let change = JsonChange {
                    actions: actions(o.action),
                    before: o.before.clone().unwrap_or(Value::Null),
                    after: o.after.clone().unwrap_or(Value::Null),
                    after_unknown: Value::Bool(o.after_unknown),
                    replace_paths: None,
                    before_sensitive: Some(o.sensitive),
                    after_sensitive: Some(o.sensitive),
                };
                (name.clone(), change)
            })
            .collect(),
        applyable: !plan.is_empty(),
    }
}

fn actions(a: Action) -> Vec<String> {
    a.terraform_actions().iter().map(|s| s.to_string()).collect()
}

fn resource_change(c: &ResourceChange) -> JsonResourceChange {
    let after_unknown: serde_json::Map<String, Value> =
        c.after_unknown.iter().map(|k| (k.clone(), Value::Bool(true))).collect();
    let replace_paths: Vec<Vec<Value>> = c
        .attribute_changes
        .iter()
        .filter(|a| a.effect == Effect::Replace)
        .map(|a| path_steps(&a.path, c.after.as_ref().or(c.before.as_ref())))
        .collect();
    JsonResourceChange {
        address: c.addr.to_string(),
        mode: "managed".to_string(),
        ty: c.addr.ty.as_str().to_string(),
        name: c.addr.name.clone(),
        index: c.addr.key.as_ref().map(|k| match k {
            InstanceKey::Int(i) => Value::from(*i),
            InstanceKey::Str(s) => Value::from(s.clone()),
        }),
        change: JsonChange {
            actions: actions(c.action),
            before: before(c).cloned().unwrap_or(Value::Null),
            after: c.after.clone().unwrap_or(Value::Null),
            after_unknown: Value::Object(after_unknown),
            replace_paths: (c.action == Action::Replace && !replace_paths.is_empty())
                .then_some(replace_paths),
            before_sensitive: None,
            after_sensitive: None,
        },
        action_reason: action_reason(c),
        nestform: JsonNestform {
            level: c.level,
            host: c.host.as_ref().map(ResourceAddr::to_string),
            restart: c.restart,
            effects: c
                .attribute_changes
                .iter()
                .map(|a| JsonEffect { path: a.path.clone(), effect: a.effect, why: a.why.clone() })
                .collect(),
            reasons: c.reasons.clone(),
        },
    }
}

/// What the resource was: a no-op's `before` is its `after` (the plan holds it once), and Terraform's
/// readers expect both.
fn before(c: &ResourceChange) -> Option<&Value> {
    match (&c.before, c.action) {
        (None, Action::NoOp) => c.after.as_ref(),
        (before, _) => before.as_ref(),
    }
}

fn action_reason(c: &ResourceChange) -> Option<String> {
    let has = |f: fn(&ChangeReason) -> bool| c.reasons.iter().any(f);
    let reason = match c.action {
        // Terraform's way to say an interrupted create: the object exists, but not as configured.
        Action::Replace if has(|r| matches!(r, ChangeReason::Tainted | ChangeReason::Orphan)) => {
            "replace_because_tainted"
        }
        Action::Replace if has(|r| matches!(r, ChangeReason::ReplaceRequested)) => "replace_by_request",
        Action::Replace if has(|r| matches!(r, ChangeReason::Cascade { .. })) => "replace_by_triggers",
        Action::Replace => "replace_because_cannot_update",
        Action::Delete if has(|r| matches!(r, ChangeReason::NotInConfig)) => {
            "delete_because_no_resource_config"
        }
        // Created again because it, or the guest it ran inside, was deleted outside nestform.
        Action::Create if has(|r| matches!(r, ChangeReason::Drift { .. } | ChangeReason::Cascade { .. })) => {
            "create_because_drift"
        }
        Action::Update if has(|r| matches!(r, ChangeReason::Drift { .. })) => "update_because_drift",
        _ => return None,
    };
    Some(reason.to_string())
}

/// `disks["root"].size` as Terraform's path steps: `["disks", 0, "size"]`, the list index found by the
/// disk's name in `value` (the object the path is in).
fn path_steps(path: &str, value: Option<&Value>) -> Vec<Value> {
    let (top, rest) = match path.find('[') {
        Some(i) => (&path[..i], &path[i..]),
        None => return vec![Value::from(path)],
    };
    let mut steps = vec![Value::from(top)];
    let Some(close) = rest.find("\"]") else { return vec![Value::from(path)] };
    let key: String = serde_json::from_str(&rest[1..close + 1]).unwrap_or_default();
    let field = rest[close + 2..].strip_prefix('.');
    let container = value.and_then(|v| v.get(top));
    match container {
        Some(Value::Array(items)) => {
            let at = items.iter().position(|i| i.get("name").and_then(Value::as_str) == Some(&key));
            steps.push(at.map(Value::from).unwrap_or(Value::from(key)));
        }
        _ => steps.push(Value::from(key)),
    }
    if let Some(f) = field {
        steps.push(Value::from(f));
    }
    steps
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nestform_state::State;
    use nestform_types::DiskFormat;
    use serde_json::json;

    use super::*;
    use crate::planner::tests::{plan_of, run_with, three_levels};
    use crate::planner::PlanOptions;

    fn plan(conf: &crate::planner::tests::Conf, state: &State) -> Value {
        let (changes, _) =
            run_with(conf, state, &BTreeMap::new(), &BTreeMap::new(), PlanOptions::default()).unwrap();
        plan_json(&plan_of(changes))
    }

    #[test]
    fn create_in_terraform_shape() {
        let v = plan(&three_levels(), &State::new());
        assert_eq!(v["format_version"], "1.2");
        assert_eq!(v["applyable"], true);
        let g1 = &v["resource_changes"][2];
        assert_eq!(g1["address"], "nested_guest.g1");
        assert_eq!(g1["mode"], "managed");
        assert_eq!(g1["type"], "nested_guest");
        assert_eq!(g1["name"], "g1");
        assert!(g1.get("index").is_none());
        assert_eq!(g1["change"]["actions"], json!(["create"]));
        assert_eq!(g1["change"]["before"], Value::Null);
        assert_eq!(g1["change"]["after"]["vcpus"], 1);
        assert_eq!(g1["change"]["after_unknown"], json!({"id": true}));
        assert_eq!(
            g1["nestform"],
            json!({"level": 1, "host": "kvm_host.l0", "restart": false, "effects": []})
        );
    }

    #[test]
    fn replace_names_its_paths_and_reasons() {
        let conf = three_levels();
        let state = conf.applied();
        let conf = conf.edit_guest("g2", |g| g.disks[0].format = DiskFormat::Raw);
        let v = plan(&conf, &state);
        let by_addr = |a: &str| {
            v["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == a).unwrap().clone()
        };
        let g2 = by_addr("nested_guest.g2");
        assert_eq!(g2["change"]["actions"], json!(["delete", "create"]));
        assert_eq!(g2["change"]["replace_paths"], json!([["disks", 0, "format"]]));
        assert_eq!(g2["action_reason"], "replace_because_cannot_update");
        assert_eq!(g2["nestform"]["effects"][0]["effect"], "replace");
        let g3 = by_addr("nested_guest.g3");
        assert_eq!(g3["action_reason"], "replace_by_triggers");
        assert_eq!(g3["nestform"]["reasons"], json!([{"kind": "cascade", "guest": "nested_guest.g2"}]));
        let g1 = by_addr("nested_guest.g1");
        assert_eq!(g1["change"]["actions"], json!(["no-op"]));
        // A no-op holds its attributes once; the document shows them as before and after.
        assert_eq!(g1["change"]["before"]["memory"], "512MiB");
        assert_eq!(g1["change"]["before"], g1["change"]["after"]);
        // The document reads back as the typed form.
        let typed: JsonPlan = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(typed.resource_changes.len(), 7);
    }

    #[test]
    fn instance_keys_become_index() {
        let (mut changes, _) = run_with(
            &three_levels(),
            &State::new(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            PlanOptions::default(),
        )
        .unwrap();
        changes[0].addr = changes[0].addr.clone().with_key(nestform_types::InstanceKey::Int(3));
        changes[1].addr = changes[1].addr.clone().with_key(nestform_types::InstanceKey::Str("a".into()));
        let v = plan_json(&plan_of(changes));
        let rc = &v["resource_changes"];
        assert_eq!(
            (&rc[0]["address"], &rc[0]["name"], &rc[0]["index"]),
            (&json!("kvm_host.l0[3]"), &json!("l0"), &json!(3))
        );
        assert_eq!((&rc[1]["address"], &rc[1]["index"]), (&json!("nat_network.lan[\"a\"]"), &json!("a")));
    }

    #[test]
    fn outputs_carry_their_change_and_sensitivity() {
        let mut plan = plan_of(Vec::new());
        let secret = crate::plan::OutputChange {
            action: Action::Update,
            before: Some(json!("a")),
            after: Some(json!("b")),
            after_unknown: false,
            sensitive: true,
        };
        plan.output_changes.insert("secret".into(), secret);
        let v = plan_json(&plan);
        assert_eq!(
            v["output_changes"]["secret"],
            json!({"actions": ["update"], "before": "a", "after": "b", "after_unknown": false,
                   "before_sensitive": true, "after_sensitive": true})
        );
        assert_eq!(v["applyable"], true);
    }

    #[test]
    fn schema_describes_the_document() {
        let schema = serde_json::to_value(plan_json_schema()).unwrap();
        let props = &schema["properties"];
        for key in ["format_version", "resource_changes", "output_changes", "applyable"] {
            assert!(props.get(key).is_some(), "{key}");
        }
        assert!(schema["$defs"]["JsonResourceChange"]["properties"].get("nestform").is_some());
    }
}
