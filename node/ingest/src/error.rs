//! Why a request body was rejected, and what the client is told.
//!
//! Every error maps to an HTTP status ([`RemoteWriteError::http_status`],
//! [`LineProtocolError::http_status`]) and says whether the client should retry. None of the
//! decode errors are retryable: the same bytes fail the same way. That matters because both
//! Prometheus and Telegraf retry 5xx and 429 responses but drop a batch on any other 4xx, so a
//! decode error must never be reported as 5xx or the sender would resend it forever.

use crate::line_protocol::Precision;

/// How long an excerpt of client input an error message may quote, in characters.
const EXCERPT_CHARS: usize = 64;

/// A prefix of `text` short enough to quote in an error message.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A remote_write request that could not be decoded or failed validation.
///
/// `series` fields are 0-based indexes into `WriteRequest.timeseries`; `sample` fields index
/// that series' samples.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    /// The compressed body is larger than the limit.
    #[error("request body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// Compressed size.
        size: usize,
        /// `Limits::max_compressed_bytes`.
        limit: usize,
    },
    /// The decompressed size (as the snappy header declares it, checked before anything is
    /// decompressed) is above the limit.
    #[error("decompressed body of {declared} bytes exceeds the limit of {limit} bytes")]
    DecompressedTooLarge {
        /// The size the snappy header declares, or the size of an uncompressed body.
        declared: usize,
        /// `Limits::max_decompressed_bytes`.
        limit: usize,
    },
    /// The body is not a valid snappy block (the framed snappy format is not accepted).
    #[error("invalid snappy block: {0}")]
    Snappy(#[source] snap::Error),
    /// The decompressed body is not a valid `WriteRequest`.
    #[error("invalid protobuf write request: {0}")]
    Protobuf(#[source] prost::DecodeError),
    /// More series than `Limits::max_series`.
    #[error("request has more than {limit} series")]
    TooManySeries {
        /// The limit.
        limit: usize,
    },
    /// More samples, over all series, than `Limits::max_samples`.
    #[error("request has more than {limit} samples")]
    TooManySamples {
        /// The limit.
        limit: usize,
    },
    /// More exemplars, over all series, than `Limits::max_exemplars`.
    #[error("request has more than {limit} exemplars")]
    TooManyExemplars {
        /// The limit.
        limit: usize,
    },
    /// More metadata entries than `Limits::max_metadata`.
    #[error("request has more than {limit} metadata entries")]
    TooManyMetadata {
        /// The limit.
        limit: usize,
    },
    /// A series (or one of its exemplars) has more labels than
    /// `Limits::max_labels_per_series`.
    #[error("series {series}: more than {limit} labels")]
    TooManyLabels {
        /// Index of the series.
        series: usize,
        /// The limit.
        limit: usize,
    },
    /// A series has no `__name__` label, or an empty one.
    #[error("series {series}: missing metric name (__name__ label)")]
    MissingMetricName {
        /// Index of the series.
        series: usize,
    },
    /// A label has an empty name.
    #[error("series {series}: empty label name")]
    EmptyLabelName {
        /// Index of the series.
        series: usize,
    },
    /// A label name is longer than `Limits::max_label_name_bytes`.
    #[error("series {series}: label name \"{name}\" is {len} bytes, above the limit of {limit}")]
    LabelNameTooLong {
        /// Index of the series.
        series: usize,
        /// The start of the name.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A label value is longer than `Limits::max_label_value_bytes`.
    #[error(
        "series {series}: value of label \"{name}\" is {len} bytes, above the limit of {limit}"
    )]
    LabelValueTooLong {
        /// Index of the series.
        series: usize,
        /// The label's name.
        name: String,
        /// The value's length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The `__name__` value is not a valid metric name.
    #[error("series {series}: invalid metric name \"{name}\"")]
    InvalidMetricName {
        /// Index of the series.
        series: usize,
        /// The start of the metric name.
        name: String,
    },
    /// A label name is not valid.
    #[error("series {series}: invalid label name \"{name}\"")]
    InvalidLabelName {
        /// Index of the series.
        series: usize,
        /// The start of the label name.
        name: String,
    },
    /// The same label name appears twice in a series.
    #[error("series {series}: duplicate label name \"{name}\"")]
    DuplicateLabelName {
        /// Index of the series.
        series: usize,
        /// The repeated name.
        name: String,
    },
    /// Labels are not sorted by name and `Limits::unsorted_labels` is `Reject`.
    #[error("series {series}: labels not sorted by name (\"{name}\" is out of place)")]
    LabelsNotSorted {
        /// Index of the series.
        series: usize,
        /// The first label found before a name that sorts lower.
        name: String,
    },
    /// A sample is older than the one before it in the same series.
    #[error(
        "series {series}: sample {sample} at {timestamp_ms} ms is older than the previous one at {previous_ms} ms"
    )]
    SampleOutOfOrder {
        /// Index of the series.
        series: usize,
        /// Index of the sample within the series.
        sample: usize,
        /// Its timestamp.
        timestamp_ms: i64,
        /// The previous sample's timestamp.
        previous_ms: i64,
    },
    /// Compressing an encoded request failed (only for inputs beyond snappy's ~4 GiB block
    /// limit).
    #[error("failed to snappy-compress the write request: {0}")]
    Compress(#[source] snap::Error),
}

impl RemoteWriteError {
    /// The HTTP status for the response: 413 for size limits on the body, 400 otherwise.
    ///
    /// Count limits (series, samples …) are 400, not 413: Prometheus does not split batches,
    /// so a 413 would not help it, and the fix is in its `queue_config`.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BodyTooLarge { .. } | Self::DecompressedTooLarge { .. } => 413,
            Self::Compress(_) => 500,
            _ => 400,
        }
    }

    /// Whether sending the same request again could succeed. Always false: decoding is
    /// deterministic, and Prometheus drops a batch on a 4xx rather than retrying it.
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// The index of the series the error is about, if it is about one.
    pub fn series(&self) -> Option<usize> {
        match self {
            Self::TooManyLabels { series, .. }
            | Self::MissingMetricName { series }
            | Self::EmptyLabelName { series }
            | Self::LabelNameTooLong { series, .. }
            | Self::LabelValueTooLong { series, .. }
            | Self::InvalidMetricName { series, .. }
            | Self::InvalidLabelName { series, .. }
            | Self::DuplicateLabelName { series, .. }
            | Self::LabelsNotSorted { series, .. }
            | Self::SampleOutOfOrder { series, .. } => Some(*series),
            _ => None,
        }
    }
}

/// An Influx line protocol body rejected as a whole.
#[derive(Debug, thiserror::Error)]
pub enum LineProtocolError {
    /// The body is larger than `Limits::max_body_bytes`.
    #[error("request body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// Body size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body has more point lines than `Limits::max_lines`.
    #[error("request body has more than {limit} lines")]
    TooManyLines {
        /// The limit.
        limit: usize,
    },
    /// The `precision` query parameter is not one of `ns`, `us`, `ms`, `s`.
    #[error("invalid precision \"{0}\": expected ns, us, ms or s")]
    UnknownPrecision(String),
    /// A line could not be parsed (only from the all-or-nothing entry points).
    #[error(transparent)]
    Line(#[from] LineError),
}

impl LineProtocolError {
    /// The HTTP status for the response: 413 for size limits (Telegraf's `influxdb_v2` output
    /// splits the batch in two and retries on 413), 400 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BodyTooLarge { .. } | Self::TooManyLines { .. } => 413,
            Self::UnknownPrecision(_) | Self::Line(_) => 400,
        }
    }

    /// Whether sending the same body again could succeed. Always false.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// One rejected line: its 1-based number in the body and why.
///
/// Displays as InfluxDB words it, prefixed by the line: `line 3: missing fields`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct LineError {
    /// 1-based line number, counting every `\n` in the body (blank and comment lines too).
    pub line: usize,
    /// What is wrong.
    pub kind: LineErrorKind,
}

/// What is wrong with a line. Quoted input is cut to a short excerpt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineErrorKind {
    /// The line is longer than `Limits::max_line_bytes`.
    #[error("line of {len} bytes exceeds the limit of {limit} bytes")]
    LineTooLong {
        /// Line length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A newline inside the text given to [`crate::line_protocol::parse_line`].
    #[error("unexpected newline")]
    Newline,
    /// The line is not valid UTF-8.
    #[error("invalid utf-8")]
    InvalidUtf8,
    /// The line starts with a separator.
    #[error("missing measurement")]
    MissingMeasurement,
    /// A tag has an empty key (`m,=v f=1`, or a trailing comma).
    #[error("missing tag key")]
    MissingTagKey,
    /// A tag has no `=` or an empty value.
    #[error("missing tag value")]
    MissingTagValue,
    /// A tag value holds an unescaped `=`.
    #[error("invalid tag format")]
    InvalidTagFormat,
    /// The same tag key appears twice.
    #[error("duplicate tag \"{key}\"")]
    DuplicateTag {
        /// The repeated key.
        key: String,
    },
    /// The line has no field set.
    #[error("missing fields")]
    MissingFields,
    /// A field has an empty key (`m =1`, or a trailing comma).
    #[error("missing field key")]
    MissingFieldKey,
    /// A field key is not followed by `=`.
    #[error("invalid field format")]
    InvalidFieldFormat,
    /// A field has `=` but no value.
    #[error("missing field value for \"{key}\"")]
    MissingFieldValue {
        /// The field key.
        key: String,
    },
    /// A field value is not a float, integer, unsigned integer, boolean or quoted string.
    #[error("invalid field value \"{value}\"")]
    InvalidFieldValue {
        /// The value as written.
        value: String,
    },
    /// A numeric field value does not fit its type (or a float overflows to infinity).
    #[error("field value \"{value}\" out of range")]
    ValueOutOfRange {
        /// The value as written.
        value: String,
    },
    /// A string field value has no closing quote.
    #[error("unbalanced quotes")]
    UnbalancedQuotes,
    /// A string field value is longer than `Limits::max_string_field_bytes`.
    #[error("string field \"{key}\" of {len} bytes exceeds the limit of {limit} bytes")]
    StringTooLong {
        /// The field key.
        key: String,
        /// Length after unescaping.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The timestamp is not an integer, or something follows it.
    #[error("invalid timestamp \"{value}\"")]
    InvalidTimestamp {
        /// The text after the field set.
        value: String,
    },
    /// The timestamp, converted to nanoseconds, is outside what InfluxDB accepts
    /// (±9223372036854775806 ns).
    #[error("timestamp {value} out of range for precision {precision}")]
    TimestampOutOfRange {
        /// The timestamp as written.
        value: i64,
        /// The precision it was given in.
        precision: Precision,
    },
}

/// A [`crate::line_protocol::Point`] that line protocol cannot represent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerializeError {
    /// The measurement, a tag key, a tag value or a field key is empty.
    #[error("{element} is empty")]
    Empty {
        /// Which element: "measurement", "tag key", "tag value" or "field key".
        element: &'static str,
    },
    /// An element contains a newline, which ends a line whatever the escaping.
    #[error("{element} contains a newline")]
    Newline {
        /// Which element.
        element: &'static str,
    },
    /// The measurement starts with `#` (the line would read as a comment) or with a tab (it
    /// would be trimmed as leading whitespace).
    #[error("measurement \"{measurement}\" cannot start a line")]
    MeasurementStart {
        /// The start of the measurement.
        measurement: String,
    },
    /// The point has no fields.
    #[error("point has no fields")]
    NoFields,
    /// A float field is NaN or infinite.
    #[error("float field \"{key}\" is not finite")]
    NonFiniteFloat {
        /// The field key.
        key: String,
    },
    /// The timestamp is outside ±9223372036854775806 ns.
    #[error("timestamp {0} ns is out of range")]
    TimestampOutOfRange(i64),
}
