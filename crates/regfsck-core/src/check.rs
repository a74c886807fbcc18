//! The plugin interface: a [`Check`] reads one registry's inventory and returns findings.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::options::{CheckOptions, OptionSpec};
use crate::scan::Repository;
use crate::{Digest, Finding, Inventory, ManifestCache, Problem, Storage, StorageError};

/// How far the policy lets a check go on a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Off,
    Warn,
    Fix,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Off, Level::Warn, Level::Fix];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Warn => "warn",
            Level::Fix => "fix",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which parts of the storage a check reads, so one scan lists only what enabled checks need.
/// The blob store is always listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs(u8);

impl Needs {
    pub const NONE: Needs = Needs(0);
    /// `_layers/sha256/*` of every repository.
    pub const LAYERS: Needs = Needs(1);
    /// `_manifests/revisions/sha256/*` of every repository.
    pub const REVISIONS: Needs = Needs(2);
    /// `_manifests/tags/*/current/link` and `index/` of every repository.
    pub const TAGS: Needs = Needs(4);
    /// `_uploads/*` of every repository.
    pub const UPLOADS: Needs = Needs(8);
    /// Reads manifest blobs through [`ManifestCache`]: when two or more enabled checks do,
    /// parsed manifests are kept for the run so each is read once; with one, nothing is kept.
    pub const MANIFESTS: Needs = Needs(16);
    /// Whether each link file of the listed layers, revisions and tag histories exists as a
    /// regular file: asked once for every link during the scan (a stat each on a file system,
    /// free in an object store's listing), so no check stats links itself.
    pub const LINK_FILES: Needs = Needs(32);
    /// What each of those link files holds, read once during the scan (implies `LINK_FILES`).
    pub const LINK_CONTENTS: Needs = Needs(32 | 64);

    pub const fn with(self, other: Needs) -> Needs {
        Needs(self.0 | other.0)
    }

    pub const fn contains(self, other: Needs) -> bool {
        self.0 & other.0 == other.0
    }
}

/// The static description of a check: its public id and what `explain` prints.
#[derive(Debug)]
pub struct CheckInfo {
    /// Kebab-case, public API, never reused.
    pub id: &'static str,
    /// One line for `regfsck checks`.
    pub summary: &'static str,
    /// Markdown with the headings *What it checks*, *Why it matters*, *Example*,
    /// *Remediation*, *Policy options*.
    pub explanation: &'static str,
    /// What the operator should do about a finding (the help line of a diagnostic).
    pub help: &'static str,
    /// The strongest level the check supports; asking more is a policy error.
    pub max_level: Level,
    pub needs: Needs,
    /// Options the policy may set in `[policies.<p>.options.<id>]`.
    pub options: &'static [OptionSpec],
}

/// What a check found on one registry.
#[derive(Debug, Default)]
pub struct CheckOutput {
    pub findings: Vec<Finding>,
    /// Named counts for the summary (`links_checked`, `indexes_inspected`, …).
    pub counters: Vec<(&'static str, u64)>,
    /// Things the check could not read or parse; they make the scan incomplete.
    pub problems: Vec<Problem>,
}

impl CheckOutput {
    /// Appends `other`'s findings and problems and adds its counters to the ones of the same
    /// name (a new name is appended, so counters keep the order they were first given in).
    pub fn absorb(&mut self, other: CheckOutput) {
        self.findings.extend(other.findings);
        self.problems.extend(other.problems);
        for (name, n) in other.counters {
            match self.counters.iter_mut().find(|(k, _)| *k == name) {
                Some((_, total)) => *total += n,
                None => self.counters.push((name, n)),
            }
        }
    }
}

/// Everything a check may look at while it runs on one registry.
pub struct CheckContext<'a> {
    pub registry: &'a str,
    pub storage: &'a dyn Storage,
    pub inventory: &'a Inventory,
    pub manifests: &'a ManifestCache<'a>,
    /// This check's options in the running policy (defaults filled in).
    pub options: &'a CheckOptions,
    /// Whether findings keep their evidence (someone asked for `--explain`).
    pub evidence: bool,
}

/// Indexes nest (an index may list indexes); deeper than this is not an image.
pub const MAX_INDEX_DEPTH: usize = 8;

impl CheckContext<'_> {
    /// Whether `_layers/sha256/<d>/link` exists in `repo`. A directory is not enough: the
    /// registry's API deletes (and a pull-through cache's expiry) remove the link file and
    /// leave the directory. Answered from the scan where it looked (see `Needs::LINK_FILES`;
    /// an object store's listing always knows), else by one stat, and only for digests whose
    /// directory is there.
    pub fn layer_link_exists(&self, repo: &Repository, d: &Digest) -> Result<bool, StorageError> {
        if !repo.has_layer(d) {
            return Ok(false);
        }
        match repo.layer_links.exists(d) {
            Some(known) => Ok(known),
            None => self.is_file(&crate::layout::layer_link(&repo.name, d)),
        }
    }

    /// Whether `_manifests/revisions/sha256/<d>/link` exists in `repo`: the registry serves
    /// (and garbage-collect marks) a manifest only through that file.
    pub fn revision_link_exists(
        &self,
        repo: &Repository,
        d: &Digest,
    ) -> Result<bool, StorageError> {
        if !repo.has_revision(d) {
            return Ok(false);
        }
        match repo.revision_links.exists(d) {
            Some(known) => Ok(known),
            None => self.is_file(&crate::layout::revision_link(&repo.name, d)),
        }
    }

    fn is_file(&self, path: &str) -> Result<bool, StorageError> {
        let meta = self.storage.stat(path)?;
        Ok(meta.is_some_and(|m| m.kind == crate::storage::EntryKind::File))
    }

    /// Runs `f` on every repository in parallel and merges the outputs in repository order
    /// (see [`CheckOutput::absorb`]): the usual shape of a per-repository check. `counters`
    /// are reported (as 0) even when no repository produced them.
    pub fn each_repository<F>(&self, counters: &[&'static str], f: F) -> CheckOutput
    where
        F: Fn(&Repository) -> CheckOutput + Sync + Send,
    {
        use rayon::prelude::*;
        /// A registry may give 100,000s of findings: merged a slice of repositories at a
        /// time, only one slice's are held twice while they move into the output.
        const SLICES: usize = 16;
        let repositories = &self.inventory.repositories;
        let mut out = CheckOutput {
            counters: counters.iter().map(|c| (*c, 0)).collect(),
            ..CheckOutput::default()
        };
        for slice in repositories.chunks(repositories.len().div_ceil(SLICES).max(1)) {
            let outputs: Vec<CheckOutput> = slice.par_iter().map(&f).collect();
            out.findings
                .reserve(outputs.iter().map(|o| o.findings.len()).sum());
            for o in outputs {
                out.absorb(o);
            }
        }
        out
    }

    /// Every digest a tag of `repo` reaches (its manifest, index children, configs and
    /// layers), with the tags reaching it. Manifests are read through the shared cache; an
    /// unreadable one ends its branch (reporting it is the reading check's business).
    pub fn tags_reaching<'r>(&self, repo: &'r Repository) -> BTreeMap<Digest, BTreeSet<&'r str>> {
        let mut roots: BTreeMap<Digest, BTreeSet<&'r str>> = BTreeMap::new();
        for t in &repo.tags {
            if let Some(d) = t.current.digest() {
                roots.entry(d).or_default().insert(t.name.as_str());
            }
        }
        let mut users: BTreeMap<Digest, BTreeSet<&'r str>> = BTreeMap::new();
        for (root, tags) in &roots {
            let mut stack = vec![(*root, 0usize)];
            let mut seen = BTreeSet::new();
            while let Some((d, depth)) = stack.pop() {
                if !seen.insert(d) {
                    continue;
                }
                users.entry(d).or_default().extend(tags.iter().copied());
                if !self.inventory.has_blob_data(&d) {
                    continue;
                }
                let Ok(m) = self.manifests.get(&d) else {
                    continue;
                };
                if m.is_index() {
                    if depth < MAX_INDEX_DEPTH {
                        let children = m.children().iter().filter_map(|c| c.sha256());
                        stack.extend(children.map(|c| (c, depth + 1)));
                    }
                    continue;
                }
                for b in m.blob_references().filter_map(|r| r.sha256()) {
                    users.entry(b).or_default().extend(tags.iter().copied());
                }
            }
        }
        users
    }

    /// A finding of check `check` on this registry, keeping evidence only when it will be
    /// shown.
    pub fn finding(
        &self,
        check: &'static str,
        repository: &str,
        path: String,
        message: String,
    ) -> Finding {
        let f = Finding::new(check, self.registry, repository, path, message);
        if self.evidence {
            f
        } else {
            f.without_evidence()
        }
    }

    /// A problem on this registry.
    pub fn problem(&self, path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            registry: self.registry.to_string(),
            path: path.into(),
            message: message.into(),
        }
    }
}

pub trait Check: Send + Sync + 'static {
    /// Detects: reads the inventory (and blob contents through the context) and returns
    /// findings as data. Never prints, never deletes.
    fn run(&self, cx: &CheckContext<'_>) -> CheckOutput;

    /// Asked right before a finding's fix is applied: does the finding still hold, and when
    /// did the files it is about last change?
    ///
    /// The default says it no longer holds, so a check that offers fixes must implement it.
    fn recheck(&self, storage: &dyn Storage, finding: &Finding) -> Result<Recheck, StorageError> {
        let _ = (storage, finding);
        Ok(Recheck::GONE)
    }
}

/// The answer of [`Check::recheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recheck {
    pub holds: bool,
    /// The newest modification time among the files the finding is about.
    pub last_change: Option<std::time::SystemTime>,
}

impl Recheck {
    pub const GONE: Recheck = Recheck {
        holds: false,
        last_change: None,
    };
}

/// A registered check; created by [`declare_check!`](crate::declare_check), never by hand.
pub struct Registration {
    pub info: CheckInfo,
    pub check: &'static dyn Check,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.info.id)
            .finish_non_exhaustive()
    }
}

inventory::collect!(Registration);

/// Every check linked into this binary, sorted by id.
pub fn registered() -> Vec<&'static Registration> {
    let mut all: Vec<_> = inventory::iter::<Registration>.into_iter().collect();
    all.sort_by_key(|r| r.info.id);
    all
}

/// The check with this id, if it is linked in.
pub fn find(id: &str) -> Option<&'static Registration> {
    inventory::iter::<Registration>
        .into_iter()
        .find(|r| r.info.id == id)
}

/// Declares a check and registers it with the framework. The one way to add a check:
///
/// ```text
/// regfsck_core::declare_check! {
///     check: MyCheck,
///     id: "my-check",
///     summary: "what it finds, in one line",
///     explanation: include_str!("../EXPLAIN.md"),
///     help: "what the operator should do",
///     max_level: Warn,
///     needs: [LAYERS, REVISIONS],
///     // optional:
///     options: [OptionSpec::new("max-age", OptionKind::Duration, "168h", "what it does")],
/// }
/// ```
#[macro_export]
macro_rules! declare_check {
    (
        check: $check:expr,
        id: $id:literal,
        summary: $summary:expr,
        explanation: $explanation:expr,
        help: $help:expr,
        max_level: $level:ident,
        needs: [$($need:ident),* $(,)?]
        $(, options: [$($option:expr),* $(,)?])? $(,)?
    ) => {
        $crate::inventory::submit! {
            $crate::Registration {
                info: $crate::CheckInfo {
                    id: $id,
                    summary: $summary,
                    explanation: $explanation,
                    help: $help,
                    max_level: $crate::Level::$level,
                    needs: $crate::Needs::NONE $(.with($crate::Needs::$need))*,
                    options: &[$($($option),*)?],
                },
                check: &$check,
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(repositories: usize) -> CheckOutput {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = crate::FsStorage::new(dir.path());
        let manifests = ManifestCache::new(&storage);
        let options = CheckOptions::defaults(&[]);
        let inventory = Inventory {
            repositories: (0..repositories)
                .map(|i| Repository {
                    name: format!("r{i:03}"),
                    ..Repository::default()
                })
                .collect(),
            ..Inventory::default()
        };
        let cx = CheckContext {
            registry: "reg",
            storage: &storage,
            inventory: &inventory,
            manifests: &manifests,
            options: &options,
            evidence: false,
        };
        cx.each_repository(&["repositories", "never"], |repo| {
            let i: usize = repo.name[1..].parse().expect("number");
            let findings = (0..i % 3)
                .map(|k| cx.finding("c", &repo.name, format!("{k}"), String::new()))
                .collect();
            CheckOutput {
                findings,
                counters: vec![
                    ("repositories", 1),
                    ("even", u64::from(i.is_multiple_of(2))),
                ],
                problems: Vec::new(),
            }
        })
    }

    #[test]
    fn each_repository_merges_in_repository_order_and_adds_counters() {
        // More repositories than slices, and not a multiple of them.
        let out = merged(37);
        let expected: Vec<(String, String)> = (0..37)
            .flat_map(|i| (0..i % 3).map(move |k| (format!("r{i:03}"), k.to_string())))
            .collect();
        let got: Vec<(String, String)> = out
            .findings
            .iter()
            .map(|f| (f.repository.to_string(), f.path.to_string()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(
            out.counters,
            vec![("repositories", 37), ("never", 0), ("even", 19)]
        );
        let none = merged(0);
        assert!(none.findings.is_empty());
        assert_eq!(none.counters, vec![("repositories", 0), ("never", 0)]);
    }
}
