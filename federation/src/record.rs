//! [`NodeRecord`], what every node publishes about itself, and the signed envelope it travels
//! in.
//!
//! Wire format: a protobuf `SignedRecord { record, public_key, signature }` where `record` is
//! the record as JSON, `public_key` the publisher's libp2p public key (protobuf encoding) and
//! `signature` its signature over [`SIGNING_DOMAIN`] followed by `record`. The prefix keeps a
//! record signature from being valid for any other message signed with the same key (gossipsub
//! and noise sign with it too).

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::error::FederationError;

/// Largest accepted record JSON; envelopes may add 1 KiB for the key and signature.
/// Larger payloads are rejected before any decoding.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Room for the public key, the signature and protobuf framing around the record.
pub(crate) const ENVELOPE_OVERHEAD_BYTES: usize = 1024;

/// Prefixed to the record bytes before signing (domain separation).
pub const SIGNING_DOMAIN: &[u8] = b"flowmesh/node-record/1\0";

/// The time range and size of one table held by a node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TableRange {
    /// Table name as the query planner knows it.
    pub table: String,
    /// Oldest row's timestamp, nanoseconds since the Unix epoch.
    pub min_time_ns: i64,
    /// Newest row's timestamp, nanoseconds since the Unix epoch.
    pub max_time_ns: i64,
    /// Row count (approximate is fine: it only ranks nodes).
    pub rows: u64,
}

/// What a node tells the mesh about itself. Unknown fields are ignored and missing ones take
/// their default, so nodes of neighbouring versions understand each other.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeRecord {
    /// libp2p peer id of the publisher; set by [`crate::Mesh::start`] and must match the
    /// signing key and the gossip source.
    pub peer_id: String,
    /// Human-readable node name.
    pub name: String,
    /// Region from the node's config.
    pub region: String,
    /// Cluster from the node's config.
    pub cluster: String,
    /// `host:port` where peers send query fragments.
    pub query_addr: String,
    /// `host:port` of the node's HTTP API.
    pub http_addr: String,
    /// Tables held, with time ranges.
    pub tables: Vec<TableRange>,
    /// Load indicator (e.g. 1-minute load average). Non-finite values are published as 0.
    pub load: f64,
    /// Software version.
    pub version: String,
    /// Process start, milliseconds since the Unix epoch. Together with `seq` it orders a
    /// peer's records across restarts; [`crate::Mesh::start`] fills it when it is 0.
    pub started_at_ms: i64,
    /// Publish counter, set by the mesh: 1 for the first record after a start.
    pub seq: u64,
}

impl NodeRecord {
    /// The order in which one peer's records supersede each other: a restart (newer
    /// `started_at_ms`) wins even though `seq` starts again at 1.
    pub fn version_key(&self) -> (i64, u64) {
        (self.started_at_ms, self.seq)
    }
}

/// The envelope on the wire. Hand-written prost message: no build script needed.
#[derive(Clone, PartialEq, prost::Message)]
struct SignedRecord {
    #[prost(bytes = "vec", tag = "1")]
    record: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    signature: Vec<u8>,
}

fn signed_message(record: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_DOMAIN.len() + record.len());
    message.extend_from_slice(SIGNING_DOMAIN);
    message.extend_from_slice(record);
    message
}

/// Serializes and signs `record` with `keypair`. The caller has set `record.peer_id` to the
/// keypair's peer id; a record over [`MAX_RECORD_BYTES`] is refused here rather than by every
/// receiver.
pub(crate) fn seal(record: &NodeRecord, keypair: &Keypair) -> Result<Vec<u8>, FederationError> {
    let record_bytes = serde_json::to_vec(record).map_err(|err| FederationError::RecordEncode {
        reason: err.to_string(),
    })?;
    if record_bytes.len() > MAX_RECORD_BYTES {
        return Err(FederationError::RecordTooLarge {
            size: record_bytes.len(),
            limit: MAX_RECORD_BYTES,
        });
    }
    let signature = keypair
        .sign(&signed_message(&record_bytes))
        .map_err(|err| FederationError::RecordEncode {
            reason: err.to_string(),
        })?;
    let envelope = SignedRecord {
        record: record_bytes,
        public_key: keypair.public().encode_protobuf(),
        signature,
    };
    Ok(envelope.encode_to_vec())
}

/// Decodes and verifies an envelope: size bound, signature over the record bytes, and
/// `record.peer_id` equal to the signer's peer id. Never panics on arbitrary input.
pub(crate) fn open(bytes: &[u8]) -> Result<NodeRecord, FederationError> {
    let limit = MAX_RECORD_BYTES + ENVELOPE_OVERHEAD_BYTES;
    if bytes.len() > limit {
        return Err(FederationError::RecordTooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let envelope = SignedRecord::decode(bytes).map_err(|err| FederationError::RecordDecode {
        part: "envelope",
        reason: err.to_string(),
    })?;
    if envelope.record.len() > MAX_RECORD_BYTES {
        return Err(FederationError::RecordTooLarge {
            size: envelope.record.len(),
            limit: MAX_RECORD_BYTES,
        });
    }
    let public_key = PublicKey::try_decode_protobuf(&envelope.public_key).map_err(|err| {
        FederationError::RecordDecode {
            part: "public key",
            reason: err.to_string(),
        }
    })?;
    let signer = PeerId::from_public_key(&public_key);
    if !public_key.verify(&signed_message(&envelope.record), &envelope.signature) {
        return Err(FederationError::BadSignature {
            signer: signer.to_string(),
        });
    }
    let record: NodeRecord =
        serde_json::from_slice(&envelope.record).map_err(|err| FederationError::RecordDecode {
            part: "record",
            reason: err.to_string(),
        })?;
    if record.peer_id != signer.to_string() {
        return Err(FederationError::PeerMismatch {
            claimed: record.peer_id,
            actual: signer.to_string(),
        });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_for(keypair: &Keypair) -> NodeRecord {
        NodeRecord {
            peer_id: keypair.public().to_peer_id().to_string(),
            name: "node-a".into(),
            region: "eu".into(),
            cluster: "c1".into(),
            query_addr: "127.0.0.1:20418".into(),
            http_addr: "127.0.0.1:20416".into(),
            tables: vec![TableRange {
                table: "red_metrics".into(),
                min_time_ns: 1,
                max_time_ns: 2,
                rows: 3,
            }],
            load: 0.5,
            version: "0.1.0".into(),
            started_at_ms: 1_700_000_000_000,
            seq: 7,
        }
    }

    /// Builds an envelope by hand so tests can sign whatever they like.
    fn envelope(record_bytes: Vec<u8>, keypair: &Keypair) -> Vec<u8> {
        let signature = keypair.sign(&signed_message(&record_bytes)).unwrap();
        SignedRecord {
            record: record_bytes,
            public_key: keypair.public().encode_protobuf(),
            signature,
        }
        .encode_to_vec()
    }

    #[test]
    fn round_trips() {
        let keypair = Keypair::generate_ed25519();
        let record = record_for(&keypair);
        let bytes = seal(&record, &keypair).unwrap();
        assert_eq!(open(&bytes).unwrap(), record);
    }

    #[test]
    fn rejects_a_tampered_record() {
        let keypair = Keypair::generate_ed25519();
        let bytes = seal(&record_for(&keypair), &keypair).unwrap();
        let mut envelope = SignedRecord::decode(bytes.as_slice()).unwrap();
        let text = String::from_utf8(envelope.record.clone()).unwrap();
        envelope.record = text.replace("\"eu\"", "\"us\"").into_bytes();
        let err = open(&envelope.encode_to_vec()).unwrap_err();
        assert!(matches!(err, FederationError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn rejects_a_signature_without_the_domain_prefix() {
        let keypair = Keypair::generate_ed25519();
        let record_bytes = serde_json::to_vec(&record_for(&keypair)).unwrap();
        let forged = SignedRecord {
            signature: keypair.sign(&record_bytes).unwrap(),
            record: record_bytes,
            public_key: keypair.public().encode_protobuf(),
        };
        let err = open(&forged.encode_to_vec()).unwrap_err();
        assert!(matches!(err, FederationError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn rejects_a_record_naming_another_peer() {
        let signer = Keypair::generate_ed25519();
        let victim = Keypair::generate_ed25519();
        // Correctly signed by `signer`, but claims to be `victim`.
        let bytes = envelope(serde_json::to_vec(&record_for(&victim)).unwrap(), &signer);
        let err = open(&bytes).unwrap_err();
        match err {
            FederationError::PeerMismatch { claimed, actual } => {
                assert_eq!(claimed, victim.public().to_peer_id().to_string());
                assert_eq!(actual, signer.public().to_peer_id().to_string());
            }
            other => panic!("expected PeerMismatch, got {other}"),
        }
        // And seal refuses nothing here, so the check must be on the receiving side.
        assert!(seal(&record_for(&victim), &signer).is_ok());
        assert!(open(&seal(&record_for(&victim), &signer).unwrap()).is_err());
    }

    #[test]
    fn rejects_oversize_payloads() {
        let keypair = Keypair::generate_ed25519();
        let mut record = record_for(&keypair);
        record.name = "x".repeat(MAX_RECORD_BYTES);
        let err = seal(&record, &keypair).unwrap_err();
        assert!(
            matches!(err, FederationError::RecordTooLarge { .. }),
            "{err}"
        );

        // A peer that skips the sender-side check: the envelope itself is too large.
        let bytes = envelope(serde_json::to_vec(&record).unwrap(), &keypair);
        let err = open(&bytes).unwrap_err();
        assert!(
            matches!(err, FederationError::RecordTooLarge { .. }),
            "{err}"
        );

        // A record just over the limit inside an envelope just under the envelope limit.
        let filler =
            MAX_RECORD_BYTES + 1 - serde_json::to_vec(&record_for(&keypair)).unwrap().len();
        let mut record = record_for(&keypair);
        record.name = "y".repeat(filler + record.name.len());
        let record_bytes = serde_json::to_vec(&record).unwrap();
        assert_eq!(record_bytes.len(), MAX_RECORD_BYTES + 1);
        let err = open(&envelope(record_bytes, &keypair)).unwrap_err();
        assert!(
            matches!(err, FederationError::RecordTooLarge { size, .. } if size == MAX_RECORD_BYTES + 1),
            "{err}"
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        let keypair = Keypair::generate_ed25519();
        let valid = seal(&record_for(&keypair), &keypair).unwrap();
        let mut inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"not a protobuf at all \xff\xfe".to_vec(),
            vec![0xff; 100],
            valid[..valid.len() / 2].to_vec(),
            envelope(b"{not json".to_vec(), &keypair),
            envelope(b"[1,2,3]".to_vec(), &keypair),
            SignedRecord {
                record: b"{}".to_vec(),
                public_key: vec![1, 2, 3],
                signature: vec![4, 5, 6],
            }
            .encode_to_vec(),
        ];
        // Single-byte corruptions all over a valid envelope: the framing bytes at the start
        // and every 11th byte after (record, key and signature). Not every byte: signature
        // checks are slow in unoptimized test builds.
        for index in (0..8).chain((8..valid.len()).step_by(11)) {
            let mut corrupted = valid.clone();
            corrupted[index] ^= 0x55;
            inputs.push(corrupted);
        }
        for input in inputs {
            assert!(open(&input).is_err(), "accepted {input:?}");
        }
    }

    #[test]
    fn missing_fields_default_and_unknown_fields_are_ignored() {
        let keypair = Keypair::generate_ed25519();
        let peer_id = keypair.public().to_peer_id().to_string();
        let json = format!(r#"{{"peer_id": "{peer_id}", "seq": 3, "future_field": [1]}}"#);
        let record = open(&envelope(json.into_bytes(), &keypair)).unwrap();
        assert_eq!(record.seq, 3);
        assert_eq!(record.region, "");
    }

    #[test]
    fn version_key_orders_restarts_after_earlier_runs() {
        let earlier = NodeRecord {
            started_at_ms: 1_000,
            seq: 900,
            ..NodeRecord::default()
        };
        let restarted = NodeRecord {
            started_at_ms: 2_000,
            seq: 1,
            ..NodeRecord::default()
        };
        assert!(restarted.version_key() > earlier.version_key());
    }
}
