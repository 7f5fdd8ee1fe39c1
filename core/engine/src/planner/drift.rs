//! Drift: what changed outside nestform. Refresh writes what the hosts report into state (a guest's
//! `running`, `vcpus`, `memory`) and removes what they no longer have; comparing that with the state as
//! recorded before refresh tells a change made behind nestform's back apart from a change of
//! configuration, so the plan can say why it starts a guest nobody asked to start. The same comparison
//! tells an orphan that refresh adopted (in the refreshed state, not in the recorded one).

use nestform_state::ResourceState;
use serde_json::Value;

use crate::plan::{Action, ChangeReason, ResourceChange};

/// Why `c` is needed because of something done outside nestform, if it is: the resource vanished
/// (`recorded` has it, the refreshed state `refreshed` does not), or an attribute the change sets was
/// reported different from what was recorded.
pub(crate) fn drift(
    c: &ResourceChange,
    refreshed: Option<&ResourceState>,
    recorded: Option<&ResourceState>,
) -> Option<ChangeReason> {
    let recorded = recorded?;
    let detail = match (c.action, refreshed) {
        // Refresh leaves out a promoted host whose hypervisor does not run, rather than start it.
        (Action::Create, None)
            if c.addr.ty == nestform_types::ResourceType::KvmHost
                && recorded.attributes.get("guest").is_some() =>
        {
            "libvirt is not running in its guest (the guest restarted, or its libvirtd stopped), and \
             apply starts it"
                .to_string()
        }
        (Action::Create, None) => "it was deleted outside nestform".to_string(),
        (Action::Update | Action::Replace, Some(refreshed)) => {
            let mut details = Vec::new();
            let mut seen: Vec<&str> = Vec::new();
            for a in &c.attribute_changes {
                // `disks["root"].size` drifts when `disks` was reported different.
                let top = a.path.split(['[', '.']).next().unwrap_or(&a.path);
                if seen.contains(&top) {
                    continue;
                }
                seen.push(top);
                let (was, is) = (recorded.attributes.get(top), refreshed.attributes.get(top));
                if was != is {
                    details.push(describe(top, was, is));
                }
            }
            if details.is_empty() {
                return None;
            }
            details.join("; ")
        }
        _ => return None,
    };
    Some(ChangeReason::Drift { detail })
}

/// Whether refresh adopted the resource (see `crate::refresh`'s orphans): tainted, with an id the
/// state as recorded does not have for it (none at all, or one that refresh found gone, as when a
/// network was defined anew by an update that was killed before it was saved).
pub(crate) fn is_orphan(refreshed: Option<&ResourceState>, recorded: Option<&ResourceState>) -> bool {
    refreshed.is_some_and(|r| r.tainted && recorded.map(|rec| &rec.id) != Some(&r.id))
}

/// One drifted attribute in words: `it was stopped outside nestform`.
fn describe(key: &str, was: Option<&Value>, is: Option<&Value>) -> String {
    let show = |v: Option<&Value>| v.map(Value::to_string).unwrap_or_else(|| "null".into());
    match (key, is.and_then(Value::as_bool)) {
        ("running", Some(false)) => "it was stopped outside nestform".into(),
        ("running", Some(true)) => "it was started outside nestform".into(),
        _ => format!("its `{key}` was changed outside nestform, from {} to {}", show(was), show(is)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nestform_state::State;
    use serde_json::{json, Value};

    use super::super::tests::{addr, three_levels, Conf};
    use super::super::{plan_after_refresh, PlanInput, PlanOptions};
    use crate::plan::{Action, ChangeReason, Plan};
    use crate::render::{json::plan_json, render_plan};

    /// Plans `conf` against `refreshed`, knowing `recorded` was the state before refresh.
    fn planned(conf: &Conf, refreshed: &State, recorded: &State) -> Plan {
        let config = conf.config();
        let (facts, hypervisors) = (BTreeMap::new(), BTreeMap::new());
        let input = PlanInput {
            config: &config,
            state: refreshed,
            facts: &facts,
            hypervisors: &hypervisors,
            options: PlanOptions::default(),
            boot: None,
        };
        plan_after_refresh(input, recorded).unwrap().plan
    }

    fn change<'a>(plan: &'a Plan, a: &str) -> &'a crate::plan::ResourceChange {
        plan.changes.iter().find(|c| c.addr == addr(a)).unwrap()
    }

    #[test]
    fn a_guest_stopped_outside_is_started_and_says_why() {
        let conf = three_levels();
        let recorded = conf.applied();
        let mut refreshed = recorded.clone();
        refreshed.resources.get_mut(&addr("nested_guest.g3")).unwrap().attributes["running"] = json!(false);
        let plan = planned(&conf, &refreshed, &recorded);
        let g3 = change(&plan, "nested_guest.g3");
        assert_eq!(g3.action, Action::Update);
        assert_eq!(g3.reasons, [ChangeReason::Drift { detail: "it was stopped outside nestform".into() }]);
        let text = render_plan(&plan);
        assert!(
            text.contains(
                "  # nested_guest.g3 will be updated in place (level 3, on kvm_host.l2)\n  \
                 # (because it was stopped outside nestform)\n"
            ),
            "{text}"
        );
        let json = plan_json(&plan);
        let g3 =
            json["resource_changes"].as_array().unwrap().iter().find(|c| c["address"] == "nested_guest.g3");
        let g3 = g3.unwrap();
        assert_eq!(g3["action_reason"], "update_because_drift");
        assert_eq!(
            g3["nestform"]["reasons"],
            json!([{"kind": "drift", "detail": "it was stopped outside nestform"}])
        );
    }

    #[test]
    fn a_promoted_host_whose_libvirt_does_not_run_is_started_by_apply_alone() {
        let conf = three_levels();
        let recorded = conf.applied();
        // What refresh leaves when libvirt does not run in `g1` (it stopped; the guest runs on): the
        // host is out, what lives below it keeps its record.
        let mut refreshed = recorded.clone();
        refreshed.resources.remove(&addr("kvm_host.l1"));
        let plan = planned(&conf, &refreshed, &recorded);
        let l1 = change(&plan, "kvm_host.l1");
        assert_eq!(l1.action, Action::Create);
        let [ChangeReason::Drift { detail }] = l1.reasons.as_slice() else { panic!("{:?}", l1.reasons) };
        assert!(detail.starts_with("libvirt is not running in its guest"), "{detail}");
        // Nothing below it is touched: apply starts its libvirt and leaves its guests as they are.
        for a in ["nested_guest.g2", "kvm_host.l2", "nested_guest.g3", "nested_guest.g1"] {
            assert_eq!(change(&plan, a).action, Action::NoOp, "{a}");
        }
        let text = render_plan(&plan);
        assert!(text.contains("# (because libvirt is not running in its guest"), "{text}");
        assert!(text.contains("Plan: 1 to add, 0 to change, 0 to replace, 0 to destroy."), "{text}");
    }

    #[test]
    fn a_configuration_change_is_not_drift() {
        // State already said stopped before refresh: starting it is the configuration's doing.
        let stopped = three_levels().edit_guest("g3", |g| g.running = false);
        let recorded = stopped.applied();
        let plan = planned(&three_levels(), &recorded, &recorded);
        let g3 = change(&plan, "nested_guest.g3");
        assert_eq!(g3.action, Action::Update);
        assert!(g3.reasons.is_empty());
        // Memory changed by hand, and the configuration asks for the recorded value again.
        let conf = three_levels();
        let recorded = conf.applied();
        let mut refreshed = recorded.clone();
        refreshed.resources.get_mut(&addr("nested_guest.g1")).unwrap().attributes["memory"] = json!("1GiB");
        let plan = planned(&conf, &refreshed, &recorded);
        let g1 = change(&plan, "nested_guest.g1");
        assert_eq!((g1.action, g1.restart), (Action::Update, true));
        assert_eq!(
            g1.reasons,
            [ChangeReason::Drift {
                detail: "its `memory` was changed outside nestform, from \"512MiB\" to \"1GiB\"".into()
            }]
        );
        // Inner guests restart because g1 does; that is a cascade, not drift of their own.
        let g2 = change(&plan, "nested_guest.g2");
        assert_eq!(g2.reasons, [ChangeReason::Cascade { guest: addr("nested_guest.g1") }]);
    }

    #[test]
    fn a_vanished_guest_is_created_again_because_of_drift() {
        let conf = three_levels();
        let recorded = conf.applied();
        let mut refreshed = recorded.clone();
        refreshed.resources.remove(&addr("nested_guest.g3"));
        let plan = planned(&conf, &refreshed, &recorded);
        let g3 = change(&plan, "nested_guest.g3");
        assert_eq!(g3.action, Action::Create);
        assert_eq!(g3.reasons, [ChangeReason::Drift { detail: "it was deleted outside nestform".into() }]);
        assert!(render_plan(&plan).contains(
            "  # nested_guest.g3 will be created (level 3, on kvm_host.l2)\n  # (because it was deleted outside nestform)\n"
        ));
        let json = plan_json(&plan);
        let rc = json["resource_changes"].as_array().unwrap();
        let g3 = rc.iter().find(|c| c["address"] == "nested_guest.g3").unwrap();
        assert_eq!(g3["action_reason"], "create_because_drift");
        // Without the state before refresh, the same plan has no reason to give.
        let plan = super::super::tests::plan_of_config(&conf, &refreshed);
        assert!(change(&plan, "nested_guest.g3").reasons.is_empty());
        let created: Vec<String> =
            plan.changes.iter().filter(|c| c.action != Action::NoOp).map(|c| c.addr.to_string()).collect();
        assert_eq!(created, ["nested_guest.g3"]);
    }

    #[test]
    fn what_ran_inside_a_vanished_guest_is_created_again() {
        let conf = three_levels();
        let recorded = conf.applied();
        let mut refreshed = recorded.clone();
        refreshed.resources.remove(&addr("nested_guest.g1"));
        let plan = planned(&conf, &refreshed, &recorded);
        let g1 = change(&plan, "nested_guest.g1");
        assert_eq!(g1.reasons, [ChangeReason::Drift { detail: "it was deleted outside nestform".into() }]);
        for inner in ["kvm_host.l1", "nested_guest.g2", "kvm_host.l2", "nested_guest.g3"] {
            let c = change(&plan, inner);
            assert_eq!(c.action, Action::Create, "{inner}");
            assert_eq!(c.reasons, [ChangeReason::Cascade { guest: addr("nested_guest.g1") }], "{inner}");
            assert!(c.before.is_none() && c.id.is_none(), "{inner}");
            assert!(c.after.as_ref().unwrap().get("id").is_none(), "{inner}");
            assert_eq!(c.after_unknown, [computed(inner)].into(), "{inner}");
        }
        assert_eq!(change(&plan, "nat_network.lan").action, Action::NoOp);
        assert_eq!(plan.counts(), (5, 0, 0, 0));
        let text = render_plan(&plan);
        assert!(
            text.contains(
                "  # nested_guest.g3 will be created (level 3, on kvm_host.l2)\n  # (because \
                 `nested_guest.g1`, which it runs inside, no longer exists and is created again)\n"
            ),
            "{text}"
        );
        let json = plan_json(&plan);
        let rc = json["resource_changes"].as_array().unwrap();
        let g3 = rc.iter().find(|c| c["address"] == "nested_guest.g3").unwrap();
        assert_eq!(g3["action_reason"], "create_because_drift");
        assert_eq!(g3["change"]["before"], Value::Null);
        // Without the state before refresh there is no telling why g1 is missing: nothing else moves.
        let plan = super::super::tests::plan_of_config(&conf, &refreshed);
        assert_eq!(plan.counts(), (1, 0, 0, 0));
    }

    fn computed(addr: &str) -> String {
        if addr.starts_with("kvm_host") { "facts" } else { "id" }.to_string()
    }
}
