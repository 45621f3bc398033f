//! Classic (`le`-bucketed) histograms: `histogram_quantile`, `histogram_quantiles`,
//! `histogram_fraction`.

use std::collections::HashMap;

use crate::engine::eval::{InstSample, InstVector};
use crate::labels::{BUCKET_LABEL, Labels};

/// Relative tolerance under which bucket count differences are float noise.
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

/// One cumulative bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Bucket {
    pub upper_bound: f64,
    pub count: f64,
}

/// Buckets of one histogram series group.
pub(crate) struct BucketGroup {
    pub labels: Labels,
    pub drop_name: bool,
    pub buckets: Vec<Bucket>,
}

/// Parses a float the way Go's `strconv.ParseFloat` accepts it (`+Inf`, `1e0`, `.2`).
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if t.is_empty() || t.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E') {
        return None;
    }
    t.parse::<f64>().ok()
}

/// Groups bucket series by their labels without `le` (the metric name stays in the key
/// and is flagged for removal). Series without a parseable `le` are skipped.
pub(crate) fn group_buckets(v: InstVector) -> Vec<BucketGroup> {
    let mut order: Vec<BucketGroup> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for InstSample { labels, value, .. } in v {
        let Some(upper) = labels.get(BUCKET_LABEL).and_then(parse_go_float) else {
            continue;
        };
        let mut key = labels;
        key.remove(BUCKET_LABEL);
        let gi = match index.get(&key) {
            Some(&i) => i,
            None => {
                index.insert(key.clone(), order.len());
                order.push(BucketGroup {
                    labels: key,
                    drop_name: true,
                    buckets: Vec::new(),
                });
                order.len() - 1
            }
        };
        order[gi].buckets.push(Bucket {
            upper_bound: upper,
            count: value,
        });
    }
    order
}

fn sort_buckets(buckets: &mut [Bucket]) {
    buckets.sort_by(|a, b| {
        a.upper_bound
            .partial_cmp(&b.upper_bound)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
}

/// Merges buckets with the same upper bound (e.g. `le="0.2"` and `le="2e-1"`).
fn coalesce(buckets: Vec<Bucket>) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets {
        match out.last_mut() {
            Some(last) if last.upper_bound == b.upper_bound => last.count += b.count,
            _ => out.push(b),
        }
    }
    out
}

fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// Forces cumulative counts to be monotonic, silently fixing float noise.
/// Returns whether a real (non-noise) correction was needed.
fn ensure_monotonic(buckets: &mut [Bucket]) -> bool {
    let mut forced = false;
    let Some(first) = buckets.first() else {
        return false;
    };
    let mut prev = first.count;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.count;
        if curr == prev {
            continue;
        }
        if almost_equal(prev, curr, SMALL_DELTA_TOLERANCE) {
            b.count = prev;
            continue;
        }
        if curr < prev {
            b.count = prev;
            forced = true;
            continue;
        }
        prev = curr;
    }
    forced
}

/// Buckets sorted by bound, merged where bounds repeat, counts made monotonic; `None`
/// without a `+Inf` bucket (the answer is then NaN).
fn cumulative(mut buckets: Vec<Bucket>) -> Option<Vec<Bucket>> {
    sort_buckets(&mut buckets);
    if buckets.last()?.upper_bound != f64::INFINITY {
        return None;
    }
    let mut buckets = coalesce(buckets);
    ensure_monotonic(&mut buckets);
    Some(buckets)
}

/// The `q`-quantile from cumulative buckets, interpolating linearly within a bucket
/// (the lowest bucket starts at 0 unless its bound is not positive).
pub(crate) fn bucket_quantile(q: f64, buckets: Vec<Bucket>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let Some(buckets) = cumulative(buckets) else {
        return f64::NAN;
    };
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let n = buckets.len();
    let observations = buckets[n - 1].count;
    if observations == 0.0 || observations.is_nan() {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = buckets[..n - 1].partition_point(|bk| bk.count < rank);
    if b == n - 1 {
        return buckets[n - 2].upper_bound;
    }
    if b == 0 && buckets[0].upper_bound <= 0.0 {
        return buckets[0].upper_bound;
    }
    let mut bucket_start = 0.0;
    let bucket_end = buckets[b].upper_bound;
    let mut count = buckets[b].count;
    if b > 0 {
        bucket_start = buckets[b - 1].upper_bound;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// The fraction of observations between `lower` and `upper`, interpolating linearly
/// inside buckets; buckets of infinite width contribute at their finite edge.
pub(crate) fn bucket_fraction(lower: f64, upper: f64, buckets: Vec<Bucket>) -> f64 {
    let Some(buckets) = cumulative(buckets) else {
        return f64::NAN;
    };
    let count = buckets.last().map_or(0.0, |b| b.count);
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let mut rank = 0.0;
    let (mut lower_rank, mut upper_rank) = (0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    for (i, b) in buckets.iter().enumerate() {
        let lower_bound = if i > 0 {
            buckets[i - 1].upper_bound
        } else if b.upper_bound > 0.0 {
            0.0
        } else {
            f64::NEG_INFINITY
        };
        let upper_bound = b.upper_bound;
        let interpolate = |v: f64| {
            if upper_bound == f64::INFINITY {
                rank
            } else if lower_bound == f64::NEG_INFINITY {
                b.count
            } else {
                rank + (b.count - rank) * (v - lower_bound) / (upper_bound - lower_bound)
            }
        };
        if !lower_set && lower_bound >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lower_bound >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lower_bound < lower && upper_bound > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && lower_bound < upper && upper_bound > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = b.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs
            .iter()
            .map(|&(upper_bound, count)| Bucket { upper_bound, count })
            .collect()
    }

    #[test]
    fn quantile_interpolates_within_bucket() {
        let buckets = b(&[
            (0.0, 0.0),
            (2.0, 10.0),
            (4.0, 20.0),
            (6.0, 30.0),
            (f64::INFINITY, 30.0),
        ]);
        assert!((bucket_quantile(0.5, buckets.clone()) - 3.0).abs() < 1e-9);
        assert!((bucket_quantile(1.0 / 6.0, buckets.clone()) - 1.0).abs() < 1e-9);
        // The highest quantile falls in the +Inf bucket: the largest finite bound.
        assert_eq!(bucket_quantile(1.0, buckets), 6.0);
    }

    #[test]
    fn quantile_edge_cases() {
        // No +Inf bucket → NaN.
        assert!(bucket_quantile(0.5, b(&[(1.0, 1.0)])).is_nan());
        // Zero observations → NaN.
        assert!(bucket_quantile(0.5, b(&[(1.0, 0.0), (f64::INFINITY, 0.0)])).is_nan());
        // Out-of-range q.
        assert_eq!(
            bucket_quantile(-0.1, b(&[(f64::INFINITY, 1.0)])),
            f64::NEG_INFINITY
        );
        assert_eq!(
            bucket_quantile(1.1, b(&[(f64::INFINITY, 1.0)])),
            f64::INFINITY
        );
        // Lowest bucket with a non-positive bound returns the bound.
        let neg = b(&[
            (-0.2, 10.0),
            (-0.1, 20.0),
            (0.3, 20.0),
            (f64::INFINITY, 30.0),
        ]);
        assert_eq!(bucket_quantile(0.0, neg), -0.2);
    }

    #[test]
    fn quantile_fixes_non_monotonic_buckets() {
        let buckets = b(&[
            (0.1, 20.0),
            (1.0, 10.0),
            (10.0, 50.0),
            (100.0, 40.0),
            (1000.0, 90.0),
            (f64::INFINITY, 80.0),
        ]);
        assert!((bucket_quantile(0.01, buckets.clone()) - 0.0045).abs() < 1e-12);
        assert!((bucket_quantile(0.5, buckets.clone()) - 8.5).abs() < 1e-9);
        assert!((bucket_quantile(0.99, buckets) - 979.75).abs() < 1e-9);
    }

    #[test]
    fn quantile_coalesces_equal_bounds() {
        let buckets = b(&[
            (0.1, 1.0),
            (0.2, 1.0),
            (0.2, 1.0),
            (0.2, 1.0),
            (f64::INFINITY, 4.0),
        ]);
        // Coalesced: 0.1 → 1, 0.2 → 3, +Inf → 4.
        assert!((bucket_quantile(0.5, buckets) - 0.15).abs() < 1e-12);
    }

    #[test]
    fn fraction_cases() {
        let pos = b(&[(1.0, 1.0), (2.0, 3.0), (3.0, 6.0), (f64::INFINITY, 100.0)]);
        assert!((bucket_fraction(0.0, 1.5, pos.clone()) - 0.02).abs() < 1e-12);
        assert!((bucket_fraction(400.0, f64::INFINITY, pos.clone()) - 0.94).abs() < 1e-12);
        assert_eq!(bucket_fraction(3.0, 2.0, pos.clone()), 0.0);
        assert!(bucket_fraction(f64::NAN, 1.0, pos).is_nan());
        let neg = b(&[
            (-3.0, 10.0),
            (-2.0, 12.0),
            (-1.0, 15.0),
            (f64::INFINITY, 100.0),
        ]);
        assert!((bucket_fraction(-4.0, -2.0, neg.clone()) - 0.02).abs() < 1e-12);
        assert!((bucket_fraction(f64::NEG_INFINITY, -1.5, neg) - 0.135).abs() < 1e-12);
    }

    #[test]
    fn go_float_parsing() {
        assert_eq!(parse_go_float("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_go_float("1e0"), Some(1.0));
        assert_eq!(parse_go_float(".2"), Some(0.2));
        assert_eq!(parse_go_float("Hello World"), None);
    }
}
