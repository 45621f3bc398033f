//! Replays request/response bytes recorded from a real nginx (see tests/fixtures/README.md).

mod common;

use common::nginx::load;
use common::{Wire, directions};
use flowmesh_protocols::{L7Record, ResponseStatus};

struct Expected {
    method: &'static str,
    path: &'static str,
    code: u16,
    exception: &'static str,
}

const fn ex(
    method: &'static str,
    path: &'static str,
    code: u16,
    exception: &'static str,
) -> Expected {
    Expected {
        method,
        path,
        code,
        exception,
    }
}

const FIXTURES: [(&str, &[Expected]); 7] = [
    ("get_200", &[ex("GET", "/hello", 200, "")]),
    (
        "not_found_404",
        &[ex("GET", "/static/missing.html", 404, "Not Found")],
    ),
    (
        "error_500",
        &[ex("GET", "/error", 500, "Internal Server Error")],
    ),
    ("static_file", &[ex("GET", "/static/page.html", 200, "")]),
    ("chunked_gzip", &[ex("GET", "/static/big.txt", 200, "")]),
    ("post_201", &[ex("POST", "/created", 201, "")]),
    (
        "keepalive_pipelined",
        &[
            ex("GET", "/hello", 200, ""),
            ex("HEAD", "/static/page.html", 200, ""),
            ex("GET", "/static/missing.html", 404, "Not Found"),
            ex("GET", "/error", 500, "Internal Server Error"),
        ],
    ),
];

fn check(
    name: &str,
    records: &[L7Record],
    expected: &[Expected],
    exact_lengths: Option<(u64, u64)>,
) {
    assert_eq!(records.len(), expected.len(), "{name}: {records:#?}");
    for (record, expected) in records.iter().zip(expected) {
        assert_eq!(record.request_type, expected.method, "{name}");
        assert_eq!(record.request_resource, expected.path, "{name}");
        assert_eq!(record.response_code, Some(expected.code), "{name}");
        assert_eq!(
            record.response_status,
            ResponseStatus::from_http_code(expected.code),
            "{name}"
        );
        assert_eq!(record.response_exception, expected.exception, "{name}");
        assert!(
            record.request_domain.starts_with("fixture.local:"),
            "{name}"
        );
    }
    if let Some((request_bytes, response_bytes)) = exact_lengths {
        let requests: u64 = records.iter().map(|r| r.request_length).sum();
        let responses: u64 = records.iter().filter_map(|r| r.response_length).sum();
        assert_eq!(requests, request_bytes, "{name}");
        assert_eq!(responses, response_bytes, "{name}");
    }
}

fn lengths(request: &[u8], response: &[u8]) -> Option<(u64, u64)> {
    Some((request.len() as u64, response.len() as u64))
}

#[test]
fn whole_messages_in_both_roles() {
    for (name, expected) in FIXTURES {
        let (request, response) = load(name);
        for server in [true, false] {
            let (req_dir, resp_dir) = directions(server);
            let mut wire = Wire::new();
            wire.send(req_dir, &request);
            wire.send(resp_dir, &response);
            wire.close();
            check(name, &wire.records, expected, lengths(&request, &response));
            assert_eq!(wire.stats().parse_errors, 0, "{name}");
        }
    }
}

#[test]
fn split_at_every_position() {
    for (name, expected) in FIXTURES {
        let (request, response) = load(name);
        let (req_dir, resp_dir) = directions(true);
        for split in 1..response.len() {
            let mut wire = Wire::new();
            let req_split = split.min(request.len() - 1).max(1);
            wire.send(req_dir, &request[..req_split]);
            wire.send(req_dir, &request[req_split..]);
            wire.send(resp_dir, &response[..split]);
            wire.send(resp_dir, &response[split..]);
            wire.close();
            check(name, &wire.records, expected, lengths(&request, &response));
        }
    }
}

#[test]
fn one_byte_syscalls() {
    for (name, expected) in FIXTURES {
        let (request, response) = load(name);
        let (req_dir, resp_dir) = directions(false);
        let mut wire = Wire::new();
        for byte in &request {
            wire.send(req_dir, std::slice::from_ref(byte));
        }
        for byte in &response {
            wire.send(resp_dir, std::slice::from_ref(byte));
        }
        wire.close();
        check(name, &wire.records, expected, lengths(&request, &response));
    }
}

#[test]
fn default_capture_cap_of_one_kib() {
    // Real capture: the server writes each response in one syscall and only 1 KiB is kept.
    for (name, expected) in FIXTURES {
        let (request, response) = load(name);
        let (req_dir, resp_dir) = directions(true);
        let mut wire = Wire::new();
        wire.send_capped(req_dir, &request, 1024);
        wire.send_capped(resp_dir, &response, 1024);
        wire.close();
        if name == "chunked_gzip" {
            // The terminating zero chunk lies in the uncaptured tail: the row keeps the
            // status but the response's length is unknown.
            check(name, &wire.records, expected, None);
            assert_eq!(wire.records[0].response_length, None);
        } else {
            check(name, &wire.records, expected, lengths(&request, &response));
        }
    }
}

#[test]
fn static_file_body_sent_with_sendfile() {
    let (request, response) = load("static_file");
    let head_len = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head end")
        + 4;
    let (req_dir, resp_dir) = directions(true);
    let mut wire = Wire::new();
    wire.send(req_dir, &request);
    wire.send(resp_dir, &response[..head_len]);
    wire.sendfile(resp_dir, (response.len() - head_len) as u32);
    check(
        "static_file",
        &wire.records,
        FIXTURES[3].1,
        lengths(&request, &response),
    );
}
