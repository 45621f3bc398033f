//! PromQL functions over float samples.

use std::cmp::Ordering;

use promql_parser::parser::{Call, Expr};

use std::collections::HashMap;

use crate::engine::eval::{
    EvalValue, Evaluator, InstSample, InstVector, RangeSeries, RangeVector, selector_matchers,
    unwrap_parens,
};
use crate::engine::histogram::{bucket_fraction, bucket_quantile, group_buckets};
use crate::engine::stats::{
    KahanSum, Mean, go_max, go_min, kahan_inc, quantile, variance_compensated,
};
use crate::error::{Error, Result};
use crate::labels::{Labels, METRIC_NAME};
use crate::source::{LabelMatcher, MatchOp, compile_anchored};

/// Whether a string is usable as a label name (Prometheus 3 accepts any non-empty
/// UTF-8; the replacement character marks bytes that were not UTF-8).
fn valid_label_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('\u{fffd}')
}

fn arg(call: &Call, i: usize) -> Result<&Expr> {
    call.args.args.get(i).map(|b| b.as_ref()).ok_or_else(|| {
        Error::execution(format!(
            "wrong number of arguments for function {}",
            call.func.name
        ))
    })
}

/// Replaces every value, marking the metric name for removal.
fn map_values(v: InstVector, f: impl Fn(f64) -> f64) -> InstVector {
    v.into_iter()
        .map(|mut s| {
            s.value = f(s.value);
            s.drop_name = true;
            s
        })
        .collect()
}

impl Evaluator<'_> {
    pub(crate) fn eval_call(&mut self, call: &Call, t: i64) -> Result<EvalValue> {
        let name = call.func.name;
        let secs = |ms: i64| ms as f64 / 1000.0;
        let value = match name {
            "time" => EvalValue::Scalar(secs(t)),
            "pi" => EvalValue::Scalar(std::f64::consts::PI),
            "start" => EvalValue::Scalar(secs(self.query_start)),
            "end" => EvalValue::Scalar(secs(self.query_end)),
            "step" => EvalValue::Scalar(secs(self.query_step)),
            "range" => EvalValue::Scalar(secs(self.query_end.saturating_sub(self.query_start))),
            "min_of" | "max_of" => {
                let a = self.eval_scalar(arg(call, 0)?, t)?;
                let b = self.eval_scalar(arg(call, 1)?, t)?;
                EvalValue::Scalar(if name == "min_of" {
                    go_min(a, b)
                } else {
                    go_max(a, b)
                })
            }
            "vector" => {
                let v = self.eval_scalar(arg(call, 0)?, t)?;
                EvalValue::Vector(vec![InstSample {
                    labels: Labels::empty(),
                    value: v,
                    drop_name: false,
                }])
            }
            "scalar" => {
                let v = self.eval_vector(arg(call, 0)?, t)?;
                EvalValue::Scalar(if v.len() == 1 { v[0].value } else { f64::NAN })
            }
            "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "sin"
            | "cos" | "tan" | "asin" | "acos" | "atan" | "sinh" | "cosh" | "tanh" | "asinh"
            | "acosh" | "atanh" | "deg" | "rad" => {
                let v = self.eval_vector(arg(call, 0)?, t)?;
                let f: fn(f64) -> f64 = match name {
                    "abs" => f64::abs,
                    "ceil" => f64::ceil,
                    "floor" => f64::floor,
                    "exp" => f64::exp,
                    "sqrt" => f64::sqrt,
                    "ln" => f64::ln,
                    "log2" => f64::log2,
                    "log10" => f64::log10,
                    "sgn" => |x: f64| {
                        if x > 0.0 {
                            1.0
                        } else if x < 0.0 {
                            -1.0
                        } else {
                            x
                        }
                    },
                    "sin" => f64::sin,
                    "cos" => f64::cos,
                    "tan" => f64::tan,
                    "asin" => f64::asin,
                    "acos" => f64::acos,
                    "atan" => f64::atan,
                    "sinh" => f64::sinh,
                    "cosh" => f64::cosh,
                    "tanh" => f64::tanh,
                    "asinh" => f64::asinh,
                    "acosh" => f64::acosh,
                    "atanh" => f64::atanh,
                    "deg" => |x: f64| x * 180.0 / std::f64::consts::PI,
                    _ => |x: f64| x * std::f64::consts::PI / 180.0,
                };
                EvalValue::Vector(map_values(v, f))
            }
            "round" => {
                let v = self.eval_vector(arg(call, 0)?, t)?;
                let to_nearest = match call.args.args.get(1) {
                    Some(e) => self.eval_scalar(e, t)?,
                    None => 1.0,
                };
                let inverse = 1.0 / to_nearest;
                EvalValue::Vector(map_values(v, |x| (x * inverse + 0.5).floor() / inverse))
            }
            "clamp" => {
                let v = self.eval_vector(arg(call, 0)?, t)?;
                let min = self.eval_scalar(arg(call, 1)?, t)?;
                let max = self.eval_scalar(arg(call, 2)?, t)?;
                if max < min {
                    EvalValue::Vector(Vec::new())
                } else {
                    EvalValue::Vector(map_values(v, |x| go_max(min, go_min(max, x))))
                }
            }
            "clamp_min" => {
                let v = self.eval_vector(arg(call, 0)?, t)?;
                let min = self.eval_scalar(arg(call, 1)?, t)?;
                EvalValue::Vector(map_values(v, |x| go_max(min, x)))
            }
            "clamp_max" => {
                let v = self.eval_vector(arg(call, 0)?, t)?;
                let max = self.eval_scalar(arg(call, 1)?, t)?;
                EvalValue::Vector(map_values(v, |x| go_min(max, x)))
            }
            "year" | "month" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
            | "hour" | "minute" => {
                let v = match call.args.args.first() {
                    Some(e) => self.eval_vector(e, t)?,
                    None => vec![InstSample {
                        labels: Labels::empty(),
                        value: secs(t),
                        drop_name: false,
                    }],
                };
                EvalValue::Vector(map_values(v, |x| date_function(name, x)))
            }
            "timestamp" => {
                let a = unwrap_parens(arg(call, 0)?);
                let out = if let Expr::VectorSelector(vs) = a {
                    self.select_instant(vs, t)?
                        .into_iter()
                        .map(|(labels, _, ts)| InstSample {
                            labels,
                            value: secs(ts),
                            drop_name: true,
                        })
                        .collect()
                } else {
                    map_values(self.eval_vector(a, t)?, |_| secs(t))
                };
                EvalValue::Vector(out)
            }
            "label_replace" => EvalValue::Vector(self.label_replace(call, t)?),
            "label_join" => EvalValue::Vector(self.label_join(call, t)?),
            "sort" | "sort_desc" => {
                let mut v = self.eval_vector(arg(call, 0)?, t)?;
                let desc = name == "sort_desc";
                v.sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan()) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    (false, false) => {
                        let o = a.value.partial_cmp(&b.value).unwrap_or(Ordering::Equal);
                        if desc { o.reverse() } else { o }
                    }
                });
                EvalValue::Vector(v)
            }
            "sort_by_label" | "sort_by_label_desc" => {
                let mut v = self.eval_vector(arg(call, 0)?, t)?;
                let mut names = Vec::new();
                for e in call.args.args.iter().skip(1) {
                    names.push(self.eval_string(e, t)?);
                }
                let desc = name == "sort_by_label_desc";
                v.sort_by(|a, b| {
                    let mut o = Ordering::Equal;
                    for n in &names {
                        o = natural_cmp(a.labels.get_or_empty(n), b.labels.get_or_empty(n));
                        if o != Ordering::Equal {
                            break;
                        }
                    }
                    if o == Ordering::Equal {
                        o = a.labels.cmp(&b.labels);
                    }
                    if desc { o.reverse() } else { o }
                });
                EvalValue::Vector(v)
            }
            "absent" => {
                let a = arg(call, 0)?;
                let v = self.eval_vector(a, t)?;
                if v.is_empty() {
                    EvalValue::Vector(vec![InstSample {
                        labels: absent_labels(a),
                        value: 1.0,
                        drop_name: false,
                    }])
                } else {
                    EvalValue::Vector(Vec::new())
                }
            }
            "absent_over_time" => {
                let a = arg(call, 0)?;
                let r = self.eval_range(a, t)?;
                if r.series.iter().all(|s| s.points.is_empty()) {
                    EvalValue::Vector(vec![InstSample {
                        labels: absent_labels(a),
                        value: 1.0,
                        drop_name: false,
                    }])
                } else {
                    EvalValue::Vector(Vec::new())
                }
            }
            "present_over_time" => {
                EvalValue::Vector(self.over_time(call, 0, t, false, |_, _| Some(1.0))?)
            }
            "rate" | "increase" | "delta" => {
                let is_counter = name != "delta";
                let is_rate = name == "rate";
                EvalValue::Vector(self.over_time(call, 0, t, false, |s, r| {
                    extrapolated_rate(&s.points, r, is_counter, is_rate)
                })?)
            }
            "irate" | "idelta" => {
                let is_rate = name == "irate";
                EvalValue::Vector(
                    self.over_time(call, 0, t, false, |s, _| instant_value(&s.points, is_rate))?,
                )
            }
            "changes" => EvalValue::Vector(self.over_time(call, 0, t, false, |s, _| {
                let mut changes = 0.0;
                for w in s.points.windows(2) {
                    let (prev, cur) = (w[0].1, w[1].1);
                    if !(cur == prev || (cur.is_nan() && prev.is_nan())) {
                        changes += 1.0;
                    }
                }
                Some(changes)
            })?),
            "resets" => EvalValue::Vector(self.over_time(call, 0, t, false, |s, _| {
                Some(s.points.windows(2).filter(|w| w[1].1 < w[0].1).count() as f64)
            })?),
            "deriv" => EvalValue::Vector(self.over_time(call, 0, t, false, |s, _| {
                if s.points.len() < 2 {
                    return None;
                }
                Some(linear_regression(&s.points, s.points[0].0).0)
            })?),
            "predict_linear" => {
                let duration = self.eval_scalar(arg(call, 1)?, t)?;
                EvalValue::Vector(self.over_time(call, 0, t, false, |s, _| {
                    if s.points.len() < 2 {
                        return None;
                    }
                    let (slope, intercept) = linear_regression(&s.points, t);
                    Some(slope * duration + intercept)
                })?)
            }
            "double_exponential_smoothing" | "holt_winters" => {
                let sf = self.eval_scalar(arg(call, 1)?, t)?;
                let tf = self.eval_scalar(arg(call, 2)?, t)?;
                if !(sf > 0.0 && sf < 1.0) {
                    return Err(Error::execution(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
                    )));
                }
                if !(tf > 0.0 && tf < 1.0) {
                    return Err(Error::execution(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {tf}"
                    )));
                }
                EvalValue::Vector(self.over_time(call, 0, t, false, |s, _| {
                    double_exponential_smoothing(&s.points, sf, tf)
                })?)
            }
            "avg_over_time" => EvalValue::Vector(self.over_time(call, 0, t, false, |s, _| {
                let mut m = Mean::default();
                for p in &s.points {
                    m.add(p.1);
                }
                Some(m.value())
            })?),
            "sum_over_time" => EvalValue::Vector(self.over_time(call, 0, t, false, |s, _| {
                let mut k = KahanSum::default();
                for p in &s.points {
                    k.add(p.1);
                }
                Some(k.value())
            })?),
            "count_over_time" => EvalValue::Vector(
                self.over_time(call, 0, t, false, |s, _| Some(s.points.len() as f64))?,
            ),
            "min_over_time" | "max_over_time" => {
                let is_min = name == "min_over_time";
                EvalValue::Vector(self.over_time(call, 0, t, false, |s, _| {
                    let mut acc = s.points.first()?.1;
                    for p in &s.points[1..] {
                        let better = if is_min { p.1 < acc } else { p.1 > acc };
                        if better || acc.is_nan() {
                            acc = p.1;
                        }
                    }
                    Some(acc)
                })?)
            }
            "stddev_over_time" | "stdvar_over_time" => {
                let stddev = name == "stddev_over_time";
                EvalValue::Vector(self.over_time(call, 0, t, false, |s, _| {
                    let var = variance_compensated(s.points.iter().map(|p| p.1));
                    Some(if stddev { var.sqrt() } else { var })
                })?)
            }
            "last_over_time" => EvalValue::Vector(
                self.over_time(call, 0, t, true, |s, _| s.points.last().map(|p| p.1))?,
            ),
            "first_over_time" => EvalValue::Vector(
                self.over_time(call, 0, t, true, |s, _| s.points.first().map(|p| p.1))?,
            ),
            "ts_of_last_over_time" => {
                EvalValue::Vector(
                    self.over_time(call, 0, t, false, |s, _| s.points.last().map(|p| secs(p.0)))?,
                )
            }
            "ts_of_first_over_time" => {
                EvalValue::Vector(self.over_time(call, 0, t, false, |s, _| {
                    s.points.first().map(|p| secs(p.0))
                })?)
            }
            "ts_of_min_over_time" | "ts_of_max_over_time" => {
                let is_min = name == "ts_of_min_over_time";
                EvalValue::Vector(self.over_time(call, 0, t, false, |s, _| {
                    let first = s.points.first()?;
                    let (mut acc, mut ts) = (first.1, first.0);
                    for p in &s.points[1..] {
                        let better = if is_min { p.1 <= acc } else { p.1 >= acc };
                        if better || acc.is_nan() {
                            acc = p.1;
                            ts = p.0;
                        }
                    }
                    Some(secs(ts))
                })?)
            }
            "quantile_over_time" => {
                let q = self.eval_scalar(arg(call, 0)?, t)?;
                EvalValue::Vector(self.over_time(call, 1, t, false, |s, _| {
                    let mut values: Vec<f64> = s.points.iter().map(|p| p.1).collect();
                    Some(quantile(q, &mut values))
                })?)
            }
            "mad_over_time" => EvalValue::Vector(self.over_time(call, 0, t, false, |s, _| {
                let mut values: Vec<f64> = s.points.iter().map(|p| p.1).collect();
                if values.iter().any(|v| v.is_nan()) {
                    return Some(f64::NAN);
                }
                let median = quantile(0.5, &mut values);
                let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
                Some(quantile(0.5, &mut deviations))
            })?),
            "histogram_quantile" => {
                let q = self.eval_scalar(arg(call, 0)?, t)?;
                let v = self.eval_vector(arg(call, 1)?, t)?;
                let out = group_buckets(v)
                    .into_iter()
                    .map(|g| InstSample {
                        value: bucket_quantile(q, g.buckets),
                        labels: g.labels,
                        drop_name: g.drop_name,
                    })
                    .collect();
                EvalValue::Vector(out)
            }
            "histogram_quantiles" => {
                let v = self.eval_vector(arg(call, 0)?, t)?;
                let label = self.eval_string(arg(call, 1)?, t)?;
                let mut qs = Vec::new();
                for e in call.args.args.iter().skip(2) {
                    qs.push(self.eval_scalar(e, t)?);
                }
                let groups = group_buckets(v);
                let mut out = Vec::new();
                for q in qs {
                    for g in &groups {
                        let mut labels = g.labels.clone();
                        labels.set(label.clone(), format_quantile_label(q));
                        out.push(InstSample {
                            value: bucket_quantile(q, g.buckets.clone()),
                            labels,
                            drop_name: g.drop_name,
                        });
                    }
                }
                EvalValue::Vector(out)
            }
            "histogram_fraction" => {
                let lower = self.eval_scalar(arg(call, 0)?, t)?;
                let upper = self.eval_scalar(arg(call, 1)?, t)?;
                let v = self.eval_vector(arg(call, 2)?, t)?;
                let out = group_buckets(v)
                    .into_iter()
                    .map(|g| InstSample {
                        value: bucket_fraction(lower, upper, g.buckets),
                        labels: g.labels,
                        drop_name: g.drop_name,
                    })
                    .collect();
                EvalValue::Vector(out)
            }
            "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
            | "histogram_stdvar" => {
                // These read native histograms only; float samples are ignored.
                self.eval_vector(arg(call, 0)?, t)?;
                EvalValue::Vector(Vec::new())
            }
            "info" => EvalValue::Vector(self.info(call, t)?),
            other => {
                return Err(Error::Unsupported {
                    what: format!("function {other}()"),
                });
            }
        };
        if let EvalValue::Vector(v) = &value {
            self.charge(v.len())?;
        }
        Ok(value)
    }

    /// Applies `f` to every series of the range vector argument `idx`; `keep_name`
    /// keeps the input's name flag (`last_over_time`, `first_over_time`).
    fn over_time(
        &mut self,
        call: &Call,
        idx: usize,
        t: i64,
        keep_name: bool,
        mut f: impl FnMut(&RangeSeries, &RangeVector) -> Option<f64>,
    ) -> Result<InstVector> {
        let r = self.eval_range(arg(call, idx)?, t)?;
        let mut out = Vec::with_capacity(r.series.len());
        for s in &r.series {
            if s.points.is_empty() {
                continue;
            }
            if let Some(value) = f(s, &r) {
                out.push(InstSample {
                    labels: s.labels.clone(),
                    value,
                    drop_name: if keep_name { s.drop_name } else { true },
                });
            }
        }
        Ok(out)
    }

    fn label_replace(&mut self, call: &Call, t: i64) -> Result<InstVector> {
        let v = self.eval_vector(arg(call, 0)?, t)?;
        let dst = self.eval_string(arg(call, 1)?, t)?;
        let replacement = self.eval_string(arg(call, 2)?, t)?;
        let src = self.eval_string(arg(call, 3)?, t)?;
        let regex_src = self.eval_string(arg(call, 4)?, t)?;
        let regex = compile_anchored(&regex_src).map_err(|_| {
            Error::execution(format!(
                "invalid regular expression in label_replace(): {regex_src}"
            ))
        })?;
        if !valid_label_name(&dst) {
            return Err(Error::execution(format!(
                "invalid destination label name in label_replace(): {dst}"
            )));
        }
        let mut out = Vec::with_capacity(v.len());
        for mut s in v {
            let value = s.labels.get_or_empty(&src).to_string();
            if let Some(caps) = regex.captures(&value) {
                let mut res = String::new();
                caps.expand(&replacement, &mut res);
                s.labels.set(dst.clone(), res);
                if dst == METRIC_NAME {
                    s.drop_name = false;
                }
            }
            out.push(s);
        }
        Ok(out)
    }

    fn label_join(&mut self, call: &Call, t: i64) -> Result<InstVector> {
        let v = self.eval_vector(arg(call, 0)?, t)?;
        let dst = self.eval_string(arg(call, 1)?, t)?;
        let sep = self.eval_string(arg(call, 2)?, t)?;
        let mut srcs = Vec::new();
        for e in call.args.args.iter().skip(3) {
            srcs.push(self.eval_string(e, t)?);
        }
        if !valid_label_name(&dst) {
            return Err(Error::execution(format!(
                "invalid destination label name in label_join(): {dst}"
            )));
        }
        let mut out = Vec::with_capacity(v.len());
        for mut s in v {
            let joined = srcs
                .iter()
                .map(|n| s.labels.get_or_empty(n))
                .collect::<Vec<_>>()
                .join(&sep);
            s.labels.set(dst.clone(), joined);
            if dst == METRIC_NAME {
                s.drop_name = false;
            }
            out.push(s);
        }
        Ok(out)
    }

    /// `info(v, selector?)`: adds the data labels of info series (default `target_info`)
    /// that share the identifying labels `instance`/`job` with each sample, as of the
    /// sample's own reference time (honouring `@` and `offset` in `v`).
    fn info(&mut self, call: &Call, t: i64) -> Result<InstVector> {
        const IDENTIFYING: [&str; 2] = ["instance", "job"];
        let base_expr = arg(call, 0)?;
        let base = self.eval_vector(base_expr, t)?;
        let mut name_matchers = Vec::new();
        let mut data_matchers = Vec::new();
        if let Some(sel) = call.args.args.get(1) {
            let Expr::VectorSelector(vs) = unwrap_parens(sel) else {
                return Err(Error::execution(
                    "expected a label selector as the second argument of info()",
                ));
            };
            let groups = selector_matchers(vs)?;
            if groups.len() != 1 {
                return Err(Error::Unsupported {
                    what: "'or' in the info() label selector".into(),
                });
            }
            for m in groups.into_iter().flatten() {
                if m.name == METRIC_NAME {
                    name_matchers.push(m);
                } else {
                    data_matchers.push(m);
                }
            }
        }
        let positive = |m: &LabelMatcher| matches!(m.op, MatchOp::Equal | MatchOp::Regex);
        if name_matchers.is_empty() {
            name_matchers.push(LabelMatcher::new(
                MatchOp::Equal,
                METRIC_NAME,
                "target_info",
            )?);
        } else if !name_matchers.iter().any(positive) {
            name_matchers.push(LabelMatcher::new(MatchOp::Regex, METRIC_NAME, ".+_info")?);
        }

        let reference = self.info_reference_time(base_expr, t);
        let lookback = self.opts.lookback_delta_ms;
        let mut matchers = name_matchers.clone();
        matchers.extend(data_matchers.iter().cloned());
        let candidates = self.select_raw(
            &matchers,
            reference.saturating_sub(lookback).saturating_add(1),
            reference,
        )?;
        // Live info series by identifying labels, then by metric name: the latest wins.
        let mut infos: HashMap<(String, String), HashMap<String, (i64, Labels)>> = HashMap::new();
        for series in candidates {
            let Some(&(ts, value)) = series.samples.iter().rfind(|s| s.0 <= reference) else {
                continue;
            };
            if ts <= reference.saturating_sub(lookback) || crate::source::is_stale_nan(value) {
                continue;
            }
            let key = (
                series.labels.get_or_empty(IDENTIFYING[0]).to_string(),
                series.labels.get_or_empty(IDENTIFYING[1]).to_string(),
            );
            let name = series.labels.get_or_empty(METRIC_NAME).to_string();
            let by_name = infos.entry(key).or_default();
            match by_name.get(&name) {
                Some((existing, _)) if *existing >= ts => {}
                _ => {
                    by_name.insert(name, (ts, series.labels));
                }
            }
        }
        let data_names: Vec<&str> = data_matchers.iter().map(|m| m.name.as_str()).collect();
        let accepts_empty = data_matchers.iter().all(|m| m.matches(""));
        let mut out = Vec::with_capacity(base.len());
        for mut s in base {
            if LabelMatcher::matches_all(&name_matchers, &s.labels) {
                // An info series itself passes through unenriched.
                out.push(s);
                continue;
            }
            let key = (
                s.labels.get_or_empty(IDENTIFYING[0]).to_string(),
                s.labels.get_or_empty(IDENTIFYING[1]).to_string(),
            );
            let matched = infos.get(&key).filter(|m| !m.is_empty());
            let Some(matched) = matched else {
                if accepts_empty {
                    out.push(s);
                }
                continue;
            };
            let mut added: Vec<(String, String)> = Vec::new();
            let mut names: Vec<&String> = matched.keys().collect();
            names.sort();
            for name in names {
                let Some((_, info_labels)) = matched.get(name) else {
                    continue;
                };
                for l in info_labels.iter() {
                    if l.name == METRIC_NAME || IDENTIFYING.contains(&l.name.as_str()) {
                        continue;
                    }
                    if !data_names.is_empty() && !data_names.contains(&l.name.as_str()) {
                        continue;
                    }
                    if s.labels.contains(&l.name) {
                        continue;
                    }
                    match added.iter().find(|(n, _)| n == &l.name) {
                        Some((_, v)) if v != &l.value => {
                            return Err(Error::execution(format!(
                                "conflicting label: {} has values {:?} and {:?} in different info series",
                                l.name, v, l.value
                            )));
                        }
                        Some(_) => {}
                        None => added.push((l.name.clone(), l.value.clone())),
                    }
                }
            }
            for (n, v) in added {
                s.labels.set(n, v);
            }
            out.push(s);
        }
        Ok(out)
    }

    /// The time at which `info()` looks up info series for samples of `expr` evaluated
    /// at `t`: follows `@`/`offset` of selectors and subqueries down the first vector
    /// argument.
    fn info_reference_time(&self, expr: &Expr, t: i64) -> i64 {
        match unwrap_parens(expr) {
            Expr::VectorSelector(vs) => self.reference_time(&vs.at, &vs.offset, t),
            Expr::MatrixSelector(ms) => self.reference_time(&ms.vs.at, &ms.vs.offset, t),
            Expr::Subquery(sq) => {
                let inner = self.reference_time(&sq.at, &sq.offset, t);
                self.info_reference_time(&sq.expr, inner)
            }
            Expr::Call(c) => c
                .args
                .args
                .iter()
                .find(|a| {
                    !matches!(
                        unwrap_parens(a),
                        Expr::NumberLiteral(_) | Expr::StringLiteral(_)
                    )
                })
                .map_or(t, |a| self.info_reference_time(a, t)),
            Expr::Aggregate(a) => self.info_reference_time(&a.expr, t),
            Expr::Unary(u) => self.info_reference_time(&u.expr, t),
            Expr::Binary(b) => match unwrap_parens(&b.lhs) {
                Expr::NumberLiteral(_) => self.info_reference_time(&b.rhs, t),
                lhs => self.info_reference_time(lhs, t),
            },
            _ => t,
        }
    }
}

/// Labels for `absent`/`absent_over_time`: the equality matchers of a plain selector
/// argument, minus names matched more than once.
fn absent_labels(expr: &Expr) -> Labels {
    let vs = match unwrap_parens(expr) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::empty(),
    };
    let mut labels = Labels::empty();
    let mut seen: Vec<&str> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        let is_equal = matches!(m.op, promql_parser::label::MatchOp::Equal);
        if is_equal && !seen.contains(&m.name.as_str()) {
            labels.set(m.name.clone(), m.value.clone());
        } else {
            labels.remove(&m.name);
        }
        seen.push(&m.name);
    }
    labels
}

/// `rate`, `increase`, `delta` with Prometheus' extrapolation: to the window edges when
/// the first/last sample is within 110% of the average sample interval from them,
/// otherwise by half an interval; counters are never extrapolated below zero.
pub(crate) fn extrapolated_rate(
    points: &[(i64, f64)],
    r: &RangeVector,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first_t, first_v) = points[0];
    let (last_t, last_v) = points[points.len() - 1];
    let mut result = last_v - first_v;
    if is_counter {
        let mut prev = first_v;
        for p in &points[1..] {
            if p.1 < prev {
                result += prev;
            }
            prev = p.1;
        }
    }
    let mut to_start = (first_t as f64 - r.window_start as f64) / 1000.0;
    let mut to_end = (r.window_end as f64 - last_t as f64) / 1000.0;
    let sampled = (last_t as f64 - first_t as f64) / 1000.0;
    if sampled <= 0.0 {
        return None;
    }
    let average = sampled / (points.len() - 1) as f64;
    let threshold = average * 1.1;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    if is_counter && result > 0.0 && first_v >= 0.0 {
        let to_zero = sampled * (first_v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= r.range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate`/`idelta`: from the last two samples.
fn instant_value(points: &[(i64, f64)], is_rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (prev_t, prev_v) = points[points.len() - 2];
    let (last_t, last_v) = points[points.len() - 1];
    let mut value = if is_rate && last_v < prev_v {
        last_v
    } else {
        last_v - prev_v
    };
    let interval = last_t.saturating_sub(prev_t);
    if interval == 0 {
        return None;
    }
    if is_rate {
        value /= interval as f64 / 1000.0;
    }
    Some(value)
}

/// Least-squares fit with x in seconds relative to `intercept_time`: `(slope, intercept)`.
pub(crate) fn linear_regression(points: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let mut n = 0.0;
    let (mut sum_x, mut c_x) = (0.0, 0.0);
    let (mut sum_y, mut c_y) = (0.0, 0.0);
    let (mut sum_xy, mut c_xy) = (0.0, 0.0);
    let (mut sum_x2, mut c_x2) = (0.0, 0.0);
    let init_y = points.first().map_or(f64::NAN, |p| p.1);
    let mut const_y = true;
    for (i, &(ts, v)) in points.iter().enumerate() {
        if const_y && i > 0 && v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (ts as f64 - intercept_time as f64) / 1000.0;
        (sum_x, c_x) = kahan_inc(x, sum_x, c_x);
        (sum_y, c_y) = kahan_inc(v, sum_y, c_y);
        (sum_xy, c_xy) = kahan_inc(x * v, sum_xy, c_xy);
        (sum_x2, c_x2) = kahan_inc(x * x, sum_x2, c_x2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sum_x, sum_y, sum_xy, sum_x2) = (sum_x + c_x, sum_y + c_y, sum_xy + c_xy, sum_x2 + c_x2);
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

fn double_exponential_smoothing(points: &[(i64, f64)], sf: f64, tf: f64) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let mut s0 = 0.0;
    let mut s1 = points[0].1;
    let mut b = points[1].1 - points[0].1;
    for (i, p) in points.iter().enumerate().skip(1) {
        let x = sf * p.1;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

/// Formats a quantile for the `histogram_quantiles` label: `0.0`, `0.25`, `1.0`.
fn format_quantile_label(q: f64) -> String {
    if q.is_finite() && q.fract() == 0.0 {
        format!("{q:.1}")
    } else {
        crate::engine::stats::format_go_float(q)
    }
}

/// Natural ordering: digit runs compare numerically (`cpu2` < `cpu10`).
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut digit = None;
        for (i, c) in s.char_indices() {
            let d = c.is_ascii_digit();
            match digit {
                Some(prev) if prev != d => {
                    out.push((prev, &s[start..i]));
                    start = i;
                }
                _ => {}
            }
            digit = Some(d);
        }
        if let Some(d) = digit {
            out.push((d, &s[start..]));
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = if x.0 && y.0 {
            let (xt, yt) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
            xt.len().cmp(&yt.len()).then_with(|| xt.cmp(yt))
        } else {
            x.1.cmp(y.1)
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Calendar fields of a Unix time in seconds (UTC).
fn date_function(name: &str, value: f64) -> f64 {
    let secs = value as i64;
    let days = secs.div_euclid(86_400);
    let secs_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    match name {
        "year" => year as f64,
        "month" => month as f64,
        "day_of_month" => day as f64,
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => (days - days_from_civil(year, 1, 1) + 1) as f64,
        "days_in_month" => days_in_month(year, month) as f64,
        "hour" => (secs_of_day / 3600) as f64,
        _ => ((secs_of_day % 3600) / 60) as f64,
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: i64, end: i64) -> RangeVector {
        RangeVector {
            series: Vec::new(),
            window_start: start,
            window_end: end,
            range_ms: end - start,
        }
    }

    #[test]
    fn rate_extrapolates_to_window_edges() {
        // 0+10x10 every 5m, increase over 50m at 50m: the window (0, 50m] starts
        // exactly one interval before the first sample, so extrapolation reaches 0.
        let points: Vec<(i64, f64)> = (1..=10).map(|i| (i * 300_000, i as f64 * 10.0)).collect();
        let r = window(0, 3_000_000);
        let inc = extrapolated_rate(&points, &r, true, false).unwrap();
        assert!((inc - 100.0).abs() < 1e-9);
        let rate = extrapolated_rate(&points, &r, true, true).unwrap();
        assert!((rate - 100.0 / 3000.0).abs() < 1e-12);
    }

    #[test]
    fn rate_extrapolation_stops_at_zero_for_counters() {
        // 1+10x10 at 5m intervals over a 100m window: the counter would reach 0 only
        // 30s before the first sample, so the start is extrapolated by 30s, not 2m30s.
        let points: Vec<(i64, f64)> = (0..=10)
            .map(|i| (i * 300_000, 1.0 + i as f64 * 10.0))
            .collect();
        let r = window(-3_000_000, 3_000_000);
        let inc = extrapolated_rate(&points, &r, true, false).unwrap();
        assert!((inc - 101.0).abs() < 1e-9, "{inc}");
    }

    #[test]
    fn rate_handles_counter_resets() {
        let points = vec![
            (0, 0.0),
            (300_000, 1.0),
            (600_000, 2.0),
            (900_000, 3.0),
            (1_200_000, 2.0),
            (1_500_000, 3.0),
            (1_800_000, 4.0),
        ];
        let r = window(-1, 1_800_000);
        let inc = extrapolated_rate(&points, &r, true, false).unwrap();
        assert!((inc - 7.0).abs() < 1e-6, "{inc}");
        // A single sample gives no rate.
        assert!(extrapolated_rate(&points[..1], &r, true, true).is_none());
    }

    #[test]
    fn irate_uses_last_two_samples() {
        assert_eq!(instant_value(&[(0, 1.0), (10_000, 5.0)], true), Some(0.4));
        // Counter reset: the last value is the increase.
        assert_eq!(instant_value(&[(0, 10.0), (10_000, 5.0)], true), Some(0.5));
        assert_eq!(
            instant_value(&[(0, 10.0), (10_000, 5.0)], false),
            Some(-5.0)
        );
    }

    #[test]
    fn natural_sort() {
        assert_eq!(natural_cmp("cpu2", "cpu10"), Ordering::Less);
        assert_eq!(natural_cmp("1.11.3", "1.2.3"), Ordering::Greater);
        assert_eq!(natural_cmp("4m5", "4m600"), Ordering::Less);
    }

    #[test]
    fn calendar() {
        assert_eq!(date_function("year", 1_136_239_445.0), 2006.0);
        assert_eq!(date_function("day_of_week", 1_136_239_445.0), 1.0);
        assert_eq!(date_function("hour", 1_136_239_445.0), 22.0);
        assert_eq!(date_function("minute", 1_136_239_445.0), 4.0);
        assert_eq!(date_function("day_of_year", 1_483_191_420.0), 366.0);
        assert_eq!(date_function("days_in_month", 1_454_284_800.0), 29.0);
        assert_eq!(date_function("day_of_week", 0.0), 4.0);
    }
}
