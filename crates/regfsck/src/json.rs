//! `--format json`: one versioned JSON object on stdout. Schema in the README.

use regfsck_core::runner::{Action, RunReport};
use serde_json::{Value, json};

pub const VERSION: u32 = 1;

pub fn render(report: &RunReport) -> String {
    let findings: Vec<Value> = report
        .outcomes
        .iter()
        .map(|o| {
            let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
            if let Some(obj) = v.as_object_mut() {
                let rel = format!("{}/{}", o.finding.registry, o.finding.path);
                obj.insert("path".into(), Value::String(rel));
            }
            v
        })
        .collect();
    let problems: Vec<Value> = report
        .problems
        .iter()
        .map(|p| {
            json!({
                "registry": p.registry,
                "path": format!("{}/{}", p.registry, p.path),
                "message": p.message,
            })
        })
        .collect();
    let registries: serde_json::Map<String, Value> = report
        .registries
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                serde_json::to_value(r).unwrap_or(Value::Null),
            )
        })
        .collect();
    let doc = json!({
        "version": VERSION,
        "run_id": report.run_id,
        "policy": report.policy,
        "root": report.root.display().to_string(),
        "dry_run": report.dry_run,
        "findings": findings,
        "problems": problems,
        "warnings": report.warnings,
        "summary": {
            "findings": report.outcomes.len(),
            "removed": report.count(Action::Removed),
            "would_remove": report.count(Action::WouldRemove),
            "reported": report.count(Action::Reported),
            "skipped": report.count(Action::Skipped),
            "refused": report.count(Action::Refused),
            "failed": report.count(Action::Failed),
            "problems": report.problems.len(),
            "duration_ms": report.duration.as_millis() as u64,
            // Links were removed: restart the registries (or flush their blob-descriptor
            // cache) or a warm cache keeps answering 200 with an empty body.
            "restart_needed": report.layer_links_removed() > 0,
            "interrupted": report.interrupted,
            "registries": registries,
        },
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}
