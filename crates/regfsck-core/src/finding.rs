//! Findings and problems: plain data that checks return and reporters render.

use serde::Serialize;

use crate::Digest;

/// Something a check found wrong on a registry.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub registry: String,
    /// The repository, `""` for registry-wide findings.
    pub repository: String,
    pub digest: Option<Digest>,
    /// Registry-relative path the finding is about (what a fix would remove, or what is
    /// missing).
    pub path: String,
    pub message: String,
    /// Check-specific fields, stable in the JSON output.
    pub details: serde_json::Map<String, serde_json::Value>,
    /// The paths that prove the finding, for `--explain`.
    #[serde(skip)]
    pub evidence: Vec<Evidence>,
    /// What `fix` would do, if the check can repair this finding.
    #[serde(skip)]
    pub fix: Option<FixPlan>,
}

/// One path and what was seen there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub path: String,
    pub present: bool,
    pub note: String,
}

/// A repair the remediation runner may execute; checks only describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixPlan {
    pub action: FixAction,
    pub applicability: Applicability,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixAction {
    /// Remove this registry-relative directory (it must have a removable layout shape).
    RemoveDir { path: String },
}

/// How safe the check says its fix is: only `Safe` fixes run unattended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Applicability {
    /// Loses nothing the registry can serve: the registry re-fetches or re-creates it.
    Safe,
    /// Needs a human to confirm.
    NeedsReview,
}

/// Something the scan could not read or make sense of; the scan is incomplete.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub registry: String,
    /// Registry-relative path.
    pub path: String,
    pub message: String,
}

/// `team/app:1.1, team/app:latest`: at most three, then how many more.
pub fn tag_refs<I>(repo: &str, tags: I) -> String
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    const SHOWN: usize = 3;
    let tags: Vec<String> = tags
        .into_iter()
        .map(|t| format!("{repo}:{}", t.as_ref()))
        .collect();
    let shown = tags[..tags.len().min(SHOWN)].join(", ");
    match tags.len().checked_sub(SHOWN) {
        Some(more) if more > 0 => format!("{shown} and {more} more"),
        _ => shown,
    }
}

impl Finding {
    pub fn new(
        check: &'static str,
        registry: &str,
        repository: &str,
        path: String,
        message: String,
    ) -> Self {
        Self {
            check,
            registry: registry.to_string(),
            repository: repository.to_string(),
            digest: None,
            path,
            message,
            details: serde_json::Map::new(),
            evidence: Vec::new(),
            fix: None,
        }
    }

    pub fn digest(mut self, d: Digest) -> Self {
        self.digest = Some(d);
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    pub fn evidence(mut self, path: String, present: bool, note: impl Into<String>) -> Self {
        self.evidence.push(Evidence {
            path,
            present,
            note: note.into(),
        });
        self
    }

    pub fn fix(mut self, plan: FixPlan) -> Self {
        self.fix = Some(plan);
        self
    }

    /// The order in which findings are reported, so two runs diff cleanly.
    pub fn sort_key(&self) -> (&str, &str, &str, Option<Digest>, &str) {
        (
            &self.registry,
            self.check,
            &self.repository,
            self.digest,
            &self.path,
        )
    }
}
