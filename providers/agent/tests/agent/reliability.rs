//! The agent and the client always answer, within bounds: programs that outlive their kill, silent
//! agents, stale bytes in the channel, floods of uncounted frames and oversized requests.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nestform_agent::{AgentClient, ClientOptions, ExecRequest};

use crate::support::Harness;

/// Runs `f` on its own thread and fails the test if it has not returned within `limit`, so that a
/// call that never returns fails here instead of hanging the suite.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("no answer within `{limit:?}`"))
}

#[test]
fn exec_timeout_answers_although_an_escaped_grandchild_holds_stdout() {
    let harness = Harness::start();
    let options = ClientOptions { exec_grace: Duration::from_secs(20), ..ClientOptions::default() };
    let client = AgentClient::handshake_with(harness.channel(), &options).unwrap();
    let started = Instant::now();
    // `setsid` leaves the process group, so the agent's kill misses it and it keeps stdout open.
    let request = ExecRequest::new(["sh", "-c", "setsid sleep 8 & echo started; sleep 60"])
        .timeout(Duration::from_secs(1));
    let result = within(Duration::from_secs(15), move || client.exec(request)).unwrap();
    let took = started.elapsed();
    assert!(result.status.timed_out && result.status.incomplete, "{result:?}");
    assert_eq!(result.stdout, b"started\n");
    assert!(took < Duration::from_secs(6), "took {took:?}");
}
