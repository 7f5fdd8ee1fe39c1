//! Stream multiplexing over one byte channel, shared by the agent and the client.
//!
//! One demultiplexer thread per connection reads frames and routes each to its stream's inbox. It never
//! blocks on a stream's consumer and never writes to the channel in its own loop, so it always drains
//! the channel: writers on either side can make progress, and a slow stream cannot stall another one.
//!
//! Flow control is credit per stream and direction: a sender may have at most [`WINDOW`] data bytes
//! that the receiver has not consumed yet. The receiver returns credit (a `Credit` frame) as its consumer
//! takes bytes out of the inbox. Inboxes are therefore bounded by [`WINDOW`] per stream, and a peer that
//! sends past its credit is a protocol error that ends the connection. Frames outside flow control
//! (control, end-of-file, error) are bounded by count and bytes instead ([`CONTROL_BACKLOG`],
//! [`CONTROL_BACKLOG_BYTES`]) and dropped once the stream is closed on this side, so neither can make
//! a side buffer without limit.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::frame::{read_frame, write_frame, Frame, FrameError, FrameKind, DATA_CHUNK, MAX_BODY};
use crate::transport::ShutdownHandle;

/// Data bytes one side may send on one stream before the receiver returns credit (256 KiB).
pub const WINDOW: u32 = 256 * 1024;

/// Frames not counted against credit (control, end-of-file, error) one stream may have waiting in its
/// inbox; more is a protocol error. An honest peer sends a handful per stream.
pub const CONTROL_BACKLOG: usize = 32;

/// Body bytes of such frames one stream may have waiting (two of the largest frames).
pub const CONTROL_BACKLOG_BYTES: usize = 2 * MAX_BODY as usize;

/// What a stream's consumer receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Primary bytes.
    Data(Vec<u8>),
    /// Secondary bytes (stderr).
    ErrData(Vec<u8>),
    /// The peer sends no more data.
    Eof,
    /// A JSON control message.
    Control(Vec<u8>),
    /// The peer reports that the stream failed.
    Error(String),
}

/// Why a stream yields nothing more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamEnd {
    /// The peer closed (or cancelled) the stream.
    #[error("the stream was closed by the peer")]
    Closed,
    /// The whole connection failed.
    #[error("{0}")]
    Failed(String),
    /// The deadline passed first.
    #[error("timed out")]
    Timeout,
    /// The frame to send is over the limit; the stream and the connection are unharmed.
    #[error("frame of `{size}` bytes exceeds the limit of `{limit}` bytes")]
    TooLarge {
        /// Body size of the frame.
        size: usize,
        /// The limit.
        limit: u32,
    },
}

/// Called by the demultiplexer when the peer opens a stream (agent side only). It must not block:
/// the agent spawns a thread.
pub type OnOpen = Box<dyn Fn(Arc<Stream>, Vec<u8>) + Send + Sync>;

/// One connection: the writer, the streams and the demultiplexer thread.
pub struct Conn {
    writer: Mutex<Option<Box<dyn Write + Send>>>,
    shutdown: ShutdownHandle,
    streams: Mutex<HashMap<u32, Arc<Stream>>>,
    failure: Mutex<Option<String>>,
    next_id: AtomicU32,
    demux: Mutex<Option<JoinHandle<Option<BoxedReader>>>>,
    /// The writer, kept when the peer starts a new handshake so the channel can be handed back.
    retired: Mutex<Option<Box<dyn Write + Send>>>,
    /// What the connection reaches (a guest's name), for [`describe_all`].
    label: Mutex<String>,
    /// Frames read by the demultiplexer, and when it read the last one.
    frames_in: std::sync::atomic::AtomicU64,
    last_frame_in: Mutex<Option<Instant>>,
}

/// How long ago `at` was, as a stall report says it ("12.3s ago", or "never").
pub fn ago(at: Option<Instant>) -> String {
    at.map_or("never".to_string(), |t| format!("{:.1}s ago", t.elapsed().as_secs_f64()))
}

/// Every connection of this process, for [`describe_all`].
static CONNS: Mutex<Vec<std::sync::Weak<Conn>>> = Mutex::new(Vec::new());

/// Every live connection of this process with each open stream's flow-control state: what a caller
/// logs when an answer does not come, to tell a request stuck on this side (waiting for credit) from
/// one sent and never answered.
pub fn describe_all() -> String {
    let conns: Vec<Arc<Conn>> = {
        let mut all = lock(&CONNS);
        all.retain(|c| c.strong_count() > 0);
        all.iter().filter_map(std::sync::Weak::upgrade).collect()
    };
    conns.iter().map(|c| c.describe()).collect::<Vec<_>>().join("; ")
}

/// The reading half of a channel, as the connection holds it.
pub type BoxedReader = Box<dyn Read + Send>;

/// The two halves of a channel handed back by [`Conn::join`] for a new handshake.
pub type Halves = (BoxedReader, Box<dyn Write + Send>);

impl Conn {
    /// Starts the demultiplexer on `reader`. `on_open` is `Some` on the agent side.
    pub fn start(
        reader: Box<dyn Read + Send>,
        writer: Box<dyn Write + Send>,
        shutdown: ShutdownHandle,
        on_open: Option<OnOpen>,
    ) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            writer: Mutex::new(Some(writer)),
            shutdown,
            streams: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
            next_id: AtomicU32::new(1),
            demux: Mutex::new(None),
            retired: Mutex::new(None),
            label: Mutex::new("unnamed".into()),
            frames_in: 0.into(),
            last_frame_in: Mutex::new(None),
        });
        lock(&CONNS).push(Arc::downgrade(&conn));
        let demux_conn = Arc::clone(&conn);
        let handle = thread::Builder::new()
            .name("nestform-agent-demux".into())
            .spawn(move || demux_conn.demux(reader, on_open))
            .expect("spawning the demultiplexer thread");
        *lock(&conn.demux) = Some(handle);
        conn
    }

    /// Blocks until the demultiplexer has stopped (the connection ended). Returns the channel's halves
    /// when the peer started a new handshake on it (agent side), positioned just after the first four
    /// bytes of the magic.
    pub fn join(&self) -> Option<Halves> {
        let handle = lock(&self.demux).take()?;
        let reader = handle.join().ok().flatten()?;
        let writer = lock(&self.retired).take()?;
        Some((reader, writer))
    }

    /// Why the connection ended, once it has.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Names what the connection reaches, for [`Conn::describe`].
    pub fn set_label(&self, label: &str) {
        *lock(&self.label) = label.to_string();
    }

    /// The connection and each open stream: data bytes sent and received, credit left to send,
    /// bytes received and not yet taken by the consumer, and how long ago each side last sent.
    pub fn describe(&self) -> String {
        let mut streams: Vec<Arc<Stream>> = lock(&self.streams).values().cloned().collect();
        streams.sort_by_key(|s| s.id);
        let parts: Vec<String> = streams
            .iter()
            .map(|s| {
                let st = lock(&s.state);
                let waiting = st
                    .awaiting_credit
                    .map(|t| format!(", waiting for credit for {:.1}s", t.elapsed().as_secs_f64()))
                    .unwrap_or_default();
                format!(
                    "stream {}: sent {} B (last {}), received {} B (last heard {}), credit {} B, untaken {} B in {} items{}{}{}",
                    s.id,
                    st.sent,
                    ago(st.last_sent),
                    st.received,
                    ago(st.last_heard),
                    st.send_credit,
                    st.recv_outstanding,
                    st.inbox.len(),
                    waiting,
                    if st.peer_closed { ", closed by the peer" } else { "" },
                    if st.local_closed { ", closed here" } else { "" },
                )
            })
            .collect();
        format!(
            "connection to `{}`{}: {} frames in (last {}), {} streams open [{}]",
            lock(&self.label),
            self.failure().map(|f| format!(" (ended: {f})")).unwrap_or_default(),
            self.frames_in.load(Ordering::Relaxed),
            ago(*lock(&self.last_frame_in)),
            parts.len(),
            parts.join(" | ")
        )
    }

    /// Number of streams not yet closed by both sides.
    pub fn open_streams(&self) -> usize {
        lock(&self.streams).len()
    }

    /// Opens a new stream (client side) with `request` as the `Open` body.
    pub fn open(self: &Arc<Self>, request: Vec<u8>) -> Result<Arc<Stream>, StreamEnd> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if id == 0 {
            // Ids are never reused within a connection, so 2^32 - 1 streams is where it must end.
            self.next_id.store(0, Ordering::Relaxed);
            return Err(StreamEnd::Failed("stream ids are used up: connect again".into()));
        }
        let stream = Stream::new(id, Arc::clone(self));
        lock(&self.streams).insert(id, Arc::clone(&stream));
        if let Err(end) = self.send(Frame::new(id, FrameKind::Open, request)) {
            lock(&self.streams).remove(&id);
            return Err(end);
        }
        Ok(stream)
    }

    /// Writes one frame, unless the connection already failed. A frame over the limit is refused before
    /// anything is written: one oversized message must not end every stream of the connection.
    pub fn send(&self, frame: Frame) -> Result<(), StreamEnd> {
        if frame.body.len() > MAX_BODY as usize {
            return Err(StreamEnd::TooLarge { size: frame.body.len(), limit: MAX_BODY });
        }
        let mut writer = lock(&self.writer);
        let Some(out) = writer.as_mut() else {
            return Err(StreamEnd::Failed(self.failure().unwrap_or_else(|| "the channel was closed".into())));
        };
        if let Err(e) = write_frame(out.as_mut(), &frame) {
            drop(writer);
            let reason = format!("writing to the channel failed: {e}");
            self.fail(&reason);
            return Err(StreamEnd::Failed(reason));
        }
        Ok(())
    }

    /// Ends the connection: every stream fails with `reason` and the transport is shut down so the
    /// demultiplexer stops. The first reason wins.
    pub fn fail(&self, reason: &str) {
        self.end(reason, true);
    }

    fn end(&self, reason: &str, shutdown: bool) {
        {
            let mut failure = lock(&self.failure);
            if failure.is_some() {
                return;
            }
            *failure = Some(reason.to_string());
        }
        let streams: Vec<_> = lock(&self.streams).drain().map(|(_, s)| s).collect();
        for stream in streams {
            stream.update(|state| state.failed = Some(reason.to_string()));
        }
        if shutdown {
            self.shutdown.shutdown();
            // Dropping the writer after the shutdown: a write in progress was unblocked by it.
            lock(&self.writer).take();
        } else {
            let writer = lock(&self.writer).take();
            *lock(&self.retired) = writer;
        }
    }

    /// Sends a connection-level error to the peer, then ends the connection. The write runs on its own
    /// thread because the caller may be the demultiplexer, which must keep draining the channel.
    fn fail_with_notice(self: &Arc<Self>, reason: String) {
        let conn = Arc::clone(self);
        let _ = thread::Builder::new().name("nestform-agent-notice".into()).spawn(move || {
            let _ = conn.send(Frame::new(0, FrameKind::Error, reason.clone().into_bytes()));
            conn.fail(&reason);
        });
    }

    fn demux(
        self: Arc<Self>,
        mut reader: Box<dyn Read + Send>,
        on_open: Option<OnOpen>,
    ) -> Option<Box<dyn Read + Send>> {
        let mut noticed = false;
        loop {
            let frame = match read_frame(reader.as_mut()) {
                Ok(frame) => frame,
                Err(FrameError::Closed) => {
                    self.fail("the channel was closed");
                    return None;
                }
                Err(FrameError::Magic) if on_open.is_some() && !noticed && self.failure().is_none() => {
                    // The host started a new session without the agent seeing the old one end (a
                    // virtio-serial reconnect can be that quick): end this one, keep the channel.
                    self.end("the host started a new session", false);
                    return Some(reader);
                }
                Err(FrameError::Oversized { stream, kind, size, limit }) => {
                    if !noticed && self.failure().is_none() {
                        self.refuse_oversized(
                            stream,
                            kind,
                            format!("frame of `{size}` bytes exceeds the limit of `{limit}` bytes"),
                            on_open.is_some(),
                        );
                    }
                    continue;
                }
                Err(e @ (FrameError::TooLarge { .. } | FrameError::Malformed(_) | FrameError::Magic)) => {
                    // Framing is lost: nothing after this can be trusted, so tell the peer and end.
                    self.fail_with_notice(format!("protocol error: {e}"));
                    self.drain(reader.as_mut());
                    return None;
                }
                Err(FrameError::Io(e)) => {
                    self.fail(&format!("reading from the channel failed: {e}"));
                    return None;
                }
            };
            self.frames_in.fetch_add(1, Ordering::Relaxed);
            *lock(&self.last_frame_in) = Some(Instant::now());
            if noticed || self.failure().is_some() {
                // After a failure only keep draining, so that the notice (or a peer's write) finishes.
                continue;
            }
            if let Err(reason) = self.route(frame, on_open.as_ref()) {
                noticed = true;
                self.fail_with_notice(format!("protocol error: {reason}"));
            }
        }
    }

    /// Fails only the stream an oversized frame (already skipped) belonged to. An `Open` the agent
    /// never registered is answered with `Error` and `Close` from a thread of its own, because the
    /// demultiplexer must keep draining the channel; on an open stream the local consumer gets the
    /// error and answers the peer as it does any failure.
    fn refuse_oversized(self: &Arc<Self>, id: u32, kind: FrameKind, message: String, agent_side: bool) {
        let stream = lock(&self.streams).get(&id).cloned();
        match stream {
            Some(stream) => stream.update(|state| {
                if !state.local_closed {
                    state.inbox.push_back(Incoming::Error(message));
                }
            }),
            None if kind == FrameKind::Open && agent_side => {
                let conn = Arc::clone(self);
                let _ = thread::Builder::new().name("nestform-agent-refuse".into()).spawn(move || {
                    let _ = conn.send(Frame::new(id, FrameKind::Error, message.into_bytes()));
                    let _ = conn.send(Frame::new(id, FrameKind::Close, Vec::new()));
                });
            }
            // Late frames for a stream both sides closed are harmless, however large.
            None => {}
        }
    }

    fn drain(&self, reader: &mut dyn Read) {
        let mut sink = [0u8; 8192];
        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
    }

    fn route(self: &Arc<Self>, frame: Frame, on_open: Option<&OnOpen>) -> Result<(), String> {
        if frame.stream == 0 {
            return match frame.kind {
                FrameKind::Error => {
                    self.fail(&format!(
                        "peer ended the connection: {}",
                        String::from_utf8_lossy(&frame.body)
                    ));
                    Ok(())
                }
                kind => Err(format!("unexpected `{kind:?}` frame on stream 0")),
            };
        }
        if frame.kind == FrameKind::Open {
            let Some(on_open) = on_open else {
                return Err("the agent may not open streams".into());
            };
            let stream = {
                let mut streams = lock(&self.streams);
                if streams.contains_key(&frame.stream) {
                    return Err(format!("stream `{}` is already open", frame.stream));
                }
                let stream = Stream::new(frame.stream, Arc::clone(self));
                streams.insert(frame.stream, Arc::clone(&stream));
                stream
            };
            on_open(stream, frame.body);
            return Ok(());
        }
        let Some(stream) = lock(&self.streams).get(&frame.stream).cloned() else {
            // Late frames for a stream both sides closed are harmless.
            return Ok(());
        };
        stream.deliver(frame)
    }

    fn forget(&self, id: u32) {
        lock(&self.streams).remove(&id);
    }
}

/// State of one stream, guarded by the stream's mutex.
#[derive(Default)]
struct StreamState {
    inbox: VecDeque<Incoming>,
    /// Data bytes we may still send.
    send_credit: u64,
    /// Data bytes received and not yet returned as credit.
    recv_outstanding: u64,
    peer_closed: bool,
    local_closed: bool,
    failed: Option<String>,
    /// Frames outside flow control waiting in the inbox, and their body bytes.
    uncounted: usize,
    uncounted_bytes: usize,
    /// When the peer last sent anything on this stream (a keepalive and credit count): what an idle
    /// limit measures.
    last_heard: Option<Instant>,
    /// Data bytes sent and received on this stream, and when this side last sent any: what a stall's
    /// report shows ([`Conn::describe`]).
    sent: u64,
    received: u64,
    last_sent: Option<Instant>,
    /// When this side began waiting for credit, while it waits.
    awaiting_credit: Option<Instant>,
}

/// One stream of a connection, usable from several threads (e.g. one sending stdin while another reads
/// stdout).
pub struct Stream {
    id: u32,
    conn: Arc<Conn>,
    state: Mutex<StreamState>,
    cond: Condvar,
}

impl Stream {
    fn new(id: u32, conn: Arc<Conn>) -> Arc<Self> {
        Arc::new(Stream {
            id,
            conn,
            state: Mutex::new(StreamState {
                send_credit: u64::from(WINDOW),
                last_heard: Some(Instant::now()),
                ..StreamState::default()
            }),
            cond: Condvar::new(),
        })
    }

    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn update(&self, f: impl FnOnce(&mut StreamState)) {
        f(&mut lock(&self.state));
        self.cond.notify_all();
    }

    /// Called by the demultiplexer; never blocks on the consumer.
    fn deliver(&self, frame: Frame) -> Result<(), String> {
        let mut state = lock(&self.state);
        state.last_heard = Some(Instant::now());
        match frame.kind {
            FrameKind::Data | FrameKind::ErrData => {
                state.recv_outstanding += frame.body.len() as u64;
                state.received += frame.body.len() as u64;
                if state.recv_outstanding > u64::from(WINDOW) {
                    return Err(format!("stream `{}` sent past its credit", self.id));
                }
                if !state.local_closed {
                    let item = if frame.kind == FrameKind::Data {
                        Incoming::Data(frame.body)
                    } else {
                        Incoming::ErrData(frame.body)
                    };
                    state.inbox.push_back(item);
                }
            }
            FrameKind::Eof | FrameKind::Control | FrameKind::Error => {
                // Nobody reads a stream closed on this side: dropped, as its data is.
                if !state.local_closed {
                    state.uncounted += 1;
                    state.uncounted_bytes += frame.body.len();
                    if state.uncounted > CONTROL_BACKLOG || state.uncounted_bytes > CONTROL_BACKLOG_BYTES {
                        return Err(format!(
                            "stream `{}` has `{}` control frames of `{}` bytes waiting unread: the limit is `{CONTROL_BACKLOG}` frames and `{CONTROL_BACKLOG_BYTES}` bytes",
                            self.id, state.uncounted, state.uncounted_bytes
                        ));
                    }
                    state.inbox.push_back(match frame.kind {
                        FrameKind::Eof => Incoming::Eof,
                        FrameKind::Control => Incoming::Control(frame.body),
                        _ => Incoming::Error(String::from_utf8_lossy(&frame.body).into()),
                    });
                }
            }
            FrameKind::Credit => {
                let bytes: [u8; 4] =
                    frame.body.as_slice().try_into().map_err(|_| "credit body is not 4 bytes")?;
                state.send_credit += u64::from(u32::from_be_bytes(bytes));
                if state.send_credit > u64::from(WINDOW) {
                    return Err(format!("stream `{}` returned more credit than it was sent", self.id));
                }
            }
            FrameKind::Close => {
                state.peer_closed = true;
                if state.local_closed {
                    self.conn.forget(self.id);
                }
            }
            kind @ (FrameKind::Hello | FrameKind::Welcome | FrameKind::Open) => {
                return Err(format!("unexpected `{kind:?}` frame on stream `{}`", self.id));
            }
        }
        drop(state);
        self.cond.notify_all();
        Ok(())
    }

    /// Takes the next item, waiting until `deadline` (forever when `None`). Consuming data returns its
    /// credit to the peer.
    pub fn recv(&self, deadline: Option<Instant>) -> Result<Incoming, StreamEnd> {
        self.recv_within(deadline, None)
    }

    /// Takes the next item, waiting until `deadline` and, with an `idle` limit, no longer than that
    /// past the last frame the peer sent on this stream (keepalives and credit included).
    pub fn recv_within(
        &self,
        deadline: Option<Instant>,
        idle: Option<Duration>,
    ) -> Result<Incoming, StreamEnd> {
        let mut state = lock(&self.state);
        loop {
            if let Some(item) = state.inbox.pop_front() {
                let consumed = match &item {
                    Incoming::Data(bytes) | Incoming::ErrData(bytes) => bytes.len() as u32,
                    other => {
                        // Saturating: an error's text may be longer than its body was (lossy UTF-8),
                        // and a refused oversized frame's error was never counted.
                        state.uncounted = state.uncounted.saturating_sub(1);
                        let len = match other {
                            Incoming::Control(body) => body.len(),
                            Incoming::Error(message) => message.len(),
                            _ => 0,
                        };
                        state.uncounted_bytes = state.uncounted_bytes.saturating_sub(len);
                        0
                    }
                };
                let give_back = consumed > 0 && !state.peer_closed && !state.local_closed;
                state.recv_outstanding -= u64::from(consumed);
                drop(state);
                if give_back {
                    // A failed credit write means the connection is gone; the next recv says so.
                    let _ = self.conn.send(Frame::new(
                        self.id,
                        FrameKind::Credit,
                        consumed.to_be_bytes().to_vec(),
                    ));
                }
                return Ok(item);
            }
            if let Some(reason) = &state.failed {
                return Err(StreamEnd::Failed(reason.clone()));
            }
            if state.peer_closed || state.local_closed {
                return Err(StreamEnd::Closed);
            }
            state = self.wait(state, deadline, idle)?;
        }
    }

    /// Waits for the stream's state to change, or fails with [`StreamEnd::Timeout`] once `deadline`
    /// has passed or the peer has been silent for `idle`.
    fn wait<'a>(
        &self,
        state: MutexGuard<'a, StreamState>,
        deadline: Option<Instant>,
        idle: Option<Duration>,
    ) -> Result<MutexGuard<'a, StreamState>, StreamEnd> {
        let silent_until = idle.and_then(|idle| state.last_heard.map(|heard| heard + idle));
        let until = match (deadline, silent_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(match until {
            None => self.cond.wait(state).unwrap_or_else(|e| e.into_inner()),
            Some(until) => {
                let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                    return Err(StreamEnd::Timeout);
                };
                self.cond.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0
            }
        })
    }

    /// Sends bytes as `Data` (or `ErrData` when `stderr`), waiting for credit as needed.
    pub fn send_data(&self, stderr: bool, bytes: &[u8]) -> Result<(), StreamEnd> {
        self.send_data_within(stderr, bytes, None)
    }

    /// Sends bytes like [`Stream::send_data`], but waits for credit no longer than `idle` past the
    /// last frame the peer sent on this stream.
    pub fn send_data_within(
        &self,
        stderr: bool,
        mut bytes: &[u8],
        idle: Option<Duration>,
    ) -> Result<(), StreamEnd> {
        let kind = if stderr { FrameKind::ErrData } else { FrameKind::Data };
        while !bytes.is_empty() {
            let n = {
                let mut state = lock(&self.state);
                loop {
                    if let Some(reason) = &state.failed {
                        return Err(StreamEnd::Failed(reason.clone()));
                    }
                    if state.peer_closed || state.local_closed {
                        return Err(StreamEnd::Closed);
                    }
                    if state.send_credit > 0 {
                        break;
                    }
                    state.awaiting_credit.get_or_insert_with(Instant::now);
                    state = self.wait(state, None, idle)?;
                }
                let n = bytes.len().min(DATA_CHUNK).min(state.send_credit as usize);
                state.send_credit -= n as u64;
                state.awaiting_credit = None;
                state.sent += n as u64;
                state.last_sent = Some(Instant::now());
                n
            };
            self.conn.send(Frame::new(self.id, kind, bytes[..n].to_vec()))?;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Sends a JSON control message.
    pub fn send_control(&self, message: &impl serde::Serialize) -> Result<(), StreamEnd> {
        let body = serde_json::to_vec(message).expect("control messages always serialize");
        self.send_frame(FrameKind::Control, body)
    }

    /// Tells the peer that the stream is alive without sending anything on it: a `Credit` of 0 bytes,
    /// which every peer of protocol 1 accepts and ignores, so no frame kind had to be added for it.
    pub fn send_keepalive(&self) -> Result<(), StreamEnd> {
        self.send_frame(FrameKind::Credit, 0u32.to_be_bytes().to_vec())
    }

    /// Half-closes: no more data from this side.
    pub fn send_eof(&self) -> Result<(), StreamEnd> {
        self.send_frame(FrameKind::Eof, Vec::new())
    }

    /// Reports a failure of this stream to the peer (the caller closes afterwards).
    pub fn send_error(&self, message: &str) -> Result<(), StreamEnd> {
        self.send_frame(FrameKind::Error, message.as_bytes().to_vec())
    }

    fn send_frame(&self, kind: FrameKind, body: Vec<u8>) -> Result<(), StreamEnd> {
        {
            let state = lock(&self.state);
            if let Some(reason) = &state.failed {
                return Err(StreamEnd::Failed(reason.clone()));
            }
            if state.local_closed {
                return Err(StreamEnd::Closed);
            }
        }
        self.conn.send(Frame::new(self.id, kind, body))
    }

    /// Sends `Close` once; later calls do nothing. Wakes every thread waiting on this stream.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        if state.local_closed || state.failed.is_some() {
            return;
        }
        state.local_closed = true;
        state.inbox.clear();
        (state.uncounted, state.uncounted_bytes) = (0, 0);
        let forget = state.peer_closed;
        drop(state);
        self.cond.notify_all();
        let _ = self.conn.send(Frame::new(self.id, FrameKind::Close, Vec::new()));
        if forget {
            self.conn.forget(self.id);
        }
    }

    /// Closes the stream and forgets it at once instead of when the peer's `Close` arrives: for a call
    /// that gave up on the peer, whose late frames (if any come) are then dropped as those of a stream
    /// both sides closed. Ids are never reused, so nothing later can receive them.
    pub fn abandon(&self) {
        self.close();
        self.conn.forget(self.id);
    }

    /// The peer closed or cancelled the stream, or the connection failed.
    pub fn is_ended(&self) -> bool {
        let state = lock(&self.state);
        state.peer_closed || state.failed.is_some()
    }
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves its state consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn pair(on_open: OnOpen) -> (Arc<Conn>, Arc<Conn>) {
        let (a, b) = UnixStream::pair().unwrap();
        let start = |s: UnixStream, on_open| {
            let reader = s.try_clone().unwrap();
            let closer = s.try_clone().unwrap();
            Conn::start(
                Box::new(reader),
                Box::new(s),
                ShutdownHandle::new(move || {
                    let _ = closer.shutdown(std::net::Shutdown::Both);
                }),
                on_open,
            )
        };
        (start(a, None), start(b, Some(on_open)))
    }

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(10))
    }

    #[test]
    fn a_stall_report_tells_a_sender_waiting_for_credit_from_an_unanswered_request() {
        // The agent side takes the stream and never reads it: its credit is never returned.
        let kept = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&kept);
        let on_open: OnOpen = Box::new(move |stream, _| lock(&keep).push(stream));
        let (client, agent) = pair(on_open);
        client.set_label("guest-a");
        let stuck = client.open(b"stuck".to_vec()).unwrap();
        let quiet = client.open(b"quiet".to_vec()).unwrap();
        quiet.send_data(false, b"a request").unwrap();
        let sender = {
            let stuck = Arc::clone(&stuck);
            thread::spawn(move || {
                stuck.send_data_within(
                    false,
                    &vec![7u8; WINDOW as usize + 10],
                    Some(Duration::from_millis(300)),
                )
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let report = loop {
            let report = client.describe();
            if report.contains("waiting for credit") || Instant::now() > deadline {
                break report;
            }
            thread::sleep(Duration::from_millis(5));
        };
        assert!(report.starts_with("connection to `guest-a`: "), "{report}");
        assert!(report.contains(&format!("stream {}: sent {WINDOW} B", stuck.id())), "{report}");
        assert!(report.contains("credit 0 B") && report.contains("waiting for credit for"), "{report}");
        // The other stream sent its request and waits on nothing here: nothing came back.
        assert!(report.contains(&format!("stream {}: sent 9 B", quiet.id())), "{report}");
        assert!(report.contains("received 0 B"), "{report}");
        assert_eq!(sender.join().unwrap(), Err(StreamEnd::Timeout));
        // Both connections of this process are in the process-wide report.
        let all = describe_all();
        assert!(all.contains("connection to `guest-a`") && all.contains(&agent.describe()[..20]), "{all}");
    }

    #[test]
    fn echo_stream_respects_credit_and_closes() {
        let on_open: OnOpen = Box::new(|stream, body| {
            assert_eq!(body, b"echo");
            thread::spawn(move || {
                while let Ok(Incoming::Data(bytes)) = stream.recv(None) {
                    stream.send_data(false, &bytes).unwrap();
                }
                stream.close();
            });
        });
        let (client, agent) = pair(on_open);
        let stream = client.open(b"echo".to_vec()).unwrap();
        // More than the window: only works if credit flows back as the agent consumes.
        let payload: Vec<u8> = (0..3 * WINDOW).map(|i| i as u8).collect();
        let sender = {
            let stream = Arc::clone(&stream);
            let payload = payload.clone();
            thread::spawn(move || {
                stream.send_data(false, &payload).unwrap();
                stream.send_eof().unwrap();
            })
        };
        let mut got = Vec::new();
        loop {
            match stream.recv(soon()) {
                Ok(Incoming::Data(bytes)) => got.extend_from_slice(&bytes),
                Err(StreamEnd::Closed) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        sender.join().unwrap();
        assert_eq!(got, payload);
        stream.close();
        // Both sides closed: the agent forgets the stream once our Close arrives.
        let deadline = Instant::now() + Duration::from_secs(5);
        while agent.open_streams() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(agent.open_streams(), 0);
        assert_eq!(client.open_streams(), 0);
    }

    #[test]
    fn connection_failure_wakes_waiting_streams() {
        let on_open: OnOpen = Box::new(|_stream, _body| {});
        let (client, agent) = pair(on_open);
        let stream = client.open(b"x".to_vec()).unwrap();
        let waiter = thread::spawn(move || stream.recv(None));
        thread::sleep(Duration::from_millis(50));
        agent.fail("test ends the agent side");
        let end = waiter.join().unwrap();
        assert!(matches!(end, Err(StreamEnd::Failed(_))), "{end:?}");
        client.join();
        assert!(client.failure().is_some());
    }

    #[test]
    fn recv_times_out() {
        let on_open: OnOpen = Box::new(|_stream, _body| {});
        let (client, _agent) = pair(on_open);
        let stream = client.open(b"x".to_vec()).unwrap();
        let end = stream.recv(Some(Instant::now() + Duration::from_millis(20)));
        assert_eq!(end, Err(StreamEnd::Timeout));
    }

    #[test]
    fn keepalives_hold_off_an_idle_limit() {
        let on_open: OnOpen = Box::new(|stream, _body| {
            thread::spawn(move || {
                for _ in 0..6 {
                    thread::sleep(Duration::from_millis(50));
                    stream.send_keepalive().unwrap();
                }
                stream.send_control(&"done").unwrap();
            });
        });
        let (client, _agent) = pair(on_open);
        let stream = client.open(b"x".to_vec()).unwrap();
        let idle = Some(Duration::from_millis(150));
        // 300 ms in all, but never 150 ms without a frame.
        assert_eq!(stream.recv_within(None, idle), Ok(Incoming::Control(b"\"done\"".to_vec())));
        assert_eq!(stream.recv_within(None, idle), Err(StreamEnd::Timeout));
    }

    #[test]
    fn uncounted_frames_cannot_grow_an_inbox_without_limit() {
        let (tx, rx) = std::sync::mpsc::channel();
        let on_open: OnOpen = Box::new(move |stream, _body| {
            let _ = tx.send(stream);
        });
        let (client, agent) = pair(on_open);
        let stream = client.open(b"x".to_vec()).unwrap();
        let served = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // Nobody on the agent side reads this stream; control frames are not counted against credit.
        for _ in 0..1000 {
            if stream.send_control(&"flood").is_err() {
                break;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while agent.failure().is_none() && lock(&served.state).inbox.len() < 1000 && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(5));
        }
        let queued = lock(&served.state).inbox.len();
        assert!(queued <= CONTROL_BACKLOG, "`{queued}` control frames queued");
    }

    #[test]
    fn a_stream_closed_here_queues_nothing_the_peer_still_sends() {
        let (tx, rx) = std::sync::mpsc::channel();
        let on_open: OnOpen = Box::new(move |stream, _body| {
            stream.close();
            let _ = tx.send(stream);
        });
        let (client, agent) = pair(on_open);
        let stream = client.open(b"x".to_vec()).unwrap();
        let served = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // The client has not read the agent's `Close` yet and keeps sending.
        for _ in 0..(2 * CONTROL_BACKLOG) {
            let _ = stream.send_control(&"late");
        }
        thread::sleep(Duration::from_millis(200));
        assert_eq!(lock(&served.state).inbox.len(), 0);
        assert_eq!(agent.failure(), None);
    }
}
