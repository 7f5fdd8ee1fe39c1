//! Plan options: `-destroy`, `-target` and `-replace` (and tainted resources, replaced like a
//! `-replace`).

use std::collections::BTreeSet;

use nestform_state::State;

use super::{addr, find, no_facts, run, summary, three_levels};
use crate::plan::{Action, ChangeReason};
use crate::planner::changes::Failure;
use crate::planner::PlanOptions;

#[test]
fn destroy_deletes_everything_in_dependency_order() {
    let conf = three_levels();
    let state = conf.applied();
    let options = PlanOptions { destroy: true, ..Default::default() };
    let changes = run(&conf, &state, &no_facts(), options).unwrap();
    assert_eq!(changes.len(), 7);
    assert!(changes.iter().all(|c| c.action == Action::Delete));
    // Destroyed in reverse: everything a resource depends on comes before it in `changes`.
    for (i, c) in changes.iter().enumerate() {
        for d in &c.depends_on {
            let j = changes.iter().position(|x| &x.addr == d).unwrap();
            assert!(j < i, "{} before {}", d, c.addr);
        }
    }
    let reversed: Vec<String> = changes.iter().rev().map(|c| c.addr.to_string()).collect();
    assert_eq!(reversed[0], "nested_guest.g3");
    assert_eq!(reversed[6], "kvm_host.l0");
    // Nothing to destroy in an empty state.
    let options = PlanOptions { destroy: true, ..Default::default() };
    assert!(run(&conf, &State::new(), &no_facts(), options).unwrap().is_empty());
}

#[test]
fn destroy_with_target_takes_what_depends_on_it() {
    let conf = three_levels();
    let state = conf.applied();
    let options = PlanOptions { destroy: true, targets: vec![addr("nested_guest.g2")], ..Default::default() };
    let changes = run(&conf, &state, &no_facts(), options).unwrap();
    let names: BTreeSet<String> = changes.iter().map(|c| c.addr.to_string()).collect();
    assert_eq!(names, ["kvm_host.l2", "nested_guest.g2", "nested_guest.g3"].map(String::from).into());
}

#[test]
fn target_plans_what_it_depends_on_and_what_cascades() {
    let conf = three_levels();
    let options = PlanOptions { targets: vec![addr("nested_guest.g2")], ..Default::default() };
    let changes = run(&conf, &State::new(), &no_facts(), options).unwrap();
    let names: Vec<String> = changes.iter().map(|c| c.addr.to_string()).collect();
    assert_eq!(
        names,
        ["kvm_host.l0", "nat_network.lan", "nested_guest.g1", "kvm_host.l1", "nested_guest.g2"]
    );

    let state = conf.applied();
    let conf = conf.edit_guest("g1", |g| g.vcpus = 2).edit_guest("g3", |g| g.vcpus = 3);
    let options = PlanOptions { targets: vec![addr("nested_guest.g1")], ..Default::default() };
    let changes = run(&conf, &state, &no_facts(), options).unwrap();
    let changed: Vec<(String, Action, bool)> =
        summary(&changes).into_iter().filter(|(_, a, _)| *a != Action::NoOp).collect();
    assert_eq!(
        changed,
        [
            ("nested_guest.g1".to_string(), Action::Update, true),
            ("nested_guest.g2".to_string(), Action::Update, true),
            ("nested_guest.g3".to_string(), Action::Update, true),
        ]
    );
    // g3's own change (vcpus) rides along only because g3 restarts anyway; its reasons say why.
    assert_eq!(
        find(&changes, "nested_guest.g3").reasons,
        [ChangeReason::Cascade { guest: addr("nested_guest.g1") }]
    );

    let options = PlanOptions { targets: vec![addr("nested_guest.nope")], ..Default::default() };
    let Err(Failure::Problems(p)) = run(&conf, &state, &no_facts(), options) else {
        panic!("expected an error")
    };
    assert_eq!(p[0].summary, "`-target` `nested_guest.nope` matches no resource");
}

#[test]
fn replace_requested_and_tainted() {
    let conf = three_levels();
    let mut state = conf.applied();
    let options = PlanOptions { replace: vec![addr("nested_guest.g2")], ..Default::default() };
    let changes = run(&conf, &state, &no_facts(), options).unwrap();
    let g2 = find(&changes, "nested_guest.g2");
    assert_eq!(g2.action, Action::Replace);
    assert_eq!(g2.reasons, [ChangeReason::ReplaceRequested]);
    assert_eq!(find(&changes, "nested_guest.g3").action, Action::Replace);
    assert_eq!(find(&changes, "nested_guest.g1").action, Action::NoOp);

    let options = PlanOptions { replace: vec![addr("nested_guest.g9")], ..Default::default() };
    let Err(Failure::Problems(p)) = run(&conf, &state, &no_facts(), options) else {
        panic!("expected an error")
    };
    assert_eq!(p[0].summary, "`-replace` `nested_guest.g9` matches no resource in state");

    state.resources.get_mut(&addr("nat_network.lan")).unwrap().tainted = true;
    let changes = run(&conf, &state, &no_facts(), PlanOptions::default()).unwrap();
    let lan = find(&changes, "nat_network.lan");
    assert_eq!((lan.action, lan.reasons.as_slice()), (Action::Replace, [ChangeReason::Tainted].as_slice()));
}
