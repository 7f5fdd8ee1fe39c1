//! Resource addresses: `TYPE.NAME` with an optional instance key (`[0]` for `count`, `["k"]` for
//! `for_each`). The block type is the resource type; there is no `resource` wrapper.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The four kinds of resource the language knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    KvmHost,
    NatNetwork,
    NestedGuest,
    Benchmark,
}

impl ResourceType {
    pub const ALL: [ResourceType; 4] =
        [ResourceType::KvmHost, ResourceType::NatNetwork, ResourceType::NestedGuest, ResourceType::Benchmark];

    /// The block type as written in configuration: `kvm_host`, `nat_network`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::KvmHost => "kvm_host",
            ResourceType::NatNetwork => "nat_network",
            ResourceType::NestedGuest => "nested_guest",
            ResourceType::Benchmark => "benchmark",
        }
    }

    pub fn parse(s: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ResourceType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ResourceType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ResourceType::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown resource type `{s}`")))
    }
}

impl schemars::JsonSchema for ResourceType {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ResourceType".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "enum": ["kvm_host", "nat_network", "nested_guest", "benchmark"]
        })
    }
}

/// The key of one instance of a block that uses `count` (an index) or `for_each` (a string key).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InstanceKey {
    Int(u64),
    Str(String),
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceKey::Int(i) => write!(f, "[{i}]"),
            InstanceKey::Str(s) => write!(f, "[{}]", serde_json::to_string(s).unwrap()),
        }
    }
}

/// The address of one resource instance: `nested_guest.guest1`, `nested_guest.web[0]`,
/// `nat_network.lan["a"]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceAddr {
    pub ty: ResourceType,
    pub name: String,
    pub key: Option<InstanceKey>,
}

impl ResourceAddr {
    pub fn new(ty: ResourceType, name: impl Into<String>) -> Self {
        ResourceAddr { ty, name: name.into(), key: None }
    }

    pub fn with_key(mut self, key: InstanceKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The address without its instance key: what `-target nested_guest.web` names.
    pub fn block(&self) -> ResourceAddr {
        ResourceAddr { ty: self.ty, name: self.name.clone(), key: None }
    }

    /// True when `self` names `other`: equal, or `self` has no key and names `other`'s block.
    pub fn contains(&self, other: &ResourceAddr) -> bool {
        self.ty == other.ty && self.name == other.name && (self.key.is_none() || self.key == other.key)
    }

    /// A string usable inside libvirt object names: `web`, `web-0`, `web-a`.
    pub fn object_name(&self) -> String {
        match &self.key {
            None => self.name.clone(),
            Some(InstanceKey::Int(i)) => format!("{}-{i}", self.name),
            Some(InstanceKey::Str(s)) => format!("{}-{s}", self.name),
        }
    }
}

impl fmt::Display for ResourceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ty, self.name)?;
        if let Some(k) = &self.key {
            write!(f, "{k}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a resource address: {reason}")]
pub struct AddrParseError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for ResourceAddr {
    type Err = AddrParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| AddrParseError { input: input.to_string(), reason };
        let (head, key) = match input.find('[') {
            Some(i) => {
                let rest = &input[i..];
                if !rest.ends_with(']') {
                    return Err(err("an instance key must end with `]`"));
                }
                let inner = &rest[1..rest.len() - 1];
                let key = if let Ok(n) = inner.parse::<u64>() {
                    InstanceKey::Int(n)
                } else if inner.starts_with('"') {
                    InstanceKey::Str(
                        serde_json::from_str::<String>(inner)
                            .map_err(|_| err("a string key must be a quoted string"))?,
                    )
                } else {
                    return Err(err("an instance key is a number or a quoted string"));
                };
                (&input[..i], Some(key))
            }
            None => (input, None),
        };
        let (ty, name) =
            head.split_once('.').ok_or_else(|| err("expected TYPE.NAME, like `nested_guest.guest1`"))?;
        let ty = ResourceType::parse(ty).ok_or_else(|| {
            err("the type must be one of `kvm_host`, `nat_network`, `nested_guest`, `benchmark`")
        })?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(err("a name has only letters, digits, `_` and `-`"));
        }
        Ok(ResourceAddr { ty, name: name.to_string(), key })
    }
}

impl Serialize for ResourceAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for ResourceAddr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ResourceAddr".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A resource address such as `nested_guest.guest1` or `nested_guest.web[0]`",
            "pattern": "^(kvm_host|nat_network|nested_guest|benchmark)\\.[A-Za-z0-9_-]+(\\[(\\d+|\".*\")\\])?$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in ["nested_guest.g1", "nested_guest.web[3]", "nat_network.lan[\"a b\"]", "kvm_host.l0"] {
            let a: ResourceAddr = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_addresses() {
        assert!("guest1".parse::<ResourceAddr>().is_err());
        assert!("resource.g1".parse::<ResourceAddr>().is_err());
        assert!("nested_guest.g1[".parse::<ResourceAddr>().is_err());
        assert!("nested_guest.g1[x]".parse::<ResourceAddr>().is_err());
    }

    #[test]
    fn block_contains_instances() {
        let block: ResourceAddr = "nested_guest.web".parse().unwrap();
        let inst: ResourceAddr = "nested_guest.web[1]".parse().unwrap();
        assert!(block.contains(&inst));
        assert!(!inst.contains(&block));
        assert_eq!(inst.object_name(), "web-1");
    }
}
