//! What stops a plan or warns about it: dependency cycles, unknown references, and guests that do
//! not fit their host (too large, overcommitted, nesting off).

use std::collections::BTreeMap;

use nestform_provider::HostFacts;
use nestform_state::State;
use nestform_types::*;

use super::{addr, no_facts, run, run_with, three_levels, Conf};
use crate::graph::GraphProblem;
use crate::planner::changes::Failure;
use crate::planner::PlanOptions;

#[test]
fn dependency_cycles_name_every_member() {
    let conf = Conf::default()
        .host("l0")
        .guest("a", "kvm_host.l0")
        .guest("b", "kvm_host.l0")
        .guest("c", "kvm_host.l0")
        .depends("nested_guest.a", "nested_guest.b")
        .depends("nested_guest.b", "nested_guest.c")
        .depends("nested_guest.c", "nested_guest.a");
    let Err(Failure::Graph(problems)) = run(&conf, &State::new(), &no_facts(), PlanOptions::default()) else {
        panic!("expected a cycle")
    };
    assert_eq!(
        problems,
        [GraphProblem::Cycle(vec![addr("nested_guest.a"), addr("nested_guest.b"), addr("nested_guest.c")])]
    );
    // A host promoted from a guest that runs on it.
    let conf = Conf::default().promoted("l1", "nested_guest.g").guest("g", "kvm_host.l1");
    let Err(Failure::Graph(problems)) = run(&conf, &State::new(), &no_facts(), PlanOptions::default()) else {
        panic!("expected a cycle")
    };
    assert_eq!(problems, [GraphProblem::Cycle(vec![addr("kvm_host.l1"), addr("nested_guest.g")])]);
}

#[test]
fn unknown_references_are_reported() {
    let conf = Conf::default().guest("g", "kvm_host.nope");
    let Err(Failure::Graph(problems)) = run(&conf, &State::new(), &no_facts(), PlanOptions::default()) else {
        panic!("expected an unknown reference")
    };
    assert_eq!(
        problems,
        [GraphProblem::UnknownReference {
            from: addr("nested_guest.g"),
            attr: "host",
            to: addr("kvm_host.nope")
        }]
    );
}

fn facts(cpus: u32, memory: ByteSize, nesting: Option<bool>) -> BTreeMap<ResourceAddr, HostFacts> {
    let f = HostFacts { cpus, memory_bytes: memory.bytes(), nesting, ..Default::default() };
    [(addr("kvm_host.l0"), f)].into()
}

#[test]
fn guests_larger_than_their_host_are_errors() {
    let conf = three_levels().edit_guest("g1", |g| {
        g.vcpus = 4;
        g.memory = ByteSize::gib(8);
    });
    let Err(Failure::Problems(p)) =
        run(&conf, &State::new(), &facts(2, ByteSize::gib(4), Some(true)), PlanOptions::default())
    else {
        panic!("expected errors")
    };
    let at: Vec<(Option<&str>, bool)> = p.iter().map(|p| (p.attr, p.error)).collect();
    assert_eq!(at, [(Some("vcpus"), true), (Some("memory"), true), (None, false), (None, false)]);
    assert_eq!(p[0].summary, "`nested_guest.g1` asks for 4 vCPUs, but `kvm_host.l0` has 2");
    assert_eq!(p[1].summary, "`nested_guest.g1` asks for 8GiB of memory, but `kvm_host.l0` has 4GiB");
}

#[test]
fn a_refusal_for_memory_says_where_the_hosts_figure_came_from() {
    let conf = three_levels().edit_guest("g1", |g| g.memory = ByteSize::gib(8));
    let mut hosts = facts(2, ByteSize::gib(4), Some(true));
    hosts.get_mut(&addr("kvm_host.l0")).unwrap().memory_source = Some("the host's total memory".into());
    let Err(Failure::Problems(p)) = run(&conf, &State::new(), &hosts, PlanOptions::default()) else {
        panic!("expected errors")
    };
    assert_eq!(
        p[0].summary,
        "`nested_guest.g1` asks for 8GiB of memory, but `kvm_host.l0` has 4GiB (the host's total memory)"
    );
}

#[test]
fn an_emulated_promoted_guest_with_two_vcpus_is_warned_about() {
    let conf = three_levels().edit_guest("g1", |g| g.vcpus = 2);
    let mut hosts = facts(4, ByteSize::gib(16), Some(true));
    let warnings = |hosts: &BTreeMap<ResourceAddr, HostFacts>| {
        let (_, warnings) = run_with(&conf, &State::new(), hosts, &BTreeMap::new(), PlanOptions::default())
            .unwrap_or_else(|_| panic!("a warning, not an error"));
        warnings
    };
    assert!(warnings(&hosts).is_empty(), "under KVM two vCPUs are fine");
    hosts.get_mut(&addr("kvm_host.l0")).unwrap().acceleration = Some("tcg".into());
    let w = warnings(&hosts);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(!w[0].error);
    assert_eq!(w[0].addr.as_ref(), Some(&addr("nested_guest.g1")));
    assert!(
        w[0].summary.starts_with(
            "`nested_guest.g1` is emulated (TCG) on `kvm_host.l0` with 2 vCPUs and promoted to `kvm_host.l1`"
        ),
        "{}",
        w[0].summary
    );
}

#[test]
fn overcommit_is_only_a_warning() {
    let conf = three_levels()
        .guest("g4", "kvm_host.l0")
        .edit_guest("g1", |g| g.memory = ByteSize::gib(3))
        .edit_guest("g4", |g| g.memory = ByteSize::gib(3));
    let (changes, warnings) = run_with(
        &conf,
        &State::new(),
        &facts(2, ByteSize::gib(4), Some(true)),
        &BTreeMap::new(),
        PlanOptions::default(),
    )
    .unwrap_or_else(|_| panic!("overcommit must plan"));
    assert_eq!(changes.len(), 8);
    assert_eq!(warnings.len(), 1);
    assert!(!warnings[0].error);
    assert_eq!(
        warnings[0].summary,
        "the running guests on `kvm_host.l0` need 6GiB of memory together, and the host has 4GiB"
    );
}

#[test]
fn nesting_off_on_a_nested_host_is_an_error_at_nested() {
    let conf = three_levels();
    let Err(Failure::Problems(p)) =
        run(&conf, &State::new(), &facts(8, ByteSize::gib(16), Some(false)), PlanOptions::default())
    else {
        panic!("expected an error")
    };
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].addr.as_ref(), p[0].attr), (Some(&addr("kvm_host.l0")), Some("nested")));
    assert!(p[0].help.as_ref().unwrap().contains("kvm_module_options = { nested = 1 }"));
    // Unknown nesting is not an error.
    assert!(run(&conf, &State::new(), &facts(8, ByteSize::gib(16), None), PlanOptions::default()).is_ok());
}
