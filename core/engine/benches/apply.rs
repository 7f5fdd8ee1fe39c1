//! What the executor costs on top of the provider: 1,000 guests created on libvirt's test driver
//! (`test:///default`, in-process) by `nestform_engine::apply::apply`, against the same provider calls
//! made one after another in a plain loop, over the same connection with the same requests.
//!
//! Plain `std::time::Instant` (no harness): `cargo bench -p nestform-engine --bench apply` (or
//! `cargo test -p nestform-engine --bench apply` for an unoptimised run). Prints both times and the
//! overhead in percent. The apply saves the state file after every change through the same incremental store
//! the CLI uses (atomic writes with fsync, in a temporary directory), so that cost is counted too.
//!
//! The test driver's state lives as long as one connection to it stays open: the `Hosts` cache keeps
//! that one connection for the whole run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nestform_engine::apply::{apply, ApplyOptions, StateChange, StateSink};
use nestform_engine::hosts::Hosts;
use nestform_engine::plan::{Action, Plan, ResourceChange, PLAN_FORMAT_VERSION};
use nestform_engine::refresh::refresh_hosts;
use nestform_engine::request::guest_request;
use nestform_provider_libvirt::LibvirtProvider;
use nestform_state::State;
use nestform_types::*;
use tokio::sync::{mpsc, watch};

const GUESTS: usize = 1000;
const URI: &str = "test:///default";

/// Saves the state file after every change exactly as the CLI does: an incremental store writing
/// atomically (temporary file, fsync, rename, directory fsync, backup) into a temporary directory.
struct FileSink {
    store: std::sync::Mutex<nestform_state::IncrementalStore>,
    saves: AtomicUsize,
    _dir: tempfile::TempDir,
}

impl FileSink {
    fn new(state: &State) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = nestform_state::StateStore::new(dir.path().join("nestform.state.json"));
        FileSink {
            store: std::sync::Mutex::new(nestform_state::IncrementalStore::new(store, state)),
            saves: AtomicUsize::new(0),
            _dir: dir,
        }
    }
}

impl StateSink for FileSink {
    fn persist(&self, changes: &[StateChange]) -> Result<(), nestform_provider::BoxError> {
        let mut store = self.store.lock().unwrap();
        for (addr, r) in changes {
            store.record(addr, r.as_ref());
        }
        store.write()?;
        self.saves.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn host_addr() -> ResourceAddr {
    ResourceAddr::new(ResourceType::KvmHost, "l0")
}

fn guest_spec(i: usize) -> NestedGuestSpec {
    NestedGuestSpec {
        host: host_addr(),
        name: format!("bench-{i}"),
        vcpus: 1,
        memory: ByteSize::mib(64),
        cpu: default_cpu(),
        disks: vec![],
        networks: vec![],
        running: true,
        install: None,
    }
}

fn change(addr: ResourceAddr, spec: ResourceSpec, level: u32) -> ResourceChange {
    let host = spec.host().cloned();
    ResourceChange {
        addr,
        host: host.clone(),
        level,
        action: Action::Create,
        restart: false,
        before: None,
        after: Some(serde_json::to_value(&spec).unwrap()),
        after_unknown: BTreeSet::new(),
        spec: Some(spec),
        id: None,
        attribute_changes: vec![],
        reasons: vec![],
        depends_on: host.into_iter().collect(),
        definition_before: None,
        definition_after: None,
        timeouts: Default::default(),
    }
}

fn plan(lineage: &str) -> Plan {
    let host = KvmHostSpec {
        uri: Some(URI.into()),
        guest: None,
        nested: false,
        kvm_module_options: BTreeMap::new(),
    };
    let mut changes = vec![change(host_addr(), ResourceSpec::KvmHost(host), 0)];
    for i in 0..GUESTS {
        let addr = ResourceAddr::new(ResourceType::NestedGuest, format!("bench-{i}"));
        changes.push(change(addr, ResourceSpec::NestedGuest(guest_spec(i)), 1));
    }
    Plan {
        format_version: PLAN_FORMAT_VERSION,
        lineage: lineage.into(),
        state_serial: 0,
        destroy: false,
        sources: vec![],
        variables: BTreeMap::new(),
        targets: vec![],
        replace: vec![],
        changes,
        output_changes: BTreeMap::new(),
        hosts: BTreeMap::new(),
    }
}

fn main() {
    // libvirt's test driver for the hosts; its guests have no agents and boot from disk, so the fake's
    // guests and boots stand in for the rest.
    let fake = nestform_provider_memory::MemoryProvider::new();
    let hosts = Hosts::new(nestform_provider::Backends {
        provider: Arc::new(LibvirtProvider::new()),
        guests: Arc::new(fake.clone()),
        boot: Arc::new(nestform_provider_memory::DiskBoot),
        bench: Arc::new(nestform_bench::Runners),
    });
    let h = hosts.connect_uri(&host_addr(), URI).expect("libvirt's test driver answers");
    let lineage = "bench-lineage";

    // The bare loop: the calls apply makes, with nothing around them.
    let requests: Vec<_> = (0..GUESTS).map(|i| guest_request(&guest_spec(i), |_| None)).collect();
    let start = Instant::now();
    let mut ids = Vec::with_capacity(GUESTS);
    for (i, req) in requests.iter().enumerate() {
        let owner = Owner { lineage: lineage.into(), address: format!("nested_guest.bench-{i}") };
        ids.push(h.create_guest(req, &owner).expect("create_guest").id);
    }
    let bare = start.elapsed();
    for id in &ids {
        h.delete_guest(id).expect("delete_guest");
    }

    // The engine: the same requests through the plan, the operation graph, the walk and the state;
    // once persisting nothing, once serializing the state after every change.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let serial = engine_run(&runtime, &hosts, &*h, lineage, 1, Arc::new(NoSink), false);
    let nothing = engine_run(&runtime, &hosts, &*h, lineage, 10, Arc::new(NoSink), false);
    let sink = Arc::new(FileSink::new(&State { lineage: lineage.into(), ..State::new() }));
    let engine = engine_run(&runtime, &hosts, &*h, lineage, 10, sink.clone(), true);
    // Refresh reads every guest back by id: what each `plan` costs before it diffs anything.
    let start = Instant::now();
    let refreshed = refresh_hosts(&BTreeMap::new(), &engine.1, &hosts);
    let refresh = start.elapsed();
    assert!(refreshed.warnings.is_empty(), "{:?}", refreshed.warnings);
    assert_eq!(refreshed.state.resources.len(), GUESTS + 1);
    for r in engine.1.resources.values().filter(|r| r.host.is_some()) {
        h.delete_guest(r.id.as_deref().unwrap()).expect("delete_guest");
    }
    let (serial, nothing, engine) = (serial.0, nothing.0, engine.0);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let over = |d: Duration| (ms(d) - ms(bare)) / ms(bare) * 100.0;
    println!("bare provider calls, {GUESTS} guests:          {:>8.1} ms", ms(bare));
    println!(
        "apply, parallelism 1, no persisting:     {:>8.1} ms  overhead {:>6.1}%",
        ms(serial),
        over(serial)
    );
    println!(
        "apply, parallelism 10, no persisting:    {:>8.1} ms  overhead {:>6.1}%",
        ms(nothing),
        over(nothing)
    );
    println!(
        "apply, parallelism 10, state file saved: {:>8.1} ms  overhead {:>6.1}%  ({} atomic saves)",
        ms(engine),
        over(engine),
        sink.saves.load(Ordering::Relaxed),
    );
    println!("refresh of the {GUESTS} guests:             {:>8.1} ms", ms(refresh));
}

/// Applies the plan of `GUESTS` guests once with `parallelism` and returns how long it took and the
/// state it left. The guests are deleted again unless `keep`.
fn engine_run(
    runtime: &tokio::runtime::Runtime,
    hosts: &Hosts,
    h: &dyn nestform_provider::Hypervisor,
    lineage: &str,
    parallelism: usize,
    sink: Arc<dyn StateSink>,
    keep: bool,
) -> (Duration, State) {
    let mut state = State::new();
    state.lineage = lineage.into();
    let plan = plan(lineage);
    let (_cancel_tx, cancel) = watch::channel(false);
    let (events, mut rx) = mpsc::unbounded_channel();
    let drain = runtime.spawn(async move { while rx.recv().await.is_some() {} });
    let opts = ApplyOptions { parallelism, ..ApplyOptions::new(cancel, events) };
    let start = Instant::now();
    let outcome = runtime.block_on(apply(&plan, state, hosts, opts, sink));
    let elapsed = start.elapsed();
    runtime.block_on(drain).unwrap();
    assert!(outcome.errors.is_empty(), "apply failed: {:?}", &outcome.errors[..outcome.errors.len().min(3)]);
    assert_eq!(outcome.state.resources.len(), GUESTS + 1);
    if !keep {
        for r in outcome.state.resources.values().filter(|r| r.host.is_some()) {
            h.delete_guest(r.id.as_deref().unwrap()).expect("delete_guest");
        }
    }
    (elapsed, outcome.state)
}

struct NoSink;

impl StateSink for NoSink {
    fn persist(&self, _: &[StateChange]) -> Result<(), nestform_provider::BoxError> {
        Ok(())
    }
}
