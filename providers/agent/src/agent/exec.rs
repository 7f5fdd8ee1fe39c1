//! `exec`: run a program in its own process group, stream its output, and report how it ended.
//!
//! The program leads a new process group so that a timeout or a cancelled stream kills everything it
//! started, not just the leader. Like ssh, the stream ends only when the leader has exited and stdout and
//! stderr have closed (a background child that keeps them open keeps the stream open, up to the timeout).
//!
//! After a timeout's kill the agent waits at most [`KILL_GRACE`] for the exit and the pipes, then
//! answers anyway with `timed_out` and `incomplete`: a process that left the group (`setsid`) can hold
//! the pipes for as long as it likes, and one in uninterruptible I/O is not reaped until the I/O ends.
//! The reaping and the draining go on in the background. While a program runs the agent sends a
//! keepalive every [`KEEPALIVE`] ([`Stream::send_keepalive`]), so that the client can tell a silent
//! program from a stalled channel.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::frame::DATA_CHUNK;
use crate::mux::{Incoming, Stream};
use crate::proto::{AgentMessage, ExecSpec, ExitStatus, KEEPALIVE_INTERVAL as KEEPALIVE};

/// How long after a timeout's kill the agent waits for the program's exit and the end of its output
/// before it answers without them. A killed group exits in milliseconds; what takes longer is a
/// process outside the group or one stuck in the kernel, which waiting longer does not help.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);

/// Kills a process group until the program is known to be completely finished.
struct GroupKiller {
    pgid: libc::pid_t,
    done: AtomicBool,
}

impl GroupKiller {
    fn kill(&self) {
        if !self.done.load(Ordering::SeqCst) {
            // SAFETY: killpg only sends a signal; the group is the one this agent created.
            unsafe {
                libc::killpg(self.pgid, libc::SIGKILL);
            }
        }
    }
}

enum Event {
    /// The program ended, this long after it started.
    Exited(std::process::ExitStatus, Duration),
    OutputClosed,
}

/// Runs `spec` on `stream`. Returns an error message for the client when the program cannot start.
pub(super) fn run(stream: &Arc<Stream>, spec: ExecSpec) -> Result<(), String> {
    let Some(program) = spec.argv.first() else {
        return Err("exec needs a program: `argv` is empty".into());
    };
    let mut command = Command::new(program);
    command.args(&spec.argv[1..]);
    if spec.clear_env {
        command.env_clear();
    }
    command.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    command
        .stdin(if spec.stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("starting `{program}` failed: {e}"))?;
    let killer = Arc::new(GroupKiller { pgid: child.id() as libc::pid_t, done: AtomicBool::new(false) });
    let (events, rx) = mpsc::channel();

    let outputs = [(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>), false)]
        .into_iter()
        .chain([(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>), true)]);
    for (pipe, stderr) in outputs {
        let pipe = pipe.expect("stdout and stderr are piped");
        let (stream, killer, events) = (Arc::clone(stream), Arc::clone(&killer), events.clone());
        thread::spawn(move || pump_output(pipe, stderr, &stream, &killer, &events));
    }
    {
        let (stream, killer, stdin) = (Arc::clone(stream), Arc::clone(&killer), child.stdin.take());
        thread::spawn(move || pump_input(&stream, &killer, stdin));
    }
    {
        let events = events.clone();
        thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = events.send(Event::Exited(status, started.elapsed()));
            }
        });
    }
    drop(events);

    let mut deadline = spec.timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut timed_out = false;
    let mut incomplete = false;
    let mut status = None;
    let mut open_outputs = 2;
    while status.is_none() || open_outputs > 0 {
        let wake = Instant::now() + KEEPALIVE;
        let at = deadline.map_or(wake, |deadline| deadline.min(wake));
        match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
            Ok(Event::Exited(s, took)) => status = Some((s, took)),
            Ok(Event::OutputClosed) => open_outputs -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) if deadline.is_some_and(|d| Instant::now() >= d) => {
                if timed_out {
                    // The grace after the kill ran out: answer with what there is.
                    incomplete = true;
                    break;
                }
                timed_out = true;
                deadline = Some(Instant::now() + KILL_GRACE);
                killer.kill();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // A failed keepalive means the client is gone; `pump_input` sees that and kills.
                let _ = stream.send_keepalive();
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Even when incomplete: the group had its SIGKILL (a process in the kernel takes it when its I/O
    // ends), and once the group is gone its id may be reused by someone else's.
    killer.done.store(true, Ordering::SeqCst);
    let exit = match status {
        Some((status, took)) => ExitStatus {
            code: status.code(),
            signal: status.signal(),
            timed_out,
            elapsed_us: Some(took.as_micros().try_into().unwrap_or(u64::MAX)),
            incomplete,
        },
        // Killed but not reaped within the grace: no code, no signal, and no run time to report.
        None if incomplete => {
            ExitStatus { code: None, signal: None, timed_out, elapsed_us: None, incomplete }
        }
        None => return Err(format!("waiting for `{program}` failed")),
    };
    stream.send_control(&AgentMessage::Exit(exit)).map_err(|e| e.to_string())
}

/// Copies one output pipe to the stream. If the client is gone it kills the group and keeps draining
/// the pipe so the program is never stuck on a full pipe.
fn pump_output(
    mut pipe: Box<dyn Read + Send>,
    stderr: bool,
    stream: &Stream,
    killer: &GroupKiller,
    events: &mpsc::Sender<Event>,
) {
    let mut buf = vec![0u8; DATA_CHUNK];
    let mut forwarding = true;
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if forwarding && stream.send_data(stderr, &buf[..n]).is_err() {
            forwarding = false;
            killer.kill();
        }
    }
    let _ = events.send(Event::OutputClosed);
}

/// Feeds stdin from the stream and watches for cancellation: a client `Close` (or a lost connection)
/// before the program finished kills its group.
fn pump_input(stream: &Stream, killer: &GroupKiller, mut stdin: Option<std::process::ChildStdin>) {
    loop {
        match stream.recv(None) {
            Ok(Incoming::Data(bytes)) => {
                if let Some(pipe) = stdin.as_mut() {
                    if pipe.write_all(&bytes).is_err() {
                        // The program closed its stdin; the rest is dropped, as a shell pipe would.
                        stdin = None;
                    }
                }
            }
            Ok(Incoming::Eof) => stdin = None,
            Ok(_) => {}
            Err(_) => {
                killer.kill();
                return;
            }
        }
    }
}
