//! Evaluation: instances, functions, locals, variables and outputs.

use std::collections::BTreeMap;

use nestform_config::{load_sources, render_plain, Config, OutputValue, SourceFile, VarInputs};
use nestform_types::{ByteSize, ResourceAddr, ResourceSpec};
use serde_json::json;

fn load(text: &str, vars: &VarInputs) -> Config {
    match load_sources(vec![SourceFile::new("main.nf.hcl", text)], vars) {
        Ok(c) => c,
        Err(d) => panic!("{}", render_plain(&d)),
    }
}

fn addr(s: &str) -> ResourceAddr {
    s.parse().unwrap()
}

fn guest(c: &Config, a: &str) -> nestform_types::NestedGuestSpec {
    match &c.resources[&addr(a)].spec {
        ResourceSpec::NestedGuest(g) => g.clone(),
        other => panic!("{other:?}"),
    }
}

const BASE: &str = r#"
kvm_host "l0" {
  uri = "test:///default"
}
nat_network "lan" {
  for_each = { a = 0, b = 1 }
  host     = kvm_host.l0
  cidr     = cidrsubnet("10.10.0.0/16", 8, each.value)
}
"#;

#[test]
fn count_and_for_each_expand_into_instances() {
    let c = load(
        &format!(
            "{BASE}{}",
            r#"
nested_guest "web" {
  count  = 3
  host   = kvm_host.l0
  vcpus  = count.index + 1
  memory = "${256 * (count.index + 1)}MiB"
  network "eth0" {
    nat_network = nat_network.lan[count.index == 0 ? "a" : "b"]
  }
}
"#
        ),
        &VarInputs::default(),
    );
    let addrs: Vec<String> = c.resources.keys().map(|a| a.to_string()).collect();
    assert_eq!(
        addrs,
        [
            "kvm_host.l0",
            "nat_network.lan[\"a\"]",
            "nat_network.lan[\"b\"]",
            "nested_guest.web[0]",
            "nested_guest.web[1]",
            "nested_guest.web[2]"
        ]
    );
    let w2 = guest(&c, "nested_guest.web[2]");
    assert_eq!(w2.vcpus, 3);
    assert_eq!(w2.memory, ByteSize::mib(768));
    assert_eq!(w2.name, "web-2");
    assert_eq!(w2.networks[0].nat_network, addr("nat_network.lan[\"b\"]"));
    let ResourceSpec::NatNetwork(n) = &c.resources[&addr("nat_network.lan[\"b\"]")].spec else { panic!() };
    assert_eq!(n.cidr.to_string(), "10.10.1.0/24");
    assert_eq!(n.name, "lan-b");
    // A dynamic index depends on every instance it may pick.
    let deps = &c.resources[&addr("nested_guest.web[0]")].depends_on;
    assert!(deps.contains(&addr("kvm_host.l0")));
    assert!(deps.contains(&addr("nat_network.lan[\"a\"]")));
}

#[test]
fn resources_read_each_others_configured_attributes() {
    let c = load(
        &format!(
            "{BASE}{}",
            r#"
nested_guest "second" {
  host   = kvm_host.l0
  name   = "${nested_guest.first.name}-twin"
  vcpus  = nested_guest.first.vcpus * 2
  memory = nested_guest.first.memory
}
nested_guest "first" {
  host   = kvm_host.l0
  name   = upper("a")
  vcpus  = 2
  memory = "1GiB"
  disk "root" {
    size          = "36G"
    preallocation = "metadata"
  }
}
"#
        ),
        &VarInputs::default(),
    );
    let second = guest(&c, "nested_guest.second");
    assert_eq!(second.name, "A-twin");
    assert_eq!(second.vcpus, 4);
    assert_eq!(second.memory, ByteSize::gib(1));
    let rc = &c.resources[&addr("nested_guest.second")];
    assert!(rc.depends_on.contains(&addr("nested_guest.first")));
    assert_eq!(rc.attr_range("vcpus").text(), "nested_guest.first.vcpus * 2");
    let first = &c.resources[&addr("nested_guest.first")];
    assert_eq!(first.attr_range("disk.root.size").text(), "\"36G\"");
    assert_eq!(first.attr_range("nope").text(), "nested_guest \"first\"");
}

#[test]
fn locals_reference_each_other_in_any_order() {
    let c = load(
        r#"
locals {
  names = [for i in range(local.n) : format("g%d", i)]
  n     = length(split(",", local.csv))
  csv   = join(",", ["x", "y"])
}
kvm_host "l0" {
  uri = "test:///default"
}
nested_guest "g" {
  for_each = toset(local.names)
  host     = kvm_host.l0
  vcpus    = 1
  memory   = "256MiB"
  lab {
    kernel = "/boot/${each.key}"
  }
}
"#,
        &VarInputs::default(),
    );
    let g1 = guest(&c, "nested_guest.g[\"g1\"]");
    assert_eq!(g1.name, "g-g1");
    let Some(nestform_types::InstallSpec::Lab(lab)) = g1.install else { panic!() };
    assert_eq!(lab.kernel.as_deref(), Some("/boot/g1"));
}

#[test]
fn variable_precedence_is_cli_then_file_then_env_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let vf = dir.path().join("lab.nfvars.hcl");
    std::fs::write(&vf, "b = \"file\"\nc = \"file\"\n").unwrap();
    // Unique names: the environment is shared by every test in this binary.
    std::env::set_var("NF_VAR_prec_c", "env");
    std::env::set_var("NF_VAR_prec_d", "env");
    std::env::set_var("NF_VAR_prec_n", "7");
    let text = r#"
variable "prec_a" { default = "default" }
variable "b"      { default = "default" }
variable "c"      { default = "default" }
variable "prec_c" { default = "default" }
variable "prec_d" { default = "default" }
variable "prec_e" { default = "default" }
variable "prec_n" { type = number }
variable "list"   { default = [] }
"#;
    let vars = VarInputs {
        cli: vec![
            ("prec_a".into(), "first".into()),
            ("prec_a".into(), "cli".into()),
            ("b".into(), "cli".into()),
            ("list".into(), "[1, 2]".into()),
        ],
        files: vec![vf],
    };
    let c = load(text, &vars);
    let v = |k: &str| c.variables[k].clone();
    assert_eq!(v("prec_a"), json!("cli"));
    assert_eq!(v("b"), json!("cli"));
    assert_eq!(v("c"), json!("file"));
    assert_eq!(v("prec_c"), json!("env"));
    assert_eq!(v("prec_d"), json!("env"));
    assert_eq!(v("prec_e"), json!("default"));
    assert_eq!(v("prec_n"), json!(7));
    assert_eq!(v("list"), json!([1, 2]));
}

#[test]
fn outputs_are_unknown_until_computed_attributes_exist() {
    let c = load(
        r#"
variable "who" { default = "lab" }
kvm_host "l0" {
  uri = "test:///default"
}
nested_guest "g" {
  count  = 2
  host   = kvm_host.l0
  vcpus  = 1
  memory = "256MiB"
}
output "names" {
  value = [for g in nested_guest.g : "${var.who}:${g.name}"]
}
output "ids" {
  value     = nested_guest.g[*].id
  sensitive = true
}
output "first_addresses" {
  description = "addresses of the first guest"
  value       = nested_guest.g[0].addresses
}
"#,
        &VarInputs::default(),
    );
    assert!(c.outputs["ids"].sensitive);
    assert_eq!(c.outputs["first_addresses"].description.as_deref(), Some("addresses of the first guest"));
    assert_eq!(c.outputs["names"].depends_on.len(), 2);
    let mut res: BTreeMap<ResourceAddr, serde_json::Value> = BTreeMap::new();
    for i in 0..2 {
        res.insert(addr(&format!("nested_guest.g[{i}]")), json!({ "name": format!("g-{i}"), "vcpus": 1 }));
    }
    let out = c.evaluate_outputs(&res).unwrap();
    assert_eq!(out["names"], OutputValue::Known(json!(["lab:g-0", "lab:g-1"])));
    assert_eq!(out["ids"], OutputValue::Unknown);
    assert_eq!(out["first_addresses"], OutputValue::Unknown);
    for i in 0..2 {
        res.insert(
            addr(&format!("nested_guest.g[{i}]")),
            json!({ "name": format!("g-{i}"), "id": format!("uuid-{i}"), "addresses": [format!("10.0.0.{i}")] }),
        );
    }
    let out = c.evaluate_outputs(&res).unwrap();
    assert_eq!(out["ids"], OutputValue::Known(json!(["uuid-0", "uuid-1"])));
    assert_eq!(out["first_addresses"], OutputValue::Known(json!(["10.0.0.0"])));
}

#[test]
fn an_output_error_points_at_the_output() {
    let c = load("output \"bad\" {\n  value = 1 + \"x\"\n}\n", &VarInputs::default());
    let err = c.evaluate_outputs(&BTreeMap::new()).unwrap_err();
    let text = render_plain(&err);
    assert!(text.contains("output `bad` cannot be evaluated"), "{text}");
    assert!(text.contains("main.nf.hcl:2:11"), "{text}");
}

#[test]
fn module_options_and_targets() {
    let c = load(
        r#"
kvm_host "l0" {
  uri                = "test:///default"
  nested             = true
  kvm_module_options = { nested = true, ept = false, halt_poll_ns = 0 }
}
nested_guest "g" {
  for_each = { a = 1, b = 2 }
  host     = kvm_host.l0
  vcpus    = each.value
  memory   = "1GiB"
}
benchmark "loop" {
  kind       = "shell_loop"
  targets    = [kvm_host.l0, nested_guest.g]
  iterations = 100000
  depends_on = [kvm_host.l0]
}
"#,
        &VarInputs::default(),
    );
    let ResourceSpec::KvmHost(h) = &c.resources[&addr("kvm_host.l0")].spec else { panic!() };
    assert_eq!(h.kvm_module_options["nested"], "1");
    assert_eq!(h.kvm_module_options["ept"], "0");
    assert_eq!(h.kvm_module_options["halt_poll_ns"], "0");
    let ResourceSpec::Benchmark(b) = &c.resources[&addr("benchmark.loop")].spec else { panic!() };
    let targets: Vec<String> = b.targets.iter().map(|t| t.to_string()).collect();
    assert_eq!(targets, ["kvm_host.l0", "nested_guest.g[\"a\"]", "nested_guest.g[\"b\"]"]);
    // Settings left out are the article's: three measured runs after one warm-up.
    assert_eq!((b.repeat, b.warmup), (3, 1));
}

#[test]
fn file_reads_relative_to_the_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kernel.txt"), "/srv/vmlinuz\n").unwrap();
    std::fs::write(
        dir.path().join("main.nf.hcl"),
        r#"
kvm_host "l0" {
  uri = "test:///default"
}
nested_guest "g" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
  lab {
    kernel = replace(file("kernel.txt"), "\n", "")
  }
}
"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("ignored.hcl"), "this is not parsed").unwrap();
    let c = nestform_config::load_dir(dir.path(), &VarInputs::default()).unwrap();
    let Some(nestform_types::InstallSpec::Lab(lab)) = guest(&c, "nested_guest.g").install else { panic!() };
    assert_eq!(lab.kernel.as_deref(), Some("/srv/vmlinuz"));
}

#[test]
fn format_is_canonical_and_idempotent() {
    let messy = "kvm_host \"l0\" {\nuri=\"test:///default\"\n      nested = true\n}\n";
    let once = nestform_config::format_source(messy).unwrap();
    let twice = nestform_config::format_source(&once).unwrap();
    assert_eq!(once, twice);
    assert!(once.contains("  uri    = \"test:///default\""), "{once}");
    assert!(nestform_config::format_source("a = = 1").is_err());
}

#[test]
fn a_thousand_guests_load_quickly() {
    let mut text = String::from("kvm_host \"l0\" {\n  uri = \"test:///default\"\n}\n");
    for i in 0..50 {
        text.push_str(&format!(
            "nested_guest \"g{i}\" {{\n  count  = 20\n  host   = kvm_host.l0\n  vcpus  = 1\n  memory = \"256MiB\"\n  disk \"root\" {{\n    size = \"1G\"\n  }}\n}}\n"
        ));
    }
    let start = std::time::Instant::now();
    let c = load(&text, &VarInputs::default());
    assert_eq!(c.resources.len(), 1001);
    // Debug builds on a shared 2-core machine: generous, but catches quadratic blow-ups.
    assert!(start.elapsed() < std::time::Duration::from_secs(3), "{:?}", start.elapsed());
}
