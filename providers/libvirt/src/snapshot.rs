//! Domain snapshots (`virDomainSnapshot*`): taken, listed, reverted to and deleted by name, each
//! stamped with nestform's owner in its `<description>` (snapshot XML has no `<metadata>`), so
//! `virsh snapshot-dumpxml` shows who made it.
//!
//! nestform leaves the kind of snapshot to libvirt's defaults: on QEMU with qcow2 disks that is an
//! internal snapshot, kept inside the qcow2 files (with the memory state for a running guest), which
//! libvirt can revert to and delete. What nestform decides is only whether the guest runs while it
//! is taken ([`SnapshotMode`]).

use nestform_provider::{snapshot_description, snapshot_owner, ProviderError, SnapshotInfo, SnapshotMode};
use nestform_types::Owner;
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;
use virt::error::ErrorNumber;

use crate::error::{is, op};
use crate::hypervisor::LibvirtHypervisor;
use crate::xml::{Element, XmlExt};

/// The `<domainsnapshot>` document that asks for snapshot `name` with nestform's description.
pub(crate) fn snapshot_xml(name: &str, owner: &Owner) -> String {
    let mut w = crate::xml::writer();
    let written = w.elem("domainsnapshot", &[], |w| {
        w.text("name", &[], name)?;
        w.text("description", &[], &snapshot_description(owner))
    });
    written.expect("writing to a `Vec` does not fail");
    crate::xml::finish(w)
}

/// What a snapshot's XML (`virDomainSnapshotGetXMLDesc`) says about it; `current` is asked separately.
pub(crate) fn parse_snapshot(xml: &str) -> Result<SnapshotInfo, String> {
    let root = Element::parse(xml)?;
    let name = root.text_at(&["name"]).ok_or("the snapshot has no `<name>`")?.to_string();
    let description = root.text_at(&["description"]).map(str::to_string);
    let created = root.text_at(&["creationTime"]).and_then(|t| t.trim().parse().ok()).unwrap_or(0);
    // `running`, `paused` and `blocked` snapshots hold memory; `shutoff` and `disk-snapshot` do not.
    let state = root.text_at(&["state"]).unwrap_or("shutoff");
    let running = matches!(state, "running" | "paused" | "blocked");
    let owner = description.as_deref().and_then(snapshot_owner);
    Ok(SnapshotInfo { name, created, running, current: false, owner, description })
}

fn domain(h: &LibvirtHypervisor, id: &str, operation: &'static str) -> Result<Domain, ProviderError> {
    h.lookup_domain(id)?.ok_or_else(|| ProviderError::op(operation, id, "no such domain"))
}

fn lookup(
    dom: &Domain,
    id: &str,
    name: &str,
    operation: &'static str,
) -> Result<DomainSnapshot, ProviderError> {
    Domain::lookup_snapshot_by_name(dom, name, 0).map_err(|e| {
        let what = format!("{id}/{name}");
        if is(&e, ErrorNumber::NoDomainSnapshot) {
            ProviderError::op(operation, what, "no such snapshot")
        } else {
            op(operation, &what)(e)
        }
    })
}

fn info(snap: &DomainSnapshot, what: &str) -> Result<SnapshotInfo, ProviderError> {
    let xml = snap.xml_desc(0).map_err(op("read snapshot", what))?;
    let mut info = parse_snapshot(&xml).map_err(|e| ProviderError::op("parse snapshot", what, e))?;
    info.current = snap.is_current(0).map_err(op("read snapshot", what))?;
    Ok(info)
}

pub(crate) fn create(
    h: &LibvirtHypervisor,
    id: &str,
    name: &str,
    mode: SnapshotMode,
    owner: &Owner,
) -> Result<SnapshotInfo, ProviderError> {
    let dom = domain(h, id, "create snapshot of")?;
    let what = format!("{id}/{name}");
    // libvirt would take a running guest's memory along; offline promises a guest that is shut off.
    if mode == SnapshotMode::Offline && dom.is_active().map_err(op("read domain", id))? {
        return Err(ProviderError::op(
            "create snapshot",
            what,
            "an offline snapshot needs the guest shut off",
        ));
    }
    // Checked first so the error says so plainly, rather than libvirt's "already exists" wording.
    if dom
        .list_all_snapshots(0)
        .map_err(op("list snapshots of", id))?
        .iter()
        .any(|s| s.name().ok().as_deref() == Some(name))
    {
        return Err(ProviderError::op("create snapshot", what, "a snapshot of this name exists"));
    }
    let snap = dom
        .create_snapshot_xml(&snapshot_xml(name, owner), virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
        .map_err(op("create snapshot", &what))?;
    info(&snap, &what)
}

pub(crate) fn list(h: &LibvirtHypervisor, id: &str) -> Result<Vec<SnapshotInfo>, ProviderError> {
    let dom = domain(h, id, "list snapshots of")?;
    // Parents before children, then oldest first: snapshots taken within one second stay in order.
    let snaps = dom
        .list_all_snapshots(virt::sys::VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
        .map_err(op("list snapshots of", id))?;
    let mut out = snaps.iter().map(|s| info(s, id)).collect::<Result<Vec<_>, _>>()?;
    out.sort_by_key(|s| s.created);
    Ok(out)
}

pub(crate) fn revert(h: &LibvirtHypervisor, id: &str, name: &str) -> Result<(), ProviderError> {
    let dom = domain(h, id, "revert snapshot of")?;
    let snap = lookup(&dom, id, name, "revert to snapshot")?;
    snap.revert(0).map_err(op("revert to snapshot", &format!("{id}/{name}")))
}

pub(crate) fn delete(h: &LibvirtHypervisor, id: &str, name: &str) -> Result<(), ProviderError> {
    let dom = domain(h, id, "delete snapshot of")?;
    let snap = lookup(&dom, id, name, "delete snapshot")?;
    snap.delete(0).map_err(op("delete snapshot", &format!("{id}/{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_name_and_description() {
        let owner = Owner { lineage: "l1".into(), address: "nested_guest.a<b>".into() };
        let xml = snapshot_xml("before-upgrade", &owner);
        assert_eq!(
            xml,
            "<domainsnapshot>\n  <name>before-upgrade</name>\n  \
             <description>made by nestform for nested_guest.a&lt;b&gt; (state lineage l1)</description>\n\
             </domainsnapshot>"
        );
        let back = parse_snapshot(&xml).unwrap();
        assert_eq!((back.name.as_str(), back.owner), ("before-upgrade", Some(owner)));
    }

    #[test]
    fn reads_libvirts_rendering() {
        let xml = "<domainsnapshot>\n  <name>s1</name>\n  <state>running</state>\n  \
                   <creationTime>1764130000</creationTime>\n  <memory snapshot='internal'/>\n  \
                   <domain type='qemu'><name>g</name></domain>\n</domainsnapshot>\n";
        let s = parse_snapshot(xml).unwrap();
        assert_eq!((s.name.as_str(), s.created, s.running, s.owner), ("s1", 1764130000, true, None));
        let off = parse_snapshot("<domainsnapshot><name>s2</name><state>shutoff</state></domainsnapshot>");
        assert!(!off.unwrap().running);
    }
}
