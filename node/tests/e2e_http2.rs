//! HTTP/2 from nginx (Debian) in cleartext (h2c, prior knowledge) and over TLS (ALPN h2),
//! with curl as the client, and gRPC between a grpcio (PyPI) server and client: exact
//! rows with method, path, status, and gRPC service, method and status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{process::Command, time::Duration};

use common::*;

const GRPC: &str = r#"
import sys, grpc
from concurrent import futures
port = int(sys.argv[1])
ident = lambda b: b
def say_hello(request, context):
    return b"hello " + request
def find(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
handler = grpc.method_handlers_generic_handler("greet.Greeter", {
    "SayHello": grpc.unary_unary_rpc_method_handler(say_hello, ident, ident),
    "Find": grpc.unary_unary_rpc_method_handler(find, ident, ident),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"127.0.0.1:{port}")
server.start()
with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
    hello = channel.unary_unary("/greet.Greeter/SayHello", ident, ident)
    find = channel.unary_unary("/greet.Greeter/Find", ident, ident)
    for i in range(7):
        assert hello(b"world") == b"hello world"
    for i in range(3):
        try:
            find(b"x")
            raise SystemExit("expected NOT_FOUND")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND
server.stop(0)
"#;

fn curl_h2(args: &[&str], url: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn http2_and_grpc_rows_from_nginx_curl_and_grpcio() {
    require(&["nginx", "curl", "openssl", "python3"]);
    let grpcio = Command::new("python3")
        .args(["-c", "import grpc"])
        .status()
        .unwrap();
    assert!(
        grpcio.success(),
        "python3 grpcio is not installed; scripts/test.sh installs it"
    );
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (h2c, h2tls, grpc_port) = (free_port(), free_port(), free_port());
    self_signed_cert(dir);
    let d = dir.display();
    let locations = "location = /ok { return 200 \"ok\\n\"; } location = /missing { return 404 \"missing\\n\"; }";
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 1; daemon on; pid {d}/nginx.pid; error_log {d}/error.log;
             events {{ worker_connections 256; }}
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
                     uwsgi_temp_path {d}; scgi_temp_path {d};
                     server {{ listen 127.0.0.1:{h2c} http2; {locations} }}
                     server {{ listen 127.0.0.1:{h2tls} ssl http2; ssl_certificate {d}/cert.pem;
                              ssl_certificate_key {d}/key.pem; {locations} }} }}"
        ),
    )
    .unwrap();
    let node = FlowmeshNode::start(&dir.join("data"), free_port(), &[]);
    assert!(
        Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .status()
            .unwrap()
            .success()
    );
    let stop = || {
        let _ = Command::new("nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-s", "stop"])
            .status();
    };
    wait_for(Duration::from_secs(10), "nginx", || {
        std::net::TcpStream::connect(("127.0.0.1", h2c)).ok()
    });

    // h2c with prior knowledge: 6 × 200, 4 × 404
    for (path, code, n) in [("ok", "200", 6), ("missing", "404", 4)] {
        for _ in 0..n {
            assert_eq!(
                curl_h2(
                    &["--http2-prior-knowledge"],
                    &format!("http://127.0.0.1:{h2c}/{path}")
                ),
                format!("2 {code}")
            );
        }
    }
    // h2 over TLS; the node must first have attached to nginx's libssl (rescans every 5 s)
    wait_for(Duration::from_secs(20), "a TLS HTTP/2 row", || {
        curl_h2(
            &["-k", "--http2"],
            &format!("https://127.0.0.1:{h2tls}/probe"),
        );
        let n = node.sql(&format!(
            "SELECT count(*) FROM flow_log.l7_flow_log WHERE server_port = {h2tls} AND is_tls AND observation_point = 'server'"
        ));
        (n[0][0].as_i64().unwrap() > 0).then_some(())
    });
    for _ in 0..5 {
        assert_eq!(
            curl_h2(&["-k", "--http2"], &format!("https://127.0.0.1:{h2tls}/ok")),
            "2 200"
        );
    }
    stop();

    let status = Command::new("python3")
        .arg("-c")
        .arg(GRPC)
        .arg(grpc_port.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "the grpc script failed");

    for point in ["server", "client"] {
        let rows = wait_for(
            Duration::from_secs(10),
            &format!("h2c rows at {point}"),
            || {
                let rows = node.counts(&format!(
                "SELECT concat(version, ' ', request_type, ' ', endpoint, ' ', CAST(response_code AS VARCHAR)), count(*) \
                 FROM flow_log.l7_flow_log WHERE l7_protocol = 'HTTP2' AND server_port = {h2c} AND observation_point = '{point}' GROUP BY 1"
            ));
                (rows.iter().map(|r| r.1).sum::<i64>() >= 10).then_some(rows)
            },
        );
        assert_eq!(
            rows,
            vec![
                ("2 GET /missing 404".to_string(), 4),
                ("2 GET /ok 200".to_string(), 6)
            ],
            "{point}"
        );
        let tls = wait_for(
            Duration::from_secs(10),
            &format!("h2 TLS rows at {point}"),
            || {
                let rows = node.sql(&format!(
                "SELECT count(*) FROM flow_log.l7_flow_log WHERE l7_protocol = 'HTTP2' AND is_tls AND server_port = {h2tls} \
                 AND endpoint = '/ok' AND response_code = 200 AND observation_point = '{point}'"
            ));
                let n = rows[0][0].as_i64().unwrap();
                (n >= 5).then_some(n)
            },
        );
        assert_eq!(tls, 5, "{point}");
        let grpc = wait_for(
            Duration::from_secs(10),
            &format!("gRPC rows at {point}"),
            || {
                let rows = node.counts(&format!(
                "SELECT concat(request_resource, ' ', endpoint, ' ', CAST(response_code AS VARCHAR), ' ', response_status, ' ', response_exception), count(*) \
                 FROM flow_log.l7_flow_log WHERE l7_protocol = 'gRPC' AND server_port = {grpc_port} AND observation_point = '{point}' GROUP BY 1"
            ));
                (rows.iter().map(|r| r.1).sum::<i64>() >= 10).then_some(rows)
            },
        );
        assert_eq!(
            grpc,
            vec![
                (
                    "greet.Greeter /greet.Greeter/Find 5 client_error no such thing".to_string(),
                    3
                ),
                ("greet.Greeter /greet.Greeter/SayHello 0 ok ".to_string(), 7),
            ],
            "{point}"
        );
    }
}
