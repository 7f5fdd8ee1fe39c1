//! The connection cache: one [`Hypervisor`] connection per libvirt URI, shared by refresh and apply.
//!
//! Connections are cached by URI rather than by address because a `kvm_host` whose `uri` changed has
//! its old objects on the old URI (deletes go there, read from state) and its new ones on the new URI
//! (creates go there, read from the plan); both must be reachable in one apply. [`Hosts::get`] answers
//! the connection most recently made for an address.
//!
//! `Hosts` is a cheap handle (an `Arc` inside), so apply can move clones into `spawn_blocking`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use nestform_provider::{
    Backends, BootAssets, GuestRef, Guests, Hypervisor, PromoteRequest, PromotedNow, ProviderError,
};
use nestform_types::ResourceAddr;

/// Thread-safe cache of hypervisor connections, keyed by URI.
#[derive(Clone)]
pub struct Hosts {
    inner: Arc<Inner>,
}

struct Inner {
    backends: Backends,
    // One mutex for both maps: they change together, and the lock is never held across a provider call.
    conns: Mutex<Conns>,
    /// One lock per promoted host, held while it is being reached: operations that run in parallel
    /// on one promoted host would otherwise each open its guest's agent channel, each taking it over
    /// from the other, forever (seen: two network deletes in one destroy).
    promoting: Mutex<BTreeMap<ResourceAddr, Arc<Mutex<()>>>>,
}

#[derive(Default)]
struct Conns {
    by_uri: BTreeMap<String, Arc<dyn Hypervisor>>,
    by_addr: BTreeMap<ResourceAddr, Arc<dyn Hypervisor>>,
    /// Promoted hosts in the order they were reached, shallowest first (a deeper one needs the
    /// connection above it).
    promoted: Vec<Arc<dyn Hypervisor>>,
    /// Guests created during this run, by address: their id and libvirt name (for promoting them).
    guests: BTreeMap<ResourceAddr, (String, String)>,
}

impl Drop for Inner {
    /// Closes the promoted hosts deepest first, each before the level it is reached through (a
    /// promoted host closes its own connection, then what it goes through). Dropped in any other
    /// order, a parent's libvirtd saw a client vanish while one of its streams was open, and its main
    /// loop deadlocked (seen in a lab guest at level 1: `virNetServerClientClose` waiting on a lock
    /// forever, so the next `nestform` run found its libvirtd dead to the world).
    ///
    /// Each close gets [`CLOSE_PATIENCE`]: closing a libvirt connection is a call that waits for its
    /// answer, and through a host that stopped answering (seen: a level-1 guest under TCG deadlocked
    /// in a TLB-flush IPI) it never came, so the command hung after printing its result, holding
    /// the state lock. A close given up on is left to the end of the process, which frees it.
    fn drop(&mut self) {
        let conns = self.conns.get_mut().unwrap_or_else(|p| p.into_inner());
        while let Some(h) = conns.promoted.pop() {
            conns.by_uri.retain(|_, c| !Arc::ptr_eq(c, &h));
            conns.by_addr.retain(|_, c| !Arc::ptr_eq(c, &h));
            let uri = h.uri().to_string();
            let (done, closed) = std::sync::mpsc::channel();
            let closing = std::thread::Builder::new().name("nestform-close".into()).spawn(move || {
                drop(h);
                let _ = done.send(());
            });
            if closing.is_ok() && closed.recv_timeout(CLOSE_PATIENCE).is_err() {
                tracing::warn!(%uri, patience = ?CLOSE_PATIENCE, "closing the connection did not finish; leaving it to the end of the process");
            }
        }
    }
}

/// How long closing one promoted host's connection may take when the cache is dropped.
const CLOSE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// The connection of a host reached with [`Reach::Promote`], which either runs or failed.
fn running(reached: PromotedNow) -> Result<Arc<dyn Hypervisor>, ProviderError> {
    match reached {
        PromotedNow::Running(h) => Ok(h),
        other => unreachable!("a promotion gives a running host or an error, not {other:?}"),
    }
}

/// Whether reaching a promoted host may start its hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    /// Start it when it does not run (apply, and commands that act on guests).
    Promote,
    /// Only connect to what runs (refresh: a plan changes nothing).
    AsItIs,
}

/// Where a guest that is promoted to a host runs: its host's connection and its id there.
pub struct PromotedGuest<'a> {
    pub parent: Arc<dyn Hypervisor>,
    pub id: &'a str,
    pub name: &'a str,
}

impl Hosts {
    /// An empty cache that reaches hosts and guests through `backends`.
    pub fn new(backends: Backends) -> Self {
        Hosts {
            inner: Arc::new(Inner {
                backends,
                conns: Mutex::new(Conns::default()),
                promoting: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// What this cache reaches hosts and guests through.
    pub fn backends(&self) -> &Backends {
        &self.inner.backends
    }

    /// How guests' agents are reached.
    pub fn guests(&self) -> &dyn Guests {
        &*self.inner.backends.guests
    }

    /// What lab guests boot.
    pub fn boot(&self) -> &dyn BootAssets {
        &*self.inner.backends.boot
    }

    /// The connection to `uri`, remembered as `addr`'s current connection.
    pub fn connect_uri(&self, addr: &ResourceAddr, uri: &str) -> Result<Arc<dyn Hypervisor>, ProviderError> {
        {
            let mut conns = self.lock();
            if let Some(h) = conns.by_uri.get(uri).cloned() {
                conns.by_addr.insert(addr.clone(), h.clone());
                return Ok(h);
            }
        }
        // Connecting can take seconds (ssh, a busy daemon): do it without the lock. Two threads racing
        // for the same URI both connect; the first one stored wins and the other connection is dropped.
        let fresh = self.inner.backends.provider.connect(uri)?;
        let mut conns = self.lock();
        let h = conns.by_uri.entry(uri.to_string()).or_insert(fresh).clone();
        conns.by_addr.insert(addr.clone(), h.clone());
        Ok(h)
    }

    /// The connection to the hypervisor inside a promoted guest, `addr`'s host, opened on first use
    /// by [`Guests::promote`] (for real guests: libvirtd started through the guest's agent, reached
    /// through a tunnel over the agent channels; no SSH and no guest network is involved). One
    /// promotion at a time per host.
    pub fn connect_promoted(
        &self,
        addr: &ResourceAddr,
        guest: PromotedGuest<'_>,
    ) -> Result<Arc<dyn Hypervisor>, ProviderError> {
        self.connect_promoted_with(addr, guest, &BTreeMap::new())
    }

    /// [`Hosts::connect_promoted`], loading the guest's KVM module with `kvm_module_options` before
    /// its libvirtd starts (a guest whose libvirtd runs already keeps its module as it is). The
    /// connection is whatever [`Guests::promote`] gives, kept until this cache is dropped.
    pub fn connect_promoted_with(
        &self,
        addr: &ResourceAddr,
        guest: PromotedGuest<'_>,
        kvm_module_options: &BTreeMap<String, String>,
    ) -> Result<Arc<dyn Hypervisor>, ProviderError> {
        running(self.reach_promoted(addr, guest, kvm_module_options, Reach::Promote)?)
    }

    /// [`Hosts::connect_promoted_with`], or with [`Reach::AsItIs`] only the hypervisor that runs
    /// in the guest already (or why none does).
    fn reach_promoted(
        &self,
        addr: &ResourceAddr,
        guest: PromotedGuest<'_>,
        kvm_module_options: &BTreeMap<String, String>,
        reach: Reach,
    ) -> Result<PromotedNow, ProviderError> {
        if let Some(h) = self.get(addr) {
            return Ok(PromotedNow::Running(h));
        }
        let turn = {
            let mut promoting = self.inner.promoting.lock().unwrap_or_else(|p| p.into_inner());
            promoting.entry(addr.clone()).or_default().clone()
        };
        let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
        // Whoever held the turn before may have connected it meanwhile.
        if let Some(h) = self.get(addr) {
            return Ok(PromotedNow::Running(h));
        }
        let fail =
            |step: &str, e: String| ProviderError::op("promote", addr.to_string(), format!("{step}: {e}"));
        // A guest that is not running has no agent to wait for (seen: a plan waiting out the whole
        // agent timeout for a promoted guest someone had shut off).
        match guest.parent.read_guest(guest.id)? {
            Some(g) if g.running => {}
            Some(_) => {
                return Err(fail("reaching its agent", format!("guest `{}` is not running", guest.name)))
            }
            None => return Err(fail("reaching its agent", format!("guest `{}` does not exist", guest.name))),
        }
        let request =
            PromoteRequest { host: addr.to_string(), kvm_module_options: kvm_module_options.clone() };
        let guest_ref = GuestRef { id: guest.id, name: guest.name };
        let h = match reach {
            Reach::Promote => self.guests().promote(guest.parent, guest_ref, &request)?,
            Reach::AsItIs => match self.guests().connect_promoted(guest.parent, guest_ref, &request)? {
                PromotedNow::Running(h) => h,
                other => return Ok(other),
            },
        };
        let mut conns = self.lock();
        conns.by_uri.insert(h.uri().to_string(), h.clone());
        conns.by_addr.insert(addr.clone(), h.clone());
        conns.promoted.push(h.clone());
        Ok(PromotedNow::Running(h))
    }

    /// The connection to the `kvm_host` at `host` as `state` records it: by its URI, or (for a promoted
    /// host) through the agent of the guest it promotes, whose own host is connected first, down to
    /// level 0, each promoted on the way if its hypervisor does not run. What `exec`, `cp`, `console`
    /// and snapshots use to reach any level.
    pub fn connect_recorded(
        &self,
        state: &nestform_state::State,
        host: &ResourceAddr,
    ) -> Result<Arc<dyn Hypervisor>, ProviderError> {
        running(self.connect_recorded_at(state, host, 0, Reach::Promote)?)
    }

    /// [`Hosts::connect_recorded`] without changing anything on the way, for refresh: when a
    /// promoted host on the way has no hypervisor running (its guest restarted, or its libvirtd
    /// stopped), that is what it says, and apply starts it.
    pub fn reach_recorded(
        &self,
        state: &nestform_state::State,
        host: &ResourceAddr,
    ) -> Result<PromotedNow, ProviderError> {
        self.connect_recorded_at(state, host, 0, Reach::AsItIs)
    }

    fn connect_recorded_at(
        &self,
        state: &nestform_state::State,
        host: &ResourceAddr,
        depth: usize,
        reach: Reach,
    ) -> Result<PromotedNow, ProviderError> {
        let fail = |message: String| ProviderError::Connect { uri: host.to_string(), message };
        if depth > 32 {
            return Err(fail("its nesting does not end".into()));
        }
        if let Some(h) = self.get(host) {
            return Ok(PromotedNow::Running(h));
        }
        let r = state.resources.get(host).ok_or_else(|| fail("it is not in the state".into()))?;
        let attr = |k: &str| r.attributes.get(k).and_then(|v| v.as_str()).map(String::from);
        if let Some(uri) = attr("uri") {
            return self.connect_uri(host, &uri).map(PromotedNow::Running);
        }
        let guest: ResourceAddr = attr("guest")
            .and_then(|g| g.parse().ok())
            .ok_or_else(|| fail("the state records neither its `uri` nor its `guest`".into()))?;
        let g = state
            .resources
            .get(&guest)
            .ok_or_else(|| fail(format!("its guest `{guest}` is not in the state")))?;
        let id = g.id.clone().ok_or_else(|| fail(format!("its guest `{guest}` has no id in the state")))?;
        let name = g.attributes.get("name").and_then(|v| v.as_str()).unwrap_or(&guest.name).to_string();
        let parent_host = g.host.clone().ok_or_else(|| fail(format!("its guest `{guest}` has no host")))?;
        let parent = match self.connect_recorded_at(state, &parent_host, depth + 1, reach)? {
            PromotedNow::Running(parent) => parent,
            // Nothing runs above it, so nothing of it does either.
            _ => return Ok(PromotedNow::Stopped),
        };
        // The options last applied: a guest rebooted since gets them back before its libvirtd starts.
        let options = r
            .attributes
            .get("kvm_module_options")
            .and_then(|o| serde_json::from_value(o.clone()).ok())
            .unwrap_or_default();
        self.reach_promoted(host, PromotedGuest { parent, id: &id, name: &name }, &options, reach)
    }

    /// Remembers a guest created in this run, so a host that promotes it can find it.
    pub fn note_guest(&self, addr: &ResourceAddr, id: &str, name: &str) {
        self.lock().guests.insert(addr.clone(), (id.to_string(), name.to_string()));
    }

    /// The id and name of a guest created in this run.
    pub fn guest(&self, addr: &ResourceAddr) -> Option<(String, String)> {
        self.lock().guests.get(addr).cloned()
    }

    /// The connection most recently made for `addr`, if any.
    ///
    /// A connection that is no longer alive (a promoted host whose guest's agent session ended: the
    /// guest restarted or was stopped) is forgotten here, so the caller reaches the host afresh
    /// instead of sending calls into a dead tunnel. It stays in the drop order of promoted hosts.
    pub fn get(&self, addr: &ResourceAddr) -> Option<Arc<dyn Hypervisor>> {
        let mut conns = self.lock();
        let h = conns.by_addr.get(addr).cloned()?;
        if h.is_alive() {
            return Some(h);
        }
        tracing::debug!(host = %addr, uri = h.uri(), "the cached connection is dead; reaching the host again");
        conns.by_addr.retain(|_, c| !Arc::ptr_eq(c, &h));
        conns.by_uri.retain(|_, c| !Arc::ptr_eq(c, &h));
        None
    }

    /// Every host connected so far, by address.
    pub fn all(&self) -> BTreeMap<ResourceAddr, Arc<dyn Hypervisor>> {
        self.lock().by_addr.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conns> {
        // A panic while holding this lock cannot leave the maps half-updated (each change is one
        // insert), so a poisoned lock is still usable.
        self.inner.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use nestform_provider_memory::MemoryProvider;

    use super::*;

    #[test]
    fn caches_one_connection_per_uri() {
        let provider = MemoryProvider::new();
        let hosts = Hosts::new(provider.backends());
        let a: ResourceAddr = "kvm_host.a".parse().unwrap();
        let b: ResourceAddr = "kvm_host.b".parse().unwrap();
        let h1 = hosts.connect_uri(&a, "fake://one").unwrap();
        let h2 = hosts.connect_uri(&a, "fake://one").unwrap();
        let h3 = hosts.connect_uri(&b, "fake://one").unwrap();
        assert!(Arc::ptr_eq(&h1, &h2) && Arc::ptr_eq(&h1, &h3));
        assert_eq!(provider.connects(), 1);
        assert_eq!(hosts.all().len(), 2);
        assert_eq!(hosts.get(&a).unwrap().uri(), "fake://one");
    }

    #[test]
    fn connect_errors_are_not_cached() {
        let provider = MemoryProvider::new();
        provider.fail_on("connect", "fake://down");
        let hosts = Hosts::new(provider.backends());
        let a: ResourceAddr = "kvm_host.a".parse().unwrap();
        assert!(hosts.connect_uri(&a, "fake://down").is_err());
        assert!(hosts.get(&a).is_none());
    }

    /// `l0` at `memory://l0` with a running guest `g1`, and `kvm_host.l1` promoting it, in a state.
    fn promoted_world() -> (MemoryProvider, nestform_state::State, String) {
        use nestform_provider::Provider;
        let provider = MemoryProvider::new();
        let l0 = provider.connect("memory://l0").unwrap();
        let mut state = nestform_state::State::new();
        let owner =
            nestform_types::Owner { lineage: state.lineage.clone(), address: "nested_guest.g1".into() };
        let g1 =
            l0.create_guest(&nestform_provider::conformance::sample_guest("g1", &[], true), &owner).unwrap();
        let record = |id: &str, host: Option<&str>, level, attributes| nestform_state::ResourceState {
            id: Some(id.to_string()),
            host: host.map(|h| h.parse().unwrap()),
            level,
            attributes,
            dependencies: Default::default(),
            tainted: false,
        };
        state.resources.insert(
            "kvm_host.l0".parse().unwrap(),
            record("memory://l0", None, 0, serde_json::json!({ "uri": "memory://l0" })),
        );
        state.resources.insert(
            "nested_guest.g1".parse().unwrap(),
            record(&g1.id, Some("kvm_host.l0"), 1, serde_json::json!({ "name": "g1" })),
        );
        state.resources.insert(
            "kvm_host.l1".parse().unwrap(),
            nestform_state::ResourceState {
                id: None,
                ..record("", None, 1, serde_json::json!({ "guest": "nested_guest.g1", "nested": true }))
            },
        );
        // A guest inside `l1`, recorded when it ran.
        state.resources.insert(
            "nested_guest.inner".parse().unwrap(),
            record("inner-id", Some("kvm_host.l1"), 2, serde_json::json!({ "name": "inner" })),
        );
        (provider, state, g1.id)
    }

    #[test]
    fn refresh_starts_nothing_in_a_promoted_guest_and_the_plan_says_apply_will() {
        let (provider, state, _) = promoted_world();
        let l1: ResourceAddr = "kvm_host.l1".parse().unwrap();
        // Not promoted in this boot: reaching it as it is finds nothing running, and starts nothing.
        let hosts = Hosts::new(provider.backends());
        assert!(matches!(hosts.reach_recorded(&state, &l1).unwrap(), PromotedNow::Restarted));
        let refreshed = crate::refresh::refresh_hosts(&BTreeMap::new(), &state, &hosts);
        assert!(!refreshed.state.resources.contains_key(&l1), "refresh leaves the host for apply");
        // `g1` was not promoted in this boot (a restart, for the fake), so what ran inside is gone.
        assert!(!refreshed.state.resources.contains_key(&"nested_guest.inner".parse().unwrap()));
        assert!(refreshed.warnings.is_empty(), "{:?}", refreshed.warnings);
        let again = Hosts::new(provider.backends()).reach_recorded(&state, &l1).unwrap();
        assert!(matches!(again, PromotedNow::Restarted), "still not started: {again:?}");

        // The plan has apply start it, and says why.
        let recorded = state.clone();
        let change = crate::plan::ResourceChange {
            addr: l1.clone(),
            host: None,
            level: 1,
            action: crate::plan::Action::Create,
            restart: false,
            before: None,
            after: None,
            after_unknown: Default::default(),
            spec: None,
            id: None,
            attribute_changes: vec![],
            reasons: vec![],
            depends_on: Default::default(),
            definition_before: None,
            definition_after: None,
            timeouts: Default::default(),
        };
        let reason = crate::planner::drift::drift(
            &change,
            refreshed.state.resources.get(&l1),
            recorded.resources.get(&l1),
        );
        let Some(crate::plan::ChangeReason::Drift { detail }) = reason else { panic!("{reason:?}") };
        assert!(detail.contains("libvirt is not running in its guest"), "{detail}");

        // Once promoted (as apply does), refresh reads it again.
        let hosts = Hosts::new(provider.backends());
        hosts.connect_recorded(&state, &l1).unwrap();
        let fresh = Hosts::new(provider.backends());
        assert!(matches!(fresh.reach_recorded(&state, &l1).unwrap(), PromotedNow::Running(_)));
        let refreshed = crate::refresh::refresh_hosts(&BTreeMap::new(), &state, &fresh);
        assert!(refreshed.state.resources.contains_key(&l1));
        assert!(refreshed.facts.contains_key(&l1), "{:?}", refreshed.warnings);
    }

    #[test]
    fn a_promoted_host_whose_libvirt_stopped_keeps_what_it_holds_until_apply_starts_it() {
        let (provider, state, _) = promoted_world();
        let l1: ResourceAddr = "kvm_host.l1".parse().unwrap();
        Hosts::new(provider.backends()).connect_recorded(&state, &l1).unwrap();
        provider.stop_promoted("memory://l0/g1");
        let hosts = Hosts::new(provider.backends());
        assert!(matches!(hosts.reach_recorded(&state, &l1).unwrap(), PromotedNow::Stopped));
        let refreshed = crate::refresh::refresh_hosts(&BTreeMap::new(), &state, &hosts);
        assert!(!refreshed.state.resources.contains_key(&l1), "refresh leaves the host for apply");
        // Its guests may still be there: they keep their records, unread.
        assert!(refreshed.state.resources.contains_key(&"nested_guest.inner".parse().unwrap()));
        assert!(refreshed.warnings.is_empty(), "{:?}", refreshed.warnings);
        // Starting it is apply's: a promotion, after which it runs again.
        Hosts::new(provider.backends()).connect_recorded(&state, &l1).unwrap();
        assert!(matches!(
            Hosts::new(provider.backends()).reach_recorded(&state, &l1).unwrap(),
            PromotedNow::Running(_)
        ));
    }
}
