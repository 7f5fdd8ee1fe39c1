//! The runners of nestform's benchmark kinds: the nested-KVM article's measurements, run through a
//! target's [`GuestAgent`] (a guest's agent, or [`Controller`] for level 0) and timed inside the
//! target by the agent's monotonic clock around the program, so that channel time through the
//! levels never counts.
//!
//! - `boot`: define to ready, as the apply that created the guest measured it (`boot_seconds`).
//! - `shell_loop`: a loop of `iterations` in the target's bash (its `sh` where there is no bash).
//! - `sha256`: a file of `size` from `/dev/urandom`, brought into the page cache, hashed by the
//!   target's own `sha256sum`.
//!
//! Every kind runs `warmup` runs first (their figures are dropped), then `repeat` measured ones; the
//! load average and the CPU time stolen from the target so far are read before each measured run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nestform_provider::progress::step;
use nestform_provider::{BenchRun, Benchmarks, BoxError, GuestAgent, GuestCommand, Measured};
use nestform_types::{BenchmarkKind, BenchmarkSpec};
use serde_json::json;

mod local;

pub use local::Controller;

/// How long one run may take before it counts as failed.
const RUN_LIMIT: Duration = Duration::from_secs(3600);
/// How long a preparing or tidying command may take.
const PREPARE_LIMIT: Duration = Duration::from_secs(3600);

/// The runners, for [`Backends`](nestform_provider::Backends).
#[derive(Debug, Default)]
pub struct Runners;

/// Why a benchmark failed on a target.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what} failed: {why}")]
    Command { what: String, why: String },
    #[error("{0}")]
    Unusable(String),
}

impl Benchmarks for Runners {
    fn controller(&self) -> Result<Arc<dyn GuestAgent>, BoxError> {
        Ok(Arc::new(Controller))
    }

    fn check(&self, spec: &BenchmarkSpec) -> Result<(), BoxError> {
        match spec.kind {
            BenchmarkKind::Boot | BenchmarkKind::ShellLoop | BenchmarkKind::Sha256 => Ok(()),
            kind @ (BenchmarkKind::BlockRead | BenchmarkKind::Network) => {
                Err(Box::new(BenchError::Unusable(format!(
                    "`{}` benchmarks cannot run yet: this version runs `boot`, `shell_loop` and `sha256`",
                    kind.as_str()
                ))))
            }
        }
    }

    fn run(&self, run: &BenchRun<'_>, on: &dyn GuestAgent) -> Result<Vec<Measured>, BoxError> {
        self.check(run.spec)?;
        let measured = match run.spec.kind {
            BenchmarkKind::Boot => boot(run)?,
            BenchmarkKind::ShellLoop => shell_loop(run, on)?,
            BenchmarkKind::Sha256 => sha256(run, on)?,
            BenchmarkKind::BlockRead | BenchmarkKind::Network => unreachable!("refused by `check`"),
        };
        Ok(measured)
    }
}

/// The guest's boot as the apply that created it measured it: one value.
fn boot(run: &BenchRun<'_>) -> Result<Vec<Measured>, BenchError> {
    let seconds = run.recorded.get("boot_seconds").and_then(|v| v.as_f64()).ok_or_else(|| {
        BenchError::Unusable(format!(
            "`{}` has no recorded boot time: only a guest nestform booted and reached through its agent has one",
            run.target
        ))
    })?;
    Ok(vec![Measured {
        metric: "boot_time".into(),
        value: seconds,
        unit: "s".into(),
        metadata: BTreeMap::from([("run".to_string(), json!(1))]),
    }])
}

fn shell_loop(run: &BenchRun<'_>, on: &dyn GuestAgent) -> Result<Vec<Measured>, BenchError> {
    let iterations = run.spec.iterations.unwrap_or(100_000);
    step(format!("{}: finding its shell", run.target));
    let probe = output(on, &GuestCommand::new(["sh", "-c", "command -v bash || echo sh"]), "finding bash")?;
    let shell = if probe.trim().ends_with("bash") { "bash" } else { "sh" };
    let script = format!("i=0; while [ $i -lt {iterations} ]; do i=$((i+1)); done");
    let cmd = GuestCommand::new([shell, "-c", script.as_str()]).timeout(RUN_LIMIT);
    let extra = [("iterations", json!(iterations)), ("shell", json!(shell))];
    repeat(run, on, "shell_loop_time", &extra, |_| timed(on, &cmd, "the shell loop"))
}

fn sha256(run: &BenchRun<'_>, on: &dyn GuestAgent) -> Result<Vec<Measured>, BenchError> {
    let size = run.spec.size.map_or(2 << 30, |s| s.bytes());
    step(format!("{}: writing {} of random data", run.target, human_bytes(size)));
    let available = mem_available(on)?;
    // The file lives in the page cache (a lab guest's /tmp is its tmpfs root): it must fit, with
    // room left for the hashing itself.
    if size > available / 10 * 9 {
        return Err(BenchError::Unusable(format!(
            "`{}` has {} of memory available and the file to hash is {}: it would not stay in the page \
             cache; lower `size`",
            run.target,
            human_bytes(available),
            human_bytes(size)
        )));
    }
    let file = format!("/tmp/nestform-sha256-{}", std::process::id());
    let prepare = format!("head -c {size} /dev/urandom > {file} && cat {file} > /dev/null");
    let result = output(
        on,
        &GuestCommand::new(["sh", "-c", prepare.as_str()]).timeout(PREPARE_LIMIT),
        "writing the file",
    )
    .and_then(|_| {
        let cmd = GuestCommand::new(["sha256sum", file.as_str()]).timeout(RUN_LIMIT);
        repeat(run, on, "sha256_time", &[("size_bytes", json!(size))], |_| timed(on, &cmd, "sha256sum"))
    });
    // Tidied up also after a failed run; a failure to tidy does not hide the figures.
    let _ = on.run(&GuestCommand::new(["rm", "-f", file.as_str()]).timeout(Duration::from_secs(300)));
    result
}

/// The warm-up runs, then the measured ones, each named as a step; `measure` returns seconds.
fn repeat(
    run: &BenchRun<'_>,
    on: &dyn GuestAgent,
    metric: &str,
    extra: &[(&str, serde_json::Value)],
    mut measure: impl FnMut(u32) -> Result<f64, BenchError>,
) -> Result<Vec<Measured>, BenchError> {
    let (warmup, runs) = (run.spec.warmup, run.spec.repeat.max(1));
    for i in 1..=warmup {
        step(format!("{} warm-up {i}/{warmup}", run.target));
        measure(0)?;
    }
    let mut measured = Vec::new();
    for i in 1..=runs {
        let load = load(on);
        step(format!("{} run {i}/{runs}", run.target));
        let value = measure(i)?;
        let mut metadata: BTreeMap<String, serde_json::Value> =
            extra.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        metadata.insert("run".into(), json!(i));
        metadata.extend(load);
        measured.push(Measured { metric: metric.into(), value, unit: "s".into(), metadata });
    }
    Ok(measured)
}

/// Runs `cmd` and returns its time inside the target, in seconds.
fn timed(on: &dyn GuestAgent, cmd: &GuestCommand, what: &str) -> Result<f64, BenchError> {
    let out = on.run(cmd).map_err(|e| BenchError::Command { what: what.into(), why: e.chain() })?;
    check(what, &out)?;
    let elapsed = out.status.elapsed.ok_or_else(|| {
        BenchError::Unusable(
            "the target's agent does not time commands itself (an older agent?); nestform does not time them \
             from outside, where the channel's time would count"
                .into(),
        )
    })?;
    Ok(elapsed.as_secs_f64())
}

/// Runs `cmd` and returns its standard output.
fn output(on: &dyn GuestAgent, cmd: &GuestCommand, what: &str) -> Result<String, BenchError> {
    let out = on.run(cmd).map_err(|e| BenchError::Command { what: what.into(), why: e.chain() })?;
    check(what, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(what: &str, out: &nestform_provider::CommandOutput) -> Result<(), BenchError> {
    if out.status.success() {
        return Ok(());
    }
    let why = match (out.status.timed_out, out.status.code, out.status.signal) {
        (true, _, _) => "it did not finish in time".to_string(),
        (_, Some(code), _) => format!("it exited with {code}"),
        (_, _, Some(signal)) => format!("signal {signal} ended it"),
        _ => "it ended without an exit code".to_string(),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    let why = if stderr.is_empty() { why } else { format!("{why}: {stderr}") };
    Err(BenchError::Command { what: what.into(), why })
}

/// The target's `MemAvailable`, in bytes.
fn mem_available(on: &dyn GuestAgent) -> Result<u64, BenchError> {
    let meminfo = output(
        on,
        &GuestCommand::new(["cat", "/proc/meminfo"]).timeout(PREPARE_LIMIT),
        "reading /proc/meminfo",
    )?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| BenchError::Unusable("the target's /proc/meminfo has no MemAvailable".into()))
}

/// The 1-minute load average and the CPU time stolen from the target so far (in clock ticks),
/// before a run; nothing when they cannot be read (the run is measured all the same).
fn load(on: &dyn GuestAgent) -> Vec<(String, serde_json::Value)> {
    let cmd = GuestCommand::new(["sh", "-c", "cat /proc/loadavg; grep '^cpu ' /proc/stat"])
        .timeout(Duration::from_secs(300));
    let Ok(out) = output(on, &cmd, "reading the load") else { return vec![] };
    let mut lines = out.lines();
    let mut found = Vec::new();
    if let Some(avg) =
        lines.next().and_then(|l| l.split_whitespace().next()).and_then(|v| v.parse::<f64>().ok())
    {
        found.push(("loadavg_1m".to_string(), json!(avg)));
    }
    // `cpu user nice system idle iowait irq softirq steal ...`
    if let Some(steal) =
        lines.next().and_then(|l| l.split_whitespace().nth(8)).and_then(|v| v.parse::<u64>().ok())
    {
        found.push(("steal_ticks".to_string(), json!(steal)));
    }
    found
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 => format!("{} MiB", n >> 20),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use nestform_types::ByteSize;

    use super::*;

    fn spec(kind: BenchmarkKind) -> BenchmarkSpec {
        BenchmarkSpec {
            kind,
            targets: vec![],
            size: None,
            sizes: vec![],
            cold: None,
            iterations: None,
            repeat: 3,
            warmup: 1,
        }
    }

    fn on_controller(spec: &BenchmarkSpec) -> Result<Vec<Measured>, BoxError> {
        let recorded = json!({});
        let run = BenchRun {
            benchmark: "benchmark.t",
            spec,
            target: "kvm_host.local",
            level: 0,
            recorded: &recorded,
        };
        Runners.run(&run, &Controller)
    }

    #[test]
    fn a_shell_loop_is_timed_once_per_run_and_grows_with_its_iterations() {
        let mut s = spec(BenchmarkKind::ShellLoop);
        s.iterations = Some(1_000);
        let short = on_controller(&s).unwrap();
        assert_eq!(short.len(), 3, "the warm-up run is not kept");
        assert!(short.iter().all(|m| m.metric == "shell_loop_time" && m.unit == "s" && m.value > 0.0));
        assert_eq!(
            short.iter().map(|m| m.metadata["run"].clone()).collect::<Vec<_>>(),
            [json!(1), json!(2), json!(3)]
        );
        assert!(short[0].metadata.contains_key("loadavg_1m"), "{:?}", short[0].metadata);
        s.iterations = Some(300_000);
        let long = on_controller(&s).unwrap();
        let median =
            |m: &[Measured]| nestform_types::bench::median(&m.iter().map(|m| m.value).collect::<Vec<_>>());
        assert!(median(&long) > 10.0 * median(&short), "{} vs {}", median(&long), median(&short));
    }

    #[test]
    fn sha256_hashes_a_file_of_its_size_and_tidies_it_away() {
        let mut s = spec(BenchmarkKind::Sha256);
        s.size = Some(ByteSize::mib(8));
        s.repeat = 2;
        let runs = on_controller(&s).unwrap();
        assert_eq!(runs.len(), 2);
        assert!(runs.iter().all(|m| m.metric == "sha256_time" && m.value > 0.0));
        assert_eq!(runs[0].metadata["size_bytes"], json!(8u64 << 20));
        let file = format!("/tmp/nestform-sha256-{}", std::process::id());
        assert!(!std::path::Path::new(&file).exists(), "{file} was left behind");
    }

    #[test]
    fn a_file_that_would_not_fit_in_memory_is_refused_before_it_is_written() {
        let mut s = spec(BenchmarkKind::Sha256);
        s.size = Some(ByteSize(1 << 50));
        let err = on_controller(&s).unwrap_err().to_string();
        assert!(err.contains("would not stay in the page cache; lower `size`"), "{err}");
    }

    #[test]
    fn boot_is_what_the_apply_recorded_and_a_target_without_it_says_why() {
        let s = spec(BenchmarkKind::Boot);
        let recorded = json!({"boot_seconds": 12.5});
        let run = BenchRun {
            benchmark: "benchmark.b",
            spec: &s,
            target: "nested_guest.g",
            level: 1,
            recorded: &recorded,
        };
        let m = Runners.run(&run, &Controller).unwrap();
        assert_eq!((m.len(), m[0].value, m[0].metric.as_str()), (1, 12.5, "boot_time"));
        let err = on_controller(&s).unwrap_err().to_string();
        assert!(err.contains("has no recorded boot time"), "{err}");
    }
}
