//! What libvirt and the file system accept, checked when planning: guest and network names, disk
//! labels and the volume file names made of them, MAC addresses and DNS domains.
//!
//! Each of these reaches a host unchanged (a domain name becomes `/etc/libvirt/qemu/NAME.xml` and
//! `NAME-console.log`, a disk label part of the volume file `<guest>-<disk>.<format>`, a DNS
//! domain is written into the network's XML unescaped and on to dnsmasq), so a bad one would fail
//! late, in the middle of an apply, or land somewhere it should not.

use crate::value::Mismatch;

/// The longest guest or network name, in bytes: far more than a readable name needs, and short
/// enough that every file libvirt and nestform derive from it (`NAME.xml`, `NAME-console.log`,
/// `NAME.leases`) stays within the 255 bytes of a file name.
pub(crate) const MAX_NAME_BYTES: usize = 128;

/// The longest file name Linux file systems take, in bytes.
pub(crate) const MAX_FILE_NAME_BYTES: usize = 255;

fn mismatch(summary: String, help: impl Into<String>) -> Mismatch {
    Mismatch { summary, help: help.into() }
}

/// The first character of `s` that cannot be part of a file name or a libvirt name: `/`, or a
/// control character (NUL, newline, ...).
fn bad_char(s: &str) -> Option<char> {
    s.chars().find(|c| *c == '/' || c.is_control())
}

fn shown(c: char) -> String {
    if c.is_control() {
        format!("{:?}", c).trim_matches('\'').to_string()
    } else {
        c.to_string()
    }
}

/// A guest's or network's libvirt name (`what` is the attribute, `name`).
pub(crate) fn object_name(s: &str, what: &str) -> Result<(), Mismatch> {
    let help = "use letters, digits, `-`, `_` and `.`, like `web-1`";
    if s.is_empty() || s == "." || s == ".." {
        return Err(mismatch(format!("`{what}` `{s}` is not a usable name"), help));
    }
    if let Some(c) = bad_char(s) {
        return Err(mismatch(
            format!("`{what}` `{}` contains `{}`, which a name cannot hold", s.escape_debug(), shown(c)),
            help,
        ));
    }
    if s.len() > MAX_NAME_BYTES {
        return Err(mismatch(
            format!("`{what}` is {} bytes long, more than the {MAX_NAME_BYTES} a name may have", s.len()),
            format!("use a name of at most {MAX_NAME_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The label of a `disk` block, which becomes part of a volume's file name.
pub(crate) fn disk_label(s: &str) -> Result<(), Mismatch> {
    let help = "use letters, digits, `-`, `_` and `.`, like `disk \"data\"`";
    if s.is_empty() {
        return Err(mismatch("a disk label cannot be empty".to_string(), help));
    }
    if let Some(c) = bad_char(s) {
        return Err(mismatch(
            format!(
                "the disk label `{}` contains `{}`, which a volume's file name cannot hold",
                s.escape_debug(),
                shown(c)
            ),
            help,
        ));
    }
    if s.contains("..") {
        return Err(mismatch(format!("the disk label `{s}` contains `..`"), help));
    }
    Ok(())
}

/// The file name of a guest's volume, `<guest>-<disk>.<format>` (as the providers name it).
pub(crate) fn volume_file_name(guest: &str, disk: &str, format: &str) -> Result<(), Mismatch> {
    let file = format!("{guest}-{disk}.{format}");
    if file.len() > MAX_FILE_NAME_BYTES {
        return Err(mismatch(
            format!(
                "the volume file name `<guest>-<disk>.{format}` of this disk is {} bytes long, more than the {MAX_FILE_NAME_BYTES} a file name may have",
                file.len()
            ),
            format!(
                "shorten the guest's name ({} bytes) or the disk's label ({} bytes)",
                guest.len(),
                disk.len()
            ),
        ));
    }
    Ok(())
}

/// A unicast MAC address: six octets of two hex digits, separated by `:`.
pub(crate) fn mac(s: &str, what: &str) -> Result<(), Mismatch> {
    let octets: Vec<&str> = s.split(':').collect();
    let well_formed =
        octets.len() == 6 && octets.iter().all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
    if !well_formed {
        return Err(mismatch(
            format!("`{what}` `{}` is not a MAC address", s.escape_debug()),
            "write six hex octets separated by `:`, like `\"52:54:00:12:34:56\"`",
        ));
    }
    let first = u8::from_str_radix(octets[0], 16).unwrap_or(0);
    if first & 1 == 1 {
        return Err(mismatch(
            format!("`{what}` `{s}` is a multicast address, which a network interface cannot have"),
            "clear the lowest bit of the first octet; QEMU's own prefix `52:54:00` is a safe start",
        ));
    }
    Ok(())
}

/// A DNS domain: labels of 1 to 63 letters, digits and `-` (not at either end), separated by `.`,
/// 253 bytes at most.
pub(crate) fn dns_domain(s: &str, what: &str) -> Result<(), Mismatch> {
    let help = "write a domain like `\"lab.example\"`: labels of letters, digits and `-`, separated by `.`";
    if s.len() > 253 {
        return Err(mismatch(
            format!("`{what}` is {} bytes long, more than the 253 a DNS domain may have", s.len()),
            help,
        ));
    }
    for label in s.split('.') {
        let problem = if label.is_empty() {
            Some("has an empty label".to_string())
        } else if label.len() > 63 {
            Some(format!("has a label of {} characters, more than 63", label.len()))
        } else if let Some(c) = label.chars().find(|c| !c.is_ascii_alphanumeric() && *c != '-') {
            Some(format!("contains `{}`", shown(c)))
        } else if label.starts_with('-') || label.ends_with('-') {
            Some(format!("has the label `{label}`, which starts or ends with `-`"))
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(mismatch(
                format!("`{what}` `{}` is not a DNS domain: it {p}", s.escape_debug()),
                help,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["web", "web-0", "g_1.lab", "ä"] {
            assert_eq!(object_name(ok, "name"), Ok(()), "{ok}");
        }
        assert_eq!(
            object_name("a/b", "name").unwrap_err().summary,
            "`name` `a/b` contains `/`, which a name cannot hold"
        );
        assert_eq!(
            object_name("a\0b", "name").unwrap_err().summary,
            "`name` `a\\0b` contains `\\0`, which a name cannot hold"
        );
        assert!(object_name("..", "name").is_err());
        assert!(object_name("", "name").is_err());
        assert!(object_name(&"a".repeat(MAX_NAME_BYTES), "name").is_ok());
        assert_eq!(
            object_name(&"a".repeat(MAX_NAME_BYTES + 1), "name").unwrap_err().summary,
            "`name` is 129 bytes long, more than the 128 a name may have"
        );
    }

    #[test]
    fn disk_labels_and_volume_file_names() {
        assert!(disk_label("root").is_ok());
        assert!(disk_label("data.1").is_ok());
        assert_eq!(
            disk_label("../x").unwrap_err().summary,
            "the disk label `../x` contains `/`, which a volume's file name cannot hold"
        );
        assert_eq!(disk_label("a..b").unwrap_err().summary, "the disk label `a..b` contains `..`");
        assert!(disk_label("").is_err());
        // 128 + 1 + 120 + 6 bytes: 255.
        assert!(volume_file_name(&"g".repeat(128), &"d".repeat(120), "qcow2").is_ok());
        assert!(volume_file_name(&"g".repeat(128), &"d".repeat(121), "qcow2").is_err());
    }

    #[test]
    fn macs() {
        assert!(mac("52:54:00:12:34:56", "mac").is_ok());
        assert!(mac("52:54:00:AB:cd:EF", "mac").is_ok());
        for bad in [
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52-54-00-12-34-56",
            "5:54:00:12:34:56",
            "zz:54:00:12:34:56",
            "",
        ] {
            assert_eq!(mac(bad, "mac").unwrap_err().summary, format!("`mac` `{bad}` is not a MAC address"));
        }
        assert!(mac("01:00:5e:00:00:01", "mac").unwrap_err().summary.contains("multicast"));
        assert!(mac("ff:ff:ff:ff:ff:ff", "mac").is_err());
    }

    #[test]
    fn dns_domains() {
        for ok in ["lab", "lab.example", "a-1.b2", &format!("{}.x", "a".repeat(63))] {
            assert_eq!(dns_domain(ok, "domain"), Ok(()), "{ok}");
        }
        assert_eq!(
            dns_domain("a b", "domain").unwrap_err().summary,
            "`domain` `a b` is not a DNS domain: it contains ` `"
        );
        assert_eq!(
            dns_domain("lab.", "domain").unwrap_err().summary,
            "`domain` `lab.` is not a DNS domain: it has an empty label"
        );
        assert!(dns_domain("-lab", "domain").is_err());
        assert!(dns_domain("a<b>", "domain").is_err());
        assert!(dns_domain(&"a".repeat(64), "domain").unwrap_err().summary.contains("more than 63"));
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(dns_domain(&long, "domain").unwrap_err().summary.contains("more than the 253"));
    }
}
