//! Issue #3: the production failure, reproduced with the real tools.
//!
//! A private registry and a pull-through cache of it (`dockerhub`) run from
//! one data root. We push images built on disk (single-platform OCI and
//! Docker images, an OCI index, a Docker manifest list, an OCI index without
//! `mediaType`), pull some of them through the cache (one platform of an
//! index only, so the cache holds partial indexes), then do what operators
//! do: a cleanup removes tag directories and the real
//! `docker-registry garbage-collect --delete-untagged` runs while the
//! registries keep serving. Distribution 2.8 then deletes the revision links
//! of the untagged children of tagged indexes and sweeps their layers, while
//! leaving the `_layers` links.
//!
//! The test records what the GC really left, asserts regfsck finds exactly
//! that, lets regfsck fix it, and checks the outcome through the registry API
//! and skopeo.

use crate::http::{self, Response};
use crate::oci::{self, Artifact, Format, IndexKind, Layer, Layout, Platform};
use crate::packages;
use crate::regfsck;
use crate::registry::{Registry, RegistrySpec};
use crate::skopeo::{CopyOpts, Skopeo};
use crate::storage::{self, OrphanChild, OrphanLink};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// One tag pushed to the private registry.
struct Published {
    repo: &'static str,
    tag: &'static str,
    artifact: Artifact,
    /// Where skopeo copies it from: `oci:LAYOUT:REF` or `dir:DIR`.
    source: String,
}

/// A name for an artifact inside the source OCI layout / dir tree.
fn source_name(repo: &str, tag: &str) -> String {
    format!("{}-{tag}", repo.replace('/', "_"))
}

/// Tags the "cleanup" deletes (`rm -rf …/_manifests/tags/<tag>`).
const CLEANUP: &[(&str, &str)] = &[
    // Old single-platform images: GC deletes them and sweeps their layers.
    ("base/alpine", "3.18"),
    ("team/app/api", "v0"),
    // A whole old index: GC deletes index and children; no index remains.
    ("team/app/worker", "0.9"),
    // A per-arch tag of a published manifest list: its index stays tagged.
    ("team/app/web", "v2-linux-arm64"),
];

/// Indexes that stay tagged while (some of) their children are untagged:
/// Distribution 2.8's `--delete-untagged` breaks them.
const BROKEN_INDEXES: &[(&str, &str)] = &[
    ("team/app/api", "v1"),
    ("team/app/web", "v2"),
    ("team/app/worker", "1.0"),
];

pub(crate) fn amd64() -> Platform {
    Platform::new("linux", "amd64", None)
}
pub(crate) fn arm64() -> Platform {
    Platform::new("linux", "arm64", Some("v8"))
}
fn armv7() -> Platform {
    Platform::new("linux", "arm", Some("v7"))
}

/// Builds every image into one OCI layout; returns what to push, in order.
fn build_images(layout: &mut Layout, dirs: &Path, nonce: &str) -> Vec<Published> {
    let l = |name: &str, files: usize| Layer::new(name, nonce, files);
    // Base layers shared across repositories.
    let base_amd64 = l("base-amd64", 3);
    let base_arm64 = l("base-arm64", 3);
    let base_armv7 = l("base-armv7", 2);
    let base_old = l("base-old", 2);
    let deb = [l("debian-1", 4), l("debian-2", 2), l("debian-3", 1)];

    let mut out = Vec::new();
    let mut publish = |layout: &mut Layout, repo, tag, artifact: Artifact| {
        let name = source_name(repo, tag);
        let source = if artifact.is_docker() {
            let dir = dirs.join(&name);
            layout.export_dir(&artifact, &dir);
            format!("dir:{}", dir.display())
        } else {
            layout.tag(&name, &artifact);
            format!("oci:{}:{name}", layout.dir.display())
        };
        out.push(Published {
            repo,
            tag,
            artifact,
            source,
        });
    };
    let img =
        |layout: &Layout, f: Format, p: Platform, layers: &[&Layer]| layout.image(f, p, layers);

    // Healthy single-platform images, sharing layers.
    let alpine = img(layout, Format::Oci, amd64(), &[&base_amd64]);
    publish(layout, "base/alpine", "3.19", Artifact::Image(alpine));
    let alpine_old = img(layout, Format::Oci, amd64(), &[&base_old]);
    publish(layout, "base/alpine", "3.18", Artifact::Image(alpine_old));
    let debian = img(layout, Format::Oci, amd64(), &[&deb[0], &deb[1], &deb[2]]);
    publish(layout, "base/debian", "12", Artifact::Image(debian));
    let (r1, r2, r3) = (l("runner-1", 2), l("runner-2", 1), l("runner-3", 1));
    let runner = img(layout, Format::Docker, amd64(), &[&deb[0], &r1, &r2, &r3]);
    publish(layout, "tools/ci/runner", "2024", Artifact::Image(runner));
    let (p1, p2) = (l("postgres-1", 2), l("postgres-2", 3));
    let postgres = img(layout, Format::Oci, amd64(), &[&deb[0], &deb[1], &p1, &p2]);
    publish(layout, "team/db/postgres", "16", Artifact::Image(postgres));
    let (n1, n2, n3) = (l("node-1", 2), l("node-2", 2), l("node-3", 1));
    let node = img(layout, Format::Oci, amd64(), &[&deb[0], &n1, &n2, &n3]);
    publish(layout, "base/node", "20", Artifact::Image(node));
    let (d1, d2) = (l("docs-1", 1), l("docs-2", 1));
    let docs = img(layout, Format::Docker, amd64(), &[&base_amd64, &d1, &d2]);
    publish(layout, "team/app/docs", "latest", Artifact::Image(docs));

    // A healthy OCI index: per-arch images are tagged too.
    let bb = [l("busybox-amd64", 1), l("busybox-arm64", 1)];
    let bb_amd = img(layout, Format::Oci, amd64(), &[&base_amd64, &bb[0]]);
    let bb_arm = img(layout, Format::Oci, arm64(), &[&base_arm64, &bb[1]]);
    let bb_index = layout.index(IndexKind::OciIndex, &[bb_amd.clone(), bb_arm.clone()]);
    publish(
        layout,
        "base/busybox",
        "1.36-amd64",
        Artifact::Image(bb_amd),
    );
    publish(
        layout,
        "base/busybox",
        "1.36-arm64",
        Artifact::Image(bb_arm),
    );
    publish(layout, "base/busybox", "1.36", Artifact::Index(bb_index));

    // An old Docker image of team/app/api (its tag will be cleaned up).
    let api_v0_layer = l("api-v0", 2);
    let api_v0 = img(
        layout,
        Format::Docker,
        amd64(),
        &[&base_amd64, &api_v0_layer],
    );
    publish(layout, "team/app/api", "v0", Artifact::Image(api_v0));

    // A multi-platform OCI index; only the index is tagged (buildx style).
    let api = [l("api-amd64", 2), l("api-arm64", 2), l("api-armv7", 1)];
    let api_children = [
        img(layout, Format::Oci, amd64(), &[&base_amd64, &api[0]]),
        img(layout, Format::Oci, arm64(), &[&base_arm64, &api[1]]),
        img(layout, Format::Oci, armv7(), &[&base_armv7, &api[2]]),
    ];
    let api_index = layout.index(IndexKind::OciIndex, &api_children);
    publish(layout, "team/app/api", "v1", Artifact::Index(api_index));

    // A Docker manifest list of schema2 images, per-arch images tagged too
    // (`docker manifest create` style).
    let web = [l("web-amd64", 2), l("web-arm64", 2)];
    let web_amd = img(layout, Format::Docker, amd64(), &[&base_amd64, &web[0]]);
    let web_arm = img(layout, Format::Docker, arm64(), &[&base_arm64, &web[1]]);
    let web_list = layout.index(IndexKind::DockerList, &[web_amd.clone(), web_arm.clone()]);
    publish(
        layout,
        "team/app/web",
        "v2-linux-amd64",
        Artifact::Image(web_amd),
    );
    publish(
        layout,
        "team/app/web",
        "v2-linux-arm64",
        Artifact::Image(web_arm),
    );
    publish(layout, "team/app/web", "v2", Artifact::Index(web_list));

    // OCI indexes without `mediaType`: the current one and an old one.
    let w = [l("worker-amd64", 1), l("worker-arm64", 1)];
    let worker = layout.index(
        IndexKind::OciIndexWithoutMediaType,
        &[
            img(layout, Format::Oci, amd64(), &[&base_amd64, &w[0]]),
            img(layout, Format::Oci, arm64(), &[&base_arm64, &w[1]]),
        ],
    );
    publish(layout, "team/app/worker", "1.0", Artifact::Index(worker));
    let w_old = [l("worker-old-amd64", 1), l("worker-old-arm64", 1)];
    let worker_old = layout.index(
        IndexKind::OciIndex,
        &[
            img(layout, Format::Oci, amd64(), &[&base_amd64, &w_old[0]]),
            img(layout, Format::Oci, arm64(), &[&base_arm64, &w_old[1]]),
        ],
    );
    publish(
        layout,
        "team/app/worker",
        "0.9",
        Artifact::Index(worker_old),
    );
    out
}

/// What a blob URL answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_length: Option<u64>,
    pub(crate) body_len: usize,
    /// The registry's error code (`BLOB_UNKNOWN`, …) when the body is JSON.
    pub(crate) error_code: Option<String>,
    /// How reading the body ended, when not with a clean EOF.
    pub(crate) read_error: Option<String>,
}

impl Answer {
    pub(crate) fn of(r: &Response) -> Self {
        let error_code = serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string));
        Self {
            status: r.status,
            content_length: r.content_length(),
            body_len: r.body.len(),
            error_code,
            read_error: r.read_error.clone(),
        }
    }
}

pub(crate) fn blob_answers(addr: &str, repo: &str, digest: &str) -> (Answer, Answer, Response) {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let head = http::request("HEAD", addr, &path, &[]).expect("HEAD blob");
    let get = http::get(addr, &path).expect("GET blob");
    (Answer::of(&head), Answer::of(&get), get)
}

pub(crate) fn out_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits until a pull-through cache has stored `blobs` of `repo` (it stores
/// them in the background while streaming them to the client).
pub(crate) fn wait_cached(cache: &Registry, repo: &str, blobs: &[oci::BlobRef]) {
    let v2 = cache.v2();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let missing: Vec<&str> = blobs
            .iter()
            .filter(|b| {
                let link = v2
                    .join("repositories")
                    .join(repo)
                    .join("_layers/sha256")
                    .join(oci::hex_of(&b.digest))
                    .join("link");
                !(link.is_file() && storage::blob_data(&v2, &b.digest).is_file())
            })
            .map(|b| b.digest.as_str())
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cache {} did not store {missing:?} of {repo}; log:\n{}",
            cache.spec.name,
            cache.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where skopeo pulls to: an OCI layout for OCI images, skopeo's `dir:`
/// for Docker ones (copying those into an OCI layout would convert them and
/// change their digests).
pub(crate) fn pull_target(dest: &Path, docker: bool) -> String {
    if docker {
        format!("dir:{}", dest.display())
    } else {
        format!("oci:{}:pulled", dest.display())
    }
}

/// Checks what `skopeo copy … pull_target(dest)` wrote: the top manifest,
/// every instance manifest and every blob are there and hash to their
/// digests.
pub(crate) fn verify_pull(
    dest: &Path,
    docker: bool,
    top: &str,
    images: &[&oci::Image],
    what: &str,
) {
    let read = |name: String| {
        std::fs::read(dest.join(&name))
            .unwrap_or_else(|e| panic!("{what}: no {name} in {}: {e}", dest.display()))
    };
    let check = |name: String, digest: &str| {
        assert_eq!(oci::digest_of(&read(name)), digest, "{what}: {digest}");
    };
    if docker {
        check("manifest.json".into(), top);
    } else {
        let index: Value = serde_json::from_slice(&read("index.json".into())).expect("index.json");
        assert_eq!(index["manifests"][0]["digest"], top, "{what}: index.json");
        check(format!("blobs/sha256/{}", oci::hex_of(top)), top);
    }
    for image in images.iter().filter(|i| i.digest != top) {
        let name = if docker {
            format!("{}.manifest.json", oci::hex_of(&image.digest))
        } else {
            format!("blobs/sha256/{}", oci::hex_of(&image.digest))
        };
        check(name, &image.digest);
    }
    for b in images.iter().flat_map(|i| i.blobs()) {
        let name = if docker {
            oci::hex_of(&b.digest).to_string()
        } else {
            format!("blobs/sha256/{}", oci::hex_of(&b.digest))
        };
        check(name, &b.digest);
    }
}

fn policy_toml(data: &Path) -> String {
    format!(
        r#"# written by the regfsck e2e test
root = "{root}"

# The garbage collector ran seconds ago: without this, every fix would be
# skipped as "within the grace period" (default 1h).
[registries."*"]
grace = "0s"

[policies.check]
description = "report everything, every registry"
[policies.check.registries."*"]
orphan-layer-links = "fix"
orphan-index-children = "warn"
[policies.check.registries.dockerhub]
# a pull-through cache legitimately holds partial indexes
orphan-index-children = "off"

[policies.fix]
description = "remove orphaned layer links; report orphaned index children of the private registry"
[policies.fix.registries."*"]
orphan-layer-links = "fix"
[policies.fix.registries.private]
orphan-index-children = "warn"

[policies.layers]
description = "orphaned layer links only"
[policies.layers.registries."*"]
orphan-layer-links = "fix"

[policies.cache-audit]
description = "what the cache's partial indexes look like"
[policies.cache-audit.registries.dockerhub]
orphan-index-children = "warn"
"#,
        root = data.display()
    )
}

fn expected_link_lines(links: &BTreeSet<OrphanLink>, action: &str) -> BTreeSet<String> {
    links
        .iter()
        .map(|o| {
            format!(
                "orphan-layer-links level=fix registry={} repository={} digest={} path={} action={action}",
                o.registry,
                o.repository,
                o.digest,
                o.rel_dir()
            )
        })
        .collect()
}

fn child_path(c: &OrphanChild) -> String {
    format!(
        "{}/docker/registry/v2/repositories/{}/_manifests/revisions/sha256/{}/link",
        c.registry,
        c.repository,
        oci::hex_of(&c.child)
    )
}

fn expected_child_lines(children: &BTreeSet<OrphanChild>) -> BTreeSet<String> {
    children
        .iter()
        .map(|c| {
            format!(
                "orphan-index-children level=warn registry={} repository={} digest={} path={} action=reported index={} platform={} child_blob={}",
                c.registry,
                c.repository,
                c.child,
                child_path(c),
                c.index,
                c.platform.as_deref().unwrap_or("null"),
                if c.child_blob_present { "present" } else { "missing" }
            )
        })
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn actual_lines(run: &regfsck::Run) -> BTreeSet<String> {
    run.findings()
        .iter()
        .map(|f| {
            let mut line = format!(
                "{} level={} registry={} repository={} digest={} path={} action={}",
                s(&f["check"]),
                s(&f["level"]),
                s(&f["registry"]),
                s(&f["repository"]),
                s(&f["digest"]),
                s(&f["path"]),
                s(&f["action"])
            );
            if f["check"] == "orphan-index-children" {
                let d = &f["details"];
                line.push_str(&format!(
                    " index={} platform={} child_blob={}",
                    s(&d["index"]),
                    s(&d["platform"]),
                    s(&d["child_blob"])
                ));
            }
            line
        })
        .collect()
}

fn assert_same_lines(
    expected: &BTreeSet<String>,
    actual: &BTreeSet<String>,
    what: &str,
    run: &regfsck::Run,
) {
    if expected != actual {
        let missing: Vec<_> = expected.difference(actual).collect();
        let extra: Vec<_> = actual.difference(expected).collect();
        panic!(
            "{what}: regfsck's findings differ from what the garbage collector left on disk\n\
             missing from regfsck ({}):\n  {}\nunexpected in regfsck ({}):\n  {}\n\nregfsck {}",
            missing.len(),
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  "),
            extra.len(),
            extra
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  "),
            run.describe()
        );
    }
}

#[test]
fn gc_orphans_are_found_and_fixed() {
    let started = Instant::now();
    let tools = packages::tools();
    eprintln!("e2e: {} / {}", tools.registry_version, tools.skopeo_version);
    // REGFSCK_E2E_KEEP=1 keeps the data root, configs, logs and regfsck's
    // JSON reports for a post-mortem.
    let keep = std::env::var_os("REGFSCK_E2E_KEEP").is_some();
    let tmp = tempfile::Builder::new()
        .prefix("regfsck-e2e-")
        .disable_cleanup(keep)
        .tempdir()
        .expect("tempdir");
    if keep {
        eprintln!("e2e: keeping {}", tmp.path().display());
    }
    let data = tmp.path().join("DATA");
    let work = tmp.path().join("work");
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let skopeo = Skopeo::new(tools, &work.join("skopeo-tmp"));
    let mut notes: Vec<String> = Vec::new();

    // ------------------------------------------------------------ registries
    let mut private = Registry::start(
        tools,
        RegistrySpec {
            name: "private".into(),
            root: data.join("private"),
            work: work.join("private"),
            proxy_remote: None,
        },
    );
    let mut dockerhub = Registry::start(
        tools,
        RegistrySpec {
            name: "dockerhub".into(),
            root: data.join("dockerhub"),
            work: work.join("dockerhub"),
            proxy_remote: Some(private.url()),
        },
    );
    let private_pid = private.pid();

    // ------------------------------------------------------------ build + push
    let mut layout = Layout::create(&work.join("oci-src"));
    let catalog = build_images(&mut layout, &work.join("dir-src"), &nonce);
    for p in &catalog {
        skopeo.copy(
            &p.source,
            &format!("docker://{}/{}:{}", private.addr(), p.repo, p.tag),
            &CopyOpts {
                all: true,
                preserve_digests: true,
                ..CopyOpts::default()
            },
        );
        let r = http::get_manifest(&private.addr(), p.repo, p.tag).expect("GET manifest");
        assert_eq!(
            r.status,
            200,
            "{}:{} after push: {}",
            p.repo,
            p.tag,
            r.body_text()
        );
        assert_eq!(
            r.header("docker-content-digest"),
            Some(p.artifact.digest()),
            "{}:{} was pushed with its digest preserved",
            p.repo,
            p.tag
        );
    }

    // Clients pull everything once: the registry serves every blob, so its
    // in-memory blob-descriptor cache is warm, as in production.
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for p in &catalog {
        for b in p.artifact.blobs() {
            let r = http::get(
                &private.addr(),
                &format!("/v2/{}/blobs/{}", p.repo, b.digest),
            )
            .expect("GET blob");
            assert_eq!(
                r.status,
                200,
                "GET {} {}: {}",
                p.repo,
                b.digest,
                r.body_text()
            );
            assert_eq!(
                oci::digest_of(&r.body),
                b.digest,
                "blob content of {}",
                b.digest
            );
            sizes.insert(b.digest.clone(), b.size);
        }
    }

    // ------------------------------------------------------------ pull-through cache
    let find = |repo: &str, tag: &str| -> &Published {
        catalog
            .iter()
            .find(|p| p.repo == repo && p.tag == tag)
            .unwrap_or_else(|| panic!("no {repo}:{tag} in the catalog"))
    };
    let child_of = |p: &Published, platform: &Platform| -> oci::Image {
        match &p.artifact {
            Artifact::Index(i) => i
                .children
                .iter()
                .find(|c| &c.platform == platform)
                .cloned()
                .expect("platform in index"),
            Artifact::Image(_) => panic!("not an index"),
        }
    };
    // (repo, tag, the one image we pull through the cache: a platform of an
    // index, or the image itself)
    let api_arm = child_of(find("team/app/api", "v1"), &arm64());
    let web_amd = child_of(find("team/app/web", "v2"), &amd64());
    let cache_pulls: Vec<(&str, &str, oci::Image)> = {
        let single = |repo, tag| match &find(repo, tag).artifact {
            Artifact::Image(i) => i.clone(),
            Artifact::Index(_) => panic!("index"),
        };
        vec![
            ("team/app/api", "v1", api_arm.clone()),
            ("team/app/web", "v2", web_amd),
            ("base/alpine", "3.19", single("base/alpine", "3.19")),
            ("base/debian", "12", single("base/debian", "12")),
            ("tools/ci/runner", "2024", single("tools/ci/runner", "2024")),
            ("team/db/postgres", "16", single("team/db/postgres", "16")),
            ("base/node", "20", single("base/node", "20")),
        ]
    };
    for (n, (repo, tag, image)) in cache_pulls.iter().enumerate() {
        let dest = work.join(format!("cache-pull-{n}"));
        let docker = image.media_type == oci::DOCKER_MANIFEST;
        // One platform only (no --all): the cache keeps a partial index.
        skopeo.copy(
            &format!("docker://{}/{repo}:{tag}", dockerhub.addr()),
            &pull_target(&dest, docker),
            &CopyOpts {
                preserve_digests: true,
                arch: Some(&image.platform.arch),
                variant: image.platform.variant.as_deref(),
                ..CopyOpts::default()
            },
        );
        verify_pull(
            &dest,
            docker,
            &image.digest,
            &[image],
            &format!("{repo}:{tag} via cache"),
        );
        wait_cached(&dockerhub, repo, &image.blobs());
        // The cache serves them again, now from its own storage.
        for b in image.blobs() {
            let r = http::get(&dockerhub.addr(), &format!("/v2/{repo}/blobs/{}", b.digest))
                .expect("GET blob via cache");
            assert_eq!(r.status, 200);
            assert_eq!(oci::digest_of(&r.body), b.digest);
        }
    }

    // ------------------------------------------------------------ cleanup + GC
    for (repo, tag) in CLEANUP {
        let dir = private
            .v2()
            .join("repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag);
        assert!(
            dir.is_dir(),
            "tag dir {} exists before cleanup",
            dir.display()
        );
        std::fs::remove_dir_all(&dir).expect("cleanup rm -rf tag");
    }
    // The real garbage collector, as a separate process, while the registry
    // processes keep running (nobody pushes meanwhile): their caches stay warm.
    private.garbage_collect(true);
    dockerhub.garbage_collect(true);
    assert_eq!(
        private.pid(),
        private_pid,
        "private registry kept running through GC"
    );

    // ------------------------------------------------------------ what GC left
    let orphans = storage::orphan_links(&data);
    let children = storage::orphan_children(&data);
    eprintln!(
        "e2e: after GC: {} orphaned layer links, {} index children without revision link",
        orphans.len(),
        children.len()
    );
    for o in &orphans {
        eprintln!("e2e:   orphan link {}", o.rel_dir());
    }
    for c in &children {
        eprintln!(
            "e2e:   orphan child {}/{} index {} child {} {:?} blob {}",
            c.registry, c.repository, c.index, c.child, c.platform, c.child_blob_present
        );
    }
    let private_orphans: BTreeSet<&OrphanLink> =
        orphans.iter().filter(|o| o.registry == "private").collect();
    let cache_orphans: BTreeSet<&OrphanLink> = orphans
        .iter()
        .filter(|o| o.registry == "dockerhub")
        .collect();
    assert!(
        !private_orphans.is_empty(),
        "GC made orphaned layer links in private"
    );
    assert!(
        !cache_orphans.is_empty(),
        "GC made orphaned layer links in the cache"
    );
    assert!(
        children.iter().any(|c| c.registry == "private"),
        "GC made orphaned index children in private"
    );
    assert!(
        children.iter().any(|c| c.registry == "dockerhub"),
        "the cache holds partial indexes"
    );
    // Facts about 2.8.2's GC that the scenario relies on.
    let base_amd64_layer = match &find("base/alpine", "3.19").artifact {
        Artifact::Image(i) => i.layers[0].digest.clone(),
        Artifact::Index(_) => unreachable!(),
    };
    assert!(
        !orphans.iter().any(|o| o.digest == base_amd64_layer),
        "a base layer still used by a tagged image survives GC in every repository"
    );
    let broken_index_digests: BTreeSet<(String, String)> = BROKEN_INDEXES
        .iter()
        .map(|(r, t)| (r.to_string(), find(r, t).artifact.digest().to_string()))
        .collect();
    let private_broken: BTreeSet<(String, String)> = children
        .iter()
        .filter(|c| c.registry == "private")
        .map(|c| (c.repository.clone(), c.index.clone()))
        .collect();
    assert_eq!(
        private_broken, broken_index_digests,
        "2.8.2 --delete-untagged orphans the untagged children of exactly the tagged indexes \
         whose children are not all tagged"
    );
    let api_platforms: BTreeSet<Option<String>> = children
        .iter()
        .filter(|c| c.registry == "private" && c.repository == "team/app/api")
        .map(|c| c.platform.clone())
        .collect();
    assert_eq!(
        api_platforms,
        [amd64(), arm64(), armv7()]
            .iter()
            .map(|p| Some(p.label()))
            .collect(),
    );
    // 2.8.2 marks an index's children as referenced blobs before deleting
    // their revision links, so their manifest blobs survive this GC: a
    // private orphaned child is "present" (re-linkable) until a rebuild or a
    // later cleanup; "missing" shows up in the cache (never-pulled children).
    assert!(
        children
            .iter()
            .filter(|c| c.registry == "private")
            .all(|c| c.child_blob_present),
        "GC kept the manifest blobs of the orphaned children"
    );

    // ------------------------------------------------------------ before the fix
    // Orphaned blobs as clients see them from the registry that served them
    // before GC (warm blob-descriptor cache).
    let mut warm_answers: BTreeMap<String, (Answer, Answer)> = BTreeMap::new();
    for o in &orphans {
        let reg = if o.registry == "private" {
            &private
        } else {
            &dockerhub
        };
        let (head, get, _) = blob_answers(&reg.addr(), &o.repository, &o.digest);
        warm_answers.insert(o.rel_dir(), (head, get));
    }
    // What Distribution 2.8.2 really answers (observed with Debian's
    // 2.8.2+ds1, matching the field reports, distribution #2966, #4381):
    // HEAD and GET both 200 with the blob's old Content-Length, and GET's
    // body is empty (0 bytes, then the server closes the connection;
    // clients say "unexpected EOF"). The repository-scoped descriptor cache
    // answers the link check and the global one the blob stat, so nobody
    // looks at the missing data until the body is read.
    for o in &orphans {
        let (head, get) = &warm_answers[&o.rel_dir()];
        let size = sizes[&o.digest];
        assert_eq!(
            (head.status, head.content_length),
            (200, Some(size)),
            "warm HEAD {}: {head:?}",
            o.rel_dir()
        );
        assert_eq!(
            (get.status, get.content_length, get.body_len),
            (200, Some(size), 0),
            "warm GET {}: {get:?}",
            o.rel_dir()
        );
    }
    notes.push(format!(
        "before the fix, warm cache: {} orphaned blobs answered HEAD/GET 200 with the old Content-Length and a 0-byte body; e.g. {:?}",
        orphans.len(),
        warm_answers.values().next()
    ));
    // A fresh registry process on the same storage (cold cache) answers 404.
    {
        let mut cold = Registry::start(
            tools,
            RegistrySpec {
                name: "private-cold".into(),
                root: data.join("private"),
                work: work.join("private-cold"),
                proxy_remote: None,
            },
        );
        for o in &private_orphans {
            let (head, get, _) = blob_answers(&cold.addr(), &o.repository, &o.digest);
            assert_eq!(head.status, 404, "cold HEAD {}: {head:?}", o.rel_dir());
            assert_eq!(
                (get.status, get.error_code.as_deref()),
                (404, Some("BLOB_UNKNOWN")),
                "cold GET {}: {get:?}",
                o.rel_dir()
            );
        }
        if let Some(o) = private_orphans.iter().next() {
            let (head, get, _) = blob_answers(&cold.addr(), &o.repository, &o.digest);
            notes.push(format!(
                "before the fix, cold cache (new process, same storage): HEAD {head:?}, GET {get:?}"
            ));
        }
        cold.stop();
    }
    // Orphaned index children: the index is served, the child is not.
    for c in children.iter().filter(|c| c.registry == "private") {
        let idx = http::get_manifest(&private.addr(), &c.repository, &c.index).expect("GET index");
        assert_eq!(idx.status, 200, "index {} {}", c.repository, c.index);
        let child =
            http::get_manifest(&private.addr(), &c.repository, &c.child).expect("GET child");
        assert_eq!(
            (child.status, Answer::of(&child).error_code.as_deref()),
            (404, Some("MANIFEST_UNKNOWN")),
            "child {} {}: {}",
            c.repository,
            c.child,
            child.body_text()
        );
    }
    for (repo, tag) in BROKEN_INDEXES {
        let out = skopeo.try_copy(
            &format!("docker://{}/{repo}:{tag}", private.addr()),
            &format!(
                "dir:{}",
                work.join(format!("broken-pull-{}", source_name(repo, tag)))
                    .display()
            ),
            &CopyOpts {
                all: true,
                preserve_digests: true,
                ..CopyOpts::default()
            },
        );
        assert!(!out.status.success(), "pulling broken {repo}:{tag} fails");
        assert!(
            out_text(&out).contains("manifest unknown"),
            "{repo}:{tag}: {}",
            out_text(&out)
        );
    }
    // Through the cache, the image whose layers GC swept there cannot be pulled.
    {
        let out = skopeo.try_copy(
            &format!("docker://{}/team/app/web:v2", dockerhub.addr()),
            &format!("dir:{}", work.join("broken-cache-pull").display()),
            &CopyOpts {
                preserve_digests: true,
                arch: Some("amd64"),
                ..CopyOpts::default()
            },
        );
        assert!(
            !out.status.success(),
            "pulling team/app/web:v2 amd64 through the cache before the fix fails"
        );
        notes.push(format!(
            "before the fix, skopeo pulling team/app/web:v2 (amd64) through the cache failed: {}",
            out_text(&out).lines().last().unwrap_or_default()
        ));
    }

    // ------------------------------------------------------------ regfsck
    // The cache is stopped for the rest (its restart comes after the fix);
    // the private registry keeps running, idle.
    dockerhub.stop();
    assert_eq!(
        storage::orphan_links(&data),
        orphans,
        "probing did not change the orphaned links"
    );
    // Probing through the cache may have re-fetched child manifests there.
    let children = storage::orphan_children(&data);
    let policy = tmp.path().join("regfsck.toml");
    std::fs::write(&policy, policy_toml(&data)).expect("write policy");

    let private_children: BTreeSet<OrphanChild> = children
        .iter()
        .filter(|c| c.registry == "private")
        .cloned()
        .collect();
    let before_dry = storage::snapshot(&data);
    let t = Instant::now();
    let dry = regfsck::run(&policy, "check", true);
    std::fs::write(work.join("regfsck-check-dry-run.json"), &dry.stdout).expect("save report");
    notes.push(format!("regfsck check --dry-run took {:?}", t.elapsed()));
    assert_eq!(
        dry.code,
        1,
        "findings remain after a dry run\n{}",
        dry.describe()
    );
    assert_eq!(dry.json["dry_run"], true, "{}", dry.describe());
    let mut expected = expected_link_lines(&orphans, "would-remove");
    expected.extend(expected_child_lines(&private_children));
    assert_same_lines(&expected, &actual_lines(&dry), "dry run", &dry);
    assert_eq!(
        storage::snapshot(&data),
        before_dry,
        "a dry run changes nothing on disk"
    );

    let before_fix = storage::snapshot(&data);
    let fix = regfsck::run(&policy, "fix", false);
    std::fs::write(work.join("regfsck-fix.json"), &fix.stdout).expect("save report");
    assert_eq!(
        fix.code,
        1,
        "orphaned index children (warn) remain after the fix\n{}",
        fix.describe()
    );
    let mut expected = expected_link_lines(&orphans, "removed");
    expected.extend(expected_child_lines(&private_children));
    assert_same_lines(&expected, &actual_lines(&fix), "fix", &fix);
    let after_fix = storage::snapshot(&data);
    let (removed, added, modified) = storage::diff(&before_fix, &after_fix);
    let expected_removed: BTreeSet<String> = orphans
        .iter()
        .flat_map(|o| [o.rel_dir(), format!("{}/link", o.rel_dir())])
        .collect();
    assert_eq!(
        removed, expected_removed,
        "the fix removed exactly the orphaned link directories"
    );
    assert!(
        added.is_empty(),
        "the fix added nothing under the data root: {added:?}"
    );
    assert!(
        modified.is_empty(),
        "the fix modified nothing: {modified:?}"
    );
    // regfsck's audit log (under the data root's `.regfsck/`, which the
    // snapshots leave out) names exactly those directories.
    let audited: BTreeSet<String> = storage::audit_removals(&data)
        .into_iter()
        .map(|(registry, path)| format!("{registry}/{path}"))
        .collect();
    let expected_dirs: BTreeSet<String> = orphans.iter().map(OrphanLink::rel_dir).collect();
    assert_eq!(
        audited, expected_dirs,
        "the audit log records every removal, and nothing else"
    );

    let again = regfsck::run(&policy, "check", true);
    std::fs::write(work.join("regfsck-check-after-fix.json"), &again.stdout).expect("save report");
    assert_eq!(again.code, 1, "{}", again.describe());
    assert!(
        again.findings_of("orphan-layer-links").is_empty(),
        "no orphaned layer link left\n{}",
        again.describe()
    );
    assert_same_lines(
        &expected_child_lines(&private_children),
        &actual_lines(&again),
        "after the fix",
        &again,
    );

    // Nothing left for a layers-only policy: exit code 0.
    let clean = regfsck::run(&policy, "layers", false);
    assert_eq!(
        (clean.code, clean.findings().len()),
        (0, 0),
        "nothing needs attention after the fix\n{}",
        clean.describe()
    );

    // The cache's partial indexes are real findings when asked for (this is
    // what the "off" above suppresses), including children whose manifest
    // blob was never fetched.
    let cache_children: BTreeSet<OrphanChild> = children
        .iter()
        .filter(|c| c.registry == "dockerhub")
        .cloned()
        .collect();
    assert!(
        cache_children.iter().any(|c| !c.child_blob_present),
        "the cache holds index children it never fetched"
    );
    let audit = regfsck::run(&policy, "cache-audit", true);
    std::fs::write(work.join("regfsck-cache-audit.json"), &audit.stdout).expect("save report");
    assert_eq!(audit.code, 1, "{}", audit.describe());
    assert_same_lines(
        &expected_child_lines(&cache_children),
        &actual_lines(&audit),
        "cache audit",
        &audit,
    );

    // ------------------------------------------------------------ after the fix
    // Without a restart the registry still trusts its cache: the reason
    // regfsck tells operators to restart (or flush) after fixing.
    let mut still_warm = 0;
    for o in &private_orphans {
        let (_, get, _) = blob_answers(&private.addr(), &o.repository, &o.digest);
        if get.status == 200 {
            still_warm += 1;
        }
    }
    notes.push(format!(
        "after the fix, before the restart: {still_warm}/{} orphaned blobs still answered 200 (cached descriptors)",
        private_orphans.len()
    ));
    assert_eq!(
        still_warm,
        private_orphans.len(),
        "the cache outlives the link removal"
    );

    private.restart();
    dockerhub.restart();
    for o in &private_orphans {
        let (head, get, _) = blob_answers(&private.addr(), &o.repository, &o.digest);
        assert_eq!(
            head.status,
            404,
            "HEAD {} after fix+restart: {head:?}",
            o.rel_dir()
        );
        assert_eq!(
            (get.status, get.error_code.as_deref()),
            (404, Some("BLOB_UNKNOWN")),
            "GET {} after fix+restart: {get:?}",
            o.rel_dir()
        );
    }
    // The cache fetches again what its upstream still has.
    let mut refetched = 0;
    for o in &cache_orphans {
        let upstream_link = private
            .v2()
            .join("repositories")
            .join(&o.repository)
            .join("_layers/sha256")
            .join(oci::hex_of(&o.digest))
            .join("link");
        let upstream_has =
            upstream_link.is_file() && storage::blob_data(&private.v2(), &o.digest).is_file();
        let (_, get, resp) = blob_answers(&dockerhub.addr(), &o.repository, &o.digest);
        if upstream_has {
            assert_eq!(get.status, 200, "cache re-fetches {}: {get:?}", o.rel_dir());
            assert_eq!(
                oci::digest_of(&resp.body),
                o.digest,
                "cache serves the whole blob"
            );
            refetched += 1;
        } else {
            assert_eq!(
                get.status,
                404,
                "cache {} (gone upstream too): {get:?}",
                o.rel_dir()
            );
        }
    }
    assert!(
        refetched > 0,
        "some cache orphans were still available upstream"
    );

    // Every healthy image still pulls, byte for byte.
    let broken: BTreeSet<(&str, &str)> = BROKEN_INDEXES.iter().copied().collect();
    let cleaned: BTreeSet<(&str, &str)> = CLEANUP.iter().copied().collect();
    let mut pulled = 0;
    for (n, p) in catalog.iter().enumerate() {
        if broken.contains(&(p.repo, p.tag)) || cleaned.contains(&(p.repo, p.tag)) {
            continue;
        }
        let dest = work.join(format!("final-pull-{n}"));
        skopeo.copy(
            &format!("docker://{}/{}:{}", private.addr(), p.repo, p.tag),
            &pull_target(&dest, p.artifact.is_docker()),
            &CopyOpts {
                all: true,
                preserve_digests: true,
                ..CopyOpts::default()
            },
        );
        verify_pull(
            &dest,
            p.artifact.is_docker(),
            p.artifact.digest(),
            &p.artifact.images(),
            &format!("{}:{} after the fix", p.repo, p.tag),
        );
        let raw = skopeo.inspect_raw(&format!("docker://{}/{}:{}", private.addr(), p.repo, p.tag));
        assert_eq!(oci::digest_of(&raw), p.artifact.digest());
        pulled += 1;
    }
    // And through the cache, including the image that failed before the fix.
    for (n, (repo, tag, image)) in cache_pulls.iter().enumerate() {
        if image.digest == api_arm.digest {
            continue; // its layers are gone upstream too: only a rebuild helps
        }
        let dest = work.join(format!("final-cache-pull-{n}"));
        let docker = image.media_type == oci::DOCKER_MANIFEST;
        skopeo.copy(
            &format!("docker://{}/{repo}:{tag}", dockerhub.addr()),
            &pull_target(&dest, docker),
            &CopyOpts {
                preserve_digests: true,
                arch: Some(&image.platform.arch),
                variant: image.platform.variant.as_deref(),
                ..CopyOpts::default()
            },
        );
        verify_pull(
            &dest,
            docker,
            &image.digest,
            &[image],
            &format!("{repo}:{tag} via cache after the fix"),
        );
        pulled += 1;
    }

    private.stop();
    dockerhub.stop();
    notes.push(format!(
        "{pulled} healthy pulls after the fix succeeded with identical digests"
    ));
    notes.push(format!("scenario took {:?}", started.elapsed()));
    for n in &notes {
        eprintln!("e2e: {n}");
    }
}
