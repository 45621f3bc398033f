//! Label sets: sorted name → value pairs, the identity of a series.

use std::fmt;
use std::sync::Arc;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";
/// The type label of Prometheus' type-and-unit metadata, dropped together with the name.
pub const TYPE_LABEL: &str = "__type__";
/// The unit label of Prometheus' type-and-unit metadata, dropped together with the name.
pub const UNIT_LABEL: &str = "__unit__";
/// The bucket upper bound label of classic histograms.
pub const BUCKET_LABEL: &str = "le";

/// One label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    /// Label name.
    pub name: String,
    /// Label value; never empty inside a [`Labels`].
    pub value: String,
}

/// A set of labels sorted by name, with unique names and no empty values
/// (Prometheus treats an empty value as an absent label).
///
/// Cloning is cheap (the set is shared, copied on write): the evaluator clones label
/// sets for every sample of every step.
///
/// The ordering (`Ord`) is Prometheus' `labels.Compare`: pairwise by name, then value,
/// a prefix sorting first.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Arc<Vec<Label>>);

impl Labels {
    /// An empty label set.
    pub fn empty() -> Self {
        Labels(Arc::new(Vec::new()))
    }

    /// Builds a label set from pairs; later duplicates win, empty values are dropped.
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut labels = Labels::empty();
        for (name, value) in pairs {
            labels.set(name, value);
        }
        labels
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    /// The value of `name`, or "" when absent (Prometheus' `Get`).
    pub fn get_or_empty(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`; an empty value removes the label.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.0.binary_search_by(|l| l.name.cmp(&name)) {
            Ok(i) => {
                if value.is_empty() {
                    Arc::make_mut(&mut self.0).remove(i);
                } else if self.0[i].value != value {
                    Arc::make_mut(&mut self.0)[i].value = value;
                }
            }
            Err(i) => {
                if !value.is_empty() {
                    Arc::make_mut(&mut self.0).insert(i, Label { name, value });
                }
            }
        }
    }

    /// Removes `name` if present.
    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Arc::make_mut(&mut self.0).remove(i);
        }
    }

    /// Keeps only the labels whose names are listed.
    pub fn keep(&mut self, names: &[String]) {
        self.retain(|l| names.iter().any(|n| n == &l.name));
    }

    /// Removes the listed labels.
    pub fn drop_names(&mut self, names: &[String]) {
        self.retain(|l| !names.iter().any(|n| n == &l.name));
    }

    /// Removes the metric name (and the type/unit metadata labels that travel with it).
    pub fn drop_metric_name(&mut self) {
        self.retain(|l| l.name != METRIC_NAME && l.name != TYPE_LABEL && l.name != UNIT_LABEL);
    }

    /// Keeps the labels for which `keep` holds, copying only if something changes.
    fn retain(&mut self, keep: impl Fn(&Label) -> bool) {
        if self.0.iter().all(&keep) {
            return;
        }
        Arc::make_mut(&mut self.0).retain(keep);
    }

    /// The metric name, if any.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates the labels in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    /// A stable 64-bit hash of the label set (FNV-1a over names and values with
    /// separators), used where Prometheus hashes a series, e.g. `limit_ratio`.
    pub fn stable_hash(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = OFFSET;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(PRIME);
            }
        };
        for label in self.0.iter() {
            feed(label.name.as_bytes());
            feed(&[0xff]);
            feed(label.value.as_bytes());
            feed(&[0xff]);
        }
        // Final avalanche (splitmix64) so that the high bits are well mixed: limit_ratio
        // compares hash / u64::MAX against a ratio.
        let mut z = hash;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl fmt::Display for Labels {
    /// Prometheus' `labels.String()`: `{a="1", b="2"}`, values quoted Go-style.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, label) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}=\"{}\"", label.name, escape_value(&label.value))?;
        }
        f.write_str("}")
    }
}

/// Escapes a label value like Go's `%q` does for the characters that matter here.
pub(crate) fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_keeps_sorted_and_drops_empty() {
        let mut l = Labels::from_pairs([("b", "2"), ("a", "1"), ("c", "")]);
        assert_eq!(l.to_string(), r#"{a="1", b="2"}"#);
        l.set("a", "");
        assert_eq!(l.to_string(), r#"{b="2"}"#);
        l.set("__name__", "m");
        assert_eq!(l.metric_name(), Some("m"));
        l.drop_metric_name();
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn ordering_matches_prometheus_compare() {
        let a = Labels::from_pairs([("a", "1")]);
        let ab = Labels::from_pairs([("a", "1"), ("b", "1")]);
        let b = Labels::from_pairs([("b", "0")]);
        assert!(a < ab);
        assert!(ab < b);
    }
}
