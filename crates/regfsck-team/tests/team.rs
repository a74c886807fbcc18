//! A check that lives outside the framework and the stock CLI is registered, listed, accepted
//! by the policy loader and run, by a binary built with the documented recipe.

use std::process::Command;

use serde_json::Value;

fn team() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_regfsck-team"));
    c.env("NO_COLOR", "1").env_remove("REGFSCK_CONFIG");
    c
}

#[test]
fn team_check_is_listed_next_to_the_builtins() {
    let out = team()
        .args(["checks", "--format", "json"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
    let ids: Vec<&str> = list.iter().filter_map(|c| c["id"].as_str()).collect();
    assert!(ids.contains(&"untagged-repositories"), "{ids:?}");
    assert!(ids.contains(&"orphan-layer-links"), "{ids:?}");
    let out = team()
        .args(["explain", "untagged-repositories"])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("## What it checks"));
}

#[test]
fn team_check_runs_from_the_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir
        .path()
        .join("data/private/docker/registry/v2/repositories/team/old");
    let blobs = dir
        .path()
        .join("data/private/docker/registry/v2/blobs/sha256");
    let hex = "ab".repeat(32);
    std::fs::create_dir_all(repo.join(format!("_manifests/revisions/sha256/{hex}")))
        .expect("mkdir");
    std::fs::write(
        repo.join(format!("_manifests/revisions/sha256/{hex}/link")),
        format!("sha256:{hex}"),
    )
    .expect("write");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "root = {:?}\n[policies.team.registries.\"*\"]\nuntagged-repositories = \"warn\"\n[policies.team.options.untagged-repositories]\nmin-revisions = 1\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .expect("write");
    let out = team()
        .args(["run", "team", "--format", "json", "--config"])
        .arg(&policy)
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let f = &v["findings"][0];
    assert_eq!(f["check"], "untagged-repositories");
    assert_eq!(f["repository"], "team/old");

    // The stock binary does not know the team's check: the policy loader says so.
    let stock = std::path::Path::new(env!("CARGO_BIN_EXE_regfsck-team")).with_file_name("regfsck");
    if stock.exists() {
        let out = Command::new(stock)
            .args(["run", "team", "--config"])
            .arg(&policy)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("unknown check `untagged-repositories`")
        );
    }
}
