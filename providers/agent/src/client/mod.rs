//! The host side: [`AgentClient`], a blocking client usable from several threads at once.
//!
//! Every operation opens its own stream, so calls from different threads run concurrently over the one
//! channel. The client is cheap to clone; the connection ends when the last clone (and the last
//! [`RelayStream`]) is dropped.

mod relay;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub use relay::{RelayStream, RelayWriter};

use crate::frame::{scan_for_welcome, write_frame, Frame, FrameError, FrameKind, DATA_CHUNK, MAGIC};
use crate::mux::{Conn, Incoming, Stream, StreamEnd};
use crate::proto::{
    AgentMessage, ClientMessage, ExecSpec, ExitStatus, Facts, FileInfo, Hello, Request, Welcome,
    KEEPALIVE_INTERVAL, PROTOCOL_VERSION,
};
use crate::transport::Transport;

/// What can go wrong talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The channel failed during the handshake.
    #[error("channel i/o failed: {0}")]
    Io(#[from] io::Error),
    /// The agent did not answer the hello in time.
    #[error("the agent did not answer the handshake within `{timeout:?}`")]
    HandshakeTimeout {
        /// The limit that ran out.
        timeout: Duration,
    },
    /// The agent speaks another protocol version.
    #[error("protocol version mismatch: client speaks `{client}`, agent speaks `{agent}`")]
    VersionMismatch {
        /// This client's version.
        client: u32,
        /// The agent's version.
        agent: u32,
    },
    /// The agent refused or garbled the handshake.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The agent broke the protocol inside a stream.
    #[error("protocol error in `{op}`: {message}")]
    Protocol {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The request does not fit in a frame; nothing was sent and the connection is unharmed.
    #[error("`{op}` request of `{size}` bytes exceeds the limit of `{limit}` bytes")]
    RequestTooLarge {
        /// The operation.
        op: &'static str,
        /// Size of the request's JSON.
        size: usize,
        /// The limit on a frame's body.
        limit: u32,
    },
    /// The connection ended.
    #[error("the connection to the agent ended: {0}")]
    Disconnected(String),
    /// The client gave up waiting: an exec's own limit plus the grace ran out with no answer, or the
    /// agent sent nothing at all on the call for [`ClientOptions::call_timeout`] (a program that cannot
    /// be killed, an agent that hangs, or a path to the agent that stalled).
    #[error("`{op}` got no answer from the agent of `{guest}` within `{after:?}`; the agent or the way to it is stalled")]
    NoAnswer {
        /// The operation.
        op: &'static str,
        /// The guest, as the client was told its name ([`ClientOptions::guest`]).
        guest: String,
        /// How long the client waited.
        after: Duration,
    },
    /// The agent reported that the operation failed.
    #[error("`{op}` failed in the agent: {message}")]
    Remote {
        /// The operation.
        op: &'static str,
        /// The agent's message.
        message: String,
    },
    /// A transferred file's checksum or size did not match.
    #[error("`{path}` arrived damaged: expected `{expected_size}` bytes with crc32 `{expected_crc:08x}`, got `{size}` bytes with crc32 `{crc:08x}`")]
    Damaged {
        /// Remote path.
        path: String,
        /// Size announced by the sender.
        expected_size: u64,
        /// Checksum announced by the sender.
        expected_crc: u32,
        /// Size received.
        size: u64,
        /// Checksum of what was received.
        crc: u32,
    },
    /// Reading the local source or writing the local destination of a transfer failed.
    #[error("local i/o for `{path}` failed: {source}")]
    Local {
        /// Remote path of the transfer.
        path: String,
        /// The error.
        source: io::Error,
    },
}

impl ClientError {
    /// Whether an exclusive relay was refused because another session holds its socket.
    pub fn is_busy(&self) -> bool {
        matches!(self, ClientError::Remote { message, .. } if message.starts_with(crate::agent::RELAY_BUSY))
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long to wait for the agent's answer to the hello.
    pub handshake_timeout: Duration,
    /// How long past an exec's own limit the client still waits for the agent's answer: the agent
    /// needs a moment to kill the program and report, and the answer may cross several levels of
    /// relays. Past it the exec fails with [`ClientError::NoAnswer`].
    pub exec_grace: Duration,
    /// How long a call waits for the agent to send anything at all: the whole of `facts` and of
    /// opening a relay; the silence between two frames of a file transfer or (from an agent that sends
    /// keepalives) of an exec. Past it the call fails with [`ClientError::NoAnswer`]. A transfer that
    /// keeps moving is never cut: a large file across several levels takes as long as it takes.
    /// [`AgentClient::with_call_timeout`] changes it per call.
    pub call_timeout: Duration,
    /// The guest's name, for errors.
    pub guest: String,
    /// Protocol version to announce; only tests set anything but [`PROTOCOL_VERSION`].
    pub protocol: u32,
}

/// Default of [`ClientOptions::call_timeout`]: a dozen keepalives of a running exec, and far more than
/// `facts` takes at the deepest level the lab runs (well under a second).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            exec_grace: Duration::from_secs(30),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            guest: "unnamed".into(),
            protocol: PROTOCOL_VERSION,
        }
    }
}

/// A program to run in the guest: the engine's [`GuestCommand`](nestform_provider::GuestCommand),
/// built the same way (`ExecRequest::new(["uname", "-r"]).timeout(...)`).
pub use nestform_provider::GuestCommand as ExecRequest;

/// Output and status of a finished program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// How it ended.
    pub status: ExitStatus,
    /// What it wrote to stdout, up to [`EXEC_OUTPUT_LIMIT`].
    pub stdout: Vec<u8>,
    /// What it wrote to stderr, up to [`EXEC_OUTPUT_LIMIT`].
    pub stderr: Vec<u8>,
    /// Stdout or stderr went past [`EXEC_OUTPUT_LIMIT`] and the rest was dropped (the program still
    /// ran to its end); [`AgentClient::exec_streaming`] sees all of it.
    pub truncated: bool,
}

/// Bytes of stdout, and again of stderr, that [`AgentClient::exec`] keeps in memory (8 MiB): the
/// output of a command, not a transfer; larger output belongs in `exec_streaming` or a file.
pub const EXEC_OUTPUT_LIMIT: usize = 8 << 20;

pub(crate) struct ClientInner {
    conn: Arc<Conn>,
    welcome: Welcome,
    exec_grace: Duration,
    guest: String,
    /// The agent sends keepalives on running execs, so a silent exec stream means a stalled one.
    keepalive: bool,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.conn.fail("the client closed the connection");
    }
}

/// A connection to one agent.
#[derive(Clone)]
pub struct AgentClient {
    inner: Arc<ClientInner>,
    /// Per handle, so that one caller can give a call more time without changing everyone's.
    call_timeout: Duration,
}

/// Closes the stream when an operation returns, however it returns.
struct OpStream {
    stream: Arc<Stream>,
    op: &'static str,
    guest: String,
    /// When the client stops waiting for the agent's answer, and how long that was from the start.
    deadline: Option<(Instant, Duration)>,
    /// How long the agent may say nothing at all on the stream.
    idle: Option<Duration>,
    /// False once the stream was handed on (a relay), whose new owner closes it.
    close_on_drop: bool,
    /// Set when the call gave up: the stream is forgotten at once, so a late answer is dropped.
    gave_up: std::cell::Cell<bool>,
}

impl Drop for OpStream {
    fn drop(&mut self) {
        if self.gave_up.get() {
            self.stream.abandon();
        } else if self.close_on_drop {
            self.stream.close();
        }
    }
}

impl OpStream {
    /// Next item; the agent's `Error` frame becomes [`ClientError::Remote`].
    fn next(&self) -> Result<Option<Incoming>, ClientError> {
        match self.stream.recv_within(self.deadline.map(|(at, _)| at), self.idle) {
            Ok(Incoming::Error(message)) => Err(ClientError::Remote { op: self.op, message }),
            Ok(item) => Ok(Some(item)),
            Err(StreamEnd::Closed) => Ok(None),
            Err(StreamEnd::Failed(reason)) => Err(ClientError::Disconnected(reason)),
            // Dropping the `OpStream` closes the stream, which tells the agent to kill the program.
            Err(StreamEnd::Timeout) => Err(self.no_answer()),
            // Only sending refuses a frame as too large.
            Err(end @ StreamEnd::TooLarge { .. }) => Err(self.protocol(&end.to_string())),
        }
    }

    /// The call gives up: the error says after how long, and the stream is abandoned on drop.
    fn no_answer(&self) -> ClientError {
        self.gave_up.set(true);
        let after = match self.deadline {
            Some((at, after)) if Instant::now() >= at => after,
            _ => self.idle.or(self.deadline.map(|(_, after)| after)).unwrap_or_default(),
        };
        // Where the call's bytes are, while the streams still show it: this one waiting for credit
        // is a request stuck on this side; sent with nothing heard back is an answer that never came.
        tracing::warn!(op = self.op, guest = %self.guest, ?after, stream = self.stream.id(), path = %crate::mux::describe_all(), "an agent call got no answer");
        ClientError::NoAnswer { op: self.op, guest: self.guest.clone(), after }
    }

    /// Sends content, waiting for credit no longer than the idle limit.
    fn send_data(&self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.send_data_within(false, bytes, self.idle).map_err(|end| self.send_failed(end))
    }

    /// Next item, which must be there.
    fn expect(&self) -> Result<Incoming, ClientError> {
        self.next()?.ok_or_else(|| self.protocol("the agent closed the stream early"))
    }

    fn control(&self, body: &[u8]) -> Result<AgentMessage, ClientError> {
        serde_json::from_slice(body).map_err(|e| self.protocol(&format!("bad control message: {e}")))
    }

    fn protocol(&self, message: &str) -> ClientError {
        ClientError::Protocol { op: self.op, message: message.to_string() }
    }

    /// After a failed send, the reason is usually an `Error` the agent sent before closing.
    fn send_failed(&self, end: StreamEnd) -> ClientError {
        match end {
            StreamEnd::Timeout => return self.no_answer(),
            StreamEnd::TooLarge { .. } => return self.protocol(&end.to_string()),
            _ => {}
        }
        loop {
            match self.next() {
                Err(e) => return e,
                Ok(Some(_)) => continue,
                Ok(None) => return ClientError::Disconnected(end.to_string()),
            }
        }
    }
}

impl AgentClient {
    /// Connects over `transport` with the default options.
    pub fn handshake<T: Transport>(transport: T) -> Result<Self, ClientError> {
        Self::handshake_with(transport, &ClientOptions::default())
    }

    /// Sends the hello and waits (at most `options.handshake_timeout`) for the agent's welcome.
    pub fn handshake_with<T: Transport>(transport: T, options: &ClientOptions) -> Result<Self, ClientError> {
        let (reader, mut writer, shutdown) = transport.split()?;
        let nonce = RandomState::new().build_hasher().finish();
        let hello =
            Hello { protocol: options.protocol, nonce, client_version: env!("CARGO_PKG_VERSION").into() };
        writer.write_all(&MAGIC)?;
        write_frame(
            &mut writer,
            &Frame::new(0, FrameKind::Hello, serde_json::to_vec(&hello).expect("hello")),
        )?;

        // The reads run on their own thread so that a silent agent cannot block us past the timeout.
        // Whatever comes before the answer to this hello is skipped: frames of an earlier session, a
        // welcome to another nonce, or the tail of a frame the agent was writing when the previous
        // host left, in which no frame boundary can be found (hence a scan, not frame by frame).
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = reader;
            let found = scan_for_welcome(&mut reader, |body| {
                serde_json::from_slice::<Welcome>(body).ok().filter(|welcome| welcome.nonce == nonce)
            });
            let (reader, answer): (Box<dyn Read + Send>, _) = match found {
                Ok((welcome, after)) => (Box::new(io::Cursor::new(after).chain(reader)), Ok(welcome)),
                Err(FrameError::Closed) => {
                    (Box::new(reader), Err("the agent closed the channel".to_string()))
                }
                Err(e) => (Box::new(reader), Err(e.to_string())),
            };
            let _ = tx.send((reader, answer));
        });
        let (reader, answer) = match rx.recv_timeout(options.handshake_timeout) {
            Ok(got) => got,
            Err(_) => {
                shutdown.shutdown();
                return Err(ClientError::HandshakeTimeout { timeout: options.handshake_timeout });
            }
        };
        let welcome = match answer {
            Ok(welcome) => welcome,
            Err(message) => {
                shutdown.shutdown();
                return Err(ClientError::Handshake(message));
            }
        };
        if welcome.protocol != options.protocol {
            shutdown.shutdown();
            return Err(ClientError::VersionMismatch { client: options.protocol, agent: welcome.protocol });
        }
        let keepalive = welcome.capabilities.iter().any(|c| c == "keepalive");
        let conn = Conn::start(reader, Box::new(writer), shutdown, None);
        conn.set_label(&options.guest);
        let inner = ClientInner {
            conn,
            welcome,
            exec_grace: options.exec_grace,
            guest: options.guest.clone(),
            keepalive,
        };
        Ok(Self { inner: Arc::new(inner), call_timeout: options.call_timeout })
    }

    /// This client with another [`ClientOptions::call_timeout`] for the calls made through it (the
    /// connection is shared).
    pub fn with_call_timeout(&self, timeout: Duration) -> Self {
        Self { inner: Arc::clone(&self.inner), call_timeout: timeout }
    }

    /// The agent's welcome: its version and capabilities.
    pub fn welcome(&self) -> &Welcome {
        &self.inner.welcome
    }

    /// Why the connection ended, once it has.
    pub fn disconnected(&self) -> Option<String> {
        self.inner.conn.failure()
    }

    /// The connection's streams and their flow-control state (see [`crate::mux::Conn::describe`]).
    pub fn describe(&self) -> String {
        self.inner.conn.describe()
    }

    fn open(&self, request: &Request, op: &'static str) -> Result<OpStream, ClientError> {
        let body = serde_json::to_vec(request).expect("requests always serialize");
        let stream = self.inner.conn.open(body).map_err(|end| match end {
            StreamEnd::TooLarge { size, limit } => ClientError::RequestTooLarge { op, size, limit },
            end => ClientError::Disconnected(end.to_string()),
        })?;
        Ok(OpStream {
            stream,
            op,
            guest: self.inner.guest.clone(),
            deadline: None,
            idle: Some(self.call_timeout),
            close_on_drop: true,
            gave_up: std::cell::Cell::new(false),
        })
    }

    /// Opens a call that must be answered within the call timeout as a whole.
    fn open_answered(&self, request: &Request, op: &'static str) -> Result<OpStream, ClientError> {
        let mut op = self.open(request, op)?;
        op.deadline = Some((Instant::now() + self.call_timeout, self.call_timeout));
        Ok(op)
    }

    /// Asks the agent what its guest is.
    pub fn facts(&self) -> Result<Facts, ClientError> {
        let op = self.open_answered(&Request::Facts, "facts")?;
        match op.expect()? {
            Incoming::Control(body) => match op.control(&body)? {
                AgentMessage::Facts(facts) => Ok(facts),
                other => Err(op.protocol(&format!("expected facts, got `{other:?}`"))),
            },
            other => Err(op.protocol(&format!("expected facts, got `{other:?}`"))),
        }
    }

    /// Runs a program and collects its output, up to [`EXEC_OUTPUT_LIMIT`] of each stream.
    pub fn exec(&self, request: ExecRequest) -> Result<ExecResult, ClientError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let truncated = std::cell::Cell::new(false);
        let keep = |into: &mut Vec<u8>, chunk: &[u8]| {
            let room = EXEC_OUTPUT_LIMIT - into.len();
            if chunk.len() > room {
                truncated.set(true);
            }
            into.extend_from_slice(&chunk[..chunk.len().min(room)]);
        };
        let status =
            self.exec_streaming(request, |chunk| keep(&mut stdout, chunk), |chunk| keep(&mut stderr, chunk))?;
        Ok(ExecResult { status, stdout, stderr, truncated: truncated.get() })
    }

    /// Runs a program, handing each stdout and stderr chunk to the callbacks as it arrives.
    pub fn exec_streaming(
        &self,
        request: ExecRequest,
        mut on_stdout: impl FnMut(&[u8]),
        mut on_stderr: impl FnMut(&[u8]),
    ) -> Result<ExitStatus, ClientError> {
        let spec = ExecSpec {
            argv: request.argv,
            env: request.env,
            clear_env: false,
            cwd: request.cwd,
            stdin: request.stdin.is_some(),
            timeout_ms: request.timeout.map(|t| t.as_millis().try_into().unwrap_or(u64::MAX)),
        };
        let mut op = self.open(&Request::Exec(spec), "exec")?;
        // A program may be silent for as long as it likes; only keepalives tell that from a stall, and
        // two of them must have been missed (a shorter call timeout would fail every silent program).
        op.idle = self.inner.keepalive.then(|| self.call_timeout.max(2 * KEEPALIVE_INTERVAL));
        if let Some(limit) = request.timeout {
            // The agent kills the program when `limit` runs out and then answers; past the grace
            // period the answer is not coming.
            let after = limit + self.inner.exec_grace;
            op.deadline = Some((Instant::now() + after, after));
        }
        // Stdin goes out on its own thread: a program that writes before it reads would otherwise
        // wait for us to read while we wait for it to read.
        let feeder = request.stdin.map(|bytes| {
            let stream = Arc::clone(&op.stream);
            thread::spawn(move || {
                if stream.send_data(false, &bytes).is_ok() {
                    let _ = stream.send_eof();
                }
            })
        });
        let mut status = None;
        while let Some(item) = op.next()? {
            match item {
                Incoming::Data(bytes) => on_stdout(&bytes),
                Incoming::ErrData(bytes) => on_stderr(&bytes),
                Incoming::Control(body) => match op.control(&body)? {
                    AgentMessage::Exit(exit) => status = Some(exit),
                    other => return Err(op.protocol(&format!("unexpected `{other:?}`"))),
                },
                Incoming::Eof => {}
                Incoming::Error(_) => unreachable!("`next` turns errors into `Err`"),
            }
        }
        if let Some(feeder) = feeder {
            let _ = feeder.join();
        }
        status.ok_or_else(|| op.protocol("the stream ended without an exit status"))
    }

    /// Writes `content` to `path` in the guest with permission bits `mode`, atomically.
    pub fn put_file(&self, path: &str, content: &mut dyn Read, mode: u32) -> Result<FileInfo, ClientError> {
        let op = self.open(&Request::FilePut { path: path.into(), mode }, "file_put")?;
        let local = |source| ClientError::Local { path: path.into(), source };
        let mut hasher = crc32fast::Hasher::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; DATA_CHUNK];
        loop {
            let n = match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = op.stream.send_error("the client could not read the source");
                    return Err(local(e));
                }
            };
            hasher.update(&buf[..n]);
            size += n as u64;
            op.send_data(&buf[..n])?;
        }
        let crc32 = hasher.finalize();
        op.stream.send_control(&ClientMessage::Trailer { size, crc32 }).map_err(|end| op.send_failed(end))?;
        match op.expect()? {
            Incoming::Control(body) => match op.control(&body)? {
                AgentMessage::Trailer { size: got_size, crc32: got_crc }
                    if got_size == size && got_crc == crc32 =>
                {
                    Ok(FileInfo { size, mode: mode & 0o7777, crc32 })
                }
                AgentMessage::Trailer { size: got_size, crc32: got_crc } => Err(ClientError::Damaged {
                    path: path.into(),
                    expected_size: size,
                    expected_crc: crc32,
                    size: got_size,
                    crc: got_crc,
                }),
                other => Err(op.protocol(&format!("expected a trailer, got `{other:?}`"))),
            },
            other => Err(op.protocol(&format!("expected a trailer, got `{other:?}`"))),
        }
    }

    /// Reads `path` from the guest into `out`, checking its checksum.
    pub fn get_file(&self, path: &str, out: &mut dyn Write) -> Result<FileInfo, ClientError> {
        let op = self.open(&Request::FileGet { path: path.into() }, "file_get")?;
        let mode = match op.expect()? {
            Incoming::Control(body) => match op.control(&body)? {
                AgentMessage::FileMeta { mode, .. } => mode,
                other => return Err(op.protocol(&format!("expected file metadata, got `{other:?}`"))),
            },
            other => return Err(op.protocol(&format!("expected file metadata, got `{other:?}`"))),
        };
        let mut hasher = crc32fast::Hasher::new();
        let mut size = 0u64;
        loop {
            match op.expect()? {
                Incoming::Data(bytes) => {
                    out.write_all(&bytes)
                        .map_err(|source| ClientError::Local { path: path.into(), source })?;
                    hasher.update(&bytes);
                    size += bytes.len() as u64;
                }
                Incoming::Control(body) => {
                    let AgentMessage::Trailer { size: expected_size, crc32: expected_crc } =
                        op.control(&body)?
                    else {
                        return Err(op.protocol("expected a trailer"));
                    };
                    let crc = hasher.finalize();
                    if expected_size != size || expected_crc != crc {
                        return Err(ClientError::Damaged {
                            path: path.into(),
                            expected_size,
                            expected_crc,
                            size,
                            crc,
                        });
                    }
                    out.flush().map_err(|source| ClientError::Local { path: path.into(), source })?;
                    return Ok(FileInfo { size, mode, crc32: crc });
                }
                other => return Err(op.protocol(&format!("unexpected `{other:?}` in a file"))),
            }
        }
    }

    /// Connects, through the agent, to the guest's unix socket at `path` (which must be on the agent's
    /// allowlist) and returns the byte stream.
    pub fn open_relay(&self, path: &str) -> Result<RelayStream, ClientError> {
        self.relay(path, false)
    }

    /// [`open_relay`](Self::open_relay) to a socket whose server takes one client at a time (a
    /// guest's agent channel): refused with an error for which [`ClientError::is_busy`] holds while
    /// another session of this agent relays to `path`. An agent from before exclusive relays
    /// connects anyway.
    pub fn open_exclusive_relay(&self, path: &str) -> Result<RelayStream, ClientError> {
        self.relay(path, true)
    }

    fn relay(&self, path: &str, exclusive: bool) -> Result<RelayStream, ClientError> {
        let mut op = self.open_answered(&Request::Relay { path: path.into(), exclusive }, "relay")?;
        match op.expect()? {
            Incoming::Control(body) => match op.control(&body)? {
                AgentMessage::Connected => {}
                other => return Err(op.protocol(&format!("expected `connected`, got `{other:?}`"))),
            },
            other => return Err(op.protocol(&format!("expected `connected`, got `{other:?}`"))),
        }
        op.close_on_drop = false;
        Ok(RelayStream::new(Arc::clone(&self.inner), Arc::clone(&op.stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<AgentClient>();
        send::<RelayStream>();
        send_sync::<RelayWriter>();
    }

    #[test]
    fn exec_request_builder_fills_every_field() {
        let request = ExecRequest::new(["ls", "-l"])
            .env("A", "1")
            .cwd("/tmp")
            .stdin(b"in".to_vec())
            .timeout(Duration::from_secs(2));
        assert_eq!(request.argv, ["ls", "-l"]);
        assert_eq!(request.env, [("A".to_string(), "1".to_string())]);
        assert_eq!(request.cwd.as_deref(), Some("/tmp"));
        assert_eq!(request.stdin.as_deref(), Some(&b"in"[..]));
        assert_eq!(request.timeout, Some(Duration::from_secs(2)));
    }
}
