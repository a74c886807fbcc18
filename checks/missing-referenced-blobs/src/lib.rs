//! `missing-referenced-blobs`: tagged images whose config or layers the repository cannot
//! serve.
//!
//! From every tag's current manifest, through image indexes to their children, to each image
//! manifest's config and layers: each blob needs its data in the blob store and a `_layers`
//! link in the repository, or a pull fails. A child manifest of an index whose revision link
//! exists but whose blob data is gone is reported too (`"role": "manifest"`).

use std::collections::{BTreeMap, BTreeSet};

use regfsck_core::manifest::{self, ManifestError, Reference};
use regfsck_core::scan::Repository;
use regfsck_core::{Check, CheckContext, CheckOutput, Digest, Finding, Problem, layout};

pub const ID: &str = "missing-referenced-blobs";

pub struct MissingReferencedBlobs;

regfsck_core::declare_check! {
    check: MissingReferencedBlobs,
    id: "missing-referenced-blobs",
    summary: "tagged images whose config or layer blobs are gone or unlinked (blob unknown, unexpected EOF)",
    explanation: include_str!("../EXPLAIN.md"),
    help: "push the image again (a pull-through cache re-fetches once the stale layer link is gone); restore the `_layers` link when only the link is missing",
    max_level: Warn,
    needs: [TAGS, REVISIONS, LAYERS, MANIFESTS, LINK_FILES],
}

impl Check for MissingReferencedBlobs {
    fn run(&self, cx: &CheckContext<'_>) -> CheckOutput {
        cx.each_repository(
            &[
                "manifests_inspected",
                "indexes_inspected",
                "blobs_checked",
                "missing_blob_data",
                "missing_layer_links",
                "manifests_without_config",
                "foreign_layers_skipped",
            ],
            |repo| check_repository(cx, repo).output(),
        )
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Distinct tagged image manifests (roots or index children) read, per repository.
    manifests_inspected: u64,
    indexes_inspected: u64,
    /// Distinct (repository, blob) references checked.
    blobs_checked: u64,
    missing_blob_data: u64,
    missing_layer_links: u64,
    /// Docker schema1 (and other config-less) manifests: skipped.
    manifests_without_config: u64,
    foreign_layers_skipped: u64,
}

impl RepoResult {
    fn output(self) -> CheckOutput {
        let c = self.counts;
        CheckOutput {
            findings: self.findings,
            problems: self.problems,
            counters: vec![
                ("manifests_inspected", c.manifests_inspected),
                ("indexes_inspected", c.indexes_inspected),
                ("blobs_checked", c.blobs_checked),
                ("missing_blob_data", c.missing_blob_data),
                ("missing_layer_links", c.missing_layer_links),
                ("manifests_without_config", c.manifests_without_config),
                ("foreign_layers_skipped", c.foreign_layers_skipped),
            ],
        }
    }
}

#[derive(Debug, Default)]
struct RepoResult {
    findings: Vec<Finding>,
    problems: Vec<Problem>,
    counts: Counts,
}

/// What a referenced blob is to the manifest that references it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    /// A child manifest of an index (its revision link is present).
    Manifest,
    Config,
    Layer,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Manifest => "manifest",
            Role::Config => "config",
            Role::Layer => "layer",
        }
    }
}

/// Everything known about one referenced blob of a repository.
#[derive(Debug)]
struct Use<'r> {
    /// The strongest-sorting role it plays (a blob is almost always one thing).
    role: Role,
    tags: BTreeSet<&'r str>,
    /// The manifests (or, for a child manifest, the indexes) that reference it.
    referrers: BTreeSet<Digest>,
    /// The platforms of the index children it was reached through.
    platforms: BTreeSet<String>,
}

/// The walk over one repository's tagged manifests.
struct Walk<'a, 'r> {
    cx: &'a CheckContext<'a>,
    repo: &'r Repository,
    uses: BTreeMap<Digest, Use<'r>>,
    images: BTreeSet<Digest>,
    indexes: BTreeSet<Digest>,
    /// Manifests already reported as unreadable, so each is reported once.
    unreadable: BTreeSet<Digest>,
    problems: Vec<Problem>,
    counts: Counts,
}

impl<'r> Walk<'_, 'r> {
    fn note(
        &mut self,
        blob: Digest,
        role: Role,
        tags: &BTreeSet<&'r str>,
        referrer: Digest,
        platform: Option<&str>,
    ) {
        let u = self.uses.entry(blob).or_insert_with(|| Use {
            role,
            tags: BTreeSet::new(),
            referrers: BTreeSet::new(),
            platforms: BTreeSet::new(),
        });
        u.role = u.role.min(role);
        u.tags.extend(tags.iter().copied());
        u.referrers.insert(referrer);
        if let Some(p) = platform {
            u.platforms.insert(p.to_string());
        }
    }

    /// The sha256 digest of a descriptor; `None` (with a problem when it claims sha256 but is
    /// malformed) for anything Distribution's sha256 layout cannot hold.
    fn descriptor_digest(&mut self, within: &Digest, reference: &Reference) -> Option<Digest> {
        if let Some(d) = reference.sha256() {
            return Some(d);
        }
        if reference.claims_sha256() {
            self.problems.push(self.cx.problem(
                layout::blob_data(within),
                format!(
                    "manifest {} references a malformed digest {:?}",
                    within.short(),
                    reference.to_string()
                ),
            ));
        }
        None
    }

    /// Visits manifest `d` (its revision link and blob data exist) for `tags`.
    fn visit(&mut self, d: Digest, tags: &BTreeSet<&'r str>, platform: Option<&str>, depth: usize) {
        let manifest = match self.cx.manifests.get(&d) {
            Ok(m) => m,
            Err(ManifestError::Missing) => return, // gone since the scan
            Err(e) => {
                if self.unreadable.insert(d) {
                    // Worded as orphan-index-children words it, so the two read as one.
                    self.problems.push(self.cx.problem(
                        layout::blob_data(&d),
                        format!("manifest of {}/{}: {e}", self.repo.name, d.short()),
                    ));
                }
                return;
            }
        };
        if manifest.is_index() {
            if self.indexes.insert(d) {
                self.counts.indexes_inspected += 1;
            }
            if depth >= regfsck_core::check::MAX_INDEX_DEPTH {
                return;
            }
            for child in manifest.children() {
                let Some(cd) = self.descriptor_digest(&d, &child.digest) else {
                    continue;
                };
                match self.cx.revision_link_exists(self.repo, &cd) {
                    Ok(true) => {}
                    Ok(false) => continue, // orphan-index-children's business
                    Err(e) => {
                        self.problems.push(self.cx.problem(e.path(), e.reason()));
                        continue;
                    }
                }
                let shown = child.platform.as_ref().map(ToString::to_string);
                let platform = shown.as_deref().or(platform);
                if self.cx.inventory.has_blob_data(&cd) {
                    self.visit(cd, tags, platform, depth + 1);
                } else {
                    self.note(cd, Role::Manifest, tags, d, platform);
                }
            }
            return;
        }
        if !manifest.has_config() {
            if self.images.insert(d) {
                self.counts.manifests_without_config += 1;
            }
            return;
        }
        if self.images.insert(d) {
            self.counts.manifests_inspected += 1;
        }
        for (role, reference) in manifest.references() {
            let role = match role {
                manifest::Role::Config => Role::Config,
                manifest::Role::Layer => Role::Layer,
                manifest::Role::ForeignLayer => {
                    self.counts.foreign_layers_skipped += 1;
                    continue;
                }
                // Not what an image pull fetches.
                manifest::Role::ArtifactBlob | manifest::Role::Schema1Layer => continue,
            };
            if let Some(bd) = self.descriptor_digest(&d, &reference) {
                self.note(bd, role, tags, d, platform);
            }
        }
    }
}

fn check_repository(cx: &CheckContext<'_>, repo: &Repository) -> RepoResult {
    // The manifests tags name, and the tags naming each; a tag whose manifest is lost is
    // dangling-tags' business.
    let mut roots: BTreeMap<Digest, BTreeSet<&str>> = BTreeMap::new();
    let mut problems = Vec::new();
    for tag in &repo.tags {
        let Some(d) = tag.current.digest() else {
            continue;
        };
        match cx.revision_link_exists(repo, &d) {
            Ok(true) if cx.inventory.has_blob_data(&d) => {
                roots.entry(d).or_default().insert(&tag.name);
            }
            Ok(_) => {}
            Err(e) => problems.push(cx.problem(e.path(), e.reason())),
        }
    }
    let mut walk = Walk {
        cx,
        repo,
        uses: BTreeMap::new(),
        images: BTreeSet::new(),
        indexes: BTreeSet::new(),
        unreadable: BTreeSet::new(),
        problems,
        counts: Counts::default(),
    };
    for (d, tags) in &roots {
        walk.visit(*d, tags, None, 0);
    }

    let mut findings = Vec::new();
    walk.counts.blobs_checked = walk.uses.len() as u64;
    for (blob, u) in &walk.uses {
        let data = cx.inventory.has_blob_data(blob);
        // A child manifest is served through its revision link, not a layer link.
        let link = u.role == Role::Manifest
            || match cx.layer_link_exists(repo, blob) {
                Ok(present) => present,
                Err(e) => {
                    walk.problems.push(cx.problem(e.path(), e.reason()));
                    continue;
                }
            };
        if data && link {
            continue;
        }
        walk.counts.missing_blob_data += u64::from(!data);
        walk.counts.missing_layer_links += u64::from(!link);
        findings.push(finding(cx, repo, blob, u, data, link));
    }
    RepoResult {
        findings,
        problems: walk.problems,
        counts: walk.counts,
    }
}

fn state(present: bool) -> &'static str {
    if present { "present" } else { "missing" }
}

fn finding(
    cx: &CheckContext<'_>,
    repo: &Repository,
    blob: &Digest,
    u: &Use<'_>,
    data: bool,
    link: bool,
) -> Finding {
    let what = match (data, link) {
        (false, false) => format!("has neither blob data nor a layer link in {}", repo.name),
        (false, true) => "has no blob data".to_string(),
        _ => format!("has no layer link in {}", repo.name),
    };
    let platforms = if u.platforms.is_empty() {
        String::new()
    } else {
        let p: Vec<&str> = u.platforms.iter().map(String::as_str).collect();
        format!(" ({})", p.join(", "))
    };
    let message = format!(
        "{} {} of {}{platforms} {what}",
        u.role.as_str(),
        blob.short(),
        regfsck_core::finding::tag_refs(&repo.name, &u.tags),
    );
    // The path is what is missing, the blob data first (restoring the link alone serves
    // nothing).
    let path = if data {
        layout::layer_link(&repo.name, blob)
    } else {
        layout::blob_data(blob)
    };
    let tags: Vec<&str> = u.tags.iter().copied().collect();
    let referrers: Vec<String> = u.referrers.iter().map(ToString::to_string).collect();
    let platforms: Vec<&str> = u.platforms.iter().map(String::as_str).collect();
    let mut f = cx
        .finding(ID, &repo.name, path, message)
        .digest(*blob)
        .detail("tags", tags)
        .detail("role", u.role.as_str())
        .detail("manifests", referrers)
        .detail("platforms", platforms)
        .detail("blob_data", state(data));
    if u.role != Role::Manifest {
        f = f.detail("layer_link", state(link));
    }
    for r in &u.referrers {
        f = f.evidence(
            layout::revision_link(&repo.name, r),
            true,
            format!("tagged manifest {} references it", r.short()),
        );
    }
    f = f.evidence(
        layout::blob_data(blob),
        data,
        format!("blob data {}", state(data)),
    );
    if u.role == Role::Manifest {
        f.evidence(
            layout::revision_link(&repo.name, blob),
            true,
            "the child's revision link is present",
        )
    } else {
        f.evidence(
            layout::layer_link(&repo.name, blob),
            link,
            format!("layer link {}", state(link)),
        )
    }
}

#[cfg(test)]
mod tests {
    use regfsck_core::check;
    use regfsck_core::manifest::OCI_INDEX;
    use regfsck_core::testing::{Tree, digest_of, image_manifest, run_check};
    use serde_json::json;

    use super::*;

    fn run(tree: &Tree) -> CheckOutput {
        run_check(check::find(ID).expect("registered"), "private", tree, None)
    }

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        (dir, tree)
    }

    fn details(f: &Finding) -> serde_json::Value {
        serde_json::Value::Object(f.details.to_map())
    }

    fn counter(out: &CheckOutput, name: &str) -> u64 {
        out.counters
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .expect("counter")
    }

    #[test]
    fn healthy_tagged_images_and_indexes_are_not_findings() {
        let (_dir, tree) = tree();
        let repo = "team/app/api";
        let (amd, ..) = tree.image(repo, &[b"base", b"amd"]);
        let (arm, ..) = tree.image(repo, &[b"base", b"arm"]);
        let idx = tree.index(
            repo,
            None,
            &[(amd, "linux", "amd64"), (arm, "linux", "arm64")],
        );
        tree.tag(repo, "1.1", &idx);
        let (single, ..) = tree.image("other", &[b"x"]);
        tree.tag("other", "latest", &single);
        let out = run(&tree);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(
            out.counters,
            vec![
                ("manifests_inspected", 3),
                ("indexes_inspected", 1),
                // api: one config (same content) + base, amd, arm; other: config + x
                ("blobs_checked", 6),
                ("missing_blob_data", 0),
                ("missing_layer_links", 0),
                ("manifests_without_config", 0),
                ("foreign_layers_skipped", 0),
            ]
        );
    }

    #[test]
    fn a_missing_layer_of_an_index_child_names_the_tags_and_platform() {
        let (_dir, tree) = tree();
        let repo = "team/app/api";
        let (amd, ..) = tree.image(repo, &[b"base", b"amd"]);
        let (arm, _, arm_layers) = tree.image(repo, &[b"base", b"arm"]);
        let idx = tree.index(
            repo,
            Some(OCI_INDEX),
            &[(amd, "linux", "amd64"), (arm, "linux", "arm64")],
        );
        tree.tag(repo, "1.1", &idx);
        tree.tag(repo, "latest", &idx);
        // What a v2.8 `garbage-collect -m` leaves: the layer swept, its link kept.
        tree.remove(&layout::blob_dir(&arm_layers[1]));
        let out = run(&tree);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        let f = &out.findings[0];
        assert_eq!(f.check, ID);
        assert_eq!(&*f.repository, repo);
        assert_eq!(f.digest, Some(arm_layers[1]));
        assert_eq!(*f.path, layout::blob_data(&arm_layers[1]));
        assert_eq!(
            *f.message,
            format!(
                "layer {} of team/app/api:1.1, team/app/api:latest (linux/arm64) has no blob data",
                arm_layers[1].short()
            )
        );
        assert_eq!(
            details(f),
            json!({
                "tags": ["1.1", "latest"],
                "role": "layer",
                "manifests": [arm.to_string()],
                "platforms": ["linux/arm64"],
                "blob_data": "missing",
                "layer_link": "present",
            })
        );
        assert_eq!(counter(&out, "missing_blob_data"), 1);
        assert_eq!(counter(&out, "missing_layer_links"), 0);
    }

    #[test]
    fn a_missing_layer_link_and_a_missing_config_are_told_apart() {
        let (_dir, tree) = tree();
        let (m, config, layers) = tree.image("app", &[b"one", b"two"]);
        tree.tag("app", "1.1", &m);
        tree.remove(&layout::layer_link_dir("app", &layers[0])); // data stays
        tree.remove(&layout::blob_dir(&config));
        tree.remove(&layout::layer_link_dir("app", &config));
        let out = run(&tree);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let mut got: Vec<(Digest, String, serde_json::Value)> = out
            .findings
            .iter()
            .map(|f| (f.digest.expect("digest"), f.path.to_string(), details(f)))
            .collect();
        got.sort_by_key(|g| g.0);
        let mut want = vec![
            (
                layers[0],
                layout::layer_link("app", &layers[0]),
                json!({"tags": ["1.1"], "role": "layer", "manifests": [m.to_string()], "platforms": [], "blob_data": "present", "layer_link": "missing"}),
            ),
            (
                config,
                layout::blob_data(&config),
                json!({"tags": ["1.1"], "role": "config", "manifests": [m.to_string()], "platforms": [], "blob_data": "missing", "layer_link": "missing"}),
            ),
        ];
        want.sort_by_key(|g| g.0);
        assert_eq!(got, want);
        let config_finding = out
            .findings
            .iter()
            .find(|f| f.digest == Some(config))
            .expect("config finding");
        assert_eq!(
            *config_finding.message,
            format!(
                "config {} of app:1.1 has neither blob data nor a layer link in app",
                config.short()
            )
        );
        assert_eq!(counter(&out, "missing_blob_data"), 1);
        assert_eq!(counter(&out, "missing_layer_links"), 2);
    }

    #[test]
    fn a_layer_shared_by_two_tagged_images_is_one_finding() {
        let (_dir, tree) = tree();
        let (a, _, la) = tree.image("app", &[b"shared", b"a"]);
        let (b, ..) = tree.image("app", &[b"shared", b"b"]);
        tree.tag("app", "a", &a);
        tree.tag("app", "b", &b);
        tree.remove(&layout::blob_dir(&la[0]));
        let out = run(&tree);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        let mut manifests = vec![a.to_string(), b.to_string()];
        manifests.sort();
        assert_eq!(out.findings[0].details["tags"], json!(["a", "b"]));
        assert_eq!(out.findings[0].details["manifests"], json!(manifests));
    }

    #[test]
    fn untagged_manifests_and_lost_roots_and_orphan_children_are_not_its_business() {
        let (_dir, tree) = tree();
        // Untagged: its layer is gone, nobody pulls it by tag.
        let (_, _, l) = tree.image("app", &[b"untagged"]);
        tree.remove(&layout::blob_dir(&l[0]));
        // A tag whose manifest is lost: dangling-tags reports it.
        let (lost, _, ll) = tree.image("app", &[b"lost"]);
        tree.tag("app", "lost", &lost);
        tree.remove(&layout::blob_dir(&lost));
        tree.remove(&layout::blob_dir(&ll[0]));
        // An index child without its revision link: orphan-index-children reports it.
        let (child, _, cl) = tree.image("app", &[b"child"]);
        let idx = tree.index("app", None, &[(child, "linux", "s390x")]);
        tree.tag("app", "idx", &idx);
        tree.remove(&format!("{}/{}", layout::revisions_dir("app"), child.hex()));
        tree.remove(&layout::blob_dir(&cl[0]));
        let out = run(&tree);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(counter(&out, "manifests_inspected"), 0);
        assert_eq!(counter(&out, "indexes_inspected"), 1);
    }

    #[test]
    fn an_index_child_whose_blob_data_is_gone_is_a_manifest_finding() {
        let (_dir, tree) = tree();
        let (child, ..) = tree.image("app", &[b"one"]);
        let idx = tree.index("app", None, &[(child, "linux", "arm64")]);
        tree.tag("app", "1.1", &idx);
        tree.remove(&layout::blob_data(&child));
        let out = run(&tree);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        let f = &out.findings[0];
        assert_eq!(f.digest, Some(child));
        assert_eq!(*f.path, layout::blob_data(&child));
        assert_eq!(
            details(f),
            json!({"tags": ["1.1"], "role": "manifest", "manifests": [idx.to_string()], "platforms": ["linux/arm64"], "blob_data": "missing"})
        );
        assert_eq!(
            *f.message,
            format!(
                "manifest {} of app:1.1 (linux/arm64) has no blob data",
                child.short()
            )
        );
    }

    #[test]
    fn schema1_and_foreign_layers_are_skipped() {
        let (_dir, tree) = tree();
        let schema1 = tree.blob(
            br#"{"schemaVersion":1,"name":"app","tag":"old","fsLayers":[{"blobSum":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}"#,
        );
        tree.revision("app", &schema1);
        tree.tag("app", "old", &schema1);
        let config = tree.blob(b"{}");
        tree.layer_link("app", &config);
        let foreign = digest_of(b"windows base layer, never stored");
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{foreign}","size":1,"urls":["https://example.invalid/layer"]}}]}}"#
        );
        let win = tree.blob(json.as_bytes());
        tree.revision("app", &win);
        tree.tag("app", "windows", &win);
        let out = run(&tree);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(counter(&out, "manifests_without_config"), 1);
        assert_eq!(counter(&out, "foreign_layers_skipped"), 1);
        assert_eq!(counter(&out, "manifests_inspected"), 1);
        assert_eq!(counter(&out, "blobs_checked"), 1);
    }

    #[test]
    fn malformed_manifests_are_problems_reported_once() {
        let (_dir, tree) = tree();
        let bad = tree.blob(b"not json at all");
        tree.revision("app", &bad);
        tree.tag("app", "a", &bad);
        tree.tag("app", "b", &bad);
        // Reached a second way, through an index: still one problem.
        let idx = tree.index("app", None, &[(bad, "linux", "amd64")]);
        tree.tag("app", "c", &idx);
        // A manifest with a malformed layer digest: a problem, and the rest still checked.
        let config = tree.blob(b"{}");
        let json = image_manifest(&config, 2, &[]).replace(
            r#""layers":[]"#,
            r#""layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:XYZ","size":1}]"#,
        );
        let odd = tree.blob(json.as_bytes());
        tree.revision("app", &odd);
        tree.tag("app", "odd", &odd);
        let out = run(&tree);
        let mut got: Vec<(String, bool)> = out
            .problems
            .iter()
            .map(|p| (p.path.clone(), p.message.contains("malformed digest")))
            .collect();
        got.sort();
        let mut want = vec![
            (layout::blob_data(&bad), false),
            (layout::blob_data(&odd), true),
        ];
        want.sort();
        assert_eq!(got, want, "{:?}", out.problems);
        let bad_problem = out
            .problems
            .iter()
            .find(|p| p.path == layout::blob_data(&bad))
            .expect("problem");
        assert!(
            bad_problem
                .message
                .starts_with(&format!("manifest of app/{}: not a manifest:", bad.short())),
            "{}",
            bad_problem.message
        );
        // The config has data but no layer link.
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        assert_eq!(out.findings[0].digest, Some(config));
        assert_eq!(out.findings[0].details["layer_link"], "missing");
    }

    #[test]
    fn a_layer_link_file_deleted_through_the_api_is_missing_even_if_its_directory_stays() {
        let (_dir, tree) = tree();
        let (m, _, layers) = tree.image("team/app", &[b"kept", b"unlinked"]);
        tree.tag("team/app", "1.0", &m);
        tree.remove(&layout::layer_link("team/app", &layers[1]));
        let out = run(&tree);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        assert_eq!(out.findings[0].digest, Some(layers[1]));
        assert_eq!(out.findings[0].details["layer_link"], "missing");
    }
}
