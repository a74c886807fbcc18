//! Helpers for check crates' tests (feature `testing`): build tiny Distribution storage trees
//! in a temp dir and run one check on them.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::options::CheckOptions;
use crate::{
    CheckContext, CheckOutput, Digest, FsStorage, ManifestCache, Problem, Registration, layout,
    scan,
};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// A registry root (`rootdirectory`) being built by a test.
#[derive(Debug, Clone)]
pub struct Tree {
    root: PathBuf,
}

impl Tree {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn storage(&self) -> FsStorage {
        FsStorage::new(&self.root)
    }

    /// The absolute path of a registry-relative path.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes a file, creating its parents.
    pub fn write(&self, rel: &str, content: &[u8]) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("a registry path has a parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
        self
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    pub fn remove(&self, rel: &str) {
        let p = self.path(rel);
        if p.is_dir() {
            std::fs::remove_dir_all(p).expect("rm -r");
        } else {
            std::fs::remove_file(p).expect("rm");
        }
    }

    /// Stores `content` as a blob and returns its digest.
    pub fn blob(&self, content: &[u8]) -> Digest {
        let d = digest_of(content);
        self.write(&layout::blob_data(&d), content);
        d
    }

    /// A layer link in `repo` (the blob is not created).
    pub fn layer_link(&self, repo: &str, d: &Digest) -> &Self {
        self.write(&layout::layer_link(repo, d), d.to_string().as_bytes())
    }

    /// A manifest revision link in `repo`.
    pub fn revision(&self, repo: &str, d: &Digest) -> &Self {
        self.write(&layout::revision_link(repo, d), d.to_string().as_bytes())
    }

    /// A tag: `current/link` and its `index/` entry.
    pub fn tag(&self, repo: &str, tag: &str, d: &Digest) -> &Self {
        let dir = format!("{}/{tag}", layout::tags_dir(repo));
        self.write(&format!("{dir}/current/link"), d.to_string().as_bytes());
        self.write(
            &format!("{dir}/index/sha256/{}/link", d.hex()),
            d.to_string().as_bytes(),
        )
    }

    /// A complete single-platform OCI image in `repo`: config and layers stored and linked,
    /// manifest stored with a revision link. Returns (manifest, config, layers).
    pub fn image(&self, repo: &str, layers: &[&[u8]]) -> (Digest, Digest, Vec<Digest>) {
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"repo\":\"{repo}\"}}");
        let config_d = self.blob(config.as_bytes());
        self.layer_link(repo, &config_d);
        let layer_ds: Vec<Digest> = layers
            .iter()
            .map(|l| {
                let d = self.blob(l);
                self.layer_link(repo, &d);
                d
            })
            .collect();
        let manifest = image_manifest(
            &config_d,
            config.len(),
            &layer_ds
                .iter()
                .zip(layers)
                .map(|(d, l)| (*d, l.len()))
                .collect::<Vec<_>>(),
        );
        let m = self.blob(manifest.as_bytes());
        self.revision(repo, &m);
        (m, config_d, layer_ds)
    }

    /// An index blob over `children` (digest, os, arch), with a revision link in `repo`.
    /// `media_type` `None` writes an OCI index without `mediaType`.
    pub fn index(
        &self,
        repo: &str,
        media_type: Option<&str>,
        children: &[(Digest, &str, &str)],
    ) -> Digest {
        let d = self.blob(index_json(media_type, children).as_bytes());
        self.revision(repo, &d);
        d
    }
}

pub fn digest_of(content: &[u8]) -> Digest {
    Digest::from_bytes(Sha256::digest(content).into())
}

pub fn image_manifest(config: &Digest, config_size: usize, layers: &[(Digest, usize)]) -> String {
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, size)| {
            format!("{{\"mediaType\":\"{OCI_LAYER}\",\"digest\":\"{d}\",\"size\":{size}}}")
        })
        .collect();
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"{OCI_CONFIG}\",\"digest\":\"{config}\",\"size\":{config_size}}},\"layers\":[{}]}}",
        layers.join(",")
    )
}

pub fn index_json(media_type: Option<&str>, children: &[(Digest, &str, &str)]) -> String {
    let children: Vec<String> = children
        .iter()
        .map(|(d, os, arch)| {
            format!("{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{d}\",\"size\":1,\"platform\":{{\"os\":\"{os}\",\"architecture\":\"{arch}\"}}}}")
        })
        .collect();
    let mt = media_type
        .map(|m| format!("\"mediaType\":\"{m}\","))
        .unwrap_or_default();
    format!(
        "{{\"schemaVersion\":2,{mt}\"manifests\":[{}]}}",
        children.join(",")
    )
}

/// Scans `tree` as registry `registry` with what `reg` needs and runs it alone.
/// Returns its output, with the scan's problems added to the output's.
pub fn run_check(
    reg: &Registration,
    registry: &str,
    tree: &Tree,
    options: Option<CheckOptions>,
) -> CheckOutput {
    let storage = tree.storage();
    let (inventory, problems) = scan::scan(registry, &storage, reg.info.needs);
    let manifests = ManifestCache::for_inventory(&storage, true, &inventory);
    let options = options.unwrap_or_else(|| CheckOptions::defaults(reg.info.options));
    let cx = CheckContext {
        registry,
        storage: &storage,
        inventory: &inventory,
        manifests: &manifests,
        options: &options,
        evidence: true,
    };
    let mut out = reg.check.run(&cx);
    let mut all: Vec<Problem> = problems;
    all.append(&mut out.problems);
    out.problems = all;
    out
}
