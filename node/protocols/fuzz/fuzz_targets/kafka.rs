//! Feeds a `Conversation` with a valid Kafka opening chunk (so that inference picks
//! Kafka) followed by chunks whose directions, boundaries, capture caps, sequence jumps
//! and uncaptured tails all come from the fuzzer's input (see `flowmesh_protocols_fuzz`;
//! `ctl` bit 7 prepends the opening chunk to the payload), then checks every row.

#![no_main]

use flowmesh_protocols::L7Protocol;
use flowmesh_protocols_fuzz::{Setup, check_row, run};
use libfuzzer_sys::fuzz_target;

/// The first chunk, sent by the client (egress).
const OPENING: &[u8] = // kafka-python's ApiVersions v3 request (tests/fixtures/kafka)
    b"\x00\x00\x000\x00\x12\x00\x03\x00\x00\x00\x01\x00\x10flowmesh-fixture\x00\x0dkafka-python\x073.0.12\x00";

fuzz_target!(|data: &[u8]| {
    run(data, 2, &Setup::opening(OPENING), |record| {
        check_row(record, L7Protocol::Kafka)
    });
});
