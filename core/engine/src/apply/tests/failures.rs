//! Failures: a failed operation skips only what depends on it, an unreachable host fails only its
//! own resources, and changes that cannot be applied are refused before anything runs.

use std::collections::BTreeMap;

use nestform_provider_memory::MemoryProvider;
use nestform_state::State;
use nestform_types::ResourceSpec;

use super::{addr, basic, change, guest, host_promoted, host_uri, run};
use crate::apply::{ApplyEvent, OpKind, Phase};
use crate::hosts::Hosts;
use crate::plan::Action;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_skips_only_its_dependents() {
    let provider = MemoryProvider::new();
    provider.fail_on("create_network", "lan");
    let hosts = Hosts::new(provider.backends());
    let r = run(&basic(), State::new(), &hosts).await;
    assert_eq!(r.outcome.errors.len(), 1, "{:?}", r.outcome.errors);
    assert_eq!(r.outcome.errors[0].0, addr("nat_network.lan"));
    assert!(
        matches!(r.outcome.errors[0].1, crate::apply::ApplyError::Provider(_)),
        "{:?}",
        r.outcome.errors[0].1
    );
    assert!(r.outcome.errors[0].1.to_string().contains("injected failure"));
    let kept: Vec<_> = r.outcome.state.resources.keys().map(|a| a.to_string()).collect();
    assert_eq!(kept, ["kvm_host.l0", "nested_guest.g2"]);
    assert!(!provider.call_log().contains(&"create_guest g1".to_string()));
    assert!(r.events.contains(&ApplyEvent {
        addr: addr("nested_guest.g1"),
        op: OpKind::Create,
        phase: Phase::Skipped,
        swept_by: None,
    }));
    assert_eq!(r.saved.last().unwrap(), &r.outcome.state);
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
    let bench = nestform_types::BenchmarkSpec::article(
        nestform_types::BenchmarkKind::Boot,
        vec![addr("nested_guest.g1")],
    );
    plan.changes.push(change("benchmark.boot", Action::Create, Some(ResourceSpec::Benchmark(bench)), 0));
    let state = State::new();
    let r = run(&plan, state.clone(), &hosts).await;
    assert_eq!(r.outcome.state, state);
    assert!(provider.call_log().is_empty() && provider.connects() == 0 && r.saved.is_empty());
    assert!(
        r.outcome.errors.iter().all(|(_, e)| matches!(e, crate::apply::ApplyError::Refused(_))),
        "{:?}",
        r.outcome.errors
    );
    let refused: BTreeMap<_, _> =
        r.outcome.errors.iter().map(|(a, e)| (a.to_string(), e.to_string())).collect();
    // g1 has no `lab` install, so no agent to reach its libvirt through, nor to measure it in; the
    // guest inside it is fine in itself. Nothing runs when anything is refused.
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused["kvm_host.l1"].contains("no nestform agent"), "{refused:?}");
    assert!(refused["benchmark.boot"].contains("has no nestform agent to measure in"), "{refused:?}");
}
