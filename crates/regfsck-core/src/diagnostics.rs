//! Diagnostic types rendered by miette.
//!
//! Rust ≥ 1.92 warns `unused_assignments` on fields that only miette's derive reads
//! (rust-lang/rust#147648), so the allow lives here, once, for every diagnostic type.
#![allow(unused_assignments)]

use miette::{Diagnostic, NamedSource, SourceSpan};

/// Everything wrong with a policy file, reported at once.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{file}: {} problem{} in the policy; nothing was scanned", .problems.len(), if .problems.len() == 1 { "" } else { "s" })]
#[diagnostic(code(regfsck::policy), help("fix the policy file, then run again"))]
pub struct PolicyError {
    pub file: String,
    #[related]
    pub problems: Vec<PolicyProblem>,
}

/// One problem in a policy file, pointing at the key or value.
#[derive(Debug, Clone, thiserror::Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(code(regfsck::policy))]
pub struct PolicyProblem {
    pub message: String,
    #[source_code]
    pub src: NamedSource<String>,
    #[label("{label}")]
    pub span: Option<SourceSpan>,
    pub label: String,
    #[help]
    pub help: Option<String>,
}

/// A policy file that could not be read at all.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("cannot read the policy file {file}: {source}")]
#[diagnostic(
    code(regfsck::policy::read),
    help("pass --config FILE, set REGFSCK_CONFIG, or run where ./policy.toml is")
)]
pub struct PolicyReadError {
    pub file: String,
    #[source]
    pub source: std::io::Error,
}
