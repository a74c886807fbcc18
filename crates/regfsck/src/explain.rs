//! `--explain`: every finding as a full miette diagnostic, with the on-disk evidence as its
//! source and the check's help line.

use std::io::IsTerminal;
use std::path::Path;

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource, Severity,
};
use regfsck_core::check;
use regfsck_core::runner::{Action, Outcome};

fn handler() -> GraphicalReportHandler {
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    GraphicalReportHandler::new_themed(theme).with_width(120)
}

pub fn render_outcome(root: &Path, o: &Outcome) -> String {
    let f = &o.finding;
    let mut source = String::new();
    let mut labels = Vec::new();
    for e in &f.evidence {
        let state = if e.present { "present" } else { "missing" };
        let line = format!("{state:8}{}/{}", f.registry, e.path);
        let start = source.len() + 8;
        labels.push(LabeledSpan::at(
            start..source.len() + line.len(),
            e.note.clone(),
        ));
        source.push_str(&line);
        source.push('\n');
    }
    let help = check::find(f.check).map_or("", |r| r.info.help);
    let mut help = format!("{help}\n`regfsck explain {}` tells more", f.check);
    if let Some(note) = &o.note {
        help = format!("{}: {note}\n{help}", o.action.as_str());
    }
    let severity = match o.action {
        Action::Removed => Severity::Advice,
        Action::Failed => Severity::Error,
        _ => Severity::Warning,
    };
    let repo = if f.repository.is_empty() {
        f.registry.to_string()
    } else {
        format!("{}/{}", f.registry, f.repository)
    };
    let digest = f.digest.map(|d| format!(" {d}")).unwrap_or_default();
    let diag = MietteDiagnostic::new(format!(
        "{repo}{digest}: {} ({})",
        f.message,
        o.action.as_str()
    ))
    .with_code(f.check)
    .with_severity(severity)
    .with_help(help)
    .with_labels(labels);
    let name = format!("{} ({})", root.display(), o.level);
    let report = miette::Report::new(diag).with_source_code(NamedSource::new(name, source));
    let mut out = String::new();
    if handler().render_report(&mut out, report.as_ref()).is_err() {
        out = format!("{report}\n");
    }
    out
}
