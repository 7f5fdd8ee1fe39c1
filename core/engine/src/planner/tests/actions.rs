//! One resource's action: create from nothing, no-op when applied, live update, delete when
//! removed from configuration, and what a change carries (attributes, domain definitions).

use nestform_state::State;
use nestform_types::ByteSize;
use serde_json::json;

use super::{addr, find, no_facts, run, run_with, summary, three_levels, xml_hypervisors};
use crate::plan::{Action, ChangeReason, Effect};
use crate::planner::PlanOptions;

#[test]
fn create_from_empty() {
    let conf = three_levels();
    let changes = run(&conf, &State::new(), &no_facts(), PlanOptions::default()).unwrap();
    assert!(changes.iter().all(|c| c.action == Action::Create));
    let order: Vec<String> = changes.iter().map(|c| c.addr.to_string()).collect();
    assert_eq!(
        order,
        [
            "kvm_host.l0",
            "nat_network.lan",
            "nested_guest.g1",
            "kvm_host.l1",
            "nested_guest.g2",
            "kvm_host.l2",
            "nested_guest.g3"
        ]
    );
    let levels: Vec<u32> = changes.iter().map(|c| c.level).collect();
    assert_eq!(levels, [0, 0, 1, 1, 2, 2, 3]);
    let g1 = find(&changes, "nested_guest.g1");
    // Only what apply sets in this version (`crate::computed`).
    assert_eq!(g1.after_unknown.iter().collect::<Vec<_>>(), ["id"]);
    assert_eq!(g1.after.as_ref().unwrap()["memory"], "512MiB");
    assert_eq!(g1.depends_on, [addr("kvm_host.l0"), addr("nat_network.lan")].into());
    assert_eq!(find(&changes, "kvm_host.l1").depends_on, [addr("nested_guest.g1")].into());
    assert_eq!(
        find(&changes, "nat_network.lan").after_unknown,
        ["bridge".to_string(), "id".to_string()].into()
    );
}

#[test]
fn applied_configuration_is_a_no_op_and_keeps_computed_attributes() {
    let conf = three_levels();
    let mut state = conf.applied();
    // Whatever else a provider recorded is kept too.
    state.resources.get_mut(&addr("nested_guest.g1")).unwrap().attributes["mac_addresses"] =
        json!(["52:54:00:00:00:01"]);
    let changes = run(&conf, &state, &no_facts(), PlanOptions::default()).unwrap();
    assert_eq!(changes.len(), 7);
    assert!(changes.iter().all(|c| c.action == Action::NoOp), "{:#?}", summary(&changes));
    let g1 = find(&changes, "nested_guest.g1");
    assert_eq!(g1.after.as_ref().unwrap()["id"], "id-of-g1");
    assert_eq!(g1.after.as_ref().unwrap()["mac_addresses"], json!(["52:54:00:00:00:01"]));
    assert_eq!(g1.id.as_deref(), Some("id-g1"));
    // State written from a whole `ResourceSpec` carries its `type` tag; it is no attribute.
    let mut tagged = state.clone();
    tagged.resources.get_mut(&addr("nested_guest.g1")).unwrap().attributes["type"] = json!("nested_guest");
    let changes = run(&conf, &tagged, &no_facts(), PlanOptions::default()).unwrap();
    let g1 = find(&changes, "nested_guest.g1");
    assert_eq!(g1.action, Action::NoOp);
    assert!(g1.after.as_ref().unwrap().get("type").is_none());
    // A no-op holds its attributes once, in `after`.
    assert!(g1.before.is_none());
    let conf = conf.edit_guest("g1", |g| g.vcpus = 2);
    let changes = run(&conf, &tagged, &no_facts(), PlanOptions::default()).unwrap();
    let g1 = find(&changes, "nested_guest.g1");
    assert_eq!(g1.action, Action::Update);
    assert!(g1.before.as_ref().unwrap().get("type").is_none());
    assert_eq!(g1.before.as_ref().unwrap()["vcpus"], 1);
    // Inner guests restart with it; what they were is shown too.
    assert_eq!(find(&changes, "nested_guest.g2").before.as_ref().unwrap()["vcpus"], 1);
}

#[test]
fn live_update_grows_a_disk_and_starts_a_stopped_guest() {
    let conf = three_levels();
    let mut state = conf.applied();
    state.resources.get_mut(&addr("nested_guest.g3")).unwrap().attributes["running"] = json!(false);
    let conf = conf.edit_guest("g3", |g| g.disks[0].size = ByteSize::gib(10));
    let changes = run(&conf, &state, &no_facts(), PlanOptions::default()).unwrap();
    let g3 = find(&changes, "nested_guest.g3");
    assert_eq!((g3.action, g3.restart), (Action::Update, false));
    let paths: Vec<(&str, Effect)> =
        g3.attribute_changes.iter().map(|a| (a.path.as_str(), a.effect)).collect();
    assert_eq!(paths, [("disks[\"root\"].size", Effect::Live), ("running", Effect::Live)]);
    assert_eq!(changes.iter().filter(|c| c.action != Action::NoOp).count(), 1);
}

#[test]
fn removed_from_configuration_is_deleted_with_what_runs_inside() {
    let full = three_levels();
    let state = full.applied();
    let conf = full.without("nested_guest.g2").without("kvm_host.l2").without("nested_guest.g3");
    let changes = run(&conf, &state, &no_facts(), PlanOptions::default()).unwrap();
    for gone in ["nested_guest.g2", "kvm_host.l2", "nested_guest.g3"] {
        let c = find(&changes, gone);
        assert_eq!(c.action, Action::Delete, "{gone}");
        assert_eq!(c.reasons[0], ChangeReason::NotInConfig);
        assert!(c.after.is_none());
    }
    assert_eq!(changes.iter().filter(|c| c.action == Action::NoOp).count(), 4);
}

#[test]
fn changed_guests_on_connected_hosts_carry_domain_definitions() {
    let conf = three_levels();
    let state = conf.applied();
    let conf = conf.edit_guest("g1", |g| g.memory = ByteSize::gib(1));
    let (changes, _) =
        run_with(&conf, &state, &no_facts(), &xml_hypervisors(), PlanOptions::default()).unwrap();
    let g1 = find(&changes, "nested_guest.g1");
    let (before, after) = (g1.definition_before.as_ref().unwrap(), g1.definition_after.as_ref().unwrap());
    assert!(before.contains("<memory unit='KiB'>524288</memory>"));
    assert!(after.contains("<memory unit='KiB'>1048576</memory>"));
    assert!(after.contains("<interface network='lan'/>"));
    assert!(after.contains("<address>nested_guest.g1</address>"));
    // g2 restarts but nothing of its own changes, and its host (l1) is not connected.
    assert!(find(&changes, "nested_guest.g2").definition_after.is_none());
}

#[test]
fn plans_are_deterministic() {
    let conf = three_levels();
    let mut reversed = conf.clone();
    reversed.0.reverse();
    let a = run(&conf, &State::new(), &no_facts(), PlanOptions::default()).unwrap();
    let b = run(&reversed, &State::new(), &no_facts(), PlanOptions::default()).unwrap();
    assert_eq!(a, b);
}
