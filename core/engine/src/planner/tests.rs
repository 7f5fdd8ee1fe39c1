//! Planner scenarios: whole plans from hand-built configurations and states.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use nestform_provider::{
    GuestRequest, GuestStatus, HostFacts, Hypervisor, NetworkRequest, NetworkStatus, OwnedObject,
    ProviderError,
};
use nestform_state::{ResourceState, State};
use nestform_types::*;
use serde_json::{json, Value};

use super::changes::{plan_changes, Failure};
use super::{Inputs, PlanOptions, Problem};
use crate::graph::{DesiredResource, GraphProblem};
use crate::plan::{Action, ChangeReason, Effect, ResourceChange};

/// A configuration written by hand: address, spec, explicit `depends_on`.
#[derive(Clone, Default)]
pub(crate) struct Conf(pub Vec<(ResourceAddr, ResourceSpec, BTreeSet<ResourceAddr>)>);

pub(crate) fn addr(s: &str) -> ResourceAddr {
    s.parse().unwrap()
}

impl Conf {
    pub fn add(mut self, a: &str, spec: ResourceSpec) -> Self {
        self.0.push((addr(a), spec, BTreeSet::new()));
        self
    }
    pub fn host(self, name: &str) -> Self {
        let spec = KvmHostSpec {
            uri: Some("test:///default".into()),
            guest: None,
            nested: true,
            kvm_module_options: BTreeMap::new(),
        };
        self.add(&format!("kvm_host.{name}"), ResourceSpec::KvmHost(spec))
    }
    pub fn promoted(self, name: &str, guest: &str) -> Self {
        let spec = KvmHostSpec {
            uri: None,
            guest: Some(addr(guest)),
            nested: true,
            kvm_module_options: BTreeMap::new(),
        };
        self.add(&format!("kvm_host.{name}"), ResourceSpec::KvmHost(spec))
    }
    pub fn network(self, name: &str, host: &str) -> Self {
        let spec = NatNetworkSpec {
            host: addr(host),
            name: name.into(),
            cidr: "192.168.100.0/24".parse().unwrap(),
            dhcp: None,
            domain: None,
        };
        self.add(&format!("nat_network.{name}"), ResourceSpec::NatNetwork(spec))
    }
    pub fn guest(self, name: &str, host: &str) -> Self {
        self.add(&format!("nested_guest.{name}"), ResourceSpec::NestedGuest(guest_spec(name, host)))
    }
    pub fn edit_guest(mut self, name: &str, f: impl Fn(&mut NestedGuestSpec)) -> Self {
        let a = addr(&format!("nested_guest.{name}"));
        for (x, spec, _) in &mut self.0 {
            if *x == a {
                let ResourceSpec::NestedGuest(g) = spec else { panic!("not a guest") };
                f(g);
            }
        }
        self
    }
    pub fn without(mut self, a: &str) -> Self {
        self.0.retain(|(x, ..)| *x != addr(a));
        self
    }
    pub fn depends(mut self, a: &str, on: &str) -> Self {
        for (x, _, deps) in &mut self.0 {
            if *x == addr(a) {
                deps.insert(addr(on));
            }
        }
        self
    }
    /// The configuration as the loader would hand it over (no sources, no outputs).
    pub fn config(&self) -> nestform_config::Config {
        let file = Arc::new(nestform_config::SourceFile::new("test.nf.hcl", ""));
        let range = nestform_config::SourceRange::new(&file, 0..0);
        let resources = self.0.iter().map(|(a, spec, deps)| {
            let rc = nestform_config::ResourceConfig {
                addr: a.clone(),
                spec: spec.clone(),
                range: range.clone(),
                attr_ranges: BTreeMap::new(),
                depends_on: deps.clone(),
            };
            (a.clone(), rc)
        });
        nestform_config::Config { resources: resources.collect(), ..Default::default() }
    }
    pub fn desired(&self) -> Vec<DesiredResource<'_>> {
        self.0.iter().map(|(a, s, d)| DesiredResource { addr: a, spec: s, depends_on: d }).collect()
    }

    /// The state after applying this configuration: every resource with its computed attributes.
    pub fn applied(&self) -> State {
        let mut state = State::new();
        state.lineage = "test-lineage".into();
        let plan = run(self, &state, &BTreeMap::new(), PlanOptions::default()).unwrap();
        for c in plan {
            let mut attrs = c.spec.as_ref().unwrap().attributes();
            for k in &c.after_unknown {
                attrs.insert(k.clone(), json!(format!("{k}-of-{}", c.addr.name)));
            }
            state.resources.insert(
                c.addr.clone(),
                ResourceState {
                    id: Some(format!("id-{}", c.addr.name)),
                    host: c.host.clone(),
                    level: c.level,
                    attributes: Value::Object(attrs),
                    dependencies: c.depends_on.clone(),
                    tainted: false,
                },
            );
        }
        state
    }
}

pub(crate) fn guest_spec(name: &str, host: &str) -> NestedGuestSpec {
    NestedGuestSpec {
        host: addr(host),
        name: name.into(),
        vcpus: 1,
        memory: ByteSize::mib(512),
        cpu: default_cpu(),
        disks: vec![DiskSpec {
            name: "root".into(),
            size: ByteSize::gib(8),
            format: DiskFormat::Qcow2,
            preallocation: Preallocation::Off,
            cache: DiskCache::Unsafe,
            bus: DiskBus::Virtio,
        }],
        networks: vec![],
        running: true,
        install: None,
    }
}

/// Three levels: `g1` on `l0`, `g2` on `l1` (promoted `g1`), `g3` on `l2` (promoted `g2`).
pub(crate) fn three_levels() -> Conf {
    Conf::default()
        .host("l0")
        .network("lan", "kvm_host.l0")
        .guest("g1", "kvm_host.l0")
        .edit_guest("g1", |g| {
            g.networks.push(InterfaceSpec {
                name: "eth0".into(),
                nat_network: addr("nat_network.lan"),
                mac: None,
            })
        })
        .promoted("l1", "nested_guest.g1")
        .guest("g2", "kvm_host.l1")
        .promoted("l2", "nested_guest.g2")
        .guest("g3", "kvm_host.l2")
}

pub(crate) fn run(
    conf: &Conf,
    state: &State,
    facts: &BTreeMap<ResourceAddr, HostFacts>,
    options: PlanOptions,
) -> Result<Vec<ResourceChange>, Failure> {
    run_with(conf, state, facts, &BTreeMap::new(), options).map(|(c, _)| c)
}

pub(crate) fn run_with(
    conf: &Conf,
    state: &State,
    facts: &BTreeMap<ResourceAddr, HostFacts>,
    hypervisors: &BTreeMap<ResourceAddr, Arc<dyn Hypervisor>>,
    options: PlanOptions,
) -> Result<(Vec<ResourceChange>, Vec<Problem>), Failure> {
    let inputs = Inputs { state, recorded: None, facts, hypervisors, options: &options, boot: None };
    plan_changes(&conf.desired(), &inputs)
}

fn summary(changes: &[ResourceChange]) -> Vec<(String, Action, bool)> {
    changes.iter().map(|c| (c.addr.to_string(), c.action, c.restart)).collect()
}

fn find<'a>(changes: &'a [ResourceChange], a: &str) -> &'a ResourceChange {
    changes.iter().find(|c| c.addr == addr(a)).unwrap_or_else(|| panic!("no change for {a}"))
}

fn no_facts() -> BTreeMap<ResourceAddr, HostFacts> {
    BTreeMap::new()
}

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

/// A hypervisor that only renders definitions, as a short XML, for plans that show domain diffs.
pub(crate) struct XmlOnly;

impl Hypervisor for XmlOnly {
    fn uri(&self) -> &str {
        "test:///default"
    }
    fn facts(&self) -> Result<HostFacts, ProviderError> {
        Err(ProviderError::Unsupported("facts".into()))
    }
    fn list_owned(&self) -> Result<Vec<OwnedObject>, ProviderError> {
        Err(ProviderError::Unsupported("list_owned".into()))
    }
    fn read_network(&self, _: &str) -> Result<Option<NetworkStatus>, ProviderError> {
        Err(ProviderError::Unsupported("read_network".into()))
    }
    fn create_network(&self, _: &NetworkRequest, _: &Owner) -> Result<NetworkStatus, ProviderError> {
        Err(ProviderError::Unsupported("create_network".into()))
    }
    fn delete_network(&self, _: &str) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported("delete_network".into()))
    }
    fn read_guest(&self, _: &str) -> Result<Option<GuestStatus>, ProviderError> {
        Err(ProviderError::Unsupported("read_guest".into()))
    }
    fn create_guest(&self, _: &GuestRequest, _: &Owner) -> Result<GuestStatus, ProviderError> {
        Err(ProviderError::Unsupported("create_guest".into()))
    }
    fn update_guest(&self, _: &str, _: &GuestRequest, _: &Owner) -> Result<GuestStatus, ProviderError> {
        Err(ProviderError::Unsupported("update_guest".into()))
    }
    fn start_guest(&self, _: &str) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported("start_guest".into()))
    }
    fn stop_guest(&self, _: &str, _: std::time::Duration) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported("stop_guest".into()))
    }
    fn delete_guest(&self, _: &str) -> Result<(), ProviderError> {
        Err(ProviderError::Unsupported("delete_guest".into()))
    }
    fn guest_definition(&self, req: &GuestRequest, owner: &Owner) -> String {
        let mut xml = format!("<domain type='qemu'>\n  <name>{}</name>\n", req.name);
        xml += &format!("  <metadata>{}</metadata>\n", owner.to_xml());
        xml += &format!(
            "  <memory unit='KiB'>{}</memory>\n  <vcpu>{}</vcpu>\n",
            req.memory_bytes >> 10,
            req.vcpus
        );
        for d in &req.disks {
            xml += &format!("  <disk name='{}' bytes='{}'/>\n", d.name, d.size_bytes);
        }
        for i in &req.interfaces {
            xml += &format!("  <interface network='{}'/>\n", i.network);
        }
        xml + "</domain>\n"
    }
}

pub(crate) fn xml_hypervisors() -> BTreeMap<ResourceAddr, Arc<dyn Hypervisor>> {
    [(addr("kvm_host.l0"), Arc::new(XmlOnly) as Arc<dyn Hypervisor>)].into()
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

/// The whole plan of `conf` against `state`, through the public entry point.
pub(crate) fn plan_of_config(conf: &Conf, state: &State) -> crate::plan::Plan {
    let config = conf.config();
    let (facts, hypervisors) = (BTreeMap::new(), BTreeMap::new());
    let options = PlanOptions::default();
    let input = super::PlanInput {
        config: &config,
        state,
        facts: &facts,
        hypervisors: &hypervisors,
        options,
        boot: None,
    };
    super::plan(input).unwrap()
}

/// A whole plan around `changes`, for render tests.
pub(crate) fn plan_of(changes: Vec<ResourceChange>) -> crate::plan::Plan {
    crate::plan::Plan {
        format_version: crate::plan::PLAN_FORMAT_VERSION,
        lineage: "test-lineage".into(),
        state_serial: 1,
        destroy: false,
        sources: Vec::new(),
        variables: BTreeMap::new(),
        targets: Vec::new(),
        replace: Vec::new(),
        changes,
        output_changes: BTreeMap::new(),
        hosts: BTreeMap::new(),
    }
}

#[test]
fn benchmarks_of_a_replaced_target_are_replaced() {
    let bench = |targets: &[&str]| {
        ResourceSpec::Benchmark(BenchmarkSpec {
            kind: BenchmarkKind::Boot,
            targets: targets.iter().map(|t| addr(t)).collect(),
            size: None,
            iterations: None,
            repeat: 1,
        })
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
