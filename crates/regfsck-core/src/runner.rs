//! Runs a policy over a data root: scan each registry once, run its enabled checks, then let
//! the remediation runner act on what the policy allows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use rayon::prelude::*;
use serde::Serialize;

use crate::audit::{self, AuditLog, Event, Record};
use crate::check::{self, Registration};
use crate::finding::{Applicability, FixAction};
use crate::policy::{ANY, Policy, PolicyFile, RegistrySettings, StorageSpec};
use crate::{
    CheckContext, Finding, FsStorage, Level, ManifestCache, Needs, Problem, Storage, layout, scan,
};

/// Defaults of the guards a registry's `[registries.<name>]` settings may change.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60 * 60);
pub const DEFAULT_MAX_REMOVAL_SHARE: f64 = 0.5;
pub const DEFAULT_MAX_REMOVALS: u64 = 10_000;
/// Below this many removals the share guard does not apply (a small registry losing 3 of
/// 4 links after a GC is plausible).
pub const SHARE_GUARD_MIN: u64 = 10;

/// Told what the run is doing, for a progress indicator. Every method has a no-op default.
pub trait Progress: Send + Sync + std::fmt::Debug {
    /// Scanning registry `index` (0-based) of `total`.
    fn registry(&self, name: &str, index: usize, total: usize) {
        let _ = (name, index, total);
    }
    /// `done` of `total` fixes applied on the current registry.
    fn fixing(&self, done: usize, total: usize) {
        let _ = (done, total);
    }
}

/// Opens a registry whose storage the policy places elsewhere than `<root>/<name>` (an
/// object store); provided by the binary that links the backend.
pub type OpenStorage = dyn Fn(&str, &StorageSpec) -> Result<Box<dyn Storage>, String> + Send + Sync;

#[derive(Clone)]
pub struct RunOptions {
    pub root: PathBuf,
    pub dry_run: bool,
    pub run_id: String,
    /// Where removals are logged before they happen; without it nothing is removed.
    pub audit: Option<Arc<AuditLog>>,
    /// Set by a signal handler: stop between two removals, scan no further registry.
    pub cancel: Option<Arc<AtomicBool>>,
    pub progress: Option<Arc<dyn Progress>>,
    pub open_storage: Option<Arc<OpenStorage>>,
    /// Keep each finding's evidence (for `--explain`); without it a run holds less.
    pub evidence: bool,
    /// Threads that scan and check a registry side by side; `None`: what the storage asks
    /// for ([`Storage::parallelism`]).
    pub threads: Option<usize>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("root", &self.root)
            .field("dry_run", &self.dry_run)
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

impl RunOptions {
    /// A run that fixes (no dry run) on `root`, without an audit log (so it removes
    /// nothing), signals, progress or object stores: set what you need.
    pub fn new(root: impl Into<PathBuf>, run_id: impl Into<String>) -> Self {
        Self {
            root: root.into(),
            dry_run: false,
            run_id: run_id.into(),
            audit: None,
            cancel: None,
            progress: None,
            open_storage: None,
            evidence: true,
            threads: None,
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
    }
}

/// What was done about a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Fixed: the fix removed what was broken.
    Removed,
    /// `--dry-run`: the fix would have removed it.
    WouldRemove,
    /// Reported for a human (warn level, or the check has no fix).
    Reported,
    /// The fix was attempted and failed.
    Failed,
    /// The finding no longer held when re-checked, or is inside the grace period.
    Skipped,
    /// A guard refused every fix on this registry.
    Refused,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Removed => "removed",
            Action::WouldRemove => "would-remove",
            Action::Reported => "reported",
            Action::Failed => "failed",
            Action::Skipped => "skipped",
            Action::Refused => "refused",
        }
    }

    /// Whether the finding still needs attention after this run.
    pub fn needs_attention(self) -> bool {
        !matches!(self, Action::Removed)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    #[serde(flatten)]
    pub finding: Finding,
    pub level: Level,
    pub action: Action,
    /// Why the action is what it is, when that is not obvious (a skip, a refusal, an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckSummary {
    pub level: Level,
    pub findings: usize,
    /// Wall time of the check's run, after the scan (checks run side by side).
    pub duration_ms: u64,
    pub counters: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegistrySummary {
    #[serde(skip)]
    pub name: String,
    pub location: String,
    pub checks: BTreeMap<&'static str, CheckSummary>,
    pub removed: usize,
    /// Why fixes were refused on this registry, if they were.
    pub fix_refused: Option<String>,
    /// What the scan listed: repositories, layer_links, revisions, tags, uploads, blobs.
    pub scanned: BTreeMap<&'static str, u64>,
    /// Wall time of the scan (listing, and the link files when a check needs them).
    pub scan_ms: u64,
    /// Manifest blobs the checks read (one read again after it left the cache counts twice).
    pub manifest_reads: u64,
    /// Threads that scanned and checked the registry side by side.
    pub threads: usize,
    /// What the storage backend spent (object stores: requests by kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<serde_json::Value>,
    /// What was done about the registry's findings, counted: a streamed run hands the
    /// findings on and keeps only this.
    #[serde(skip)]
    pub tally: Tally,
}

/// Outcomes counted the ways the summaries, the exit status and the metrics need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    actions: BTreeMap<Action, usize>,
    /// Outcomes a human still has to act on (neither removed nor would-remove), by check.
    pub attention_by_check: BTreeMap<&'static str, usize>,
    /// Layer links removed: the registry must be restarted before it stops serving them.
    pub layer_links_removed: usize,
}

impl Tally {
    pub fn add(&mut self, o: &Outcome) {
        *self.actions.entry(o.action).or_default() += 1;
        if o.action.needs_attention() && o.action != Action::WouldRemove {
            *self.attention_by_check.entry(o.finding.check).or_default() += 1;
        }
        if o.action == Action::Removed && removes_layer_link(o) {
            self.layer_links_removed += 1;
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Tally) {
        for (a, n) in &other.actions {
            *self.actions.entry(*a).or_default() += n;
        }
        for (c, n) in &other.attention_by_check {
            *self.attention_by_check.entry(c).or_default() += n;
        }
        self.layer_links_removed += other.layer_links_removed;
    }

    /// Outcomes that took `action`.
    pub fn count(&self, action: Action) -> usize {
        self.actions.get(&action).copied().unwrap_or(0)
    }

    /// Every outcome.
    pub fn findings(&self) -> usize {
        self.actions.values().sum()
    }

    /// Whether any outcome still needs attention after the run.
    pub fn needs_attention(&self) -> bool {
        self.actions
            .iter()
            .any(|(a, n)| *n > 0 && a.needs_attention())
    }
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub policy: String,
    pub root: PathBuf,
    pub dry_run: bool,
    /// Sorted by registry, check, repository, digest, path. Empty when the run handed them
    /// to a sink as it went ([`run_streaming`]); [`RunReport::tally`] counts them either way.
    pub outcomes: Vec<Outcome>,
    pub problems: Vec<Problem>,
    /// Things worth saying that do not make the scan incomplete.
    pub warnings: Vec<String>,
    pub registries: Vec<RegistrySummary>,
    pub duration: Duration,
    /// A signal stopped the run early.
    pub interrupted: bool,
}

impl RunReport {
    /// The counts of every registry together.
    pub fn tally(&self) -> Tally {
        let mut all = Tally::default();
        for r in &self.registries {
            all.merge(&r.tally);
        }
        all
    }

    pub fn count(&self, action: Action) -> usize {
        self.registries.iter().map(|r| r.tally.count(action)).sum()
    }

    /// Every finding of the run (streamed or held).
    pub fn findings(&self) -> usize {
        self.registries.iter().map(|r| r.tally.findings()).sum()
    }

    /// Layer links this run removed: each needs the registry restarted (or its
    /// blob-descriptor cache flushed) before the registry stops serving it from its cache.
    pub fn layer_links_removed(&self) -> usize {
        self.registries
            .iter()
            .map(|r| r.tally.layer_links_removed)
            .sum()
    }

    pub fn needs_attention(&self) -> bool {
        self.registries.iter().any(|r| r.tally.needs_attention())
    }
}

/// A failure that stops the run before any registry is scanned.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot list the data root {root}: {source}")]
    Root {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no registry under the data root {0} (expected <root>/<name>/docker/registry/v2): is the storage mounted?"
    )]
    NoRegistries(PathBuf),
}

/// The registries under the data root: subdirectories holding `docker/registry/v2`.
pub fn discover_registries(root: &Path) -> Result<Vec<String>, RunError> {
    let err = |source| RunError::Root {
        root: root.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root).map_err(err)? {
        let entry = entry.map_err(err)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && entry.path().join(layout::V2).is_dir() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Runs `policy` and returns the report with every outcome in it.
pub fn run(file: &PolicyFile, policy: &Policy, opts: &RunOptions) -> Result<RunReport, RunError> {
    let mut outcomes = Vec::new();
    let mut report = run_streaming(file, policy, opts, &mut |batch| {
        outcomes.reserve_exact(batch.len());
        outcomes.extend(batch);
    })?;
    debug_assert!(outcomes.is_sorted_by(|a, b| a.finding.sort_key() <= b.finding.sort_key()));
    report.outcomes = outcomes;
    Ok(report)
}

/// Runs `policy`, handing each registry's outcomes (sorted) to `sink` as soon as that
/// registry is done, so that a run holds the findings of one registry at a time. The
/// report's `outcomes` stay empty; its registries' [`Tally`]s count them.
pub fn run_streaming(
    file: &PolicyFile,
    policy: &Policy,
    opts: &RunOptions,
    sink: &mut dyn FnMut(Vec<Outcome>),
) -> Result<RunReport, RunError> {
    let started = std::time::Instant::now();
    let mut names = discover_registries(&opts.root)?;
    // Registries whose storage the policy places in an object store join those on disk.
    for (name, s) in &file.registries {
        if s.storage.is_some() && name != ANY && !names.contains(name) {
            names.push(name.clone());
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(RunError::NoRegistries(opts.root.clone()));
    }
    let mut report = RunReport {
        run_id: opts.run_id.clone(),
        policy: policy.name.clone(),
        root: opts.root.clone(),
        dry_run: opts.dry_run,
        outcomes: Vec::new(),
        problems: Vec::new(),
        warnings: Vec::new(),
        registries: Vec::new(),
        duration: Duration::ZERO,
        interrupted: false,
    };
    for named in policy.named_registries() {
        if !names.iter().any(|n| n == named) {
            report.warnings.push(format!(
                "policy `{}` names registry `{named}`, which is not under {}",
                policy.name,
                opts.root.display()
            ));
        }
    }
    for (index, name) in names.iter().enumerate() {
        if let Some(p) = &opts.progress {
            p.registry(name, index, names.len());
        }
        if opts.cancelled() {
            report.interrupted = true;
            report.warnings.push(format!(
                "interrupted: registry `{name}` and those after it were not scanned"
            ));
            break;
        }
        let settings = settings_for(file, name);
        let storage: Box<dyn Storage> = match (&settings.storage, &opts.open_storage) {
            (None, _) => Box::new(FsStorage::new(opts.root.join(name))),
            (Some(spec), Some(open)) => match open(name, spec) {
                Ok(s) => s,
                Err(e) => {
                    report.problems.push(Problem {
                        registry: name.clone(),
                        path: String::new(),
                        message: format!("cannot open the registry's storage: {e}"),
                    });
                    continue;
                }
            },
            (Some(_), None) => {
                report.problems.push(Problem {
                    registry: name.clone(),
                    path: String::new(),
                    message: "the policy puts this registry in an object store, and this binary has no backend for it".into(),
                });
                continue;
            }
        };
        let pool = opts
            .threads
            .or_else(|| storage.parallelism())
            .and_then(|n| rayon::ThreadPoolBuilder::new().num_threads(n).build().ok());
        let outcomes = match pool {
            Some(pool) => pool.install(|| {
                run_registry(name, storage.as_ref(), policy, &settings, opts, &mut report)
            }),
            None => run_registry(name, storage.as_ref(), policy, &settings, opts, &mut report),
        };
        // Registries run in name order, each with its outcomes sorted: so is what the sink
        // is handed in all.
        sink(outcomes);
    }
    report.problems.sort();
    // Two checks reading the same unreadable manifest report it once.
    report.problems.dedup();
    report.duration = started.elapsed();
    Ok(report)
}

/// `[registries."*"]` overlaid by `[registries.<name>]`.
fn settings_for(file: &PolicyFile, name: &str) -> RegistrySettings {
    let any = file.registries.get(ANY).cloned().unwrap_or_default();
    let own = file.registries.get(name).cloned().unwrap_or_default();
    RegistrySettings {
        grace: own.grace.or(any.grace),
        max_removals: own.max_removals.or(any.max_removals),
        max_removal_share: own.max_removal_share.or(any.max_removal_share),
        storage: own.storage,
    }
}

/// Scans one registry and runs its checks and fixes; returns its outcomes, sorted.
pub fn run_registry(
    name: &str,
    storage: &dyn Storage,
    policy: &Policy,
    settings: &RegistrySettings,
    opts: &RunOptions,
    report: &mut RunReport,
) -> Vec<Outcome> {
    let enabled: Vec<(&'static Registration, Level)> = check::registered()
        .into_iter()
        .map(|r| (r, policy.level(name, r.info.id)))
        .filter(|(_, level)| *level > Level::Off)
        .collect();
    let mut summary = RegistrySummary {
        name: name.to_string(),
        location: storage.location(),
        checks: Default::default(),
        removed: 0,
        fix_refused: None,
        scanned: Default::default(),
        scan_ms: 0,
        manifest_reads: 0,
        // Inside the registry's pool when it has one.
        threads: rayon::current_num_threads(),
        storage: None,
        tally: Tally::default(),
    };
    if enabled.is_empty() {
        report.registries.push(summary);
        return Vec::new();
    }
    let needs = enabled
        .iter()
        .fold(Needs::NONE, |n, (r, _)| n.with(r.info.needs));
    let started = std::time::Instant::now();
    let (inventory, problems) = scan::scan(name, storage, needs);
    summary.scan_ms = millis(started.elapsed());
    report.problems.extend(problems);
    let repos = &inventory.repositories;
    let count = |f: fn(&scan::Repository) -> usize| repos.iter().map(f).sum::<usize>() as u64;
    summary.scanned = [
        ("repositories", repos.len() as u64),
        ("layer_links", count(|r| r.layers.len())),
        ("revisions", count(|r| r.revisions.len())),
        ("tags", count(|r| r.tags.len())),
        ("uploads", count(|r| r.uploads.len())),
        ("blobs", inventory.blobs.len() as u64),
    ]
    .into_iter()
    .collect();
    if !inventory.blob_store_present && !inventory.repositories.is_empty() {
        let reason = format!(
            "{}/{} is missing while repositories exist: is the blob store mounted?",
            storage.location(),
            layout::BLOBS
        );
        report.problems.push(Problem {
            registry: name.to_string(),
            path: layout::BLOBS.to_string(),
            message: reason.clone(),
        });
        summary.fix_refused = Some(reason);
    }

    let readers = enabled
        .iter()
        .filter(|(r, _)| r.info.needs.contains(Needs::MANIFESTS))
        .count();
    let manifests = ManifestCache::for_inventory(storage, readers > 1, &inventory);
    let outputs: Vec<_> = enabled
        .par_iter()
        .map(|(reg, level)| {
            let options = policy.options(reg);
            let cx = CheckContext {
                registry: name,
                storage,
                inventory: &inventory,
                manifests: &manifests,
                options: &options,
                evidence: opts.evidence,
            };
            let started = std::time::Instant::now();
            let output = reg.check.run(&cx);
            (*reg, *level, output, millis(started.elapsed()))
        })
        .collect();
    summary.manifest_reads = manifests.reads();
    // The checks are done with the manifests: let them go before the outcomes are built.
    drop(manifests);

    // Sized exactly: a run may hold 100,000s of outcomes, and doubling growth would leave up
    // to half of that allocated and unused.
    let total: usize = outputs.iter().map(|(_, _, o, _)| o.findings.len()).sum();
    let mut outcomes = Vec::with_capacity(total);
    for (reg, level, output, duration_ms) in outputs {
        summary.checks.insert(
            reg.info.id,
            CheckSummary {
                level,
                findings: output.findings.len(),
                duration_ms,
                counters: output
                    .counters
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).into()))
                    .collect(),
            },
        );
        report.problems.extend(output.problems);
        outcomes.extend(output.findings.into_iter().map(|finding| Outcome {
            finding,
            level,
            action: Action::Reported,
            note: None,
        }));
    }
    // Fixed, reported and handed on in this order.
    outcomes.sort_by(|a, b| a.finding.sort_key().cmp(&b.finding.sort_key()));

    if summary.fix_refused.is_none() {
        summary.fix_refused = guard(&inventory, &outcomes, settings);
    }
    remediate(storage, &mut outcomes, &summary.fix_refused, settings, opts);
    if opts.cancelled() {
        report.interrupted = true;
    }
    for o in &outcomes {
        summary.tally.add(o);
    }
    summary.removed = summary.tally.count(Action::Removed);
    summary.storage = storage.stats();
    report.registries.push(summary);
    outcomes
}

/// Whole milliseconds, for reports.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether the outcome's fix removes a layer link directory (what the guard counts and what
/// needs a registry restart).
fn removes_layer_link(o: &Outcome) -> bool {
    matches!(
        &o.finding.fix,
        Some(plan) if matches!(&plan.action, FixAction::RemoveDir { path } if layout::removable(path) == Some(layout::Removable::LayerLink))
    )
}

fn fixable(o: &Outcome) -> bool {
    o.level == Level::Fix
        && o.finding
            .fix
            .as_ref()
            .is_some_and(|f| f.applicability == Applicability::Safe)
}

/// Refuses every fix on a registry that would lose an implausible share of its links.
fn guard(
    inventory: &scan::Inventory,
    outcomes: &[Outcome],
    settings: &RegistrySettings,
) -> Option<String> {
    let planned = outcomes
        .iter()
        .filter(|o| fixable(o) && removes_layer_link(o))
        .count() as u64;
    let total = inventory.layer_link_count() as u64;
    let max = settings.max_removals.unwrap_or(DEFAULT_MAX_REMOVALS);
    let share = settings
        .max_removal_share
        .unwrap_or(DEFAULT_MAX_REMOVAL_SHARE);
    if planned > max {
        return Some(format!(
            "{planned} removals planned, more than max-removals = {max}; nothing was removed"
        ));
    }
    if planned >= SHARE_GUARD_MIN && total > 0 && planned as f64 > share * total as f64 {
        return Some(format!(
            "{planned} of {total} links would be removed, more than max-removal-share = {share}; \
             nothing was removed (is the blob store complete?)"
        ));
    }
    None
}

fn remediate(
    storage: &dyn Storage,
    outcomes: &mut [Outcome],
    refused: &Option<String>,
    settings: &RegistrySettings,
    opts: &RunOptions,
) {
    let grace = settings.grace.unwrap_or(DEFAULT_GRACE);
    let total = outcomes.iter().filter(|o| fixable(o)).count();
    for (done, o) in outcomes.iter_mut().filter(|o| fixable(o)).enumerate() {
        if let Some(p) = &opts.progress
            && !opts.dry_run
        {
            p.fixing(done, total);
        }
        if let Some(reason) = refused {
            o.action = Action::Refused;
            o.note = Some(reason.clone());
            continue;
        }
        if opts.dry_run {
            o.action = Action::WouldRemove;
            continue;
        }
        if opts.cancelled() {
            o.action = Action::Skipped;
            o.note = Some("interrupted before this fix".into());
            continue;
        }
        let (action, note) = apply(storage, &o.finding, grace, opts);
        o.action = action;
        o.note = note;
    }
}

/// Re-verifies one finding and executes its fix.
fn apply(
    storage: &dyn Storage,
    finding: &Finding,
    grace: Duration,
    opts: &RunOptions,
) -> (Action, Option<String>) {
    let Some(reg) = check::find(finding.check) else {
        return (Action::Failed, Some("check is not registered".into()));
    };
    let Some(plan) = &finding.fix else {
        return (Action::Reported, None);
    };
    let recheck = match reg.check.recheck(storage, finding) {
        Ok(r) => r,
        Err(e) => return (Action::Failed, Some(format!("re-check failed: {e}"))),
    };
    if !recheck.holds {
        return (Action::Skipped, Some("no longer holds on re-check".into()));
    }
    if let Some(changed) = recheck.last_change {
        let age = SystemTime::now()
            .duration_since(changed)
            .unwrap_or_default();
        if age < grace {
            return (
                Action::Skipped,
                Some(format!(
                    "changed {} ago, within the grace period of {}",
                    humantime::format_duration(Duration::from_secs(age.as_secs())),
                    humantime::format_duration(grace)
                )),
            );
        }
    }
    match &plan.action {
        FixAction::RemoveDir { path } => {
            if layout::removable(path).is_none() {
                return (
                    Action::Failed,
                    Some(format!(
                        "refusing to remove {path}: not a layout path regfsck removes"
                    )),
                );
            }
            let Some(log) = &opts.audit else {
                return (
                    Action::Failed,
                    Some("no audit log: nothing is removed without one".into()),
                );
            };
            let files = match audit::capture(storage, path) {
                Ok(f) => f,
                Err(e) => {
                    return (
                        Action::Failed,
                        Some(format!("cannot record what would go: {e}")),
                    );
                }
            };
            let mut record = Record {
                event: Event::Remove,
                run_id: opts.run_id.clone(),
                time: Record::now(),
                registry: finding.registry.to_string(),
                repository: finding.repository.to_string(),
                check: finding.check.to_string(),
                path: path.clone(),
                files,
            };
            if let Err(e) = log.append(&record) {
                return (Action::Failed, Some(format!("{e}; nothing was removed")));
            }
            match storage.remove_dir_all(path) {
                Ok(()) => (Action::Removed, None),
                Err(e) => {
                    record.event = Event::RemoveFailed;
                    record.time = Record::now();
                    let logged = log.append(&record).err().map(|e| format!("; {e}"));
                    (
                        Action::Failed,
                        Some(format!("{e}{}", logged.unwrap_or_default())),
                    )
                }
            }
        }
    }
}

/// A run id: UTC time to the second plus the process id, sortable and unique per host.
pub fn new_run_id() -> String {
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let compact: String = now.chars().filter(|c| !matches!(c, '-' | ':')).collect();
    format!("{compact}-{}", std::process::id())
}
