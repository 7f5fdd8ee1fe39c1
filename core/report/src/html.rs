//! The page: a header with a line per run, then per benchmark its table and chart (or, for a
//! network benchmark, the matrix of servers and clients), all in one file with its CSS inline and
//! its charts as inline SVG, so it opens anywhere with nothing fetched.

use std::collections::BTreeSet;
use std::fmt::Write;

use nestform_state::State;

use crate::article;
use crate::chart::Chart;
use crate::results::{Benchmark, Run};
use crate::text::{escape, percent, took, value, when};

const CSS: &str = "
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif;
       color: #222; background: #fff; margin: 0 auto; padding: 24px 32px 48px; max-width: 1040px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-top: 12px; border-top: 1px solid #ddd; }
code { font: 13px/1.3 ui-monospace, 'DejaVu Sans Mono', monospace; }
.meta, .note, figcaption { color: #555; }
.kind { font-size: 13px; font-weight: normal; color: #fff; background: #556; border-radius: 4px;
        padding: 1px 7px; margin-left: 6px; vertical-align: middle; }
.tainted { background: #b44; }
ul.runs { padding-left: 20px; margin: 8px 0; }
ul.runs li { margin: 4px 0; }
.chain { white-space: nowrap; }
table { border-collapse: collapse; margin: 8px 0 14px; }
th, td { padding: 4px 12px; border-bottom: 1px solid #e4e4e4; text-align: left; }
th { font-weight: 600; border-bottom: 2px solid #ccc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #777; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 8px 0 0; }
figure svg { width: 100%; height: auto; max-width: 960px; display: block; }
figcaption { font-size: 13px; max-width: 900px; }
.legend { margin: 4px 0; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin: 0 5px 0 14px;
          vertical-align: -1px; }
.legend .swatch:first-child { margin-left: 0; }
footer { margin-top: 40px; padding-top: 10px; border-top: 1px solid #ddd; color: #555; font-size: 13px; }
";

/// The whole page.
pub fn page(state: &State, benchmarks: &[Benchmark], runs: &[Run], charts: &[Vec<Chart>]) -> String {
    let mut h = String::new();
    // A network's rows are pairs of targets, counted in neither.
    let rows = || benchmarks.iter().flat_map(|b| &b.rows).filter(|r| !r.target.contains(" -> "));
    let targets: BTreeSet<&str> = rows().map(|r| r.target.as_str()).collect();
    let levels: BTreeSet<u32> = rows().map(|r| r.level).collect();
    let levels = match (levels.first(), levels.last()) {
        (Some(a), Some(b)) if a != b => format!("levels {a}–{b}"),
        (Some(a), _) => format!("level {a}"),
        _ => String::new(),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>nestform benchmark report</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
         <header>\n<h1>Benchmark report</h1>\n\
         <p class=\"meta\">{} {} on {} {} at {levels}, from the nestform state (serial {}, lineage <code>{}</code>).</p>\n",
        benchmarks.len(),
        plural(benchmarks.len(), "benchmark", "benchmarks"),
        targets.len(),
        plural(targets.len(), "target", "targets"),
        state.serial,
        escape(&state.lineage),
    );
    runs_list(&mut h, runs);
    h.push_str("</header>\n");
    for (b, chart) in benchmarks.iter().zip(charts) {
        section(&mut h, b, chart);
    }
    let _ = write!(
        h,
        "<footer>Beside this page: <code>samples.ndjson</code> (every measured run, one JSON object a \
         line) and <code>results.csv</code> (a row per benchmark and target). Figures labelled \
         “article” are from {}.</footer>\n</body>\n</html>\n",
        escape(article::SOURCE)
    );
    h
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// A line per run: its id, when it ran and for how long, and the host chains under its targets.
fn runs_list(h: &mut String, runs: &[Run]) {
    if runs.is_empty() {
        return;
    }
    h.push_str("<ul class=\"runs\">\n");
    for run in runs {
        let id = if run.id.is_empty() { "(no run id)".to_string() } else { run.id.clone() };
        let _ = write!(
            h,
            "<li>Run <code>{}</code> ran {} for {}: {} {}, {} measured {}",
            escape(&id),
            when(run.first),
            took(run.last - run.first),
            run.benchmarks,
            plural(run.benchmarks, "benchmark", "benchmarks"),
            run.samples,
            plural(run.samples, "run", "runs"),
        );
        for chain in &run.chains {
            let hosts: Vec<String> = chain
                .iter()
                .map(|host| {
                    let how = host.acceleration.as_deref().unwrap_or("acceleration not recorded");
                    let qemu = host
                        .qemu_version
                        .as_deref()
                        .map(|v| format!(", QEMU {}", escape(v)))
                        .unwrap_or_default();
                    format!(
                        "<span class=\"chain\">level {} <code>{}</code> ({}{qemu})</span>",
                        host.level,
                        escape(&host.host),
                        escape(how)
                    )
                })
                .collect();
            let _ = write!(h, "; on {}", hosts.join(" → "));
        }
        h.push_str("</li>\n");
    }
    h.push_str(
        "</ul>\n<p class=\"note\">In brackets: how each host runs its guests, <b>kvm</b> \
         (hardware-assisted) or <b>tcg</b> (emulated).</p>\n",
    );
}

/// One benchmark: heading, table, then its chart or matrix.
fn section(h: &mut String, b: &Benchmark, charts: &[Chart]) {
    let tainted = if b.tainted { " <span class=\"kind tainted\">tainted</span>" } else { "" };
    let _ = write!(
        h,
        "<section id=\"{}\">\n<h2>{} <span class=\"kind\">{}</span>{tainted}</h2>\n",
        escape(&format!("benchmark-{}", b.name)),
        escape(&b.name),
        escape(if b.kind.is_empty() { "unknown kind" } else { &b.kind }),
    );
    table(h, b);
    if b.is_matrix() {
        matrix(h, b);
    }
    for c in charts {
        let _ = write!(h, "<figure>\n{}\n<figcaption>\n<div class=\"legend\">", c.svg.trim());
        for (colour, label) in &c.legend {
            let _ = write!(
                h,
                "<span class=\"swatch\" style=\"background:{}\"></span>{}",
                escape(colour),
                escape(label)
            );
        }
        let _ = write!(h, "</div>\n{}\n</figcaption>\n</figure>\n", escape(&c.caption));
    }
    if charts.is_empty() && b.kind == "block_read" {
        h.push_str(
            "<p class=\"note\">No chart: no sample has both a <code>block_read_cold</code> or \
             <code>block_read_hot</code> metric and a <code>size_bytes</code>.</p>\n",
        );
    }
    h.push_str("</section>\n");
}

/// The table `nestform report` prints, with the article's step beside the measured one where it
/// published one.
fn table(h: &mut String, b: &Benchmark) {
    let with_article = article::has_figures(&b.kind);
    h.push_str(
        "<table>\n<thead><tr><th>benchmark</th><th>target</th><th class=\"num\">level</th>\
         <th class=\"num\">median</th><th class=\"num\">spread (MAD)</th><th class=\"num\">n</th>\
         <th class=\"num\">vs level below</th>",
    );
    if with_article {
        h.push_str("<th class=\"num\">article</th>");
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for r in &b.rows {
        let s = &r.summary;
        let how = r.acceleration.as_deref().filter(|_| r.level > 0);
        let how = how.map(|a| format!(" <span class=\"muted\">{}</span>", escape(a))).unwrap_or_default();
        // A network's row is a pair of targets, which has no one level.
        let level = if r.target.contains(" -> ") { String::new() } else { r.level.to_string() };
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"num\">{}{how}</td><td class=\"num\">{}</td>\
             <td class=\"num\">±{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
            escape(&b.name),
            escape(&r.target),
            level,
            escape(&value(s.median, &s.unit)),
            escape(&value(s.mad, &s.unit)),
            s.n,
            s.vs_below.map(percent).unwrap_or_default(),
        );
        if with_article {
            let a = article::step(&b.kind, r.level).map(percent).unwrap_or_default();
            let _ = write!(h, "<td class=\"num muted\">{a}</td>");
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
}

/// A network benchmark's results as a matrix: a row per server, a column per client.
fn matrix(h: &mut String, b: &Benchmark) {
    let pair = |t: &str| t.split_once(" -> ").map(|(s, c)| (s.trim().to_string(), c.trim().to_string()));
    let servers: BTreeSet<String> = b.rows.iter().filter_map(|r| pair(&r.target)).map(|p| p.0).collect();
    let clients: BTreeSet<String> = b.rows.iter().filter_map(|r| pair(&r.target)).map(|p| p.1).collect();
    h.push_str("<table class=\"matrix\">\n<thead><tr><th>server ↓ · client →</th>");
    for c in &clients {
        let _ = write!(h, "<th class=\"num\"><code>{}</code></th>", escape(c));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for s in &servers {
        let _ = write!(h, "<tr><th><code>{}</code></th>", escape(s));
        for c in &clients {
            let cell = b.rows.iter().find(|r| pair(&r.target).as_ref() == Some(&(s.clone(), c.clone())));
            let text = cell
                .map(|r| {
                    let m = &r.summary;
                    format!(
                        "{} <span class=\"muted\">±{}</span>",
                        escape(&value(m.median, &m.unit)),
                        escape(&value(m.mad, &m.unit))
                    )
                })
                .unwrap_or_else(|| "<span class=\"muted\">–</span>".into());
            let _ = write!(h, "<td class=\"num\">{text}</td>");
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n<p class=\"note\">Median throughput from each server to each client, ± its MAD.</p>\n");
}
