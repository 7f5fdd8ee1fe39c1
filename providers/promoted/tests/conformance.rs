//! The provider conformance suite over a promoted host: [`PromotedHost`] in front of a connection
//! into a guest, with that guest's agent, must behave like any other hypervisor. The connection is
//! the memory provider's and the agent is nestform's own, run in this process, so the suite runs
//! everywhere; the real promoted host (libvirtd in a lab guest, through a tunnel) is exercised by
//! `tests/promote.rs` and the CLI's nesting suite.

use std::time::Duration;

use nestform_provider::conformance;
use nestform_provider::{AgentWait, GuestRef, Hypervisor, Provider};
use nestform_provider_memory::MemoryProvider;
use nestform_provider_promoted::{PromotedHost, Promoter};

/// A promoted host over `memory://l0/g1`, running in the memory guest `g1` on `memory://l0`.
fn promoted(p: &MemoryProvider) -> PromotedHost {
    let l0 = p.connect("memory://l0").unwrap();
    let owner = conformance::sample_owner("nested_guest.g1");
    let g1 = l0.create_guest(&conformance::sample_guest("g1", &[], true), &owner).unwrap();
    let agent = nestform_agent::wait_for_agent(
        &*l0,
        GuestRef { id: &g1.id, name: "g1" },
        AgentWait::at_most(Duration::from_secs(10)),
    )
    .unwrap();
    PromotedHost::new(p.connect("memory://l0/g1").unwrap(), agent)
}

#[test]
fn a_promoted_host_passes_the_conformance_suite() {
    let p = MemoryProvider::new();
    let host = promoted(&p);
    conformance::run_on(&host);
    assert_eq!(
        host.list_owned().unwrap(),
        nestform_provider::Owned::default(),
        "the suite leaves nothing behind"
    );
}

#[test]
fn agents_reached_through_a_promoted_host_pass_the_agent_half() {
    let p = MemoryProvider::new();
    let host = promoted(&p);
    let owner = conformance::sample_owner("nested_guest.inner");
    let inner = host.create_guest(&conformance::sample_guest("inner", &[], true), &owner).unwrap();
    // The promoter's agents, the ones the CLI uses, over the promoted host's own channel.
    let guests = Promoter::new(std::sync::Arc::new(p.clone()));
    conformance::agent::run_all(&guests, &host, GuestRef { id: &inner.id, name: "inner" });
    host.stop_guest(&inner.id, Duration::ZERO).unwrap();
    conformance::agent::a_stopped_guest_times_out(&guests, &host, GuestRef { id: &inner.id, name: "inner" });
    host.delete_guest(&inner.id).unwrap();
}
