//! Feeds a `Conversation` with a valid MQTT CONNECT (3.1.1 or 5, so that inference picks
//! MQTT) followed by chunks whose directions, boundaries, capture caps, sequence jumps and
//! uncaptured tails all come from the fuzzer's input, then checks every row: requests of
//! the client and of the broker, one-way packets, pairing by packet id.
//!
//! Input: two config bytes (the first's top bit: MQTT 5), then records of a 5-byte header
//! and a payload: `ctl, len_lo, len_hi, cap, aux` followed by `len` payload bytes (fewer at
//! the end). `ctl` bits: 0 direction (1 = ingress), 1 no tcp_seq, 2 sequence jump of
//! `aux * 37` bytes, 3 uncaptured tail of `aux * 131` bytes, 4 huge uncaptured tail, 5 call
//! `expire` after, 6 sequence jumps backwards, 7 prepend a CONNACK to the payload. `cap` 255
//! keeps the whole payload, else `cap * 8` bytes.

#![no_main]

use flowmesh_protocols::{
    Chunk, Conversation, ConversationConfig, Direction, L7Protocol, L7Record, ResponseStatus, Role,
};
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
    let [config_byte, head, rest @ ..] = data else {
        return;
    };
    let v5 = config_byte & 0x80 != 0;
    let config = ConversationConfig {
        max_pending_requests: usize::from(config_byte % 8),
        max_head_bytes: 32 << (head % 10),
        request_timeout_ns: 5_000,
        inference_attempts: 8,
    };
    let (opening, connack) = if v5 {
        (CONNECT_V5, CONNACK_V5)
    } else {
        (CONNECT_V311, CONNACK_V311)
    };
    let mut conversation = Conversation::new(config);
    let mut out = Vec::new();
    let mut seq = [1u32, 4_000_000_000u32];
    let mut clock = 1_000_000u64;
    conversation.feed(
        &Chunk {
            direction: Direction::Egress,
            enter_ns: clock,
            exit_ns: clock + 500,
            tcp_seq: Some(seq[0]),
            byte_count: opening.len() as u32,
            payload: opening,
            tid: 1,
        },
        &mut out,
    );
    seq[0] = seq[0].wrapping_add(opening.len() as u32);
    let mut rest = rest;
    let mut records_seen = 0;
    let mut joined = Vec::new();
    while let [ctl, len_lo, len_hi, cap, aux, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let bytes = if ctl & 128 != 0 {
            joined.clear();
            joined.extend_from_slice(connack);
            joined.extend_from_slice(bytes);
            &joined[..]
        } else {
            bytes
        };
        let direction = if ctl & 1 != 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let d = usize::from(ctl & 1);
        if ctl & 4 != 0 {
            seq[d] = seq[d].wrapping_add(u32::from(*aux) * 37);
        }
        if ctl & 64 != 0 {
            seq[d] = seq[d].wrapping_sub(1_000);
        }
        let mut extra = if ctl & 8 != 0 {
            u32::from(*aux) * 131
        } else {
            0
        };
        if ctl & 16 != 0 {
            extra = u32::MAX / 4;
        }
        let byte_count = (bytes.len() as u32).saturating_add(extra);
        let captured = if *cap == 255 {
            bytes.len()
        } else {
            bytes.len().min(usize::from(*cap) * 8)
        };
        conversation.feed(
            &Chunk {
                direction,
                enter_ns: clock,
                exit_ns: clock + 500,
                tcp_seq: if ctl & 2 != 0 { None } else { Some(seq[d]) },
                byte_count,
                payload: &bytes[..captured],
                tid: u32::from(*aux),
            },
            &mut out,
        );
        seq[d] = seq[d].wrapping_add(byte_count);
        clock += 1_000;
        if ctl & 32 != 0 {
            conversation.expire(clock, &mut out);
        }
        for record in &out[records_seen..] {
            check(record);
        }
        records_seen = out.len();
    }
    conversation.close(clock, &mut out);
    for record in &out[records_seen..] {
        check(record);
    }
    assert_eq!(out.len() as u64, conversation.stats().records);
});
