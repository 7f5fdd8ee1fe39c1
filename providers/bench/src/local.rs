//! The machine nestform runs on, as a benchmark target: level-0 hosts by a local URI are measured
//! here, with the same commands a guest's agent would run, timed around the program itself.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nestform_provider::{AgentError, CommandStatus, GuestAgent, GuestCommand, GuestFacts, OutputStream};

/// The controller's own machine, reached without any channel.
#[derive(Debug, Default)]
pub struct Controller;

const NAME: &str = "the controller";

fn failed(e: impl Into<nestform_provider::BoxError>) -> AgentError {
    AgentError::Failed { guest: NAME.to_string(), source: e.into() }
}

impl GuestAgent for Controller {
    fn facts(&self) -> Result<GuestFacts, AgentError> {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let memory_kib: u64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        Ok(GuestFacts {
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
            kernel_release: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_bytes: memory_kib * 1024,
            nesting_level: 0,
            addresses: vec![],
        })
    }

    fn run_streaming(
        &self,
        command: &GuestCommand,
        output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<CommandStatus, AgentError> {
        let (program, args) = command.argv.split_first().ok_or_else(|| failed("an empty command"))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(command.env.iter().map(|(k, v)| (k, v)))
            .stdin(if command.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that a timeout kills what it started too.
            .process_group(0);
        if let Some(cwd) = &command.cwd {
            cmd.current_dir(cwd);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| failed(format!("running `{}`: {e}", command.display())))?;
        if let (Some(bytes), Some(mut stdin)) = (command.stdin.clone(), child.stdin.take()) {
            std::thread::spawn(move || stdin.write_all(&bytes));
        }
        let (tx, rx) = mpsc::channel();
        let pipes: [(OutputStream, Box<dyn Read + Send>); 2] = [
            (OutputStream::Stdout, Box::new(child.stdout.take().expect("piped"))),
            (OutputStream::Stderr, Box::new(child.stderr.take().expect("piped"))),
        ];
        for (stream, mut pipe) in pipes {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    if tx.send((stream, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let deadline = command.timeout.map(|t| started + t);
        let mut timed_out = false;
        // Output until both pipes close (or the time is up), then the exit.
        loop {
            let wait =
                deadline.map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(Instant::now()));
            match rx.recv_timeout(wait) {
                Ok((stream, chunk)) => output(stream, &chunk),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    timed_out = true;
                    // SAFETY: killpg takes a process group id and a signal; the group is the child's own.
                    unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        let status = child.wait().map_err(|e| failed(format!("waiting for `{}`: {e}", command.display())))?;
        let elapsed = started.elapsed();
        use std::os::unix::process::ExitStatusExt;
        Ok(CommandStatus { code: status.code(), signal: status.signal(), timed_out, elapsed: Some(elapsed) })
    }

    fn put_file(&self, path: &str, content: &mut dyn Read, mode: u32) -> Result<u64, AgentError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::path::Path::new(path)
            .parent()
            .ok_or_else(|| failed(format!("`{path}` has no directory")))?;
        let mut file = tempfile_in(dir).map_err(|e| failed(format!("writing `{path}`: {e}")))?;
        let n = std::io::copy(content, &mut file.1).map_err(|e| failed(format!("writing `{path}`: {e}")))?;
        std::fs::set_permissions(&file.0, std::fs::Permissions::from_mode(mode))
            .and_then(|()| std::fs::rename(&file.0, path))
            .map_err(|e| failed(format!("writing `{path}`: {e}")))?;
        Ok(n)
    }

    fn get_file(&self, path: &str, out: &mut dyn Write) -> Result<u64, AgentError> {
        let mut f = std::fs::File::open(path).map_err(|e| failed(format!("reading `{path}`: {e}")))?;
        std::io::copy(&mut f, out).map_err(|e| failed(format!("reading `{path}`: {e}")))
    }
}

/// A new file in `dir` to rename into place once written.
fn tempfile_in(dir: &std::path::Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    for i in 0..100u32 {
        let path = dir.join(format!(".nestform-put-{}-{i}", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_runs_here_with_its_output_and_its_own_time() {
        let out = Controller.run(&GuestCommand::new(["sh", "-c", "echo out; echo err >&2; exit 3"])).unwrap();
        assert_eq!((out.stdout.as_slice(), out.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
        assert_eq!(out.status.code, Some(3));
        assert!(out.status.elapsed.is_some());
    }

    #[test]
    fn a_timeout_kills_the_command_and_what_it_started() {
        let cmd = GuestCommand::new(["sh", "-c", "sleep 30 & sleep 30"]).timeout(Duration::from_millis(200));
        let started = Instant::now();
        let out = Controller.run(&cmd).unwrap();
        assert!(out.status.timed_out && !out.status.success());
        // Both sleeps are gone: the pipes closed, so the wait did not last 30 s.
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn stdin_reaches_the_command() {
        let out = Controller.run(&GuestCommand::new(["cat"]).stdin("hello")).unwrap();
        assert_eq!(out.stdout, b"hello");
    }
}
