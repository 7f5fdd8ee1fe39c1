//! Reaching into guests: a guest's agent, through the connection of the host it runs on.
//!
//! The channel and the protocol are the backends' business ([`Guests::agent`](nestform_provider::Guests::agent)); this module finds a
//! guest recorded in state, reaches its host at any level, and turns the agent's facts into the
//! guest's computed attributes.

use std::sync::Arc;
use std::time::Duration;

use nestform_provider::{AgentError, AgentWait, GuestAgent, GuestFacts, GuestRef, Hypervisor};

/// Waits as `wait` says for the agent of guest `id` (named `name`) on `h`.
pub fn wait_for_agent(
    hosts: &crate::hosts::Hosts,
    h: &dyn Hypervisor,
    id: &str,
    name: &str,
    wait: AgentWait,
) -> Result<Arc<dyn GuestAgent>, AgentError> {
    hosts.guests().agent(h, GuestRef { id, name }, wait)
}

/// Whether the guest has an address other than loopback and IPv6 link-local ones.
pub fn has_address(facts: &GuestFacts) -> bool {
    !facts.usable_addresses().is_empty()
}

/// The computed attributes a guest gets from its agent: `kernel`, `addresses`, `boot_seconds`.
pub fn guest_attributes(facts: &GuestFacts, boot: Duration) -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("kernel", facts.kernel_release.clone().into()),
        ("addresses", facts.usable_addresses().into()),
        ("boot_seconds", ((boot.as_secs_f64() * 100.0).round() / 100.0).into()),
    ]
}

#[cfg(test)]
mod tests {
    use nestform_provider::{GuestRequest, Provider};
    use nestform_types::Owner;

    use super::*;

    fn guest(h: &dyn Hypervisor, running: bool) -> String {
        let req = GuestRequest {
            name: "agent-test".into(),
            vcpus: 1,
            memory_bytes: 64 << 20,
            cpu: nestform_provider::CpuRequest::HostPassthrough,
            disks: vec![],
            interfaces: vec![],
            boot: nestform_provider::BootRequest::Disk,
            running,
        };
        h.create_guest(&req, &Owner { lineage: "l".into(), address: "nested_guest.a".into() }).unwrap().id
    }

    #[test]
    fn reaches_the_agent_of_a_running_guest() {
        let p = nestform_provider_memory::MemoryProvider::new();
        let hosts = crate::hosts::Hosts::new(p.backends());
        let h = p.connect("memory://h").unwrap();
        let id = guest(&*h, true);
        let agent =
            wait_for_agent(&hosts, &*h, &id, "agent-test", AgentWait::at_most(Duration::from_secs(5)))
                .unwrap();
        let f = agent.facts().unwrap();
        let attrs = guest_attributes(&f, Duration::from_millis(1234));
        assert_eq!(attrs[0], ("kernel", f.kernel_release.clone().into()));
        assert_eq!(attrs[2], ("boot_seconds", 1.23.into()));
    }

    #[test]
    fn a_guest_whose_agent_never_answers_times_out_with_its_console() {
        let p = nestform_provider_memory::MemoryProvider::new();
        let hosts = crate::hosts::Hosts::new(p.backends());
        let h: Arc<dyn Hypervisor> = p.connect("memory://h").unwrap();
        let id = guest(&*h, false);
        let Err(err) =
            wait_for_agent(&hosts, &*h, &id, "agent-test", AgentWait::at_most(Duration::from_millis(600)))
        else {
            panic!("a stopped guest's agent answered")
        };
        let text = err.to_string();
        assert!(text.contains("did not answer within"), "{text}");
        assert!(text.contains("console ends with"), "{text}");
        let AgentError::Timeout { last_error, .. } = err else { panic!("{text}") };
        assert!(last_error.contains("not running"), "{last_error}");
    }
}
