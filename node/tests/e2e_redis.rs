//! Redis from Debian under redis-benchmark, with and without pipelining: the Redis rows per
//! command equal what the benchmark sent (±0.5%), at the server and at the client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{process::Command, time::Duration};

use common::{servers, *};

const N: i64 = 20_000;
const COMMANDS: [&str; 4] = ["SET", "GET", "INCR", "LPUSH"];

fn per_command(node: &FlowmeshNode, port: u16, point: &str) -> Vec<(String, i64)> {
    node.counts(&format!(
        "SELECT request_type, count(*) FROM flow_log.l7_flow_log WHERE l7_protocol = 'Redis' \
         AND server_port = {port} AND observation_point = '{point}' \
         AND request_type IN ('SET', 'GET', 'INCR', 'LPUSH') GROUP BY 1"
    ))
}

fn within_half_percent(counts: &[(String, i64)]) -> bool {
    counts.len() == COMMANDS.len() && counts.iter().all(|(_, n)| (n - N).abs() * 1000 <= N * 5)
}

fn benchmark(port: u16, pipeline: u32) {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-n",
            &N.to_string(),
            "-t",
            "set,get,incr,lpush",
            "-q",
        ])
        .args(["-P", &pipeline.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redis-benchmark failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for c in COMMANDS {
        assert!(
            text.contains(&format!("{c}:")),
            "benchmark output lacks {c}: {text}"
        );
    }
}

#[test]
fn redis_benchmark_rows_match_per_command() {
    require(&["redis-server", "redis-benchmark"]);
    let work = tempfile::tempdir().unwrap();
    let node = FlowmeshNode::start(&work.path().join("data"), free_port(), &[]);
    for pipeline in [1, 16] {
        let redis = servers::redis();
        benchmark(redis.port, pipeline);
        for point in ["server", "client"] {
            let counts = wait_for(
                Duration::from_secs(20),
                &format!("{point} rows per command (-P {pipeline})"),
                || {
                    let c = per_command(&node, redis.port, point);
                    within_half_percent(&c).then_some(c)
                },
            );
            eprintln!("-P {pipeline} {point}: {counts:?}");
        }
        let errors = node.sql(&format!(
            "SELECT count(*) FROM flow_log.l7_flow_log WHERE server_port = {} AND response_status <> 'ok'",
            redis.port
        ));
        assert_eq!(
            errors[0][0].as_i64(),
            Some(0),
            "benchmark commands all succeed"
        );
    }
    let lost = node.sql(
        "SELECT CAST(sum(value) AS BIGINT) FROM system.metrics WHERE name IN \
         ('flowmesh_capture_kernel_lost_events_total', 'flowmesh_capture_dropped_rows_total')",
    );
    eprintln!("lost events + dropped rows: {:?}", lost[0][0]);
}
