//! The conformance suite: one set of checks, written once, that every [`Provider`] implementation runs
//! (the in-memory fake always, libvirt on its test driver and on a real host when one is there).
//!
//! Each check is a public function over a connected [`Hypervisor`] so an implementation's own tests can
//! run one at a time; [`run_all`] runs them in order over one connection. Checks panic with a message
//! that names the step, and a [`Cleanup`] guard deletes everything a check created even when it panics,
//! so a failing check does not leave objects behind for the next one (libvirt's test driver keeps state
//! for as long as one connection is open).
//!
//! Names are unique per process and call (`nfc-<pid>-<n>-<what>`) so checks can share a host with other
//! objects, and with other runs of the suite through the same daemon.
//!
//! [`run_on`] runs the same checks over a connection made otherwise (a promoted host), and [`agent`]
//! is the suite's other half: what a [`Guests`](crate::Guests) implementation's agents must do in a
//! running guest.

pub mod agent;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use nestform_types::{DiskBus, DiskCache, DiskFormat, Owner, Preallocation};

use crate::{
    BootRequest, CpuRequest, DiskRequest, GuestRequest, GuestStatus, Hypervisor, InterfaceRequest,
    NetworkRequest, ObjectKind, Provider, ProviderError, SnapshotMode,
};

const MIB: u64 = 1 << 20;
/// A well-formed UUID no backend hands out, for "does not exist" checks.
const UNKNOWN_ID: &str = "6e66636f-6e66-4000-8000-000000000000";
/// How long `stop_guest` may wait for a clean shutdown in the suite: guests here run no OS.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to `uri` and runs every check over that one connection.
pub fn run_all(provider: &dyn Provider, uri: &str) {
    let h = provider.connect(uri).unwrap_or_else(|e| panic!("connect to `{uri}` failed: {e}"));
    assert_eq!(h.uri(), uri, "a hypervisor must report the URI it was opened with");
    run_on(&*h);
}

/// Runs every check over `h`, however it was reached.
pub fn run_on(h: &dyn Hypervisor) {
    assert!(!h.uri().is_empty(), "a hypervisor must report a URI");
    facts_are_sane(h);
    guest_definition_is_pure(h);
    network_lifecycle(h);
    guest_lifecycle(h);
    guest_update_and_resize(h);
    delete_is_idempotent(h);
    owner_metadata_round_trips(h);
    list_owned_finds_only_owned(h);
    snapshot_lifecycle(h);
}

/// Deletes what a check created when it goes out of scope, also while unwinding from a failed
/// assertion. Errors are ignored: the objects may already be gone, which is what the check wanted.
pub struct Cleanup<'h> {
    h: &'h dyn Hypervisor,
    guests: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
}

impl<'h> Cleanup<'h> {
    pub fn new(h: &'h dyn Hypervisor) -> Self {
        Cleanup { h, guests: Mutex::new(Vec::new()), networks: Mutex::new(Vec::new()) }
    }

    /// Remembers a guest id to delete.
    pub fn guest(&self, id: &str) {
        self.guests.lock().unwrap_or_else(|e| e.into_inner()).push(id.to_string());
    }

    /// Remembers a network id to delete (after the guests, which use it).
    pub fn network(&self, id: &str) {
        self.networks.lock().unwrap_or_else(|e| e.into_inner()).push(id.to_string());
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for id in self.guests.get_mut().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = self.h.delete_guest(&id);
        }
        for id in self.networks.get_mut().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = self.h.delete_network(&id);
        }
    }
}

/// A name no other check or run uses: `nfc-<pid>-<n>-<what>`.
pub fn unique_name(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("nfc-{}-{n}-{what}", std::process::id())
}

/// The owner the suite stamps on what it creates.
pub fn sample_owner(address: &str) -> Owner {
    Owner { lineage: "0b6f1a4e-conformance".into(), address: address.into() }
}

/// A NAT network in `10.213.<third>.0/24`, the third octet counted up per call so networks of one run
/// do not overlap (a real libvirt refuses to start two networks on one subnet).
pub fn sample_network(name: &str) -> NetworkRequest {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let third = (std::process::id().wrapping_mul(7) + NEXT.fetch_add(1, Ordering::Relaxed)) % 250 + 1;
    NetworkRequest {
        name: name.into(),
        address: std::net::Ipv4Addr::new(10, 213, third as u8, 1),
        prefix_len: 24,
        dhcp_start: Some(std::net::Ipv4Addr::new(10, 213, third as u8, 2)),
        dhcp_end: Some(std::net::Ipv4Addr::new(10, 213, third as u8, 254)),
        domain: Some("conformance".into()),
    }
}

/// A small guest: one vCPU, 64 MiB, a 16 MiB qcow2 disk `root`, booting from disk (it finds nothing to
/// boot, which is fine: nothing here needs an OS). `qemu64` runs under KVM and TCG alike.
pub fn sample_guest(name: &str, networks: &[&str], running: bool) -> GuestRequest {
    GuestRequest {
        name: name.into(),
        vcpus: 1,
        memory_bytes: 64 * MIB,
        cpu: CpuRequest::Model { name: "qemu64".into(), require: Vec::new() },
        disks: vec![disk("root", 16 * MIB)],
        interfaces: networks.iter().map(|n| InterfaceRequest { network: n.to_string(), mac: None }).collect(),
        boot: BootRequest::Disk,
        running,
    }
}

/// A qcow2 virtio disk with default cache and no preallocation.
pub fn disk(name: &str, size_bytes: u64) -> DiskRequest {
    DiskRequest {
        name: name.into(),
        size_bytes,
        format: DiskFormat::Qcow2,
        preallocation: Preallocation::Off,
        cache: DiskCache::Default,
        bus: DiskBus::Virtio,
    }
}

fn read_guest(h: &dyn Hypervisor, id: &str, step: &str) -> GuestStatus {
    h.read_guest(id)
        .unwrap_or_else(|e| panic!("{step}: read_guest `{id}` failed: {e}"))
        .unwrap_or_else(|| panic!("{step}: read_guest `{id}` found nothing"))
}

fn sorted_disks(s: &GuestStatus) -> Vec<(String, u64)> {
    let mut d = s.disks.clone();
    d.sort();
    d
}

/// Facts are filled in: a hostname, CPUs and memory, a dotted libvirt version, a hypervisor name.
pub fn facts_are_sane(h: &dyn Hypervisor) {
    let f = h.facts().unwrap_or_else(|e| panic!("facts failed: {e}"));
    assert!(!f.hostname.is_empty(), "facts: empty hostname");
    assert!(f.cpus > 0, "facts: `cpus` is 0");
    assert!(f.memory_bytes >= 64 * MIB, "facts: `memory_bytes` is `{}`, less than 64 MiB", f.memory_bytes);
    let parts: Vec<_> = f.libvirt_version.split('.').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        "facts: libvirt version `{}` is not `major.minor.micro`",
        f.libvirt_version
    );
    assert!(!f.hypervisor.trim().is_empty(), "facts: empty hypervisor");
    if let Some(v) = &f.cpu_vendor {
        assert!(!v.is_empty(), "facts: empty CPU vendor (use `None` when unknown)");
    }
}

/// `guest_definition` gives the same text for the same request, reflects the request, and creates
/// nothing on the host.
pub fn guest_definition_is_pure(h: &dyn Hypervisor) {
    let before = h.list_owned().unwrap_or_else(|e| panic!("list_owned failed: {e}")).objects;
    let name = unique_name("def");
    let owner = sample_owner("nested_guest.def");
    let req = sample_guest(&name, &["somewhere"], true);
    let first = h.guest_definition(&req, &owner);
    assert_eq!(first, h.guest_definition(&req, &owner), "guest_definition is not deterministic");
    assert!(first.contains(&name), "the definition does not name the guest `{name}`:\n{first}");
    let mut bigger = req.clone();
    bigger.vcpus = 3;
    assert_ne!(first, h.guest_definition(&bigger, &owner), "the definition ignores `vcpus`");
    let mut other_disk = req.clone();
    other_disk.disks.push(disk("data", 32 * MIB));
    assert_ne!(first, h.guest_definition(&other_disk, &owner), "the definition ignores disks");
    let after = h.list_owned().unwrap_or_else(|e| panic!("list_owned failed: {e}")).objects;
    assert_eq!(before, after, "guest_definition changed what the host holds");
}

/// A network is created active with its owner, read back by id, deleted, and then reads as absent.
pub fn network_lifecycle(h: &dyn Hypervisor) {
    let cleanup = Cleanup::new(h);
    let name = unique_name("net");
    let owner = sample_owner("nat_network.lan");
    let created = h
        .create_network(&sample_network(&name), &owner)
        .unwrap_or_else(|e| panic!("create_network `{name}` failed: {e}"));
    cleanup.network(&created.id);
    assert!(!created.id.is_empty(), "create_network returned an empty id");
    assert_eq!(created.name, name);
    assert!(created.active, "a created network must be active");
    assert_eq!(created.owner.as_ref(), Some(&owner), "create_network lost the owner");

    let read = h
        .read_network(&created.id)
        .unwrap_or_else(|e| panic!("read_network failed: {e}"))
        .unwrap_or_else(|| panic!("read_network `{}` found nothing after create", created.id));
    assert_eq!(read, created, "read_network disagrees with create_network");

    let again = h.create_network(&sample_network(&name), &owner);
    assert!(again.is_err(), "a second network named `{name}` must be refused");

    h.delete_network(&created.id).unwrap_or_else(|e| panic!("delete_network failed: {e}"));
    let gone = h.read_network(&created.id).unwrap_or_else(|e| panic!("read_network failed: {e}"));
    assert_eq!(gone, None, "the network is still there after delete_network");
}

/// A guest is created (volumes, definition, started), reads back as requested, stops and starts
/// (both idempotent), and is gone after delete. A guest created with `running: false` stays off.
pub fn guest_lifecycle(h: &dyn Hypervisor) {
    let cleanup = Cleanup::new(h);
    let net_name = unique_name("gnet");
    let net = h
        .create_network(&sample_network(&net_name), &sample_owner("nat_network.g"))
        .unwrap_or_else(|e| panic!("create_network `{net_name}` failed: {e}"));
    cleanup.network(&net.id);

    let name = unique_name("guest");
    let owner = sample_owner("nested_guest.g");
    let req = sample_guest(&name, &[&net_name], true);
    let created =
        h.create_guest(&req, &owner).unwrap_or_else(|e| panic!("create_guest `{name}` failed: {e}"));
    cleanup.guest(&created.id);
    assert!(!created.id.is_empty(), "create_guest returned an empty id");
    assert_eq!(created.name, name);
    assert!(created.running, "a guest created with `running: true` must run");
    assert_eq!(created.vcpus, 1);
    assert_eq!(created.memory_bytes, 64 * MIB);
    assert_eq!(created.disks, vec![("root".to_string(), 16 * MIB)], "create_guest: disks");
    assert_eq!(created.interfaces, vec![net_name.clone()], "create_guest: interfaces");
    assert_eq!(created.owner.as_ref(), Some(&owner), "create_guest lost the owner");
    assert_eq!(read_guest(h, &created.id, "after create"), created, "read_guest disagrees with create_guest");

    assert!(h.create_guest(&req, &owner).is_err(), "a second guest named `{name}` must be refused");

    h.stop_guest(&created.id, STOP_TIMEOUT).unwrap_or_else(|e| panic!("stop_guest failed: {e}"));
    assert!(!read_guest(h, &created.id, "after stop").running, "the guest still runs after stop_guest");
    h.stop_guest(&created.id, STOP_TIMEOUT).unwrap_or_else(|e| panic!("stop_guest on a stopped guest: {e}"));
    h.start_guest(&created.id).unwrap_or_else(|e| panic!("start_guest failed: {e}"));
    assert!(read_guest(h, &created.id, "after start").running, "the guest is not running after start_guest");
    h.start_guest(&created.id).unwrap_or_else(|e| panic!("start_guest on a running guest: {e}"));

    h.delete_guest(&created.id).unwrap_or_else(|e| panic!("delete_guest failed: {e}"));
    let gone = h.read_guest(&created.id).unwrap_or_else(|e| panic!("read_guest failed: {e}"));
    assert_eq!(gone, None, "the guest is still there after delete_guest");

    let stopped_name = unique_name("off");
    let stopped = h
        .create_guest(&sample_guest(&stopped_name, &[], false), &owner)
        .unwrap_or_else(|e| panic!("create_guest `{stopped_name}` (not running) failed: {e}"));
    cleanup.guest(&stopped.id);
    assert!(!stopped.running, "a guest created with `running: false` must not run");
    assert!(!read_guest(h, &stopped.id, "created stopped").running);
}

/// `update_guest` keeps the id, applies CPUs and memory, creates added volumes, deletes removed ones
/// and grows a grown one. A backend that cannot resize volumes (libvirt's test driver) must say so
/// with [`ProviderError::Unsupported`], apply everything else, and leave the volume as it was.
pub fn guest_update_and_resize(h: &dyn Hypervisor) {
    let cleanup = Cleanup::new(h);
    let name = unique_name("upd");
    let owner = sample_owner("nested_guest.upd");
    let mut req = sample_guest(&name, &[], true);
    req.disks.push(disk("data", 8 * MIB));
    let created =
        h.create_guest(&req, &owner).unwrap_or_else(|e| panic!("create_guest `{name}` failed: {e}"));
    cleanup.guest(&created.id);
    assert_eq!(
        sorted_disks(&created),
        vec![("data".to_string(), 8 * MIB), ("root".to_string(), 16 * MIB)],
        "create_guest: disks"
    );

    let mut changed = req.clone();
    changed.vcpus = 2;
    changed.memory_bytes = 128 * MIB;
    changed.disks = vec![disk("root", 32 * MIB), disk("scratch", 4 * MIB)];
    let root_size = match h.update_guest(&created.id, &changed, &owner) {
        Ok(updated) => {
            assert_eq!(updated.id, created.id, "update_guest changed the id");
            32 * MIB
        }
        Err(ProviderError::Unsupported(what)) => {
            eprintln!("note: `{}` cannot grow volumes ({what}); checking the rest of the update", h.uri());
            16 * MIB
        }
        Err(e) => panic!("update_guest `{name}` failed: {e}"),
    };
    let read = read_guest(h, &created.id, "after update");
    assert_eq!(read.vcpus, 2, "update_guest: vcpus");
    assert_eq!(read.memory_bytes, 128 * MIB, "update_guest: memory");
    assert_eq!(
        sorted_disks(&read),
        vec![("root".to_string(), root_size), ("scratch".to_string(), 4 * MIB)],
        "update_guest: added volume created, removed volume deleted, grown volume resized"
    );
    assert!(read.running, "a redefinition must not stop a running guest");
    assert_eq!(read.owner.as_ref(), Some(&owner), "update_guest lost the owner");

    // The new definition takes effect at the next start and survives it.
    h.stop_guest(&created.id, STOP_TIMEOUT).unwrap_or_else(|e| panic!("stop_guest failed: {e}"));
    h.start_guest(&created.id).unwrap_or_else(|e| panic!("start_guest after update failed: {e}"));
    let restarted = read_guest(h, &created.id, "after restart");
    assert!(restarted.running);
    assert_eq!(
        (restarted.vcpus, restarted.memory_bytes),
        (2, 128 * MIB),
        "the update did not survive a restart"
    );
}

/// Deleting what does not exist succeeds, deleting twice succeeds, and unknown ids read as absent.
pub fn delete_is_idempotent(h: &dyn Hypervisor) {
    let cleanup = Cleanup::new(h);
    assert_eq!(h.read_guest(UNKNOWN_ID).unwrap_or_else(|e| panic!("read_guest of an unknown id: {e}")), None);
    assert_eq!(
        h.read_network(UNKNOWN_ID).unwrap_or_else(|e| panic!("read_network of an unknown id: {e}")),
        None
    );
    h.delete_guest(UNKNOWN_ID).unwrap_or_else(|e| panic!("delete_guest of an unknown id: {e}"));
    h.delete_network(UNKNOWN_ID).unwrap_or_else(|e| panic!("delete_network of an unknown id: {e}"));

    let net_name = unique_name("dnet");
    let net = h
        .create_network(&sample_network(&net_name), &sample_owner("nat_network.d"))
        .unwrap_or_else(|e| panic!("create_network failed: {e}"));
    cleanup.network(&net.id);
    let name = unique_name("del");
    let guest = h
        .create_guest(&sample_guest(&name, &[&net_name], true), &sample_owner("nested_guest.d"))
        .unwrap_or_else(|e| panic!("create_guest failed: {e}"));
    cleanup.guest(&guest.id);

    h.delete_guest(&guest.id).unwrap_or_else(|e| panic!("delete_guest failed: {e}"));
    h.delete_guest(&guest.id).unwrap_or_else(|e| panic!("second delete_guest failed: {e}"));
    h.delete_network(&net.id).unwrap_or_else(|e| panic!("delete_network failed: {e}"));
    h.delete_network(&net.id).unwrap_or_else(|e| panic!("second delete_network failed: {e}"));

    // The volumes went with the guest: a guest of the same name can be created again.
    let again = h
        .create_guest(&sample_guest(&name, &[], false), &sample_owner("nested_guest.d"))
        .unwrap_or_else(|e| panic!("re-creating `{name}` after delete failed (volumes left behind?): {e}"));
    cleanup.guest(&again.id);
}

/// An owner with characters XML must escape comes back exactly, on networks and guests.
pub fn owner_metadata_round_trips(h: &dyn Hypervisor) {
    let cleanup = Cleanup::new(h);
    let owner = Owner {
        lineage: "5f0c8a2e-77aa-4c1b-9d3e-0123456789ab".into(),
        address: r#"nested_guest.web["a<b>&'c\"d"]"#.into(),
    };
    let net = h
        .create_network(&sample_network(&unique_name("onet")), &owner)
        .unwrap_or_else(|e| panic!("create_network failed: {e}"));
    cleanup.network(&net.id);
    let read = h.read_network(&net.id).unwrap_or_else(|e| panic!("read_network failed: {e}"));
    assert_eq!(read.and_then(|n| n.owner), Some(owner.clone()), "the network's owner did not round-trip");

    let guest = h
        .create_guest(&sample_guest(&unique_name("own"), &[], false), &owner)
        .unwrap_or_else(|e| panic!("create_guest failed: {e}"));
    cleanup.guest(&guest.id);
    assert_eq!(read_guest(h, &guest.id, "owner").owner, Some(owner), "the guest's owner did not round-trip");
}

/// `list_owned` lists what nestform created, with kind, name and owner, every listed object reads
/// back with that owner, and deleted objects drop out of the list.
pub fn list_owned_finds_only_owned(h: &dyn Hypervisor) {
    let cleanup = Cleanup::new(h);
    let net_owner = sample_owner("nat_network.listed");
    let guest_owner = sample_owner("nested_guest.listed");
    let net_name = unique_name("lnet");
    let net = h
        .create_network(&sample_network(&net_name), &net_owner)
        .unwrap_or_else(|e| panic!("create_network failed: {e}"));
    cleanup.network(&net.id);
    let guest_name = unique_name("list");
    let guest = h
        .create_guest(&sample_guest(&guest_name, &[&net_name], false), &guest_owner)
        .unwrap_or_else(|e| panic!("create_guest failed: {e}"));
    cleanup.guest(&guest.id);

    let listed = h.list_owned().unwrap_or_else(|e| panic!("list_owned failed: {e}")).objects;
    let find = |id: &str| listed.iter().find(|o| o.id == id);
    let n = find(&net.id).unwrap_or_else(|| panic!("list_owned misses network `{net_name}`: {listed:?}"));
    assert_eq!((n.kind, n.name.as_str(), &n.owner), (ObjectKind::Network, net_name.as_str(), &net_owner));
    let g = find(&guest.id).unwrap_or_else(|| panic!("list_owned misses guest `{guest_name}`: {listed:?}"));
    assert_eq!((g.kind, g.name.as_str(), &g.owner), (ObjectKind::Guest, guest_name.as_str(), &guest_owner));

    for o in &listed {
        let owner = match o.kind {
            ObjectKind::Network => h.read_network(&o.id).ok().flatten().and_then(|n| n.owner),
            ObjectKind::Guest => h.read_guest(&o.id).ok().flatten().and_then(|g| g.owner),
        };
        assert_eq!(
            owner.as_ref(),
            Some(&o.owner),
            "listed object `{}` does not read back with its owner",
            o.name
        );
    }

    h.delete_guest(&guest.id).unwrap_or_else(|e| panic!("delete_guest failed: {e}"));
    h.delete_network(&net.id).unwrap_or_else(|e| panic!("delete_network failed: {e}"));
    let after = h.list_owned().unwrap_or_else(|e| panic!("list_owned failed: {e}")).objects;
    assert!(
        after.iter().all(|o| o.id != guest.id && o.id != net.id),
        "deleted objects are still listed: {after:?}"
    );
}

/// Snapshots: a live one of a running guest and an offline one of a stopped guest carry their owner
/// and state, list oldest first with the current one marked; an existing name, an offline snapshot of
/// a running guest and unknown names are refused; reverting brings the running state back (off after
/// an offline snapshot, running after a live one); deleting one keeps the others, and a guest with
/// snapshots can still be deleted.
pub fn snapshot_lifecycle(h: &dyn Hypervisor) {
    let cleanup = Cleanup::new(h);
    let name = unique_name("snap");
    let owner = sample_owner(r#"nested_guest.snap["a<b>&"]"#);
    let guest = h
        .create_guest(&sample_guest(&name, &[], true), &owner)
        .unwrap_or_else(|e| panic!("create_guest `{name}` failed: {e}"));
    cleanup.guest(&guest.id);

    let live = h
        .create_snapshot(&guest.id, "first", SnapshotMode::Live, &owner)
        .unwrap_or_else(|e| panic!("live create_snapshot failed: {e}"));
    assert_eq!((live.name.as_str(), live.running), ("first", true), "live snapshot: {live:?}");
    assert_eq!(live.owner.as_ref(), Some(&owner), "the snapshot's owner did not round-trip");
    assert!(
        h.create_snapshot(&guest.id, "first", SnapshotMode::Live, &owner).is_err(),
        "a second snapshot named `first` must be refused"
    );
    assert!(
        h.create_snapshot(&guest.id, "off", SnapshotMode::Offline, &owner).is_err(),
        "an offline snapshot of a running guest must be refused"
    );

    h.stop_guest(&guest.id, STOP_TIMEOUT).unwrap_or_else(|e| panic!("stop_guest failed: {e}"));
    let offline = h
        .create_snapshot(&guest.id, "second", SnapshotMode::Offline, &owner)
        .unwrap_or_else(|e| panic!("offline create_snapshot failed: {e}"));
    assert!(!offline.running, "an offline snapshot says the guest ran: {offline:?}");

    let listed = h.list_snapshots(&guest.id).unwrap_or_else(|e| panic!("list_snapshots failed: {e}"));
    let names: Vec<_> = listed.iter().map(|s| (s.name.as_str(), s.running, s.current)).collect();
    assert_eq!(names, vec![("first", true, false), ("second", false, true)], "list_snapshots: {listed:?}");
    assert!(listed.iter().all(|s| s.owner.as_ref() == Some(&owner)), "listed owners: {listed:?}");

    h.revert_snapshot(&guest.id, "first").unwrap_or_else(|e| panic!("revert to `first` failed: {e}"));
    assert!(read_guest(h, &guest.id, "after a live revert").running, "a live revert must leave it running");
    h.revert_snapshot(&guest.id, "second").unwrap_or_else(|e| panic!("revert to `second` failed: {e}"));
    assert!(!read_guest(h, &guest.id, "after an offline revert").running, "an offline revert leaves it off");
    let current: Vec<_> = h
        .list_snapshots(&guest.id)
        .unwrap_or_else(|e| panic!("list_snapshots failed: {e}"))
        .into_iter()
        .filter(|s| s.current)
        .map(|s| s.name)
        .collect();
    assert_eq!(current, vec!["second".to_string()], "the current snapshot after reverting to `second`");
    assert!(h.revert_snapshot(&guest.id, "nosuch").is_err(), "reverting to an unknown snapshot must fail");
    assert!(h.delete_snapshot(&guest.id, "nosuch").is_err(), "deleting an unknown snapshot must fail");

    h.delete_snapshot(&guest.id, "first").unwrap_or_else(|e| panic!("delete_snapshot failed: {e}"));
    let left: Vec<_> = h
        .list_snapshots(&guest.id)
        .unwrap_or_else(|e| panic!("list_snapshots failed: {e}"))
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(left, vec!["second".to_string()], "delete_snapshot removed the wrong snapshots");

    h.delete_guest(&guest.id).unwrap_or_else(|e| panic!("delete_guest with snapshots failed: {e}"));
    assert_eq!(h.read_guest(&guest.id).unwrap_or_else(|e| panic!("read_guest failed: {e}")), None);
}
