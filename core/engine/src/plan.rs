//! What a plan is: the changes nestform proposes, each with its before and after, in a form that can be
//! saved to a file, rendered for people, printed as Terraform-shaped JSON, and replayed by apply without
//! planning again.

use std::collections::{BTreeMap, BTreeSet};

use nestform_types::{ResourceAddr, ResourceSpec};
use serde::{Deserialize, Serialize};

/// The version of the plan file format.
pub const PLAN_FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    /// The lineage and serial of the state this plan was made against: apply refuses a saved plan when
    /// the state has changed since.
    pub lineage: String,
    pub state_serial: u64,
    /// True for `nestform destroy` (and `plan -destroy`).
    pub destroy: bool,
    /// The configuration files the plan was made from (name, text), so apply can evaluate outputs
    /// exactly as planned.
    pub sources: Vec<(String, String)>,
    /// The variable values the plan was made with.
    pub variables: BTreeMap<String, serde_json::Value>,
    /// `-target` and `-replace` as given.
    pub targets: Vec<ResourceAddr>,
    pub replace: Vec<ResourceAddr>,
    /// Every resource instance in configuration or state, in dependency order (no-ops included).
    pub changes: Vec<ResourceChange>,
    pub output_changes: BTreeMap<String, OutputChange>,
    /// What each host reached while planning reported: versions, CPU, acceleration and why.
    #[serde(default)]
    pub hosts: BTreeMap<ResourceAddr, nestform_provider::HostFacts>,
}

/// The closed set of things that can happen to one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    NoOp,
    /// `+`
    Create,
    /// `~`: changed in place, live or with a restart (see [`ResourceChange::restart`]).
    Update,
    /// `-/+`: destroyed, then created again.
    Replace,
    /// `-`
    Delete,
}

impl Action {
    /// Terraform's `change.actions` for this action.
    pub fn terraform_actions(self) -> &'static [&'static str] {
        match self {
            Action::NoOp => &["no-op"],
            Action::Create => &["create"],
            Action::Update => &["update"],
            Action::Replace => &["delete", "create"],
            Action::Delete => &["delete"],
        }
    }
}

/// How a changed attribute reaches the running resource.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Applied to the running resource.
    Live,
    /// Needs a graceful shutdown, the change, and a start.
    Restart,
    /// Forces the resource to be destroyed and created again.
    Replace,
}

/// One attribute that differs between before and after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttributeChange {
    /// `vcpus`, `memory`, `disks["root"].size`, ...
    pub path: String,
    /// `None`: the attribute was absent.
    pub before: Option<serde_json::Value>,
    /// `None`: the attribute is absent after; see `after_unknown` for values known only after apply.
    pub after: Option<serde_json::Value>,
    pub after_unknown: bool,
    pub effect: Effect,
    /// Why this effect, for people: "libvirt cannot change the memory of a running domain".
    pub why: String,
}

/// Why a resource is changed beyond its own attribute differences.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ChangeReason {
    /// The resource lives inside `guest`, which is replaced, restarted or destroyed.
    Cascade { guest: ResourceAddr },
    /// State marks it tainted.
    Tainted,
    /// `-replace` named it.
    ReplaceRequested,
    /// The host reports it gone or different from state. `detail` is a clause that says what
    /// happened: "it was stopped outside nestform".
    Drift { detail: String },
    /// In state but no longer in configuration.
    NotInConfig,
    /// Found on its host with this state's lineage but missing from the state: an apply was stopped
    /// (killed, or the machine went down) between creating it and saving it. Refresh records it
    /// tainted, so it is replaced, or destroyed when no longer configured.
    Orphan,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceChange {
    pub addr: ResourceAddr,
    /// The `kvm_host` it lives on.
    pub host: Option<ResourceAddr>,
    pub level: u32,
    pub action: Action,
    /// For `Update` (and a cascaded stop/start of an unchanged guest): the resource is shut down
    /// gracefully, changed, and started again.
    pub restart: bool,
    /// The resource as recorded in (refreshed) state. `None` for a no-op: nothing differs, so its
    /// before is its `after`, and a plan of thousands of unchanged resources holds each only once.
    pub before: Option<serde_json::Value>,
    /// The resource as it will be; attributes known only after apply are absent here and listed in
    /// `after_unknown`.
    pub after: Option<serde_json::Value>,
    pub after_unknown: BTreeSet<String>,
    /// The resolved configuration to apply (create, update, replace).
    pub spec: Option<ResourceSpec>,
    /// The provider id from state (update, replace, delete).
    pub id: Option<String>,
    pub attribute_changes: Vec<AttributeChange>,
    pub reasons: Vec<ChangeReason>,
    /// The resources this one depends on (configuration for create/update, state for delete).
    pub depends_on: BTreeSet<ResourceAddr>,
    /// For guests: the libvirt domain XML before and after, for a unified diff.
    pub definition_before: Option<String>,
    pub definition_after: Option<String>,
    /// The resource's `timeouts` block as configured (empty: nestform's defaults for its level).
    #[serde(default, skip_serializing_if = "nestform_types::Timeouts::is_empty")]
    pub timeouts: nestform_types::Timeouts,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputChange {
    pub action: Action,
    pub before: Option<serde_json::Value>,
    /// `None` with `after_unknown`: known after apply.
    pub after: Option<serde_json::Value>,
    pub after_unknown: bool,
    pub sensitive: bool,
}

impl Plan {
    /// True when applying would change nothing (resources and outputs).
    pub fn is_empty(&self) -> bool {
        self.changes.iter().all(|c| c.action == Action::NoOp)
            && self.output_changes.values().all(|o| o.action == Action::NoOp)
    }

    /// `(add, change, replace, destroy)` for the summary line.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let n = |a| self.changes.iter().filter(|c| c.action == a).count();
        (n(Action::Create), n(Action::Update), n(Action::Replace), n(Action::Delete))
    }
}
