//! The agent side: the handshake, one session's stream dispatch, and the loop that serves the port.
//!
//! A session is one handshake plus everything until the channel ends. Each stream the client opens is
//! served on its own thread; when the session ends (the host side closed the port, or a protocol error),
//! every stream fails, running programs are killed, and the loop waits for the next handshake.

mod exec;
pub mod facts;
mod files;
mod relay;

pub use relay::BUSY as RELAY_BUSY;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::frame::{read_frame, rest_of_magic, skip_to_magic, write_frame, Frame, FrameError, FrameKind};
use crate::mux::{Conn, Halves, OnOpen, Stream};
use crate::proto::{Hello, Request, Welcome, CAPABILITIES, PROTOCOL_VERSION};
use crate::transport::Transport;

/// Default path of the agent's virtio-serial port inside the guest.
pub const DEFAULT_PORT: &str = "/dev/virtio-ports/dev.nestform.agent.0";

/// Streams one session serves at once; more are refused (each one is a thread).
pub const DEFAULT_MAX_STREAMS: usize = 64;

/// What the agent allows.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Unix socket paths `relay` may connect to; anything else is refused.
    pub relay_allow: Vec<PathBuf>,
    /// Streams served at once per session.
    pub max_streams: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self { relay_allow: Vec::new(), max_streams: DEFAULT_MAX_STREAMS }
    }
}

/// Why a session ended before or during its handshake.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The channel ended before a hello arrived (the host side is not connected).
    #[error("the channel closed before a hello arrived")]
    ClosedBeforeHello,
    /// The channel failed.
    #[error("channel i/o failed: {0}")]
    Io(#[from] io::Error),
    /// The client speaks another protocol version; the agent told it its own and closed.
    #[error("protocol version mismatch: client speaks `{client}`, agent speaks `{agent}`")]
    VersionMismatch {
        /// The client's version.
        client: u32,
        /// This agent's version.
        agent: u32,
    },
    /// The first frame was not a valid hello.
    #[error("bad hello: {0}")]
    BadHello(String),
}

/// How a served session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    /// Handshakes served on the channel (more than one when the client started over on it).
    pub handshakes: usize,
    /// Streams the client opened.
    pub streams: usize,
    /// Why the connection ended.
    pub reason: String,
}

/// Serves one session on `transport`: waits for the handshake, then serves streams until the channel
/// ends. Returns when the client has gone; streams still running are failed and their programs killed.
///
/// If the client starts a new handshake on the same channel (a host that reconnected before the agent
/// saw it leave), the old session ends and the new one is served on the same channel; `handshakes` in
/// the result counts them.
pub fn serve_session<T: Transport>(
    transport: T,
    config: &Arc<AgentConfig>,
) -> Result<SessionEnd, AgentError> {
    let (reader, writer, shutdown) = transport.split()?;
    let (mut reader, mut writer): Halves = (Box::new(reader), Box::new(writer));
    let mut resumed = false;
    let mut end = SessionEnd { handshakes: 0, streams: 0, reason: String::new() };
    loop {
        let hello = match read_hello(&mut reader, resumed) {
            Ok(hello) => hello,
            Err(error) => {
                let error = match error {
                    HelloError::Closed => AgentError::ClosedBeforeHello,
                    HelloError::Io(e) => AgentError::Io(e),
                    HelloError::Bad(message) => {
                        let notice = Frame::new(0, FrameKind::Error, message.clone().into_bytes());
                        let _ = write_frame(&mut writer, &notice);
                        shutdown.shutdown();
                        AgentError::BadHello(message)
                    }
                };
                if end.handshakes == 0 {
                    return Err(error);
                }
                end.reason = error.to_string();
                return Ok(end);
            }
        };
        let welcome = Welcome {
            protocol: PROTOCOL_VERSION,
            nonce: hello.nonce,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        };
        let body = serde_json::to_vec(&welcome).expect("welcome always serializes");
        write_frame(&mut writer, &Frame::new(0, FrameKind::Welcome, body))?;
        if hello.protocol != PROTOCOL_VERSION {
            // The welcome above carries our version so the client can say exactly what differs.
            shutdown.shutdown();
            return Err(AgentError::VersionMismatch { client: hello.protocol, agent: PROTOCOL_VERSION });
        }
        end.handshakes += 1;

        let opened = Arc::new(AtomicUsize::new(0));
        let conn = Conn::start(reader, writer, shutdown.clone(), Some(dispatcher(config, &opened)));
        let handed_back = conn.join();
        end.streams += opened.load(Ordering::Relaxed);
        end.reason = conn.failure().unwrap_or_else(|| "the channel was closed".into());
        match handed_back {
            Some(halves) => {
                (reader, writer) = halves;
                resumed = true;
            }
            None => return Ok(end),
        }
    }
}

/// The agent's answer to an `Open`: a thread per stream, within the configured limit.
fn dispatcher(config: &Arc<AgentConfig>, opened: &Arc<AtomicUsize>) -> OnOpen {
    let config = Arc::clone(config);
    let opened = Arc::clone(opened);
    let active = Arc::new(AtomicUsize::new(0));
    Box::new(move |stream: Arc<Stream>, body: Vec<u8>| {
        opened.fetch_add(1, Ordering::Relaxed);
        let config = Arc::clone(&config);
        let active = Arc::clone(&active);
        let spawned = thread::Builder::new().name(format!("nestform-agent-stream-{}", stream.id())).spawn({
            let stream = Arc::clone(&stream);
            move || {
                let running = active.fetch_add(1, Ordering::SeqCst) + 1;
                if running > config.max_streams {
                    let _ = stream.send_error(&format!(
                        "too many concurrent streams: the limit is `{}`",
                        config.max_streams
                    ));
                } else {
                    serve_stream(&stream, &body, &config);
                }
                stream.close();
                active.fetch_sub(1, Ordering::SeqCst);
            }
        });
        if spawned.is_err() {
            stream.close();
        }
    })
}

enum HelloError {
    Closed,
    Io(io::Error),
    Bad(String),
}

/// Reads the magic (or, when `resumed`, the rest of it) and the hello after it.
fn read_hello(reader: &mut dyn io::Read, resumed: bool) -> Result<Hello, HelloError> {
    let to_hello_error = |e| match e {
        FrameError::Io(e) => HelloError::Io(e),
        _ => HelloError::Closed,
    };
    if !resumed || !rest_of_magic(reader).map_err(to_hello_error)? {
        skip_to_magic(reader).map_err(to_hello_error)?;
    }
    let frame = match read_frame(reader) {
        Ok(frame) => frame,
        Err(FrameError::Closed) => return Err(HelloError::Closed),
        Err(FrameError::Io(e)) => return Err(HelloError::Io(e)),
        Err(e) => return Err(HelloError::Bad(format!("protocol error: {e}"))),
    };
    if frame.stream != 0 || frame.kind != FrameKind::Hello {
        return Err(HelloError::Bad(format!(
            "expected a hello on stream 0, got `{:?}` on stream `{}`",
            frame.kind, frame.stream
        )));
    }
    serde_json::from_slice(&frame.body).map_err(|e| HelloError::Bad(format!("hello is not valid JSON: {e}")))
}

/// Runs one stream's request to completion; errors go to the client as an `Error` frame.
fn serve_stream(stream: &Arc<Stream>, body: &[u8], config: &AgentConfig) {
    let result = match serde_json::from_slice::<Request>(body) {
        Err(e) => Err(format!("request is not valid: {e}")),
        Ok(Request::Facts) => stream
            .send_control(&crate::proto::AgentMessage::Facts(facts::gather()))
            .map_err(|e| e.to_string()),
        Ok(Request::Exec(spec)) => exec::run(stream, spec),
        Ok(Request::FilePut { path, mode }) => files::put(stream, Path::new(&path), mode),
        Ok(Request::FileGet { path }) => files::get(stream, Path::new(&path)),
        Ok(Request::Relay { path, exclusive }) => {
            relay::run(stream, Path::new(&path), &config.relay_allow, exclusive)
        }
    };
    if let Err(message) = result {
        let _ = stream.send_error(&message);
    }
}

/// Serves the virtio-serial port at `port` forever: open it, serve a session, and when the host side
/// closes, wait for the next handshake. Messages go to `log`.
///
/// The port stays open between sessions; each session gets a duplicate of it. Closing the port would
/// make the guest's kernel drop whatever the host sent meanwhile, and it discards data arriving while
/// no one has the port open: a client that connected while the last session was ending lost its hello
/// and waited out a handshake attempt (seen: a second per `nestform exec` after one that relayed).
pub fn serve_port(port: &Path, config: AgentConfig, log: &mut dyn Write) -> ! {
    serve_port_idling(port, Arc::new(config), log, Duration::from_millis(100))
}

/// Serves every port of `ports` at once, each on a thread of its own (see [`serve_port`]): a guest
/// has several agent ports so that several nestform runs can reach it at the same time, each with a
/// session of its own, instead of one taking the port over from the other. Ports after the first
/// are looked at less often while nobody is connected (every 500 ms): idle wake-ups cost a guest
/// deep in the nesting more than they cost here, and the first port answers the usual single run
/// as fast as before.
pub fn serve_ports(ports: &[PathBuf], config: AgentConfig) -> ! {
    let config = Arc::new(config);
    for (i, port) in ports.iter().enumerate().skip(1) {
        let (port, config) = (port.clone(), Arc::clone(&config));
        let spawned = thread::Builder::new().name(format!("nestform-agent-port-{i}")).spawn(move || {
            serve_port_idling(&port, config, &mut std::io::stderr(), Duration::from_millis(500))
        });
        if let Err(e) = spawned {
            eprintln!("nestform-agent: serving `{}` failed: {e}", ports[i].display());
        }
    }
    match ports.first() {
        Some(first) => serve_port_idling(first, config, &mut std::io::stderr(), Duration::from_millis(100)),
        None => loop {
            thread::park();
        },
    }
}

/// What a freshly started agent tells a client still connected to its port from before.
pub const STARTED_ANEW: &str =
    "the agent started anew (its guest booted again, or the agent was restarted): \
     the session before is gone";

/// Tells a client that is still connected to `port` from before this agent started (the guest
/// rebooted under it: QEMU keeps the host side of the port connected across a guest reset) that its
/// session is gone: a connection-level error frame, which ends that client's connection at once.
/// Without it, such a client sent its calls into an agent that waited for a handshake, and each
/// call waited out its limit (seen at level 2: a guest that reset while starting a guest of its own,
/// whose promoted host then answered nothing for 15 minutes). Written without blocking: with nobody
/// connected the port refuses the write, and there is nobody to tell.
fn announce_start(file: &File, port: &Path, log: &mut dyn Write) {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is the open port for the whole call; only its status flags change.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return;
    }
    let frame = Frame::new(0, FrameKind::Error, STARTED_ANEW.as_bytes().to_vec());
    let mut bytes = Vec::new();
    write_frame(&mut bytes, &frame).expect("writing to memory does not fail");
    // One write of a frame this small: the port takes it whole or not at all.
    let mut out = file;
    match out.write(&bytes) {
        Ok(n) if n == bytes.len() => {
            let _ =
                writeln!(log, "told the client connected to `{}` that its session is gone", port.display());
        }
        Ok(n) => {
            let _ = writeln!(
                log,
                "telling a client of `{}` that the agent started: only {n} bytes went",
                port.display()
            );
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => {
            let _ =
                writeln!(log, "telling a client of `{}` that the agent started failed: {e}", port.display());
        }
    }
    // SAFETY: as above; the flags it had.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
}

fn serve_port_idling(port: &Path, config: Arc<AgentConfig>, log: &mut dyn Write, idle: Duration) -> ! {
    let mut last_open_error = None;
    let mut open: Option<File> = None;
    let mut announced = false;
    loop {
        let port_file = match &open {
            Some(file) => file,
            None => match OpenOptions::new().read(true).write(true).open(port) {
                Ok(file) => {
                    if !announced {
                        announced = true;
                        announce_start(&file, port, log);
                    }
                    open.insert(file)
                }
                Err(e) => {
                    // Said once per distinct error: the port may take a while to appear after boot.
                    let message = format!("opening `{}` failed: {e}; retrying every second", port.display());
                    if last_open_error.as_ref() != Some(&message) {
                        let _ = writeln!(log, "{message}");
                        last_open_error = Some(message);
                    }
                    thread::sleep(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let file = match port_file.try_clone() {
            Ok(file) => file,
            Err(e) => {
                let _ = writeln!(log, "duplicating the port failed: {e}; opening it again");
                open = None;
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        last_open_error = None;
        match serve_session(file, &config) {
            Ok(end) => {
                let _ = writeln!(
                    log,
                    "session ended after {} handshakes and {} streams: {}",
                    end.handshakes, end.streams, end.reason
                );
            }
            // While the host side is not connected, reads on the port return end-of-file at once:
            // wait a little instead of spinning.
            Err(AgentError::ClosedBeforeHello) => thread::sleep(idle),
            Err(e) => {
                let _ = writeln!(log, "session refused: {e}");
                // A port that fails to read is opened afresh.
                if matches!(e, AgentError::Io(_)) {
                    open = None;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Serves sessions from `accept` until it fails, one at a time: the same loop as [`serve_port`] for
/// transports that come from elsewhere (tests, a listening socket, stdin/stdout).
pub fn serve_each<T: Transport>(
    mut accept: impl FnMut() -> io::Result<T>,
    config: AgentConfig,
    log: &mut dyn Write,
) -> io::Error {
    let config = Arc::new(config);
    loop {
        let transport = match accept() {
            Ok(transport) => transport,
            Err(e) => return e,
        };
        match serve_session(transport, &config) {
            Ok(end) => {
                let _ = writeln!(
                    log,
                    "session ended after {} handshakes and {} streams: {}",
                    end.handshakes, end.streams, end.reason
                );
            }
            Err(e) => {
                let _ = writeln!(log, "session refused: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    use super::*;
    use crate::client::AgentClient;

    /// A client whose session is with an agent that is gone (its guest reset, QEMU kept the port's
    /// host side connected) hears it from the agent that starts next, and its connection ends at
    /// once instead of each call waiting out its limit.
    #[test]
    fn a_client_from_before_hears_that_the_agent_started_anew() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let port = theirs.try_clone().unwrap();
        let config = Arc::new(AgentConfig::default());
        thread::spawn(move || {
            let _ = serve_session(theirs, &config);
        });
        let client = AgentClient::handshake(ours).unwrap();
        assert_eq!(client.disconnected(), None);

        let mut log = Vec::new();
        announce_start(&File::from(OwnedFd::from(port)), Path::new("/dev/virtio-ports/test"), &mut log);
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.disconnected().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let why = client.disconnected().expect("the client's connection ended");
        assert!(why.contains(STARTED_ANEW), "{why}");
        assert!(String::from_utf8_lossy(&log).contains("its session is gone"));
    }
}
