//! The guest's `qemu.conf`: the settings a libvirtd in a lab guest needs, written as nestform's own
//! block at the end of whatever the guest's file holds, so writing it again changes nothing.

/// What a libvirtd inside a lab guest needs to start KVM guests: no mount namespaces and no cgroups
/// (the guest has neither set up), and QEMU as root (`/dev/kvm` and the 9p root are root's). Without
/// them QEMU failed with "-accel kvm: Could not access KVM kernel module".
pub const QEMU_CONF_SETTINGS: [(&str, &str); 4] =
    [("namespaces", "[]"), ("cgroup_controllers", "[]"), ("user", "\"root\""), ("group", "\"root\"")];

/// The line that starts nestform's block in `qemu.conf`; everything after it is nestform's.
pub(super) const CONF_MARKER: &str = "# nestform: settings of a libvirtd in a lab guest";

/// `existing` (the guest's `qemu.conf`) with [`QEMU_CONF_SETTINGS`]: earlier assignments of those
/// keys are commented out (libvirt refuses a key set twice) and nestform's block goes at the end;
/// an earlier nestform block is replaced, so applying it twice gives the same file.
pub fn qemu_conf_with_settings(existing: &str) -> String {
    let mut out = String::new();
    for line in existing.lines() {
        if line == CONF_MARKER {
            break;
        }
        let key = line.split('=').next().unwrap_or("").trim();
        if line.contains('=') && QEMU_CONF_SETTINGS.iter().any(|(k, _)| *k == key) {
            out.push_str("# (set below by nestform) ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(CONF_MARKER);
    out.push('\n');
    for (key, value) in QEMU_CONF_SETTINGS {
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "# Master configuration file for the QEMU driver.\n#user = \"libvirt-qemu\"\n\
                          user = \"libvirt-qemu\"\nsecurity_driver = \"none\"\n";

    #[test]
    fn qemu_conf_gets_the_settings_once_however_often_it_is_applied() {
        let once = qemu_conf_with_settings(DEBIAN);
        assert_eq!(
            once,
            "# Master configuration file for the QEMU driver.\n#user = \"libvirt-qemu\"\n\
             # (set below by nestform) user = \"libvirt-qemu\"\nsecurity_driver = \"none\"\n\
             # nestform: settings of a libvirtd in a lab guest\n\
             namespaces = []\ncgroup_controllers = []\nuser = \"root\"\ngroup = \"root\"\n"
        );
        let twice = qemu_conf_with_settings(&once);
        assert_eq!(twice.matches("# (set below by nestform)").count(), 1, "{twice}");
        assert_eq!(twice, once);
        // A guest without a qemu.conf gets just the block.
        assert!(qemu_conf_with_settings("").starts_with(CONF_MARKER));
    }
}
