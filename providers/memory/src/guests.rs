//! The fake's [`Guests`]: agents are nestform's real agent served in this process (see
//! `Hypervisor::open_agent` in `host`), and promoting a running guest gives a fake host of its own,
//! `memory://<parent host>/<guest name>`, sized like the guest.

use std::sync::Arc;

use nestform_provider::{
    AgentError, AgentWait, Backends, BootAssets, BootRequest, GuestAgent, GuestRef, Guests, Hypervisor,
    PromoteRequest, PromotedNow, Provider, ProviderError,
};
use nestform_types::{LabInstall, NestedGuestSpec};

use crate::MemoryProvider;

/// The URI of the fake host a guest named `guest` on `parent` becomes.
pub fn promoted_uri(parent: &str, guest: &str) -> String {
    let parent = parent.strip_prefix("memory://").unwrap_or(parent).trim_end_matches('/');
    format!("memory://{parent}/{guest}")
}

impl MemoryProvider {
    /// This fake as everything the engine needs: hosts, guests and (disk) boots.
    pub fn backends(&self) -> Backends {
        Backends {
            provider: Arc::new(self.clone()),
            guests: Arc::new(self.clone()),
            boot: Arc::new(DiskBoot),
            // Its guests' agents run commands on this machine, so the real runners measure there.
            bench: Arc::new(nestform_bench::Runners),
        }
    }
}

/// The fake's boot assets: every guest boots from its disk, and every `lab` install can boot.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskBoot;

impl BootAssets for DiskBoot {
    fn check(&self, _install: &LabInstall) -> Result<(), nestform_provider::BoxError> {
        Ok(())
    }

    fn boot(
        &self,
        _spec: &NestedGuestSpec,
        _level: u32,
    ) -> Result<Option<BootRequest>, nestform_provider::BoxError> {
        Ok(None)
    }
}

impl MemoryProvider {
    /// The status of `guest` on `parent` when it runs and may be promoted (`fail_on("promote",
    /// name)` says it may not); else why not, as `operation` of the host it would be.
    fn running_guest(
        &self,
        operation: &'static str,
        parent: &dyn Hypervisor,
        guest: GuestRef<'_>,
        request: &PromoteRequest,
    ) -> Result<nestform_provider::GuestStatus, ProviderError> {
        let fail = |e: &str| ProviderError::op(operation, request.host.as_str(), e);
        if self.lock().fail.contains(&("promote".to_string(), guest.name.to_string())) {
            return Err(fail("injected failure"));
        }
        let status = parent.read_guest(guest.id)?.ok_or_else(|| fail("its guest does not exist"))?;
        if !status.running {
            return Err(fail("its guest is not running"));
        }
        Ok(status)
    }
}

impl Guests for MemoryProvider {
    fn agent(
        &self,
        host: &dyn Hypervisor,
        guest: GuestRef<'_>,
        wait: AgentWait,
    ) -> Result<Arc<dyn GuestAgent>, AgentError> {
        Ok(Arc::new(nestform_agent::Agent::reach(host, guest, wait)?))
    }

    /// `fail_on("promote", guest name)` makes a guest that cannot be promoted.
    fn promote(
        &self,
        parent: Arc<dyn Hypervisor>,
        guest: GuestRef<'_>,
        request: &PromoteRequest,
    ) -> Result<Arc<dyn Hypervisor>, ProviderError> {
        let status = self.running_guest("promote", &*parent, guest, request)?;
        let uri = promoted_uri(parent.uri(), &status.name);
        let name = uri.trim_start_matches("memory://").to_string();
        self.lock().sizes.entry(name).or_insert((status.vcpus, status.memory_bytes));
        let h = self.connect(&uri)?;
        if !request.kvm_module_options.is_empty() {
            h.set_kvm_module_options(&request.kvm_module_options)?;
        }
        let mut w = self.lock();
        w.stopped.remove(&uri);
        w.promoted.insert(uri);
        Ok(h)
    }

    /// A guest promoted before and not stopped since has its fake host running; one stopped since
    /// lost it, with everything on it, as a lab guest does. `fail_on("promote", guest name)` makes
    /// it unreachable here too.
    fn connect_promoted(
        &self,
        parent: Arc<dyn Hypervisor>,
        guest: GuestRef<'_>,
        request: &PromoteRequest,
    ) -> Result<PromotedNow, ProviderError> {
        let status = self.running_guest("reach", &*parent, guest, request)?;
        let uri = promoted_uri(parent.uri(), &status.name);
        let w = self.lock();
        if !w.promoted.contains(&uri) {
            return Ok(PromotedNow::Restarted);
        }
        if w.stopped.contains(&uri) {
            return Ok(PromotedNow::Stopped);
        }
        drop(w);
        self.connect(&uri).map(PromotedNow::Running)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nestform_provider::conformance::{sample_guest, sample_owner};

    use super::*;

    #[test]
    fn a_running_guest_becomes_a_host_of_its_size() {
        let p = MemoryProvider::new();
        let l0 = p.connect("memory://l0").unwrap();
        let g = l0.create_guest(&sample_guest("g1", &[], true), &sample_owner("nested_guest.g1")).unwrap();
        let request = PromoteRequest { host: "kvm_host.l1".into(), ..Default::default() };
        let now =
            |p: &MemoryProvider| p.connect_promoted(l0.clone(), GuestRef { id: &g.id, name: "g1" }, &request);
        assert!(matches!(now(&p).unwrap(), PromotedNow::Restarted));
        let l1 = p.promote(l0.clone(), GuestRef { id: &g.id, name: "g1" }, &request).unwrap();
        assert_eq!(l1.uri(), "memory://l0/g1");
        let facts = l1.facts().unwrap();
        assert_eq!((facts.cpus, facts.memory_bytes), (g.vcpus, g.memory_bytes));
        let agent = p
            .agent(&*l0, GuestRef { id: &g.id, name: "g1" }, AgentWait::at_most(Duration::from_secs(5)))
            .unwrap();
        assert!(!agent.facts().unwrap().kernel_release.is_empty());

        // Reached again without changes while it runs; a restart of its guest ends its hypervisor.
        let inner =
            l1.create_guest(&sample_guest("inner", &[], true), &sample_owner("nested_guest.inner")).unwrap();
        assert!(matches!(now(&p).unwrap(), PromotedNow::Running(_)));
        l0.stop_guest(&g.id, Duration::ZERO).unwrap();
        l0.start_guest(&g.id).unwrap();
        assert!(matches!(now(&p).unwrap(), PromotedNow::Restarted));
        assert!(l1.read_guest(&inner.id).unwrap().is_none(), "what ran inside went with the restart");
        l0.stop_guest(&g.id, Duration::ZERO).unwrap();
        let Err(err) = p.promote(l0.clone(), GuestRef { id: &g.id, name: "g1" }, &request) else { panic!() };
        assert!(err.to_string().contains("not running"), "{err}");
        p.fail_on("promote", "g1");
        let Err(err) = p.promote(l0, GuestRef { id: &g.id, name: "g1" }, &request) else { panic!() };
        assert!(err.to_string().contains("injected failure"), "{err}");
    }
}
