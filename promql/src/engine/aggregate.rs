//! Aggregation operators (`sum`, `avg`, `topk`, `count_values`, `limit_ratio` …).

use std::collections::HashMap;

use promql_parser::parser::{AggregateExpr, LabelModifier};

use crate::engine::eval::{EvalValue, Evaluator, InstSample, InstVector};
use crate::engine::stats::{KahanSum, Mean, format_go_float, quantile};
use crate::error::{Error, Result};
use crate::labels::{Labels, METRIC_NAME};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AggOp {
    Sum,
    Avg,
    Count,
    Min,
    Max,
    Group,
    Stddev,
    Stdvar,
    TopK,
    BottomK,
    Quantile,
    CountValues,
    LimitK,
    LimitRatio,
}

impl AggOp {
    fn parse(name: &str) -> Option<AggOp> {
        Some(match name.to_ascii_lowercase().as_str() {
            "sum" => AggOp::Sum,
            "avg" => AggOp::Avg,
            "count" => AggOp::Count,
            "min" => AggOp::Min,
            "max" => AggOp::Max,
            "group" => AggOp::Group,
            "stddev" => AggOp::Stddev,
            "stdvar" => AggOp::Stdvar,
            "topk" => AggOp::TopK,
            "bottomk" => AggOp::BottomK,
            "quantile" => AggOp::Quantile,
            "count_values" => AggOp::CountValues,
            "limitk" => AggOp::LimitK,
            "limit_ratio" => AggOp::LimitRatio,
            _ => return None,
        })
    }
}

/// Per-group accumulator for the simple aggregations.
struct Group {
    labels: Labels,
    drop_name: bool,
    count: f64,
    sum: KahanSum,
    mean: Mean,
    value: f64,
    welford_mean: f64,
    welford_m2: f64,
    values: Vec<f64>,
}

impl Group {
    fn new(labels: Labels) -> Self {
        Group {
            labels,
            drop_name: false,
            count: 0.0,
            sum: KahanSum::default(),
            mean: Mean::default(),
            value: 0.0,
            welford_mean: 0.0,
            welford_m2: 0.0,
            values: Vec::new(),
        }
    }
}

/// The grouping labels of a sample under `by`/`without`.
fn grouping_labels(labels: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    match modifier {
        None => Labels::empty(),
        Some(LabelModifier::Include(by)) => {
            let mut l = labels.clone();
            l.keep(&by.labels);
            l
        }
        Some(LabelModifier::Exclude(without)) => {
            let mut l = labels.clone();
            l.drop_names(&without.labels);
            l.remove(METRIC_NAME);
            l
        }
    }
}

/// Validates a `k` parameter: NaN is an error, values below 1 select nothing.
fn k_param(param: f64) -> Result<usize> {
    if param.is_nan() {
        return Err(Error::execution("Parameter value is NaN"));
    }
    if param >= i64::MAX as f64 {
        return Err(Error::execution(format!(
            "Scalar value {param} overflows int64"
        )));
    }
    if param < 1.0 {
        return Ok(0);
    }
    Ok(param as usize)
}

/// Orders for `topk` (`desc`) / `bottomk`: NaN always last, ties in input order.
fn sort_k(members: &mut [InstSample], desc: bool) {
    members.sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        (false, false) => {
            let o = a
                .value
                .partial_cmp(&b.value)
                .unwrap_or(std::cmp::Ordering::Equal);
            if desc { o.reverse() } else { o }
        }
    });
}

impl Evaluator<'_> {
    pub(crate) fn eval_aggregate(&mut self, a: &AggregateExpr, t: i64) -> Result<EvalValue> {
        let name = a.op.to_string();
        let op = AggOp::parse(&name)
            .ok_or_else(|| Error::execution(format!("unknown aggregation {name:?}")))?;
        let mut scalar_param = None;
        let mut string_param = None;
        if let Some(p) = &a.param {
            match op {
                AggOp::CountValues => string_param = Some(self.eval_string(p, t)?),
                _ => scalar_param = Some(self.eval_scalar(p, t)?),
            }
        }
        let input = self.eval_vector(&a.expr, t)?;
        let out = match op {
            AggOp::TopK | AggOp::BottomK | AggOp::LimitK | AggOp::LimitRatio => {
                self.aggregate_k(op, scalar_param.unwrap_or(f64::NAN), input, &a.modifier)?
            }
            AggOp::CountValues => {
                let label = string_param.unwrap_or_default();
                count_values(&label, input, &a.modifier)?
            }
            _ => aggregate_simple(op, scalar_param.unwrap_or(f64::NAN), input, &a.modifier),
        };
        self.charge(out.len())?;
        Ok(EvalValue::Vector(out))
    }

    fn aggregate_k(
        &mut self,
        op: AggOp,
        param: f64,
        input: InstVector,
        modifier: &Option<LabelModifier>,
    ) -> Result<InstVector> {
        let mut order: Vec<Labels> = Vec::new();
        let mut groups: HashMap<Labels, Vec<InstSample>> = HashMap::new();
        let ratio = if op == AggOp::LimitRatio {
            if param.is_nan() {
                return Err(Error::execution("Ratio value is NaN"));
            }
            param.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        let k = if op == AggOp::LimitRatio {
            0
        } else {
            k_param(param)?
        };
        if op != AggOp::LimitRatio && k == 0 {
            return Ok(Vec::new());
        }
        for s in input {
            let key = grouping_labels(&s.labels, modifier);
            match groups.get_mut(&key) {
                Some(g) => g.push(s),
                None => {
                    order.push(key.clone());
                    groups.insert(key, vec![s]);
                }
            }
        }
        let mut out = Vec::new();
        for key in order {
            let Some(mut members) = groups.remove(&key) else {
                continue;
            };
            match op {
                AggOp::TopK => {
                    sort_k(&mut members, true);
                    members.truncate(k);
                }
                AggOp::BottomK => {
                    sort_k(&mut members, false);
                    members.truncate(k);
                }
                AggOp::LimitK => members.truncate(k),
                _ => members.retain(|s| {
                    let offset = s.labels.stable_hash() as f64 / u64::MAX as f64;
                    (ratio >= 0.0 && offset < ratio) || (ratio < 0.0 && offset >= 1.0 + ratio)
                }),
            }
            out.extend(members);
        }
        Ok(out)
    }
}

fn aggregate_simple(
    op: AggOp,
    param: f64,
    input: InstVector,
    modifier: &Option<LabelModifier>,
) -> InstVector {
    let mut order: Vec<Group> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for s in input {
        let key = grouping_labels(&s.labels, modifier);
        let gi = match index.get(&key) {
            Some(&i) => i,
            None => {
                index.insert(key.clone(), order.len());
                order.push(Group::new(key));
                order.len() - 1
            }
        };
        let g = &mut order[gi];
        g.drop_name |= s.drop_name;
        let f = s.value;
        g.count += 1.0;
        let first = g.count == 1.0;
        match op {
            AggOp::Sum => g.sum.add(f),
            AggOp::Avg => g.mean.add(f),
            AggOp::Min if first || g.value > f || g.value.is_nan() => g.value = f,
            AggOp::Max if first || g.value < f || g.value.is_nan() => g.value = f,
            AggOp::Stddev | AggOp::Stdvar => {
                // Welford from a zero mean, so that a lone NaN or ±Inf yields NaN.
                let delta = f - g.welford_mean;
                g.welford_mean += delta / g.count;
                g.welford_m2 += delta * (f - g.welford_mean);
            }
            AggOp::Quantile => g.values.push(f),
            _ => {}
        }
    }
    order
        .into_iter()
        .map(|mut g| {
            let value = match op {
                AggOp::Sum => g.sum.value(),
                AggOp::Avg => g.mean.value(),
                AggOp::Count => g.count,
                AggOp::Group => 1.0,
                AggOp::Min | AggOp::Max => g.value,
                AggOp::Stdvar => g.welford_m2 / g.count,
                AggOp::Stddev => (g.welford_m2 / g.count).sqrt(),
                AggOp::Quantile => quantile(param, &mut g.values),
                _ => f64::NAN,
            };
            let drop_name = g.drop_name && g.labels.contains(METRIC_NAME);
            InstSample {
                labels: g.labels,
                value,
                drop_name,
            }
        })
        .collect()
}

/// `count_values`: one output per group and distinct value, the value written into
/// the `label` label.
fn count_values(
    label: &str,
    input: InstVector,
    modifier: &Option<LabelModifier>,
) -> Result<InstVector> {
    if label.is_empty() || label.contains('\u{fffd}') {
        return Err(Error::execution(format!("invalid label name {label:?}")));
    }
    let mut order: Vec<Labels> = Vec::new();
    let mut counts: HashMap<Labels, f64> = HashMap::new();
    for s in input {
        let mut key = grouping_labels(&s.labels, modifier);
        key.set(label.to_string(), format_go_float(s.value));
        match counts.get_mut(&key) {
            Some(c) => *c += 1.0,
            None => {
                order.push(key.clone());
                counts.insert(key, 1.0);
            }
        }
    }
    Ok(order
        .into_iter()
        .map(|labels| {
            let value = counts.get(&labels).copied().unwrap_or(0.0);
            InstSample {
                labels,
                value,
                drop_name: false,
            }
        })
        .collect())
}
