//! dnsmasq with dig, mosquitto with its own clients, memcached with a plain socket client:
//! each from Debian, each counted exactly with its names, types and result codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{process::Command, time::Duration};

use common::{servers, *};

fn dns(node: &FlowmeshNode) {
    let dnsmasq = servers::dnsmasq();
    let port = dnsmasq.port.to_string();
    // (name, type, expected rcode name, times), over UDP; and one over TCP
    let queries = [
        ("www.example.test", "A", "NOERROR", 5),
        ("v6.example.test", "AAAA", "NOERROR", 3),
        ("example.test", "MX", "NOERROR", 2),
        ("example.test", "TXT", "NOERROR", 2),
        ("missing.example.test", "A", "NXDOMAIN", 4),
    ];
    for (name, qtype, rcode, times) in queries {
        for _ in 0..times {
            let out = Command::new("dig")
                .args([
                    "@127.0.0.1",
                    "-p",
                    &port,
                    "+tries=1",
                    "+time=2",
                    name,
                    qtype,
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(&format!("status: {rcode}")),
                "dig {name} {qtype}: {text}"
            );
        }
    }
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port, "+tcp", "www.example.test", "A"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("status: NOERROR"));
    for point in ["server", "client"] {
        let rows = wait_for(
            Duration::from_secs(10),
            &format!("DNS rows at {point}"),
            || {
                let rows = node.counts(&format!(
                "SELECT concat(request_resource, ' ', request_type, ' ', response_exception, ' ', response_status), count(*) \
                 FROM flow_log.l7_flow_log WHERE l7_protocol = 'DNS' AND server_port = {port} AND observation_point = '{point}' \
                 GROUP BY 1"
            ));
                (rows.iter().map(|r| r.1).sum::<i64>() >= 17).then_some(rows)
            },
        );
        let count = |needle: &str| {
            rows.iter()
                .filter(|(k, _)| k.starts_with(needle))
                .map(|r| r.1)
                .sum::<i64>()
        };
        assert_eq!(count("www.example.test A "), 6, "{point}: {rows:?}");
        assert_eq!(count("v6.example.test AAAA "), 3, "{point}: {rows:?}");
        assert_eq!(count("example.test MX "), 2, "{point}: {rows:?}");
        assert_eq!(count("example.test TXT "), 2, "{point}: {rows:?}");
        assert_eq!(
            count("missing.example.test A NXDOMAIN"),
            4,
            "{point}: {rows:?}"
        );
        assert!(
            rows.iter()
                .any(|(k, _)| k.starts_with("missing.example.test A NXDOMAIN")
                    && !k.ends_with(" ok")),
            "{rows:?}"
        );
        // the answers, as DeepFlow's response_result
        let answers = node.sql(&format!(
            "SELECT DISTINCT request_type, response_result FROM flow_log.l7_flow_log \
             WHERE l7_protocol = 'DNS' AND observation_point = '{point}' \
             AND endpoint IN ('www.example.test', 'v6.example.test', 'missing.example.test') \
             ORDER BY 1, 2"
        ));
        assert_eq!(
            answers,
            vec![
                vec![serde_json::json!("A"), serde_json::json!("")],
                vec![serde_json::json!("A"), serde_json::json!("10.0.0.1")],
                vec![serde_json::json!("AAAA"), serde_json::json!("fd00::1")],
            ],
            "{point}"
        );
    }
}

fn mqtt(node: &FlowmeshNode) {
    let broker = servers::mosquitto();
    let port = broker.port.to_string();
    let sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "e2e/topic",
            "-q",
            "1",
            "-C",
            "4",
            "-W",
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500)); // let the subscription reach the broker
    for qos in ["0", "1", "2", "1"] {
        let status = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "e2e/topic",
                "-q",
                qos,
                "-m",
                "hello",
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let out = sub.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        4,
        "subscriber got all messages"
    );
    let rows = wait_for(
        Duration::from_secs(10),
        "MQTT PUBLISH rows from the publishers",
        || {
            let rows = node.counts(&format!(
            "SELECT request_type, count(*) FROM flow_log.l7_flow_log WHERE l7_protocol = 'MQTT' AND server_port = {port} \
             AND observation_point = 'server' AND request_resource = 'e2e/topic' GROUP BY 1"
        ));
            rows.iter()
                .any(|(t, n)| t.eq_ignore_ascii_case("PUBLISH") && *n >= 4)
                .then_some(rows)
        },
    );
    assert!(
        rows.iter()
            .any(|(t, _)| t.eq_ignore_ascii_case("SUBSCRIBE")),
        "{rows:?}"
    );
    let connects = node.sql(&format!(
        "SELECT count(*) FROM flow_log.l7_flow_log WHERE l7_protocol = 'MQTT' AND server_port = {port} \
         AND observation_point = 'server' AND upper(request_type) = 'CONNECT'"
    ));
    assert_eq!(connects[0][0].as_i64(), Some(5), "one CONNECT per client");
}

fn memcached(node: &FlowmeshNode) {
    let mc = servers::memcached();
    // a separate client process: set, get hit, get miss, multi-get, incr on a non-number, delete
    let script = format!(
        r#"
import socket
s = socket.create_connection(("127.0.0.1", {port}))
def cmd(b, end):
    s.sendall(b)
    data = b""
    while not data.endswith(end):
        data += s.recv(65536)
    return data
assert cmd(b"set k1 0 0 5\r\nhello\r\n", b"\r\n") == b"STORED\r\n"
assert cmd(b"set k2 0 0 2\r\nhi\r\n", b"\r\n") == b"STORED\r\n"
assert b"hello" in cmd(b"get k1\r\n", b"END\r\n")
assert cmd(b"get nope\r\n", b"END\r\n") == b"END\r\n"
assert b"hi" in cmd(b"get k1 k2\r\n", b"END\r\n")
assert cmd(b"incr k1 1\r\n", b"\r\n").startswith(b"CLIENT_ERROR")
assert cmd(b"delete k2\r\n", b"\r\n") == b"DELETED\r\n"
s.close()
"#,
        port = mc.port
    );
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap();
    assert!(status.success());
    let rows = wait_for(Duration::from_secs(10), "memcached rows", || {
        let rows = node.counts(&format!(
            "SELECT concat(lower(request_type), ' ', response_status), count(*) FROM flow_log.l7_flow_log \
             WHERE l7_protocol = 'Memcached' AND server_port = {} AND observation_point = 'server' GROUP BY 1",
            mc.port
        ));
        (rows.iter().map(|r| r.1).sum::<i64>() >= 7).then_some(rows)
    });
    let count = |k: &str| {
        rows.iter()
            .filter(|(r, _)| r == k)
            .map(|r| r.1)
            .sum::<i64>()
    };
    assert_eq!(count("set ok"), 2, "{rows:?}");
    assert_eq!(count("get ok"), 3, "{rows:?}");
    assert_eq!(count("delete ok"), 1, "{rows:?}");
    assert_eq!(count("incr client_error"), 1, "{rows:?}");
}

#[test]
fn dns_mqtt_and_memcached_rows_from_real_servers() {
    require(&[
        "dnsmasq",
        "dig",
        "mosquitto",
        "mosquitto_pub",
        "mosquitto_sub",
        "memcached",
        "python3",
    ]);
    let work = tempfile::tempdir().unwrap();
    let node = FlowmeshNode::start(&work.path().join("data"), free_port(), &[]);
    dns(&node);
    mqtt(&node);
    memcached(&node);
}
