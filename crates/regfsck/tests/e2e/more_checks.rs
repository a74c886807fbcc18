//! Issue #5: a case per check, with the real Distribution 2.8.2 producing the
//! breakage wherever it can, and by hand (documented) where it cannot. Each
//! case asserts regfsck's exact findings over every check (so nothing is
//! reported on the healthy images around the breakage) and what clients see
//! through the real registry.
//!
//! | check | route |
//! |---|---|
//! | `missing-referenced-blobs` | `garbage-collect --delete-untagged`, then CI re-pushes a per-arch tag while the registry's descriptor cache is warm |
//! | `dangling-tags` | a pull-through cache's manifest TTL expires (the registry's own scheduler); a manifest `DELETE` that fails half-way |
//! | `stale-uploads` | an interrupted push (`POST` + `PATCH`, then nothing) |
//! | `unreferenced-blobs` | a repository deleted the 2.8 way (`rm -rf` its directory), cross-checked with `garbage-collect --dry-run` |
//! | `orphan-layer-links`, `missing-referenced-blobs` | the same cache expiry deletes the data of a layer another cached repository still links |
//! | `corrupt-blobs` | by hand: no real route (the registry verifies digests on upload) |
//! | `invalid-links` | by hand: no real route (the registry writes links itself) |
//!
//! The registry API's own deletes (`DELETE /v2/<name>/manifests/<digest>`,
//! `DELETE /v2/<name>/blobs/<digest>`) remove only the `link` file and leave
//! its digest directory: `api_deletes_leave_empty_digest_directories` pins
//! that, and `regfsck_sees_what_api_deletes_leave` (ignored until regfsck
//! reads link files there) says what regfsck should report.

use crate::gc_scenario::{Answer, amd64, arm64, blob_answers, out_text, wait_cached};
use crate::http;
use crate::lab::{
    Expect, Lab, assert_findings, assert_findings_tolerating, blob_data_path, blob_dir_path,
    counter, layer_link_path, repo_path, revision_link_path, single, tag_current_path,
};
use crate::oci::{self, Artifact, Format, Image, IndexKind};
use crate::registry::Registry;
use crate::storage::{self, OrphanChild, OrphanLink};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ helpers

/// regfsck's scan takes the digest directories under `_layers/` and
/// `_manifests/revisions/` for links without looking for their `link` file,
/// but 2.8.2 removes only that file when it deletes through the API or when a
/// pull-through cache's TTL expires. Set to `false` once regfsck reads the
/// link files: the live cases then require exactly the correct findings (and
/// un-ignore `regfsck_sees_what_api_deletes_leave`).
const EMPTY_DIGEST_DIRS_READ_AS_LINKS: bool = false;

/// The path part of a `Location` header (2.8.2 sends absolute URLs).
fn location_path(r: &http::Response) -> String {
    let loc = r.header("location").expect("Location header");
    match loc.find("/v2/") {
        Some(i) => loc[i..].to_string(),
        None => loc.to_string(),
    }
}

fn delete(addr: &str, path: &str) -> http::Response {
    http::request("DELETE", addr, path, &[]).unwrap_or_else(|e| panic!("DELETE {path}: {e}"))
}

fn manifest_answer(reg: &Registry, repo: &str, reference: &str) -> (u16, Option<String>) {
    let r = http::get_manifest(&reg.addr(), repo, reference).expect("GET manifest");
    let a = Answer::of(&r);
    (a.status, a.error_code)
}

/// `(status, error code)` of a GET of a blob.
fn blob_get(reg: &Registry, repo: &str, digest: &str) -> (u16, Option<String>) {
    let (_, get, _) = blob_answers(&reg.addr(), repo, digest);
    (get.status, get.error_code)
}

fn image(a: &Artifact) -> &Image {
    crate::lab::image_of(a)
}

/// Asserts skopeo failed and its last line contains `needle`; returns it.
fn assert_failed(out: &std::process::Output, needle: &str, what: &str) -> String {
    let text = out_text(out);
    let last = text
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        !out.status.success() && last.contains(needle),
        "{what}: expected a failure with {needle:?}, got {}:\n{text}",
        out.status
    );
    last
}

/// The `orphan-layer-links` finding (level warn) for what the test itself
/// found on disk.
fn orphan_link(o: &OrphanLink, data: &Path) -> Expect {
    let hex = oci::hex_of(&o.digest);
    let blob_dir = data
        .join(&o.registry)
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    Expect::warn(
        "orphan-layer-links",
        &o.registry,
        &o.repository,
        Some(&o.digest),
        o.rel_dir(),
        json!({"blob_dir": if blob_dir.is_dir() { "present" } else { "missing" }}),
    )
}

fn orphan_child(c: &OrphanChild) -> Expect {
    Expect::warn(
        "orphan-index-children",
        &c.registry,
        &c.repository,
        Some(&c.child),
        revision_link_path(&c.registry, &c.repository, &c.child),
        json!({
            "index": c.index,
            "platform": c.platform,
            "child_blob": if c.child_blob_present { "present" } else { "missing" },
        }),
    )
}

/// What the test finds on disk for the two seed checks.
fn seed_findings(data: &Path) -> BTreeSet<Expect> {
    let mut e: BTreeSet<Expect> = storage::orphan_links(data)
        .iter()
        .map(|o| orphan_link(o, data))
        .collect();
    e.extend(storage::orphan_children(data).iter().map(orphan_child));
    e
}

/// The digests `garbage-collect` lists as "blob eligible for deletion".
fn gc_eligible(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("blob eligible for deletion: "))
        .map(|d| d.trim().to_string())
        .collect()
}

fn gc_dry_run(reg: &Registry) -> BTreeSet<String> {
    let (ok, text) = reg.try_garbage_collect(&["--dry-run"]);
    assert!(
        ok,
        "garbage-collect --dry-run on {}:\n{text}",
        reg.spec.name
    );
    gc_eligible(&text)
}

fn link_file(v2: &Path, kind: &str, repo: &str, digest: &str) -> std::path::PathBuf {
    v2.join("repositories")
        .join(repo)
        .join(kind)
        .join("sha256")
        .join(oci::hex_of(digest))
        .join("link")
}

// ------------------------------------------------------------------ stale-uploads

/// An interrupted push leaves `_uploads/<uuid>`; `fix` removes exactly that
/// directory and the registry goes on working.
#[test]
fn stale_upload_is_found_and_removed() {
    let mut lab = Lab::new("stale-uploads");
    let reg = lab.registry("private");
    let base = lab.layer("alpine", 2);
    let alpine = single(&lab, Format::Oci, &[&base]);
    let repo = "base/alpine";
    lab.push(&reg, repo, "3.19", &alpine);

    // POST starts an upload, one PATCH sends part of a layer, then the
    // client goes away.
    let post = http::request_with_body(
        "POST",
        &reg.addr(),
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        &[],
    )
    .expect("POST upload");
    assert_eq!(post.status, 202, "POST upload: {}", post.body_text());
    let uuid = post
        .header("docker-upload-uuid")
        .expect("Docker-Upload-UUID")
        .to_string();
    let chunk = lab.layer("interrupted", 3).gz;
    let patch = http::request_with_body(
        "PATCH",
        &reg.addr(),
        &location_path(&post),
        &[("Content-Type", "application/octet-stream")],
        &chunk,
    )
    .expect("PATCH upload");
    let range = format!("0-{}", chunk.len() - 1);
    assert_eq!(
        (patch.status, patch.header("range")),
        (202, Some(range.as_str())),
        "PATCH upload: {}",
        patch.body_text()
    );
    // The upload can be resumed: its status URL answers 204 with the range.
    let status = http::get(&reg.addr(), &location_path(&patch)).expect("GET upload status");
    assert_eq!(
        (status.status, status.header("range")),
        (204, Some(range.as_str()))
    );
    let upload_dir = reg
        .v2()
        .join("repositories")
        .join(repo)
        .join("_uploads")
        .join(&uuid);
    assert_eq!(
        std::fs::metadata(upload_dir.join("data"))
            .map(|m| m.len())
            .ok(),
        Some(chunk.len() as u64),
        "the upload's data holds what was sent"
    );
    let started_at = std::fs::read_to_string(upload_dir.join("startedat")).expect("startedat");

    let policy = lab.policy(
        r#"[policies.uploads-1h]
description = "stale uploads, Distribution's own age"
[policies.uploads-1h.registries."*"]
stale-uploads = "fix"
[policies.uploads-1h.options.stale-uploads]
max-age = "1h"

[policies.uploads]
description = "stale uploads, after one second"
[policies.uploads.registries."*"]
stale-uploads = "fix"
[policies.uploads.options.stale-uploads]
max-age = "1s"
"#,
    );
    // An upload in progress is nobody's business (default max-age 168h), nor
    // with max-age 1h.
    let run = lab.regfsck(&policy, "all", true);
    assert_findings(&run, &BTreeSet::new(), &[], "an upload in progress");
    assert_eq!(run.code, 0, "{}", run.describe());
    let run = lab.regfsck(&policy, "uploads-1h", false);
    assert_findings(&run, &BTreeSet::new(), &[], "younger than max-age 1h");
    assert_eq!(
        counter(&run, "private", "stale-uploads", "uploads_checked"),
        Some(1)
    );

    // `startedat` has whole seconds: past 2s, the upload is older than 1s.
    std::thread::sleep(Duration::from_millis(2100));
    let before = storage::snapshot(&lab.data);
    let fix = lab.regfsck(&policy, "uploads", false);
    let rel_dir = format!("{}/_uploads/{uuid}", repo_path("private", repo));
    let expected: BTreeSet<Expect> = [Expect::warn(
        "stale-uploads",
        "private",
        repo,
        None,
        rel_dir.clone(),
        json!({
            "upload": uuid,
            "started_at": started_at.trim(),
            "started_from": "startedat",
            "max_age_seconds": 1,
            "size": chunk.len(),
        }),
    )
    .acted("fix", "removed")]
    .into();
    assert_findings(&fix, &expected, &["age_seconds"], "stale upload");
    let age = fix.findings()[0]["details"]["age_seconds"].as_u64();
    assert!(age.is_some_and(|a| (2..60).contains(&a)), "age {age:?}");
    assert_eq!(
        fix.code,
        0,
        "everything found was fixed\n{}",
        fix.describe()
    );

    let after = storage::snapshot(&lab.data);
    let (removed, added, modified) = storage::diff(&before, &after);
    let expected_removed: BTreeSet<String> = before
        .keys()
        .filter(|k| *k == &rel_dir || k.starts_with(&format!("{rel_dir}/")))
        .cloned()
        .collect();
    for f in ["data", "startedat", "hashstates"] {
        assert!(expected_removed.contains(&format!("{rel_dir}/{f}")), "{f}");
    }
    assert_eq!(
        removed, expected_removed,
        "the fix removed exactly the upload directory"
    );
    assert!(
        added.is_empty() && modified.is_empty(),
        "{added:?} {modified:?}"
    );
    assert_eq!(
        storage::audit_removals(&lab.data),
        [(
            "private".to_string(),
            format!("docker/registry/v2/repositories/{repo}/_uploads/{uuid}")
        )],
        "the audit log records the removal"
    );

    // A client coming back to it is told the upload is gone.
    let status = http::get(&reg.addr(), &location_path(&patch)).expect("GET upload status");
    assert_eq!(
        (status.status, Answer::of(&status).error_code.as_deref()),
        (404, Some("BLOB_UPLOAD_UNKNOWN")),
        "{}",
        status.body_text()
    );

    // The registry still works: a new push (into the same repository), and
    // pulls of both images.
    let more = lab.layer("alpine-next", 2);
    let next = single(&lab, Format::Docker, &[&base, &more]);
    lab.push(&reg, repo, "3.20", &next);
    lab.pull_ok(&reg, repo, "3.20", &next);
    lab.pull_ok(&reg, repo, "3.19", &alpine);
    let clean = lab.regfsck(&policy, "all", true);
    assert_findings(
        &clean,
        &BTreeSet::new(),
        &[],
        "after the fix and a new push",
    );
    assert_eq!(clean.code, 0, "{}", clean.describe());
    lab.done();
}

// ------------------------------------------------------------------ corrupt-blobs

/// By hand (the registry verifies digests on upload, so it never stores a
/// corrupt blob itself): bit rot in a layer, a config truncated to nothing.
#[test]
fn corrupt_blobs_by_hand() {
    let mut lab = Lab::new("corrupt-blobs");
    let mut reg = lab.registry("private");
    let base = lab.layer("alpine", 2);
    let alpine = single(&lab, Format::Oci, &[&base]);
    lab.push(&reg, "base/alpine", "3.19", &alpine);
    let (s1, s2) = (lab.layer("svc-1", 2), lab.layer("svc-2", 3));
    let svc = single(&lab, Format::Oci, &[&base, &s1, &s2]);
    lab.push(&reg, "team/app/svc", "1", &svc);
    let j1 = lab.layer("job-1", 1);
    let job = single(&lab, Format::Docker, &[&j1]);
    lab.push(&reg, "team/app/job", "1", &job);
    let policy = lab.policy("");
    let clean = lab.regfsck(&policy, "all", true);
    assert_findings(&clean, &BTreeSet::new(), &[], "healthy pushes");

    let flipped = image(&svc).layers[2].clone();
    let data = storage::blob_data(&reg.v2(), &flipped.digest);
    let mut bytes = std::fs::read(&data).expect("read layer");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&data, &bytes).expect("flip a bit");
    let rotten = oci::digest_of(&bytes);
    let emptied = image(&job).config.clone();
    std::fs::write(storage::blob_data(&reg.v2(), &emptied.digest), b"").expect("truncate");

    let expected: BTreeSet<Expect> = [
        Expect::warn(
            "corrupt-blobs",
            "private",
            "",
            Some(&flipped.digest),
            blob_data_path("private", &flipped.digest),
            json!({"reason": "digest_mismatch", "actual": rotten, "size": flipped.size}),
        ),
        Expect::warn(
            "corrupt-blobs",
            "private",
            "",
            Some(&emptied.digest),
            blob_data_path("private", &emptied.digest),
            json!({"reason": "empty", "size": 0}),
        ),
    ]
    .into();
    let run = lab.regfsck(&policy, "all", true);
    assert_findings(&run, &expected, &[], "corrupt blobs");
    assert_eq!(run.code, 1, "{}", run.describe());

    // What 2.8.2 serves: the rotten layer in full, 200, as it is on disk (it
    // never hashes what it serves); the empty config, 200 with the size its
    // warm descriptor cache remembers and no body.
    let (head, get, resp) = blob_answers(&reg.addr(), "team/app/svc", &flipped.digest);
    assert_eq!(
        (head.status, get.status, get.content_length, get.body_len),
        (200, 200, Some(flipped.size), flipped.size as usize),
        "{head:?} {get:?}"
    );
    assert_eq!(oci::digest_of(&resp.body), rotten, "served as stored");
    let (head, get, _) = blob_answers(&reg.addr(), "team/app/job", &emptied.digest);
    assert_eq!(
        (head.status, head.content_length, get.status, get.body_len),
        (200, Some(emptied.size), 200, 0),
        "empty config, warm: {head:?} {get:?}"
    );
    let svc_pull = assert_failed(
        &lab.try_pull(&reg, "team/app/svc", "1", false),
        &format!(
            "Digest did not match, expected {}, got {rotten}",
            flipped.digest
        ),
        "pull of the rotten layer",
    );
    let job_warm = assert_failed(
        &lab.try_pull(&reg, "team/app/job", "1", true),
        "unexpected EOF",
        "pull of the empty config, warm cache",
    );
    lab.note(format!("skopeo, rotten layer: {svc_pull}"));
    lab.note(format!("skopeo, empty config (warm cache): {job_warm}"));

    // Pushing again does not help: the registry has the blob, skopeo skips it.
    let out = lab.try_push(&reg, "team/app/svc", "1", &svc);
    assert!(out.status.success(), "{}", out_text(&out));
    assert_eq!(
        oci::digest_of(&std::fs::read(&data).expect("read")),
        rotten,
        "the re-push left the rotten data in place"
    );
    let run = lab.regfsck(&policy, "all", true);
    assert_findings(&run, &expected, &[], "after a re-push");

    // A fresh process: the empty config is now served as 0 bytes.
    reg.restart();
    let (head, get, _) = blob_answers(&reg.addr(), "team/app/job", &emptied.digest);
    assert_eq!(
        (head.status, get.status, get.content_length, get.body_len),
        (200, 200, Some(0), 0),
        "empty config, cold: {head:?} {get:?}"
    );
    let job_cold = assert_failed(
        &lab.try_pull(&reg, "team/app/job", "1", true),
        &format!(
            "digest {} does not match expected {}",
            oci::digest_of(b""),
            emptied.digest
        ),
        "pull of the empty config, cold cache",
    );
    lab.note(format!("skopeo, empty config (cold cache): {job_cold}"));

    // The remediation `regfsck explain corrupt-blobs` gives: remove the blob
    // directories, restart (flush), push the images again.
    for d in [&flipped.digest, &emptied.digest] {
        let dir = storage::blob_data(&reg.v2(), d);
        std::fs::remove_dir_all(dir.parent().expect("blob dir")).expect("remove blob dir");
    }
    reg.restart();
    lab.push(&reg, "team/app/svc", "1", &svc);
    lab.push(&reg, "team/app/job", "1", &job);
    lab.pull_ok(&reg, "team/app/svc", "1", &svc);
    lab.pull_ok(&reg, "team/app/job", "1", &job);
    lab.pull_ok(&reg, "base/alpine", "3.19", &alpine);
    let clean = lab.regfsck(&policy, "all", true);
    assert_findings(&clean, &BTreeSet::new(), &[], "after the remediation");
    assert_eq!(clean.code, 0, "{}", clean.describe());
    lab.done();
}

// ------------------------------------------------------------------ invalid-links

/// By hand (the registry writes every link itself): an empty layer link, and
/// a revision link and a tag link written with `echo` (trailing newline).
/// What 2.8.2 makes of them, including a manifest DELETE that fails half-way
/// and leaves a dangling tag.
#[test]
fn invalid_links_by_hand() {
    let mut lab = Lab::new("invalid-links");
    // Two registries: garbage-collect stops at the first bad link it reads,
    // and we want to see which links it reads.
    let mut links = lab.registry("links");
    let base = lab.layer("alpine", 2);
    let alpine = single(&lab, Format::Oci, &[&base]);
    lab.push(&links, "base/alpine", "3.19", &alpine);
    let l1 = lab.layer("lay-1", 2);
    let lay = single(&lab, Format::Oci, &[&base, &l1]);
    lab.push(&links, "lib/layer", "1", &lay);
    let r1 = lab.layer("rev-1", 2);
    let rev = single(&lab, Format::Docker, &[&r1]);
    lab.push(&links, "lib/revision", "1", &rev);

    let mut tags = lab.registry("tags");
    lab.push(&tags, "base/alpine", "3.19", &alpine);
    let (t1, t2) = (lab.layer("tag-1", 1), lab.layer("tag-2", 1));
    let broken = single(&lab, Format::Oci, &[&t1]);
    let keep = single(&lab, Format::Oci, &[&t2]);
    lab.push(&tags, "app", "broken", &broken);
    lab.push(&tags, "app", "keep", &keep);

    let policy = lab.policy("");
    let clean = lab.regfsck(&policy, "all", true);
    assert_findings(&clean, &BTreeSet::new(), &[], "healthy pushes");

    let l1_digest = image(&lay).layers[1].digest.clone();
    std::fs::write(
        link_file(&links.v2(), "_layers", "lib/layer", &l1_digest),
        b"",
    )
    .expect("empty the layer link");
    std::fs::write(
        link_file(
            &links.v2(),
            "_manifests/revisions",
            "lib/revision",
            rev.digest(),
        ),
        format!("{}\n", rev.digest()),
    )
    .expect("revision link with a newline");
    std::fs::write(
        tags.v2()
            .join("repositories/app/_manifests/tags/broken/current/link"),
        format!("{}\n", broken.digest()),
    )
    .expect("tag link with a newline");

    let layer_finding = Expect::warn(
        "invalid-links",
        "links",
        "lib/layer",
        Some(&l1_digest),
        layer_link_path("links", "lib/layer", &l1_digest),
        json!({"link": "layer", "problem": "empty", "tags": ["1"]}),
    );
    let revision_finding = Expect::warn(
        "invalid-links",
        "links",
        "lib/revision",
        Some(rev.digest()),
        revision_link_path("links", "lib/revision", rev.digest()),
        json!({"link": "revision", "problem": "trailing_newline", "names": rev.digest(), "tags": ["1"]}),
    );
    let tag_path = tag_current_path("tags", "app", "broken");
    let tag_finding = Expect::warn(
        "invalid-links",
        "tags",
        "app",
        Some(broken.digest()),
        tag_path.clone(),
        json!({"link": "tag_current", "problem": "trailing_newline", "names": broken.digest(), "tags": ["broken"]}),
    );
    // dangling-tags reports the unparseable current link too, as a broken tag.
    let malformed_tag = Expect::warn(
        "dangling-tags",
        "tags",
        "app",
        None,
        tag_path,
        json!({
            "link": "current",
            "current_link": "malformed",
            "tags": ["broken"],
            "reason": format!("link does not hold a sha256 digest: {:?}", format!("{}\n", broken.digest())),
        }),
    );
    let mut expected: BTreeSet<Expect> =
        [layer_finding, revision_finding, tag_finding, malformed_tag].into();
    let run = lab.regfsck(&policy, "all", true);
    assert_findings(&run, &expected, &[], "invalid links");

    // What 2.8.2 answers. The revision and tag links: 500 UNKNOWN, warm or
    // not (manifests are not behind the descriptor cache).
    let unknown = (500, Some("UNKNOWN".to_string()));
    assert_eq!(manifest_answer(&links, "lib/revision", "1"), unknown);
    assert_eq!(
        manifest_answer(&links, "lib/revision", rev.digest()),
        unknown
    );
    assert_eq!(manifest_answer(&tags, "app", "broken"), unknown);
    // The empty layer link: served while the descriptor cache is warm (it
    // never reads the link), 500 from a fresh process.
    assert_eq!(blob_get(&links, "lib/layer", &l1_digest), (200, None));
    links.restart();
    tags.restart();
    let (head, _, _) = blob_answers(&links.addr(), "lib/layer", &l1_digest);
    assert_eq!(head.status, 500, "HEAD, cold: {head:?}");
    assert_eq!(blob_get(&links, "lib/layer", &l1_digest), unknown);
    let layer_pull = assert_failed(
        &lab.try_pull(&links, "lib/layer", "1", false),
        "invalid status code from registry 500 (Internal Server Error)",
        "pull with an empty layer link",
    );
    let rev_pull = assert_failed(
        &lab.try_pull(&links, "lib/revision", "1", true),
        "received unexpected HTTP status: 500 Internal Server Error",
        "pull with a revision link + newline",
    );
    lab.note(format!("skopeo, empty layer link (cold): {layer_pull}"));
    lab.note(format!("skopeo, revision link + newline: {rev_pull}"));
    assert_eq!(
        blob_get(&links, "base/alpine", &image(&alpine).layers[0].digest).0,
        200
    );

    // garbage-collect reads revision links (it aborts on the bad one), never
    // layer links, and tag links only with --delete-untagged.
    let (ok, text) = links.try_garbage_collect(&["--dry-run"]);
    assert!(
        !ok && text.contains("failed to mark") && text.contains("invalid checksum digest length"),
        "GC stops at the revision link:\n{text}"
    );
    assert!(
        text.contains(&format!("lib/layer: marking blob {l1_digest}")),
        "GC went past the empty layer link:\n{text}"
    );
    let (ok, text) = tags.try_garbage_collect(&["--dry-run"]);
    assert!(
        ok,
        "GC without --delete-untagged ignores tag links:\n{text}"
    );
    let (ok, text) = tags.try_garbage_collect(&["--dry-run", "--delete-untagged"]);
    assert!(
        !ok && text.contains("failed to retrieve tags for digest"),
        "GC --delete-untagged stops at the tag link:\n{text}"
    );

    // A real route to a dangling tag: DELETE of another manifest of the same
    // repository removes its revision link, then 2.8.2 looks up the tags to
    // untag, trips over the bad tag link and answers 500: the tag `keep`
    // stays, pointing at a manifest the repository no longer has.
    let del = delete(
        &tags.addr(),
        &format!("/v2/app/manifests/{}", keep.digest()),
    );
    assert_eq!(
        (del.status, Answer::of(&del).error_code.as_deref()),
        (500, Some("UNKNOWN")),
        "{}",
        del.body_text()
    );
    assert!(
        !link_file(&tags.v2(), "_manifests/revisions", "app", keep.digest()).exists(),
        "the revision link went before the failure"
    );
    assert!(
        tags.v2()
            .join("repositories/app/_manifests/tags/keep/current/link")
            .is_file(),
        "the tag stayed"
    );
    assert_eq!(
        manifest_answer(&tags, "app", "keep"),
        (404, Some("MANIFEST_UNKNOWN".to_string()))
    );
    expected.insert(Expect::warn(
        "dangling-tags",
        "tags",
        "app",
        Some(keep.digest()),
        revision_link_path("tags", "app", keep.digest()),
        json!({"link": "current", "tags": ["keep"], "revision_link": "missing", "blob_data": "present"}),
    ));
    let run = lab.regfsck(&policy, "all", true);
    assert_findings(&run, &expected, &[], "after the half-done DELETE");
    lab.done();
}

// ------------------------------------------------------------------ missing-referenced-blobs

/// 2.8's `garbage-collect --delete-untagged` deletes the revision links of
/// the untagged children of a tagged index and sweeps their layers. That
/// alone is `orphan-index-children`'s finding (the children are gone from
/// the repository). Then CI re-pushes a per-arch tag, and the registry's
/// warm descriptor cache says every layer is still there: skopeo uploads
/// nothing, the manifest PUT is accepted, and now a tagged image has no
/// layers: `missing-referenced-blobs` names both tags and the platform.
#[test]
fn gc_then_repush_leaves_tagged_images_without_layers() {
    let mut lab = Lab::new("missing-referenced-blobs");
    let mut reg = lab.registry("private");
    let base_amd = lab.layer("base-amd64", 2);
    let base_arm = lab.layer("base-arm64", 2);
    let alpine = single(&lab, Format::Oci, &[&base_amd]);
    lab.push(&reg, "base/alpine", "3.19", &alpine);
    let (a_amd, a_arm) = (lab.layer("api-amd64", 2), lab.layer("api-arm64", 2));
    let amd = lab.image(Format::Oci, amd64(), &[&base_amd, &a_amd]);
    let arm = lab.image(Format::Oci, arm64(), &[&base_arm, &a_arm]);
    let index = Artifact::Index(lab.index(IndexKind::OciIndex, &[amd.clone(), arm.clone()]));
    // buildx style: only the index is tagged.
    lab.push(&reg, "team/app/api", "v1", &index);
    let c1 = lab.layer("cli-1", 1);
    let cli = single(&lab, Format::Docker, &[&base_amd, &c1]);
    lab.push(&reg, "team/app/cli", "1.0", &cli);
    let policy = lab.policy("");
    let clean = lab.regfsck(&policy, "all", true);
    assert_findings(&clean, &BTreeSet::new(), &[], "healthy pushes");
    assert_eq!(clean.code, 0, "{}", clean.describe());

    // The registry keeps running (its cache stays warm) while GC runs.
    reg.garbage_collect(true);
    let after_gc = seed_findings(&lab.data);
    let children: BTreeSet<(String, Option<String>)> = storage::orphan_children(&lab.data)
        .into_iter()
        .map(|c| (c.child, c.platform))
        .collect();
    assert_eq!(
        children,
        [
            (amd.digest.clone(), Some(amd64().label())),
            (arm.digest.clone(), Some(arm64().label()))
        ]
        .into(),
        "GC orphaned both children of the tagged index"
    );
    let swept: BTreeSet<String> = arm
        .blobs()
        .into_iter()
        .chain(amd.blobs())
        .map(|b| b.digest)
        .filter(|d| !storage::blob_data(&reg.v2(), d).is_file())
        .collect();
    let expected_swept: BTreeSet<String> = arm
        .blobs()
        .into_iter()
        .chain(amd.blobs())
        .map(|b| b.digest)
        .filter(|d| *d != image(&alpine).layers[0].digest)
        .collect();
    assert_eq!(
        swept, expected_swept,
        "GC swept the children's blobs but the shared base layer"
    );
    let run = lab.regfsck(&policy, "all", true);
    assert_findings(
        &run,
        &after_gc,
        &[],
        "after GC: the children are orphan-index-children's, their layer links orphan-layer-links'",
    );
    let pull = assert_failed(
        &lab.try_pull(&reg, "team/app/api", "v1", false),
        "manifest unknown",
        "pull of the index after GC",
    );
    lab.note(format!("skopeo, index after GC: {pull}"));

    // CI pushes the arm64 image again, as a per-arch tag.
    let out = lab.try_push(
        &reg,
        "team/app/api",
        "v1-linux-arm64",
        &Artifact::Image(arm.clone()),
    );
    assert!(
        out.status.success(),
        "the re-push succeeds: {}",
        out_text(&out)
    );
    for b in arm.blobs() {
        assert!(
            !storage::blob_data(&reg.v2(), &b.digest).is_file(),
            "the warm cache made skopeo skip {} ({})",
            b.digest,
            out_text(&out)
        );
    }
    let mut expected = seed_findings(&lab.data);
    assert!(
        !expected.iter().any(|e| e.digest.contains(&arm.digest)),
        "the arm64 child has its revision link again"
    );
    for b in arm.blobs() {
        let role = if b.digest == arm.config.digest {
            "config"
        } else {
            "layer"
        };
        expected.insert(Expect::warn(
            "missing-referenced-blobs",
            "private",
            "team/app/api",
            Some(&b.digest),
            blob_data_path("private", &b.digest),
            json!({
                "tags": ["v1", "v1-linux-arm64"],
                "role": role,
                "manifests": [arm.digest],
                "platforms": [arm64().label()],
                "blob_data": "missing",
                "layer_link": "present",
            }),
        ));
    }
    let run = lab.regfsck(&policy, "all", true);
    assert_findings(&run, &expected, &[], "after the re-push");
    assert_eq!(run.code, 1, "{}", run.describe());

    // The image the push "published" cannot be pulled: an empty body while
    // the cache is warm, 404 once the registry restarts.
    let warm = assert_failed(
        &lab.try_pull(&reg, "team/app/api", "v1-linux-arm64", false),
        "unexpected EOF",
        "pull of the re-pushed image, warm cache",
    );
    reg.restart();
    let cold = assert_failed(
        &lab.try_pull(&reg, "team/app/api", "v1-linux-arm64", false),
        "404 (Not Found)",
        "pull of the re-pushed image, cold cache",
    );
    lab.note(format!("skopeo, re-pushed image, warm: {warm}"));
    lab.note(format!("skopeo, re-pushed image, cold: {cold}"));

    // With a cold cache, pushing the index again uploads what is missing.
    lab.push(&reg, "team/app/api", "v1", &index);
    lab.pull_ok(&reg, "team/app/api", "v1", &index);
    lab.pull_ok(
        &reg,
        "team/app/api",
        "v1-linux-arm64",
        &Artifact::Image(arm),
    );
    lab.pull_ok(&reg, "team/app/cli", "1.0", &cli);
    let clean = lab.regfsck(&policy, "all", true);
    assert_findings(&clean, &BTreeSet::new(), &[], "after restart and push");
    assert_eq!(clean.code, 0, "{}", clean.describe());
    lab.done();
}

// ------------------------------------------------------------------ dangling-tags

/// A pull-through cache schedules every manifest it fetches for deletion
/// after 7 days (`repositoryTTL`, hard-coded in 2.8) and persists the
/// schedule in `scheduler-state.json`. When it fires, the registry deletes
/// the manifest's revision link, never the tag: the tag dangles until the
/// next pull re-fetches the manifest. We advance the clock by rewriting the
/// expiry times in the state file (a week is too long for a test); the
/// deletion itself is the registry's.
#[test]
fn expired_cache_manifest_leaves_a_dangling_tag() {
    let mut lab = Lab::new("dangling-tags");
    let mut private = lab.registry("private");
    let base = lab.layer("base", 2);
    let alpine = single(&lab, Format::Oci, &[&base]);
    lab.push(&private, "base/alpine", "3.19", &alpine);
    let tl = lab.layer("tools-1", 2);
    let tools = single(&lab, Format::Oci, &[&base, &tl]);
    lab.push(&private, "base/tools", "1", &tools);
    let mut cache = lab.cache("dockerhub", &private);
    for (repo, tag, a) in [
        ("base/tools", "1", &tools),
        ("base/alpine", "3.19", &alpine),
    ] {
        lab.pull_ok(&cache, repo, tag, a);
        wait_cached(&cache, repo, &a.blobs());
    }
    let policy = lab.policy("");
    let clean = lab.regfsck(&policy, "all", true);
    assert_findings(&clean, &BTreeSet::new(), &[], "healthy pushes and pulls");

    // The scheduler saves its state every 5 seconds.
    let state = cache.spec.root.join("scheduler-state.json");
    let key = format!("base/tools@{}", tools.digest());
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        if let Ok(t) = std::fs::read_to_string(&state)
            && t.contains(&key)
        {
            break t;
        }
        assert!(Instant::now() < deadline, "no scheduler state with {key}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut entries: BTreeMap<String, Value> = serde_json::from_str(&text).expect("state JSON");
    assert_eq!(entries[&key]["EntryType"], 1, "a manifest entry: {text}");
    let expiry = entries[&key]["ExpiryData"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    lab.note(format!("scheduler: {key} expires {expiry}"));
    // A week passes for base/tools (manifest and blobs); base/alpine is
    // pulled again in time and stays.
    cache.stop();
    for (k, e) in entries.iter_mut() {
        if k.starts_with("base/tools@") {
            e["ExpiryData"] = json!("2000-01-01T00:00:00Z");
        }
    }
    std::fs::write(&state, serde_json::to_vec(&entries).expect("json")).expect("write state");
    // 2.8.2 cannot start a cache whose upstream is down (it panics): the
    // upstream runs while the cache starts and its scheduler fires.
    cache.restart();
    let revision = link_file(
        &cache.v2(),
        "_manifests/revisions",
        "base/tools",
        tools.digest(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while revision.exists() {
        assert!(Instant::now() < deadline, "the expiry did not fire");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        revision.parent().expect("dir").is_dir(),
        "the revision link file went, its directory stayed"
    );
    let tag = cache
        .v2()
        .join("repositories/base/tools/_manifests/tags/1/current/link");
    assert_eq!(
        std::fs::read_to_string(&tag).ok().as_deref(),
        Some(tools.digest()),
        "the tag stays"
    );
    // Blob expiry removes the repository's layer link and the blob's data,
    // wherever else it is used: base/alpine, pulled through the cache too,
    // shares the base layer.
    // The scheduler fires each expired entry on its own timer: the blobs may go a moment
    // after the manifest (seen under load).
    let base_digest = image(&alpine).layers[0].digest.clone();
    for b in tools.blobs() {
        while storage::blob_data(&cache.v2(), &b.digest).exists() {
            assert!(
                Instant::now() < deadline,
                "expired blob {} is not gone",
                b.digest
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(
        link_file(&cache.v2(), "_layers", "base/alpine", &base_digest).is_file(),
        "base/alpine still links the base layer"
    );

    let mut expected = seed_findings(&lab.data);
    assert_eq!(
        expected
            .iter()
            .map(|e| e.digest.clone())
            .collect::<Vec<_>>(),
        [Value::String(base_digest.clone()).to_string()],
        "one orphaned layer link: base/alpine's base layer"
    );
    expected.insert(Expect::warn(
        "dangling-tags",
        "dockerhub",
        "base/tools",
        Some(tools.digest()),
        revision_link_path("dockerhub", "base/tools", tools.digest()),
        json!({"link": "current", "tags": ["1"], "revision_link": "missing", "blob_data": "present"}),
    ));
    expected.insert(Expect::warn(
        "missing-referenced-blobs",
        "dockerhub",
        "base/alpine",
        Some(&base_digest),
        blob_data_path("dockerhub", &base_digest),
        json!({
            "tags": ["3.19"],
            "role": "layer",
            "manifests": [alpine.digest()],
            "platforms": [],
            "blob_data": "missing",
            "layer_link": "present",
        }),
    ));
    let run = lab.regfsck(&policy, "all", true);
    // base/tools' tag names a manifest the repository lost: dangling-tags'
    // business, not missing-referenced-blobs'. regfsck takes the empty
    // revision directory the expiry left for a revision link, walks the lost
    // manifest, and reports its (unlinked) blobs with "layer_link": "present".
    let known_bug = |f: &Expect| {
        EMPTY_DIGEST_DIRS_READ_AS_LINKS
            && f.check == "missing-referenced-blobs"
            && f.registry == "dockerhub"
            && f.repository == "\"base/tools\""
    };
    let tolerated =
        assert_findings_tolerating(&run, &expected, &[], known_bug, "after the cache's expiry");
    for f in &tolerated {
        lab.note(format!(
            "known regfsck bug (empty digest directory): {}",
            f.line()
        ));
    }

    // While the upstream is down, neither image can be pulled through the
    // cache.
    private.stop();
    assert_eq!(
        manifest_answer(&cache, "base/tools", "1"),
        (500, Some("UNKNOWN".to_string())),
        "the cache's tag, upstream down"
    );
    // The orphaned base layer answers 200 with its old length and no body,
    // although this cache process never served it: the expiry itself looked
    // the blob up (warming the global descriptor cache) before deleting it.
    let (head, get, _) = blob_answers(&cache.addr(), "base/alpine", &base_digest);
    let base_size = image(&alpine).layers[0].size;
    assert_eq!(
        (
            head.status,
            head.content_length,
            get.status,
            get.content_length,
            get.body_len
        ),
        (200, Some(base_size), 200, Some(base_size), 0),
        "base layer via the cache, upstream down: HEAD {head:?} GET {get:?}"
    );
    let tools_down = assert_failed(
        &lab.try_pull(&cache, "base/tools", "1", false),
        "500 Internal Server Error",
        "base/tools via the cache, upstream down",
    );
    let alpine_down = assert_failed(
        &lab.try_pull(&cache, "base/alpine", "3.19", false),
        "unexpected EOF",
        "base/alpine via the cache, upstream down",
    );
    lab.note(format!(
        "skopeo base/tools:1 via the cache, upstream down: {tools_down}"
    ));
    lab.note(format!(
        "skopeo base/alpine:3.19 via the cache, upstream down: {alpine_down}"
    ));

    // Once the upstream is back, the next pulls fetch everything again.
    private.restart();
    lab.pull_ok(&cache, "base/tools", "1", &tools);
    lab.pull_ok(&cache, "base/alpine", "3.19", &alpine);
    wait_cached(&cache, "base/tools", &tools.blobs());
    wait_cached(&cache, "base/alpine", &alpine.blobs());
    let clean = lab.regfsck(&policy, "all", true);
    assert_findings(&clean, &BTreeSet::new(), &[], "after the next pulls");
    lab.done();
}

// ------------------------------------------------------------------ unreferenced-blobs

/// 2.8 has no API to delete a repository: operators remove its directory,
/// then run garbage-collect. Between the two, its blobs are what GC would
/// sweep: regfsck reports exactly the blobs `garbage-collect --dry-run`
/// lists, with their sizes.
#[test]
fn deleted_repository_blobs_match_garbage_collect() {
    let mut lab = Lab::new("unreferenced-blobs");
    let reg = lab.registry("private");
    let base = lab.layer("base", 2);
    let alpine = single(&lab, Format::Oci, &[&base]);
    lab.push(&reg, "base/alpine", "3.19", &alpine);
    let (o1, o2, n1) = (
        lab.layer("old-1", 2),
        lab.layer("old-2", 3),
        lab.layer("old-3", 1),
    );
    let old = single(&lab, Format::Docker, &[&base, &o1, &o2]);
    let older = single(&lab, Format::Oci, &[&base, &n1]);
    lab.push(&reg, "team/legacy/app", "1", &old);
    lab.push(&reg, "team/legacy/app", "0.9", &older);
    let policy = lab.policy("");
    let clean = lab.regfsck(&policy, "all", true);
    assert_findings(&clean, &BTreeSet::new(), &[], "healthy pushes");
    assert_eq!(gc_dry_run(&reg), BTreeSet::new(), "GC has nothing to sweep");

    std::fs::remove_dir_all(reg.v2().join("repositories/team/legacy")).expect("rm -rf repo");
    let eligible = gc_dry_run(&reg);
    // Everything of the two images but the base layer base/alpine uses.
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for a in [&old, &older] {
        let i = image(a);
        sizes.insert(i.digest.clone(), i.size);
        for b in i.blobs() {
            sizes.insert(b.digest, b.size);
        }
    }
    sizes.remove(&image(&alpine).layers[0].digest);
    assert_eq!(
        eligible,
        sizes.keys().cloned().collect(),
        "garbage-collect --dry-run lists the deleted repository's blobs"
    );
    let expected: BTreeSet<Expect> = sizes
        .iter()
        .map(|(d, size)| {
            Expect::warn(
                "unreferenced-blobs",
                "private",
                "",
                Some(d),
                blob_dir_path("private", d),
                json!({"size": size}),
            )
        })
        .collect();
    let run = lab.regfsck(&policy, "all", true);
    assert_findings(&run, &expected, &["modified"], "unreferenced blobs");
    let found: BTreeSet<String> = run
        .findings_of("unreferenced-blobs")
        .iter()
        .filter_map(|f| f["digest"].as_str().map(str::to_string))
        .collect();
    assert_eq!(found, eligible, "regfsck and garbage-collect agree");
    assert_eq!(
        counter(&run, "private", "unreferenced-blobs", "bytes_unreferenced"),
        Some(sizes.values().sum()),
    );

    // After the real GC nothing is left to report, and base/alpine pulls.
    let (ok, text) = reg.try_garbage_collect(&[]);
    assert!(ok, "{text}");
    assert_eq!(gc_eligible(&text), eligible, "GC swept what it listed");
    let clean = lab.regfsck(&policy, "all", true);
    assert_findings(&clean, &BTreeSet::new(), &[], "after GC");
    assert_eq!(clean.code, 0, "{}", clean.describe());
    lab.pull_ok(&reg, "base/alpine", "3.19", &alpine);
    lab.done();
}

// ------------------------------------------------------------------ API deletes

/// What the registry API's deletes leave, on one registry.
struct ApiDeletes {
    /// Declared first: dropped (stopped) before the lab removes its tree.
    reg: Registry,
    lab: Lab,
    alpine: Artifact,
    /// `team/app/web`: `a` was `latest` (and `stable`), then `latest` moved
    /// to `b`; `a` was deleted by digest.
    a: Artifact,
    b: Artifact,
    /// `team/app/cli:1.0`, whose last layer was deleted by digest.
    cli: Artifact,
    /// `team/app/api:v1`, an index whose arm64 child was deleted by digest.
    index: Artifact,
    arm: Image,
    /// `team/app/old:1`, deleted by digest, then its config and layers.
    old: Artifact,
}

fn api_delete_scenario(name: &'static str) -> ApiDeletes {
    let mut lab = Lab::new(name);
    let reg = lab.registry("private");
    let base = lab.layer("base", 2);
    let alpine = single(&lab, Format::Oci, &[&base]);
    lab.push(&reg, "base/alpine", "3.19", &alpine);
    let (wa, wb) = (lab.layer("web-a", 1), lab.layer("web-b", 1));
    let a = single(&lab, Format::Oci, &[&base, &wa]);
    let b = single(&lab, Format::Oci, &[&base, &wb]);
    lab.push(&reg, "team/app/web", "latest", &a);
    lab.push(&reg, "team/app/web", "stable", &a);
    lab.push(&reg, "team/app/web", "latest", &b);
    let (c1, c2) = (lab.layer("cli-1", 1), lab.layer("cli-2", 2));
    let cli = single(&lab, Format::Docker, &[&base, &c1, &c2]);
    lab.push(&reg, "team/app/cli", "1.0", &cli);
    let (x1, x2) = (lab.layer("api-amd64", 1), lab.layer("api-arm64", 1));
    let amd = lab.image(Format::Oci, amd64(), &[&base, &x1]);
    let arm = lab.image(Format::Oci, arm64(), &[&x2]);
    let index = Artifact::Index(lab.index(IndexKind::OciIndex, &[amd, arm.clone()]));
    lab.push(&reg, "team/app/api", "v1", &index);
    let (o1, o2) = (lab.layer("old-1", 2), lab.layer("old-2", 1));
    let old = single(&lab, Format::Docker, &[&base, &o1, &o2]);
    lab.push(&reg, "team/app/old", "1", &old);
    let policy = lab.policy("");
    let clean = lab.regfsck(&policy, "all", true);
    assert_findings(&clean, &BTreeSet::new(), &[], "healthy pushes");

    let accepted = |path: String| {
        let r = delete(&reg.addr(), &path);
        assert_eq!(r.status, 202, "DELETE {path}: {}", r.body_text());
    };
    accepted(format!("/v2/team/app/web/manifests/{}", a.digest()));
    accepted(format!(
        "/v2/team/app/cli/blobs/{}",
        image(&cli).layers[2].digest
    ));
    accepted(format!("/v2/team/app/api/manifests/{}", arm.digest));
    accepted(format!("/v2/team/app/old/manifests/{}", old.digest()));
    for blob in image(&old)
        .blobs()
        .iter()
        .filter(|b| b.digest != image(&alpine).layers[0].digest)
    {
        accepted(format!("/v2/team/app/old/blobs/{}", blob.digest));
    }
    ApiDeletes {
        reg,
        lab,
        alpine,
        a,
        b,
        cli,
        index,
        arm,
        old,
    }
}

/// 2.8.2's `DELETE /v2/<name>/manifests/<digest>` and
/// `DELETE /v2/<name>/blobs/<digest>` remove the `link` file only: the digest
/// directory stays, empty. Manifest DELETE untags the tags whose current
/// link names the manifest (the whole tag directory goes), but not the
/// history entries of other tags. GC later removes revision directories it
/// deletes itself, not these.
#[test]
fn api_deletes_leave_empty_digest_directories() {
    let s = api_delete_scenario("api-deletes");
    let v2 = s.reg.v2();
    let web = v2.join("repositories/team/app/web/_manifests");
    let emptied = [
        link_file(&v2, "_manifests/revisions", "team/app/web", s.a.digest()),
        link_file(
            &v2,
            "_layers",
            "team/app/cli",
            &image(&s.cli).layers[2].digest,
        ),
        link_file(&v2, "_manifests/revisions", "team/app/api", &s.arm.digest),
        link_file(&v2, "_manifests/revisions", "team/app/old", s.old.digest()),
    ];
    for link in &emptied {
        assert!(!link.exists(), "{} is gone", link.display());
        let dir = link.parent().expect("dir");
        assert!(
            dir.is_dir() && std::fs::read_dir(dir).expect("read_dir").next().is_none(),
            "{} stays, empty",
            dir.display()
        );
    }
    assert!(!web.join("tags/stable").exists(), "stable was untagged");
    assert!(
        web.join("tags/latest/index/sha256")
            .join(oci::hex_of(s.a.digest()))
            .join("link")
            .is_file(),
        "latest's history still names the deleted manifest"
    );
    assert!(
        !v2.join("repositories/team/app/old/_manifests/tags/1")
            .exists()
    );

    // What clients see.
    let unknown_manifest = (404, Some("MANIFEST_UNKNOWN".to_string()));
    assert_eq!(manifest_answer(&s.reg, "team/app/web", "latest").0, 200);
    assert_eq!(
        manifest_answer(&s.reg, "team/app/web", "stable"),
        unknown_manifest
    );
    assert_eq!(
        manifest_answer(&s.reg, "team/app/web", s.a.digest()),
        unknown_manifest
    );
    assert_eq!(manifest_answer(&s.reg, "team/app/api", "v1").0, 200);
    assert_eq!(
        manifest_answer(&s.reg, "team/app/api", &s.arm.digest),
        unknown_manifest
    );
    assert_eq!(
        blob_get(&s.reg, "team/app/cli", &image(&s.cli).layers[2].digest),
        (404, Some("BLOB_UNKNOWN".to_string()))
    );
    let cli = assert_failed(
        &s.lab.try_pull(&s.reg, "team/app/cli", "1.0", true),
        "404 (Not Found)",
        "pull of an image whose layer was unlinked",
    );
    let api = assert_failed(
        &s.lab.try_pull(&s.reg, "team/app/api", "v1", false),
        "manifest unknown",
        "pull of an index whose child was deleted",
    );
    s.lab.note(format!("skopeo, unlinked layer: {cli}"));
    s.lab.note(format!("skopeo, deleted index child: {api}"));
    s.lab.pull_ok(&s.reg, "team/app/web", "latest", &s.b);
    s.lab.pull_ok(&s.reg, "base/alpine", "3.19", &s.alpine);

    // What GC would sweep: the deleted manifests, and the blobs only they use
    // (linked or not: GC marks from manifests only).
    // The deleted child's manifest blob is not among them: the index marks
    // it. Its config and layer are: nothing marks them.
    let mut expected: BTreeSet<String> =
        [s.a.digest().to_string(), s.old.digest().to_string()].into();
    for i in [image(&s.a), &s.arm, image(&s.old)] {
        expected.extend(
            i.blobs()
                .into_iter()
                .map(|b| b.digest)
                .filter(|d| *d != image(&s.alpine).layers[0].digest),
        );
    }
    assert_eq!(gc_dry_run(&s.reg), expected, "garbage-collect --dry-run");
    s.lab.done();
}

/// What regfsck should report after [`api_deletes_leave_empty_digest_directories`].
///
/// regfsck must look for the `link` file in each digest directory: the
/// directories alone would hide all four (see the e2e README).
#[test]
fn regfsck_sees_what_api_deletes_leave() {
    let s = api_delete_scenario("api-deletes-regfsck");
    let policy = s.lab.policy("");
    let c2 = image(&s.cli).layers[2].digest.clone();
    let Artifact::Index(index) = &s.index else {
        unreachable!()
    };
    let mut expected: BTreeSet<Expect> = [
        // The layer the API unlinked from a tagged image.
        Expect::warn(
            "missing-referenced-blobs",
            "private",
            "team/app/cli",
            Some(&c2),
            layer_link_path("private", "team/app/cli", &c2),
            json!({
                "tags": ["1.0"],
                "role": "layer",
                "manifests": [s.cli.digest()],
                "platforms": [],
                "blob_data": "present",
                "layer_link": "missing",
            }),
        ),
        // The child the API deleted from a tagged index.
        Expect::warn(
            "orphan-index-children",
            "private",
            "team/app/api",
            Some(&s.arm.digest),
            revision_link_path("private", "team/app/api", &s.arm.digest),
            json!({"index": index.digest, "platform": arm64().label(), "child_blob": "present"}),
        ),
        // latest's history names the deleted manifest.
        Expect::warn(
            "dangling-tags",
            "private",
            "team/app/web",
            Some(s.a.digest()),
            revision_link_path("private", "team/app/web", s.a.digest()),
            json!({"link": "index", "tags": ["latest"], "revision_link": "missing", "blob_data": "present"}),
        ),
    ]
    .into();
    // The deleted image and its config and layers (unlinked by the API) are
    // referenced by nothing; the deleted child is still in its index.
    let mut unreferenced: BTreeMap<String, u64> = BTreeMap::new();
    let old = image(&s.old);
    unreferenced.insert(old.digest.clone(), old.size);
    for b in old.blobs() {
        unreferenced.insert(b.digest, b.size);
    }
    unreferenced.remove(&image(&s.alpine).layers[0].digest);
    for (d, size) in &unreferenced {
        expected.insert(Expect::warn(
            "unreferenced-blobs",
            "private",
            "",
            Some(d),
            blob_dir_path("private", d),
            json!({"size": size}),
        ));
    }
    let run = s.lab.regfsck(&policy, "all", true);
    assert_findings(&run, &expected, &["modified"], "after the API deletes");
    // The deleted web image is still linked: its config and layer through layer
    // links, its manifest through `latest`'s history. GC sweeps all three;
    // regfsck counts them as reached through a link only.
    assert_eq!(
        counter(&run, "private", "unreferenced-blobs", "link_only"),
        Some(3),
        "web-a's manifest, config and layer\n{}",
        run.describe()
    );
    s.lab.done();
}
