//! Counters of the dictionary service, read with [`crate::DictionaryClient::stats`].
//!
//! Plain atomics: `node` owns the metrics registry and exports these under
//! `flowmesh_dictionary_*_total` names.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub proposals: AtomicU64,
    pub proposed_strings: AtomicU64,
    pub proposal_retries: AtomicU64,
    pub resource_proposals: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub replica_hits: AtomicU64,
    pub replica_errors: AtomicU64,
    pub forwarded_requests: AtomicU64,
    pub rejected_peer_requests: AtomicU64,
    pub tls_refused_connections: std::sync::Arc<AtomicU64>,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> DictionaryStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DictionaryStats {
            proposals: get(&self.proposals),
            proposed_strings: get(&self.proposed_strings),
            proposal_retries: get(&self.proposal_retries),
            resource_proposals: get(&self.resource_proposals),
            cache_hits: get(&self.cache_hits),
            cache_misses: get(&self.cache_misses),
            replica_hits: get(&self.replica_hits),
            replica_errors: get(&self.replica_errors),
            forwarded_requests: get(&self.forwarded_requests),
            rejected_peer_requests: get(&self.rejected_peer_requests),
            tls_refused_connections: get(&self.tls_refused_connections),
        }
    }
}

/// A point-in-time copy of the node's dictionary counters (all monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DictionaryStats {
    /// Raft proposals made by this node's batcher (one per kind per batch).
    pub proposals: u64,
    /// Strings carried by those proposals (after batching and de-duplication).
    pub proposed_strings: u64,
    /// Proposal attempts repeated after a retryable failure (election, unreachable leader).
    pub proposal_retries: u64,
    /// Resource versions proposed through Raft by `register_resource` (re-registering an
    /// unchanged resource is answered by the local replica and not counted).
    pub resource_proposals: u64,
    /// Strings (`intern`/`lookup`) and ids (`decode`) answered by the local cache.
    pub cache_hits: u64,
    /// Cache misses, whether then answered by the replica, by Raft, or not at all.
    pub cache_misses: u64,
    /// Cache misses answered by the local replica without Raft.
    pub replica_hits: u64,
    /// Local replica reads that failed (treated as misses).
    pub replica_errors: u64,
    /// Proposals (interns and resource versions) sent to another node because this one is
    /// not the leader.
    pub forwarded_requests: u64,
    /// Peer requests refused for a bad cluster token.
    pub rejected_peer_requests: u64,
    /// Peer connections refused by TLS: no certificate of the mesh's CA, or not TLS.
    pub tls_refused_connections: u64,
}
