//! What commands do inside a guest recorded in state, at any level: run a program (`nestform exec`),
//! copy a file in or out (`nestform cp`), read the end of its console (`nestform console`). Each is
//! one call: the guest is looked up in state, its host reached (through every promoted level above
//! it), its agent waited for, and the work done through [`GuestAgent`].

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use nestform_provider::{
    AgentError, CommandStatus, GuestAgent, GuestCommand, Hypervisor, OutputStream, ProviderError,
};
use nestform_state::State;
use nestform_types::{ResourceAddr, ResourceType};

use crate::hosts::Hosts;

/// Why a guest could not be reached or used.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("`{0}` is not a guest; give a `nested_guest` address")]
    NotAGuest(ResourceAddr),
    #[error("no guest `{0}` in the state; apply the configuration first")]
    NotInState(ResourceAddr),
    #[error("`{addr}` has no {what} in the state")]
    Incomplete { addr: ResourceAddr, what: &'static str },
    #[error("cannot reach the host of `{addr}`")]
    Host {
        addr: ResourceAddr,
        #[source]
        source: ProviderError,
    },
    #[error("{0}")]
    Agent(#[from] AgentError),
    #[error("running `{command}` in `{addr}` failed")]
    Run {
        addr: ResourceAddr,
        command: String,
        #[source]
        source: AgentError,
    },
    #[error("copying to or from `{addr}` failed")]
    Copy {
        addr: ResourceAddr,
        #[source]
        source: AgentError,
    },
    #[error("cannot read the console of `{addr}`")]
    Console {
        addr: ResourceAddr,
        #[source]
        source: ProviderError,
    },
}

/// A guest recorded in state, reached through its host: the connection, the guest's id and name.
pub struct GuestHandle {
    pub hypervisor: Arc<dyn Hypervisor>,
    pub id: String,
    pub name: String,
    /// Keeps the connections (and promoted hosts' tunnels) open as long as the handle lives.
    hosts: Hosts,
}

impl GuestHandle {
    /// The guest's agent, waited for up to `wait`.
    pub fn agent(&self, wait: nestform_provider::AgentWait) -> Result<Arc<dyn GuestAgent>, GuestError> {
        Ok(crate::agent::wait_for_agent(&self.hosts, &*self.hypervisor, &self.id, &self.name, wait)?)
    }
}

/// Finds guest `addr` in `state` and connects to the host it runs on, at any nesting level.
pub fn guest_in_state(state: &State, addr: &ResourceAddr, hosts: &Hosts) -> Result<GuestHandle, GuestError> {
    if addr.ty != ResourceType::NestedGuest {
        return Err(GuestError::NotAGuest(addr.clone()));
    }
    let r = state.resources.get(addr).ok_or_else(|| GuestError::NotInState(addr.clone()))?;
    let incomplete = |what| GuestError::Incomplete { addr: addr.clone(), what };
    let id = r.id.clone().ok_or_else(|| incomplete("id"))?;
    let name = r.attributes.get("name").and_then(|n| n.as_str()).unwrap_or(&addr.name).to_string();
    let host = r.host.as_ref().ok_or_else(|| incomplete("host"))?;
    let hypervisor = hosts
        .connect_recorded(state, host)
        .map_err(|source| GuestError::Host { addr: addr.clone(), source })?;
    Ok(GuestHandle { hypervisor, id, name, hosts: hosts.clone() })
}

/// Runs `command` in guest `addr` (its agent waited for up to `wait`), handing its output to
/// `output` as it comes.
pub fn exec(
    state: &State,
    hosts: &Hosts,
    addr: &ResourceAddr,
    wait: Duration,
    command: &GuestCommand,
    output: &mut dyn FnMut(OutputStream, &[u8]),
) -> Result<CommandStatus, GuestError> {
    let agent = guest_in_state(state, addr, hosts)?.agent(nestform_provider::AgentWait::at_most(wait))?;
    agent.run_streaming(command, output).map_err(|source| GuestError::Run {
        addr: addr.clone(),
        command: command.display(),
        source,
    })
}

/// Which way [`copy`] goes.
pub enum Copy<'a> {
    /// `content` to the guest's `path`, with permission bits `mode`.
    Into { path: &'a str, content: &'a mut dyn Read, mode: u32 },
    /// The guest's `path` to `out`.
    OutOf { path: &'a str, out: &'a mut dyn Write },
}

/// Copies a file into or out of guest `addr`; the bytes copied.
pub fn copy(
    state: &State,
    hosts: &Hosts,
    addr: &ResourceAddr,
    wait: Duration,
    copy: Copy<'_>,
) -> Result<u64, GuestError> {
    let agent = guest_in_state(state, addr, hosts)?.agent(nestform_provider::AgentWait::at_most(wait))?;
    let copied = match copy {
        Copy::Into { path, content, mode } => agent.put_file(path, content, mode),
        Copy::OutOf { path, out } => agent.get_file(path, out),
    };
    copied.map_err(|source| GuestError::Copy { addr: addr.clone(), source })
}

/// The last `max_bytes` of guest `addr`'s serial console log. The log is a file on the guest's
/// host: a local file at level 1, and for a guest on a promoted host a file inside the guest that
/// host runs in, read through that guest's agent.
pub fn console(
    state: &State,
    hosts: &Hosts,
    addr: &ResourceAddr,
    max_bytes: usize,
) -> Result<String, GuestError> {
    let guest = guest_in_state(state, addr, hosts)?;
    guest
        .hypervisor
        .console_tail(&guest.id, max_bytes)
        .map_err(|source| GuestError::Console { addr: addr.clone(), source })
}

#[cfg(test)]
mod tests {
    use nestform_provider::{conformance::sample_guest, Provider};
    use nestform_provider_memory::MemoryProvider;
    use nestform_state::ResourceState;
    use nestform_types::Owner;
    use serde_json::json;

    use super::*;

    /// A state with `kvm_host.l0` at `memory://l0` and `nested_guest.g` on it, running.
    fn world() -> (MemoryProvider, State) {
        let p = MemoryProvider::new();
        let h = p.connect("memory://l0").unwrap();
        let owner = Owner { lineage: "l".into(), address: "nested_guest.g".into() };
        let id = h.create_guest(&sample_guest("g", &[], true), &owner).unwrap().id;
        let mut state = State::new();
        let record = |id: &str, host: Option<&str>, attributes| ResourceState {
            id: Some(id.to_string()),
            host: host.map(|h| h.parse().unwrap()),
            level: 0,
            attributes,
            dependencies: Default::default(),
            tainted: false,
        };
        state.resources.insert(
            "kvm_host.l0".parse().unwrap(),
            record("memory://l0", None, json!({ "uri": "memory://l0" })),
        );
        state.resources.insert(
            "nested_guest.g".parse().unwrap(),
            record(&id, Some("kvm_host.l0"), json!({ "name": "g" })),
        );
        (p, state)
    }

    #[test]
    fn exec_and_copy_reach_the_guest_and_say_which_one_failed() {
        let (p, state) = world();
        let hosts = Hosts::new(p.backends());
        let g: ResourceAddr = "nested_guest.g".parse().unwrap();
        let mut out = Vec::new();
        let status = exec(
            &state,
            &hosts,
            &g,
            Duration::from_secs(5),
            &GuestCommand::new(["echo", "hi"]),
            &mut |s, b| {
                if s == OutputStream::Stdout {
                    out.extend_from_slice(b)
                }
            },
        )
        .unwrap();
        assert!(status.success() && status.elapsed.is_some(), "{status:?}");
        assert_eq!(out, b"hi\n");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut content: &[u8] = b"content";
        let into = Copy::Into { path: path.to_str().unwrap(), content: &mut content, mode: 0o600 };
        assert_eq!(copy(&state, &hosts, &g, Duration::from_secs(5), into).unwrap(), 7);
        let mut back = Vec::new();
        copy(
            &state,
            &hosts,
            &g,
            Duration::from_secs(5),
            Copy::OutOf { path: path.to_str().unwrap(), out: &mut back },
        )
        .unwrap();
        assert_eq!(back, b"content");
        let missing = Copy::OutOf { path: "/nonexistent/nestform", out: &mut back };
        let err = copy(&state, &hosts, &g, Duration::from_secs(5), missing).unwrap_err().to_string();
        assert!(err.starts_with("copying to or from `nested_guest.g` failed"), "{err}");

        let err = guest_in_state(&state, &"nested_guest.nope".parse().unwrap(), &hosts).err().unwrap();
        assert_eq!(
            err.to_string(),
            "no guest `nested_guest.nope` in the state; apply the configuration first"
        );
        let err = guest_in_state(&state, &"kvm_host.l0".parse().unwrap(), &hosts).err().unwrap();
        assert!(matches!(err, GuestError::NotAGuest(_)), "{err}");
    }
}
