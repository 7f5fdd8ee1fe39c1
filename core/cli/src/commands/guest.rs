//! `nestform exec ADDR -- CMD...` and `nestform console ADDR`: reaching into a guest through its agent
//! and its host's connection.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use miette::{IntoDiagnostic, Report};
use nestform_agent::ExecRequest;
use nestform_engine::agent::{guest_in_state, wait_for_agent};
use nestform_engine::hosts::Hosts;
use nestform_engine::workdir::Workdir;

use super::{addrs, provider, report};
use crate::args::{ConsoleArgs, CpArgs, ExecArgs};

pub fn exec(workdir: &Workdir, args: ExecArgs) -> Result<ExitCode, Report> {
    let addr = addrs("address", std::slice::from_ref(&args.address))?.remove(0);
    let state = workdir.state().map_err(report)?;
    let guest = guest_in_state(&state, &addr, &Hosts::new(provider())).map_err(|e| miette::miette!("{e}"))?;
    let client = wait_for_agent(&*guest.hypervisor, &guest.id, &guest.name, Duration::from_secs(args.wait))
        .map_err(|e| miette::miette!("{e}"))?;
    let mut request = ExecRequest::new(args.command.clone());
    if !std::io::stdin().is_terminal() {
        let mut input = Vec::new();
        std::io::stdin().read_to_end(&mut input).into_diagnostic()?;
        request = request.stdin(input);
    }
    if let Some(t) = args.timeout {
        request = request.timeout(Duration::from_secs(t));
    }
    let status = client
        .exec_streaming(
            request,
            |out| {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(out);
                let _ = o.flush();
            },
            |err| {
                let mut e = std::io::stderr().lock();
                let _ = e.write_all(err);
                let _ = e.flush();
            },
        )
        .map_err(|e| miette::miette!("running `{}` in `{addr}` failed: {e}", args.command.join(" ")))?;
    // The command's own exit code, as ssh does; a signal or a timeout is reported and exits non-zero.
    if status.timed_out {
        eprintln!("nestform: `{}` timed out in `{addr}` and was killed", args.command.join(" "));
        return Ok(ExitCode::from(124));
    }
    if let Some(signal) = status.signal {
        eprintln!("nestform: `{}` was killed by signal {signal} in `{addr}`", args.command.join(" "));
        return Ok(ExitCode::from((128 + signal).clamp(0, 255) as u8));
    }
    Ok(ExitCode::from(status.code.unwrap_or(1).clamp(0, 255) as u8))
}

/// `nestform cp SRC DST`: one side is `ADDR:PATH` in a guest, the other a local path (`-` for
/// standard input or output).
pub fn cp(workdir: &Workdir, args: CpArgs) -> Result<ExitCode, Report> {
    let (remote, local, upload) = match (split_remote(&args.source), split_remote(&args.destination)) {
        (None, Some(remote)) => (remote, args.source.clone(), true),
        (Some(remote), None) => (remote, args.destination.clone(), false),
        _ => {
            return Err(miette::miette!(
                help = "write the guest side as `nested_guest.NAME:/path`, like `nestform cp ./f nested_guest.g1:/tmp/f`",
                "exactly one of `{}` and `{}` must be in a guest",
                args.source,
                args.destination
            ))
        }
    };
    let (addr, path) = remote;
    let addr = addrs("address", &[addr])?.remove(0);
    let state = workdir.state().map_err(report)?;
    let guest = guest_in_state(&state, &addr, &Hosts::new(provider())).map_err(|e| miette::miette!("{e}"))?;
    let client = wait_for_agent(&*guest.hypervisor, &guest.id, &guest.name, Duration::from_secs(args.wait))
        .map_err(|e| miette::miette!("{e}"))?;
    let failed = |e: nestform_agent::ClientError| miette::miette!("copying to or from `{addr}` failed: {e}");
    if upload {
        let mut input: Box<dyn Read> = if local == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(&local).into_diagnostic()?)
        };
        let mode = if local == "-" {
            0o644
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&local).into_diagnostic()?.permissions().mode() & 0o7777
        };
        client.put_file(&path, &mut input, mode).map_err(failed)?;
    } else {
        let mut out: Box<dyn Write> = if local == "-" {
            Box::new(std::io::stdout().lock())
        } else {
            Box::new(std::fs::File::create(&local).into_diagnostic()?)
        };
        client.get_file(&path, &mut out).map_err(failed)?;
        out.flush().into_diagnostic()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `nested_guest.g1:/tmp/f` → (`nested_guest.g1`, `/tmp/f`); a local path → `None`.
fn split_remote(arg: &str) -> Option<(String, String)> {
    let (addr, path) = arg.split_once(':')?;
    addr.starts_with("nested_guest.").then(|| (addr.to_string(), path.to_string()))
}

/// `nestform console ADDR`: the end of the guest's serial console log, at any level. The log is a
/// file on the guest's host: a local file at level 1, and for a guest on a promoted host a file inside
/// the guest that host runs in, read through that guest's agent (`nestform_engine::promoted`).
pub fn console(workdir: &Workdir, args: ConsoleArgs) -> Result<ExitCode, Report> {
    let addr = addrs("address", std::slice::from_ref(&args.address))?.remove(0);
    let state = workdir.state().map_err(report)?;
    let guest = guest_in_state(&state, &addr, &Hosts::new(provider())).map_err(|e| miette::miette!("{e}"))?;
    let text = guest
        .hypervisor
        .console_tail(&guest.id, args.bytes)
        .map_err(|e| miette::miette!("cannot read the console of `{addr}`: {e}"))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
