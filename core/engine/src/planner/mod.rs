//! The planner: compares configuration with refreshed state and host facts, and proposes a [`Plan`].
//!
//! Pure and fast: no I/O (the hypervisors are only asked for the domain XML they would write, which
//! is computed, not fetched), and no work quadratic in the number of resources, so that ten thousand
//! guests plan in well under a tenth of a second.
//!
//! - [`classify`]: the table of what each attribute change needs (live, restart, replace) and why.
//! - [`diff`]: before (state) against after (the spec), attribute by attribute; [`same`]: the quick
//!   check that nothing differs, which most resources of a large plan pass.
//! - [`checks`]: guests against their hosts' facts.
//! - [`changes`]: one change per resource in dependency order, cascades into nested guests (and into
//!   benchmarks of replaced targets), `-target`, `-replace`, destroy mode, domain XML.
//! - [`drift`]: changes needed because something changed outside nestform.

mod changes;
mod checks;
mod classify;
mod diff;
pub(crate) mod drift;
mod outputs;
mod same;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use nestform_config::{Config, Diagnostic, Diagnostics};
use nestform_provider::{BootAssets, HostFacts, Hypervisor};
use nestform_state::State;
use nestform_types::ResourceAddr;

use crate::graph::DesiredResource;
use crate::plan::{Plan, PLAN_FORMAT_VERSION};
use changes::Failure;
#[cfg(test)]
pub(crate) use diff::is_configured;

/// How to plan: `-destroy`, `-target`, `-replace`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Destroy everything in state (or, with targets, the targets and what depends on them).
    pub destroy: bool,
    /// Plan only these resources (a block address names all its instances), what they depend on, and
    /// what cascades from them.
    pub targets: Vec<ResourceAddr>,
    /// Replace these even if nothing changed.
    pub replace: Vec<ResourceAddr>,
}

/// Everything a plan is made from.
pub struct PlanInput<'a> {
    pub config: &'a Config,
    /// Refreshed state: attributes as the hosts report them, vanished resources removed.
    pub state: &'a State,
    /// Facts of the hosts that could be reached.
    pub facts: &'a BTreeMap<ResourceAddr, HostFacts>,
    /// Connections to the hosts that could be reached, to render domain XML (nothing is fetched).
    pub hypervisors: &'a BTreeMap<ResourceAddr, Arc<dyn Hypervisor>>,
    pub options: PlanOptions,
    /// What lab guests would boot: its `check` makes a guest that cannot boot (no kernel) a plan
    /// error. `None` leaves that to apply (the planner's own tests).
    pub boot: Option<&'a dyn BootAssets>,
}

/// A plan and the warnings found while making it (overcommitted hosts).
#[derive(Debug)]
pub struct Planned {
    pub plan: Plan,
    pub warnings: Diagnostics,
}

/// Proposes the changes that make the hosts match the configuration. Errors (cycles, references to
/// undeclared resources, guests larger than their host, nesting missing) come back together.
pub fn plan(input: PlanInput<'_>) -> Result<Plan, Diagnostics> {
    plan_with_warnings(input).map(|p| p.plan)
}

/// [`plan`], keeping the warnings.
pub fn plan_with_warnings(input: PlanInput<'_>) -> Result<Planned, Diagnostics> {
    plan_inner(input, None)
}

/// [`plan_with_warnings`] after a refresh, given `recorded`, the state as it was before refresh
/// (`input.state` is the refreshed one). Comparing the two tells drift from a change of configuration:
/// a resource that refresh removed is created again "because it was deleted outside nestform", and a
/// guest reported stopped while both the record and the configuration say running is started "because
/// it was stopped outside nestform" ([`ChangeReason::Drift`](crate::plan::ChangeReason::Drift)).
///
/// A separate function rather than a field of [`PlanInput`], so that every caller that builds a
/// `PlanInput` keeps compiling.
pub fn plan_after_refresh(input: PlanInput<'_>, recorded: &State) -> Result<Planned, Diagnostics> {
    plan_inner(input, Some(recorded))
}

fn plan_inner(input: PlanInput<'_>, recorded: Option<&State>) -> Result<Planned, Diagnostics> {
    let PlanInput { config, state, facts, hypervisors, options, boot } = input;
    let desired: Vec<DesiredResource<'_>> = config
        .resources
        .values()
        .map(|r| DesiredResource { addr: &r.addr, spec: &r.spec, depends_on: &r.depends_on })
        .collect();
    let inputs = Inputs { state, recorded, facts, hypervisors, options: &options, boot };
    let (mut changes, problems) = match changes::plan_changes(&desired, &inputs) {
        Ok(planned) => planned,
        Err(Failure::Graph(problems)) => return Err(crate::graph::diagnostics(config, problems)),
        Err(Failure::Problems(problems)) => return Err(diagnostics(config, problems)),
    };
    // Limits of the operations, not part of what the resource is: never a difference of their own.
    for c in &mut changes {
        if let Some(r) = config.resources.get(&c.addr) {
            c.timeouts = r.timeouts.clone();
        }
    }
    let output_changes = outputs::plan_outputs(config, state, &changes, options.destroy)?;
    let plan = Plan {
        format_version: PLAN_FORMAT_VERSION,
        lineage: state.lineage.clone(),
        state_serial: state.serial,
        destroy: options.destroy,
        sources: config.sources.iter().map(|s| (s.name.clone(), s.text.clone())).collect(),
        variables: config.variables.clone(),
        targets: options.targets,
        replace: options.replace,
        changes,
        output_changes,
        hosts: facts.clone(),
    };
    Ok(Planned { plan, warnings: diagnostics(config, problems) })
}

/// Problems as diagnostics, each pointing at its attribute (or block) in the configuration.
fn diagnostics(config: &Config, problems: Vec<Problem>) -> Diagnostics {
    let mut out = Diagnostics::new();
    for p in problems {
        let mut d = if p.error { Diagnostic::error(p.summary) } else { Diagnostic::warning(p.summary) };
        if let Some(rc) = p.addr.as_ref().and_then(|a| config.resources.get(a)) {
            d = d.with_range(match p.attr {
                Some(attr) => rc.attr_range(attr),
                None => rc.range.clone(),
            });
        }
        if let Some(detail) = p.detail {
            d = d.with_detail(detail);
        }
        if let Some(help) = p.help {
            d = d.with_help(help);
        }
        out.push(d);
    }
    out
}

/// The state, facts and connections a plan is made against; the configuration is passed alongside.
pub(crate) struct Inputs<'a> {
    pub state: &'a State,
    /// The state before refresh, when the caller has it: for telling drift.
    pub recorded: Option<&'a State>,
    pub facts: &'a BTreeMap<ResourceAddr, HostFacts>,
    pub hypervisors: &'a BTreeMap<ResourceAddr, Arc<dyn Hypervisor>>,
    pub options: &'a PlanOptions,
    pub boot: Option<&'a dyn BootAssets>,
}

/// A problem found while planning, pointing at a resource's block or one of its attributes; turned
/// into a diagnostic with the source range once the configuration is at hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub error: bool,
    pub addr: Option<ResourceAddr>,
    pub attr: Option<&'static str>,
    pub summary: String,
    pub detail: Option<String>,
    pub help: Option<String>,
}

impl Problem {
    fn error(addr: &ResourceAddr, attr: &'static str, summary: String, help: String) -> Self {
        Problem {
            error: true,
            addr: Some(addr.clone()),
            attr: Some(attr),
            summary,
            detail: None,
            help: Some(help),
        }
    }

    fn warning(addr: &ResourceAddr, summary: String, detail: String) -> Self {
        Problem {
            error: false,
            addr: Some(addr.clone()),
            attr: None,
            summary,
            detail: Some(detail),
            help: None,
        }
    }
}

#[cfg(test)]
mod config_tests {
    use nestform_config::{load_sources, SourceFile, VarInputs};
    use nestform_state::{OutputState, ResourceState};
    use serde_json::json;

    use super::*;
    use crate::plan::Action;
    use crate::planner::tests::addr;

    const MAIN: &str = r#"
kvm_host "l0" {
  uri    = "test:///default"
  nested = true
}

nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = 4
  memory = "512MiB"
}

output "name" {
  value = nested_guest.g1.name
}

output "id" {
  value = nested_guest.g1.id
}
"#;

    fn load() -> Config {
        load_sources(vec![SourceFile::new("main.nf.hcl", MAIN)], &VarInputs::default()).unwrap()
    }

    fn run(
        config: &Config,
        state: &State,
        facts: &BTreeMap<ResourceAddr, HostFacts>,
    ) -> Result<Plan, Diagnostics> {
        let hypervisors = BTreeMap::new();
        plan(PlanInput {
            config,
            state,
            facts,
            hypervisors: &hypervisors,
            options: PlanOptions::default(),
            boot: None,
        })
    }

    #[test]
    fn plans_a_loaded_configuration_with_outputs() {
        let config = load();
        let plan = run(&config, &State::new(), &BTreeMap::new()).unwrap();
        assert_eq!(plan.sources, [("main.nf.hcl".to_string(), MAIN.to_string())]);
        assert_eq!(plan.counts(), (2, 0, 0, 0));
        let name = &plan.output_changes["name"];
        assert_eq!(
            (name.action, name.after.clone(), name.after_unknown),
            (Action::Create, Some(json!("g1")), false)
        );
        let id = &plan.output_changes["id"];
        assert_eq!((id.action, id.after.clone(), id.after_unknown), (Action::Create, None, true));

        // After apply: every attribute known, outputs recorded; an output no longer configured goes.
        let mut state = State::new();
        for c in &plan.changes {
            let mut attrs = c.after.clone().unwrap();
            for k in &c.after_unknown {
                attrs[k.as_str()] = json!(format!("{k}-1"));
            }
            let rs = ResourceState {
                id: None,
                host: c.host.clone(),
                level: c.level,
                attributes: attrs,
                dependencies: c.depends_on.clone(),
                tainted: false,
            };
            state.resources.insert(c.addr.clone(), rs);
        }
        for (name, value) in [("name", json!("g1")), ("id", json!("id-1")), ("old", json!(1))] {
            state.outputs.insert(name.into(), OutputState { value, sensitive: false });
        }
        let plan = run(&config, &state, &BTreeMap::new()).unwrap();
        assert!(plan.changes.iter().all(|c| c.action == Action::NoOp));
        assert_eq!(plan.output_changes["name"].action, Action::NoOp);
        assert_eq!(plan.output_changes["id"].action, Action::NoOp);
        assert_eq!(plan.output_changes["old"].action, Action::Delete);
        assert!(!plan.is_empty());
    }

    #[test]
    fn host_size_errors_point_at_the_attribute() {
        let config = load();
        let facts = HostFacts { cpus: 2, memory_bytes: 1 << 30, nesting: Some(true), ..Default::default() };
        let err = run(&config, &State::new(), &[(addr("kvm_host.l0"), facts)].into()).unwrap_err();
        assert_eq!(err.len(), 2, "{err}");
        let d = &err.0[0];
        assert!(d.is_error());
        assert_eq!(d.summary, "`nested_guest.g1` asks for 4 vCPUs, but `kvm_host.l0` has 2");
        assert_eq!(d.range.as_ref().unwrap().text(), "4");
        // The second is the overcommit warning, reported along with the error.
        assert!(!err.0[1].is_error());
    }

    #[test]
    fn overcommit_warnings_come_with_the_plan() {
        let config = load();
        let facts = HostFacts { cpus: 4, memory_bytes: 256 << 20, nesting: None, ..Default::default() };
        let hypervisors = BTreeMap::new();
        let facts = [(addr("kvm_host.l0"), facts)].into();
        let input = PlanInput {
            config: &config,
            state: &State::new(),
            facts: &facts,
            hypervisors: &hypervisors,
            options: PlanOptions::default(),
            boot: None,
        };
        // 512MiB on a 256MiB host is an error; make it fit alone but not with a second guest.
        assert!(plan_with_warnings(input).is_err());
        let mut config = config;
        let mut g2 = config.resources[&addr("nested_guest.g1")].clone();
        g2.addr = addr("nested_guest.g2");
        config.resources.insert(g2.addr.clone(), g2);
        for r in config.resources.values_mut() {
            if let nestform_types::ResourceSpec::NestedGuest(g) = &mut r.spec {
                g.memory = nestform_types::ByteSize::mib(200);
                g.vcpus = 2;
            }
        }
        let input = PlanInput {
            config: &config,
            state: &State::new(),
            facts: &facts,
            hypervisors: &hypervisors,
            options: PlanOptions::default(),
            boot: None,
        };
        let planned = plan_with_warnings(input).unwrap();
        assert_eq!(planned.plan.counts(), (3, 0, 0, 0));
        assert_eq!(planned.warnings.len(), 1);
        assert!(planned.warnings.0[0].summary.contains("400MiB of memory together"));
        assert_eq!(planned.warnings.0[0].range.as_ref().unwrap().text(), "kvm_host \"l0\"");
    }

    #[test]
    fn cycles_point_at_every_member() {
        let mut config = load();
        config.resources.get_mut(&addr("kvm_host.l0")).unwrap().depends_on.insert(addr("nested_guest.g1"));
        let err = run(&config, &State::new(), &BTreeMap::new()).unwrap_err();
        assert_eq!(err.len(), 1);
        let d = &err.0[0];
        assert_eq!(d.summary, "dependency cycle between `kvm_host.l0`, `nested_guest.g1`");
        assert_eq!(d.range.as_ref().unwrap().text(), "kvm_host \"l0\"");
        assert_eq!(d.related.len(), 1);
        assert_eq!(d.related[0].0.text(), "nested_guest \"g1\"");
        assert_eq!(d.related[0].1, "`nested_guest.g1` is part of the cycle");
        assert!(crate::graph::ResourceGraph::build(&config, &State::new()).is_err());
    }
}
