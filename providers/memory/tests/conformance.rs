//! The provider conformance suite against the in-memory fake.

use nestform_provider::conformance;
use nestform_provider::{GuestRef, Provider};
use nestform_provider_memory::MemoryProvider;

#[test]
fn memory_provider_passes_the_conformance_suite() {
    conformance::run_all(&MemoryProvider::new(), "memory://conformance");
}

#[test]
fn the_suite_leaves_nothing_behind() {
    let p = MemoryProvider::new();
    conformance::run_all(&p, "memory://clean");
    let h = p.connect("memory://clean").unwrap();
    assert_eq!(h.list_owned().unwrap(), nestform_provider::Owned::default());
    assert_eq!(p.volumes("clean"), None, "the pool must go with the last volume");
}

#[test]
fn a_failing_check_still_cleans_up() {
    let p = MemoryProvider::new();
    let h = p.connect("memory://fail").unwrap();
    // A check that registers what it creates with the guard, then fails.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cleanup = conformance::Cleanup::new(&*h);
        let net = h
            .create_network(&conformance::sample_network("x"), &conformance::sample_owner("nat_network.x"))
            .unwrap();
        cleanup.network(&net.id);
        panic!("a check failed");
    }));
    assert!(result.is_err());
    assert_eq!(
        h.list_owned().unwrap(),
        nestform_provider::Owned::default(),
        "the guard deletes what the check created"
    );
}

#[test]
fn memory_agents_pass_the_agent_half_of_the_suite() {
    let p = MemoryProvider::new();
    let h = p.connect("memory://agents").unwrap();
    let owner = conformance::sample_owner("nested_guest.agent");
    let running = h.create_guest(&conformance::sample_guest("agent", &[], true), &owner).unwrap();
    conformance::agent::run_all(&p, &*h, GuestRef { id: &running.id, name: "agent" });
    let stopped = h.create_guest(&conformance::sample_guest("off", &[], false), &owner).unwrap();
    conformance::agent::a_stopped_guest_times_out(&p, &*h, GuestRef { id: &stopped.id, name: "off" });
}
