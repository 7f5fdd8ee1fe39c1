//! [`LibvirtHypervisor`]: the [`Hypervisor`] trait over one libvirt connection.

use std::mem::ManuallyDrop;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nestform_provider::{
    AgentChannel, CpuRequest, GuestRequest, GuestStatus, HostFacts, Hypervisor, NetworkRequest,
    NetworkStatus, ObjectKind, Owned, OwnedObject, ProviderError, SnapshotInfo, SnapshotMode,
    UnreadableObject,
};
use nestform_types::Owner;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::network::Network;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;

use crate::domain::{domain_xml, parse_domain, volume_name, DomainFacts};
use crate::error::{is, op};
use crate::network::{network_xml, parse_network};
use crate::storage::{self, Resized};

/// How often `stop_guest` looks whether a guest has shut down.
const STOP_POLL: Duration = Duration::from_millis(100);

/// One open libvirt connection, with what nestform learned about the host when it connected.
pub struct LibvirtHypervisor {
    uri: String,
    /// Closed by hand in `Drop`: virt's own `Drop` panics when libvirt reports an error on close.
    conn: ManuallyDrop<Connect>,
    pool_dir: PathBuf,
    domain_type: String,
    /// Held while a network is defined and started: libvirt picks the next free `virbrN` for each, and two networks
    /// started at once on one host both took `virbr0` (seen: "error creating bridge interface
    /// virbr0: File exists").
    network_starts: std::sync::Mutex<()>,
}

impl Drop for LibvirtHypervisor {
    fn drop(&mut self) {
        // SAFETY: the pointer is this wrapper's own reference, released exactly once here; the
        // `ManuallyDrop` keeps virt from releasing it a second time. A failed close (the daemon
        // went away) leaves nothing to clean up on this side, so its result is ignored.
        unsafe {
            virt::sys::virConnectClose(self.conn.as_ptr());
        }
    }
}

impl LibvirtHypervisor {
    pub(crate) fn open(uri: &str, pool_dir: PathBuf) -> Result<Self, ProviderError> {
        let conn = Connect::open(Some(uri))
            .map_err(|e| ProviderError::Connect { uri: uri.to_string(), message: e.message().to_string() })?;
        // Own the connection from here on so an error below still closes it.
        let mut h = LibvirtHypervisor {
            uri: uri.to_string(),
            conn: ManuallyDrop::new(conn),
            pool_dir,
            domain_type: String::new(),
            network_starts: std::sync::Mutex::new(()),
        };
        h.domain_type = crate::facts::domain_type(&h.conn, uri)?;
        Ok(h)
    }

    /// The `<domain type>` this host's guests get: `kvm`, `qemu` (TCG) or `test`.
    pub fn domain_type(&self) -> &str {
        &self.domain_type
    }

    /// The domain XML for `req` on this host. Under TCG (`qemu`), a guest that asks for the host's
    /// CPU gets the closest model that can still nest instead ([`crate::tcg_cpu_for`]): the host CPU
    /// is not what TCG emulates, and without svm the guest could not be a hypervisor.
    fn definition(&self, req: &GuestRequest, owner: &Owner, uuid: Option<&str>) -> String {
        if self.domain_type == "qemu"
            && matches!(req.cpu, CpuRequest::HostPassthrough | CpuRequest::HostModel)
        {
            let (name, require) = crate::tcg_cpu_for(&nestform_provider::HostFacts::default());
            let req = GuestRequest { cpu: CpuRequest::Model { name, require }, ..req.clone() };
            return domain_xml(&req, owner, &self.domain_type, uuid);
        }
        domain_xml(req, owner, &self.domain_type, uuid)
    }

    /// The underlying connection, for what the trait does not cover (channels to agents).
    pub fn connection(&self) -> &Connect {
        &self.conn
    }

    pub(crate) fn lookup_domain(&self, id: &str) -> Result<Option<Domain>, ProviderError> {
        match self.conn.lookup_domain_by_uuid_string(id) {
            Ok(d) => Ok(Some(d)),
            // A string that is not a UUID names no domain either.
            Err(e) if is(&e, ErrorNumber::NoDomain) || is(&e, ErrorNumber::InvalidArg) => Ok(None),
            Err(e) => Err(op("look up domain", id)(e)),
        }
    }

    fn lookup_network(&self, id: &str) -> Result<Option<Network>, ProviderError> {
        match self.conn.lookup_network_by_uuid_string(id) {
            Ok(n) => Ok(Some(n)),
            Err(e) if is(&e, ErrorNumber::NoNetwork) || is(&e, ErrorNumber::InvalidArg) => Ok(None),
            Err(e) => Err(op("look up network", id)(e)),
        }
    }

    /// The persistent definition: what the guest will be at its next start, which is what nestform
    /// compares with the configuration.
    fn domain_facts(&self, dom: &Domain, id: &str) -> Result<DomainFacts, ProviderError> {
        let xml = dom.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE).map_err(op("read domain", id))?;
        parse_domain(&xml).map_err(|e| ProviderError::op("parse domain", id, e))
    }

    fn guest_status(&self, dom: &Domain, id: &str) -> Result<GuestStatus, ProviderError> {
        let facts = self.domain_facts(dom, id)?;
        let running = dom.is_active().map_err(op("read domain", &facts.name))?;
        let mut disks = Vec::new();
        if let Some(pool) = storage::lookup_pool(&self.conn)? {
            for (disk, volume) in &facts.volumes {
                if let Some(capacity) = storage::capacity(&pool, volume)? {
                    disks.push((disk.clone(), capacity));
                }
            }
        }
        Ok(GuestStatus {
            id: id.to_string(),
            name: facts.name,
            running,
            vcpus: facts.vcpus,
            memory_bytes: facts.memory_bytes,
            disks,
            interfaces: facts.networks,
            owner: facts.owner,
        })
    }

    fn network_status(&self, net: &Network, id: &str) -> Result<NetworkStatus, ProviderError> {
        let xml = net.xml_desc(0).map_err(op("read network", id))?;
        let facts = parse_network(&xml).map_err(|e| ProviderError::op("parse network", id, e))?;
        let active = net.is_active().map_err(op("read network", &facts.name))?;
        Ok(NetworkStatus {
            id: id.to_string(),
            name: facts.name,
            active,
            bridge: facts.bridge,
            owner: facts.owner,
        })
    }

    /// Removes a volume of this name that no domain uses: the leftover of a guest whose domain was
    /// undefined by hand, or of an older nestform that made volumes before domains. A volume some
    /// domain uses is refused, since it is that guest's disk.
    fn clear_leftover_volume(&self, pool: &StoragePool, name: &str) -> Result<(), ProviderError> {
        let Some(vol) = storage::lookup_volume(pool, name)? else { return Ok(()) };
        for dom in self.conn.list_all_domains(0).map_err(op("list domains of", &self.uri))? {
            let Ok(xml) = dom.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE) else { continue };
            if parse_domain(&xml).is_ok_and(|f| f.volumes.iter().any(|(_, v)| v == name)) {
                let user = dom.name().unwrap_or_default();
                return Err(ProviderError::op(
                    "create volume",
                    name,
                    format!("it exists and is a disk of domain `{user}`"),
                ));
            }
        }
        tracing::info!(volume = name, "removing a volume no domain uses before making it anew");
        vol.delete(0).map_err(op("delete volume", name))
    }

    /// Deletes the named volumes, then the pool if that emptied it.
    fn delete_volumes(&self, volumes: &[String]) -> Result<(), ProviderError> {
        if let Some(pool) = storage::lookup_pool(&self.conn)? {
            for v in volumes {
                storage::delete_volume(&pool, v)?;
            }
        }
        storage::remove_pool_if_empty(&self.conn)
    }
}

/// Grows a guest's volume to `size` bytes. A running guest holds its image open, so QEMU must grow
/// it (block resize); otherwise the storage driver does.
fn grow(
    dom: &Domain,
    in_use: bool,
    vol: &StorageVol,
    name: &str,
    size: u64,
) -> Result<Resized, ProviderError> {
    let current = vol.info().map_err(op("read volume", name))?.capacity;
    if !in_use || size <= current {
        // Also refuses a shrink, and does nothing for an unchanged size.
        return storage::grow_volume(vol, name, size);
    }
    let path = vol.path().map_err(op("read volume", name))?;
    match dom.block_resize(&path, size, virt::sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES) {
        Ok(()) => Ok(Resized::Done),
        Err(e) if is(&e, ErrorNumber::NoSupport) => Ok(Resized::Unsupported),
        Err(e) => Err(op("resize volume", name)(e)),
    }
}

/// An object whose XML `list_owned` cannot parse: one of somebody else's is no concern of
/// nestform's and is skipped; one whose XML names nestform's metadata namespace is listed as
/// unreadable, for the plan to warn about.
fn note_unreadable(
    owned: &mut Owned,
    kind: ObjectKind,
    id: String,
    name: Option<String>,
    xml: &str,
    reason: String,
) {
    if !xml.contains(nestform_types::owner::METADATA_NAMESPACE) {
        tracing::debug!(%id, %reason, "skipping an object that is not nestform's and cannot be parsed");
        return;
    }
    owned.unreadable.push(UnreadableObject { kind, id: id.clone(), name: name.unwrap_or(id), reason });
}

impl Hypervisor for LibvirtHypervisor {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn facts(&self) -> Result<HostFacts, ProviderError> {
        crate::facts::host_facts(&self.conn, &self.uri)
    }

    /// Local QEMU hosts only: the module files and `modprobe` are this machine's (see `kvm`).
    fn set_kvm_module_options(
        &self,
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        if !crate::facts::is_local(&self.uri) {
            return Err(ProviderError::Unsupported(format!(
                "kvm_module_options on the remote host {}; it needs a local host for now",
                self.uri
            )));
        }
        // The test driver's guests run on no KVM; its "host" must not reload this machine's modules.
        if !matches!(self.domain_type.as_str(), "kvm" | "qemu") {
            return Err(ProviderError::Unsupported(format!(
                "kvm_module_options on {}, whose guests do not run on KVM",
                self.uri
            )));
        }
        let running = || -> Result<Vec<String>, String> {
            let active = self
                .conn
                .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                .map_err(|e| e.message().to_string())?;
            active.iter().map(|d| d.name().map_err(|e| e.message().to_string())).collect()
        };
        crate::kvm::KvmModules::system()
            .apply(options, running)
            .map(drop)
            .map_err(|e| ProviderError::op("set KVM module options on", &self.uri, e))
    }

    fn list_owned(&self) -> Result<Owned, ProviderError> {
        let mut owned = Owned::default();
        for net in self.conn.list_all_networks(0).map_err(op("list networks of", &self.uri))? {
            let id = net.uuid_string().map_err(op("read network of", &self.uri))?;
            let xml = match net.xml_desc(0) {
                Ok(xml) => xml,
                // Gone since the list (another state's delete): nothing to list.
                Err(e) if is(&e, ErrorNumber::NoNetwork) => continue,
                Err(e) => return Err(op("read network", &id)(e)),
            };
            match parse_network(&xml) {
                Ok(facts) => owned.objects.extend(facts.owner.map(|owner| OwnedObject {
                    kind: ObjectKind::Network,
                    id,
                    name: facts.name,
                    owner,
                })),
                Err(reason) => {
                    note_unreadable(&mut owned, ObjectKind::Network, id, net.name().ok(), &xml, reason)
                }
            }
        }
        for dom in self.conn.list_all_domains(0).map_err(op("list domains of", &self.uri))? {
            let id = dom.uuid_string().map_err(op("read domain of", &self.uri))?;
            let xml = match dom.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE) {
                Ok(xml) => xml,
                Err(e) if is(&e, ErrorNumber::NoDomain) => continue,
                Err(e) => return Err(op("read domain", &id)(e)),
            };
            match parse_domain(&xml) {
                Ok(facts) => owned.objects.extend(facts.owner.map(|owner| OwnedObject {
                    kind: ObjectKind::Guest,
                    id,
                    name: facts.name,
                    owner,
                })),
                Err(reason) => {
                    note_unreadable(&mut owned, ObjectKind::Guest, id, dom.name().ok(), &xml, reason)
                }
            }
        }
        Ok(owned)
    }

    fn read_network(&self, id: &str) -> Result<Option<NetworkStatus>, ProviderError> {
        match self.lookup_network(id)? {
            Some(net) => self.network_status(&net, id).map(Some),
            None => Ok(None),
        }
    }

    fn create_network(&self, req: &NetworkRequest, owner: &Owner) -> Result<NetworkStatus, ProviderError> {
        let _one_at_a_time = self.network_starts.lock().unwrap_or_else(|p| p.into_inner());
        let net = self
            .conn
            .define_network_xml(&network_xml(req, owner))
            .map_err(op("define network", &req.name))?;
        let started = net.create().map_err(op("start network", &req.name)).and_then(|_| {
            net.set_autostart(true).map(|_| ()).map_err(op("set autostart of network", &req.name))
        });
        // A network that cannot be read back (libvirt writes some values back unescaped) would stay
        // in libvirt with no state record: undo it like a failed start.
        let read_back = started.and_then(|()| {
            let id = net.uuid_string().map_err(op("read network", &req.name))?;
            self.network_status(&net, &id).map_err(|e| {
                ProviderError::op(
                    "read back network",
                    &req.name,
                    format!("{e}; the network was removed again"),
                )
            })
        });
        if read_back.is_err() {
            // Leave nothing half-made behind: the engine records no id for a failed create.
            let _ = net.destroy();
            let _ = net.undefine();
        }
        read_back
    }

    fn delete_network(&self, id: &str) -> Result<(), ProviderError> {
        let Some(net) = self.lookup_network(id)? else { return Ok(()) };
        if net.is_active().map_err(op("read network", id))? {
            net.destroy().map_err(op("stop network", id))?;
        }
        net.undefine().map_err(op("undefine network", id))
    }

    fn read_guest(&self, id: &str) -> Result<Option<GuestStatus>, ProviderError> {
        match self.lookup_domain(id)? {
            Some(dom) => self.guest_status(&dom, id).map(Some),
            None => Ok(None),
        }
    }

    /// The domain is defined first and its volumes made after it, and a delete removes the volumes
    /// before the domain: a volume never exists without the domain that owns it (by its metadata), so
    /// a kill at any point leaves at worst an owned domain, which the next refresh adopts and replaces.
    fn create_guest(&self, req: &GuestRequest, owner: &Owner) -> Result<GuestStatus, ProviderError> {
        if self.conn.lookup_domain_by_name(&req.name).is_ok() {
            return Err(ProviderError::op(
                "define domain",
                &req.name,
                "a domain of this name already exists",
            ));
        }
        let xml = self.definition(req, owner, None);
        let dom = self.conn.define_domain_xml(&xml).map_err(op("define domain", &req.name))?;
        let mut created = Vec::new();
        // A guest without disks needs no pool; making one would leave it empty.
        let volumes = if req.disks.is_empty() {
            Ok(())
        } else {
            storage::with_pool(&self.conn, &self.pool_dir, |pool| {
                for disk in &req.disks {
                    let name = volume_name(&req.name, disk);
                    self.clear_leftover_volume(pool, &name)?;
                    storage::create_volume(pool, &name, disk)?;
                    created.push(name);
                }
                Ok(())
            })
        };
        let started = volumes.and_then(|()| match req.running {
            true => dom.create().map(drop).map_err(op("start domain", &req.name)),
            false => Ok(()),
        });
        if let Err(e) = started {
            // Leave nothing half-made behind: the engine records no id for a failed create.
            let _ = self.delete_volumes(&created);
            let _ = dom.undefine();
            return Err(e);
        }
        let id = dom.uuid_string().map_err(op("read domain", &req.name))?;
        self.guest_status(&dom, &id)
    }

    fn update_guest(
        &self,
        id: &str,
        req: &GuestRequest,
        owner: &Owner,
    ) -> Result<GuestStatus, ProviderError> {
        let dom = self
            .lookup_domain(id)?
            .ok_or_else(|| ProviderError::op("update domain", id, "no such domain"))?;
        let old = self.domain_facts(&dom, id)?;
        if old.name != req.name {
            return Err(ProviderError::op(
                "update domain",
                &req.name,
                format!("domain `{id}` is named `{}`; renaming is a replacement", old.name),
            ));
        }
        let active = dom.is_active().map_err(op("read domain", &req.name))?;
        // Defined before new volumes are made, as in a create: a kill in between leaves a definition
        // naming a volume that is missing, which the next refresh sees and the next update makes.
        let xml = self.definition(req, owner, Some(id));
        self.conn.define_domain_xml(&xml).map_err(op("define domain", &req.name))?;
        let mut not_resized = Vec::new();
        if !req.disks.is_empty() {
            storage::with_pool(&self.conn, &self.pool_dir, |pool| {
                for disk in &req.disks {
                    let name = volume_name(&req.name, disk);
                    let vol = match storage::lookup_volume(pool, &name)? {
                        Some(vol) => vol,
                        None => {
                            storage::create_volume(pool, &name, disk)?;
                            continue;
                        }
                    };
                    let in_use = active && old.volumes.iter().any(|(_, v)| *v == name);
                    if grow(&dom, in_use, &vol, &name, disk.size_bytes)? == Resized::Unsupported {
                        not_resized.push(name);
                    }
                }
                Ok(())
            })?;
        }
        let wanted: Vec<_> = req.disks.iter().map(|d| volume_name(&req.name, d)).collect();
        let removed: Vec<_> =
            old.volumes.into_iter().map(|(_, v)| v).filter(|v| !wanted.contains(v)).collect();
        self.delete_volumes(&removed)?;
        if !not_resized.is_empty() {
            return Err(ProviderError::Unsupported(format!(
                "resizing volumes `{}`",
                not_resized.join("`, `")
            )));
        }
        self.guest_status(&dom, id)
    }

    fn start_guest(&self, id: &str) -> Result<(), ProviderError> {
        let dom =
            self.lookup_domain(id)?.ok_or_else(|| ProviderError::op("start domain", id, "no such domain"))?;
        if !dom.is_active().map_err(op("read domain", id))? {
            dom.create().map_err(op("start domain", id))?;
        }
        Ok(())
    }

    fn stop_guest(&self, id: &str, timeout: Duration) -> Result<(), ProviderError> {
        let dom =
            self.lookup_domain(id)?.ok_or_else(|| ProviderError::op("stop domain", id, "no such domain"))?;
        let active = || dom.is_active().map_err(op("read domain", id));
        if !active()? {
            return Ok(());
        }
        // The guest may have stopped between the check and the request; only a guest still running
        // after a failed request is an error, and the destroy below handles that.
        let _ = dom.shutdown();
        let deadline = Instant::now() + timeout;
        while active()? {
            if Instant::now() >= deadline {
                match dom.destroy() {
                    Ok(()) => return Ok(()),
                    Err(e) if !active()? => drop(e),
                    Err(e) => return Err(op("power off domain", id)(e)),
                }
                break;
            }
            std::thread::sleep(STOP_POLL.min(deadline.saturating_duration_since(Instant::now())));
        }
        Ok(())
    }

    fn delete_guest(&self, id: &str) -> Result<(), ProviderError> {
        let Some(dom) = self.lookup_domain(id)? else { return Ok(()) };
        let facts = self.domain_facts(&dom, id)?;
        if dom.is_active().map_err(op("read domain", &facts.name))? {
            dom.destroy().map_err(op("power off domain", &facts.name))?;
        }
        // Managed save, snapshot and checkpoint metadata and NVRAM would otherwise make libvirt refuse
        // or leave files behind; a driver that knows none of these flags gets a plain undefine.
        // Volumes before the definition that owns them (see `create_guest`).
        let volumes: Vec<_> = facts.volumes.into_iter().map(|(_, v)| v).collect();
        self.delete_volumes(&volumes)?;
        let flags = virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | virt::sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
            | virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM;
        match dom.undefine_flags(flags) {
            Ok(()) => {}
            // The test driver knows snapshots but not all of the other flags.
            Err(e) if is(&e, ErrorNumber::InvalidArg) || is(&e, ErrorNumber::NoSupport) => {
                match dom.undefine_flags(virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA) {
                    Ok(()) => {}
                    Err(e) if is(&e, ErrorNumber::InvalidArg) || is(&e, ErrorNumber::NoSupport) => {
                        dom.undefine().map_err(op("undefine domain", &facts.name))?
                    }
                    Err(e) => return Err(op("undefine domain", &facts.name)(e)),
                }
            }
            Err(e) => return Err(op("undefine domain", &facts.name)(e)),
        }
        // QEMU's logs of a guest nestform made go with it, on a host whose files nestform can reach.
        if self.domain_type != "test" && crate::facts::is_local(&self.uri) {
            let qemu_log =
                std::path::Path::new(crate::channel::CONSOLE_LOG_DIR).join(format!("{}.log", facts.name));
            for log in [crate::channel::console_log_path(&facts.name), qemu_log] {
                let _ = std::fs::remove_file(log);
            }
        }
        Ok(())
    }

    fn guest_definition(&self, req: &GuestRequest, owner: &Owner) -> String {
        self.definition(req, owner, None)
    }

    fn open_agent(&self, id: &str) -> Result<AgentChannel, ProviderError> {
        crate::channel::open_agent_channel(self, id).map(AgentChannel::from)
    }

    fn console_tail(&self, id: &str, max_bytes: usize) -> Result<String, ProviderError> {
        crate::channel::console_tail(self, id, max_bytes)
    }

    fn agent_sockets(&self, id: &str) -> Result<Vec<String>, ProviderError> {
        crate::channel::agent_socket_paths(self, id)
    }

    fn create_snapshot(
        &self,
        id: &str,
        name: &str,
        mode: SnapshotMode,
        owner: &Owner,
    ) -> Result<SnapshotInfo, ProviderError> {
        crate::snapshot::create(self, id, name, mode, owner)
    }

    fn list_snapshots(&self, id: &str) -> Result<Vec<SnapshotInfo>, ProviderError> {
        crate::snapshot::list(self, id)
    }

    fn revert_snapshot(&self, id: &str, name: &str) -> Result<(), ProviderError> {
        crate::snapshot::revert(self, id, name)
    }

    fn delete_snapshot(&self, id: &str, name: &str) -> Result<(), ProviderError> {
        crate::snapshot::delete(self, id, name)
    }
}
