//! The fault suite. Its run in CI: a two-level lab with siblings (`examples/openstack-lab`, scaled
//! down: one promoted lab guest, three nodes on two networks started side by side inside it) built,
//! used and destroyed three times in a row. Every run must pass without any recovery: a step repeated
//! after a lost answer, a libvirtd restarted, a connection made again. A recovery hides a cause; this
//! test fails on one. The other tests here inject faults by hand; each says how to run it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::lab::{take_turn, virsh};
use crate::nesting::{
    all_text, example, exec, recoveries, run_timed, run_watched, span, Destroy, Line, OPENSTACK_SCALED,
    TOWER_SCALED,
};
use crate::support::Workspace;

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
        crate::nesting::print_steps(&format!("fault: run {run}"), &lines);
        for l in lines.iter().filter(|l| l.text.contains("Creation complete")) {
            eprintln!(
                "fault: run {run}: at {:6.1} s {}",
                l.at.as_secs_f64(),
                l.text.split(" (").next().unwrap_or("")
            );
        }
        the_nodes_started_together(run, &lines);

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
        the_nodes_reach_each_other(&ws);
        let r = ws.run(&["plan", "-detailed-exitcode", "-var-file=scaled.vars.hcl"]);
        assert_eq!(r.code, 0, "run {run}: the re-plan is not empty:\n{}\n{}", r.stdout, r.stderr);

        let start = Instant::now();
        if run == RUNS {
            destroy_with_the_lab_guest_crashed(&ws);
        } else {
            ws.run(&["destroy", "-auto-approve", "-var-file=scaled.vars.hcl"]).success();
        }
        let destroyed = start.elapsed();
        drop(cleanup);
        let domains = virsh(&["list", "--all", "--name"]);
        assert!(!domains.lines().any(|d| d.trim() == "openstack"), "run {run}: left: {domains}");
        eprintln!(
            "fault: run {run}/{RUNS}: apply {:.1} s, three execs side by side {:.1} s, destroy{} {:.1} s, \
             recoveries {}",
            applied.as_secs_f64(),
            side_by_side.as_secs_f64(),
            if run == RUNS { " with the lab guest crashed" } else { "" },
            destroyed.as_secs_f64(),
            used.len()
        );
        let warned = crate::nesting::warnings(&ws);
        for w in &warned {
            eprintln!("fault: run {run}: {w}");
        }
        assert!(used.is_empty(), "run {run} needed a recovery: {used:?}\n{}\n{warned:#?}", all_text(&lines));
    }
}

/// All three nodes are started before any of them is ready: they boot side by side.
fn the_nodes_started_together(run: usize, lines: &[Line]) {
    let nodes = NODES.map(|n| span(lines, &format!("nested_guest.node[\"{n}\"]")));
    let first_ready = nodes.iter().map(|(_, end)| *end).min().unwrap();
    assert!(
        nodes.iter().all(|(start, _)| *start < first_ready),
        "run {run}: the nodes did not start together"
    );
    let wall = nodes.iter().map(|(_, e)| *e).max().unwrap() - nodes.iter().map(|(s, _)| *s).min().unwrap();
    let slowest = nodes.iter().map(|(s, e)| *e - *s).max().unwrap();
    eprintln!(
        "fault: run {run}: three nodes in {:.1} s, the slowest alone {:.1} s: {:.2}x",
        wall.as_secs_f64(),
        slowest.as_secs_f64(),
        wall.as_secs_f64() / slowest.as_secs_f64()
    );
}

/// Each node has an address on both networks inside the lab guest; they reach each other there, and
/// the outer network's gateway (level 0, in the test's namespace) through the lab guest's NAT.
fn the_nodes_reach_each_other(ws: &Workspace) {
    let wait_for = |iface: &str, net: &str| {
        format!(
            "for i in $(seq 100); do ip -4 -o addr show {iface} | grep -q {net} && break; sleep 0.2; done"
        )
    };
    let mut mgmt = Vec::new();
    for node in NODES {
        let (out, _) = exec(
            ws,
            &format!("nested_guest.node[\"{node}\"]"),
            &format!(
                "{}; {}; ip -4 -o addr show",
                wait_for("eth0", "10.41.0."),
                wait_for("eth1", "10.42.0.")
            ),
        );
        assert!(out.contains("10.42.0."), "{node} has no address on the provider network: {out}");
        let addr = out
            .split_whitespace()
            .find(|w| w.starts_with("10.41.0."))
            .unwrap_or_else(|| panic!("{node} has no address on the management network: {out}"));
        mgmt.push(addr.split('/').next().unwrap().to_string());
    }
    let (out, _) = exec(
        ws,
        "nested_guest.node[\"controller\"]",
        &format!(
            "busybox ping -c 1 -W 5 {} && busybox ping -c 1 -W 5 {} && busybox ping -c 1 -W 5 10.40.0.1",
            mgmt[1], mgmt[2]
        ),
    );
    assert!(out.matches(" 0% packet loss").count() == 3, "{out}");
}

/// The lab guest crashes (powered off by hand, as `virsh destroy` does): nothing inside it answers
/// any more, and destroy neither waits for it nor fails; deleting the lab guest takes its networks
/// and nodes along.
fn destroy_with_the_lab_guest_crashed(ws: &Workspace) {
    virsh(&["destroy", "openstack"]);
    let r = ws.run(&["destroy", "-auto-approve", "-var-file=scaled.vars.hcl"]);
    r.success();
    assert!(
        !r.stderr.contains("cannot reach"),
        "destroy tried to reach inside the crashed guest:\n{}",
        r.stderr
    );
    assert!(r.stdout.contains("nested_guest.openstack: Destruction complete"), "{}", r.stdout);
    for inner in ["kvm_host.openstack", "nat_network.mgmt", "nested_guest.node[\"compute\"]"] {
        let swept = format!("{inner}: Removed with `nested_guest.openstack`, which it ran inside");
        assert!(r.stdout.contains(&swept), "no `{swept}`:\n{}", r.stdout);
    }
    assert_eq!(ws.run(&["state", "list"]).stdout.trim(), "", "left in state");
}

/// `nestform exec` in a loop against level 1 and level 2 while the tower (`examples/inception` to
/// guest3) is applied: each guest's execs begin once the state records it, and go on until the apply
/// ends. Every exec and the apply must succeed, and the apply must need no recovery: sessions to the
/// same guests share them instead of taking them over. By hand (about 15 minutes):
/// `cargo test -p nestform --test e2e fault::exec_loops -- --ignored --nocapture`.
#[test]
#[ignore = "by hand: the whole tower built while execs run beside it"]
fn exec_loops_against_levels_1_and_2_all_finish_while_the_tower_applies() {
    let _turn = take_turn();
    let ws = example("inception", TOWER_SCALED);
    let cleanup = Destroy(&ws);
    let done = AtomicBool::new(false);
    let (apply, loops) = std::thread::scope(|scope| {
        let apply = scope.spawn(|| {
            let args = ["apply", "-auto-approve", "-var-file=scaled.vars.hcl", "-target=nested_guest.guest3"];
            let result = run_timed(&ws, &args);
            done.store(true, Ordering::SeqCst);
            result
        });
        let loops: Vec<_> = ["guest1", "guest2"]
            .into_iter()
            .map(|guest| {
                let (ws, done) = (&ws, &done);
                scope.spawn(move || {
                    let addr = format!("nested_guest.{guest}");
                    let mut runs: Vec<(Duration, i32, String)> = Vec::new();
                    while !done.load(Ordering::SeqCst) {
                        if !ws.read("nestform.state.json").contains(&format!("\"address\": \"{addr}\"")) {
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                        let start = Instant::now();
                        let r = ws.run(&["exec", &addr, "--", "true"]);
                        runs.push((start.elapsed(), r.code, r.stderr));
                    }
                    (guest, runs)
                })
            })
            .collect();
        (apply.join().unwrap(), loops.into_iter().map(|l| l.join().unwrap()).collect::<Vec<_>>())
    });
    let (code, lines, stderr) = apply;
    for (guest, runs) in &loops {
        let mut took: Vec<f64> = runs.iter().map(|(d, _, _)| d.as_secs_f64()).collect();
        took.sort_by(f64::total_cmp);
        let failed: Vec<&String> = runs.iter().filter(|(_, code, _)| *code != 0).map(|(_, _, e)| e).collect();
        eprintln!(
            "exec loop: {guest}: {} execs during the apply, {} failed, median {:.2} s, slowest {:.2} s",
            runs.len(),
            failed.len(),
            took.get(took.len() / 2).copied().unwrap_or(0.0),
            took.last().copied().unwrap_or(0.0)
        );
        assert!(failed.is_empty(), "{guest}: execs failed during the apply: {failed:?}");
        assert!(!runs.is_empty(), "{guest}: no exec ran during the apply");
    }
    assert_eq!(code, 0, "apply failed beside the execs:\n{}\n{stderr}", all_text(&lines));
    let used = recoveries(&lines);
    assert!(used.is_empty(), "the apply needed a recovery beside the execs: {used:?}\n{}", all_text(&lines));
    drop(cleanup);
}

/// Applies `examples/openstack-lab` scaled down up to its promoted lab guest (`kvm_host.openstack`),
/// the level the faults below hit.
fn lab_guest_promoted() -> (Workspace, f64) {
    let ws = example("openstack-lab", OPENSTACK_SCALED);
    let start = Instant::now();
    let args = ["apply", "-auto-approve", "-var-file=scaled.vars.hcl", "-target=kvm_host.openstack"];
    let (code, lines, stderr) = run_timed(&ws, &args);
    assert_eq!(code, 0, "the lab guest did not come up:\n{}\n{stderr}", all_text(&lines));
    (ws, start.elapsed().as_secs_f64())
}

/// The plan after a repair: nothing to change at any level, and no warning of an object nestform
/// owns but does not record.
fn converged(ws: &Workspace, what: &str) {
    let r = ws.run(&["plan", "-detailed-exitcode", "-var-file=scaled.vars.hcl"]);
    assert_eq!(r.code, 0, "{what}: the plan after the repair is not empty:\n{}\n{}", r.stdout, r.stderr);
    for orphan in ["left alone", "missing from the state"] {
        assert!(
            !r.stdout.contains(orphan) && !r.stderr.contains(orphan),
            "{what}: {}\n{}",
            r.stdout,
            r.stderr
        );
    }
}

/// libvirtd in a promoted guest killed with SIGKILL while the apply creates the guests inside it:
/// the apply ends with an error that names what failed, and the next apply starts libvirtd again,
/// finishes the lab and leaves nothing it does not record. By hand (about 5 minutes):
/// `cargo test -p nestform --test e2e fault::libvirtd_killed -- --ignored --nocapture`.
#[test]
#[ignore = "by hand: a fault injected into real guests"]
fn libvirtd_killed_in_a_promoted_guest_mid_apply_fails_clearly_and_the_next_apply_repairs_it() {
    let _turn = take_turn();
    let (ws, up) = lab_guest_promoted();
    let cleanup = Destroy(&ws);
    let mut killed = None;
    let args = ["apply", "-auto-approve", "-var-file=scaled.vars.hcl"];
    let (code, lines, stderr) = run_watched(&ws, &args, |line| {
        if killed.is_none() && line.text.starts_with("nested_guest.node") && line.text.contains("Creating...")
        {
            // Once the first node's create is under way, at the very libvirtd it goes to.
            let r =
                ws.run(&["exec", "nested_guest.openstack", "--", "sh", "-c", "kill -9 $(pidof libvirtd)"]);
            killed = Some((line.at, r));
        }
    });
    let (at, kill) = killed.expect("the apply created a node");
    assert_eq!(kill.code, 0, "killing libvirtd failed: {}", kill.stderr);
    let text = all_text(&lines);
    eprintln!(
        "fault: libvirtd killed at {:.1} s; the apply exited {code}:\n{text}\n{stderr}",
        at.as_secs_f64()
    );
    // Whatever the nodes' creates had done, the apply cannot finish them all: each failure names its
    // resource and libvirtd's connection, not a hang or a panic.
    assert_eq!(code, 1, "the apply did not fail:\n{text}\n{stderr}");
    assert!(stderr.contains("nested_guest.node["), "the error names no node:\n{stderr}");
    assert!(
        stderr.contains("the connection to libvirtd ended"),
        "the error does not say libvirtd went:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let start = Instant::now();
    let (code, lines, stderr) = run_timed(&ws, &args);
    let repaired = start.elapsed().as_secs_f64();
    assert_eq!(code, 0, "the next apply did not repair the lab:\n{}\n{stderr}", all_text(&lines));
    converged(&ws, "libvirtd killed");
    eprintln!("fault: libvirtd killed: lab guest up in {up:.1} s, the repairing apply took {repaired:.1} s");
    drop(cleanup);
}

/// The agent of a level-1 guest killed with SIGKILL while an `exec` runs there: the exec fails at
/// once with an error that says the session ended (not after its timeout, not never), the guest's
/// init starts the agent again, and the next `exec` and plan work as before. By hand (about 2
/// minutes): `cargo test -p nestform --test e2e fault::the_agent_killed -- --ignored --nocapture`.
#[test]
#[ignore = "by hand: a fault injected into real guests"]
fn the_agent_killed_mid_exec_fails_that_exec_clearly_and_the_next_one_works() {
    let _turn = take_turn();
    let (ws, _) = lab_guest_promoted();
    let cleanup = Destroy(&ws);
    let dir = ws.path().to_path_buf();
    let long = std::thread::spawn(move || {
        let start = Instant::now();
        let r = crate::support::run_in(&dir, &["exec", "nested_guest.openstack", "--", "sleep", "300"]);
        (start.elapsed(), r)
    });
    // The long exec is under way once its `sleep` shows in the guest.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = ws.run(&["exec", "nested_guest.openstack", "--", "sh", "-c", "pidof sleep || true"]);
        if !r.stdout.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the long exec never started: {}", r.stderr);
        std::thread::sleep(Duration::from_millis(500));
    }
    // The agent serving this exec is the one killed: its answer cannot come, and need not.
    let kill =
        ws.run(&["exec", "nested_guest.openstack", "--", "sh", "-c", "kill -9 $(pidof nestform-agent)"]);
    eprintln!("fault: the killing exec exited {}: {}", kill.code, kill.stderr.trim());
    let (took, r) = long.join().unwrap();
    eprintln!(
        "fault: the exec under the killed agent exited {} after {:.1} s: {}",
        r.code,
        took.as_secs_f64(),
        r.stderr.trim()
    );
    assert_ne!(r.code, 0, "the exec under a killed agent succeeded: {}", r.stdout);
    assert!(took < Duration::from_secs(120), "the exec took {took:?} to notice its agent was gone");
    assert!(r.stderr.contains("nested_guest.openstack"), "the error names no guest: {}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);

    let start = Instant::now();
    let r = ws.run(&["exec", "nested_guest.openstack", "--", "echo", "back"]);
    assert_eq!((r.code, r.stdout.trim()), (0, "back"), "the next exec: {}", r.stderr);
    eprintln!("fault: the next exec answered after {:.1} s", start.elapsed().as_secs_f64());
    let r =
        ws.run(&["plan", "-detailed-exitcode", "-var-file=scaled.vars.hcl", "-target=kvm_host.openstack"]);
    assert_eq!(r.code, 0, "the plan after the agent came back is not empty:\n{}\n{}", r.stdout, r.stderr);
    drop(cleanup);
}

/// The lab of the issue that started the fault suite: a level-1 guest holding two level-2 siblings
/// created side by side, one of them promoted with a level-3 guest inside. One vCPU for the level-1
/// guest, as `OPENSTACK_SCALED` says why.
const SIBLING_LAB: &str = r#"
kvm_host "l0" {
  uri = "qemu:///system"
}

nat_network "outer" {
  host = kvm_host.l0
  cidr = "10.50.0.0/24"
}

nested_guest "l1" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "3GiB"
  disk "root" {
    size  = "1GiB"
    cache = "unsafe"
  }
  network "eth0" {
    nat_network = nat_network.outer
  }
  lab {}
}

kvm_host "l1" {
  guest  = nested_guest.l1
  nested = true
}

nat_network "inner" {
  host = kvm_host.l1
  cidr = "10.51.0.0/24"
}

nested_guest "sibling" {
  for_each = { a = "1280MiB", b = "384MiB" }
  host     = kvm_host.l1
  name     = "sibling-${each.key}"
  vcpus    = 1
  memory   = each.value
  disk "root" {
    size  = "512MiB"
    cache = "unsafe"
  }
  network "eth0" {
    nat_network = nat_network.inner
  }
  lab {}
}

kvm_host "a" {
  guest  = nested_guest.sibling["a"]
  nested = true
}

nat_network "deep" {
  host = kvm_host.a
  cidr = "10.52.0.0/24"
}

nested_guest "l3" {
  host   = kvm_host.a
  vcpus  = 1
  memory = "384MiB"
  disk "root" {
    size  = "256MiB"
    cache = "unsafe"
  }
  network "eth0" {
    nat_network = nat_network.deep
  }
  lab {}
}
"#;

/// How many runs the by-hand repetitions make: `NESTFORM_FAULT_RUNS`, else 10.
fn runs_by_hand() -> usize {
    std::env::var("NESTFORM_FAULT_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(10)
}

/// Builds a lab, runs `true` in each of `guests`, and destroys it, `runs_by_hand()` times in a row,
/// going on after a failed run; prints per run the apply's time, each promotion's steps, the
/// recoveries used and the stalls warned of, then the totals, and fails when any run failed or needed
/// a recovery.
fn repeat(what: &str, make: impl Fn() -> Workspace, apply: &[&str], guests: &[&str]) {
    let _turn = take_turn();
    let runs = runs_by_hand();
    let (mut passed, mut recovered, mut stalls) = (0, 0, 0);
    let mut failures = Vec::new();
    for run in 1..=runs {
        let ws = make();
        let cleanup = Destroy(&ws);
        let start = Instant::now();
        let (code, lines, stderr) = run_timed(&ws, apply);
        let applied = start.elapsed().as_secs_f64();
        crate::nesting::print_steps(&format!("{what}: run {run}"), &lines);
        let used = recoveries(&lines).len();
        let mut failed = (code != 0).then(|| format!("apply exited {code}: {}", stderr.trim()));
        if failed.is_none() {
            for guest in guests {
                let r = ws.run(&["exec", guest, "--", "true"]);
                if r.code != 0 {
                    failed = Some(format!("exec in {guest} exited {}: {}", r.code, r.stderr.trim()));
                    break;
                }
            }
        }
        let start = Instant::now();
        let r = ws.run(&["destroy", "-auto-approve", "-var-file=scaled.vars.hcl"]);
        let destroyed = start.elapsed().as_secs_f64();
        if r.code != 0 && failed.is_none() {
            failed = Some(format!("destroy exited {}: {}", r.code, r.stderr.trim()));
        }
        drop(cleanup);
        let warned = crate::nesting::warnings(&ws);
        for w in &warned {
            eprintln!("{what}: run {run}: {w}");
        }
        eprintln!(
            "{what}: run {run}/{runs}: {}, apply {applied:.1} s, destroy {destroyed:.1} s, recoveries {used}, \
             stalls warned {}",
            failed.as_deref().unwrap_or("passed"),
            warned.len()
        );
        passed += usize::from(failed.is_none());
        recovered += usize::from(used > 0);
        stalls += warned.len();
        failures.extend(failed.map(|f| format!("run {run}: {f}")));
    }
    eprintln!(
        "{what}: {passed} of {runs} runs passed, {recovered} needed a recovery, {stalls} stalls warned of"
    );
    assert!(failures.is_empty() && recovered == 0, "{what}: {failures:#?}");
}

/// The sibling lab built, used and destroyed ten times in a row. By hand (about 80 minutes):
/// `cargo test -p nestform --test e2e fault::ten_runs_of_the_sibling_lab -- --ignored --nocapture`
/// (`NESTFORM_FAULT_RUNS=N` for another count).
#[test]
#[ignore = "by hand: ten runs of a three-level lab with siblings"]
fn ten_runs_of_the_sibling_lab_pass_without_a_recovery() {
    let make = || {
        let ws = Workspace::new();
        ws.write("main.nf.hcl", SIBLING_LAB).write("scaled.vars.hcl", "");
        ws
    };
    let guests =
        ["nested_guest.l1", "nested_guest.sibling[\"a\"]", "nested_guest.sibling[\"b\"]", "nested_guest.l3"];
    repeat("sibling lab", make, &["apply", "-auto-approve", "-var-file=scaled.vars.hcl"], &guests);
}

/// The article's tower (`examples/inception` to guest3, scaled down) built, used and destroyed ten
/// times in a row. By hand (about two hours):
/// `cargo test -p nestform --test e2e fault::ten_runs_of_the_tower -- --ignored --nocapture`.
#[test]
#[ignore = "by hand: ten runs of the tower to guest3"]
fn ten_runs_of_the_tower_pass_without_a_recovery() {
    let args = ["apply", "-auto-approve", "-var-file=scaled.vars.hcl", "-target=nested_guest.guest3"];
    let guests = ["nested_guest.guest1", "nested_guest.guest2", "nested_guest.guest3"];
    repeat("tower", || example("inception", TOWER_SCALED), &args, &guests);
}
