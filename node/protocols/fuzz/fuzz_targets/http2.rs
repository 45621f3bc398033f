//! Feeds a `Conversation` with HTTP/2-shaped chunks whose directions, boundaries, capture
//! caps, sequence jumps and uncaptured tails all come from the fuzzer's input, then checks
//! every row.
//!
//! Input: three config bytes, then records of a 5-byte header and a payload, as in
//! `http1_conversation`: `ctl, len_lo, len_hi, cap, aux` followed by `len` payload bytes.
//! `ctl` bits: 0 direction (1 = ingress), 1 no tcp_seq, 2 sequence jump of `aux * 37` bytes,
//! 3 uncaptured tail of `aux * 131` bytes, 4 huge uncaptured tail, 5 call `expire` after,
//! 6 sequence jumps backwards, 7 prefix the payload with the client preface. `cap` 255 keeps
//! the whole payload, else `cap * 8` bytes. The third config byte's low bit prefixes the very
//! first record with the preface, so that most inputs reach the session.

#![no_main]

use flowmesh_protocols::{
    Chunk, Conversation, ConversationConfig, Direction, L7Protocol, L7Record, ResponseStatus,
};
use libfuzzer_sys::fuzz_target;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn grpc_class(code: u16) -> ResponseStatus {
    match code {
        0 => ResponseStatus::Ok,
        1 | 3 | 5 | 6 | 7 | 9 | 11 | 16 => ResponseStatus::ClientError,
        _ => ResponseStatus::ServerError,
    }
}

fn check(record: &L7Record) {
    if !matches!(record.protocol, L7Protocol::Http2 | L7Protocol::Grpc) {
        // Another protocol's detector claimed the fuzzer's bytes: not this target's business.
        return;
    }
    assert_eq!(record.version, "2");
    assert!(record.request_end_ns >= record.request_start_ns);
    assert!(
        record.request_length >= 9,
        "a row has at least one HEADERS frame"
    );
    match record.response_code {
        Some(code) => {
            let http = ResponseStatus::from_http_code(code);
            match record.protocol {
                L7Protocol::Grpc => assert!(
                    record.response_status == grpc_class(code)
                        || record.response_status == http
                        || record.response_status == ResponseStatus::Unknown
                ),
                _ => assert_eq!(record.response_status, http),
            }
            assert!(record.response_start_ns.is_some() && record.response_tid.is_some());
            assert!(record.response_end_ns >= record.response_start_ns);
        }
        None => {
            assert!(matches!(
                record.response_status,
                ResponseStatus::Timeout | ResponseStatus::Unknown
            ));
            if record.response_start_ns.is_none() {
                assert!(record.response_length.is_none());
            }
        }
    }
    if record.protocol == L7Protocol::Http2 {
        assert!(
            record.response_exception.is_empty()
                || record.response_exception.starts_with("stream reset by ")
        );
    }
    if let Some(length) = record.response_length {
        assert!(length >= 9);
    }
    if let Some(trace_id) = &record.trace_id {
        assert_eq!(trace_id.len(), 32);
    }
}

fuzz_target!(|data: &[u8]| {
    let [pending, head, flags, rest @ ..] = data else {
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
    let mut rest = rest;
    let mut records_seen = 0;
    let mut first = flags & 1 != 0;
    let mut bytes_fed = 0usize;
    while let [ctl, len_lo, len_hi, cap, aux, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        let mut bytes = Vec::with_capacity(body.len() + PREFACE.len());
        if ctl & 128 != 0 || std::mem::take(&mut first) {
            bytes.extend_from_slice(PREFACE);
        }
        bytes.extend_from_slice(body);
        bytes_fed += bytes.len();
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
    // Every HTTP/2 row needs a HEADERS frame of at least 10 bytes of its own.
    if matches!(
        conversation.protocol(),
        Some(L7Protocol::Http2 | L7Protocol::Grpc)
    ) {
        assert!(out.len() <= bytes_fed / 10 + 1);
    }
});
