//! `stale-uploads`: `_uploads/<id>` directories of uploads that started longer ago than
//! `max-age` and were never completed.

use std::time::{Duration, SystemTime};

use rayon::prelude::*;
use regfsck_core::layout::{self, Removable};
use regfsck_core::storage::EntryKind;
use regfsck_core::{
    Applicability, Check, CheckContext, CheckOutput, DetailValue, Finding, FixAction, FixPlan,
    OptionKind, OptionSpec, Recheck, Storage, StorageError,
};

pub const ID: &str = "stale-uploads";

/// Distribution's own default for `maintenance.uploadpurging.age`.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(168 * 60 * 60);
/// `startedat` holds one RFC 3339 time; anything longer is not one.
const STARTEDAT_LIMIT: u64 = 256;

pub struct StaleUploads;

regfsck_core::declare_check! {
    check: StaleUploads,
    id: "stale-uploads",
    summary: "uploads started longer ago than max-age and never completed (disk use)",
    explanation: include_str!("../EXPLAIN.md"),
    help: "remove the upload directory (level `fix` does it); a client still pushing starts its upload again",
    max_level: Fix,
    needs: [UPLOADS],
    options: [OptionSpec::new(
        "max-age",
        OptionKind::Duration,
        "168h",
        "an upload started longer ago than this is stale (Distribution's upload purging uses 168h)"
    )],
}

impl Check for StaleUploads {
    fn run(&self, cx: &CheckContext<'_>) -> CheckOutput {
        let max_age = cx.options.duration("max-age").unwrap_or(DEFAULT_MAX_AGE);
        run_at(cx, max_age, SystemTime::now())
    }

    fn recheck(&self, storage: &dyn Storage, finding: &Finding) -> Result<Recheck, StorageError> {
        // `recheck` is not given the policy's options: the finding carries the max-age it
        // was judged by.
        let Some(max_age) = finding
            .details
            .get("max_age_seconds")
            .and_then(DetailValue::as_u64)
            .map(Duration::from_secs)
        else {
            return Ok(Recheck::GONE);
        };
        let dir = &finding.path;
        if layout::removable(dir) != Some(Removable::Upload) {
            return Ok(Recheck::GONE);
        }
        let Some(meta) = storage.stat(dir)?.filter(|m| m.kind == EntryKind::Dir) else {
            return Ok(Recheck::GONE);
        };
        let Some(started) = started(storage, dir)? else {
            return Ok(Recheck::GONE);
        };
        let holds = age(SystemTime::now(), started.at) > max_age;
        let files = [
            Some(meta),
            storage.stat(&format!("{dir}/startedat"))?,
            storage.stat(&format!("{dir}/data"))?,
        ];
        let last_change = files.into_iter().flatten().filter_map(|m| m.modified).max();
        Ok(Recheck { holds, last_change })
    }
}

/// When an upload started, and how that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Started {
    at: SystemTime,
    /// `None` when `startedat` said so; otherwise why the directory's mtime was used.
    fallback: Option<String>,
}

fn run_at(cx: &CheckContext<'_>, max_age: Duration, now: SystemTime) -> CheckOutput {
    let uploads: Vec<(&str, &str)> = cx
        .inventory
        .repositories
        .iter()
        .flat_map(|r| r.uploads.iter().map(|id| (r.name.as_str(), id.as_str())))
        .collect();
    let results: Vec<Result<Option<Finding>, StorageError>> = uploads
        .par_iter()
        .map(|(repo, id)| inspect(cx, repo, id, max_age, now))
        .collect();
    let mut out = CheckOutput::default();
    for r in results {
        match r {
            Ok(Some(f)) => out.findings.push(f),
            Ok(None) => {}
            Err(e) => out.problems.push(cx.problem(e.path(), e.reason())),
        }
    }
    let stale = out.findings.len() as u64;
    let bytes = out
        .findings
        .iter()
        .filter_map(|f| f.details.get("size").and_then(DetailValue::as_u64))
        .sum();
    out.counters = vec![
        ("uploads_checked", uploads.len() as u64),
        ("stale", stale),
        ("bytes_stale", bytes),
    ];
    out
}

fn inspect(
    cx: &CheckContext<'_>,
    repo: &str,
    id: &str,
    max_age: Duration,
    now: SystemTime,
) -> Result<Option<Finding>, StorageError> {
    let dir = format!("{}/{id}", layout::uploads_dir(repo));
    let Some(started) = started(cx.storage, &dir)? else {
        return Ok(None); // completed or purged since the scan
    };
    let age = age(now, started.at);
    if age <= max_age {
        return Ok(None);
    }
    let data_path = format!("{dir}/data");
    let data = cx.storage.stat(&data_path)?;
    let startedat = format!("{dir}/startedat");
    let since = humantime::format_rfc3339_seconds(started.at).to_string();
    let mut f = cx
        .finding(
            ID,
            repo,
            dir.clone(),
            match started.fallback {
                None => format!(
                    "upload started {} ago and never completed (max-age {})",
                    rounded(age),
                    humantime::format_duration(max_age)
                ),
                Some(_) => format!(
                    "upload without a usable startedat, unchanged for {} (max-age {})",
                    rounded(age),
                    humantime::format_duration(max_age)
                ),
            },
        )
        .detail("upload", id.to_string())
        .detail("started_at", since.clone())
        .detail(
            "started_from",
            if started.fallback.is_some() {
                "mtime"
            } else {
                "startedat"
            },
        )
        .detail("age_seconds", age.as_secs())
        .detail("max_age_seconds", max_age.as_secs())
        .detail("size", data.map_or(0, |m| m.size));
    f = match &started.fallback {
        None => f.evidence(startedat, true, format!("says {since}")),
        Some(why) => f
            .detail("startedat_problem", why.clone())
            .evidence(startedat, false, why.clone())
            .evidence(dir.clone(), true, format!("last modified {since}")),
    };
    f = f.evidence(
        data_path,
        data.is_some(),
        data.map_or("no data written".to_string(), |m| {
            format!("{} bytes received", m.size)
        }),
    );
    let removable = layout::removable(&dir) == Some(Removable::Upload);
    let applicability = if removable && distribution_id(id) {
        Applicability::Safe
    } else {
        f = f.detail(
            "id_anomaly",
            "not a UUID: Distribution did not create this directory, so it is not removed unattended",
        );
        Applicability::NeedsReview
    };
    Ok(Some(f.fix(FixPlan {
        action: FixAction::RemoveDir { path: dir },
        applicability,
    })))
}

/// When the upload in `dir` started: its `startedat`, or else the directory's mtime.
/// `None` when the directory is gone.
fn started(storage: &dyn Storage, dir: &str) -> Result<Option<Started>, StorageError> {
    let why = match storage.read(&format!("{dir}/startedat"), STARTEDAT_LIMIT) {
        Ok(Some(bytes)) => match parse_started_at(&bytes) {
            Ok(at) => return Ok(Some(Started { at, fallback: None })),
            Err(why) => why,
        },
        Ok(None) => "startedat is missing".to_string(),
        Err(StorageError::TooLarge { .. }) => {
            format!("startedat is larger than {STARTEDAT_LIMIT} bytes")
        }
        Err(StorageError::Refused { reason, .. }) => format!("startedat: {reason}"),
        Err(e) => return Err(e),
    };
    match storage.stat(dir)? {
        Some(meta) if meta.kind == EntryKind::Dir => match meta.modified {
            Some(at) => Ok(Some(Started {
                at,
                fallback: Some(why),
            })),
            None => Err(StorageError::Refused {
                path: dir.to_string(),
                reason: format!("{why}, and the directory has no modification time"),
            }),
        },
        _ => Ok(None),
    }
}

/// Parses what Distribution writes to `startedat`: Go's `time.RFC3339`
/// (`2006-01-02T15:04:05Z07:00`), optionally with fractional seconds.
fn parse_started_at(bytes: &[u8]) -> Result<SystemTime, String> {
    let shown = || {
        String::from_utf8_lossy(bytes)
            .chars()
            .take(40)
            .collect::<String>()
    };
    let bad = || format!("startedat does not hold an RFC 3339 time: {:?}", shown());
    let text = std::str::from_utf8(bytes).map_err(|_| bad())?.trim();
    if text.ends_with('Z') {
        return humantime::parse_rfc3339(text).map_err(|_| bad());
    }
    // A numeric offset: `…±hh:mm`.
    let split = text.len().checked_sub(6).ok_or_else(bad)?;
    let (Some(base), Some(offset)) = (text.get(..split), text.get(split..)) else {
        return Err(bad());
    };
    let two = |hi: u8, lo: u8| {
        (hi.is_ascii_digit() && lo.is_ascii_digit())
            .then(|| u64::from(hi - b'0') * 10 + u64::from(lo - b'0'))
    };
    let &[sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] = offset.as_bytes() else {
        return Err(bad());
    };
    let (Some(hours @ 0..=23), Some(minutes @ 0..=59)) = (two(h1, h2), two(m1, m2)) else {
        return Err(bad());
    };
    let local = humantime::parse_rfc3339(&format!("{base}Z")).map_err(|_| bad())?;
    let shift = Duration::from_secs(hours * 3600 + minutes * 60);
    // Local time = UTC + offset, so UTC = local - offset.
    let utc = if sign == b'+' {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    };
    utc.ok_or_else(bad)
}

/// Whether `id` has the shape of the upload ids Distribution creates (a UUID, as its own
/// upload purging requires): only those are removed unattended.
fn distribution_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// How long ago `started` was; zero when it is in the future (clock skew).
fn age(now: SystemTime, started: SystemTime) -> Duration {
    now.duration_since(started).unwrap_or_default()
}

/// An age for a message: whole hours above an hour, else whole seconds.
fn rounded(age: Duration) -> humantime::FormattedDuration {
    let secs = age.as_secs();
    let secs = if secs >= 3600 {
        secs / 3600 * 3600
    } else {
        secs
    };
    humantime::format_duration(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use std::sync::Arc;

    use regfsck_core::audit::AuditLog;
    use regfsck_core::policy::PolicyFile;
    use regfsck_core::runner::{self, Action, RunOptions, RunReport};
    use regfsck_core::testing::{Tree, run_check};
    use regfsck_core::{CheckOptions, OptionValue, check};

    use super::*;

    // Upload ids are UUIDs, as Distribution creates them.
    const OLD: &str = "0d1e0000-aaaa-4bbb-8ccc-000000000001";
    const RECENT: &str = "f4e50000-aaaa-4bbb-8ccc-000000000002";
    const OLD_NESTED: &str = "77aa0000-aaaa-4bbb-8ccc-000000000003";
    const NOW: &str = "a1000000-aaaa-4bbb-8ccc-000000000004";
    const TWO_HOURS: &str = "01000000-aaaa-4bbb-8ccc-000000000005";
    const MISSING_OLD: &str = "7e550000-0000-4000-8000-00000000001d";
    const GARBAGE_OLD: &str = "6a4b0000-0000-4000-8000-00000000001d";
    const GARBAGE_NEW: &str = "6a4b0000-0000-4000-8000-00000000000e";
    const MISSING_NEW: &str = "7e550000-0000-4000-8000-00000000000e";
    const DIR: &str = "d1400000-0000-4000-8000-000000000000";
    const BIG: &str = "b1600000-0000-4000-8000-000000000000";
    const STALE: &str = "57a1e000-0000-4000-8000-000000000000";
    const FRESH: &str = "f7e54000-0000-4000-8000-000000000000";
    const NO_STARTEDAT: &str = "00000000-0000-4000-8000-0000000000aa";

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn reg() -> &'static regfsck_core::Registration {
        check::find(ID).expect("registered")
    }

    fn run(tree: &Tree) -> CheckOutput {
        run_check(reg(), "private", tree, None)
    }

    fn rfc3339(t: SystemTime) -> String {
        humantime::format_rfc3339_seconds(t).to_string()
    }

    fn upload_dir(repo: &str, id: &str) -> String {
        format!("{}/{id}", layout::uploads_dir(repo))
    }

    /// An upload as Distribution leaves it: `startedat`, some `data`, a hash state.
    fn upload(tree: &Tree, repo: &str, id: &str, started: Option<&str>, data: &[u8]) {
        let dir = upload_dir(repo, id);
        if let Some(s) = started {
            tree.write(&format!("{dir}/startedat"), s.as_bytes());
        }
        tree.write(&format!("{dir}/data"), data);
        tree.write(&format!("{dir}/hashstates/sha256/0"), b"state");
    }

    fn set_mtime(path: &Path, t: SystemTime) {
        std::fs::File::open(path)
            .expect("open")
            .set_modified(t)
            .expect("set mtime");
    }

    fn ids(out: &CheckOutput) -> Vec<(String, String)> {
        let mut v: Vec<_> = out
            .findings
            .iter()
            .map(|f| {
                let id = f.details["upload"].as_str().expect("upload").to_string();
                (f.repository.to_string(), id)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn finds_uploads_older_than_max_age() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let now = SystemTime::now();
        tree.image("team/app", &[b"layer"]);
        let old = rfc3339(now - 10 * DAY);
        upload(&tree, "team/app", OLD, Some(&old), b"half a layer");
        upload(
            &tree,
            "team/app",
            RECENT,
            Some(&rfc3339(now - DAY)),
            b"fresh",
        );
        upload(&tree, "team/app/api", OLD_NESTED, Some(&old), b"");
        let out = run(&tree);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(
            ids(&out),
            [
                ("team/app".to_string(), OLD.to_string()),
                ("team/app/api".to_string(), OLD_NESTED.to_string())
            ]
        );
        let f = out
            .findings
            .iter()
            .find(|f| &*f.repository == "team/app")
            .expect("finding");
        assert_eq!(*f.path, upload_dir("team/app", OLD));
        assert_eq!(f.digest, None);
        assert_eq!(
            &*f.message,
            "upload started 10days ago and never completed (max-age 7days)"
        );
        assert_eq!(f.details["started_at"], old);
        assert_eq!(f.details["started_from"], "startedat");
        assert_eq!(f.details["size"], 12);
        assert_eq!(f.details["max_age_seconds"], 168 * 3600);
        assert!(!f.details.contains_key("startedat_problem"));
        assert_eq!(
            f.fix.as_deref(),
            Some(&FixPlan {
                action: FixAction::RemoveDir {
                    path: upload_dir("team/app", OLD)
                },
                applicability: Applicability::Safe,
            })
        );
        assert_eq!(layout::removable(&f.path), Some(Removable::Upload));
        assert_eq!(
            out.counters,
            vec![("uploads_checked", 3), ("stale", 2), ("bytes_stale", 12)]
        );
    }

    #[test]
    fn a_healthy_registry_has_no_findings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let (m, _, _) = tree.image("team/app", &[b"layer"]);
        tree.tag("team/app", "latest", &m);
        upload(
            &tree,
            "team/app",
            NOW,
            Some(&rfc3339(SystemTime::now())),
            b"x",
        );
        let out = run(&tree);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(
            out.counters,
            vec![("uploads_checked", 1), ("stale", 0), ("bytes_stale", 0)]
        );
    }

    #[test]
    fn max_age_comes_from_the_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let two_hours = rfc3339(SystemTime::now() - Duration::from_secs(2 * 3600));
        upload(&tree, "a", TWO_HOURS, Some(&two_hours), b"");
        assert!(run(&tree).findings.is_empty());
        let mut opts = CheckOptions::defaults(reg().info.options);
        opts.set("max-age", OptionValue::Duration(Duration::from_secs(3600)));
        let out = run_check(reg(), "private", &tree, Some(opts));
        assert_eq!(ids(&out), [("a".to_string(), TWO_HOURS.to_string())]);
        assert_eq!(out.findings[0].details["max_age_seconds"], 3600);
        assert_eq!(
            &*out.findings[0].message,
            "upload started 2h ago and never completed (max-age 1h)"
        );
    }

    #[test]
    fn without_a_usable_startedat_the_directory_mtime_decides() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let long_ago = SystemTime::now() - 30 * DAY;
        upload(&tree, "a", MISSING_OLD, None, b"abc");
        upload(&tree, "a", GARBAGE_OLD, Some("yesterday-ish"), b"");
        upload(&tree, "a", GARBAGE_NEW, Some("\u{0}\u{1}"), b"");
        upload(&tree, "a", MISSING_NEW, None, b"");
        for id in [MISSING_OLD, GARBAGE_OLD] {
            set_mtime(&tree.path(&upload_dir("a", id)), long_ago);
        }
        let out = run(&tree);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(
            ids(&out),
            [
                ("a".to_string(), GARBAGE_OLD.to_string()),
                ("a".to_string(), MISSING_OLD.to_string())
            ]
        );
        for f in &out.findings {
            assert_eq!(f.details["started_from"], "mtime");
            assert_eq!(f.details["started_at"], rfc3339(long_ago));
        }
        let problem = |id: &str| {
            out.findings
                .iter()
                .find(|f| f.details["upload"] == id)
                .map(|f| f.details["startedat_problem"].clone())
                .expect("finding")
        };
        assert_eq!(problem(MISSING_OLD), "startedat is missing");
        assert!(
            out.findings.iter().all(|f| &*f.message
                == "upload without a usable startedat, unchanged for 30days (max-age 7days)"),
            "{:?}",
            out.findings
        );
        assert_eq!(
            problem(GARBAGE_OLD),
            "startedat does not hold an RFC 3339 time: \"yesterday-ish\""
        );
    }

    #[test]
    fn odd_startedat_files_fall_back_without_panicking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        // A directory where the file should be, and a file far too large.
        tree.write(&format!("{}/startedat/x", upload_dir("a", DIR)), b"");
        tree.write(
            &format!("{}/startedat", upload_dir("a", BIG)),
            &[b'9'; 4096],
        );
        // An upload directory that is a file is not an upload (the scan skips it).
        tree.write(&upload_dir("a", "plain-file"), b"");
        let long_ago = SystemTime::now() - 30 * DAY;
        for id in [DIR, BIG] {
            set_mtime(&tree.path(&upload_dir("a", id)), long_ago);
        }
        let out = run(&tree);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(
            ids(&out),
            [
                ("a".to_string(), BIG.to_string()),
                ("a".to_string(), DIR.to_string())
            ]
        );
        let why: BTreeMap<String, String> = out
            .findings
            .iter()
            .map(|f| {
                (
                    f.details["upload"].as_str().expect("id").to_string(),
                    f.details["startedat_problem"]
                        .as_str()
                        .expect("why")
                        .to_string(),
                )
            })
            .collect();
        assert_eq!(why[BIG], "startedat is larger than 256 bytes");
        assert_eq!(why[DIR], "startedat: expected a file, found a dir");
    }

    #[test]
    fn a_directory_distribution_did_not_create_is_left_for_review() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let old = rfc3339(SystemTime::now() - 10 * DAY);
        upload(&tree, "a", "backup-of-something", Some(&old), b"keep?");
        upload(&tree, "a", OLD, Some(&old), b"");
        let out = run(&tree);
        assert_eq!(
            ids(&out),
            [
                ("a".to_string(), OLD.to_string()),
                ("a".to_string(), "backup-of-something".to_string())
            ]
        );
        let plan = |id: &str| {
            let f = out
                .findings
                .iter()
                .find(|f| f.details["upload"] == id)
                .expect("finding");
            let fix = f.fix.clone().expect("a plan");
            (fix.applicability, f.details.contains_key("id_anomaly"))
        };
        assert_eq!(plan(OLD), (Applicability::Safe, false));
        assert_eq!(
            plan("backup-of-something"),
            (Applicability::NeedsReview, true)
        );
        assert!(distribution_id("6f1c3a52-0d1e-4c7a-9a55-1B2C3D4E5F60"));
        assert!(!distribution_id("6f1c3a52-0d1e-4c7a-9a55-1b2c3d4e5f6"));
        assert!(!distribution_id("6f1c3a52_0d1e-4c7a-9a55-1b2c3d4e5f60"));
        assert!(!distribution_id("6f1c3a52-0d1e-4c7a-9a55-1b2c3d4e5fg0"));
    }

    #[test]
    fn parses_what_distribution_writes() {
        let t = humantime::parse_rfc3339("2024-03-01T12:00:00Z").expect("time");
        for ok in [
            "2024-03-01T12:00:00Z",
            "2024-03-01T12:00:00Z\n",
            "2024-03-01T13:30:00+01:30",
            "2024-03-01T07:00:00-05:00",
        ] {
            assert_eq!(parse_started_at(ok.as_bytes()), Ok(t), "{ok}");
        }
        assert_eq!(
            parse_started_at(b"2024-03-01T12:00:00.25Z"),
            Ok(t + Duration::from_millis(250))
        );
        for bad in [
            &b""[..],
            b"Z",
            b"2024-03-01 12:00:00",
            b"2024-03-01T12:00:00+1:00",
            b"2024-03-01T12:00:00+24:00",
            b"2024-03-01T12:00:00+0a:00",
            b"2024-13-01T12:00:00Z",
            b"\xff\xfe",
            b"+00:00",
            "2024-03-01T12:00:00+01:0\u{e9}".as_bytes(),
            "\u{e9}\u{e9}\u{e9}\u{e9}".as_bytes(),
            b"2024-03-01T12:00:00",
        ] {
            assert!(parse_started_at(bad).is_err(), "{:?}", bad);
        }
    }

    #[test]
    fn recheck_sees_a_revived_or_vanished_upload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let old = rfc3339(SystemTime::now() - 10 * DAY);
        upload(&tree, "a", TWO_HOURS, Some(&old), b"data");
        let out = run(&tree);
        assert_eq!(out.findings.len(), 1);
        let f = &out.findings[0];
        let storage = tree.storage();

        let before = StaleUploads.recheck(&storage, f).expect("recheck");
        assert!(before.holds);
        let data_mtime = std::fs::metadata(tree.path(&format!("{}/data", f.path)))
            .and_then(|m| m.modified())
            .expect("mtime");
        assert!(before.last_change.expect("last change") >= data_mtime);

        // Data written since the scan moves last_change (the runner's grace period sees it).
        let later = SystemTime::now() + Duration::from_secs(5);
        set_mtime(&tree.path(&format!("{}/data", f.path)), later);
        let touched = StaleUploads.recheck(&storage, f).expect("recheck");
        assert!(touched.holds);
        assert_eq!(touched.last_change, Some(later));

        // A finding without the max-age it was judged by is never acted on.
        let mut bare = f.clone();
        bare.details.remove("max_age_seconds");
        assert_eq!(
            StaleUploads.recheck(&storage, &bare).expect("recheck"),
            Recheck::GONE
        );

        tree.write(
            &format!("{}/startedat", f.path),
            rfc3339(SystemTime::now()).as_bytes(),
        );
        assert!(!StaleUploads.recheck(&storage, f).expect("recheck").holds);
        tree.remove(&f.path);
        assert_eq!(
            StaleUploads.recheck(&storage, f).expect("recheck"),
            Recheck::GONE
        );
    }

    /// Every file below the root, with its content.
    fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            for e in std::fs::read_dir(dir).expect("read_dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    let rel = p.strip_prefix(root).expect("below root");
                    out.insert(
                        rel.to_string_lossy().into_owned(),
                        std::fs::read(&p).expect("read"),
                    );
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    /// Runs the real runner over a data root holding `private`, with this check at `fix`.
    fn fix_run(data_root: &Path, audit: &Path, grace: &str) -> RunReport {
        let toml = format!(
            "[registries.private]\ngrace = \"{grace}\"\n\n\
             [policies.fix.registries.private]\nstale-uploads = \"fix\"\n"
        );
        let file = PolicyFile::parse(Path::new("policy.toml"), &toml, Some("fix")).expect("policy");
        let opts = RunOptions {
            audit: Some(Arc::new(AuditLog::open(audit).expect("audit log"))),
            ..RunOptions::new(data_root, format!("test-{grace}"))
        };
        runner::run(&file, &file.policies["fix"], &opts).expect("run")
    }

    #[test]
    fn evidence_is_kept_only_when_it_will_be_shown() {
        let data = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(data.path().join("private"));
        upload(
            &tree,
            "app",
            STALE,
            Some(&rfc3339(SystemTime::now() - 8 * DAY)),
            b"x",
        );
        let toml = "[policies.p.registries.private]\nstale-uploads = \"warn\"\n";
        let file = PolicyFile::parse(Path::new("policy.toml"), toml, Some("p")).expect("policy");
        let evidence = |keep: bool| -> Vec<usize> {
            let opts = RunOptions {
                evidence: keep,
                ..RunOptions::new(data.path(), "test")
            };
            let report = runner::run(&file, &file.policies["p"], &opts).expect("run");
            report
                .outcomes
                .iter()
                .map(|o| o.finding.evidence.len())
                .collect()
        };
        let kept = evidence(true);
        assert_eq!(kept.len(), 1);
        assert!(kept[0] > 0, "{kept:?}");
        assert_eq!(evidence(false), [0]);
    }

    #[test]
    fn fixing_removes_only_stale_uploads() {
        let data = tempfile::tempdir().expect("tempdir");
        let logs = tempfile::tempdir().expect("tempdir");
        let audit = logs.path().join("audit.jsonl");
        let tree = Tree::new(data.path().join("private"));
        let now = SystemTime::now();
        let (m, _, _) = tree.image("team/app", &[b"one", b"two"]);
        tree.tag("team/app", "v1", &m);
        tree.image("base", &[b"one"]);
        upload(
            &tree,
            "team/app",
            STALE,
            Some(&rfc3339(now - 8 * DAY)),
            b"x",
        );
        upload(&tree, "team/app", FRESH, Some(&rfc3339(now)), b"y");
        upload(&tree, "base", NO_STARTEDAT, None, b"z");
        set_mtime(&tree.path(&upload_dir("base", NO_STARTEDAT)), now - 9 * DAY);
        let before = snapshot(tree.root());

        // Inside the grace period nothing goes: the stale uploads' files were just written.
        let report = fix_run(data.path(), &audit, "1day");
        let actions: Vec<(&str, Action)> = report
            .outcomes
            .iter()
            .map(|o| (&*o.finding.path, o.action))
            .collect();
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(
            actions.iter().all(|(_, a)| *a == Action::Skipped),
            "{actions:?}"
        );
        assert_eq!(snapshot(tree.root()), before);

        let report = fix_run(data.path(), &audit, "0s");
        let mut removed: Vec<&str> = report
            .outcomes
            .iter()
            .filter(|o| o.action == Action::Removed)
            .map(|o| &*o.finding.path)
            .collect();
        removed.sort_unstable();
        let gone = [
            upload_dir("base", NO_STARTEDAT),
            upload_dir("team/app", STALE),
        ];
        assert_eq!(removed, gone, "{:?}", report.outcomes);
        assert!(report.problems.is_empty(), "{:?}", report.problems);

        let mut want = before.clone();
        want.retain(|path, _| !gone.iter().any(|g| path.starts_with(&format!("{g}/"))));
        // startedat, data and a hash state; the other has no startedat.
        assert_eq!(want.len(), before.len() - 5);
        assert_eq!(snapshot(tree.root()), want);
        assert!(tree.exists(&upload_dir("team/app", FRESH)));
        // The `_uploads` directories themselves stay, as Distribution leaves them.
        assert!(tree.exists(&layout::uploads_dir("base")));
        // Both removals were logged, with the files that went.
        let records = regfsck_core::audit::read(&audit).expect("audit log");
        let logged: Vec<(&str, usize)> = records
            .iter()
            .map(|r| (r.path.as_str(), r.files.len()))
            .collect();
        assert_eq!(logged.len(), 2, "{logged:?}");
        assert!(logged.iter().all(|(_, n)| *n >= 2), "{logged:?}");
        assert!(run(&tree).findings.is_empty());
    }
}
