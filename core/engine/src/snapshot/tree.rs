//! The guest's subtree as the state records it: the guests inside it (on `kvm_host`s promoted from
//! it, recursively), and whether a guest must be snapshotted offline.

use nestform_state::State;
use nestform_types::{ResourceAddr, ResourceType};

use super::SnapshotError;

/// One guest of the subtree, as the state records it.
#[derive(Clone, Debug)]
pub(super) struct Member {
    pub(super) addr: ResourceAddr,
    pub(super) id: String,
    pub(super) name: String,
    pub(super) host: ResourceAddr,
    /// The guest of the subtree it runs inside; `None` for the guest being snapshotted.
    pub(super) parent: Option<ResourceAddr>,
    pub(super) depth: usize,
    pub(super) lab: bool,
    /// The `kvm_host`s that promote it.
    pub(super) promoted_as: Vec<ResourceAddr>,
}

fn attr<'s>(state: &'s State, addr: &ResourceAddr, key: &str) -> Option<&'s serde_json::Value> {
    state.resources.get(addr)?.attributes.get(key)
}

pub(super) fn member(
    state: &State,
    addr: &ResourceAddr,
    parent: Option<ResourceAddr>,
    depth: usize,
) -> Result<Member, SnapshotError> {
    if addr.ty != ResourceType::NestedGuest {
        return Err(SnapshotError::NotAGuest(addr.clone()));
    }
    let r = state.resources.get(addr).ok_or_else(|| SnapshotError::NotInState(addr.clone()))?;
    let incomplete = |what| SnapshotError::Incomplete { addr: addr.clone(), what };
    let id = r.id.clone().ok_or_else(|| incomplete("id"))?;
    let host = r.host.clone().ok_or_else(|| incomplete("host"))?;
    let name = r.attributes.get("name").and_then(|n| n.as_str()).unwrap_or(&addr.name).to_string();
    let lab = nestform_types::is_lab_attributes(&r.attributes);
    let promoted_as = state
        .resources
        .iter()
        .filter(|(a, h)| {
            a.ty == ResourceType::KvmHost
                && h.attributes.get("guest").and_then(|g| g.as_str()) == Some(&addr.to_string())
        })
        .map(|(a, _)| a.clone())
        .collect();
    Ok(Member { addr: addr.clone(), id, name, host, parent, depth, lab, promoted_as })
}

/// The guest and every guest inside it (on `kvm_host`s promoted from it, recursively), shallowest
/// first.
pub(super) fn subtree(state: &State, guest: &ResourceAddr) -> Result<Vec<Member>, SnapshotError> {
    let mut out = vec![member(state, guest, None, 0)?];
    let mut i = 0;
    while i < out.len() {
        let m = out[i].clone();
        for host in &m.promoted_as {
            let inner: Vec<ResourceAddr> = state
                .resources
                .iter()
                .filter(|(a, r)| a.ty == ResourceType::NestedGuest && r.host.as_ref() == Some(host))
                .map(|(a, _)| a.clone())
                .collect();
            for a in inner {
                // A state that nests a guest inside itself would loop; it is cut off here.
                if !out.iter().any(|o| o.addr == a) && m.depth < 32 {
                    out.push(member(state, &a, Some(m.addr.clone()), m.depth + 1)?);
                }
            }
        }
        i += 1;
    }
    Ok(out)
}

/// Why a guest is snapshotted offline, or `None` when it can be snapshotted live.
pub(super) fn offline_reason(state: &State, m: &Member, running: bool) -> Option<String> {
    if !running {
        return Some("the guest is shut off".into());
    }
    let unsafe_disks = disks_where(state, m, "cache", "unsafe");
    if !unsafe_disks.is_empty() {
        return Some(format!(
            "disk {} has `cache = \"unsafe\"`: only a clean shutdown gets its data to the disk",
            unsafe_disks.join(", ")
        ));
    }
    if m.lab {
        return Some(
            "a lab guest mounts its parent's root over 9p, and QEMU cannot save the memory of a guest \
             with a mounted 9p share"
                .into(),
        );
    }
    None
}

/// Why the guest cannot have a snapshot at all, or `None`. libvirt keeps QEMU's snapshots, memory
/// included, inside the guest's qcow2 disks: a guest without one has nowhere to keep them.
pub(super) fn cannot_snapshot(state: &State, m: &Member) -> Option<String> {
    if disks(state, m).next().is_none() {
        return Some(
            "it has no disks, and a snapshot (memory included) is kept in the guest's qcow2 disks; give it a \
             `disk`"
                .into(),
        );
    }
    let raw = disks_where(state, m, "format", "raw");
    if !raw.is_empty() {
        return Some(format!(
            "disk {} is raw, and snapshots are kept inside qcow2 disks (`format = \"qcow2\"`, the default)",
            raw.join(", ")
        ));
    }
    None
}

/// The guest's disks as the state records them.
fn disks<'s>(state: &'s State, m: &Member) -> impl Iterator<Item = &'s serde_json::Value> {
    attr(state, &m.addr, "disks").and_then(|d| d.as_array()).into_iter().flatten()
}

/// The names (in backticks) of the guest's disks whose `key` is `value`.
fn disks_where(state: &State, m: &Member, key: &str, value: &str) -> Vec<String> {
    disks(state, m)
        .filter(|d| d.get(key).and_then(|v| v.as_str()) == Some(value))
        .filter_map(|d| d.get("name").and_then(|n| n.as_str()).map(|n| format!("`{n}`")))
        .collect()
}
