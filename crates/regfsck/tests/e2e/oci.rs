//! Builds container images without a Docker engine: real (tiny) gzip'd tar
//! layers, config JSON, image manifests and image indexes, written as an OCI
//! image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) that skopeo
//! can copy with `oci:DIR:TAG`.
//!
//! Layers are real gzip streams (deflate "stored" blocks, no compression
//! library needed): containers/image sniffs the compression of every layer
//! it pushes and would re-compress anything that is not gzip, which would
//! change digests (and fail `--preserve-digests`).

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub fn sha256_hex(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// `sha256:<hex>` → `<hex>`.
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

// ---------------------------------------------------------------- tar + gzip

/// A ustar archive holding regular files.
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, content) in files {
        assert!(name.len() < 100, "tar name too long: {name}");
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..108].copy_from_slice(b"0000644\0");
        header[108..116].copy_from_slice(b"0000000\0");
        header[116..124].copy_from_slice(b"0000000\0");
        header[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
        header[136..148].copy_from_slice(b"14000000000\0"); // fixed mtime: reproducible
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// RFC 1952 gzip with RFC 1951 "stored" (uncompressed) deflate blocks.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut chunks = data.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        out.push(u8::from(last));
        let len = u16::try_from(chunk.len()).expect("chunk fits u16");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    let isize = u32::try_from(data.len() % (1 << 32)).expect("fits");
    out.extend_from_slice(&isize.to_le_bytes());
    out
}

// ---------------------------------------------------------------- model

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, arch: &str, variant: Option<&str>) -> Self {
        Self {
            os: os.into(),
            arch: arch.into(),
            variant: variant.map(Into::into),
        }
    }

    /// `os/arch[/variant]`, the form regfsck reports.
    pub fn label(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.arch),
            None => format!("{}/{}", self.os, self.arch),
        }
    }

    fn json(&self) -> Value {
        let mut p = json!({"architecture": self.arch, "os": self.os});
        if let Some(v) = &self.variant {
            p["variant"] = json!(v);
        }
        p
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OCI image manifest (children of OCI indexes).
    Oci,
    /// Docker v2 schema2 manifest (children of Docker manifest lists).
    Docker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    OciIndex,
    DockerList,
    /// An OCI index whose JSON has no `mediaType` field (allowed by the spec).
    OciIndexWithoutMediaType,
}

/// A layer: gzip'd tar plus its uncompressed digest.
#[derive(Debug, Clone)]
pub struct Layer {
    pub gz: Vec<u8>,
    pub diff_id: String,
}

impl Layer {
    /// A layer holding a few files whose content depends on `name` and the
    /// run's `nonce` (so repeated runs never share blobs).
    pub fn new(name: &str, nonce: &str, files: usize) -> Self {
        let contents: Vec<(String, Vec<u8>)> = (0..files.max(1))
            .map(|i| {
                let body = format!("{name} file {i} run {nonce}\n").repeat(20 + 7 * i);
                (format!("{name}/f{i}.txt"), body.into_bytes())
            })
            .collect();
        let refs: Vec<(&str, &[u8])> = contents
            .iter()
            .map(|(n, c)| (n.as_str(), c.as_slice()))
            .collect();
        let tar = tar(&refs);
        let gz = gzip(&tar);
        Self {
            diff_id: digest_of(&tar),
            gz,
        }
    }
}

/// A blob as referenced from a manifest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Clone)]
pub struct Image {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    pub platform: Platform,
    pub config: BlobRef,
    pub layers: Vec<BlobRef>,
}

impl Image {
    /// Config + layers: the blobs that get a `_layers` link in a repository.
    pub fn blobs(&self) -> Vec<BlobRef> {
        let mut v = vec![self.config.clone()];
        v.extend(self.layers.iter().cloned());
        v
    }
}

#[derive(Debug, Clone)]
pub struct Index {
    pub digest: String,
    pub size: u64,
    pub kind: IndexKind,
    pub children: Vec<Image>,
}

impl Index {
    pub fn media_type(&self) -> &'static str {
        match self.kind {
            IndexKind::OciIndex | IndexKind::OciIndexWithoutMediaType => OCI_INDEX,
            IndexKind::DockerList => DOCKER_LIST,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Artifact {
    Image(Image),
    Index(Index),
}

impl Artifact {
    /// Whether the top manifest is a Docker type (schema2 image or list).
    pub fn is_docker(&self) -> bool {
        match self {
            Artifact::Image(i) => i.media_type == DOCKER_MANIFEST,
            Artifact::Index(i) => i.kind == IndexKind::DockerList,
        }
    }

    pub fn digest(&self) -> &str {
        match self {
            Artifact::Image(i) => &i.digest,
            Artifact::Index(i) => &i.digest,
        }
    }

    /// Every image manifest in the artifact (itself, or the index's children).
    pub fn images(&self) -> Vec<&Image> {
        match self {
            Artifact::Image(i) => vec![i],
            Artifact::Index(i) => i.children.iter().collect(),
        }
    }

    /// Every non-manifest blob (configs and layers), deduplicated.
    pub fn blobs(&self) -> Vec<BlobRef> {
        let mut v: Vec<BlobRef> = self.images().iter().flat_map(|i| i.blobs()).collect();
        v.sort();
        v.dedup();
        v
    }
}

// ---------------------------------------------------------------- layout

/// An OCI image layout directory being written.
pub struct Layout {
    pub dir: PathBuf,
    refs: Vec<Value>,
}

impl Layout {
    pub fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("create layout dir");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        let layout = Self {
            dir: dir.to_path_buf(),
            refs: Vec::new(),
        };
        layout.write_index();
        layout
    }

    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec_pretty(&index).expect("json"),
        )
        .expect("write index.json");
    }

    pub fn put_blob(&self, data: &[u8]) -> (String, u64) {
        let digest = digest_of(data);
        let path = self.dir.join("blobs/sha256").join(hex_of(&digest));
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        (digest, data.len() as u64)
    }

    /// Writes config, layers and manifest of a single-platform image.
    pub fn image(&self, format: Format, platform: Platform, layers: &[&Layer]) -> Image {
        let (manifest_type, config_type, layer_type) = match format {
            Format::Oci => (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP),
            Format::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP),
        };
        let mut config = json!({
            "architecture": platform.arch,
            "os": platform.os,
            "created": "2024-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
            "history": layers.iter().map(|_| json!({"created_by": "regfsck e2e"})).collect::<Vec<_>>(),
        });
        if let Some(v) = &platform.variant {
            config["variant"] = json!(v);
        }
        let (cd, cs) = self.put_blob(&serde_json::to_vec(&config).expect("json"));
        let config_ref = BlobRef {
            digest: cd,
            size: cs,
            media_type: config_type.into(),
        };
        let layer_refs: Vec<BlobRef> = layers
            .iter()
            .map(|l| {
                let (d, s) = self.put_blob(&l.gz);
                BlobRef {
                    digest: d,
                    size: s,
                    media_type: layer_type.into(),
                }
            })
            .collect();
        let desc =
            |b: &BlobRef| json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size});
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": desc(&config_ref),
            "layers": layer_refs.iter().map(desc).collect::<Vec<_>>(),
        });
        let (md, ms) = self.put_blob(&serde_json::to_vec_pretty(&manifest).expect("json"));
        Image {
            digest: md,
            size: ms,
            media_type: manifest_type.into(),
            platform,
            config: config_ref,
            layers: layer_refs,
        }
    }

    /// Writes an image index / manifest list over already written images.
    pub fn index(&self, kind: IndexKind, children: &[Image]) -> Index {
        let manifests: Vec<Value> = children
            .iter()
            .map(|c| {
                json!({
                    "mediaType": c.media_type,
                    "digest": c.digest,
                    "size": c.size,
                    "platform": c.platform.json(),
                })
            })
            .collect();
        let value = match kind {
            IndexKind::OciIndex => {
                json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
            }
            IndexKind::DockerList => {
                json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": manifests})
            }
            IndexKind::OciIndexWithoutMediaType => {
                json!({"schemaVersion": 2, "manifests": manifests})
            }
        };
        let (d, s) = self.put_blob(&serde_json::to_vec_pretty(&value).expect("json"));
        Index {
            digest: d,
            size: s,
            kind,
            children: children.to_vec(),
        }
    }

    fn blob(&self, digest: &str) -> Vec<u8> {
        let path = self.dir.join("blobs/sha256").join(hex_of(digest));
        std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// Writes `artifact` as a skopeo `dir:` directory (`manifest.json`,
    /// `<hex>.manifest.json` per instance of a list, blobs named by hex).
    ///
    /// containers/image's `oci:` transport resolves only OCI-typed
    /// descriptors of `index.json` by name, so Docker schema2 images and
    /// Docker manifest lists are pushed from a `dir:` copy instead.
    pub fn export_dir(&self, artifact: &Artifact, dest: &Path) {
        std::fs::create_dir_all(dest).expect("create dir: source");
        std::fs::write(dest.join("version"), "Directory Transport Version: 1.1\n")
            .expect("write version");
        std::fs::write(dest.join("manifest.json"), self.blob(artifact.digest()))
            .expect("write manifest.json");
        if let Artifact::Index(index) = artifact {
            for child in &index.children {
                std::fs::write(
                    dest.join(format!("{}.manifest.json", hex_of(&child.digest))),
                    self.blob(&child.digest),
                )
                .expect("write instance manifest");
            }
        }
        for b in artifact.blobs() {
            std::fs::write(dest.join(hex_of(&b.digest)), self.blob(&b.digest)).expect("write blob");
        }
    }

    /// Names `artifact` as `tag` in `index.json` (the `oci:DIR:TAG` reference).
    pub fn tag(&mut self, tag: &str, artifact: &Artifact) {
        let (media_type, size) = match artifact {
            Artifact::Image(i) => (i.media_type.as_str(), i.size),
            Artifact::Index(i) => (i.media_type(), i.size),
        };
        self.refs.push(json!({
            "mediaType": media_type,
            "digest": artifact.digest(),
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        self.write_index();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_reference() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn gzip_is_a_valid_stream() {
        // Checked against gzip(1) when it is on the machine.
        let data = b"hello regfsck\n".repeat(10_000);
        let gz = gzip(&data);
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let Ok(mut child) = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(&gz).expect("write");
        }
        let out = child.wait_with_output().expect("gzip -dc");
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn tar_is_readable_by_tar() {
        let t = tar(&[("a/b.txt", b"hello"), ("c.txt", b"world!")]);
        assert_eq!(t.len() % 512, 0);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.tar");
        std::fs::write(&path, &t).expect("write");
        let Ok(out) = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&path)
            .output()
        else {
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a/b.txt\nc.txt\n");
    }
}
