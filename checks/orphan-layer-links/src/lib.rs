//! `orphan-layer-links`: layer links whose blob data is gone.

use regfsck_core::scan::read_link;
use regfsck_core::{
    Applicability, Check, CheckContext, CheckOutput, Digest, Finding, FixAction, FixPlan, Recheck,
    Storage, StorageError, layout,
};

pub const ID: &str = "orphan-layer-links";

pub struct OrphanLayerLinks;

regfsck_core::declare_check! {
    check: OrphanLayerLinks,
    id: "orphan-layer-links",
    summary: "layer links whose blob data is gone (pulls fail with unexpected EOF)",
    explanation: include_str!("../EXPLAIN.md"),
    help: "remove the link (level `fix` does it), then restart the registry or flush its blob-descriptor cache",
    max_level: Fix,
    needs: [LAYERS],
}

impl Check for OrphanLayerLinks {
    fn run(&self, cx: &CheckContext<'_>) -> CheckOutput {
        let mut out = CheckOutput::default();
        let mut checked = 0u64;
        for repo in &cx.inventory.repositories {
            checked += repo.layers.len() as u64;
            for d in repo
                .layers
                .iter()
                .filter(|d| !cx.inventory.has_blob_data(d))
            {
                // Only candidates cost a read: the link's content proves it is a link, and is
                // what an undo needs.
                let link = layout::layer_link(&repo.name, d);
                match read_link(cx.storage, &link) {
                    Ok(None) => continue,
                    Ok(Some(Ok(target))) if target == *d => {
                        out.findings.push(finding(cx, &repo.name, d, None));
                    }
                    Ok(Some(Ok(other))) => {
                        out.findings.push(finding(
                            cx,
                            &repo.name,
                            d,
                            Some(format!("link names {other}")),
                        ));
                    }
                    Ok(Some(Err(why))) => {
                        out.findings.push(finding(cx, &repo.name, d, Some(why)));
                    }
                    Err(e) => out.problems.push(cx.problem(e.path(), e.reason())),
                }
            }
        }
        let orphaned = out.findings.len() as u64;
        out.counters = vec![("links_checked", checked), ("orphaned", orphaned)];
        out
    }

    fn recheck(&self, storage: &dyn Storage, finding: &Finding) -> Result<Recheck, StorageError> {
        let Some(d) = finding.digest else {
            return Ok(Recheck::GONE);
        };
        let blob = storage.stat(&layout::blob_data(&d))?;
        let link_path = layout::layer_link(&finding.repository, &d);
        let link = storage.stat(&link_path)?;
        let content = read_link(storage, &link_path)?;
        let holds = blob.is_none() && matches!(content, Some(Ok(t)) if t == d);
        // The link file's own time: a push (re)writes it. (A directory's time would cost a
        // listing on an object store and says nothing more.)
        let last_change = link.and_then(|m| m.modified);
        Ok(Recheck { holds, last_change })
    }
}

/// `anomaly` is set when the link does not name its own directory's digest: reported, never
/// removed, because it is not proven to be this blob's link.
fn finding(cx: &CheckContext<'_>, repo: &str, d: &Digest, anomaly: Option<String>) -> Finding {
    let dir = layout::layer_link_dir(repo, d);
    let blob_dir_present = cx.inventory.blob(d).is_some();
    let message = match &anomaly {
        None => "layer link without blob data".to_string(),
        Some(why) => format!("layer link without blob data; {why}, so it is not removed"),
    };
    let f = cx
        .finding(ID, repo, dir, message)
        .digest(*d)
        .detail(
            "blob_dir",
            if blob_dir_present {
                "present"
            } else {
                "missing"
            },
        )
        .evidence(
            layout::layer_link(repo, d),
            true,
            "the link the registry trusts",
        )
        .evidence(layout::blob_data(d), false, "blob data is gone");
    match anomaly {
        Some(why) => f.detail("link_anomaly", why),
        None => f.fix(FixPlan {
            action: FixAction::RemoveDir {
                path: layout::layer_link_dir(repo, d),
            },
            applicability: Applicability::Safe,
        }),
    }
}

#[cfg(test)]
mod tests {
    use regfsck_core::check;
    use regfsck_core::testing::{Tree, run_check};

    use super::*;

    fn run(tree: &Tree) -> CheckOutput {
        run_check(check::find(ID).expect("registered"), "private", tree, None)
    }

    #[test]
    fn finds_links_whose_blob_data_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let (_, _, layers) = tree.image("team/app", &[b"one", b"two"]);
        tree.image("base", &[b"one"]); // shares the first layer
        tree.remove(&layout::blob_dir(&layers[0]));
        tree.remove(&layout::blob_data(&layers[1])); // the directory stays, the data goes

        let out = run(&tree);
        let mut got: Vec<(String, Digest)> = out
            .findings
            .iter()
            .map(|f| (f.repository.to_string(), f.digest.expect("digest")))
            .collect();
        got.sort();
        let mut want = vec![
            ("base".to_string(), layers[0]),
            ("team/app".to_string(), layers[0]),
            ("team/app".to_string(), layers[1]),
        ];
        want.sort();
        assert_eq!(got, want);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.counters, vec![("links_checked", 5), ("orphaned", 3)]);
        let f = &out.findings[0];
        assert_eq!(
            *f.path,
            layout::layer_link_dir(&f.repository, &f.digest.expect("digest"))
        );
        assert!(
            matches!(f.fix.as_deref(), Some(FixPlan { action: FixAction::RemoveDir { path }, .. }) if **path == *f.path)
        );
    }

    #[test]
    fn healthy_and_linkless_directories_are_not_findings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        tree.image("team/app", &[b"one"]);
        let gone = regfsck_core::testing::digest_of(b"never stored");
        // A `_layers/sha256/<d>/` directory without a link file is not a link.
        std::fs::create_dir_all(tree.path(&layout::layer_link_dir("team/app", &gone)))
            .expect("mkdir");
        let out = run(&tree);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
    }

    #[test]
    fn a_link_naming_another_digest_is_reported_but_never_fixed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let d = regfsck_core::testing::digest_of(b"gone");
        let other = regfsck_core::testing::digest_of(b"other");
        tree.write(&layout::layer_link("a", &d), other.to_string().as_bytes());
        let e = regfsck_core::testing::digest_of(b"garbage");
        tree.write(&layout::layer_link("a", &e), b"\x00garbage");
        tree.write(&format!("{}/00/keep", layout::BLOBS), b"");
        let out = run(&tree);
        assert_eq!(out.findings.len(), 2);
        assert!(out.findings.iter().all(|f| f.fix.is_none()));
        assert!(
            out.findings
                .iter()
                .all(|f| f.details.contains_key("link_anomaly"))
        );
    }

    #[test]
    fn recheck_sees_a_blob_pushed_since_the_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let d = regfsck_core::testing::digest_of(b"late");
        tree.layer_link("a", &d);
        tree.write(&format!("{}/00/keep", layout::BLOBS), b"");
        let out = run(&tree);
        assert_eq!(out.findings.len(), 1);
        let storage = tree.storage();
        let before = OrphanLayerLinks
            .recheck(&storage, &out.findings[0])
            .expect("recheck");
        assert!(before.holds && before.last_change.is_some());
        tree.blob(b"late");
        let after = OrphanLayerLinks
            .recheck(&storage, &out.findings[0])
            .expect("recheck");
        assert!(!after.holds);
    }
}
