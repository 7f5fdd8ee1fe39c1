//! Turning evaluated HCL values into typed spec fields, with messages that say what was expected.

use std::net::Ipv4Addr;

use hcl::Value;
use ipnet::Ipv4Net;
use nestform_types::ByteSize;

/// Why a value does not fit: the message and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub summary: String,
    pub help: String,
}

fn mismatch(summary: String, help: impl Into<String>) -> Mismatch {
    Mismatch { summary, help: help.into() }
}

/// The type name of a value as the language calls it.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

pub fn whole_number(v: &Value, name: &str, min: u64) -> Result<u64, Mismatch> {
    let n = match v {
        Value::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
        }
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if n >= min => Ok(n),
        Some(n) => Err(mismatch(
            format!("`{name}` must be at least {min}, got {n}"),
            format!("set `{name} = {min}` or more"),
        )),
        None => Err(mismatch(
            format!("`{name}` must be a whole number, got {}", describe(v)),
            format!("write a number without quotes, like `{name} = {}`", min.max(1)),
        )),
    }
}

pub fn u32_number(v: &Value, name: &str, min: u64) -> Result<u32, Mismatch> {
    let n = whole_number(v, name, min)?;
    u32::try_from(n).map_err(|_| mismatch(format!("`{name}` is too large: {n}"), "use a smaller number"))
}

pub fn boolean(v: &Value, name: &str) -> Result<bool, Mismatch> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
        _ => Err(mismatch(
            format!("`{name}` must be a bool, got {}", describe(v)),
            format!("write `{name} = true` or `{name} = false`"),
        )),
    }
}

pub fn string(v: &Value, name: &str) -> Result<String, Mismatch> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(mismatch(
            format!("`{name}` must be a string, got {}", describe(v)),
            format!("write a quoted string, like `{name} = \"...\"`"),
        )),
    }
}

pub fn size(v: &Value, name: &str) -> Result<ByteSize, Mismatch> {
    match v {
        Value::Number(n) if n.as_u64().is_some() => Ok(ByteSize(n.as_u64().unwrap())),
        Value::String(s) => s.parse::<ByteSize>().map_err(|e| {
            mismatch(
                format!("`{name}` `{s}` is not a size: {}", e.reason),
                "write a size like `\"4GiB\"`, `\"512MiB\"` or `\"36G\"`",
            )
        }),
        _ => Err(mismatch(
            format!("`{name}` must be a size, got {}", describe(v)),
            "write a size like `\"4GiB\"`",
        )),
    }
}

/// A size of more than zero bytes, such as a guest's memory or a disk's size.
pub fn nonzero_size(v: &Value, name: &str) -> Result<ByteSize, Mismatch> {
    let size = size(v, name)?;
    if size.bytes() == 0 {
        return Err(mismatch(
            format!("`{name}` must be more than 0 bytes, got {}", describe(v)),
            "write a size like `\"4GiB\"`",
        ));
    }
    Ok(size)
}

/// A list whose elements `conv` converts, each named `NAME[i]` in messages.
pub fn list<T>(
    v: &Value,
    name: &str,
    conv: impl Fn(&Value, &str) -> Result<T, Mismatch>,
) -> Result<Vec<T>, Mismatch> {
    match v {
        Value::Array(items) => {
            items.iter().enumerate().map(|(i, item)| conv(item, &format!("{name}[{i}]"))).collect()
        }
        _ => Err(mismatch(
            format!("`{name}` must be a list, got {}", describe(v)),
            format!("write `{name} = [...]`"),
        )),
    }
}

/// One of a fixed set of words, such as a disk `cache` mode.
pub fn word<T>(v: &Value, name: &str, words: &[&str], parse: fn(&str) -> Option<T>) -> Result<T, Mismatch> {
    let s = string(v, name)?;
    parse(&s).ok_or_else(|| {
        let list = crate::suggest::quoted_list(words.iter().copied());
        let help = match crate::suggest::nearest(&s, words.iter().copied()) {
            Some(n) => format!("did you mean `{n}`? use one of {list}"),
            None => format!("use one of {list}"),
        };
        mismatch(format!("`{name}` must be one of {list}, got `{s}`"), help)
    })
}

pub fn cidr(v: &Value, name: &str) -> Result<Ipv4Net, Mismatch> {
    let s = string(v, name)?;
    let net: Ipv4Net = s.parse().map_err(|_| {
        mismatch(
            format!("`{name}` is not an IPv4 CIDR: `{s}`"),
            "write an address and prefix length, like `\"192.168.100.0/24\"`",
        )
    })?;
    if net.prefix_len() > 30 {
        return Err(mismatch(
            format!("`{name}` `{s}` is too small for a network"),
            "use a prefix of /30 or shorter, like `/24`",
        ));
    }
    if net.addr() != net.network() {
        return Err(mismatch(
            format!("`{name}` `{s}` has host bits set"),
            format!("write the network address: `\"{}\"`", net.trunc()),
        ));
    }
    Ok(net)
}

pub fn ipv4(v: &Value, name: &str) -> Result<Ipv4Addr, Mismatch> {
    let s = string(v, name)?;
    s.parse().map_err(|_| {
        mismatch(
            format!("`{name}` is not an IPv4 address: `{s}`"),
            "write an address like `\"192.168.100.10\"`",
        )
    })
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string `\"{s}\"`"),
        Value::Number(n) => format!("number `{n}`"),
        Value::Bool(b) => format!("bool `{b}`"),
        other => type_name(other).to_string(),
    }
}

/// Converts an HCL value to JSON.
pub fn to_json(v: &Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Converts JSON to an HCL value.
pub fn from_json(v: &serde_json::Value) -> Value {
    hcl::to_value(v).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_words() {
        assert_eq!(whole_number(&Value::from(2u64), "vcpus", 1), Ok(2));
        let e = whole_number(&Value::from("two"), "vcpus", 1).unwrap_err();
        assert_eq!(e.summary, "`vcpus` must be a whole number, got string `\"two\"`");
        assert!(whole_number(&Value::from(0u64), "vcpus", 1).is_err());
        let e = word(&Value::from("fast"), "cache", &["none", "unsafe"], |_| None::<()>).unwrap_err();
        assert!(e.summary.contains("`none`, `unsafe`"), "{}", e.summary);
    }

    #[test]
    fn cidrs() {
        assert!(cidr(&Value::from("10.0.0.0/24"), "cidr").is_ok());
        assert!(cidr(&Value::from("10.0.0.1/24"), "cidr").unwrap_err().help.contains("10.0.0.0/24"));
        assert!(cidr(&Value::from("10.0.0/24"), "cidr").is_err());
    }
}
