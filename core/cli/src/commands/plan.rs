//! `nestform plan`: refresh, diff, and show (or save) what apply would do.

use std::process::ExitCode;

use miette::Report;
use nestform_engine::render::{plan_json, render_plan};
use nestform_engine::workdir::{write_plan_file, Workdir};

use super::{backends, plan_options, print_warnings, report, var_inputs};
use crate::args::PlanArgs;

pub fn run(workdir: &Workdir, args: PlanArgs) -> Result<ExitCode, Report> {
    let vars = var_inputs(&args.flags.vars)?;
    let options = plan_options(&args.flags, args.destroy)?;
    let _lock = workdir.lock("plan").map_err(report)?;
    let config = workdir.config(&vars).map_err(report)?;
    let planned = workdir.plan(&config, backends(), options, args.flags.refresh).map_err(report)?;
    // Saved before anything is shown: output cut short by its reader must not lose the plan.
    if let Some(out) = &args.out {
        write_plan_file(out, &planned.plan).map_err(report)?;
    }
    print_warnings(&planned.warnings);
    if args.json {
        super::write_json(&plan_json(&planned.plan))?;
    } else {
        out!("{}", render_plan(&planned.plan))?;
    }
    if let Some(out) = &args.out {
        if !args.json {
            outln!(
                "\nSaved the plan to: {0}\n\nTo perform exactly these actions, run:\n    nestform apply {0}",
                out.display()
            )?;
        }
    }
    let changes = !planned.plan.is_empty();
    Ok(if args.detailed_exitcode && changes { ExitCode::from(2) } else { ExitCode::SUCCESS })
}
