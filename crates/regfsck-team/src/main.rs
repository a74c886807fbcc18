//! `regfsck-team`: regfsck plus a team's checks. Name each team check crate below so the
//! linker keeps its registration, then hand over to the stock CLI.

use std::process::ExitCode;

use team_example as _;

fn main() -> ExitCode {
    regfsck::main()
}
