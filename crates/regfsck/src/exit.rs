//! Every outcome of a run maps to an exit code here, and only here.

use std::process::ExitCode;

/// What a run tells cron and monitoring. Documented in the README's "Exit codes".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Nothing needs attention: clean, or everything found was fixed.
    Clean,
    /// Findings remain: warn-level findings, a dry run, skipped, refused or failed fixes.
    Findings,
    /// Usage or policy error: nothing was scanned or changed.
    Usage,
    /// The scan hit I/O errors or unreadable content; what it could scan is still reported.
    ScanErrors,
    /// Another regfsck run holds the data root's lock; nothing was scanned.
    Locked,
    /// SIGINT or SIGTERM stopped the run between two removals; the audit log is complete.
    Interrupted,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Clean => 0,
            ExitStatus::Findings => 1,
            ExitStatus::Usage => 2,
            ExitStatus::ScanErrors => 3,
            ExitStatus::Locked => 4,
            ExitStatus::Interrupted => 130,
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> Self {
        ExitCode::from(s.code())
    }
}
