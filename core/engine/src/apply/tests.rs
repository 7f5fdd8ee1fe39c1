//! The executor's tests against the memory provider: what runs, in which order, what state is left
//! and saved. They live in their own file because they exercise `ops`, `exec` and the walk together; the
//! helpers at the top build plans by hand (the planner is tested on its own).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nestform_provider_memory::MemoryProvider;
use nestform_state::State;
use nestform_types::{
    ByteSize, InterfaceSpec, KvmHostSpec, NatNetworkSpec, NestedGuestSpec, ResourceAddr, ResourceSpec,
};
use tokio::sync::{mpsc, watch};

use super::*;
use crate::plan::{Action, Plan, ResourceChange, PLAN_FORMAT_VERSION};

pub(crate) fn addr(s: &str) -> ResourceAddr {
    s.parse().unwrap()
}

pub(crate) fn host_uri(uri: &str) -> ResourceSpec {
    ResourceSpec::KvmHost(KvmHostSpec {
        uri: Some(uri.into()),
        guest: None,
        nested: true,
        kvm_module_options: BTreeMap::new(),
    })
}

pub(crate) fn host_promoted(guest: &str) -> ResourceSpec {
    ResourceSpec::KvmHost(KvmHostSpec {
        uri: None,
        guest: Some(addr(guest)),
        nested: true,
        kvm_module_options: BTreeMap::new(),
    })
}

pub(crate) fn network(name: &str, host: &str) -> ResourceSpec {
    ResourceSpec::NatNetwork(NatNetworkSpec {
        host: addr(host),
        name: name.into(),
        cidr: "192.168.100.0/24".parse().unwrap(),
        dhcp: None,
        domain: None,
    })
}

pub(crate) fn guest(name: &str, host: &str, nets: &[&str]) -> ResourceSpec {
    ResourceSpec::NestedGuest(NestedGuestSpec {
        host: addr(host),
        name: name.into(),
        vcpus: 1,
        memory: ByteSize::mib(512),
        cpu: "host-passthrough".into(),
        disks: vec![],
        networks: nets
            .iter()
            .map(|n| InterfaceSpec { name: "eth".into(), nat_network: addr(n), mac: None })
            .collect(),
        running: true,
        install: None,
    })
}

/// A change of `action` to the resource `a` configured as `spec` (for create, update, replace), with
/// its dependencies taken from the spec.
pub(crate) fn change(a: &str, action: Action, spec: Option<ResourceSpec>, level: u32) -> ResourceChange {
    let mut depends_on = BTreeSet::new();
    let mut host = None;
    match &spec {
        Some(ResourceSpec::NestedGuest(g)) => {
            host = Some(g.host.clone());
            depends_on.extend(g.networks.iter().map(|n| n.nat_network.clone()));
        }
        Some(ResourceSpec::NatNetwork(n)) => host = Some(n.host.clone()),
        Some(ResourceSpec::KvmHost(h)) => depends_on.extend(h.guest.clone()),
        _ => {}
    }
    depends_on.extend(host.clone());
    ResourceChange {
        addr: addr(a),
        host,
        level,
        action,
        restart: false,
        before: None,
        after: spec.as_ref().map(|s| serde_json::to_value(s).unwrap()),
        after_unknown: BTreeSet::new(),
        spec,
        id: None,
        attribute_changes: vec![],
        reasons: vec![],
        depends_on,
        definition_before: None,
        definition_after: None,
    }
}

pub(crate) fn plan_of(lineage: &str, changes: Vec<ResourceChange>) -> Plan {
    Plan {
        format_version: PLAN_FORMAT_VERSION,
        lineage: lineage.into(),
        state_serial: 0,
        destroy: false,
        sources: vec![],
        variables: BTreeMap::new(),
        targets: vec![],
        replace: vec![],
        changes,
        output_changes: BTreeMap::new(),
        hosts: BTreeMap::new(),
    }
}

/// Turns a plan's changes into the changes of the next plan over `state`: ids from state, the action
/// given per address, everything else a no-op.
fn next_plan(state: &State, base: &Plan, actions: &[(&str, Action, bool)]) -> Plan {
    let mut changes = base.changes.clone();
    for c in &mut changes {
        c.action = Action::NoOp;
        c.id = state.resources.get(&c.addr).and_then(|r| r.id.clone());
        if let Some((_, action, restart)) = actions.iter().find(|(a, _, _)| addr(a) == c.addr) {
            c.action = *action;
            c.restart = *restart;
        }
    }
    plan_of(&state.lineage, changes)
}

/// Keeps every state it is asked to persist.
#[derive(Default)]
/// Mirrors the state it was made with and keeps a snapshot of it after every persist, with the
/// addresses each persist changed.
struct Snapshots {
    /// How long each persist takes, as a slow disk would.
    delay: Duration,
    mirror: Mutex<State>,
    saved: Mutex<Vec<State>>,
    changed: Mutex<Vec<BTreeSet<ResourceAddr>>>,
}

impl Snapshots {
    fn new(state: &State) -> Self {
        Snapshots {
            delay: Duration::ZERO,
            mirror: Mutex::new(state.clone()),
            saved: Mutex::default(),
            changed: Mutex::default(),
        }
    }
}

impl StateSink for Snapshots {
    fn persist(&self, changes: &[StateChange]) -> Result<(), String> {
        std::thread::sleep(self.delay);
        let mut mirror = self.mirror.lock().unwrap();
        for (addr, r) in changes {
            match r {
                Some(r) => mirror.resources.insert(addr.clone(), r.clone()),
                None => mirror.resources.remove(addr),
            };
        }
        self.saved.lock().unwrap().push(mirror.clone());
        self.changed.lock().unwrap().push(changes.iter().map(|(a, _)| a.clone()).collect());
        Ok(())
    }
}

struct Run {
    outcome: ApplyOutcome,
    events: Vec<ApplyEvent>,
    saved: Vec<State>,
}

async fn run_with(
    plan: &Plan,
    state: State,
    hosts: &Hosts,
    parallelism: usize,
    cancel: watch::Receiver<bool>,
) -> Run {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut opts = test_options(cancel, tx);
    opts.parallelism = parallelism;
    let sink = Arc::new(Snapshots::new(&state));
    let outcome = apply(plan, state, hosts, opts, sink.clone()).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    let saved = sink.saved.lock().unwrap().clone();
    // The mirror the sink kept from the changes alone is the state apply ended with.
    assert_eq!(sink.mirror.lock().unwrap().resources, outcome.state.resources);
    Run { outcome, events, saved }
}

async fn run(plan: &Plan, state: State, hosts: &Hosts) -> Run {
    let (_tx, cancel) = watch::channel(false);
    run_with(plan, state, hosts, 10, cancel).await
}

/// The URI of `basic()`'s host.
const L0_URI: &str = "memory://l0";
/// That host's name in the memory provider (the `NAME` of `memory://NAME`).
const L0: &str = "l0";

/// Host `l0`, network `lan`, guests `g1` (on lan) and `g2` (no network).
fn basic() -> Plan {
    plan_of(
        "lineage-1",
        vec![
            change("kvm_host.l0", Action::Create, Some(host_uri(L0_URI)), 0),
            change("nat_network.lan", Action::Create, Some(network("lan", "kvm_host.l0")), 1),
            change(
                "nested_guest.g1",
                Action::Create,
                Some(guest("g1", "kvm_host.l0", &["nat_network.lan"])),
                1,
            ),
            change("nested_guest.g2", Action::Create, Some(guest("g2", "kvm_host.l0", &[])), 1),
        ],
    )
}

async fn created() -> (MemoryProvider, Hosts, Plan, State) {
    // Sized as a small machine (8 CPUs, 16 GiB) rather than the memory provider's default, so the
    // recorded facts below are this host's own.
    let provider = MemoryProvider::new().with_host(L0, 8, 16 << 30);
    let hosts = Hosts::new(provider.backends());
    let plan = basic();
    let mut state = State::new();
    state.lineage = "lineage-1".into();
    let r = run(&plan, state, &hosts).await;
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);
    (provider, hosts, plan, r.outcome.state)
}

fn position(calls: &[String], call: &str) -> usize {
    calls.iter().position(|c| c == call).unwrap_or_else(|| panic!("no `{call}` in {calls:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_from_empty() {
    let (provider, _, _, state) = created().await;
    let calls = provider.call_log();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(position(&calls, "create_network lan") < position(&calls, "create_guest g1"));
    assert_eq!(state.resources.len(), 4);
    let g1 = &state.resources[&addr("nested_guest.g1")];
    assert_eq!(g1.id.as_deref(), Some(provider.guest(L0, "g1").unwrap().id.as_str()));
    assert_eq!(g1.attributes["id"], g1.id.clone().unwrap());
    assert_eq!(g1.attributes["memory"], "512MiB");
    assert_eq!(g1.host, Some(addr("kvm_host.l0")));
    assert!(g1.dependencies.contains(&addr("nat_network.lan")));
    assert_eq!(provider.guest(L0, "g1").unwrap().owner.unwrap().lineage, "lineage-1");
    assert_eq!(provider.guest(L0, "g1").unwrap().interfaces, vec!["lan".to_string()]);
    let lan = &state.resources[&addr("nat_network.lan")];
    // The bridge the host reported: the memory provider names a host's first network's `virbr1`.
    assert_eq!(lan.attributes["bridge"], "virbr1");
    assert_eq!(provider.network(L0, "lan").unwrap().bridge.as_deref(), Some("virbr1"));
    let l0 = &state.resources[&addr("kvm_host.l0")];
    assert_eq!(l0.id.as_deref(), Some(L0_URI));
    assert_eq!(l0.attributes["facts"]["cpus"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_live_without_restart() {
    let (provider, hosts, base, state) = created().await;
    let mut plan = next_plan(&state, &base, &[("nested_guest.g2", Action::Update, false)]);
    if let Some(ResourceSpec::NestedGuest(g)) = &mut plan.changes[3].spec {
        g.vcpus = 4;
    }
    plan.changes[3].after = plan.changes[3].spec.as_ref().map(|s| serde_json::to_value(s).unwrap());
    let before = provider.call_log().len();
    let r = run(&plan, state, &hosts).await;
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);
    assert_eq!(provider.call_log()[before..], ["update_guest g2".to_string()]);
    assert_eq!(r.outcome.state.resources[&addr("nested_guest.g2")].attributes["vcpus"], 4);
    assert_eq!(provider.guest(L0, "g2").unwrap().vcpus, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_with_restart_in_order() {
    let (provider, hosts, base, state) = created().await;
    let plan = next_plan(&state, &base, &[("nested_guest.g1", Action::Update, true)]);
    let before = provider.call_log().len();
    let r = run(&plan, state, &hosts).await;
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);
    assert_eq!(provider.call_log()[before..], ["stop_guest g1", "update_guest g1", "start_guest g1"]);
    let kinds: Vec<_> = r.events.iter().filter(|e| e.phase == Phase::Started).map(|e| e.op).collect();
    assert_eq!(kinds, [OpKind::Stop, OpKind::Update, OpKind::Start]);
    assert!(provider.guest(L0, "g1").unwrap().running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaces_by_deleting_then_creating() {
    let (provider, hosts, base, state) = created().await;
    let old_id = state.resources[&addr("nested_guest.g1")].id.clone().unwrap();
    let plan = next_plan(&state, &base, &[("nested_guest.g1", Action::Replace, false)]);
    let before = provider.call_log().len();
    let r = run(&plan, state, &hosts).await;
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);
    assert_eq!(provider.call_log()[before..], ["delete_guest g1", "create_guest g1"]);
    let new_id = r.outcome.state.resources[&addr("nested_guest.g1")].id.clone().unwrap();
    assert_ne!(new_id, old_id);
    // The delete was saved before the create: an apply killed in between leaves no stale id.
    assert!(r.saved.iter().any(|s| !s.resources.contains_key(&addr("nested_guest.g1"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroys_dependents_first() {
    let (provider, hosts, base, state) = created().await;
    let all = ["kvm_host.l0", "nat_network.lan", "nested_guest.g1", "nested_guest.g2"];
    let actions: Vec<_> = all.iter().map(|a| (*a, Action::Delete, false)).collect();
    let mut plan = next_plan(&state, &base, &actions);
    // A destroy plan carries no configuration: order must come from state alone.
    for c in &mut plan.changes {
        c.spec = None;
        c.after = None;
        c.depends_on = state.resources[&c.addr].dependencies.clone();
    }
    plan.changes.reverse();
    let before = provider.call_log().len();
    let r = run(&plan, state, &hosts).await;
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);
    let calls = &provider.call_log()[before..];
    assert!(position(calls, "delete_guest g1") < position(calls, "delete_network lan"), "{calls:?}");
    assert!(r.outcome.state.resources.is_empty());
    assert!(provider.guest(L0, "g1").is_none() && provider.network(L0, "lan").is_none());
    let host_deleted =
        r.events.iter().position(|e| e.addr == addr("kvm_host.l0") && e.phase == Phase::Started);
    let net_done =
        r.events.iter().position(|e| e.addr == addr("nat_network.lan") && e.phase != Phase::Started);
    assert!(net_done < host_deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_skips_only_its_dependents() {
    let provider = MemoryProvider::new();
    provider.fail_on("create_network", "lan");
    let hosts = Hosts::new(provider.backends());
    let r = run(&basic(), State::new(), &hosts).await;
    assert_eq!(r.outcome.errors.len(), 1, "{:?}", r.outcome.errors);
    assert_eq!(r.outcome.errors[0].0, addr("nat_network.lan"));
    assert!(r.outcome.errors[0].1.contains("injected failure"));
    let kept: Vec<_> = r.outcome.state.resources.keys().map(|a| a.to_string()).collect();
    assert_eq!(kept, ["kvm_host.l0", "nested_guest.g2"]);
    assert!(!provider.call_log().contains(&"create_guest g1".to_string()));
    assert!(r.events.contains(&ApplyEvent {
        addr: addr("nested_guest.g1"),
        op: OpKind::Create,
        phase: Phase::Skipped
    }));
    assert_eq!(r.saved.last().unwrap(), &r.outcome.state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_lets_running_finish_and_saves_state() {
    let provider = MemoryProvider::new();
    let hosts = Hosts::new(provider.backends());
    let (tx, cancel) = watch::channel(false);
    let tx = Arc::new(tx);
    let hook_tx = tx.clone();
    provider.on_call(move |op, name| {
        if op == "create_guest" && name == "g2" {
            hook_tx.send_replace(true);
        }
    });
    let mut changes = vec![change("kvm_host.l0", Action::Create, Some(host_uri(L0_URI)), 0)];
    for i in 0..6 {
        let name = format!("g{i}");
        changes.push(change(
            &format!("nested_guest.{name}"),
            Action::Create,
            Some(guest(&name, "kvm_host.l0", &[])),
            1,
        ));
    }
    let r = run_with(&plan_of("l", changes), State::new(), &hosts, 1, cancel).await;
    assert!(r.outcome.cancelled);
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);
    let kept: Vec<_> = r.outcome.state.resources.keys().map(|a| a.to_string()).collect();
    assert_eq!(kept, ["kvm_host.l0", "nested_guest.g0", "nested_guest.g1", "nested_guest.g2"]);
    assert_eq!(provider.call_log().len(), 3);
    assert_eq!(r.saved.last().unwrap(), &r.outcome.state);
    let skipped = r.events.iter().filter(|e| e.phase == Phase::Skipped).count();
    assert_eq!(skipped, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallelism_is_bounded() {
    let provider = MemoryProvider::new();
    provider.set_delay(Duration::from_millis(50));
    let hosts = Hosts::new(provider.backends());
    let mut changes = vec![change("kvm_host.l0", Action::Create, Some(host_uri(L0_URI)), 0)];
    for i in 0..12 {
        let name = format!("g{i}");
        changes.push(change(
            &format!("nested_guest.{name}"),
            Action::Create,
            Some(guest(&name, "kvm_host.l0", &[])),
            1,
        ));
    }
    let (_tx, cancel) = watch::channel(false);
    let r = run_with(&plan_of("l", changes), State::new(), &hosts, 3, cancel).await;
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);
    assert_eq!(provider.max_in_flight(), 3);
    assert_eq!(r.outcome.state.resources.len(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persists_each_change_before_anything_built_on_it_starts() {
    let provider = MemoryProvider::new();
    let hosts = Hosts::new(provider.backends());
    // A slow disk: saves take longer than provider calls, so the writer lags behind the operations.
    let sink = Arc::new(Snapshots { delay: Duration::from_millis(30), ..Snapshots::new(&State::new()) });
    let (seen, violations) = (sink.clone(), Arc::new(Mutex::new(Vec::<String>::new())));
    let v = violations.clone();
    provider.on_call(move |op, name| {
        // g1 sits on the network, which sits on the host: both must already be in the saved state when
        // g1 is created, or a crash right after could leave a guest that state does not stand on.
        if (op, name) == ("create_guest", "g1") {
            let saved = seen.saved.lock().unwrap().last().cloned().unwrap_or_default();
            for dep in ["kvm_host.l0", "nat_network.lan"] {
                if !saved.resources.contains_key(&addr(dep)) {
                    v.lock().unwrap().push(format!("`{dep}` was not saved when g1 was created"));
                }
            }
        }
    });
    let (_tx, cancel) = watch::channel(false);
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut opts = test_options(cancel, tx);
    opts.parallelism = 10;
    let outcome = apply(&basic(), State::new(), &hosts, opts, sink.clone()).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert!(violations.lock().unwrap().is_empty(), "{:?}", violations.lock().unwrap());
    // Everything is saved by the time apply returns, and each save names only what changed in it.
    let saved = sink.saved.lock().unwrap();
    assert_eq!(saved.last().unwrap().resources, outcome.state.resources);
    let changed = sink.changed.lock().unwrap();
    assert_eq!(changed.iter().map(BTreeSet::len).sum::<usize>(), 4, "{changed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_promoting_a_guest_without_an_agent_and_benchmarks_up_front() {
    let provider = MemoryProvider::new();
    let hosts = Hosts::new(provider.backends());
    let mut plan = basic();
    plan.changes.push(change("kvm_host.l1", Action::Create, Some(host_promoted("nested_guest.g1")), 1));
    plan.changes.push(change(
        "nested_guest.inner",
        Action::Create,
        Some(guest("inner", "kvm_host.l1", &[])),
        2,
    ));
    let bench = nestform_types::BenchmarkSpec {
        kind: nestform_types::BenchmarkKind::Boot,
        targets: vec![addr("nested_guest.g1")],
        size: None,
        iterations: None,
        repeat: 1,
    };
    plan.changes.push(change("benchmark.boot", Action::Create, Some(ResourceSpec::Benchmark(bench)), 0));
    let state = State::new();
    let r = run(&plan, state.clone(), &hosts).await;
    assert_eq!(r.outcome.state, state);
    assert!(provider.call_log().is_empty() && provider.connects() == 0 && r.saved.is_empty());
    let refused: BTreeMap<_, _> = r.outcome.errors.iter().map(|(a, e)| (a.to_string(), e.clone())).collect();
    // g1 has no `lab` install, so no agent to reach its libvirt through; the guest inside it is fine
    // in itself. Nothing runs when anything is refused.
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused["kvm_host.l1"].contains("no nestform agent"), "{refused:?}");
    assert!(refused["benchmark.boot"].contains("benchmarks"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_host_fails_its_resources_only() {
    let provider = MemoryProvider::new();
    provider.fail_on("connect", "memory://down");
    let hosts = Hosts::new(provider.backends());
    let mut plan = basic();
    plan.changes.push(change("kvm_host.down", Action::Create, Some(host_uri("memory://down")), 0));
    plan.changes.push(change(
        "nested_guest.far",
        Action::Create,
        Some(guest("far", "kvm_host.down", &[])),
        1,
    ));
    let r = run(&plan, State::new(), &hosts).await;
    let failed: Vec<_> = r.outcome.errors.iter().map(|(a, _)| a.to_string()).collect();
    assert_eq!(failed, ["kvm_host.down"]);
    assert_eq!(r.outcome.state.resources.len(), 4);
}

/// Create from empty, then destroy, on a host of its own (`memory://lab`), with the provider's call
/// count and call log as the witness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_and_destroys_on_the_memory_provider() {
    let memory = MemoryProvider::new();
    let hosts = Hosts::new(memory.backends());
    let mut plan = basic();
    plan.changes[0] = change("kvm_host.l0", Action::Create, Some(host_uri("memory://lab")), 0);
    let r = run(&plan, State::new(), &hosts).await;
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);
    let g1 = memory.guest("lab", "g1").expect("g1 exists");
    assert_eq!(r.outcome.state.resources[&addr("nested_guest.g1")].id.as_deref(), Some(g1.id.as_str()));
    assert_eq!(g1.interfaces, ["lan"]);
    assert_eq!(memory.calls(), 3);

    let state = r.outcome.state;
    let actions: Vec<_> = plan.changes.iter().map(|c| (c.addr.to_string(), Action::Delete, false)).collect();
    let actions: Vec<_> = actions.iter().map(|(a, x, y)| (a.as_str(), *x, *y)).collect();
    let destroy = next_plan(&state, &plan, &actions);
    let r = run(&destroy, state, &hosts).await;
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);
    assert!(r.outcome.state.resources.is_empty());
    let log = memory.call_log();
    assert!(position(&log, "delete_guest g1") < position(&log, "delete_network lan"), "{log:?}");
    assert!(memory.guest("lab", "g1").is_none() && memory.network("lab", "lan").is_none());
}

/// `basic()` on a memory host with `g1` a lab guest, whose agent the memory provider serves.
fn lab_plan() -> Plan {
    let mut plan = basic();
    plan.changes[0] = change("kvm_host.l0", Action::Create, Some(host_uri("memory://lab")), 0);
    let mut g1 = guest("g1", "kvm_host.l0", &["nat_network.lan"]);
    if let ResourceSpec::NestedGuest(g) = &mut g1 {
        g.install = Some(nestform_types::InstallSpec::Lab(Default::default()));
    }
    plan.changes[2] = change("nested_guest.g1", Action::Create, Some(g1), 1);
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_guest_is_created_when_its_agent_answers() {
    let memory = MemoryProvider::new();
    let hosts = Hosts::new(memory.backends());
    let r = run(&lab_plan(), State::new(), &hosts).await;
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);
    let g1 = &r.outcome.state.resources[&addr("nested_guest.g1")];
    assert!(!g1.tainted);
    // The agent's facts became the guest's computed attributes.
    assert!(g1.attributes["kernel"].as_str().is_some_and(|k| !k.is_empty()), "{}", g1.attributes);
    assert!(g1.attributes["addresses"].is_array(), "{}", g1.attributes);
    assert!(g1.attributes["boot_seconds"].as_f64().is_some(), "{}", g1.attributes);
    // A guest without an install has no agent to wait for.
    assert!(r.outcome.state.resources[&addr("nested_guest.g2")].attributes.get("kernel").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_guest_whose_agent_never_answers_is_recorded_tainted() {
    let memory = MemoryProvider::new();
    memory.fail_on("open_agent", "g1");
    let hosts = Hosts::new(memory.backends());
    let (tx, _rx) = mpsc::unbounded_channel();
    let (_cancel_tx, cancel) = watch::channel(false);
    let mut opts = test_options(cancel, tx);
    opts.agent_timeout = Duration::from_millis(500);
    let sink = Arc::new(Snapshots::new(&State::new()));
    let outcome = apply(&lab_plan(), State::new(), &hosts, opts, sink).await;
    let errors: Vec<_> = outcome.errors.iter().map(|(a, e)| (a.to_string(), e.clone())).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "nested_guest.g1");
    assert!(errors[0].1.contains("did not answer within"), "{}", errors[0].1);
    assert!(errors[0].1.contains("has no console"), "the console tail is in the error: {}", errors[0].1);
    // The guest exists, so state records it, tainted: the next plan replaces it.
    let g1 = &outcome.state.resources[&addr("nested_guest.g1")];
    assert!(g1.tainted);
    assert_eq!(g1.id.as_deref(), Some(memory.guest("lab", "g1").unwrap().id.as_str()));
    // Independent work finished.
    assert!(outcome.state.resources.contains_key(&addr("nested_guest.g2")));
}

fn host_with_options(uri: &str, options: &[(&str, &str)]) -> ResourceSpec {
    let mut spec = host_uri(uri);
    if let ResourceSpec::KvmHost(h) = &mut spec {
        h.kvm_module_options = options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvm_module_options_are_set_only_when_they_differ_and_never_under_running_guests() {
    let memory = MemoryProvider::new();
    let hosts = Hosts::new(memory.backends());
    // `nested = 1` is what the fake module has already (as `Y`): nothing to do.
    let plan = plan_of(
        "l",
        vec![change(
            "kvm_host.l0",
            Action::Create,
            Some(host_with_options("memory://k", &[("nested", "1")])),
            0,
        )],
    );
    let r = run(&plan, State::new(), &hosts).await;
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);
    assert!(
        !memory.call_log().iter().any(|c| c.starts_with("set_kvm_module_options")),
        "{:?}",
        memory.call_log()
    );

    // `ept = 1` differs: set, and the recorded facts show it.
    let plan = plan_of(
        "l",
        vec![change(
            "kvm_host.l0",
            Action::Create,
            Some(host_with_options("memory://k", &[("ept", "1")])),
            0,
        )],
    );
    let r = run(&plan, State::new(), &hosts).await;
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);
    let facts = &r.outcome.state.resources[&addr("kvm_host.l0")].attributes["facts"];
    assert_eq!(facts["kvm_parameters"]["ept"], "1", "{facts}");

    // With a guest running on the host, reloading KVM is refused and the guest is named.
    let mut plan = basic();
    plan.changes[0] = change("kvm_host.l0", Action::Create, Some(host_uri("memory://k")), 0);
    assert!(run(&plan, State::new(), &hosts).await.outcome.errors.is_empty());
    let plan = plan_of(
        "l",
        vec![change(
            "kvm_host.l0",
            Action::Update,
            Some(host_with_options("memory://k", &[("ept", "0")])),
            0,
        )],
    );
    let r = run(&plan, State::new(), &hosts).await;
    let errors: Vec<_> = r.outcome.errors.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("`g1`") && errors[0].contains("stop them first"), "{}", errors[0]);
}

/// Options for a test apply. Lab guests boot from their disk: the memory provider's backends carry
/// `DiskBoot`, so the engine's tests need no kernel or initramfs.
fn test_options(cancel: watch::Receiver<bool>, events: mpsc::UnboundedSender<ApplyEvent>) -> ApplyOptions {
    ApplyOptions::new(cancel, events)
}
