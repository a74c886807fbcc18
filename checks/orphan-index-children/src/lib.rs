//! `orphan-index-children`: image indexes whose child manifests the repository lost.

use regfsck_core::manifest::ManifestError;
use regfsck_core::storage::EntryKind;
use regfsck_core::{Check, CheckContext, CheckOutput, Finding, layout};

pub const ID: &str = "orphan-index-children";

pub struct OrphanIndexChildren;

regfsck_core::declare_check! {
    check: OrphanIndexChildren,
    id: "orphan-index-children",
    summary: "image indexes whose child manifests are gone from the repository (manifest unknown)",
    explanation: include_str!("../EXPLAIN.md"),
    help: "rebuild and push the image (or re-create the child's revision link while its blobs still exist); never delete the index automatically",
    max_level: Warn,
    needs: [REVISIONS],
}

impl Check for OrphanIndexChildren {
    fn run(&self, cx: &CheckContext<'_>) -> CheckOutput {
        let mut out = CheckOutput::default();
        let mut inspected = 0u64;
        for repo in &cx.inventory.repositories {
            for index_digest in &repo.revisions {
                if !cx.inventory.has_blob_data(index_digest) {
                    continue; // no manifest to read: another check's business
                }
                let manifest = match cx.manifests.get(index_digest) {
                    Ok(m) => m,
                    Err(ManifestError::Missing) => continue,
                    Err(e) => {
                        let path = layout::blob_data(index_digest);
                        out.problems.push(cx.problem(
                            path,
                            format!("manifest of {}/{}: {e}", repo.name, index_digest.short()),
                        ));
                        continue;
                    }
                };
                if !manifest.is_index() {
                    continue;
                }
                inspected += 1;
                for child in manifest.children() {
                    if !child.digest.starts_with("sha256:") {
                        continue; // Distribution stores only sha256 revisions
                    }
                    let Some(cd) = child.sha256() else {
                        out.problems.push(cx.problem(
                            layout::blob_data(index_digest),
                            format!("index lists a malformed child digest {:?}", child.digest),
                        ));
                        continue;
                    };
                    let link = layout::revision_link(&repo.name, &cd);
                    if repo.has_revision(&cd) {
                        // The directory is there; the registry needs the link file in it.
                        match cx.storage.stat(&link) {
                            Ok(Some(m)) if m.kind == EntryKind::File => continue,
                            Ok(_) => {}
                            Err(e) => {
                                out.problems.push(cx.problem(e.path(), e.reason()));
                                continue;
                            }
                        }
                    }
                    let platform = child.platform.as_ref().map(ToString::to_string);
                    let blob = cx.inventory.has_blob_data(&cd);
                    let shown = platform.clone().unwrap_or_else(|| "no platform".into());
                    let state = if blob { "present" } else { "missing" };
                    out.findings.push(
                        Finding::new(
                            ID,
                            cx.registry,
                            &repo.name,
                            link.clone(),
                            format!(
                                "index {} lists child {shown} whose revision link is missing (child blob {state})",
                                index_digest.short()
                            ),
                        )
                        .digest(cd)
                        .detail("index", index_digest.to_string())
                        .detail("platform", platform)
                        .detail("child_blob", state)
                        .evidence(
                            layout::revision_link(&repo.name, index_digest),
                            true,
                            "the index the registry serves",
                        )
                        .evidence(link, false, "the child's revision link is gone")
                        .evidence(layout::blob_data(&cd), blob, format!("child blob {state}")),
                    );
                }
            }
        }
        let orphaned = out.findings.len() as u64;
        out.counters = vec![
            ("indexes_inspected", inspected),
            ("orphaned_children", orphaned),
        ];
        out
    }
}
