//! Real lab guests on real libvirt (`qemu:///system`; TCG on machines without usable KVM), through
//! the CLI: apply a guest with a NAT network, facts, exec, a file in and out, a no-op re-plan, a
//! memory change applied with a restart, destroy leaving nothing behind; and the two ways a lab guest
//! can fail: a kernel that is not there (a plan error at `kernel`), an agent that never answers (the
//! timeout error with the guest's console).
//!
//! Needs what `tests/run.sh` sets up: libvirtd (inside the test run's network namespace, so the NAT
//! network's bridge and dnsmasq live there) and a guest kernel (`tests/guest-kernel.sh`).

use std::path::Path;

use crate::support::{DestroyOnDrop, Workspace};

const URI: &str = "qemu:///system";

/// The host's storage pool is one for all guests: tests that check it is gone take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A test's turn on the real host, and whether nestform's pool was there when it began: a pool left
/// by something else (the user's own guests, an earlier run that was killed) is not this test's to
/// remove, but one this test made must be gone at its end.
pub(crate) struct Turn {
    _guard: std::sync::MutexGuard<'static, ()>,
    had_pool: bool,
}

pub(crate) fn take_turn() -> Turn {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    Turn { _guard: guard, had_pool: pool_exists() }
}

fn pool_exists() -> bool {
    virsh(&["pool-list", "--all", "--name"]).lines().any(|p| p.trim() == "nestform")
}

/// A host, a NAT network and one lab guest; `net` picks the network (`10.213.NET.0/24`) so tests that
/// run at once do not collide.
fn lab(tag: &str, net: u8, memory: &str, extra_lab: &str) -> String {
    format!(
        r#"
kvm_host "l0" {{
  uri = "{URI}"
}}

nat_network "lan" {{
  host = kvm_host.l0
  name = "{tag}-lan"
  cidr = "10.213.{net}.0/24"
}}

nested_guest "g" {{
  host   = kvm_host.l0
  name   = "{tag}-g"
  vcpus  = 1
  memory = "{memory}"

  disk "data" {{
    size  = "64MiB"
    cache = "unsafe"
  }}

  network "eth0" {{
    nat_network = nat_network.lan
  }}

  lab {{
    {extra_lab}
  }}
}}

output "kernel" {{
  value = nested_guest.g.kernel
}}
"#
    )
}

pub(crate) fn virsh(args: &[&str]) -> String {
    let out = std::process::Command::new("virsh").arg("-c").arg(URI).args(args).output().expect("virsh runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Nothing of the test's own is left in libvirt or on disk: no domain, network or volume named
/// with its tag, and no nestform pool unless there was one when its turn began.
pub(crate) fn assert_nothing_left(tag: &str, turn: &Turn) {
    let domains = virsh(&["list", "--all", "--name"]);
    assert!(!domains.contains(tag), "domains left: {domains}");
    let networks = virsh(&["net-list", "--all", "--name"]);
    assert!(!networks.contains(tag), "networks left: {networks}");
    if turn.had_pool {
        let volumes = virsh(&["vol-list", "nestform"]);
        assert!(!volumes.contains(tag), "volumes left in the nestform pool: {volumes}");
    } else {
        assert!(!pool_exists(), "the nestform pool this test made is left");
    }
    for log in [format!("{tag}-g-console.log"), format!("{tag}-g.log")] {
        assert!(!Path::new("/var/log/libvirt/qemu").join(&log).exists(), "{log} is left");
    }
}

#[test]
fn a_lab_guest_lives_its_whole_life() {
    let turn = take_turn();
    let tag = "nfe2e";
    let ws = Workspace::new();
    ws.write("main.nf.hcl", &lab(tag, 7, "384MiB", ""));
    let cleanup = DestroyOnDrop(&ws);

    let r = ws.run(&["apply", "-auto-approve"]);
    r.success();
    assert!(r.stdout.contains("nested_guest.g: Creation complete"), "{}", r.stdout);

    // The agent's facts are in state, and outputs can use them.
    let kernel = ws.run(&["output", "-raw", "kernel"]);
    kernel.success();
    let kernel = kernel.stdout.trim().to_string();
    assert!(kernel.starts_with(|c: char| c.is_ascii_digit()), "kernel release: {kernel:?}");
    let show = ws.run(&["state", "show", "nested_guest.g"]);
    assert!(show.stdout.contains("boot_seconds"), "{}", show.stdout);

    // exec streams output and returns the command's exit code.
    let r = ws.run(&["exec", "nested_guest.g", "--", "uname", "-r"]);
    r.success();
    assert_eq!(r.stdout.trim(), kernel);
    let r = ws.run(&["exec", "nested_guest.g", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    r.code(7);
    assert_eq!(r.stdout.trim(), "out");
    assert!(r.stderr.contains("err"), "{}", r.stderr);
    // The guest is on its NAT network.
    let r = ws.run(&["exec", "nested_guest.g", "--", "sh", "-c", "for i in $(seq 50); do ip -4 -o addr show eth0 | grep -q 10.213.7. && break; sleep 0.2; done; ip -4 -o addr show eth0"]);
    r.success();
    assert!(r.stdout.contains("10.213.7."), "no address on the NAT network: {}", r.stdout);

    // A file in and back out, byte for byte.
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(ws.path().join("payload.bin"), &payload).unwrap();
    ws.run(&["cp", "payload.bin", "nested_guest.g:/tmp/payload.bin"]).success();
    ws.run(&["cp", "nested_guest.g:/tmp/payload.bin", "back.bin"]).success();
    assert!(std::fs::read(ws.path().join("back.bin")).unwrap() == payload, "the file came back different");

    // Nothing changed: no-op.
    let r = ws.run(&["plan", "-detailed-exitcode"]);
    r.code(0);
    // The host's memory is its whole `MemTotal`, not NUMA node 0's, and the plan says where from.
    let mem_total_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    let host = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("kvm_host.l0:"))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    let gib: f64 = host
        .rsplit(", ")
        .next()
        .and_then(|v| v.strip_suffix(" GiB"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no memory figure in {host:?}"));
    assert!(
        (gib - mem_total_kib / (1u64 << 20) as f64).abs() < 0.06,
        "{host} against MemTotal {mem_total_kib} KiB"
    );
    assert!(
        r.stdout.contains("memory: the host's total memory, from libvirt's node memory statistics"),
        "{}",
        r.stdout
    );

    // More memory: a restart, and the guest sees it.
    ws.write("main.nf.hcl", &lab(tag, 7, "448MiB", ""));
    let r = ws.run(&["plan", "-detailed-exitcode"]);
    r.code(2);
    assert!(r.stdout.contains("restart"), "{}", r.stdout);
    ws.run(&["apply", "-auto-approve"]).success();
    let r = ws.run(&["exec", "nested_guest.g", "--", "sh", "-c", "grep MemTotal /proc/meminfo"]);
    r.success();
    let kib: u64 = r.stdout.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(kib > 384 * 1024 && kib <= 448 * 1024, "MemTotal after the change: {}", r.stdout);
    ws.run(&["plan", "-detailed-exitcode"]).code(0);

    ws.run(&["destroy", "-auto-approve"]).success();
    drop(cleanup);
    assert_nothing_left(tag, &turn);
}

#[test]
fn a_missing_kernel_is_a_plan_error_at_kernel() {
    let ws = Workspace::new();
    ws.write("main.nf.hcl", &lab("nfe2k", 8, "256MiB", "kernel = \"/nonexistent/vmlinuz-1.2.3\""));
    let r = ws.run(&["plan"]);
    r.code(1);
    assert!(r.stderr.contains("main.nf.hcl:"), "{}", r.stderr);
    assert!(r.stderr.contains("kernel = \"/nonexistent/vmlinuz-1.2.3\""), "{}", r.stderr);
    assert!(r.stderr.contains("/nonexistent/vmlinuz-1.2.3"), "{}", r.stderr);
    assert!(!virsh(&["list", "--all", "--name"]).contains("nfe2k"));
}

#[test]
fn an_agent_that_never_answers_is_a_timeout_with_the_console() {
    let turn = take_turn();
    let tag = "nfe2t";
    let ws = Workspace::new();
    ws.write("main.nf.hcl", &lab(tag, 9, "256MiB", ""));
    let cleanup = DestroyOnDrop(&ws);
    // A guest whose agent cannot start: init says so on the console and waits.
    let not_an_agent = ws.path().join("not-an-agent");
    std::fs::write(&not_an_agent, "this is not a program").unwrap();
    let out = std::process::Command::new(crate::support::nestform_bin())
        .arg(format!("-chdir={}", ws.path().display()))
        .args(["apply", "-auto-approve"])
        .env("NO_COLOR", "1")
        .env("NESTFORM_AGENT_BIN", &not_an_agent)
        .env("NESTFORM_AGENT_TIMEOUT", "25")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("did not answer within"), "{stderr}");
    assert!(stderr.contains("console ends with"), "{stderr}");
    assert!(stderr.contains("not-an-agent"), "the console shows what init said about it: {stderr}");
    // The guest exists and is recorded tainted, so the next plan replaces it.
    let r = ws.run(&["plan", "-detailed-exitcode"]);
    r.code(2);
    assert!(r.stdout.contains("tainted"), "{}", r.stdout);
    drop(cleanup);
    assert_nothing_left(tag, &turn);
}

/// Two levels in one apply (`promoted.rs` applies it): a lab guest promoted to a host (with `host_extra` in its `kvm_host`), holding a NAT network
/// (`10.213.NET.0/24`) and a lab guest of its own on it (with `guest2_extra`).
pub(crate) fn two_levels(tag: &str, net: u8, host_extra: &str, guest2_extra: &str) -> String {
    format!(
        r#"
kvm_host "l0" {{
  uri = "{URI}"
}}

nested_guest "guest1" {{
  host   = kvm_host.l0
  name   = "{tag}-g1"
  vcpus  = 1
  memory = "1536MiB"
  lab {{}}
}}

kvm_host "guest1" {{
  guest  = nested_guest.guest1
  nested = true
  {host_extra}
}}

nat_network "inner" {{
  host = kvm_host.guest1
  name = "{tag}-inner"
  cidr = "10.213.{net}.0/24"
}}

nested_guest "guest2" {{
  host   = kvm_host.guest1
  name   = "{tag}-g2"
  vcpus  = 1
  memory = "384MiB"
  {guest2_extra}

  network "eth0" {{
    nat_network = nat_network.inner
  }}

  lab {{}}
}}
"#
    )
}
