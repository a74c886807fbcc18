//! A small workbench for the per-check cases (`more_checks`): one temporary
//! data root, registries on it, images built on disk and pushed with skopeo,
//! regfsck runs with a generated policy, and exact comparison of findings.

use crate::gc_scenario::{out_text, pull_target, verify_pull};
use crate::http;
use crate::oci::{self, Artifact, Format, Image, Index, IndexKind, Layer, Layout, Platform};
use crate::packages::{self, Tools};
use crate::regfsck;
use crate::registry::{Registry, RegistrySpec};
use crate::skopeo::{CopyOpts, Skopeo};
use serde_json::Value;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

/// Every check the cases enable in their `all` policy: each case asserts the
/// exact findings of all of them, so a check that misfires on the healthy
/// images around the breakage fails the case.
pub const ALL_CHECKS: &[&str] = &[
    "orphan-layer-links",
    "orphan-index-children",
    "dangling-tags",
    "missing-referenced-blobs",
    "invalid-links",
    "corrupt-blobs",
    "stale-uploads",
    "unreferenced-blobs",
];

pub struct Lab {
    pub name: &'static str,
    pub tools: &'static Tools,
    tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub work: PathBuf,
    pub skopeo: Skopeo,
    nonce: String,
    layout: Layout,
    counter: Cell<u32>,
    started: Instant,
}

impl Lab {
    /// A fresh data root for one case. `REGFSCK_E2E_KEEP=1` keeps it.
    pub fn new(name: &'static str) -> Self {
        let tools = packages::tools();
        let keep = std::env::var_os("REGFSCK_E2E_KEEP").is_some();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("regfsck-e2e-{name}-"))
            .disable_cleanup(keep)
            .tempdir()
            .expect("tempdir");
        if keep {
            eprintln!("e2e[{name}]: keeping {}", tmp.path().display());
        }
        let data = tmp.path().join("DATA");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&data).expect("create data root");
        let nonce = format!(
            "{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let skopeo = Skopeo::new(tools, &work.join("skopeo-tmp"));
        let layout = Layout::create(&work.join("oci-src"));
        Self {
            name,
            tools,
            tmp,
            data,
            work,
            skopeo,
            nonce,
            layout,
            counter: Cell::new(0),
            started: Instant::now(),
        }
    }

    pub fn note(&self, text: impl AsRef<str>) {
        eprintln!("e2e[{}]: {}", self.name, text.as_ref());
    }

    /// Logs how long the case took.
    pub fn done(&self) {
        self.note(format!("case took {:?}", self.started.elapsed()));
    }

    fn next(&self) -> u32 {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        n
    }

    /// A registry (`storage.delete.enabled: true`, in-memory descriptor
    /// cache) on `DATA/<name>`.
    pub fn registry(&self, name: &str) -> Registry {
        self.start(name, None)
    }

    /// A pull-through cache of `upstream` on `DATA/<name>`.
    pub fn cache(&self, name: &str, upstream: &Registry) -> Registry {
        self.start(name, Some(upstream.url()))
    }

    fn start(&self, name: &str, proxy_remote: Option<String>) -> Registry {
        Registry::start(
            self.tools,
            RegistrySpec {
                name: name.into(),
                root: self.data.join(name),
                work: self.work.join(name),
                proxy_remote,
            },
        )
    }

    pub fn layer(&self, name: &str, files: usize) -> Layer {
        Layer::new(name, &self.nonce, files)
    }

    pub fn image(&self, format: Format, platform: Platform, layers: &[&Layer]) -> Image {
        self.layout.image(format, platform, layers)
    }

    pub fn index(&self, kind: IndexKind, children: &[Image]) -> Index {
        self.layout.index(kind, children)
    }

    /// Where skopeo copies `artifact` from: `oci:LAYOUT:REF`, or `dir:DIR`
    /// for Docker types.
    fn source(&mut self, artifact: &Artifact) -> String {
        let name = format!("src-{}", self.next());
        if artifact.is_docker() {
            let dir = self.work.join("dir-src").join(&name);
            self.layout.export_dir(artifact, &dir);
            format!("dir:{}", dir.display())
        } else {
            self.layout.tag(&name, artifact);
            format!("oci:{}:{name}", self.layout.dir.display())
        }
    }

    /// `skopeo copy --all --preserve-digests` to `repo:tag`; returns skopeo's
    /// output (success or not).
    pub fn try_push(
        &mut self,
        reg: &Registry,
        repo: &str,
        tag: &str,
        artifact: &Artifact,
    ) -> Output {
        let source = self.source(artifact);
        self.skopeo.try_copy(
            &source,
            &format!("docker://{}/{repo}:{tag}", reg.addr()),
            &CopyOpts {
                all: true,
                preserve_digests: true,
                ..CopyOpts::default()
            },
        )
    }

    /// Pushes and checks the registry serves `repo:tag` with the artifact's
    /// digest.
    pub fn push(&mut self, reg: &Registry, repo: &str, tag: &str, artifact: &Artifact) {
        let out = self.try_push(reg, repo, tag, artifact);
        assert!(
            out.status.success(),
            "push {repo}:{tag} to {}: {}",
            reg.spec.name,
            out_text(&out)
        );
        let r = http::get_manifest(&reg.addr(), repo, tag).expect("GET manifest");
        assert_eq!(
            (r.status, r.header("docker-content-digest")),
            (200, Some(artifact.digest())),
            "{repo}:{tag} after push: {}",
            r.body_text()
        );
    }

    /// `skopeo copy --all` of `repo:reference` into a fresh directory.
    pub fn try_pull(&self, reg: &Registry, repo: &str, reference: &str, docker: bool) -> Output {
        let dest = self.work.join(format!("pull-{}", self.next()));
        let sep = if reference.starts_with("sha256:") {
            "@"
        } else {
            ":"
        };
        self.skopeo.try_copy(
            &format!("docker://{}/{repo}{sep}{reference}", reg.addr()),
            &pull_target(&dest, docker),
            &CopyOpts {
                all: true,
                preserve_digests: true,
                ..CopyOpts::default()
            },
        )
    }

    /// Pulls `repo:tag` and checks every manifest and blob byte for byte.
    pub fn pull_ok(&self, reg: &Registry, repo: &str, tag: &str, artifact: &Artifact) {
        let dest = self.work.join(format!("pull-{}", self.next()));
        self.skopeo.copy(
            &format!("docker://{}/{repo}:{tag}", reg.addr()),
            &pull_target(&dest, artifact.is_docker()),
            &CopyOpts {
                all: true,
                preserve_digests: true,
                ..CopyOpts::default()
            },
        );
        verify_pull(
            &dest,
            artifact.is_docker(),
            artifact.digest(),
            &artifact.images(),
            &format!("{repo}:{tag} from {}", reg.spec.name),
        );
    }

    /// Writes the policy file: the data root, `grace = "0s"` (everything here
    /// happened seconds ago), policy `all` (every check of [`ALL_CHECKS`] at
    /// `warn`), then `extra`.
    pub fn policy(&self, extra: &str) -> PathBuf {
        let mut toml = format!(
            "# written by the regfsck e2e test\nroot = \"{}\"\n\n[registries.\"*\"]\ngrace = \"0s\"\n\n\
             [policies.all]\ndescription = \"every check, report only\"\n[policies.all.registries.\"*\"]\n",
            self.data.display()
        );
        for check in ALL_CHECKS {
            toml.push_str(&format!("{check} = \"warn\"\n"));
        }
        toml.push('\n');
        toml.push_str(extra);
        let path = self.tmp.path().join("regfsck.toml");
        std::fs::write(&path, toml).expect("write policy");
        path
    }

    /// Runs regfsck and keeps its JSON report in the work directory.
    pub fn regfsck(&self, policy: &Path, name: &str, dry_run: bool) -> regfsck::Run {
        let run = regfsck::run(policy, name, dry_run);
        let file = self
            .work
            .join(format!("regfsck-{}-{name}.json", self.next()));
        std::fs::write(file, &run.stdout).expect("save report");
        assert!(
            run.json["problems"]
                .as_array()
                .is_some_and(|p| p.is_empty()),
            "regfsck {name}: no scan problems expected\n{}",
            run.describe()
        );
        run
    }
}

// ------------------------------------------------------------------ findings

/// A JSON value with object keys sorted, on one line.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, String> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            let fields: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{}:{v}", Value::String((*k).clone())))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// The comparable form of one finding: identity, action and details.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expect {
    pub check: String,
    pub level: String,
    pub registry: String,
    /// JSON: `"team/app"`, `""` or `null`.
    pub repository: String,
    /// JSON: `"sha256:…"` or `null`.
    pub digest: String,
    pub path: String,
    pub action: String,
    pub details: String,
}

impl Expect {
    /// A finding expected at level `warn`, action `reported`.
    pub fn warn(
        check: &str,
        registry: &str,
        repository: &str,
        digest: Option<&str>,
        path: impl Into<String>,
        details: Value,
    ) -> Self {
        Self {
            check: check.into(),
            level: "warn".into(),
            registry: registry.into(),
            repository: Value::String(repository.into()).to_string(),
            digest: digest
                .map_or(Value::Null, |d| Value::String(d.into()))
                .to_string(),
            path: path.into(),
            action: "reported".into(),
            details: canonical(&details),
        }
    }

    /// The same finding at another level and action (`fix`, `removed`).
    pub fn acted(mut self, level: &str, action: &str) -> Self {
        self.level = level.into();
        self.action = action.into();
        self
    }

    pub fn line(&self) -> String {
        format!(
            "{} level={} registry={} repository={} digest={} path={} action={} details={}",
            self.check,
            self.level,
            self.registry,
            self.repository,
            self.digest,
            self.path,
            self.action,
            self.details
        )
    }
}

/// The findings of a run as [`Expect`] values; `drop_details` names detail
/// fields left out of the comparison (times, ages), which the caller checks
/// on its own.
pub fn actual(run: &regfsck::Run, drop_details: &[&str]) -> BTreeSet<Expect> {
    run.findings()
        .iter()
        .map(|f| {
            let mut details = f["details"].clone();
            if let Value::Object(m) = &mut details {
                for k in drop_details {
                    m.remove(*k);
                }
            }
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            Expect {
                check: s(&f["check"]),
                level: s(&f["level"]),
                registry: s(&f["registry"]),
                repository: f["repository"].to_string(),
                digest: f["digest"].to_string(),
                path: s(&f["path"]),
                action: s(&f["action"]),
                details: canonical(&details),
            }
        })
        .collect()
}

/// Asserts that the run's findings are exactly `expected` (as a set, so the
/// order of the report does not matter), with a readable difference.
pub fn assert_findings(
    run: &regfsck::Run,
    expected: &BTreeSet<Expect>,
    drop_details: &[&str],
    what: &str,
) {
    let actual = actual(run, drop_details);
    if &actual != expected {
        let missing: Vec<String> = expected.difference(&actual).map(Expect::line).collect();
        let extra: Vec<String> = actual.difference(expected).map(Expect::line).collect();
        panic!(
            "{what}: regfsck's findings differ from the expected ones\n\
             missing from regfsck ({}):\n  {}\nunexpected in regfsck ({}):\n  {}\n\nregfsck {}",
            missing.len(),
            missing.join("\n  "),
            extra.len(),
            extra.join("\n  "),
            run.describe()
        );
    }
}

/// [`assert_findings`], except that findings for which `tolerated` holds may
/// appear without being expected (a known regfsck bug the case documents);
/// returns those that did.
pub fn assert_findings_tolerating(
    run: &regfsck::Run,
    expected: &BTreeSet<Expect>,
    drop_details: &[&str],
    tolerated: impl Fn(&Expect) -> bool,
    what: &str,
) -> Vec<Expect> {
    let all = actual(run, drop_details);
    let extra: Vec<Expect> = all
        .iter()
        .filter(|f| !expected.contains(*f) && tolerated(f))
        .cloned()
        .collect();
    let rest: BTreeSet<Expect> = all.into_iter().filter(|f| !extra.contains(f)).collect();
    if &rest != expected {
        let missing: Vec<String> = expected.difference(&rest).map(Expect::line).collect();
        let unexpected: Vec<String> = rest.difference(expected).map(Expect::line).collect();
        panic!(
            "{what}: regfsck's findings differ from the expected ones\n\
             missing from regfsck ({}):\n  {}\nunexpected in regfsck ({}):\n  {}\n\nregfsck {}",
            missing.len(),
            missing.join("\n  "),
            unexpected.len(),
            unexpected.join("\n  "),
            run.describe()
        );
    }
    extra
}

/// A summary counter of one check in one registry.
pub fn counter(run: &regfsck::Run, registry: &str, check: &str, name: &str) -> Option<u64> {
    run.json["summary"]["registries"][registry]["checks"][check]["counters"][name].as_u64()
}

// ------------------------------------------------------------------ paths

/// Data-root-relative paths regfsck reports, for registry `reg`.
pub fn v2(reg: &str) -> String {
    format!("{reg}/docker/registry/v2")
}

/// The blob's directory, `…/blobs/sha256/<xx>/<hex>`.
pub fn blob_dir_path(reg: &str, digest: &str) -> String {
    let hex = oci::hex_of(digest);
    format!("{}/blobs/sha256/{}/{hex}", v2(reg), &hex[..2])
}

pub fn blob_data_path(reg: &str, digest: &str) -> String {
    let hex = oci::hex_of(digest);
    format!("{}/blobs/sha256/{}/{hex}/data", v2(reg), &hex[..2])
}

pub fn repo_path(reg: &str, repo: &str) -> String {
    format!("{}/repositories/{repo}", v2(reg))
}

pub fn layer_link_path(reg: &str, repo: &str, digest: &str) -> String {
    format!(
        "{}/_layers/sha256/{}/link",
        repo_path(reg, repo),
        oci::hex_of(digest)
    )
}

pub fn revision_link_path(reg: &str, repo: &str, digest: &str) -> String {
    format!(
        "{}/_manifests/revisions/sha256/{}/link",
        repo_path(reg, repo),
        oci::hex_of(digest)
    )
}

pub fn tag_current_path(reg: &str, repo: &str, tag: &str) -> String {
    format!(
        "{}/_manifests/tags/{tag}/current/link",
        repo_path(reg, repo)
    )
}

/// The first image of an artifact (the image itself, or an index's first
/// child).
pub fn image_of(a: &Artifact) -> &Image {
    a.images()[0]
}

/// A single-platform OCI or Docker image artifact.
pub fn single(lab: &Lab, format: Format, layers: &[&Layer]) -> Artifact {
    Artifact::Image(lab.image(format, crate::gc_scenario::amd64(), layers))
}
