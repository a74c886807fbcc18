//! Storage behind one trait: list a prefix, read, remove.
//!
//! Checks never touch `std::fs`: they read the [`Inventory`](crate::Inventory) that one scan
//! built through this trait, and read blob contents through it. The trait is shaped so that an
//! object store can answer every question by listing: [`Storage::list_blobs`] is one paged
//! listing there, and a directory is a common prefix.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use rayon::prelude::*;

use crate::{Digest, layout};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: larger than the {limit}-byte limit for this read")]
    TooLarge { path: String, limit: u64 },
    #[error("{path}: {reason}")]
    Refused { path: String, reason: String },
}

impl StorageError {
    pub fn io(path: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// What went wrong, without the path.
    pub fn reason(&self) -> String {
        match self {
            Self::Io { source, .. } => source.to_string(),
            Self::TooLarge { limit, .. } => {
                format!("larger than the {limit}-byte limit for this read")
            }
            Self::Refused { reason, .. } => reason.clone(),
        }
    }

    pub fn path(&self) -> &str {
        match self {
            Self::Io { path, .. } | Self::TooLarge { path, .. } | Self::Refused { path, .. } => {
                path
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    Other,
}

/// One child of a listed directory (or common prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name; lossily decoded when `utf8` is false.
    pub name: String,
    pub kind: EntryKind,
    /// False when the on-disk name is not UTF-8: Distribution never writes such names.
    pub utf8: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub size: u64,
    pub modified: Option<SystemTime>,
    pub kind: EntryKind,
}

/// A blob directory found under `blobs/sha256/<xx>/`, and its `data` file if present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    pub digest: Digest,
    pub data: Option<FileMeta>,
}

impl BlobEntry {
    /// The `data` file's metadata when it is a regular file: the blob's content exists.
    pub fn data_file(&self) -> Option<FileMeta> {
        self.data.filter(|m| m.kind == EntryKind::File)
    }
}

/// What a blob listing found, including names that are not blob directories.
#[derive(Debug, Default)]
pub struct BlobListing {
    /// False when `blobs/sha256` does not exist at all.
    pub store_present: bool,
    pub blobs: Vec<BlobEntry>,
    /// Entries that do not belong in the blob store, or could not be read.
    pub problems: Vec<StorageError>,
}

/// Distribution writes 71 bytes (`sha256:` and 64 hex); more than this is not a link.
pub const LINK_READ_LIMIT: usize = 1024;

/// A link file that is not what Distribution writes: a regular file holding exactly
/// `sha256:<the digest its directory names>`. Fine links are never recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// The digest directory holds no `link` file.
    Missing,
    /// Something other than a regular file is there.
    NotAFile(EntryKind),
    /// A regular file with other content (at most [`LINK_READ_LIMIT`] bytes of it).
    Content(Box<[u8]>),
    /// A regular file larger than [`LINK_READ_LIMIT`].
    TooLarge,
    /// Could not be looked at (the scan reports it as a problem).
    Unreadable(String),
}

/// Whether `content` is the link Distribution writes for `expected`.
pub fn is_link_to(content: &[u8], expected: &Digest) -> bool {
    content.len() == 71
        && content.starts_with(b"sha256:")
        && std::str::from_utf8(&content[7..])
            .ok()
            .and_then(Digest::from_hex)
            .is_some_and(|d| d == *expected)
}

pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Where this storage lives, for messages (`/srv/registry/private`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// The children of a directory; `None` when it does not exist.
    fn list_dir(&self, path: &str) -> Result<Option<Vec<Entry>>, StorageError>;

    /// Metadata of one path without following symlinks; `None` when it does not exist.
    fn stat(&self, path: &str) -> Result<Option<FileMeta>, StorageError>;

    /// The content of a file, at most `limit` bytes (`TooLarge` beyond); `None` when absent.
    fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError>;

    /// A streaming reader over a file (for hashing blobs); `None` when absent.
    fn open(&self, path: &str) -> Result<Option<Box<dyn std::io::Read + Send>>, StorageError>;

    /// Removes a directory and everything below it, never following a symlink.
    fn remove_dir_all(&self, path: &str) -> Result<(), StorageError>;

    /// Creates a file that must not exist yet (creating parent directories), for undo.
    fn create_new(&self, path: &str, content: &[u8]) -> Result<(), StorageError>;

    /// Every file below `dir`, recursively, from one recursive listing: paths relative to
    /// `dir`, in any order. For backends where that is far cheaper than listing directory by
    /// directory (an object store lists 1,000 keys a request). `None`: not offered, so the
    /// scan walks with [`Storage::list_dir`] (the default, right for a file system).
    fn walk_files(
        &self,
        dir: &str,
        visit: &mut dyn FnMut(&str, FileMeta),
    ) -> Option<Result<(), StorageError>> {
        let _ = (dir, visit);
        None
    }

    /// How many requests may usefully be in flight at once, when that is more than the
    /// number of cores (a network store, or a disk whose tree is not in the page cache, is
    /// bound by latency): the runner scans such a registry in a thread pool of this size.
    /// `None`: one thread per core.
    fn parallelism(&self) -> Option<usize> {
        None
    }

    /// Looks at `<dir>/<hex>/link` for each of `digests` and returns, with its index in
    /// `digests`, every link that is not fine (see [`LinkState`]). With `read` false only
    /// whether a regular file is there is asked, not what it holds. `Err`: `dir` itself could
    /// not be opened.
    ///
    /// The default asks [`Storage::stat`] or [`Storage::read`] once per link; a file system
    /// answers relative to one open directory, without walking the path again each time.
    fn odd_links(
        &self,
        dir: &str,
        digests: &[Digest],
        read: bool,
    ) -> Result<Vec<(usize, LinkState)>, StorageError> {
        if !read {
            return odd_links_by_stat(self, dir, digests);
        }
        let mut odd = Vec::new();
        for (i, d) in digests.iter().enumerate() {
            let state = match self.read(&link_below(dir, d), LINK_READ_LIMIT as u64) {
                Ok(Some(c)) if is_link_to(&c, d) => continue,
                Ok(Some(c)) => LinkState::Content(c.into_boxed_slice()),
                Ok(None) => LinkState::Missing,
                Err(StorageError::TooLarge { .. }) => LinkState::TooLarge,
                Err(e) => LinkState::Unreadable(e.reason()),
            };
            odd.push((i, state));
        }
        Ok(odd)
    }

    /// Metadata of `<dir>/<rel>` for each of `rels`, in order, without following symlinks
    /// (`None`: absent). `Err`: `dir` itself could not be opened. The default stats each
    /// path; a file system stats relative to one open directory.
    fn stat_below(
        &self,
        dir: &str,
        rels: &[String],
    ) -> Result<Vec<Result<Option<FileMeta>, StorageError>>, StorageError> {
        Ok(rels
            .iter()
            .map(|rel| self.stat(&format!("{dir}/{rel}")))
            .collect())
    }

    /// What the backend spent (requests by kind, retries), for the run's summary; `None` for
    /// backends where that is not worth counting (a local file system).
    fn stats(&self) -> Option<serde_json::Value> {
        None
    }

    /// Every blob directory and whether its `data` file exists.
    ///
    /// The default lists the 256 prefix directories and stats each blob's `data` once, in
    /// parallel; an object store overrides it with one recursive listing.
    fn list_blobs(&self) -> BlobListing {
        let mut listing = BlobListing::default();
        let prefixes = match self.list_dir(layout::BLOBS) {
            Ok(Some(p)) => p,
            Ok(None) => return listing,
            Err(e) => {
                listing.problems.push(e);
                return listing;
            }
        };
        listing.store_present = true;
        let per_prefix: Vec<(Vec<BlobEntry>, Vec<StorageError>)> = prefixes
            .par_iter()
            .map(|prefix| self.list_blob_prefix(prefix))
            .collect();
        // Sized exactly: a blob store may hold millions of entries.
        let total = per_prefix.iter().map(|(b, _)| b.len()).sum();
        listing.blobs.reserve_exact(total);
        for (blobs, problems) in per_prefix {
            listing.blobs.extend(blobs);
            listing.problems.extend(problems);
        }
        listing.blobs.sort_unstable_by_key(|b| b.digest);
        listing
    }

    #[doc(hidden)]
    fn list_blob_prefix(&self, prefix: &Entry) -> (Vec<BlobEntry>, Vec<StorageError>) {
        let mut problems = Vec::new();
        let dir = format!("{}/{}", layout::BLOBS, prefix.name);
        if prefix.kind != EntryKind::Dir || prefix.name.len() != 2 || !prefix.utf8 {
            problems.push(unexpected(&dir, prefix.kind));
            return (Vec::new(), problems);
        }
        let entries = match self.list_dir(&dir) {
            Ok(e) => e.unwrap_or_default(),
            Err(e) => return (Vec::new(), vec![e]),
        };
        let mut digests = Vec::with_capacity(entries.len());
        for entry in &entries {
            let digest = Digest::from_hex(&entry.name)
                .filter(|d| entry.utf8 && d.hex().starts_with(&prefix.name));
            match digest.filter(|_| entry.kind == EntryKind::Dir) {
                Some(d) => digests.push(d),
                None => problems.push(unexpected(&format!("{dir}/{}", entry.name), entry.kind)),
            }
        }
        let rels: Vec<String> = digests
            .iter()
            .map(|d| format!("{}/data", d.hex()))
            .collect();
        let metas = match self.stat_below(&dir, &rels) {
            Ok(m) => m,
            Err(e) => {
                problems.push(e);
                return (Vec::new(), problems);
            }
        };
        let mut out = Vec::with_capacity(digests.len());
        for (digest, data) in digests.into_iter().zip(metas) {
            match data {
                Ok(data) => out.push(BlobEntry { digest, data }),
                Err(e) => problems.push(e),
            }
        }
        (out, problems)
    }
}

fn link_below(dir: &str, d: &Digest) -> String {
    format!("{dir}/{}/link", d.hex())
}

/// [`Storage::odd_links`] without reading: one [`Storage::stat_below`] for the directory.
fn odd_links_by_stat<S: Storage + ?Sized>(
    storage: &S,
    dir: &str,
    digests: &[Digest],
) -> Result<Vec<(usize, LinkState)>, StorageError> {
    let rels: Vec<String> = digests
        .iter()
        .map(|d| format!("{}/link", d.hex()))
        .collect();
    let metas = storage.stat_below(dir, &rels)?;
    Ok(metas
        .into_iter()
        .enumerate()
        .filter_map(|(i, meta)| match meta {
            Ok(Some(m)) if m.kind == EntryKind::File => None,
            Ok(Some(m)) => Some((i, LinkState::NotAFile(m.kind))),
            Ok(None) => Some((i, LinkState::Missing)),
            Err(e) => Some((i, LinkState::Unreadable(e.reason()))),
        })
        .collect())
}

fn unexpected(path: &str, kind: EntryKind) -> StorageError {
    StorageError::Refused {
        path: path.to_string(),
        reason: format!("unexpected {kind:?} in the blob store (ignored)").to_lowercase(),
    }
}

/// A registry whose `rootdirectory` is on a local (or network) file system.
#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Joins a registry-relative path, refusing anything that could leave the root.
    fn full(&self, path: &str) -> Result<PathBuf, StorageError> {
        let rel = Path::new(path);
        if path.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(StorageError::Refused {
                path: path.to_string(),
                reason: "not a plain relative path inside the registry".into(),
            });
        }
        Ok(self.root.join(rel))
    }

    /// Opens a directory (never through a final symlink) for `*at` calls below it.
    fn open_dir(&self, dir: &str) -> Result<rustix::fd::OwnedFd, StorageError> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rustix::fs::open(self.full(dir)?, flags, Mode::empty())
            .map_err(|e| StorageError::io(dir, e.into()))
    }

    /// Refuses when any directory between the root and `path` is a symlink.
    fn no_symlink_below_root(&self, path: &str) -> Result<(), StorageError> {
        let mut cur = self.root.clone();
        for part in path.split('/') {
            cur.push(part);
            let meta = std::fs::symlink_metadata(&cur).map_err(|e| StorageError::io(path, e))?;
            if meta.file_type().is_symlink() {
                return Err(StorageError::Refused {
                    path: path.to_string(),
                    reason: format!("{} is a symlink", cur.display()),
                });
            }
        }
        Ok(())
    }
}

/// Opens for reading without following a symlink in the last component.
fn open_nofollow(path: &Path) -> io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: a FIFO planted where a file belongs must not hang the scan (fstat then
        // refuses it); it changes nothing for regular files.
        opts.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    opts.open(path)
}

/// `open(O_NOFOLLOW)` on a symlink fails with ELOOP.
fn is_symlink_refusal(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::ELOOP)
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

fn kind_of(ft: std::fs::FileType) -> EntryKind {
    if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

fn modified_of(st: &rustix::fs::Stat) -> Option<SystemTime> {
    let secs = u64::try_from(st.st_mtime).ok()?;
    let nanos = u32::try_from(st.st_mtime_nsec).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(secs, nanos))
}

fn kind_of_mode(mode: u32) -> EntryKind {
    use rustix::fs::FileType;
    match FileType::from_raw_mode(mode as rustix::fs::RawMode) {
        FileType::RegularFile => EntryKind::File,
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

/// Reads the link `rel` below `dirfd`: `None` when it is fine. A fine link costs `openat`,
/// one `read` (a regular file returns less than asked only at its end) and `close`.
fn read_link_at(
    dirfd: &impl rustix::fd::AsFd,
    rel: &str,
    expected: &Digest,
    buf: &mut [u8; LINK_READ_LIMIT + 1],
) -> rustix::io::Result<Option<LinkState>> {
    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;
    // O_NONBLOCK: a FIFO planted as a link must not hang the scan.
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dirfd, rel, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(Some(LinkState::Missing)),
        Err(Errno::LOOP) => return Ok(Some(LinkState::NotAFile(EntryKind::Symlink))),
        Err(e) => return Err(e),
    };
    let first = rustix::io::read(&fd, &mut buf[..]);
    if let Ok(n) = first
        && is_link_to(&buf[..n], expected)
    {
        return Ok(None);
    }
    // Not fine: now say exactly what is there.
    let kind = kind_of_mode(rustix::fs::fstat(&fd)?.st_mode);
    if kind != EntryKind::File {
        return Ok(Some(LinkState::NotAFile(kind)));
    }
    let mut len = first?;
    while len < buf.len() {
        match rustix::io::read(&fd, &mut buf[len..])? {
            0 => break,
            n => len += n,
        }
    }
    Ok(Some(if len > LINK_READ_LIMIT {
        LinkState::TooLarge
    } else {
        LinkState::Content(buf[..len].into())
    }))
}

impl Storage for FsStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    /// Sixteen threads per core (32 to 128). A registry's metadata often outgrows the page
    /// cache (1M links are ~20 GB of directory blocks and inodes), and then the scan waits on
    /// the disk: more reads in flight finish sooner. Measured on 2 cores (virtio disk), 1M
    /// links, all checks but hashing, alternating: 121 s with 2 threads, 109–115 s with 8,
    /// 79–86 s with 16, 74–79 s with 32, 82 s with 64 (`bench/RESULTS.md`).
    fn parallelism(&self) -> Option<usize> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Some((cores * 16).clamp(32, 128))
    }

    fn list_dir(&self, path: &str) -> Result<Option<Vec<Entry>>, StorageError> {
        let full = self.full(path)?;
        let iter = match std::fs::read_dir(&full) {
            Ok(it) => it,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io(path, e)),
        };
        let mut out = Vec::new();
        for entry in iter {
            let entry = entry.map_err(|e| StorageError::io(path, e))?;
            let kind = match entry.file_type() {
                Ok(ft) => kind_of(ft),
                // Vanished between readdir and the fallback lstat: it is simply gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io(path, e)),
            };
            let os = entry.file_name();
            let (name, utf8) = match os.into_string() {
                Ok(s) => (s, true),
                Err(os) => (os.to_string_lossy().into_owned(), false),
            };
            out.push(Entry { name, kind, utf8 });
        }
        Ok(Some(out))
    }

    fn stat(&self, path: &str) -> Result<Option<FileMeta>, StorageError> {
        match std::fs::symlink_metadata(self.full(path)?) {
            Ok(m) => Ok(Some(FileMeta {
                size: m.len(),
                modified: m.modified().ok(),
                kind: kind_of(m.file_type()),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io(path, e)),
        }
    }

    fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError> {
        use std::io::Read;
        // open (never through a final symlink) + fstat + one read + close: this runs once per
        // link file for some checks, so every system call counts.
        let file = match open_nofollow(&self.full(path)?) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if is_symlink_refusal(&e) => {
                return Err(StorageError::Refused {
                    path: path.to_string(),
                    reason: "expected a file, found a symlink".into(),
                });
            }
            Err(e) => return Err(StorageError::io(path, e)),
        };
        let meta = file.metadata().map_err(|e| StorageError::io(path, e))?;
        if !meta.file_type().is_file() {
            return Err(StorageError::Refused {
                path: path.to_string(),
                reason: format!("expected a file, found a {:?}", kind_of(meta.file_type()))
                    .to_lowercase(),
            });
        }
        if meta.len() > limit {
            return Err(StorageError::TooLarge {
                path: path.to_string(),
                limit,
            });
        }
        let mut buf = Vec::with_capacity(meta.len() as usize + 1);
        // At most limit + 1 bytes, in case the file grew since the fstat.
        file.take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| StorageError::io(path, e))?;
        if buf.len() as u64 > limit {
            return Err(StorageError::TooLarge {
                path: path.to_string(),
                limit,
            });
        }
        Ok(Some(buf))
    }

    /// One open directory, then per link one `statat`, or `openat` + `read` + `close` (an
    /// `fstat` only for a link that is not fine): the cheapest way a file system can say what
    /// every link holds.
    fn odd_links(
        &self,
        dir: &str,
        digests: &[Digest],
        read: bool,
    ) -> Result<Vec<(usize, LinkState)>, StorageError> {
        if !read {
            return odd_links_by_stat(self, dir, digests);
        }
        let dirfd = self.open_dir(dir)?;
        let mut buf = [0u8; LINK_READ_LIMIT + 1];
        let mut odd = Vec::new();
        for (i, d) in digests.iter().enumerate() {
            let rel = format!("{}/link", d.hex());
            let state = match read_link_at(&dirfd, &rel, d, &mut buf) {
                Ok(None) => continue,
                Ok(Some(state)) => state,
                Err(e) => LinkState::Unreadable(io::Error::from(e).to_string()),
            };
            odd.push((i, state));
        }
        Ok(odd)
    }

    /// One open directory, then one `statat` per path: no path walk from the root each time
    /// (a blob store holds one `data` per blob, a repository one `link` per layer).
    fn stat_below(
        &self,
        dir: &str,
        rels: &[String],
    ) -> Result<Vec<Result<Option<FileMeta>, StorageError>>, StorageError> {
        use rustix::fs::AtFlags;
        let dirfd = self.open_dir(dir)?;
        Ok(rels
            .iter()
            .map(
                |rel| match rustix::fs::statat(&dirfd, rel.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => Ok(Some(FileMeta {
                        size: u64::try_from(st.st_size).unwrap_or(0),
                        modified: modified_of(&st),
                        kind: kind_of_mode(st.st_mode),
                    })),
                    Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => Ok(None),
                    Err(e) => Err(StorageError::io(format!("{dir}/{rel}"), e.into())),
                },
            )
            .collect())
    }

    fn open(&self, path: &str) -> Result<Option<Box<dyn std::io::Read + Send>>, StorageError> {
        let full = self.full(path)?;
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(m) => {
                return Err(StorageError::Refused {
                    path: path.to_string(),
                    reason: format!("expected a file, found a {:?}", kind_of(m.file_type()))
                        .to_lowercase(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io(path, e)),
        }
        match std::fs::File::open(&full) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io(path, e)),
        }
    }

    fn remove_dir_all(&self, path: &str) -> Result<(), StorageError> {
        let full = self.full(path)?;
        self.no_symlink_below_root(path)?;
        // std's remove_dir_all does not follow symlinks below `full` (CVE-2022-21658 fixed).
        std::fs::remove_dir_all(&full).map_err(|e| StorageError::io(path, e))
    }

    fn create_new(&self, path: &str, content: &[u8]) -> Result<(), StorageError> {
        use std::io::Write;
        let full = self.full(path)?;
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StorageError::io(path, e))?;
        }
        self.no_symlink_below_root(path.rsplit_once('/').map_or(path, |(dir, _)| dir))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&full)
            .map_err(|e| StorageError::io(path, e))?;
        f.write_all(content)
            .and_then(|()| f.sync_all())
            .map_err(|e| StorageError::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    #[test]
    fn lists_blobs_with_and_without_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = HEX.replace("01", "ff").replacen("0", "f", 1);
        write(dir.path(), &format!("{}/01/{HEX}/data", layout::BLOBS), "x");
        std::fs::create_dir_all(dir.path().join(format!("{}/ff/{other}", layout::BLOBS)))
            .expect("mkdir");
        write(dir.path(), &format!("{}/01/stray", layout::BLOBS), "");
        let s = FsStorage::new(dir.path());
        let listing = s.list_blobs();
        assert!(listing.store_present);
        assert_eq!(listing.blobs.len(), 2);
        let with = listing
            .blobs
            .iter()
            .find(|b| b.digest.hex() == HEX)
            .expect("listed");
        assert_eq!(with.data.map(|m| m.size), Some(1));
        // Stat'ed relative to the prefix directory: the same answer as a stat of the path.
        let data = format!("{}/01/{HEX}/data", layout::BLOBS);
        assert_eq!(with.data, s.stat(&data).expect("stat"));
        assert!(with.data.and_then(|m| m.modified).is_some());
        let without = listing
            .blobs
            .iter()
            .find(|b| b.digest.hex() == other)
            .expect("listed");
        assert_eq!(without.data, None);
        assert_eq!(listing.problems.len(), 1, "{:?}", listing.problems);
        assert!(listing.problems[0].path().ends_with("/01/stray"));
    }

    #[test]
    fn missing_store_is_not_an_empty_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listing = FsStorage::new(dir.path()).list_blobs();
        assert!(!listing.store_present);
    }

    #[test]
    fn read_is_bounded_and_refuses_escapes() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a/f", "0123456789");
        let s = FsStorage::new(dir.path());
        assert_eq!(
            s.read("a/f", 10).expect("read"),
            Some(b"0123456789".to_vec())
        );
        assert!(matches!(
            s.read("a/f", 9),
            Err(StorageError::TooLarge { .. })
        ));
        assert_eq!(s.read("a/missing", 9).expect("read"), None);
        assert!(matches!(
            s.read("../x", 9),
            Err(StorageError::Refused { .. })
        ));
        assert!(matches!(
            s.read("/etc/passwd", 9),
            Err(StorageError::Refused { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn remove_refuses_a_path_through_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        write(outside.path(), "victim/file", "keep");
        std::fs::create_dir_all(dir.path().join("a")).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("a/link")).expect("symlink");
        let s = FsStorage::new(dir.path());
        let err = s.remove_dir_all("a/link/victim").expect_err("must refuse");
        assert!(matches!(err, StorageError::Refused { .. }), "{err}");
        assert!(outside.path().join("victim/file").exists());
    }

    #[cfg(unix)]
    #[test]
    fn read_refuses_symlinks_and_fifos_without_hanging() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a/target", "sha256:x");
        std::os::unix::fs::symlink(dir.path().join("a/target"), dir.path().join("a/link"))
            .expect("symlink");
        let fifo = dir.path().join("a/fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let s = FsStorage::new(dir.path());
        assert!(matches!(
            s.read("a/link", 100),
            Err(StorageError::Refused { .. })
        ));
        assert!(matches!(
            s.read("a/fifo", 100),
            Err(StorageError::Refused { .. })
        ));
        assert_eq!(
            s.read("a/target", 100).expect("read"),
            Some(b"sha256:x".to_vec())
        );
    }
}
