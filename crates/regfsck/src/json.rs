//! `--format json`: one versioned JSON object on stdout. Schema in the README.
//!
//! Serialized straight to the writer from borrowed views of the report: no intermediate
//! `serde_json::Value` tree, so a run with a hundred thousand findings does not hold them
//! twice.

use std::io::Write;

use regfsck_core::runner::{self, Action, Outcome, RegistrySummary, RunReport};
use regfsck_core::{Digest, Level, Problem};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

pub const VERSION: u32 = 1;

#[derive(Serialize)]
struct Doc<'a> {
    version: u32,
    run_id: &'a str,
    policy: &'a str,
    root: String,
    dry_run: bool,
    findings: Each<'a, Outcome, FindingView<'a>>,
    problems: Each<'a, Problem, ProblemView<'a>>,
    warnings: &'a [String],
    summary: Summary<'a>,
}

/// Serializes a slice through a view, one element at a time.
struct Each<'a, T, V> {
    items: &'a [T],
    view: fn(&'a T) -> V,
}

impl<'a, T, V: Serialize> Serialize for Each<'a, T, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.items.len()))?;
        for item in self.items {
            seq.serialize_element(&(self.view)(item))?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct FindingView<'a> {
    check: &'a str,
    level: Level,
    registry: &'a str,
    repository: &'a str,
    digest: Option<Digest>,
    /// Relative to the data root.
    path: String,
    message: &'a str,
    action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
    details: &'a regfsck_core::Details,
}

fn finding(o: &Outcome) -> FindingView<'_> {
    let f = &o.finding;
    FindingView {
        check: f.check,
        level: o.level,
        registry: &f.registry,
        repository: &f.repository,
        digest: f.digest,
        path: root_relative(&f.registry, &f.path),
        message: &f.message,
        action: o.action,
        note: o.note.as_deref(),
        details: &f.details,
    }
}

#[derive(Serialize)]
struct ProblemView<'a> {
    registry: &'a str,
    path: String,
    message: &'a str,
}

fn problem(p: &Problem) -> ProblemView<'_> {
    ProblemView {
        registry: &p.registry,
        path: root_relative(&p.registry, &p.path),
        message: &p.message,
    }
}

fn root_relative(registry: &str, path: &str) -> String {
    if path.is_empty() {
        registry.to_string()
    } else {
        format!("{registry}/{path}")
    }
}

#[derive(Serialize)]
struct Summary<'a> {
    findings: usize,
    removed: usize,
    would_remove: usize,
    reported: usize,
    skipped: usize,
    refused: usize,
    failed: usize,
    problems: usize,
    duration_ms: u64,
    /// Layer links were removed: restart the registries (or flush their blob-descriptor
    /// cache) or a warm cache keeps answering 200 with an empty body.
    restart_needed: bool,
    interrupted: bool,
    registries: Registries<'a>,
}

/// Registry name → its summary, in the report's (sorted) order.
struct Registries<'a>(&'a [RegistrySummary]);

impl Serialize for Registries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for r in self.0 {
            map.serialize_entry(&r.name, r)?;
        }
        map.end()
    }
}

/// Writes the report as one pretty-printed JSON object and a newline.
pub fn write(report: &RunReport, out: &mut dyn Write) -> std::io::Result<()> {
    let doc = Doc {
        version: VERSION,
        run_id: &report.run_id,
        policy: &report.policy,
        root: report.root.display().to_string(),
        dry_run: report.dry_run,
        findings: Each {
            items: &report.outcomes,
            view: finding,
        },
        problems: Each {
            items: &report.problems,
            view: problem,
        },
        warnings: &report.warnings,
        summary: Summary {
            findings: report.outcomes.len(),
            removed: report.count(Action::Removed),
            would_remove: report.count(Action::WouldRemove),
            reported: report.count(Action::Reported),
            skipped: report.count(Action::Skipped),
            refused: report.count(Action::Refused),
            failed: report.count(Action::Failed),
            problems: report.problems.len(),
            duration_ms: runner::millis(report.duration),
            restart_needed: report.layer_links_removed() > 0,
            interrupted: report.interrupted,
            registries: Registries(&report.registries),
        },
    };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    out.write_all(b"\n")
}
