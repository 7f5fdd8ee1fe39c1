//! How long planning takes for 1,000, 4,000 and 10,000 guests spread over hosts and networks, with
//! one guest in fifty promoted to a hypervisor that runs guests of its own.
//!
//! Plain `std::time::Instant` (no harness): `cargo bench -p nestform-engine --bench plan`. Prints
//! `plan N guests: X ms` for a plan from an empty state (everything created), and for a plan against
//! the applied state where one guest in a hundred has more memory (restarts that cascade inward).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use nestform_config::{Config, ResourceConfig, SourceFile, SourceRange};
use nestform_engine::graph::ResourceGraph;
use nestform_engine::plan::{Action, Plan};
use nestform_engine::planner::{plan, PlanInput, PlanOptions};
use nestform_state::{ResourceState, State};
use nestform_types::*;

/// Guests per level-0 host.
const PER_HOST: usize = 100;

fn config(guests: usize, bigger_every: Option<usize>) -> Config {
    let file = Arc::new(SourceFile::new("bench.nf.hcl", ""));
    let range = SourceRange::new(&file, 0..0);
    let mut resources = BTreeMap::new();
    let mut add = |addr: ResourceAddr, spec: ResourceSpec| {
        let rc = ResourceConfig {
            addr: addr.clone(),
            spec,
            range: range.clone(),
            attr_ranges: BTreeMap::new(),
            depends_on: BTreeSet::new(),
        };
        resources.insert(addr, rc);
    };
    let hosts = guests.div_ceil(PER_HOST);
    for h in 0..hosts {
        let host = ResourceAddr::new(ResourceType::KvmHost, format!("h{h}"));
        let spec = KvmHostSpec {
            uri: Some(format!("test:///h{h}")),
            guest: None,
            nested: true,
            kvm_module_options: BTreeMap::new(),
        };
        add(host.clone(), ResourceSpec::KvmHost(spec));
        let net = ResourceAddr::new(ResourceType::NatNetwork, format!("n{h}"));
        let spec = NatNetworkSpec {
            host: host.clone(),
            name: format!("n{h}"),
            cidr: format!("10.{}.{}.0/24", h / 256, h % 256).parse().unwrap(),
            dhcp: None,
            domain: None,
        };
        add(net, ResourceSpec::NatNetwork(spec));
    }
    for g in 0..guests {
        let h = g % hosts;
        // One guest in fifty runs on the promoted host of the guest before it, one level deeper.
        let host = if g % 50 == 49 {
            ResourceAddr::new(ResourceType::KvmHost, format!("p{}", g - 1))
        } else {
            ResourceAddr::new(ResourceType::KvmHost, format!("h{h}"))
        };
        let networks = if g % 50 == 49 {
            Vec::new()
        } else {
            let nat_network = ResourceAddr::new(ResourceType::NatNetwork, format!("n{h}"));
            vec![InterfaceSpec { name: "eth0".into(), nat_network, mac: None }]
        };
        let memory = match bigger_every {
            Some(n) if g % n == 0 || g % n == 48 => ByteSize::gib(1),
            _ => ByteSize::mib(512),
        };
        let spec = NestedGuestSpec {
            host,
            name: format!("g{g}"),
            vcpus: 1,
            memory,
            cpu: default_cpu(),
            disks: vec![DiskSpec {
                name: "root".into(),
                size: ByteSize::gib(8),
                format: DiskFormat::Qcow2,
                preallocation: Preallocation::Off,
                cache: DiskCache::Unsafe,
                bus: DiskBus::Virtio,
            }],
            networks,
            running: true,
            install: None,
        };
        add(ResourceAddr::new(ResourceType::NestedGuest, format!("g{g}")), ResourceSpec::NestedGuest(spec));
        if g % 50 == 48 {
            let spec = KvmHostSpec {
                uri: None,
                guest: Some(ResourceAddr::new(ResourceType::NestedGuest, format!("g{g}"))),
                nested: true,
                kvm_module_options: BTreeMap::new(),
            };
            add(ResourceAddr::new(ResourceType::KvmHost, format!("p{g}")), ResourceSpec::KvmHost(spec));
        }
    }
    Config { sources: vec![file], resources, ..Default::default() }
}

fn run(config: &Config, state: &State) -> (Plan, f64) {
    let (facts, hypervisors) = (BTreeMap::new(), BTreeMap::new());
    let input = PlanInput {
        config,
        state,
        facts: &facts,
        hypervisors: &hypervisors,
        options: PlanOptions::default(),
    };
    let start = Instant::now();
    let plan = plan(input).expect("the benchmark configuration plans");
    (plan, start.elapsed().as_secs_f64() * 1000.0)
}

/// The state after applying `plan`, with the attributes a provider would compute.
fn applied(plan: &Plan) -> State {
    let mut state = State::new();
    for c in &plan.changes {
        let mut attrs = c.after.clone().unwrap();
        for k in &c.after_unknown {
            attrs[k.as_str()] = serde_json::json!(format!("{k}-{}", c.addr.name));
        }
        let rs = ResourceState {
            id: Some(format!("id-{}", c.addr)),
            host: c.host.clone(),
            level: c.level,
            attributes: attrs,
            dependencies: c.depends_on.clone(),
            tainted: false,
        };
        state.resources.insert(c.addr.clone(), rs);
    }
    state
}

fn main() {
    for guests in [1_000, 4_000, 10_000] {
        let (created, ms) = run(&config(guests, None), &State::new());
        assert!(created.changes.iter().all(|c| c.action == Action::Create));
        println!("plan {guests} guests: {ms:.1} ms ({} resources created)", created.changes.len());

        let state = applied(&created);
        let unchanged = config(guests, None);
        let start = Instant::now();
        let graph = ResourceGraph::build(&unchanged, &state).expect("the graph builds");
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        println!("graph {guests} guests: {ms:.1} ms ({} nodes)", graph.len());

        let (changed, ms) = run(&config(guests, Some(100)), &state);
        let (_, updates, _, _) = changed.counts();
        println!("plan {guests} guests: {ms:.1} ms (against state: {updates} to change)");
    }
}
