//! Decoding a `nested_guest` block: its sizes, its labelled `disk` and `network` blocks, and an
//! optional `lab` install.

use std::collections::BTreeMap;

use hcl::edit::structure::Body;
use hcl::edit::Span;
use nestform_types::*;

use super::Inst;
use crate::diag::{Diagnostic, SourceRange};
use crate::load::{range_of, Loader};
use crate::{names, value};

impl Loader {
    pub(super) fn decode_guest(
        &mut self,
        cx: &mut Inst,
        body: &Body,
        header: &SourceRange,
    ) -> Option<NestedGuestSpec> {
        let host = self.reference(cx, body, "", "host", ResourceType::KvmHost, true);
        let name = self.opt(cx, body, "", "name", value::string).unwrap_or_else(|| cx.addr.object_name());
        let vcpus = self.req(cx, body, "", "vcpus", header, |v, n| value::u32_number(v, n, 1));
        let name_ok = self.check_name(cx, &name);
        let memory = self.req(cx, body, "", "memory", header, value::nonzero_size);
        let cpu = self.opt(cx, body, "", "cpu", value::string).unwrap_or_else(default_cpu);
        let running = self.opt(cx, body, "", "running", value::boolean).unwrap_or(true);
        let mut labels: BTreeMap<(String, String), SourceRange> = BTreeMap::new();
        let mut disks = vec![];
        let mut networks = vec![];
        let mut install = None;
        for b in body.blocks() {
            let kind = b.ident.as_str();
            let at = range_of(
                cx.file,
                b.span().map(|s| {
                    s.start..b.labels.last().and_then(|l| l.span()).map_or(s.start + kind.len(), |l| l.end)
                }),
            );
            if kind == "lab" {
                if !b.labels.is_empty() || install.is_some() {
                    cx.ok = false;
                    self.error(
                        Diagnostic::error("a guest has at most one `lab` block, without a label")
                            .with_range(at)
                            .with_help("write `lab { kernel = \"...\", modules = \"...\" }` once"),
                    );
                    continue;
                }
                self.unknown_attributes(&b.body, cx.file, &["kernel", "modules"], &[], "lab");
                let kernel = self.opt(cx, &b.body, "lab", "kernel", value::string);
                let modules = self.opt(cx, &b.body, "lab", "modules", value::string);
                install = Some(InstallSpec::Lab(LabInstall { kernel, modules }));
                continue;
            }
            if kind != "disk" && kind != "network" {
                continue;
            }
            if b.labels.len() != 1 {
                cx.ok = false;
                self.error(
                    Diagnostic::error(format!("a `{kind}` block takes one label, got {}", b.labels.len()))
                        .with_range(at)
                        .with_help(format!("write `{kind} \"NAME\" {{ ... }}`")),
                );
                continue;
            }
            let label = b.labels[0].as_str().to_string();
            if kind == "disk" {
                if let Err(m) = names::disk_label(&label) {
                    cx.ok = false;
                    self.mismatch(m, at);
                    continue;
                }
            }
            if let Some(first) = labels.get(&(kind.to_string(), label.clone())) {
                cx.ok = false;
                self.error(
                    Diagnostic::error(format!("`{kind} \"{label}\"` appears twice in `{}`", cx.addr.block()))
                        .with_range(at)
                        .with_label("declared again here")
                        .with_related(first.clone(), "first declared here")
                        .with_help(format!("give each `{kind}` its own name")),
                );
                continue;
            }
            labels.insert((kind.to_string(), label.clone()), at.clone());
            let prefix = format!("{kind}.{label}");
            if kind == "disk" {
                self.unknown_attributes(
                    &b.body,
                    cx.file,
                    &["size", "format", "preallocation", "cache", "bus"],
                    &[],
                    "disk",
                );
                let size = self.req(cx, &b.body, &prefix, "size", &at, value::nonzero_size);
                let format = self.opt(cx, &b.body, &prefix, "format", |v, n| {
                    value::word(v, n, DiskFormat::WORDS, DiskFormat::parse)
                });
                let prealloc = self.opt(cx, &b.body, &prefix, "preallocation", |v, n| {
                    value::word(v, n, Preallocation::WORDS, Preallocation::parse)
                });
                let cache = self.opt(cx, &b.body, &prefix, "cache", |v, n| {
                    value::word(v, n, DiskCache::WORDS, DiskCache::parse)
                });
                let bus = self.opt(cx, &b.body, &prefix, "bus", |v, n| {
                    value::word(v, n, DiskBus::WORDS, DiskBus::parse)
                });
                let format = format.unwrap_or_default();
                if name_ok {
                    if let Err(m) = names::volume_file_name(&name, &label, format.as_str()) {
                        cx.ok = false;
                        self.mismatch(m, at.clone());
                    }
                }
                if let Some(size) = size {
                    disks.push(DiskSpec {
                        name: label,
                        size,
                        format,
                        preallocation: prealloc.unwrap_or_default(),
                        cache: cache.unwrap_or_default(),
                        bus: bus.unwrap_or_default(),
                    });
                }
            } else {
                self.unknown_attributes(&b.body, cx.file, &["nat_network", "mac"], &[], "network");
                if b.body.get_attribute("nat_network").is_none() {
                    cx.ok = false;
                    self.error(
                        Diagnostic::error(format!(
                            "`network \"{label}\"` of `{}` is missing the required attribute `nat_network`",
                            cx.addr.block()
                        ))
                        .with_range(at.clone())
                        .with_help("add `nat_network = nat_network.NAME`"),
                    );
                    continue;
                }
                let net = self.reference(cx, &b.body, &prefix, "nat_network", ResourceType::NatNetwork, true);
                let mac = self.opt(cx, &b.body, &prefix, "mac", |v, n| {
                    let mac = value::string(v, n)?;
                    names::mac(&mac, n)?;
                    Ok(mac)
                });
                if let Some(nat_network) = net {
                    networks.push(InterfaceSpec { name: label, nat_network, mac });
                }
            }
        }
        Some(NestedGuestSpec {
            host: host?,
            name,
            vcpus: vcpus?,
            memory: memory?,
            cpu,
            disks,
            networks,
            running,
            install,
        })
    }
}
