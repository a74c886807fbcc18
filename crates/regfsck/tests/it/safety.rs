//! Fixes that never lose data: audit log and undo, the lock, guards, re-check, signals.

use std::process::Stdio;
use std::time::{Duration, Instant};

use regfsck_core::audit;
use regfsck_core::layout;
use regfsck_core::testing::{Tree, digest_of};
use serde_json::Value;

use crate::cli::Fixture;

fn orphans(tree: &Tree, repo: &str, n: usize) -> Vec<regfsck_core::Digest> {
    (0..n)
        .map(|i| {
            let d = digest_of(format!("{repo} orphan {i}").as_bytes());
            tree.layer_link(repo, &d);
            d
        })
        .collect()
}

#[test]
fn every_removal_is_logged_and_undo_puts_it_back() {
    let f = Fixture::new();
    let private = f.registry("private");
    let (m, _, _) = private.image("team/app", &[b"keep"]);
    private.tag("team/app", "1", &m);
    let gone = orphans(&private, "team/app", 3);
    let before: Vec<Vec<u8>> = gone
        .iter()
        .map(|d| std::fs::read(private.path(&layout::layer_link("team/app", d))).expect("read"))
        .collect();

    let (code, v) = f.json(&["layers-only"]);
    assert_eq!(code, 0, "{v:#}");
    let run_id = v["run_id"].as_str().expect("run id").to_string();
    assert!(
        gone.iter()
            .all(|d| !private.exists(&layout::layer_link_dir("team/app", d)))
    );

    let log = f.data().join(".regfsck/audit.jsonl");
    let records = audit::read(&log).expect("audit log parses");
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!(r.run_id, run_id);
        assert_eq!(r.registry, "private");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.event, audit::Event::Remove);
        assert_eq!(r.files.len(), 1);
        assert!(
            r.files[0]
                .content
                .as_deref()
                .is_some_and(|c| c.starts_with("sha256:"))
        );
    }

    // Something re-created one link since: undo must not overwrite it.
    let again = layout::layer_link("team/app", &gone[0]);
    private.write(&again, b"sha256:pushed-again");
    let out = crate::cli::regfsck()
        .args(["undo", &run_id, "--format", "json", "--config"])
        .arg(f.policy_path())
        .output()
        .expect("undo runs");
    assert_eq!(out.status.code(), Some(1), "one file could not be restored");
    let u: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(u["restored"], 2);
    assert_eq!(
        std::fs::read(private.path(&again)).expect("read"),
        b"sha256:pushed-again"
    );
    for (d, content) in gone.iter().zip(&before).skip(1) {
        let p = private.path(&layout::layer_link("team/app", d));
        assert_eq!(&std::fs::read(p).expect("restored"), content);
    }
    let records = audit::read(&log).expect("audit log parses");
    assert_eq!(
        records
            .iter()
            .filter(|r| r.event == audit::Event::Restore)
            .count(),
        2
    );

    let out = crate::cli::regfsck()
        .args(["undo", "no-such-run", "--config"])
        .arg(f.policy_path())
        .output()
        .expect("undo runs");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_second_run_on_a_locked_root_exits_4_without_scanning() {
    let f = Fixture::new();
    let private = f.registry("private");
    orphans(&private, "a", 1);
    let lock = regfsck_core::lock::RootLock::acquire(&f.data()).expect("lock");
    let out = f.run(&["layers-only"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another regfsck run holds"));
    drop(lock);
    assert_eq!(f.run(&["layers-only"]).status.code(), Some(0));
}

#[test]
fn fresh_findings_are_reported_but_not_fixed_within_the_grace_period() {
    let f = Fixture::new();
    f.write_policy(&crate::cli::POLICY.replace("grace = \"0s\"", "grace = \"1h\""));
    let private = f.registry("private");
    let d = orphans(&private, "a", 1)[0];
    let (code, v) = f.json(&["layers-only"]);
    assert_eq!(code, 1);
    assert_eq!(v["findings"][0]["action"], "skipped");
    assert!(
        v["findings"][0]["note"]
            .as_str()
            .is_some_and(|n| n.contains("grace period"))
    );
    assert!(private.exists(&layout::layer_link("a", &d)));
}

#[test]
fn a_mass_removal_is_refused_for_the_whole_registry() {
    let f = Fixture::new();
    let private = f.registry("private");
    let (m, _, _) = private.image("a", &[b"healthy"]);
    private.tag("a", "1", &m);
    orphans(&private, "a", 12); // 12 of 14 links
    let hub = f.registry("dockerhub");
    let hub_orphan = orphans(&hub, "b", 1)[0];
    let (code, v) = f.json(&["layers-only"]);
    assert_eq!(code, 1, "{v:#}");
    let refused = &v["summary"]["registries"]["private"]["fix_refused"];
    assert!(
        refused
            .as_str()
            .is_some_and(|s| s.contains("max-removal-share")),
        "{v:#}"
    );
    assert_eq!(v["summary"]["refused"], 12);
    assert_eq!(
        std::fs::read_dir(private.path(&layout::layers_dir("a")))
            .expect("ls")
            .count(),
        14
    );
    // The guard is per registry: the other registry's fix went ahead.
    assert!(!hub.exists(&layout::layer_link_dir("b", &hub_orphan)));

    // The operator can raise the limit in the policy.
    f.write_policy(&format!(
        "{}\n[registries.private]\nmax-removal-share = 1.0\n",
        crate::cli::POLICY
    ));
    let (code, v) = f.json(&["layers-only"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["summary"]["removed"], 12);

    f.write_policy(&format!(
        "{}\n[registries.private]\nmax-removals = 0\n",
        crate::cli::POLICY
    ));
    orphans(&private, "a", 1);
    let (code, v) = f.json(&["layers-only"]);
    assert_eq!(code, 1);
    assert_eq!(v["summary"]["refused"], 1);
}

#[test]
fn sigterm_mid_fix_stops_between_two_removals_with_the_log_complete() {
    let f = Fixture::new();
    f.write_policy(&format!(
        "{}\n[registries.private]\nmax-removal-share = 1.0\nmax-removals = 100000\n",
        crate::cli::POLICY
    ));
    let private = f.registry("private");
    let n = 4000;
    let gone = orphans(&private, "big", n);
    let log = f.data().join(".regfsck/audit.jsonl");
    let child = crate::cli::regfsck()
        .args(["run", "layers-only", "--format", "json", "--config"])
        .arg(f.policy_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&log).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "no removal started");
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = child.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("a complete JSON report");
    let removed = v["summary"]["removed"].as_u64().expect("removed") as usize;
    assert!(
        removed < n,
        "the signal arrived after the last removal; make n larger"
    );
    let records = audit::read(&log).expect("every line of the audit log is complete");
    assert_eq!(
        records.len(),
        removed,
        "one record per removal, no more, no less"
    );
    let remaining = gone
        .iter()
        .filter(|d| private.exists(&layout::layer_link_dir("big", d)))
        .count();
    assert_eq!(remaining, n - removed);
    for r in &records {
        assert!(
            !private.exists(&r.path),
            "{} logged but still there",
            r.path
        );
    }
}
