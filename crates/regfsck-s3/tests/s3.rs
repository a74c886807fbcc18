//! S3Storage against a real S3 server: SeaweedFS, from `regfsck_s3::testing` (one server for
//! all these tests, on 127.0.0.1, killed when the last of them is done; it is found or
//! installed as described there, and the tests fail rather than skip without it).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regfsck_core::scan::LinkFacts;
use regfsck_core::storage::{EntryKind, FileMeta};
use regfsck_core::{Digest, FsStorage, Needs, Storage, StorageError, layout, scan};
use regfsck_s3::testing::{Account, Weed};
use regfsck_s3::{RequestCounts, S3Config, S3Storage};

const BUCKET: &str = "regfsck";
const ACCOUNT: Account = Account {
    access_key: "regfsck-test",
    secret_key: "regfsck-test-secret",
    bucket: BUCKET,
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn test_env(name: &str) -> Option<String> {
    ACCOUNT.env(name)
}

fn storage_on(endpoint: &str, root: &str, rps: Option<u32>) -> S3Storage {
    ACCOUNT.storage(
        ACCOUNT
            .config(endpoint, root)
            .with_max_requests_per_second(rps),
    )
}

fn hex(n: u32) -> String {
    use std::fmt::Write as _;
    // Distinct, well-spread digests: the counter's bytes, repeated, under a varying prefix.
    let mut s = String::with_capacity(64);
    let bytes = n.to_be_bytes();
    for i in 0..32u32 {
        let b = bytes[(i % 4) as usize] ^ (i as u8).wrapping_mul(37) ^ (n as u8).wrapping_mul(101);
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn digest(n: u32) -> Digest {
    Digest::from_hex(&hex(n)).expect("hex")
}

fn blob_data(n: u32) -> String {
    layout::blob_data(&digest(n))
}

/// Writes `files` (registry-relative path, content) with up to 8 PUTs in flight.
fn put_all(s: &S3Storage, files: &[(String, Vec<u8>)]) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, content)) = files.get(i) else {
                        return;
                    };
                    s.create_new(path, content)
                        .unwrap_or_else(|e| panic!("put {path}: {e}"));
                }
            });
        }
    });
}

fn names(entries: &Option<Vec<regfsck_core::storage::Entry>>) -> Vec<(String, EntryKind)> {
    entries
        .as_ref()
        .expect("directory exists")
        .iter()
        .map(|e| (e.name.clone(), e.kind))
        .collect()
}

fn delta(s: &S3Storage, before: RequestCounts) -> RequestCounts {
    s.requests().since(&before)
}

fn link(n: u32) -> Vec<u8> {
    format!("sha256:{}", hex(n)).into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Trait methods

#[test]
fn trait_methods_behave_like_distributions_s3_driver() {
    let weed = Weed::shared(ACCOUNT);
    let s = storage_on(&weed.endpoint(), "/methods/reg/", None);
    assert_eq!(s.location(), "s3://regfsck/methods/reg");
    // A neighbour whose root shares a name prefix: nothing of it may show.
    let neighbour = storage_on(&weed.endpoint(), "methods/reg-b", None);
    let repos = layout::REPOSITORIES;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    put_all(
        &s,
        &[
            (layout::layer_link("team/app", &digest(1)), link(1)),
            (layout::revision_link("team/app", &digest(2)), link(2)),
            (format!("{repos}/team/README"), b"hello".to_vec()),
            (layout::layer_link("abc", &digest(1)), link(1)),
            (layout::layer_link("abc", &digest(3)), link(3)),
            (layout::layer_link("abc-x", &digest(1)), link(1)),
            (layout::layer_link("abcd", &digest(1)), link(1)),
            (blob_data(1), big.clone()),
        ],
    );
    neighbour
        .create_new(&layout::layer_link("zzz", &digest(1)), &link(1))
        .expect("put");

    // list_dir: common prefixes are directories, keys are files; one LIST each.
    let before = s.requests();
    let top = s.list_dir(repos).expect("list");
    assert_eq!(
        names(&top),
        [
            ("abc".to_string(), EntryKind::Dir),
            ("abc-x".into(), EntryKind::Dir),
            ("abcd".into(), EntryKind::Dir),
            ("team".into(), EntryKind::Dir),
        ]
    );
    assert!(top.iter().flatten().all(|e| e.utf8));
    assert_eq!(
        delta(&s, before),
        RequestCounts {
            list: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        names(&s.list_dir(&format!("{repos}/team")).expect("list")),
        [
            ("README".to_string(), EntryKind::File),
            ("app".into(), EntryKind::Dir)
        ]
    );
    assert_eq!(s.list_dir(&format!("{repos}/nope")).expect("list"), None);
    assert_eq!(
        s.list_dir(&format!("{repos}/ab")).expect("list"),
        None,
        "a name prefix is not a directory"
    );

    // stat: HEAD for a file; a directory costs a HEAD and one LIST page.
    let before = s.requests();
    let meta = s
        .stat(&layout::layer_link("team/app", &digest(1)))
        .expect("stat")
        .expect("exists");
    assert_eq!((meta.size, meta.kind), (71, EntryKind::File));
    assert!(meta.modified.is_some());
    assert_eq!(
        delta(&s, before),
        RequestCounts {
            head: 1,
            ..Default::default()
        }
    );
    let before = s.requests();
    let dir = s
        .stat(&layout::layer_link_dir("team/app", &digest(1)))
        .expect("stat")
        .expect("exists");
    assert_eq!(dir.kind, EntryKind::Dir);
    assert!(
        dir.modified.is_some(),
        "a directory's time is its newest key's"
    );
    assert_eq!(
        delta(&s, before),
        RequestCounts {
            head: 1,
            list: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        s.stat(&layout::layer_link("team/app", &digest(9)))
            .expect("stat"),
        None
    );

    // read: bounded, without reading an oversized body.
    let before = s.requests();
    let path = format!("{repos}/team/README");
    assert_eq!(s.read(&path, 5).expect("read"), Some(b"hello".to_vec()));
    assert!(matches!(
        s.read(&path, 4),
        Err(StorageError::TooLarge { limit: 4, .. })
    ));
    assert!(matches!(
        s.read(&blob_data(1), 4 << 20),
        Ok(Some(ref b)) if b.len() == big.len()
    ));
    assert!(matches!(
        s.read(&blob_data(1), 1024),
        Err(StorageError::TooLarge { .. })
    ));
    assert_eq!(
        s.read(&format!("{repos}/team/nope"), 5).expect("read"),
        None
    );
    assert_eq!(
        delta(&s, before),
        RequestCounts {
            get: 5,
            ..Default::default()
        }
    );

    // open: a streaming reader.
    let mut content = Vec::new();
    s.open(&blob_data(1))
        .expect("open")
        .expect("exists")
        .read_to_end(&mut content)
        .expect("read");
    assert_eq!(content, big);
    assert!(s.open(&blob_data(2)).expect("open").is_none());

    // create_new refuses to overwrite, and costs a HEAD and a conditional PUT.
    let before = s.requests();
    let err = s
        .create_new(&path, b"other")
        .expect_err("must not overwrite");
    assert!(
        matches!(&err, StorageError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
        "{err}"
    );
    assert_eq!(s.read(&path, 5).expect("read"), Some(b"hello".to_vec()));
    let fresh = format!("{repos}/team/fresh/dir/file");
    s.create_new(&fresh, b"new").expect("create");
    assert_eq!(s.read(&fresh, 5).expect("read"), Some(b"new".to_vec()));
    assert_eq!(
        delta(&s, before),
        RequestCounts {
            head: 2,
            put: 1,
            get: 2,
            ..Default::default()
        }
    );

    // remove_dir_all deletes exactly the keys below `path/`: not `abc-x`, not `abcd`.
    let before = s.requests();
    s.remove_dir_all(&format!("{repos}/abc")).expect("remove");
    assert_eq!(
        delta(&s, before),
        RequestCounts {
            list: 1,
            delete: 1,
            ..Default::default()
        }
    );
    for gone in [1, 3] {
        assert_eq!(
            s.stat(&layout::layer_link("abc", &digest(gone)))
                .expect("stat"),
            None,
            "abc's keys are deleted"
        );
    }
    // SeaweedFS keeps listing an emptied prefix as a common prefix until its empty-folder
    // cleaner runs (minutes later); AWS S3 does not. So only the kept entries are asserted.
    let left = names(&s.list_dir(repos).expect("list"));
    for kept in ["abc-x", "abcd", "team"] {
        assert!(
            left.contains(&(kept.to_string(), EntryKind::Dir)),
            "{left:?}"
        );
    }
    for kept in ["abc-x", "abcd"] {
        assert!(
            s.stat(&layout::layer_link(kept, &digest(1)))
                .expect("stat")
                .is_some(),
            "{kept} must survive"
        );
    }
    assert!(
        neighbour
            .stat(&layout::layer_link("zzz", &digest(1)))
            .expect("stat")
            .is_some()
    );
    let err = s
        .remove_dir_all(&format!("{repos}/abc"))
        .expect_err("nothing left to remove");
    assert!(
        matches!(&err, StorageError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );

    // Nothing outside the registry: paths are plain relative components.
    for bad in ["", "../x", "a//b", "/etc/passwd", "a/./b", "a/"] {
        assert!(
            matches!(s.read(bad, 10), Err(StorageError::Refused { .. })),
            "{bad:?}"
        );
        assert!(
            matches!(s.remove_dir_all(bad), Err(StorageError::Refused { .. })),
            "{bad:?}"
        );
        assert!(
            matches!(s.list_dir(bad), Err(StorageError::Refused { .. })),
            "{bad:?}"
        );
    }
    eprintln!("trait methods: {:?}", s.requests());
}

#[test]
fn opens_the_bucket_named_in_distributions_config() {
    let weed = Weed::shared(ACCOUNT);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yml");
    std::fs::write(
        &file,
        format!(
            "version: 0.1\nstorage:\n  s3:\n    accesskey: not-used\n    secretkey: not-used\n    region: us-east-1\n    regionendpoint: 127.0.0.1:{}\n    secure: false\n    bucket: {BUCKET}\n    rootdirectory: /from-config\n",
            weed.s3_port()
        ),
    )
    .expect("write config.yml");
    let config = S3Config::from_registry_config(&file).expect("config.yml");
    assert!(config.path_style && config.allow_http);
    let s = S3Storage::with_env(config, &test_env).expect("S3Storage");
    assert_eq!(s.location(), "s3://regfsck/from-config");
    s.create_new("docker/registry/v2/x", b"1").expect("put");
    let direct = storage_on(&weed.endpoint(), "", None);
    assert_eq!(
        direct
            .read("from-config/docker/registry/v2/x", 1)
            .expect("read"),
        Some(b"1".to_vec()),
        "rootdirectory is a key prefix"
    );
}

#[test]
fn credentials_come_from_the_environment_only() {
    let config = S3Config::from_url("s3://b/r").expect("url");
    let profile_only = |name: &str| (name == "AWS_PROFILE").then(|| "prod".to_string());
    let err = S3Storage::with_env(config.clone(), &profile_only).expect_err("profiles");
    assert!(err.to_string().contains("AWS_PROFILE"), "{err}");
    // With keys in the environment a profile name does not matter.
    let both = |name: &str| match name {
        "AWS_PROFILE" => Some("prod".to_string()),
        other => test_env(other),
    };
    S3Storage::with_env(config, &both).expect("keys win");
}

// ---------------------------------------------------------------------------------------------
// list_blobs: one recursive listing

/// Delegates everything but `list_blobs`, so the trait's default (a listing per prefix and a
/// stat per blob) runs on S3: what the override saves.
#[derive(Debug)]
struct DefaultListing<'a>(&'a S3Storage);

impl Storage for DefaultListing<'_> {
    fn location(&self) -> String {
        self.0.location()
    }
    fn list_dir(
        &self,
        path: &str,
    ) -> Result<Option<Vec<regfsck_core::storage::Entry>>, StorageError> {
        self.0.list_dir(path)
    }
    fn stat(&self, path: &str) -> Result<Option<FileMeta>, StorageError> {
        self.0.stat(path)
    }
    fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError> {
        self.0.read(path, limit)
    }
    fn open(&self, path: &str) -> Result<Option<Box<dyn Read + Send>>, StorageError> {
        self.0.open(path)
    }
    fn remove_dir_all(&self, path: &str) -> Result<(), StorageError> {
        self.0.remove_dir_all(path)
    }
    fn create_new(&self, path: &str, content: &[u8]) -> Result<(), StorageError> {
        self.0.create_new(path, content)
    }
}

#[test]
fn list_blobs_is_one_paged_listing() {
    const N: u32 = 2100;
    let weed = Weed::shared(ACCOUNT);
    let s = storage_on(&weed.endpoint(), "blobs-test", None);
    let empty = s.list_blobs();
    assert!(!empty.store_present, "no key: no blob store");
    assert!(empty.blobs.is_empty() && empty.problems.is_empty());

    let mut files: Vec<(String, Vec<u8>)> = (0..N)
        .map(|n| (blob_data(n), format!("blob {n}").into_bytes()))
        .collect();
    // A blob directory without data (a key beside where `data` would be).
    let partial = N + 1;
    files.push((
        format!("{}/startedat", layout::blob_dir(&digest(partial))),
        b"x".to_vec(),
    ));
    // Out of place: a stray file in a prefix directory, a blob under the wrong prefix.
    let d = hex(7);
    let wrong = if d.starts_with("ff") { "00" } else { "ff" };
    files.push((format!("{}/{}/stray", layout::BLOBS, &d[..2]), b"".to_vec()));
    files.push((format!("{}/{wrong}/{d}/data", layout::BLOBS), b"".to_vec()));
    let keys = files.len() as u64;
    let started = Instant::now();
    put_all(&s, &files);
    eprintln!("wrote {keys} keys in {:?}", started.elapsed());

    let before = s.requests();
    let started = Instant::now();
    let listing = s.list_blobs();
    let cost = delta(&s, before);
    eprintln!(
        "list_blobs over {keys} keys ({N} blobs): {cost:?} in {:?}",
        started.elapsed()
    );
    // Sixteen listings side by side (split at the digest's first hex digit): each pays at
    // most one page more than its share of the keys; nothing is asked per blob.
    assert_eq!(
        cost,
        RequestCounts {
            list: cost.list,
            ..Default::default()
        },
        "only LIST requests"
    );
    assert!(
        (16..=keys.div_ceil(1000) + 16).contains(&cost.list),
        "{cost:?} for {keys} keys"
    );
    assert!(listing.store_present);
    assert_eq!(listing.blobs.len() as u32, N + 1);
    assert!(listing.blobs.is_sorted_by_key(|b| b.digest));
    for n in [0, 1, 999, 1000, N - 1] {
        let b = listing
            .blobs
            .iter()
            .find(|b| b.digest == digest(n))
            .expect("listed");
        let data = b.data.expect("data");
        assert_eq!(data.size, format!("blob {n}").len() as u64);
        assert_eq!(data.kind, EntryKind::File);
        assert!(data.modified.is_some());
    }
    let without = listing
        .blobs
        .iter()
        .find(|b| b.digest == digest(partial))
        .expect("listed");
    assert_eq!(without.data, None);
    let mut problems: Vec<String> = listing
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.path(), p.reason()))
        .collect();
    problems.sort();
    let mut expected = vec![
        format!(
            "{}/{}/stray: unexpected file in the blob store (ignored)",
            layout::BLOBS,
            &d[..2]
        ),
        format!(
            "{}/{wrong}/{d}: unexpected dir in the blob store (ignored)",
            layout::BLOBS
        ),
    ];
    expected.sort();
    assert_eq!(problems, expected);

    // What the trait's default listing (a LIST per prefix, a HEAD per blob) costs here.
    let before = s.requests();
    let started = Instant::now();
    let default = DefaultListing(&s).list_blobs();
    let default_cost = delta(&s, before);
    eprintln!(
        "the default list_blobs on S3: {default_cost:?} in {:?}",
        started.elapsed()
    );
    assert_eq!(default.blobs.len(), listing.blobs.len());
    assert!(default_cost.head >= u64::from(N));
}

// ---------------------------------------------------------------------------------------------
// The scan: same inventory through S3 and through the filesystem

/// A Distribution-shaped tree: nested repositories, links, tags, uploads, a layer whose blob
/// is gone, a blob directory without data, and some junk.
fn distribution_tree() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let repos = [
        "library/nginx",
        "team/app",
        "team/app/api",
        "abc",
        "abcd",
        "deep/a/b/c",
    ];
    for (i, repo) in repos.iter().enumerate() {
        let base = 100 * i as u32;
        for l in 0..5 {
            files.push((layout::layer_link(repo, &digest(base + l)), link(base + l)));
            // One layer per repository has lost its blob.
            if l != 4 {
                files.push((
                    blob_data(base + l),
                    format!("layer {repo} {l}").into_bytes(),
                ));
            }
        }
        let manifest = digest(base + 50);
        files.push((layout::revision_link(repo, &manifest), link(base + 50)));
        files.push((blob_data(base + 50), b"{\"schemaVersion\":2}".to_vec()));
        let tags = layout::tags_dir(repo);
        files.push((format!("{tags}/latest/current/link"), link(base + 50)));
        files.push((
            format!("{tags}/latest/index/sha256/{}/link", hex(base + 50)),
            link(base + 50),
        ));
        files.push((format!("{tags}/broken/current/link"), b"garbage".to_vec()));
        files.push((
            format!("{}/0b1c-uuid-{i}/startedat", layout::uploads_dir(repo)),
            b"2026-01-01T00:00:00Z".to_vec(),
        ));
    }
    files.push((
        format!("{}/startedat", layout::blob_dir(&digest(9999))),
        b"x".to_vec(),
    ));
    files.push((format!("{}/team/NOTES", layout::REPOSITORIES), b"".to_vec()));
    files.push((
        format!("{}/garbage/link", layout::layers_dir("team/app")),
        b"".to_vec(),
    ));
    files.push((format!("{}/zz/stray", layout::BLOBS), b"".to_vec()));
    files
}

#[derive(Debug, PartialEq, Eq)]
struct Comparable {
    blob_store_present: bool,
    blobs: Vec<(Digest, Option<(u64, EntryKind)>)>,
    repositories: String,
    problems: BTreeSet<(String, String)>,
}

fn scanned(storage: &dyn Storage, needs: Needs) -> Comparable {
    let (inv, problems) = scan::scan("r", storage, needs);
    Comparable {
        blob_store_present: inv.blob_store_present,
        blobs: inv
            .blobs
            .iter()
            .map(|b| (b.digest, b.data.map(|m| (m.size, m.kind))))
            .collect(),
        // Which link files exist: the key listing always knows it, for free; a directory
        // listing only when a check asked (`LINK_FILES`). Left out when none did.
        repositories: format!(
            "{:#?}",
            inv.repositories
                .iter()
                .cloned()
                .map(|mut r| {
                    if !needs.contains(Needs::LINK_FILES) {
                        r.revision_links = LinkFacts::Unknown;
                        r.layer_links = LinkFacts::Unknown;
                        for t in &mut r.tags {
                            t.index_links = LinkFacts::Unknown;
                        }
                    }
                    r
                })
                .collect::<Vec<_>>()
        ),
        problems: problems.into_iter().map(|p| (p.path, p.message)).collect(),
    }
}

#[test]
fn scan_through_s3_equals_scan_through_the_filesystem() {
    let weed = Weed::shared(ACCOUNT);
    let files = distribution_tree();
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, content) in &files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, content).expect("write");
    }
    let s = storage_on(&weed.endpoint(), "scan/private", None);
    put_all(&s, &files);
    let fs = FsStorage::new(dir.path());
    let needs = Needs::LAYERS
        .with(Needs::REVISIONS)
        .with(Needs::TAGS)
        .with(Needs::UPLOADS);

    let on_fs = scanned(&fs, needs);
    let before = s.requests();
    let started = Instant::now();
    let on_s3 = scanned(&s, needs);
    let cost = delta(&s, before);
    eprintln!(
        "scan over S3 ({} keys, 6 repositories, all needs): {cost:?} in {:?}",
        files.len(),
        started.elapsed()
    );
    assert_eq!(on_s3, on_fs);
    assert!(on_fs.blob_store_present);
    assert!(on_fs.repositories.contains("deep/a/b/c"));
    assert_eq!(on_fs.problems.len(), 2, "{:?}", on_fs.problems);
    assert_eq!(cost.put + cost.delete, 0, "a scan writes nothing");
    // Listing, not probing: the blob store as 16 listings side by side (one page each
    // here); repositories/ as one listing of its 5 top-level names, then 6 ranges split at
    // them; then one GET per tag's current link; no HEAD at all.
    assert_eq!((cost.list, cost.head), (16 + 1 + 6, 0), "{cost:?}");
    assert_eq!(cost.get, 12, "the 12 tags' current links: {cost:?}");

    let layers_only = scanned(&s, Needs::LAYERS);
    assert_eq!(layers_only, scanned(&fs, Needs::LAYERS));

    // Which link files exist: the same answer from the keys (no request more) as from a
    // stat of each file.
    let with_files = needs.with(Needs::LINK_FILES);
    let before = s.requests();
    assert_eq!(scanned(&s, with_files), scanned(&fs, with_files));
    assert_eq!(
        delta(&s, before),
        cost,
        "link existence costs no request on S3"
    );
    // What they hold: one GET per link there, the same facts (a garbage link planted in
    // both).
    let garbage = vec![(
        layout::layer_link("deep/a/b/c", &digest(999)),
        b"garbage".to_vec(),
    )];
    for (path, content) in &garbage {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, content).expect("write");
    }
    put_all(&s, &garbage);
    let with_contents = needs.with(Needs::LINK_CONTENTS);
    let on_fs = scanned(&fs, with_contents);
    assert_eq!(scanned(&s, with_contents), on_fs);
    assert!(
        on_fs.repositories.contains("Content("),
        "{}",
        on_fs.repositories
    );
}

// ---------------------------------------------------------------------------------------------
// Retries, throttling, the rate cap

/// A TCP proxy in front of SeaweedFS that answers the first connections with canned errors
/// (closing each), then passes connections through.
struct FaultProxy {
    port: u16,
}

impl FaultProxy {
    fn start(upstream: u16, faults: Vec<&'static str>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let faults = Arc::new(Mutex::new(faults.into_iter()));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let fault = faults.lock().unwrap_or_else(|p| p.into_inner()).next();
                std::thread::spawn(move || match fault {
                    Some(answer) => answer_with(conn, answer),
                    None => splice(conn, upstream),
                });
            }
        });
        FaultProxy { port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn answer_with(conn: TcpStream, answer: &str) {
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    // Read the request head (the requests faulted here have no body).
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line == "\r\n" {
            break;
        }
        line.clear();
    }
    let (status, code) = match answer {
        "SlowDown" => ("503 Slow Down", "SlowDown"),
        _ => ("500 Internal Server Error", "InternalError"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    );
    let _ = write!(
        &conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn splice(client: TcpStream, upstream: u16) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let (mut c2, mut s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        let _ = s2.shutdown(std::net::Shutdown::Write);
    });
    let (mut s1, mut c1) = (server, client);
    let _ = std::io::copy(&mut s1, &mut c1);
    let _ = c1.shutdown(std::net::Shutdown::Write);
    let _ = up.join();
}

#[test]
fn throttling_answers_are_retried_and_counted() {
    let weed = Weed::shared(ACCOUNT);
    let direct = storage_on(&weed.endpoint(), "retries", None);
    direct
        .create_new(&layout::layer_link("a", &digest(1)), &link(1))
        .expect("put");
    let proxy = FaultProxy::start(
        weed.s3_port(),
        vec!["SlowDown", "SlowDown", "InternalError", "SlowDown"],
    );
    let s = storage_on(&proxy.endpoint(), "retries", None);
    let started = Instant::now();
    let listed = s
        .list_dir(layout::REPOSITORIES)
        .expect("retried until it worked");
    assert_eq!(names(&listed), [("a".to_string(), EntryKind::Dir)]);
    let counts = s.requests();
    eprintln!(
        "list_dir through 3x 503 SlowDown and 1x 500: {counts:?} in {:?}",
        started.elapsed()
    );
    assert_eq!(
        counts,
        RequestCounts {
            list: 5,
            retries: 4,
            throttled: 3,
            ..Default::default()
        }
    );
    // Later requests go through without retries.
    assert!(
        s.stat(&layout::layer_link("a", &digest(1)))
            .expect("stat")
            .is_some()
    );
    assert_eq!(s.requests().retries, 4);
}

#[test]
fn the_rate_cap_spaces_requests() {
    let weed = Weed::shared(ACCOUNT);
    let s = storage_on(&weed.endpoint(), "rate", Some(20));
    s.create_new("x", b"1").expect("put");
    let started = Instant::now();
    for _ in 0..49 {
        assert!(s.read("x", 1).expect("read").is_some());
    }
    let elapsed = started.elapsed();
    let counts = s.requests();
    eprintln!("50 requests at 20/s: {counts:?} in {elapsed:?}");
    assert_eq!(counts.total(), 51, "{counts:?}"); // HEAD + PUT + 49 GETs
    // 20 at once, then 31 more at 20 per second.
    assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
}

#[test]
fn paths_map_to_keys_below_the_root() {
    let weed = Weed::shared(ACCOUNT);
    let s = storage_on(&weed.endpoint(), "keys/reg", None);
    s.create_new("docker/registry/v2/f", b"1").expect("put");
    let top = storage_on(&weed.endpoint(), "", None);
    assert_eq!(
        names(&top.list_dir("keys").expect("list")),
        [("reg".to_string(), EntryKind::Dir)]
    );
    assert_eq!(
        top.read("keys/reg/docker/registry/v2/f", 1).expect("read"),
        Some(b"1".to_vec())
    );
}
