//! The benchmarks' results in a nestform state as files a person reads or a script loads:
//!
//! - `index.html`: a self-contained page (inline CSS and SVG, no script, nothing fetched) with a
//!   line per run (when, on which host chain), and per benchmark its table and a chart;
//! - `samples.ndjson`: every measured run, one [`Sample`](nestform_types::bench::Sample) a line;
//! - `results.csv`: a row per benchmark and target, the summary's figures.
//!
//! It reads only the state (`nestform_state::State`), never the engine: the CLI's `nestform report
//! -o DIR` calls [`write()`].
//!
//! - [`results`]: what the report reads from the state, benchmark by benchmark and run by run.
//! - [`chart`]: the charts, drawn with plotters' SVG backend.
//! - [`html`]: the page around them.
//! - [`files`]: the CSV and NDJSON files, and writing each file whole.
//! - [`article`]: the figures the nested-KVM article published, shown beside the measured ones.
//! - [`table`]: the text table `apply` ends with and `nestform report` prints.
//! - [`text`]: numbers, ratios and times as the page writes them, and its escaping.

pub mod article;
pub mod chart;
pub mod files;
pub mod html;
pub mod results;
pub mod table;
pub mod text;

use std::path::{Path, PathBuf};

use nestform_state::State;
pub use table::table;

/// What [`write()`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// `DIR/index.html`.
    pub index: PathBuf,
    /// `DIR/samples.ndjson`.
    pub samples: PathBuf,
    /// `DIR/results.csv`.
    pub results: PathBuf,
}

impl Written {
    /// Every path written, the page first.
    pub fn paths(&self) -> [&Path; 3] {
        [&self.index, &self.samples, &self.results]
    }
}

/// Why the report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no benchmark results in the state; apply a configuration with `benchmark` blocks first")]
    NoResults,
    #[error("cannot create the report directory `{}`: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot write `{}`: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot draw the chart of `{benchmark}`: {why}")]
    Chart { benchmark: String, why: String },
    #[error("cannot write the results as CSV: {0}")]
    Csv(#[from] csv::Error),
}

/// Writes `index.html`, `samples.ndjson` and `results.csv` of the benchmarks in `state` into
/// `dir`, creating it when it is missing. Each file replaces the one before whole, or not at all.
pub fn write(state: &State, dir: &Path) -> Result<Written, ReportError> {
    let benchmarks = results::benchmarks(state);
    if benchmarks.is_empty() {
        return Err(ReportError::NoResults);
    }
    let charts = benchmarks
        .iter()
        .map(|b| {
            chart::charts(b).map_err(|e| ReportError::Chart { benchmark: b.addr.clone(), why: e.to_string() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let runs = results::runs(&benchmarks);
    let page = html::page(state, &benchmarks, &runs, &charts);
    let csv = files::csv(&benchmarks)?;
    let ndjson = files::ndjson(&benchmarks);

    std::fs::create_dir_all(dir)
        .map_err(|source| ReportError::CreateDir { dir: dir.to_path_buf(), source })?;
    let written = Written {
        index: dir.join("index.html"),
        samples: dir.join("samples.ndjson"),
        results: dir.join("results.csv"),
    };
    for (path, bytes) in
        [(&written.index, page.as_bytes()), (&written.samples, ndjson.as_bytes()), (&written.results, &csv)]
    {
        files::put(path, bytes).map_err(|source| ReportError::Write { path: path.clone(), source })?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_without_results_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = write(&State::new(), &dir.path().join("report")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no benchmark results in the state; apply a configuration with `benchmark` blocks first"
        );
        assert!(!dir.path().join("report").exists(), "nothing is written");
    }
}
