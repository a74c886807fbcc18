//! Manifests, image indexes, and the per-run cache that reads each manifest blob once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};

use crate::{Digest, Inventory, Storage, layout};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Distribution refuses manifests above 4 MiB; anything larger in the blob store is not one
/// it accepted, and reading it whole would let one file exhaust memory.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// A string a manifest repeats across thousands of blobs (media types, platform names): the
/// well-known ones are kept as `&'static str`, so a parsed manifest allocates only for the
/// rare other ones.
pub type Name = Cow<'static, str>;

const KNOWN_NAMES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    OCI_INDEX,
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.oci.empty.v1+json",
    "application/vnd.in-toto+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    DOCKER_MANIFEST_LIST,
    "application/vnd.docker.container.image.v1+json",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "linux",
    "windows",
    "unknown",
    "amd64",
    "arm64",
    "arm",
    "386",
    "ppc64le",
    "s390x",
    "riscv64",
    "mips64le",
    "v5",
    "v6",
    "v7",
    "v8",
];

fn name(s: String) -> Name {
    match KNOWN_NAMES.iter().find(|k| **k == s) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(s),
    }
}

fn opt_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Name>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(name))
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default, deserialize_with = "opt_name")]
    pub os: Option<Name>,
    #[serde(default, deserialize_with = "opt_name")]
    pub architecture: Option<Name>,
    #[serde(default, deserialize_with = "opt_name")]
    pub variant: Option<Name>,
}

impl std::fmt::Display for Platform {
    /// `os/architecture[/variant]`, with `?` for a missing part.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let part = |p: &Option<Name>| p.as_deref().unwrap_or("?").to_string();
        write!(f, "{}/{}", part(&self.os), part(&self.architecture))?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A digest as a manifest writes it: 32 bytes when it is a well-formed sha256 digest (nearly
/// always), else the text as written (another algorithm, or garbage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Sha256(Digest),
    Other(Box<str>),
}

impl Reference {
    pub fn parse(text: &str) -> Self {
        match Digest::parse(text) {
            Some(d) => Reference::Sha256(d),
            None => Reference::Other(text.into()),
        }
    }

    /// The digest when it is a well-formed sha256 digest.
    pub fn sha256(&self) -> Option<Digest> {
        match self {
            Reference::Sha256(d) => Some(*d),
            Reference::Other(_) => None,
        }
    }

    /// Whether it claims the sha256 algorithm (well-formed or not): Distribution stores only
    /// sha256 blobs, so another algorithm is simply not in this blob store.
    pub fn claims_sha256(&self) -> bool {
        match self {
            Reference::Sha256(_) => true,
            Reference::Other(text) => text.starts_with("sha256:"),
        }
    }
}

impl std::fmt::Display for Reference {
    /// As written in the manifest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Sha256(d) => write!(f, "{d}"),
            Reference::Other(text) => f.write_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(d)?;
        Ok(Reference::parse(&text))
    }
}

/// Layers clients fetch from the URLs in the manifest, never from the registry: Distribution
/// does not require them to be stored.
pub const FOREIGN_LAYERS: [&str; 4] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// What a blob is to the manifest that references it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Config,
    /// A layer clients pull from the registry.
    Layer,
    /// A layer of a [foreign media type](FOREIGN_LAYERS): pulled from elsewhere.
    ForeignLayer,
    /// An OCI artifact manifest's `blobs`.
    ArtifactBlob,
    /// A Docker schema 1 `fsLayers[].blobSum`.
    Schema1Layer,
}

/// A child of an image index: the manifest it names and the platform it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub digest: Reference,
    pub platform: Option<Arc<Platform>>,
}

impl Child {
    /// The digest when it is a well-formed sha256 digest.
    pub fn sha256(&self) -> Option<Digest> {
        self.digest.sha256()
    }
}

/// What the checks read of a manifest or index; everything else is dropped when it is
/// parsed. Parsed manifests are kept for a whole registry's run when several checks read
/// them, 100,000s of them on a large registry, so a blob reference is its role and 32 bytes
/// (33 in all), and media types and sizes are not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    index: bool,
    /// Every well-formed sha256 blob reference, in the order written: config, layers,
    /// artifact blobs, schema 1 layers.
    blobs: Box<[(Role, Digest)]>,
    /// The rest, as written (another algorithm, or garbage): nearly always empty.
    odd: Box<[(Role, Box<str>)]>,
    /// An index's children (empty for anything else).
    children: Box<[Child]>,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        // serde would read a struct from a JSON array in field order; a manifest is an object.
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            use serde::de::Error as _;
            return Err(serde_json::Error::custom("a manifest is a JSON object"));
        }
        serde_json::from_slice::<Raw>(bytes).map(Raw::compact)
    }

    /// An OCI image index or Docker manifest list. OCI lets an index omit `mediaType`: then
    /// its `manifests` array is what makes it an index.
    pub fn is_index(&self) -> bool {
        self.index
    }

    /// Whether the manifest has a config descriptor (every image manifest has one).
    pub fn has_config(&self) -> bool {
        let config = |role: &Role| *role == Role::Config;
        self.blobs.iter().any(|(r, _)| config(r)) || self.odd.iter().any(|(r, _)| config(r))
    }

    /// Every blob the manifest references, with its role: the well-formed sha256 ones in the
    /// order written, then the others. Index children and `subject` are not blobs it needs
    /// (see [`Manifest::children`]).
    pub fn references(&self) -> impl Iterator<Item = (Role, Reference)> + '_ {
        let sha256 = self.blobs.iter().map(|(r, d)| (*r, Reference::Sha256(*d)));
        let odd = self
            .odd
            .iter()
            .map(|(r, t)| (*r, Reference::Other(t.clone())));
        sha256.chain(odd)
    }

    /// The blob digests an image or artifact manifest needs: config, layers (foreign ones
    /// too), artifact blobs and schema 1 layers.
    pub fn blob_references(&self) -> impl Iterator<Item = Reference> + '_ {
        self.references().map(|(_, r)| r)
    }

    /// The children of an index (empty for anything else).
    pub fn children(&self) -> &[Child] {
        &self.children
    }
}

/// A manifest as written, as far as the checks read it: what [`Manifest::parse`] reads
/// before keeping only the compact part.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    /// Read so that a wrong type makes the manifest malformed.
    #[serde(default, rename = "schemaVersion")]
    _schema_version: Option<i64>,
    #[serde(default, deserialize_with = "opt_name")]
    media_type: Option<Name>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    /// OCI artifacts: the manifest this one refers to (signatures, SBOMs). Not a blob the
    /// manifest needs; read so that a malformed one makes the manifest malformed.
    #[serde(default, rename = "subject")]
    _subject: Option<RawDescriptor>,
    /// OCI artifact manifests list their content here.
    #[serde(default)]
    blobs: Option<Vec<RawDescriptor>>,
    /// Docker schema 1: layers as `{"blobSum": "sha256:…"}`.
    #[serde(default)]
    fs_layers: Option<Vec<FsLayer>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default, deserialize_with = "opt_name")]
    media_type: Option<Name>,
    digest: Reference,
    #[serde(default, deserialize_with = "opt_platform")]
    platform: Option<Arc<Platform>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FsLayer {
    blob_sum: Reference,
}

/// The platforms nearly every index names, each allocated once for the whole run: a
/// registry's indexes list 100,000s of children, a handful of platforms between them.
static COMMON_PLATFORMS: LazyLock<Box<[Arc<Platform>]>> = LazyLock::new(|| {
    const COMMON: &[(&str, &str, Option<&str>)] = &[
        ("linux", "amd64", None),
        ("linux", "arm64", None),
        ("linux", "arm64", Some("v8")),
        ("linux", "arm", Some("v5")),
        ("linux", "arm", Some("v6")),
        ("linux", "arm", Some("v7")),
        ("linux", "386", None),
        ("linux", "ppc64le", None),
        ("linux", "s390x", None),
        ("linux", "riscv64", None),
        ("linux", "mips64le", None),
        ("windows", "amd64", None),
        // Attestation manifests (buildkit's provenance and SBOMs).
        ("unknown", "unknown", None),
    ];
    COMMON
        .iter()
        .map(|(os, arch, variant)| {
            Arc::new(Platform {
                os: Some(name((*os).to_string())),
                architecture: Some(name((*arch).to_string())),
                variant: variant.map(|v| name(v.to_string())),
            })
        })
        .collect()
});

fn opt_platform<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<Platform>>, D::Error> {
    Ok(Option::<Platform>::deserialize(d)?.map(|p| {
        COMMON_PLATFORMS
            .iter()
            .find(|c| ***c == p)
            .map_or_else(|| Arc::new(p), Arc::clone)
    }))
}

impl Raw {
    fn compact(self) -> Manifest {
        let index = match self.media_type.as_deref() {
            Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => true,
            Some(_) => false,
            None => self.manifests.is_some(),
        };
        let layer = |d: RawDescriptor| {
            let foreign = d
                .media_type
                .as_deref()
                .is_some_and(|m| FOREIGN_LAYERS.contains(&m));
            let role = if foreign {
                Role::ForeignLayer
            } else {
                Role::Layer
            };
            (role, d.digest)
        };
        let references = self
            .config
            .map(|c| (Role::Config, c.digest))
            .into_iter()
            .chain(self.layers.into_iter().flatten().map(layer))
            .chain(
                self.blobs
                    .into_iter()
                    .flatten()
                    .map(|b| (Role::ArtifactBlob, b.digest)),
            )
            .chain(
                self.fs_layers
                    .into_iter()
                    .flatten()
                    .map(|l| (Role::Schema1Layer, l.blob_sum)),
            );
        let (mut blobs, mut odd) = (Vec::new(), Vec::new());
        for (role, reference) in references {
            match reference {
                Reference::Sha256(d) => blobs.push((role, d)),
                Reference::Other(text) => odd.push((role, text)),
            }
        }
        let children = match (self.manifests, index) {
            (Some(m), true) => m
                .into_iter()
                .map(|d| Child {
                    digest: d.digest,
                    platform: d.platform,
                })
                .collect(),
            _ => Box::default(),
        };
        Manifest {
            index,
            blobs: blobs.into_boxed_slice(),
            odd: odd.into_boxed_slice(),
            children,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("blob data is missing")]
    Missing,
    #[error("cannot read: {0}")]
    Unreadable(String),
    #[error("not a manifest: {0}")]
    Malformed(String),
}

type Slot = Arc<OnceLock<Result<Arc<Manifest>, ManifestError>>>;

/// A parsed manifest from [`ManifestCache::get`]: borrowed from the cache, or shared.
#[derive(Debug, Clone)]
pub enum Parsed<'c> {
    Kept(&'c Manifest),
    Shared(Arc<Manifest>),
}

impl std::ops::Deref for Parsed<'_> {
    type Target = Manifest;

    fn deref(&self) -> &Manifest {
        match self {
            Parsed::Kept(m) => m,
            Parsed::Shared(m) => m,
        }
    }
}

/// Reads and parses each manifest blob at most once per registry scan, shared by all checks.
///
/// Parsed manifests are much of what a run holds, so they are kept only when more than one
/// check reads them ([`ManifestCache::shared`]); a single reader gets each one read and
/// parsed on demand, and nothing is retained. (Keeping only a window of recent ones was
/// measured and rejected: the checks do not walk the revisions in one order, and at a
/// million links 2.4 times as many reads made the run 1.7 times slower.)
///
/// The manifests checks read are nearly all revisions of the registry's repositories: those
/// are kept in a table sized once, in digest order (a digest and a slot each, found by binary
/// search, without a lock); any other (an index child no repository has a revision of) in a
/// map.
#[derive(Debug)]
pub struct ManifestCache<'s> {
    storage: &'s dyn Storage,
    retain: bool,
    /// Sorted, each once.
    revisions: Box<[Digest]>,
    /// `kept[i]` is the manifest of `revisions[i]`, once read.
    kept: Box<[OnceLock<Result<Manifest, ManifestError>>]>,
    others: Mutex<HashMap<Digest, Slot>>,
    reads: AtomicU64,
}

impl<'s> ManifestCache<'s> {
    /// A cache that keeps every manifest it parsed for the run.
    pub fn new(storage: &'s dyn Storage) -> Self {
        Self::shared(storage, true)
    }

    /// `retain`: keep parsed manifests (several checks read them) or not (one does).
    pub fn shared(storage: &'s dyn Storage, retain: bool) -> Self {
        Self::for_revisions(storage, retain, Vec::new())
    }

    /// As [`ManifestCache::shared`], with a table for the revisions of every repository of
    /// `inventory`: the manifests the checks ask for.
    pub fn for_inventory(storage: &'s dyn Storage, retain: bool, inventory: &Inventory) -> Self {
        if !retain {
            return Self::shared(storage, false); // no table: nothing is kept
        }
        let revisions = inventory
            .repositories
            .iter()
            .flat_map(|r| r.revisions.iter());
        Self::for_revisions(storage, retain, revisions.copied().collect())
    }

    /// As [`ManifestCache::shared`], with a table for `revisions` (the digests the checks
    /// will mostly ask for; in any order, repeats allowed).
    pub fn for_revisions(
        storage: &'s dyn Storage,
        retain: bool,
        mut revisions: Vec<Digest>,
    ) -> Self {
        if !retain {
            revisions = Vec::new();
        }
        revisions.sort_unstable();
        revisions.dedup();
        let kept = revisions.iter().map(|_| OnceLock::new()).collect();
        Self {
            storage,
            retain,
            revisions: revisions.into_boxed_slice(),
            kept,
            others: Mutex::new(HashMap::new()),
            reads: AtomicU64::new(0),
        }
    }

    /// Manifest blobs read from storage so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The parsed manifest stored under `digest` in the blob store.
    pub fn get(&self, digest: &Digest) -> Result<Parsed<'_>, ManifestError> {
        if !self.retain {
            return self.load(digest).map(|m| Parsed::Shared(Arc::new(m)));
        }
        if let Ok(i) = self.revisions.binary_search(digest) {
            return match self.kept[i].get_or_init(|| self.load(digest)) {
                Ok(m) => Ok(Parsed::Kept(m)),
                Err(e) => Err(e.clone()),
            };
        }
        let slot = {
            let mut others = self
                .others
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(others.entry(*digest).or_default())
        };
        let parsed = slot.get_or_init(|| self.load(digest).map(Arc::new));
        parsed.clone().map(Parsed::Shared)
    }

    fn load(&self, digest: &Digest) -> Result<Manifest, ManifestError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let bytes = self
            .storage
            .read(&layout::blob_data(digest), MAX_MANIFEST_BYTES)
            .map_err(|e| ManifestError::Unreadable(e.to_string()))?
            .ok_or(ManifestError::Missing)?;
        Manifest::parse(&bytes).map_err(|e| ManifestError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_manifest_stays_small() {
        // Kept by the 100,000 for a whole registry: see the type's documentation.
        assert_eq!(std::mem::size_of::<(Role, Digest)>(), 33);
        assert_eq!(std::mem::size_of::<Manifest>(), 56);
        let image = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":7,
                "digest":"sha256:0000000000000000000000000000000000000000000000000000000000000001"},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":9,
                "digest":"sha256:0000000000000000000000000000000000000000000000000000000000000002",
                "annotations":{"a":"b"}}]}"#;
        let m = Manifest::parse(image.as_bytes()).expect("parses");
        assert_eq!((m.blobs.len(), m.odd.len(), m.children.len()), (2, 0, 0));
    }

    #[test]
    fn the_cache_reads_each_manifest_once_from_its_table_or_its_map() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = crate::FsStorage::new(dir.path());
        let d = |n: u8| Digest::from_hex(&format!("{n:02x}").repeat(32)).expect("digest");
        let put = |digest: &Digest, body: &str| {
            let path = dir.path().join(layout::blob_data(digest));
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, body).expect("write");
        };
        let image = format!(r#"{{"config":{{"digest":"{}"}},"layers":[]}}"#, d(9));
        put(&d(1), &image);
        put(&d(2), &image);
        put(&d(3), "not json");
        // 1, 3 and 4 (no blob) are revisions, in any order and repeated; 2 and 5 are not.
        let cache = ManifestCache::for_revisions(&storage, true, vec![d(3), d(1), d(4), d(1)]);
        for _ in 0..2 {
            let kept = cache.get(&d(1)).expect("parses");
            assert!(matches!(kept, Parsed::Kept(_)) && kept.has_config());
            let other = cache.get(&d(2)).expect("parses");
            assert!(matches!(other, Parsed::Shared(_)) && *other == *kept);
            assert!(matches!(cache.get(&d(3)), Err(ManifestError::Malformed(_))));
            assert_eq!(cache.get(&d(4)).err(), Some(ManifestError::Missing));
            assert_eq!(cache.get(&d(5)).err(), Some(ManifestError::Missing));
        }
        assert_eq!(cache.reads(), 5, "each once");
        let single = ManifestCache::for_revisions(&storage, false, vec![d(1)]);
        for _ in 0..2 {
            assert!(single.get(&d(1)).expect("parses").has_config());
        }
        assert_eq!(single.reads(), 2, "nothing kept for a single reader");
    }

    #[test]
    fn recognises_indexes_of_every_spelling() {
        let oci = r#"{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let docker = r#"{"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
        let bare = r#"{"schemaVersion":2,"manifests":[{"digest":"sha256:00","platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}"#;
        let image = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:00"},"layers":[]}"#;
        let odd = r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[{"digest":"x"}]}"#;
        for (json, index) in [
            (oci, true),
            (docker, true),
            (bare, true),
            (image, false),
            (odd, false),
        ] {
            let m = Manifest::parse(json.as_bytes()).expect("parses");
            assert_eq!(m.is_index(), index, "{json}");
        }
        let m = Manifest::parse(bare.as_bytes()).expect("parses");
        assert_eq!(m.children().len(), 1);
        let p = m.children()[0].platform.clone().expect("platform");
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(
            Manifest::parse(odd.as_bytes())
                .expect("parses")
                .children()
                .is_empty()
        );
    }

    #[test]
    fn common_platforms_are_shared_and_others_kept_as_written() {
        let index = |platforms: &str| {
            let json = format!(r#"{{"manifests":[{platforms}]}}"#);
            Manifest::parse(json.as_bytes()).expect("parses")
        };
        let child = |p: &str| format!(r#"{{"digest":"sha256:00","platform":{p}}}"#);
        let amd64 = child(r#"{"os":"linux","architecture":"amd64"}"#);
        let riscv = child(r#"{"os":"linux","architecture":"riscv32","variant":"rv32gc"}"#);
        let (a, b) = (index(&amd64), index(&format!("{riscv},{amd64}")));
        let platform = |m: &Manifest, i: usize| {
            let p: &Option<Arc<Platform>> = &m.children()[i].platform;
            p.clone().expect("platform")
        };
        assert!(Arc::ptr_eq(&platform(&a, 0), &platform(&b, 1)));
        assert_eq!(platform(&b, 1).to_string(), "linux/amd64");
        assert_eq!(platform(&b, 0).to_string(), "linux/riscv32/rv32gc");
        // A variant makes another platform, not the common one without it.
        let v8 = index(&child(
            r#"{"os":"linux","architecture":"amd64","variant":"v8"}"#,
        ));
        assert_eq!(platform(&v8, 0).to_string(), "linux/amd64/v8");
        assert!(!Arc::ptr_eq(&platform(&v8, 0), &platform(&a, 0)));
    }

    #[test]
    fn lists_every_blob_a_manifest_needs() {
        let schema1 =
            r#"{"schemaVersion":1,"fsLayers":[{"blobSum":"sha256:aa"},{"blobSum":"sha256:bb"}]}"#;
        let m = Manifest::parse(schema1.as_bytes()).expect("parses");
        let shown =
            |m: &Manifest| -> Vec<String> { m.blob_references().map(|r| r.to_string()).collect() };
        assert_eq!(shown(&m), ["sha256:aa", "sha256:bb"]);
        let artifact = r#"{"config":{"digest":"sha256:c"},"layers":[{"digest":"sha256:l"}],"blobs":[{"digest":"sha256:b"}],"subject":{"digest":"sha256:s"}}"#;
        let m = Manifest::parse(artifact.as_bytes()).expect("parses");
        assert_eq!(shown(&m), ["sha256:c", "sha256:l", "sha256:b"]);
    }

    #[test]
    fn rejects_non_manifests() {
        for bad in [
            "[2, null, [{\"digest\":\"sha256:00\"}]]",
            "[1,2]",
            "not json",
            r#"{"manifests":[1]}"#,
            r#"{"manifests":[{"nodigest":1}]}"#,
        ] {
            assert!(Manifest::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
