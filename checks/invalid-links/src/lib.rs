//! `invalid-links`: link files Distribution cannot parse, or that name another digest than
//! their directory.
//!
//! Distribution reads a link with `digest.Parse(content)`: no whitespace, no trailing newline,
//! `sha256:` and 64 lowercase hex. Its garbage collector walks every `link` under `_layers`
//! and `_manifests/revisions` and aborts on the first one that does not parse
//! (distribution #1960). Every link file of every repository is read once, by the scan
//! (`LINK_CONTENTS`), which shares what it read with the other checks.

use std::collections::BTreeMap;

use regfsck_core::finding::tag_refs;
use regfsck_core::scan::{CurrentLink, LinkFacts, Repository, parse_link};
use regfsck_core::storage::{LINK_READ_LIMIT, LinkState};
use regfsck_core::{
    Check, CheckContext, CheckOutput, Digest, Finding, Problem, StorageError, layout,
};

pub const ID: &str = "invalid-links";

pub struct InvalidLinks;

regfsck_core::declare_check! {
    check: InvalidLinks,
    id: "invalid-links",
    summary: "link files that are empty, not a sha256 digest, or name another digest than their directory (registry 500, GC aborts)",
    explanation: include_str!("../EXPLAIN.md"),
    help: "rewrite the link with the digest of its directory (`sha256:<hex>`, no newline) or push the image again; a tag's current link names the manifest the tag should serve",
    max_level: Warn,
    needs: [LAYERS, REVISIONS, TAGS, MANIFESTS, LINK_CONTENTS],
}

impl Check for InvalidLinks {
    fn run(&self, cx: &CheckContext<'_>) -> CheckOutput {
        cx.each_repository(
            &["links_read", "invalid_links", "link_files_missing"],
            |repo| check_repository(cx, repo).output(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Layer,
    Revision,
    TagCurrent,
    TagIndex,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Layer => "layer",
            Kind::Revision => "revision",
            Kind::TagCurrent => "tag_current",
            Kind::TagIndex => "tag_index",
        }
    }
}

/// One link file to read.
#[derive(Debug)]
struct Link<'r> {
    kind: Kind,
    path: String,
    /// The digest its directory names (`None` for a tag's current link).
    expected: Option<Digest>,
    tag: Option<&'r str>,
}

/// What is wrong with a link file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Invalid {
    Empty,
    NotUtf8,
    /// What it holds instead, shortened for display.
    NotADigest(String),
    /// Parses only once the newline is stripped: Distribution does not strip it.
    TrailingNewline(Digest),
    TooLarge,
    OtherDigest(Digest),
}

impl Invalid {
    fn code(&self) -> &'static str {
        match self {
            Invalid::Empty => "empty",
            Invalid::NotUtf8 => "not_utf8",
            Invalid::NotADigest(_) => "not_a_digest",
            Invalid::TrailingNewline(_) => "trailing_newline",
            Invalid::TooLarge => "too_large",
            Invalid::OtherDigest(_) => "other_digest",
        }
    }

    fn describe(&self) -> String {
        match self {
            Invalid::Empty => "is empty".into(),
            Invalid::NotUtf8 => "is not UTF-8".into(),
            Invalid::NotADigest(shown) => format!("does not hold a sha256 digest: {shown:?}"),
            Invalid::TrailingNewline(_) => {
                "ends with a newline, which distribution does not accept".into()
            }
            Invalid::TooLarge => format!("is larger than {LINK_READ_LIMIT} bytes"),
            Invalid::OtherDigest(d) => {
                format!("names {}, not the digest of its directory", d.short())
            }
        }
    }

    /// The digest the content names, when it names one.
    fn names(&self) -> Option<Digest> {
        match self {
            Invalid::TrailingNewline(d) | Invalid::OtherDigest(d) => Some(*d),
            _ => None,
        }
    }
}

/// Judges a link's content strictly, as Distribution's `digest.Parse` does.
fn judge(content: &[u8], expected: Option<Digest>) -> Option<Invalid> {
    let Ok(text) = std::str::from_utf8(content) else {
        return Some(Invalid::NotUtf8);
    };
    if text.trim().is_empty() {
        return Some(Invalid::Empty);
    }
    // parse_link is strict; look past one trailing newline to say what the link meant.
    let body = content.strip_suffix(b"\n").unwrap_or(content);
    match parse_link(body) {
        Err(_) => Some(Invalid::NotADigest(text.chars().take(80).collect())),
        Ok(d) if expected.is_some_and(|e| e != d) => Some(Invalid::OtherDigest(d)),
        Ok(d) if body.len() < content.len() => Some(Invalid::TrailingNewline(d)),
        Ok(_) => None,
    }
}

enum Outcome {
    Valid,
    Missing,
    Invalid(Invalid),
    Problem(Problem),
}

fn inspect(cx: &CheckContext<'_>, link: &Link<'_>) -> Outcome {
    match cx.storage.read(&link.path, LINK_READ_LIMIT as u64) {
        Ok(None) => Outcome::Missing,
        Ok(Some(content)) => match judge(&content, link.expected) {
            None => Outcome::Valid,
            Some(i) => Outcome::Invalid(i),
        },
        Err(StorageError::TooLarge { .. }) => Outcome::Invalid(Invalid::TooLarge),
        Err(e) => Outcome::Problem(cx.problem(e.path(), e.reason())),
    }
}

impl RepoResult {
    fn output(self) -> CheckOutput {
        let invalid = self.findings.len() as u64;
        CheckOutput {
            counters: vec![
                ("links_read", self.read),
                ("invalid_links", invalid),
                ("link_files_missing", self.missing),
            ],
            findings: self.findings,
            problems: self.problems,
        }
    }
}

#[derive(Debug, Default)]
struct RepoResult {
    findings: Vec<Finding>,
    problems: Vec<Problem>,
    read: u64,
    missing: u64,
}

/// Sorts the links the scan found not fine (it read every link file once, for all checks)
/// into missing ones and invalid ones; links it could not look at are its problems.
fn sort_odd<'r>(
    r: &mut RepoResult,
    invalid: &mut Vec<(Link<'r>, Invalid)>,
    facts: &LinkFacts,
    listed: usize,
    kind: Kind,
    tag: Option<&'r str>,
    path: impl Fn(&Digest) -> String,
) {
    if !facts.read() {
        return; // the scan could not open the directory, and said so
    }
    r.read += listed as u64;
    for (d, state) in facts.odd() {
        let why = match state {
            LinkState::Content(c) => judge(c, Some(*d)),
            LinkState::TooLarge => Some(Invalid::TooLarge),
            LinkState::Missing => {
                r.missing += 1;
                None
            }
            LinkState::NotAFile(_) | LinkState::Unreadable(_) => None,
        };
        if !matches!(state, LinkState::Content(_) | LinkState::TooLarge) {
            r.read -= 1;
        }
        if let Some(why) = why {
            let link = Link {
                kind,
                path: path(d),
                expected: Some(*d),
                tag,
            };
            invalid.push((link, why));
        }
    }
}

fn check_repository(cx: &CheckContext<'_>, repo: &Repository) -> RepoResult {
    let mut r = RepoResult::default();
    let mut invalid = Vec::new();
    let name = repo.name.as_str();
    let (layers, revisions) = (&repo.layer_links, &repo.revision_links);
    sort_odd(
        &mut r,
        &mut invalid,
        layers,
        repo.layers.len(),
        Kind::Layer,
        None,
        |d| layout::layer_link(name, d),
    );
    sort_odd(
        &mut r,
        &mut invalid,
        revisions,
        repo.revisions.len(),
        Kind::Revision,
        None,
        |d| layout::revision_link(name, d),
    );
    for tag in &repo.tags {
        let t = tag.name.as_str();
        sort_odd(
            &mut r,
            &mut invalid,
            &tag.index_links,
            tag.index.len(),
            Kind::TagIndex,
            Some(t),
            |d| layout::tag_index_link(name, t, d),
        );
        match &tag.current {
            CurrentLink::Names(_) => r.read += 1,
            CurrentLink::Missing => r.missing += 1,
            CurrentLink::Unreadable(_) => {} // the scan's problem
            CurrentLink::Malformed(_) => {
                // The scan parsed it; read it again to say exactly what is wrong (rare).
                let link = Link {
                    kind: Kind::TagCurrent,
                    path: layout::tag_current_link(name, t),
                    expected: None,
                    tag: Some(t),
                };
                match inspect(cx, &link) {
                    Outcome::Valid => r.read += 1,
                    Outcome::Missing => r.missing += 1,
                    Outcome::Problem(p) => r.problems.push(p),
                    Outcome::Invalid(why) => {
                        r.read += 1;
                        invalid.push((link, why));
                    }
                }
            }
        }
    }
    if invalid.is_empty() {
        return r;
    }
    // Naming the tags an invalid layer or revision link breaks costs manifest reads: only
    // repositories with such a finding pay it.
    let users = if invalid
        .iter()
        .any(|(l, _)| matches!(l.kind, Kind::Layer | Kind::Revision))
    {
        cx.tags_reaching(repo)
    } else {
        BTreeMap::new()
    };
    for (link, why) in invalid {
        let tags: Vec<&str> = match (link.tag, link.expected) {
            (Some(t), _) => vec![t],
            (None, Some(d)) => users
                .get(&d)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        r.findings.push(finding(cx, repo, &link, &why, &tags));
    }
    r
}

fn finding(
    cx: &CheckContext<'_>,
    repo: &Repository,
    link: &Link<'_>,
    why: &Invalid,
    tags: &[&str],
) -> Finding {
    let subject = match (link.kind, link.tag) {
        (Kind::Layer, _) => "layer link".to_string(),
        (Kind::Revision, _) => "revision link".to_string(),
        (Kind::TagCurrent, Some(t)) => format!("current link of tag {}:{t}", repo.name),
        (Kind::TagIndex, Some(t)) => format!("history link of tag {}:{t}", repo.name),
        (_, None) => "tag link".to_string(),
    };
    let users = match link.kind {
        Kind::Layer | Kind::Revision if !tags.is_empty() => {
            format!(" (used by {})", tag_refs(&repo.name, tags))
        }
        _ => String::new(),
    };
    let message = format!("{subject} {}{users}", why.describe());
    let digest = link.expected.or_else(|| why.names());
    let mut f = cx
        .finding(ID, &repo.name, link.path.clone(), message)
        .detail("link", link.kind.as_str())
        .detail("problem", why.code())
        .detail("tags", tags.to_vec())
        .evidence(link.path.clone(), true, why.describe());
    if let Some(d) = digest {
        f = f.digest(d);
    }
    if let Invalid::NotADigest(shown) = why {
        f = f.detail("content", shown.clone());
    }
    if let Some(named) = why.names() {
        f = f.detail("names", named);
        if link.expected.is_some_and(|e| e != named) {
            f = f.evidence(
                layout::blob_data(&named),
                cx.inventory.has_blob_data(&named),
                "the blob the link names instead",
            );
        }
    }
    f
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
    fn judges_content_as_distribution_parses_it() {
        let d = digest_of(b"x");
        let other = digest_of(b"y");
        let s = d.to_string();
        assert_eq!(judge(s.as_bytes(), Some(d)), None);
        assert_eq!(judge(s.as_bytes(), None), None);
        assert_eq!(judge(b"", Some(d)), Some(Invalid::Empty));
        assert_eq!(judge(b"\n", Some(d)), Some(Invalid::Empty));
        assert_eq!(judge(b"\xff\xfe", Some(d)), Some(Invalid::NotUtf8));
        assert_eq!(
            judge(format!("{s}\n").as_bytes(), Some(d)),
            Some(Invalid::TrailingNewline(d))
        );
        assert_eq!(
            judge(other.to_string().as_bytes(), Some(d)),
            Some(Invalid::OtherDigest(other))
        );
        assert_eq!(
            judge(format!("{other}\n").as_bytes(), Some(d)),
            Some(Invalid::OtherDigest(other))
        );
        for bad in [
            d.hex(),
            s.to_uppercase(),
            format!("{s} "),
            format!("{s}\r\n"),
            format!("sha512:{}", d.hex()),
        ] {
            assert!(
                matches!(judge(bad.as_bytes(), Some(d)), Some(Invalid::NotADigest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn healthy_links_are_not_findings() {
        let (_dir, tree) = tree();
        let (m, ..) = tree.image("team/app/api", &[b"one", b"two"]);
        tree.tag("team/app/api", "1.1", &m);
        let out = run(&tree);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        // 3 layer links (config + 2 layers), 1 revision, 1 current, 1 index entry.
        assert_eq!(
            out.counters,
            vec![
                ("links_read", 6),
                ("invalid_links", 0),
                ("link_files_missing", 0)
            ]
        );
    }

    #[test]
    fn each_kind_of_invalid_link_is_a_finding() {
        let (_dir, tree) = tree();
        let repo = "team/app/api";
        let (m, config, layers) = tree.image(repo, &[b"one", b"two"]);
        tree.tag(repo, "1.1", &m);
        tree.tag(repo, "latest", &m);
        // An empty layer link: distribution #1960.
        tree.write(&layout::layer_link(repo, &layers[0]), b"");
        // A revision link naming another digest.
        tree.write(
            &layout::revision_link(repo, &m),
            config.to_string().as_bytes(),
        );
        // A current link written with `echo`.
        tree.write(
            &layout::tag_current_link(repo, "latest"),
            format!("{m}\n").as_bytes(),
        );
        // Garbage in a history entry.
        tree.write(&layout::tag_index_link(repo, "1.1", &m), b"sha256:zzz");
        // A huge layer link.
        tree.write(&layout::layer_link(repo, &layers[1]), &[b'a'; 2000]);
        let out = run(&tree);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let mut got: Vec<(String, Option<Digest>, serde_json::Value, String)> = out
            .findings
            .iter()
            .map(|f| {
                (
                    f.path.to_string(),
                    f.digest,
                    details(f),
                    f.message.to_string(),
                )
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        // `latest`'s current link ends with a newline, so Distribution cannot resolve it:
        // only `1.1` reaches these links.
        let mut want = vec![
            (
                layout::layer_link(repo, &layers[0]),
                Some(layers[0]),
                json!({"link": "layer", "problem": "empty", "tags": ["1.1"]}),
                "layer link is empty (used by team/app/api:1.1)".to_string(),
            ),
            (
                layout::layer_link(repo, &layers[1]),
                Some(layers[1]),
                json!({"link": "layer", "problem": "too_large", "tags": ["1.1"]}),
                "layer link is larger than 1024 bytes (used by team/app/api:1.1)".to_string(),
            ),
            (
                layout::revision_link(repo, &m),
                Some(m),
                json!({"link": "revision", "problem": "other_digest", "tags": ["1.1"], "names": config.to_string()}),
                format!(
                    "revision link names {}, not the digest of its directory (used by team/app/api:1.1)",
                    config.short()
                ),
            ),
            (
                layout::tag_current_link(repo, "latest"),
                Some(m),
                json!({"link": "tag_current", "problem": "trailing_newline", "tags": ["latest"], "names": m.to_string()}),
                "current link of tag team/app/api:latest ends with a newline, which distribution does not accept".to_string(),
            ),
            (
                layout::tag_index_link(repo, "1.1", &m),
                Some(m),
                json!({"link": "tag_index", "problem": "not_a_digest", "tags": ["1.1"], "content": "sha256:zzz"}),
                "history link of tag team/app/api:1.1 does not hold a sha256 digest: \"sha256:zzz\"".to_string(),
            ),
        ];
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want);
        assert_eq!(
            out.counters,
            vec![
                ("links_read", 8),
                ("invalid_links", 5),
                ("link_files_missing", 0)
            ]
        );
        let revision = out
            .findings
            .iter()
            .find(|f| f.details["link"] == "revision")
            .expect("revision finding");
        assert_eq!(
            revision
                .evidence
                .iter()
                .map(|e| (e.path.clone(), e.present))
                .collect::<Vec<_>>(),
            vec![
                (layout::revision_link(repo, &m), true),
                (layout::blob_data(&config), true),
            ]
        );
    }

    #[test]
    fn untagged_links_name_no_tags_and_missing_link_files_are_counted() {
        let (_dir, tree) = tree();
        let d = digest_of(b"untagged");
        tree.write(&layout::layer_link("app", &d), b"garbage");
        let e = digest_of(b"no link file");
        std::fs::create_dir_all(tree.path(&layout::layer_link_dir("app", &e))).expect("mkdir");
        let out = run(&tree);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        let f = &out.findings[0];
        assert_eq!(&*f.repository, "app");
        assert_eq!(f.digest, Some(d));
        assert_eq!(
            &*f.message,
            "layer link does not hold a sha256 digest: \"garbage\""
        );
        assert_eq!(f.details["tags"], json!([]));
        assert_eq!(
            out.counters,
            vec![
                ("links_read", 1),
                ("invalid_links", 1),
                ("link_files_missing", 1)
            ]
        );
    }

    #[test]
    fn a_link_that_is_a_directory_is_a_problem_not_a_panic() {
        let (_dir, tree) = tree();
        let d = digest_of(b"odd");
        tree.write(&format!("{}/inner", layout::layer_link("app", &d)), b"");
        let out = run(&tree);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        assert_eq!(out.problems.len(), 1, "{:?}", out.problems);
        assert_eq!(out.problems[0].path, layout::layer_link("app", &d));
        assert_eq!(out.counters[0], ("links_read", 0));
    }

    #[test]
    fn non_digest_directories_are_left_to_the_scan() {
        let (_dir, tree) = tree();
        tree.write(
            &format!("{}/not-a-digest/link", layout::layers_dir("app")),
            b"",
        );
        let out = run(&tree);
        assert!(out.findings.is_empty(), "{:?}", out.findings);
        // The scan's own problem, once; the check adds none.
        assert_eq!(out.problems.len(), 1, "{:?}", out.problems);
        assert!(
            out.problems[0]
                .path
                .ends_with("_layers/sha256/not-a-digest")
        );
    }

    #[test]
    fn layer_links_of_index_children_name_the_index_tags() {
        let (_dir, tree) = tree();
        let (child, _, layers) = tree.image("app", &[b"arm"]);
        let idx = tree.index("app", None, &[(child, "linux", "arm64")]);
        tree.tag("app", "multi", &idx);
        tree.write(&layout::layer_link("app", &layers[0]), b"sha256:");
        let out = run(&tree);
        assert_eq!(out.findings.len(), 1, "{:?}", out.findings);
        assert_eq!(out.findings[0].details["tags"], json!(["multi"]));
    }
}
