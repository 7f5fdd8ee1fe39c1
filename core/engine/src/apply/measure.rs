//! Running a benchmark: on each of its targets in turn, through the target's agent (a guest's, or
//! the controller's own machine for a level-0 host), by the runners behind
//! [`Benchmarks`](nestform_provider::Benchmarks). Every measured run becomes a [`Sample`] with
//! where it ran (the host chain down to level 0, each level's acceleration and versions), and each
//! target's runs a [`Summary`] with its ratio to the level below on the same path.
//!
//! A target that fails does not stop the others: the benchmark is recorded with what it measured,
//! tainted (the next plan runs it again), and the error names every failed target and why.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nestform_provider::{AgentWait, BenchRun, GuestAgent};
use nestform_state::State;
use nestform_types::bench::{Sample, Summary};
use nestform_types::{BenchmarkSpec, ResourceAddr, ResourceType};
use serde_json::{json, Value};

use super::exec::{Context, StateUpdate};
use super::ops::{HostKind, View};
use super::ApplyError;
use crate::agent;
use crate::plan::ResourceChange;

/// How long a target's agent gets to answer when a benchmark starts (it answered before: the
/// target is up).
const AGENT_WAIT: Duration = Duration::from_secs(120);

impl Context {
    /// Runs the benchmark of `c` on every target, `now` being the state as the apply left it so far.
    pub(crate) fn measure(
        &self,
        c: &ResourceChange,
        spec: &BenchmarkSpec,
        now: &State,
    ) -> Result<StateUpdate, (StateUpdate, ApplyError)> {
        let view = View::with_index(&self.plan, now, &self.index);
        let run_id = self.run_id.clone();
        let mut samples: Vec<Sample> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        for target in &spec.targets {
            match self.measure_one(&view, c, spec, target, now, &run_id) {
                Ok(mut s) => samples.append(&mut s),
                Err(why) => {
                    tracing::warn!(benchmark = %c.addr, %target, %why, "benchmark failed on a target");
                    failed.push(format!("on `{target}`: {why}"));
                }
            }
        }
        let results = results(&samples, &view);
        let computed =
            [("results", results), ("samples", serde_json::to_value(&samples).unwrap_or_default())];
        let mut update = self.put(c, run_id, &computed);
        if failed.is_empty() {
            return Ok(update);
        }
        if let StateUpdate::Put(_, r) = &mut update {
            r.tainted = true;
        }
        Err((update, ApplyError::Measure(failed.join("; "))))
    }

    fn measure_one(
        &self,
        view: &View<'_>,
        c: &ResourceChange,
        spec: &BenchmarkSpec,
        target: &ResourceAddr,
        now: &State,
        run_id: &str,
    ) -> Result<Vec<Sample>, String> {
        let (machine, level) = machine_of(view, target, now)?;
        let recorded = machine.as_ref().and_then(|g| now.resources.get(g)).map(|r| r.attributes.clone());
        let recorded = recorded.unwrap_or(Value::Null);
        let agent: Arc<dyn GuestAgent> = match &machine {
            None => {
                self.hosts.backends().bench.controller().map_err(|e| nestform_provider::error_chain(&*e))?
            }
            Some(guest) => self.agent_of(view, guest, now).map_err(|e| e.chain())?,
        };
        let run = BenchRun {
            benchmark: &c.addr.to_string(),
            spec,
            target: &target.to_string(),
            level,
            recorded: &recorded,
        };
        let measured = self
            .hosts
            .backends()
            .bench
            .run(&run, &*agent)
            .map_err(|e| nestform_provider::error_chain(&*e))?;
        let common = metadata(c, spec, target, level, &recorded, &chain(view, target, now), run_id);
        Ok(measured
            .into_iter()
            .map(|m| {
                let mut metadata = common.clone();
                metadata.extend(m.metadata);
                Sample { metric: m.metric, value: m.value, unit: m.unit, timestamp: unix_now(), metadata }
            })
            .collect())
    }

    /// The agent of guest `guest`, found on its host.
    fn agent_of(
        &self,
        view: &View<'_>,
        guest: &ResourceAddr,
        now: &State,
    ) -> Result<Arc<dyn GuestAgent>, nestform_provider::AgentError> {
        let unreachable =
            |source| nestform_provider::AgentError::Unreachable { guest: guest.to_string(), source };
        let h = self.host(view, guest, true).map_err(unreachable)?;
        let (id, name) = self
            .hosts
            .guest(guest)
            .or_else(|| {
                let r = now.resources.get(guest)?;
                Some((r.id.clone()?, r.attributes.get("name")?.as_str()?.to_string()))
            })
            .ok_or_else(|| {
                unreachable(nestform_provider::ProviderError::op(
                    "find",
                    guest.to_string(),
                    "state has no id for it",
                ))
            })?;
        agent::wait_for_agent(&self.hosts, &*h, &id, &name, AgentWait::at_most(AGENT_WAIT))
    }
}

/// The machine a target is: the guest whose agent measures it (a promoted host is the guest it
/// promotes), or `None` for a level-0 host (the controller); with its nesting level.
fn machine_of(
    view: &View<'_>,
    target: &ResourceAddr,
    now: &State,
) -> Result<(Option<ResourceAddr>, u32), String> {
    let level = |g: &ResourceAddr| now.resources.get(g).map_or(0, |r| r.level);
    match target.ty {
        ResourceType::NestedGuest => Ok((Some(target.clone()), level(target))),
        ResourceType::KvmHost => match view.host_kind(target, true) {
            Some(HostKind::Uri(_)) => Ok((None, 0)),
            Some(HostKind::Promoted(g)) => Ok((Some(g.clone()), level(&g))),
            None => Err("it has neither `uri` nor `guest`".into()),
        },
        _ => Err("only a `kvm_host` or a `nested_guest` can be measured".into()),
    }
}

/// The machines under `target`, from its own host down to level 0: each level's host, its
/// acceleration and versions, as state recorded them.
fn chain(view: &View<'_>, target: &ResourceAddr, now: &State) -> Vec<Value> {
    let mut levels = Vec::new();
    let mut at = match target.ty {
        ResourceType::KvmHost => match view.host_kind(target, true) {
            Some(HostKind::Promoted(g)) => view.host_of(&g, true),
            _ => None,
        },
        _ => view.host_of(target, true),
    };
    for _ in 0..32 {
        let Some(host) = at else { break };
        let r = now.resources.get(&host);
        let facts = r.and_then(|r| r.attributes.get("facts")).cloned().unwrap_or(Value::Null);
        levels.push(json!({
            "host": host.to_string(),
            "level": r.map_or(0, |r| r.level),
            "acceleration": facts.get("acceleration"),
            "hypervisor": facts.get("hypervisor"),
            "qemu_version": facts.get("qemu_version"),
            "libvirt_version": facts.get("libvirt_version"),
            "cpu_vendor": facts.get("cpu_vendor"),
        }));
        at = match view.host_kind(&host, true) {
            Some(HostKind::Promoted(g)) => view.host_of(&g, true),
            _ => None,
        };
    }
    levels
}

/// What every sample of one benchmark on one target carries.
fn metadata(
    c: &ResourceChange,
    spec: &BenchmarkSpec,
    target: &ResourceAddr,
    level: u32,
    recorded: &Value,
    chain: &[Value],
    run_id: &str,
) -> BTreeMap<String, Value> {
    let disk_cache = recorded.pointer("/disks/0/cache").cloned();
    let mut m = BTreeMap::from([
        ("benchmark".to_string(), json!(c.addr.to_string())),
        ("kind".to_string(), json!(spec.kind.as_str())),
        ("target".to_string(), json!(target.to_string())),
        ("level".to_string(), json!(level)),
        ("hosts".to_string(), json!(chain)),
        ("run_id".to_string(), json!(run_id)),
        ("nestform_version".to_string(), json!(env!("CARGO_PKG_VERSION"))),
        ("warmup".to_string(), json!(spec.warmup)),
    ]);
    for (key, value) in [
        ("vcpus", recorded.get("vcpus").cloned()),
        ("memory", recorded.get("memory").cloned()),
        ("kernel", recorded.get("kernel").cloned()),
        ("disk_cache", disk_cache),
    ] {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            m.insert(key.to_string(), v);
        }
    }
    m
}

/// `results`: per target, the summary of its runs, with its ratio to the target one level down on
/// the same path when that one is measured too.
fn results(samples: &[Sample], view: &View<'_>) -> Value {
    let mut by_target: BTreeMap<String, (String, Vec<f64>)> = BTreeMap::new();
    for s in samples {
        let target = s.metadata.get("target").and_then(Value::as_str).unwrap_or_default().to_string();
        let entry = by_target.entry(target).or_insert_with(|| (s.unit.clone(), Vec::new()));
        entry.1.push(s.value);
    }
    let mut summaries: BTreeMap<String, Summary> = by_target
        .iter()
        .filter_map(|(t, (unit, values))| Some((t.clone(), Summary::of(values, unit)?)))
        .collect();
    let medians: BTreeMap<String, f64> = summaries.iter().map(|(t, s)| (t.clone(), s.median)).collect();
    for (target, summary) in &mut summaries {
        let Ok(addr) = target.parse::<ResourceAddr>() else { continue };
        let below = below(view, &addr).into_iter().find_map(|b| medians.get(&b.to_string()).copied());
        summary.vs_below = below.filter(|b| *b > 0.0).map(|b| summary.median / b);
    }
    serde_json::to_value(summaries).unwrap_or_default()
}

/// The addresses of the machine one level down from `target` on its path: its host (and the guest
/// that host promotes, the same machine). A level-0 host has none.
fn below(view: &View<'_>, target: &ResourceAddr) -> Vec<ResourceAddr> {
    let guest = match target.ty {
        ResourceType::KvmHost => match view.host_kind(target, true) {
            Some(HostKind::Promoted(g)) => g,
            _ => return vec![],
        },
        _ => target.clone(),
    };
    let Some(host) = view.host_of(&guest, true) else { return vec![] };
    let mut machine = vec![host.clone()];
    if let Some(HostKind::Promoted(g)) = view.host_kind(&host, true) {
        machine.push(g);
    }
    machine
}

/// The run id of an apply that starts now: its lineage's first characters and the time.
pub(crate) fn run_id(lineage: &str) -> String {
    let prefix: String = lineage.chars().take(8).collect();
    format!("{prefix}-{}", unix_now() as u64)
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
