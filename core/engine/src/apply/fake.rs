//! A small in-memory provider for the engine's own unit tests: records every call in order, fails the
//! calls it is told to, can delay calls (to observe parallelism) and run a hook on each call (to cancel
//! mid-apply). The workspace's `nestform-provider-memory` is the full fake; this one stays tiny so the
//! executor's tests do not depend on another crate's progress.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nestform_provider::{
    GuestRequest, GuestStatus, HostFacts, Hypervisor, NetworkRequest, NetworkStatus, OwnedObject, Provider,
    ProviderError,
};
use nestform_types::Owner;

type Hook = Box<dyn Fn(&str, &str) + Send + Sync>;

#[derive(Default)]
struct World {
    networks: BTreeMap<String, (String, NetworkStatus)>,
    guests: BTreeMap<String, (String, GuestStatus)>,
    calls: Vec<String>,
    fail: BTreeSet<(String, String)>,
    refuse: BTreeSet<String>,
    next_id: u64,
}

/// The fake provider; every connection shares one world.
pub struct FakeProvider {
    shared: Arc<Shared>,
}

impl std::ops::Deref for FakeProvider {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// What the provider and its connections share.
pub struct Shared {
    world: Mutex<World>,
    connects: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    delay: Mutex<Duration>,
    hook: Mutex<Option<Arc<Hook>>>,
}

impl FakeProvider {
    pub fn new() -> Arc<FakeProvider> {
        Arc::new(FakeProvider {
            shared: Arc::new(Shared {
                world: Mutex::new(World::default()),
                connects: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                delay: Mutex::new(Duration::ZERO),
                hook: Mutex::new(None),
            }),
        })
    }
}

impl Shared {
    pub fn connects(&self) -> usize {
        self.connects.load(Ordering::SeqCst)
    }

    /// Makes `connect(uri)` fail.
    pub fn refuse_connect(&self, uri: &str) {
        self.world.lock().unwrap().refuse.insert(uri.to_string());
    }

    /// Makes the call `op` (`create_guest`, `stop_guest`, ...) on the object named `name` fail.
    pub fn fail_on(&self, op: &str, name: &str) {
        self.world.lock().unwrap().fail.insert((op.to_string(), name.to_string()));
    }

    /// Every mutating call so far, as `"op name"`, in the order they started.
    pub fn calls(&self) -> Vec<String> {
        self.world.lock().unwrap().calls.clone()
    }

    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Runs `f(op, name)` at the start of every mutating call.
    pub fn on_call(&self, f: impl Fn(&str, &str) + Send + Sync + 'static) {
        *self.hook.lock().unwrap() = Some(Arc::new(Box::new(f)));
    }

    /// The guest named `name`, as the fake holds it.
    pub fn guest(&self, name: &str) -> Option<GuestStatus> {
        let w = self.world.lock().unwrap();
        w.guests.values().find(|(_, g)| g.name == name).map(|(_, g)| g.clone())
    }

    pub fn network(&self, name: &str) -> Option<NetworkStatus> {
        let w = self.world.lock().unwrap();
        w.networks.values().find(|(_, n)| n.name == name).map(|(_, n)| n.clone())
    }

    /// Changes a guest behind nestform's back (drift).
    pub fn edit_guest(&self, name: &str, f: impl FnOnce(&mut GuestStatus)) {
        let mut w = self.world.lock().unwrap();
        if let Some((_, g)) = w.guests.values_mut().find(|(_, g)| g.name == name) {
            f(g);
        }
    }

    /// Removes a guest behind nestform's back.
    pub fn forget_guest(&self, name: &str) {
        self.world.lock().unwrap().guests.retain(|_, (_, g)| g.name != name);
    }
}

impl Provider for FakeProvider {
    fn connect(&self, uri: &str) -> Result<Arc<dyn Hypervisor>, ProviderError> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        if self.world.lock().unwrap().refuse.contains(uri) {
            return Err(ProviderError::Connect { uri: uri.into(), message: "refused".into() });
        }
        Ok(Arc::new(FakeHost { uri: uri.to_string(), provider: self.shared.clone() }))
    }
}

struct FakeHost {
    uri: String,
    provider: Arc<Shared>,
}

/// Marks one call in flight for as long as it lives.
struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeHost {
    /// Records the call, runs the hook, waits the delay, and fails when told to.
    fn call(&self, op: &'static str, name: &str) -> Result<InFlight<'_>, ProviderError> {
        let p = &*self.provider;
        let now = p.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        p.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let guard = InFlight(p);
        let fail = {
            let mut w = p.world.lock().unwrap();
            w.calls.push(format!("{op} {name}"));
            w.fail.contains(&(op.to_string(), name.to_string()))
        };
        let hook = p.hook.lock().unwrap().clone();
        if let Some(h) = hook {
            h(op, name);
        }
        let delay = *p.delay.lock().unwrap();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if fail {
            return Err(ProviderError::op(op, name, "injected failure"));
        }
        Ok(guard)
    }

    fn guest_name(&self, id: &str) -> String {
        let w = self.provider.world.lock().unwrap();
        w.guests.get(id).map(|(_, g)| g.name.clone()).unwrap_or_else(|| id.to_string())
    }

    fn new_id(&self) -> String {
        let mut w = self.provider.world.lock().unwrap();
        w.next_id += 1;
        format!("00000000-0000-0000-0000-{:012}", w.next_id)
    }
}

impl Hypervisor for FakeHost {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn facts(&self) -> Result<HostFacts, ProviderError> {
        Ok(HostFacts {
            hostname: "fake".into(),
            cpus: 8,
            memory_bytes: 16 << 30,
            cpu_vendor: None,
            libvirt_version: "11.3.0".into(),
            hypervisor: "Fake 1.0".into(),
            nesting: Some(true),
            ..HostFacts::default()
        })
    }

    fn list_owned(&self) -> Result<Vec<OwnedObject>, ProviderError> {
        Ok(Vec::new())
    }

    fn read_network(&self, id: &str) -> Result<Option<NetworkStatus>, ProviderError> {
        let w = self.provider.world.lock().unwrap();
        Ok(w.networks.get(id).filter(|(u, _)| *u == self.uri).map(|(_, n)| n.clone()))
    }

    fn create_network(&self, req: &NetworkRequest, owner: &Owner) -> Result<NetworkStatus, ProviderError> {
        let _g = self.call("create_network", &req.name)?;
        let id = self.new_id();
        let n = NetworkStatus {
            id: id.clone(),
            name: req.name.clone(),
            active: true,
            bridge: Some(format!("virbr-{}", req.name)),
            owner: Some(owner.clone()),
        };
        self.provider.world.lock().unwrap().networks.insert(id, (self.uri.clone(), n.clone()));
        Ok(n)
    }

    fn delete_network(&self, id: &str) -> Result<(), ProviderError> {
        let name = {
            let w = self.provider.world.lock().unwrap();
            w.networks.get(id).map(|(_, n)| n.name.clone()).unwrap_or_else(|| id.to_string())
        };
        let _g = self.call("delete_network", &name)?;
        self.provider.world.lock().unwrap().networks.remove(id);
        Ok(())
    }

    fn read_guest(&self, id: &str) -> Result<Option<GuestStatus>, ProviderError> {
        let w = self.provider.world.lock().unwrap();
        Ok(w.guests.get(id).filter(|(u, _)| *u == self.uri).map(|(_, g)| g.clone()))
    }

    fn create_guest(&self, req: &GuestRequest, owner: &Owner) -> Result<GuestStatus, ProviderError> {
        let _g = self.call("create_guest", &req.name)?;
        let id = self.new_id();
        let g = status(&id, req, Some(owner.clone()));
        self.provider.world.lock().unwrap().guests.insert(id, (self.uri.clone(), g.clone()));
        Ok(g)
    }

    fn update_guest(
        &self,
        id: &str,
        req: &GuestRequest,
        owner: &Owner,
    ) -> Result<GuestStatus, ProviderError> {
        let _g = self.call("update_guest", &req.name)?;
        let mut w = self.provider.world.lock().unwrap();
        let (_, g) =
            w.guests.get_mut(id).ok_or_else(|| ProviderError::op("update_guest", id, "no such guest"))?;
        let running = g.running;
        *g = status(id, req, Some(owner.clone()));
        // A redefinition does not start or stop the domain.
        g.running = running;
        Ok(g.clone())
    }

    fn start_guest(&self, id: &str) -> Result<(), ProviderError> {
        let _g = self.call("start_guest", &self.guest_name(id))?;
        let mut w = self.provider.world.lock().unwrap();
        let (_, g) =
            w.guests.get_mut(id).ok_or_else(|| ProviderError::op("start_guest", id, "no such guest"))?;
        g.running = true;
        Ok(())
    }

    fn stop_guest(&self, id: &str, _timeout: Duration) -> Result<(), ProviderError> {
        let _g = self.call("stop_guest", &self.guest_name(id))?;
        let mut w = self.provider.world.lock().unwrap();
        if let Some((_, g)) = w.guests.get_mut(id) {
            g.running = false;
        }
        Ok(())
    }

    fn delete_guest(&self, id: &str) -> Result<(), ProviderError> {
        let _g = self.call("delete_guest", &self.guest_name(id))?;
        self.provider.world.lock().unwrap().guests.remove(id);
        Ok(())
    }

    fn guest_definition(&self, req: &GuestRequest, _owner: &Owner) -> String {
        format!("<domain><name>{}</name></domain>", req.name)
    }
}

fn status(id: &str, req: &GuestRequest, owner: Option<Owner>) -> GuestStatus {
    GuestStatus {
        id: id.to_string(),
        name: req.name.clone(),
        running: req.running,
        vcpus: req.vcpus,
        memory_bytes: req.memory_bytes,
        disks: req.disks.iter().map(|d| (d.name.clone(), d.size_bytes)).collect(),
        interfaces: req.interfaces.iter().map(|i| i.network.clone()).collect(),
        owner,
    }
}
