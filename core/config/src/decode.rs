//! Decoding resource blocks into typed specs, one instance at a time (`count` and `for_each`
//! expanded here).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hcl::edit::structure::{Block, Body};
use hcl::edit::Span;
use hcl::{Map, Value};
use nestform_types::*;

use crate::diag::{Diagnostic, SourceFile, SourceRange};
use crate::load::{range_of, InstanceVars, Loader, Located, Node, Shape, Usage, ADDR_KEY};
use crate::model::ResourceConfig;
use crate::refs;
use crate::value::{self, Mismatch};

const META: [&str; 3] = ["count", "for_each", "depends_on"];

/// The attributes and nested blocks of each resource type, meta-arguments excluded.
fn schema(ty: ResourceType) -> (&'static [&'static str], &'static [&'static str]) {
    match ty {
        ResourceType::KvmHost => (&["uri", "guest", "nested", "kvm_module_options"], &[]),
        ResourceType::NatNetwork => (&["host", "name", "cidr", "domain"], &["dhcp"]),
        ResourceType::NestedGuest => {
            (&["host", "name", "vcpus", "memory", "cpu", "running"], &["disk", "network", "lab"])
        }
        ResourceType::Benchmark => (&["kind", "targets", "size", "iterations", "repeat"], &[]),
    }
}

/// One instance of a block: its key and its `each` / `count` values.
type Instance = (Option<InstanceKey>, InstanceVars);

/// The result of reading one attribute.
enum Got {
    Missing,
    Failed,
    Value(Value, SourceRange),
}

/// What one instance is being decoded with, and what it collects.
struct Inst<'a> {
    file: &'a Arc<SourceFile>,
    header: &'a SourceRange,
    addr: &'a ResourceAddr,
    vars: &'a InstanceVars,
    ranges: BTreeMap<String, SourceRange>,
    deps: BTreeSet<ResourceAddr>,
    ok: bool,
}

impl Loader {
    pub(crate) fn evaluate_resource(&mut self, ty: ResourceType, name: &str) {
        let loc = self.resources[&(ty, name.to_string())].clone();
        let (attrs, blocks) = schema(ty);
        let mut all_attrs = attrs.to_vec();
        all_attrs.extend(META);
        self.unknown_attributes(&loc.block.body, &loc.file, &all_attrs, blocks, ty.as_str());
        let Some((shape, instances)) = self.expand(&loc) else {
            self.failed.insert(Node::Resource(ty, name.to_string()));
            return;
        };
        self.shapes.insert((ty, name.to_string()), shape);
        let objs = self.resource_values.entry(ty).or_default();
        match shape {
            Shape::Count => drop(objs.insert(name.to_string(), Value::Array(vec![]))),
            Shape::ForEach => drop(objs.insert(name.to_string(), Value::Object(Map::new()))),
            Shape::Single => {}
        }
        self.values_changed();
        self.instances.insert((ty, name.to_string()), vec![]);
        let block_refs = refs::block_references(&loc.block.body);
        let mut all_ok = true;
        // Instances of one block cannot see each other, so their values are stored at the end and
        // every instance evaluates with the same context.
        let mut values = vec![];
        for (key, vars) in instances {
            let addr = ResourceAddr { ty, name: name.to_string(), key };
            let mut cx = Inst {
                file: &loc.file,
                header: &loc.header,
                addr: &addr,
                vars: &vars,
                ranges: BTreeMap::new(),
                deps: BTreeSet::new(),
                ok: true,
            };
            let spec = self.decode(&mut cx, &loc.block.body);
            let (ranges, mut deps, ok) = (cx.ranges, cx.deps, cx.ok);
            let Some(spec) = spec.filter(|_| ok) else {
                all_ok = false;
                continue;
            };
            for r in &block_refs {
                deps.extend(self.addrs_of_ref(r));
            }
            deps.remove(&addr);
            values.push((addr.clone(), plan_object(&spec, &addr)));
            self.instances.entry((ty, name.to_string())).or_default().push(addr.clone());
            self.config.resources.insert(
                addr.clone(),
                ResourceConfig {
                    addr,
                    spec,
                    range: loc.header.clone(),
                    attr_ranges: ranges,
                    depends_on: deps,
                },
            );
        }
        for (addr, v) in values {
            self.store_instance(&addr, shape, v);
        }
        if !all_ok {
            self.failed.insert(Node::Resource(ty, name.to_string()));
        }
    }

    /// The instances of a block: one, `count` of them, or one per `for_each` element.
    fn expand(&mut self, loc: &Located) -> Option<(Shape, Vec<Instance>)> {
        let body = &loc.block.body;
        let none = InstanceVars::default();
        match (body.get_attribute("count"), body.get_attribute("for_each")) {
            (Some(c), Some(f)) => {
                self.error(
                    Diagnostic::error("`count` and `for_each` cannot both be set")
                        .with_range(range_of(&loc.file, f.key.span()))
                        .with_related(range_of(&loc.file, c.key.span()), "`count` is set here")
                        .with_help("keep one of them"),
                );
                None
            }
            (Some(c), None) => {
                let v = self.eval(&c.value, &loc.file, &none, Usage::Plan, None)?;
                match value::whole_number(&v, "count", 0) {
                    Ok(n) => Some((
                        Shape::Count,
                        (0..n)
                            .map(|i| (Some(InstanceKey::Int(i)), InstanceVars { each: None, count: Some(i) }))
                            .collect(),
                    )),
                    Err(m) => {
                        self.mismatch(m, range_of(&loc.file, c.value.span()));
                        None
                    }
                }
            }
            (None, Some(f)) => {
                let v = self.eval(&f.value, &loc.file, &none, Usage::Plan, None)?;
                let range = range_of(&loc.file, f.value.span());
                let pairs: Vec<(String, Value)> = match v {
                    Value::Object(o) => o.into_iter().collect(),
                    Value::Array(a) => {
                        let mut out: Vec<(String, Value)> = vec![];
                        for e in a {
                            let Value::String(s) = e else {
                                self.error(
                                    Diagnostic::error(format!(
                                        "`for_each` over a list needs strings, got {}",
                                        value::type_name(&e)
                                    ))
                                    .with_range(range)
                                    .with_help("use a map, or a set of strings like `toset([\"a\", \"b\"])`"),
                                );
                                return None;
                            };
                            if !out.iter().any(|(k, _)| *k == s) {
                                out.push((s.clone(), Value::from(s)));
                            }
                        }
                        out
                    }
                    other => {
                        self.error(
                            Diagnostic::error(format!(
                                "`for_each` must be a map or a set of strings, got {}",
                                value::type_name(&other)
                            ))
                            .with_range(range)
                            .with_help("write a map like `{ a = 1, b = 2 }` or `toset([\"a\", \"b\"])`"),
                        );
                        return None;
                    }
                };
                Some((
                    Shape::ForEach,
                    pairs
                        .into_iter()
                        .map(|(k, v)| {
                            (
                                Some(InstanceKey::Str(k.clone())),
                                InstanceVars { each: Some((k, v)), count: None },
                            )
                        })
                        .collect(),
                ))
            }
            (None, None) => Some((Shape::Single, vec![(None, none)])),
        }
    }

    fn mismatch(&mut self, m: Mismatch, range: SourceRange) {
        self.error(Diagnostic::error(m.summary).with_range(range).with_help(m.help));
    }

    fn get(&mut self, cx: &mut Inst, body: &Body, path: &str, name: &str) -> Got {
        let Some(attr) = body.get_attribute(name) else { return Got::Missing };
        let range = range_of(cx.file, attr.value.span());
        cx.ranges.insert(path.to_string(), range.clone());
        let self_block = Some((cx.addr.ty, cx.addr.name.as_str()));
        match self.eval(&attr.value, cx.file, cx.vars, Usage::Plan, self_block) {
            Some(v) => Got::Value(v, range),
            None => {
                cx.ok = false;
                Got::Failed
            }
        }
    }

    /// Reads an optional attribute and converts it.
    fn opt<T>(
        &mut self,
        cx: &mut Inst,
        body: &Body,
        prefix: &str,
        name: &str,
        conv: impl Fn(&Value, &str) -> Result<T, Mismatch>,
    ) -> Option<T> {
        let path = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
        match self.get(cx, body, &path, name) {
            Got::Value(Value::Null, _) | Got::Missing | Got::Failed => None,
            Got::Value(v, range) => match conv(&v, name) {
                Ok(t) => Some(t),
                Err(m) => {
                    cx.ok = false;
                    self.mismatch(m, range);
                    None
                }
            },
        }
    }

    /// Reads a required attribute; a missing one is reported at `at` (the block's header).
    fn req<T>(
        &mut self,
        cx: &mut Inst,
        body: &Body,
        prefix: &str,
        name: &str,
        at: &SourceRange,
        conv: impl Fn(&Value, &str) -> Result<T, Mismatch>,
    ) -> Option<T> {
        if body.get_attribute(name).is_none() {
            cx.ok = false;
            let what = if prefix.is_empty() {
                format!("`{}`", cx.addr.block())
            } else {
                format!("`{prefix}` of `{}`", cx.addr.block())
            };
            self.error(
                Diagnostic::error(format!("{what} is missing the required attribute `{name}`"))
                    .with_range(at.clone())
                    .with_help(format!("add `{name} = ...` to the block")),
            );
            return None;
        }
        self.opt(cx, body, prefix, name, conv)
    }

    /// Resolves a reference-valued attribute such as `host = kvm_host.l0`.
    fn reference(
        &mut self,
        cx: &mut Inst,
        body: &Body,
        prefix: &str,
        name: &str,
        want: ResourceType,
        required: bool,
    ) -> Option<ResourceAddr> {
        let addrs = self.reference_list(cx, body, prefix, name, &[want], required, false)?;
        addrs.into_iter().next()
    }

    /// Resolves an attribute holding references; `many` allows a list.
    #[allow(clippy::too_many_arguments)]
    fn reference_list(
        &mut self,
        cx: &mut Inst,
        body: &Body,
        prefix: &str,
        name: &str,
        want: &[ResourceType],
        required: bool,
        many: bool,
    ) -> Option<Vec<ResourceAddr>> {
        if required && body.get_attribute(name).is_none() {
            let at = cx.header.clone();
            self.req(cx, body, prefix, name, &at, |_, _| Ok(()));
            return None;
        }
        let path = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
        let Got::Value(v, range) = self.get(cx, body, &path, name) else { return None };
        let kinds = crate::suggest::quoted_list(want.iter().map(|t| t.as_str()));
        let example = format!("{}.NAME", want[0]);
        let mut found = vec![];
        let single = !many;
        let problem = match (&v, single) {
            (Value::Array(items), false) => {
                let mut p = None;
                for item in items {
                    if let Err(e) = flatten(item, &mut found) {
                        p = Some(e);
                    }
                }
                p
            }
            (Value::Array(_) | Value::Object(_), true) if is_instance_collection(&v) => {
                Some("every instance of a block with `count` or `for_each`".to_string())
            }
            (Value::Array(_), true) => Some("a list".to_string()),
            (Value::Object(o), true) if !o.contains_key(ADDR_KEY) => Some("an object".to_string()),
            _ => flatten(&v, &mut found).err(),
        };
        let fail = |this: &mut Loader, cx: &mut Inst, summary: String, help: String| {
            cx.ok = false;
            this.error(Diagnostic::error(summary).with_range(range.clone()).with_help(help));
            None
        };
        if let Some(got) = problem {
            let expect = if single {
                format!("a reference to a {kinds}")
            } else {
                format!("a list of references to {kinds}")
            };
            let help = if single {
                format!("write `{name} = {example}`; for a block with `count` or `for_each` pick one instance, like `{example}[0]`")
            } else {
                format!("write `{name} = [{example}, ...]`")
            };
            return fail(self, cx, format!("`{name}` must be {expect}, got {got}"), help);
        }
        for a in &found {
            if !want.contains(&a.ty) {
                let help = if a.ty == ResourceType::NestedGuest && want == [ResourceType::KvmHost] {
                    format!("to run on `{a}`, promote it with `kvm_host \"NAME\" {{ guest = {a} }}` and use `kvm_host.NAME`")
                } else {
                    format!("use a {kinds}, like `{example}`")
                };
                return fail(self, cx, format!("`{name}` must refer to a {kinds}, not `{a}`"), help);
            }
        }
        for a in &found {
            // Written as a string (`"kvm_host.l0"`) a reference skips the reference checks.
            let known = self.instances.get(&(a.ty, a.name.clone())).is_some_and(|all| all.contains(a));
            if !known {
                return fail(
                    self,
                    cx,
                    format!("unknown reference `{a}`"),
                    format!("declare `{} \"{}\"` or fix the name", a.ty, a.name),
                );
            }
        }
        cx.deps.extend(found.iter().cloned());
        Some(found)
    }

    fn decode(&mut self, cx: &mut Inst, body: &Body) -> Option<ResourceSpec> {
        let header = cx.header.clone();
        let any = [
            ResourceType::KvmHost,
            ResourceType::NatNetwork,
            ResourceType::NestedGuest,
            ResourceType::Benchmark,
        ];
        self.reference_list(cx, body, "", "depends_on", &any, false, true);
        match cx.addr.ty {
            ResourceType::KvmHost => self.decode_host(cx, body, &header).map(ResourceSpec::KvmHost),
            ResourceType::NatNetwork => self.decode_network(cx, body, &header).map(ResourceSpec::NatNetwork),
            ResourceType::NestedGuest => self.decode_guest(cx, body, &header).map(ResourceSpec::NestedGuest),
            ResourceType::Benchmark => self.decode_benchmark(cx, body, &header).map(ResourceSpec::Benchmark),
        }
    }

    fn decode_host(&mut self, cx: &mut Inst, body: &Body, header: &SourceRange) -> Option<KvmHostSpec> {
        let uri = self.opt(cx, body, "", "uri", value::string);
        let guest = self.reference(cx, body, "", "guest", ResourceType::NestedGuest, false);
        let nested = self.opt(cx, body, "", "nested", value::boolean).unwrap_or(false);
        let kvm_module_options =
            self.opt(cx, body, "", "kvm_module_options", module_options).unwrap_or_default();
        match (body.get_attribute("uri"), body.get_attribute("guest")) {
            (Some(u), Some(g)) => {
                cx.ok = false;
                self.error(
                    Diagnostic::error(format!("`{}` has both `uri` and `guest`", cx.addr.block()))
                        .with_range(range_of(cx.file, g.key.span()))
                        .with_related(range_of(cx.file, u.key.span()), "`uri` is set here")
                        .with_help("keep `uri` for a hypervisor that already exists, or `guest` to promote a `nested_guest` to a hypervisor"),
                );
            }
            (None, None) => {
                cx.ok = false;
                self.error(
                    Diagnostic::error(format!("`{}` needs either `uri` or `guest`", cx.addr.block()))
                        .with_range(header.clone())
                        .with_help("add `uri = \"qemu:///system\"` for an existing hypervisor, or `guest = nested_guest.NAME` to promote a guest"),
                );
            }
            _ => {}
        }
        Some(KvmHostSpec { uri, guest, nested, kvm_module_options })
    }

    fn decode_network(&mut self, cx: &mut Inst, body: &Body, header: &SourceRange) -> Option<NatNetworkSpec> {
        let host = self.reference(cx, body, "", "host", ResourceType::KvmHost, true);
        let name = self.opt(cx, body, "", "name", value::string).unwrap_or_else(|| cx.addr.object_name());
        let cidr = self.req(cx, body, "", "cidr", header, value::cidr);
        let domain = self.opt(cx, body, "", "domain", value::string);
        let mut dhcp = None;
        let dhcp_blocks: Vec<&Block> = body.get_blocks("dhcp").collect();
        for extra in dhcp_blocks.iter().skip(1) {
            cx.ok = false;
            self.error(
                Diagnostic::error("only one `dhcp` block is allowed")
                    .with_range(range_of(cx.file, extra.ident.span()))
                    .with_help("merge the `dhcp` blocks into one"),
            );
        }
        if let Some(b) = dhcp_blocks.first() {
            let at = range_of(cx.file, b.ident.span());
            self.unknown_attributes(&b.body, cx.file, &["start", "end"], &[], "dhcp");
            let start = self.req(cx, &b.body, "dhcp", "start", &at, value::ipv4);
            let end = self.req(cx, &b.body, "dhcp", "end", &at, value::ipv4);
            if let (Some(start), Some(end), Some(net)) = (start, end, cidr) {
                for (ip, which) in [(start, "start"), (end, "end")] {
                    if !net.contains(&ip) {
                        cx.ok = false;
                        self.error(
                            Diagnostic::error(format!("`dhcp.{which}` `{ip}` is outside `{net}`"))
                                .with_range(cx.ranges[&format!("dhcp.{which}")].clone())
                                .with_help(format!("pick an address inside `{net}`")),
                        );
                    }
                }
                if start > end {
                    cx.ok = false;
                    self.error(
                        Diagnostic::error(format!("`dhcp.start` `{start}` comes after `dhcp.end` `{end}`"))
                            .with_range(cx.ranges["dhcp.start"].clone())
                            .with_help("swap them"),
                    );
                }
                dhcp = Some(DhcpRange { start, end });
            }
        }
        Some(NatNetworkSpec { host: host?, name, cidr: cidr?, dhcp, domain })
    }

    fn decode_guest(&mut self, cx: &mut Inst, body: &Body, header: &SourceRange) -> Option<NestedGuestSpec> {
        let host = self.reference(cx, body, "", "host", ResourceType::KvmHost, true);
        let name = self.opt(cx, body, "", "name", value::string).unwrap_or_else(|| cx.addr.object_name());
        let vcpus = self.req(cx, body, "", "vcpus", header, |v, n| value::u32_number(v, n, 1));
        let memory = self.req(cx, body, "", "memory", header, value::size);
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
                let size = self.req(cx, &b.body, &prefix, "size", &at, value::size);
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
                if let Some(size) = size {
                    disks.push(DiskSpec {
                        name: label,
                        size,
                        format: format.unwrap_or_default(),
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
                let mac = self.opt(cx, &b.body, &prefix, "mac", value::string);
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

    fn decode_benchmark(
        &mut self,
        cx: &mut Inst,
        body: &Body,
        header: &SourceRange,
    ) -> Option<BenchmarkSpec> {
        let kind = self.req(cx, body, "", "kind", header, |v, n| {
            value::word(v, n, BenchmarkKind::WORDS, BenchmarkKind::parse)
        });
        let targets = self.reference_list(
            cx,
            body,
            "",
            "targets",
            &[ResourceType::KvmHost, ResourceType::NestedGuest],
            true,
            true,
        );
        let size = self.opt(cx, body, "", "size", value::size);
        let iterations = self.opt(cx, body, "", "iterations", |v, n| value::whole_number(v, n, 1));
        let repeat = self.opt(cx, body, "", "repeat", |v, n| value::u32_number(v, n, 1)).unwrap_or(1);
        Some(BenchmarkSpec { kind: kind?, targets: targets?, size, iterations, repeat })
    }
}

/// True for the value of a block with `count` or `for_each`: a list or map of instances.
fn is_instance_collection(v: &Value) -> bool {
    let is_instance = |v: &Value| v.as_object().is_some_and(|o| o.contains_key(ADDR_KEY));
    match v {
        Value::Array(a) => a.iter().all(is_instance),
        Value::Object(o) => !o.contains_key(ADDR_KEY) && o.values().all(is_instance),
        _ => false,
    }
}

/// Collects the addresses a reference value names: one instance, or every instance of a block.
fn flatten(v: &Value, out: &mut Vec<ResourceAddr>) -> Result<(), String> {
    match v {
        Value::Object(o) => match o.get(ADDR_KEY) {
            Some(Value::String(s)) => {
                out.push(s.parse().map_err(|_| "an unknown value".to_string())?);
                Ok(())
            }
            _ if o.is_empty() => Err("an object".to_string()),
            _ => o.values().try_for_each(|v| flatten(v, out)),
        },
        Value::Array(a) => a.iter().try_for_each(|v| flatten(v, out)),
        Value::String(s) => match s.parse::<ResourceAddr>() {
            Ok(a) => {
                out.push(a);
                Ok(())
            }
            Err(_) => Err(format!("string `\"{s}\"`")),
        },
        other => Err(value::type_name(other).to_string()),
    }
}

fn module_options(v: &Value, name: &str) -> Result<BTreeMap<String, String>, Mismatch> {
    let Value::Object(o) = v else {
        return Err(Mismatch {
            summary: format!("`{name}` must be a map, got {}", value::type_name(v)),
            help: format!("write `{name} = {{ nested = 1 }}`"),
        });
    };
    o.iter()
        .map(|(k, v)| {
            let s = match v {
                Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                other => {
                    return Err(Mismatch {
                        summary: format!(
                            "`{name}.{k}` must be a number, bool or string, got {}",
                            value::type_name(other)
                        ),
                        help: "module options are plain values, like `nested = 1`".to_string(),
                    })
                }
            };
            Ok((k.clone(), s))
        })
        .collect()
}

/// The attributes of an instance when planning: its spec fields (absent ones as null) and its
/// address under [`ADDR_KEY`].
fn plan_object(spec: &ResourceSpec, addr: &ResourceAddr) -> Value {
    let json = serde_json::Value::Object(spec.attributes());
    let mut obj = match value::from_json(&json) {
        Value::Object(o) => o,
        _ => Map::new(),
    };
    for field in crate::load::spec_fields(addr.ty) {
        obj.entry(field.to_string()).or_insert(Value::Null);
    }
    obj.insert(ADDR_KEY.to_string(), Value::from(addr.to_string()));
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(addr: &str) -> Value {
        let mut o = Map::new();
        o.insert(ADDR_KEY.to_string(), Value::from(addr));
        o.insert("name".to_string(), Value::from("x"));
        Value::Object(o)
    }

    #[test]
    fn flatten_expands_instance_collections() {
        let mut by_key = Map::new();
        by_key.insert("a".to_string(), inst("nested_guest.w[\"a\"]"));
        let v = Value::Array(vec![
            inst("kvm_host.l0"),
            Value::Array(vec![inst("nested_guest.c[0]")]),
            Value::Object(by_key),
        ]);
        let mut out = vec![];
        flatten(&v, &mut out).unwrap();
        let got: Vec<String> = out.iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["kvm_host.l0", "nested_guest.c[0]", "nested_guest.w[\"a\"]"]);
        assert!(flatten(&Value::from(3u64), &mut out).is_err());
        assert!(flatten(&Value::from("not an address"), &mut out).is_err());
    }

    #[test]
    fn module_options_write_bools_as_digits() {
        let v = hcl::value!({ nested = true, ept = false, mode = "x", n = 3 });
        let m = module_options(&v, "kvm_module_options").unwrap();
        assert_eq!(m["nested"], "1");
        assert_eq!(m["ept"], "0");
        assert_eq!(m["mode"], "x");
        assert_eq!(m["n"], "3");
        assert!(module_options(&hcl::value!({ a = [1] }), "kvm_module_options").is_err());
    }
}
