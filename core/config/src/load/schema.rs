//! The names each block may hold: the top-level block types, the attributes of a resource
//! instance (spec fields when planning, computed ones after apply), and the check that reports
//! attributes and nested blocks a block does not have.

use std::sync::Arc;

use hcl::edit::structure::Body;
use hcl::edit::Span;
use nestform_types::ResourceType;

use super::{header_range, range_of, Loader};
use crate::diag::{Diagnostic, SourceFile};
use crate::suggest;

pub(crate) const BLOCK_TYPES: [&str; 7] =
    ["kvm_host", "nat_network", "nested_guest", "benchmark", "variable", "locals", "output"];

/// Attributes of each resource type known only after apply.
pub(crate) const COMPUTED: [&str; 12] = [
    "id",
    "uuid",
    "addresses",
    "address",
    "ip",
    "mac",
    "kernel",
    "boot_seconds",
    "results",
    "facts",
    "level",
    "state",
];

/// The attributes a resource instance has when planning (its spec fields).
pub(crate) fn spec_fields(ty: ResourceType) -> &'static [&'static str] {
    match ty {
        ResourceType::KvmHost => &["uri", "guest", "nested", "kvm_module_options"],
        ResourceType::NatNetwork => &["host", "name", "cidr", "dhcp", "domain"],
        ResourceType::NestedGuest => {
            &["host", "name", "vcpus", "memory", "cpu", "disks", "networks", "running", "install"]
        }
        ResourceType::Benchmark => {
            &["kind", "targets", "size", "sizes", "cold", "iterations", "repeat", "warmup"]
        }
    }
}

impl Loader {
    /// Reports attributes and nested blocks that `what` does not have.
    pub fn unknown_attributes(
        &mut self,
        body: &Body,
        file: &Arc<SourceFile>,
        attrs: &[&str],
        blocks: &[&str],
        what: &str,
    ) {
        for attr in body.attributes() {
            let key = attr.key.as_str();
            if !attrs.contains(&key) {
                let help = if blocks.contains(&key) {
                    format!("`{key}` is a block: write `{key} \"NAME\" {{ ... }}`")
                } else {
                    suggest::help_for(key, "attributes", attrs)
                };
                self.error(
                    Diagnostic::error(format!("`{what}` has no attribute `{key}`"))
                        .with_range(range_of(file, attr.key.span()))
                        .with_help(help),
                );
            }
        }
        for block in body.blocks() {
            let key = block.ident.as_str();
            if !blocks.contains(&key) {
                let help = if attrs.contains(&key) {
                    format!("`{key}` is an attribute: write `{key} = ...`")
                } else {
                    suggest::help_for(key, "blocks", blocks)
                };
                self.error(
                    Diagnostic::error(format!("`{what}` has no block `{key}`"))
                        .with_range(header_range(file, block))
                        .with_help(help),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nestform_types::*;

    #[test]
    fn spec_fields_are_the_serialized_fields() {
        // Plan-time objects are built from serialized specs; the field lists must not drift.
        let host: ResourceAddr = "kvm_host.l0".parse().unwrap();
        let specs = [
            serde_json::to_value(KvmHostSpec {
                uri: Some("x".into()),
                guest: Some(host.clone()),
                nested: true,
                kvm_module_options: [("a".to_string(), "1".to_string())].into(),
            }),
            serde_json::to_value(NatNetworkSpec {
                host: host.clone(),
                name: "n".into(),
                cidr: "10.0.0.0/24".parse().unwrap(),
                dhcp: Some(DhcpRange {
                    start: "10.0.0.2".parse().unwrap(),
                    end: "10.0.0.9".parse().unwrap(),
                }),
                domain: Some("d".into()),
            }),
            serde_json::to_value(NestedGuestSpec {
                host: host.clone(),
                name: "g".into(),
                vcpus: 1,
                memory: ByteSize::mib(1),
                cpu: default_cpu(),
                disks: vec![DiskSpec {
                    name: "d".into(),
                    size: ByteSize::mib(1),
                    format: Default::default(),
                    preallocation: Default::default(),
                    cache: Default::default(),
                    bus: Default::default(),
                }],
                networks: vec![InterfaceSpec { name: "n".into(), nat_network: host.clone(), mac: None }],
                running: true,
                install: Some(InstallSpec::Lab(LabInstall::default())),
            }),
            serde_json::to_value(BenchmarkSpec {
                kind: BenchmarkKind::Boot,
                targets: vec![host],
                size: Some(ByteSize::mib(1)),
                sizes: vec![ByteSize::mib(1)],
                cold: Some(nestform_types::ColdCache::Target),
                iterations: Some(1),
                repeat: 1,
                warmup: 1,
            }),
        ];
        for (ty, spec) in ResourceType::ALL.into_iter().zip(specs) {
            let mut keys: Vec<String> = spec.unwrap().as_object().unwrap().keys().cloned().collect();
            let mut want: Vec<String> = spec_fields(ty).iter().map(|s| s.to_string()).collect();
            keys.sort();
            want.sort();
            assert_eq!(keys, want, "{ty}");
        }
    }
}
