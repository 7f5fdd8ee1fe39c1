//! `nestform exec ADDR -- CMD...`, `nestform cp` and `nestform console ADDR`: reaching into a guest
//! at any level; each is one call of `nestform_engine::guest`.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use miette::{IntoDiagnostic, Report};
use nestform_engine::guest::{self, Copy};
use nestform_engine::workdir::Workdir;
use nestform_provider::{GuestCommand, OutputStream};

use super::{addrs, hosts, report};
use crate::args::{ConsoleArgs, CpArgs, ExecArgs};

pub fn exec(workdir: &Workdir, args: ExecArgs) -> Result<ExitCode, Report> {
    let addr = addrs("address", std::slice::from_ref(&args.address))?.remove(0);
    let state = workdir.state().map_err(report)?;
    let mut command = GuestCommand::new(args.command.clone());
    if !std::io::stdin().is_terminal() {
        let mut input = Vec::new();
        std::io::stdin().read_to_end(&mut input).into_diagnostic()?;
        command = command.stdin(input);
    }
    if let Some(t) = args.timeout {
        command = command.timeout(Duration::from_secs(t));
    }
    let status = guest::exec(
        &state,
        &hosts(),
        &addr,
        Duration::from_secs(args.wait),
        &command,
        &mut |stream, bytes| {
            // Straight through, as it comes; a closed pipe on our side is the reader's business.
            match stream {
                OutputStream::Stdout => {
                    let mut o = std::io::stdout().lock();
                    let _ = o.write_all(bytes);
                    let _ = o.flush();
                }
                OutputStream::Stderr => {
                    let mut e = std::io::stderr().lock();
                    let _ = e.write_all(bytes);
                    let _ = e.flush();
                }
            }
        },
    )
    .map_err(|e| super::error_report(&e))?;
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
    let wait = Duration::from_secs(args.wait);
    let copied = if upload {
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
        guest::copy(&state, &hosts(), &addr, wait, Copy::Into { path: &path, content: &mut input, mode })
    } else {
        let mut out: Box<dyn Write> = if local == "-" {
            Box::new(std::io::stdout().lock())
        } else {
            Box::new(std::fs::File::create(&local).into_diagnostic()?)
        };
        let copied = guest::copy(&state, &hosts(), &addr, wait, Copy::OutOf { path: &path, out: &mut out });
        out.flush().into_diagnostic()?;
        copied
    };
    copied.map_err(|e| super::error_report(&e))?;
    Ok(ExitCode::SUCCESS)
}

/// `nested_guest.g1:/tmp/f` → (`nested_guest.g1`, `/tmp/f`); a local path → `None`.
fn split_remote(arg: &str) -> Option<(String, String)> {
    let (addr, path) = arg.split_once(':')?;
    addr.starts_with("nested_guest.").then(|| (addr.to_string(), path.to_string()))
}

/// `nestform console ADDR`: the end of the guest's serial console log, at any level.
pub fn console(workdir: &Workdir, args: ConsoleArgs) -> Result<ExitCode, Report> {
    let addr = addrs("address", std::slice::from_ref(&args.address))?.remove(0);
    let state = workdir.state().map_err(report)?;
    let text = guest::console(&state, &hosts(), &addr, args.bytes).map_err(|e| super::error_report(&e))?;
    out!("{text}")?;
    Ok(ExitCode::SUCCESS)
}
