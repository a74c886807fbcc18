//! Runs the regfsck binary under test and parses its JSON report.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_regfsck");

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn findings(&self) -> Vec<&Value> {
        self.json["findings"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }

    pub fn findings_of(&self, check: &str) -> Vec<&Value> {
        self.findings()
            .into_iter()
            .filter(|f| f["check"] == check)
            .collect()
    }

    /// For assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "exit code {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `regfsck run POLICY --config FILE --format json [--dry-run]`.
pub fn run(config: &Path, policy: &str, dry_run: bool) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .arg(policy)
        .arg("--config")
        .arg(config)
        .arg("--format")
        .arg("json")
        .stdin(Stdio::null());
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("regfsck {policy} did not print one JSON document ({e}); exit code {code}\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    Run {
        code,
        json,
        stdout,
        stderr,
    }
}
