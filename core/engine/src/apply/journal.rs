//! The state being applied, and how its changes reach the [`StateSink`]: a writer thread saves them in
//! batches while operations go on.
//!
//! Every finished operation records its change and gets a ticket. The writer thread hands every change
//! recorded so far to the sink in one `persist` call, then the next batch, and so on, so 1,000 guests
//! finishing close together cost a few hundred writes instead of 1,000, and no operation waits for a
//! write it does not need. What does wait: an operation starts only once the changes of everything it
//! depends on are saved (its dependencies' tickets), so state never records something without what it
//! stands on; and apply returns only when every change is saved. The state lock is never held while
//! the sink writes.
//!
//! Once a save fails, the journal halts the apply: nothing starts any more (running operations finish
//! and record their changes, which later saves still try to write), since every operation started
//! after a failed save would make a change that no state records. [`Journal::finish`] names every
//! resource whose change is made but not saved.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use nestform_state::State;
use nestform_types::ResourceAddr;

use super::exec::StateUpdate;
use super::{StateChange, StateSink};

pub(crate) struct Journal {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Signalled when a change is recorded, a batch is saved, or the journal closes.
    changed: Condvar,
    sink: Arc<dyn StateSink>,
}

struct Inner {
    state: State,
    /// Changes not yet handed to the sink.
    pending: Vec<StateChange>,
    /// Changes recorded so far; a change's ticket is the count including it.
    recorded: u64,
    /// Changes the sink has saved.
    saved: u64,
    /// The last save's failure, with the first resource of its batch; cleared by a later success
    /// (the sink keeps failed changes in its mirror, so that success saved them too).
    failed: Option<(ResourceAddr, String)>,
    /// The resources of every batch whose save failed, until a later save succeeds.
    unsaved: BTreeSet<ResourceAddr>,
    /// The first failed save of this apply (kept when a later one succeeded).
    halted: Option<String>,
    closing: bool,
}

/// Changes that are made on the hosts but that no saved state records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsaved {
    /// Each resource whose change is not saved, in address order.
    pub resources: Vec<ResourceAddr>,
    /// Why the last save failed.
    pub error: String,
}

impl Journal {
    /// Starts the writer thread.
    pub fn start(state: State, sink: Arc<dyn StateSink>) -> Journal {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                state,
                pending: Vec::new(),
                recorded: 0,
                saved: 0,
                failed: None,
                unsaved: BTreeSet::new(),
                halted: None,
                closing: false,
            }),
            changed: Condvar::new(),
            sink,
        });
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("nestform-state-writer".into())
            .spawn(move || writer_shared.write_loop())
            .expect("starting the state writer thread");
        Journal { shared, writer: Mutex::new(Some(writer)) }
    }

    /// Records an operation's change to state and returns its ticket (0 when nothing changed).
    pub fn record(&self, update: StateUpdate) -> u64 {
        let mut inner = self.shared.lock();
        let Some(addr) = update.addr().cloned() else { return 0 };
        if !update.apply_to(&mut inner.state) {
            return 0;
        }
        let now = inner.state.resources.get(&addr).cloned();
        inner.pending.push((addr, now));
        inner.recorded += 1;
        self.shared.changed.notify_all();
        inner.recorded
    }

    /// The state as recorded so far (saved or not).
    pub fn state(&self) -> State {
        self.shared.lock().state.clone()
    }

    /// Blocks until every change up to `ticket` is saved. Fails at once, before anything is asked of
    /// a host, when any save of this apply has failed.
    pub fn wait_saved(&self, ticket: u64) -> Result<(), String> {
        let mut inner = self.shared.lock();
        if let Some(why) = &inner.halted {
            return Err(format!("not started, since state could not be saved: {why}"));
        }
        while inner.saved < ticket {
            if let Some((_, e)) = &inner.failed {
                return Err(format!("state cannot be saved, so nothing that depends on it starts: {e}"));
            }
            inner = self.shared.changed.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }

    /// Why the first failed save of this apply failed (a later one may have succeeded). The walk asks
    /// before each start, so nothing starts after a failed save.
    pub fn halted(&self) -> Option<String> {
        self.shared.lock().halted.clone()
    }

    /// Waits until everything recorded is saved, stops the writer, and returns the state with what
    /// is not saved, if the last save failed.
    pub fn finish(&self) -> (State, Option<Unsaved>) {
        self.shared.lock().closing = true;
        self.shared.changed.notify_all();
        if let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = writer.join();
        }
        let inner = self.shared.lock();
        let unsaved = inner.failed.as_ref().map(|(_, error)| Unsaved {
            // The writer gives up at the close after a failure: what it never handed over is unsaved too.
            resources: inner
                .unsaved
                .iter()
                .chain(inner.pending.iter().map(|(addr, _)| addr))
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            error: error.clone(),
        });
        (inner.state.clone(), unsaved)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_loop(&self) {
        let mut inner = self.lock();
        loop {
            while inner.pending.is_empty() && !inner.closing {
                inner = self.changed.wait(inner).unwrap_or_else(|p| p.into_inner());
            }
            if inner.pending.is_empty() {
                return;
            }
            let batch = std::mem::take(&mut inner.pending);
            let upto = inner.recorded;
            drop(inner);
            let result = self.sink.persist(&batch);
            inner = self.lock();
            match result {
                Ok(()) => {
                    inner.saved = upto;
                    inner.failed = None;
                    inner.unsaved.clear();
                }
                // Kept as text: every operation waiting on the save reports it.
                Err(e) => {
                    let error = nestform_provider::error_chain(&*e);
                    tracing::error!(%error, changes = batch.len(), "saving state failed; nothing more starts");
                    inner.halted.get_or_insert_with(|| error.clone());
                    inner.failed = Some((batch[0].0.clone(), error));
                    inner.unsaved.extend(batch.iter().map(|(addr, _)| addr.clone()));
                }
            }
            self.changed.notify_all();
            if inner.failed.is_some() && inner.closing {
                return;
            }
        }
    }
}
