//! The steps every command shares, in one place so the CLI stays thin: find the configuration, hold
//! the state lock, refresh, plan, check a saved plan is still current, apply while saving state after
//! every resource, and record outputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nestform_config::{Config, Diagnostic, Diagnostics, SourceFile, VarInputs};
use nestform_provider::Backends;
use nestform_state::{OutputState, State, StateError, StateLock, StateStore};
use nestform_types::{KvmHostSpec, ResourceAddr, ResourceSpec};

use crate::hosts::Hosts;
use crate::plan::Plan;
use crate::planner::{self, PlanInput, PlanOptions};

/// The default state file name, in the working directory.
pub const DEFAULT_STATE_FILE: &str = "nestform.state.json";

/// What can stop a command before or after the engine's own work.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Problems in the configuration or the plan, all of them.
    #[error("{0}")]
    Diagnostics(Diagnostics),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the saved plan `{path}` is stale: {reason}")]
    StalePlan { path: PathBuf, reason: String },
    #[error("cannot read the plan file `{path}`: {message}")]
    PlanFile { path: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
}

impl From<Diagnostics> for EngineError {
    fn from(d: Diagnostics) -> Self {
        EngineError::Diagnostics(d)
    }
}

/// A directory of `*.nf.hcl` files and its state file.
pub struct Workdir {
    dir: PathBuf,
    store: StateStore,
    /// The lineage a state not saved yet gets, the same every time this command asks: plan and apply
    /// in one command must agree on it, since every object apply creates carries the plan's lineage
    /// and the state file is saved with the state's. Two lineages would leave the objects of an
    /// interrupted first apply unrecognisable as this state's orphans.
    fresh_lineage: std::sync::OnceLock<String>,
}

/// A plan with what was learned while making it.
pub struct Planned {
    pub plan: Plan,
    /// Connections opened while refreshing, reused by apply.
    pub hosts: Hosts,
    /// Configuration and planner warnings, and hosts that could not be refreshed.
    pub warnings: Diagnostics,
}

impl Workdir {
    /// `state` overrides the default `nestform.state.json` in `dir`.
    pub fn new(dir: impl Into<PathBuf>, state: Option<PathBuf>) -> Self {
        let dir = dir.into();
        let path = state.unwrap_or_else(|| dir.join(DEFAULT_STATE_FILE));
        Workdir { dir, store: StateStore::new(path), fresh_lineage: std::sync::OnceLock::new() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Takes the state lock for `operation`; a second command on the same state is refused.
    pub fn lock(&self, operation: &str) -> Result<StateLock, EngineError> {
        Ok(self.store.lock(operation)?)
    }

    /// The recorded state, or a new empty one (with the same lineage each time it is asked for).
    pub fn state(&self) -> Result<State, EngineError> {
        Ok(self.store.load()?.unwrap_or_else(|| State {
            lineage: self.fresh_lineage.get_or_init(|| State::new().lineage).clone(),
            ..State::new()
        }))
    }

    pub fn config(&self, vars: &VarInputs) -> Result<Config, EngineError> {
        Ok(nestform_config::load_dir(&self.dir, vars)?)
    }

    /// The dependency graph of the configuration and the recorded state, across every level.
    pub fn graph(&self, vars: &VarInputs) -> Result<crate::graph::ResourceGraph, EngineError> {
        let config = self.config(vars)?;
        crate::graph::ResourceGraph::build(&config, &self.state()?).map_err(EngineError::Diagnostics)
    }

    /// The configuration, checked without contacting anything: every problem of the files, and of
    /// the graph they make (cycles across resources are only found there).
    pub fn validate(&self, vars: &VarInputs) -> Result<Config, EngineError> {
        let config = self.config(vars)?;
        crate::graph::ResourceGraph::build(&config, &State::default()).map_err(EngineError::Diagnostics)?;
        Ok(config)
    }

    /// Refreshes (unless `refresh` is false) and plans. The caller holds the lock.
    pub fn plan(
        &self,
        config: &Config,
        backends: Backends,
        options: PlanOptions,
        refresh: bool,
    ) -> Result<Planned, EngineError> {
        let recorded = self.state()?;
        let hosts = Hosts::new(backends);
        let boot = Some(hosts.boot());
        let mut warnings = config.warnings.clone();
        let hypervisors;
        let planned = if refresh {
            let configured: BTreeMap<ResourceAddr, KvmHostSpec> = config
                .resources
                .values()
                .filter_map(|r| match &r.spec {
                    ResourceSpec::KvmHost(h) => Some((r.addr.clone(), h.clone())),
                    _ => None,
                })
                .collect();
            let going = crate::refresh::going(&recorded, &options);
            let refreshed = crate::refresh::refresh_sparing(&configured, &recorded, &hosts, &going);
            for w in &refreshed.warnings {
                warnings.push(Diagnostic::warning(w.clone()));
            }
            hypervisors = hosts.all();
            let input = PlanInput {
                config,
                state: &refreshed.state,
                facts: &refreshed.facts,
                hypervisors: &hypervisors,
                options,
                boot,
            };
            // With the state as it was recorded, the plan can tell what changed outside nestform.
            planner::plan_after_refresh(input, &recorded)?
        } else {
            hypervisors = BTreeMap::new();
            let facts = BTreeMap::new();
            let input = PlanInput {
                config,
                state: &recorded,
                facts: &facts,
                hypervisors: &hypervisors,
                options,
                boot,
            };
            planner::plan_with_warnings(input)?
        };
        warnings.extend(planned.warnings);
        Ok(Planned { plan: planned.plan, hosts, warnings })
    }

    /// Drops from `state` what refresh found gone before the plan was made: a resource in state that
    /// the (untargeted) plan does not mention at all no longer exists on its host.
    pub fn prune_to_plan(plan: &Plan, mut state: State) -> State {
        if plan.targets.is_empty() {
            let planned: std::collections::BTreeSet<&ResourceAddr> =
                plan.changes.iter().map(|c| &c.addr).collect();
            state.resources.retain(|addr, _| planned.contains(addr));
        }
        state
    }

    /// Refuses a saved plan made against another state than the one recorded now. A state never saved
    /// takes the plan's lineage, which the objects the plan creates carry.
    pub fn check_current(&self, plan: &Plan, plan_path: &Path) -> Result<State, EngineError> {
        let mut state = self.state()?;
        let stale = |reason: String| EngineError::StalePlan { path: plan_path.to_path_buf(), reason };
        if plan.state_serial == 0 && state.serial == 0 {
            state.lineage = plan.lineage.clone();
        }
        if state.lineage != plan.lineage {
            return Err(stale(format!(
                "it was made for state lineage `{}`, the state now has `{}`; run `nestform plan` again",
                plan.lineage, state.lineage
            )));
        }
        if state.serial != plan.state_serial {
            return Err(stale(format!(
                "the state changed after the plan was made (serial {} then, {} now); run `nestform plan` again",
                plan.state_serial, state.serial
            )));
        }
        Ok(state)
    }

    /// Evaluates the outputs against the state after apply, exactly as the plan's configuration says,
    /// and records the known ones in `state`.
    pub fn record_outputs(plan: &Plan, state: &mut State) -> Result<(), EngineError> {
        let config = config_of_plan(plan)?;
        let attrs: BTreeMap<ResourceAddr, serde_json::Value> =
            state.resources.iter().map(|(a, r)| (a.clone(), r.attributes.clone())).collect();
        let values = config.evaluate_outputs(&attrs)?;
        state.outputs.clear();
        if plan.destroy {
            return Ok(());
        }
        for (name, value) in values {
            if let nestform_config::OutputValue::Known(value) = value {
                let sensitive = config.outputs.get(&name).is_some_and(|o| o.sensitive);
                state.outputs.insert(name, OutputState { value, sensitive });
            }
        }
        Ok(())
    }
}

/// The configuration a plan was made from, evaluated again with the plan's variable values.
pub fn config_of_plan(plan: &Plan) -> Result<Config, EngineError> {
    let files = plan
        .sources
        .iter()
        .map(|(name, text)| SourceFile { name: name.clone(), text: text.clone() })
        .collect();
    let vars = VarInputs {
        cli: plan.variables.iter().map(|(k, v)| (k.clone(), var_text(v))).collect(),
        files: Vec::new(),
    };
    Ok(nestform_config::load_sources(files, &vars)?)
}

/// A variable's value as `-var` text: strings as they are, everything else as JSON (which `-var`
/// reads as an HCL expression).
fn var_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads a plan saved with `plan -out`.
pub fn read_plan_file(path: &Path) -> Result<Plan, EngineError> {
    let err = |message: String| EngineError::PlanFile { path: path.to_path_buf(), message };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let plan: Plan = serde_json::from_slice(&bytes)
        .map_err(|e| err(format!("{e}; was it written by `nestform plan -out`?")))?;
    if plan.format_version != crate::plan::PLAN_FORMAT_VERSION {
        return Err(err(format!(
            "plan format {} is not the {} this nestform reads; make the plan again with this version",
            plan.format_version,
            crate::plan::PLAN_FORMAT_VERSION
        )));
    }
    Ok(plan)
}

/// Writes a plan for `apply PLANFILE`, atomically.
pub fn write_plan_file(path: &Path, plan: &Plan) -> Result<(), EngineError> {
    let err = |message: String| EngineError::PlanFile { path: path.to_path_buf(), message };
    let bytes = serde_json::to_vec_pretty(plan).map_err(|e| err(e.to_string()))?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(e.to_string()))?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(|e| err(e.to_string()))?;
    tmp.persist(path).map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(lineage: &str, serial: u64) -> Plan {
        Plan {
            format_version: crate::plan::PLAN_FORMAT_VERSION,
            lineage: lineage.into(),
            state_serial: serial,
            destroy: false,
            sources: Vec::new(),
            variables: BTreeMap::new(),
            targets: Vec::new(),
            replace: Vec::new(),
            changes: Vec::new(),
            output_changes: BTreeMap::new(),
            hosts: BTreeMap::new(),
        }
    }

    #[test]
    fn a_state_not_saved_yet_keeps_one_lineage_and_takes_a_saved_plans() {
        let dir = tempfile::tempdir().unwrap();
        let workdir = Workdir::new(dir.path(), None);
        // Plan and apply in one command read the state twice; both must see one lineage.
        let (first, second) = (workdir.state().unwrap(), workdir.state().unwrap());
        assert_eq!(first.lineage, second.lineage);
        assert_eq!(first.serial, 0);
        // A plan saved by another command has its own lineage, which the objects it creates carry.
        let state = workdir.check_current(&plan_of("from-the-plan", 0), Path::new("p")).unwrap();
        assert_eq!(state.lineage, "from-the-plan");
        // Once saved, the recorded lineage rules.
        let mut saved = first.clone();
        workdir.store().save(&mut saved).unwrap();
        assert_eq!(Workdir::new(dir.path(), None).state().unwrap().lineage, first.lineage);
        let err = workdir.check_current(&plan_of("other", 1), Path::new("p")).unwrap_err();
        assert!(err.to_string().contains("lineage `other`"), "{err}");
    }
}
