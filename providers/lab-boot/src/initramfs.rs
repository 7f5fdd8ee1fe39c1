//! Building a lab guest's initramfs: a gzipped newc cpio with busybox, its applet links, the modules
//! in load order and the `/init` script; cached by a content hash of everything that goes in.
//!
//! ```text
//!   /init                       the script of `init`
//!   /bin/busybox                busybox-static; every applet a symlink to it (`/sbin/insmod`, ...)
//!   /lib/modules/NAME.ko        uncompressed, loaded by `/init` in the order of `modules`
//!   /etc/nestform/udhcpc.script DHCP hook
//!   /dev/console                so the kernel can give `/init` its stdout before devtmpfs is mounted
//! ```

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use cpio::newc::Builder;
use sha2::{Digest, Sha256};

use crate::init::{init_script, UDHCPC_SCRIPT, UDHCPC_SCRIPT_PATH};
use crate::modules::{read_module, ModuleIndex, OPTIONAL_MODULES, REQUIRED_MODULES};
use crate::{LabError, LabKernel};

/// Where busybox-static installs its binary on Debian.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// Where initramfs images are cached unless the caller says otherwise.
pub const DEFAULT_INITRAMFS_DIR: &str = "/var/cache/nestform/initramfs";

/// Changes whenever the layout of the archive changes, so old cache entries are not reused.
const FORMAT: &str = "nestform-initramfs-1";

/// What goes into an initramfs besides the kernel's modules.
#[derive(Clone, Debug)]
pub struct InitramfsOptions {
    /// A statically linked busybox (Debian's `busybox-static`).
    pub busybox: PathBuf,
    /// Modules the guest cannot boot without.
    pub required: Vec<String>,
    /// Modules loaded when the kernel has them.
    pub optional: Vec<String>,
}

impl Default for InitramfsOptions {
    fn default() -> Self {
        InitramfsOptions {
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
            required: REQUIRED_MODULES.iter().map(|s| s.to_string()).collect(),
            optional: OPTIONAL_MODULES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A built (or reused) initramfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Initramfs {
    /// The image: `DIR/initramfs-VERSION-HASH.cpio.gz`.
    pub path: PathBuf,
    /// The content hash of its inputs (hex SHA-256).
    pub hash: String,
    /// The modules `/init` loads, in order.
    pub modules: Vec<String>,
    /// Wanted modules that are built into the kernel.
    pub builtin: Vec<String>,
    /// Optional modules this kernel does not have.
    pub absent: Vec<String>,
    /// Whether an image with the same hash was already in the cache.
    pub reused: bool,
}

/// One file of the archive, before it is written.
enum Entry {
    Dir,
    File { mode: u32, data: Vec<u8> },
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

/// Builds the initramfs for `kernel` into the cache directory `out` (created if needed), or reuses the
/// image there whose inputs hash the same. Safe to call from several processes at once: an image is
/// written to a temporary file and renamed into place.
pub fn build_initramfs(
    kernel: &LabKernel,
    out: &Path,
    opts: &InitramfsOptions,
) -> Result<Initramfs, LabError> {
    let required: Vec<&str> = opts.required.iter().map(String::as_str).collect();
    let optional: Vec<&str> = opts.optional.iter().map(String::as_str).collect();
    let order = ModuleIndex::read(&kernel.modules)?.load_order(&required, &optional)?;

    let busybox = std::fs::read(&opts.busybox)
        .map_err(|e| LabError::Busybox { path: opts.busybox.clone(), message: e.to_string() })?;
    if !is_static_elf(&busybox) {
        return Err(LabError::Busybox {
            path: opts.busybox.clone(),
            message: "it is not a statically linked program (install `busybox-static`)".into(),
        });
    }
    let applets = applets(&opts.busybox)?;

    let names: Vec<String> = order.modules.iter().map(|m| m.name.clone()).collect();
    let init = init_script(&names);
    let mut modules = Vec::with_capacity(order.modules.len());
    for m in &order.modules {
        modules.push((m.name.clone(), read_module(&m.path)?));
    }

    let mut hasher = Sha256::new();
    for part in [FORMAT.as_bytes(), kernel.version.as_bytes(), init.as_bytes(), UDHCPC_SCRIPT.as_bytes()] {
        hash_part(&mut hasher, part);
    }
    hash_part(&mut hasher, &busybox);
    hash_part(&mut hasher, applets.join("\n").as_bytes());
    for (name, data) in &modules {
        hash_part(&mut hasher, name.as_bytes());
        hash_part(&mut hasher, data);
    }
    let hash: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();

    let path = out.join(format!("initramfs-{}-{}.cpio.gz", kernel.version, &hash[..16]));
    let result = |reused| Initramfs {
        path: path.clone(),
        hash: hash.clone(),
        modules: names.clone(),
        builtin: order.builtin.clone(),
        absent: order.absent.clone(),
        reused,
    };
    if path.is_file() {
        return Ok(result(true));
    }

    let mut entries: Vec<(String, Entry)> = Vec::new();
    for dir in
        ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "etc", "etc/nestform", "lib", "lib/modules"]
    {
        entries.push((dir.into(), Entry::Dir));
    }
    for dir in ["proc", "sys", "run", "tmp", "mnt", "mnt/lower", "mnt/rw", "newroot"] {
        entries.push((dir.into(), Entry::Dir));
    }
    entries.push(("dev/console".into(), Entry::CharDevice { major: 5, minor: 1 }));
    entries.push(("bin/busybox".into(), Entry::File { mode: 0o755, data: busybox }));
    for applet in &applets {
        if applet != "bin/busybox" {
            entries.push((applet.clone(), Entry::Symlink("/bin/busybox".into())));
        }
    }
    entries.push(("init".into(), Entry::File { mode: 0o755, data: init.into_bytes() }));
    entries.push((
        UDHCPC_SCRIPT_PATH.into(),
        Entry::File { mode: 0o755, data: UDHCPC_SCRIPT.as_bytes().to_vec() },
    ));
    for (name, data) in modules {
        entries.push((format!("lib/modules/{name}.ko"), Entry::File { mode: 0o644, data }));
    }

    std::fs::create_dir_all(out).map_err(|e| LabError::io(out, e))?;
    // World-readable: QEMU runs as its own user (libvirt-qemu) and must read the image.
    let tmp = tempfile::Builder::new()
        .prefix(".initramfs-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(out)
        .map_err(|e| LabError::io(out, e))?;
    write_archive(tmp.as_file(), &entries).map_err(|e| LabError::io(tmp.path(), e))?;
    tmp.persist(&path).map_err(|e| LabError::io(&path, e.error))?;
    Ok(result(false))
}

/// Hashes a length-prefixed part, so that moving bytes between parts changes the hash.
fn hash_part(hasher: &mut Sha256, part: &[u8]) {
    hasher.update((part.len() as u64).to_le_bytes());
    hasher.update(part);
}

fn write_archive(file: &File, entries: &[(String, Entry)]) -> io::Result<()> {
    let gz = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::default());
    let mut w = gz;
    for (ino, (name, entry)) in entries.iter().enumerate() {
        let b = Builder::new(name).ino(ino as u32 + 1).uid(0).gid(0).mtime(0);
        let (b, data): (Builder, &[u8]) = match entry {
            Entry::Dir => (b.mode(0o040755).nlink(2), &[]),
            Entry::File { mode, data } => (b.mode(0o100000 | mode).nlink(1), data),
            Entry::Symlink(target) => (b.mode(0o120777).nlink(1), target.as_bytes()),
            Entry::CharDevice { major, minor } => {
                (b.mode(0o020600).nlink(1).rdev_major(*major).rdev_minor(*minor), &[])
            }
        };
        let size =
            u32::try_from(data.len()).map_err(|_| io::Error::other(format!("`{name}` is over 4 GiB")))?;
        let mut writer = b.write(w, size);
        writer.write_all(data)?;
        w = writer.finish()?;
    }
    let w = cpio::newc::trailer(w)?;
    w.finish()?.flush()?;
    file.sync_all()
}

/// Whether `elf` is an ELF program without an interpreter (`PT_INTERP`): a static one runs in an
/// initramfs that has no shared libraries.
fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false; // Only 64-bit little-endian: the only target nestform builds for.
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        match elf.get(at..at + 4) {
            Some(t) => u32::from_le_bytes(t.try_into().expect("4 bytes")) != PT_INTERP,
            None => false,
        }
    })
}

/// busybox's applets as paths (`bin/sh`, `sbin/insmod`, `usr/bin/[`), from `busybox --list-full`.
fn applets(busybox: &Path) -> Result<Vec<String>, LabError> {
    let out = std::process::Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| LabError::Busybox { path: busybox.to_path_buf(), message: e.to_string() })?;
    if !out.status.success() {
        let message = format!("`--list-full` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        return Err(LabError::Busybox { path: busybox.to_path_buf(), message });
    }
    let list = String::from_utf8_lossy(&out.stdout);
    let mut applets: Vec<String> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains(".."))
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();
    // The init script and its hook need these; a busybox built without them cannot boot a guest.
    for needed in ["sh", "mount", "insmod", "chroot", "ip", "udhcpc", "hostname"] {
        if !applets.iter().any(|a| a.rsplit('/').next() == Some(needed)) {
            let message = format!("it has no `{needed}` applet");
            return Err(LabError::Busybox { path: busybox.to_path_buf(), message });
        }
    }
    Ok(applets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;

    /// A kernel tree with three tiny "modules" and the given `modules.dep`.
    fn fake_kernel(root: &Path) -> LabKernel {
        let modules = root.join("lib/modules/6.1.0-test");
        std::fs::create_dir_all(modules.join("kernel")).unwrap();
        for m in ["virtio", "9p", "overlay"] {
            std::fs::write(modules.join(format!("kernel/{m}.ko")), format!("module {m}")).unwrap();
        }
        std::fs::write(
            modules.join("modules.dep"),
            "kernel/virtio.ko:\nkernel/9p.ko: kernel/virtio.ko\nkernel/overlay.ko:\n",
        )
        .unwrap();
        let image = root.join("vmlinuz-6.1.0-test");
        std::fs::write(&image, b"kernel").unwrap();
        LabKernel { image, modules, version: "6.1.0-test".into() }
    }

    fn options() -> InitramfsOptions {
        InitramfsOptions {
            required: vec!["9p".into(), "overlay".into()],
            optional: vec!["kvm".into()],
            ..Default::default()
        }
    }

    /// Reads a gzipped newc archive back: name to (mode, data).
    fn read_back(path: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(File::open(path).unwrap()).read_to_end(&mut raw).unwrap();
        let mut entries = BTreeMap::new();
        let mut rest = raw.as_slice();
        loop {
            let mut reader = cpio::NewcReader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            let (name, mode) = (reader.entry().name().to_string(), reader.entry().mode());
            let mut data = Vec::new();
            reader.read_to_end(&mut data).unwrap();
            entries.insert(name, (mode, data));
            rest = reader.finish().unwrap();
        }
        entries
    }

    #[test]
    fn builds_a_bootable_layout_and_reuses_it() {
        if !Path::new(DEFAULT_BUSYBOX).is_file() || !is_static_elf(&std::fs::read(DEFAULT_BUSYBOX).unwrap()) {
            eprintln!("skipped: no static busybox at `{DEFAULT_BUSYBOX}` (run tests/guest-kernel.sh)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let kernel = fake_kernel(dir.path());
        let out = dir.path().join("cache");
        let built = build_initramfs(&kernel, &out, &options()).unwrap();
        assert!(!built.reused);
        assert_eq!(built.modules, ["virtio", "9p", "overlay"]);
        assert_eq!(built.absent, ["kvm"]);
        let entries = read_back(&built.path);
        assert_eq!(entries["lib/modules/9p.ko"].1, b"module 9p");
        assert_eq!(entries["init"].0, 0o100755);
        assert!(String::from_utf8_lossy(&entries["init"].1).contains("load virtio\nload 9p\nload overlay\n"));
        assert_eq!(entries["bin/sh"], (0o120777, b"/bin/busybox".to_vec()));
        assert_eq!(entries["dev/console"].0, 0o020600);
        assert!(entries.contains_key("etc/nestform/udhcpc.script"));

        let again = build_initramfs(&kernel, &out, &options()).unwrap();
        assert!(again.reused);
        assert_eq!(again.path, built.path);

        // A changed module is a new image.
        std::fs::write(kernel.modules.join("kernel/9p.ko"), "module 9p, rebuilt").unwrap();
        let changed = build_initramfs(&kernel, &out, &options()).unwrap();
        assert!(!changed.reused);
        assert_ne!(changed.path, built.path);
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn refuses_a_dynamic_busybox() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = fake_kernel(dir.path());
        // The test binary itself is dynamically linked.
        let opts = InitramfsOptions { busybox: std::env::current_exe().unwrap(), ..options() };
        let err = build_initramfs(&kernel, &dir.path().join("cache"), &opts).unwrap_err();
        assert!(err.to_string().contains("busybox-static"), "{err}");
        let opts = InitramfsOptions { busybox: dir.path().join("nope"), ..options() };
        assert!(matches!(build_initramfs(&kernel, dir.path(), &opts), Err(LabError::Busybox { .. })));
    }
}
