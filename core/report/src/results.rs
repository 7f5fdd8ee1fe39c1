//! What the report reads from a state: each benchmark with a row per target (its level, how that
//! level runs, its summary) and every sample, and the runs those samples came from.
//!
//! The rows are the ones `nestform report` prints as text (by level, then target; the level is
//! the target's in the state), read again here so that this crate needs no engine.

use std::collections::BTreeMap;

use nestform_state::State;
use nestform_types::bench::{Sample, Summary};
use nestform_types::ResourceType;
use serde_json::Value;

/// One benchmark resource and what it measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Benchmark {
    /// `benchmark.sha256`, as samples name it in `metadata.benchmark`.
    pub addr: String,
    /// `sha256`, as the text table names it.
    pub name: String,
    /// `boot`, `shell_loop`, `sha256`, `block_read`, `network`.
    pub kind: String,
    /// Recorded tainted: some target failed, or the benchmark must run again.
    pub tainted: bool,
    /// By level, then target.
    pub rows: Vec<Row>,
    /// Every measured run, in the order they ran.
    pub samples: Vec<Sample>,
}

/// One target's results.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub target: String,
    pub level: u32,
    /// How the target's own host runs it (`kvm`, `tcg`); none for a level-0 target, which runs on
    /// the machine itself.
    pub acceleration: Option<String>,
    pub summary: Summary,
}

impl Benchmark {
    /// The samples measured on `target`.
    pub fn samples_of<'a>(&'a self, target: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| meta_str(s, "target") == Some(target))
    }

    /// Whether the rows are a network's: keyed `SERVER -> CLIENT`.
    pub fn is_matrix(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r.target.contains(" -> "))
    }
}

/// Every benchmark in `state` that has results, in address order.
pub fn benchmarks(state: &State) -> Vec<Benchmark> {
    let mut out = Vec::new();
    for (addr, r) in state.resources.iter().filter(|(a, _)| a.ty == ResourceType::Benchmark) {
        let samples: Vec<Sample> = r
            .attributes
            .get("samples")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| serde_json::from_value(s.clone()).ok()).collect())
            .unwrap_or_default();
        let results = r.attributes.get("results").and_then(Value::as_object);
        let mut rows: Vec<Row> = results
            .into_iter()
            .flatten()
            .filter_map(|(target, summary)| {
                let summary = serde_json::from_value::<Summary>(summary.clone()).ok()?;
                let mine = || samples.iter().filter(|s| meta_str(s, "target") == Some(target.as_str()));
                let level = target
                    .parse()
                    .ok()
                    .and_then(|t| state.resources.get(&t))
                    .map(|t| t.level)
                    .or_else(|| mine().find_map(|s| s.metadata.get("level")?.as_u64()).map(|l| l as u32))
                    .unwrap_or_default();
                let acceleration = mine().find_map(|s| {
                    s.metadata.get("hosts")?.get(0)?.get("acceleration")?.as_str().map(String::from)
                });
                Some(Row { target: target.clone(), level, acceleration, summary })
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        rows.sort_by(|a, b| (a.level, &a.target).cmp(&(b.level, &b.target)));
        out.push(Benchmark {
            addr: addr.to_string(),
            name: addr.name.clone() + &addr.key.as_ref().map(|k| k.to_string()).unwrap_or_default(),
            kind: r.attributes.get("kind").and_then(Value::as_str).unwrap_or_default().to_string(),
            tainted: r.tainted,
            rows,
            samples,
        });
    }
    out
}

/// One apply's benchmark runs (samples sharing a `run_id`).
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// Empty for samples recorded without one.
    pub id: String,
    /// The first and last sample's timestamps.
    pub first: f64,
    pub last: f64,
    pub benchmarks: usize,
    pub samples: usize,
    /// The host chains the targets ran on, each from level 0 up, with no chain that is only the
    /// start of another.
    pub chains: Vec<Vec<Host>>,
}

/// One host of a chain, as a sample recorded it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Host {
    pub host: String,
    pub level: u64,
    /// How it runs its guests: `kvm` or `tcg`.
    pub acceleration: Option<String>,
    pub qemu_version: Option<String>,
}

/// The runs of every benchmark, by when they started.
pub fn runs(benchmarks: &[Benchmark]) -> Vec<Run> {
    let mut by_id: BTreeMap<String, (Run, Vec<&str>)> = BTreeMap::new();
    for b in benchmarks {
        for s in &b.samples {
            let id = meta_str(s, "run_id").unwrap_or_default().to_string();
            let (run, names) = by_id.entry(id.clone()).or_insert_with(|| {
                let run = Run {
                    id,
                    first: s.timestamp,
                    last: s.timestamp,
                    benchmarks: 0,
                    samples: 0,
                    chains: Vec::new(),
                };
                (run, Vec::new())
            });
            run.first = run.first.min(s.timestamp);
            run.last = run.last.max(s.timestamp);
            run.samples += 1;
            if !names.contains(&b.addr.as_str()) {
                names.push(&b.addr);
                run.benchmarks += 1;
            }
            let chain = chain(s);
            if !chain.is_empty() && !run.chains.contains(&chain) {
                run.chains.push(chain);
            }
        }
    }
    let mut runs: Vec<Run> = by_id
        .into_values()
        .map(|(mut run, _)| {
            // A chain that starts another one is the same path seen from a shallower target.
            let all = run.chains.clone();
            run.chains.retain(|c| !all.iter().any(|o| o.len() > c.len() && o.starts_with(c)));
            run.chains.sort_by(|a, b| (b.len(), a).cmp(&(a.len(), b)));
            run
        })
        .collect();
    runs.sort_by(|a, b| a.first.total_cmp(&b.first).then_with(|| a.id.cmp(&b.id)));
    runs
}

/// The hosts under a sample's target, from level 0 up.
fn chain(s: &Sample) -> Vec<Host> {
    let hosts = s.metadata.get("hosts").and_then(Value::as_array);
    let text = |v: &Value, key: &str| match v.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    let mut chain: Vec<Host> = hosts
        .into_iter()
        .flatten()
        .map(|h| Host {
            host: text(h, "host").unwrap_or_default(),
            level: h.get("level").and_then(Value::as_u64).unwrap_or_default(),
            acceleration: text(h, "acceleration"),
            qemu_version: text(h, "qemu_version"),
        })
        .collect();
    chain.reverse();
    chain
}

/// A string in a sample's metadata.
pub fn meta_str<'a>(s: &'a Sample, key: &str) -> Option<&'a str> {
    s.metadata.get(key).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nestform_state::ResourceState;
    use serde_json::json;

    fn sample(target: &str, run_id: &str, at: f64, hosts: Value) -> Value {
        let level = hosts.as_array().map_or(0, Vec::len) * 7;
        json!({"metric": "shell_loop_time", "value": 1.0, "unit": "s", "timestamp": at,
               "metadata": {"target": target, "run_id": run_id, "hosts": hosts, "level": level}})
    }

    #[test]
    fn rows_come_by_level_with_how_their_level_runs_and_runs_with_their_longest_chains() {
        let l0 = json!({"host": "kvm_host.l0", "level": 0, "acceleration": "kvm", "qemu_version": "9.2.0"});
        let g1 = json!({"host": "kvm_host.g1", "level": 1, "acceleration": "tcg"});
        let summary = serde_json::to_value(Summary::of(&[1.0], "s").unwrap()).unwrap();
        let mut state = State::new();
        state
            .resources
            .insert("nested_guest.a".parse().unwrap(), ResourceState { level: 1, ..Default::default() });
        state.resources.insert(
            "benchmark.loop".parse().unwrap(),
            ResourceState {
                attributes: json!({
                    "kind": "shell_loop",
                    "results": {"nested_guest.b": summary, "nested_guest.a": summary, "kvm_host.l0": summary},
                    "samples": [
                        sample("kvm_host.l0", "r1", 100.0, json!([])),
                        sample("nested_guest.a", "r1", 110.0, json!([l0])),
                        sample("nested_guest.b", "r1", 120.0, json!([g1, l0])),
                        sample("nested_guest.b", "r0", 50.0, json!([g1, l0])),
                    ],
                }),
                tainted: true,
                ..Default::default()
            },
        );
        state.resources.insert("benchmark.empty".parse().unwrap(), ResourceState::default());
        let b = benchmarks(&state);
        assert_eq!(b.len(), 1, "{b:?}");
        let rows: Vec<(&str, u32, Option<&str>)> =
            b[0].rows.iter().map(|r| (r.target.as_str(), r.level, r.acceleration.as_deref())).collect();
        // `nested_guest.a`'s level is the state's; `b` is not in the state, its
        // samples say 14.
        assert_eq!(
            rows,
            [
                ("kvm_host.l0", 0, None),
                ("nested_guest.a", 1, Some("kvm")),
                ("nested_guest.b", 14, Some("tcg"))
            ]
        );
        assert_eq!((b[0].name.as_str(), b[0].kind.as_str(), b[0].tainted), ("loop", "shell_loop", true));
        assert_eq!(b[0].samples_of("nested_guest.b").count(), 2);
        assert!(!b[0].is_matrix());

        let runs = runs(&b);
        assert_eq!(runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["r0", "r1"]);
        let r1 = &runs[1];
        assert_eq!((r1.first, r1.last, r1.samples, r1.benchmarks), (100.0, 120.0, 3, 1));
        let hosts: Vec<Vec<&str>> =
            r1.chains.iter().map(|c| c.iter().map(|h| h.host.as_str()).collect()).collect();
        assert_eq!(hosts, [["kvm_host.l0", "kvm_host.g1"]]);
        assert_eq!(r1.chains[0][0].qemu_version.as_deref(), Some("9.2.0"));
    }
}
