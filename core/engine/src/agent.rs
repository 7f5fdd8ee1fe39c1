//! Reaching into guests: a guest's agent, through the connection of the host it runs on.
//!
//! The channel is the provider's business (`Hypervisor::open_agent`); this module waits for the agent
//! to answer the handshake after a boot, turns its facts into the guest's computed attributes, and
//! makes the error of a guest that never came up carry the end of its console, which is where a
//! kernel panic or a failed mount shows.

use std::io;
use std::time::{Duration, Instant};

use nestform_agent::{AgentClient, ClientOptions, Facts, ShutdownHandle, Transport};
use nestform_provider::{AgentChannel, Hypervisor, ProviderError};

/// How much of the console an error shows.
const CONSOLE_TAIL_BYTES: usize = 2048;

/// What stops a guest's agent from being reached.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "the agent of guest `{guest}` did not answer within {}s (last attempt: {last_error}){}",
        waited.as_secs(),
        console.as_deref().map(|c| format!("; the guest's console ends with:\n{c}")).unwrap_or_default()
    )]
    Timeout { guest: String, waited: Duration, last_error: String, console: Option<String> },
    #[error("the agent of guest `{guest}` cannot be reached: {source}")]
    Unreachable { guest: String, source: ProviderError },
    #[error("the agent of guest `{guest}` failed: {message}")]
    Failed { guest: String, message: String },
}

/// The provider's channel as the agent client's transport.
struct Channel(AgentChannel);

impl Transport for Channel {
    type Reader = Box<dyn io::Read + Send>;
    type Writer = Box<dyn io::Write + Send>;

    fn split(self) -> io::Result<(Self::Reader, Self::Writer, ShutdownHandle)> {
        let shutdown = self.0.shutdown;
        Ok((self.0.reader, self.0.writer, ShutdownHandle::new(move || shutdown())))
    }
}

/// Connects to the agent of guest `id` (named `guest` in messages), retrying until it answers or
/// `timeout` has passed. A backend that cannot reach agents at all fails at once.
pub fn wait_for_agent(
    h: &dyn Hypervisor,
    id: &str,
    guest: &str,
    timeout: Duration,
) -> Result<AgentClient, AgentError> {
    let start = Instant::now();
    let mut last_error;
    let mut attempt = 0u32;
    loop {
        let remaining = timeout.saturating_sub(start.elapsed());
        match h.open_agent(id) {
            Ok(channel) => {
                // Short handshakes first (a guest still booting has nobody on the port, and a new open
                // ends the previous one), then longer ones: a guest deep in the nesting answers slowly,
                // and an attempt shorter than its round trip would never see the answer. At most 8 s
                // (level 3 answers in 0.3 s): a hello sent before the agent opened its port is lost, so
                // a guest that came up just after an attempt began costs the rest of that attempt.
                let patience = Duration::from_secs(1 << attempt.min(3));
                attempt += 1;
                let options =
                    ClientOptions { handshake_timeout: remaining.min(patience), ..ClientOptions::default() };
                match AgentClient::handshake_with(Channel(channel), &options) {
                    Ok(client) => {
                        tracing::debug!(guest, attempt, elapsed = ?start.elapsed(), "agent answered");
                        return Ok(client);
                    }
                    Err(e) => {
                        tracing::debug!(guest, attempt, error = %e, "agent handshake failed");
                        last_error = e.to_string()
                    }
                }
            }
            Err(source @ ProviderError::Unsupported(_)) => {
                return Err(AgentError::Unreachable { guest: guest.to_string(), source })
            }
            Err(e) => last_error = e.to_string(),
        }
        if start.elapsed() >= timeout {
            let console = h.console_tail(id, CONSOLE_TAIL_BYTES).ok().filter(|c| !c.trim().is_empty());
            return Err(AgentError::Timeout {
                guest: guest.to_string(),
                waited: start.elapsed(),
                last_error,
                console,
            });
        }
        std::thread::sleep(Duration::from_millis(250).min(remaining));
    }
}

/// A guest recorded in state, reached through its host: the connection, the guest's id and name.
pub struct GuestHandle {
    pub hypervisor: std::sync::Arc<dyn Hypervisor>,
    pub id: String,
    pub name: String,
    /// Keeps the tunnels into promoted guests open as long as the handle lives.
    _hosts: crate::hosts::Hosts,
}

/// Finds guest `addr` in `state` and connects to the host it runs on, at any nesting level.
pub fn guest_in_state(
    state: &nestform_state::State,
    addr: &nestform_types::ResourceAddr,
    hosts: &crate::hosts::Hosts,
) -> Result<GuestHandle, String> {
    use nestform_types::ResourceType;
    if addr.ty != ResourceType::NestedGuest {
        return Err(format!("`{addr}` is not a guest; give a `nested_guest` address"));
    }
    let r = state
        .resources
        .get(addr)
        .ok_or_else(|| format!("no guest `{addr}` in the state; apply the configuration first"))?;
    let id = r.id.clone().ok_or_else(|| format!("`{addr}` has no id in the state"))?;
    let name = r.attributes.get("name").and_then(|n| n.as_str()).unwrap_or(&addr.name).to_string();
    let host = r.host.as_ref().ok_or_else(|| format!("`{addr}` has no host in the state"))?;
    let hypervisor = hosts.connect_recorded(state, host).map_err(|e| e.to_string())?;
    Ok(GuestHandle { hypervisor, id, name, _hosts: hosts.clone() })
}

/// Asks the agent for its facts.
pub fn facts(client: &AgentClient, guest: &str) -> Result<Facts, AgentError> {
    client.facts().map_err(|e| AgentError::Failed { guest: guest.to_string(), message: e.to_string() })
}

/// Whether the guest has an address other than loopback and IPv6 link-local ones.
pub fn has_address(facts: &Facts) -> bool {
    facts.addresses.iter().any(|a| usable(&a.address))
}

fn usable(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => !v4.is_loopback(),
        std::net::IpAddr::V6(v6) => !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// The computed attributes a guest gets from its agent: `kernel`, `addresses`, `boot_seconds`.
pub fn guest_attributes(facts: &Facts, boot: Duration) -> Vec<(&'static str, serde_json::Value)> {
    let addresses: Vec<String> = facts
        .addresses
        .iter()
        .filter(|a| usable(&a.address))
        .map(|a| format!("{}/{}", a.address, a.prefix_len))
        .collect();
    vec![
        ("kernel", facts.kernel_release.clone().into()),
        ("addresses", addresses.into()),
        ("boot_seconds", ((boot.as_secs_f64() * 100.0).round() / 100.0).into()),
    ]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nestform_provider::{GuestRequest, Provider};
    use nestform_types::Owner;

    use super::*;

    fn guest(h: &dyn Hypervisor, running: bool) -> String {
        let req = GuestRequest {
            name: "agent-test".into(),
            vcpus: 1,
            memory_bytes: 64 << 20,
            cpu: nestform_provider::CpuRequest::HostPassthrough,
            disks: vec![],
            interfaces: vec![],
            boot: nestform_provider::BootRequest::Disk,
            running,
        };
        h.create_guest(&req, &Owner { lineage: "l".into(), address: "nested_guest.a".into() }).unwrap().id
    }

    #[test]
    fn reaches_the_agent_of_a_running_guest() {
        let p = nestform_provider_memory::MemoryProvider::new();
        let h = p.connect("memory://h").unwrap();
        let id = guest(&*h, true);
        let client = wait_for_agent(&*h, &id, "agent-test", Duration::from_secs(5)).unwrap();
        let f = facts(&client, "agent-test").unwrap();
        let attrs = guest_attributes(&f, Duration::from_millis(1234));
        assert_eq!(attrs[0], ("kernel", f.kernel_release.clone().into()));
        assert_eq!(attrs[2], ("boot_seconds", 1.23.into()));
    }

    #[test]
    fn a_guest_whose_agent_never_answers_times_out_with_its_console() {
        let p = nestform_provider_memory::MemoryProvider::new();
        let h: Arc<dyn Hypervisor> = p.connect("memory://h").unwrap();
        let id = guest(&*h, false);
        let Err(err) = wait_for_agent(&*h, &id, "agent-test", Duration::from_millis(600)) else {
            panic!("a stopped guest's agent answered")
        };
        let text = err.to_string();
        assert!(text.contains("did not answer within"), "{text}");
        assert!(text.contains("console ends with"), "{text}");
        let AgentError::Timeout { last_error, .. } = err else { panic!("{text}") };
        assert!(last_error.contains("not running"), "{last_error}");
    }
}
