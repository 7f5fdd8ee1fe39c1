//! The fake hypervisor behind one `memory://` connection: each trait method does to the host's
//! in-memory objects what libvirt would do to real ones, including its refusals (a name taken, a
//! network missing at start, a volume that would shrink).

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use nestform_provider::{
    AgentChannel, BootRequest, CpuRequest, GuestRequest, GuestStatus, HostFacts, Hypervisor, NetworkRequest,
    NetworkStatus, ObjectKind, Owned, OwnedObject, ProviderError, SnapshotInfo, SnapshotMode,
};
use nestform_types::Owner;

use crate::{GuestRecord, HostWorld, MemoryProvider, World, DEFAULT_CPUS, DEFAULT_MEMORY_BYTES};

pub(crate) struct MemoryHypervisor {
    uri: String,
    host: String,
    provider: MemoryProvider,
}

impl MemoryHypervisor {
    pub(crate) fn new(uri: &str, host: &str, provider: MemoryProvider) -> Self {
        MemoryHypervisor { uri: uri.to_string(), host: host.to_string(), provider }
    }

    /// Runs a mutating call: records it, fails it when told to, else runs `f` on this host.
    fn call<T>(
        &self,
        op: &'static str,
        name: &str,
        f: impl FnOnce(&mut HostWorld) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        self.provider.stall_point(op, name)?;
        // Recorded in the order calls start; the delay and the hook come before the change.
        self.provider.lock().calls.push(format!("{op} {name}"));
        let _in_flight = self.provider.begin_call(op, name);
        let mut w = self.provider.lock();
        if w.fail.contains(&(op.to_string(), name.to_string())) {
            return Err(ProviderError::op(op, name, "injected failure"));
        }
        f(host_mut(&mut w, &self.host))
    }

    /// Reads this host without counting a call.
    fn read<T>(&self, f: impl FnOnce(&mut HostWorld) -> T) -> T {
        let mut w = self.provider.lock();
        f(host_mut(&mut w, &self.host))
    }

    /// Ends the hypervisor of the guest `name` if it was promoted: a promoted guest's hypervisor
    /// stops (or goes) with it, and what it held goes too, at every depth (a lab guest's root lives
    /// in its memory, a real guest's pool on its own disk).
    fn end_promoted(&self, name: &str) {
        let uri = crate::promoted_uri(&self.uri, name);
        let inside = format!("{}/", uri.trim_start_matches("memory://"));
        let mut w = self.provider.lock();
        if w.promoted.remove(&uri) {
            w.hosts.remove(uri.trim_start_matches("memory://"));
            w.hosts.retain(|h, _| !h.starts_with(&inside));
            w.promoted.retain(|u| !u.trim_start_matches("memory://").starts_with(&inside));
        }
    }

    /// The name of the guest `id`, for call records and failure injection (the id when unknown).
    fn guest_name(&self, id: &str) -> String {
        self.read(|h| h.guests.get(id).map(|g| g.status.name.clone())).unwrap_or_else(|| id.to_string())
    }
}

fn host_mut<'w>(w: &'w mut World, host: &str) -> &'w mut HostWorld {
    w.hosts.entry(host.to_string()).or_default()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn volume_name(guest: &str, disk: &nestform_provider::DiskRequest) -> String {
    format!("{guest}-{}.{}", disk.name, disk.format.as_str())
}

/// Fails, as libvirt's start does, when an interface's network is missing or inactive.
fn check_networks(
    h: &HostWorld,
    op: &'static str,
    guest: &str,
    networks: &[String],
) -> Result<(), ProviderError> {
    for net in networks {
        if !h.networks.values().any(|n| &n.name == net && n.active) {
            return Err(ProviderError::op(op, guest, format!("network `{net}` is not active")));
        }
    }
    Ok(())
}

/// The status as it would be read back: disks are the volumes that exist, with their capacity.
fn refresh(h: &HostWorld, g: &GuestRecord) -> GuestStatus {
    let pool = h.pool.as_ref();
    let mut s = g.status.clone();
    s.disks = g
        .volumes
        .iter()
        .filter_map(|(disk, vol)| pool.and_then(|p| p.get(vol)).map(|c| (disk.clone(), *c)))
        .collect();
    s
}

impl Hypervisor for MemoryHypervisor {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn facts(&self) -> Result<HostFacts, ProviderError> {
        self.provider.stall_point("facts", &self.uri)?;
        let (cpus, memory_bytes) = self
            .provider
            .lock()
            .sizes
            .get(&self.host)
            .copied()
            .unwrap_or((DEFAULT_CPUS, DEFAULT_MEMORY_BYTES));
        Ok(HostFacts {
            hostname: self.host.clone(),
            cpus,
            memory_bytes,
            memory_source: None,
            cpu_vendor: Some("AuthenticAMD".into()),
            libvirt_version: "11.3.0".into(),
            hypervisor: format!("Memory {}", env!("CARGO_PKG_VERSION")),
            nesting: Some(true),
            virt_extension: Some("svm".into()),
            acceleration: Some("kvm".into()),
            acceleration_reason: Some(
                "the memory provider's hosts are imaginary and accelerate everything".into(),
            ),
            kvm_module: Some("kvm_amd".into()),
            kvm_parameters: self.read(|h| {
                let mut params: BTreeMap<String, String> = [("nested".to_string(), "Y".to_string())].into();
                params.extend(h.kvm_parameters.clone());
                params
            }),
            qemu_version: None,
        })
    }

    fn list_owned(&self) -> Result<Owned, ProviderError> {
        self.provider.stall_point("list_owned", &self.uri)?;
        Ok(self.read(|h| {
            let nets = h.networks.values().filter_map(|n| {
                let owner = n.owner.clone()?;
                Some(OwnedObject { kind: ObjectKind::Network, id: n.id.clone(), name: n.name.clone(), owner })
            });
            let guests = h.guests.values().filter_map(|g| {
                let owner = g.status.owner.clone()?;
                Some(OwnedObject {
                    kind: ObjectKind::Guest,
                    id: g.status.id.clone(),
                    name: g.status.name.clone(),
                    owner,
                })
            });
            Owned { objects: nets.chain(guests).collect(), unreadable: h.unreadable.clone() }
        }))
    }

    fn read_network(&self, id: &str) -> Result<Option<NetworkStatus>, ProviderError> {
        self.provider.stall_point("read_network", id)?;
        Ok(self.read(|h| h.networks.get(id).cloned()))
    }

    fn create_network(&self, req: &NetworkRequest, owner: &Owner) -> Result<NetworkStatus, ProviderError> {
        self.call("create_network", &req.name, |h| {
            if h.networks.values().any(|n| n.name == req.name) {
                return Err(ProviderError::op("define network", &req.name, "a network of this name exists"));
            }
            let id = new_id();
            let status = NetworkStatus {
                id: id.clone(),
                name: req.name.clone(),
                active: true,
                bridge: Some(format!("virbr{}", h.networks.len() + 1)),
                owner: Some(owner.clone()),
            };
            h.networks.insert(id, status.clone());
            Ok(status)
        })
    }

    fn delete_network(&self, id: &str) -> Result<(), ProviderError> {
        let name =
            self.read(|h| h.networks.get(id).map(|n| n.name.clone())).unwrap_or_else(|| id.to_string());
        self.call("delete_network", &name, |h| {
            h.networks.remove(id);
            Ok(())
        })
    }

    fn read_guest(&self, id: &str) -> Result<Option<GuestStatus>, ProviderError> {
        self.provider.stall_point("read_guest", id)?;
        Ok(self.read(|h| h.guests.get(id).map(|g| refresh(h, g))))
    }

    fn create_guest(&self, req: &GuestRequest, owner: &Owner) -> Result<GuestStatus, ProviderError> {
        self.call("create_guest", &req.name, |h| {
            if h.guests.values().any(|g| g.status.name == req.name) {
                return Err(ProviderError::op("define domain", &req.name, "a domain of this name exists"));
            }
            let volumes: Vec<_> =
                req.disks.iter().map(|d| (d.name.clone(), volume_name(&req.name, d))).collect();
            if let Some((_, v)) =
                volumes.iter().find(|(_, v)| h.pool.as_ref().is_some_and(|p| p.contains_key(v)))
            {
                return Err(ProviderError::op("create volume", v, "a volume of this name exists"));
            }
            let networks: Vec<_> = req.interfaces.iter().map(|i| i.network.clone()).collect();
            if req.running {
                check_networks(h, "start domain", &req.name, &networks)?;
            }
            // Like libvirt's pool, the fake's exists only while it holds volumes.
            if !volumes.is_empty() {
                let pool = h.pool.get_or_insert_with(Default::default);
                for (d, (_, v)) in req.disks.iter().zip(&volumes) {
                    pool.insert(v.clone(), d.size_bytes);
                }
            }
            let id = new_id();
            let record = GuestRecord {
                status: status(&id, req, owner, req.running),
                volumes,
                networks,
                snapshots: Vec::new(),
            };
            let s = refresh(h, &record);
            h.guests.insert(id, record);
            Ok(s)
        })
    }

    fn update_guest(
        &self,
        id: &str,
        req: &GuestRequest,
        owner: &Owner,
    ) -> Result<GuestStatus, ProviderError> {
        self.call("update_guest", &req.name, |h| {
            let old = h
                .guests
                .get(id)
                .cloned()
                .ok_or_else(|| ProviderError::op("define domain", id, "no such domain"))?;
            if old.status.name != req.name {
                return Err(ProviderError::op(
                    "define domain",
                    &req.name,
                    format!("domain `{id}` is already defined with name `{}`", old.status.name),
                ));
            }
            let volumes: Vec<_> =
                req.disks.iter().map(|d| (d.name.clone(), volume_name(&req.name, d))).collect();
            // Check every resize before changing anything, so a refusal leaves the guest as it was.
            let pool = h.pool.get_or_insert_with(Default::default);
            for (d, (_, v)) in req.disks.iter().zip(&volumes) {
                if let Some(&cap) = pool.get(v) {
                    if d.size_bytes < cap {
                        return Err(ProviderError::op(
                            "resize volume",
                            v,
                            "shrinking a volume would lose data",
                        ));
                    }
                }
            }
            for (d, (_, v)) in req.disks.iter().zip(&volumes) {
                pool.insert(v.clone(), d.size_bytes);
            }
            for (_, v) in old.volumes.iter().filter(|(_, v)| !volumes.iter().any(|(_, n)| n == v)) {
                pool.remove(v);
            }
            if pool.is_empty() {
                h.pool = None;
            }
            let networks = req.interfaces.iter().map(|i| i.network.clone()).collect();
            // A redefinition neither starts nor stops the domain.
            let record = GuestRecord {
                status: status(id, req, owner, old.status.running),
                volumes,
                networks,
                snapshots: old.snapshots,
            };
            let s = refresh(h, &record);
            h.guests.insert(id.to_string(), record);
            Ok(s)
        })
    }

    fn start_guest(&self, id: &str) -> Result<(), ProviderError> {
        self.call("start_guest", &self.guest_name(id), |h| {
            let g =
                h.guests.get(id).ok_or_else(|| ProviderError::op("start domain", id, "no such domain"))?;
            if g.status.running {
                return Ok(());
            }
            check_networks(h, "start domain", &g.status.name, &g.networks)?;
            h.guests.get_mut(id).expect("looked up above").status.running = true;
            Ok(())
        })
    }

    fn stop_guest(&self, id: &str, _timeout: Duration) -> Result<(), ProviderError> {
        let name = self.guest_name(id);
        self.call("stop_guest", &name, |h| {
            let g =
                h.guests.get_mut(id).ok_or_else(|| ProviderError::op("stop domain", id, "no such domain"))?;
            g.status.running = false;
            Ok(())
        })?;
        self.end_promoted(&name);
        Ok(())
    }

    fn delete_guest(&self, id: &str) -> Result<(), ProviderError> {
        let name = self.guest_name(id);
        self.call("delete_guest", &name, |h| {
            h.remove_guest(id);
            Ok(())
        })?;
        self.end_promoted(&name);
        Ok(())
    }

    fn guest_definition(&self, req: &GuestRequest, owner: &Owner) -> String {
        definition(req, owner)
    }

    /// A running fake guest has a real agent: nestform's own, serving one end of a socket pair on a
    /// thread of this process, so the engine's whole agent path runs against the fake too. (Its facts
    /// are this machine's.)
    fn open_agent(&self, id: &str) -> Result<AgentChannel, ProviderError> {
        let name = self.guest_name(id);
        // `fail_on("open_agent", name)` makes a guest whose agent never answers.
        if self.provider.lock().fail.contains(&("open_agent".to_string(), name.clone())) {
            return Err(ProviderError::op("open the agent channel of", name, "injected failure"));
        }
        let running = self.read(|h| h.guests.get(id).map(|g| g.status.running));
        match running {
            None => return Err(ProviderError::op("open the agent channel of", name, "no such guest")),
            Some(false) => {
                return Err(ProviderError::op("open the agent channel of", name, "the guest is not running"))
            }
            Some(true) => {}
        }
        let io = |e: std::io::Error| ProviderError::op("open the agent channel of", name.clone(), e);
        let (ours, theirs) = UnixStream::pair().map_err(io)?;
        std::thread::Builder::new()
            .name(format!("memory-agent-{name}"))
            .spawn(move || {
                let _ =
                    nestform_agent::serve_session(theirs, &Arc::new(nestform_agent::AgentConfig::default()));
            })
            .map_err(io)?;
        let reader = ours.try_clone().map_err(io)?;
        let closer = ours.try_clone().map_err(io)?;
        Ok(AgentChannel {
            reader: Box::new(reader),
            writer: Box::new(ours),
            shutdown: Arc::new(move || {
                let _ = closer.shutdown(std::net::Shutdown::Both);
            }),
        })
    }

    /// Like the real one, refuses while guests run, naming them; else the fake module takes the options.
    fn set_kvm_module_options(&self, options: &BTreeMap<String, String>) -> Result<(), ProviderError> {
        self.call("set_kvm_module_options", &self.host, |h| {
            let running: Vec<String> = h
                .guests
                .values()
                .filter(|g| g.status.running)
                .map(|g| format!("`{}`", g.status.name))
                .collect();
            if !running.is_empty() {
                return Err(ProviderError::op(
                    "reload the KVM module of",
                    "memory host",
                    format!("guests run on it: {}; stop them first", running.join(", ")),
                ));
            }
            h.kvm_parameters.extend(options.clone());
            Ok(())
        })
    }

    /// What [`MemoryProvider::print_console`] printed, after a first line saying it is a fake.
    fn console_tail(&self, id: &str, max_bytes: usize) -> Result<String, ProviderError> {
        let name = self.guest_name(id);
        let printed = self.provider.lock().consoles.get(&name).cloned().unwrap_or_default();
        let all = format!("(guest `{name}` of the memory provider has no real console)\n{printed}");
        let mut from = all.len().saturating_sub(max_bytes);
        while !all.is_char_boundary(from) {
            from += 1;
        }
        Ok(all[from..].to_string())
    }

    fn create_snapshot(
        &self,
        id: &str,
        name: &str,
        mode: SnapshotMode,
        owner: &Owner,
    ) -> Result<SnapshotInfo, ProviderError> {
        self.call("create_snapshot", &self.guest_name(id), |h| {
            crate::snapshot::create(h, id, name, mode, owner)
        })
    }

    fn list_snapshots(&self, id: &str) -> Result<Vec<SnapshotInfo>, ProviderError> {
        self.read(|h| crate::snapshot::list(h, id))
    }

    fn revert_snapshot(&self, id: &str, name: &str) -> Result<(), ProviderError> {
        self.call("revert_snapshot", &self.guest_name(id), |h| crate::snapshot::revert(h, id, name))
    }

    fn delete_snapshot(&self, id: &str, name: &str) -> Result<(), ProviderError> {
        self.call("delete_snapshot", &self.guest_name(id), |h| crate::snapshot::delete(h, id, name))
    }
}

fn status(id: &str, req: &GuestRequest, owner: &Owner, running: bool) -> GuestStatus {
    GuestStatus {
        id: id.to_string(),
        name: req.name.clone(),
        running,
        vcpus: req.vcpus,
        memory_bytes: req.memory_bytes,
        disks: Vec::new(),
        interfaces: req.interfaces.iter().map(|i| i.network.clone()).collect(),
        owner: Some(owner.clone()),
    }
}

/// One `key = value` line per field, in a fixed order, so a plan's diff of two definitions shows
/// exactly the fields that changed.
fn definition(req: &GuestRequest, owner: &Owner) -> String {
    let mut lines = vec![
        format!("name = {}", req.name),
        format!("owner = {} {}", owner.lineage, owner.address),
        format!("vcpus = {}", req.vcpus),
        format!("memory_bytes = {}", req.memory_bytes),
        match &req.cpu {
            CpuRequest::HostPassthrough => "cpu = host-passthrough".to_string(),
            CpuRequest::HostModel => "cpu = host-model".to_string(),
            CpuRequest::Model { name, require } if require.is_empty() => format!("cpu = {name}"),
            CpuRequest::Model { name, require } => format!("cpu = {name} require {}", require.join(",")),
        },
    ];
    for d in &req.disks {
        lines.push(format!(
            "disk.{} = {} {} bytes, preallocation {}, cache {}, bus {}",
            d.name,
            volume_name(&req.name, d),
            d.size_bytes,
            d.preallocation.as_str(),
            d.cache.as_str(),
            d.bus.as_str()
        ));
    }
    for (i, n) in req.interfaces.iter().enumerate() {
        match &n.mac {
            Some(mac) => lines.push(format!("interface.{i} = {} mac {mac}", n.network)),
            None => lines.push(format!("interface.{i} = {}", n.network)),
        }
    }
    match &req.boot {
        BootRequest::Disk => lines.push("boot = disk".into()),
        BootRequest::Kernel { kernel, initrd, cmdline, root_share } => {
            lines.push(format!("boot.kernel = {kernel}"));
            lines.push(format!("boot.initrd = {initrd}"));
            lines.push(format!("boot.cmdline = {cmdline}"));
            if let Some(share) = root_share {
                lines.push(format!("boot.root_share = {share}"));
            }
        }
    }
    lines.push(format!("running = {}", req.running));
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use nestform_provider::conformance::{disk, sample_guest, sample_owner};

    #[test]
    fn definition_is_one_line_per_field() {
        let mut req = sample_guest("web", &["lan"], true);
        req.disks.push(disk("data", 1 << 30));
        let text = definition(&req, &sample_owner("nested_guest.web"));
        assert_eq!(
            text,
            "name = web\n\
             owner = 0b6f1a4e-conformance nested_guest.web\n\
             vcpus = 1\n\
             memory_bytes = 67108864\n\
             cpu = qemu64\n\
             disk.root = web-root.qcow2 16777216 bytes, preallocation off, cache default, bus virtio\n\
             disk.data = web-data.qcow2 1073741824 bytes, preallocation off, cache default, bus virtio\n\
             interface.0 = lan\n\
             boot = disk\n\
             running = true\n"
        );
    }

    #[test]
    fn shrinking_a_disk_is_refused_and_changes_nothing() {
        let p = MemoryProvider::new();
        let h = p.connect_host("h");
        let owner = sample_owner("nested_guest.web");
        let g = h.create_guest(&sample_guest("web", &[], false), &owner).unwrap();
        let mut smaller = sample_guest("web", &[], false);
        smaller.disks[0].size_bytes = 1 << 20;
        smaller.vcpus = 4;
        assert!(h.update_guest(&g.id, &smaller, &owner).is_err());
        let now = h.read_guest(&g.id).unwrap().unwrap();
        assert_eq!((now.vcpus, now.disks[0].1), (1, 16 << 20));
    }

    impl MemoryProvider {
        fn connect_host(&self, host: &str) -> MemoryHypervisor {
            MemoryHypervisor::new(&format!("memory://{host}"), host, self.clone())
        }
    }
}
