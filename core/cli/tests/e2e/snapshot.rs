//! `nestform snapshot` through the CLI: on libvirtd's test driver (live and offline snapshots, the
//! refusals, list, revert, delete), and once on a real lab guest (`qemu:///system`): a marker written
//! to its disk, a snapshot, a changed marker, a revert, and the old marker back.

use crate::support::{DestroyOnDrop, TestDriver, Workspace, TEST_URI};

/// Two guests on the test driver: `plain` (snapshotted live) and `careful` (a disk with
/// `cache = "unsafe"`, so offline).
fn two_guests(tag: &str) -> String {
    format!(
        r#"
kvm_host "l0" {{
  uri = "{TEST_URI}"
}}

nested_guest "plain" {{
  host   = kvm_host.l0
  name   = "{tag}-plain"
  vcpus  = 1
  memory = "128MiB"

  disk "root" {{
    size = "64MiB"
  }}
}}

nested_guest "careful" {{
  host   = kvm_host.l0
  name   = "{tag}-careful"
  vcpus  = 1
  memory = "128MiB"

  disk "data" {{
    size  = "64MiB"
    cache = "unsafe"
  }}
}}
"#
    )
}

#[test]
fn snapshots_on_the_test_driver() {
    let driver = TestDriver::connect();
    let tag = "e2snap";
    let ws = Workspace::new();
    ws.write("main.nf.hcl", &two_guests(tag));
    let _cleanup = DestroyOnDrop(&ws);
    ws.run(&["apply", "-auto-approve"]).success();

    let r = ws.run(&["snapshot", "create", "nested_guest.plain", "s1"]);
    r.success();
    assert!(r.stdout.contains("nested_guest.plain: Taking a live snapshot..."), "{}", r.stdout);
    assert!(r.stdout.contains("Snapshot `s1` of `nested_guest.plain` taken (live"), "{}", r.stdout);
    assert!(!r.stdout.contains("Stopping"), "nothing runs inside it: {}", r.stdout);

    let r = ws.run(&["snapshot", "create", "nested_guest.careful", "s1"]);
    r.success();
    let lines: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("nested_guest.careful:")).collect();
    assert_eq!(
        lines.iter().map(|l| l.split(" after ").next().unwrap()).collect::<Vec<_>>(),
        [
            "nested_guest.careful: Stopping...",
            "nested_guest.careful: Stopped",
            "nested_guest.careful: Taking an offline snapshot...",
            "nested_guest.careful: Snapshot taken",
            "nested_guest.careful: Starting...",
            "nested_guest.careful: Started",
        ],
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("`cache = \"unsafe\"`"), "{}", r.stdout);
    assert!(driver.domain_active(&format!("{tag}-careful")), "the guest runs again");

    // Refusals say what to do and change nothing.
    let r = ws.run(&["snapshot", "create", "nested_guest.plain", "s1"]);
    r.code(1);
    assert!(r.stderr.contains("already has a snapshot `s1`"), "{}", r.stderr);
    let r = ws.run(&["snapshot", "revert", "nested_guest.plain", "nope"]);
    r.code(1);
    assert!(r.stderr.contains("has no snapshot `nope`; it has `s1`"), "{}", r.stderr);
    let r = ws.run(&["snapshot", "create", "nested_guest.plain", "no/slash"]);
    r.code(1);
    assert!(r.stderr.contains("not a valid snapshot name"), "{}", r.stderr);
    let r = ws.run(&["snapshot", "create", "kvm_host.l0", "s2"]);
    r.code(1);
    assert!(r.stderr.contains("is not a guest"), "{}", r.stderr);

    let r = ws.run(&["snapshot", "list", "nested_guest.careful"]);
    r.success();
    assert!(r.stdout.starts_with("s1  offline  "), "{}", r.stdout);
    assert!(r.stdout.contains("(current)"), "{}", r.stdout);
    let r = ws.run(&["snapshot", "list", "-json", "nested_guest.plain"]);
    r.success();
    let listed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(listed[0]["owner"]["address"], "nested_guest.plain", "{listed}");
    assert_eq!(listed[0]["running"], true);

    // The guest is stopped behind nestform's back; a revert to the live snapshot runs it again and
    // state says so.
    driver.stop_domain(&format!("{tag}-plain"));
    let r = ws.run(&["snapshot", "revert", "nested_guest.plain", "s1"]);
    r.success();
    assert!(r.stdout.contains("Snapshot `s1` of `nested_guest.plain` reverted to (live"), "{}", r.stdout);
    assert!(driver.domain_active(&format!("{tag}-plain")));
    let show = ws.run(&["state", "show", "nested_guest.plain"]);
    assert!(
        show.stdout.contains("\"running\": true") || show.stdout.contains("running = true"),
        "{}",
        show.stdout
    );
    ws.run(&["plan", "-detailed-exitcode"]).code(0);

    ws.run(&["snapshot", "delete", "nested_guest.plain", "s1"]).success();
    let r = ws.run(&["snapshot", "list", "nested_guest.plain"]);
    assert_eq!(r.stdout.trim(), "`nested_guest.plain` has no snapshots.");
    // Destroy (by the guard) deletes guests that still have snapshots.
}

/// A real lab guest with a small qcow2 disk: a marker written to the disk survives a snapshot and a
/// revert. A lab guest mounts its parent's root over 9p, which QEMU will not save the memory of
/// ("Migration is disabled when VirtFS export path '/' is mounted in the guest"), so both steps are
/// offline: flush and power off, snapshot or revert, boot and wait for the agent.
#[test]
fn a_lab_guest_gets_its_disk_back() {
    let _turn = crate::lab::take_turn();
    let tag = "nfe2s";
    let ws = Workspace::new();
    ws.write(
        "main.nf.hcl",
        &format!(
            r#"
kvm_host "l0" {{
  uri = "qemu:///system"
}}

nested_guest "g" {{
  host   = kvm_host.l0
  name   = "{tag}-g"
  vcpus  = 1
  memory = "256MiB"

  disk "data" {{
    size = "16MiB"
  }}

  lab {{}}
}}
"#
        ),
    );
    let _cleanup = DestroyOnDrop(&ws);
    ws.run(&["apply", "-auto-approve"]).success();

    let write = |marker: &str| {
        let script = format!(
            "printf {marker} | dd of=/dev/vda conv=fsync 2>/dev/null && head -c {} /dev/vda",
            marker.len()
        );
        let r = ws.run(&["exec", "nested_guest.g", "--", "sh", "-c", &script]);
        r.success();
        assert_eq!(r.stdout, marker, "the marker as written");
    };
    write("marker-one");
    let r = ws.run(&["snapshot", "create", "nested_guest.g", "s1"]);
    r.success();
    assert!(
        r.stdout.contains("taken (offline: a lab guest mounts its parent's root over 9p"),
        "{}",
        r.stdout
    );
    write("marker-two");

    let r = ws.run(&["snapshot", "revert", "nested_guest.g", "s1"]);
    r.success();
    assert!(r.stdout.contains("nested_guest.g: Started after"), "{}", r.stdout);
    let r = ws.run(&["exec", "nested_guest.g", "--", "head", "-c", "10", "/dev/vda"]);
    r.success();
    assert_eq!(r.stdout, "marker-one", "the disk is back as it was at the snapshot");
    let r = ws.run(&["snapshot", "list", "nested_guest.g"]);
    assert!(r.stdout.starts_with("s1  offline  ") && r.stdout.contains("(current)"), "{}", r.stdout);
}
