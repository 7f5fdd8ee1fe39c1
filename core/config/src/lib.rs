//! The nestform language: loads `*.nf.hcl` files, evaluates them, and reports problems with source
//! locations.
//!
//! The flow is [`load_dir`] / [`load_sources`] -> [`Config`]: parse every file (`hcl::edit`, which
//! keeps byte spans), collect the top-level blocks, resolve variables, order locals and resource
//! blocks by their references (a cycle is a diagnostic naming every member), evaluate each block
//! per instance (`count` / `for_each`) into a typed [`nestform_types::ResourceSpec`], then check
//! what spans several blocks (hosts of networks, overlapping CIDRs, nesting). Every problem is
//! collected as a [`Diagnostic`]; nothing stops at the first one.
//!
//! Outputs are evaluated later, by [`Config::evaluate_outputs`], once resources have their computed
//! attributes.

mod checks;
mod decode;
pub mod diag;
mod eval;
mod format;
mod funcs;
mod limits;
mod load;
mod model;
mod names;
mod outputs;
mod refs;
mod suggest;
mod value;
mod vars;

use std::path::{Path, PathBuf};

pub use diag::{render_plain, Diagnostic, Diagnostics, Severity, SourceFile, SourceRange};
pub use format::format_source;
pub use model::{Config, OutputConfig, OutputScope, OutputValue, ResourceConfig};

/// Variable values given on the command line.
#[derive(Clone, Debug, Default)]
pub struct VarInputs {
    /// `-var K=V`, in the order given; a later one wins.
    pub cli: Vec<(String, String)>,
    /// `-var-file F`, in the order given; a later one wins.
    pub files: Vec<PathBuf>,
}

/// The file name suffix of configuration files.
pub const EXTENSION: &str = ".nf.hcl";

/// Loads every `*.nf.hcl` file in `dir` (sorted by name) and evaluates the configuration.
pub fn load_dir(dir: &Path, vars: &VarInputs) -> Result<Config, Diagnostics> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Diagnostics::from(
            Diagnostic::error(format!("cannot read the directory `{}`: {e}", dir.display()))
                .with_help("run nestform in a directory holding `*.nf.hcl` files, or pass the directory"),
        )
    })?;
    // An entry named like a configuration file that cannot be read is an error, never skipped: a
    // plan without the blocks it declares would destroy what they made.
    let mut diags = Diagnostics::new();
    let mut paths: Vec<PathBuf> = vec![];
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                diags.push(
                    Diagnostic::error(format!("cannot list the directory `{}`: {e}", dir.display()))
                        .with_help("check the directory's permissions"),
                );
                continue;
            }
        };
        let path = entry.path();
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        // Emacs marks a file being edited with a dangling link `.#NAME`: not configuration.
        if !name.ends_with(EXTENSION.as_bytes()) || name.starts_with(b".#") {
            continue;
        }
        // `metadata` follows symbolic links: a dangling link or a loop fails here with its OS error.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => paths.push(path),
            Ok(_) => diags.push(
                Diagnostic::error(format!("`{}` is not a file", path.display()))
                    .with_help(format!("every `*{EXTENSION}` entry is read as configuration; rename or remove this one")),
            ),
            Err(e) => diags.push(
                Diagnostic::error(format!("cannot read `{}`: {e}", path.display()))
                    .with_help(format!("every `*{EXTENSION}` entry is read as configuration; fix or remove this one (a symbolic link must lead to a file)")),
            ),
        }
    }
    paths.sort();
    if paths.is_empty() && diags.is_empty() {
        return Err(Diagnostic::error(format!("no `*{EXTENSION}` files in `{}`", dir.display()))
            .with_help("create one, such as `main.nf.hcl`")
            .into());
    }
    let mut files = vec![];
    for p in paths {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match std::fs::read_to_string(&p) {
            Ok(text) => files.push(SourceFile { name, text }),
            Err(e) => diags.push(
                Diagnostic::error(format!("cannot read `{}`: {e}", p.display()))
                    .with_help("check the file's permissions"),
            ),
        }
    }
    if diags.has_errors() {
        return Err(diags);
    }
    load::Loader::new(files, Some(dir.to_path_buf())).run(vars)
}

/// Evaluates configuration given as text; `file()` reads relative to the current directory.
pub fn load_sources(files: Vec<SourceFile>, vars: &VarInputs) -> Result<Config, Diagnostics> {
    load::Loader::new(files, None).run(vars)
}
