//! The regfsck command line, as a library so that a team can build a binary with its own
//! checks linked in: depend on `regfsck` and the check crates, then call [`main`].

pub mod exit;
/// The built-in checks. Naming each crate here keeps its `inventory` registration in every
/// binary that calls [`main`] (the linker drops crates nothing names); the `registered_ids`
/// test fails if one goes missing.
mod builtin {
    use corrupt_blobs as _;
    use dangling_tags as _;
    use invalid_links as _;
    use missing_referenced_blobs as _;
    use orphan_index_children as _;
    use orphan_layer_links as _;
    use stale_uploads as _;
    use unreferenced_blobs as _;
}

/// jemalloc rather than glibc's malloc, for every binary built on this crate: with a
/// scan's 32 I/O threads glibc keeps an arena per thread, and a run at 1M links peaked at
/// 171 MiB; jemalloc, handing dirty pages back after 250 ms and with small thread caches
/// (`.cargo/config.toml`), at about 140 MiB, as fast (bench/RESULTS.md).
/// `_RJEM_MALLOC_CONF` tunes it at run time.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod explain;
pub mod human;
pub mod json;
pub mod metrics;
pub mod progress;
pub mod s3;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use regfsck_core::audit::{self, AuditLog};
use regfsck_core::check;
use regfsck_core::lock::{self, LockError, RootLock};
use regfsck_core::policy::PolicyFile;
use regfsck_core::runner::{self, RunOptions};
use regfsck_core::{FsStorage, Storage};

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
    /// Re-create what a run removed, from the audit log; never overwrites anything.
    Undo(UndoArgs),
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to stdout.
    Man,
}

#[derive(Debug, clap::Args)]
pub struct UndoArgs {
    /// The run id printed in the run's summary and JSON output (`run_id`).
    pub run_id: String,
    /// The policy file (for `root` and `audit-log`).
    #[arg(long, env = "REGFSCK_CONFIG", default_value = "policy.toml")]
    pub config: PathBuf,
    /// The data root; overrides the policy's `root`.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
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
    /// Print nothing unless something needs a human: findings left, scan problems, or links
    /// removed (restart the registry). Exit codes are unchanged. For cron.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also write Prometheus metrics here (node_exporter textfile collector), atomically.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Threads that scan and check a registry side by side. The default, 16 per core (32 to
    /// 128), keeps a disk's queue full when the tree is not in the page cache; fewer suit a
    /// host the run must share, more a network file system.
    #[arg(long, env = "REGFSCK_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
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
        Command::Undo(args) => undo(&args),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "regfsck", &mut out);
            print(&String::from_utf8_lossy(&out));
            ExitStatus::Clean
        }
        Command::Man => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => {
                    print(&String::from_utf8_lossy(&out));
                    ExitStatus::Clean
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitStatus::Usage
                }
            }
        }
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
    let Some(root) = data_root(&file, args.root.as_deref()) else {
        return ExitStatus::Usage;
    };
    if !root.is_dir() {
        eprintln!(
            "error: the data root {} is not a directory; nothing was scanned",
            root.display()
        );
        return ExitStatus::ScanErrors;
    }
    // One run at a time per data root. A dry run on a read-only root goes on without it.
    let _lock = match RootLock::acquire(&root) {
        Ok(l) => Some(l),
        Err(LockError::Held(path)) => {
            eprintln!(
                "error: another regfsck run holds {}; nothing was scanned",
                path.display()
            );
            return ExitStatus::Locked;
        }
        Err(e) if args.dry_run => {
            eprintln!("warning: {e}; going on without the lock (dry run)");
            None
        }
        Err(e) => {
            eprintln!("error: {e}; nothing was scanned");
            return ExitStatus::ScanErrors;
        }
    };
    let audit = if args.dry_run {
        None
    } else {
        let path = audit_path(&file, &root);
        match AuditLog::open(&path) {
            Ok(log) => Some(Arc::new(log)),
            Err(e) => {
                eprintln!("error: {e}; nothing was scanned (no removal without an audit log)");
                return ExitStatus::ScanErrors;
            }
        }
    };
    let cancel = Arc::new(AtomicBool::new(false));
    install_signal_handlers(&cancel);
    let spinner = (!args.quiet && args.format == Format::Human)
        .then(progress::Spinner::on_terminal)
        .flatten()
        .map(Arc::new);
    let opts = RunOptions {
        root,
        dry_run: args.dry_run,
        run_id: runner::new_run_id(),
        audit,
        cancel: Some(cancel),
        progress: spinner.clone().map(|s| s as Arc<dyn runner::Progress>),
        open_storage: Some(Arc::new(s3::open)),
        evidence: args.explain && args.format == Format::Human,
        threads: args.threads.map(usize::from),
    };
    // Findings go out registry by registry as the run goes, so that a run holds one
    // registry's at a time. Every finding makes a --quiet run speak (it either needs a human
    // or was removed), so only a run without any waits for the end to decide.
    let mut output = Output::new(args, &opts);
    let result = runner::run_streaming(&file, policy, &opts, &mut |batch| match &spinner {
        Some(s) => s.suspend(|| output.outcomes(&batch)),
        None => output.outcomes(&batch),
    });
    if let Some(s) = &spinner {
        s.finish();
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitStatus::ScanErrors;
        }
    };
    let status = if report.interrupted {
        ExitStatus::Interrupted
    } else if !report.problems.is_empty() {
        ExitStatus::ScanErrors
    } else if report.needs_attention() {
        ExitStatus::Findings
    } else {
        ExitStatus::Clean
    };
    // --quiet: cron mails only when a human has something to do.
    let speak =
        !args.quiet || status != ExitStatus::Clean || report.count(runner::Action::Removed) > 0;
    if speak {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        output.finish(&report);
    }
    if let Some(path) = &args.metrics_file
        && let Err(e) = metrics::write(path, &report, status)
    {
        eprintln!("error: cannot write metrics file {}: {e}", path.display());
    }
    if report.interrupted {
        eprintln!("regfsck: interrupted; the audit log is complete up to the last removal");
    }
    status
}

/// `--root`, else the policy's `root`; says what is missing when neither is set.
fn data_root(file: &PolicyFile, flag: Option<&Path>) -> Option<PathBuf> {
    let root = flag.map(Path::to_path_buf).or_else(|| file.root.clone());
    if root.is_none() {
        eprintln!(
            "error: no data root: set `root` in {} or pass --root DIR",
            file.path.display()
        );
    }
    root
}

/// The policy's `audit-log`, else `<root>/.regfsck/audit.jsonl`.
fn audit_path(file: &PolicyFile, root: &Path) -> PathBuf {
    file.audit_log
        .clone()
        .unwrap_or_else(|| lock::state_dir(root).join("audit.jsonl"))
}

/// SIGINT and SIGTERM set `cancel`: the run stops between two removals, with the audit log
/// complete. A second signal ends the process at once.
fn install_signal_handlers(cancel: &Arc<AtomicBool>) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so the second signal (flag already set) exits immediately.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(cancel));
        let _ = signal_hook::flag::register(sig, Arc::clone(cancel));
    }
}

fn undo(args: &UndoArgs) -> ExitStatus {
    let file = match PolicyFile::load(&args.config, None) {
        Ok(f) => f,
        Err(report) => {
            eprintln!("{report:?}");
            return ExitStatus::Usage;
        }
    };
    let Some(root) = data_root(&file, args.root.as_deref()) else {
        return ExitStatus::Usage;
    };
    let _lock = match RootLock::acquire(&root) {
        Ok(l) => l,
        Err(LockError::Held(path)) => {
            eprintln!(
                "error: another regfsck run holds {}; nothing was restored",
                path.display()
            );
            return ExitStatus::Locked;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitStatus::ScanErrors;
        }
    };
    let path = audit_path(&file, &root);
    let records = match audit::read(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitStatus::ScanErrors;
        }
    };
    if audit::removals(&records, &args.run_id).is_empty() {
        eprintln!(
            "error: the audit log {} has no removals of run `{}`",
            path.display(),
            args.run_id
        );
        return ExitStatus::Usage;
    }
    let log = match AuditLog::open(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitStatus::ScanErrors;
        }
    };
    let storage_for = |registry: &str| -> Result<Box<dyn Storage>, String> {
        match file
            .registries
            .get(registry)
            .and_then(|s| s.storage.as_ref())
        {
            Some(spec) => s3::open(registry, spec),
            None => Ok(Box::new(FsStorage::new(root.join(registry)))),
        }
    };
    let undo_id = runner::new_run_id();
    let results = audit::undo(&log, &records, &args.run_id, &undo_id, &storage_for);
    let restored = results.iter().filter(|r| r.outcome == "restored").count();
    match args.format {
        Format::Json => print(&format!(
            "{}
",
            serde_json::to_string_pretty(&serde_json::json!({
                "version": json::VERSION,
                "run_id": undo_id,
                "undo_of": args.run_id,
                "files": results,
                "restored": restored,
            }))
            .unwrap_or_default()
        )),
        Format::Human => {
            let mut out = String::new();
            for r in &results {
                out.push_str(&format!("{}: {}/{}\n", r.outcome, r.registry, r.path));
            }
            out.push_str(&format!(
                "undo of run {}: {restored} of {} file(s) restored; restart the registry so it sees them\n",
                args.run_id,
                results.len()
            ));
            print(&out);
        }
    }
    if restored == results.len() {
        ExitStatus::Clean
    } else {
        ExitStatus::Findings
    }
}

/// Where a run's report goes: stdout, in the chosen format, as the run goes.
struct Output {
    explain: bool,
    root: PathBuf,
    json: Option<json::Stream<std::io::BufWriter<std::io::Stdout>>>,
    /// Writing stopped (a closed pipe, `regfsck … | head`): not an error, but nothing more
    /// is written.
    closed: bool,
}

impl Output {
    fn new(args: &RunArgs, opts: &RunOptions) -> Self {
        let json = (args.format == Format::Json).then(|| {
            json::Stream::new(
                std::io::BufWriter::new(std::io::stdout()),
                &opts.run_id,
                &args.policy,
                &opts.root,
                opts.dry_run,
            )
        });
        Self {
            explain: args.explain,
            root: opts.root.clone(),
            json,
            closed: false,
        }
    }

    fn outcomes(&mut self, batch: &[runner::Outcome]) {
        if self.closed || batch.is_empty() {
            return;
        }
        let written = match &mut self.json {
            Some(stream) => stream.outcomes(batch),
            None => {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                human::write_outcomes(&mut out, batch, &self.root, self.explain)
                    .and_then(|()| out.flush())
            }
        };
        self.closed = written.is_err();
    }

    fn finish(self, report: &runner::RunReport) {
        if self.closed {
            return;
        }
        let _ = match self.json {
            Some(stream) => stream.finish(report).map(drop),
            None => write_stdout(&human::end(report)),
        };
    }
}

fn write_stdout(s: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes()).and_then(|()| out.flush())
}

/// Writes to stdout; a closed pipe (`regfsck … | head`) is not an error.
fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
}
