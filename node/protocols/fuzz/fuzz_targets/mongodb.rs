//! Feeds a `Conversation` with a valid MongoDB opening chunk (so that inference picks
//! MongoDB) followed by chunks whose directions, boundaries, capture caps, sequence jumps
//! and uncaptured tails all come from the fuzzer's input, then checks every row.
//!
//! Input: two config bytes, then records of a 5-byte header and a payload:
//! `ctl, len_lo, len_hi, cap, aux` followed by `len` payload bytes (fewer at the end).
//! `ctl` bits: 0 direction (1 = ingress), 1 no tcp_seq, 2 sequence jump of `aux * 37` bytes,
//! 3 uncaptured tail of `aux * 131` bytes, 4 huge uncaptured tail, 5 call `expire` after,
//! 6 sequence jumps backwards, 7 prepend the opening chunk to the payload.
//! `cap` 255 keeps the whole payload, else `cap * 8` bytes.

#![no_main]

use flowmesh_protocols::{
    Chunk, Conversation, ConversationConfig, Direction, L7Protocol, L7Record, ResponseStatus,
};
use libfuzzer_sys::fuzz_target;

/// The first chunk, sent by the client (egress).
const OPENING: &[u8] = // an OP_QUERY isMaster (tests/fixtures/mongodb/spec_legacy_and_errors.bin)
    b"c\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xd4\x07\x00\x00\x00\x00\x00\x00admin.$cmd\x00\x00\x00\x00\x00\xff\xff\xff\xff<\x00\x00\x00\x10isMaster\x00\x01\x00\x00\x00\x03client\x00!\x00\x00\x00\x03driver\x00\x14\x00\x00\x00\x02name\x00\x05\x00\x00\x00spec\x00\x00\x00\x00";

fn check(record: &L7Record) {
    assert_eq!(record.protocol, L7Protocol::MongoDb);
    assert!(!record.request_type.is_empty());
    assert!(record.request_end_ns >= record.request_start_ns);
    match record.response_start_ns {
        Some(start) => {
            assert!(record.response_end_ns.is_some_and(|end| end >= start));
            assert!(record.response_tid.is_some());
        }
        None => {
            assert!(matches!(
                record.response_status,
                ResponseStatus::Timeout | ResponseStatus::Unknown
            ));
            assert!(record.response_length.is_none() && record.response_code.is_none());
            assert!(record.response_exception.is_empty());
        }
    }
    if record.response_status == ResponseStatus::Ok {
        assert!(record.response_exception.is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let [pending, head, rest @ ..] = data else {
        return;
    };
    let config = ConversationConfig {
        max_pending_requests: usize::from(pending % 8),
        max_head_bytes: 32 << (head % 10),
        request_timeout_ns: 5_000,
        inference_attempts: 8,
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
            byte_count: OPENING.len() as u32,
            payload: OPENING,
            tid: 1,
        },
        &mut out,
    );
    seq[0] = seq[0].wrapping_add(OPENING.len() as u32);
    let mut rest = rest;
    let mut records_seen = 0;
    let mut joined = Vec::new();
    while let [ctl, len_lo, len_hi, cap, aux, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let bytes = if ctl & 128 != 0 {
            joined.clear();
            joined.extend_from_slice(OPENING);
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
