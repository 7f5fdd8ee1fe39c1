//! An in-memory provider: a fake hypervisor for tests and benchmarks.
//!
//! [`MemoryProvider`] behaves like libvirt would, without libvirt: networks start active, guests have
//! a running state, every disk is a volume `<guest>-<disk>.<format>` in a pool that exists while it
//! holds volumes, deleting removes everything, and names are unique per host. Each URI is its own host
//! (`memory://lab` is the host `lab`; any other URI is a host named by the whole URI), and what is
//! created on it stays for the life of the provider, across connections, like a libvirt daemon.
//!
//! For tests it counts mutating calls ([`MemoryProvider::calls`], to show an apply did no needless
//! work), injects failures ([`MemoryProvider::fail_on`]) and can change guests behind nestform's back
//! ([`MemoryProvider::edit_guest`], for drift). Guests keep snapshots (`snapshot`) of their definition and
//! running state, with libvirt's rules. It is the engine's [`Guests`](nestform_provider::Guests) too
//! (`guests`): a fake guest's agent is nestform's real one, run in this process, and a promoted fake
//! guest is a fake host of its own.

mod guests;
mod host;
mod snapshot;

pub use guests::{promoted_uri, DiskBoot};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nestform_provider::{GuestStatus, Hypervisor, NetworkStatus, Provider, ProviderError};

use host::MemoryHypervisor;

/// CPUs of a host that [`MemoryProvider::with_host`] did not size.
pub const DEFAULT_CPUS: u32 = 64;
/// Memory of a host that [`MemoryProvider::with_host`] did not size: 256 GiB.
pub const DEFAULT_MEMORY_BYTES: u64 = 256 << 30;

/// The fake provider. Clones share one world, so a test can keep a clone to inspect what the engine did.
#[derive(Clone, Default)]
pub struct MemoryProvider {
    world: Arc<Mutex<World>>,
    stalls: Arc<Stalls>,
    pace: Arc<Pace>,
}

/// A hook run at the start of every mutating call, with its operation and object name.
type Hook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Connections made, calls in flight, and what slows calls down ([`MemoryProvider::set_delay`],
/// [`MemoryProvider::on_call`]): how a test sees parallelism and cancels mid-apply.
#[derive(Default)]
struct Pace {
    connects: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    delay: Mutex<Duration>,
    hook: Mutex<Option<Hook>>,
}

/// Marks one mutating call in flight for as long as it lives.
pub(crate) struct InFlight<'a>(&'a Pace);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Calls told to never return ([`MemoryProvider::stall_on`]) until [`MemoryProvider::release_stalls`].
#[derive(Default)]
struct Stalls {
    /// How many more calls of each operation stall.
    pending: Mutex<BTreeMap<String, u32>>,
    released: std::sync::Condvar,
    /// Bumped by each release, which ends every stall begun before it.
    generation: Mutex<u64>,
}

/// Everything every host holds, plus the test controls.
#[derive(Default)]
struct World {
    hosts: BTreeMap<String, HostWorld>,
    sizes: BTreeMap<String, (u32, u64)>,
    calls: Vec<String>,
    /// `(operation, object name)` pairs that fail; `("connect", uri)` refuses a connection.
    fail: BTreeSet<(String, String)>,
    /// URIs of the fake hosts of promoted guests whose hypervisor "runs": set by a promotion,
    /// cleared when the guest stops (its hypervisor goes with it).
    promoted: BTreeSet<String>,
    /// Of those, the ones whose hypervisor was stopped ([`MemoryProvider::stop_promoted`]).
    stopped: BTreeSet<String>,
    /// What guests printed on their consoles ([`MemoryProvider::print_console`]), by guest name.
    consoles: BTreeMap<String, String>,
}

/// One fake host.
#[derive(Default)]
struct HostWorld {
    networks: BTreeMap<String, NetworkStatus>,
    guests: BTreeMap<String, GuestRecord>,
    /// The storage pool's volumes, by volume name, with their capacity; `None` while there is no pool.
    pool: Option<BTreeMap<String, u64>>,
    /// Objects with nestform's metadata whose definition cannot be read
    /// ([`MemoryProvider::add_unreadable`]).
    unreadable: Vec<nestform_provider::UnreadableObject>,
    /// Parameters of the fake KVM module that `set_kvm_module_options` changed (over `nested = Y`).
    kvm_parameters: BTreeMap<String, String>,
}

/// A guest as the fake holds it: its status plus the request it was defined with.
#[derive(Clone)]
struct GuestRecord {
    status: GuestStatus,
    /// Volume name of each disk, in request order.
    volumes: Vec<(String, String)>,
    networks: Vec<String>,
    /// Its snapshots, oldest first.
    snapshots: Vec<snapshot::SnapshotRecord>,
}

impl MemoryProvider {
    /// A provider whose hosts all have the default size (64 CPUs, 256 GiB).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sizes the host `name` (the `NAME` of `memory://NAME`).
    pub fn with_host(self, name: &str, cpus: u32, memory_bytes: u64) -> Self {
        self.lock().sizes.insert(name.to_string(), (cpus, memory_bytes));
        self
    }

    /// How many mutating calls (create, update, start, stop, delete) all hosts have received.
    pub fn calls(&self) -> usize {
        self.lock().calls.len()
    }

    /// The mutating calls so far, as `"operation name"` (`"create_guest web"`), in order.
    pub fn call_log(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Makes every later call `op` (`create_guest`, `update_guest`, `start_guest`, `stop_guest`,
    /// `delete_guest`, `create_network`, `delete_network`) on the guest or network named `name` fail;
    /// `fail_on("connect", uri)` refuses connections to `uri`.
    pub fn fail_on(&self, op: &str, name: &str) {
        self.lock().fail.insert((op.to_string(), name.to_string()));
    }

    /// Ends a failure [`MemoryProvider::fail_on`] injected: later calls `op` on `name` succeed again.
    pub fn heal(&self, op: &str, name: &str) {
        self.lock().fail.remove(&(op.to_string(), name.to_string()));
    }

    /// Appends `text` to the console of the guest named `name` (on whichever host), as a booting
    /// kernel prints: `console_tail` shows it.
    pub fn print_console(&self, name: &str, text: &str) {
        self.lock().consoles.entry(name.to_string()).or_default().push_str(text);
    }

    /// Makes the next `times` calls of `op` (`facts`, `list_owned`, `read_guest`, `read_network`, or
    /// any operation [`MemoryProvider::fail_on`] takes) never return, like a libvirtd whose answer is lost on the way, until
    /// [`MemoryProvider::release_stalls`]; they then fail. For testing what a caller does about a
    /// call that hangs.
    pub fn stall_on(&self, op: &str, times: u32) {
        *self.stalls.pending.lock().unwrap_or_else(|p| p.into_inner()).entry(op.to_string()).or_default() +=
            times;
    }

    /// Ends every stalled call (each fails) and forgets the stalls still to come.
    pub fn release_stalls(&self) {
        self.stalls.pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.stalls.generation.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.stalls.released.notify_all();
    }

    /// Blocks while `op` is told to stall (see [`MemoryProvider::stall_on`]).
    fn stall_point(&self, op: &'static str, object: &str) -> Result<(), ProviderError> {
        {
            let mut pending = self.stalls.pending.lock().unwrap_or_else(|p| p.into_inner());
            match pending.get_mut(op) {
                Some(n) if *n > 0 => *n -= 1,
                _ => return Ok(()),
            }
        }
        let generation = self.stalls.generation.lock().unwrap_or_else(|p| p.into_inner());
        let started = *generation;
        let _released =
            self.stalls.released.wait_while(generation, |g| *g == started).unwrap_or_else(|p| p.into_inner());
        Err(ProviderError::op(op, object, "the stalled call was released"))
    }

    /// How many connections have been made (refused ones included).
    pub fn connects(&self) -> usize {
        self.pace.connects.load(Ordering::SeqCst)
    }

    /// Makes every later mutating call take `delay` (to see what runs in parallel).
    pub fn set_delay(&self, delay: Duration) {
        *self.pace.delay.lock().unwrap_or_else(|p| p.into_inner()) = delay;
    }

    /// The most mutating calls that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.pace.max_in_flight.load(Ordering::SeqCst)
    }

    /// Runs `f(operation, name)` at the start of every later mutating call, before its delay.
    pub fn on_call(&self, f: impl Fn(&str, &str) + Send + Sync + 'static) {
        *self.pace.hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
    }

    /// Counts a mutating call in flight, runs the hook and waits the delay; the call is in flight
    /// until the guard is dropped.
    pub(crate) fn begin_call(&self, op: &str, name: &str) -> InFlight<'_> {
        let pace = &*self.pace;
        let now = pace.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        pace.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let guard = InFlight(pace);
        let hook = pace.hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(hook) = hook {
            hook(op, name);
        }
        let delay = *pace.delay.lock().unwrap_or_else(|p| p.into_inner());
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        guard
    }

    /// Stops the hypervisor of the promoted guest whose fake host is `uri` while the guest runs on,
    /// as a libvirtd that died would: its objects stay, and reaching it as it is says it stopped
    /// until it is promoted again.
    pub fn stop_promoted(&self, uri: &str) {
        self.lock().stopped.insert(uri.to_string());
    }

    /// Forgets every injected failure.
    pub fn clear_failures(&self) {
        self.lock().fail.clear();
    }

    /// The guest named `name` on host `host`, as the fake holds it.
    pub fn guest(&self, host: &str, name: &str) -> Option<GuestStatus> {
        let w = self.lock();
        let h = w.hosts.get(host)?;
        h.guests.values().find(|g| g.status.name == name).map(|g| g.status.clone())
    }

    /// The network named `name` on host `host`.
    pub fn network(&self, host: &str, name: &str) -> Option<NetworkStatus> {
        let w = self.lock();
        w.hosts.get(host)?.networks.values().find(|n| n.name == name).cloned()
    }

    /// The storage pool's volumes on `host` (name, capacity), or `None` when the host has no pool.
    pub fn volumes(&self, host: &str) -> Option<Vec<(String, u64)>> {
        let w = self.lock();
        let pool = w.hosts.get(host)?.pool.as_ref()?;
        Some(pool.iter().map(|(n, c)| (n.clone(), *c)).collect())
    }

    /// Puts an object on `host` that carries nestform's metadata but whose definition cannot be read,
    /// as libvirt leaves one when it writes a value back unescaped.
    pub fn add_unreadable(&self, host: &str, object: nestform_provider::UnreadableObject) {
        let mut w = self.lock();
        w.hosts.entry(host.to_string()).or_default().unreadable.push(object);
    }

    /// Changes a guest behind nestform's back (drift). Returns whether the guest exists.
    pub fn edit_guest(&self, host: &str, name: &str, f: impl FnOnce(&mut GuestStatus)) -> bool {
        let mut w = self.lock();
        let Some(h) = w.hosts.get_mut(host) else { return false };
        match h.guests.values_mut().find(|g| g.status.name == name) {
            Some(g) => {
                f(&mut g.status);
                true
            }
            None => false,
        }
    }

    /// Removes a guest and its volumes behind nestform's back. Returns whether it existed.
    pub fn forget_guest(&self, host: &str, name: &str) -> bool {
        let mut w = self.lock();
        let Some(h) = w.hosts.get_mut(host) else { return false };
        let Some(id) = h.guests.iter().find(|(_, g)| g.status.name == name).map(|(id, _)| id.clone()) else {
            return false;
        };
        h.remove_guest(&id);
        true
    }

    /// A poisoned lock only means another test thread panicked; the world is still consistent
    /// because every change is made in one step under the lock.
    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl HostWorld {
    /// Removes a guest and its volumes, and the pool when it is left empty (as `delete_guest` does).
    fn remove_guest(&mut self, id: &str) {
        let Some(g) = self.guests.remove(id) else { return };
        if let Some(pool) = &mut self.pool {
            for (_, vol) in &g.volumes {
                pool.remove(vol);
            }
            if pool.is_empty() {
                self.pool = None;
            }
        }
    }
}

impl Provider for MemoryProvider {
    fn connect(&self, uri: &str) -> Result<Arc<dyn Hypervisor>, ProviderError> {
        self.pace.connects.fetch_add(1, Ordering::SeqCst);
        let host = uri.strip_prefix("memory://").unwrap_or(uri).trim_end_matches('/').to_string();
        let mut w = self.lock();
        if w.fail.contains(&("connect".to_string(), uri.to_string())) {
            return Err(ProviderError::Connect { uri: uri.into(), message: "injected failure".into() });
        }
        w.hosts.entry(host.clone()).or_default();
        drop(w);
        Ok(Arc::new(MemoryHypervisor::new(uri, &host, self.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nestform_provider::conformance::{sample_guest, sample_network, sample_owner};

    #[test]
    fn hosts_are_separate_and_persist_across_connections() {
        let p = MemoryProvider::new();
        let a = p.connect("memory://a").unwrap();
        let net = a.create_network(&sample_network("lan"), &sample_owner("nat_network.lan")).unwrap();
        drop(a);
        let a = p.connect("memory://a").unwrap();
        assert!(a.read_network(&net.id).unwrap().is_some());
        let b = p.connect("memory://b").unwrap();
        assert_eq!(b.read_network(&net.id).unwrap(), None);
        assert!(p.network("a", "lan").is_some());
        assert!(p.network("b", "lan").is_none());
    }

    #[test]
    fn with_host_sizes_facts() {
        let p = MemoryProvider::new().with_host("small", 2, 4 << 30);
        let f = p.connect("memory://small").unwrap().facts().unwrap();
        assert_eq!((f.hostname.as_str(), f.cpus, f.memory_bytes), ("small", 2, 4 << 30));
        let f = p.connect("memory://big").unwrap().facts().unwrap();
        assert_eq!((f.cpus, f.memory_bytes), (DEFAULT_CPUS, DEFAULT_MEMORY_BYTES));
    }

    #[test]
    fn counts_only_mutating_calls() {
        let p = MemoryProvider::new();
        let h = p.connect("memory://h").unwrap();
        let g = h.create_guest(&sample_guest("web", &[], true), &sample_owner("nested_guest.web")).unwrap();
        h.read_guest(&g.id).unwrap();
        h.list_owned().unwrap();
        h.facts().unwrap();
        assert_eq!(p.calls(), 1);
        h.stop_guest(&g.id, std::time::Duration::ZERO).unwrap();
        assert_eq!(p.call_log(), vec!["create_guest web", "stop_guest web"]);
    }

    #[test]
    fn counts_connections_and_calls_in_flight_and_runs_the_hook() {
        let p = MemoryProvider::new();
        let h = p.connect("memory://h").unwrap();
        p.connect("memory://h").unwrap();
        assert_eq!(p.connects(), 2);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        p.on_call(move |op, name| log.lock().unwrap().push(format!("{op} {name}")));
        p.set_delay(Duration::from_millis(50));
        std::thread::scope(|s| {
            for name in ["a", "b", "c"] {
                let h = &h;
                s.spawn(move || {
                    h.create_guest(&sample_guest(name, &[], false), &sample_owner("nested_guest.x"))
                });
            }
        });
        assert_eq!(p.max_in_flight(), 3);
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        assert_eq!(seen, ["create_guest a", "create_guest b", "create_guest c"]);
    }

    #[test]
    fn injected_failures_fail_only_their_target() {
        let p = MemoryProvider::new();
        p.fail_on("create_guest", "bad");
        p.fail_on("connect", "memory://down");
        assert!(matches!(p.connect("memory://down"), Err(ProviderError::Connect { .. })));
        let h = p.connect("memory://h").unwrap();
        let owner = sample_owner("nested_guest.x");
        let err = h.create_guest(&sample_guest("bad", &[], true), &owner).unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert!(p.guest("h", "bad").is_none(), "a failed create must leave nothing behind");
        h.create_guest(&sample_guest("good", &[], true), &owner).unwrap();
        p.clear_failures();
        h.create_guest(&sample_guest("bad", &[], true), &owner).unwrap();
    }

    #[test]
    fn volumes_follow_disks_and_the_pool_goes_when_empty() {
        let p = MemoryProvider::new();
        let h = p.connect("memory://h").unwrap();
        assert_eq!(p.volumes("h"), None);
        let g = h.create_guest(&sample_guest("web", &[], false), &sample_owner("nested_guest.web")).unwrap();
        assert_eq!(p.volumes("h"), Some(vec![("web-root.qcow2".to_string(), 16 << 20)]));
        h.delete_guest(&g.id).unwrap();
        assert_eq!(p.volumes("h"), None);
    }

    #[test]
    fn starting_needs_active_networks() {
        let p = MemoryProvider::new();
        let h = p.connect("memory://h").unwrap();
        let owner = sample_owner("nested_guest.web");
        let err = h.create_guest(&sample_guest("web", &["missing"], true), &owner).unwrap_err();
        assert!(err.to_string().contains("`missing`"), "{err}");
        assert!(p.guest("h", "web").is_none());
        let stopped = h.create_guest(&sample_guest("web", &["missing"], false), &owner).unwrap();
        assert!(h.start_guest(&stopped.id).is_err());
    }

    #[test]
    fn edit_and_forget_change_guests_behind_the_engine() {
        let p = MemoryProvider::new();
        let h = p.connect("memory://h").unwrap();
        let g = h.create_guest(&sample_guest("web", &[], true), &sample_owner("nested_guest.web")).unwrap();
        assert!(p.edit_guest("h", "web", |g| g.vcpus = 9));
        assert_eq!(h.read_guest(&g.id).unwrap().unwrap().vcpus, 9);
        assert!(p.forget_guest("h", "web"));
        assert_eq!(h.read_guest(&g.id).unwrap(), None);
        assert_eq!(p.volumes("h"), None);
    }
}
