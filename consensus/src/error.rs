//! Consensus errors and what a caller should make of them.

use std::path::PathBuf;
use std::time::Duration;

use crate::types::{NodeId, TagKind};

/// Everything that can go wrong in the dictionary group or its client.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("invalid consensus config: {reason}")]
    Config { reason: String },
    #[error("invalid dictionary request for kind {kind}: {reason}")]
    InvalidInput { kind: TagKind, reason: String },
    #[error("dictionary for kind {kind} rejected the request: {reason}")]
    Rejected { kind: TagKind, reason: String },
    #[error("peer {peer} rejected our cluster token")]
    Unauthorized { peer: String },
    #[error("peer {peer} is unreachable: {reason}")]
    Unreachable { peer: String, reason: String },
    #[error("peer {peer} sent an unexpected reply: {reason}")]
    Protocol { peer: String, reason: String },
    #[error("no dictionary leader known to node {node_id} after {waited:?}")]
    NoLeader { node_id: NodeId, waited: Duration },
    #[error("{action} did not finish within {timeout:?}")]
    Timeout {
        action: &'static str,
        timeout: Duration,
    },
    #[error("raft {action} failed on node {node_id}: {reason}")]
    Raft {
        node_id: NodeId,
        action: &'static str,
        reason: String,
        retryable: bool,
    },
    #[error("dictionary store operation {action} failed: {source}")]
    Store {
        action: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("dictionary store entry {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("membership change for node {node_id} refused: {reason}")]
    Membership { node_id: NodeId, reason: String },
    #[error("dictionary node {node_id} is shutting down")]
    ShuttingDown { node_id: NodeId },
}

impl ConsensusError {
    /// Whether the same request may succeed if retried later (on this node or another).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::NoLeader { .. } | Self::Timeout { .. } => true,
            Self::Raft { retryable, .. } => *retryable,
            Self::Config { .. }
            | Self::InvalidInput { .. }
            | Self::Rejected { .. }
            | Self::Unauthorized { .. }
            | Self::Protocol { .. }
            | Self::Store { .. }
            | Self::Corrupt { .. }
            | Self::Io { .. }
            | Self::Membership { .. }
            | Self::ShuttingDown { .. } => false,
        }
    }

    /// Whether the caller's input caused the error (maps to HTTP 4xx).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidInput { .. } | Self::Rejected { .. } | Self::Unauthorized { .. }
        )
    }

    /// The client-visible HTTP status code for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidInput { .. } | Self::Config { .. } | Self::Membership { .. } => 400,
            Self::Unauthorized { .. } => 401,
            Self::Rejected { .. } => 409,
            Self::Timeout { .. } => 504,
            _ if self.is_retryable() => 503,
            Self::ShuttingDown { .. } => 503,
            _ => 500,
        }
    }

    /// A copy for every caller that shared a failed proposal. Variants whose sources
    /// cannot be cloned keep their message and retryability.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::Config { reason } => Self::Config {
                reason: reason.clone(),
            },
            Self::InvalidInput { kind, reason } => Self::InvalidInput {
                kind: *kind,
                reason: reason.clone(),
            },
            Self::Rejected { kind, reason } => Self::Rejected {
                kind: *kind,
                reason: reason.clone(),
            },
            Self::Unauthorized { peer } => Self::Unauthorized { peer: peer.clone() },
            Self::Unreachable { peer, reason } => Self::Unreachable {
                peer: peer.clone(),
                reason: reason.clone(),
            },
            Self::Protocol { peer, reason } => Self::Protocol {
                peer: peer.clone(),
                reason: reason.clone(),
            },
            Self::NoLeader { node_id, waited } => Self::NoLeader {
                node_id: *node_id,
                waited: *waited,
            },
            Self::Timeout { action, timeout } => Self::Timeout {
                action,
                timeout: *timeout,
            },
            Self::Raft {
                node_id,
                action,
                reason,
                retryable,
            } => Self::Raft {
                node_id: *node_id,
                action,
                reason: reason.clone(),
                retryable: *retryable,
            },
            Self::Corrupt { key, reason } => Self::Corrupt {
                key: key.clone(),
                reason: reason.clone(),
            },
            Self::Membership { node_id, reason } => Self::Membership {
                node_id: *node_id,
                reason: reason.clone(),
            },
            Self::ShuttingDown { node_id } => Self::ShuttingDown { node_id: *node_id },
            Self::Store { .. } | Self::Io { .. } => Self::Corrupt {
                key: "local store".into(),
                reason: self.to_string(),
            },
        }
    }

    pub(crate) fn store(action: &'static str, source: sled::Error) -> Self {
        Self::Store { action, source }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Self::Config {
            reason: reason.into(),
        }
    }
}

/// Result with [`ConsensusError`].
pub type Result<T, E = ConsensusError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_and_status() {
        let e = ConsensusError::NoLeader {
            node_id: 3,
            waited: Duration::from_secs(1),
        };
        assert!(e.is_retryable());
        assert_eq!(e.http_status(), 503);
        let e = ConsensusError::InvalidInput {
            kind: TagKind::POD,
            reason: "no strings".into(),
        };
        assert!(!e.is_retryable());
        assert!(e.is_client_error());
        assert_eq!(e.http_status(), 400);
        assert_eq!(
            e.to_string(),
            "invalid dictionary request for kind pod: no strings"
        );
        let e = ConsensusError::Unauthorized {
            peer: "127.0.0.1:1".into(),
        };
        assert_eq!(e.http_status(), 401);
        assert!(!e.is_retryable());
    }
}
