//! Every directory under `examples/` loads without a single diagnostic.

use std::path::Path;

use nestform_config::{load_dir, render_plain, VarInputs};

#[test]
fn every_example_loads_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut dirs: Vec<_> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    assert!(dirs.len() >= 3, "expected the examples in {}", root.display());
    for dir in dirs {
        let config = match load_dir(&dir, &VarInputs::default()) {
            Ok(c) => c,
            Err(d) => panic!("{}:\n{}", dir.display(), render_plain(&d)),
        };
        assert!(config.warnings.is_empty(), "{}:\n{}", dir.display(), render_plain(&config.warnings));
        assert!(!config.resources.is_empty(), "{}", dir.display());
    }
}

#[test]
fn inception_has_four_levels_and_the_article_disk() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/inception");
    let config = load_dir(&root, &VarInputs::default()).unwrap();
    let g3 = &config.resources[&"nested_guest.guest3".parse().unwrap()];
    let nestform_types::ResourceSpec::NestedGuest(g) = &g3.spec else { panic!() };
    assert_eq!(g.host.to_string(), "kvm_host.guest2");
    assert_eq!(g.disks[0].size, nestform_types::ByteSize::gib(36));
    assert_eq!(g.disks[0].cache, nestform_types::DiskCache::Unsafe);
    let sha = &config.resources[&"benchmark.sha256".parse().unwrap()];
    let nestform_types::ResourceSpec::Benchmark(b) = &sha.spec else { panic!() };
    assert_eq!(b.targets.len(), 4);
    assert!(sha.depends_on.contains(&"nested_guest.guest3".parse().unwrap()));
}

#[test]
fn examples_are_formatted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for entry in std::fs::read_dir(&root).unwrap() {
        let file = entry.unwrap().path().join("main.nf.hcl");
        let text = std::fs::read_to_string(&file).unwrap();
        let formatted = nestform_config::format_source(&text).unwrap();
        // `NF_BLESS=1` rewrites the examples in canonical form, like `nestform fmt`.
        if std::env::var_os("NF_BLESS").is_some() {
            std::fs::write(&file, &formatted).unwrap();
            continue;
        }
        assert_eq!(formatted, text, "`{}` is not formatted", file.display());
        assert_eq!(nestform_config::format_source(&formatted).unwrap(), formatted);
    }
}
