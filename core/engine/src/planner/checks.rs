//! Checks against what hosts report: a guest larger than its host, guests that together overcommit a
//! host (a warning: overcommit is legal), and guests placed on a host that promises nesting the host
//! does not have.

use std::collections::{BTreeMap, HashMap};

use nestform_provider::HostFacts;
use nestform_types::{ByteSize, InstallSpec, ResourceAddr, ResourceSpec};

use super::Problem;
use crate::graph::DesiredResource;

/// Lab guests whose kernel or modules cannot be found: an error at `lab.kernel` (or `lab.modules`,
/// or the `lab` block when both are the defaults), before anything is created. Each distinct pair of
/// paths is looked up once, however many guests share it.
pub(crate) fn lab_checks(desired: &[DesiredResource<'_>]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen: HashMap<(Option<&str>, Option<&str>), Option<String>> = HashMap::new();
    for d in desired {
        let ResourceSpec::NestedGuest(g) = d.spec else { continue };
        let Some(InstallSpec::Lab(lab)) = &g.install else { continue };
        let key = (lab.kernel.as_deref(), lab.modules.as_deref());
        let missing = seen
            .entry(key)
            .or_insert_with(|| nestform_lab::LabKernel::for_install(lab).err().map(|e| e.to_string()));
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
                    "`{}` asks for {} of memory, but `{}` has {}",
                    d.addr,
                    g.memory,
                    g.host,
                    ByteSize(f.memory_bytes)
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
                    "the running guests on `{host}` need {} of memory together, and the host has {}",
                    ByteSize(memory),
                    ByteSize(f.memory_bytes)
                ),
                "memory is overcommitted: the host may swap or kill a guest".into(),
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
