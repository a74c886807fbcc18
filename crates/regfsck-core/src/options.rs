//! Per-check options: declared by the check, set in `[policies.<p>.options.<check-id>]`,
//! validated with the rest of the policy.

use std::collections::BTreeMap;
use std::time::Duration;

/// The type of an option's value, and how the policy spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionKind {
    /// A duration string: `"168h"`, `"90m"`, `"7days"`.
    Duration,
    /// A whole number, 0 or more.
    Count,
    /// A size string: `"10GiB"`, `"512MiB"`, `"100kB"`, or a plain number of bytes.
    Bytes,
    /// `true` or `false`.
    Bool,
}

impl OptionKind {
    pub fn describe(self) -> &'static str {
        match self {
            OptionKind::Duration => "a duration such as \"168h\"",
            OptionKind::Count => "a whole number, 0 or more",
            OptionKind::Bytes => "a size such as \"10GiB\" or a number of bytes",
            OptionKind::Bool => "true or false",
        }
    }
}

/// One option a check declares.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub name: &'static str,
    pub kind: OptionKind,
    /// The default, spelt as in the policy file (a test checks every default parses).
    pub default: &'static str,
    pub help: &'static str,
}

impl OptionSpec {
    pub const fn new(
        name: &'static str,
        kind: OptionKind,
        default: &'static str,
        help: &'static str,
    ) -> Self {
        Self {
            name,
            kind,
            default,
            help,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptionValue {
    Duration(Duration),
    Count(u64),
    Bytes(u64),
    Bool(bool),
}

/// Parses a size: a number of bytes, or a number with a unit (kB, MB, GB, TB, KiB, MiB, GiB, TiB).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl OptionValue {
    /// Parses a string spelling (defaults, and string values in the policy).
    pub fn parse_str(kind: OptionKind, s: &str) -> Option<Self> {
        match kind {
            OptionKind::Duration => humantime::parse_duration(s).ok().map(Self::Duration),
            OptionKind::Bytes => parse_bytes(s).map(Self::Bytes),
            OptionKind::Count => s.parse().ok().map(Self::Count),
            OptionKind::Bool => s.parse().ok().map(Self::Bool),
        }
    }
}

/// The options in force for one check in one policy: the policy's values over the defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckOptions(BTreeMap<&'static str, OptionValue>);

impl CheckOptions {
    /// The defaults of `specs`; a default that does not parse is left out (and fails the
    /// `defaults_parse` meta-test).
    pub fn defaults(specs: &[OptionSpec]) -> Self {
        Self(
            specs
                .iter()
                .filter_map(|s| Some((s.name, OptionValue::parse_str(s.kind, s.default)?)))
                .collect(),
        )
    }

    pub fn set(&mut self, name: &'static str, value: OptionValue) {
        self.0.insert(name, value);
    }

    pub fn get(&self, name: &str) -> Option<OptionValue> {
        self.0.get(name).copied()
    }

    pub fn duration(&self, name: &str) -> Option<Duration> {
        match self.get(name)? {
            OptionValue::Duration(d) => Some(d),
            _ => None,
        }
    }

    pub fn count(&self, name: &str) -> Option<u64> {
        match self.get(name)? {
            OptionValue::Count(n) => Some(n),
            _ => None,
        }
    }

    pub fn bytes(&self, name: &str) -> Option<u64> {
        match self.get(name)? {
            OptionValue::Bytes(n) => Some(n),
            _ => None,
        }
    }

    pub fn flag(&self, name: &str) -> Option<bool> {
        match self.get(name)? {
            OptionValue::Bool(b) => Some(b),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_bytes("512"), Some(512));
        assert_eq!(parse_bytes("10GiB"), Some(10 << 30));
        assert_eq!(parse_bytes("3 MB"), Some(3_000_000));
        assert_eq!(parse_bytes("1.5GiB"), None);
        assert_eq!(parse_bytes("GiB"), None);
        assert_eq!(parse_bytes("99999999999TiB"), None);
    }
}
