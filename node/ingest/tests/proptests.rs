//! Properties of both decoders: no input panics them, and encoding round-trips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowmesh_ingest::line_protocol::{self, FieldValue, Point, Precision};
use flowmesh_ingest::remote_write::{
    self, Label, Sample, TimeSeries, WriteRequest, decode_uncompressed, decode_write_request,
    encode_write_request,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

const PRECISIONS: [Precision; 4] = [
    Precision::Nanoseconds,
    Precision::Microseconds,
    Precision::Milliseconds,
    Precision::Seconds,
];

/// Parses `body` with every precision; every point must write back to a line that parses to
/// the same point, and writes the same way again (which also pins the sign of zero).
fn check_line_protocol(body: &[u8]) {
    for precision in PRECISIONS {
        let parsed =
            line_protocol::parse(body, precision, &line_protocol::Limits::default()).unwrap();
        for point in &parsed.points {
            let line = point.to_line().unwrap();
            let again = line_protocol::parse_line(&line, Precision::Nanoseconds)
                .unwrap()
                .unwrap();
            assert_eq!(&again, point, "{line}");
            assert_eq!(again.to_line().unwrap(), line);
        }
    }
}

/// Text rich in line protocol's special characters.
fn tricky_text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(r#"[a-z0-9 ,="\\#_.\t'é🚀-]{{1,{max}}}"#)).unwrap()
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        any::<f64>()
            .prop_filter("line protocol floats are finite", |v| v.is_finite())
            .prop_map(FieldValue::Float),
        any::<i64>().prop_map(FieldValue::Integer),
        any::<u64>().prop_map(FieldValue::UInteger),
        any::<bool>().prop_map(FieldValue::Boolean),
        proptest::string::string_regex(r#"[a-z "\\,=\r🚀]{0,12}"#)
            .unwrap()
            .prop_map(FieldValue::String),
    ]
}

fn point() -> impl Strategy<Value = Point> {
    (
        tricky_text(10).prop_filter("a line cannot start with # or a tab", |m| {
            !m.starts_with(['#', '\t'])
        }),
        btree_map(tricky_text(6), tricky_text(6), 0..4),
        btree_map(tricky_text(6), field_value(), 1..5),
        proptest::option::of(line_protocol::MIN_TIMESTAMP_NS..=line_protocol::MAX_TIMESTAMP_NS),
    )
        .prop_map(|(measurement, tags, fields, timestamp_ns)| Point {
            measurement,
            tags: tags.into_iter().collect(),
            fields: fields.into_iter().collect(),
            timestamp_ns,
        })
}

fn series() -> impl Strategy<Value = TimeSeries> {
    (
        proptest::string::string_regex("[a-zA-Z_:][a-zA-Z0-9_:]{0,12}").unwrap(),
        btree_map(
            proptest::string::string_regex("[a-zA-Z_][a-zA-Z0-9_]{0,8}").unwrap(),
            proptest::string::string_regex(r"\PC{1,8}").unwrap(),
            0..6,
        ),
        vec((any::<u64>(), any::<i64>()), 0..6),
    )
        .prop_flat_map(|(metric, labels, samples)| {
            let mut labels = labels;
            labels.insert(remote_write::METRIC_NAME_LABEL.to_owned(), metric);
            let labels: Vec<Label> = labels.into_iter().map(|(n, v)| Label::new(n, v)).collect();
            let mut samples = samples;
            samples.sort_by_key(|&(_, timestamp_ms)| timestamp_ms);
            let samples: Vec<Sample> = samples
                .into_iter()
                .map(|(bits, timestamp_ms)| Sample {
                    value: f64::from_bits(bits),
                    timestamp_ms,
                })
                .collect();
            Just(labels)
                .prop_shuffle()
                .prop_map(move |labels| TimeSeries {
                    labels,
                    samples: samples.clone(),
                    ..TimeSeries::default()
                })
        })
}

fn sample_bits(request: &WriteRequest) -> Vec<Vec<(u64, i64)>> {
    request
        .timeseries
        .iter()
        .map(|s| {
            s.samples
                .iter()
                .map(|x| (x.value.to_bits(), x.timestamp_ms))
                .collect()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn remote_write_never_panics_on_bytes(bytes in vec(any::<u8>(), 0..512)) {
        let limits = remote_write::Limits::default();
        let _ = decode_write_request(&bytes, &limits);
        let _ = decode_uncompressed(&bytes, &limits);
        // The same bytes as a valid snappy block, to reach the protobuf decoder.
        let compressed = snap::raw::Encoder::new().compress_vec(&bytes).unwrap();
        let _ = decode_write_request(&compressed, &limits);
    }

    #[test]
    fn remote_write_round_trips(timeseries in vec(series(), 0..5)) {
        let request = WriteRequest { timeseries, metadata: Vec::new() };
        let decoded =
            decode_write_request(&encode_write_request(&request).unwrap(), &Default::default())
                .unwrap();
        let unsorted = request
            .timeseries
            .iter()
            .filter(|s| s.labels.windows(2).any(|p| p[0].name > p[1].name))
            .count();
        prop_assert_eq!(decoded.stats.resorted_series, unsorted);
        for (before, after) in request.timeseries.iter().zip(&decoded.request.timeseries) {
            let mut sorted = before.labels.clone();
            sorted.sort();
            prop_assert_eq!(&after.labels, &sorted);
        }
        prop_assert_eq!(sample_bits(&decoded.request), sample_bits(&request));
    }

    #[test]
    fn line_protocol_never_panics_on_bytes(bytes in vec(any::<u8>(), 0..512)) {
        check_line_protocol(&bytes);
    }

    #[test]
    fn line_protocol_never_panics_on_near_miss_text(
        body in proptest::string::string_regex(r#"[a-z0-9 ,="\\#\n\r\t.eEiutfTF+-]{0,200}"#).unwrap()
    ) {
        check_line_protocol(body.as_bytes());
    }

    #[test]
    fn points_round_trip_through_to_line(points in vec(point(), 1..8)) {
        let mut body = String::new();
        for point in &points {
            point.write_line(&mut body).unwrap();
            body.push('\n');
        }
        let parsed = line_protocol::parse(
            body.as_bytes(),
            Precision::Nanoseconds,
            &line_protocol::Limits::default(),
        )
        .unwrap();
        prop_assert!(parsed.rejected.is_empty(), "{:?}\n{}", parsed.rejected, body);
        prop_assert_eq!(parsed.points, points);
    }
}
