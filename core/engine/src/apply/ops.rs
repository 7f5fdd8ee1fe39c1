//! The operation graph: each change of a plan becomes one or more operations, ordered so that
//! everything is built bottom-up and torn down top-down across nesting levels.
//!
//! - Create, Update (live) and Start ("up" operations) of a resource wait for the up operations of
//!   what it depends on in configuration (`depends_on`, its host, the guest a host promotes).
//! - Stop and Delete ("down" operations) of a resource wait for the down operations of everything
//!   that depends on it in state: a guest is deleted before its network and its host, an inner guest
//!   is stopped before the guest it runs in. Destroy therefore runs from the deepest level up.
//! - Within one resource: Replace is Delete then Create; a restart update is Stop, Update, Start.
//! - Resources without operations (no-ops) are looked through, so a guest on a promoted host still
//!   waits for the guest that host runs in.
//! - A cascade (`ChangeReason::Cascade { guest }`) adds the same two edges explicitly, for plans whose
//!   recorded dependencies do not name the outer guest.
//! - A resource deleted for good waits for every operation of a resource that depended on it and is
//!   only updated in place (a guest moved off a network before the network goes).
//! - A delete of what lives inside a guest that the plan deletes too (an inner guest, its network,
//!   the host its guest promotes) is swept: deleting the outer guest removes everything that ran in
//!   it, so nothing is asked of the hosts inside (which may be unreachable: level 1 stopped, crashed
//!   or wedged) and only the state record goes, after the outer guest's delete. Destroy therefore
//!   deletes the outermost guests and forgets what they held.
//!
//! The graph is built before anything runs, and a cycle in it refuses the whole apply.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use nestform_state::State;
use nestform_types::{ResourceAddr, ResourceSpec, ResourceType};
use serde::{Deserialize, Serialize};

use crate::plan::{Action, ChangeReason, Plan};
use crate::refresh::recorded_host;

/// One kind of operation on one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Create,
    Update,
    Stop,
    Start,
    Delete,
}

impl OpKind {
    /// Stop and Delete tear down; the others build up.
    pub fn is_down(self) -> bool {
        matches!(self, OpKind::Stop | OpKind::Delete)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Update => "update",
            OpKind::Stop => "stop",
            OpKind::Start => "start",
            OpKind::Delete => "delete",
        }
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One operation: `kind` on the resource of `plan.changes[change]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Op {
    pub addr: ResourceAddr,
    pub kind: OpKind,
    pub change: usize,
    /// For a swept delete: the outermost guest deleted in the same plan that this resource runs
    /// inside, whose delete removes it.
    pub swept_by: Option<ResourceAddr>,
}

/// The operations and, for each, the operations it waits for (indexes into `ops`).
#[derive(Debug, Default)]
pub(crate) struct OpGraph {
    pub ops: Vec<Op>,
    pub deps: Vec<BTreeSet<usize>>,
}

impl OpGraph {
    fn push(&mut self, op: Op) -> usize {
        self.ops.push(op);
        self.deps.push(BTreeSet::new());
        self.ops.len() - 1
    }

    fn wait(&mut self, dependent: usize, dependency: usize) {
        if dependent != dependency {
            self.deps[dependent].insert(dependency);
        }
    }
}

/// Why a plan cannot be applied at all: each resource with its reason.
pub(crate) type Refusals = Vec<(ResourceAddr, String)>;

/// Checks that every change can be applied and builds the operation graph; refuses the whole plan
/// (touching nothing) when any change cannot be.
pub(crate) fn build(
    plan: &Plan,
    state: &State,
    runners: &dyn nestform_provider::Benchmarks,
) -> Result<OpGraph, Refusals> {
    let refusals = validate(plan, &View::new(plan, state), runners);
    if !refusals.is_empty() {
        return Err(refusals);
    }
    Ok(graph_of(plan, state))
}

/// The operation graph of a plan, without validating it.
fn graph_of(plan: &Plan, state: &State) -> OpGraph {
    let view = View::new(plan, state);
    let mut g = OpGraph::default();
    let mut by_addr: BTreeMap<&ResourceAddr, Vec<usize>> = BTreeMap::new();
    for (i, c) in plan.changes.iter().enumerate() {
        let kinds: &[OpKind] = match (c.action, c.restart) {
            (Action::NoOp, false) => &[],
            (Action::NoOp, true) => &[OpKind::Stop, OpKind::Start],
            (Action::Create, _) => &[OpKind::Create],
            (Action::Update, false) => &[OpKind::Update],
            (Action::Update, true) if wants_running(c.spec.as_ref()) => {
                &[OpKind::Stop, OpKind::Update, OpKind::Start]
            }
            (Action::Update, true) => &[OpKind::Stop, OpKind::Update],
            (Action::Replace, _) => &[OpKind::Delete, OpKind::Create],
            (Action::Delete, _) => &[OpKind::Delete],
        };
        let ids: Vec<usize> = kinds
            .iter()
            .map(|&kind| {
                let swept_by = if kind == OpKind::Delete { view.swept_by(&c.addr) } else { None };
                g.push(Op { addr: c.addr.clone(), kind, change: i, swept_by })
            })
            .collect();
        for pair in ids.windows(2) {
            g.wait(pair[1], pair[0]);
        }
        if !ids.is_empty() {
            by_addr.entry(&c.addr).or_default().extend(ids);
        }
    }

    let first = |ids: &[usize], down: bool| ids.iter().copied().find(|&i| g.ops[i].kind.is_down() == down);
    let last =
        |ids: &[usize], down: bool| ids.iter().copied().rev().find(|&i| g.ops[i].kind.is_down() == down);
    let mut edges: Vec<(usize, usize)> = Vec::new();
    for (addr, ids) in &by_addr {
        if let Some(up) = first(ids, false) {
            for dep in view.nearest(addr, &by_addr, &|a| view.config_deps(a), &|ids| last(ids, false)) {
                edges.push((up, dep));
            }
        }
        if let Some(down) = last(ids, true) {
            for dep in view.nearest(addr, &by_addr, &|a| view.state_deps(a), &|ids| first(ids, true)) {
                edges.push((dep, down));
            }
        }
    }
    for c in &plan.changes {
        let Some(ids) = by_addr.get(&c.addr) else { continue };
        for reason in &c.reasons {
            let ChangeReason::Cascade { guest } = reason else { continue };
            let Some(outer) = by_addr.get(guest) else { continue };
            if let (Some(inner_down), Some(outer_down)) = (last(ids, true), first(outer, true)) {
                edges.push((outer_down, inner_down));
            }
            if let (Some(inner_up), Some(outer_up)) = (first(ids, false), last(outer, false)) {
                edges.push((inner_up, outer_up));
            }
        }
        if c.action == Action::Delete {
            let delete = ids[0];
            for (other, other_ids) in &by_addr {
                let only_up = other_ids.iter().all(|&i| !g.ops[i].kind.is_down());
                if only_up && view.state_deps(other).contains(&c.addr) {
                    edges.extend(other_ids.iter().map(|&i| (delete, i)));
                }
            }
        }
    }
    // A swept delete waits for the delete that removes it, and nothing outside waits for it to
    // tear down first (the outer guest's delete above all).
    let swept = |i: usize| g.ops[i].swept_by.is_some();
    edges.retain(|&(dependent, dependency)| {
        !(swept(dependency) && !swept(dependent) && g.ops[dependent].kind.is_down())
    });
    for (i, op) in g.ops.iter().enumerate() {
        let Some(outer) = &op.swept_by else { continue };
        let outer_delete =
            by_addr.get(outer).and_then(|ids| ids.iter().find(|&&o| g.ops[o].kind == OpKind::Delete));
        if let Some(&outer_delete) = outer_delete {
            edges.push((i, outer_delete));
        }
    }
    for (dependent, dependency) in edges {
        g.wait(dependent, dependency);
    }
    g
}

/// Whether a guest should be running after its change (true for everything else).
fn wants_running(spec: Option<&ResourceSpec>) -> bool {
    !matches!(spec, Some(ResourceSpec::NestedGuest(g)) if !g.running)
}

/// The plan and state seen together: each resource's dependencies and host, from either.
pub(crate) struct View<'a> {
    plan: &'a Plan,
    state: &'a State,
    changes: Cow<'a, ChangeIndex>,
}

/// Where each address's change is in `plan.changes`.
pub(crate) type ChangeIndex = BTreeMap<ResourceAddr, usize>;

/// The index of a plan's changes, built once per apply rather than once per operation.
pub(crate) fn index(plan: &Plan) -> ChangeIndex {
    plan.changes.iter().enumerate().map(|(i, c)| (c.addr.clone(), i)).collect()
}

/// Where a `kvm_host` is: a URI (level 0), or a guest it promotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostKind {
    Uri(String),
    Promoted(ResourceAddr),
}

impl<'a> View<'a> {
    pub fn new(plan: &'a Plan, state: &'a State) -> Self {
        View { plan, state, changes: Cow::Owned(index(plan)) }
    }

    /// A view over an index built already.
    pub fn with_index(plan: &'a Plan, state: &'a State, changes: &'a ChangeIndex) -> Self {
        View { plan, state, changes: Cow::Borrowed(changes) }
    }

    /// What `addr` depends on in configuration (falling back to state when the plan has no
    /// configuration for it).
    pub fn config_deps(&self, addr: &ResourceAddr) -> BTreeSet<ResourceAddr> {
        let Some(c) = self.changes.get(addr).map(|&i| &self.plan.changes[i]) else {
            return self.state_deps(addr);
        };
        let Some(spec) = &c.spec else { return self.state_deps(addr) };
        let mut deps = c.depends_on.clone();
        deps.extend(c.host.clone());
        deps.extend(spec.host().cloned());
        match spec {
            ResourceSpec::KvmHost(h) => deps.extend(h.guest.clone()),
            ResourceSpec::NestedGuest(g) => deps.extend(g.networks.iter().map(|n| n.nat_network.clone())),
            ResourceSpec::Benchmark(b) => deps.extend(b.targets.iter().cloned()),
            ResourceSpec::NatNetwork(_) => {}
        }
        deps.remove(addr);
        deps
    }

    /// What `addr` depended on when it was created (falling back to the plan for a resource that is
    /// not in state).
    pub fn state_deps(&self, addr: &ResourceAddr) -> BTreeSet<ResourceAddr> {
        let mut deps = BTreeSet::new();
        match self.state.resources.get(addr) {
            Some(r) => {
                deps.extend(r.dependencies.iter().cloned());
                deps.extend(r.host.clone());
                if addr.ty == ResourceType::KvmHost {
                    deps.extend(recorded_host(&r.attributes, r.id.as_deref()).1);
                }
            }
            None => {
                if let Some(c) = self.changes.get(addr).map(|&i| &self.plan.changes[i]) {
                    deps.extend(c.depends_on.iter().cloned());
                    deps.extend(c.host.clone());
                }
            }
        }
        deps.remove(addr);
        deps
    }

    /// The operations to wait for: for each dependency of `addr` (by `deps`) that has operations, the
    /// one `pick` chooses; dependencies without operations are looked through.
    fn nearest(
        &self,
        addr: &ResourceAddr,
        by_addr: &BTreeMap<&ResourceAddr, Vec<usize>>,
        deps: &dyn Fn(&ResourceAddr) -> BTreeSet<ResourceAddr>,
        pick: &dyn Fn(&[usize]) -> Option<usize>,
    ) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        let mut seen = BTreeSet::from([addr.clone()]);
        let mut todo: Vec<ResourceAddr> = deps(addr).into_iter().collect();
        while let Some(d) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            match by_addr.get(&d).and_then(|ids| pick(ids)) {
                Some(op) => {
                    found.insert(op);
                }
                // No operation of the wanted direction: look through it (its other operations are
                // ordered by their own edges).
                None => todo.extend(deps(&d)),
            }
        }
        found
    }

    /// The `kvm_host` a resource lives on after the plan (`after = true`) or as recorded.
    pub fn host_of(&self, addr: &ResourceAddr, after: bool) -> Option<ResourceAddr> {
        let change = self.changes.get(addr).map(|&i| &self.plan.changes[i]);
        let planned = change.and_then(|c| c.host.clone().or_else(|| c.spec.as_ref()?.host().cloned()));
        let recorded = self.state.resources.get(addr).and_then(|r| r.host.clone());
        if after {
            planned.or(recorded)
        } else {
            recorded.or(planned)
        }
    }

    /// The guests `addr` runs inside as recorded, innermost first: the guest its host promotes (for a
    /// promoted `kvm_host`, the guest it promotes), then the guest that guest's host promotes, and so
    /// on down to level 0.
    pub fn enclosing_guests(&self, addr: &ResourceAddr) -> Vec<ResourceAddr> {
        let mut guests = Vec::new();
        let mut at = addr.clone();
        // Bounded: a promoted guest recorded as running inside itself must not loop.
        for _ in 0..32 {
            let host = match at.ty {
                ResourceType::KvmHost => at.clone(),
                _ => match self.host_of(&at, false) {
                    Some(h) => h,
                    None => break,
                },
            };
            match self.host_kind(&host, false) {
                Some(HostKind::Promoted(g)) if !guests.contains(&g) => {
                    guests.push(g.clone());
                    at = g;
                }
                _ => break,
            }
        }
        guests
    }

    /// The outermost guest that `addr` runs inside and that the plan deletes (or replaces): deleting
    /// it removes `addr` too.
    pub fn swept_by(&self, addr: &ResourceAddr) -> Option<ResourceAddr> {
        let deleted = |g: &ResourceAddr| {
            self.changes
                .get(g)
                .is_some_and(|&i| matches!(self.plan.changes[i].action, Action::Delete | Action::Replace))
        };
        let recorded = self.enclosing_guests(addr).into_iter().rev().find(deleted);
        // A cascade names the guest even where state recorded no host to follow.
        recorded.or_else(|| {
            let c = &self.plan.changes[*self.changes.get(addr)?];
            c.reasons.iter().find_map(|r| match r {
                ChangeReason::Cascade { guest } if deleted(guest) => Some(guest.clone()),
                _ => None,
            })
        })
    }

    /// Whether guest `addr` runs nestform's agent (a `lab` install), as planned or as recorded.
    pub fn runs_agent(&self, addr: &ResourceAddr) -> bool {
        let planned = self.changes.get(addr).and_then(|&i| match &self.plan.changes[i].spec {
            Some(ResourceSpec::NestedGuest(g)) => Some(g.is_lab()),
            _ => None,
        });
        planned.unwrap_or_else(|| {
            self.state.resources.get(addr).is_some_and(|r| nestform_types::is_lab_attributes(&r.attributes))
        })
    }

    /// Where the `kvm_host` at `addr` is, after the plan or as recorded.
    pub fn host_kind(&self, addr: &ResourceAddr, after: bool) -> Option<HostKind> {
        let planned = self.changes.get(addr).and_then(|&i| match &self.plan.changes[i].spec {
            Some(ResourceSpec::KvmHost(h)) => match (&h.uri, &h.guest) {
                (_, Some(g)) => Some(HostKind::Promoted(g.clone())),
                (Some(u), None) => Some(HostKind::Uri(u.clone())),
                (None, None) => None,
            },
            _ => None,
        });
        let recorded = self.state.resources.get(addr).and_then(|r| {
            match recorded_host(&r.attributes, r.id.as_deref()) {
                (_, Some(g)) => Some(HostKind::Promoted(g)),
                (Some(u), None) => Some(HostKind::Uri(u)),
                (None, None) => None,
            }
        });
        if after {
            planned.or(recorded)
        } else {
            recorded.or(planned)
        }
    }

    /// The libvirt name of a `nat_network`, from the plan or from state.
    pub fn network_name(&self, addr: &ResourceAddr) -> Option<String> {
        let planned = self.changes.get(addr).and_then(|&i| match &self.plan.changes[i].spec {
            Some(ResourceSpec::NatNetwork(n)) => Some(n.name.clone()),
            _ => None,
        });
        planned.or_else(|| {
            let r = self.state.resources.get(addr)?;
            r.attributes.get("name")?.as_str().map(str::to_string)
        })
    }
}

/// Why a benchmark cannot run on `target`, if it cannot: a guest without nestform's agent, or a
/// level-0 host that is not this machine (a benchmark runs there through nothing but the controller
/// itself).
fn unmeasurable(view: &View<'_>, target: &ResourceAddr) -> Option<String> {
    let guest = match (target.ty, view.host_kind(target, true)) {
        (ResourceType::KvmHost, Some(HostKind::Uri(uri))) => {
            return (!is_local(&uri)).then(|| {
                format!(
                    "it is reached by `{uri}`, another machine, where nestform has no agent; measure a guest \
                     there instead, or run nestform on that machine"
                )
            })
        }
        (ResourceType::KvmHost, Some(HostKind::Promoted(g))) => g,
        (ResourceType::KvmHost, None) => return Some("the host has neither `uri` nor `guest`".into()),
        _ => target.clone(),
    };
    (!view.runs_agent(&guest))
        .then(|| format!("`{guest}` has no nestform agent to measure in; give it a `lab {{}}` install"))
}

/// Whether a libvirt URI names this machine: no host part (`qemu:///system`), or `localhost`.
fn is_local(uri: &str) -> bool {
    let Some((_, rest)) = uri.split_once("://") else { return true };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    let host = host.split(':').next().unwrap_or_default();
    host.is_empty() || host == "localhost" || host == "127.0.0.1" || host == "[::1]"
}

/// Every reason the plan cannot be applied by this version, before anything runs.
fn validate(plan: &Plan, view: &View<'_>, runners: &dyn nestform_provider::Benchmarks) -> Refusals {
    let mut refusals = Vec::new();
    for c in &plan.changes {
        let active = c.action != Action::NoOp || c.restart;
        if !active {
            continue;
        }
        let mut refuse = |why: String| refusals.push((c.addr.clone(), why));
        let builds = matches!(c.action, Action::Create | Action::Update | Action::Replace);
        if builds && c.spec.is_none() {
            refuse("the plan has no configuration for it".to_string());
            continue;
        }
        if let (Some(ResourceSpec::Benchmark(b)), true) = (&c.spec, builds) {
            if let Err(e) = runners.check(b) {
                refuse(nestform_provider::error_chain(&*e));
            }
            for target in &b.targets {
                if let Some(why) = unmeasurable(view, target) {
                    refuse(format!("its target `{target}` cannot be measured: {why}"));
                }
            }
            continue;
        }
        if c.addr.ty == ResourceType::Benchmark {
            continue;
        }
        if c.addr.ty == ResourceType::KvmHost {
            // Deleting a host only forgets it (what ran on it has its own deletes), so it needs no
            // way in; a promoted host whose guest is gone must still go.
            if c.action == Action::Delete {
                continue;
            }
            let promoted = [true, false].iter().find_map(|&after| match view.host_kind(&c.addr, after) {
                Some(HostKind::Promoted(g)) => Some(g),
                _ => None,
            });
            match (promoted, view.host_kind(&c.addr, builds)) {
                // nestform reaches into a promoted guest through its agent, which lab guests run.
                (Some(g), _) if !view.runs_agent(&g) => refuse(format!(
                    "it promotes the guest `{g}`, which has no nestform agent to reach its libvirt through; give \
                     `{g}` a `lab {{}}` install"
                )),
                (Some(_), _) => {}
                (None, None) => refuse("the host has neither `uri` nor `guest`".to_string()),
                (None, Some(_)) => {}
            }
            continue;
        }
        // A guest's update, stop and start find it by its id; a delete without one only forgets it.
        let needs_id = c.addr.ty == ResourceType::NestedGuest && (c.action == Action::Update || c.restart);
        if needs_id && c.id.is_none() {
            refuse("the plan has no provider id for it, so it cannot be changed on its host".to_string());
            continue;
        }
        // The hosts the operations run on: the recorded one for stop/delete, the planned one for the rest.
        let mut on = Vec::new();
        if matches!(c.action, Action::Delete | Action::Replace) || c.restart {
            on.push((view.host_of(&c.addr, false), false));
        }
        if builds {
            on.push((view.host_of(&c.addr, true), true));
        }
        for (host, after) in on {
            let Some(host) = host else {
                refuse("the plan does not say which `kvm_host` it lives on".to_string());
                break;
            };
            match view.host_kind(&host, after).or_else(|| view.host_kind(&host, !after)) {
                Some(HostKind::Uri(_)) | Some(HostKind::Promoted(_)) => {}
                None => {
                    refuse(format!("its host `{host}` is neither in the plan nor in state"));
                    break;
                }
            }
        }
    }
    refusals
}

#[cfg(test)]
mod tests {
    use nestform_state::ResourceState;

    use super::*;
    use crate::apply::tests::{addr, change, guest, host_promoted, host_uri, network, plan_of};

    /// Whether op `a` waits for op `b`, directly or not.
    fn waits(g: &OpGraph, a: usize, b: usize) -> bool {
        let mut todo = vec![a];
        let mut seen = BTreeSet::new();
        while let Some(x) = todo.pop() {
            if x == b && x != a {
                return true;
            }
            if seen.insert(x) {
                todo.extend(g.deps[x].iter().copied());
            }
        }
        false
    }

    fn find(g: &OpGraph, a: &str, kind: OpKind) -> usize {
        g.ops
            .iter()
            .position(|o| o.addr == addr(a) && o.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} {a}"))
    }

    /// Two levels: `l0` runs `outer` (on `lan`), which `l1` promotes; `inner` runs on `l1`.
    fn nested_state() -> State {
        let mut state = State::new();
        let mut put = |a: &str, host: Option<&str>, level, attrs: serde_json::Value, deps: &[&str]| {
            state.resources.insert(
                addr(a),
                ResourceState {
                    id: Some(format!("id-{a}")),
                    host: host.map(addr),
                    level,
                    attributes: attrs,
                    dependencies: deps.iter().map(|d| addr(d)).collect(),
                    tainted: false,
                },
            );
        };
        put("kvm_host.l0", None, 0, serde_json::json!({ "uri": "fake://l0" }), &[]);
        put(
            "nat_network.lan",
            Some("kvm_host.l0"),
            1,
            serde_json::json!({ "name": "lan" }),
            &["kvm_host.l0"],
        );
        put(
            "nested_guest.outer",
            Some("kvm_host.l0"),
            1,
            serde_json::json!({}),
            &["kvm_host.l0", "nat_network.lan"],
        );
        put(
            "kvm_host.l1",
            None,
            1,
            serde_json::json!({ "guest": "nested_guest.outer" }),
            &["nested_guest.outer"],
        );
        put("nested_guest.inner", Some("kvm_host.l1"), 2, serde_json::json!({}), &["kvm_host.l1"]);
        state
    }

    fn nested_changes(action: Action) -> Vec<crate::plan::ResourceChange> {
        let with = |a: &str, spec, level| {
            let mut c = change(a, action, Some(spec), level);
            c.id = Some(format!("id-{a}"));
            c
        };
        vec![
            with("kvm_host.l0", host_uri("fake://l0"), 0),
            with("nat_network.lan", network("lan", "kvm_host.l0"), 1),
            with("nested_guest.outer", guest("outer", "kvm_host.l0", &["nat_network.lan"]), 1),
            with("kvm_host.l1", host_promoted("nested_guest.outer"), 1),
            with("nested_guest.inner", guest("inner", "kvm_host.l1", &[]), 2),
        ]
    }

    #[test]
    fn destroy_deletes_the_outermost_guest_and_sweeps_what_ran_inside_from_state_alone() {
        let mut changes = nested_changes(Action::Delete);
        for c in &mut changes {
            c.spec = None;
            c.depends_on.clear();
        }
        let g = graph_of(&plan_of("l", changes), &nested_state());
        let del = |a| find(&g, a, OpKind::Delete);
        let swept = |a| g.ops[del(a)].swept_by.clone();
        // The outer guest is deleted on its level-0 host, without waiting for anything inside it.
        assert_eq!(swept("nested_guest.outer"), None);
        assert!(!waits(&g, del("nested_guest.outer"), del("nested_guest.inner")));
        assert!(!waits(&g, del("nested_guest.outer"), del("kvm_host.l1")));
        // What ran inside goes with it: its records go after the outer delete.
        for inner in ["nested_guest.inner", "kvm_host.l1"] {
            assert_eq!(swept(inner), Some(addr("nested_guest.outer")), "{inner}");
            assert!(waits(&g, del(inner), del("nested_guest.outer")), "{inner}");
        }
        // Level 0 still tears down top-down.
        assert!(waits(&g, del("nat_network.lan"), del("nested_guest.outer")));
        assert!(waits(&g, del("kvm_host.l0"), del("nat_network.lan")));
        assert_eq!(swept("nat_network.lan"), None);
        assert_eq!(swept("kvm_host.l0"), None);
    }

    #[test]
    fn deleting_only_an_inner_guest_asks_its_own_host() {
        let mut changes = nested_changes(Action::NoOp);
        changes[4].action = Action::Delete;
        changes[4].spec = None;
        let g = graph_of(&plan_of("l", changes), &nested_state());
        let op = &g.ops[find(&g, "nested_guest.inner", OpKind::Delete)];
        assert_eq!(op.swept_by, None);
        assert_eq!(g.ops.len(), 1);
    }

    #[test]
    fn create_builds_bottom_up() {
        let g = graph_of(&plan_of("l", nested_changes(Action::Create)), &State::new());
        let create = |a| find(&g, a, OpKind::Create);
        assert!(waits(&g, create("nested_guest.inner"), create("kvm_host.l1")));
        assert!(waits(&g, create("kvm_host.l1"), create("nested_guest.outer")));
        assert!(waits(&g, create("nested_guest.outer"), create("nat_network.lan")));
        assert!(waits(&g, create("nat_network.lan"), create("kvm_host.l0")));
    }

    #[test]
    fn cascaded_restart_stops_inner_first_and_starts_it_last() {
        let mut changes = nested_changes(Action::NoOp);
        changes[2].action = Action::Update;
        changes[2].restart = true;
        changes[4].restart = true;
        changes[4].reasons.push(ChangeReason::Cascade { guest: addr("nested_guest.outer") });
        let g = graph_of(&plan_of("l", changes), &nested_state());
        let outer = |k| find(&g, "nested_guest.outer", k);
        let inner = |k| find(&g, "nested_guest.inner", k);
        assert!(waits(&g, outer(OpKind::Stop), inner(OpKind::Stop)));
        assert!(waits(&g, outer(OpKind::Update), outer(OpKind::Stop)));
        assert!(waits(&g, outer(OpKind::Start), outer(OpKind::Update)));
        assert!(waits(&g, inner(OpKind::Start), outer(OpKind::Start)));
        assert_eq!(g.ops.len(), 5);
    }

    #[test]
    fn cascade_edges_hold_without_recorded_dependencies() {
        let mut changes = nested_changes(Action::NoOp);
        changes[2].action = Action::Replace;
        changes[4].action = Action::Replace;
        changes[4].reasons.push(ChangeReason::Cascade { guest: addr("nested_guest.outer") });
        let mut state = nested_state();
        for r in state.resources.values_mut() {
            r.dependencies.clear();
            r.host = None;
        }
        changes[4].host = None;
        changes[4].depends_on.clear();
        if let Some(ResourceSpec::NestedGuest(g)) = &mut changes[4].spec {
            g.host = addr("kvm_host.elsewhere");
        }
        let g = graph_of(&plan_of("l", changes), &state);
        let outer = |k| find(&g, "nested_guest.outer", k);
        let inner = |k| find(&g, "nested_guest.inner", k);
        // The replaced outer guest takes the inner one along, which the cascade names.
        assert_eq!(g.ops[inner(OpKind::Delete)].swept_by, Some(addr("nested_guest.outer")));
        assert!(waits(&g, inner(OpKind::Delete), outer(OpKind::Delete)));
        assert!(!waits(&g, outer(OpKind::Delete), inner(OpKind::Delete)));
        assert!(waits(&g, inner(OpKind::Create), outer(OpKind::Create)));
        assert!(waits(&g, inner(OpKind::Create), inner(OpKind::Delete)));
        assert!(waits(&g, outer(OpKind::Create), outer(OpKind::Delete)));
    }

    #[test]
    fn network_removed_after_guest_moves_off_it() {
        let mut state = nested_state();
        state.resources.remove(&addr("kvm_host.l1"));
        state.resources.remove(&addr("nested_guest.inner"));
        let mut changes = nested_changes(Action::NoOp);
        changes.truncate(3);
        changes[1].action = Action::Delete;
        changes[1].spec = None;
        changes[2].action = Action::Update;
        if let Some(ResourceSpec::NestedGuest(g)) = &mut changes[2].spec {
            g.networks.clear();
        }
        changes[2].depends_on.remove(&addr("nat_network.lan"));
        let g = graph_of(&plan_of("l", changes), &state);
        assert!(waits(
            &g,
            find(&g, "nat_network.lan", OpKind::Delete),
            find(&g, "nested_guest.outer", OpKind::Update)
        ));
    }
}
