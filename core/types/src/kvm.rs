//! KVM vendor module options (`kvm_module_options`), as configuration writes them and as the module's
//! `/sys/module/<module>/parameters` shows them. One definition for every place that compares or sets
//! them (the planner, the libvirt provider at level 0, lab guests at deeper levels), so they agree on
//! what is a change.

use std::collections::BTreeMap;

/// A parameter value in configuration's spelling: booleans read back as `Y`/`N` where configuration
/// writes `1`/`0`, so `Y`/`y`/`true` is `1` and `N`/`n`/`false` is `0`; anything else, trimmed.
pub fn normalize(value: &str) -> &str {
    match value.trim() {
        "Y" | "y" | "true" => "1",
        "N" | "n" | "false" => "0",
        other => other,
    }
}

/// Whether `name = value` can be a module option: a name of letters, digits and `_`, and a value with
/// no white space or control characters, so that each option is one `NAME=VALUE` word for `modprobe`
/// and `insmod`.
pub fn is_option(name: &str, value: &str) -> bool {
    let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let value_ok = !value.is_empty() && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    name_ok && value_ok
}

/// The first option of `options` that is not [one word](is_option), as `(name, value)`: refused
/// before anything is read or touched, at every level.
pub fn first_malformed(options: &BTreeMap<String, String>) -> Option<(&String, &String)> {
    options.iter().find(|(name, value)| !is_option(name, value))
}

/// The first option of `options` that the module (whose parameters are `current`) does not have,
/// with the list of those it has (`` `a`, `b` ``): refused before a reload, which would unload the
/// module for nothing.
pub fn first_unknown(
    options: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
) -> Option<(String, String)> {
    let name = options.keys().find(|n| !current.contains_key(*n))?;
    let known = current.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
    Some((name.clone(), known))
}

/// `` `name` `now` -> `wanted` `` for every option of `options` whose value `current` (the module's
/// parameters) does not have; `(unset)` for a parameter the module does not show.
pub fn changes(options: &BTreeMap<String, String>, current: &BTreeMap<String, String>) -> Vec<String> {
    options
        .iter()
        .filter_map(|(name, wanted)| {
            let now = current.get(name).map(String::as_str);
            (now.map(normalize) != Some(normalize(wanted)))
                .then(|| format!("`{name}` `{}` -> `{wanted}`", now.unwrap_or("(unset)")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn booleans_compare_in_either_spelling() {
        let now = opts(&[("nested", "Y"), ("npt", "N"), ("pause_filter_thresh", "128")]);
        assert!(changes(&opts(&[("nested", "1"), ("npt", "false")]), &now).is_empty());
        assert_eq!(
            changes(&opts(&[("pause_filter_thresh", "0"), ("vls", "1")]), &now),
            ["`pause_filter_thresh` `128` -> `0`", "`vls` `(unset)` -> `1`"]
        );
        assert_eq!(normalize(" 7 \n"), "7");
    }

    #[test]
    fn options_are_one_word_each() {
        assert!(is_option("halt_poll_ns", "0") && is_option("nested", "Y"));
        assert!(!is_option("", "1") && !is_option("a-b", "1") && !is_option("npt", ""));
        assert!(!is_option("npt", "0 reboot") && !is_option("npt", "0\n"));
    }
}
