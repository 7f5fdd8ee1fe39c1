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
pub mod ops;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nestform_dag::graph::{Dag, NodeId};
use nestform_dag::walk::{walk, NodeOutcome};
use nestform_state::State;
use nestform_types::ResourceAddr;
use tokio::sync::{mpsc, watch};

use crate::hosts::Hosts;
use crate::plan::Plan;
pub use ops::OpKind;

/// Where apply saves state after each operation. The CLI's sink writes the state file atomically;
/// tests keep snapshots. Taking a callback keeps the engine free of files.
pub trait StateSink: Send + Sync {
    /// Saves `state`. Called from a blocking thread, never two calls at once; an error fails the
    /// operation whose change it was saving.
    fn persist(&self, state: &State) -> Result<(), String>;
}

/// How to apply.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Operations running at once at most (Terraform's `-parallelism`).
    pub parallelism: usize,
    /// Turns `true` on Ctrl-C: no new operation starts, running ones finish, state is saved.
    pub cancel: watch::Receiver<bool>,
    /// Progress, one event per operation phase.
    pub events: mpsc::UnboundedSender<ApplyEvent>,
    /// How long a guest gets to shut down gracefully before it is powered off.
    pub stop_timeout: Duration,
}

impl ApplyOptions {
    /// Parallelism 10, a 60 s graceful shutdown.
    pub fn new(cancel: watch::Receiver<bool>, events: mpsc::UnboundedSender<ApplyEvent>) -> Self {
        ApplyOptions { parallelism: 10, cancel, events, stop_timeout: Duration::from_secs(60) }
    }
}

/// Progress of one operation on one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyEvent {
    pub addr: ResourceAddr,
    pub op: OpKind,
    pub phase: Phase,
}

/// Where an operation is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    Started,
    Finished {
        elapsed: Duration,
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
    pub errors: Vec<(ResourceAddr, String)>,
    /// True when a cancel left operations unstarted.
    pub cancelled: bool,
}

/// Applies `plan` to `state` through `hosts`.
///
/// Refuses the whole plan (returning `state` unchanged, with one error per refused resource) when any
/// change cannot be applied by this version: resources inside promoted hosts, benchmarks to run.
pub async fn apply(
    plan: &Plan,
    state: State,
    hosts: &Hosts,
    opts: ApplyOptions,
    sink: Arc<dyn StateSink>,
) -> ApplyOutcome {
    let graph = match ops::build(plan, &state) {
        Ok(g) => g,
        Err(errors) => return ApplyOutcome { state, errors, cancelled: false },
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
        let error = format!("the operations form a cycle: {}", names.join(" -> "));
        return ApplyOutcome { state, errors: vec![(at, error)], cancelled: false };
    }

    let ctx = Arc::new(exec::Context {
        index: ops::index(plan),
        plan: plan.clone(),
        before: state.clone(),
        hosts: hosts.clone(),
        stop_timeout: opts.stop_timeout,
    });
    let journal = Arc::new(Journal { state: Mutex::new((state, 0)), saved: Mutex::new(0), sink });
    let all_ops = graph.ops;
    let events = opts.events.clone();
    let report = walk(&dag, opts.parallelism, opts.cancel.clone(), |id: NodeId| {
        let (ctx, journal, events) = (ctx.clone(), journal.clone(), events.clone());
        let op = all_ops[*dag.node(id)].clone();
        async move {
            let send = |phase| {
                // The receiver going away (a CLI that stopped listening) must not stop the apply.
                let _ = events.send(ApplyEvent { addr: op.addr.clone(), op: op.kind, phase });
            };
            send(Phase::Started);
            let start = Instant::now();
            let task_op = op.clone();
            let result = tokio::task::spawn_blocking(move || {
                let update = ctx.run(&task_op)?;
                journal.record(update)
            })
            .await
            .unwrap_or_else(|e| Err(format!("the operation panicked: {e}")));
            match &result {
                Ok(()) => send(Phase::Finished { elapsed: start.elapsed() }),
                Err(error) => send(Phase::Failed { error: error.clone() }),
            }
            result
        }
    })
    .await;

    let mut errors = Vec::new();
    for (id, outcome) in &report.outcomes {
        let op = &all_ops[*dag.node(*id)];
        match outcome {
            NodeOutcome::Failed(e) => errors.push((op.addr.clone(), e.clone())),
            NodeOutcome::Skipped { .. } | NodeOutcome::NotStarted => {
                let _ = opts.events.send(ApplyEvent {
                    addr: op.addr.clone(),
                    op: op.kind,
                    phase: Phase::Skipped,
                });
            }
            NodeOutcome::Succeeded => {}
        }
    }
    let cancelled = *opts.cancel.borrow() && report.outcomes.values().any(|o| *o == NodeOutcome::NotStarted);
    // Every operation has finished, so the journal is ours alone; cloning covers a task that somehow
    // still holds it rather than panicking.
    let state = match Arc::try_unwrap(journal) {
        Ok(j) => j.state.into_inner().unwrap_or_else(|p| p.into_inner()).0,
        Err(shared) => shared.state.lock().unwrap_or_else(|p| p.into_inner()).0.clone(),
    };
    ApplyOutcome { state, errors, cancelled }
}

/// The state being applied, with group commit: every operation that changes state waits until a
/// persist that includes its change has succeeded, but operations finishing while a persist runs share
/// the next one instead of writing the whole state once each (1,000 guests would otherwise serialize
/// the state 1,000 times).
struct Journal {
    /// The state and the number of changes made to it.
    state: Mutex<(State, u64)>,
    /// The number of changes the last successful persist included. Held while persisting, which is
    /// what serializes writes.
    saved: Mutex<u64>,
    sink: Arc<dyn StateSink>,
}

impl Journal {
    /// Records an operation's update and persists it. Blocking.
    fn record(&self, update: exec::StateUpdate) -> Result<(), String> {
        let mine = {
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if !update.apply_to(&mut guard.0) {
                return Ok(());
            }
            guard.1 += 1;
            guard.1
        };
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        if *saved >= mine {
            return Ok(());
        }
        // Persisting under the state lock (rather than from a clone) saves copying the whole state
        // each time; operations finishing meanwhile wait here and join the next persist.
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.sink
            .persist(&guard.0)
            .map_err(|e| format!("the change is made but state cannot be saved: {e}"))?;
        *saved = guard.1;
        Ok(())
    }
}
