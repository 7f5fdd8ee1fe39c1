//! nestform's storage pool and the volumes in it.
//!
//! One `dir` pool named `nestform` holds every guest's disks as `<guest>-<disk>.<format>`. It is made
//! (defined, built, started, marked autostart) when a guest first needs a volume and removed when
//! `delete_guest` leaves it empty, so a host nestform no longer manages carries nothing of it.
//!
//! Why the locks: the engine creates guests in parallel, and two `create_guest` calls that both find no
//! pool would both define one (the second fails). Making the pool is therefore serialised, and the
//! volumes are created under a read lock that the removal of an empty pool takes for writing, so a
//! pool is never removed between "ensure the pool" and "create my volumes". The locks are process-wide
//! rather than per host: a little more waiting, no bookkeeping of which connections share a host.

use std::path::Path;
use std::sync::{Mutex, RwLock};

use nestform_provider::{DiskRequest, ProviderError};
use nestform_types::{DiskFormat, Preallocation};
use virt::connect::Connect;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;

use crate::error::{is, op};
use crate::xml::{finish, writer, XmlExt};
use crate::POOL_NAME;

static POOL_IN_USE: RwLock<()> = RwLock::new(());
static POOL_MAKING: Mutex<()> = Mutex::new(());

/// Runs `f` with nestform's pool, making the pool first when the host has none.
pub(crate) fn with_pool<T>(
    conn: &Connect,
    pool_dir: &Path,
    f: impl FnOnce(&StoragePool) -> Result<T, ProviderError>,
) -> Result<T, ProviderError> {
    let _in_use = POOL_IN_USE.read().unwrap_or_else(|e| e.into_inner());
    let pool = {
        let _making = POOL_MAKING.lock().unwrap_or_else(|e| e.into_inner());
        ensure_pool(conn, pool_dir)?
    };
    f(&pool)
}

fn ensure_pool(conn: &Connect, pool_dir: &Path) -> Result<StoragePool, ProviderError> {
    let pool = match lookup_pool(conn)? {
        Some(pool) => pool,
        None => {
            let dir = pool_dir.to_string_lossy();
            let mut w = writer();
            w.elem("pool", &[("type", "dir")], |w| {
                w.text("name", &[], POOL_NAME)?;
                w.elem("target", &[], |w| w.text("path", &[], &dir))
            })
            .expect("writing to memory does not fail");
            let pool =
                conn.define_storage_pool_xml(&finish(w), 0).map_err(op("define storage pool", POOL_NAME))?;
            if let Err(e) = pool.build(0) {
                let _ = pool.undefine();
                return Err(op("build storage pool", POOL_NAME)(e));
            }
            // Autostart keeps the guests' disks available after the host reboots; not every driver
            // has it and the pool works without it.
            let _ = pool.set_autostart(true);
            pool
        }
    };
    if !pool.is_active().map_err(op("read storage pool", POOL_NAME))? {
        pool.create(0).map_err(op("start storage pool", POOL_NAME))?;
    }
    Ok(pool)
}

/// nestform's pool, if the host has one (active or not).
pub(crate) fn lookup_pool(conn: &Connect) -> Result<Option<StoragePool>, ProviderError> {
    match conn.lookup_storage_pool_by_name(POOL_NAME) {
        Ok(pool) => Ok(Some(pool)),
        Err(e) if is(&e, ErrorNumber::NoStoragePool) => Ok(None),
        Err(e) => Err(op("look up storage pool", POOL_NAME)(e)),
    }
}

/// A volume of the pool, if it exists.
pub(crate) fn lookup_volume(pool: &StoragePool, name: &str) -> Result<Option<StorageVol>, ProviderError> {
    match pool.lookup_storage_vol_by_name(name) {
        Ok(vol) => Ok(Some(vol)),
        Err(e) if is(&e, ErrorNumber::NoStorageVolume) => Ok(None),
        Err(e) => Err(op("look up volume", name)(e)),
    }
}

/// The capacity of a volume in bytes, if it exists.
pub(crate) fn capacity(pool: &StoragePool, name: &str) -> Result<Option<u64>, ProviderError> {
    match lookup_volume(pool, name)? {
        Some(vol) => Ok(Some(vol.info().map_err(op("read volume", name))?.capacity)),
        None => Ok(None),
    }
}

/// The volume XML for a disk. Allocation is what preallocation asks for: none, or all of it (libvirt
/// then preallocates with `falloc` or writes the whole file); qcow2 metadata preallocation is a
/// create flag instead (see [`create_volume`]).
fn volume_xml(name: &str, disk: &DiskRequest) -> String {
    let allocation = match disk.preallocation {
        Preallocation::Off | Preallocation::Metadata => 0,
        Preallocation::Falloc | Preallocation::Full => disk.size_bytes,
    };
    let mut w = writer();
    w.elem("volume", &[], |w| {
        w.text("name", &[], name)?;
        w.text("capacity", &[("unit", "bytes")], &disk.size_bytes.to_string())?;
        w.text("allocation", &[("unit", "bytes")], &allocation.to_string())?;
        w.elem("target", &[], |w| w.empty("format", &[("type", disk.format.as_str())]))
    })
    .expect("writing to memory does not fail");
    finish(w)
}

/// Creates the volume `name` for `disk`. qcow2 with `preallocation = "metadata"` asks for
/// `VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA`; a driver that rejects the flag (libvirt's test driver
/// does) gets the volume without it, since preallocation is a speed-up, not a property of the disk.
pub(crate) fn create_volume(pool: &StoragePool, name: &str, disk: &DiskRequest) -> Result<(), ProviderError> {
    let xml = volume_xml(name, disk);
    let flags = match (disk.format, disk.preallocation) {
        (DiskFormat::Qcow2, Preallocation::Metadata) => virt::sys::VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA,
        _ => 0,
    };
    match StorageVol::create_xml(pool, &xml, flags) {
        Ok(_) => Ok(()),
        Err(e) if flags != 0 && (is(&e, ErrorNumber::InvalidArg) || is(&e, ErrorNumber::NoSupport)) => {
            StorageVol::create_xml(pool, &xml, 0).map(|_| ()).map_err(op("create volume", name))
        }
        Err(e) => Err(op("create volume", name)(e)),
    }
}

/// How a resize went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resized {
    Done,
    /// The driver cannot resize volumes (libvirt's test driver); the volume is unchanged.
    Unsupported,
}

/// Grows a volume to `size` bytes; refuses to shrink it, which would cut off the guest's data.
pub(crate) fn grow_volume(vol: &StorageVol, name: &str, size: u64) -> Result<Resized, ProviderError> {
    let current = vol.info().map_err(op("read volume", name))?.capacity;
    if size < current {
        return Err(ProviderError::op(
            "resize volume",
            name,
            format!("shrinking from `{current}` to `{size}` bytes would lose data"),
        ));
    }
    if size == current {
        return Ok(Resized::Done);
    }
    match vol.resize(size, 0) {
        Ok(()) => Ok(Resized::Done),
        Err(e) if is(&e, ErrorNumber::NoSupport) => Ok(Resized::Unsupported),
        Err(e) => Err(op("resize volume", name)(e)),
    }
}

/// Deletes a volume; one that does not exist is already deleted.
pub(crate) fn delete_volume(pool: &StoragePool, name: &str) -> Result<(), ProviderError> {
    match lookup_volume(pool, name)? {
        Some(vol) => vol.delete(0).map_err(op("delete volume", name)),
        None => Ok(()),
    }
}

/// Removes nestform's pool when no volume is left in it: stops it, deletes its directory (only an
/// empty one; a stray file keeps the directory, which is then the user's) and undefines it.
pub(crate) fn remove_pool_if_empty(conn: &Connect) -> Result<(), ProviderError> {
    let _exclusive = POOL_IN_USE.write().unwrap_or_else(|e| e.into_inner());
    let Some(pool) = lookup_pool(conn)? else { return Ok(()) };
    let active = pool.is_active().map_err(op("read storage pool", POOL_NAME))?;
    if active {
        // A refresh picks up volumes made behind libvirt's back; failing it only means the count
        // below is libvirt's last view.
        let _ = pool.refresh(0);
        if pool.num_of_volumes().map_err(op("list volumes of storage pool", POOL_NAME))? > 0 {
            return Ok(());
        }
        pool.destroy().map_err(op("stop storage pool", POOL_NAME))?;
    }
    let _ = pool.delete(0);
    pool.undefine().map_err(op("undefine storage pool", POOL_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nestform_types::{DiskBus, DiskCache};

    fn disk(format: DiskFormat, preallocation: Preallocation) -> DiskRequest {
        DiskRequest {
            name: "root".into(),
            size_bytes: 1 << 30,
            format,
            preallocation,
            cache: DiskCache::Default,
            bus: DiskBus::Virtio,
        }
    }

    #[test]
    fn volume_xml_carries_capacity_allocation_and_format() {
        let xml = volume_xml("g-root.qcow2", &disk(DiskFormat::Qcow2, Preallocation::Metadata));
        assert_eq!(
            xml,
            "<volume>\n  <name>g-root.qcow2</name>\n  <capacity unit=\"bytes\">1073741824</capacity>\n  \
             <allocation unit=\"bytes\">0</allocation>\n  <target>\n    <format type=\"qcow2\"/>\n  </target>\n</volume>"
        );
        let full = volume_xml("g-root.raw", &disk(DiskFormat::Raw, Preallocation::Full));
        assert!(full.contains("<allocation unit=\"bytes\">1073741824</allocation>"), "{full}");
    }
}
