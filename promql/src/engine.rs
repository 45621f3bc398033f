//! The query engine: parsing, planning the selector fetches, stepping the evaluator and
//! shaping results.

mod aggregate;
mod binary;
mod eval;
mod functions;
mod histogram;
mod stats;

use std::collections::BTreeMap;
use std::time::Duration;

use promql_parser::parser::Expr;
use promql_parser::parser::value::ValueType;

use crate::duration_expr::{self, DurationContext};
use crate::error::{Error, Result};
use crate::labels::Labels;
use crate::source::{Series, SeriesSource};
use crate::value::{Matrix, Sample, Value};

use eval::{EvalValue, Evaluator, InstSample};

/// Engine settings. Defaults are Prometheus' defaults.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back an instant selector looks for the latest sample (Prometheus'
    /// `--query.lookback-delta`, 5 minutes).
    pub lookback_delta_ms: i64,
    /// Upper bound on the samples a query holds in memory at once: the fetched series,
    /// the current step's intermediate vectors and range vectors, and the result
    /// (Prometheus' `--query.max-samples`, 50 million).
    pub max_samples: usize,
    /// Optional wall-clock budget for one query.
    pub timeout: Option<Duration>,
    /// Step of a subquery written without one (`x[1h:]`); Prometheus uses the rule
    /// evaluation interval, 1 minute by default.
    pub default_subquery_step_ms: i64,
    /// Maximum points per series of a range query (Prometheus' API limit, 11 000).
    pub max_points_per_series: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            timeout: None,
            default_subquery_step_ms: 60 * 1000,
            max_points_per_series: 11_000,
        }
    }
}

/// A PromQL engine over a [`SeriesSource`].
#[derive(Debug)]
pub struct Engine<S> {
    source: S,
    options: EngineOptions,
}

impl<S: SeriesSource> Engine<S> {
    /// An engine with default options.
    pub fn new(source: S) -> Self {
        Self::with_options(source, EngineOptions::default())
    }

    /// An engine with the given options.
    pub fn with_options(source: S, options: EngineOptions) -> Self {
        Engine { source, options }
    }

    /// The options in force.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// The series source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The series source, mutably (e.g. to load more data in tests).
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// Evaluates `query` at `time_ms` (an instant query).
    pub fn instant(&self, query: &str, time_ms: i64) -> Result<Value> {
        let expr = prepare(
            query,
            DurationContext {
                step_ms: 0,
                range_ms: 0,
            },
        )?;
        let mut ev = Evaluator::new(&self.source, &self.options, time_ms, time_ms, 0);
        ev.prefetch(&expr, time_ms, time_ms)?;
        let value = ev.eval(&expr, time_ms)?;
        Ok(match value {
            EvalValue::Scalar(v) => Value::Scalar {
                t_ms: time_ms,
                value: v,
            },
            EvalValue::String(s) => Value::String(s),
            EvalValue::Vector(v) => Value::Vector(finish_vector(v, time_ms)?),
            EvalValue::Range(r) => {
                let series = r
                    .series
                    .into_iter()
                    .map(|s| (s.labels, s.drop_name, s.points))
                    .collect();
                Value::Matrix(finish_matrix(series)?)
            }
        })
    }

    /// Evaluates `query` at every step from `start_ms` to `end_ms` (a range query).
    pub fn range(&self, query: &str, start_ms: i64, end_ms: i64, step_ms: i64) -> Result<Matrix> {
        if step_ms <= 0 {
            return Err(Error::Parse {
                message: "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            });
        }
        if end_ms < start_ms {
            return Err(Error::Parse {
                message: "end timestamp must not be before start time".into(),
            });
        }
        let points = (end_ms.saturating_sub(start_ms) / step_ms).saturating_add(1);
        if points > self.options.max_points_per_series as i64 {
            return Err(Error::Parse {
                message: format!(
                    "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
                    self.options.max_points_per_series
                ),
            });
        }
        let expr = prepare(
            query,
            DurationContext {
                step_ms,
                range_ms: end_ms.saturating_sub(start_ms),
            },
        )?;
        match expr.value_type() {
            ValueType::Vector | ValueType::Scalar => {}
            other => {
                let name = match other {
                    ValueType::Matrix => "range vector",
                    _ => "string",
                };
                return Err(Error::execution(format!(
                    "invalid expression type \"{name}\" for range query, must be Scalar or instant Vector"
                )));
            }
        }
        let mut ev = Evaluator::new(&self.source, &self.options, start_ms, end_ms, step_ms);
        ev.prefetch(&expr, start_ms, end_ms)?;

        let mut index: std::collections::HashMap<(Labels, bool), usize> = Default::default();
        let mut series: Vec<NamedPoints> = Vec::new();
        let mut t = start_ms;
        while t <= end_ms {
            ev.begin_step();
            let samples = match ev.eval(&expr, t)? {
                EvalValue::Scalar(v) => vec![InstSample {
                    labels: Labels::empty(),
                    value: v,
                    drop_name: false,
                }],
                EvalValue::Vector(v) => v,
                EvalValue::String(_) | EvalValue::Range(_) => {
                    return Err(Error::execution(
                        "range query expression must evaluate to a scalar or an instant vector",
                    ));
                }
            };
            ev.charge_result(samples.len())?;
            for s in samples {
                let key = (s.labels, s.drop_name);
                let idx = match index.get(&key) {
                    Some(i) => *i,
                    None => {
                        series.push((key.0.clone(), key.1, Vec::new()));
                        index.insert(key, series.len() - 1);
                        series.len() - 1
                    }
                };
                series[idx].2.push((t, s.value));
            }
            t = match t.checked_add(step_ms) {
                Some(next) => next,
                None => break,
            };
        }
        finish_matrix(series)
    }
}

/// Rewrites duration expressions, parses, and checks the tree depth.
fn prepare(query: &str, ctx: DurationContext) -> Result<Expr> {
    check_query_shape(query)?;
    let query = crate::escapes::normalize(query);
    let query = duration_expr::rewrite(&query, ctx)?;
    let expr = promql_parser::parser::parse(&query).map_err(|message| Error::Parse { message })?;
    check_depth(&expr, 0)?;
    Ok(expr)
}

/// The matcher sets of a series selector (`up{job="x"}`, `{__name__=~"a|b"}`, one set per
/// `or` branch), as the Prometheus API's `match[]` takes it: a bare vector selector, with
/// no offset or `@`.
pub fn parse_series_selector(text: &str) -> Result<Vec<Vec<crate::LabelMatcher>>> {
    check_query_shape(text)?;
    let text = crate::escapes::normalize(text);
    let expr = promql_parser::parser::parse(&text).map_err(|message| Error::Parse { message })?;
    match expr {
        Expr::VectorSelector(vs) if vs.offset.is_none() && vs.at.is_none() => {
            eval::selector_matchers(&vs)
        }
        _ => Err(Error::Parse {
            message: "not a series selector".into(),
        }),
    }
}

/// Bounds recursion in the evaluator for pathological queries.
const MAX_DEPTH: usize = 200;

/// Bounds the operators of one query: each can add a level to the syntax tree, and
/// very deep trees overflow the stack while being built or dropped.
const MAX_OPERATORS: usize = 10_000;

/// Rejects, before parsing, queries nested deeper than [`MAX_DEPTH`] brackets or with
/// more than [`MAX_OPERATORS`] operators (outside string literals and label matchers).
fn check_query_shape(query: &str) -> Result<()> {
    let bytes = query.as_bytes();
    let (mut depth, mut braces, mut operators) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    if bytes[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if c == b'{' {
                    braces += 1;
                }
                if depth > MAX_DEPTH {
                    return Err(Error::Parse {
                        message: format!("query is nested more than {MAX_DEPTH} levels deep"),
                    });
                }
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if c == b'}' {
                    braces = braces.saturating_sub(1);
                }
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'!' if braces == 0 => {
                operators += 1;
            }
            c if c.is_ascii_alphabetic() && braces == 0 => {
                let start = i;
                while i + 1 < bytes.len()
                    && (bytes[i + 1].is_ascii_alphanumeric() || bytes[i + 1] == b'_')
                {
                    i += 1;
                }
                let word = &query[start..=i];
                if ["and", "or", "unless", "atan2"]
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k))
                {
                    operators += 1;
                }
            }
            _ => {}
        }
        if operators > MAX_OPERATORS {
            return Err(Error::Parse {
                message: format!("query has more than {MAX_OPERATORS} operators"),
            });
        }
        i += 1;
    }
    Ok(())
}

fn check_depth(expr: &Expr, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::Parse {
            message: format!("query is nested more than {MAX_DEPTH} levels deep"),
        });
    }
    let d = depth + 1;
    match expr {
        Expr::Aggregate(a) => {
            check_depth(&a.expr, d)?;
            if let Some(p) = &a.param {
                check_depth(p, d)?;
            }
        }
        Expr::Unary(u) => check_depth(&u.expr, d)?,
        Expr::Binary(b) => {
            check_depth(&b.lhs, d)?;
            check_depth(&b.rhs, d)?;
        }
        Expr::Paren(p) => check_depth(&p.expr, d)?,
        Expr::Subquery(s) => check_depth(&s.expr, d)?,
        Expr::Call(c) => {
            for a in &c.args.args {
                check_depth(a, d)?;
            }
        }
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Extension(_) => {}
    }
    Ok(())
}

/// Applies the delayed metric-name removal and rejects duplicate label sets.
fn finish_vector(v: Vec<InstSample>, t_ms: i64) -> Result<Vec<Sample>> {
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    let mut out = Vec::with_capacity(v.len());
    for mut s in v {
        if s.drop_name {
            s.labels.drop_metric_name();
        }
        if !seen.insert(s.labels.clone()) {
            return Err(duplicate_labelset());
        }
        out.push(Sample {
            labels: s.labels,
            t_ms,
            value: s.value,
        });
    }
    Ok(out)
}

/// A result series before name removal: labels, drop-name flag, points.
type NamedPoints = (Labels, bool, Vec<(i64, f64)>);

/// Drops flagged names, merges series that became identical if their points do not
/// collide (Prometheus 3 behaviour for range queries), sorts by labels.
fn finish_matrix(series: Vec<NamedPoints>) -> Result<Matrix> {
    let mut merged: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    for (mut labels, drop_name, points) in series {
        if drop_name {
            labels.drop_metric_name();
        }
        match merged.get_mut(&labels) {
            None => {
                merged.insert(labels, points);
            }
            Some(existing) => {
                for p in points {
                    match existing.binary_search_by_key(&p.0, |q| q.0) {
                        Ok(_) => return Err(duplicate_labelset()),
                        Err(i) => existing.insert(i, p),
                    }
                }
            }
        }
    }
    Ok(merged
        .into_iter()
        .map(|(labels, samples)| Series { labels, samples })
        .collect())
}

pub(crate) fn duplicate_labelset() -> Error {
    Error::execution("vector cannot contain metrics with the same labelset")
}
