//! Proposes one [`ResourceChange`] per resource instance, in dependency order: its own change (from the
//! attribute diff, taint, `-replace`, or absence from configuration or state), then what a change of the
//! guest it runs inside forces on it (the cascade; a benchmark is replaced with a replaced target), why
//! it drifted, then the `-target` selection and the domain XML of changed guests.
//!
//! A no-op holds its attributes once (`after`, with `before` left `None`), and nothing of a resource
//! that matches its state is serialized or diffed ([`same`](super::same)): in a plan of thousands of
//! guests nearly every resource is a no-op.

use std::collections::{BTreeSet, HashSet};

use foldhash::{HashMap, HashMapExt};

use nestform_provider::Hypervisor;
use nestform_state::{ResourceState, State};
use nestform_types::{NestedGuestSpec, Owner, ResourceAddr, ResourceSpec, ResourceType};
use serde_json::{Map, Value};

use super::diff::{diff, is_computed, is_configured, split_state};
use super::same::spec_matches_state;
use super::{Inputs, PlanOptions, Problem};
use crate::computed::{computed_attributes, promised_attributes};
use crate::graph::{DesiredResource, GraphNode, GraphProblem, ResourceGraph};
use crate::plan::{Action, ChangeReason, Effect, ResourceChange};
use crate::request::guest_request;

/// Why the planner could not propose changes.
#[derive(Debug)]
pub(crate) enum Failure {
    Graph(Vec<GraphProblem>),
    Problems(Vec<Problem>),
}

/// Every change, in dependency order, plus the warnings.
pub(crate) fn plan_changes(
    desired: &[DesiredResource<'_>],
    inputs: &Inputs<'_>,
) -> Result<(Vec<ResourceChange>, Vec<Problem>), Failure> {
    let (graph, graph_problems) = ResourceGraph::from_resources(desired.iter().copied(), inputs.state);
    if !graph_problems.is_empty() {
        return Err(Failure::Graph(graph_problems));
    }
    let mut problems = Vec::new();
    if !inputs.options.destroy {
        problems.extend(super::checks::host_checks(desired, inputs.facts));
        if let Some(boot) = inputs.boot {
            problems.extend(super::checks::lab_checks(desired, boot));
        }
        problems.extend(super::checks::kvm_option_checks(desired, inputs.facts, inputs.state));
    }
    problems.extend(unmatched_addresses(&graph, inputs.state, inputs.options));
    if problems.iter().any(|p| p.error) {
        return Err(Failure::Problems(problems));
    }

    let specs: HashMap<&ResourceAddr, &ResourceSpec> = desired.iter().map(|d| (d.addr, d.spec)).collect();
    // Looked up once per resource in graph order: hashing beats walking the state's B-tree.
    let states: HashMap<&ResourceAddr, &ResourceState> = inputs.state.resources.iter().collect();
    let mut changes: Vec<ResourceChange> = Vec::with_capacity(graph.len());
    let mut at: HashMap<&ResourceAddr, usize> = HashMap::with_capacity(graph.len());
    for node in graph.in_order() {
        let depends_on = graph.dependencies(&node.addr).into_iter().cloned().collect();
        let spec = specs.get(&node.addr).copied();
        let st = states.get(&node.addr).copied();
        let Some(mut change) = own_change(node, spec, st, inputs.options, depends_on) else {
            continue;
        };
        if let Some((origin, kind)) = cascade_source(node, &graph, &changes, &at) {
            apply_cascade(&mut change, origin, kind);
        }
        if let Some(spec) = spec {
            if let Some(target) = replaced_target(spec, st, &changes, &at) {
                apply_cascade(&mut change, target, Action::Replace);
            }
        }
        if let Some(recorded) = inputs.recorded {
            let recorded = recorded.resources.get(&node.addr);
            // An orphan is tainted only because refresh recorded it so; the plan says what it is.
            // What refresh knows of it is not the record of something that drifted.
            if super::drift::is_orphan(st, recorded) {
                change.reasons.retain(|r| *r != ChangeReason::Tainted);
                change.reasons.insert(0, ChangeReason::Orphan);
            } else {
                change.reasons.extend(super::drift::drift(&change, st, recorded));
            }
        }
        // A no-op's `before` is its `after` (see `own_change`); a change shows what it was.
        if !matches!(change.action, Action::NoOp | Action::Create) && change.before.is_none() {
            change.before = st.map(state_attributes);
        }
        // The spec is what apply creates or changes; a no-op needs none, and thousands of copies
        // are a good part of a large plan's time.
        if matches!(change.action, Action::Create | Action::Update | Action::Replace) {
            change.spec = spec.cloned();
        }
        // What apply will compute depends on the spec (a guest's agent), which cascades did not see.
        if let (Action::Create | Action::Replace, Some(spec)) = (change.action, spec) {
            change.after_unknown = unknown_keys(node.addr.ty, Some(spec));
        }
        at.insert(&node.addr, changes.len());
        changes.push(change);
    }

    if !inputs.options.targets.is_empty() {
        let selected = select_targets(&graph, inputs.options);
        changes.retain(|c| {
            selected.contains(&c.addr)
                || c.reasons
                    .iter()
                    .any(|r| matches!(r, ChangeReason::Cascade { guest } if selected.contains(guest)))
        });
    }

    add_definitions(&mut changes, &specs, inputs);
    Ok((changes, problems))
}

/// The state's attributes without the `type` tag a serialized `ResourceSpec` carries.
fn state_attributes(s: &ResourceState) -> Value {
    match &s.attributes {
        Value::Object(m) if m.contains_key("type") => {
            let mut m = m.clone();
            m.shift_remove("type");
            Value::Object(m)
        }
        other => other.clone(),
    }
}

/// What apply will compute for the resource (all its type may compute when the spec is not at hand).
fn unknown_keys(ty: ResourceType, spec: Option<&ResourceSpec>) -> BTreeSet<String> {
    let keys = match spec {
        Some(spec) => promised_attributes(spec),
        None => computed_attributes(ty),
    };
    keys.iter().map(|k| k.to_string()).collect()
}

/// The change a resource needs on its own account, before cascades. `None` for a resource that
/// destroy mode leaves alone (in configuration, never created).
fn own_change(
    node: &GraphNode,
    spec: Option<&ResourceSpec>,
    st: Option<&ResourceState>,
    options: &PlanOptions,
    depends_on: BTreeSet<ResourceAddr>,
) -> Option<ResourceChange> {
    let ty = node.addr.ty;
    let mut c = ResourceChange {
        addr: node.addr.clone(),
        host: node.host.clone(),
        level: node.level,
        action: Action::NoOp,
        restart: false,
        // Filled below for everything but a no-op: a plan of thousands of unchanged guests would
        // otherwise copy every one of them twice (before and after are the same).
        before: None,
        after: None,
        after_unknown: BTreeSet::new(),
        spec: None,
        id: st.and_then(|s| s.id.clone()),
        attribute_changes: Vec::new(),
        reasons: Vec::new(),
        depends_on,
        definition_before: None,
        definition_after: None,
        timeouts: Default::default(),
    };
    match (spec, st) {
        (_, None) if options.destroy => return None,
        (_, Some(s)) if options.destroy => {
            c.action = Action::Delete;
            c.before = Some(state_attributes(s));
        }
        (None, None) => return None,
        (None, Some(s)) => {
            c.action = Action::Delete;
            c.before = Some(state_attributes(s));
            c.reasons.push(ChangeReason::NotInConfig);
        }
        (Some(spec), None) => {
            c.action = Action::Create;
            c.after = Some(Value::Object(spec.attributes()));
            c.after_unknown = unknown_keys(ty, Some(spec));
        }
        (Some(spec), Some(s)) => {
            let empty = Map::new();
            // The state's own map: `diff` skips the `type` tag and computed attributes.
            let before = s.attributes.as_object().unwrap_or(&empty);
            let replace_requested = options.replace.iter().any(|r| r.contains(&node.addr));
            if !s.tainted && !replace_requested && spec_matches_state(ty, spec, before) {
                // Nothing differs (most of a large plan): after is what state records, computed
                // attributes included, without serializing the spec and diffing.
                c.after = Some(state_attributes(s));
                return Some(c);
            }
            let mut after = spec.attributes();
            c.attribute_changes = diff(ty, before, &after);
            if s.tainted {
                c.reasons.push(ChangeReason::Tainted);
            }
            if replace_requested {
                c.reasons.push(ChangeReason::ReplaceRequested);
            }
            let strongest = c.attribute_changes.iter().map(|a| a.effect).max();
            if !c.reasons.is_empty() || strongest == Some(Effect::Replace) {
                c.action = Action::Replace;
                c.after_unknown = unknown_keys(ty, Some(spec));
            } else {
                // Computed attributes stay as they are.
                for (k, v) in before.iter().filter(|(k, _)| is_computed(ty, k)) {
                    after.insert(k.clone(), v.clone());
                }
                c.action = match strongest {
                    None => Action::NoOp,
                    Some(_) => Action::Update,
                };
                c.restart = strongest == Some(Effect::Restart);
            }
            if c.action != Action::NoOp {
                c.before = Some(state_attributes(s));
            }
            c.after = Some(Value::Object(after));
        }
    }
    Some(c)
}

/// What the guest that `node` runs inside forces on it: the guest whose change started the cascade,
/// and that change (`Replace`, `Delete`, `Update` for a restart, or `Create` for a guest that was
/// deleted outside nestform, taking what ran inside it along).
fn cascade_source(
    node: &GraphNode,
    graph: &ResourceGraph,
    changes: &[ResourceChange],
    at: &HashMap<&ResourceAddr, usize>,
) -> Option<(ResourceAddr, Action)> {
    // A promoted host lives inside its guest; a guest or network inside the guest its host promotes.
    let guest = match &node.promotes {
        Some(g) => g,
        None => graph.get(node.host.as_ref()?)?.promotes.as_ref()?,
    };
    let g = &changes[*at.get(guest)?];
    let kind = match g.action {
        Action::Replace | Action::Delete => g.action,
        // Only a guest known to have vanished (drift, or cascaded from one): a guest that is new in
        // configuration says nothing about what state recorded inside another one.
        Action::Create
            if g.reasons
                .iter()
                .any(|r| matches!(r, ChangeReason::Drift { .. } | ChangeReason::Cascade { .. })) =>
        {
            Action::Create
        }
        Action::Update if g.restart => Action::Update,
        _ => return None,
    };
    let origin = g
        .reasons
        .iter()
        .find_map(|r| match r {
            ChangeReason::Cascade { guest } => Some(guest.clone()),
            _ => None,
        })
        .unwrap_or_else(|| guest.clone());
    Some((origin, kind))
}

/// For a benchmark that exists: a target that is replaced (or created again), whose measurements
/// would be about a machine that is gone.
fn replaced_target(
    spec: &ResourceSpec,
    st: Option<&ResourceState>,
    changes: &[ResourceChange],
    at: &HashMap<&ResourceAddr, usize>,
) -> Option<ResourceAddr> {
    let ResourceSpec::Benchmark(b) = spec else { return None };
    st?;
    b.targets
        .iter()
        .find(|t| at.get(t).is_some_and(|&i| matches!(changes[i].action, Action::Replace | Action::Create)))
        .cloned()
}

fn apply_cascade(c: &mut ResourceChange, origin: ResourceAddr, kind: Action) {
    let reason = ChangeReason::Cascade { guest: origin };
    match (kind, c.action) {
        // Deleted anyway (destroy, or no longer configured): the guest's delete takes it along.
        (Action::Delete, Action::Delete) => {
            if !c.reasons.contains(&reason) {
                c.reasons.push(reason);
            }
        }
        (Action::Delete, Action::NoOp | Action::Update | Action::Replace) => {
            c.action = Action::Delete;
            c.restart = false;
            c.after = None;
            c.after_unknown.clear();
            c.reasons.push(reason);
        }
        (Action::Replace, Action::NoOp | Action::Update) => {
            c.action = Action::Replace;
            c.restart = false;
            let ty = c.addr.ty;
            if let Some(Value::Object(after)) = &mut c.after {
                after.retain(|k, _| is_configured(ty, k));
            }
            c.after_unknown = unknown_keys(c.addr.ty, c.spec.as_ref());
            c.reasons.push(reason);
        }
        // The guest it ran inside is gone (deleted outside nestform, so refresh removed it), and it
        // went with it: it is created again, not changed.
        (Action::Create, Action::NoOp | Action::Update | Action::Replace) => {
            c.action = Action::Create;
            c.restart = false;
            c.before = None;
            c.id = None;
            c.attribute_changes.clear();
            c.reasons.clear();
            let ty = c.addr.ty;
            if let Some(Value::Object(after)) = &mut c.after {
                after.retain(|k, _| is_configured(ty, k));
            }
            c.after_unknown = unknown_keys(ty, c.spec.as_ref());
            c.reasons.push(reason);
        }
        // Only guests stop with the guest they run inside; networks and hosts come back with it
        // (libvirt autostarts networks). A guest that is and stays stopped has nothing to restart.
        (Action::Update, Action::NoOp | Action::Update)
            if c.addr.ty == ResourceType::NestedGuest && (is_running(&c.before) || is_running(&c.after)) =>
        {
            c.action = Action::Update;
            c.restart = true;
            c.reasons.push(reason);
        }
        _ => {}
    }
}

fn is_running(attrs: &Option<Value>) -> bool {
    attrs.as_ref().and_then(|a| a.get("running")).and_then(Value::as_bool).unwrap_or(false)
}

fn matches_target(options: &PlanOptions, addr: &ResourceAddr) -> bool {
    options.targets.iter().any(|t| t.contains(addr))
}

fn unmatched_addresses(graph: &ResourceGraph, state: &State, options: &PlanOptions) -> Vec<Problem> {
    let problem = |summary: String, help: &str| Problem {
        error: true,
        addr: None,
        attr: None,
        summary,
        detail: None,
        help: Some(help.to_string()),
    };
    let mut out = Vec::new();
    for t in options.targets.iter().filter(|t| !graph.in_order().any(|n| t.contains(&n.addr))) {
        out.push(problem(
            format!("`-target` `{t}` matches no resource"),
            "name a resource declared in the configuration or recorded in state",
        ));
    }
    // Only what exists can be replaced.
    for r in options.replace.iter().filter(|r| !state.resources.keys().any(|a| r.contains(a))) {
        out.push(problem(
            format!("`-replace` `{r}` matches no resource in state"),
            "name a resource that has been created; one not created yet is created anyway",
        ));
    }
    out
}

/// The targets, and what they depend on (plan) or what depends on them (destroy).
fn select_targets(graph: &ResourceGraph, options: &PlanOptions) -> HashSet<ResourceAddr> {
    let mut selected = HashSet::new();
    for node in graph.in_order().filter(|n| matches_target(options, &n.addr)) {
        selected.insert(node.addr.clone());
        let more = if options.destroy {
            graph.transitive_dependents(&node.addr)
        } else {
            graph.transitive_dependencies(&node.addr)
        };
        selected.extend(more.into_iter().cloned());
    }
    selected
}

/// The domain XML before and after, for changed guests on hosts nestform is connected to.
fn add_definitions(
    changes: &mut [ResourceChange],
    specs: &HashMap<&ResourceAddr, &ResourceSpec>,
    inputs: &Inputs<'_>,
) {
    let network_name = |a: &ResourceAddr| -> Option<String> {
        match specs.get(a) {
            Some(ResourceSpec::NatNetwork(n)) => Some(n.name.clone()),
            _ => inputs.state.resources.get(a)?.attributes.get("name")?.as_str().map(String::from),
        }
    };
    for c in changes.iter_mut() {
        if c.addr.ty != ResourceType::NestedGuest
            || c.action == Action::NoOp
            || (c.action == Action::Update && c.attribute_changes.is_empty())
        {
            continue;
        }
        let Some(hv) = c.host.as_ref().and_then(|h| inputs.hypervisors.get(h)) else { continue };
        let owner = Owner { lineage: inputs.state.lineage.clone(), address: c.addr.to_string() };
        let define = |hv: &dyn Hypervisor, g: &NestedGuestSpec| {
            hv.guest_definition(&guest_request(g, network_name), &owner)
        };
        if let Some(ResourceSpec::NestedGuest(g)) = &c.spec {
            if c.action != Action::Delete {
                c.definition_after = Some(define(hv.as_ref(), g));
            }
        }
        if let Some(before) = &c.before {
            let (configured, _) = split_state(ResourceType::NestedGuest, before);
            if let Ok(g) = serde_json::from_value::<NestedGuestSpec>(Value::Object(configured)) {
                c.definition_before = Some(define(hv.as_ref(), &g));
            }
        }
    }
}
