//! Reading and writing libvirt XML with quick-xml.
//!
//! Reading: libvirt's documents are small (a few KiB), so they are parsed into a little element tree
//! ([`Element`]) that the callers walk by name; namespaces are resolved so nestform's metadata is found
//! by its namespace URI, whatever prefix libvirt (or a user's `virsh edit`) gave it.
//!
//! Writing: [`XmlWriter`] wraps quick-xml's writer with the three shapes libvirt XML is made of
//! (element with children, element with text, empty element); quick-xml does the escaping.

use std::io;

use nestform_types::owner::{METADATA_NAMESPACE, METADATA_PREFIX};
use nestform_types::Owner;
use quick_xml::events::{BytesText, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use quick_xml::Writer;

/// One element of a parsed document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Element {
    /// The namespace URI the element's prefix resolves to, if any.
    pub namespace: Option<String>,
    /// The local name (without prefix).
    pub name: String,
    pub attributes: Vec<(String, String)>,
    /// The element's own text, concatenated, entities resolved.
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// Parses a whole document and returns its root element.
    pub fn parse(xml: &str) -> Result<Element, String> {
        let mut reader = NsReader::from_str(xml);
        // A stack of open elements; the bottom one is a synthetic document node.
        let mut stack = vec![Element::default()];
        loop {
            let (ns, event) = reader.read_resolved_event().map_err(|e| e.to_string())?;
            let namespace = match ns {
                ResolveResult::Bound(ns) => Some(String::from_utf8_lossy(ns.into_inner()).into_owned()),
                _ => None,
            };
            match event {
                Event::Start(e) => stack.push(start(namespace, &e)?),
                Event::Empty(e) => {
                    let el = start(namespace, &e)?;
                    stack.last_mut().expect("document node").children.push(el);
                }
                Event::End(_) => {
                    let el = stack.pop().expect("quick-xml checks that end tags match");
                    stack.last_mut().ok_or("unbalanced end tag")?.children.push(el);
                }
                Event::Text(t) => {
                    let text = t.xml_content().map_err(|e| e.to_string())?;
                    stack.last_mut().expect("document node").text.push_str(&text);
                }
                Event::CData(t) => {
                    let text = t.decode().map_err(|e| e.to_string())?;
                    stack.last_mut().expect("document node").text.push_str(&text);
                }
                Event::GeneralRef(r) => {
                    let resolved = if r.is_char_ref() {
                        r.resolve_char_ref().map_err(|e| e.to_string())?.map(String::from)
                    } else {
                        let name = r.decode().map_err(|e| e.to_string())?;
                        quick_xml::escape::resolve_xml_entity(&name).map(String::from)
                    };
                    let text = resolved.ok_or("unknown entity reference")?;
                    stack.last_mut().expect("document node").text.push_str(&text);
                }
                Event::Eof => break,
                _ => {}
            }
        }
        let mut document = stack.pop().filter(|_| stack.is_empty()).ok_or("unclosed element")?;
        document.children.pop().ok_or_else(|| "empty document".to_string())
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The element at a path of child names below this one.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |el, n| el.child(n))
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The trimmed text of the child at `names`.
    pub fn text_at(&self, names: &[&str]) -> Option<&str> {
        self.path(names).map(|e| e.text.trim())
    }
}

fn start(namespace: Option<String>, e: &quick_xml::events::BytesStart<'_>) -> Result<Element, String> {
    let name = String::from_utf8_lossy(e.local_name().into_inner()).into_owned();
    let mut attributes = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
        attributes.push((key, value));
    }
    Ok(Element { namespace, name, attributes, ..Element::default() })
}

/// The owner in a domain's or network's `<metadata>`, found by nestform's namespace.
pub(crate) fn owner_of(root: &Element) -> Option<Owner> {
    let owner = root
        .child("metadata")?
        .children
        .iter()
        .find(|c| c.name == "owner" && c.namespace.as_deref() == Some(METADATA_NAMESPACE))?;
    Some(Owner {
        lineage: owner.child("lineage")?.text.clone(),
        address: owner.child("address")?.text.clone(),
    })
}

/// The writer libvirt XML is written with.
pub(crate) type XmlWriter = Writer<Vec<u8>>;

/// A writer for the indented XML libvirt itself prints.
pub(crate) fn writer() -> XmlWriter {
    Writer::new_with_indent(Vec::new(), b' ', 2)
}

/// The writer's text. quick-xml is only ever given `str`, so the bytes are UTF-8.
pub(crate) fn finish(w: XmlWriter) -> String {
    String::from_utf8(w.into_inner()).expect("the writer is given only `str`")
}

/// The three shapes libvirt XML is made of, plus nestform's metadata. The methods return
/// `io::Result` only because quick-xml's writer is generic over `io::Write`; a `Vec` does not fail.
pub(crate) trait XmlExt {
    /// `<name attrs>…children…</name>`.
    fn elem(
        &mut self,
        name: &str,
        attrs: &[(&str, &str)],
        children: impl FnOnce(&mut Self) -> io::Result<()>,
    ) -> io::Result<()>;
    /// `<name attrs>text</name>`, the text escaped.
    fn text(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> io::Result<()>;
    /// `<name attrs/>`.
    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> io::Result<()>;
    /// `<metadata>` holding nestform's owner element in its namespace.
    fn metadata(&mut self, owner: &Owner) -> io::Result<()>;
}

impl XmlExt for XmlWriter {
    fn elem(
        &mut self,
        name: &str,
        attrs: &[(&str, &str)],
        children: impl FnOnce(&mut Self) -> io::Result<()>,
    ) -> io::Result<()> {
        self.create_element(name).with_attributes(attrs.iter().copied()).write_inner_content(children)?;
        Ok(())
    }

    fn text(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> io::Result<()> {
        self.create_element(name)
            .with_attributes(attrs.iter().copied())
            .write_text_content(BytesText::new(text))?;
        Ok(())
    }

    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> io::Result<()> {
        self.create_element(name).with_attributes(attrs.iter().copied()).write_empty()?;
        Ok(())
    }

    /// Written here rather than with `Owner::to_xml` because a definition's XML must carry the
    /// namespace declaration itself (`to_xml` is for libvirt's set-metadata call, which adds it).
    fn metadata(&mut self, owner: &Owner) -> io::Result<()> {
        let tag = |local: &str| format!("{METADATA_PREFIX}:{local}");
        let xmlns = format!("xmlns:{METADATA_PREFIX}");
        self.elem("metadata", &[], |w| {
            w.elem(&tag("owner"), &[(&xmlns, METADATA_NAMESPACE)], |w| {
                w.text(&tag("lineage"), &[], &owner.lineage)?;
                w.text(&tag("address"), &[], &owner.address)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_attributes_text_and_namespaces() {
        let xml = r#"<domain type='kvm'>
  <name>a&amp;b &#65;</name>
  <metadata><x:owner xmlns:x="https://nestform.dev/xmlns/owner/1"><x:lineage>L</x:lineage><x:address>nested_guest.w["&lt;"]</x:address></x:owner></metadata>
  <devices><disk type='volume'><source pool='nestform' volume='g-root.qcow2'/></disk><disk type='file'/></devices>
</domain>"#;
        let root = Element::parse(xml).unwrap();
        assert_eq!(root.name, "domain");
        assert_eq!(root.attr("type"), Some("kvm"));
        assert_eq!(root.text_at(&["name"]), Some("a&b A"));
        assert_eq!(root.child("devices").unwrap().children("disk").count(), 2);
        assert_eq!(root.path(&["devices", "disk", "source"]).unwrap().attr("volume"), Some("g-root.qcow2"));
        assert_eq!(
            owner_of(&root),
            Some(Owner { lineage: "L".into(), address: "nested_guest.w[\"<\"]".into() })
        );
    }

    #[test]
    fn an_owner_in_another_namespace_is_not_nestforms() {
        let xml = r#"<network><metadata><x:owner xmlns:x="urn:other"><x:lineage>L</x:lineage><x:address>a</x:address></x:owner></metadata></network>"#;
        assert_eq!(owner_of(&Element::parse(xml).unwrap()), None);
        assert_eq!(owner_of(&Element::parse("<network/>").unwrap()), None);
    }

    #[test]
    fn written_metadata_reads_back() {
        let owner = Owner { lineage: "l&1".into(), address: r#"nested_guest.w["a<b>'c\"d"]"#.into() };
        let mut w = writer();
        w.elem("domain", &[("type", "test")], |w| {
            w.text("name", &[], "x")?;
            w.metadata(&owner)
        })
        .unwrap();
        let xml = finish(w);
        assert!(
            xml.contains("<nestform:owner xmlns:nestform=\"https://nestform.dev/xmlns/owner/1\">"),
            "{xml}"
        );
        assert_eq!(owner_of(&Element::parse(&xml).unwrap()), Some(owner));
    }

    #[test]
    fn malformed_xml_is_an_error() {
        assert!(Element::parse("<a><b></a>").is_err());
        assert!(Element::parse("").is_err());
    }
}
