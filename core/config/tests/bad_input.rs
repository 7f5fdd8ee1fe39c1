//! Snapshot tests of diagnostics for input that would otherwise fail late (in libvirt, on a host)
//! or exhaust the machine that plans it: limits on instances and values, names, sizes, MAC
//! addresses, unreadable files. Kept apart from `diagnostics.rs` to keep each file short.

use nestform_config::{load_dir, load_sources, render_plain, Diagnostics, SourceFile, VarInputs};

const HOST: &str = r#"
kvm_host "l0" {
  uri = "test:///default"
}
"#;

/// Loads `text` (after a level-0 host) and renders every diagnostic.
fn problems(text: &str) -> String {
    render_plain(&diagnostics(text))
}

fn diagnostics(text: &str) -> Diagnostics {
    let src = format!("{HOST}{text}");
    match load_sources(vec![SourceFile::new("main.nf.hcl", src)], &VarInputs::default()) {
        Ok(_) => panic!("expected diagnostics for:\n{text}"),
        Err(d) => d,
    }
}

/// The one diagnostic of `text`: its summary and the line and text it points at.
fn only(text: &str) -> (String, usize, String) {
    let d = diagnostics(text);
    assert_eq!(d.len(), 1, "{}", render_plain(&d));
    let r = d.0[0].range.as_ref().expect("a diagnostic with a place");
    (d.0[0].summary.clone(), r.line_col().0, r.text().to_string())
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
    count_beyond_the_instance_limit,
    r#"
nested_guest "many" {
  count  = 1e9
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
}
"#
);

#[test]
fn a_huge_count_is_refused_without_allocating() {
    // 1e18 instances overflowed a `Vec`'s capacity before the limit.
    let text = "nested_guest \"g\" {\n  count  = 1e18\n  host   = kvm_host.l0\n  vcpus  = 1\n  memory = \"1GiB\"\n}\n";
    let (summary, line, at) = only(text);
    assert_eq!(
        summary,
        "`count` asks for 1000000000000000000 instances, more than the 1000 one block may have"
    );
    assert_eq!((line, at.as_str()), (6, "1e18"));
}

#[test]
fn for_each_beyond_the_instance_limit() {
    let text = "nat_network \"n\" {\n  for_each = toset([for i in range(1001) : \"n${i}\"])\n  host     = kvm_host.l0\n  cidr     = \"10.0.0.0/24\"\n}\n";
    let (summary, line, _) = only(text);
    assert_eq!(summary, "`for_each` asks for 1001 instances, more than the 1000 one block may have");
    assert_eq!(line, 6);
}

#[test]
fn a_thousand_instances_are_fine() {
    let text = format!(
        "{HOST}nested_guest \"g\" {{\n  count  = 1000\n  host   = kvm_host.l0\n  vcpus  = 1\n  memory = \"1GiB\"\n}}\n"
    );
    let c = load_sources(vec![SourceFile::new("main.nf.hcl", text)], &VarInputs::default()).unwrap();
    assert_eq!(c.resources.len(), 1001);
}

/// A directory holding a valid `a.nf.hcl` and whatever `add` puts next to it.
fn dir_with(
    add: impl FnOnce(&std::path::Path),
) -> (tempfile::TempDir, Result<nestform_config::Config, Diagnostics>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.nf.hcl"), HOST).unwrap();
    add(dir.path());
    let got = load_dir(dir.path(), &VarInputs::default());
    (dir, got)
}

#[test]
fn unreadable_configuration_entries_are_errors() {
    use std::os::unix::fs::symlink;
    let (dir, got) = dir_with(|d| {
        symlink("/nonexistent/x", d.join("dangling.nf.hcl")).unwrap();
        std::fs::create_dir(d.join("dir.nf.hcl")).unwrap();
        symlink(d.join("loop.nf.hcl"), d.join("loop.nf.hcl")).unwrap();
        // An editor's lock file, not configuration.
        symlink("user@host.1234", d.join(".#a.nf.hcl")).unwrap();
    });
    let d = got.expect_err("unreadable entries must not be skipped");
    let mut summaries: Vec<String> = d.iter().map(|d| d.summary.clone()).collect();
    summaries.sort();
    let p = |n: &str| dir.path().join(n).display().to_string();
    assert_eq!(
        summaries,
        [
            format!("`{}` is not a file", p("dir.nf.hcl")),
            format!("cannot read `{}`: No such file or directory (os error 2)", p("dangling.nf.hcl")),
            format!("cannot read `{}`: Too many levels of symbolic links (os error 40)", p("loop.nf.hcl")),
        ]
    );
    assert!(d.iter().all(|d| d.help.as_deref().unwrap_or_default().contains("fix or remove")
        || d.help.as_deref().unwrap_or_default().contains("rename or remove")));
}

#[test]
fn a_variables_file_with_a_block_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.nf.hcl"), format!("{HOST}variable \"cpus\" {{\n  default = 1\n}}\n"))
        .unwrap();
    let vars = dir.path().join("lab.tfvars");
    std::fs::write(&vars, "cpus = 2\n\nnested_guest \"g\" {\n  vcpus = 1\n}\n").unwrap();
    let d = load_dir(dir.path(), &VarInputs { cli: vec![], files: vec![vars.clone()] })
        .expect_err("a block in a variables file must not be ignored");
    assert_eq!(d.len(), 1, "{}", render_plain(&d));
    let r = d.0[0].range.as_ref().unwrap();
    assert_eq!(
        d.0[0].summary,
        format!(
            "`{}` holds a block `nested_guest`; a variables file holds only `name = value` attributes",
            vars.display()
        )
    );
    assert_eq!((r.line_col(), r.text()), ((3, 1), "nested_guest \"g\""));
}

snap!(
    zero_sizes,
    r#"
nested_guest "g" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "0"
  disk "root" {
    size = "0GiB"
  }
  disk "data" {
    size = 0
  }
}
"#
);

snap!(
    names_libvirt_cannot_take,
    r#"
nat_network "n" {
  host = kvm_host.l0
  name = "lan/1"
  cidr = "10.0.0.0/24"
}
nested_guest "nul" {
  host   = kvm_host.l0
  name   = "a\u0000b"
  vcpus  = 1
  memory = "1GiB"
}
nested_guest "dots" {
  host   = kvm_host.l0
  name   = ".."
  vcpus  = 1
  memory = "1GiB"
}
nested_guest "long" {
  host   = kvm_host.l0
  name   = "${join("", [for i in range(13) : "0123456789"])}"
  vcpus  = 1
  memory = "1GiB"
}
"#
);

#[test]
fn a_name_made_from_an_instance_key_is_checked_at_the_header() {
    let text = "nested_guest \"w\" {\n  for_each = toset([\"a/b\"])\n  host     = kvm_host.l0\n  vcpus    = 1\n  memory   = \"1GiB\"\n}\n";
    let (summary, line, at) = only(text);
    assert_eq!(
        summary,
        "`name` `w-a/b` contains `/`, which a name cannot hold (the name comes from `nested_guest.w[\"a/b\"]`)"
    );
    assert_eq!((line, at.as_str()), (5, "nested_guest \"w\""));
}

snap!(
    disk_labels_and_volume_file_names,
    r#"
nested_guest "g" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
  disk "../etc" {
    size = "1G"
  }
  disk "a..b" {
    size = "1G"
  }
}
nested_guest "long" {
  host   = kvm_host.l0
  name   = "${join("", [for i in range(12) : "0123456789"])}"
  vcpus  = 1
  memory = "1GiB"
  disk "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij" {
    size = "1G"
  }
}
"#
);

snap!(
    bad_mac_addresses,
    r#"
nat_network "n" {
  host = kvm_host.l0
  cidr = "10.0.0.0/24"
}
nested_guest "g" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
  network "a" {
    nat_network = nat_network.n
    mac         = "52:54:00:12:34"
  }
  network "b" {
    nat_network = nat_network.n
    mac         = "52:54:00:12:34:zz"
  }
  network "c" {
    nat_network = nat_network.n
    mac         = "01:00:5e:00:00:01"
  }
}
"#
);

snap!(
    bad_dns_domain,
    r#"
nat_network "n" {
  host   = kvm_host.l0
  cidr   = "10.0.0.0/24"
  domain = "lab</domain><x>"
}
nat_network "m" {
  host   = kvm_host.l0
  cidr   = "10.1.0.0/24"
  domain = "-lab.example"
}
"#
);

#[test]
fn good_names_macs_and_domains_load() {
    let text = format!(
        r#"{HOST}
nat_network "n" {{
  host   = kvm_host.l0
  name   = "lab-net.1"
  cidr   = "10.0.0.0/24"
  domain = "lab.example"
}}
nested_guest "g" {{
  host   = kvm_host.l0
  name   = "web_1"
  vcpus  = 1
  memory = 1073741824
  disk "root.v2" {{
    size = "1G"
  }}
  network "eth0" {{
    nat_network = nat_network.n
    mac         = "52:54:00:AB:cd:01"
  }}
}}
"#
    );
    load_sources(vec![SourceFile::new("main.nf.hcl", text)], &VarInputs::default()).unwrap();
}

#[test]
fn a_deep_chain_of_locals_loads_in_linear_time() {
    // Each local's context held every local evaluated so far (n²/2 copies: 6,000 took 7.5 s), and
    // the recursive ordering overflowed the stack at 30,000.
    let n = 30_000;
    let mut text = format!("{HOST}locals {{\n  l0 = 0\n");
    for i in 1..n {
        text.push_str(&format!("  l{i} = local.l{} + 1\n", i - 1));
    }
    text.push_str(&format!(
        "}}\nnested_guest \"g\" {{\n  host   = kvm_host.l0\n  vcpus  = 1\n  memory = \"${{local.l{}}}MiB\"\n}}\n",
        n - 1
    ));
    let started = std::time::Instant::now();
    let c = load_sources(vec![SourceFile::new("main.nf.hcl", text)], &VarInputs::default()).unwrap();
    let took = started.elapsed();
    let g = &c.resources[&"nested_guest.g".parse().unwrap()].spec;
    let nestform_types::ResourceSpec::NestedGuest(g) = g else { panic!("{g:?}") };
    assert_eq!(g.memory, nestform_types::ByteSize::mib(n - 1));
    // About 2 s in a debug build; quadratic work took minutes.
    assert!(took < std::time::Duration::from_secs(60), "took {took:?}");
}

snap!(
    nested_for_expressions_beyond_the_limit,
    r#"
locals {
  small = [for a in range(10) : [for b in range(10) : a * b]]
  grid  = length([for a in range(1000) : [for b in range(1000) : b]])
  huge  = [for a in range(100000) : [for b in range(100000) : b]]
}
"#
);

#[test]
fn doubling_through_locals_stops_at_the_value_limit() {
    // Each step only doubles its input, so no one `for` is large; the values are.
    let mut text = String::from("locals {\n  d0 = range(1000)\n");
    for i in 1..20 {
        text.push_str(&format!("  d{i} = concat(local.d{0}, local.d{0})\n", i - 1));
    }
    text.push_str("}\n");
    let (summary, line, at) = only(&text);
    assert_eq!(summary, "this expression is too large: the value has more than 100000 elements");
    // 1000 * 2^7 = 128000 elements: `d7`, on the line after `d6`.
    assert_eq!((line, at.as_str()), (13, "concat(local.d6, local.d6)"));
}

#[test]
fn a_default_that_builds_too_much_is_refused() {
    let text = "variable \"v\" {\n  default = [for a in range(1000) : [for b in range(1000) : b]]\n}\n";
    let (summary, line, _) = only(text);
    assert_eq!(
        summary,
        "the default of `var.v` cannot be evaluated: it is too large: its `for` expressions take more than 1000000 steps"
    );
    assert_eq!(line, 6);
}

#[test]
fn a_timeout_that_is_not_a_duration_is_an_error_at_its_attribute() {
    let text = "nested_guest \"g\" {\n  host   = kvm_host.l0\n  vcpus  = 1\n  memory = \"1GiB\"\n  timeouts {\n    create = \"soon\"\n  }\n}\n";
    let (summary, line, at) = only(text);
    assert!(summary.starts_with("`timeouts.create`: `soon` is not a duration"), "{summary}");
    // Line 6 of the text, after the host's five lines.
    assert_eq!((line, at.as_str()), (HOST.lines().count() + 6, "\"soon\""));
}

snap!(
    timeouts_blocks_that_cannot_be,
    r#"
nested_guest "g" {
  host   = kvm_host.l0
  vcpus  = 1
  memory = "1GiB"
  timeouts {
    create = "0s"
    destroy = "5m"
  }
  timeouts {
    update = "1m"
  }
}
"#
);

#[test]
fn timeouts_are_decoded_beside_the_spec() {
    let text = format!(
        "{HOST}nested_guest \"g\" {{\n  host   = kvm_host.l0\n  vcpus  = 1\n  memory = \"1GiB\"\n  timeouts {{\n    create = \"45m\"\n    delete = \"2m\"\n  }}\n}}\n"
    );
    let config =
        load_sources(vec![SourceFile::new("main.nf.hcl", text)], &VarInputs::default()).expect("valid");
    let g = &config.resources[&"nested_guest.g".parse().unwrap()];
    assert_eq!(g.timeouts.create.as_deref(), Some("45m"));
    assert_eq!(g.timeouts.create(), Some(std::time::Duration::from_secs(45 * 60)));
    assert_eq!(g.timeouts.update, None);
    assert_eq!(g.timeouts.delete(), Some(std::time::Duration::from_secs(120)));
    // Not part of what the guest is: its spec (and so its state and diff) holds no timeouts.
    assert!(!serde_json::to_string(&g.spec).unwrap().contains("45m"));
}

/// Found by the fuzzer (`tests/fuzz.rs`): the parser's error offset can fall inside a multi-byte
/// character, and rendering the diagnostic sliced that character and panicked. The error now points
/// at the whole character.
#[test]
fn a_syntax_error_at_a_multi_byte_character_is_reported_not_a_panic() {
    for text in ["disk é", "kvm_host \"l0\" {\n  uri = \"x\"\n}\n𓮡", "nested_guest \"g\" { Ა }"] {
        let out = problems(text);
        assert!(out.contains("cannot parse `main.nf.hcl`"), "{text:?}: {out}");
    }
    let diags = diagnostics("disk é");
    let range = diags.iter().next().unwrap().range.as_ref().unwrap();
    let shown = &range.file.text[range.span.clone()];
    assert!(shown.chars().count() <= 1, "{shown:?}");
    // The same for `nestform fmt`.
    let err = nestform_config::format_source("disk é").unwrap_err();
    assert!(render_plain(&err).contains("cannot parse"));
}
