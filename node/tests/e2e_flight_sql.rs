//! Flight SQL against the real client: PyPI's `adbc_driver_flightsql` (the Go driver
//! behind ADBC) lists a node's tables, reads a table's schema, runs a statement and a
//! prepared statement with parameters, and gets the same Arrow data as `POST /v1/sql`.
//! With `flight_sql.token` set, no token or a wrong password is refused and counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{io::Cursor, process::Command};

use common::{FlowmeshNode, free_port};
use datafusion::arrow::{
    ipc::reader::StreamReader, record_batch::RecordBatch, util::pretty::pretty_format_batches,
};
use serde_json::Value;

const TOKEN: &str = "flight-e2e-token";
const LINES: &str = "cpu,host=a,dc=x usage=1.5,idle=90i 1763700000\n\
                     cpu,host=b,dc=x usage=2.5 1763700001\n\
                     cpu,host=c,dc=y usage=0.5,state=\"ok\" 1763700002\n\
                     mem,host=a used=10 1763700003\n";

fn read_stream(bytes: Vec<u8>) -> (Vec<(String, String)>, Vec<RecordBatch>) {
    let reader = StreamReader::try_new(Cursor::new(bytes), None).unwrap();
    let fields = reader
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect();
    (fields, reader.collect::<Result<Vec<_>, _>>().unwrap())
}

/// The same statement through `POST /v1/sql`, as Arrow IPC.
fn http_arrow(node: &FlowmeshNode, sql: &str) -> (Vec<(String, String)>, Vec<RecordBatch>) {
    let response = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{}/v1/sql", node.port))
        .header("Accept", "application/vnd.apache.arrow.stream")
        .body(sql.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{sql}");
    read_stream(response.bytes().unwrap().to_vec())
}

#[test]
fn adbc_lists_tables_and_gets_the_same_arrow_as_http() {
    let dir = tempfile::tempdir().unwrap();
    let (port, flight_port) = (free_port(), free_port());
    let node = FlowmeshNode::start(
        &dir.path().join("node"),
        port,
        &[
            ("FLOWMESH__CAPTURE__ENABLED", "false"),
            (
                "FLOWMESH__FLIGHT_SQL__LISTEN",
                &format!("127.0.0.1:{flight_port}"),
            ),
            ("FLOWMESH__FLIGHT_SQL__TOKEN", TOKEN),
        ],
    );
    let written = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v2/write?precision=s"))
        .body(LINES)
        .send()
        .unwrap();
    assert_eq!(written.status().as_u16(), 204);

    let statement = "SELECT time, measurement, tags, field, value, string_value \
                     FROM ext_metrics.metrics ORDER BY measurement, tags, field";
    let prepared = "SELECT tags, field, value FROM ext_metrics.metrics \
                    WHERE measurement = $1 AND value > $2 ORDER BY value";
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/flight_sql_client.py"
        ))
        .arg(flight_port.to_string())
        .arg(dir.path())
        .args([TOKEN, statement, prepared, "cpu", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the ADBC client failed (scripts/test.sh installs adbc-driver-flightsql and pyarrow):\n{stdout}\n{}\nnode log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log_text()
    );
    let seen: Value = serde_json::from_str(&stdout).unwrap();

    // GetSqlInfo, GetCatalogs/GetDbSchemas/GetTables and a table's schema
    assert_eq!(seen["info"]["vendor_name"], "flowmesh", "{seen}");
    let tables: Vec<&str> = seen["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for t in [
        "flow_log.l7_flow_log",
        "flow_log.l4_flow_log",
        "flow_metrics.application",
        "prometheus.samples",
        "ext_metrics.metrics",
        "system.metrics",
    ] {
        assert!(tables.contains(&t), "{t} not listed: {tables:?}");
    }
    let (http_fields, _) = http_arrow(&node, "SELECT * FROM ext_metrics.metrics LIMIT 0");
    let columns: Vec<&str> = seen["metrics_columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap())
        .collect();
    let http_columns: Vec<&str> = http_fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(columns, http_columns, "tags are shown as their strings");

    // a statement: the same Arrow data as POST /v1/sql, tags decoded
    let (flight_fields, flight) =
        read_stream(std::fs::read(dir.path().join("statement.arrow")).unwrap());
    let (http_fields, http) = http_arrow(&node, statement);
    let (flight_fields, http_fields): (Vec<_>, Vec<_>) = (
        flight_fields
            .iter()
            .map(|(n, t)| (n, t.replace("+00:00", "UTC")))
            .collect(),
        http_fields
            .iter()
            .map(|(n, t)| (n, t.replace("+00:00", "UTC")))
            .collect(),
    );
    assert_eq!(flight_fields, http_fields);
    let table = pretty_format_batches(&flight).unwrap().to_string();
    assert_eq!(table, pretty_format_batches(&http).unwrap().to_string());
    assert_eq!(
        flight.iter().map(RecordBatch::num_rows).sum::<usize>(),
        6,
        "{table}"
    );
    assert!(
        table.contains(r#"dc="y",host="c""#) && table.contains("| ok "),
        "{table}"
    );

    // a prepared statement: `$1` compares the tag through the dictionary, `$2` is an Int64
    // the client sent for a Float64 column
    let (_, prepared_out) = read_stream(std::fs::read(dir.path().join("prepared.arrow")).unwrap());
    let (_, expected) = http_arrow(
        &node,
        "SELECT tags, field, value FROM ext_metrics.metrics \
         WHERE measurement = 'cpu' AND value > 1 ORDER BY value",
    );
    let got = pretty_format_batches(&prepared_out).unwrap().to_string();
    assert_eq!(got, pretty_format_batches(&expected).unwrap().to_string());
    let rows: Vec<&str> = got.lines().filter(|l| l.contains("host=")).collect();
    assert_eq!(rows.len(), 3, "{got}");
    assert!(
        rows[0].contains("usage") && rows[0].contains("1.5"),
        "{got}"
    );
    assert!(rows[2].contains("idle") && rows[2].contains("90"), "{got}");

    // errors: the planner's message; authentication refused without the token
    let bad = seen["bad_query_error"].as_str().unwrap_or_default();
    assert!(
        bad.contains("nope") && bad.contains("INVALID_ARGUMENT"),
        "{seen}"
    );
    let refused = seen["no_token_error"].as_str().unwrap_or_default();
    assert!(refused.contains("UNAUTHENTICATED"), "{seen}");
    let wrong = seen["wrong_password_error"].as_str().unwrap_or_default();
    assert!(wrong.contains("UNAUTHENTICATED"), "{seen}");
    assert!(
        seen["right_password_error"].is_null(),
        "the token works as a password: {seen}"
    );

    assert!(node.metric("flowmesh_flight_sql_queries_total") >= 3.0);
    assert!(node.metric("flowmesh_flight_sql_client_errors_total") >= 1.0);
    assert!(node.metric("flowmesh_flight_sql_unauthenticated_total") >= 2.0);
}
