//! Reads what the registries (and their garbage collector) really left on
//! disk, independently of regfsck: the test's own ground truth.

use crate::oci::sha256_hex;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// An orphaned layer link: `_layers/sha256/<hex>/link` without blob data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrphanLink {
    pub registry: String,
    pub repository: String,
    pub digest: String,
}

impl OrphanLink {
    /// The directory regfsck reports (and removes), relative to the data root.
    pub fn rel_dir(&self) -> String {
        format!(
            "{}/docker/registry/v2/repositories/{}/_layers/sha256/{}",
            self.registry,
            self.repository,
            crate::oci::hex_of(&self.digest)
        )
    }
}

/// A child of an index revision whose own revision link is missing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrphanChild {
    pub registry: String,
    pub repository: String,
    pub index: String,
    pub child: String,
    /// `os/arch[/variant]`, if the index entry has a platform.
    pub platform: Option<String>,
    /// Whether `blobs/sha256/<xx>/<child>/data` still exists.
    pub child_blob_present: bool,
}

pub fn blob_data(v2: &Path, digest: &str) -> PathBuf {
    let hex = crate::oci::hex_of(digest);
    v2.join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

fn subdirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every repository directory under `repositories/`, with its name.
pub fn repositories(v2: &Path) -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
        let children = subdirs(dir);
        if children
            .iter()
            .any(|(n, _)| n == "_layers" || n == "_manifests" || n == "_uploads")
        {
            out.push((prefix.to_string(), dir.to_path_buf()));
        }
        for (name, path) in children {
            if name.starts_with('_') {
                continue;
            }
            let sub = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            walk(&path, &sub, out);
        }
    }
    let mut out = Vec::new();
    walk(&v2.join("repositories"), "", &mut out);
    out
}

/// The registries under the data root (`DATA/<name>/docker/registry/v2`).
pub fn registries(data: &Path) -> Vec<String> {
    subdirs(data)
        .into_iter()
        .filter(|(_, p)| p.join("docker/registry/v2").is_dir())
        .map(|(n, _)| n)
        .collect()
}

pub fn orphan_links(data: &Path) -> BTreeSet<OrphanLink> {
    let mut out = BTreeSet::new();
    for registry in registries(data) {
        let v2 = data.join(&registry).join("docker/registry/v2");
        for (repo, dir) in repositories(&v2) {
            for (hex, link_dir) in subdirs(&dir.join("_layers/sha256")) {
                if !link_dir.join("link").is_file() {
                    continue;
                }
                let digest = format!("sha256:{hex}");
                if !blob_data(&v2, &digest).is_file() {
                    out.insert(OrphanLink {
                        registry: registry.clone(),
                        repository: repo.clone(),
                        digest,
                    });
                }
            }
        }
    }
    out
}

fn platform_label(p: &Value) -> Option<String> {
    let os = p.get("os")?.as_str()?;
    let arch = p.get("architecture")?.as_str()?;
    Some(match p.get("variant").and_then(Value::as_str) {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    })
}

/// Children of index revisions whose revision link is missing, in every
/// registry (policy filtering is the caller's business).
pub fn orphan_children(data: &Path) -> BTreeSet<OrphanChild> {
    let mut out = BTreeSet::new();
    for registry in registries(data) {
        let v2 = data.join(&registry).join("docker/registry/v2");
        for (repo, dir) in repositories(&v2) {
            let revisions = dir.join("_manifests/revisions/sha256");
            for (hex, rev_dir) in subdirs(&revisions) {
                if !rev_dir.join("link").is_file() {
                    continue;
                }
                let index = format!("sha256:{hex}");
                let Ok(bytes) = std::fs::read(blob_data(&v2, &index)) else {
                    continue;
                };
                let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else {
                    continue;
                };
                let Some(children) = doc.get("manifests").and_then(Value::as_array) else {
                    continue;
                };
                for child in children {
                    let Some(cd) = child.get("digest").and_then(Value::as_str) else {
                        continue;
                    };
                    let child_hex = crate::oci::hex_of(cd);
                    if revisions.join(child_hex).join("link").is_file() {
                        continue;
                    }
                    out.insert(OrphanChild {
                        registry: registry.clone(),
                        repository: repo.clone(),
                        index: index.clone(),
                        child: cd.to_string(),
                        platform: child.get("platform").and_then(platform_label),
                        child_blob_present: blob_data(&v2, cd).is_file(),
                    });
                }
            }
        }
    }
    out
}

/// regfsck's own directory beside the registries under the data root: its
/// lock (taken by every run, dry runs included) and its default audit log.
pub const REGFSCK_STATE: &str = ".regfsck";

/// Every file and directory under `root`: relative path → sha256 of the
/// content (files), `"dir"` (directories) or `"symlink:<target>"`.
///
/// regfsck's own state directory ([`REGFSCK_STATE`]) is left out: what a run
/// does to the registries' storage is the question, and the audit log is
/// checked on its own ([`audit_removals`]).
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .filter_map(Result::ok)
            .filter(|e| !(dir == root && e.file_name() == REGFSCK_STATE))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let ft = e.file_type().expect("file type");
            if ft.is_symlink() {
                let target = std::fs::read_link(&path).expect("read_link");
                out.insert(rel, format!("symlink:{}", target.display()));
            } else if ft.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &path, out);
            } else {
                let content =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                out.insert(rel, sha256_hex(&content));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// What changed between two snapshots: (removed, added, modified) paths.
pub fn diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let removed = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .cloned()
        .collect();
    let added = after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .cloned()
        .collect();
    let modified = before
        .iter()
        .filter(|(k, v)| after.get(*k).is_some_and(|a| a != *v))
        .map(|(k, _)| k.clone())
        .collect();
    (removed, added, modified)
}

/// The `remove` records of regfsck's default audit log under `data`:
/// (registry, registry-relative directory) per removal, in order.
pub fn audit_removals(data: &Path) -> Vec<(String, String)> {
    let path = data.join(REGFSCK_STATE).join("audit.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("audit log {}: {e}: {l}", path.display()))
        })
        .filter(|r| r["event"] == "remove")
        .map(|r| {
            (
                r["registry"].as_str().unwrap_or_default().to_string(),
                r["path"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}
