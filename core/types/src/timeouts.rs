//! `timeouts { create, update, delete }` on a resource, as Terraform has them: how long each
//! operation may take before nestform gives up on it. An unset one takes nestform's default for the
//! resource's nesting level and the acceleration of the levels below it.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The operation limits written in a resource's `timeouts` block, as written (`"30m"`, `"1h30m"`,
/// `"90s"`: Terraform's duration strings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// From defining a guest to its agent answering (a lab guest booted and ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<String>,
    /// A restart for an update: the graceful shutdown, and the start until the agent answers again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
    /// The delete on the guest's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<String>,
}

impl Timeouts {
    /// The operation names a `timeouts` block takes.
    pub const OPERATIONS: [&'static str; 3] = ["create", "update", "delete"];

    pub fn is_empty(&self) -> bool {
        self.create.is_none() && self.update.is_none() && self.delete.is_none()
    }

    /// The limit written for `create`, when it parses (configuration checks it; see [`parse_duration`]).
    pub fn create(&self) -> Option<Duration> {
        self.create.as_deref().and_then(|s| parse_duration(s).ok())
    }

    pub fn update(&self) -> Option<Duration> {
        self.update.as_deref().and_then(|s| parse_duration(s).ok())
    }

    pub fn delete(&self) -> Option<Duration> {
        self.delete.as_deref().and_then(|s| parse_duration(s).ok())
    }
}

/// A duration as Terraform writes them: `"30s"`, `"10m"`, `"2h"`, `"1h30m"`. At least a second and
/// at most a week: a limit of 0 would fail everything, and one of years is no limit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        format!("`{s}` is not a duration ({e}); write one like \"30m\", \"1h30m\" or \"90s\"")
    })?;
    if d < Duration::from_secs(1) {
        return Err(format!("`{s}` is less than a second; an operation needs at least \"1s\""));
    }
    if d > Duration::from_secs(7 * 24 * 3600) {
        return Err(format!("`{s}` is more than a week (\"168h\"); that is no limit at all"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terraform_durations_parse() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn nonsense_zero_and_forever_are_refused() {
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
        assert!(parse_duration("0s").unwrap_err().contains("less than a second"));
        assert!(parse_duration("10000h").unwrap_err().contains("more than a week"));
        assert!(parse_duration("30").is_err(), "a bare number has no unit");
    }
}
