//! NATS client protocol: a [`Codec`] for [`FramedSession`].
//!
//! A text protocol of CRLF-terminated control lines, some followed by a payload whose
//! length the line gives (<https://docs.nats.io/reference/reference-protocols/nats-protocol>):
//! the server sends `INFO`, `MSG`, `HMSG`, `PING`, `PONG`, `+OK` and `-ERR`; the client
//! sends `CONNECT`, `PUB`, `HPUB`, `SUB`, `UNSUB`, `PING` and `PONG`. Operation names are
//! case-insensitive.
//!
//! # Requests and responses
//!
//! Requests travel from the client. `PING` is answered by `PONG`. The server acknowledges
//! `CONNECT`, `PUB`, `HPUB`, `SUB` and `UNSUB` with `+OK` only when the client's `CONNECT`
//! asked for `"verbose": true`; so the codec remembers the flag: with it these wait for
//! their `+OK` (or `-ERR`), without it (the default of every client library) they are
//! one-way rows. Answers pair in order (FIFO). A `-ERR` answers the oldest waiting request
//! — when verbose is off, the one waiting is usually a `PING`, so an error about a publish
//! shows on the next `PING` row.
//!
//! The server's `INFO`, `MSG`/`HMSG` deliveries and `PING`s, and the client's `PONG`s, are
//! skipped (a [`FramedSession`] has one request direction): a subscriber's deliveries make
//! no rows. `INFO` gives the server name and version for the rows that follow.
//!
//! # Detection
//!
//! The server's `INFO {…}` with a `"server_id"` (the receiver is the client); the client's
//! `CONNECT {…}` with a `"verbose"`, `"lang"` or `"protocol"` option; or, mid-stream, a
//! well-formed `PUB`/`HPUB`/`SUB` (sent by a client) or `MSG`/`HMSG` (sent by a server)
//! control line ending in CRLF, whose payload ends in CRLF where captured. `PING`, `PONG`,
//! `+OK` and `-ERR` alone are never taken for NATS (Redis speaks them too).
//!
//! # Fields (DeepFlow's `mq/nats.rs`)
//!
//! | column | value |
//! |---|---|
//! | `request_type` | the operation: `CONNECT`, `PUB`, `HPUB`, `SUB`, `UNSUB`, `PING` |
//! | `request_domain` | `server_name` of the server's `INFO` |
//! | `version` | `version` of the server's `INFO` |
//! | `request_resource` | the subject (`PUB`, `HPUB`, `SUB`) |
//! | `endpoint` | the subject's first token (up to the first `.`) |
//! | `response_status` | `ok` for `+OK`/`PONG`; `-ERR` is `client_error`, or `server_error` for `Slow Consumer`, `Stale Connection` and `Maximum Connections Exceeded` |
//! | `response_exception` | the `-ERR` message without its quotes |
//!
//! Where flowmesh differs from DeepFlow, and why: DeepFlow logs every operation of either
//! side as its own row and pairs nothing but `PING`/`PONG` and `INFO`/`CONNECT`; flowmesh
//! rows are the client's operations, paired with `+OK`/`-ERR` when verbose, and sets a
//! status from `-ERR`, which DeepFlow does not read. Trace context in `HPUB` headers is not
//! read.

use crate::framed::FramedSession;
use crate::infer::{Detection, Inference};
use crate::session::{Codec, Decode, ProtocolSession, WireLen};
use crate::{ConversationConfig, Direction, L7Protocol, L7Record, ResponseStatus, Role};

/// The server's default `max_control_line`.
const MAX_CONTROL_LINE: usize = 4096;
/// Longest subject, server name, version or error message kept.
const MAX_TEXT: usize = 256;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_TEXT)]).into_owned()
}

/// The control line at the start of `buf` without its CRLF, and the length with it.
/// `Err(true)`: no CRLF yet; `Err(false)`: none within `MAX_CONTROL_LINE`, or a bare LF.
fn control_line(buf: &[u8]) -> Result<(&[u8], usize), bool> {
    let window = &buf[..buf.len().min(MAX_CONTROL_LINE)];
    match window.iter().position(|b| *b == b'\n') {
        Some(lf) if lf > 0 && window[lf - 1] == b'\r' => Ok((&window[..lf - 1], lf + 1)),
        Some(_) => Err(false),
        None => Err(buf.len() < MAX_CONTROL_LINE),
    }
}

/// The operations of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Info,
    Connect,
    Pub,
    Hpub,
    Sub,
    Unsub,
    Msg,
    Hmsg,
    Ping,
    Pong,
    Ok,
    Err,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Info => "INFO",
            Op::Connect => "CONNECT",
            Op::Pub => "PUB",
            Op::Hpub => "HPUB",
            Op::Sub => "SUB",
            Op::Unsub => "UNSUB",
            Op::Msg => "MSG",
            Op::Hmsg => "HMSG",
            Op::Ping => "PING",
            Op::Pong => "PONG",
            Op::Ok => "+OK",
            Op::Err => "-ERR",
        }
    }
}

/// A parsed control line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line<'a> {
    op: Op,
    /// The rest of the line after the operation (trimmed).
    rest: &'a [u8],
    /// The line's length with CRLF plus its payload and the payload's CRLF.
    total: u64,
    /// The subject of `PUB`, `HPUB`, `SUB`, `MSG`, `HMSG`.
    subject: &'a [u8],
}

fn is_space(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |e| e + 1);
    &bytes[start..end.max(start)]
}

fn number(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 18 || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// Whether a subject (or sid, queue, reply-to) token is well formed: printable, no spaces.
fn token_ok(token: &[u8]) -> bool {
    !token.is_empty() && token.iter().all(|b| (0x21..0x7f).contains(b))
}

/// Parses the control line at the start of `buf`. `Err(true)`: needs more bytes;
/// `Err(false)`: not a valid line.
fn parse(buf: &[u8]) -> Result<Line<'_>, bool> {
    let (line, line_len) = control_line(buf)?;
    let op_end = line.iter().position(is_space).unwrap_or(line.len());
    let op_name = &line[..op_end];
    let rest = trim(&line[op_end..]);
    let op = [
        Op::Info,
        Op::Connect,
        Op::Pub,
        Op::Hpub,
        Op::Sub,
        Op::Unsub,
        Op::Msg,
        Op::Hmsg,
        Op::Ping,
        Op::Pong,
        Op::Ok,
        Op::Err,
    ]
    .into_iter()
    .find(|op| op.name().as_bytes().eq_ignore_ascii_case(op_name))
    .ok_or(false)?;
    let tokens: Vec<&[u8]> = rest
        .split(is_space)
        .filter(|t| !t.is_empty())
        .take(6)
        .collect();
    let mut subject: &[u8] = &[];
    // payload bytes after the line, from the last token (the total for HPUB/HMSG)
    let payload = match (op, tokens.len()) {
        (Op::Pub, 2 | 3) | (Op::Hpub, 3 | 4) | (Op::Msg, 3 | 4) | (Op::Hmsg, 4 | 5) => {
            subject = tokens[0];
            if !tokens[..tokens.len() - 1].iter().all(|t| token_ok(t)) {
                return Err(false);
            }
            let total = number(tokens[tokens.len() - 1]).ok_or(false)?;
            if matches!(op, Op::Hpub | Op::Hmsg) {
                let headers = number(tokens[tokens.len() - 2]).ok_or(false)?;
                if headers > total {
                    return Err(false);
                }
            }
            Some(total)
        }
        (Op::Sub, 2 | 3) => {
            subject = tokens[0];
            if !tokens.iter().all(|t| token_ok(t)) {
                return Err(false);
            }
            None
        }
        (Op::Unsub, 1) | (Op::Unsub, 2) => {
            if !token_ok(tokens[0]) || tokens.get(1).is_some_and(|t| number(t).is_none()) {
                return Err(false);
            }
            None
        }
        (Op::Info | Op::Connect, _) => {
            if rest.first() != Some(&b'{') {
                return Err(false);
            }
            None
        }
        (Op::Ping | Op::Pong | Op::Ok, 0) => None,
        (Op::Err, _) => None,
        _ => return Err(false),
    };
    let total = match payload {
        Some(n) => (line_len as u64)
            .checked_add(n)
            .and_then(|t| t.checked_add(2))
            .ok_or(false)?,
        None => line_len as u64,
    };
    // where captured, the payload ends in CRLF
    if let Some(n) = payload {
        let end = line_len as u64 + n;
        if let (Ok(cr), Ok(lf)) = (usize::try_from(end), usize::try_from(end + 1))
            && let (Some(a), Some(b)) = (buf.get(cr), buf.get(lf))
            && (*a, *b) != (b'\r', b'\n')
        {
            return Err(false);
        }
    }
    Ok(Line {
        op,
        rest,
        total,
        subject,
    })
}

/// The value of a JSON string option in an `INFO`/`CONNECT` line (no escapes decoded).
fn json_string<'a>(json: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let value = json_value(json, key)?;
    let value = value.strip_prefix(b"\"")?;
    let end = value.iter().position(|b| *b == b'"')?;
    Some(&value[..end])
}

/// The bytes after `"key":` (and spaces) in a JSON object line.
fn json_value<'a>(json: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let needle = format!("\"{key}\"");
    let at = json
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?;
    let rest = trim(&json[at + needle.len()..]);
    Some(trim(rest.strip_prefix(b":")?))
}

/// A decoded client operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NatsRequest {
    op: &'static str,
    subject: String,
    expects_response: bool,
}

/// A decoded answer: `+OK`, `PONG` or `-ERR` with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NatsResponse {
    error: Option<String>,
}

/// The NATS codec: the client's `verbose` option and what the server's `INFO` said.
#[derive(Debug, Default)]
pub(crate) struct NatsCodec {
    verbose: bool,
    server_name: String,
    server_version: String,
}

impl Codec for NatsCodec {
    type Request = NatsRequest;
    type Response = NatsResponse;

    fn protocol(&self) -> L7Protocol {
        L7Protocol::Nats
    }

    fn decode_request(&mut self, buf: &[u8]) -> Decode<NatsRequest> {
        let line = match parse(buf) {
            Ok(line) => line,
            Err(true) => return Decode::NeedMore,
            Err(false) => return Decode::Invalid,
        };
        let len = WireLen::Exact(line.total);
        let acknowledged = match line.op {
            Op::Connect => {
                self.verbose =
                    json_value(line.rest, "verbose").is_some_and(|v| v.starts_with(b"true"));
                self.verbose
            }
            Op::Pub | Op::Hpub | Op::Sub | Op::Unsub => self.verbose,
            Op::Ping => true,
            Op::Pong => return Decode::Skip { len },
            _ => return Decode::Invalid,
        };
        Decode::Message {
            len,
            msg: NatsRequest {
                op: line.op.name(),
                subject: text(line.subject),
                expects_response: acknowledged,
            },
        }
    }

    fn decode_response(
        &mut self,
        buf: &[u8],
        _pending: Option<&NatsRequest>,
    ) -> Decode<NatsResponse> {
        let line = match parse(buf) {
            Ok(line) => line,
            Err(true) => return Decode::NeedMore,
            Err(false) => return Decode::Invalid,
        };
        let len = WireLen::Exact(line.total);
        let error = match line.op {
            Op::Info => {
                if let Some(name) = json_string(line.rest, "server_name") {
                    self.server_name = text(name);
                }
                if let Some(version) = json_string(line.rest, "version") {
                    self.server_version = text(version);
                }
                return Decode::Skip { len };
            }
            Op::Msg | Op::Hmsg | Op::Ping => return Decode::Skip { len },
            Op::Ok | Op::Pong => None,
            Op::Err => {
                let message = line.rest;
                let message = message
                    .strip_prefix(b"'")
                    .and_then(|m| m.strip_suffix(b"'"))
                    .unwrap_or(message);
                Some(text(message))
            }
            _ => return Decode::Invalid,
        };
        Decode::Message {
            len,
            msg: NatsResponse { error },
        }
    }

    fn expects_response(&self, request: &NatsRequest) -> bool {
        request.expects_response
    }

    fn fill(&self, request: &NatsRequest, response: Option<&NatsResponse>, record: &mut L7Record) {
        record.request_type = request.op.to_string();
        record.request_domain = self.server_name.clone();
        record.version = self.server_version.clone();
        record.request_resource = request.subject.clone();
        record.endpoint = request
            .subject
            .split('.')
            .next()
            .unwrap_or_default()
            .to_string();
        let Some(response) = response else {
            return;
        };
        match &response.error {
            None => record.response_status = ResponseStatus::Ok,
            Some(message) => {
                let lower = message.to_ascii_lowercase();
                let server_side = [
                    "slow consumer",
                    "stale connection",
                    "maximum connections exceeded",
                ]
                .iter()
                .any(|s| lower.contains(s));
                record.response_status = if server_side {
                    ResponseStatus::ServerError
                } else {
                    ResponseStatus::ClientError
                };
                record.response_exception = message.clone();
            }
        }
    }
}

/// Recognises a NATS control line at the start of a chunk (see the module docs).
pub(crate) fn detect(bytes: &[u8], direction: Direction) -> Detection {
    let matched = |client: bool| {
        Detection::Match(Inference {
            protocol: L7Protocol::Nats,
            role: Role::from_request_direction(if client {
                direction
            } else {
                direction.opposite()
            }),
        })
    };
    let line = match parse(bytes) {
        Ok(line) => line,
        Err(true) => {
            // a prefix of an INFO or CONNECT line
            let head = &bytes[..bytes.len().min(9)];
            let prefix = |word: &[u8]| {
                let n = head.len().min(word.len());
                head[..n] == word[..n]
            };
            return if !bytes.is_empty() && (prefix(b"INFO {") || prefix(b"CONNECT {")) {
                Detection::NeedMore
            } else {
                Detection::NoMatch
            };
        }
        Err(false) => return Detection::NoMatch,
    };
    // clients and servers write operations in upper case
    if !bytes.starts_with(line.op.name().as_bytes()) {
        return Detection::NoMatch;
    }
    match line.op {
        Op::Info if json_value(line.rest, "server_id").is_some() => matched(false),
        Op::Connect
            if ["verbose", "lang", "protocol"]
                .iter()
                .any(|k| json_value(line.rest, k).is_some()) =>
        {
            matched(true)
        }
        Op::Pub | Op::Hpub | Op::Sub => matched(true),
        Op::Msg | Op::Hmsg => matched(false),
        _ => Detection::NoMatch,
    }
}

/// The session of a socket `detect` recognised.
pub(crate) fn new_session(role: Role, config: &ConversationConfig) -> Box<dyn ProtocolSession> {
    Box::new(FramedSession::new(NatsCodec::default(), role, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_nats(bytes: &[u8], direction: Direction) -> Option<Role> {
        match detect(bytes, direction) {
            Detection::Match(i) if i.protocol == L7Protocol::Nats => Some(i.role),
            _ => None,
        }
    }

    #[test]
    fn detects_info_connect_and_operations() {
        let info = b"INFO {\"server_id\":\"N1\",\"version\":\"2.10.0\"}\r\n";
        assert_eq!(is_nats(info, Direction::Ingress), Some(Role::Client));
        assert_eq!(is_nats(info, Direction::Egress), Some(Role::Server));
        let connect = b"CONNECT {\"verbose\":false,\"lang\":\"go\"}\r\nPING\r\n";
        assert_eq!(is_nats(connect, Direction::Egress), Some(Role::Client));
        assert_eq!(
            is_nats(b"PUB a.b 5\r\nhello\r\n", Direction::Egress),
            Some(Role::Client)
        );
        assert_eq!(
            is_nats(b"SUB a.* q 1\r\n", Direction::Ingress),
            Some(Role::Server)
        );
        assert_eq!(
            is_nats(b"MSG a.b 1 2\r\nhi\r\n", Direction::Ingress),
            Some(Role::Client)
        );
        for n in 1..9 {
            assert_eq!(
                detect(&info[..n], Direction::Ingress),
                Detection::NeedMore,
                "{n}"
            );
        }
    }

    #[test]
    fn detection_rejects_everything_else() {
        let others: [&[u8]; 20] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"PING\r\n",
            b"PONG\r\n",
            b"+OK\r\n",
            b"-ERR unknown command\r\n",
            b"*1\r\n$4\r\nPING\r\n",
            b"+PONG\r\n",
            b"AMQP\x00\x00\x09\x01",
            b"INFO {\"x\":1}\r\n",
            b"INFO\r\n",
            b"info {\"server_id\":\"N1\"}\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            b"PUB a.b 5\r\nhello!!\r\n",
            b"PUB a.b five\r\nhello\r\n",
            b"PUB a.b 5",
            b"SUB\r\n",
            b"get key\r\n",
            b"\xda\xbb\xc2\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x10",
        ];
        for bytes in others {
            assert_eq!(is_nats(bytes, Direction::Egress), None, "{bytes:?}");
        }
        let mut state = 0x0dd_b1a5_e5ba_da55u64;
        for _ in 0..20_000 {
            let mut bytes = [0u8; 40];
            for b in &mut bytes {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            assert_eq!(is_nats(&bytes, Direction::Egress), None);
            bytes[..4].copy_from_slice(b"PUB ");
            assert_eq!(is_nats(&bytes, Direction::Egress), None, "{bytes:?}");
        }
    }

    #[test]
    fn payload_lengths_and_verbose_acks() {
        let mut codec = NatsCodec::default();
        let Decode::Message { len, msg } = codec.decode_request(b"PUB a 3\r\nabc\r\n") else {
            panic!("not decoded");
        };
        assert_eq!(len, WireLen::Exact(14));
        assert!(!codec.expects_response(&msg));
        // a payload that is not captured whole still gives the length
        assert_eq!(
            codec.decode_request(b"HPUB a b 12 1000\r\nNATS/1.0\r\n"),
            Decode::Message {
                len: WireLen::Exact(18 + 1000 + 2),
                msg: NatsRequest {
                    op: "HPUB",
                    subject: "a".into(),
                    expects_response: false
                }
            }
        );
        assert_eq!(codec.decode_request(b"PUB a 3\r"), Decode::NeedMore);
        assert_eq!(codec.decode_request(b"PUB a 3\nabc\r\n"), Decode::Invalid);
        assert_eq!(
            codec.decode_request(b"PUB a 99999999999999999999\r\n"),
            Decode::Invalid
        );
        assert_eq!(codec.decode_request(&[b'x'; 5000]), Decode::Invalid);
        assert!(matches!(
            codec.decode_request(b"CONNECT {\"verbose\": true}\r\n"),
            Decode::Message { msg, .. } if msg.expects_response
        ));
        assert!(matches!(
            codec.decode_request(b"sub a 1\r\n"),
            Decode::Message { msg, .. } if msg.expects_response && msg.op == "SUB"
        ));
        assert!(matches!(
            codec.decode_request(b"PONG\r\n"),
            Decode::Skip { .. }
        ));
        assert!(matches!(
            codec.decode_response(b"-ERR 'Authorization Violation'\r\n", None),
            Decode::Message { msg, .. } if msg.error.as_deref() == Some("Authorization Violation")
        ));
    }
}
