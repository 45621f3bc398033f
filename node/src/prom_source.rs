//! The PromQL engine's [`SeriesSource`] (DESIGN.md §4, §6;
//! docs/decisions/0003-promql-evaluator.md, 0004-red-metrics-in-promql.md).
//!
//! [`PromSource`] fans one selector out to three kinds of metrics, each read with SQL by
//! the node's [`QueryEngine`] on the query runtime:
//!
//! - `prometheus.samples` (remote_write), here: the metric name is the `metric` column;
//! - the RED tables `flow_metrics.*` as counters and gauges ([`red`]), e.g.
//!   `flowmesh_application_request_total`;
//! - Influx points in `ext_metrics.metrics` as `<measurement>_<field>` ([`influx`]).
//!
//! For every kind, `time` is filtered to the selector's range, so the shard reads only
//! the segments and row groups that overlap it, and an equality on the metric name (or
//! on a RED key column) becomes an SQL comparison, which the planner rewrites to a
//! dictionary id comparison (an unknown name matches nothing). Rows are grouped by
//! series with their samples gathered by `array_agg`: group keys stay dictionary ids
//! until the output, so each series' labels are decoded once, not once per sample.
//! Every other matcher is applied here to the decoded labels. The same label set from
//! two kinds is one series.
//!
//! For `prometheus.samples`, an equality (or inequality) matcher on `__name__` becomes
//! `metric = 'x'`; the canonical `labels` string is parsed back into pairs
//! ([`parse_canonical_labels`]).
//!
//! [`SeriesSource::select`] is synchronous: it spawns the statements on the query runtime
//! and waits for their rows, so it must be called from a blocking thread (the API runs
//! the engine under `spawn_blocking`), never from a runtime worker. The RED samples are
//! built from those rows on the calling thread, off the runtime.
//!
//! Series are identified by their labels only: the node's `region`, `cluster` and `node`
//! columns are not added as labels, so results look as they do in Prometheus.
//!
//! Over a mesh ([`PromSource::over`]), each statement runs at a scope through the node's
//! [`MeshQuery`](crate::mesh::MeshQuery): the filters run on the nodes that hold the rows,
//! and the matching rows of every node meet here (the statements' `array_agg` and
//! `FILTER` aggregates do not split into partials, so rows travel). A RED series is then
//! the mesh's total for its key; remote_write and Influx series are the union of what each
//! node holds. Nodes that did not answer are collected
//! ([`PromSource::missing`]) for the API's warnings.

use std::{
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use datafusion::arrow::{
    array::{Array, AsArray, Float64Array, GenericListArray, Int64Array, RecordBatch, StringArray},
    datatypes::{DataType, Float64Type, Int64Type},
};
use flowmesh_promql::{
    EngineOptions, Error, LabelMatcher, Labels, METRIC_NAME, MatchOp, Series, SeriesSource,
};
use flowmesh_query_planner::{QueryEngine, QueryError};

use crate::tables::ingested::PROM_SAMPLES;

pub mod influx;
pub mod red;

/// Timestamps handed to SQL are clamped to this many µs either side of the epoch (about
/// ±126 000 years): far beyond any stored sample, and safely inside `i64`.
const MAX_ABS_TIME_US: i64 = 4_000_000_000_000_000_000;

/// The node's metrics as a PromQL series source: remote_write samples, the RED tables
/// and Influx points.
#[derive(Clone)]
pub struct PromSource {
    engine: Arc<QueryEngine>,
    runtime: tokio::runtime::Handle,
    /// Samples one selection may build (the RED kind's are generated, not read).
    max_samples: usize,
    /// The mesh and scope statements run at; this node's engine alone when `None`.
    mesh: Option<(Arc<crate::mesh::MeshQuery>, crate::mesh::Scope)>,
    /// Nodes of the scope that did not answer some statement.
    missing: Arc<parking_lot::Mutex<std::collections::BTreeSet<String>>>,
}

impl std::fmt::Debug for PromSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromSource").finish_non_exhaustive()
    }
}

/// What one selection read, before the RED rows become samples.
#[derive(Debug, Default)]
struct Fetched {
    /// Series read as they are stored (remote_write samples, Influx points).
    stored: Vec<Series>,
    /// RED rows, one entry per table.
    red: Vec<red::Fetched>,
}

impl PromSource {
    /// A source that runs its SQL with `engine` on `runtime` (the node's query runtime),
    /// building at most the engine's default `max_samples` per selection.
    pub fn new(engine: Arc<QueryEngine>, runtime: tokio::runtime::Handle) -> Self {
        Self {
            engine,
            runtime,
            max_samples: EngineOptions::default().max_samples,
            mesh: None,
            missing: Arc::default(),
        }
    }

    /// This source reading the nodes of `scope` through `mesh`, with its own list of
    /// missing nodes (one per query).
    pub fn over(&self, mesh: Arc<crate::mesh::MeshQuery>, scope: crate::mesh::Scope) -> Self {
        Self {
            mesh: Some((mesh, scope)),
            missing: Arc::default(),
            ..self.clone()
        }
    }

    /// The nodes that did not answer a statement of this source so far, sorted.
    pub fn missing(&self) -> Vec<String> {
        self.missing.lock().iter().cloned().collect()
    }

    /// This source, building at most `max_samples` per selection (the query's limit).
    pub fn with_max_samples(mut self, max_samples: usize) -> Self {
        self.max_samples = max_samples;
        self
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
        let fetched = self.fetch(matchers, start_ms, end_ms, deadline).await?;
        self.finish(fetched, matchers, start_ms, end_ms, now_ms())
    }

    /// Reads what a selection needs from every kind.
    async fn fetch(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
        deadline: Option<Instant>,
    ) -> Result<Fetched, Error> {
        if start_ms > end_ms {
            return Ok(Fetched::default());
        }
        let mut stored = self
            .samples_series(matchers, start_ms, end_ms, deadline)
            .await?;
        stored.extend(influx::select(self, matchers, start_ms, end_ms, deadline).await?);
        let red = red::fetch(self, matchers, start_ms, end_ms, deadline).await?;
        Ok(Fetched { stored, red })
    }

    /// The series of a selection from what [`Self::fetch`] read: RED rows become
    /// samples as of `now_ms`, and one label set is one series.
    fn finish(
        &self,
        fetched: Fetched,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<Series>, Error> {
        let mut budget = self.max_samples;
        let mut out = fetched.stored;
        for red in fetched.red {
            red.series(matchers, start_ms, end_ms, now_ms, &mut budget, &mut out)?;
        }
        Ok(merge_series(out))
    }

    /// Series of `prometheus.samples`.
    async fn samples_series(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
        deadline: Option<Instant>,
    ) -> Result<Vec<Series>, Error> {
        let sql = format!(
            "SELECT metric, labels, array_agg(named_struct('t', CAST(time AS BIGINT), 'v', value)) AS samples \
             FROM {PROM_SAMPLES} WHERE {} GROUP BY metric, labels",
            where_clause(matchers, start_ms, end_ms)
        );
        let batches = self.run(&sql, deadline).await?;
        matching_series(
            &batches,
            2,
            PROM_SAMPLES,
            matchers,
            (start_ms, end_ms),
            |batch, row| {
                let metrics = string_column(batch, 0, "metric", PROM_SAMPLES)?;
                let labels = string_column(batch, 1, "labels", PROM_SAMPLES)?;
                series_labels(metrics, labels, row)
            },
        )
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
                let metrics = string_column(batch, 0, "metric", PROM_SAMPLES)?;
                let labels = string_column(batch, 1, "labels", PROM_SAMPLES)?;
                for row in 0..batch.num_rows() {
                    if let Some(l) = series_labels(metrics, labels, row)?
                        && LabelMatcher::matches_all(matchers, &l)
                    {
                        found.insert(l);
                    }
                }
            }
            found.extend(red::series(self, matchers, start_ms, end_ms, deadline).await?);
            found.extend(influx::series(self, matchers, start_ms, end_ms, deadline).await?);
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
            let metrics = string_column(batch, 0, "metric", PROM_SAMPLES)?;
            for row in 0..batch.num_rows() {
                if metrics.is_valid(row) && !metrics.value(row).is_empty() {
                    names.insert(metrics.value(row).to_string());
                }
            }
        }
        names.extend(red::names(self, start_ms, end_ms, deadline).await?);
        names.extend(influx::names(self, start_ms, end_ms, deadline).await?);
        Ok(names.into_iter().collect())
    }

    /// Runs one statement, within `deadline`.
    async fn run(&self, sql: &str, deadline: Option<Instant>) -> Result<Vec<RecordBatch>, Error> {
        let query = async {
            match &self.mesh {
                None => self.engine.sql(sql).await,
                Some((mesh, scope)) => {
                    let answer = mesh.sql(sql, scope.clone(), false).await?;
                    self.missing.lock().extend(answer.missing);
                    Ok(answer.output)
                }
            }
        };
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

/// A [`PromSource`] bounded by one query's deadline: what the engine is given.
#[derive(Clone, Debug)]
pub struct DeadlineSource {
    source: PromSource,
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
        let owned = matchers.to_vec();
        let deadline = self.deadline;
        let fetched = self
            .source
            .wait(async move { source.fetch(&owned, start_ms, end_ms, deadline).await })?;
        self.source
            .finish(fetched, matchers, start_ms, end_ms, now_ms())
    }
}

/// The wall clock in ms since the epoch (RED counters are never reported past it).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `to_timestamp_micros(…)` of a time in ms, clamped to [`MAX_ABS_TIME_US`].
fn sql_time(ms: i64) -> String {
    let us = ms
        .saturating_mul(1000)
        .clamp(-MAX_ABS_TIME_US, MAX_ABS_TIME_US);
    format!("to_timestamp_micros({us})")
}

/// `time` within `[start_ms, end_ms]`.
fn time_clause(start_ms: i64, end_ms: i64) -> String {
    format!(
        "time >= {} AND time <= {}",
        sql_time(start_ms),
        sql_time(end_ms)
    )
}

/// A string literal in SQL.
fn sql_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The `WHERE` clause of a `prometheus.samples` selection: the time range, and the
/// metric name when a matcher compares it with a literal.
fn where_clause(matchers: &[LabelMatcher], start_ms: i64, end_ms: i64) -> String {
    let mut clause = time_clause(start_ms, end_ms);
    for m in matchers.iter().filter(|m| m.name == METRIC_NAME) {
        let op = match m.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "<>",
            MatchOp::Regex | MatchOp::NotRegex => continue,
        };
        clause.push_str(&format!(" AND metric {op} {}", sql_string(&m.value)));
    }
    clause
}

fn unexpected(what: &str, table: &str, data_type: &DataType) -> Error {
    Error::Source {
        message: format!("unexpected type {data_type} of {what} in {table}"),
        retryable: false,
    }
}

fn string_column<'b>(
    batch: &'b RecordBatch,
    index: usize,
    what: &str,
    table: &str,
) -> Result<&'b StringArray, Error> {
    let column = batch.column(index);
    column
        .as_string_opt::<i32>()
        .ok_or_else(|| unexpected(what, table, column.data_type()))
}

fn list_column<'b>(
    batch: &'b RecordBatch,
    index: usize,
    table: &str,
) -> Result<&'b GenericListArray<i32>, Error> {
    let column = batch.column(index);
    column
        .as_list_opt::<i32>()
        .ok_or_else(|| unexpected("samples", table, column.data_type()))
}

/// One row's list of `named_struct('t', time µs, 'v…', value, …)`: the times and the
/// value columns (an empty list for a NULL one).
fn sample_columns(
    list: &GenericListArray<i32>,
    row: usize,
    table: &str,
) -> Result<(Int64Array, Vec<Float64Array>), Error> {
    if list.is_null(row) {
        return Ok((Int64Array::from(Vec::<i64>::new()), Vec::new()));
    }
    let points = list.value(row);
    let points = points
        .as_struct_opt()
        .ok_or_else(|| unexpected("samples", table, points.data_type()))?;
    let times = points
        .column(0)
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| unexpected("sample time", table, points.column(0).data_type()))?
        .clone();
    let values = points.columns()[1..]
        .iter()
        .map(|c| {
            c.as_primitive_opt::<Float64Type>()
                .cloned()
                .ok_or_else(|| unexpected("sample value", table, c.data_type()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((times, values))
}

/// One row's `(time µs, value)` list as samples in `[start_ms, end_ms]`, sorted by time;
/// of two samples at one millisecond the later stored wins.
fn points(
    list: &GenericListArray<i32>,
    row: usize,
    start_ms: i64,
    end_ms: i64,
    table: &str,
) -> Result<Vec<(i64, f64)>, Error> {
    let (times, values) = sample_columns(list, row, table)?;
    let Some(values) = values.first() else {
        return Ok(Vec::new());
    };
    let mut series: Vec<(i64, f64)> = (0..times.len())
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
    Ok(series)
}

/// The series of `batches` whose labels (`labels_of` a row; `None` skips it) match every
/// matcher, with the samples of their list column `samples` in `[start_ms, end_ms]`;
/// series without samples there are left out.
fn matching_series(
    batches: &[RecordBatch],
    samples: usize,
    table: &str,
    matchers: &[LabelMatcher],
    (start_ms, end_ms): (i64, i64),
    labels_of: impl Fn(&RecordBatch, usize) -> Result<Option<Labels>, Error>,
) -> Result<Vec<Series>, Error> {
    let mut out = Vec::new();
    for batch in batches {
        let lists = list_column(batch, samples, table)?;
        for row in 0..batch.num_rows() {
            let Some(labels) = labels_of(batch, row)? else {
                continue;
            };
            if !LabelMatcher::matches_all(matchers, &labels) {
                continue;
            }
            let points = points(lists, row, start_ms, end_ms, table)?;
            if !points.is_empty() {
                out.push(Series {
                    labels,
                    samples: points,
                });
            }
        }
    }
    Ok(out)
}

/// Sorts series by labels; the same label set from two rows or two kinds (a name or
/// label string that decodes the same) is one series.
fn merge_series(mut series: Vec<Series>) -> Vec<Series> {
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    series.dedup_by(|later, earlier| {
        if later.labels != earlier.labels {
            return false;
        }
        earlier.samples.append(&mut later.samples);
        earlier.samples.sort_by_key(|s| s.0);
        earlier.samples.dedup_by_key(|s| s.0);
        true
    });
    series
}

/// The label set of one `prometheus.samples` row; `None` when its metric or labels are
/// NULL (an id this replica cannot decode yet).
fn series_labels(
    metrics: &StringArray,
    labels: &StringArray,
    row: usize,
) -> Result<Option<Labels>, Error> {
    if metrics.is_null(row) || labels.is_null(row) {
        return Ok(None);
    }
    canonical_series_labels(metrics.value(row), labels.value(row), |n| n).map(Some)
}

/// A series' label set from its metric name and canonical label string, each label name
/// passed through `label_name`.
fn canonical_series_labels(
    name: &str,
    canonical: &str,
    label_name: impl Fn(String) -> String,
) -> Result<Labels, Error> {
    let pairs = parse_canonical_labels(canonical).map_err(|e| Error::Source {
        message: format!("series {name}: {e}"),
        retryable: false,
    })?;
    let mut set = Labels::from_pairs(pairs.into_iter().map(|(n, v)| (label_name(n), v)));
    set.set(METRIC_NAME, name);
    Ok(set)
}

/// The canonical label form's parser lives with the SQL function that reads it.
pub use flowmesh_query_planner::labels::{LabelsParseError, parse_canonical_labels};

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
    use crate::tables::{
        NodeTags,
        ingested::{EXT_METRICS, ExtMetricRows, SampleRows, canonical_labels},
    };

    /// A query runtime like the node's.
    pub(super) fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// `batch` with its dictionary columns (as ingest builds them) cast to plain strings,
    /// as the planner shows tag columns.
    pub(super) fn plain(batch: RecordBatch) -> RecordBatch {
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            match column.data_type() {
                DataType::Dictionary(_, value) => {
                    let cast = datafusion::arrow::compute::cast(column, value).unwrap();
                    fields.push(
                        field
                            .as_ref()
                            .clone()
                            .with_data_type(value.as_ref().clone()),
                    );
                    columns.push(cast);
                }
                _ => {
                    fields.push(field.as_ref().clone());
                    columns.push(Arc::clone(column));
                }
            }
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    type Tables = Vec<(String, Arc<dyn datafusion::catalog::TableProvider>)>;

    /// `tables` (one batch each), and every other table the source reads, empty, with
    /// tags as strings.
    pub(super) fn with_empty_tables(tables: Vec<(&str, RecordBatch)>) -> Tables {
        let mut providers: Tables = tables
            .into_iter()
            .map(|(name, batch)| {
                let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
                let table: Arc<dyn datafusion::catalog::TableProvider> = Arc::new(table);
                (name.to_string(), table)
            })
            .collect();
        use crate::tables::{self, ingested, network};
        for (name, schema) in [
            (PROM_SAMPLES, ingested::samples_schema()),
            (EXT_METRICS, ingested::ext_metrics_schema()),
            (tables::APPLICATION, tables::application_schema()),
            (tables::APPLICATION_MAP, tables::application_map_schema()),
            (network::NETWORK, network::network_schema()),
            (network::NETWORK_MAP, network::network_map_schema()),
        ] {
            if !providers.iter().any(|(n, _)| n == name) {
                let table = MemTable::try_new(schema, vec![vec![]]).unwrap();
                providers.push((name.to_string(), Arc::new(table)));
            }
        }
        providers
    }

    /// A source over `tables` (one batch each) and the other tables empty, strings as
    /// they are.
    pub(super) fn source_over(
        runtime: &tokio::runtime::Runtime,
        tables: Vec<(&str, RecordBatch)>,
    ) -> PromSource {
        let engine = QueryEngine::new(with_empty_tables(tables), &QueryConfig::default()).unwrap();
        PromSource::new(Arc::new(engine), runtime.handle().clone())
    }

    pub(super) fn node_tags() -> NodeTags {
        NodeTags {
            region: "r".into(),
            cluster: "c".into(),
            node: "n".into(),
        }
    }

    /// `prometheus.samples` rows: (ms, metric, canonical labels, value).
    pub(super) fn samples_batch(rows: &[(i64, &str, &str, f64)]) -> RecordBatch {
        let mut out = SampleRows::default();
        for (t, metric, labels, value) in rows {
            out.times_us.push(t * 1000);
            out.metric.push(metric);
            out.labels.push(labels);
            out.values.push(*value);
        }
        plain(out.batch(&node_tags()).unwrap())
    }

    /// An `ext_metrics.metrics` row: (ms, measurement, canonical tags, field, number,
    /// string).
    pub(super) type ExtRow<'a> = (i64, &'a str, &'a str, &'a str, Option<f64>, Option<&'a str>);

    pub(super) fn ext_batch(rows: &[ExtRow<'_>]) -> RecordBatch {
        let mut out = ExtMetricRows::default();
        for (t, measurement, tags, field, value, string) in rows {
            out.times_us.push(t * 1000);
            out.measurement.push(measurement);
            out.tags.push(tags);
            out.field.push(field);
            out.values.push(*value);
            out.strings.push(string.map(str::to_string));
        }
        plain(out.batch(&node_tags()).unwrap())
    }

    /// An instant query's vector as (labels, value), sorted by labels.
    pub(super) fn instant(view: &DeadlineSource, query: &str, t_ms: i64) -> Vec<(String, f64)> {
        let engine = flowmesh_promql::Engine::new(view.clone());
        match engine.instant(query, t_ms).unwrap() {
            flowmesh_promql::Value::Vector(v) => {
                let mut out: Vec<(String, f64)> = v
                    .into_iter()
                    .map(|s| (s.labels.to_string(), s.value))
                    .collect();
                out.sort_by(|a, b| a.0.cmp(&b.0));
                out
            }
            other => panic!("{query}: {other:?}"),
        }
    }

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
        let tables = with_empty_tables(vec![(PROM_SAMPLES, batch)]);
        Arc::new(QueryEngine::new(tables, &QueryConfig::default()).unwrap())
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
        let source = PromSource::new(
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

    #[test]
    fn one_source_fans_out_to_every_kind() {
        let runtime = runtime();
        let t = 1_700_000_000_000;
        let app = crate::tables::application_batch(
            &node_tags(),
            &[(
                crate::tables::EdgeKey {
                    second: t / 1000,
                    observation_point: "server",
                    l7_protocol: "HTTP",
                    auto_service_1: "nginx:80".into(),
                    ..Default::default()
                },
                crate::tables::RedCounters {
                    request: 2,
                    ..Default::default()
                },
            )],
        )
        .unwrap();
        let source = source_over(
            &runtime,
            vec![
                (
                    PROM_SAMPLES,
                    samples_batch(&[
                        (t, "up", r#"job="a""#, 1.0),
                        (t, "weather_temperature", r#"location="Brno""#, 9.0),
                    ]),
                ),
                (
                    EXT_METRICS,
                    ext_batch(&[
                        (
                            t,
                            "weather",
                            r#"location="Prague""#,
                            "temperature",
                            Some(25.3),
                            None,
                        ),
                        (
                            t + 1000,
                            "weather",
                            r#"location="Brno""#,
                            "temperature",
                            Some(-1.5),
                            None,
                        ),
                    ]),
                ),
                (crate::tables::APPLICATION, app),
            ],
        );
        let names = runtime
            .block_on(source.metric_names(0, t + 10_000, None))
            .unwrap();
        for name in [
            "up",
            "weather_temperature",
            "flowmesh_application_request_total",
        ] {
            assert!(names.contains(&name.to_string()), "{name}: {names:?}");
        }
        // the same label set from two kinds is one series
        let eq = |n: &str, v: &str| LabelMatcher::new(MatchOp::Equal, n, v).unwrap();
        let got = runtime
            .block_on(source.select_series(
                &[
                    eq(METRIC_NAME, "weather_temperature"),
                    eq("location", "Brno"),
                ],
                t,
                t + 1000,
                None,
            ))
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples, vec![(t, 9.0), (t + 1000, -1.5)]);
        // every series: 2 remote_written, Prague, and the 8 RED metrics of one key
        let any = LabelMatcher::new(MatchOp::Regex, METRIC_NAME, ".+").unwrap();
        let all = runtime
            .block_on(source.series_labels(&[vec![any.clone()]], t, t + 1000, None))
            .unwrap();
        assert_eq!(all.len(), 11, "{all:?}");
        let prague = runtime
            .block_on(source.series_labels(&[vec![any, eq("location", "Prague")]], t, t, None))
            .unwrap();
        assert_eq!(prague.len(), 1);
        // through the engine, one series per kind
        let view = source.until(None);
        let got = instant(
            &view,
            r#"{__name__=~"up|weather_temperature|flowmesh_application_request_total"}"#,
            t + 1000,
        );
        assert_eq!(got.len(), 4, "{got:?}");
    }
}
