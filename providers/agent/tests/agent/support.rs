//! Helpers: an agent serving sessions on in-process `UnixStream` pairs, and raw frame access.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use nestform_agent::frame::{read_frame, write_frame, Frame, FrameKind, MAGIC};
use nestform_agent::proto::{Hello, Welcome};
use nestform_agent::{agent, AgentClient, AgentConfig};

/// An agent loop that serves one session per pair it is handed, like the port loop serves one session
/// per host connection.
pub struct Harness {
    to_agent: Option<mpsc::Sender<UnixStream>>,
    agent: Option<JoinHandle<()>>,
}

impl Harness {
    pub fn start() -> Self {
        Self::with_config(AgentConfig::default())
    }

    pub fn with_relay(allow: Vec<PathBuf>) -> Self {
        Self::with_config(AgentConfig { relay_allow: allow, ..AgentConfig::default() })
    }

    pub fn with_config(config: AgentConfig) -> Self {
        let (tx, rx) = mpsc::channel::<UnixStream>();
        let agent = thread::spawn(move || {
            let mut log = Vec::new();
            let accept = || rx.recv().map_err(|_| std::io::Error::other("harness stopped"));
            agent::serve_each(accept, config, &mut log);
        });
        Self { to_agent: Some(tx), agent: Some(agent) }
    }

    /// A fresh channel whose other end the agent serves.
    pub fn channel(&self) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        self.to_agent.as_ref().unwrap().send(theirs).unwrap();
        ours
    }

    pub fn connect(&self) -> AgentClient {
        AgentClient::handshake(self.channel()).expect("handshake")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // The loop ends once the session in progress ends; not joined, so a test that fails while a
        // session is still open reports its failure instead of hanging.
        self.to_agent.take();
        self.agent.take();
    }
}

/// Performs the handshake by hand and returns the agent's welcome.
pub fn raw_handshake(stream: &mut UnixStream, protocol: u32) -> Welcome {
    stream.write_all(&MAGIC).unwrap();
    let hello = Hello { protocol, nonce: 42, client_version: "test".into() };
    write_frame(stream, &Frame::new(0, FrameKind::Hello, serde_json::to_vec(&hello).unwrap())).unwrap();
    let frame = read_frame(stream).unwrap();
    assert_eq!((frame.stream, frame.kind), (0, FrameKind::Welcome));
    let welcome: Welcome = serde_json::from_slice(&frame.body).unwrap();
    assert_eq!(welcome.nonce, 42);
    welcome
}

/// The agent's side of a handshake, for a fake agent on `stream`: takes the magic and the hello,
/// answers with a welcome of this protocol version.
pub fn fake_welcome(stream: &mut UnixStream) {
    let mut magic = [0u8; 8];
    stream.read_exact(&mut magic).unwrap();
    assert_eq!(magic, MAGIC);
    let hello: Hello = serde_json::from_slice(&read_frame(stream).unwrap().body).unwrap();
    let welcome = Welcome {
        protocol: nestform_agent::proto::PROTOCOL_VERSION,
        nonce: hello.nonce,
        agent_version: "fake".into(),
        capabilities: vec![],
    };
    write_frame(stream, &Frame::new(0, FrameKind::Welcome, serde_json::to_vec(&welcome).unwrap())).unwrap();
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
