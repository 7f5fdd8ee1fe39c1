//! [`LabKernel`]: which kernel image and modules a lab guest boots, found without side effects.
//!
//! The order of the search: what the configuration names (`lab { kernel = ..., modules = ... }`), else the
//! running kernel (`/boot/vmlinuz-VERSION`, `/lib/modules/VERSION`), else the cache that
//! `tests/guest-kernel.sh` fills (`DIR/boot/vmlinuz-VERSION`, `DIR/lib/modules/VERSION`). Only `stat`s and
//! small reads: the planner calls this to report a missing kernel as a plan error.

use std::path::{Path, PathBuf};

use crate::LabError;

/// Where `tests/guest-kernel.sh` unpacks a kernel unless `NESTFORM_KERNEL_DIR` says otherwise.
pub const DEFAULT_KERNEL_DIR: &str = "/var/cache/nestform/kernel";

/// The file whose presence shows that a modules directory is usable (made by `depmod`).
const MODULES_DEP: &str = "modules.dep";

/// A kernel image and its modules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabKernel {
    /// The bootable image (`vmlinuz-VERSION`).
    pub image: PathBuf,
    /// The modules of that kernel: `.../lib/modules/VERSION`, with `modules.dep`.
    pub modules: PathBuf,
    /// The kernel release, such as `6.1.0-35-amd64`.
    pub version: String,
}

/// Where [`LabKernel::find`] looks: the running kernel's release and the kernel cache.
#[derive(Clone, Debug)]
pub struct KernelSearch {
    /// The running kernel's release; `None` when it cannot be read.
    pub running: Option<String>,
    /// The root of `/boot` and `/lib/modules` for the running kernel (`/` outside tests).
    pub system_root: PathBuf,
    /// The cache of `tests/guest-kernel.sh`.
    pub cache_dir: PathBuf,
}

impl KernelSearch {
    /// This machine: the running kernel and the cache dir from `NESTFORM_KERNEL_DIR` or
    /// [`DEFAULT_KERNEL_DIR`].
    pub fn system() -> Self {
        let running =
            std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string());
        KernelSearch { running, system_root: PathBuf::from("/"), cache_dir: default_cache_dir() }
    }
}

/// `NESTFORM_KERNEL_DIR`, else [`DEFAULT_KERNEL_DIR`]; the same rule as `tests/guest-kernel.sh`.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("NESTFORM_KERNEL_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KERNEL_DIR))
}

impl LabKernel {
    /// Finds the kernel for lab guests on this machine. `kernel` and `modules` are what the configuration
    /// names, if anything; a path it names that does not exist is an error, never silently replaced.
    pub fn find(kernel: Option<&Path>, modules: Option<&Path>) -> Result<LabKernel, LabError> {
        Self::find_in(kernel, modules, &KernelSearch::system())
    }

    /// [`LabKernel::find`] with an explicit search (for tests and for other machines' layouts).
    pub fn find_in(
        kernel: Option<&Path>,
        modules: Option<&Path>,
        search: &KernelSearch,
    ) -> Result<LabKernel, LabError> {
        match (kernel, modules) {
            (Some(image), Some(modules)) => {
                let version = version_of_modules(modules)?;
                check(image, modules, version)
            }
            (Some(image), None) => {
                let version = image
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix("vmlinuz-"))
                    .ok_or_else(|| LabError::KernelVersion { path: image.to_path_buf() })?;
                let candidates = [
                    search.system_root.join("lib/modules").join(version),
                    search.cache_dir.join("lib/modules").join(version),
                ];
                let modules =
                    candidates.iter().find(|m| m.join(MODULES_DEP).is_file()).unwrap_or(&candidates[0]);
                check(image, modules, version.to_string())
            }
            (None, Some(modules)) => {
                let version = version_of_modules(modules)?;
                let candidates = [
                    search.system_root.join("boot").join(format!("vmlinuz-{version}")),
                    search.cache_dir.join("boot").join(format!("vmlinuz-{version}")),
                ];
                let image = candidates.iter().find(|i| i.is_file()).unwrap_or(&candidates[0]);
                check(image, modules, version)
            }
            (None, None) => Self::find_default(search),
        }
    }

    fn find_default(search: &KernelSearch) -> Result<LabKernel, LabError> {
        let mut searched = Vec::new();
        if let Some(running) = &search.running {
            let image = search.system_root.join("boot").join(format!("vmlinuz-{running}"));
            let modules = search.system_root.join("lib/modules").join(running);
            if image.is_file() && modules.join(MODULES_DEP).is_file() {
                return Ok(LabKernel { image, modules, version: running.clone() });
            }
            searched.push(image);
        }
        // The newest cached kernel that is complete; a half-unpacked one (no modules.dep) is skipped.
        let boot = search.cache_dir.join("boot");
        let mut cached: Vec<String> = std::fs::read_dir(&boot)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("vmlinuz-").map(str::to_string))
            .filter(|v| search.cache_dir.join("lib/modules").join(v).join(MODULES_DEP).is_file())
            .collect();
        cached.sort_by(|a, b| compare_versions(a, b));
        if let Some(version) = cached.pop() {
            return Ok(LabKernel {
                image: boot.join(format!("vmlinuz-{version}")),
                modules: search.cache_dir.join("lib/modules").join(&version),
                version,
            });
        }
        searched.push(boot.join("vmlinuz-*"));
        Err(LabError::NoKernel { searched })
    }
}

/// The release a modules directory belongs to: its last path component.
fn version_of_modules(modules: &Path) -> Result<String, LabError> {
    modules
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| LabError::KernelVersion { path: modules.to_path_buf() })
}

fn check(image: &Path, modules: &Path, version: String) -> Result<LabKernel, LabError> {
    if !image.is_file() {
        return Err(LabError::KernelMissing { path: image.to_path_buf() });
    }
    if !modules.join(MODULES_DEP).is_file() {
        return Err(LabError::ModulesMissing { path: modules.to_path_buf() });
    }
    Ok(LabKernel { image: image.to_path_buf(), modules: modules.to_path_buf(), version })
}

/// Orders kernel releases by their numbers (`6.1.0-9` before `6.1.0-35`), text where they differ otherwise.
fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<Result<u64, &str>> {
        s.split(['.', '-']).map(|p| p.parse::<u64>().map_err(|_| p)).collect()
    }
    parts(a).cmp(&parts(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fake_kernel(root: &Path, version: &str, with_dep: bool) {
        fs::create_dir_all(root.join("boot")).unwrap();
        fs::write(root.join("boot").join(format!("vmlinuz-{version}")), b"kernel").unwrap();
        let modules = root.join("lib/modules").join(version);
        fs::create_dir_all(&modules).unwrap();
        if with_dep {
            fs::write(modules.join(MODULES_DEP), b"").unwrap();
        }
    }

    fn search(system: &Path, cache: &Path, running: &str) -> KernelSearch {
        KernelSearch {
            running: Some(running.into()),
            system_root: system.to_path_buf(),
            cache_dir: cache.to_path_buf(),
        }
    }

    #[test]
    fn prefers_the_running_kernel() {
        let (sys, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fake_kernel(sys.path(), "6.9.0-host", true);
        fake_kernel(cache.path(), "6.1.0-35-amd64", true);
        let k = LabKernel::find_in(None, None, &search(sys.path(), cache.path(), "6.9.0-host")).unwrap();
        assert_eq!(k.version, "6.9.0-host");
        assert_eq!(k.image, sys.path().join("boot/vmlinuz-6.9.0-host"));
        assert_eq!(k.modules, sys.path().join("lib/modules/6.9.0-host"));
    }

    #[test]
    fn falls_back_to_the_newest_complete_cached_kernel() {
        let (sys, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fake_kernel(cache.path(), "6.1.0-9-amd64", true);
        fake_kernel(cache.path(), "6.1.0-35-amd64", true);
        fake_kernel(cache.path(), "6.1.0-99-amd64", false);
        let k = LabKernel::find_in(None, None, &search(sys.path(), cache.path(), "6.18.0-fc")).unwrap();
        assert_eq!(k.version, "6.1.0-35-amd64");
        assert_eq!(k.modules, cache.path().join("lib/modules/6.1.0-35-amd64"));
    }

    #[test]
    fn nothing_found_names_where_it_looked_and_what_to_do() {
        let (sys, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let err = LabKernel::find_in(None, None, &search(sys.path(), cache.path(), "6.18.0-fc")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("vmlinuz-6.18.0-fc"), "{msg}");
        assert!(msg.contains("tests/guest-kernel.sh") && msg.contains("lab { kernel"), "{msg}");
    }

    #[test]
    fn configured_paths_are_checked_not_replaced() {
        let (sys, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fake_kernel(cache.path(), "6.1.0-35-amd64", true);
        let s = search(sys.path(), cache.path(), "6.18.0-fc");
        let image = cache.path().join("boot/vmlinuz-6.1.0-35-amd64");
        // The modules are found next to a configured kernel from its version.
        let k = LabKernel::find_in(Some(&image), None, &s).unwrap();
        assert_eq!(k.modules, cache.path().join("lib/modules/6.1.0-35-amd64"));
        // And the kernel next to configured modules.
        let k = LabKernel::find_in(None, Some(&k.modules), &s).unwrap();
        assert_eq!(k.image, image);
        let missing = sys.path().join("boot/vmlinuz-6.1.0-35-amd64");
        let err = LabKernel::find_in(Some(&missing), Some(&k.modules), &s).unwrap_err();
        assert!(matches!(&err, LabError::KernelMissing { path } if *path == missing), "{err}");
        let err = LabKernel::find_in(Some(&image), Some(&sys.path().join("lib/modules/x")), &s).unwrap_err();
        assert!(matches!(err, LabError::ModulesMissing { .. }), "{err}");
    }

    #[test]
    fn versions_compare_by_number() {
        assert!(compare_versions("6.1.0-9-amd64", "6.1.0-35-amd64").is_lt());
        assert!(compare_versions("6.10.0-1", "6.9.0-1").is_gt());
    }
}
