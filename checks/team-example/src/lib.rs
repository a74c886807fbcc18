//! An example of a team's own check, kept small so it can be copied: repositories with
//! manifest revisions but no tags.
//!
//! To add a check: copy this crate into `checks/<your-id>/`, change the id, the summary and
//! EXPLAIN.md, implement `run`, and name the crate in your binary (see crates/regfsck-team).

use regfsck_core::{Check, CheckContext, CheckOutput, OptionKind, OptionSpec, layout};

pub const ID: &str = "untagged-repositories";

pub struct UntaggedRepositories;

regfsck_core::declare_check! {
    check: UntaggedRepositories,
    id: "untagged-repositories",
    summary: "repositories that hold manifests but no tags (the next GC with -m empties them)",
    explanation: include_str!("../EXPLAIN.md"),
    help: "tag what should stay; the rest goes with the next garbage-collect --delete-untagged",
    max_level: Warn,
    needs: [REVISIONS, TAGS],
    options: [OptionSpec::new(
        "min-revisions",
        OptionKind::Count,
        "1",
        "report a repository only when it holds at least this many revisions"
    )],
}

impl Check for UntaggedRepositories {
    fn run(&self, cx: &CheckContext<'_>) -> CheckOutput {
        let min = cx.options.count("min-revisions").unwrap_or(1).max(1);
        let mut out = CheckOutput::default();
        for repo in &cx.inventory.repositories {
            let revisions = repo.revisions.len() as u64;
            if repo.tags.is_empty() && revisions >= min {
                out.findings.push(
                    cx.finding(
                        ID,
                        &repo.name,
                        layout::tags_dir(&repo.name),
                        format!("{revisions} manifest revision(s) and no tag"),
                    )
                    .detail("revisions", revisions)
                    .evidence(layout::revisions_dir(&repo.name), true, "revisions kept")
                    .evidence(layout::tags_dir(&repo.name), false, "no tags"),
                );
            }
        }
        out.counters = vec![
            ("repositories", cx.inventory.repositories.len() as u64),
            ("untagged", out.findings.len() as u64),
        ];
        out
    }
}

#[cfg(test)]
mod tests {
    use regfsck_core::testing::{Tree, run_check};
    use regfsck_core::{CheckOptions, OptionValue, check};

    use super::*;

    #[test]
    fn reports_repositories_without_tags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = Tree::new(dir.path());
        let (m, _, _) = tree.image("team/kept", &[b"a"]);
        tree.tag("team/kept", "1.0", &m);
        tree.image("team/old", &[b"b"]);
        let reg = check::find(ID).expect("registered");
        let out = run_check(reg, "private", &tree, None);
        let repos: Vec<&str> = out.findings.iter().map(|f| &*f.repository).collect();
        assert_eq!(repos, ["team/old"]);

        let mut opts = CheckOptions::defaults(reg.info.options);
        opts.set("min-revisions", OptionValue::Count(2));
        assert!(
            run_check(reg, "private", &tree, Some(opts))
                .findings
                .is_empty()
        );
    }
}
