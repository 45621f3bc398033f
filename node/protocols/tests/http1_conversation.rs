//! HTTP/1 conversations end to end: chunks in, rows out.

mod common;

use common::{START_NS, STEP_NS, Wire, directions, get, ok_with_body, status};
use flowmesh_protocols::{
    ConversationConfig, Direction, L7Protocol, L7Record, ResponseStatus, Role,
};

fn paths(records: &[L7Record]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r.request_resource.as_str())
        .collect()
}

fn codes(records: &[L7Record]) -> Vec<Option<u16>> {
    records.iter().map(|r| r.response_code).collect()
}

#[test]
fn simple_get_both_roles() {
    for server in [true, false] {
        let (req_dir, resp_dir) = directions(server);
        let mut wire = Wire::new();
        let request = b"GET /api/items?page=2 HTTP/1.1\r\nHost: shop.local\r\nAccept: */*\r\n\r\n";
        let response = ok_with_body(b"[1,2,3]");
        wire.tid = 7;
        wire.syscall_trace_id = 70;
        let req = wire.send(req_dir, request);
        assert_eq!(wire.conversation.protocol(), Some(L7Protocol::Http1));
        let expected_role = if server { Role::Server } else { Role::Client };
        assert_eq!(wire.conversation.role(), Some(expected_role));
        assert!(wire.records.is_empty(), "no row before the response");
        wire.tid = 8;
        wire.syscall_trace_id = 80;
        let resp = wire.send(resp_dir, &response);

        assert_eq!(wire.records.len(), 1);
        let r = &wire.records[0];
        assert_eq!(r.protocol, L7Protocol::Http1);
        assert_eq!(r.role, expected_role);
        assert_eq!(r.version, "1.1");
        assert_eq!(r.request_type, "GET");
        assert_eq!(r.request_domain, "shop.local");
        assert_eq!(r.request_resource, "/api/items?page=2");
        assert_eq!(r.endpoint, "/api/items");
        assert_eq!(r.response_code, Some(200));
        assert_eq!(r.response_status, ResponseStatus::Ok);
        assert_eq!(r.response_exception, "");
        assert_eq!(r.request_length, request.len() as u64);
        assert_eq!(r.response_length, Some(response.len() as u64));
        assert_eq!(r.request_start_ns, req.enter_ns);
        assert_eq!(r.request_end_ns, req.exit_ns);
        assert_eq!(r.response_start_ns, Some(resp.enter_ns));
        assert_eq!(r.response_end_ns, Some(resp.exit_ns));
        assert_eq!(r.req_tcp_seq, Some(req.seq));
        assert_eq!(r.resp_tcp_seq, Some(resp.seq));
        assert_eq!(r.request_tid, 7);
        assert_eq!(r.response_tid, Some(8));
        assert_eq!(r.request_syscall_trace_id, 70);
        assert_eq!(r.response_syscall_trace_id, 80);
        assert_eq!(r.x_request_id, None);
        assert_eq!(r.trace_id, None);
        assert_eq!(r.duration_us(), Some((resp.exit_ns - req.enter_ns) / 1000));
        assert_eq!(r.duration_us(), Some(1500));
        let stats = wire.stats();
        assert_eq!(stats.records, 1);
        assert_eq!(
            stats.parse_errors + stats.resyncs + stats.unmatched_responses,
            0
        );
    }
}

#[test]
fn keep_alive_with_100_requests() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    for i in 0..100 {
        wire.send(req_dir, &get(&format!("/item/{i}")));
        let body = vec![b'x'; i * 7];
        wire.send(resp_dir, &ok_with_body(&body));
        assert_eq!(wire.records.len(), i + 1);
    }
    for (i, record) in wire.records.iter().enumerate() {
        assert_eq!(record.request_resource, format!("/item/{i}"));
        assert_eq!(record.response_code, Some(200));
        let head_len = ok_with_body(b"").len() - 1 + (i * 7).to_string().len();
        assert_eq!(record.response_length, Some((head_len + i * 7) as u64));
    }
    wire.close();
    assert_eq!(wire.records.len(), 100, "close adds nothing");
    assert_eq!(wire.stats().records, 100);
}

#[test]
fn pipelining_three_requests_then_three_responses() {
    let (req_dir, resp_dir) = directions(false);
    let mut wire = Wire::new();
    let requests = [get("/a"), get("/b"), get("/c")];
    let responses = [
        ok_with_body(b"A"),
        status(404, "Not Found"),
        ok_with_body(b"CCC"),
    ];
    let req = wire.send(req_dir, &requests.concat());
    assert!(wire.records.is_empty());
    let resp = wire.send(resp_dir, &responses.concat());
    assert_eq!(paths(&wire.records), ["/a", "/b", "/c"]);
    assert_eq!(codes(&wire.records), [Some(200), Some(404), Some(200)]);
    assert_eq!(wire.records[1].response_status, ResponseStatus::ClientError);
    assert_eq!(wire.records[1].response_exception, "Not Found");
    // Each message's sequence number is its chunk's plus the offset of its first byte.
    let mut req_offset = 0u32;
    let mut resp_offset = 0u32;
    for (i, record) in wire.records.iter().enumerate() {
        assert_eq!(record.req_tcp_seq, Some(req.seq + req_offset));
        assert_eq!(record.resp_tcp_seq, Some(resp.seq + resp_offset));
        assert_eq!(record.request_start_ns, req.enter_ns);
        assert_eq!(record.response_start_ns, Some(resp.enter_ns));
        assert_eq!(record.request_length, requests[i].len() as u64);
        assert_eq!(record.response_length, Some(responses[i].len() as u64));
        req_offset += requests[i].len() as u32;
        resp_offset += responses[i].len() as u32;
    }
}

#[test]
fn messages_split_byte_by_byte() {
    for server in [true, false] {
        let (req_dir, resp_dir) = directions(server);
        let mut wire = Wire::new();
        let request = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
        let response =
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let mut first_req = None;
        let mut last_req = None;
        for byte in request {
            let sent = wire.send(req_dir, std::slice::from_ref(byte));
            first_req.get_or_insert(sent);
            last_req = Some(sent);
        }
        let mut first_resp = None;
        let mut last_resp = None;
        for byte in response {
            let sent = wire.send(resp_dir, std::slice::from_ref(byte));
            first_resp.get_or_insert(sent);
            last_resp = Some(sent);
        }
        let (first_req, last_req) = (first_req.expect("sent"), last_req.expect("sent"));
        let (first_resp, last_resp) = (first_resp.expect("sent"), last_resp.expect("sent"));
        assert_eq!(wire.records.len(), 1, "server={server}");
        let r = &wire.records[0];
        assert_eq!(r.request_type, "POST");
        assert_eq!(r.request_resource, "/upload");
        assert_eq!(r.response_code, Some(201));
        assert_eq!(r.request_length, request.len() as u64);
        assert_eq!(r.response_length, Some(response.len() as u64));
        assert_eq!(r.request_start_ns, first_req.enter_ns);
        assert_eq!(r.request_end_ns, last_req.exit_ns);
        assert_eq!(r.response_start_ns, Some(first_resp.enter_ns));
        assert_eq!(r.response_end_ns, Some(last_resp.exit_ns));
        assert_eq!(r.req_tcp_seq, Some(first_req.seq));
        assert_eq!(r.resp_tcp_seq, Some(first_resp.seq));
        assert_eq!(wire.stats().parse_errors, 0);
    }
}

#[test]
fn chunked_response_split_everywhere_with_extensions_and_trailers() {
    let response: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Expires\r\n\r\n\
        7;ext=1\r\nMozilla\r\n11\r\nDeveloper Network\r\n0\r\nExpires: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n";
    let (req_dir, resp_dir) = directions(true);
    for split in 1..response.len() {
        let mut wire = Wire::new();
        wire.send(req_dir, &get("/chunked"));
        wire.send(resp_dir, &response[..split]);
        assert!(wire.records.is_empty(), "split {split}");
        wire.send(resp_dir, &response[split..]);
        // A following exchange is found, so the chunked body ended exactly.
        wire.send(req_dir, &get("/next"));
        wire.send(resp_dir, &status(500, "Internal Server Error"));
        assert_eq!(paths(&wire.records), ["/chunked", "/next"], "split {split}");
        assert_eq!(wire.records[0].response_length, Some(response.len() as u64));
        assert_eq!(wire.records[1].response_status, ResponseStatus::ServerError);
        assert_eq!(wire.records[1].response_exception, "Internal Server Error");
        assert_eq!(wire.stats().parse_errors, 0, "split {split}");
    }
}

#[test]
fn chunked_framing_in_gap_resyncs() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    wire.send(req_dir, &get("/stream"));
    // 2 KiB chunks; the capture keeps 64 bytes of each write, so the second chunk-size line
    // (inside the first write's tail) falls into a gap.
    let data = vec![b'z'; 2048];
    let mut first = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n".to_vec();
    first.extend_from_slice(&data);
    first.extend_from_slice(b"\r\n800\r\n");
    first.extend_from_slice(&data);
    wire.send_capped(resp_dir, &first, 64);
    assert_eq!(wire.stats().resyncs, 1);
    // The row keeps the head's status; the response's end is unknown.
    assert_eq!(wire.records.len(), 1);
    let r = &wire.records[0];
    assert_eq!(
        (r.request_resource.as_str(), r.response_code),
        ("/stream", Some(200))
    );
    assert_eq!(r.response_length, None);
    // The rest of the body carries no message start: skipped.
    wire.send(resp_dir, b"\r\n0\r\n\r\n");
    assert_eq!(wire.records.len(), 1);
    // The next exchange is counted again.
    wire.send(req_dir, &get("/after"));
    wire.send(resp_dir, &ok_with_body(b"ok"));
    assert_eq!(paths(&wire.records), ["/stream", "/after"]);
    assert_eq!(
        wire.records[1].response_length,
        Some(ok_with_body(b"ok").len() as u64)
    );
    assert_eq!(wire.stats().unmatched_responses, 0);
}

#[test]
fn content_length_body_entirely_in_gap_like_sendfile() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    wire.send(req_dir, &get("/file.bin"));
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
    wire.send(resp_dir, head);
    let body = wire.sendfile(resp_dir, 1_048_576);
    assert_eq!(wire.records.len(), 1);
    assert_eq!(
        wire.records[0].response_length,
        Some(head.len() as u64 + 1_048_576)
    );
    assert_eq!(wire.records[0].response_end_ns, Some(body.exit_ns));
    wire.send(req_dir, &get("/next"));
    wire.send(resp_dir, &status(304, "Not Modified"));
    assert_eq!(paths(&wire.records), ["/file.bin", "/next"]);
    assert_eq!(wire.stats().gap_bytes, 1_048_576);
    assert_eq!(wire.stats().resyncs, 0);
}

#[test]
fn tcp_seq_jump_fills_a_gap() {
    let (req_dir, resp_dir) = directions(false);
    let mut wire = Wire::new();
    // A request body partly lost, then its response body partly lost.
    let mut upload = b"PUT /blob HTTP/1.1\r\nContent-Length: 30000\r\n\r\n".to_vec();
    let head_len = upload.len() as u64;
    upload.extend(std::iter::repeat_n(b'u', 10_000));
    wire.send(req_dir, &upload);
    wire.lose(req_dir, 15_000);
    let last = wire.send(req_dir, &[b'u'; 5_000]);
    let response = ok_with_body(&[b'd'; 3000]);
    wire.send(resp_dir, &response[..1000]);
    wire.lose(resp_dir, 1500);
    wire.send(resp_dir, &response[2500..]);
    assert_eq!(wire.records.len(), 1);
    let r = &wire.records[0];
    assert_eq!(r.request_length, head_len + 30_000);
    assert_eq!(r.request_end_ns, last.exit_ns);
    assert_eq!(r.response_length, Some(response.len() as u64));
    assert_eq!(wire.stats().gap_bytes, 16_500);
    // Still in sync.
    wire.send(req_dir, &get("/next"));
    wire.send(resp_dir, &ok_with_body(b""));
    assert_eq!(paths(&wire.records), ["/blob", "/next"]);
    assert_eq!(wire.stats().resyncs, 0);
}

#[test]
fn head_response_has_no_body() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    wire.send(req_dir, b"HEAD /big HTTP/1.1\r\nHost: h\r\n\r\n");
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n";
    wire.send(resp_dir, head);
    assert_eq!(wire.records.len(), 1);
    assert_eq!(wire.records[0].response_length, Some(head.len() as u64));
    wire.send(req_dir, &get("/after-head"));
    wire.send(resp_dir, &status(404, "Not Found"));
    assert_eq!(paths(&wire.records), ["/big", "/after-head"]);
    assert_eq!(codes(&wire.records), [Some(200), Some(404)]);
    assert_eq!(wire.stats().parse_errors, 0);
}

#[test]
fn expect_100_continue() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    let head =
        b"POST /form HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n";
    wire.send(req_dir, head);
    wire.send(resp_dir, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(wire.records.is_empty(), "interim responses are not paired");
    wire.send(req_dir, b"hello world");
    let fin = wire.send(
        resp_dir,
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    assert_eq!(wire.records.len(), 1);
    let r = &wire.records[0];
    assert_eq!(r.response_code, Some(200));
    assert_eq!(r.request_length, head.len() as u64 + 11);
    let early_hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n".len() as u32;
    assert_eq!(r.resp_tcp_seq, Some(fin.seq + early_hints));
    assert_eq!(wire.stats().unmatched_responses, 0);
}

#[test]
fn no_content_and_not_modified_have_no_body() {
    let (req_dir, resp_dir) = directions(false);
    let mut wire = Wire::new();
    wire.send(req_dir, &[get("/a"), get("/b"), get("/c")].concat());
    wire.send(
        resp_dir,
        b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n\
          HTTP/1.1 304 Not Modified\r\nContent-Length: 20\r\nETag: \"x\"\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!",
    );
    assert_eq!(codes(&wire.records), [Some(204), Some(304), Some(200)]);
    assert!(
        wire.records
            .iter()
            .all(|r| r.response_status == ResponseStatus::Ok)
    );
}

#[test]
fn close_delimited_response() {
    let (req_dir, resp_dir) = directions(false);
    let mut wire = Wire::new();
    wire.send(req_dir, b"GET /legacy HTTP/1.0\r\n\r\n");
    let head = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>";
    wire.send(resp_dir, head);
    wire.send_capped(resp_dir, &[b'x'; 4000], 100);
    let last = wire.send(resp_dir, b"</html>");
    assert!(wire.records.is_empty(), "the body ends only at close");
    wire.close();
    assert_eq!(wire.records.len(), 1);
    let r = &wire.records[0];
    assert_eq!(r.version, "1.0");
    assert_eq!(r.response_status, ResponseStatus::Ok);
    assert_eq!(r.response_length, Some(head.len() as u64 + 4000 + 7));
    assert_eq!(r.response_end_ns, Some(last.exit_ns));
}

#[test]
fn truncated_stream_closed_mid_response() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    wire.send(req_dir, &get("/slow"));
    wire.send(
        resp_dir,
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial",
    );
    wire.close();
    assert_eq!(wire.records.len(), 1);
    let r = &wire.records[0];
    assert_eq!(r.request_resource, "/slow");
    assert_eq!(r.response_status, ResponseStatus::Unknown);
    assert_eq!(r.response_code, None);
    assert_eq!(r.response_length, None);
    assert_eq!(r.response_start_ns, None);
    assert_eq!(r.duration_us(), None);
    // Nothing after close.
    wire.send(resp_dir, b"more bytes");
    wire.close();
    assert_eq!(wire.records.len(), 1);
}

#[test]
fn pending_requests_at_close_are_unknown() {
    let (req_dir, _) = directions(true);
    let mut wire = Wire::new();
    wire.send(req_dir, &[get("/1"), get("/2")].concat());
    wire.close();
    assert_eq!(paths(&wire.records), ["/1", "/2"]);
    assert!(
        wire.records
            .iter()
            .all(|r| r.response_status == ResponseStatus::Unknown && r.response_code.is_none())
    );
}

#[test]
fn non_http_streams_are_ignored() {
    // an SSH exchange: text, but no protocol this crate parses
    let ssh: [&[u8]; 2] = [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
    ];
    let tls_client_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0xf8, 0x01, 0x00, 0x00, 0xf4, 0x03, 0x03, 0x6b, 0x21, 0x9d,
    ];
    let mut random = Vec::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        random.push(x as u8);
    }
    let streams: [Vec<Vec<u8>>; 3] = [
        (0..8).map(|i| ssh[i % 2].to_vec()).collect(),
        std::iter::once(tls_client_hello.to_vec())
            .chain((0..7).map(|i| random[i * 100..i * 100 + 100].to_vec()))
            .collect(),
        random.chunks(500).map(<[u8]>::to_vec).collect(),
    ];
    for (which, chunks) in streams.into_iter().enumerate() {
        let mut wire = Wire::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let direction = if i % 2 == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            wire.send(direction, chunk);
        }
        assert!(
            wire.conversation.is_ignored(),
            "stream {which} not ignored: {:?}",
            wire.conversation.protocol()
        );
        assert_eq!(wire.conversation.protocol(), None);
        // Even HTTP after giving up is ignored.
        wire.send(Direction::Egress, &get("/late"));
        wire.send(Direction::Ingress, &ok_with_body(b""));
        wire.close();
        assert!(wire.records.is_empty());
    }
}

#[test]
fn inference_gives_up_after_configured_attempts() {
    let config = ConversationConfig {
        inference_attempts: 3,
        ..ConversationConfig::default()
    };
    let mut wire = Wire::with_config(config);
    wire.send(Direction::Egress, b"+PONG\r\n");
    wire.send(Direction::Egress, b"+PONG\r\n");
    assert!(!wire.conversation.is_ignored());
    wire.send(Direction::Egress, b"+PONG\r\n");
    assert!(wire.conversation.is_ignored());
}

#[test]
fn response_before_any_request_makes_no_row() {
    // Attached late: the first bytes seen are the end of a response body, then a response.
    let (req_dir, resp_dir) = directions(false);
    let mut wire = Wire::new();
    wire.send(resp_dir, b"tail of an earlier body");
    wire.send(resp_dir, &ok_with_body(b"orphan"));
    assert_eq!(wire.conversation.role(), Some(Role::Client));
    assert!(wire.records.is_empty());
    assert_eq!(wire.stats().unmatched_responses, 1);
    wire.send(req_dir, &get("/first-seen"));
    wire.send(resp_dir, &ok_with_body(b"x"));
    assert_eq!(paths(&wire.records), ["/first-seen"]);
}

#[test]
fn max_pending_requests_overflow_is_counted() {
    let config = ConversationConfig {
        max_pending_requests: 2,
        ..ConversationConfig::default()
    };
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::with_config(config);
    wire.send(
        req_dir,
        &[get("/1"), get("/2"), get("/3"), get("/4")].concat(),
    );
    assert_eq!(wire.stats().dropped_requests, 2);
    wire.send(
        resp_dir,
        &[
            status(201, "Created"),
            status(202, "Accepted"),
            status(404, "Not Found"),
            status(500, "Boom"),
        ]
        .concat(),
    );
    // The responses of dropped requests are not paired with later requests.
    wire.send(req_dir, &get("/5"));
    wire.send(resp_dir, &status(418, "I'm a teapot"));
    assert_eq!(paths(&wire.records), ["/1", "/2", "/5"]);
    assert_eq!(codes(&wire.records), [Some(201), Some(202), Some(418)]);
    assert_eq!(wire.stats().unmatched_responses, 2);
}

#[test]
fn expire_emits_timeouts_and_skips_late_responses() {
    let config = ConversationConfig {
        request_timeout_ns: 10 * STEP_NS,
        ..ConversationConfig::default()
    };
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::with_config(config);
    let sent = wire.send(req_dir, &get("/hang"));
    wire.expire(sent.enter_ns + 10 * STEP_NS - 1);
    assert!(wire.records.is_empty());
    wire.expire(sent.enter_ns + 10 * STEP_NS);
    assert_eq!(wire.records.len(), 1);
    let r = &wire.records[0];
    assert_eq!(r.response_status, ResponseStatus::Timeout);
    assert_eq!(r.response_code, None);
    assert_eq!(r.duration_us(), None);
    // Expiring again emits nothing new.
    wire.expire(sent.enter_ns + 100 * STEP_NS);
    assert_eq!(wire.records.len(), 1);
    // The late response belongs to the timed-out request.
    wire.advance_clock(20 * STEP_NS);
    wire.send(resp_dir, &status(504, "Gateway Timeout"));
    wire.send(req_dir, &get("/next"));
    wire.send(resp_dir, &ok_with_body(b"fine"));
    assert_eq!(paths(&wire.records), ["/hang", "/next"]);
    assert_eq!(codes(&wire.records), [None, Some(200)]);
    assert_eq!(wire.stats().records, 2);
}

#[test]
fn request_ids_and_trace_context() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    wire.send(
        req_dir,
        b"GET /traced HTTP/1.1\r\nHost: h\r\nX-Request-ID: req-1\r\n\
          traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
    );
    wire.send(
        resp_dir,
        b"HTTP/1.1 200 OK\r\nx-request-id: resp-1\r\nContent-Length: 0\r\n\r\n",
    );
    // No ids on the request: the response's are used.
    wire.send(req_dir, &get("/untraced"));
    wire.send(
        resp_dir,
        b"HTTP/1.1 200 OK\r\nX-Request-Id: resp-2\r\n\
          Traceparent: 00-11111111111111111111111111111111-2222222222222222-00\r\nContent-Length: 0\r\n\r\n",
    );
    wire.send(req_dir, &get("/none"));
    wire.send(resp_dir, &status(200, "OK"));
    let r = &wire.records;
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].x_request_id.as_deref(), Some("req-1"));
    assert_eq!(
        r[0].trace_id.as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    assert_eq!(r[0].span_id.as_deref(), Some("b7ad6b7169203331"));
    assert_eq!(r[1].x_request_id.as_deref(), Some("resp-2"));
    assert_eq!(
        r[1].trace_id.as_deref(),
        Some("11111111111111111111111111111111")
    );
    assert_eq!(r[1].span_id.as_deref(), Some("2222222222222222"));
    assert_eq!(
        (r[2].x_request_id.as_ref(), r[2].trace_id.as_ref()),
        (None, None)
    );
}

#[test]
fn duration_is_request_start_to_response_end() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    let req = wire.send(req_dir, &get("/timed"));
    wire.advance_clock(250 * STEP_NS);
    wire.send(resp_dir, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab");
    let end = wire.send(resp_dir, b"cd");
    let r = &wire.records[0];
    assert_eq!(r.request_start_ns, START_NS);
    assert_eq!(r.duration_us(), Some((end.exit_ns - req.enter_ns) / 1000));
    assert_eq!(r.duration_us(), Some(252_500));
}

#[test]
fn upgrade_to_websocket_stops_parsing() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    wire.send(
        req_dir,
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    wire.send(
        resp_dir,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi",
    );
    assert_eq!(codes(&wire.records), [Some(101)]);
    assert!(wire.conversation.is_ignored());
    wire.send(req_dir, b"\x81\x85\x00\x00\x00\x00hello");
    wire.send(resp_dir, b"HTTP/1.1 200 OK\r\n\r\n");
    wire.close();
    assert_eq!(wire.records.len(), 1);
    assert_eq!(wire.stats().parse_errors, 0);
}

#[test]
fn connect_tunnel_stops_parsing() {
    let (req_dir, resp_dir) = directions(false);
    let mut wire = Wire::new();
    wire.send(
        req_dir,
        b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n",
    );
    wire.send(resp_dir, b"HTTP/1.1 200 Connection Established\r\n\r\n");
    assert_eq!(wire.records.len(), 1);
    assert_eq!(wire.records[0].endpoint, "api.example.com:443");
    assert!(wire.conversation.is_ignored());
    wire.send(req_dir, b"\x16\x03\x01\x00\xf8\x01\x00\x00\xf4\x03\x03");
    wire.close();
    assert_eq!(wire.records.len(), 1);
}

#[test]
fn request_head_cut_by_capture_loses_only_that_exchange() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    wire.send(req_dir, &get("/ok-1"));
    wire.send(resp_dir, &ok_with_body(b"1"));
    // A request whose head is longer than the capture.
    let mut big = b"GET /cookie-monster HTTP/1.1\r\nCookie: ".to_vec();
    big.extend(std::iter::repeat_n(b'c', 3000));
    big.extend_from_slice(b"\r\n\r\n");
    wire.send_capped(req_dir, &big, 1024);
    wire.send(resp_dir, &ok_with_body(b"lost"));
    wire.send(req_dir, &get("/ok-2"));
    wire.send(resp_dir, &status(503, "Service Unavailable"));
    assert_eq!(paths(&wire.records), ["/ok-1", "/ok-2"]);
    assert_eq!(codes(&wire.records), [Some(200), Some(503)]);
    assert_eq!(wire.stats().unmatched_responses, 1);
    assert_eq!(wire.stats().resyncs, 1);
}

#[test]
fn response_head_cut_by_capture_keeps_later_pairs_right() {
    let (req_dir, resp_dir) = directions(false);
    let mut wire = Wire::new();
    wire.send(req_dir, &get("/big-headers"));
    let mut big = b"HTTP/1.1 200 OK\r\nSet-Cookie: ".to_vec();
    big.extend(std::iter::repeat_n(b'c', 3000));
    big.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    wire.send_capped(resp_dir, &big, 1024);
    wire.send(req_dir, &get("/next"));
    wire.send(resp_dir, &status(404, "Not Found"));
    // The first request lost its response; the second is paired with its own.
    assert_eq!(paths(&wire.records), ["/big-headers", "/next"]);
    assert_eq!(codes(&wire.records), [None, Some(404)]);
    assert_eq!(wire.records[0].response_status, ResponseStatus::Unknown);
}

#[test]
fn garbage_after_sync_resyncs_on_next_request() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    wire.send(req_dir, &get("/a"));
    wire.send(resp_dir, &ok_with_body(b"a"));
    wire.send(req_dir, b"GET /bad HTTP/1.1\r\nBad\x00Header: x\r\n\r\n");
    assert_eq!(wire.stats().parse_errors, 1);
    wire.send(req_dir, b"not a request at all");
    wire.send(req_dir, &get("/b"));
    wire.send(resp_dir, &ok_with_body(b"b"));
    assert_eq!(paths(&wire.records), ["/a", "/b"]);
}

#[test]
fn backwards_sequence_is_a_discontinuity() {
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    wire.send(req_dir, &get("/a"));
    wire.send(resp_dir, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    // The response stream jumps back: its body cannot be followed.
    wire.set_seq(resp_dir, 5);
    wire.send(resp_dir, &[b'x'; 100]);
    assert_eq!(wire.stats().resyncs, 1);
    assert_eq!(wire.records.len(), 1);
    assert_eq!(wire.records[0].response_length, None);
    wire.send(req_dir, &get("/b"));
    wire.send(resp_dir, &ok_with_body(b""));
    assert_eq!(paths(&wire.records), ["/a", "/b"]);
}

#[test]
fn udp_like_chunks_without_sequence_numbers() {
    use flowmesh_protocols::{Chunk, Conversation};
    let mut conversation = Conversation::new(ConversationConfig::default());
    let mut out = Vec::new();
    let request = get("/no-seq");
    let response = ok_with_body(b"body");
    for (direction, bytes) in [
        (Direction::Ingress, &request),
        (Direction::Egress, &response),
    ] {
        conversation.feed(
            &Chunk {
                direction,
                enter_ns: 1,
                exit_ns: 2,
                tcp_seq: None,
                byte_count: bytes.len() as u32,
                payload: bytes,
                tid: 1,
                syscall_trace_id: 0,
            },
            &mut out,
        );
    }
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].req_tcp_seq, out[0].resp_tcp_seq), (None, None));
}

#[test]
fn request_still_uploading_does_not_time_out() {
    let config = ConversationConfig {
        request_timeout_ns: 10 * STEP_NS,
        ..ConversationConfig::default()
    };
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::with_config(config);
    let sent = wire.send(
        req_dir,
        b"PUT /upload HTTP/1.1\r\nContent-Length: 1000\r\n\r\n0123456789",
    );
    wire.expire(sent.enter_ns + 100 * STEP_NS);
    assert!(wire.records.is_empty(), "the body is still arriving");
    wire.advance_clock(100 * STEP_NS);
    wire.send(req_dir, &[b'x'; 990]);
    wire.expire(wire.now() + 5 * STEP_NS);
    assert_eq!(wire.records.len(), 1);
    assert_eq!(wire.records[0].response_status, ResponseStatus::Timeout);
    // Its late response is not paired with anything else.
    wire.send(resp_dir, &status(201, "Created"));
    wire.close();
    assert_eq!(wire.records.len(), 1);
}

#[test]
fn partial_response_seen_before_the_first_request_is_not_paired_with_it() {
    // Attached late, client side: the start of a response split across reads arrives, then
    // a request: the response cannot answer it.
    let (req_dir, resp_dir) = directions(false);
    let mut wire = Wire::new();
    wire.send(resp_dir, b"HTTP/1.1 2");
    wire.send(req_dir, &get("/mine"));
    wire.send(resp_dir, b"00 OK\r\nContent-Length: 0\r\n\r\n");
    assert!(wire.records.is_empty());
    wire.send(resp_dir, &status(404, "Not Found"));
    assert_eq!(paths(&wire.records), ["/mine"]);
    assert_eq!(codes(&wire.records), [Some(404)]);
}
