//! `kvm_module_options` against what a host's KVM module reports: which options still need setting,
//! with the module's own spellings of booleans (`Y`/`N`) read as the `1`/`0` configuration uses.

use std::collections::BTreeMap;

use nestform_provider::HostFacts;

/// A parameter value as configuration writes it: `Y`/`true` → `1`, `N`/`false` → `0`, anything else
/// as is (see [`nestform_types::kvm::normalize`]).
pub fn normalize(value: &str) -> String {
    nestform_types::kvm::normalize(value).to_string()
}

/// The module parameters that hold on the host: what its module reports; on a host without a KVM
/// module whose guests are emulated (TCG), `nested = 1`: nestform gives emulated guests a CPU with
/// `svm`, so they can nest whatever any module says.
pub fn effective(facts: &HostFacts) -> BTreeMap<String, String> {
    let mut params = facts.kvm_parameters.clone();
    if emulated_without_module(facts) {
        params.entry("nested".into()).or_insert_with(|| "1".into());
    }
    params
}

/// Whether the host's guests are emulated and it has no KVM module to give options to.
pub fn emulated_without_module(facts: &HostFacts) -> bool {
    facts.kvm_module.is_none() && facts.acceleration.as_deref() == Some("tcg")
}

/// The options of `wanted` whose value the host's module does not have now (all of them when the host
/// reports no module parameters), read through [`effective`].
pub fn differing(facts: &HostFacts, wanted: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let now = effective(facts);
    wanted
        .iter()
        .filter(|(k, v)| now.get(*k).map(|now| normalize(now)) != Some(normalize(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What the host has now for each option `wanted` names, normalized: what refresh records so the plan
/// shows a host whose module was changed outside nestform (or never set) as an update.
pub fn current(facts: &HostFacts, wanted: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let now = effective(facts);
    wanted.keys().filter_map(|k| Some((k.clone(), normalize(now.get(k)?)))).collect()
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
    fn an_emulating_host_without_a_module_nests_and_has_nothing_else() {
        let tcg = HostFacts {
            acceleration: Some("tcg".into()),
            virt_extension: Some("svm".into()),
            ..HostFacts::default()
        };
        assert!(differing(&tcg, &opts(&[("nested", "1")])).is_empty());
        assert_eq!(differing(&tcg, &opts(&[("nested", "Y"), ("ept", "1")])), opts(&[("ept", "1")]));
        assert_eq!(current(&tcg, &opts(&[("nested", "1"), ("ept", "1")])), opts(&[("nested", "1")]));
        // Under KVM the module's own parameters are all there is.
        let kvm = HostFacts { acceleration: Some("kvm".into()), ..tcg };
        assert_eq!(differing(&kvm, &opts(&[("nested", "1")])), opts(&[("nested", "1")]));
    }

    #[test]
    fn a_host_without_parameters_needs_every_option() {
        assert_eq!(differing(&facts(&[]), &opts(&[("nested", "1")])), opts(&[("nested", "1")]));
    }
}
