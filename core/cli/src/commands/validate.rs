//! `nestform validate`: the configuration alone, every problem at once, nothing contacted.

use std::process::ExitCode;

use miette::Report;
use nestform_engine::workdir::Workdir;

use super::{print_warnings, report, var_inputs};
use crate::args::ValidateArgs;

pub fn run(workdir: &Workdir, args: ValidateArgs) -> Result<ExitCode, Report> {
    let vars = var_inputs(&args.vars)?;
    match workdir.validate(&vars) {
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
