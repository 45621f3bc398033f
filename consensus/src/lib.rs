//! flowmesh-consensus: the per-region Raft group (openraft on sled) that holds the
//! SmartEncoding tag dictionaries, and the dictionary client with its local cache.
//!
//! Not built yet: until the SmartEncoding issue lands, tag columns are stored as strings
//! (DESIGN.md §5 describes the target). The crate exists so the workspace layout and the
//! direction of dependencies are fixed from the start.
