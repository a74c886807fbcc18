//! `corrupt-blobs`: blob data that is empty, or whose sha256 is not its digest.
//!
//! Hashing reads every byte, so a run can be bounded: `max-bytes` is a per-run budget, and the
//! point where a bounded run starts moves round the digest space once per `sweep-period`, so
//! that successive runs cover the whole store without keeping any state.

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use regfsck_core::storage::{BlobEntry, EntryKind};
use regfsck_core::{
    Check, CheckContext, CheckOutput, Digest, Finding, OptionKind, OptionSpec, Storage,
    StorageError, layout,
};
use sha2::{Digest as _, Sha256};

pub const ID: &str = "corrupt-blobs";

/// Each worker reads through one buffer this large.
const READ_BUFFER: usize = 1 << 20;
const DEFAULT_SWEEP_PERIOD: Duration = Duration::from_secs(30 * 24 * 60 * 60);

pub struct CorruptBlobs;

regfsck_core::declare_check! {
    check: CorruptBlobs,
    id: "corrupt-blobs",
    summary: "blob data that is empty or does not hash to its digest (pulls fail: digest did not match)",
    explanation: include_str!("../EXPLAIN.md"),
    help: "find the images that use the blob, remove its blob directory, flush the registry's blob-descriptor cache, then push them again (a pull-through cache fetches it again)",
    max_level: Warn,
    needs: [],
    options: [
        OptionSpec::new(
            "max-bytes",
            OptionKind::Bytes,
            "0",
            "bytes of blob data to hash per run, 0 for no limit; a run stops taking blobs once it has taken this much (the last one may cross it)"
        ),
        OptionSpec::new(
            "sweep-period",
            OptionKind::Duration,
            "30days",
            "with max-bytes set, where a run starts in digest order goes round the blob store once in this period, so successive runs cover every blob"
        ),
    ],
}

impl Check for CorruptBlobs {
    fn run(&self, cx: &CheckContext<'_>) -> CheckOutput {
        run_at(cx, SystemTime::now())
    }
}

/// What hashing one blob found.
enum Hashed {
    /// The data and how many bytes were read.
    Data(Digest, u64),
    /// The data disappeared since the listing (a garbage collection ran, say).
    Gone,
}

fn run_at(cx: &CheckContext<'_>, now: SystemTime) -> CheckOutput {
    let mut out = CheckOutput::default();
    let max_bytes = cx.options.bytes("max-bytes").unwrap_or(0);
    let period = cx
        .options
        .duration("sweep-period")
        .unwrap_or(DEFAULT_SWEEP_PERIOD);
    let empty = Digest::from_bytes(Sha256::digest([]).into());

    // Everything the listing alone answers is checked on every run, whatever the budget.
    let mut checked = 0u64;
    let mut to_hash: Vec<(&BlobEntry, u64)> = Vec::new();
    for blob in &cx.inventory.blobs {
        let Some(meta) = blob.data else {
            continue; // a blob directory without data: nothing to hash
        };
        if meta.kind != EntryKind::File {
            let kind = format!("{:?}", meta.kind).to_lowercase();
            out.problems.push(cx.problem(
                layout::blob_data(&blob.digest),
                format!("blob data is a {kind}, not a file (not hashed)"),
            ));
            continue;
        }
        checked += 1;
        if meta.size == 0 {
            if blob.digest != empty {
                out.findings.push(empty_finding(cx, &blob.digest));
            }
            continue;
        }
        to_hash.push((blob, meta.size));
    }

    let start = if max_bytes == 0 {
        0
    } else {
        sweep_start(now, period)
    };
    let (taken, skipped) = plan(&to_hash, start, max_bytes);
    let skipped_bytes: u64 = skipped.iter().map(|(_, size)| size).sum();

    let started = Instant::now();
    let results: Vec<(&BlobEntry, Result<Hashed, StorageError>)> = taken
        .par_iter()
        .map_init(
            || vec![0u8; READ_BUFFER],
            |buf, (blob, _)| (*blob, hash(cx.storage, &blob.digest, buf)),
        )
        .collect();
    let elapsed = started.elapsed();

    let (mut hashed, mut bytes) = (0u64, 0u64);
    for (blob, result) in results {
        match result {
            Ok(Hashed::Data(actual, read)) => {
                hashed += 1;
                bytes += read;
                if actual != blob.digest {
                    out.findings
                        .push(mismatch_finding(cx, &blob.digest, &actual, read));
                }
            }
            Ok(Hashed::Gone) => {}
            Err(e) => out
                .problems
                .push(cx.problem(e.path(), format!("cannot hash blob data: {}", e.reason()))),
        }
    }
    out.findings.sort_by_key(|f| f.digest);
    let corrupt = out.findings.len() as u64;
    out.counters = vec![
        ("blobs_checked", checked),
        ("blobs_hashed", hashed),
        ("bytes_hashed", bytes),
        ("mib_per_s", mib_per_s(bytes, elapsed)),
        ("blobs_skipped_budget", skipped.len() as u64),
        ("bytes_skipped_budget", skipped_bytes),
        ("corrupt", corrupt),
    ];
    out
}

/// Where in digest order a budgeted run starts: the first 64 bits of the digest space, moved
/// round once per `period` by the wall clock.
fn sweep_start(now: SystemTime, period: Duration) -> u64 {
    let period = period.as_secs();
    if period == 0 {
        return 0;
    }
    let t = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() % period;
    u64::try_from((u128::from(t) << 64) / u128::from(period)).unwrap_or(u64::MAX)
}

fn key(d: &Digest) -> u64 {
    let b = d.as_bytes();
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

type Planned<'a> = Vec<(&'a BlobEntry, u64)>;

/// Splits `blobs` (sorted by digest, with their sizes) into what this run hashes and what it
/// leaves for later: in digest order from `start`, wrapping round, taking blobs while less
/// than `budget` bytes are taken (0: no budget).
fn plan<'a>(blobs: &[(&'a BlobEntry, u64)], start: u64, budget: u64) -> (Planned<'a>, Planned<'a>) {
    let first = blobs.partition_point(|(b, _)| key(&b.digest) < start);
    let (mut taken, mut skipped) = (Vec::new(), Vec::new());
    let mut total = 0u64;
    for &(blob, size) in blobs[first..].iter().chain(&blobs[..first]) {
        if budget == 0 || total < budget {
            total = total.saturating_add(size);
            taken.push((blob, size));
        } else {
            skipped.push((blob, size));
        }
    }
    (taken, skipped)
}

/// Streams a blob's data through sha256.
fn hash(storage: &dyn Storage, d: &Digest, buf: &mut [u8]) -> Result<Hashed, StorageError> {
    let path = layout::blob_data(d);
    let Some(mut reader) = storage.open(&path)? else {
        return Ok(Hashed::Gone);
    };
    let mut hasher = Sha256::new();
    let mut read = 0u64;
    loop {
        match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                read += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(StorageError::io(path, e)),
        }
    }
    Ok(Hashed::Data(
        Digest::from_bytes(hasher.finalize().into()),
        read,
    ))
}

fn mib_per_s(bytes: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if bytes == 0 || secs <= 0.0 {
        return 0;
    }
    (bytes as f64 / f64::from(1u32 << 20) / secs) as u64
}

fn empty_finding(cx: &CheckContext<'_>, d: &Digest) -> Finding {
    let path = layout::blob_data(d);
    cx.finding(ID, "", path.clone(), "blob data is empty".into())
        .digest(*d)
        .detail("reason", "empty")
        .detail("size", 0)
        .evidence(
            path,
            true,
            "zero bytes, but the digest is not that of empty content",
        )
}

fn mismatch_finding(cx: &CheckContext<'_>, d: &Digest, actual: &Digest, size: u64) -> Finding {
    let path = layout::blob_data(d);
    cx.finding(
        ID,
        "",
        path.clone(),
        format!("blob data hashes to {}, not to its digest", actual.short()),
    )
    .digest(*d)
    .detail("reason", "digest_mismatch")
    .detail("actual", *actual)
    .detail("size", size)
    .evidence(path, true, format!("{size} bytes hashing to {actual}"))
}

#[cfg(test)]
mod tests {
    use regfsck_core::storage::{Entry, FileMeta};
    use regfsck_core::testing::{Tree, digest_of, run_check};
    use regfsck_core::{CheckOptions, FsStorage, ManifestCache, OptionValue, check, scan};

    use super::*;

    fn reg() -> &'static regfsck_core::Registration {
        check::find(ID).expect("registered")
    }

    fn options(max_bytes: u64, period: &str) -> CheckOptions {
        let mut o = CheckOptions::defaults(reg().info.options);
        o.set("max-bytes", OptionValue::Bytes(max_bytes));
        o.set(
            "sweep-period",
            OptionValue::parse_str(OptionKind::Duration, period).expect("duration"),
        );
        o
    }

    /// Runs the check at a chosen wall-clock time, as `run_check` would.
    fn run_at_time(tree: &Tree, opts: &CheckOptions, now: SystemTime) -> CheckOutput {
        run_on(&tree.storage(), opts, now)
    }

    fn run_on(storage: &dyn Storage, opts: &CheckOptions, now: SystemTime) -> CheckOutput {
        let (inventory, problems) = scan::scan("private", storage, reg().info.needs);
        assert!(problems.is_empty(), "{problems:?}");
        let manifests = ManifestCache::new(storage);
        let cx = CheckContext {
            registry: "private",
            storage,
            inventory: &inventory,
            manifests: &manifests,
            options: opts,
            evidence: true,
        };
        run_at(&cx, now)
    }

    fn counter(out: &CheckOutput, name: &str) -> u64 {
        out.counters
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    fn reported(out: &CheckOutput) -> Vec<(Digest, String)> {
        out.findings
            .iter()
            .map(|f| {
                let reason = f.details["reason"].as_str().expect("reason").to_string();
                (f.digest.expect("digest"), reason)
            })
            .collect()
    }

    #[test]
    fn healthy_blobs_are_hashed_and_not_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        tree.image("team/app", &[b"layer one", b"layer two"]);
        tree.blob(b""); // empty content under its own digest is a valid blob
        let out = run_check(reg(), "private", &tree, None);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let bytes = walk_sizes(&tree);
        assert_eq!(counter(&out, "blobs_checked"), 5);
        assert_eq!(counter(&out, "blobs_hashed"), 4);
        assert_eq!(counter(&out, "bytes_hashed"), bytes);
        assert_eq!(counter(&out, "blobs_skipped_budget"), 0);
        assert_eq!(counter(&out, "corrupt"), 0);
    }

    /// The bytes of every blob data file in the tree (test-side, through std::fs).
    fn walk_sizes(tree: &Tree) -> u64 {
        let storage = tree.storage();
        storage
            .list_blobs()
            .blobs
            .iter()
            .filter_map(|b| b.data.map(|m| m.size))
            .sum()
    }

    #[test]
    fn finds_empty_and_mismatched_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let (_, config, layers) = tree.image("team/app", &[b"good layer", b"bit rot victim"]);
        // Bit rot: same length, one byte different.
        tree.write(&layout::blob_data(&layers[1]), b"bit rot vict1m");
        // A truncated write: the data file exists but is empty.
        tree.write(&layout::blob_data(&config), b"");
        let out = run_check(reg(), "private", &tree, None);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let mut want = vec![
            (config, "empty".to_string()),
            (layers[1], "digest_mismatch".to_string()),
        ];
        want.sort();
        assert_eq!(reported(&out), want);

        let bad = out
            .findings
            .iter()
            .find(|f| f.digest == Some(layers[1]))
            .expect("mismatch finding");
        let actual = digest_of(b"bit rot vict1m");
        assert_eq!(*bad.path, layout::blob_data(&layers[1]));
        assert_eq!(&*bad.repository, "");
        assert_eq!(bad.details["actual"], actual.to_string());
        assert_eq!(bad.details["size"], 14);
        assert_eq!(
            *bad.message,
            format!("blob data hashes to {}, not to its digest", actual.short())
        );
        assert!(bad.fix.is_none());
        let empty = out
            .findings
            .iter()
            .find(|f| f.digest == Some(config))
            .expect("empty finding");
        assert_eq!(&*empty.message, "blob data is empty");
        assert_eq!(counter(&out, "corrupt"), 2);
        // The empty blob is judged from the listing: it is checked but never read.
        assert_eq!(counter(&out, "blobs_checked"), 4);
        assert_eq!(counter(&out, "blobs_hashed"), 3);
    }

    #[test]
    fn unreadable_data_is_a_problem_not_a_finding() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let d = digest_of(b"a directory where data should be");
        tree.write(&format!("{}/stray", layout::blob_data(&d)), b"x");
        let out = run_check(reg(), "private", &tree, None);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert_eq!(out.problems.len(), 1, "{:?}", out.problems);
        assert_eq!(out.problems[0].path, layout::blob_data(&d));
        assert_eq!(
            out.problems[0].message,
            "blob data is a dir, not a file (not hashed)"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_data_file_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let d = digest_of(b"elsewhere");
        tree.write("outside", b"elsewhere");
        let data = tree.path(&layout::blob_data(&d));
        std::fs::create_dir_all(data.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(tree.path("outside"), &data).expect("symlink");
        let out = run_check(reg(), "private", &tree, None);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert_eq!(out.problems.len(), 1, "{:?}", out.problems);
        assert_eq!(counter(&out, "blobs_hashed"), 0);
    }

    /// Eight 10-byte blobs, one of them corrupt; returns their digests in digest order.
    fn eight_blobs(tree: &Tree) -> Vec<Digest> {
        let mut ds: Vec<Digest> = (0..8u8)
            .map(|i| tree.blob(format!("blob #{i:04}").as_bytes()))
            .collect();
        ds.sort();
        ds
    }

    #[test]
    fn the_budget_bounds_a_run_and_counts_what_it_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let ds = eight_blobs(&tree);
        // Period 0 starts every run at the lowest digest.
        let out = run_at_time(&tree, &options(25, "0s"), SystemTime::now());
        // 0 < 25 take, 10 < 25 take, 20 < 25 take (crossing it), 30: stop.
        assert_eq!(counter(&out, "blobs_hashed"), 3);
        assert_eq!(counter(&out, "bytes_hashed"), 30);
        assert_eq!(counter(&out, "blobs_skipped_budget"), 5);
        assert_eq!(counter(&out, "bytes_skipped_budget"), 50);
        assert_eq!(counter(&out, "blobs_checked"), 8);

        // Corruption past the budget goes unseen; within it, it is found.
        tree.write(&layout::blob_data(&ds[5]), b"corrupted!");
        let out = run_at_time(&tree, &options(25, "0s"), SystemTime::now());
        assert!(out.findings.is_empty());
        tree.write(&layout::blob_data(&ds[1]), b"corrupted!");
        let out = run_at_time(&tree, &options(25, "0s"), SystemTime::now());
        assert_eq!(reported(&out), vec![(ds[1], "digest_mismatch".into())]);
        // Without a budget, both.
        let out = run_check(reg(), "private", &tree, None);
        assert_eq!(
            reported(&out),
            vec![
                (ds[1], "digest_mismatch".into()),
                (ds[5], "digest_mismatch".into())
            ]
        );
    }

    #[test]
    fn empty_data_is_found_whatever_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let ds = eight_blobs(&tree);
        tree.write(&layout::blob_data(&ds[7]), b"");
        let out = run_at_time(&tree, &options(1, "0s"), SystemTime::now());
        assert_eq!(reported(&out), vec![(ds[7], "empty".into())]);
        assert_eq!(counter(&out, "blobs_hashed"), 1);
    }

    #[test]
    fn budgeted_runs_sweep_round_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let ds = eight_blobs(&tree);
        for d in &ds {
            tree.write(&layout::blob_data(d), b"corrupted!");
        }
        // Four runs a quarter period apart: each starts a quarter further round the digest
        // space. Digests are not spread evenly (these eight put four in the second quarter, none in the first),
        // so a budget of three blobs a run leaves one unseen and four covers them all.
        let period = Duration::from_secs(4 * 3600);
        let t0 = UNIX_EPOCH + period * 1000;
        assert_eq!(sweep_start(t0, period), 0);
        assert_eq!(sweep_start(t0 + period / 2, period), 1 << 63);
        assert_eq!(sweep_start(t0 + period, period), 0);
        let sweep = |budget: u64| {
            let mut seen: Vec<Digest> = Vec::new();
            for i in 0..4 {
                let out = run_at_time(&tree, &options(budget, "4h"), t0 + period / 4 * i);
                assert_eq!(counter(&out, "blobs_hashed"), budget / 10);
                seen.extend(out.findings.iter().filter_map(|f| f.digest));
            }
            seen.sort();
            seen.dedup();
            seen
        };
        let mut missed = ds.clone();
        missed.retain(|d| !sweep(30).contains(d));
        assert_eq!(missed, vec![ds[3]]);
        assert_eq!(sweep(40), ds);
    }

    #[test]
    fn plan_wraps_round_from_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        eight_blobs(&tree);
        let listing = tree.storage().list_blobs();
        let sized: Vec<(&BlobEntry, u64)> = listing.blobs.iter().map(|b| (b, 10)).collect();
        let start = key(&listing.blobs[6].digest);
        let (taken, skipped) = plan(&sized, start, 30);
        let taken: Vec<Digest> = taken.iter().map(|(b, _)| b.digest).collect();
        let ds: Vec<Digest> = listing.blobs.iter().map(|b| b.digest).collect();
        assert_eq!(taken, vec![ds[6], ds[7], ds[0]]);
        assert_eq!(skipped.len(), 5);
        let (all, none) = plan(&sized, start, 0);
        assert_eq!((all.len(), none.len()), (8, 0));
    }

    /// A storage whose blob reads fail after the first bytes, like a disk with a bad sector.
    #[derive(Debug)]
    struct BadSector(FsStorage);

    struct FailingReader(Box<dyn Read + Send>, usize);

    impl Read for FailingReader {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.1 == 0 {
                return Err(std::io::Error::other("input/output error"));
            }
            let len = self.1.min(buf.len());
            let n = self.0.read(&mut buf[..len])?;
            self.1 -= n;
            Ok(n)
        }
    }

    impl Storage for BadSector {
        fn location(&self) -> String {
            self.0.location()
        }
        fn list_dir(&self, path: &str) -> Result<Option<Vec<Entry>>, StorageError> {
            self.0.list_dir(path)
        }
        fn stat(&self, path: &str) -> Result<Option<FileMeta>, StorageError> {
            self.0.stat(path)
        }
        fn read(&self, path: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError> {
            self.0.read(path, limit)
        }
        fn open(&self, path: &str) -> Result<Option<Box<dyn Read + Send>>, StorageError> {
            Ok(self
                .0
                .open(path)?
                .map(|r| Box::new(FailingReader(r, 4)) as Box<dyn Read + Send>))
        }
        fn remove_dir_all(&self, path: &str) -> Result<(), StorageError> {
            self.0.remove_dir_all(path)
        }
        fn create_new(&self, path: &str, content: &[u8]) -> Result<(), StorageError> {
            self.0.create_new(path, content)
        }
    }

    #[test]
    fn a_read_error_while_hashing_is_a_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let d = tree.blob(b"unlucky sector");
        let opts = CheckOptions::defaults(reg().info.options);
        let out = run_on(&BadSector(tree.storage()), &opts, SystemTime::now());
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert_eq!(out.problems.len(), 1, "{:?}", out.problems);
        assert_eq!(out.problems[0].path, layout::blob_data(&d));
        assert_eq!(
            out.problems[0].message,
            "cannot hash blob data: input/output error"
        );
        assert_eq!(counter(&out, "blobs_hashed"), 0);
    }
}
