//! Property tests: arbitrary input never breaks a conversation, and valid exchanges are
//! counted exactly whatever the syscall boundaries and capture caps.

mod common;

use common::{Wire, directions};
use flowmesh_protocols::{
    Chunk, Conversation, ConversationConfig, Direction, L7Record, ResponseStatus,
};
use proptest::prelude::*;

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// Checks what must hold for any row, whatever the input.
fn assert_sane(record: &L7Record) {
    assert!(
        METHODS.contains(&record.request_type.as_str()),
        "{record:?}"
    );
    assert!(!record.request_resource.is_empty());
    assert!(record.version == "1.0" || record.version == "1.1");
    assert!(record.request_end_ns >= record.request_start_ns);
    match record.response_code {
        Some(code) => {
            assert!((100..=999).contains(&code), "{record:?}");
            assert_eq!(record.response_status, ResponseStatus::from_http_code(code));
            let start = record.response_start_ns.expect("start with a code");
            let end = record.response_end_ns.expect("end with a code");
            assert!(end >= start);
            assert!(record.response_tid.is_some());
            if record.response_exception.is_empty() {
                assert!(!(400..=599).contains(&code) || record.response_exception.is_empty());
            } else {
                assert!((400..=599).contains(&code));
            }
        }
        None => {
            assert!(matches!(
                record.response_status,
                ResponseStatus::Timeout | ResponseStatus::Unknown
            ));
            assert_eq!(record.response_length, None);
            assert_eq!(record.response_start_ns, None);
            assert_eq!(record.response_end_ns, None);
            assert_eq!(record.resp_tcp_seq, None);
            assert_eq!(record.response_exception, "");
            assert_eq!(record.duration_us(), None);
        }
    }
    if let Some(trace_id) = &record.trace_id {
        assert_eq!(trace_id.len(), 32);
        assert_eq!(record.span_id.as_ref().map(String::len), Some(16));
    }
}

/// Pieces that make random streams look like HTTP often enough to reach deep states.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    let snippets: Vec<&'static [u8]> = vec![
        b"GET / HTTP/1.1\r\n",
        b"POST /x?y=1 HTTP/1.0\r\n",
        b"HEAD /h HTTP/1.1\r\n",
        b"CONNECT a:1 HTTP/1.1\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 101 Switching\r\n",
        b"HTTP/1.1 100 Continue\r\n",
        b"HTTP/1.0 404 Not Found\r\n",
        b"HTTP/1.1 204 No Content\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 18446744073709551615\r\n",
        b"Content-Length: 99999999999999999999999\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Host: h\xff\xfe\r\n",
        b"X-Request-ID: \xc3\x28\r\n",
        b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n",
        b"\r\n",
        b"5\r\nhello\r\n",
        b"ffffffffffffffff\r\n",
        b"0\r\n\r\n",
        b"0\r\nX-Trailer: 1\r\n\r\n",
    ];
    prop_oneof![
        3 => proptest::sample::select(snippets).prop_map(<[u8]>::to_vec),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

#[derive(Debug, Clone)]
struct RawChunk {
    egress: bool,
    bytes: Vec<u8>,
    cap: usize,
    /// Extra bytes to claim beyond `bytes` (uncaptured tail).
    extra: u32,
    /// Sequence jump before this chunk.
    seq_jump: u32,
}

fn raw_chunk() -> impl Strategy<Value = RawChunk> {
    (
        any::<bool>(),
        proptest::collection::vec(fragment(), 0..6),
        0usize..400,
        prop_oneof![4 => Just(0u32), 1 => 0u32..100_000, 1 => Just(u32::MAX / 2)],
        prop_oneof![6 => Just(0u32), 1 => 0u32..5_000, 1 => any::<u32>()],
    )
        .prop_map(|(egress, pieces, cap, extra, seq_jump)| RawChunk {
            egress,
            bytes: pieces.concat(),
            cap,
            extra,
            seq_jump,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes split at arbitrary points in both directions: no panic, bounded
    /// output, every row sane.
    #[test]
    fn arbitrary_chunks_never_break_a_conversation(
        chunks in proptest::collection::vec(raw_chunk(), 0..40),
        max_head_bytes in prop_oneof![Just(16usize), Just(256), Just(16 * 1024)],
        max_pending in 0usize..4,
        expire_every in 1usize..10,
    ) {
        let config = ConversationConfig {
            max_pending_requests: max_pending,
            max_head_bytes,
            request_timeout_ns: 5_000,
            inference_attempts: 8,
        };
        let mut conversation = Conversation::new(config);
        let mut out = Vec::new();
        let mut seq = [7u32, 9u32];
        let mut clock = 1_000u64;
        for (i, raw) in chunks.iter().enumerate() {
            let direction = if raw.egress { Direction::Egress } else { Direction::Ingress };
            let d = usize::from(raw.egress);
            seq[d] = seq[d].wrapping_add(raw.seq_jump);
            let byte_count = (raw.bytes.len() as u32).saturating_add(raw.extra);
            let cap = raw.cap.min(raw.bytes.len());
            conversation.feed(
                &Chunk {
                    direction,
                    enter_ns: clock,
                    exit_ns: clock + 10,
                    tcp_seq: if raw.seq_jump == 1 { None } else { Some(seq[d]) },
                    byte_count,
                    payload: &raw.bytes[..cap],
                    tid: i as u32,
                    syscall_trace_id: i as u64,
                },
                &mut out,
            );
            seq[d] = seq[d].wrapping_add(byte_count);
            clock += 1_000;
            if i % expire_every == 0 {
                conversation.expire(clock, &mut out);
            }
        }
        conversation.close(clock, &mut out);
        prop_assert_eq!(out.len() as u64, conversation.stats().records);
        for record in &out {
            assert_sane(record);
        }
        // Every row comes from a request head, and a chunk holds a bounded number of them.
        let request_heads_possible: usize = chunks.iter().map(|c| c.bytes.len() / 16 + 1).sum();
        prop_assert!(out.len() <= request_heads_possible);
    }

    /// Also feed the same bytes to a payload that claims fewer bytes than it carries.
    #[test]
    fn payload_longer_than_byte_count_is_truncated(bytes in proptest::collection::vec(fragment(), 0..8)) {
        let bytes = bytes.concat();
        let mut conversation = Conversation::new(ConversationConfig::default());
        let mut out = Vec::new();
        for (i, direction) in [Direction::Ingress, Direction::Egress, Direction::Ingress].into_iter().enumerate() {
            conversation.feed(
                &Chunk {
                    direction,
                    enter_ns: i as u64,
                    exit_ns: i as u64,
                    tcp_seq: Some(0),
                    byte_count: (bytes.len() / 2) as u32,
                    payload: &bytes,
                    tid: 0,
                    syscall_trace_id: 0,
                },
                &mut out,
            );
        }
        conversation.close(10, &mut out);
        for record in &out {
            assert_sane(record);
        }
    }
}

/// One byte of a message on the wire and whether framing depends on it (heads, chunk-size
/// lines, chunk terminators, trailers) or it is body data that may be lost to a capture cap.
type WireBytes = Vec<(u8, bool)>;

fn push(bytes: &mut WireBytes, data: &[u8], framing: bool) {
    bytes.extend(data.iter().map(|&b| (b, framing)));
}

#[derive(Debug, Clone)]
enum BodySpec {
    None,
    Length(usize),
    /// Chunk sizes; a final zero chunk is added.
    Chunked(Vec<usize>, bool),
}

#[derive(Debug, Clone)]
struct Exchange {
    method: &'static str,
    path: String,
    request_body: BodySpec,
    x_request_id: bool,
    code: u16,
    response_body: BodySpec,
    interim: bool,
}

fn body_spec(max: usize) -> impl Strategy<Value = BodySpec> {
    prop_oneof![
        1 => Just(BodySpec::None),
        2 => (0..max).prop_map(BodySpec::Length),
        2 => (proptest::collection::vec(1..max.max(2), 0..5), any::<bool>())
            .prop_map(|(sizes, trailers)| BodySpec::Chunked(sizes, trailers)),
    ]
}

fn exchange() -> impl Strategy<Value = Exchange> {
    let methods = vec![
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE",
    ];
    let codes = vec![
        200u16, 201, 204, 206, 301, 302, 304, 400, 401, 404, 418, 500, 502, 503,
    ];
    (
        proptest::sample::select(methods),
        "/[a-z0-9/._-]{0,20}(\\?[a-z]{1,5}=[a-z0-9%]{0,8}){0,1}",
        body_spec(3000),
        any::<bool>(),
        proptest::sample::select(codes),
        body_spec(5000),
        proptest::bool::weighted(0.1),
    )
        .prop_map(
            |(method, path, request_body, x_request_id, code, response_body, interim)| Exchange {
                method,
                path,
                request_body,
                x_request_id,
                code,
                response_body,
                interim,
            },
        )
}

fn write_body(bytes: &mut WireBytes, body: &BodySpec) {
    match body {
        BodySpec::None => {}
        BodySpec::Length(n) => push(bytes, &vec![b'b'; *n], false),
        BodySpec::Chunked(sizes, trailers) => {
            for (i, size) in sizes.iter().enumerate() {
                let line = if i % 2 == 0 {
                    format!("{size:x}\r\n")
                } else {
                    format!("{size:X};name=value\r\n")
                };
                push(bytes, line.as_bytes(), true);
                push(bytes, &vec![b'c'; *size], false);
                push(bytes, b"\r\n", true);
            }
            push(bytes, b"0\r\n", true);
            if *trailers {
                push(bytes, b"X-Checksum: abc\r\n", true);
            }
            push(bytes, b"\r\n", true);
        }
    }
}

fn framing_headers(body: &BodySpec) -> String {
    match body {
        BodySpec::None => String::new(),
        BodySpec::Length(n) => format!("Content-Length: {n}\r\n"),
        BodySpec::Chunked(..) => "Transfer-Encoding: chunked\r\n".to_owned(),
    }
}

fn request_bytes(exchange: &Exchange) -> WireBytes {
    let mut bytes = Vec::new();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: example.test\r\n",
        exchange.method, exchange.path
    );
    if exchange.x_request_id {
        head.push_str("X-Request-ID: 0123-abcd\r\n");
    }
    head.push_str(&framing_headers(&exchange.request_body));
    head.push_str("\r\n");
    push(&mut bytes, head.as_bytes(), true);
    write_body(&mut bytes, &exchange.request_body);
    bytes
}

/// The final response's bytes (after any interim response) and whether it is delimited by
/// close.
fn response_bytes(exchange: &Exchange, last: bool) -> (WireBytes, WireBytes) {
    let mut interim = Vec::new();
    if exchange.interim {
        push(&mut interim, b"HTTP/1.1 100 Continue\r\n\r\n", true);
    }
    let no_body = exchange.method == "HEAD" || exchange.code == 204 || exchange.code == 304;
    let mut body = exchange.response_body.clone();
    // Only the last response may be delimited by close.
    if matches!(body, BodySpec::None) && !last && !no_body {
        body = BodySpec::Length(0);
    }
    let mut head = format!(
        "HTTP/1.1 {} Reason Phrase\r\nServer: test\r\n",
        exchange.code
    );
    head.push_str(&framing_headers(&body));
    if no_body && matches!(body, BodySpec::None) {
        head.push_str("Content-Length: 1234\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = Vec::new();
    push(&mut bytes, head.as_bytes(), true);
    if !no_body {
        match &body {
            BodySpec::None => push(&mut bytes, &vec![b'e'; 777], false),
            other => write_body(&mut bytes, other),
        }
    }
    (interim, bytes)
}

/// How one direction's stream is cut into syscalls and what the capture keeps.
#[derive(Debug, Clone)]
struct Cutting {
    sizes: Vec<usize>,
    caps: Vec<usize>,
    lose: Vec<bool>,
}

fn cutting() -> impl Strategy<Value = Cutting> {
    (
        proptest::collection::vec(prop_oneof![1..8usize, 1..300usize, 1..5000usize], 1..64),
        proptest::collection::vec(0usize..2000, 64),
        proptest::collection::vec(proptest::bool::weighted(0.2), 64),
    )
        .prop_map(|(sizes, caps, lose)| Cutting { sizes, caps, lose })
}

/// Sends `bytes` as syscalls cut by `cutting`; the capture keeps a random prefix of each, but
/// never less than its framing bytes, and chunks with no framing byte may be lost entirely.
fn send_stream(wire: &mut Wire, direction: Direction, bytes: &WireBytes, cutting: &Cutting) {
    let mut pos = 0;
    let mut i = 0;
    while pos < bytes.len() {
        let size = cutting.sizes[i % cutting.sizes.len()].min(bytes.len() - pos);
        let piece = &bytes[pos..pos + size];
        let data: Vec<u8> = piece.iter().map(|&(b, _)| b).collect();
        let must_keep = piece
            .iter()
            .rposition(|&(_, framing)| framing)
            .map_or(0, |p| p + 1);
        // A lost chunk shows only as a sequence jump on the next one, so the last is kept.
        let last = pos + size == bytes.len();
        if must_keep == 0 && !last && cutting.lose[i % cutting.lose.len()] {
            wire.lose(direction, size as u32);
        } else {
            let cap = cutting.caps[i % cutting.caps.len()].max(must_keep);
            wire.send_capped(direction, &data, cap);
        }
        pos += size;
        i += 1;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// N valid exchanges give exactly N rows, in order, with the right fields — whatever the
    /// syscall boundaries, pipelining, and how much of each body the capture kept.
    #[test]
    fn valid_exchanges_are_counted_exactly(
        exchanges in proptest::collection::vec(exchange(), 1..12),
        server in any::<bool>(),
        pipelined in any::<bool>(),
        request_cutting in cutting(),
        response_cutting in cutting(),
        initial_seq in any::<u32>(),
    ) {
        let (req_dir, resp_dir) = directions(server);
        let mut wire = Wire::new();
        wire.set_seq(req_dir, initial_seq);
        wire.set_seq(resp_dir, initial_seq.wrapping_mul(7));
        let n = exchanges.len();
        let requests: Vec<WireBytes> = exchanges.iter().map(request_bytes).collect();
        let responses: Vec<(WireBytes, WireBytes)> = exchanges
            .iter()
            .enumerate()
            .map(|(i, e)| response_bytes(e, i + 1 == n))
            .collect();
        let full = |(interim, fin): &(WireBytes, WireBytes)| [interim.clone(), fin.clone()].concat();
        if pipelined {
            send_stream(&mut wire, req_dir, &requests.concat(), &request_cutting);
            let all: Vec<WireBytes> = responses.iter().map(full).collect();
            send_stream(&mut wire, resp_dir, &all.concat(), &response_cutting);
        } else {
            for (request, response) in requests.iter().zip(&responses) {
                send_stream(&mut wire, req_dir, request, &request_cutting);
                send_stream(&mut wire, resp_dir, &full(response), &response_cutting);
            }
        }
        wire.close();
        let stats = wire.stats();
        prop_assert_eq!(stats.parse_errors, 0);
        prop_assert_eq!(stats.resyncs, 0);
        prop_assert_eq!(stats.unmatched_responses, 0);
        prop_assert_eq!(wire.records.len(), n);
        let mut req_seq = initial_seq;
        for (i, record) in wire.records.iter().enumerate() {
            assert_sane(record);
            let exchange = &exchanges[i];
            prop_assert_eq!(&record.request_type, exchange.method);
            prop_assert_eq!(&record.request_resource, &exchange.path);
            prop_assert_eq!(&record.endpoint, exchange.path.split('?').next().unwrap_or(""));
            prop_assert_eq!(record.response_code, Some(exchange.code));
            prop_assert_eq!(record.request_domain.as_str(), "example.test");
            prop_assert_eq!(record.request_length, requests[i].len() as u64);
            prop_assert_eq!(record.response_length, Some(responses[i].1.len() as u64));
            prop_assert_eq!(record.req_tcp_seq, Some(req_seq));
            prop_assert_eq!(
                record.x_request_id.as_deref(),
                exchange.x_request_id.then_some("0123-abcd")
            );
            req_seq = req_seq.wrapping_add(requests[i].len() as u32);
        }
    }
}
