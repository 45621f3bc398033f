//! Six `flowmesh` processes in two regions of three, each with its own shard and each
//! region with its own dictionary (Raft group), joined through libp2p on loopback. From
//! every node, a global query answers exactly the totals of all six shards; a region's query
//! touches only that region's nodes (their own counters say so); a node killed with -9 makes
//! answers partial and names it (an error with `strict`), and its restart makes them whole.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{FlowmeshNode, wait_for};
use serde_json::Value;

const TOKEN: &str = "mesh-e2e-token";
const REGIONS: [&str; 2] = ["east", "west"];
const SERVICES: [&str; 3] = ["cart", "user", "db"];

struct Member {
    name: String,
    env: Vec<(String, String)>,
    node: Option<FlowmeshNode>,
    dir: std::path::PathBuf,
    port: u16,
}

impl Member {
    fn node(&self) -> &FlowmeshNode {
        self.node.as_ref().unwrap()
    }

    fn spawn(&mut self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.node = Some(FlowmeshNode::spawn(&self.dir, self.port, &env));
    }
}

/// Rows node `i` (0-based) holds: (service, value) points of measurement `svc_<service>`.
fn points(i: usize) -> Vec<(&'static str, f64)> {
    (0..(5 + 3 * i))
        .map(|k| (SERVICES[(i + k) % 3], (k * 10 + i) as f64))
        .collect()
}

/// Distinct free ports below the kernel's ephemeral range (32768+): the nodes are told them
/// before they bind, and a port from the ephemeral range could meanwhile become the source
/// port of one of the many connections the nodes open to each other.
fn fixed_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    let mut candidate = 21_000 + (std::process::id() % 9_000) as u16;
    while ports.len() < n {
        candidate = if candidate >= 31_999 {
            21_000
        } else {
            candidate + 1
        };
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            ports.push(candidate);
        }
    }
    ports
}

fn start_mesh(root: &std::path::Path) -> Vec<Member> {
    let ports = fixed_ports(18);
    let peer_ports = &ports[0..6];
    let p2p_ports = &ports[6..12];
    let http_ports = &ports[12..18];
    let seed = format!("[\"/ip4/127.0.0.1/tcp/{}\"]", p2p_ports[0]);
    let mut members: Vec<Member> = (0..6)
        .map(|i| {
            let region = REGIONS[i / 3];
            let mut env: Vec<(String, String)> = vec![
                ("FLOWMESH__CAPTURE__ENABLED".into(), "false".into()),
                ("FLOWMESH__NODE__NAME".into(), format!("n{}", i + 1)),
                ("FLOWMESH__NODE__REGION".into(), region.into()),
                ("FLOWMESH__NODE__CLUSTER".into(), format!("{region}-c")),
                // each region is its own dictionary group of three
                (
                    "FLOWMESH__CONSENSUS__NODE_ID".into(),
                    format!("{}", i % 3 + 1),
                ),
                (
                    "FLOWMESH__CONSENSUS__LISTEN".into(),
                    format!("127.0.0.1:{}", peer_ports[i]),
                ),
                ("FLOWMESH__CONSENSUS__CLUSTER_TOKEN".into(), TOKEN.into()),
                ("FLOWMESH__MESH__ENABLED".into(), "true".into()),
                (
                    "FLOWMESH__MESH__LISTEN".into(),
                    format!("/ip4/127.0.0.1/tcp/{}", p2p_ports[i]),
                ),
                ("FLOWMESH__MESH__SEEDS".into(), seed.clone()),
                ("FLOWMESH__MESH__PUBLISH_INTERVAL".into(), "500ms".into()),
                ("FLOWMESH__MESH__DEAD_AFTER".into(), "3s".into()),
                ("FLOWMESH__QUERY__PEER_TIMEOUT".into(), "5s".into()),
            ];
            let base = (i / 3) * 3;
            for j in 0..3 {
                env.push((
                    format!("FLOWMESH__CONSENSUS__PEERS__{}", j + 1),
                    format!("127.0.0.1:{}", peer_ports[base + j]),
                ));
            }
            Member {
                name: format!("n{}", i + 1),
                env,
                node: None,
                dir: root.join(format!("n{}", i + 1)),
                port: http_ports[i],
            }
        })
        .collect();
    for m in &mut members {
        m.spawn();
    }
    for m in &mut members {
        m.node.as_mut().unwrap().wait_ready();
    }
    wait_all_alive(&members);
    members
}

fn status(node: &FlowmeshNode) -> Value {
    reqwest::blocking::get(format!("http://127.0.0.1:{}/v1/status", node.port))
        .unwrap()
        .json()
        .unwrap()
}

fn wait_all_alive(members: &[Member]) {
    for m in members {
        wait_for(
            Duration::from_secs(60),
            "every node to see six alive",
            || {
                let s = status(m.node());
                let alive = s["mesh"]["nodes"]
                    .as_array()?
                    .iter()
                    .filter(|n| n["alive"] == true)
                    .count();
                (alive == 6).then_some(())
            },
        );
    }
}

fn write_points(node: &FlowmeshNode, i: usize) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body: String = points(i)
        .iter()
        .enumerate()
        .map(|(k, (service, v))| format!("svc_{service},k={k} value={v} {}\n", now - 60 + k as u64))
        .collect();
    let resp = reqwest::blocking::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/api/v2/write?precision=s",
            node.port
        ))
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

fn served(members: &[Member]) -> Vec<f64> {
    members
        .iter()
        .map(|m| m.node().metric("flowmesh_mesh_fragments_served_total"))
        .collect()
}

#[test]
fn six_nodes_in_two_regions_answer_global_region_and_partial_queries() {
    common::require(&["python3"]);
    let root = tempfile::tempdir().unwrap();
    let mut members = start_mesh(root.path());
    for (i, m) in members.iter().enumerate() {
        write_points(m.node(), i);
    }
    let all: Vec<usize> = (0..6).collect();

    // every node's own shard holds only its rows
    for (i, m) in members.iter().enumerate() {
        let (code, body) = m.node().sql_scoped(BY_REGION, "node", false);
        assert_eq!(code, 200, "{body}");
        assert_eq!(by_region(&body), expected_by_region(&[i]), "{}", m.name);
    }

    // global, from every entry point: exactly the six shards' totals
    for m in &members {
        let (code, body) = m.node().sql_scoped(BY_REGION, "global", false);
        assert_eq!(code, 200, "{}: {body}", m.name);
        assert_eq!(
            by_region(&body),
            expected_by_region(&all),
            "{}: {body}\n{}",
            m.name,
            m.node()
                .log_text()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(body["partial"], false, "{body}");
        let (code, body) = m.node().sql_scoped(BY_SERVICE, "global", false);
        assert_eq!(code, 200, "{}: {body}", m.name);
        assert_eq!(by_service(&body), expected_by_service(&all), "{}", m.name);
        let mut nodes: Vec<String> = body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        nodes.sort();
        assert_eq!(nodes, ["n1", "n2", "n3", "n4", "n5", "n6"], "{body}");
    }

    // the default scope is the entry node's region; its other nodes serve, the other
    // region's nodes are not touched
    let before = served(&members);
    let (code, body) = members[0].node().sql_scoped(BY_REGION, "region", false);
    assert_eq!(code, 200, "{body}");
    assert_eq!(by_region(&body), expected_by_region(&[0, 1, 2]));
    let after = served(&members);
    let delta: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(
        delta,
        [0.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        "fragments served per node"
    );

    // a region filter chooses the region, from a node outside it
    let before = served(&members);
    let west = members[0]
        .node()
        .sql("SELECT count(*) FROM ext_metrics.metrics WHERE region = 'west'");
    let west_rows: i64 = (3..6).map(|i| points(i).len() as i64).sum();
    assert_eq!(west[0][0].as_i64().unwrap(), west_rows);
    let after = served(&members);
    let delta: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // east is not asked; west's merger (n4) is asked once and asks n5 and n6 once each
    assert_eq!(
        delta,
        [0.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        "fragments served per node"
    );

    // only partials cross the region boundary: a global count brings one row per region
    let bytes = |m: &Member| {
        m.node()
            .metric("flowmesh_mesh_cross_region_received_bytes_total")
    };
    let before = bytes(&members[0]);
    let (code, _) = members[0].node().sql_scoped(BY_REGION, "global", false);
    assert_eq!(code, 200);
    let crossed = bytes(&members[0]) - before;
    assert!(crossed > 0.0 && crossed < 4096.0, "{crossed} bytes crossed");

    // kill -9 one west node: partial, named; strict fails; restart makes it whole
    members[4].node.as_mut().unwrap().kill9();
    let (code, body) = members[0].node().sql_scoped(BY_REGION, "global", false);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["partial"], true, "{body}");
    assert_eq!(body["missing_nodes"], serde_json::json!(["n5"]), "{body}");
    let without: Vec<usize> = vec![0, 1, 2, 3, 5];
    assert_eq!(by_region(&body), expected_by_region(&without));
    let (code, body) = members[0].node().sql_scoped(BY_REGION, "global", true);
    assert_eq!(code, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("n5"), "{body}");
    // from inside the same region, too (asked directly, not through a merger)
    let (code, body) = members[3].node().sql_scoped(BY_SERVICE, "region", false);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["missing_nodes"], serde_json::json!(["n5"]), "{body}");
    assert_eq!(by_service(&body), expected_by_service(&[3, 5]));

    members[4].spawn();
    members[4].node.as_mut().unwrap().wait_ready();
    wait_all_alive(&members);
    for m in [&members[0], &members[4]] {
        let (code, body) = m.node().sql_scoped(BY_SERVICE, "global", true);
        assert_eq!(code, 200, "{}: {body}", m.name);
        assert_eq!(by_service(&body), expected_by_service(&all), "{}", m.name);
        assert_eq!(body["partial"], false);
    }

    // a wrong cluster token is refused by the peer service
    let unauth_before = members[1]
        .node()
        .metric("flowmesh_mesh_unauthenticated_total");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import pyarrow.flight as f, json\n\
             c = f.FlightClient('grpc://{addr}')\n\
             o = f.FlightCallOptions(headers=[(b'x-flowmesh-cluster-token', b'wrong')])\n\
             t = f.Ticket(json.dumps({{'sql': 'SELECT 1', 'scope': 'node', 'strict': False, 'timeout_ms': 1000}}).encode())\n\
             try:\n    c.do_get(t, o).read_all(); print('ANSWERED')\n\
             except f.FlightUnauthenticatedError as e: print('REFUSED')\n",
            addr = status(members[1].node())["mesh"]["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["name"] == "n2")
                .unwrap()["query_addr"]
                .as_str()
                .unwrap()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "REFUSED",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        members[1]
            .node()
            .metric("flowmesh_mesh_unauthenticated_total"),
        unauth_before + 1.0
    );
    for m in &mut members {
        let code = m.node.as_mut().unwrap().stop();
        assert!(code.success(), "{} exited with {code}", m.name);
        assert!(
            !m.node().log_text().contains("panicked"),
            "{}",
            m.node().log_text()
        );
    }
}
