//! The benchmark table `apply` ends with and `nestform report` prints: a row per benchmark and
//! target, with its level, median, spread, runs and the ratio to the level below on its path.

use nestform_state::State;
use nestform_types::bench::Summary;
use nestform_types::ResourceType;

/// One row of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub benchmark: String,
    pub target: String,
    pub level: u32,
    pub summary: Summary,
    /// Recorded tainted: some target failed, or the benchmark must run again.
    pub tainted: bool,
}

/// Every benchmark's results in `state`, by benchmark, then by level and target.
pub fn rows(state: &State) -> Vec<Row> {
    let mut rows = Vec::new();
    for (addr, r) in state.resources.iter().filter(|(a, _)| a.ty == ResourceType::Benchmark) {
        let Some(results) = r.attributes.get("results").and_then(|v| v.as_object()) else { continue };
        for (target, summary) in results {
            let Ok(summary) = serde_json::from_value::<Summary>(summary.clone()) else { continue };
            let level = target
                .parse()
                .ok()
                .and_then(|t| state.resources.get(&t))
                .map(|t| t.level)
                .unwrap_or_default();
            rows.push(Row {
                benchmark: addr.name.clone() + &addr.key.as_ref().map(|k| k.to_string()).unwrap_or_default(),
                target: target.clone(),
                level,
                summary,
                tainted: r.tainted,
            });
        }
    }
    rows.sort_by(|a, b| (&a.benchmark, a.level, &a.target).cmp(&(&b.benchmark, b.level, &b.target)));
    rows
}

/// The table as text; empty when nothing was measured.
pub fn table(state: &State) -> String {
    let rows = rows(state);
    if rows.is_empty() {
        return String::new();
    }
    let head = ["benchmark", "target", "level", "median", "spread (MAD)", "n", "vs level below"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let s = &r.summary;
            [
                format!("{}{}", r.benchmark, if r.tainted { " (tainted)" } else { "" }),
                r.target.clone(),
                r.level.to_string(),
                value(s.median, &s.unit),
                format!("±{}", value(s.mad, &s.unit)),
                s.n.to_string(),
                s.vs_below.map(percent).unwrap_or_default(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|i| cells.iter().map(|c| c[i].len()).chain([head[i].len()]).max().unwrap_or(0))
        .collect();
    // Numbers are right-aligned, names left.
    let right = [false, false, true, true, true, true, true];
    let line = |cells: &[String]| {
        let parts: Vec<String> =
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if right[i] {
                        format!("{c:>w$}", w = widths[i])
                    } else {
                        format!("{c:<w$}", w = widths[i])
                    }
                })
                .collect();
        format!("  {}\n", parts.join("  ").trim_end())
    };
    let mut out = line(&head.map(String::from));
    for c in &cells {
        out.push_str(&line(c));
    }
    out
}

/// `1.23 s`, `950 ms`, `412.5 MB/s`.
pub fn value(v: f64, unit: &str) -> String {
    match unit {
        "s" if v.abs() < 1.0 => format!("{:.1} ms", v * 1000.0),
        "s" => format!("{v:.2} s"),
        _ => format!("{v:.1} {unit}"),
    }
}

/// A ratio as the article writes its steps: 1.29 is `+29%`, 0.8 is `-20%`.
pub fn percent(ratio: f64) -> String {
    let p = (ratio - 1.0) * 100.0;
    if p.abs() < 0.5 {
        "±0%".into()
    } else {
        format!("{p:+.0}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_values_read_as_the_article_writes_them() {
        assert_eq!(
            (percent(1.29), percent(0.8), percent(2.4), percent(1.001)),
            ("+29%".into(), "-20%".into(), "+140%".into(), "±0%".into())
        );
        assert_eq!(
            (value(0.2134, "s"), value(17.6, "s"), value(550.04, "MB/s")),
            ("213.4 ms".into(), "17.60 s".into(), "550.0 MB/s".into())
        );
    }

    #[test]
    fn the_table_has_a_row_per_benchmark_and_target_in_level_order() {
        let mut state = State::new();
        let summary = |values: &[f64], vs: Option<f64>| {
            let mut s = Summary::of(values, "s").unwrap();
            s.vs_below = vs;
            serde_json::to_value(s).unwrap()
        };
        for (addr, level) in [("nested_guest.g1", 1), ("kvm_host.l0", 0)] {
            state
                .resources
                .insert(addr.parse().unwrap(), nestform_state::ResourceState { level, ..Default::default() });
        }
        state.resources.insert(
            "benchmark.loop".parse().unwrap(),
            nestform_state::ResourceState {
                attributes: serde_json::json!({"results": {
                    "nested_guest.g1": summary(&[1.8, 1.9, 1.7], Some(8.5)),
                    "kvm_host.l0": summary(&[0.2, 0.21, 0.19], None),
                }}),
                ..Default::default()
            },
        );
        let t = table(&state);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].contains("benchmark") && lines[0].contains("vs level below"), "{t}");
        assert!(lines[1].contains("kvm_host.l0") && lines[1].contains("200.0 ms"), "{t}");
        assert!(
            lines[2].contains("nested_guest.g1")
                && lines[2].contains("1.80 s")
                && lines[2].ends_with("+750%"),
            "{t}"
        );
        assert_eq!(table(&State::new()), "");
    }
}
