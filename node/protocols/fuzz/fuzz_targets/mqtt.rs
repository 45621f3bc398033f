//! Feeds a `Conversation` with a valid MQTT CONNECT (3.1.1 or 5, so that inference picks
//! MQTT) followed by chunks whose directions, boundaries, capture caps, sequence jumps and
//! uncaptured tails all come from the fuzzer's input, then checks every row: requests of
//! the client and of the broker, one-way packets, pairing by packet id.
//!
//! Input: as in `flowmesh_protocols_fuzz`; the first config byte's top bit: MQTT 5; `ctl`
//! bit 7 prepends a CONNACK to the payload.

#![no_main]

use flowmesh_protocols::{Direction, L7Protocol, L7Record, ResponseStatus, Role};
use flowmesh_protocols_fuzz::{Setup, run};
use libfuzzer_sys::fuzz_target;

/// mosquitto_pub's CONNECTs (tests/fixtures/mqtt).
const CONNECT_V311: &[u8] = b"\x10\x17\x00\x04MQTT\x04\x02\x00\x3c\x00\x0bpub-v311-q0";
const CONNECT_V5: &[u8] = b"\x10\x19\x00\x04MQTT\x05\x02\x00\x3c\x03\x21\x00\x14\x00\x09pub-v5-q0";
const CONNACK_V311: &[u8] = b"\x20\x02\x00\x00";
const CONNACK_V5: &[u8] = b"\x20\x09\x00\x00\x06\x22\x00\x0a\x21\x00\x14";

const TYPES: [&str; 15] = [
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
    "AUTH",
];

fn check(record: &L7Record) {
    assert_eq!(record.protocol, L7Protocol::Mqtt);
    assert!(TYPES.contains(&record.request_type.as_str()));
    assert!(["", "3.1", "3.1.1", "5.0"].contains(&record.version.as_str()));
    assert_eq!(record.endpoint, record.request_resource);
    assert!(record.request_end_ns >= record.request_start_ns);
    // requests of the broker are rows of the other role; the client's come first
    assert!(record.role == Role::Client || record.role == Role::Server);
    match record.response_start_ns {
        Some(start) => {
            assert!(record.response_end_ns.is_some_and(|end| end >= start));
            assert!(record.response_tid.is_some() && record.response_length.is_some());
        }
        None => {
            assert!(record.response_length.is_none() && record.response_tid.is_none());
            let one_way = matches!(
                record.request_type.as_str(),
                "PUBLISH" | "DISCONNECT" | "AUTH"
            );
            assert!(
                one_way
                    || matches!(
                        record.response_status,
                        ResponseStatus::Timeout | ResponseStatus::Unknown
                    )
            );
        }
    }
    if record.response_status == ResponseStatus::Ok {
        assert!(record.response_exception.is_empty());
        assert!(
            record
                .response_code
                .is_none_or(|c| c < 0x80 || record.version != "5.0")
        );
    }
    if let Some(code) = record.response_code {
        assert!(code <= 0xff);
    }
}

fuzz_target!(|data: &[u8]| {
    let v5 = data
        .first()
        .is_some_and(|config_byte| config_byte & 0x80 != 0);
    let (opening, connack) = if v5 {
        (CONNECT_V5, CONNACK_V5)
    } else {
        (CONNECT_V311, CONNACK_V311)
    };
    let setup = Setup {
        opening: Some((Direction::Egress, opening)),
        prefix: Some(connack),
        ..Setup::default()
    };
    run(data, 2, &setup, check);
});
