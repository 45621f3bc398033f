//! Six `flowmesh` processes in two regions of three, each in its own network namespace with
//! its own address (brought up by `deploy/mesh.sh`, the script users run), each with its own
//! shard and each region with its own dictionary (Raft group), joined through libp2p. From
//! every node, a global query answers exactly the totals of all six shards; a region's query
//! touches only that region's nodes (their own counters say so); a node killed with -9 makes
//! answers partial and names it (an error with `strict`), and its restart makes them whole.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, process::Command};

use common::{NodeApi, mesh::Mesh, run_ok};
use serde_json::Value;

const TOKEN: &str = "mesh-e2e-token";
const REGIONS: [&str; 2] = ["r1", "r2"];
const SERVICES: [&str; 3] = ["cart", "user", "db"];

/// Rows node `i` (0-based) holds: (service, value) points of measurement `svc_<service>`.
fn points(i: usize) -> Vec<(&'static str, f64)> {
    (0..(5 + 3 * i))
        .map(|k| (SERVICES[(i + k) % 3], (k * 10 + i) as f64))
        .collect()
}

fn write_points(node: &NodeApi, i: usize) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body: String = points(i)
        .iter()
        .enumerate()
        .map(|(k, (service, v))| {
            format!(
                "svc_{service},host=n{},k={k} value={v} {}\n",
                i + 1,
                now - 60 + k as u64
            )
        })
        .collect();
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/api/v2/write?precision=s", node.base))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204, "{}", resp.text().unwrap());
}

const BY_REGION: &str =
    "SELECT region, count(*) AS n FROM ext_metrics.metrics GROUP BY region ORDER BY region";
const BY_SERVICE: &str = "SELECT measurement, sum(value) AS s, count(*) AS n, avg(value) AS a \
     FROM ext_metrics.metrics GROUP BY measurement ORDER BY measurement";

fn rows(body: &Value) -> Vec<Vec<Value>> {
    body["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {body}"))
        .iter()
        .map(|r| r.as_array().unwrap().clone())
        .collect()
}

fn expected_by_region(nodes: &[usize]) -> Vec<(String, i64)> {
    let mut m: BTreeMap<String, i64> = BTreeMap::new();
    for &i in nodes {
        *m.entry(REGIONS[i / 3].to_string()).or_default() += points(i).len() as i64;
    }
    m.into_iter().collect()
}

fn expected_by_service(nodes: &[usize]) -> Vec<(String, f64, i64)> {
    let mut m: BTreeMap<String, (f64, i64)> = BTreeMap::new();
    for &i in nodes {
        for (s, v) in points(i) {
            let e = m.entry(format!("svc_{s}")).or_default();
            e.0 += v;
            e.1 += 1;
        }
    }
    m.into_iter().map(|(k, (s, n))| (k, s, n)).collect()
}

fn by_region(body: &Value) -> Vec<(String, i64)> {
    rows(body)
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_i64().unwrap()))
        .collect()
}

fn by_service(body: &Value) -> Vec<(String, f64, i64)> {
    rows(body)
        .iter()
        .map(|r| {
            let (s, n, a) = (
                r[1].as_f64().unwrap(),
                r[2].as_i64().unwrap(),
                r[3].as_f64().unwrap(),
            );
            assert!((a - s / n as f64).abs() < 1e-9, "avg {a} != {s}/{n}");
            (r[0].as_str().unwrap().to_string(), s, n)
        })
        .collect()
}

/// How many `cart` points the nodes hold.
fn carts(nodes: &[usize]) -> f64 {
    nodes
        .iter()
        .map(|&i| points(i).iter().filter(|(s, _)| *s == "cart").count())
        .sum::<usize>() as f64
}

/// PromQL's count of `cart` points at `scope` (the node's default when `None`): the value
/// and the response's warnings.
fn promql_carts(node: &NodeApi, scope: Option<&str>) -> (f64, Vec<String>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut params = vec![
        ("query", "sum(count_over_time(svc_cart_value[10m]))"),
        ("time", now.as_str()),
    ];
    if let Some(scope) = scope {
        params.push(("scope", scope));
    }
    let body: Value = reqwest::blocking::Client::new()
        .get(format!("{}/prom/api/v1/query", node.base))
        .query(&params)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["status"], "success", "{body}");
    let value = body["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .parse()
        .unwrap();
    let warnings = body["warnings"]
        .as_array()
        .map(|w| w.iter().map(|w| w.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    (value, warnings)
}

fn served(mesh: &Mesh) -> Vec<f64> {
    mesh.nodes
        .iter()
        .map(|n| n.metric("flowmesh_mesh_fragments_served_total"))
        .collect()
}

/// Runs `query`; returns what it returned and the fragments each node served meanwhile.
fn served_during<T>(mesh: &Mesh, query: impl FnOnce() -> T) -> (T, Vec<f64>) {
    let before = served(mesh);
    let out = query();
    let delta = served(mesh)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    (out, delta)
}

#[test]
fn six_nodes_in_two_regions_answer_global_region_and_partial_queries() {
    common::require(&["python3", "ip", "curl"]);
    let mesh = Mesh::up(214, 6, 2, TOKEN, &[]);
    for (i, node) in mesh.nodes.iter().enumerate() {
        write_points(node, i);
    }
    let all: Vec<usize> = (0..6).collect();

    // every node's own shard holds only its rows (each writer tags its points with its host,
    // as Telegraf does: series with the same labels on two nodes would be one series)
    for (i, node) in mesh.nodes.iter().enumerate() {
        let (code, body) = node.sql_scoped(BY_REGION, "node", false);
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            by_region(&body),
            expected_by_region(&[i]),
            "{}",
            mesh.names[i]
        );
    }

    // global, from every entry point: exactly the six shards' totals
    for (i, node) in mesh.nodes.iter().enumerate() {
        let name = &mesh.names[i];
        let (code, body) = node.sql_scoped(BY_REGION, "global", false);
        assert_eq!(code, 200, "{name}: {body}");
        assert_eq!(
            by_region(&body),
            expected_by_region(&all),
            "{name}: {body}\n{}",
            mesh.warnings(i)
        );
        assert_eq!(body["partial"], false, "{body}");
        let (code, body) = node.sql_scoped(BY_SERVICE, "global", false);
        assert_eq!(code, 200, "{name}: {body}");
        assert_eq!(by_service(&body), expected_by_service(&all), "{name}");
        let mut nodes: Vec<String> = body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        nodes.sort();
        assert_eq!(nodes, mesh.names, "{body}");
    }

    // the default scope is the entry node's region; its other nodes serve, the other
    // region's nodes are not touched
    let ((code, body), delta) = served_during(&mesh, || {
        mesh.nodes[0].sql_scoped(BY_REGION, "region", false)
    });
    assert_eq!(code, 200, "{body}");
    assert_eq!(by_region(&body), expected_by_region(&[0, 1, 2]));
    assert_eq!(
        delta,
        [0.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        "fragments served per node"
    );

    // a region filter chooses the region, from a node outside it
    let (r2, delta) = served_during(&mesh, || {
        mesh.nodes[0].sql("SELECT count(*) FROM ext_metrics.metrics WHERE region = 'r2'")
    });
    let r2_rows: i64 = (3..6).map(|i| points(i).len() as i64).sum();
    assert_eq!(r2[0][0].as_i64().unwrap(), r2_rows);
    // r1 is not asked; r2's merger (n4) is asked once and asks n5 and n6 once each
    assert_eq!(
        delta,
        [0.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        "fragments served per node"
    );

    // only partials cross the region boundary: a global count brings one row per region
    let bytes = |n: &NodeApi| n.metric("flowmesh_mesh_cross_region_received_bytes_total");
    let before = bytes(&mesh.nodes[0]);
    let (code, _) = mesh.nodes[0].sql_scoped(BY_REGION, "global", false);
    assert_eq!(code, 200);
    let crossed = bytes(&mesh.nodes[0]) - before;
    assert!(crossed > 0.0 && crossed < 4096.0, "{crossed} bytes crossed");

    // Flight SQL clients choose the scope with a header (ADBC: a call header option);
    // without it, the node's default scope (its region)
    let adbc = |header: Option<&str>, settings: &str| -> Vec<(String, i64)> {
        let kwargs = header
            .map(|h| format!("'adbc.flight.sql.rpc.call_header.x-flowmesh-scope': '{h}'"))
            .unwrap_or_default();
        let out = run_ok(Command::new("python3").arg("-c").arg(format!(
                "import adbc_driver_flightsql.dbapi as d, json\n\
                 c = d.connect('grpc://{host}:20417', db_kwargs={{{kwargs}}})\n\
                 cur = c.cursor()\n\
                 cur.execute(\"{settings}{BY_REGION}\")\n\
                 print(json.dumps([list(r) for r in cur.fetchall()]))\n\
                 cur.close(); c.close()\n",
                host = mesh.nodes[0]
                    .base
                    .trim_start_matches("http://")
                    .split(':')
                    .next()
                    .unwrap(),
            )));
        let rows: Vec<(String, i64)> = serde_json::from_slice(&out.stdout).unwrap();
        rows
    };
    assert_eq!(adbc(Some("global"), ""), expected_by_region(&all));
    assert_eq!(adbc(None, ""), expected_by_region(&[0, 1, 2]));
    assert_eq!(adbc(Some("region:r2"), ""), expected_by_region(&[3, 4, 5]));
    // or with a setting in the SQL itself, for clients that cannot add headers; over HTTP too
    let global = "SET flowmesh.scope = 'global'; ";
    assert_eq!(adbc(None, global), expected_by_region(&all));
    let (code, body) = mesh.nodes[0].sql_raw(&format!("{global}{BY_REGION}"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(by_region(&body), expected_by_region(&all));

    // PromQL reads the same scopes (a `scope` parameter, else the node's default)
    assert_eq!(
        promql_carts(&mesh.nodes[0], Some("global")),
        (carts(&all), vec![])
    );
    assert_eq!(
        promql_carts(&mesh.nodes[0], None),
        (carts(&[0, 1, 2]), vec![])
    );
    assert_eq!(
        promql_carts(&mesh.nodes[4], None),
        (carts(&[3, 4, 5]), vec![])
    );

    // kill -9 one r2 node: partial, named; strict fails naming it alone; restart makes it
    // whole
    mesh.script(&["kill", "n5"]);
    let (code, body) = mesh.nodes[0].sql_scoped(BY_REGION, "global", false);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["partial"], true, "{body}");
    assert_eq!(body["missing_nodes"], serde_json::json!(["n5"]), "{body}");
    let without: Vec<usize> = vec![0, 1, 2, 3, 5];
    assert_eq!(by_region(&body), expected_by_region(&without));
    let (code, body) = mesh.nodes[0].sql_scoped(BY_REGION, "global", true);
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().ends_with("(strict): n5"),
        "{body}"
    );
    // PromQL answers what the others hold and warns, as Prometheus' API does
    let (value, warnings) = promql_carts(&mesh.nodes[0], Some("global"));
    assert_eq!(value, carts(&without));
    assert_eq!(
        warnings,
        ["partial answer: no data from node(s) n5"],
        "{warnings:?}"
    );
    // from inside the same region, too (asked directly, not through a merger)
    let (code, body) = mesh.nodes[3].sql_scoped(BY_SERVICE, "region", false);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["missing_nodes"], serde_json::json!(["n5"]), "{body}");
    assert_eq!(by_service(&body), expected_by_service(&[3, 5]));

    mesh.script(&["start", "n5"]);
    mesh.wait_all_alive();
    for i in [0, 4] {
        let (code, body) = mesh.nodes[i].sql_scoped(BY_SERVICE, "global", true);
        assert_eq!(code, 200, "{}: {body}", mesh.names[i]);
        assert_eq!(
            by_service(&body),
            expected_by_service(&all),
            "{}",
            mesh.names[i]
        );
        assert_eq!(body["partial"], false);
    }

    // the peer port speaks mutual TLS only: a client without a certificate of the mesh's
    // CA is refused (and counted); with one, a wrong cluster token is still refused
    let pki = mesh.dir.join("pki");
    run_ok(
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/certs.sh"))
            .arg(&pki)
            .arg("tool=127.0.0.1"),
    );
    let addr = mesh.nodes[1].status()["mesh"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "n2")
        .unwrap()["query_addr"]
        .as_str()
        .unwrap()
        .to_string();
    let flight = |with_cert: bool| {
        let identity = if with_cert {
            format!(
                "cert_chain=open('{p}/tool.pem','rb').read(), private_key=open('{p}/tool.key','rb').read(), ",
                p = pki.display()
            )
        } else {
            String::new()
        };
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import pyarrow.flight as f, json\n\
                 c = f.FlightClient('grpc+tls://{addr}', tls_root_certs=open('{p}/ca.pem','rb').read(), {identity})\n\
                 o = f.FlightCallOptions(headers=[(b'x-flowmesh-cluster-token', b'wrong')], timeout=10)\n\
                 t = f.Ticket(json.dumps({{'sql': 'SELECT 1', 'scope': 'node', 'strict': False, 'timeout_ms': 1000}}).encode())\n\
                 try:\n    c.do_get(t, o).read_all(); print('ANSWERED')\n\
                 except f.FlightUnauthenticatedError as e: print('REFUSED')\n\
                 except f.FlightUnavailableError as e: print('NO TUNNEL')\n",
                p = pki.display()
            ))
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let tls_before = mesh.nodes[1].metric("flowmesh_peer_tls_refused_connections_total");
    let (said, err) = flight(false);
    assert_eq!(said, "NO TUNNEL", "{err}");
    assert!(mesh.nodes[1].metric("flowmesh_peer_tls_refused_connections_total") > tls_before);
    let unauth_before = mesh.nodes[1].metric("flowmesh_mesh_unauthenticated_total");
    let (said, err) = flight(true);
    assert_eq!(said, "REFUSED", "{err}");
    assert_eq!(
        mesh.nodes[1].metric("flowmesh_mesh_unauthenticated_total"),
        unauth_before + 1.0
    );
    for i in 0..6 {
        let log = mesh.log_text(i);
        assert!(!log.contains("panicked"), "{}: {log}", mesh.names[i]);
    }
}
