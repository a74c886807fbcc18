//! `unreferenced-blobs`: blobs that no manifest, index or link of any repository reaches,
//! what a garbage collection would sweep, and the bytes that would free.

use rayon::prelude::*;
use regfsck_core::manifest::{ManifestError, Parsed, Reference};
use regfsck_core::scan::Repository;
use regfsck_core::{Check, CheckContext, CheckOutput, Digest, Problem, StorageError, layout};

pub const ID: &str = "unreferenced-blobs";

pub struct UnreferencedBlobs;

regfsck_core::declare_check! {
    check: UnreferencedBlobs,
    id: "unreferenced-blobs",
    summary: "blobs no manifest, index or link references: what garbage-collect would sweep (disk use)",
    explanation: include_str!("../EXPLAIN.md"),
    help: "run the registry's garbage-collect (read-only mode or stopped) to free them; look first at why they lost their references",
    max_level: Warn,
    needs: [LAYERS, REVISIONS, TAGS, MANIFESTS, LINK_FILES],
}

impl Check for UnreferencedBlobs {
    fn run(&self, cx: &CheckContext<'_>) -> CheckOutput {
        let mut out = CheckOutput::default();
        let mut walk = Walk {
            cx,
            marks: vec![Mark::None; cx.inventory.blobs.len()],
            expanded: vec![false; cx.inventory.blobs.len()],
            manifests: 0,
            problems: Vec::new(),
        };
        let repos = &cx.inventory.repositories;
        // What garbage-collect marks: every manifest revision and what it references,
        // recursively through indexes.
        // As GC, only revisions with their link file count: the registry's API deletes
        // remove the file and leave the directory.
        let mut revisions = Vec::new();
        let mut link_problems = each_existing_link(
            cx,
            |r| &r.revisions,
            |cx, r, d| cx.revision_link_exists(r, d),
            |d| revisions.push(*d),
        );
        walk.traverse(revisions.into_iter(), Mark::Manifest);
        // What else the registry can still be asked for: tagged manifests (and what they
        // reference) and layer links.
        walk.traverse(
            repos.iter().flat_map(|r| {
                r.tags.iter().flat_map(|t| {
                    t.current
                        .digest()
                        .into_iter()
                        .chain(t.index.iter().copied())
                })
            }),
            Mark::Link,
        );
        // Marked as they come: collecting them first would hold every layer link again.
        link_problems.extend(each_existing_link(
            cx,
            |r| &r.layers,
            |cx, r, d| cx.layer_link_exists(r, d),
            |d| walk.mark(d, Mark::Link),
        ));
        walk.problems.extend(link_problems);

        let (mut checked, mut unreferenced_bytes) = (0u64, 0u64);
        let (mut link_only, mut link_only_bytes) = (0u64, 0u64);
        for (blob, mark) in cx.inventory.blobs.iter().zip(&walk.marks) {
            let Some(meta) = blob.data_file() else {
                continue; // nothing GC would free; other checks look at odd data files
            };
            checked += 1;
            match mark {
                Mark::Manifest => {}
                Mark::Link => {
                    link_only += 1;
                    link_only_bytes += meta.size;
                }
                Mark::None => {
                    unreferenced_bytes += meta.size;
                    let path = layout::blob_dir(&blob.digest);
                    let mut f = cx
                        .finding(
                            ID,
                            "",
                            path,
                            format!(
                                "blob referenced by no manifest, index or link ({} bytes)",
                                meta.size
                            ),
                        )
                        .digest(blob.digest)
                        .detail("size", meta.size);
                    if let Some(t) = meta.modified {
                        f = f.detail("modified", humantime::format_rfc3339_seconds(t).to_string());
                    }
                    out.findings.push(f.evidence(
                        layout::blob_data(&blob.digest),
                        true,
                        format!("{} bytes nothing refers to", meta.size),
                    ));
                }
            }
        }
        out.problems = walk.problems;
        let unreferenced = out.findings.len() as u64;
        out.counters = vec![
            ("blobs_checked", checked),
            ("manifests_inspected", walk.manifests),
            ("unreferenced", unreferenced),
            ("bytes_unreferenced", unreferenced_bytes),
            ("link_only", link_only),
            ("bytes_link_only", link_only_bytes),
        ];
        out
    }
}

/// Manifests parsed (and alive) at once while marking.
const MANIFESTS_PER_BATCH: usize = 4096;

/// How a blob is reached; the strongest way wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mark {
    None,
    /// Only through a layer link or a tag: garbage-collect would still sweep it.
    Link,
    /// Through a manifest revision: garbage-collect keeps it.
    Manifest,
}

struct Walk<'c, 'a> {
    cx: &'c CheckContext<'a>,
    /// One per `cx.inventory.blobs` entry.
    marks: Vec<Mark>,
    /// One per `cx.inventory.blobs` entry: whether it was taken as a manifest to expand. A
    /// flag per blob rather than a set of digests: a manifest that is not in the blob store
    /// cannot be read anyway, and a set would cost some 70 bytes per manifest.
    expanded: Vec<bool>,
    manifests: u64,
    problems: Vec<Problem>,
}

impl Walk<'_, '_> {
    fn mark(&mut self, d: &Digest, how: Mark) {
        if let Some(i) = self.cx.inventory.blob_index(d) {
            self.raise(i, how);
        }
    }

    /// Blob `i`'s mark becomes at least `how`.
    fn raise(&mut self, i: usize, how: Mark) {
        self.marks[i] = self.marks[i].max(how);
    }

    /// The blob index of `d` if it is in the blob store and not yet taken for expansion;
    /// from then on it is taken.
    fn take(&mut self, d: &Digest) -> Option<usize> {
        let i = self.cx.inventory.blob_index(d)?;
        (!std::mem::replace(&mut self.expanded[i], true)).then_some(i)
    }

    /// Marks `roots` and everything their manifests reference, one level of indexes at a
    /// time, reading each level's manifests in parallel through the shared cache.
    fn traverse(&mut self, roots: impl Iterator<Item = Digest>, how: Mark) {
        let mut frontier: Vec<usize> = roots.filter_map(|d| self.take(&d)).collect();
        while !frontier.is_empty() {
            for &i in &frontier {
                self.raise(i, how);
            }
            let mut next = Vec::new();
            // A level may be every revision of the registry: parse a batch at a time, so that
            // only a batch of parsed manifests is alive at once.
            for batch in frontier.chunks(MANIFESTS_PER_BATCH) {
                self.expand(batch, how, &mut next);
            }
            frontier = next;
        }
    }

    /// Reads `batch`'s manifests in parallel, marks what they reference and queues their
    /// children in `next`.
    fn expand(&mut self, batch: &[usize], how: Mark, next: &mut Vec<usize>) {
        let cx = self.cx;
        let blobs = &cx.inventory.blobs;
        let read: Vec<(Digest, Result<Parsed<'_>, ManifestError>)> = batch
            .par_iter()
            .map(|&i| &blobs[i])
            .filter(|b| b.data_file().is_some())
            .map(|b| (b.digest, cx.manifests.get(&b.digest)))
            .collect();
        for (d, manifest) in read {
            let manifest = match manifest {
                Ok(m) => m,
                Err(ManifestError::Missing) => continue,
                Err(e) => {
                    self.problems.push(cx.problem(
                        layout::blob_data(&d),
                        format!(
                            "manifest {}: {e} (blobs only it references are reported as unreferenced)",
                            d.short()
                        ),
                    ));
                    continue;
                }
            };
            self.manifests += 1;
            for r in manifest.blob_references() {
                if let Some(rd) = self.reference(&d, &r) {
                    self.mark(&rd, how);
                }
            }
            for child in manifest.children() {
                if let Some(i) = self
                    .reference(&d, &child.digest)
                    .and_then(|cd| self.take(&cd))
                {
                    next.push(i);
                }
            }
        }
    }

    /// A reference's sha256 digest; a malformed one is a problem, another algorithm is
    /// simply not in this blob store.
    fn reference(&mut self, manifest: &Digest, reference: &Reference) -> Option<Digest> {
        let d = reference.sha256();
        if d.is_none() && reference.claims_sha256() {
            self.problems.push(self.cx.problem(
                layout::blob_data(manifest),
                format!(
                    "manifest {} references a malformed digest {:?}",
                    manifest.short(),
                    reference.to_string().chars().take(80).collect::<String>()
                ),
            ));
        }
        d
    }
}

type LinkTest = fn(&CheckContext<'_>, &Repository, &Digest) -> Result<bool, StorageError>;

/// Calls `found` with the digest of every repository whose link file exists, and returns
/// the problems met. The scan has looked at the link files (`LINK_FILES`), so this is a walk
/// through memory, done in place; only a directory the scan could not open costs a stat per
/// link.
fn each_existing_link(
    cx: &CheckContext<'_>,
    digests: fn(&Repository) -> &Vec<Digest>,
    exists: LinkTest,
    mut found: impl FnMut(&Digest),
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for repo in &cx.inventory.repositories {
        for d in digests(repo) {
            match exists(cx, repo, d) {
                Ok(true) => found(d),
                Ok(false) => {}
                Err(e) => problems.push(cx.problem(e.path(), e.reason())),
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use regfsck_core::check;
    use regfsck_core::testing::{Tree, digest_of, image_manifest, index_json, run_check};

    use super::*;

    fn run(tree: &Tree) -> CheckOutput {
        run_check(check::find(ID).expect("registered"), "private", tree, None)
    }

    fn reported(out: &CheckOutput) -> Vec<Digest> {
        out.findings.iter().filter_map(|f| f.digest).collect()
    }

    fn counters(out: &CheckOutput) -> Vec<(&'static str, u64)> {
        out.counters.clone()
    }

    #[test]
    fn a_healthy_registry_has_nothing_unreferenced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let (amd, _, _) = tree.image("team/app", &[b"base", b"amd64 bits"]);
        let (arm, _, _) = tree.image("team/app", &[b"base", b"arm64 bits"]);
        let index = tree.index(
            "team/app",
            None,
            &[(amd, "linux", "amd64"), (arm, "linux", "arm64")],
        );
        tree.tag("team/app", "v1", &index);
        let out = run(&tree);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        // 1 config (the same for both) + 3 layers + 2 manifests + 1 index
        assert_eq!(
            counters(&out),
            vec![
                ("blobs_checked", 7),
                ("manifests_inspected", 3),
                ("unreferenced", 0),
                ("bytes_unreferenced", 0),
                ("link_only", 0),
                ("bytes_link_only", 0),
            ]
        );
    }

    #[test]
    fn finds_blobs_nothing_reaches_with_their_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        tree.image("team/app", &[b"kept"]);
        let stray = tree.blob(b"left behind by a deleted image");
        let also = tree.blob(b"another one");
        // A blob directory without data frees nothing.
        std::fs::create_dir_all(tree.path(&layout::blob_dir(&digest_of(b"no data"))))
            .expect("mkdir");

        let out = run(&tree);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let mut want = vec![stray, also];
        want.sort();
        let mut got = reported(&out);
        got.sort();
        assert_eq!(got, want);
        let f = out
            .findings
            .iter()
            .find(|f| f.digest == Some(stray))
            .expect("finding");
        assert_eq!(*f.path, layout::blob_dir(&stray));
        assert_eq!(&*f.repository, "");
        assert_eq!(
            &*f.message,
            "blob referenced by no manifest, index or link (30 bytes)"
        );
        assert_eq!(f.details["size"], 30);
        assert!(
            f.details["modified"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        assert!(f.fix.is_none());
        let c = counters(&out);
        assert!(c.contains(&("unreferenced", 2)), "{c:?}");
        assert!(c.contains(&("bytes_unreferenced", 41)), "{c:?}");
        assert!(c.contains(&("blobs_checked", 5)), "{c:?}");
    }

    #[test]
    fn every_kind_of_reference_keeps_a_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        // Only a layer link: reached, but GC would sweep it (link_only).
        let linked = tree.blob(b"uploaded, never in a manifest");
        tree.layer_link("a", &linked);
        // Config and layer reached only from a manifest (their layer links are gone).
        let (_, config, layers) = tree.image("a", &[b"layer of a"]);
        tree.remove(&layout::layer_link_dir("a", &config));
        tree.remove(&layout::layer_link_dir("a", &layers[0]));
        // A child reached only through an index whose child revision link is gone; its
        // config and layers through the child manifest.
        let c_cfg = tree.blob(b"{\"child\":true}");
        let c_layer = tree.blob(b"child layer");
        let child = tree.blob(image_manifest(&c_cfg, 14, &[(c_layer, 11)]).as_bytes());
        tree.index("a", None, &[(child, "linux", "arm64")]);
        // A manifest reached only through a tag, not a revision: its blobs count as links.
        let t_layer = tree.blob(b"tagged only");
        let t_cfg = tree.blob(b"{}");
        let tagged = tree.blob(image_manifest(&t_cfg, 2, &[(t_layer, 11)]).as_bytes());
        tree.tag("b", "old", &tagged);

        let out = run(&tree);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let c = counters(&out);
        // linked, tagged manifest, its config and its layer.
        assert!(c.contains(&("link_only", 4)), "{c:?}");
        let bytes = 29 + 2 + 11 + image_manifest(&t_cfg, 2, &[(t_layer, 11)]).len() as u64;
        assert!(c.contains(&("bytes_link_only", bytes)), "{c:?}");
        // image manifest, index, child, tagged manifest
        assert!(c.contains(&("manifests_inspected", 4)), "{c:?}");
    }

    #[test]
    fn a_manifest_that_cannot_be_read_is_a_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let garbage = tree.blob(b"not json at all");
        tree.revision("a", &garbage);
        let bad_ref = tree.blob(
            format!(
                "{{\"schemaVersion\":2,\"config\":{{\"digest\":\"sha256:abc\"}},\"layers\":[{{\"digest\":\"sha512:{}\"}}]}}",
                "0".repeat(128)
            )
            .as_bytes(),
        );
        tree.revision("a", &bad_ref);
        // An index whose child's blob is gone: nothing to read, and not a problem here.
        let gone = digest_of(b"never stored");
        let partial = tree.blob(index_json(None, &[(gone, "linux", "amd64")]).as_bytes());
        tree.revision("a", &partial);
        let stray = tree.blob(b"stray");

        let out = run(&tree);
        assert_eq!(reported(&out), vec![stray]);
        let mut problems: Vec<(String, String)> = out
            .problems
            .iter()
            .map(|p| (p.path.clone(), p.message.clone()))
            .collect();
        problems.sort();
        let mut want = vec![
            (
                layout::blob_data(&garbage),
                format!(
                    "manifest {}: not a manifest: a manifest is a JSON object (blobs only it references are reported as unreferenced)",
                    garbage.short()
                ),
            ),
            (
                layout::blob_data(&bad_ref),
                format!(
                    "manifest {} references a malformed digest \"sha256:abc\"",
                    bad_ref.short()
                ),
            ),
        ];
        want.sort();
        assert_eq!(problems, want);
    }

    #[test]
    fn manifests_reached_twice_are_read_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        // outer lists inner and leaf, inner lists leaf: leaf is reached three ways.
        let (leaf, _, _) = tree.image("a", &[b"leaf"]);
        let inner = tree.index("a", None, &[(leaf, "linux", "amd64")]);
        let outer = tree.index(
            "a",
            None,
            &[(inner, "linux", "amd64"), (leaf, "linux", "arm64")],
        );
        tree.tag("a", "v1", &outer);
        let out = run(&tree);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert!(counters(&out).contains(&("manifests_inspected", 3)));
    }

    #[test]
    fn a_manifest_deleted_through_the_api_no_longer_keeps_its_blobs() {
        // 2.8's manifest and blob DELETEs remove the link files and leave the directories.
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let (m, config, layers) = tree.image("team/app", &[b"deleted layer"]);
        tree.remove(&layout::revision_link("team/app", &m));
        tree.remove(&layout::layer_link("team/app", &config));
        tree.remove(&layout::layer_link("team/app", &layers[0]));
        let mut got = reported(&run(&tree));
        got.sort();
        let mut want = vec![m, config, layers[0]];
        want.sort();
        assert_eq!(got, want);
    }
}
