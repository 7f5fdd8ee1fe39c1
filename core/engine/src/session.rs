//! One apply from start to end, as `nestform apply` and `destroy` run it: the state pruned to what
//! the plan knows, a runtime for the walk, Ctrl-C turned into a cancel (running operations finish,
//! none start), state written to its file after every finished operation, outputs recorded after a
//! clean apply, and one last full save. The CLI only renders what [`run`] reports.

use std::sync::Mutex;

use nestform_state::{IncrementalStore, State};
use nestform_types::ResourceAddr;

use crate::apply::{ApplyEvent, ApplyOptions, StateChange, StateSink};
use crate::hosts::Hosts;
use crate::plan::Plan;
use crate::workdir::{EngineError, Workdir};

/// How to run an apply.
pub struct Session<'a> {
    /// Operations running at once at most (`-parallelism`).
    pub parallelism: usize,
    /// How long a booted guest's agent gets to answer; `None` keeps the engine's default.
    pub agent_wait: Option<nestform_provider::AgentWait>,
    /// Called with every progress event, in order, from one task.
    pub on_event: &'a (dyn Fn(&ApplyEvent) + Send + Sync),
    /// Called once when Ctrl-C arrives (before running operations finish).
    pub on_interrupt: &'a (dyn Fn() + Send + Sync),
}

/// What an apply did; the state is saved already.
#[derive(Debug)]
pub struct Applied {
    pub state: State,
    /// Each failed operation (or refused resource) with its error.
    pub errors: Vec<(ResourceAddr, crate::apply::ApplyError)>,
    /// Ctrl-C left operations unstarted.
    pub cancelled: bool,
    /// Why a state save failed during the apply, when one did; nothing started after it.
    pub halted: Option<String>,
    /// The last full save failed too: the state above is not in the state file.
    pub not_saved: Option<NotSaved>,
}

/// The state file could not be written at the end of an apply.
#[derive(Debug)]
pub struct NotSaved {
    pub error: nestform_state::StateError,
    /// Where the state was written instead ([`nestform_state::StateStore::errored_path`]), or why
    /// that failed as well.
    pub kept: Result<std::path::PathBuf, nestform_state::StateError>,
}

/// Writes the state file after every finished resource, serializing only what changed.
struct FileSink(Mutex<IncrementalStore>);

impl StateSink for FileSink {
    fn persist(&self, changes: &[StateChange]) -> Result<(), nestform_provider::BoxError> {
        let mut store = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (addr, r) in changes {
            store.record(addr, r.as_ref());
        }
        store.write()?;
        Ok(())
    }
}

/// Applies `plan` to `state` (as recorded now) through `hosts`, saving to `workdir`'s state file.
/// The caller holds the state lock.
pub fn run(
    workdir: &Workdir,
    plan: &Plan,
    state: State,
    hosts: &Hosts,
    session: &Session<'_>,
) -> Result<Applied, EngineError> {
    let state = Workdir::prune_to_plan(plan, state);
    let sink =
        std::sync::Arc::new(FileSink(Mutex::new(IncrementalStore::new(workdir.store().clone(), &state))));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| EngineError::Usage(format!("cannot start the apply's runtime: {e}")))?;
    let outcome = runtime.block_on(async {
        let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
        let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel::<ApplyEvent>();
        // Ctrl-C: let running operations finish, save state, report it cancelled.
        let interrupt = session.on_interrupt;
        let on_event = session.on_event;
        let ctrl_c = async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupt();
                let _ = cancel_tx.send(true);
            }
            // Never done: the apply ends the `select!` below, however Ctrl-C went.
            std::future::pending::<std::convert::Infallible>().await
        };
        let printer = async move {
            while let Some(event) = events_rx.recv().await {
                on_event(&event);
            }
        };
        let mut opts = ApplyOptions::new(cancel_rx, events_tx);
        opts.parallelism = session.parallelism.max(1);
        if let Some(w) = session.agent_wait {
            opts.agent_wait = w;
        }
        let apply = crate::apply::apply(plan, state, hosts, opts, sink.clone());
        // The printer ends when apply drops its event sender; Ctrl-C is only listened for meanwhile.
        let (outcome, ()) = tokio::select! {
            done = async { tokio::join!(apply, printer) } => done,
            never = ctrl_c => match never {},
        };
        outcome
    });

    let mut state = outcome.state;
    if outcome.errors.is_empty() && !outcome.cancelled {
        Workdir::record_outputs(plan, &mut state)?;
    }
    // Outputs (and anything a failed persist left unsaved) go in one last full save; should it fail
    // too, the state goes to a file beside it rather than being lost with this process.
    let saved = sink.0.lock().unwrap_or_else(|p| p.into_inner()).save(&state);
    let mut errors = outcome.errors;
    let not_saved = match saved {
        Ok(serial) => {
            state.serial = serial;
            // This save recorded what earlier ones could not.
            errors.retain(|(_, e)| !matches!(e, crate::apply::ApplyError::SavedNot(_)));
            None
        }
        Err(error) => Some(NotSaved { error, kept: workdir.store().save_errored(&state) }),
    };
    Ok(Applied { state, errors, cancelled: outcome.cancelled, halted: outcome.halted, not_saved })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use nestform_provider_memory::MemoryProvider;

    use super::*;
    use crate::apply::Phase;

    const CONFIG: &str = r#"
kvm_host "l0" {
  uri = "memory://l0"
}

nat_network "lan" {
  host = kvm_host.l0
  cidr = "192.168.150.0/24"
}

nested_guest "g" {
  host   = kvm_host.l0
  vcpus  = 2
  memory = "256MiB"

  network "eth0" {
    nat_network = nat_network.lan
  }
}

output "vcpus" {
  value = nested_guest.g.vcpus
}
"#;

    #[test]
    fn an_apply_saves_every_step_and_its_outputs_in_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.nf.hcl"), CONFIG).unwrap();
        let workdir = Workdir::new(dir.path(), None);
        let provider = MemoryProvider::new();
        let config = workdir.config(&Default::default()).unwrap();
        let planned = workdir.plan(&config, provider.backends(), Default::default(), true).unwrap();
        let events = Mutex::new(Vec::new());
        let on_event = |e: &ApplyEvent| events.lock().unwrap().push(e.clone());
        let session = Session { parallelism: 4, agent_wait: None, on_event: &on_event, on_interrupt: &|| {} };
        let applied =
            run(&workdir, &planned.plan, workdir.state().unwrap(), &planned.hosts, &session).unwrap();

        assert!(applied.errors.is_empty() && !applied.cancelled, "{:?}", applied.errors);
        let saved = workdir.store().load().unwrap().expect("the state file is written");
        assert_eq!(saved.resources, applied.state.resources);
        assert_eq!(saved.resources.len(), 3);
        assert_eq!(saved.outputs["vcpus"].value, serde_json::json!(2));
        assert!(provider.guest("l0", "g").is_some_and(|g| g.running));
        let events = events.into_inner().unwrap();
        let finished = events.iter().filter(|e| matches!(e.phase, Phase::Finished { .. })).count();
        assert_eq!(finished, 3, "{events:?}");
    }

    #[test]
    fn a_failed_operation_is_reported_typed_and_what_finished_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.nf.hcl"), CONFIG).unwrap();
        let workdir = Workdir::new(dir.path(), None);
        let provider = MemoryProvider::new();
        provider.fail_on("create_guest", "g");
        let config = workdir.config(&Default::default()).unwrap();
        let planned = workdir.plan(&config, provider.backends(), Default::default(), true).unwrap();
        let session = Session { parallelism: 4, agent_wait: None, on_event: &|_| {}, on_interrupt: &|| {} };
        let applied =
            run(&workdir, &planned.plan, workdir.state().unwrap(), &planned.hosts, &session).unwrap();

        assert_eq!(applied.errors.len(), 1, "{:?}", applied.errors);
        let (addr, error) = &applied.errors[0];
        assert_eq!(addr.to_string(), "nested_guest.g");
        assert!(matches!(error, crate::apply::ApplyError::Provider(_)), "{error:?}");
        let saved = workdir.store().load().unwrap().unwrap();
        assert!(saved.resources.contains_key(&"nat_network.lan".parse().unwrap()));
        assert!(!saved.resources.contains_key(addr));
        assert!(saved.outputs.is_empty(), "outputs are recorded after a clean apply only");
    }

    #[test]
    fn a_state_that_cannot_be_saved_is_kept_beside_it_and_blocks_the_next_command() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.nf.hcl"), CONFIG).unwrap();
        let workdir = Workdir::new(dir.path(), None);
        let provider = MemoryProvider::new();
        // While the guest is created, the state file's place becomes a directory: every later save of
        // it fails, while the directory it is in stays writable.
        let state_path = workdir.store().path().to_path_buf();
        let hook_path = state_path.clone();
        provider.on_call(move |op, name| {
            if (op, name) == ("create_guest", "g") {
                std::fs::remove_file(&hook_path).unwrap();
                std::fs::create_dir(&hook_path).unwrap();
            }
        });
        let config = workdir.config(&Default::default()).unwrap();
        let planned = workdir.plan(&config, provider.backends(), Default::default(), true).unwrap();
        let session = Session { parallelism: 4, agent_wait: None, on_event: &|_| {}, on_interrupt: &|| {} };
        let applied =
            run(&workdir, &planned.plan, workdir.state().unwrap(), &planned.hosts, &session).unwrap();

        assert!(applied.halted.is_some(), "{applied:?}");
        let unrecorded: Vec<String> = applied
            .errors
            .iter()
            .filter(|(_, e)| matches!(e, crate::apply::ApplyError::SavedNot(_)))
            .map(|(a, _)| a.to_string())
            .collect();
        assert_eq!(unrecorded, ["nested_guest.g"]);
        let not_saved = applied.not_saved.as_ref().expect("the last save failed too");
        let kept = not_saved.kept.as_ref().expect("the errored state was written");
        assert_eq!(*kept, workdir.store().errored_path());
        let errored = nestform_state::StateStore::new(kept).load().unwrap().unwrap();
        assert_eq!(errored.resources, applied.state.resources);
        assert!(errored.resources.contains_key(&"nested_guest.g".parse().unwrap()));

        // Nothing plans or applies beside it until it is put back.
        let refused = workdir.lock("plan").unwrap_err();
        assert!(refused.to_string().contains(".errored"), "{refused}");
        std::fs::remove_dir(&state_path).unwrap();
        std::fs::rename(kept, &state_path).unwrap();
        let _lock = workdir.lock("plan").unwrap();
        let again = workdir.plan(&config, provider.backends(), Default::default(), true).unwrap();
        assert!(again.plan.changes.iter().all(|c| c.action == crate::plan::Action::NoOp), "nothing is lost");
    }
}
