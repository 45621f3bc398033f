//! What every protocol plugs into: [`ProtocolSession`] (one socket, both directions, after
//! inference), and for message-framed protocols the simpler [`Codec`] that
//! [`crate::framed::FramedSession`] drives.

use std::fmt::Debug;

use crate::{ConversationConfig, ConversationStats, Direction, L7Protocol, L7Record, Role};

pub use crate::http1::SyscallMeta;

/// What the sequence number says about the bytes before a chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqStep {
    /// Bytes missing between the previous chunk and this one.
    pub gap: u64,
    /// The sequence number moved backwards or too far: the stream cannot be followed.
    pub discontinuous: bool,
}

/// The parsing state of one socket once its protocol and role are known.
pub(crate) trait ProtocolSession: Debug + Send + Sync {
    fn protocol(&self) -> L7Protocol;
    fn role(&self) -> Role;
    /// No further chunk can produce a row (the connection became a tunnel).
    fn is_tunnel(&self) -> bool {
        false
    }
    /// One syscall's bytes: `step` describes what was missed before them, `payload` is the
    /// captured prefix and `gap_after` the uncaptured rest of the syscall.
    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        direction: Direction,
        meta: &SyscallMeta,
        step: SeqStep,
        payload: &[u8],
        gap_after: u64,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    );
    /// Requests waiting `timeout_ns` or longer at `now_ns` become timeout rows.
    fn expire(
        &mut self,
        now_ns: u64,
        timeout_ns: u64,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    );
    /// The socket closed: complete what close completes, report what is still pending.
    fn close(&mut self, now_ns: u64, stats: &mut ConversationStats, out: &mut Vec<L7Record>);
}

/// How long a decoded message is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireLen {
    /// Exactly this many bytes from the start of the buffer given to the codec. May exceed
    /// the bytes given: the rest is skipped as it arrives, through gaps.
    Exact(u64),
    /// The message ends where the current syscall's bytes end (its framing lies in bytes
    /// that were not captured). The next message is looked for at the next syscall.
    ToChunkEnd,
}

/// What a codec makes of the bytes at a message boundary.
#[derive(Debug, Clone, PartialEq)]
pub enum Decode<M> {
    /// A complete message (the exchange's request, or its final response).
    Message {
        /// Its length on the wire.
        len: WireLen,
        /// What it means.
        msg: M,
    },
    /// A message that belongs to the exchange in progress but does not end it: a row of a
    /// MySQL result set, a PostgreSQL `Bind` before `Sync`, a continuation frame. Counted in
    /// the exchange's length and time span.
    Continue {
        /// Its length on the wire.
        len: WireLen,
    },
    /// Bytes that belong to no exchange and are not an error (keep-alives, notices,
    /// one-way messages of no interest): skipped.
    Skip {
        /// Its length on the wire.
        len: WireLen,
    },
    /// `buf` is a prefix of a message: more bytes are needed.
    NeedMore,
    /// Not a message start: framing is lost; the session resynchronises at a later syscall.
    Invalid,
}

/// A message-framed request/response protocol, as [`crate::framed::FramedSession`] sees it.
///
/// Codecs are pure parsers: the session owns buffering (bounded), gaps, timing, sequence
/// numbers, pairing and row assembly.
///
/// The bytes a codec gets are only what was captured: each syscall's payload is a prefix
/// (1 KiB by default) of what it transferred. So a codec decodes from the head of a
/// message: it returns `NeedMore` only while the fields it needs are incomplete, and
/// otherwise `Message` with the full wire length even when that is longer than `buf` (the
/// session skips the rest). A `NeedMore` followed by uncaptured bytes loses framing; where
/// the length cannot be known from the captured head, return `WireLen::ToChunkEnd`. A codec may keep state (a prepared-statement table,
/// an HPACK table) and is told which request a response answers when pairing is FIFO.
pub trait Codec: Debug + Send + Sync + 'static {
    /// A decoded request (what `fill` needs of it, not the bytes).
    type Request: Debug + Send + Sync;
    /// A decoded final response.
    type Response: Debug + Send + Sync;

    /// The protocol this codec speaks.
    fn protocol(&self) -> L7Protocol;

    /// Decodes the message at the start of `buf` in the request direction.
    fn decode_request(&mut self, buf: &[u8]) -> Decode<Self::Request>;

    /// Decodes the message at the start of `buf` in the response direction. `pending` is
    /// the oldest request still waiting (FIFO protocols), for responses whose shape depends
    /// on the request (MySQL result sets, memcached `get`).
    fn decode_response(
        &mut self,
        buf: &[u8],
        pending: Option<&Self::Request>,
    ) -> Decode<Self::Response>;

    /// The id that pairs a request with its response (DNS id, Kafka correlation id, HTTP/2
    /// stream id ...). `None` for both means FIFO order (pipelined protocols).
    fn request_key(&self, _request: &Self::Request) -> Option<u64> {
        None
    }
    /// The id of a response; see [`Codec::request_key`].
    fn response_key(&self, _response: &Self::Response) -> Option<u64> {
        None
    }

    /// Whether the request expects a response at all (a fire-and-forget message, e.g. an
    /// MQTT QoS 0 PUBLISH or a memcached `noreply`). Such requests become rows at once.
    fn expects_response(&self, _request: &Self::Request) -> bool {
        true
    }

    /// Fills the protocol fields of `record` (`request_type`, `request_domain`,
    /// `request_resource`, `endpoint`, `version`, `response_code`, `response_status`,
    /// `response_exception`, correlation ids). Timing, lengths, sequence numbers, threads
    /// and the role are filled by the session. With `response == None` the request got no
    /// answer (timeout, close); leave `response_status` alone then.
    fn fill(
        &self,
        request: &Self::Request,
        response: Option<&Self::Response>,
        record: &mut L7Record,
    );
}

/// Builds the session for an inferred protocol.
pub(crate) fn new_session(
    protocol: L7Protocol,
    role: Role,
    config: &ConversationConfig,
) -> Box<dyn ProtocolSession> {
    match protocol {
        L7Protocol::Http1 => Box::new(crate::conversation::Http1Session::new(role, config)),
        L7Protocol::Http2 => crate::http2::new_session(role, config),
        L7Protocol::Grpc => crate::http2::new_session(role, config),
        L7Protocol::Redis => crate::redis::new_session(role, config),
        L7Protocol::MySql => crate::mysql::new_session(role, config),
        L7Protocol::PostgreSql => crate::postgres::new_session(role, config),
        L7Protocol::Dns => crate::dns::new_session(role, config),
        L7Protocol::Kafka => crate::kafka::new_session(role, config),
        L7Protocol::Mqtt => crate::mqtt::new_session(role, config),
        L7Protocol::Memcached => crate::memcached::new_session(role, config),
        L7Protocol::MongoDb => crate::mongodb::new_session(role, config),
        L7Protocol::Amqp => crate::amqp::new_session(role, config),
        L7Protocol::Nats => crate::nats::new_session(role, config),
        L7Protocol::Dubbo => crate::dubbo::new_session(role, config),
    }
}
