//! Where series come from: the [`SeriesSource`] trait (the pushdown point for storage and
//! the mesh), label matchers, and the in-memory [`MemorySource`].

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;

use crate::error::{Error, Result};
use crate::labels::Labels;

/// The bit pattern Prometheus writes as a staleness marker: a NaN that ends a series.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `value` is a staleness marker (not just any NaN).
pub fn is_stale_nan(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

/// How a [`LabelMatcher`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored)
    Regex,
    /// `!~` (fully anchored)
    NotRegex,
}

/// One label matcher of a selector. A missing label matches as the empty string.
#[derive(Clone, Debug)]
pub struct LabelMatcher {
    /// Label name.
    pub name: String,
    /// Comparison.
    pub op: MatchOp,
    /// The literal value or the regular expression's source text.
    pub value: String,
    regex: Option<Regex>,
}

impl LabelMatcher {
    /// Builds a matcher; regular expressions are anchored at both ends and `.` matches
    /// newlines, as in Prometheus.
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Self> {
        let value = value.into();
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(compile_anchored(&value)?),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(LabelMatcher {
            name: name.into(),
            op,
            value,
            regex,
        })
    }

    /// A regex matcher from an already compiled expression (which must be anchored).
    pub(crate) fn with_regex(
        op: MatchOp,
        name: String,
        value: String,
        regex: Regex,
    ) -> Option<Self> {
        matches!(op, MatchOp::Regex | MatchOp::NotRegex).then_some(LabelMatcher {
            name,
            op,
            value,
            regex: Some(regex),
        })
    }

    /// Whether a label value (or "" for a missing label) matches.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => self.value == value,
            (MatchOp::NotEqual, _) => self.value != value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    /// Whether every matcher matches the label set.
    pub fn matches_all(matchers: &[LabelMatcher], labels: &Labels) -> bool {
        matchers
            .iter()
            .all(|m| m.matches(labels.get_or_empty(&m.name)))
    }
}

/// Compiles a PromQL regular expression: fully anchored, `.` matching `\n`.
pub(crate) fn compile_anchored(pattern: &str) -> Result<Regex> {
    Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| {
        Error::execution(format!(
            "invalid regular expression {pattern:?}: {}",
            e.to_string().lines().last().unwrap_or("")
        ))
    })
}

/// A series: its labels (including `__name__`) and its float samples, sorted by time.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Label set, including `__name__`.
    pub labels: Labels,
    /// `(timestamp in ms, value)` sorted by timestamp. A source may include staleness
    /// markers ([`STALE_NAN_BITS`]); the engine honours them.
    pub samples: Vec<(i64, f64)>,
}

/// Where the engine gets data. The engine calls `select` once per selector with the
/// exact time range that selector needs (its range or lookback window, shifted by
/// offset and `@`, widened over every step of a range query and of subqueries).
///
/// Implementations return every series matching all `matchers` that has samples in
/// `[start_ms, end_ms]` (both inclusive), with only those samples, sorted by time, each
/// label set at most once. A storage shard can prune by time and matchers; a federated
/// implementation can push the selector to the nodes that own the data.
pub trait SeriesSource {
    /// Selects series matching every matcher, restricted to `[start_ms, end_ms]`.
    fn select(&self, matchers: &[LabelMatcher], start_ms: i64, end_ms: i64) -> Result<Vec<Series>>;
}

impl<S: SeriesSource + ?Sized> SeriesSource for &S {
    fn select(&self, matchers: &[LabelMatcher], start_ms: i64, end_ms: i64) -> Result<Vec<Series>> {
        (**self).select(matchers, start_ms, end_ms)
    }
}

impl<S: SeriesSource + ?Sized> SeriesSource for Box<S> {
    fn select(&self, matchers: &[LabelMatcher], start_ms: i64, end_ms: i64) -> Result<Vec<Series>> {
        (**self).select(matchers, start_ms, end_ms)
    }
}

impl<S: SeriesSource + ?Sized> SeriesSource for Arc<S> {
    fn select(&self, matchers: &[LabelMatcher], start_ms: i64, end_ms: i64) -> Result<Vec<Series>> {
        (**self).select(matchers, start_ms, end_ms)
    }
}

/// An in-memory series store, for tests and the script harness.
#[derive(Clone, Debug, Default)]
pub struct MemorySource {
    series: BTreeMap<Labels, Vec<(i64, f64)>>,
}

impl MemorySource {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample; a sample at an existing timestamp replaces the old one.
    pub fn append(&mut self, labels: &Labels, t_ms: i64, value: f64) {
        let samples = self.series.entry(labels.clone()).or_default();
        match samples.binary_search_by_key(&t_ms, |s| s.0) {
            Ok(i) => samples[i].1 = value,
            Err(i) => samples.insert(i, (t_ms, value)),
        }
    }

    /// Adds every sample of `series`.
    pub fn add_series(&mut self, series: Series) {
        for (t, v) in series.samples {
            self.append(&series.labels, t, v);
        }
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.series.clear();
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

impl SeriesSource for MemorySource {
    fn select(&self, matchers: &[LabelMatcher], start_ms: i64, end_ms: i64) -> Result<Vec<Series>> {
        let mut out = Vec::new();
        if start_ms > end_ms {
            return Ok(out);
        }
        for (labels, samples) in &self.series {
            if !LabelMatcher::matches_all(matchers, labels) {
                continue;
            }
            let lo = samples.partition_point(|s| s.0 < start_ms);
            let hi = samples.partition_point(|s| s.0 <= end_ms);
            if lo < hi {
                out.push(Series {
                    labels: labels.clone(),
                    samples: samples[lo..hi].to_vec(),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_source_selects_by_matchers_and_time() {
        let mut src = MemorySource::new();
        let a = Labels::from_pairs([("__name__", "m"), ("job", "a")]);
        let b = Labels::from_pairs([("__name__", "m"), ("job", "b")]);
        for t in 0..10 {
            src.append(&a, t * 1000, t as f64);
            src.append(&b, t * 1000, -(t as f64));
        }
        let m = [
            LabelMatcher::new(MatchOp::Equal, "__name__", "m").unwrap(),
            LabelMatcher::new(MatchOp::Regex, "job", "a|c").unwrap(),
        ];
        let got = src.select(&m, 2000, 4000).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples, vec![(2000, 2.0), (3000, 3.0), (4000, 4.0)]);
    }

    #[test]
    fn regex_is_anchored_and_missing_label_is_empty() {
        let m = LabelMatcher::new(MatchOp::Regex, "x", "a.*").unwrap();
        assert!(m.matches("abc"));
        assert!(!m.matches("xabc"));
        let empty = LabelMatcher::new(MatchOp::Equal, "y", "").unwrap();
        assert!(LabelMatcher::matches_all(&[empty], &Labels::empty()));
    }

    #[test]
    fn stale_marker_is_a_specific_nan() {
        assert!(is_stale_nan(stale_nan()));
        assert!(!is_stale_nan(f64::NAN));
    }
}
