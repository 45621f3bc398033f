//! The remote_write 1.0 protobuf messages, written by hand with `prost` derives.
//!
//! Field numbers follow Prometheus' `prompb/remote.proto` and `prompb/types.proto`. Only what
//! the node stores is decoded: native histograms are recognised (so they can be counted) but
//! their content is skipped, and fields this crate does not know are skipped by `prost`.

/// One remote_write request: a batch of series, or (as Prometheus sends them separately) a
/// batch of metric metadata.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series, each with its labels and samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Type, help and unit of metric families (field 2 is reserved in `remote.proto`).
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// One series: its label set and its samples in timestamp order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// The label set, `__name__` included. After decoding, sorted by name and unique.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Float samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars attached to the series (for example a trace id and the observed value).
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    /// Native histogram samples: counted, content not decoded (see [`UndecodedHistogram`]).
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<UndecodedHistogram>,
}

/// One label: a name and a value.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    /// The label name, e.g. `__name__` or `job`.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// One float sample.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    /// The value; the staleness marker is a NaN with a fixed bit pattern
    /// ([`super::is_stale_nan`]) and is kept bit for bit.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp_ms: i64,
}

/// An exemplar: a sample of the series that carries labels of its own (typically `trace_id`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    /// The exemplar's own labels; may be empty.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// The observed value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub timestamp_ms: i64,
}

/// A native histogram sample whose content is not decoded.
///
/// `prometheus.samples` holds float samples only. Decoding the message as an empty one keeps
/// the count (so a node can report what it did not store) without allocating for it: a
/// vector of a zero-sized type never allocates.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct UndecodedHistogram {}

/// Type, help text and unit of one metric family.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    /// The metric type; see [`MetricType`] (unknown numbers read as [`MetricType::Unknown`]
    /// through the generated `metric_type()` getter).
    #[prost(enumeration = "MetricType", tag = "1")]
    pub metric_type: i32,
    /// The metric family name, e.g. `http_requests_total`.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// The `# HELP` text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// The unit, if the exposition format gave one.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// Metric types as numbered in `types.proto` (`MetricMetadata.MetricType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    /// No `# TYPE` line, or a type this version does not know.
    Unknown = 0,
    /// A monotonic counter.
    Counter = 1,
    /// A gauge.
    Gauge = 2,
    /// A classic (bucketed) histogram.
    Histogram = 3,
    /// An OpenMetrics gauge histogram.
    GaugeHistogram = 4,
    /// A summary.
    Summary = 5,
    /// An OpenMetrics info metric.
    Info = 6,
    /// An OpenMetrics state set.
    StateSet = 7,
}
