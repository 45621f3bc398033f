//! Feeds a `Conversation` with a valid NATS opening chunk (so that inference picks
//! NATS) followed by chunks whose directions, boundaries, capture caps, sequence jumps
//! and uncaptured tails all come from the fuzzer's input (see `flowmesh_protocols_fuzz`;
//! `ctl` bit 7 prepends the opening chunk to the payload), then checks every row.

#![no_main]

use flowmesh_protocols::L7Protocol;
use flowmesh_protocols_fuzz::{Setup, check_row, run};
use libfuzzer_sys::fuzz_target;

/// The first chunk, sent by the client (egress).
const OPENING: &[u8] = // a client's CONNECT
    b"CONNECT {\"verbose\":false,\"lang\":\"go\",\"protocol\":1}\r\n";

fuzz_target!(|data: &[u8]| {
    run(data, 2, &Setup::opening(OPENING), |record| {
        check_row(record, L7Protocol::Nats)
    });
});
