//! Diagnostics: problems found in configuration, each with the source range it is about.
//!
//! nestform reports every problem of a run at once, so loading collects [`Diagnostic`]s into
//! [`Diagnostics`] instead of stopping at the first one. Both implement `miette::Diagnostic`: one
//! report shows all problems with their source snippets.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{LabeledSpan, MietteError, MietteSpanContents, SourceCode, SourceSpan, SpanContents};

/// One configuration file as loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    /// The name as shown in messages, such as `main.nf.hcl`.
    pub name: String,
    pub text: String,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        SourceFile { name: name.into(), text: text.into() }
    }
}

// The file itself is the miette source code, so a diagnostic needs no copy of the text.
impl SourceCode for SourceFile {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let inner = self.text.read_span(span, before, after)?;
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            inner.column(),
            inner.line_count(),
        )))
    }
}

/// A byte range in one source file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRange {
    pub file: Arc<SourceFile>,
    pub span: Range<usize>,
}

impl SourceRange {
    pub fn new(file: &Arc<SourceFile>, span: Range<usize>) -> Self {
        SourceRange { file: file.clone(), span }
    }

    /// The character at byte `offset` of the file, where a parse error points. The parser's offset
    /// may fall inside a multi-byte character (the fuzzer found one inside `𓮡`) or past the end: it
    /// is moved back to where that character starts, so that rendering never slices a character.
    pub fn parse_error(file: &Arc<SourceFile>, offset: usize) -> Self {
        let text = &file.text;
        let mut at = offset.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
        SourceRange::new(file, at..end)
    }

    /// The 1-based line and column (in characters) where the range starts.
    pub fn line_col(&self) -> (usize, usize) {
        let start = self.span.start.min(self.file.text.len());
        let before = &self.file.text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    /// The text the range covers.
    pub fn text(&self) -> &str {
        self.file.text.get(self.span.clone()).unwrap_or("")
    }

    fn miette_span(&self) -> SourceSpan {
        let len = self.file.text.len();
        let start = self.span.start.min(len);
        let end = self.span.end.clamp(start, len);
        (start, end - start).into()
    }
}

impl fmt::Display for SourceRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.line_col();
        write!(f, "{}:{line}:{col}", self.file.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem: what is wrong (`summary`), why (`detail`), what to do (`help`), and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub summary: String,
    pub detail: Option<String>,
    pub help: Option<String>,
    pub range: Option<SourceRange>,
    /// The text shown under `range`.
    pub label: Option<String>,
    /// Other places the problem involves, such as the first of two duplicate blocks.
    pub related: Vec<(SourceRange, String)>,
}

impl Diagnostic {
    pub fn error(summary: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Error, summary.into())
    }

    pub fn warning(summary: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Warning, summary.into())
    }

    fn new(severity: Severity, summary: String) -> Self {
        Diagnostic { severity, summary, detail: None, help: None, range: None, label: None, related: vec![] }
    }

    pub fn with_range(mut self, range: SourceRange) -> Self {
        self.range = Some(range);
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_related(mut self, range: SourceRange, label: impl Into<String>) -> Self {
        self.related.push((range, label.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.range.as_ref().map(|r| &*r.file as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let range = self.range.as_ref()?;
        let primary = LabeledSpan::new_primary_with_span(self.label.clone(), range.miette_span());
        // miette draws labels from one source only; related places in other files are named in
        // the label text instead.
        let related = self.related.iter().map(move |(r, label)| {
            if Arc::ptr_eq(&r.file, &range.file) || r.file == range.file {
                LabeledSpan::new_with_span(Some(label.clone()), r.miette_span())
            } else {
                LabeledSpan::new_with_span(Some(format!("{label} (at `{r}`)")), range.miette_span())
            }
        });
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}

/// Every problem of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn new() -> Self {
        Diagnostics(Vec::new())
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(other);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// `Ok(value)` when there is no error (warnings are dropped), else `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.has_errors() {
            Err(self)
        } else {
            Ok(value)
        }
    }

    /// Only the warnings.
    pub fn warnings(&self) -> Diagnostics {
        Diagnostics(self.0.iter().filter(|d| !d.is_error()).cloned().collect())
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.0.iter().filter(|d| d.is_error()).count();
        let warnings = self.0.len() - errors;
        match (errors, warnings) {
            (0, 0) => f.write_str("no problems"),
            (1, 0) if self.0.len() == 1 => write!(f, "{}", self.0[0]),
            (e, 0) => write!(f, "{e} problems in configuration"),
            (0, w) => write!(f, "{w} warnings in configuration"),
            (e, w) => write!(f, "{e} problems and {w} warnings in configuration"),
        }
    }
}

impl std::error::Error for Diagnostics {}

impl miette::Diagnostic for Diagnostics {
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(self.0.iter().map(|d| d as &dyn miette::Diagnostic)))
    }
}

/// Renders diagnostics as plain text the way the CLI shows them, without colour: for tests and logs.
pub fn render_plain(diags: &Diagnostics) -> String {
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor()).with_width(100);
    let mut out = String::new();
    for d in diags.iter() {
        handler.render_report(&mut out, d).expect("writing to a String cannot fail");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based() {
        let f = Arc::new(SourceFile::new("a.nf.hcl", "a = 1\nbb = 2\n"));
        assert_eq!(SourceRange::new(&f, 0..1).line_col(), (1, 1));
        assert_eq!(SourceRange::new(&f, 9..10).line_col(), (2, 4));
    }

    #[test]
    fn renders_labels_and_help() {
        let f = Arc::new(SourceFile::new("a.nf.hcl", "vcpus = \"two\"\n"));
        let d = Diagnostic::error("`vcpus` must be a whole number, got string")
            .with_range(SourceRange::new(&f, 8..13))
            .with_label("a string")
            .with_help("write a number, like `vcpus = 2`");
        let out = render_plain(&Diagnostics(vec![d]));
        assert!(out.contains("a.nf.hcl:1:9"), "{out}");
        assert!(out.contains("a string"), "{out}");
        assert!(out.contains("help: write a number"), "{out}");
    }

    #[test]
    fn into_result_ignores_warnings() {
        let ds = Diagnostics(vec![Diagnostic::warning("careful")]);
        assert!(ds.into_result(1).is_ok());
        let ds = Diagnostics(vec![Diagnostic::error("broken")]);
        assert!(ds.into_result(1).is_err());
    }
}
