//! Feeds a `Conversation` with HTTP/2-shaped chunks whose directions, boundaries, capture
//! caps, sequence jumps and uncaptured tails all come from the fuzzer's input, then checks
//! every row.
//!
//! Input: as in `flowmesh_protocols_fuzz`, with three config bytes; `ctl` bit 7 prefixes the
//! payload with the client preface. The third config byte's low bit prefixes the very first
//! record with the preface, so that most inputs reach the session.

#![no_main]

use flowmesh_protocols::{L7Protocol, L7Record, ResponseStatus};
use flowmesh_protocols_fuzz::{Setup, run};
use libfuzzer_sys::fuzz_target;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn grpc_class(code: u16) -> ResponseStatus {
    match code {
        0 => ResponseStatus::Ok,
        1 | 3 | 5 | 6 | 7 | 9 | 11 | 16 => ResponseStatus::ClientError,
        _ => ResponseStatus::ServerError,
    }
}

fn check(record: &L7Record) {
    if !matches!(record.protocol, L7Protocol::Http2 | L7Protocol::Grpc) {
        // Another protocol's detector claimed the fuzzer's bytes: not this target's business.
        return;
    }
    assert_eq!(record.version, "2");
    assert!(record.request_end_ns >= record.request_start_ns);
    assert!(
        record.request_length >= 9,
        "a row has at least one HEADERS frame"
    );
    match record.response_code {
        Some(code) => {
            let http = ResponseStatus::from_http_code(code);
            match record.protocol {
                L7Protocol::Grpc => assert!(
                    record.response_status == grpc_class(code)
                        || record.response_status == http
                        || record.response_status == ResponseStatus::Unknown
                ),
                _ => assert_eq!(record.response_status, http),
            }
            assert!(record.response_start_ns.is_some() && record.response_tid.is_some());
            assert!(record.response_end_ns >= record.response_start_ns);
        }
        None => {
            assert!(matches!(
                record.response_status,
                ResponseStatus::Timeout | ResponseStatus::Unknown
            ));
            if record.response_start_ns.is_none() {
                assert!(record.response_length.is_none());
            }
        }
    }
    if record.protocol == L7Protocol::Http2 {
        assert!(
            record.response_exception.is_empty()
                || record.response_exception.starts_with("stream reset by ")
        );
    }
    if let Some(length) = record.response_length {
        assert!(length >= 9);
    }
    if let Some(trace_id) = &record.trace_id {
        assert_eq!(trace_id.len(), 32);
    }
}

fuzz_target!(|data: &[u8]| {
    let setup = Setup {
        prefix: Some(PREFACE),
        prefix_first: data.get(2).is_some_and(|flags| flags & 1 != 0),
        ..Setup::default()
    };
    let Some(outcome) = run(data, 3, &setup, check) else {
        return;
    };
    // Every HTTP/2 row needs a HEADERS frame of at least 10 bytes of its own.
    if matches!(outcome.protocol, Some(L7Protocol::Http2 | L7Protocol::Grpc)) {
        assert!(outcome.rows <= outcome.fed_bytes / 10 + 1);
    }
});
