//! The kernel command line of a lab guest and the complete [`BootRequest`] the provider boots it with.

use std::path::{Path, PathBuf};

use nestform_provider::BootRequest;
use nestform_types::LabInstall;

use crate::{build_initramfs, Initramfs, InitramfsOptions, LabError, LabKernel};

/// The environment variable that names the agent binary lab guests run, overriding the default.
pub const AGENT_ENV: &str = "NESTFORM_AGENT_BIN";

/// What differs between lab guests booted from the same kernel and initramfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabGuest<'a> {
    /// The guest's hostname (`nestform.hostname=`).
    pub hostname: &'a str,
    /// Its nesting level: 1 for a guest of a level-0 host (`nestform.level=`, reported by the agent).
    pub level: u32,
    /// The agent binary, an absolute path in the parent's file system (`nestform.agent=`): the guest
    /// sees the parent's root, so it runs the very binary the parent has.
    pub agent: &'a Path,
}

/// The kernel command line: the serial console (libvirt's console log keeps it) and what `/init`
/// reads.
///
/// The console gets the kernel's notices and worse (its version, warnings, oopses, panics) and
/// everything `/init` says; its informational messages stay in the guest's `dmesg`. Every byte on
/// the emulated serial port is a trap into the hypervisor below, through each level above it:
/// printed in full (hundreds of lines), they kept the tower's guest3 in its kernel for over ten
/// minutes, its console growing by about one line between two readings 9 s apart.
pub fn kernel_cmdline(guest: &LabGuest<'_>) -> String {
    format!(
        "console=ttyS0 loglevel=6 nestform.level={} nestform.hostname={} nestform.agent={}",
        guest.level,
        guest.hostname,
        guest.agent.display()
    )
}

/// The boot of a lab guest: `kernel`'s image, the `initramfs`, [`kernel_cmdline`], and the parent's
/// whole root shared read-only (the provider's 9p `nestform-root`).
pub fn boot_request(
    kernel: &LabKernel,
    initramfs: &Initramfs,
    guest: &LabGuest<'_>,
) -> Result<BootRequest, LabError> {
    // The command line is split on spaces, and the values are taken up to the next one.
    let bad = |what: &'static str, value: String| LabError::CmdlineValue { what, value };
    let agent = guest.agent.to_str().ok_or_else(|| bad("agent path", guest.agent.display().to_string()))?;
    if !guest.agent.is_absolute() || agent.chars().any(char::is_whitespace) {
        return Err(bad("agent path", agent.to_string()));
    }
    let valid_host = !guest.hostname.is_empty()
        && guest.hostname.len() <= 64
        && guest.hostname.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid_host {
        return Err(bad("hostname", guest.hostname.to_string()));
    }
    let path = |p: &Path| p.to_str().map(str::to_string).ok_or_else(|| bad("path", p.display().to_string()));
    Ok(BootRequest::Kernel {
        kernel: path(&kernel.image)?,
        initrd: path(&initramfs.path)?,
        cmdline: kernel_cmdline(guest),
        root_share: Some("/".to_string()),
    })
}

/// Everything a lab guest boots with, for a `lab { kernel, modules }` install block: finds the kernel,
/// builds (or reuses) the initramfs in `initramfs_dir`, and returns the boot request with the
/// initramfs it uses.
pub fn lab_boot(
    install: &LabInstall,
    guest: &LabGuest<'_>,
    initramfs_dir: &Path,
) -> Result<(BootRequest, Initramfs), LabError> {
    let kernel = LabKernel::for_install(install)?;
    let initramfs = build_initramfs(&kernel, initramfs_dir, &InitramfsOptions::default())?;
    let boot = boot_request(&kernel, &initramfs, guest)?;
    Ok((boot, initramfs))
}

/// The agent binary lab guests run: `$NESTFORM_AGENT_BIN`, else `nestform-agent` next to `exe` (the
/// running nestform binary: cargo and the packages put both in one directory). Made absolute, since
/// the guest resolves it from its root.
pub fn agent_path(exe: &Path) -> Result<PathBuf, LabError> {
    agent_path_from(std::env::var_os(AGENT_ENV), exe)
}

fn agent_path_from(env: Option<std::ffi::OsString>, exe: &Path) -> Result<PathBuf, LabError> {
    let candidate = match env.filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => exe.with_file_name("nestform-agent"),
    };
    let absolute = std::path::absolute(&candidate).unwrap_or(candidate);
    if absolute.is_file() {
        Ok(absolute)
    } else {
        Err(LabError::AgentMissing { path: absolute })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn kernel() -> LabKernel {
        LabKernel {
            image: "/k/boot/vmlinuz-6.1.0-35-amd64".into(),
            modules: "/k/lib/modules/6.1.0-35-amd64".into(),
            version: "6.1.0-35-amd64".into(),
        }
    }

    fn initramfs() -> Initramfs {
        Initramfs {
            path: PathBuf::from("/c/initramfs-6.1.0-35-amd64-0123456789abcdef.cpio.gz"),
            hash: "0123456789abcdef".into(),
            modules: vec![],
            builtin: vec![],
            absent: vec![],
            reused: false,
        }
    }

    #[test]
    fn the_whole_boot_request() {
        let agent = Path::new("/work/target/debug/nestform-agent");
        let guest = LabGuest { hostname: "l1", level: 1, agent };
        assert_eq!(
            boot_request(&kernel(), &initramfs(), &guest).unwrap(),
            BootRequest::Kernel {
                kernel: "/k/boot/vmlinuz-6.1.0-35-amd64".into(),
                initrd: "/c/initramfs-6.1.0-35-amd64-0123456789abcdef.cpio.gz".into(),
                cmdline: "console=ttyS0 loglevel=6 nestform.level=1 nestform.hostname=l1 \
                          nestform.agent=/work/target/debug/nestform-agent"
                    .into(),
                root_share: Some("/".into()),
            }
        );
    }

    #[test]
    fn the_agent_is_found_next_to_the_running_binary() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("nestform");
        let err = agent_path_from(None, &exe).unwrap_err();
        assert!(
            matches!(&err, LabError::AgentMissing { path } if *path == dir.path().join("nestform-agent")),
            "{err}"
        );
        std::fs::write(dir.path().join("nestform-agent"), b"").unwrap();
        assert_eq!(agent_path_from(None, &exe).unwrap(), dir.path().join("nestform-agent"));
        let named = dir.path().join("other-agent");
        std::fs::write(&named, b"").unwrap();
        assert_eq!(agent_path_from(Some(named.clone().into()), &exe).unwrap(), named);
    }

    #[test]
    fn refuses_values_the_command_line_would_split() {
        let spaced = Path::new("/my dir/nestform-agent");
        let err =
            boot_request(&kernel(), &initramfs(), &LabGuest { hostname: "l1", level: 1, agent: spaced });
        assert_eq!(
            err.unwrap_err().to_string(),
            "the agent path `/my dir/nestform-agent` cannot go on a kernel command line"
        );
        let relative = Path::new("target/nestform-agent");
        assert!(boot_request(
            &kernel(),
            &initramfs(),
            &LabGuest { hostname: "l1", level: 1, agent: relative }
        )
        .is_err());
        let agent = Path::new("/a");
        assert!(
            boot_request(&kernel(), &initramfs(), &LabGuest { hostname: "a b", level: 1, agent }).is_err()
        );
    }
}
