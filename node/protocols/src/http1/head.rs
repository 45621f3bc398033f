//! HTTP/1 message heads: parsing with `httparse` and extraction of the fields rows need.

use crate::text::lossy_trimmed;
use std::mem::MaybeUninit;

use super::MessageKind;
use super::start_line::{LineMatch, match_request_line, match_status_line};
use crate::error::ParseError;
use crate::trace_context::{RequestIdHeader, TraceContext, TraceHeaders};

/// Most header lines a head may carry; more is a parse error.
pub const MAX_HEADERS: usize = 128;

/// A request method this crate recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// `PATCH`
    Patch,
    /// `CONNECT`
    Connect,
    /// `TRACE`
    Trace,
}

impl Method {
    /// Every recognised method.
    pub const ALL: [Method; 9] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Options,
        Method::Patch,
        Method::Connect,
        Method::Trace,
    ];

    /// The method as it appears on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Connect => "CONNECT",
            Method::Trace => "TRACE",
        }
    }

    /// The method spelled exactly (case-sensitively) as `token`, if recognised.
    pub fn from_token(token: &[u8]) -> Option<Self> {
        Method::ALL
            .into_iter()
            .find(|method| method.as_str().as_bytes() == token)
    }
}

/// An HTTP/1 protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

impl Version {
    /// `"1.0"` or `"1.1"`, the `version` column.
    pub fn as_str(&self) -> &'static str {
        match self {
            Version::Http10 => "1.0",
            Version::Http11 => "1.1",
        }
    }

    fn from_minor(minor: Option<u8>) -> Option<Self> {
        match minor {
            Some(0) => Some(Version::Http10),
            Some(1) => Some(Version::Http11),
            _ => None,
        }
    }
}

/// How the body of a message is delimited, as its head declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// The fields of a request head that rows and framing need.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestHead {
    /// Request method.
    pub method: Method,
    /// Protocol version.
    pub version: Version,
    /// Request-target as sent.
    pub target: String,
    /// `Host` header.
    pub host: Option<String>,
    /// `X-Request-ID` header.
    pub x_request_id: Option<String>,
    /// The trace context of the first valid propagation header (crate::trace_context).
    pub trace: Option<TraceContext>,
    /// Bytes of the head, start line to the empty line included.
    pub head_len: usize,
    /// How the body is delimited.
    pub framing: BodyFraming,
}

/// The fields of a response head that rows and framing need.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseHead {
    /// Protocol version.
    pub version: Version,
    /// Status code, three digits (100..=999).
    pub code: u16,
    /// Reason phrase, lossily decoded and trimmed.
    pub reason: String,
    /// `X-Request-ID` header.
    pub x_request_id: Option<String>,
    /// The trace context of the first valid propagation header (crate::trace_context).
    pub trace: Option<TraceContext>,
    /// Bytes of the head, start line to the empty line included.
    pub head_len: usize,
    /// How the body is delimited, from the head alone. The request may override it: the
    /// response to `HEAD` has no body, a 2xx to `CONNECT` starts a tunnel.
    pub framing: BodyFraming,
}

impl ResponseHead {
    /// A 1xx response other than `101 Switching Protocols`: it precedes the final response.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.code) && self.code != 101
    }
}

/// A parsed message head.
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    /// A request head.
    Request(RequestHead),
    /// A response head.
    Response(ResponseHead),
}

impl Head {
    /// Bytes of the head on the wire.
    pub fn head_len(&self) -> usize {
        match self {
            Head::Request(head) => head.head_len,
            Head::Response(head) => head.head_len,
        }
    }

    /// How the body is delimited, from the head alone.
    pub fn framing(&self) -> BodyFraming {
        match self {
            Head::Request(head) => head.framing,
            Head::Response(head) => head.framing,
        }
    }
}

/// Result of trying to parse a head from the bytes seen so far.
#[derive(Debug)]
pub(crate) enum HeadParse {
    Complete(Head),
    Partial,
}

/// Parses a head at the start of `buf`. `buf` must not start with empty lines.
pub(crate) fn parse_head(kind: MessageKind, buf: &[u8]) -> Result<HeadParse, ParseError> {
    let line = match kind {
        MessageKind::Request => match_request_line(buf),
        MessageKind::Response => match_status_line(buf),
    };
    match line {
        LineMatch::No => {
            return Err(match kind {
                MessageKind::Request => ParseError::UnknownMethod,
                MessageKind::Response => ParseError::MalformedHead("invalid status line"),
            });
        }
        LineMatch::Prefix => return Ok(HeadParse::Partial),
        LineMatch::Complete => {}
    }
    let mut config = httparse::ParserConfig::default();
    config
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .ignore_invalid_headers_in_responses(true)
        .ignore_invalid_headers_in_requests(true);
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    match kind {
        MessageKind::Request => {
            let mut request = httparse::Request::new(&mut []);
            let head_len =
                match config.parse_request_with_uninit_headers(&mut request, buf, &mut headers) {
                    Ok(httparse::Status::Complete(n)) => n,
                    Ok(httparse::Status::Partial) => return Ok(HeadParse::Partial),
                    Err(e) => return Err(ParseError::MalformedHead(httparse_error_name(e))),
                };
            let method = request
                .method
                .and_then(|m| Method::from_token(m.as_bytes()))
                .ok_or(ParseError::UnknownMethod)?;
            let version = Version::from_minor(request.version)
                .ok_or(ParseError::MalformedHead("invalid version"))?;
            let target = request
                .path
                .filter(|p| !p.is_empty())
                .ok_or(ParseError::MalformedHead("empty request target"))?
                .to_owned();
            let facts = HeaderFacts::scan(request.headers)?;
            let framing = if facts.transfer_encoding.is_some() {
                if facts.transfer_encoding == Some(true) {
                    BodyFraming::Chunked
                } else {
                    return Err(ParseError::UnsupportedTransferEncoding);
                }
            } else {
                match facts.content_length {
                    Some(0) | None => BodyFraming::Empty,
                    Some(n) => BodyFraming::Length(n),
                }
            };
            Ok(HeadParse::Complete(Head::Request(RequestHead {
                method,
                version,
                target,
                host: facts.host,
                x_request_id: facts.request_id.finish(),
                trace: facts.trace.finish(),
                head_len,
                framing,
            })))
        }
        MessageKind::Response => {
            let mut response = httparse::Response::new(&mut []);
            let head_len =
                match config.parse_response_with_uninit_headers(&mut response, buf, &mut headers) {
                    Ok(httparse::Status::Complete(n)) => n,
                    Ok(httparse::Status::Partial) => return Ok(HeadParse::Partial),
                    Err(e) => return Err(ParseError::MalformedHead(httparse_error_name(e))),
                };
            let version = Version::from_minor(response.version)
                .ok_or(ParseError::MalformedHead("invalid version"))?;
            let code = response
                .code
                .filter(|c| (100..=999).contains(c))
                .ok_or(ParseError::MalformedHead("invalid status code"))?;
            let facts = HeaderFacts::scan(response.headers)?;
            let framing = if (100..200).contains(&code) || code == 204 || code == 304 {
                BodyFraming::Empty
            } else if let Some(chunked) = facts.transfer_encoding {
                if chunked {
                    BodyFraming::Chunked
                } else {
                    BodyFraming::UntilClose
                }
            } else {
                match facts.content_length {
                    Some(0) => BodyFraming::Empty,
                    Some(n) => BodyFraming::Length(n),
                    None => BodyFraming::UntilClose,
                }
            };
            Ok(HeadParse::Complete(Head::Response(ResponseHead {
                version,
                code,
                reason: lossy_trimmed(response.reason.unwrap_or("").as_bytes()),
                x_request_id: facts.request_id.finish(),
                trace: facts.trace.finish(),
                head_len,
                framing,
            })))
        }
    }
}

fn httparse_error_name(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid new line",
        httparse::Error::Status => "invalid response status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid version",
    }
}

/// Header values rows and framing need, gathered in one pass.
#[derive(Debug, Default)]
struct HeaderFacts {
    content_length: Option<u64>,
    /// `Some(chunked)` when a Transfer-Encoding header is present: whether its final coding
    /// is `chunked`.
    transfer_encoding: Option<bool>,
    host: Option<String>,
    request_id: RequestIdHeader,
    trace: TraceHeaders,
}

impl HeaderFacts {
    fn scan(headers: &[httparse::Header<'_>]) -> Result<Self, ParseError> {
        let mut facts = HeaderFacts::default();
        for header in headers {
            let name = header.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                // A list of equal values is allowed (RFC 9110 §8.6); differing ones are not.
                for item in header.value.split(|&b| b == b',') {
                    let n =
                        parse_decimal(item.trim_ascii()).ok_or(ParseError::InvalidContentLength)?;
                    if facts.content_length.is_some_and(|m| m != n) {
                        return Err(ParseError::InvalidContentLength);
                    }
                    facts.content_length = Some(n);
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                let last = header
                    .value
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .rfind(|coding| !coding.is_empty());
                if let Some(coding) = last {
                    facts.transfer_encoding = Some(coding.eq_ignore_ascii_case(b"chunked"));
                }
            } else if name.eq_ignore_ascii_case(b"host") {
                facts
                    .host
                    .get_or_insert_with(|| lossy_trimmed(header.value));
            } else if !facts.request_id.offer(name, header.value) {
                facts.trace.offer(name, header.value);
            }
        }
        Ok(facts)
    }
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(buf: &[u8]) -> Result<RequestHead, ParseError> {
        match parse_head(MessageKind::Request, buf)? {
            HeadParse::Complete(Head::Request(head)) => Ok(head),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn response(buf: &[u8]) -> Result<ResponseHead, ParseError> {
        match parse_head(MessageKind::Response, buf)? {
            HeadParse::Complete(Head::Response(head)) => Ok(head),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn request_fields() {
        let buf = b"POST /api/v1/items?id=7 HTTP/1.1\r\nHost: shop.local:8080\r\n\
              X-Request-ID: abc-123\r\n\
              traceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01\r\n\
              Content-Length: 12\r\n\r\nbody";
        let head = request(buf).expect("valid input");
        assert_eq!(head.method, Method::Post);
        assert_eq!(head.version, Version::Http11);
        assert_eq!(head.target, "/api/v1/items?id=7");
        assert_eq!(head.host.as_deref(), Some("shop.local:8080"));
        assert_eq!(head.x_request_id.as_deref(), Some("abc-123"));
        let trace = head.trace.expect("valid input");
        assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.span_id, "00f067aa0ba902b7");
        assert_eq!(head.framing, BodyFraming::Length(12));
        assert_eq!(head.head_len, buf.len() - b"body".len());
    }

    #[test]
    fn other_propagation_formats() {
        let jaeger = request(
            b"GET / HTTP/1.1\r\nuber-trace-id: a3ce929d0e0e4736:b7ad6b7169203331:5:1\r\n\r\n",
        )
        .expect("valid input");
        let trace = jaeger.trace.expect("a Jaeger context");
        assert_eq!(trace.trace_id, "0000000000000000a3ce929d0e0e4736");
        assert_eq!(trace.parent_span_id.as_deref(), Some("0000000000000005"));
        // traceparent wins over B3 wherever it comes in the block
        let both = request(
            b"GET / HTTP/1.1\r\nX-B3-TraceId: 1\r\nX-B3-SpanId: 2\r\n\
              traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
        )
        .expect("valid input");
        assert_eq!(
            both.trace.map(|t| t.span_id).as_deref(),
            Some("00f067aa0ba902b7")
        );
    }

    #[test]
    fn request_framing() {
        let te = request(b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .expect("valid input");
        assert_eq!(te.framing, BodyFraming::Chunked);
        let both =
            request(b"PUT / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
                .expect("valid input");
        assert_eq!(both.framing, BodyFraming::Chunked);
        let none = request(b"GET / HTTP/1.0\r\n\r\n").expect("valid input");
        assert_eq!(none.framing, BodyFraming::Empty);
        assert_eq!(none.version, Version::Http10);
        assert_eq!(
            request(b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(ParseError::UnsupportedTransferEncoding)
        );
        assert_eq!(
            request(b"PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Err(ParseError::InvalidContentLength)
        );
        assert_eq!(
            request(b"PUT / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n")
                .expect("valid input")
                .framing,
            BodyFraming::Length(5)
        );
        assert_eq!(
            request(b"PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Err(ParseError::InvalidContentLength)
        );
        assert_eq!(
            request(b"PUT / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            Err(ParseError::InvalidContentLength)
        );
        assert_eq!(
            request(b"PUT / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n")
                .expect("valid input")
                .framing,
            BodyFraming::Length(u64::MAX)
        );
    }

    #[test]
    fn response_framing() {
        let cases: [(&[u8], BodyFraming); 7] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                BodyFraming::Length(3),
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", BodyFraming::UntilClose),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                BodyFraming::Chunked,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                BodyFraming::UntilClose,
            ),
            (
                b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
                BodyFraming::Empty,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                BodyFraming::Empty,
            ),
            (b"HTTP/1.1 100 Continue\r\n\r\n", BodyFraming::Empty),
        ];
        for (buf, framing) in cases {
            assert_eq!(response(buf).expect("valid input").framing, framing);
        }
        let head = response(b"HTTP/1.0 503 Service Unavailable\r\n\r\n").expect("valid input");
        assert_eq!(
            (head.code, head.reason.as_str()),
            (503, "Service Unavailable")
        );
        assert!(
            response(b"HTTP/1.1 100 Continue\r\n\r\n")
                .expect("valid input")
                .is_interim()
        );
        assert!(
            !response(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
                .expect("valid input")
                .is_interim()
        );
    }

    #[test]
    fn partial_and_invalid() {
        let full = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        for n in 0..full.len() {
            assert!(matches!(
                parse_head(MessageKind::Request, &full[..n]),
                Ok(HeadParse::Partial)
            ));
        }
        assert_eq!(
            parse_head(MessageKind::Request, b"FOO / HTTP/1.1\r\n\r\n").expect_err("invalid input"),
            ParseError::UnknownMethod
        );
        assert!(parse_head(MessageKind::Response, b"GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(
            parse_head(
                MessageKind::Request,
                b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"
            )
            .is_ok()
        );
        // Invalid UTF-8 in values is taken lossily.
        let head = request(b"GET / HTTP/1.1\r\nHost: h\xffst\r\n\r\n").expect("valid input");
        assert_eq!(head.host.as_deref(), Some("h\u{fffd}st"));
    }
}
