//! What one `StateStore::save` costs, since the engine saves after every finished resource: a state of
//! 200 resources (each with a dozen attributes) saved 200 times into a temporary directory, each save
//! a full atomic write with two fsyncs and the backup.
//!
//! Plain `std::time::Instant` (no harness): `cargo bench -p nestform-state --bench save` (or
//! `cargo test -p nestform-state --bench save` for an unoptimised run). Prints the time per save and
//! per load, and the file size.

use std::collections::BTreeSet;
use std::time::Instant;

use nestform_state::{ResourceState, State, StateStore};
use nestform_types::{InstanceKey, ResourceAddr, ResourceType};

const RESOURCES: u64 = 200;
const SAVES: u32 = 200;

fn main() {
    let host = ResourceAddr::new(ResourceType::KvmHost, "l0");
    let mut state = State::new();
    for i in 0..RESOURCES {
        let addr = ResourceAddr::new(ResourceType::NestedGuest, "web").with_key(InstanceKey::Int(i));
        let attributes = serde_json::json!({
            "name": format!("web-{i}"), "vcpus": 2, "memory": "1GiB", "cpu_model": "EPYC",
            "features": ["svm"], "kernel": "/var/lib/nestform/vmlinuz", "initrd": "/var/lib/nestform/initrd",
            "disks": [{ "size": "10GiB", "pool": "default" }],
            "interfaces": [{ "network": "nat_network.lan", "mac": format!("52:54:00:00:{:02x}:{:02x}", i / 256, i % 256) }],
            "uuid": uuid::Uuid::new_v4().to_string(), "level": 1, "state": "running",
        });
        state.resources.insert(
            addr,
            ResourceState {
                id: Some(uuid::Uuid::new_v4().to_string()),
                host: Some(host.clone()),
                level: 1,
                attributes,
                dependencies: BTreeSet::from([host.clone()]),
                tainted: false,
            },
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path().join("nestform.state.json"));
    let started = Instant::now();
    for _ in 0..SAVES {
        store.save(&mut state).unwrap();
    }
    let per_save = started.elapsed() / SAVES;

    let started = Instant::now();
    for _ in 0..SAVES {
        assert_eq!(store.load().unwrap().as_ref(), Some(&state));
    }
    let per_load = started.elapsed() / SAVES;

    let size = std::fs::metadata(store.path()).unwrap().len();
    println!("{RESOURCES} resources, {size} bytes: save {per_save:.2?}, load {per_load:.2?}");
}
