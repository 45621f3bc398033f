//! Feeds a `Conversation` with a valid Redis opening chunk (so that inference picks Redis)
//! followed by chunks whose directions, boundaries, capture caps, sequence jumps and
//! uncaptured tails all come from the fuzzer's input (see `flowmesh_protocols_fuzz`; `ctl`
//! bit 7 prepends the opening chunk to the payload), then checks every row.

#![no_main]

use flowmesh_protocols::{L7Protocol, L7Record, ResponseStatus};
use flowmesh_protocols_fuzz::{Setup, check_row, run};
use libfuzzer_sys::fuzz_target;

/// The first chunk, sent by the client (egress): two pipelined commands.
const OPENING: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n";

fn check(record: &L7Record) {
    check_row(record, L7Protocol::Redis);
    assert!(!record.request_type.bytes().any(|b| b.is_ascii_lowercase()));
    assert!(record.request_resource.len() <= 256 + 3);
    assert!(record.response_exception.len() <= 256 + 3);
    assert!(record.endpoint.is_empty() && record.request_domain.is_empty());
    assert!(record.response_code.is_none());
    if record.response_start_ns.is_some() {
        assert!(matches!(
            record.response_status,
            ResponseStatus::Ok | ResponseStatus::ServerError
        ));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(outcome) = run(data, 2, &Setup::opening(OPENING), check) else {
        return;
    };
    // every row needs a command of at least 4 captured bytes (`GET\n`)
    assert!(outcome.rows <= outcome.captured_bytes / 4 + 1);
});
