//! Apply: replays a plan's changes against the hosts, without planning again.
//!
//! - [`ops`]: each change becomes operations (Create, Update, Stop, Start, Delete) in one graph that
//!   builds bottom-up and tears down top-down across nesting levels.
//! - `exec`: one operation against its host, and the state record it leaves.
//! - Here: the whole plan is validated first (nothing is touched if any change cannot be applied), the
//!   graph is walked with `nestform_dag::walk` (each operation as soon as its own dependencies finish,
//!   at most `parallelism` at once; provider calls on `spawn_blocking`, never on the async threads),
//!   and state is updated and persisted after every operation that changes it, so an interrupted
//!   apply loses nothing. [`apply`] always returns the partly updated state with the errors.

mod exec;
pub(crate) use exec::stop_cleanly;
mod journal;
mod measure;
pub mod ops;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nestform_dag::graph::{Dag, NodeId};
use nestform_dag::walk::{walk, NodeOutcome};
use nestform_state::{ResourceState, State};
use nestform_types::{ResourceAddr, ResourceType};
use tokio::sync::{mpsc, watch};

use crate::hosts::Hosts;
use crate::plan::Plan;
use journal::Journal;
pub use ops::OpKind;

/// One resource's new record in state, or `None` when it is gone.
pub type StateChange = (ResourceAddr, Option<ResourceState>);

/// Where apply saves state after each operation. The CLI's sink writes the state file atomically;
/// tests keep snapshots. Taking a callback keeps the engine free of files.
///
/// A sink mirrors the state that was handed to [`apply`] and receives every change to it, in order,
/// so it never needs the whole state (nor a lock on it) while it writes.
pub trait StateSink: Send + Sync {
    /// Applies `changes` to the mirror and saves it durably. Called from a blocking thread, never two
    /// calls at once; an error fails the operations whose changes it was saving. A sink keeps the
    /// changes in its mirror even when saving fails, so the next call saves them too.
    fn persist(&self, changes: &[StateChange]) -> Result<(), nestform_provider::BoxError>;
}

/// Why an operation failed, or why a resource was refused before anything ran.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A call to its host failed.
    #[error(transparent)]
    Provider(#[from] nestform_provider::ProviderError),
    /// The agent of a guest that was just created did not answer, or failed.
    #[error(transparent)]
    Agent(#[from] nestform_provider::AgentError),
    /// A guest started again, but its agent did not answer.
    #[error("start `{guest}` failed")]
    Start {
        guest: String,
        #[source]
        source: nestform_provider::AgentError,
    },
    /// What the guest boots could not be prepared.
    #[error("prepare the boot of `{guest}` failed")]
    Boot {
        guest: String,
        #[source]
        source: nestform_provider::BoxError,
    },
    /// This version cannot apply the change (checked before anything runs).
    #[error("{0}")]
    Refused(String),
    /// The plan's operations depend on each other in a circle.
    #[error("the operations form a cycle: {0}")]
    Cycle(String),
    /// State could not be saved, so nothing that depends on it started.
    #[error("{0}")]
    Unsaved(String),
    /// The change was made, but the state that records it could not be saved.
    #[error("the change is made on its host, but no saved state records it: {0}")]
    SavedNot(String),
    /// A benchmark failed on some of its targets (the others' results are recorded).
    #[error("the benchmark failed {0}")]
    Measure(String),
    /// The operation's thread panicked.
    #[error("the operation panicked: {0}")]
    Panicked(String),
}

/// How to apply.
#[derive(Clone)]
pub struct ApplyOptions {
    /// Operations running at once at most (Terraform's `-parallelism`).
    pub parallelism: usize,
    /// Turns `true` on Ctrl-C: no new operation starts, running ones finish, state is saved.
    pub cancel: watch::Receiver<bool>,
    /// Progress, one event per operation phase.
    pub events: mpsc::UnboundedSender<ApplyEvent>,
    /// How long a guest gets to shut down gracefully before it is powered off.
    pub stop_timeout: Duration,
    /// How long a booted guest's agent gets to answer before the guest counts as failed: a guest
    /// whose console keeps printing is waited for longer than one whose console went quiet.
    pub agent_wait: nestform_provider::AgentWait,
    /// How often a running operation sends [`Phase::Running`].
    pub still_every: Duration,
}

impl ApplyOptions {
    /// Parallelism 10, a 60 s graceful shutdown, [`AgentWait::BOOT`](nestform_provider::AgentWait::BOOT)
    /// for an agent to answer after a boot, word of a running operation every 10 s.
    pub fn new(cancel: watch::Receiver<bool>, events: mpsc::UnboundedSender<ApplyEvent>) -> Self {
        ApplyOptions {
            parallelism: 10,
            cancel,
            events,
            stop_timeout: Duration::from_secs(60),
            agent_wait: nestform_provider::AgentWait::BOOT,
            still_every: Duration::from_secs(10),
        }
    }
}

/// Progress of one operation on one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyEvent {
    pub addr: ResourceAddr,
    pub op: OpKind,
    pub phase: Phase,
    /// For a delete swept along with the outer guest whose delete removed it: that guest. Nothing was
    /// asked of the resource's own host.
    pub swept_by: Option<ResourceAddr>,
}

/// Where an operation is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    Started,
    /// Still running, `elapsed` after it started: sent every [`ApplyOptions::still_every`].
    Running {
        elapsed: Duration,
        /// The step under way, as the code doing it named it (see [`nestform_provider::progress`]).
        step: Option<String>,
    },
    Finished {
        elapsed: Duration,
        /// Where the time went: each named step and how long it took, in order.
        steps: Vec<(String, Duration)>,
    },
    Failed {
        error: String,
    },
    /// Not run: something it depends on failed, the apply was cancelled, or the plan was refused.
    Skipped,
}

/// What apply did: the state as it now is (saved already), every error, and whether it was cancelled.
#[derive(Debug)]
pub struct ApplyOutcome {
    pub state: State,
    /// Each failed operation (or refused resource) with its error; skipped dependents are not listed.
    pub errors: Vec<(ResourceAddr, ApplyError)>,
    /// True when a cancel left operations unstarted.
    pub cancelled: bool,
    /// Why a state save failed, when one did: nothing started after it, and `errors` names every
    /// resource whose change is made but still not recorded ([`ApplyError::SavedNot`]).
    pub halted: Option<String>,
}

/// How one operation of an apply ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed(String),
    /// Something it depends on failed or was skipped.
    Skipped,
    /// Cancelled (or a state save failed) before it started.
    NotStarted,
}

/// Applies `plan` to `state` through `hosts`.
///
/// Refuses the whole plan (returning `state` unchanged, with one error per refused resource) when any
/// change cannot be applied: a guest without an id to find it by, a benchmark its runners cannot take.
pub async fn apply(
    plan: &Plan,
    state: State,
    hosts: &Hosts,
    opts: ApplyOptions,
    sink: Arc<dyn StateSink>,
) -> ApplyOutcome {
    let graph = match ops::build(plan, &state, &*hosts.backends().bench) {
        Ok(g) => g,
        Err(refusals) => {
            let errors = refusals.into_iter().map(|(a, why)| (a, ApplyError::Refused(why))).collect();
            return ApplyOutcome { state, errors, cancelled: false, halted: None };
        }
    };
    let mut dag = Dag::new();
    let ids: Vec<NodeId> = (0..graph.ops.len()).map(|i| dag.add_node(i)).collect();
    for (i, deps) in graph.deps.iter().enumerate() {
        for &d in deps {
            dag.add_dependency(ids[i], ids[d]);
        }
    }
    if let Some(cycle) = dag.cycles().into_iter().next() {
        let names: Vec<String> = cycle
            .iter()
            .map(|&id| graph.ops[*dag.node(id)].clone())
            .map(|o| format!("{} {}", o.kind, o.addr))
            .collect();
        let at = graph.ops[*dag.node(cycle[0])].addr.clone();
        let error = ApplyError::Cycle(names.join(" -> "));
        return ApplyOutcome { state, errors: vec![(at, error)], cancelled: false, halted: None };
    }

    let ctx = Arc::new(exec::Context {
        index: ops::index(plan),
        plan: plan.clone(),
        before: state.clone(),
        hosts: hosts.clone(),
        stop_timeout: opts.stop_timeout,
        agent_wait: opts.agent_wait,
        run_id: measure::run_id(&plan.lineage),
    });
    let journal = Arc::new(Journal::start(state, sink));
    // The walk stops starting operations on Ctrl-C, and when a state save fails. Both are asked
    // directly before each start: a channel forwarded by a task could tell the walk too late.
    let stop = {
        let (cancel, journal) = (opts.cancel.clone(), journal.clone());
        move || *cancel.borrow() || journal.halted().is_some()
    };
    let all_ops = Arc::new(graph.ops);
    let all_deps = Arc::new(graph.deps);
    // Each operation's ticket: the journal ticket of its own change, or of the latest change of what it
    // depends on when it changes nothing itself (a stop), so waiting on it covers everything below.
    let tickets: Arc<Vec<AtomicU64>> = Arc::new((0..all_ops.len()).map(|_| AtomicU64::new(0)).collect());
    let events = opts.events.clone();
    let still_every = opts.still_every;
    // The walk carries errors as text; the typed error of each failed operation waits here.
    let failures: Arc<std::sync::Mutex<BTreeMap<usize, ApplyError>>> = Arc::default();
    let run_op = |index: usize| {
        let (ctx, journal, events, tickets) = (ctx.clone(), journal.clone(), events.clone(), tickets.clone());
        let failures = failures.clone();
        let op = all_ops[index].clone();
        let below = all_deps[index].iter().map(|&d| tickets[d].load(Ordering::Acquire)).max().unwrap_or(0);
        async move {
            let send = |phase| {
                // The receiver going away (a CLI that stopped listening) must not stop the apply.
                let _ = events.send(ApplyEvent {
                    addr: op.addr.clone(),
                    op: op.kind,
                    phase,
                    swept_by: op.swept_by.clone(),
                });
            };
            send(Phase::Started);
            let start = Instant::now();
            let task_op = op.clone();
            let steps = nestform_provider::progress::Steps::new();
            let task_steps = steps.clone();
            let mut task = tokio::task::spawn_blocking(move || {
                journal.wait_saved(below).map_err(ApplyError::Unsaved)?;
                let (update, failure) = match task_steps.run(|| ctx.run(&task_op, || journal.state())) {
                    Ok(update) => (update, None),
                    Err((update, e)) => (update, Some(e)),
                };
                let ticket = journal.record(update).max(below);
                tickets[index].store(ticket, Ordering::Release);
                failure.map_or(Ok(()), Err)
            });
            // A long operation says it is still at it, as Terraform's "Still creating..." does.
            let mut still = tokio::time::interval_at(tokio::time::Instant::now() + still_every, still_every);
            let result = loop {
                tokio::select! {
                    done = &mut task => break done.unwrap_or_else(|e| Err(ApplyError::Panicked(e.to_string()))),
                    _ = still.tick() => send(Phase::Running {
                        elapsed: start.elapsed(),
                        step: steps.current().map(|(name, _)| name),
                    }),
                }
            };
            match result {
                Ok(()) => {
                    let timings = steps.timings();
                    if !timings.is_empty() {
                        tracing::info!(resource = %op.addr, op = %op.kind, steps = %nestform_provider::progress::describe(&timings), "where the time went");
                    }
                    send(Phase::Finished { elapsed: start.elapsed(), steps: timings });
                    Ok(())
                }
                Err(error) => {
                    let text = nestform_provider::error_chain(&error);
                    send(Phase::Failed { error: text.clone() });
                    failures.lock().unwrap_or_else(|p| p.into_inner()).insert(index, error);
                    Err(text)
                }
            }
        }
    };

    // Two walks: every operation but the benchmarks' runs, as parallel as allowed; then the
    // benchmarks, one at a time, so that nothing else of the apply takes the CPU from them. A
    // benchmark whose targets did not come up is skipped; the others still run.
    let measures = |i: usize| all_ops[i].addr.ty == ResourceType::Benchmark && !all_ops[i].kind.is_down();
    let mut outcomes: BTreeMap<usize, Outcome> = BTreeMap::new();
    for benchmarks in [false, true] {
        let mut phase = Dag::new();
        let mut in_phase: BTreeMap<usize, NodeId> = BTreeMap::new();
        for i in (0..all_ops.len()).filter(|&i| measures(i) == benchmarks) {
            let earlier_failed =
                all_deps[i].iter().any(|d| outcomes.get(d).is_some_and(|o| *o != Outcome::Succeeded));
            if earlier_failed {
                outcomes.insert(i, Outcome::Skipped);
                continue;
            }
            in_phase.insert(i, phase.add_node(i));
        }
        for (&i, &id) in &in_phase {
            for d in &all_deps[i] {
                if let Some(&dep) = in_phase.get(d) {
                    phase.add_dependency(id, dep);
                }
            }
        }
        let parallelism = if benchmarks { 1 } else { opts.parallelism };
        let report = walk(&phase, parallelism, stop.clone(), |id: NodeId| run_op(*phase.node(id))).await;
        for (id, outcome) in report.outcomes {
            let outcome = match outcome {
                NodeOutcome::Succeeded => Outcome::Succeeded,
                NodeOutcome::Failed(text) => Outcome::Failed(text),
                NodeOutcome::Skipped { .. } => Outcome::Skipped,
                NodeOutcome::NotStarted => Outcome::NotStarted,
            };
            outcomes.insert(*phase.node(id), outcome);
        }
    }

    let mut errors = Vec::new();
    for (&index, outcome) in &outcomes {
        let op = &all_ops[index];
        match outcome {
            Outcome::Failed(text) => {
                let typed = failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&index);
                errors.push((op.addr.clone(), typed.unwrap_or_else(|| ApplyError::Panicked(text.clone()))))
            }
            Outcome::Skipped | Outcome::NotStarted => {
                let _ = opts.events.send(ApplyEvent {
                    addr: op.addr.clone(),
                    op: op.kind,
                    phase: Phase::Skipped,
                    swept_by: op.swept_by.clone(),
                });
            }
            Outcome::Succeeded => {}
        }
    }
    let cancelled = *opts.cancel.borrow() && outcomes.values().any(|o| *o == Outcome::NotStarted);
    let (state, unsaved) = journal.finish();
    let halted = journal.halted();
    if let Some(unsaved) = unsaved {
        for addr in unsaved.resources {
            errors.push((addr, ApplyError::SavedNot(unsaved.error.clone())));
        }
    }
    ApplyOutcome { state, errors, cancelled, halted }
}
