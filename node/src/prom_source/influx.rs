//! Influx line protocol points (`ext_metrics.metrics`) as PromQL metrics
//! (docs/decisions/0004-red-metrics-in-promql.md).
//!
//! Each numeric field is a metric `<measurement>_<field>` whose labels are the point's
//! tags, with the characters Prometheus does not allow in names replaced by `_`
//! ([`metric_name`], [`label_name`]). Its samples are the points as written. String
//! fields are not samples.
//!
//! Names are not stored, so a `__name__` matcher is first matched against the
//! `(measurement, field)` pairs with points in the range (one statement over two id
//! columns); the samples are then read for the matching pairs only.

use std::time::Instant;

use datafusion::arrow::array::{Array, RecordBatch};
use flowmesh_promql::{Error, LabelMatcher, Labels, METRIC_NAME, Series};

use super::{
    PromSource, canonical_series_labels, matching_series, sql_string, string_column, time_clause,
};
use crate::tables::ingested::EXT_METRICS;

/// Fields a name matcher selects by listing them in SQL, at most; with more, the names
/// are matched after reading.
const MAX_LISTED_FIELDS: usize = 256;

/// The metric name of a field: `<measurement>_<field>`, every character outside
/// `[a-zA-Z0-9_:]` replaced by `_`, and `_` before a leading digit (Prometheus' escaping
/// of names it does not allow).
pub fn metric_name(measurement: &str, field: &str) -> String {
    escape(&format!("{measurement}_{field}"), |c| {
        c.is_ascii_alphanumeric() || c == '_' || c == ':'
    })
}

/// A tag key as a label name: every character outside `[a-zA-Z0-9_]` replaced by `_`,
/// and `_` before a leading digit.
pub fn label_name(tag: &str) -> String {
    escape(tag, |c| c.is_ascii_alphanumeric() || c == '_')
}

fn escape(name: &str, allowed: impl Fn(char) -> bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The `WHERE` clause's fields: `Some("")` for every field, `Some(" AND (…)")` for the
/// fields whose names match the `__name__` matchers, `None` when none does.
async fn fields_clause(
    source: &PromSource,
    matchers: &[LabelMatcher],
    start_ms: i64,
    end_ms: i64,
    deadline: Option<Instant>,
) -> Result<Option<String>, Error> {
    let names: Vec<&LabelMatcher> = matchers.iter().filter(|m| m.name == METRIC_NAME).collect();
    if names.is_empty() {
        return Ok(Some(String::new()));
    }
    let fields: Vec<(String, String)> = numeric_fields(source, start_ms, end_ms, deadline)
        .await?
        .into_iter()
        .filter(|(m, f)| {
            let name = metric_name(m, f);
            names.iter().all(|n| n.matches(&name))
        })
        .collect();
    if fields.is_empty() {
        return Ok(None);
    }
    if fields.len() > MAX_LISTED_FIELDS {
        return Ok(Some(String::new()));
    }
    let listed: Vec<String> = fields
        .iter()
        .map(|(m, f)| {
            format!(
                "(measurement = {} AND field = {})",
                sql_string(m),
                sql_string(f)
            )
        })
        .collect();
    Ok(Some(format!(" AND ({})", listed.join(" OR "))))
}

/// `(measurement, field)` of the numeric fields with points in `[start_ms, end_ms]`.
async fn numeric_fields(
    source: &PromSource,
    start_ms: i64,
    end_ms: i64,
    deadline: Option<Instant>,
) -> Result<Vec<(String, String)>, Error> {
    let sql = format!(
        "SELECT measurement, field FROM {EXT_METRICS} WHERE {} AND value IS NOT NULL \
         GROUP BY measurement, field",
        time_clause(start_ms, end_ms)
    );
    let mut out = Vec::new();
    for batch in &source.run(&sql, deadline).await? {
        let measurements = string_column(batch, 0, "measurement", EXT_METRICS)?;
        let fields = string_column(batch, 1, "field", EXT_METRICS)?;
        for row in 0..batch.num_rows() {
            if measurements.is_valid(row) && fields.is_valid(row) {
                out.push((
                    measurements.value(row).to_string(),
                    fields.value(row).to_string(),
                ));
            }
        }
    }
    Ok(out)
}

/// The label set of a result row whose first columns are measurement, field and tags;
/// `None` when one is NULL (an id this replica cannot decode yet).
fn row_labels(batch: &RecordBatch, row: usize) -> Result<Option<Labels>, Error> {
    let measurements = string_column(batch, 0, "measurement", EXT_METRICS)?;
    let fields = string_column(batch, 1, "field", EXT_METRICS)?;
    let tags = string_column(batch, 2, "tags", EXT_METRICS)?;
    if measurements.is_null(row) || fields.is_null(row) || tags.is_null(row) {
        return Ok(None);
    }
    let name = metric_name(measurements.value(row), fields.value(row));
    canonical_series_labels(&name, tags.value(row), |n| label_name(&n)).map(Some)
}

/// Influx series matching `matchers` with points in `[start_ms, end_ms]`.
pub(super) async fn select(
    source: &PromSource,
    matchers: &[LabelMatcher],
    start_ms: i64,
    end_ms: i64,
    deadline: Option<Instant>,
) -> Result<Vec<Series>, Error> {
    let Some(fields) = fields_clause(source, matchers, start_ms, end_ms, deadline).await? else {
        return Ok(Vec::new());
    };
    let sql = format!(
        "SELECT measurement, field, tags, \
         array_agg(named_struct('t', CAST(time AS BIGINT), 'v', value)) AS samples \
         FROM {EXT_METRICS} WHERE {} AND value IS NOT NULL{fields} \
         GROUP BY measurement, field, tags",
        time_clause(start_ms, end_ms)
    );
    let batches = source.run(&sql, deadline).await?;
    matching_series(
        &batches,
        3,
        EXT_METRICS,
        matchers,
        (start_ms, end_ms),
        row_labels,
    )
}

/// Label sets of the Influx series matching `matchers` with points in
/// `[start_ms, end_ms]`.
pub(super) async fn series(
    source: &PromSource,
    matchers: &[LabelMatcher],
    start_ms: i64,
    end_ms: i64,
    deadline: Option<Instant>,
) -> Result<Vec<Labels>, Error> {
    let Some(fields) = fields_clause(source, matchers, start_ms, end_ms, deadline).await? else {
        return Ok(Vec::new());
    };
    let sql = format!(
        "SELECT measurement, field, tags FROM {EXT_METRICS} \
         WHERE {} AND value IS NOT NULL{fields} GROUP BY measurement, field, tags",
        time_clause(start_ms, end_ms)
    );
    let mut out = Vec::new();
    for batch in &source.run(&sql, deadline).await? {
        for row in 0..batch.num_rows() {
            if let Some(labels) = row_labels(batch, row)?
                && LabelMatcher::matches_all(matchers, &labels)
            {
                out.push(labels);
            }
        }
    }
    Ok(out)
}

/// Metric names of the numeric fields with points in `[start_ms, end_ms]`.
pub(super) async fn names(
    source: &PromSource,
    start_ms: i64,
    end_ms: i64,
    deadline: Option<Instant>,
) -> Result<Vec<String>, Error> {
    Ok(numeric_fields(source, start_ms, end_ms, deadline)
        .await?
        .iter()
        .map(|(m, f)| metric_name(m, f))
        .collect())
}

#[cfg(test)]
mod tests {
    use flowmesh_promql::MatchOp;

    use super::super::tests::{ext_batch, instant, runtime, source_over};
    use super::*;

    #[test]
    fn names_are_escaped_as_prometheus_does() {
        assert_eq!(metric_name("cpu", "usage_user"), "cpu_usage_user");
        assert_eq!(metric_name("cpu-load", "usage.user"), "cpu_load_usage_user");
        assert_eq!(metric_name("a:b", "c d"), "a:b_c_d");
        assert_eq!(metric_name("1m", "x"), "_1m_x");
        assert_eq!(metric_name("é", "ü"), "___");
        assert_eq!(label_name("host-name"), "host_name");
        assert_eq!(label_name("a:b"), "a_b");
        assert_eq!(label_name("9x"), "_9x");
        assert_eq!(label_name("location"), "location");
    }

    const T: i64 = 1_700_000_000_000;

    fn source(runtime: &tokio::runtime::Runtime) -> PromSource {
        let rows = ext_batch(&[
            (
                T,
                "weather",
                r#"kind="a b",location="Prague""#,
                "temperature",
                Some(25.3),
                None,
            ),
            (
                T,
                "weather",
                r#"kind="a b",location="Prague""#,
                "humidity",
                Some(60.0),
                None,
            ),
            (
                T,
                "weather",
                r#"kind="a b",location="Prague""#,
                "note",
                None,
                Some("sunny"),
            ),
            (
                T + 1000,
                "weather",
                r#"kind="a b",location="Prague""#,
                "temperature",
                Some(26.0),
                None,
            ),
            (
                T,
                "weather",
                r#"location="Brno""#,
                "temperature",
                Some(-1.5),
                None,
            ),
            (
                T,
                "cpu-load",
                r#"host-name="h1""#,
                "usage.user",
                Some(0.5),
                None,
            ),
        ]);
        source_over(runtime, vec![(EXT_METRICS, rows)])
    }

    #[test]
    fn fields_are_metrics_with_their_tags() {
        let runtime = runtime();
        let source = source(&runtime);
        let view = source.until(None);
        assert_eq!(
            instant(&view, "weather_temperature", T + 1000),
            vec![
                (
                    r#"{__name__="weather_temperature", kind="a b", location="Prague"}"#.into(),
                    26.0
                ),
                (
                    r#"{__name__="weather_temperature", location="Brno"}"#.into(),
                    -1.5
                ),
            ]
        );
        assert_eq!(
            instant(&view, r#"weather_temperature{location="Prague"}"#, T),
            vec![(
                r#"{__name__="weather_temperature", kind="a b", location="Prague"}"#.into(),
                25.3
            )]
        );
        assert_eq!(
            instant(&view, r#"cpu_load_usage_user{host_name="h1"}"#, T),
            vec![(
                r#"{__name__="cpu_load_usage_user", host_name="h1"}"#.into(),
                0.5
            )]
        );
        // string fields are not samples
        assert!(instant(&view, "weather_note", T).is_empty());
        assert!(instant(&view, "weather_nope", T).is_empty());
        let re = |v: &str| LabelMatcher::new(MatchOp::Regex, METRIC_NAME, v).unwrap();
        let eq = |n: &str, v: &str| LabelMatcher::new(MatchOp::Equal, n, v).unwrap();
        let select = |matchers: &[LabelMatcher]| {
            runtime
                .block_on(source.select_series(matchers, T, T + 1000, None))
                .unwrap()
        };
        let got = select(&[re("weather_.*"), eq("location", "Prague")]);
        let names: Vec<_> = got.iter().map(|s| s.labels.metric_name()).collect();
        assert_eq!(
            names,
            vec![Some("weather_humidity"), Some("weather_temperature")]
        );
        assert_eq!(got[1].samples, vec![(T, 25.3), (T + 1000, 26.0)]);
        // no name: every field with the tag
        assert_eq!(select(&[eq("kind", "a b")]).len(), 2);
        let names = runtime.block_on(source.metric_names(T, T, None)).unwrap();
        assert_eq!(
            names,
            vec![
                "cpu_load_usage_user",
                "weather_humidity",
                "weather_temperature"
            ]
        );
        let series = runtime
            .block_on(source.series_labels(&[vec![re("weather_t.*")]], T, T, None))
            .unwrap();
        assert_eq!(series.len(), 2);
    }
}
