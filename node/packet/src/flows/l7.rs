//! L7 from packets: each flow's payload, in sequence order, fed into a
//! [`flowmesh_protocols::Conversation`].
//!
//! Each TCP segment becomes one [`Chunk`] (its payload length is the chunk's `byte_count`,
//! its captured part the chunk's `payload`, its sequence number the chunk's `tcp_seq`);
//! each UDP datagram becomes one chunk without a sequence number. Per direction, a
//! [`Reassembler`] feeds only bytes not fed before, in sequence order:
//!
//! - a duplicate (all bytes already fed) is dropped; a segment that overlaps what was fed
//!   is trimmed to its new bytes;
//! - a segment beyond a hole waits (bounded per direction and by a budget shared by all
//!   flows) until the hole fills; when the hole does not fill within `reorder_timeout`,
//!   or when there is no room to wait, the waiting segments are fed anyway and the
//!   conversation sees the jump of `tcp_seq` as a gap — it counts the missing bytes and
//!   resynchronises, so a hole never produces a wrong row.
//!
//! Traffic no parser recognises makes the conversation give up; the flow then drops its
//! conversation and buffers and feeds nothing more, so it stays an L4 flow without L7 rows.

use std::collections::BTreeMap;

use flowmesh_protocols::{
    Chunk, Conversation, ConversationConfig, Direction, L7Protocol, L7Record,
};

use crate::flows::CLIENT_TO_SERVER;

/// Out-of-order segments held per direction at most.
const MAX_PENDING_SEGMENTS: usize = 64;
/// Bookkeeping bytes charged per held segment besides its payload.
const PENDING_OVERHEAD: usize = 64;

/// Bytes of out-of-order payload held by all flows, against a limit.
#[derive(Debug)]
pub(crate) struct ReorderBudget {
    pub(crate) in_use: usize,
    pub(crate) limit: usize,
    /// Holes given up (fed as gaps).
    pub(crate) gaps: u64,
}

impl ReorderBudget {
    pub(crate) fn new(limit: usize) -> Self {
        ReorderBudget {
            in_use: 0,
            limit,
            gaps: 0,
        }
    }

    fn take(&mut self, bytes: usize) -> bool {
        if self.in_use + bytes <= self.limit {
            self.in_use += bytes;
            true
        } else {
            false
        }
    }

    fn release(&mut self, bytes: usize) {
        self.in_use = self.in_use.saturating_sub(bytes);
    }
}

#[derive(Debug)]
struct PendingSegment {
    seq: u32,
    byte_count: u32,
    captured: Vec<u8>,
    ts: u64,
}

impl PendingSegment {
    fn cost(&self) -> usize {
        self.captured.len() + PENDING_OVERHEAD
    }
}

/// Payload of one packet in one direction: a TCP segment (or the part of one still to
/// feed) or a UDP datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece<'a> {
    /// TCP sequence number of the first byte (unused for UDP).
    pub(crate) seq: u32,
    /// Payload bytes the packet carried.
    pub(crate) byte_count: u32,
    /// The captured prefix of them.
    pub(crate) payload: &'a [u8],
    /// Capture time.
    pub(crate) ts: u64,
}

/// In-order delivery of one direction's payload. Positions are unwrapped sequence numbers
/// (see [`crate::flows::tcp::SeqSpace`]).
#[derive(Debug, Default)]
pub(crate) struct Reassembler {
    /// Position of the next byte to deliver; `None` until the first SYN or payload.
    next: Option<u64>,
    pending: BTreeMap<u64, PendingSegment>,
    pending_bytes: usize,
}

impl Reassembler {
    /// The stream's first byte is at `position` (the SYN's sequence number plus one).
    pub(crate) fn start_at(&mut self, position: u64) {
        if self.next.is_none() {
            self.next = Some(position);
        }
    }

    /// Takes the segment `piece` at `position`; hands what can be delivered to `sink`.
    fn segment(
        &mut self,
        position: u64,
        piece: Piece<'_>,
        max_bytes: usize,
        budget: &mut ReorderBudget,
        sink: &mut impl FnMut(Piece<'_>),
    ) {
        if piece.byte_count == 0 {
            return;
        }
        let next = *self.next.get_or_insert(position);
        let end = position + u64::from(piece.byte_count);
        if end <= next {
            return;
        }
        if position > next {
            let cost = piece.payload.len() + PENDING_OVERHEAD;
            let room =
                self.pending.len() < MAX_PENDING_SEGMENTS && self.pending_bytes + cost <= max_bytes;
            if room && budget.take(cost) {
                // Two segments at one position: keep the longer.
                if let Some(old) = self.pending.get(&position) {
                    if old.byte_count >= piece.byte_count {
                        budget.release(cost);
                        return;
                    }
                    let old_cost = old.cost();
                    budget.release(old_cost);
                    self.pending_bytes = self.pending_bytes.saturating_sub(old_cost);
                }
                let segment = PendingSegment {
                    seq: piece.seq,
                    byte_count: piece.byte_count,
                    captured: piece.payload.to_vec(),
                    ts: piece.ts,
                };
                self.pending.insert(position, segment);
                self.pending_bytes += cost;
                return;
            }
            // No room to wait: give up on the holes before this segment.
            while self
                .pending
                .keys()
                .next()
                .is_some_and(|&first| first < position)
            {
                self.skip_hole(budget, sink);
            }
            if self.next.is_some_and(|next| next < position) {
                budget.gaps += 1;
                self.next = Some(position);
            }
        }
        self.deliver(position, piece, sink);
        self.drain(budget, sink);
    }

    /// Delivers the new bytes of a segment at `position <= next`.
    fn deliver(&mut self, position: u64, piece: Piece<'_>, sink: &mut impl FnMut(Piece<'_>)) {
        let next = self.next.unwrap_or(position);
        let end = position + u64::from(piece.byte_count);
        if end <= next {
            return;
        }
        // `skip < byte_count` because `position + byte_count > next`.
        let skip = next.saturating_sub(position);
        let skip32 = u32::try_from(skip).unwrap_or(piece.byte_count);
        let captured_from = usize::try_from(skip)
            .unwrap_or(usize::MAX)
            .min(piece.payload.len());
        sink(Piece {
            seq: piece.seq.wrapping_add(skip32),
            byte_count: piece.byte_count - skip32,
            payload: &piece.payload[captured_from..],
            ts: piece.ts,
        });
        self.next = Some(end);
    }

    /// Delivers held segments that have become contiguous.
    fn drain(&mut self, budget: &mut ReorderBudget, sink: &mut impl FnMut(Piece<'_>)) {
        while let Some(entry) = self.pending.first_entry() {
            let next = self.next.unwrap_or(*entry.key());
            if *entry.key() > next {
                break;
            }
            let position = *entry.key();
            let segment = entry.remove();
            let cost = segment.cost();
            self.pending_bytes = self.pending_bytes.saturating_sub(cost);
            budget.release(cost);
            let piece = Piece {
                seq: segment.seq,
                byte_count: segment.byte_count,
                payload: &segment.captured,
                ts: segment.ts,
            };
            self.deliver(position, piece, sink);
        }
    }

    /// Gives up on the first hole: the next held segment is delivered after a gap.
    fn skip_hole(&mut self, budget: &mut ReorderBudget, sink: &mut impl FnMut(Piece<'_>)) {
        if let Some(&first) = self.pending.keys().next() {
            if self.next.is_none_or(|next| next < first) {
                budget.gaps += 1;
                self.next = Some(first);
            }
            self.drain(budget, sink);
        }
    }

    /// Gives up on holes whose next segment has waited `timeout_ns` at `now_ns`; with
    /// `timeout_ns == 0`, on every hole.
    fn expire(
        &mut self,
        now_ns: u64,
        timeout_ns: u64,
        budget: &mut ReorderBudget,
        sink: &mut impl FnMut(Piece<'_>),
    ) {
        while let Some(oldest) = self.pending.values().map(|segment| segment.ts).min() {
            if timeout_ns != 0 && oldest.saturating_add(timeout_ns) > now_ns {
                break;
            }
            self.skip_hole(budget, sink);
        }
    }

    /// Drops everything held, returning its budget.
    fn clear(&mut self, budget: &mut ReorderBudget) {
        budget.release(self.pending_bytes);
        self.pending.clear();
        self.pending_bytes = 0;
    }
}

/// The L7 side of one flow.
#[derive(Debug)]
pub(crate) struct L7Flow {
    /// `None` until the first payload, and again once parsing gave up or L7 is off.
    conversation: Option<Box<Conversation>>,
    /// True once the conversation gave up (or L7 is disabled): feed nothing more.
    done: bool,
    pub(crate) streams: [Reassembler; 2],
    /// The protocol, remembered when the conversation is dropped.
    protocol: Option<L7Protocol>,
}

/// Limits the L7 side needs for one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct L7Limits<'a> {
    pub(crate) conversation: &'a ConversationConfig,
    pub(crate) reorder_max_bytes: usize,
}

/// Feeds one piece to the conversation as a chunk. The conversation models the flow's
/// client: client → server bytes are `Egress`.
fn feed(
    conversation: &mut Conversation,
    direction: usize,
    tcp_seq: Option<u32>,
    piece: Piece<'_>,
    out: &mut Vec<L7Record>,
) {
    let direction = if direction == CLIENT_TO_SERVER {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    conversation.feed(
        &Chunk {
            direction,
            enter_ns: piece.ts,
            exit_ns: piece.ts,
            tcp_seq,
            byte_count: piece.byte_count,
            payload: piece.payload,
            tid: 0,
            syscall_trace_id: 0,
        },
        out,
    );
}

impl L7Flow {
    pub(crate) fn new(enabled: bool) -> Self {
        L7Flow {
            conversation: None,
            done: !enabled,
            streams: Default::default(),
            protocol: None,
        }
    }

    /// The protocol recognised, if any.
    pub(crate) fn protocol(&self) -> Option<L7Protocol> {
        self.conversation
            .as_ref()
            .and_then(|conversation| conversation.protocol())
            .or(self.protocol)
    }

    /// Whether nothing more will be parsed.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// One TCP segment's payload (`piece`, travelling in `direction`) at unwrapped
    /// `position`.
    pub(crate) fn tcp_segment(
        &mut self,
        direction: usize,
        position: u64,
        piece: Piece<'_>,
        limits: L7Limits<'_>,
        budget: &mut ReorderBudget,
        out: &mut Vec<L7Record>,
    ) {
        if self.done || piece.byte_count == 0 {
            return;
        }
        let conversation = self
            .conversation
            .get_or_insert_with(|| Box::new(Conversation::new(limits.conversation.clone())));
        self.streams[direction].segment(
            position,
            piece,
            limits.reorder_max_bytes,
            budget,
            &mut |piece| feed(conversation, direction, Some(piece.seq), piece, out),
        );
        self.give_up_if_ignored(budget);
    }

    /// One UDP datagram (`piece.seq` is ignored).
    pub(crate) fn datagram(
        &mut self,
        direction: usize,
        piece: Piece<'_>,
        limits: L7Limits<'_>,
        budget: &mut ReorderBudget,
        out: &mut Vec<L7Record>,
    ) {
        if self.done || piece.byte_count == 0 {
            return;
        }
        let conversation = self
            .conversation
            .get_or_insert_with(|| Box::new(Conversation::new(limits.conversation.clone())));
        feed(conversation, direction, None, piece, out);
        self.give_up_if_ignored(budget);
    }

    /// Periodic work: holes waiting too long become gaps, requests waiting too long
    /// become timeout rows.
    pub(crate) fn tick(
        &mut self,
        now_ns: u64,
        reorder_timeout_ns: u64,
        budget: &mut ReorderBudget,
        out: &mut Vec<L7Record>,
    ) {
        let Some(conversation) = self.conversation.as_mut() else {
            return;
        };
        for (direction, stream) in self.streams.iter_mut().enumerate() {
            stream.expire(now_ns, reorder_timeout_ns.max(1), budget, &mut |piece| {
                feed(conversation, direction, Some(piece.seq), piece, out);
            });
        }
        conversation.expire(now_ns, out);
        self.give_up_if_ignored(budget);
    }

    /// The flow ended: feed what is held (across its holes), then close the conversation.
    pub(crate) fn close(
        &mut self,
        now_ns: u64,
        budget: &mut ReorderBudget,
        out: &mut Vec<L7Record>,
    ) {
        if let Some(conversation) = self.conversation.as_mut() {
            for (direction, stream) in self.streams.iter_mut().enumerate() {
                stream.expire(now_ns, 0, budget, &mut |piece| {
                    feed(conversation, direction, Some(piece.seq), piece, out);
                });
            }
            conversation.close(now_ns, out);
        }
        self.release(budget);
    }

    fn give_up_if_ignored(&mut self, budget: &mut ReorderBudget) {
        if self
            .conversation
            .as_ref()
            .is_some_and(|conversation| conversation.is_ignored())
        {
            self.release(budget);
        }
    }

    /// Drops the conversation and every held segment; nothing more is parsed.
    fn release(&mut self, budget: &mut ReorderBudget) {
        if let Some(conversation) = self.conversation.take() {
            self.protocol = self.protocol.or(conversation.protocol());
        }
        for stream in &mut self.streams {
            stream.clear(budget);
        }
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds segments `(position, bytes)` and returns what was delivered as
    /// `(position, bytes)`, positions being `seq` here (no wrap in these tests).
    fn run(
        segments: &[(u64, &[u8])],
        max_bytes: usize,
        budget: &mut ReorderBudget,
    ) -> (Vec<(u32, Vec<u8>)>, Reassembler) {
        let mut stream = Reassembler::default();
        stream.start_at(100);
        let mut delivered = Vec::new();
        for (position, bytes) in segments {
            let piece = Piece {
                seq: *position as u32,
                byte_count: bytes.len() as u32,
                payload: bytes,
                ts: 0,
            };
            stream.segment(*position, piece, max_bytes, budget, &mut |piece: Piece<
                '_,
            >| {
                assert_eq!(piece.payload.len(), piece.byte_count as usize);
                delivered.push((piece.seq, piece.payload.to_vec()));
            });
        }
        (delivered, stream)
    }

    #[test]
    fn in_order_duplicates_and_overlaps() {
        let mut budget = ReorderBudget::new(1 << 20);
        let (delivered, _) = run(
            &[
                (100, b"abc"),
                (100, b"abc"),  // duplicate
                (102, b"cdef"), // overlaps by one byte
                (103, b"de"),   // inside what was fed
            ],
            1 << 16,
            &mut budget,
        );
        assert_eq!(
            delivered,
            vec![(100, b"abc".to_vec()), (103, b"def".to_vec())]
        );
    }

    #[test]
    fn out_of_order_segments_wait_for_the_hole() {
        let mut budget = ReorderBudget::new(1 << 20);
        let (delivered, stream) = run(
            &[(106, b"ghi"), (103, b"def"), (100, b"abc")],
            1 << 16,
            &mut budget,
        );
        assert_eq!(
            delivered,
            vec![
                (100, b"abc".to_vec()),
                (103, b"def".to_vec()),
                (106, b"ghi".to_vec())
            ]
        );
        assert!(stream.pending.is_empty());
        assert_eq!(budget.in_use, 0);
        assert_eq!(budget.gaps, 0);
    }

    #[test]
    fn holes_become_gaps_when_there_is_no_room() {
        // The per-direction limit holds one segment.
        let mut budget = ReorderBudget::new(1 << 20);
        let (delivered, _) = run(
            &[(103, b"def"), (106, b"ghi"), (100, b"abc")],
            PENDING_OVERHEAD + 3,
            &mut budget,
        );
        // 103 waited; 106 found no room: the hole 100..103 was given up.
        assert_eq!(
            delivered,
            vec![(103, b"def".to_vec()), (106, b"ghi".to_vec())]
        );
        assert_eq!(budget.gaps, 1);
        assert_eq!(budget.in_use, 0);
        // The shared budget limits too.
        let mut budget = ReorderBudget::new(0);
        let (delivered, _) = run(&[(103, b"def"), (100, b"abc")], 1 << 16, &mut budget);
        assert_eq!(delivered, vec![(103, b"def".to_vec())]);
    }

    #[test]
    fn holes_expire() {
        let mut budget = ReorderBudget::new(1 << 20);
        let (delivered, mut stream) = run(&[(110, b"xyz")], 1 << 16, &mut budget);
        assert!(delivered.is_empty());
        assert!(budget.in_use > 0);
        let mut late = Vec::new();
        stream.expire(5, 10, &mut budget, &mut |piece: Piece<'_>| {
            late.push(piece.seq)
        });
        assert!(late.is_empty());
        stream.expire(10, 10, &mut budget, &mut |piece: Piece<'_>| {
            late.push(piece.seq)
        });
        assert_eq!(late, vec![110]);
        assert_eq!(budget.in_use, 0);
        assert_eq!(budget.gaps, 1);
    }
}
