//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong when starting the mesh or handling a node record.
///
/// Records from peers that fail to verify never reach the caller as errors: the swarm task
/// rejects them (they are not forwarded) and counts them in
/// [`MeshStats::records_rejected`](crate::MeshStats::records_rejected). The record variants
/// are public so the cause can be logged and tested.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// A [`MeshConfig`](crate::MeshConfig) field does not parse or is out of range.
    #[error("invalid mesh config field {field}: {reason}")]
    InvalidConfig {
        /// The config key, as written in the config file.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file exists but could not be read, or its directory could not be listed.
    #[error("failed to read mesh key file {}: {source}", path.display())]
    ReadKey {
        /// The key file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A new key could not be persisted.
    #[error("failed to write mesh key file {}: {source}", path.display())]
    WriteKey {
        /// The key file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The key file holds something other than a protobuf-encoded keypair. The file is left
    /// alone: replacing it would silently change the node's identity.
    #[error("mesh key file {} is not a protobuf-encoded ed25519 keypair: {reason}", path.display())]
    DecodeKey {
        /// The key file.
        path: PathBuf,
        /// The decoder's complaint.
        reason: String,
    },
    /// The libp2p transport or a behaviour could not be constructed.
    #[error("failed to set up libp2p {component}: {reason}")]
    Setup {
        /// Which part: "noise", "gossipsub", "mdns", ...
        component: &'static str,
        /// The library's complaint.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("failed to listen on {addr}: {reason}")]
    Listen {
        /// The multiaddr from the config.
        addr: String,
        /// The transport's complaint (address in use, not supported, ...).
        reason: String,
    },
    /// A record or envelope is larger than [`MAX_RECORD_BYTES`](crate::MAX_RECORD_BYTES).
    #[error("node record of {size} bytes exceeds the {limit}-byte limit")]
    RecordTooLarge {
        /// Size seen.
        size: usize,
        /// Size allowed.
        limit: usize,
    },
    /// The envelope, the public key or the record JSON does not decode.
    #[error("failed to decode node record {part}: {reason}")]
    RecordDecode {
        /// Which layer failed: "envelope", "public key", "record".
        part: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// Our own record could not be serialized or signed.
    #[error("failed to encode node record: {reason}")]
    RecordEncode {
        /// The encoder's or signer's complaint.
        reason: String,
    },
    /// The envelope's signature does not match its record bytes and public key.
    #[error("node record signature does not verify for signer {signer}")]
    BadSignature {
        /// Peer id derived from the envelope's public key.
        signer: String,
    },
    /// The record names a peer other than the one that signed it or published it.
    #[error("node record claims peer {claimed} but comes from {actual}")]
    PeerMismatch {
        /// `NodeRecord::peer_id`.
        claimed: String,
        /// The signer (from the public key) or the gossip message source.
        actual: String,
    },
}

impl FederationError {
    /// Whether trying the same operation again later may succeed. Config, key and record
    /// errors do not fix themselves; a busy listen port may be released.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Listen { .. } | Self::ReadKey { .. } | Self::WriteKey { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_name_the_object() {
        let err = FederationError::RecordTooLarge {
            size: 70_000,
            limit: 65_536,
        };
        assert_eq!(
            err.to_string(),
            "node record of 70000 bytes exceeds the 65536-byte limit"
        );
        assert!(!err.is_retryable());
        let err = FederationError::Listen {
            addr: "/ip4/127.0.0.1/tcp/1".into(),
            reason: "address in use".into(),
        };
        assert!(err.is_retryable());
    }
}
