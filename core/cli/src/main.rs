//! `nestform`: the command-line interface. Thin by design: each `commands/<verb>.rs` parses its flags,
//! calls the engine, and renders. Errors become miette reports here and nowhere else.

#[macro_use]
mod ui;
mod args;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let argv = args::normalize(std::env::args());
    let cli = match args::Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS };
        }
    };
    ui::init(cli.no_color);
    ui::init_log();
    let code = match commands::run(cli) {
        Ok(code) => code,
        // Output cut short by its reader (`nestform show -json | head -1`): done, quietly.
        Err(report) if report.downcast_ref::<ui::StdoutClosed>().is_some() => ExitCode::SUCCESS,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(1)
        }
    };
    // Agent channels still open (sessions the engine kept for reuse) are closed with libvirtd's
    // answer before the process ends: a client that vanishes with one open can deadlock libvirtd.
    nestform_provider_libvirt::abort_open_channels(std::time::Duration::from_secs(10));
    code
}
