//! The RED tables `flow_metrics.*` as PromQL metrics
//! (docs/decisions/0004-red-metrics-in-promql.md).
//!
//! Each `UInt64` column of a table is a metric named `flowmesh_<table>_…`: counts are
//! counters (`_total`), duration sums and counts in µs are a summary in seconds
//! (`_seconds_sum`, `_seconds_count`), maxima are gauges (`_max_seconds`). The table's key
//! columns are the labels. The list is derived from the schemas in [`crate::tables`], so
//! it cannot drift from them.
//!
//! Rows hold per-second deltas and exist only for seconds with traffic. A counter's value
//! at a whole second `T` is the sum of its column over the series' rows from the start of
//! `T`'s UTC hour to `T`. In every hour with rows it is reported at every whole second
//! from the first row to the end of the hour (never past now), after a `0` one
//! millisecond before that first row, and it ends with a staleness marker at the next
//! hour unless that hour has a row in its first second. So `rate` and `increase` count
//! exactly what the rows hold, up to Prometheus' extrapolation, and every query sees the
//! same value at the same time. A gauge is reported at its row's second, when measured,
//! and is stale a second later.
//!
//! One statement per table reads a selection: the rows of `[hour start of start,
//! end + 1 ms]`, grouped by series (ids until the output). Rows before `start` are
//! summed in SQL (the counters' base). Rows from `start` on are listed per series.

use std::{collections::BTreeMap, sync::LazyLock, time::Instant};

use datafusion::arrow::{
    array::{Array, ArrayRef, AsArray, RecordBatch},
    datatypes::{DataType, Float64Type, Int64Type, Schema},
    util::display::array_value_to_string,
};
use flowmesh_promql::{Error, LabelMatcher, Labels, METRIC_NAME, MatchOp, Series, stale_nan};

use super::{
    PromSource, list_column, sample_columns, sql_string, sql_time, time_clause, unexpected,
};
use crate::tables::{self, network};

const SECOND_MS: i64 = 1000;
const HOUR_MS: i64 = 3_600_000;

/// Column bases whose `_sum`, `_count` and `_max` hold durations in µs, reported as a
/// summary and a gauge in seconds.
const DURATIONS_US: [&str; 2] = ["rrt", "rtt"];
/// Columns that say where a row was stored, not what it measured: not labels.
const NODE_COLUMNS: [&str; 3] = ["region", "cluster", "node"];

/// A metric family's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Summary,
}

impl MetricType {
    /// The type as `/api/v1/metadata` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Summary => "summary",
        }
    }
}

/// A metric family's metadata: what `/api/v1/metadata` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The family name (a counter's with `_total`, a summary's without `_sum`/`_count`).
    pub family: String,
    pub kind: MetricType,
    pub help: String,
}

/// A key column shown as a label.
#[derive(Debug)]
struct LabelColumn {
    name: String,
    /// A number (`server_port`) rather than a dictionary tag.
    numeric: bool,
}

/// A column shown as a metric.
#[derive(Debug)]
struct Measure {
    column: String,
    metric: String,
    gauge: bool,
    /// Stored units per reported unit (1e6 for µs reported in seconds).
    per_unit: f64,
    /// For a gauge: the count column that is non-zero when the gauge was measured.
    measured_by: Option<String>,
    family: String,
    family_type: MetricType,
    help: String,
}

/// One RED table as metrics.
#[derive(Debug)]
struct RedTable {
    table: &'static str,
    labels: Vec<LabelColumn>,
    measures: Vec<Measure>,
}

static CATALOG: LazyLock<Vec<RedTable>> = LazyLock::new(|| {
    vec![
        red_table(tables::APPLICATION, &tables::application_schema()),
        red_table(tables::APPLICATION_MAP, &tables::application_map_schema()),
        red_table(network::NETWORK, &network::network_schema()),
        red_table(network::NETWORK_MAP, &network::network_map_schema()),
    ]
});

fn red_table(table: &'static str, schema: &Schema) -> RedTable {
    let short = table.strip_prefix("flow_metrics.").unwrap_or(table);
    let prefix = format!("flowmesh_{short}");
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut labels = Vec::new();
    let mut measures = Vec::new();
    for field in schema.fields() {
        let name = field.name();
        match field.data_type() {
            DataType::UInt64 => measures.push(measure(&prefix, table, name, &columns)),
            DataType::Utf8 if !NODE_COLUMNS.contains(&name.as_str()) => labels.push(LabelColumn {
                name: name.clone(),
                numeric: false,
            }),
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => labels.push(LabelColumn {
                name: name.clone(),
                numeric: true,
            }),
            _ => {}
        }
    }
    RedTable {
        table,
        labels,
        measures,
    }
}

/// The metric of column `column` of `table` (see the module docs for the names).
fn measure(prefix: &str, table: &str, column: &str, columns: &[&str]) -> Measure {
    let duration = |suffix: &str| {
        column
            .strip_suffix(suffix)
            .filter(|base| DURATIONS_US.contains(base))
    };
    let origin = format!("{table}.{column}");
    if let Some(base) = duration("_max") {
        let metric = format!("{prefix}_{base}_max_seconds");
        let count = format!("{base}_count");
        return Measure {
            column: column.to_string(),
            family: metric.clone(),
            metric,
            gauge: true,
            per_unit: 1e6,
            measured_by: columns.contains(&count.as_str()).then_some(count),
            family_type: MetricType::Gauge,
            help: format!(
                "Largest {} in one second, in seconds ({origin})",
                describe(base)
            ),
        };
    }
    for (suffix, per_unit) in [("_sum", 1e6), ("_count", 1.0)] {
        if let Some(base) = duration(suffix) {
            return Measure {
                column: column.to_string(),
                metric: format!("{prefix}_{base}_seconds{suffix}"),
                gauge: false,
                per_unit,
                measured_by: None,
                family: format!("{prefix}_{base}_seconds"),
                family_type: MetricType::Summary,
                help: format!(
                    "{}, in seconds; counted from the start of each UTC hour ({table}.{base}_sum, {base}_count)",
                    describe(base)
                ),
            };
        }
    }
    let metric = format!("{prefix}_{column}_total");
    Measure {
        column: column.to_string(),
        family: metric.clone(),
        metric,
        gauge: false,
        per_unit: 1.0,
        measured_by: None,
        family_type: MetricType::Counter,
        help: format!(
            "{}; counted from the start of each UTC hour ({origin})",
            describe(column)
        ),
    }
}

/// What a RED column measures.
fn describe(column: &str) -> &'static str {
    match column {
        "request" => "Requests seen",
        "response" => "Responses seen",
        "client_error" => "Responses with a client error status",
        "server_error" => "Responses with a server error status",
        "timeout" => "Requests that got no response in time",
        "rrt" => "Response time, from request to response",
        "packet_tx" => "Packets from client to server",
        "packet_rx" => "Packets from server to client",
        "byte_tx" => "Bytes (whole frames) from client to server",
        "byte_rx" => "Bytes (whole frames) from server to client",
        "l4_byte_tx" => "Payload bytes from client to server",
        "l4_byte_rx" => "Payload bytes from server to client",
        "new_flow" => "Flows started",
        "closed_flow" => "Flows closed",
        "retrans_tx" => "TCP retransmissions from client to server",
        "retrans_rx" => "TCP retransmissions from server to client",
        "zero_win_tx" => "TCP zero windows advertised by the client",
        "zero_win_rx" => "TCP zero windows advertised by the server",
        "rst_tx" => "TCP resets sent by the client",
        "rst_rx" => "TCP resets sent by the server",
        "conn_failed" => "Connections that failed",
        "rtt" => "TCP handshake round-trip time",
        _ => "Flow metric",
    }
}

/// The metadata of every RED metric family, sorted by family name.
pub fn metadata() -> Vec<Metadata> {
    let mut families = BTreeMap::new();
    for measure in CATALOG.iter().flat_map(|t| &t.measures) {
        families
            .entry(measure.family.clone())
            .or_insert_with(|| Metadata {
                family: measure.family.clone(),
                kind: measure.family_type,
                help: measure.help.clone(),
            });
    }
    families.into_values().collect()
}

/// The rows a selection reads for samples in `[start_ms, end_ms]`: from the start of the
/// hour of `start_ms` (the counters' base) to one millisecond past `end_ms` (a row there
/// has its `0` sample at `end_ms`).
fn row_range(start_ms: i64, end_ms: i64) -> (i64, i64) {
    (hour_start(start_ms), end_ms.saturating_add(1))
}

fn hour_start(t_ms: i64) -> i64 {
    t_ms.div_euclid(HOUR_MS).saturating_mul(HOUR_MS)
}

fn second_ceil(t_ms: i64) -> i64 {
    t_ms.div_euclid(SECOND_MS)
        .saturating_add(i64::from(t_ms.rem_euclid(SECOND_MS) != 0))
        .saturating_mul(SECOND_MS)
}

/// The part of a table a selection reads.
#[derive(Debug)]
struct Selection {
    table: &'static RedTable,
    /// The measures whose metric names match every `__name__` matcher.
    measures: Vec<&'static Measure>,
    /// ` AND col = …` for every equality matcher on a key column.
    conditions: String,
}

/// What `table` can contribute to a selection: `None` when no metric name of it matches,
/// when a matcher needs a label it does not have, or when an equality on a number
/// cannot hold.
fn selection(table: &'static RedTable, matchers: &[LabelMatcher]) -> Option<Selection> {
    let mut conditions = String::new();
    for m in matchers.iter().filter(|m| m.name != METRIC_NAME) {
        match table.labels.iter().find(|l| l.name == m.name) {
            // a label the table lacks is the empty string
            None if m.matches("") => {}
            None => return None,
            Some(label) if m.op == MatchOp::Equal => {
                if label.numeric {
                    // the label is the number's decimal text: another text matches nothing
                    let n = m
                        .value
                        .parse::<u64>()
                        .ok()
                        .filter(|n| n.to_string() == m.value)?;
                    conditions.push_str(&format!(" AND {} = {n}", label.name));
                } else {
                    conditions.push_str(&format!(" AND {} = {}", label.name, sql_string(&m.value)));
                }
            }
            Some(_) => {}
        }
    }
    let measures: Vec<&Measure> = table
        .measures
        .iter()
        .filter(|measure| {
            matchers
                .iter()
                .filter(|m| m.name == METRIC_NAME)
                .all(|m| m.matches(&measure.metric))
        })
        .collect();
    (!measures.is_empty()).then_some(Selection {
        table,
        measures,
        conditions,
    })
}

fn selections(matchers: &[LabelMatcher]) -> impl Iterator<Item = Selection> + '_ {
    CATALOG.iter().filter_map(|t| selection(t, matchers))
}

/// A key column's value in a result row as a label value; `None` when NULL (an id this
/// replica cannot decode yet).
fn label_value(column: &ArrayRef, row: usize, table: &str) -> Result<Option<String>, Error> {
    if column.is_null(row) {
        return Ok(None);
    }
    if let Some(strings) = column.as_string_opt::<i32>() {
        return Ok(Some(strings.value(row).to_string()));
    }
    array_value_to_string(column, row)
        .map(Some)
        .map_err(|_| unexpected("key column", table, column.data_type()))
}

/// The label set (without a name) of result row `row`, whose first columns are `table`'s
/// key columns; `None` when one cannot be decoded yet.
fn row_labels(batch: &RecordBatch, row: usize, table: &RedTable) -> Result<Option<Labels>, Error> {
    let mut pairs = Vec::with_capacity(table.labels.len());
    for (i, label) in table.labels.iter().enumerate() {
        match label_value(batch.column(i), row, table.table)? {
            Some(value) => pairs.push((label.name.as_str(), value)),
            None => return Ok(None),
        }
    }
    Ok(Some(Labels::from_pairs(pairs)))
}

fn label_list(table: &RedTable) -> String {
    table
        .labels
        .iter()
        .map(|l| l.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of one series that a selection read.
#[derive(Debug, Clone, Default, PartialEq)]
struct SeriesRows {
    /// Labels without a metric name.
    labels: Labels,
    /// Per value column, the sum over the rows of `[hour start of start, start)`; `None`
    /// when there are none.
    before: Option<Vec<f64>>,
    /// `(second in ms, per value column)` from `start` on, sorted, one per second.
    rows: Vec<(i64, Vec<f64>)>,
}

/// The RED rows of one table for one selection, before they become samples.
#[derive(Debug)]
pub(super) struct Fetched {
    selection: Selection,
    /// The value columns read, in the rows' order.
    columns: Vec<&'static str>,
    series: Vec<SeriesRows>,
}

/// Reads the rows of every RED table that can match `matchers`, for samples in
/// `[start_ms, end_ms]`.
pub(super) async fn fetch(
    source: &PromSource,
    matchers: &[LabelMatcher],
    start_ms: i64,
    end_ms: i64,
    deadline: Option<Instant>,
) -> Result<Vec<Fetched>, Error> {
    let mut out = Vec::new();
    for selection in selections(matchers) {
        out.push(fetch_table(source, selection, start_ms, end_ms, deadline).await?);
    }
    Ok(out)
}

/// The statement that reads `columns` of a selection (see the module docs).
fn select_sql(selection: &Selection, columns: &[&str], start_ms: i64, end_ms: i64) -> String {
    let (from, to) = row_range(start_ms, end_ms);
    let start = sql_time(start_ms);
    let labels = label_list(selection.table);
    let mut sql = format!("SELECT {labels}, count(*) FILTER (WHERE time < {start})");
    for c in columns {
        sql.push_str(&format!(
            ", sum(CAST({c} AS DOUBLE)) FILTER (WHERE time < {start})"
        ));
    }
    sql.push_str(", array_agg(named_struct('t', CAST(time AS BIGINT)");
    for (i, c) in columns.iter().enumerate() {
        sql.push_str(&format!(", 'v{i}', CAST({c} AS DOUBLE)"));
    }
    sql.push_str(&format!(
        ")) FILTER (WHERE time >= {start}) FROM {} WHERE {}{} GROUP BY {labels}",
        selection.table.table,
        time_clause(from, to),
        selection.conditions
    ));
    sql
}

async fn fetch_table(
    source: &PromSource,
    selection: Selection,
    start_ms: i64,
    end_ms: i64,
    deadline: Option<Instant>,
) -> Result<Fetched, Error> {
    let table = selection.table;
    // the measures' columns and the gauges' count columns, in table order
    let columns: Vec<&'static str> = table
        .measures
        .iter()
        .map(|m| m.column.as_str())
        .filter(|c| {
            selection
                .measures
                .iter()
                .any(|m| m.column == *c || m.measured_by.as_deref() == Some(*c))
        })
        .collect();
    let maxima: Vec<bool> = columns
        .iter()
        .map(|c| table.measures.iter().any(|m| m.column == *c && m.gauge))
        .collect();
    let sql = select_sql(&selection, &columns, start_ms, end_ms);
    let labels = table.labels.len();
    let mut series = Vec::new();
    for batch in &source.run(&sql, deadline).await? {
        let before = batch.column(labels);
        let before = before
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| unexpected("row count", table.table, before.data_type()))?;
        let sums = (0..columns.len())
            .map(|i| {
                let c = batch.column(labels + 1 + i);
                c.as_primitive_opt::<Float64Type>()
                    .ok_or_else(|| unexpected("sum", table.table, c.data_type()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let lists = list_column(batch, labels + 1 + columns.len(), table.table)?;
        for row in 0..batch.num_rows() {
            let Some(labels) = row_labels(batch, row, table)? else {
                continue;
            };
            let before = (before.is_valid(row) && before.value(row) > 0).then(|| {
                sums.iter()
                    .map(|s| if s.is_valid(row) { s.value(row) } else { 0.0 })
                    .collect()
            });
            let (times, values) = sample_columns(lists, row, table.table)?;
            let mut rows: Vec<(i64, Vec<f64>)> = (0..times.len())
                .filter(|&i| times.is_valid(i))
                .map(|i| {
                    let second = times
                        .value(i)
                        .div_euclid(1_000_000)
                        .saturating_mul(SECOND_MS);
                    let v = values
                        .iter()
                        .map(|c| if c.is_valid(i) { c.value(i) } else { 0.0 })
                        .collect();
                    (second, v)
                })
                .collect();
            merge_seconds(&mut rows, &maxima);
            series.push(SeriesRows {
                labels,
                before,
                rows,
            });
        }
    }
    Ok(Fetched {
        selection,
        columns,
        series,
    })
}

/// Sorts rows by second and makes one of the rows of each second (several nodes, or a
/// late row): counts add up, maxima (`maxima[i]`) take the largest.
fn merge_seconds(rows: &mut Vec<(i64, Vec<f64>)>, maxima: &[bool]) {
    rows.sort_by_key(|r| r.0);
    rows.dedup_by(|later, earlier| {
        if later.0 != earlier.0 {
            return false;
        }
        for (i, (e, l)) in earlier.1.iter_mut().zip(&later.1).enumerate() {
            if maxima.get(i).copied().unwrap_or(false) {
                *e = e.max(*l);
            } else {
                *e += *l;
            }
        }
        true
    });
}

impl Fetched {
    /// Appends the series of this table matching `matchers` with samples in
    /// `[start_ms, end_ms]` as of `now_ms`, taking their samples from `budget`.
    pub(super) fn series(
        &self,
        matchers: &[LabelMatcher],
        start_ms: i64,
        end_ms: i64,
        now_ms: i64,
        budget: &mut usize,
        out: &mut Vec<Series>,
    ) -> Result<(), Error> {
        let index = |column: &str| self.columns.iter().position(|c| *c == column);
        for rows in &self.series {
            for measure in &self.selection.measures {
                let Some(j) = index(&measure.column) else {
                    continue;
                };
                let mut labels = rows.labels.clone();
                labels.set(METRIC_NAME, measure.metric.as_str());
                if !LabelMatcher::matches_all(matchers, &labels) {
                    continue;
                }
                let window = Window {
                    start_ms,
                    end_ms,
                    now_ms,
                    limit: *budget,
                };
                let samples = if measure.gauge {
                    let measured_by = measure.measured_by.as_deref().and_then(index);
                    gauge_samples(&rows.rows, j, measured_by, measure.per_unit, window)
                } else {
                    let before = rows
                        .before
                        .as_ref()
                        .map(|b| b.get(j).copied().unwrap_or(0.0));
                    counter_samples(before, &rows.rows, j, measure.per_unit, window)
                };
                if samples.is_empty() {
                    continue;
                }
                *budget = budget
                    .checked_sub(samples.len())
                    .ok_or(Error::TooManySamples {
                        stage: "series selection",
                    })?;
                out.push(Series { labels, samples });
            }
        }
        Ok(())
    }
}

/// The samples wanted, `[start_ms, end_ms]`, the time no counter is reported past, and
/// how many samples are allowed (seconds are filled up to one more, no further).
#[derive(Debug, Clone, Copy)]
struct Window {
    start_ms: i64,
    end_ms: i64,
    now_ms: i64,
    limit: usize,
}

impl Window {
    fn push(&self, out: &mut Vec<(i64, f64)>, t: i64, v: f64) {
        if (self.start_ms..=self.end_ms).contains(&t) {
            out.push((t, v));
        }
    }
}

/// A counter's run through one hour: its count so far and the next second to report.
struct Run {
    hour: i64,
    count: f64,
    next: i64,
}

/// A counter's samples (module docs) from the sum of the hour's rows before the window
/// (`before`, when there are some) and the rows from its start on.
fn counter_samples(
    before: Option<f64>,
    rows: &[(i64, Vec<f64>)],
    j: usize,
    per_unit: f64,
    w: Window,
) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    // the last whole second reported: never past the window or now
    let last = w
        .end_ms
        .min(w.now_ms.div_euclid(SECOND_MS).saturating_mul(SECOND_MS));
    let first = second_ceil(w.start_ms);
    // reports the run's count every second from its next one to `until`
    let fill = |out: &mut Vec<(i64, f64)>, run: &Run, until: i64| {
        let mut t = run.next.max(first);
        while t <= until.min(last) && out.len() <= w.limit {
            out.push((t, run.count / per_unit));
            t += SECOND_MS;
        }
    };
    let mut run = before.map(|count| Run {
        hour: hour_start(w.start_ms),
        count,
        next: first,
    });
    for (t, values) in rows {
        let t = *t;
        if let Some(r) = &run {
            if r.hour == hour_start(t) {
                fill(&mut out, r, t - SECOND_MS);
            } else {
                let hour_end = r.hour.saturating_add(HOUR_MS);
                fill(&mut out, r, hour_end - SECOND_MS);
                if t != hour_end {
                    w.push(&mut out, hour_end, stale_nan());
                }
                run = None;
            }
        }
        let r = run.get_or_insert_with(|| {
            w.push(&mut out, t - 1, 0.0);
            Run {
                hour: hour_start(t),
                count: 0.0,
                next: t,
            }
        });
        r.count += values.get(j).copied().unwrap_or(0.0);
        w.push(&mut out, t, r.count / per_unit);
        r.next = t + SECOND_MS;
    }
    if let Some(r) = &run {
        let hour_end = r.hour.saturating_add(HOUR_MS);
        fill(&mut out, r, hour_end - SECOND_MS);
        if hour_end <= w.now_ms {
            w.push(&mut out, hour_end, stale_nan());
        }
    }
    out
}

/// A gauge's samples: the value of each second it was measured (`measured_by` non-zero),
/// stale a second later unless the next second has one too.
fn gauge_samples(
    rows: &[(i64, Vec<f64>)],
    j: usize,
    measured_by: Option<usize>,
    per_unit: f64,
    w: Window,
) -> Vec<(i64, f64)> {
    let measured: Vec<(i64, f64)> = rows
        .iter()
        .filter(|(_, v)| measured_by.is_none_or(|c| v.get(c).is_some_and(|n| *n > 0.0)))
        .map(|(t, v)| (*t, v.get(j).copied().unwrap_or(0.0) / per_unit))
        .collect();
    let mut out = Vec::new();
    for (i, (t, v)) in measured.iter().enumerate() {
        w.push(&mut out, *t, *v);
        if measured
            .get(i + 1)
            .is_none_or(|next| next.0 != t + SECOND_MS)
        {
            w.push(&mut out, t + SECOND_MS, stale_nan());
        }
    }
    out
}

/// Label sets of the RED series matching `matchers` with samples in `[start_ms, end_ms]`.
pub(super) async fn series(
    source: &PromSource,
    matchers: &[LabelMatcher],
    start_ms: i64,
    end_ms: i64,
    deadline: Option<Instant>,
) -> Result<Vec<Labels>, Error> {
    let (from, to) = row_range(start_ms, end_ms);
    let mut out = Vec::new();
    for selection in selections(matchers) {
        let labels = label_list(selection.table);
        let sql = format!(
            "SELECT {labels} FROM {} WHERE {}{} GROUP BY {labels}",
            selection.table.table,
            time_clause(from, to),
            selection.conditions
        );
        for batch in &source.run(&sql, deadline).await? {
            for row in 0..batch.num_rows() {
                let Some(base) = row_labels(batch, row, selection.table)? else {
                    continue;
                };
                for measure in &selection.measures {
                    let mut labels = base.clone();
                    labels.set(METRIC_NAME, measure.metric.as_str());
                    if LabelMatcher::matches_all(matchers, &labels) {
                        out.push(labels);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The RED metric names of the tables with rows for `[start_ms, end_ms]`.
pub(super) async fn names(
    source: &PromSource,
    start_ms: i64,
    end_ms: i64,
    deadline: Option<Instant>,
) -> Result<Vec<String>, Error> {
    let (from, to) = row_range(start_ms, end_ms);
    let mut out = Vec::new();
    for table in CATALOG.iter() {
        let sql = format!(
            "SELECT time FROM {} WHERE {} LIMIT 1",
            table.table,
            time_clause(from, to)
        );
        let rows: usize = source
            .run(&sql, deadline)
            .await?
            .iter()
            .map(RecordBatch::num_rows)
            .sum();
        if rows > 0 {
            out.extend(table.measures.iter().map(|m| m.metric.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
    };

    use datafusion::{
        arrow::{
            array::{StringArray, UInt32Array},
            datatypes::SchemaRef,
        },
        datasource::MemTable,
    };
    use flowmesh_promql::{MatchOp, is_stale_nan};
    use flowmesh_query_planner::{
        QueryConfig, QueryEngine,
        tags::{TagDictionary, tag_kind},
    };

    use super::super::{
        DeadlineSource,
        tests::{instant, node_tags, runtime, source_over, with_empty_tables},
    };
    use super::*;
    use crate::tables::{EdgeKey, RedCounters, application_batch, stored_schema};

    /// A whole UTC hour (2023-11-14T22:00:00Z).
    const H: i64 = 472_222 * HOUR_MS;
    const S: i64 = SECOND_MS;
    const REQUEST: &str = "flowmesh_application_request_total";

    fn counters(request: u64, response: u64, rrt: &[u64]) -> RedCounters {
        RedCounters {
            request,
            response,
            rrt_sum_us: rrt.iter().sum(),
            rrt_count: rrt.len() as u64,
            rrt_max_us: rrt.iter().copied().max().unwrap_or(0),
            ..RedCounters::default()
        }
    }

    /// `flow_metrics.application` rows: (seconds after H, observation point, endpoint,
    /// counters), all served by `nginx:80`.
    fn application(rows: &[(i64, &'static str, &str, RedCounters)]) -> RecordBatch {
        let rows: Vec<(EdgeKey, RedCounters)> = rows
            .iter()
            .map(|(second, point, endpoint, c)| {
                let key = EdgeKey {
                    second: H / 1000 + second,
                    observation_point: point,
                    signal_source: "ebpf",
                    l7_protocol: "HTTP",
                    endpoint: endpoint.to_string(),
                    ip_1: "10.0.0.1".into(),
                    server_port: 80,
                    process_kname_1: "nginx".into(),
                    auto_service_1: "nginx:80".into(),
                    ..EdgeKey::default()
                };
                (key, *c)
            })
            .collect();
        application_batch(&node_tags(), &rows).unwrap()
    }

    /// Server rows of `/a` with gaps, across an hour; `/b` once; `/a` at the client once.
    fn rows() -> RecordBatch {
        let errors = RedCounters {
            client_error: 1,
            server_error: 1,
            ..counters(5, 4, &[500, 1000, 1000, 2500])
        };
        application(&[
            (10, "server", "/a", counters(3, 3, &[500, 500, 2000])),
            (11, "server", "/a", counters(2, 2, &[400, 600])),
            (40, "server", "/a", errors),
            (3599, "server", "/a", counters(4, 0, &[])),
            (3600, "server", "/a", counters(6, 6, &[100; 6])),
            (3700, "server", "/a", counters(1, 1, &[100])),
            (20, "server", "/b", counters(7, 7, &[10; 7])),
            (10, "client", "/a", counters(3, 3, &[600, 600, 2100])),
        ])
    }

    fn view(source: &PromSource) -> DeadlineSource {
        source.until(None)
    }

    /// `metric{endpoint=…,observation_point="server"}`
    fn server(metric: &str, endpoint: &str) -> String {
        format!(r#"{metric}{{endpoint="{endpoint}",observation_point="server"}}"#)
    }

    /// The value of a one-series instant query.
    fn one(view: &DeadlineSource, query: &str, t: i64) -> f64 {
        let got = instant(view, query, t);
        assert_eq!(got.len(), 1, "{query} at {t}: {got:?}");
        got[0].1
    }

    #[test]
    fn counters_count_exactly_what_the_rows_hold() {
        let runtime = runtime();
        let source = source_over(&runtime, vec![(tables::APPLICATION, rows())]);
        let view = view(&source);
        let a = server(REQUEST, "/a");

        // the window holds the series' start (its 0 sample) and ends on a sample: exact
        assert_eq!(one(&view, &format!("increase({a}[1m])"), H + 60 * S), 10.0);
        let rate = one(&view, &format!("rate({a}[1m])"), H + 60 * S);
        assert!((rate - 10.0 / 60.0).abs() < 1e-12, "{rate}");
        let got = instant(&view, &format!("increase({a}[1m])"), H + 60 * S);
        assert_eq!(
            got[0].0,
            r#"{auto_service="nginx:80", endpoint="/a", ip="10.0.0.1", l7_protocol="HTTP", observation_point="server", process_kname="nginx", server_port="80", signal_source="ebpf"}"#
        );
        // a bare selector is the count so far, not the last busy second's
        assert_eq!(one(&view, &a, H + 200 * S), 10.0);
        assert_eq!(
            one(&view, &format!("{a} - {a} offset 20s"), H + 50 * S),
            5.0
        );
        // a window inside a run: Prometheus' usual extrapolation of 19 s of samples to 20
        let inside = one(&view, &format!("increase({a}[20s])"), H + 50 * S);
        assert!((inside - 5.0 * 20.0 / 19.0).abs() < 1e-12, "{inside}");
        // across the hour, where the counter restarts: still exact
        assert_eq!(
            one(&view, &format!("increase({a}[1h])"), H + 3605 * S),
            20.0
        );
        assert_eq!(one(&view, &a, H + 3599 * S), 14.0);
        assert_eq!(one(&view, &a, H + 3650 * S), 6.0);
        assert_eq!(one(&view, &a, H + 3700 * S), 7.0);
        assert_eq!(
            one(
                &view,
                &format!(r#"sum(increase({REQUEST}{{observation_point="server"}}[1h]))"#),
                H + 3599 * S
            ),
            21.0
        );
        // /b has no row in the second hour: it ends there
        let b = server(REQUEST, "/b");
        assert_eq!(one(&view, &b, H + 3599 * S), 7.0);
        assert!(instant(&view, &b, H + 3630 * S).is_empty());
        // nothing before the first row
        assert!(instant(&view, &b, H + 19 * S).is_empty());
        // error counters are 0 while the series has traffic
        let errors = server("flowmesh_application_server_error_total", "/a");
        assert_eq!(one(&view, &errors, H + 20 * S), 0.0);
        assert_eq!(one(&view, &errors, H + 45 * S), 1.0);
        let responses = server("flowmesh_application_response_total", "/a");
        assert_eq!(
            one(&view, &format!("increase({responses}[1m])"), H + 60 * S),
            9.0
        );
        // the client's observation is its own series
        assert_eq!(
            instant(&view, &format!("{REQUEST}{{endpoint=\"/a\"}}"), H + 60 * S).len(),
            2
        );

        // mean response time from the summary: 9 ms over 9 responses
        let mean = one(
            &view,
            &format!(
                "rate({}[1m]) / rate({}[1m])",
                server("flowmesh_application_rrt_seconds_sum", "/a"),
                server("flowmesh_application_rrt_seconds_count", "/a")
            ),
            H + 60 * S,
        );
        assert!((mean - 0.001).abs() < 1e-15, "{mean}");
        // a maximum is a gauge of its second
        let max = server("flowmesh_application_rrt_max_seconds", "/a");
        assert_eq!(one(&view, &max, H + 40 * S), 0.0025);
        assert!(instant(&view, &max, H + 41 * S).is_empty());
        assert_eq!(
            one(&view, &format!("max_over_time({max}[1m])"), H + 60 * S),
            0.0025
        );
        // the second with no response measured no time
        assert!(instant(&view, &format!("max_over_time({max}[2s])"), H + 3599 * S).is_empty());
    }

    #[test]
    fn a_counter_has_the_same_value_in_every_selection() {
        let runtime = runtime();
        let source = source_over(&runtime, vec![(tables::APPLICATION, rows())]);
        let eq = |n: &str, v: &str| LabelMatcher::new(MatchOp::Equal, n, v).unwrap();
        let matchers = [
            eq(METRIC_NAME, REQUEST),
            eq("endpoint", "/a"),
            eq("observation_point", "server"),
        ];
        let select = |start: i64, end: i64| {
            let got = runtime
                .block_on(source.select_series(&matchers, start, end, None))
                .unwrap();
            assert_eq!(got.len(), 1, "{got:?}");
            got.into_iter().next().unwrap().samples
        };
        // from inside the hour: the rows before the range are the base
        let late = select(H + 45_500, H + 50 * S);
        assert_eq!(
            late,
            (46..=50).map(|s| (H + s * S, 10.0)).collect::<Vec<_>>()
        );
        let whole = select(H, H + 50 * S);
        assert_eq!(whole[0], (H + 10 * S - 1, 0.0));
        assert_eq!(
            whole
                .iter()
                .filter(|s| s.0 >= H + 45_500)
                .copied()
                .collect::<Vec<_>>(),
            late
        );
        // a selection builds at most the query's samples
        let small = source.clone().with_max_samples(40);
        let err = runtime
            .block_on(small.select_series(&matchers, H, H + 60 * S, None))
            .unwrap_err();
        assert!(matches!(err, Error::TooManySamples { .. }), "{err:?}");
        let next_hour = select(H + 3000 * S, H + 3650 * S);
        let at = |samples: &[(i64, f64)], t: i64| samples.iter().find(|s| s.0 == t).map(|s| s.1);
        assert_eq!(at(&next_hour, H + 3599 * S), Some(14.0));
        assert_eq!(at(&next_hour, H + 3600 * S - 1), Some(0.0));
        assert_eq!(at(&next_hour, H + 3600 * S), Some(6.0));
        assert_eq!(at(&next_hour, H + 3650 * S), Some(6.0));
    }

    fn window(start_ms: i64, end_ms: i64) -> Window {
        Window {
            start_ms,
            end_ms,
            now_ms: i64::MAX,
            limit: usize::MAX,
        }
    }

    /// Samples with staleness markers written as `None`.
    fn shown(samples: Vec<(i64, f64)>) -> Vec<(i64, Option<f64>)> {
        samples
            .into_iter()
            .map(|(t, v)| (t - H, (!is_stale_nan(v)).then_some(v)))
            .collect()
    }

    #[test]
    fn counter_samples_start_at_zero_fill_seconds_and_end_with_the_hour() {
        let rows = vec![(H + 10 * S, vec![3.0]), (H + 12 * S, vec![2.0])];
        let got = counter_samples(None, &rows, 0, 1.0, window(H, H + 15 * S));
        assert_eq!(
            shown(got),
            vec![
                (9999, Some(0.0)),
                (10_000, Some(3.0)),
                (11_000, Some(3.0)),
                (12_000, Some(5.0)),
                (13_000, Some(5.0)),
                (14_000, Some(5.0)),
                (15_000, Some(5.0)),
            ]
        );
        // never past now
        let w = Window {
            now_ms: H + 13_500,
            ..window(H, H + 15 * S)
        };
        assert_eq!(
            counter_samples(None, &rows, 0, 1.0, w).last(),
            Some(&(H + 13 * S, 5.0))
        );
        // a base from before the window: no 0, the seconds from the window's start
        let got = counter_samples(Some(4.0), &rows, 0, 2.0, window(H + 7_500, H + 10 * S));
        assert_eq!(
            shown(got),
            vec![(8000, Some(2.0)), (9000, Some(2.0)), (10_000, Some(3.5))]
        );
        // the hour ends: stale, then a new run from 0 one millisecond before its row
        let rows = vec![(H + 3599 * S, vec![1.0]), (H + 3601 * S, vec![1.0])];
        let got = counter_samples(None, &rows, 0, 1.0, window(H + 3598 * S, H + 3602 * S));
        assert_eq!(
            shown(got),
            vec![
                (3_598_999, Some(0.0)),
                (3_599_000, Some(1.0)),
                (3_600_000, None),
                (3_600_999, Some(0.0)),
                (3_601_000, Some(1.0)),
                (3_602_000, Some(1.0)),
            ]
        );
        // a row in the next hour's first second: no staleness marker, a 0 before it
        let rows = vec![(H + 3599 * S, vec![5.0]), (H + 3600 * S, vec![9.0])];
        let got = counter_samples(None, &rows, 0, 1.0, window(H + 3599 * S, H + 3600 * S));
        assert_eq!(
            shown(got),
            vec![
                (3_599_000, Some(5.0)),
                (3_599_999, Some(0.0)),
                (3_600_000, Some(9.0)),
            ]
        );
        // a budget stops the filling one sample past it
        let w = Window {
            limit: 3,
            ..window(H, H + 3599 * S)
        };
        let early = vec![(H + 10 * S, vec![3.0]), (H + 12 * S, vec![2.0])];
        assert_eq!(counter_samples(None, &early, 0, 1.0, w).len(), 4);
        // the last hour ended before now: stale at its end
        let rows = vec![(H, vec![1.0])];
        let got = counter_samples(None, &rows, 0, 1.0, window(H + 3599 * S, H + 3700 * S));
        assert_eq!(shown(got), vec![(3_599_000, Some(1.0)), (3_600_000, None)]);
    }

    #[test]
    fn gauge_samples_are_their_seconds_when_measured() {
        let rows = vec![
            (H, vec![7.0, 1.0]),
            (H + S, vec![9.0, 2.0]),
            (H + 2 * S, vec![0.0, 0.0]),
            (H + 5 * S, vec![4.0, 1.0]),
        ];
        let got = gauge_samples(&rows, 0, Some(1), 1.0, window(H, H + 10 * S));
        assert_eq!(
            shown(got),
            vec![
                (0, Some(7.0)),
                (1000, Some(9.0)),
                (2000, None),
                (5000, Some(4.0)),
                (6000, None),
            ]
        );
    }

    #[test]
    fn rows_of_one_second_merge() {
        let mut rows = vec![
            (2000, vec![1.0, 5.0]),
            (1000, vec![2.0, 3.0]),
            (2000, vec![4.0, 2.0]),
        ];
        merge_seconds(&mut rows, &[false, true]);
        assert_eq!(rows, vec![(1000, vec![2.0, 3.0]), (2000, vec![5.0, 5.0])]);
    }

    #[test]
    fn names_labels_and_metadata_follow_the_schemas() {
        let names: Vec<&str> = CATALOG
            .iter()
            .flat_map(|t| t.measures.iter().map(|m| m.metric.as_str()))
            .collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for name in [
            REQUEST,
            "flowmesh_application_timeout_total",
            "flowmesh_application_rrt_seconds_sum",
            "flowmesh_application_rrt_seconds_count",
            "flowmesh_application_rrt_max_seconds",
            "flowmesh_application_map_request_total",
            "flowmesh_network_byte_tx_total",
            "flowmesh_network_rtt_seconds_sum",
            "flowmesh_network_map_rtt_max_seconds",
            "flowmesh_network_map_conn_failed_total",
        ] {
            assert!(names.contains(&name), "{name} missing: {names:?}");
        }
        let labels =
            |t: usize| -> Vec<&str> { CATALOG[t].labels.iter().map(|l| l.name.as_str()).collect() };
        assert_eq!(
            labels(0),
            vec![
                "observation_point",
                "signal_source",
                "l7_protocol",
                "ip",
                "server_port",
                "process_kname",
                "auto_service",
                "endpoint"
            ]
        );
        assert!(labels(1).contains(&"auto_service_0") && labels(1).contains(&"ip_1"));
        assert_eq!(
            labels(2),
            vec!["observation_point", "protocol", "ip", "server_port"]
        );

        let metadata = metadata();
        let of = |family: &str| metadata.iter().find(|m| m.family == family).cloned();
        let request = of(REQUEST).unwrap();
        assert_eq!(request.kind, MetricType::Counter);
        assert!(
            request.help.starts_with("Requests seen"),
            "{}",
            request.help
        );
        assert!(request.help.contains("flow_metrics.application.request"));
        assert_eq!(
            of("flowmesh_application_rrt_seconds").unwrap().kind,
            MetricType::Summary
        );
        assert_eq!(
            of("flowmesh_network_rtt_max_seconds").unwrap().kind,
            MetricType::Gauge
        );
        assert!(of("flowmesh_application_rrt_seconds_sum").is_none());
    }

    #[test]
    fn matchers_push_down_or_rule_a_table_out() {
        let m = |op, n: &str, v: &str| LabelMatcher::new(op, n, v).unwrap();
        let eq = |n: &str, v: &str| m(MatchOp::Equal, n, v);
        let app = &CATALOG[0];
        let s = selection(
            app,
            &[
                eq(METRIC_NAME, REQUEST),
                eq("auto_service", "it's"),
                m(MatchOp::Regex, "endpoint", "/a.*"),
                eq("server_port", "80"),
                m(MatchOp::NotEqual, "ip", "1.2.3.4"),
            ],
        )
        .unwrap();
        let names: Vec<&str> = s.measures.iter().map(|m| m.metric.as_str()).collect();
        assert_eq!(names, vec![REQUEST]);
        assert_eq!(
            s.conditions,
            " AND auto_service = 'it''s' AND server_port = 80"
        );
        let sql = select_sql(&s, &["request"], H + 5 * S, H + 10 * S);
        assert!(
            sql.contains(&format!(
                "FROM flow_metrics.application WHERE time >= to_timestamp_micros({}) AND time <= to_timestamp_micros({}) AND auto_service",
                H * 1000,
                (H + 10 * S + 1) * 1000
            )),
            "{sql}"
        );
        assert!(
            sql.contains("CAST(request AS DOUBLE)") && !sql.contains("response"),
            "{sql}"
        );

        // a gauge reads its count column too
        let s = selection(
            app,
            &[eq(METRIC_NAME, "flowmesh_application_rrt_max_seconds")],
        )
        .unwrap();
        let runtime = runtime();
        let source = source_over(&runtime, vec![(tables::APPLICATION, rows())]);
        let fetched = runtime
            .block_on(fetch_table(&source, s, H, H + 60 * S, None))
            .unwrap();
        assert_eq!(fetched.columns, vec!["rrt_count", "rrt_max"]);

        // ruled out: a label the table lacks, a number that is not one, another table's name
        for matchers in [
            vec![eq(METRIC_NAME, REQUEST), eq("job", "x")],
            vec![eq("server_port", "080")],
            vec![eq("server_port", "")],
            vec![eq("server_port", "x")],
            vec![eq(METRIC_NAME, "flowmesh_application_map_request_total")],
            vec![eq(METRIC_NAME, "flowmesh_application_nope_total")],
            vec![m(MatchOp::Regex, METRIC_NAME, "flowmesh_network.*")],
        ] {
            assert!(selection(app, &matchers).is_none(), "{matchers:?}");
        }
        // an empty label the table lacks matches every series
        let s = selection(
            app,
            &[eq("job", ""), m(MatchOp::Regex, METRIC_NAME, ".*_total")],
        )
        .unwrap();
        assert_eq!(s.measures.len(), 5);
        assert_eq!(
            selections(&[m(MatchOp::Regex, METRIC_NAME, "flowmesh_network.*")]).count(),
            2
        );

        // the same through the source: names, regexes, no rows, no errors
        let eq_name = |n: &str| vec![eq(METRIC_NAME, n)];
        let select = |matchers: &[LabelMatcher]| {
            runtime
                .block_on(source.select_series(matchers, H, H + 60 * S, None))
                .unwrap()
        };
        assert_eq!(select(&eq_name(REQUEST)).len(), 3);
        assert!(select(&eq_name("flowmesh_application_nope_total")).is_empty());
        let both = select(&[
            m(
                MatchOp::Regex,
                METRIC_NAME,
                "flowmesh_application_re(quest|sponse)_total",
            ),
            eq("endpoint", "/b"),
        ]);
        let names: Vec<_> = both.iter().map(|s| s.labels.metric_name()).collect();
        assert_eq!(
            names,
            vec![Some(REQUEST), Some("flowmesh_application_response_total")]
        );
        assert!(select(&[eq(METRIC_NAME, REQUEST), eq("auto_service", "other:1")]).is_empty());
        assert!(select(&[eq(METRIC_NAME, REQUEST), eq("server_port", "81")]).is_empty());

        // series and names
        let series = runtime
            .block_on(source.series_labels(&[eq_name(REQUEST)], H, H + 60 * S, None))
            .unwrap();
        assert_eq!(series.len(), 3);
        let names = runtime
            .block_on(source.metric_names(H, H + 60 * S, None))
            .unwrap();
        assert!(names.contains(&REQUEST.to_string()));
        assert!(
            !names.iter().any(|n| n.starts_with("flowmesh_network")),
            "{names:?}"
        );
    }

    /// A dictionary built while encoding: ids in order of first use.
    #[derive(Debug, Default)]
    struct Dictionary {
        ids: Mutex<HashMap<(String, String), u32>>,
        looked_up: Mutex<Vec<String>>,
    }

    impl Dictionary {
        fn encode(&self, kind: &str, value: &str) -> u32 {
            let mut ids = self.ids.lock().unwrap();
            let next = ids.len() as u32 + 1;
            *ids.entry((kind.to_string(), value.to_string()))
                .or_insert(next)
        }
    }

    impl TagDictionary for Dictionary {
        fn lookup(&self, kind: &str, value: &str) -> Option<u32> {
            self.looked_up.lock().unwrap().push(value.to_string());
            self.ids
                .lock()
                .unwrap()
                .get(&(kind.to_string(), value.to_string()))
                .copied()
        }
        fn decode(&self, kind: &str, id: u32) -> Option<Arc<str>> {
            self.ids
                .lock()
                .unwrap()
                .iter()
                .find(|((k, _), i)| k == kind && **i == id)
                .map(|((_, s), _)| Arc::from(s.as_str()))
        }
    }

    /// `batch` as the shard stores it: tag columns as ids.
    fn stored(batch: &RecordBatch, schema: SchemaRef, dictionary: &Dictionary) -> RecordBatch {
        let columns = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(field, column)| match tag_kind(field) {
                Some(kind) => {
                    let strings = column.as_any().downcast_ref::<StringArray>().unwrap();
                    let ids = strings.iter().map(|s| dictionary.encode(kind, s.unwrap()));
                    Arc::new(UInt32Array::from_iter_values(ids)) as ArrayRef
                }
                None => Arc::clone(column),
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn tags_stored_as_ids_give_the_same_answers() {
        let dictionary = Arc::new(Dictionary::default());
        let schema = stored_schema(&tables::application_schema());
        let batch = stored(&rows(), Arc::clone(&schema), &dictionary);
        let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
        let mut tables = with_empty_tables(Vec::new());
        tables.retain(|(name, _)| name != tables::APPLICATION);
        tables.push((tables::APPLICATION.into(), Arc::new(table)));
        let engine = QueryEngine::new(tables, &QueryConfig::default())
            .unwrap()
            .with_tags(Arc::clone(&dictionary) as Arc<dyn TagDictionary>);
        let runtime = runtime();
        let source = PromSource::new(Arc::new(engine), runtime.handle().clone());
        let view = view(&source);
        let a = format!(
            r#"{REQUEST}{{auto_service="nginx:80",endpoint="/a",observation_point="server"}}"#
        );
        assert_eq!(one(&view, &format!("increase({a}[1m])"), H + 60 * S), 10.0);
        let got = instant(&view, &format!("increase({a}[1h])"), H + 3605 * S);
        assert_eq!(got.len(), 1);
        assert!(got[0].0.contains(r#"process_kname="nginx""#), "{got:?}");
        assert_eq!(got[0].1, 20.0);
        // the equalities were compared as ids: their strings were looked up
        let looked_up = dictionary.looked_up.lock().unwrap().clone();
        assert!(looked_up.contains(&"nginx:80".to_string()), "{looked_up:?}");
        // an unknown service matches nothing
        assert!(
            instant(
                &view,
                &format!(r#"{REQUEST}{{auto_service="nope"}}"#),
                H + 60 * S
            )
            .is_empty()
        );
    }
}
