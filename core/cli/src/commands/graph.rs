//! `nestform graph`: the dependency graph in DOT, one cluster per nesting level.

use std::process::ExitCode;

use miette::Report;
use nestform_engine::workdir::Workdir;

use super::{report, var_inputs};
use crate::args::GraphArgs;

pub fn run(workdir: &Workdir, args: GraphArgs) -> Result<ExitCode, Report> {
    let graph = workdir.graph(&var_inputs(&args.vars)?).map_err(report)?;
    out!("{}", graph.to_dot())?;
    Ok(ExitCode::SUCCESS)
}
