//! The fault suite's run in CI: a two-level lab with siblings (`examples/openstack-lab`, scaled down:
//! one promoted lab guest, three nodes started side by side inside it) built, used and destroyed three
//! times in a row. Every run must pass without any recovery: a step repeated after a lost answer, a
//! libvirtd restarted, a connection made again. A recovery hides a cause; this test fails on one.

use std::time::Instant;

use crate::lab::{take_turn, virsh};
use crate::nesting::{all_text, example, recoveries, run_timed, Destroy, OPENSTACK_SCALED};

const RUNS: usize = 3;
const NODES: [&str; 3] = ["controller", "compute", "network"];

#[test]
#[ignore = "the fault suite: minutes of real guests; `tests/run.sh` runs it on its own"]
fn a_two_level_lab_with_siblings_comes_up_three_times_in_a_row_without_a_recovery() {
    let _turn = take_turn();
    for run in 1..=RUNS {
        let ws = example("openstack-lab", OPENSTACK_SCALED);
        let cleanup = Destroy(&ws);
        let start = Instant::now();
        let (code, lines, stderr) = run_timed(&ws, &["apply", "-auto-approve", "-var-file=scaled.vars.hcl"]);
        let applied = start.elapsed();
        assert_eq!(code, 0, "run {run}: apply failed:\n{}\n{stderr}", all_text(&lines));
        let used: Vec<String> = recoveries(&lines).into_iter().map(str::to_string).collect();

        // The three siblings answer side by side, each over its own agent session through the lab
        // guest's agent.
        let start = Instant::now();
        let execs: Vec<_> = NODES
            .iter()
            .map(|node| {
                let dir = ws.path().to_path_buf();
                let addr = format!("nested_guest.node[\"{node}\"]");
                std::thread::spawn(move || crate::support::run_in(&dir, &["exec", &addr, "--", "echo", "up"]))
            })
            .collect();
        for (node, exec) in NODES.iter().zip(execs) {
            let r = exec.join().unwrap();
            assert_eq!((r.code, r.stdout.trim()), (0, "up"), "run {run}: {node}: {}", r.stderr);
        }
        let side_by_side = start.elapsed();

        let start = Instant::now();
        let r = ws.run(&["destroy", "-auto-approve", "-var-file=scaled.vars.hcl"]);
        r.success();
        let destroyed = start.elapsed();
        drop(cleanup);
        let domains = virsh(&["list", "--all", "--name"]);
        assert!(!domains.lines().any(|d| d.trim() == "openstack"), "run {run}: left: {domains}");
        eprintln!(
            "fault: run {run}/{RUNS}: apply {:.1} s, three execs side by side {:.1} s, destroy {:.1} s, \
             recoveries {}",
            applied.as_secs_f64(),
            side_by_side.as_secs_f64(),
            destroyed.as_secs_f64(),
            used.len()
        );
        assert!(used.is_empty(), "run {run} needed a recovery: {used:?}\n{}", all_text(&lines));
    }
}
