//! Protocol inference from the first bytes of a stream.
//!
//! A message starts at a syscall boundary, so inference looks at the start of a chunk (or of a
//! few contiguous chunks, when a start line is split across syscalls). Detectors are cheap
//! and look at the first line only; the parser validates the rest.

use crate::http1::{LineMatch, match_request_line, match_status_line};
use crate::{Direction, L7Protocol, Role};

/// What inference concluded about a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Inference {
    /// The application protocol.
    pub protocol: L7Protocol,
    /// The observing process's role.
    pub role: Role,
}

/// The outcome of looking at the start of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detection {
    /// A recognised message start.
    Match(Inference),
    /// The bytes are a prefix of a recognisable message start; more are needed to decide.
    NeedMore,
    /// No known protocol starts like this.
    NoMatch,
}

/// Looks at `bytes`, the start of a chunk travelling in `direction`.
///
/// HTTP/1 is recognised from a request line with a known method (`GET`, `HEAD`, `POST`,
/// `PUT`, `DELETE`, `OPTIONS`, `PATCH`, `CONNECT`, `TRACE`), a target and `HTTP/1.0` or
/// `HTTP/1.1`, or from a status line `HTTP/1.x NNN`. A request travelling in
/// [`Direction::Ingress`] makes the process a [`Role::Server`]; a response travelling in
/// `Ingress` makes it a [`Role::Client`].
pub fn detect(bytes: &[u8], direction: Direction) -> Detection {
    // HTTP/1 first (the most common), then the others; a protocol that wants more bytes
    // is remembered, but a later definite match wins.
    let detectors: [fn(&[u8], Direction) -> Detection; 12] = [
        detect_http1,
        crate::http2::detect,
        crate::redis::detect,
        crate::memcached::detect,
        crate::nats::detect,
        crate::mysql::detect,
        crate::postgres::detect,
        crate::kafka::detect,
        crate::mongodb::detect,
        crate::amqp::detect,
        crate::mqtt::detect,
        crate::dubbo::detect,
    ];
    let mut need_more = false;
    for detector in detectors {
        match detector(bytes, direction) {
            Detection::Match(inference) => return Detection::Match(inference),
            Detection::NeedMore => need_more = true,
            Detection::NoMatch => {}
        }
    }
    match crate::dns::detect(bytes, direction) {
        Detection::Match(inference) => Detection::Match(inference),
        _ if need_more => Detection::NeedMore,
        other => other,
    }
}

fn detect_http1(bytes: &[u8], direction: Direction) -> Detection {
    let http1 = |role| {
        Detection::Match(Inference {
            protocol: L7Protocol::Http1,
            role,
        })
    };
    match (match_request_line(bytes), match_status_line(bytes)) {
        (LineMatch::Complete, _) => http1(Role::from_request_direction(direction)),
        (_, LineMatch::Complete) => http1(Role::from_request_direction(direction.opposite())),
        (LineMatch::Prefix, _) | (_, LineMatch::Prefix) => Detection::NeedMore,
        (LineMatch::No, LineMatch::No) => Detection::NoMatch,
    }
}

/// [`detect`] reduced to a yes or no: the protocol and role if `payload` starts with a
/// complete, recognised message start.
pub fn infer(payload: &[u8], direction: Direction) -> Option<Inference> {
    match detect(payload, direction) {
        Detection::Match(inference) => Some(inference),
        Detection::NeedMore | Detection::NoMatch => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_direction() {
        let server = Inference {
            protocol: L7Protocol::Http1,
            role: Role::Server,
        };
        let client = Inference {
            protocol: L7Protocol::Http1,
            role: Role::Client,
        };
        let request = b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n";
        let response = b"HTTP/1.1 200 OK\r\n";
        assert_eq!(infer(request, Direction::Ingress), Some(server));
        assert_eq!(infer(request, Direction::Egress), Some(client));
        assert_eq!(infer(response, Direction::Ingress), Some(client));
        assert_eq!(infer(response, Direction::Egress), Some(server));
    }

    #[test]
    fn other_protocols_are_not_http() {
        let streams: [&[u8]; 6] = [
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
            b"+OK\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x00\x00\x00\x4a\x00\x00\x00\x00",
            b"SSH-2.0-OpenSSH_9.6\r\n",
        ];
        for stream in streams {
            assert_eq!(
                detect_http1(stream, Direction::Egress),
                Detection::NoMatch,
                "{stream:?}"
            );
        }
    }

    #[test]
    fn detection_dispatches_to_the_right_protocol() {
        let is = |bytes: &[u8], protocol| match detect(bytes, Direction::Egress) {
            Detection::Match(i) => i.protocol == protocol,
            _ => false,
        };
        assert!(is(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", L7Protocol::Http1));
        assert!(is(
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
            L7Protocol::Redis
        ));
        assert!(is(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", L7Protocol::Http2));
        // a TLS ClientHello and an SSH banner belong to no parser
        for other in [
            &b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"[..],
            b"SSH-2.0-OpenSSH_9.6\r\n",
        ] {
            assert!(
                !matches!(detect(other, Direction::Egress), Detection::Match(_)),
                "{other:?}"
            );
        }
    }

    #[test]
    fn split_start_lines_need_more() {
        assert_eq!(detect(b"GE", Direction::Egress), Detection::NeedMore);
        assert_eq!(detect(b"GET /a", Direction::Egress), Detection::NeedMore);
        assert_eq!(
            detect(b"HTTP/1.1 2", Direction::Egress),
            Detection::NeedMore
        );
        assert_eq!(detect(b"H", Direction::Egress), Detection::NeedMore);
        assert_eq!(infer(b"GET / HTTP/1.1", Direction::Egress), None);
    }
}
