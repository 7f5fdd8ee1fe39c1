//! The fake's snapshots: each guest keeps a list of what it was (definition and running state) when
//! each snapshot was taken, with libvirt's rules: names are unique per guest, an offline snapshot
//! needs a stopped guest, reverting brings the definition and running state back, and the snapshot
//! last taken or reverted to is the current one.

use nestform_provider::{
    snapshot_description, snapshot_owner, GuestStatus, ProviderError, SnapshotInfo, SnapshotMode,
};
use nestform_types::Owner;

use crate::HostWorld;

/// One snapshot: what the fake reports about it, and the guest as it was.
#[derive(Clone)]
pub(crate) struct SnapshotRecord {
    info: SnapshotInfo,
    guest: GuestStatus,
}

/// Seconds since the epoch, as libvirt's `creationTime`.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn no_guest(op: &'static str, id: &str) -> ProviderError {
    ProviderError::op(op, id, "no such domain")
}

pub(crate) fn create(
    h: &mut HostWorld,
    id: &str,
    name: &str,
    mode: SnapshotMode,
    owner: &Owner,
) -> Result<SnapshotInfo, ProviderError> {
    let g = h.guests.get_mut(id).ok_or_else(|| no_guest("create snapshot of", id))?;
    let what = format!("{}/{name}", g.status.name);
    if g.snapshots.iter().any(|s| s.info.name == name) {
        return Err(ProviderError::op("create snapshot", what, "a snapshot of this name exists"));
    }
    if mode == SnapshotMode::Offline && g.status.running {
        return Err(ProviderError::op(
            "create snapshot",
            what,
            "an offline snapshot needs the guest shut off",
        ));
    }
    let description = snapshot_description(owner);
    let info = SnapshotInfo {
        name: name.to_string(),
        created: now(),
        running: g.status.running,
        current: true,
        owner: snapshot_owner(&description),
        description: Some(description),
    };
    for s in &mut g.snapshots {
        s.info.current = false;
    }
    g.snapshots.push(SnapshotRecord { info: info.clone(), guest: g.status.clone() });
    Ok(info)
}

pub(crate) fn list(h: &HostWorld, id: &str) -> Result<Vec<SnapshotInfo>, ProviderError> {
    let g = h.guests.get(id).ok_or_else(|| no_guest("list snapshots of", id))?;
    Ok(g.snapshots.iter().map(|s| s.info.clone()).collect())
}

pub(crate) fn revert(h: &mut HostWorld, id: &str, name: &str) -> Result<(), ProviderError> {
    let g = h.guests.get_mut(id).ok_or_else(|| no_guest("revert snapshot of", id))?;
    let Some(snap) = g.snapshots.iter().find(|s| s.info.name == name).cloned() else {
        return Err(ProviderError::op(
            "revert to snapshot",
            format!("{}/{name}", g.status.name),
            "no such snapshot",
        ));
    };
    g.status = snap.guest;
    for s in &mut g.snapshots {
        s.info.current = s.info.name == name;
    }
    Ok(())
}

pub(crate) fn delete(h: &mut HostWorld, id: &str, name: &str) -> Result<(), ProviderError> {
    let g = h.guests.get_mut(id).ok_or_else(|| no_guest("delete snapshot of", id))?;
    let before = g.snapshots.len();
    g.snapshots.retain(|s| s.info.name != name);
    if g.snapshots.len() == before {
        return Err(ProviderError::op(
            "delete snapshot",
            format!("{}/{name}", g.status.name),
            "no such snapshot",
        ));
    }
    Ok(())
}
