//! `nestform fmt`: rewrites `*.nf.hcl` files in the canonical layout; `-check` only lists them.

use std::process::ExitCode;

use miette::{IntoDiagnostic, Report};
use nestform_engine::workdir::Workdir;

use crate::args::FmtArgs;

pub fn run(workdir: &Workdir, args: FmtArgs) -> Result<ExitCode, Report> {
    let mut paths: Vec<_> = std::fs::read_dir(workdir.dir())
        .into_diagnostic()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(nestform_config::EXTENSION)))
        .collect();
    paths.sort();
    let mut unformatted = 0;
    for path in paths {
        let text = std::fs::read_to_string(&path).into_diagnostic()?;
        let formatted = nestform_config::format_source(&text)
            .map_err(|d| Report::new(d).wrap_err(format!("cannot format `{}`", path.display())))?;
        if formatted == text {
            continue;
        }
        unformatted += 1;
        let name = path.strip_prefix("./").unwrap_or(&path).display().to_string();
        outln!("{name}")?;
        if args.diff {
            let diff = similar::TextDiff::from_lines(&text, &formatted);
            out!("{}", diff.unified_diff().header(&name, &name))?;
        }
        if !args.check {
            std::fs::write(&path, formatted).into_diagnostic()?;
        }
    }
    // Terraform's convention: `fmt -check` exits 3 when something is not formatted.
    Ok(if args.check && unformatted > 0 { ExitCode::from(3) } else { ExitCode::SUCCESS })
}
