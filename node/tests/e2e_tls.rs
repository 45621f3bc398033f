//! HTTPS seen as plaintext: nginx from Debian with TLS, curl -k as the client, the node's
//! OpenSSL uprobes. Exact HTTP rows with is_tls at both observation points.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{process::Command, time::Duration};

use common::*;

#[test]
fn https_requests_are_parsed_from_tls_plaintext() {
    require(&["nginx", "curl", "openssl"]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    self_signed_cert(dir);
    let port = free_port();
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 1; daemon on; pid {d}/nginx.pid; error_log {d}/error.log;
             events {{ worker_connections 256; }}
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
                     uwsgi_temp_path {d}; scgi_temp_path {d};
                     server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;
                              location = /ok {{ return 200 \"secret ok\\n\"; }}
                              location = /missing {{ return 404 \"missing\\n\"; }} }} }}"
        ),
    )
    .unwrap();
    let node = FlowmeshNode::start(&dir.join("data"), free_port(), &[]);
    // nginx starts after the node so that the first TLS scan may or may not see it: the
    // periodic rescan must pick it up either way.
    let status = Command::new("nginx")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .status()
        .unwrap();
    assert!(status.success());
    let _stop = scopeguard(dir.join("nginx.conf"));
    wait_for(Duration::from_secs(10), "nginx to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    // wait until the node has attached to nginx's libssl (a rescan every 5 s)
    wait_for(
        Duration::from_secs(20),
        "a TLS row from a probe request",
        || {
            let _ = Command::new("curl")
                .args(["-sk", "-o", "/dev/null"])
                .arg(format!("https://127.0.0.1:{port}/probe"))
                .status();
            let rows = node.sql(&format!(
            "SELECT count(*) FROM flow_log.l7_flow_log WHERE server_port = {port} AND is_tls AND observation_point = 'server'"
        ));
            (rows[0][0].as_i64().unwrap() > 0).then_some(())
        },
    );
    for (path, code, n) in [("ok", 200, 30), ("missing", 404, 20)] {
        for _ in 0..n {
            let out = Command::new("curl")
                .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("https://127.0.0.1:{port}/{path}"))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), code.to_string());
        }
    }
    for point in ["server", "client"] {
        let counts = wait_for(
            Duration::from_secs(10),
            &format!("{point} TLS rows"),
            || {
                let c = node.counts(&format!(
                "SELECT endpoint, count(*) FROM flow_log.l7_flow_log WHERE server_port = {port} AND is_tls \
                 AND l7_protocol = 'HTTP' AND observation_point = '{point}' AND endpoint IN ('/ok', '/missing') GROUP BY 1"
            ));
                (c == vec![("/missing".to_string(), 20), ("/ok".to_string(), 30)]).then_some(c)
            },
        );
        eprintln!("{point}: {counts:?}");
    }
    let fields = node.sql(&format!(
        "SELECT request_type, request_domain, response_code, process_kname_0, process_kname_1, protocol \
         FROM flow_log.l7_flow_log WHERE server_port = {port} AND is_tls AND endpoint = '/missing' LIMIT 1"
    ));
    let r = &fields[0];
    assert_eq!(r[0], "GET");
    assert_eq!(r[1], serde_json::Value::from(format!("127.0.0.1:{port}")));
    assert_eq!(r[2].as_i64(), Some(404));
    assert_eq!(
        (r[3].as_str(), r[4].as_str(), r[5].as_str()),
        (Some("curl"), Some("nginx"), Some("TCP"))
    );
    // the ciphertext of the same sockets never becomes an HTTP row
    let plain = node.sql(&format!(
        "SELECT count(*) FROM flow_log.l7_flow_log WHERE server_port = {port} AND NOT is_tls"
    ));
    assert_eq!(plain[0][0].as_i64(), Some(0));
}

/// Stops the nginx of `conf` when dropped.
struct NginxStop(std::path::PathBuf);

fn scopeguard(conf: std::path::PathBuf) -> NginxStop {
    NginxStop(conf)
}

impl Drop for NginxStop {
    fn drop(&mut self) {
        let _ = Command::new("nginx")
            .arg("-c")
            .arg(&self.0)
            .args(["-s", "stop"])
            .status();
    }
}
