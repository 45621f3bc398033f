//! The tables that metrics sent to a node land in (DESIGN.md §4):
//! - `prometheus.samples`, one row per sample from Prometheus remote_write: `metric` (the
//!   `__name__`), `labels` (the rest of the series' labels) and `value`;
//! - `ext_metrics.metrics`, one row per field of an Influx line protocol point (Telegraf,
//!   InfluxDB client libraries): `measurement`, `tags`, `field`, and `value` (numbers and
//!   booleans as floats) or `string_value`.
//!
//! `labels` and `tags` are one tag string per series in canonical form, `a="x",b="y"`
//! sorted by name, with `\`, `"` and newlines escaped as in Prometheus' text format
//! ([`canonical_labels`]). Like every tag column they are stored as dictionary ids, so a
//! series' labels are stored once in the region's dictionary and each row holds a u32.
//! Both tables also carry the receiving node's `region`, `cluster` and `node`.
//!
//! Columns are built as Arrow dictionaries (one value per series, a key per row), which
//! the [`crate::dictionary::TagEncoder`] maps to ids without hashing every row.

use std::{collections::HashMap, sync::Arc};

use datafusion::arrow::{
    array::{ArrayRef, DictionaryArray, Float64Array, Int32Array, StringArray},
    datatypes::{DataType, Field, Int32Type, Schema, SchemaRef},
    error::ArrowError,
    record_batch::RecordBatch,
};

use super::{NodeTags, s as tag, ts};

pub const PROM_SAMPLES: &str = "prometheus.samples";
pub const EXT_METRICS: &str = "ext_metrics.metrics";

pub fn samples_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        ts("time"),
        tag("region"),
        tag("cluster"),
        tag("node"),
        tag("metric"),
        tag("labels"),
        Field::new("value", DataType::Float64, false),
    ]))
}

pub fn ext_metrics_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        ts("time"),
        tag("region"),
        tag("cluster"),
        tag("node"),
        tag("measurement"),
        tag("tags"),
        tag("field"),
        Field::new("value", DataType::Float64, true),
        Field::new("string_value", DataType::Utf8, true),
    ]))
}

/// Labels as one string, `a="x",b="y"`, in the order given (callers sort by name). Values
/// escape `\`, `"` and newline as Prometheus' text format does.
pub fn canonical_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (name, value) in labels {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

/// A string column as an Arrow dictionary: each distinct value once, a key per row.
#[derive(Default)]
pub struct DictionaryColumn {
    index: HashMap<String, i32>,
    values: Vec<String>,
    keys: Vec<i32>,
}

impl DictionaryColumn {
    /// The key of `value`, added if new; push it per row with [`Self::push_key`].
    pub fn key(&mut self, value: &str) -> i32 {
        if let Some(k) = self.index.get(value) {
            return *k;
        }
        let k = self.values.len() as i32;
        self.values.push(value.to_string());
        self.index.insert(value.to_string(), k);
        k
    }

    pub fn push_key(&mut self, key: i32) {
        self.keys.push(key);
    }

    pub fn push(&mut self, value: &str) {
        let k = self.key(value);
        self.keys.push(k);
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn finish(self) -> Result<ArrayRef, ArrowError> {
        let values = StringArray::from(self.values);
        Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
            Int32Array::from(self.keys),
            Arc::new(values),
        )?))
    }
}

/// The node's region, cluster and node, repeated `n` times (one dictionary value each).
fn node_columns(tags: &NodeTags, n: usize) -> Result<Vec<ArrayRef>, ArrowError> {
    [&tags.region, &tags.cluster, &tags.node]
        .into_iter()
        .map(|v| {
            let mut c = DictionaryColumn::default();
            let k = c.key(v);
            c.keys = vec![k; n];
            c.finish()
        })
        .collect()
}

fn timestamps(times_us: Vec<i64>) -> ArrayRef {
    Arc::new(
        datafusion::arrow::array::TimestampMicrosecondArray::from(times_us).with_timezone("UTC"),
    )
}

/// Rows of `prometheus.samples` being collected.
#[derive(Default)]
pub struct SampleRows {
    pub times_us: Vec<i64>,
    pub metric: DictionaryColumn,
    pub labels: DictionaryColumn,
    pub values: Vec<f64>,
}

impl SampleRows {
    pub fn batch(self, tags: &NodeTags) -> Result<RecordBatch, ArrowError> {
        let n = self.times_us.len();
        let mut columns = vec![timestamps(self.times_us)];
        columns.extend(node_columns(tags, n)?);
        columns.push(self.metric.finish()?);
        columns.push(self.labels.finish()?);
        columns.push(Arc::new(Float64Array::from(self.values)));
        RecordBatch::try_new(logical(samples_schema(), &columns), columns)
    }
}

/// Rows of `ext_metrics.metrics` being collected.
#[derive(Default)]
pub struct ExtMetricRows {
    pub times_us: Vec<i64>,
    pub measurement: DictionaryColumn,
    pub tags: DictionaryColumn,
    pub field: DictionaryColumn,
    pub values: Vec<Option<f64>>,
    pub strings: Vec<Option<String>>,
}

impl ExtMetricRows {
    pub fn batch(self, tags: &NodeTags) -> Result<RecordBatch, ArrowError> {
        let n = self.times_us.len();
        let mut columns = vec![timestamps(self.times_us)];
        columns.extend(node_columns(tags, n)?);
        columns.push(self.measurement.finish()?);
        columns.push(self.tags.finish()?);
        columns.push(self.field.finish()?);
        columns.push(Arc::new(Float64Array::from(self.values)));
        columns.push(Arc::new(StringArray::from(self.strings)));
        RecordBatch::try_new(logical(ext_metrics_schema(), &columns), columns)
    }
}

/// `schema` with each field's type taken from its column (tags here are dictionaries).
fn logical(schema: SchemaRef, columns: &[ArrayRef]) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .zip(columns)
            .map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone()))
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_labels_escape_like_prometheus() {
        assert_eq!(
            canonical_labels([("instance", "a:9100"), ("job", "node")]),
            r#"instance="a:9100",job="node""#
        );
        assert_eq!(
            canonical_labels([("path", "C:\\x \"q\"\nz")]),
            r#"path="C:\\x \"q\"\nz""#
        );
        assert_eq!(canonical_labels([]), "");
    }

    #[test]
    fn batches_have_the_tables_columns() {
        let tags = NodeTags {
            region: "r".into(),
            cluster: "c".into(),
            node: "n".into(),
        };
        let mut rows = SampleRows::default();
        for (i, metric) in ["up", "up", "x"].into_iter().enumerate() {
            rows.times_us.push(i as i64);
            rows.metric.push(metric);
            rows.labels.push(r#"job="a""#);
            rows.values.push(1.0);
        }
        let batch = rows.batch(&tags).unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.num_columns(), samples_schema().fields().len());
        let mut ext = ExtMetricRows::default();
        ext.times_us.push(1);
        ext.measurement.push("cpu");
        ext.tags.push("");
        ext.field.push("usage");
        ext.values.push(None);
        ext.strings.push(Some("x".into()));
        let batch = ext.batch(&tags).unwrap();
        assert_eq!(batch.num_columns(), ext_metrics_schema().fields().len());
    }
}
