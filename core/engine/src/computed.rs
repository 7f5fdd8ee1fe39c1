//! The attributes apply computes, per resource type, in this version: the one table the planner
//! (which lists them as "known after apply" on create and replace) and the executor (which records
//! them in state) agree on.
//!
//! A plan must not promise what apply does not deliver: guests' `addresses`, `kernel` and
//! `boot_seconds` come from the in-guest agent, which a later version adds, so they are not listed
//! here yet. Benchmarks stay plannable, but apply refuses them in this version; `results` is what a
//! benchmark will compute once it runs.

use nestform_types::ResourceType;

/// The attributes apply sets on a resource of type `ty` when it creates (or replaces) one, in the
/// order plans list them. Every other attribute a plan shows comes from the configuration.
pub fn computed_attributes(ty: ResourceType) -> &'static [&'static str] {
    match ty {
        // The libvirt domain UUID.
        ResourceType::NestedGuest => &["id"],
        // The libvirt network UUID and the bridge libvirt picked for it.
        ResourceType::NatNetwork => &["id", "bridge"],
        // What the hypervisor reports: CPUs, memory, nesting.
        ResourceType::KvmHost => &["facts"],
        ResourceType::Benchmark => &["results"],
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
        assert_eq!(computed_attributes(ResourceType::NestedGuest), ["id"]);
        for later in ["addresses", "kernel", "boot_seconds"] {
            assert!(!is_computed_attribute(ResourceType::NestedGuest, later), "{later}");
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
