//! `dangling-tags`: tags whose manifest the repository cannot serve.
//!
//! A pull by tag reads `_manifests/tags/<t>/current/link`, then the repository's revision
//! link for that digest, then the manifest's blob data. Any of the three missing (or the first
//! unparseable) and the pull fails with `manifest unknown`. The tag's history
//! (`index/sha256/<d>`) is checked the same way, but reported as history: it breaks no pull.

use std::collections::{BTreeMap, HashMap};

use regfsck_core::finding::tag_refs;
use regfsck_core::scan::{CurrentLink, Repository};
use regfsck_core::{Check, CheckContext, CheckOutput, Digest, Finding, Problem, layout};

pub const ID: &str = "dangling-tags";

pub struct DanglingTags;

regfsck_core::declare_check! {
    check: DanglingTags,
    id: "dangling-tags",
    summary: "tags whose current link is unparseable or names a manifest the repository lost (manifest unknown)",
    explanation: include_str!("../EXPLAIN.md"),
    help: "push the tag again, or re-create the manifest's revision link while its blobs still exist; remove the tag directory of a tag nobody needs",
    max_level: Warn,
    needs: [TAGS, REVISIONS],
}

impl Check for DanglingTags {
    fn run(&self, cx: &CheckContext<'_>) -> CheckOutput {
        cx.each_repository(
            &[
                "tags_checked",
                "index_entries_checked",
                "dangling_tags",
                "dangling_index_entries",
            ],
            |repo| check_repository(cx, repo).output(),
        )
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    tags_checked: u64,
    index_entries_checked: u64,
    /// Tags a pull fails for: current link missing, unparseable, or naming a lost manifest.
    dangling_tags: u64,
    /// (tag, digest) history entries naming a lost manifest.
    dangling_index_entries: u64,
}

impl RepoResult {
    fn output(self) -> CheckOutput {
        let c = self.counts;
        CheckOutput {
            findings: self.findings,
            problems: self.problems,
            counters: vec![
                ("tags_checked", c.tags_checked),
                ("index_entries_checked", c.index_entries_checked),
                ("dangling_tags", c.dangling_tags),
                ("dangling_index_entries", c.dangling_index_entries),
            ],
        }
    }
}

#[derive(Debug, Default)]
struct RepoResult {
    findings: Vec<Finding>,
    problems: Vec<Problem>,
    counts: Counts,
}

fn state(present: bool) -> &'static str {
    if present { "present" } else { "missing" }
}

fn check_repository(cx: &CheckContext<'_>, repo: &Repository) -> RepoResult {
    let mut r = RepoResult::default();
    // Manifest digest -> the tags whose current link names it (sorted: tags are sorted).
    let mut current: BTreeMap<Digest, Vec<&str>> = BTreeMap::new();
    for tag in &repo.tags {
        r.counts.tags_checked += 1;
        let path = layout::tag_current_link(&repo.name, &tag.name);
        let read = tag.current.clone();
        match read {
            CurrentLink::Names(d) => current.entry(d).or_default().push(&tag.name),
            CurrentLink::Missing => {
                r.counts.dangling_tags += 1;
                r.findings.push(
                    cx.finding(
                        ID,
                        &repo.name,
                        path.clone(),
                        format!("tag {}:{} has no current link", repo.name, tag.name),
                    )
                    .detail("tags", vec![tag.name.clone()])
                    .detail("link", "current")
                    .detail("current_link", "missing")
                    .evidence(
                        format!("{}/{}", layout::tags_dir(&repo.name), tag.name),
                        true,
                        "the tag the registry lists",
                    )
                    .evidence(path, false, "current link is missing"),
                );
            }
            // The scan could not read it and reported that as a problem.
            CurrentLink::Unreadable(_) => continue,
            CurrentLink::Malformed(why) => {
                r.counts.dangling_tags += 1;
                r.findings.push(
                    cx.finding(
                        ID,
                        &repo.name,
                        path.clone(),
                        format!(
                            "tag {}:{} has an unparseable current link: {why}",
                            repo.name, tag.name
                        ),
                    )
                    .detail("tags", vec![tag.name.clone()])
                    .detail("link", "current")
                    .detail("current_link", "malformed")
                    .detail("reason", why.clone())
                    .evidence(path, true, why),
                );
            }
        }
    }

    // Revision links of current targets: a pull needs the link file, not just its directory
    // (the registry's manifest DELETE removes the file and leaves the directory).
    let mut revision: HashMap<Digest, bool> = HashMap::new();
    for (d, tags) in &current {
        let Some(rev) = revision_link_present(cx, repo, d, &mut r.problems) else {
            continue;
        };
        revision.insert(*d, rev);
        let blob = cx.inventory.has_blob_data(d);
        if rev && blob {
            continue;
        }
        r.counts.dangling_tags += tags.len() as u64;
        r.findings
            .push(lost_manifest(cx, repo, d, tags, Entry::Current, rev, blob));
    }

    // History entries: the entry equal to the tag's current target is judged above.
    let mut history: BTreeMap<Digest, Vec<&str>> = BTreeMap::new();
    for tag in &repo.tags {
        for h in &tag.index {
            r.counts.index_entries_checked += 1;
            if tag.current.digest() != Some(*h) {
                history.entry(*h).or_default().push(&tag.name);
            }
        }
    }
    for (d, tags) in &history {
        let rev = match revision.get(d) {
            Some(known) => *known,
            None => match revision_link_present(cx, repo, d, &mut r.problems) {
                Some(rev) => rev,
                None => continue,
            },
        };
        let blob = cx.inventory.has_blob_data(d);
        if rev && blob {
            continue;
        }
        r.counts.dangling_index_entries += tags.len() as u64;
        r.findings
            .push(lost_manifest(cx, repo, d, tags, Entry::History, rev, blob));
    }
    r
}

fn what_is_missing(revision: bool, blob: bool) -> &'static str {
    match (revision, blob) {
        (false, false) => "revision link and blob data are missing",
        (false, true) => "revision link is missing",
        _ => "blob data is missing",
    }
}

/// Whether `_manifests/revisions/sha256/<d>/link` is a file; `None` when it cannot be told.
fn revision_link_present(
    cx: &CheckContext<'_>,
    repo: &Repository,
    d: &Digest,
    problems: &mut Vec<Problem>,
) -> Option<bool> {
    match cx.revision_link_exists(repo, d) {
        Ok(present) => Some(present),
        Err(e) => {
            problems.push(cx.problem(e.path(), e.reason()));
            None
        }
    }
}

/// Which of a tag's links names the lost manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Current,
    History,
}

/// The finding for a manifest that tags name but the repository cannot serve.
fn lost_manifest(
    cx: &CheckContext<'_>,
    repo: &Repository,
    d: &Digest,
    tags: &[&str],
    entry: Entry,
    revision: bool,
    blob: bool,
) -> Finding {
    let refs = tag_refs(&repo.name, tags);
    let missing = what_is_missing(revision, blob);
    let message = match entry {
        Entry::Current if tags.len() == 1 => {
            format!(
                "tag {refs} points at manifest {} whose {missing}",
                d.short()
            )
        }
        Entry::Current => format!(
            "tags {refs} point at manifest {} whose {missing}",
            d.short()
        ),
        Entry::History => format!(
            "history of {refs} names manifest {} whose {missing}",
            d.short()
        ),
    };
    // The path is what is missing: the revision link first (what the registry reads first).
    let path = if revision {
        layout::blob_data(d)
    } else {
        layout::revision_link(&repo.name, d)
    };
    let names: Vec<String> = tags.iter().map(|t| (*t).to_string()).collect();
    let mut f = cx
        .finding(ID, &repo.name, path, message)
        .digest(*d)
        .detail("tags", names)
        .detail(
            "link",
            match entry {
                Entry::Current => "current",
                Entry::History => "index",
            },
        )
        .detail("revision_link", state(revision))
        .detail("blob_data", state(blob));
    for t in tags {
        f = match entry {
            Entry::Current => f.evidence(
                layout::tag_current_link(&repo.name, t),
                true,
                format!("tag {t} names {d}"),
            ),
            Entry::History => f.evidence(
                layout::tag_index_link(&repo.name, t, d),
                true,
                format!("history entry of tag {t}"),
            ),
        };
    }
    f.evidence(
        layout::revision_link(&repo.name, d),
        revision,
        format!("revision link {}", state(revision)),
    )
    .evidence(
        layout::blob_data(d),
        blob,
        format!("manifest blob data {}", state(blob)),
    )
}

#[cfg(test)]
mod tests {
    use regfsck_core::check;
    use regfsck_core::testing::{Tree, digest_of, run_check};
    use serde_json::json;

    use super::*;

    fn run(tree: &Tree) -> CheckOutput {
        run_check(check::find(ID).expect("registered"), "private", tree, None)
    }

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        (dir, tree)
    }

    fn details(f: &Finding) -> serde_json::Value {
        serde_json::Value::Object(f.details.to_map())
    }

    #[test]
    fn healthy_tags_are_not_findings() {
        let (_dir, tree) = tree();
        let (m1, ..) = tree.image("team/app/api", &[b"one"]);
        let (m2, ..) = tree.image("team/app/api", &[b"two"]);
        tree.tag("team/app/api", "1.0", &m1);
        tree.tag("team/app/api", "latest", &m1);
        tree.tag("team/app/api", "latest", &m2); // moved: history holds m1 and m2
        let out = run(&tree);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(
            out.counters,
            vec![
                ("tags_checked", 2),
                ("index_entries_checked", 3),
                ("dangling_tags", 0),
                ("dangling_index_entries", 0),
            ]
        );
    }

    #[test]
    fn a_tag_whose_revision_link_is_gone_is_one_finding_naming_every_tag() {
        let (_dir, tree) = tree();
        let repo = "team/app/api";
        let (m, ..) = tree.image(repo, &[b"one"]);
        tree.tag(repo, "1.1", &m);
        tree.tag(repo, "latest", &m);
        tree.remove(&format!("{}/{}", layout::revisions_dir(repo), m.hex()));
        let out = run(&tree);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        let f = &out.findings[0];
        assert_eq!(f.check, ID);
        assert_eq!(&*f.registry, "private");
        assert_eq!(&*f.repository, repo);
        assert_eq!(f.digest, Some(m));
        assert_eq!(*f.path, layout::revision_link(repo, &m));
        assert_eq!(
            *f.message,
            format!(
                "tags team/app/api:1.1, team/app/api:latest point at manifest {} whose revision link is missing",
                m.short()
            )
        );
        assert_eq!(
            details(f),
            json!({
                "tags": ["1.1", "latest"],
                "link": "current",
                "revision_link": "missing",
                "blob_data": "present",
            })
        );
        let missing: Vec<&str> = f
            .evidence
            .iter()
            .filter(|e| !e.present)
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(missing, [layout::revision_link(repo, &m)]);
        assert_eq!(
            out.counters[2..],
            [("dangling_tags", 2), ("dangling_index_entries", 0)]
        );
    }

    #[test]
    fn a_tag_whose_manifest_blob_is_gone_is_a_finding() {
        let (_dir, tree) = tree();
        let (m, ..) = tree.image("app", &[b"one"]);
        tree.tag("app", "1.1", &m);
        tree.remove(&layout::blob_data(&m));
        let out = run(&tree);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        let f = &out.findings[0];
        assert_eq!(f.digest, Some(m));
        assert_eq!(*f.path, layout::blob_data(&m));
        assert_eq!(
            *f.message,
            format!(
                "tag app:1.1 points at manifest {} whose blob data is missing",
                m.short()
            )
        );
        assert_eq!(
            details(f),
            json!({"tags": ["1.1"], "link": "current", "revision_link": "present", "blob_data": "missing"})
        );
    }

    #[test]
    fn a_revision_directory_without_its_link_file_is_missing() {
        let (_dir, tree) = tree();
        let (m, ..) = tree.image("app", &[b"one"]);
        tree.tag("app", "1.1", &m);
        tree.remove(&layout::revision_link("app", &m)); // the directory stays
        let out = run(&tree);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        assert_eq!(out.findings[0].details["revision_link"], "missing");
    }

    #[test]
    fn a_revision_link_that_is_a_directory_is_missing() {
        let (_dir, tree) = tree();
        let (m, ..) = tree.image("app", &[b"one"]);
        tree.tag("app", "1.1", &m);
        tree.remove(&layout::revision_link("app", &m));
        tree.write(&format!("{}/x", layout::revision_link("app", &m)), b"");
        let out = run(&tree);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        assert_eq!(out.findings[0].details["revision_link"], "missing");
    }

    #[test]
    fn a_tag_naming_a_manifest_never_pushed_here_is_a_finding() {
        let (_dir, tree) = tree();
        tree.image("app", &[b"one"]); // the repository exists
        let ghost = digest_of(b"never pushed");
        tree.tag("app", "ghost", &ghost);
        let out = run(&tree);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        let f = &out.findings[0];
        assert_eq!(f.digest, Some(ghost));
        assert_eq!(*f.path, layout::revision_link("app", &ghost));
        assert_eq!(
            details(f),
            json!({"tags": ["ghost"], "link": "current", "revision_link": "missing", "blob_data": "missing"})
        );
        assert!(
            f.message
                .ends_with("whose revision link and blob data are missing")
        );
    }

    #[test]
    fn unparseable_and_missing_current_links_are_findings() {
        let (_dir, tree) = tree();
        let (m, ..) = tree.image("app", &[b"one"]);
        tree.tag("app", "empty", &m);
        tree.write(&layout::tag_current_link("app", "empty"), b"");
        tree.tag("app", "garbage", &m);
        tree.write(
            &layout::tag_current_link("app", "garbage"),
            b"sha256:not-hex",
        );
        tree.tag("app", "huge", &m);
        tree.write(&layout::tag_current_link("app", "huge"), &[b'x'; 4096]);
        tree.tag("app", "none", &m);
        tree.remove(&format!("{}/none/current", layout::tags_dir("app")));
        tree.tag("app", "ok", &m);
        let out = run(&tree);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let got: Vec<(Option<Digest>, String, serde_json::Value)> = out
            .findings
            .iter()
            .map(|f| (f.digest, f.path.to_string(), details(f)))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    None,
                    layout::tag_current_link("app", "empty"),
                    json!({"tags": ["empty"], "link": "current", "current_link": "malformed", "reason": "link file is empty"})
                ),
                (
                    None,
                    layout::tag_current_link("app", "garbage"),
                    json!({"tags": ["garbage"], "link": "current", "current_link": "malformed", "reason": "link does not hold a sha256 digest: \"sha256:not-hex\""})
                ),
                (
                    None,
                    layout::tag_current_link("app", "huge"),
                    json!({"tags": ["huge"], "link": "current", "current_link": "malformed", "reason": "link file is larger than 1024 bytes"})
                ),
                (
                    None,
                    layout::tag_current_link("app", "none"),
                    json!({"tags": ["none"], "link": "current", "current_link": "missing"})
                ),
            ]
        );
        assert_eq!(
            &*out.findings[0].message,
            "tag app:empty has an unparseable current link: link file is empty"
        );
        assert_eq!(
            &*out.findings[3].message,
            "tag app:none has no current link"
        );
        assert_eq!(out.counters[0], ("tags_checked", 5));
        assert_eq!(out.counters[2], ("dangling_tags", 4));
    }

    #[test]
    fn a_current_link_that_is_a_directory_is_a_problem_not_a_panic() {
        let (_dir, tree) = tree();
        let (m, ..) = tree.image("app", &[b"one"]);
        tree.tag("app", "odd", &m);
        tree.remove(&layout::tag_current_link("app", "odd"));
        tree.write(
            &format!("{}/inside", layout::tag_current_link("app", "odd")),
            b"",
        );
        let out = run(&tree);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert_eq!(out.problems.len(), 1, "{:?}", out.problems);
        assert_eq!(out.problems[0].path, layout::tag_current_link("app", "odd"));
    }

    #[test]
    fn dangling_history_entries_are_reported_as_history() {
        let (_dir, tree) = tree();
        let (old, ..) = tree.image("app", &[b"one"]);
        let (new, ..) = tree.image("app", &[b"two"]);
        tree.tag("app", "latest", &old);
        tree.tag("app", "stable", &old);
        tree.tag("app", "latest", &new);
        tree.tag("app", "stable", &new);
        // Someone deleted the old revision by hand; the tags' history still names it.
        tree.remove(&format!("{}/{}", layout::revisions_dir("app"), old.hex()));
        tree.remove(&layout::blob_dir(&old));
        let out = run(&tree);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        let f = &out.findings[0];
        assert_eq!(f.digest, Some(old));
        assert_eq!(*f.path, layout::revision_link("app", &old));
        assert_eq!(
            *f.message,
            format!(
                "history of app:latest, app:stable names manifest {} whose revision link and blob data are missing",
                old.short()
            )
        );
        assert_eq!(
            details(f),
            json!({"tags": ["latest", "stable"], "link": "index", "revision_link": "missing", "blob_data": "missing"})
        );
        let present: Vec<&str> = f
            .evidence
            .iter()
            .filter(|e| e.present)
            .map(|e| e.path.as_str())
            .collect();
        assert_eq!(
            present,
            [
                layout::tag_index_link("app", "latest", &old),
                layout::tag_index_link("app", "stable", &old)
            ]
        );
        assert_eq!(
            out.counters,
            vec![
                ("tags_checked", 2),
                ("index_entries_checked", 4),
                ("dangling_tags", 0),
                ("dangling_index_entries", 2),
            ]
        );
    }

    #[test]
    fn the_current_entry_of_the_history_is_reported_once() {
        let (_dir, tree) = tree();
        let (m, ..) = tree.image("app", &[b"one"]);
        tree.tag("app", "1.1", &m);
        tree.remove(&layout::blob_data(&m));
        let out = run(&tree);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        assert_eq!(out.findings[0].details["link"], "current");
    }

    #[test]
    fn many_tags_are_summarised_in_the_message() {
        assert_eq!(
            tag_refs("a", &["1", "2", "3", "4", "5"]),
            "a:1, a:2, a:3 and 2 more"
        );
        assert_eq!(tag_refs("a", &["1"]), "a:1");
    }

    #[test]
    fn a_history_entry_whose_manifest_was_deleted_through_the_api_dangles() {
        let (_dir, tree) = tree();
        let (old, ..) = tree.image("app", &[b"old"]);
        let (new, ..) = tree.image("app", &[b"new"]);
        tree.tag("app", "latest", &old);
        tree.tag("app", "latest", &new);
        // The manifest DELETE removes the link file and leaves its directory.
        tree.remove(&layout::revision_link("app", &old));
        let out = run(&tree);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        assert_eq!(out.findings[0].digest, Some(old));
        assert_eq!(out.findings[0].details["revision_link"], "missing");
    }
}
