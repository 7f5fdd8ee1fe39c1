//! How long planning takes for 1,000, 4,000 and 10,000 guests spread over hosts and networks, with
//! one guest in fifty promoted to a hypervisor that runs guests of its own.
//!
//! Plain `std::time::Instant` (no harness): `cargo bench -p nestform-engine --bench plan`. Each case is
//! planned several times (`NESTFORM_BENCH_RUNS`, default 9) and printed as the minimum and median in
//! milliseconds, so one slow run on a shared machine does not decide the figure (the first run is
//! printed in parentheses). Each run plans into fresh memory, as one CLI invocation does (see
//! `measure`):
//!
//! - `empty`: from an empty state, everything is created;
//! - `existing`: against the state that applying the first plan leaves, nothing to do;
//! - `1% changed`: against that state, one guest in a hundred has more memory; each of those runs a
//!   promoted host, so its restart cascades into the guest nested inside it (2% of guests change).
//!
//! Refresh is not part of a plan and not measured.

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

fn config(guests: usize, changed: bool) -> Config {
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
            timeouts: Default::default(),
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
        // Guest 48 of each hundred is promoted (see below): its change cascades into guest 49.
        let memory = if changed && g % 100 == 48 { ByteSize::gib(1) } else { ByteSize::mib(512) };
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

fn plan_once(config: &Config, state: &State) -> (Plan, f64) {
    let (facts, hypervisors) = (BTreeMap::new(), BTreeMap::new());
    let input = PlanInput {
        config,
        state,
        facts: &facts,
        hypervisors: &hypervisors,
        options: PlanOptions::default(),
        boot: None,
    };
    let start = Instant::now();
    let plan = plan(input).expect("the benchmark configuration plans");
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    (plan, ms)
}

/// Plans `runs` times; the last plan, and the minimum, median and first time in milliseconds.
///
/// Every plan is kept until all runs are done, so each run plans into memory the process has not
/// used yet, as one CLI invocation does (and pays for the pages it touches). Dropping each plan
/// before the next run measured the allocator instead: glibc hands the freed pages back and faults
/// them in again, or keeps them, depending on how the previous run's frees fell.
fn measure(config: &Config, state: &State, runs: usize) -> (Plan, [f64; 3]) {
    let mut times: Vec<f64> = Vec::with_capacity(runs);
    let mut plans = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (plan, ms) = plan_once(config, state);
        times.push(ms);
        plans.push(plan);
    }
    if std::env::var_os("NESTFORM_BENCH_VERBOSE").is_some() {
        println!("  runs: {times:.1?}");
    }
    let first = times[0];
    times.sort_by(f64::total_cmp);
    (plans.pop().expect("at least one run"), [times[0], times[times.len() / 2], first])
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

fn figures([min, median, first]: [f64; 3]) -> String {
    format!("{min:6.1} / {median:6.1} ({first:6.1}) ms")
}

fn main() {
    let runs: usize = std::env::var("NESTFORM_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(9);
    let runs = runs.max(1);
    println!("{runs} runs per case; min / median (first) in ms");
    // `NESTFORM_BENCH_GUESTS=10000` measures one size only (for a profiler); `NESTFORM_BENCH_VERBOSE=1`
    // prints every run.
    let sizes: Vec<usize> = match std::env::var("NESTFORM_BENCH_GUESTS").ok().and_then(|g| g.parse().ok()) {
        Some(n) => vec![n],
        None => vec![1_000, 4_000, 10_000],
    };
    for guests in sizes {
        let unchanged = config(guests, false);
        let (created, t) = measure(&unchanged, &State::new(), runs);
        assert!(created.changes.iter().all(|c| c.action == Action::Create));
        let n = created.changes.len();
        println!("plan {guests:>6} guests, empty:      {} ({n} resources created)", figures(t));

        let state = applied(&created);
        let (same, t) = measure(&unchanged, &state, runs);
        assert!(same.changes.iter().all(|c| c.action == Action::NoOp));
        println!("plan {guests:>6} guests, existing:   {} (no changes)", figures(t));

        let (changed, t) = measure(&config(guests, true), &state, runs);
        let (add, change, replace, destroy) = changed.counts();
        assert_eq!((add, change, replace, destroy), (0, guests / 50, 0, 0));
        println!("plan {guests:>6} guests, 1% changed: {} ({change} to change)", figures(t));

        let start = Instant::now();
        let graph = ResourceGraph::build(&unchanged, &state).expect("the graph builds");
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        println!("graph {guests:>5} guests:             {ms:6.1} ms ({} nodes)", graph.len());
    }
}
