//! One module per verb. Each parses its flags into the engine's types, calls the engine, and renders.

mod apply;
mod benchmarks;
mod fmt;
mod graph;
mod guest;
mod output;
mod plan;
mod show;
mod snapshot;
mod state;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use miette::{IntoDiagnostic, Report};
use nestform_config::VarInputs;
use nestform_engine::hosts::Hosts;
use nestform_engine::planner::PlanOptions;
use nestform_engine::workdir::{EngineError, Workdir};
use nestform_provider::{Backends, Provider};
use nestform_types::ResourceAddr;

use crate::args::{Cli, Command, PlanFlags, SnapshotCommand, StateCommand, VarArgs};

pub fn run(cli: Cli) -> Result<ExitCode, Report> {
    if let Some(dir) = &cli.chdir {
        std::env::set_current_dir(dir).map_err(|e| {
            miette::miette!(
                help = "check the path given to `-chdir`",
                "cannot change to `{}`: {e}",
                dir.display()
            )
        })?;
    }
    let workdir = Workdir::new(PathBuf::from("."), cli.state.clone());
    match cli.command {
        Command::Validate(a) => validate::run(&workdir, a),
        Command::Fmt(a) => fmt::run(&workdir, a),
        Command::Plan(a) => plan::run(&workdir, a),
        Command::Apply(a) => apply::run(&workdir, a),
        Command::Destroy(a) => apply::destroy(&workdir, a),
        Command::Show(a) => show::run(&workdir, a),
        Command::Output(a) => output::run(&workdir, a),
        Command::Report(a) => benchmarks::run(&workdir, a),
        Command::Graph(a) => graph::run(&workdir, a),
        Command::State(StateCommand::List { addresses }) => state::list(&workdir, addresses),
        Command::State(StateCommand::Show { address }) => state::show(&workdir, address),
        Command::Exec(a) => guest::exec(&workdir, a),
        Command::Console(a) => guest::console(&workdir, a),
        Command::Cp(a) => guest::cp(&workdir, a),
        Command::Snapshot(SnapshotCommand::Create(a)) => snapshot::create(&workdir, a),
        Command::Snapshot(SnapshotCommand::Revert(a)) => snapshot::revert(&workdir, a),
        Command::Snapshot(SnapshotCommand::List { address, json }) => snapshot::list(&workdir, address, json),
        Command::Snapshot(SnapshotCommand::Delete(a)) => snapshot::delete(&workdir, a),
    }
}

/// What the engine reaches hosts and guests through, the one place they are put together: libvirt
/// for every URI nestform is given (it speaks all of them, the tunnels into promoted guests too),
/// nestform's agents and promoted hosts for guests, and lab boot assets.
pub fn backends() -> Backends {
    let libvirt: Arc<dyn Provider> = Arc::new(nestform_provider_libvirt::LibvirtProvider::new());
    Backends {
        guests: Arc::new(nestform_provider_promoted::Promoter::new(Arc::clone(&libvirt))),
        provider: libvirt,
        boot: Arc::new(nestform_lab_boot::LabBoot),
        bench: Arc::new(nestform_bench::Runners),
    }
}

/// A fresh connection cache over [`backends`].
pub fn hosts() -> Hosts {
    Hosts::new(backends())
}

/// How long a booted guest's agent gets: [`AgentWait::BOOT`], whose quiet time (seconds of a
/// console printing nothing new) `NESTFORM_AGENT_TIMEOUT` sets.
pub fn agent_wait() -> nestform_provider::AgentWait {
    let quiet = std::env::var("NESTFORM_AGENT_TIMEOUT").ok().and_then(|v| v.parse::<u64>().ok());
    let boot = nestform_provider::AgentWait::BOOT;
    quiet.map_or(boot, |s| nestform_provider::AgentWait { quiet: std::time::Duration::from_secs(s), ..boot })
}

pub fn var_inputs(v: &VarArgs) -> Result<VarInputs, Report> {
    let mut cli = Vec::new();
    for kv in &v.vars {
        let (k, val) = kv.split_once('=').ok_or_else(|| {
            miette::miette!(help = "write it as `-var 'name=value'`", "`-var {kv}` has no `=`")
        })?;
        cli.push((k.trim().to_string(), val.to_string()));
    }
    Ok(VarInputs { cli, files: v.var_files.clone() })
}

pub fn addrs(flag: &str, raw: &[String]) -> Result<Vec<ResourceAddr>, Report> {
    raw.iter()
        .map(|s| {
            s.parse::<ResourceAddr>().map_err(|e| {
                miette::miette!(
                    help = "an address looks like `nested_guest.guest1` or `nested_guest.web[0]`",
                    "`-{flag}`: {e}"
                )
            })
        })
        .collect()
}

pub fn plan_options(flags: &PlanFlags, destroy: bool) -> Result<PlanOptions, Report> {
    Ok(PlanOptions {
        destroy,
        targets: addrs("target", &flags.targets)?,
        replace: addrs("replace", &flags.replace)?,
    })
}

/// Turns engine errors into one report; diagnostics keep their source snippets, other errors their
/// causes.
pub fn report(e: EngineError) -> Report {
    match e {
        EngineError::Diagnostics(d) => diagnostics_report(d),
        other => error_report(&other),
    }
}

/// An error as a report: its message, then each cause in its chain that the message does not say
/// already (errors that put their cause's text in their own message are not repeated).
pub fn error_report(e: &(dyn std::error::Error + 'static)) -> Report {
    Report::new(Chain::of(e.to_string(), e.source()))
}

/// [`error_report`] of an error about the resource `addr`.
pub fn resource_report(addr: &ResourceAddr, e: &(dyn std::error::Error + 'static)) -> Report {
    Report::new(Chain::of(format!("`{addr}`: {e}"), e.source()))
}

/// An error's chain as text, for miette to render one cause a line.
#[derive(Debug)]
struct Chain {
    message: String,
    cause: Option<Box<Chain>>,
}

impl Chain {
    fn of(message: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> Chain {
        let mut causes = Vec::new();
        let mut said = message.clone();
        while let Some(s) = source {
            let text = s.to_string();
            if !said.contains(&text) {
                said = text.clone();
                causes.push(text);
            }
            source = s.source();
        }
        let cause =
            causes.into_iter().rev().fold(None, |cause, message| Some(Box::new(Chain { message, cause })));
        Chain { message, cause }
    }
}

impl std::fmt::Display for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Chain {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|c| c as _)
    }
}

impl miette::Diagnostic for Chain {}

/// One problem is reported as itself; several under a heading that counts them.
fn diagnostics_report(d: nestform_config::Diagnostics) -> Report {
    if d.len() == 1 {
        Report::new(d.into_iter().next().expect("one diagnostic"))
    } else {
        Report::new(d)
    }
}

/// Prints warnings (diagnostics that do not stop the command) to stderr.
pub fn print_warnings(w: &nestform_config::Diagnostics) {
    if !w.is_empty() {
        eprintln!("{:?}", diagnostics_report(w.clone()));
    }
}

pub fn write_json(value: &impl serde::Serialize) -> Result<(), Report> {
    let text = serde_json::to_string_pretty(value).into_diagnostic()?;
    outln!("{text}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The ports the lab guests' agent serves are the channels the libvirt provider declares: the two
    /// crates do not depend on each other, and this is where they are put together.
    #[test]
    fn lab_agent_ports_are_the_providers_agent_channels() {
        assert_eq!(nestform_lab_boot::AGENT_PORTS, nestform_provider_libvirt::AGENT_CHANNELS);
    }
}
