//! Reaching into guests: the agent inside a running guest, a running guest made a host, and how lab
//! guests boot. The engine asks these traits; the backends under `providers/` answer them.
//!
//! ```text
//!   engine ──▶ dyn Guests ──agent(host, guest)────▶ dyn GuestAgent   facts, run (timed in the guest), files
//!                         └─promote(host, guest)──▶ dyn Hypervisor   the guest's own libvirtd, a host like any
//!          ──▶ dyn BootAssets ──boot(spec, level)──▶ BootRequest     a lab guest's kernel, initramfs, cmdline
//! ```
//!
//! - [`GuestAgent`]: nestform's agent in one guest, once it answered. Whatever the engine does inside
//!   a guest goes through it: the facts recorded after a boot, a `sync` before a lab guest is powered
//!   off, `nestform exec` and `cp`, and the benchmark runners, which need a command timed inside the
//!   guest ([`CommandStatus::elapsed`]) so that channel time through the levels never counts.
//! - [`Guests`]: how agents are reached and guests promoted. The real one waits for the agent over
//!   [`Hypervisor::open_agent`](crate::Hypervisor::open_agent) and starts libvirtd inside the guest
//!   through it; the memory provider's does the same against its fake hosts.
//! - [`BootAssets`]: what a `lab` install boots, and whether it can, checked before anything changes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use nestform_types::{LabInstall, NestedGuestSpec};

use crate::{BootRequest, Hypervisor, ProviderError};

/// A guest on a host: its id there (the libvirt UUID) and its name, for messages.
#[derive(Clone, Copy, Debug)]
pub struct GuestRef<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

/// What a guest's agent reports about the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestFacts {
    pub hostname: String,
    /// `uname -r`.
    pub kernel_release: String,
    pub cpu_count: u32,
    pub memory_bytes: u64,
    /// The nesting level the guest was booted as (`nestform.level=N`), else 0.
    pub nesting_level: u32,
    pub addresses: Vec<GuestAddress>,
}

/// One address of one of the guest's interfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestAddress {
    pub interface: String,
    pub address: std::net::IpAddr,
    pub prefix_len: u8,
}

impl GuestFacts {
    /// The addresses other than loopback and IPv6 link-local ones, as `ADDRESS/PREFIX`.
    pub fn usable_addresses(&self) -> Vec<String> {
        self.addresses
            .iter()
            .filter(|a| usable(&a.address))
            .map(|a| format!("{}/{}", a.address, a.prefix_len))
            .collect()
    }
}

fn usable(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => !v4.is_loopback(),
        std::net::IpAddr::V6(v6) => !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// A program to run in a guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestCommand {
    /// Program and arguments; `argv[0]` is looked up in the guest's `PATH`.
    pub argv: Vec<String>,
    /// Variables added to the agent's environment.
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// Bytes given to the program's stdin, which then closes; `None` gives it `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// The agent kills the program's whole process group after this long.
    pub timeout: Option<Duration>,
}

impl GuestCommand {
    pub fn new<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        GuestCommand { argv: argv.into_iter().map(Into::into).collect(), ..Self::default() }
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// The command as a person would type it, for messages.
    pub fn display(&self) -> String {
        self.argv.join(" ")
    }
}

/// Which of a program's outputs a chunk is from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// How a program in a guest ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandStatus {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// The agent killed it because its timeout ran out.
    pub timed_out: bool,
    /// From its start to its exit, on the guest's monotonic clock: what a measurement reports, since
    /// the round trip to a deep guest costs seconds of channel time. `None` from an agent that does
    /// not measure it.
    pub elapsed: Option<Duration>,
}

impl CommandStatus {
    /// Exited with code 0 and was not killed.
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
}

/// A finished program's status and everything it wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandOutput {
    pub status: CommandStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// nestform's agent in one running guest, once it answered. Blocking, like [`Hypervisor`].
pub trait GuestAgent: Send + Sync {
    /// What the guest is now: its kernel, size, level and addresses.
    fn facts(&self) -> Result<GuestFacts, AgentError>;

    /// Runs `command`, handing each chunk of its output to `output` as it arrives.
    fn run_streaming(
        &self,
        command: &GuestCommand,
        output: &mut dyn FnMut(OutputStream, &[u8]),
    ) -> Result<CommandStatus, AgentError>;

    /// Runs `command` and collects its output.
    fn run(&self, command: &GuestCommand) -> Result<CommandOutput, AgentError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = self.run_streaming(command, &mut |stream, chunk| match stream {
            OutputStream::Stdout => stdout.extend_from_slice(chunk),
            OutputStream::Stderr => stderr.extend_from_slice(chunk),
        })?;
        Ok(CommandOutput { status, stdout, stderr })
    }

    /// Writes `content` to `path` in the guest with permission bits `mode`, atomically; the bytes
    /// written.
    fn put_file(&self, path: &str, content: &mut dyn Read, mode: u32) -> Result<u64, AgentError>;

    /// Copies the guest's file `path` to `out`; the bytes copied.
    fn get_file(&self, path: &str, out: &mut dyn Write) -> Result<u64, AgentError>;
}

/// How a guest is made a host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PromoteRequest {
    /// The address of the `kvm_host` the guest becomes, for messages.
    pub host: String,
    /// The guest's KVM vendor module is loaded with these before its libvirtd starts; a guest whose
    /// libvirtd runs already keeps what its module has.
    pub kvm_module_options: BTreeMap<String, String>,
}

/// How long to wait for the agent of a guest that was just started. A guest deep in the nesting
/// boots for minutes under emulation, and one whose kernel stopped answers never: a guest whose
/// console keeps printing is waited for up to `limit`, one whose console printed nothing new for
/// `quiet` (or whose console cannot be read) is given up then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentWait {
    /// The longest time without a new line on the console.
    pub quiet: Duration,
    /// The longest wait in all.
    pub limit: Duration,
}

impl AgentWait {
    /// What a booting guest gets unless told otherwise: two minutes of silence (a lab kernel prints
    /// from its first second to its agent's start), twenty minutes in all.
    pub const BOOT: AgentWait =
        AgentWait { quiet: Duration::from_secs(120), limit: Duration::from_secs(20 * 60) };

    /// The wait for a guest at nesting `level` (1 for a guest of a level-0 host): `level` times this
    /// one. A level runs on the one below it, and each trap of its guest goes through every level
    /// under it: the tower's guest3 went 104 s without a console line while loading its modules.
    pub fn at_level(self, level: u32) -> AgentWait {
        let n = level.max(1);
        AgentWait { quiet: self.quiet * n, limit: self.limit * n }
    }

    /// Waits up to `limit`, whatever the console does: for a guest that runs already.
    pub const fn at_most(limit: Duration) -> AgentWait {
        AgentWait { quiet: limit, limit }
    }
}

/// Why a wait for an agent ended without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GaveUp {
    /// The wait's whole limit passed.
    Limit,
    /// The console printed nothing new for this long.
    Quiet(Duration),
}

impl GaveUp {
    /// The end of "did not answer within ...".
    fn describe(&self, waited: Duration) -> String {
        match self {
            GaveUp::Limit => human_duration(waited),
            GaveUp::Quiet(quiet) => {
                format!(
                    "{} of its console's last output ({} in all)",
                    human_duration(*quiet),
                    human_duration(waited)
                )
            }
        }
    }
}

/// `1m30s`, `45s`, `800ms`: how long, as a person reads it (messages and progress lines alike).
pub fn human_duration(d: Duration) -> String {
    match d.as_secs() {
        0 => format!("{}ms", d.as_millis()),
        s if s < 60 => format!("{s}s"),
        s => format!("{}m{}s", s / 60, s % 60),
    }
}

/// Reaches guests' agents and makes running guests hosts.
pub trait Guests: Send + Sync {
    /// The agent of `guest` on `host`, waited for as `wait` says (a guest that just booted has
    /// nobody on its port yet). A host that cannot reach agents at all fails at once
    /// ([`AgentError::Unreachable`]); one whose agent never answers fails with the end of its
    /// console ([`AgentError::Timeout`]).
    fn agent(
        &self,
        host: &dyn Hypervisor,
        guest: GuestRef<'_>,
        wait: AgentWait,
    ) -> Result<Arc<dyn GuestAgent>, AgentError>;

    /// Makes the running `guest` on `host` a host itself: its hypervisor started inside it (through
    /// its agent), and a connection to it returned, which lives as long as the connection does. The
    /// caller checks the guest runs, and asks once per host at a time.
    fn promote(
        &self,
        host: Arc<dyn Hypervisor>,
        guest: GuestRef<'_>,
        request: &PromoteRequest,
    ) -> Result<Arc<dyn Hypervisor>, ProviderError>;

    /// The hypervisor the running `guest` on `host` runs already, reached without starting or
    /// changing anything in the guest (all a plan may do), or why none runs there, which
    /// [`Guests::promote`] would start. A hypervisor that runs but does not answer is an error.
    fn connect_promoted(
        &self,
        host: Arc<dyn Hypervisor>,
        guest: GuestRef<'_>,
        request: &PromoteRequest,
    ) -> Result<PromotedNow, ProviderError>;
}

/// What [`Guests::connect_promoted`] found in a guest that was promoted before.
#[derive(Clone)]
pub enum PromotedNow {
    /// Its hypervisor runs: a connection to it.
    Running(Arc<dyn Hypervisor>),
    /// Its hypervisor stopped while the guest ran on; what it held may still be there.
    Stopped,
    /// The guest restarted since it was promoted, and what its hypervisor held went with it (a lab
    /// guest's root lives in its memory).
    Restarted,
}

impl std::fmt::Debug for PromotedNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PromotedNow::Running(h) => write!(f, "Running({})", h.uri()),
            PromotedNow::Stopped => f.write_str("Stopped"),
            PromotedNow::Restarted => f.write_str("Restarted"),
        }
    }
}

/// How guests with a `lab` install boot: files on the host (a kernel, an initramfs built for the
/// guest) and a command line.
pub trait BootAssets: Send + Sync {
    /// Why guests with `install` cannot boot, or `Ok`: a missing kernel is an error at plan time,
    /// before anything is created. Touches nothing.
    fn check(&self, install: &LabInstall) -> Result<(), BoxError>;

    /// The boot of `spec` at nesting `level`, or `None` for a guest that boots from its first disk.
    /// Blocking: it may build an initramfs.
    fn boot(&self, spec: &NestedGuestSpec, level: u32) -> Result<Option<BootRequest>, BoxError>;
}

/// What stops a guest's agent from being reached or answering.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "the agent of guest `{guest}` did not answer within {} (last attempt: {last_error}){}",
        gave_up.describe(*waited),
        console.as_deref().map(|c| format!("; the guest's console ends with:\n{c}")).unwrap_or_default()
    )]
    Timeout { guest: String, waited: Duration, gave_up: GaveUp, last_error: String, console: Option<String> },
    #[error("the agent of guest `{guest}` cannot be reached")]
    Unreachable {
        guest: String,
        #[source]
        source: ProviderError,
    },
    #[error("the agent of guest `{guest}` failed")]
    Failed {
        guest: String,
        #[source]
        source: BoxError,
    },
}

/// An error of a backend's own kind, with its causes, where the trait cannot name the type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl AgentError {
    /// The message with its causes, one after another, for places that keep errors as text.
    pub fn chain(&self) -> String {
        error_chain(self)
    }
}

/// `error: cause: cause`, the way a one-line log, a progress line or a state's error field shows an
/// error (a report shows the causes one per line instead); a cause that the message already ends
/// with is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        // Messages that already quote their cause (as `could not write …: {source}; check …` does)
        // are not followed by it once more.
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_quoted_inside_its_message_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("could not write `s.json`: {source}; check free space")]
        struct Write {
            source: std::io::Error,
        }
        #[derive(Debug, thiserror::Error)]
        #[error("saving failed")]
        struct Outer(#[source] Write);
        let e = Outer(Write { source: std::io::Error::other("disk full") });
        assert_eq!(error_chain(&e), "saving failed: could not write `s.json`: disk full; check free space");
    }

    #[test]
    fn usable_addresses_leave_out_loopback_and_link_local() {
        let a = |s: &str, p| GuestAddress {
            interface: "eth0".into(),
            address: s.parse().unwrap(),
            prefix_len: p,
        };
        let facts = GuestFacts {
            addresses: vec![a("127.0.0.1", 8), a("::1", 128), a("fe80::1", 64), a("10.0.0.5", 24)],
            ..GuestFacts::default()
        };
        assert_eq!(facts.usable_addresses(), ["10.0.0.5/24"]);
    }

    #[test]
    fn chains_name_every_cause_once() {
        let e = AgentError::Unreachable {
            guest: "g".into(),
            source: ProviderError::Unsupported("reaching the agent of guest `g`".into()),
        };
        assert_eq!(e.to_string(), "the agent of guest `g` cannot be reached");
        assert_eq!(
            e.chain(),
            "the agent of guest `g` cannot be reached: `reaching the agent of guest `g`` is not supported by this hypervisor"
        );
    }

    #[test]
    fn a_deeper_guest_is_waited_for_longer_and_the_error_says_which_limit_ended_the_wait() {
        let base = AgentWait::BOOT;
        assert_eq!(base.at_level(0), base);
        assert_eq!(base.at_level(1), base);
        let deep = base.at_level(3);
        assert_eq!((deep.quiet, deep.limit), (base.quiet * 3, base.limit * 3));

        let timeout = |gave_up| AgentError::Timeout {
            guest: "g3".into(),
            waited: Duration::from_secs(400),
            gave_up,
            last_error: "no answer".into(),
            console: None,
        };
        assert_eq!(
            timeout(GaveUp::Quiet(Duration::from_secs(360))).to_string(),
            "the agent of guest `g3` did not answer within 6m0s of its console's last output (6m40s in all) \
             (last attempt: no answer)"
        );
        assert_eq!(
            timeout(GaveUp::Limit).to_string(),
            "the agent of guest `g3` did not answer within 6m40s (last attempt: no answer)"
        );
    }
}
