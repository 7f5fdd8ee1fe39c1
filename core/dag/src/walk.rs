//! The concurrent walker: runs one future per node of a [`Dag`] as soon as all of that node's own
//! dependencies have succeeded (not in waves), at most `parallelism` at once.
//!
//! A failed node skips everything that (transitively) depends on it while independent branches go on.
//! A stop is a plain `Fn() -> bool` the walker asks before each start, rather than a channel: the
//! caller may have several reasons to stop (a Ctrl-C, a failed save), and a channel forwarded from
//! another would reach the walker late, after it started one node too many. Once it says `true`, no
//! new node starts, running ones finish, the rest are `NotStarted`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;

use tokio::task::JoinSet;

use crate::graph::{Dag, NodeId};

/// What happened to one node during a walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeOutcome {
    /// Its work returned `Ok`.
    Succeeded,
    /// Its work returned this error, or panicked.
    Failed(String),
    /// Not run because `because`, one of its transitive dependencies, failed.
    Skipped { because: NodeId },
    /// Not run because the walk was cancelled first, or because it sits on a cycle and so never
    /// became ready.
    NotStarted,
}

/// The outcome of every node of the walked graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalkReport {
    pub outcomes: BTreeMap<NodeId, NodeOutcome>,
}

impl WalkReport {
    /// The nodes that failed, with their errors, in id order.
    pub fn failed(&self) -> Vec<(NodeId, &str)> {
        self.outcomes
            .iter()
            .filter_map(|(&id, outcome)| match outcome {
                NodeOutcome::Failed(error) => Some((id, error.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The nodes skipped because a dependency failed, each with the failed node that caused it.
    pub fn skipped(&self) -> Vec<(NodeId, NodeId)> {
        self.outcomes
            .iter()
            .filter_map(|(&id, outcome)| match outcome {
                NodeOutcome::Skipped { because } => Some((id, *because)),
                _ => None,
            })
            .collect()
    }

    /// The nodes that never started.
    pub fn not_started(&self) -> Vec<NodeId> {
        self.with_outcome(&NodeOutcome::NotStarted)
    }

    /// The nodes whose work succeeded.
    pub fn succeeded(&self) -> Vec<NodeId> {
        self.with_outcome(&NodeOutcome::Succeeded)
    }

    /// Whether every node succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.outcomes.values().all(|outcome| *outcome == NodeOutcome::Succeeded)
    }

    fn with_outcome(&self, wanted: &NodeOutcome) -> Vec<NodeId> {
        self.outcomes.iter().filter(|(_, outcome)| *outcome == wanted).map(|(&id, _)| id).collect()
    }
}

/// Runs `work(id)` for every node as soon as ALL of its own dependencies have succeeded, with at most
/// `parallelism` (at least 1) running at once; among ready nodes the one added first starts first.
///
/// When a node fails, everything that depends on it (transitively) is `Skipped` while independent
/// nodes go on. `stop` is asked before every start: once it says `true`, no new node starts; running
/// ones finish; the rest are `NotStarted` (except the dependents of a node that fails after the stop,
/// which are `Skipped`, the more useful answer). It is asked in the walker's own task, so whatever a
/// node set before it finished is seen before the next node starts: a node that asks for a stop is
/// the last one started. Nodes on a cycle never become ready and are reported `NotStarted`; check
/// [`Dag::cycles`] first.
///
/// Each future is spawned on the current tokio runtime, so it must be `Send + 'static`; a panic in
/// one is reported as that node's failure.
pub async fn walk<N, S, F, Fut>(dag: &Dag<N>, parallelism: usize, stop: S, work: F) -> WalkReport
where
    S: Fn() -> bool,
    F: Fn(NodeId) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let parallelism = parallelism.max(1);
    let mut outcomes: BTreeMap<NodeId, NodeOutcome> = BTreeMap::new();
    let mut waiting: HashMap<NodeId, usize> =
        dag.node_ids().map(|id| (id, dag.dependencies(id).count())).collect();
    let mut ready: BTreeSet<NodeId> = dag.node_ids().filter(|id| waiting[id] == 0).collect();
    let mut running: JoinSet<Result<(), String>> = JoinSet::new();
    let mut running_ids: HashMap<tokio::task::Id, NodeId> = HashMap::new();

    loop {
        // Nothing can start between two joins, so a stop needs no waking: it is asked here, each time.
        while running.len() < parallelism && !ready.is_empty() && !stop() {
            let id = ready.pop_first().expect("ready is not empty");
            let handle = running.spawn(work(id));
            running_ids.insert(handle.id(), id);
        }
        let Some(joined) = running.join_next_with_id().await else { break };
        let (task, result) = match joined {
            Ok((task, result)) => (task, result),
            Err(error) => {
                let task = error.id();
                let message = if error.is_panic() {
                    panic_message(error.into_panic())
                } else {
                    "the task was cancelled".to_string()
                };
                (task, Err(message))
            }
        };
        let id = running_ids.remove(&task).expect("every spawned task is recorded");
        match result {
            Ok(()) => {
                outcomes.insert(id, NodeOutcome::Succeeded);
                for dependent in dag.dependents(id) {
                    let count = waiting.get_mut(&dependent).expect("every node is counted");
                    *count -= 1;
                    if *count == 0 && !outcomes.contains_key(&dependent) {
                        ready.insert(dependent);
                    }
                }
            }
            Err(error) => {
                outcomes.insert(id, NodeOutcome::Failed(error));
                // A dependent cannot have started (it waits for all its dependencies), so everything
                // downstream without an outcome is skipped; one already skipped keeps its first cause.
                for dependent in dag.transitive_dependents(id) {
                    outcomes.entry(dependent).or_insert(NodeOutcome::Skipped { because: id });
                    ready.remove(&dependent);
                }
            }
        }
    }

    for id in dag.node_ids() {
        outcomes.entry(id).or_insert(NodeOutcome::NotStarted);
    }
    WalkReport { outcomes }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_string());
    format!("panicked: {text}")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// Records start and finish events so tests can check what ran when.
    #[derive(Default)]
    struct Trace {
        events: Mutex<Vec<(NodeId, bool)>>,
        running: AtomicUsize,
        max_running: AtomicUsize,
    }

    impl Trace {
        fn finished_before_started(&self, earlier: NodeId, later: NodeId) -> bool {
            let events = self.events.lock().unwrap();
            let done = events.iter().position(|e| *e == (earlier, false));
            let start = events.iter().position(|e| *e == (later, true));
            matches!((done, start), (Some(d), Some(s)) if d < s)
        }

        fn started(&self) -> BTreeSet<NodeId> {
            let events = self.events.lock().unwrap();
            events.iter().filter(|e| e.1).map(|e| e.0).collect()
        }
    }

    /// A work function that sleeps `delay(id)` ms and fails for the nodes in `fail`.
    fn traced(
        trace: &Arc<Trace>,
        fail: &'static [usize],
        delay: fn(NodeId) -> u64,
    ) -> impl Fn(NodeId) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        let trace = Arc::clone(trace);
        move |id| {
            let trace = Arc::clone(&trace);
            Box::pin(async move {
                trace.events.lock().unwrap().push((id, true));
                let now = trace.running.fetch_add(1, Ordering::SeqCst) + 1;
                trace.max_running.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay(id))).await;
                trace.running.fetch_sub(1, Ordering::SeqCst);
                trace.events.lock().unwrap().push((id, false));
                if fail.contains(&id.index()) {
                    Err(format!("node `{id}` failed"))
                } else {
                    Ok(())
                }
            })
        }
    }

    fn no_cancel() -> bool {
        false
    }

    fn dag(nodes: usize, edges: &[(usize, usize)]) -> (Dag<usize>, Vec<NodeId>) {
        let mut dag = Dag::new();
        let ids: Vec<NodeId> = (0..nodes).map(|n| dag.add_node(n)).collect();
        for &(dependent, dependency) in edges {
            dag.add_dependency(ids[dependent], ids[dependency]);
        }
        (dag, ids)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn order_is_respected_under_parallelism() {
        // A diamond plus a long chain: 0 <- 1,2 <- 3; 4 <- 5 <- 6 <- 7.
        let edges = [(1, 0), (2, 0), (3, 1), (3, 2), (5, 4), (6, 5), (7, 6), (7, 3)];
        let (dag, ids) = dag(8, &edges);
        let trace = Arc::new(Trace::default());
        let report = walk(&dag, 4, no_cancel, traced(&trace, &[], |id| 5 + id.index() as u64 % 3)).await;
        assert!(report.all_succeeded(), "{report:?}");
        for (dependent, dependency) in edges {
            assert!(
                trace.finished_before_started(ids[dependency], ids[dependent]),
                "node {dependent} started before {dependency} finished"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallelism_bound_is_never_exceeded_and_is_reached() {
        let (dag, _) = dag(12, &[]);
        let trace = Arc::new(Trace::default());
        let report = walk(&dag, 3, no_cancel, traced(&trace, &[], |_| 20)).await;
        assert!(report.all_succeeded());
        assert_eq!(trace.max_running.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_start_as_soon_as_their_own_dependencies_succeed() {
        // 0 is slow; 1 is fast and 2 depends only on 1: 2 must not wait for 0 (no waves).
        let (dag, ids) = dag(4, &[(2, 1), (3, 0)]);
        let trace = Arc::new(Trace::default());
        let report =
            walk(&dag, 4, no_cancel, traced(&trace, &[], |id| if id.index() == 0 { 200 } else { 5 })).await;
        assert!(report.all_succeeded());
        // 2 waited only for 1 (5 ms), so it finished while 0 (200 ms) was still running.
        let events = trace.events.lock().unwrap();
        let done = |id: NodeId| events.iter().position(|e| *e == (id, false)).unwrap();
        assert!(done(ids[2]) < done(ids[0]), "{events:?}");
        assert!(done(ids[0]) < done(ids[3]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failure_skips_exactly_the_transitive_dependents() {
        // 1 fails. 2 and 3 depend on it (3 through 2); 4 depends on 3 and 0. 0, 5, 6 are independent.
        let (dag, ids) = dag(7, &[(1, 0), (2, 1), (3, 2), (4, 3), (4, 0), (6, 5)]);
        let trace = Arc::new(Trace::default());
        let report = walk(&dag, 2, no_cancel, traced(&trace, &[1], |_| 5)).await;
        assert_eq!(report.failed(), vec![(ids[1], "node `n1` failed")]);
        assert_eq!(report.skipped(), vec![(ids[2], ids[1]), (ids[3], ids[1]), (ids[4], ids[1])]);
        assert_eq!(report.succeeded(), vec![ids[0], ids[5], ids[6]]);
        assert!(!report.all_succeeded());
        assert_eq!(trace.started(), BTreeSet::from([ids[0], ids[1], ids[5], ids[6]]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn independent_branches_run_after_a_failure() {
        // Branch A: 0 fails at once. Branch B: 1 <- 2 <- 3, which starts and runs after the failure.
        let (dag, ids) = dag(4, &[(2, 1), (3, 2)]);
        let trace = Arc::new(Trace::default());
        let report = walk(&dag, 1, no_cancel, traced(&trace, &[0], |_| 5)).await;
        assert_eq!(report.outcomes[&ids[0]], NodeOutcome::Failed("node `n0` failed".into()));
        for id in &ids[1..] {
            assert_eq!(report.outcomes[id], NodeOutcome::Succeeded);
        }
        assert!(trace.finished_before_started(ids[0], ids[1]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_is_the_nodes_failure() {
        let (dag, ids) = dag(2, &[(1, 0)]);
        let report = walk(&dag, 2, no_cancel, |id: NodeId| async move {
            if id.index() == 0 {
                panic!("boom");
            }
            Ok(())
        })
        .await;
        assert_eq!(report.outcomes[&ids[0]], NodeOutcome::Failed("panicked: boom".into()));
        assert_eq!(report.outcomes[&ids[1]], NodeOutcome::Skipped { because: ids[0] });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancellation_lets_running_nodes_finish_and_starts_no_more() {
        // A chain 0 <- 1 <- 2 plus independent 3 and 4, one at a time. Node 0 cancels while it runs.
        let (dag, ids) = dag(5, &[(1, 0), (2, 1)]);
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(Mutex::new(Vec::new()));
        let asked = Arc::clone(&stop);
        let report = walk(&dag, 1, move || asked.load(Ordering::SeqCst), {
            let started = Arc::clone(&started);
            move |id: NodeId| {
                let stop = Arc::clone(&stop);
                let started = Arc::clone(&started);
                async move {
                    started.lock().unwrap().push(id);
                    if id.index() == 0 {
                        stop.store(true, Ordering::SeqCst);
                        // Keep running after the cancel: the walker must wait for this to finish.
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(*started.lock().unwrap(), vec![ids[0]]);
        assert_eq!(report.outcomes[&ids[0]], NodeOutcome::Succeeded);
        assert_eq!(report.not_started(), ids[1..].to_vec());
    }

    #[tokio::test]
    async fn cancelled_before_start_runs_nothing() {
        let (dag, ids) = dag(3, &[]);
        let report = walk(&dag, 2, || true, |_| async { Ok(()) }).await;
        assert_eq!(report.not_started(), ids);
    }

    /// The apply once forwarded Ctrl-C to the walker through a second channel and a task; now and then
    /// the walker started the next node before that task ran (CI saw it). A stop asked as a node's very
    /// last act must be seen before anything else starts, every time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_asked_as_a_nodes_last_act_is_seen_before_the_next_start() {
        for round in 0..200 {
            let (dag, ids) = dag(8, &[]);
            let stop = Arc::new(AtomicBool::new(false));
            let started = Arc::new(AtomicUsize::new(0));
            let asked = Arc::clone(&stop);
            let (s, st) = (Arc::clone(&stop), Arc::clone(&started));
            let report = walk(
                &dag,
                1,
                move || asked.load(Ordering::SeqCst),
                move |id: NodeId| {
                    let (stop, started) = (Arc::clone(&s), Arc::clone(&st));
                    async move {
                        started.fetch_add(1, Ordering::SeqCst);
                        if id.index() == 2 {
                            stop.store(true, Ordering::SeqCst);
                        }
                        Ok(())
                    }
                },
            )
            .await;
            assert_eq!(started.load(Ordering::SeqCst), 3, "round {round}");
            assert_eq!(report.not_started(), ids[3..].to_vec(), "round {round}");
        }
    }

    #[tokio::test]
    async fn nodes_on_a_cycle_never_start() {
        let (dag, ids) = dag(3, &[(1, 2), (2, 1)]);
        let report = walk(&dag, 2, no_cancel, |_| async { Ok(()) }).await;
        assert_eq!(report.succeeded(), vec![ids[0]]);
        assert_eq!(report.not_started(), vec![ids[1], ids[2]]);
    }

    #[test]
    fn the_walk_future_is_send_when_its_inputs_are() {
        fn assert_send<T: Send>(_: T) {}
        let dag: Dag<String> = Dag::new();
        assert_send(walk(&dag, 1, no_cancel, |_| async { Ok(()) }));
    }

    #[tokio::test]
    async fn empty_graph_walks_to_an_empty_report() {
        let dag: Dag<()> = Dag::new();
        let report = walk(&dag, 0, no_cancel, |_| async { Ok(()) }).await;
        assert!(report.outcomes.is_empty());
        assert!(report.all_succeeded());
    }
}
