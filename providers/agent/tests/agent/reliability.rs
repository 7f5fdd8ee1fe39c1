//! The agent and the client always answer, within bounds: programs that outlive their kill, silent
//! agents, stale bytes in the channel, floods of uncounted frames and oversized requests.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nestform_agent::frame::{read_frame, write_frame, Frame, FrameKind};
use nestform_agent::proto::{Hello, Welcome, PROTOCOL_VERSION};
use nestform_agent::{AgentClient, ClientError, ClientOptions, ExecRequest};

use crate::support::{raw_handshake, Harness};

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

/// A fake agent that welcomes (announcing `capabilities`), then hands each frame the client sends to
/// `on_frame`, which may answer on the channel.
fn fake_agent(
    capabilities: &[&str],
    mut on_frame: impl FnMut(&mut UnixStream, Frame) + Send + 'static,
) -> UnixStream {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let capabilities: Vec<String> = capabilities.iter().map(|c| c.to_string()).collect();
    thread::spawn(move || {
        let mut magic = [0u8; 8];
        std::io::Read::read_exact(&mut theirs, &mut magic).unwrap();
        let hello: Hello = serde_json::from_slice(&read_frame(&mut theirs).unwrap().body).unwrap();
        let welcome = Welcome {
            protocol: PROTOCOL_VERSION,
            nonce: hello.nonce,
            agent_version: "fake".into(),
            capabilities,
        };
        write_frame(&mut theirs, &Frame::new(0, FrameKind::Welcome, serde_json::to_vec(&welcome).unwrap()))
            .unwrap();
        while let Ok(frame) = read_frame(&mut theirs) {
            on_frame(&mut theirs, frame);
        }
    });
    ours
}

fn facts_answer(stream: u32) -> Frame {
    let facts = serde_json::json!({"type": "facts", "hostname": format!("answer-{stream}"),
        "kernel_release": "6", "cpu_count": 1, "memory_bytes": 1, "nesting_level": 0, "kvm_present": false,
        "kvm_openable": false, "kvm_nested": null, "addresses": []});
    Frame::new(stream, FrameKind::Control, serde_json::to_vec(&facts).unwrap())
}

#[test]
fn a_silent_agent_fails_facts_in_time_and_its_late_answer_goes_nowhere() {
    let mut opened = 0;
    let channel = fake_agent(&[], move |channel, frame| {
        if frame.kind != FrameKind::Open {
            return;
        }
        opened += 1;
        if opened == 2 {
            // The first call's answer comes late, just before the second call's own.
            write_frame(channel, &facts_answer(1)).unwrap();
            write_frame(channel, &facts_answer(frame.stream)).unwrap();
        }
    });
    let options = ClientOptions {
        call_timeout: Duration::from_millis(300),
        guest: "guest-7".into(),
        ..ClientOptions::default()
    };
    let client = AgentClient::handshake_with(channel, &options).unwrap();
    let started = Instant::now();
    let first = client.clone();
    let err = within(Duration::from_secs(5), move || first.facts()).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(matches!(&err, ClientError::NoAnswer { op: "facts", guest, .. } if guest == "guest-7"), "{err}");
    assert!(
        err.to_string().contains("`facts` got no answer from the agent of `guest-7` within `300ms`"),
        "{err}"
    );
    let facts = client.with_call_timeout(Duration::from_secs(5)).facts().unwrap();
    assert_eq!(facts.hostname, "answer-2");
}

#[test]
fn a_silent_agent_fails_file_transfers_and_relays() {
    let channel = fake_agent(&[], |_, _| {});
    let options = ClientOptions { call_timeout: Duration::from_millis(200), ..ClientOptions::default() };
    let client = AgentClient::handshake_with(channel, &options).unwrap();
    let c = client.clone();
    let err = within(Duration::from_secs(5), move || c.get_file("/x", &mut Vec::new())).unwrap_err();
    assert!(matches!(err, ClientError::NoAnswer { op: "file_get", .. }), "{err}");
    // More than a window: the put waits for credit that never comes.
    let c = client.clone();
    let err =
        within(Duration::from_secs(5), move || c.put_file("/x", &mut vec![0u8; 1 << 20].as_slice(), 0o644))
            .unwrap_err();
    assert!(matches!(err, ClientError::NoAnswer { op: "file_put", .. }), "{err}");
    let c = client.clone();
    let err = within(Duration::from_secs(5), move || c.open_relay("/s").map(|_| ())).unwrap_err();
    assert!(matches!(err, ClientError::NoAnswer { op: "relay", .. }), "{err}");
}

#[test]
fn an_exec_without_a_limit_fails_when_even_the_keepalives_stop() {
    let channel = fake_agent(&["keepalive"], |_, _| {});
    let options = ClientOptions { call_timeout: Duration::from_millis(100), ..ClientOptions::default() };
    let client = AgentClient::handshake_with(channel, &options).unwrap();
    let started = Instant::now();
    let err =
        within(Duration::from_secs(30), move || client.exec(ExecRequest::new(["sleep", "600"]))).unwrap_err();
    assert!(matches!(err, ClientError::NoAnswer { op: "exec", .. }), "{err}");
    // Never sooner than two keepalives, whatever the call timeout.
    assert!(started.elapsed() >= Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn a_silent_program_is_kept_alive_by_the_agent() {
    let harness = Harness::start();
    let options = ClientOptions { call_timeout: Duration::from_millis(100), ..ClientOptions::default() };
    let client = AgentClient::handshake_with(harness.channel(), &options).unwrap();
    // Silent for longer than the client's floor of two keepalive intervals.
    let result = client.exec(ExecRequest::new(["sleep", "11"])).unwrap();
    assert!(result.status.success());
}

#[test]
fn stale_partial_frame_before_the_welcome_is_skipped() {
    let (ours, mut fake_agent) = UnixStream::pair().unwrap();
    let fake = thread::spawn(move || {
        let mut magic = [0u8; 8];
        std::io::Read::read_exact(&mut fake_agent, &mut magic).unwrap();
        let hello: Hello = serde_json::from_slice(&read_frame(&mut fake_agent).unwrap().body).unwrap();
        // The tail of a frame the agent was writing when the previous host left: the rest of a body
        // whose header went to the old session, then a whole header claiming more than follows.
        let mut stale = vec![7u8; 300];
        stale.extend_from_slice(&(64 * 1024u32 + 5).to_be_bytes());
        stale.extend_from_slice(&[0, 0, 0, 3, FrameKind::Data as u8]);
        stale.extend_from_slice(&[1u8; 100]);
        fake_agent.write_all(&stale).unwrap();
        let welcome = Welcome {
            protocol: PROTOCOL_VERSION,
            nonce: hello.nonce,
            agent_version: "fake".into(),
            capabilities: vec![],
        };
        write_frame(
            &mut fake_agent,
            &Frame::new(0, FrameKind::Welcome, serde_json::to_vec(&welcome).unwrap()),
        )
        .unwrap();
        fake_agent
    });
    let options = ClientOptions { handshake_timeout: Duration::from_secs(3), ..ClientOptions::default() };
    let client = AgentClient::handshake_with(ours, &options).expect("handshake through stale bytes");
    assert_eq!(client.welcome().agent_version, "fake");
    drop(fake.join().unwrap());
}

#[test]
fn exec_output_kept_in_memory_is_capped() {
    let harness = Harness::start();
    let result = harness.connect().exec(ExecRequest::new(["head", "-c", "20000000", "/dev/zero"])).unwrap();
    assert!(result.status.success());
    assert_eq!(result.stdout.len(), 8 << 20);
    assert!(result.truncated);
    assert!(!harness.connect().exec(ExecRequest::new(["echo"])).unwrap().truncated);
}

#[test]
fn an_oversized_request_fails_only_that_call() {
    let harness = Harness::start();
    let client = harness.connect();
    let huge = "x".repeat(2 << 20);
    let err = client.exec(ExecRequest::new(["true"]).env("HUGE", huge)).unwrap_err();
    assert!(matches!(err, ClientError::RequestTooLarge { op: "exec", .. }), "{err}");
    assert!(err.to_string().contains("exceeds the limit of `1048576` bytes"), "{err}");
    assert!(client.exec(ExecRequest::new(["true"])).unwrap().status.success());
}

#[test]
fn the_agent_answers_an_oversized_open_on_its_stream_and_serves_on() {
    let harness = Harness::start();
    let mut channel = harness.channel();
    raw_handshake(&mut channel, PROTOCOL_VERSION);
    let mut open =
        serde_json::to_vec(&serde_json::json!({"op": "facts", "pad": "x".repeat(2 << 20)})).unwrap();
    let mut frame = ((open.len() as u32) + 5).to_be_bytes().to_vec();
    frame.extend_from_slice(&[0, 0, 0, 1, FrameKind::Open as u8]);
    frame.append(&mut open);
    channel.write_all(&frame).unwrap();
    channel.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let answer = read_frame(&mut channel).unwrap();
    assert_eq!((answer.stream, answer.kind), (1, FrameKind::Error), "{answer:?}");
    let message = String::from_utf8(answer.body).unwrap();
    assert!(message.contains("exceeds the limit of `1048576` bytes"), "{message}");
    // The session goes on: facts on the next stream are answered.
    write_frame(&mut channel, &Frame::new(3, FrameKind::Open, br#"{"op":"facts"}"#.to_vec())).unwrap();
    loop {
        let frame = read_frame(&mut channel).unwrap();
        assert_ne!(frame.stream, 0, "the session ended: {:?}", String::from_utf8_lossy(&frame.body));
        if frame.stream == 3 {
            assert_eq!(frame.kind, FrameKind::Control);
            break;
        }
    }
}
