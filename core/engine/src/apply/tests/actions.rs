//! Each action against the memory provider: create from empty, live and restarting updates,
//! replace as delete then create, and destroy with dependents first.

use nestform_provider_memory::MemoryProvider;
use nestform_state::State;
use nestform_types::ResourceSpec;

use super::{addr, basic, change, created, host_uri, next_plan, position, run, L0, L0_URI};
use crate::apply::{OpKind, Phase};
use crate::hosts::Hosts;
use crate::plan::Action;

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
