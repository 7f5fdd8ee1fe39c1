//! The executor's tests against the memory provider: what runs, in which order, what state is left
//! and saved. They live in their own module because they exercise `ops`, `exec` and the walk together;
//! the helpers here build plans by hand (the planner is tested on its own) and run them, and the
//! scenarios are grouped by topic in the submodules.

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

mod actions;
mod benchmarks;
mod failures;
mod lab_guests;
mod module_options;
mod sweep;
mod walk;

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
        timeouts: Default::default(),
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
    /// Persists from this one on (counting from 0) fail, as on a disk that filled up; the mirror
    /// still takes their changes, as the [`StateSink`] contract asks.
    fail_from: usize,
    mirror: Mutex<State>,
    saved: Mutex<Vec<State>>,
    changed: Mutex<Vec<BTreeSet<ResourceAddr>>>,
}

impl Snapshots {
    fn new(state: &State) -> Self {
        Snapshots {
            delay: Duration::ZERO,
            fail_from: usize::MAX,
            mirror: Mutex::new(state.clone()),
            saved: Mutex::default(),
            changed: Mutex::default(),
        }
    }
}

impl StateSink for Snapshots {
    fn persist(&self, changes: &[StateChange]) -> Result<(), nestform_provider::BoxError> {
        std::thread::sleep(self.delay);
        let mut mirror = self.mirror.lock().unwrap();
        for (addr, r) in changes {
            match r {
                Some(r) => mirror.resources.insert(addr.clone(), r.clone()),
                None => mirror.resources.remove(addr),
            };
        }
        let mut changed = self.changed.lock().unwrap();
        changed.push(changes.iter().map(|(a, _)| a.clone()).collect());
        if changed.len() > self.fail_from {
            return Err("No space left on device (os error 28)".into());
        }
        self.saved.lock().unwrap().push(mirror.clone());
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

/// Options for a test apply. Lab guests boot from their disk: the memory provider's backends carry
/// `DiskBoot`, so the engine's tests need no kernel or initramfs.
fn test_options(cancel: watch::Receiver<bool>, events: mpsc::UnboundedSender<ApplyEvent>) -> ApplyOptions {
    ApplyOptions::new(cancel, events)
}
