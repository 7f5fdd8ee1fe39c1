//! `kvm_module_options` against what a host's KVM module reports: which options still need setting,
//! with the module's own spellings of booleans (`Y`/`N`) read as the `1`/`0` configuration uses.

use std::collections::BTreeMap;

use nestform_provider::HostFacts;

/// A parameter value as configuration writes it: `Y`/`y` → `1`, `N`/`n` → `0`, anything else as is.
pub fn normalize(value: &str) -> String {
    match value.trim() {
        "Y" | "y" => "1".to_string(),
        "N" | "n" => "0".to_string(),
        other => other.to_string(),
    }
}

/// The options of `wanted` whose value the host's module does not have now (all of them when the host
/// reports no module parameters).
pub fn differing(facts: &HostFacts, wanted: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    wanted
        .iter()
        .filter(|(k, v)| facts.kvm_parameters.get(*k).map(|now| normalize(now)) != Some(normalize(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What the host has now for each option `wanted` names, normalized: what refresh records so the plan
/// shows a host whose module was changed outside nestform (or never set) as an update.
pub fn current(facts: &HostFacts, wanted: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    wanted.keys().filter_map(|k| Some((k.clone(), normalize(facts.kvm_parameters.get(k)?)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(params: &[(&str, &str)]) -> HostFacts {
        HostFacts {
            kvm_parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..HostFacts::default()
        }
    }

    fn opts(o: &[(&str, &str)]) -> BTreeMap<String, String> {
        o.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn booleans_compare_in_either_spelling() {
        let f = facts(&[("nested", "Y"), ("ept", "N"), ("halt_poll_ns", "0")]);
        assert!(differing(&f, &opts(&[("nested", "1"), ("halt_poll_ns", "0")])).is_empty());
        assert_eq!(differing(&f, &opts(&[("ept", "1"), ("nested", "1")])), opts(&[("ept", "1")]));
        assert_eq!(current(&f, &opts(&[("ept", "1"), ("missing", "1")])), opts(&[("ept", "0")]));
    }

    #[test]
    fn a_host_without_parameters_needs_every_option() {
        assert_eq!(differing(&facts(&[]), &opts(&[("nested", "1")])), opts(&[("nested", "1")]));
    }
}
