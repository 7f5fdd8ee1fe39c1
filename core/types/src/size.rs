//! Byte sizes as people write them: `"4GiB"`, `"512MiB"`, `"36G"`, `"1TB"`, or a plain number of bytes.
//!
//! Binary units (`KiB`, `MiB`, `GiB`, `TiB`) and the short forms `K`, `M`, `G`, `T` (which qemu-img and
//! the article use, also binary) are accepted; decimal units (`KB`, `MB`, `GB`, `TB`) are powers of 1000.
//! A size is written back in the largest binary unit that divides it exactly, so `"4096MiB"` and
//! `"4GiB"` compare and display the same.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a size: {reason}")]
pub struct ByteSizeError {
    pub input: String,
    pub reason: &'static str,
}

const UNITS: [(&str, u64); 13] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("T", 1 << 40),
    ("G", 1 << 30),
    ("M", 1 << 20),
    ("K", 1 << 10),
    ("B", 1),
];

impl ByteSize {
    pub const fn bytes(self) -> u64 {
        self.0
    }
    pub const fn kib(n: u64) -> Self {
        ByteSize(n << 10)
    }
    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }
    pub const fn gib(n: u64) -> Self {
        ByteSize(n << 30)
    }
    /// Whole KiB, the unit libvirt's `<memory unit='KiB'>` uses.
    pub const fn as_kib(self) -> u64 {
        self.0 >> 10
    }
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ByteSizeError { input: input.to_string(), reason };
        let s = input.trim();
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        if digits_end == 0 {
            return Err(err("it must start with a whole number, like `4GiB` or `512MiB`"));
        }
        let n: u64 = s[..digits_end].parse().map_err(|_| err("the number is too large"))?;
        let unit = s[digits_end..].trim();
        let mult = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(u, _)| u.eq_ignore_ascii_case(unit) && (unit.len() > 1 || u.len() == 1))
                .map(|(_, m)| *m)
                .ok_or_else(|| {
                    err("the unit must be one of B, KiB, MiB, GiB, TiB (or K, M, G, T, KB, MB, GB, TB)")
                })?
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| err("the size is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, mult) in &UNITS[..4] {
            if self.0 != 0 && self.0.is_multiple_of(*mult) {
                return write!(f, "{}{unit}", self.0 / mult);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size such as \"4GiB\", \"512MiB\", \"36G\", or a number of bytes",
            "oneOf": [
                { "type": "string", "pattern": "^[0-9]+ *([KMGT]i?B?|[KMGT]B|B)?$" },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        assert_eq!("4GiB".parse::<ByteSize>().unwrap(), ByteSize::gib(4));
        assert_eq!("4096MiB".parse::<ByteSize>().unwrap().to_string(), "4GiB");
        assert_eq!("36G".parse::<ByteSize>().unwrap(), ByteSize::gib(36));
        assert_eq!("1GB".parse::<ByteSize>().unwrap(), ByteSize(1_000_000_000));
        assert_eq!("1000".parse::<ByteSize>().unwrap().to_string(), "1000B");
        assert_eq!("512 MiB".parse::<ByteSize>().unwrap().to_string(), "512MiB");
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "GiB", "4 parsecs", "-1G", "99999999999999999999"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
    }
}
