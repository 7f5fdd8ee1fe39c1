//! Benchmarks on real guests: `examples/quickstart` (two lab guests on `qemu:///system`, TCG where
//! the host has no usable KVM) applied with its boot, shell loop and sha256 benchmarks on the host
//! and in each guest. The apply ends with the table, state keeps every run, a re-plan is a no-op,
//! `-replace` runs one benchmark again and leaves the others, and `nestform report` prints the same
//! table at any time.

use crate::lab::take_turn;
use crate::nesting::example;
use crate::support::DestroyOnDrop;

const GUESTS: [&str; 2] = ["nested_guest.small[0]", "nested_guest.small[1]"];

fn report(ws: &crate::support::Workspace) -> serde_json::Value {
    let r = ws.run(&["report", "-json"]);
    r.success();
    serde_json::from_str(&r.stdout).expect("report -json prints JSON")
}

#[test]
fn the_quickstart_lab_measures_every_level_and_keeps_every_run() {
    let _turn = take_turn();
    let ws = example("quickstart", "");
    let cleanup = DestroyOnDrop(&ws);

    let r = ws.run(&["apply", "-auto-approve"]);
    r.success();
    eprintln!("{}", r.stdout);
    // Progress names each benchmark; the table comes last, a row per benchmark and target.
    assert!(r.stdout.contains("benchmark.sha256: Measuring..."), "{}", r.stdout);
    let table = r.stdout.split("\nBenchmarks:\n").nth(1).unwrap_or_else(|| panic!("no table:\n{}", r.stdout));
    for row in ["boot", "shell_loop", "sha256"] {
        assert!(table.lines().any(|l| l.trim_start().starts_with(row)), "no `{row}` row:\n{table}");
    }
    assert_eq!(table.lines().filter(|l| l.contains("nested_guest.small[1]")).count(), 3, "{table}");

    let all = report(&ws);
    let lp = &all["benchmark.shell_loop"]["results"];
    let host = lp["kvm_host.local"]["median"].as_f64().unwrap();
    for guest in GUESTS {
        let g = &lp[guest];
        assert_eq!(g["n"], 3, "{lp}");
        // Measured inside the guest, compared with the level below (the host, level 0). A guest is
        // slower than the machine it runs on: the shape, not a figure.
        let ratio = g["vs_below"].as_f64().unwrap_or_else(|| panic!("{guest} has no vs_below: {lp}"));
        assert!(ratio > 1.0, "{guest} ran the loop faster than its host: {lp}");
        assert!((g["median"].as_f64().unwrap() / host - ratio).abs() < 1e-9, "{lp}");
        let boot = &all["benchmark.boot"]["results"][guest];
        assert_eq!(boot["n"], 1, "{boot}");
    }
    let samples = all["benchmark.sha256"]["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 9, "three runs on each of three targets");
    let guest_sample = samples.iter().find(|s| s["metadata"]["target"] == GUESTS[0]).unwrap();
    let meta = &guest_sample["metadata"];
    assert_eq!((meta["level"].as_u64(), meta["size_bytes"].as_u64()), (Some(1), Some(32 << 20)), "{meta}");
    assert_eq!(meta["hosts"][0]["host"], "kvm_host.local", "{meta}");
    assert!(meta["hosts"][0]["acceleration"].is_string(), "{meta}");
    assert!(meta["kernel"].is_string() && meta["loadavg_1m"].is_number(), "{meta}");

    let r = ws.run(&["plan", "-detailed-exitcode"]);
    assert_eq!(r.code, 0, "the re-plan is not a no-op:\n{}\n{}", r.stdout, r.stderr);

    // One benchmark again: new runs of it alone.
    let run_id = |all: &serde_json::Value, b: &str| all[b]["samples"][0]["metadata"]["run_id"].clone();
    let r = ws.run(&["apply", "-auto-approve", "-replace=benchmark.shell_loop"]);
    r.success();
    assert!(r.stdout.contains("1 replaced"), "{}", r.stdout);
    let again = report(&ws);
    assert_eq!(again["benchmark.sha256"], all["benchmark.sha256"], "sha256 ran again");
    assert_ne!(again["benchmark.shell_loop"]["samples"], all["benchmark.shell_loop"]["samples"]);
    assert!(run_id(&again, "benchmark.shell_loop").is_string());

    let r = ws.run(&["report"]);
    r.success();
    assert!(
        r.stdout.contains("vs level below") && r.stdout.contains("nested_guest.small[0]"),
        "{}",
        r.stdout
    );
    drop(cleanup);
}

/// A lab guest powered off by hand (`virsh destroy`) while a benchmark runs in it: the apply fails
/// naming the benchmark, the target and why, the benchmark is recorded tainted, and the next apply
/// starts the guest again and measures it anew.
#[test]
fn a_guest_powered_off_mid_benchmark_fails_it_clearly_and_the_next_apply_repairs_it() {
    let _turn = take_turn();
    let ws = crate::support::Workspace::new();
    ws.write(
        "main.nf.hcl",
        r#"
kvm_host "l0" {
  uri = "qemu:///system"
}

nested_guest "g" {
  host   = kvm_host.l0
  name   = "nfbench-off"
  vcpus  = 1
  memory = "256MiB"
  lab {}
}

benchmark "loop" {
  kind       = "shell_loop"
  targets    = [nested_guest.g]
  iterations = 3000000
  warmup     = 0
  repeat     = 1
}
"#,
    );
    let cleanup = DestroyOnDrop(&ws);
    let mut powered_off = None;
    let (code, lines, stderr) = crate::nesting::run_watched(&ws, &["apply", "-auto-approve"], |line| {
        if powered_off.is_none() && line.text.starts_with("benchmark.loop: Measuring...") {
            // Once the loop runs in the guest.
            std::thread::sleep(std::time::Duration::from_secs(3));
            powered_off = Some(crate::lab::virsh(&["destroy", "nfbench-off"]));
        }
    });
    let text = crate::nesting::all_text(&lines);
    assert!(powered_off.is_some(), "the benchmark never started:\n{text}\n{stderr}");
    assert_eq!(code, 1, "the apply did not fail:\n{text}\n{stderr}");
    assert!(stderr.contains("benchmark.loop"), "the error names no benchmark:\n{stderr}");
    assert!(stderr.contains("on `nested_guest.g`"), "the error names no target:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let all = report(&ws);
    assert_eq!(all["benchmark.loop"]["tainted"], true, "{all}");

    let r = ws.run(&["plan"]);
    assert!(r.stdout.contains("nested_guest.g") && r.stdout.contains("benchmark.loop"), "{}", r.stdout);
    let r = ws.run(&["apply", "-auto-approve"]);
    r.success();
    let all = report(&ws);
    assert_eq!(all["benchmark.loop"]["tainted"], false, "{all}");
    assert_eq!(all["benchmark.loop"]["results"]["nested_guest.g"]["n"], 1, "{all}");
    let r = ws.run(&["plan", "-detailed-exitcode"]);
    assert_eq!(r.code, 0, "the plan after the repair is not empty:\n{}\n{}", r.stdout, r.stderr);
    drop(cleanup);
}
