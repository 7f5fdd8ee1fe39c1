//! The benchmark table `apply` ends with and `nestform report` prints: a row per benchmark and
//! target, with its level, median, spread, runs and the ratio to the level below on its path. It
//! reads the state as the page does ([`crate::results`]) and writes numbers as the page does
//! ([`crate::text`]).

use nestform_state::State;

use crate::text::{percent, value};

/// The table as text; empty when nothing was measured.
pub fn table(state: &State) -> String {
    let benchmarks = crate::results::benchmarks(state);
    if benchmarks.is_empty() {
        return String::new();
    }
    let head = ["benchmark", "target", "level", "median", "spread (MAD)", "n", "vs level below"];
    let cells: Vec<[String; 7]> = benchmarks
        .iter()
        .flat_map(|b| b.rows.iter().map(move |r| (b, r)))
        .map(|(b, r)| {
            let s = &r.summary;
            [
                format!("{}{}", b.name, if b.tainted { " (tainted)" } else { "" }),
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

#[cfg(test)]
mod tests {
    use nestform_types::bench::Summary;

    use super::*;

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
