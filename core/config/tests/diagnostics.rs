//! Snapshot tests of rendered diagnostics: one per kind of problem the language reports.

use nestform_config::{load_sources, render_plain, SourceFile, VarInputs};

const HOST: &str = r#"
kvm_host "l0" {
  uri = "test:///default"
}
"#;

/// Loads `text` (after a level-0 host) and renders every diagnostic.
fn problems(text: &str) -> String {
    problems_with(text, &VarInputs::default())
}

fn problems_with(text: &str, vars: &VarInputs) -> String {
    let src = format!("{HOST}{text}");
    match load_sources(vec![SourceFile::new("main.nf.hcl", src)], vars) {
        Ok(_) => panic!("expected diagnostics for:\n{text}"),
        Err(d) => render_plain(&d),
    }
}

macro_rules! snap {
    ($name:ident, $text:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(problems($text));
        }
    };
}

snap!(
    a_sha256_file_larger_than_half_a_guests_memory,
    r#"
nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "384MiB"
  lab {}
}

benchmark "hash" {
  kind    = "sha256"
  targets = [kvm_host.l0, nested_guest.g1]
}
"#
);

snap!(
    benchmark_settings_of_another_kind,
    r#"
nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
  lab {}
}

benchmark "hash" {
  kind       = "sha256"
  targets    = [nested_guest.g1]
  size       = "64MiB"
  iterations = 10
  sizes      = []
}

benchmark "boot" {
  kind    = "boot"
  targets = [kvm_host.l0, nested_guest.g1]
  repeat  = 2
}
"#
);

snap!(parse_error, "nested_guest \"g1\" {\n  vcpus = = 2\n}\n");

snap!(unknown_block_type, "nested_gest \"g1\" {\n}\n");

snap!(
    unknown_attribute_and_block,
    r#"
nested_guest "g1" {
  host   = kvm_host.l0
  vcpu   = 2
  memory = "1GiB"
  disc "root" {
    size = "1G"
  }
}
"#
);

snap!(missing_required_attributes, "nested_guest \"g1\" {\n  host = kvm_host.l0\n}\n");

snap!(
    wrong_type,
    r#"
nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = "two"
  memory = "1GiB"
}
"#
);

snap!(
    bad_word_and_bad_size,
    r#"
nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "4 parsecs"
  disk "root" {
    size  = "1G"
    cache = "fast"
  }
}
"#
);

snap!(
    bad_cidr,
    r#"
nat_network "n" {
  host = kvm_host.l0
  cidr = "10.0.0.1/24"
}
nat_network "m" {
  host = kvm_host.l0
  cidr = "10.1.0/24"
}
"#
);

snap!(
    unknown_reference,
    r#"
nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
}
benchmark "b" {
  kind    = "boot"
  targets = [nested_guest.g1, nested_guest.nope]
}
"#
);

snap!(
    unknown_variable_and_local,
    r#"
variable "size" {
  default = "1GiB"
}
nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = local.cpus
  memory = var.sise
}
"#
);

snap!(
    wrong_reference_type,
    r#"
nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
}
nested_guest "g2" {
  host   = nested_guest.g1
  vcpus  = 1
  memory = "1GiB"
}
"#
);

snap!(
    duplicate_blocks,
    r#"
nat_network "n" {
  host = kvm_host.l0
  cidr = "10.0.0.0/24"
}
nat_network "n" {
  host = kvm_host.l0
  cidr = "10.1.0.0/24"
}
"#
);

snap!(
    duplicate_disk_and_network_labels,
    r#"
nat_network "n" {
  host = kvm_host.l0
  cidr = "10.0.0.0/24"
}
nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
  disk "root" {
    size = "1G"
  }
  disk "root" {
    size = "2G"
  }
  network "lan" {
    nat_network = nat_network.n
  }
  network "lan" {
    nat_network = nat_network.n
  }
}
"#
);

snap!(
    uri_and_guest,
    r#"
nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
}
kvm_host "both" {
  uri   = "qemu:///system"
  guest = nested_guest.g1
}
kvm_host "neither" {
  nested = true
}
"#
);

snap!(
    network_on_another_host,
    r#"
kvm_host "other" {
  uri = "qemu+ssh://root@other/system"
}
nat_network "far" {
  host = kvm_host.other
  cidr = "10.9.0.0/24"
}
nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
  network "lan" {
    nat_network = nat_network.far
  }
}
"#
);

snap!(
    resource_cycle,
    r#"
nested_guest "g1" {
  host   = kvm_host.l1
  vcpus  = 1
  memory = "1GiB"
}
kvm_host "l1" {
  guest  = nested_guest.g1
  nested = true
}
"#
);

snap!(
    locals_cycle,
    r#"
locals {
  a = local.b + 1
  b = local.c + 1
  c = local.a + 1
}
"#
);

snap!(
    cidr_overlap_on_one_host,
    r#"
nat_network "a" {
  host = kvm_host.l0
  cidr = "10.0.0.0/16"
}
nat_network "b" {
  host = kvm_host.l0
  cidr = "10.0.3.0/24"
}
"#
);

snap!(
    cidr_overlap_down_the_nesting_path,
    r#"
nat_network "outer" {
  host = kvm_host.l0
  cidr = "192.168.122.0/24"
}
nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
}
kvm_host "l1" {
  guest  = nested_guest.g1
  nested = true
}
nested_guest "g2" {
  host   = kvm_host.l1
  vcpus  = 1
  memory = "1GiB"
}
kvm_host "l2" {
  guest  = nested_guest.g2
  nested = true
}
nat_network "inner" {
  host = kvm_host.l2
  cidr = "192.168.122.0/24"
}
"#
);

snap!(
    promoted_host_without_nesting,
    r#"
nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
}
kvm_host "l1" {
  guest = nested_guest.g1
}
nested_guest "g2" {
  host   = kvm_host.l1
  vcpus  = 1
  memory = "1GiB"
}
"#
);

snap!(
    computed_attribute_in_a_resource,
    r#"
nested_guest "g1" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
}
nested_guest "g2" {
  host   = kvm_host.l0
  name   = "after-${nested_guest.g1.id}"
  vcpus  = 1
  memory = "1GiB"
}
"#
);

snap!(
    missing_file,
    r#"
locals {
  key = lower(file("does-not-exist.pub"))
  motd = upper(file("does-not-exist.txt"))
}
"#
);

snap!(
    count_and_for_each_misuse,
    r#"
nested_guest "g1" {
  count    = 2
  for_each = toset(["a"])
  host     = kvm_host.l0
  vcpus    = 1
  memory   = "1GiB"
}
nested_guest "g2" {
  host   = kvm_host.l0
  name   = each.key
  vcpus  = 1
  memory = "1GiB"
}
"#
);

snap!(variable_without_value, "variable \"uri\" {\n  description = \"where\"\n}\n");

#[test]
fn bad_cli_variable() {
    let vars =
        VarInputs { cli: vec![("cpus".into(), "many".into()), ("nope".into(), "1".into())], files: vec![] };
    insta::assert_snapshot!(problems_with("variable \"cpus\" {\n  type = number\n}\n", &vars));
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let out = problems(
        r#"
nested_guest "g1" {
  host   = kvm_host.nope
  vcpus  = "x"
  memory = "1GiB"
}
nat_network "n" {
  host = kvm_host.l0
  cidr = "300.0.0.0/24"
}
widget "w" {
}
"#,
    );
    for expected in [
        "unknown reference `kvm_host.nope`",
        "`vcpus` must be a whole number",
        "not an IPv4 CIDR",
        "unknown block type `widget`",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    insta::assert_snapshot!(out);
}

snap!(
    reference_written_as_a_string,
    r#"
nested_guest "g1" {
  host   = "kvm_host.l9"
  vcpus  = 1
  memory = "1GiB"
}
"#
);

#[test]
fn a_parse_error_stops_before_evaluation() {
    let files = vec![
        SourceFile::new(
            "a.nf.hcl",
            "nested_guest \"g\" {\n  host = kvm_host.l0\n  vcpus = 1\n  memory = \"1G\"\n}\n",
        ),
        SourceFile::new("b.nf.hcl", "kvm_host \"l0\" {\n  uri = \n}\n"),
    ];
    let err = load_sources(files, &VarInputs::default()).unwrap_err();
    assert_eq!(err.len(), 1, "{}", render_plain(&err));
    assert!(err.0[0].summary.starts_with("cannot parse `b.nf.hcl`"));
}

snap!(
    reference_to_every_instance,
    r#"
kvm_host "many" {
  count = 2
  uri   = "test:///default"
}
nested_guest "g1" {
  host   = kvm_host.many
  vcpus  = 1
  memory = "1GiB"
}
"#
);
