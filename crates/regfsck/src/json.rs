//! `--format json`: one versioned JSON object on stdout. Schema in the README.
//!
//! Written as the run goes ([`Stream`]): the head first, each registry's findings as soon as
//! that registry is done, then problems, warnings and the summary; findings are serialized
//! from borrowed views, one at a time. The bytes are those of the whole document
//! pretty-printed at once, so a run never holds more than one registry's findings.

use std::io::Write;
use std::path::Path;

use regfsck_core::runner::{self, Action, Outcome, RegistrySummary, RunReport};
use regfsck_core::{Digest, Level, Problem};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

pub const VERSION: u32 = 1;

/// The fields before `findings`.
#[derive(Serialize)]
struct Head<'a> {
    version: u32,
    run_id: &'a str,
    policy: &'a str,
    root: String,
    dry_run: bool,
}

/// The fields after `findings`.
#[derive(Serialize)]
struct Tail<'a> {
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

/// The JSON document of a run, written as the run goes.
pub struct Stream<W: Write> {
    out: W,
    /// The head's fields, until the first finding (or the end) writes them.
    head: Option<(String, String, String, bool)>,
    findings: usize,
}

impl<W: Write> Stream<W> {
    /// Nothing is written before the first finding or [`Stream::finish`]: a quiet run that
    /// finds nothing can still say nothing.
    pub fn new(out: W, run_id: &str, policy: &str, root: &Path, dry_run: bool) -> Self {
        let head = (
            run_id.to_string(),
            policy.to_string(),
            root.display().to_string(),
            dry_run,
        );
        Self {
            out,
            head: Some(head),
            findings: 0,
        }
    }

    /// Writes the findings of `batch` (sorted, after those written before).
    pub fn outcomes(&mut self, batch: &[Outcome]) -> std::io::Result<()> {
        for o in batch {
            self.begin()?;
            let sep: &[u8] = if self.findings == 0 { b"\n" } else { b",\n" };
            self.out.write_all(sep)?;
            // An element of the array sits two levels deep: each of its lines moves right
            // by four spaces (a JSON string never holds a raw newline).
            for (i, line) in pretty(&finding(o))?.split('\n').enumerate() {
                if i > 0 {
                    self.out.write_all(b"\n")?;
                }
                self.out.write_all(b"    ")?;
                self.out.write_all(line.as_bytes())?;
            }
            self.findings += 1;
        }
        Ok(())
    }

    /// Writes the rest of the document from `report` (whose outcomes were handed to
    /// [`Stream::outcomes`]) and flushes.
    pub fn finish(mut self, report: &RunReport) -> std::io::Result<W> {
        self.begin()?;
        self.out
            .write_all(if self.findings == 0 { b"]" } else { b"\n  ]" })?;
        let tail = pretty(&Tail {
            problems: Each {
                items: &report.problems,
                view: problem,
            },
            warnings: &report.warnings,
            summary: summary(report),
        })?;
        // `{\n  "problems": …\n}`: its fields continue the document's.
        self.out.write_all(b",\n")?;
        self.out
            .write_all(unwrapped(tail.strip_prefix("{\n"))?.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Writes the head and opens the findings array, once.
    fn begin(&mut self) -> std::io::Result<()> {
        if let Some((run_id, policy, root, dry_run)) = self.head.take() {
            let head = pretty(&Head {
                version: VERSION,
                run_id: &run_id,
                policy: &policy,
                root,
                dry_run,
            })?;
            // `{\n  "version": …\n}` without its closing brace.
            self.out
                .write_all(unwrapped(head.strip_suffix("\n}"))?.as_bytes())?;
            self.out.write_all(b",\n  \"findings\": [")?;
        }
        Ok(())
    }
}

fn pretty<T: Serialize>(value: &T) -> std::io::Result<String> {
    serde_json::to_string_pretty(value).map_err(std::io::Error::other)
}

/// The inside of a pretty-printed object, cut at one of its braces.
fn unwrapped(part: Option<&str>) -> std::io::Result<&str> {
    part.ok_or_else(|| std::io::Error::other("serde_json printed an object without its braces"))
}

fn summary(report: &RunReport) -> Summary<'_> {
    Summary {
        findings: report.findings(),
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
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use regfsck_core::Finding;
    use regfsck_core::runner::Tally;

    use super::*;

    /// The document as one value, serialized at once: what the stream must equal.
    #[derive(Serialize)]
    struct Whole<'a> {
        #[serde(flatten)]
        head: Head<'a>,
        findings: Vec<FindingView<'a>>,
        #[serde(flatten)]
        tail: Tail<'a>,
    }

    fn whole(report: &RunReport) -> String {
        let doc = Whole {
            head: Head {
                version: VERSION,
                run_id: &report.run_id,
                policy: &report.policy,
                root: report.root.display().to_string(),
                dry_run: report.dry_run,
            },
            findings: report.outcomes.iter().map(finding).collect(),
            tail: Tail {
                problems: Each {
                    items: &report.problems,
                    view: problem,
                },
                warnings: &report.warnings,
                summary: summary(report),
            },
        };
        serde_json::to_string_pretty(&doc).expect("serializes") + "\n"
    }

    fn outcome(registry: &str, repo: &str, action: Action) -> Outcome {
        let finding = Finding::new(
            "orphan-layer-links",
            registry,
            repo,
            format!("docker/registry/v2/repositories/{repo}/_layers/sha256/ab/link"),
            "layer link \"quoted\"\nwithout blob".into(),
        )
        .digest(regfsck_core::Digest::from_hex(&"ab".repeat(32)).expect("digest"))
        .detail("nested", serde_json::json!({"a": [1, 2], "b": {}}));
        Outcome {
            finding,
            level: Level::Fix,
            action,
            note: (action == Action::Skipped).then(|| "changed 1s ago".into()),
        }
    }

    fn registry(name: &str, outcomes: &[Outcome]) -> RegistrySummary {
        let mut tally = Tally::default();
        for o in outcomes {
            tally.add(o);
        }
        RegistrySummary {
            name: name.into(),
            location: format!("/data/{name}"),
            checks: Default::default(),
            removed: tally.count(Action::Removed),
            fix_refused: None,
            scanned: [("blobs", 3)].into_iter().collect(),
            scan_ms: 7,
            manifest_reads: 2,
            threads: 8,
            storage: None,
            tally,
        }
    }

    fn report(batches: &[Vec<Outcome>]) -> RunReport {
        RunReport {
            run_id: "20261204T000000Z-1".into(),
            policy: "daily".into(),
            root: "/data".into(),
            dry_run: false,
            outcomes: batches.concat(),
            problems: vec![Problem {
                registry: "a".into(),
                path: "blobs/sha256/zz".into(),
                message: "not a prefix".into(),
            }],
            warnings: vec!["policy names `c`".into()],
            registries: vec![registry("a", &batches[0]), registry("b", &batches[1])],
            duration: Duration::from_millis(1234),
            interrupted: false,
        }
    }

    fn streamed(report: &RunReport, batches: &[Vec<Outcome>]) -> String {
        let mut s = Stream::new(
            Vec::new(),
            &report.run_id,
            &report.policy,
            &report.root,
            report.dry_run,
        );
        for b in batches {
            s.outcomes(b).expect("writes");
        }
        String::from_utf8(s.finish(report).expect("writes")).expect("utf-8")
    }

    #[test]
    fn the_stream_writes_the_bytes_of_the_whole_document() {
        let batches = vec![
            vec![
                outcome("a", "x", Action::Removed),
                outcome("a", "y", Action::Skipped),
            ],
            vec![outcome("b", "z", Action::Reported)],
        ];
        let report = report(&batches);
        let text = streamed(&report, &batches);
        assert_eq!(text, whole(&report));
        let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(doc["findings"].as_array().map(Vec::len), Some(3));
        assert_eq!(doc["summary"]["findings"], 3);
        assert_eq!(doc["summary"]["removed"], 1);
        assert_eq!(doc["summary"]["restart_needed"], false);
    }

    #[test]
    fn no_findings_and_empty_batches_still_make_the_whole_document() {
        let batches = vec![Vec::new(), Vec::new()];
        let report = report(&batches);
        let text = streamed(&report, &batches);
        assert_eq!(text, whole(&report));
        assert!(text.contains("\"findings\": [],"), "{text}");
    }

    #[test]
    fn nothing_is_written_before_a_finding_or_the_end() {
        let mut s = Stream::new(Vec::new(), "r", "p", Path::new("/d"), true);
        s.outcomes(&[]).expect("writes");
        assert!(s.out.is_empty());
        s.outcomes(&[outcome("a", "x", Action::Reported)])
            .expect("writes");
        let text = String::from_utf8(s.out).expect("utf-8");
        assert!(text.starts_with("{\n  \"version\": 1,"), "{text}");
        assert!(text.ends_with('}'), "{text}");
    }
}
