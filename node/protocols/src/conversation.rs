//! Per-socket state: sequence tracking, protocol inference, then parsing and pairing.

mod http1_session;

pub(crate) use http1_session::Http1Session;

use crate::infer::{self, Detection, Inference};
use crate::session::{ProtocolSession, SeqStep, SyscallMeta, new_session};
use crate::{Chunk, Direction, L7Protocol, L7Record, Role};

/// A sequence jump at least this large (or backwards) is a discontinuity, not a gap.
const MAX_SEQ_GAP: u32 = 1 << 30;

/// Limits and timeouts of a [`Conversation`].
#[derive(Debug, Clone)]
pub struct ConversationConfig {
    /// Requests waiting for a response at most; further requests are dropped (no row) and
    /// counted in [`ConversationStats::dropped_requests`]. Default 1024.
    pub max_pending_requests: usize,
    /// Longest message head (and chunked trailer section) accepted, in bytes; a longer one is
    /// a parse error and the direction resynchronises. It also bounds the bytes buffered per
    /// direction. Default 16 KiB.
    pub max_head_bytes: usize,
    /// A request without response for this long becomes a [`crate::ResponseStatus::Timeout`]
    /// row at the next [`Conversation::expire`]. Default 30 s.
    pub request_timeout_ns: u64,
    /// Chunks whose start is not a recognisable message after which inference gives up and
    /// the conversation is ignored. Default 8.
    pub inference_attempts: u32,
}

impl Default for ConversationConfig {
    fn default() -> Self {
        ConversationConfig {
            max_pending_requests: 1024,
            max_head_bytes: 16 * 1024,
            request_timeout_ns: 30_000_000_000,
            inference_attempts: 8,
        }
    }
}

/// Counters of one conversation, for `/metrics` and debugging.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConversationStats {
    /// Rows emitted (complete, timed out or closed without response).
    pub records: u64,
    /// Malformed messages (each also causes a resync).
    pub parse_errors: u64,
    /// Times a direction lost framing and had to look for a new message start.
    pub resyncs: u64,
    /// Requests dropped because `max_pending_requests` were already waiting.
    pub dropped_requests: u64,
    /// Responses that produced no row: no request was pending (we attached mid-stream or the
    /// request was lost), or they answered a request already reported as timed out or dropped.
    pub unmatched_responses: u64,
    /// Bytes not captured: uncaptured syscall tails and sequence-number gaps.
    pub gap_bytes: u64,
}

/// The parsing state of one socket (both directions). See the crate docs.
///
/// Feed every [`Chunk`] of the socket in syscall order with [`Conversation::feed`], call
/// [`Conversation::expire`] periodically and [`Conversation::close`] when the socket closes.
/// Memory is bounded by the config whatever the input.
#[derive(Debug)]
pub struct Conversation {
    config: ConversationConfig,
    stats: ConversationStats,
    phase: Phase,
    streams: [StreamTrack; 2],
    closed: bool,
}

#[derive(Debug)]
enum Phase {
    Inferring { failed_attempts: u32 },
    Active(Box<dyn ProtocolSession>),
    Ignored,
}

/// Sequence tracking of one direction, and during inference the start of a message split
/// across chunks.
#[derive(Debug, Default)]
struct StreamTrack {
    next_seq: Option<u32>,
    probe: Vec<u8>,
    probe_meta: Option<SyscallMeta>,
}

impl StreamTrack {
    fn advance(&mut self, seq: Option<u32>, byte_count: u32) -> SeqStep {
        let step = match (self.next_seq, seq) {
            (Some(expected), Some(seq)) => {
                let jump = seq.wrapping_sub(expected);
                if jump < MAX_SEQ_GAP {
                    SeqStep {
                        gap: u64::from(jump),
                        discontinuous: false,
                    }
                } else {
                    SeqStep {
                        gap: 0,
                        discontinuous: true,
                    }
                }
            }
            _ => SeqStep::default(),
        };
        self.next_seq = seq.map(|seq| seq.wrapping_add(byte_count));
        step
    }

    fn clear_probe(&mut self) {
        self.probe.clear();
        self.probe_meta = None;
    }
}

impl Conversation {
    /// A conversation that has seen nothing yet.
    pub fn new(config: ConversationConfig) -> Self {
        Conversation {
            config,
            stats: ConversationStats::default(),
            phase: Phase::Inferring { failed_attempts: 0 },
            streams: Default::default(),
            closed: false,
        }
    }

    /// The protocol, once inferred.
    pub fn protocol(&self) -> Option<L7Protocol> {
        match &self.phase {
            Phase::Active(session) => Some(session.protocol()),
            Phase::Inferring { .. } | Phase::Ignored => None,
        }
    }

    /// This process's role on the socket, once inferred.
    pub fn role(&self) -> Option<Role> {
        match &self.phase {
            Phase::Active(session) => Some(session.role()),
            Phase::Inferring { .. } | Phase::Ignored => None,
        }
    }

    /// True when no further chunk can produce a row: inference gave up, or the connection
    /// became a tunnel (101 Switching Protocols, 2xx to CONNECT). The caller may then drop
    /// further chunks of this socket without feeding them.
    pub fn is_ignored(&self) -> bool {
        match &self.phase {
            Phase::Ignored => true,
            Phase::Active(session) => session.is_tunnel(),
            Phase::Inferring { .. } => false,
        }
    }

    /// Consumes one syscall's worth of the socket, appending finished rows to `out`.
    /// Chunks fed after [`Conversation::close`] are ignored.
    pub fn feed(&mut self, chunk: &Chunk<'_>, out: &mut Vec<L7Record>) {
        if self.closed || matches!(self.phase, Phase::Ignored) {
            return;
        }
        let captured = chunk.payload.len().min(chunk.byte_count as usize);
        let payload = &chunk.payload[..captured];
        let gap_after = u64::from(chunk.byte_count) - captured as u64;
        let step = self.streams[chunk.direction.index()].advance(chunk.tcp_seq, chunk.byte_count);
        self.stats.gap_bytes = self
            .stats
            .gap_bytes
            .saturating_add(step.gap)
            .saturating_add(gap_after);
        let meta = SyscallMeta {
            enter_ns: chunk.enter_ns,
            exit_ns: chunk.exit_ns,
            seq: chunk.tcp_seq,
            tid: chunk.tid,
            syscall_trace_id: chunk.syscall_trace_id,
        };
        match &mut self.phase {
            Phase::Inferring { .. } => {
                self.feed_inferring(chunk.direction, &meta, step, payload, gap_after, out);
            }
            Phase::Active(session) => session.feed(
                chunk.direction,
                &meta,
                step,
                payload,
                gap_after,
                &mut self.stats,
                out,
            ),
            Phase::Ignored => {}
        }
    }

    /// Emits a [`crate::ResponseStatus::Timeout`] row for every request that has waited
    /// `request_timeout_ns` or longer (from its first byte) at `now_ns`, unless its body is
    /// still arriving. A response that arrives later for such a request is skipped rather
    /// than paired with a newer request.
    pub fn expire(&mut self, now_ns: u64, out: &mut Vec<L7Record>) {
        if let Phase::Active(session) = &mut self.phase {
            session.expire(now_ns, self.config.request_timeout_ns, &mut self.stats, out);
        }
    }

    /// The socket closed at `now_ns`. A response delimited by connection close completes now
    /// (its end time is the exit of the last syscall that carried it); requests still
    /// waiting, including one whose response was cut short, become rows with
    /// [`crate::ResponseStatus::Unknown`] and no response fields. Later calls to `feed`,
    /// `expire` and `close` do nothing.
    pub fn close(&mut self, now_ns: u64, out: &mut Vec<L7Record>) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Phase::Active(session) = &mut self.phase {
            session.close(now_ns, &mut self.stats, out);
        }
        for track in &mut self.streams {
            track.probe = Vec::new();
            track.probe_meta = None;
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ConversationStats {
        self.stats
    }

    fn feed_inferring(
        &mut self,
        direction: Direction,
        meta: &SyscallMeta,
        step: SeqStep,
        payload: &[u8],
        gap_after: u64,
        out: &mut Vec<L7Record>,
    ) {
        let max_probe = self.config.max_head_bytes;
        let track = &mut self.streams[direction.index()];
        if step.gap > 0 || step.discontinuous {
            track.clear_probe();
        }
        if payload.is_empty() {
            // Nothing to look at; uncaptured bytes break a start line being assembled.
            if gap_after > 0 {
                track.clear_probe();
            }
            return;
        }
        // A start line split across syscalls: continue it.
        if let Some(first) = track.probe_meta {
            if track.probe.len() + payload.len() <= max_probe {
                track.probe.extend_from_slice(payload);
                match infer::detect(&track.probe, direction) {
                    Detection::Match(inference) => {
                        let merged = SyscallMeta {
                            exit_ns: meta.exit_ns,
                            ..first
                        };
                        let bytes = std::mem::take(&mut track.probe);
                        track.probe_meta = None;
                        self.start(inference, direction, &merged, &bytes, gap_after, out);
                        return;
                    }
                    Detection::NeedMore if gap_after == 0 => return,
                    Detection::NeedMore | Detection::NoMatch => {}
                }
            }
            // The start assembled so far was no message after all: one failed attempt.
            track.clear_probe();
            if self.fail_attempt() {
                return;
            }
        }
        // This chunk as the start of a message.
        match infer::detect(payload, direction) {
            Detection::Match(inference) => {
                self.start(inference, direction, meta, payload, gap_after, out);
            }
            Detection::NeedMore if gap_after == 0 && payload.len() < max_probe => {
                let track = &mut self.streams[direction.index()];
                track.probe.extend_from_slice(payload);
                track.probe_meta = Some(*meta);
            }
            Detection::NeedMore | Detection::NoMatch => {
                self.fail_attempt();
            }
        }
    }

    /// Counts a chunk that started no recognisable message; true when inference gave up.
    fn fail_attempt(&mut self) -> bool {
        let Phase::Inferring { failed_attempts } = &mut self.phase else {
            return true;
        };
        *failed_attempts += 1;
        if *failed_attempts >= self.config.inference_attempts {
            self.phase = Phase::Ignored;
            self.streams = Default::default();
            return true;
        }
        false
    }

    /// Inference succeeded on a chunk (or assembled chunks) of `direction`: set up the
    /// parsers and feed them what has been seen.
    fn start(
        &mut self,
        inference: Inference,
        direction: Direction,
        meta: &SyscallMeta,
        payload: &[u8],
        gap_after: u64,
        out: &mut Vec<L7Record>,
    ) {
        let mut session = new_session(inference.protocol, inference.role, &self.config);
        // The other direction may hold the start of a message split across chunks. A
        // response that began before this request did cannot answer it: it is dropped.
        let other = &mut self.streams[direction.opposite().index()];
        let other_carries_requests = direction.opposite() == inference.role.request_direction();
        if let Some(other_meta) = other.probe_meta.take()
            && (other_carries_requests || other_meta.enter_ns >= meta.enter_ns)
        {
            let bytes = std::mem::take(&mut other.probe);
            session.feed(
                direction.opposite(),
                &other_meta,
                SeqStep::default(),
                &bytes,
                0,
                &mut self.stats,
                out,
            );
        }
        session.feed(
            direction,
            meta,
            SeqStep::default(),
            payload,
            gap_after,
            &mut self.stats,
            out,
        );
        for track in &mut self.streams {
            track.probe = Vec::new();
        }
        self.phase = Phase::Active(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_gaps_and_discontinuities() {
        let mut track = StreamTrack::default();
        assert_eq!(track.advance(Some(100), 10), SeqStep::default());
        assert_eq!(track.advance(Some(110), 10), SeqStep::default());
        assert_eq!(
            track.advance(Some(150), 10),
            SeqStep {
                gap: 30,
                discontinuous: false
            }
        );
        // Backwards.
        assert!(track.advance(Some(100), 10).discontinuous);
        // Wrapping around u32 is a plain continuation.
        let mut track = StreamTrack::default();
        track.advance(Some(u32::MAX - 4), 10);
        assert_eq!(track.advance(Some(5), 1), SeqStep::default());
        // Too far ahead.
        assert!(track.advance(Some(6 + MAX_SEQ_GAP), 1).discontinuous);
        // No sequence numbers: nothing known.
        let mut track = StreamTrack::default();
        track.advance(None, 10);
        assert_eq!(track.advance(None, 10), SeqStep::default());
    }
}
