//! `nestform report`: the benchmarks' results as the last apply recorded them.

use std::collections::BTreeMap;
use std::process::ExitCode;

use miette::Report;
use nestform_engine::render::benchmarks;
use nestform_engine::workdir::Workdir;
use nestform_state::State;
use nestform_types::ResourceType;

use super::report;
use crate::args::ReportArgs;

pub fn run(workdir: &Workdir, args: ReportArgs) -> Result<ExitCode, Report> {
    let state = workdir.state().map_err(report)?;
    if args.json {
        let all: BTreeMap<String, serde_json::Value> = state
            .resources
            .iter()
            .filter(|(a, _)| a.ty == ResourceType::Benchmark)
            .map(|(a, r)| {
                let field = |name: &str| r.attributes.get(name).cloned().unwrap_or_default();
                let value = serde_json::json!({
                    "kind": field("kind"),
                    "tainted": r.tainted,
                    "results": field("results"),
                    "samples": field("samples"),
                });
                (a.to_string(), value)
            })
            .collect();
        super::write_json(&all)?;
        return Ok(ExitCode::SUCCESS);
    }
    let table = benchmarks::table(&state);
    if table.is_empty() {
        eprintln!(
            "No benchmark results in the state. Add `benchmark` blocks to the configuration and apply it."
        );
    } else {
        out!("{table}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The table `apply` ends with, when it ran benchmarks.
pub fn after_apply(state: &State) -> String {
    let table = benchmarks::table(state);
    if table.is_empty() {
        table
    } else {
        format!("\nBenchmarks:\n\n{table}")
    }
}
