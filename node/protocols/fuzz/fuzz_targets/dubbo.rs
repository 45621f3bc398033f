//! Feeds a `Conversation` with a valid Dubbo opening chunk (so that inference picks
//! Dubbo) followed by chunks whose directions, boundaries, capture caps, sequence jumps
//! and uncaptured tails all come from the fuzzer's input (see `flowmesh_protocols_fuzz`;
//! `ctl` bit 7 prepends the opening chunk to the payload), then checks every row.

#![no_main]

use flowmesh_protocols::{L7Protocol, L7Record, ResponseStatus};
use flowmesh_protocols_fuzz::{Setup, check_exchange, run};
use libfuzzer_sys::fuzz_target;

/// The first chunk, sent by the client (egress).
const OPENING: &[u8] = // a Hessian 2 call of DemoService.sayHello (tests/fixtures/dubbo/spec_calls.bin)
    b"\xda\xbb\xc2\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\xb6\x052.0.20!org.apache.dubbo.demo.DemoService\x050.0.0\x08sayHello\x12Ljava/lang/String;\x05worldH\x04path0!org.apache.dubbo.demo.DemoService\x09interface0!org.apache.dubbo.demo.DemoService\x07version\x050.0.0Z";

fn check(record: &L7Record) {
    assert_eq!(record.protocol, L7Protocol::Dubbo);
    // bodies of other serializations leave the method empty
    assert!(record.request_type.is_empty() || record.endpoint.ends_with(&record.request_type));
    check_exchange(record);
    if record.response_status == ResponseStatus::Ok {
        assert!(record.response_code.is_some());
    }
}

fuzz_target!(|data: &[u8]| {
    run(data, 2, &Setup::opening(OPENING), check);
});
