//! Multi-node tests on loopback: concurrent writers while the leader is killed and
//! restarted, a learner cut off from the voters, restart recovery, join/leave, bad input.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, Rng, TOKEN, eventually, init_tracing, same_on_every_node, serial};
use flowmesh_consensus::{
    ConsensusError, DictionaryClient, DictionaryId, DictionaryNode, NodeId, NodeRole, TOKEN_HEADER,
    TagKind,
};
use parking_lot::RwLock;

const LONG: Duration = Duration::from_secs(60);

type Mapping = Vec<(TagKind, DictionaryId, String)>;

/// Checks one replica's dictionary: both directions agree, one-to-one, ids dense per kind.
fn checked_mapping(node: &DictionaryNode) -> Mapping {
    let view = node.replica().unwrap();
    let entries = view.entries().unwrap();
    let mut by_string: HashMap<(TagKind, String), DictionaryId> = HashMap::new();
    let mut next_id: BTreeMap<TagKind, DictionaryId> = BTreeMap::new();
    for (kind, id, string) in &entries {
        let expected = next_id.entry(*kind).or_insert(1);
        assert_eq!(
            *id,
            *expected,
            "node {}: ids of {kind} are not dense",
            node.node_id()
        );
        *expected += 1;
        assert!(
            !string.is_empty(),
            "node {}: empty string stored",
            node.node_id()
        );
        if let Some(other) = by_string.insert((*kind, string.clone()), *id) {
            panic!(
                "node {}: {kind} string {string:?} has two ids, {other} and {id}",
                node.node_id()
            );
        }
    }
    let forward = view.forward_entries().unwrap();
    assert_eq!(
        forward.len(),
        entries.len(),
        "node {}: forward and reverse maps differ in size",
        node.node_id()
    );
    for (kind, string, id) in forward {
        assert_eq!(
            by_string.get(&(kind, string.clone())),
            Some(&id),
            "node {}: forward entry {kind}/{string:?} → {id} disagrees with the reverse map",
            node.node_id()
        );
    }
    entries
}

fn assert_same_mapping_everywhere(cluster: &Cluster) -> Mapping {
    same_on_every_node(cluster, "dictionaries", checked_mapping)
}

#[derive(Default)]
struct WriterReport {
    interned: Vec<(TagKind, String, DictionaryId)>,
    retryable_errors: u64,
    fatal_errors: Vec<String>,
}

async fn writer(
    index: u64,
    clients: Arc<RwLock<BTreeMap<NodeId, DictionaryClient>>>,
    stop: Arc<AtomicBool>,
    successes: Arc<AtomicU64>,
) -> WriterReport {
    let mut rng = Rng::new(index + 1);
    let mut report = WriterReport::default();
    while !stop.load(Ordering::Relaxed) {
        let client = {
            let clients = clients.read();
            clients
                .get(&(index + 1))
                .or_else(|| clients.values().next())
                .cloned()
        };
        let Some(client) = client else {
            tokio::task::yield_now().await;
            continue;
        };
        let kind = if rng.below(4) == 0 {
            TagKind::ENDPOINT
        } else {
            TagKind::POD
        };
        let count = 1 + rng.below(12);
        // A shared pool: writers race on the same strings from different nodes.
        let strings: Vec<String> = (0..count)
            .map(|_| format!("str-{}", rng.below(2000)))
            .collect();
        match client.intern(kind, &strings).await {
            Ok(ids) => {
                assert_eq!(ids.len(), strings.len());
                successes.fetch_add(1, Ordering::Relaxed);
                report
                    .interned
                    .extend(strings.into_iter().zip(ids).map(|(s, id)| (kind, s, id)));
            }
            Err(e) if e.is_retryable() || matches!(e, ConsensusError::ShuttingDown { .. }) => {
                report.retryable_errors += 1;
                // The node went away under us; pick another one next time.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => report.fatal_errors.push(e.to_string()),
        }
    }
    report
}

async fn wait_for_progress(successes: &AtomicU64, at_least: u64, what: &str) {
    let start = successes.load(Ordering::Relaxed);
    eventually(what, LONG, || {
        (successes.load(Ordering::Relaxed) >= start + at_least).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_writers_survive_repeated_leader_restarts() {
    let _serial = serial().await;
    init_tracing();
    let test = async {
        let mut cluster = Cluster::new(&[1, 2, 3]);
        cluster.start_all().await;
        cluster.wait_for_leader(LONG).await;

        let clients = Arc::new(RwLock::new(
            cluster
                .nodes
                .keys()
                .map(|id| (*id, cluster.client(*id)))
                .collect::<BTreeMap<_, _>>(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let successes = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = (0..3)
            .map(|i| {
                tokio::spawn(writer(
                    i,
                    Arc::clone(&clients),
                    Arc::clone(&stop),
                    Arc::clone(&successes),
                ))
            })
            .collect();

        let rounds = 5;
        let mut killed = Vec::new();
        for round in 0..rounds {
            let leader = cluster.wait_for_leader(LONG).await;
            wait_for_progress(&successes, 20, "writers to make progress").await;
            clients.write().remove(&leader);
            cluster.stop(leader).await;
            killed.push(leader);
            let new_leader = cluster.wait_for_leader(LONG).await;
            assert_ne!(
                new_leader, leader,
                "round {round}: stopped node still leads"
            );
            wait_for_progress(&successes, 20, "progress without the old leader").await;
            cluster.start(leader).await;
            clients.write().insert(leader, cluster.client(leader));
        }
        wait_for_progress(&successes, 10, "progress after the last restart").await;
        stop.store(true, Ordering::Relaxed);
        let mut reports = Vec::new();
        for w in writers {
            reports.push(w.await.unwrap());
        }
        cluster.wait_converged(LONG).await;

        let mapping = assert_same_mapping_everywhere(&cluster);
        let mut checked = 0usize;
        for (index, report) in reports.iter().enumerate() {
            assert!(
                report.fatal_errors.is_empty(),
                "writer {index} saw non-retryable errors: {:?}",
                report.fatal_errors
            );
            assert!(
                !report.interned.is_empty(),
                "writer {index} interned nothing"
            );
            for (kind, string, id) in &report.interned {
                for node in cluster.nodes.values() {
                    let client = node.client();
                    assert_eq!(
                        client.decode(*kind, *id).as_deref(),
                        Some(string.as_str()),
                        "node {}: {kind} id {id} does not decode to what writer {index} asked for",
                        node.node_id()
                    );
                    assert_eq!(client.lookup(*kind, string), Some(*id));
                }
                checked += 1;
            }
        }
        let total_stats: Vec<_> = cluster.nodes.values().map(|n| n.client().stats()).collect();
        assert!(total_stats.iter().any(|s| s.forwarded_requests > 0));
        println!(
            "leader restarts: {killed:?}; dictionary entries: {}; writer results checked: {checked}; \
             retryable errors seen: {:?}",
            mapping.len(),
            reports
                .iter()
                .map(|r| r.retryable_errors)
                .collect::<Vec<_>>()
        );
        cluster.stop_all().await;
    };
    tokio::time::timeout(Duration::from_secs(300), test)
        .await
        .expect("test finished within its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learner_answers_locally_while_voters_are_gone() {
    let _serial = serial().await;
    init_tracing();
    let test = async {
        let mut cluster = Cluster::new(&[1, 2, 3, 4]);
        cluster.tweak = |c| {
            c.max_voters = 3;
            c.intern_timeout = Duration::from_secs(3);
        };
        cluster.start_all().await;
        let leader = cluster.wait_for_leader(LONG).await;
        eventually("voters {1,2,3} and learner 4", LONG, || {
            let status = cluster.node(leader).status();
            (status.voters == BTreeSet::from([1, 2, 3]) && status.learners == BTreeSet::from([4]))
                .then_some(())
        })
        .await;

        // Strings written through node 1, never through the learner: it has them only by
        // replication.
        let writer = cluster.client(1);
        let mut expected = Vec::new();
        for batch in 0..10 {
            let strings: Vec<String> = (0..30).map(|i| format!("svc-{batch}-{i}")).collect();
            let ids = writer.intern(TagKind::SERVICE, &strings).await.unwrap();
            expected.extend(strings.into_iter().zip(ids));
        }
        // And a few through the learner, which forwards them to the leader.
        let learner = cluster.client(4);
        let forwarded = learner
            .intern(TagKind::POD, &["pod-a", "pod-b"])
            .await
            .unwrap();
        assert!(learner.stats().forwarded_requests > 0);
        cluster.wait_converged(LONG).await;

        for id in [1, 2, 3] {
            cluster.stop(id).await;
        }
        let status = cluster.node(4).status();
        assert_eq!(status.role, NodeRole::Learner);

        let before = learner.stats();
        for (string, id) in &expected {
            assert_eq!(learner.lookup(TagKind::SERVICE, string), Some(*id));
            assert_eq!(
                learner.decode(TagKind::SERVICE, *id).as_deref(),
                Some(string.as_str())
            );
        }
        assert_eq!(learner.lookup(TagKind::POD, "pod-b"), Some(forwarded[1]));
        assert_eq!(learner.lookup(TagKind::SERVICE, "never-interned"), None);
        // Already-known strings intern locally too, with no leader around.
        let known: Vec<&str> = expected.iter().take(5).map(|(s, _)| s.as_str()).collect();
        let ids = learner.intern(TagKind::SERVICE, &known).await.unwrap();
        assert_eq!(
            ids,
            expected
                .iter()
                .take(5)
                .map(|(_, id)| *id)
                .collect::<Vec<_>>()
        );
        let after = learner.stats();
        assert!(
            after.replica_hits > before.replica_hits,
            "answers came from the replica"
        );
        assert_eq!(after.proposals, before.proposals, "no proposal was needed");

        // A new string needs the leader: a retryable error, not a hang.
        let started = Instant::now();
        let error = learner
            .intern(TagKind::SERVICE, &["brand-new"])
            .await
            .unwrap_err();
        assert!(error.is_retryable(), "{error}");
        assert!(started.elapsed() < Duration::from_secs(20));
        cluster.stop_all().await;
    };
    tokio::time::timeout(Duration::from_secs(300), test)
        .await
        .expect("test finished within its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_recovers_the_dictionary_from_sled() {
    let _serial = serial().await;
    init_tracing();
    let test = async {
        let mut cluster = Cluster::new(&[1, 2, 3]);
        cluster.start_all().await;
        cluster.wait_for_leader(LONG).await;
        let mut expected: Vec<(TagKind, String, DictionaryId)> = Vec::new();
        // Enough proposals to pass `snapshot_after_entries` and purge logs.
        for batch in 0..40 {
            let client = cluster.client(1 + batch % 3);
            let kind = if batch % 2 == 0 {
                TagKind::POD
            } else {
                TagKind::NODE
            };
            let strings: Vec<String> = (0..5).map(|i| format!("r-{batch}-{i}")).collect();
            let ids = client.intern(kind, &strings).await.unwrap();
            expected.extend(strings.into_iter().zip(ids).map(|(s, id)| (kind, s, id)));
        }
        cluster.wait_converged(LONG).await;
        let before = assert_same_mapping_everywhere(&cluster);
        assert_eq!(before.len(), expected.len());
        let snapshots = cluster
            .nodes
            .values()
            .filter(|n| n.raft().metrics().borrow().snapshot.is_some())
            .count();
        assert!(snapshots > 0, "no node built a snapshot");

        cluster.stop_all().await;
        cluster.start_all().await;
        // Before any new write, every replica holds what it held.
        for node in cluster.nodes.values() {
            assert_eq!(
                checked_mapping(node),
                before,
                "node {} lost data",
                node.node_id()
            );
        }
        cluster.wait_for_leader(LONG).await;
        let client = cluster.client(2);
        for (kind, string, id) in &expected {
            assert_eq!(client.intern(*kind, &[string]).await.unwrap(), vec![*id]);
        }
        let max_pod = expected
            .iter()
            .filter(|(k, _, _)| *k == TagKind::POD)
            .map(|(_, _, id)| *id)
            .max()
            .unwrap();
        let fresh = client
            .intern(TagKind::POD, &["after-restart"])
            .await
            .unwrap();
        assert_eq!(fresh, vec![max_pod + 1]);
        cluster.wait_converged(LONG).await;
        assert_eq!(
            assert_same_mapping_everywhere(&cluster).len(),
            expected.len() + 1
        );
        cluster.stop_all().await;
    };
    tokio::time::timeout(Duration::from_secs(300), test)
        .await
        .expect("test finished within its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_join_as_learners_and_voters_follow_the_lowest_ids() {
    let _serial = serial().await;
    init_tracing();
    let test = async {
        let mut cluster = Cluster::new(&[1, 2, 3]);
        cluster.tweak = |c| c.max_voters = 3;
        cluster.start_all().await;
        cluster.wait_for_leader(LONG).await;
        let ids = cluster
            .client(2)
            .intern(TagKind::POD, &["a", "b"])
            .await
            .unwrap();

        cluster.add(4);
        cluster.add(5);
        cluster.start(4).await;
        cluster.start(5).await;
        let membership = |cluster: &Cluster| {
            let leader = cluster.agreed_leader()?;
            let status = cluster.node(leader).status();
            Some((status.voters, status.learners))
        };
        eventually("4 and 5 to join as learners", LONG, || {
            (membership(&cluster)? == (BTreeSet::from([1, 2, 3]), BTreeSet::from([4, 5])))
                .then_some(())
        })
        .await;
        cluster.wait_converged(LONG).await;
        assert_eq!(cluster.client(5).lookup(TagKind::POD, "b"), Some(ids[1]));

        // Node 1 leaves: 4 is promoted to keep three voters.
        let leaving = cluster.nodes.remove(&1).unwrap();
        leaving.leave().await.unwrap();
        eventually("voters {2,3,4} after node 1 left", LONG, || {
            (membership(&cluster)? == (BTreeSet::from([2, 3, 4]), BTreeSet::from([5])))
                .then_some(())
        })
        .await;

        // A node with a lower id joins (it would be the initializer by its own config, but
        // the group exists) and takes a voter seat.
        cluster.add(0);
        cluster.start(0).await;
        eventually("voters {0,2,3} after node 0 joined", LONG, || {
            (membership(&cluster)? == (BTreeSet::from([0, 2, 3]), BTreeSet::from([4, 5])))
                .then_some(())
        })
        .await;
        let more = cluster
            .client(5)
            .intern(TagKind::POD, &["c", "a"])
            .await
            .unwrap();
        assert_eq!(more, vec![3, ids[0]]);
        cluster.wait_converged(LONG).await;
        assert_eq!(assert_same_mapping_everywhere(&cluster).len(), 3);
        cluster.stop_all().await;
    };
    tokio::time::timeout(Duration::from_secs(300), test)
        .await
        .expect("test finished within its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_clear_errors() {
    let _serial = serial().await;
    init_tracing();
    let cluster = Cluster::new(&[1, 2]);
    let mut config = cluster.config(1);
    config.peers.remove(&2);
    config.max_intern_strings = 100;
    config.max_string_bytes = 64;
    let node = DictionaryNode::start(config).await.unwrap();
    let client = node.client();
    eventually("single node to lead", LONG, || {
        (node.status().role == NodeRole::Leader).then_some(())
    })
    .await;

    let empty: [&str; 0] = [];
    let error = client.intern(TagKind::POD, &empty).await.unwrap_err();
    assert!(
        matches!(error, ConsensusError::InvalidInput { .. }),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert_eq!(error.http_status(), 400);
    assert!(error.to_string().contains("empty"), "{error}");

    let many: Vec<String> = (0..101).map(|i| format!("s{i}")).collect();
    let error = client.intern(TagKind::POD, &many).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("101 strings exceed the limit of 100"),
        "{error}"
    );

    let long = "x".repeat(65);
    let error = client
        .intern(TagKind::POD, &["ok", long.as_str()])
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("string 1 has 65 bytes"),
        "{error}"
    );
    assert_eq!(client.stats().proposals, 0, "bad input never reaches raft");

    // Peer requests without the right token are refused with a clear message.
    let http = reqwest::Client::new();
    let url = format!("http://{}/dictionary/intern", node.local_addr());
    let body = serde_json::json!({"kind": 5, "strings": ["x"]});
    for token in [Some("wrong-token"), None] {
        let mut request = http.post(&url).json(&body);
        if let Some(token) = token {
            request = request.header(TOKEN_HEADER, token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let text = response.text().await.unwrap();
        assert!(text.contains("missing or wrong cluster token"), "{text}");
    }
    // A malformed body with the right token is refused, and nothing breaks.
    let response = http
        .post(&url)
        .header(TOKEN_HEADER, TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    let response = http
        .post(&url)
        .header(TOKEN_HEADER, TOKEN)
        .json(&serde_json::json!({"kind": 5, "strings": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("empty"));

    // A node configured with the wrong token cannot use the group.
    let mut stranger_config = cluster.config(2);
    stranger_config.cluster_token = "wrong-token".into();
    let stranger = DictionaryNode::start(stranger_config).await.unwrap();
    let started = Instant::now();
    let error = stranger
        .client()
        .intern(TagKind::POD, &["sneaky"])
        .await
        .unwrap_err();
    assert!(
        matches!(error, ConsensusError::Unauthorized { .. }),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert!(
        error.to_string().contains("rejected our cluster token"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    stranger.shutdown().await.unwrap();

    // The node is unharmed.
    assert_eq!(
        client.intern(TagKind::POD, &["ok", ""]).await.unwrap(),
        vec![1, 0]
    );
    assert!(client.stats().rejected_peer_requests >= 3);
    assert_eq!(client.lookup(TagKind::POD, "sneaky"), None);
    node.shutdown().await.unwrap();
}
