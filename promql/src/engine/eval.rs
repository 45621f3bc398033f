//! The evaluator: one expression at one timestamp, over data fetched up front.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use promql_parser::label::{MatchOp as ParserMatchOp, Matcher as ParserMatcher};
use promql_parser::parser::{
    AtModifier, Expr, MatrixSelector, Offset, SubqueryExpr, VectorSelector,
};

use crate::engine::EngineOptions;
use crate::error::{Error, Result};
use crate::labels::{Labels, METRIC_NAME};
use crate::source::{LabelMatcher, MatchOp, Series, SeriesSource, is_stale_nan};

/// A sample of an instant vector during evaluation. `drop_name` is Prometheus 3's
/// delayed name removal: the name stays available to later label functions and
/// aggregations, and is removed from the final result.
#[derive(Clone, Debug)]
pub(crate) struct InstSample {
    pub labels: Labels,
    pub value: f64,
    pub drop_name: bool,
}

pub(crate) type InstVector = Vec<InstSample>;

/// One series of a range vector.
#[derive(Clone, Debug)]
pub(crate) struct RangeSeries {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
    pub drop_name: bool,
}

/// A range vector with its window `(window_start, window_end]`.
#[derive(Clone, Debug)]
pub(crate) struct RangeVector {
    pub series: Vec<RangeSeries>,
    pub window_start: i64,
    pub window_end: i64,
    pub range_ms: i64,
}

/// The value of an expression at one timestamp.
#[derive(Clone, Debug)]
pub(crate) enum EvalValue {
    Scalar(f64),
    String(String),
    Vector(InstVector),
    Range(RangeVector),
}

impl EvalValue {
    pub fn type_name(&self) -> &'static str {
        match self {
            EvalValue::Scalar(_) => "scalar",
            EvalValue::String(_) => "string",
            EvalValue::Vector(_) => "instant vector",
            EvalValue::Range(_) => "range vector",
        }
    }
}

/// Evaluation state of one query.
pub(crate) struct Evaluator<'a> {
    source: &'a dyn SeriesSource,
    pub opts: &'a EngineOptions,
    pub query_start: i64,
    pub query_end: i64,
    pub query_step: i64,
    /// Prefetched series per selector (keyed by the selector node's address).
    data: HashMap<usize, Vec<Series>>,
    fetched_samples: usize,
    /// Inner results of subqueries by (subquery node, step timestamp): consecutive
    /// steps of a range query (and of enclosing subqueries) overlap, and an inner
    /// result depends only on its timestamp.
    subquery_cache: HashMap<(usize, i64), InstVector>,
    cached_samples: usize,
    step_samples: usize,
    result_samples: usize,
    deadline: Option<Instant>,
    ticks: u64,
}

pub(crate) fn duration_ms(d: &std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
        None => 0,
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => duration_ms(&d),
        Err(e) => -duration_ms(&e.duration()),
    }
}

/// Strips parentheses.
pub(crate) fn unwrap_parens(mut expr: &Expr) -> &Expr {
    while let Expr::Paren(p) = expr {
        expr = &p.expr;
    }
    expr
}

impl<'a> Evaluator<'a> {
    pub fn new(
        source: &'a dyn SeriesSource,
        opts: &'a EngineOptions,
        query_start: i64,
        query_end: i64,
        query_step: i64,
    ) -> Self {
        Evaluator {
            source,
            opts,
            query_start,
            query_end,
            query_step,
            data: HashMap::new(),
            fetched_samples: 0,
            subquery_cache: HashMap::new(),
            cached_samples: 0,
            step_samples: 0,
            result_samples: 0,
            deadline: opts.timeout.map(|t| Instant::now() + t),
            ticks: 0,
        }
    }

    /// Starts a new top-level step: intermediate samples of the previous one are freed.
    pub fn begin_step(&mut self) {
        self.step_samples = 0;
    }

    fn check_budget(&self) -> Result<()> {
        let total = self
            .fetched_samples
            .saturating_add(self.cached_samples)
            .saturating_add(self.step_samples)
            .saturating_add(self.result_samples);
        if total > self.opts.max_samples {
            return Err(Error::TooManySamples {
                stage: "query execution",
            });
        }
        Ok(())
    }

    /// Accounts for `n` samples materialised while evaluating the current step.
    pub fn charge(&mut self, n: usize) -> Result<()> {
        self.step_samples = self.step_samples.saturating_add(n);
        self.check_budget()
    }

    /// Accounts for `n` samples added to a range query's result.
    pub fn charge_result(&mut self, n: usize) -> Result<()> {
        self.result_samples = self.result_samples.saturating_add(n);
        self.check_budget()
    }

    fn tick(&mut self) -> Result<()> {
        self.ticks += 1;
        if let Some(deadline) = self.deadline
            && self.ticks.is_multiple_of(64)
            && Instant::now() > deadline
        {
            return Err(Error::Timeout {
                stage: "query execution",
            });
        }
        Ok(())
    }

    /// Resolves an `@` modifier to milliseconds.
    pub fn at_ms(&self, at: &AtModifier) -> i64 {
        match at {
            AtModifier::Start => self.query_start,
            AtModifier::End => self.query_end,
            AtModifier::At(t) => system_time_ms(t),
        }
    }

    /// The reference time of a selector or subquery evaluated at `t`: `@` (or `t`)
    /// minus the offset.
    pub fn reference_time(&self, at: &Option<AtModifier>, offset: &Option<Offset>, t: i64) -> i64 {
        let base = at.as_ref().map_or(t, |a| self.at_ms(a));
        base.saturating_sub(offset_ms(offset))
    }

    // ---------------------------------------------------------------- prefetch

    /// Fetches, once per selector, every sample any step of the query may read.
    pub fn prefetch(&mut self, expr: &Expr, lo: i64, hi: i64) -> Result<()> {
        let mut plan: HashMap<usize, (i64, i64, &VectorSelector)> = HashMap::new();
        self.plan(expr, lo, hi, &mut plan);
        for (key, (start, end, vs)) in plan {
            let series = self.fetch(vs, start, end)?;
            let n: usize = series.iter().map(|s| s.samples.len()).sum();
            self.fetched_samples = self.fetched_samples.saturating_add(n);
            self.check_budget()?;
            self.data.insert(key, series);
        }
        Ok(())
    }

    fn plan<'e>(
        &self,
        expr: &'e Expr,
        lo: i64,
        hi: i64,
        plan: &mut HashMap<usize, (i64, i64, &'e VectorSelector)>,
    ) {
        let mut add = |vs: &'e VectorSelector, window: i64| {
            let (tlo, thi) = match &vs.at {
                Some(at) => {
                    let a = self.at_ms(at);
                    (a, a)
                }
                None => (lo, hi),
            };
            let off = offset_ms(&vs.offset);
            let start = tlo
                .saturating_sub(off)
                .saturating_sub(window)
                .saturating_add(1);
            let end = thi.saturating_sub(off);
            let key = vs as *const VectorSelector as usize;
            let entry = plan.entry(key).or_insert((start, end, vs));
            entry.0 = entry.0.min(start);
            entry.1 = entry.1.max(end);
        };
        match expr {
            Expr::VectorSelector(vs) => add(vs, self.opts.lookback_delta_ms),
            Expr::MatrixSelector(ms) => add(&ms.vs, duration_ms(&ms.range)),
            Expr::Subquery(sq) => {
                let (tlo, thi) = match &sq.at {
                    Some(at) => {
                        let a = self.at_ms(at);
                        (a, a)
                    }
                    None => (lo, hi),
                };
                let off = offset_ms(&sq.offset);
                let range = duration_ms(&sq.range);
                self.plan(
                    &sq.expr,
                    tlo.saturating_sub(off).saturating_sub(range),
                    thi.saturating_sub(off),
                    plan,
                );
            }
            Expr::Aggregate(a) => {
                self.plan(&a.expr, lo, hi, plan);
                if let Some(p) = &a.param {
                    self.plan(p, lo, hi, plan);
                }
            }
            Expr::Unary(u) => self.plan(&u.expr, lo, hi, plan),
            Expr::Binary(b) => {
                self.plan(&b.lhs, lo, hi, plan);
                self.plan(&b.rhs, lo, hi, plan);
            }
            Expr::Paren(p) => self.plan(&p.expr, lo, hi, plan),
            Expr::Call(c) => {
                // info()'s label selector is looked up at evaluation time instead.
                let n = if c.func.name == "info" {
                    1
                } else {
                    c.args.args.len()
                };
                for a in c.args.args.iter().take(n) {
                    self.plan(a, lo, hi, plan);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    /// Selects from the source directly (for lookups planned at evaluation time),
    /// counting the samples against the budget.
    pub fn select_raw(
        &mut self,
        matchers: &[LabelMatcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<Series>> {
        let series = self.source.select(matchers, start, end)?;
        let n: usize = series.iter().map(|s| s.samples.len()).sum();
        self.charge(n)?;
        Ok(series)
    }

    fn fetch(&self, vs: &VectorSelector, start: i64, end: i64) -> Result<Vec<Series>> {
        let groups = selector_matchers(vs)?;
        if groups.len() == 1 {
            let mut series = self.source.select(&groups[0], start, end)?;
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            return Ok(series);
        }
        let mut merged: std::collections::BTreeMap<Labels, Series> = Default::default();
        for group in &groups {
            for s in self.source.select(group, start, end)? {
                merged.entry(s.labels.clone()).or_insert(s);
            }
        }
        Ok(merged.into_values().collect())
    }

    fn data_for(&self, vs: &VectorSelector) -> &[Series] {
        let key = vs as *const VectorSelector as usize;
        self.data.get(&key).map_or(&[], |v| v.as_slice())
    }

    // ---------------------------------------------------------------- eval

    pub fn eval(&mut self, expr: &Expr, t: i64) -> Result<EvalValue> {
        self.tick()?;
        match expr {
            Expr::NumberLiteral(n) => Ok(EvalValue::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(EvalValue::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                EvalValue::Scalar(v) => Ok(EvalValue::Scalar(-v)),
                EvalValue::Vector(mut v) => {
                    for s in &mut v {
                        s.value = -s.value;
                        s.drop_name = true;
                    }
                    Ok(EvalValue::Vector(v))
                }
                other => Err(Error::execution(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                    other.type_name()
                ))),
            },
            Expr::VectorSelector(vs) => {
                let v = self
                    .select_instant(vs, t)?
                    .into_iter()
                    .map(|(labels, value, _)| InstSample {
                        labels,
                        value,
                        drop_name: false,
                    })
                    .collect::<Vec<_>>();
                Ok(EvalValue::Vector(v))
            }
            Expr::MatrixSelector(ms) => Ok(EvalValue::Range(self.select_range(ms, t)?)),
            Expr::Subquery(sq) => Ok(EvalValue::Range(self.eval_subquery(sq, t)?)),
            Expr::Binary(b) => self.eval_binary(b, t),
            Expr::Aggregate(a) => self.eval_aggregate(a, t),
            Expr::Call(c) => self.eval_call(c, t),
            Expr::Extension(_) => Err(Error::Unsupported {
                what: "extension expressions".into(),
            }),
        }
    }

    pub fn eval_vector(&mut self, expr: &Expr, t: i64) -> Result<InstVector> {
        match self.eval(expr, t)? {
            EvalValue::Vector(v) => Ok(v),
            other => Err(Error::execution(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    pub fn eval_scalar(&mut self, expr: &Expr, t: i64) -> Result<f64> {
        match self.eval(expr, t)? {
            EvalValue::Scalar(v) => Ok(v),
            other => Err(Error::execution(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    pub fn eval_string(&mut self, expr: &Expr, t: i64) -> Result<String> {
        match self.eval(expr, t)? {
            EvalValue::String(s) => Ok(s),
            other => Err(Error::execution(format!(
                "expected string, got {}",
                other.type_name()
            ))),
        }
    }

    pub fn eval_range(&mut self, expr: &Expr, t: i64) -> Result<RangeVector> {
        match self.eval(expr, t)? {
            EvalValue::Range(r) => Ok(r),
            other => Err(Error::execution(format!(
                "expected range vector, got {}",
                other.type_name()
            ))),
        }
    }

    /// The latest non-stale sample of each selected series within the lookback window:
    /// `(labels, value, sample timestamp)`.
    pub fn select_instant(
        &mut self,
        vs: &VectorSelector,
        t: i64,
    ) -> Result<Vec<(Labels, f64, i64)>> {
        let reference = self.reference_time(&vs.at, &vs.offset, t);
        let lookback = self.opts.lookback_delta_ms;
        let mut out = Vec::new();
        for series in self.data_for(vs) {
            let idx = series.samples.partition_point(|s| s.0 <= reference);
            if idx == 0 {
                continue;
            }
            let (ts, value) = series.samples[idx - 1];
            if ts <= reference.saturating_sub(lookback) || is_stale_nan(value) {
                continue;
            }
            out.push((series.labels.clone(), value, ts));
        }
        self.charge(out.len())?;
        Ok(out)
    }

    /// The samples of each selected series within `(ref - range, ref]`, staleness
    /// markers removed; series without samples are left out.
    pub fn select_range(&mut self, ms: &MatrixSelector, t: i64) -> Result<RangeVector> {
        let vs = &ms.vs;
        let reference = self.reference_time(&vs.at, &vs.offset, t);
        let range = duration_ms(&ms.range);
        let start = reference.saturating_sub(range);
        let mut out = Vec::new();
        let mut n = 0usize;
        for series in self.data_for(vs) {
            let lo = series.samples.partition_point(|s| s.0 <= start);
            let hi = series.samples.partition_point(|s| s.0 <= reference);
            if lo >= hi {
                continue;
            }
            let points: Vec<(i64, f64)> = series.samples[lo..hi]
                .iter()
                .filter(|s| !is_stale_nan(s.1))
                .copied()
                .collect();
            if points.is_empty() {
                continue;
            }
            n += points.len();
            out.push(RangeSeries {
                labels: series.labels.clone(),
                points,
                drop_name: false,
            });
        }
        self.charge(n)?;
        Ok(RangeVector {
            series: out,
            window_start: start,
            window_end: reference,
            range_ms: range,
        })
    }

    /// Evaluates the inner expression at every subquery step in `(ref - range, ref]`.
    pub fn eval_subquery(&mut self, sq: &SubqueryExpr, t: i64) -> Result<RangeVector> {
        let end = self.reference_time(&sq.at, &sq.offset, t);
        let range = duration_ms(&sq.range);
        let step = match &sq.step {
            Some(d) => duration_ms(d),
            None => self.opts.default_subquery_step_ms,
        };
        if step <= 0 {
            return Err(Error::execution("subquery step must be greater than 0"));
        }
        let start = end.saturating_sub(range);
        let first = start
            .div_euclid(step)
            .saturating_add(1)
            .saturating_mul(step);
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut series: Vec<RangeSeries> = Vec::new();
        let node = sq as *const SubqueryExpr as usize;
        let mut ts = first;
        while ts <= end {
            self.charge(1)?;
            let samples = match self.subquery_cache.get(&(node, ts)) {
                Some(cached) => cached.clone(),
                None => {
                    let computed = match self.eval(&sq.expr, ts)? {
                        EvalValue::Vector(v) => v,
                        EvalValue::Scalar(v) => vec![InstSample {
                            labels: Labels::empty(),
                            value: v,
                            drop_name: false,
                        }],
                        other => {
                            return Err(Error::execution(format!(
                                "subquery is only allowed on instant vector, got {}",
                                other.type_name()
                            )));
                        }
                    };
                    self.cached_samples = self.cached_samples.saturating_add(computed.len() + 1);
                    self.check_budget()?;
                    self.subquery_cache.insert((node, ts), computed.clone());
                    computed
                }
            };
            for s in samples {
                match index.get(&s.labels) {
                    Some(&i) => {
                        series[i].points.push((ts, s.value));
                        series[i].drop_name |= s.drop_name;
                    }
                    None => {
                        index.insert(s.labels.clone(), series.len());
                        series.push(RangeSeries {
                            labels: s.labels,
                            points: vec![(ts, s.value)],
                            drop_name: s.drop_name,
                        });
                    }
                }
            }
            ts = match ts.checked_add(step) {
                Some(next) => next,
                None => break,
            };
        }
        Ok(RangeVector {
            series,
            window_start: start,
            window_end: end,
            range_ms: range,
        })
    }
}

/// The matcher groups of a selector (more than one for `{a="1" or b="2"}`), each
/// including the metric name written before the braces.
pub(crate) fn selector_matchers(vs: &VectorSelector) -> Result<Vec<Vec<LabelMatcher>>> {
    let mut groups: Vec<Vec<&ParserMatcher>> = Vec::new();
    if vs.matchers.or_matchers.is_empty() {
        groups.push(vs.matchers.matchers.iter().collect());
    } else {
        for g in &vs.matchers.or_matchers {
            groups.push(g.iter().chain(vs.matchers.matchers.iter()).collect());
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for group in groups {
        let mut converted = Vec::with_capacity(group.len() + 1);
        if let Some(name) = &vs.name {
            converted.push(LabelMatcher::new(
                MatchOp::Equal,
                METRIC_NAME,
                name.clone(),
            )?);
        }
        for m in group {
            converted.push(convert_matcher(m)?);
        }
        out.push(converted);
    }
    Ok(out)
}

fn convert_matcher(m: &ParserMatcher) -> Result<LabelMatcher> {
    let op = match &m.op {
        ParserMatchOp::Equal => MatchOp::Equal,
        ParserMatchOp::NotEqual => MatchOp::NotEqual,
        ParserMatchOp::Re(_) => MatchOp::Regex,
        ParserMatchOp::NotRe(_) => MatchOp::NotRegex,
    };
    match LabelMatcher::new(op, m.name.clone(), m.value.clone()) {
        Ok(lm) => Ok(lm),
        // Go regex syntax the Rust engine rejects as written: the parser already
        // compiled an escaped equivalent, use it.
        Err(e) => match &m.op {
            ParserMatchOp::Re(re) | ParserMatchOp::NotRe(re) => {
                LabelMatcher::with_regex(op, m.name.clone(), m.value.clone(), re.clone()).ok_or(e)
            }
            _ => Err(e),
        },
    }
}
