//! What benchmarks measure, as state keeps it: every run as one [`Sample`] in PerfKitBenchmarker's
//! shape (`metric`, `value`, `unit`, `timestamp`, `metadata`), and per target a [`Summary`] of the
//! runs that outputs and reports read (`benchmark.NAME.results["nested_guest.guest1"].median`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One measured run of one benchmark on one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Sample {
    /// What was measured, e.g. `shell_loop_time`, `block_read_cold`.
    pub metric: String,
    pub value: f64,
    /// `s` for times, `MB/s` for throughput (10^6 bytes a second).
    pub unit: String,
    /// When the run ended, in seconds since the Unix epoch (the controller's clock).
    pub timestamp: f64,
    /// Where and how: `benchmark`, `kind`, `target`, `level`, `run`, `run_id`, the host chain down
    /// to level 0 with each level's acceleration, the target's size and versions, the load before
    /// the run.
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// The runs of one metric on one target, summarized.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub unit: String,
    /// How many runs (warm-up runs are not counted).
    pub n: usize,
    /// Every run, in the order they ran.
    pub values: Vec<f64>,
    pub median: f64,
    pub mean: f64,
    /// Sample standard deviation (n - 1); 0 for one run.
    pub stddev: f64,
    /// Median absolute deviation from the median (not scaled).
    pub mad: f64,
    pub min: f64,
    pub max: f64,
    /// This median over the median of the same metric on the target one level down on the same
    /// path (the guest's host, or the guest that host promotes), when that one is measured too: the
    /// article's "+29%" is 1.29.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_below: Option<f64>,
}

impl Summary {
    /// The summary of `values` (at least one), with no `vs_below` yet.
    pub fn of(values: &[f64], unit: &str) -> Option<Summary> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let n = values.len();
        let median = median(values);
        let mean = values.iter().sum::<f64>() / n as f64;
        let stddev = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
        Some(Summary {
            unit: unit.to_string(),
            n,
            values: values.to_vec(),
            median,
            mean,
            stddev,
            mad: self::median(&deviations),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            vs_below: None,
        })
    }
}

/// The median of `values` (not empty): the middle one, or the mean of the two middle ones.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_has_the_middle_the_spread_and_every_value() {
        let s = Summary::of(&[3.0, 1.0, 2.0, 10.0], "s").unwrap();
        assert_eq!((s.n, s.median, s.mean, s.min, s.max), (4, 2.5, 4.0, 1.0, 10.0));
        assert_eq!(s.values, [3.0, 1.0, 2.0, 10.0]);
        // |v - 2.5| = 0.5, 1.5, 0.5, 7.5: median 1.0.
        assert_eq!(s.mad, 1.0);
        assert!((s.stddev - 4.0825).abs() < 1e-3, "{}", s.stddev);
        let one = Summary::of(&[7.0], "MB/s").unwrap();
        assert_eq!((one.median, one.stddev, one.mad), (7.0, 0.0, 0.0));
    }

    #[test]
    fn no_values_or_one_that_is_not_a_number_have_no_summary() {
        assert_eq!(Summary::of(&[], "s"), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN], "s"), None);
    }
}
