//! `nestform graph`: the dependency graph in DOT, one cluster per nesting level.

use std::process::ExitCode;

use miette::Report;
use nestform_engine::graph::ResourceGraph;
use nestform_engine::workdir::{EngineError, Workdir};

use super::{report, var_inputs};
use crate::args::GraphArgs;

pub fn run(workdir: &Workdir, args: GraphArgs) -> Result<ExitCode, Report> {
    let config = workdir.config(&var_inputs(&args.vars)?).map_err(report)?;
    let state = workdir.state().map_err(report)?;
    let graph = ResourceGraph::build(&config, &state).map_err(|d| report(EngineError::Diagnostics(d)))?;
    out!("{}", graph.to_dot())?;
    Ok(ExitCode::SUCCESS)
}
