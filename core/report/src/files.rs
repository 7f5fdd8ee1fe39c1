//! The files beside the page: `results.csv` (a row per benchmark and target) and `samples.ndjson`
//! (every run), and writing a file whole.

use std::io::Write;
use std::path::Path;

use crate::results::Benchmark;

/// `results.csv`'s columns.
pub const CSV_HEADER: [&str; 12] = [
    "benchmark",
    "target",
    "level",
    "unit",
    "n",
    "median",
    "mean",
    "stddev",
    "mad",
    "min",
    "max",
    "vs_below",
];

/// A row per benchmark and target, in the page's order; figures unrounded, `vs_below` empty where
/// there is no level below.
pub fn csv(benchmarks: &[Benchmark]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    for b in benchmarks {
        for r in &b.rows {
            let s = &r.summary;
            w.write_record([
                b.addr.clone(),
                r.target.clone(),
                r.level.to_string(),
                s.unit.clone(),
                s.n.to_string(),
                s.median.to_string(),
                s.mean.to_string(),
                s.stddev.to_string(),
                s.mad.to_string(),
                s.min.to_string(),
                s.max.to_string(),
                s.vs_below.map(|v| v.to_string()).unwrap_or_default(),
            ])?;
        }
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

/// Every sample of every benchmark, one JSON object a line.
pub fn ndjson(benchmarks: &[Benchmark]) -> String {
    let mut out = String::new();
    for s in benchmarks.iter().flat_map(|b| &b.samples) {
        // A `Sample` is plain data: it always serializes.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`: a reader sees the
/// old file or the new one, never half of one.
pub fn put(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".report");
    // A temporary file is private (rw-------); a report is for reading, as a file written the
    // plain way would be (rw-r--r--, less the umask).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Row;
    use nestform_types::bench::Summary;

    #[test]
    fn addresses_with_quotes_are_quoted_and_read_back_whole() {
        let mut s = Summary::of(&[1.5, 2.5], "s").unwrap();
        s.vs_below = Some(1.25);
        let b = Benchmark {
            addr: "benchmark.loop".into(),
            name: "loop".into(),
            kind: "shell_loop".into(),
            tainted: false,
            rows: vec![Row {
                target: r#"nested_guest.node["a,b"]"#.into(),
                level: 2,
                acceleration: None,
                summary: s,
            }],
            samples: vec![],
        };
        let bytes = csv(&[b]).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""nested_guest.node[""a,b""]""#), "{text}");
        let mut r = csv::Reader::from_reader(&bytes[..]);
        assert_eq!(r.headers().unwrap(), &csv::StringRecord::from(CSV_HEADER.to_vec()));
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(&rows[0][1], r#"nested_guest.node["a,b"]"#);
        assert_eq!((&rows[0][5], &rows[0][11]), ("2", "1.25"));
    }

    #[test]
    fn a_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        put(&path, b"one").unwrap();
        put(&path, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o044, 0o044, "others may read it: {mode:o}");
        }
    }
}
