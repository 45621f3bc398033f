//! L7 protocol inference, parsing and request/response pairing for captured socket streams.
//!
//! # Role
//!
//! The kernel side of flowmesh emits one event per data syscall on a socket (see
//! DESIGN.md §3). This crate turns those events — [`Chunk`]s — into request/response rows
//! ([`L7Record`]), the rows of `flow_log.l7_flow_log`. It knows nothing about eBPF, storage or
//! tagging and has no heavy dependencies, so it builds and tests in seconds.
//!
//! # Main types
//!
//! - [`Conversation`]: the state of one socket. Feed it every [`Chunk`] of the socket in
//!   syscall order; it infers the protocol and this process's [`Role`], parses both
//!   directions, pairs requests with responses and appends finished [`L7Record`]s to the
//!   caller's vector. [`Conversation::expire`] turns requests that waited too long into
//!   [`ResponseStatus::Timeout`] rows; [`Conversation::close`] flushes the socket.
//! - [`infer`]: recognises a protocol from the first bytes of a stream.
//! - [`http1`]: a gap-aware, streaming HTTP/1.x message parser built on `httparse`.
//!
//! # Input model and invariants
//!
//! Each direction of a socket is a byte stream of which only a prefix of every syscall's bytes
//! is captured (`payload`, at most `byte_count` bytes); the rest are *gaps* of known length.
//! Further gaps are detected from jumps of `tcp_seq`. The parsers count bytes exactly through
//! gaps — a body that lies entirely in gaps is skipped by its declared length — and when message
//! framing itself falls into a gap they drop their state and resynchronise on a message start
//! at the beginning of a later chunk (a syscall boundary).
//!
//! - Never panics on any input, and memory per conversation is bounded: at most
//!   `max_head_bytes` of incomplete head per direction, at most `max_pending_requests` pending
//!   requests.
//! - Bodies are never copied; only the bytes of a head that spans several chunks are.
//! - Every record comes from a fully parsed request head; response fields come from a fully
//!   parsed response head. A row is emitted exactly once, when its response is complete (or
//!   when it times out, or at close).

#![warn(missing_docs)]

pub mod amqp;
pub mod dns;
pub mod dubbo;
pub mod framed;
pub mod http1;
pub mod http2;
pub mod infer;
pub mod kafka;
pub mod memcached;
pub mod mongodb;
pub mod mqtt;
pub mod mysql;
pub mod nats;
pub mod postgres;
pub mod redis;
pub mod session;
mod text;
pub mod trace_context;

mod conversation;
mod error;

pub use conversation::{Conversation, ConversationConfig, ConversationStats};
pub use error::ParseError;

/// Which way the bytes of a [`Chunk`] went, seen from the observed process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The process wrote the bytes (send, write, sendfile...).
    Egress,
    /// The process read the bytes (recv, read...).
    Ingress,
}

impl Direction {
    /// The other direction.
    pub fn opposite(self) -> Self {
        match self {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Direction::Egress => 0,
            Direction::Ingress => 1,
        }
    }
}

/// One data syscall on a socket, as captured by the kernel side.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// Whether the process wrote or read these bytes.
    pub direction: Direction,
    /// Syscall entry time, Unix-epoch nanoseconds.
    pub enter_ns: u64,
    /// Syscall exit time, Unix-epoch nanoseconds.
    pub exit_ns: u64,
    /// TCP sequence number of the first byte; `None` for non-TCP sockets.
    pub tcp_seq: Option<u32>,
    /// Number of bytes the syscall transferred.
    pub byte_count: u32,
    /// Captured prefix of those bytes; `payload.len() <= byte_count` (a longer payload is
    /// truncated to `byte_count`).
    pub payload: &'a [u8],
    /// Id of the thread that made the syscall.
    pub tid: u32,
    /// The thread's syscall trace id at this syscall (set by the kernel when the thread
    /// reads a request, carried by what it writes until its response); 0 for none.
    pub syscall_trace_id: u64,
}

/// An application protocol this crate can parse.
///
/// New protocols add a variant here, a detector in [`infer`] and a parser module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L7Protocol {
    /// HTTP/1.0 and HTTP/1.1.
    Http1,
    /// HTTP/2 (h2 over TLS after ALPN, or h2c with the client preface).
    Http2,
    /// gRPC: HTTP/2 with `content-type: application/grpc`.
    Grpc,
    /// Redis RESP2 and RESP3.
    Redis,
    /// MySQL / MariaDB client protocol.
    MySql,
    /// PostgreSQL frontend/backend protocol v3.
    PostgreSql,
    /// DNS over UDP and TCP.
    Dns,
    /// Apache Kafka wire protocol.
    Kafka,
    /// MQTT 3.1.1 and 5.
    Mqtt,
    /// Memcached text protocol.
    Memcached,
    /// MongoDB wire protocol (OP_MSG).
    MongoDb,
    /// AMQP 0-9-1 (RabbitMQ).
    Amqp,
    /// NATS client protocol.
    Nats,
    /// Apache Dubbo 2 (hessian) protocol.
    Dubbo,
}

impl L7Protocol {
    /// The protocol's name in the `l7_protocol` column (DeepFlow's spelling).
    pub fn as_str(&self) -> &'static str {
        match self {
            L7Protocol::Http1 => "HTTP",
            L7Protocol::Http2 => "HTTP2",
            L7Protocol::Grpc => "gRPC",
            L7Protocol::Redis => "Redis",
            L7Protocol::MySql => "MySQL",
            L7Protocol::PostgreSql => "PostgreSQL",
            L7Protocol::Dns => "DNS",
            L7Protocol::Kafka => "Kafka",
            L7Protocol::Mqtt => "MQTT",
            L7Protocol::Memcached => "Memcached",
            L7Protocol::MongoDb => "MongoDB",
            L7Protocol::Amqp => "AMQP",
            L7Protocol::Nats => "NATS",
            L7Protocol::Dubbo => "Dubbo",
        }
    }
}

/// The observed process's role on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The process sends requests (requests are [`Direction::Egress`]).
    Client,
    /// The process answers requests (requests are [`Direction::Ingress`]).
    Server,
}

impl Role {
    /// The value of the `observation_point` column for rows seen in this role.
    pub fn observation_point(&self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }

    /// The direction in which this role sees requests.
    pub fn request_direction(&self) -> Direction {
        match self {
            Role::Client => Direction::Egress,
            Role::Server => Direction::Ingress,
        }
    }

    /// The role of a process that sees requests travelling in `direction`.
    pub fn from_request_direction(direction: Direction) -> Self {
        match direction {
            Direction::Egress => Role::Client,
            Direction::Ingress => Role::Server,
        }
    }
}

/// Outcome class of a request, the `response_status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseStatus {
    /// A response that is not an error (HTTP 1xx–3xx).
    Ok,
    /// The client's fault (HTTP 4xx).
    ClientError,
    /// The server's fault (HTTP 5xx).
    ServerError,
    /// No response within the configured timeout.
    Timeout,
    /// No usable response: the socket closed first, the response was lost, or its code is
    /// outside the classes above.
    Unknown,
}

impl ResponseStatus {
    /// The value of the `response_status` column.
    pub fn as_str(&self) -> &'static str {
        match self {
            ResponseStatus::Ok => "ok",
            ResponseStatus::ClientError => "client_error",
            ResponseStatus::ServerError => "server_error",
            ResponseStatus::Timeout => "timeout",
            ResponseStatus::Unknown => "unknown",
        }
    }

    /// Classifies an HTTP status code as DeepFlow does: 1xx–3xx ok, 4xx client error,
    /// 5xx server error. Codes outside 100..=599 are [`ResponseStatus::Unknown`].
    pub fn from_http_code(code: u16) -> Self {
        match code {
            100..=399 => ResponseStatus::Ok,
            400..=499 => ResponseStatus::ClientError,
            500..=599 => ResponseStatus::ServerError,
            _ => ResponseStatus::Unknown,
        }
    }
}

/// One request/response session: a row of `flow_log.l7_flow_log` as far as this crate
/// knows it (tags such as process, pod or node are added downstream).
#[derive(Debug, Clone, PartialEq)]
pub struct L7Record {
    /// Application protocol.
    pub protocol: L7Protocol,
    /// The observing process's role: `observation_point` is `role.observation_point()`.
    pub role: Role,
    /// Protocol version of the request, `"1.0"` or `"1.1"` for HTTP.
    pub version: String,
    /// The request method.
    pub request_type: String,
    /// The `Host` header, `""` if absent.
    pub request_domain: String,
    /// The request-target as sent (path and query).
    pub request_resource: String,
    /// The path of the request-target without query string (for absolute-form targets, the
    /// path part of the URL).
    pub endpoint: String,
    /// The response code, `None` without a response.
    pub response_code: Option<u16>,
    /// Outcome class.
    pub response_status: ResponseStatus,
    /// The reason phrase of 4xx and 5xx responses, `""` otherwise.
    pub response_exception: String,
    /// What the response returned, where a protocol has a short answer worth keeping
    /// (DeepFlow's `response_result`): DNS answers (addresses, CNAME targets …); `""`
    /// otherwise.
    pub response_result: String,
    /// Rows the statement affected (DeepFlow's `row_effect`): MySQL OK packets and
    /// PostgreSQL CommandComplete tags; `None` where the protocol or response has none.
    pub row_effect: Option<u64>,
    /// Bytes of the whole request on the wire (head and body, with chunk framing).
    pub request_length: u64,
    /// Bytes of the whole response on the wire; `None` without a response or when the
    /// response's end was lost (its framing fell into a capture gap).
    pub response_length: Option<u64>,
    /// `enter_ns` of the first syscall carrying the request.
    pub request_start_ns: u64,
    /// `exit_ns` of the syscall carrying the request's last byte (as far as it was seen).
    pub request_end_ns: u64,
    /// `enter_ns` of the first syscall carrying the response.
    pub response_start_ns: Option<u64>,
    /// `exit_ns` of the syscall carrying the response's last byte (as far as it was seen).
    pub response_end_ns: Option<u64>,
    /// TCP sequence number of the request's first byte.
    pub req_tcp_seq: Option<u32>,
    /// TCP sequence number of the response's first byte.
    pub resp_tcp_seq: Option<u32>,
    /// Thread that made the first syscall carrying the request.
    pub request_tid: u32,
    /// Thread that made the first syscall carrying the response.
    pub response_tid: Option<u32>,
    /// Syscall trace id of the first syscall carrying the request; 0 for none.
    pub request_syscall_trace_id: u64,
    /// Syscall trace id of the first syscall carrying the response; 0 for none.
    pub response_syscall_trace_id: u64,
    /// `X-Request-ID` of the request, or of the response if the request has none.
    pub x_request_id: Option<String>,
    /// Trace id from the request's trace-context header (W3C `traceparent`, B3, Jaeger
    /// `uber-trace-id` or SkyWalking `sw8`: [`trace_context`]), or the response's if the
    /// request has none.
    pub trace_id: Option<String>,
    /// The caller's span id from the same header as `trace_id`.
    pub span_id: Option<String>,
    /// The caller's parent span id, where that header carries one (B3, Jaeger).
    pub parent_span_id: Option<String>,
}

impl L7Record {
    /// A record of `protocol` seen in `role` with every other field empty, for sessions
    /// to fill in.
    pub fn new(protocol: L7Protocol, role: Role) -> Self {
        L7Record {
            protocol,
            role,
            version: String::new(),
            request_type: String::new(),
            request_domain: String::new(),
            request_resource: String::new(),
            endpoint: String::new(),
            response_code: None,
            response_status: ResponseStatus::Unknown,
            response_exception: String::new(),
            response_result: String::new(),
            row_effect: None,
            request_length: 0,
            response_length: None,
            request_start_ns: 0,
            request_end_ns: 0,
            response_start_ns: None,
            response_end_ns: None,
            req_tcp_seq: None,
            resp_tcp_seq: None,
            request_tid: 0,
            response_tid: None,
            request_syscall_trace_id: 0,
            response_syscall_trace_id: 0,
            x_request_id: None,
            trace_id: None,
            span_id: None,
            parent_span_id: None,
        }
    }

    /// `response_end_ns - request_start_ns` in microseconds; `None` without a response.
    pub fn duration_us(&self) -> Option<u64> {
        self.response_end_ns
            .map(|end| end.saturating_sub(self.request_start_ns) / 1_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_deepflow() {
        assert_eq!(L7Protocol::Http1.as_str(), "HTTP");
        assert_eq!(Role::Client.observation_point(), "client");
        assert_eq!(Role::Server.observation_point(), "server");
        let statuses = [
            (ResponseStatus::Ok, "ok"),
            (ResponseStatus::ClientError, "client_error"),
            (ResponseStatus::ServerError, "server_error"),
            (ResponseStatus::Timeout, "timeout"),
            (ResponseStatus::Unknown, "unknown"),
        ];
        for (status, name) in statuses {
            assert_eq!(status.as_str(), name);
        }
    }

    #[test]
    fn http_codes_are_classified() {
        assert_eq!(ResponseStatus::from_http_code(101), ResponseStatus::Ok);
        assert_eq!(ResponseStatus::from_http_code(200), ResponseStatus::Ok);
        assert_eq!(ResponseStatus::from_http_code(304), ResponseStatus::Ok);
        assert_eq!(
            ResponseStatus::from_http_code(404),
            ResponseStatus::ClientError
        );
        assert_eq!(
            ResponseStatus::from_http_code(503),
            ResponseStatus::ServerError
        );
        assert_eq!(ResponseStatus::from_http_code(600), ResponseStatus::Unknown);
        assert_eq!(ResponseStatus::from_http_code(99), ResponseStatus::Unknown);
    }

    #[test]
    fn conversations_can_move_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Conversation>();
        assert_send_sync::<L7Record>();
    }

    #[test]
    fn roles_and_directions() {
        assert_eq!(Role::Client.request_direction(), Direction::Egress);
        assert_eq!(Role::Server.request_direction(), Direction::Ingress);
        assert_eq!(
            Role::from_request_direction(Direction::Ingress),
            Role::Server
        );
        assert_eq!(Direction::Egress.opposite(), Direction::Ingress);
    }
}
