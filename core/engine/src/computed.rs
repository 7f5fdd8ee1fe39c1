//! The attributes apply computes, per resource type, in this version: the one table the planner
//! (which lists them as "known after apply" on create and replace) and the executor (which records
//! them in state) agree on.
//!
//! A plan must not promise what apply does not deliver: guests' `addresses`, `kernel` and
//! `boot_seconds` come from the in-guest agent, so only guests with one (`lab` installs) are promised
//! them ([`promised_attributes`]). Benchmarks stay plannable, but apply refuses them in this version;
//! `results` is what a benchmark will compute once it runs.

use nestform_types::{ResourceSpec, ResourceType};

/// What a guest's agent reports, recorded when the guest comes up.
pub const AGENT_ATTRIBUTES: [&str; 3] = ["addresses", "kernel", "boot_seconds"];

/// The attributes apply may set on a resource of type `ty` when it creates (or replaces) one, in the
/// order plans list them. Every other attribute a plan shows comes from the configuration.
pub fn computed_attributes(ty: ResourceType) -> &'static [&'static str] {
    match ty {
        // The libvirt domain UUID, and what the agent reports.
        ResourceType::NestedGuest => &["id", "addresses", "kernel", "boot_seconds"],
        // The libvirt network UUID and the bridge libvirt picked for it.
        ResourceType::NatNetwork => &["id", "bridge"],
        // What the hypervisor reports: CPUs, memory, nesting.
        ResourceType::KvmHost => &["facts"],
        ResourceType::Benchmark => &["results"],
    }
}

/// The attributes apply sets on this resource: a guest without an agent gets only its `id`.
pub fn promised_attributes(spec: &ResourceSpec) -> &'static [&'static str] {
    match spec {
        ResourceSpec::NestedGuest(g) if !g.runs_agent() => &["id"],
        other => computed_attributes(other.resource_type()),
    }
}

/// Whether apply computes `key` for a resource of type `ty`.
pub fn is_computed_attribute(ty: ResourceType, key: &str) -> bool {
    computed_attributes(ty).contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_promise_only_what_apply_sets() {
        let mut guest = nestform_types::NestedGuestSpec {
            host: "kvm_host.l0".parse().unwrap(),
            name: "g".into(),
            vcpus: 1,
            memory: nestform_types::ByteSize::mib(64),
            cpu: nestform_types::default_cpu(),
            disks: vec![],
            networks: vec![],
            running: true,
            install: None,
        };
        assert_eq!(promised_attributes(&ResourceSpec::NestedGuest(guest.clone())), ["id"]);
        guest.install = Some(nestform_types::InstallSpec::Lab(Default::default()));
        assert_eq!(
            promised_attributes(&ResourceSpec::NestedGuest(guest.clone())),
            ["id", "addresses", "kernel", "boot_seconds"]
        );
        guest.running = false;
        assert_eq!(promised_attributes(&ResourceSpec::NestedGuest(guest)), ["id"]);
        for agent in AGENT_ATTRIBUTES {
            assert!(is_computed_attribute(ResourceType::NestedGuest, agent), "{agent}");
        }
        assert_eq!(computed_attributes(ResourceType::NatNetwork), ["id", "bridge"]);
        assert!(is_computed_attribute(ResourceType::KvmHost, "facts"));
        assert!(is_computed_attribute(ResourceType::Benchmark, "results"));
    }

    #[test]
    fn computed_attributes_are_never_configured() {
        for ty in ResourceType::ALL {
            for key in computed_attributes(ty) {
                assert!(!crate::planner::is_configured(ty, key), "{ty}.{key}");
            }
        }
    }
}
