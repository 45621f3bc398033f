//! Metrics sent to the node (DESIGN.md §3, §8), on the HTTP listener:
//! - `POST /api/v1/write`: Prometheus remote_write 1.0 (snappy protobuf) →
//!   `prometheus.samples`;
//! - `POST /api/v2/write?precision=ns|us|ms|s`: Influx line protocol, plain or gzip (what
//!   Telegraf's `outputs.influxdb_v2` and the InfluxDB v2 client libraries send) →
//!   `ext_metrics.metrics`.
//!
//! A request is answered `204 No Content` only once its rows are in the WAL and fsynced,
//! like every other write. Errors follow what senders expect:
//! - malformed or oversized bodies get 400 / 413 with the decoder's message, and senders do
//!   not retry them;
//! - remote_write samples older than the newest already stored for their series are
//!   refused with 400 `out of order sample`, as Prometheus' own receiver does; the rest of
//!   the request is stored, and a sample equal to the newest (a resend) is skipped and
//!   counted;
//! - line protocol stores the good lines of a body and answers 400 naming the bad ones
//!   (InfluxDB v2's partial write), since Telegraf drops a whole batch on 400;
//! - a dictionary without a leader gets 503 and storage errors 500: both are retried.

use std::{
    collections::HashMap,
    io::Read,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use datafusion::arrow::record_batch::RecordBatch;
use flowmesh_ingest::{
    line_protocol::{self, FieldValue, Precision},
    remote_write,
};
use flowmesh_storage::Shard;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

use crate::{
    dictionary::{EncodeError, TagEncoder},
    server::ApiState,
    tables::{
        NodeTags,
        ingested::{EXT_METRICS, ExtMetricRows, PROM_SAMPLES, SampleRows, canonical_labels},
    },
};

/// Series whose newest timestamp is remembered (for out-of-order checks) at most; beyond
/// it the memory is cleared and counted.
const MAX_TRACKED_SERIES: usize = 1_000_000;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub remote_write_requests: AtomicU64,
    pub remote_write_samples: AtomicU64,
    pub remote_write_rejected: AtomicU64,
    pub remote_write_out_of_order: AtomicU64,
    pub remote_write_duplicates: AtomicU64,
    pub line_protocol_requests: AtomicU64,
    pub line_protocol_rows: AtomicU64,
    pub line_protocol_rejected_lines: AtomicU64,
    pub store_errors: AtomicU64,
    pub series_memory_resets: AtomicU64,
}

/// The ingest endpoints' shared state.
pub struct Ingest {
    tags: NodeTags,
    encoder: TagEncoder,
    shard: Arc<Shard>,
    pub stats: Arc<IngestStats>,
    remote_write: remote_write::Limits,
    line_protocol: line_protocol::Limits,
    /// `metric{labels}` → the newest sample time stored (ms).
    newest: Mutex<HashMap<String, i64>>,
    /// The processes that send OpenTelemetry spans, for AutoTagging them.
    pub(crate) otlp_senders: crate::otlp::Senders,
}

impl Ingest {
    pub fn new(
        tags: NodeTags,
        encoder: TagEncoder,
        shard: Arc<Shard>,
        stats: Arc<IngestStats>,
        max_body_bytes: usize,
        processes: crate::capture::procinfo::SharedProcesses,
    ) -> Self {
        let remote_write = remote_write::Limits {
            max_compressed_bytes: max_body_bytes,
            ..remote_write::Limits::default()
        };
        let line_protocol = line_protocol::Limits {
            max_body_bytes: max_body_bytes.max(line_protocol::Limits::default().max_body_bytes),
            ..line_protocol::Limits::default()
        };
        Self {
            encoder,
            shard,
            stats,
            remote_write,
            line_protocol,
            newest: Mutex::new(HashMap::new()),
            otlp_senders: crate::otlp::Senders::new(Arc::clone(&tags.node), processes),
            tags,
        }
    }

    /// The node's region, cluster and name, as every row carries them.
    pub(crate) fn node_tags(&self) -> &NodeTags {
        &self.tags
    }

    /// The largest request body taken (after decompression).
    pub(crate) fn max_body_bytes(&self) -> usize {
        self.line_protocol.max_body_bytes
    }

    /// The request body as sent (`Content-Encoding` identity or gzip), at most
    /// [`Self::max_body_bytes`] once decompressed; else the status and message to answer.
    pub(crate) fn decoded_body<'a>(
        &self,
        headers: &HeaderMap,
        body: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, [u8]>, (StatusCode, String)> {
        let limit = self.max_body_bytes();
        match headers.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()) {
            None | Some(b"identity") => Ok(std::borrow::Cow::Borrowed(body)),
            Some(b"gzip") => {
                let mut out = Vec::new();
                match flate2::read::GzDecoder::new(body)
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out)
                {
                    Err(e) => Err((StatusCode::BAD_REQUEST, format!("invalid gzip body: {e}"))),
                    Ok(n) if n > limit => Err((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("decompressed body exceeds the limit of {limit} bytes"),
                    )),
                    Ok(_) => Ok(std::borrow::Cow::Owned(out)),
                }
            }
            Some(other) => Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported Content-Encoding {:?}",
                    String::from_utf8_lossy(other)
                ),
            )),
        }
    }

    /// Encodes the batch's tags and appends it; returns once it is durable, or the status
    /// and message to answer with.
    pub(crate) async fn store_batch(
        &self,
        table: &str,
        batch: RecordBatch,
    ) -> Result<(), (StatusCode, String)> {
        let failed = |status: StatusCode, message: String| {
            self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
            Err((status, message))
        };
        let encoded = match self.encoder.encode(table, &batch).await {
            Ok(b) => b,
            Err(e) => {
                let (status, message) = encode_refusal(&e);
                return failed(status, message);
            }
        };
        if let Err(e) = self.shard.append(vec![(table.to_string(), encoded)]).await {
            return failed(StatusCode::INTERNAL_SERVER_ERROR, format!("storage: {e}"));
        }
        Ok(())
    }

    /// Registers process resources (a [`crate::tables::process_batch`]) in the dictionary,
    /// as capture does for the processes it sees; the status and message to answer with if
    /// it cannot.
    pub(crate) async fn register_processes(
        &self,
        batch: &RecordBatch,
    ) -> Result<(), (StatusCode, String)> {
        self.encoder.register_processes(batch).await.map_err(|e| {
            self.stats.store_errors.fetch_add(1, Ordering::Relaxed);
            encode_refusal(&e)
        })
    }
}

/// The status and message for a batch the dictionary could not encode: 503 when it cannot
/// assign ids right now (worth retrying), else 500.
fn encode_refusal(e: &EncodeError) -> (StatusCode, String) {
    if e.is_retryable() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("tag dictionary unavailable, retry: {e}"),
        )
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, message.to_string()).into_response()
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

/// `POST /api/v1/write`.
pub async fn remote_write(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ingest = &state.ingest;
    let stats = &ingest.stats;
    stats.remote_write_requests.fetch_add(1, Ordering::Relaxed);
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && encoding.as_bytes() != b"snappy"
    {
        stats.remote_write_rejected.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!(
                "unsupported Content-Encoding {encoding:?}: remote_write bodies are snappy-compressed"
            ),
        );
    }
    let decoded = match remote_write::decode_write_request(&body, &ingest.remote_write) {
        Ok(d) => d,
        Err(e) => {
            stats.remote_write_rejected.fetch_add(1, Ordering::Relaxed);
            return error(status(e.http_status()), &e.to_string());
        }
    };
    let mut rows = SampleRows::default();
    let mut newest_after: Vec<(String, i64)> = Vec::new();
    let mut out_of_order: Option<String> = None;
    let (mut skipped_old, mut duplicates) = (0u64, 0u64);
    {
        let newest = ingest.newest.lock();
        for series in &decoded.request.timeseries {
            if series.samples.is_empty() {
                continue;
            }
            let metric = series.metric_name().unwrap_or_default();
            let labels = canonical_labels(
                series
                    .labels
                    .iter()
                    .filter(|l| l.name != remote_write::METRIC_NAME_LABEL)
                    .map(|l| (l.name.as_str(), l.value.as_str())),
            );
            let key = format!("{metric}{{{labels}}}");
            let stored = newest.get(&key).copied();
            let (metric_key, labels_key) = (rows.metric.key(metric), rows.labels.key(&labels));
            let mut last = stored;
            for sample in &series.samples {
                match stored {
                    Some(t) if sample.timestamp_ms < t => {
                        skipped_old += 1;
                        out_of_order.get_or_insert_with(|| {
                            format!(
                                "out of order sample: {key} at {} ms is older than {t} ms, already stored",
                                sample.timestamp_ms
                            )
                        });
                        continue;
                    }
                    Some(t) if sample.timestamp_ms == t => {
                        duplicates += 1;
                        continue;
                    }
                    _ => {}
                }
                rows.times_us.push(sample.timestamp_ms.saturating_mul(1000));
                rows.metric.push_key(metric_key);
                rows.labels.push_key(labels_key);
                rows.values.push(sample.value);
                last = Some(last.map_or(sample.timestamp_ms, |l| l.max(sample.timestamp_ms)));
            }
            if let Some(t) = last
                && Some(t) != stored
            {
                newest_after.push((key, t));
            }
        }
    }
    let samples = rows.times_us.len() as u64;
    if samples > 0 {
        let batch = match rows.batch(&ingest.tags) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        if let Err((code, message)) = ingest.store_batch(PROM_SAMPLES, batch).await {
            return error(code, &message);
        }
        // only what is durable moves a series' newest time: a failed request can be resent
        let mut newest = ingest.newest.lock();
        if newest.len() + newest_after.len() > MAX_TRACKED_SERIES {
            newest.clear();
            stats.series_memory_resets.fetch_add(1, Ordering::Relaxed);
        }
        for (key, t) in newest_after {
            let entry = newest.entry(key).or_insert(t);
            *entry = (*entry).max(t);
        }
    }
    stats
        .remote_write_samples
        .fetch_add(samples, Ordering::Relaxed);
    stats
        .remote_write_duplicates
        .fetch_add(duplicates, Ordering::Relaxed);
    match out_of_order {
        Some(message) => {
            stats
                .remote_write_out_of_order
                .fetch_add(skipped_old, Ordering::Relaxed);
            error(StatusCode::BAD_REQUEST, &message)
        }
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct InfluxParams {
    precision: Option<String>,
}

/// `POST /api/v2/write`. `org` and `bucket` are accepted and ignored: every point goes to
/// `ext_metrics.metrics`.
pub async fn influx_write(
    State(state): State<ApiState>,
    Query(params): Query<InfluxParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ingest = &state.ingest;
    let stats = &ingest.stats;
    stats.line_protocol_requests.fetch_add(1, Ordering::Relaxed);
    let influx_error = |code: StatusCode, message: String| {
        (
            code,
            axum::Json(json!({ "code": if code == StatusCode::PAYLOAD_TOO_LARGE { "request too large" } else { "invalid" }, "message": message })),
        )
            .into_response()
    };
    let precision = match Precision::from_query_param(params.precision.as_deref().unwrap_or("ns")) {
        Ok(p) => p,
        Err(e) => return influx_error(status(e.http_status()), e.to_string()),
    };
    let body = match ingest.decoded_body(&headers, &body) {
        Ok(b) => b,
        Err((code, message)) => return influx_error(code, message),
    };
    let parsed = match line_protocol::parse(&body, precision, &ingest.line_protocol) {
        Ok(p) => p,
        Err(e) => return influx_error(status(e.http_status()), e.to_string()),
    };
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let mut rows = ExtMetricRows::default();
    for point in &parsed.points {
        let time_us = point.timestamp_or(now_ns).div_euclid(1000);
        let measurement = rows.measurement.key(&point.measurement);
        let tags = rows.tags.key(&canonical_labels(
            point.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ));
        for (field, value) in &point.fields {
            rows.times_us.push(time_us);
            rows.measurement.push_key(measurement);
            rows.tags.push_key(tags);
            rows.field.push(field);
            let (number, text) = match value {
                FieldValue::Float(v) => (Some(*v), None),
                FieldValue::Integer(v) => (Some(*v as f64), None),
                FieldValue::UInteger(v) => (Some(*v as f64), None),
                FieldValue::Boolean(v) => (Some(if *v { 1.0 } else { 0.0 }), None),
                FieldValue::String(s) => (None, Some(s.clone())),
            };
            rows.values.push(number);
            rows.strings.push(text);
        }
    }
    let stored = rows.times_us.len() as u64;
    if stored > 0 {
        let batch = match rows.batch(&ingest.tags) {
            Ok(b) => b,
            Err(e) => return influx_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        if let Err((code, message)) = ingest.store_batch(EXT_METRICS, batch).await {
            return influx_error(code, message);
        }
    }
    stats
        .line_protocol_rows
        .fetch_add(stored, Ordering::Relaxed);
    if parsed.is_partial() {
        stats
            .line_protocol_rejected_lines
            .fetch_add(parsed.rejected_lines as u64, Ordering::Relaxed);
        let errors: Vec<String> = parsed.rejected.iter().map(ToString::to_string).collect();
        return influx_error(
            StatusCode::BAD_REQUEST,
            format!(
                "partial write: {} of {} points stored, {} lines rejected: {}",
                parsed.points.len(),
                parsed.points.len() + parsed.rejected_lines,
                parsed.rejected_lines,
                errors.join("; ")
            ),
        );
    }
    StatusCode::NO_CONTENT.into_response()
}
