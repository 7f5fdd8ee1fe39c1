//! Every example under `examples/` validates, and plans against libvirt's in-process test driver.
//! Each test plans in a copy of the example: a plan takes the state lock in its directory, and two
//! tests planning one example at once would refuse each other (seen: `quickstart` locked by the
//! other test's `plan`).

use std::path::{Path, PathBuf};

use crate::support::run_in;

/// A copy of the example directory `dir` (its files, and their folders) in a scratch directory.
fn copy_of(dir: &Path) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).expect("reading an example") {
            let entry = entry.unwrap();
            // What a user's own run of the example left there (the README's first command applies
            // `examples/quickstart` in place) is theirs, not the example's.
            if entry.file_name().to_string_lossy().starts_with("nestform.state.json") {
                continue;
            }
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                std::fs::create_dir(&target).unwrap();
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let scratch = tempfile::tempdir().expect("a temporary directory");
    copy(dir, scratch.path());
    scratch
}

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
    for example in examples() {
        let copy = copy_of(&example);
        let dir = copy.path();
        let r = run_in(dir, &["validate"]);
        r.success();
        // Plan without contacting any host: the whole tree is planned, every level included.
        let r = run_in(dir, &["plan", "-refresh=false", "-detailed-exitcode"]);
        r.code(2);
        assert!(r.stdout.contains("to add"), "{}: {}", example.display(), r.stdout);
        assert!(!dir.join("nestform.state.json").exists(), "plan wrote state in {}", example.display());
    }
}

#[test]
fn quickstart_plans_against_the_test_driver() {
    let copy = copy_of(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart"));
    // libvirt's in-process test driver: refresh really connects, and nothing outside this process is touched.
    let r = run_in(copy.path(), &["plan", "-var", "uri=test:///default", "-detailed-exitcode"]);
    r.code(2);
    // Refresh reached the host (no warning about it), and the plan covers the host, network, guests
    // and the three benchmarks.
    assert!(!r.stderr.contains("cannot"), "{}", r.stderr);
    assert!(r.stdout.contains("Plan: 7 to add, 0 to change, 0 to replace, 0 to destroy."), "{}", r.stdout);
}

#[test]
fn a_guest_larger_than_its_host_is_refused_at_its_memory_attribute() {
    // The test driver's host has 16 CPUs and 3 GiB; openstack-lab's big guest asks for 24 GiB.
    let copy = copy_of(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/openstack-lab"));
    let dir = copy.path();
    let r = run_in(dir, &["plan", "-var", "uri=test:///default"]);
    r.code(1);
    assert!(r.stderr.contains("main.nf.hcl:"), "{}", r.stderr);
    assert!(r.stderr.contains("memory"), "{}", r.stderr);
    assert!(!dir.join("nestform.state.json").exists());
}
