//! This machine's KVM: what `/proc` and `/sys` say about it ([`LocalKvm`]), and changing the vendor
//! module's options (`kvm_module_options`).
//!
//! Everything goes through [`KvmModules`], whose root directory and `modprobe` program are
//! configurable, so the tests run on a fake `/proc`/`/sys`/`/etc` tree in a temp dir with a fake
//! `modprobe` script and never touch the real machine. Only a local URI gets here: the local files say
//! nothing about a remote host.
//!
//! Why the vendor module and not `/dev/kvm`: `/dev/kvm` also exists under PVM (module `kvm_pvm`),
//! which cannot run a standard guest kernel (see `facts`); the hardware KVM of a machine with VT-x or
//! AMD-V is `kvm_intel` or `kvm_amd`, and their parameters (`nested`, `ept`, `npt`, ...) are what
//! `kvm_module_options` sets.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

// One spelling of booleans (`Y` is `1`) wherever options are compared.
use nestform_types::kvm::changes as differences;

/// The hardware KVM modules, Intel's first.
pub(crate) const VENDOR_MODULES: [&str; 2] = ["kvm_intel", "kvm_amd"];
/// The PVM module, whose `/dev/kvm` runs only PVM-aware guest kernels.
pub(crate) const PVM_MODULE: &str = "kvm_pvm";

/// What this machine's `/proc` and `/sys` say about KVM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LocalKvm {
    /// `vendor_id` of the first CPU in `/proc/cpuinfo` (`AuthenticAMD`, `GenuineIntel`).
    pub cpu_vendor: Option<String>,
    /// `svm` or `vmx` when `/proc/cpuinfo` lists that flag.
    pub virt_extension: Option<String>,
    /// Whether `/dev/kvm` exists.
    pub dev_kvm: bool,
    /// The loaded hardware module (`kvm_intel`, `kvm_amd`).
    pub module: Option<String>,
    /// Every file in that module's `parameters` directory, value trimmed.
    pub parameters: BTreeMap<String, String>,
    /// Whether `kvm_pvm` is loaded.
    pub pvm: bool,
}

/// What [`KvmModules::apply`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Every option already had its value; nothing was written or reloaded.
    Unchanged,
    /// The options file was written and the module reloaded with the new values.
    Reloaded { module: String, file: PathBuf },
}

/// Why the module options could not be applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KvmError {
    #[error(
        "no `kvm_intel` or `kvm_amd` module on this host (its CPU has no usable VMX/SVM, or KVM is PVM); \
         `kvm_module_options` cannot be applied here"
    )]
    NoVendorModule,
    #[error("`{module}` has no parameter `{name}` (it has: {known})")]
    UnknownParameter { module: String, name: String, known: String },
    #[error("`{name}` = `{value}` cannot go into a modprobe options line (names are letters, digits and `_`; values have no spaces)")]
    Malformed { name: String, value: String },
    #[error("cannot reload `{module}` to change {changes} while guests run on this host: {guests}; stop them first")]
    GuestsRunning { module: String, changes: String, guests: String },
    #[error("cannot list the running guests: {0}")]
    ListGuests(String),
    #[error("cannot write `{}`: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("`{command}` failed: {message}{after}")]
    Modprobe { command: String, message: String, after: &'static str },
    #[error("`{module}` was reloaded, but {mismatches}")]
    NotTaken { module: String, mismatches: String },
}

/// This machine's KVM modules, seen from `root` (`/` outside tests).
#[derive(Clone, Debug)]
pub(crate) struct KvmModules {
    root: PathBuf,
    modprobe: PathBuf,
}

impl KvmModules {
    /// The real machine: `/` and the `modprobe` on `PATH`.
    pub fn system() -> Self {
        Self::at("/", "modprobe")
    }

    /// A machine whose `/proc`, `/sys`, `/dev` and `/etc` are below `root`, reloading modules with
    /// the program `modprobe`.
    pub fn at(root: impl Into<PathBuf>, modprobe: impl Into<PathBuf>) -> Self {
        KvmModules { root: root.into(), modprobe: modprobe.into() }
    }

    fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    fn module_dir(&self, module: &str) -> PathBuf {
        self.path("/sys/module").join(module)
    }

    /// The loaded hardware KVM module, if any.
    pub fn vendor_module(&self) -> Option<&'static str> {
        VENDOR_MODULES.into_iter().find(|m| self.module_dir(m).is_dir())
    }

    /// Every parameter of `module` with its trimmed value; empty when the module is not loaded.
    /// A parameter file that cannot be read (some are root-only) is left out.
    pub fn parameters(&self, module: &str) -> BTreeMap<String, String> {
        let Ok(entries) = std::fs::read_dir(self.module_dir(module).join("parameters")) else {
            return BTreeMap::new();
        };
        entries
            .filter_map(|e| {
                let e = e.ok()?;
                let value = std::fs::read_to_string(e.path()).ok()?;
                Some((e.file_name().to_string_lossy().into_owned(), value.trim().to_string()))
            })
            .collect()
    }

    /// Reads what `/proc/cpuinfo`, `/dev/kvm` and `/sys/module` say.
    pub fn probe(&self) -> LocalKvm {
        let cpuinfo = std::fs::read_to_string(self.path("/proc/cpuinfo")).unwrap_or_default();
        let module = self.vendor_module();
        LocalKvm {
            cpu_vendor: cpuinfo_field(&cpuinfo, "vendor_id").map(str::to_string),
            virt_extension: cpuinfo_field(&cpuinfo, "flags").and_then(|flags| {
                let flags: Vec<_> = flags.split_whitespace().collect();
                ["vmx", "svm"].into_iter().find(|x| flags.contains(x)).map(str::to_string)
            }),
            dev_kvm: self.path("/dev/kvm").exists(),
            parameters: module.map(|m| self.parameters(m)).unwrap_or_default(),
            module: module.map(str::to_string),
            pvm: self.module_dir(PVM_MODULE).is_dir(),
        }
    }

    /// Makes the vendor module run with `options`: nothing when every option already has its value;
    /// otherwise, when `running_guests` names none, writes `/etc/modprobe.d/<module>.conf`, reloads
    /// the module and checks that the values took. `running_guests` is asked only when a reload is
    /// needed.
    pub fn apply(
        &self,
        options: &BTreeMap<String, String>,
        running_guests: impl FnOnce() -> Result<Vec<String>, String>,
    ) -> Result<Applied, KvmError> {
        let module = self.vendor_module().ok_or(KvmError::NoVendorModule)?;
        if let Some((name, value)) = nestform_types::kvm::first_malformed(options) {
            return Err(KvmError::Malformed { name: name.clone(), value: value.clone() });
        }
        let current = self.parameters(module);
        // A parameter the module does not have would be ignored by the kernel at load time, after
        // a reload for nothing; say so before touching anything.
        if let Some((name, known)) = nestform_types::kvm::first_unknown(options, &current) {
            return Err(KvmError::UnknownParameter { module: module.into(), name, known });
        }
        let changes = differences(options, &current);
        if changes.is_empty() {
            return Ok(Applied::Unchanged);
        }
        let guests = running_guests().map_err(KvmError::ListGuests)?;
        if !guests.is_empty() {
            return Err(KvmError::GuestsRunning {
                module: module.into(),
                changes: changes.join(", "),
                guests: guests.iter().map(|g| format!("`{g}`")).collect::<Vec<_>>().join(", "),
            });
        }
        let file = self.path("/etc/modprobe.d").join(format!("{module}.conf"));
        write_atomically(&file, &options_file(module, options))
            .map_err(|source| KvmError::Write { path: file.clone(), source })?;
        self.modprobe(&["-r", module], "")?;
        self.modprobe(
            &[module],
            "; the module is not loaded now: fix the options and run `modprobe` for it by hand",
        )?;
        let mismatches = differences(options, &self.parameters(module));
        if !mismatches.is_empty() {
            return Err(KvmError::NotTaken { module: module.into(), mismatches: mismatches.join(", ") });
        }
        Ok(Applied::Reloaded { module: module.into(), file })
    }

    fn modprobe(&self, args: &[&str], after: &'static str) -> Result<(), KvmError> {
        let command = format!("{} {}", self.modprobe.display(), args.join(" "));
        let output = Command::new(&self.modprobe).args(args).output().map_err(|e| KvmError::Modprobe {
            command: command.clone(),
            message: e.to_string(),
            after,
        })?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let message = if stderr.is_empty() { output.status.to_string() } else { stderr };
        Err(KvmError::Modprobe { command, message, after })
    }
}

/// The value of `key` on the first line of `/proc/cpuinfo` that has it.
fn cpuinfo_field<'a>(cpuinfo: &'a str, key: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// The modprobe configuration nestform writes: a header and one `options` line per option.
fn options_file(module: &str, options: &BTreeMap<String, String>) -> String {
    let mut text = format!(
        "# Managed by nestform (`kvm_module_options`); changes here are overwritten.\n\
         # Options for the `{module}` module, read when it loads.\n"
    );
    for (name, value) in options {
        text.push_str(&format!("options {module} {name}={value}\n"));
    }
    text
}

/// Writes `text` to `path` through a temporary file in the same directory and a rename, so modprobe
/// never reads half a file.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    // modprobe.d files are world-readable; the temp file starts private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake machine root: `/proc/cpuinfo` with `flags`, optionally `/dev/kvm`, and modules with
    /// their parameters.
    pub(crate) fn fake_root(
        flags: &str,
        dev_kvm: bool,
        modules: &[(&str, &[(&str, &str)])],
    ) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("proc")).unwrap();
        let vendor = if flags.contains("vmx") { "GenuineIntel" } else { "AuthenticAMD" };
        let cpu = format!("processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: fpu {flags} sse2\n\n");
        std::fs::write(root.join("proc/cpuinfo"), cpu.repeat(2)).unwrap();
        if dev_kvm {
            std::fs::create_dir_all(root.join("dev")).unwrap();
            std::fs::write(root.join("dev/kvm"), "").unwrap();
        }
        for (module, params) in modules {
            let dir = root.join("sys/module").join(module).join("parameters");
            std::fs::create_dir_all(&dir).unwrap();
            for (k, v) in *params {
                std::fs::write(dir.join(k), format!("{v}\n")).unwrap();
            }
        }
        dir
    }

    /// A fake `modprobe`: logs its arguments; `-r M` removes `/sys/module/M`; `M` loads it with the
    /// defaults in `defaults` overridden by the `options` lines of `/etc/modprobe.d/M.conf`. With
    /// `ignore_options` it loads the defaults only (a module that did not take the options).
    fn fake_modprobe(root: &Path, defaults: &[(&str, &str)], ignore_options: bool) -> PathBuf {
        let script = root.join("modprobe");
        let mut defaults_sh = String::new();
        for (k, v) in defaults {
            defaults_sh.push_str(&format!("echo {v} > \"$p/{k}\"\n"));
        }
        let read_conf = if ignore_options {
            ""
        } else {
            "[ -f \"$R/etc/modprobe.d/$1.conf\" ] && grep '^options ' \"$R/etc/modprobe.d/$1.conf\" | \
             while read -r _ _ kv; do echo \"${kv#*=}\" > \"$p/${kv%%=*}\"; done\n"
        };
        let text = format!(
            "#!/bin/sh\nR='{root}'\necho \"$*\" >> \"$R/modprobe.log\"\n\
             if [ \"$1\" = -r ]; then rm -r \"$R/sys/module/$2\"; exit; fi\n\
             p=\"$R/sys/module/$1/parameters\"\nmkdir -p \"$p\"\n{defaults_sh}{read_conf}",
            root = root.display()
        );
        std::fs::write(&script, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        script
    }

    fn log(root: &Path) -> String {
        std::fs::read_to_string(root.join("modprobe.log")).unwrap_or_default()
    }

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const AMD: &[(&str, &str)] = &[("nested", "1"), ("npt", "Y"), ("avic", "N")];

    #[test]
    fn probe_reads_cpuinfo_and_the_vendor_module() {
        let dir = fake_root("svm lm", true, &[("kvm", &[("halt_poll_ns", "200000")]), ("kvm_amd", AMD)]);
        let kvm = KvmModules::at(dir.path(), "/nonexistent/modprobe").probe();
        assert_eq!(kvm.cpu_vendor.as_deref(), Some("AuthenticAMD"));
        assert_eq!(kvm.virt_extension.as_deref(), Some("svm"));
        assert!(kvm.dev_kvm);
        assert_eq!(kvm.module.as_deref(), Some("kvm_amd"));
        assert_eq!(kvm.parameters, opts(AMD));
        assert!(!kvm.pvm);
    }

    #[test]
    fn probe_sees_pvm_without_a_vendor_module() {
        let dir = fake_root("hypervisor lm", true, &[("kvm", &[]), ("kvm_pvm", &[("force", "N")])]);
        let kvm = KvmModules::at(dir.path(), "/nonexistent/modprobe").probe();
        assert_eq!(kvm.virt_extension, None);
        assert_eq!(kvm.module, None);
        assert!(kvm.parameters.is_empty());
        assert!(kvm.pvm && kvm.dev_kvm);
    }

    #[test]
    fn no_vendor_module_is_a_clear_error() {
        let dir = fake_root("hypervisor", true, &[("kvm_pvm", &[])]);
        let script = fake_modprobe(dir.path(), &[], false);
        let err = KvmModules::at(dir.path(), &script)
            .apply(&opts(&[("nested", "1")]), || panic!("no guests to ask about"))
            .unwrap_err();
        assert!(matches!(err, KvmError::NoVendorModule));
        assert!(err.to_string().starts_with("no `kvm_intel` or `kvm_amd` module on this host"), "{err}");
        assert_eq!(log(dir.path()), "");
        assert!(!dir.path().join("etc").exists());
    }

    #[test]
    fn values_already_in_place_change_nothing() {
        let dir = fake_root("svm", true, &[("kvm_amd", AMD)]);
        let script = fake_modprobe(dir.path(), AMD, false);
        let kvm = KvmModules::at(dir.path(), &script);
        // `npt = true` and `avic = 0` are what `Y` and `N` mean.
        let applied = kvm
            .apply(&opts(&[("nested", "1"), ("npt", "true"), ("avic", "0")]), || Ok(vec!["busy".into()]))
            .unwrap();
        assert_eq!(applied, Applied::Unchanged);
        assert_eq!(log(dir.path()), "");
        assert!(!dir.path().join("etc").exists());
    }

    #[test]
    fn running_guests_are_named_and_nothing_is_touched() {
        let dir = fake_root("svm", true, &[("kvm_amd", AMD)]);
        let script = fake_modprobe(dir.path(), AMD, false);
        let err = KvmModules::at(dir.path(), &script)
            .apply(&opts(&[("nested", "0")]), || Ok(vec!["web".into(), "db".into()]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot reload `kvm_amd` to change `nested` `1` -> `0` while guests run on this host: `web`, `db`; \
             stop them first"
        );
        assert_eq!(log(dir.path()), "");
        assert!(!dir.path().join("etc").exists());
    }

    #[test]
    fn changed_options_are_written_and_the_module_reloaded() {
        let dir = fake_root("vmx", true, &[("kvm_intel", &[("nested", "N"), ("ept", "Y")])]);
        let script = fake_modprobe(dir.path(), &[("nested", "N"), ("ept", "Y")], false);
        let kvm = KvmModules::at(dir.path(), &script);
        let applied = kvm.apply(&opts(&[("nested", "Y"), ("ept", "1")]), || Ok(vec![])).unwrap();
        let file = dir.path().join("etc/modprobe.d/kvm_intel.conf");
        assert_eq!(applied, Applied::Reloaded { module: "kvm_intel".into(), file: file.clone() });
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with("# Managed by nestform"), "{text}");
        assert!(text.ends_with("options kvm_intel ept=1\noptions kvm_intel nested=Y\n"), "{text}");
        assert_eq!(log(dir.path()), "-r kvm_intel\nkvm_intel\n");
        assert_eq!(kvm.parameters("kvm_intel")["nested"], "Y");
        // Nothing else is left in the directory (the temporary file was renamed).
        assert_eq!(std::fs::read_dir(file.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn options_that_do_not_take_fail_after_the_reload() {
        let dir = fake_root("svm", true, &[("kvm_amd", AMD)]);
        let script = fake_modprobe(dir.path(), AMD, true);
        let err =
            KvmModules::at(dir.path(), &script).apply(&opts(&[("nested", "0")]), || Ok(vec![])).unwrap_err();
        assert_eq!(err.to_string(), "`kvm_amd` was reloaded, but `nested` `1` -> `0`");
        assert_eq!(log(dir.path()), "-r kvm_amd\nkvm_amd\n");
    }

    #[test]
    fn a_failing_modprobe_is_reported_with_its_message() {
        let dir = fake_root("svm", true, &[("kvm_amd", AMD)]);
        let script = dir.path().join("modprobe");
        std::fs::write(&script, "#!/bin/sh\necho 'modprobe: FATAL: Module kvm_amd is in use.' >&2\nexit 1\n")
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let err =
            KvmModules::at(dir.path(), &script).apply(&opts(&[("nested", "0")]), || Ok(vec![])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("-r kvm_amd` failed: modprobe: FATAL: Module kvm_amd is in use."), "{text}");
    }

    #[test]
    fn unknown_and_malformed_options_are_refused_before_anything_happens() {
        let dir = fake_root("svm", true, &[("kvm_amd", AMD)]);
        let script = fake_modprobe(dir.path(), AMD, false);
        let kvm = KvmModules::at(dir.path(), &script);
        let err = kvm.apply(&opts(&[("nestd", "1")]), || Ok(vec![])).unwrap_err();
        assert_eq!(err.to_string(), "`kvm_amd` has no parameter `nestd` (it has: `avic`, `nested`, `npt`)");
        let err = kvm.apply(&opts(&[("nested", "1\noptions kvm x=1")]), || Ok(vec![])).unwrap_err();
        assert!(matches!(err, KvmError::Malformed { .. }), "{err}");
        assert_eq!(log(dir.path()), "");
    }

    #[test]
    fn booleans_compare_in_one_spelling() {
        let current = opts(&[("nested", "Y"), ("halt_poll_ns", "0")]);
        assert!(differences(&opts(&[("nested", "1"), ("halt_poll_ns", "0")]), &current).is_empty());
        assert_eq!(differences(&opts(&[("nested", "false")]), &current), vec!["`nested` `Y` -> `false`"]);
        assert_eq!(differences(&opts(&[("x", "1")]), &current), vec!["`x` `(unset)` -> `1`"]);
    }
}
