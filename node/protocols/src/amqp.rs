//! AMQP 0-9-1 (RabbitMQ): a [`Codec`] for [`FramedSession`].
//!
//! After the client's protocol header `AMQP\x00\x00\x09\x01`, both peers exchange frames:
//! `type: u8` (1 method, 2 content header, 3 content body, 8 heartbeat), `channel: u16`,
//! `size: u32`, `size` payload bytes and the frame end `0xCE` (AMQP 0-9-1 specification,
//! §4.2.3). A method frame's payload starts with `class-id: u16` and `method-id: u16`.
//!
//! # Requests and responses
//!
//! The client's synchronous methods (`Connection.Open`, `Channel.Open`, `Queue.Declare`,
//! `Basic.Get`, `Basic.Consume`, `Tx.Commit` …) are requests; the server's `-Ok` reply on
//! the same channel answers them (pairing is by channel, in order within a channel). A
//! server's `Channel.Close`/`Connection.Close` also answers the request pending on its
//! channel — that is how the server refuses one (a passive `Queue.Declare` of a missing
//! queue gets `Channel.Close` 404). Methods with their `no-wait` bit set expect no reply.
//!
//! `Basic.Publish` is one-way: its method frame, content header and body frames form one
//! request (the header and body frames are `Continue`s; the frame that completes the body
//! size announced by the header ends it) that becomes a row at once. The client's
//! `Basic.Ack`, `Basic.Nack`, `Basic.Reject` and `Basic.RecoverAsync` are one-way rows too.
//! `Basic.GetOk` and its content form one response.
//!
//! A [`FramedSession`] has one request direction, so the server's own requests and
//! pushes — `Connection.Start`/`Secure`/`Tune` and the client's answers, `Basic.Deliver`
//! and `Basic.Return` with their content, publisher confirms, `Connection.Blocked`,
//! heartbeats — are skipped: they make no rows.
//!
//! # Detection
//!
//! The protocol header (from the client: the sender is the client), or — for connections
//! seen mid-stream — a method frame of a known class and method whose frame end `0xCE`
//! is captured at the place its size gives; a method only a client sends makes the sender
//! the client, one only a server sends makes it the server.
//!
//! # Fields (DeepFlow's `mq/amqp.rs`)
//!
//! | column | value |
//! |---|---|
//! | `request_type` | `Class.Method`, e.g. `Queue.Declare`, `Basic.Publish` |
//! | `request_domain` | the virtual host of `Connection.Open` |
//! | `request_resource`, `endpoint` | the routing key if not empty, else the queue (from the request, or from `Queue.DeclareOk` for a server-named queue), else the exchange |
//! | `version` | `0.9.1` |
//! | `response_code` | the reply code of a `Channel.Close`/`Connection.Close` (the server's, or the client's own when it closed) |
//! | `response_status` | `ok`; a close with a 3xx/4xx reply code is `client_error`, 5xx `server_error` (200, and the 0 pika sends, are `ok`) |
//! | `response_exception` | the close's reply text, when it is an error |
//!
//! Where flowmesh differs from DeepFlow, and why:
//! - DeepFlow logs every frame it classifies, server pushes included (`Basic.Deliver` …);
//!   here they make no rows (one request direction per socket, see above).
//! - DeepFlow's `response_code` is the method id of the reply; flowmesh uses AMQP's reply
//!   codes, which mean something, and classifies them.
//! - DeepFlow's endpoint falls back to nothing for a publish with an empty routing key;
//!   flowmesh falls back to the exchange.
//! - DeepFlow's version string is `v0.9.1`; flowmesh writes `0.9.1`.
//! - Trace context in message headers is not read.

use crate::framed::FramedSession;
use crate::infer::{Detection, Inference};
use crate::session::{Codec, Decode, ProtocolSession, WireLen};
use crate::{ConversationConfig, Direction, L7Protocol, L7Record, ResponseStatus, Role};

const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
const FRAME_END: u8 = 0xce;
const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
/// Bytes of a method frame waited for before decoding it (all of a shorter one).
const METHOD_WANT: usize = 512;
/// Channels with content in progress remembered per direction.
const MAX_CONTENT: usize = 64;

/// Who sends a method and what it is to this codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A client's synchronous request.
    Request,
    /// A client's asynchronous method: a one-way row.
    OneWay,
    /// `Basic.Publish`: one-way, with content.
    Publish,
    /// A server's reply to a client's request.
    Reply,
    /// `Basic.GetOk`: a reply with content.
    GetOk,
    /// Sent by either peer: `Close`, `CloseOk`, `Flow`, `FlowOk`, `Cancel`, `CancelOk`.
    Either,
    /// A client's answer to a server's request.
    Answer,
    /// A server's request or push.
    Push,
    /// `Basic.Deliver` and `Basic.Return`: pushes with content.
    PushContent,
}

/// Class and method names, and the method's [`Kind`].
fn method(class: u16, method: u16) -> Option<(&'static str, &'static str, Kind)> {
    use Kind::*;
    let (class_name, method_name, kind) = match (class, method) {
        (10, 10) => ("Connection", "Start", Push),
        (10, 11) => ("Connection", "StartOk", Answer),
        (10, 20) => ("Connection", "Secure", Push),
        (10, 21) => ("Connection", "SecureOk", Answer),
        (10, 30) => ("Connection", "Tune", Push),
        (10, 31) => ("Connection", "TuneOk", Answer),
        (10, 40) => ("Connection", "Open", Request),
        (10, 41) => ("Connection", "OpenOk", Reply),
        (10, 50) => ("Connection", "Close", Either),
        (10, 51) => ("Connection", "CloseOk", Either),
        (10, 60) => ("Connection", "Blocked", Push),
        (10, 61) => ("Connection", "Unblocked", Push),
        (10, 70) => ("Connection", "UpdateSecret", Request),
        (10, 71) => ("Connection", "UpdateSecretOk", Reply),
        (20, 10) => ("Channel", "Open", Request),
        (20, 11) => ("Channel", "OpenOk", Reply),
        (20, 20) => ("Channel", "Flow", Either),
        (20, 21) => ("Channel", "FlowOk", Either),
        (20, 40) => ("Channel", "Close", Either),
        (20, 41) => ("Channel", "CloseOk", Either),
        (40, 10) => ("Exchange", "Declare", Request),
        (40, 11) => ("Exchange", "DeclareOk", Reply),
        (40, 20) => ("Exchange", "Delete", Request),
        (40, 21) => ("Exchange", "DeleteOk", Reply),
        (40, 30) => ("Exchange", "Bind", Request),
        (40, 31) => ("Exchange", "BindOk", Reply),
        (40, 40) => ("Exchange", "Unbind", Request),
        (40, 51) => ("Exchange", "UnbindOk", Reply),
        (50, 10) => ("Queue", "Declare", Request),
        (50, 11) => ("Queue", "DeclareOk", Reply),
        (50, 20) => ("Queue", "Bind", Request),
        (50, 21) => ("Queue", "BindOk", Reply),
        (50, 30) => ("Queue", "Purge", Request),
        (50, 31) => ("Queue", "PurgeOk", Reply),
        (50, 40) => ("Queue", "Delete", Request),
        (50, 41) => ("Queue", "DeleteOk", Reply),
        (50, 50) => ("Queue", "Unbind", Request),
        (50, 51) => ("Queue", "UnbindOk", Reply),
        (60, 10) => ("Basic", "Qos", Request),
        (60, 11) => ("Basic", "QosOk", Reply),
        (60, 20) => ("Basic", "Consume", Request),
        (60, 21) => ("Basic", "ConsumeOk", Reply),
        (60, 30) => ("Basic", "Cancel", Either),
        (60, 31) => ("Basic", "CancelOk", Either),
        (60, 40) => ("Basic", "Publish", Publish),
        (60, 50) => ("Basic", "Return", PushContent),
        (60, 60) => ("Basic", "Deliver", PushContent),
        (60, 70) => ("Basic", "Get", Request),
        (60, 71) => ("Basic", "GetOk", GetOk),
        (60, 72) => ("Basic", "GetEmpty", Reply),
        // client acks of deliveries; the server's (publisher confirms) are skipped
        (60, 80) => ("Basic", "Ack", OneWay),
        (60, 90) => ("Basic", "Reject", OneWay),
        (60, 100) => ("Basic", "RecoverAsync", OneWay),
        (60, 110) => ("Basic", "Recover", Request),
        (60, 111) => ("Basic", "RecoverOk", Reply),
        (60, 120) => ("Basic", "Nack", OneWay),
        (85, 10) => ("Confirm", "Select", Request),
        (85, 11) => ("Confirm", "SelectOk", Reply),
        (90, 10) => ("Tx", "Select", Request),
        (90, 11) => ("Tx", "SelectOk", Reply),
        (90, 20) => ("Tx", "Commit", Request),
        (90, 21) => ("Tx", "CommitOk", Reply),
        (90, 30) => ("Tx", "Rollback", Request),
        (90, 31) => ("Tx", "RollbackOk", Reply),
        _ => return None,
    };
    Some((class_name, method_name, kind))
}

/// Whether a method is one a client sends first (`Some(true)`), one a server sends first
/// (`Some(false)`), or either (`None`).
fn sent_by_client(kind: Kind) -> Option<bool> {
    match kind {
        Kind::Request | Kind::OneWay | Kind::Publish | Kind::Answer => Some(true),
        Kind::Reply | Kind::GetOk | Kind::Push | Kind::PushContent => Some(false),
        Kind::Either => None,
    }
}

/// A bounds-checked reader of method arguments (§4.2.5: big-endian integers, short
/// strings with a one-byte length).
struct Args<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Args<'a> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.buf.get(self.pos..self.pos + 2)?;
        self.pos += 2;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.buf.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(())
    }

    fn shortstr(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(self.u8()?);
        let s = self.buf.get(self.pos..self.pos + len)?;
        self.pos += len;
        Some(s)
    }

    fn string(&mut self) -> Option<String> {
        self.shortstr()
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }
}

/// What a method frame's arguments say, as far as they are captured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Fields {
    exchange: String,
    routing_key: String,
    queue: String,
    virtual_host: String,
    no_wait: bool,
    reply_code: Option<u16>,
    reply_text: String,
}

/// Reads the arguments of `class.method` that `fill` uses (§1.5 "Class and method
/// details" of the 0-9-1 reference). Missing bytes leave fields empty.
fn fields(class: u16, method: u16, args: &[u8]) -> Fields {
    let mut f = Fields::default();
    let mut a = Args { buf: args, pos: 0 };
    let _ = (|| -> Option<()> {
        match (class, method) {
            (10, 40) => f.virtual_host = a.string()?,
            (10, 50) | (20, 40) => {
                f.reply_code = Some(a.u16()?);
                f.reply_text = a.string()?;
            }
            // Exchange.Declare: reserved, exchange, type, bits (no-wait is bit 4)
            (40, 10) => {
                a.skip(2)?;
                f.exchange = a.string()?;
                a.shortstr()?;
                f.no_wait = a.u8()? & 0x10 != 0;
            }
            // Exchange.Delete: reserved, exchange, bits (no-wait is bit 1)
            (40, 20) => {
                a.skip(2)?;
                f.exchange = a.string()?;
                f.no_wait = a.u8()? & 0x02 != 0;
            }
            // Exchange.Bind/Unbind: reserved, destination, source, routing-key, bits
            (40, 30) | (40, 40) => {
                a.skip(2)?;
                f.exchange = a.string()?;
                a.shortstr()?;
                f.routing_key = a.string()?;
                f.no_wait = a.u8()? & 0x01 != 0;
            }
            // Queue.Declare: reserved, queue, bits (no-wait is bit 4)
            (50, 10) => {
                a.skip(2)?;
                f.queue = a.string()?;
                f.no_wait = a.u8()? & 0x10 != 0;
            }
            // Queue.DeclareOk: queue
            (50, 11) => f.queue = a.string()?,
            // Queue.Bind: reserved, queue, exchange, routing-key, bits (no-wait is bit 0);
            // Queue.Unbind has the same fields up to the routing key and no no-wait
            (50, 20) | (50, 50) => {
                a.skip(2)?;
                f.queue = a.string()?;
                f.exchange = a.string()?;
                f.routing_key = a.string()?;
                if method == 20 {
                    f.no_wait = a.u8()? & 0x01 != 0;
                }
            }
            // Queue.Purge: reserved, queue, bits (no-wait bit 0); Queue.Delete: bit 2
            (50, 30) | (50, 40) => {
                a.skip(2)?;
                f.queue = a.string()?;
                let mask = if method == 30 { 0x01 } else { 0x04 };
                f.no_wait = a.u8()? & mask != 0;
            }
            // Basic.Consume: reserved, queue, consumer-tag, bits (no-wait is bit 3)
            (60, 20) => {
                a.skip(2)?;
                f.queue = a.string()?;
                a.shortstr()?;
                f.no_wait = a.u8()? & 0x08 != 0;
            }
            // Basic.Cancel: consumer-tag, bits (no-wait is bit 0)
            (60, 30) => {
                a.shortstr()?;
                f.no_wait = a.u8()? & 0x01 != 0;
            }
            // Basic.Publish: reserved, exchange, routing-key
            (60, 40) => {
                a.skip(2)?;
                f.exchange = a.string()?;
                f.routing_key = a.string()?;
            }
            // Basic.Get: reserved, queue
            (60, 70) => {
                a.skip(2)?;
                f.queue = a.string()?;
            }
            // Basic.GetOk: delivery-tag, redelivered, exchange, routing-key
            (60, 71) => {
                a.skip(9)?;
                f.exchange = a.string()?;
                f.routing_key = a.string()?;
            }
            // Confirm.Select: bits (no-wait is bit 0)
            (85, 10) => f.no_wait = a.u8()? & 0x01 != 0,
            _ => {}
        }
        Some(())
    })();
    f
}

/// A decoded request (a method, with its content for `Basic.Publish`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AmqpRequest {
    channel: u16,
    class: &'static str,
    method: &'static str,
    fields: Fields,
    one_way: bool,
}

/// A decoded reply (or a server's close answering a request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AmqpResponse {
    channel: u16,
    fields: Fields,
}

/// The message a channel's content frames complete.
#[derive(Debug, Clone)]
enum Owner {
    Publish(AmqpRequest),
    GetOk(AmqpResponse),
    /// Content of a skipped push (`Basic.Deliver`, `Basic.Return`).
    Skipped,
}

/// Content in progress on a channel: its owner and the body bytes still expected (`None`
/// before the content header).
#[derive(Debug, Clone)]
struct Content {
    channel: u16,
    owner: Owner,
    body_left: Option<u64>,
}

/// The AMQP codec: the virtual host, and the content in progress per direction.
#[derive(Debug, Default)]
pub(crate) struct AmqpCodec {
    virtual_host: String,
    /// Index 0: the request direction, 1: the response direction.
    content: [Vec<Content>; 2],
}

/// A frame's type, channel and total length, if its 7-byte header is in `buf`.
fn frame_header(buf: &[u8]) -> Option<(u8, u16, u64)> {
    let b = buf.get(..7)?;
    let size = u32::from_be_bytes([b[3], b[4], b[5], b[6]]);
    Some((b[0], u16::from_be_bytes([b[1], b[2]]), 8 + u64::from(size)))
}

/// What the frame at the start of a buffer is.
enum Frame<'a> {
    /// The protocol header (or another version's).
    ProtocolHeader,
    Method {
        channel: u16,
        class: u16,
        method: u16,
        args: &'a [u8],
        total: u64,
    },
    /// A content header announcing `body_size` bytes.
    ContentHeader {
        channel: u16,
        body_size: u64,
        total: u64,
    },
    Body {
        channel: u16,
        size: u64,
        total: u64,
    },
    Heartbeat {
        total: u64,
    },
}

/// Splits the frame at the start of `buf`: `Err(true)` needs more bytes, `Err(false)` is
/// not a frame.
fn frame(buf: &[u8]) -> Result<Frame<'_>, bool> {
    if buf.first() == Some(&b'A') {
        return match buf.get(..8) {
            Some(h) if h.starts_with(b"AMQP") => Ok(Frame::ProtocolHeader),
            Some(_) => Err(false),
            None if b"AMQP".starts_with(&buf[..buf.len().min(4)]) => Err(true),
            None => Err(false),
        };
    }
    let (kind, channel, total) = frame_header(buf).ok_or(true)?;
    let end = usize::try_from(total).unwrap_or(usize::MAX);
    if let Some(b) = buf.get(end - 1)
        && *b != FRAME_END
    {
        return Err(false);
    }
    let payload = &buf[7..buf.len().min(end - 1)];
    let complete = buf.len() >= end;
    match kind {
        FRAME_METHOD => {
            if total < 12 {
                return Err(false);
            }
            if payload.len() < 4 || (!complete && buf.len() < METHOD_WANT) {
                return Err(true);
            }
            Ok(Frame::Method {
                channel,
                class: u16::from_be_bytes([payload[0], payload[1]]),
                method: u16::from_be_bytes([payload[2], payload[3]]),
                args: &payload[4..],
                total,
            })
        }
        FRAME_HEADER => {
            if total < 8 + 14 {
                return Err(false);
            }
            let b = payload.get(..12).ok_or(true)?;
            let body_size = u64::from_be_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]);
            Ok(Frame::ContentHeader {
                channel,
                body_size,
                total,
            })
        }
        FRAME_BODY => Ok(Frame::Body {
            channel,
            size: total - 8,
            total,
        }),
        FRAME_HEARTBEAT => Ok(Frame::Heartbeat { total }),
        _ => Err(false),
    }
}

/// What a decoded frame means to the session.
enum Step<M> {
    Message(M),
    Continue,
    Skip,
}

impl AmqpCodec {
    fn content_at(&self, d: usize, channel: u16) -> Option<usize> {
        self.content[d].iter().position(|c| c.channel == channel)
    }

    fn start_content(&mut self, d: usize, channel: u16, owner: Owner) {
        if let Some(i) = self.content_at(d, channel) {
            // a method without the content announced before it: that content is lost
            self.content[d].remove(i);
        }
        if self.content[d].len() >= MAX_CONTENT {
            self.content[d].remove(0);
        }
        self.content[d].push(Content {
            channel,
            owner,
            body_left: None,
        });
    }

    /// A content header or body frame of `channel`: `Continue` while content is expected,
    /// its owner when it completes, `Skip` for content nobody waits for.
    fn content_frame(
        &mut self,
        d: usize,
        channel: u16,
        header: Option<u64>,
        body: u64,
    ) -> Step<Owner> {
        let Some(i) = self.content_at(d, channel) else {
            return Step::Skip;
        };
        let content = &mut self.content[d][i];
        let left = match (header, content.body_left) {
            (Some(size), None) => size,
            (None, Some(left)) => left.saturating_sub(body),
            // a second header or a body before the header: not content we follow
            _ => {
                self.content[d].remove(i);
                return Step::Skip;
            }
        };
        if left > 0 {
            content.body_left = Some(left);
            return match content.owner {
                Owner::Skipped => Step::Skip,
                _ => Step::Continue,
            };
        }
        let done = self.content[d].remove(i);
        match done.owner {
            Owner::Skipped => Step::Skip,
            owner => Step::Message(owner),
        }
    }

    fn request_step(&mut self, f: &Frame<'_>) -> Step<AmqpRequest> {
        match *f {
            Frame::Method {
                channel,
                class,
                method: m,
                args,
                ..
            } => {
                let Some((class_name, method_name, kind)) = method(class, m) else {
                    return Step::Skip;
                };
                let request = |fields: Fields, one_way: bool| AmqpRequest {
                    channel,
                    class: class_name,
                    method: method_name,
                    one_way: one_way || fields.no_wait,
                    fields,
                };
                match kind {
                    Kind::Request => {
                        let fields = fields(class, m, args);
                        if class == 10 && m == 40 {
                            self.virtual_host = fields.virtual_host.clone();
                        }
                        Step::Message(request(fields, false))
                    }
                    Kind::OneWay => Step::Message(request(Fields::default(), true)),
                    Kind::Publish => {
                        let publish = request(fields(class, m, args), true);
                        self.start_content(0, channel, Owner::Publish(publish));
                        Step::Continue
                    }
                    // a client's Close/Flow/Cancel is a request; its CloseOk/FlowOk/CancelOk
                    // answers the server's
                    Kind::Either if matches!(m, 50 | 40 | 20 | 30) => {
                        Step::Message(request(fields(class, m, args), false))
                    }
                    _ => Step::Skip,
                }
            }
            Frame::ContentHeader {
                channel, body_size, ..
            } => match self.content_frame(0, channel, Some(body_size), 0) {
                Step::Message(Owner::Publish(publish)) => Step::Message(publish),
                Step::Continue => Step::Continue,
                _ => Step::Skip,
            },
            Frame::Body { channel, size, .. } => match self.content_frame(0, channel, None, size) {
                Step::Message(Owner::Publish(publish)) => Step::Message(publish),
                Step::Continue => Step::Continue,
                _ => Step::Skip,
            },
            Frame::ProtocolHeader | Frame::Heartbeat { .. } => Step::Skip,
        }
    }

    fn response_step(&mut self, f: &Frame<'_>) -> Step<AmqpResponse> {
        match *f {
            Frame::Method {
                channel,
                class,
                method: m,
                args,
                ..
            } => {
                let Some((_, _, kind)) = method(class, m) else {
                    return Step::Skip;
                };
                let response = AmqpResponse {
                    channel,
                    fields: fields(class, m, args),
                };
                match kind {
                    Kind::Reply => Step::Message(response),
                    // the server's Close answers (refuses) the pending request; its
                    // CloseOk/FlowOk/CancelOk answer the client's
                    Kind::Either if matches!(m, 50 | 40 | 41 | 51 | 21 | 31) => {
                        Step::Message(response)
                    }
                    Kind::GetOk => {
                        self.start_content(1, channel, Owner::GetOk(response));
                        Step::Continue
                    }
                    Kind::PushContent => {
                        self.start_content(1, channel, Owner::Skipped);
                        Step::Skip
                    }
                    _ => Step::Skip,
                }
            }
            Frame::ContentHeader {
                channel, body_size, ..
            } => match self.content_frame(1, channel, Some(body_size), 0) {
                Step::Message(Owner::GetOk(response)) => Step::Message(response),
                Step::Continue => Step::Continue,
                _ => Step::Skip,
            },
            Frame::Body { channel, size, .. } => match self.content_frame(1, channel, None, size) {
                Step::Message(Owner::GetOk(response)) => Step::Message(response),
                Step::Continue => Step::Continue,
                _ => Step::Skip,
            },
            Frame::ProtocolHeader | Frame::Heartbeat { .. } => Step::Skip,
        }
    }
}

fn wire_len(f: &Frame<'_>) -> WireLen {
    WireLen::Exact(match *f {
        Frame::ProtocolHeader => 8,
        Frame::Method { total, .. }
        | Frame::ContentHeader { total, .. }
        | Frame::Body { total, .. }
        | Frame::Heartbeat { total } => total,
    })
}

fn decode<M>(buf: &[u8], step: impl FnOnce(&Frame<'_>) -> Step<M>) -> Decode<M> {
    match frame(buf) {
        Ok(f) => {
            let len = wire_len(&f);
            match step(&f) {
                Step::Message(msg) => Decode::Message { len, msg },
                Step::Continue => Decode::Continue { len },
                Step::Skip => Decode::Skip { len },
            }
        }
        Err(true) => Decode::NeedMore,
        Err(false) => Decode::Invalid,
    }
}

/// The status class of an AMQP reply code (§1.2 "Constants": 3xx/4xx soft and hard errors
/// caused by the client, 5xx by the server or the connection).
fn reply_status(code: u16) -> ResponseStatus {
    match code {
        // pika closes with 0 ("Normal shutdown") where the specification says 200
        0 | 200 => ResponseStatus::Ok,
        300..=499 => ResponseStatus::ClientError,
        500..=599 => ResponseStatus::ServerError,
        _ => ResponseStatus::Unknown,
    }
}

impl Codec for AmqpCodec {
    type Request = AmqpRequest;
    type Response = AmqpResponse;

    fn protocol(&self) -> L7Protocol {
        L7Protocol::Amqp
    }

    fn decode_request(&mut self, buf: &[u8]) -> Decode<AmqpRequest> {
        decode(buf, |f| self.request_step(f))
    }

    fn decode_response(
        &mut self,
        buf: &[u8],
        _pending: Option<&AmqpRequest>,
    ) -> Decode<AmqpResponse> {
        decode(buf, |f| self.response_step(f))
    }

    fn request_key(&self, request: &AmqpRequest) -> Option<u64> {
        Some(u64::from(request.channel))
    }

    fn response_key(&self, response: &AmqpResponse) -> Option<u64> {
        Some(u64::from(response.channel))
    }

    fn expects_response(&self, request: &AmqpRequest) -> bool {
        !request.one_way
    }

    fn fill(&self, request: &AmqpRequest, response: Option<&AmqpResponse>, record: &mut L7Record) {
        let q = &request.fields;
        record.request_type = format!("{}.{}", request.class, request.method);
        record.version = "0.9.1".to_string();
        record.request_domain = self.virtual_host.clone();
        let queue = match response {
            Some(r) if q.queue.is_empty() => &r.fields.queue,
            _ => &q.queue,
        };
        let resource = [&q.routing_key, queue, &q.exchange]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_default();
        record.endpoint = resource.clone();
        record.request_resource = resource;
        let Some(response) = response else {
            return;
        };
        // the server's close, else the client's own close answered by CloseOk
        let close = match response.fields.reply_code {
            Some(code) => Some((code, &response.fields.reply_text)),
            None => q.reply_code.map(|code| (code, &q.reply_text)),
        };
        match close {
            Some((code, text)) => {
                record.response_code = Some(code);
                record.response_status = reply_status(code);
                if record.response_status != ResponseStatus::Ok {
                    record.response_exception = text.clone();
                }
            }
            None => record.response_status = ResponseStatus::Ok,
        }
    }
}

/// Recognises the protocol header or a method frame at the start of a chunk (see the
/// module docs).
pub(crate) fn detect(bytes: &[u8], direction: Direction) -> Detection {
    let matched = |client: bool| {
        Detection::Match(Inference {
            protocol: L7Protocol::Amqp,
            role: Role::from_request_direction(if client {
                direction
            } else {
                direction.opposite()
            }),
        })
    };
    if bytes.first() == Some(&b'A') {
        return if bytes.starts_with(PROTOCOL_HEADER) {
            matched(true)
        } else if PROTOCOL_HEADER.starts_with(bytes) {
            Detection::NeedMore
        } else {
            Detection::NoMatch
        };
    }
    let Some((FRAME_METHOD, _, total)) = frame_header(bytes) else {
        return Detection::NoMatch;
    };
    let end = usize::try_from(total).unwrap_or(usize::MAX);
    if total < 12 || bytes.get(end - 1) != Some(&FRAME_END) {
        return Detection::NoMatch;
    }
    let (class, m) = (
        u16::from_be_bytes([bytes[7], bytes[8]]),
        u16::from_be_bytes([bytes[9], bytes[10]]),
    );
    match method(class, m).and_then(|(_, _, kind)| sent_by_client(kind)) {
        Some(client) => matched(client),
        None => Detection::NoMatch,
    }
}

/// The session of a socket `detect` recognised.
pub(crate) fn new_session(role: Role, config: &ConversationConfig) -> Box<dyn ProtocolSession> {
    Box::new(FramedSession::new(AmqpCodec::default(), role, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![kind];
        f.extend_from_slice(&channel.to_be_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f.push(FRAME_END);
        f
    }

    fn method_frame(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
        let mut payload = class.to_be_bytes().to_vec();
        payload.extend_from_slice(&method.to_be_bytes());
        payload.extend_from_slice(args);
        frame(FRAME_METHOD, channel, &payload)
    }

    fn is_amqp(bytes: &[u8], direction: Direction) -> Option<Role> {
        match detect(bytes, direction) {
            Detection::Match(i) if i.protocol == L7Protocol::Amqp => Some(i.role),
            _ => None,
        }
    }

    #[test]
    fn detects_the_protocol_header_and_method_frames() {
        assert_eq!(
            is_amqp(PROTOCOL_HEADER, Direction::Egress),
            Some(Role::Client)
        );
        assert_eq!(
            is_amqp(PROTOCOL_HEADER, Direction::Ingress),
            Some(Role::Server)
        );
        assert_eq!(detect(b"AMQP\x00", Direction::Egress), Detection::NeedMore);
        // Channel.Open sent: a client; Queue.DeclareOk sent: a server
        let open = method_frame(1, 20, 10, &[0]);
        assert_eq!(is_amqp(&open, Direction::Egress), Some(Role::Client));
        let declare_ok = method_frame(1, 50, 11, &[1, b'q', 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(is_amqp(&declare_ok, Direction::Egress), Some(Role::Server));
        // a close can come from either side: not enough to decide
        assert_eq!(
            is_amqp(&method_frame(1, 20, 40, &[0; 8]), Direction::Egress),
            None
        );
    }

    #[test]
    fn detection_rejects_everything_else() {
        let open = method_frame(1, 20, 10, &[0]);
        let mut bad_end = open.clone();
        *bad_end.last_mut().unwrap_or(&mut 0) = 0;
        let mut bad_method = open.clone();
        bad_method[10] = 99;
        let truncated = &open[..open.len() - 1];
        let others: [&[u8]; 11] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"AMQP\x01\x01\x00\x09",
            b"AMQX\x00\x00\x09\x01",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"*1\r\n$4\r\nPING\r\n",
            b"INFO {\"server_id\":\"x\"}\r\n",
            b"\xda\xbb\xc2\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x10",
            b"\x00\x00\x00\x30\x00\x12\x00\x03\x00\x00\x00\x01\x00\x10flowmesh-fixture",
            // MongoDB OP_MSG with a length whose low byte is 1
            b"\x01\x01\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00\x00\x00\x00\x00\x00",
            // MySQL COM_QUIT
            b"\x01\x00\x00\x00\x01",
        ];
        for bytes in others
            .iter()
            .copied()
            .chain([&bad_end[..], &bad_method[..], truncated])
        {
            assert_eq!(is_amqp(bytes, Direction::Egress), None, "{bytes:?}");
        }
        let mut state = 0x1234_5678_9abc_def1u64;
        for _ in 0..20_000 {
            let mut bytes = [0u8; 40];
            for b in &mut bytes {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            assert_eq!(is_amqp(&bytes, Direction::Egress), None);
            // a method frame type and a size that puts the end inside
            bytes[0] = FRAME_METHOD;
            bytes[3..7].copy_from_slice(&20u32.to_be_bytes());
            assert_eq!(is_amqp(&bytes, Direction::Egress), None, "{bytes:?}");
        }
    }

    #[test]
    fn publish_content_is_one_request() {
        let mut codec = AmqpCodec::default();
        let publish = method_frame(1, 60, 40, &[0, 0, 1, b'x', 2, b'r', b'k', 0]);
        let mut header_payload = 60u16.to_be_bytes().to_vec();
        header_payload.extend_from_slice(&[0, 0]);
        header_payload.extend_from_slice(&5u64.to_be_bytes());
        header_payload.extend_from_slice(&[0, 0]);
        let header = frame(FRAME_HEADER, 1, &header_payload);
        assert!(matches!(
            codec.decode_request(&publish),
            Decode::Continue { .. }
        ));
        assert!(matches!(
            codec.decode_request(&header),
            Decode::Continue { .. }
        ));
        assert!(matches!(
            codec.decode_request(&frame(FRAME_BODY, 1, b"abc")),
            Decode::Continue { .. }
        ));
        let Decode::Message { len, msg } = codec.decode_request(&frame(FRAME_BODY, 1, b"de"))
        else {
            panic!("publish not completed");
        };
        assert_eq!(len, WireLen::Exact(10));
        assert!(!codec.expects_response(&msg));
        assert_eq!(
            (
                msg.fields.exchange.as_str(),
                msg.fields.routing_key.as_str()
            ),
            ("x", "rk")
        );
        // body frames nobody waits for are skipped
        assert!(matches!(
            codec.decode_request(&frame(FRAME_BODY, 1, b"zz")),
            Decode::Skip { .. }
        ));
        // a frame whose end byte is wrong loses framing
        let mut bad = frame(FRAME_BODY, 1, b"zz");
        bad[9] = 0;
        assert_eq!(codec.decode_request(&bad), Decode::Invalid);
        // prefixes of a method frame wait for more
        for n in 0..publish.len() {
            assert_eq!(codec.decode_request(&publish[..n]), Decode::NeedMore, "{n}");
        }
    }

    #[test]
    fn no_wait_and_reply_codes() {
        let mut codec = AmqpCodec::default();
        // Queue.Declare with no-wait
        let declare = method_frame(1, 50, 10, &[0, 0, 1, b'q', 0x10, 0, 0, 0, 0]);
        let Decode::Message { msg, .. } = codec.decode_request(&declare) else {
            panic!("not decoded");
        };
        assert!(!codec.expects_response(&msg));
        assert_eq!(reply_status(200), ResponseStatus::Ok);
        assert_eq!(reply_status(404), ResponseStatus::ClientError);
        assert_eq!(reply_status(320), ResponseStatus::ClientError);
        assert_eq!(reply_status(541), ResponseStatus::ServerError);
        assert_eq!(reply_status(0), ResponseStatus::Ok);
        assert_eq!(reply_status(100), ResponseStatus::Unknown);
    }
}
