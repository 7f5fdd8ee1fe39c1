//! The byte channel under a connection: anything that splits into a reader and a writer half.
//!
//! On the host this is libvirt's `Domain::open_channel` stream (wrapped by the provider), in tests a
//! `UnixStream`; in the guest the agent opens the virtio-serial port file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

/// A byte channel that can be used from two threads at once: one reading, one writing.
pub trait Transport: Send + 'static {
    /// The reading half.
    type Reader: Read + Send + 'static;
    /// The writing half.
    type Writer: Write + Send + 'static;

    /// Splits the channel. The [`ShutdownHandle`] must unblock a read in progress on the reader half
    /// (the connection uses it to stop its reader thread on a failure or a handshake timeout).
    fn split(self) -> io::Result<(Self::Reader, Self::Writer, ShutdownHandle)>;
}

/// Ends a transport so that a blocked read returns; calling it more than once is harmless.
#[derive(Clone)]
pub struct ShutdownHandle(std::sync::Arc<dyn Fn() + Send + Sync>);

impl ShutdownHandle {
    /// Wraps the function that shuts the transport down.
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }

    /// For a transport that cannot be shut down from another thread; a blocked read then only ends when
    /// the peer closes.
    pub fn none() -> Self {
        Self(std::sync::Arc::new(|| {}))
    }

    /// Shuts the transport down.
    pub fn shutdown(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShutdownHandle")
    }
}

impl Transport for UnixStream {
    type Reader = UnixStream;
    type Writer = UnixStream;

    fn split(self) -> io::Result<(UnixStream, UnixStream, ShutdownHandle)> {
        let reader = self.try_clone()?;
        let closer = self.try_clone()?;
        let shutdown = ShutdownHandle::new(move || {
            let _ = closer.shutdown(Shutdown::Both);
        });
        Ok((reader, self, shutdown))
    }
}

/// A character device such as the virtio-serial port, opened read-write. It cannot be shut down from
/// another thread; the agent never needs to, because it ends a session only when the host side closes.
impl Transport for File {
    type Reader = File;
    type Writer = File;

    fn split(self) -> io::Result<(File, File, ShutdownHandle)> {
        let reader = self.try_clone()?;
        Ok((reader, self, ShutdownHandle::none()))
    }
}

/// Two separate halves, such as a child process's stdout and stdin, or the agent's own stdin and stdout.
/// It cannot be shut down from another thread; it ends when the peer closes.
pub struct Pipe<R, W> {
    reader: R,
    writer: W,
}

impl<R, W> Pipe<R, W> {
    /// Pairs a reader with a writer.
    pub fn new(reader: R, writer: W) -> Self {
        Self { reader, writer }
    }
}

impl<R: Read + Send + 'static, W: Write + Send + 'static> Transport for Pipe<R, W> {
    type Reader = R;
    type Writer = W;

    fn split(self) -> io::Result<(R, W, ShutdownHandle)> {
        Ok((self.reader, self.writer, ShutdownHandle::none()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn unix_stream_shutdown_unblocks_a_reader() {
        let (a, _b) = UnixStream::pair().unwrap();
        let (mut reader, _writer, shutdown) = a.split().unwrap();
        let blocked = thread::spawn(move || reader.read(&mut [0u8; 1]).unwrap());
        thread::sleep(std::time::Duration::from_millis(30));
        shutdown.shutdown();
        assert_eq!(blocked.join().unwrap(), 0);
    }
}
