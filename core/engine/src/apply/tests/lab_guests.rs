//! Lab guests: created once their agent answers (its facts become computed attributes), recorded
//! tainted when it never does.

use std::sync::Arc;
use std::time::Duration;

use nestform_provider_memory::MemoryProvider;
use nestform_state::State;
use nestform_types::ResourceSpec;
use tokio::sync::{mpsc, watch};

use super::{addr, basic, change, guest, host_uri, run, test_options, Snapshots};
use crate::apply::apply;
use crate::hosts::Hosts;
use crate::plan::{Action, Plan};

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
    // Where its time went, step by step, as its code named the steps.
    let steps = r
        .events
        .iter()
        .find_map(|e| match &e.phase {
            crate::apply::Phase::Finished { steps, .. } if e.addr == addr("nested_guest.g1") => Some(steps),
            _ => None,
        })
        .expect("g1 finished");
    let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "defining and starting the guest",
            "booting, until its agent answers",
            "reading its facts and addresses"
        ]
    );
}

/// Applies `plan` on a memory host where `g1`'s agent never answers, with `wait` as the default wait.
async fn apply_with_silent_agent(
    plan: &Plan,
    wait: nestform_provider::AgentWait,
) -> (MemoryProvider, crate::apply::ApplyOutcome) {
    let memory = MemoryProvider::new();
    memory.fail_on("open_agent", "g1");
    let hosts = Hosts::new(memory.backends());
    let (tx, _rx) = mpsc::unbounded_channel();
    let (_cancel_tx, cancel) = watch::channel(false);
    let mut opts = test_options(cancel, tx);
    opts.agent_wait = wait;
    let sink = Arc::new(Snapshots::new(&State::new()));
    let outcome = apply(plan, State::new(), &hosts, opts, sink).await;
    (memory, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_guest_whose_agent_never_answers_is_recorded_tainted() {
    let wait = nestform_provider::AgentWait::at_most(Duration::from_millis(500));
    let (memory, outcome) = apply_with_silent_agent(&lab_plan(), wait).await;
    assert!(matches!(outcome.errors[0].1, crate::apply::ApplyError::Agent(_)), "{:?}", outcome.errors);
    let errors: Vec<_> = outcome.errors.iter().map(|(a, e)| (a.to_string(), e.to_string())).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "nested_guest.g1");
    assert!(errors[0].1.contains("did not answer within"), "{}", errors[0].1);
    assert!(errors[0].1.contains("has no real console"), "the console tail is in the error: {}", errors[0].1);
    // The guest exists, so state records it, tainted: the next plan replaces it.
    let g1 = &outcome.state.resources[&addr("nested_guest.g1")];
    assert!(g1.tainted);
    assert_eq!(g1.id.as_deref(), Some(memory.guest("lab", "g1").unwrap().id.as_str()));
    // Independent work finished.
    assert!(outcome.state.resources.contains_key(&addr("nested_guest.g2")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_create_bounds_the_wait_for_the_agent() {
    // The default wait is minutes; the guest's own `timeouts { create = "1s" }` is what counts.
    let mut plan = lab_plan();
    plan.changes[2].timeouts.create = Some("1s".into());
    let started = std::time::Instant::now();
    let (_memory, outcome) = apply_with_silent_agent(&plan, nestform_provider::AgentWait::BOOT).await;
    assert!(started.elapsed() < Duration::from_secs(30), "waited {:?}", started.elapsed());
    let errors: Vec<_> = outcome.errors.iter().map(|(a, e)| (a.to_string(), e.to_string())).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("did not answer within 1s"), "{}", errors[0].1);
    assert!(outcome.state.resources[&addr("nested_guest.g1")].tainted);
}

#[test]
fn the_default_wait_grows_with_the_level_and_each_emulated_level_below() {
    use crate::apply::exec::slowness;
    use crate::apply::ops::View;
    let mut plan = lab_plan();
    let view_slowness = |plan: &Plan| {
        let state = State::new();
        let view = View::new(plan, &state);
        slowness(&view, plan, &addr("nested_guest.g1"), 1)
    };
    assert_eq!(view_slowness(&plan), 1, "a level-1 guest on a host without facts");
    let tcg = nestform_provider::HostFacts { acceleration: Some("tcg".into()), ..Default::default() };
    plan.hosts.insert(addr("kvm_host.l0"), tcg);
    assert_eq!(view_slowness(&plan), 2, "emulated by its host");
}
