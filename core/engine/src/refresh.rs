//! Refresh: brings state up to date with what the hosts report, before planning.
//!
//! Every level-0 `kvm_host` in configuration or state is connected and asked for its facts; every
//! network and guest in state is read by its id. A resource the host no longer has is removed from the
//! refreshed state, so the plan creates it again; one that is there gets the attributes the host
//! reports (`running`, `vcpus`, `memory`, `bridge`), so drift shows in the plan. A host that cannot be
//! reached keeps its resources exactly as state has them, with a warning: refresh never forgets
//! something only because a host was down.
//!
//! Every host refresh reaches is also asked what it owns: an object with this state's lineage that the
//! state does not record is an orphan of an interrupted apply, and is adopted ([`orphans`]).
//!
//! The provider calls block, so each host is read on its own thread (and a host's resources on a few
//! threads), all inside `std::thread::scope`: 1,000 guests refresh in the time of the slowest host.

use std::collections::{BTreeMap, BTreeSet};

use nestform_provider::{GuestStatus, HostFacts, Hypervisor, NetworkStatus, PromotedNow, ProviderError};
use nestform_state::State;
use nestform_types::{ByteSize, KvmHostSpec, ResourceAddr, ResourceSpec, ResourceType};

use crate::hosts::Hosts;

pub(crate) mod orphans;

/// Reads per thread on one host: below this a host is read on a single thread.
const READS_PER_THREAD: usize = 64;
/// Threads per host at most.
const THREADS_PER_HOST: usize = 8;

/// The result of [`refresh`]: the refreshed state, each reachable host's facts, and what could not be
/// refreshed.
#[derive(Debug)]
pub struct Refreshed {
    pub state: State,
    pub facts: BTreeMap<ResourceAddr, HostFacts>,
    pub warnings: Vec<String>,
}

/// Refreshes `state` against the hosts. `config` adds the level-0 hosts that are not in state yet
/// (their facts are needed to plan the first apply).
pub fn refresh(config: Option<&nestform_config::Config>, state: &State, hosts: &Hosts) -> Refreshed {
    let configured = config.map(configured_hosts).unwrap_or_default();
    refresh_hosts(&configured, state, hosts)
}

/// The `kvm_host` specs in a configuration.
fn configured_hosts(config: &nestform_config::Config) -> BTreeMap<ResourceAddr, KvmHostSpec> {
    config
        .resources
        .iter()
        .filter_map(|(addr, r)| match &r.spec {
            ResourceSpec::KvmHost(h) => Some((addr.clone(), h.clone())),
            _ => None,
        })
        .collect()
}

/// [`refresh`] with the configuration's `kvm_host` specs given directly.
pub fn refresh_hosts(
    configured: &BTreeMap<ResourceAddr, KvmHostSpec>,
    state: &State,
    hosts: &Hosts,
) -> Refreshed {
    refresh_sparing(configured, state, hosts, &BTreeSet::new())
}

/// The guests that a plan with `options` deletes whatever refresh finds (`destroy` of everything,
/// `-replace`): what runs inside them needs no reading, since deleting them removes it.
pub fn going(state: &State, options: &crate::planner::PlanOptions) -> BTreeSet<ResourceAddr> {
    state
        .resources
        .keys()
        .filter(|a| a.ty == ResourceType::NestedGuest)
        .filter(|a| {
            (options.destroy && options.targets.is_empty()) || options.replace.iter().any(|r| r.contains(a))
        })
        .cloned()
        .collect()
}

/// [`refresh_hosts`] that does not reach into the guests in `going` (see [`going`]): a promoted host
/// inside one of them, at any depth, is not connected, and what it holds keeps its recorded state.
/// Then a destroy never waits on a level inside what it deletes, which may be stopped, crashed or
/// wedged.
pub fn refresh_sparing(
    configured: &BTreeMap<ResourceAddr, KvmHostSpec>,
    state: &State,
    hosts: &Hosts,
    going: &BTreeSet<ResourceAddr>,
) -> Refreshed {
    let mut warnings = Vec::new();
    let jobs = plan_jobs(configured, state, &mut warnings);
    let known = orphans::known_ids(state);
    let ours = Ours { lineage: &state.lineage, known: &known };

    let results: Vec<HostResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs.iter().map(|job| scope.spawn(move || run_job(job, hosts, ours))).collect();
        handles
            .into_iter()
            .zip(&jobs)
            .map(|(h, job)| {
                h.join().unwrap_or_else(|_| {
                    let panicked = format!("refreshing `{}` panicked", job.addr);
                    HostResult { facts: Err(panicked.clone()), reads: Err(panicked), survey: None }
                })
            })
            .collect()
    });

    let mut refreshed = state.clone();
    let mut facts = BTreeMap::new();
    for (job, result) in jobs.iter().zip(results) {
        // One warning per host that cannot be reached, whichever step found it.
        let mut unreachable = false;
        match result.facts {
            Ok(Some(f)) => {
                record_facts(&mut refreshed, &job.addr, &f, configured);
                facts.insert(job.addr.clone(), f);
            }
            Ok(None) => {}
            Err(e) => {
                warnings.push(format!("cannot read the facts of `{}`: {e}", job.addr));
                unreachable = true;
            }
        }
        match result.reads {
            Ok(reads) => {
                for (addr, read) in job.resources.iter().map(|r| &r.addr).zip(reads) {
                    apply_read(&mut refreshed, addr, read, &mut warnings);
                }
            }
            Err(e) if !job.resources.is_empty() => {
                warnings.push(format!(
                    "cannot reach `{}`, its {} resource(s) keep their recorded state: {e}",
                    job.addr,
                    job.resources.len()
                ));
                unreachable = true;
            }
            Err(_) => {}
        }
        match result.survey {
            Some(Ok(survey)) => orphans::adopt(&mut refreshed, &job.addr, survey, &mut warnings),
            Some(Err(e)) if !unreachable => warnings.push(orphans::unlisted(&job.addr, &e)),
            _ => {}
        }
    }
    refresh_promoted(state, &mut refreshed, &mut facts, hosts, ours, going, &mut warnings);
    Refreshed { state: refreshed, facts, warnings }
}

/// Records a level-0 host's facts in its state, with what its KVM module has now for the configured
/// options, so a host changed outside nestform (or never set up) plans as an update of
/// `kvm_module_options`.
fn record_facts(
    state: &mut State,
    addr: &ResourceAddr,
    f: &HostFacts,
    configured: &BTreeMap<ResourceAddr, KvmHostSpec>,
) {
    let Some(r) = state.resources.get_mut(addr) else { return };
    set_attr(&mut r.attributes, "facts", serde_json::to_value(f).unwrap_or_default());
    if let Some(wanted) = configured.get(addr).map(|s| &s.kvm_module_options) {
        if !wanted.is_empty() && !f.kvm_parameters.is_empty() {
            let now = serde_json::to_value(crate::kvm::current(f, wanted)).unwrap_or_default();
            set_attr(&mut r.attributes, "kvm_module_options", now);
        }
    }
}

/// What to do on one level-0 host.
struct HostJob {
    addr: ResourceAddr,
    /// Where to read facts: the configured URI, else the recorded one.
    facts_uri: Option<String>,
    /// Where the recorded resources live: the recorded URI, else the configured one.
    state_uri: Option<String>,
    resources: Vec<ToRead>,
}

struct ToRead {
    addr: ResourceAddr,
    ty: ResourceType,
    id: String,
}

enum Read {
    Gone,
    Guest(GuestStatus),
    Network(NetworkStatus),
    Failed(String),
}

struct HostResult {
    facts: Result<Option<HostFacts>, String>,
    reads: Result<Vec<Read>, String>,
    /// What the host owns; `None` for a host with no URI to reach it by.
    survey: Option<Result<orphans::Survey, String>>,
}

/// What tells this state's objects: its lineage, and the ids it records.
#[derive(Clone, Copy)]
struct Ours<'a> {
    lineage: &'a str,
    known: &'a std::collections::HashSet<&'a str>,
}

/// The URI and promoting guest a recorded `kvm_host` has.
pub(crate) fn recorded_host(
    attrs: &serde_json::Value,
    id: Option<&str>,
) -> (Option<String>, Option<ResourceAddr>) {
    let uri = attrs.get("uri").and_then(|v| v.as_str()).or(id).map(str::to_string);
    let guest = attrs.get("guest").and_then(|v| v.as_str()).and_then(|s| s.parse().ok());
    match guest {
        Some(g) => (None, Some(g)),
        None => (uri, None),
    }
}

fn plan_jobs(
    configured: &BTreeMap<ResourceAddr, KvmHostSpec>,
    state: &State,
    warnings: &mut Vec<String>,
) -> Vec<HostJob> {
    let mut jobs: BTreeMap<ResourceAddr, HostJob> = BTreeMap::new();
    let mut promoted: BTreeMap<ResourceAddr, usize> = BTreeMap::new();
    let job = |addr: &ResourceAddr| HostJob {
        addr: addr.clone(),
        facts_uri: configured.get(addr).and_then(|s| s.uri.clone()),
        state_uri: None,
        resources: Vec::new(),
    };
    for (addr, spec) in configured {
        if spec.uri.is_some() {
            jobs.insert(addr.clone(), job(addr));
        }
    }
    for (addr, r) in &state.resources {
        if addr.ty == ResourceType::KvmHost {
            if let (Some(uri), None) = recorded_host(&r.attributes, r.id.as_deref()) {
                let j = jobs.entry(addr.clone()).or_insert_with(|| job(addr));
                j.facts_uri.get_or_insert_with(|| uri.clone());
                j.state_uri = Some(uri);
            }
        }
    }
    for (addr, r) in &state.resources {
        if !matches!(addr.ty, ResourceType::NestedGuest | ResourceType::NatNetwork) {
            continue;
        }
        let (Some(host), Some(id)) = (&r.host, &r.id) else { continue };
        match jobs.get_mut(host) {
            Some(j) => j.resources.push(ToRead { addr: addr.clone(), ty: addr.ty, id: id.clone() }),
            None if state.resources.contains_key(host) || configured.contains_key(host) => {
                *promoted.entry(host.clone()).or_default() += 1;
            }
            None => {
                warnings.push(format!("`{addr}` lives on `{host}`, which is neither in state nor configured"))
            }
        }
    }
    // Resources on promoted hosts are read afterwards, level by level (`refresh_promoted`).
    let _ = promoted;
    for j in jobs.values_mut() {
        if j.state_uri.is_none() {
            j.state_uri = j.facts_uri.clone();
        }
    }
    jobs.into_values().collect()
}

/// Promoted hosts in state, shallowest first: each is reached through the agent of the guest it
/// promotes (whose own host was refreshed before it), and its facts and resources are read like a
/// level-0 host's. A promoted host whose guest is gone is not reached: what ran inside went with it,
/// so it is gone from the refreshed state too. Nothing is started: a promoted host whose hypervisor
/// does not run is left out of the refreshed state (the plan has apply start it), and what lives
/// below it keeps its recorded state.
fn refresh_promoted(
    recorded: &State,
    refreshed: &mut State,
    facts: &mut BTreeMap<ResourceAddr, HostFacts>,
    hosts: &Hosts,
    ours: Ours<'_>,
    going: &BTreeSet<ResourceAddr>,
    warnings: &mut Vec<String>,
) {
    let mut promoted: Vec<(u32, ResourceAddr, ResourceAddr)> = recorded
        .resources
        .iter()
        .filter(|(a, _)| a.ty == ResourceType::KvmHost)
        .filter_map(|(a, r)| Some((r.level, a.clone(), recorded_host(&r.attributes, r.id.as_deref()).1?)))
        .collect();
    promoted.sort();
    let mut not_running: Vec<ResourceAddr> = Vec::new();
    for (_, host, guest) in promoted {
        if !refreshed.resources.contains_key(&guest) {
            // The guest is gone, and what ran inside it went with it (deeper promoted hosts come
            // later in this loop and find their guest gone in turn).
            if recorded.resources.contains_key(&guest) {
                refreshed.resources.retain(|a, r| {
                    !(matches!(a.ty, ResourceType::NestedGuest | ResourceType::NatNetwork)
                        && r.host.as_ref() == Some(&host))
                });
            }
            continue;
        }
        // Inside a guest the plan deletes anyway: nothing there needs reading.
        if going.iter().any(|g| promoted_in(recorded, &host, g)) {
            continue;
        }
        // Shallowest first, so a host whose parent has no hypervisor running comes after it.
        if not_running.iter().any(|stopped| promoted_under(refreshed, recorded, &host, stopped)) {
            continue;
        }
        let h = match hosts.reach_recorded(refreshed, &host) {
            Ok(PromotedNow::Running(h)) => h,
            // Nothing runs to read, and a plan starts nothing: the host leaves the refreshed state,
            // so the plan has apply start it again. What its guest's restart took with it is gone
            // (the plan creates it again); what a stopped libvirtd held keeps its recorded state.
            Ok(now) => {
                refreshed.resources.remove(&host);
                if matches!(now, PromotedNow::Restarted) {
                    refreshed.resources.retain(|a, r| {
                        !(matches!(a.ty, ResourceType::NestedGuest | ResourceType::NatNetwork)
                            && r.host.as_ref() == Some(&host))
                    });
                } else {
                    not_running.push(host);
                }
                continue;
            }
            Err(e) => {
                warnings.push(format!(
                    "cannot reach the promoted host `{host}`, its resources keep their recorded state: {e}"
                ));
                continue;
            }
        };
        match h.facts() {
            Ok(f) => {
                if let Some(r) = refreshed.resources.get_mut(&host) {
                    set_attr(&mut r.attributes, "facts", serde_json::to_value(&f).unwrap_or_default());
                }
                facts.insert(host.clone(), f);
            }
            Err(e) => warnings.push(format!("cannot read the facts of `{host}`: {e}")),
        }
        let resources: Vec<ToRead> = recorded
            .resources
            .iter()
            .filter(|(a, r)| {
                matches!(a.ty, ResourceType::NestedGuest | ResourceType::NatNetwork)
                    && r.host.as_ref() == Some(&host)
            })
            .filter_map(|(a, r)| Some(ToRead { addr: a.clone(), ty: a.ty, id: r.id.clone()? }))
            .collect();
        let reads = read_all(&*h, &resources);
        for (r, read) in resources.iter().zip(reads) {
            apply_read(refreshed, &r.addr, read, warnings);
        }
        match orphans::survey(&*h, ours.lineage, ours.known) {
            Ok(survey) => orphans::adopt(refreshed, &host, survey, warnings),
            Err(e) => warnings.push(orphans::unlisted(&host, &e)),
        }
    }
}

/// Whether the promoted host `host` runs inside the guest `guest` at any depth: it promotes a guest
/// that lives on a host `guest` promotes, or on a host inside that one, and so on.
fn promoted_in(recorded: &State, host: &ResourceAddr, guest: &ResourceAddr) -> bool {
    let mut at = host.clone();
    for _ in 0..32 {
        let Some(r) = recorded.resources.get(&at) else { return false };
        let Some(promotes) = recorded_host(&r.attributes, r.id.as_deref()).1 else { return false };
        if &promotes == guest {
            return true;
        }
        let Some(parent) = recorded.resources.get(&promotes).and_then(|g| g.host.clone()) else {
            return false;
        };
        at = parent;
    }
    false
}

/// Whether the promoted host `host` is reached through `under` (at any depth): its guest lives on
/// `under`, or on a host that is.
fn promoted_under(refreshed: &State, recorded: &State, host: &ResourceAddr, under: &ResourceAddr) -> bool {
    let mut at = host.clone();
    for _ in 0..32 {
        let Some(r) = refreshed.resources.get(&at).or_else(|| recorded.resources.get(&at)) else {
            return false;
        };
        let Some(guest) = recorded_host(&r.attributes, r.id.as_deref()).1 else { return false };
        let Some(parent) = recorded.resources.get(&guest).and_then(|g| g.host.clone()) else { return false };
        if &parent == under {
            return true;
        }
        at = parent;
    }
    false
}

fn run_job(job: &HostJob, hosts: &Hosts, ours: Ours<'_>) -> HostResult {
    let connect = |uri: &Option<String>| -> Result<std::sync::Arc<dyn Hypervisor>, String> {
        let uri = uri.as_deref().ok_or_else(|| "the host has no `uri`".to_string())?;
        hosts.connect_uri(&job.addr, uri).map_err(|e: ProviderError| e.to_string())
    };
    let facts = match &job.facts_uri {
        Some(_) => connect(&job.facts_uri).and_then(|h| h.facts().map(Some).map_err(|e| e.to_string())),
        None => Ok(None),
    };
    // Connect for the reads last so that `Hosts::get(addr)` answers the recorded host, where the
    // recorded resources are.
    let (reads, survey) = match &job.state_uri {
        None if job.resources.is_empty() => (Ok(Vec::new()), None),
        _ => match connect(&job.state_uri) {
            Ok(h) => {
                let reads = read_all(&*h, &job.resources);
                (Ok(reads), Some(orphans::survey(&*h, ours.lineage, ours.known)))
            }
            Err(e) if job.resources.is_empty() => (Ok(Vec::new()), Some(Err(e))),
            Err(e) => (Err(e.clone()), Some(Err(e))),
        },
    };
    HostResult { facts, reads, survey }
}

/// Reads every resource on one host, on a few threads when there are many.
fn read_all(host: &dyn Hypervisor, resources: &[ToRead]) -> Vec<Read> {
    let threads = resources.len().div_ceil(READS_PER_THREAD).clamp(1, THREADS_PER_HOST);
    if threads == 1 {
        return resources.iter().map(|r| read_one(host, r)).collect();
    }
    let chunk = resources.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = resources
            .chunks(chunk)
            .map(|c| scope.spawn(move || c.iter().map(|r| read_one(host, r)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .zip(resources.chunks(chunk))
            .flat_map(|(h, c)| {
                h.join()
                    .unwrap_or_else(|_| c.iter().map(|_| Read::Failed("the read panicked".into())).collect())
            })
            .collect()
    })
}

fn read_one(host: &dyn Hypervisor, r: &ToRead) -> Read {
    let result = match r.ty {
        ResourceType::NestedGuest => host.read_guest(&r.id).map(|g| g.map(Read::Guest)),
        ResourceType::NatNetwork => host.read_network(&r.id).map(|n| n.map(Read::Network)),
        _ => return Read::Failed(format!("`{}` is not read from a host", r.addr)),
    };
    match result {
        Ok(Some(read)) => read,
        Ok(None) => Read::Gone,
        Err(e) => Read::Failed(e.to_string()),
    }
}

fn apply_read(state: &mut State, addr: &ResourceAddr, read: Read, warnings: &mut Vec<String>) {
    match read {
        Read::Gone => {
            state.resources.remove(addr);
        }
        Read::Failed(e) => warnings.push(format!("cannot read `{addr}`, it keeps its recorded state: {e}")),
        Read::Guest(g) => {
            if let Some(r) = state.resources.get_mut(addr) {
                set_attr(&mut r.attributes, "running", g.running.into());
                set_attr(&mut r.attributes, "vcpus", g.vcpus.into());
                set_attr(&mut r.attributes, "memory", ByteSize(g.memory_bytes).to_string().into());
            }
        }
        Read::Network(n) => {
            if let Some(r) = state.resources.get_mut(addr) {
                if let Some(bridge) = n.bridge {
                    set_attr(&mut r.attributes, "bridge", bridge.into());
                }
            }
        }
    }
}

/// Sets one attribute, turning a non-object attribute value into an object first.
pub(crate) fn set_attr(attrs: &mut serde_json::Value, key: &str, value: serde_json::Value) {
    if !attrs.is_object() {
        *attrs = serde_json::Value::Object(Default::default());
    }
    if let Some(map) = attrs.as_object_mut() {
        map.insert(key.to_string(), value);
    }
}

#[cfg(test)]
mod tests;
