//! Metrics sent to a node: Prometheus from Debian scrapes prometheus-node-exporter and
//! remote_writes to flowmesh, whose `prometheus.samples` must hold exactly the samples
//! Prometheus itself stored; the PyPI `influxdb-client` writes line protocol (gzip) into
//! `ext_metrics.metrics`. Bad bodies get clear 4xx and never lose the good part.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{process::Command, time::Duration};

use common::{
    FlowmeshNode,
    prometheus::{node_with_prometheus, now_ms},
    require, wait_for,
};
use flowmesh_ingest::remote_write::{
    Label, Sample, TimeSeries, WriteRequest, encode_write_request,
};
use serde_json::Value;

fn post(url: &str, encoding: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let mut request = reqwest::blocking::Client::new().post(url).body(body);
    if let Some(e) = encoding {
        request = request.header("Content-Encoding", e);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.text().unwrap())
}

/// (ms, value) of one series in flowmesh over (from, to].
fn stored(node: &FlowmeshNode, metric: &str, labels: &str, from: i64, to: i64) -> Vec<(i64, f64)> {
    node.sql(&format!(
        "SELECT CAST(time AS BIGINT) / 1000, value FROM prometheus.samples \
         WHERE metric = '{metric}' AND labels = '{}' \
         AND time > to_timestamp_millis({from}) AND time <= to_timestamp_millis({to}) ORDER BY 1",
        labels.replace('\'', "''")
    ))
    .iter()
    .map(|r| (r[0].as_i64().unwrap(), r[1].as_f64().unwrap()))
    .collect()
}

/// Prometheus' own raw samples of `selector` over (at - range, at].
fn prometheus_samples(prom_port: u16, selector: &str, range_s: u32, at_ms: i64) -> Vec<(i64, f64)> {
    let body: Value = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{prom_port}/api/v1/query"))
        .query(&[
            ("query", format!("{selector}[{range_s}s]")),
            ("time", format!("{:.3}", at_ms as f64 / 1000.0)),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["status"], "success", "{body}");
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{selector}: {body}");
    result[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let ms = (v[0].as_f64().unwrap() * 1000.0).round() as i64;
            (ms, v[1].as_str().unwrap().parse::<f64>().unwrap())
        })
        .collect()
}

#[test]
fn prometheus_and_influx_clients_write_into_the_tables() {
    require(&["prometheus", "prometheus-node-exporter", "python3"]);
    let dir = tempfile::tempdir().unwrap();
    // a node with capture off, and Prometheus remote_writing to it
    let (node, prometheus) = node_with_prometheus(dir.path());
    let port = node.port;
    let base = format!("http://127.0.0.1:{port}");

    // 1. Prometheus scrapes node_exporter every second and remote_writes to flowmesh
    let (exporter_port, prom_port) = (prometheus.exporter_port, prometheus.port);
    let instance = format!("127.0.0.1:{exporter_port}");
    let up_labels = format!(r#"instance="{instance}",job="node""#);
    let cpu_labels = format!(r#"cpu="0",instance="{instance}",job="node",mode="idle""#);
    // a dozen scrapes, so that the window compared below is full
    wait_for(
        Duration::from_secs(90),
        "12 remote_written up samples",
        || (stored(&node, "up", &up_labels, 0, i64::MAX / 2000).len() >= 12).then_some(()),
    );
    // a window that Prometheus has certainly sent: wait until flowmesh holds later samples
    let at = now_ms();
    wait_for(
        Duration::from_secs(30),
        "remote_write to pass the window",
        || (!stored(&node, "up", &up_labels, at + 1000, i64::MAX / 2000).is_empty()).then_some(()),
    );
    for (metric, labels, selector) in [
        (
            "up",
            &up_labels,
            format!(r#"up{{job="node",instance="{instance}"}}"#),
        ),
        (
            "node_cpu_seconds_total",
            &cpu_labels,
            format!(r#"node_cpu_seconds_total{{cpu="0",mode="idle",instance="{instance}"}}"#),
        ),
    ] {
        let theirs = prometheus_samples(prom_port, &selector, 20, at);
        let ours = stored(&node, metric, labels, at - 20_000, at);
        assert!(theirs.len() >= 10, "{metric}: Prometheus has {theirs:?}");
        assert_eq!(
            ours, theirs,
            "{metric}: flowmesh's samples differ from Prometheus'"
        );
    }
    let series = node.sql(
        "SELECT count(DISTINCT labels) FROM prometheus.samples WHERE metric = 'node_cpu_seconds_total'",
    );
    assert!(
        series[0][0].as_i64().unwrap() >= 8,
        "cpu series: {series:?}"
    );

    // 2. bad bodies: clear 4xx; out-of-order refused, the rest of the request stored;
    // a resend stores nothing twice
    let write = format!("{base}/api/v1/write");
    let (code, text) = post(&write, Some("snappy"), b"not snappy at all".to_vec());
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("snappy"), "{text}");
    let (code, text) = post(&write, Some("gzip"), vec![0; 10]);
    assert_eq!(
        (code, text.contains("Content-Encoding")),
        (415, true),
        "{text}"
    );
    let label = |n: &str, v: &str| Label::new(n, v);
    let t0 = now_ms() - 60_000;
    let series = |name: &str, labels: Vec<Label>, samples: &[(i64, f64)]| TimeSeries {
        labels: std::iter::once(label("__name__", name))
            .chain(labels)
            .collect(),
        samples: samples
            .iter()
            .map(|&(timestamp_ms, value)| Sample {
                value,
                timestamp_ms,
            })
            .collect(),
        ..TimeSeries::default()
    };
    let request = WriteRequest {
        timeseries: vec![
            series(
                "e2e_written",
                vec![label("a", "x\"y")],
                &[(t0, 1.5), (t0 + 1000, -2.0)],
            ),
            // older than what Prometheus already sent for this series
            series(
                "up",
                vec![label("instance", &instance), label("job", "node")],
                &[(t0, 0.0)],
            ),
        ],
        ..WriteRequest::default()
    };
    let body = encode_write_request(&request).unwrap();
    let (code, text) = post(&write, Some("snappy"), body.clone());
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("out of order sample"), "{text}");
    let written =
        |node: &FlowmeshNode| stored(node, "e2e_written", r#"a="x\"y""#, 0, i64::MAX / 2000);
    assert_eq!(written(&node), vec![(t0, 1.5), (t0 + 1000, -2.0)]);
    let (code, _) = post(&write, Some("snappy"), body);
    assert_eq!(code, 400);
    assert_eq!(written(&node).len(), 2, "a resend is not stored twice");
    let up_at_t0 = stored(&node, "up", &up_labels, t0 - 1, t0);
    assert!(
        up_at_t0.is_empty(),
        "the out-of-order sample was stored: {up_at_t0:?}"
    );

    // 3. Influx line protocol from the influxdb-client library, gzip-compressed
    let t_ns = (now_ms() - 5000) * 1_000_000;
    let script = format!(
        r#"
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
with InfluxDBClient(url="{base}", token="t", org="o", enable_gzip=True) as c:
    w = c.write_api(write_options=SYNCHRONOUS)
    w.write(bucket="b", record=[
        Point("weather").tag("location", "Prague").tag("kind", "a b").field("temperature", 25.3)
            .field("humidity", 60).field("ok", True).field("note", "sunny").time({t_ns}, WritePrecision.NS),
        Point("weather").tag("location", "Brno").field("temperature", -1.5).time({t_ns}, WritePrecision.NS),
    ])
"#
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "influxdb-client write failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = node.sql(
        "SELECT measurement, tags, field, value, string_value, CAST(time AS BIGINT) \
         FROM ext_metrics.metrics ORDER BY tags, field",
    );
    let t_us = t_ns / 1000;
    let expect: Vec<Value> = vec![
        serde_json::json!([
            "weather",
            r#"kind="a b",location="Prague""#,
            "humidity",
            60.0,
            null,
            t_us
        ]),
        serde_json::json!([
            "weather",
            r#"kind="a b",location="Prague""#,
            "note",
            null,
            "sunny",
            t_us
        ]),
        serde_json::json!([
            "weather",
            r#"kind="a b",location="Prague""#,
            "ok",
            1.0,
            null,
            t_us
        ]),
        serde_json::json!([
            "weather",
            r#"kind="a b",location="Prague""#,
            "temperature",
            25.3,
            null,
            t_us
        ]),
        serde_json::json!([
            "weather",
            r#"location="Brno""#,
            "temperature",
            -1.5,
            null,
            t_us
        ]),
    ];
    assert_eq!(
        rows.into_iter().map(Value::from).collect::<Vec<_>>(),
        expect
    );

    // a body with a bad line: the good lines are stored, 400 names the bad one
    let (code, text) = post(
        &format!("{base}/api/v2/write?org=o&bucket=b&precision=s"),
        None,
        b"disk,host=h1 used=1i 1700000000\ndisk,host=h1 used=\ndisk,host=h2 used=3i 1700000000\n"
            .to_vec(),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("line 2"), "{text}");
    let disk = node.sql(
        "SELECT tags, value, CAST(time AS BIGINT) FROM ext_metrics.metrics \
         WHERE measurement = 'disk' ORDER BY tags",
    );
    assert_eq!(
        disk,
        vec![
            vec![
                Value::from(r#"host="h1""#),
                Value::from(1.0),
                Value::from(1_700_000_000_000_000i64)
            ],
            vec![
                Value::from(r#"host="h2""#),
                Value::from(3.0),
                Value::from(1_700_000_000_000_000i64)
            ],
        ]
    );
    // 4. the points through PromQL: `<measurement>_<field>` with their tags as labels,
    // the values exactly as written; string fields are not samples; names and tag keys
    // escaped as Prometheus escapes what it does not allow
    let (code, text) = post(
        &format!("{base}/api/v2/write?precision=s"),
        None,
        b"cpu-load,host-name=h1 usage.user=0.5 1700000000\n".to_vec(),
    );
    assert_eq!(code, 204, "{text}");
    let t_ms = t_ns / 1_000_000;
    let at = format!("{}.{:03}", t_ms / 1000, t_ms % 1000);
    let series = |pairs: &[(&str, &str)], value: f64| {
        let labels = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (labels, value)
    };
    assert_eq!(
        node.promql("weather_temperature", &at),
        vec![
            series(
                &[
                    ("__name__", "weather_temperature"),
                    ("kind", "a b"),
                    ("location", "Prague")
                ],
                25.3
            ),
            series(
                &[("__name__", "weather_temperature"), ("location", "Brno")],
                -1.5
            ),
        ]
    );
    assert_eq!(
        node.promql(r#"weather_humidity{location="Prague"}"#, &at),
        vec![series(
            &[
                ("__name__", "weather_humidity"),
                ("kind", "a b"),
                ("location", "Prague")
            ],
            60.0
        )]
    );
    assert_eq!(node.promql(r#"{__name__="weather_ok"}"#, &at)[0].1, 1.0);
    assert!(node.promql("weather_note", &at).is_empty());
    // the lookback ends 5 minutes after a point, as for any Prometheus sample
    let later = format!("{}", t_ms / 1000 + 301);
    assert!(node.promql("weather_temperature", &later).is_empty());
    assert_eq!(
        node.promql(r#"sum by (host) (disk_used)"#, "1700000000"),
        vec![
            series(&[("host", "h1")], 1.0),
            series(&[("host", "h2")], 3.0)
        ]
    );
    assert_eq!(
        node.promql(r#"cpu_load_usage_user{host_name="h1"}"#, "1700000000"),
        vec![series(
            &[("__name__", "cpu_load_usage_user"), ("host_name", "h1")],
            0.5
        )]
    );
    let names = node.prom_api("label/__name__/values", &[]);
    for name in [
        "weather_temperature",
        "weather_humidity",
        "cpu_load_usage_user",
        "up",
    ] {
        assert!(
            names.as_array().unwrap().contains(&Value::from(name)),
            "{name}: {names}"
        );
    }
    assert!(
        !names
            .as_array()
            .unwrap()
            .contains(&Value::from("weather_note"))
    );
    let found = node.prom_api("series", &[("match[]", r#"{__name__=~"weather_.+"}"#)]);
    assert_eq!(found.as_array().unwrap().len(), 4, "{found}");
    assert_eq!(
        node.prom_api("label/location/values", &[]),
        serde_json::json!(["Brno", "Prague"])
    );

    let (code, text) = post(
        &format!("{base}/api/v2/write?precision=hours"),
        None,
        b"m f=1".to_vec(),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("precision"), "{text}");

    // the counters
    let metrics = reqwest::blocking::get(format!("{base}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    for counter in [
        "flowmesh_ingest_remote_write_samples_total",
        "flowmesh_ingest_remote_write_out_of_order_samples_total",
        "flowmesh_ingest_line_protocol_rejected_lines_total",
    ] {
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{counter} ")))
            .unwrap_or_else(|| panic!("{counter} missing"))
            .trim()
            .parse()
            .unwrap();
        assert!(value >= 1.0, "{counter} = {value}");
    }
}
