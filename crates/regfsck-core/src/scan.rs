//! One pass over a registry's storage builds the [`Inventory`] that every check reads.
//!
//! The scan lists directories; it does not stat or read link files where a listing already
//! answered (a `_layers/sha256/<hex>` directory name *is* the digest), so the per-link cost
//! is one directory entry. Repositories are scanned in parallel.

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;

use crate::storage::{BlobEntry, Entry, EntryKind, LinkState};
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
        self.blob_index(d).map(|i| &self.blobs[i])
    }

    /// Where the blob directory for `d` is in `blobs`, if one exists (for a check that keeps
    /// a flag per blob).
    pub fn blob_index(&self, d: &Digest) -> Option<usize> {
        self.blobs.binary_search_by(|b| b.digest.cmp(d)).ok()
    }

    /// Whether `blobs/sha256/<xx>/<d>/data` exists as a regular file.
    pub fn has_blob_data(&self, d: &Digest) -> bool {
        self.blob(d).is_some_and(|b| b.data_file().is_some())
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
    /// The `link` files in the `layers` directories, as far as the scan looked at them.
    pub layer_links: LinkFacts,
    /// The `link` files in the `revisions` directories.
    pub revision_links: LinkFacts,
}

impl Repository {
    pub fn has_layer(&self, d: &Digest) -> bool {
        self.layers.binary_search(d).is_ok()
    }

    pub fn has_revision(&self, d: &Digest) -> bool {
        self.revisions.binary_search(d).is_ok()
    }
}

/// What the scan learned about the `link` files in a list of digest directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LinkFacts {
    /// Only the directories were listed: no enabled check needs the files.
    #[default]
    Unknown,
    /// Every link file was looked at (`read`: and what it holds compared with its
    /// directory's digest); `odd` holds those that are not fine, sorted by digest.
    Known {
        read: bool,
        odd: Vec<(Digest, LinkState)>,
    },
}

impl LinkFacts {
    /// Whether the link file in the (listed) directory of `d` exists as a regular file:
    /// `None` when the scan did not look, or could not.
    pub fn exists(&self, d: &Digest) -> Option<bool> {
        let LinkFacts::Known { odd, .. } = self else {
            return None;
        };
        let Ok(i) = odd.binary_search_by(|(o, _)| o.cmp(d)) else {
            return Some(true); // fine
        };
        match &odd[i].1 {
            LinkState::Content(_) | LinkState::TooLarge => Some(true),
            LinkState::Missing | LinkState::NotAFile(_) => Some(false),
            LinkState::Unreadable(_) => None,
        }
    }

    /// The links that are not fine, sorted by digest (none when not looked at).
    pub fn odd(&self) -> &[(Digest, LinkState)] {
        match self {
            LinkFacts::Unknown => &[],
            LinkFacts::Known { odd, .. } => odd,
        }
    }

    /// Whether every link's content was read and compared.
    pub fn read(&self) -> bool {
        matches!(self, LinkFacts::Known { read: true, .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    /// What `current/link` says.
    pub current: CurrentLink,
    /// Digests under `index/sha256/` (the tag's history).
    pub index: Vec<Digest>,
    /// The `link` files of the history.
    pub index_links: LinkFacts,
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
    tags: BTreeMap<String, KeyedTag>,
    uploads: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct KeyedTag {
    /// Whether `current/link` exists.
    current: bool,
    index: BTreeSet<Digest>,
    index_links: BTreeSet<Digest>,
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
                    ["current", "link"] => entry.current = true,
                    ["index", "sha256", hex, file, more @ ..] => {
                        if let Some(d) = digest(hex, 5) {
                            entry.index.insert(d);
                            if *file == "link" && more.is_empty() {
                                entry.index_links.insert(d);
                            }
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
            // The keys say which link files exist, for free; reading them costs a GET each.
            let facts = |dir: String,
                         listed: &[Digest],
                         files: &BTreeSet<Digest>,
                         problems: &mut Vec<StorageError>| {
                if link_mode(needs) == Some(true) {
                    return link_facts(storage, &dir, listed, true, problems);
                }
                let missing = listed.iter().filter(|d| !files.contains(d));
                LinkFacts::Known {
                    read: false,
                    odd: missing.map(|d| (*d, LinkState::Missing)).collect(),
                }
            };
            let layers: Vec<Digest> = k.layers.into_iter().collect();
            let revisions: Vec<Digest> = k.revisions.into_iter().collect();
            let layer_links = facts(
                layout::layers_dir(&name),
                &layers,
                &k.layer_links,
                &mut problems,
            );
            let revision_links = facts(
                layout::revisions_dir(&name),
                &revisions,
                &k.revision_links,
                &mut problems,
            );
            let mut tags = Vec::with_capacity(k.tags.len());
            for (tag, t) in k.tags {
                let index: Vec<Digest> = t.index.into_iter().collect();
                let index_links = facts(
                    tag_index_dir(&name, &tag),
                    &index,
                    &t.index_links,
                    &mut problems,
                );
                tags.push(Tag {
                    current: if t.current {
                        current_link(storage, &name, &tag, &mut problems)
                    } else {
                        CurrentLink::Missing
                    },
                    name: tag,
                    index,
                    index_links,
                });
            }
            let repo = Repository {
                layers,
                revisions,
                layer_links,
                revision_links,
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
    let links = link_mode(needs);
    if let Some(read) = links {
        // No directory, no links: that much is known.
        repo.layer_links = LinkFacts::Known { read, odd: vec![] };
        repo.revision_links = LinkFacts::Known { read, odd: vec![] };
    }
    if has.layers && needs.contains(Needs::LAYERS) {
        let dir = layout::layers_dir(&repo.name);
        repo.layers = digest_dirs(storage, &dir, &mut problems);
        if let Some(read) = links {
            repo.layer_links = link_facts(storage, &dir, &repo.layers, read, &mut problems);
        }
    }
    if has.manifests && needs.contains(Needs::REVISIONS) {
        let dir = layout::revisions_dir(&repo.name);
        repo.revisions = digest_dirs(storage, &dir, &mut problems);
        if let Some(read) = links {
            repo.revision_links = link_facts(storage, &dir, &repo.revisions, read, &mut problems);
        }
    }
    if has.manifests && needs.contains(Needs::TAGS) {
        repo.tags = tags(storage, &repo.name, links, &mut problems);
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

fn tag_index_dir(repo: &str, tag: &str) -> String {
    format!("{}/{tag}/index/sha256", layout::tags_dir(repo))
}

/// How the scan looks at link files: not at all (`None`), for existence, or reading them.
fn link_mode(needs: Needs) -> Option<bool> {
    if needs.contains(Needs::LINK_CONTENTS) {
        Some(true)
    } else if needs.contains(Needs::LINK_FILES) {
        Some(false)
    } else {
        None
    }
}

/// Links per parallel task: repositories are scanned in parallel, and a repository with
/// many links is split so that it does not run on one thread.
const LINKS_PER_TASK: usize = 2048;

/// Looks at the `link` file of every directory in `dir` named by `digests` (sorted). What is
/// not a file, or cannot be looked at, is also a problem; when `dir` itself cannot be opened
/// the links stay unknown (and the checks that need them ask again).
fn link_facts(
    storage: &dyn Storage,
    dir: &str,
    digests: &[Digest],
    read: bool,
    problems: &mut Vec<StorageError>,
) -> LinkFacts {
    let chunks: Vec<Result<Vec<(Digest, LinkState)>, StorageError>> = digests
        .par_chunks(LINKS_PER_TASK)
        .map(|chunk| {
            let odd = storage.odd_links(dir, chunk, read)?;
            Ok(odd.into_iter().map(|(i, s)| (chunk[i], s)).collect())
        })
        .collect();
    let mut all = Vec::new();
    for chunk in chunks {
        match chunk {
            Ok(odd) => all.extend(odd),
            Err(e) => {
                problems.push(e);
                return LinkFacts::Unknown;
            }
        }
    }
    for (d, state) in &all {
        let path = || format!("{dir}/{}/link", d.hex());
        match state {
            LinkState::NotAFile(kind) => problems.push(odd(
                &path(),
                &format!("expected a file, found a {kind:?}").to_lowercase(),
            )),
            LinkState::Unreadable(why) => problems.push(odd(&path(), why)),
            _ => {}
        }
    }
    LinkFacts::Known { read, odd: all }
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

fn tags(
    storage: &dyn Storage,
    repo: &str,
    links: Option<bool>,
    problems: &mut Vec<StorageError>,
) -> Vec<Tag> {
    let dir = layout::tags_dir(repo);
    let mut tags: Vec<Tag> = list(storage, &dir, problems)
        .into_iter()
        .filter(|e| e.kind == EntryKind::Dir && e.utf8)
        .map(|e| {
            let current = current_link(storage, repo, &e.name, problems);
            let index_dir = tag_index_dir(repo, &e.name);
            let index = digest_dirs(storage, &index_dir, problems);
            let index_links = match links {
                Some(read) => link_facts(storage, &index_dir, &index, read, problems),
                None => LinkFacts::Unknown,
            };
            Tag {
                name: e.name,
                current,
                index,
                index_links,
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
    fn link_facts_say_what_every_link_file_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        let layers = layout::layers_dir("app");
        let d = |n: u8| Digest::from_hex(&hex(n)).expect("hex");
        let at = |n: u8| format!("{layers}/{}/link", hex(n));
        touch(r, &at(1), &format!("sha256:{}", hex(1))); // fine
        std::fs::create_dir_all(r.join(format!("{layers}/{}", hex(2)))).expect("mkdir"); // missing
        touch(r, &at(3), &format!("sha256:{}\n", hex(3))); // trailing newline
        touch(r, &at(4), &format!("sha256:{}", hex(9))); // another digest
        touch(r, &at(5), &"a".repeat(2000)); // too large
        std::fs::create_dir_all(r.join(at(6))).expect("mkdir"); // a directory
        std::fs::create_dir_all(r.join(format!("{layers}/{}", hex(7)))).expect("mkdir");
        std::os::unix::fs::symlink(r.join(at(1)), r.join(at(7))).expect("symlink");
        std::fs::create_dir_all(r.join(format!("{layers}/{}", hex(8)))).expect("mkdir");
        let fifo = std::process::Command::new("mkfifo")
            .arg(r.join(at(8)))
            .status()
            .expect("mkfifo");
        assert!(fifo.success());
        touch(r, &format!("{}/01/{}/data", layout::BLOBS, hex(1)), "x");

        let storage = FsStorage::new(r);
        let needs = Needs::LAYERS.with(Needs::LINK_CONTENTS);
        let (inv, problems) = scan("r", &storage, needs);
        let app = inv.repository("app").expect("app");
        let want = vec![
            (d(2), LinkState::Missing),
            (
                d(3),
                LinkState::Content(format!("sha256:{}\n", hex(3)).into_bytes().into()),
            ),
            (
                d(4),
                LinkState::Content(format!("sha256:{}", hex(9)).into_bytes().into()),
            ),
            (d(5), LinkState::TooLarge),
            (d(6), LinkState::NotAFile(EntryKind::Dir)),
            (d(7), LinkState::NotAFile(EntryKind::Symlink)),
            (d(8), LinkState::NotAFile(EntryKind::Other)),
        ];
        assert_eq!(
            app.layer_links,
            LinkFacts::Known {
                read: true,
                odd: want.clone()
            }
        );
        let mut paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        paths.sort();
        assert_eq!(paths, [at(6), at(7), at(8)]);
        assert_eq!(app.layer_links.exists(&d(1)), Some(true));
        assert_eq!(app.layer_links.exists(&d(2)), Some(false));
        assert_eq!(app.layer_links.exists(&d(3)), Some(true));
        assert_eq!(app.layer_links.exists(&d(6)), Some(false));

        // Existence only: one stat each, contents unseen.
        let (inv, _) = scan("r", &storage, Needs::LAYERS.with(Needs::LINK_FILES));
        let kinds: Vec<(Digest, LinkState)> = want
            .into_iter()
            .filter(|(_, s)| !matches!(s, LinkState::Content(_) | LinkState::TooLarge))
            .collect();
        let app = inv.repository("app").expect("app");
        assert_eq!(
            app.layer_links,
            LinkFacts::Known {
                read: false,
                odd: kinds
            }
        );

        // The trait's default (what an object store without its own answer does) agrees.
        for needs in [Needs::LINK_FILES, Needs::LINK_CONTENTS] {
            let needs = needs.with(Needs::LAYERS);
            let (fast, _) = scan("r", &storage, needs);
            let (plain, _) = scan("r", &Delegating::plain(FsStorage::new(r)), needs);
            let strip = |facts: &LinkFacts| -> Vec<(Digest, String)> {
                // The default reads through `read`, which refuses non-files with a reason.
                facts
                    .odd()
                    .iter()
                    .map(|(d, s)| match s {
                        LinkState::NotAFile(_) | LinkState::Unreadable(_) => (*d, "odd".into()),
                        s => (*d, format!("{s:?}")),
                    })
                    .collect()
            };
            let fast = &fast.repository("app").expect("app").layer_links;
            let plain = &plain.repository("app").expect("app").layer_links;
            assert_eq!(strip(fast), strip(plain), "{needs:?}");
            assert_eq!(fast.read(), plain.read());
        }
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

    /// A file system behind the trait's defaults (no `odd_links` of its own) and, when
    /// `keyed`, read the way an object store answers: one recursive listing of files.
    #[derive(Debug)]
    struct Delegating {
        fs: FsStorage,
        keyed: bool,
    }

    impl Delegating {
        fn plain(fs: FsStorage) -> Self {
            Self { fs, keyed: false }
        }

        fn keyed(fs: FsStorage) -> Self {
            Self { fs, keyed: true }
        }
    }

    impl Storage for Delegating {
        fn location(&self) -> String {
            self.fs.location()
        }
        fn list_dir(&self, path: &str) -> Result<Option<Vec<Entry>>, StorageError> {
            self.fs.list_dir(path)
        }
        fn stat(&self, path: &str) -> Result<Option<crate::storage::FileMeta>, StorageError> {
            self.fs.stat(path)
        }
        fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError> {
            self.fs.read(path, limit)
        }
        fn open(&self, path: &str) -> Result<Option<Box<dyn std::io::Read + Send>>, StorageError> {
            self.fs.open(path)
        }
        fn remove_dir_all(&self, path: &str) -> Result<(), StorageError> {
            self.fs.remove_dir_all(path)
        }
        fn create_new(&self, path: &str, content: &[u8]) -> Result<(), StorageError> {
            self.fs.create_new(path, content)
        }
        fn walk_files(
            &self,
            dir: &str,
            visit: &mut dyn FnMut(&str, crate::storage::FileMeta),
        ) -> Option<Result<(), StorageError>> {
            if !self.keyed {
                return None;
            }
            let base = self.fs.root().join(dir);
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
        // Which link files exist: the keys always say; a directory walk stats them when a
        // check asks (LINK_FILES), and then both agree on everything.
        let with_files = all.with(Needs::LINK_FILES);
        let (walked, walked_problems) = scan("r", &FsStorage::new(r), with_files);
        let (keyed, keyed_problems) = scan("r", &Delegating::keyed(FsStorage::new(r)), all);
        assert_eq!(
            format!("{:?}", walked.repositories),
            format!("{:?}", keyed.repositories)
        );
        assert_eq!(walked.repositories.len(), 2);
        assert_eq!(walked_problems, keyed_problems);
        assert_eq!(walked_problems.len(), 1, "{walked_problems:?}");
        let api = keyed.repository("team/app/api").expect("api");
        let d3 = Digest::from_hex(&hex(3)).expect("hex");
        let d4 = Digest::from_hex(&hex(4)).expect("hex");
        assert_eq!(api.revision_links.exists(&d3), Some(true));
        assert_eq!(api.revision_links.exists(&d4), Some(false));
        let (unasked, _) = scan("r", &FsStorage::new(r), all);
        let api = unasked.repository("team/app/api").expect("api");
        assert_eq!(api.revision_links.exists(&d3), None);
        assert_eq!(api.revision_links, LinkFacts::Unknown);
    }
}
