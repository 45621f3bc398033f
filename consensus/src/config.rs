//! Configuration of one dictionary replica.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConsensusError;
use crate::types::NodeId;

/// Default peer port (DESIGN.md §8: Raft and Flight between nodes).
pub const DEFAULT_PEER_PORT: u16 = 20418;

/// How a node takes part in its region's dictionary group. Every field has a default.
///
/// All nodes of a region must agree on `peers` (at least on the lowest ids): the lowest id
/// among `peers` ∪ `node_id` initializes the group, and the (up to) `max_voters` lowest
/// ids are the voters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusConfig {
    /// This node's Raft id; unique in the region, stable across restarts.
    pub node_id: NodeId,
    /// Where the peer server (Raft RPCs, forwarded interns, join/leave) listens.
    pub listen: SocketAddr,
    /// The address other nodes use to reach `listen`; defaults to `listen`. Required when
    /// `listen` is a wildcard address and the region has other nodes.
    pub advertise: Option<SocketAddr>,
    /// Directory of the sled database (log, vote, dictionary) and the current snapshot.
    pub data_dir: PathBuf,
    /// The region's known nodes, by id (may include this node).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Shared secret sent in the `x-flowmesh-cluster-token` header of every peer request
    /// and checked on every received one. Required when `peers` names other nodes. An empty
    /// token rejects every peer request.
    pub cluster_token: String,
    /// The largest number of voters; every other node is a learner (read replica).
    pub max_voters: usize,
    /// Leader heartbeat interval.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A follower starts an election after a random silence between `election_timeout_min`
    /// and `election_timeout_max`.
    #[serde(with = "humantime_serde")]
    pub election_timeout_min: Duration,
    /// See `election_timeout_min`.
    #[serde(with = "humantime_serde")]
    pub election_timeout_max: Duration,
    /// Timeout of one peer HTTP request (Raft RPC, forwarded intern, join, leave).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest `intern` keeps retrying (leader elections, unreachable leader) before it
    /// gives up with a retryable error.
    #[serde(with = "humantime_serde")]
    pub intern_timeout: Duration,
    /// Most strings one `intern` call may carry; more is refused as bad input.
    pub max_intern_strings: usize,
    /// Longest string, in bytes, that may be interned.
    pub max_string_bytes: usize,
    /// Most strings in one Raft proposal; concurrent callers' misses are batched up to this.
    pub max_proposal_strings: usize,
    /// Entries in the local encode cache and, separately, the decode cache.
    pub cache_capacity: usize,
    /// A snapshot is built after this many log entries since the last one.
    pub snapshot_after_entries: u64,
    /// Log entries kept behind a snapshot, for followers that lag a little.
    pub snapshot_keep_entries: u64,
    /// Mutual TLS on the peer port (server and clients); plain HTTP when absent.
    pub tls: Option<crate::tls::PeerTlsFiles>,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PEER_PORT)),
            advertise: None,
            data_dir: PathBuf::from("/var/lib/flowmesh/consensus"),
            peers: BTreeMap::new(),
            cluster_token: String::new(),
            max_voters: 5,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(600),
            election_timeout_max: Duration::from_millis(1200),
            request_timeout: Duration::from_secs(3),
            intern_timeout: Duration::from_secs(10),
            max_intern_strings: 10_000,
            max_string_bytes: 4096,
            max_proposal_strings: 4096,
            cache_capacity: 262_144,
            snapshot_after_entries: 5000,
            snapshot_keep_entries: 1000,
            tls: None,
        }
    }
}

impl ConsensusConfig {
    /// Checks the values that parsing cannot.
    pub fn validate(&self) -> Result<(), ConsensusError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConsensusError::config("data_dir must not be empty"));
        }
        let has_other_peers = self.peers.keys().any(|id| *id != self.node_id);
        if has_other_peers && self.cluster_token.is_empty() {
            return Err(ConsensusError::config(
                "cluster_token must be set when peers names other nodes",
            ));
        }
        if has_other_peers && self.advertise.is_none() && self.listen.ip().is_unspecified() {
            return Err(ConsensusError::config(format!(
                "listen address {} is a wildcard: set advertise to the address peers should use",
                self.listen
            )));
        }
        if let Some(own) = self.peers.get(&self.node_id)
            && *own != self.advertise_addr()
        {
            return Err(ConsensusError::config(format!(
                "peers lists node {} at {own}, but this node advertises {}",
                self.node_id,
                self.advertise_addr()
            )));
        }
        if self.max_voters == 0 || self.max_voters > 9 {
            return Err(ConsensusError::config(format!(
                "max_voters must be between 1 and 9, got {}",
                self.max_voters
            )));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(ConsensusError::config(
                "heartbeat_interval must be positive",
            ));
        }
        if self.election_timeout_min <= self.heartbeat_interval {
            return Err(ConsensusError::config(format!(
                "election_timeout_min ({:?}) must exceed heartbeat_interval ({:?})",
                self.election_timeout_min, self.heartbeat_interval
            )));
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return Err(ConsensusError::config(format!(
                "election_timeout_max ({:?}) must exceed election_timeout_min ({:?})",
                self.election_timeout_max, self.election_timeout_min
            )));
        }
        if self.request_timeout.is_zero() || self.intern_timeout.is_zero() {
            return Err(ConsensusError::config(
                "request_timeout and intern_timeout must be positive",
            ));
        }
        if self.max_intern_strings == 0 || self.max_proposal_strings == 0 {
            return Err(ConsensusError::config(
                "max_intern_strings and max_proposal_strings must be positive",
            ));
        }
        if self.max_string_bytes == 0 {
            return Err(ConsensusError::config("max_string_bytes must be positive"));
        }
        if self.cache_capacity < 16 {
            return Err(ConsensusError::config(format!(
                "cache_capacity must be at least 16, got {}",
                self.cache_capacity
            )));
        }
        if self.snapshot_after_entries == 0 {
            return Err(ConsensusError::config(
                "snapshot_after_entries must be positive",
            ));
        }
        Ok(())
    }

    /// The address peers use to reach this node.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }

    /// Every known node of the region, this one included, by id.
    pub fn region_nodes(&self) -> BTreeMap<NodeId, SocketAddr> {
        let mut nodes = self.peers.clone();
        nodes.insert(self.node_id, self.advertise_addr());
        nodes
    }

    pub(crate) fn raft_config(&self) -> Result<openraft::Config, ConsensusError> {
        let config = openraft::Config {
            cluster_name: "flowmesh-dictionary".to_string(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            install_snapshot_timeout: millis(self.request_timeout),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_after_entries),
            max_in_snapshot_log_to_keep: self.snapshot_keep_entries,
            // JSON doubles the size of snapshot bytes; keep chunks well under typical body limits.
            snapshot_max_chunk_size: 512 * 1024,
            max_payload_entries: 256,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ConsensusError::config(format!("raft config: {e}")))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The voters the membership rule picks: the `max_voters` lowest ids.
pub(crate) fn choose_voters(
    ids: impl IntoIterator<Item = NodeId>,
    max_voters: usize,
) -> std::collections::BTreeSet<NodeId> {
    let all: std::collections::BTreeSet<NodeId> = ids.into_iter().collect();
    all.into_iter().take(max_voters).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_single_node() {
        ConsensusConfig::default().validate().unwrap();
        ConsensusConfig::default().raft_config().unwrap();
    }

    #[test]
    fn peers_need_a_token() {
        let mut config = ConsensusConfig::default();
        config.peers.insert(2, "127.0.0.1:1".parse().unwrap());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("cluster_token"), "{err}");
        config.cluster_token = "secret".into();
        config.validate().unwrap();
    }

    #[test]
    fn bad_timeouts_are_rejected() {
        let config = ConsensusConfig {
            election_timeout_min: Duration::from_millis(50),
            ..Default::default()
        };
        assert!(config.validate().is_err());
        let config = ConsensusConfig {
            election_timeout_max: Duration::from_millis(600),
            ..Default::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn unknown_keys_are_rejected_and_durations_parse() {
        let config: ConsensusConfig = serde_json::from_str(
            r#"{"node_id": 4, "heartbeat_interval": "50ms", "peers": {"1": "10.0.0.1:20418"}}"#,
        )
        .unwrap();
        assert_eq!(config.node_id, 4);
        assert_eq!(config.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(config.peers.len(), 1);
        let err = serde_json::from_str::<ConsensusConfig>(r#"{"nodeid": 4}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn voters_are_the_lowest_ids() {
        let voters = choose_voters([9, 3, 7, 1, 12, 5, 4], 5);
        assert_eq!(voters.into_iter().collect::<Vec<_>>(), vec![1, 3, 4, 5, 7]);
        assert_eq!(choose_voters([2], 5).len(), 1);
    }
}
