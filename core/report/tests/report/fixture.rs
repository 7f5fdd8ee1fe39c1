//! States to write reports of: the benchmarks an `inception`-like configuration records, with
//! the figures one run on a 2-core machine without KVM measured (every level emulated).

use std::collections::BTreeMap;

use nestform_state::{ResourceState, State};
use nestform_types::bench::{Sample, Summary};
use serde_json::{json, Value};

pub const START: f64 = 1_760_000_000.0;
pub const RUN_ID: &str = "3f2a9c1e-1760000000";

/// A target: its address, level, and the hosts under it from its own host down to level 0.
pub struct Target {
    pub addr: &'static str,
    pub level: u32,
    pub hosts: Vec<Value>,
}

fn host(addr: &str, level: u32, acceleration: &str) -> Value {
    json!({"host": addr, "level": level, "acceleration": acceleration, "hypervisor": "qemu",
           "qemu_version": "7.2.19", "libvirt_version": "9.0.0", "cpu_vendor": "GenuineIntel"})
}

/// Level 0 to 3 on one path: the machine, then a guest of each level promoted to a host.
pub fn targets() -> Vec<Target> {
    let l0 = host("kvm_host.l0", 0, "tcg");
    let h1 = host("kvm_host.guest1", 1, "tcg");
    let h2 = host("kvm_host.guest2", 2, "tcg");
    vec![
        Target { addr: "kvm_host.l0", level: 0, hosts: vec![] },
        Target { addr: "nested_guest.guest1", level: 1, hosts: vec![l0.clone()] },
        Target { addr: "nested_guest.guest2", level: 2, hosts: vec![h1.clone(), l0.clone()] },
        Target { addr: r#"nested_guest.node["a"]"#, level: 3, hosts: vec![h2, h1, l0] },
    ]
}

/// A benchmark resource of `kind` whose runs on each target are `values[i]`, with its samples'
/// `metric` and extra metadata, and each target's summary with its ratio to the level below.
pub fn benchmark(
    kind: &str,
    metric: &str,
    unit: &str,
    extra: Value,
    values: &[(&Target, Vec<f64>)],
) -> ResourceState {
    let mut samples = Vec::new();
    let mut at = START;
    let mut results: BTreeMap<String, Summary> = BTreeMap::new();
    let mut below: Option<f64> = None;
    for (t, runs) in values {
        for (i, v) in runs.iter().enumerate() {
            at += v + 0.4;
            let mut metadata: BTreeMap<String, Value> = BTreeMap::from([
                ("benchmark".into(), json!(format!("benchmark.{kind}"))),
                ("kind".into(), json!(kind)),
                ("target".into(), json!(t.addr)),
                ("level".into(), json!(t.level)),
                ("run".into(), json!(i + 1)),
                ("run_id".into(), json!(RUN_ID)),
                ("hosts".into(), json!(t.hosts)),
                ("vcpus".into(), json!(1)),
                ("memory".into(), json!(if t.level == 0 { 24 << 30 } else { 2u64 << 30 >> t.level })),
                ("loadavg_1m".into(), json!(0.42)),
                ("steal_ticks".into(), json!(0)),
            ]);
            if let Some(extra) = extra.as_object() {
                metadata.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            samples.push(Sample {
                metric: metric.into(),
                value: *v,
                unit: unit.into(),
                timestamp: at,
                metadata,
            });
        }
        let mut s = Summary::of(runs, unit).unwrap();
        s.vs_below = below.map(|b| s.median / b);
        below = Some(s.median);
        results.insert(t.addr.to_string(), s);
    }
    ResourceState {
        attributes: json!({"kind": kind, "results": results, "samples": samples}),
        dependencies: values.iter().map(|(t, _)| t.addr.parse().unwrap()).collect(),
        ..Default::default()
    }
}

/// The targets as resources, and `shell_loop`, `sha256` and `boot` benchmarks on them.
pub fn state() -> State {
    let t = targets();
    let mut state = State::new();
    state.serial = 7;
    for target in &t {
        state.resources.insert(
            target.addr.parse().unwrap(),
            ResourceState { level: target.level, ..Default::default() },
        );
    }
    let shell = benchmark(
        "shell_loop",
        "shell_loop_time",
        "s",
        json!({"iterations": 100000, "shell": "bash"}),
        &[
            (&t[0], vec![0.21, 0.2, 0.19, 0.2, 0.22]),
            (&t[1], vec![1.82, 1.8, 1.75, 1.9, 1.79]),
            (&t[2], vec![2.3, 2.41, 2.28, 2.35, 2.26]),
            (&t[3], vec![17.6, 18.9, 17.2, 17.5, 19.4]),
        ],
    );
    let sha = benchmark(
        "sha256",
        "sha256_time",
        "s",
        json!({"size_bytes": 8u64 << 20}),
        &[
            (&t[0], vec![0.031, 0.029, 0.03, 0.033, 0.03]),
            (&t[1], vec![0.92, 0.88, 0.95, 0.9, 1.04]),
            (&t[2], vec![1.21, 1.19, 1.35, 1.22, 1.2]),
            (&t[3], vec![9.5, 10.2, 9.1, 9.8, 12.6]),
        ],
    );
    let boot = benchmark(
        "boot",
        "boot_time",
        "s",
        json!({}),
        &[(&t[1], vec![38.2]), (&t[2], vec![95.4]), (&t[3], vec![612.0])],
    );
    state.resources.insert("benchmark.shell_loop".parse().unwrap(), shell);
    state.resources.insert("benchmark.sha256".parse().unwrap(), sha);
    state.resources.insert("benchmark.boot".parse().unwrap(), boot);
    state
}

/// How many samples and result rows `state` holds.
pub fn counts(state: &State) -> (usize, usize) {
    let benchmarks = state.resources.values().filter(|r| r.attributes.get("results").is_some());
    benchmarks.fold((0, 0), |(s, r), b| {
        (
            s + b.attributes["samples"].as_array().unwrap().len(),
            r + b.attributes["results"].as_object().unwrap().len(),
        )
    })
}
