//! An HTTP/1 conversation: the two direction parsers and request/response pairing.
//!
//! Requests queue FIFO as their heads are parsed; each final response takes the oldest. The
//! queue also holds markers for requests that will not get a row of their own but whose
//! responses are still to come, so that those responses are not paired with the wrong
//! request:
//!
//! - `Skipped(n)`: `n` requests whose responses must be swallowed — dropped for overflow, or
//!   already reported as timed out. Exact.
//! - `Lost`: the request direction lost framing here, so an unknown number of requests were
//!   not seen. A response belongs to one of them unless a request queued after the marker
//!   was sent before the response started (HTTP/1 without pipelining answers a request
//!   before the next one is sent).
//!
//! When the response direction loses framing, responses may have been missed: the next
//! response is paired with the newest request sent before it started, and the older ones are
//! reported without response.

use std::collections::VecDeque;

use super::{ConversationConfig, ConversationStats};
use crate::http1::{
    BodyDirective, Desync, DesyncCause, Head, Http1Parser, Http1Sink, MessageEnd, MessageKind,
    MessageStart, Method, SyscallMeta, Version,
};
use crate::session::{ProtocolSession, SeqStep};
use crate::trace_context::TraceContext;
use crate::{Direction, L7Protocol, L7Record, ResponseStatus, Role};

#[derive(Debug)]
pub(crate) struct Http1Session {
    role: Role,
    requests: Http1Parser,
    responses: Http1Parser,
    pairing: Pairing,
}

impl Http1Session {
    pub(crate) fn new(role: Role, config: &ConversationConfig) -> Self {
        Http1Session {
            role,
            requests: Http1Parser::new(MessageKind::Request, config.max_head_bytes),
            responses: Http1Parser::new(MessageKind::Response, config.max_head_bytes),
            pairing: Pairing {
                role,
                max_pending: config.max_pending_requests,
                pending: VecDeque::new(),
                pending_requests: 0,
                next_id: 0,
                current_request: None,
                response: None,
                responses_lost: false,
                tunnel: false,
            },
        }
    }

    fn h1_role(&self) -> Role {
        self.role
    }

    fn h1_is_tunnel(&self) -> bool {
        self.pairing.tunnel
    }

    #[allow(clippy::too_many_arguments)]
    fn h1_feed(
        &mut self,
        direction: Direction,
        meta: &SyscallMeta,
        step: SeqStep,
        payload: &[u8],
        gap_after: u64,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        let (parser, kind) = if direction == self.role.request_direction() {
            (&mut self.requests, MessageKind::Request)
        } else {
            (&mut self.responses, MessageKind::Response)
        };
        let mut sink = PairingSink {
            kind,
            pairing: &mut self.pairing,
            stats,
            out,
        };
        if step.discontinuous {
            parser.discontinuity(meta.enter_ns, &mut sink);
        }
        parser.feed(meta, step.gap, payload, gap_after, &mut sink);
        if self.pairing.tunnel {
            self.requests.enter_tunnel();
            self.responses.enter_tunnel();
        }
    }

    fn h1_expire(
        &mut self,
        now_ns: u64,
        timeout_ns: u64,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        let pairing = &mut self.pairing;
        let expired = |start_ns: u64| start_ns.saturating_add(timeout_ns) <= now_ns;
        // A request still being received (a long upload) is not waiting for a response yet.
        let receiving = pairing.current_request;
        let request_expired = |request: &PendingRequest| {
            Some(request.id) != receiving && expired(request.start.enter_ns)
        };
        let any_expired = pairing.pending.iter().any(|entry| match entry {
            Pending::Request(request) => request_expired(request),
            Pending::Lost { at_ns } => expired(*at_ns),
            Pending::Skipped(_) => false,
        });
        if !any_expired {
            return;
        }
        let entries = std::mem::take(&mut pairing.pending);
        for entry in entries {
            match entry {
                Pending::Request(request) if request_expired(&request) => {
                    pairing.pending_requests -= 1;
                    emit(
                        pairing.role,
                        request,
                        None,
                        ResponseStatus::Timeout,
                        stats,
                        out,
                    );
                    pairing.push_skipped(1);
                }
                Pending::Lost { at_ns } if expired(at_ns) => {}
                Pending::Skipped(n) => pairing.push_skipped(n),
                other => pairing.pending.push_back(other),
            }
        }
    }

    fn h1_close(&mut self, _now_ns: u64, stats: &mut ConversationStats, out: &mut Vec<L7Record>) {
        let mut sink = PairingSink {
            kind: MessageKind::Response,
            pairing: &mut self.pairing,
            stats: &mut *stats,
            out: &mut *out,
        };
        // A close-delimited body ends here and its row is emitted by the sink. A response
        // cut short leaves its request without a usable response.
        self.responses.close(&mut sink);
        if let Some(response) = sink.pairing.response.take()
            && let Some(request) = response.request
        {
            emit(
                sink.pairing.role,
                request,
                None,
                ResponseStatus::Unknown,
                sink.stats,
                sink.out,
            );
        }
        sink.kind = MessageKind::Request;
        self.requests.close(&mut sink);
        let pairing = &mut self.pairing;
        for entry in std::mem::take(&mut pairing.pending) {
            if let Pending::Request(request) = entry {
                emit(
                    pairing.role,
                    request,
                    None,
                    ResponseStatus::Unknown,
                    stats,
                    out,
                );
            }
        }
        pairing.pending_requests = 0;
        pairing.current_request = None;
    }
}

#[derive(Debug)]
struct Pairing {
    role: Role,
    max_pending: usize,
    pending: VecDeque<Pending>,
    /// `Pending::Request` entries in `pending`.
    pending_requests: usize,
    next_id: u64,
    /// The request whose body is being parsed, if it is queued.
    current_request: Option<u64>,
    /// The final response whose body is being parsed (interim 1xx responses are not kept).
    response: Option<FinalResponse>,
    /// The response direction lost framing since the last response head.
    responses_lost: bool,
    /// The connection became a tunnel.
    tunnel: bool,
}

// Boxing the request would cost an allocation per request on the capture path; the queue
// holds one entry per pipelined request, so the size difference costs little memory.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Pending {
    Request(PendingRequest),
    Skipped(u64),
    Lost { at_ns: u64 },
}

#[derive(Debug)]
struct PendingRequest {
    id: u64,
    method: Method,
    version: Version,
    target: String,
    host: Option<String>,
    x_request_id: Option<String>,
    trace: Option<TraceContext>,
    start: MessageStart,
    end_ns: u64,
    length: u64,
}

#[derive(Debug)]
struct FinalResponse {
    /// The request it answers; `None` when there is none to pair with.
    request: Option<PendingRequest>,
    code: u16,
    reason: String,
    x_request_id: Option<String>,
    trace: Option<TraceContext>,
    start: MessageStart,
}

/// The response part of a row.
struct ResponsePart {
    response: FinalResponse,
    end_ns: u64,
    length: Option<u64>,
}

impl Pairing {
    fn push_skipped(&mut self, n: u64) {
        if let Some(Pending::Skipped(count)) = self.pending.back_mut() {
            *count = count.saturating_add(n);
        } else {
            self.pending.push_back(Pending::Skipped(n));
        }
    }

    fn pop_request(&mut self) -> Option<PendingRequest> {
        match self.pending.pop_front() {
            Some(Pending::Request(request)) => {
                self.pending_requests -= 1;
                Some(request)
            }
            _ => None,
        }
    }

    /// The request a final response that started at `response_start_ns` answers, if any.
    fn take_request(
        &mut self,
        response_start_ns: u64,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) -> Option<PendingRequest> {
        if std::mem::take(&mut self.responses_lost) {
            // Responses were missed: answer the newest request sent before this response;
            // the older ones lost theirs.
            let newest = self.pending.iter().rposition(|entry| {
                matches!(entry, Pending::Request(r) if r.start.enter_ns <= response_start_ns)
            });
            if let Some(index) = newest {
                for _ in 0..index {
                    if let Some(Pending::Request(request)) = self.pending.pop_front() {
                        self.pending_requests -= 1;
                        emit(
                            self.role,
                            request,
                            None,
                            ResponseStatus::Unknown,
                            stats,
                            out,
                        );
                    }
                }
                return self.pop_request();
            }
        }
        loop {
            match self.pending.front_mut()? {
                Pending::Request(_) => return self.pop_request(),
                Pending::Skipped(count) => {
                    *count -= 1;
                    if *count == 0 {
                        self.pending.pop_front();
                    }
                    return None;
                }
                Pending::Lost { .. } => {
                    let next_sent_before = self.pending.iter().find_map(|entry| match entry {
                        Pending::Request(r) => Some(r.start.enter_ns <= response_start_ns),
                        _ => None,
                    });
                    if next_sent_before == Some(true) {
                        self.pending.pop_front();
                    } else {
                        return None;
                    }
                }
            }
        }
    }
}

/// Connects a direction parser to the pairing state.
struct PairingSink<'a> {
    kind: MessageKind,
    pairing: &'a mut Pairing,
    stats: &'a mut ConversationStats,
    out: &'a mut Vec<L7Record>,
}

impl Http1Sink for PairingSink<'_> {
    fn on_head(&mut self, head: Head, start: MessageStart) -> BodyDirective {
        let pairing = &mut *self.pairing;
        match (self.kind, head) {
            (MessageKind::Request, Head::Request(head)) => {
                if pairing.pending_requests >= pairing.max_pending {
                    self.stats.dropped_requests += 1;
                    pairing.push_skipped(1);
                    pairing.current_request = None;
                    return BodyDirective::AsDeclared;
                }
                let id = pairing.next_id;
                pairing.next_id += 1;
                let body = match head.framing {
                    crate::http1::BodyFraming::Length(n) => n,
                    _ => 0,
                };
                pairing.pending.push_back(Pending::Request(PendingRequest {
                    id,
                    method: head.method,
                    version: head.version,
                    target: head.target,
                    host: head.host,
                    x_request_id: head.x_request_id,
                    trace: head.trace,
                    start,
                    end_ns: start.head_end_ns,
                    length: (head.head_len as u64).saturating_add(body),
                }));
                pairing.pending_requests += 1;
                pairing.current_request = Some(id);
                BodyDirective::AsDeclared
            }
            (MessageKind::Response, Head::Response(head)) => {
                if head.is_interim() {
                    pairing.response = None;
                    return BodyDirective::Empty;
                }
                let request = pairing.take_request(start.enter_ns, self.stats, self.out);
                let method = request.as_ref().map(|r| r.method);
                if request.is_none() {
                    self.stats.unmatched_responses += 1;
                }
                let directive = match method {
                    _ if head.code == 101 => BodyDirective::Tunnel,
                    Some(Method::Connect) if (200..300).contains(&head.code) => {
                        BodyDirective::Tunnel
                    }
                    Some(Method::Head) => BodyDirective::Empty,
                    _ => BodyDirective::AsDeclared,
                };
                if directive == BodyDirective::Tunnel {
                    pairing.tunnel = true;
                }
                pairing.response = Some(FinalResponse {
                    request,
                    code: head.code,
                    reason: head.reason,
                    x_request_id: head.x_request_id,
                    trace: head.trace,
                    start,
                });
                directive
            }
            // A parser only produces heads of its own kind.
            _ => BodyDirective::AsDeclared,
        }
    }

    fn on_message_end(&mut self, end: MessageEnd) {
        let pairing = &mut *self.pairing;
        match self.kind {
            MessageKind::Request => {
                let Some(id) = pairing.current_request.take() else {
                    return;
                };
                let queued = pairing
                    .pending
                    .iter_mut()
                    .rev()
                    .find_map(|entry| match entry {
                        Pending::Request(request) if request.id == id => Some(request),
                        _ => None,
                    });
                if let Some(request) = queued {
                    request.end_ns = end.end_ns;
                    request.length = end.length;
                }
            }
            MessageKind::Response => {
                if let Some(mut response) = pairing.response.take()
                    && let Some(request) = response.request.take()
                {
                    let part = ResponsePart {
                        response,
                        end_ns: end.end_ns,
                        length: Some(end.length),
                    };
                    emit_paired(pairing.role, request, part, self.stats, self.out);
                }
            }
        }
    }

    fn on_desync(&mut self, desync: Desync) {
        self.stats.resyncs += 1;
        if matches!(desync.cause, DesyncCause::Parse(_)) {
            self.stats.parse_errors += 1;
        }
        let pairing = &mut *self.pairing;
        match self.kind {
            MessageKind::Request => {
                pairing.current_request = None;
                if !matches!(pairing.pending.back(), Some(Pending::Lost { .. })) {
                    pairing.pending.push_back(Pending::Lost {
                        at_ns: desync.at_ns,
                    });
                }
            }
            MessageKind::Response => {
                pairing.responses_lost = true;
                // The head was parsed but the end of the body was lost: the row keeps what
                // the head said, without a length.
                if let Some(mut response) = pairing.response.take()
                    && let Some(request) = response.request.take()
                    && let Some(unfinished) = desync.unfinished
                {
                    let part = ResponsePart {
                        response,
                        end_ns: unfinished.last_exit_ns,
                        length: None,
                    };
                    emit_paired(pairing.role, request, part, self.stats, self.out);
                }
            }
        }
    }
}

fn emit_paired(
    role: Role,
    request: PendingRequest,
    part: ResponsePart,
    stats: &mut ConversationStats,
    out: &mut Vec<L7Record>,
) {
    let status = ResponseStatus::from_http_code(part.response.code);
    emit(role, request, Some(part), status, stats, out);
}

fn emit(
    role: Role,
    request: PendingRequest,
    response: Option<ResponsePart>,
    status: ResponseStatus,
    stats: &mut ConversationStats,
    out: &mut Vec<L7Record>,
) {
    stats.records += 1;
    let endpoint = endpoint_of(&request.target).to_owned();
    let (mut x_request_id, mut trace) = (request.x_request_id, request.trace);
    let mut record = L7Record {
        protocol: L7Protocol::Http1,
        role,
        version: request.version.as_str().to_owned(),
        request_type: request.method.as_str().to_owned(),
        request_domain: request.host.unwrap_or_default(),
        request_resource: request.target,
        endpoint,
        response_code: None,
        response_status: status,
        response_exception: String::new(),
        response_result: String::new(),
        row_effect: None,
        request_length: request.length,
        response_length: None,
        request_start_ns: request.start.enter_ns,
        request_end_ns: request.end_ns,
        response_start_ns: None,
        response_end_ns: None,
        req_tcp_seq: request.start.seq,
        resp_tcp_seq: None,
        request_tid: request.start.tid,
        request_syscall_trace_id: request.start.syscall_trace_id,
        response_tid: None,
        response_syscall_trace_id: 0,
        x_request_id: None,
        trace_id: None,
        span_id: None,
        parent_span_id: None,
    };
    if let Some(part) = response {
        let response = part.response;
        record.response_code = Some(response.code);
        if matches!(
            status,
            ResponseStatus::ClientError | ResponseStatus::ServerError
        ) {
            record.response_exception = response.reason;
        }
        record.response_length = part.length;
        record.response_start_ns = Some(response.start.enter_ns);
        record.response_end_ns = Some(part.end_ns);
        record.resp_tcp_seq = response.start.seq;
        record.response_tid = Some(response.start.tid);
        record.response_syscall_trace_id = response.start.syscall_trace_id;
        x_request_id = x_request_id.or(response.x_request_id);
        trace = trace.or(response.trace);
    }
    record.x_request_id = x_request_id;
    if let Some(trace) = trace {
        record.trace_id = Some(trace.trace_id);
        record.span_id = Some(trace.span_id);
        record.parent_span_id = trace.parent_span_id;
    }
    out.push(record);
}

/// The path of a request-target without query string or fragment. For an absolute-form
/// target (`http://host/path?q`) it is the path part (`/` if empty).
fn endpoint_of(target: &str) -> &str {
    let mut path = target;
    for scheme in ["http://", "https://"] {
        if path.len() >= scheme.len()
            && path.is_char_boundary(scheme.len())
            && path[..scheme.len()].eq_ignore_ascii_case(scheme)
        {
            let rest = &path[scheme.len()..];
            path = match rest.find(['/', '?', '#']) {
                Some(i) if rest[i..].starts_with('/') => &rest[i..],
                _ => "/",
            };
            break;
        }
    }
    match path.find(['?', '#']) {
        Some(i) => &path[..i],
        None => path,
    }
}

impl ProtocolSession for Http1Session {
    fn protocol(&self) -> L7Protocol {
        L7Protocol::Http1
    }

    fn role(&self) -> Role {
        self.h1_role()
    }

    fn is_tunnel(&self) -> bool {
        self.h1_is_tunnel()
    }

    fn feed(
        &mut self,
        direction: Direction,
        meta: &SyscallMeta,
        step: SeqStep,
        payload: &[u8],
        gap_after: u64,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        self.h1_feed(direction, meta, step, payload, gap_after, stats, out);
    }

    fn expire(
        &mut self,
        now_ns: u64,
        timeout_ns: u64,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        self.h1_expire(now_ns, timeout_ns, stats, out);
    }

    fn close(&mut self, now_ns: u64, stats: &mut ConversationStats, out: &mut Vec<L7Record>) {
        self.h1_close(now_ns, stats, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(endpoint_of("/a/b?c=d"), "/a/b");
        assert_eq!(endpoint_of("/a/b#frag"), "/a/b");
        assert_eq!(endpoint_of("/"), "/");
        assert_eq!(endpoint_of("*"), "*");
        assert_eq!(endpoint_of("example.com:443"), "example.com:443");
        assert_eq!(endpoint_of("http://example.com/x/y?z"), "/x/y");
        assert_eq!(endpoint_of("HTTP://example.com"), "/");
        assert_eq!(endpoint_of("https://example.com?q=1"), "/");
        assert_eq!(endpoint_of("/ä?x"), "/ä");
    }
}
