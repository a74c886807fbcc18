//! The regfsck command line, as a library so that a team can build a binary with its own
//! checks linked in: depend on `regfsck` and the check crates, then call [`main`].

pub mod exit;
/// The built-in checks. Naming each crate here keeps its `inventory` registration in every
/// binary that calls [`main`] (the linker drops crates nothing names); the `registered_ids`
/// test fails if one goes missing.
mod builtin {
    use orphan_index_children as _;
    use orphan_layer_links as _;
}

pub mod explain;
pub mod human;
pub mod json;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use regfsck_core::check;
use regfsck_core::policy::PolicyFile;
use regfsck_core::runner::{self, RunOptions};

pub use exit::ExitStatus;

/// fsck for container registry storage (CNCF Distribution).
///
/// Finds what a registry trusts but cannot serve (layer links without blobs, image indexes
/// with lost children, …), reports it, and fixes what the policy allows.
#[derive(Debug, Parser)]
#[command(
    name = "regfsck",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a named policy over the data root.
    Run(RunArgs),
    /// List the registered checks: id, strongest level, summary.
    Checks {
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Print a check's long explanation.
    Explain {
        /// A check id, as `regfsck checks` lists them.
        check: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The policy to run, a `[policies.<name>]` table of the policy file.
    pub policy: String,
    /// The policy file.
    #[arg(long, env = "REGFSCK_CONFIG", default_value = "policy.toml")]
    pub config: PathBuf,
    /// The data root (one subdirectory per registry); overrides the policy's `root`.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Change nothing; say what `fix` would do.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Render every finding as a full diagnostic with the evidence and what to do.
    #[arg(long)]
    pub explain: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// Parses the command line, runs it, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitStatus::Usage.into()
            } else {
                ExitStatus::Clean.into()
            };
        }
    };
    execute(cli).into()
}

pub fn execute(cli: Cli) -> ExitStatus {
    match cli.command {
        Command::Run(args) => run(&args),
        Command::Checks { format } => {
            print(&list_checks(format));
            ExitStatus::Clean
        }
        Command::Explain { check: id } => match check::find(&id) {
            Some(reg) => {
                print(&format!(
                    "# {}\n\n{}\n\n{}",
                    reg.info.id, reg.info.summary, reg.info.explanation
                ));
                ExitStatus::Clean
            }
            None => {
                let ids: Vec<&str> = check::registered().iter().map(|r| r.info.id).collect();
                eprintln!(
                    "error: unknown check `{id}`; valid checks: {}",
                    ids.join(", ")
                );
                ExitStatus::Usage
            }
        },
    }
}

fn list_checks(format: Format) -> String {
    let checks = check::registered();
    match format {
        Format::Json => {
            let v: Vec<_> = checks
                .iter()
                .map(|r| serde_json::json!({"id": r.info.id, "max_level": r.info.max_level, "summary": r.info.summary}))
                .collect();
            format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        Format::Human => {
            let width = checks.iter().map(|r| r.info.id.len()).max().unwrap_or(0);
            checks
                .iter()
                .map(|r| {
                    format!(
                        "{:width$}  {:4}  {}\n",
                        r.info.id,
                        r.info.max_level.as_str(),
                        r.info.summary
                    )
                })
                .collect()
        }
    }
}

fn run(args: &RunArgs) -> ExitStatus {
    let file = match PolicyFile::load(&args.config, Some(&args.policy)) {
        Ok(f) => f,
        Err(report) => {
            eprintln!("{report:?}");
            return ExitStatus::Usage;
        }
    };
    let Some(policy) = file.policies.get(&args.policy) else {
        return ExitStatus::Usage; // load() already reported the unknown name
    };
    let Some(root) = args.root.clone().or_else(|| file.root.clone()) else {
        eprintln!(
            "error: no data root: set `root` in {} or pass --root DIR",
            args.config.display()
        );
        return ExitStatus::Usage;
    };
    let opts = RunOptions {
        root,
        dry_run: args.dry_run,
        run_id: runner::new_run_id(),
    };
    let report = match runner::run(&file, policy, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitStatus::ScanErrors;
        }
    };
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    print(&match args.format {
        Format::Json => json::render(&report),
        Format::Human => human::render(&report, args.explain),
    });
    if !report.problems.is_empty() {
        ExitStatus::ScanErrors
    } else if report.needs_attention() {
        ExitStatus::Findings
    } else {
        ExitStatus::Clean
    }
}

/// Writes to stdout; a closed pipe (`regfsck … | head`) is not an error.
fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
}
