//! [`FramedSession`]: the generic session of message-framed request/response protocols.
//!
//! A [`Codec`] says where messages start and end and what they mean; this module does the
//! rest: bounded buffering per direction, skipping message tails that were not captured
//! (through gaps), resynchronising at a syscall boundary when framing is lost, timing and
//! sequence numbers, FIFO or keyed pairing, and assembling [`L7Record`]s.

use std::collections::VecDeque;

use crate::{
    ConversationConfig, ConversationStats, Direction, L7Protocol, L7Record, ResponseStatus, Role,
    session::{Codec, Decode, ProtocolSession, SeqStep, SyscallMeta, WireLen},
};

/// Where an exchange part started and how far it reached.
#[derive(Debug, Clone, Copy)]
struct Span {
    start_ns: u64,
    end_ns: u64,
    seq: Option<u32>,
    tid: u32,
    syscall_trace_id: u64,
    len: u64,
}

/// A byte position: the syscall it arrived in and its offset there.
#[derive(Debug, Clone, Copy)]
struct Position {
    meta: SyscallMeta,
    offset: u64,
}

impl Position {
    fn span(&self) -> Span {
        Span {
            start_ns: self.meta.enter_ns,
            end_ns: self.meta.exit_ns,
            seq: self.meta.seq.map(|s| s.wrapping_add(self.offset as u32)),
            tid: self.meta.tid,
            syscall_trace_id: self.meta.syscall_trace_id,
            len: 0,
        }
    }
}

/// What a direction is doing with the bytes it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// At a message boundary, or holding a prefix of a message in `buf`.
    Framing,
    /// Skipping the `left` uncaptured bytes of a decoded message.
    Skipping { left: u64 },
    /// Framing lost: waiting for a syscall that starts with a decodable message.
    Lost,
}

/// A decoded message waiting for its last byte.
#[derive(Debug)]
enum Finished<Q, S> {
    Request(Q),
    Response(S),
    Continue,
    Skip,
}

#[derive(Debug)]
struct DirState<Q, S> {
    mode: Mode,
    /// Captured bytes not yet consumed, starting at a message boundary.
    buf: Vec<u8>,
    /// Syscall boundaries inside `buf`: (position in buf, where it came from).
    marks: VecDeque<(usize, Position)>,
    /// The exchange part in progress in this direction (messages so far).
    progress: Option<Span>,
    /// The message being skipped, completed when its last byte has passed.
    skipping: Option<Finished<Q, S>>,
}

impl<Q, S> Default for DirState<Q, S> {
    fn default() -> Self {
        DirState {
            mode: Mode::Framing,
            buf: Vec::new(),
            marks: VecDeque::new(),
            progress: None,
            skipping: None,
        }
    }
}

impl<Q, S> DirState<Q, S> {
    /// Where byte `pos` of the buffer came from.
    fn position(&self, pos: usize) -> Option<Position> {
        let (start, p) = self.marks.iter().rev().find(|(start, _)| *start <= pos)?;
        Some(Position {
            meta: p.meta,
            offset: p.offset + (pos - start) as u64,
        })
    }

    /// Drops the first `n` bytes of the buffer, keeping the origin of the new first byte.
    fn consume(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        let first = self.position(n);
        self.buf.drain(..n);
        if self.buf.is_empty() {
            self.marks.clear();
            return;
        }
        let mut marks: VecDeque<(usize, Position)> = self
            .marks
            .iter()
            .filter(|(start, _)| *start > n)
            .map(|(start, p)| (start - n, *p))
            .collect();
        if let Some(first) = first {
            marks.push_front((0, first));
        }
        self.marks = marks;
    }

    fn clear_buf(&mut self) {
        self.buf.clear();
        self.marks.clear();
    }
}

#[derive(Debug)]
struct PendingRequest<R> {
    request: R,
    key: Option<u64>,
    span: Span,
}

/// The session of one socket speaking a [`Codec`]'s protocol.
#[derive(Debug)]
pub struct FramedSession<C: Codec> {
    codec: C,
    role: Role,
    max_buffer: usize,
    max_pending: usize,
    /// Index 0: the request direction, 1: the response direction.
    dirs: [DirState<C::Request, C::Response>; 2],
    pending: VecDeque<PendingRequest<C::Request>>,
    keyed: bool,
}

const REQ: usize = 0;
const RESP: usize = 1;

impl<C: Codec> FramedSession<C> {
    /// A session for a socket whose observing process has `role`.
    pub fn new(codec: C, role: Role, config: &ConversationConfig) -> Self {
        FramedSession {
            codec,
            role,
            max_buffer: config.max_head_bytes,
            max_pending: config.max_pending_requests,
            dirs: [DirState::default(), DirState::default()],
            pending: VecDeque::new(),
            keyed: false,
        }
    }

    fn record(
        &self,
        request: &C::Request,
        req: &Span,
        response: Option<(&C::Response, &Span)>,
    ) -> L7Record {
        let mut record = L7Record {
            request_length: req.len,
            response_length: response.map(|(_, s)| s.len),
            request_start_ns: req.start_ns,
            request_end_ns: req.end_ns,
            response_start_ns: response.map(|(_, s)| s.start_ns),
            response_end_ns: response.map(|(_, s)| s.end_ns),
            req_tcp_seq: req.seq,
            resp_tcp_seq: response.and_then(|(_, s)| s.seq),
            request_tid: req.tid,
            response_tid: response.map(|(_, s)| s.tid),
            request_syscall_trace_id: req.syscall_trace_id,
            response_syscall_trace_id: response.map_or(0, |(_, s)| s.syscall_trace_id),
            ..L7Record::new(self.codec.protocol(), self.role)
        };
        self.codec
            .fill(request, response.map(|(r, _)| r), &mut record);
        record
    }

    /// Framing was lost in direction `d`. With FIFO pairing the queue can no longer be
    /// trusted: waiting requests are reported without a response.
    fn lose(&mut self, d: usize, stats: &mut ConversationStats, out: &mut Vec<L7Record>) {
        let dir = &mut self.dirs[d];
        if dir.mode != Mode::Lost {
            stats.resyncs += 1;
        }
        dir.mode = Mode::Lost;
        dir.clear_buf();
        dir.progress = None;
        dir.skipping = None;
        if !self.keyed {
            self.flush_pending(ResponseStatus::Unknown, stats, out);
        }
    }

    fn flush_pending(
        &mut self,
        status: ResponseStatus,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        for p in std::mem::take(&mut self.pending) {
            let mut record = self.record(&p.request, &p.span, None);
            record.response_status = status;
            stats.records += 1;
            out.push(record);
        }
    }

    /// A message of direction `d` is complete; `len` more bytes were part of it and its
    /// last byte arrived in `end`.
    #[allow(clippy::too_many_arguments)] // the session's two output sinks travel together
    fn complete(
        &mut self,
        d: usize,
        finished: Finished<C::Request, C::Response>,
        len: u64,
        start: Position,
        end: &SyscallMeta,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        if matches!(finished, Finished::Skip) {
            return;
        }
        let progress = &mut self.dirs[d].progress;
        let span = progress.get_or_insert_with(|| start.span());
        span.len += len;
        span.end_ns = end.exit_ns;
        let span = *span;
        match finished {
            Finished::Skip | Finished::Continue => {}
            Finished::Request(request) => {
                *progress = None;
                let key = self.codec.request_key(&request);
                self.keyed |= key.is_some();
                if !self.codec.expects_response(&request) {
                    let record = self.record(&request, &span, None);
                    stats.records += 1;
                    out.push(record);
                } else if self.pending.len() >= self.max_pending {
                    stats.dropped_requests += 1;
                } else {
                    self.pending
                        .push_back(PendingRequest { request, key, span });
                }
            }
            Finished::Response(response) => {
                *progress = None;
                let index = match self.codec.response_key(&response) {
                    Some(key) => self.pending.iter().position(|p| p.key == Some(key)),
                    None if self.pending.is_empty() => None,
                    None => Some(0),
                };
                match index.and_then(|i| self.pending.remove(i)) {
                    Some(p) => {
                        let record = self.record(&p.request, &p.span, Some((&response, &span)));
                        stats.records += 1;
                        out.push(record);
                    }
                    None => stats.unmatched_responses += 1,
                }
            }
        }
    }

    fn decode(&mut self, d: usize) -> Decoded<C::Request, C::Response> {
        let buf = &self.dirs[d].buf;
        if d == REQ {
            match self.codec.decode_request(buf) {
                Decode::Message { len, msg } => Decoded::Done(len, Finished::Request(msg)),
                Decode::Continue { len } => Decoded::Done(len, Finished::Continue),
                Decode::Skip { len } => Decoded::Done(len, Finished::Skip),
                Decode::NeedMore => Decoded::NeedMore,
                Decode::Invalid => Decoded::Invalid,
            }
        } else {
            let pending = self.pending.front().map(|p| &p.request);
            match self.codec.decode_response(buf, pending) {
                Decode::Message { len, msg } => Decoded::Done(len, Finished::Response(msg)),
                Decode::Continue { len } => Decoded::Done(len, Finished::Continue),
                Decode::Skip { len } => Decoded::Done(len, Finished::Skip),
                Decode::NeedMore => Decoded::NeedMore,
                Decode::Invalid => Decoded::Invalid,
            }
        }
    }

    /// Passes `n` bytes that are not captured (or not buffered) over the message being
    /// skipped; returns how many of them were left over after it completed.
    fn skip(
        &mut self,
        d: usize,
        n: u64,
        at: &SyscallMeta,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) -> u64 {
        let Mode::Skipping { left } = self.dirs[d].mode else {
            return n;
        };
        if n < left {
            self.dirs[d].mode = Mode::Skipping { left: left - n };
            if let Some(p) = &mut self.dirs[d].progress {
                p.end_ns = at.exit_ns;
            }
            return 0;
        }
        self.dirs[d].mode = Mode::Framing;
        if let Some(finished) = self.dirs[d].skipping.take() {
            let start = Position {
                meta: *at,
                offset: 0,
            };
            self.complete(d, finished, 0, start, at, stats, out);
        }
        n - left
    }

    /// The uncaptured tail of a syscall: the rest of a message being skipped, or lost
    /// framing when it cuts a buffered prefix.
    fn tail(
        &mut self,
        d: usize,
        gap_after: u64,
        meta: &SyscallMeta,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        if gap_after == 0 {
            return;
        }
        let left = self.skip(d, gap_after, meta, stats, out);
        if left > 0 && self.dirs[d].mode != Mode::Lost {
            self.lose(d, stats, out);
        }
    }
}

enum Decoded<Q, S> {
    Done(WireLen, Finished<Q, S>),
    NeedMore,
    Invalid,
}

impl<C: Codec> ProtocolSession for FramedSession<C> {
    fn protocol(&self) -> L7Protocol {
        self.codec.protocol()
    }

    fn role(&self) -> Role {
        self.role
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
        let d = if direction == self.role.request_direction() {
            REQ
        } else {
            RESP
        };
        // 1. what was missed before this syscall
        if step.discontinuous {
            self.lose(d, stats, out);
        } else if step.gap > 0 {
            let left = self.skip(d, step.gap, meta, stats, out);
            if left > 0 || !self.dirs[d].buf.is_empty() {
                self.lose(d, stats, out);
            }
        }
        // 2. captured bytes that finish a message being skipped
        let mut offset = 0usize;
        if matches!(self.dirs[d].mode, Mode::Skipping { .. }) && !payload.is_empty() {
            let left = self.skip(d, payload.len() as u64, meta, stats, out);
            offset = payload.len() - left as usize;
        }
        let payload = &payload[offset..];
        // 3. after lost framing only a syscall's first byte can start a message
        let resyncing = self.dirs[d].mode == Mode::Lost;
        if resyncing {
            if offset != 0 || payload.is_empty() {
                return;
            }
            self.dirs[d].mode = Mode::Framing;
        }
        if !payload.is_empty() {
            let dir = &mut self.dirs[d];
            if dir.buf.len() + payload.len() > self.max_buffer.max(payload.len()) {
                // a prefix that never decodes
                stats.parse_errors += 1;
                self.lose(d, stats, out);
                return;
            }
            let at = dir.buf.len();
            dir.marks.push_back((
                at,
                Position {
                    meta: *meta,
                    offset: offset as u64,
                },
            ));
            dir.buf.extend_from_slice(payload);
        }
        // 4. every message the buffer starts with
        while !self.dirs[d].buf.is_empty() {
            let available = self.dirs[d].buf.len() as u64;
            let Some(start) = self.dirs[d].position(0) else {
                break;
            };
            match self.decode(d) {
                Decoded::Done(WireLen::Exact(n), finished) if n > 0 && n <= available => {
                    let end = self.dirs[d]
                        .position(n as usize - 1)
                        .map_or(*meta, |p| p.meta);
                    self.dirs[d].consume(n as usize);
                    self.complete(d, finished, n, start, &end, stats, out);
                }
                Decoded::Done(WireLen::Exact(n), finished) if n > available => {
                    // the tail lies beyond what was captured: skip it as it arrives
                    self.dirs[d].clear_buf();
                    if !matches!(finished, Finished::Skip) {
                        let span = self.dirs[d].progress.get_or_insert_with(|| start.span());
                        span.len += n;
                        span.end_ns = meta.exit_ns;
                    }
                    self.dirs[d].mode = Mode::Skipping {
                        left: n - available,
                    };
                    self.dirs[d].skipping = Some(finished);
                    break;
                }
                Decoded::Done(WireLen::ToChunkEnd, finished) => {
                    self.dirs[d].clear_buf();
                    self.complete(d, finished, available + gap_after, start, meta, stats, out);
                    return;
                }
                Decoded::Done(WireLen::Exact(_), _) | Decoded::Invalid => {
                    if !resyncing {
                        stats.parse_errors += 1;
                    }
                    self.lose(d, stats, out);
                    return;
                }
                Decoded::NeedMore => {
                    if gap_after > 0 {
                        self.lose(d, stats, out);
                        return;
                    }
                    break;
                }
            }
        }
        self.tail(d, gap_after, meta, stats, out);
    }

    fn expire(
        &mut self,
        now_ns: u64,
        timeout_ns: u64,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        let expired =
            |p: &PendingRequest<C::Request>| p.span.start_ns.saturating_add(timeout_ns) <= now_ns;
        if !self.pending.iter().any(expired) {
            return;
        }
        let (old, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(expired);
        self.pending = keep;
        for p in old {
            let mut record = self.record(&p.request, &p.span, None);
            record.response_status = ResponseStatus::Timeout;
            stats.records += 1;
            out.push(record);
        }
    }

    fn close(&mut self, _now_ns: u64, stats: &mut ConversationStats, out: &mut Vec<L7Record>) {
        self.flush_pending(ResponseStatus::Unknown, stats, out);
        for dir in &mut self.dirs {
            dir.clear_buf();
        }
    }
}

/// A [`FramedSession`] driven by hand, for codec unit tests: one syscall per call, a clock
/// that moves 10 ns a syscall, no sequence numbers.
#[cfg(test)]
pub(crate) struct CodecWire<C: Codec> {
    pub(crate) session: FramedSession<C>,
    pub(crate) stats: ConversationStats,
    pub(crate) out: Vec<L7Record>,
    t: u64,
}

#[cfg(test)]
impl<C: Codec> CodecWire<C> {
    pub(crate) fn new(codec: C, role: Role) -> Self {
        CodecWire {
            session: FramedSession::new(codec, role, &ConversationConfig::default()),
            stats: ConversationStats::default(),
            out: Vec::new(),
            t: 0,
        }
    }

    /// One syscall of `bytes` of which the first `cap` are captured.
    pub(crate) fn send(&mut self, direction: Direction, bytes: &[u8], cap: usize) {
        self.t += 10;
        let captured = &bytes[..cap.min(bytes.len())];
        let meta = SyscallMeta {
            enter_ns: self.t,
            exit_ns: self.t + 1,
            seq: None,
            tid: 1,
            syscall_trace_id: 0,
        };
        let gap = (bytes.len() - captured.len()) as u64;
        self.session.feed(
            direction,
            &meta,
            SeqStep::default(),
            captured,
            gap,
            &mut self.stats,
            &mut self.out,
        );
    }

    /// Bytes the session's client sends, whole.
    pub(crate) fn request(&mut self, bytes: &[u8]) {
        self.send(self.session.role.request_direction(), bytes, usize::MAX);
    }

    /// Bytes the session's server sends, whole.
    pub(crate) fn reply(&mut self, bytes: &[u8]) {
        self.send(
            self.session.role.request_direction().opposite(),
            bytes,
            usize::MAX,
        );
    }

    /// The connection closes.
    pub(crate) fn close(&mut self) {
        self.session
            .close(self.t + 1, &mut self.stats, &mut self.out);
    }

    /// The last row made.
    pub(crate) fn last(&self) -> &L7Record {
        self.out.last().expect("a row")
    }

    /// No parse errors and no resyncs so far.
    pub(crate) fn clean(&self) -> bool {
        self.stats.parse_errors == 0 && self.stats.resyncs == 0
    }
}

#[cfg(test)]
mod tests {
    //! The framework with a toy protocol: `[len: u8][id: u8][kind: u8][body]`, kind b'Q' a
    //! request, b'R' a final response, b'C' a continuation, b'K' a keep-alive (skipped).
    use super::*;

    #[derive(Debug)]
    struct Toy {
        keyed: bool,
    }

    impl Codec for Toy {
        type Request = (u8, Vec<u8>);
        type Response = (u8, Vec<u8>);

        fn protocol(&self) -> L7Protocol {
            L7Protocol::Http1
        }

        fn decode_request(&mut self, buf: &[u8]) -> Decode<Self::Request> {
            decode(buf, b'Q')
        }

        fn decode_response(
            &mut self,
            buf: &[u8],
            _pending: Option<&Self::Request>,
        ) -> Decode<Self::Response> {
            decode(buf, b'R')
        }

        fn request_key(&self, r: &Self::Request) -> Option<u64> {
            self.keyed.then_some(u64::from(r.0))
        }

        fn response_key(&self, r: &Self::Response) -> Option<u64> {
            self.keyed.then_some(u64::from(r.0))
        }

        fn fill(&self, q: &Self::Request, r: Option<&Self::Response>, record: &mut L7Record) {
            record.request_resource = String::from_utf8_lossy(&q.1).into_owned();
            if let Some(r) = r {
                record.response_exception = String::from_utf8_lossy(&r.1).into_owned();
                record.response_status = ResponseStatus::Ok;
            }
        }
    }

    fn decode(buf: &[u8], want: u8) -> Decode<(u8, Vec<u8>)> {
        if buf.len() < 3 {
            return Decode::NeedMore;
        }
        let len = WireLen::Exact(u64::from(buf[0]));
        match buf[2] {
            k if k == want && buf.len() < usize::from(buf[0]).min(9) => Decode::NeedMore,
            k if k == want => {
                let end = usize::from(buf[0]).min(buf.len()).min(16);
                Decode::Message {
                    len,
                    msg: (buf[1], buf[3..end].to_vec()),
                }
            }
            b'C' => Decode::Continue { len },
            b'K' => Decode::Skip { len },
            _ => Decode::Invalid,
        }
    }

    fn msg(id: u8, kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![(body.len() + 3) as u8, id, kind];
        m.extend_from_slice(body);
        m
    }

    struct Wire {
        session: FramedSession<Toy>,
        stats: ConversationStats,
        out: Vec<L7Record>,
        seq: [u32; 2],
        t: u64,
    }

    impl Wire {
        fn new(keyed: bool) -> Self {
            Wire {
                session: FramedSession::new(
                    Toy { keyed },
                    Role::Server,
                    &ConversationConfig::default(),
                ),
                stats: ConversationStats::default(),
                out: Vec::new(),
                seq: [1000, 5000],
                t: 0,
            }
        }

        /// One syscall of `bytes`, of which only `cap` are captured.
        fn send(&mut self, direction: Direction, bytes: &[u8], cap: usize) {
            self.t += 10;
            let i = direction.index();
            let meta = SyscallMeta {
                enter_ns: self.t,
                exit_ns: self.t + 1,
                seq: Some(self.seq[i]),
                tid: 7,
                // a distinct id per syscall: which syscall a message started in
                syscall_trace_id: self.t,
            };
            self.seq[i] = self.seq[i].wrapping_add(bytes.len() as u32);
            let captured = &bytes[..cap.min(bytes.len())];
            let gap = (bytes.len() - captured.len()) as u64;
            self.session.feed(
                direction,
                &meta,
                SeqStep::default(),
                captured,
                gap,
                &mut self.stats,
                &mut self.out,
            );
        }

        fn resources(&self) -> Vec<(String, String)> {
            self.out
                .iter()
                .map(|r| (r.request_resource.clone(), r.response_exception.clone()))
                .collect()
        }
    }

    const IN: Direction = Direction::Ingress; // requests, for a server
    const OUT: Direction = Direction::Egress;

    #[test]
    fn fifo_pipelining_split_messages_and_continuations() {
        let mut w = Wire::new(false);
        let mut two = msg(1, b'Q', b"a");
        two.extend(msg(2, b'Q', b"bb"));
        w.send(IN, &two, 4096);
        let mut resp = msg(0, b'C', b"row");
        resp.extend(msg(0, b'K', b""));
        resp.extend(msg(0, b'R', b"done-a"));
        w.send(OUT, &resp[..4], 4096); // split mid-message
        w.send(OUT, &resp[4..], 4096);
        let r2 = msg(0, b'R', b"done-b");
        for b in &r2 {
            w.send(OUT, &[*b], 4096); // byte by byte
        }
        assert_eq!(
            w.resources(),
            vec![
                ("a".into(), "done-a".into()),
                ("bb".into(), "done-b".into())
            ]
        );
        let first = &w.out[0];
        assert_eq!(first.request_length, 4);
        assert_eq!(
            first.response_length,
            Some(6 + 9),
            "continuation counted, keep-alive not"
        );
        // requests travel Ingress (sequence numbers from 5000), responses Egress (from 1000)
        assert_eq!(first.req_tcp_seq, Some(5000));
        assert_eq!(w.out[1].req_tcp_seq, Some(5004));
        assert_eq!(first.resp_tcp_seq, Some(1000));
        assert_eq!(w.out[1].resp_tcp_seq, Some(1000 + resp.len() as u32));
        // the syscall trace ids are those of each message's first syscall
        let ids = |r: &L7Record| (r.request_syscall_trace_id, r.response_syscall_trace_id);
        assert_eq!((ids(first), ids(&w.out[1])), ((10, 20), (10, 40)));
        assert_eq!(w.stats.parse_errors + w.stats.resyncs, 0);
    }

    #[test]
    fn uncaptured_tails_are_skipped_exactly() {
        let mut w = Wire::new(false);
        for i in 0..3u8 {
            w.send(IN, &msg(i, b'Q', &[b'x'; 200]), 10); // 203-byte request, 10 captured
            w.send(OUT, &msg(i, b'R', &[b'y'; 100]), 9);
        }
        assert_eq!(w.out.len(), 3);
        assert!(
            w.out
                .iter()
                .all(|r| r.request_length == 203 && r.response_length == Some(103))
        );
        assert_eq!(w.stats.resyncs, 0);
    }

    #[test]
    fn keyed_pairing_out_of_order_and_resync_after_garbage() {
        let mut w = Wire::new(true);
        w.send(IN, &msg(1, b'Q', b"one"), 4096);
        w.send(IN, &msg(2, b'Q', b"two"), 4096);
        w.send(OUT, &msg(2, b'R', b"r2"), 4096);
        w.send(OUT, &[9, 9, b'?', 0, 0], 4096); // garbage: framing lost
        w.send(OUT, &msg(1, b'R', b"r1"), 4096); // a new syscall: resync
        assert_eq!(
            w.resources(),
            vec![("two".into(), "r2".into()), ("one".into(), "r1".into())]
        );
        assert_eq!((w.stats.parse_errors, w.stats.resyncs), (1, 1));
    }

    #[test]
    fn close_and_expire_report_pending_requests() {
        let mut w = Wire::new(false);
        w.send(IN, &msg(1, b'Q', b"slow"), 4096);
        w.session.expire(5, 1_000, &mut w.stats, &mut w.out);
        assert!(w.out.is_empty());
        w.session.expire(2_000, 1_000, &mut w.stats, &mut w.out);
        assert_eq!(w.out.len(), 1);
        assert_eq!(w.out[0].response_status, ResponseStatus::Timeout);
        w.send(IN, &msg(2, b'Q', b"cut"), 4096);
        w.session.close(3_000, &mut w.stats, &mut w.out);
        assert_eq!(w.out[1].response_status, ResponseStatus::Unknown);
        assert_eq!(w.stats.records, 2);
    }
}
