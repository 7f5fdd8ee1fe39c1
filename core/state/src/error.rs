//! [`StateError`]: everything that can go wrong reading, writing or locking the state. Every variant
//! names the file it is about and its message says what to do next.

use std::path::PathBuf;

use crate::lock::LockInfo;

/// An error about the state file, its backup or its lock.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("could not read state file `{}`: {source}; check that it is readable", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error(
        "could not write state file `{}`: {source}; check free space and the permissions of its directory, \
         the previous state is unchanged",
        path.display()
    )]
    Write { path: PathBuf, source: std::io::Error },

    #[error(
        "state file `{}` is not valid JSON: {source}; restore it from `{}.backup` if it was damaged",
        path.display(),
        path.display()
    )]
    Parse { path: PathBuf, source: serde_json::Error },

    #[error(
        "state file `{}` is not a valid nestform state: {reason}; restore it from `{}.backup` \
         or correct it by hand",
        path.display(),
        path.display()
    )]
    Invalid { path: PathBuf, reason: String },

    #[error(
        "state file `{}` was written by a newer nestform (format {found}); upgrade nestform",
        path.display()
    )]
    NewerFormat { path: PathBuf, found: u64 },

    #[error(
        "state file `{}` has format {found}, which this nestform cannot read \
         (it reads formats 1 to {current})",
        path.display()
    )]
    UnsupportedFormat { path: PathBuf, found: u64, current: u64 },

    #[error(
        "state `{}` is locked by `{}` (pid {}, {}, since {}) through `{}`; wait for it to \
         finish. The lock is held by that running process, not by the file: the kernel releases \
         it when the process ends, even when it was killed, so do not remove the file",
        path.display(),
        holder.operation,
        holder.pid,
        holder.who,
        holder.created,
        lock_path.display()
    )]
    /// `holder` is boxed to keep every `Result<_, StateError>` small.
    Locked { path: PathBuf, lock_path: PathBuf, holder: Box<LockInfo> },

    #[error(
        "`{}` holds the state of an apply that could not save it to `{}`; move it over the state \
         file (`mv {} {}`) so that nestform knows what that apply made, or remove it if the state \
         was put right another way",
        errored.display(),
        path.display(),
        errored.display(),
        path.display()
    )]
    /// A command that would change the state is refused while an errored state waits.
    Errored { path: PathBuf, errored: PathBuf },

    #[error(
        "could not lock state `{}` through `{}`: {source}",
        path.display(),
        lock_path.display()
    )]
    Lock { path: PathBuf, lock_path: PathBuf, source: std::io::Error },
}
