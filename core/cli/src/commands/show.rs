//! `nestform show`: the state, or a saved plan, for people or as JSON.

use std::process::ExitCode;

use miette::Report;
use nestform_engine::render::{plan_json, render_plan};
use nestform_engine::workdir::{read_plan_file, Workdir};

use super::report;
use crate::args::ShowArgs;

pub fn run(workdir: &Workdir, args: ShowArgs) -> Result<ExitCode, Report> {
    if let Some(path) = &args.plan_file {
        let plan = read_plan_file(path).map_err(report)?;
        if args.json {
            super::write_json(&plan_json(&plan))?;
        } else {
            out!("{}", render_plan(&plan))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let state = workdir.state().map_err(report)?;
    if args.json {
        super::write_json(&nestform_state::file::StateFileV1::from_state(&state))?;
        return Ok(ExitCode::SUCCESS);
    }
    if state.resources.is_empty() {
        outln!("The state is empty. Nothing has been applied yet.")?;
        return Ok(ExitCode::SUCCESS);
    }
    for (addr, r) in &state.resources {
        outln!("# {addr}{}:", if r.tainted { " (tainted)" } else { "" })?;
        out!("{}", super::state::render_attributes(r))?;
        outln!()?;
    }
    if !state.outputs.is_empty() {
        outln!("Outputs:\n")?;
        out!("{}", super::output::render_outputs(&state.outputs))?;
    }
    Ok(ExitCode::SUCCESS)
}
