//! Promoted hosts: a running lab guest made a hypervisor, reached at any depth through nestform's
//! agents, and the engine's [`Guests`] for real guests.
//!
//! ```text
//!   Promoter::promote(parent, guest)
//!     1. Agent::reach(parent, guest)        the guest's agent, over the parent's agent channel
//!     2. promote::start_libvirt(agent)      KVM ready, libvirtd and virtlogd started in the guest
//!     3. LibvirtTunnel::open(agent)         a local socket relayed to the guest's libvirt socket
//!     4. provider.connect(tunnel URI)       an ordinary libvirt connection, through the tunnel
//!     5. PromotedHost                       that connection + the guest's agent: a Hypervisor
//! ```
//!
//! - [`promote`]: libvirtd started inside a running lab guest, through its agent only.
//! - [`tunnel`]: a local unix socket that reaches that libvirtd through the agent's relay.
//! - [`host`]: [`PromotedHost`], the [`Hypervisor`] the engine gets: the libvirt connection with a
//!   limit on every call, plus the guest's agent for what a libvirt connection into a guest cannot
//!   see (its KVM module, its guests' console logs). It owns its tunnel.
//! - [`kvm_options`]: the guest's KVM vendor module read and reloaded with `kvm_module_options`.
//! - [`console`]: the console logs of a promoted guest's own guests, read through its agent.
//!
//! The connection through the tunnel comes from the [`Provider`] this is made with (libvirt's, in the
//! CLI), so nothing here speaks libvirt's protocol: the crate needs only the agent's client.

pub mod console;
pub mod host;
pub mod kvm_options;
pub mod promote;
pub mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use nestform_agent::{Agent, AgentClient};
use nestform_provider::{
    AgentError, AgentWait, GuestAgent, GuestRef, Guests, Hypervisor, PromoteRequest, PromotedNow, Provider,
    ProviderError,
};

pub use host::PromotedHost;
use nestform_provider::progress::step;
use promote::PromoteOptions;
use tunnel::LibvirtTunnel;

/// How long a promoted guest's agent gets to answer, and its libvirtd to start.
const PROMOTE_AGENT_WAIT: AgentWait = AgentWait::at_most(Duration::from_secs(180));

/// How long the first calls of a new connection to a promoted guest's libvirtd (which has answered
/// already) may take before that libvirtd counts as hung.
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// The engine's [`Guests`] for real guests: agents reached over each host's agent channel, lab
/// guests promoted by starting libvirtd in them, and connected to through `provider`.
#[derive(Clone)]
pub struct Promoter {
    provider: Arc<dyn Provider>,
}

impl Promoter {
    /// Connects through tunnels with `provider`.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Promoter { provider }
    }
}

impl Guests for Promoter {
    fn agent(
        &self,
        host: &dyn Hypervisor,
        guest: GuestRef<'_>,
        wait: AgentWait,
    ) -> Result<Arc<dyn GuestAgent>, AgentError> {
        Ok(Arc::new(Agent::reach(host, guest, wait)?))
    }

    fn promote(
        &self,
        parent: Arc<dyn Hypervisor>,
        guest: GuestRef<'_>,
        request: &PromoteRequest,
    ) -> Result<Arc<dyn Hypervisor>, ProviderError> {
        let addr = &request.host;
        let fail =
            |step: &str, e: String| ProviderError::op("promote", addr.as_str(), format!("{step}: {e}"));
        let start = std::time::Instant::now();
        let options =
            PromoteOptions { kvm_module_options: request.kvm_module_options.clone(), ..Default::default() };
        // Twice at most: seen in CI at level 1, a step's answer never came back over the agent
        // channel. The steps are idempotent, so a new channel repeats them.
        let mut tries = 0;
        let client = loop {
            tries += 1;
            step(if tries == 1 {
                "reaching the guest's agent"
            } else {
                "reaching the agent once more (a step's answer was lost)"
            });
            let client = nestform_agent::wait_for_agent(&*parent, guest, PROMOTE_AGENT_WAIT)
                .map_err(|e| fail("reaching its agent", e.chain()))?;
            tracing::debug!(host = %addr, elapsed = ?start.elapsed(), "promoted guest's agent answered");
            match promote::start_libvirt(&client, &options) {
                Ok(_) => break client,
                Err(e) if e.agent_stalled() && tries == 1 => {
                    tracing::warn!(host = %addr, error = %e, "the agent channel stalled while promoting; once more");
                }
                Err(e) => return Err(fail("starting libvirtd in the guest", e.to_string())),
            }
        };
        self.connected(addr, client, &options, true)
    }

    fn connect_promoted(
        &self,
        parent: Arc<dyn Hypervisor>,
        guest: GuestRef<'_>,
        request: &PromoteRequest,
    ) -> Result<PromotedNow, ProviderError> {
        let addr = &request.host;
        let fail = |step: &str, e: String| ProviderError::op("reach", addr.as_str(), format!("{step}: {e}"));
        let options =
            PromoteOptions { kvm_module_options: request.kvm_module_options.clone(), ..Default::default() };
        let client = nestform_agent::wait_for_agent(&*parent, guest, PROMOTE_AGENT_WAIT)
            .map_err(|e| fail("reaching its agent", e.chain()))?;
        match promote::promoted_now(&client, &options).map_err(|e| fail("asking the guest", e.to_string()))? {
            promote::Now::Running => self.connected(addr, client, &options, false).map(PromotedNow::Running),
            now => {
                tracing::debug!(host = %addr, ?now, "libvirtd does not run in the guest; left to apply");
                Ok(if now == promote::Now::Stopped { PromotedNow::Stopped } else { PromotedNow::Restarted })
            }
        }
    }
}

impl Promoter {
    /// The promoted host of the guest `client` talks to, whose libvirtd runs: a tunnel to it, a
    /// connection through the tunnel, and a way to connect again when a call stalls. With
    /// `restart`, a libvirtd that does not answer a new connection is restarted (a change: never for
    /// a plan); without, that is an error.
    fn connected(
        &self,
        addr: &str,
        client: AgentClient,
        options: &PromoteOptions,
        restart: bool,
    ) -> Result<Arc<dyn Hypervisor>, ProviderError> {
        let fail = |step: &str, e: String| ProviderError::op("promote", addr, format!("{step}: {e}"));
        let start = std::time::Instant::now();
        step("opening a tunnel to its libvirtd");
        let tunnel =
            LibvirtTunnel::open(&client).map_err(|e| fail("opening a tunnel to it", e.to_string()))?;
        tracing::debug!(host = %addr, elapsed = ?start.elapsed(), "libvirtd in the guest answers, tunnel open");
        step("connecting to its libvirtd through the tunnel");
        let h = connect_answering(&self.provider, &tunnel.uri(), &client, options, restart)
            .map_err(|e| fail("connecting through the tunnel", e))?;
        tracing::debug!(host = %addr, elapsed = ?start.elapsed(), "connected through the tunnel");
        // A call that stalls later gets a new connection through the same tunnel.
        let reconnect = {
            let (provider, uri, client, options) =
                (Arc::clone(&self.provider), tunnel.uri(), client.clone(), options.clone());
            let addr = addr.to_string();
            Box::new(move || {
                connect_answering(&provider, &uri, &client, &options, restart)
                    .map_err(|e| ProviderError::op("reconnect to", addr.as_str(), e))
            })
        };
        Ok(Arc::new(PromotedHost::new(h, client).reconnecting(reconnect).owning(tunnel)))
    }
}

/// `provider.connect(uri)` on a thread of its own, given up on after `patience` (`None`); a call given
/// up on ends when its connection does.
fn connect_within(
    provider: &Arc<dyn Provider>,
    uri: &str,
    patience: Duration,
) -> Option<Result<Arc<dyn Hypervisor>, ProviderError>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (provider, uri) = (Arc::clone(provider), uri.to_string());
    std::thread::spawn(move || {
        let _ = tx.send(provider.connect(&uri));
    });
    rx.recv_timeout(patience).ok()
}

/// A connection to the libvirtd inside the guest `client` talks to, through the tunnel at `uri`. A
/// libvirtd that does not answer a new connection's first calls within [`CONNECT_PATIENCE`] (seen at
/// level 1: `virConnectGetDomainCapabilities` never returned, though it had answered `virsh
/// version`) is restarted when `restart` allows, which also ends the call left waiting, and
/// connected to once more.
fn connect_answering(
    provider: &Arc<dyn Provider>,
    uri: &str,
    client: &AgentClient,
    options: &PromoteOptions,
    restart: bool,
) -> Result<Arc<dyn Hypervisor>, String> {
    match connect_within(provider, uri, CONNECT_PATIENCE) {
        Some(result) => result.map_err(|e| e.to_string()),
        None if !restart => Err(format!(
            "libvirtd in the guest does not answer a new connection within {}s; `nestform apply` restarts it",
            CONNECT_PATIENCE.as_secs()
        )),
        None => {
            // Where the connection's bytes are (each agent stream: sent, received, credit), and what
            // libvirtd in the guest is doing, before the restart makes it all go away.
            tracing::warn!(
                uri,
                streams = %nestform_agent::mux::describe_all(),
                libvirtd = %promote::libvirtd_now(client),
                "libvirtd in the guest does not answer a new connection; restarting it"
            );
            step("restarting its libvirtd (a new connection got no answer)");
            promote::restart_libvirt(client, options)
                .map_err(|e| format!("restarting libvirtd in the guest: {e}"))?;
            match connect_within(provider, uri, options.ready_timeout) {
                Some(result) => result.map_err(|e| e.to_string()),
                None => Err("libvirtd in the guest did not answer, even after a restart".into()),
            }
        }
    }
}

/// An agent served in this process over a socket pair, for tests: its commands run on this machine.
#[cfg(test)]
pub(crate) fn local_agent() -> AgentClient {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let config = Arc::new(nestform_agent::agent::AgentConfig::default());
    std::thread::spawn(move || {
        let _ = nestform_agent::serve_session(theirs, &config);
    });
    AgentClient::handshake(ours).unwrap()
}
