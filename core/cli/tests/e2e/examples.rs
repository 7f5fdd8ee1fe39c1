//! Every example under `examples/` validates, and plans against libvirt's in-process test driver.

use std::path::PathBuf;

use crate::support::run_in;

fn examples() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("examples/ exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 3, "expected quickstart, inception and openstack-lab in {}", root.display());
    dirs
}

#[test]
fn every_example_validates_and_plans() {
    for dir in examples() {
        let r = run_in(&dir, &["validate"]);
        r.success();
        // Plan without contacting any host: the whole tree is planned, every level included.
        let r = run_in(&dir, &["plan", "-refresh=false", "-detailed-exitcode"]);
        r.code(2);
        assert!(r.stdout.contains("to add"), "{}: {}", dir.display(), r.stdout);
        assert!(!dir.join("nestform.state.json").exists(), "plan wrote state in {}", dir.display());
    }
}

#[test]
fn quickstart_plans_against_the_test_driver() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
    // libvirt's in-process test driver: refresh really connects, and nothing outside this process is touched.
    let r = run_in(&dir, &["plan", "-var", "uri=test:///default", "-detailed-exitcode"]);
    r.code(2);
    // Refresh reached the host (no warning about it), and the plan covers the host, network and guests.
    assert!(!r.stderr.contains("cannot"), "{}", r.stderr);
    assert!(r.stdout.contains("Plan: 4 to add, 0 to change, 0 to replace, 0 to destroy."), "{}", r.stdout);
}

#[test]
fn a_guest_larger_than_its_host_is_refused_at_its_memory_attribute() {
    // The test driver's host has 16 CPUs and 3 GiB; openstack-lab's big guest asks for 24 GiB.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/openstack-lab");
    let r = run_in(&dir, &["plan", "-var", "uri=test:///default"]);
    r.code(1);
    assert!(r.stderr.contains("main.nf.hcl:"), "{}", r.stderr);
    assert!(r.stderr.contains("memory"), "{}", r.stderr);
    assert!(!dir.join("nestform.state.json").exists());
}
