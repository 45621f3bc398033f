//! Resource tables across a cluster: versions registered through a follower and a learner
//! (forwarded to the leader) end up identical on every replica, re-registering costs no
//! Raft write, and they survive a full restart and reach a late joiner by snapshot.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Cluster, eventually, run_cluster_test, same_on_every_node};
use flowmesh_consensus::{
    ConsensusError, DictionaryClient, DictionaryId, MAX_RESOURCE_ATTRS, ResourceVersion,
    TOKEN_HEADER, TagKind,
};

const LONG: Duration = Duration::from_secs(60);
/// A process-instance kind, as a caller outside this crate would make one.
const PROCESS_INSTANCE: TagKind = TagKind::custom(40);
const PROCESS_CMDLINE: TagKind = TagKind::custom(41);
/// 2023-11-14T22:13:20Z in µs: the first versions start here.
const T0: i64 = 1_700_000_000_000_000;

async fn intern_one(client: &DictionaryClient, kind: TagKind, string: &str) -> DictionaryId {
    client.intern(kind, &[string]).await.unwrap()[0]
}

/// Registers `count` new pods `{prefix}-{i}` through `client`, pod i in service
/// `svc-{i % 3}` on `node-{i % 2}` from [`T0`] on; returns their ids.
async fn register_pods(client: &DictionaryClient, prefix: &str, count: usize) -> Vec<DictionaryId> {
    let mut pods = Vec::new();
    for i in 0..count {
        let pod = intern_one(client, TagKind::POD, &format!("{prefix}-{i}")).await;
        let service = intern_one(client, TagKind::SERVICE, &format!("svc-{}", i % 3)).await;
        let node = intern_one(client, TagKind::NODE, &format!("node-{}", i % 2)).await;
        let version = ResourceVersion {
            kind: TagKind::POD,
            id: pod,
            valid_from_us: T0,
            attrs: BTreeMap::from([(TagKind::SERVICE, service), (TagKind::NODE, node)]),
        };
        assert!(
            client.register_resource(version).await.unwrap(),
            "{prefix}-{i}"
        );
        pods.push(pod);
    }
    pods
}

/// Registers `count` process instances through `client`, each with a command line and
/// its pod; returns the versions.
async fn register_processes(
    client: &DictionaryClient,
    pods: &[DictionaryId],
    count: usize,
) -> Vec<ResourceVersion> {
    let mut versions = Vec::new();
    for i in 0..count {
        let instance =
            intern_one(client, PROCESS_INSTANCE, &format!("host-a:{}:77", 100 + i)).await;
        let cmdline = intern_one(client, PROCESS_CMDLINE, &format!("/bin/app --worker {i}")).await;
        let version = ResourceVersion {
            kind: PROCESS_INSTANCE,
            id: instance,
            valid_from_us: T0 + i as i64,
            attrs: BTreeMap::from([
                (PROCESS_CMDLINE, cmdline),
                (TagKind::POD, pods[i % pods.len()]),
            ]),
        };
        assert!(client.register_resource(version.clone()).await.unwrap());
        versions.push(version);
    }
    versions
}

fn all_versions(client: &DictionaryClient) -> Vec<ResourceVersion> {
    let mut versions = client.resource_versions(TagKind::POD).unwrap();
    versions.extend(client.resource_versions(PROCESS_INSTANCE).unwrap());
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resources_registered_anywhere_reach_every_replica() {
    run_cluster_test(Duration::from_secs(300), async {
        let mut cluster = Cluster::new(&[1, 2, 3]);
        cluster.tweak = |c| c.max_voters = 2;
        cluster.start_all().await;
        let leader = cluster.wait_for_leader(LONG).await;
        eventually("voters {1,2} and learner 3", LONG, || {
            let status = cluster.node(leader).status();
            (status.voters == BTreeSet::from([1, 2]) && status.learners == BTreeSet::from([3]))
                .then_some(())
        })
        .await;
        let follower = cluster.client(if leader == 1 { 2 } else { 1 });
        let learner = cluster.client(3);

        let pods = register_pods(&follower, "pod", 12).await;
        let processes = register_processes(&learner, &pods, 12).await;
        for client in [&follower, &learner] {
            let stats = client.stats();
            assert!(stats.forwarded_requests > 0, "{stats:?}");
            assert_eq!(stats.resource_proposals, 12, "{stats:?}");
        }
        // Pod 0 moves to another service later; asked through the learner.
        let moved = BTreeMap::from([
            (
                TagKind::SERVICE,
                intern_one(&learner, TagKind::SERVICE, "svc-new").await,
            ),
            (
                TagKind::NODE,
                intern_one(&learner, TagKind::NODE, "node-1").await,
            ),
        ]);
        let move_pod = ResourceVersion {
            kind: TagKind::POD,
            id: pods[0],
            valid_from_us: T0 + 1_000_000,
            attrs: moved.clone(),
        };
        assert!(learner.register_resource(move_pod.clone()).await.unwrap());
        cluster.wait_converged(LONG).await;

        let expected = same_on_every_node(&cluster, "resource versions", |node| {
            all_versions(&node.client())
        });
        assert_eq!(expected.len(), 12 + 12 + 1);
        assert!(expected.contains(&processes[5]));
        assert!(expected.contains(&move_pod));
        let first = follower.resource_at(TagKind::POD, pods[0], T0).unwrap();
        for node in cluster.nodes.values() {
            let client = node.client();
            // Before the first version, between versions, after the last.
            assert_eq!(
                client.resource_at(TagKind::POD, pods[0], 0).as_ref(),
                Some(&first)
            );
            assert_eq!(
                client
                    .resource_at(TagKind::POD, pods[0], T0 + 999_999)
                    .as_ref(),
                Some(&first)
            );
            assert_eq!(
                client.resource_at(TagKind::POD, pods[0], i64::MAX).as_ref(),
                Some(&moved)
            );
            assert_eq!(client.resource_at(TagKind::POD, 9_999, T0), None);
        }

        // Re-registering unchanged resources, from any node, costs no Raft write.
        let last_log = cluster.node(leader).status().last_log_index;
        let proposals_before: Vec<u64> = cluster
            .nodes
            .values()
            .map(|n| n.client().stats().resource_proposals)
            .collect();
        for node in cluster.nodes.values() {
            for version in &expected {
                let mut later = version.clone();
                later.valid_from_us += 10;
                assert!(!node.client().register_resource(later).await.unwrap());
            }
        }
        let proposals_after: Vec<u64> = cluster
            .nodes
            .values()
            .map(|n| n.client().stats().resource_proposals)
            .collect();
        assert_eq!(proposals_after, proposals_before);
        assert_eq!(cluster.node(leader).status().last_log_index, last_log);

        // Bad input is refused before Raft; unknown ids by the state machine, alike.
        let too_many = ResourceVersion {
            attrs: (0..=MAX_RESOURCE_ATTRS as u16)
                .map(|k| (TagKind::custom(k), 0))
                .collect(),
            ..move_pod.clone()
        };
        let error = learner.register_resource(too_many).await.unwrap_err();
        assert!(
            matches!(error, ConsensusError::InvalidInput { .. }),
            "{error}"
        );
        let unknown = ResourceVersion {
            id: 9_999,
            ..move_pod.clone()
        };
        let error = follower.register_resource(unknown).await.unwrap_err();
        assert!(matches!(error, ConsensusError::Rejected { .. }), "{error}");
        assert!(
            error.to_string().contains("not in the dictionary"),
            "{error}"
        );
        // The forwarding route wants the cluster token like every peer route.
        let response = reqwest::Client::new()
            .post(format!(
                "http://{}/dictionary/resource",
                cluster.node(leader).local_addr()
            ))
            .header(TOKEN_HEADER, "wrong-token")
            .json(&move_pod)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);

        // More than `snapshot_after_entries` entries: the log behind a snapshot is purged.
        register_pods(&follower, "more", 40).await;
        cluster.wait_converged(LONG).await;
        let expected = same_on_every_node(&cluster, "resource versions", |node| {
            all_versions(&node.client())
        });
        assert_eq!(expected.len(), 12 + 40 + 12 + 1);

        cluster.stop_all().await;
        cluster.start_all().await;
        // Before any new write, every replica holds what it held.
        for node in cluster.nodes.values() {
            assert_eq!(
                all_versions(&node.client()),
                expected,
                "node {} lost resource versions",
                node.node_id()
            );
        }

        // A late joiner gets the versions from a snapshot: the log behind it is gone.
        cluster.add(4);
        cluster.start(4).await;
        cluster.wait_for_leader(LONG).await;
        eventually("node 4 to join and catch up", LONG, || {
            let leader = cluster.agreed_leader()?;
            let target = cluster.node(leader).status().last_log_index;
            (cluster.node(4).status().last_applied_index == target).then_some(())
        })
        .await;
        assert!(
            cluster.node(4).raft().metrics().borrow().snapshot.is_some(),
            "node 4 caught up without a snapshot"
        );
        assert_eq!(
            same_on_every_node(&cluster, "resource versions after a join", |node| {
                all_versions(&node.client())
            }),
            expected
        );
        cluster.stop_all().await;
    })
    .await;
}
