//! `--metrics-file`: Prometheus text format for node_exporter's textfile collector.
//!
//! Written by hand: the format is a few lines, and the crates that produce it either target
//! a live registry of metrics or emit OpenMetrics (whose `_total` naming the textfile
//! collector's text parser reads differently). A test parses the output with a Prometheus
//! text parser. No sample timestamps, as the textfile collector requires; the file is
//! replaced atomically (temp file in the same directory, then rename).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::SystemTime;

use regfsck_core::runner::{Action, RunReport};

use crate::ExitStatus;

pub const LAST_SUCCESS: &str = "regfsck_last_success_timestamp_seconds";

/// Escapes a label value: backslash, double quote and newline.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

/// The last success time recorded in an existing metrics file (kept across failed runs, so
/// a staleness alert fires when runs keep failing).
fn previous_success(path: &Path, policy: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let want = format!("{LAST_SUCCESS}{{policy=\"{}\"}} ", esc(policy));
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
}

pub fn render(report: &RunReport, status: ExitStatus, previous: Option<f64>) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs() as f64);
    let policy = report.policy.as_str();
    let success = matches!(status, ExitStatus::Clean | ExitStatus::Findings);
    let mut out = String::new();
    let mut m = Family { out: &mut out };

    m.header(
        "regfsck_findings",
        "gauge",
        "Findings of the last run, by check, registry and policy level.",
    );
    for r in &report.registries {
        for (id, c) in &r.checks {
            let level = c.level.as_str();
            m.sample(
                "regfsck_findings",
                &[
                    ("policy", policy),
                    ("check", id),
                    ("registry", &r.name),
                    ("level", level),
                ],
                c.findings as f64,
            );
        }
    }
    m.header(
        "regfsck_actions",
        "gauge",
        "What the last run did about its findings, by registry and action.",
    );
    for r in &report.registries {
        for action in [
            Action::Removed,
            Action::WouldRemove,
            Action::Reported,
            Action::Skipped,
            Action::Refused,
            Action::Failed,
        ] {
            let n = r.tally.count(action);
            m.sample(
                "regfsck_actions",
                &[
                    ("policy", policy),
                    ("registry", &r.name),
                    ("action", action.as_str()),
                ],
                n as f64,
            );
        }
    }
    m.header(
        "regfsck_fixes_refused",
        "gauge",
        "1 when a guard refused every fix on the registry in the last run.",
    );
    for r in &report.registries {
        let refused = if r.fix_refused.is_some() { 1.0 } else { 0.0 };
        m.sample(
            "regfsck_fixes_refused",
            &[("policy", policy), ("registry", &r.name)],
            refused,
        );
    }
    m.header(
        "regfsck_objects_scanned",
        "gauge",
        "Objects the last run listed, by registry and kind.",
    );
    for r in &report.registries {
        for (kind, n) in &r.scanned {
            m.sample(
                "regfsck_objects_scanned",
                &[("policy", policy), ("registry", &r.name), ("kind", kind)],
                *n as f64,
            );
        }
    }
    m.header(
        "regfsck_scan_problems",
        "gauge",
        "Things the last run could not read or parse.",
    );
    m.sample(
        "regfsck_scan_problems",
        &[("policy", policy)],
        report.problems.len() as f64,
    );
    m.header(
        "regfsck_scan_duration_seconds",
        "gauge",
        "Wall time of the last run.",
    );
    m.sample(
        "regfsck_scan_duration_seconds",
        &[("policy", policy)],
        report.duration.as_secs_f64(),
    );
    m.header(
        "regfsck_exit_code",
        "gauge",
        "Exit code of the last run (see the README).",
    );
    m.sample(
        "regfsck_exit_code",
        &[("policy", policy)],
        f64::from(status.code()),
    );
    m.header(
        "regfsck_last_run_timestamp_seconds",
        "gauge",
        "When the last run ended.",
    );
    m.sample(
        "regfsck_last_run_timestamp_seconds",
        &[("policy", policy)],
        now,
    );
    let last = if success { Some(now) } else { previous };
    if let Some(t) = last {
        m.header(
            LAST_SUCCESS,
            "gauge",
            "When a run last completed its scan without errors (exit 0 or 1).",
        );
        m.sample(LAST_SUCCESS, &[("policy", policy)], t);
    }
    out
}

/// Writes the metrics file atomically.
pub fn write(path: &Path, report: &RunReport, status: ExitStatus) -> std::io::Result<()> {
    let text = render(report, status, previous_success(path, &report.policy));
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("regfsck.prom");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
