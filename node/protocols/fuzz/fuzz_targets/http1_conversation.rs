//! Feeds a `Conversation` with chunks whose directions, boundaries, capture caps, sequence
//! jumps and uncaptured tails all come from the fuzzer's input (see `flowmesh_protocols_fuzz`;
//! `ctl` bit 7 is ignored), then checks every row.

#![no_main]

use flowmesh_protocols::{L7Record, ResponseStatus};
use flowmesh_protocols_fuzz::{Setup, run};
use libfuzzer_sys::fuzz_target;

fn check(record: &L7Record) {
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    assert!(METHODS.contains(&record.request_type.as_str()));
    assert!(!record.request_resource.is_empty());
    assert!(record.version == "1.0" || record.version == "1.1");
    assert!(record.request_end_ns >= record.request_start_ns);
    match record.response_code {
        Some(code) => {
            assert!((100..=999).contains(&code));
            assert_eq!(record.response_status, ResponseStatus::from_http_code(code));
            assert!(record.response_end_ns >= record.response_start_ns);
            assert!(record.response_start_ns.is_some() && record.response_tid.is_some());
            if !record.response_exception.is_empty() {
                assert!((400..=599).contains(&code));
            }
        }
        None => {
            assert!(matches!(
                record.response_status,
                ResponseStatus::Timeout | ResponseStatus::Unknown
            ));
            assert!(record.response_length.is_none() && record.response_start_ns.is_none());
            assert!(record.response_exception.is_empty());
        }
    }
    if let Some(trace_id) = &record.trace_id {
        assert_eq!(trace_id.len(), 32);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(outcome) = run(data, 2, &Setup::default(), check) else {
        return;
    };
    // Every row needs a request head of at least 16 bytes ("GET / HTTP/1.1\r\n\r\n" is 18).
    assert!(outcome.rows <= data.len() / 16 + 1);
});
