//! Decodes request bodies that a real Prometheus 2.42 sent (see fixtures/PROVENANCE.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowmesh_ingest::remote_write::{
    DecodedWriteRequest, Limits, STALE_NAN_BITS, TimeSeries, UnsortedLabels, decode_write_request,
    encode_write_request, is_stale_nan,
};

/// The capture ran around 2026-11-21T11:50:47Z; every sample is within a minute of it.
const CAPTURE_MS: std::ops::RangeInclusive<i64> = 1_795_261_800_000..=1_795_261_900_000;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("failed to read {path}: {e}"))
}

/// Decodes with unsorted labels rejected: Prometheus sorts them, so nothing may be re-sorted.
fn decode(name: &str) -> DecodedWriteRequest {
    let limits = Limits {
        unsorted_labels: UnsortedLabels::Reject,
        ..Limits::default()
    };
    decode_write_request(&fixture(name), &limits).unwrap()
}

fn find<'a>(decoded: &'a DecodedWriteRequest, labels: &[(&str, &str)]) -> Vec<&'a TimeSeries> {
    decoded
        .request
        .timeseries
        .iter()
        .filter(|series| labels.iter().all(|(n, v)| series.label(n) == Some(v)))
        .collect()
}

#[test]
fn fixtures_were_sent_with_the_remote_write_headers() {
    for name in ["remote_write_scrape", "remote_write_stale"] {
        let headers = String::from_utf8(fixture(&format!("{name}.headers.json"))).unwrap();
        for expected in [
            r#""Content-Encoding": "snappy""#,
            r#""Content-Type": "application/x-protobuf""#,
            r#""X-Prometheus-Remote-Write-Version": "0.1.0""#,
            r#""User-Agent": "Prometheus/2.42.0+ds""#,
        ] {
            assert!(headers.contains(expected), "{name}: {expected} missing");
        }
        let length = format!(
            r#""Content-Length": "{}""#,
            fixture(&format!("{name}.bin")).len()
        );
        assert!(headers.contains(&length), "{name}: body length differs");
    }
}

#[test]
fn scrape_body_has_up_for_both_jobs_and_the_demo_series() {
    let decoded = decode("remote_write_scrape.bin");
    let stats = decoded.stats;
    assert_eq!(stats.compressed_bytes, 10073);
    assert_eq!(stats.series, 500);
    assert_eq!(stats.samples, 500);
    assert_eq!(stats.resorted_series, 0);
    assert_eq!(stats.empty_labels_removed, 0);
    assert_eq!(stats.native_histograms, 0);
    assert!(decoded.request.metadata.is_empty());

    for job in ["prometheus", "demo"] {
        let up = find(&decoded, &[("__name__", "up"), ("job", job)]);
        assert_eq!(up.len(), 1, "up for job {job}");
        assert_eq!(up[0].labels.len(), 3, "__name__, instance, job");
        assert!(up[0].label("instance").unwrap().starts_with("127.0.0.1:"));
        assert_eq!(up[0].samples.len(), 1);
        assert_eq!(up[0].samples[0].value, 1.0);
    }
    let room = find(&decoded, &[("__name__", "demo_temperature_celsius")]);
    assert_eq!(room.len(), 1);
    assert_eq!(room[0].label("room"), Some("lab 1"));
    assert_eq!(room[0].samples[0].value, 21.5);
    let errors = find(
        &decoded,
        &[("__name__", "demo_requests_total"), ("code", "500")],
    );
    assert_eq!(errors[0].samples[0].value, 3.0);
}

#[test]
fn every_series_is_sorted_named_and_timestamped_in_the_capture_window() {
    for name in ["remote_write_scrape.bin", "remote_write_stale.bin"] {
        let decoded = decode(name);
        let mut last_seen: std::collections::HashMap<Vec<(String, String)>, i64> =
            std::collections::HashMap::new();
        for series in &decoded.request.timeseries {
            assert!(
                series.labels.windows(2).all(|p| p[0].name < p[1].name),
                "{name}: labels strictly sorted"
            );
            assert!(series.metric_name().is_some_and(|n| !n.is_empty()));
            assert!(series.label("job").is_some(), "{name}: job label");
            assert!(!series.samples.is_empty());
            let key: Vec<_> = series
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            for sample in &series.samples {
                assert!(
                    CAPTURE_MS.contains(&sample.timestamp_ms),
                    "{name}: {sample:?}"
                );
                // Prometheus sends a series' samples in order even across TimeSeries entries.
                let previous = last_seen.insert(key.clone(), sample.timestamp_ms);
                assert!(previous.is_none_or(|p| p <= sample.timestamp_ms));
            }
        }
    }
}

#[test]
fn stale_body_marks_the_vanished_demo_series_stale_bit_for_bit() {
    let decoded = decode("remote_write_stale.bin");
    let mut stale: Vec<String> = decoded
        .request
        .timeseries
        .iter()
        .filter(|s| s.samples.iter().any(|x| is_stale_nan(x.value)))
        .map(|s| {
            let extra = s.label("code").or(s.label("room")).unwrap_or("");
            format!("{}/{extra}", s.metric_name().unwrap())
        })
        .collect();
    stale.sort();
    assert_eq!(
        stale,
        [
            "demo_requests_total/200",
            "demo_requests_total/500",
            "demo_temperature_celsius/lab 1"
        ]
    );
    let up = find(&decoded, &[("__name__", "up"), ("job", "demo")]);
    assert_eq!(up[0].samples[0].value, 0.0);
    assert!(!is_stale_nan(up[0].samples[0].value));

    // Re-encoding keeps the marker's exact bits.
    let again = decode_write_request(
        &encode_write_request(&decoded.request).unwrap(),
        &Limits::default(),
    )
    .unwrap();
    let bits = |d: &DecodedWriteRequest| -> Vec<u64> {
        d.request
            .timeseries
            .iter()
            .flat_map(|s| s.samples.iter().map(|x| x.value.to_bits()))
            .collect()
    };
    assert_eq!(bits(&decoded), bits(&again));
    assert_eq!(
        bits(&again)
            .iter()
            .filter(|&&b| b == STALE_NAN_BITS)
            .count(),
        3
    );
}

#[test]
fn a_real_body_cut_short_is_rejected_not_half_decoded() {
    let body = fixture("remote_write_scrape.bin");
    for len in [0, 1, 2, body.len() / 2, body.len() - 1] {
        assert!(
            decode_write_request(&body[..len], &Limits::default()).is_err(),
            "prefix of {len} bytes"
        );
    }
}
