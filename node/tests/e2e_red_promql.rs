//! Captured RED metrics through the Prometheus API (docs/decisions/0004): nginx from
//! Debian on a fresh port, one curl process per request, a real `flowmesh` node capturing
//! with eBPF, and PromQL answers that must equal the number of requests made.
//!
//! Which query is exact, and why: `increase(c[w])` evaluated at a whole second `t` is
//! exact when the window holds the series' `0` sample (1 ms before its first busy second,
//! so `w` reaches past the first row) and a sample at `t` (the series reports every
//! second of its hour, so `t` is its last busy second). A counter's first value of 0
//! leaves nothing to extrapolate at the start (Prometheus' zero point), and a sample at
//! `t` leaves nothing at the end. So `increase` is the count of the rows, which must be the
//! count of requests. An hourly restart inside the window is a counter reset that
//! `increase` adds back; each endpoint is its own series, with its own `t`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// (path, status, requests): one series per path at the server.
const REQUESTS: [(&str, u16, usize); 3] = [("ok", 200, 30), ("missing", 404, 12), ("fail", 500, 5)];

fn total() -> i64 {
    REQUESTS.iter().map(|r| r.2 as i64).sum()
}

#[test]
fn red_counters_answer_promql_exactly() {
    require(&["nginx", "curl"]);
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let _nginx = Nginx::start(&[port]);
    let node = FlowmeshNode::start(&work.path().join("data"), free_port(), &[]);

    for (path, code, n) in REQUESTS {
        curl_many(&format!("http://127.0.0.1:{port}/{path}"), n, code);
    }
    // every second of that traffic closed and stored at the server side
    wait_for(
        Duration::from_secs(15),
        "flow_metrics.application to count every request",
        || {
            let rows = node.sql(&format!(
                "SELECT CAST(coalesce(sum(request), 0) AS BIGINT) FROM flow_metrics.application \
                 WHERE server_port = {port} AND observation_point = 'server'"
            ));
            (rows[0][0].as_i64() == Some(total())).then_some(())
        },
    );

    for (path, _, n) in REQUESTS {
        let n = n as f64;
        // the series' first and last busy seconds
        let bounds = node.sql(&format!(
            "SELECT CAST(min(time) AS BIGINT), CAST(max(time) AS BIGINT) FROM flow_metrics.application \
             WHERE server_port = {port} AND observation_point = 'server' AND endpoint = '/{path}'"
        ));
        let first = bounds[0][0].as_i64().unwrap() / 1_000_000;
        let last = bounds[0][1].as_i64().unwrap() / 1_000_000;
        let window = last - first + 60;
        let at = last.to_string();
        let selector =
            format!(r#"{{observation_point="server",server_port="{port}",endpoint="/{path}"}}"#);
        let increase = |metric: &str| {
            let got = node.promql(
                &format!("sum(increase(flowmesh_application_{metric}{selector}[{window}s]))"),
                &at,
            );
            assert_eq!(got.len(), 1, "{metric} /{path}: {got:?}");
            got[0].1
        };
        assert_eq!(increase("request_total"), n, "requests to /{path}");
        assert_eq!(increase("response_total"), n, "responses of /{path}");
        let (client_errors, server_errors) = match path {
            "missing" => (n, 0.0),
            "fail" => (0.0, n),
            _ => (0.0, 0.0),
        };
        assert_eq!(increase("client_error_total"), client_errors, "/{path}");
        assert_eq!(increase("server_error_total"), server_errors, "/{path}");
        // rate is the same count over the window's seconds
        let rate = node.promql(
            &format!("sum(rate(flowmesh_application_request_total{selector}[{window}s]))"),
            &at,
        );
        let expected = n / window as f64;
        assert!(
            (rate[0].1 - expected).abs() < 1e-12 * expected,
            "rate of /{path}: {rate:?}, expected {expected}"
        );

        // the series and its labels, the key columns as strings
        let got = node.promql(
            &format!("flowmesh_application_request_total{selector}"),
            &at,
        );
        assert_eq!(got.len(), 1, "{got:?}");
        let (labels, value) = &got[0];
        let expect = [
            ("__name__", "flowmesh_application_request_total".to_string()),
            ("auto_service", format!("nginx:{port}")),
            ("endpoint", format!("/{path}")),
            ("ip", "127.0.0.1".into()),
            ("l7_protocol", "HTTP".into()),
            ("observation_point", "server".into()),
            ("process_kname", "nginx".into()),
            ("server_port", port.to_string()),
            ("signal_source", "ebpf".into()),
        ];
        assert_eq!(
            labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect::<Vec<_>>(),
            expect,
            "/{path}"
        );
        // the raw value counts from the start of the UTC hour
        if first / 3600 == last / 3600 {
            assert_eq!(*value, n, "/{path} within one hour");
        }
        // the mean response time from the summary: a real duration, well under a second
        let mean = node.promql(
            &format!(
                "sum(increase(flowmesh_application_rrt_seconds_sum{selector}[{window}s])) \
                 / sum(increase(flowmesh_application_rrt_seconds_count{selector}[{window}s]))"
            ),
            &at,
        );
        assert!(
            mean[0].1 > 0.0 && mean[0].1 < 1.0,
            "mean response time of /{path}: {mean:?}"
        );
        let max = node.promql(
            &format!("max_over_time(flowmesh_application_rrt_max_seconds{selector}[{window}s])"),
            &at,
        );
        assert!(max[0].1 >= mean[0].1, "/{path}: max {max:?}, mean {mean:?}");
    }

    // what a Grafana panel asks: requests per second per service
    let last = node.sql(&format!(
        "SELECT CAST(max(time) AS BIGINT) FROM flow_metrics.application WHERE server_port = {port}"
    ))[0][0]
        .as_i64()
        .unwrap()
        / 1_000_000;
    let per_service = node.promql(
        &format!(
            r#"sum by (auto_service) (rate(flowmesh_application_request_total{{observation_point="server",server_port="{port}"}}[5m]))"#
        ),
        &last.to_string(),
    );
    assert_eq!(per_service.len(), 1, "{per_service:?}");
    assert_eq!(per_service[0].0["auto_service"], format!("nginx:{port}"));
    assert!(per_service[0].1 > 0.0);

    // the series, names and metadata endpoints know the metrics
    let found = node.prom_api(
        "series",
        &[(
            "match[]",
            &format!(r#"flowmesh_application_request_total{{server_port="{port}",observation_point="server"}}"#),
        )],
    );
    let mut endpoints: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["endpoint"].as_str().unwrap())
        .collect();
    endpoints.sort_unstable();
    assert_eq!(endpoints, vec!["/fail", "/missing", "/ok"], "{found}");
    let names = node.prom_api("label/__name__/values", &[]);
    for name in [
        "flowmesh_application_request_total",
        "flowmesh_application_map_request_total",
        "flowmesh_application_rrt_max_seconds",
    ] {
        assert!(
            names.as_array().unwrap().contains(&Value::from(name)),
            "{name}: {names}"
        );
    }
    let metadata = node.prom_api(
        "metadata",
        &[("metric", "flowmesh_application_rrt_seconds")],
    );
    assert_eq!(
        metadata["flowmesh_application_rrt_seconds"][0]["type"],
        "summary"
    );
    // a name that fits nothing, a bad matcher: empty, and a clear error
    assert!(
        node.promql("flowmesh_application_nope_total", &last.to_string())
            .is_empty()
    );
    let response = reqwest::blocking::get(format!(
        "http://127.0.0.1:{}/prom/api/v1/query?query=flowmesh_application_request_total%7Bendpoint%3D~%22(%22%7D",
        node.port
    ))
    .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(
        !node.log_text().contains("panicked"),
        "a panic in the node log:\n{}",
        node.log_text()
    );
}
