//! flowmesh-chaos-tests (issue 7): break a mesh of real `flowmesh` processes on purpose and
//! check that nothing acknowledged is lost.
//!
//! - [`MeshSh`]: the hosts. `deploy/mesh.sh` (the script users run) puts each node in its
//!   own network namespace; the harness kills (`-9`), pauses (`SIGSTOP`/`SIGCONT`),
//!   stops and restarts them.
//! - [`Writer`]: the workload. Influx points at a fixed rate, round-robin over the nodes,
//!   each with a sequence number and a tag value never seen before (so every write interns
//!   a new string through the region's Raft leader); the writer logs which sequence
//!   numbers were acknowledged.
//! - [`check`]: the invariants. Every acknowledged point is found by a global, strict
//!   query after recovery; every node's dictionary replica is one-to-one and all replicas
//!   of a region agree; a query during a fault is either complete (every point acknowledged
//!   before the fault is in it) or partial naming exactly the nodes at fault; no log shows
//!   a panic.
//! - [`Report`]: one row of docs/RELIABILITY.md per scenario.
//!
//! The scenarios themselves are in `node/tests/chaos.rs`, which knows where the `flowmesh`
//! binary is.

pub mod check;
mod mesh;
mod report;
mod rng;
mod workload;

pub use mesh::{MeshSh, run_ok};
pub use report::Report;
pub use rng::Rng;
pub use workload::{Log, Writer};

/// The harness's one HTTP client: short timeouts, so a paused node costs seconds, not
/// minutes.
pub fn http() -> &'static reqwest::blocking::Client {
    static CLIENT: std::sync::OnceLock<reqwest::blocking::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .connect_timeout(std::time::Duration::from_secs(2))
            .build()
            .unwrap_or_else(|e| panic!("http client: {e}"))
    })
}
