//! The state lock: an OS file lock (`flock` through fs4) on `<state>.lock`, held while a command that
//! reads and writes the state runs, so a second command is refused instead of racing it.
//!
//! The OS lock is the truth; the JSON written into the lock file ([`LockInfo`]) only tells the refused
//! command who holds it. Because the kernel drops the lock when its process dies, a lock file left by
//! a crashed process does not block anyone: the next command takes the lock and overwrites it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};

use crate::{StateError, StateStore};

/// Who holds the state lock, as written into the lock file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// A fresh UUID per lock taken.
    pub id: String,
    /// The command holding the lock: `plan`, `apply`, `destroy`.
    pub operation: String,
    /// `user@host`.
    pub who: String,
    pub pid: u32,
    /// When the lock was taken, RFC 3339 in UTC.
    pub created: String,
}

impl LockInfo {
    fn current(operation: &str) -> Self {
        let user = whoami::fallible::username().unwrap_or_else(|_| "unknown".to_string());
        let host = whoami::fallible::hostname().unwrap_or_else(|_| "unknown".to_string());
        LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            operation: operation.to_string(),
            who: format!("{user}@{host}"),
            pid: std::process::id(),
            created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }
    }

    /// Stands in when the holder's lock file cannot be read (it was just created and is still empty).
    fn unknown() -> Self {
        LockInfo {
            id: String::new(),
            operation: "another command".to_string(),
            who: "unknown user".to_string(),
            pid: 0,
            created: "an unknown time".to_string(),
        }
    }
}

/// A held state lock. Dropping it removes the lock file and releases the lock.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    lock_path: PathBuf,
    info: LockInfo,
}

impl StateLock {
    /// What this lock wrote into the lock file.
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// The lock file.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock, and only if it is still ours (someone may
        // have removed it by hand and another command created a new one).
        if same_file(&self.file, &self.lock_path) {
            let _ = std::fs::remove_file(&self.lock_path);
        }
        let _ = FileExt::unlock(&self.file);
    }
}

/// How often to retry when the lock file was replaced between opening and locking it.
const ATTEMPTS: usize = 10;

impl StateStore {
    /// Takes the state lock for `operation` without waiting; fails with [`StateError::Locked`] naming
    /// the holder when another command (in this process or another) holds it.
    pub fn lock(&self, operation: &str) -> Result<StateLock, StateError> {
        let lock_path = self.lock_path();
        let io_error = |source: std::io::Error| StateError::Lock {
            path: self.path().to_path_buf(),
            lock_path: lock_path.clone(),
            // What `open_lock_file` found wrong says what to do itself; a plain I/O error does not.
            source: match source.kind() {
                std::io::ErrorKind::Other => source,
                kind => std::io::Error::new(
                    kind,
                    format!("{source}; check that the state's directory exists and is writable"),
                ),
            },
        };
        for _ in 0..ATTEMPTS {
            let mut file = open_lock_file(&lock_path).map_err(io_error)?;
            if !FileExt::try_lock_exclusive(&file).map_err(io_error)? {
                return Err(StateError::Locked {
                    path: self.path().to_path_buf(),
                    lock_path: lock_path.clone(),
                    holder: Box::new(read_holder(&mut file)),
                });
            }
            // The previous holder removes the file before releasing it; if that happened between our
            // open and our lock we hold a lock on a removed file, which protects nothing. Start over.
            if !same_file(&file, &lock_path) {
                continue;
            }
            // Planning or applying beside the record of an apply whose save failed would not know what
            // that apply made.
            let errored = self.errored_path();
            if errored.exists() {
                // Dropped at once: removes the lock file it may have just created, and unlocks.
                drop(StateLock { file, lock_path, info: LockInfo::unknown() });
                return Err(StateError::Errored { path: self.path().to_path_buf(), errored });
            }
            let info = LockInfo::current(operation);
            let json = serde_json::to_vec_pretty(&info).expect("lock info always serializes");
            file.set_len(0).map_err(io_error)?;
            file.rewind().map_err(io_error)?;
            file.write_all(&json).map_err(io_error)?;
            file.sync_data().map_err(io_error)?;
            return Ok(StateLock { file, lock_path, info });
        }
        Err(io_error(std::io::Error::other(format!(
            "the lock file kept being replaced while taking it ({ATTEMPTS} attempts)"
        ))))
    }
}

/// Opens (or creates) the lock file for reading and writing without following a symbolic link and
/// without truncating it: a link planted at `<state>.lock` must not make nestform (often run as root)
/// write into the file it points at, and the holder's record is only replaced once the lock is ours.
fn open_lock_file(lock_path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking, so that a FIFO planted there cannot hang the open; the flag does not
        // change how a regular file is read or written.
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(lock_path).map_err(|err| {
        #[cfg(unix)]
        if err.raw_os_error() == Some(libc::ELOOP) {
            return std::io::Error::other(
                "it is a symbolic link, which nestform does not follow for its lock file; \
                 remove the link",
            );
        }
        err
    })?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("it is not a regular file; remove it or move it away"));
    }
    Ok(file)
}

/// Reads the holder's [`LockInfo`], waiting briefly for a holder that has locked but not yet written.
fn read_holder(file: &mut File) -> LockInfo {
    for _ in 0..20 {
        let mut text = String::new();
        if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
            if let Ok(info) = serde_json::from_str(&text) {
                return info;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    LockInfo::unknown()
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    // Windows cannot remove a file another handle has open, so the race above cannot happen there.
    path.exists()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;

    fn store(dir: &tempfile::TempDir) -> StateStore {
        StateStore::new(dir.path().join("nestform.state.json"))
    }

    #[test]
    fn lock_file_holds_the_holder_and_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let lock = store.lock("apply").unwrap();
        let written: LockInfo = serde_json::from_slice(&std::fs::read(store.lock_path()).unwrap()).unwrap();
        assert_eq!(&written, lock.info());
        assert_eq!(written.operation, "apply");
        assert_eq!(written.pid, std::process::id());
        assert!(written.who.contains('@'), "{}", written.who);
        assert!(humantime::parse_rfc3339(&written.created).is_ok(), "{}", written.created);
        drop(lock);
        assert!(!store.lock_path().exists());
    }

    #[test]
    fn a_second_lock_in_the_same_process_is_refused_with_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let first = store.lock("apply").unwrap();
        let err = store.lock("plan").unwrap_err();
        let StateError::Locked { holder, .. } = &err else { panic!("{err}") };
        assert_eq!(**holder, *first.info());
        let message = err.to_string();
        let expected = format!(
            "state `{}` is locked by `apply` (pid {}, {}, since {}) through `{}`; wait for it to finish. \
             The lock is held by that running process, not by the file: the kernel releases it when the \
             process ends, even when it was killed, so do not remove the file",
            store.path().display(),
            std::process::id(),
            first.info().who,
            first.info().created,
            store.lock_path().display()
        );
        assert_eq!(message, expected);
        drop(first);
        let again = store.lock("plan").unwrap();
        assert_eq!(again.info().operation, "plan");
    }

    #[test]
    fn a_stale_lock_file_without_a_holder_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        std::fs::write(
            store.lock_path(),
            r#"{"id":"x","operation":"apply","who":"a@b","pid":1,"created":"then"}"#,
        )
        .unwrap();
        let lock = store.lock("destroy").unwrap();
        let written: LockInfo = serde_json::from_slice(&std::fs::read(store.lock_path()).unwrap()).unwrap();
        assert_eq!(written, *lock.info());
    }

    #[test]
    fn an_unwritable_directory_is_a_lock_error_naming_the_file() {
        let store = StateStore::new("/nonexistent-nestform-dir/nestform.state.json");
        let err = store.lock("apply").unwrap_err();
        assert!(matches!(err, StateError::Lock { .. }), "{err}");
        assert!(err.to_string().contains("`/nonexistent-nestform-dir/nestform.state.json.lock`"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_at_the_lock_path_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, store.lock_path()).unwrap();
        let err = store.lock("apply").unwrap_err();
        assert!(matches!(err, StateError::Lock { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("is a symbolic link"), "{message}");
        assert!(message.contains(&format!("`{}`", store.lock_path().display())), "{message}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        // A dangling link is refused too, and creates nothing where it points.
        let dangling = dir.path().join("would-be-created");
        std::fs::remove_file(store.lock_path()).unwrap();
        std::os::unix::fs::symlink(&dangling, store.lock_path()).unwrap();
        assert!(store.lock("apply").is_err());
        assert!(!dangling.exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_at_the_lock_path_is_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let status = Command::new("mkfifo").arg(store.lock_path()).status().unwrap();
        assert!(status.success());
        let err = store.lock("apply").unwrap_err();
        assert!(err.to_string().contains("is not a regular file"), "{err}");
    }

    #[test]
    fn an_errored_state_beside_the_state_refuses_the_lock_until_moved() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        store.save_errored(&crate::State::new()).unwrap();
        let err = store.lock("apply").unwrap_err();
        assert!(matches!(err, StateError::Errored { .. }), "{err}");
        assert!(err.to_string().contains("`mv "), "{err}");
        std::fs::rename(store.errored_path(), store.path()).unwrap();
        assert!(!store.lock_path().exists(), "the refused lock leaves no lock file");
        store.lock("apply").unwrap();
    }

    #[test]
    fn a_missing_directory_says_what_to_check() {
        let store = StateStore::new("/nonexistent-nestform-dir/nestform.state.json");
        let err = store.lock("apply").unwrap_err();
        assert!(err.to_string().contains("check that the state's directory exists and is writable"), "{err}");
    }

    const CHILD_ENV: &str = "NESTFORM_STATE_LOCK_CHILD";
    const CHILD_LOCKED: &str = "nestform-state-lock-child: locked";

    /// Run by [`another_process_holding_the_lock_refuses_us`] in a child process: takes the lock, says
    /// so on stdout, and holds it until its stdin closes.
    #[test]
    #[ignore = "helper run in a child process by another test"]
    fn lock_holder_child() {
        let Ok(path) = std::env::var(CHILD_ENV) else { return };
        let _lock = StateStore::new(path).lock("apply").unwrap();
        // On its own line: the test harness has already printed `test … ... ` without a newline.
        println!("\n{CHILD_LOCKED}");
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    }

    fn spawn_holder(store: &StateStore) -> (std::process::Child, u32) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "lock::tests::lock_holder_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, store.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.any(|line| line.unwrap() == CHILD_LOCKED), "the child process never took the lock");
        // Keep draining, so the child's last lines do not fail on a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        (child, pid)
    }

    #[test]
    fn another_process_holding_the_lock_refuses_us() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let (mut child, pid) = spawn_holder(&store);
        let err = store.lock("plan").unwrap_err();
        let StateError::Locked { holder, .. } = &err else { panic!("{err}") };
        assert_eq!(holder.pid, pid);
        assert_eq!(holder.operation, "apply");
        assert!(err.to_string().contains(&format!("locked by `apply` (pid {pid}, ")), "{err}");
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        store.lock("plan").unwrap();
    }

    #[test]
    fn a_killed_holder_leaves_no_lock_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let (mut child, pid) = spawn_holder(&store);
        child.kill().unwrap();
        child.wait().unwrap();
        // The killed process could not remove its lock file, but the kernel released its lock.
        let stale: LockInfo = serde_json::from_slice(&std::fs::read(store.lock_path()).unwrap()).unwrap();
        assert_eq!(stale.pid, pid);
        let lock = store.lock("apply").unwrap();
        assert_eq!(lock.info().pid, std::process::id());
    }
}
