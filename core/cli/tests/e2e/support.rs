//! Helpers for the end-to-end tests: a scratch working directory, running the real `nestform` binary,
//! and a connection that keeps libvirtd's test driver alive between CLI runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The URI of libvirt's test driver behind the daemon: its state lives while one client is connected.
pub const TEST_URI: &str = "test+unix:///default";

/// A scratch directory holding configuration files, removed when dropped.
pub struct Workspace {
    dir: tempfile::TempDir,
}

/// What one run of `nestform` did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn success(&self) -> &Self {
        assert_eq!(self.code, 0, "nestform failed\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Workspace {
    pub fn new() -> Self {
        Workspace { dir: tempfile::tempdir().expect("a temporary directory") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) -> &Self {
        std::fs::write(self.dir.path().join(name), text).expect("writing a configuration file");
        self
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Runs `nestform -chdir=<this dir> ARGS...` with no input on stdin and no color.
    pub fn run(&self, args: &[&str]) -> Run {
        run_in(self.dir.path(), args)
    }
}

impl Workspace {
    /// Runs `nestform` like [`Workspace::run`] with its standard output closed before it writes
    /// anything, as a reader that stopped early would (`nestform show -json | head -0`). Stdout is
    /// empty in the result.
    pub fn run_with_stdout_closed(&self, args: &[&str]) -> Run {
        let mut child = Command::new(nestform_bin())
            .arg(format!("-chdir={}", self.dir.path().display()))
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running the nestform binary");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("waiting for nestform");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

pub fn nestform_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nestform"))
}

pub fn run_in(dir: &Path, args: &[&str]) -> Run {
    let out: Output = Command::new(nestform_bin())
        .arg(format!("-chdir={}", dir.display()))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running the nestform binary");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Holds a connection to libvirtd's test driver for the length of a test, so objects created by one
/// CLI run are still there for the next.
pub struct TestDriver {
    conn: virt::connect::Connect,
}

impl TestDriver {
    pub fn connect() -> Self {
        virt::error::clear_error_callback();
        let conn = virt::connect::Connect::open(Some(TEST_URI)).unwrap_or_else(|e| {
            panic!("cannot reach libvirtd at `{TEST_URI}` ({e}); run `tests/setup-host.sh` as root first")
        });
        TestDriver { conn }
    }

    /// Names of the domains that exist now.
    pub fn domains(&self) -> Vec<String> {
        self.conn.list_all_domains(0).unwrap_or_default().iter().filter_map(|d| d.name().ok()).collect()
    }

    pub fn networks(&self) -> Vec<String> {
        self.conn.list_all_networks(0).unwrap_or_default().iter().filter_map(|n| n.name().ok()).collect()
    }

    pub fn domain_xml(&self, name: &str) -> String {
        let d = self.conn.lookup_domain_by_name(name).expect("the domain exists");
        d.xml_desc(0).expect("its XML")
    }

    pub fn domain_active(&self, name: &str) -> bool {
        self.conn.lookup_domain_by_name(name).and_then(|d| d.is_active()).unwrap_or(false)
    }

    /// Stops a domain behind nestform's back, to make drift.
    pub fn stop_domain(&self, name: &str) {
        let d = self.conn.lookup_domain_by_name(name).expect("the domain exists");
        d.destroy().expect("destroying the domain");
    }

    pub fn volumes(&self) -> Vec<String> {
        match self.conn.lookup_storage_pool_by_name("nestform") {
            Ok(p) => p.list_volumes().unwrap_or_default(),
            Err(_) => vec![],
        }
    }
}

/// Destroys whatever a test applied when it ends, also when it fails half-way.
pub struct DestroyOnDrop<'a>(pub &'a Workspace);

impl Drop for DestroyOnDrop<'_> {
    fn drop(&mut self) {
        if self.0.path().join("nestform.state.json").exists() {
            let r = self.0.run(&["destroy", "-auto-approve"]);
            if r.code != 0 && !std::thread::panicking() {
                panic!("clean-up destroy failed:\n{}\n{}", r.stdout, r.stderr);
            }
        }
    }
}
