//! Fuzzing the HCL front end on the stable toolchain, driven by proptest: token soup built from
//! nestform's language, and the examples with bytes cut, doubled and replaced. Loading must never
//! panic or run away (each case has a time limit), and every diagnostic must point inside its file on
//! character boundaries and render the way the CLI shows it.
//!
//! `cargo test` runs a bounded number of cases (CI). By hand, ten minutes per target:
//! `NESTFORM_FUZZ_SECS=600 cargo test --release -p nestform-config --test fuzz -- --nocapture
//! --test-threads 1`.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use nestform_config::{load_sources, render_plain, Diagnostics, SourceFile};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Runs `test` on values of `strategy`: one round of cases, or rounds until `NESTFORM_FUZZ_SECS` have
/// passed, each round with a fresh random seed.
fn fuzz<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let secs: u64 = std::env::var("NESTFORM_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut total = 0u64;
    loop {
        let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("fuzz {name}: after {total} cases: {e}");
        }
        total += u64::from(cases);
        if Instant::now() >= deadline {
            break;
        }
    }
    eprintln!("fuzz {name}: {total} cases, no failure");
}

/// Loads `text` as `main.nf.hcl` on its own thread, failing the case after 10 s; then checks what it
/// reports.
fn load_checked(text: String) -> Result<(), TestCaseError> {
    let (tx, rx) = mpsc::channel();
    let source = text.clone();
    std::thread::Builder::new()
        // Deeply nested input recurses; give it what the CLI's main thread has.
        .stack_size(8 << 20)
        .spawn(move || {
            let loaded = std::panic::catch_unwind(|| {
                let result = load_sources(vec![SourceFile::new("main.nf.hcl", source)], &Default::default());
                let diags = match result {
                    Ok(config) => config.warnings,
                    Err(diags) => diags,
                };
                let rendered = render_plain(&diags);
                (diags, rendered)
            });
            let _ = tx.send(loaded.map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            }));
        })
        .unwrap();
    let (diags, rendered) = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| TestCaseError::fail("loading took over 10 s"))?
        .map_err(|panic| TestCaseError::fail(format!("loading panicked: {}", panic.unwrap_or_default())))?;
    check_ranges(&diags, &text)?;
    // Wrapped at 100 columns with a frame drawn around it: compare letters and digits only.
    let letters = |t: &str| t.chars().filter(|c| c.is_alphanumeric()).collect::<String>();
    let shown = letters(&rendered);
    for d in diags.iter() {
        prop_assert!(
            shown.contains(&letters(&d.summary)),
            "`{}` is missing from the rendering:\n{rendered}",
            d.summary
        );
    }
    Ok(())
}

fn check_ranges(diags: &Diagnostics, text: &str) -> Result<(), TestCaseError> {
    for d in diags.iter() {
        let ranges = d.range.iter().chain(d.related.iter().map(|(r, _)| r));
        for r in ranges {
            if r.file.name != "main.nf.hcl" {
                continue;
            }
            let span = &r.span;
            prop_assert!(
                span.start <= span.end && span.end <= text.len(),
                "{span:?} outside {} bytes: {}",
                text.len(),
                d.summary
            );
            prop_assert!(
                text.is_char_boundary(span.start) && text.is_char_boundary(span.end),
                "{span:?} splits a character: {}",
                d.summary
            );
        }
    }
    Ok(())
}

const TOKENS: &[&str] = &[
    "kvm_host",
    "nat_network",
    "nested_guest",
    "benchmark",
    "variable",
    "locals",
    "output",
    "\"l0\"",
    "\"g\"",
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "=",
    ",",
    ".",
    ":",
    "?",
    "...",
    "=>",
    "\n",
    "\n",
    " ",
    "host",
    "uri",
    "\"qemu:///system\"",
    "kvm_host.l0",
    "nested_guest.g",
    "nat_network.lan",
    "cidr",
    "\"10.0.0.0/24\"",
    "memory",
    "\"512MiB\"",
    "\"0\"",
    "vcpus",
    "count",
    "count.index",
    "for_each",
    "each.key",
    "each.value",
    "var.x",
    "local.y",
    "1",
    "0",
    "-1",
    "1e9",
    "1e18",
    "3.5",
    "true",
    "false",
    "null",
    "\"${",
    "${",
    "%{",
    "\"",
    "for",
    "in",
    "if",
    "x",
    "k",
    "v",
    "range(",
    "length(",
    "concat(",
    "format(",
    "\"%s\"",
    "upper(",
    "file(",
    "\"/nonexistent\"",
    "+",
    "*",
    "/",
    "%",
    "==",
    "&&",
    "||",
    "!",
    "<",
    ">",
    "#",
    "//",
    "/*",
    "*/",
    "<<EOF\n",
    "\nEOF\n",
    "<<-EOT\n",
    "network",
    "\"eth0\"",
    "disk",
    "\"root\"",
    "size",
    "depends_on",
    "timeouts",
    "create",
    "\"10m\"",
    "\"1e9h\"",
    "name",
    "\"a/b\"",
    "\"a\\u0000b\"",
    "mac",
    "\"52:54:00:zz\"",
    "domain",
    "\"a&b\"",
    "é",
    "𝔘",
    "\t",
    "\r\n",
    "\\",
];

#[test]
fn token_soup_never_panics_and_points_inside_the_file() {
    let soup =
        prop::collection::vec(prop::sample::select(TOKENS), 0..160).prop_map(|tokens| tokens.join(" "));
    fuzz("hcl token soup", 1500, soup, load_checked);
}

/// A structured start that reaches deep into evaluation, with random values put in.
#[test]
fn generated_blocks_never_panic() {
    let value = prop::sample::select(TOKENS).prop_map(|t| t.to_string());
    let input = (value.clone(), value.clone(), value.clone(), value);
    fuzz("hcl blocks", 1500, input, |(a, b, c, d)| {
        load_checked(format!(
            r#"
kvm_host "l0" {{
  uri = "qemu:///system"
}}

nat_network "lan" {{
  host = kvm_host.l0
  cidr = {a}
}}

nested_guest "g" {{
  count  = {b}
  host   = kvm_host.l0
  memory = {c}
  vcpus  = {d}
  network "eth0" {{
    nat_network = nat_network.lan
  }}
}}
"#
        ))
    });
}

fn examples() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut texts = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path().join("main.nf.hcl");
        if let Ok(text) = std::fs::read_to_string(&path) {
            texts.push(text);
        }
    }
    assert!(!texts.is_empty(), "no example found in {dir}");
    texts
}

/// An edit of a byte range: cut it, double it, or put arbitrary text in its place.
#[derive(Debug, Clone)]
enum Edit {
    Cut(usize, usize),
    Double(usize, usize),
    Put(usize, usize, String),
}

fn apply(text: &str, edit: &Edit) -> String {
    let bytes = text.as_bytes();
    let at = |i: usize| i % (bytes.len() + 1);
    let range = |a: usize, n: usize| {
        let start = at(a);
        (start, (start + n % 64).min(bytes.len()))
    };
    let mut out: Vec<u8> = match edit {
        Edit::Cut(a, n) => {
            let (s, e) = range(*a, *n);
            [&bytes[..s], &bytes[e..]].concat()
        }
        Edit::Double(a, n) => {
            let (s, e) = range(*a, *n);
            [&bytes[..e], &bytes[s..]].concat()
        }
        Edit::Put(a, n, put) => {
            let (s, e) = range(*a, *n);
            [&bytes[..s], put.as_bytes(), &bytes[e..]].concat()
        }
    };
    // Configuration files are UTF-8 (a file that is not fails when read, before parsing): cut edits
    // back to valid text.
    while std::str::from_utf8(&out).is_err() {
        let valid = std::str::from_utf8(&out).unwrap_err().valid_up_to();
        out.remove(valid);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn edited_examples_never_panic_and_point_inside_the_file() {
    let examples = examples();
    let edit = prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(a, n)| Edit::Cut(a, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, n)| Edit::Double(a, n)),
        (any::<usize>(), any::<usize>(), prop::sample::select(TOKENS)).prop_map(|(a, n, t)| Edit::Put(
            a,
            n,
            t.into()
        )),
        (any::<usize>(), any::<usize>(), "\\PC{0,8}").prop_map(|(a, n, t)| Edit::Put(a, n, t)),
    ];
    let input = (0..examples.len(), prop::collection::vec(edit, 1..6));
    fuzz("hcl edited examples", 1000, input, |(which, edits)| {
        let mut text = examples[which].clone();
        for e in &edits {
            text = apply(&text, e);
        }
        load_checked(text)
    });
}
