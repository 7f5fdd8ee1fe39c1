//! Runs one operation against its host (blocking provider calls) and says how state changes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nestform_provider::{Hypervisor, ProviderError};
use nestform_state::{ResourceState, State};
use nestform_types::{Owner, ResourceAddr, ResourceSpec, ResourceType};

use super::ops::{ChangeIndex, HostKind, Op, OpKind, View};
use nestform_provider::progress::step;
use nestform_provider::{AgentError, GuestCommand};

use super::ApplyError;

use crate::agent;
use crate::hosts::{Hosts, PromotedGuest};
use crate::plan::{Plan, ResourceChange};
use crate::refresh::set_attr;
use crate::request::{guest_request, network_request};

/// How one finished operation changes state.
#[derive(Debug)]
pub(crate) enum StateUpdate {
    /// The resource is (re)created or updated: record it as this.
    Put(ResourceAddr, ResourceState),
    /// The resource is gone.
    Remove(ResourceAddr),
    /// Nothing to record (stop, start).
    Nothing,
}

impl StateUpdate {
    /// The resource the update is about.
    pub fn addr(&self) -> Option<&ResourceAddr> {
        match self {
            StateUpdate::Put(addr, _) | StateUpdate::Remove(addr) => Some(addr),
            StateUpdate::Nothing => None,
        }
    }

    /// Applies the update; true when state changed.
    pub fn apply_to(self, state: &mut State) -> bool {
        match self {
            StateUpdate::Put(addr, r) => {
                state.resources.insert(addr, r);
                true
            }
            StateUpdate::Remove(addr) => state.resources.remove(&addr).is_some(),
            StateUpdate::Nothing => false,
        }
    }
}

/// What every operation needs: the plan, the state as it was before apply (for recorded hosts, ids and
/// network names) and the connections.
pub(crate) struct Context {
    pub plan: Plan,
    pub before: State,
    pub hosts: Hosts,
    pub stop_timeout: Duration,
    /// How long a booted guest's agent gets to answer.
    pub agent_wait: nestform_provider::AgentWait,
    pub index: ChangeIndex,
    /// What every benchmark sample of this apply carries as `run_id`: one per apply.
    pub run_id: String,
}

impl Context {
    /// Runs `op`. Blocking: call it from `spawn_blocking`. A failure may still change state (a guest
    /// created whose agent never answered is recorded, tainted), so the error carries an update too.
    /// A benchmark's run reads its targets' records from `now`, the state as the apply left it.
    pub fn run(
        &self,
        op: &Op,
        now: impl FnOnce() -> State,
    ) -> Result<StateUpdate, (StateUpdate, ApplyError)> {
        let c = &self.plan.changes[op.change];
        if let (Some(ResourceSpec::Benchmark(spec)), false) = (&c.spec, op.kind.is_down()) {
            return self.measure(c, spec, &now());
        }
        // Swept: the outer guest's delete (done before this one) took it along; nothing is left to
        // ask of the hosts inside, which are gone with it.
        if op.swept_by.is_some() {
            return Ok(StateUpdate::Remove(c.addr.clone()));
        }
        self.run_change(op.kind, c).map_err(|f| match f {
            Failure::Plain(e) => (StateUpdate::Nothing, e),
            Failure::Recorded(update, e) => (update, e),
        })
    }

    fn run_change(&self, kind: OpKind, c: &ResourceChange) -> Result<StateUpdate, Failure> {
        let view = View::with_index(&self.plan, &self.before, &self.index);
        let owner = Owner { lineage: self.plan.lineage.clone(), address: c.addr.to_string() };
        // Stop and Delete act on the resource where it was recorded; the others where it will be.
        let host = || self.host(&view, &c.addr, !kind.is_down());
        match (&c.spec, kind) {
            (_, OpKind::Delete) => {
                if let Some(id) = &c.id {
                    match c.addr.ty {
                        ResourceType::NestedGuest => match c.timeouts.delete() {
                            None => host()?.delete_guest(id)?,
                            Some(limit) => delete_within(host()?, id, &c.addr, limit)?,
                        },
                        ResourceType::NatNetwork => host()?.delete_network(id)?,
                        // A level-0 host and a benchmark leave nothing on any host to delete.
                        _ => {}
                    }
                }
                Ok(StateUpdate::Remove(c.addr.clone()))
            }
            // Only guests run; a network or host "restarted" with its guest comes back by itself.
            (_, OpKind::Stop | OpKind::Start) if c.addr.ty != ResourceType::NestedGuest => {
                Ok(StateUpdate::Nothing)
            }
            (_, OpKind::Stop) => {
                let (h, id) = (host()?, self.id(c)?);
                let timeout = c.timeouts.update().unwrap_or(self.stop_timeout);
                stop_cleanly(&self.hosts, &*h, id, &c.addr.to_string(), is_lab(c), timeout)?;
                Ok(StateUpdate::Nothing)
            }
            (_, OpKind::Start) => {
                let (h, id) = (host()?, self.id(c)?);
                let started = Instant::now();
                h.start_guest(id)?;
                // A started lab guest is ready when its agent answers, as after a create.
                if let Some(ResourceSpec::NestedGuest(spec)) = &c.spec {
                    if has_agent(spec) {
                        let wait = self.agent_wait_for(&view, c, c.timeouts.update());
                        self.agent_attributes(&*h, id, spec, wait, started).map_err(|source| {
                            Failure::Plain(ApplyError::Start { guest: spec.name.clone(), source })
                        })?;
                    }
                }
                Ok(StateUpdate::Nothing)
            }
            (Some(ResourceSpec::NestedGuest(spec)), OpKind::Create | OpKind::Update) => {
                let mut req = guest_request(spec, |n| view.network_name(n));
                if let Some(boot) =
                    self.hosts.boot().boot(spec, c.level).map_err(|source| {
                        Failure::Plain(ApplyError::Boot { guest: spec.name.clone(), source })
                    })?
                {
                    req.boot = boot;
                }
                let h = host()?;
                let started = Instant::now();
                let status = if kind == OpKind::Create {
                    step("defining and starting the guest");
                    let status = h.create_guest(&req, &owner)?;
                    tracing::debug!(guest = %c.addr, id = %status.id, running = status.running, "guest defined");
                    self.hosts.note_guest(&c.addr, &status.id, &status.name);
                    // A guest counts as created when its agent answers; one that never does is
                    // recorded tainted, so the next plan replaces it.
                    if has_agent(spec) {
                        let mut computed = vec![("id", status.id.clone().into())];
                        let wait = self.agent_wait_for(&view, c, c.timeouts.create());
                        match self.agent_attributes(&*h, &status.id, spec, wait, started) {
                            Ok(attrs) => computed.extend(attrs),
                            Err(e) => {
                                let mut update = self.put(c, status.id.clone(), &computed);
                                if let StateUpdate::Put(_, r) = &mut update {
                                    r.tainted = true;
                                }
                                return Err(Failure::Recorded(update, e.into()));
                            }
                        }
                        return Ok(self.put(c, status.id.clone(), &computed));
                    }
                    status
                } else {
                    let id = self.id(c)?;
                    let status = h.update_guest(id, &req, &owner)?;
                    // A restart update has its own Stop and Start; a live one brings `running` about here.
                    if !c.restart && req.running && !status.running {
                        h.start_guest(id)?;
                    } else if !c.restart && !req.running && status.running {
                        h.stop_guest(id, self.stop_timeout)?;
                    }
                    status
                };
                Ok(self.put(c, status.id.clone(), &[("id", status.id.into())]))
            }
            (Some(ResourceSpec::NatNetwork(spec)), OpKind::Create | OpKind::Update) => {
                let req = network_request(spec);
                let h = host()?;
                // libvirt cannot change a network's addressing in place: an update defines it anew
                // under the same name (guests keep their interfaces, which name the network).
                if let (OpKind::Update, Some(id)) = (kind, &c.id) {
                    h.delete_network(id)?;
                }
                let status = h.create_network(&req, &owner)?;
                let bridge = status.bridge.clone().map(Into::into).unwrap_or(serde_json::Value::Null);
                Ok(self.put(c, status.id.clone(), &[("id", status.id.into()), ("bridge", bridge)]))
            }
            (Some(ResourceSpec::KvmHost(spec)), OpKind::Create | OpKind::Update) => {
                let h = self.connect_host(&view, &c.addr, true, 0)?;
                step("reading the host's facts");
                let mut facts = h.facts()?;
                // The provider refuses while guests run; it is asked only when something differs (a
                // promoted host got its options when it was promoted, before its libvirtd started).
                let wanted = crate::kvm::differing(&facts, &spec.kvm_module_options);
                if !wanted.is_empty() {
                    h.set_kvm_module_options(&spec.kvm_module_options)?;
                    facts = h.facts()?;
                }
                let facts = serde_json::to_value(facts).unwrap_or_default();
                Ok(self.put(c, h.uri().to_string(), &[("facts", facts)]))
            }
            (spec, kind) => Err(Failure::Plain(ApplyError::Provider(ProviderError::Unsupported(format!(
                "{kind} of `{}` ({})",
                c.addr,
                spec.as_ref().map_or("no configuration", |s| s.resource_type().as_str())
            ))))),
        }
    }

    /// Waits for the agent of a guest at nesting `level` that was just started (at `started`) and
    /// returns the attributes its facts give.
    fn agent_attributes(
        &self,
        h: &dyn Hypervisor,
        id: &str,
        spec: &nestform_types::NestedGuestSpec,
        wait: nestform_provider::AgentWait,
        started: Instant,
    ) -> Result<Vec<(&'static str, serde_json::Value)>, AgentError> {
        step("booting, until its agent answers");
        let client = agent::wait_for_agent(&self.hosts, h, id, &spec.name, wait)?;
        let boot = started.elapsed();
        step("reading its facts and addresses");
        // The agent answers as soon as it runs; DHCP may still be under way. A guest on networks gets
        // a little while for its addresses, so state records them.
        let mut facts = client.facts()?;
        let deadline = Instant::now() + ADDRESS_WAIT;
        while !spec.networks.is_empty() && !agent::has_address(&facts) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            facts = client.facts()?;
        }
        Ok(agent::guest_attributes(&facts, boot))
    }

    /// How long the agent of the guest of `c` gets once started: the limit its `timeouts` block
    /// writes (`written`), else the default, which grows with its level and with every level below
    /// it that its host emulates ([`slowness`]). The console's quiet time stays within the limit.
    fn agent_wait_for(
        &self,
        view: &View<'_>,
        c: &ResourceChange,
        written: Option<Duration>,
    ) -> nestform_provider::AgentWait {
        let default = self.agent_wait.at_level(slowness(view, &self.plan, &c.addr, c.level));
        match written {
            Some(limit) => nestform_provider::AgentWait { quiet: default.quiet.min(limit), limit },
            None => default,
        }
    }

    /// The hypervisor of the host `addr` lives on, after the plan or as recorded.
    pub(super) fn host(
        &self,
        view: &View<'_>,
        addr: &ResourceAddr,
        after: bool,
    ) -> Result<Arc<dyn Hypervisor>, ProviderError> {
        let not_found = |what: String| ProviderError::Connect { uri: addr.to_string(), message: what };
        let host = view.host_of(addr, after).ok_or_else(|| not_found("it has no `kvm_host`".into()))?;
        self.connect_host(view, &host, after, 0)
    }

    /// The connection to the `kvm_host` at `host`: by URI at level 0; for a promoted host, through the
    /// agent of the guest it promotes, whose own host is connected first (recursively, down to level 0).
    fn connect_host(
        &self,
        view: &View<'_>,
        host: &ResourceAddr,
        after: bool,
        depth: usize,
    ) -> Result<Arc<dyn Hypervisor>, ProviderError> {
        let not_found = |what: String| ProviderError::Connect { uri: host.to_string(), message: what };
        if depth > 32 {
            return Err(not_found(
                "its nesting does not end (a promoted guest that runs inside itself?)".into(),
            ));
        }
        match view.host_kind(host, after).or_else(|| view.host_kind(host, !after)) {
            Some(HostKind::Uri(uri)) => self.hosts.connect_uri(host, &uri),
            Some(HostKind::Promoted(g)) => {
                if let Some(h) = self.hosts.get(host) {
                    return Ok(h);
                }
                let parent_host = view
                    .host_of(&g, after)
                    .or_else(|| view.host_of(&g, !after))
                    .ok_or_else(|| not_found(format!("the guest `{g}` it promotes has no `kvm_host`")))?;
                let parent = self.connect_host(view, &parent_host, after, depth + 1)?;
                let (id, name) = self
                    .hosts
                    .guest(&g)
                    .or_else(|| {
                        let r = self.before.resources.get(&g)?;
                        let name = r.attributes.get("name")?.as_str()?.to_string();
                        Some((r.id.clone()?, name))
                    })
                    .ok_or_else(|| not_found(format!("the guest `{g}` it promotes does not exist yet")))?;
                let options = match self.index.get(host).and_then(|&i| self.plan.changes[i].spec.as_ref()) {
                    Some(ResourceSpec::KvmHost(h)) => h.kvm_module_options.clone(),
                    _ => Default::default(),
                };
                self.hosts.connect_promoted_with(
                    host,
                    PromotedGuest { parent, id: &id, name: &name },
                    &options,
                )
            }
            None => Err(not_found(format!("`{host}` is neither in the plan nor in state"))),
        }
    }

    fn id<'c>(&self, c: &'c ResourceChange) -> Result<&'c str, ProviderError> {
        c.id.as_deref()
            .ok_or_else(|| ProviderError::op("find", c.addr.to_string(), "the plan has no id for it"))
    }

    /// The state record of a created or updated resource: the configured attributes (the spec, with
    /// the plan's `after` over it) plus the computed ones.
    pub(super) fn put(
        &self,
        c: &ResourceChange,
        id: String,
        computed: &[(&str, serde_json::Value)],
    ) -> StateUpdate {
        let mut attributes =
            c.spec.as_ref().map(|s| serde_json::Value::Object(s.attributes())).unwrap_or_default();
        if let Some(serde_json::Value::Object(after)) = &c.after {
            for (k, v) in after {
                set_attr(&mut attributes, k, v.clone());
            }
        }
        for (k, v) in computed {
            set_attr(&mut attributes, k, v.clone());
        }
        let host = c.host.clone().or_else(|| c.spec.as_ref()?.host().cloned());
        let mut dependencies = c.depends_on.clone();
        dependencies.extend(host.clone());
        let tainted = false;
        StateUpdate::Put(
            c.addr.clone(),
            ResourceState { id: Some(id), host, level: c.level, attributes, dependencies, tainted },
        )
    }
}

/// Stops guest `id` (named `name` in messages) cleanly. A lab guest's first process is the agent,
/// which no ACPI button reaches, and its root is a tmpfs: flushing its disks through the agent
/// (`sync`) is all a clean shutdown needs, then it is powered off. Any other guest gets `timeout` to
/// shut down. Also what `nestform snapshot` stops guests with.
pub(crate) fn stop_cleanly(
    hosts: &Hosts,
    h: &dyn Hypervisor,
    id: &str,
    name: &str,
    lab: bool,
    timeout: Duration,
) -> Result<(), ProviderError> {
    let timeout = if lab {
        // Best effort: a guest whose agent does not answer is stopped all the same, as a plain
        // power-off would.
        if let Ok(client) = agent::wait_for_agent(
            hosts,
            h,
            id,
            name,
            nestform_provider::AgentWait::at_most(Duration::from_secs(5)),
        ) {
            let _ = client.run(&GuestCommand::new(["sync"]).timeout(Duration::from_secs(30)));
        }
        Duration::from_secs(2)
    } else {
        timeout
    };
    h.stop_guest(id, timeout)
}

/// How slow the guest at `addr` (at nesting `level`) is to boot, as a multiple of a level-1 guest on KVM: its nesting
/// level, plus one for every host under it (its own, and each below) that emulates its guests (TCG)
/// by the facts the plan recorded. A level runs on the one below it, and each exit of its guest goes
/// through every level under it; an emulated one is slower again.
pub(crate) fn slowness(view: &View<'_>, plan: &Plan, addr: &ResourceAddr, level: u32) -> u32 {
    let mut emulated = 0;
    let mut at = view.host_of(addr, true);
    for _ in 0..32 {
        let Some(host) = at else { break };
        if plan.hosts.get(&host).and_then(|f| f.acceleration.as_deref()) == Some("tcg") {
            emulated += 1;
        }
        at = match view.host_kind(&host, true) {
            Some(HostKind::Promoted(g)) => view.host_of(&g, true),
            _ => None,
        };
    }
    level.max(1) + emulated
}

/// Deletes guest `id` on `h`, giving up after `limit` (its `timeouts.delete`): libvirt's call cannot
/// be cancelled, so it is left to finish on its own thread, and the guest stays in state, so the next
/// apply deletes it (or finds it gone).
fn delete_within(
    h: Arc<dyn Hypervisor>,
    id: &str,
    addr: &ResourceAddr,
    limit: Duration,
) -> Result<(), ProviderError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = id.to_string();
    std::thread::spawn(move || {
        let _ = tx.send(h.delete_guest(&owned));
    });
    match rx.recv_timeout(limit) {
        Ok(result) => result,
        Err(_) => Err(ProviderError::op(
            "delete",
            addr.to_string(),
            format!(
                "it was not deleted within {} (its `timeouts.delete`); the call on its host goes on, \
                 and the guest stays in state so that the next apply deletes it",
                nestform_provider::guest::human_duration(limit)
            ),
        )),
    }
}

/// How long a booted guest on networks gets to have an address before its facts are recorded.
const ADDRESS_WAIT: Duration = Duration::from_secs(15);

/// Why an operation failed: with nothing to record, or after something that state must still record.
pub(crate) enum Failure {
    Plain(ApplyError),
    Recorded(StateUpdate, ApplyError),
}

impl From<ProviderError> for Failure {
    fn from(e: ProviderError) -> Self {
        Failure::Plain(e.into())
    }
}

/// Guests with an agent inside: those nestform installs itself (`lab`), which start it at boot.
fn has_agent(spec: &nestform_types::NestedGuestSpec) -> bool {
    spec.runs_agent()
}

/// Whether the change is about a lab guest, by its configuration or, for a guest only restarted, by
/// what state recorded.
fn is_lab(c: &ResourceChange) -> bool {
    match &c.spec {
        Some(ResourceSpec::NestedGuest(g)) => g.is_lab(),
        _ => [&c.before, &c.after].into_iter().flatten().any(nestform_types::is_lab_attributes),
    }
}
