//! `nestform validate`: the configuration alone, every problem at once, nothing contacted.

use std::process::ExitCode;

use miette::Report;
use nestform_engine::workdir::Workdir;

use super::{print_warnings, report, var_inputs};
use crate::args::ValidateArgs;

pub fn run(workdir: &Workdir, args: ValidateArgs) -> Result<ExitCode, Report> {
    let vars = var_inputs(&args.vars)?;
    let result = workdir.config(&vars).and_then(|config| {
        // The graph is part of validity: cycles across resources are only found there.
        nestform_engine::graph::ResourceGraph::build(&config, &nestform_state::State::default())
            .map_err(nestform_engine::workdir::EngineError::Diagnostics)?;
        Ok(config)
    });
    match result {
        Ok(config) if args.json => {
            super::write_json(&serde_json::json!({
                "valid": true, "error_count": 0, "warning_count": config.warnings.iter().count(),
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(config) => {
            print_warnings(&config.warnings);
            outln!("Success! The configuration is valid.")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(report(e)),
    }
}
