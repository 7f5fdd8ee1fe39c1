//! Commands that need no hypervisor: validate, fmt, diagnostics, exit codes, flags.

use crate::support::Workspace;

const VALID: &str = r#"
kvm_host "l0" {
  uri = "test:///default"
}

nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "256MiB"
}
"#;

#[test]
fn validate_accepts_a_valid_configuration() {
    let ws = Workspace::new();
    ws.write("main.nf.hcl", VALID);
    let r = ws.run(&["validate"]);
    r.success();
    assert!(r.stdout.contains("Success! The configuration is valid."), "{}", r.stdout);
}

#[test]
fn validate_reports_every_problem_with_its_place() {
    let ws = Workspace::new();
    ws.write(
        "main.nf.hcl",
        r#"kvm_host "l0" {
  uri = "test:///default"
}

nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = "two"
  memory = "256MiB"
}

nested_guest "g2" {
  host   = kvm_host.nope
  vcpus  = 1
  memory = "256MiB"
}
"#,
    );
    let r = ws.run(&["validate"]);
    r.code(1);
    // Both problems, each with file:line:col of the attribute.
    assert!(r.stderr.contains("main.nf.hcl:7:"), "{}", r.stderr);
    assert!(r.stderr.contains("main.nf.hcl:12:"), "{}", r.stderr);
    assert!(r.stderr.contains("vcpus"), "{}", r.stderr);
    assert!(r.stderr.contains("kvm_host.nope"), "{}", r.stderr);
}

#[test]
fn a_directory_without_configuration_is_an_error() {
    let ws = Workspace::new();
    let r = ws.run(&["validate"]);
    r.code(1);
    assert!(r.stderr.contains("*.nf.hcl"), "{}", r.stderr);
}

#[test]
fn fmt_check_lists_unformatted_files_and_fmt_fixes_them() {
    let ws = Workspace::new();
    ws.write("main.nf.hcl", "kvm_host \"l0\" {\nuri=\"test:///default\"\n}\n");
    let r = ws.run(&["fmt", "-check"]);
    r.code(3);
    assert!(r.stdout.contains("main.nf.hcl"), "{}", r.stdout);
    assert_eq!(
        ws.read("main.nf.hcl"),
        "kvm_host \"l0\" {\nuri=\"test:///default\"\n}\n",
        "-check changed the file"
    );
    ws.run(&["fmt"]).success();
    ws.run(&["fmt", "-check"]).success();
    assert!(ws.read("main.nf.hcl").contains("  uri = \"test:///default\""), "{}", ws.read("main.nf.hcl"));
}

#[test]
fn bad_flags_and_addresses_are_clear_errors() {
    let ws = Workspace::new();
    ws.write("main.nf.hcl", VALID);
    let r = ws.run(&["plan", "-target", "guest1"]);
    r.code(1);
    assert!(r.stderr.contains("`guest1` is not a resource address"), "{}", r.stderr);
    let r = ws.run(&["plan", "-var", "novalue"]);
    r.code(1);
    assert!(r.stderr.contains("has no `=`"), "{}", r.stderr);
}

#[test]
fn state_commands_on_an_empty_state() {
    let ws = Workspace::new();
    ws.write("main.nf.hcl", VALID);
    ws.run(&["state", "list"]).success();
    let r = ws.run(&["state", "show", "nested_guest.g1"]);
    r.code(1);
    assert!(r.stderr.contains("no resource `nested_guest.g1` in the state"), "{}", r.stderr);
    let r = ws.run(&["show"]);
    r.success();
    assert!(r.stdout.contains("empty"), "{}", r.stdout);
}

#[test]
fn graph_prints_one_cluster_per_level() {
    let ws = Workspace::new();
    ws.write(
        "main.nf.hcl",
        &format!(
            "{VALID}\nkvm_host \"g1\" {{\n  guest  = nested_guest.g1\n  nested = true\n}}\n\nnested_guest \"g2\" {{\n  host   = kvm_host.g1\n  vcpus  = 1\n  memory = \"128MiB\"\n}}\n"
        ),
    );
    let r = ws.run(&["graph"]);
    r.success();
    assert!(r.stdout.starts_with("digraph"), "{}", r.stdout);
    assert!(r.stdout.contains("cluster"), "{}", r.stdout);
    assert!(r.stdout.contains("nested_guest.g2"), "{}", r.stdout);
}

#[test]
fn output_cut_short_by_its_reader_ends_quietly_with_success() {
    let ws = Workspace::new();
    ws.write("main.nf.hcl", VALID);
    for args in [
        &["validate"][..],
        &["graph"],
        &["plan"],
        &["plan", "-json"],
        &["show"],
        &["show", "-json"],
        &["state", "list"],
        &["validate", "-json"],
    ] {
        let r = ws.run_with_stdout_closed(args);
        assert_eq!(r.code, 0, "`nestform {}` exited {}: {}", args.join(" "), r.code, r.stderr);
        assert!(!r.stderr.contains("panicked") && !r.stderr.contains("Broken pipe"), "{}", r.stderr);
    }
    // The plan released its state lock on the way out, and a plan saved with `-out` is kept whole.
    ws.run(&["plan"]).success();
    ws.run_with_stdout_closed(&["plan", "-out=saved.plan"]).code(0);
    ws.run(&["show", "-json", "saved.plan"]).success();
}
