//! The `regfsck` binary: the built-in checks, linked in by name, and the CLI.

use std::process::ExitCode;

// Each check crate is named here so the linker keeps its `inventory` registration; the
// `registered_ids` test fails if one is dropped.
use orphan_index_children as _;
use orphan_layer_links as _;

fn main() -> ExitCode {
    regfsck::main()
}
