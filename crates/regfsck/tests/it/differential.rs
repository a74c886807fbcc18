//! Differential test against the Python cron script regfsck replaces
//! (`tests/reference/registry_scan.py`, "the script"): regfsck must find at least what the
//! script finds.
//!
//! Each case is a small storage tree generated from a seed: `private` and some pull-through
//! caches under one data root, nested repository names, images, OCI indexes, Docker manifest
//! lists, layers shared across repositories, and planted damage (blobs gone behind layer
//! links, index children whose revision link is gone, plus the edge cases the script steps
//! over). The generator keeps a model of what it wrote and derives from it what each tool
//! must report, so a bug the script and regfsck share still fails the test.
//!
//! - Dry run: the script's findings, regfsck's findings and the model agree. The one planned
//!   difference: an OCI index that omits `mediaType` is invisible to the script, and regfsck
//!   must report its orphaned children. Revisions whose blob is not JSON are skipped by the
//!   script and are scan problems (exit code 3) for regfsck.
//! - Fix: the script and regfsck, each on its own copy, leave identical trees: the original
//!   minus the orphaned `_layers/sha256/<hex>` directories. `regfsck undo` then puts back
//!   exactly what regfsck removed. regfsck's own state directory (`<root>/.regfsck`: lock,
//!   audit log) is left out of the comparisons; a dry run may write only the lock there.
//!
//! Cases run on a few threads. `REGFSCK_DIFF_SEED=<n>` runs one case; `REGFSCK_DIFF_KEEP=1`
//! keeps the trees of failing cases and prints where they are. The trees are many small
//! files: on a slow disk, `TMPDIR=/dev/shm` makes the test several times faster.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tempfile::TempDir;

use regfsck_core::lock::STATE_DIR;
use regfsck_core::testing::Tree;
use regfsck_core::{Digest, layout};

use crate::tree::{self, Descriptor, Platform};

/// Number of generated cases (seeds `0..CASES`).
const CASES: u64 = 48;

/// Registries the script scans for orphaned index children (its `INDEX_SCAN_REGISTRIES`).
const INDEX_SCAN_REGISTRIES: &[&str] = &["private"];

// --- a tiny deterministic PRNG (splitmix64) -------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5eed_0f4e_6566_7300)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() - 1)]
    }

    /// `n` distinct items, in the order drawn.
    fn pick_distinct<T: Clone>(&mut self, items: &[T], n: usize) -> Vec<T> {
        let mut pool: Vec<T> = items.to_vec();
        (0..n.min(pool.len()))
            .map(|_| {
                let i = self.range(0, pool.len() - 1);
                pool.swap_remove(i)
            })
            .collect()
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| format!("{:x}", self.next_u64() % 16))
            .collect()
    }
}

// --- what the tools report, in one comparable shape -----------------------------------------

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct LayerOrphan {
    registry: String,
    repo: String,
    digest: Digest,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ChildOrphan {
    registry: String,
    repo: String,
    index: Digest,
    child: Digest,
    arch: String,
    os: String,
    blob_present: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    layers: BTreeSet<LayerOrphan>,
    children: BTreeSet<ChildOrphan>,
}

/// `<registry>/docker/registry/v2/repositories/<repo>/<rest>`, relative to the data root.
fn repo_path(registry: &str, repo: &str, rest: &str) -> String {
    format!("{registry}/docker/registry/v2/repositories/{repo}/{rest}")
}

impl LayerOrphan {
    /// The directory a fix removes (the script's `shutil.rmtree`).
    fn dir(&self) -> String {
        let hex = self.digest.hex();
        repo_path(&self.registry, &self.repo, &format!("_layers/sha256/{hex}"))
    }
}

impl ChildOrphan {
    /// The child's missing revision link.
    fn link(&self) -> String {
        let hex = self.child.hex();
        let rest = format!("_manifests/revisions/sha256/{hex}/link");
        repo_path(&self.registry, &self.repo, &rest)
    }
}

// --- the generator's model ------------------------------------------------------------------

#[derive(Default)]
struct RegModel {
    /// Blobs whose `data` file exists.
    blobs: BTreeSet<Digest>,
    /// `(repo, digest)` with a `_layers/sha256/<hex>/link` file.
    layer_links: BTreeSet<(String, Digest)>,
    /// `(repo, digest)` with a `_manifests/revisions/sha256/<hex>/link` file.
    revisions: BTreeSet<(String, Digest)>,
    /// Index blobs, by digest.
    indexes: BTreeMap<Digest, IndexModel>,
    /// Blobs that are not JSON, each linked as a revision.
    not_json: BTreeSet<Digest>,
}

struct IndexModel {
    /// Without `mediaType`: an index to regfsck, not to the script.
    bare: bool,
    /// `(digest, arch, os)` of the sha256 children; `?` where the child has no platform, as
    /// the script prints it.
    children: Vec<(Digest, String, String)>,
}

/// What the cases cover: each edge case planted, and how many times.
type Coverage = BTreeMap<&'static str, usize>;

/// Every entry must reach 2 over all cases, so that an edit to the generator cannot quietly
/// drop an edge case.
const MUST_COVER: &[&str] = &[
    "case with orphaned layer links",
    "case with orphaned index children the script sees",
    "case where only regfsck sees orphaned children (index without mediaType)",
    "orphaned link, blob directory gone",
    "orphaned link, blob directory without data",
    "layer shared across repositories",
    "team/app and team/app/api in one registry",
    "child unlinked, revision directory gone",
    "child unlinked, revision directory kept",
    "child blob gone",
    "child layers swept",
    "Docker manifest list",
    "OCI index",
    "OCI index without mediaType",
    "child without platform",
    "non-sha256 child",
    "revision whose image manifest blob is gone",
    "revision whose index blob is gone",
    "revision whose blob is not JSON",
    "_layers directory without link",
    "upload in progress",
    "pull-through cache registry",
    "undamaged case",
];

fn count(cov: &mut Coverage, what: &'static str, n: usize) {
    *cov.entry(what).or_default() += n;
}

#[derive(Clone, Copy, PartialEq)]
enum Family {
    Oci,
    Docker,
}

#[derive(Clone, Copy, PartialEq)]
enum IndexKind {
    Oci,
    DockerList,
    /// OCI index without `mediaType`, recognised by its `manifests` array.
    OciBare,
}

struct Image {
    repo: String,
    digest: Digest,
    size: usize,
    /// Config and layers.
    blobs: Vec<Digest>,
}

struct Index {
    digest: Digest,
    children: Vec<Image>,
}

const PLATFORMS: &[Platform] = &[
    Platform {
        os: "linux",
        architecture: "amd64",
        variant: None,
    },
    Platform {
        os: "linux",
        architecture: "arm64",
        variant: Some("v8"),
    },
    Platform {
        os: "linux",
        architecture: "arm",
        variant: Some("v7"),
    },
    Platform {
        os: "linux",
        architecture: "ppc64le",
        variant: None,
    },
    Platform {
        os: "windows",
        architecture: "amd64",
        variant: None,
    },
];
const ATTESTATION: Platform = Platform {
    os: "unknown",
    architecture: "unknown",
    variant: None,
};

const PRIVATE_REPOS: &[&str] = &[
    "team/app/api",
    "team/app",
    "team/web",
    "tools/ci-runner",
    "base",
];
const CACHE_REPOS: &[&str] = &[
    "library/nginx",
    "library/alpine",
    "bitnami/redis",
    "kyverno/kyverno",
    "org/proj/sub/image",
];
const CACHES: &[&str] = &["dockerhub", "ghcr", "quay"];

/// Builds one registry, keeping the model in step with every write.
struct Gen<'r> {
    rng: &'r mut Rng,
    cov: &'r mut Coverage,
    /// Every digest written or named anywhere, to map the script's 12-hex prefixes back.
    known: &'r mut BTreeSet<Digest>,
    name: String,
    reg: Tree,
    m: RegModel,
    shared: Vec<Descriptor>,
    layer_blobs: Vec<Digest>,
    images: Vec<Image>,
    indexes: Vec<Index>,
}

impl Gen<'_> {
    fn blob(&mut self, content: &[u8]) -> Digest {
        let digest = self.reg.blob(content);
        self.m.blobs.insert(digest);
        self.known.insert(digest);
        digest
    }

    fn layer(&mut self, family: Family) -> Descriptor {
        let len = self.rng.range(16, 200);
        let content = self.rng.bytes(len);
        let mt = if family == Family::Oci {
            tree::OCI_LAYER
        } else {
            tree::DOCKER_LAYER
        };
        let digest = self.blob(&content);
        self.layer_blobs.push(digest);
        Descriptor::of(mt, &content)
    }

    fn link_layer(&mut self, repo: &str, digest: Digest) {
        self.reg.layer_link(repo, &digest);
        self.m.layer_links.insert((repo.to_owned(), digest));
    }

    fn link_revision(&mut self, repo: &str, digest: Digest) {
        self.reg.revision(repo, &digest);
        self.m.revisions.insert((repo.to_owned(), digest));
    }

    /// Deletes a blob: its whole directory (as GC does) or only `data`. Returns whether the
    /// directory was kept, or `None` if the blob was already gone.
    fn delete_blob(&mut self, digest: Digest) -> Option<bool> {
        if !self.m.blobs.remove(&digest) {
            return None;
        }
        let keep_dir = self.rng.chance(40);
        if keep_dir {
            self.reg.remove(&layout::blob_data(&digest));
        } else {
            self.reg.remove(&layout::blob_dir(&digest));
        }
        Some(keep_dir)
    }

    /// An image manifest with its config and layers, linked into `repo`.
    fn image(&mut self, repo: &str, family: Family) -> Image {
        let (manifest_mt, config_mt) = match family {
            Family::Oci => (tree::OCI_MANIFEST, tree::OCI_CONFIG),
            Family::Docker => (tree::DOCKER_MANIFEST, tree::DOCKER_CONFIG),
        };
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers"},
            "nonce": self.rng.hex(16),
        }))
        .expect("config json");
        let config_desc = Descriptor::of(config_mt, &config);
        let config_digest = self.blob(&config);
        let mut layers: Vec<Descriptor> = Vec::new();
        for _ in 0..self.rng.range(1, 3) {
            let layer = if !self.shared.is_empty() && self.rng.chance(35) {
                self.rng.pick(&self.shared).clone()
            } else {
                self.layer(family)
            };
            if !layers.iter().any(|l| l.digest == layer.digest) {
                layers.push(layer);
            }
        }
        let manifest = tree::image_manifest(manifest_mt, &config_desc, &layers);
        let mut blobs = vec![config_digest];
        blobs.extend(
            layers
                .iter()
                .map(|l| Digest::parse(&l.digest).expect("sha256")),
        );
        for &b in &blobs {
            self.link_layer(repo, b);
        }
        let digest = self.blob(&manifest);
        self.link_revision(repo, digest);
        Image {
            repo: repo.to_owned(),
            digest,
            size: manifest.len(),
            blobs,
        }
    }

    fn index(&mut self, repo: &str, kind: IndexKind) {
        let family = if kind == IndexKind::DockerList {
            Family::Docker
        } else {
            Family::Oci
        };
        let child_mt = if family == Family::Oci {
            tree::OCI_MANIFEST
        } else {
            tree::DOCKER_MANIFEST
        };
        let n = self.rng.range(1, 3);
        let mut platforms: Vec<Option<Platform>> = self
            .rng
            .pick_distinct(PLATFORMS, n)
            .into_iter()
            .map(Some)
            .collect();
        if family == Family::Oci && self.rng.chance(30) {
            platforms.push(Some(ATTESTATION));
        }
        if family == Family::Oci && self.rng.chance(15) {
            platforms.push(None);
            count(self.cov, "child without platform", 1);
        }
        let mut descriptors = Vec::new();
        let mut children = Vec::new();
        for platform in platforms {
            let image = self.image(repo, family);
            descriptors.push(Descriptor {
                media_type: child_mt.to_owned(),
                digest: image.digest.to_string(),
                size: image.size,
                platform,
            });
            children.push(image);
        }
        if self.rng.chance(20) {
            // A child the script skips: its digest is not sha256.
            let at = self.rng.range(0, descriptors.len());
            descriptors.insert(
                at,
                Descriptor {
                    media_type: child_mt.to_owned(),
                    digest: format!("sha512:{}", self.rng.hex(128)),
                    size: 1234,
                    platform: Some(PLATFORMS[0].clone()),
                },
            );
            count(self.cov, "non-sha256 child", 1);
        }
        let media_type = match kind {
            IndexKind::Oci => Some(tree::OCI_INDEX),
            IndexKind::DockerList => Some(tree::DOCKER_MANIFEST_LIST),
            IndexKind::OciBare => None,
        };
        match kind {
            IndexKind::Oci => count(self.cov, "OCI index", 1),
            IndexKind::DockerList => count(self.cov, "Docker manifest list", 1),
            IndexKind::OciBare => count(self.cov, "OCI index without mediaType", 1),
        }
        let content = tree::index(media_type, &descriptors);
        let digest = self.blob(&content);
        self.link_revision(repo, digest);
        let tag = format!("v{}", self.rng.range(1, 9));
        self.reg.tag(repo, &tag, &digest);
        let model_children = descriptors
            .iter()
            .filter_map(|d| {
                let (arch, os) = match &d.platform {
                    Some(p) => (p.architecture, p.os),
                    None => ("?", "?"),
                };
                Some((Digest::parse(&d.digest)?, arch.to_owned(), os.to_owned()))
            })
            .collect();
        self.m.indexes.insert(
            digest,
            IndexModel {
                bare: media_type.is_none(),
                children: model_children,
            },
        );
        self.indexes.push(Index { digest, children });
    }

    fn build(&mut self, bare_indexes: bool) {
        let is_private = self.name == "private";
        let pool = if is_private {
            PRIVATE_REPOS
        } else {
            CACHE_REPOS
        };
        let n_repos = self.rng.range(1, 3);
        let repos: Vec<&str> = self.rng.pick_distinct(pool, n_repos);
        if repos.contains(&"team/app") && repos.contains(&"team/app/api") {
            count(self.cov, "team/app and team/app/api in one registry", 1);
        }
        for _ in 0..self.rng.range(0, 3) {
            let family = if self.rng.chance(50) {
                Family::Oci
            } else {
                Family::Docker
            };
            let layer = self.layer(family);
            self.shared.push(layer);
        }
        for repo in &repos {
            let n_images = self.rng.range(0, 2);
            let n_indexes = self.rng.range(usize::from(n_images == 0), 2);
            for i in 0..n_images {
                let family = if self.rng.chance(50) {
                    Family::Oci
                } else {
                    Family::Docker
                };
                let image = self.image(repo, family);
                if self.rng.chance(70) {
                    self.reg.tag(repo, &format!("build-{i}"), &image.digest);
                }
                self.images.push(image);
            }
            for _ in 0..n_indexes {
                let kind = match self.rng.range(0, 2) {
                    0 => IndexKind::Oci,
                    1 => IndexKind::DockerList,
                    _ if bare_indexes => IndexKind::OciBare,
                    _ => IndexKind::Oci,
                };
                self.index(repo, kind);
            }
            if self.rng.chance(20) {
                let uuid = format!("{}-{}", self.rng.hex(8), self.rng.hex(12));
                let dir = format!("{}/{uuid}", layout::uploads_dir(repo));
                self.reg.write(&format!("{dir}/data"), &self.rng.bytes(40));
                self.reg
                    .write(&format!("{dir}/startedat"), b"2026-04-19T02:30:00Z");
                count(self.cov, "upload in progress", 1);
            }
        }
        let shared = self
            .shared
            .iter()
            .filter_map(|s| Digest::parse(&s.digest))
            .filter(|d| self.m.layer_links.iter().filter(|(_, l)| l == d).count() > 1)
            .count();
        count(self.cov, "layer shared across repositories", shared);
    }

    fn damage(&mut self) {
        // Index children lose their revision link (v2.8 `garbage-collect -m`); sometimes the
        // child's manifest blob goes too, and sometimes its layers are swept while their
        // `_layers` links stay.
        let indexes = std::mem::take(&mut self.indexes);
        for index in &indexes {
            for child in &index.children {
                if !self.rng.chance(30) {
                    continue;
                }
                let link = layout::revision_link(&child.repo, &child.digest);
                if self.rng.chance(70) {
                    let dir = link.strip_suffix("/link").expect("a link path");
                    self.reg.remove(dir);
                    count(self.cov, "child unlinked, revision directory gone", 1);
                } else {
                    self.reg.remove(&link);
                    count(self.cov, "child unlinked, revision directory kept", 1);
                }
                self.m.revisions.remove(&(child.repo.clone(), child.digest));
                if self.rng.chance(50) && self.delete_blob(child.digest).is_some() {
                    count(self.cov, "child blob gone", 1);
                    if self.rng.chance(50) {
                        for &b in &child.blobs {
                            self.delete_orphaning(b);
                        }
                        count(self.cov, "child layers swept", 1);
                    }
                }
            }
        }
        // An index whose own blob is gone: nothing to read, nothing to report.
        if !indexes.is_empty() && self.rng.chance(10) {
            let digest = self.rng.pick(&indexes).digest;
            if self.delete_blob(digest).is_some() {
                count(self.cov, "revision whose index blob is gone", 1);
            }
        }
        self.indexes = indexes;
        // Layer blobs deleted behind their links.
        let layer_blobs = self.layer_blobs.clone();
        for &digest in &layer_blobs {
            if self.rng.chance(12) {
                self.delete_orphaning(digest);
            }
        }
        // A revision whose image manifest blob is gone.
        if !self.images.is_empty() && self.rng.chance(20) {
            let digest = self.rng.pick(&self.images).digest;
            if self.delete_blob(digest).is_some() {
                count(self.cov, "revision whose image manifest blob is gone", 1);
            }
        }
        let repos: BTreeSet<String> = self.m.layer_links.iter().map(|(r, _)| r.clone()).collect();
        for repo in &repos {
            // A revision whose blob is not JSON (garbage, or a truncated index).
            if self.rng.chance(25) {
                let content = if self.rng.chance(50) {
                    let mut c = b"\xff\xfe not json ".to_vec();
                    c.extend(self.rng.bytes(24));
                    c
                } else {
                    let mut c = format!(
                        "{{\"schemaVersion\": 2, \"mediaType\": \"{}\", \"manifests\": [{{\"digest\": \"sha256:{}",
                        tree::OCI_INDEX,
                        self.rng.hex(64)
                    )
                    .into_bytes();
                    c.truncate(c.len() - self.rng.range(1, 20));
                    c
                };
                let digest = self.blob(&content);
                self.link_revision(repo, digest);
                self.m.not_json.insert(digest);
                count(self.cov, "revision whose blob is not JSON", 1);
            }
            // `_layers/sha256/<hex>/` without a link file.
            if self.rng.chance(25) {
                let digest = if self.rng.chance(50) && !self.layer_blobs.is_empty() {
                    *self.rng.pick(&self.layer_blobs)
                } else {
                    let d = Digest::from_hex(&self.rng.hex(64)).expect("64 hex");
                    self.known.insert(d);
                    d
                };
                if !self.m.layer_links.contains(&(repo.clone(), digest)) {
                    let dir = self.reg.path(&layout::layer_link_dir(repo, &digest));
                    fs::create_dir_all(dir).expect("mkdir layer dir");
                    count(self.cov, "_layers directory without link", 1);
                }
            }
        }
    }

    /// Deletes a blob that `_layers` links may still point at.
    fn delete_orphaning(&mut self, digest: Digest) {
        let linked = self.m.layer_links.iter().any(|(_, d)| *d == digest);
        match self.delete_blob(digest) {
            Some(true) if linked => {
                count(self.cov, "orphaned link, blob directory without data", 1)
            }
            Some(false) if linked => count(self.cov, "orphaned link, blob directory gone", 1),
            _ => {}
        }
    }
}

/// An empty registry `name` under the data root.
fn registry(data: &Path, name: &str) -> Tree {
    let reg = Tree::new(data.join(name));
    for dir in [layout::BLOBS, layout::REPOSITORIES] {
        fs::create_dir_all(reg.path(dir)).expect("mkdir");
    }
    reg
}

struct Case {
    dir: TempDir,
    models: BTreeMap<String, RegModel>,
    /// 12-hex prefix → full digest, for the script's output.
    prefixes: BTreeMap<String, Digest>,
    cov: Coverage,
}

impl Case {
    fn generate(seed: u64) -> Case {
        let mut rng = Rng::new(seed);
        let dir = tempfile::Builder::new()
            .prefix(&format!("regfsck-diff-{seed}-"))
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("DATA");
        let clean = seed.is_multiple_of(12);
        let bare_indexes = seed % 3 == 2;
        let mut names = vec!["private"];
        names.extend(CACHES.iter().filter(|_| rng.chance(50)));
        let mut models = BTreeMap::new();
        let mut known = BTreeSet::new();
        let mut cov = Coverage::new();
        count(&mut cov, "undamaged case", usize::from(clean));
        for name in names {
            if name != "private" {
                count(&mut cov, "pull-through cache registry", 1);
            }
            let mut g = Gen {
                rng: &mut rng,
                cov: &mut cov,
                known: &mut known,
                name: name.to_owned(),
                reg: registry(&data, name),
                m: RegModel::default(),
                shared: Vec::new(),
                layer_blobs: Vec::new(),
                images: Vec::new(),
                indexes: Vec::new(),
            };
            g.build(bare_indexes);
            if !clean {
                g.damage();
            }
            models.insert(name.to_owned(), g.m);
        }
        let mut prefixes = BTreeMap::new();
        for d in known {
            if let Some(other) = prefixes.insert(d.short(), d) {
                assert_eq!(other, d, "seed {seed}: two digests share a 12-hex prefix");
            }
        }
        let mut case = Case {
            dir,
            models,
            prefixes,
            cov,
        };
        let (script, all) = (case.expected(false), case.expected(true));
        let cov = &mut case.cov;
        count(
            cov,
            "case with orphaned layer links",
            usize::from(!all.layers.is_empty()),
        );
        let n = usize::from(!script.children.is_empty());
        count(cov, "case with orphaned index children the script sees", n);
        let n = usize::from(all.children.len() > script.children.len());
        count(
            cov,
            "case where only regfsck sees orphaned children (index without mediaType)",
            n,
        );
        case
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("DATA")
    }

    /// What the model says a tool must report. `bare_indexes`: whether an OCI index without
    /// `mediaType` counts as an index (regfsck: yes; the script: no).
    fn expected(&self, bare_indexes: bool) -> Found {
        let mut found = Found::default();
        for (registry, m) in &self.models {
            for (repo, digest) in &m.layer_links {
                if !m.blobs.contains(digest) {
                    found.layers.insert(LayerOrphan {
                        registry: registry.clone(),
                        repo: repo.clone(),
                        digest: *digest,
                    });
                }
            }
            if !INDEX_SCAN_REGISTRIES.contains(&registry.as_str()) {
                continue;
            }
            for (repo, digest) in &m.revisions {
                let Some(index) = m.indexes.get(digest) else {
                    continue;
                };
                if !m.blobs.contains(digest) || (index.bare && !bare_indexes) {
                    continue;
                }
                for (child, arch, os) in &index.children {
                    if m.revisions.contains(&(repo.clone(), *child)) {
                        continue;
                    }
                    found.children.insert(ChildOrphan {
                        registry: registry.clone(),
                        repo: repo.clone(),
                        index: *digest,
                        child: *child,
                        arch: arch.clone(),
                        os: os.clone(),
                        blob_present: m.blobs.contains(child),
                    });
                }
            }
        }
        found
    }

    /// What regfsck reports as problems: the revisions in the index-scanned registries whose
    /// blob is not JSON (the script skips those silently), by blob path.
    fn expected_problems(&self) -> BTreeSet<String> {
        let mut paths = BTreeSet::new();
        for (registry, m) in &self.models {
            if !INDEX_SCAN_REGISTRIES.contains(&registry.as_str()) {
                continue;
            }
            for (_, digest) in m.revisions.iter().filter(|(_, d)| m.not_json.contains(d)) {
                let hex = digest.hex();
                let blob = format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]);
                paths.insert(format!("{registry}/{blob}"));
            }
        }
        paths
    }

    /// The tree a fix run must leave: the original minus each orphaned link's directory.
    fn expected_after_fix(
        &self,
        before: &BTreeMap<String, tree::Entry>,
    ) -> BTreeMap<String, tree::Entry> {
        let removed: Vec<String> = self
            .expected(true)
            .layers
            .iter()
            .map(LayerOrphan::dir)
            .collect();
        before
            .iter()
            .filter(|(path, _)| {
                !removed
                    .iter()
                    .any(|r| path.as_str() == r || path.starts_with(&format!("{r}/")))
            })
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect()
    }

    fn resolve(&self, prefix: &str) -> Result<Digest, String> {
        self.prefixes.get(prefix).copied().ok_or_else(|| {
            format!("the script printed a digest prefix the generator never wrote: {prefix}")
        })
    }
}

// --- running the script ---------------------------------------------------------------------

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/registry_scan.py")
}

fn run_script(data: &Path, dry_run: bool) -> Result<String, String> {
    let mut cmd = Command::new("python3");
    cmd.arg(script_path()).arg(data);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run python3 (the reference script needs it): {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.is_empty() {
        return Err(format!(
            "reference script failed ({}):\n{stdout}\n{stderr}",
            out.status
        ));
    }
    Ok(stdout)
}

/// Parses the script's output; every line must be one the script is known to print.
fn parse_script(case: &Case, stdout: &str, dry_run: bool) -> Result<Found, String> {
    let mut found = Found::default();
    let layer_prefix = if dry_run { "[DRY RUN] [" } else { "[" };
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix(layer_prefix)
            && let Some((target, digest)) = rest.split_once("] removing orphaned layer link: ")
        {
            let (registry, repo) = target.split_once('/').ok_or(format!("bad line: {line}"))?;
            let prefix = digest
                .strip_suffix("...")
                .ok_or(format!("bad line: {line}"))?;
            found.layers.insert(LayerOrphan {
                registry: registry.to_owned(),
                repo: repo.to_owned(),
                digest: case.resolve(prefix)?,
            });
        } else if let Some(rest) = line.strip_prefix("WARNING [") {
            // WARNING [reg/repo] ORPHAN INDEX: <idx> references missing child <child> (arch/os, state) — …
            let bad = || format!("bad line: {line}");
            let (target, rest) = rest.split_once("] ORPHAN INDEX: ").ok_or_else(bad)?;
            let (registry, repo) = target.split_once('/').ok_or_else(bad)?;
            let (index, rest) = rest
                .split_once(" references missing child ")
                .ok_or_else(bad)?;
            let (child, rest) = rest.split_once(" (").ok_or_else(bad)?;
            let (platform, rest) = rest.split_once(", ").ok_or_else(bad)?;
            let (arch, os) = platform.split_once('/').ok_or_else(bad)?;
            let blob_present = match rest.split_once(')').ok_or_else(bad)?.0 {
                "blob-data-present" => true,
                "blob-data-gone" => false,
                _ => return Err(bad()),
            };
            found.children.insert(ChildOrphan {
                registry: registry.to_owned(),
                repo: repo.to_owned(),
                index: case.resolve(index)?,
                child: case.resolve(child)?,
                arch: arch.to_owned(),
                os: os.to_owned(),
                blob_present,
            });
        } else if !(line.is_empty()
            || line.contains("Layer scan: checked")
            || line.contains("Index scan: inspected")
            || line.starts_with("ACTION REQUIRED:"))
        {
            return Err(format!("unexpected line from the script: {line:?}"));
        }
    }
    Ok(found)
}

// --- running regfsck ------------------------------------------------------------------------

/// The script's rules as a regfsck policy: remove orphaned layer links everywhere, warn about
/// orphaned index children in `private` only. The script has no guards, so the policy
/// lowers regfsck's: no grace period (the trees are seconds old), no removal-share limit.
fn write_policy(dir: &Path, data: &Path) -> PathBuf {
    let root = serde_json::to_string(data.to_str().expect("utf-8 path")).expect("quote path");
    let policy = format!(
        r#"root = {root}

[registries."*"]
grace = "0s"
max-removal-share = 1.0

[policies.daily]
description = "the rules of registry_scan.py"

[policies.daily.registries."*"]
orphan-layer-links = "fix"

[policies.daily.registries.private]
orphan-index-children = "warn"
"#
    );
    let path = dir.join("policy.toml");
    fs::write(&path, policy).expect("write policy");
    path
}

struct RegfsckRun {
    code: i32,
    json: Value,
    stderr: String,
}

fn run_regfsck(config: &Path, dry_run: bool) -> Result<RegfsckRun, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regfsck"));
    cmd.args(["run", "daily", "--config"])
        .arg(config)
        .args(["--format", "json"]);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run regfsck: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().ok_or("regfsck was killed by a signal")?;
    let json = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "regfsck (exit {code}) printed no JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    Ok(RegfsckRun { code, json, stderr })
}

fn str_field<'v>(v: &'v Value, key: &str) -> Result<&'v str, String> {
    v[key]
        .as_str()
        .ok_or_else(|| format!("finding without string `{key}`: {v}"))
}

fn digest_field(v: &Value, key: &str) -> Result<Digest, String> {
    Digest::parse(str_field(v, key)?).ok_or_else(|| format!("`{key}` is not a sha256 digest: {v}"))
}

/// regfsck's findings, checking each one's `level`, `action` and `path`; `layer_action` is
/// what orphaned layer links must say (`would-remove` or `removed`).
fn parse_regfsck(run: &RegfsckRun, layer_action: &str) -> Result<Found, String> {
    let mut found = Found::default();
    let findings = run.json["findings"]
        .as_array()
        .ok_or_else(|| format!("JSON without a findings array: {}", run.json))?;
    for f in findings {
        let registry = str_field(f, "registry")?.to_owned();
        let repo = str_field(f, "repository")?.to_owned();
        let digest = digest_field(f, "digest")?;
        let (level, action, path) = (
            str_field(f, "level")?,
            str_field(f, "action")?,
            str_field(f, "path")?,
        );
        let expect = |want_level: &str, want_action: &str, want_path: &str| {
            if (level, action, path) == (want_level, want_action, want_path) {
                Ok(())
            } else {
                Err(format!(
                    "expected level {want_level:?}, action {want_action:?}, path {want_path:?}: {f}"
                ))
            }
        };
        match str_field(f, "check")? {
            "orphan-layer-links" => {
                let orphan = LayerOrphan {
                    registry,
                    repo,
                    digest,
                };
                expect("fix", layer_action, &orphan.dir())?;
                found.layers.insert(orphan);
            }
            "orphan-index-children" => {
                let details = &f["details"];
                let (arch, os) = match &details["platform"] {
                    Value::Null => ("?".to_owned(), "?".to_owned()),
                    // `os/arch[/variant]`; the script prints `arch/os`.
                    Value::String(p) => {
                        let mut parts = p.split('/');
                        let os = parts.next().unwrap_or_default().to_owned();
                        let arch = parts.next().ok_or_else(|| format!("bad platform: {f}"))?;
                        (arch.to_owned(), os)
                    }
                    _ => return Err(format!("bad platform: {f}")),
                };
                let blob_present = match str_field(details, "child_blob")? {
                    "present" => true,
                    "missing" => false,
                    _ => return Err(format!("bad child_blob: {f}")),
                };
                let orphan = ChildOrphan {
                    registry,
                    repo,
                    index: digest_field(details, "index")?,
                    child: digest,
                    arch,
                    os,
                    blob_present,
                };
                expect("warn", "reported", &orphan.link())?;
                found.children.insert(orphan);
            }
            other => {
                return Err(format!(
                    "finding from a check the policy does not run ({other}): {f}"
                ));
            }
        }
    }
    Ok(found)
}

/// The `path` of each of regfsck's `problems`.
fn problem_paths(run: &RegfsckRun) -> Result<BTreeSet<String>, String> {
    let problems = run.json["problems"]
        .as_array()
        .ok_or_else(|| format!("JSON without a problems array: {}", run.json))?;
    problems
        .iter()
        .map(|p| str_field(p, "path").map(str::to_owned))
        .collect()
}

// --- comparing ------------------------------------------------------------------------------

fn diff_sets<T: Ord + std::fmt::Debug>(
    what: &str,
    left_name: &str,
    left: &BTreeSet<T>,
    right_name: &str,
    right: &BTreeSet<T>,
    out: &mut Vec<String>,
) {
    for x in left.difference(right) {
        out.push(format!("{what} only in {left_name}: {x:?}"));
    }
    for x in right.difference(left) {
        out.push(format!("{what} only in {right_name}: {x:?}"));
    }
}

fn diff_found(left_name: &str, left: &Found, right_name: &str, right: &Found) -> Vec<String> {
    let mut out = Vec::new();
    diff_sets(
        "orphan layer link",
        left_name,
        &left.layers,
        right_name,
        &right.layers,
        &mut out,
    );
    diff_sets(
        "orphan index child",
        left_name,
        &left.children,
        right_name,
        &right.children,
        &mut out,
    );
    out
}

/// regfsck's run against the model: findings, problems and exit code. Returns its findings.
fn check_regfsck(
    case: &Case,
    label: &str,
    run: &RegfsckRun,
    fixed: bool,
    out: &mut Vec<String>,
) -> Result<Found, String> {
    let found = parse_regfsck(run, if fixed { "removed" } else { "would-remove" })?;
    let expected = case.expected(true);
    out.extend(diff_found(label, &found, "the generator", &expected));
    let problems = problem_paths(run)?;
    diff_sets(
        "problem",
        label,
        &problems,
        "the generator",
        &case.expected_problems(),
        out,
    );
    if run.json["dry_run"] != json!(!fixed) {
        out.push(format!("{label}: \"dry_run\" is {}", run.json["dry_run"]));
    }
    // Exit codes: 3 when the scan met unreadable content, else 1 while findings remain.
    let left = expected.children.len() + if fixed { 0 } else { expected.layers.len() };
    let code = if !problems.is_empty() {
        3
    } else {
        i32::from(left > 0)
    };
    if run.code != code {
        out.push(format!(
            "{label} exited {} (expected {code}); stderr:\n{}",
            run.code, run.stderr
        ));
    }
    Ok(found)
}

/// Dry run: the script and regfsck report what the generator planted, and change nothing.
fn check_dry_run(
    case: &Case,
    original: &BTreeMap<String, tree::Entry>,
    policy: &Path,
) -> Result<Vec<String>, String> {
    let data = case.data();
    let script = parse_script(case, &run_script(&data, true)?, true)?;
    let run = run_regfsck(policy, true)?;

    let mut out = Vec::new();
    out.extend(diff_found(
        "the script",
        &script,
        "the generator",
        &case.expected(false),
    ));
    let regfsck = check_regfsck(case, "regfsck", &run, false, &mut out)?;
    // regfsck ⊇ script. The generator comparisons already pin the only extra findings allowed
    // (children of indexes without mediaType); this states the floor directly.
    for x in script.layers.difference(&regfsck.layers) {
        out.push(format!(
            "regfsck misses an orphaned layer link the script finds: {x:?}"
        ));
    }
    for x in script.children.difference(&regfsck.children) {
        out.push(format!(
            "regfsck misses an orphaned index child the script finds: {x:?}"
        ));
    }
    let (after, state) = storage_and_state(&data);
    for d in tree::diff_snapshots("before", original, "after", &after) {
        out.push(format!("a dry run changed the tree: {d}"));
    }
    if state.keys().any(|p| p != "lock") {
        let names: Vec<&String> = state.keys().collect();
        out.push(format!(
            "a dry run wrote more than its lock file: {STATE_DIR}/{names:?}"
        ));
    }
    Ok(out)
}

/// Fix: the script (on the case's tree) and regfsck (on a copy) leave identical trees: the
/// original minus the orphaned links' directories.
fn check_fix(case: &Case, original: &BTreeMap<String, tree::Entry>) -> Result<Vec<String>, String> {
    let data = case.data();
    let copy_dir = case.dir.path().join("regfsck-fix");
    let copy = copy_dir.join("DATA");
    tree::restore(original, &copy);
    let policy = write_policy(&copy_dir, &copy);

    let script = parse_script(case, &run_script(&data, false)?, false)?;
    let run = run_regfsck(&policy, false)?;

    let mut out = Vec::new();
    let label = "the script (fix)";
    out.extend(diff_found(
        label,
        &script,
        "the generator",
        &case.expected(false),
    ));
    check_regfsck(case, "regfsck (fix)", &run, true, &mut out)?;
    // The dry run left regfsck's lock file in the script's tree too.
    let (after_script, _) = storage_and_state(&data);
    let (after_regfsck, _) = storage_and_state(&copy);
    out.extend(tree::diff_snapshots(
        "script",
        &after_script,
        "regfsck",
        &after_regfsck,
    ));
    let expected = case.expected_after_fix(original);
    out.extend(tree::diff_snapshots(
        "script",
        &after_script,
        "expected",
        &expected,
    ));

    // A second run finds nothing left to remove.
    let again = parse_regfsck(&run_regfsck(&policy, true)?, "would-remove")?;
    for x in &again.layers {
        out.push(format!("orphaned layer link left after the fix: {x:?}"));
    }

    // The audit log puts back exactly what the fix removed.
    if !case.expected(true).layers.is_empty() {
        let run_id = str_field(&run.json, "run_id")?;
        let undo = Command::new(env!("CARGO_BIN_EXE_regfsck"))
            .args(["undo", run_id, "--config"])
            .arg(&policy)
            .output()
            .map_err(|e| format!("cannot run regfsck undo: {e}"))?;
        if !undo.status.success() {
            out.push(format!(
                "regfsck undo {run_id} failed ({}): {}",
                undo.status,
                String::from_utf8_lossy(&undo.stderr)
            ));
        }
        let (undone, _) = storage_and_state(&copy);
        out.extend(tree::diff_snapshots(
            "undone", &undone, "original", original,
        ));
    }
    Ok(out)
}

/// The tree under a data root without regfsck's own state directory (its lock and default
/// audit log), and that directory's files by name.
fn storage_and_state(
    data: &Path,
) -> (BTreeMap<String, tree::Entry>, BTreeMap<String, tree::Entry>) {
    let mut storage = tree::snapshot(data);
    let state_prefix = format!("{STATE_DIR}/");
    let state = storage
        .extract_if(.., |path, _| {
            path == STATE_DIR || path.starts_with(&state_prefix)
        })
        .filter_map(|(path, entry)| Some((path.strip_prefix(&state_prefix)?.to_owned(), entry)))
        .collect();
    (storage, state)
}

fn run_case(seed: u64) -> (Coverage, Option<String>) {
    let case = Case::generate(seed);
    let cov = case.cov.clone();
    let policy = write_policy(case.dir.path(), &case.data());
    let original = tree::snapshot(&case.data());
    let mut problems = check_dry_run(&case, &original, &policy).unwrap_or_else(|e| vec![e]);
    if problems.is_empty() {
        problems = check_fix(&case, &original).unwrap_or_else(|e| vec![e]);
    }
    if problems.is_empty() {
        return (cov, None);
    }
    let mut report = format!("seed {seed}:\n  {}", problems.join("\n  "));
    if std::env::var_os("REGFSCK_DIFF_KEEP").is_some() {
        report += &format!("\n  tree kept in {}", case.dir.keep().display());
    }
    (cov, Some(report))
}

#[test]
fn regfsck_finds_and_fixes_what_the_reference_script_does() {
    let only = std::env::var("REGFSCK_DIFF_SEED")
        .ok()
        .map(|s| s.parse::<u64>().expect("REGFSCK_DIFF_SEED is a number"));
    let seeds: Vec<u64> = only.map_or_else(|| (0..CASES).collect(), |s| vec![s]);
    // Cases are independent: spread them over a few threads, results in seed order.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let next = AtomicUsize::new(0);
    let mut results: Vec<(u64, Coverage, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let (cov, failure) = run_case(seed);
                        out.push((seed, cov, failure));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    results.sort_by_key(|r| r.0);

    let mut cov = Coverage::new();
    let mut failures = Vec::new();
    for (_, case_cov, failure) in results {
        for (what, n) in case_cov {
            count(&mut cov, what, n);
        }
        failures.extend(failure);
    }
    if only.is_none() {
        for what in MUST_COVER {
            let n = cov.get(what).copied().unwrap_or(0);
            if n < 2 {
                failures.push(format!(
                    "the generator plants {what:?} {n} time(s) in {CASES} cases"
                ));
            }
        }
        let unknown: Vec<_> = cov.keys().filter(|k| !MUST_COVER.contains(k)).collect();
        assert!(
            unknown.is_empty(),
            "counted but not in MUST_COVER: {unknown:?}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} failure(s) (REGFSCK_DIFF_SEED=<n> reruns one case, REGFSCK_DIFF_KEEP=1 keeps its tree):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
