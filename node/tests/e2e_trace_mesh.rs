//! AutoTracing across three hosts (issue 6). `deploy/mesh.sh up --capture` runs three nodes,
//! each in its own network namespace and tracing only that namespace's sockets:
//! - n1 runs the client (Python `http.client`);
//! - n2 runs nginx from Debian as a reverse proxy (upstream keep-alive) and PostgreSQL;
//! - n3 runs a Python HTTP service (a thread per connection, the OpenTelemetry SDK
//!   exporting to n3's node) and redis-server; each request makes one redis GET and one
//!   PostgreSQL SELECT (psycopg2).
//!
//! 100 requests, the first 50 on one keep-alive connection and the rest on a connection
//! each. nginx sets `X-Request-ID` on `/item/` calls and not on `/plain/` ones; the client
//! sends no header of its own. Each trace is assembled from n1 with `scope=global`, seeded
//! from nginx's server row, and must hold the client's row (n1), nginx's server and client
//! rows (n2), the service's server row and its redis and PostgreSQL client rows (n3), and
//! the redis (n3) and PostgreSQL (n2) servers' rows, with the right parents. `/item/`
//! traces also hold the service's three OpenTelemetry spans, joined by the request id.
//!
//! A thread-pool variant (`/pool/`): the handler hands the calls to a worker thread. The
//! kernel cannot follow the hand-off, so the calls' eBPF rows stay out of the trace (and
//! are checked to exist); the app's spans, whose context the service passes to the worker,
//! are in it with the right parents.
//!
//! `assembly_latency` (ignored; `bench/trace_assembly.sh` runs it on a release build) times
//! the assembly of 20-span traces over the three nodes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{mesh::Mesh, require, run_ok, servers::pg_bin, spawn_first_line, wait_for};
use serde_json::Value;

const TOKEN: &str = "trace-mesh-token";
const NGINX_PORT: u16 = 8080;
const SERVICE_PORT: u16 = 8000;
const REDIS_PORT: u16 = 6379;
const PG_PORT: u16 = 5432;

/// The service; argv: its address, the node's URL, redis port, PostgreSQL host and port.
const SERVICE: &str = r#"
import socket, sys, threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import psycopg2
from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

ip, node, redis_port, pg_host, pg_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=node + "/v1/traces")))
tracer = provider.get_tracer("e2e")
lock = threading.Lock()
redis = socket.create_connection((ip, redis_port))
pg = psycopg2.connect(host=pg_host, port=pg_port, user="postgres", dbname="postgres")
pg.autocommit = True
pool = ThreadPoolExecutor(max_workers=2)
CLIENT = trace.SpanKind.CLIENT

def redis_get(key):
    with tracer.start_as_current_span("redis GET", kind=CLIENT, attributes={"db.system": "redis"}):
        with lock:
            redis.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key))
            reply = redis.recv(64)
        assert reply == b"$-1\r\n", reply

def pg_select(n):
    with tracer.start_as_current_span("SELECT", kind=CLIENT, attributes={"db.system": "postgresql"}):
        with lock:
            cur = pg.cursor()
            cur.execute("SELECT %s + 1", (n,))
            assert cur.fetchone()[0] == n + 1

def calls(kind, n):
    if kind == "fan":
        for j in range(5):
            redis_get(b"fan:%d:%d" % (n, j))
        for j in range(3):
            pg_select(n * 10 + j)
    else:
        redis_get(b"%s:%d" % (kind.encode(), n))
        pg_select(n)

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/flush":
            return self.reply(200, b"ok") if provider.force_flush(10000) else self.reply(500, b"no")
        kind, _, n = self.path.strip("/").partition("/")
        n = int(n)
        attrs = {"http.request.method": "GET", "url.path": self.path}
        rid = self.headers.get("X-Request-ID")
        if rid:
            attrs["http.request.header.x-request-id"] = [rid]
        with tracer.start_as_current_span("GET /" + kind, kind=trace.SpanKind.SERVER, attributes=attrs) as span:
            if kind == "pool":
                ctx = context.get_current()
                def work():
                    token = context.attach(ctx)
                    try:
                        calls(kind, n)
                    finally:
                        context.detach(token)
                pool.submit(work).result()
            else:
                calls(kind, n)
            span.set_attribute("http.response.status_code", 200)
            self.reply(200, b"ok")

server = ThreadingHTTPServer((ip, 8000), Handler)
print("ready", flush=True)
server.serve_forever()
"#;

/// The client; argv: host, port, then `kind:n:fresh` per request (fresh 1: a new
/// connection for it; else the current keep-alive one).
const CLIENT: &str = r#"
import http.client, sys
host, port = sys.argv[1], int(sys.argv[2])
conn = None
for item in sys.argv[3:]:
    kind, n, fresh = item.split(":")
    if conn is None or fresh == "1":
        if conn is not None:
            conn.close()
        conn = http.client.HTTPConnection(host, port)
    conn.request("GET", "/%s/%s" % (kind, n))
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200 and body == b"ok", (item, r.status, body)
conn.close()
"#;

/// The three hosts and what runs on them; the mesh's `down` stops everything started in
/// its namespaces.
struct Shop {
    mesh: Mesh,
    work: tempfile::TempDir,
    children: Vec<Child>,
}

impl Drop for Shop {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Shop {
    fn start() -> Shop {
        require(&["python3", "nginx", "redis-server", "ip"]);
        let python_ok = Command::new("python3")
            .args([
                "-c",
                "import psycopg2, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http",
            ])
            .status()
            .unwrap()
            .success();
        assert!(
            python_ok,
            "pip install psycopg2-binary opentelemetry-sdk opentelemetry-exporter-otlp-proto-http (scripts/test.sh does)"
        );
        let mesh = Mesh::up(215, 3, 1, TOKEN, &["--capture"]);
        mesh.wait_all_alive();
        let mut shop = Shop {
            mesh,
            work: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        };
        shop.postgres();
        shop.nginx();
        shop.redis_and_service();
        shop
    }

    fn wait_listening(&self, k: usize, port: u16, what: &str) {
        let addr = format!("{}:{port}", self.mesh.ip(k));
        wait_for(
            Duration::from_secs(30),
            &format!("{what} on {addr}"),
            || std::net::TcpStream::connect(&addr).ok().map(|_| ()),
        );
    }

    /// PostgreSQL on n2, trust authentication.
    fn postgres(&mut self) {
        let dir = self.work.path().join("pg");
        std::fs::create_dir_all(&dir).unwrap();
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir),
        );
        let bin = pg_bin();
        run_ok(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "-D"])
                .arg(dir.join("data")),
        );
        // the service connects from n3's address
        let hba = dir.join("data/pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).unwrap();
        rules.push_str(&format!("host all all {}.0/24 trust\n", self.mesh.subnet));
        std::fs::write(&hba, rules).unwrap();
        let opts = format!(
            "-p {PG_PORT} -k {} -c listen_addresses={} -c ssl=off -c fsync=off",
            dir.display(),
            self.mesh.ip(2)
        );
        run_ok(
            self.mesh
                .exec_in(2, "runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("pg_ctl"))
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-o", &opts, "-l"])
                .arg(dir.join("pg.log"))
                .args(["-w", "start"]),
        );
        self.wait_listening(2, PG_PORT, "postgres");
    }

    /// nginx on n2 in front of the service on n3, with upstream keep-alive; `/item/` and
    /// `/pool/` calls get `X-Request-ID`.
    fn nginx(&mut self) {
        let dir = self.work.path().join("nginx");
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let (n2, n3) = (self.mesh.ip(2), self.mesh.ip(3));
        let keep = "proxy_http_version 1.1; proxy_set_header Connection \"\";";
        let conf = format!(
            "worker_processes 1; daemon on; pid {d}/nginx.pid; error_log {d}/error.log;
             events {{ worker_connections 1024; }}
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};
                     fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
                     upstream shop {{ server {n3}:{SERVICE_PORT}; keepalive 8; }}
                     server {{ listen {n2}:{NGINX_PORT}; keepalive_requests 100000;
                         location /item/ {{ {keep} proxy_set_header X-Request-ID $request_id; proxy_pass http://shop; }}
                         location /pool/ {{ {keep} proxy_set_header X-Request-ID $request_id; proxy_pass http://shop; }}
                         location / {{ {keep} proxy_pass http://shop; }} }} }}"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        run_ok(
            self.mesh
                .exec_in(2, "nginx")
                .arg("-c")
                .arg(dir.join("nginx.conf")),
        );
        self.wait_listening(2, NGINX_PORT, "nginx");
    }

    /// redis-server and the service on n3.
    fn redis_and_service(&mut self) {
        let n3 = self.mesh.ip(3);
        let redis = self
            .mesh
            .exec_in(3, "redis-server")
            .args(["--port", &REDIS_PORT.to_string(), "--bind", &n3])
            .args([
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(self.work.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(redis);
        self.wait_listening(3, REDIS_PORT, "redis-server");
        let (service, line) = spawn_first_line(
            self.mesh
                .exec_in(3, "python3")
                .args(["-c", SERVICE, &n3, &self.mesh.nodes[2].base])
                .args([REDIS_PORT.to_string(), self.mesh.ip(2), PG_PORT.to_string()]),
        );
        self.children.push(service);
        assert_eq!(line, "ready", "the service did not start");
    }

    /// Runs the client on n1 over `plan` (`kind:n:fresh` items).
    fn client(&self, plan: &[String]) {
        run_ok(
            self.mesh
                .exec_in(1, "python3")
                .args(["-c", CLIENT, &self.mesh.ip(2), &NGINX_PORT.to_string()])
                .args(plan),
        );
    }

    /// Flushes the service's spans to n3's node.
    fn flush_spans(&self) {
        let url = format!("http://{}:{SERVICE_PORT}/flush", self.mesh.ip(3));
        let resp = reqwest::blocking::get(&url).unwrap();
        assert_eq!(resp.status(), 200);
    }

    /// Path → the syscall trace id of nginx's server row, once `n` rows of `kind` are in.
    fn seeds(&self, kind: &str, n: usize) -> BTreeMap<String, u64> {
        let sql = format!(
            "SELECT request_resource, syscall_trace_id_request FROM flow_log.l7_flow_log \
             WHERE node = 'n2' AND signal_source = 'ebpf' AND observation_point = 'server' \
             AND server_port = {NGINX_PORT} AND request_resource LIKE '/{kind}/%'"
        );
        wait_for(
            Duration::from_secs(60),
            &format!("{n} {kind} rows at nginx"),
            || {
                let (code, body) = self.mesh.nodes[0].sql_scoped(&sql, "global", true);
                let rows = body["rows"].as_array()?;
                (code == 200 && rows.len() == n).then(|| {
                    rows.iter()
                        .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_u64().unwrap()))
                        .collect()
                })
            },
        )
    }

    /// The trace of a syscall seed, assembled by n1 over the mesh.
    fn trace(&self, seed: &str) -> Value {
        let url = format!("{}/v1/trace/{seed}?scope=global", self.mesh.nodes[0].base);
        let resp = reqwest::blocking::get(&url).unwrap();
        assert_eq!(resp.status(), 200, "{seed}");
        resp.json().unwrap()
    }
}

/// The spans of a trace by role; panics on a span no role fits or on two of one role.
fn roles(trace: &Value) -> HashMap<&'static str, usize> {
    let mut roles = HashMap::new();
    for (i, s) in trace["spans"].as_array().unwrap().iter().enumerate() {
        let port = s["server_port"].as_u64().unwrap() as u16;
        let role = match (
            s["signal_source"].as_str().unwrap(),
            s["node"].as_str().unwrap(),
            s["observation_point"].as_str().unwrap(),
            port,
        ) {
            ("ebpf", "n1", "client", NGINX_PORT) => "client",
            ("ebpf", "n2", "server", NGINX_PORT) => "nginx",
            ("ebpf", "n2", "client", SERVICE_PORT) => "nginx call",
            ("ebpf", "n3", "server", SERVICE_PORT) => "service",
            ("ebpf", "n3", "client", REDIS_PORT) => "redis call",
            ("ebpf", "n3", "server", REDIS_PORT) => "redis",
            ("ebpf", "n3", "client", PG_PORT) => "pg call",
            ("ebpf", "n2", "server", PG_PORT) => "pg",
            ("otel", "n3", _, _) => match (
                s["span_kind"].as_str().unwrap(),
                s["endpoint"].as_str().unwrap(),
            ) {
                ("server", _) => "app server",
                ("client", "redis GET") => "app redis",
                ("client", "SELECT") => "app pg",
                _ => panic!("unexpected app span {s}"),
            },
            _ => panic!("unexpected span {s} in {trace:#}"),
        };
        assert!(
            roles.insert(role, i).is_none(),
            "two {role} spans: {trace:#}"
        );
    }
    roles
}

/// Role → its parent's role.
fn parents(trace: &Value, roles: &HashMap<&'static str, usize>) -> BTreeMap<String, String> {
    let spans = trace["spans"].as_array().unwrap();
    roles
        .iter()
        .map(|(role, &i)| {
            let parent = spans[i]["parent"].as_u64().map_or("-", |p| {
                roles
                    .iter()
                    .find(|(_, j)| **j as u64 == p)
                    .map(|(r, _)| *r)
                    .unwrap()
            });
            (role.to_string(), parent.to_string())
        })
        .collect()
}

fn tree(edges: &[(&str, &str)]) -> BTreeMap<String, String> {
    edges
        .iter()
        .map(|(c, p)| (c.to_string(), p.to_string()))
        .collect()
}

const KERNEL_TREE: [(&str, &str); 8] = [
    ("client", "-"),
    ("nginx", "client"),
    ("nginx call", "nginx"),
    ("service", "nginx call"),
    ("redis call", "service"),
    ("redis", "redis call"),
    ("pg call", "service"),
    ("pg", "pg call"),
];

#[test]
fn one_trace_per_request_across_three_hosts() {
    let shop = Shop::start();
    // 100 requests: /item/ (nginx sets X-Request-ID) and /plain/ alternate; the first 50
    // share one keep-alive connection, the rest get one each; then 20 /pool/ requests
    let mut plan: Vec<String> = (0..100)
        .map(|i| {
            let kind = if i % 2 == 0 { "item" } else { "plain" };
            format!("{kind}:{i}:{}", u8::from(i >= 50))
        })
        .collect();
    plan.extend((100..120).map(|i| format!("pool:{i}:0")));
    shop.client(&plan);
    shop.flush_spans();

    let mut seeds = shop.seeds("item", 50);
    seeds.extend(shop.seeds("plain", 50));
    assert_eq!(seeds.len(), 100);
    let mut app_trace_ids = Vec::new();
    for (path, id) in &seeds {
        let item = path.starts_with("/item/");
        let n: u64 = path.rsplit('/').next().unwrap().parse().unwrap();
        let seed = format!("syscall:n2:{id}");
        let want = if item { 11 } else { 8 };
        let trace = wait_for(
            Duration::from_secs(30),
            &format!("{path}: {want} spans"),
            || {
                let trace = shop.trace(&seed);
                (trace["spans"].as_array()?.len() == want).then_some(trace)
            },
        );
        assert!(trace["missing_nodes"].as_array().unwrap().is_empty());
        assert_eq!(trace["truncated"], false);
        let roles = roles(&trace);
        let mut expected = tree(&KERNEL_TREE);
        if item {
            expected.extend(tree(&[
                ("app server", "service"),
                ("app redis", "app server"),
                ("app pg", "app server"),
            ]));
        }
        assert_eq!(parents(&trace, &roles), expected, "{path}: {trace:#}");
        // the rows are this request's own
        let spans = trace["spans"].as_array().unwrap();
        let resource = |role: &str| spans[roles[role]]["request_resource"].as_str().unwrap();
        for role in ["client", "nginx", "nginx call", "service"] {
            assert_eq!(resource(role), path, "{role}: {trace:#}");
        }
        let kind = if item { "item" } else { "plain" };
        assert_eq!(resource("redis"), format!("GET {kind}:{n}"), "{trace:#}");
        assert_eq!(resource("pg"), format!("SELECT {n} + 1"), "{trace:#}");
        assert_eq!(spans[roles["pg"]]["l7_protocol"], "PostgreSQL");
        assert_eq!(spans[roles["redis"]]["l7_protocol"], "Redis");
        if item {
            assert_eq!(spans[roles["app server"]]["app_service"], "shop");
            app_trace_ids.push(trace["trace_id"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(trace["trace_id"], "", "no app span in a /plain/ trace");
        }
    }

    // the Tempo API finds the whole trace from the app's trace id, from any node
    for (k, trace_id) in app_trace_ids.iter().enumerate().step_by(10) {
        let node = &shop.mesh.nodes[k % 3];
        let url = format!("{}/api/traces/{trace_id}?scope=global", node.base);
        let tempo: Value = reqwest::blocking::get(&url).unwrap().json().unwrap();
        let spans: Vec<&Value> = tempo["batches"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|b| b["scopeSpans"][0]["spans"].as_array().unwrap())
            .collect();
        assert_eq!(spans.len(), 11, "{tempo:#}");
        let roots = spans
            .iter()
            .filter(|s| s["parentSpanId"].as_str().unwrap_or("").is_empty())
            .count();
        assert_eq!(roots, 1, "{tempo:#}");
    }

    // `flowmesh trace` prints the tree: the client at the top, eight lines below it
    let (_, id) = seeds
        .iter()
        .find(|(p, _)| p.starts_with("/plain/"))
        .unwrap();
    let out = run_ok(Command::new(env!("CARGO_BIN_EXE_flowmesh")).args([
        "trace",
        &format!("syscall:n2:{id}"),
        "--server",
        &shop.mesh.nodes[0].base,
        "--scope",
        "global",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 9, "{text}");
    assert!(lines[1].starts_with(|c: char| !c.is_whitespace()), "{text}");
    assert!(lines[2..].iter().all(|l| l.starts_with("  ")), "{text}");

    // the thread pool: the app's spans are stitched, the worker's kernel rows are not
    let pool = shop.seeds("pool", 20);
    for (path, id) in &pool {
        let n: u64 = path.rsplit('/').next().unwrap().parse().unwrap();
        let trace = wait_for(Duration::from_secs(30), &format!("{path}: 7 spans"), || {
            let trace = shop.trace(&format!("syscall:n2:{id}"));
            (trace["spans"].as_array()?.len() == 7).then_some(trace)
        });
        let roles = roles(&trace);
        assert_eq!(
            parents(&trace, &roles),
            tree(&[
                ("client", "-"),
                ("nginx", "client"),
                ("nginx call", "nginx"),
                ("service", "nginx call"),
                ("app server", "service"),
                ("app redis", "app server"),
                ("app pg", "app server"),
            ]),
            "{path}: {trace:#}"
        );
        // the calls were captured, at both ends, just not stitched
        let rows = shop.mesh.nodes[0].sql_scoped(
            &format!(
                "SELECT count(*) FROM flow_log.l7_flow_log WHERE signal_source = 'ebpf' \
                 AND (request_resource = 'GET pool:{n}' OR request_resource = 'SELECT {n} + 1')"
            ),
            "global",
            true,
        );
        assert_eq!(rows.1["rows"][0][0], 4, "{path}: {}", rows.1);
    }

    for i in 0..3 {
        let log = shop.mesh.log_text(i);
        assert!(!log.contains("panicked"), "n{}: {log}", i + 1);
    }
}

/// `bench/trace_assembly.sh`: assembly latency of 20-span traces (client, nginx's two rows,
/// the service's row, and five redis and three PostgreSQL calls at both ends) over three
/// nodes, from n1, which holds one of the 20 rows.
#[test]
#[ignore = "a benchmark: bench/trace_assembly.sh"]
fn assembly_latency() {
    let traces: usize = std::env::var("TRACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let repeats: usize = std::env::var("REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let shop = Shop::start();
    let plan: Vec<String> = (0..traces).map(|i| format!("fan:{i}:0")).collect();
    shop.client(&plan);
    let seeds = shop.seeds("fan", traces);
    // every trace is whole before anything is timed
    for id in seeds.values() {
        let seed = format!("syscall:n2:{id}");
        wait_for(Duration::from_secs(30), "20 spans", || {
            (shop.trace(&seed)["spans"].as_array()?.len() == 20).then_some(())
        });
    }
    let mut times = Vec::new();
    let mut rounds = Vec::new();
    for _ in 0..repeats {
        for id in seeds.values() {
            let start = Instant::now();
            let trace = shop.trace(&format!("syscall:n2:{id}"));
            times.push(start.elapsed().as_secs_f64() * 1e3);
            assert_eq!(trace["spans"].as_array().unwrap().len(), 20);
            rounds.push(trace["rounds"].as_u64().unwrap());
        }
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let rows = shop.mesh.nodes[0].sql_scoped(
        "SELECT node, count(*) FROM flow_log.l7_flow_log GROUP BY node ORDER BY node",
        "global",
        true,
    );
    println!(
        "assembly of a 20-span trace over 3 nodes, from n1: {} assemblies ({} traces x {}), \
         {} rounds each (median)",
        times.len(),
        traces,
        repeats,
        {
            rounds.sort();
            rounds[rounds.len() / 2]
        }
    );
    println!(
        "latency ms: mean {mean:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        times[times.len() - 1]
    );
    println!("rows per node: {}", rows.1["rows"]);
}
