//! flowmesh-federation: libp2p membership and gossip (which node holds which tables and time
//! ranges) and the Arrow Flight transport for plan fragments between nodes.
//!
//! Not built yet: a node answers for its own shard only until the mesh issue lands
//! (DESIGN.md §6 describes the target).
