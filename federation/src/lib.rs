//! flowmesh-federation: mesh membership. Every node joins a libp2p swarm, publishes a signed
//! record about itself (region, cluster, query address, tables and their time ranges, load)
//! over gossip, and keeps a directory of every other node's latest record. The query planner
//! picks the nodes for a query fragment from that directory (DESIGN.md §6).
//!
//! Main types:
//! - [`MeshConfig`]: the `[mesh]` config section; [`MeshConfig::validate`] checks it once.
//! - [`Mesh`]: the running member. [`Mesh::start`] binds, dials seeds and spawns the one task
//!   that owns the swarm; [`Mesh::directory`] and [`Mesh::alive_nodes`] answer from memory;
//!   [`Mesh::shutdown`] returns once that task has ended.
//! - [`NodeRecord`] / [`TableRange`]: what a node publishes.
//! - [`PeerState`]: a directory entry; [`MeshStats`]: counters; [`FederationError`].
//!
//! Transport: TCP, then a libp2p private-network handshake when a `cluster_token` is set,
//! then noise (authenticated, encrypted) and yamux. Protocols: gossipsub on one topic
//! (signed messages, strict validation, flood publishing), Kademlia (server mode, fed from
//! identify and the seeds), identify, and optionally mDNS.
//!
//! Invariants:
//! - A record enters the directory only if its envelope signature verifies (over a
//!   domain-separated message), the signer's peer id equals `record.peer_id`, and that equals
//!   the gossip message's author. Anything else is rejected, counted and not forwarded; bad
//!   input never panics and payloads are bounded by [`MAX_RECORD_BYTES`].
//! - Per peer the directory holds the record with the highest `(started_at_ms, seq)`, so a
//!   restarted peer (same key, `seq` from 1) supersedes its earlier run.
//! - A peer is alive while its last record is younger than `dead_after`; after
//!   `FORGET_AFTER_DEAD_INTERVALS × dead_after` of silence it is forgotten.
//! - The node's identity is an ed25519 key persisted with mode 0600; a key file that does not
//!   decode is an error, never silently replaced.
//! - Exactly one tracked task per [`Mesh`]; nothing is detached.
//!
//! The Arrow Flight transport for query fragments is the node's (`node/src/mesh.rs`): this
//! crate only says who is where.

#![warn(missing_docs)]

mod config;
mod directory;
mod error;
mod keys;
mod mesh;
mod record;
mod stats;
mod swarm;

pub use config::{CheckedMeshConfig, FORGET_AFTER_DEAD_INTERVALS, MeshConfig};
pub use directory::{MAX_PEERS, PeerState};
pub use error::FederationError;
pub use mesh::Mesh;
pub use record::{MAX_RECORD_BYTES, NodeRecord, SIGNING_DOMAIN, TableRange};
pub use stats::MeshStats;
