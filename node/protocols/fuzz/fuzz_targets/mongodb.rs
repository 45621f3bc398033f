//! Feeds a `Conversation` with a valid MongoDB opening chunk (so that inference picks
//! MongoDB) followed by chunks whose directions, boundaries, capture caps, sequence jumps
//! and uncaptured tails all come from the fuzzer's input (see `flowmesh_protocols_fuzz`;
//! `ctl` bit 7 prepends the opening chunk to the payload), then checks every row.

#![no_main]

use flowmesh_protocols::L7Protocol;
use flowmesh_protocols_fuzz::{Setup, check_row, run};
use libfuzzer_sys::fuzz_target;

/// The first chunk, sent by the client (egress).
const OPENING: &[u8] = // an OP_QUERY isMaster (tests/fixtures/mongodb/spec_legacy_and_errors.bin)
    b"c\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xd4\x07\x00\x00\x00\x00\x00\x00admin.$cmd\x00\x00\x00\x00\x00\xff\xff\xff\xff<\x00\x00\x00\x10isMaster\x00\x01\x00\x00\x00\x03client\x00!\x00\x00\x00\x03driver\x00\x14\x00\x00\x00\x02name\x00\x05\x00\x00\x00spec\x00\x00\x00\x00";

fuzz_target!(|data: &[u8]| {
    run(data, 2, &Setup::opening(OPENING), |record| {
        check_row(record, L7Protocol::MongoDb)
    });
});
