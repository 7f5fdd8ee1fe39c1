//! [`IncrementalStore`]: saving the state after every finished resource of a large apply without
//! serializing all of it each time.
//!
//! An apply of 1,000 guests saves the state up to 1,000 times; serializing every resource on every
//! save makes that quadratic. This store keeps a mirror of the state as each resource's serialized
//! entry; the caller records each change as it happens (serializing that one resource), and each write
//! only splices the entries together and writes the whole file atomically through [`StateStore`] as
//! usual. No caller's lock on the state is needed while the file is written. The bytes are exactly those of [`StateFileV1::to_bytes`] (a test
//! holds it to that), so readers see one format whichever way a file was written.

use std::collections::BTreeMap;

use nestform_types::ResourceAddr;

use crate::file::{ResourceEntry, StateFileV1};
use crate::{OutputState, ResourceState, State, StateError, StateStore};

/// A [`StateStore`] with a mirror of the state as serialized resource entries.
pub struct IncrementalStore {
    store: StateStore,
    serial: u64,
    lineage: String,
    outputs: BTreeMap<String, OutputState>,
    entries: BTreeMap<ResourceAddr, Vec<u8>>,
}

impl IncrementalStore {
    /// Mirrors `state` (whose last written serial is `state.serial`); saves go through `store`.
    pub fn new(store: StateStore, state: &State) -> Self {
        let mut this = IncrementalStore {
            store,
            serial: state.serial,
            lineage: String::new(),
            outputs: BTreeMap::new(),
            entries: BTreeMap::new(),
        };
        this.reset(state);
        this
    }

    /// The serial of the last file written (or of the state given to [`IncrementalStore::new`]).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Records one resource's new value (`None`: removed) in the mirror; [`IncrementalStore::write`]
    /// saves it.
    pub fn record(&mut self, addr: &ResourceAddr, resource: Option<&ResourceState>) {
        match resource {
            Some(r) => {
                self.entries.insert(addr.clone(), entry_bytes(&ResourceEntry::from_resource(addr, r)));
            }
            None => {
                self.entries.remove(addr);
            }
        }
    }

    /// Writes the mirror with the next serial. On error the file on disk and the serial are unchanged,
    /// and the mirror keeps what was recorded, so the next write includes it.
    pub fn write(&mut self) -> Result<u64, StateError> {
        let serial = self.serial + 1;
        self.store.write(&self.assemble(serial))?;
        self.serial = serial;
        Ok(serial)
    }

    /// Makes the mirror `state` (outputs included) and writes it.
    pub fn save(&mut self, state: &State) -> Result<u64, StateError> {
        self.reset(state);
        self.write()
    }

    fn reset(&mut self, state: &State) {
        self.lineage = state.lineage.clone();
        self.outputs = state.outputs.clone();
        self.entries.clear();
        for (addr, r) in &state.resources {
            self.record(addr, Some(r));
        }
    }

    /// The file: the header and outputs serialized as usual, with the cached entries spliced in where
    /// an empty `resources` list would stand.
    fn assemble(&self, serial: u64) -> Vec<u8> {
        let header = StateFileV1::from_state(&State {
            lineage: self.lineage.clone(),
            serial,
            resources: BTreeMap::new(),
            outputs: self.outputs.clone(),
        })
        .to_bytes();
        const EMPTY: &[u8] = b"\"resources\": []";
        let at = header.windows(EMPTY.len()).position(|w| w == EMPTY).expect("the header lists resources");
        if self.entries.is_empty() {
            return header;
        }
        let size: usize = self.entries.values().map(|e| e.len() + 2).sum();
        let mut out = Vec::with_capacity(header.len() + size + 8);
        out.extend_from_slice(&header[..at]);
        out.extend_from_slice(b"\"resources\": [\n");
        for (i, entry) in self.entries.values().enumerate() {
            if i > 0 {
                out.extend_from_slice(b",\n");
            }
            out.extend_from_slice(entry);
        }
        out.extend_from_slice(b"\n  ]");
        out.extend_from_slice(&header[at + EMPTY.len()..]);
        out
    }
}

/// One entry as it stands in the pretty-printed file: two levels deep, so every line indented by four
/// spaces. JSON strings cannot hold a raw newline, so splitting on newlines is safe.
fn entry_bytes(entry: &ResourceEntry) -> Vec<u8> {
    let pretty = serde_json::to_vec_pretty(entry).expect("a resource entry always serializes");
    let mut out = Vec::with_capacity(pretty.len() + 64);
    for (i, line) in pretty.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(b"    ");
        out.extend_from_slice(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::file::tests::sample_state;

    fn full_bytes(state: &State, serial: u64) -> Vec<u8> {
        let mut s = state.clone();
        s.serial = serial;
        StateFileV1::from_state(&s).to_bytes()
    }

    #[test]
    fn incremental_saves_write_exactly_the_full_format() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("nestform.state.json"));
        let mut state = sample_state();
        let mut inc = IncrementalStore::new(store.clone(), &state);

        let serial = inc.write().unwrap();
        assert_eq!(std::fs::read(store.path()).unwrap(), full_bytes(&state, serial));

        // Add, change and remove resources, recording each change.
        let template = state.resources.values().next().unwrap().clone();
        for i in [3u64, 10, 2] {
            let addr: ResourceAddr = format!("nested_guest.extra[{i}]").parse().unwrap();
            let r = ResourceState { level: i as u32, ..template.clone() };
            inc.record(&addr, Some(&r));
            state.resources.insert(addr, r);
        }
        let serial = inc.write().unwrap();
        assert_eq!(std::fs::read(store.path()).unwrap(), full_bytes(&state, serial));

        let first = state.resources.keys().next().unwrap().clone();
        state.resources.get_mut(&first).unwrap().tainted = true;
        inc.record(&first, state.resources.get(&first));
        let removed: ResourceAddr = "nested_guest.extra[10]".parse().unwrap();
        state.resources.remove(&removed);
        inc.record(&removed, None);
        let serial = inc.write().unwrap();
        assert_eq!(std::fs::read(store.path()).unwrap(), full_bytes(&state, serial));
        assert_eq!(store.load().unwrap().unwrap().resources, state.resources);

        // Down to nothing, with outputs through a full save.
        let all: BTreeSet<_> = state.resources.keys().cloned().collect();
        for a in &all {
            inc.record(a, None);
        }
        state.resources.clear();
        let serial = inc.write().unwrap();
        assert_eq!(std::fs::read(store.path()).unwrap(), full_bytes(&state, serial));
        state.outputs.insert(
            "x".into(),
            OutputState { value: serde_json::json!({"b": 1, "a": [2]}), sensitive: false },
        );
        let serial = inc.save(&state).unwrap();
        assert_eq!(std::fs::read(store.path()).unwrap(), full_bytes(&state, serial));
    }

    #[test]
    fn serials_follow_the_store_and_the_backup_keeps_the_previous() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("nestform.state.json"));
        let mut state = sample_state();
        state.serial = 7;
        let mut inc = IncrementalStore::new(store.clone(), &state);
        assert_eq!(inc.write().unwrap(), 8);
        assert_eq!(inc.save(&state).unwrap(), 9);
        assert_eq!(inc.serial(), 9);
        assert_eq!(store.load().unwrap().unwrap().serial, 9);
        assert_eq!(store.load_backup().unwrap().unwrap().serial, 8);
    }
}
