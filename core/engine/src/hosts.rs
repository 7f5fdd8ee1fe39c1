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

use nestform_provider::{Hypervisor, Provider, ProviderError};
use nestform_types::{KvmHostSpec, ResourceAddr};

/// Thread-safe cache of hypervisor connections, keyed by URI.
#[derive(Clone)]
pub struct Hosts {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Arc<dyn Provider>,
    // One mutex for both maps: they change together, and the lock is never held across a provider call.
    conns: Mutex<Conns>,
}

#[derive(Default)]
struct Conns {
    by_uri: BTreeMap<String, Arc<dyn Hypervisor>>,
    by_addr: BTreeMap<ResourceAddr, Arc<dyn Hypervisor>>,
}

impl Hosts {
    /// An empty cache that opens connections through `provider`.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Hosts { inner: Arc::new(Inner { provider, conns: Mutex::new(Conns::default()) }) }
    }

    /// The connection to the `kvm_host` at `addr`, opened on first use.
    ///
    /// Only hosts given by `uri` (level 0) can be reached; a promoted host (`guest = ...`) is reached
    /// through the nestform agent inside that guest, which a later version adds.
    pub fn connect(
        &self,
        addr: &ResourceAddr,
        spec: &KvmHostSpec,
    ) -> Result<Arc<dyn Hypervisor>, ProviderError> {
        match (&spec.uri, &spec.guest) {
            (Some(uri), _) => self.connect_uri(addr, uri),
            (None, Some(guest)) => Err(promoted_error(addr, guest)),
            (None, None) => Err(ProviderError::Connect {
                uri: addr.to_string(),
                message: "the host has neither `uri` nor `guest`".to_string(),
            }),
        }
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
        let fresh = self.inner.provider.connect(uri)?;
        let mut conns = self.lock();
        let h = conns.by_uri.entry(uri.to_string()).or_insert(fresh).clone();
        conns.by_addr.insert(addr.clone(), h.clone());
        Ok(h)
    }

    /// The connection most recently made for `addr`, if any.
    pub fn get(&self, addr: &ResourceAddr) -> Option<Arc<dyn Hypervisor>> {
        self.lock().by_addr.get(addr).cloned()
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

/// The error for a host that is a promoted guest.
pub(crate) fn promoted_error(addr: &ResourceAddr, guest: &ResourceAddr) -> ProviderError {
    ProviderError::Connect {
        uri: addr.to_string(),
        message: format!(
            "the host is the promoted guest `{guest}`; promoted hosts are reached through the nestform agent, \
             which a later version adds"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::fake::FakeProvider;

    fn uri_spec(uri: &str) -> KvmHostSpec {
        KvmHostSpec { uri: Some(uri.into()), guest: None, nested: false, kvm_module_options: BTreeMap::new() }
    }

    #[test]
    fn caches_one_connection_per_uri() {
        let provider = FakeProvider::new();
        let hosts = Hosts::new(provider.clone());
        let a: ResourceAddr = "kvm_host.a".parse().unwrap();
        let b: ResourceAddr = "kvm_host.b".parse().unwrap();
        let h1 = hosts.connect(&a, &uri_spec("fake://one")).unwrap();
        let h2 = hosts.connect(&a, &uri_spec("fake://one")).unwrap();
        let h3 = hosts.connect(&b, &uri_spec("fake://one")).unwrap();
        assert!(Arc::ptr_eq(&h1, &h2) && Arc::ptr_eq(&h1, &h3));
        assert_eq!(provider.connects(), 1);
        assert_eq!(hosts.all().len(), 2);
        assert_eq!(hosts.get(&a).unwrap().uri(), "fake://one");
    }

    #[test]
    fn refuses_promoted_hosts() {
        let hosts = Hosts::new(FakeProvider::new());
        let spec = KvmHostSpec {
            uri: None,
            guest: Some("nested_guest.g1".parse().unwrap()),
            nested: true,
            kvm_module_options: BTreeMap::new(),
        };
        let err = hosts.connect(&"kvm_host.l1".parse().unwrap(), &spec).err().unwrap();
        assert!(err.to_string().contains("promoted"), "{err}");
        assert!(hosts.get(&"kvm_host.l1".parse().unwrap()).is_none());
    }

    #[test]
    fn connect_errors_are_not_cached() {
        let provider = FakeProvider::new();
        provider.refuse_connect("fake://down");
        let hosts = Hosts::new(provider.clone());
        let a: ResourceAddr = "kvm_host.a".parse().unwrap();
        assert!(hosts.connect(&a, &uri_spec("fake://down")).is_err());
        assert!(hosts.get(&a).is_none());
    }
}
