//! [`Directory`]: every node this one knows about, with failure detection from record age.
//!
//! Pure bookkeeping, no I/O: the swarm task feeds it verified records and connection events,
//! and [`crate::Mesh`] reads snapshots. Time is passed in, so tests drive it with `Instant`s.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::record::NodeRecord;

/// Most peers kept: records from further new peer ids are ignored until others are forgotten.
/// Bounds memory against a flood of freshly generated identities.
pub const MAX_PEERS: usize = 4096;

/// One node as seen from here.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerState {
    /// The newest record received from the node (for this node itself: the current record).
    pub record: NodeRecord,
    /// A record arrived within `dead_after`. Always true for this node itself.
    pub alive: bool,
    /// Milliseconds since that record arrived (0 for this node itself).
    pub last_seen_ms_ago: u64,
    /// There is a direct libp2p connection to the node (true for this node itself). A peer
    /// may be alive without one: its records are relayed by gossip.
    pub connected: bool,
}

/// What [`Directory::apply`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// First record from this peer (or first since it was forgotten).
    New,
    /// Supersedes the stored record.
    Newer,
    /// Not newer than the stored record (by `(started_at_ms, seq)`): dropped.
    Stale,
    /// Claims to be this node: dropped.
    Own,
    /// The directory is at [`MAX_PEERS`]: dropped.
    Full,
}

/// What [`Directory::sweep`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sweep {
    /// Peers that turned not alive.
    pub(crate) died: usize,
    /// Peers dropped after `forget_after` of silence.
    pub(crate) forgotten: usize,
}

impl Sweep {
    pub(crate) fn changed(&self) -> bool {
        self.died > 0 || self.forgotten > 0
    }
}

#[derive(Debug)]
struct PeerEntry {
    record: NodeRecord,
    last_seen: Instant,
    /// Liveness as of the last `apply` or `sweep`, to report transitions once.
    alive: bool,
}

/// The peer table. Invariants: it never holds an entry for this node's own peer id (that one
/// lives in `local`); per peer it holds the record with the highest `(started_at_ms, seq)`.
#[derive(Debug)]
pub(crate) struct Directory {
    local: NodeRecord,
    peers: HashMap<String, PeerEntry>,
    connected: HashSet<String>,
    dead_after: Duration,
    forget_after: Duration,
}

impl Directory {
    pub(crate) fn new(local: NodeRecord, dead_after: Duration, forget_after: Duration) -> Self {
        Self {
            local,
            peers: HashMap::new(),
            connected: HashSet::new(),
            dead_after,
            forget_after,
        }
    }

    /// This node's current record, to change before the next publish.
    pub(crate) fn local_mut(&mut self) -> &mut NodeRecord {
        &mut self.local
    }

    /// Stores a verified record if it is newer than what is known about its peer.
    pub(crate) fn apply(&mut self, record: NodeRecord, now: Instant) -> Applied {
        if record.peer_id == self.local.peer_id {
            return Applied::Own;
        }
        match self.peers.get_mut(&record.peer_id) {
            Some(entry) => {
                if record.version_key() <= entry.record.version_key() {
                    return Applied::Stale;
                }
                entry.record = record;
                entry.last_seen = now;
                entry.alive = true;
                Applied::Newer
            }
            None => {
                if self.peers.len() >= MAX_PEERS {
                    return Applied::Full;
                }
                self.peers.insert(
                    record.peer_id.clone(),
                    PeerEntry {
                        record,
                        last_seen: now,
                        alive: true,
                    },
                );
                Applied::New
            }
        }
    }

    /// Records whether a direct connection to `peer_id` exists. Kept for peers without a
    /// record too, so a record that arrives later shows the right state.
    pub(crate) fn set_connected(&mut self, peer_id: &str, connected: bool) {
        if connected {
            self.connected.insert(peer_id.to_owned());
        } else {
            self.connected.remove(peer_id);
        }
    }

    /// Marks peers silent for `dead_after` as not alive and drops those silent for
    /// `forget_after`.
    pub(crate) fn sweep(&mut self, now: Instant) -> Sweep {
        let mut sweep = Sweep::default();
        let (dead_after, forget_after) = (self.dead_after, self.forget_after);
        self.peers.retain(|_, entry| {
            let age = now.saturating_duration_since(entry.last_seen);
            if age > forget_after {
                sweep.forgotten += 1;
                return false;
            }
            let alive = age <= dead_after;
            if entry.alive && !alive {
                sweep.died += 1;
            }
            entry.alive = alive;
            true
        });
        sweep
    }

    /// Every known node including this one, sorted by peer id.
    pub(crate) fn snapshot(&self, now: Instant) -> Vec<PeerState> {
        let mut states = Vec::with_capacity(self.peers.len() + 1);
        states.push(PeerState {
            record: self.local.clone(),
            alive: true,
            last_seen_ms_ago: 0,
            connected: true,
        });
        states.extend(self.peers.values().map(|entry| {
            let age = now.saturating_duration_since(entry.last_seen);
            PeerState {
                record: entry.record.clone(),
                alive: age <= self.dead_after,
                last_seen_ms_ago: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                connected: self.connected.contains(&entry.record.peer_id),
            }
        }));
        states.sort_by(|a, b| a.record.peer_id.cmp(&b.record.peer_id));
        states
    }

    /// This node and every alive peer, sorted by peer id.
    pub(crate) fn alive_records(&self, now: Instant) -> Vec<NodeRecord> {
        let mut records: Vec<NodeRecord> = std::iter::once(self.local.clone())
            .chain(
                self.peers
                    .values()
                    .filter(|entry| {
                        now.saturating_duration_since(entry.last_seen) <= self.dead_after
                    })
                    .map(|entry| entry.record.clone()),
            )
            .collect();
        records.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        records
    }

    /// Number of peers (not counting this node) in the table.
    pub(crate) fn known_peers(&self) -> usize {
        self.peers.len()
    }

    /// Number of alive peers (not counting this node).
    pub(crate) fn alive_peers(&self, now: Instant) -> usize {
        self.peers
            .values()
            .filter(|entry| now.saturating_duration_since(entry.last_seen) <= self.dead_after)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD: Duration = Duration::from_secs(15);
    const FORGET: Duration = Duration::from_secs(150);

    fn record(peer_id: &str, started_at_ms: i64, seq: u64) -> NodeRecord {
        NodeRecord {
            peer_id: peer_id.into(),
            started_at_ms,
            seq,
            ..NodeRecord::default()
        }
    }

    fn directory() -> Directory {
        Directory::new(record("self", 1, 1), DEAD, FORGET)
    }

    #[test]
    fn keeps_only_the_newest_record_per_peer() {
        let mut dir = directory();
        let t0 = Instant::now();
        assert_eq!(dir.apply(record("b", 10, 1), t0), Applied::New);
        assert_eq!(dir.apply(record("b", 10, 3), t0), Applied::Newer);
        assert_eq!(dir.apply(record("b", 10, 2), t0), Applied::Stale);
        assert_eq!(dir.apply(record("b", 10, 3), t0), Applied::Stale);
        assert_eq!(dir.apply(record("self", 99, 99), t0), Applied::Own);
        let snapshot = dir.snapshot(t0);
        assert_eq!(snapshot.len(), 2);
        assert_eq!(snapshot[0].record.peer_id, "b");
        assert_eq!(snapshot[0].record.seq, 3);
    }

    #[test]
    fn a_restart_is_accepted_although_seq_starts_again() {
        let mut dir = directory();
        let t0 = Instant::now();
        dir.apply(record("b", 10, 500), t0);
        assert_eq!(dir.apply(record("b", 20, 1), t0), Applied::Newer);
        // A late record of the earlier run does not roll it back.
        assert_eq!(dir.apply(record("b", 10, 501), t0), Applied::Stale);
    }

    #[test]
    fn silence_means_dead_then_forgotten() {
        let mut dir = directory();
        let t0 = Instant::now();
        dir.apply(record("b", 10, 1), t0);
        dir.set_connected("b", true);
        let state = &dir.snapshot(t0)[0];
        assert!(state.alive && state.connected);
        assert_eq!(dir.sweep(t0 + DEAD), Sweep::default());

        let later = t0 + DEAD + Duration::from_millis(1);
        assert_eq!(
            dir.sweep(later),
            Sweep {
                died: 1,
                forgotten: 0
            }
        );
        dir.set_connected("b", false);
        let state = &dir.snapshot(later)[0];
        assert!(!state.alive && !state.connected);
        assert_eq!(state.last_seen_ms_ago, DEAD.as_millis() as u64 + 1);
        assert_eq!(dir.alive_records(later).len(), 1);
        // Reported once.
        assert_eq!(dir.sweep(later), Sweep::default());

        // A new record revives it.
        assert_eq!(dir.apply(record("b", 10, 2), later), Applied::Newer);
        assert_eq!(dir.alive_peers(later), 1);

        let much_later = later + FORGET + Duration::from_millis(1);
        assert_eq!(
            dir.sweep(much_later),
            Sweep {
                died: 0,
                forgotten: 1
            }
        );
        assert_eq!(dir.known_peers(), 0);
        // Once forgotten, even an old record is news again.
        assert_eq!(dir.apply(record("b", 10, 1), much_later), Applied::New);
    }

    #[test]
    fn snapshot_includes_self_and_is_sorted() {
        let mut dir = directory();
        let t0 = Instant::now();
        for peer in ["z", "a", "m"] {
            dir.apply(record(peer, 1, 1), t0);
        }
        let ids: Vec<_> = dir
            .snapshot(t0)
            .into_iter()
            .map(|state| state.record.peer_id)
            .collect();
        assert_eq!(ids, ["a", "m", "self", "z"]);
        let me = dir
            .snapshot(t0 + FORGET)
            .into_iter()
            .find(|state| state.record.peer_id == "self")
            .unwrap();
        assert!(me.alive && me.connected);
    }

    #[test]
    fn stops_growing_at_max_peers() {
        let mut dir = directory();
        let t0 = Instant::now();
        for index in 0..MAX_PEERS {
            assert_eq!(
                dir.apply(record(&format!("p{index}"), 1, 1), t0),
                Applied::New
            );
        }
        assert_eq!(dir.apply(record("one-too-many", 1, 1), t0), Applied::Full);
        // Known peers still update.
        assert_eq!(dir.apply(record("p0", 1, 2), t0), Applied::Newer);
    }
}
