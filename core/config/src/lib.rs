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
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(EXTENSION))
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(Diagnostic::error(format!("no `*{EXTENSION}` files in `{}`", dir.display()))
            .with_help("create one, such as `main.nf.hcl`")
            .into());
    }
    let mut files = vec![];
    let mut diags = Diagnostics::new();
    for p in paths {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
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
