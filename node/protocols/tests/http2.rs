//! HTTP/2 and gRPC conversations end to end: chunks in, rows out. Synthetic frames built from
//! RFC 9113 and RFC 7541, then byte streams recorded from nginx, curl, nghttp and grpcio
//! (tests/fixtures/http2/README.md).

mod common;

use common::{Wire, directions, recorded};
use flowmesh_protocols::{
    ConversationConfig, Direction, L7Protocol, L7Record, ResponseStatus, Role,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

// Frame types and flags (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend(stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer (RFC 7541 §5.1).
fn int(value: usize, prefix: u32, pattern: u8, out: &mut Vec<u8>) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.push(pattern | value as u8);
        return;
    }
    out.push(pattern | mask as u8);
    let mut rest = value - mask;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

fn string(s: &str, out: &mut Vec<u8>) {
    int(s.len(), 7, 0, out);
    out.extend_from_slice(s.as_bytes());
}

/// A header block builder.
#[derive(Default, Clone)]
struct Block(Vec<u8>);

impl Block {
    /// An indexed field (static 1..=61, dynamic from 62).
    fn index(mut self, i: usize) -> Self {
        int(i, 7, 0x80, &mut self.0);
        self
    }
    /// A literal with incremental indexing and a new name.
    fn add(mut self, name: &str, value: &str) -> Self {
        self.0.push(0x40);
        string(name, &mut self.0);
        string(value, &mut self.0);
        self
    }
    /// A literal with incremental indexing, its name from index `i`.
    fn add_named(mut self, i: usize, value: &str) -> Self {
        int(i, 6, 0x40, &mut self.0);
        string(value, &mut self.0);
        self
    }
    /// A literal without indexing and a new name.
    fn lit(mut self, name: &str, value: &str) -> Self {
        self.0.push(0x00);
        string(name, &mut self.0);
        string(value, &mut self.0);
        self
    }
    /// A literal without indexing, its name from index `i`.
    fn lit_named(mut self, i: usize, value: &str) -> Self {
        int(i, 4, 0x00, &mut self.0);
        string(value, &mut self.0);
        self
    }
    fn size_update(mut self, size: usize) -> Self {
        int(size, 5, 0x20, &mut self.0);
        self
    }
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// `GET path` with `:authority` (static name 1) and `:path` (static name 4) as literals.
fn get(path: &str) -> Block {
    Block::default()
        .index(2)
        .index(6)
        .lit_named(4, path)
        .lit_named(1, "svc.local:8080")
}

fn status(code: u16) -> Block {
    Block::default().lit_named(8, &code.to_string())
}

fn grpc_request(path: &str) -> Block {
    Block::default()
        .index(3)
        .index(6)
        .lit_named(4, path)
        .lit_named(1, "grpc.local:50051")
        .lit_named(31, "application/grpc")
        .lit("te", "trailers")
}

fn client_start() -> Vec<u8> {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(
        SETTINGS,
        0,
        0,
        &[0, 2, 0, 0, 0, 0, 0, 4, 0, 0, 0xff, 0xff],
    ));
    bytes.extend(frame(WINDOW_UPDATE, 0, 0, &[0, 0x0f, 0, 1]));
    bytes
}

fn server_start() -> Vec<u8> {
    let mut bytes = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    bytes.extend(frame(SETTINGS, 1, 0, &[]));
    bytes
}

fn summary(records: &[L7Record]) -> Vec<(String, Option<u16>, ResponseStatus)> {
    records
        .iter()
        .map(|r| {
            (
                r.request_resource.clone(),
                r.response_code,
                r.response_status,
            )
        })
        .collect()
}

fn row(
    path: &str,
    code: Option<u16>,
    status: ResponseStatus,
) -> (String, Option<u16>, ResponseStatus) {
    (path.to_owned(), code, status)
}

#[test]
fn prior_knowledge_get_in_both_roles() {
    for server in [true, false] {
        let (req_dir, resp_dir) = directions(server);
        let mut wire = Wire::new();
        let block = get("/api/items?page=2")
            .lit("x-request-id", "req-42")
            .lit("traceparent", TRACEPARENT);
        let request = frame(HEADERS, END_HEADERS | END_STREAM, 1, block.bytes());
        let mut first = client_start();
        first.extend(&request);
        wire.tid = 7;
        wire.syscall_trace_id = 70;
        let req = wire.send(req_dir, &first);
        assert_eq!(wire.conversation.protocol(), Some(L7Protocol::Http2));
        let role = if server { Role::Server } else { Role::Client };
        assert_eq!(wire.conversation.role(), Some(role));
        wire.send(resp_dir, &server_start());
        wire.tid = 8;
        wire.syscall_trace_id = 80;
        let head = frame(
            HEADERS,
            END_HEADERS,
            1,
            status(200).add("server", "t").bytes(),
        );
        let body = frame(DATA, END_STREAM, 1, b"[1,2,3]");
        let resp = wire.send(resp_dir, &[head.clone(), body.clone()].concat());
        assert_eq!(wire.records.len(), 1);
        let r = &wire.records[0];
        assert_eq!(r.protocol, L7Protocol::Http2);
        assert_eq!(r.role, role);
        assert_eq!(r.version, "2");
        assert_eq!(r.request_type, "GET");
        assert_eq!(r.request_domain, "svc.local:8080");
        assert_eq!(r.request_resource, "/api/items?page=2");
        assert_eq!(r.endpoint, "/api/items");
        assert_eq!(r.response_code, Some(200));
        assert_eq!(r.response_status, ResponseStatus::Ok);
        assert_eq!(r.response_exception, "");
        assert_eq!(r.request_length, request.len() as u64);
        assert_eq!(r.response_length, Some((head.len() + body.len()) as u64));
        assert_eq!(r.request_start_ns, req.enter_ns);
        assert_eq!(r.request_end_ns, req.exit_ns);
        assert_eq!(r.response_start_ns, Some(resp.enter_ns));
        assert_eq!(r.response_end_ns, Some(resp.exit_ns));
        // The HEADERS frame starts after the preface, SETTINGS and WINDOW_UPDATE.
        assert_eq!(
            r.req_tcp_seq,
            Some(req.seq + (first.len() - request.len()) as u32)
        );
        assert_eq!(r.resp_tcp_seq, Some(resp.seq));
        assert_eq!((r.request_tid, r.response_tid), (7, Some(8)));
        assert_eq!(
            (r.request_syscall_trace_id, r.response_syscall_trace_id),
            (70, 80)
        );
        assert_eq!(r.x_request_id.as_deref(), Some("req-42"));
        assert_eq!(
            r.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(r.span_id.as_deref(), Some("b7ad6b7169203331"));
        let stats = wire.stats();
        assert_eq!(
            (stats.records, stats.parse_errors, stats.resyncs),
            (1, 0, 0)
        );
    }
}

#[test]
fn multiplexed_streams_complete_in_any_order() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    let mut requests = client_start();
    for (id, path) in [(1, "/one"), (3, "/two"), (5, "/three")] {
        requests.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            get(path).bytes(),
        ));
    }
    wire.send(req_dir, &requests);
    wire.send(resp_dir, &server_start());
    // Responses interleaved: heads of 5, 1, 3, then DATA of all three mixed.
    let mut responses = Vec::new();
    responses.extend(frame(HEADERS, END_HEADERS, 5, status(500).bytes()));
    responses.extend(frame(HEADERS, END_HEADERS, 1, status(200).bytes()));
    responses.extend(frame(DATA, 0, 1, b"aaaa"));
    responses.extend(frame(HEADERS, END_HEADERS, 3, status(404).bytes()));
    responses.extend(frame(DATA, 0, 5, b"err"));
    responses.extend(frame(DATA, END_STREAM, 3, b"missing"));
    wire.send(resp_dir, &responses);
    let mut rest = frame(PING, 0, 0, &[0; 8]);
    rest.extend(frame(DATA, END_STREAM, 1, b"bb"));
    rest.extend(frame(DATA, END_STREAM, 5, b""));
    wire.send(resp_dir, &rest);
    assert_eq!(
        summary(&wire.records),
        [
            row("/two", Some(404), ResponseStatus::ClientError),
            row("/one", Some(200), ResponseStatus::Ok),
            row("/three", Some(500), ResponseStatus::ServerError),
        ]
    );
    let lengths: Vec<Option<u64>> = wire.records.iter().map(|r| r.response_length).collect();
    let head = |code| (9 + status(code).bytes().len()) as u64;
    assert_eq!(
        lengths,
        [
            Some(head(404) + 9 + 7),
            Some(head(200) + 9 + 4 + 9 + 2),
            Some(head(500) + 9 + 3 + 9)
        ]
    );
    assert_eq!(wire.stats().parse_errors, 0);
}

#[test]
fn grpc_calls_with_trailers_and_errors() {
    for server in [true, false] {
        let (req_dir, resp_dir) = directions(server);
        let mut wire = Wire::new();
        let mut bytes = client_start();
        let message = [0u8, 0, 0, 0, 5, b'w', b'o', b'r', b'l', b'd'];
        bytes.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            grpc_request("/helloworld.Greeter/SayHello").bytes(),
        ));
        bytes.extend(frame(DATA, END_STREAM, 1, &message));
        wire.send(req_dir, &bytes);
        wire.send(resp_dir, &server_start());
        let head = Block::default().index(8).lit_named(31, "application/grpc");
        let mut reply = frame(HEADERS, END_HEADERS, 1, head.bytes());
        reply.extend(frame(DATA, 0, 1, &message));
        wire.send(resp_dir, &reply);
        assert!(wire.records.is_empty(), "trailers end the call");
        let trailers = Block::default()
            .lit("grpc-status", "0")
            .lit("grpc-message", "");
        wire.send(
            resp_dir,
            &frame(HEADERS, END_HEADERS | END_STREAM, 1, trailers.bytes()),
        );
        assert_eq!(wire.conversation.protocol(), Some(L7Protocol::Grpc));

        // A trailers-only error response with a percent-encoded message.
        let request = grpc_request("/helloworld.Greeter/Missing");
        let mut bytes = frame(HEADERS, END_HEADERS, 3, request.bytes());
        bytes.extend(frame(DATA, END_STREAM, 3, &message));
        wire.send(req_dir, &bytes);
        let error = Block::default()
            .index(8)
            .lit_named(31, "application/grpc")
            .lit("grpc-status", "5")
            .lit("grpc-message", "no greeting for caf%C3%A9");
        wire.send(
            resp_dir,
            &frame(HEADERS, END_HEADERS | END_STREAM, 3, error.bytes()),
        );
        assert_eq!(wire.records.len(), 2);
        let ok = &wire.records[0];
        assert_eq!(ok.protocol, L7Protocol::Grpc);
        assert_eq!(ok.request_type, "POST");
        assert_eq!(ok.request_domain, "grpc.local:50051");
        assert_eq!(ok.request_resource, "helloworld.Greeter");
        assert_eq!(ok.endpoint, "/helloworld.Greeter/SayHello");
        assert_eq!(ok.response_code, Some(0));
        assert_eq!(ok.response_status, ResponseStatus::Ok);
        assert_eq!(ok.response_exception, "");
        let failed = &wire.records[1];
        assert_eq!(failed.endpoint, "/helloworld.Greeter/Missing");
        assert_eq!(failed.response_code, Some(5));
        assert_eq!(failed.response_status, ResponseStatus::ClientError);
        assert_eq!(failed.response_exception, "no greeting for café");
    }
}

#[test]
fn grpc_server_errors_and_http_errors_without_grpc_status() {
    let (req_dir, resp_dir) = directions(false);
    let mut wire = Wire::new();
    let mut bytes = client_start();
    for (id, method) in [(1, "/a.B/Unavailable"), (3, "/a.B/Proxy")] {
        bytes.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            grpc_request(method).bytes(),
        ));
    }
    wire.send(req_dir, &bytes);
    let unavailable = Block::default()
        .index(8)
        .lit("grpc-status", "14")
        .lit("grpc-message", "backend down");
    let mut responses = frame(HEADERS, END_HEADERS | END_STREAM, 1, unavailable.bytes());
    // A proxy answering 503 with no gRPC trailers at all.
    responses.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        status(503).bytes(),
    ));
    wire.send(resp_dir, &responses);
    assert_eq!(
        summary(&wire.records),
        [
            row("a.B", Some(14), ResponseStatus::ServerError),
            row("a.B", Some(503), ResponseStatus::ServerError),
        ]
    );
    assert_eq!(wire.records[0].response_exception, "backend down");
}

#[test]
fn padding_priority_and_continuation() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    let block = get("/continued").lit("x-request-id", "split-block");
    let (a, b) = block.bytes().split_at(7);
    let (b, c) = b.split_at(10);
    // HEADERS with 3 bytes of padding and a priority, then two CONTINUATION frames.
    let mut first = vec![3u8, 0, 0, 0, 0, 16];
    first.extend_from_slice(a);
    first.extend([0, 0, 0]);
    let mut bytes = client_start();
    bytes.extend(frame(
        HEADERS,
        PADDED | PRIORITY_FLAG | END_STREAM,
        1,
        &first,
    ));
    bytes.extend(frame(CONTINUATION, 0, 1, b));
    bytes.extend(frame(CONTINUATION, END_HEADERS, 1, c));
    bytes.extend(frame(PRIORITY, 0, 3, &[0, 0, 0, 1, 10]));
    wire.send(req_dir, &bytes);
    let mut body = vec![4u8];
    body.extend(b"data");
    body.extend([0; 4]);
    let mut response = frame(HEADERS, END_HEADERS, 1, status(201).bytes());
    response.extend(frame(DATA, PADDED | END_STREAM, 1, &body));
    wire.send(resp_dir, &response);
    assert_eq!(
        summary(&wire.records),
        [row("/continued", Some(201), ResponseStatus::Ok)]
    );
    let r = &wire.records[0];
    assert_eq!(r.x_request_id.as_deref(), Some("split-block"));
    assert_eq!(
        r.request_length,
        (9 + first.len() + 9 + b.len() + 9 + c.len()) as u64
    );
    assert_eq!(r.response_length, Some(response.len() as u64));
    assert_eq!(wire.stats().parse_errors, 0);
}

#[test]
fn interim_responses_and_request_bodies() {
    let (req_dir, resp_dir) = directions(false);
    let mut wire = Wire::new();
    let block = Block::default()
        .index(3)
        .index(6)
        .lit_named(4, "/upload")
        .lit("expect", "100-continue");
    let mut bytes = client_start();
    bytes.extend(frame(HEADERS, END_HEADERS, 1, block.bytes()));
    let req = wire.send(req_dir, &bytes);
    wire.send(
        resp_dir,
        &frame(HEADERS, END_HEADERS, 1, status(100).bytes()),
    );
    let body = frame(DATA, 0, 1, &[1; 100]);
    wire.send(req_dir, &body);
    // Request trailers end the request.
    let trailers = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        Block::default().lit("x-sum", "1").bytes(),
    );
    let last = wire.send(req_dir, &trailers);
    wire.send(
        resp_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 1, status(204).bytes()),
    );
    assert_eq!(
        summary(&wire.records),
        [row("/upload", Some(204), ResponseStatus::Ok)]
    );
    let r = &wire.records[0];
    assert_eq!(r.request_type, "POST");
    assert_eq!(r.request_start_ns, req.enter_ns);
    assert_eq!(r.request_end_ns, last.exit_ns);
    let head = 9 + block.bytes().len();
    assert_eq!(
        r.request_length,
        (head + body.len() + trailers.len()) as u64
    );
    // The interim 100 counts in the response.
    let interim = 9 + status(100).bytes().len();
    let fin = 9 + status(204).bytes().len();
    assert_eq!(r.response_length, Some((interim + fin) as u64));
}

#[test]
fn resets_and_goaway_end_streams() {
    let (req_dir, resp_dir) = directions(false);
    let mut wire = Wire::new();
    let mut bytes = client_start();
    for (id, path) in [
        (1, "/cancelled"),
        (3, "/refused"),
        (5, "/answered"),
        (7, "/late"),
    ] {
        bytes.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            get(path).bytes(),
        ));
    }
    wire.send(req_dir, &bytes);
    // The client cancels stream 1.
    wire.send(req_dir, &frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
    // The server refuses 3, answers 5 in part, and goes away after 5.
    let mut responses = frame(RST_STREAM, 0, 3, &[0, 0, 0, 7]);
    responses.extend(frame(HEADERS, END_HEADERS, 5, status(200).bytes()));
    responses.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 5, 0, 0, 0, 0]));
    wire.send(resp_dir, &responses);
    assert_eq!(
        summary(&wire.records),
        [
            row("/cancelled", None, ResponseStatus::Unknown),
            row("/refused", None, ResponseStatus::Unknown),
            row("/late", None, ResponseStatus::Unknown),
        ]
    );
    assert_eq!(
        wire.records[0].response_exception,
        "stream reset by client: CANCEL"
    );
    assert_eq!(
        wire.records[1].response_exception,
        "stream reset by server: REFUSED_STREAM"
    );
    // Stream 5 is still answered, then reset by the server mid-body: the status stands.
    wire.send(resp_dir, &frame(RST_STREAM, 0, 5, &[0, 0, 0, 2]));
    let r = &wire.records[3];
    assert_eq!(r.request_resource, "/answered");
    assert_eq!(
        (r.response_code, r.response_status),
        (Some(200), ResponseStatus::Ok)
    );
    assert_eq!(r.response_length, None);
    assert_eq!(
        r.response_exception,
        "stream reset by server: INTERNAL_ERROR"
    );
}

#[test]
fn timeouts_and_close() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::with_config(ConversationConfig {
        request_timeout_ns: 5_000_000,
        ..ConversationConfig::default()
    });
    let mut bytes = client_start();
    bytes.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        get("/slow").bytes(),
    ));
    // Stream 3 is still sending its body: not waiting for a response yet.
    bytes.extend(frame(HEADERS, END_HEADERS, 3, get("/upload").bytes()));
    wire.send(req_dir, &bytes);
    let now = wire.now();
    wire.expire(now);
    assert!(wire.records.is_empty());
    wire.expire(now + 10_000_000);
    assert_eq!(
        summary(&wire.records),
        [row("/slow", None, ResponseStatus::Timeout)]
    );
    // A late response to the timed-out stream is not paired with anything.
    wire.send(
        resp_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 1, status(200).bytes()),
    );
    assert_eq!(wire.records.len(), 1);
    assert_eq!(wire.stats().unmatched_responses, 1);
    // Stream 5 gets its response head; close reports both without response fields.
    wire.send(
        req_dir,
        &frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            5,
            get("/streaming").bytes(),
        ),
    );
    wire.send(
        resp_dir,
        &frame(HEADERS, END_HEADERS, 5, status(200).bytes()),
    );
    wire.close();
    assert_eq!(
        summary(&wire.records[1..]),
        [
            row("/upload", None, ResponseStatus::Unknown),
            row("/streaming", None, ResponseStatus::Unknown),
        ]
    );
    assert_eq!(wire.records[2].response_start_ns, None);
    assert_eq!(wire.stats().records, 3);
}

#[test]
fn tracked_streams_are_bounded() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::with_config(ConversationConfig {
        max_pending_requests: 2,
        ..ConversationConfig::default()
    });
    let mut bytes = client_start();
    for (id, path) in [(1, "/a"), (3, "/b"), (5, "/c")] {
        bytes.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            get(path).bytes(),
        ));
    }
    wire.send(req_dir, &bytes);
    assert_eq!(wire.stats().dropped_requests, 1);
    let mut responses = Vec::new();
    for id in [1, 3, 5] {
        responses.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            status(200).bytes(),
        ));
    }
    wire.send(resp_dir, &responses);
    assert_eq!(wire.records.len(), 2);
    assert_eq!(wire.stats().unmatched_responses, 1);
    // Room again.
    wire.send(
        req_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 7, get("/d").bytes()),
    );
    wire.send(
        resp_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 7, status(200).bytes()),
    );
    assert_eq!(wire.records.len(), 3);
}

#[test]
fn dynamic_table_across_requests_and_settings() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    let mut bytes = client_start();
    // The client's decoder (responses) may use 256 bytes of table at most.
    bytes.extend(frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 1, 0]));
    let first = Block::default()
        .index(2)
        .index(6)
        .add_named(4, "/cached")
        .add_named(1, "dyn.local")
        .add("x-request-id", "same-id");
    bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, first.bytes()));
    // Stream 3 repeats everything from the dynamic table: x-request-id is 62, the authority 63,
    // the path 64.
    let second = Block::default()
        .index(2)
        .index(6)
        .index(64)
        .index(63)
        .index(62);
    bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, second.bytes()));
    wire.send(req_dir, &bytes);
    let r1 = Block::default().size_update(256).add_named(8, "200");
    let mut responses = frame(HEADERS, END_HEADERS | END_STREAM, 1, r1.bytes());
    responses.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        Block::default().index(62).bytes(),
    ));
    wire.send(resp_dir, &responses);
    assert_eq!(
        summary(&wire.records),
        [
            row("/cached", Some(200), ResponseStatus::Ok),
            row("/cached", Some(200), ResponseStatus::Ok),
        ]
    );
    assert_eq!(wire.records[1].request_domain, "dyn.local");
    assert_eq!(wire.records[1].x_request_id.as_deref(), Some("same-id"));
    // A size update above the announced 256 bytes is a compression error: the table is
    // lost, the row still counted.
    wire.send(
        req_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 5, get("/big").bytes()),
    );
    let too_big = Block::default().size_update(4096).index(8);
    wire.send(
        resp_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 5, too_big.bytes()),
    );
    assert_eq!(
        summary(&wire.records[2..]),
        [row("/big", None, ResponseStatus::Unknown)]
    );
    assert_eq!(wire.stats().parse_errors, 1);
}

#[test]
fn push_promises_keep_the_table_in_step() {
    let (req_dir, resp_dir) = directions(false);
    let mut wire = Wire::new();
    let mut bytes = client_start();
    bytes.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        get("/page").bytes(),
    ));
    wire.send(req_dir, &bytes);
    // The promise inserts `:path /style.css` into the server's table (entry 62).
    let mut promise = vec![0, 0, 0, 2];
    promise.extend(Block::default().index(2).add_named(4, "/style.css").bytes());
    let mut responses = frame(PUSH_PROMISE, END_HEADERS, 1, &promise);
    responses.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        Block::default().index(8).index(62).bytes(),
    ));
    responses.extend(frame(DATA, END_STREAM, 1, b"<html>"));
    // The pushed stream's response: not followed, no row.
    responses.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        2,
        Block::default().index(8).bytes(),
    ));
    wire.send(resp_dir, &responses);
    assert_eq!(
        summary(&wire.records),
        [row("/page", Some(200), ResponseStatus::Ok)]
    );
    assert_eq!(wire.stats().parse_errors, 0);
    assert_eq!(wire.stats().unmatched_responses, 0);
}

#[test]
fn a_header_block_cut_by_the_capture_keeps_what_was_captured() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    let mut bytes = client_start();
    bytes.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        get("/one").bytes(),
    ));
    wire.send(req_dir, &bytes);
    wire.send(resp_dir, &server_start());
    // A response head larger than the 1 KiB capture: :status is captured, the cookie that
    // follows (inserted into the table) is not.
    let cookie = "c".repeat(3000);
    let head = Block::default()
        .add_named(8, "200")
        .add("set-cookie", &cookie)
        .add("x-after", "lost");
    let response = frame(HEADERS, END_HEADERS, 1, head.bytes());
    wire.send_capped(resp_dir, &response, 1024);
    let body = frame(DATA, END_STREAM, 1, b"ok");
    wire.send(resp_dir, &body);
    assert_eq!(
        summary(&wire.records),
        [row("/one", Some(200), ResponseStatus::Ok)]
    );
    assert_eq!(
        wire.records[0].response_length,
        Some((response.len() + body.len()) as u64)
    );
    // The next response refers to `:status 200` (now an entry of unknown index) and to
    // static 404: the dynamic reference is unknown, the static one decodes.
    wire.send(
        req_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 3, get("/two").bytes()),
    );
    wire.send(
        req_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 5, get("/three").bytes()),
    );
    let unknown = Block::default().index(64).lit("x-request-id", "r3");
    wire.send(
        resp_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 3, unknown.bytes()),
    );
    wire.send(
        resp_dir,
        &frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            5,
            Block::default().index(13).bytes(),
        ),
    );
    assert_eq!(
        summary(&wire.records[1..]),
        [
            row("/two", None, ResponseStatus::Unknown),
            row("/three", Some(404), ResponseStatus::ClientError),
        ]
    );
    assert_eq!(wire.records[1].x_request_id.as_deref(), Some("r3"));
    let stats = wire.stats();
    assert_eq!((stats.parse_errors, stats.resyncs), (0, 0));

    // A request head cut before its :path: the row is counted, its path unknown.
    let long = Block::default()
        .index(3)
        .lit("x-padding", &"p".repeat(2000))
        .lit_named(4, "/hidden");
    wire.send_capped(
        req_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 7, long.bytes()),
        1024,
    );
    wire.send(
        resp_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 7, status(500).bytes()),
    );
    let r = wire.records.last().expect("a row");
    assert_eq!(
        (r.request_type.as_str(), r.request_resource.as_str()),
        ("POST", "")
    );
    assert_eq!(r.response_code, Some(500));
}

#[test]
fn large_bodies_are_skipped_and_lost_framing_recovers() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    let mut bytes = client_start();
    bytes.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        get("/big").bytes(),
    ));
    wire.send(req_dir, &bytes);
    // One write: HEADERS and a 16 KiB DATA frame with END_STREAM. Only the first KiB is
    // captured, but the DATA frame ends with the syscall: nothing is lost.
    let mut response = frame(HEADERS, END_HEADERS, 1, status(200).bytes());
    response.extend(frame(DATA, END_STREAM, 1, &[b'x'; 16_384]));
    wire.send_capped(resp_dir, &response, 1024);
    assert_eq!(wire.records.len(), 1);
    assert_eq!(wire.records[0].response_length, Some(response.len() as u64));
    assert_eq!(wire.stats().resyncs, 0);

    // Now a response whose next frame header is in the uncaptured tail: framing is lost,
    // the row is emitted with its status and no length.
    wire.send(
        req_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 3, get("/bigger").bytes()),
    );
    let mut response = frame(HEADERS, END_HEADERS, 3, status(200).bytes());
    response.extend(frame(DATA, 0, 3, &[b'y'; 10_000]));
    response.extend(frame(DATA, 0, 3, &[b'y'; 10_000]));
    wire.send_capped(resp_dir, &response, 1024);
    assert_eq!(wire.records.len(), 2);
    assert_eq!(wire.records[1].response_code, Some(200));
    assert_eq!(wire.records[1].response_length, None);
    assert_eq!(wire.stats().resyncs, 1);
    // The rest of stream 3 arrives; a new syscall with the next response resynchronises.
    wire.send_capped(resp_dir, &frame(DATA, END_STREAM, 3, &[b'y'; 3000]), 1024);
    wire.send(
        req_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 5, get("/after").bytes()),
    );
    wire.send(
        resp_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 5, status(404).bytes()),
    );
    assert_eq!(
        summary(&wire.records[2..]),
        [row("/after", Some(404), ResponseStatus::ClientError)]
    );
    assert_eq!(wire.stats().unmatched_responses, 0);
}

#[test]
fn grpc_waits_for_trailers_after_lost_framing() {
    let (req_dir, resp_dir) = directions(false);
    let mut wire = Wire::with_config(ConversationConfig {
        request_timeout_ns: 5_000_000_000,
        ..ConversationConfig::default()
    });
    let mut bytes = client_start();
    bytes.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        grpc_request("/big.Data/Get").bytes(),
    ));
    bytes.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        grpc_request("/big.Data/Never").bytes(),
    ));
    wire.send(req_dir, &bytes);
    let mut response = frame(
        HEADERS,
        END_HEADERS,
        1,
        Block::default()
            .index(8)
            .lit_named(31, "application/grpc")
            .bytes(),
    );
    response.extend(frame(DATA, 0, 1, &[0; 5000]));
    response.extend(frame(DATA, 0, 1, &[0; 5000]));
    wire.send_capped(resp_dir, &response, 1024);
    assert!(
        wire.records.is_empty(),
        "a gRPC call waits for its grpc-status"
    );
    let trailers = Block::default()
        .lit("grpc-status", "8")
        .lit("grpc-message", "quota");
    wire.send(
        resp_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 1, trailers.bytes()),
    );
    assert_eq!(
        summary(&wire.records),
        [row("big.Data", Some(8), ResponseStatus::ServerError)]
    );
    assert_eq!(wire.records[0].response_length, None);
    assert_eq!(wire.records[0].response_exception, "quota");
    // Stream 3 had no response when framing was lost: it may have been answered unseen.
    let later = wire.now() + 10_000_000_000;
    wire.expire(later);
    assert_eq!(
        summary(&wire.records[1..]),
        [row("big.Data", None, ResponseStatus::Unknown)]
    );
}

#[test]
fn mid_connection_start_without_preface() {
    for server in [true, false] {
        let (req_dir, resp_dir) = directions(server);
        let mut wire = Wire::new();
        // A request whose authority and user agent are dynamic references of a table this
        // capture never saw.
        let block = Block::default()
            .index(2)
            .index(7)
            .lit_named(4, "/mid")
            .index(70)
            .index(71);
        let mut bytes = frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]);
        bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, 41, block.bytes()));
        wire.send(req_dir, &bytes);
        let role = if server { Role::Server } else { Role::Client };
        assert_eq!(wire.conversation.role(), Some(role));
        let head = Block::default().index(8).index(90);
        let mut response = frame(HEADERS, END_HEADERS, 41, head.bytes());
        response.extend(frame(DATA, END_STREAM, 41, b"x"));
        wire.send(resp_dir, &response);
        assert_eq!(
            summary(&wire.records),
            [row("/mid", Some(200), ResponseStatus::Ok)]
        );
        assert_eq!(wire.records[0].request_domain, "");
        // Stream 39 was opened before the capture: its response is not paired.
        wire.send(resp_dir, &frame(DATA, END_STREAM, 39, b"y"));
        assert_eq!(wire.stats().unmatched_responses, 1);
        assert_eq!(wire.stats().parse_errors, 0);
    }
}

#[test]
fn a_settings_chunk_waits_for_the_role() {
    // The server writes its SETTINGS before reading the preface: inference waits, then the
    // preface decides.
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    wire.send(resp_dir, &server_start());
    assert_eq!(wire.conversation.protocol(), None);
    let mut bytes = client_start();
    bytes.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        get("/").bytes(),
    ));
    wire.send(req_dir, &bytes);
    assert_eq!(wire.conversation.role(), Some(Role::Server));
    wire.send(
        resp_dir,
        &frame(HEADERS, END_HEADERS | END_STREAM, 1, status(200).bytes()),
    );
    assert_eq!(wire.records.len(), 1);
}

#[test]
fn other_protocols_do_not_become_http2() {
    let streams: [&[u8]; 4] = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        &[0xa7; 64],
    ];
    for stream in streams {
        let mut wire = Wire::new();
        wire.send(Direction::Egress, stream);
        assert_ne!(
            wire.conversation.protocol(),
            Some(L7Protocol::Http2),
            "{stream:?}"
        );
        assert_ne!(
            wire.conversation.protocol(),
            Some(L7Protocol::Grpc),
            "{stream:?}"
        );
    }
}

/// A synthetic conversation with everything: preface, settings, continuation, padding,
/// multiplexed DATA, trailers.
fn full_conversation() -> (Vec<u8>, Vec<u8>) {
    let mut requests = client_start();
    let block = grpc_request("/svc.S/M").lit("x-request-id", "full");
    let (a, b) = block.bytes().split_at(20);
    requests.extend(frame(HEADERS, 0, 1, a));
    requests.extend(frame(CONTINUATION, END_HEADERS, 1, b));
    requests.extend(frame(
        DATA,
        PADDED | END_STREAM,
        1,
        &[2, 0, 0, 0, 0, 1, 9, 0, 0],
    ));
    requests.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        get("/plain").bytes(),
    ));
    requests.extend(frame(SETTINGS, 1, 0, &[]));
    let mut responses = server_start();
    responses.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        Block::default()
            .index(8)
            .lit_named(31, "application/grpc")
            .bytes(),
    ));
    responses.extend(frame(HEADERS, END_HEADERS, 3, status(302).bytes()));
    responses.extend(frame(DATA, 0, 1, &[0, 0, 0, 0, 2, 8, 1]));
    responses.extend(frame(DATA, END_STREAM, 3, b"moved"));
    responses.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        Block::default().lit("grpc-status", "0").bytes(),
    ));
    (requests, responses)
}

fn full_expected() -> Vec<(String, Option<u16>, ResponseStatus)> {
    vec![
        row("/plain", Some(302), ResponseStatus::Ok),
        row("svc.S", Some(0), ResponseStatus::Ok),
    ]
}

#[test]
fn split_at_every_position() {
    let (requests, responses) = full_conversation();
    for server in [true, false] {
        let (req_dir, resp_dir) = directions(server);
        for split in 1..requests.len().max(responses.len()) {
            let mut wire = Wire::new();
            let r = split.min(requests.len() - 1);
            wire.send(req_dir, &requests[..r]);
            wire.send(req_dir, &requests[r..]);
            let s = split.min(responses.len() - 1);
            wire.send(resp_dir, &responses[..s]);
            wire.send(resp_dir, &responses[s..]);
            assert_eq!(summary(&wire.records), full_expected(), "split at {split}");
            let total: u64 = wire.records.iter().filter_map(|r| r.response_length).sum();
            assert!(total > 0);
            assert_eq!(wire.stats().parse_errors, 0, "split at {split}");
        }
    }
}

#[test]
fn one_byte_syscalls() {
    let (requests, responses) = full_conversation();
    let (req_dir, resp_dir) = directions(false);
    let mut wire = Wire::new();
    for byte in &requests {
        wire.send(req_dir, std::slice::from_ref(byte));
    }
    for byte in &responses {
        wire.send(resp_dir, std::slice::from_ref(byte));
    }
    assert_eq!(summary(&wire.records), full_expected());
    assert_eq!(wire.records[1].x_request_id.as_deref(), Some("full"));
}

// ---- Recorded fixtures -------------------------------------------------------------------

/// One recorded syscall each: `true` for client to server.
type Syscalls = Vec<recorded::Recorded>;

struct Expected {
    protocol: L7Protocol,
    method: &'static str,
    resource: &'static str,
    endpoint: &'static str,
    code: u16,
    status: ResponseStatus,
    exception: &'static str,
    request_length: u64,
    response_length: u64,
}

#[allow(clippy::too_many_arguments)]
const fn ex(
    protocol: L7Protocol,
    method: &'static str,
    resource: &'static str,
    endpoint: &'static str,
    code: u16,
    status: ResponseStatus,
    exception: &'static str,
    lengths: (u64, u64),
) -> Expected {
    Expected {
        protocol,
        method,
        resource,
        endpoint,
        code,
        status,
        exception,
        request_length: lengths.0,
        response_length: lengths.1,
    }
}

const H2: L7Protocol = L7Protocol::Http2;
const GRPC: L7Protocol = L7Protocol::Grpc;
const OK: ResponseStatus = ResponseStatus::Ok;

/// Lengths are sums of the streams' frames (9-byte headers included), read off the fixtures
/// with a frame dump.
const CURL: [Expected; 1] = [ex(H2, "GET", "/hello", "/hello", 200, OK, "", (118, 88))];
const NGHTTP: [Expected; 4] = [
    ex(H2, "GET", "/hello", "/hello", 200, OK, "", (76, 88)),
    ex(
        H2,
        "GET",
        "/static/missing.txt",
        "/static/missing.txt",
        404,
        ResponseStatus::ClientError,
        "",
        (36, 209),
    ),
    ex(
        H2,
        "GET",
        "/error",
        "/error",
        500,
        ResponseStatus::ServerError,
        "",
        (28, 233),
    ),
    ex(
        H2,
        "GET",
        "/static/big.txt?v=1",
        "/static/big.txt",
        200,
        OK,
        "",
        (37, 24_932),
    ),
];
const GREETER: [Expected; 3] = [
    ex(
        GRPC,
        "POST",
        "greet.Greeter",
        "/greet.Greeter/SayHello",
        0,
        OK,
        "",
        (342, 173),
    ),
    ex(
        GRPC,
        "POST",
        "greet.Greeter",
        "/greet.Greeter/Missing",
        5,
        ResponseStatus::ClientError,
        "no greeting for nobody (café)",
        (66, 75),
    ),
    ex(
        GRPC,
        "POST",
        "greet.Greeter",
        "/greet.Greeter/Stream",
        0,
        OK,
        "",
        (62, 192),
    ),
];

/// Checks the rows; `lost_length` lists rows whose response length is unknown.
fn check(name: &str, records: &[L7Record], expected: &[Expected], lost_length: &[usize]) {
    assert_eq!(records.len(), expected.len(), "{name}: {records:#?}");
    for (i, (r, e)) in records.iter().zip(expected).enumerate() {
        let what = format!("{name} row {i}");
        assert_eq!(r.protocol, e.protocol, "{what}");
        assert_eq!(r.version, "2", "{what}");
        assert_eq!(r.request_type, e.method, "{what}");
        assert!(r.request_domain.starts_with("127.0.0.1:"), "{what}: {r:?}");
        assert_eq!(r.request_resource, e.resource, "{what}");
        assert_eq!(r.endpoint, e.endpoint, "{what}");
        assert_eq!(r.response_code, Some(e.code), "{what}");
        assert_eq!(r.response_status, e.status, "{what}");
        assert_eq!(r.response_exception, e.exception, "{what}");
        assert_eq!(r.request_length, e.request_length, "{what}");
        let length = (!lost_length.contains(&i)).then_some(e.response_length);
        assert_eq!(r.response_length, length, "{what}");
        assert!(r.response_end_ns >= r.response_start_ns, "{what}");
    }
}

#[test]
fn nginx_and_curl() {
    let syscalls = recorded::load("http2", "nginx_curl_hello");
    for server in [true, false] {
        for cap in [usize::MAX, 1024] {
            let wire = recorded::feed(&syscalls, server, cap);
            check("curl", &wire.records, &CURL, &[]);
            let r = &wire.records[0];
            assert_eq!(r.x_request_id.as_deref(), Some("fixture-req-1"));
            assert_eq!(
                r.trace_id.as_deref(),
                Some("0af7651916cd43dd8448eb211c80319c")
            );
            assert_eq!(r.span_id.as_deref(), Some("b7ad6b7169203331"));
            let stats = wire.stats();
            assert_eq!((stats.parse_errors, stats.resyncs), (0, 0));
        }
    }
}

#[test]
fn nginx_and_nghttp_multiplexed() {
    let syscalls = recorded::load("http2", "nginx_nghttp_multi");
    for server in [true, false] {
        let wire = recorded::feed(&syscalls, server, usize::MAX);
        check("nghttp", &wire.records, &NGHTTP, &[]);
        assert!(
            wire.records
                .iter()
                .all(|r| r.x_request_id.as_deref() == Some("fixture-req-2"))
        );
        let stats = wire.stats();
        assert_eq!(
            (stats.parse_errors, stats.resyncs, stats.records),
            (0, 0, 4)
        );
        // With the default 1 KiB capture the 25 KiB read holds the first three responses
        // and the head of the fourth; the frames after its first DATA frame are lost.
        let wire = recorded::feed(&syscalls, server, 1024);
        check("nghttp capped", &wire.records, &NGHTTP, &[3]);
        let stats = wire.stats();
        assert_eq!((stats.parse_errors, stats.resyncs), (0, 1));
    }
}

#[test]
fn nghttp_one_byte_and_split_syscalls() {
    let syscalls = recorded::load("http2", "nginx_nghttp_multi");
    let one_byte: Syscalls = syscalls
        .iter()
        .flat_map(|(d, bytes)| bytes.iter().map(move |b| (*d, vec![*b])))
        .collect();
    let wire = recorded::feed(&one_byte, true, usize::MAX);
    check("nghttp one byte", &wire.records, &NGHTTP, &[]);
    // Every syscall cut in two at the same offset.
    for split in (1..2048).chain((2048..25_000).step_by(997)) {
        let cut: Syscalls = syscalls
            .iter()
            .flat_map(|(d, bytes)| {
                let at = split.min(bytes.len());
                [(*d, bytes[..at].to_vec()), (*d, bytes[at..].to_vec())]
            })
            .filter(|(_, bytes)| !bytes.is_empty())
            .collect();
        let wire = recorded::feed(&cut, false, usize::MAX);
        check(
            &format!("nghttp split {split}"),
            &wire.records,
            &NGHTTP,
            &[],
        );
    }
}

#[test]
fn grpcio_greeter() {
    let syscalls = recorded::load("http2", "grpc_greeter");
    for server in [true, false] {
        for cap in [usize::MAX, 1024] {
            let wire = recorded::feed(&syscalls, server, cap);
            check("greeter", &wire.records, &GREETER, &[]);
            let r = &wire.records[0];
            assert_eq!(r.x_request_id.as_deref(), Some("grpc-req-1"));
            assert_eq!(
                r.trace_id.as_deref(),
                Some("0af7651916cd43dd8448eb211c80319c")
            );
            assert_eq!(wire.conversation.protocol(), Some(L7Protocol::Grpc));
            let stats = wire.stats();
            assert_eq!(
                (stats.parse_errors, stats.resyncs, stats.unmatched_responses),
                (0, 0, 0)
            );
        }
    }
}

#[test]
fn grpcio_split_at_every_position() {
    let syscalls = recorded::load("http2", "grpc_greeter");
    let longest = syscalls.iter().map(|(_, b)| b.len()).max().unwrap_or(0);
    for split in 1..longest {
        let cut: Syscalls = syscalls
            .iter()
            .flat_map(|(d, bytes)| {
                let at = split.min(bytes.len());
                [(*d, bytes[..at].to_vec()), (*d, bytes[at..].to_vec())]
            })
            .filter(|(_, bytes)| !bytes.is_empty())
            .collect();
        let wire = recorded::feed(&cut, split % 2 == 0, usize::MAX);
        check(
            &format!("greeter split {split}"),
            &wire.records,
            &GREETER,
            &[],
        );
    }
}

#[test]
fn grpcio_from_the_middle_of_the_connection() {
    // The capture starts after the first call: the later calls' heads refer to table
    // entries it never saw. Rows still come out, with what could be decoded.
    let syscalls = recorded::load("http2", "grpc_greeter");
    let first_response_end = syscalls
        .iter()
        .position(|(to_server, bytes)| !to_server && bytes.len() == 173)
        .expect("the SayHello trailers");
    let rest: Syscalls = syscalls[first_response_end + 1..].to_vec();
    for server in [true, false] {
        let wire = recorded::feed(&rest, server, usize::MAX);
        let endpoints: Vec<&str> = wire.records.iter().map(|r| r.endpoint.as_str()).collect();
        assert_eq!(
            endpoints,
            ["/greet.Greeter/Missing", "/greet.Greeter/Stream"]
        );
        for r in &wire.records {
            assert_eq!(r.request_type, "POST");
            assert_eq!(
                r.response_code.is_some(),
                r.response_status != ResponseStatus::Unknown
            );
        }
        assert_eq!(wire.stats().parse_errors, 0);
    }
}

// ---- Random multiplexed conversations ----------------------------------------------------

mod random {
    use super::*;
    use proptest::prelude::*;

    /// One stream: its path, request body frames, status and response body frames.
    #[derive(Debug, Clone)]
    struct Exchange {
        path: String,
        request_bodies: Vec<usize>,
        status: u16,
        response_bodies: Vec<usize>,
    }

    fn exchange() -> impl Strategy<Value = Exchange> {
        (
            "/[a-z]{1,12}",
            proptest::collection::vec(0usize..300, 0..3),
            prop_oneof![Just(200u16), Just(204), Just(404), Just(503)],
            proptest::collection::vec(0usize..3000, 0..4),
        )
            .prop_map(|(path, request_bodies, status, response_bodies)| Exchange {
                path,
                request_bodies,
                status,
                response_bodies,
            })
    }

    /// Frames of each stream in one direction, merged in the order `choices` picks. With
    /// `open_in_order`, streams start in id order (RFC 9113 §5.1.1: a client opens streams
    /// with increasing ids).
    fn interleave(mut queues: Vec<Vec<Vec<u8>>>, choices: &[u8], open_in_order: bool) -> Vec<u8> {
        for queue in &mut queues {
            queue.reverse();
        }
        let mut started = vec![false; queues.len()];
        let mut out = Vec::new();
        let mut pick = choices.iter().cycle();
        loop {
            let open: Vec<usize> = (0..queues.len())
                .filter(|&i| {
                    !queues[i].is_empty()
                        && (!open_in_order || started[i] || started[..i].iter().all(|&s| s))
                })
                .collect();
            if open.is_empty() {
                return out;
            }
            let i = open[usize::from(*pick.next().unwrap_or(&0)) % open.len()];
            started[i] = true;
            if let Some(frame) = queues[i].pop() {
                out.extend(frame);
            }
        }
    }

    /// Cuts `bytes` into syscalls at the given sizes.
    fn syscalls(bytes: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = bytes;
        let mut size = sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*size.next().unwrap_or(&1)).clamp(1, rest.len());
            out.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn every_stream_becomes_its_row(
            exchanges in proptest::collection::vec(exchange(), 1..8),
            choices in proptest::collection::vec(any::<u8>(), 1..64),
            sizes in proptest::collection::vec(1usize..5000, 1..16),
            server in any::<bool>(),
        ) {
            let mut request_queues = Vec::new();
            let mut response_queues = Vec::new();
            let mut expected = Vec::new();
            for (i, e) in exchanges.iter().enumerate() {
                let id = 2 * i as u32 + 1;
                let head = Block::default().index(2).index(6).add_named(4, &e.path);
                let mut frames = Vec::new();
                let no_body = e.request_bodies.is_empty();
                let flags = END_HEADERS | if no_body { END_STREAM } else { 0 };
                frames.push(frame(HEADERS, flags, id, head.bytes()));
                for (k, &n) in e.request_bodies.iter().enumerate() {
                    let last = k + 1 == e.request_bodies.len();
                    frames.push(frame(DATA, if last { END_STREAM } else { 0 }, id, &vec![1; n]));
                }
                let request_length: usize = frames.iter().map(Vec::len).sum();
                request_queues.push(frames);
                let mut frames = Vec::new();
                let status = Block::default().add_named(8, &e.status.to_string());
                let flags = END_HEADERS | if e.response_bodies.is_empty() { END_STREAM } else { 0 };
                frames.push(frame(HEADERS, flags, id, status.bytes()));
                for (k, &n) in e.response_bodies.iter().enumerate() {
                    let last = k + 1 == e.response_bodies.len();
                    frames.push(frame(DATA, if last { END_STREAM } else { 0 }, id, &vec![2; n]));
                }
                let response_length: usize = frames.iter().map(Vec::len).sum();
                response_queues.push(frames);
                expected.push((
                    e.path.clone(),
                    Some(e.status),
                    request_length as u64,
                    Some(response_length as u64),
                ));
            }
            let mut requests = client_start();
            requests.extend(interleave(request_queues, &choices, true));
            let mut responses = server_start();
            responses.extend(interleave(response_queues, &choices[choices.len() / 2..], false));
            let (req_dir, resp_dir) = directions(server);
            let mut wire = Wire::new();
            for chunk in syscalls(&requests, &sizes) {
                wire.send(req_dir, &chunk);
            }
            for chunk in syscalls(&responses, &sizes[sizes.len() / 2..]) {
                wire.send(resp_dir, &chunk);
            }
            let mut rows: Vec<_> = wire
                .records
                .iter()
                .map(|r| (r.request_resource.clone(), r.response_code, r.request_length, r.response_length))
                .collect();
            rows.sort();
            expected.sort();
            prop_assert_eq!(rows, expected);
            let stats = wire.stats();
            prop_assert_eq!((stats.parse_errors, stats.resyncs, stats.unmatched_responses), (0, 0, 0));
        }

        #[test]
        fn capture_caps_never_invent_fields(
            exchanges in proptest::collection::vec(exchange(), 1..8),
            choices in proptest::collection::vec(any::<u8>(), 1..64),
            sizes in proptest::collection::vec(1usize..5000, 1..16),
            cap in 1usize..1500,
        ) {
            // Whatever is lost to the cap, a row's path and status are either the ones sent
            // or missing, and every stream is reported once at the latest at close.
            let mut request_queues = Vec::new();
            let mut response_queues = Vec::new();
            for (i, e) in exchanges.iter().enumerate() {
                let id = 2 * i as u32 + 1;
                // Unique paths: a row is matched to its stream by path.
                let path = format!("{}-{i}", e.path);
                let head = Block::default().index(2).index(6).add_named(4, &path);
                let mut frames = vec![frame(HEADERS, END_HEADERS | END_STREAM, id, head.bytes())];
                request_queues.push(frames);
                let status = Block::default().add_named(8, &e.status.to_string());
                frames = vec![frame(HEADERS, END_HEADERS, id, status.bytes())];
                for &n in &e.response_bodies {
                    frames.push(frame(DATA, 0, id, &vec![2; n]));
                }
                frames.push(frame(DATA, END_STREAM, id, b""));
                response_queues.push(frames);
            }
            let mut requests = client_start();
            requests.extend(interleave(request_queues, &choices, true));
            let mut responses = server_start();
            responses.extend(interleave(response_queues, &choices[choices.len() / 2..], false));
            let (req_dir, resp_dir) = directions(true);
            let mut wire = Wire::new();
            for chunk in syscalls(&requests, &sizes) {
                wire.send(req_dir, &chunk);
            }
            for chunk in syscalls(&responses, &sizes[sizes.len() / 2..]) {
                wire.send_capped(resp_dir, &chunk, cap);
            }
            wire.close();
            prop_assert_eq!(wire.records.len(), exchanges.len());
            for r in &wire.records {
                let sent = exchanges
                    .iter()
                    .enumerate()
                    .find(|(i, e)| format!("{}-{i}", e.path) == r.request_resource)
                    .map(|(_, e)| e);
                prop_assert!(sent.is_some(), "{:?}", r);
                if let (Some(code), Some(e)) = (r.response_code, sent) {
                    prop_assert_eq!(code, e.status);
                }
            }
        }
    }
}
