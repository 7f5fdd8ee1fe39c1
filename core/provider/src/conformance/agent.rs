//! The agent half of the conformance suite: what [`Guests::agent`](crate::Guests::agent) must give for a running guest,
//! whichever backend reaches it (the memory provider's in-process agent, a real lab guest over
//! libvirt's channel, a guest on a promoted host through relays).
//!
//! [`run_all`] takes a guest that is already running with nestform's agent inside: the checks only
//! read and write under `/tmp` in the guest and leave nothing there.

use std::time::{Duration, Instant};

use crate::{
    AgentError, AgentWait, GaveUp, GuestAgent, GuestCommand, GuestRef, Guests, Hypervisor, OutputStream,
};

/// How long a running guest's agent gets to answer in the suite.
const AGENT_WAIT: AgentWait = AgentWait::at_most(Duration::from_secs(60));

/// Reaches the agent of the running `guest` on `h` through `guests` and runs every check on it.
pub fn run_all(guests: &dyn Guests, h: &dyn Hypervisor, guest: GuestRef<'_>) {
    let agent = guests
        .agent(h, guest, AGENT_WAIT)
        .unwrap_or_else(|e| panic!("the agent of running guest `{}` did not answer: {e}", guest.name));
    let agent = &*agent;
    facts_are_sane(agent);
    exit_codes_and_output_come_back(agent);
    time_is_measured_in_the_guest(agent);
    a_timeout_kills_the_program(agent);
    files_round_trip(agent);
}

/// Facts name a kernel, at least one CPU and some memory.
pub fn facts_are_sane(agent: &dyn GuestAgent) {
    let f = agent.facts().unwrap_or_else(|e| panic!("facts failed: {e}"));
    assert!(!f.kernel_release.trim().is_empty(), "facts: empty kernel release");
    assert!(f.cpu_count > 0, "facts: `cpu_count` is 0");
    assert!(f.memory_bytes > 0, "facts: `memory_bytes` is 0");
}

/// A program's exit code, its stdout and its stderr come back apart, and its stdin goes in.
pub fn exit_codes_and_output_come_back(agent: &dyn GuestAgent) {
    let cmd =
        GuestCommand::new(["sh", "-c", "read line; echo \"out $line\"; echo err >&2; exit 3"]).stdin("in\n");
    let out = agent.run(&cmd).unwrap_or_else(|e| panic!("run: {e}"));
    assert_eq!(out.status.code, Some(3), "run: exit code of `{}`: {:?}", cmd.display(), out.status);
    assert!(!out.status.success() && !out.status.timed_out, "run: {:?}", out.status);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out in\n", "run: stdout");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n", "run: stderr");
    // Streaming hands over the same bytes, each on its own stream.
    let mut seen = (Vec::new(), Vec::new());
    let status = agent
        .run_streaming(&GuestCommand::new(["sh", "-c", "echo a; echo b >&2"]), &mut |stream, bytes| {
            match stream {
                OutputStream::Stdout => seen.0.extend_from_slice(bytes),
                OutputStream::Stderr => seen.1.extend_from_slice(bytes),
            }
        })
        .unwrap_or_else(|e| panic!("run_streaming: {e}"));
    assert!(status.success(), "run_streaming: {status:?}");
    assert_eq!((seen.0.as_slice(), seen.1.as_slice()), (&b"a\n"[..], &b"b\n"[..]), "run_streaming: output");
}

/// The run time comes from the guest: at least what the program slept, and no more than the round
/// trip seen from here.
pub fn time_is_measured_in_the_guest(agent: &dyn GuestAgent) {
    let started = Instant::now();
    let out = agent.run(&GuestCommand::new(["sleep", "0.3"])).unwrap_or_else(|e| panic!("run sleep: {e}"));
    let round_trip = started.elapsed();
    let elapsed = out.status.elapsed.unwrap_or_else(|| panic!("run: no time measured in the guest"));
    assert!(elapsed >= Duration::from_millis(300), "run: `sleep 0.3` took {elapsed:?} in the guest");
    assert!(elapsed <= round_trip, "run: {elapsed:?} in the guest, more than the round trip {round_trip:?}");
}

/// A program that outlives its timeout is killed, and says so.
pub fn a_timeout_kills_the_program(agent: &dyn GuestAgent) {
    let cmd = GuestCommand::new(["sleep", "30"]).timeout(Duration::from_millis(500));
    let started = Instant::now();
    let out = agent.run(&cmd).unwrap_or_else(|e| panic!("run with a timeout: {e}"));
    assert!(out.status.timed_out, "run with a timeout: {:?}", out.status);
    assert!(started.elapsed() < Duration::from_secs(20), "run with a timeout took {:?}", started.elapsed());
}

/// A file written into the guest reads back the same, and a missing one is an error that names it.
pub fn files_round_trip(agent: &dyn GuestAgent) {
    let path = format!("/tmp/{}", super::unique_name("file"));
    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let written = agent
        .put_file(&path, &mut content.as_slice(), 0o600)
        .unwrap_or_else(|e| panic!("put_file `{path}`: {e}"));
    assert_eq!(written, content.len() as u64, "put_file: bytes written");
    let mut back = Vec::new();
    let read = agent.get_file(&path, &mut back).unwrap_or_else(|e| panic!("get_file `{path}`: {e}"));
    let _ = agent.run(&GuestCommand::new(["rm", "-f", &path]));
    assert_eq!(read, content.len() as u64, "get_file: bytes read");
    assert!(back == content, "get_file: the content differs from what was written");
    let missing = format!("{path}.missing");
    match agent.get_file(&missing, &mut Vec::new()) {
        Err(AgentError::Failed { .. }) => {}
        other => panic!("get_file of a missing file: expected a failure, got {other:?}"),
    }
}

/// A guest that is not running has no agent and a console that prints nothing: reaching it gives
/// up once the console has been quiet for the wait's `quiet`, long before its limit, with the end
/// of its console; it never hangs.
pub fn a_stopped_guest_times_out(guests: &dyn Guests, h: &dyn Hypervisor, guest: GuestRef<'_>) {
    let wait = AgentWait { quiet: Duration::from_millis(600), limit: Duration::from_secs(60) };
    let started = Instant::now();
    match guests.agent(h, guest, wait) {
        Err(AgentError::Timeout { gave_up: GaveUp::Quiet(q), .. }) => assert_eq!(q, wait.quiet),
        Err(other) => {
            panic!("the agent of stopped guest `{}`: expected a quiet console, got {other}", guest.name)
        }
        Ok(_) => panic!("the agent of stopped guest `{}` answered", guest.name),
    }
    assert!(started.elapsed() < Duration::from_secs(15), "gave up after {:?}", started.elapsed());
}
