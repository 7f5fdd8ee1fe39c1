//! Deleting a guest sweeps what ran inside it: destroy and a replace never wait on a level inside
//! what they delete, which may be unreachable, stopped or crashed.

use nestform_provider_memory::{promoted_uri, MemoryProvider};
use nestform_state::State;
use nestform_types::{InstallSpec, LabInstall};

use crate::plan::{Action, ChangeReason};
use crate::planner::tests::{addr, Conf};
use crate::planner::PlanOptions;
use crate::refresh::orphans::tests::{find, hosts, plan, plan_with, run_apply, L0};

/// Level 0 runs `g1`, promoted to `l1`, which holds a network and the guest `g2`.
fn two_levels() -> Conf {
    Conf::default()
        .host("l0")
        .guest("g1", "kvm_host.l0")
        // Promoting a guest needs nestform's agent in it.
        .edit_guest("g1", |g| g.install = Some(InstallSpec::Lab(LabInstall::default())))
        .promoted("l1", "nested_guest.g1")
        .network("inner", "kvm_host.l1")
        .guest("g2", "kvm_host.l1")
}

const INSIDE: [&str; 3] = ["kvm_host.l1", "nat_network.inner", "nested_guest.g2"];

/// The lab applied for real on the fake, with its calls forgotten.
async fn applied(provider: &MemoryProvider) -> State {
    let fresh = State::new();
    let (first, warnings) = plan(&two_levels(), &fresh, &hosts(provider), false);
    assert!(warnings.is_empty(), "{warnings:?}");
    let state = run_apply(&first, fresh, &hosts(provider), None).await;
    assert_eq!(state.resources.len(), 5, "{:?}", state.resources.keys());
    assert!(provider.call_log().contains(&"create_guest g2".to_string()));
    state
}

/// How level 1 is lost before the destroy.
#[derive(Debug, Clone, Copy)]
enum Lost {
    /// Its libvirt cannot be reached (a wedged tunnel, a dead agent).
    Unreachable,
    /// The level-1 guest was stopped by hand (or crashed): nothing inside runs.
    Stopped,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_deletes_the_outer_guest_without_reaching_inside() {
    for lost in [Lost::Unreachable, Lost::Stopped] {
        let provider = MemoryProvider::new();
        let state = applied(&provider).await;
        match lost {
            Lost::Unreachable => provider.fail_on("connect", &promoted_uri(L0, "g1")),
            Lost::Stopped => {
                let l0 = hosts(&provider).connect_uri(&addr("kvm_host.l0"), L0).unwrap();
                let g1 = state.resources[&addr("nested_guest.g1")].id.clone().unwrap();
                l0.stop_guest(&g1, std::time::Duration::ZERO).unwrap();
            }
        }
        // Asking anything of level 1 would fail now.
        provider.fail_on("delete_guest", "g2");
        provider.fail_on("delete_network", "inner");
        let before = provider.call_log().len();

        let (destroy, warnings) = plan(&two_levels(), &state, &hosts(&provider), true);
        assert!(warnings.is_empty(), "{lost:?}: level 1 is not read for a destroy: {warnings:?}");
        for a in INSIDE {
            let c = find(&destroy, a);
            assert_eq!(c.action, Action::Delete, "{lost:?} {a}");
            assert!(
                c.reasons.contains(&ChangeReason::Cascade { guest: addr("nested_guest.g1") }),
                "{lost:?} {a}: {:?}",
                c.reasons
            );
        }
        let saved = run_apply(&destroy, state, &hosts(&provider), None).await;
        assert!(saved.resources.is_empty(), "{lost:?}: {:?}", saved.resources.keys());
        assert_eq!(provider.call_log()[before..], ["delete_guest g1".to_string()], "{lost:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_outer_guest_builds_what_ran_inside_anew_without_reaching_the_old_one() {
    let provider = MemoryProvider::new();
    let state = applied(&provider).await;
    provider.fail_on("connect", &promoted_uri(L0, "g1"));
    provider.fail_on("delete_guest", "g2");
    let options = PlanOptions { replace: vec![addr("nested_guest.g1")], ..Default::default() };
    let (replace, warnings) = plan_with(&two_levels(), &state, &hosts(&provider), options);
    assert!(warnings.is_empty(), "{warnings:?}");
    for a in INSIDE {
        assert_eq!(find(&replace, a).action, Action::Replace, "{a}");
    }
    // The new level 1 is reachable again.
    provider.clear_failures();
    let before = provider.call_log().len();
    let saved = run_apply(&replace, state.clone(), &hosts(&provider), None).await;
    let calls = &provider.call_log()[before..];
    assert!(!calls.contains(&"delete_guest g2".to_string()), "{calls:?}");
    assert!(!calls.contains(&"delete_network inner".to_string()), "{calls:?}");
    assert_eq!(calls.iter().filter(|c| *c == "delete_guest g1").count(), 1, "{calls:?}");
    assert!(calls.contains(&"create_guest g2".to_string()), "{calls:?}");
    assert_eq!(saved.resources.len(), 5);
    let id = |s: &State, a: &str| s.resources[&addr(a)].id.clone();
    assert_ne!(id(&saved, "nested_guest.g1"), id(&state, "nested_guest.g1"));
}
