//! `nestform report`: the benchmarks' results as the last apply recorded them, as a table, as JSON,
//! or with `-o DIR` as a page with charts and CSV and NDJSON files (`nestform_report`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use miette::Report;
use nestform_engine::workdir::Workdir;
use nestform_state::State;
use nestform_types::ResourceType;

use super::{error_report, report};
use crate::args::ReportArgs;

pub fn run(workdir: &Workdir, args: ReportArgs) -> Result<ExitCode, Report> {
    let state = workdir.state().map_err(report)?;
    if let Some(dir) = &args.out {
        nestform_report::write(&state, dir).map_err(|e| match e {
            nestform_report::ReportError::NoResults => miette::miette!(
                help = "add `benchmark` blocks to the configuration and run `nestform apply`",
                "{e}"
            ),
            other => error_report(&other),
        })?;
        outln!("Report written to {} (and samples.ndjson, results.csv)", dir.join("index.html").display())?;
        return Ok(ExitCode::SUCCESS);
    }
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
    let table = nestform_report::table(&state);
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
    let table = nestform_report::table(state);
    if table.is_empty() {
        table
    } else {
        format!("\nBenchmarks:\n\n{table}")
    }
}
