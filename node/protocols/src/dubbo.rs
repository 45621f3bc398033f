//! Apache Dubbo 2 protocol (`dubbo://`): a [`Codec`] for [`FramedSession`].
//!
//! Every message starts with a 16-byte header (Dubbo 2 protocol specification,
//! <https://dubbo.apache.org/en/docs/concepts/rpc-protocol/#protocol-spec>): magic
//! `0xdabb`, a flag byte — bit 7 request, bit 6 two-way, bit 5 event, bits 0–4 the
//! serialization id — a status byte (responses), the request id (`u64`, pairing is by it)
//! and the body length (`i32`). A request body serialized with Hessian 2 starts with four
//! strings: the Dubbo version, the service path, the service version and the method name;
//! only those are decoded.
//!
//! Events (heartbeats) are keep-alives and are skipped. A request without the two-way bit
//! expects no response and becomes a row at once.
//!
//! # Detection
//!
//! A request header (DeepFlow does not recognise Dubbo from responses either): the magic,
//! the request bit, status 0, a known serialization id, a body length of at most 64 MiB, and
//! for a Hessian 2 call, a body that starts with a string. Fewer than 16 bytes that start
//! with the magic are `NeedMore`.
//!
//! # Fields (DeepFlow's `rpc/dubbo.rs`)
//!
//! | column | value |
//! |---|---|
//! | `request_type` | the method name |
//! | `request_resource` | the service path (interface) |
//! | `endpoint` | `service/method` |
//! | `version` | the Dubbo version of the request body |
//! | `response_code` | the status byte |
//! | `response_status` | 20 `ok`; 30, 40, 90 `client_error`; 31, 50, 60, 70, 80, 100 `server_error`; others `ok` |
//! | `response_exception` | for an error status, the error message the body carries (else the status name); for status 20 with an exception result, the exception's class |
//!
//! Where flowmesh differs from DeepFlow, and why:
//! - A status-20 response whose result is an exception (`RESPONSE_WITH_EXCEPTION`, with or
//!   without attachments) is `server_error`: the provider's method threw. DeepFlow reports
//!   it as `ok`.
//! - DeepFlow logs heartbeat events (with an `event` attribute); here they are skipped.
//! - Only Hessian 2 bodies (serialization 2) are decoded; DeepFlow reads every body as
//!   Hessian. Other serializations give rows without method and service.
//! - Trace ids in attachments (DeepFlow's `sw8`, `EagleEye-TraceID` search) are not read.

use crate::framed::FramedSession;
use crate::infer::{Detection, Inference};
use crate::session::{Codec, Decode, ProtocolSession, WireLen};
use crate::text::lossy;
use crate::{ConversationConfig, Direction, L7Protocol, L7Record, ResponseStatus, Role};

const MAGIC: [u8; 2] = [0xda, 0xbb];
const HEADER_LEN: usize = 16;
const FLAG_REQUEST: u8 = 0x80;
const FLAG_TWO_WAY: u8 = 0x40;
const FLAG_EVENT: u8 = 0x20;
const HESSIAN2: u8 = 2;
/// Largest body detection accepts (Dubbo's default `payload` limit is 8 MiB).
const DETECT_MAX_BODY: i32 = 64 << 20;
/// Longest string kept.
const MAX_TEXT: usize = 256;

/// Serialization ids Dubbo defines (`org.apache.dubbo.common.serialize.Constants`).
fn known_serialization(id: u8) -> bool {
    matches!(
        id,
        2 | 3 | 4 | 6 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 21 | 22 | 23 | 25 | 31
    )
}

/// The name of a response status (`org.apache.dubbo.remoting.exchange.Response`).
fn status_name(status: u8) -> Option<&'static str> {
    Some(match status {
        20 => "OK",
        30 => "CLIENT_TIMEOUT",
        31 => "SERVER_TIMEOUT",
        35 => "CHANNEL_INACTIVE",
        40 => "BAD_REQUEST",
        50 => "BAD_RESPONSE",
        60 => "SERVICE_NOT_FOUND",
        70 => "SERVICE_ERROR",
        80 => "SERVER_ERROR",
        90 => "CLIENT_ERROR",
        100 => "SERVER_THREADPOOL_EXHAUSTED_ERROR",
        _ => return None,
    })
}

/// A response status's class, as DeepFlow classifies it.
fn status_class(status: u8) -> ResponseStatus {
    match status {
        30 | 40 | 90 => ResponseStatus::ClientError,
        31 | 50 | 60 | 70 | 80 | 100 => ResponseStatus::ServerError,
        _ => ResponseStatus::Ok,
    }
}

/// The fixed header.
#[derive(Debug, Clone, Copy)]
struct Header {
    flags: u8,
    status: u8,
    request_id: u64,
    body_len: i32,
}

fn header(buf: &[u8]) -> Option<Header> {
    let b = buf.get(..HEADER_LEN)?;
    if b[..2] != MAGIC {
        return None;
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&b[4..12]);
    Some(Header {
        flags: b[2],
        status: b[3],
        request_id: u64::from_be_bytes(id),
        body_len: i32::from_be_bytes([b[12], b[13], b[14], b[15]]),
    })
}

/// A Hessian 2 string at `at` (Hessian 2.0 Serialization Protocol, §4.12 "string":
/// `x00-x1f` short, `x30-x33` medium, `S` final chunk, `R` non-final chunk; lengths count
/// UTF-16 units, written as UTF-8). `N` (null) reads as an empty string. Returns the
/// string's bytes (truncated to `MAX_TEXT`) and the position after it; `Err(true)` when it
/// runs past `buf`, `Err(false)` when `at` holds no string.
fn hessian_string(buf: &[u8], mut at: usize) -> Result<(Vec<u8>, usize), bool> {
    let mut out = Vec::new();
    loop {
        let tag = *buf.get(at).ok_or(true)?;
        let (chars, start, last) = match tag {
            0x00..=0x1f => (usize::from(tag), at + 1, true),
            0x30..=0x33 => {
                let low = *buf.get(at + 1).ok_or(true)?;
                (
                    (usize::from(tag - 0x30) << 8) | usize::from(low),
                    at + 2,
                    true,
                )
            }
            b'S' | b'R' => {
                let b = buf.get(at + 1..at + 3).ok_or(true)?;
                (
                    usize::from(u16::from_be_bytes([b[0], b[1]])),
                    at + 3,
                    tag == b'S',
                )
            }
            b'N' if out.is_empty() => return Ok((out, at + 1)),
            _ => return Err(false),
        };
        // walk `chars` UTF-8 sequences (one per UTF-16 unit; 4-byte forms are not used)
        let mut pos = start;
        for _ in 0..chars {
            let lead = *buf.get(pos).ok_or(true)?;
            let width = match lead {
                0x00..=0x7f => 1,
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                _ => return Err(false),
            };
            let bytes = buf.get(pos..pos + width).ok_or(true)?;
            if out.len() + width <= MAX_TEXT {
                out.extend_from_slice(bytes);
            }
            pos += width;
        }
        at = pos;
        if last {
            return Ok((out, at));
        }
    }
}

fn is_string_tag(tag: u8) -> bool {
    matches!(tag, 0x00..=0x1f | 0x30..=0x33 | b'S' | b'R')
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DubboRequest {
    request_id: u64,
    two_way: bool,
    dubbo_version: String,
    service: String,
    method: String,
}

/// A decoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DubboResponse {
    request_id: u64,
    status: u8,
    /// The error message of an error status, or the class of a thrown exception.
    exception: Option<String>,
}

/// The Dubbo codec (stateless).
#[derive(Debug, Default)]
pub(crate) struct DubboCodec;

/// The four leading strings of a Hessian 2 request body at `at`: `Err(true)` when they run
/// past `buf`.
fn call_strings(buf: &[u8], at: usize) -> Result<[String; 4], bool> {
    let mut pos = at;
    let mut strings: [String; 4] = Default::default();
    for s in &mut strings {
        let (bytes, next) = hessian_string(buf, pos)?;
        *s = lossy(&bytes);
        pos = next;
    }
    Ok(strings)
}

impl Codec for DubboCodec {
    type Request = DubboRequest;
    type Response = DubboResponse;

    fn protocol(&self) -> L7Protocol {
        L7Protocol::Dubbo
    }

    fn decode_request(&mut self, buf: &[u8]) -> Decode<DubboRequest> {
        let Some(h) = header(buf) else {
            return if buf.len() < HEADER_LEN && MAGIC.starts_with(&buf[..buf.len().min(2)]) {
                Decode::NeedMore
            } else {
                Decode::Invalid
            };
        };
        if h.body_len < 0 || h.flags & FLAG_REQUEST == 0 {
            return Decode::Invalid;
        }
        let total = HEADER_LEN + h.body_len as usize;
        let len = WireLen::Exact(total as u64);
        if h.flags & FLAG_EVENT != 0 {
            return Decode::Skip { len };
        }
        let mut request = DubboRequest {
            request_id: h.request_id,
            two_way: h.flags & FLAG_TWO_WAY != 0,
            dubbo_version: String::new(),
            service: String::new(),
            method: String::new(),
        };
        if h.flags & 0x1f == HESSIAN2 {
            let body = &buf[..buf.len().min(total)];
            match call_strings(body, HEADER_LEN) {
                Ok([version, service, _, method]) => {
                    request.dubbo_version = version;
                    request.service = service;
                    request.method = method;
                }
                // the strings continue in bytes still to come
                Err(true) if buf.len() < total => return Decode::NeedMore,
                // a body that does not start like a call: keep the header's facts
                Err(_) => {}
            }
        }
        Decode::Message { len, msg: request }
    }

    fn decode_response(
        &mut self,
        buf: &[u8],
        _pending: Option<&DubboRequest>,
    ) -> Decode<DubboResponse> {
        let Some(h) = header(buf) else {
            return if buf.len() < HEADER_LEN && MAGIC.starts_with(&buf[..buf.len().min(2)]) {
                Decode::NeedMore
            } else {
                Decode::Invalid
            };
        };
        if h.body_len < 0 || h.flags & FLAG_REQUEST != 0 {
            return Decode::Invalid;
        }
        let total = HEADER_LEN + h.body_len as usize;
        let len = WireLen::Exact(total as u64);
        if h.flags & FLAG_EVENT != 0 {
            return Decode::Skip { len };
        }
        let body = &buf[..buf.len().min(total)];
        let hessian = h.flags & 0x1f == HESSIAN2;
        let exception = if h.status != 20 {
            // the body is the error message
            let message = if hessian {
                match hessian_string(body, HEADER_LEN) {
                    Ok((bytes, _)) if !bytes.is_empty() => Some(lossy(&bytes)),
                    Err(true) if buf.len() < total => return Decode::NeedMore,
                    _ => None,
                }
            } else {
                None
            };
            message.or_else(|| status_name(h.status).map(str::to_string))
        } else if hessian {
            // the result type: a Hessian compact int, 0 (exception) or 3 (exception with
            // attachments), then the exception object: class definition `C` + its name
            match body.get(HEADER_LEN) {
                Some(0x90 | 0x93) => match body.get(HEADER_LEN + 1) {
                    Some(b'C') => match hessian_string(body, HEADER_LEN + 2) {
                        Ok((class, _)) if !class.is_empty() => Some(lossy(&class)),
                        Err(true) if buf.len() < total => return Decode::NeedMore,
                        _ => Some("exception".to_string()),
                    },
                    None if buf.len() < total => return Decode::NeedMore,
                    _ => Some("exception".to_string()),
                },
                None if buf.len() < total => return Decode::NeedMore,
                _ => None,
            }
        } else {
            None
        };
        Decode::Message {
            len,
            msg: DubboResponse {
                request_id: h.request_id,
                status: h.status,
                exception,
            },
        }
    }

    fn request_key(&self, request: &DubboRequest) -> Option<u64> {
        Some(request.request_id)
    }

    fn response_key(&self, response: &DubboResponse) -> Option<u64> {
        Some(response.request_id)
    }

    fn expects_response(&self, request: &DubboRequest) -> bool {
        request.two_way
    }

    fn fill(
        &self,
        request: &DubboRequest,
        response: Option<&DubboResponse>,
        record: &mut L7Record,
    ) {
        record.request_type = request.method.clone();
        record.request_resource = request.service.clone();
        record.version = request.dubbo_version.clone();
        if !request.service.is_empty() || !request.method.is_empty() {
            record.endpoint = format!("{}/{}", request.service, request.method);
        }
        let Some(response) = response else {
            return;
        };
        record.response_code = Some(u16::from(response.status));
        record.response_status = status_class(response.status);
        if let Some(exception) = &response.exception {
            if record.response_status == ResponseStatus::Ok {
                // status 20 with a thrown exception, or an unknown status
                record.response_status = ResponseStatus::ServerError;
            }
            record.response_exception = exception.clone();
        }
    }
}

/// Recognises a Dubbo request header at the start of a chunk (see the module docs).
pub(crate) fn detect(bytes: &[u8], direction: Direction) -> Detection {
    let Some(h) = header(bytes) else {
        return if !bytes.is_empty()
            && bytes.len() < HEADER_LEN
            && MAGIC.starts_with(&bytes[..bytes.len().min(2)])
        {
            Detection::NeedMore
        } else {
            Detection::NoMatch
        };
    };
    let serialization = h.flags & 0x1f;
    if h.flags & FLAG_REQUEST == 0
        || h.status != 0
        || !known_serialization(serialization)
        || !(0..=DETECT_MAX_BODY).contains(&h.body_len)
    {
        return Detection::NoMatch;
    }
    // a Hessian 2 call starts with the Dubbo version string
    if serialization == HESSIAN2
        && h.flags & FLAG_EVENT == 0
        && h.body_len > 0
        && bytes
            .get(HEADER_LEN)
            .is_some_and(|tag| !is_string_tag(*tag))
    {
        return Detection::NoMatch;
    }
    Detection::Match(Inference {
        protocol: L7Protocol::Dubbo,
        role: Role::from_request_direction(direction),
    })
}

/// The session of a socket `detect` recognised.
pub(crate) fn new_session(role: Role, config: &ConversationConfig) -> Box<dyn ProtocolSession> {
    Box::new(FramedSession::new(DubboCodec, role, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flags: u8, status: u8, id: u64, body: &[u8]) -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&[flags, status]);
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&(body.len() as i32).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn call_body() -> Vec<u8> {
        let mut body = Vec::new();
        for s in ["2.0.2", "com.example.Greeter", "1.0", "hi"] {
            body.push(s.len() as u8);
            body.extend_from_slice(s.as_bytes());
        }
        body.extend_from_slice(b"\x00H\x04path\x13com.example.GreeterZ");
        body
    }

    fn is_dubbo(bytes: &[u8], direction: Direction) -> Option<Role> {
        match detect(bytes, direction) {
            Detection::Match(i) if i.protocol == L7Protocol::Dubbo => Some(i.role),
            _ => None,
        }
    }

    #[test]
    fn detects_requests_only() {
        let call = frame(0xc2, 0, 1, &call_body());
        assert_eq!(is_dubbo(&call, Direction::Egress), Some(Role::Client));
        assert_eq!(is_dubbo(&call, Direction::Ingress), Some(Role::Server));
        let heartbeat = frame(0xe2, 0, 2, b"N");
        assert_eq!(is_dubbo(&heartbeat, Direction::Egress), Some(Role::Client));
        // a response is not used for detection
        assert_eq!(
            is_dubbo(&frame(0x02, 20, 1, b"\x91\x02ok"), Direction::Ingress),
            None
        );
        for n in 1..HEADER_LEN {
            assert_eq!(
                detect(&call[..n], Direction::Egress),
                Detection::NeedMore,
                "{n}"
            );
        }
    }

    #[test]
    fn detection_rejects_everything_else() {
        let call = frame(0xc2, 0, 1, &call_body());
        let mut bad_serialization = call.clone();
        bad_serialization[2] = 0xc0 | 30;
        let mut bad_status = call.clone();
        bad_status[3] = 20;
        let mut negative_len = call.clone();
        negative_len[12] = 0xff;
        let mut not_a_call = call.clone();
        not_a_call[16] = b'H';
        let others: [&[u8]; 8] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\x00\x00\x00",
            b"*1\r\n$4\r\nPING\r\n",
            b"AMQP\x00\x00\x09\x01",
            b"INFO {\"server_id\":\"x\"}\r\n",
            b"\x00\x00\x00\x30\x00\x12\x00\x03\x00\x00\x00\x01\x00\x10flowmesh-fixture",
            b"\xda\xba\xc2\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x10",
        ];
        for bytes in others.iter().copied().chain([
            &bad_serialization[..],
            &bad_status[..],
            &negative_len[..],
            &not_a_call[..],
        ]) {
            assert_eq!(is_dubbo(bytes, Direction::Egress), None, "{bytes:?}");
        }
        let mut state = 0xfeed_face_cafe_beefu64;
        for _ in 0..20_000 {
            let mut bytes = [0u8; 40];
            for b in &mut bytes {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            assert_eq!(is_dubbo(&bytes, Direction::Egress), None);
        }
    }

    #[test]
    fn hessian_strings() {
        assert_eq!(hessian_string(b"\x03abc", 0), Ok((b"abc".to_vec(), 4)));
        assert_eq!(hessian_string(b"N", 0), Ok((Vec::new(), 1)));
        // two UTF-16 units written as UTF-8: "é" and "中"
        let s = "é中".as_bytes();
        let mut b = vec![0x02];
        b.extend_from_slice(s);
        assert_eq!(hessian_string(&b, 0), Ok((s.to_vec(), 1 + s.len())));
        // a non-final chunk then a final one
        assert_eq!(
            hessian_string(b"R\x00\x02abS\x00\x01c", 0),
            Ok((b"abc".to_vec(), 9))
        );
        assert_eq!(hessian_string(b"\x05ab", 0), Err(true));
        assert_eq!(hessian_string(b"\x90", 0), Err(false));
        let mut long = vec![b'S', 0x0b, 0xb8];
        long.extend(std::iter::repeat_n(b'x', 3000));
        let (kept, end) = hessian_string(&long, 0).unwrap_or_default();
        assert_eq!((kept.len(), end), (MAX_TEXT, 3003));
    }

    #[test]
    fn decodes_calls_and_responses() {
        let mut codec = DubboCodec;
        let call = frame(0xc2, 0, 9, &call_body());
        for n in 0..HEADER_LEN + 1 + 5 + 1 + 19 + 1 + 3 + 1 + 2 {
            assert_eq!(codec.decode_request(&call[..n]), Decode::NeedMore, "{n}");
        }
        let Decode::Message { len, msg } = codec.decode_request(&call) else {
            panic!("not decoded");
        };
        assert_eq!(len, WireLen::Exact(call.len() as u64));
        assert_eq!(
            (msg.service.as_str(), msg.method.as_str()),
            ("com.example.Greeter", "hi")
        );
        assert!(codec.expects_response(&msg));
        assert!(matches!(
            codec.decode_request(&frame(0xe2, 0, 2, b"N")),
            Decode::Skip { .. }
        ));
        assert_eq!(
            codec.decode_request(&frame(0x02, 20, 2, b"N")),
            Decode::Invalid
        );
        let Decode::Message { msg: resp, .. } =
            codec.decode_response(&frame(0x02, 70, 9, b"\x04boom"), Some(&msg))
        else {
            panic!("not decoded");
        };
        assert_eq!(codec.response_key(&resp), codec.request_key(&msg));
        assert_eq!(resp.exception.as_deref(), Some("boom"));
        // an error status whose body is not a string: the status name
        let Decode::Message { msg: resp, .. } =
            codec.decode_response(&frame(0x02, 80, 9, b"\x91"), None)
        else {
            panic!("not decoded");
        };
        assert_eq!(resp.exception.as_deref(), Some("SERVER_ERROR"));
    }
}
