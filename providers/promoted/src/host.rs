//! [`PromotedHost`]: the connection to a promoted host, that is the libvirtd inside a lab guest reached
//! through a tunnel, together with the guest's agent for what libvirt cannot tell through a tunnel.
//!
//! A libvirt connection into a guest sees the guest's domains and networks but none of its files:
//! not the KVM module's parameters under `/sys/module` (facts and `kvm_module_options`), and not the
//! console logs its libvirtd keeps for its own guests. The agent of the guest the host runs in reaches
//! both, at any depth, so every caller of [`Hypervisor::facts`], [`Hypervisor::set_kvm_module_options`]
//! and [`Hypervisor::console_tail`] (refresh, apply, `nestform console`, the error of a guest whose
//! agent never answered) works on a promoted host like on a local one. Everything else goes to the
//! libvirt connection unchanged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nestform_agent::AgentClient;

use crate::tunnel::LibvirtTunnel;
use nestform_provider::{
    AgentChannel, GuestRequest, GuestStatus, HostFacts, Hypervisor, NetworkRequest, NetworkStatus, Owned,
    ProviderError, SnapshotInfo, SnapshotMode,
};
use nestform_types::Owner;

/// Opens a new libvirt connection to the same libvirtd (through the same tunnel), restarting that
/// libvirtd if it does not answer.
pub type Reconnect = Box<dyn Fn() -> Result<Arc<dyn Hypervisor>, ProviderError> + Send + Sync>;

/// How long a call that only reads gets on a promoted host before its connection counts as stalled:
/// seen at level 1, a `virConnectGetDomainCapabilities` that never returned while the same libvirtd
/// answered a new connection at once. Such a call is made again on a new connection.
pub const READ_PATIENCE: Duration = Duration::from_secs(90);
/// The same for a call that changes something (starting QEMU under emulation is slow): past it the
/// call fails, since what it did is unknown; the next refresh reads what is there.
pub const WRITE_PATIENCE: Duration = Duration::from_secs(600);

/// A promoted host: its libvirt connection, and the agent of the guest it runs in.
///
/// Every method of [`Hypervisor`] is forwarded to the connection except the three this type exists
/// for; a method added to the trait must be forwarded here too, or promoted hosts get the trait's
/// default. Each forwarded call has a limit ([`READ_PATIENCE`], [`WRITE_PATIENCE`]): a connection
/// whose call passes it is replaced by a new one ([`Reconnect`]), and a call that only reads is made
/// again there, so one lost answer deep in the nesting costs a minute and a half, not the run.
pub struct PromotedHost {
    conn: Mutex<Arc<dyn Hypervisor>>,
    /// The tunnel connection the current libvirt connection goes through, closed when that one is
    /// replaced: the call that stalled on it then returns, and everything it held is freed.
    tunnel_conn: Mutex<Option<u64>>,
    uri: String,
    reconnect: Option<Reconnect>,
    agent: AgentClient,
    /// Where the guest's libvirtd keeps its guests' console logs.
    console_dir: String,
    read_patience: Duration,
    write_patience: Duration,
    /// The tunnel the connection goes through; declared last, so it closes after the connection
    /// (a libvirtd that saw its client vanish under an open stream deadlocked, see `Hosts`' drop).
    tunnel: Option<LibvirtTunnel>,
}

impl PromotedHost {
    /// The host whose libvirtd `inner` is connected to, running in the guest `agent` talks to; a call
    /// that passes its limit fails (see [`PromotedHost::reconnecting`]).
    pub fn new(inner: Arc<dyn Hypervisor>, agent: AgentClient) -> Self {
        PromotedHost {
            uri: inner.uri().to_string(),
            conn: Mutex::new(inner),
            tunnel_conn: Mutex::new(None),
            reconnect: None,
            agent,
            console_dir: crate::console::CONSOLE_LOG_DIR.to_string(),
            read_patience: READ_PATIENCE,
            write_patience: WRITE_PATIENCE,
            tunnel: None,
        }
    }

    /// Keeps `tunnel`, which the connection goes through, open as long as this host lives.
    pub fn owning(mut self, tunnel: LibvirtTunnel) -> Self {
        // The connection this host was made with is the tunnel's newest.
        *self.tunnel_conn.get_mut().unwrap_or_else(|p| p.into_inner()) = tunnel.newest_connection();
        self.tunnel = Some(tunnel);
        self
    }

    /// Replaces a connection whose call passed its limit with `reconnect`'s.
    pub fn reconnecting(mut self, reconnect: Reconnect) -> Self {
        self.reconnect = Some(reconnect);
        self
    }

    /// The agent of the guest this host runs in.
    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    fn failed(&self, operation: &'static str, e: impl ToString) -> ProviderError {
        ProviderError::op(operation, &self.uri, e)
    }

    fn current(&self) -> Arc<dyn Hypervisor> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts a new connection in place of `stalled` (unless another caller did already) and returns
    /// it. The stalled one's tunnel connection is closed, so the call waiting on it returns and frees
    /// its thread, its libvirt connection and the agent's relay in the guest.
    fn replace(&self, stalled: &Arc<dyn Hypervisor>) -> Result<Arc<dyn Hypervisor>, ProviderError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&conn, stalled) {
            return Ok(conn.clone());
        }
        let reconnect =
            self.reconnect.as_ref().ok_or_else(|| self.failed("reconnect to", "no way to connect again"))?;
        // A recovery: named, so progress and the fault suite see it.
        nestform_provider::progress::step("reconnecting to libvirtd (a call got no answer)");
        let fresh = reconnect()?;
        *conn = fresh.clone();
        if let Some(tunnel) = &self.tunnel {
            // libvirt's connect is a round trip through the tunnel, so the new connection is the
            // tunnel's newest by now.
            let mut through = self.tunnel_conn.lock().unwrap_or_else(|p| p.into_inner());
            let old = through.take();
            *through = tunnel.newest_connection().filter(|new| Some(*new) != old);
            if let Some(old) = old {
                tracing::debug!(host = %self.uri, connection = old, "closing the stalled connection's way through the tunnel");
                tunnel.close_connection(old);
            }
        }
        Ok(fresh)
    }

    /// Where the bytes of a call that got no answer are: the tunnel's connections and every agent
    /// connection of this process with its streams' flow-control state.
    fn describe_path(&self) -> String {
        let tunnel = self.tunnel.as_ref().map_or_else(|| "no tunnel".to_string(), LibvirtTunnel::describe);
        format!("{tunnel}; {}", nestform_agent::mux::describe_all())
    }

    /// Runs `f`, which only reads, on the connection; made once more on a new connection when it
    /// does not return within the read limit.
    fn read<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl Fn(&dyn Hypervisor) -> Result<T, ProviderError> + Send + Sync + 'static,
    ) -> Result<T, ProviderError> {
        let f = Arc::new(f);
        let conn = self.current();
        let g = Arc::clone(&f);
        if let Some(result) = within(&conn, operation, &self.uri, self.read_patience, move |h| g(h)) {
            return result;
        }
        tracing::warn!(host = %self.uri, operation, patience = ?self.read_patience, path = %self.describe_path(), guest = %crate::promote::libvirtd_now(&self.agent), "a call to libvirtd in the guest did not return; connecting again");
        let fresh = self.replace(&conn)?;
        within(&fresh, operation, &self.uri, self.read_patience, move |h| f(h)).unwrap_or_else(|| {
            Err(self.failed(
                operation,
                format!(
                    "libvirtd in the guest did not answer within {}s, twice, on two connections",
                    self.read_patience.as_secs()
                ),
            ))
        })
    }

    /// Runs `f`, which changes something, on the connection; fails when it does not return within
    /// the write limit, leaving a new connection for the calls after it.
    fn write<T: Send + 'static>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&dyn Hypervisor) -> Result<T, ProviderError> + Send + 'static,
    ) -> Result<T, ProviderError> {
        self.write_within(operation, self.write_patience, f)
    }

    /// [`PromotedHost::write`] with a limit of `patience`.
    fn write_within<T: Send + 'static>(
        &self,
        operation: &'static str,
        patience: Duration,
        f: impl FnOnce(&dyn Hypervisor) -> Result<T, ProviderError> + Send + 'static,
    ) -> Result<T, ProviderError> {
        let conn = self.current();
        if let Some(result) = within(&conn, operation, &self.uri, patience, f) {
            return result;
        }
        tracing::warn!(host = %self.uri, operation, ?patience, path = %self.describe_path(), guest = %crate::promote::libvirtd_now(&self.agent), "a call to libvirtd in the guest did not return");
        let replaced = self.replace(&conn).err().map(|e| format!(" (connecting again failed too: {e})"));
        Err(self.failed(
            operation,
            format!(
                "libvirtd in the guest did not answer within {}s, so what it did is unknown: run `nestform apply` again, its refresh reads what is there{}",
                patience.as_secs(),
                replaced.unwrap_or_default()
            ),
        ))
    }
}

/// `f(conn)` on a thread of its own, given up on after `patience` (`None`); a call given up on ends
/// when its connection does. One that returns after all says so, with how long it took: a late
/// answer is a slow libvirtd, none at all a lost one.
fn within<T: Send + 'static>(
    conn: &Arc<dyn Hypervisor>,
    operation: &'static str,
    uri: &str,
    patience: Duration,
    f: impl FnOnce(&dyn Hypervisor) -> Result<T, ProviderError> + Send + 'static,
) -> Option<Result<T, ProviderError>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let conn = Arc::clone(conn);
    let (uri, started) = (uri.to_string(), std::time::Instant::now());
    std::thread::spawn(move || {
        let result = f(&*conn);
        if tx.send(result).is_err() {
            tracing::warn!(host = %uri, operation, after = ?started.elapsed(), "a call to libvirtd in the guest that was given up on returned after all");
        }
    });
    rx.recv_timeout(patience).ok()
}

impl Hypervisor for PromotedHost {
    fn uri(&self) -> &str {
        &self.uri
    }

    /// libvirt's facts, with the KVM module and its parameters as the guest's `/sys` shows them.
    fn facts(&self) -> Result<HostFacts, ProviderError> {
        let mut facts = self.read("read facts of", |h| h.facts())?;
        let kvm =
            crate::kvm_options::read(&self.agent).map_err(|e| self.failed("read the KVM module of", e))?;
        // On KVM, nesting is what the module says; under TCG the provider has decided already.
        if facts.acceleration.as_deref() == Some("kvm") && facts.nesting.is_none() {
            facts.nesting = kvm
                .parameters
                .get("nested")
                .map(|v| nestform_types::kvm::normalize(v) == "1")
                .or(facts.nesting);
        }
        facts.kvm_module = kvm.module.or(facts.kvm_module);
        if !kvm.parameters.is_empty() {
            facts.kvm_parameters = kvm.parameters;
        }
        Ok(facts)
    }

    fn list_owned(&self) -> Result<Owned, ProviderError> {
        self.read("list objects of", |h| h.list_owned())
    }

    fn read_network(&self, id: &str) -> Result<Option<NetworkStatus>, ProviderError> {
        let id = id.to_string();
        self.read("read network", move |h| h.read_network(&id))
    }

    fn create_network(&self, req: &NetworkRequest, owner: &Owner) -> Result<NetworkStatus, ProviderError> {
        let (req, owner) = (req.clone(), owner.clone());
        self.write("create network", move |h| h.create_network(&req, &owner))
    }

    fn delete_network(&self, id: &str) -> Result<(), ProviderError> {
        let id = id.to_string();
        self.write("delete network", move |h| h.delete_network(&id))
    }

    fn read_guest(&self, id: &str) -> Result<Option<GuestStatus>, ProviderError> {
        let id = id.to_string();
        self.read("read guest", move |h| h.read_guest(&id))
    }

    fn create_guest(&self, req: &GuestRequest, owner: &Owner) -> Result<GuestStatus, ProviderError> {
        let (req, owner) = (req.clone(), owner.clone());
        self.write("create guest", move |h| h.create_guest(&req, &owner))
    }

    fn update_guest(
        &self,
        id: &str,
        req: &GuestRequest,
        owner: &Owner,
    ) -> Result<GuestStatus, ProviderError> {
        let (id, req, owner) = (id.to_string(), req.clone(), owner.clone());
        self.write("update guest", move |h| h.update_guest(&id, &req, &owner))
    }

    fn start_guest(&self, id: &str) -> Result<(), ProviderError> {
        let id = id.to_string();
        self.write("start guest", move |h| h.start_guest(&id))
    }

    fn stop_guest(&self, id: &str, timeout: Duration) -> Result<(), ProviderError> {
        let id = id.to_string();
        // A graceful shutdown may take its whole timeout before the guest is forced off.
        let patience = self.write_patience.max(timeout + Duration::from_secs(120));
        self.write_within("stop guest", patience, move |h| h.stop_guest(&id, timeout))
    }

    fn delete_guest(&self, id: &str) -> Result<(), ProviderError> {
        let id = id.to_string();
        self.write("delete guest", move |h| h.delete_guest(&id))
    }

    /// Alive while the session with the guest's agent is: the tunnel runs over it, so once it ended
    /// (the guest stopped or restarted) no call through this host can be answered.
    fn is_alive(&self) -> bool {
        self.agent.disconnected().is_none()
    }

    fn guest_definition(&self, req: &GuestRequest, owner: &Owner) -> String {
        self.current().guest_definition(req, owner)
    }

    /// Straight to the channel's socket inside this host's guest, through that guest's agent, rather
    /// than as a stream of the guest's libvirtd: with libvirt streams, a channel taken over
    /// (`VIR_DOMAIN_CHANNEL_FORCE`) or ended under a client at level 1 left that libvirtd's main loop
    /// deadlocked (`virNetServerClientClose` waiting forever on a lock), and nothing below it could
    /// be reached until it was restarted.
    ///
    /// Each channel's socket is QEMU's chardev, which serves one client and leaves the next waiting
    /// unanswered in its listen queue, so the relay is exclusive: the guest's agent refuses a socket
    /// another session relays to, and the next channel is tried.
    fn open_agent(&self, id: &str) -> Result<AgentChannel, ProviderError> {
        let owned = id.to_string();
        let paths = self.read("find the agent channel of", move |h| h.agent_sockets(&owned))?;
        if paths.is_empty() {
            let id = id.to_string();
            return self.write("open agent channel", move |h| h.open_agent(&id));
        }
        for path in &paths {
            let relay = match self.agent.open_exclusive_relay(path) {
                Ok(relay) => relay,
                Err(e) if e.is_busy() => {
                    tracing::debug!(guest = id, path = %path, "agent channel in use; trying the next");
                    continue;
                }
                Err(e) => {
                    return Err(ProviderError::op(
                        "open agent channel",
                        id,
                        format!("relay to `{path}`: {e}"),
                    ))
                }
            };
            let writer = relay.writer();
            let ender = relay.writer();
            return Ok(AgentChannel {
                reader: Box::new(relay),
                writer: Box::new(writer),
                // Closed outright: a handshake given up on must free the socket for the next attempt.
                shutdown: Arc::new(move || ender.close()),
            });
        }
        Err(ProviderError::op("open agent channel", id, nestform_provider::agent_channels_busy(paths.len())))
    }

    /// Reloads the guest's vendor module with `options`; refused while guests run on this host.
    fn set_kvm_module_options(&self, options: &BTreeMap<String, String>) -> Result<(), ProviderError> {
        crate::kvm_options::apply(&self.agent, options)
            .map(drop)
            .map_err(|e| self.failed("reload the KVM module of", e))
    }

    /// The console log of guest `id`, a file inside the guest this host runs in, through its agent.
    fn console_tail(&self, id: &str, max_bytes: usize) -> Result<String, ProviderError> {
        let name = self
            .read_guest(id)?
            .ok_or_else(|| ProviderError::op("read console of", id, "no such guest"))?
            .name;
        let path = format!("{}/{name}-console.log", self.console_dir);
        crate::console::console_tail_of(&self.agent, &path, max_bytes).map_err(|e| {
            ProviderError::op("read console of", &name, format!("`{path}` in the host's guest: {e}"))
        })
    }

    fn create_snapshot(
        &self,
        id: &str,
        name: &str,
        mode: SnapshotMode,
        owner: &Owner,
    ) -> Result<SnapshotInfo, ProviderError> {
        let (id, name, owner) = (id.to_string(), name.to_string(), owner.clone());
        self.write("create snapshot", move |h| h.create_snapshot(&id, &name, mode, &owner))
    }

    fn list_snapshots(&self, id: &str) -> Result<Vec<SnapshotInfo>, ProviderError> {
        let id = id.to_string();
        self.read("list snapshots of", move |h| h.list_snapshots(&id))
    }

    fn revert_snapshot(&self, id: &str, name: &str) -> Result<(), ProviderError> {
        let (id, name) = (id.to_string(), name.to_string());
        self.write("revert snapshot", move |h| h.revert_snapshot(&id, &name))
    }

    fn delete_snapshot(&self, id: &str, name: &str) -> Result<(), ProviderError> {
        let (id, name) = (id.to_string(), name.to_string());
        self.write("delete snapshot", move |h| h.delete_snapshot(&id, &name))
    }
}

#[cfg(test)]
mod tests {
    use nestform_provider::{BootRequest, CpuRequest, Provider};

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn wait_for_agent(
        h: &dyn Hypervisor,
        id: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<AgentClient, nestform_provider::AgentError> {
        nestform_agent::wait_for_agent(
            h,
            nestform_provider::GuestRef { id, name },
            nestform_provider::AgentWait::at_most(timeout),
        )
    }

    /// A memory host with a running guest `inner-g`, wrapped as if promoted; the memory provider's
    /// agents run on this machine, so the "guest" the host runs in is this machine with its console
    /// logs in a temporary directory.
    fn promoted(console_dir: &std::path::Path) -> (PromotedHost, String) {
        promoted_on(&nestform_provider_memory::MemoryProvider::new(), console_dir)
    }

    fn promoted_on(
        p: &nestform_provider_memory::MemoryProvider,
        console_dir: &std::path::Path,
    ) -> (PromotedHost, String) {
        let parent = p.connect("memory://l0").unwrap();
        let owner = Owner { lineage: "l".into(), address: "nested_guest.g".into() };
        let req = |name: &str| GuestRequest {
            name: name.into(),
            vcpus: 1,
            memory_bytes: 64 << 20,
            cpu: CpuRequest::HostPassthrough,
            disks: vec![],
            interfaces: vec![],
            boot: BootRequest::Disk,
            running: true,
        };
        let g1 = parent.create_guest(&req("g1"), &owner).unwrap().id;
        let agent = wait_for_agent(&*parent, &g1, "g1", Duration::from_secs(5)).unwrap();
        let inner = p.connect("memory://g1").unwrap();
        let id = inner.create_guest(&req("inner-g"), &owner).unwrap().id;
        let mut host = PromotedHost::new(inner, agent);
        host.console_dir = console_dir.to_str().unwrap().to_string();
        (host, id)
    }

    #[test]
    fn the_console_of_a_guest_inside_comes_through_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("inner-g-console.log"), "early\r\nLinux version 6.1.0-35-amd64\r\n")
            .unwrap();
        let (host, id) = promoted(dir.path());
        assert_eq!(host.console_tail(&id, 4096).unwrap(), "early\nLinux version 6.1.0-35-amd64\n");
        assert_eq!(host.console_tail(&id, 34).unwrap(), "Linux version 6.1.0-35-amd64\n");
        // The agent-timeout error of a guest inside carries it too.
        host.stop_guest(&id, Duration::from_secs(1)).unwrap();
        let Err(err) = wait_for_agent(&host, &id, "inner-g", Duration::from_millis(300)) else {
            panic!("the agent of a stopped guest answered")
        };
        let err = err.to_string();
        assert!(err.contains("console ends with:\nearly\nLinux version"), "{err}");
        let err = host.console_tail("00000000-0000-0000-0000-000000000000", 10).unwrap_err().to_string();
        assert!(err.contains("no such guest"), "{err}");
    }

    /// [`promoted`] with short limits, reconnecting to the same memory host and counting it; with
    /// the provider, whose calls can be told to stall.
    fn impatient(
        console_dir: &std::path::Path,
    ) -> (PromotedHost, String, Arc<AtomicUsize>, nestform_provider_memory::MemoryProvider) {
        let p = nestform_provider_memory::MemoryProvider::new();
        let (host, id) = promoted_on(&p, console_dir);
        let reconnects = Arc::new(AtomicUsize::new(0));
        let (counter, again) = (Arc::clone(&reconnects), p.clone());
        let mut host = host.reconnecting(Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            again.connect("memory://g1")
        }));
        host.read_patience = Duration::from_millis(200);
        host.write_patience = Duration::from_millis(200);
        (host, id, reconnects, p)
    }

    #[test]
    fn a_read_that_stalls_is_made_again_on_a_new_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (host, id, reconnects, p) = impatient(dir.path());
        p.stall_on("read_guest", 1);
        assert_eq!(host.read_guest(&id).unwrap().unwrap().name, "inner-g");
        assert_eq!(reconnects.load(Ordering::SeqCst), 1);
        // The new connection stays: the next call needs no reconnect.
        assert!(host.list_owned().is_ok());
        assert_eq!(reconnects.load(Ordering::SeqCst), 1);
        p.release_stalls();
    }

    #[test]
    fn a_read_that_stalls_on_both_connections_fails_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (host, _, reconnects, p) = impatient(dir.path());
        p.stall_on("list_owned", 2);
        let err = host.list_owned().unwrap_err().to_string();
        assert!(err.contains("did not answer within 0s, twice"), "{err}");
        assert_eq!(reconnects.load(Ordering::SeqCst), 1);
        p.release_stalls();
    }

    #[test]
    fn a_change_that_stalls_fails_without_being_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let (host, id, reconnects, p) = impatient(dir.path());
        p.stall_on("delete_guest", 1);
        let err = host.delete_guest(&id).unwrap_err().to_string();
        assert!(err.contains("what it did is unknown: run `nestform apply` again"), "{err}");
        // Not made again: the guest is still there, and the next call goes to a new connection.
        assert!(host.read_guest(&id).unwrap().is_some());
        assert_eq!(reconnects.load(Ordering::SeqCst), 1);
        p.release_stalls();
    }

    /// A libvirt connection stand-in that goes through a tunnel as libvirt's does: one socket, made
    /// when it connects. `read_guest` on a stalled one waits for an answer that never comes, until
    /// its socket ends; then it says so in `released`.
    struct ThroughTunnel {
        socket: std::os::unix::net::UnixStream,
        stalls: bool,
        released: Arc<std::sync::atomic::AtomicBool>,
    }

    impl ThroughTunnel {
        fn connect(
            tunnel: &std::path::Path,
            stalls: bool,
            released: &Arc<std::sync::atomic::AtomicBool>,
        ) -> Arc<dyn Hypervisor> {
            // A round trip, as libvirt's handshake is: the tunnel has taken the connection after it.
            use std::io::{Read, Write};
            let mut socket = std::os::unix::net::UnixStream::connect(tunnel).unwrap();
            socket.write_all(b"hello").unwrap();
            socket.read_exact(&mut [0u8; 1]).unwrap();
            Arc::new(ThroughTunnel { socket, stalls, released: Arc::clone(released) })
        }
    }

    impl Hypervisor for ThroughTunnel {
        fn uri(&self) -> &str {
            "through-tunnel://g1"
        }
        fn read_guest(&self, _: &str) -> Result<Option<GuestStatus>, ProviderError> {
            if !self.stalls {
                return Ok(None);
            }
            use std::io::{Read, Write};
            let _ = (&self.socket).write_all(b"a request");
            let _ = (&self.socket).read(&mut [0u8; 16]);
            self.released.store(true, Ordering::SeqCst);
            Err(ProviderError::op("read guest", "x", "the connection ended"))
        }
        fn facts(&self) -> Result<HostFacts, ProviderError> {
            unimplemented!()
        }
        fn list_owned(&self) -> Result<Owned, ProviderError> {
            unimplemented!()
        }
        fn read_network(&self, _: &str) -> Result<Option<NetworkStatus>, ProviderError> {
            unimplemented!()
        }
        fn create_network(&self, _: &NetworkRequest, _: &Owner) -> Result<NetworkStatus, ProviderError> {
            unimplemented!()
        }
        fn delete_network(&self, _: &str) -> Result<(), ProviderError> {
            unimplemented!()
        }
        fn create_guest(&self, _: &GuestRequest, _: &Owner) -> Result<GuestStatus, ProviderError> {
            unimplemented!()
        }
        fn update_guest(&self, _: &str, _: &GuestRequest, _: &Owner) -> Result<GuestStatus, ProviderError> {
            unimplemented!()
        }
        fn start_guest(&self, _: &str) -> Result<(), ProviderError> {
            unimplemented!()
        }
        fn stop_guest(&self, _: &str, _: Duration) -> Result<(), ProviderError> {
            unimplemented!()
        }
        fn delete_guest(&self, _: &str) -> Result<(), ProviderError> {
            unimplemented!()
        }
        fn guest_definition(&self, _: &GuestRequest, _: &Owner) -> String {
            unimplemented!()
        }
    }

    #[test]
    fn a_stalled_call_is_released_when_its_connection_is_replaced() {
        // The guest's "libvirtd": a socket server that answers each connection's hello and nothing
        // after it.
        let guest = tempfile::tempdir().unwrap();
        let sock = guest.path().join("libvirt-sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut held = Vec::new();
            for mut conn in listener.incoming().map_while(Result::ok) {
                let _ = conn.read_exact(&mut [0u8; 5]);
                let _ = conn.write_all(b"!");
                held.push(conn);
            }
        });
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let config = Arc::new(nestform_agent::agent::AgentConfig {
            relay_allow: vec![sock.clone()],
            ..Default::default()
        });
        std::thread::spawn(move || {
            let _ = nestform_agent::serve_session(theirs, &config);
        });
        let agent = AgentClient::handshake(ours).unwrap();
        let tunnel = LibvirtTunnel::to_socket(&agent, sock.to_str().unwrap()).unwrap();
        let path = tunnel.path().to_path_buf();

        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let first = ThroughTunnel::connect(&path, true, &released);
        let again = path.clone();
        let mut host = PromotedHost::new(first, agent)
            .owning(tunnel)
            .reconnecting(Box::new(move || Ok(ThroughTunnel::connect(&again, false, &Arc::default()))));
        host.read_patience = Duration::from_millis(300);

        // The read stalls, is made again on a new connection, and answers there.
        assert_eq!(host.read_guest("x").unwrap(), None);
        // The stalled call returned: its way through the tunnel was closed under it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !released.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(released.load(Ordering::SeqCst), "the stalled call still waits");
        // And its relay is gone with it: only the new connection is open.
        let tunnel = host.tunnel.as_ref().unwrap();
        while tunnel.open_connections() > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(tunnel.open_connections(), 1, "{}", tunnel.describe());
    }

    #[test]
    fn everything_else_is_the_libvirt_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (host, id) = promoted(dir.path());
        assert_eq!(host.uri(), "memory://g1");
        assert_eq!(host.read_guest(&id).unwrap().unwrap().name, "inner-g");
        assert_eq!(host.list_owned().unwrap().objects.len(), 1);
        // This machine's KVM module (if any) as the "guest's": whatever it has, facts carry it.
        let kvm = crate::kvm_options::read(host.agent()).unwrap();
        let facts = host.facts().unwrap();
        if let Some(module) = kvm.module {
            assert_eq!(facts.kvm_module.as_deref(), Some(module.as_str()));
            assert_eq!(facts.kvm_parameters, kvm.parameters);
        }
        // No options: nothing to reload, wherever this runs.
        host.set_kvm_module_options(&BTreeMap::new()).unwrap();
    }
}
