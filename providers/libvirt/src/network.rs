//! Network XML: a NAT network with DHCP and nestform's owner, and what is read back from libvirt.

use std::io;

use nestform_provider::NetworkRequest;
use nestform_types::Owner;

use crate::xml::{finish, owner_of, writer, Element, XmlExt};

/// The XML `create_network` defines.
pub(crate) fn network_xml(req: &NetworkRequest, owner: &Owner) -> String {
    let mut w = writer();
    let written: io::Result<()> = w.elem("network", &[], |w| {
        w.text("name", &[], &req.name)?;
        w.metadata(owner)?;
        w.empty("forward", &[("mode", "nat")])?;
        if let Some(domain) = &req.domain {
            w.empty("domain", &[("name", domain)])?;
        }
        let address = req.address.to_string();
        let prefix = req.prefix_len.to_string();
        w.elem("ip", &[("address", &address), ("prefix", &prefix)], |w| {
            match (req.dhcp_start, req.dhcp_end) {
                (Some(start), Some(end)) => w.elem("dhcp", &[], |w| {
                    w.empty("range", &[("start", &start.to_string()), ("end", &end.to_string())])
                }),
                _ => Ok(()),
            }
        })
    });
    written.expect("writing to memory does not fail");
    finish(w)
}

/// What nestform reads back from a network's XML.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NetworkFacts {
    pub name: String,
    pub bridge: Option<String>,
    pub owner: Option<Owner>,
}

pub(crate) fn parse_network(xml: &str) -> Result<NetworkFacts, String> {
    let root = Element::parse(xml)?;
    Ok(NetworkFacts {
        name: root.text_at(&["name"]).ok_or("no `<name>`")?.to_string(),
        bridge: root.child("bridge").and_then(|b| b.attr("name")).map(String::from),
        owner: owner_of(&root),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> NetworkRequest {
        NetworkRequest {
            name: "lan".into(),
            address: "10.10.0.1".parse().unwrap(),
            prefix_len: 24,
            dhcp_start: Some("10.10.0.2".parse().unwrap()),
            dhcp_end: Some("10.10.0.254".parse().unwrap()),
            domain: Some("lab".into()),
        }
    }

    #[test]
    fn writes_a_nat_network_with_dhcp() {
        let owner = Owner { lineage: "lin".into(), address: "nat_network.lan".into() };
        let expected = r#"<network>
  <name>lan</name>
  <metadata>
    <nestform:owner xmlns:nestform="https://nestform.dev/xmlns/owner/1">
      <nestform:lineage>lin</nestform:lineage>
      <nestform:address>nat_network.lan</nestform:address>
    </nestform:owner>
  </metadata>
  <forward mode="nat"/>
  <domain name="lab"/>
  <ip address="10.10.0.1" prefix="24">
    <dhcp>
      <range start="10.10.0.2" end="10.10.0.254"/>
    </dhcp>
  </ip>
</network>"#;
        assert_eq!(network_xml(&request(), &owner), expected);
    }

    #[test]
    fn no_dhcp_without_a_range() {
        let mut req = request();
        req.dhcp_end = None;
        req.domain = None;
        let xml = network_xml(&req, &Owner { lineage: "l".into(), address: "a".into() });
        assert!(!xml.contains("dhcp") && !xml.contains("<domain"), "{xml}");
    }

    #[test]
    fn reads_libvirts_rendering() {
        let xml = "<network>\n  <name>default</name>\n  <uuid>x</uuid>\n  <bridge name='virbr0' stp='on'/>\n</network>";
        let facts = parse_network(xml).unwrap();
        assert_eq!(
            facts,
            NetworkFacts { name: "default".into(), bridge: Some("virbr0".into()), owner: None }
        );
    }
}
