//! Feeds a `Conversation` with a valid MySQL opening chunk (so that inference picks
//! MySQL) followed by chunks whose directions, boundaries, capture caps, sequence jumps
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

/// The first chunk, the server greeting read by the client (ingress), as MariaDB 10.11
/// sent it while tests/fixtures/mysql was recorded (the scramble differs per connection).
const OPENING: &[u8] =
    b"d\x00\x00\x00\x0a5.5.5-10.11.19-MariaDB-0+deb12u1\x00\x0a\x00\x00\x00R\x22RW>n2L\x00\xfe\xf7-\x02\x00\xff\x81\x15\x00\x00\x00\x00\x00\x00\x1d\x00\x00\x00iL|OV@{n7fzT\x00mysql_native_password\x00";
const OPENING_DIRECTION: Direction = Direction::Ingress;
/// The commands' names, and the login.
const TYPES: [&str; 28] = [
    "LOGIN",
    "COM_QUIT",
    "COM_INIT_DB",
    "COM_QUERY",
    "COM_FIELD_LIST",
    "COM_CREATE_DB",
    "COM_DROP_DB",
    "COM_REFRESH",
    "COM_SHUTDOWN",
    "COM_STATISTICS",
    "COM_PROCESS_INFO",
    "COM_PROCESS_KILL",
    "COM_DEBUG",
    "COM_PING",
    "COM_CHANGE_USER",
    "COM_BINLOG_DUMP",
    "COM_TABLE_DUMP",
    "COM_CONNECT_OUT",
    "COM_REGISTER_SLAVE",
    "COM_STMT_PREPARE",
    "COM_STMT_EXECUTE",
    "COM_STMT_SEND_LONG_DATA",
    "COM_STMT_CLOSE",
    "COM_STMT_RESET",
    "COM_SET_OPTION",
    "COM_STMT_FETCH",
    "COM_BINLOG_DUMP_GTID",
    "COM_RESET_CONNECTION",
];
/// Requests without response (rows at once, status ok).
const NO_RESPONSE: [&str; 5] = [
    "COM_QUIT",
    "COM_STMT_CLOSE",
    "COM_STMT_SEND_LONG_DATA",
    "COM_BINLOG_DUMP",
    "COM_BINLOG_DUMP_GTID",
];
/// Bytes of the smallest request (a packet header and a command byte).
const MIN_REQUEST: usize = 5;

fn check(record: &L7Record) {
    assert_eq!(record.protocol, L7Protocol::MySql);
    assert!(
        TYPES.contains(&record.request_type.as_str())
            || record.request_type == "COM_STMT_BULK_EXECUTE",
        "{record:?}"
    );
    assert!(record.request_end_ns >= record.request_start_ns);
    assert!(record.request_length > 0);
    match record.response_code {
        Some(_) => assert!(matches!(
            record.response_status,
            ResponseStatus::ClientError | ResponseStatus::ServerError
        )),
        None => assert!(record.response_exception.is_empty()),
    }
    match record.response_start_ns {
        Some(start) => {
            assert!(record.response_end_ns.is_some_and(|end| end >= start));
            assert!(record.response_tid.is_some() && record.response_length.is_some());
            assert_ne!(record.response_status, ResponseStatus::Unknown);
            assert_ne!(record.response_status, ResponseStatus::Timeout);
        }
        None => {
            let expected = if NO_RESPONSE.contains(&record.request_type.as_str()) {
                record.response_status == ResponseStatus::Ok
            } else {
                matches!(
                    record.response_status,
                    ResponseStatus::Timeout | ResponseStatus::Unknown
                )
            };
            assert!(expected, "{record:?}");
            assert!(record.response_length.is_none() && record.response_code.is_none());
            assert!(record.response_exception.is_empty());
        }
    }
    if record.response_status == ResponseStatus::Ok {
        assert!(record.response_exception.is_empty() && record.response_code.is_none());
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
    let d0 = usize::from(OPENING_DIRECTION == Direction::Ingress);
    conversation.feed(
        &Chunk {
            direction: OPENING_DIRECTION,
            enter_ns: clock,
            exit_ns: clock + 500,
            tcp_seq: Some(seq[d0]),
            byte_count: OPENING.len() as u32,
            payload: OPENING,
            tid: 1,
        },
        &mut out,
    );
    seq[d0] = seq[d0].wrapping_add(OPENING.len() as u32);
    assert_eq!(conversation.protocol(), Some(L7Protocol::MySql));
    let mut rest = rest;
    let mut records_seen = 0;
    let mut payload_bytes = 0usize;
    let mut buffer = Vec::new();
    while let [ctl, len_lo, len_hi, cap, aux, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        buffer.clear();
        if ctl & 128 != 0 {
            buffer.extend_from_slice(OPENING);
        }
        buffer.extend_from_slice(bytes);
        let bytes = &buffer[..];
        payload_bytes += bytes.len();
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
    // every row needs a request of MIN_REQUEST captured bytes, but the opening's
    assert!(out.len() <= payload_bytes / MIN_REQUEST + 1);
});
