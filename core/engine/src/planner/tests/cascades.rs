//! Cascades: a guest that restarts or is replaced takes what runs inside it (promoted hosts,
//! inner guests, the benchmarks that measure them) along.

use nestform_types::*;

use super::{addr, find, no_facts, plan_of, run, three_levels};
use crate::plan::{Action, ChangeReason, Effect};
use crate::planner::PlanOptions;

#[test]
fn restart_update_cascades_to_three_levels() {
    let conf = three_levels();
    let state = conf.applied();
    let conf = conf.edit_guest("g1", |g| g.memory = ByteSize::gib(1));
    let changes = run(&conf, &state, &no_facts(), PlanOptions::default()).unwrap();
    let g1 = find(&changes, "nested_guest.g1");
    assert_eq!((g1.action, g1.restart), (Action::Update, true));
    assert_eq!(g1.attribute_changes[0].why, "libvirt cannot change the memory of a running domain");
    for inner in ["nested_guest.g2", "nested_guest.g3"] {
        let c = find(&changes, inner);
        assert_eq!((c.action, c.restart), (Action::Update, true), "{inner}");
        assert_eq!(c.reasons, [ChangeReason::Cascade { guest: addr("nested_guest.g1") }]);
        assert!(c.attribute_changes.is_empty());
    }
    // The promoted hosts and the network come back with their guests.
    for same in ["kvm_host.l0", "kvm_host.l1", "kvm_host.l2", "nat_network.lan"] {
        assert_eq!(find(&changes, same).action, Action::NoOp, "{same}");
    }
    // Inner guests come after the ones they run inside: apply stops in reverse order (deepest
    // first) and starts in this order.
    let pos = |a: &str| changes.iter().position(|c| c.addr == addr(a)).unwrap();
    assert!(
        pos("nested_guest.g1") < pos("nested_guest.g2") && pos("nested_guest.g2") < pos("nested_guest.g3")
    );
}

#[test]
fn stopped_inner_guest_is_not_restarted() {
    let conf = three_levels().edit_guest("g3", |g| g.running = false);
    let state = conf.applied();
    let conf = conf.edit_guest("g1", |g| g.vcpus = 2);
    let changes = run(&conf, &state, &no_facts(), PlanOptions::default()).unwrap();
    assert_eq!(find(&changes, "nested_guest.g2").action, Action::Update);
    assert_eq!(find(&changes, "nested_guest.g3").action, Action::NoOp);
}

#[test]
fn replace_cascades_to_everything_inside() {
    let conf = three_levels();
    let state = conf.applied();
    let conf = conf.edit_guest("g1", |g| g.disks[0].format = DiskFormat::Raw);
    let changes = run(&conf, &state, &no_facts(), PlanOptions::default()).unwrap();
    let g1 = find(&changes, "nested_guest.g1");
    assert_eq!(g1.action, Action::Replace);
    assert!(g1.reasons.is_empty());
    assert_eq!(g1.attribute_changes[0].effect, Effect::Replace);
    assert!(g1.after_unknown.contains("id"));
    assert!(g1.after.as_ref().unwrap().get("id").is_none());
    for inner in ["kvm_host.l1", "nested_guest.g2", "kvm_host.l2", "nested_guest.g3"] {
        let c = find(&changes, inner);
        assert_eq!(c.action, Action::Replace, "{inner}");
        assert_eq!(c.reasons, [ChangeReason::Cascade { guest: addr("nested_guest.g1") }]);
    }
    assert_eq!(find(&changes, "nested_guest.g3").after_unknown, ["id".to_string()].into());
    assert_eq!(find(&changes, "nat_network.lan").action, Action::NoOp);
}

#[test]
fn benchmarks_of_a_replaced_target_are_replaced() {
    let bench = |targets: &[&str]| {
        ResourceSpec::Benchmark(BenchmarkSpec::article(
            BenchmarkKind::Boot,
            targets.iter().map(|t| addr(t)).collect(),
        ))
    };
    let conf = three_levels()
        .add("benchmark.boot3", bench(&["nested_guest.g3"]))
        .add("benchmark.boot1", bench(&["nested_guest.g1"]));
    let state = conf.applied();
    // g2's disk format forces its replacement, which cascades into g3 (inside it).
    let changed = conf.clone().edit_guest("g2", |g| g.disks[0].format = DiskFormat::Raw);
    let changes = run(&changed, &state, &no_facts(), PlanOptions::default()).unwrap();
    let boot3 = find(&changes, "benchmark.boot3");
    assert_eq!(boot3.action, Action::Replace);
    assert_eq!(boot3.reasons, [ChangeReason::Cascade { guest: addr("nested_guest.g3") }]);
    assert_eq!(boot3.after_unknown, ["results".to_string()].into());
    assert_eq!(find(&changes, "benchmark.boot1").action, Action::NoOp);
    let pos = |a: &str| changes.iter().position(|c| c.addr == addr(a)).unwrap();
    assert!(pos("nested_guest.g3") < pos("benchmark.boot3"));
    let text = crate::render::render_plan(&plan_of(changes));
    assert!(text.contains("  # (because `nested_guest.g3`, which it measures, is replaced"), "{text}");

    // A restart is not a new machine: the results still hold.
    let restarted = conf.clone().edit_guest("g1", |g| g.vcpus = 2);
    let changes = run(&restarted, &state, &no_facts(), PlanOptions::default()).unwrap();
    assert_eq!(find(&changes, "nested_guest.g3").action, Action::Update);
    assert_eq!(find(&changes, "benchmark.boot3").action, Action::NoOp);
    assert_eq!(find(&changes, "benchmark.boot1").action, Action::NoOp);

    // A benchmark not created yet is simply created.
    let mut fresh = state.clone();
    fresh.resources.remove(&addr("benchmark.boot3"));
    let changes = run(&changed, &fresh, &no_facts(), PlanOptions::default()).unwrap();
    let boot3 = find(&changes, "benchmark.boot3");
    assert_eq!((boot3.action, boot3.reasons.len()), (Action::Create, 0));
}
