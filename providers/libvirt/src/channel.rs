//! Reaching into a guest: its agent channel as a byte stream, and the tail of its serial console.
//!
//! The agent channel is opened with `virDomainOpenChannel` on a blocking `virStream`, so it goes
//! through the libvirt connection itself and works wherever the connection reaches (a remote or
//! tunnelled URI too). Blocking streams need no event loop. Only `unix` channels can be opened this
//! way (the domain XML declares the agent's channels so). A guest has several agent channels
//! ([`AGENT_CHANNELS`](crate::AGENT_CHANNELS)) and a client takes the first one free, so clients
//! never take a channel from each other.
//!
//! A channel is aborted before its connection closes, and [`abort_open_channels`] aborts what is
//! still open when the process ends: libvirtd deadlocks when a client goes away with a channel open
//! (see there).
//!
//! The console tail comes from the log file libvirt's `virtlogd` keeps of the serial port
//! (`<serial type="pty"><log file=...>`, see `domain`), which holds the boot messages from the very
//! first line; it is a file on the host the URI names, so it is only read for local connections. On
//! a promoted host (a tunnel into a lab guest) the engine reads it through the guest's agent instead
//! (`nestform_provider_promoted::console`, which names the same path).

use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nestform_agent::{ShutdownHandle, Transport};
use nestform_provider::{AgentChannel, Hypervisor, ProviderError};
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::stream::Stream;

use crate::error::{is, op};
use crate::{LibvirtHypervisor, AGENT_CHANNEL};

/// Where libvirt's system instance keeps its QEMU logs; the console log of guest `NAME` is
/// `NAME-console.log` in it. `nestform_provider_promoted::console::CONSOLE_LOG_DIR` is the same (its test checks).
pub const CONSOLE_LOG_DIR: &str = "/var/log/libvirt/qemu";

/// The serial console log file of the domain `name` (what `domain` writes into `<serial><log>`).
pub fn console_log_path(name: &str) -> PathBuf {
    PathBuf::from(CONSOLE_LOG_DIR).join(format!("{name}-console.log"))
}

/// An open agent channel of one guest. It is a [`Transport`] for `nestform_agent::AgentClient` and
/// turns into the provider trait's [`AgentChannel`]; the stream is aborted when the last half is
/// dropped or the shutdown handle is called.
pub struct LibvirtChannel {
    stream: Arc<ChannelStream>,
}

/// The stream shared by the reading and the writing half. libvirt's remote driver lets one thread
/// receive while another sends on the same stream (it drops its driver lock while waiting).
struct ChannelStream {
    /// Freed by hand in `Drop`: virt's own `Drop` panics when libvirt reports a failure.
    stream: ManuallyDrop<Stream>,
    /// Set once the stream was aborted; libvirt must not be asked twice.
    closed: AtomicBool,
    /// The guest's name, for messages.
    guest: String,
}

impl ChannelStream {
    fn abort(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            // SAFETY: the pointer is valid until `Drop` frees it, which cannot run while `&self` lives.
            // A failed abort (the connection is gone) leaves nothing to clean up on this side.
            unsafe {
                virt::sys::virStreamAbort(self.stream.as_ptr());
            }
        }
    }

    fn error(&self, what: &str, e: virt::error::Error) -> io::Error {
        let kind =
            if self.closed.load(Ordering::SeqCst) { io::ErrorKind::BrokenPipe } else { io::ErrorKind::Other };
        io::Error::new(kind, format!("{what} the agent channel of `{}`: {}", self.guest, e.message()))
    }
}

impl Drop for ChannelStream {
    fn drop(&mut self) {
        self.abort();
        // SAFETY: the last reference to this wrapper's own stream reference, released exactly once; the
        // `ManuallyDrop` keeps virt from releasing it again.
        unsafe {
            virt::sys::virStreamFree(self.stream.as_ptr());
        }
    }
}

/// Every channel this process opened that may still be open.
static OPEN: Mutex<Vec<Weak<ChannelStream>>> = Mutex::new(Vec::new());

fn register(stream: &Arc<ChannelStream>) {
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    open.retain(|w| w.strong_count() > 0);
    open.push(Arc::downgrade(stream));
}

/// Aborts every agent channel this process still has open, each abort answered by libvirtd, within
/// `limit` in all; returns how many it aborted. Call it before the process ends.
///
/// Why: libvirtd (its remote daemon's `daemonStreamEvent`) holds the client's private lock while it
/// handles an event of one of the client's streams, and when handing data to the client fails
/// because the client is going away, it closes the client right there; the close hook
/// (`remoteClientFreePrivateCallbacks`) takes that same lock. Its main loop then waits for itself
/// forever (seen in gdb: libvirtd's main thread in `virNetServerClientClose` under a stream event,
/// blocked on a mutex whose owner is that very thread), and from then on it answers no client at
/// all: every call and every agent channel through it stalls. A process that ends with a channel
/// open is that race: its connection closes while the guest's agent may still be sending. An abort
/// that libvirtd answered has removed the stream first, so the close that follows is harmless.
pub fn abort_open_channels(limit: Duration) -> usize {
    let open: Vec<Arc<ChannelStream>> = {
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.drain(..).filter_map(|w| w.upgrade()).filter(|s| !s.closed.load(Ordering::SeqCst)).collect()
    };
    let count = open.len();
    if count == 0 {
        return 0;
    }
    // Each abort waits for libvirtd's answer; one that is already wedged must not hold the exit.
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in open {
        let tx = tx.clone();
        std::thread::spawn(move || {
            stream.abort();
            let _ = tx.send(());
        });
    }
    drop(tx);
    let deadline = Instant::now() + limit;
    let mut done = 0;
    while done < count {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => done += 1,
            Err(_) => {
                tracing::warn!(
                    open = count,
                    aborted = done,
                    "libvirtd did not answer every channel abort in time"
                );
                break;
            }
        }
    }
    count
}

/// The reading half of a [`LibvirtChannel`].
pub struct ChannelReader(Arc<ChannelStream>);

/// The writing half of a [`LibvirtChannel`].
pub struct ChannelWriter(Arc<ChannelStream>);

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.0.closed.load(Ordering::SeqCst) {
            return Ok(0);
        }
        match self.0.stream.recv(buf) {
            // Blocking stream: 0 is the end of the stream, never "try again".
            Ok(n) => Ok(n.max(0) as usize),
            // After our own abort a blocked read ends; that is the end of the stream, not a failure.
            Err(_) if self.0.closed.load(Ordering::SeqCst) => Ok(0),
            Err(e) => Err(self.0.error("reading", e)),
        }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.0.closed.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("the agent channel of `{}` is closed", self.0.guest),
            ));
        }
        match self.0.stream.send(buf) {
            Ok(n) if n > 0 => Ok(n as usize),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("the agent channel of `{}` took no bytes", self.0.guest),
            )),
            Err(e) => Err(self.0.error("writing", e)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // `virStreamSend` hands each buffer to the connection before it returns.
        Ok(())
    }
}

impl LibvirtChannel {
    /// The guest's name.
    pub fn guest(&self) -> &str {
        &self.stream.guest
    }

    fn halves(self) -> (ChannelReader, ChannelWriter, Arc<ChannelStream>) {
        (ChannelReader(self.stream.clone()), ChannelWriter(self.stream.clone()), self.stream)
    }
}

impl Transport for LibvirtChannel {
    type Reader = ChannelReader;
    type Writer = ChannelWriter;

    fn split(self) -> io::Result<(ChannelReader, ChannelWriter, ShutdownHandle)> {
        let (reader, writer, stream) = self.halves();
        Ok((reader, writer, ShutdownHandle::new(move || stream.abort())))
    }
}

impl From<LibvirtChannel> for AgentChannel {
    fn from(channel: LibvirtChannel) -> AgentChannel {
        let (reader, writer, stream) = channel.halves();
        AgentChannel {
            reader: Box::new(reader),
            writer: Box::new(writer),
            shutdown: Arc::new(move || stream.abort()),
        }
    }
}

/// Opens the agent channel of the running guest `id` (its libvirt UUID) on `hypervisor`'s connection.
/// Each call is a new session, on a channel of its own (see [`open_domain_channel`]).
pub fn open_agent_channel(hypervisor: &LibvirtHypervisor, id: &str) -> Result<LibvirtChannel, ProviderError> {
    let dom = guest_domain(hypervisor, id)?;
    open_domain_channel(hypervisor, &dom)
}

/// The socket paths of the running guest `id`'s agent channels, in order, as its live XML names them
/// (libvirt chooses them per domain, e.g. `/run/libvirt/qemu/channel/3-g2/dev.nestform.agent.0`).
/// Empty for a guest that does not run.
pub fn agent_socket_paths(hypervisor: &LibvirtHypervisor, id: &str) -> Result<Vec<String>, ProviderError> {
    let dom = guest_domain(hypervisor, id)?;
    if !dom.is_active().map_err(op("read domain", id))? {
        return Ok(Vec::new());
    }
    let xml = dom.xml_desc(0).map_err(op("read domain", id))?;
    Ok(crate::domain::agent_channels(&xml).into_iter().filter_map(|(_, path)| path).collect())
}

/// The domain of guest `id`, for reaching its agent channel; a guest that is gone says so.
fn guest_domain(hypervisor: &LibvirtHypervisor, id: &str) -> Result<Domain, ProviderError> {
    match hypervisor.connection().lookup_domain_by_uuid_string(id) {
        Ok(dom) => Ok(dom),
        Err(e) if is(&e, ErrorNumber::NoDomain) || is(&e, ErrorNumber::InvalidArg) => {
            Err(ProviderError::op("open agent channel", id, "no such guest"))
        }
        Err(e) => Err(op("open agent channel", id)(e)),
    }
}

/// [`open_agent_channel`] for a domain already looked up: the first of its agent channels that no
/// other client holds. Never with `VIR_DOMAIN_CHANNEL_FORCE`: forcing took the channel from whoever
/// had it (another nestform run, or another operation of this one), whose calls then ended or, at
/// deeper levels, waited for answers that went to the new client. A client that went away frees its
/// channel with its connection, so a crashed run does not keep one.
pub fn open_domain_channel(
    hypervisor: &LibvirtHypervisor,
    dom: &Domain,
) -> Result<LibvirtChannel, ProviderError> {
    let guest = dom.name().unwrap_or_else(|_| "?".to_string());
    let xml = dom.xml_desc(0).map_err(op("open agent channel", &guest))?;
    let mut channels: Vec<String> =
        crate::domain::agent_channels(&xml).into_iter().map(|(name, _)| name).collect();
    if channels.is_empty() {
        // A domain whose XML does not say (the test driver's own): the one name every guest has.
        channels.push(AGENT_CHANNEL.to_string());
    }
    for name in &channels {
        // 0: a blocking stream, whose calls wait for data and need no event loop.
        let stream = Stream::new(hypervisor.connection(), 0).map_err(op("open agent channel", &guest))?;
        let stream = ChannelStream {
            stream: ManuallyDrop::new(stream),
            closed: AtomicBool::new(false),
            guest: guest.clone(),
        };
        match dom.open_channel(Some(name), &stream.stream, 0) {
            Ok(()) => {
                tracing::debug!(guest = %guest, channel = %name, "agent channel open");
                let stream = Arc::new(stream);
                register(&stream);
                return Ok(LibvirtChannel { stream });
            }
            Err(e) => {
                // Never opened: nothing to abort, only the reference to free (in `Drop`).
                stream.closed.store(true, Ordering::SeqCst);
                if !is_busy(&e) {
                    return Err(op("open agent channel", &guest)(e));
                }
                tracing::debug!(guest = %guest, channel = %name, "agent channel in use; trying the next");
            }
        }
    }
    Err(ProviderError::op(
        "open agent channel",
        &guest,
        nestform_provider::agent_channels_busy(channels.len()),
    ))
}

/// Whether opening a channel failed only because another client holds it (libvirt's QEMU driver:
/// "Active channel stream exists for this domain").
fn is_busy(e: &virt::error::Error) -> bool {
    is(e, ErrorNumber::OperationFailed) && e.message().contains("Active channel stream exists")
}

/// The last `max_bytes` of guest `id`'s serial console log (boot messages, the init script's output),
/// cut at a line start when the cut falls inside the first line. Only for connections to this machine:
/// the log file is on the host the URI names.
pub fn console_tail(
    hypervisor: &LibvirtHypervisor,
    id: &str,
    max_bytes: usize,
) -> Result<String, ProviderError> {
    if !crate::facts::is_local(hypervisor.uri()) {
        return Err(ProviderError::Unsupported(format!(
            "reading the console log of a guest on `{}`",
            hypervisor.uri()
        )));
    }
    let dom = hypervisor.connection().lookup_domain_by_uuid_string(id).map_err(op("read console of", id))?;
    let name = dom.name().map_err(op("read console of", id))?;
    let path = console_log_path(&name);
    let bytes = std::fs::read(&path)
        .map_err(|e| ProviderError::op("read console of", &name, format!("`{}`: {e}", path.display())))?;
    Ok(tail(&bytes, max_bytes))
}

/// The end of `bytes`, at most `max` of them, starting after a line break when there is one to cut
/// at, with the carriage returns of a serial console removed.
fn tail(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    let mut cut = &bytes[start..];
    if start > 0 {
        if let Some(nl) = cut.iter().position(|b| *b == b'\n') {
            cut = &cut[nl + 1..];
        }
    }
    String::from_utf8_lossy(cut).replace('\r', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_starts_at_a_line() {
        let log = b"first line\r\nsecond line\r\nthird\r\n";
        assert_eq!(tail(log, 1000), "first line\nsecond line\nthird\n");
        assert_eq!(tail(log, 20), "third\n");
        assert_eq!(tail(b"no newline at all", 5), "t all");
        assert_eq!(tail(b"", 10), "");
    }

    #[test]
    fn console_log_is_named_after_the_domain() {
        assert_eq!(console_log_path("l1"), PathBuf::from("/var/log/libvirt/qemu/l1-console.log"));
    }

    #[test]
    fn the_test_driver_cannot_open_channels() {
        // libvirt's test driver has no virDomainOpenChannel: the error must say so, not hang or panic.
        let h = crate::LibvirtProvider::new().open("test:///default").unwrap();
        let dom = h.connection().lookup_domain_by_name("test").unwrap();
        let id = dom.uuid_string().unwrap();
        let err = open_agent_channel(&h, &id).err().expect("the test driver has no channels");
        assert!(err.to_string().contains("open agent channel `test`"), "{err}");
        assert!(open_agent_channel(&h, "00000000-0000-0000-0000-000000000000").is_err());
    }
}
