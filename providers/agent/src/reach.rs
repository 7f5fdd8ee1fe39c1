//! The host side as the engine sees it: an agent reached over a hypervisor's agent channel
//! ([`wait_for_agent`]) and served as a [`GuestAgent`] ([`Agent`]).
//!
//! The channel is the hypervisor's business (`Hypervisor::open_agent`); this module waits for the
//! agent to answer the handshake after a boot, and makes the error of a guest that never came up
//! carry the end of its console, which is where a kernel panic or a failed mount shows.

use std::io;
use std::time::{Duration, Instant};

use nestform_provider::{
    AgentChannel, AgentError, AgentWait, CommandStatus, GaveUp, GuestAddress, GuestAgent, GuestCommand,
    GuestFacts, GuestRef, Hypervisor, OutputStream, ProviderError,
};

use crate::client::{AgentClient, ClientError, ClientOptions};
use crate::transport::{ShutdownHandle, Transport};

/// How much of the console an error shows.
const CONSOLE_TAIL_BYTES: usize = 2048;

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

/// Connects to the agent of `guest` on `h`, retrying until it answers or `wait` gives up: while the
/// guest's console keeps printing, up to `wait.limit`. A backend that cannot reach agents at all
/// fails at once.
pub fn wait_for_agent(
    h: &dyn Hypervisor,
    guest: GuestRef<'_>,
    wait: AgentWait,
) -> Result<AgentClient, AgentError> {
    let GuestRef { id, name } = guest;
    let start = Instant::now();
    let mut console = Progress::new(wait.quiet, start);
    let mut last_error;
    let mut attempt = 0u32;
    loop {
        if !h.is_alive() {
            // The host's own way in ended (a promoted host whose guest reset under it): nothing of
            // this guest can answer through it, however long the wait.
            return Err(AgentError::Unreachable {
                guest: name.to_string(),
                source: ProviderError::op(
                    "reach the agent of",
                    name,
                    format!(
                        "the connection to its host `{}` ended (the guest that host runs in restarted, or its agent did), and the guest with it",
                        h.uri()
                    ),
                ),
            });
        }
        let remaining = wait.limit.saturating_sub(start.elapsed());
        match h.open_agent(id) {
            Ok(channel) => {
                // Short handshakes first (a guest still booting has nobody on the port, and a new open
                // ends the previous one), then longer ones: a guest deep in the nesting answers slowly,
                // and an attempt shorter than its round trip would never see the answer. At most 8 s
                // (level 3 answers in 0.3 s): a hello sent before the agent opened its port is lost, so
                // a guest that came up just after an attempt began costs the rest of that attempt.
                let patience = Duration::from_secs(1 << attempt.min(3));
                attempt += 1;
                let options = ClientOptions {
                    handshake_timeout: remaining.min(patience),
                    guest: name.to_string(),
                    ..ClientOptions::default()
                };
                match AgentClient::handshake_with(Channel(channel), &options) {
                    Ok(client) => {
                        tracing::debug!(guest = name, attempt, elapsed = ?start.elapsed(), "agent answered");
                        return Ok(client);
                    }
                    Err(e) => {
                        tracing::debug!(guest = name, attempt, error = %e, "agent handshake failed");
                        last_error = e.to_string()
                    }
                }
            }
            Err(source @ ProviderError::Unsupported(_)) => {
                return Err(AgentError::Unreachable { guest: name.to_string(), source })
            }
            Err(e) => last_error = e.to_string(),
        }
        let gave_up = if start.elapsed() >= wait.limit {
            Some(GaveUp::Limit)
        } else if wait.quiet < wait.limit && console.quiet_for(h, guest) >= wait.quiet {
            Some(GaveUp::Quiet(wait.quiet))
        } else {
            None
        };
        if let Some(gave_up) = gave_up {
            let console = h.console_tail(id, CONSOLE_TAIL_BYTES).ok().filter(|c| !c.trim().is_empty());
            return Err(AgentError::Timeout {
                guest: name.to_string(),
                waited: start.elapsed(),
                gave_up,
                last_error,
                console,
            });
        }
        std::thread::sleep(Duration::from_millis(250).min(remaining));
    }
}

/// How often the console is read while waiting: each read of a guest deep in the nesting is a round
/// trip through every level above it.
const CONSOLE_POLL: Duration = Duration::from_secs(5);

/// How much of the console is compared to see whether it grew: its last lines carry the kernel's
/// timestamps or init's messages, so two different readings mean new output.
const CONSOLE_PROGRESS_BYTES: usize = 256;

/// Watches a booting guest's console for new output.
struct Progress {
    quiet: Duration,
    last_change: Instant,
    last_poll: Option<Instant>,
    last: Option<String>,
}

impl Progress {
    fn new(quiet: Duration, start: Instant) -> Progress {
        Progress { quiet, last_change: start, last_poll: None, last: None }
    }

    /// How long the console of `guest` has printed nothing new, read at most every [`CONSOLE_POLL`].
    /// A console that cannot be read never counts as progress.
    fn quiet_for(&mut self, h: &dyn Hypervisor, GuestRef { id, name }: GuestRef<'_>) -> Duration {
        let now = Instant::now();
        let due = self.last_poll.is_none_or(|t| now.duration_since(t) >= CONSOLE_POLL.min(self.quiet));
        if due {
            self.last_poll = Some(now);
            match h.console_tail(id, CONSOLE_PROGRESS_BYTES) {
                Ok(tail) if !tail.is_empty() && self.last.as_deref() != Some(tail.as_str()) => {
                    let line = tail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
                    tracing::debug!(guest = name, line, "console grew");
                    self.last = Some(tail);
                    self.last_change = now;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(guest = name, error = %e, "console unreadable while waiting"),
            }
        }
        now.duration_since(self.last_change)
    }
}

/// The agent of one guest as a [`GuestAgent`]: a client and the guest's name for its errors.
#[derive(Clone)]
pub struct Agent {
    client: AgentClient,
    guest: String,
}

impl Agent {
    /// Waits for the agent of `guest` on `h` ([`wait_for_agent`]).
    pub fn reach(h: &dyn Hypervisor, guest: GuestRef<'_>, wait: AgentWait) -> Result<Agent, AgentError> {
        Ok(Agent { client: wait_for_agent(h, guest, wait)?, guest: guest.name.to_string() })
    }

    /// An agent already connected, of the guest named `guest`.
    pub fn new(client: AgentClient, guest: impl Into<String>) -> Self {
        Agent { client, guest: guest.into() }
    }

    /// The protocol client, for what only nestform's own agent does (relays to sockets in the guest).
    pub fn client(&self) -> &AgentClient {
        &self.client
    }

    fn failed(&self, e: ClientError) -> AgentError {
        AgentError::Failed { guest: self.guest.clone(), source: Box::new(e) }
    }
}

impl GuestAgent for Agent {
    fn facts(&self) -> Result<GuestFacts, AgentError> {
        let f = self.client.facts().map_err(|e| self.failed(e))?;
        Ok(GuestFacts {
            hostname: f.hostname,
            kernel_release: f.kernel_release,
            cpu_count: f.cpu_count,
            memory_bytes: f.memory_bytes,
            nesting_level: f.nesting_level,
            addresses: f
                .addresses
                .into_iter()
                .map(|a| GuestAddress {
                    interface: a.interface,
                    address: a.address,
                    prefix_len: a.prefix_len,
                })
                .collect(),
        })
    }

    fn run_streaming(
        &self,
        command: &GuestCommand,
        output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<CommandStatus, AgentError> {
        let request = command.clone();
        // Both callbacks hand their chunks to the one `output`, one at a time.
        let output = std::cell::RefCell::new(output);
        let status = self
            .client
            .exec_streaming(
                request,
                |chunk| (output.borrow_mut())(OutputStream::Stdout, chunk),
                |chunk| (output.borrow_mut())(OutputStream::Stderr, chunk),
            )
            .map_err(|e| self.failed(e))?;
        Ok(CommandStatus {
            code: status.code,
            signal: status.signal,
            timed_out: status.timed_out,
            elapsed: status.elapsed_us.map(Duration::from_micros),
        })
    }

    fn put_file(&self, path: &str, content: &mut dyn io::Read, mode: u32) -> Result<u64, AgentError> {
        self.client.put_file(path, content, mode).map(|i| i.size).map_err(|e| self.failed(e))
    }

    fn get_file(&self, path: &str, out: &mut dyn io::Write) -> Result<u64, AgentError> {
        self.client.get_file(path, out).map(|i| i.size).map_err(|e| self.failed(e))
    }
}
