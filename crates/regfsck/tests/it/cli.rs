//! The built binary: exit codes, JSON shape, human lines and policy diagnostics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use regfsck_core::layout;
use regfsck_core::testing::{OCI_MANIFEST, Tree};
use serde_json::Value;

pub fn regfsck() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regfsck"));
    cmd.env_remove("REGFSCK_CONFIG").env("NO_COLOR", "1");
    cmd
}

/// A data root with registries `private` and `dockerhub`, and a policy file beside it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

pub const POLICY: &str = r#"
[registries."*"]
grace = "0s"

[policies.daily]
description = "reference rules"
[policies.daily.registries."*"]
orphan-layer-links = "fix"
[policies.daily.registries.private]
orphan-index-children = "warn"

[policies.layers-only]
[policies.layers-only.registries."*"]
orphan-layer-links = "fix"
"#;

impl Fixture {
    pub fn new() -> Self {
        let f = Self {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        f.write_policy(POLICY);
        f
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn registry(&self, name: &str) -> Tree {
        let t = Tree::new(self.data().join(name));
        std::fs::create_dir_all(t.path(layout::BLOBS)).expect("mkdir");
        std::fs::create_dir_all(t.path(layout::REPOSITORIES)).expect("mkdir");
        t
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    pub fn write_policy(&self, body: &str) {
        let root = format!("root = {:?}\n", self.data().display().to_string());
        std::fs::write(self.policy_path(), format!("{root}{body}")).expect("write policy");
    }

    pub fn run(&self, args: &[&str]) -> Output {
        regfsck()
            .arg("run")
            .args(args)
            .arg("--config")
            .arg(self.policy_path())
            .output()
            .expect("regfsck runs")
    }

    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        let out = self.run(&all);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().expect("exit code"), v)
    }
}

/// private: a healthy image, an orphaned layer link, an index with a lost child.
/// dockerhub: a partial index (legitimate) and an orphaned layer link.
fn broken_fixture() -> (Fixture, Broken) {
    let f = Fixture::new();
    let private = f.registry("private");
    let (healthy, _, _) = private.image("base/alpine", &[b"alpine"]);
    private.tag("base/alpine", "3.20", &healthy);
    let (web, _, web_layers) = private.image("team/app/web", &[b"web-1", b"web-2"]);
    private.tag("team/app/web", "1.0", &web);
    private.remove(&layout::blob_dir(&web_layers[1]));
    let (amd, _, _) = private.image("team/app/api", &[b"api-amd64"]);
    let (arm, _, _) = private.image("team/app/api", &[b"api-arm64"]);
    let idx = private.index(
        "team/app/api",
        None,
        &[(amd, "linux", "amd64"), (arm, "linux", "arm64")],
    );
    private.tag("team/app/api", "1.1", &idx);
    private.remove(&layout::revision_link("team/app/api", &arm).replace("/link", ""));

    let hub = f.registry("dockerhub");
    let (n, _, n_layers) = hub.image("library/nginx", &[b"nginx"]);
    let never = regfsck_core::testing::digest_of(b"arm64 never pulled");
    let hub_idx = hub.index(
        "library/nginx",
        Some(regfsck_core::manifest::OCI_INDEX),
        &[(n, "linux", "amd64"), (never, "linux", "arm64")],
    );
    hub.tag("library/nginx", "1.27", &hub_idx);
    hub.remove(&layout::blob_dir(&n_layers[0]));
    let broken = Broken {
        web_layer: web_layers[1],
        arm,
        idx,
        hub_layer: n_layers[0],
    };
    (f, broken)
}

struct Broken {
    web_layer: regfsck_core::Digest,
    arm: regfsck_core::Digest,
    idx: regfsck_core::Digest,
    hub_layer: regfsck_core::Digest,
}

fn exists(root: &Path, rel: &str) -> bool {
    root.join(rel).exists()
}

#[test]
fn registered_ids_are_unique_and_snapshotted() {
    let out = regfsck()
        .args(["checks", "--format", "json"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    let ids: Vec<&str> = list.iter().map(|c| c["id"].as_str().expect("id")).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique, "duplicate check ids");
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "`checks` lists ids sorted");
    for id in &ids {
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{id} is not kebab-case"
        );
    }
    // A check crate the linker dropped disappears from this list.
    insta::assert_snapshot!("registered_ids", ids.join("\n"));
}

#[test]
fn explanations_have_the_fixed_headings() {
    let out = regfsck()
        .args(["checks", "--format", "json"])
        .output()
        .expect("runs");
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    for c in list {
        let id = c["id"].as_str().expect("id");
        let out = regfsck().args(["explain", id]).output().expect("runs");
        assert!(out.status.success(), "explain {id}");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut last = 0;
        for heading in [
            "What it checks",
            "Why it matters",
            "Example",
            "Remediation",
            "Policy options",
        ] {
            let at = text
                .find(&format!("## {heading}"))
                .unwrap_or_else(|| panic!("{id}: no `## {heading}`"));
            assert!(at > last, "{id}: `## {heading}` out of order");
            last = at;
        }
    }
    let out = regfsck()
        .args(["explain", "orphan-layer-link"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dry_run_reports_and_changes_nothing() {
    let (f, b) = broken_fixture();
    let private = f.data().join("private");
    let (code, v) = f.json(&["daily", "--dry-run"]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["version"], 1);
    assert_eq!(v["policy"], "daily");
    assert_eq!(v["dry_run"], true);
    assert!(v["run_id"].as_str().is_some_and(|s| !s.is_empty()));
    let findings = v["findings"].as_array().expect("findings");
    let got: Vec<(String, String, String, String, String)> = findings
        .iter()
        .map(|x| {
            let s = |k: &str| x[k].as_str().unwrap_or_default().to_string();
            (
                s("check"),
                s("registry"),
                s("repository"),
                s("digest"),
                s("action"),
            )
        })
        .collect();
    let want = vec![
        (
            "orphan-layer-links".into(),
            "dockerhub".into(),
            "library/nginx".into(),
            b.hub_layer.to_string(),
            "would-remove".into(),
        ),
        (
            "orphan-index-children".into(),
            "private".into(),
            "team/app/api".into(),
            b.arm.to_string(),
            "reported".into(),
        ),
        (
            "orphan-layer-links".into(),
            "private".into(),
            "team/app/web".into(),
            b.web_layer.to_string(),
            "would-remove".into(),
        ),
    ];
    assert_eq!(got, want);
    let child = &findings[1];
    assert_eq!(child["level"], "warn");
    assert_eq!(child["details"]["index"], b.idx.to_string());
    assert_eq!(child["details"]["platform"], "linux/arm64");
    assert_eq!(child["details"]["child_blob"], "present");
    assert_eq!(
        child["path"],
        format!("private/{}", layout::revision_link("team/app/api", &b.arm))
    );
    assert_eq!(
        findings[2]["path"],
        format!(
            "private/{}",
            layout::layer_link_dir("team/app/web", &b.web_layer)
        )
    );
    assert_eq!(v["summary"]["would_remove"], 2);
    assert_eq!(
        v["summary"]["registries"]["private"]["checks"]["orphan-layer-links"]["counters"]["orphaned"],
        1
    );
    assert!(exists(
        &private,
        &layout::layer_link("team/app/web", &b.web_layer)
    ));
}

#[test]
fn the_thread_count_is_settable_reported_and_changes_no_finding() {
    let (f, _) = broken_fixture();
    let (code, three) = f.json(&["daily", "--dry-run", "--threads", "3"]);
    let threads =
        |v: &Value, registry: &str| v["summary"]["registries"][registry]["threads"].clone();
    assert_eq!(threads(&three, "private"), 3);
    assert_eq!(threads(&three, "dockerhub"), 3);
    let (default_code, default) = f.json(&["daily", "--dry-run"]);
    let n = threads(&default, "private").as_u64().expect("threads");
    assert!((32..=128).contains(&n), "default {n}");
    assert_eq!(
        (code, &three["findings"]),
        (default_code, &default["findings"])
    );
    for bad in ["0", "many"] {
        let out = f.run(&["daily", "--dry-run", "--threads", bad]);
        assert_eq!(out.status.code(), Some(2), "--threads {bad}");
    }
}

#[test]
fn fix_removes_orphaned_links_and_exits_by_what_remains() {
    let (f, b) = broken_fixture();
    let (code, v) = f.json(&["daily"]);
    assert_eq!(code, 1, "the index child still needs a human: {v:#}");
    assert_eq!(v["summary"]["removed"], 2);
    let private = f.data().join("private");
    let hub = f.data().join("dockerhub");
    assert!(!exists(
        &private,
        &layout::layer_link_dir("team/app/web", &b.web_layer)
    ));
    assert!(!exists(
        &hub,
        &layout::layer_link_dir("library/nginx", &b.hub_layer)
    ));
    assert!(exists(
        &private,
        &layout::revision_link("team/app/api", &b.idx)
    ));

    // Nothing left that the layers-only policy cares about: clean.
    let (code, v) = f.json(&["layers-only"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["findings"].as_array().map(Vec::len), Some(0));
}

#[test]
fn human_output_has_one_greppable_line_per_finding_and_says_to_restart() {
    let (f, b) = broken_fixture();
    let out = f.run(&["daily"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = format!(
        "fix[orphan-layer-links] private/team/app/web {} layer link without blob data: removed",
        b.web_layer
    );
    assert!(text.lines().any(|l| l == line), "{text}");
    assert!(
        text.lines().any(
            |l| l.starts_with("warn[orphan-index-children] private/team/app/api ")
                && l.contains(&b.arm.to_string())
                && l.contains("linux/arm64")
        ),
        "{text}"
    );
    assert!(text.contains("RESTART NEEDED"), "{text}");
    assert!(text.contains("ACTION REQUIRED"), "{text}");
    assert!(
        text.contains(
            "private: orphan-index-children (warn): indexes inspected 1, orphaned children 1"
        ),
        "{text}"
    );
}

#[test]
fn explain_renders_each_finding_as_a_diagnostic() {
    let (f, b) = broken_fixture();
    let out = f.run(&["daily", "--dry-run", "--explain"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("orphan-index-children"), "{text}");
    assert!(text.contains(&layout::blob_data(&b.web_layer)), "{text}");
    assert!(text.contains("blob data is gone"), "{text}");
    assert!(text.contains("help:"), "{text}");
}

#[test]
fn policy_problems_are_reported_together_with_their_lines() {
    let f = Fixture::new();
    f.registry("private");
    f.write_policy(
        r#"colour = "blue"
[registries.private]
grace = "an hour"
[policies.daily.registries."*"]
orphan-layer-link = "fix"
[policies.daily.registries.private]
orphan-index-children = "fix"
orphan-layer-links = "fixx"
"#,
    );
    let out = f.run(&["daily"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing scanned, nothing reported");
    let root = f.data().display().to_string();
    let policy = f.policy_path().display().to_string();
    let text = String::from_utf8_lossy(&out.stderr)
        .replace(&policy, "[POLICY]")
        .replace(&root, "[ROOT]");
    for needle in [
        "5 problems in the policy",
        "unknown key `colour`",
        "did you mean `orphan-layer-links`?",
        "`orphan-index-children` cannot go as far as `fix`",
        "unknown level `fixx`",
        "invalid duration `an hour`",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    insta::assert_snapshot!("policy_diagnostic", text);
}

#[test]
fn unknown_policy_and_missing_root_are_distinct_errors() {
    let f = Fixture::new();
    let out = f.run(&["weekly"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no policy named `weekly`"));

    let out = f.run(&["daily", "--root", "/nonexistent/regfsck-data"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/regfsck-data"));
    assert!(
        !Path::new("/nonexistent/regfsck-data").exists(),
        "a run never creates the root"
    );

    // An empty mount point: every registry gone is an error, not a clean run.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = f.run(&["daily", "--root", &empty.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the storage mounted?"));

    let out = regfsck()
        .args(["run", "daily", "--config", "/nonexistent/policy.toml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/policy.toml"));

    let out = regfsck().args(["run"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}

#[test]
fn registry_named_in_policy_but_absent_is_a_warning() {
    let f = Fixture::new();
    let hub = f.registry("dockerhub");
    hub.image("library/nginx", &[b"n"]);
    let out = f.run(&["daily"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: policy `daily` names registry `private`"),
        "{err}"
    );
}

#[test]
fn scan_problems_exit_3_and_still_report_what_was_found() {
    let (f, b) = broken_fixture();
    let private = Tree::new(f.data().join("private"));
    private.write(
        &format!("{}/junk/link", layout::layers_dir("team/app/web")),
        b"sha256:nope",
    );
    // a revision whose blob is not a manifest
    let garbage = private.blob(b"not json at all");
    private.revision("team/app/web", &garbage);
    let (code, v) = f.json(&["daily", "--dry-run"]);
    assert_eq!(code, 3, "{v:#}");
    let problems: Vec<&str> = v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["path"].as_str().expect("path"))
        .collect();
    assert!(
        problems.iter().any(|p| p.ends_with("_layers/sha256/junk")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.ends_with(&layout::blob_data(&garbage))),
        "{problems:?}"
    );
    assert!(
        v["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .any(|x| x["digest"] == b.web_layer.to_string())
    );
}

#[test]
fn an_unmounted_blob_store_refuses_every_fix() {
    let (f, b) = broken_fixture();
    let private = f.data().join("private");
    std::fs::remove_dir_all(private.join(layout::BLOBS).parent().expect("blobs"))
        .expect("rm blobs");
    let (code, v) = f.json(&["layers-only"]);
    assert_eq!(code, 3, "{v:#}");
    assert!(exists(
        &private,
        &layout::layer_link("team/app/web", &b.web_layer)
    ));
    assert!(
        v["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .filter(|x| x["registry"] == "private")
            .all(|x| x["action"] == "refused")
    );
    assert!(
        v["summary"]["registries"]["private"]["fix_refused"]
            .as_str()
            .is_some_and(|s| s.contains("mounted"))
    );
}

#[test]
fn example_tree_and_shipped_policy_run_as_the_readme_says() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = regfsck()
        .current_dir(&root)
        .args([
            "run",
            "daily",
            "--root",
            "examples/data",
            "--dry-run",
            "--format",
            "json",
        ])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let checks: Vec<&str> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|x| x["check"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        checks,
        [
            "orphan-layer-links",
            "orphan-index-children",
            "orphan-layer-links"
        ]
    );
    let _ = OCI_MANIFEST;
}

#[test]
fn every_check_declares_option_defaults_that_parse_and_a_help_line() {
    // Naming the regfsck library links its built-in checks into this test binary.
    use regfsck as _;
    let regs = regfsck_core::check::registered();
    let out = regfsck()
        .args(["checks", "--format", "json"])
        .output()
        .expect("runs");
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        regs.len(),
        listed.len(),
        "the library and the binary link the same checks"
    );
    for r in regs {
        assert!(
            !r.info.help.is_empty() && !r.info.summary.is_empty(),
            "{}",
            r.info.id
        );
        assert!(
            !r.info.help.ends_with('.'),
            "{}: help has no trailing period",
            r.info.id
        );
        for o in r.info.options {
            assert!(
                regfsck_core::OptionValue::parse_str(o.kind, o.default).is_some(),
                "{}: option {} has a default that does not parse: {:?}",
                r.info.id,
                o.name,
                o.default
            );
            assert!(
                r.info.explanation.contains(o.name),
                "{}: option {} is not explained",
                r.info.id,
                o.name
            );
        }
    }
}
