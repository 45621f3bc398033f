//! [`Http2Session`]: the [`ProtocolSession`] of an HTTP/2 connection. See the module docs of
//! [`crate::http2`] for the design.

use std::collections::BTreeMap;

use super::frame::{Frame, FrameHeader, FramePosition, FrameSink, FrameType, Framer, flags};
use super::hpack::Decoder;
use super::stream::{HeaderFacts, Outcome, Part, Stream};
use crate::session::{ProtocolSession, SeqStep, SyscallMeta};
use crate::{
    ConversationConfig, ConversationStats, Direction, L7Protocol, L7Record, ResponseStatus, Role,
};

/// Index of the request (client to server) direction.
const REQ: usize = 0;
/// Index of the response (server to client) direction.
const RESP: usize = 1;

/// The session of one HTTP/2 connection.
#[derive(Debug)]
pub(crate) struct Http2Session {
    framers: [Framer; 2],
    conn: Connection,
}

impl Http2Session {
    pub(crate) fn new(role: Role, config: &ConversationConfig) -> Self {
        let max_block = config.max_head_bytes.max(1);
        Http2Session {
            framers: [Framer::new(true, max_block), Framer::new(false, max_block)],
            conn: Connection {
                role,
                grpc_seen: false,
                max_streams: config.max_pending_requests,
                max_block,
                decoders: [Decoder::unsynchronized(), Decoder::unsynchronized()],
                blocks: [None, None],
                streams: BTreeMap::new(),
                last_client_stream: 0,
                decoded_any: false,
                push_promises: 0,
                max_frame_size: [None, None],
                preface_seen: false,
            },
        }
    }

    /// PUSH_PROMISE frames seen (pushed streams are not followed).
    #[cfg(test)]
    pub(crate) fn push_promises(&self) -> u64 {
        self.conn.push_promises
    }
}

impl ProtocolSession for Http2Session {
    fn protocol(&self) -> L7Protocol {
        if self.conn.grpc_seen {
            L7Protocol::Grpc
        } else {
            L7Protocol::Http2
        }
    }

    fn role(&self) -> Role {
        self.conn.role
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
        let d = if direction == self.conn.role.request_direction() {
            REQ
        } else {
            RESP
        };
        let mut sink = DirSink {
            conn: &mut self.conn,
            d,
            stats,
            out,
        };
        self.framers[d].feed(meta, step, payload, gap_after, &mut sink);
        if std::mem::take(&mut self.conn.preface_seen) {
            // The connection's start: the server's first bytes start a frame.
            self.framers[RESP].assume_boundary();
        }
        // SETTINGS_MAX_FRAME_SIZE applies to the frames the other side sends.
        for (framer, size) in self.framers.iter_mut().zip(&mut self.conn.max_frame_size) {
            if let Some(size) = size.take() {
                framer.set_max_frame_size(size);
            }
        }
    }

    fn expire(
        &mut self,
        now_ns: u64,
        timeout_ns: u64,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        let expired = |since: u64| since.saturating_add(timeout_ns) <= now_ns;
        let due: Vec<(u32, Outcome)> = self
            .conn
            .streams
            .iter()
            .filter_map(|(&id, s)| {
                if s.response.is_none() {
                    // A request whose body is still arriving is not waiting yet.
                    let waiting = s.request_done && expired(s.request.start_ns);
                    let status = if s.maybe_answered {
                        ResponseStatus::Unknown
                    } else {
                        ResponseStatus::Timeout
                    };
                    waiting.then_some((id, Outcome::NoResponse(status)))
                } else {
                    // A response in progress is not timed out, unless its end was lost.
                    (s.response_lost && expired(s.last_activity_ns))
                        .then_some((id, Outcome::EndLost))
                }
            })
            .collect();
        for (id, outcome) in due {
            self.conn.emit(id, outcome, stats, out);
        }
    }

    fn close(&mut self, _now_ns: u64, stats: &mut ConversationStats, out: &mut Vec<L7Record>) {
        let ids: Vec<u32> = self.conn.streams.keys().copied().collect();
        for id in ids {
            let lost_with_status = self
                .conn
                .streams
                .get(&id)
                .is_some_and(|s| s.response_lost && s.final_seen);
            let outcome = if lost_with_status {
                Outcome::EndLost
            } else {
                Outcome::NoResponse(ResponseStatus::Unknown)
            };
            self.conn.emit(id, outcome, stats, out);
        }
        self.conn.blocks = [None, None];
    }
}

/// A header block being assembled from HEADERS or PUSH_PROMISE and CONTINUATION frames.
#[derive(Debug)]
struct HeaderBlock {
    stream_id: u32,
    push_promise: bool,
    end_stream: bool,
    fragment: Vec<u8>,
    /// Every byte of the block so far was captured and kept.
    complete: bool,
    start: FramePosition,
    /// Bytes of the block's frames, headers included.
    wire_len: u64,
}

/// Everything of a connection but its framers.
#[derive(Debug)]
struct Connection {
    role: Role,
    grpc_seen: bool,
    max_streams: usize,
    max_block: usize,
    /// HPACK decoders of the header blocks each direction carries.
    decoders: [Decoder; 2],
    blocks: [Option<HeaderBlock>; 2],
    /// Streams with a request and no row yet, by id.
    streams: BTreeMap<u32, Stream>,
    /// The highest stream id a request opened: lower ids are not new streams.
    last_client_stream: u32,
    decoded_any: bool,
    push_promises: u64,
    /// `SETTINGS_MAX_FRAME_SIZE` announcements to hand to each direction's framer.
    max_frame_size: [Option<u32>; 2],
    /// The client preface just went by.
    preface_seen: bool,
}

/// The [`FrameSink`] of one direction.
struct DirSink<'a> {
    conn: &'a mut Connection,
    d: usize,
    stats: &'a mut ConversationStats,
    out: &'a mut Vec<L7Record>,
}

impl FrameSink for DirSink<'_> {
    fn on_frame(&mut self, frame: Frame<'_>) {
        self.conn.frame(self.d, &frame, self.stats, self.out);
    }

    fn on_preface(&mut self, _start: FramePosition) {
        // The connection's start: both tables are empty, unless blocks were decoded already
        // (a preface cannot follow them).
        if !self.conn.decoded_any {
            self.conn.decoders = [Decoder::new(), Decoder::new()];
        }
        self.conn.preface_seen = true;
    }

    fn on_lost(&mut self, _at: &SyscallMeta, malformed: bool) {
        self.stats.resyncs += 1;
        if malformed {
            self.stats.parse_errors += 1;
        }
        self.conn.lost(self.d, self.stats, self.out);
    }

    fn accepts_resync(&self, header: &FrameHeader) -> bool {
        self.conn.accepts_resync(self.d, header)
    }
}

impl Connection {
    fn frame(
        &mut self,
        d: usize,
        frame: &Frame<'_>,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        let header = &frame.header;
        // Nothing may come between the frames of a header block (RFC 9113 §6.10).
        if let Some(block) = &self.blocks[d]
            && (header.kind != FrameType::Continuation || header.stream_id != block.stream_id)
        {
            stats.parse_errors += 1;
            self.blocks[d] = None;
            self.decoders[d].lose();
        }
        match header.kind {
            FrameType::Data => self.data(d, frame, stats, out),
            FrameType::Headers | FrameType::PushPromise => {
                self.start_block(d, frame, stats, out);
            }
            FrameType::Continuation => self.continuation(d, frame, stats, out),
            FrameType::RstStream => {
                if let Some(code) = frame.payload.get(..4) {
                    let code = u32::from_be_bytes([code[0], code[1], code[2], code[3]]);
                    let by_client = d == REQ;
                    if self.streams.contains_key(&header.stream_id) {
                        self.emit(
                            header.stream_id,
                            Outcome::Reset { by_client, code },
                            stats,
                            out,
                        );
                    }
                }
            }
            FrameType::Settings if !header.has(flags::ACK) => self.settings(d, frame.payload),
            FrameType::GoAway if d == RESP => {
                if let Some(id) = frame.payload.get(..4) {
                    let last = u32::from_be_bytes([id[0], id[1], id[2], id[3]]) & 0x7fff_ffff;
                    self.goaway(last, stats, out);
                }
            }
            _ => {}
        }
    }

    fn data(
        &mut self,
        d: usize,
        frame: &Frame<'_>,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        let header = &frame.header;
        let end_stream = header.has(flags::END_STREAM);
        let Some(stream) = self.streams.get_mut(&header.stream_id) else {
            if d == RESP && end_stream && header.stream_id % 2 == 1 {
                stats.unmatched_responses += 1;
            }
            return;
        };
        if d == REQ {
            stream.request_frame(&frame.end, header.wire_len(), end_stream);
            return;
        }
        stream.response_frame(&frame.start, &frame.end, header.wire_len());
        if end_stream {
            self.emit(header.stream_id, Outcome::Complete, stats, out);
        }
    }

    /// A HEADERS or PUSH_PROMISE frame: the header block fragment without padding, priority
    /// or promised stream id.
    fn start_block(
        &mut self,
        d: usize,
        frame: &Frame<'_>,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        let header = &frame.header;
        let push_promise = header.kind == FrameType::PushPromise;
        if push_promise {
            self.push_promises += 1;
        }
        let payload = frame.payload;
        let padded = header.has(flags::PADDED);
        let pad = if padded {
            payload.first().map(|&p| u32::from(p))
        } else {
            Some(0)
        };
        let skip = u32::from(padded)
            + if push_promise { 4 } else { 0 }
            + if header.has(flags::PRIORITY) && !push_promise {
                5
            } else {
                0
            };
        // The fragment is payload[skip..length - pad]; what of it was captured.
        let (fragment, complete) = match pad {
            Some(pad) if skip + pad <= header.length => {
                let end = (header.length - pad) as usize;
                let captured = payload.len().min(end);
                let fragment = payload.get(skip as usize..captured).unwrap_or(&[]);
                (fragment, payload.len() >= end)
            }
            Some(_) => {
                // Padding longer than the payload: a connection error.
                stats.parse_errors += 1;
                (&[][..], false)
            }
            None => (&[][..], false),
        };
        let block = HeaderBlock {
            stream_id: header.stream_id,
            push_promise,
            end_stream: header.has(flags::END_STREAM),
            fragment: Vec::new(),
            complete,
            start: frame.start,
            wire_len: header.wire_len(),
        };
        if header.has(flags::END_HEADERS) {
            self.finish_block(d, block, fragment, &frame.end, stats, out);
        } else {
            let mut block = block;
            block.fragment = fragment[..fragment.len().min(self.max_block)].to_vec();
            block.complete &= fragment.len() <= self.max_block;
            self.blocks[d] = Some(block);
        }
    }

    fn continuation(
        &mut self,
        d: usize,
        frame: &Frame<'_>,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        // After lost framing, a CONTINUATION without its HEADERS is expected: ignored.
        let Some(mut block) = self.blocks[d].take() else {
            return;
        };
        let room = self.max_block.saturating_sub(block.fragment.len());
        let kept = frame.payload.len().min(room);
        block.fragment.extend_from_slice(&frame.payload[..kept]);
        block.complete &= frame.complete && kept == frame.payload.len();
        block.wire_len += frame.header.wire_len();
        if frame.header.has(flags::END_HEADERS) {
            let fragment = std::mem::take(&mut block.fragment);
            self.finish_block(d, block, &fragment, &frame.end, stats, out);
        } else {
            self.blocks[d] = Some(block);
        }
    }

    /// A header block is whole (or as whole as it was captured): decode it and apply it to
    /// its stream.
    fn finish_block(
        &mut self,
        d: usize,
        block: HeaderBlock,
        fragment: &[u8],
        end: &SyscallMeta,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        let mut facts = HeaderFacts::default();
        let decoded = self.decoders[d].decode(fragment, block.complete, &mut |field| {
            facts.add(field);
        });
        self.decoded_any = true;
        match decoded {
            Ok(summary) => facts.incomplete = summary.cut || !block.complete,
            Err(_) => {
                stats.parse_errors += 1;
                // What was decoded before the error cannot be trusted.
                facts = HeaderFacts::default();
                facts.incomplete = true;
            }
        }
        if block.push_promise {
            return;
        }
        let id = block.stream_id;
        if d == REQ {
            self.request_headers(block, facts, end, stats, out);
            return;
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            // Pushed streams (even ids) answer no request.
            if block.end_stream && id % 2 == 1 {
                stats.unmatched_responses += 1;
            }
            return;
        };
        stream.response_frame(&block.start, end, block.wire_len);
        self.grpc_seen |= facts.grpc;
        stream.response_headers(facts);
        if block.end_stream {
            self.emit(id, Outcome::Complete, stats, out);
        }
    }

    fn request_headers(
        &mut self,
        block: HeaderBlock,
        facts: HeaderFacts,
        end: &SyscallMeta,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        let id = block.stream_id;
        if let Some(stream) = self.streams.get_mut(&id) {
            // Trailers of a request.
            stream.request_frame(end, block.wire_len, block.end_stream);
            return;
        }
        if id.is_multiple_of(2) || id <= self.last_client_stream {
            // Not a new client stream: trailers of a stream already reported, or garbage.
            return;
        }
        self.last_client_stream = id;
        if self.streams.len() >= self.max_streams && !self.evict_one(stats, out) {
            stats.dropped_requests += 1;
            return;
        }
        self.grpc_seen |= facts.grpc;
        let request = Part::new(&block.start, end, block.wire_len);
        self.streams
            .insert(id, Stream::new(request, facts, block.end_stream));
    }

    fn settings(&mut self, d: usize, payload: &[u8]) {
        let other = 1 - d;
        for setting in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match id {
                // The sender's decoder: the blocks the other direction carries.
                0x1 => self.decoders[other].set_limit(value),
                // The largest frame the sender accepts: frames of the other direction.
                0x5 => self.max_frame_size[other] = Some(value),
                _ => {}
            }
        }
    }

    /// The server will not process streams above `last`: they get no response.
    fn goaway(&mut self, last: u32, stats: &mut ConversationStats, out: &mut Vec<L7Record>) {
        let ids: Vec<u32> = self
            .streams
            .range(last.saturating_add(1)..)
            .filter(|(_, s)| s.response.is_none())
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.emit(id, Outcome::NoResponse(ResponseStatus::Unknown), stats, out);
        }
    }

    /// Framing of direction `d` was lost: its table and any block in progress are gone, and
    /// the streams it was carrying may have lost their ends.
    fn lost(&mut self, d: usize, stats: &mut ConversationStats, out: &mut Vec<L7Record>) {
        self.decoders[d].lose();
        self.blocks[d] = None;
        if d == REQ {
            for stream in self.streams.values_mut() {
                stream.request_done = true;
            }
            return;
        }
        let mut done = Vec::new();
        for (&id, stream) in &mut self.streams {
            if stream.response.is_some() {
                stream.response_lost = true;
                // Nothing a later frame could add: the row is complete but for its length.
                if stream.outcome_known() {
                    done.push(id);
                }
            } else {
                stream.maybe_answered = true;
            }
        }
        for id in done {
            self.emit(id, Outcome::EndLost, stats, out);
        }
    }

    /// Makes room for a new stream: the oldest stream whose response end was lost goes.
    fn evict_one(&mut self, stats: &mut ConversationStats, out: &mut Vec<L7Record>) -> bool {
        let victim = self
            .streams
            .iter()
            .find(|(_, s)| s.response_lost)
            .map(|(&id, _)| id);
        match victim {
            Some(id) => {
                self.emit(id, Outcome::EndLost, stats, out);
                true
            }
            None => false,
        }
    }

    fn accepts_resync(&self, d: usize, header: &FrameHeader) -> bool {
        let id = header.stream_id;
        if id == 0 {
            return matches!(
                header.kind,
                FrameType::Settings | FrameType::Ping | FrameType::GoAway | FrameType::WindowUpdate
            );
        }
        let known = self.streams.contains_key(&id);
        match header.kind {
            FrameType::Headers if d == REQ => {
                known || (id % 2 == 1 && id > self.last_client_stream)
            }
            // Clients send PRIORITY for idle streams too.
            FrameType::Priority if d == REQ => id % 2 == 1,
            FrameType::Data
            | FrameType::Headers
            | FrameType::RstStream
            | FrameType::WindowUpdate
            | FrameType::Priority => known,
            FrameType::PushPromise => d == RESP && known,
            _ => false,
        }
    }

    fn emit(
        &mut self,
        id: u32,
        outcome: Outcome,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        if let Some(stream) = self.streams.remove(&id) {
            stats.records += 1;
            out.push(stream.record(self.role, outcome));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.push(kind);
        out.push(flags);
        out.extend(stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    struct Harness {
        session: Http2Session,
        stats: ConversationStats,
        out: Vec<L7Record>,
        t: u64,
    }

    impl Harness {
        fn new() -> Self {
            Harness {
                session: Http2Session::new(Role::Client, &ConversationConfig::default()),
                stats: ConversationStats::default(),
                out: Vec::new(),
                t: 0,
            }
        }

        fn send(&mut self, direction: Direction, bytes: &[u8], gap_after: u64) {
            self.t += 10;
            let meta = SyscallMeta {
                enter_ns: self.t,
                exit_ns: self.t + 1,
                seq: None,
                tid: 1,
                syscall_trace_id: 0,
            };
            let step = SeqStep::default();
            let (stats, out) = (&mut self.stats, &mut self.out);
            self.session
                .feed(direction, &meta, step, bytes, gap_after, stats, out);
        }
    }

    const REQUESTS: Direction = Direction::Egress;
    const RESPONSES: Direction = Direction::Ingress;

    #[test]
    fn push_promises_are_counted_and_ignored() {
        let mut h = Harness::new();
        let mut bytes = super::super::frame::PREFACE.to_vec();
        bytes.extend(frame(1, 0x5, 1, &[0x82, 0x86, 0x84]));
        h.send(REQUESTS, &bytes, 0);
        let mut responses = frame(5, 0x4, 1, &[0, 0, 0, 2, 0x82, 0x86, 0x85]);
        responses.extend(frame(5, 0x4, 1, &[0, 0, 0, 4, 0x82, 0x86, 0x84]));
        responses.extend(frame(1, 0x5, 1, &[0x88]));
        h.send(RESPONSES, &responses, 0);
        assert_eq!(h.session.push_promises(), 2);
        assert_eq!(h.out.len(), 1);
        assert_eq!(h.stats.parse_errors, 0);
    }

    #[test]
    fn max_frame_size_bounds_resynchronisation() {
        for announced in [false, true] {
            let mut h = Harness::new();
            let mut bytes = super::super::frame::PREFACE.to_vec();
            if announced {
                // The client accepts frames of up to 64 KiB.
                bytes.extend(frame(4, 0, 0, &[0, 5, 0, 1, 0, 0]));
            }
            bytes.extend(frame(1, 0x5, 1, &[0x82, 0x86, 0x84]));
            bytes.extend(frame(1, 0x5, 3, &[0x82, 0x86, 0x84]));
            h.send(REQUESTS, &bytes, 0);
            h.send(RESPONSES, &frame(1, 0x4, 1, &[0x88]), 0);
            // A frame header falls into uncaptured bytes: framing is lost, stream 1 (its
            // status known) becomes a row.
            h.send(RESPONSES, &frame(0, 0, 1, &[0; 10])[..15], 100);
            assert_eq!(h.stats.resyncs, 1);
            assert_eq!(h.out.len(), 1);
            // A 40 000-byte DATA frame for stream 3 is plausible only if SETTINGS allowed it.
            let big = frame(0, 0x1, 3, &vec![0; 40_000]);
            h.send(RESPONSES, &big[..1024], 40_009 - 1024);
            assert_eq!(h.session.framers[RESP].is_synced(), announced);
            assert_eq!(h.out.len(), if announced { 2 } else { 1 });
        }
    }
}
