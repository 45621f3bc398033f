//! AutoTracing on one host (issue 6): a Python client → a Python HTTP service instrumented
//! with the OpenTelemetry SDK (OTLP/HTTP to the node) → redis-server from Debian. Ten
//! requests on one keep-alive connection, each with its own `traceparent`. For every one,
//! the assembled trace holds the client's and the service's eBPF rows, the service's
//! OpenTelemetry server and client spans, and the eBPF rows of the redis call at both ends,
//! with the right parents: the kernel's TCP sequence numbers link client and server rows,
//! its syscall trace ids link the service's server row to its redis call, and the
//! traceparent header puts the app's spans under the kernel's server row.
//!
//! Also: the Tempo API's view of a trace, `flowmesh trace`, OTLP/gRPC and OTLP JSON in, and
//! clear errors for malformed bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashMap, process::Command, time::Duration};

use common::{servers, *};
use serde_json::{Value, json};

const REQUESTS: usize = 10;

/// The service: HTTP/1.1 keep-alive, one thread; each request is a SERVER span (context from
/// the request's traceparent) around a CLIENT span for a redis GET. Spans go out through a
/// BatchSpanProcessor (its own thread) to the node's /v1/traces; GET /flush flushes them.
const SERVICE: &str = r#"
import socket, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

node, redis_port = sys.argv[1], int(sys.argv[2])
provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=node + "/v1/traces")))
tracer = provider.get_tracer("e2e")
redis = socket.create_connection(("127.0.0.1", redis_port))

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_GET(self):
        if self.path == "/flush":
            ok = provider.force_flush(10000)
            body = b"flushed" if ok else b"flush failed"
            self.send_response(200 if ok else 500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        ctx = TraceContextTextMapPropagator().extract(dict(self.headers))
        with tracer.start_as_current_span("GET /item", context=ctx, kind=trace.SpanKind.SERVER,
                attributes={"http.request.method": "GET", "url.path": self.path}) as span:
            with tracer.start_as_current_span("redis GET", kind=trace.SpanKind.CLIENT,
                    attributes={"db.system": "redis", "db.statement": "GET item"}):
                redis.sendall(b"*2\r\n$3\r\nGET\r\n$4\r\nitem\r\n")
                redis.recv(64)
            body = b"item"
            span.set_attribute("http.response.status_code", 200)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// The client: one keep-alive connection, requests with their own traceparent.
const CLIENT: &str = r#"
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port)
for i in range(n):
    conn.request("GET", "/item", headers={
        "traceparent": "00-%032x-%016x-01" % (0xabc0000 + i, 0xc0000 + i),
        "X-Request-ID": "req-%d" % i})
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b"item", r.status
conn.request("GET", "/flush")
r = conn.getresponse()
assert r.status == 200, r.read()
r.read()
"#;

/// One span exported over OTLP/gRPC.
const GRPC_EXPORT: &str = r#"
import sys
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
provider = TracerProvider(resource=Resource.create({"service.name": "grpc-sender"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[1], insecure=True)))
with provider.get_tracer("e2e").start_as_current_span("over grpc") as span:
    print("%032x" % span.get_span_context().trace_id, flush=True)
provider.shutdown()
"#;

fn trace_id(i: usize) -> String {
    format!("{:032x}", 0xabc0000 + i)
}

fn get(url: &str) -> (u16, String) {
    let resp = reqwest::blocking::get(url).unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

/// The spans of `/v1/trace/{id}`, by role.
fn roles(trace: &Value, service_port: u16, redis_port: u16) -> HashMap<&'static str, usize> {
    let mut roles = HashMap::new();
    for (i, s) in trace["spans"].as_array().unwrap().iter().enumerate() {
        let port = s["server_port"].as_i64().unwrap() as u16;
        let role = match (
            s["signal_source"].as_str().unwrap(),
            s["observation_point"].as_str().unwrap(),
            s["span_kind"].as_str().unwrap(),
        ) {
            ("ebpf", "client", _) if port == service_port => "client",
            ("ebpf", "server", _) if port == service_port => "service",
            ("otel", _, "server") => "app server",
            ("otel", _, "client") => "app client",
            ("ebpf", "client", _) if port == redis_port => "redis call",
            ("ebpf", "server", _) if port == redis_port => "redis",
            _ => panic!("unexpected span {s}"),
        };
        assert!(
            roles.insert(role, i).is_none(),
            "two {role} spans: {trace:#}"
        );
    }
    roles
}

#[test]
fn traces_join_kernel_rows_and_opentelemetry_spans() {
    require(&["python3", "redis-server"]);
    let python_ok = Command::new("python3")
        .args(["-c", "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, opentelemetry.exporter.otlp.proto.grpc"])
        .status()
        .unwrap()
        .success();
    assert!(
        python_ok,
        "pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-grpc (scripts/test.sh does)"
    );
    let work = tempfile::tempdir().unwrap();
    let grpc_port = free_port();
    let grpc_listen = format!("127.0.0.1:{grpc_port}");
    let node = FlowmeshNode::start(
        &work.path().join("data"),
        free_port(),
        &[
            ("FLOWMESH__OTLP__GRPC_ENABLED", "true"),
            ("FLOWMESH__OTLP__GRPC_LISTEN", &grpc_listen),
        ],
    );
    let redis = servers::redis();
    let (mut service, line) = spawn_first_line(Command::new("python3").args([
        "-c",
        SERVICE,
        &node.api.base,
        &redis.port.to_string(),
    ]));
    let service_port: u16 = line.parse().expect("the service's port");
    run_ok(Command::new("python3").args([
        "-c",
        CLIENT,
        &service_port.to_string(),
        &REQUESTS.to_string(),
    ]));

    for i in 0..REQUESTS {
        let id = trace_id(i);
        let trace: Value = wait_for(Duration::from_secs(30), &format!("trace {id}"), || {
            let (status, body) = get(&format!("{}/v1/trace/{id}", node.api.base));
            let trace: Value = serde_json::from_str(&body).ok()?;
            (status == 200 && trace["spans"].as_array()?.len() == 6).then_some(trace)
        });
        let roles = roles(&trace, service_port, redis.port);
        let spans = trace["spans"].as_array().unwrap();
        let parent = |role: &str| -> Option<&str> {
            let p = spans[roles[role]]["parent"].as_u64()?;
            roles.iter().find(|(_, i)| **i as u64 == p).map(|(r, _)| *r)
        };
        assert_eq!(parent("client"), None, "{trace:#}");
        assert_eq!(parent("service"), Some("client"), "TCP flow: {trace:#}");
        assert_eq!(
            parent("app server"),
            Some("service"),
            "traceparent: {trace:#}"
        );
        assert_eq!(parent("app client"), Some("app server"), "{trace:#}");
        assert_eq!(
            parent("redis call"),
            Some("service"),
            "syscall trace id: {trace:#}"
        );
        assert_eq!(parent("redis"), Some("redis call"), "TCP flow: {trace:#}");
        assert_eq!(spans[roles["app server"]]["app_service"], "shop");
        assert_eq!(spans[roles["service"]]["x_request_id"], format!("req-{i}"));
        assert_eq!(spans[roles["redis"]]["l7_protocol"], "Redis");
        assert!(trace["missing_nodes"].as_array().unwrap().is_empty());
    }

    // the spans are AutoTagged like the kernel's rows: the OTLP connection leads to the
    // sending process, whose tags are the kernel's server row's
    let tags = |filter: &str| {
        node.sql(&format!(
            "SELECT process_kname_1, auto_service_1, process_id_1, count(*) FROM flow_log.l7_flow_log \
             WHERE {filter} GROUP BY 1, 2, 3"
        ))
    };
    let service_tags = tags(&format!(
        "signal_source = 'ebpf' AND observation_point = 'server' AND server_port = {service_port} \
         AND request_resource = '/item'"
    ));
    // its name, and its port once /proc showed it listening (AutoTagging reads /proc when
    // it first sees a process, here maybe before it listened)
    let service_name = service_tags[0][1].as_str().unwrap().to_owned();
    assert!(
        [format!("python3:{service_port}"), "python3".into()].contains(&service_name),
        "{service_tags:?}"
    );
    assert_eq!(
        service_tags,
        vec![vec![
            json!("python3"),
            json!(service_name),
            json!(service.id()),
            json!(REQUESTS),
        ]]
    );
    assert_eq!(
        tags("signal_source = 'otel' AND span_kind = 'server'"),
        service_tags
    );
    assert_eq!(
        node.sql(
            "SELECT DISTINCT process_kname_0, auto_service_0 FROM flow_log.l7_flow_log \
             WHERE signal_source = 'otel' AND span_kind = 'client'"
        ),
        vec![vec![json!("python3"), json!(service_name)]]
    );

    // the same trace through the Tempo API: six spans, one root, every parent in the trace
    let (status, body) = get(&format!("{}/api/traces/{}", node.api.base, trace_id(3)));
    assert_eq!(status, 200, "{body}");
    let tempo: Value = serde_json::from_str(&body).unwrap();
    let spans: Vec<&Value> = tempo["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["scopeSpans"][0]["spans"][0])
        .collect();
    assert_eq!(spans.len(), 6, "{tempo:#}");
    let ids: Vec<&str> = spans
        .iter()
        .map(|s| s["spanId"].as_str().unwrap())
        .collect();
    let roots = spans
        .iter()
        .filter(|s| s["parentSpanId"].as_str().unwrap_or("").is_empty())
        .count();
    assert_eq!(roots, 1, "{tempo:#}");
    for s in &spans {
        assert_eq!(s["traceId"], trace_id(3));
        let parent = s["parentSpanId"].as_str().unwrap_or("");
        assert!(parent.is_empty() || ids.contains(&parent), "{s}");
    }
    let (status, body) = get(&format!("{}/api/search?limit=100", node.api.base));
    assert_eq!(status, 200, "{body}");
    let found: Value = serde_json::from_str(&body).unwrap();
    let listed: Vec<&str> = found["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap())
        .collect();
    for i in 0..REQUESTS {
        assert!(listed.contains(&trace_id(i).as_str()), "{found:#}");
    }
    // the root is the earliest row: the service's server row, which starts when the
    // service began to read (before the client wrote), or else the client's row; its
    // process and path
    let root = found["traces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["traceID"] == trace_id(3).as_str())
        .unwrap();
    assert_eq!(root["rootTraceName"], "/item", "{root}");
    let root_service = root["rootServiceName"].as_str().unwrap();
    assert!(
        [service_name.as_str(), "python3"].contains(&root_service),
        "{root}"
    );

    // the CLI prints the tree: a header and one indented line per span
    let out = run_ok(Command::new(env!("CARGO_BIN_EXE_flowmesh")).args([
        "trace",
        &trace_id(5),
        "--server",
        &node.api.base,
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    assert!(
        lines[0].contains(&trace_id(5)) && lines[0].contains("6 spans"),
        "{text}"
    );
    let depths: Vec<usize> = lines[1..]
        .iter()
        .map(|l| l.len() - l.trim_start().len())
        .collect();
    assert_eq!(depths.iter().filter(|&&d| d == 0).count(), 1, "{text}");
    assert!(text.contains("shop [otel app]"), "{text}");

    // OTLP/gRPC in
    let out =
        run_ok(Command::new("python3").args(["-c", GRPC_EXPORT, &format!("http://{grpc_listen}")]));
    let grpc_trace = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let rows = node.sql(&format!(
        "SELECT app_service, endpoint, signal_source, process_kname_0 FROM flow_log.l7_flow_log WHERE trace_id = '{grpc_trace}'"
    ));
    assert_eq!(
        rows,
        vec![vec![
            json!("grpc-sender"),
            json!("over grpc"),
            json!("otel"),
            json!("python3")
        ]]
    );

    // OTLP JSON in, and refusals
    let client = reqwest::blocking::Client::new();
    let url = format!("{}/v1/traces", node.api.base);
    let json_body = json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "json-sender"}}]},
        "scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174", "name": "json span", "kind": 3,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000001000000"}]}]}]});
    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body(json_body.to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rows = node.sql(
        "SELECT span_kind, response_duration FROM flow_log.l7_flow_log WHERE trace_id = '5b8efff798038103d269b633813fc60c'",
    );
    assert_eq!(rows, vec![vec![json!("client"), json!(1000)]]);
    for (content_type, body, status) in [
        ("application/x-protobuf", b"\xff\xff\xff".to_vec(), 400),
        ("application/json", b"{\"resourceSpans\": 3}".to_vec(), 400),
        ("text/plain", b"hello".to_vec(), 415),
        (
            "application/json",
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"01","spanId":"02"}]}]}]}"#
                .to_vec(),
            400,
        ),
    ] {
        let resp = client
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{content_type}");
        assert!(!resp.text().unwrap().is_empty());
    }
    assert!(
        node.api
            .metric("flowmesh_ingest_otlp_rejected_requests_total")
            >= 4.0
    );
    assert!(node.api.metric("flowmesh_ingest_otlp_spans_total") >= (2 * REQUESTS + 2) as f64);

    let _ = service.kill();
    let _ = service.wait();
}
