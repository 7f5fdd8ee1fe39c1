//! `nestform apply [PLANFILE]` and `nestform destroy`: plan (or read a saved plan), ask, then converge
//! every level while showing progress per resource and saving state after each one.

use std::process::ExitCode;
use std::time::Duration;

use miette::Report;
use nestform_engine::apply::{ApplyEvent, OpKind, Phase};
use nestform_engine::hosts::Hosts;
use nestform_engine::plan::Plan;
use nestform_engine::render::render_plan;
use nestform_engine::session::{self, Session};
use nestform_engine::workdir::{read_plan_file, Workdir};
use nestform_state::State;

use super::{backends, hosts, plan_options, print_warnings, report, var_inputs};
use crate::args::{ApplyArgs, DestroyArgs, PlanFlags, RunFlags};
use crate::ui;

pub fn run(workdir: &Workdir, args: ApplyArgs) -> Result<ExitCode, Report> {
    let _lock = workdir.lock("apply").map_err(report)?;
    if let Some(path) = &args.plan_file {
        // A saved plan is applied exactly as it was shown, without planning or asking again.
        let plan = read_plan_file(path).map_err(report)?;
        let state = workdir.check_current(&plan, path).map_err(report)?;
        return execute(workdir, &plan, state, &hosts(), args.run.parallelism);
    }
    plan_confirm_execute(workdir, &args.flags, false, args.run)
}

pub fn destroy(workdir: &Workdir, args: DestroyArgs) -> Result<ExitCode, Report> {
    let _lock = workdir.lock("destroy").map_err(report)?;
    plan_confirm_execute(workdir, &args.flags, true, args.run)
}

fn plan_confirm_execute(
    workdir: &Workdir,
    flags: &PlanFlags,
    destroy: bool,
    run: RunFlags,
) -> Result<ExitCode, Report> {
    let vars = var_inputs(&flags.vars)?;
    let config = workdir.config(&vars).map_err(report)?;
    let planned =
        workdir.plan(&config, backends(), plan_options(flags, destroy)?, flags.refresh).map_err(report)?;
    print_warnings(&planned.warnings);
    out!("{}", render_plan(&planned.plan))?;
    if planned.plan.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    if !run.auto_approve {
        let (question, detail) = if destroy {
            (
                "Do you really want to destroy all resources?",
                "nestform will destroy everything shown above, deepest nesting level first. There is no undo.",
            )
        } else {
            ("Do you want to perform these actions?", "nestform will perform the actions described above.")
        };
        if !ui::confirm(question, detail) {
            outln!("\n{} cancelled.", if destroy { "Destroy" } else { "Apply" })?;
            return Ok(ExitCode::from(1));
        }
    }
    let state = workdir.state().map_err(report)?;
    execute(workdir, &planned.plan, state, &planned.hosts, run.parallelism)
}

fn execute(
    workdir: &Workdir,
    plan: &Plan,
    state: State,
    hosts: &Hosts,
    parallelism: usize,
) -> Result<ExitCode, Report> {
    let session = Session {
        parallelism,
        agent_wait: Some(super::agent_wait()),
        on_event: &print_event,
        on_interrupt: &|| {
            eprintln!("\nInterrupt received. Waiting for running operations to finish; no new ones start.")
        },
    };
    let applied = session::run(workdir, plan, state, hosts, &session).map_err(report)?;

    for (addr, error) in &applied.errors {
        eprintln!("{:?}", super::resource_report(addr, error));
    }
    if let Some(not_saved) = &applied.not_saved {
        report_not_saved(workdir, &applied.state, not_saved);
    }
    if let Some(why) = &applied.halted {
        eprintln!(
            "Apply stopped: saving the state failed ({why}), so no operation started after that. \
             Fix the cause and run `nestform apply` again."
        );
        return Ok(ExitCode::from(1));
    }
    if applied.not_saved.is_some() {
        return Ok(ExitCode::from(1));
    }
    if applied.cancelled {
        eprintln!("Apply interrupted: the state holds everything that finished. Run `nestform plan` to see what is left.");
        return Ok(ExitCode::from(1));
    }
    if !applied.errors.is_empty() {
        eprintln!("Apply failed: the state holds everything that finished.");
        return Ok(ExitCode::from(1));
    }
    let (add, change, replace, destroy) = plan.counts();
    if plan.destroy {
        outln!("\nDestroy complete! Resources: {} destroyed.", destroy + replace)?;
    } else {
        outln!(
            "\nApply complete! Resources: {} added, {} changed, {} replaced, {} destroyed.",
            add,
            change,
            replace,
            destroy
        )?;
        if !applied.state.outputs.is_empty() {
            outln!("\nOutputs:\n")?;
            out!("{}", super::output::render_outputs(&applied.state.outputs))?;
        }
        let measured = plan.changes.iter().any(|c| {
            c.addr.ty == nestform_types::ResourceType::Benchmark
                && matches!(
                    c.action,
                    nestform_engine::plan::Action::Create | nestform_engine::plan::Action::Replace
                )
        });
        if measured {
            out!("{}", super::benchmarks::after_apply(&applied.state))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The last save failed: say where the state went instead, or print it, since it is the only record
/// of what this apply made.
fn report_not_saved(workdir: &Workdir, state: &State, not_saved: &session::NotSaved) {
    let state_path = workdir.store().path();
    eprintln!("Error: {}", not_saved.error);
    match &not_saved.kept {
        Ok(kept) => eprintln!(
            "The state as this apply left it was written to `{}` instead. Once saving works again, \
             move it over the state file (`mv {} {}`) before running any other command, or the \
             resources this apply made are unknown to nestform.",
            kept.display(),
            kept.display(),
            state_path.display()
        ),
        Err(also) => {
            eprintln!(
                "Writing it to `{}` failed as well ({also}). The state as this apply left it follows; \
                 save it as `{}` once saving works again, or the resources this apply made are \
                 unknown to nestform.",
                workdir.store().errored_path().display(),
                state_path.display()
            );
            // With the serial the failed save would have written, as the errored file would hold.
            let next = State { serial: state.serial + 1, ..state.clone() };
            eprintln!(
                "{}",
                String::from_utf8_lossy(&nestform_state::StateFileV1::from_state(&next).to_bytes())
            );
        }
    }
}

fn print_event(e: &ApplyEvent) {
    let measuring = e.addr.ty == nestform_types::ResourceType::Benchmark && e.op == OpKind::Create;
    if measuring {
        // A benchmark's progress is the run under way: `benchmark.sha256: nested_guest.guest2 run 2/3`.
        match &e.phase {
            Phase::Started => return progress!("{}: Measuring...", e.addr),
            Phase::Running { elapsed, step: Some(step) } => {
                return progress!("{}: {step} [{} elapsed]", e.addr, human(*elapsed))
            }
            Phase::Finished { elapsed, .. } => {
                return progress!("{}: Measured after {}", e.addr, human(*elapsed))
            }
            _ => {}
        }
    }
    let (doing, done) = match e.op {
        OpKind::Create => ("Creating...", "Creation complete"),
        OpKind::Update => ("Modifying...", "Modifications complete"),
        OpKind::Delete => ("Destroying...", "Destruction complete"),
        OpKind::Stop => ("Stopping...", "Stopped"),
        OpKind::Start => ("Starting...", "Started"),
        #[allow(unreachable_patterns)]
        _ => ("Working...", "Done"),
    };
    if let Some(outer) = &e.swept_by {
        // Nothing was asked of its own host: the outer guest's delete took it along.
        match &e.phase {
            Phase::Finished { .. } => progress!("{}: Removed with `{outer}`, which it ran inside", e.addr),
            Phase::Skipped => progress!("{}: {} skipped", e.addr, e.op.as_str()),
            _ => {}
        }
        return;
    }
    match &e.phase {
        Phase::Started => progress!("{}: {doing}", e.addr),
        Phase::Running { elapsed, step } => {
            let step = step.as_ref().map_or(String::new(), |s| format!(", {s}"));
            progress!(
                "{}: Still {}... [{} elapsed{step}]",
                e.addr,
                doing.trim_end_matches("...").to_lowercase(),
                human(*elapsed)
            )
        }
        Phase::Finished { elapsed, steps } => {
            // Where a long operation's time went, when it took more than one step to say.
            let went = nestform_provider::progress::describe(steps);
            if steps.len() > 1 && *elapsed >= Duration::from_secs(10) && !went.is_empty() {
                progress!("{}: {done} after {} ({went})", e.addr, human(*elapsed))
            } else {
                progress!("{}: {done} after {}", e.addr, human(*elapsed))
            }
        }
        Phase::Failed { error } => progress!("{}: failed: {error}", e.addr),
        Phase::Skipped => progress!("{}: {} skipped", e.addr, e.op.as_str()),
    }
}

pub(super) fn human(d: Duration) -> String {
    nestform_provider::guest::human_duration(d)
}
