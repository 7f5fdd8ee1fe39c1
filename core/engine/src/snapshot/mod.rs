//! `nestform snapshot`: snapshotting or reverting a guest that may have guests inside it.
//!
//! Snapshotting (or migrating) a guest while guests run inside it crashes them or fails, so this
//! module does the safe dance, from the state alone (no configuration is needed, like `exec`):
//!
//! 1. Check everything first: the address is a guest in the state, the name is a valid snapshot
//!    name, `create` is not given a name that exists, `revert` is not given one that does not; every
//!    host of the guest's subtree (guests on `kvm_host`s promoted from it, recursively) is reachable.
//! 2. Stop the running guests inside, deepest first, the way apply stops them
//!    ([`crate::apply::stop_cleanly`]: a lab guest is flushed through its agent, then powered off).
//! 3. Choose how: offline (clean shutdown, snapshot of the disks, start again) when a disk has
//!    `cache = "unsafe"` (only a clean shutdown gets its data to the disk) or when the guest is a lab
//!    guest (QEMU refuses to save the memory of a guest with a mounted 9p share, and a lab guest's
//!    root is one); live otherwise. `revert` stops the guest when the snapshot is offline.
//! 4. Start the inner guests again, shallowest first, and wait for their agents; a promoted guest
//!    that was restarted gets its libvirtd started again.
//!
//! A lab guest's root is a tmpfs overlay, so the libvirt objects inside it (its guests, their
//! networks and volumes) do not survive its restart. This module reports them as lost instead of
//! recreating them: recreating needs the configuration and is a plan the user should see, and the
//! planner already sees them as drift, so `nestform apply` brings them back.

mod tree;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nestform_provider::{BoxError, Hypervisor, ProviderError, SnapshotInfo, SnapshotMode};
use nestform_state::State;
use nestform_types::{ByteSize, Owner, ResourceAddr, ResourceType};

use crate::hosts::Hosts;
use crate::refresh::set_attr;
use tree::{cannot_snapshot, member, offline_reason, subtree, Member};

/// What went wrong; nothing was changed unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("`{0}` is not a guest; give a `nested_guest` address")]
    NotAGuest(ResourceAddr),
    #[error("no guest `{0}` in the state; apply the configuration first")]
    NotInState(ResourceAddr),
    #[error("the state records no {what} for `{addr}`; run `nestform apply` first")]
    Incomplete { addr: ResourceAddr, what: &'static str },
    #[error("`{name}` is not a valid snapshot name: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("`{guest}` already has a snapshot `{name}`; pick another name or delete it with `nestform snapshot delete {guest} {name}`")]
    Exists { guest: ResourceAddr, name: String },
    #[error("`{guest}` has no snapshot `{name}`; {}", known_names(.known))]
    Unknown { guest: ResourceAddr, name: String, known: Vec<String> },
    #[error("`{guest}` cannot be snapshotted: {why}")]
    CannotSnapshot { guest: ResourceAddr, why: String },
    #[error("cannot reach the host of `{addr}`: {source}")]
    Unreachable { addr: ResourceAddr, source: ProviderError },
    #[error("{step} `{addr}` failed: {source}{}", stopped_note(.stopped))]
    Failed {
        addr: ResourceAddr,
        step: &'static str,
        #[source]
        source: BoxError,
        stopped: Vec<ResourceAddr>,
    },
    /// The lock, reading the state before, or saving it after.
    #[error(transparent)]
    State(#[from] crate::workdir::EngineError),
}

fn known_names(known: &[String]) -> String {
    if known.is_empty() {
        "it has none".into()
    } else {
        format!("it has `{}`", known.join("`, `"))
    }
}

fn stopped_note(stopped: &[ResourceAddr]) -> String {
    if stopped.is_empty() {
        return String::new();
    }
    let names: Vec<String> = stopped.iter().map(|a| format!("`{a}`")).collect();
    format!("; still stopped: {}; `nestform apply` starts them again", names.join(", "))
}

/// One step of the dance, for progress lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Stop,
    Snapshot(SnapshotMode),
    Revert,
    Start,
    /// libvirtd started again in a restarted promoted guest.
    StartLibvirt,
    /// Gone with the restart of the lab guest it lived in.
    Lost,
}

/// Progress: a step starts (`done` is `None`) or finishes after `done`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotEvent {
    pub addr: ResourceAddr,
    pub step: Step,
    pub done: Option<Duration>,
}

/// How to run.
#[derive(Clone)]
pub struct SnapshotOptions {
    /// How long a guest that is not a lab guest gets to shut down before it is powered off.
    pub stop_timeout: Duration,
    /// How long a started guest's agent gets to answer.
    pub agent_wait: nestform_provider::AgentWait,
    /// A new, empty connection cache: a restarted promoted guest's old tunnel is dead, so it is
    /// reached again through fresh connections. The CLI gives `Hosts::new(backends)`.
    pub fresh_hosts: Arc<dyn Fn() -> Hosts + Send + Sync>,
}

/// What a `create` or `revert` did.
#[derive(Debug)]
pub struct SnapshotOutcome {
    /// The state with the guest's record refreshed (running, CPUs, memory, agent facts); save it.
    pub state: State,
    pub mode: SnapshotMode,
    /// Why that mode, for people.
    pub reason: String,
    /// The snapshot taken (`create`) or reverted to.
    pub snapshot: SnapshotInfo,
    /// Guests and networks that lived inside a restarted lab guest and are gone; `nestform apply`
    /// recreates them.
    pub lost: Vec<ResourceAddr>,
}

/// Checks that `name` is a snapshot name nestform makes: letters, digits, `.`, `_`, `-`, starting
/// with a letter or digit, at most 64 characters (a name that is also safe in paths and shells).
pub fn validate_name(name: &str) -> Result<(), SnapshotError> {
    let bad = |why| Err(SnapshotError::InvalidName { name: name.to_string(), why });
    if name.is_empty() || name.len() > 64 {
        return bad("it must have 1 to 64 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("it must start with a letter or a digit");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return bad("use only letters, digits, `.`, `_` and `-`");
    }
    Ok(())
}

/// The guest and its subtree, connected, with who runs: everything checked before anything changes.
struct Prepared {
    members: Vec<Member>,
    conns: BTreeMap<ResourceAddr, Arc<dyn Hypervisor>>,
    running: BTreeSet<ResourceAddr>,
    snapshots: Vec<SnapshotInfo>,
}

fn prepare(state: &State, hosts: &Hosts, guest: &ResourceAddr) -> Result<Prepared, SnapshotError> {
    let members = subtree(state, guest)?;
    let mut conns = BTreeMap::new();
    let mut running = BTreeSet::new();
    for m in &members {
        // A guest inside a guest that is off is off too, and its host cannot be reached.
        if m.parent.as_ref().is_some_and(|p| !running.contains(p)) {
            continue;
        }
        let unreachable = |source| SnapshotError::Unreachable { addr: m.addr.clone(), source };
        let h = hosts.connect_recorded(state, &m.host).map_err(unreachable)?;
        let status = h.read_guest(&m.id).map_err(unreachable)?;
        if status.is_some_and(|s| s.running) {
            running.insert(m.addr.clone());
        }
        conns.insert(m.addr.clone(), h);
    }
    let target = &members[0];
    let h = &conns[&target.addr];
    let snapshots = h
        .list_snapshots(&target.id)
        .map_err(|source| SnapshotError::Unreachable { addr: target.addr.clone(), source })?;
    Ok(Prepared { members, conns, running, snapshots })
}

/// Runs steps and reports them; remembers what it stopped so a failure can say so.
struct Dance<'a> {
    state: &'a State,
    /// How agents are reached (the connections themselves are looked up per step).
    hosts: &'a Hosts,
    opts: &'a SnapshotOptions,
    progress: &'a dyn Fn(SnapshotEvent),
    stopped: Vec<ResourceAddr>,
}

impl Dance<'_> {
    fn step<T>(
        &mut self,
        addr: &ResourceAddr,
        step: Step,
        verb: &'static str,
        f: impl FnOnce() -> Result<T, BoxError>,
    ) -> Result<T, SnapshotError> {
        (self.progress)(SnapshotEvent { addr: addr.clone(), step: step.clone(), done: None });
        let started = Instant::now();
        let out = f().map_err(|source| SnapshotError::Failed {
            addr: addr.clone(),
            step: verb,
            source,
            stopped: self.stopped.clone(),
        })?;
        (self.progress)(SnapshotEvent { addr: addr.clone(), step, done: Some(started.elapsed()) });
        Ok(out)
    }

    fn stop(&mut self, h: &dyn Hypervisor, m: &Member) -> Result<(), SnapshotError> {
        let timeout = self.opts.stop_timeout;
        self.step(&m.addr, Step::Stop, "stopping", || {
            Ok(crate::apply::stop_cleanly(self.hosts, h, &m.id, &m.name, m.lab, timeout)?)
        })?;
        self.stopped.push(m.addr.clone());
        Ok(())
    }

    /// Starts a guest and, for a lab guest, waits for its agent; returns its agent's attributes.
    fn start(
        &mut self,
        h: &dyn Hypervisor,
        m: &Member,
    ) -> Result<Vec<(&'static str, serde_json::Value)>, SnapshotError> {
        let wait = self.opts.agent_wait;
        let attrs = self.step(&m.addr, Step::Start, "starting", || {
            let started = Instant::now();
            h.start_guest(&m.id)?;
            if !m.lab {
                return Ok(Vec::new());
            }
            let client = crate::agent::wait_for_agent(self.hosts, h, &m.id, &m.name, wait)?;
            let facts = client.facts()?;
            Ok(crate::agent::guest_attributes(&facts, started.elapsed()))
        })?;
        self.stopped.retain(|a| a != &m.addr);
        Ok(attrs)
    }

    /// Starts libvirtd again in each promoted host of a restarted guest, through fresh connections.
    fn repromote(&mut self, m: &Member, fresh: &Hosts) -> Result<(), SnapshotError> {
        let state = self.state;
        for host in &m.promoted_as {
            self.step(host, Step::StartLibvirt, "starting libvirtd in", || {
                Ok(fresh.connect_recorded(state, host).map(drop)?)
            })?;
        }
        Ok(())
    }
}

/// What to do between stopping the guests inside and starting them again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'n> {
    /// Take snapshot `NAME`.
    Create(&'n str),
    /// Bring the guest back to snapshot `NAME`; its record in the returned state is refreshed.
    Revert(&'n str),
}

/// [`run`] as a command does it: the state lock of `workdir` held throughout, its state read first
/// and the refreshed one saved after.
pub fn run_in(
    workdir: &crate::workdir::Workdir,
    hosts: &Hosts,
    guest: &ResourceAddr,
    action: Action<'_>,
    opts: &SnapshotOptions,
    progress: &dyn Fn(SnapshotEvent),
) -> Result<SnapshotOutcome, SnapshotError> {
    let verb = match action {
        Action::Create(_) => "snapshot create",
        Action::Revert(_) => "snapshot revert",
    };
    let _lock = workdir.lock(verb)?;
    let state = workdir.state()?;
    let mut outcome = run(&state, hosts, guest, action, opts, progress)?;
    workdir.store().save(&mut outcome.state).map_err(crate::workdir::EngineError::from)?;
    Ok(outcome)
}

/// Creates or reverts to a snapshot of `guest`, stopping the guests inside it first (deepest
/// first) and starting them after (shallowest first).
pub fn run(
    state: &State,
    hosts: &Hosts,
    guest: &ResourceAddr,
    action: Action<'_>,
    opts: &SnapshotOptions,
    progress: &dyn Fn(SnapshotEvent),
) -> Result<SnapshotOutcome, SnapshotError> {
    let name = match action {
        Action::Create(n) | Action::Revert(n) => n,
    };
    validate_name(name)?;
    let p = prepare(state, hosts, guest)?;
    let existing = p.snapshots.iter().find(|s| s.name == name).cloned();
    let target = p.members[0].clone();
    let was_running = p.running.contains(&target.addr);
    let (mode, reason) = match (&action, &existing) {
        (Action::Create(_), Some(_)) => {
            return Err(SnapshotError::Exists { guest: guest.clone(), name: name.to_string() })
        }
        (Action::Revert(_), None) => {
            let known = p.snapshots.iter().map(|s| s.name.clone()).collect();
            return Err(SnapshotError::Unknown { guest: guest.clone(), name: name.to_string(), known });
        }
        (Action::Create(_), None) if cannot_snapshot(state, &target).is_some() => {
            let why = cannot_snapshot(state, &target).unwrap_or_default();
            return Err(SnapshotError::CannotSnapshot { guest: guest.clone(), why });
        }
        (Action::Create(_), None) => match offline_reason(state, &target, was_running) {
            Some(why) => (SnapshotMode::Offline, why),
            None => (SnapshotMode::Live, "the guest keeps running; its memory is in the snapshot".into()),
        },
        (Action::Revert(_), Some(s)) if s.running => {
            (SnapshotMode::Live, "the snapshot holds the guest's memory; it resumes where it was".into())
        }
        (Action::Revert(_), Some(_)) => {
            (SnapshotMode::Offline, "the snapshot was taken with the guest shut off".into())
        }
    };

    let mut dance = Dance { state, hosts, opts, progress, stopped: Vec::new() };
    // Deepest first: a guest is stopped only when nothing runs inside it any more.
    let mut inner: Vec<&Member> = p.members[1..].iter().filter(|m| p.running.contains(&m.addr)).collect();
    inner.sort_by_key(|m| std::cmp::Reverse(m.depth));
    for m in &inner {
        dance.stop(&*p.conns[&m.addr], m)?;
    }
    let h = p.conns[&target.addr].clone();
    let restart_target = was_running && mode == SnapshotMode::Offline;
    if restart_target {
        dance.stop(&*h, &target)?;
    }

    let owner = Owner { lineage: state.lineage.clone(), address: guest.to_string() };
    let taken = match action {
        Action::Create(name) => dance.step(guest, Step::Snapshot(mode), "snapshotting", || {
            Ok(h.create_snapshot(&target.id, name, mode, &owner)?)
        }),
        Action::Revert(name) => dance
            .step(guest, Step::Revert, "reverting", || Ok(h.revert_snapshot(&target.id, name)?))
            .map(|()| existing.clone().expect("checked above")),
    };

    // Whether or not that worked, what was stopped is started again. A live revert brings the guest
    // back running by itself (a new boot, as far as its guests care).
    let reverted = matches!(action, Action::Revert(_)) && taken.is_ok();
    let restarted = Restarted {
        start_target: restart_target || (was_running && reverted),
        target: restart_target || (reverted && taken.as_ref().is_ok_and(|s| s.running)),
    };
    let back = dance.bring_back(&p, restarted);
    let snapshot = taken.map_err(|e| match e {
        SnapshotError::Failed { addr, step, source, .. } => {
            SnapshotError::Failed { addr, step, source, stopped: dance.stopped.clone() }
        }
        other => other,
    })?;
    let (mut new_state, lost) = back?;
    if let Ok(Some(status)) = h.read_guest(&target.id) {
        let memory = ByteSize(status.memory_bytes).to_string();
        record(
            &mut new_state,
            guest,
            &[("running", status.running.into()), ("vcpus", status.vcpus.into()), ("memory", memory.into())],
        );
    }
    Ok(SnapshotOutcome { state: new_state, mode, reason, snapshot, lost })
}

/// What happened to the guest itself between stopping and starting.
#[derive(Clone, Copy)]
struct Restarted {
    /// It was stopped (or reverted while running) and must be started and waited for.
    start_target: bool,
    /// It booted anew, so whatever lived in its memory is gone and its tunnels are dead.
    target: bool,
}

impl Dance<'_> {
    /// Starts the guest and its inner guests again, shallowest first, and returns the state with the
    /// guest's agent facts and what was lost. A guest whose enclosing lab guest restarted went with
    /// its tmpfs root and is only reported.
    fn bring_back(
        &mut self,
        p: &Prepared,
        r: Restarted,
    ) -> Result<(State, Vec<ResourceAddr>), SnapshotError> {
        let (state, opts) = (self.state, self.opts);
        let target = &p.members[0];
        let mut new_state = state.clone();
        let mut restarted: BTreeSet<ResourceAddr> = BTreeSet::new();
        let mut fresh: Option<Hosts> = None;
        if r.start_target {
            let attrs = self.start(&*p.conns[&target.addr], target)?;
            record(&mut new_state, &target.addr, &attrs);
        }
        if r.target {
            restarted.insert(target.addr.clone());
            let f = fresh.get_or_insert_with(|| (opts.fresh_hosts)());
            self.repromote(target, f)?;
        }
        let mut lost = Vec::new();
        let is_lab = |a: &ResourceAddr| p.members.iter().any(|x| &x.addr == a && x.lab);
        for m in &p.members[1..] {
            let parent = m.parent.as_ref().expect("inner guests have a parent");
            if lost.contains(parent) || (restarted.contains(parent) && is_lab(parent)) {
                lost.push(m.addr.clone());
                continue;
            }
            if !p.running.contains(&m.addr) {
                continue;
            }
            // The old connection still works unless the guest it goes through restarted.
            let h = if restarted.contains(parent) {
                let f = fresh.get_or_insert_with(|| (opts.fresh_hosts)());
                f.connect_recorded(state, &m.host)
                    .map_err(|source| SnapshotError::Unreachable { addr: m.addr.clone(), source })?
            } else {
                p.conns[&m.addr].clone()
            };
            self.start(&*h, m)?;
            restarted.insert(m.addr.clone());
            let f = fresh.get_or_insert_with(|| (opts.fresh_hosts)());
            self.repromote(m, f)?;
        }
        // Networks on the promoted hosts of lost or restarted lab guests are gone with them.
        let gone_hosts: BTreeSet<&ResourceAddr> = p
            .members
            .iter()
            .filter(|m| m.lab && (restarted.contains(&m.addr) || lost.contains(&m.addr)))
            .flat_map(|m| &m.promoted_as)
            .collect();
        for (a, res) in &state.resources {
            if a.ty == ResourceType::NatNetwork && res.host.as_ref().is_some_and(|h| gone_hosts.contains(h)) {
                lost.push(a.clone());
            }
        }
        for a in &lost {
            (self.progress)(SnapshotEvent { addr: a.clone(), step: Step::Lost, done: None });
            // Gone is not stopped: `apply` recreates them rather than starting them.
            self.stopped.retain(|s| s != a);
        }
        Ok((new_state, lost))
    }
}

/// Sets attributes of `addr`'s record in `state`.
fn record(state: &mut State, addr: &ResourceAddr, attrs: &[(&str, serde_json::Value)]) {
    if let Some(r) = state.resources.get_mut(addr) {
        for (k, v) in attrs {
            set_attr(&mut r.attributes, k, v.clone());
        }
    }
}

/// The guest's snapshots, oldest first.
pub fn list(state: &State, hosts: &Hosts, guest: &ResourceAddr) -> Result<Vec<SnapshotInfo>, SnapshotError> {
    let m = member(state, guest, None, 0)?;
    let unreachable = |source| SnapshotError::Unreachable { addr: guest.clone(), source };
    let h = hosts.connect_recorded(state, &m.host).map_err(unreachable)?;
    h.list_snapshots(&m.id).map_err(unreachable)
}

/// Deletes snapshot `name` of `guest`; the guest itself is not touched.
pub fn delete(state: &State, hosts: &Hosts, guest: &ResourceAddr, name: &str) -> Result<(), SnapshotError> {
    let known: Vec<String> = list(state, hosts, guest)?.into_iter().map(|s| s.name).collect();
    if !known.iter().any(|k| k == name) {
        return Err(SnapshotError::Unknown { guest: guest.clone(), name: name.to_string(), known });
    }
    let m = member(state, guest, None, 0)?;
    let h = hosts
        .connect_recorded(state, &m.host)
        .map_err(|source| SnapshotError::Unreachable { addr: guest.clone(), source })?;
    h.delete_snapshot(&m.id, name).map_err(|e| SnapshotError::Failed {
        addr: guest.clone(),
        step: "deleting a snapshot of",
        source: e.into(),
        stopped: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
