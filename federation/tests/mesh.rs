//! Multi-node mesh tests on 127.0.0.1 with ephemeral ports. Short heartbeats (250 ms publish,
//! 1.5 s dead_after) keep them fast; every wait is on a predicate with a timeout.
//!
//! The tests run one at a time (see [`SERIAL`]): in unoptimized builds every ed25519 signature
//! and check costs milliseconds, and several meshes at once on a 2-core machine starve each
//! other's heartbeats until peers look dead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flowmesh_federation::{Mesh, MeshConfig, NodeRecord, PeerState, TableRange};
use tempfile::TempDir;

/// Generous: CI machines are small and shared.
const WAIT: Duration = Duration::from_secs(20);
const PUBLISH: Duration = Duration::from_millis(250);
const DEAD: Duration = Duration::from_millis(1500);

/// Held by every test for its whole run.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(seeds: Vec<String>, cluster_token: &str) -> MeshConfig {
    MeshConfig {
        enabled: true,
        listen: "/ip4/127.0.0.1/tcp/0".to_owned(),
        seeds,
        cluster_token: cluster_token.to_owned(),
        publish_interval: PUBLISH,
        dead_after: DEAD,
        ..MeshConfig::default()
    }
}

fn record(name: &str) -> NodeRecord {
    NodeRecord {
        name: name.to_owned(),
        region: format!("region-{name}"),
        cluster: format!("cluster-{name}"),
        query_addr: format!("127.0.0.1:1{name}"),
        http_addr: format!("127.0.0.1:2{name}"),
        version: "test".to_owned(),
        ..NodeRecord::default()
    }
}

/// Key files of all nodes of one test.
struct Keys(TempDir);

impl Keys {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name).join("node.key")
    }
}

async fn start(keys: &Keys, name: &str, seeds: Vec<String>, token: &str) -> Mesh {
    start_with(&config(seeds, token), &keys.path(name), name).await
}

async fn start_with(config: &MeshConfig, key_path: &Path, name: &str) -> Mesh {
    // `RUST_LOG=flowmesh_federation=debug cargo test -p flowmesh-federation` to see the mesh.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Mesh::start(config, key_path, record(name)).await.unwrap()
}

fn seed_of(mesh: &Mesh) -> Vec<String> {
    let addrs = mesh.listen_addrs();
    assert!(!addrs.is_empty());
    assert!(
        addrs[0].ends_with(&format!("/p2p/{}", mesh.peer_id())),
        "{addrs:?}"
    );
    vec![addrs[0].clone()]
}

fn state<'a>(directory: &'a [PeerState], peer_id: &str) -> Option<&'a PeerState> {
    directory
        .iter()
        .find(|state| state.record.peer_id == peer_id)
}

/// Polls something that has no change notification (stats) until it holds.
async fn eventually(mut condition: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_learn_each_other_from_one_seed_and_outlive_it() {
    let _serial = SERIAL.lock().await;
    let keys = Keys::new();
    let a = start(&keys, "a", vec![], "").await;
    let b = start(&keys, "b", seed_of(&a), "").await;
    let c = start(&keys, "c", seed_of(&a), "").await;
    let nodes = [("a", &a), ("b", &b), ("c", &c)];

    for (name, mesh) in nodes {
        // Each node sees all three alive, with what each published; c was seeded with a only.
        let all_known = mesh
            .wait_for(
                |directory| {
                    nodes.iter().all(|(other_name, other)| {
                        state(directory, &other.peer_id()).is_some_and(|peer| {
                            peer.alive
                                && peer.record.name == *other_name
                                && peer.record.region == format!("region-{other_name}")
                                && peer.record.cluster == format!("cluster-{other_name}")
                                && peer.record.query_addr == format!("127.0.0.1:1{other_name}")
                                && peer.record.started_at_ms > 0
                        })
                    })
                },
                WAIT,
            )
            .await;
        assert!(all_known, "{name} sees {:?}", mesh.directory());
        let alive = mesh.alive_nodes();
        assert!(alive.iter().any(|record| record.peer_id == mesh.peer_id()));
        assert!(
            alive
                .windows(2)
                .all(|pair| pair[0].peer_id < pair[1].peer_id),
            "{alive:?}"
        );
    }

    let tables = vec![TableRange {
        table: "red_metrics".to_owned(),
        min_time_ns: 1_000,
        max_time_ns: 2_000,
        rows: 42,
    }];
    b.update_record(|record| {
        record.tables = tables.clone();
        record.load = 1.5;
        // Owned by the mesh: restored after the closure.
        record.seq = 0;
        record.peer_id = "forged".to_owned();
    });
    assert_eq!(
        b.alive_nodes()
            .iter()
            .find(|record| record.peer_id == b.peer_id())
            .unwrap()
            .tables,
        tables
    );
    let b_id = b.peer_id();
    for (name, mesh) in [("a", &a), ("c", &c)] {
        let seen = mesh
            .wait_for(
                |directory| {
                    state(directory, &b_id)
                        .is_some_and(|b| b.record.tables == tables && b.record.load == 1.5)
                },
                WAIT,
            )
            .await;
        assert!(
            seen,
            "{name} did not see b's update: {:?}",
            mesh.directory()
        );
    }

    for (name, mesh) in nodes {
        let stats = mesh.stats();
        assert_eq!(stats.records_rejected, 0, "{name}: {stats:?}");
        assert!(stats.records_published > 0, "{name}: {stats:?}");
        assert!(stats.records_accepted >= 2, "{name}: {stats:?}");
        assert_eq!(stats.peers_known, 2, "{name}: {stats:?}");
    }
    // c heard of b only through a; it looks b up in the DHT and connects directly, so losing
    // a, the only seed, does not split b from c.
    assert!(
        c.wait_for(
            |directory| state(directory, &b_id).is_some_and(|b| b.connected),
            WAIT
        )
        .await,
        "{:?}",
        c.directory()
    );
    let a_id = a.peer_id();
    a.shutdown().await;
    for (name, mesh, other) in [("b", &b, &c), ("c", &c, &b)] {
        let other_id = other.peer_id();
        let still_meshed = mesh
            .wait_for(
                |directory| {
                    state(directory, &a_id).is_some_and(|a| !a.alive)
                        && state(directory, &other_id).is_some_and(|other| other.alive)
                },
                WAIT,
            )
            .await;
        assert!(still_meshed, "{name} sees {:?}", mesh.directory());
    }
    for mesh in [b, c] {
        mesh.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_published_at_once_and_a_no_op_is_not() {
    let _serial = SERIAL.lock().await;
    let keys = Keys::new();
    // Heartbeats far apart: within the test only joins and changes publish.
    let slow = |seeds| MeshConfig {
        publish_interval: Duration::from_secs(120),
        dead_after: Duration::from_secs(360),
        ..config(seeds, "")
    };
    let a = start_with(&slow(vec![]), &keys.path("a"), "a").await;
    let b = start_with(&slow(seed_of(&a)), &keys.path("b"), "b").await;
    for mesh in [&a, &b] {
        assert!(mesh.wait_for_alive(2, WAIT).await, "{:?}", mesh.directory());
    }
    let b_id = b.peer_id();
    let seq_at = |mesh: &Mesh| state(&mesh.directory(), &b_id).unwrap().record.seq;
    // Let b's join-time publishes settle: a holds b's latest seq.
    assert!(eventually(|| seq_at(&a) == seq_at(&b), WAIT).await);
    let seq_before = seq_at(&b);

    b.update_record(|record| record.name = "b".to_owned());
    b.update_record(|record| record.http_addr = "127.0.0.1:9999".to_owned());
    let seen = a
        .wait_for(
            |directory| {
                state(directory, &b_id).is_some_and(|b| b.record.http_addr == "127.0.0.1:9999")
            },
            WAIT,
        )
        .await;
    assert!(seen, "{:?}", a.directory());
    // One publish for the change, none for the no-op.
    assert_eq!(seq_at(&a), seq_before + 1);
    assert_eq!(seq_at(&b), seq_before + 1);
    for mesh in [a, b] {
        mesh.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_turns_dead_and_a_restart_revives_it() {
    let _serial = SERIAL.lock().await;
    let keys = Keys::new();
    let a = start(&keys, "a", vec![], "").await;
    let b = start(&keys, "b", seed_of(&a), "").await;
    let c = start(&keys, "c", seed_of(&a), "").await;
    for mesh in [&a, &b, &c] {
        assert!(mesh.wait_for_alive(3, WAIT).await, "{:?}", mesh.directory());
    }
    let c_id = c.peer_id();
    let c_started = c
        .alive_nodes()
        .into_iter()
        .find(|record| record.peer_id == c_id)
        .unwrap()
        .started_at_ms;

    c.shutdown().await;
    for (name, mesh) in [("a", &a), ("b", &b)] {
        // Stays listed, as not alive, while the others stay alive.
        let dead = mesh
            .wait_for(
                |directory| {
                    directory.len() == 3
                        && directory.iter().filter(|peer| peer.alive).count() == 2
                        && state(directory, &c_id).is_some_and(|c| {
                            !c.alive && c.last_seen_ms_ago >= DEAD.as_millis() as u64
                        })
                },
                WAIT,
            )
            .await;
        assert!(dead, "{name} sees {:?}", mesh.directory());
        assert!(
            mesh.alive_nodes()
                .iter()
                .all(|record| record.peer_id != c_id)
        );
        // Counted by the next sweep, which may lag the time-based snapshot a little.
        assert!(eventually(|| mesh.stats().peers_died >= 1, WAIT).await);
    }
    // The dead node's connections are gone too.
    assert!(
        a.wait_for(
            |directory| state(directory, &c_id).is_some_and(|c| !c.connected),
            WAIT
        )
        .await
    );

    // Same key file: same identity; a newer start time beats the old run's higher seq.
    let c = start(&keys, "c", seed_of(&a), "").await;
    assert_eq!(c.peer_id(), c_id);
    for (name, mesh) in [("a", &a), ("b", &b), ("c", &c)] {
        let back = mesh
            .wait_for(
                |directory| {
                    directory.iter().filter(|state| state.alive).count() == 3
                        && state(directory, &c_id)
                            .is_some_and(|c| c.alive && c.record.started_at_ms >= c_started)
                },
                WAIT,
            )
            .await;
        assert!(back, "{name} does not see c again: {:?}", mesh.directory());
    }
    for mesh in [a, b, c] {
        mesh.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_that_starts_later_is_still_joined() {
    let _serial = SERIAL.lock().await;
    let keys = Keys::new();
    // Reserve a port for the late seed; the seed address carries no peer id, so the id is
    // learned from the handshake.
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let seed_addr = format!("/ip4/127.0.0.1/tcp/{port}");
    let b = start(&keys, "b", vec![seed_addr.clone()], "").await;
    // b has tried and failed at least twice (so it is in backoff) before the seed exists.
    assert!(
        eventually(|| b.stats().dial_failures >= 2, WAIT).await,
        "{:?}",
        b.stats()
    );
    assert!(!b.wait_for_alive(2, Duration::ZERO).await);

    let a_config = MeshConfig {
        listen: seed_addr,
        ..config(vec![], "")
    };
    let a = start_with(&a_config, &keys.path("a"), "a").await;
    for (name, mesh) in [("a", &a), ("b", &b)] {
        assert!(
            mesh.wait_for_alive(2, WAIT).await,
            "{name} sees {:?}",
            mesh.directory()
        );
    }
    let b_view = b.directory();
    let a_state = state(&b_view, &a.peer_id()).unwrap();
    assert!(a_state.connected);
    assert_eq!(a_state.record.name, "a");
    assert!(b.stats().seed_dials >= 3);
    for mesh in [a, b] {
        mesh.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_cluster_token_cannot_join() {
    let _serial = SERIAL.lock().await;
    let keys = Keys::new();
    let a = start(&keys, "a", vec![], "alpha").await;
    let b = start(&keys, "b", seed_of(&a), "alpha").await;
    // Same seed, wrong token.
    let d = start(&keys, "d", seed_of(&a), "beta").await;

    for mesh in [&a, &b] {
        assert!(mesh.wait_for_alive(2, WAIT).await, "{:?}", mesh.directory());
    }
    // d has dialled a. With the same token it would be connected within milliseconds and
    // its record would follow at once; give it a second (several heartbeats) to leak. (Its
    // handshake fails either at once or, when the garbage stalls it, at the 10 s upgrade
    // timeout, so the failure counters are not waited for.)
    assert!(
        eventually(|| d.stats().seed_dials >= 1, WAIT).await,
        "{:?}",
        d.stats()
    );
    let a_published = a.stats().records_published;
    let d_published = d.stats().publish_no_peers;
    assert!(
        eventually(
            || a.stats().records_published >= a_published + 4
                && d.stats().publish_no_peers >= d_published + 4,
            WAIT
        )
        .await
    );

    let d_id = d.peer_id();
    for (name, mesh) in [("a", &a), ("b", &b)] {
        let directory = mesh.directory();
        assert_eq!(directory.len(), 2, "{name} sees {directory:?}");
        assert!(state(&directory, &d_id).is_none());
    }
    let d_view = d.directory();
    assert_eq!(d_view.len(), 1, "d sees {d_view:?}");
    assert_eq!(d_view[0].record.peer_id, d_id);
    let d_stats = d.stats();
    assert_eq!(d_stats.records_received, 0, "{d_stats:?}");
    assert_eq!(d_stats.peers_connected, 0, "{d_stats:?}");
    for mesh in [a, b, d] {
        mesh.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_reports_a_busy_port_and_a_bad_config() {
    let _serial = SERIAL.lock().await;
    let keys = Keys::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let busy = MeshConfig {
        listen: format!("/ip4/127.0.0.1/tcp/{port}"),
        ..config(vec![], "")
    };
    let err = Mesh::start(&busy, &keys.path("a"), record("a"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");

    let bad = MeshConfig {
        seeds: vec!["nonsense".to_owned()],
        ..config(vec![], "")
    };
    let err = Mesh::start(&bad, &keys.path("a"), record("a"))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    drop(listener);
}
