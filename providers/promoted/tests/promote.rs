//! End to end on this machine's real libvirt: a level-1 lab guest is promoted to a hypervisor
//! (`start_libvirt` through its agent), the controller reaches that libvirtd through a
//! [`LibvirtTunnel`], and, through the tunnel, boots a level-2 lab guest and talks to its agent.
//!
//! Ignored by default: it needs root, `qemu:///system` (`tests/setup-host.sh --netns NAME`), a guest
//! kernel (`tests/guest-kernel.sh`) and several minutes. Run with
//! `cargo test -p nestform-provider-promoted --test promote -- --ignored --nocapture`. It creates no network and
//! no storage pool; its guests, logs and initramfs go also when it fails (drop guards). Set
//! `NESTFORM_PROMOTE_LEVEL2=0` to stop after level 1.

use std::path::Path;
use std::time::{Duration, Instant};

use nestform_agent::{AgentClient, ClientOptions, ExecRequest};
use nestform_lab_boot::{boot_request, build_initramfs, Initramfs, InitramfsOptions, LabGuest, LabKernel};
use nestform_provider::{CpuRequest, GuestRequest, Hypervisor, Provider};
use nestform_provider_libvirt::channel::{console_log_path, console_tail, open_agent_channel};
use nestform_provider_libvirt::{LibvirtHypervisor, LibvirtProvider};
use nestform_provider_promoted::promote::{start_libvirt, PromoteOptions, QEMU_CONF};
use nestform_provider_promoted::tunnel::LibvirtTunnel;
use nestform_types::Owner;

#[path = "../../lab-boot/tests/common/mod.rs"]
mod common;
use common::{agent_binary, kernel};

const LEVEL1_AGENT_TIMEOUT: Duration = Duration::from_secs(180);
/// Level 2 runs under KVM inside a level 1 that runs under TCG here: give it time.
const LEVEL2_AGENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Deletes a guest when dropped, also when the test fails. `local_logs`: its console logs are files
/// on this machine (level 1); a level-2 guest's are inside level 1 and go with it.
struct GuestGuard<'h> {
    h: &'h LibvirtHypervisor,
    id: String,
    name: String,
    local_logs: bool,
}

impl Drop for GuestGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.h.delete_guest(&self.id) {
            eprintln!("cleaning up: deleting guest `{}` failed: {e}", self.name);
        }
        if self.local_logs {
            let _ = std::fs::remove_file(console_log_path(&self.name));
            let _ = std::fs::remove_file(format!("/var/log/libvirt/qemu/{}.log", self.name));
        }
    }
}

fn boot<'h>(
    h: &'h LibvirtHypervisor,
    kernel: &LabKernel,
    initramfs: &Initramfs,
    agent: &Path,
    level: u32,
    memory_mib: u64,
) -> GuestGuard<'h> {
    let name = format!("nf-promote-l{level}-{}", std::process::id());
    let guest = LabGuest { hostname: &name, level, agent };
    let req = GuestRequest {
        name: name.clone(),
        vcpus: 1,
        memory_bytes: memory_mib << 20,
        // Level 1 runs under TCG here: EPYC with svm is what TCG can give it. Level 2 runs under KVM
        // in level 1, whose TCG CPU lacks some of EPYC's features (`vme`, `xsavec`, `osvw`, ...):
        // host-passthrough, as in lab-facts.
        cpu: if level == 1 {
            CpuRequest::Model { name: "EPYC".into(), require: vec!["svm".into()] }
        } else {
            CpuRequest::HostPassthrough
        },
        disks: vec![],
        interfaces: vec![],
        boot: boot_request(kernel, initramfs, &guest).unwrap(),
        running: true,
    };
    let owner =
        Owner { lineage: "nestform-lab-promote-test".into(), address: format!("nested_guest.l{level}") };
    let status = h.create_guest(&req, &owner).unwrap_or_else(|e| panic!("create level-{level} guest: {e}"));
    assert!(status.running);
    GuestGuard { h, id: status.id, name, local_logs: level == 1 }
}

/// Connects to the agent, retrying while the guest boots; on a timeout, says why.
fn wait_for_agent(h: &LibvirtHypervisor, id: &str, timeout: Duration) -> Result<AgentClient, String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match open_agent_channel(h, id) {
            Ok(channel) => {
                let options =
                    ClientOptions { handshake_timeout: Duration::from_secs(2), ..ClientOptions::default() };
                match AgentClient::handshake_with(channel, &options) {
                    Ok(client) => return Ok(client),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!("the agent did not answer within {timeout:?} (last: {last})"))
}

fn sh(client: &AgentClient, script: &str) -> String {
    let r = client.exec(ExecRequest::new(["sh", "-c", script]).timeout(Duration::from_secs(60))).unwrap();
    String::from_utf8_lossy(&r.stdout).trim().to_string()
}

/// Mean `exec true` round trip over `n` calls.
fn exec_true(client: &AgentClient, n: u32) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        assert!(client.exec(ExecRequest::new(["true"])).unwrap().status.success());
    }
    t.elapsed() / n
}

#[test]
#[ignore = "boots real nested guests on qemu:///system: run with --ignored as root"]
fn a_promoted_lab_guest_serves_libvirt_through_the_tunnel() {
    let agent = agent_binary();
    let kernel = kernel();
    // One initramfs for both levels: level 1 sees this file through its 9p root and boots level 2 from it.
    let cache = tempfile::Builder::new().prefix("nestform-promote-").tempdir_in("/var/tmp").unwrap();
    std::fs::set_permissions(cache.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let initramfs = build_initramfs(&kernel, cache.path(), &InitramfsOptions::default()).unwrap();
    let parent_conf = std::fs::read(QEMU_CONF).unwrap_or_default();

    let h = LibvirtProvider::new().open("qemu:///system").expect("qemu:///system (run tests/setup-host.sh)");
    eprintln!("level 0: domain type `{}`", h.domain_type());
    let t = Instant::now();
    let l1 = boot(&h, &kernel, &initramfs, &agent, 1, 1024);
    let client = wait_for_agent(&h, &l1.id, LEVEL1_AGENT_TIMEOUT).unwrap_or_else(|e| {
        panic!("{e}; console:\n{}", console_tail(&h, &l1.id, 3000).unwrap_or_else(|e| e.to_string()))
    });
    eprintln!("level 1: boot to agent {:.2?}", t.elapsed());
    eprintln!("level 1: agent: {}", sh(&client, "ps -eo args | grep '[n]estform-agent'"));

    let first = start_libvirt(&client, &PromoteOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("level 1: start_libvirt {:.2?}: {first:#?}", first.elapsed);
    let version = first.virsh_version.as_deref().unwrap_or_default();
    assert!(version.contains("Running hypervisor: QEMU"), "{first:#?}");
    // Idempotent: the daemons run, so the second call only checks them, in one round trip, and
    // leaves asking libvirtd to the connection below.
    let again = start_libvirt(&client, &PromoteOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!again.started_libvirtd && !again.started_virtlogd, "{again:#?}");
    assert_eq!((again.qemu_conf_inherited, &again.virsh_version), (None, &None), "{again:#?}");
    assert_eq!(again.kvm_module, first.kvm_module, "{again:#?}");
    eprintln!("level 1: second start_libvirt {:.2?}", again.elapsed);

    // The guest's qemu.conf has the settings; the parent's file (its lower layer) is untouched.
    let guest_conf = sh(&client, &format!("cat {QEMU_CONF}"));
    for line in ["namespaces = []", "cgroup_controllers = []", "user = \"root\"", "group = \"root\""] {
        assert!(guest_conf.lines().any(|l| l == line), "no `{line}` in the guest's qemu.conf:\n{guest_conf}");
    }
    assert_eq!(std::fs::read(QEMU_CONF).unwrap_or_default(), parent_conf, "the parent's qemu.conf changed");
    assert_eq!(guest_conf.matches("# nestform:").count(), 1, "{guest_conf}");

    let tunnel = LibvirtTunnel::open(&client).unwrap();
    eprintln!("tunnel: {}", tunnel.uri());
    let t = Instant::now();
    let h2 = LibvirtProvider::new()
        .open(&tunnel.uri())
        .unwrap_or_else(|e| panic!("{e} (tunnel: {:?})", tunnel.last_error()));
    eprintln!("level 1 via tunnel: connected in {:.2?}, domain type `{}`", t.elapsed(), h2.domain_type());
    let generic: std::sync::Arc<dyn Hypervisor> = LibvirtProvider::new().connect(&tunnel.uri()).unwrap();
    let facts = generic.facts().unwrap();
    eprintln!("level 1 via tunnel: facts {facts:#?}");
    let owned = generic.list_owned().unwrap().objects;
    eprintln!("level 1 via tunnel: list_owned {owned:?}");
    // The parent's domains (level 1 itself among them) are hidden from the guest's libvirtd.
    assert!(owned.is_empty(), "{owned:?}");
    drop(generic);

    if std::env::var("NESTFORM_PROMOTE_LEVEL2").as_deref() == Ok("0") {
        return;
    }
    let t = Instant::now();
    let l2 = boot(&h2, &kernel, &initramfs, &agent, 2, 384);
    let created = t.elapsed();
    let owned = h2.list_owned().unwrap().objects;
    assert_eq!(owned.len(), 1, "{owned:?}");
    let client2 = wait_for_agent(&h2, &l2.id, LEVEL2_AGENT_TIMEOUT).unwrap_or_else(|e| {
        // The level-2 console log is a file in level 1 (the provider refuses to read it through a
        // tunnel), so it is read through level 1's agent.
        let name = &l2.name;
        panic!(
            "{e}; in level 1:\n{}",
            sh(
                &client,
                &format!(
                    "tail -c 3000 /var/log/libvirt/qemu/{name}-console.log; echo; \
                     tail -n 5 /var/log/libvirt/qemu/{name}.log; ps -eo pid,stat,time,args | grep [q]emu"
                )
            )
        )
    });
    let boot_to_agent = t.elapsed();
    let facts2 = client2.facts().unwrap();
    assert_eq!(facts2.nesting_level, 2);
    assert_eq!(facts2.hostname, l2.name);
    eprintln!("level 2: create_guest {created:.2?}, boot to agent {boot_to_agent:.2?}, facts {facts2:?}");
    eprintln!(
        "level 2: QEMU argv accel: {}",
        sh(&client, "ps -eo args | grep '[q]emu-system' | grep -o -- '-accel [a-z]*' | sort -u")
    );
    eprintln!("level 2: exec `true` round trip {:.2?} (mean of 10)", exec_true(&client2, 10));
    eprintln!("level 1: exec `true` round trip {:.2?} (mean of 10)", exec_true(&client, 10));
    drop(client2);
    drop(l2);
    assert!(h2.list_owned().unwrap().objects.is_empty(), "the level-2 guest is left");
}
