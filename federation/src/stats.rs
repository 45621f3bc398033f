//! [`MeshStats`]: counters and gauges of the mesh, for `/metrics` and `flowmesh status`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A point-in-time copy of the mesh counters. Counters (`*_total` in Prometheus terms) only
/// grow; `peers_*` are gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MeshStats {
    /// Own records handed to gossipsub.
    pub records_published: u64,
    /// Publishes skipped because no peer was subscribed yet (normal while alone; not an error).
    pub publish_no_peers: u64,
    /// Publishes that failed for another reason (encoding, oversize record, full queues).
    pub publish_errors: u64,
    /// Gossip messages received on the records topic, before validation.
    pub records_received: u64,
    /// Records that verified and were newer than what the directory held.
    pub records_accepted: u64,
    /// Records rejected and not forwarded: oversize, undecodable, bad signature, peer id not
    /// the signer's or not the gossip source.
    pub records_rejected: u64,
    /// Valid records ignored and not forwarded: not newer than the known one, claiming to be
    /// this node, or arriving while the directory is full.
    pub records_ignored: u64,
    /// Peers that went from alive to not alive.
    pub peers_died: u64,
    /// Peers dropped from the directory after long silence.
    pub peers_forgotten: u64,
    /// Dials to seed addresses started.
    pub seed_dials: u64,
    /// Outgoing connection attempts that failed (seeds and others).
    pub dial_failures: u64,
    /// Incoming connections that failed before completing (e.g. a wrong cluster token).
    pub incoming_failures: u64,
    /// Peers with at least one direct connection now.
    pub peers_connected: u64,
    /// Peers in the directory now (excluding this node).
    pub peers_known: u64,
    /// Alive peers now (excluding this node).
    pub peers_alive: u64,
}

/// The live counters behind [`MeshStats`], shared by the swarm task and the handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) records_published: AtomicU64,
    pub(crate) publish_no_peers: AtomicU64,
    pub(crate) publish_errors: AtomicU64,
    pub(crate) records_received: AtomicU64,
    pub(crate) records_accepted: AtomicU64,
    pub(crate) records_rejected: AtomicU64,
    pub(crate) records_ignored: AtomicU64,
    pub(crate) peers_died: AtomicU64,
    pub(crate) peers_forgotten: AtomicU64,
    pub(crate) seed_dials: AtomicU64,
    pub(crate) dial_failures: AtomicU64,
    pub(crate) incoming_failures: AtomicU64,
    pub(crate) peers_connected: AtomicU64,
}

/// Adds one to a counter. Relaxed: counters are independent and read for reporting only.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl Counters {
    /// Copies the counters; the directory gauges are filled in by the caller.
    pub(crate) fn snapshot(&self, peers_known: usize, peers_alive: usize) -> MeshStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MeshStats {
            records_published: get(&self.records_published),
            publish_no_peers: get(&self.publish_no_peers),
            publish_errors: get(&self.publish_errors),
            records_received: get(&self.records_received),
            records_accepted: get(&self.records_accepted),
            records_rejected: get(&self.records_rejected),
            records_ignored: get(&self.records_ignored),
            peers_died: get(&self.peers_died),
            peers_forgotten: get(&self.peers_forgotten),
            seed_dials: get(&self.seed_dials),
            dial_failures: get(&self.dial_failures),
            incoming_failures: get(&self.incoming_failures),
            peers_connected: get(&self.peers_connected),
            peers_known: u64::try_from(peers_known).unwrap_or(u64::MAX),
            peers_alive: u64::try_from(peers_alive).unwrap_or(u64::MAX),
        }
    }
}
