//! The harness shared by the `Conversation` fuzz targets: it splits the fuzzer's input into
//! chunks, feeds them to a `flowmesh_protocols::Conversation`, and hands every produced row to
//! the target's check.
//!
//! Input: `config_len` config bytes (the first two: `max_pending_requests % 8` and
//! `32 << (head % 10)` head bytes; any further ones are the target's own), then records of a
//! 5-byte header and a payload: `ctl, len_lo, len_hi, cap, aux` followed by `len` payload
//! bytes (fewer at the end). `ctl` bits: 0 direction (1 = ingress), 1 no tcp_seq (with
//! [`Setup::without_seq`]: flip the transport, i.e. give a tcp_seq), 2 sequence jump of
//! `aux * 37` bytes, 3 uncaptured tail of `aux * 131` bytes, 4 huge uncaptured tail, 5 call
//! `expire` after, 6 sequence jumps backwards, 7 prepend [`Setup::prefix`] to the payload.
//! `cap` 255 keeps the whole payload, else `cap * 8` bytes.

use flowmesh_protocols::{
    Chunk, Conversation, ConversationConfig, Direction, L7Protocol, L7Record, ResponseStatus,
};

/// What a target adds to the shared harness.
pub struct Setup<'a> {
    /// A first chunk (tid 1) that makes inference pick the target's protocol, and its direction.
    pub opening: Option<(Direction, &'a [u8])>,
    /// Chunks carry no `tcp_seq` (UDP) unless `ctl` bit 1 flips it; the opening too.
    pub without_seq: bool,
    /// Prepended to a record's payload when `ctl` bit 7 is set; `None` ignores the bit.
    pub prefix: Option<&'a [u8]>,
    /// Prepend `prefix` to the very first record too.
    pub prefix_first: bool,
    /// The protocol `conversation.protocol()` must report right after the opening.
    pub detected_after_opening: Option<L7Protocol>,
    /// Called with each record's payload as cut from the input (before any prefix).
    pub inspect: fn(&[u8]),
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            opening: None,
            without_seq: false,
            prefix: None,
            prefix_first: false,
            detected_after_opening: None,
            inspect: |_| {},
        }
    }
}

impl<'a> Setup<'a> {
    /// A client's (egress) opening, also the prefix of `ctl` bit 7.
    pub fn opening(opening: &'a [u8]) -> Self {
        Setup {
            opening: Some((Direction::Egress, opening)),
            prefix: Some(opening),
            ..Setup::default()
        }
    }
}

/// What the run fed and produced, for the targets' own bounds.
pub struct Outcome {
    /// Rows produced (equal to the conversation's `stats().records`).
    pub rows: usize,
    /// Payload bytes of the records (prefix included, before the capture cap, opening excluded).
    pub fed_bytes: usize,
    /// Captured payload bytes, the opening included.
    pub captured_bytes: usize,
    /// The conversation's protocol at the end.
    pub protocol: Option<L7Protocol>,
}

/// Runs the input through a `Conversation`, calling `check` on every row, and asserts that the
/// rows and the conversation's record count agree. `None` if the config bytes are missing.
pub fn run(
    data: &[u8],
    config_len: usize,
    setup: &Setup<'_>,
    check: impl Fn(&L7Record),
) -> Option<Outcome> {
    if data.len() < config_len.max(2) {
        return None;
    }
    let (pending, head) = (data[0], data[1]);
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
    let mut captured_bytes = 0usize;
    if let Some((direction, opening)) = setup.opening {
        let d0 = usize::from(direction == Direction::Ingress);
        conversation.feed(
            &Chunk {
                direction,
                enter_ns: clock,
                exit_ns: clock + 500,
                tcp_seq: (!setup.without_seq).then_some(seq[d0]),
                byte_count: opening.len() as u32,
                payload: opening,
                tid: 1,
                syscall_trace_id: 0,
            },
            &mut out,
        );
        seq[d0] = seq[d0].wrapping_add(opening.len() as u32);
        captured_bytes += opening.len();
        if let Some(protocol) = setup.detected_after_opening {
            assert_eq!(conversation.protocol(), Some(protocol));
        }
    }
    let mut rest = &data[config_len.max(2)..];
    let mut records_seen = 0;
    let mut fed_bytes = 0usize;
    let mut first = setup.prefix_first;
    let mut buffer = Vec::new();
    while let [ctl, len_lo, len_hi, cap, aux, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        (setup.inspect)(body);
        buffer.clear();
        if let Some(prefix) = setup.prefix {
            if ctl & 128 != 0 || std::mem::take(&mut first) {
                buffer.extend_from_slice(prefix);
            }
        }
        buffer.extend_from_slice(body);
        let bytes = &buffer[..];
        fed_bytes += bytes.len();
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
        captured_bytes += captured;
        let without_seq = setup.without_seq != (ctl & 2 != 0);
        conversation.feed(
            &Chunk {
                direction,
                enter_ns: clock,
                exit_ns: clock + 500,
                tcp_seq: (!without_seq).then_some(seq[d]),
                byte_count,
                payload: &bytes[..captured],
                tid: u32::from(*aux),
                syscall_trace_id: u64::from(*aux),
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
    Some(Outcome {
        rows: out.len(),
        fed_bytes,
        captured_bytes,
        protocol: conversation.protocol(),
    })
}

/// The checks every request/response protocol's row passes: times in order, a response's
/// presence consistent with its fields, and no exception on success.
pub fn check_exchange(record: &L7Record) {
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

/// [`check_exchange`], for a row of `protocol` with a request type.
pub fn check_row(record: &L7Record, protocol: L7Protocol) {
    assert_eq!(record.protocol, protocol);
    assert!(!record.request_type.is_empty());
    check_exchange(record);
}

/// The checks of a session protocol's row (MySQL, PostgreSQL): a request of some bytes, a
/// response that says how it went, and requests in `no_response` that get none and are ok.
pub fn check_session_row(record: &L7Record, no_response: &[&str]) {
    assert!(record.request_end_ns >= record.request_start_ns);
    assert!(record.request_length > 0);
    match record.response_start_ns {
        Some(start) => {
            assert!(record.response_end_ns.is_some_and(|end| end >= start));
            assert!(record.response_tid.is_some() && record.response_length.is_some());
            assert_ne!(record.response_status, ResponseStatus::Unknown);
            assert_ne!(record.response_status, ResponseStatus::Timeout);
        }
        None => {
            let expected = if no_response.contains(&record.request_type.as_str()) {
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
