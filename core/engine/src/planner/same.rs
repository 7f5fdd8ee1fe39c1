//! Whether a spec already matches what state records, without serializing the spec.
//!
//! Most resources of a large plan are unchanged, and turning each spec into a `serde_json::Value`
//! only to find it equal to the state's was most of a plan's time. Here the spec is walked by serde
//! against the state's value: a serializer that produces nothing and stops at the first difference.
//! It follows what `serde_json::to_value` would produce (numbers by kind, unit variants as strings,
//! `None` as `null`), so "the same" here means "`to_value` would be equal". When it answers no, or
//! meets something it cannot compare without allocating, the planner takes the full attribute diff,
//! which stays the one source of truth about what changed.
//!
//! Written by hand: it is a few serde impls, and no well-kept crate compares a `Serialize` with a
//! `serde_json::Value` in place.

use std::fmt::{self, Display, Write as _};

use nestform_types::{ResourceSpec, ResourceType};
use serde::ser::{self, Impossible, Serialize};
use serde_json::{Map, Value};

use super::diff::{is_configured, TAG};

/// True when `spec`'s attributes equal the configured attributes in `state` (the state's computed
/// attributes and `type` tag aside): exactly when the attribute diff would be empty.
pub(crate) fn spec_matches_state(ty: ResourceType, spec: &ResourceSpec, state: &Map<String, Value>) -> bool {
    let top = Top { ty, map: state };
    let same = match spec {
        ResourceSpec::KvmHost(s) => s.serialize(top),
        ResourceSpec::NatNetwork(s) => s.serialize(top),
        ResourceSpec::NestedGuest(s) => s.serialize(top),
        ResourceSpec::Benchmark(s) => s.serialize(top),
    };
    same.is_ok()
}

/// Why a comparison stopped: a difference, or something only the full diff handles.
#[derive(Debug)]
pub(crate) struct Differs;

impl Display for Differs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the value differs")
    }
}

impl std::error::Error for Differs {}

impl ser::Error for Differs {
    fn custom<T: Display>(_: T) -> Self {
        Differs
    }
}

type R = Result<(), Differs>;

fn check(ok: bool) -> R {
    if ok {
        Ok(())
    } else {
        Err(Differs)
    }
}

/// Compares one value with `expected`, as `serde_json::to_value` would have produced it.
struct Same<'a>(&'a Value);

/// The spec itself: a struct whose fields are compared with the state's keys. The state may hold
/// more (computed attributes, the `type` tag), but no other configured attribute.
struct Top<'a> {
    ty: ResourceType,
    map: &'a Map<String, Value>,
}

/// The fields of a struct (or the entries of a map) against an object.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    /// `map` in its order, walked alongside the fields.
    order: serde_json::map::Iter<'a>,
    /// Every field so far was the next key of `order`.
    in_order: bool,
    /// How many fields were compared (each found in `map`).
    seen: usize,
    /// For the spec itself: the resource type whose computed attributes `map` may also hold.
    top: Option<ResourceType>,
    /// A map's key, between `serialize_key` and `serialize_value`.
    key: Option<String>,
}

/// The elements of a sequence against an array.
struct Items<'a> {
    items: &'a [Value],
    next: usize,
}

/// `{"Variant": ...}`: the single key of an externally tagged enum variant.
fn variant<'a>(expected: &'a Value, name: &str) -> Result<&'a Value, Differs> {
    match expected.as_object() {
        Some(m) if m.len() == 1 => m.get(name).ok_or(Differs),
        _ => Err(Differs),
    }
}

impl<'a> Fields<'a> {
    fn new(expected: &'a Value, top: Option<ResourceType>) -> Result<Self, Differs> {
        let map = expected.as_object().ok_or(Differs)?;
        Ok(Fields { map, order: map.iter(), in_order: true, seen: 0, top, key: None })
    }

    /// The spec's own fields against the state's attributes. A `type` tag first is no attribute.
    fn top(ty: ResourceType, map: &'a Map<String, Value>) -> Self {
        let mut order = map.iter();
        if map.keys().next().is_some_and(|k| k == TAG) {
            order.next();
        }
        Fields { map, order, in_order: true, seen: 0, top: Some(ty), key: None }
    }

    fn field<T: ?Sized + Serialize>(&mut self, key: &str, value: &T) -> R {
        // State is written in the spec's field order, so the key is usually at the same position.
        let expected = match self.order.next() {
            Some((k, v)) if self.in_order && k == key => v,
            _ => {
                self.in_order = false;
                self.map.get(key).ok_or(Differs)?
            }
        };
        value.serialize(Same(expected))?;
        self.seen += 1;
        Ok(())
    }

    fn end(self) -> R {
        match self.top {
            // Nothing more than the fields.
            None => check(self.seen == self.map.len()),
            // The diff compares the spec's fields (all equal) and every configured attribute only in
            // state: what follows the fields must be computed attributes (or the tag). State in
            // another order than the spec's is rare, and left to the full diff.
            Some(ty) => {
                check(self.in_order)?;
                let mut rest = self.order;
                check(rest.all(|(k, _)| !is_configured(ty, k)))
            }
        }
    }
}

impl<'a> ser::Serializer for Same<'a> {
    type Ok = ();
    type Error = Differs;
    type SerializeSeq = Items<'a>;
    type SerializeTuple = Items<'a>;
    type SerializeTupleStruct = Items<'a>;
    type SerializeTupleVariant = Items<'a>;
    type SerializeMap = Fields<'a>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = Fields<'a>;

    fn serialize_bool(self, v: bool) -> R {
        check(self.0.as_bool() == Some(v))
    }
    fn serialize_i8(self, v: i8) -> R {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> R {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> R {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> R {
        match u64::try_from(v) {
            Ok(u) => self.serialize_u64(u),
            // serde_json keeps negative integers apart from unsigned and floating ones.
            Err(_) => check(self.0.as_number().is_some_and(|n| !n.is_u64() && n.as_i64() == Some(v))),
        }
    }
    fn serialize_u8(self, v: u8) -> R {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> R {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> R {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> R {
        check(self.0.as_number().is_some_and(|n| n.is_u64() && n.as_u64() == Some(v)))
    }
    fn serialize_f32(self, v: f32) -> R {
        check(serde_json::to_value(v).is_ok_and(|x| &x == self.0))
    }
    fn serialize_f64(self, v: f64) -> R {
        check(serde_json::to_value(v).is_ok_and(|x| &x == self.0))
    }
    fn serialize_char(self, v: char) -> R {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> R {
        check(self.0.as_str() == Some(v))
    }
    fn serialize_bytes(self, v: &[u8]) -> R {
        let items = self.0.as_array().ok_or(Differs)?;
        check(items.len() == v.len() && items.iter().zip(v).all(|(i, b)| i.as_u64() == Some(u64::from(*b))))
    }
    fn serialize_none(self) -> R {
        check(self.0.is_null())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        check(self.0.is_null())
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        check(self.0.is_null())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> R {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> R {
        value.serialize(Same(self::variant(self.0, variant)?))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Items<'a>, Differs> {
        let items = self.0.as_array().ok_or(Differs)?;
        Ok(Items { items, next: 0 })
    }
    fn serialize_tuple(self, len: usize) -> Result<Items<'a>, Differs> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Items<'a>, Differs> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Items<'a>, Differs> {
        Same(self::variant(self.0, variant)?).serialize_seq(Some(len))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Fields<'a>, Differs> {
        Fields::new(self.0, None)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Fields<'a>, Differs> {
        Fields::new(self.0, None)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Fields<'a>, Differs> {
        Fields::new(self::variant(self.0, variant)?, None)
    }
    fn collect_str<T: ?Sized + Display>(self, value: &T) -> R {
        // Written piece by piece against the expected string, so `Display` values need no buffer.
        struct Rest<'s>(&'s str);
        impl fmt::Write for Rest<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0 = self.0.strip_prefix(s).ok_or(fmt::Error)?;
                Ok(())
            }
        }
        let mut rest = Rest(self.0.as_str().ok_or(Differs)?);
        check(write!(rest, "{value}").is_ok() && rest.0.is_empty())
    }
}

impl<'a> ser::Serializer for Top<'a> {
    type Ok = ();
    type Error = Differs;
    type SerializeSeq = Impossible<(), Differs>;
    type SerializeTuple = Impossible<(), Differs>;
    type SerializeTupleStruct = Impossible<(), Differs>;
    type SerializeTupleVariant = Impossible<(), Differs>;
    type SerializeMap = Impossible<(), Differs>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = Impossible<(), Differs>;

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Fields<'a>, Differs> {
        Ok(Fields::top(self.ty, self.map))
    }

    // A spec is a struct; anything else is for the full diff.
    fn serialize_bool(self, _: bool) -> R {
        Err(Differs)
    }
    fn serialize_i8(self, _: i8) -> R {
        Err(Differs)
    }
    fn serialize_i16(self, _: i16) -> R {
        Err(Differs)
    }
    fn serialize_i32(self, _: i32) -> R {
        Err(Differs)
    }
    fn serialize_i64(self, _: i64) -> R {
        Err(Differs)
    }
    fn serialize_u8(self, _: u8) -> R {
        Err(Differs)
    }
    fn serialize_u16(self, _: u16) -> R {
        Err(Differs)
    }
    fn serialize_u32(self, _: u32) -> R {
        Err(Differs)
    }
    fn serialize_u64(self, _: u64) -> R {
        Err(Differs)
    }
    fn serialize_f32(self, _: f32) -> R {
        Err(Differs)
    }
    fn serialize_f64(self, _: f64) -> R {
        Err(Differs)
    }
    fn serialize_char(self, _: char) -> R {
        Err(Differs)
    }
    fn serialize_str(self, _: &str) -> R {
        Err(Differs)
    }
    fn serialize_bytes(self, _: &[u8]) -> R {
        Err(Differs)
    }
    fn serialize_none(self) -> R {
        Err(Differs)
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> R {
        Err(Differs)
    }
    fn serialize_unit(self) -> R {
        Err(Differs)
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Err(Differs)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Err(Differs)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, _: &T) -> R {
        Err(Differs)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> R {
        Err(Differs)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Differs> {
        Err(Differs)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Differs> {
        Err(Differs)
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Differs> {
        Err(Differs)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Differs> {
        Err(Differs)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Differs> {
        Err(Differs)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Differs> {
        Err(Differs)
    }
}

impl ser::SerializeSeq for Items<'_> {
    type Ok = ();
    type Error = Differs;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        let expected = self.items.get(self.next).ok_or(Differs)?;
        value.serialize(Same(expected))?;
        self.next += 1;
        Ok(())
    }
    fn end(self) -> R {
        check(self.next == self.items.len())
    }
}

impl ser::SerializeTuple for Items<'_> {
    type Ok = ();
    type Error = Differs;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> R {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Items<'_> {
    type Ok = ();
    type Error = Differs;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> R {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for Items<'_> {
    type Ok = ();
    type Error = Differs;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> R {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeMap for Fields<'_> {
    type Ok = ();
    type Error = Differs;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> R {
        // serde_json writes string keys as they are and number or bool keys as their text.
        self.key = Some(match serde_json::to_value(key).map_err(|_| Differs)? {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(Differs),
        });
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        let key = self.key.take().ok_or(Differs)?;
        self.field(&key, value)
    }
    fn end(self) -> R {
        Fields::end(self)
    }
}

impl ser::SerializeStruct for Fields<'_> {
    type Ok = ();
    type Error = Differs;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> R {
        self.field(key, value)
    }
    fn end(self) -> R {
        Fields::end(self)
    }
}

impl ser::SerializeStructVariant for Fields<'_> {
    type Ok = ();
    type Error = Differs;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> R {
        self.field(key, value)
    }
    fn end(self) -> R {
        Fields::end(self)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::planner::diff::diff;
    use crate::planner::tests::{guest_spec, three_levels};

    /// What the full diff says, for comparison.
    fn by_diff(ty: ResourceType, spec: &ResourceSpec, state: &Map<String, Value>) -> bool {
        diff(ty, state, &spec.attributes()).is_empty()
    }

    fn same<T: Serialize>(v: &T, expected: Value) -> bool {
        v.serialize(Same(&expected)).is_ok()
    }

    #[test]
    fn agrees_with_to_value() {
        assert!(same(&1u32, json!(1)) && same(&-3i64, json!(-3)) && same(&1.5f64, json!(1.5)));
        assert!(!same(&1u32, json!(1.0)) && !same(&1u32, json!("1")) && !same(&-3i64, json!(3)));
        assert!(same(&Some("a"), json!("a")) && same(&None::<u8>, json!(null)));
        assert!(same(&vec![1, 2], json!([1, 2])) && !same(&vec![1, 2], json!([1, 2, 3])));
        assert!(!same(&vec![1, 2], json!([2, 1])));
        let map: std::collections::BTreeMap<&str, u8> = [("a", 1), ("b", 2)].into();
        assert!(same(&map, json!({"b": 2, "a": 1})) && !same(&map, json!({"a": 1})));
        assert!(!same(&map, json!({"a": 1, "b": 2, "c": 3})));
        assert!(same(&nestform_types::ByteSize::mib(512), json!("512MiB")));
        assert!(!same(&nestform_types::ByteSize::mib(512), json!("512MiBx")));
        assert!(!same(&nestform_types::ByteSize::mib(512), json!("512")));
        assert!(same(&nestform_types::DiskFormat::Qcow2, json!("qcow2")));
    }

    #[test]
    fn agrees_with_the_diff_on_specs() {
        let conf = three_levels();
        let state = conf.applied();
        for (addr, spec, _) in &conf.0 {
            let attrs = state.resources[addr].attributes.as_object().unwrap();
            assert!(spec_matches_state(addr.ty, spec, attrs), "{addr}");
            assert!(by_diff(addr.ty, spec, attrs));
            // A `type` tag first and computed attributes after change nothing.
            let mut tagged = Map::new();
            tagged.insert("type".into(), json!(addr.ty.as_str()));
            tagged.extend(attrs.iter().map(|(k, v)| (k.clone(), v.clone())));
            tagged.insert("mac_addresses".into(), json!([]));
            assert!(spec_matches_state(addr.ty, spec, &tagged), "{addr}");
            // Another order is left to the diff, which finds nothing either.
            let reversed: Map<String, Value> =
                attrs.iter().rev().map(|(k, v)| (k.clone(), v.clone())).collect();
            assert!(!spec_matches_state(addr.ty, spec, &reversed) || attrs.len() < 2, "{addr}");
            assert!(by_diff(addr.ty, spec, &reversed));
        }
        let ty = ResourceType::NestedGuest;
        let spec = ResourceSpec::NestedGuest(guest_spec("g", "kvm_host.l0"));
        let base = spec.attributes();
        let variants: &[fn(&mut Map<String, Value>)] = &[
            |m| drop(m.insert("vcpus".into(), json!(2))),
            |m| drop(m.insert("memory".into(), json!("1GiB"))),
            |m| drop(m.remove("running")),
            |m| drop(m.insert("install".into(), json!({"lab": {}}))),
            |m| m["disks"][0]["size"] = json!("9GiB"),
            |m| drop(m["disks"][0].as_object_mut().map(|d| d.remove("bus"))),
            |m| m["disks"].as_array_mut().unwrap().push(json!({"name": "b"})),
            |m| drop(m.insert("networks".into(), json!([]))),
            |m| drop(m.insert("mac_addresses".into(), json!([]))),
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut state = base.clone();
            change(&mut state);
            assert_eq!(spec_matches_state(ty, &spec, &state), by_diff(ty, &spec, &state), "variant {i}");
        }
    }
}
