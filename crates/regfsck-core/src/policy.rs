//! The policy file: which checks run on which registry, and how far each may go.
//!
//! The file is parsed with spans kept on every key and value, then validated in one pass
//! that collects *every* problem, so the operator fixes the file once.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use miette::NamedSource;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostics::{PolicyError, PolicyProblem, PolicyReadError};
use crate::options::{CheckOptions, OptionKind, OptionValue};
use crate::{Level, Registration, check};

/// The registry pattern that applies to every registry not named.
pub const ANY: &str = "*";

/// A validated policy file.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    pub path: PathBuf,
    /// The data root: one subdirectory per registry.
    pub root: Option<PathBuf>,
    /// Where removals are logged (JSON Lines).
    pub audit_log: Option<PathBuf>,
    /// `[registries.<name>]` (and `"*"`): facts and limits per registry.
    pub registries: BTreeMap<String, RegistrySettings>,
    pub policies: BTreeMap<String, Policy>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistrySettings {
    /// Findings whose files changed more recently than this are reported, never fixed.
    pub grace: Option<Duration>,
    /// A fix that would remove more links than this on one registry is refused.
    pub max_removals: Option<u64>,
    /// A fix that would remove more than this share (0–1) of a registry's links is refused.
    pub max_removal_share: Option<f64>,
    /// Where the registry's storage is, when it is not `<root>/<name>` on this host.
    pub storage: Option<StorageSpec>,
}

/// An object-store registry: `storage = "s3://bucket/rootdirectory"`, or the registry's own
/// `config.yml` (`registry-config`), plus connection settings. Credentials never come from
/// the policy: the backend reads the usual environment variables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageSpec {
    pub url: Option<String>,
    pub registry_config: Option<PathBuf>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: Option<bool>,
    pub allow_http: Option<bool>,
    pub max_requests_per_second: Option<u32>,
    pub concurrency: Option<u32>,
}

/// The keys of `[registries.<name>]` that describe storage.
const STORAGE_KEYS: [&str; 8] = [
    "storage",
    "registry-config",
    "endpoint",
    "region",
    "path-style",
    "allow-http",
    "max-requests-per-second",
    "concurrency",
];

/// One named policy (`[policies.daily]`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub description: Option<String>,
    /// Registry name (or `"*"`) → check id → level.
    pub registries: BTreeMap<String, BTreeMap<&'static str, Level>>,
    /// Check id → the options the policy sets (defaults are not stored here).
    pub options: BTreeMap<&'static str, CheckOptions>,
}

impl Policy {
    /// The level of `check` on `registry`: the registry's own entry, else `"*"`, else off.
    pub fn level(&self, registry: &str, check: &str) -> Level {
        [registry, ANY]
            .iter()
            .filter_map(|r| self.registries.get(*r))
            .find_map(|levels| levels.get(check).copied())
            .unwrap_or(Level::Off)
    }

    /// The options of `check` in this policy: its declared defaults, overlaid by the policy.
    pub fn options(&self, reg: &Registration) -> CheckOptions {
        let mut opts = CheckOptions::defaults(reg.info.options);
        if let Some(set) = self.options.get(reg.info.id) {
            for spec in reg.info.options {
                if let Some(v) = set.get(spec.name) {
                    opts.set(spec.name, v);
                }
            }
        }
        opts
    }

    /// Registries the policy names explicitly (not `"*"`).
    pub fn named_registries(&self) -> impl Iterator<Item = &str> {
        self.registries
            .keys()
            .map(String::as_str)
            .filter(|r| *r != ANY)
    }
}

impl PolicyFile {
    /// Reads and validates a policy file. `selected` is the policy the operator asked for:
    /// naming one the file does not have is reported with the file's other problems.
    pub fn load(path: &Path, selected: Option<&str>) -> miette::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyReadError {
            file: path.display().to_string(),
            source,
        })?;
        Ok(Self::parse(path, &text, selected)?)
    }

    pub fn parse(path: &Path, text: &str, selected: Option<&str>) -> Result<Self, PolicyError> {
        let mut v = Validator {
            src: NamedSource::new(path.display().to_string(), text.to_string()),
            problems: Vec::new(),
        };
        let (doc, syntax) = DeTable::parse_recoverable(text);
        let syntax_ok = syntax.is_empty();
        for e in syntax {
            v.problem(e.span(), e.message().trim().to_string(), "here", None);
        }
        let mut file = PolicyFile {
            path: path.to_path_buf(),
            root: None,
            audit_log: None,
            registries: BTreeMap::new(),
            policies: BTreeMap::new(),
        };
        for (key, value) in doc.get_ref().iter() {
            match key.get_ref().as_ref() {
                "root" => file.root = v.string(value).map(PathBuf::from),
                "audit-log" => file.audit_log = v.string(value).map(PathBuf::from),
                "registries" => {
                    for (name, settings) in v.table(value) {
                        let s = v.registry_settings(name, settings);
                        file.registries.insert(name.get_ref().to_string(), s);
                    }
                }
                "policies" => {
                    for (name, body) in v.table(value) {
                        let p = v.policy(name.get_ref(), body);
                        file.policies.insert(name.get_ref().to_string(), p);
                    }
                }
                other => {
                    v.unknown_key(key, other, &["root", "audit-log", "registries", "policies"])
                }
            }
        }
        // After a syntax error a missing policy may be the error's echo: say it only alone.
        if let Some(name) = selected
            && syntax_ok
            && !file.policies.contains_key(name)
        {
            let names: Vec<&str> = file.policies.keys().map(String::as_str).collect();
            let help = Some(suggest(name, &names, "policies"));
            v.problem(
                None,
                format!("no policy named `{name}` in this file"),
                "",
                help,
            );
        }
        // In file order, so the operator reads the report top to bottom with the file.
        v.problems
            .sort_by_key(|p| p.span.map_or(usize::MAX, |s| s.offset()));
        if v.problems.is_empty() {
            Ok(file)
        } else {
            Err(PolicyError {
                file: path.display().to_string(),
                problems: v.problems,
            })
        }
    }
}

struct Validator {
    src: NamedSource<String>,
    problems: Vec<PolicyProblem>,
}

type Value<'i> = Spanned<DeValue<'i>>;
type Key<'i> = Spanned<std::borrow::Cow<'i, str>>;

impl Validator {
    fn problem(
        &mut self,
        span: Option<Range<usize>>,
        message: String,
        label: &str,
        help: Option<String>,
    ) {
        self.problems.push(PolicyProblem {
            message,
            src: self.src.clone(),
            span: span.map(Into::into),
            label: label.to_string(),
            help,
        });
    }

    fn unknown_key(&mut self, key: &Key<'_>, name: &str, valid: &[&str]) {
        self.problem(
            Some(key.span()),
            format!("unknown key `{name}`"),
            "not a known key here",
            Some(suggest(name, valid, "keys")),
        );
    }

    fn expected(&mut self, value: &Value<'_>, what: &str) {
        let found = value.get_ref().type_str();
        self.problem(
            Some(value.span()),
            format!("expected {what}, found {found}"),
            &format!("expected {what}"),
            None,
        );
    }

    fn string(&mut self, value: &Value<'_>) -> Option<String> {
        match value.get_ref().as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.expected(value, "a string");
                None
            }
        }
    }

    fn table<'a, 'i>(&mut self, value: &'a Value<'i>) -> Vec<(&'a Key<'i>, &'a Value<'i>)> {
        match value.get_ref().as_table() {
            Some(t) => t.iter().collect(),
            None => {
                self.expected(value, "a table");
                Vec::new()
            }
        }
    }

    fn registry_settings(&mut self, name: &Key<'_>, body: &Value<'_>) -> RegistrySettings {
        let mut s = RegistrySettings::default();
        let mut spec = StorageSpec::default();
        let mut located: Option<&str> = None;
        for (key, value) in self.table(body) {
            let k = key.get_ref().as_ref();
            if STORAGE_KEYS.contains(&k) && name.get_ref().as_ref() == ANY {
                self.problem(
                    Some(key.span()),
                    format!("`{k}` belongs to one registry, not to \"*\""),
                    "storage is set per registry",
                    Some("move it under [registries.<name>]".into()),
                );
                continue;
            }
            match k {
                "storage" | "registry-config" => {
                    if let Some(first) = located {
                        self.problem(
                            Some(key.span()),
                            format!("`{k}` and `{first}` both say where the storage is"),
                            "give one of them",
                            None,
                        );
                        continue;
                    }
                    located = Some(if k == "storage" {
                        "storage"
                    } else {
                        "registry-config"
                    });
                    let Some(text) = self.string(value) else {
                        continue;
                    };
                    if k == "storage" {
                        let bucket = text
                            .strip_prefix("s3://")
                            .map(|r| r.split('/').next().unwrap_or(""));
                        if bucket.is_none_or(str::is_empty) {
                            self.problem(
                                Some(value.span()),
                                format!("unsupported storage URL `{text}`"),
                                "expected s3://bucket[/rootdirectory]",
                                Some("local registries need no `storage`: they live in <root>/<name>".into()),
                            );
                            continue;
                        }
                        spec.url = Some(text);
                    } else {
                        if !Path::new(&text).is_file() {
                            self.problem(
                                Some(value.span()),
                                format!("registry config `{text}` is not a readable file"),
                                "no such file",
                                None,
                            );
                            continue;
                        }
                        spec.registry_config = Some(PathBuf::from(text));
                    }
                }
                "endpoint" => spec.endpoint = self.string(value),
                "region" => spec.region = self.string(value),
                "path-style" => spec.path_style = self.boolean(value),
                "allow-http" => spec.allow_http = self.boolean(value),
                "max-requests-per-second" | "concurrency" => {
                    let n = value
                        .get_ref()
                        .as_integer()
                        .and_then(integer)
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|n| *n > 0);
                    match n {
                        Some(n) if k == "concurrency" => spec.concurrency = Some(n),
                        Some(n) => spec.max_requests_per_second = Some(n),
                        None => self.expected(value, "a whole number above 0"),
                    }
                }
                "grace" => s.grace = self.duration(value),
                "max-removals" => match value.get_ref().as_integer().and_then(|i| integer(i)) {
                    Some(n) if n >= 0 => s.max_removals = Some(n.unsigned_abs()),
                    _ => self.expected(value, "a whole number of links, 0 or more"),
                },
                "max-removal-share" => match value
                    .get_ref()
                    .as_float()
                    .and_then(|f| f.as_str().parse::<f64>().ok())
                {
                    Some(f) if (0.0..=1.0).contains(&f) => s.max_removal_share = Some(f),
                    _ => self.expected(value, "a share between 0.0 and 1.0"),
                },
                other => {
                    let mut valid = vec!["grace", "max-removals", "max-removal-share"];
                    valid.extend(STORAGE_KEYS);
                    self.unknown_key(key, other, &valid)
                }
            }
        }
        if spec != StorageSpec::default() {
            if located.is_none() {
                self.problem(
                    Some(name.span()),
                    "connection settings without `storage` or `registry-config`".into(),
                    "this registry has S3 settings but no bucket",
                    Some("add storage = \"s3://bucket/rootdirectory\" or registry-config = \"/etc/docker/registry/config.yml\"".into()),
                );
            }
            s.storage = Some(spec);
        }
        s
    }

    fn boolean(&mut self, value: &Value<'_>) -> Option<bool> {
        let b = value.get_ref().as_bool();
        if b.is_none() {
            self.expected(value, "true or false");
        }
        b
    }

    fn duration(&mut self, value: &Value<'_>) -> Option<Duration> {
        let text = self.string(value)?;
        match humantime::parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(
                    Some(value.span()),
                    format!("invalid duration `{text}`: {e}"),
                    "not a duration",
                    Some("write a duration such as \"0s\", \"90m\", \"1h\" or \"7days\"".into()),
                );
                None
            }
        }
    }

    fn policy(&mut self, name: &str, body: &Value<'_>) -> Policy {
        let mut p = Policy {
            name: name.to_string(),
            description: None,
            registries: BTreeMap::new(),
            options: BTreeMap::new(),
        };
        for (key, value) in self.table(body) {
            match key.get_ref().as_ref() {
                "description" => p.description = self.string(value),
                "options" => {
                    for (id, opts) in self.table(value) {
                        if let Some(reg) = self.check_id(id) {
                            let opts = self.check_options(reg, opts);
                            p.options.insert(reg.info.id, opts);
                        }
                    }
                }
                "registries" => {
                    for (registry, levels) in self.table(value) {
                        let levels = self.levels(levels);
                        p.registries.insert(registry.get_ref().to_string(), levels);
                    }
                }
                other => self.unknown_key(key, other, &["description", "registries", "options"]),
            }
        }
        p
    }

    /// `check-id = "level"` pairs of one registry.
    fn levels(&mut self, body: &Value<'_>) -> BTreeMap<&'static str, Level> {
        let mut out = BTreeMap::new();
        for (key, value) in self.table(body) {
            let Some(reg) = self.check_id(key) else {
                continue;
            };
            if let Some(level) = self.level(value, reg) {
                out.insert(reg.info.id, level);
            }
        }
        out
    }

    /// The registered check a key names, or a problem with a suggestion.
    fn check_id(&mut self, key: &Key<'_>) -> Option<&'static Registration> {
        let id = key.get_ref().as_ref();
        let found = check::find(id);
        if found.is_none() {
            let ids: Vec<&str> = check::registered().iter().map(|r| r.info.id).collect();
            self.problem(
                Some(key.span()),
                format!("unknown check `{id}`"),
                "no check has this id",
                Some(suggest(id, &ids, "checks")),
            );
        }
        found
    }

    /// `[policies.<p>.options.<check-id>]`, validated against what the check declares.
    fn check_options(&mut self, reg: &Registration, body: &Value<'_>) -> CheckOptions {
        let mut out = CheckOptions::default();
        for (key, value) in self.table(body) {
            let name = key.get_ref().as_ref();
            let Some(spec) = reg.info.options.iter().find(|o| o.name == name) else {
                let names: Vec<&str> = reg.info.options.iter().map(|o| o.name).collect();
                self.problem(
                    Some(key.span()),
                    format!("`{}` has no option `{name}`", reg.info.id),
                    "unknown option",
                    Some(suggest(name, &names, "options")),
                );
                continue;
            };
            let parsed = match (spec.kind, value.get_ref()) {
                (OptionKind::Bool, DeValue::Boolean(b)) => Some(OptionValue::Bool(*b)),
                (OptionKind::Count, DeValue::Integer(i)) => integer(i)
                    .and_then(|n| u64::try_from(n).ok())
                    .map(OptionValue::Count),
                (OptionKind::Bytes, DeValue::Integer(i)) => integer(i)
                    .and_then(|n| u64::try_from(n).ok())
                    .map(OptionValue::Bytes),
                (OptionKind::Duration | OptionKind::Bytes, DeValue::String(s)) => {
                    OptionValue::parse_str(spec.kind, s)
                }
                _ => None,
            };
            match parsed {
                Some(v) => out.set(spec.name, v),
                None => self.problem(
                    Some(value.span()),
                    format!("invalid value for `{}.{name}`", reg.info.id),
                    &format!("expected {}", spec.kind.describe()),
                    Some(format!("{name}: {} (default {})", spec.help, spec.default)),
                ),
            }
        }
        out
    }

    fn level(&mut self, value: &Value<'_>, reg: &Registration) -> Option<Level> {
        let text = self.string(value)?;
        let Some(level) = Level::parse(&text) else {
            let names: Vec<&str> = Level::ALL.iter().map(|l| l.as_str()).collect();
            self.problem(
                Some(value.span()),
                format!("unknown level `{text}`"),
                "not a level",
                Some(suggest(&text, &names, "levels")),
            );
            return None;
        };
        if level > reg.info.max_level {
            let (id, max) = (reg.info.id, reg.info.max_level);
            self.problem(
                Some(value.span()),
                format!("`{id}` cannot go as far as `{level}`"),
                &format!("the strongest level of `{id}` is `{max}`"),
                Some(format!("use `{max}` (see `regfsck explain {id}`)")),
            );
            return None;
        }
        Some(level)
    }
}

fn integer(i: &toml::de::DeInteger<'_>) -> Option<i64> {
    i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok()
}

/// "did you mean …" plus the list of valid names.
fn suggest(name: &str, valid: &[&str], what: &str) -> String {
    let best = valid
        .iter()
        .map(|v| (strsim::jaro_winkler(name, v), *v))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let list = if valid.is_empty() {
        "(none)".to_string()
    } else {
        valid.join(", ")
    };
    match best {
        Some((_, v)) => format!("did you mean `{v}`? valid {what}: {list}"),
        None => format!("valid {what}: {list}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Check, CheckContext, CheckOutput, OptionKind, OptionSpec};

    struct Noop;
    impl Check for Noop {
        fn run(&self, _: &CheckContext<'_>) -> CheckOutput {
            CheckOutput::default()
        }
    }
    crate::declare_check! {
        check: Noop,
        id: "policy-test-fixable",
        summary: "test",
        explanation: "test",
        help: "test",
        max_level: Fix,
        needs: [],
        options: [OptionSpec::new("max-age", OptionKind::Duration, "168h", "age")],
    }
    crate::declare_check! {
        check: Noop,
        id: "policy-test-warn",
        summary: "test",
        explanation: "test",
        help: "test",
        max_level: Warn,
        needs: [],
    }

    fn parse(text: &str) -> Result<PolicyFile, PolicyError> {
        PolicyFile::parse(Path::new("p.toml"), text, Some("p"))
    }

    #[test]
    fn named_registries_override_the_star_check_by_check() {
        let f = parse(
            r#"
[policies.p.registries."*"]
policy-test-fixable = "fix"
policy-test-warn = "warn"
[policies.p.registries.cache]
policy-test-warn = "off"
[policies.p.options.policy-test-fixable]
max-age = "2h"
"#,
        )
        .expect("valid");
        let p = &f.policies["p"];
        assert_eq!(p.level("private", "policy-test-warn"), Level::Warn);
        assert_eq!(p.level("cache", "policy-test-warn"), Level::Off);
        assert_eq!(p.level("cache", "policy-test-fixable"), Level::Fix);
        assert_eq!(p.level("cache", "orphan-layer-links"), Level::Off);
        let reg = check::find("policy-test-fixable").expect("registered");
        assert_eq!(
            p.options(reg).duration("max-age"),
            Some(Duration::from_secs(7200))
        );
        let mut other = p.clone();
        other.options.clear();
        assert_eq!(
            other.options(reg).duration("max-age"),
            Some(Duration::from_secs(168 * 3600))
        );
    }

    #[test]
    fn every_problem_is_collected_with_its_span() {
        let text = r#"root = 5
[registries.x]
max-removal-share = 2.0
[policies.p.registries."*"]
policy-test-warn = "fix"
[policies.p.options.policy-test-fixable]
max-age = "soon"
min-age = "1h"
[policies.p.options.no-such-check]
"#;
        let err = parse(text).expect_err("invalid");
        let got: Vec<(String, &str)> = err
            .problems
            .iter()
            .map(|p| {
                let span = p.span.expect("every problem here has a span");
                (
                    p.message.clone(),
                    &text[span.offset()..span.offset() + span.len()],
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("expected a string, found integer".to_string(), "5"),
                (
                    "expected a share between 0.0 and 1.0, found float".to_string(),
                    "2.0"
                ),
                (
                    "`policy-test-warn` cannot go as far as `fix`".to_string(),
                    "\"fix\""
                ),
                (
                    "invalid value for `policy-test-fixable.max-age`".to_string(),
                    "\"soon\""
                ),
                (
                    "`policy-test-fixable` has no option `min-age`".to_string(),
                    "min-age"
                ),
                ("unknown check `no-such-check`".to_string(), "no-such-check"),
            ]
        );
    }

    #[test]
    fn syntax_errors_are_reported_with_a_span_not_a_panic() {
        let err = parse("[policies.p\nroot = ").expect_err("invalid");
        assert!(!err.problems.is_empty());
        assert!(err.problems.iter().all(|p| p.span.is_some()));
    }

    #[test]
    fn object_store_settings_are_validated_with_spans() {
        let ok = parse(
            r#"
[registries.cache]
storage = "s3://bucket/registry"
endpoint = "http://127.0.0.1:8333"
path-style = true
allow-http = true
max-requests-per-second = 20
[policies.p.registries."*"]
policy-test-warn = "warn"
"#,
        )
        .expect("valid");
        let spec = ok.registries["cache"].storage.clone().expect("storage");
        assert_eq!(spec.url.as_deref(), Some("s3://bucket/registry"));
        assert_eq!(spec.max_requests_per_second, Some(20));
        assert_eq!(spec.path_style, Some(true));

        let text = r#"[registries."*"]
storage = "s3://b"
[registries.a]
storage = "gs://bucket"
[registries.b]
storage = "s3://b"
registry-config = "/no/such/config.yml"
[registries.c]
endpoint = "http://127.0.0.1:1"
path-style = "yes"
[policies.p]
"#;
        let err = parse(text).expect_err("invalid");
        let got: Vec<(String, &str)> = err
            .problems
            .iter()
            .map(|p| {
                let span = p.span.expect("span");
                (
                    p.message.clone(),
                    &text[span.offset()..span.offset() + span.len()],
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "`storage` belongs to one registry, not to \"*\"".to_string(),
                    "storage"
                ),
                (
                    "unsupported storage URL `gs://bucket`".to_string(),
                    "\"gs://bucket\""
                ),
                // Keys are read in sorted order: registry-config first.
                (
                    "`storage` and `registry-config` both say where the storage is".to_string(),
                    "storage"
                ),
                (
                    "registry config `/no/such/config.yml` is not a readable file".to_string(),
                    "\"/no/such/config.yml\""
                ),
                (
                    "connection settings without `storage` or `registry-config`".to_string(),
                    "c"
                ),
                (
                    "expected true or false, found string".to_string(),
                    "\"yes\""
                ),
            ]
        );
    }
}
