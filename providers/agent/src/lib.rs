//! nestform's in-guest agent and its host-side client.
//!
//! The agent (`nestform-agent`, a static binary) runs inside a guest and serves one byte stream: the
//! virtio-serial port `/dev/virtio-ports/dev.nestform.agent.0`. The host reaches that port through
//! libvirt's `Domain::open_channel`, which works over any libvirt connection, including one tunnelled
//! through a parent guest. The agent never listens on a network socket and never speaks first: it only
//! answers. [`AgentClient`] is the host side, over any [`Transport`].
//!
//! # Protocol (version 1)
//!
//! ```text
//!  client (host)                                          agent (guest)
//!    |-- "NESTFORM" magic ----------------------------------->|  agent skips any bytes before it
//!    |-- Hello   {protocol, nonce, client_version} ---------->|  stream 0
//!    |<-- Welcome {protocol, nonce, agent_version, caps} -----|  on a version mismatch the agent still
//!    |                                                        |  sends its Welcome, then closes
//!    |-- Open(3) {"op":"exec", argv, ...} ------------------->|  agent starts a thread for stream 3
//!    |-- Open(5) {"op":"file_get", path} ------------------->|  streams interleave freely
//!    |-- Data(3) stdin bytes, Eof(3) ------------------------>|
//!    |<-- Control(5) {"type":"file_meta", size, mode} --------|
//!    |<-- Data(3) stdout / ErrData(3) stderr -----------------|
//!    |-- Credit(3) n ---------------------------------------->|  receiver returns credit as it consumes
//!    |<-- Data(5) ..., Control(5) {"type":"trailer", crc32} --|
//!    |<-- Control(3) {"type":"exit", code, signal} -----------|
//!    |<-- Close(3), Close(5) ---------------------------------|  agent is done with the stream
//!    |-- Close(3), Close(5) --------------------------------->|  id is free once both sides closed
//!
//!  every frame:  | length u32 BE | stream u32 BE | kind u8 | body (length - 5 bytes, at most 1 MiB) |
//! ```
//!
//! - Frame kinds: [`frame::FrameKind`]. Control bodies are JSON ([`proto`]); data bodies are raw bytes
//!   in chunks of at most 64 KiB.
//! - A length over the limit, an unknown kind, or a frame that breaks the rules below is a protocol
//!   error: the side that sees it sends `Error` on stream 0 with the message and closes the connection.
//!   The claimed size is never allocated. One exception: a length over the limit but at most 16 MiB,
//!   with a known kind on a stream other than 0, is read past and fails only its stream (an `Open` is
//!   answered with `Error` and `Close`), since the header of a channel in step can be trusted
//!   ([`frame::read_frame`]). Neither side sends a frame over the limit: that call fails alone.
//! - Stream ids are chosen by the client (1, 2, 3, ...); stream 0 is the connection itself.
//! - `Error(n)` reports that stream `n` failed (e.g. a relay path off the allowlist); `Close(n)` from the
//!   client before the agent finished cancels the stream (a running program's process group is killed).
//!
//! # Flow control
//!
//! Credit per stream and direction ([`mux::WINDOW`], 256 KiB): a sender may have at most that many data
//! bytes outstanding; the receiver returns credit as its consumer takes bytes. Each side's reader thread
//! only moves frames into per-stream inboxes (bounded by the window) and never waits on a consumer, so a
//! slow reader on one stream stalls only that stream's sender, never the channel or another stream.
//! Control frames are not counted: each stream sends only a handful.
//!
//! # Deadlines
//!
//! The client never waits without limit for the agent: `facts` and opening a relay must be answered
//! within [`ClientOptions::call_timeout`] (60 s by default), a file transfer fails when the agent is
//! silent that long, an exec with a limit fails at that limit plus [`ClientOptions::exec_grace`], and
//! an exec on an agent that announces `keepalive` fails when not even a keepalive (an empty `Credit`
//! every 5 s) came for the call timeout. A call that gave up forgets its stream, so a late answer is
//! dropped. After a timeout's kill the agent waits 2 s for the program and its pipes, then answers
//! with `incomplete` set.
//!
//! # Reconnects
//!
//! When the host side closes the port the agent sees end-of-file, fails every stream of that session
//! (killing programs it started), reopens the port and waits for a new magic and hello. The magic lets
//! it skip stale bytes left in the port by the previous session. If a new client's magic arrives where
//! the agent expects a frame length (the host reconnected before the agent saw it leave), the agent ends
//! the old session the same way and answers the new hello on the same channel. A client scans for the
//! welcome to its own nonce by the bytes every welcome frame begins with ([`frame::WELCOME_MARK`]),
//! discarding whatever comes before it, so leftovers of an earlier session cannot confuse it: not even
//! the tail of a frame the agent was writing when the previous host left, which the port delivers to
//! the next one.
//!
//! # Using it
//!
//! ```no_run
//! use std::os::unix::net::UnixStream;
//! use nestform_agent::{AgentClient, ExecRequest};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = UnixStream::connect("/run/nestform/guest-1.agent")?;
//! let client = AgentClient::handshake(channel)?;
//! let result = client.exec(ExecRequest::new(["uname", "-r"]))?;
//! println!("{}", String::from_utf8_lossy(&result.stdout));
//! # Ok(())
//! # }
//! ```
//!
//! [`reach`] is the client as the engine sees it: [`wait_for_agent`] over any hypervisor's agent
//! channel, and [`Agent`], a [`GuestAgent`](nestform_provider::GuestAgent) (a program's run time
//! measured in the guest comes back as `ExitStatus::elapsed_us`).
//!
//! The framing, multiplexing and flow control are nestform's own (they are small and tied to a single
//! virtio-serial byte stream); JSON, checksums and interface listing come from well-kept crates.

pub mod agent;
pub mod client;
pub mod frame;
pub mod mux;
pub mod proto;
pub mod reach;
pub mod transport;

pub use agent::{serve_session, AgentConfig, AgentError, SessionEnd, DEFAULT_PORT};
pub use client::{
    AgentClient, ClientError, ClientOptions, ExecRequest, ExecResult, RelayStream, RelayWriter,
    DEFAULT_CALL_TIMEOUT, EXEC_OUTPUT_LIMIT,
};
pub use proto::{ExitStatus, Facts, FileInfo, KvmNested, NetAddress, Welcome, PROTOCOL_VERSION};
pub use reach::{wait_for_agent, Agent};
pub use transport::{Pipe, ShutdownHandle, Transport};
