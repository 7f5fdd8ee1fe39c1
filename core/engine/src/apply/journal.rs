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
    closing: bool,
}

impl Journal {
    pub fn start(state: State, sink: Arc<dyn StateSink>) -> Journal {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                state,
                pending: Vec::new(),
                recorded: 0,
                saved: 0,
                failed: None,
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

    /// Blocks until every change up to `ticket` is saved.
    pub fn wait_saved(&self, ticket: u64) -> Result<(), String> {
        let mut inner = self.shared.lock();
        while inner.saved < ticket {
            if let Some((_, e)) = &inner.failed {
                return Err(format!("state cannot be saved, so nothing that depends on it starts: {e}"));
            }
            inner = self.shared.changed.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }

    /// Waits until everything recorded is saved, stops the writer, and returns the state with the
    /// save failure, if the last save failed.
    pub fn finish(&self) -> (State, Option<(ResourceAddr, String)>) {
        self.shared.lock().closing = true;
        self.shared.changed.notify_all();
        if let Some(writer) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = writer.join();
        }
        let inner = self.shared.lock();
        (inner.state.clone(), inner.failed.clone())
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
                }
                // Kept as text: every operation waiting on the save reports it.
                Err(e) => inner.failed = Some((batch[0].0.clone(), nestform_provider::error_chain(&*e))),
            }
            self.changed.notify_all();
            if inner.failed.is_some() && inner.closing {
                return;
            }
        }
    }
}
