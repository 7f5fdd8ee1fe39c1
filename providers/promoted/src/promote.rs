//! Promoting a running lab guest to a hypervisor: libvirtd started inside it, through its agent only.
//!
//! A lab guest already has its parent's whole userland (QEMU, libvirt) through the 9p root, but no
//! daemon runs there: init `exec`s the agent and nothing else. [`start_libvirt`] does, in order:
//!
//! 1. checks that `/` is the tmpfs overlay lab guests boot with, so every file written below lands in
//!    the guest's memory and never in the parent's root (and refuses otherwise);
//! 2. makes sure KVM is there: the vendor module (`kvm_amd` / `kvm_intel`) loaded, `/dev/kvm` present,
//!    and `/dev/kvm` given to group `kvm` with mode 0660 (what udev would do; without it libvirt
//!    reprobes QEMU on every call, see lab-facts); before that, unless libvirtd runs already, the
//!    module is reloaded with [`PromoteOptions::kvm_module_options`] (see [`crate::kvm_options`]);
//! 3. mounts `/dev/pts` (QEMU's serial console is a pty; lab init mounts only devtmpfs) and makes
//!    `/run/lock` (libvirt locks channel devices there), puts an empty tmpfs over each parent's
//!    libvirt directory the guest cannot read, and hides the parent's libvirt objects (persistent
//!    domains, networks, pools): the guest sees the parent's `/etc/libvirt`, so its libvirtd would
//!    otherwise list, and autostart, the parent's guests;
//! 4. writes the settings a libvirtd in a lab guest needs into the guest's `/etc/libvirt/qemu.conf`
//!    ([`QEMU_CONF_SETTINGS`]);
//! 5. starts `virtlogd -d` and `libvirtd -d` unless they run, logging to files under
//!    `/var/log/libvirt` in the guest, and waits (bounded) until the socket exists and
//!    `virsh -c qemu:///system version` answers inside the guest.
//!
//! Every step is safe to repeat, and calling [`start_libvirt`] on a guest promoted earlier in this
//! boot whose daemons run only checks that, in one round trip to the agent (what each later
//! connection through a level pays). The steps are shell snippets run by the agent (`scripts`): the
//! guest has a shell and the tools, and the agent has no business knowing about libvirt. Editing
//! `qemu.conf` has its own module (`qemu_conf`).

use std::time::{Duration, Instant};

use nestform_agent::{AgentClient, ClientError, ExecRequest, ExecResult};

mod qemu_conf;
mod scripts;

pub use qemu_conf::{qemu_conf_with_settings, QEMU_CONF_SETTINGS};
use scripts::{
    already_promoted_script, daemons_script, ready_check_script, restart_libvirtd, KvmReport, DEVPTS_SCRIPT,
    HIDE_SCRIPT, KVM_SCRIPT, ONE_EMULATOR_SCRIPT, OWN_POOL_SCRIPT, PRIVATE_DIRS_SCRIPT, PROBE_PIDS, ROOT_FS,
};

/// The guest's QEMU driver configuration, edited by [`start_libvirt`].
pub const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";
/// libvirtd's log in the guest; its tail goes into errors.
pub const LIBVIRTD_LOG: &str = "/var/log/libvirt/libvirtd.log";
/// virtlogd's log in the guest.
pub const VIRTLOGD_LOG: &str = "/var/log/libvirt/virtlogd.log";
/// The system libvirtd's socket in the guest (the tunnel relays to it).
pub const LIBVIRT_SOCKET: &str = "/var/run/libvirt/libvirt-sock";

/// How [`start_libvirt`] behaves.
#[derive(Clone, Debug)]
pub struct PromoteOptions {
    /// How long to wait for libvirtd to answer after starting it, counted from its last progress
    /// (see `wait_ready`). The first start probes QEMU's capabilities, which under TCG takes tens of
    /// seconds a binary, minutes in a loaded level 2.
    pub ready_timeout: Duration,
    /// Hide the parent's persistent domains, networks and storage pools from the guest's libvirtd.
    pub hide_parent_objects: bool,
    /// The KVM vendor module's options (`kvm_module_options`), set by reloading the module before
    /// libvirtd starts (see [`crate::kvm_options`]); a guest whose libvirtd runs already keeps what
    /// its module has.
    pub kvm_module_options: std::collections::BTreeMap<String, String>,
    /// How long a libvirtd that already ran (started by an earlier call, its QEMU capabilities
    /// cached) gets to answer before it counts as hung and is restarted; the guest's domains keep
    /// running meanwhile and libvirtd takes them over again when it starts.
    pub hung_after: Duration,
}

impl Default for PromoteOptions {
    fn default() -> Self {
        PromoteOptions {
            ready_timeout: Duration::from_secs(180),
            hung_after: Duration::from_secs(30),
            hide_parent_objects: true,
            kvm_module_options: Default::default(),
        }
    }
}

/// What [`start_libvirt`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromoteReport {
    /// The vendor KVM module loaded in the guest (`kvm_amd`, `kvm_intel`), if any.
    pub kvm_module: Option<String>,
    /// That module's `nested` parameter, as the guest's `/sys` shows it.
    pub kvm_nested: Option<String>,
    /// Whether `/dev/kvm` exists in the guest.
    pub dev_kvm: bool,
    /// The parent's libvirt directories the guest could not read, now covered by its own empty tmpfs.
    pub private_dirs: Vec<String>,
    /// Whether the guest could read the `qemu.conf` it sees (the parent's, or one written by an
    /// earlier call) and kept its settings; false: it was unreadable and only nestform's block is in
    /// the guest's file. `None` when the call found the guest promoted and answering, and only
    /// checked it.
    pub qemu_conf_inherited: Option<bool>,
    /// Whether this call started `virtlogd` (false: it already ran).
    pub started_virtlogd: bool,
    /// Whether this call started `libvirtd` (false: it already ran).
    pub started_libvirtd: bool,
    /// Whether this call found `libvirtd` hung and restarted it.
    pub restarted_libvirtd: bool,
    /// What `virsh version` answered inside the guest; `None` when the call found the guest promoted
    /// and its daemons running, and left asking libvirtd to the caller's connection.
    pub virsh_version: Option<String>,
    /// How long the whole call took.
    pub elapsed: Duration,
}

/// What promoting a lab guest failed with.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("talking to the agent failed while {step}: {source}")]
    Agent { step: &'static str, source: ClientError },
    #[error("the guest's root is not a tmpfs overlay (`{root}`): refusing to write its files, which could be the parent's")]
    NotOverlay { root: String },
    #[error("{step} failed in the guest ({status}): {output}")]
    Step { step: &'static str, status: String, output: String },
    #[error("setting `kvm_module_options` in the guest failed: {0}")]
    KvmOptions(#[from] crate::kvm_options::KvmOptionsError),
    #[error(
        "libvirtd in the guest did not come up (waited at most `{timeout:?}`, last: {last}); log tail:\n{log_tail}"
    )]
    NotReady { timeout: Duration, last: String, log_tail: String },
}

impl PromoteError {
    /// Whether the way to the agent stalled or broke (rather than a step failing in the guest): the
    /// caller may connect to the agent again and repeat the promotion, whose steps are idempotent.
    pub fn agent_stalled(&self) -> bool {
        matches!(
            self,
            PromoteError::Agent { source: ClientError::NoAnswer { .. } | ClientError::Disconnected(_), .. }
        )
    }
}

/// Exists once a guest has been prepared (in its `/run`, so a reboot forgets it).
const PROMOTED_MARKER: &str = "/run/nestform/promoted";

/// Starts libvirtd inside the lab guest `client` talks to (see the module doc). Idempotent.
pub fn start_libvirt(client: &AgentClient, opts: &PromoteOptions) -> Result<PromoteReport, PromoteError> {
    let start = Instant::now();
    if let Some(report) = already_promoted(client, opts, start) {
        return Ok(report);
    }
    let root = run(client, "reading the guest's mounts", ROOT_FS)?;
    let root = String::from_utf8_lossy(&root.stdout).trim().to_string();
    if root != "overlay" {
        return Err(PromoteError::NotOverlay { root });
    }

    // Nothing runs on the guest's KVM before its libvirtd does: the one safe moment to reload it.
    if !libvirtd_runs(client)? {
        crate::kvm_options::apply(client, &opts.kvm_module_options)?;
    }
    let kvm = checked(client, "loading KVM", KVM_SCRIPT)?;
    let kvm = KvmReport::parse(&String::from_utf8_lossy(&kvm.stdout));

    checked(client, "mounting /dev/pts and making /run/lock", DEVPTS_SCRIPT)?;
    // Covering and hiding the parent's objects happens once per boot: by the next call the files there
    // are the guest's own (its networks and domains), which must survive.
    let prepared = run(client, "checking for an earlier promotion", &format!("test -e {PROMOTED_MARKER}"))?
        .status
        .success();
    let mut private_dirs = Vec::new();
    if !prepared {
        let private =
            checked(client, "covering the parent's unreadable libvirt directories", PRIVATE_DIRS_SCRIPT)?;
        private_dirs = String::from_utf8_lossy(&private.stdout).lines().map(str::to_string).collect();
        if opts.hide_parent_objects {
            checked(client, "hiding the parent's libvirt objects", HIDE_SCRIPT)?;
        }
        checked(client, "giving the guest a storage pool directory of its own", OWN_POOL_SCRIPT)?;
        checked(client, "removing the QEMU emulators its guests do not use", ONE_EMULATOR_SCRIPT)?;
    }

    // The parent's qemu.conf is root's 0600 file on Debian, which the guest cannot read through 9p
    // (the parent's QEMU serves the share as its own user); then the guest starts from libvirt's
    // defaults plus nestform's block.
    let conf = run(client, "reading qemu.conf", &format!("cat {QEMU_CONF}"))?;
    let qemu_conf_inherited = conf.status.success();
    let existing =
        if qemu_conf_inherited { String::from_utf8_lossy(&conf.stdout).into_owned() } else { String::new() };
    let conf = qemu_conf_with_settings(&existing);
    client
        .put_file(QEMU_CONF, &mut conf.as_bytes(), 0o600)
        .map_err(|source| PromoteError::Agent { step: "writing qemu.conf", source })?;

    let daemons = checked(client, "starting the libvirt daemons", &daemons_script())
        .map_err(|e| with_log_tail(client, e))?;
    let daemons = String::from_utf8_lossy(&daemons.stdout).into_owned();
    let started_virtlogd = daemons.lines().any(|l| l == "started=virtlogd");
    let started_libvirtd = daemons.lines().any(|l| l == "started=libvirtd");

    // A new libvirtd gets the time its first start needs (QEMU's capabilities are probed then); one
    // that answered before gets less. Silent past that, it is hung (seen: a main loop deadlocked after
    // a client vanished with a stream open, and a first start that never answered under a loaded
    // emulated level 1) or gone, and it is started again once, the same way. Its guests keep running.
    let patience = if started_libvirtd { opts.ready_timeout } else { opts.hung_after };
    let mut restarted_libvirtd = false;
    let virsh_version = match wait_ready(client, patience) {
        Ok(v) => v,
        Err(PromoteError::NotReady { last, .. }) => {
            tracing::debug!(%last, ?patience, "libvirtd did not answer; restarting it");
            nestform_provider::progress::step("restarting libvirtd (it did not answer)");
            restarted_libvirtd = true;
            restart_libvirt(client, opts)?
        }
        Err(e) => return Err(e),
    };
    checked(
        client,
        "marking the guest promoted",
        &format!("mkdir -p \"$(dirname {PROMOTED_MARKER})\" && touch {PROMOTED_MARKER}"),
    )?;
    Ok(PromoteReport {
        kvm_module: kvm.module,
        kvm_nested: kvm.nested,
        dev_kvm: kvm.dev_kvm,
        qemu_conf_inherited: Some(qemu_conf_inherited),
        private_dirs,
        started_virtlogd,
        started_libvirtd,
        restarted_libvirtd,
        virsh_version: Some(virsh_version),
        elapsed: start.elapsed(),
    })
}

/// What a guest promoted before has now, found in one round trip that changes nothing (two when
/// its daemons do not run): what a plan asks before it reads a promoted host. A guest that restarted
/// since, or whose libvirtd stopped, is left for apply's [`start_libvirt`].
pub fn promoted_now(client: &AgentClient, opts: &PromoteOptions) -> Result<Now, PromoteError> {
    if already_promoted(client, opts, Instant::now()).is_some() {
        return Ok(Now::Running);
    }
    let marked = run(client, "checking for an earlier promotion", &format!("test -e {PROMOTED_MARKER}"))?;
    Ok(if marked.status.success() { Now::Stopped } else { Now::Restarted })
}

/// What [`promoted_now`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Now {
    /// Promoted in this boot, its daemons run.
    Running,
    /// Promoted in this boot, but a daemon stopped: the guest's own objects are still there.
    Stopped,
    /// Not promoted in this boot: the guest restarted, and its libvirt objects (in its memory) with it.
    Restarted,
}

/// The report of one round trip to a guest promoted earlier in this boot whose daemons run: what
/// every later connection (`exec`, refresh, each level on the way to a deeper one) finds, in one exec
/// instead of one per step. `None` when anything is off, for the full, repairing path. Whether that
/// libvirtd answers is left to the caller's connection, the real test (`virsh version` here cost 2 s
/// at level 2); a caller that gets no answer restarts it with [`restart_libvirt`].
fn already_promoted(client: &AgentClient, opts: &PromoteOptions, start: Instant) -> Option<PromoteReport> {
    let script = already_promoted_script();
    let r = client.exec(ExecRequest::new(["sh", "-c", &script]).timeout(opts.hung_after));
    let out = match &r {
        Ok(r) if r.status.success() => String::from_utf8_lossy(&r.stdout).into_owned(),
        _ => {
            tracing::debug!(answer = ?r.map(|r| String::from_utf8_lossy(&r.stdout).trim().to_string()), "not promoted and answering yet: the full path");
            return None;
        }
    };
    let kvm = KvmReport::parse(&out);
    tracing::debug!(elapsed = ?start.elapsed(), "promoted already, the daemons run");
    Some(PromoteReport {
        kvm_module: kvm.module,
        kvm_nested: kvm.nested,
        dev_kvm: kvm.dev_kvm,
        qemu_conf_inherited: None,
        private_dirs: Vec::new(),
        started_virtlogd: false,
        started_libvirtd: false,
        restarted_libvirtd: false,
        virsh_version: None,
        elapsed: start.elapsed(),
    })
}

/// Whether libvirtd runs in the guest (its pid file names a live process).
fn libvirtd_runs(client: &AgentClient) -> Result<bool, PromoteError> {
    let check = "[ -f /run/libvirtd.pid ] && kill -0 \"$(cat /run/libvirtd.pid)\" 2>/dev/null";
    Ok(run(client, "checking for libvirtd", check)?.status.success())
}

/// Restarts the guest's libvirtd, whose guests keep running (it takes them over again when it
/// starts), and waits until it answers: for a libvirtd that answered `virsh version` but then hung on
/// a caller's request. Returns what `virsh version` answered.
pub fn restart_libvirt(client: &AgentClient, opts: &PromoteOptions) -> Result<String, PromoteError> {
    checked(client, "restarting a libvirtd that does not answer", &restart_libvirtd())?;
    checked(client, "starting the libvirt daemons", &daemons_script())
        .map_err(|e| with_log_tail(client, e))?;
    wait_ready(client, opts.ready_timeout)
}

/// Waits until libvirtd's socket exists and `virsh version` answers; returns virsh's output.
///
/// A new libvirtd answers nothing until it has probed each QEMU binary's capabilities (a QEMU started
/// with `-machine none`, one after another, each result cached under `/var/cache/libvirt/qemu/capabilities`). Under
/// emulation each probe takes minutes, so `timeout` is counted from the last sign of progress (another
/// probe started, another result cached), not from the start: seen in a loaded level 2, a first
/// start answered after more than three minutes of probes, and a restart at three minutes killed the
/// second probe half-way. While a probe runs, `virsh` is not asked (it would only wait for the probe).
fn wait_ready(client: &AgentClient, timeout: Duration) -> Result<String, PromoteError> {
    nestform_provider::progress::step("waiting for libvirtd's first answer (QEMU capability probes)");
    let mut last_progress = Instant::now();
    let check = ready_check_script();
    let mut last = String::from("nothing tried");
    let mut progress = String::new();
    let mut waited = Duration::ZERO;
    loop {
        let deadline = last_progress + timeout;
        if Instant::now() >= deadline {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        let asked = Instant::now();
        let r = match client
            .exec(ExecRequest::new(["sh", "-c", &check]).timeout(left.min(Duration::from_secs(60))))
        {
            Ok(r) => r,
            // `virsh` stuck past its kill (seen in a loaded level 2): one more failed attempt.
            Err(e @ ClientError::NoAnswer { .. }) => {
                last = e.to_string();
                continue;
            }
            Err(source) => return Err(PromoteError::Agent { step: "asking libvirtd", source }),
        };
        waited += asked.elapsed();
        let out = String::from_utf8_lossy(&r.stdout).trim().to_string();
        tracing::debug!(status = ?r.status.code, answer = %out.lines().next().unwrap_or(""), "asked libvirtd");
        if r.status.success() {
            tracing::debug!(?waited, "libvirtd answered");
            return Ok(out);
        }
        if r.status.code == Some(3) && out != progress {
            // Another probe, or another result cached: libvirtd is getting on.
            tracing::debug!(%out, "libvirtd makes progress");
            progress.clone_from(&out);
            last_progress = Instant::now();
        }
        last = if out.is_empty() { format!("{:?}", r.status) } else { out };
        if r.status.code == Some(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(PromoteError::NotReady { timeout, last, log_tail: log_tail(client) })
}

/// What libvirtd in the guest is doing, for a warning about a call it did not answer: the QEMU
/// capability probes running, whether libvirtd lives and where its threads wait in the kernel, and
/// the end of its log. Asked through the agent, so it comes even when libvirtd answers nothing.
pub fn libvirtd_now(client: &AgentClient) -> String {
    let script = format!(
        r#"echo "probes: $({PROBE_PIDS} | tr '\n' ' ')"
pid=$(cat /run/libvirtd.pid 2>/dev/null)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  echo "libvirtd $pid: threads waiting in: $(for t in /proc/$pid/task/*; do cat $t/wchan 2>/dev/null; echo; done | sort | uniq -c | tr '\n' ' ')"
else
  echo "libvirtd is not running"
fi
echo "log:"; tail -n 12 {LIBVIRTD_LOG} 2>/dev/null"#
    );
    match client.exec(ExecRequest::new(["sh", "-c", &script]).timeout(Duration::from_secs(10))) {
        Ok(r) => String::from_utf8_lossy(&r.stdout).trim_end().replace('\n', " | "),
        Err(e) => format!("(cannot ask the guest: {e})"),
    }
}

/// The end of both daemons' logs in the guest, for error messages.
pub fn log_tail(client: &AgentClient) -> String {
    let script = format!("for f in {LIBVIRTD_LOG} {VIRTLOGD_LOG}; do [ -f \"$f\" ] && {{ echo \"== $f\"; tail -n 20 \"$f\"; }}; done; true");
    match client.exec(ExecRequest::new(["sh", "-c", &script]).timeout(Duration::from_secs(10))) {
        Ok(r) => String::from_utf8_lossy(&r.stdout).trim_end().to_string(),
        Err(e) => format!("(cannot read the logs: {e})"),
    }
}

fn with_log_tail(client: &AgentClient, e: PromoteError) -> PromoteError {
    match e {
        PromoteError::Step { step, status, output } => {
            PromoteError::Step { step, status, output: format!("{output}\n{}", log_tail(client)) }
        }
        other => other,
    }
}

/// Runs `script` with `sh -c`, whatever its exit status.
fn run(client: &AgentClient, step: &'static str, script: &str) -> Result<ExecResult, PromoteError> {
    nestform_provider::progress::step(step);
    let start = Instant::now();
    let r = client
        .exec(ExecRequest::new(["sh", "-c", script]).timeout(Duration::from_secs(60)))
        .map_err(|source| PromoteError::Agent { step, source });
    tracing::debug!(step, elapsed = ?start.elapsed(), status = ?r.as_ref().map(|r| r.status.code), "promotion step");
    r
}

/// Runs `script`, which must succeed.
fn checked(client: &AgentClient, step: &'static str, script: &str) -> Result<ExecResult, PromoteError> {
    let r = run(client, step, script)?;
    if r.status.success() {
        return Ok(r);
    }
    let mut output = String::from_utf8_lossy(&r.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&r.stderr);
    if !stderr.trim().is_empty() {
        output = format!("{output}\n{}", stderr.trim());
    }
    Err(PromoteError::Step { step, status: format!("{:?}", r.status), output })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stalled_or_broken_agent_channel_counts_as_stalled() {
        let stalled = PromoteError::Agent {
            step: "starting the libvirt daemons",
            source: ClientError::NoAnswer { op: "exec", guest: "g".into(), after: Duration::from_secs(90) },
        };
        assert!(stalled.agent_stalled());
        let gone = PromoteError::Agent { step: "x", source: ClientError::Disconnected("closed".into()) };
        assert!(gone.agent_stalled());
        let step = PromoteError::Step { step: "loading KVM", status: "exit 1".into(), output: String::new() };
        assert!(!step.agent_stalled());
    }
}
