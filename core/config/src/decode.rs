//! Decoding resource blocks into typed specs, one instance at a time (`count` and `for_each`
//! expanded here).
//!
//! This module owns the loop over a block's instances and what each instance is decoded with
//! (`Inst`); reading attributes (`attrs`), resolving references (`reference`) and each block kind
//! (`host`, `network`, `guest`, `benchmark`) have their own modules.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hcl::edit::structure::Body;
use hcl::edit::Span;
use hcl::{Map, Value};
use nestform_types::*;

use crate::diag::{Diagnostic, SourceFile, SourceRange};
use crate::limits::MAX_INSTANCES;
use crate::load::{range_of, InstanceVars, Loader, Located, Node, Shape, Usage, ADDR_KEY};
use crate::model::ResourceConfig;
use crate::refs;
use crate::value;

mod attrs;
mod benchmark;
mod guest;
mod host;
mod network;
mod reference;

const META: [&str; 3] = ["count", "for_each", "depends_on"];

/// The attributes and nested blocks of each resource type, meta-arguments excluded.
fn schema(ty: ResourceType) -> (&'static [&'static str], &'static [&'static str]) {
    match ty {
        ResourceType::KvmHost => (&["uri", "guest", "nested", "kvm_module_options"], &[]),
        ResourceType::NatNetwork => (&["host", "name", "cidr", "domain"], &["dhcp"]),
        ResourceType::NestedGuest => {
            (&["host", "name", "vcpus", "memory", "cpu", "running"], &["disk", "network", "lab", "timeouts"])
        }
        ResourceType::Benchmark => {
            (&["kind", "targets", "size", "sizes", "cold", "iterations", "repeat", "warmup"], &[])
        }
    }
}

/// One instance of a block: its key and its `each` / `count` values.
type Instance = (Option<InstanceKey>, InstanceVars);

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
            let timeouts = self.decode_timeouts(&mut cx, &loc.block.body);
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
                    timeouts,
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
                    Ok(n) if n > MAX_INSTANCES => {
                        self.too_many_instances("count", n, range_of(&loc.file, c.value.span()));
                        None
                    }
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
                if pairs.len() as u64 > MAX_INSTANCES {
                    self.too_many_instances("for_each", pairs.len() as u64, range);
                    return None;
                }
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

    fn too_many_instances(&mut self, what: &str, n: u64, range: SourceRange) {
        self.error(
            Diagnostic::error(format!(
                "`{what}` asks for {n} instances, more than the {MAX_INSTANCES} one block may have"
            ))
            .with_range(range)
            .with_label(format!("{n} instances"))
            .with_help(format!("use at most {MAX_INSTANCES} instances per block, or split the block")),
        );
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
}

impl Loader {
    /// The block's `timeouts { create, update, delete }` (for the types whose schema has it), each a
    /// duration checked here, at its attribute.
    fn decode_timeouts(&mut self, cx: &mut Inst, body: &Body) -> Timeouts {
        let mut timeouts = Timeouts::default();
        let mut seen = false;
        for b in body.blocks().filter(|b| b.ident.as_str() == "timeouts") {
            if !schema(cx.addr.ty).1.contains(&"timeouts") {
                continue;
            }
            let at = range_of(cx.file, b.ident.span());
            if seen || !b.labels.is_empty() {
                cx.ok = false;
                self.error(
                    Diagnostic::error("a resource has at most one `timeouts` block, without a label")
                        .with_range(at)
                        .with_help("write `timeouts { create = \"30m\" }` once"),
                );
                continue;
            }
            seen = true;
            self.unknown_attributes(&b.body, cx.file, &Timeouts::OPERATIONS, &[], "timeouts");
            let duration = |v: &Value, name: &str| {
                let s = value::string(v, name)?;
                match parse_duration(&s) {
                    Ok(_) => Ok(s),
                    Err(e) => Err(value::Mismatch {
                        summary: format!("`timeouts.{name}`: {e}"),
                        help: "write a duration such as \"30m\", \"1h30m\" or \"90s\"".into(),
                    }),
                }
            };
            timeouts.create = self.opt(cx, &b.body, "timeouts", "create", duration);
            timeouts.update = self.opt(cx, &b.body, "timeouts", "update", duration);
            timeouts.delete = self.opt(cx, &b.body, "timeouts", "delete", duration);
        }
        timeouts
    }
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
