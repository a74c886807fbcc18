//! Findings and problems: plain data that checks return and reporters render.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::thread::LocalKey;

use serde::Serialize;
use serde_json::Value;
use thin_vec::ThinVec;

use crate::Digest;

/// Something a check found wrong on a registry: its [`FindingFields`], read and written
/// through `Deref`.
///
/// A finding is one pointer. Findings move through vectors (merged across repositories,
/// sorted, turned into outcomes) and a registry may give 100,000s of them: moving 8 bytes
/// each, rather than the 152 bytes of the fields, spares a second copy of them all while
/// they move, and the unused half of a vector that grew by doubling.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Finding(Box<FindingFields>);

/// What a [`Finding`] says.
#[derive(Debug, Clone, Serialize)]
pub struct FindingFields {
    pub check: &'static str,
    /// Shared with the other findings of the registry (see [`Finding::new`]).
    pub registry: Arc<str>,
    /// The repository, `""` for registry-wide findings; shared as the registry.
    pub repository: Arc<str>,
    pub digest: Option<Digest>,
    /// Registry-relative path the finding is about (what a fix would remove, or what is
    /// missing).
    pub path: Box<str>,
    pub message: Box<str>,
    /// Check-specific fields, stable in the JSON output.
    pub details: Details,
    /// The paths that prove the finding, for `--explain` (one pointer, and no allocation
    /// while empty, as they are without `--explain`).
    #[serde(skip)]
    pub evidence: ThinVec<Evidence>,
    /// What `fix` would do, if the check can repair this finding (boxed: most findings have
    /// none).
    #[serde(skip)]
    pub fix: Option<Box<FixPlan>>,
    /// False when nobody will show the evidence (no `--explain`): then it is not kept.
    #[serde(skip)]
    keep_evidence: bool,
}

impl Deref for Finding {
    type Target = FindingFields;

    fn deref(&self) -> &FindingFields {
        &self.0
    }
}

impl DerefMut for Finding {
    fn deref_mut(&mut self) -> &mut FindingFields {
        &mut self.0
    }
}

/// One path and what was seen there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub path: String,
    pub present: bool,
    /// Mostly a fixed sentence of the check, so not allocated per finding.
    pub note: Cow<'static, str>,
}

/// A finding's check-specific fields: a handful, under fixed names. Kept as a boxed slice
/// (a map costs a B-tree node of eleven slots per finding, and a run may hold 100,000s of
/// findings); serialized as a JSON object with sorted keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Details(Box<[(&'static str, DetailValue)]>);

/// The value of one detail: JSON, but for the two kinds of value findings repeat most,
/// which are held without an allocation of their own: a fixed word of the check
/// (`"missing"`; every `&'static str`) and a digest (32 bytes, shown as `sha256:<hex>`,
/// where the text takes an 80-byte allocation).
#[derive(Debug, Clone, PartialEq)]
pub enum DetailValue {
    Word(&'static str),
    Digest(Digest),
    Json(Value),
}

impl DetailValue {
    /// As JSON, as it is serialized.
    pub fn to_json(&self) -> Value {
        match self {
            DetailValue::Word(w) => Value::from(*w),
            DetailValue::Digest(d) => Value::from(d.to_string()),
            DetailValue::Json(v) => v.clone(),
        }
    }

    /// The text of a word or a JSON string (not of a digest: [`DetailValue::to_json`]).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            DetailValue::Word(w) => Some(w),
            DetailValue::Json(v) => v.as_str(),
            DetailValue::Digest(_) => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            DetailValue::Json(v) => v.as_u64(),
            _ => None,
        }
    }
}

impl Serialize for DetailValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            DetailValue::Word(w) => serializer.serialize_str(w),
            DetailValue::Digest(d) => d.serialize(serializer),
            DetailValue::Json(v) => v.serialize(serializer),
        }
    }
}

impl From<&'static str> for DetailValue {
    fn from(w: &'static str) -> Self {
        DetailValue::Word(w)
    }
}

impl From<Digest> for DetailValue {
    fn from(d: Digest) -> Self {
        DetailValue::Digest(d)
    }
}

impl<T: Into<DetailValue>> From<Option<T>> for DetailValue {
    /// `null` when there is none.
    fn from(v: Option<T>) -> Self {
        v.map_or(DetailValue::Json(Value::Null), Into::into)
    }
}

/// Values that go in as JSON.
macro_rules! json_detail {
    ($($t:ty),*) => {$(
        impl From<$t> for DetailValue {
            fn from(v: $t) -> Self {
                DetailValue::Json(Value::from(v))
            }
        }
    )*};
}
json_detail!(String, bool, u64, i64, u32, i32, usize, Value);

impl<T: Into<Value>> From<Vec<T>> for DetailValue {
    fn from(v: Vec<T>) -> Self {
        DetailValue::Json(Value::from(v))
    }
}

/// Compared as JSON: `details["size"] == 12`, `details["tags"] == json!(["a"])`.
macro_rules! json_eq {
    ($($t:ty),*) => {$(
        impl PartialEq<$t> for DetailValue {
            fn eq(&self, other: &$t) -> bool {
                self.to_json() == *other
            }
        }
    )*};
}
json_eq!(Value, &str, str, String, bool, u64, i64, i32, usize);

impl Details {
    /// Sets `key`, replacing an earlier value.
    pub fn insert(&mut self, key: &'static str, value: impl Into<DetailValue>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => {
                // A finding has a handful of details: grown one at a time, as a boxed slice
                // they hold no unused slots (a vector would reserve four at the first push).
                let mut fields = std::mem::take(&mut self.0).into_vec();
                fields.reserve_exact(1);
                fields.push((key, value));
                self.0 = fields.into_boxed_slice();
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&DetailValue> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn remove(&mut self, key: &str) -> Option<DetailValue> {
        let i = self.0.iter().position(|(k, _)| *k == key)?;
        let mut fields = std::mem::take(&mut self.0).into_vec();
        let (_, value) = fields.remove(i);
        self.0 = fields.into_boxed_slice();
        Some(value)
    }

    /// As a JSON object.
    pub fn to_map(&self) -> serde_json::Map<String, Value> {
        self.0
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.to_json()))
            .collect()
    }

    fn sorted(&self) -> Vec<&(&'static str, DetailValue)> {
        let mut fields: Vec<_> = self.0.iter().collect();
        fields.sort_by_key(|(k, _)| *k);
        fields
    }
}

impl std::ops::Index<&str> for Details {
    type Output = DetailValue;

    /// The value under `key`, `null` when there is none (as indexing a JSON value).
    fn index(&self, key: &str) -> &DetailValue {
        static NULL: DetailValue = DetailValue::Json(Value::Null);
        self.get(key).unwrap_or(&NULL)
    }
}

impl Serialize for Details {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fields = self.sorted();
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (k, v) in fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A repair the remediation runner may execute; checks only describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixPlan {
    pub action: FixAction,
    pub applicability: Applicability,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FixAction {
    /// Remove this registry-relative directory (it must have a removable layout shape).
    RemoveDir { path: String },
}

/// How safe the check says its fix is: only `Safe` fixes run unattended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Applicability {
    /// Loses nothing the registry can serve: the registry re-fetches or re-creates it.
    Safe,
    /// Needs a human to confirm.
    NeedsReview,
}

/// Something the scan could not read or make sense of; the scan is incomplete.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub registry: String,
    /// Registry-relative path.
    pub path: String,
    pub message: String,
}

/// `team/app:1.1, team/app:latest`: at most three, then how many more.
pub fn tag_refs<I>(repo: &str, tags: I) -> String
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    const SHOWN: usize = 3;
    let tags: Vec<String> = tags
        .into_iter()
        .map(|t| format!("{repo}:{}", t.as_ref()))
        .collect();
    let shown = tags[..tags.len().min(SHOWN)].join(", ");
    match tags.len().checked_sub(SHOWN) {
        Some(more) if more > 0 => format!("{shown} and {more} more"),
        _ => shown,
    }
}

thread_local! {
    static REGISTRY: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
    static REPOSITORY: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// `name`, as the last finding made on this thread held it when it is the same name. A
/// check makes its findings a repository at a time on one thread, 100,000s in a large
/// registry: so they share one copy of their registry's and repository's names.
fn shared(last: &'static LocalKey<RefCell<Option<Arc<str>>>>, name: &str) -> Arc<str> {
    last.with_borrow_mut(|last| match last {
        Some(known) if **known == *name => Arc::clone(known),
        _ => Arc::clone(last.insert(Arc::from(name))),
    })
}

impl Finding {
    /// A finding of `check` about `path`. Findings made one after another on a thread share
    /// their registry's and repository's names.
    pub fn new(
        check: &'static str,
        registry: &str,
        repository: &str,
        path: String,
        message: String,
    ) -> Self {
        Self(Box::new(FindingFields {
            check,
            registry: shared(&REGISTRY, registry),
            repository: shared(&REPOSITORY, repository),
            digest: None,
            // Kept as long as the run: boxed, without the room `format!` left for growth.
            path: path.into_boxed_str(),
            message: message.into_boxed_str(),
            details: Details::default(),
            evidence: ThinVec::new(),
            fix: None,
            keep_evidence: true,
        }))
    }

    /// Drops the evidence, and any given later: it only serves `--explain`, and a run may
    /// hold 100,000s of findings.
    pub fn without_evidence(mut self) -> Self {
        self.keep_evidence = false;
        self.evidence = ThinVec::new();
        self
    }

    pub fn digest(mut self, d: Digest) -> Self {
        self.digest = Some(d);
        self
    }

    pub fn detail(mut self, key: &'static str, value: impl Into<DetailValue>) -> Self {
        self.details.insert(key, value);
        self
    }

    pub fn evidence(
        mut self,
        path: String,
        present: bool,
        note: impl Into<Cow<'static, str>>,
    ) -> Self {
        if !self.keep_evidence {
            return self;
        }
        self.evidence.push(Evidence {
            path,
            present,
            note: note.into(),
        });
        self
    }

    pub fn fix(mut self, plan: FixPlan) -> Self {
        self.fix = Some(Box::new(plan));
        self
    }

    /// The order in which findings are reported, so two runs diff cleanly.
    pub fn sort_key(&self) -> (&str, &str, &str, Option<Digest>, &str) {
        (
            &*self.registry,
            self.check,
            &*self.repository,
            self.digest,
            &self.path,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_serialize_as_a_sorted_object() {
        let d = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).expect("digest");
        let f = Finding::new("c", "r", "repo", "p".into(), "m".into())
            .detail("zeta", 1)
            .detail("alpha", "a")
            .detail("digest", d)
            .detail("none", None::<String>)
            .detail("list", vec!["x".to_string()])
            .detail("zeta", 2);
        assert_eq!(
            serde_json::to_string(&f.details).expect("json"),
            format!(r#"{{"alpha":"a","digest":"{d}","list":["x"],"none":null,"zeta":2}}"#)
        );
        // Words and digests take no allocation of their own, and read back as JSON.
        assert_eq!(f.details["alpha"], DetailValue::Word("a"));
        assert_eq!(f.details["digest"], DetailValue::Digest(d));
        assert_eq!(f.details["digest"], d.to_string());
        assert_eq!(f.details["alpha"].as_str(), Some("a"));
        assert_eq!(f.details["zeta"], 2);
        assert_eq!(f.details["zeta"].as_u64(), Some(2));
        assert_eq!(f.details["missing"], Value::Null);
        assert_eq!(f.details.to_map()["digest"], Value::from(d.to_string()));
    }

    #[test]
    fn the_fields_fit_the_allocators_160_byte_class() {
        // jemalloc's size classes step from 160 to 192 bytes: past 160, each finding's fields
        // take a 192-byte block, 32 bytes more for each of a registry's 100,000s of findings.
        let size = std::mem::size_of::<FindingFields>();
        assert!(size <= 160, "FindingFields takes {size} bytes");
    }

    #[test]
    fn findings_made_in_a_row_share_their_names() {
        let f = |repo: &str| Finding::new("c", "reg", repo, "p".into(), "m".into());
        let (a, b, c) = (f("team/app"), f("team/app"), f("team/db"));
        assert!(Arc::ptr_eq(&a.repository, &b.repository));
        assert!(Arc::ptr_eq(&a.registry, &c.registry));
        assert_eq!((&*c.registry, &*c.repository), ("reg", "team/db"));
        assert!(!Arc::ptr_eq(&a.repository, &c.repository));
        // Another thread makes its own copy.
        let other = std::thread::spawn(move || f("team/app"))
            .join()
            .expect("thread");
        assert_eq!(&*other.repository, "team/app");
        assert!(!Arc::ptr_eq(&other.repository, &a.repository));
    }

    #[test]
    fn evidence_is_dropped_when_not_wanted() {
        let f = Finding::new("c", "r", "repo", "p".into(), "m".into());
        let kept = f.clone().evidence("a".into(), true, "seen");
        assert_eq!(kept.evidence.len(), 1);
        let dropped = kept.without_evidence().evidence("b".into(), false, "gone");
        assert!(dropped.evidence.is_empty());
    }
}
