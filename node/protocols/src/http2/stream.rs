//! One HTTP/2 stream as the session follows it, the header fields rows need, and the row a
//! stream becomes.

use super::frame::FramePosition;
use super::hpack::Field;
use crate::session::SyscallMeta;
use crate::text::lossy_trimmed;
use crate::trace_context::{RequestIdHeader, TraceContext, TraceHeaders};
use crate::{L7Protocol, L7Record, ResponseStatus, Role};

/// The fields of one header block that rows need, gathered as the block is decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HeaderFacts {
    pub(crate) method: Option<String>,
    pub(crate) authority: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) status: Option<u16>,
    /// `content-type` starts with `application/grpc`.
    pub(crate) grpc: bool,
    pub(crate) grpc_status: Option<u16>,
    pub(crate) grpc_message: Option<String>,
    pub(crate) request_id: RequestIdHeader,
    pub(crate) trace: TraceHeaders,
    /// Fields whose content is unknown (they referred to lost table entries).
    pub(crate) unknown_fields: usize,
    /// Fields decoded.
    pub(crate) known_fields: usize,
    /// Some of the block was not decoded: not captured, or it did not decode.
    pub(crate) incomplete: bool,
    /// Violations of RFC 9113 §8.2–8.3 seen in known fields: uppercase or invalid names,
    /// unknown pseudo-headers, pseudo-headers after regular fields, an invalid `:method` or
    /// `:status`.
    pub(crate) malformed: bool,
    regular_seen: bool,
}

impl HeaderFacts {
    /// The request id of the block (`crate::trace_context::set_request_id_headers`).
    pub(crate) fn x_request_id(&self) -> Option<String> {
        self.request_id.clone().finish()
    }

    /// The trace context of the block's first valid propagation header.
    pub(crate) fn trace(&self) -> Option<TraceContext> {
        self.trace.clone().finish()
    }

    /// Takes in one decoded field.
    pub(crate) fn add(&mut self, field: Field<'_>) {
        let (name, value) = match field {
            Field::Known { name, value } => (name, value),
            Field::Unknown => {
                self.unknown_fields += 1;
                return;
            }
        };
        self.known_fields += 1;
        if let Some(pseudo) = name.strip_prefix(b":") {
            if self.regular_seen {
                self.malformed = true;
            }
            match pseudo {
                b"method" => {
                    let valid = !value.is_empty() && value.iter().all(|&b| is_tchar(b));
                    self.malformed |= !valid || self.method.is_some();
                    self.method.get_or_insert_with(|| lossy_trimmed(value));
                }
                b"authority" => set_once(&mut self.authority, value),
                b"path" => set_once(&mut self.path, value),
                b"status" => {
                    let code = three_digits(value);
                    self.malformed |= code.is_none() || self.status.is_some();
                    if self.status.is_none() {
                        self.status = code;
                    }
                }
                b"scheme" | b"protocol" => {}
                _ => self.malformed = true,
            }
            return;
        }
        self.regular_seen = true;
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b) && !b.is_ascii_uppercase()) {
            self.malformed = true;
            return;
        }
        match name {
            b"host" => set_once(&mut self.host, value),
            b"content-type" => self.grpc |= value.starts_with(b"application/grpc"),
            b"grpc-status" => {
                // Only gRPC responses carry it (in case content-type was not decoded).
                self.grpc = true;
                if self.grpc_status.is_none() {
                    self.grpc_status = decimal(value);
                }
            }
            b"grpc-message" if self.grpc_message.is_none() => {
                self.grpc_message = Some(percent_decode(value));
            }
            _ => {
                if !self.request_id.offer(name, value) {
                    self.trace.offer(name, value);
                }
            }
        }
    }

    /// Trailers (a second HEADERS block with END_STREAM) complete a response's fields.
    fn merge_trailers(&mut self, trailers: HeaderFacts) {
        self.grpc |= trailers.grpc;
        if self.grpc_status.is_none() {
            self.grpc_status = trailers.grpc_status;
            self.grpc_message = trailers.grpc_message;
        }
        if self.x_request_id().is_none() {
            self.request_id = trailers.request_id;
        }
        if self.trace().is_none() {
            self.trace = trailers.trace;
        }
        self.incomplete |= trailers.incomplete;
    }
}

fn set_once(slot: &mut Option<String>, value: &[u8]) {
    if slot.is_none() {
        *slot = Some(lossy_trimmed(value));
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn three_digits(value: &[u8]) -> Option<u16> {
    match value {
        [a, b, c] if value.iter().all(u8::is_ascii_digit) && *a != b'0' => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

fn decimal(value: &[u8]) -> Option<u16> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 5 {
        return None;
    }
    value.iter().try_fold(0u16, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u16::from(b - b'0'))
        } else {
            None
        }
    })
}

/// `grpc-message` is percent-encoded UTF-8 (gRPC over HTTP/2, "Responses").
fn percent_decode(value: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let escaped = match (value[i], value.get(i + 1), value.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(value[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The gRPC status classes, as DeepFlow maps them: client errors are the codes that blame the
/// call (CANCELLED, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED,
/// FAILED_PRECONDITION, OUT_OF_RANGE, UNAUTHENTICATED), every other non-OK code is a server
/// error.
pub(crate) fn grpc_status_class(code: u16) -> ResponseStatus {
    match code {
        0 => ResponseStatus::Ok,
        1 | 3 | 5 | 6 | 7 | 9 | 11 | 16 => ResponseStatus::ClientError,
        _ => ResponseStatus::ServerError,
    }
}

/// The name of an HTTP/2 error code (RFC 9113 §7).
pub(crate) fn error_code_name(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "UNKNOWN_ERROR",
    }
}

/// Where one side of an exchange started and how far it got.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Part {
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    pub(crate) seq: Option<u32>,
    pub(crate) tid: u32,
    pub(crate) syscall_trace_id: u64,
    /// Bytes of the stream's frames in this direction, headers included.
    pub(crate) len: u64,
}

impl Part {
    pub(crate) fn new(start: &FramePosition, end: &SyscallMeta, len: u64) -> Self {
        Part {
            start_ns: start.meta.enter_ns,
            end_ns: end.exit_ns,
            seq: start.seq(),
            tid: start.meta.tid,
            syscall_trace_id: start.meta.syscall_trace_id,
            len,
        }
    }

    pub(crate) fn extend(&mut self, end: &SyscallMeta, len: u64) {
        self.end_ns = self.end_ns.max(end.exit_ns);
        self.len = self.len.saturating_add(len);
    }
}

/// How a stream's row ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The response ended (END_STREAM).
    Complete,
    /// The response started but its end was lost, or the stream was evicted.
    EndLost,
    /// RST_STREAM, sent by the client (`true`) or the server.
    Reset { by_client: bool, code: u32 },
    /// No usable response: timeout, close, GOAWAY.
    NoResponse(ResponseStatus),
}

/// A client-initiated stream: a request and, as it arrives, its response.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) request: Part,
    pub(crate) request_facts: HeaderFacts,
    /// The client sent END_STREAM, or its end was lost with framing.
    pub(crate) request_done: bool,
    pub(crate) response: Option<Part>,
    pub(crate) response_facts: HeaderFacts,
    /// A final (non-1xx) response header block arrived.
    pub(crate) final_seen: bool,
    /// Framing of the response direction was lost while the response was in progress: its
    /// length is unknown and its end may never be seen.
    pub(crate) response_lost: bool,
    /// Framing of the response direction was lost before any response frame: a response may
    /// have gone by unseen, so a timeout is not a timeout.
    pub(crate) maybe_answered: bool,
    /// `exit_ns` of the last syscall that carried a frame of the stream.
    pub(crate) last_activity_ns: u64,
}

impl Stream {
    pub(crate) fn new(request: Part, facts: HeaderFacts, request_done: bool) -> Self {
        Stream {
            last_activity_ns: request.end_ns,
            request,
            request_facts: facts,
            request_done,
            response: None,
            response_facts: HeaderFacts::default(),
            final_seen: false,
            response_lost: false,
            maybe_answered: false,
        }
    }

    pub(crate) fn is_grpc(&self) -> bool {
        self.request_facts.grpc || self.response_facts.grpc
    }

    /// A request frame of `len` bytes ended in `end`.
    pub(crate) fn request_frame(&mut self, end: &SyscallMeta, len: u64, end_stream: bool) {
        self.request.extend(end, len);
        self.request_done |= end_stream;
        self.last_activity_ns = self.last_activity_ns.max(end.exit_ns);
    }

    /// A response frame of `len` bytes ended in `end`.
    pub(crate) fn response_frame(&mut self, start: &FramePosition, end: &SyscallMeta, len: u64) {
        match &mut self.response {
            Some(part) => part.extend(end, len),
            None => self.response = Some(Part::new(start, end, len)),
        }
        self.last_activity_ns = self.last_activity_ns.max(end.exit_ns);
    }

    /// A response header block was decoded into `facts`.
    pub(crate) fn response_headers(&mut self, facts: HeaderFacts) {
        let interim = facts.status.is_some_and(|code| (100..200).contains(&code));
        if self.final_seen {
            self.response_facts.merge_trailers(facts);
        } else if !interim {
            self.final_seen = true;
            let grpc = self.response_facts.grpc;
            self.response_facts = facts;
            self.response_facts.grpc |= grpc;
        }
    }

    /// Whether a row emitted now would have everything its response will say: the final
    /// status, and for gRPC the grpc-status that trailers carry.
    pub(crate) fn outcome_known(&self) -> bool {
        self.final_seen && !(self.is_grpc() && self.response_facts.grpc_status.is_none())
    }

    /// The stream's row.
    pub(crate) fn record(&self, role: Role, outcome: Outcome) -> L7Record {
        let req = &self.request_facts;
        let grpc = self.is_grpc();
        let path = req.path.as_deref().unwrap_or("");
        let (resource, endpoint) = if grpc {
            (
                grpc_service(path).unwrap_or(path).to_owned(),
                path.to_owned(),
            )
        } else {
            let end = path.find(['?', '#']).unwrap_or(path.len());
            (path.to_owned(), path[..end].to_owned())
        };
        let with_response = match outcome {
            Outcome::Complete | Outcome::EndLost => true,
            Outcome::Reset { .. } => self.final_seen,
            Outcome::NoResponse(_) => false,
        };
        let response = with_response.then_some(self.response).flatten();
        let resp = &self.response_facts;
        let mut record = L7Record {
            protocol: if grpc {
                L7Protocol::Grpc
            } else {
                L7Protocol::Http2
            },
            role,
            version: "2".to_owned(),
            request_type: req.method.clone().unwrap_or_default(),
            request_domain: req
                .authority
                .clone()
                .or_else(|| req.host.clone())
                .unwrap_or_default(),
            request_resource: resource,
            endpoint,
            response_code: None,
            response_status: ResponseStatus::Unknown,
            response_exception: String::new(),
            response_result: String::new(),
            row_effect: None,
            request_length: self.request.len,
            response_length: None,
            request_start_ns: self.request.start_ns,
            request_end_ns: self.request.end_ns,
            response_start_ns: response.map(|p| p.start_ns),
            response_end_ns: response.map(|p| p.end_ns),
            req_tcp_seq: self.request.seq,
            resp_tcp_seq: response.and_then(|p| p.seq),
            request_tid: self.request.tid,
            response_tid: response.map(|p| p.tid),
            request_syscall_trace_id: self.request.syscall_trace_id,
            response_syscall_trace_id: response.map_or(0, |p| p.syscall_trace_id),
            x_request_id: req.x_request_id().or_else(|| resp.x_request_id()),
            trace_id: None,
            span_id: None,
            parent_span_id: None,
        };
        if let Some(trace) = req.trace().or_else(|| resp.trace()) {
            record.trace_id = Some(trace.trace_id);
            record.span_id = Some(trace.span_id);
            record.parent_span_id = trace.parent_span_id;
        }
        if response.is_some() {
            if grpc {
                record.response_code = resp.grpc_status.or(resp.status);
                record.response_status = match (resp.grpc_status, resp.status) {
                    (Some(code), _) => grpc_status_class(code),
                    // Without grpc-status the outcome of a call is not known from a 2xx.
                    (None, Some(code)) if !(200..300).contains(&code) => {
                        ResponseStatus::from_http_code(code)
                    }
                    (None, _) => ResponseStatus::Unknown,
                };
                if resp.grpc_status.is_some_and(|code| code != 0) {
                    record.response_exception = resp.grpc_message.clone().unwrap_or_default();
                }
            } else {
                record.response_code = resp.status;
                record.response_status = resp
                    .status
                    .map_or(ResponseStatus::Unknown, ResponseStatus::from_http_code);
            }
            if outcome == Outcome::Complete && !self.response_lost {
                record.response_length = response.map(|p| p.len);
            }
        }
        match outcome {
            Outcome::NoResponse(status) => record.response_status = status,
            Outcome::Reset { by_client, code } if record.response_exception.is_empty() => {
                let by = if by_client { "client" } else { "server" };
                record.response_exception =
                    format!("stream reset by {by}: {}", error_code_name(code));
            }
            _ => {}
        }
        record
    }
}

/// The service of a gRPC path `/package.Service/Method`: `package.Service`.
fn grpc_service(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(fields: &[(&str, &str)]) -> HeaderFacts {
        let mut facts = HeaderFacts::default();
        for (name, value) in fields {
            facts.add(Field::Known {
                name: name.as_bytes(),
                value: value.as_bytes(),
            });
        }
        facts
    }

    fn part(start_ns: u64, len: u64) -> Part {
        Part {
            start_ns,
            end_ns: start_ns + 5,
            seq: Some(start_ns as u32),
            tid: 9,
            syscall_trace_id: 0,
            len,
        }
    }

    #[test]
    fn header_facts() {
        let f = facts(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/greet.Greeter/SayHello"),
            (":authority", "svc:50051"),
            ("content-type", "application/grpc+proto"),
            ("x-request-id", " r-1 "),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ]);
        assert_eq!(f.method.as_deref(), Some("POST"));
        assert_eq!(f.authority.as_deref(), Some("svc:50051"));
        assert!(f.grpc && !f.malformed);
        assert_eq!(f.x_request_id().as_deref(), Some("r-1"));
        assert_eq!(
            f.trace().map(|t| t.span_id),
            Some("b7ad6b7169203331".to_owned())
        );
        let f = facts(&[
            (":status", "200"),
            ("grpc-status", "5"),
            ("grpc-message", "no%20such%20caf%C3%A9%zz"),
        ]);
        assert_eq!((f.status, f.grpc_status), (Some(200), Some(5)));
        assert_eq!(f.grpc_message.as_deref(), Some("no such café%zz"));
        // Malformed blocks: pseudo after regular, uppercase names, bad status, unknown
        // pseudo-header.
        assert!(facts(&[("accept", "*/*"), (":path", "/")]).malformed);
        assert!(facts(&[("Accept", "*/*")]).malformed);
        assert!(facts(&[(":status", "2000")]).malformed);
        assert!(facts(&[(":status", "099")]).malformed);
        assert!(facts(&[(":colour", "red")]).malformed);
        assert!(facts(&[(":method", "GET /")]).malformed);
    }

    #[test]
    fn grpc_classes_follow_deepflow() {
        let client = [1, 3, 5, 6, 7, 9, 11, 16];
        for code in 0..=20 {
            let expected = match code {
                0 => ResponseStatus::Ok,
                c if client.contains(&c) => ResponseStatus::ClientError,
                _ => ResponseStatus::ServerError,
            };
            assert_eq!(grpc_status_class(code), expected, "{code}");
        }
    }

    #[test]
    fn rows_of_http2_and_grpc_streams() {
        let mut s = Stream::new(
            part(100, 50),
            facts(&[
                (":method", "GET"),
                (":path", "/a/b?c=d"),
                ("host", "example.com"),
            ]),
            true,
        );
        s.response = Some(part(200, 70));
        s.response_headers(facts(&[(":status", "100")]));
        assert!(!s.final_seen);
        s.response_headers(facts(&[(":status", "404"), ("x-request-id", "from-resp")]));
        let r = s.record(Role::Client, Outcome::Complete);
        assert_eq!(r.protocol, L7Protocol::Http2);
        assert_eq!((r.version.as_str(), r.request_type.as_str()), ("2", "GET"));
        assert_eq!(r.request_domain, "example.com");
        assert_eq!(
            (r.request_resource.as_str(), r.endpoint.as_str()),
            ("/a/b?c=d", "/a/b")
        );
        assert_eq!(r.response_code, Some(404));
        assert_eq!(r.response_status, ResponseStatus::ClientError);
        assert_eq!(r.response_length, Some(70));
        assert_eq!(r.x_request_id.as_deref(), Some("from-resp"));
        assert_eq!(r.response_exception, "");

        let mut g = Stream::new(
            part(100, 50),
            facts(&[
                (":method", "POST"),
                (":path", "/pkg.Svc/Do"),
                ("content-type", "application/grpc"),
            ]),
            true,
        );
        g.response = Some(part(200, 70));
        g.response_headers(facts(&[(":status", "200")]));
        assert!(!g.outcome_known());
        let r = g.record(Role::Server, Outcome::EndLost);
        assert_eq!(r.protocol, L7Protocol::Grpc);
        assert_eq!(
            (r.request_resource.as_str(), r.endpoint.as_str()),
            ("pkg.Svc", "/pkg.Svc/Do")
        );
        assert_eq!(r.response_code, Some(200));
        assert_eq!(r.response_status, ResponseStatus::Unknown);
        assert_eq!(r.response_length, None);
        g.response_headers(facts(&[("grpc-status", "13"), ("grpc-message", "boom")]));
        assert!(g.outcome_known());
        let r = g.record(Role::Server, Outcome::Complete);
        assert_eq!(r.response_code, Some(13));
        assert_eq!(r.response_status, ResponseStatus::ServerError);
        assert_eq!(r.response_exception, "boom");

        let r = g.record(Role::Server, Outcome::NoResponse(ResponseStatus::Timeout));
        assert_eq!(r.response_code, None);
        assert_eq!(r.response_start_ns, None);
        assert_eq!(r.response_status, ResponseStatus::Timeout);

        let mut cancelled = Stream::new(part(1, 1), HeaderFacts::default(), false);
        let r = cancelled.record(
            Role::Client,
            Outcome::Reset {
                by_client: true,
                code: 8,
            },
        );
        assert_eq!(r.response_exception, "stream reset by client: CANCEL");
        assert_eq!(
            (r.response_code, r.response_status),
            (None, ResponseStatus::Unknown)
        );
        cancelled.request_facts.path = Some("/not-grpc".into());
        assert_eq!(grpc_service("/a/b/c"), None);
        assert_eq!(grpc_service("/a"), None);
        assert_eq!(grpc_service("//b"), None);
    }
}
