//! Fuzzing on the stable toolchain, driven by proptest: the frame decoder, the client's handshake and
//! the agent's demultiplexer are fed arbitrary bytes and arbitrary frame sequences. None may panic,
//! hang, or accept a frame over its limit, and what the protocol promises (a frame reads back as it was
//! written; the handshake finds its welcome behind any garbage) holds for every input.
//!
//! `cargo test` runs each target for a bounded number of cases (CI). By hand, keep each going for ten
//! minutes: `NESTFORM_FUZZ_SECS=600 cargo test --release -p nestform-agent --test fuzz -- --nocapture
//! --test-threads 1`. Each target prints how many cases it ran. A failure prints the shrunk input.

use std::io::{Cursor, Read};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nestform_agent::agent::{serve_session, AgentConfig};
use nestform_agent::client::{AgentClient, ClientOptions};
use nestform_agent::frame::{
    read_frame, scan_for_welcome, skip_to_magic, write_frame, Frame, FrameError, FrameKind, MAGIC, MAX_BODY,
};
use nestform_agent::proto::{Hello, Welcome, PROTOCOL_VERSION};
use nestform_agent::transport::Pipe;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Runs `test` on values of `strategy`: one round of cases, or rounds until `NESTFORM_FUZZ_SECS` have
/// passed. Every round draws a fresh random seed.
fn fuzz<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let secs: u64 = std::env::var("NESTFORM_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut total = 0u64;
    loop {
        let config = Config { cases, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new(config);
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("fuzz {name}: after {total} cases: {e}");
        }
        total += u64::from(cases);
        if Instant::now() >= deadline {
            break;
        }
    }
    eprintln!("fuzz {name}: {total} cases, no failure");
}

/// Runs `f` on its own thread and fails the case if it takes longer than `limit`: a hang is a bug too.
fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TestCaseError> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).map_err(|_| TestCaseError::fail(format!("no answer within {limit:?}")))
}

fn any_kind() -> impl Strategy<Value = FrameKind> {
    prop::sample::select(vec![
        FrameKind::Hello,
        FrameKind::Welcome,
        FrameKind::Open,
        FrameKind::Data,
        FrameKind::ErrData,
        FrameKind::Eof,
        FrameKind::Credit,
        FrameKind::Control,
        FrameKind::Error,
        FrameKind::Close,
    ])
}

fn any_frame() -> impl Strategy<Value = Frame> {
    (0u32..6, any_kind(), prop::collection::vec(any::<u8>(), 0..512))
        .prop_map(|(stream, kind, body)| Frame::new(stream, kind, body))
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        write_frame(&mut out, f).unwrap();
    }
    out
}

/// Bytes that look like frames half the time: a length prefix, often plausible, then anything.
fn framelike_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        (
            prop_oneof![0u32..16, 5u32..600, Just(MAX_BODY + 5), Just(MAX_BODY + 6), any::<u32>()],
            prop::collection::vec(any::<u8>(), 0..700)
        )
            .prop_map(|(len, rest)| {
                let mut v = len.to_be_bytes().to_vec();
                v.extend(rest);
                v
            }),
    ]
}

#[test]
fn the_frame_decoder_takes_any_bytes() {
    fuzz("frame decoder", 2000, framelike_bytes(), |bytes| {
        let mut reader = Cursor::new(bytes.clone());
        // Each call consumes at least one byte or ends, so this many calls always reach the end.
        for _ in 0..=bytes.len() {
            match read_frame(&mut reader) {
                Ok(frame) => prop_assert!(frame.body.len() <= MAX_BODY as usize),
                // Read past: the reader stands at the next frame.
                Err(FrameError::Oversized { size, .. }) => prop_assert!(size > u64::from(MAX_BODY)),
                Err(FrameError::Magic) => {}
                Err(_) => return Ok(()),
            }
        }
        prop_assert!(false, "the decoder never reached the end of {} bytes", bytes.len());
        Ok(())
    });
}

#[test]
fn frames_read_back_as_they_were_written() {
    fuzz("frame round trip", 1000, prop::collection::vec(any_frame(), 0..12), |frames| {
        let mut reader = Cursor::new(encode(&frames));
        for expected in &frames {
            let got = read_frame(&mut reader).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&got, expected);
        }
        prop_assert!(matches!(read_frame(&mut reader), Err(FrameError::Closed)));
        Ok(())
    });
}

fn garbage_without_magic() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![any::<u8>(), prop::sample::select(MAGIC.to_vec())], 0..600)
        .prop_filter("contains the magic", |g| !g.windows(MAGIC.len()).any(|w| w == MAGIC))
}

#[test]
fn the_magic_is_found_behind_any_garbage() {
    let input = (garbage_without_magic(), prop::collection::vec(any::<u8>(), 0..64));
    fuzz("skip to magic", 2000, input, |(garbage, rest)| {
        let mut bytes = garbage.clone();
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&rest);
        let mut reader = Cursor::new(bytes);
        let skipped = skip_to_magic(&mut reader).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(skipped, garbage.len() as u64);
        let mut after = Vec::new();
        reader.read_to_end(&mut after).unwrap();
        prop_assert_eq!(after, rest);
        Ok(())
    });
}

fn welcome(nonce: u64) -> Welcome {
    Welcome {
        protocol: PROTOCOL_VERSION,
        nonce,
        agent_version: "fuzz".into(),
        capabilities: vec!["facts".into()],
    }
}

/// Garbage, stale welcomes to other nonces and frames of an earlier session, before the welcome a
/// client waits for: the scan returns exactly that welcome and hands back every byte after it.
#[test]
fn the_welcome_is_found_behind_stale_bytes() {
    let stale = prop::collection::vec(
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            any_frame().prop_map(|f| encode(&[f])),
            any::<u64>().prop_map(|n| encode(&[Frame::new(
                0,
                FrameKind::Welcome,
                serde_json::to_vec(&welcome(n)).unwrap()
            )])),
            // A welcome cut off in the middle, as when the agent was writing when the host left.
            (any::<u64>(), 1usize..60).prop_map(|(n, cut)| {
                let whole =
                    encode(&[Frame::new(0, FrameKind::Welcome, serde_json::to_vec(&welcome(n)).unwrap())]);
                whole[..cut.min(whole.len() - 1)].to_vec()
            }),
        ],
        0..6,
    );
    let input = (stale, any::<u64>(), prop::collection::vec(any::<u8>(), 0..200));
    fuzz("scan for welcome", 1000, input, |(stale, nonce, tail)| {
        let mut bytes: Vec<u8> = stale.concat();
        let ours = welcome(nonce);
        bytes.extend(encode(&[Frame::new(0, FrameKind::Welcome, serde_json::to_vec(&ours).unwrap())]));
        bytes.extend_from_slice(&tail);
        let mut reader = Cursor::new(bytes);
        let (found, mut after) = scan_for_welcome(&mut reader, |body| {
            serde_json::from_slice::<Welcome>(body).ok().filter(|w| w.nonce == nonce)
        })
        .map_err(|e| TestCaseError::fail(format!("the welcome was not found: {e}")))?;
        prop_assert_eq!(found, ours);
        reader.read_to_end(&mut after).unwrap();
        prop_assert_eq!(after, tail);
        Ok(())
    });
}

/// A client whose channel answers with anything but its welcome gives up with an error within its
/// handshake limit; it never panics and never waits longer.
#[test]
fn the_client_handshake_takes_any_answer() {
    let answer = prop::collection::vec(
        prop_oneof![framelike_bytes(), any_frame().prop_map(|f| encode(&[f])), Just(MAGIC.to_vec())],
        0..5,
    );
    fuzz("client handshake", 300, answer, |answer| {
        let bytes = answer.concat();
        let options = ClientOptions { handshake_timeout: Duration::from_secs(2), ..ClientOptions::default() };
        let result = within(Duration::from_secs(10), move || {
            AgentClient::handshake_with(Pipe::new(Cursor::new(bytes), std::io::sink()), &options).map(drop)
        })?;
        // The client's nonce is random: no answer made up in advance can be its welcome.
        prop_assert!(result.is_err());
        Ok(())
    });
}

fn hello() -> Vec<u8> {
    let hello = Hello { protocol: PROTOCOL_VERSION, nonce: 7, client_version: "fuzz".into() };
    let mut out = MAGIC.to_vec();
    out.extend(encode(&[Frame::new(0, FrameKind::Hello, serde_json::to_vec(&hello).unwrap())]));
    out
}

/// What a client may send after its hello: requests that are harmless in any order (facts, a file
/// that is not there, a relay off the allowlist), garbage bodies, and every other kind of frame on the
/// same few streams, so frames for open, closed and unknown streams all arrive.
fn session_frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let open = prop_oneof![
        Just(br#"{"op":"facts"}"#.to_vec()),
        Just(br#"{"op":"file_get","path":"/nonexistent/nestform-fuzz"}"#.to_vec()),
        Just(br#"{"op":"relay","path":"/nonexistent/nestform-fuzz.sock"}"#.to_vec()),
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    let frame = prop_oneof![
        (1u32..5, open).prop_map(|(s, body)| encode(&[Frame::new(s, FrameKind::Open, body)])),
        (1u32..5, any::<u32>()).prop_map(|(s, n)| encode(&[Frame::new(
            s,
            FrameKind::Credit,
            n.to_be_bytes().to_vec()
        )])),
        any_frame().prop_map(|f| encode(&[f])),
        framelike_bytes(),
        Just(MAGIC.to_vec()),
    ];
    prop::collection::vec(frame, 0..16)
}

/// The agent's demultiplexer serves whatever follows a valid hello and ends its session when the
/// channel ends, without panicking or hanging.
#[test]
fn the_agent_serves_any_session() {
    fuzz("agent demultiplexer", 300, session_frames(), |frames| {
        let mut bytes = hello();
        bytes.extend(frames.concat());
        let config = Arc::new(AgentConfig::default());
        let result = within(Duration::from_secs(20), move || {
            serve_session(Pipe::new(Cursor::new(bytes), std::io::sink()), &config)
                .map(drop)
                .map_err(|e| e.to_string())
        })?;
        // A session that began with a valid hello ends because the channel did, not with an error.
        prop_assert!(result.is_ok(), "{:?}", result);
        Ok(())
    });
}
