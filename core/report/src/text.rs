//! How the report writes numbers, ratios and times for people, and the escaping of text put into
//! the page.
//!
//! Escaping is hand-written: the page is a handful of elements built in [`crate::html`], and five
//! characters are all HTML text and attribute values need.

use std::time::{Duration, UNIX_EPOCH};

/// `1.23 s`, `950.0 ms`, `412.5 MB/s`, as the text table of `nestform report` writes them.
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

/// Whether more of `unit` is better: throughput is, time is not.
pub fn higher_is_better(unit: &str) -> bool {
    unit.ends_with("/s")
}

/// `2025-10-09 08:53:20 UTC`, from seconds since the Unix epoch.
pub fn when(timestamp: f64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs_f64(timestamp.max(0.0));
    humantime::format_rfc3339_seconds(at).to_string().replace('T', " ").replace('Z', " UTC")
}

/// `3m 12s`, a run's length to the second.
pub fn took(seconds: f64) -> String {
    humantime::format_duration(Duration::from_secs(seconds.max(0.0).round() as u64)).to_string()
}

/// `8 MiB`, `512 KiB`: a size in binary units, whole when it is.
pub fn bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0} {}", units[i])
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// `s` escaped for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_ratios_read_as_the_text_table_writes_them() {
        assert_eq!(
            (percent(1.29), percent(0.8), percent(2.4), percent(1.001)),
            ("+29%".into(), "-20%".into(), "+140%".into(), "±0%".into())
        );
        assert_eq!(
            (value(0.2134, "s"), value(17.6, "s"), value(550.04, "MB/s")),
            ("213.4 ms".into(), "17.60 s".into(), "550.0 MB/s".into())
        );
        assert!(higher_is_better("MB/s") && !higher_is_better("s"));
    }

    #[test]
    fn times_sizes_and_text_for_people() {
        assert_eq!(when(1_760_000_000.4), "2025-10-09 08:53:20 UTC");
        assert_eq!(took(192.2), "3m 12s");
        assert_eq!(
            (bytes(8.0 * 1048576.0), bytes(1536.0), bytes(100.0)),
            ("8 MiB".into(), "1.5 KiB".into(), "100 B".into())
        );
        assert_eq!(
            escape(r#"nested_guest.node["a"] <&> 'x'"#),
            "nested_guest.node[&quot;a&quot;] &lt;&amp;&gt; &#39;x&#39;"
        );
    }
}
