//! remote_write decoding: round trips and every validation error, on hand-built requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowmesh_ingest::RemoteWriteError;
use flowmesh_ingest::remote_write::{
    Exemplar, Label, Limits, MetricMetadata, MetricType, NameValidation, STALE_NAN, Sample,
    TimeSeries, UndecodedHistogram, UnsortedLabels, WriteRequest, decode_uncompressed,
    decode_write_request, encode_write_request, is_stale_nan,
};
use prost::Message;

fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
    TimeSeries {
        labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
        samples: samples
            .iter()
            .map(|&(value, timestamp_ms)| Sample {
                value,
                timestamp_ms,
            })
            .collect(),
        ..TimeSeries::default()
    }
}

fn body(timeseries: Vec<TimeSeries>) -> Vec<u8> {
    encode_write_request(&WriteRequest {
        timeseries,
        metadata: Vec::new(),
    })
    .unwrap()
}

fn decode(timeseries: Vec<TimeSeries>) -> Result<WriteRequest, RemoteWriteError> {
    decode_write_request(&body(timeseries), &Limits::default()).map(|d| d.request)
}

fn up(job: &str) -> TimeSeries {
    series(&[("__name__", "up"), ("job", job)], &[(1.0, 1000)])
}

#[test]
fn encode_then_decode_gives_back_the_request() {
    let mut with_extras = series(
        &[
            ("__name__", "http_request_duration_seconds_count"),
            ("code", "200"),
        ],
        &[(10.0, 1000), (11.0, 2000), (11.0, 2000)],
    );
    with_extras.exemplars = vec![Exemplar {
        labels: vec![Label::new("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")],
        value: 0.25,
        timestamp_ms: 1500,
    }];
    with_extras.histograms = vec![UndecodedHistogram {}; 2];
    let request = WriteRequest {
        timeseries: vec![up("node"), with_extras],
        metadata: vec![MetricMetadata {
            metric_type: MetricType::Counter as i32,
            metric_family_name: "http_request_duration_seconds".into(),
            help: "Request latency.".into(),
            unit: "seconds".into(),
        }],
    };
    let decoded =
        decode_write_request(&encode_write_request(&request).unwrap(), &Limits::default()).unwrap();
    assert_eq!(decoded.request, request);
    assert_eq!(
        decoded.request.metadata[0].metric_type(),
        MetricType::Counter
    );
    assert_eq!(decoded.request.sample_count(), 4);
    let stats = decoded.stats;
    assert_eq!(
        (
            stats.series,
            stats.samples,
            stats.exemplars,
            stats.native_histograms,
            stats.metadata
        ),
        (2, 4, 1, 2, 1)
    );
    assert_eq!(stats.decompressed_bytes, request.encoded_len());
}

#[test]
fn staleness_nan_is_kept_bit_exact_and_other_nans_are_not_stale() {
    let other_nan = f64::from_bits(0x7ff8_0000_0000_0001);
    let request = decode(vec![series(
        &[("__name__", "up")],
        &[(1.0, 1), (STALE_NAN, 2), (other_nan, 3), (f64::NAN, 4)],
    )])
    .unwrap();
    let bits: Vec<u64> = request.timeseries[0]
        .samples
        .iter()
        .map(|s| s.value.to_bits())
        .collect();
    assert_eq!(
        bits,
        [
            1.0f64.to_bits(),
            0x7ff0_0000_0000_0002,
            0x7ff8_0000_0000_0001,
            f64::NAN.to_bits()
        ]
    );
    let stale: Vec<bool> = request.timeseries[0]
        .samples
        .iter()
        .map(|s| is_stale_nan(s.value))
        .collect();
    assert_eq!(stale, [false, true, false, false]);
}

#[test]
fn size_limits_are_checked_before_decompressing() {
    let payload = body(vec![up("a"), up("b")]);
    let small = Limits {
        max_compressed_bytes: payload.len() - 1,
        ..Limits::default()
    };
    let error = decode_write_request(&payload, &small).unwrap_err();
    assert!(matches!(error, RemoteWriteError::BodyTooLarge { size, .. } if size == payload.len()));
    assert_eq!(error.http_status(), 413);

    let declared = snap::raw::decompress_len(&payload).unwrap();
    let small = Limits {
        max_decompressed_bytes: declared - 1,
        ..Limits::default()
    };
    let error = decode_write_request(&payload, &small).unwrap_err();
    assert!(
        matches!(error, RemoteWriteError::DecompressedTooLarge { declared: d, .. } if d == declared)
    );
    assert_eq!(error.http_status(), 413);
    assert!(!error.is_retryable());

    // An uncompressed body is held to the decompressed limit too.
    let protobuf = snap::raw::Decoder::new().decompress_vec(&payload).unwrap();
    let error = decode_uncompressed(&protobuf, &small).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "decompressed body of {declared} bytes exceeds the limit of {} bytes",
            declared - 1
        )
    );
    assert_eq!(
        decode_uncompressed(&protobuf, &Limits::default())
            .unwrap()
            .request
            .timeseries
            .len(),
        2
    );
}

#[test]
fn bad_snappy_and_the_framed_format_are_rejected() {
    let error = decode_write_request(b"\xff\xff\xff\xff\xff\xff", &Limits::default()).unwrap_err();
    assert!(matches!(error, RemoteWriteError::Snappy(_)), "{error}");
    assert_eq!(error.http_status(), 400);

    // The framed (streaming) snappy format is not what remote_write uses.
    let protobuf = WriteRequest {
        timeseries: vec![up("a")],
        metadata: Vec::new(),
    }
    .encode_to_vec();
    let mut framed = snap::write::FrameEncoder::new(Vec::new());
    std::io::Write::write_all(&mut framed, &protobuf).unwrap();
    let framed = framed.into_inner().unwrap();
    let error = decode_write_request(&framed, &Limits::default()).unwrap_err();
    assert!(matches!(error, RemoteWriteError::Snappy(_)), "{error}");
    assert!(error.to_string().starts_with("invalid snappy block"));
}

#[test]
fn bad_protobuf_is_rejected() {
    // Field 1 (timeseries) claims 5 bytes, 1 follows.
    let truncated = snap::raw::Encoder::new()
        .compress_vec(b"\x0a\x05\x01")
        .unwrap();
    let error = decode_write_request(&truncated, &Limits::default()).unwrap_err();
    assert!(matches!(error, RemoteWriteError::Protobuf(_)), "{error}");

    // A label value that is not UTF-8: Label { name: "a", value: 0xff }.
    let label = b"\x0a\x01a\x12\x01\xff";
    let mut series = vec![0x0a, label.len() as u8];
    series.extend_from_slice(label);
    let mut request = vec![0x0a, series.len() as u8];
    request.extend_from_slice(&series);
    let error = decode_uncompressed(&request, &Limits::default()).unwrap_err();
    assert!(matches!(error, RemoteWriteError::Protobuf(_)), "{error}");
}

#[test]
fn count_limits_are_enforced() {
    let limits = |f: fn(&mut Limits)| {
        let mut limits = Limits::default();
        f(&mut limits);
        limits
    };
    let payload = body(vec![
        up("a"),
        series(
            &[("__name__", "x"), ("a", "1"), ("b", "2")],
            &[(1.0, 1), (2.0, 2)],
        ),
    ]);
    let cases: Vec<(Limits, &str)> = vec![
        (
            limits(|l| l.max_series = 1),
            "request has more than 1 series",
        ),
        (
            limits(|l| l.max_samples = 2),
            "request has more than 2 samples",
        ),
        (
            limits(|l| l.max_labels_per_series = 2),
            "series 1: more than 2 labels",
        ),
    ];
    for (limits, message) in cases {
        let error = decode_write_request(&payload, &limits).unwrap_err();
        assert_eq!(error.to_string(), message);
        assert_eq!(error.http_status(), 400);
    }

    let mut with_exemplars = up("a");
    with_exemplars.exemplars = vec![Exemplar::default(); 3];
    let payload = body(vec![with_exemplars]);
    let error = decode_write_request(&payload, &limits(|l| l.max_exemplars = 2)).unwrap_err();
    assert!(matches!(
        error,
        RemoteWriteError::TooManyExemplars { limit: 2 }
    ));

    let metadata = encode_write_request(&WriteRequest {
        timeseries: Vec::new(),
        metadata: vec![MetricMetadata::default(); 3],
    })
    .unwrap();
    let error = decode_write_request(&metadata, &limits(|l| l.max_metadata = 2)).unwrap_err();
    assert!(matches!(
        error,
        RemoteWriteError::TooManyMetadata { limit: 2 }
    ));
}

#[test]
fn each_label_error_names_the_series() {
    let long = "x".repeat(5000);
    let cases: Vec<(TimeSeries, &str)> = vec![
        (
            series(&[("job", "a")], &[(1.0, 1)]),
            "series 1: missing metric name (__name__ label)",
        ),
        (
            series(&[("__name__", ""), ("job", "a")], &[(1.0, 1)]),
            "series 1: missing metric name (__name__ label)",
        ),
        (
            series(&[("", "v"), ("__name__", "up")], &[(1.0, 1)]),
            "series 1: empty label name",
        ),
        (
            series(&[("__name__", "1up")], &[(1.0, 1)]),
            "series 1: invalid metric name \"1up\"",
        ),
        (
            series(&[("__name__", "http.requests")], &[(1.0, 1)]),
            "series 1: invalid metric name \"http.requests\"",
        ),
        (
            series(&[("__name__", "up"), ("pod-name", "x")], &[(1.0, 1)]),
            "series 1: invalid label name \"pod-name\"",
        ),
        (
            series(
                &[("__name__", "up"), ("job", "a"), ("job", "b")],
                &[(1.0, 1)],
            ),
            "series 1: duplicate label name \"job\"",
        ),
        (
            series(&[("__name__", "up"), ("job", &long)], &[(1.0, 1)]),
            "series 1: value of label \"job\" is 5000 bytes, above the limit of 4096",
        ),
        (
            series(&[("__name__", "up")], &[(1.0, 2000), (2.0, 1000)]),
            "series 1: sample 1 at 1000 ms is older than the previous one at 2000 ms",
        ),
    ];
    for (bad, message) in cases {
        let error = decode(vec![up("ok"), bad]).unwrap_err();
        assert_eq!(error.to_string(), message);
        assert_eq!(error.series(), Some(1), "{message}");
        assert_eq!(error.http_status(), 400);
    }

    let long_name = "n".repeat(2000);
    let error = decode(vec![series(&[("__name__", "up"), (&long_name, "v")], &[])]).unwrap_err();
    assert!(
        matches!(&error, RemoteWriteError::LabelNameTooLong { series: 0, len: 2000, limit: 1024, name } if name.chars().count() == 65),
        "{error:?}"
    );
}

#[test]
fn unsorted_labels_are_sorted_by_default_or_rejected_when_asked() {
    let unsorted = series(
        &[("job", "a"), ("__name__", "up"), ("instance", "h:1")],
        &[(1.0, 1)],
    );
    let decoded = decode_write_request(&body(vec![unsorted.clone()]), &Limits::default()).unwrap();
    let names: Vec<&str> = decoded.request.timeseries[0]
        .labels
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["__name__", "instance", "job"]);
    assert_eq!(decoded.stats.resorted_series, 1);

    let strict = Limits {
        unsorted_labels: UnsortedLabels::Reject,
        ..Limits::default()
    };
    let error = decode_write_request(&body(vec![up("a"), unsorted]), &strict).unwrap_err();
    assert_eq!(
        error.to_string(),
        "series 1: labels not sorted by name (\"job\" is out of place)"
    );

    // Sorting happens before the duplicate check, so an unsorted duplicate is still caught.
    let error = decode(vec![series(
        &[("job", "a"), ("__name__", "up"), ("job", "b")],
        &[],
    )])
    .unwrap_err();
    assert!(matches!(
        error,
        RemoteWriteError::DuplicateLabelName { series: 0, .. }
    ));
}

#[test]
fn empty_label_values_are_dropped_and_equal_timestamps_pass() {
    let decoded = decode_write_request(
        &body(vec![series(
            &[("__name__", "up"), ("env", ""), ("job", "a")],
            &[(1.0, 5), (1.0, 5)],
        )]),
        &Limits::default(),
    )
    .unwrap();
    let series = &decoded.request.timeseries[0];
    assert_eq!(
        series.labels,
        [Label::new("__name__", "up"), Label::new("job", "a")]
    );
    assert_eq!(series.samples.len(), 2);
    assert_eq!(decoded.stats.empty_labels_removed, 1);
}

#[test]
fn utf8_name_validation_accepts_dotted_names() {
    let limits = Limits {
        name_validation: NameValidation::Utf8,
        ..Limits::default()
    };
    let payload = body(vec![series(
        &[
            ("__name__", "http.server.duration"),
            ("service.name", "cart"),
        ],
        &[(1.0, 1)],
    )]);
    let decoded = decode_write_request(&payload, &limits).unwrap();
    assert_eq!(
        decoded.request.timeseries[0].metric_name(),
        Some("http.server.duration")
    );
    assert!(decode_write_request(&payload, &Limits::default()).is_err());
}

#[test]
fn an_empty_request_is_valid() {
    let decoded = decode_write_request(&body(Vec::new()), &Limits::default()).unwrap();
    assert_eq!(decoded.request, WriteRequest::default());
}
