//! Checks against what hosts report: a guest larger than its host, guests that together overcommit a
//! host (a warning: overcommit is legal), guests placed on a host that promises nesting the host
//! does not have, and `kvm_module_options` that would reload KVM under running guests.

use std::collections::{BTreeMap, HashMap};

use nestform_provider::{BootAssets, HostFacts};
use nestform_state::State;
use nestform_types::{ByteSize, InstallSpec, ResourceAddr, ResourceSpec, ResourceType};

use super::Problem;
use crate::graph::DesiredResource;

/// Lab guests whose kernel or modules cannot be found: an error at `lab.kernel` (or `lab.modules`,
/// or the `lab` block when both are the defaults), before anything is created. Each distinct pair of
/// paths is looked up once, however many guests share it.
pub(crate) fn lab_checks(desired: &[DesiredResource<'_>], boot: &dyn BootAssets) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen: HashMap<(Option<&str>, Option<&str>), Option<String>> = HashMap::new();
    for d in desired {
        let ResourceSpec::NestedGuest(g) = d.spec else { continue };
        let Some(InstallSpec::Lab(lab)) = &g.install else { continue };
        let key = (lab.kernel.as_deref(), lab.modules.as_deref());
        let missing = seen
            .entry(key)
            .or_insert_with(|| boot.check(lab).err().map(|e| nestform_provider::error_chain(&*e)));
        if let Some(why) = missing {
            let attr = match key {
                (Some(_), _) => "lab.kernel",
                (None, Some(_)) => "lab.modules",
                (None, None) => "lab",
            };
            problems.push(Problem::error(
                d.addr,
                attr,
                format!("`{}` cannot boot: {why}", d.addr),
                "give `lab { kernel = \"/path/to/vmlinuz\", modules = \"/path/to/lib/modules/VERSION\" }`, or run `tests/guest-kernel.sh` as root to fetch Debian's kernel".into(),
            ));
        }
    }
    problems
}

/// Problems with placing the configured guests on the hosts whose facts are known.
pub(crate) fn host_checks(
    desired: &[DesiredResource<'_>],
    facts: &BTreeMap<ResourceAddr, HostFacts>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    // Per host: running guests' vCPUs and memory, and whether any guest is placed there.
    let mut load: HashMap<&ResourceAddr, (u64, u64)> = HashMap::new();
    let mut placed: HashMap<&ResourceAddr, ()> = HashMap::new();
    for d in desired {
        let ResourceSpec::NestedGuest(g) = d.spec else { continue };
        placed.insert(&g.host, ());
        let Some(f) = facts.get(&g.host) else { continue };
        if g.vcpus > f.cpus {
            problems.push(Problem::error(
                d.addr,
                "vcpus",
                format!("`{}` asks for {} vCPUs, but `{}` has {}", d.addr, g.vcpus, g.host, f.cpus),
                format!("set `vcpus` to at most {}, or place the guest on a larger host", f.cpus),
            ));
        }
        if g.memory.bytes() > f.memory_bytes {
            problems.push(Problem::error(
                d.addr,
                "memory",
                format!(
                    "`{}` asks for {} of memory, but `{}` has {}{}",
                    d.addr,
                    g.memory,
                    g.host,
                    ByteSize(f.memory_bytes),
                    memory_source(f)
                ),
                format!(
                    "set `memory` to at most {}, or place the guest on a larger host",
                    ByteSize(f.memory_bytes)
                ),
            ));
        }
        if g.running {
            let l = load.entry(&g.host).or_default();
            l.0 += u64::from(g.vcpus);
            l.1 += g.memory.bytes();
        }
    }
    let mut hosts: Vec<_> = load.into_iter().collect();
    hosts.sort_by(|a, b| a.0.cmp(b.0));
    for (host, (vcpus, memory)) in hosts {
        let f = &facts[host];
        if vcpus > u64::from(f.cpus) {
            problems.push(Problem::warning(
                host,
                format!(
                    "the running guests on `{host}` have {vcpus} vCPUs together, and the host has {}",
                    f.cpus
                ),
                "vCPUs are overcommitted: guests share the host's CPUs and run slower".into(),
            ));
        }
        if memory > f.memory_bytes {
            problems.push(Problem::warning(
                host,
                format!(
                    "the running guests on `{host}` need {} of memory together, and the host has {}{}",
                    ByteSize(memory),
                    ByteSize(f.memory_bytes),
                    memory_source(f)
                ),
                "memory is overcommitted: the host may swap or kill a guest".into(),
            ));
        }
    }
    // A promoted guest that its host emulates (TCG) with more than one vCPU: seen on QEMU 10.0.2,
    // such a guest deadlocked once guests of its own ran (one vCPU stuck in a TLB-flush IPI that the
    // other, inside an emulated-SVM guest, never took: "soft lockup ... smp_call_function_many_cond"
    // and "rcu_preempt kthread timer wakeup didn't happen ... cpu=0" on its console); with one vCPU
    // the same lab came up.
    let promoted: HashMap<&ResourceAddr, &ResourceAddr> = desired
        .iter()
        .filter_map(|d| match d.spec {
            ResourceSpec::KvmHost(h) => h.guest.as_ref().map(|g| (g, d.addr)),
            _ => None,
        })
        .collect();
    for d in desired {
        let ResourceSpec::NestedGuest(g) = d.spec else { continue };
        let Some(host) = promoted.get(d.addr) else { continue };
        let emulated = facts.get(&g.host).and_then(|f| f.acceleration.as_deref()) == Some("tcg");
        if emulated && g.vcpus > 1 {
            problems.push(Problem::warning(
                d.addr,
                format!(
                    "`{}` is emulated (TCG) on `{}` with {} vCPUs and promoted to `{host}`: an emulated guest with \
                     more than one vCPU deadlocked once guests of its own ran",
                    d.addr, g.host, g.vcpus
                ),
                format!("set `vcpus = 1` on `{}`", d.addr),
            ));
        }
    }
    for d in desired {
        let ResourceSpec::KvmHost(h) = d.spec else { continue };
        let nesting_off = facts.get(d.addr).and_then(|f| f.nesting) == Some(false);
        if h.nested && nesting_off && placed.contains_key(d.addr) {
            let mut p = Problem::error(
                d.addr,
                "nested",
                format!("`{}` says `nested = true`, but nested virtualization is off on that host", d.addr),
                "turn nesting on where this host runs: set `kvm_module_options = { nested = 1 }` on it (or load \
                 `kvm_intel`/`kvm_amd` with `nested=1`), or set `nested = false` if its guests need not run hypervisors"
                    .into(),
            );
            p.detail = Some("guests placed on it could not run hypervisors of their own".into());
            problems.push(p);
        }
    }
    problems
}

/// " (where the figure comes from)" after a host's memory, when its provider said.
fn memory_source(f: &HostFacts) -> String {
    f.memory_source.as_deref().map(|s| format!(" ({s})")).unwrap_or_default()
}

/// `kvm_host`s, at any level, whose `kvm_module_options` differ from what their module has now while
/// guests run on them (as the refreshed `state` says): setting them reloads the module, which would
/// pull KVM from under those guests, so the plan is refused here rather than failing half-way through
/// apply. A host whose facts show no module parameters is left to apply, which knows more.
pub(crate) fn kvm_option_checks(
    desired: &[DesiredResource<'_>],
    facts: &BTreeMap<ResourceAddr, HostFacts>,
    state: &State,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for d in desired {
        let ResourceSpec::KvmHost(h) = d.spec else { continue };
        let Some(f) = facts.get(d.addr) else { continue };
        let wanted = crate::kvm::differing(f, &h.kvm_module_options);
        if wanted.is_empty() {
            continue;
        }
        if crate::kvm::emulated_without_module(f) {
            let names: Vec<String> = wanted.keys().map(|k| format!("`{k}`")).collect();
            let mut p = Problem::error(
                d.addr,
                "kvm_module_options",
                format!(
                    "`{}` has no KVM module to set {} on: its guests are emulated (TCG)",
                    d.addr,
                    names.join(", ")
                ),
                "emulated guests can nest without a module (`nested = 1` holds here); remove the other \
                 options for this host, for example by giving them through a variable"
                    .into(),
            );
            p.detail = f.acceleration_reason.clone();
            problems.push(p);
            continue;
        }
        if f.kvm_parameters.is_empty() {
            continue;
        }
        let running: Vec<String> = state
            .resources
            .iter()
            .filter(|(a, r)| a.ty == ResourceType::NestedGuest && r.host.as_ref() == Some(d.addr))
            .filter(|(_, r)| r.attributes.get("running").and_then(|v| v.as_bool()) == Some(true))
            .map(|(a, _)| format!("`{a}`"))
            .collect();
        if running.is_empty() {
            continue;
        }
        let module = f.kvm_module.as_deref().unwrap_or("the KVM module");
        let changes: Vec<String> = wanted
            .iter()
            .map(|(k, v)| {
                let now = f.kvm_parameters.get(k).map_or("(unset)", String::as_str);
                format!("`{k}` `{now}` -> `{v}`")
            })
            .collect();
        let mut p = Problem::error(
            d.addr,
            "kvm_module_options",
            format!(
                "`{}` cannot reload `{module}` to change {} while guests run on it: {}",
                d.addr,
                changes.join(", "),
                running.join(", ")
            ),
            "stop those guests first (`running = false`) and apply, then change the options; or keep \
             `kvm_module_options` as the module has them"
                .into(),
        );
        p.detail = Some("reloading the KVM module under running guests would crash them".into());
        problems.push(p);
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use nestform_state::ResourceState;
    use nestform_types::KvmHostSpec;

    use super::*;

    fn addr(s: &str) -> ResourceAddr {
        s.parse().unwrap()
    }

    fn promoted_host(options: &[(&str, &str)]) -> ResourceSpec {
        ResourceSpec::KvmHost(KvmHostSpec {
            uri: None,
            guest: Some(addr("nested_guest.guest1")),
            nested: true,
            kvm_module_options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        })
    }

    /// `kvm_host.guest1` whose module has `nested = Y`, `npt = Y`, with guest `inner` on it.
    fn check(options: &[(&str, &str)], inner_running: bool) -> Vec<Problem> {
        let host = addr("kvm_host.guest1");
        let spec = promoted_host(options);
        let none = BTreeSet::new();
        let desired = [DesiredResource { addr: &host, spec: &spec, depends_on: &none }];
        let facts = HostFacts {
            kvm_module: Some("kvm_amd".into()),
            kvm_parameters: [("nested", "Y"), ("npt", "Y")].map(|(k, v)| (k.into(), v.into())).into(),
            ..HostFacts::default()
        };
        let mut state = State::new();
        state.resources.insert(
            addr("nested_guest.inner"),
            ResourceState {
                id: Some("u-1".into()),
                host: Some(host.clone()),
                level: 2,
                attributes: serde_json::json!({ "name": "inner", "running": inner_running }),
                dependencies: BTreeSet::new(),
                tainted: false,
            },
        );
        kvm_option_checks(&desired, &BTreeMap::from([(host.clone(), facts)]), &state)
    }

    #[test]
    fn changing_options_under_running_guests_is_refused_at_the_attribute() {
        let p = check(&[("nested", "1"), ("npt", "0")], true);
        assert_eq!(p.len(), 1);
        assert!(p[0].error && p[0].attr == Some("kvm_module_options"));
        assert_eq!(
            p[0].summary,
            "`kvm_host.guest1` cannot reload `kvm_amd` to change `npt` `Y` -> `0` while guests run on it: \
             `nested_guest.inner`"
        );
        assert!(p[0].help.as_deref().unwrap().contains("stop those guests first"));
    }

    #[test]
    fn options_that_hold_or_a_host_without_running_guests_pass() {
        // `1` is the module's `Y`: nothing to reload.
        assert!(check(&[("nested", "1"), ("npt", "1")], true).is_empty());
        // Nothing runs there: apply reloads the module.
        assert!(check(&[("npt", "0")], false).is_empty());
    }
}
