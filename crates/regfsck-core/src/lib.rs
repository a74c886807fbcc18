//! regfsck's framework: the storage trait, the one-pass inventory scan, the policy, the
//! check registry and the remediation runner. Checks live in their own crates and register
//! themselves with [`declare_check!`].

pub mod audit;
pub mod check;
pub mod diagnostics;
pub mod digest;
pub mod finding;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod options;
pub mod policy;
pub mod runner;
pub mod scan;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;

pub use check::{Check, CheckContext, CheckInfo, CheckOutput, Level, Needs, Recheck, Registration};
pub use digest::Digest;
pub use finding::{
    Applicability, DetailValue, Details, Evidence, Finding, FindingFields, FixAction, FixPlan,
    Problem,
};
pub use manifest::{Manifest, ManifestCache};
pub use options::{CheckOptions, OptionKind, OptionSpec, OptionValue};
pub use scan::Inventory;
pub use storage::{FsStorage, Storage, StorageError};

#[doc(hidden)]
pub use inventory;
