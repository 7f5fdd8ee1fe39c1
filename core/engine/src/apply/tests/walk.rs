//! The walk: at most `parallelism` operations at once, each change saved before anything built on
//! it starts, and a cancel that lets running operations finish and saves the state.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nestform_provider_memory::MemoryProvider;
use nestform_state::State;
use tokio::sync::{mpsc, watch};

use super::{addr, basic, change, guest, host_uri, plan_of, run_with, test_options, Snapshots, L0_URI};
use crate::apply::{apply, ApplyError, Phase};
use crate::hosts::Hosts;
use crate::plan::Action;

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
async fn a_long_operation_says_it_is_still_running() {
    let provider = MemoryProvider::new();
    // Every create takes 450 ms; word comes every 100 ms.
    provider.set_delay(Duration::from_millis(450));
    let hosts = Hosts::new(provider.backends());
    let changes = vec![
        change("kvm_host.l0", Action::Create, Some(host_uri(L0_URI)), 0),
        change("nested_guest.g", Action::Create, Some(guest("g", "kvm_host.l0", &[])), 1),
    ];
    let (_cancel_tx, cancel) = watch::channel(false);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut opts = test_options(cancel, tx);
    opts.still_every = Duration::from_millis(100);
    let plan = plan_of("l", changes);
    let outcome = apply(&plan, State::new(), &hosts, opts, Arc::new(Snapshots::new(&State::new()))).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let mut phases = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if e.addr == addr("nested_guest.g") {
            phases.push(e.phase);
        }
    }
    let running: Vec<Duration> = phases
        .iter()
        .filter_map(|p| if let Phase::Running { elapsed, .. } = p { Some(*elapsed) } else { None })
        .collect();
    assert!(running.len() >= 3, "{phases:?}");
    assert!(running.windows(2).all(|w| w[0] < w[1]), "elapsed grows: {running:?}");
    assert_eq!(phases.first(), Some(&Phase::Started), "{phases:?}");
    assert!(matches!(phases.last(), Some(Phase::Finished { .. })), "nothing after the end: {phases:?}");
}

/// A disk that fills up mid-apply: once a save fails nothing starts any more, since every change made
/// after it would be unrecorded, and the outcome names exactly the resources made but not saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_save_starts_nothing_more_and_names_what_is_unrecorded() {
    let provider = MemoryProvider::new();
    provider.set_delay(Duration::from_millis(20));
    let hosts = Hosts::new(provider.backends());
    let mut changes = vec![change("kvm_host.l0", Action::Create, Some(host_uri(L0_URI)), 0)];
    for i in 0..40 {
        let name = format!("g{i}");
        changes.push(change(
            &format!("nested_guest.{name}"),
            Action::Create,
            Some(guest(&name, "kvm_host.l0", &[])),
            1,
        ));
    }
    let sink = Arc::new(Snapshots { fail_from: 4, ..Snapshots::new(&State::new()) });
    let (_cancel_tx, cancel) = watch::channel(false);
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut opts = test_options(cancel, tx);
    opts.parallelism = 3;
    let outcome = apply(&plan_of("l", changes), State::new(), &hosts, opts, sink.clone()).await;

    let why = outcome.halted.as_deref().expect("the apply says it stopped");
    assert!(why.contains("No space left on device"), "{why}");
    let made: BTreeSet<String> =
        (0..40).map(|i| format!("g{i}")).filter(|g| provider.guest("l0", g).is_some()).collect();
    let saved = sink.saved.lock().unwrap().last().cloned().unwrap_or_default();
    let saved_guests: BTreeSet<String> = saved
        .resources
        .keys()
        .filter_map(|a| a.to_string().strip_prefix("nested_guest.").map(str::to_string))
        .collect();
    let unrecorded: BTreeSet<String> = outcome
        .errors
        .iter()
        .filter(|(_, e)| matches!(e, ApplyError::SavedNot(_)))
        .map(|(a, _)| a.to_string().trim_start_matches("nested_guest.").to_string())
        .collect();
    // Every guest that exists is either in the last saved state or named as unrecorded.
    let expected: BTreeSet<String> = made.difference(&saved_guests).cloned().collect();
    assert_eq!(unrecorded, expected, "made {made:?}, saved {saved_guests:?}");
    assert!(!unrecorded.is_empty(), "the failed save held changes");
    // What ran when the save failed finished, and nothing started after it: at most the operations
    // running at the time and those of the failed batch went unrecorded, instead of most of the 40.
    assert!(
        made.len() <= saved_guests.len() + 2 * 3,
        "{} guests made, {} saved",
        made.len(),
        saved_guests.len()
    );
}
