//! Orphans: objects a host holds with this state's lineage that the state does not record.
//!
//! An apply stopped between libvirt creating an object and the state writer saving it (a SIGKILL, a
//! machine going down) leaves one behind: the journal saves a change only after its operation
//! returns. Every object nestform creates carries its owner (lineage and address) in its libvirt
//! metadata, so refresh lists the owned objects of every host it reaches ([`survey`]) and adopts each
//! orphan ([`adopt`]): recorded at its owner address, on that host, tainted (Terraform's mark of an
//! interrupted create), with what the host reports of it. The planner then replaces it, or destroys it
//! when it is no longer configured, through the id found, and says why (`ChangeReason::Orphan`).
//!
//! Objects of another lineage belong to another state (another working directory on the same host):
//! they are never touched, and the plan warns about them in one line per host.

use std::collections::{BTreeSet, HashSet};

use nestform_provider::{Hypervisor, ObjectKind, OwnedObject};
use nestform_state::{ResourceState, State};
use nestform_types::{ByteSize, ResourceAddr, ResourceType};
use serde_json::{json, Value};

use super::{read_one, Read, ToRead};

/// Tries at listing a host's owned objects.
const LIST_TRIES: usize = 3;

/// Foreign objects named in a warning at most; the rest are counted.
const FOREIGN_NAMES_SHOWN: usize = 3;

/// What one host holds that nestform's metadata claims, sorted for [`adopt`].
#[derive(Default)]
pub(super) struct Survey {
    /// This state's objects that it does not record, networks first, each with what the host reports.
    orphans: Vec<Orphan>,
    /// Objects of this lineage that cannot be adopted, and why.
    unusable: Vec<String>,
    /// Names of the objects other states own.
    foreign: Vec<String>,
    /// How many other states those belong to.
    foreign_lineages: usize,
}

struct Orphan {
    addr: ResourceAddr,
    object: OwnedObject,
    read: Read,
}

/// The ids `state` records, which are not orphans wherever they are found.
pub(super) fn known_ids(state: &State) -> HashSet<&str> {
    state.resources.values().filter_map(|r| r.id.as_deref()).collect()
}

/// Lists what `host` owns and reads each orphan of `lineage` (an object whose id is not in `known`).
/// Blocking: runs on the host's refresh thread.
pub(super) fn survey(host: &dyn Hypervisor, lineage: &str, known: &HashSet<&str>) -> Result<Survey, String> {
    // Listing reads every object, and on a host shared with other states one may go away between the
    // list and its read, which fails the whole list: another try sees the host without it.
    let owned = (1..LIST_TRIES)
        .fold(host.list_owned(), |listed, _| listed.or_else(|_| host.list_owned()))
        .map_err(|e| e.to_string())?;
    let mut survey = Survey::default();
    let mut lineages = BTreeSet::new();
    for object in owned.unreadable {
        let what = match object.kind {
            ObjectKind::Network => "network",
            ObjectKind::Guest => "domain",
        };
        survey.unusable.push(format!(
            "the {what} `{}` ({}) carries nestform's metadata but its definition cannot be read ({}); \
             it is left alone: look at it with `virsh {}dumpxml {}` and remove it by hand if nothing uses it",
            object.name,
            object.id,
            object.reason,
            if object.kind == ObjectKind::Network { "net-" } else { "" },
            object.name
        ));
    }
    for object in owned.objects {
        if object.owner.lineage != lineage {
            lineages.insert(object.owner.lineage.clone());
            survey.foreign.push(object.name);
            continue;
        }
        if known.contains(object.id.as_str()) {
            continue;
        }
        let ty = match object.kind {
            ObjectKind::Guest => ResourceType::NestedGuest,
            ObjectKind::Network => ResourceType::NatNetwork,
        };
        let addr = match object.owner.address.parse::<ResourceAddr>() {
            Ok(addr) if addr.ty == ty => addr,
            _ => {
                survey.unusable.push(format!(
                    "`{}` carries this state's lineage but the address `{}`, which is not a {}; it is left alone",
                    object.name,
                    object.owner.address,
                    ty.as_str()
                ));
                continue;
            }
        };
        let read = read_one(host, &ToRead { addr: addr.clone(), ty, id: object.id.clone() });
        survey.orphans.push(Orphan { addr, object, read });
    }
    survey.foreign_lineages = lineages.len();
    survey.foreign.sort();
    // Networks first, so the guests adopted after them can depend on them.
    survey.orphans.sort_by_key(|o| (o.object.kind != ObjectKind::Network, o.addr.clone()));
    Ok(survey)
}

/// Records the orphans `survey` found on `host` in `state`, tainted, and warns about what it leaves
/// alone.
pub(super) fn adopt(state: &mut State, host: &ResourceAddr, survey: Survey, warnings: &mut Vec<String>) {
    for problem in survey.unusable {
        warnings.push(format!("on `{host}`, {problem}"));
    }
    if !survey.foreign.is_empty() {
        warnings.push(foreign_warning(host, &survey.foreign, survey.foreign_lineages));
    }
    let host_level = state.resources.get(host).map_or(0, |r| r.level);
    for Orphan { addr, object, read } in survey.orphans {
        match state.resources.get(&addr) {
            // Seen already through another `kvm_host` with the same URI.
            Some(r) if r.id.as_deref() == Some(object.id.as_str()) => continue,
            Some(r) => {
                warnings.push(format!(
                    "`{}` on `{host}` carries this state's lineage and the address `{addr}`, which the state \
                     records with the id `{}`; it is left alone (delete it by hand if nothing uses it)",
                    object.name,
                    r.id.as_deref().unwrap_or("none")
                ));
                continue;
            }
            None => {}
        }
        let mut attributes = json!({ "id": object.id, "host": host.to_string(), "name": object.name });
        let mut dependencies = BTreeSet::from([host.clone()]);
        let level = match object.kind {
            ObjectKind::Guest => host_level + 1,
            ObjectKind::Network => host_level,
        };
        match read {
            // Deleted since it was listed: nothing to adopt.
            Read::Gone => continue,
            Read::Guest(g) => {
                attributes["vcpus"] = g.vcpus.into();
                attributes["memory"] = ByteSize(g.memory_bytes).to_string().into();
                attributes["running"] = g.running.into();
                dependencies.extend(networks_named(state, host, &g.interfaces));
            }
            Read::Network(n) => {
                if let Some(bridge) = n.bridge {
                    attributes["bridge"] = bridge.into();
                }
            }
            // Its id is all a replace or a delete needs; what else it is stays unknown.
            Read::Failed(e) => warnings.push(format!(
                "`{addr}` was found on `{host}` but missing from the state, and cannot be read: {e}"
            )),
        }
        let adopted = ResourceState {
            id: Some(object.id),
            host: Some(host.clone()),
            level,
            attributes,
            dependencies,
            tainted: true,
        };
        state.resources.insert(addr, adopted);
    }
}

/// The `nat_network`s on `host` in `state` whose libvirt name is one of `names`: what a guest with
/// interfaces on those networks stands on, so it is deleted first.
fn networks_named(state: &State, host: &ResourceAddr, names: &[String]) -> Vec<ResourceAddr> {
    state
        .resources
        .iter()
        .filter(|(a, r)| a.ty == ResourceType::NatNetwork && r.host.as_ref() == Some(host))
        .filter(|(_, r)| {
            r.attributes.get("name").and_then(Value::as_str).is_some_and(|n| names.iter().any(|i| i == n))
        })
        .map(|(a, _)| a.clone())
        .collect()
}

/// One line about the objects of other states on `host`.
fn foreign_warning(host: &ResourceAddr, names: &[String], lineages: usize) -> String {
    let shown: Vec<String> = names.iter().take(FOREIGN_NAMES_SHOWN).map(|n| format!("`{n}`")).collect();
    let more = match names.len().saturating_sub(FOREIGN_NAMES_SHOWN) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    let states = if lineages == 1 {
        "another nestform state".to_string()
    } else {
        format!("{lineages} other nestform states")
    };
    format!("`{host}` holds {} object(s) of {states}, left alone: {}{more}", names.len(), shown.join(", "))
}

/// The warning for a host whose owned objects could not be listed.
pub(super) fn unlisted(host: &ResourceAddr, error: &str) -> String {
    format!("cannot list what nestform owns on `{host}`, so orphans there stay unknown: {error}")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use nestform_provider::GuestRequest;
    use nestform_provider_memory::MemoryProvider;
    use nestform_types::{KvmHostSpec, Owner, ResourceSpec};
    use serde_json::json;

    use super::*;
    use crate::apply::{apply, ApplyOptions, StateChange, StateSink};
    use crate::hosts::Hosts;
    use crate::plan::{Action, ChangeReason, Plan};
    use crate::planner::tests::{addr, guest_spec, Conf};
    use crate::planner::{plan_after_refresh, PlanInput, PlanOptions};
    use crate::request::guest_request;

    /// The URI of `Conf::host`; the memory provider makes it a host of its own.
    pub(crate) const L0: &str = "test:///default";

    /// A host, a network and three guests, `c` on the network.
    fn lab() -> Conf {
        Conf::default()
            .host("l0")
            .network("lan", "kvm_host.l0")
            .guest("a", "kvm_host.l0")
            .guest("b", "kvm_host.l0")
            .guest("c", "kvm_host.l0")
            .edit_guest("c", |g| {
                g.networks.push(nestform_types::InterfaceSpec {
                    name: "eth0".into(),
                    nat_network: addr("nat_network.lan"),
                    mac: None,
                })
            })
    }

    /// Refreshes `recorded` and plans `conf` against it, as `nestform plan` does in a new process.
    pub(crate) fn plan(conf: &Conf, recorded: &State, hosts: &Hosts, destroy: bool) -> (Plan, Vec<String>) {
        plan_with(conf, recorded, hosts, PlanOptions { destroy, ..Default::default() })
    }

    /// [`plan`] with every option, refreshing as `nestform plan` does (sparing what the options delete).
    pub(crate) fn plan_with(
        conf: &Conf,
        recorded: &State,
        hosts: &Hosts,
        options: PlanOptions,
    ) -> (Plan, Vec<String>) {
        let config = conf.config();
        let configured: BTreeMap<ResourceAddr, KvmHostSpec> = config
            .resources
            .iter()
            .filter_map(|(a, r)| match &r.spec {
                ResourceSpec::KvmHost(h) => Some((a.clone(), h.clone())),
                _ => None,
            })
            .collect();
        let going = crate::refresh::going(recorded, &options);
        let refreshed = crate::refresh::refresh_sparing(&configured, recorded, hosts, &going);
        let hypervisors = hosts.all();
        let input = PlanInput {
            config: &config,
            state: &refreshed.state,
            facts: &refreshed.facts,
            hypervisors: &hypervisors,
            options,
            boot: None,
        };
        (plan_after_refresh(input, recorded).unwrap().plan, refreshed.warnings)
    }

    /// The state file of a process that is killed once it has to save `dies_at`: what it saved before
    /// stays, nothing after.
    struct KilledAt {
        dies_at: ResourceAddr,
        dead: AtomicBool,
        disk: Mutex<State>,
    }

    impl StateSink for KilledAt {
        fn persist(&self, changes: &[StateChange]) -> Result<(), nestform_provider::BoxError> {
            if self.dead.load(Ordering::SeqCst) || changes.iter().any(|(a, _)| *a == self.dies_at) {
                self.dead.store(true, Ordering::SeqCst);
                return Err("killed".into());
            }
            let mut disk = self.disk.lock().unwrap();
            for (a, r) in changes {
                match r {
                    Some(r) => disk.resources.insert(a.clone(), r.clone()),
                    None => disk.resources.remove(a),
                };
            }
            Ok(())
        }
    }

    /// Applies `plan` to `state` and returns the state saved, with the sink killed at `dies_at` (or
    /// never).
    pub(crate) async fn run_apply(plan: &Plan, state: State, hosts: &Hosts, dies_at: Option<&str>) -> State {
        let dies_at = addr(dies_at.unwrap_or("nested_guest.never"));
        let sink =
            Arc::new(KilledAt { dies_at, dead: AtomicBool::new(false), disk: Mutex::new(state.clone()) });
        let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
        let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut opts = ApplyOptions::new(cancel, events);
        opts.parallelism = 1;
        let state = crate::workdir::Workdir::prune_to_plan(plan, state);
        let outcome = apply(plan, state, hosts, opts, sink.clone()).await;
        for (a, e) in &outcome.errors {
            eprintln!("apply: `{a}`: {}", nestform_provider::error_chain(e));
        }
        let disk = sink.disk.lock().unwrap().clone();
        disk
    }

    /// A new process's connections to the same hosts.
    pub(crate) fn hosts(provider: &MemoryProvider) -> Hosts {
        Hosts::new(provider.backends())
    }

    pub(crate) fn find<'a>(plan: &'a Plan, a: &str) -> &'a crate::plan::ResourceChange {
        plan.changes.iter().find(|c| c.addr == addr(a)).unwrap_or_else(|| panic!("no change for `{a}`"))
    }

    /// Every object of `lineage` on `uri`, by owner address, with its id.
    fn owned(provider: &MemoryProvider, uri: &str, lineage: &str) -> Vec<(String, String)> {
        let h = hosts(provider).connect_uri(&addr("kvm_host.any"), uri).unwrap();
        let mut all: Vec<(String, String)> = h
            .list_owned()
            .unwrap()
            .objects
            .into_iter()
            .filter(|o| o.owner.lineage == lineage)
            .map(|o| (o.owner.address, o.id))
            .collect();
        all.sort();
        all
    }

    /// The state saved by a first apply of [`lab`] killed when it had to save `dies_at`.
    async fn first_apply_killed_at(provider: &MemoryProvider, dies_at: &str) -> State {
        let fresh = State::new();
        let (first, _) = plan(&lab(), &fresh, &hosts(provider), false);
        run_apply(&first, fresh, &hosts(provider), Some(dies_at)).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_apply_killed_half_way_converges_on_the_next() {
        let provider = MemoryProvider::new();
        let conf = lab();
        let disk = first_apply_killed_at(&provider, "nested_guest.b").await;
        // `b` exists on the host, with the state's lineage, but the state never heard of it.
        let b = provider.guest(L0, "b").expect("b was created before the kill");
        assert!(!disk.resources.contains_key(&addr("nested_guest.b")));
        assert_eq!(b.owner.as_ref().unwrap().lineage, disk.lineage);

        let (second, warnings) = plan(&conf, &disk, &hosts(&provider), false);
        assert!(warnings.is_empty(), "{warnings:?}");
        let change = find(&second, "nested_guest.b");
        assert_eq!((change.action, change.id.as_deref()), (Action::Replace, Some(b.id.as_str())));
        assert_eq!(change.reasons, [ChangeReason::Orphan]);
        assert_eq!(change.before.as_ref().unwrap()["memory"], "512MiB");
        let text = crate::render::render_plan(&second);
        assert!(
            text.contains(
                "  # nested_guest.b must be replaced (level 1, on kvm_host.l0, KVM)\n  # (because it was found on its \
                 host but is missing from the state: an interrupted apply left it)\n"
            ),
            "{text}"
        );
        let json = crate::render::plan_json(&second);
        let rc = json["resource_changes"].as_array().unwrap();
        let b_json = rc.iter().find(|c| c["address"] == "nested_guest.b").unwrap();
        assert_eq!(b_json["action_reason"], "replace_because_tainted");
        assert_eq!(b_json["nestform"]["reasons"], json!([{"kind": "orphan"}]));

        let saved = run_apply(&second, disk, &hosts(&provider), None).await;
        // One object per address, each the one the state records, and nothing left to do.
        let objects = owned(&provider, L0, &saved.lineage);
        let recorded: Vec<(String, String)> = saved
            .resources
            .iter()
            .filter(|(a, _)| a.ty != ResourceType::KvmHost)
            .map(|(a, r)| (a.to_string(), r.id.clone().unwrap()))
            .collect();
        assert_eq!(objects, recorded);
        assert!(saved.resources.values().all(|r| !r.tainted));
        assert_ne!(provider.guest(L0, "b").unwrap().id, b.id, "the orphan was replaced");
        let (third, warnings) = plan(&conf, &saved, &hosts(&provider), false);
        assert!(third.is_empty() && warnings.is_empty(), "{third:#?} {warnings:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_orphan_no_longer_configured_is_destroyed_by_the_id_found() {
        let provider = MemoryProvider::new();
        let disk = first_apply_killed_at(&provider, "nested_guest.c").await;
        assert!(provider.guest(L0, "c").is_some());

        let conf = lab().without("nested_guest.c");
        let (second, _) = plan(&conf, &disk, &hosts(&provider), false);
        let c = find(&second, "nested_guest.c");
        assert_eq!(c.action, Action::Delete);
        assert_eq!(c.reasons, [ChangeReason::Orphan, ChangeReason::NotInConfig]);
        // It stood on the network: state's dependencies say so, and delete order follows them.
        assert!(c.depends_on.contains(&addr("nat_network.lan")), "{:?}", c.depends_on);
        let saved = run_apply(&second, disk, &hosts(&provider), None).await;
        assert!(provider.guest(L0, "c").is_none());
        assert!(!saved.resources.contains_key(&addr("nested_guest.c")));

        // Destroy takes orphans along too.
        let mut lost = saved.clone();
        lost.resources.remove(&addr("nat_network.lan"));
        let (destroy, _) = plan(&conf, &lost, &hosts(&provider), true);
        let lan = find(&destroy, "nat_network.lan");
        assert_eq!((lan.action, &lan.reasons[..]), (Action::Delete, &[ChangeReason::Orphan][..]));
        run_apply(&destroy, lost, &hosts(&provider), None).await;
        assert!(owned(&provider, L0, &saved.lineage).is_empty());
    }

    /// Creates guest `name` on `h` as if another apply had, owned by `owner`.
    fn create(h: &dyn Hypervisor, name: &str, lineage: &str, address: &str) -> String {
        let req: GuestRequest = guest_request(&guest_spec(name, "kvm_host.l0"), |_| None);
        let owner = Owner { lineage: lineage.into(), address: address.into() };
        h.create_guest(&req, &owner).unwrap().id
    }

    #[test]
    fn other_states_objects_and_unusable_claims_are_left_alone_with_a_warning() {
        let provider = MemoryProvider::new();
        let conf = Conf::default().host("l0").guest("a", "kvm_host.l0");
        let mut recorded = conf.applied();
        let h = hosts(&provider).connect_uri(&addr("kvm_host.l0"), L0).unwrap();
        let a = create(&*h, "a", &recorded.lineage, "nested_guest.a");
        recorded.resources.get_mut(&addr("nested_guest.a")).unwrap().id = Some(a);
        for name in ["x1", "x2", "x3", "x4"] {
            create(&*h, name, "another-lineage", &format!("nested_guest.{name}"));
        }
        create(&*h, "y", "a-third-lineage", "nested_guest.y");
        create(&*h, "bad", &recorded.lineage, "nat_network.bad");
        create(&*h, "twin", &recorded.lineage, "nested_guest.a");

        let (plan, warnings) = plan(&conf, &recorded, &hosts(&provider), false);
        assert!(plan.is_empty(), "{plan:#?}");
        let a_id = recorded.resources[&addr("nested_guest.a")].id.clone().unwrap();
        let expected = [
            "on `kvm_host.l0`, `bad` carries this state's lineage but the address `nat_network.bad`, which is not \
             a nested_guest; it is left alone"
                .to_string(),
            "`kvm_host.l0` holds 5 object(s) of 2 other nestform states, left alone: `x1`, `x2`, `x3` and 2 more"
                .to_string(),
            format!(
                "`twin` on `kvm_host.l0` carries this state's lineage and the address `nested_guest.a`, which the \
                 state records with the id `{a_id}`; it is left alone (delete it by hand if nothing uses it)"
            ),
        ];
        assert_eq!(warnings, expected);
        assert_eq!(provider.calls(), 8, "nothing was touched: {:?}", provider.call_log());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn orphans_inside_a_promoted_host_are_adopted_at_their_level_and_removed_there() {
        let provider = MemoryProvider::new();
        let conf = Conf::default()
            .host("l0")
            .guest("g1", "kvm_host.l0")
            .promoted("l1", "nested_guest.g1")
            .guest("g2", "kvm_host.l1");
        let mut recorded = conf.applied();
        recorded.resources.remove(&addr("nested_guest.g2"));
        let l0 = hosts(&provider).connect_uri(&addr("kvm_host.l0"), L0).unwrap();
        let g1 = create(&*l0, "g1", &recorded.lineage, "nested_guest.g1");
        recorded.resources.get_mut(&addr("nested_guest.g1")).unwrap().id = Some(g1);
        // The promoted host's libvirt, as the tunnel into `g1` would reach it; `Hosts` finds a
        // promoted host it has connected already without asking the guest's agent.
        let inner_hosts = || {
            let h = hosts(&provider);
            h.connect_uri(&addr("kvm_host.l1"), "memory://l1").unwrap();
            h
        };
        let l1 = inner_hosts().get(&addr("kvm_host.l1")).unwrap();
        let g2 = create(&*l1, "g2", &recorded.lineage, "nested_guest.g2");
        let lan = nestform_provider::NetworkRequest {
            name: "inner-lan".into(),
            address: "10.5.0.1".parse().unwrap(),
            prefix_len: 24,
            dhcp_start: None,
            dhcp_end: None,
            domain: None,
        };
        let owner = Owner { lineage: recorded.lineage.clone(), address: "nat_network.inner".into() };
        let net = l1.create_network(&lan, &owner).unwrap().id;

        let (planned, warnings) = plan(&conf, &recorded, &inner_hosts(), false);
        assert!(warnings.is_empty(), "{warnings:?}");
        let g2_change = find(&planned, "nested_guest.g2");
        assert_eq!(
            (g2_change.action, g2_change.level, g2_change.host.clone(), g2_change.id.clone()),
            (Action::Replace, 2, Some(addr("kvm_host.l1")), Some(g2.clone()))
        );
        assert_eq!(g2_change.reasons, [ChangeReason::Orphan]);
        let net_change = find(&planned, "nat_network.inner");
        assert_eq!((net_change.action, net_change.level), (Action::Delete, 1));
        assert_eq!(net_change.reasons, [ChangeReason::Orphan, ChangeReason::NotInConfig]);
        assert_eq!(find(&planned, "nested_guest.g1").action, Action::NoOp);

        let saved = run_apply(&planned, recorded, &inner_hosts(), None).await;
        let inner = owned(&provider, "memory://l1", &saved.lineage);
        let g2_now = saved.resources[&addr("nested_guest.g2")].id.clone().unwrap();
        assert_eq!(inner, [("nested_guest.g2".to_string(), g2_now.clone())]);
        assert_ne!(g2_now, g2);
        assert!(l1.read_network(&net).unwrap().is_none());
        let (again, _) = plan(&conf, &saved, &inner_hosts(), false);
        assert!(again.is_empty(), "{again:#?}");
    }

    /// A host and network recorded as applied, and on the host a second network of this state at the
    /// same address that the state does not record (its id is returned).
    fn applied_network_with_an_orphan() -> (MemoryProvider, Conf, State, String) {
        let provider = MemoryProvider::new();
        let conf = Conf::default().host("l0").network("lan", "kvm_host.l0");
        let recorded = conf.applied();
        let h = hosts(&provider).connect_uri(&addr("kvm_host.l0"), L0).unwrap();
        let req = crate::request::network_request(match &conf.0[1].1 {
            ResourceSpec::NatNetwork(n) => n,
            _ => unreachable!("the second resource is the network"),
        });
        let owner = Owner { lineage: recorded.lineage.clone(), address: "nat_network.lan".into() };
        let id = h.create_network(&req, &owner).unwrap().id;
        (provider, conf, recorded, id)
    }

    #[test]
    fn a_network_defined_anew_before_the_kill_takes_the_place_of_the_one_gone() {
        // An update of a network's addressing deletes it and defines it again, with a new id; killed
        // before the save, the state still names the old id.
        let (provider, conf, recorded, id) = applied_network_with_an_orphan();
        let (planned, warnings) = plan(&conf, &recorded, &hosts(&provider), false);
        assert!(warnings.is_empty(), "{warnings:?}");
        let lan = find(&planned, "nat_network.lan");
        assert_eq!((lan.action, lan.id.as_deref()), (Action::Replace, Some(id.as_str())));
        assert_eq!(lan.reasons, [ChangeReason::Orphan]);
    }

    #[test]
    fn an_unreadable_object_of_ours_is_warned_about_and_hides_no_orphan() {
        let (provider, conf, recorded, _) = applied_network_with_an_orphan();
        provider.add_unreadable(
            L0,
            nestform_provider::UnreadableObject {
                kind: ObjectKind::Network,
                id: "0e0e".into(),
                name: "odd".into(),
                reason: "parse network `0e0e` failed: Cannot find ';' after '&'".into(),
            },
        );
        let (planned, warnings) = plan(&conf, &recorded, &hosts(&provider), false);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("the network `odd` (0e0e) carries nestform's metadata"),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("virsh net-dumpxml odd"), "{}", warnings[0]);
        // The orphan beside it is still found.
        assert_eq!(find(&planned, "nat_network.lan").reasons, [ChangeReason::Orphan]);
    }
}
