//! `nestform snapshot create|revert|list|delete ADDR [NAME]`: the safe way to snapshot a guest that
//! has guests inside it. The engine stops the inner guests (deepest first), chooses live or offline,
//! and starts them again; this command shows each step as it happens and saves the refreshed state.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use miette::Report;
use nestform_engine::snapshot::{self, Action, SnapshotEvent, SnapshotOptions, Step};
use nestform_engine::workdir::Workdir;
use nestform_provider::SnapshotMode;

use super::apply::human;
use super::{addrs, hosts, report, write_json};
use crate::args::SnapshotArgs;

pub fn create(workdir: &Workdir, args: SnapshotArgs) -> Result<ExitCode, Report> {
    run(workdir, &args, Action::Create(&args.name))
}

pub fn revert(workdir: &Workdir, args: SnapshotArgs) -> Result<ExitCode, Report> {
    run(workdir, &args, Action::Revert(&args.name))
}

fn run(workdir: &Workdir, args: &SnapshotArgs, action: Action<'_>) -> Result<ExitCode, Report> {
    let verb = match action {
        Action::Create(_) => "create",
        Action::Revert(_) => "revert",
    };
    let addr = addrs("address", std::slice::from_ref(&args.address))?.remove(0);
    let opts = SnapshotOptions {
        stop_timeout: Duration::from_secs(60),
        agent_wait: super::agent_wait(),
        fresh_hosts: Arc::new(|| hosts()),
    };
    let outcome =
        snapshot::run_in(workdir, &hosts(), &addr, action, &opts, &print_event).map_err(|e| match e {
            snapshot::SnapshotError::State(e) => report(e),
            e => super::error_report(&e),
        })?;

    let done = if verb == "create" { "taken" } else { "reverted to" };
    outln!("\nSnapshot `{}` of `{addr}` {done} ({}: {}).", args.name, outcome.mode.as_str(), outcome.reason)?;
    if !outcome.lost.is_empty() {
        let names: Vec<String> = outcome.lost.iter().map(|a| format!("  {a}")).collect();
        outln!(
            "\nThese lived in the memory of a lab guest that restarted, and are gone:\n{}\n\
             Run `nestform apply` to recreate them.",
            names.join("\n")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_event(e: SnapshotEvent) {
    let (doing, done) = match e.step {
        Step::Stop => ("Stopping...", "Stopped"),
        Step::Snapshot(SnapshotMode::Live) => ("Taking a live snapshot...", "Snapshot taken"),
        Step::Snapshot(SnapshotMode::Offline) => ("Taking an offline snapshot...", "Snapshot taken"),
        Step::Revert => ("Reverting...", "Reverted"),
        Step::Start => ("Starting...", "Started"),
        Step::StartLibvirt => ("Starting libvirtd...", "libvirtd started"),
        Step::Lost => {
            progress!("{}: gone with the restart of the lab guest it lived in", e.addr);
            return;
        }
    };
    match e.done {
        None => progress!("{}: {doing}", e.addr),
        Some(elapsed) => progress!("{}: {done} after {}", e.addr, human(elapsed)),
    }
}

pub fn list(workdir: &Workdir, address: String, json: bool) -> Result<ExitCode, Report> {
    let addr = addrs("address", &[address])?.remove(0);
    let state = workdir.state().map_err(report)?;
    let snapshots = snapshot::list(&state, &hosts(), &addr).map_err(|e| super::error_report(&e))?;
    if json {
        write_json(&snapshots)?;
        return Ok(ExitCode::SUCCESS);
    }
    if snapshots.is_empty() {
        outln!("`{addr}` has no snapshots.")?;
    }
    for s in &snapshots {
        let kind = if s.running { "live" } else { "offline" };
        let current = if s.current { "  (current)" } else { "" };
        let by = match &s.owner {
            Some(o) if o.lineage == state.lineage => String::new(),
            Some(o) => format!("  made for another state ({})", o.lineage),
            None => "  not made by nestform".into(),
        };
        outln!("{}  {kind}  {}{current}{by}", s.name, created(s.created))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn created(secs: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

pub fn delete(workdir: &Workdir, args: SnapshotArgs) -> Result<ExitCode, Report> {
    let addr = addrs("address", std::slice::from_ref(&args.address))?.remove(0);
    let _lock = workdir.lock("snapshot delete").map_err(report)?;
    let state = workdir.state().map_err(report)?;
    snapshot::delete(&state, &hosts(), &addr, &args.name).map_err(|e| super::error_report(&e))?;
    outln!("Snapshot `{}` of `{addr}` deleted.", args.name)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_times_read_as_utc() {
        assert_eq!(created(0), "1970-01-01T00:00:00Z");
        assert_eq!(created(1_764_130_000), "2025-11-26T04:06:40Z");
    }
}
