//! Command-line flags, in two stages: the raw flags clap parses, then the checked form commands use.
//!
//! nestform takes Terraform's single-dash flags (`-chdir=DIR`, `-auto-approve`, `-var K=V`): people and
//! CI scripts type them that way. clap wants `--`, so [`normalize`] rewrites a single-dash flag of more
//! than one letter before clap sees it (`--` flags keep working, and everything after a bare `--` is
//! left alone).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Rewrites `-flag[=v]` to `--flag[=v]`, leaving short flags, values and anything after `--` untouched.
pub fn normalize(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = false;
    for a in args {
        if rest {
            out.push(a);
            continue;
        }
        if a == "--" {
            rest = true;
            out.push(a);
            continue;
        }
        let b = a.as_bytes();
        if b.len() > 2 && b[0] == b'-' && b[1].is_ascii_alphabetic() && b[2] != b'=' {
            out.push(format!("-{a}"));
        } else {
            out.push(a);
        }
    }
    out
}

#[derive(Debug, Parser)]
#[command(
    name = "nestform",
    version,
    about = "Declarative plan/apply for nested KVM virtualization",
    long_about = "nestform reads the *.nf.hcl files of a directory, plans the changes that bring every \
                  hypervisor, network and guest, at every nesting level, to what they describe, and applies them \
                  through libvirt.",
    propagate_version = true
)]
pub struct Cli {
    /// Switch to DIR before doing anything (like `terraform -chdir`)
    #[arg(long, global = true, value_name = "DIR")]
    pub chdir: Option<PathBuf>,
    /// State file (default: `nestform.state.json` in the working directory)
    #[arg(long, global = true, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Disable color in output
    #[arg(long = "no-color", global = true)]
    pub no_color: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration: syntax, types, references, cycles, networks
    Validate(ValidateArgs),
    /// Rewrite *.nf.hcl files in the canonical format
    Fmt(FmtArgs),
    /// Show the changes apply would make
    Plan(PlanArgs),
    /// Make the changes: from a saved plan, or plan and ask first
    Apply(ApplyArgs),
    /// Destroy everything this configuration manages, deepest level first
    Destroy(DestroyArgs),
    /// Show the state, or a saved plan
    Show(ShowArgs),
    /// Show output values
    Output(OutputArgs),
    /// Show the benchmarks' results: a row per benchmark and target, with the level below compared;
    /// `-o DIR` writes them as a page with charts, CSV and NDJSON
    Report(ReportArgs),
    /// Print the dependency graph in DOT, one cluster per nesting level
    Graph(GraphArgs),
    /// Inspect the state
    #[command(subcommand)]
    State(StateCommand),
    /// Run a command in a guest through nestform's agent; exits with the command's exit code
    Exec(ExecArgs),
    /// Show a guest's serial console output
    Console(ConsoleArgs),
    /// Copy a file into or out of a guest: `nestform cp ./f nested_guest.g1:/tmp/f`
    Cp(CpArgs),
    /// Snapshot a guest, or revert it, safely: the guests inside it are stopped first, deepest first
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take snapshot NAME of a guest (offline, after a clean shutdown, when it must be)
    Create(SnapshotArgs),
    /// Bring a guest back to snapshot NAME
    Revert(SnapshotArgs),
    /// List a guest's snapshots
    List {
        /// The guest, such as `nested_guest.guest1`
        address: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete snapshot NAME of a guest (the guest itself is not touched)
    Delete(SnapshotArgs),
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The guest, such as `nested_guest.guest1`
    pub address: String,
    /// The snapshot's name: letters, digits, `.`, `_` and `-`
    pub name: String,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Where from: a local path, `-` for standard input, or `nested_guest.NAME:/path`
    pub source: String,
    /// Where to: a local path, `-` for standard output, or `nested_guest.NAME:/path`
    pub destination: String,
    /// Seconds to wait for the agent to answer
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub wait: u64,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The guest, such as `nested_guest.guest1`
    pub address: String,
    /// Seconds to wait for the agent to answer
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub wait: u64,
    /// Kill the command after this many seconds
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The guest, such as `nested_guest.guest1`
    pub address: String,
    /// How much of the end of the console to show, in bytes
    #[arg(long, default_value_t = 65536, value_name = "BYTES")]
    pub bytes: usize,
}

#[derive(Debug, Args, Default, Clone)]
pub struct VarArgs {
    /// Set a variable: -var 'name=value' (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Read variables from a file of HCL attributes (repeatable)
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub vars: VarArgs,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FmtArgs {
    /// Only check: list unformatted files and exit 3 when there are any
    #[arg(long)]
    pub check: bool,
    /// Show a diff of the formatting changes
    #[arg(long)]
    pub diff: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct PlanFlags {
    #[command(flatten)]
    pub vars: VarArgs,
    /// Plan only these resources and what they depend on (repeatable)
    #[arg(long = "target", value_name = "ADDR")]
    pub targets: Vec<String>,
    /// Plan to replace this resource even if nothing changed (repeatable)
    #[arg(long = "replace", value_name = "ADDR")]
    pub replace: Vec<String>,
    /// Skip reading what the hosts report now
    #[arg(long = "refresh", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub refresh: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub flags: PlanFlags,
    /// Plan to destroy everything
    #[arg(long)]
    pub destroy: bool,
    /// Save the plan to FILE for `nestform apply FILE`
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error
    #[arg(long = "detailed-exitcode")]
    pub detailed_exitcode: bool,
    /// Print the plan as JSON (Terraform's plan representation)
    #[arg(long)]
    pub json: bool,
}

/// How `apply` and `destroy` run.
#[derive(Debug, Args, Clone, Copy)]
pub struct RunFlags {
    /// Do not ask for confirmation
    #[arg(long = "auto-approve")]
    pub auto_approve: bool,
    /// How many operations run at once
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub parallelism: usize,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `nestform plan -out FILE`
    pub plan_file: Option<PathBuf>,
    #[command(flatten)]
    pub flags: PlanFlags,
    #[command(flatten)]
    pub run: RunFlags,
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub flags: PlanFlags,
    #[command(flatten)]
    pub run: RunFlags,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A saved plan to show instead of the state
    pub plan_file: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// One output's name
    pub name: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Print a string output without quotes
    #[arg(long)]
    pub raw: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Print every sample and each target's summary as JSON
    #[arg(long)]
    pub json: bool,
    /// Write DIR/index.html (charts), DIR/samples.ndjson and DIR/results.csv
    #[arg(short = 'o', long = "out", value_name = "DIR", conflicts_with = "json")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub vars: VarArgs,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List the resources in the state
    List {
        /// Only addresses that these name (a block name lists all its instances)
        addresses: Vec<String>,
    },
    /// Show one resource's attributes
    Show { address: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn single_dash_flags_become_long() {
        assert_eq!(
            normalize(v(&["nf", "-chdir=x", "plan", "-var", "a=-b", "-out=p", "-h", "--json"])),
            v(&["nf", "--chdir=x", "plan", "--var", "a=-b", "--out=p", "-h", "--json"])
        );
        assert_eq!(normalize(v(&["nf", "--", "-foo"])), v(&["nf", "--", "-foo"]));
    }

    #[test]
    fn parses_terraform_style() {
        let cli = Cli::try_parse_from(normalize(v(&[
            "nestform",
            "-chdir=examples/quickstart",
            "plan",
            "-out",
            "p.json",
            "-detailed-exitcode",
            "-var",
            "uri=test:///default",
            "-target",
            "nested_guest.a",
        ])))
        .unwrap();
        assert_eq!(cli.chdir.unwrap(), PathBuf::from("examples/quickstart"));
        let Command::Plan(p) = cli.command else { panic!() };
        assert!(p.detailed_exitcode);
        assert_eq!(p.flags.vars.vars, vec!["uri=test:///default"]);
        assert_eq!(p.flags.targets, vec!["nested_guest.a"]);
    }

    #[test]
    fn parses_snapshot_commands() {
        let cli = Cli::try_parse_from(normalize(v(&[
            "nestform",
            "-chdir=x",
            "snapshot",
            "revert",
            "nested_guest.g",
            "s1",
        ])))
        .unwrap();
        let Command::Snapshot(SnapshotCommand::Revert(a)) = cli.command else { panic!() };
        assert_eq!((a.address.as_str(), a.name.as_str()), ("nested_guest.g", "s1"));
        assert!(Cli::try_parse_from(v(&["nestform", "snapshot", "create", "nested_guest.g"])).is_err());
    }

    #[test]
    fn report_writes_to_a_directory_given_short_or_long() {
        for flags in [&["-o", "out"][..], &["-out", "out"], &["-out=out"], &["--out", "out"]] {
            let argv: Vec<&str> = ["nestform", "report"].iter().chain(flags).copied().collect();
            let cli = Cli::try_parse_from(normalize(v(&argv))).unwrap();
            let Command::Report(r) = cli.command else { panic!() };
            assert_eq!(r.out, Some(PathBuf::from("out")), "{flags:?}");
        }
        assert!(Cli::try_parse_from(normalize(v(&["nestform", "report", "-o", "d", "-json"]))).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
