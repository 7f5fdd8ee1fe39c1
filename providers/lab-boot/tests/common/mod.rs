//! Set-up the real-guest tests share: the workspace, the agent binary built now, and a guest kernel.

use std::path::{Path, PathBuf};
use std::process::Command;

use nestform_lab_boot::LabKernel;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The agent binary the guest runs, built now so it is the current one. `NESTFORM_AGENT_BIN` overrides.
pub fn agent_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NESTFORM_AGENT_BIN") {
        return PathBuf::from(bin);
    }
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "nestform-agent", "--bin", "nestform-agent"])
        .current_dir(&root)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building nestform-agent failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug/nestform-agent");
    assert!(bin.is_file(), "no agent at `{}`", bin.display());
    bin
}

/// The kernel: what is there, else what `tests/guest-kernel.sh` fetches.
pub fn kernel() -> LabKernel {
    LabKernel::find(None, None).unwrap_or_else(|first| {
        eprintln!("{first}; running tests/guest-kernel.sh");
        let status =
            Command::new("bash").arg(workspace_root().join("tests/guest-kernel.sh")).status().unwrap();
        assert!(status.success(), "tests/guest-kernel.sh failed");
        LabKernel::find(None, None).expect("a kernel after tests/guest-kernel.sh")
    })
}
