//! Human output: one greppable line per finding, a summary per registry, and what to do.

use std::fmt::Write;
use std::path::Path;

use regfsck_core::check;
use regfsck_core::runner::{Action, Outcome, RunReport};

pub fn finding_line(o: &Outcome) -> String {
    let f = &o.finding;
    let mut line = format!("{}[{}] {}", o.level, f.check, f.registry);
    if !f.repository.is_empty() {
        let _ = write!(line, "/{}", f.repository);
    }
    if let Some(d) = f.digest {
        let _ = write!(line, " {d}");
    }
    let _ = write!(line, " {}: {}", f.message, o.action.as_str());
    if let Some(note) = &o.note {
        let _ = write!(line, " ({note})");
    }
    line
}

/// Writes the lines (or, with `explain`, the diagnostics) of a batch of outcomes on data
/// root `root`, one at a time: a registry's batch may be 100,000 lines.
pub fn write_outcomes(
    out: &mut impl std::io::Write,
    batch: &[Outcome],
    root: &Path,
    explain: bool,
) -> std::io::Result<()> {
    for o in batch {
        if explain {
            out.write_all(crate::explain::render_outcome(root, o).as_bytes())?;
        } else {
            out.write_all(finding_line(o).as_bytes())?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// What follows the outcomes: scan problems, the summary, what to do.
pub fn end(report: &RunReport) -> String {
    let mut out = String::new();
    for p in &report.problems {
        let _ = writeln!(out, "error[scan] {}/{}: {}", p.registry, p.path, p.message);
    }
    if report.findings() > 0 || !report.problems.is_empty() {
        out.push('\n');
    }
    out.push_str(&summary(report));
    out
}

fn summary(report: &RunReport) -> String {
    let mut out = String::new();
    for r in &report.registries {
        if r.checks.is_empty() {
            let _ = writeln!(out, "{}: no checks enabled", r.name);
            continue;
        }
        let parts: Vec<String> = r
            .checks
            .iter()
            .map(|(id, c)| {
                let counters: Vec<String> = c
                    .counters
                    .iter()
                    .map(|(k, v)| format!("{} {}", k.replace('_', " "), v))
                    .collect();
                format!("{id} ({}): {}", c.level, counters.join(", "))
            })
            .collect();
        let _ = write!(out, "{}: {}", r.name, parts.join("; "));
        if r.removed > 0 {
            let _ = write!(out, "; removed {}", r.removed);
        }
        out.push('\n');
        if let Some(why) = &r.fix_refused {
            let _ = writeln!(out, "  fixes refused on {}: {why}", r.name);
        }
    }
    let dry = if report.dry_run { "DRY RUN, " } else { "" };
    let _ = writeln!(
        out,
        "{dry}run {} (policy {}, {:.2}s): {} removed, {} would remove, {} reported, {} skipped, {} refused, {} failed; {} scan problem(s)",
        report.run_id,
        report.policy,
        report.duration.as_secs_f64(),
        report.count(Action::Removed),
        report.count(Action::WouldRemove),
        report.count(Action::Reported),
        report.count(Action::Skipped),
        report.count(Action::Refused),
        report.count(Action::Failed),
        report.problems.len(),
    );
    if report.layer_links_removed() > 0 {
        let _ = writeln!(
            out,
            "\nRESTART NEEDED: {} layer link(s) were removed. Restart the affected registries or flush their \
             blob-descriptor cache (redis: the blobs::* keys); until then a warm cache keeps answering \
             200 with an empty body for those blobs. Undo: regfsck undo {}",
            report.layer_links_removed(),
            report.run_id
        );
    }
    out.push_str(&action_required(report));
    out
}

fn action_required(report: &RunReport) -> String {
    let by_check = report.tally().attention_by_check;
    if by_check.is_empty() && report.problems.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nACTION REQUIRED:\n");
    for (id, n) in by_check {
        let help = check::find(id).map_or("", |r| r.info.help);
        let _ = writeln!(out, "  {n} {id} finding(s): {help} (regfsck explain {id})");
    }
    if !report.problems.is_empty() {
        let _ = writeln!(
            out,
            "  {} scan problem(s): the scan is incomplete; fix what each `error[scan]` line names",
            report.problems.len()
        );
    }
    out
}
