//! The PromQL engine's [`SeriesSource`] over `prometheus.samples` (DESIGN.md §4, §6;
//! docs/decisions/0003-promql-evaluator.md).
//!
//! A selector becomes one SQL statement run by the node's [`QueryEngine`] on the query
//! runtime:
//!
//! - `time` is filtered to the selector's range, so the shard reads only the segments and
//!   row groups that overlap it;
//! - an equality (or inequality) matcher on `__name__` becomes `metric = 'x'`, which the
//!   planner rewrites to a dictionary id comparison (an unknown name matches nothing);
//! - rows are grouped by `(metric, labels)` with the samples of each series gathered by
//!   `array_agg`: group keys stay dictionary ids until the output, so each series' label
//!   string is decoded once, not once per sample;
//! - every other matcher (regular expressions on `__name__`, any matcher on a label) is
//!   applied here, after parsing the canonical `labels` string back into pairs
//!   ([`parse_canonical_labels`]).
//!
//! [`SeriesSource::select`] is synchronous: it spawns the statement on the query runtime
//! and waits for the answer, so it must be called from a blocking thread (the API runs the
//! engine under `spawn_blocking`), never from a runtime worker.
//!
//! Series are identified by their labels only: the node's `region`, `cluster` and `node`
//! columns are not added as labels, so results look as they do in Prometheus.

use std::{sync::Arc, time::Instant};

use datafusion::arrow::{
    array::{Array, AsArray, RecordBatch},
    datatypes::{DataType, Float64Type, Int64Type},
};
use flowmesh_promql::{Error, LabelMatcher, Labels, METRIC_NAME, MatchOp, Series, SeriesSource};
use flowmesh_query_planner::{QueryEngine, QueryError};

use crate::tables::ingested::PROM_SAMPLES;

/// Timestamps handed to SQL are clamped to this many µs either side of the epoch (about
/// ±126 000 years): far beyond any stored sample, and safely inside `i64`.
const MAX_ABS_TIME_US: i64 = 4_000_000_000_000_000_000;

/// `prometheus.samples` as a PromQL series source.
#[derive(Clone)]
pub struct SamplesSource {
    engine: Arc<QueryEngine>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for SamplesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamplesSource").finish_non_exhaustive()
    }
}

impl SamplesSource {
    /// A source that runs its SQL with `engine` on `runtime` (the node's query runtime).
    pub fn new(engine: Arc<QueryEngine>, runtime: tokio::runtime::Handle) -> Self {
        Self { engine, runtime }
    }

    /// This source with a deadline for every statement it runs (one query's budget).
    pub fn until(&self, deadline: Option<Instant>) -> DeadlineSource {
        DeadlineSource {
            source: self.clone(),
            deadline,
        }
    }

    /// Series matching every matcher with samples in `[start_ms, end_ms]`, with those
    /// samples sorted by time.
    pub async fn select_series(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
        deadline: Option<Instant>,
    ) -> Result<Vec<Series>, Error> {
        if start_ms > end_ms {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT metric, labels, array_agg(named_struct('t', CAST(time AS BIGINT), 'v', value)) AS samples \
             FROM {PROM_SAMPLES} WHERE {} GROUP BY metric, labels",
            where_clause(matchers, start_ms, end_ms)
        );
        let batches = self.run(&sql, deadline).await?;
        let mut out = Vec::new();
        for batch in &batches {
            let (metrics, labels) = label_columns(batch)?;
            let samples = batch
                .column(2)
                .as_list_opt::<i32>()
                .ok_or_else(|| unexpected("samples", batch.column(2).data_type()))?;
            for row in 0..batch.num_rows() {
                let Some(labels) = series_labels(metrics, labels, row)? else {
                    continue;
                };
                if !LabelMatcher::matches_all(matchers, &labels) {
                    continue;
                }
                let points = samples.value(row);
                let points = points
                    .as_struct_opt()
                    .ok_or_else(|| unexpected("samples", points.data_type()))?;
                let times = points
                    .column(0)
                    .as_primitive_opt::<Int64Type>()
                    .ok_or_else(|| unexpected("sample time", points.column(0).data_type()))?;
                let values = points
                    .column(1)
                    .as_primitive_opt::<Float64Type>()
                    .ok_or_else(|| unexpected("sample value", points.column(1).data_type()))?;
                let mut series: Vec<(i64, f64)> = (0..points.len())
                    .filter(|&i| times.is_valid(i) && values.is_valid(i))
                    .map(|i| (times.value(i).div_euclid(1000), values.value(i)))
                    .filter(|(t, _)| (start_ms..=end_ms).contains(t))
                    .collect();
                // stable: of two samples at one millisecond the later stored wins
                series.sort_by_key(|s| s.0);
                series.dedup_by(|later, earlier| {
                    if later.0 == earlier.0 {
                        *earlier = *later;
                        true
                    } else {
                        false
                    }
                });
                if !series.is_empty() {
                    out.push(Series {
                        labels,
                        samples: series,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        // the same label set from two rows (a name or label string that decodes the same)
        // is one series
        out.dedup_by(|later, earlier| {
            if later.labels != earlier.labels {
                return false;
            }
            earlier.samples.append(&mut later.samples);
            earlier.samples.sort_by_key(|s| s.0);
            earlier.samples.dedup_by_key(|s| s.0);
            true
        });
        Ok(out)
    }

    /// Label sets of the series matching any of `matcher_sets` (all series when empty)
    /// with samples in `[start_ms, end_ms]`, sorted.
    pub async fn series_labels(
        &self,
        matcher_sets: &[Vec<LabelMatcher>],
        start_ms: i64,
        end_ms: i64,
        deadline: Option<Instant>,
    ) -> Result<Vec<Labels>, Error> {
        if start_ms > end_ms {
            return Ok(Vec::new());
        }
        let all = [Vec::new()];
        let sets = if matcher_sets.is_empty() {
            &all[..]
        } else {
            matcher_sets
        };
        let mut found = std::collections::BTreeSet::new();
        for matchers in sets {
            let sql = format!(
                "SELECT metric, labels FROM {PROM_SAMPLES} WHERE {} GROUP BY metric, labels",
                where_clause(matchers, start_ms, end_ms)
            );
            for batch in &self.run(&sql, deadline).await? {
                let (metrics, labels) = label_columns(batch)?;
                for row in 0..batch.num_rows() {
                    if let Some(l) = series_labels(metrics, labels, row)?
                        && LabelMatcher::matches_all(matchers, &l)
                    {
                        found.insert(l);
                    }
                }
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Metric names with samples in `[start_ms, end_ms]`, sorted (the fast path of
    /// `label/__name__/values` without matchers).
    pub async fn metric_names(
        &self,
        start_ms: i64,
        end_ms: i64,
        deadline: Option<Instant>,
    ) -> Result<Vec<String>, Error> {
        if start_ms > end_ms {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT metric FROM {PROM_SAMPLES} WHERE {} GROUP BY metric",
            where_clause(&[], start_ms, end_ms)
        );
        let mut names = std::collections::BTreeSet::new();
        for batch in &self.run(&sql, deadline).await? {
            let metrics = string_column(batch, 0, "metric")?;
            for row in 0..batch.num_rows() {
                if metrics.is_valid(row) && !metrics.value(row).is_empty() {
                    names.insert(metrics.value(row).to_string());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Runs one statement, within `deadline`.
    async fn run(&self, sql: &str, deadline: Option<Instant>) -> Result<Vec<RecordBatch>, Error> {
        let query = self.engine.sql(sql);
        let result = match deadline {
            Some(deadline) => {
                match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), query).await
                {
                    Ok(r) => r,
                    Err(_) => {
                        return Err(Error::Timeout {
                            stage: "series selection",
                        });
                    }
                }
            }
            None => query.await,
        };
        match result {
            Ok(out) => Ok(out.batches),
            Err(e) => Err(Error::Source {
                retryable: e.is_retryable(),
                message: match e {
                    QueryError::Invalid(m) => format!("invalid series query: {m}"),
                    other => other.to_string(),
                },
            }),
        }
    }

    /// Runs `future` on the query runtime and waits for it on this thread, which must be
    /// a blocking one (a runtime worker waiting here would stall its other tasks).
    fn wait<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(Error::Source {
                message: "series selection task ended without an answer".into(),
                retryable: false,
            })
        })
    }
}

/// A [`SamplesSource`] bounded by one query's deadline: what the engine is given.
#[derive(Clone, Debug)]
pub struct DeadlineSource {
    source: SamplesSource,
    deadline: Option<Instant>,
}

impl SeriesSource for DeadlineSource {
    fn select(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, Error> {
        if let Some(deadline) = self.deadline
            && Instant::now() >= deadline
        {
            return Err(Error::Timeout {
                stage: "series selection",
            });
        }
        let source = self.source.clone();
        let matchers = matchers.to_vec();
        let deadline = self.deadline;
        self.source.wait(async move {
            source
                .select_series(&matchers, start_ms, end_ms, deadline)
                .await
        })
    }
}

/// The `WHERE` clause of a selection: the time range, and the metric name when a matcher
/// compares it with a literal.
fn where_clause(matchers: &[LabelMatcher], start_ms: i64, end_ms: i64) -> String {
    let us = |ms: i64| {
        ms.saturating_mul(1000)
            .clamp(-MAX_ABS_TIME_US, MAX_ABS_TIME_US)
    };
    let mut clause = format!(
        "time >= to_timestamp_micros({}) AND time <= to_timestamp_micros({})",
        us(start_ms),
        us(end_ms)
    );
    for m in matchers.iter().filter(|m| m.name == METRIC_NAME) {
        let op = match m.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "<>",
            MatchOp::Regex | MatchOp::NotRegex => continue,
        };
        clause.push_str(&format!(
            " AND metric {op} '{}'",
            m.value.replace('\'', "''")
        ));
    }
    clause
}

fn unexpected(what: &str, data_type: &DataType) -> Error {
    Error::Source {
        message: format!("unexpected type {data_type} of {what} in {PROM_SAMPLES}"),
        retryable: false,
    }
}

fn string_column<'b>(
    batch: &'b RecordBatch,
    index: usize,
    what: &str,
) -> Result<&'b datafusion::arrow::array::StringArray, Error> {
    let column = batch.column(index);
    column
        .as_string_opt::<i32>()
        .ok_or_else(|| unexpected(what, column.data_type()))
}

type StringColumns<'b> = (
    &'b datafusion::arrow::array::StringArray,
    &'b datafusion::arrow::array::StringArray,
);

fn label_columns(batch: &RecordBatch) -> Result<StringColumns<'_>, Error> {
    Ok((
        string_column(batch, 0, "metric")?,
        string_column(batch, 1, "labels")?,
    ))
}

/// The label set of one `(metric, labels)` row; `None` when either is NULL (an id this
/// replica cannot decode yet).
fn series_labels(
    metrics: &datafusion::arrow::array::StringArray,
    labels: &datafusion::arrow::array::StringArray,
    row: usize,
) -> Result<Option<Labels>, Error> {
    if metrics.is_null(row) || labels.is_null(row) {
        return Ok(None);
    }
    let pairs = parse_canonical_labels(labels.value(row)).map_err(|e| Error::Source {
        message: format!("series {}: {e}", metrics.value(row)),
        retryable: false,
    })?;
    let mut set = Labels::from_pairs(pairs);
    set.set(METRIC_NAME, metrics.value(row));
    Ok(Some(set))
}

/// A canonical label string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed label string {text:?} at byte {at}: {what}")]
pub struct LabelsParseError {
    pub text: String,
    pub at: usize,
    pub what: &'static str,
}

/// Parses the canonical form written by
/// [`canonical_labels`](crate::tables::ingested::canonical_labels), `a="x",b="y"`, back
/// into pairs. Values unescape `\\`, `\"` and `\n` (Prometheus' text format escapes);
/// any other escaped character stands for itself. Names run up to `="`, which a valid
/// Prometheus label name never contains.
pub fn parse_canonical_labels(text: &str) -> Result<Vec<(String, String)>, LabelsParseError> {
    let fail = |at: usize, what: &'static str| LabelsParseError {
        text: text.to_string(),
        at,
        what,
    };
    let mut pairs = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let name_end = text[i..]
            .find("=\"")
            .map(|n| i + n)
            .ok_or_else(|| fail(i, "expected name=\"value\""))?;
        if name_end == i {
            return Err(fail(i, "empty label name"));
        }
        let name = &text[i..name_end];
        i = name_end + 2;
        let mut value = String::new();
        let mut closed = false;
        let mut chars = text[i..].char_indices();
        while let Some((offset, c)) = chars.next() {
            match c {
                '"' => {
                    i += offset + 1;
                    closed = true;
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped)) => value.push(escaped),
                    None => return Err(fail(i + offset, "escape at the end")),
                },
                c => value.push(c),
            }
        }
        if !closed {
            return Err(fail(text.len(), "unterminated value"));
        }
        pairs.push((name.to_string(), value));
        match bytes.get(i) {
            None => break,
            Some(b',') if i + 1 < bytes.len() => i += 1,
            Some(_) => return Err(fail(i, "expected ',' between labels")),
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use datafusion::{
        arrow::{
            array::{Float64Array, StringArray, TimestampMicrosecondArray},
            datatypes::{Field, Schema, TimeUnit},
        },
        datasource::MemTable,
    };
    use flowmesh_query_planner::QueryConfig;

    use std::time::Duration;

    use super::*;
    use crate::tables::ingested::canonical_labels;

    #[test]
    fn canonical_labels_round_trip() {
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![],
            vec![("job", "node")],
            vec![("instance", "127.0.0.1:9100"), ("job", "node")],
            vec![("a", "x\"y"), ("b", "C:\\dir\\"), ("c", "line\nnext")],
            vec![
                ("q", "\\\""),
                ("r", "\",b=\""),
                ("s", "é ü 😀"),
                ("t", ",="),
            ],
            vec![("u", "\\n is not a newline"), ("v", "")],
        ];
        for pairs in cases {
            let text = canonical_labels(pairs.iter().copied());
            let parsed = parse_canonical_labels(&text).unwrap();
            let expect: Vec<(String, String)> = pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(parsed, expect, "{text}");
        }
    }

    #[test]
    fn malformed_label_strings_are_errors_not_panics() {
        for bad in [
            "job",
            "job=node",
            "=\"x\"",
            "job=\"node",
            "job=\"node\"x",
            "job=\"node\",",
            "job=\"no\\",
            "a=\"1\";b=\"2\"",
            "é=\"\\",
        ] {
            assert!(parse_canonical_labels(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_canonical_labels(r#"a="\x""#).unwrap(),
            vec![("a".to_string(), "x".to_string())]
        );
    }

    #[test]
    fn where_clause_pushes_time_and_metric_equality() {
        let m = [
            LabelMatcher::new(MatchOp::Equal, "__name__", "it's").unwrap(),
            LabelMatcher::new(MatchOp::Regex, "__name__", "x.*").unwrap(),
            LabelMatcher::new(MatchOp::Equal, "job", "a").unwrap(),
        ];
        assert_eq!(
            where_clause(&m, 1, 2),
            "time >= to_timestamp_micros(1000) AND time <= to_timestamp_micros(2000) AND metric = 'it''s'"
        );
        assert!(where_clause(&[], i64::MIN, i64::MAX).contains("(-4000000000000000000)"));
    }

    /// `prometheus.samples` as plain strings (the planner's tag rewrite is tested in
    /// query-planner; here only the source's SQL and parsing).
    fn engine(rows: &[(i64, &str, &str, f64)]) -> Arc<QueryEngine> {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("metric", DataType::Utf8, false),
            Field::new("labels", DataType::Utf8, false),
            Field::new("value", DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(
                    TimestampMicrosecondArray::from(
                        rows.iter().map(|r| r.0 * 1000).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        Arc::new(
            QueryEngine::new(
                vec![(PROM_SAMPLES.into(), Arc::new(table))],
                &QueryConfig::default(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn selects_series_by_matchers_and_time_from_sql() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let a = r#"instance="h:1",job="node""#;
        let b = r#"instance="h:2",job="node""#;
        let q = r#"job="we\"ird\n""#;
        let source = SamplesSource::new(
            engine(&[
                (3000, "up", a, 1.0),
                (1000, "up", a, 0.0),
                (2000, "up", a, f64::NAN),
                (1000, "up", b, 1.0),
                (5000, "up", b, 1.0),
                (1000, "down", a, 7.0),
                (1000, "q", q, 2.5),
            ]),
            runtime.handle().clone(),
        );
        let view = source.until(Some(Instant::now() + Duration::from_secs(30)));
        let eq = |n: &str, v: &str| LabelMatcher::new(MatchOp::Equal, n, v).unwrap();
        let got = view.select(&[eq("__name__", "up")], 1000, 3000).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].labels.to_string(),
            r#"{__name__="up", instance="h:1", job="node"}"#
        );
        let samples = &got[0].samples;
        assert_eq!((samples[0], samples[2]), ((1000, 0.0), (3000, 1.0)));
        assert!(samples[1].1.is_nan());
        assert_eq!(got[1].samples, vec![(1000, 1.0)]);

        let re = LabelMatcher::new(MatchOp::Regex, "__name__", "up|down").unwrap();
        let got = view
            .select(&[re, eq("instance", "h:1")], 0, 10_000)
            .unwrap();
        let names: Vec<_> = got.iter().map(|s| s.labels.metric_name()).collect();
        assert_eq!(names, vec![Some("down"), Some("up")]);
        let got = view.select(&[eq("job", "we\"ird\n")], 0, 10_000).unwrap();
        assert_eq!(got.len(), 1);
        assert!(
            view.select(&[eq("__name__", "nope")], 0, 10_000)
                .unwrap()
                .is_empty()
        );
        assert!(
            view.select(&[eq("__name__", "up")], 10, 5)
                .unwrap()
                .is_empty()
        );

        // the PromQL engine over it
        let engine = flowmesh_promql::Engine::new(view);
        let v = engine.instant("sum(up)", 5000).unwrap();
        match v {
            flowmesh_promql::Value::Vector(v) => assert_eq!(v[0].value, 2.0),
            other => panic!("{other:?}"),
        }

        let sets = vec![vec![eq("job", "node")]];
        let series = runtime
            .block_on(source.series_labels(&sets, 0, 2000, None))
            .unwrap();
        assert_eq!(series.len(), 3);
        let names = runtime
            .block_on(source.metric_names(0, 10_000, None))
            .unwrap();
        assert_eq!(names, vec!["down", "q", "up"]);

        // a deadline already passed
        let late = source.until(Some(Instant::now()));
        assert!(matches!(
            late.select(&[eq("__name__", "up")], 0, 1),
            Err(Error::Timeout { .. })
        ));
    }
}
