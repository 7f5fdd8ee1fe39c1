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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_guest_whose_agent_never_answers_is_recorded_tainted() {
    let memory = MemoryProvider::new();
    memory.fail_on("open_agent", "g1");
    let hosts = Hosts::new(memory.backends());
    let (tx, _rx) = mpsc::unbounded_channel();
    let (_cancel_tx, cancel) = watch::channel(false);
    let mut opts = test_options(cancel, tx);
    opts.agent_wait = nestform_provider::AgentWait::at_most(Duration::from_millis(500));
    let sink = Arc::new(Snapshots::new(&State::new()));
    let outcome = apply(&lab_plan(), State::new(), &hosts, opts, sink).await;
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
