//! Numeric helpers shared by aggregations and `*_over_time` functions.

/// One step of Kahan–Babuška–Neumaier summation: returns the new sum and compensation.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Compensated sum.
#[derive(Default, Clone, Copy)]
pub(crate) struct KahanSum {
    sum: f64,
    c: f64,
}

impl KahanSum {
    pub fn add(&mut self, v: f64) {
        (self.sum, self.c) = kahan_inc(v, self.sum, self.c);
    }

    pub fn value(&self) -> f64 {
        if self.sum.is_infinite() {
            self.sum
        } else {
            self.sum + self.c
        }
    }
}

/// Mean by compensated summation, switching to a compensated incremental mean once the
/// sum would overflow (Prometheus' `avg` and `avg_over_time`).
#[derive(Default, Clone, Copy)]
pub(crate) struct Mean {
    count: f64,
    sum: f64,
    c: f64,
    mean: f64,
    incremental: bool,
}

impl Mean {
    pub fn add(&mut self, f: f64) {
        self.count += 1.0;
        if self.count == 1.0 {
            self.sum = f;
            self.c = 0.0;
            return;
        }
        if !self.incremental {
            let (sum, c) = kahan_inc(f, self.sum, self.c);
            if !sum.is_infinite() {
                self.sum = sum;
                self.c = c;
                return;
            }
            // The sum would overflow: continue with an incremental mean.
            self.incremental = true;
            self.mean = self.sum / (self.count - 1.0);
            self.c /= self.count - 1.0;
        }
        if self.mean.is_infinite() {
            if f.is_infinite() && (self.mean > 0.0) == (f > 0.0) {
                return;
            }
            if !f.is_infinite() && !f.is_nan() {
                return;
            }
        }
        let current = self.mean + self.c;
        (self.mean, self.c) = kahan_inc(f / self.count - current / self.count, self.mean, self.c);
    }

    pub fn value(&self) -> f64 {
        if self.incremental {
            self.mean + self.c
        } else if self.count == 1.0 {
            self.sum
        } else {
            (self.sum + self.c) / self.count
        }
    }
}

/// Population variance with compensated incremental updates (`stdvar_over_time`).
pub(crate) fn variance_compensated(values: impl Iterator<Item = f64>) -> f64 {
    let mut count = 0.0;
    let (mut mean, mut c_mean) = (0.0, 0.0);
    let (mut aux, mut c_aux) = (0.0, 0.0);
    for f in values {
        count += 1.0;
        let delta = f - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (f - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Sorts with NaN first, like Go's `sort.Float64s`.
pub(crate) fn sort_nan_first(values: &mut [f64]) {
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        (false, false) => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
}

/// The `q`-quantile of `values` by linear interpolation between closest ranks, NaN
/// sorting lowest (Prometheus' `quantile`).
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    sort_nan_first(values);
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Go's `math.Min`: NaN if either is NaN.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Go's `math.Max`: NaN if either is NaN.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Formats a float like Go's `strconv.FormatFloat(f, 'f', -1, 64)`.
pub(crate) fn format_go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kahan_keeps_small_terms() {
        let mut s = KahanSum::default();
        for v in [1.0, 1e100, 1.0, -1e100] {
            s.add(v);
        }
        assert_eq!(s.value(), 2.0);
    }

    #[test]
    fn mean_survives_overflow() {
        let mut m = Mean::default();
        for _ in 0..4 {
            m.add(9.0e307);
        }
        assert_eq!(m.value(), 9.0e307);
        let mut m = Mean::default();
        for v in [f64::INFINITY, 0.0, f64::INFINITY] {
            m.add(v);
        }
        assert_eq!(m.value(), f64::INFINITY);
    }

    #[test]
    fn quantile_interpolates_and_sorts_nan_low() {
        assert_eq!(quantile(0.8, &mut [0.0, 1.0, 2.0]), 1.6);
        assert!(quantile(0.2, &mut [1.0, f64::NAN, 0.0]).is_nan());
        assert!((quantile(0.8, &mut [1.0, f64::NAN, 0.0]) - 0.6).abs() < 1e-12);
        assert_eq!(quantile(-1.0, &mut [1.0]), f64::NEG_INFINITY);
    }
}
