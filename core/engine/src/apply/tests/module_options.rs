//! KVM module options of a host: set only when they differ from what the module has, and never
//! under running guests.

use nestform_provider_memory::MemoryProvider;
use nestform_state::State;
use nestform_types::ResourceSpec;

use super::{addr, basic, change, host_uri, plan_of, run};
use crate::hosts::Hosts;
use crate::plan::Action;

fn host_with_options(uri: &str, options: &[(&str, &str)]) -> ResourceSpec {
    let mut spec = host_uri(uri);
    if let ResourceSpec::KvmHost(h) = &mut spec {
        h.kvm_module_options = options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvm_module_options_are_set_only_when_they_differ_and_never_under_running_guests() {
    let memory = MemoryProvider::new();
    let hosts = Hosts::new(memory.backends());
    // `nested = 1` is what the fake module has already (as `Y`): nothing to do.
    let plan = plan_of(
        "l",
        vec![change(
            "kvm_host.l0",
            Action::Create,
            Some(host_with_options("memory://k", &[("nested", "1")])),
            0,
        )],
    );
    let r = run(&plan, State::new(), &hosts).await;
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);
    assert!(
        !memory.call_log().iter().any(|c| c.starts_with("set_kvm_module_options")),
        "{:?}",
        memory.call_log()
    );

    // `ept = 1` differs: set, and the recorded facts show it.
    let plan = plan_of(
        "l",
        vec![change(
            "kvm_host.l0",
            Action::Create,
            Some(host_with_options("memory://k", &[("ept", "1")])),
            0,
        )],
    );
    let r = run(&plan, State::new(), &hosts).await;
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);
    let facts = &r.outcome.state.resources[&addr("kvm_host.l0")].attributes["facts"];
    assert_eq!(facts["kvm_parameters"]["ept"], "1", "{facts}");

    // With a guest running on the host, reloading KVM is refused and the guest is named.
    let mut plan = basic();
    plan.changes[0] = change("kvm_host.l0", Action::Create, Some(host_uri("memory://k")), 0);
    assert!(run(&plan, State::new(), &hosts).await.outcome.errors.is_empty());
    let plan = plan_of(
        "l",
        vec![change(
            "kvm_host.l0",
            Action::Update,
            Some(host_with_options("memory://k", &[("ept", "0")])),
            0,
        )],
    );
    let r = run(&plan, State::new(), &hosts).await;
    let errors: Vec<_> = r.outcome.errors.iter().map(|(_, e)| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("`g1`") && errors[0].contains("stop them first"), "{}", errors[0]);
}
