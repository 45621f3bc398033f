//! Feeds a `Conversation` with a valid DNS query (bare for UDP, length-prefixed for TCP, so
//! that inference picks DNS) followed by chunks whose directions, boundaries, capture caps,
//! sequence jumps and uncaptured tails all come from the fuzzer's input, then checks every
//! row. Every chunk's payload is also given to `dns::parse` on its own.
//!
//! Input: as in `flowmesh_protocols_fuzz`; the first config byte's top bit: UDP, chunks
//! without `tcp_seq` (`ctl` bit 1 flips the transport for a chunk); `ctl` bit 7 prepends the
//! opening query to the payload.

#![no_main]

use flowmesh_protocols::{L7Protocol, L7Record, ResponseStatus, dns};
use flowmesh_protocols_fuzz::{Setup, run};
use libfuzzer_sys::fuzz_target;

/// `dig www.example.test A` (tests/fixtures/dns/udp.txt).
const QUERY: &[u8] = b"\x1a\x1f\x01\x20\x00\x01\x00\x00\x00\x00\x00\x01\x03www\x07example\x04test\x00\x00\x01\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x0c\x00\x0a\x00\x08\x89\x6a\x2e\x37\xe2\xf2\x2f\x9a";

fn check(record: &L7Record) {
    assert_eq!(record.protocol, L7Protocol::Dns);
    assert!(record.request_end_ns >= record.request_start_ns);
    assert!(record.request_domain.is_empty() || record.request_domain == record.request_resource);
    assert_eq!(record.endpoint, record.request_resource);
    assert!(record.version.is_empty());
    match record.response_code {
        Some(code) => {
            let expected = match code {
                0 => ResponseStatus::Ok,
                1 | 3 => ResponseStatus::ClientError,
                _ => ResponseStatus::ServerError,
            };
            assert_eq!(record.response_status, expected);
            assert_eq!(record.response_exception.is_empty(), code == 0);
            assert!(code < 4096);
            assert!(record.response_start_ns.is_some() && record.response_tid.is_some());
            assert!(record.response_end_ns >= record.response_start_ns);
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
}

fuzz_target!(|data: &[u8]| {
    let udp = data
        .first()
        .is_some_and(|config_byte| config_byte & 0x80 != 0);
    let opening = if udp {
        QUERY.to_vec()
    } else {
        [&(QUERY.len() as u16).to_be_bytes()[..], QUERY].concat()
    };
    let setup = Setup {
        without_seq: udp,
        inspect: |payload| {
            if let Ok(message) = dns::parse(payload) {
                assert!(message.answers.len() <= 2048);
            }
        },
        ..Setup::opening(&opening)
    };
    run(data, 2, &setup, check);
});
