//! HTTP/2 (RFC 9113) and gRPC: detection, frames, HPACK (RFC 7541) and the session that turns
//! a connection's streams into rows.
//!
//! # The session
//!
//! Streams are multiplexed: DATA frames of many streams interleave in both directions, so the
//! generic [`crate::framed::FramedSession`] (one exchange in progress per direction) does not
//! fit. The session here has three layers:
//!
//! - a [`frame::Framer`] per direction cuts the bytes into frames. Frames are
//!   length-prefixed, so payloads that were not captured are skipped exactly; framing is lost
//!   only when a frame header falls into uncaptured bytes (or the bytes are not frames), and is
//!   found again at a syscall whose captured bytes are a chain of well-formed frames that fit
//!   the connection (control frames, streams the session follows, a new client stream);
//! - an [`hpack::Decoder`] per direction decodes header blocks (HEADERS or PUSH_PROMISE plus
//!   CONTINUATION, padding and priority fields removed);
//! - a table of streams, keyed by stream id, at most `max_pending_requests` of them (further
//!   new streams are dropped and counted in `dropped_requests`).
//!
//! A client HEADERS on a new odd stream id opens a stream; its DATA and trailers extend the
//! request. The server's HEADERS (1xx ones are interim), DATA and trailers make the response.
//! A stream becomes one row when its response ends (END_STREAM), when either side resets it
//! (RST_STREAM), when a GOAWAY from the server excludes it, at timeout, at close, or when the
//! response direction loses framing and nothing later could change the row (see below).
//! PUSH_PROMISE frames are counted and their header blocks decoded (they change the server's
//! table) but pushed streams are not followed. SETTINGS_HEADER_TABLE_SIZE bounds the table
//! size updates the peer's decoder accepts, SETTINGS_MAX_FRAME_SIZE the frame lengths a
//! resynchronisation accepts; PING, WINDOW_UPDATE and PRIORITY change nothing.
//!
//! # Capture gaps
//!
//! Only a prefix of each syscall is captured. What it costs:
//!
//! - *A header block cut by the capture cap*: its captured representations are decoded (a
//!   field cut in the middle is dropped), and the stream still gets its row — with the fields
//!   that were decoded, so the status is unknown when `:status` was lost. The direction's
//!   dynamic table is then *unsynchronised*: it may hold entries of unknown content.
//! - *An unsynchronised table* keeps decoding. Entries inserted afterwards are known exactly
//!   (they are the newest, and eviction removes the oldest first), static references and
//!   literals always decode, and a reference to an entry of unknown content makes that one
//!   field unknown (left empty in the row) rather than guessed. The table is trusted again
//!   once its known entries fill it (see [`hpack`]). A field is thus never wrong, only
//!   possibly missing. A connection first seen in its middle starts with both tables in this
//!   state; since `content-type` is then often a reference to an unknown entry, a gRPC stream
//!   is also recognised from a `grpc-status` field, and one whose head and trailers both
//!   refer to unknown entries is reported as HTTP/2.
//! - *Lost framing in the request direction*: requests whose HEADERS went by are never seen
//!   (their responses count as `unmatched_responses`, as do responses on client streams the
//!   capture never saw open); requests in progress keep their rows.
//! - *Lost framing in the response direction*: a stream whose final response headers were
//!   seen becomes a row at once, with `response_length` unknown — unless it is a gRPC call
//!   still waiting for the grpc-status of its trailers, which may still arrive after the
//!   direction resynchronises; it is then reported when they do, at timeout (from its last
//!   frame), at close, or when a new stream needs its place. A stream whose response had not
//!   started may have been answered unseen: it times out as `unknown`, not `timeout`.
//!
//! # Detection
//!
//! - The client connection preface `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` at a chunk start: the
//!   direction it travels in carries requests. Fewer than 24 bytes that start it: need more.
//! - In the middle of a connection, a chunk that starts with a chain of well-formed frames
//!   (known type, only defined flags, stream-id rules, fixed lengths, length at most 16 384)
//!   containing a HEADERS frame on an odd stream whose header block decodes (with a table of
//!   unknown content) into a valid request (`:method`) or response (`:status`) head:
//!   pseudo-headers first, lowercase names, a token method or a three-digit status. The role
//!   follows from which of the two it is. A chain that starts with a valid SETTINGS frame but
//!   shows no HEADERS yet needs more bytes (SETTINGS alone does not tell the role).
//!
//! # Fields
//!
//! As DeepFlow's `protocol_logs/http.rs` fills them for HTTP/2 and gRPC:
//!
//! | column | HTTP/2 | gRPC (`content-type: application/grpc…`) |
//! |---|---|---|
//! | `version` | `"2"` | `"2"` |
//! | `request_type` | `:method` | `:method` (always `POST`) |
//! | `request_domain` | `:authority`, else `host` | same |
//! | `request_resource` | `:path` | the service: `package.Service` of `/package.Service/Method` |
//! | `endpoint` | `:path` without query and fragment | `:path` |
//! | `response_code` | `:status` | `grpc-status`, else `:status` |
//! | `response_status` | from `:status` as for HTTP/1 | from `grpc-status`: 0 ok; 1, 3, 5, 6, 7, 9, 11, 16 client error; others server error |
//! | `response_exception` | `""` | `grpc-message` (percent-decoded) of a non-OK call |
//! | `l7_protocol` | `HTTP2` | `gRPC` (also when a `grpc-status` field is seen) |
//!
//! `x_request_id` and the `traceparent` ids come from the request's headers, else the
//! response's, as for HTTP/1. Lengths count every byte of the stream's HEADERS, CONTINUATION
//! and DATA frames (frame headers and padding included) in each direction; connection-level
//! frames belong to no row.
//!
//! Where flowmesh differs from DeepFlow, and why:
//!
//! - A gRPC path that is not `/service/method` keeps the path as `request_resource` (DeepFlow
//!   leaves it empty): the row should say what was called.
//! - A gRPC response without `grpc-status` (trailers lost) and a 2xx `:status` is `unknown`,
//!   not `ok`: gRPC reports failures with `:status` 200 and the outcome lives in the trailers.
//! - A stream reset before its response (RST_STREAM) gets `response_exception`
//!   `"stream reset by client: CANCEL"` (or server, and the error code's name), with status
//!   `unknown`; DeepFlow has no row-level notion of resets.
//! - HTTP/2 has no reason phrase, so HTTP/2 rows keep `response_exception` empty where
//!   HTTP/1 rows carry the reason phrase of 4xx and 5xx responses.
//! - DeepFlow reports gRPC streaming messages as separate session logs when configured to;
//!   here a stream is one row whatever its number of messages.

pub mod frame;
pub mod hpack;
mod huffman;
mod session;
mod stream;

use frame::{FRAME_HEADER_LEN, FrameHeader, FrameType, PREFACE, flags};
use hpack::Decoder;
use stream::HeaderFacts;

use crate::infer::{Detection, Inference};
use crate::{ConversationConfig, Direction, L7Protocol, Role, session::ProtocolSession};

/// Frame lengths inference accepts: the default `SETTINGS_MAX_FRAME_SIZE`.
const DETECT_MAX_FRAME: u32 = frame::DEFAULT_MAX_FRAME_SIZE;

/// Recognises HTTP/2 at the start of a chunk travelling in `direction`. See the module docs.
pub(crate) fn detect(bytes: &[u8], direction: Direction) -> Detection {
    let matched = |requests: Direction| {
        Detection::Match(Inference {
            protocol: L7Protocol::Http2,
            role: Role::from_request_direction(requests),
        })
    };
    let n = bytes.len().min(PREFACE.len());
    if n > 0 && bytes[..n] == PREFACE[..n] {
        return if n == PREFACE.len() {
            matched(direction)
        } else {
            Detection::NeedMore
        };
    }
    match scan_frames(bytes) {
        Scan::Request => matched(direction),
        Scan::Response => matched(direction.opposite()),
        Scan::NeedMore => Detection::NeedMore,
        Scan::No => Detection::NoMatch,
    }
}

/// What the frames at the start of a chunk show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// A request head: the chunk travels in the request direction.
    Request,
    /// A response head.
    Response,
    /// Plausible frames, no head yet.
    NeedMore,
    /// Not HTTP/2 frames.
    No,
}

fn scan_frames(bytes: &[u8]) -> Scan {
    let mut decoder = Decoder::unsynchronized();
    let mut pos = 0usize;
    let mut settings_first = false;
    loop {
        let rest = &bytes[pos..];
        let Some(header) = FrameHeader::parse(rest) else {
            // A partial frame header: plausible if its known bytes could start one.
            if pos == 0 {
                return if plausible_header_prefix(rest) {
                    Scan::NeedMore
                } else {
                    Scan::No
                };
            }
            return if settings_first {
                Scan::NeedMore
            } else {
                Scan::No
            };
        };
        if !header.is_well_formed(DETECT_MAX_FRAME) {
            return Scan::No;
        }
        let end = FRAME_HEADER_LEN + header.length as usize;
        let payload = &rest[FRAME_HEADER_LEN..rest.len().min(end)];
        let whole = rest.len() >= end;
        match header.kind {
            FrameType::Settings if pos == 0 => {
                if !whole || !valid_settings(payload) {
                    return Scan::No;
                }
                settings_first = true;
            }
            FrameType::Headers => match header_evidence(&header, payload, whole, &mut decoder) {
                Evidence::Request => return Scan::Request,
                Evidence::Response => return Scan::Response,
                Evidence::Invalid => return Scan::No,
                Evidence::None if !whole => return Scan::NeedMore,
                Evidence::None => {}
            },
            FrameType::Continuation | FrameType::PushPromise | FrameType::GoAway if pos == 0 => {
                return Scan::No;
            }
            _ => {}
        }
        if !whole {
            return if settings_first {
                Scan::NeedMore
            } else {
                Scan::No
            };
        }
        pos += end;
        if pos == bytes.len() {
            return if settings_first {
                Scan::NeedMore
            } else {
                Scan::No
            };
        }
    }
}

/// Whether `prefix` (under 9 bytes) can start a frame header inference would accept: the
/// header with its missing bytes filled in the most favourable way is well-formed, and of a
/// type a chunk may start with.
fn plausible_header_prefix(prefix: &[u8]) -> bool {
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[..prefix.len()].copy_from_slice(prefix);
    if prefix.len() <= 3 {
        // Only the length is known (a missing low byte as 0): any type may follow.
        return u32::from_be_bytes([0, header[0], header[1], header[2]]) <= DETECT_MAX_FRAME;
    }
    let kind = FrameType::from_byte(header[3]);
    let connection_level = matches!(
        kind,
        FrameType::Settings | FrameType::Ping | FrameType::GoAway | FrameType::WindowUpdate
    );
    if prefix.len() < FRAME_HEADER_LEN && !connection_level {
        header[8] |= 1;
    }
    let Some(header) = FrameHeader::parse(&header) else {
        return false;
    };
    header.is_well_formed(DETECT_MAX_FRAME)
        && !matches!(
            kind,
            FrameType::Continuation | FrameType::PushPromise | FrameType::GoAway
        )
}

/// SETTINGS parameters (RFC 9113 §6.5.2, RFC 8441, RFC 9218) with valid values; unknown ids
/// are allowed (gRPC sends its own), at most 16 parameters.
fn valid_settings(payload: &[u8]) -> bool {
    payload.len() <= 16 * 6
        && payload.chunks_exact(6).all(|setting| {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match id {
                0x0 => false,
                0x2 | 0x8 | 0x9 => value <= 1,
                0x4 => value <= 0x7fff_ffff,
                0x5 => (1 << 14..1 << 24).contains(&value),
                _ => true,
            }
        })
}

enum Evidence {
    Request,
    Response,
    /// Nothing contradicts HTTP/2, nothing shows the role.
    None,
    /// The block is not a valid HTTP/2 head.
    Invalid,
}

/// What the header block of a HEADERS frame at detection says.
fn header_evidence(
    header: &FrameHeader,
    payload: &[u8],
    whole: bool,
    decoder: &mut Decoder,
) -> Evidence {
    if header.stream_id.is_multiple_of(2) {
        return Evidence::Invalid;
    }
    let padded = header.has(flags::PADDED);
    let pad = if padded {
        match payload.first() {
            Some(&p) => u32::from(p),
            None => return Evidence::None,
        }
    } else {
        0
    };
    let skip = u32::from(padded) + if header.has(flags::PRIORITY) { 5 } else { 0 };
    if skip + pad > header.length {
        return Evidence::Invalid;
    }
    let end = (header.length - pad) as usize;
    let fragment = payload
        .get(skip as usize..payload.len().min(end))
        .unwrap_or(&[]);
    let complete = whole && header.has(flags::END_HEADERS);
    let mut facts = HeaderFacts::default();
    if decoder
        .decode(fragment, complete, &mut |field| facts.add(field))
        .is_err()
        || facts.malformed
    {
        return Evidence::Invalid;
    }
    let status_valid = facts.status.is_some_and(|code| (100..600).contains(&code));
    match (&facts.method, facts.status) {
        (Some(_), None) => Evidence::Request,
        (None, Some(_)) if status_valid => Evidence::Response,
        (None, None) => Evidence::None,
        _ => Evidence::Invalid,
    }
}

/// The session of a socket this module's `detect` matched.
pub(crate) fn new_session(role: Role, config: &ConversationConfig) -> Box<dyn ProtocolSession> {
    Box::new(session::Http2Session::new(role, config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.push(kind);
        out.push(flags);
        out.extend(stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn role(d: Detection) -> Option<Role> {
        match d {
            Detection::Match(Inference {
                protocol: L7Protocol::Http2,
                role,
            }) => Some(role),
            _ => None,
        }
    }

    const OUT: Direction = Direction::Egress;
    const IN: Direction = Direction::Ingress;

    #[test]
    fn the_preface_gives_the_role() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(4, 0, 0, &[]));
        assert_eq!(role(detect(&bytes, OUT)), Some(Role::Client));
        assert_eq!(role(detect(&bytes, IN)), Some(Role::Server));
        assert_eq!(role(detect(PREFACE, IN)), Some(Role::Server));
        assert_eq!(detect(&PREFACE[..10], OUT), Detection::NeedMore);
        assert_eq!(detect(b"PRI * HTTP/1.1\r\n", OUT), Detection::NoMatch);
    }

    #[test]
    fn mid_connection_heads_give_the_role() {
        // A request: GET / on stream 5, after a WINDOW_UPDATE.
        let mut request = frame(8, 0, 0, &[0, 0, 0x10, 0]);
        request.extend(frame(1, 0x5, 5, &[0x82, 0x86, 0x84, 0xbe]));
        assert_eq!(role(detect(&request, OUT)), Some(Role::Client));
        assert_eq!(role(detect(&request, IN)), Some(Role::Server));
        // A response: :status 404 then a dynamic reference.
        let response = frame(1, 0x4, 7, &[0x8d, 0xc0]);
        assert_eq!(role(detect(&response, IN)), Some(Role::Client));
        // SETTINGS then a response head.
        let mut settings = frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        assert_eq!(detect(&settings, OUT), Detection::NeedMore);
        assert_eq!(detect(&frame(4, 1, 0, &[]), OUT), Detection::NeedMore);
        settings.extend(&response);
        assert_eq!(role(detect(&settings, OUT)), Some(Role::Server));
        // A cut header block before any evidence needs more.
        let cut = frame(1, 0x4, 1, &[0x40, 0x0a, b'c', b'u', b's']);
        assert_eq!(detect(&cut[..12], OUT), Detection::NeedMore);
        assert_eq!(detect(&[0, 0, 6, 4], OUT), Detection::NeedMore);
        assert_eq!(detect(&[0, 0], OUT), Detection::NeedMore);
    }

    #[test]
    fn invalid_heads_are_not_http2() {
        let cases: Vec<Vec<u8>> = vec![
            // Even stream, both method and status, status out of range, pseudo after regular.
            frame(1, 0x4, 2, &[0x82]),
            frame(1, 0x4, 1, &[0x82, 0x88]),
            frame(1, 0x4, 1, &[0x48, 0x03, b'0', b'9', b'9']),
            frame(1, 0x4, 1, &[0x53, 0x01, b'x', 0x82]),
            // Only unknown fields, whole: no evidence.
            frame(1, 0x4, 1, &[0xbe, 0xbf]),
            // Bad HPACK (index 0), settings on a stream, bad SETTINGS value.
            frame(1, 0x4, 1, &[0x80]),
            frame(4, 0, 1, &[0, 3, 0, 0, 0, 100]),
            frame(4, 0, 0, &[0, 2, 0, 0, 0, 7]),
            // A lone PING, a lone DATA frame, a CONTINUATION first.
            frame(6, 0, 0, &[1; 8]),
            frame(0, 1, 1, b"hello"),
            frame(9, 4, 1, &[0x82]),
        ];
        for case in cases {
            assert_eq!(detect(&case, OUT), Detection::NoMatch, "{case:02x?}");
        }
    }

    #[test]
    fn other_protocols_are_not_http2() {
        let streams: [&[u8]; 14] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
            b"\x17\x03\x03\x00\x20",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
            b"+OK\r\n",
            b"\x4a\x00\x00\x00\x0a\x35\x2e\x37\x2e\x33\x33\x00",
            b"\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00",
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            b"\x00\x00\x00\x54\x00\x03\x00\x00user\x00",
            b"\x00\x00\x00\x4a\x00\x12\x00\x03\x00\x00\x00\x01",
            b"\x00\x1d\x12\x04\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00",
            b"AMQP\x00\x00\x09\x01",
            b"\x10\x1c\x00\x04MQTT\x04\x02\x00\x3c",
        ];
        for stream in streams {
            for direction in [OUT, IN] {
                assert_eq!(detect(stream, direction), Detection::NoMatch, "{stream:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn random_bytes_are_not_http2(bytes in proptest::collection::vec(any::<u8>(), 9..200)) {
            prop_assert!(!matches!(detect(&bytes, OUT), Detection::Match(_)));
        }

        #[test]
        fn random_header_blocks_are_not_http2(
            block in proptest::collection::vec(any::<u8>(), 1..60),
            stream in 0u32..100,
        ) {
            // Random HPACK bytes in a well-formed HEADERS frame: a match needs a valid head,
            // which random bytes practically never are. A match must at least be one.
            let bytes = frame(1, 0x4, stream, &block);
            if let Detection::Match(_) = detect(&bytes, OUT) {
                let mut facts = HeaderFacts::default();
                Decoder::unsynchronized()
                    .decode(&block, true, &mut |f| facts.add(f))
                    .expect("a match decodes");
                prop_assert!(!facts.malformed);
                prop_assert!(facts.method.is_some() != facts.status.is_some());
            }
        }
    }
}
