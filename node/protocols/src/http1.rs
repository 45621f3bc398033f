//! A streaming, gap-aware HTTP/1.x message parser for one direction of a socket.
//!
//! [`Http1Parser`] consumes the bytes of one direction as they were captured — known bytes and
//! gaps of known length — and reports message boundaries to an [`Http1Sink`]:
//! [`Http1Sink::on_head`] when a head is complete, [`Http1Sink::on_message_end`] when the body
//! has been consumed, [`Http1Sink::on_desync`] when framing was lost.
//!
//! Heads are parsed with `httparse` straight from the captured payload; only a head that spans
//! several chunks is buffered (at most `max_head_bytes`). Bodies are never copied: a
//! `Content-Length` body is counted down, a chunked body is run through a small state machine,
//! and both may lie partly or entirely in gaps. When framing falls into a gap (a head or a
//! chunk-size line was not captured) or the bytes are malformed, the parser drops its state
//! and waits for a chunk that *starts* with a start line — a syscall boundary is the only
//! place where a new message can be found again without guessing.

mod chunked;
mod head;
mod start_line;

use chunked::ChunkedDecoder;
pub use head::{BodyFraming, Head, MAX_HEADERS, Method, RequestHead, ResponseHead, Version};
use head::{HeadParse, parse_head};
pub use start_line::{LineMatch, match_request_line, match_status_line};

use crate::error::ParseError;

/// Which messages a parser reads: requests or responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// The direction carries requests.
    Request,
    /// The direction carries responses.
    Response,
}

/// Where the bytes handed to [`Http1Parser::feed`] come from: one syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallMeta {
    /// Syscall entry time, Unix-epoch nanoseconds.
    pub enter_ns: u64,
    /// Syscall exit time, Unix-epoch nanoseconds.
    pub exit_ns: u64,
    /// TCP sequence number of the first byte of the payload, if known.
    pub seq: Option<u32>,
    /// Thread that made the syscall.
    pub tid: u32,
    /// The thread's syscall trace id at the syscall; 0 for none.
    pub syscall_trace_id: u64,
}

/// Where and when a message started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageStart {
    /// `enter_ns` of the syscall carrying the first byte.
    pub enter_ns: u64,
    /// TCP sequence number of the first byte.
    pub seq: Option<u32>,
    /// Thread of the syscall carrying the first byte.
    pub tid: u32,
    /// Syscall trace id of the syscall carrying the first byte; 0 for none.
    pub syscall_trace_id: u64,
    /// `exit_ns` of the syscall carrying the last byte of the head.
    pub head_end_ns: u64,
}

/// How the sink wants the body of a message handled, returned by [`Http1Sink::on_head`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyDirective {
    /// Frame the body as the head declares.
    AsDeclared,
    /// The message has no body whatever its head says (the response to `HEAD`).
    Empty,
    /// The message ends with its head and the connection stops carrying HTTP/1 (101
    /// Switching Protocols, a 2xx to `CONNECT`): the parser stops parsing.
    Tunnel,
}

/// A message whose body has been consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageEnd {
    /// `exit_ns` of the syscall carrying the last byte.
    pub end_ns: u64,
    /// Bytes of the message on the wire, head and body.
    pub length: u64,
}

/// Why a parser lost framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DesyncCause {
    /// The bytes are not valid HTTP/1.
    Parse(ParseError),
    /// Bytes needed for framing (a head, a chunk-size line, the start of the next message)
    /// were not captured.
    Gap,
    /// The caller reported a discontinuity of the stream (see
    /// [`Http1Parser::discontinuity`]).
    Discontinuity,
}

/// A loss of framing, reported by [`Http1Sink::on_desync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desync {
    /// Why framing was lost.
    pub cause: DesyncCause,
    /// `enter_ns` of the syscall in which framing was lost.
    pub at_ns: u64,
    /// The message whose head was delivered but whose body could not be followed to its end,
    /// if any.
    pub unfinished: Option<UnfinishedMessage>,
}

/// A message cut short by a desync or by close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnfinishedMessage {
    /// Bytes of the message seen (or skipped through gaps) before framing was lost.
    pub length: u64,
    /// `exit_ns` of the last syscall that carried bytes of the message.
    pub last_exit_ns: u64,
}

/// Receives the messages a [`Http1Parser`] finds.
pub trait Http1Sink {
    /// A head is complete. The sink decides how the body is framed.
    fn on_head(&mut self, head: Head, start: MessageStart) -> BodyDirective;
    /// The message whose head was delivered last has been fully consumed.
    fn on_message_end(&mut self, end: MessageEnd);
    /// Framing was lost; the parser now waits for a message start at a chunk start.
    fn on_desync(&mut self, desync: Desync);
}

#[derive(Debug, Clone)]
enum State {
    /// Waiting for a chunk that starts with a start line.
    Resync,
    /// At a message boundary.
    Idle,
    /// `head_buf` holds the start of a head.
    Head,
    /// In a body.
    Body(Body),
    /// The connection no longer carries HTTP/1.
    Tunnel,
}

#[derive(Debug, Clone)]
enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// The message being parsed.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    start: Option<MessageStart>,
    length: u64,
    last_exit_ns: u64,
}

/// A gap-aware HTTP/1 parser for one direction of a connection. See the module docs.
#[derive(Debug, Clone)]
pub struct Http1Parser {
    kind: MessageKind,
    max_head_bytes: usize,
    state: State,
    head_buf: Vec<u8>,
    progress: Progress,
}

impl Http1Parser {
    /// A parser for `kind` messages whose heads (and chunk trailers) may be at most
    /// `max_head_bytes` long. It starts out looking for a message start at a chunk start.
    pub fn new(kind: MessageKind, max_head_bytes: usize) -> Self {
        Http1Parser {
            kind,
            max_head_bytes: max_head_bytes.max(1),
            state: State::Resync,
            head_buf: Vec::new(),
            progress: Progress::default(),
        }
    }

    /// The kind of messages this parser reads.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// Whether the parser stopped because the connection became a tunnel.
    pub fn is_tunnel(&self) -> bool {
        matches!(self.state, State::Tunnel)
    }

    /// Stops parsing for good: the connection no longer carries HTTP/1.
    pub fn enter_tunnel(&mut self) {
        self.state = State::Tunnel;
        self.head_buf = Vec::new();
    }

    /// Whether `bytes`, the start of a chunk, may start a message this parser reads (a
    /// complete start line or a prefix of one).
    pub fn may_start_message(&self, bytes: &[u8]) -> bool {
        let matched = match self.kind {
            MessageKind::Request => match_request_line(bytes),
            MessageKind::Response => match_status_line(bytes),
        };
        matched != LineMatch::No
    }

    /// Consumes one syscall's worth of the stream: `gap_before` uncaptured bytes that preceded
    /// it (lost events), its captured `payload`, then `gap_after` uncaptured bytes (the tail the
    /// capture did not keep).
    pub fn feed(
        &mut self,
        meta: &SyscallMeta,
        gap_before: u64,
        payload: &[u8],
        gap_after: u64,
        sink: &mut dyn Http1Sink,
    ) {
        if gap_before > 0 {
            self.skip(gap_before, meta, sink);
        }
        self.consume(meta, payload, sink);
        if gap_after > 0 {
            self.skip(gap_after, meta, sink);
        }
    }

    /// The stream jumped by an unknown amount (for example the TCP sequence went backwards):
    /// framing is lost unless the parser was already waiting for a message start.
    pub fn discontinuity(&mut self, at_ns: u64, sink: &mut dyn Http1Sink) {
        if matches!(self.state, State::Idle | State::Head | State::Body(_)) {
            self.desync(DesyncCause::Discontinuity, at_ns, sink);
        }
    }

    /// The connection closed. A body delimited by close ends now and is reported through
    /// [`Http1Sink::on_message_end`]; a message cut short is returned (its head was delivered
    /// but its body did not complete). The parser then waits for a message start again.
    pub fn close(&mut self, sink: &mut dyn Http1Sink) -> Option<UnfinishedMessage> {
        let unfinished = match &self.state {
            State::Body(Body::UntilClose) => {
                self.end_message(self.progress.last_exit_ns, sink);
                None
            }
            State::Body(_) => Some(self.unfinished()),
            _ => None,
        };
        if !self.is_tunnel() {
            self.state = State::Resync;
        }
        self.head_buf.clear();
        self.progress = Progress::default();
        unfinished
    }

    fn consume(&mut self, meta: &SyscallMeta, payload: &[u8], sink: &mut dyn Http1Sink) {
        let mut offset = 0;
        while offset < payload.len() {
            let data = &payload[offset..];
            match &mut self.state {
                State::Tunnel => return,
                State::Resync => {
                    if offset == 0 && self.may_start_message(data) {
                        self.state = State::Idle;
                    } else {
                        return;
                    }
                }
                State::Idle => {
                    // Empty lines between messages (e.g. a CRLF after a POST body) belong to
                    // no message.
                    let blank = data.iter().take_while(|&&b| b == b'\r' || b == b'\n');
                    let blank = blank.count();
                    if blank > 0 {
                        offset += blank;
                        continue;
                    }
                    let start = MessageStart {
                        enter_ns: meta.enter_ns,
                        // The offset is below the payload length, which fits a u32 chunk.
                        seq: meta.seq.map(|seq| seq.wrapping_add(offset as u32)),
                        tid: meta.tid,
                        syscall_trace_id: meta.syscall_trace_id,
                        head_end_ns: meta.exit_ns,
                    };
                    self.progress = Progress {
                        start: Some(start),
                        length: 0,
                        last_exit_ns: meta.exit_ns,
                    };
                    match parse_head(self.kind, data) {
                        Ok(HeadParse::Complete(head)) => {
                            offset += head.head_len();
                            self.on_head(head, meta, sink);
                        }
                        Ok(HeadParse::Partial) => {
                            if data.len() >= self.max_head_bytes {
                                self.head_too_long(meta, sink);
                                return;
                            }
                            self.head_buf.clear();
                            self.head_buf.extend_from_slice(data);
                            self.state = State::Head;
                            return;
                        }
                        Err(error) => {
                            self.desync(DesyncCause::Parse(error), meta.enter_ns, sink);
                            return;
                        }
                    }
                }
                State::Head => {
                    let buffered = self.head_buf.len();
                    let room = self.max_head_bytes.saturating_sub(buffered);
                    let take = data.len().min(room);
                    self.head_buf.extend_from_slice(&data[..take]);
                    // A head ends with a line feed: parse again only when one arrived, or
                    // while the start line is still short (to reject garbage early).
                    let worth_parsing = buffered < 64 || data[..take].contains(&b'\n');
                    let parsed = if worth_parsing {
                        parse_head(self.kind, &self.head_buf)
                    } else {
                        Ok(HeadParse::Partial)
                    };
                    match parsed {
                        Ok(HeadParse::Complete(head)) => {
                            self.head_buf.clear();
                            // The head ends inside `data`: parsing failed without it.
                            offset += head.head_len().saturating_sub(buffered).max(1);
                            self.on_head(head, meta, sink);
                        }
                        Ok(HeadParse::Partial) => {
                            if self.head_buf.len() >= self.max_head_bytes {
                                self.head_too_long(meta, sink);
                            }
                            return;
                        }
                        Err(error) => {
                            self.desync(DesyncCause::Parse(error), meta.enter_ns, sink);
                            return;
                        }
                    }
                }
                State::Body(Body::Length(remaining)) => {
                    let take = (data.len() as u64).min(*remaining);
                    *remaining -= take;
                    let done = *remaining == 0;
                    self.advance(take, meta);
                    // `take <= data.len()`.
                    offset += take as usize;
                    if done {
                        self.end_message(meta.exit_ns, sink);
                    }
                }
                State::Body(Body::Chunked(decoder)) => match decoder.feed(data) {
                    Ok((used, done)) => {
                        self.advance(used as u64, meta);
                        offset += used;
                        if done {
                            self.end_message(meta.exit_ns, sink);
                        }
                    }
                    Err(error) => {
                        self.desync(DesyncCause::Parse(error), meta.enter_ns, sink);
                        return;
                    }
                },
                State::Body(Body::UntilClose) => {
                    self.advance(data.len() as u64, meta);
                    return;
                }
            }
        }
    }

    /// Consumes `n` uncaptured bytes.
    fn skip(&mut self, n: u64, meta: &SyscallMeta, sink: &mut dyn Http1Sink) {
        match &mut self.state {
            State::Resync | State::Tunnel => {}
            State::Idle | State::Head => self.desync(DesyncCause::Gap, meta.enter_ns, sink),
            State::Body(Body::Length(remaining)) => {
                let take = n.min(*remaining);
                *remaining -= take;
                let done = *remaining == 0;
                self.advance(take, meta);
                if done {
                    self.end_message(meta.exit_ns, sink);
                    if take < n {
                        // The rest of the gap holds the start of unknown messages.
                        self.desync(DesyncCause::Gap, meta.enter_ns, sink);
                    }
                }
            }
            State::Body(Body::Chunked(decoder)) => {
                let take = decoder.skip(n);
                self.advance(take, meta);
                if take < n {
                    self.desync(DesyncCause::Gap, meta.enter_ns, sink);
                }
            }
            State::Body(Body::UntilClose) => self.advance(n, meta),
        }
    }

    fn on_head(&mut self, head: Head, meta: &SyscallMeta, sink: &mut dyn Http1Sink) {
        let head_len = head.head_len();
        if head_len > self.max_head_bytes {
            self.head_too_long(meta, sink);
            return;
        }
        let framing = head.framing();
        let Some(mut start) = self.progress.start else {
            return;
        };
        start.head_end_ns = meta.exit_ns;
        self.progress.start = Some(start);
        self.advance(head_len as u64, meta);
        let framing = match sink.on_head(head, start) {
            BodyDirective::AsDeclared => framing,
            BodyDirective::Empty => BodyFraming::Empty,
            BodyDirective::Tunnel => {
                self.end_message(meta.exit_ns, sink);
                self.enter_tunnel();
                return;
            }
        };
        match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => self.end_message(meta.exit_ns, sink),
            BodyFraming::Length(n) => self.state = State::Body(Body::Length(n)),
            BodyFraming::Chunked => {
                let decoder = ChunkedDecoder::new(self.max_head_bytes);
                self.state = State::Body(Body::Chunked(decoder));
            }
            BodyFraming::UntilClose => self.state = State::Body(Body::UntilClose),
        }
    }

    fn advance(&mut self, n: u64, meta: &SyscallMeta) {
        self.progress.length = self.progress.length.saturating_add(n);
        self.progress.last_exit_ns = meta.exit_ns;
    }

    fn end_message(&mut self, end_ns: u64, sink: &mut dyn Http1Sink) {
        self.state = State::Idle;
        let length = self.progress.length;
        self.progress = Progress::default();
        sink.on_message_end(MessageEnd { end_ns, length });
    }

    fn unfinished(&self) -> UnfinishedMessage {
        UnfinishedMessage {
            length: self.progress.length,
            last_exit_ns: self.progress.last_exit_ns,
        }
    }

    fn head_too_long(&mut self, meta: &SyscallMeta, sink: &mut dyn Http1Sink) {
        let error = ParseError::HeadTooLong {
            limit: self.max_head_bytes,
        };
        self.desync(DesyncCause::Parse(error), meta.enter_ns, sink);
    }

    fn desync(&mut self, cause: DesyncCause, at_ns: u64, sink: &mut dyn Http1Sink) {
        let unfinished = match self.state {
            State::Body(_) => Some(self.unfinished()),
            _ => None,
        };
        self.state = State::Resync;
        self.head_buf.clear();
        if self.head_buf.capacity() > self.max_head_bytes {
            self.head_buf = Vec::new();
        }
        self.progress = Progress::default();
        sink.on_desync(Desync {
            cause,
            at_ns,
            unfinished,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Event {
        Head(Head, MessageStart),
        End(MessageEnd),
        Desync(Desync),
    }

    #[derive(Default)]
    struct Recorder {
        events: Vec<Event>,
        directive: Option<BodyDirective>,
    }

    impl Http1Sink for Recorder {
        fn on_head(&mut self, head: Head, start: MessageStart) -> BodyDirective {
            self.events.push(Event::Head(head, start));
            self.directive.unwrap_or(BodyDirective::AsDeclared)
        }
        fn on_message_end(&mut self, end: MessageEnd) {
            self.events.push(Event::End(end));
        }
        fn on_desync(&mut self, desync: Desync) {
            self.events.push(Event::Desync(desync));
        }
    }

    fn meta(n: u64, seq: u32) -> SyscallMeta {
        SyscallMeta {
            enter_ns: n * 10,
            exit_ns: n * 10 + 1,
            seq: Some(seq),
            tid: 7,
            syscall_trace_id: 0,
        }
    }

    fn ends(events: &[Event]) -> Vec<MessageEnd> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::End(end) => Some(*end),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn pipelined_requests_in_one_chunk() {
        let mut parser = Http1Parser::new(MessageKind::Request, 4096);
        let mut sink = Recorder::default();
        let bytes = b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\r\nHEAD /c HTTP/1.0\r\n\r\n";
        parser.feed(&meta(1, 1000), 0, bytes, 0, &mut sink);
        let starts: Vec<_> = sink
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Head(Head::Request(h), start) => Some((h.method, start.seq)),
                _ => None,
            })
            .collect();
        assert_eq!(
            starts,
            vec![
                (Method::Get, Some(1000)),
                (Method::Post, Some(1019)),
                // Two bytes of blank line after the POST body belong to no message.
                (Method::Head, Some(1019 + 42 + 2)),
            ]
        );
        let lengths: Vec<_> = ends(&sink.events).iter().map(|e| e.length).collect();
        assert_eq!(lengths, vec![19, 42, 20]);
    }

    #[test]
    fn content_length_body_in_gaps() {
        let mut parser = Http1Parser::new(MessageKind::Response, 4096);
        let mut sink = Recorder::default();
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
        parser.feed(&meta(1, 0), 0, head, 40_000, &mut sink);
        assert!(ends(&sink.events).is_empty());
        // A sendfile: nothing captured.
        parser.feed(&meta(2, 0), 0, b"", 50_000, &mut sink);
        // Lost events: the sequence jumped by 10 000 bytes.
        parser.feed(
            &meta(3, 0),
            10_000,
            b"HTTP/1.1 204 No Content\r\n\r\n",
            0,
            &mut sink,
        );
        let lengths: Vec<_> = ends(&sink.events).iter().map(|e| e.length).collect();
        assert_eq!(lengths, vec![head.len() as u64 + 100_000, 27]);
        assert_eq!(ends(&sink.events)[0].end_ns, 31);
        assert!(
            !sink
                .events
                .iter()
                .any(|event| matches!(event, Event::Desync(_)))
        );
    }

    #[test]
    fn framing_in_gap_resyncs_at_next_chunk_start() {
        let mut parser = Http1Parser::new(MessageKind::Response, 4096);
        let mut sink = Recorder::default();
        // The chunk-size line after the first chunk was not captured.
        parser.feed(
            &meta(1, 0),
            0,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd",
            20,
            &mut sink,
        );
        assert!(matches!(
            sink.events.last(),
            Some(Event::Desync(Desync {
                cause: DesyncCause::Gap,
                unfinished: Some(_),
                ..
            }))
        ));
        // Mid-stream bytes that do not start a message are skipped, even if one follows.
        parser.feed(
            &meta(2, 0),
            0,
            b"\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
            0,
            &mut sink,
        );
        let count = sink.events.len();
        parser.feed(
            &meta(3, 0),
            0,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            0,
            &mut sink,
        );
        assert_eq!(sink.events.len(), count + 2);
        assert!(matches!(
            &sink.events[count],
            Event::Head(Head::Response(ResponseHead { code: 404, .. }), _)
        ));
    }

    #[test]
    fn head_split_byte_by_byte() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Request-ID: r1\r\n\r\nhelloHTTP/1.1 304 Not Modified\r\n\r\n";
        let mut parser = Http1Parser::new(MessageKind::Response, 4096);
        let mut sink = Recorder::default();
        for (i, byte) in bytes.iter().enumerate() {
            parser.feed(
                &meta(i as u64, i as u32),
                0,
                std::slice::from_ref(byte),
                0,
                &mut sink,
            );
        }
        let heads: Vec<_> = sink
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Head(Head::Response(h), start) => Some((h.code, start.seq, start.enter_ns)),
                _ => None,
            })
            .collect();
        assert_eq!(heads, vec![(200, Some(0), 0), (304, Some(61), 610)]);
        let ends = ends(&sink.events);
        assert_eq!(ends.len(), 2);
        assert_eq!(ends[0].length, 61);
        assert_eq!(ends[0].end_ns, 60 * 10 + 1);
    }

    #[test]
    fn head_longer_than_limit_is_an_error() {
        let mut parser = Http1Parser::new(MessageKind::Request, 64);
        let mut sink = Recorder::default();
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.extend(std::iter::repeat_n(b'a', 100));
        for (i, piece) in head.chunks(10).enumerate() {
            parser.feed(&meta(i as u64, 0), 0, piece, 0, &mut sink);
        }
        assert!(matches!(
            sink.events.as_slice(),
            [Event::Desync(Desync {
                cause: DesyncCause::Parse(ParseError::HeadTooLong { limit: 64 }),
                ..
            })]
        ));
        assert!(parser.head_buf.capacity() <= 64);
    }

    #[test]
    fn close_ends_close_delimited_body() {
        let mut parser = Http1Parser::new(MessageKind::Response, 4096);
        let mut sink = Recorder::default();
        parser.feed(&meta(1, 0), 0, b"HTTP/1.0 200 OK\r\n\r\nsome", 6, &mut sink);
        parser.feed(&meta(2, 0), 0, b"more", 0, &mut sink);
        assert!(ends(&sink.events).is_empty());
        assert_eq!(parser.close(&mut sink), None);
        assert_eq!(
            ends(&sink.events),
            vec![MessageEnd {
                end_ns: 21,
                length: 19 + 4 + 6 + 4
            }]
        );

        parser.feed(
            &meta(3, 0),
            0,
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
            0,
            &mut sink,
        );
        assert_eq!(
            parser.close(&mut sink),
            Some(UnfinishedMessage {
                length: 41,
                last_exit_ns: 31
            })
        );
    }

    #[test]
    fn tunnel_stops_parsing() {
        let mut parser = Http1Parser::new(MessageKind::Response, 4096);
        let mut sink = Recorder {
            directive: Some(BodyDirective::Tunnel),
            ..Recorder::default()
        };
        parser.feed(
            &meta(1, 0),
            0,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
            0,
            &mut sink,
        );
        assert!(parser.is_tunnel());
        parser.feed(&meta(2, 0), 0, b"HTTP/1.1 200 OK\r\n\r\n", 0, &mut sink);
        assert_eq!(sink.events.len(), 2);
    }
}
