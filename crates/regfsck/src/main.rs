//! The `regfsck` binary: the CLI with the built-in checks.

use std::process::ExitCode;

fn main() -> ExitCode {
    regfsck::main()
}
