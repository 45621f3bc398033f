//! OpenTelemetry traces in (issue 6): OTLP/HTTP at `POST /v1/traces` (protobuf, or JSON as
//! the OTLP JSON mapping writes it) and OTLP/gRPC `TraceService/Export` on `[otlp]
//! grpc_listen` when enabled. Every span becomes a `flow_log.l7_flow_log` row with
//! `signal_source = 'otel'` and `observation_point = 'app'`, next to the eBPF rows of the
//! same requests, tagged with this node's region, cluster and node like them.
//!
//! How a span fills the row, following the OpenTelemetry semantic conventions (the current
//! names first, then the older ones the SDKs still emit):
//! - `trace_id`, `span_id`, `parent_span_id`: the span's own ids as lowercase hex;
//! - `span_kind`: server, client, producer, consumer, internal or unspecified;
//! - `app_service`: the resource's `service.name`; `endpoint`: the span name;
//! - times from the span's start and end; `response_duration` their difference;
//! - `l7_protocol`: HTTP (`http.*` attributes), gRPC (`rpc.system = grpc`), the database
//!   or messaging system where one is named (Redis, PostgreSQL, MySQL, MongoDB, Kafka …),
//!   else empty;
//! - `request_type`: the HTTP method, `rpc.method`, or the database/messaging operation;
//! - `request_domain`: `server.address` / `http.host` / `net.peer.name`;
//! - `request_resource`: the URL or path, the RPC service/method, or the statement;
//! - `response_code`: the HTTP status or the gRPC status code;
//! - `response_status`: from the HTTP status where there is one, else the span status
//!   (`ERROR` → server_error, otherwise ok); `response_exception`: the status message, or
//!   the first `exception` event's `exception.message`;
//! - `ip_0`/`client_port` and `ip_1`/`server_port` from the client/server address
//!   attributes;
//! - the process on the span's side (side 1 for server and consumer spans, else side 0),
//!   AutoTagged like captured rows (see [`Senders`]): `gprocess_id`, from which
//!   `process_kname`, `auto_service`, the container and the pod are derived, and
//!   `process_id`;
//! - `x_request_id_0` from an `http.request.header.<name>` attribute of a configured
//!   request-id header (`capture.request_id_headers`).
//!
//! A request is acknowledged only once its rows are durable, as every write; malformed
//! bodies get 400, a dictionary without a leader 503 (both the OTLP exporters' conventions:
//! 400 is not retried, 503 is).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Extension,
    body::Bytes,
    extract::{ConnectInfo, State, connect_info::Connected},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use flowmesh_protocols::{L7Protocol, ResponseStatus};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{Span, span::SpanKind, status::StatusCode as SpanStatus},
};
use parking_lot::Mutex;
use prost::Message;

use crate::{
    capture::{
        now_unix_ns,
        procinfo::{ProcessInfo, SharedProcesses, connection_peer_pid},
    },
    ingest::Ingest,
    server::ApiState,
    tables::{L7_FLOW_LOG, L7Row, l7_flow_log_batch, process_batch},
};

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct OtlpStats {
    pub requests: AtomicU64,
    pub spans: AtomicU64,
    pub rejected_requests: AtomicU64,
}

/// The row of one span; `service` is its resource's `service.name`, `process` the process
/// that produced it as far as it is known (its pid, and its AutoTagging resource).
pub fn span_row(span: &Span, service: &str, process: &SpanProcess) -> L7Row {
    let attrs = Attributes(&span.attributes);
    let kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified);
    let start_us = (span.start_time_unix_nano / 1_000) as i64;
    let end_us = (span.end_time_unix_nano.max(span.start_time_unix_nano) / 1_000) as i64;
    let mut row = L7Row {
        time_us: start_us,
        start_time_us: start_us,
        end_time_us: end_us,
        signal_source: "otel",
        observation_point: "app",
        span_kind: span_kind_name(kind),
        app_service: service.to_owned(),
        endpoint: span.name.clone(),
        response_duration_us: Some((end_us - start_us) as u64),
        has_response: true,
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        ..L7Row::default()
    };

    let rpc_system = attrs.str(&["rpc.system"]);
    let db_system = attrs.str(&["db.system.name", "db.system"]);
    let messaging_system = attrs.str(&["messaging.system"]);
    let http_method = attrs.str(&["http.request.method", "http.method"]);
    if http_method.is_some() || attrs.has_prefix("http.") {
        row.l7_protocol = L7Protocol::Http1.as_str();
        row.request_type = http_method.unwrap_or_default().to_owned();
        row.request_resource = attrs
            .str(&["url.full", "http.url", "http.target", "url.path"])
            .unwrap_or_default()
            .to_owned();
        row.response_code = attrs.int(&["http.response.status_code", "http.status_code"]);
    } else if rpc_system == Some("grpc") {
        row.l7_protocol = L7Protocol::Grpc.as_str();
        row.request_type = "POST".to_owned();
        let service = attrs.str(&["rpc.service"]).unwrap_or_default();
        let method = attrs.str(&["rpc.method"]).unwrap_or_default();
        row.request_resource = format!("/{service}/{method}");
        row.response_code = attrs.int(&["rpc.grpc.status_code"]);
    } else if let Some(system) = db_system {
        row.l7_protocol = system_protocol(system);
        row.request_type = attrs
            .str(&["db.operation.name", "db.operation"])
            .unwrap_or_default()
            .to_owned();
        row.request_resource = attrs
            .str(&["db.query.text", "db.statement"])
            .unwrap_or_default()
            .to_owned();
    } else if let Some(system) = messaging_system {
        row.l7_protocol = system_protocol(system);
        row.request_type = attrs
            .str(&["messaging.operation.type", "messaging.operation"])
            .unwrap_or_default()
            .to_owned();
        row.request_resource = attrs
            .str(&["messaging.destination.name", "messaging.destination"])
            .unwrap_or_default()
            .to_owned();
    }
    row.request_domain = attrs
        .str(&["server.address", "http.host", "net.peer.name"])
        .unwrap_or_default()
        .to_owned();

    let status = span.status.as_ref();
    let status_code = status
        .and_then(|s| SpanStatus::try_from(s.code).ok())
        .unwrap_or(SpanStatus::Unset);
    row.response_status = match (row.l7_protocol, row.response_code) {
        ("HTTP", Some(code)) => u16::try_from(code)
            .map_or(ResponseStatus::Unknown, ResponseStatus::from_http_code)
            .as_str(),
        ("gRPC", Some(code)) if code != 0 => "server_error",
        _ if status_code == SpanStatus::Error => "server_error",
        _ => "ok",
    };
    row.response_exception = status
        .map(|s| s.message.clone())
        .filter(|m| !m.is_empty())
        .or_else(|| {
            span.events
                .iter()
                .find(|e| e.name == "exception")
                .and_then(|e| {
                    Attributes(&e.attributes)
                        .str(&["exception.message"])
                        .map(str::to_owned)
                })
        })
        .unwrap_or_default();

    // the client and server ends, as far as the attributes name them
    let peer = attrs.str(&["network.peer.address", "net.sock.peer.addr", "net.peer.ip"]);
    let peer_port = attrs.int(&["network.peer.port", "net.sock.peer.port", "net.peer.port"]);
    let client = attrs.str(&["client.address", "http.client_ip"]);
    let server_port = attrs.int(&["server.port", "net.host.port"]);
    match kind {
        SpanKind::Server | SpanKind::Consumer => {
            row.ip_0 = client.or(peer).unwrap_or_default().to_owned();
            row.client_port = port(attrs.int(&["client.port"]).or(peer_port));
            row.server_port = port(server_port);
            row.process_id_1 = process.pid;
            if let Some(p) = &process.info {
                row.gprocess_1 = Arc::clone(&p.key);
                row.process_kname_1 = Arc::clone(&p.name);
                row.auto_service_1 = Arc::clone(&p.service);
            }
        }
        _ => {
            row.ip_1 = peer.unwrap_or_default().to_owned();
            row.server_port = port(server_port.or(peer_port));
            row.process_id_0 = process.pid;
            if let Some(p) = &process.info {
                row.gprocess_0 = Arc::clone(&p.key);
                row.process_kname_0 = Arc::clone(&p.name);
                row.auto_service_0 = Arc::clone(&p.service);
            }
        }
    }
    row.x_request_id_0 = attrs.request_id().unwrap_or_default();
    row
}

fn port(value: Option<i32>) -> u16 {
    value.and_then(|p| u16::try_from(p).ok()).unwrap_or(0)
}

fn span_kind_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Unspecified => "unspecified",
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

/// The `l7_protocol` name of a `db.system` / `messaging.system` value, as the eBPF rows of
/// the same protocol name it; other systems keep no protocol.
fn system_protocol(system: &str) -> &'static str {
    match system {
        "redis" => L7Protocol::Redis,
        "postgresql" => L7Protocol::PostgreSql,
        "mysql" | "mariadb" => L7Protocol::MySql,
        "mongodb" => L7Protocol::MongoDb,
        "memcached" => L7Protocol::Memcached,
        "kafka" => L7Protocol::Kafka,
        "rabbitmq" => L7Protocol::Amqp,
        "nats" => L7Protocol::Nats,
        "dubbo" => L7Protocol::Dubbo,
        _ => return "",
    }
    .as_str()
}

fn hex(bytes: &[u8]) -> String {
    if bytes.iter().all(|&b| b == 0) {
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Attributes<'a>(&'a [KeyValue]);

impl<'a> Attributes<'a> {
    fn value(&self, key: &str) -> Option<&'a Value> {
        self.0
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v: &AnyValue| v.value.as_ref())
    }

    /// The first of `keys` that holds a string.
    fn str(&self, keys: &[&str]) -> Option<&'a str> {
        keys.iter().find_map(|k| match self.value(k) {
            Some(Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
    }

    /// The first of `keys` that holds an integer (or a string of one) fitting an i32.
    fn int(&self, keys: &[&str]) -> Option<i32> {
        keys.iter().find_map(|k| match self.value(k) {
            Some(Value::IntValue(i)) => i32::try_from(*i).ok(),
            Some(Value::StringValue(s)) => s.trim().parse().ok(),
            _ => None,
        })
    }

    fn has_prefix(&self, prefix: &str) -> bool {
        self.0.iter().any(|kv| kv.key.starts_with(prefix))
    }

    /// The value of the most preferred configured request-id header among the span's
    /// `http.request.header.<name>` (string or array of strings) attributes.
    fn request_id(&self) -> Option<String> {
        let mut best: Option<(usize, String)> = None;
        for kv in self.0 {
            let Some(name) = kv.key.strip_prefix("http.request.header.") else {
                continue;
            };
            let Some(rank) = flowmesh_protocols::trace_context::request_id_header_rank(
                name.replace('_', "-").as_bytes(),
            ) else {
                continue;
            };
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => Some(s.clone()),
                Some(Value::ArrayValue(a)) => a.values.iter().find_map(|v| match &v.value {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                }),
                _ => None,
            };
            if let Some(value) = value.filter(|v| !v.trim().is_empty())
                && best.as_ref().is_none_or(|(b, _)| rank < *b)
            {
                best = Some((rank, value.trim().to_owned()));
            }
        }
        best.map(|(_, v)| v)
    }
}

/// The process behind a resource's spans.
#[derive(Debug, Clone, Default)]
pub struct SpanProcess {
    pub pid: Option<u32>,
    /// Its process resource; `None` when nothing identifies one.
    pub info: Option<Arc<ProcessInfo>>,
}

/// The rows of every span of a request; `process` names the process behind each resource.
pub fn request_rows(
    request: &ExportTraceServiceRequest,
    mut process: impl FnMut(Option<&Resource>) -> SpanProcess,
) -> Vec<L7Row> {
    let mut rows = Vec::new();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans.resource.as_ref();
        let service = resource
            .and_then(|r| Attributes(&r.attributes).str(&["service.name"]))
            .unwrap_or("unknown_service");
        let process = process(resource);
        for scope in &resource_spans.scope_spans {
            rows.extend(scope.spans.iter().map(|s| span_row(s, service, &process)));
        }
    }
    rows
}

/// Both ends of a connection to one of the node's servers, for finding the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Connection {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for Connection {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        let remote = *stream.remote_addr();
        Self {
            local: stream.io().local_addr().unwrap_or(remote),
            remote,
        }
    }
}

/// Connections whose sender is remembered at most; the table is emptied when full.
const MAX_CONNECTIONS: usize = 4096;
/// Resource-described processes remembered at most; emptied when full.
const MAX_DESCRIBED: usize = 4096;
/// How long a connection's sender is remembered (a closed connection's port may be reused).
const CONNECTION_TTL_NS: u64 = 60_000_000_000;

/// Which process sends spans, so that they are AutoTagged like captured rows: the same
/// process resource (`gprocess`, DESIGN.md §5), so the same `process_kname`,
/// `auto_service`, container and pod.
///
/// - **A sender on this host** is found from its connection: the socket at the other end
///   (`/proc/net/tcp`) and the process holding it, once per connection. If the resource's
///   `process.pid` names another process (a collector forwarding others' spans), the
///   resource describes it instead, as below.
/// - **A sender elsewhere** is described by its resource alone, when it names a process
///   (`process.pid`) or a container (`container.id`): the resource key is
///   `otel/<host.name>/<pid>/<service.name>`, and `process.executable.name`,
///   `process.command_line`, `process.executable.path` and `container.id` fill its
///   attributes, `service.name` its `auto_service`. A container id leads to its pod
///   through the Kubernetes resources, as for captured rows.
pub struct Senders {
    node: Arc<str>,
    /// The node's registry, shared with capture.
    processes: SharedProcesses,
    state: Mutex<SendersState>,
}

struct SendersState {
    /// connection → (its sender's pid, when looked up)
    connections: HashMap<Connection, (Option<u32>, u64)>,
    /// Resource-described processes by key, and those not yet registered.
    described: HashMap<Arc<str>, Arc<ProcessInfo>>,
    new: Vec<Arc<ProcessInfo>>,
}

impl Senders {
    pub fn new(node: Arc<str>, processes: SharedProcesses) -> Self {
        Self {
            processes,
            state: Mutex::new(SendersState {
                connections: HashMap::new(),
                described: HashMap::new(),
                new: Vec::new(),
            }),
            node,
        }
    }

    /// The pid of the local process at the other end of `connection`, looked up once per
    /// connection (off the async threads: it scans /proc).
    async fn connection_pid(&self, connection: Connection) -> Option<u32> {
        let now = now_unix_ns();
        if let Some((pid, at)) = self.state.lock().connections.get(&connection)
            && now.saturating_sub(*at) < CONNECTION_TTL_NS
        {
            return *pid;
        }
        let pid = tokio::task::spawn_blocking(move || {
            connection_peer_pid(connection.local, connection.remote)
        })
        .await
        .ok()
        .flatten();
        let mut state = self.state.lock();
        if state.connections.len() >= MAX_CONNECTIONS {
            state.connections.clear();
        }
        state.connections.insert(connection, (pid, now));
        pid
    }

    /// The process behind one resource's spans, sent over a connection whose local
    /// sender (if any) is `sender`.
    fn process(&self, resource: Option<&Resource>, sender: Option<u32>) -> SpanProcess {
        let attrs = Attributes(resource.map_or(&[], |r| &r.attributes[..]));
        let resource_pid = attrs
            .int(&["process.pid"])
            .and_then(|p| u32::try_from(p).ok());
        let service = attrs.str(&["service.name"]).unwrap_or("unknown_service");
        // the sender itself, unless the resource names another process (a collector
        // forwarding others' spans): that one is described from the resource below
        if let Some(pid) =
            sender.filter(|&pid| resource_pid.is_none_or(|r| r == pid || ns_pid(pid) == Some(r)))
        {
            let info = self.processes.lock().get(pid, service, now_unix_ns());
            return SpanProcess {
                pid: Some(pid),
                info: (!info.key.is_empty()).then_some(info),
            };
        }
        let container = attrs.str(&["container.id"]).unwrap_or_default();
        if resource_pid.is_none() && container.is_empty() {
            return SpanProcess::default();
        }
        let host = attrs.str(&["host.name"]).unwrap_or(&self.node);
        let name = attrs
            .str(&["process.executable.name", "process.command"])
            .unwrap_or(service);
        let info = ProcessInfo {
            key: format!("otel/{host}/{}/{service}", resource_pid.unwrap_or(0)).into(),
            name: name.into(),
            service: service.into(),
            cmdline: attrs
                .str(&["process.command_line"])
                .unwrap_or_default()
                .into(),
            exe: attrs
                .str(&["process.executable.path"])
                .unwrap_or_default()
                .into(),
            container_id: container.into(),
            valid_from_us: (now_unix_ns() / 1000) as i64,
        };
        let mut state = self.state.lock();
        let info = match state.described.get(&info.key) {
            Some(known) if known.same_attributes(&info) => Arc::clone(known),
            _ => {
                if state.described.len() >= MAX_DESCRIBED {
                    state.described.clear();
                }
                let info = Arc::new(info);
                state
                    .described
                    .insert(Arc::clone(&info.key), Arc::clone(&info));
                state.new.push(Arc::clone(&info));
                info
            }
        };
        SpanProcess {
            pid: resource_pid,
            info: Some(info),
        }
    }

    /// Process versions seen since the last call, to register before the rows naming them.
    fn take_new(&self) -> Vec<Arc<ProcessInfo>> {
        let mut new = self.processes.lock().take_new();
        new.append(&mut self.state.lock().new);
        new
    }

    /// Versions from [`Self::take_new`] that could not be registered, for the next request
    /// (the registry will not report them as new again).
    fn untake(&self, mut processes: Vec<Arc<ProcessInfo>>) {
        self.state.lock().new.append(&mut processes);
    }
}

/// `pid` as its own pid namespace numbers it (the last `NSpid` of its status): what a
/// process in a container reports as its `process.pid`.
fn ns_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// Why a request was refused: the status to answer and a message.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

impl Ingest {
    /// Stores the spans of one export request; returns the number of spans once durable.
    pub async fn store_spans(
        &self,
        request: &ExportTraceServiceRequest,
        connection: Option<Connection>,
        stats: &OtlpStats,
    ) -> Result<usize, Refused> {
        let senders = &self.otlp_senders;
        let sender = match connection {
            Some(c) => senders.connection_pid(c).await,
            None => None,
        };
        let rows = request_rows(request, |resource| senders.process(resource, sender));
        if rows.is_empty() {
            return Ok(0);
        }
        // the processes first: the rows name them
        let processes = senders.take_new();
        if !processes.is_empty() {
            let batch = process_batch(&processes).map_err(|e| Refused {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: e.to_string(),
            })?;
            if let Err((status, message)) = self.register_processes(&batch).await {
                senders.untake(processes);
                return Err(Refused { status, message });
            }
        }
        let batch = l7_flow_log_batch(self.node_tags(), &rows).map_err(|e| Refused {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: e.to_string(),
        })?;
        self.store_batch(L7_FLOW_LOG, batch)
            .await
            .map_err(|(status, message)| Refused { status, message })?;
        stats.spans.fetch_add(rows.len() as u64, Ordering::Relaxed);
        Ok(rows.len())
    }
}

/// How an OTLP/HTTP body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// `POST /v1/traces`.
pub async fn http_traces(
    State(state): State<ApiState>,
    connection: Option<Extension<ConnectInfo<Connection>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let stats = &state.metrics.otlp;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf");
    let encoding = match content_type.split(';').next().unwrap_or("").trim() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            stats.rejected_requests.fetch_add(1, Ordering::Relaxed);
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported content-type {other:?}: OTLP/HTTP is application/x-protobuf or application/json"
                ),
            )
                .into_response();
        }
    };
    let bad = |message: String| {
        stats.rejected_requests.fetch_add(1, Ordering::Relaxed);
        (StatusCode::BAD_REQUEST, message).into_response()
    };
    let body = match state.ingest.decoded_body(&headers, &body) {
        Ok(b) => b,
        Err((code, message)) => {
            stats.rejected_requests.fetch_add(1, Ordering::Relaxed);
            return (code, message).into_response();
        }
    };
    let request = match encoding {
        Encoding::Protobuf => match ExportTraceServiceRequest::decode(&body[..]) {
            Ok(r) => r,
            Err(e) => return bad(format!("invalid OTLP protobuf: {e}")),
        },
        Encoding::Json => match serde_json::from_slice::<ExportTraceServiceRequest>(&body) {
            Ok(r) => r,
            Err(e) => return bad(format!("invalid OTLP JSON: {e}")),
        },
    };
    if let Err(message) = validate(&request) {
        return bad(message);
    }
    let connection = connection.map(|Extension(ConnectInfo(c))| c);
    match state.ingest.store_spans(&request, connection, stats).await {
        Ok(_) => {
            let response = ExportTraceServiceResponse {
                partial_success: None,
            };
            match encoding {
                Encoding::Protobuf => (
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    response.encode_to_vec(),
                )
                    .into_response(),
                Encoding::Json => axum::Json(response).into_response(),
            }
        }
        Err(refused) => {
            stats.rejected_requests.fetch_add(1, Ordering::Relaxed);
            (refused.status, refused.message).into_response()
        }
    }
}

/// Checks what the rows depend on: ids of the right length (16 and 8 bytes, an empty parent
/// for a root span).
fn validate(request: &ExportTraceServiceRequest) -> Result<(), String> {
    for resource_spans in &request.resource_spans {
        for scope in &resource_spans.scope_spans {
            for span in &scope.spans {
                let bad = |what: &str, len: usize| {
                    Err(format!("span {:?}: {what} must be {len} bytes", span.name))
                };
                if span.trace_id.len() != 16 {
                    return bad("traceId", 16);
                }
                if span.span_id.len() != 8 {
                    return bad("spanId", 8);
                }
                if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
                    return bad("parentSpanId (when present)", 8);
                }
            }
        }
    }
    Ok(())
}

/// The OTLP/gRPC trace service.
pub struct GrpcTraces {
    ingest: Arc<Ingest>,
    stats: Arc<OtlpStats>,
}

impl GrpcTraces {
    pub fn server(ingest: Arc<Ingest>, stats: Arc<OtlpStats>) -> TraceServiceServer<Self> {
        TraceServiceServer::new(GrpcTraces { ingest, stats })
            .max_decoding_message_size(ingest_limit())
    }
}

/// gRPC messages up to 64 MiB, as the OpenTelemetry Collector's default receiver takes.
fn ingest_limit() -> usize {
    64 << 20
}

#[tonic::async_trait]
impl TraceService for GrpcTraces {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let connection = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| {
                Some(Connection {
                    local: info.local_addr()?,
                    remote: info.remote_addr()?,
                })
            });
        let request = request.into_inner();
        if let Err(message) = validate(&request) {
            self.stats.rejected_requests.fetch_add(1, Ordering::Relaxed);
            return Err(tonic::Status::invalid_argument(message));
        }
        match self
            .ingest
            .store_spans(&request, connection, &self.stats)
            .await
        {
            Ok(_) => Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            })),
            Err(refused) => {
                self.stats.rejected_requests.fetch_add(1, Ordering::Relaxed);
                Err(if refused.status == StatusCode::SERVICE_UNAVAILABLE {
                    tonic::Status::unavailable(refused.message)
                } else {
                    tonic::Status::internal(refused.message)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status, span::Event};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }
    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn span(kind: SpanKind, attributes: Vec<KeyValue>) -> Span {
        Span {
            trace_id: (1..=16).collect(),
            span_id: vec![0xab; 8],
            parent_span_id: vec![0, 0, 0, 0, 0, 0, 0, 7],
            name: "GET /items".into(),
            kind: kind as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_002_500_000,
            attributes,
            ..Span::default()
        }
    }

    #[test]
    fn an_http_server_span_with_current_conventions() {
        let row = span_row(
            &span(
                SpanKind::Server,
                vec![
                    kv("http.request.method", s("GET")),
                    kv("url.path", s("/items")),
                    kv("http.response.status_code", Value::IntValue(404)),
                    kv("server.address", s("shop.local")),
                    kv("server.port", Value::IntValue(8080)),
                    kv("client.address", s("10.0.0.9")),
                    kv(
                        "http.request.header.x_request_id",
                        Value::StringValue("r-1".into()),
                    ),
                ],
            ),
            "cart",
            &SpanProcess {
                pid: Some(42),
                info: None,
            },
        );
        assert_eq!(row.signal_source, "otel");
        assert_eq!(row.observation_point, "app");
        assert_eq!(row.span_kind, "server");
        assert_eq!(row.app_service, "cart");
        assert_eq!(row.trace_id, "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(row.span_id, "abababababababab");
        assert_eq!(row.parent_span_id, "0000000000000007");
        assert_eq!(row.endpoint, "GET /items");
        assert_eq!(
            (
                row.l7_protocol,
                row.request_type.as_str(),
                row.request_resource.as_str()
            ),
            ("HTTP", "GET", "/items")
        );
        assert_eq!(row.request_domain, "shop.local");
        assert_eq!(row.response_code, Some(404));
        assert_eq!(row.response_status, "client_error");
        assert_eq!(row.response_duration_us, Some(2_500));
        assert_eq!(row.end_time_us - row.start_time_us, 2_500);
        assert_eq!((row.ip_0.as_str(), row.server_port), ("10.0.0.9", 8080));
        assert_eq!((row.process_id_0, row.process_id_1), (None, Some(42)));
        assert_eq!(row.x_request_id_0, "r-1");
    }

    #[test]
    fn old_conventions_grpc_databases_and_errors() {
        let old_http = span_row(
            &span(
                SpanKind::Client,
                vec![
                    kv("http.method", s("POST")),
                    kv("http.url", s("http://a/b")),
                    kv("http.status_code", s("503")),
                    kv("net.peer.ip", s("10.1.1.1")),
                    kv("net.peer.port", Value::IntValue(80)),
                ],
            ),
            "web",
            &SpanProcess {
                pid: Some(7),
                info: None,
            },
        );
        assert_eq!(old_http.response_code, Some(503));
        assert_eq!(old_http.response_status, "server_error");
        assert_eq!(
            (old_http.ip_1.as_str(), old_http.server_port),
            ("10.1.1.1", 80)
        );
        assert_eq!(old_http.process_id_0, Some(7));

        let grpc = span_row(
            &span(
                SpanKind::Client,
                vec![
                    kv("rpc.system", s("grpc")),
                    kv("rpc.service", s("helloworld.Greeter")),
                    kv("rpc.method", s("SayHello")),
                    kv("rpc.grpc.status_code", Value::IntValue(5)),
                ],
            ),
            "web",
            &SpanProcess::default(),
        );
        assert_eq!(grpc.l7_protocol, "gRPC");
        assert_eq!(grpc.request_resource, "/helloworld.Greeter/SayHello");
        assert_eq!(
            (grpc.response_code, grpc.response_status),
            (Some(5), "server_error")
        );

        let mut redis = span(
            SpanKind::Client,
            vec![kv("db.system", s("redis")), kv("db.statement", s("GET k"))],
        );
        redis.status = Some(Status {
            message: String::new(),
            code: SpanStatus::Error as i32,
        });
        redis.events = vec![Event {
            name: "exception".into(),
            attributes: vec![kv("exception.message", s("connection reset"))],
            ..Event::default()
        }];
        let redis = span_row(&redis, "web", &SpanProcess::default());
        assert_eq!(
            (redis.l7_protocol, redis.request_resource.as_str()),
            ("Redis", "GET k")
        );
        assert_eq!(redis.response_status, "server_error");
        assert_eq!(redis.response_exception, "connection reset");

        let internal = span_row(
            &span(SpanKind::Internal, vec![]),
            "web",
            &SpanProcess::default(),
        );
        assert_eq!((internal.l7_protocol, internal.span_kind), ("", "internal"));
        assert_eq!(internal.response_status, "ok");
    }

    #[test]
    fn a_request_gives_one_row_per_span_with_its_resource() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s("cart")),
                        kv("process.pid", Value::IntValue(99)),
                        kv("host.name", s("h1")),
                        kv("process.executable.name", s("python3")),
                        kv("container.id", s("c0ffee")),
                    ],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        span(SpanKind::Server, vec![]),
                        span(SpanKind::Client, vec![]),
                    ],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        // sent from elsewhere: the resource describes the process
        let senders = Senders::new(
            "n1".into(),
            Arc::new(Mutex::new(crate::capture::procinfo::Processes::new(
                "n1".into(),
            ))),
        );
        let rows = request_rows(&request, |r| senders.process(r, None));
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.app_service == "cart"));
        assert_eq!(
            (rows[0].process_id_1, rows[1].process_id_0),
            (Some(99), Some(99))
        );
        assert_eq!(&*rows[0].gprocess_1, "otel/h1/99/cart");
        assert_eq!(&*rows[1].gprocess_0, "otel/h1/99/cart");
        assert_eq!(&*rows[0].process_kname_1, "python3");
        let new = senders.take_new();
        assert_eq!(new.len(), 1);
        assert_eq!(
            (&*new[0].container_id, &*new[0].service),
            ("c0ffee", "cart")
        );
        // registered once, until its attributes change; or again when registering failed
        request_rows(&request, |r| senders.process(r, None));
        assert!(senders.take_new().is_empty());
        senders.untake(new);
        assert_eq!(senders.take_new().len(), 1);
        // a resource that names no process or container gets none
        let mut bare = request.clone();
        bare.resource_spans[0].resource = None;
        let rows = request_rows(&bare, |r| senders.process(r, None));
        assert!(rows[0].gprocess_1.is_empty() && rows[0].process_id_1.is_none());

        // sent from this host: the sending process, as capture would tag it (here the
        // resource's pid names another process, so the resource describes that one)
        let me = std::process::id();
        let rows = request_rows(&bare, |r| senders.process(r, Some(me)));
        assert!(rows[0].gprocess_1.starts_with(&format!("n1/{me}/")));
        assert_eq!(rows[0].process_id_1, Some(me));
        let mine = senders.take_new();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].key, rows[0].gprocess_1);
        let rows = request_rows(&request, |r| senders.process(r, Some(me)));
        assert_eq!(&*rows[0].gprocess_1, "otel/h1/99/cart");
        assert!(validate(&request).is_ok());
        let mut bad = request.clone();
        bad.resource_spans[0].scope_spans[0].spans[1].span_id = vec![1, 2, 3];
        assert!(validate(&bad).unwrap_err().contains("spanId"));
    }

    #[test]
    fn json_as_the_otlp_json_mapping_writes_it() {
        // hex ids, camelCase names, int64 times as strings, enums as numbers
        let json = r#"{"resourceSpans":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"cart"}}]},
          "scopeSpans":[{"scope":{"name":"t"},"spans":[{
            "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "parentSpanId":"eee19b7ec3c1b173","name":"GET /","kind":2,
            "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
            "attributes":[{"key":"http.response.status_code","value":{"intValue":"200"}},
                          {"key":"http.request.method","value":{"stringValue":"GET"}}],
            "status":{}}]}]}]}"#;
        let request: ExportTraceServiceRequest = serde_json::from_str(json).unwrap();
        assert!(validate(&request).is_ok());
        let rows = request_rows(&request, |_| SpanProcess::default());
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.trace_id, "5b8efff798038103d269b633813fc60c");
        assert_eq!(row.parent_span_id, "eee19b7ec3c1b173");
        assert_eq!((row.span_kind, row.response_code), ("server", Some(200)));
        assert_eq!(row.response_duration_us, Some(1_000_000));
    }
}
