//! Who owns a libvirt object: nestform writes this into the `<metadata>` of every domain and network it
//! creates, so that `virsh dumpxml` shows which state (lineage) and which resource address it belongs to,
//! and so that nestform can find its own objects again (orphans after a killed apply, drift).

use serde::{Deserialize, Serialize};

/// The XML namespace of nestform's metadata element.
pub const METADATA_NAMESPACE: &str = "https://nestform.dev/xmlns/owner/1";
/// The prefix used for that namespace in libvirt XML (`<nestform:owner>`).
pub const METADATA_PREFIX: &str = "nestform";

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Owner {
    /// The lineage of the state file that manages the object.
    pub lineage: String,
    /// The resource address, such as `nested_guest.guest1`.
    pub address: String,
}

impl Owner {
    /// The element that goes inside libvirt's `<metadata>` (without the namespace declaration, which
    /// libvirt adds from the key and URI it is given).
    pub fn to_xml(&self) -> String {
        format!(
            "<owner><lineage>{}</lineage><address>{}</address></owner>",
            xml_escape(&self.lineage),
            xml_escape(&self.address)
        )
    }

    /// Reads an owner back from the XML `to_xml` wrote (as returned by libvirt, with any prefix).
    pub fn from_xml(xml: &str) -> Option<Owner> {
        fn field(xml: &str, tag: &str) -> Option<String> {
            let start = xml.find(&format!("{tag}>"))? + tag.len() + 1;
            let end = start + xml[start..].find("</")?;
            Some(xml_unescape(&xml[start..end]))
        }
        Some(Owner { lineage: field(xml, "lineage")?, address: field(xml, "address")? })
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn xml_unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_xml() {
        let o = Owner { lineage: "abc".into(), address: "nat_network.lan[\"a<b\"]".into() };
        let xml = o.to_xml().replace("<", "<nestform:").replace("<nestform:/", "</nestform:");
        assert_eq!(Owner::from_xml(&xml), Some(o));
    }
}
