//! [`StateStore`]: where the state file lives, and how it is loaded and saved.
//!
//! A save never leaves a half-written state behind: the new bytes go to a temporary file in the same
//! directory, which is flushed to disk and then renamed over the state file, and the directory is
//! flushed so the rename itself survives a crash. Before the rename the current file is linked (or
//! copied) to `<path>.backup`, so the backup always holds the previous serial. Each save writes one
//! small file and renames twice, cheap enough to run after every finished resource.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::file::{self, StateFileV1};
use crate::{State, StateError};

/// The state file at one path, with its backup `<path>.backup` and lock `<path>.lock` beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    /// The store for the state file at `path` (usually `nestform.state.json`); nothing is read yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateStore { path: path.into() }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the previous state is kept: `<path>.backup`.
    pub fn backup_path(&self) -> PathBuf {
        with_suffix(&self.path, ".backup")
    }

    /// The lock file: `<path>.lock`.
    pub fn lock_path(&self) -> PathBuf {
        with_suffix(&self.path, ".lock")
    }

    /// Where a state that could not be saved is written instead, as Terraform writes
    /// `errored.tfstate`: `<path>.errored`. Copy it over the state file once saving works again.
    pub fn errored_path(&self) -> PathBuf {
        with_suffix(&self.path, ".errored")
    }

    /// Writes `state` (with the next serial) to [`StateStore::errored_path`], for when saving the state
    /// file failed; the state file and its backup are left as they are.
    pub fn save_errored(&self, state: &State) -> Result<PathBuf, StateError> {
        let path = self.errored_path();
        let mut next = state.clone();
        next.serial += 1;
        StateStore::new(path.clone()).write_file(&StateFileV1::from_state(&next).to_bytes(), false)?;
        Ok(path)
    }

    /// The saved state, or `None` when there is no state file yet.
    pub fn load(&self) -> Result<Option<State>, StateError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path: self.path.clone(), source }),
        };
        file::parse(&bytes, &self.path).map(Some)
    }

    /// The state saved in the backup file, or `None` when there is none.
    pub fn load_backup(&self) -> Result<Option<State>, StateError> {
        StateStore::new(self.backup_path()).load()
    }

    /// Increments `state.serial` and writes the state atomically, keeping the previous file as
    /// `<path>.backup`. On error the file on disk and `state.serial` are unchanged.
    pub fn save(&self, state: &mut State) -> Result<(), StateError> {
        state.serial += 1;
        let result = self.write(&StateFileV1::from_state(state).to_bytes());
        if result.is_err() {
            state.serial -= 1;
        }
        result
    }

    pub(crate) fn write(&self, bytes: &[u8]) -> Result<(), StateError> {
        self.write_file(bytes, true)
    }

    /// Writes `bytes` atomically, first keeping the current file as the backup when `backup` is set.
    fn write_file(&self, bytes: &[u8], backup: bool) -> Result<(), StateError> {
        let write_error = |source| StateError::Write { path: self.path.clone(), source };
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let file_name = self.path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        // Same directory, so the final rename cannot cross file systems; a hidden name, so a left-over
        // temporary file from a crash is not mistaken for a state file. Dropped unrenamed, it is removed.
        let mut temp = tempfile::Builder::new()
            .prefix(&format!(".{file_name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(write_error)?;
        temp.write_all(bytes).map_err(write_error)?;
        temp.as_file().sync_all().map_err(write_error)?;

        if backup && self.path.exists() {
            self.keep_backup(dir).map_err(write_error)?;
        }
        temp.persist(&self.path).map_err(|e| write_error(e.error))?;
        sync_dir(dir).map_err(write_error)
    }

    /// Makes `<path>.backup` the current file, replacing the old backup in one rename so there is
    /// always a complete backup. A hard link costs nothing; file systems without them get a copy.
    fn keep_backup(&self, dir: &Path) -> std::io::Result<()> {
        let staged = tempfile::Builder::new()
            .prefix(".nestform-backup.")
            .suffix(".tmp")
            .make_in(dir, |p| std::fs::hard_link(&self.path, p))
            .map(|linked| linked.into_temp_path())
            .or_else(|_| {
                let staged = tempfile::Builder::new().prefix(".nestform-backup.").tempfile_in(dir)?;
                std::fs::copy(&self.path, staged.path())?;
                staged.as_file().sync_all()?;
                Ok::<_, std::io::Error>(staged.into_temp_path())
            })?;
        staged.persist(self.backup_path()).map_err(|e| e.error)
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    // Windows has no directory handles to flush; its rename is flushed with the file.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::tests::sample_state;

    fn store(dir: &tempfile::TempDir) -> StateStore {
        StateStore::new(dir.path().join("nestform.state.json"))
    }

    fn dir_entries(dir: &tempfile::TempDir) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_errored_save_leaves_the_state_file_and_its_backup_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let mut state = sample_state();
        store.save(&mut state).unwrap();
        let on_disk = std::fs::read(store.path()).unwrap();
        let mut newer = state.clone();
        newer.resources.clear();
        let path = store.save_errored(&newer).unwrap();
        assert_eq!(path, dir.path().join("nestform.state.json.errored"));
        assert_eq!(std::fs::read(store.path()).unwrap(), on_disk);
        let errored = StateStore::new(&path).load().unwrap().unwrap();
        assert_eq!(errored.serial, state.serial + 1);
        assert!(errored.resources.is_empty());
        assert_eq!(dir_entries(&dir), ["nestform.state.json", "nestform.state.json.errored"]);
    }

    #[test]
    fn load_without_a_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(store(&dir).load().unwrap(), None);
        assert_eq!(store(&dir).load_backup().unwrap(), None);
    }

    #[test]
    fn save_then_load_round_trips_and_increments_serial() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let mut state = sample_state();
        let before = state.serial;
        store.save(&mut state).unwrap();
        assert_eq!(state.serial, before + 1);
        assert_eq!(store.load().unwrap(), Some(state.clone()));
        store.save(&mut state).unwrap();
        assert_eq!(store.load().unwrap().unwrap().serial, before + 2);
        // Only the state and its backup are left: no temporary files.
        assert_eq!(dir_entries(&dir), ["nestform.state.json", "nestform.state.json.backup"]);
    }

    #[test]
    fn the_backup_holds_the_previous_serial() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let mut state = State::new();
        store.save(&mut state).unwrap();
        assert!(!store.backup_path().exists(), "the first save has nothing to back up");
        let first = store.load().unwrap().unwrap();
        state
            .outputs
            .insert("x".into(), crate::OutputState { value: serde_json::json!(1), sensitive: false });
        store.save(&mut state).unwrap();
        assert_eq!(store.load_backup().unwrap(), Some(first));
        store.save(&mut state).unwrap();
        assert_eq!(store.load_backup().unwrap().unwrap().serial, 2);
        assert_eq!(store.load().unwrap().unwrap().serial, 3);
    }

    #[test]
    fn equal_states_are_saved_as_equal_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = StateStore::new(dir.path().join("a.json"));
        let b = StateStore::new(dir.path().join("b.json"));
        a.save(&mut sample_state()).unwrap();
        b.save(&mut sample_state()).unwrap();
        assert_eq!(std::fs::read(a.path()).unwrap(), std::fs::read(b.path()).unwrap());
    }

    #[test]
    fn an_interrupted_save_leaves_the_state_intact() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let mut state = sample_state();
        store.save(&mut state).unwrap();
        let saved = std::fs::read(store.path()).unwrap();
        // A crash after writing part of the temporary file and before the rename leaves this behind.
        let leftover = dir.path().join(".nestform.state.json.a1b2c3.tmp");
        std::fs::write(&leftover, &saved[..saved.len() / 2]).unwrap();
        assert_eq!(store.load().unwrap(), Some(state.clone()));
        // The next save neither reads nor trips over it.
        store.save(&mut state).unwrap();
        assert_eq!(store.load().unwrap(), Some(state));
    }

    #[test]
    fn a_failed_save_keeps_the_serial_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("missing-dir").join("nestform.state.json"));
        let mut state = sample_state();
        let serial = state.serial;
        let err = store.save(&mut state).unwrap_err();
        assert_eq!(state.serial, serial);
        assert!(matches!(err, StateError::Write { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("missing-dir/nestform.state.json`"), "{message}");
        assert!(message.contains("check free space and the permissions of its directory"), "{message}");
    }

    #[test]
    fn a_relative_path_in_the_current_directory_works() {
        let store = StateStore::new("nestform.state.json");
        assert_eq!(store.backup_path(), PathBuf::from("nestform.state.json.backup"));
        assert_eq!(store.lock_path(), PathBuf::from("nestform.state.json.lock"));
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        std::fs::write(store.path(), b"{ truncated").unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, StateError::Parse { .. }), "{err}");
    }
}
