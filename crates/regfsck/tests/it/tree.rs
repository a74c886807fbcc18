//! Manifest builders beyond `regfsck_core::testing`'s (Docker media types, platform
//! variants, children without platform or with another digest algorithm), and helpers to
//! copy and compare whole storage trees. Shared by the integration tests; build the trees
//! themselves with `regfsck_core::testing::Tree`.

// A toolbox shared by the test modules: not every module uses every helper.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use regfsck_core::testing::digest_of;
use serde_json::{Value, json};

pub use regfsck_core::manifest::{DOCKER_MANIFEST_LIST, OCI_INDEX};
pub use regfsck_core::testing::{OCI_CONFIG, OCI_LAYER, OCI_MANIFEST};
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A platform as it appears in an index's `manifests[].platform`.
#[derive(Clone, Debug)]
pub struct Platform {
    pub os: &'static str,
    pub architecture: &'static str,
    pub variant: Option<&'static str>,
}

/// An OCI / Docker content descriptor. `digest` is a string: an index may name a child by
/// another algorithm than sha256.
#[derive(Clone, Debug)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: usize,
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// Describes `content` (digest and size computed from it).
    pub fn of(media_type: &str, content: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: digest_of(content).to_string(),
            size: content.len(),
            platform: None,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        });
        if let Some(p) = &self.platform {
            let mut platform = json!({"architecture": p.architecture, "os": p.os});
            if let Some(variant) = p.variant {
                platform["variant"] = json!(variant);
            }
            v["platform"] = platform;
        }
        v
    }
}

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("serialise manifest")
}

/// An image manifest (`media_type` is `OCI_MANIFEST` or `DOCKER_MANIFEST`).
pub fn image_manifest(media_type: &str, config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.to_json(),
        "layers": layers.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
    }))
}

/// An image index / manifest list; `media_type: None` omits the field, as OCI allows.
pub fn index(media_type: Option<&str>, children: &[Descriptor]) -> Vec<u8> {
    let mut v = json!({
        "schemaVersion": 2,
        "manifests": children.iter().map(Descriptor::to_json).collect::<Vec<_>>(),
    });
    if let Some(mt) = media_type {
        v["mediaType"] = json!(mt);
    }
    to_bytes(&v)
}

/// One entry of a [`snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

impl Entry {
    /// A short human description: the kind, and for files the start of the content.
    pub fn describe(&self) -> String {
        match self {
            Entry::Dir => "dir".to_owned(),
            Entry::Symlink(target) => format!("symlink -> {}", target.display()),
            Entry::File(content) => {
                let text = String::from_utf8_lossy(&content[..content.len().min(80)]);
                format!("file, {} bytes: {text:?}", content.len())
            }
        }
    }
}

/// Every path under `root` (relative, `/`-separated) with its kind and content.
pub fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            let rel = path.strip_prefix(root).expect("under root");
            let rel = rel.to_str().expect("utf-8 path").to_owned();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            if meta.file_type().is_symlink() {
                out.insert(rel, Entry::Symlink(fs::read_link(&path).expect("readlink")));
            } else if meta.is_dir() {
                out.insert(rel, Entry::Dir);
                walk(root, &path, out);
            } else {
                out.insert(rel, Entry::File(fs::read(&path).expect("read")));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Writes `snapshot` out as a tree under `dst` (created), e.g. to copy a tree.
pub fn restore(snapshot: &BTreeMap<String, Entry>, dst: &Path) {
    fs::create_dir_all(dst).expect("create the tree's root");
    // Sorted paths put every directory before what it contains.
    for (rel, entry) in snapshot {
        let to = dst.join(rel);
        match entry {
            Entry::Dir => fs::create_dir(&to),
            Entry::File(content) => fs::write(&to, content),
            Entry::Symlink(target) => std::os::unix::fs::symlink(target, &to),
        }
        .unwrap_or_else(|e| panic!("restore {}: {e}", to.display()));
    }
}

/// A readable list of the differences between two snapshots (empty when equal).
pub fn diff_snapshots(
    left_name: &str,
    left: &BTreeMap<String, Entry>,
    right_name: &str,
    right: &BTreeMap<String, Entry>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (path, l) in left {
        match right.get(path) {
            None => out.push(format!("only in {left_name}: {path} ({})", l.describe())),
            Some(r) if r != l => out.push(format!(
                "differs: {path}: {left_name} {}, {right_name} {}",
                l.describe(),
                r.describe()
            )),
            Some(_) => {}
        }
    }
    for (path, r) in right {
        if !left.contains_key(path) {
            out.push(format!("only in {right_name}: {path} ({})", r.describe()));
        }
    }
    out
}
