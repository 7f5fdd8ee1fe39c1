//! [`IncrementalStore`]: saving the state after every finished resource of a large apply without
//! serializing all of it each time.
//!
//! An apply of 1,000 guests saves the state up to 1,000 times; serializing every resource on every
//! save makes that quadratic. This store keeps each resource's serialized entry and, on each save,
//! serializes again only the resources the caller says changed, then writes the whole file atomically
//! through [`StateStore`] as usual. The bytes are exactly those of [`StateFileV1::to_bytes`] (a test
//! holds it to that), so readers see one format whichever way a file was written.

use std::collections::{BTreeMap, BTreeSet};

use nestform_types::ResourceAddr;

use crate::file::{ResourceEntry, StateFileV1};
use crate::{State, StateError, StateStore};

/// A [`StateStore`] with a cache of serialized resource entries.
pub struct IncrementalStore {
    store: StateStore,
    serial: u64,
    entries: BTreeMap<ResourceAddr, Vec<u8>>,
}

impl IncrementalStore {
    /// Saves of a state whose last written serial is `serial` go through `store`.
    pub fn new(store: StateStore, serial: u64) -> Self {
        IncrementalStore { store, serial, entries: BTreeMap::new() }
    }

    /// The serial of the last file written (or the one given to [`IncrementalStore::new`]).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Writes `state` with the next serial. `changed` names every resource added, updated or removed
    /// since the previous save through this store; `None` means anything may have changed. On error
    /// the file on disk and the serial are unchanged.
    pub fn save(
        &mut self,
        state: &State,
        changed: Option<&BTreeSet<ResourceAddr>>,
    ) -> Result<u64, StateError> {
        match changed {
            Some(changed) => changed.iter().for_each(|a| {
                self.entries.remove(a);
            }),
            None => self.entries.clear(),
        }
        if self.entries.len() > state.resources.len() {
            self.entries.retain(|a, _| state.resources.contains_key(a));
        }
        for (addr, r) in &state.resources {
            if !self.entries.contains_key(addr) {
                self.entries.insert(addr.clone(), entry_bytes(&ResourceEntry::from_resource(addr, r)));
            }
        }
        let serial = self.serial + 1;
        self.store.write(&self.assemble(state, serial))?;
        self.serial = serial;
        Ok(serial)
    }

    /// The file: the header and outputs serialized as usual, with the cached entries spliced in where
    /// an empty `resources` list would stand.
    fn assemble(&self, state: &State, serial: u64) -> Vec<u8> {
        let header = StateFileV1::from_state(&State {
            lineage: state.lineage.clone(),
            serial,
            resources: BTreeMap::new(),
            outputs: state.outputs.clone(),
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
    use super::*;
    use crate::file::tests::sample_state;
    use crate::ResourceState;

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
        let mut inc = IncrementalStore::new(store.clone(), state.serial);

        // First save: everything serialized.
        let serial = inc.save(&state, None).unwrap();
        assert_eq!(std::fs::read(store.path()).unwrap(), full_bytes(&state, serial));

        // Add, change and remove resources, reporting each change.
        let mut changed = BTreeSet::new();
        let template = state.resources.values().next().unwrap().clone();
        for i in [3u64, 10, 2] {
            let addr: ResourceAddr = format!("nested_guest.extra[{i}]").parse().unwrap();
            state.resources.insert(addr.clone(), ResourceState { level: i as u32, ..template.clone() });
            changed.insert(addr);
        }
        let serial = inc.save(&state, Some(&changed)).unwrap();
        assert_eq!(std::fs::read(store.path()).unwrap(), full_bytes(&state, serial));

        let first = state.resources.keys().next().unwrap().clone();
        state.resources.get_mut(&first).unwrap().tainted = true;
        let removed: ResourceAddr = "nested_guest.extra[10]".parse().unwrap();
        state.resources.remove(&removed);
        let serial = inc.save(&state, Some(&BTreeSet::from([first, removed]))).unwrap();
        assert_eq!(std::fs::read(store.path()).unwrap(), full_bytes(&state, serial));
        assert_eq!(store.load().unwrap().unwrap().resources, state.resources);

        // Down to nothing.
        let all: BTreeSet<_> = state.resources.keys().cloned().collect();
        state.resources.clear();
        let serial = inc.save(&state, Some(&all)).unwrap();
        assert_eq!(std::fs::read(store.path()).unwrap(), full_bytes(&state, serial));
    }

    #[test]
    fn serials_follow_the_store_and_the_backup_keeps_the_previous() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("nestform.state.json"));
        let state = sample_state();
        let mut inc = IncrementalStore::new(store.clone(), 7);
        assert_eq!(inc.save(&state, None).unwrap(), 8);
        assert_eq!(inc.save(&state, Some(&BTreeSet::new())).unwrap(), 9);
        assert_eq!(inc.serial(), 9);
        assert_eq!(store.load().unwrap().unwrap().serial, 9);
        assert_eq!(store.load_backup().unwrap().unwrap().serial, 8);
    }
}
