//! `orphan-index-children`: image indexes whose child manifests the repository lost.

use regfsck_core::manifest::ManifestError;
use regfsck_core::scan::Repository;
use regfsck_core::{Check, CheckContext, CheckOutput, layout};

pub const ID: &str = "orphan-index-children";

pub struct OrphanIndexChildren;

regfsck_core::declare_check! {
    check: OrphanIndexChildren,
    id: "orphan-index-children",
    summary: "image indexes whose child manifests are gone from the repository (manifest unknown)",
    explanation: include_str!("../EXPLAIN.md"),
    help: "rebuild and push the image (or re-create the child's revision link while its blobs still exist); never delete the index automatically",
    max_level: Warn,
    needs: [REVISIONS, MANIFESTS],
}

impl Check for OrphanIndexChildren {
    fn run(&self, cx: &CheckContext<'_>) -> CheckOutput {
        // Repositories in parallel: each revision costs a manifest read (a GET on S3).
        cx.each_repository(&["indexes_inspected", "orphaned_children"], |repo| {
            check_repository(cx, repo)
        })
    }
}

fn check_repository(cx: &CheckContext<'_>, repo: &Repository) -> CheckOutput {
    let mut out = CheckOutput::default();
    let mut inspected = 0u64;
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
        // Only an index the registry serves: its own revision link must be a file.
        // (A revision directory without its link is another check's finding.)
        match cx.revision_link_exists(repo, index_digest) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                out.problems.push(cx.problem(e.path(), e.reason()));
                continue;
            }
        }
        inspected += 1;
        for child in manifest.children() {
            if !child.digest.claims_sha256() {
                continue; // Distribution stores only sha256 revisions
            }
            let Some(cd) = child.sha256() else {
                out.problems.push(cx.problem(
                    layout::blob_data(index_digest),
                    format!(
                        "index lists a malformed child digest {:?}",
                        child.digest.to_string()
                    ),
                ));
                continue;
            };
            let link = layout::revision_link(&repo.name, &cd);
            if repo.has_revision(&cd) {
                // The directory is there; the registry needs the link file in it.
                match cx.revision_link_exists(repo, &cd) {
                    Ok(true) => continue,
                    Ok(false) => {}
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
                        cx.finding(ID, &repo.name,
                            link.clone(),
                            format!(
                                "index {} lists child {shown} whose revision link is missing (child blob {state})",
                                index_digest.short()
                            ),
                        )
                        .digest(cd)
                        .detail("index", *index_digest)
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
    let orphaned = out.findings.len() as u64;
    out.counters = vec![
        ("indexes_inspected", inspected),
        ("orphaned_children", orphaned),
    ];
    out
}

#[cfg(test)]
mod tests {
    use regfsck_core::manifest::{DOCKER_MANIFEST_LIST, OCI_INDEX};
    use regfsck_core::testing::{Tree, digest_of, run_check};
    use regfsck_core::{Digest, check};

    use super::*;

    fn run(tree: &Tree) -> CheckOutput {
        run_check(check::find(ID).expect("registered"), "private", tree, None)
    }

    fn children(out: &CheckOutput) -> Vec<(String, Digest, String, String)> {
        let mut v: Vec<_> = out
            .findings
            .iter()
            .map(|f| {
                let s = |k: &str| f.details[k].as_str().unwrap_or("null").to_string();
                (
                    f.repository.to_string(),
                    f.digest.expect("digest"),
                    s("platform"),
                    s("child_blob"),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn finds_lost_children_of_every_kind_of_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        for (repo, mt) in [
            ("oci", Some(OCI_INDEX)),
            ("docker", Some(DOCKER_MANIFEST_LIST)),
            ("bare", None),
        ] {
            let (amd, _, _) = tree.image(repo, &[b"amd"]);
            let (arm, _, _) = tree.image(repo, &[repo.as_bytes()]);
            tree.index(
                repo,
                mt,
                &[(amd, "linux", "amd64"), (arm, "linux", "arm64")],
            );
            tree.remove(&layout::revision_link(repo, &arm).replace("/link", ""));
            if repo == "docker" {
                tree.remove(&layout::blob_dir(&arm));
            }
        }
        let out = run(&tree);
        let arm = |repo: &str| {
            let manifests = out
                .findings
                .iter()
                .find(|f| &*f.repository == repo)
                .and_then(|f| f.digest);
            manifests.expect("finding")
        };
        assert_eq!(
            children(&out),
            vec![
                (
                    "bare".into(),
                    arm("bare"),
                    "linux/arm64".into(),
                    "present".into()
                ),
                (
                    "docker".into(),
                    arm("docker"),
                    "linux/arm64".into(),
                    "missing".into()
                ),
                (
                    "oci".into(),
                    arm("oci"),
                    "linux/arm64".into(),
                    "present".into()
                ),
            ]
        );
        assert_eq!(
            out.counters,
            vec![("indexes_inspected", 3), ("orphaned_children", 3)]
        );
        assert!(out.problems.is_empty(), "{:?}", out.problems);
    }

    #[test]
    fn a_revision_directory_without_its_link_file_counts_as_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let (amd, _, _) = tree.image("a", &[b"amd"]);
        tree.index("a", Some(OCI_INDEX), &[(amd, "linux", "amd64")]);
        tree.remove(&layout::revision_link("a", &amd));
        assert_eq!(run(&tree).findings.len(), 1);
    }

    #[test]
    fn healthy_indexes_unserved_indexes_and_images_are_quiet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let (amd, _, _) = tree.image("a", &[b"amd"]);
        tree.index("a", Some(OCI_INDEX), &[(amd, "linux", "amd64")]);
        // An index whose own revision link is gone is not served: its children are moot.
        let lost = digest_of(b"lost child");
        let unserved = tree.index("b", None, &[(lost, "linux", "s390x")]);
        tree.remove(&layout::revision_link("b", &unserved));
        let out = run(&tree);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert_eq!(out.counters[0], ("indexes_inspected", 1));
    }

    #[test]
    fn malformed_manifests_are_problems_not_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        for (i, junk) in [
            &b"not json"[..],
            b"[1,2,3]",
            b"{\"manifests\":[7]}",
            b"\xff\xfe",
        ]
        .iter()
        .enumerate()
        {
            let d = tree.blob(junk);
            tree.revision(&format!("r{i}"), &d);
        }
        let huge = vec![b' '; (regfsck_core::manifest::MAX_MANIFEST_BYTES + 1) as usize];
        let d = tree.blob(&huge);
        tree.revision("huge", &d);
        let bad_child = tree.blob(br#"{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"sha256:xyz"}]}"#);
        tree.revision("badchild", &bad_child);
        let out = run(&tree);
        assert!(out.findings.is_empty());
        assert_eq!(out.problems.len(), 6, "{:#?}", out.problems);
        assert!(
            out.problems
                .iter()
                .any(|p| p.message.contains("larger than"))
        );
    }
}
