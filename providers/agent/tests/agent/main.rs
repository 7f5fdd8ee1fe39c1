//! End-to-end tests: the agent's session loop on one end of a `UnixStream` pair, the client on the other.

mod reliability;
mod support;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nestform_agent::frame::{read_frame, write_frame, Frame, FrameKind};
use nestform_agent::{
    serve_session, AgentClient, AgentConfig, AgentError, ClientError, ClientOptions, ExecRequest, Pipe,
    PROTOCOL_VERSION,
};
use support::{bytes, fake_welcome, raw_handshake, Harness};

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["sh", "-c", script])
}

#[test]
fn handshake_reports_version_and_capabilities() {
    let harness = Harness::start();
    let client = harness.connect();
    let welcome = client.welcome();
    assert_eq!(welcome.protocol, PROTOCOL_VERSION);
    assert_eq!(welcome.agent_version, env!("CARGO_PKG_VERSION"));
    for op in ["facts", "exec", "file_put", "file_get", "relay"] {
        assert!(welcome.capabilities.iter().any(|c| c == op), "missing `{op}`");
    }
}

#[test]
fn version_mismatch_is_a_clear_error_on_both_sides() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let agent = thread::spawn(move || serve_session(theirs, &Arc::new(AgentConfig::default())));
    let options = ClientOptions { protocol: PROTOCOL_VERSION + 1, ..ClientOptions::default() };
    let err = AgentClient::handshake_with(ours, &options).err().expect("mismatch must fail");
    assert!(
        matches!(err, ClientError::VersionMismatch { client, agent } if client == PROTOCOL_VERSION + 1 && agent == PROTOCOL_VERSION),
        "{err}"
    );
    assert!(err.to_string().contains("client speaks `2`, agent speaks `1`"), "{err}");
    match agent.join().unwrap() {
        Err(AgentError::VersionMismatch { client, agent }) => assert_eq!((client, agent), (2, 1)),
        other => panic!("agent should refuse, got {other:?}"),
    }
}

#[test]
fn handshake_times_out_when_nobody_answers() {
    let (ours, _silent) = UnixStream::pair().unwrap();
    let options = ClientOptions { handshake_timeout: Duration::from_millis(200), ..ClientOptions::default() };
    let started = Instant::now();
    let err = AgentClient::handshake_with(ours, &options).err().expect("must time out");
    assert!(matches!(err, ClientError::HandshakeTimeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn facts_describe_this_machine() {
    let harness = Harness::start();
    let facts = harness.connect().facts().unwrap();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(facts.kernel_release, release.trim());
    assert!(facts.cpu_count >= 1);
    assert!(facts.memory_bytes > 1 << 20);
    assert_eq!(facts.kvm_present, std::path::Path::new("/dev/kvm").exists());
    assert!(facts.addresses.iter().any(|a| a.address.is_loopback() && a.interface == "lo"));
}

#[test]
fn exec_returns_output_and_exit_code() {
    let harness = Harness::start();
    let client = harness.connect();
    let result = client.exec(sh("echo out; echo err >&2; exit 3")).unwrap();
    assert_eq!(result.stdout, b"out\n");
    assert_eq!(result.stderr, b"err\n");
    assert_eq!(result.status.code, Some(3));
    assert!(!result.status.success());

    let killed = client.exec(sh("kill -TERM $$")).unwrap();
    assert_eq!((killed.status.code, killed.status.signal), (None, Some(15)));
}

#[test]
fn exec_passes_env_and_cwd() {
    let harness = Harness::start();
    let dir = tempfile::tempdir().unwrap();
    let request = sh("echo \"$NF_TEST\"; pwd").env("NF_TEST", "hello").cwd(dir.path().to_str().unwrap());
    let result = harness.connect().exec(request).unwrap();
    let expected = format!("hello\n{}\n", dir.path().canonicalize().unwrap().display());
    assert_eq!(String::from_utf8(result.stdout).unwrap(), expected);
    assert!(result.status.success());
}

#[test]
fn exec_streams_stdin_larger_than_the_window() {
    let harness = Harness::start();
    let input = bytes(3 << 20, 7);
    let result = harness.connect().exec(ExecRequest::new(["cat"]).stdin(input.clone())).unwrap();
    assert!(result.status.success());
    assert_eq!(result.stdout.len(), input.len());
    assert!(result.stdout == input);
}

#[test]
fn exec_timeout_kills_the_whole_process_group() {
    let harness = Harness::start();
    let started = Instant::now();
    // The background sleep keeps stdout open: only killing the group ends the stream.
    let request = sh("sleep 30 & echo started; sleep 30").timeout(Duration::from_millis(300));
    let result = harness.connect().exec(request).unwrap();
    assert!(result.status.timed_out);
    assert_eq!(result.status.signal, Some(9));
    assert_eq!(result.stdout, b"started\n");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[test]
fn exec_streaming_delivers_output_before_the_program_ends() {
    let harness = Harness::start();
    let started = Instant::now();
    let mut first_chunk = None;
    let mut stdout = Vec::new();
    let status = harness
        .connect()
        .exec_streaming(
            sh("echo early; sleep 0.5; echo late"),
            |chunk| {
                first_chunk.get_or_insert_with(|| started.elapsed());
                stdout.extend_from_slice(chunk);
            },
            |_| {},
        )
        .unwrap();
    let total = started.elapsed();
    assert!(status.success());
    assert_eq!(stdout, b"early\nlate\n");
    assert!(first_chunk.unwrap() + Duration::from_millis(300) < total, "{first_chunk:?} vs {total:?}");
}

#[test]
fn exec_of_a_missing_program_is_a_remote_error() {
    let harness = Harness::start();
    let err = harness.connect().exec(ExecRequest::new(["/nonexistent/program"])).unwrap_err();
    assert!(
        matches!(&err, ClientError::Remote { op: "exec", message } if message.contains("starting `/nonexistent/program` failed")),
        "{err}"
    );
}

#[test]
fn many_concurrent_execs_share_one_channel() {
    let harness = Harness::start();
    let client = harness.connect();
    let workers: Vec<_> = (0..32)
        .map(|i| {
            let client = client.clone();
            thread::spawn(move || {
                let result = client.exec(sh(&format!("sleep 0.2; echo {i}; echo e{i} >&2"))).unwrap();
                assert_eq!(String::from_utf8(result.stdout).unwrap(), format!("{i}\n"));
                assert_eq!(String::from_utf8(result.stderr).unwrap(), format!("e{i}\n"));
            })
        })
        .collect();
    let started = Instant::now();
    for worker in workers {
        worker.join().unwrap();
    }
    // 32 sleeps of 0.2 s in sequence would take 6.4 s; concurrently far less.
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn file_put_and_get_round_trip_with_checksum_and_mode() {
    let harness = Harness::start();
    let client = harness.connect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("payload.bin");
    let remote = path.to_str().unwrap();
    let content = bytes(5 << 20, 11);

    let put = client.put_file(remote, &mut content.as_slice(), 0o640).unwrap();
    assert_eq!(put.size, content.len() as u64);
    assert_eq!(put.crc32, crc32fast::hash(&content));
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777, 0o640);
    // Atomic write: only the destination is left in the directory, no temporary file.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["payload.bin"]);

    let mut back = Vec::new();
    let got = client.get_file(remote, &mut back).unwrap();
    assert_eq!((got.size, got.mode, got.crc32), (put.size, 0o640, put.crc32));
    assert!(back == content);

    // Overwriting replaces the content whole.
    client.put_file(remote, &mut &b"short"[..], 0o600).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"short");
}

#[test]
fn file_errors_come_back_from_the_agent() {
    let harness = Harness::start();
    let client = harness.connect();
    let err = client.get_file("/nonexistent/file", &mut Vec::new()).unwrap_err();
    assert!(
        matches!(&err, ClientError::Remote { op: "file_get", message } if message.contains("/nonexistent/file")),
        "{err}"
    );
    let big = bytes(2 << 20, 3);
    let err = client.put_file("/nonexistent/dir/file", &mut big.as_slice(), 0o644).unwrap_err();
    assert!(matches!(&err, ClientError::Remote { op: "file_put", .. }), "{err}");
    let err = client.put_file("relative/file", &mut &b"x"[..], 0o644).unwrap_err();
    assert!(err.to_string().contains("is not absolute"), "{err}");
    // The connection is still fine afterwards.
    assert!(client.exec(ExecRequest::new(["true"])).unwrap().status.success());
}

fn echo_server(path: &std::path::Path) -> thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            thread::spawn(move || {
                let mut writer = conn.try_clone().unwrap();
                let _ = std::io::copy(&mut conn, &mut writer);
            });
        }
    })
}

#[test]
fn relay_pipes_bytes_to_an_allowed_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("echo.sock");
    let _server = echo_server(&socket);
    let harness = Harness::with_relay(vec![socket.clone()]);
    let client = harness.connect();

    let mut relay = client.open_relay(socket.to_str().unwrap()).unwrap();
    relay.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    relay.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");

    // Both directions at once, more than a window each way, from two threads.
    let payload = bytes(2 << 20, 5);
    let mut writer = relay.writer();
    let sender = {
        let payload = payload.clone();
        thread::spawn(move || {
            writer.write_all(&payload).unwrap();
            writer.shutdown_write().unwrap();
        })
    };
    let mut echoed = Vec::new();
    relay.read_to_end(&mut echoed).unwrap();
    sender.join().unwrap();
    assert!(echoed == payload);
}

#[test]
fn relay_off_the_allowlist_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed.sock");
    let other = dir.path().join("other.sock");
    let _server = echo_server(&other);
    let harness = Harness::with_relay(vec![allowed]);
    let err = harness.connect().open_relay(other.to_str().unwrap()).err().expect("must be refused");
    assert!(
        matches!(&err, ClientError::Remote { op: "relay", message } if message.contains("not on the agent's allowlist")),
        "{err}"
    );
}

/// Two sessions of one agent process (two ports of one guest, as two nestform runs use them): an
/// exclusive relay to a socket is refused to the second while the first holds it, and given once
/// the first let go; a plain relay is never refused.
#[test]
fn an_exclusive_relay_is_refused_while_another_session_holds_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("chardev.sock");
    let _server = echo_server(&socket);
    let path = socket.to_str().unwrap();
    let (one, two) = (Harness::with_relay(vec![socket.clone()]), Harness::with_relay(vec![socket.clone()]));
    let (first, second) = (one.connect(), two.connect());

    let held = first.open_exclusive_relay(path).unwrap();
    let err = second.open_exclusive_relay(path).err().expect("the socket is held");
    assert!(err.is_busy(), "{err}");
    assert!(err.to_string().contains("relayed to by another session"), "{err}");
    let mut plain = second.open_relay(path).unwrap();
    plain.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    plain.read_exact(&mut buf).unwrap();

    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match second.open_exclusive_relay(path) {
            Ok(_) => break,
            Err(e) if e.is_busy() && std::time::Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("still refused after the first let go: {e}"),
        }
    }
}

#[test]
fn oversized_frame_closes_the_connection_with_a_message() {
    let harness = Harness::start();
    let mut channel = harness.channel();
    raw_handshake(&mut channel, PROTOCOL_VERSION);
    // A length of 4 GiB: the agent must refuse it, not try to allocate it.
    let mut header = u32::MAX.to_be_bytes().to_vec();
    header.extend_from_slice(&[0, 0, 0, 1, FrameKind::Data as u8]);
    channel.write_all(&header).unwrap();
    channel.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let frame = read_frame(&mut channel).unwrap();
    assert_eq!((frame.stream, frame.kind), (0, FrameKind::Error));
    let message = String::from_utf8(frame.body).unwrap();
    assert!(message.contains("exceeds the limit of `1048576` bytes"), "{message}");
    let mut rest = Vec::new();
    channel.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    // The agent loop goes on serving new connections.
    assert!(harness.connect().exec(ExecRequest::new(["true"])).unwrap().status.success());
}

#[test]
fn an_exec_the_agent_never_answers_fails_after_its_limit_and_the_grace() {
    let (ours, mut fake_agent) = UnixStream::pair().unwrap();
    let fake = thread::spawn(move || {
        fake_welcome(&mut fake_agent);
        // Takes the exec and stays silent, as a stalled relay does; reports what the client sent next.
        let open = read_frame(&mut fake_agent).unwrap();
        let next = read_frame(&mut fake_agent).unwrap();
        (open.kind, next.stream == open.stream, next.kind)
    });
    let options = ClientOptions { exec_grace: Duration::from_millis(300), ..ClientOptions::default() };
    let client = AgentClient::handshake_with(ours, &options).unwrap();
    let started = Instant::now();
    let err = client.exec(sh("sleep 600").timeout(Duration::from_millis(200))).unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, ClientError::NoAnswer { op: "exec", .. }), "{err}");
    assert!(err.to_string().contains("stalled"), "{err}");
    assert!(waited >= Duration::from_millis(500), "gave up before the limit and the grace: {waited:?}");
    // The client closes the stream, so a real agent would kill the program.
    let (open, same_stream, next) = fake.join().unwrap();
    assert_eq!((open, same_stream), (FrameKind::Open, true));
    assert!(matches!(next, FrameKind::Close | FrameKind::Error), "{next:?}");
}

#[test]
fn client_rejects_an_oversized_frame_from_the_agent() {
    let (ours, mut fake_agent) = UnixStream::pair().unwrap();
    let fake = thread::spawn(move || {
        fake_welcome(&mut fake_agent);
        read_frame(&mut fake_agent).unwrap(); // the client's Open
        fake_agent.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 8]).unwrap();
        read_frame(&mut fake_agent).unwrap()
    });
    let client = AgentClient::handshake(ours).unwrap();
    let err = client.facts().unwrap_err();
    assert!(matches!(&err, ClientError::Disconnected(m) if m.contains("exceeds the limit")), "{err}");
    let notice = fake.join().unwrap();
    assert_eq!((notice.stream, notice.kind), (0, FrameKind::Error));
}

#[test]
fn slow_reader_on_one_stream_does_not_block_another() {
    let harness = Harness::start();
    let client = harness.connect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    std::fs::write(&path, bytes(4 << 20, 9)).unwrap();

    struct Slow(usize);
    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            thread::sleep(Duration::from_millis(100));
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let slow = {
        let client = client.clone();
        let remote = path.to_str().unwrap().to_string();
        thread::spawn(move || {
            let mut sink = Slow(0);
            client.get_file(&remote, &mut sink).unwrap();
            sink.0
        })
    };
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    for _ in 0..10 {
        let result = client.exec(sh("echo quick")).unwrap();
        assert_eq!(result.stdout, b"quick\n");
    }
    let quick = started.elapsed();
    // 4 MiB in 64 KiB chunks at 100 ms each takes about 6.4 s; the quick stream must not wait for it.
    assert!(!slow.is_finished(), "the slow transfer finished too early for this test to mean anything");
    assert!(quick < Duration::from_secs(3), "quick stream took {quick:?}");
    assert_eq!(slow.join().unwrap(), 4 << 20);
}

#[test]
fn reconnect_after_the_client_drops() {
    let harness = Harness::start();
    let first = harness.connect();
    assert!(first.exec(ExecRequest::new(["true"])).unwrap().status.success());
    drop(first);

    // Stale bytes before the magic, as a virtio-serial port may hold after a host reconnect.
    let mut channel = harness.channel();
    channel.write_all(b"\x00\x00stale bytes").unwrap();
    let second = AgentClient::handshake(channel).unwrap();
    assert_eq!(second.exec(sh("echo again")).unwrap().stdout, b"again\n");
}

#[test]
fn a_lost_connection_kills_running_programs() {
    let harness = Harness::start();
    let channel = harness.channel();
    let cut = channel.try_clone().unwrap();
    let client = AgentClient::handshake(channel).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 30", pidfile.display());
    let running = thread::spawn(move || client.exec(sh(&script)));
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the program did not start");
        thread::sleep(Duration::from_millis(10));
    };
    cut.shutdown(std::net::Shutdown::Both).unwrap();
    assert!(matches!(running.join().unwrap(), Err(ClientError::Disconnected(_))));
    let proc_dir = format!("/proc/{pid}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&proc_dir).exists() {
        assert!(Instant::now() < deadline, "`sleep` (pid {pid}) survived the lost connection");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_binary_serves_a_session_on_stdio() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nestform-agent"))
        .arg("--stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let transport = Pipe::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let client = AgentClient::handshake(transport).unwrap();
    assert_eq!(client.exec(sh("echo from the binary")).unwrap().stdout, b"from the binary\n");
    drop(client);
    assert!(child.wait().unwrap().success());
}

#[test]
fn sending_past_credit_is_a_protocol_error() {
    let harness = Harness::start();
    let mut channel = harness.channel();
    raw_handshake(&mut channel, PROTOCOL_VERSION);
    let open = serde_json::json!({"op": "exec", "argv": ["sleep", "5"], "env": [], "clear_env": false,
        "cwd": null, "stdin": true, "timeout_ms": 10000});
    write_frame(&mut channel, &Frame::new(1, FrameKind::Open, serde_json::to_vec(&open).unwrap())).unwrap();
    // `sleep` never reads stdin, so after its pipe fills nobody consumes and no credit comes back;
    // a well-behaved sender would stop at the window (256 KiB), this one does not.
    let reader = {
        let mut channel = channel.try_clone().unwrap();
        thread::spawn(move || loop {
            let frame = read_frame(&mut channel).unwrap();
            if frame.stream == 0 {
                return frame;
            }
        })
    };
    for _ in 0..16 {
        if write_frame(&mut channel, &Frame::new(1, FrameKind::Data, vec![0; 64 * 1024])).is_err() {
            break;
        }
    }
    let notice = reader.join().unwrap();
    assert_eq!(notice.kind, FrameKind::Error);
    let message = String::from_utf8(notice.body).unwrap();
    assert!(message.contains("stream `1` sent past its credit"), "{message}");
}

#[test]
fn streams_over_the_limit_are_refused() {
    let harness = Harness::with_config(AgentConfig { max_streams: 2, ..AgentConfig::default() });
    let client = harness.connect();
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            thread::spawn(move || client.exec(sh("sleep 2")).unwrap())
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let err = client.exec(ExecRequest::new(["true"])).unwrap_err();
    assert!(err.to_string().contains("too many concurrent streams: the limit is `2`"), "{err}");
    for worker in busy {
        assert!(worker.join().unwrap().status.success());
    }
    assert!(client.exec(ExecRequest::new(["true"])).unwrap().status.success());
}

#[test]
fn a_new_handshake_on_the_same_channel_starts_a_new_session() {
    let (mut channel, theirs) = UnixStream::pair().unwrap();
    let agent = thread::spawn(move || serve_session(theirs, &Arc::new(AgentConfig::default())));
    raw_handshake(&mut channel, PROTOCOL_VERSION);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // Stream 1 leaves unread output in the channel; stream 2 keeps running until the session ends.
    for (id, script) in
        [(1, "echo stale".to_string()), (2, format!("echo $$ > {}; exec sleep 30", pidfile.display()))]
    {
        let open = serde_json::json!({"op": "exec", "argv": ["sh", "-c", script], "env": [],
            "clear_env": false, "cwd": null, "stdin": false, "timeout_ms": null});
        write_frame(&mut channel, &Frame::new(id, FrameKind::Open, serde_json::to_vec(&open).unwrap()))
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the program did not start");
        thread::sleep(Duration::from_millis(10));
    };

    // The host reconnects without the agent seeing it leave: a new magic and hello on the same channel.
    let client = AgentClient::handshake(channel).unwrap();
    assert_eq!(client.exec(sh("echo fresh")).unwrap().stdout, b"fresh\n");
    let proc_dir = format!("/proc/{pid}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&proc_dir).exists() {
        assert!(Instant::now() < deadline, "the old session's program (pid {pid}) survived");
        thread::sleep(Duration::from_millis(10));
    }
    drop(client);
    let end = agent.join().unwrap().unwrap();
    assert_eq!((end.handshakes, end.streams), (2, 3));
}

#[test]
fn stdin_to_a_program_that_stops_reading_ends_cleanly() {
    let harness = Harness::start();
    let client = harness.connect();
    let input = bytes(4 << 20, 13);
    let result = client.exec(ExecRequest::new(["head", "-c", "10"]).stdin(input.clone())).unwrap();
    assert!(result.status.success());
    assert_eq!(result.stdout, &input[..10]);
    // The unread stdin did not break the connection.
    assert!(client.exec(ExecRequest::new(["true"])).unwrap().status.success());
    assert!(client.disconnected().is_none());
}
