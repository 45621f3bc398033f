//! Feeds a `Conversation` with a valid DNS query (bare for UDP, length-prefixed for TCP, so
//! that inference picks DNS) followed by chunks whose directions, boundaries, capture caps,
//! sequence jumps and uncaptured tails all come from the fuzzer's input, then checks every
//! row. Every chunk's payload is also given to `dns::parse` on its own.
//!
//! Input: two config bytes (the first's top bit: UDP, chunks without `tcp_seq`), then
//! records of a 5-byte header and a payload: `ctl, len_lo, len_hi, cap, aux` followed by
//! `len` payload bytes (fewer at the end). `ctl` bits: 0 direction (1 = ingress), 1 flip
//! the transport for this chunk, 2 sequence jump of `aux * 37` bytes, 3 uncaptured tail of
//! `aux * 131` bytes, 4 huge uncaptured tail, 5 call `expire` after, 6 sequence jumps
//! backwards, 7 prepend the opening query to the payload. `cap` 255 keeps the whole
//! payload, else `cap * 8` bytes.

#![no_main]

use flowmesh_protocols::{
    Chunk, Conversation, ConversationConfig, Direction, L7Protocol, L7Record, ResponseStatus, dns,
};
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
    let [config_byte, head, rest @ ..] = data else {
        return;
    };
    let udp = config_byte & 0x80 != 0;
    let config = ConversationConfig {
        max_pending_requests: usize::from(config_byte % 8),
        max_head_bytes: 32 << (head % 10),
        request_timeout_ns: 5_000,
        inference_attempts: 8,
    };
    let opening = if udp {
        QUERY.to_vec()
    } else {
        [&(QUERY.len() as u16).to_be_bytes()[..], QUERY].concat()
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
            tcp_seq: (!udp).then_some(seq[0]),
            byte_count: opening.len() as u32,
            payload: &opening,
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
        if let Ok(message) = dns::parse(bytes) {
            assert!(message.answers.len() <= 2048);
        }
        let bytes = if ctl & 128 != 0 {
            joined.clear();
            joined.extend_from_slice(&opening);
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
        let chunk_udp = udp != (ctl & 2 != 0);
        conversation.feed(
            &Chunk {
                direction,
                enter_ns: clock,
                exit_ns: clock + 500,
                tcp_seq: (!chunk_udp).then_some(seq[d]),
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
