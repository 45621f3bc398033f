//! TCP performance tracking of one flow: the handshake and its RTT halves, retransmissions,
//! zero windows, resets and close.
//!
//! Like DeepFlow's `perf/tcp.rs` (read for ideas, not copied), retransmissions are found
//! from the sequence ranges already seen in each direction: a data segment that overlaps
//! them is a retransmission, while a segment that fills a hole left by reordering is not.
//! The set of ranges is bounded; when it is full its two lowest ranges are merged, as if the
//! hole between them had been seen (a later copy of those bytes then counts as a
//! retransmission, and its bytes as already counted).
//!
//! Only bytes not seen before count as a direction's payload: a flow's payload bytes are
//! what the sender wrote, however often parts of it crossed the wire.

use crate::decode::{TcpFlags, TcpHeader};
use crate::flows::record::{CloseType, ConnectionResult};
use crate::flows::{CLIENT_TO_SERVER, Counters, SERVER_TO_CLIENT};

/// Ranges of sequence space kept per direction.
const MAX_RANGES: usize = 16;

/// A direction's sequence space: 32-bit sequence numbers unwrapped into a 64-bit space,
/// and the byte ranges seen in it.
#[derive(Debug, Default)]
pub(crate) struct SeqSpace {
    /// Highest unwrapped sequence number seen (end of a range or a SYN).
    high: Option<u64>,
    /// Seen ranges `[start, end)`, sorted, disjoint and not touching.
    ranges: Vec<(u64, u64)>,
}

impl SeqSpace {
    /// Unwraps `seq` to the 64-bit value nearest the highest seen so far.
    pub(crate) fn unwrap(&mut self, seq: u32) -> u64 {
        match self.high {
            None => {
                // Start at 2^32 so values a little behind the first one stay positive.
                let value = (1u64 << 32) + u64::from(seq);
                self.high = Some(value);
                value
            }
            Some(high) => {
                let delta = i64::from(seq.wrapping_sub(high as u32) as i32);
                high.saturating_add_signed(delta)
            }
        }
    }

    /// Records `[start, end)` as seen; returns how many of its bytes had not been seen
    /// before.
    fn insert(&mut self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let seen: u64 = self
            .ranges
            .iter()
            .map(|&(a, b)| b.min(end).saturating_sub(a.max(start)))
            .sum();
        let (mut merged_start, mut merged_end) = (start, end);
        self.ranges.retain(|&(a, b)| {
            if a <= merged_end && merged_start <= b {
                merged_start = merged_start.min(a);
                merged_end = merged_end.max(b);
                false
            } else {
                true
            }
        });
        let at = self.ranges.partition_point(|&(a, _)| a < merged_start);
        self.ranges.insert(at, (merged_start, merged_end));
        if self.ranges.len() > MAX_RANGES {
            let (_, second_end) = self.ranges.remove(1);
            self.ranges[0].1 = second_end;
        }
        self.high = Some(self.high.map_or(end, |high| high.max(end)));
        (end - start).saturating_sub(seen)
    }
}

/// The TCP state of one flow.
#[derive(Debug)]
pub(crate) struct TcpTracker {
    /// Sequence space per direction (index [`CLIENT_TO_SERVER`] / [`SERVER_TO_CLIENT`]).
    pub(crate) seq: [SeqSpace; 2],
    /// Union of flags sent per direction.
    pub(crate) flags: [TcpFlags; 2],
    /// Time of the latest SYN before the first SYN-ACK.
    syn_ns: Option<u64>,
    /// Sequence number of the client's SYN.
    client_isn: Option<u32>,
    /// Time of the latest SYN-ACK.
    synack_ns: Option<u64>,
    /// Sequence number of the server's SYN-ACK.
    server_isn: Option<u32>,
    pub(crate) rtt_client_ns: Option<u64>,
    pub(crate) rtt_server_ns: Option<u64>,
    pub(crate) result: ConnectionResult,
    fin_seen: [bool; 2],
    /// When and how the connection closed (both FINs, or a RST).
    pub(crate) closed: Option<(u64, CloseType)>,
}

/// What one segment told the flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    /// Unwrapped sequence number of the segment's first payload byte.
    pub(crate) data_seq: u64,
    /// A SYN in this direction: payload starts after `data_seq - 1`.
    pub(crate) syn: bool,
    /// Payload bytes of the segment not seen before in this direction (all of them
    /// unless it is a retransmission).
    pub(crate) new_payload: u32,
}

impl TcpTracker {
    /// A tracker for a flow whose first packet was a SYN (`opened_by_syn`) or not.
    pub(crate) fn new(opened_by_syn: bool) -> Self {
        TcpTracker {
            seq: Default::default(),
            flags: [TcpFlags::default(); 2],
            syn_ns: None,
            client_isn: None,
            synack_ns: None,
            server_isn: None,
            rtt_client_ns: None,
            rtt_server_ns: None,
            result: if opened_by_syn {
                ConnectionResult::Pending
            } else {
                ConnectionResult::Unknown
            },
            fin_seen: [false; 2],
            closed: None,
        }
    }

    /// Whether a SYN with sequence number `seq` from the client starts a new connection on
    /// this 5-tuple rather than retransmitting this flow's SYN.
    pub(crate) fn is_new_connection(&self, seq: u32) -> bool {
        self.closed.is_some()
            || match self.result {
                ConnectionResult::Pending => false,
                _ => self.client_isn != Some(seq),
            }
    }

    /// Accounts one segment travelling in `direction` at `ts`.
    pub(crate) fn segment(
        &mut self,
        direction: usize,
        header: &TcpHeader,
        payload_len: u32,
        ts: u64,
        counters: &mut Counters,
    ) -> SegmentInfo {
        let flags = header.flags;
        self.flags[direction] = self.flags[direction].union(flags);
        let syn = flags.contains(TcpFlags::SYN);
        let ack = flags.contains(TcpFlags::ACK);
        let rst = flags.contains(TcpFlags::RST);
        let fin = flags.contains(TcpFlags::FIN);
        let seq_abs = self.seq[direction].unwrap(header.seq);
        let data_seq = if syn { seq_abs + 1 } else { seq_abs };

        if syn && !ack && direction == CLIENT_TO_SERVER {
            counters.syn += 1;
            if self.client_isn.is_some() {
                counters.retrans_syn += 1;
            }
            self.client_isn = Some(header.seq);
            if self.synack_ns.is_none() {
                self.syn_ns = Some(ts);
            }
        } else if syn && ack && direction == SERVER_TO_CLIENT {
            counters.synack += 1;
            if self.server_isn.is_some() {
                counters.retrans_synack += 1;
            } else if let Some(syn_ns) = self.syn_ns {
                self.rtt_server_ns = Some(ts.saturating_sub(syn_ns));
            }
            self.server_isn = Some(header.seq);
            self.synack_ns = Some(ts);
        } else if !syn
            && ack
            && direction == CLIENT_TO_SERVER
            && self.rtt_client_ns.is_none()
            && let (Some(server_isn), Some(synack_ns)) = (self.server_isn, self.synack_ns)
            && header.ack == server_isn.wrapping_add(1)
            && !rst
        {
            // The client's ACK of the SYN-ACK completes the handshake.
            self.rtt_client_ns = Some(ts.saturating_sub(synack_ns));
            if matches!(
                self.result,
                ConnectionResult::Pending | ConnectionResult::Unknown
            ) {
                self.result = ConnectionResult::Established;
            }
        }

        if header.window == 0 && !syn && !rst && !fin {
            counters.dir[direction].zero_win += 1;
        }
        let mut new_payload = payload_len;
        if payload_len > 0 {
            let end = data_seq + u64::from(payload_len);
            let new_bytes = self.seq[direction].insert(data_seq, end);
            if new_bytes < u64::from(payload_len) {
                counters.dir[direction].retrans += 1;
                new_payload = u32::try_from(new_bytes).unwrap_or(payload_len);
            }
        }
        if rst {
            counters.dir[direction].rst += 1;
            if self.result == ConnectionResult::Pending {
                self.result = if direction == SERVER_TO_CLIENT && self.server_isn.is_none() {
                    ConnectionResult::Refused
                } else {
                    ConnectionResult::Aborted
                };
            }
            if self.closed.is_none() {
                let close = if direction == CLIENT_TO_SERVER {
                    CloseType::ClientRst
                } else {
                    CloseType::ServerRst
                };
                self.closed = Some((ts, close));
            }
        }
        if fin {
            self.fin_seen[direction] = true;
            if self.result == ConnectionResult::Pending {
                self.result = ConnectionResult::Aborted;
            }
            if self.fin_seen == [true, true] && self.closed.is_none() {
                self.closed = Some((ts, CloseType::Fin));
            }
        }
        SegmentInfo {
            data_seq,
            syn,
            new_payload,
        }
    }

    /// The result to report for a flow ending because it went idle.
    pub(crate) fn result_at_timeout(&self) -> ConnectionResult {
        match self.result {
            ConnectionResult::Pending => ConnectionResult::Timeout,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwrapping_follows_the_highest_sequence() {
        let mut space = SeqSpace::default();
        let first = space.unwrap(u32::MAX - 10);
        assert_eq!(space.insert(first, first + 10), 10);
        // Across the wrap: 5 is 16 bytes after u32::MAX - 10.
        let wrapped = space.unwrap(5);
        assert_eq!(wrapped, first + 16);
        // Behind the highest: still nearby, not 4 GiB ahead.
        assert_eq!(space.unwrap(u32::MAX - 12), first - 2);
    }

    #[test]
    fn overlaps_are_retransmissions_and_holes_are_not() {
        let mut space = SeqSpace::default();
        assert_eq!(space.insert(100, 200), 100);
        assert_eq!(space.insert(300, 400), 100); // hole 200..300
        assert_eq!(space.insert(200, 300), 100); // fills it: reordering, not retransmission
        assert_eq!(space.ranges, vec![(100, 400)]);
        assert_eq!(space.insert(150, 160), 0);
        assert_eq!(space.insert(390, 450), 50); // partly new
        assert_eq!(space.insert(50, 500), 100); // covers everything, new at both ends
        assert_eq!(space.ranges, vec![(50, 500)]);
    }

    #[test]
    fn ranges_stay_bounded() {
        let mut space = SeqSpace::default();
        for index in 0..100u64 {
            space.insert(index * 10, index * 10 + 5);
            assert!(space.ranges.len() <= MAX_RANGES);
        }
        // The lowest holes were merged away and count as seen.
        assert_eq!(space.insert(6, 7), 0);
        assert_eq!(space.insert(996, 997), 1);
    }
}
