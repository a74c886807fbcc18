//! End-to-end tests: real Distribution 2.8.2 registries (Debian's
//! `docker-registry`), real skopeo, the real garbage collector, and the
//! regfsck binary against what they leave on disk.
//!
//! Modules:
//! - `packages`: installs docker-registry and skopeo when missing (apt-get).
//! - `registry`: registry processes (config, free port, readiness, Drop
//!   guard that kills by PID), garbage-collect.
//! - `http`: a minimal HTTP/1.1 client for the registry API.
//! - `oci`: builds OCI image layouts (layers, configs, manifests, indexes).
//! - `skopeo`: push and pull with skopeo.
//! - `storage`: the test's own reading of the storage tree (ground truth)
//!   and file-tree snapshots.
//! - `regfsck`: runs the binary under test.
//! - `gc_scenario`: the scenario of issue #3.
//! - `lab`: a workbench for the per-check cases (data root, registries,
//!   pushes, policy, exact comparison of findings).
//! - `more_checks`: a case per check (issue #5).
//! - `s3`: the same breakage on a registry with the s3 driver (SeaweedFS).

mod gc_scenario;
mod http;
mod lab;
mod more_checks;
mod oci;
mod packages;
mod regfsck;
mod registry;
mod s3;
mod skopeo;
mod storage;
