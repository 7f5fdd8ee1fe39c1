//! Boot assets of nestform's instant lab guests (`install = lab { ... }`).
//!
//! A lab guest boots a kernel directly with a small generated initramfs; it mounts its parent's root
//! read-only over 9p, puts a tmpfs overlay on top and runs nestform's agent there. So it starts in
//! seconds, needs no disk image, and has its parent's whole userland (QEMU, libvirt, nestform's own
//! binaries), which is what lets it be a hypervisor for the next level down.
//!
//! ```text
//!   LabKernel::find ──▶ build_initramfs ──▶ boot_request ──▶ BootRequest::Kernel ──▶ provider
//!   (kernel + modules)  (busybox, modules,   (cmdline:        (kernel, initrd,
//!                        /init; cached)       level, agent)    cmdline, root_share "/")
//! ```
//!
//! - `kernel`: finding the kernel image and modules, cheaply and without side effects.
//! - `modules`: `modules.dep` and the load order of the modules a guest needs.
//! - `init`: the generated `/init` script and DHCP hook.
//! - `initramfs`: the cpio archive and its content-hash cache.
//! - `boot`: the kernel command line and the [`BootRequest`](nestform_provider::BootRequest).
//! - [`LabBoot`]: all of it as the engine's [`BootAssets`](nestform_provider::BootAssets): a missing kernel is found at plan time,
//!   and apply gets each lab guest's boot.
//!
//! Making a running lab guest a host is `nestform-provider-promoted`'s business, not this crate's.
//! Pure Rust and no libvirt: the libvirt provider boots what this crate builds. The module load
//! order, the init script and the cache are nestform's own; cpio, gzip, xz, zstd and SHA-256 come from
//! well-kept crates. `tests/guest-kernel.sh` fetches a kernel when the host has none to lend.

mod boot;
mod init;
mod initramfs;
mod kernel;
mod modules;

use std::path::{Path, PathBuf};

pub use boot::{agent_path, boot_request, kernel_cmdline, lab_boot, LabGuest, AGENT_ENV};
pub use init::{init_script, AGENT_PORT, AGENT_PORTS, RELAY_ALLOW, ROOT_TAG};
pub use initramfs::{build_initramfs, Initramfs, InitramfsOptions, DEFAULT_BUSYBOX, DEFAULT_INITRAMFS_DIR};
pub use kernel::{default_cache_dir, KernelSearch, LabKernel, DEFAULT_KERNEL_DIR};
pub use modules::{module_name, LoadOrder, ModuleFile, ModuleIndex, OPTIONAL_MODULES, REQUIRED_MODULES};

/// The hint every "no kernel" error ends with.
const KERNEL_HINT: &str = "run `tests/guest-kernel.sh` or set `lab { kernel = ..., modules = ... }`";

/// What finding a kernel or building an initramfs failed with.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("no kernel image at `{}`: {KERNEL_HINT}", path.display())]
    KernelMissing { path: PathBuf },
    #[error("no kernel modules at `{}` (no `modules.dep`): {KERNEL_HINT}", path.display())]
    ModulesMissing { path: PathBuf },
    #[error("no kernel for lab guests (looked for {}): {KERNEL_HINT}", list(searched))]
    NoKernel { searched: Vec<PathBuf> },
    #[error("cannot tell the kernel version of `{}` (expected `vmlinuz-VERSION` or `.../lib/modules/VERSION`)", path.display())]
    KernelVersion { path: PathBuf },
    #[error("`{}` line {line}: {message}", path.display())]
    ModulesDep { path: PathBuf, line: usize, message: String },
    #[error("the kernel has no module `{name}` and does not build it in (modules at `{}`)", dir.display())]
    ModuleMissing { name: String, dir: PathBuf },
    #[error("kernel modules need each other in a cycle: `{chain}`")]
    ModuleCycle { chain: String },
    #[error("cannot unpack the module `{}`: {message}", path.display())]
    Decompress { path: PathBuf, message: String },
    #[error("cannot use busybox `{}`: {message}", path.display())]
    Busybox { path: PathBuf, message: String },
    #[error("no agent binary at `{}`: build it with `cargo build -p nestform-agent` or set `NESTFORM_AGENT_BIN`", path.display())]
    AgentMissing { path: PathBuf },
    #[error("the {what} `{value}` cannot go on a kernel command line")]
    CmdlineValue { what: &'static str, value: String },
    #[error("`{}`: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

impl LabError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        LabError::Io { path: path.to_path_buf(), source }
    }
}

fn list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(", ")
}

impl LabKernel {
    /// The kernel of a `lab { kernel, modules }` install block.
    pub fn for_install(install: &nestform_types::LabInstall) -> Result<LabKernel, LabError> {
        LabKernel::find(install.kernel.as_deref().map(Path::new), install.modules.as_deref().map(Path::new))
    }
}

/// Lab boot assets as the engine asks for them: guests with `install = lab { ... }` boot the kernel
/// it names (or the host's, or the one `tests/guest-kernel.sh` fetched) with an initramfs built for
/// them, cached by content under [`DEFAULT_INITRAMFS_DIR`], and run the `nestform-agent` found next
/// to this process's binary (or at `NESTFORM_AGENT_BIN`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LabBoot;

impl nestform_provider::BootAssets for LabBoot {
    fn check(&self, install: &nestform_types::LabInstall) -> Result<(), nestform_provider::BoxError> {
        Ok(LabKernel::for_install(install).map(drop)?)
    }

    fn boot(
        &self,
        spec: &nestform_types::NestedGuestSpec,
        level: u32,
    ) -> Result<Option<nestform_provider::BootRequest>, nestform_provider::BoxError> {
        let Some(nestform_types::InstallSpec::Lab(install)) = &spec.install else { return Ok(None) };
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the nestform binary: {e}"))?;
        let agent = agent_path(&exe)?;
        let guest = LabGuest { hostname: &spec.name, level, agent: &agent };
        let (boot, _) = lab_boot(install, &guest, Path::new(DEFAULT_INITRAMFS_DIR))?;
        Ok(Some(boot))
    }
}
