//! One pass over a registry's storage builds the [`Inventory`] that every check reads.
//!
//! The scan lists directories; it does not stat or read link files where a listing already
//! answered (a `_layers/sha256/<hex>` directory name *is* the digest), so the per-link cost
//! is one directory entry. Repositories are scanned in parallel.

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;

use crate::storage::{BlobEntry, Entry, EntryKind};
use crate::{Digest, Needs, Problem, Storage, StorageError, layout};

/// What one registry holds, as far as the enabled checks need to know.
#[derive(Debug, Default)]
pub struct Inventory {
    /// False when `blobs/sha256` does not exist: then every link would look orphaned.
    pub blob_store_present: bool,
    /// Every blob directory, sorted by digest.
    pub blobs: Vec<BlobEntry>,
    /// Every repository, sorted by name.
    pub repositories: Vec<Repository>,
}

impl Inventory {
    /// The blob directory for `d`, if one exists.
    pub fn blob(&self, d: &Digest) -> Option<&BlobEntry> {
        self.blobs
            .binary_search_by(|b| b.digest.cmp(d))
            .ok()
            .map(|i| &self.blobs[i])
    }

    /// Whether `blobs/sha256/<xx>/<d>/data` exists as a regular file.
    pub fn has_blob_data(&self, d: &Digest) -> bool {
        self.blob(d)
            .and_then(|b| b.data)
            .is_some_and(|m| m.kind == EntryKind::File)
    }

    pub fn repository(&self, name: &str) -> Option<&Repository> {
        self.repositories
            .binary_search_by(|r| r.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.repositories[i])
    }

    /// Layer links over all repositories.
    pub fn layer_link_count(&self) -> usize {
        self.repositories.iter().map(|r| r.layers.len()).sum()
    }
}

#[derive(Debug, Default, Clone)]
pub struct Repository {
    /// `team/app/api`
    pub name: String,
    /// Digests under `_layers/sha256/`, sorted (directory names; the link files are not read).
    pub layers: Vec<Digest>,
    /// Digests under `_manifests/revisions/sha256/`, sorted.
    pub revisions: Vec<Digest>,
    /// Tags, sorted by name (only when a check needs them).
    pub tags: Vec<Tag>,
    /// Upload directory names under `_uploads/` (only when a check needs them).
    pub uploads: Vec<String>,
    /// The revisions whose `link` file the listing saw, sorted: known when the backend
    /// listed files (object stores), `None` when it listed directories (then a check that
    /// needs to know stats the link file).
    pub revision_link_files: Option<Vec<Digest>>,
    /// Likewise for `_layers/sha256/<d>/link`.
    pub layer_link_files: Option<Vec<Digest>>,
}

impl Repository {
    pub fn has_layer(&self, d: &Digest) -> bool {
        self.layers.binary_search(d).is_ok()
    }

    pub fn has_revision(&self, d: &Digest) -> bool {
        self.revisions.binary_search(d).is_ok()
    }

    /// Whether `_manifests/revisions/sha256/<d>/link` exists, when the listing already
    /// knows; `None` when only a stat can tell.
    pub fn revision_link_listed(&self, d: &Digest) -> Option<bool> {
        self.revision_link_files
            .as_ref()
            .map(|files| files.binary_search(d).is_ok())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    /// What `current/link` says.
    pub current: CurrentLink,
    /// Digests under `index/sha256/` (the tag's history).
    pub index: Vec<Digest>,
}

/// The state of a tag's `current/link`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CurrentLink {
    Names(Digest),
    Missing,
    /// Present but not a digest Distribution can parse (the reason).
    Malformed(String),
    /// Could not be read (also reported as a scan problem).
    Unreadable(String),
}

impl CurrentLink {
    pub fn digest(&self) -> Option<Digest> {
        match self {
            CurrentLink::Names(d) => Some(*d),
            _ => None,
        }
    }
}

/// Scans one registry. Everything unreadable or out of place becomes a [`Problem`]; the scan
/// always goes on.
pub fn scan(registry: &str, storage: &dyn Storage, needs: Needs) -> (Inventory, Vec<Problem>) {
    let problem = |e: StorageError| Problem {
        registry: registry.to_string(),
        path: e.path().to_string(),
        message: e.reason(),
    };
    let (blobs, repos) = rayon::join(
        || storage.list_blobs(),
        || match scan_by_keys(storage, needs) {
            Some(scanned) => scanned,
            None => {
                let (found, problems) = discover(storage, layout::REPOSITORIES);
                let scanned = found
                    .into_par_iter()
                    .map(|(name, has)| scan_repository(storage, name, has, needs))
                    .collect();
                (scanned, problems)
            }
        },
    );
    let mut problems: Vec<Problem> = blobs.problems.into_iter().map(problem).collect();
    let (scanned, discover_problems): (Vec<(Repository, Vec<StorageError>)>, _) = repos;
    problems.extend(discover_problems.into_iter().map(problem));

    let mut repositories = Vec::with_capacity(scanned.len());
    for (repo, errs) in scanned {
        repositories.push(repo);
        problems.extend(errs.into_iter().map(problem));
    }
    repositories.sort_by(|a, b| a.name.cmp(&b.name));
    (
        Inventory {
            blob_store_present: blobs.store_present,
            blobs: blobs.blobs,
            repositories,
        },
        problems,
    )
}

/// What one recursive listing of `repositories/` says about one repository.
#[derive(Debug, Default)]
struct KeyedRepo {
    layers: BTreeSet<Digest>,
    layer_links: BTreeSet<Digest>,
    revisions: BTreeSet<Digest>,
    revision_links: BTreeSet<Digest>,
    /// Tag name → whether `current/link` exists, and its history digests.
    tags: BTreeMap<String, (bool, BTreeSet<Digest>)>,
    uploads: BTreeSet<String>,
}

/// Builds the repositories from one recursive listing of `repositories/` (object stores):
/// every fact a directory listing gives is in the keys, with no request per repository.
/// `None` when the backend does not offer such a listing.
type Scanned = (Vec<(Repository, Vec<StorageError>)>, Vec<StorageError>);

fn scan_by_keys(storage: &dyn Storage, needs: Needs) -> Option<Scanned> {
    let mut repos: BTreeMap<String, KeyedRepo> = BTreeMap::new();
    let mut odd_dirs: BTreeSet<String> = BTreeSet::new();
    let mut visit = |rel: &str, _meta: crate::storage::FileMeta| {
        let parts: Vec<&str> = rel.split('/').collect();
        let Some(at) = parts.iter().position(|p| p.starts_with('_')) else {
            return; // a file among repository name directories: nothing the registry reads
        };
        if at == 0 || !RESERVED_PARTS.contains(&parts[at]) {
            return; // `_x` never starts a repository name: the directory walk skips it too
        }
        let repo = repos.entry(parts[..at].join("/")).or_default();
        let dir_of = |n: usize| format!("{}/{}", layout::REPOSITORIES, parts[..at + n].join("/"));
        let mut digest = |hex: &str, depth: usize| {
            let d = Digest::from_hex(hex);
            if d.is_none() {
                odd_dirs.insert(dir_of(depth));
            }
            d
        };
        match &parts[at..] {
            ["_layers", "sha256", hex, rest @ ..]
                if !rest.is_empty() && needs.contains(Needs::LAYERS) =>
            {
                if let Some(d) = digest(hex, 3) {
                    repo.layers.insert(d);
                    if rest == ["link"] {
                        repo.layer_links.insert(d);
                    }
                }
            }
            ["_manifests", "revisions", "sha256", hex, rest @ ..]
                if !rest.is_empty() && needs.contains(Needs::REVISIONS) =>
            {
                if let Some(d) = digest(hex, 4) {
                    repo.revisions.insert(d);
                    if rest == ["link"] {
                        repo.revision_links.insert(d);
                    }
                }
            }
            ["_manifests", "tags", tag, rest @ ..] if needs.contains(Needs::TAGS) => {
                let entry = repo.tags.entry((*tag).to_string()).or_default();
                match rest {
                    ["current", "link"] => entry.0 = true,
                    ["index", "sha256", hex, _, ..] => {
                        if let Some(d) = digest(hex, 5) {
                            entry.1.insert(d);
                        }
                    }
                    _ => {}
                }
            }
            ["_uploads", id, _, ..] if needs.contains(Needs::UPLOADS) => {
                repo.uploads.insert((*id).to_string());
            }
            _ => {}
        }
    };
    let listed = storage.walk_files(layout::REPOSITORIES, &mut visit)?;
    let mut shared: Vec<StorageError> = odd_dirs
        .into_iter()
        .map(|p| odd(&p, "not a sha256 digest directory (ignored)"))
        .collect();
    if let Err(e) = listed {
        shared.push(e);
    }
    let out: Vec<(Repository, Vec<StorageError>)> = repos
        .into_par_iter()
        .map(|(name, k)| {
            let mut problems = Vec::new();
            let tags = k
                .tags
                .into_iter()
                .map(|(tag, (has_current, index))| Tag {
                    current: if has_current {
                        current_link(storage, &name, &tag, &mut problems)
                    } else {
                        CurrentLink::Missing
                    },
                    name: tag,
                    index: index.into_iter().collect(),
                })
                .collect();
            let repo = Repository {
                layers: k.layers.into_iter().collect(),
                revisions: k.revisions.into_iter().collect(),
                revision_link_files: Some(k.revision_links.into_iter().collect()),
                layer_link_files: Some(k.layer_links.into_iter().collect()),
                tags,
                uploads: k.uploads.into_iter().collect(),
                name,
            };
            (repo, problems)
        })
        .collect();
    Some((out, shared))
}

const RESERVED_PARTS: [&str; 3] = layout::RESERVED;

/// Which of `_layers`, `_manifests`, `_uploads` a repository directory has.
#[derive(Debug, Clone, Copy, Default)]
struct Present {
    layers: bool,
    manifests: bool,
    uploads: bool,
}

type Discovered = (Vec<(String, Present)>, Vec<StorageError>);

/// Finds repositories below `dir`: a directory with `_layers`, `_manifests` or `_uploads`.
/// Repository names nest (`team/app` and `team/app/api` may both be repositories).
fn discover(storage: &dyn Storage, dir: &str) -> Discovered {
    let entries = match storage.list_dir(dir) {
        Ok(Some(e)) => e,
        Ok(None) => return (Vec::new(), Vec::new()),
        Err(e) => return (Vec::new(), vec![e]),
    };
    let mut present = Present::default();
    let mut subdirs = Vec::new();
    let mut problems = Vec::new();
    for entry in entries {
        let path = format!("{dir}/{}", entry.name);
        match (entry.name.as_str(), entry.kind) {
            (_, _) if !entry.utf8 => problems.push(odd(&path, "name is not UTF-8 (skipped)")),
            ("_layers", EntryKind::Dir) => present.layers = true,
            ("_manifests", EntryKind::Dir) => present.manifests = true,
            ("_uploads", EntryKind::Dir) => present.uploads = true,
            (_, EntryKind::Dir) if !entry.name.starts_with('_') => subdirs.push(path),
            (_, EntryKind::Symlink) => {
                problems.push(odd(&path, "symlink in the repository tree (not followed)"))
            }
            _ => {}
        }
    }
    let (mut repos, more): Discovered =
        subdirs.par_iter().map(|sub| discover(storage, sub)).reduce(
            || (Vec::new(), Vec::new()),
            |mut a, b| {
                a.0.extend(b.0);
                a.1.extend(b.1);
                a
            },
        );
    problems.extend(more);
    if (present.layers || present.manifests || present.uploads)
        && let Some(name) = dir
            .strip_prefix(layout::REPOSITORIES)
            .and_then(|n| n.strip_prefix('/'))
    {
        repos.push((name.to_string(), present));
    }
    (repos, problems)
}

fn odd(path: &str, reason: &str) -> StorageError {
    StorageError::Refused {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

fn scan_repository(
    storage: &dyn Storage,
    name: String,
    has: Present,
    needs: Needs,
) -> (Repository, Vec<StorageError>) {
    let mut problems = Vec::new();
    let mut repo = Repository {
        name,
        ..Repository::default()
    };
    if has.layers && needs.contains(Needs::LAYERS) {
        repo.layers = digest_dirs(storage, &layout::layers_dir(&repo.name), &mut problems);
    }
    if has.manifests && needs.contains(Needs::REVISIONS) {
        repo.revisions = digest_dirs(storage, &layout::revisions_dir(&repo.name), &mut problems);
    }
    if has.manifests && needs.contains(Needs::TAGS) {
        repo.tags = tags(storage, &repo.name, &mut problems);
    }
    if has.uploads && needs.contains(Needs::UPLOADS) {
        let dir = layout::uploads_dir(&repo.name);
        repo.uploads = list(storage, &dir, &mut problems)
            .into_iter()
            .filter(|e| e.kind == EntryKind::Dir && e.utf8)
            .map(|e| e.name)
            .collect();
        repo.uploads.sort();
    }
    (repo, problems)
}

fn list(storage: &dyn Storage, dir: &str, problems: &mut Vec<StorageError>) -> Vec<Entry> {
    match storage.list_dir(dir) {
        Ok(e) => e.unwrap_or_default(),
        Err(e) => {
            problems.push(e);
            Vec::new()
        }
    }
}

/// The digests named by the subdirectories of `dir`; anything else there is a problem.
fn digest_dirs(storage: &dyn Storage, dir: &str, problems: &mut Vec<StorageError>) -> Vec<Digest> {
    let entries = list(storage, dir, problems);
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        match Digest::from_hex(&entry.name) {
            Some(d) if entry.kind == EntryKind::Dir && entry.utf8 => out.push(d),
            Some(_) => problems.push(odd(
                &format!("{dir}/{}", entry.name),
                &format!("expected a directory, found a {:?} (ignored)", entry.kind).to_lowercase(),
            )),
            None => problems.push(odd(
                &format!("{dir}/{}", entry.name),
                "not a sha256 digest directory (ignored)",
            )),
        }
    }
    out.sort_unstable();
    out
}

/// Parses a link file's content strictly, as Distribution's `digest.Parse` does:
/// `sha256:<64 lowercase hex>` and nothing else (not even a trailing newline).
pub fn parse_link(content: &[u8]) -> Result<Digest, String> {
    let text = std::str::from_utf8(content).map_err(|_| "link is not UTF-8".to_string())?;
    if text.is_empty() {
        return Err("link file is empty".into());
    }
    Digest::parse(text).ok_or_else(|| {
        let shown: String = text.chars().take(80).collect();
        format!("link does not hold a sha256 digest: {shown:?}")
    })
}

/// Reads a link file: `Ok(None)` when it does not exist.
pub fn read_link(
    storage: &dyn Storage,
    path: &str,
) -> Result<Option<Result<Digest, String>>, StorageError> {
    Ok(storage.read(path, 1024)?.map(|c| parse_link(&c)))
}

/// Reads a tag's `current/link`.
fn current_link(
    storage: &dyn Storage,
    repo: &str,
    tag: &str,
    problems: &mut Vec<StorageError>,
) -> CurrentLink {
    match read_link(storage, &layout::tag_current_link(repo, tag)) {
        Ok(Some(Ok(d))) => CurrentLink::Names(d),
        Ok(Some(Err(why))) => CurrentLink::Malformed(why),
        Ok(None) => CurrentLink::Missing,
        // A link is 71 bytes: past the read limit it is garbage, not an I/O failure.
        Err(StorageError::TooLarge { limit, .. }) => {
            CurrentLink::Malformed(format!("link file is larger than {limit} bytes"))
        }
        Err(err) => {
            let why = err.reason();
            problems.push(err);
            CurrentLink::Unreadable(why)
        }
    }
}

fn tags(storage: &dyn Storage, repo: &str, problems: &mut Vec<StorageError>) -> Vec<Tag> {
    let dir = layout::tags_dir(repo);
    let mut tags: Vec<Tag> = list(storage, &dir, problems)
        .into_iter()
        .filter(|e| e.kind == EntryKind::Dir && e.utf8)
        .map(|e| {
            let current = current_link(storage, repo, &e.name, problems);
            let index = digest_dirs(storage, &format!("{dir}/{}/index/sha256", e.name), problems);
            Tag {
                name: e.name,
                current,
                index,
            }
        })
        .collect();
    tags.sort_by(|a, b| a.name.cmp(&b.name));
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FsStorage;

    fn hex(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn touch(root: &std::path::Path, rel: &str, content: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    #[test]
    fn finds_nested_repositories_and_their_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        let v2 = layout::REPOSITORIES;
        touch(
            r,
            &format!("{v2}/team/app/_layers/sha256/{}/link", hex(1)),
            "",
        );
        touch(
            r,
            &format!("{v2}/team/app/api/_layers/sha256/{}/link", hex(2)),
            "",
        );
        touch(
            r,
            &format!(
                "{v2}/team/app/api/_manifests/revisions/sha256/{}/link",
                hex(3)
            ),
            "",
        );
        touch(
            r,
            &format!("{v2}/team/app/api/_layers/sha256/garbage/link"),
            "",
        );
        touch(r, &format!("{v2}/lonely/README"), "");
        touch(r, &format!("{}/01/{}/data", layout::BLOBS, hex(1)), "x");
        let (inv, problems) = scan(
            "r",
            &FsStorage::new(r),
            Needs::LAYERS.with(Needs::REVISIONS),
        );
        let names: Vec<_> = inv.repositories.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["team/app", "team/app/api"]);
        let api = inv.repository("team/app/api").expect("repo");
        assert_eq!(api.layers, [Digest::from_hex(&hex(2)).expect("hex")]);
        assert_eq!(api.revisions, [Digest::from_hex(&hex(3)).expect("hex")]);
        assert!(inv.has_blob_data(&Digest::from_hex(&hex(1)).expect("hex")));
        assert!(!inv.has_blob_data(&Digest::from_hex(&hex(2)).expect("hex")));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].path.ends_with("_layers/sha256/garbage"));
    }

    #[test]
    fn parses_links_strictly() {
        let d = hex(7);
        assert_eq!(
            parse_link(format!("sha256:{d}").as_bytes()).map(|d| d.hex()),
            Ok(d.clone())
        );
        assert!(
            parse_link(format!("sha256:{d}\n").as_bytes()).is_err(),
            "go-digest rejects a trailing newline"
        );
        assert!(parse_link(b"").is_err());
        assert!(parse_link(b"\xff\xfe").is_err());
        assert!(parse_link(d.as_bytes()).is_err());
        assert!(parse_link(format!("sha256:{d} ").as_bytes()).is_err());
    }

    /// Delegates to a real tree, but answers "permission denied" for one directory and
    /// "gone" for another, as a live registry can mid-scan.
    #[derive(Debug)]
    struct Faulty {
        inner: FsStorage,
        denied: String,
        vanished: String,
    }

    impl Storage for Faulty {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn list_dir(&self, path: &str) -> Result<Option<Vec<Entry>>, StorageError> {
            if path == self.denied {
                return Err(StorageError::io(
                    path,
                    std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                ));
            }
            if path == self.vanished {
                return Ok(None);
            }
            self.inner.list_dir(path)
        }
        fn stat(&self, path: &str) -> Result<Option<crate::storage::FileMeta>, StorageError> {
            self.inner.stat(path)
        }
        fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError> {
            self.inner.read(path, limit)
        }
        fn open(&self, path: &str) -> Result<Option<Box<dyn std::io::Read + Send>>, StorageError> {
            self.inner.open(path)
        }
        fn remove_dir_all(&self, path: &str) -> Result<(), StorageError> {
            self.inner.remove_dir_all(path)
        }
        fn create_new(&self, path: &str, content: &[u8]) -> Result<(), StorageError> {
            self.inner.create_new(path, content)
        }
    }

    #[test]
    fn unreadable_and_vanishing_directories_are_problems_and_the_scan_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        let v2 = layout::REPOSITORIES;
        for repo in ["a", "b", "c"] {
            touch(
                r,
                &format!("{v2}/{repo}/_layers/sha256/{}/link", hex(1)),
                "",
            );
        }
        touch(r, &format!("{}/01/{}/data", layout::BLOBS, hex(1)), "x");
        let storage = Faulty {
            inner: FsStorage::new(r),
            denied: layout::layers_dir("a"),
            vanished: layout::layers_dir("b"),
        };
        let (inv, problems) = scan("r", &storage, Needs::LAYERS);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, layout::layers_dir("a"));
        assert!(
            problems[0]
                .message
                .to_lowercase()
                .contains("permission denied"),
            "{problems:?}"
        );
        assert_eq!(inv.repository("c").map(|c| c.layers.len()), Some(1));
        assert_eq!(inv.repository("b").map(|b| b.layers.len()), Some(0));
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_and_non_utf8_names_are_reported_never_followed() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        let v2 = layout::REPOSITORIES;
        touch(
            outside.path(),
            &format!("evil/_layers/sha256/{}/link", hex(9)),
            "",
        );
        touch(r, &format!("{v2}/ok/_layers/sha256/{}/link", hex(1)), "");
        std::os::unix::fs::symlink(outside.path().join("evil"), r.join(format!("{v2}/evil")))
            .expect("symlink");
        std::os::unix::fs::symlink(
            outside.path(),
            r.join(format!("{}/{}", layout::layers_dir("ok"), hex(2))),
        )
        .expect("symlink");
        let bad = std::ffi::OsStr::from_bytes(b"caf\xe9");
        std::fs::create_dir_all(r.join(v2).join(bad).join("_layers")).expect("mkdir");
        let (inv, problems) = scan("r", &FsStorage::new(r), Needs::LAYERS);
        let names: Vec<_> = inv.repositories.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["ok"]);
        assert_eq!(
            inv.repositories[0].layers.len(),
            1,
            "the symlinked digest dir is not a link"
        );
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(paths.iter().any(|p| p.ends_with("/evil")), "{paths:?}");
        assert!(paths.iter().any(|p| p.ends_with(&hex(2))), "{paths:?}");
        assert!(paths.iter().any(|p| p.contains("caf")), "{paths:?}");
    }

    /// A file system read the way an object store answers: one recursive listing of files.
    #[derive(Debug)]
    struct Keyed(FsStorage);

    impl Storage for Keyed {
        fn location(&self) -> String {
            self.0.location()
        }
        fn list_dir(&self, path: &str) -> Result<Option<Vec<Entry>>, StorageError> {
            self.0.list_dir(path)
        }
        fn stat(&self, path: &str) -> Result<Option<crate::storage::FileMeta>, StorageError> {
            self.0.stat(path)
        }
        fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError> {
            self.0.read(path, limit)
        }
        fn open(&self, path: &str) -> Result<Option<Box<dyn std::io::Read + Send>>, StorageError> {
            self.0.open(path)
        }
        fn remove_dir_all(&self, path: &str) -> Result<(), StorageError> {
            self.0.remove_dir_all(path)
        }
        fn create_new(&self, path: &str, content: &[u8]) -> Result<(), StorageError> {
            self.0.create_new(path, content)
        }
        fn walk_files(
            &self,
            dir: &str,
            visit: &mut dyn FnMut(&str, crate::storage::FileMeta),
        ) -> Option<Result<(), StorageError>> {
            let base = self.0.root().join(dir);
            for entry in walkdir::WalkDir::new(&base).follow_links(false) {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => return Some(Err(StorageError::io(dir, e.into()))),
                };
                if !entry.file_type().is_file() {
                    continue;
                }
                let rel = entry.path().strip_prefix(&base).expect("below base");
                let meta = crate::storage::FileMeta {
                    size: 0,
                    modified: None,
                    kind: EntryKind::File,
                };
                visit(&rel.to_string_lossy(), meta);
            }
            Some(Ok(()))
        }
    }

    #[test]
    fn a_recursive_key_listing_builds_the_same_inventory_as_the_directory_walk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        let v2 = layout::REPOSITORIES;
        let link = |d: u8| format!("sha256:{}", hex(d));
        touch(
            r,
            &format!("{v2}/team/app/_layers/sha256/{}/link", hex(1)),
            &link(1),
        );
        touch(
            r,
            &format!("{v2}/team/app/api/_layers/sha256/{}/link", hex(2)),
            &link(2),
        );
        touch(
            r,
            &format!(
                "{v2}/team/app/api/_manifests/revisions/sha256/{}/link",
                hex(3)
            ),
            &link(3),
        );
        // A revision directory with something but no link file.
        touch(
            r,
            &format!(
                "{v2}/team/app/api/_manifests/revisions/sha256/{}/junk",
                hex(4)
            ),
            "",
        );
        touch(
            r,
            &format!("{v2}/team/app/api/_manifests/tags/1.0/current/link"),
            &link(3),
        );
        touch(
            r,
            &format!(
                "{v2}/team/app/api/_manifests/tags/1.0/index/sha256/{}/link",
                hex(3)
            ),
            &link(3),
        );
        touch(
            r,
            &format!(
                "{v2}/team/app/api/_manifests/tags/old/index/sha256/{}/link",
                hex(5)
            ),
            &link(5),
        );
        touch(
            r,
            &format!("{v2}/team/app/api/_uploads/6f1c/startedat"),
            "2026-01-01T00:00:00Z",
        );
        touch(
            r,
            &format!("{v2}/team/app/api/_layers/sha256/not-hex/link"),
            "",
        );
        touch(
            r,
            &format!("{v2}/team/_hidden/_layers/sha256/{}/link", hex(6)),
            &link(6),
        );
        touch(r, &format!("{}/01/{}/data", layout::BLOBS, hex(1)), "x");
        let all = Needs::LAYERS
            .with(Needs::REVISIONS)
            .with(Needs::TAGS)
            .with(Needs::UPLOADS);
        let (walked, walked_problems) = scan("r", &FsStorage::new(r), all);
        let (keyed, keyed_problems) = scan("r", &Keyed(FsStorage::new(r)), all);
        let strip = |inv: &Inventory| -> Vec<Repository> {
            inv.repositories
                .iter()
                .cloned()
                .map(|mut r| {
                    r.revision_link_files = None;
                    r.layer_link_files = None;
                    r
                })
                .collect()
        };
        assert_eq!(
            format!("{:?}", strip(&walked)),
            format!("{:?}", strip(&keyed))
        );
        assert_eq!(walked.repositories.len(), 2);
        assert_eq!(walked_problems, keyed_problems);
        assert_eq!(walked_problems.len(), 1, "{walked_problems:?}");
        let api = keyed.repository("team/app/api").expect("api");
        let d3 = Digest::from_hex(&hex(3)).expect("hex");
        let d4 = Digest::from_hex(&hex(4)).expect("hex");
        assert_eq!(api.revision_link_listed(&d3), Some(true));
        assert_eq!(api.revision_link_listed(&d4), Some(false));
        assert_eq!(
            walked
                .repository("team/app/api")
                .expect("api")
                .revision_link_listed(&d3),
            None
        );
    }
}
