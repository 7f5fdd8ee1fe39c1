//! `nestform fmt`: canonical layout of a configuration file, keeping every comment.
//!
//! hcl-rs's own formatter (`hcl::format`) works on the plain `hcl::Body`, which has no comments,
//! so formatting is done here on the `hcl::edit` tree instead: only the whitespace around
//! structures (the "decor") is rewritten. Two-space indentation per block level, one space around
//! `=` with the `=` of consecutive attributes aligned, at most one blank line in a row, no blank
//! line at the start or end of a block, line comments kept on their line. Expressions are left as
//! written.

use hcl::edit::structure::{Body, Structure};
use hcl::edit::{Decor, Decorate};

use crate::diag::{Diagnostic, Diagnostics, SourceFile, SourceRange};

/// Formats `text` canonically, or reports why it cannot be parsed. Formatting its own output
/// changes nothing.
pub fn format_source(text: &str) -> Result<String, Diagnostics> {
    let file = std::sync::Arc::new(SourceFile::new("input", text));
    let mut body = hcl::edit::parser::parse_body(text).map_err(|e| {
        Diagnostics::from(
            Diagnostic::error(format!("cannot parse: {}", e.message()))
                .with_range(SourceRange::parse_error(&file, e.location().offset()))
                .with_label(e.message().to_string())
                .with_help("fix the syntax before formatting"),
        )
    })?;
    format_body(&mut body, 0);
    body.set_prefer_omit_trailing_newline(false);
    let trailing = body.decor().suffix().map(|s| comment_lines(s, "")).unwrap_or_default();
    body.decor_mut().clear();
    let mut out = body.to_string();
    let trimmed = out.trim_end_matches('\n').len();
    out.truncate(trimmed);
    if !trailing.is_empty() {
        out.push_str("\n\n");
        out.push_str(trailing.trim_end());
    }
    out.push('\n');
    Ok(out.trim_start_matches('\n').to_string())
}

/// The comment lines of a decor string, each indented, blank runs collapsed to one empty line.
fn comment_lines(raw: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut blank = false;
    let mut in_block_comment = false;
    for line in raw.split('\n') {
        // The inside of a `/* ... */` comment is the author's layout: keep it.
        if in_block_comment {
            out.push_str(line.trim_end());
            out.push('\n');
            in_block_comment = !line.contains("*/");
            continue;
        }
        let t = line.trim();
        if let Some(i) = t.rfind("/*") {
            in_block_comment = !t[i..].contains("*/");
        }
        if t.is_empty() {
            blank = !out.is_empty();
            continue;
        }
        if blank {
            out.push('\n');
            blank = false;
        }
        out.push_str(indent);
        out.push_str(t);
        out.push('\n');
    }
    out
}

/// The decor before a structure: an optional blank line, its comments, then the indentation.
fn prefix(raw: &str, indent: &str, first: bool) -> String {
    let lines: Vec<&str> = raw.split('\n').collect();
    let blank_before =
        lines.len() > 1 && lines[..lines.len() - 1].first().is_some_and(|l| l.trim().is_empty());
    let mut out = String::new();
    if blank_before && !first {
        out.push('\n');
    }
    let comments = comment_lines(raw, indent);
    out.push_str(&comments);
    // A blank line between the comments and the structure stays.
    let body_lines = &lines[..lines.len() - 1];
    if !comments.is_empty() && body_lines.len() > 1 && body_lines.last().is_some_and(|l| l.trim().is_empty())
    {
        out.push('\n');
    }
    out.push_str(indent);
    out
}

/// The decor after a structure on its line: nothing, or one space and a comment.
fn suffix(raw: &str) -> String {
    let t = raw.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(" {t}")
    }
}

fn format_body(body: &mut Body, depth: usize) {
    let indent = "  ".repeat(depth);
    // Runs of attributes not broken by a blank line, a comment line or a block share one `=` column.
    let mut widths = vec![0usize; body.len()];
    let mut run: Vec<usize> = vec![];
    let flush = |run: &mut Vec<usize>, widths: &mut Vec<usize>, body: &Body| {
        let w = run
            .iter()
            .map(|&i| body.get(i).and_then(Structure::as_attribute).map_or(0, |a| a.key.as_str().len()))
            .max()
            .unwrap_or(0);
        for &i in run.iter() {
            widths[i] = w;
        }
        run.clear();
    };
    for i in 0..body.len() {
        let s = body.get(i).unwrap();
        let raw = s.decor().prefix().map(|p| p.to_string()).unwrap_or_default();
        let breaks = raw.contains('\n') || !raw.trim().is_empty();
        if breaks || s.is_block() {
            flush(&mut run, &mut widths, body);
        }
        if s.is_attribute() {
            run.push(i);
        }
    }
    flush(&mut run, &mut widths, body);

    for (i, mut s) in body.iter_mut().enumerate() {
        let raw_prefix = s.decor().prefix().map(|p| p.to_string()).unwrap_or_default();
        let raw_suffix = s.decor().suffix().map(|p| p.to_string()).unwrap_or_default();
        *s.decor_mut() = Decor::new(prefix(&raw_prefix, &indent, i == 0), suffix(&raw_suffix));
        if let Some(mut attr) = s.as_attribute_mut() {
            let pad = widths[i].saturating_sub(attr.get().key.as_str().len());
            *attr.key_decor_mut() = Decor::new("", format!("{} ", " ".repeat(pad)));
            let value = attr.value_mut();
            let vs = value.decor().suffix().map(|p| suffix(p)).unwrap_or_default();
            *value.decor_mut() = Decor::new(" ", vs);
        } else if let Some(block) = s.as_block_mut() {
            *block.ident.decor_mut() = Decor::new("", " ");
            for label in &mut block.labels {
                *label.decor_mut() = Decor::new("", " ");
            }
            let oneline = block.body.prefer_oneline() && block.body.is_empty();
            if oneline {
                block.body.decor_mut().clear();
                continue;
            }
            block.body.set_prefer_oneline(false);
            format_body(&mut block.body, depth + 1);
            let open = block.body.decor().prefix().map(|p| suffix(p)).unwrap_or_default();
            let close = block
                .body
                .decor()
                .suffix()
                .map(|p| comment_lines(p, &"  ".repeat(depth + 1)))
                .unwrap_or_default();
            let close = close.trim_start_matches('\n').to_string();
            *block.body.decor_mut() = Decor::new(open, format!("{close}{indent}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reindents_aligns_and_keeps_comments() {
        let messy = "# top\nkvm_host \"l0\" {   # the host\nuri=\"test:///default\"\n      nested = true # yes\n\n\n\n  # options\n kvm_module_options = { nested = 1 }\n  lab {}\n}\n# end\n";
        let out = format_source(messy).unwrap();
        assert_eq!(
            out,
            "# top\nkvm_host \"l0\" { # the host\n  uri    = \"test:///default\"\n  nested = true # yes\n\n  # options\n  kvm_module_options = { nested = 1 }\n  lab {}\n}\n\n# end\n"
        );
        assert_eq!(format_source(&out).unwrap(), out);
    }

    #[test]
    fn keeps_a_blank_line_after_a_leading_comment() {
        let text = "# about this file\n\nlocals {\n  a = 1\n\n  bb = 2\n}\n";
        assert_eq!(format_source(text).unwrap(), text);
    }

    #[test]
    fn tricky_inputs_are_stable() {
        let cases = [
            "locals {\n  motd = <<EOT\nhello\n  world\nEOT\n}\n",
            "nat_network \"n\" {\n  dhcp { start = \"10.0.0.2\" }\n}\n",
            "locals {\n  a = 1\n  # trailing comment in the block\n}\n",
            "/* block\n   comment */\nlocals {\n  list = [\n    1,\n    2,\n  ]\n}\n",
            "locals {\n}\n",
        ];
        for text in cases {
            let once = format_source(text).unwrap();
            assert_eq!(format_source(&once).unwrap(), once, "not stable for {text:?}");
            let a: hcl::Body = hcl::parse(text).unwrap();
            let b: hcl::Body = hcl::parse(&once).unwrap();
            assert_eq!(a, b, "meaning changed for {text:?}:\n{once}");
            if text.contains("/*") {
                assert!(once.contains("/* block\n   comment */\n"), "{once}");
            }
        }
    }
}
