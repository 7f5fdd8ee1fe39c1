//! The report of a state, written to a directory and read back: the page, the samples and the CSV,
//! and (where Chromium is installed) the page as a browser draws it.

mod fixture;
mod page;

use std::path::PathBuf;

use nestform_types::bench::Sample;
use serde_json::json;

/// Where a test writes its report: in `tmp`, or under `NESTFORM_REPORT_KEEP` to look at it after.
pub fn out_dir(tmp: &tempfile::TempDir, name: &str) -> PathBuf {
    match std::env::var_os("NESTFORM_REPORT_KEEP") {
        Some(keep) => PathBuf::from(keep).join(name),
        None => tmp.path().join(name),
    }
}

#[test]
fn the_report_has_a_chart_per_benchmark_every_sample_and_a_csv_that_reads_back() {
    let state = fixture::state();
    let dir = tempfile::tempdir().unwrap();
    let out = out_dir(&dir, "report");
    let written = nestform_report::write(&state, &out).unwrap();
    assert_eq!(written.index, out.join("index.html"));
    assert!(written.paths().iter().all(|p| p.is_file()), "{written:?}");

    let html = std::fs::read_to_string(&written.index).unwrap();
    // A chart per benchmark, and the shell loop's steps beside the article's.
    assert_eq!(html.matches("<svg").count(), 4);
    for t in fixture::targets() {
        let escaped = t.addr.replace('"', "&quot;");
        assert!(html.contains(&format!("<code>{escaped}</code>")), "{} is in a table", t.addr);
    }
    // The shell loop's steps, measured and the article's, in its table and its second chart.
    let shell = &html[html.find("id=\"benchmark-shell_loop\"").unwrap()..];
    let shell = &shell[..shell.find("</section>").unwrap()];
    let steps = &shell[shell.rfind("<svg").unwrap()..];
    assert_eq!(steps.matches("\narticle\n").count(), 3, "an article bar per step: {steps}");
    for step in ["+29%", "+6%", "+140%", "+800%", "+28%", "+665%"] {
        assert!(steps.contains(&format!("\n{step}\n")), "the steps chart shows `{step}`");
    }
    for step in ["+29%", "+6%", "+140%"] {
        assert!(shell.contains(&format!("<td class=\"num muted\">{step}</td>")), "the table shows `{step}`");
    }
    assert!(html.contains("<th class=\"num\">article</th>"), "the table has the article's column");
    assert!(html.contains("Nested KVM: inception") && html.contains("Christian Horn"));
    assert!(html.contains("2025-10-09 08:53:2") && html.contains(fixture::RUN_ID), "when it ran");
    assert!(html.contains("level 0 <code>kvm_host.l0</code> (tcg, QEMU 7.2.19)"), "the host chain");
    // Self-contained: the SVG namespace is a name, not a place anything is fetched from.
    let rest = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!rest.contains("http://") && !rest.contains("https://"), "nothing is fetched");
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("<img"));

    let (samples, rows) = fixture::counts(&state);
    let ndjson = std::fs::read_to_string(&written.samples).unwrap();
    let parsed: Vec<Sample> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(parsed.len(), samples);
    assert!(parsed.iter().all(|s| s.metadata.contains_key("run_id")));

    let mut csv = csv::Reader::from_path(&written.results).unwrap();
    let header: Vec<String> = csv.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header.join(","), "benchmark,target,level,unit,n,median,mean,stddev,mad,min,max,vs_below");
    let records: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), rows);
    let deepest = records
        .iter()
        .find(|r| &r[0] == "benchmark.shell_loop" && &r[1] == r#"nested_guest.node["a"]"#)
        .expect("the quoted address reads back whole");
    assert_eq!((&deepest[2], &deepest[4], &deepest[5]), ("3", "5", "17.6"));
    let vs: f64 = deepest[11].parse().unwrap();
    assert!((vs - 17.6 / 2.3).abs() < 1e-9, "{vs}");
    let top = records.iter().find(|r| &r[0] == "benchmark.shell_loop" && &r[2] == "0").unwrap();
    assert_eq!(&top[11], "", "level 0 has no level below");

    // Written again over itself, whole.
    nestform_report::write(&state, &out).unwrap();
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with(".report")), "no temporary file is left: {names:?}");
}

#[test]
fn block_reads_are_charted_against_size_and_a_network_is_a_matrix() {
    let t = fixture::targets();
    let mut state = fixture::state();
    // Cold and hot reads of 4 MiB, 64 MiB and 1 GiB: the disk's speed, then the page cache's.
    let sizes = [
        ("block_read_cold", 4u64 << 20, 410.0, 120.0),
        ("block_read_cold", 64 << 20, 900.0, 260.0),
        ("block_read_cold", 1 << 30, 1400.0, 310.0),
        ("block_read_hot", 4 << 20, 2500.0, 420.0),
        ("block_read_hot", 64 << 20, 3100.0, 640.0),
        ("block_read_hot", 1 << 30, 3300.0, 700.0),
    ];
    let mut block = fixture::benchmark("block_read", "block_read_cold", "MB/s", json!({}), &[]);
    for (metric, size, l0, l1) in sizes {
        let more = fixture::benchmark(
            "block_read",
            metric,
            "MB/s",
            json!({"size_bytes": size}),
            &[(&t[0], vec![l0, l0 * 1.02]), (&t[1], vec![l1, l1 * 0.97])],
        );
        if metric == "block_read_cold" && size == 1 << 30 {
            block.attributes["results"] = more.attributes["results"].clone();
        }
        let samples = block.attributes["samples"].as_array_mut().unwrap();
        samples.extend(more.attributes["samples"].as_array().unwrap().iter().cloned());
    }
    state.resources.insert("benchmark.disk".parse().unwrap(), block);
    let shapeless =
        fixture::benchmark("block_read", "block_read", "MB/s", json!({}), &[(&t[0], vec![400.0])]);
    state.resources.insert("benchmark.disk_old".parse().unwrap(), shapeless);
    let mut net = fixture::benchmark("network", "network_throughput", "MB/s", json!({}), &[]);
    let summary = |v: f64| {
        serde_json::to_value(nestform_types::bench::Summary::of(&[v, v * 0.9, v * 1.1], "MB/s").unwrap())
            .unwrap()
    };
    net.attributes["results"] = json!({
        "nested_guest.guest1 -> nested_guest.guest2": summary(310.0),
        "nested_guest.guest2 -> nested_guest.guest1": summary(290.0),
        "kvm_host.l0 -> nested_guest.guest1": summary(1200.0),
    });
    state.resources.insert("benchmark.net".parse().unwrap(), net);

    let dir = tempfile::tempdir().unwrap();
    let written = nestform_report::write(&state, &out_dir(&dir, "shapes")).unwrap();
    let html = std::fs::read_to_string(&written.index).unwrap();
    // The four before, and the block read that has sizes; not the one without, nor the network.
    assert_eq!(html.matches("<svg").count(), 5);
    let disk = &html[html.find("id=\"benchmark-disk\"").unwrap()..];
    let disk = &disk[..disk.find("</section>").unwrap()];
    assert!(disk.contains("cold (from the disk)") && disk.contains("hot (from the page cache)"));
    assert!(disk.contains("\n64 MiB\n") && disk.contains("\n1 GiB\n"), "ticks at the sizes read");
    let old = &html[html.find("id=\"benchmark-disk_old\"").unwrap()..];
    assert!(old[..old.find("</section>").unwrap()].contains("No chart"));
    let net = &html[html.find("id=\"benchmark-net\"").unwrap()..];
    let net = &net[..net.find("</section>").unwrap()];
    assert!(net.contains("class=\"matrix\"") && !net.contains("<svg"), "{net}");
    // Servers are rows, clients columns: two clients, three servers, one pair not measured.
    assert_eq!(net.matches("<tr><th><code>").count(), 3, "{net}");
    assert!(net.contains("1200.0 MB/s") && net.contains("<span class=\"muted\">–</span>"), "{net}");
}
