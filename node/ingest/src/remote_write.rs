//! Prometheus remote_write 1.0: decoding, validating and encoding request bodies.
//!
//! Prometheus (and agents that speak its protocol) `POST` a `WriteRequest` protobuf,
//! compressed as one snappy **block** (not the framed format), with the headers
//! `Content-Encoding: snappy`, `Content-Type: application/x-protobuf` and
//! `X-Prometheus-Remote-Write-Version: 0.1.0`. [`decode_write_request`] turns such a body into a
//! [`WriteRequest`]; checking the headers is the HTTP layer's job.
//!
//! # Order of checks, and memory
//!
//! 1. The compressed size against [`Limits::max_compressed_bytes`].
//! 2. The decompressed size *declared in the snappy header* against
//!    [`Limits::max_decompressed_bytes`], before the output buffer is allocated: a 20-byte
//!    body that claims 4 GiB is rejected without allocating.
//! 3. A counting pass over the protobuf wire format enforces the count limits (series,
//!    samples, labels per series, exemplars, metadata) before `prost` allocates the decoded
//!    structures, which can be tens of times larger than their encoding.
//! 4. `prost` decodes (string fields are checked to be UTF-8).
//! 5. Every series is validated; the first failure rejects the whole request with an error that
//!    names the series index.
//!
//! The whole request is rejected on the first invalid series: remote_write 1.0 has no way to
//! report a partial write, and a 4xx makes Prometheus drop the batch and log the message,
//! which is what tells the operator to fix the sender. (Line protocol differs; see
//! [`crate::line_protocol`].)
//!
//! # Validation and normalisation
//!
//! - Each series needs a non-empty `__name__`. Metric and label names follow Prometheus'
//!   classic rules (`[a-zA-Z_:][a-zA-Z0-9_:]*` and `[a-zA-Z_][a-zA-Z0-9_]*`) unless
//!   [`Limits::name_validation`] is [`NameValidation::Utf8`] (Prometheus 3's UTF-8 names),
//!   which only requires non-empty names.
//! - Label names must be unique. Labels with an empty value are removed, since PromQL treats
//!   `{a=""}` as the same series as `{}`; keeping them would store one series under two
//!   identities.
//! - **Unsorted labels are sorted by default** ([`UnsortedLabels::Sort`]). Prometheus always
//!   sends them sorted; some other senders do not. The storage needs a canonical order for a
//!   series' identity anyway, sorting an almost-sorted list is cheap, and rejecting would make
//!   the sender drop the whole batch (a 4xx is not retried) for a fault that changes nothing
//!   about the data. How many series were re-sorted is reported in [`DecodeStats`] so a
//!   misbehaving sender is visible. [`UnsortedLabels::Reject`] is there for strict endpoints
//!   and conformance tests.
//! - Samples in a series must not go back in time. Equal timestamps are passed on: whether a
//!   duplicate is an error depends on its value, which the storage decides, as Prometheus'
//!   TSDB does.
//! - The staleness marker, a NaN with the bits [`STALE_NAN_BITS`], is kept bit for bit: test it
//!   with [`is_stale_nan`], never with `==` or `is_nan` alone.
//! - Native histograms are counted ([`DecodeStats::native_histograms`]) but not decoded.

mod prescan;
mod proto;

pub use proto::{
    Exemplar, Label, MetricMetadata, MetricType, Sample, TimeSeries, UndecodedHistogram,
    WriteRequest,
};

use crate::error::{RemoteWriteError, excerpt};
use prost::Message;

/// The bit pattern of Prometheus' staleness marker, written when a series disappears.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a float.
pub const STALE_NAN: f64 = f64::from_bits(STALE_NAN_BITS);

/// The label that holds the metric name.
pub const METRIC_NAME_LABEL: &str = "__name__";

/// Whether `value` is Prometheus' staleness marker (and not some other NaN).
pub fn is_stale_nan(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

/// What to do with a series whose labels are not sorted by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnsortedLabels {
    /// Sort them (and count the series in [`DecodeStats::resorted_series`]).
    #[default]
    Sort,
    /// Reject the request with [`RemoteWriteError::LabelsNotSorted`].
    Reject,
}

/// Which metric and label names are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameValidation {
    /// Prometheus' classic rules: metric names `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names
    /// `[a-zA-Z_][a-zA-Z0-9_]*`.
    #[default]
    Legacy,
    /// Any non-empty UTF-8 name, as Prometheus 3 allows.
    Utf8,
}

/// Limits and policies for [`decode_write_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted compressed body, in bytes.
    pub max_compressed_bytes: usize,
    /// Largest accepted decompressed body, in bytes, as declared by the snappy header.
    pub max_decompressed_bytes: usize,
    /// Most series in one request.
    pub max_series: usize,
    /// Most float samples in one request, over all series.
    pub max_samples: usize,
    /// Most exemplars in one request, over all series.
    pub max_exemplars: usize,
    /// Most metadata entries in one request.
    pub max_metadata: usize,
    /// Most labels on one series (and on one exemplar).
    pub max_labels_per_series: usize,
    /// Longest label name, in bytes.
    pub max_label_name_bytes: usize,
    /// Longest label value (metric name included), in bytes.
    pub max_label_value_bytes: usize,
    /// What to do with unsorted labels.
    pub unsorted_labels: UnsortedLabels,
    /// Which names are valid.
    pub name_validation: NameValidation,
}

impl Default for Limits {
    /// Generous for Prometheus' defaults (at most 2,000 samples per request; about 10 KiB
    /// compressed), small enough that one request cannot take more than a few hundred MiB.
    fn default() -> Self {
        Self {
            max_compressed_bytes: 10 * 1024 * 1024,
            max_decompressed_bytes: 32 * 1024 * 1024,
            max_series: 100_000,
            max_samples: 1_000_000,
            max_exemplars: 100_000,
            max_metadata: 100_000,
            max_labels_per_series: 128,
            max_label_name_bytes: 1024,
            max_label_value_bytes: 4096,
            unsorted_labels: UnsortedLabels::Sort,
            name_validation: NameValidation::Legacy,
        }
    }
}

/// Sizes and counts of a decoded request, for the node's ingest metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    /// Body size as received.
    pub compressed_bytes: usize,
    /// Body size after snappy.
    pub decompressed_bytes: usize,
    /// Series in the request.
    pub series: usize,
    /// Float samples, over all series.
    pub samples: usize,
    /// Exemplars, over all series.
    pub exemplars: usize,
    /// Native histogram samples, which are counted but not decoded.
    pub native_histograms: usize,
    /// Metadata entries.
    pub metadata: usize,
    /// Series whose labels arrived unsorted and were sorted.
    pub resorted_series: usize,
    /// Labels removed because their value was empty.
    pub empty_labels_removed: usize,
}

/// A validated request and what it contained.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedWriteRequest {
    /// The request; every series has a valid `__name__` and labels sorted by name, unique,
    /// with non-empty values, and samples in timestamp order.
    pub request: WriteRequest,
    /// Sizes and counts.
    pub stats: DecodeStats,
}

/// Decompresses, decodes and validates a remote_write request body.
///
/// # Errors
///
/// A [`RemoteWriteError`] naming the first problem found; see the module docs for the order.
pub fn decode_write_request(
    body: &[u8],
    limits: &Limits,
) -> Result<DecodedWriteRequest, RemoteWriteError> {
    if body.len() > limits.max_compressed_bytes {
        return Err(RemoteWriteError::BodyTooLarge {
            size: body.len(),
            limit: limits.max_compressed_bytes,
        });
    }
    // The header is a varint at the start of the block; reading it allocates nothing.
    let declared = snap::raw::decompress_len(body).map_err(RemoteWriteError::Snappy)?;
    if declared > limits.max_decompressed_bytes {
        return Err(RemoteWriteError::DecompressedTooLarge {
            declared,
            limit: limits.max_decompressed_bytes,
        });
    }
    let decompressed = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(RemoteWriteError::Snappy)?;
    let mut decoded = decode_uncompressed(&decompressed, limits)?;
    decoded.stats.compressed_bytes = body.len();
    Ok(decoded)
}

/// Decodes and validates an already decompressed `WriteRequest` (for example one that
/// arrived without `Content-Encoding: snappy`). Applies every limit but
/// [`Limits::max_compressed_bytes`].
///
/// # Errors
///
/// As [`decode_write_request`], without the snappy errors.
pub fn decode_uncompressed(
    protobuf: &[u8],
    limits: &Limits,
) -> Result<DecodedWriteRequest, RemoteWriteError> {
    if protobuf.len() > limits.max_decompressed_bytes {
        return Err(RemoteWriteError::DecompressedTooLarge {
            declared: protobuf.len(),
            limit: limits.max_decompressed_bytes,
        });
    }
    let counts = prescan::check_counts(protobuf, limits)?;
    let mut request = WriteRequest::decode(protobuf).map_err(RemoteWriteError::Protobuf)?;
    let mut stats = DecodeStats {
        compressed_bytes: protobuf.len(),
        decompressed_bytes: protobuf.len(),
        series: request.timeseries.len(),
        samples: counts.samples,
        exemplars: counts.exemplars,
        native_histograms: counts.histograms,
        metadata: request.metadata.len(),
        ..DecodeStats::default()
    };
    for (index, series) in request.timeseries.iter_mut().enumerate() {
        validate_series(index, series, limits, &mut stats)?;
    }
    Ok(DecodedWriteRequest { request, stats })
}

/// Encodes `request` as a remote_write body: protobuf, then one snappy block.
///
/// Labels are written in the order given; Prometheus' receivers expect them sorted.
///
/// # Errors
///
/// [`RemoteWriteError::Compress`] if the encoded request is beyond snappy's block size
/// (about 4 GiB).
pub fn encode_write_request(request: &WriteRequest) -> Result<Vec<u8>, RemoteWriteError> {
    let protobuf = request.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&protobuf)
        .map_err(RemoteWriteError::Compress)
}

fn validate_series(
    series: usize,
    timeseries: &mut TimeSeries,
    limits: &Limits,
    stats: &mut DecodeStats,
) -> Result<(), RemoteWriteError> {
    let labels = &mut timeseries.labels;
    for label in labels.iter() {
        check_label(series, label, limits)?;
    }
    if let Some(pair) = labels.windows(2).find(|pair| pair[0].name > pair[1].name) {
        match limits.unsorted_labels {
            UnsortedLabels::Reject => {
                return Err(RemoteWriteError::LabelsNotSorted {
                    series,
                    name: excerpt(&pair[0].name),
                });
            }
            UnsortedLabels::Sort => {
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                stats.resorted_series += 1;
            }
        }
    }
    if let Some(pair) = labels.windows(2).find(|pair| pair[0].name == pair[1].name) {
        return Err(RemoteWriteError::DuplicateLabelName {
            series,
            name: excerpt(&pair[0].name),
        });
    }
    let before = labels.len();
    labels.retain(|label| !label.value.is_empty() || label.name == METRIC_NAME_LABEL);
    stats.empty_labels_removed += before - labels.len();

    let Some(name) = labels.iter().find(|label| label.name == METRIC_NAME_LABEL) else {
        return Err(RemoteWriteError::MissingMetricName { series });
    };
    if name.value.is_empty() {
        return Err(RemoteWriteError::MissingMetricName { series });
    }
    if !is_valid_metric_name(&name.value, limits.name_validation) {
        return Err(RemoteWriteError::InvalidMetricName {
            series,
            name: excerpt(&name.value),
        });
    }

    let mut previous: Option<i64> = None;
    for (sample, point) in timeseries.samples.iter().enumerate() {
        if let Some(previous_ms) = previous
            && point.timestamp_ms < previous_ms
        {
            return Err(RemoteWriteError::SampleOutOfOrder {
                series,
                sample,
                timestamp_ms: point.timestamp_ms,
                previous_ms,
            });
        }
        previous = Some(point.timestamp_ms);
    }
    Ok(())
}

fn check_label(series: usize, label: &Label, limits: &Limits) -> Result<(), RemoteWriteError> {
    if label.name.is_empty() {
        return Err(RemoteWriteError::EmptyLabelName { series });
    }
    if label.name.len() > limits.max_label_name_bytes {
        return Err(RemoteWriteError::LabelNameTooLong {
            series,
            name: excerpt(&label.name),
            len: label.name.len(),
            limit: limits.max_label_name_bytes,
        });
    }
    if label.value.len() > limits.max_label_value_bytes {
        return Err(RemoteWriteError::LabelValueTooLong {
            series,
            name: excerpt(&label.name),
            len: label.value.len(),
            limit: limits.max_label_value_bytes,
        });
    }
    if !is_valid_label_name(&label.name, limits.name_validation) {
        return Err(RemoteWriteError::InvalidLabelName {
            series,
            name: excerpt(&label.name),
        });
    }
    Ok(())
}

/// Whether `name` is a valid metric name under `rules`.
pub fn is_valid_metric_name(name: &str, rules: NameValidation) -> bool {
    match rules {
        NameValidation::Utf8 => !name.is_empty(),
        NameValidation::Legacy => {
            let mut bytes = name.bytes();
            bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        }
    }
}

/// Whether `name` is a valid label name under `rules`.
pub fn is_valid_label_name(name: &str, rules: NameValidation) -> bool {
    match rules {
        NameValidation::Utf8 => !name.is_empty(),
        NameValidation::Legacy => {
            let mut bytes = name.bytes();
            bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }
    }
}

impl WriteRequest {
    /// Float samples over all series.
    pub fn sample_count(&self) -> usize {
        self.timeseries.iter().map(|s| s.samples.len()).sum()
    }
}

impl TimeSeries {
    /// The value of the label `name`, if the series has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|label| label.name == name)
            .map(|label| label.value.as_str())
    }

    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.label(METRIC_NAME_LABEL)
    }
}

impl Label {
    /// A label from a name and a value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_names_follow_prometheus_rules() {
        let legacy = NameValidation::Legacy;
        assert!(is_valid_metric_name("node:cpu_seconds:rate5m", legacy));
        assert!(!is_valid_metric_name("1up", legacy));
        assert!(!is_valid_metric_name("http.requests", legacy));
        assert!(is_valid_label_name("_private", legacy));
        assert!(!is_valid_label_name("a:b", legacy));
        assert!(!is_valid_label_name("", legacy));
        assert!(is_valid_label_name("service.name", NameValidation::Utf8));
    }

    #[test]
    fn the_stale_marker_is_not_an_ordinary_nan() {
        assert!(is_stale_nan(STALE_NAN));
        assert!(!is_stale_nan(f64::NAN));
        assert!(STALE_NAN.is_nan());
    }
}
