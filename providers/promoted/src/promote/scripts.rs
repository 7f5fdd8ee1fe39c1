//! The shell snippets the agent runs in the guest for each step of a promotion, and the parsing of
//! what the KVM step reports. Each says why it is there; the order they run in is [`super`]'s.

use super::qemu_conf::CONF_MARKER;
use super::{LIBVIRTD_LOG, LIBVIRT_SOCKET, PROMOTED_MARKER, QEMU_CONF, VIRTLOGD_LOG};

/// Checks, in one script, what [`start_libvirt`](super::start_libvirt) would otherwise set up step
/// by step; exits 1 when something is missing, else prints [`KVM_SCRIPT`]'s report.
pub(super) fn already_promoted_script() -> String {
    format!(
        r#"
test -e {PROMOTED_MARKER} || {{ echo 'not promoted in this boot'; exit 1; }}
for n in virtlogd libvirtd; do
  [ -f "/run/$n.pid" ] && kill -0 "$(cat "/run/$n.pid")" 2>/dev/null || {{ echo "$n is not running"; exit 1; }}
done
test -S {LIBVIRT_SOCKET} || {{ echo 'no libvirt socket'; exit 1; }}
grep -qxF '{CONF_MARKER}' {QEMU_CONF} || {{ echo 'qemu.conf lacks the settings'; exit 1; }}
( {KVM_SCRIPT} )
"#
    )
}

/// What [`KVM_SCRIPT`] printed.
pub(super) struct KvmReport {
    pub(super) module: Option<String>,
    pub(super) nested: Option<String>,
    pub(super) dev_kvm: bool,
}

impl KvmReport {
    pub(super) fn parse(out: &str) -> Self {
        let value = |key: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        KvmReport {
            module: value("module"),
            nested: value("nested"),
            dev_kvm: value("dev_kvm").as_deref() == Some("yes"),
        }
    }
}

/// The file system type of `/` in the guest.
pub(super) const ROOT_FS: &str = "awk '$2 == \"/\" { t = $3 } END { print t }' /proc/self/mounts";

/// Loads the vendor KVM module if the CPU has the extension and it is not loaded (init loads it from
/// the initramfs; `modprobe` finds nothing in the parent's `/lib/modules` for the guest's kernel, so it
/// is a last try only), gives `/dev/kvm` to group `kvm`, and reports what it found.
pub(super) const KVM_SCRIPT: &str = r#"
module=
for m in kvm_amd kvm_intel; do [ -d "/sys/module/$m" ] && module=$m; done
if [ -z "$module" ]; then
  if grep -qw svm /proc/cpuinfo; then want=kvm_amd; elif grep -qw vmx /proc/cpuinfo; then want=kvm_intel; else want=; fi
  if [ -n "$want" ] && modprobe "$want" >/dev/null 2>&1; then module=$want; fi
fi
echo "module=$module"
[ -n "$module" ] && echo "nested=$(cat "/sys/module/$module/parameters/nested" 2>/dev/null)"
if [ -c /dev/kvm ]; then
  echo dev_kvm=yes
  # What Debian's udev rule does; only then does libvirt keep its QEMU capability cache. Only when
  # needed: every chgrp or chmod changes the device's ctime, and libvirt checks KVM again on each call
  # after that ("/dev/kvm has changed").
  [ "$(stat -c %G:%a /dev/kvm 2>/dev/null)" = kvm:660 ] || { chgrp kvm /dev/kvm 2>/dev/null && chmod 0660 /dev/kvm; }
else
  echo dev_kvm=no
fi
exit 0
"#;

/// Mounts `/dev/pts`: lab init mounts only devtmpfs, and QEMU's serial console (a pty) failed with
/// "Failed to create PTY: No such file or directory" without it. Makes `/run/lock` (`/var/lock` links
/// there, and the guest's `/run` is a fresh tmpfs): without it opening a guest's channel failed with
/// "Couldn't create lock file for device ... in path '/var/lock/LCK.._run_libvirt_...'".
pub(super) const DEVPTS_SCRIPT: &str = r#"
set -e
mkdir -p /run/lock
chmod 1777 /run/lock
mkdir -p /dev/pts
grep -q '^devpts /dev/pts ' /proc/self/mounts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
"#;

/// Puts an empty tmpfs (same mode) over each libvirt directory of the parent that the guest cannot
/// list: root's 0700/0711 directories (`/etc/libvirt/secrets`, `/var/cache/libvirt`) reach the guest
/// through 9p served by the parent's QEMU as its own user, so libvirtd failed with "cannot open
/// directory '/etc/libvirt/secrets': Permission denied". Their content (the parent's secrets and
/// capability cache) is not the guest's anyway. Prints each directory it covered.
pub(super) const PRIVATE_DIRS_SCRIPT: &str = r#"
set -e
# The parent's running guests' state (`domain-N-NAME`) is skipped: hidden below anyway, and it comes
# and goes while this runs (seen: a directory gone between `find` and `stat`).
for d in $(find /etc/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt -type d 2>/dev/null); do
  case "$d" in /var/lib/libvirt/qemu/domain-*) continue ;; esac
  ls "$d" >/dev/null 2>&1 && continue
  mode=$(stat -c %a "$d" 2>/dev/null) || continue
  mount -t tmpfs -o "mode=$mode" tmpfs "$d" || [ ! -d "$d" ] || exit 1
  echo "$d"
done
"#;

/// Removes, in the guest's overlay only, the parent's persistent libvirt objects and their state.
pub(super) const HIDE_SCRIPT: &str = r#"
set -e
for d in /etc/libvirt/qemu /etc/libvirt/qemu/networks /etc/libvirt/storage; do
  [ -d "$d" ] || continue
  find "$d" -maxdepth 1 -name '*.xml' -type f -exec rm -f {} +
  rm -rf "$d/autostart"
done
# Runtime state of the parent's running guests and networks; it may change under our feet, so a
# file that vanished meanwhile is no failure.
rm -rf /var/lib/libvirt/qemu/domain-* /var/lib/libvirt/dnsmasq/* 2>/dev/null || true
"#;

/// Removes, in the guest's overlay only, every QEMU system emulator but `qemu-system-x86_64`, the
/// only one nestform's guests run on (their domains say `arch="x86_64"`): libvirtd probes each
/// emulator it finds when it starts, and answers nothing until it is done. The parent's root has
/// `qemu-system-i386` too, whose probe took as long as x86_64's (the parent's capability cache holds
/// one file for each), and a probe takes minutes in an emulated level 2. Prints each one removed.
pub(super) const ONE_EMULATOR_SCRIPT: &str = r#"
for b in /usr/bin/qemu-system-* /usr/libexec/qemu-kvm; do
  [ -e "$b" ] || continue
  case "$b" in */qemu-system-x86_64) continue ;; esac
  rm -f "$b" && echo "$b"
done
exit 0
"#;

/// Puts an empty tmpfs over nestform's storage pool directory (the libvirt provider's
/// `DEFAULT_POOL_DIR`): the guest would otherwise see the parent's pool, which holds the parent's
/// guests' disks and is root's 0711 directory the guest cannot list through 9p (seen: "build storage
/// pool `nestform` failed: unable to open '/var/lib/nestform/pool': Permission denied"). The guest's
/// guests' disks then live in the guest's memory, like the rest of its root.
pub(super) const OWN_POOL_SCRIPT: &str = r#"
set -e
mkdir -p /var/lib/nestform/pool
mount -t tmpfs -o mode=0711 tmpfs /var/lib/nestform/pool
"#;

/// Starts each daemon unless it runs (its pid file names a live process), in its own session so the
/// agent's process-group clean-up never reaches it, logging warnings and errors to a file.
pub(super) fn daemons_script() -> String {
    format!(
        r#"
mkdir -p /var/log/libvirt /run/libvirt
running() {{ [ -f "/run/$1.pid" ] && kill -0 "$(cat "/run/$1.pid")" 2>/dev/null; }}
start() {{
  name=$1; log=$2
  running "$name" && return 0
  # The parent's log may be root's 0600 file, which the guest cannot read through 9p (the parent's
  # QEMU serves it as its own user), so appending would fail on the copy-up: then start a log of our
  # own. A readable log is the guest's own from an earlier start, kept for whoever looks into a crash.
  head -c 1 "$log" >/dev/null 2>&1 || rm -f "$log"
  LIBVIRT_LOG_OUTPUTS="3:file:$log" setsid "$name" -d </dev/null >>"$log" 2>&1 || {{ echo "\`$name -d\` failed"; exit 1; }}
  echo "started=$name"
}}
start virtlogd {VIRTLOGD_LOG}
start libvirtd {LIBVIRTD_LOG}
"#
    )
}

/// Prints the pid of each running QEMU capability probe, a line each: libvirt starts them with
/// `-machine none,accel=...` (the `[=]` keeps the pattern from matching `grep`'s own command line).
pub(super) const PROBE_PIDS: &str =
    r#"grep -lsa 'none,accel[=]' /proc/[0-9]*/cmdline | sed 's#/proc/\([0-9]*\)/cmdline#\1#'"#;

/// Where libvirtd caches what it probed of each QEMU binary.
const QEMU_CAPS_CACHE: &str = "/var/cache/libvirt/qemu/capabilities";

/// Asks whether libvirtd answers: exits 0 with `virsh version`'s output when it does; 1 when its
/// socket is not there yet; 2 when libvirtd is gone (it failed after daemonizing, so waiting longer
/// is pointless); 3 while it probes QEMU, with a line that says which probes run and how many
/// results are cached (`virsh` would only wait for the probe).
pub(super) fn ready_check_script() -> String {
    format!(
        r#"[ -f /run/libvirtd.pid ] && kill -0 "$(cat /run/libvirtd.pid)" 2>/dev/null || {{ echo 'libvirtd is not running'; exit 2; }}
probes=$({PROBE_PIDS} | tr '\n' ' '); probes=${{probes% }}
cached=$(ls {QEMU_CAPS_CACHE} 2>/dev/null | wc -l)
[ -z "$probes" ] || {{ echo "probing QEMU (process $probes, $cached results cached)"; exit 3; }}
test -S {LIBVIRT_SOCKET} || {{ echo "no socket yet ($cached results cached)"; exit 1; }}
virsh -c qemu:///system version 2>&1
"#
    )
}

/// Kills the guest's libvirtd (hung: it does not answer) so the daemons script starts a new one,
/// and any QEMU capability probe it left (a probe outlives its libvirtd and would run on unused).
pub(super) fn restart_libvirtd() -> String {
    format!(
        r#"
pid=$(cat /run/libvirtd.pid 2>/dev/null)
[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
for i in $(seq 50); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
for probe in $({PROBE_PIDS}); do kill -9 "$probe" 2>/dev/null; done
rm -f /run/libvirtd.pid
echo "== restarted after it stopped answering" >> /var/log/libvirt/libvirtd.log
exit 0
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_are_valid_shell() {
        for script in [ROOT_FS, KVM_SCRIPT, DEVPTS_SCRIPT, PRIVATE_DIRS_SCRIPT, HIDE_SCRIPT, OWN_POOL_SCRIPT]
            .map(String::from)
            .into_iter()
            .chain([daemons_script(), already_promoted_script(), restart_libvirtd(), ready_check_script()])
        {
            let out = std::process::Command::new("sh").args(["-n", "-c", &script]).output().expect("sh runs");
            assert!(out.status.success(), "{}\n{script}", String::from_utf8_lossy(&out.stderr));
        }
    }

    #[test]
    fn probes_are_found_by_their_command_line_and_nothing_else_is() {
        // A stand-in for a probe: a process whose arguments say `-machine none,accel=tcg`.
        let mut probe = std::process::Command::new("sh")
            .args(["-c", "sleep 30", "qemu-system-x86_64", "-machine", "none,accel=tcg"])
            .spawn()
            .unwrap();
        let out = std::process::Command::new("sh").args(["-c", PROBE_PIDS]).output().unwrap();
        let _ = probe.kill();
        let _ = probe.wait();
        let pids: Vec<u32> =
            String::from_utf8_lossy(&out.stdout).split_whitespace().map(|p| p.parse().unwrap()).collect();
        assert_eq!(pids, [probe.id()], "{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn a_kvm_report_reads_its_key_value_lines() {
        let r = KvmReport::parse("module=kvm_amd\nnested=1\ndev_kvm=yes\n");
        assert_eq!((r.module.as_deref(), r.nested.as_deref(), r.dev_kvm), (Some("kvm_amd"), Some("1"), true));
        // An emulated guest: no module, so no `nested` line.
        let r = KvmReport::parse("module=\ndev_kvm=no\n");
        assert_eq!((r.module, r.nested, r.dev_kvm), (None, None, false));
    }

    #[test]
    fn the_kvm_script_reports_in_key_value_lines() {
        // Runs for real on this machine: reads only, except `chgrp`/`chmod` of an existing
        // `/dev/kvm`, which needs root and is what udev does anyway; so only run the read part.
        let probe = KVM_SCRIPT
            .replace("chgrp kvm /dev/kvm 2>/dev/null && chmod 0660 /dev/kvm", ":")
            .replace("stat -c %G:%a /dev/kvm", "echo kvm:660")
            .replace("modprobe \"$want\"", "false");
        let out = std::process::Command::new("sh").args(["-c", &probe]).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.lines().any(|l| l.starts_with("module=")), "{text}");
        let expected = if std::path::Path::new("/dev/kvm").exists() { "dev_kvm=yes" } else { "dev_kvm=no" };
        assert!(text.lines().any(|l| l == expected), "{text}");
    }
}
