//! Feeds a `Conversation` with a valid PostgreSQL opening chunk (so that inference picks
//! PostgreSQL) followed by chunks whose directions, boundaries, capture caps, sequence jumps
//! and uncaptured tails all come from the fuzzer's input, then checks every row.
//!
//! Input: as in `flowmesh_protocols_fuzz`; `ctl` bit 7 prepends the opening chunk to the
//! payload.

#![no_main]

use flowmesh_protocols::{Direction, L7Protocol, L7Record};
use flowmesh_protocols_fuzz::{Setup, check_session_row, run};
use libfuzzer_sys::fuzz_target;

/// The first chunk, psql's StartupMessage sent by the client (egress), as recorded in
/// tests/fixtures/postgres/psql_errors-1.bin.
const OPENING: &[u8] =
    b"\x00\x00\x00<\x00\x03\x00\x00user\x00postgres\x00database\x00bench\x00application_name\x00psql\x00\x00";
const OPENING_DIRECTION: Direction = Direction::Egress;
/// The kinds of exchange.
const TYPES: [&str; 12] = [
    "startup",
    "ssl request",
    "gssenc request",
    "cancel request",
    "simple query",
    "parse",
    "execute",
    "bind",
    "describe",
    "close",
    "sync",
    "fastpath function call",
];
/// Requests without response (rows at once, status ok).
const NO_RESPONSE: [&str; 1] = ["cancel request"];
/// Bytes of the smallest request (a Sync).
const MIN_REQUEST: usize = 5;

fn check(record: &L7Record) {
    assert_eq!(record.protocol, L7Protocol::PostgreSql);
    assert!(TYPES.contains(&record.request_type.as_str()), "{record:?}");
    // a SQLSTATE is no number
    assert!(record.response_code.is_none());
    check_session_row(record, &NO_RESPONSE);
}

fuzz_target!(|data: &[u8]| {
    let setup = Setup {
        opening: Some((OPENING_DIRECTION, OPENING)),
        prefix: Some(OPENING),
        detected_after_opening: Some(L7Protocol::PostgreSql),
        ..Setup::default()
    };
    let Some(outcome) = run(data, 2, &setup, check) else {
        return;
    };
    // every row needs a request of MIN_REQUEST captured bytes, but the opening's
    assert!(outcome.rows <= outcome.fed_bytes / MIN_REQUEST + 1);
});
