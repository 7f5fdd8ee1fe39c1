//! Planner scenarios: whole plans from hand-built configurations and states.
//!
//! This module holds the shared builders ([`Conf`], [`three_levels`], [`run`], a hypervisor that
//! only renders XML, whole plans for render tests), which other modules' tests use too; the
//! scenarios are grouped by topic in its submodules.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use nestform_provider::{
    GuestRequest, GuestStatus, HostFacts, Hypervisor, NetworkRequest, NetworkStatus, Owned, ProviderError,
};
use nestform_state::{ResourceState, State};
use nestform_types::*;
use serde_json::{json, Value};

use super::changes::{plan_changes, Failure};
use super::{Inputs, PlanOptions, Problem};
use crate::graph::DesiredResource;
use crate::plan::{Action, ResourceChange};

mod actions;
mod cascades;
mod options;
mod problems;

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
                timeouts: Default::default(),
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

/// A hypervisor that only renders definitions, as a short XML, for plans that show domain diffs.
pub(crate) struct XmlOnly;

impl Hypervisor for XmlOnly {
    fn uri(&self) -> &str {
        "test:///default"
    }
    fn facts(&self) -> Result<HostFacts, ProviderError> {
        Err(ProviderError::Unsupported("facts".into()))
    }
    fn list_owned(&self) -> Result<Owned, ProviderError> {
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
