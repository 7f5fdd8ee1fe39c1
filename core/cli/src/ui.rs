//! How nestform talks to people: reports, confirmation prompts, progress per resource, and standard
//! output that may be closed under it.
//!
//! Every line a command prints goes through `out!`, `outln!` or `progress!` rather than
//! `print!`, which panics when the reader went away. A command's own output (`show -json | head -1`)
//! then ends the command quietly with exit 0, as `git log | head` does: the error [`StdoutClosed`]
//! travels up like any other, so state locks are released on the way, and `main` exits 0 for it.
//! Progress lines of work that must finish anyway (apply, snapshot) are dropped instead.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// `print!` to standard output, as a `Result<(), miette::Report>`.
macro_rules! out {
    ($($arg:tt)*) => { $crate::ui::write_stdout(format_args!($($arg)*)) };
}

/// `println!` to standard output, as a `Result<(), miette::Report>`.
macro_rules! outln {
    () => { $crate::ui::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::ui::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// A progress line: printed when standard output is open, dropped when it is not (the work it
/// reports goes on either way).
macro_rules! progress {
    ($($arg:tt)*) => {{
        let _ = $crate::ui::write_stdout(format_args!("{}\n", format_args!($($arg)*)));
    }};
}

/// Standard output was closed by its reader: the command's output was cut short, which is not a
/// failure.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}
impl miette::Diagnostic for StdoutClosed {}

/// Writes to standard output; a closed pipe is [`StdoutClosed`].
pub fn write_stdout(args: std::fmt::Arguments<'_>) -> Result<(), miette::Report> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args).map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => miette::Report::new(StdoutClosed),
        _ => miette::miette!("cannot write to standard output: {e}"),
    })
}

static COLOR: AtomicBool = AtomicBool::new(true);

/// Sets up miette's report handler once: colors only on a terminal and without `-no-color`.
pub fn init(no_color: bool) {
    let color = !no_color && std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    COLOR.store(color, Ordering::Relaxed);
    let _ = miette::set_hook(Box::new(move |_| {
        let theme =
            if color { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
        Box::new(miette::GraphicalReportHandler::new_themed(theme).with_context_lines(2))
    }));
}

/// Turns on nestform's debug log when `NESTFORM_LOG` is set (like Terraform's `TF_LOG`): a filter
/// such as `debug` or `nestform_engine=debug,nestform_provider_promoted=trace`, with the time since start, so a
/// slow step at some nesting level can be found. It goes to standard error, or is appended to the
/// file `NESTFORM_LOG_PATH` names (like `TF_LOG_PATH`).
pub fn init_log() {
    let Ok(filter) = std::env::var("NESTFORM_LOG") else { return };
    let filter = match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("warning: `NESTFORM_LOG={filter}` is not a log filter ({e}); the log stays off");
            return;
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_ansi(false);
    let _ = match std::env::var_os("NESTFORM_LOG_PATH") {
        Some(path) => match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
            Ok(file) => builder.with_writer(std::sync::Mutex::new(file)).try_init(),
            Err(e) => {
                eprintln!(
                    "warning: cannot open `NESTFORM_LOG_PATH={}` ({e}); the log goes to standard error",
                    std::path::Path::new(&path).display()
                );
                builder.with_writer(std::io::stderr).try_init()
            }
        },
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// Asks the Terraform question and accepts only `yes`.
pub fn confirm(question: &str, detail: &str) -> bool {
    let mut out = std::io::stdout().lock();
    let _ = write!(
        out,
        "\n{question}\n  {detail}\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
    );
    let _ = out.flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    line.trim() == "yes"
}
