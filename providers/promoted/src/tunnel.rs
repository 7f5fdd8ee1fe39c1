//! [`LibvirtTunnel`]: a local unix socket that reaches the libvirtd inside a lab guest through the
//! guest's agent, so an ordinary libvirt client on the controller can manage the next level down.
//!
//! ```text
//!  libvirt client ──▶ /tmp/nestform-tunnel-XXXX/libvirt-sock ──▶ agent relay ──▶ guest's libvirt-sock
//!  (qemu+unix:///system?socket=...)   (one relay per accepted connection, two threads each)
//! ```
//!
//! The agent only relays to sockets on its allowlist (`--relay-allow`, see `init`). The byte pumping
//! is nestform's own and small: the relay is already a `Read + Write` stream.
//!
//! Shutting down without busy loops: the accepting thread blocks in `accept` and is woken by a
//! connection of the tunnel's own once the stop flag is set; each connection's two threads end when
//! either side closes, and dropping the tunnel closes the local ends, which makes both threads end
//! (the guest's libvirtd closes its side once it reads end-of-file).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nestform_agent::AgentClient;

use crate::promote::LIBVIRT_SOCKET;

/// The prefix of each tunnel's private directory name. The libvirt provider keys on it
/// (`facts::TUNNEL_DIR_PREFIX`): a socket in such a directory reaches a guest's libvirtd, so that
/// connection's `/sys`, logs and KVM modules are not this machine's. Keep the two in step.
pub const TUNNEL_DIR_PREFIX: &str = "nestform-tunnel-";

/// How long dropping the tunnel waits for its connections' threads to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What opening a tunnel failed with.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot make the tunnel's private directory: {0}")]
    Dir(std::io::Error),
    #[error("cannot listen on `{}`: {source}", path.display())]
    Listen { path: PathBuf, source: std::io::Error },
}

/// A local unix socket whose every connection is relayed to a unix socket in a guest. Dropping it
/// stops accepting, closes the open connections and removes the socket and its directory.
pub struct LibvirtTunnel {
    path: PathBuf,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    /// Removed last, after the acceptor stopped.
    dir: Option<tempfile::TempDir>,
}

/// What one connection carried, for [`LibvirtTunnel::describe`]: bytes each way, when the last went
/// each way, and since when a write is under way (the relay waits for the agent's credit there).
struct Pumped {
    moved: Mutex<Moved>,
    /// The relay's writer once it is open, to end it from outside ([`LibvirtTunnel::close_connection`]).
    relay: Mutex<Option<nestform_agent::RelayWriter>>,
}

/// One direction of a connection: up (to the guest) or down (to the local client).
#[derive(Default)]
struct Way {
    bytes: u64,
    last: Option<Instant>,
    writing_since: Option<Instant>,
}

struct Moved {
    opened: Instant,
    up: Way,
    down: Way,
}

impl Pumped {
    fn new() -> Self {
        let moved = Moved { opened: Instant::now(), up: Way::default(), down: Way::default() };
        Pumped { moved: Mutex::new(moved), relay: Mutex::new(None) }
    }

    fn way(&self, up: bool, f: impl FnOnce(&mut Way)) {
        let mut m = self.moved.lock().unwrap();
        f(if up { &mut m.up } else { &mut m.down });
    }

    fn writing(&self, up: bool) {
        self.way(up, |w| w.writing_since = Some(Instant::now()));
    }

    fn moved(&self, up: bool, n: usize) {
        self.way(up, |w| {
            (w.bytes, w.last, w.writing_since) = (w.bytes + n as u64, Some(Instant::now()), None)
        });
    }

    fn describe(&self, id: u64) -> String {
        use nestform_agent::mux::ago;
        let m = self.moved.lock().unwrap();
        let mut text = format!(
            "connection {id} (opened {}): up {} B (last {}), down {} B (last {})",
            ago(Some(m.opened)),
            m.up.bytes,
            ago(m.up.last),
            m.down.bytes,
            ago(m.down.last)
        );
        for (way, to) in [(&m.up, "the guest"), (&m.down, "the local client")] {
            if let Some(since) = way.writing_since {
                text += &format!(", writing to {to} for {:.1}s", since.elapsed().as_secs_f64());
            }
        }
        text
    }
}

/// What the acceptor and the connection threads share with the tunnel.
struct Shared {
    stop: AtomicBool,
    /// The local end of each open connection, to close them on drop, with what it carried.
    open: Mutex<HashMap<u64, (UnixStream, Arc<Pumped>)>>,
    /// Signalled when a connection ends.
    closed: Condvar,
    /// The last failure to open a relay, for diagnosis (the libvirt client only sees end-of-file).
    last_error: Mutex<Option<String>>,
    accepted: std::sync::atomic::AtomicU64,
}

impl LibvirtTunnel {
    /// A tunnel to the guest's system libvirtd ([`LIBVIRT_SOCKET`]).
    pub fn open(client: &AgentClient) -> Result<LibvirtTunnel, TunnelError> {
        Self::to_socket(client, LIBVIRT_SOCKET)
    }

    /// A tunnel to the guest's unix socket `remote` (which must be on the agent's allowlist).
    pub fn to_socket(client: &AgentClient, remote: &str) -> Result<LibvirtTunnel, TunnelError> {
        let dir = tempfile::Builder::new().prefix(TUNNEL_DIR_PREFIX).tempdir().map_err(TunnelError::Dir)?;
        // Only this user may reach the socket: whoever connects gets the guest's libvirtd as root.
        // Set before the socket exists, so it is never reachable more widely.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(TunnelError::Dir)?;
        let path = dir.path().join("libvirt-sock");
        let listener =
            UnixListener::bind(&path).map_err(|source| TunnelError::Listen { path: path.clone(), source })?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
            closed: Condvar::new(),
            last_error: Mutex::new(None),
            accepted: 0.into(),
        });
        let acceptor = {
            let (shared, client, remote) = (Arc::clone(&shared), client.clone(), remote.to_string());
            thread::Builder::new()
                .name("nestform-tunnel".into())
                .spawn(move || accept_loop(&listener, &shared, &client, &remote))
                .map_err(|source| TunnelError::Listen { path: path.clone(), source })?
        };
        Ok(LibvirtTunnel { path, shared, acceptor: Some(acceptor), dir: Some(dir) })
    }

    /// The local socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The libvirt URI that reaches the guest's system libvirtd through this tunnel.
    pub fn uri(&self) -> String {
        format!("qemu+unix:///system?socket={}", self.path.display())
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.lock().unwrap().len()
    }

    /// Each open connection: bytes each way and when they last moved, and a write under way. What a
    /// caller logs when a call through the tunnel gets no answer.
    pub fn describe(&self) -> String {
        let open = self.shared.open.lock().unwrap();
        let mut ids: Vec<_> = open.keys().copied().collect();
        ids.sort_unstable();
        let parts: Vec<String> = ids.iter().map(|id| open[id].1.describe(*id)).collect();
        format!("tunnel `{}`: {} connections open [{}]", self.path.display(), parts.len(), parts.join(" | "))
    }

    /// The id of the connection accepted last and still open: the one a libvirt connection made just
    /// now goes through.
    pub fn newest_connection(&self) -> Option<u64> {
        self.shared.open.lock().unwrap().keys().max().copied()
    }

    /// Ends connection `id` at both ends: its local client reads end-of-file (a libvirt call waiting
    /// on it returns an error), and its relay closes, which frees the agent's connection to the
    /// socket in the guest even when nothing comes back through the relay any more.
    pub fn close_connection(&self, id: u64) {
        if let Some((local, pumped)) = self.shared.open.lock().unwrap().get(&id) {
            end(local, pumped);
        }
    }

    /// Why the last relay could not be opened, if one could not.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().unwrap().clone()
    }
}

impl Drop for LibvirtTunnel {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the acceptor from `accept`; it sees the flag and returns, closing the listener.
        let _ = UnixStream::connect(&self.path);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let open = self.shared.open.lock().unwrap();
        for (local, pumped) in open.values() {
            end(local, pumped);
        }
        // Bounded: a relay whose guest stopped answering must not hang the caller.
        let (open, _) =
            self.shared.closed.wait_timeout_while(open, DRAIN_TIMEOUT, |o| !o.is_empty()).unwrap();
        drop(open);
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Ends one connection at both ends. The relay too: its guest side may never close by itself (a
/// server that holds the connection, a stalled path), and the agent keeps its socket until it ends.
fn end(local: &UnixStream, pumped: &Pumped) {
    let _ = local.shutdown(Shutdown::Both);
    if let Some(relay) = pumped.relay.lock().unwrap().as_ref() {
        relay.close();
    }
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>, client: &AgentClient, remote: &str) {
    let mut next_id = 0u64;
    for local in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(local) = local else { continue };
        let Ok(registered) = local.try_clone() else { continue };
        next_id += 1;
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let pumped = Arc::new(Pumped::new());
        shared.open.lock().unwrap().insert(next_id, (registered, Arc::clone(&pumped)));
        let id = next_id;
        let (conn_shared, client, remote) = (Arc::clone(shared), client.clone(), remote.to_string());
        // The relay is opened on the connection's own thread: a slow agent never blocks accepting.
        let spawned = thread::Builder::new().name(format!("nestform-tunnel-{id}")).spawn(move || {
            match client.open_relay(&remote) {
                Ok(relay) => pump(local, relay, &pumped),
                // Dropping `local` closes it: the libvirt client reads end-of-file at once.
                Err(e) => *conn_shared.last_error.lock().unwrap() = Some(format!("relay to `{remote}`: {e}")),
            }
            conn_shared.open.lock().unwrap().remove(&id);
            conn_shared.closed.notify_all();
        });
        if spawned.is_err() {
            shared.open.lock().unwrap().remove(&id);
        }
    }
}

/// Copies bytes both ways until both directions ended; this thread takes guest to local, a second
/// one local to guest.
fn pump(local: UnixStream, mut relay: nestform_agent::RelayStream, pumped: &Arc<Pumped>) {
    let mut writer = relay.writer();
    *pumped.relay.lock().unwrap() = Some(relay.writer());
    let up = Arc::clone(pumped);
    let upstream = local.try_clone().map(|mut from_local| {
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match from_local.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        up.writing(true);
                        let written = writer.write_all(&buf[..n]);
                        up.moved(true, n);
                        if written.is_err() {
                            // The guest side is gone: make the local client see it too.
                            let _ = from_local.shutdown(Shutdown::Both);
                            return;
                        }
                    }
                }
            }
            // The local client is done sending: the guest's server reads end-of-file.
            let _ = writer.shutdown_write();
        })
    });
    let mut to_local = &local;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match relay.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                pumped.writing(false);
                let written = to_local.write_all(&buf[..n]);
                pumped.moved(false, n);
                if written.is_err() {
                    break;
                }
            }
        }
    }
    // The guest's server closed (or the local client cannot take more): end the connection.
    let _ = local.shutdown(Shutdown::Both);
    if let Ok(upstream) = upstream {
        let _ = upstream.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nestform_agent::agent::AgentConfig;

    /// An agent served in this process over a socket pair, allowed to relay to `allow`.
    fn agent(allow: &Path) -> (AgentClient, JoinHandle<()>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let config =
            Arc::new(AgentConfig { relay_allow: vec![allow.to_path_buf()], ..AgentConfig::default() });
        let served = thread::spawn(move || {
            let _ = nestform_agent::serve_session(theirs, &config);
        });
        (AgentClient::handshake(ours).unwrap(), served)
    }

    /// A unix socket server in the "guest" that answers each line with its upper-case form.
    fn upper_server(path: &Path) -> JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                thread::spawn(move || {
                    let mut all = Vec::new();
                    let _ = conn.read_to_end(&mut all);
                    let _ = conn.write_all(&all.to_ascii_uppercase());
                });
            }
        })
    }

    #[test]
    fn each_connection_is_relayed_both_ways_and_drop_removes_everything() {
        let guest = tempfile::tempdir().unwrap();
        let sock = guest.path().join("server.sock");
        let _server = upper_server(&sock);
        let (client, served) = agent(&sock);
        let tunnel = LibvirtTunnel::to_socket(&client, sock.to_str().unwrap()).unwrap();
        let dir = tunnel.path().parent().unwrap().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(tunnel.uri(), format!("qemu+unix:///system?socket={}", tunnel.path().display()));
        // What the libvirt provider recognises a tunnel by.
        assert!(tunnel.uri().contains("/nestform-tunnel-"), "{}", tunnel.uri());

        for text in ["hello through the agent", "a second connection"] {
            let mut conn = UnixStream::connect(tunnel.path()).unwrap();
            conn.write_all(text.as_bytes()).unwrap();
            conn.shutdown(Shutdown::Write).unwrap();
            let mut back = String::new();
            conn.read_to_string(&mut back).unwrap();
            assert_eq!(back, text.to_uppercase());
        }
        // A large transfer crosses the agent's flow-control window many times.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut conn = UnixStream::connect(tunnel.path()).unwrap();
        let mut writer = conn.try_clone().unwrap();
        let payload = big.clone();
        let sender = thread::spawn(move || {
            writer.write_all(&payload).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        conn.read_to_end(&mut back).unwrap();
        sender.join().unwrap();
        assert_eq!(back, big.to_ascii_uppercase());
        assert_eq!(tunnel.accepted(), 3);
        assert_eq!(tunnel.last_error(), None);

        // A connection still open when the tunnel goes is closed, not leaked.
        let mut open = UnixStream::connect(tunnel.path()).unwrap();
        open.write_all(b"unfinished").unwrap();
        // A stall's report shows what each open connection carried.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !tunnel.describe().contains("up 10 B") && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let report = tunnel.describe();
        assert!(report.contains("1 connections open [connection 4 (opened "), "{report}");
        assert!(report.contains("up 10 B (last ") && report.contains("down 0 B (last never)"), "{report}");
        let t = std::time::Instant::now();
        drop(tunnel);
        assert!(t.elapsed() < DRAIN_TIMEOUT, "drop waited {:?}", t.elapsed());
        assert!(!dir.exists(), "the tunnel's directory is left");
        // The tunnel closed its end: reading ends instead of hanging (a reset when the tunnel closed
        // with our unread bytes in its buffer, else end-of-file).
        open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        match open.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        drop(client);
        served.join().unwrap();
    }

    #[test]
    fn a_refused_relay_closes_the_connection_and_is_reported() {
        let guest = tempfile::tempdir().unwrap();
        let allowed = guest.path().join("allowed.sock");
        let (client, _served) = agent(&allowed);
        let tunnel = LibvirtTunnel::to_socket(&client, "/not/allowed.sock").unwrap();
        let mut conn = UnixStream::connect(tunnel.path()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut back = Vec::new();
        conn.read_to_end(&mut back).unwrap();
        assert!(back.is_empty());
        // The error is recorded before the connection is closed, so it is there now.
        let error = tunnel.last_error().expect("the refusal is recorded");
        assert!(error.contains("not on the agent's allowlist"), "{error}");
    }
}
