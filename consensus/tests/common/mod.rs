//! A loopback cluster builder for the multi-node tests: real nodes on ephemeral ports, each
//! with its own sled directory, stopped and restarted in-process; waits are predicate polls
//! with timeouts.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flowmesh_consensus::{
    ConsensusConfig, DictionaryClient, DictionaryNode, NodeId, NodeRole, NodeStatus,
};

pub const TOKEN: &str = "test-cluster-token";

/// Multi-node tests share two cores with everything else: run them one at a time.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Free loopback ports: bound to port 0, read, released. Another process could take one
/// in between; unlikely enough for tests.
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// Polls `probe` every 20 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Cluster {
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    pub dirs: BTreeMap<NodeId, tempfile::TempDir>,
    pub nodes: BTreeMap<NodeId, DictionaryNode>,
    /// Applied to every node's config before it starts.
    pub tweak: fn(&mut ConsensusConfig),
}

fn default_tweak(_: &mut ConsensusConfig) {}

impl Cluster {
    pub fn new(ids: &[NodeId]) -> Self {
        let addrs = ids.iter().copied().zip(free_addrs(ids.len())).collect();
        let dirs = ids
            .iter()
            .map(|id| (*id, tempfile::tempdir().unwrap()))
            .collect();
        Self {
            addrs,
            dirs,
            nodes: BTreeMap::new(),
            tweak: default_tweak,
        }
    }

    /// Adds a node id to the known set (for joins); existing nodes keep their config.
    pub fn add(&mut self, id: NodeId) {
        self.addrs.insert(id, free_addrs(1)[0]);
        self.dirs.insert(id, tempfile::tempdir().unwrap());
    }

    pub fn config(&self, id: NodeId) -> ConsensusConfig {
        let mut config = ConsensusConfig {
            node_id: id,
            listen: self.addrs[&id],
            data_dir: self.dirs[&id].path().to_path_buf(),
            peers: self.addrs.clone(),
            cluster_token: TOKEN.to_string(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(800),
            election_timeout_max: Duration::from_millis(1600),
            request_timeout: Duration::from_secs(2),
            intern_timeout: Duration::from_secs(15),
            snapshot_after_entries: 30,
            snapshot_keep_entries: 5,
            ..ConsensusConfig::default()
        };
        (self.tweak)(&mut config);
        config
    }

    pub async fn start(&mut self, id: NodeId) {
        let node = DictionaryNode::start(self.config(id))
            .await
            .unwrap_or_else(|e| panic!("node {id} failed to start: {e}"));
        self.nodes.insert(id, node);
    }

    pub async fn start_all(&mut self) {
        let ids: Vec<NodeId> = self.addrs.keys().copied().collect();
        for id in ids {
            self.start(id).await;
        }
    }

    pub async fn stop(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).expect("node is running");
        node.shutdown()
            .await
            .unwrap_or_else(|e| panic!("node {id} failed to stop: {e}"));
    }

    pub async fn stop_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    pub fn node(&self, id: NodeId) -> &DictionaryNode {
        &self.nodes[&id]
    }

    pub fn client(&self, id: NodeId) -> DictionaryClient {
        self.nodes[&id].client()
    }

    pub fn statuses(&self) -> Vec<NodeStatus> {
        self.nodes.values().map(|n| n.status()).collect()
    }

    /// The leader every running node agrees on, if there is one.
    pub fn agreed_leader(&self) -> Option<NodeId> {
        let statuses = self.statuses();
        let leader = statuses
            .iter()
            .find(|s| s.role == NodeRole::Leader)?
            .node_id;
        statuses
            .iter()
            .all(|s| s.leader == Some(leader))
            .then_some(leader)
    }

    pub async fn wait_for_leader(&self, timeout: Duration) -> NodeId {
        eventually("an agreed leader", timeout, || self.agreed_leader()).await
    }

    /// Waits until every running node has applied everything the leader has.
    pub async fn wait_converged(&self, timeout: Duration) {
        eventually("all replicas to apply the leader's log", timeout, || {
            let leader = self.agreed_leader()?;
            let target = self.nodes[&leader].status().last_log_index?;
            self.statuses()
                .iter()
                .all(|s| s.last_applied_index == Some(target))
                .then_some(())
        })
        .await
    }
}

/// A small deterministic PRNG (xorshift64*), so tests need no extra dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs one multi-node test body after the others (see [`serial`]), with tracing, and
/// fails it after `limit`.
pub async fn run_cluster_test(limit: Duration, test: impl std::future::Future<Output = ()>) {
    let _serial = serial().await;
    init_tracing();
    tokio::time::timeout(limit, test)
        .await
        .expect("test finished within its time bound");
}

/// `read` of every running node, asserted to be the same everywhere; returns it.
pub fn same_on_every_node<T: PartialEq + std::fmt::Debug>(
    cluster: &Cluster,
    what: &str,
    read: impl Fn(&DictionaryNode) -> T,
) -> T {
    // Whole dictionaries are long: the start of each side is enough to go on.
    let head = |value: &T| {
        let mut text = format!("{value:?}");
        text.truncate(text.floor_char_boundary(2000));
        text
    };
    let mut reference: Option<(NodeId, T)> = None;
    for node in cluster.nodes.values() {
        let value = read(node);
        match &reference {
            None => reference = Some((node.node_id(), value)),
            Some((first, expected)) => assert!(
                *expected == value,
                "node {} and node {first} hold different {what}:\n{}\nvs\n{}",
                node.node_id(),
                head(&value),
                head(expected)
            ),
        }
    }
    reference.map(|(_, value)| value).expect("a running node")
}
