//! flowmesh-consensus: SmartEncoding's tag dictionaries (DESIGN.md §5), replicated per
//! region by one Raft group (openraft on sled), and the dictionary client with its cache.
//!
//! Main types:
//! - [`DictionaryNode`]: one replica — Raft node, sled store, HTTP peer server on the peer
//!   port (20418), membership tasks — with `start` / `leave` / `shutdown`.
//! - [`DictionaryClient`]: `intern` (cache → local replica → one batched proposal through
//!   the leader, forwarded from any node), `lookup` and `decode` (cache → local replica,
//!   never the network); the resource tables: `register_resource` (local replica → one
//!   proposal through the leader only if the version in force differs), `resource_at` and
//!   `resource_versions` (local replica).
//! - [`ResourceVersion`]: a resource's attributes ("meta tags": a pod's service, a process's
//!   command line) from a point in time on, stored once per resource instead of per row.
//! - [`ConsensusConfig`], [`ConsensusError`], [`TagKind`], [`DictionaryId`].
//! - [`store`]: the openraft storage (log store and state machine) on sled, public so that
//!   openraft's storage test suite can run against it.
//!
//! Invariants:
//! - An id never changes meaning and a string never gets two ids: ids are assigned only by
//!   applying committed `Intern` entries, deterministically in log order, densely per kind
//!   from 1; an assigned id is never reassigned or removed. Id 0 is the empty string.
//! - Every replica applies the same log to the same dictionary; the state machine checks
//!   nothing that depends on local configuration.
//! - A resource version only names ids the dictionary holds, carries at most
//!   [`MAX_RESOURCE_ATTRS`] attributes, and a resource never has two consecutive versions
//!   with the same attributes.
//! - Caches only hold mappings read from the applied dictionary, so they are never stale.
//! - Voters are the (up to) `max_voters` lowest node ids; every other node is a learner.
//! - Every peer request carries the cluster token and is refused without it. With `tls`
//!   configured ([`tls`]), the peer port speaks only mutual TLS: both ends present a
//!   certificate of the mesh's CA, and the token travels inside the tunnel.

mod cache;
mod client;
mod config;
mod error;
mod network;
mod node;
mod server;
mod stats;
pub mod store;
pub mod tls;
mod types;

pub use client::DictionaryClient;
pub use config::{ConsensusConfig, DEFAULT_PEER_PORT};
pub use error::{ConsensusError, Result};
pub use network::{PeerStatus, TOKEN_HEADER};
pub use node::{DictionaryNode, NodeRole, NodeStatus};
pub use stats::DictionaryStats;
pub use types::{
    DictionaryCommand, DictionaryId, DictionaryRaft, DictionaryResponse, EMPTY_ID,
    MAX_RESOURCE_ATTRS, NodeId, ResourceVersion, TagKind, TypeConfig,
};
