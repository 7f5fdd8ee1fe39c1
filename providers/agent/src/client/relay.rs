//! [`RelayStream`]: a relayed unix socket in the guest, as an ordinary `Read + Write` byte stream.
//!
//! Reads wait without limit by default, as on a socket: a relay carries a protocol of its own (libvirt's
//! RPC through a tunnel) whose connections are idle for minutes when healthy, and only that protocol
//! knows how long silence may last. [`RelayStream::set_read_timeout`] sets a limit, as
//! `UnixStream::set_read_timeout` does.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ClientInner;
use crate::mux::{Incoming, Stream, StreamEnd};

/// Keeps the connection alive while any half of a relay exists, and closes the stream after the last.
struct RelayShared {
    stream: Arc<Stream>,
    _client: Arc<ClientInner>,
}

impl Drop for RelayShared {
    fn drop(&mut self) {
        self.stream.close();
    }
}

/// A byte stream to a unix socket in the guest. Reading returns 0 once the socket's server closed its
/// side; dropping the stream (and every [`RelayWriter`]) closes the connection to the socket.
pub struct RelayStream {
    shared: Arc<RelayShared>,
    pending: Vec<u8>,
    offset: usize,
    eof: bool,
    read_timeout: Option<Duration>,
}

/// The writing half of a [`RelayStream`], for a second thread.
#[derive(Clone)]
pub struct RelayWriter {
    shared: Arc<RelayShared>,
}

impl RelayStream {
    pub(super) fn new(client: Arc<ClientInner>, stream: Arc<Stream>) -> Self {
        Self {
            shared: Arc::new(RelayShared { stream, _client: client }),
            pending: Vec::new(),
            offset: 0,
            eof: false,
            read_timeout: None,
        }
    }

    /// Limits how long one `read` waits for bytes; past it the read fails with
    /// [`io::ErrorKind::TimedOut`] and the relay stays usable. `None` (the default) waits as long as
    /// the relay is open.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// A writer for the same stream, so one thread can read while another writes.
    pub fn writer(&self) -> RelayWriter {
        RelayWriter { shared: Arc::clone(&self.shared) }
    }

    /// Tells the socket's server that no more bytes come (it reads end-of-file).
    pub fn shutdown_write(&self) -> io::Result<()> {
        shutdown_write(&self.shared.stream)
    }
}

impl RelayWriter {
    /// Tells the socket's server that no more bytes come (it reads end-of-file).
    pub fn shutdown_write(&self) -> io::Result<()> {
        shutdown_write(&self.shared.stream)
    }

    /// Ends the relay in both directions at once: the agent closes its connection to the socket
    /// (a server that takes one client at a time, such as QEMU's chardev, is free for the next),
    /// and a read in progress on this side returns end-of-file.
    pub fn close(&self) {
        self.shared.stream.close();
    }
}

fn to_io(end: StreamEnd) -> io::Error {
    match end {
        StreamEnd::Closed => io::Error::new(io::ErrorKind::BrokenPipe, "the relay was closed"),
        StreamEnd::Failed(reason) => io::Error::new(io::ErrorKind::ConnectionAborted, reason),
        end @ StreamEnd::TooLarge { .. } => io::Error::new(io::ErrorKind::InvalidInput, end.to_string()),
        StreamEnd::Timeout => {
            io::Error::new(io::ErrorKind::TimedOut, "no bytes came through the relay in time")
        }
    }
}

fn shutdown_write(stream: &Stream) -> io::Result<()> {
    stream.send_eof().map_err(to_io)
}

fn write_to(stream: &Stream, buf: &[u8]) -> io::Result<usize> {
    stream.send_data(false, buf).map_err(to_io)?;
    Ok(buf.len())
}

impl Read for RelayStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset == self.pending.len() {
            if self.eof || buf.is_empty() {
                return Ok(0);
            }
            let deadline = self.read_timeout.map(|t| Instant::now() + t);
            match self.shared.stream.recv(deadline) {
                Ok(Incoming::Data(bytes)) => {
                    self.pending = bytes;
                    self.offset = 0;
                }
                Ok(Incoming::Eof) | Err(StreamEnd::Closed) => self.eof = true,
                Ok(Incoming::Error(message)) => return Err(io::Error::other(message)),
                Ok(_) => {}
                Err(end) => return Err(to_io(end)),
            }
        }
        let n = buf.len().min(self.pending.len() - self.offset);
        buf[..n].copy_from_slice(&self.pending[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

impl Write for RelayStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_to(&self.shared.stream, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for RelayWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_to(&self.shared.stream, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
