//! A guest promoted to a host, on real libvirt (`qemu:///system`, TCG at level 1), holding a guest of
//! its own: level 0 holds only level 1, the level-2 guest knows its level and has an address on the
//! network inside level 1, two commands reach each level side by side; the guest's `kvm_amd` reloaded
//! with `kvm_module_options` when it is promoted, seen in its `/sys`, a no-op re-plan, a change of
//! options refused at plan time while a guest runs inside, `nestform console` of a level-2 guest,
//! whose log lives inside level 1, a plan that starts nothing in a level 1 whose libvirtd stopped
//! (apply does), and a destroy that asks nothing of level 2. One lab for all of it: each build of
//! it costs minutes.
//!
//! Needs what `tests/run.sh` sets up (libvirtd, a guest kernel); takes its turn with `lab`'s tests.

use crate::lab::{take_turn, virsh};
use crate::support::{DestroyOnDrop, Workspace};

/// A level-1 lab guest promoted with `kvm_module_options`, and a level-2 lab guest inside it.
fn tower(tag: &str, dump_invalid_vmcb: u32, guest2_running: bool) -> String {
    crate::lab::two_levels(
        tag,
        23,
        &format!("kvm_module_options = {{ nested = 1, dump_invalid_vmcb = {dump_invalid_vmcb} }}"),
        &format!("running = {guest2_running}"),
    )
}

#[test]
fn a_promoted_guest_holds_a_guest_loads_kvm_with_its_options_and_its_guests_consoles_are_readable() {
    let turn = take_turn();
    let tag = "nfe2p";
    let ws = Workspace::new();
    ws.write("main.nf.hcl", &tower(tag, 1, true));
    let cleanup = DestroyOnDrop(&ws);

    let r = ws.run(&["apply", "-auto-approve"]);
    r.success();
    assert!(r.stdout.contains("nested_guest.guest2: Creation complete"), "{}", r.stdout);
    // Level 0 holds only guest1: guest2 and its network live inside it.
    let domains = virsh(&["list", "--all", "--name"]);
    assert!(domains.contains(&format!("{tag}-g1")) && !domains.contains(&format!("{tag}-g2")), "{domains}");

    // Through two agents: guest2 knows its level and has an address on the network inside guest1.
    let r = ws.run(&[
        "exec",
        "nested_guest.guest2",
        "--",
        "sh",
        "-c",
        "grep -o 'nestform.level=[0-9]' /proc/cmdline; for i in $(seq 75); do ip -4 -o addr show eth0 | grep -q 10.213.23. && break; sleep 0.2; done; ip -4 -o addr show eth0",
    ]);
    r.success();
    assert!(r.stdout.contains("nestform.level=2"), "{}", r.stdout);
    assert!(r.stdout.contains("10.213.23."), "no address on the network inside guest1: {}", r.stdout);

    // Two commands reach each level side by side, each on an agent channel of its own: the second
    // takes no channel from the first (which, when channels were taken over, ended its session).
    for guest in ["nested_guest.guest1", "nested_guest.guest2"] {
        let first = {
            let dir = ws.path().to_path_buf();
            let guest = guest.to_string();
            std::thread::spawn(move || {
                crate::support::run_in(&dir, &["exec", &guest, "--", "sh", "-c", "sleep 8; echo first"])
            })
        };
        std::thread::sleep(std::time::Duration::from_secs(3));
        let second = ws.run(&["exec", guest, "--", "echo", "second"]);
        second.success();
        assert_eq!(second.stdout.trim(), "second", "{guest}");
        let first = first.join().unwrap();
        first.success();
        assert_eq!(first.stdout.trim(), "first", "{guest}: the first command lost its session");
    }

    // Inside level 1 the vendor module was reloaded with the options (`dump_invalid_vmcb` is off by
    // default; an option the CPU can refuse, such as `pause_filter_thresh` under TCG, would prove nothing).
    assert_eq!(level1_kvm(&ws), "nested=1 dump_invalid_vmcb=1");

    // Level 2's console log is a file inside level 1: read through level 1's agent.
    let r = ws.run(&["console", "nested_guest.guest2", "--bytes", "1000000"]);
    r.success();
    assert!(r.stdout.contains("Linux version"), "the kernel's first line: {}", r.stdout);
    assert!(r.stdout.contains("nestform-init: starting"), "{}", r.stdout);

    // Refresh reads the options inside level 1 through the promoted host: nothing to do.
    let r = ws.run(&["plan", "-detailed-exitcode"]);
    r.code(0);
    assert!(r.stdout.contains("kvm_host.guest1: QEMU"), "the promoted host was refreshed: {}", r.stdout);

    // Another value would reload KVM under guest2: refused at plan time, at the attribute.
    ws.write("main.nf.hcl", &tower(tag, 0, true));
    let r = ws.run(&["plan"]);
    r.code(1);
    assert!(r.stderr.contains("cannot reload `kvm_amd`"), "{}", r.stderr);
    assert!(r.stderr.contains("`dump_invalid_vmcb` `Y` -> `0`"), "{}", r.stderr);
    assert!(r.stderr.contains("`nested_guest.guest2`"), "{}", r.stderr);
    assert!(r.stderr.contains("kvm_module_options"), "{}", r.stderr);

    // With guest2 stopped it can change: reloaded under level 1's running libvirtd, which goes on.
    ws.write("main.nf.hcl", &tower(tag, 1, false));
    ws.run(&["apply", "-auto-approve"]).success();
    ws.write("main.nf.hcl", &tower(tag, 0, false));
    let r = ws.run(&["apply", "-auto-approve"]);
    r.success();
    assert!(r.stdout.contains("kvm_host.guest1: Modifications complete"), "{}", r.stdout);
    assert_eq!(level1_kvm(&ws), "nested=1 dump_invalid_vmcb=0");
    ws.run(&["plan", "-detailed-exitcode"]).code(0);

    // A plan changes nothing anywhere: with libvirtd stopped in level 1, the plan says apply starts
    // it, and starts nothing itself; apply does, and the next plan has nothing to do.
    let stop = "kill $(cat /run/libvirtd.pid); while [ -f /run/libvirtd.pid ] && kill -0 $(cat /run/libvirtd.pid) 2>/dev/null; do sleep 0.2; done";
    ws.run(&["exec", "nested_guest.guest1", "--", "sh", "-c", stop]).success();
    let r = ws.run(&["plan", "-detailed-exitcode"]);
    r.code(2);
    assert!(r.stdout.contains("kvm_host.guest1 will be created"), "{}", r.stdout);
    assert!(r.stdout.contains("because libvirt is not running in its guest"), "{}", r.stdout);
    assert!(r.stdout.contains("Plan: 1 to add, 0 to change, 0 to replace, 0 to destroy."), "{}", r.stdout);
    assert_eq!(level1_libvirtd(&ws), "stopped", "the plan started libvirtd in level 1");
    let r = ws.run(&["apply", "-auto-approve"]);
    r.success();
    assert!(r.stdout.contains("kvm_host.guest1: Creation complete"), "{}", r.stdout);
    assert_eq!(level1_libvirtd(&ws), "running");
    ws.run(&["plan", "-detailed-exitcode"]).code(0);

    let r = ws.run(&["destroy", "-auto-approve"]);
    r.success();
    // Deleting guest1 takes what ran inside it along; nothing is asked of level 2.
    assert!(r.stdout.contains("nested_guest.guest1: Destruction complete"), "{}", r.stdout);
    let swept = "nested_guest.guest2: Removed with `nested_guest.guest1`, which it ran inside";
    assert!(r.stdout.contains(swept), "no `{swept}`:\n{}", r.stdout);
    drop(cleanup);
    crate::lab::assert_nothing_left(tag, &turn);
}

/// Whether libvirtd runs in level 1: `running` or `stopped`.
fn level1_libvirtd(ws: &Workspace) -> String {
    let check = "[ -f /run/libvirtd.pid ] && kill -0 $(cat /run/libvirtd.pid) 2>/dev/null && echo running || echo stopped";
    let r = ws.run(&["exec", "nested_guest.guest1", "--", "sh", "-c", check]);
    r.success();
    r.stdout.trim().to_string()
}

/// What level 1's `kvm_amd` has for the test's options, as its own `/sys` says.
fn level1_kvm(ws: &Workspace) -> String {
    let r = ws.run(&[
        "exec",
        "nested_guest.guest1",
        "--",
        "sh",
        "-c",
        "cd /sys/module/kvm_amd/parameters && echo nested=$(cat nested) dump_invalid_vmcb=$(cat dump_invalid_vmcb)",
    ]);
    r.success();
    r.stdout.trim().replace("=Y", "=1").replace("=N", "=0")
}
