//! Benchmarks: run after every other operation, one at a time, on each target through its agent;
//! every run kept as a sample, each target summarized; a target that fails leaves the others'
//! results recorded and the benchmark tainted.

use nestform_provider_memory::MemoryProvider;
use nestform_state::State;
use nestform_types::{BenchmarkKind, BenchmarkSpec, ByteSize, ResourceSpec};

use super::{addr, basic, change, guest, host_promoted, run};
use crate::apply::{ApplyError, Phase};
use crate::hosts::Hosts;
use crate::plan::{Action, Plan};

fn lab(mut spec: ResourceSpec) -> ResourceSpec {
    if let ResourceSpec::NestedGuest(g) = &mut spec {
        g.install = Some(nestform_types::InstallSpec::Lab(Default::default()));
    }
    spec
}

fn benchmark(kind: BenchmarkKind, targets: &[&str], tune: impl FnOnce(&mut BenchmarkSpec)) -> ResourceSpec {
    let mut spec = BenchmarkSpec::article(kind, targets.iter().map(|t| addr(t)).collect());
    tune(&mut spec);
    ResourceSpec::Benchmark(spec)
}

fn small_loop(s: &mut BenchmarkSpec) {
    s.iterations = Some(2_000);
}

/// `basic()` with `g1` a lab guest promoted to `kvm_host.l1`, which holds the lab guest `inner`.
fn two_levels() -> Plan {
    let mut plan = basic();
    plan.changes[0] = change("kvm_host.l0", Action::Create, Some(super::host_uri("memory://bench")), 0);
    plan.changes[2] = change(
        "nested_guest.g1",
        Action::Create,
        Some(lab(guest("g1", "kvm_host.l0", &["nat_network.lan"]))),
        1,
    );
    plan.changes.push(change("kvm_host.l1", Action::Create, Some(host_promoted("nested_guest.g1")), 1));
    plan.changes.push(change(
        "nested_guest.inner",
        Action::Create,
        Some(lab(guest("inner", "kvm_host.l1", &[]))),
        2,
    ));
    plan
}

fn results(state: &State, bench: &str) -> serde_json::Value {
    state.resources[&addr(bench)].attributes["results"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmarks_run_after_everything_else_one_at_a_time_and_keep_every_run() {
    let memory = MemoryProvider::new();
    let hosts = Hosts::new(memory.backends());
    let mut plan = two_levels();
    let targets = ["nested_guest.g1", "nested_guest.inner"];
    plan.changes.push(change(
        "benchmark.loop",
        Action::Create,
        Some(benchmark(BenchmarkKind::ShellLoop, &targets, small_loop)),
        0,
    ));
    plan.changes.push(change(
        "benchmark.boot",
        Action::Create,
        Some(benchmark(BenchmarkKind::Boot, &targets, |_| {})),
        0,
    ));
    let r = run(&plan, State::new(), &hosts).await;
    assert!(r.outcome.errors.is_empty(), "{:?}", r.outcome.errors);

    // Nothing else ran once the first benchmark started, and the two never overlapped.
    let at = |a: &str, started: bool| {
        r.events
            .iter()
            .position(|e| {
                e.addr == addr(a)
                    && if started {
                        e.phase == Phase::Started
                    } else {
                        matches!(e.phase, Phase::Finished { .. })
                    }
            })
            .unwrap_or_else(|| panic!("no event of {a}"))
    };
    let first_bench = at("benchmark.boot", true).min(at("benchmark.loop", true));
    let last_other = ["nested_guest.g1", "nested_guest.inner", "nested_guest.g2", "kvm_host.l1"]
        .iter()
        .map(|a| at(a, false))
        .max()
        .unwrap();
    assert!(last_other < first_bench, "a benchmark started before everything else finished: {:?}", r.events);
    let (boot, lp) = (
        (at("benchmark.boot", true), at("benchmark.boot", false)),
        (at("benchmark.loop", true), at("benchmark.loop", false)),
    );
    assert!(boot.1 < lp.0 || lp.1 < boot.0, "the benchmarks ran at the same time: {:?}", r.events);

    let state = &r.outcome.state;
    let lp = &state.resources[&addr("benchmark.loop")];
    assert!(!lp.tainted);
    let samples = lp.attributes["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 6, "three runs on each of two targets, the warm-ups dropped");
    let first = &samples[0];
    assert_eq!(first["metric"], "shell_loop_time");
    assert_eq!(first["unit"], "s");
    assert_eq!(first["metadata"]["target"], "nested_guest.g1");
    assert_eq!(first["metadata"]["level"], 1);
    assert_eq!(first["metadata"]["kind"], "shell_loop");
    assert_eq!(first["metadata"]["hosts"][0]["host"], "kvm_host.l0");
    let inner = samples.iter().find(|s| s["metadata"]["target"] == "nested_guest.inner").unwrap();
    let chain: Vec<&str> =
        inner["metadata"]["hosts"].as_array().unwrap().iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(chain, ["kvm_host.l1", "kvm_host.l0"], "the host chain down to level 0");

    // One apply, one run id, across every benchmark it ran.
    let run_ids: std::collections::BTreeSet<String> = ["benchmark.loop", "benchmark.boot"]
        .iter()
        .flat_map(|b| state.resources[&addr(b)].attributes["samples"].as_array().unwrap().clone())
        .map(|s| s["metadata"]["run_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(run_ids.len(), 1, "{run_ids:?}");

    let res = results(state, "benchmark.loop");
    for target in targets {
        let s = &res[target];
        assert_eq!(s["n"], 3, "{res}");
        assert_eq!(s["values"].as_array().unwrap().len(), 3);
        assert!(s["median"].as_f64().unwrap() > 0.0);
    }
    // The guest inside g1 is compared with g1, the level below it; g1's level below is not measured.
    assert!(res["nested_guest.inner"]["vs_below"].as_f64().is_some(), "{res}");
    assert!(res["nested_guest.g1"].get("vs_below").is_none(), "{res}");
    // Boot is what the apply measured when it created each guest.
    let boot = results(state, "benchmark.boot");
    let recorded = state.resources[&addr("nested_guest.g1")].attributes["boot_seconds"].as_f64().unwrap();
    assert_eq!(boot["nested_guest.g1"]["values"], serde_json::json!([recorded]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_benchmark_that_fails_is_recorded_tainted_and_the_others_still_run() {
    let memory = MemoryProvider::new();
    let hosts = Hosts::new(memory.backends());
    let mut plan = two_levels();
    // A file far larger than any memory: refused on the target before anything is written.
    let huge = benchmark(BenchmarkKind::Sha256, &["nested_guest.g1"], |s| s.size = Some(ByteSize(1 << 50)));
    plan.changes.push(change("benchmark.hash", Action::Create, Some(huge), 0));
    let ok = benchmark(BenchmarkKind::ShellLoop, &["nested_guest.inner"], small_loop);
    plan.changes.push(change("benchmark.loop", Action::Create, Some(ok), 0));
    let r = run(&plan, State::new(), &hosts).await;
    assert_eq!(r.outcome.errors.len(), 1, "{:?}", r.outcome.errors);
    let (at, e) = &r.outcome.errors[0];
    assert_eq!(at, &addr("benchmark.hash"));
    assert!(matches!(e, ApplyError::Measure(_)), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("on `nested_guest.g1`") && text.contains("lower `size`"), "{text}");
    let hash = &r.outcome.state.resources[&addr("benchmark.hash")];
    assert!(hash.tainted, "a failed benchmark is recorded tainted, so the next plan runs it again");
    assert_eq!(results(&r.outcome.state, "benchmark.loop")["nested_guest.inner"]["n"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_benchmark_whose_target_did_not_come_up_is_skipped_and_the_others_run() {
    let memory = MemoryProvider::new();
    memory.fail_on("create_guest", "inner");
    let hosts = Hosts::new(memory.backends());
    let mut plan = two_levels();
    let on_inner = benchmark(BenchmarkKind::ShellLoop, &["nested_guest.inner"], small_loop);
    plan.changes.push(change("benchmark.inner", Action::Create, Some(on_inner), 0));
    let on_g1 = benchmark(BenchmarkKind::ShellLoop, &["nested_guest.g1"], small_loop);
    plan.changes.push(change("benchmark.g1", Action::Create, Some(on_g1), 0));
    let r = run(&plan, State::new(), &hosts).await;
    let failed: Vec<String> = r.outcome.errors.iter().map(|(a, _)| a.to_string()).collect();
    assert_eq!(failed, ["nested_guest.inner"]);
    assert!(r.events.iter().any(|e| e.addr == addr("benchmark.inner") && e.phase == Phase::Skipped));
    assert!(!r.outcome.state.resources.contains_key(&addr("benchmark.inner")));
    assert_eq!(results(&r.outcome.state, "benchmark.g1")["nested_guest.g1"]["n"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_nestform_cannot_measure_refuse_the_plan_before_anything_runs() {
    let memory = MemoryProvider::new();
    let hosts = Hosts::new(memory.backends());
    let mut plan = two_levels();
    plan.changes.push(change(
        "kvm_host.far",
        Action::Create,
        Some(super::host_uri("qemu+ssh://root@far.example/system")),
        0,
    ));
    let on = |targets: &[&str]| benchmark(BenchmarkKind::ShellLoop, targets, small_loop);
    plan.changes.push(change("benchmark.no_agent", Action::Create, Some(on(&["nested_guest.g2"])), 0));
    plan.changes.push(change("benchmark.remote", Action::Create, Some(on(&["kvm_host.far"])), 0));
    plan.changes.push(change(
        "benchmark.later",
        Action::Create,
        Some(benchmark(BenchmarkKind::Network, &["nested_guest.g1"], |_| {})),
        0,
    ));
    let r = run(&plan, State::new(), &hosts).await;
    assert!(memory.call_log().is_empty(), "something ran: {:?}", memory.call_log());
    let refused: std::collections::BTreeMap<String, String> =
        r.outcome.errors.iter().map(|(a, e)| (a.to_string(), e.to_string())).collect();
    assert!(
        refused["benchmark.no_agent"].contains("`nested_guest.g2` has no nestform agent to measure in"),
        "{refused:?}"
    );
    assert!(
        refused["benchmark.remote"].contains("`qemu+ssh://root@far.example/system`, another machine"),
        "{refused:?}"
    );
    assert!(refused["benchmark.later"].contains("`network` benchmarks cannot run yet"), "{refused:?}");
}
