//! `kvm_module_options` inside a lab guest: the guest's KVM vendor module read and reloaded with
//! options, through its agent only.
//!
//! A lab guest loads its modules from the initramfs with busybox `insmod` (see `init`), and after the
//! switch to the 9p root `modprobe` finds nothing for the guest's kernel in the parent's
//! `/lib/modules`. The module file is still there, though: PID 1 is busybox init running in the
//! initramfs, and `/proc/1/root` is that root, so `/proc/1/root/lib/modules/kvm_amd.ko` is the very
//! file the guest loaded at boot, already unpacked. Reloading from it needs no copy, no change to the
//! init, and cannot pick a module of another kernel (which a path into the kernel cache could, once
//! the cache holds a newer kernel). `modprobe` is only the last try, for a guest booted otherwise.
//!
//! The rules are level 0's, written once in `nestform_types::kvm`: malformed options and
//! parameters the module does not have are refused before anything is touched, nothing happens when
//! every option already holds, a reload is refused while anything uses KVM (a running guest holds the
//! module), and the values are read back after it. After a reload `/dev/kvm` is new, root's and 0600,
//! so it is given to group `kvm` again (see `promote`).
//!
//! Options travel as arguments of `sh -c`, never inside the script text.

use std::collections::BTreeMap;
use std::time::Duration;

use nestform_agent::{AgentClient, ClientError, ExecRequest, ExecResult};
use nestform_types::kvm::changes as differences;

/// How long a reload may take in the guest (a deep guest is slow).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// The guest's KVM vendor module as its `/sys` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestKvm {
    /// `kvm_amd` or `kvm_intel`; `None` when neither is loaded.
    pub module: Option<String>,
    /// The module's parameters with their trimmed values.
    pub parameters: BTreeMap<String, String>,
    /// How many holders the module has (each running KVM guest is one).
    pub users: u32,
}

/// What [`apply`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Every option already had its value (or there were none): nothing was reloaded.
    Unchanged,
    /// The module was reloaded with the options.
    Reloaded { module: String },
}

/// Why the options could not be read or applied in the guest.
#[derive(Debug, thiserror::Error)]
pub enum KvmOptionsError {
    #[error("talking to the agent failed while {step}: {source}")]
    Agent { step: &'static str, source: ClientError },
    #[error("no `kvm_amd` or `kvm_intel` module is loaded in the guest (its CPU shows no SVM/VMX); `kvm_module_options` cannot be applied there")]
    NoVendorModule,
    #[error("`{module}` has no parameter `{name}` (it has: {known})")]
    UnknownParameter { module: String, name: String, known: String },
    #[error("`{name}` = `{value}` is not a module option (names are letters, digits and `_`; values have no spaces)")]
    Malformed { name: String, value: String },
    #[error("cannot reload `{module}` in the guest to change {changes} while guests run on it ({users} holder(s) of the module); stop them first")]
    InUse { module: String, changes: String, users: u32 },
    #[error("reloading `{module}` in the guest failed ({status}): {output}")]
    Reload { module: String, status: String, output: String },
    #[error("`{module}` was reloaded in the guest but did not take {mismatches} (a module turns off what the CPU lacks)")]
    NotTaken { module: String, mismatches: String },
}

/// Reads the guest's vendor module, its parameters and its holders.
pub fn read(client: &AgentClient) -> Result<GuestKvm, KvmOptionsError> {
    read_at(client, &Target::GUEST)
}

/// Makes the guest's vendor module run with `options` (see the module doc). No options, or options
/// that all hold already, change nothing.
pub fn apply(client: &AgentClient, options: &BTreeMap<String, String>) -> Result<Applied, KvmOptionsError> {
    apply_at(client, options, &Target::GUEST)
}

/// Where the scripts look: a real guest, or (in tests) a fake one below a directory with its own
/// `rmmod` and `insmod`.
struct Target<'a> {
    /// The root of `/sys`, `/proc` and `/dev`: empty in a real guest.
    root: &'a str,
    /// The `PATH` the scripts run with; the agent's own when `None`.
    path: Option<String>,
}

impl Target<'_> {
    const GUEST: Target<'static> = Target { root: "", path: None };
}

fn read_at(client: &AgentClient, target: &Target<'_>) -> Result<GuestKvm, KvmOptionsError> {
    let r =
        sh(client, target, "reading the KVM module", READ_SCRIPT, [target.root], Duration::from_secs(60))?;
    Ok(parse_read(&String::from_utf8_lossy(&r.stdout)))
}

fn apply_at(
    client: &AgentClient,
    options: &BTreeMap<String, String>,
    target: &Target<'_>,
) -> Result<Applied, KvmOptionsError> {
    if options.is_empty() {
        return Ok(Applied::Unchanged);
    }
    check_names(options)?;
    let now = read_at(client, target)?;
    let module = now.module.ok_or(KvmOptionsError::NoVendorModule)?;
    // A parameter the module does not have would be refused by `insmod` after the module was
    // already unloaded; say so before touching anything.
    if let Some((name, known)) = nestform_types::kvm::first_unknown(options, &now.parameters) {
        return Err(KvmOptionsError::UnknownParameter { module, name, known });
    }
    let changes = differences(options, &now.parameters);
    if changes.is_empty() {
        return Ok(Applied::Unchanged);
    }
    if now.users > 0 {
        return Err(KvmOptionsError::InUse { module, changes: changes.join(", "), users: now.users });
    }
    let args = [target.root.to_string(), module.clone()]
        .into_iter()
        .chain(options.iter().map(|(k, v)| format!("{k}={v}")));
    let r = sh(client, target, "reloading the KVM module", RELOAD_SCRIPT, args, RELOAD_TIMEOUT)?;
    if !r.status.success() {
        let mut output = String::from_utf8_lossy(&r.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&r.stderr);
        if !stderr.trim().is_empty() {
            output = format!("{output}\n{}", stderr.trim()).trim().to_string();
        }
        return Err(KvmOptionsError::Reload { module, status: format!("{:?}", r.status), output });
    }
    let mismatches = differences(options, &read_at(client, target)?.parameters);
    if !mismatches.is_empty() {
        return Err(KvmOptionsError::NotTaken { module, mismatches: mismatches.join(", ") });
    }
    Ok(Applied::Reloaded { module })
}

/// Names are the kernel's parameter names; values go to `insmod` as one `NAME=VALUE` word each.
fn check_names(options: &BTreeMap<String, String>) -> Result<(), KvmOptionsError> {
    match nestform_types::kvm::first_malformed(options) {
        Some((name, value)) => Err(KvmOptionsError::Malformed { name: name.clone(), value: value.clone() }),
        None => Ok(()),
    }
}

/// [`READ_SCRIPT`]'s output: `module=M`, `users=N`, then `param NAME=VALUE` lines.
fn parse_read(text: &str) -> GuestKvm {
    let mut kvm = GuestKvm::default();
    for line in text.lines() {
        if let Some(m) = line.strip_prefix("module=").filter(|m| !m.is_empty()) {
            kvm.module = Some(m.to_string());
        } else if let Some(n) = line.strip_prefix("users=") {
            kvm.users = n.trim().parse().unwrap_or(0);
        } else if let Some((k, v)) = line.strip_prefix("param ").and_then(|p| p.split_once('=')) {
            kvm.parameters.insert(k.to_string(), v.trim().to_string());
        }
    }
    kvm
}

/// Runs `script` with `sh -c`, `args` as `$1`... (`$0` is `sh`).
fn sh<S: Into<String>>(
    client: &AgentClient,
    target: &Target<'_>,
    step: &'static str,
    script: &str,
    args: impl IntoIterator<Item = S>,
    timeout: Duration,
) -> Result<ExecResult, KvmOptionsError> {
    let argv = ["sh".to_string(), "-c".into(), script.into(), "sh".into()]
        .into_iter()
        .chain(args.into_iter().map(Into::into));
    let mut request = ExecRequest::new(argv).timeout(timeout);
    if let Some(path) = &target.path {
        request = request.env("PATH", path.clone());
    }
    client.exec(request).map_err(|source| KvmOptionsError::Agent { step, source })
}

/// `$1`: the root of `/sys` (empty in a guest). Prints the vendor module, its holders (`refcnt`) and
/// its parameters; nothing when no vendor module is loaded.
const READ_SCRIPT: &str = r#"
R=$1
module=
for m in kvm_amd kvm_intel; do [ -d "$R/sys/module/$m" ] && module=$m; done
[ -n "$module" ] || exit 0
echo "module=$module"
echo "users=$(cat "$R/sys/module/$module/refcnt" 2>/dev/null || echo 0)"
for p in "$R/sys/module/$module/parameters"/*; do
  [ -f "$p" ] || continue
  v=$(cat "$p" 2>/dev/null) || continue
  echo "param ${p##*/}=$v"
done
exit 0
"#;

/// `$1`: the root (empty in a guest), `$2`: the module, then its options as `NAME=VALUE`. Unloads the
/// module and loads it again from the initramfs (through PID 1's root) with the options; when the new
/// options are refused, loads it without them, so the guest keeps KVM, and fails. Gives the new
/// `/dev/kvm` to group `kvm` with mode 0660, as udev would.
const RELOAD_SCRIPT: &str = r#"
R=$1; module=$2; shift 2
file="$R/proc/1/root/lib/modules/$module.ko"
rmmod "$module" 2>&1 || { echo "\`rmmod $module\` failed"; exit 1; }
if [ -f "$file" ]; then
  load() { insmod "$file" "$@"; }
else
  load() { modprobe "$module" "$@"; }
fi
if ! load "$@" 2>&1; then
  load 2>&1 || echo "\`$module\` did not load again: the guest has no KVM now"
  echo "\`$module\` refused the options \`$*\`"
  exit 2
fi
if [ -c "$R/dev/kvm" ]; then
  chgrp kvm "$R/dev/kvm" 2>/dev/null && chmod 0660 "$R/dev/kvm"
fi
exit 0
"#;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// A guest's `/sys/module` and initramfs below a temporary root, and fake `rmmod`/`insmod` that
    /// act on it: `insmod FILE NAME=VALUE...` writes the defaults, then the options (an option named
    /// `bad` is refused, like the kernel refuses a value it cannot parse, and one named `forced` keeps
    /// its default, like `kvm_amd` turns off what the CPU lacks).
    struct FakeGuest {
        dir: tempfile::TempDir,
    }

    impl FakeGuest {
        fn new(params: &[(&str, &str)], refcnt: u32) -> FakeGuest {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let module = root.join("sys/module/kvm_amd");
            std::fs::create_dir_all(module.join("parameters")).unwrap();
            std::fs::write(module.join("refcnt"), format!("{refcnt}\n")).unwrap();
            for (k, v) in params {
                std::fs::write(module.join("parameters").join(k), format!("{v}\n")).unwrap();
            }
            std::fs::create_dir_all(root.join("proc/1/root/lib/modules")).unwrap();
            std::fs::write(root.join("proc/1/root/lib/modules/kvm_amd.ko"), b"\x7fELF").unwrap();
            let bin = root.join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            let r = root.display();
            let defaults: String = params.iter().map(|(k, v)| format!("echo {v} > \"$p/{k}\"\n")).collect();
            let fakes = [
                ("rmmod", format!("#!/bin/sh\necho \"rmmod $*\" >> '{r}/log'\nrm -r '{r}/sys/module/'\"$1\"\n")),
                (
                    "insmod",
                    format!(
                        "#!/bin/sh\necho \"insmod $*\" >> '{r}/log'\nm=$(basename \"$1\" .ko); shift\n\
                         for kv in \"$@\"; do [ \"${{kv%%=*}}\" = bad ] && {{ echo \"insmod: invalid parameter\" >&2; exit 1; }}; done\n\
                         p='{r}/sys/module/'\"$m\"/parameters; mkdir -p \"$p\"\necho 0 > \"$p/../refcnt\"\n{defaults}\
                         for kv in \"$@\"; do [ \"${{kv%%=*}}\" = forced ] || echo \"${{kv#*=}}\" > \"$p/${{kv%%=*}}\"; done\n"
                    ),
                ),
            ];
            for (name, text) in fakes {
                std::fs::write(bin.join(name), text).unwrap();
                std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            FakeGuest { dir }
        }

        /// This fake guest, its `rmmod` and `insmod` first on `PATH`.
        fn target(&self) -> Target<'_> {
            let path = format!(
                "{}:{}",
                self.dir.path().join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            );
            Target { root: self.dir.path().to_str().unwrap(), path: Some(path) }
        }

        fn root(&self) -> &str {
            self.dir.path().to_str().unwrap()
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        }

        fn apply(
            &self,
            client: &AgentClient,
            options: &BTreeMap<String, String>,
        ) -> Result<Applied, KvmOptionsError> {
            apply_at(client, options, &self.target())
        }

        fn read(&self, client: &AgentClient) -> GuestKvm {
            read_at(client, &self.target()).unwrap()
        }
    }

    #[test]
    fn reads_the_module_its_holders_and_parameters() {
        let guest = FakeGuest::new(&[("nested", "1"), ("npt", "Y")], 2);
        let client = crate::local_agent();
        let kvm = guest.read(&client);
        assert_eq!(kvm.module.as_deref(), Some("kvm_amd"));
        assert_eq!(kvm.users, 2);
        assert_eq!(kvm.parameters, opts(&[("nested", "1"), ("npt", "Y")]));
        // A guest without a vendor module reads as such.
        let empty = tempfile::tempdir().unwrap();
        let target = Target { root: empty.path().to_str().unwrap(), path: None };
        assert_eq!(read_at(&client, &target).unwrap(), GuestKvm::default());
    }

    #[test]
    fn reloads_from_the_initramfs_only_when_an_option_differs() {
        let guest = FakeGuest::new(&[("nested", "1"), ("npt", "Y"), ("avic", "N")], 0);
        let client = crate::local_agent();
        // `nested = 1` and `npt = 1` hold already (`Y` is `1`): nothing happens.
        let same = guest.apply(&client, &opts(&[("nested", "1"), ("npt", "1")])).unwrap();
        assert_eq!(same, Applied::Unchanged);
        assert_eq!(guest.log(), "");
        let done = guest.apply(&client, &opts(&[("nested", "1"), ("npt", "0")])).unwrap();
        assert_eq!(done, Applied::Reloaded { module: "kvm_amd".into() });
        let file = format!("{}/proc/1/root/lib/modules/kvm_amd.ko", guest.root());
        assert_eq!(guest.log(), format!("rmmod kvm_amd\ninsmod {file} nested=1 npt=0\n"));
        assert_eq!(guest.read(&client).parameters["npt"], "0");
    }

    #[test]
    fn refuses_before_touching_anything() {
        let guest = FakeGuest::new(&[("nested", "1"), ("npt", "Y")], 1);
        let client = crate::local_agent();
        let err = guest.apply(&client, &opts(&[("npt", "0")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot reload `kvm_amd` in the guest to change `npt` `Y` -> `0` while guests run on it (1 holder(s) of the module); stop them first"
        );
        let err = guest.apply(&client, &opts(&[("ept", "1")])).unwrap_err();
        assert!(matches!(&err, KvmOptionsError::UnknownParameter { name, .. } if name == "ept"), "{err}");
        assert!(err.to_string().contains("`nested`, `npt`"), "{err}");
        let err = guest.apply(&client, &opts(&[("npt", "0; reboot")])).unwrap_err();
        assert!(matches!(err, KvmOptionsError::Malformed { .. }), "{err}");
        assert_eq!(guest.log(), "", "nothing was reloaded");
        let none = tempfile::tempdir().unwrap();
        let target = Target { root: none.path().to_str().unwrap(), path: None };
        let err = apply_at(&client, &opts(&[("nested", "1")]), &target).unwrap_err();
        assert!(matches!(err, KvmOptionsError::NoVendorModule), "{err}");
    }

    #[test]
    fn options_the_module_refuses_leave_it_loaded_without_them() {
        let guest = FakeGuest::new(&[("nested", "1"), ("bad", "0")], 0);
        let client = crate::local_agent();
        let err = guest.apply(&client, &opts(&[("bad", "1")])).unwrap_err();
        assert!(
            matches!(&err, KvmOptionsError::Reload { output, .. } if output.contains("refused the options `bad=1`")),
            "{err}"
        );
        // Loaded again with its defaults.
        assert_eq!(guest.read(&client).parameters, opts(&[("nested", "1"), ("bad", "0")]));
    }

    #[test]
    fn an_option_the_module_overrides_is_reported() {
        let guest = FakeGuest::new(&[("nested", "1"), ("forced", "0")], 0);
        let client = crate::local_agent();
        let err = guest.apply(&client, &opts(&[("forced", "64")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`kvm_amd` was reloaded in the guest but did not take `forced` `0` -> `64` (a module turns off what the CPU lacks)"
        );
    }

    #[test]
    fn the_scripts_are_valid_shell() {
        for script in [READ_SCRIPT, RELOAD_SCRIPT] {
            let out = std::process::Command::new("sh").args(["-n", "-c", script]).output().expect("sh runs");
            assert!(out.status.success(), "{}\n{script}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
