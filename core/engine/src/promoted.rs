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
use std::sync::Arc;
use std::time::Duration;

use nestform_agent::AgentClient;
use nestform_provider::{
    AgentChannel, GuestRequest, GuestStatus, HostFacts, Hypervisor, NetworkRequest, NetworkStatus,
    OwnedObject, ProviderError, SnapshotInfo, SnapshotMode,
};
use nestform_types::Owner;

/// A promoted host: its libvirt connection, and the agent of the guest it runs in.
///
/// Every method of [`Hypervisor`] is forwarded to `inner` except the three this type exists for; a
/// method added to the trait must be forwarded here too, or promoted hosts get the trait's default.
pub struct PromotedHost {
    inner: Arc<dyn Hypervisor>,
    agent: AgentClient,
    /// Where the guest's libvirtd keeps its guests' console logs.
    console_dir: String,
}

impl PromotedHost {
    /// The host whose libvirtd `inner` is connected to, running in the guest `agent` talks to.
    pub fn new(inner: Arc<dyn Hypervisor>, agent: AgentClient) -> Self {
        PromotedHost { inner, agent, console_dir: nestform_lab::console::CONSOLE_LOG_DIR.to_string() }
    }

    /// The agent of the guest this host runs in.
    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    fn failed(&self, operation: &'static str, e: impl ToString) -> ProviderError {
        ProviderError::op(operation, self.inner.uri(), e)
    }
}

impl Hypervisor for PromotedHost {
    fn uri(&self) -> &str {
        self.inner.uri()
    }

    /// libvirt's facts, with the KVM module and its parameters as the guest's `/sys` shows them.
    fn facts(&self) -> Result<HostFacts, ProviderError> {
        let mut facts = self.inner.facts()?;
        let kvm = nestform_lab::kvm_options::read(&self.agent)
            .map_err(|e| self.failed("read the KVM module of", e))?;
        // On KVM, nesting is what the module says; under TCG the provider has decided already.
        if facts.acceleration.as_deref() == Some("kvm") && facts.nesting.is_none() {
            facts.nesting =
                kvm.parameters.get("nested").map(|v| crate::kvm::normalize(v) == "1").or(facts.nesting);
        }
        facts.kvm_module = kvm.module.or(facts.kvm_module);
        if !kvm.parameters.is_empty() {
            facts.kvm_parameters = kvm.parameters;
        }
        Ok(facts)
    }

    fn list_owned(&self) -> Result<Vec<OwnedObject>, ProviderError> {
        self.inner.list_owned()
    }

    fn read_network(&self, id: &str) -> Result<Option<NetworkStatus>, ProviderError> {
        self.inner.read_network(id)
    }

    fn create_network(&self, req: &NetworkRequest, owner: &Owner) -> Result<NetworkStatus, ProviderError> {
        self.inner.create_network(req, owner)
    }

    fn delete_network(&self, id: &str) -> Result<(), ProviderError> {
        self.inner.delete_network(id)
    }

    fn read_guest(&self, id: &str) -> Result<Option<GuestStatus>, ProviderError> {
        self.inner.read_guest(id)
    }

    fn create_guest(&self, req: &GuestRequest, owner: &Owner) -> Result<GuestStatus, ProviderError> {
        self.inner.create_guest(req, owner)
    }

    fn update_guest(
        &self,
        id: &str,
        req: &GuestRequest,
        owner: &Owner,
    ) -> Result<GuestStatus, ProviderError> {
        self.inner.update_guest(id, req, owner)
    }

    fn start_guest(&self, id: &str) -> Result<(), ProviderError> {
        self.inner.start_guest(id)
    }

    fn stop_guest(&self, id: &str, timeout: Duration) -> Result<(), ProviderError> {
        self.inner.stop_guest(id, timeout)
    }

    fn delete_guest(&self, id: &str) -> Result<(), ProviderError> {
        self.inner.delete_guest(id)
    }

    fn guest_definition(&self, req: &GuestRequest, owner: &Owner) -> String {
        self.inner.guest_definition(req, owner)
    }

    /// Straight to the channel's socket inside this host's guest, through that guest's agent, rather
    /// than as a stream of the guest's libvirtd: with libvirt streams, a channel taken over
    /// (`VIR_DOMAIN_CHANNEL_FORCE`) or ended under a client at level 1 left that libvirtd's main loop
    /// deadlocked (`virNetServerClientClose` waiting forever on a lock), and nothing below it could
    /// be reached until it was restarted.
    fn open_agent(&self, id: &str) -> Result<AgentChannel, ProviderError> {
        let Some(path) = self.inner.agent_socket(id)? else { return self.inner.open_agent(id) };
        let relay = self
            .agent
            .open_relay(&path)
            .map_err(|e| ProviderError::op("open agent channel", id, format!("relay to `{path}`: {e}")))?;
        let writer = relay.writer();
        let ender = relay.writer();
        Ok(AgentChannel {
            reader: Box::new(relay),
            writer: Box::new(writer),
            // Closed outright: QEMU's chardev serves one client at a time, so a handshake given up
            // on must free the socket for the next attempt.
            shutdown: Arc::new(move || ender.close()),
        })
    }

    /// Reloads the guest's vendor module with `options`; refused while guests run on this host.
    fn set_kvm_module_options(&self, options: &BTreeMap<String, String>) -> Result<(), ProviderError> {
        nestform_lab::kvm_options::apply(&self.agent, options)
            .map(drop)
            .map_err(|e| self.failed("reload the KVM module of", e))
    }

    /// The console log of guest `id`, a file inside the guest this host runs in, through its agent.
    fn console_tail(&self, id: &str, max_bytes: usize) -> Result<String, ProviderError> {
        let name = self
            .inner
            .read_guest(id)?
            .ok_or_else(|| ProviderError::op("read console of", id, "no such guest"))?
            .name;
        let path = format!("{}/{name}-console.log", self.console_dir);
        nestform_lab::console::console_tail_of(&self.agent, &path, max_bytes).map_err(|e| {
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
        self.inner.create_snapshot(id, name, mode, owner)
    }

    fn list_snapshots(&self, id: &str) -> Result<Vec<SnapshotInfo>, ProviderError> {
        self.inner.list_snapshots(id)
    }

    fn revert_snapshot(&self, id: &str, name: &str) -> Result<(), ProviderError> {
        self.inner.revert_snapshot(id, name)
    }

    fn delete_snapshot(&self, id: &str, name: &str) -> Result<(), ProviderError> {
        self.inner.delete_snapshot(id, name)
    }
}

#[cfg(test)]
mod tests {
    use nestform_provider::{BootRequest, CpuRequest, Provider};

    use super::*;
    use crate::agent::wait_for_agent;

    /// A memory host with a running guest `inner-g`, wrapped as if promoted; the memory provider's
    /// agents run on this machine, so the "guest" the host runs in is this machine with its console
    /// logs in a temporary directory.
    fn promoted(console_dir: &std::path::Path) -> (PromotedHost, String) {
        let p = nestform_provider_memory::MemoryProvider::new();
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

    #[test]
    fn everything_else_is_the_libvirt_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (host, id) = promoted(dir.path());
        assert_eq!(host.uri(), "memory://g1");
        assert_eq!(host.read_guest(&id).unwrap().unwrap().name, "inner-g");
        assert_eq!(host.list_owned().unwrap().len(), 1);
        // This machine's KVM module (if any) as the "guest's": whatever it has, facts carry it.
        let kvm = nestform_lab::kvm_options::read(host.agent()).unwrap();
        let facts = host.facts().unwrap();
        if let Some(module) = kvm.module {
            assert_eq!(facts.kvm_module.as_deref(), Some(module.as_str()));
            assert_eq!(facts.kvm_parameters, kvm.parameters);
        }
        // No options: nothing to reload, wherever this runs.
        host.set_kvm_module_options(&BTreeMap::new()).unwrap();
    }
}
