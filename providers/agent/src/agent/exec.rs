//! `exec`: run a program in its own process group, stream its output, and report how it ended.
//!
//! The program leads a new process group so that a timeout or a cancelled stream kills everything it
//! started, not just the leader. Like ssh, the stream ends only when the leader has exited and stdout and
//! stderr have closed (a background child that keeps them open keeps the stream open, up to the timeout).

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
use crate::proto::{AgentMessage, ExecSpec, ExitStatus};

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
    let mut status = None;
    let mut open_outputs = 2;
    while status.is_none() || open_outputs > 0 {
        let event = match deadline {
            None => rx.recv().ok(),
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(event) => Some(event),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    deadline = None;
                    killer.kill();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            },
        };
        match event {
            Some(Event::Exited(s, took)) => status = Some((s, took)),
            Some(Event::OutputClosed) => open_outputs -= 1,
            None => break,
        }
    }
    killer.done.store(true, Ordering::SeqCst);
    let Some((status, took)) = status else {
        return Err(format!("waiting for `{program}` failed"));
    };
    let elapsed_us = Some(took.as_micros().try_into().unwrap_or(u64::MAX));
    let exit = ExitStatus { code: status.code(), signal: status.signal(), timed_out, elapsed_us };
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
