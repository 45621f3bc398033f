//! The packet path: AF_PACKET on the loopback interface. A known transfer gives
//! `l4_flow_log` payload bytes equal to what each side wrote, `flow_metrics.network` agrees,
//! and HTTP parsed from packets gives `signal_source = packet` rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{process::Command, time::Duration};

use common::*;

const TRANSFER: &str = r#"
import socket, sys, threading
port = int(sys.argv[1])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(1)
def serve():
    c, _ = srv.accept()
    got = 0
    while got < 100000:
        got += len(c.recv(65536))
    c.sendall(b"y" * 250000)
    c.close()
t = threading.Thread(target=serve); t.start()
cl = socket.create_connection(("127.0.0.1", port))
cl.sendall(b"x" * 100000)
got = 0
while got < 250000:
    data = cl.recv(65536)
    if not data: break
    got += len(data)
cl.close(); t.join()
assert got == 250000, got
"#;

#[test]
fn packet_path_counts_bytes_exactly_and_parses_http() {
    require(&["python3", "nginx", "curl"]);
    let work = tempfile::tempdir().unwrap();
    let (p_transfer, p_http) = (free_port(), free_port());
    let _nginx = Nginx::start(&[p_http]);
    let ports = format!("[{p_transfer}, {p_http}]");
    let node = FlowmeshNode::start(
        &work.path().join("data"),
        free_port(),
        &[
            ("FLOWMESH__PACKET__INTERFACES", "[\"lo\"]"),
            ("FLOWMESH__PACKET__PORTS", &ports),
            ("FLOWMESH__CAPTURE__ENABLED", "false"),
        ],
    );
    let status = Command::new("python3")
        .arg("-c")
        .arg(TRANSFER)
        .arg(p_transfer.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let mut last = Vec::new();
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            Duration::from_secs(15),
            "the closed flow's l4_flow_log row",
            || {
                let rows = node.sql(&format!(
                    "SELECT CAST(sum(l4_byte_tx) AS BIGINT), CAST(sum(l4_byte_rx) AS BIGINT), \
                     max(status), CASE WHEN bool_or(close_type = 'fin') THEN 'fin' END, \
                     CAST(max(rtt) AS BIGINT) \
                     FROM flow_log.l4_flow_log WHERE server_port = {p_transfer} AND protocol = 'TCP'"
                ));
                // a flow may get an interval report ("open") before its close ("fin")
                last = rows.clone();
                (rows[0][3] == "fin").then(|| rows[0].clone())
            },
        )
    }));
    let bytes = found.unwrap_or_else(|_| {
        // say what was there instead, to tell a capture problem from a storage one
        let all = node.sql(&format!(
            "SELECT * FROM flow_log.l4_flow_log WHERE server_port = {p_transfer}"
        ));
        let metrics = node.sql("SELECT name, value FROM system.metrics WHERE value > 0");
        panic!(
            "no closed l4_flow_log row for port {p_transfer}; last: {last:?}\nrows: {all:?}\n\
             metrics: {metrics:?}\nlog:\n{}",
            node.log_text()
        )
    });
    assert_eq!(
        (bytes[0].as_i64(), bytes[1].as_i64()),
        (Some(100_000), Some(250_000)),
        "{bytes:?}"
    );
    assert_eq!(bytes[2], "established");
    assert!(
        bytes[4].as_i64().unwrap() > 0,
        "handshake rtt measured: {bytes:?}"
    );
    let network = wait_for(
        Duration::from_secs(10),
        "flow_metrics.network to agree",
        || {
            let rows = node.sql(&format!(
            "SELECT CAST(sum(l4_byte_tx) AS BIGINT), CAST(sum(l4_byte_rx) AS BIGINT), CAST(sum(new_flow) AS BIGINT) \
             FROM flow_metrics.network WHERE server_port = {p_transfer}"
        ));
            (rows[0][0].as_i64() == Some(100_000)).then(|| rows[0].clone())
        },
    );
    assert_eq!(
        (network[1].as_i64(), network[2].as_i64()),
        (Some(250_000), Some(1)),
        "{network:?}"
    );

    for path in ["ok", "missing", "fail", "ok"] {
        let _ = Command::new("curl")
            .args(["-s", "-o", "/dev/null"])
            .arg(format!("http://127.0.0.1:{p_http}/{path}"))
            .status();
    }
    let rows = wait_for(Duration::from_secs(15), "HTTP rows from packets", || {
        let rows = node.counts(&format!(
            "SELECT concat(request_type, ' ', endpoint, ' ', CAST(response_code AS VARCHAR)), count(*) \
             FROM flow_log.l7_flow_log WHERE signal_source = 'packet' AND server_port = {p_http} GROUP BY 1"
        ));
        (rows.iter().map(|r| r.1).sum::<i64>() >= 4).then_some(rows)
    });
    assert_eq!(
        rows,
        vec![
            ("GET /fail 500".to_string(), 1),
            ("GET /missing 404".to_string(), 1),
            ("GET /ok 200".to_string(), 2)
        ],
        "eBPF capture is off, so every row comes from packets"
    );
}
