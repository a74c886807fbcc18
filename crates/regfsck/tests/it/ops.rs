//! Running from cron: metrics file, --quiet, completions, man page.

use std::collections::HashMap;

use regfsck_core::layout;
use regfsck_core::testing::digest_of;

use crate::cli::{Fixture, regfsck};

fn samples(text: &str) -> Vec<prometheus_parse::Sample> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines)
        .expect("valid Prometheus text format")
        .samples
}

fn value(s: &prometheus_parse::Sample) -> f64 {
    match s.value {
        prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("unexpected sample type {other:?}"),
    }
}

fn find<'a>(
    all: &'a [prometheus_parse::Sample],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a prometheus_parse::Sample> {
    all.iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

#[test]
fn metrics_file_is_valid_prometheus_text_and_keeps_the_last_success() {
    let f = Fixture::new();
    let private = f.registry("private");
    let (m, _, layers) = private.image("team/app", &[b"a", b"b"]);
    private.tag("team/app", "1", &m);
    private.remove(&layout::blob_dir(&layers[0]));
    let metrics = f.dir.path().join("regfsck.prom");
    let out = f.run(&["daily", "--metrics-file", metrics.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0));
    let text = std::fs::read_to_string(&metrics).expect("metrics written");
    let all = samples(&text);
    let fix = find(
        &all,
        "regfsck_findings",
        &[
            ("check", "orphan-layer-links"),
            ("registry", "private"),
            ("level", "fix"),
        ],
    )
    .expect("findings sample");
    assert_eq!(value(fix), 1.0);
    let warn = find(
        &all,
        "regfsck_findings",
        &[
            ("check", "orphan-index-children"),
            ("registry", "private"),
            ("level", "warn"),
        ],
    )
    .expect("zero is a sample too");
    assert_eq!(value(warn), 0.0);
    assert_eq!(
        value(
            find(
                &all,
                "regfsck_actions",
                &[("registry", "private"), ("action", "removed")]
            )
            .expect("removed")
        ),
        1.0
    );
    assert_eq!(
        value(find(&all, "regfsck_objects_scanned", &[("kind", "layer_links")]).expect("scanned")),
        3.0
    );
    assert_eq!(
        value(find(&all, "regfsck_exit_code", &[]).expect("exit code")),
        0.0
    );
    let success = value(
        find(
            &all,
            "regfsck_last_success_timestamp_seconds",
            &[("policy", "daily")],
        )
        .expect("last success"),
    );
    assert!(success > 1.7e9, "{success}");
    assert!(
        !text
            .lines()
            .any(|l| !l.starts_with('#') && l.split_whitespace().count() > 2),
        "no sample timestamps:\n{text}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path())
        .expect("ls")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp file left behind");

    // A failing run (scan problem) updates the run but keeps the last success time.
    private.write(&format!("{}/junk", layout::layers_dir("team/app")), b"");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = f.run(&["daily", "--metrics-file", metrics.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(3));
    let all = samples(&std::fs::read_to_string(&metrics).expect("metrics"));
    assert_eq!(
        value(find(&all, "regfsck_exit_code", &[]).expect("exit code")),
        3.0
    );
    let kept = value(find(&all, "regfsck_last_success_timestamp_seconds", &[]).expect("kept"));
    assert_eq!(kept, success);
    let last_run = value(find(&all, "regfsck_last_run_timestamp_seconds", &[]).expect("last run"));
    assert!(last_run > success);
}

#[test]
fn quiet_prints_only_when_a_human_is_needed() {
    let f = Fixture::new();
    let private = f.registry("private");
    let (m, _, _) = private.image("team/app", &[b"a"]);
    private.tag("team/app", "1", &m);
    let out = f.run(&["daily", "--quiet"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "clean and quiet"
    );

    let d = digest_of(b"gone");
    private.layer_link("team/app", &d);
    let out = f.run(&["daily", "--quiet"]);
    assert_eq!(out.status.code(), Some(0), "fixed everything");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("RESTART NEEDED"),
        "removals need a restart: say so"
    );

    let out = f.run(&["daily", "--quiet", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    private.layer_link("team/app", &d);
    let out = f.run(&["daily", "--quiet", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("would-remove"));
}

#[test]
fn no_progress_output_when_stderr_is_not_a_terminal() {
    let f = Fixture::new();
    f.registry("private").image("a", &[b"a"]);
    let out = f.run(&["daily"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn completions_and_man_page_come_from_the_clap_definitions() {
    let mut seen = HashMap::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = regfsck()
            .args(["completions", shell])
            .output()
            .expect("runs");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            text.contains("metrics-file"),
            "{shell} completions know the flags"
        );
        seen.insert(shell, text);
    }
    assert_ne!(seen["bash"], seen["zsh"]);
    let out = regfsck().arg("man").output().expect("runs");
    let man = String::from_utf8_lossy(&out.stdout);
    assert!(man.starts_with(".ie") || man.contains(".TH"), "{man}");
    assert!(man.contains("regfsck"));
}
