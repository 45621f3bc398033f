//! Kubernetes AutoTagging end to end: nginx from Debian runs in a container cgroup (a
//! 64-hex directory, as container runtimes name them), a node watches pods on an API
//! server, curl talks to nginx, and SQL shows the server's pod, namespace, node, workload
//! and labels on every captured row, reached process → container → pod, none of it stored
//! in the rows.
//!
//! No Kubernetes API server can run on this machine (Debian ships none, and there is no
//! container engine), so the API server here is an HTTP server in the test answering the
//! list and watch calls with the JSON shapes of Kubernetes v1 (`PodList`, watch events).
//! Everything else is real: nginx, its cgroup, curl, eBPF capture and the node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::PathBuf, time::Duration};

use axum::{Router, body::Body, extract::Query, routing::get};
use common::*;
use serde_json::json;

/// The container id (as the runtime reports it, and as the cgroup directory is named).
const CONTAINER: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const POD: &str = "cart-5f6d7c8b9-abcde";

/// A cgroup named like a container's; its processes go back to the root on drop.
struct ContainerCgroup {
    dir: PathBuf,
}

impl ContainerCgroup {
    fn create() -> Self {
        let dir = PathBuf::from(format!(
            "/sys/fs/cgroup/pids/flowmesh-e2e-{}/{CONTAINER}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)
            .expect("create a pids cgroup (needs root and cgroup v1 pids)");
        Self { dir }
    }

    fn enter(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cgroup.contains(CONTAINER), "{pid} not moved: {cgroup}");
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in pids.lines() {
                let _ = std::fs::write("/sys/fs/cgroup/pids/cgroup.procs", pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// The API server: one pod, a Deployment's, with its container; watches stay open.
fn api_server(runtime: &tokio::runtime::Runtime) -> u16 {
    async fn pods(Query(q): Query<std::collections::HashMap<String, String>>) -> Body {
        if q.contains_key("watch") {
            return Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
        }
        assert_eq!(
            q.get("fieldSelector").map(String::as_str),
            Some("spec.nodeName=node-e2e")
        );
        Body::from(
            json!({
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "7"},
                "items": [{
                    "metadata": {
                        "name": POD,
                        "namespace": "shop",
                        "resourceVersion": "6",
                        "labels": {"app": "cart", "tier": "backend", "pod-template-hash": "5f6d7c8b9"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "cart-5f6d7c8b9", "controller": true}]
                    },
                    "spec": {"nodeName": "node-e2e"},
                    "status": {"containerStatuses": [{"name": "nginx", "containerID": format!("containerd://{CONTAINER}")}]}
                }]
            })
            .to_string(),
        )
    }
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(async move {
        axum::serve(listener, Router::new().route("/api/v1/pods", get(pods))).await
    });
    port
}

#[test]
fn rows_show_the_pod_of_the_process_on_each_side() {
    require(&["nginx", "curl"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let api_port = api_server(&runtime);
    let cgroup = ContainerCgroup::create();
    let port = free_port();
    let nginx = Nginx::start(&[port]);
    cgroup.enter(nginx.master_pid());
    cgroup.enter(nginx.worker_pid());

    let data = tempfile::tempdir().unwrap();
    let node_port = free_port();
    let api = format!("http://127.0.0.1:{api_port}");
    let node = FlowmeshNode::start(
        &data.path().join("node"),
        node_port,
        &[
            ("FLOWMESH__KUBERNETES__API_SERVER", api.as_str()),
            ("FLOWMESH__KUBERNETES__NODE_NAME", "node-e2e"),
        ],
    );
    wait_for(Duration::from_secs(30), "the pod to be registered", || {
        (node.metric("flowmesh_kubernetes_pods_seen_total") >= 1.0).then_some(())
    });
    const N: usize = 20;
    curl_many(&format!("http://127.0.0.1:{port}/ok"), N, 200);

    let pods_sql = format!(
        "SELECT observation_point, pod_1, pod_ns_1, pod_node_1, pod_group_1, pod_group_type_1, \
         k8s.label.app_1, k8s.label.tier_1, pod_0, count(*) FROM flow_log.l7_flow_log \
         WHERE server_port = {port} AND l7_protocol = 'HTTP' GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9 ORDER BY 1"
    );
    let expected: Vec<Vec<serde_json::Value>> = ["client", "server"]
        .iter()
        .map(|point| {
            vec![
                json!(point),
                json!(POD),
                json!("shop"),
                json!("node-e2e"),
                json!("cart"),
                json!("Deployment"),
                json!("cart"),
                json!("backend"),
                json!(""), // curl runs on the host, in no pod
                json!(N),
            ]
        })
        .collect();
    let mut last = Vec::new();
    let found = (0..100).any(|_| {
        last = node.sql(&pods_sql);
        if last == expected {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
        false
    });
    assert!(
        found,
        "rows {last:?}, expected {expected:?}\nlog:\n{}",
        node.log_text()
    );

    // filters on derived tags and labels; an unknown value matches nothing
    let count = |filter: &str| {
        node.sql(&format!(
            "SELECT count(*) FROM flow_log.l7_flow_log WHERE server_port = {port} \
             AND observation_point = 'server' AND {filter}"
        ))[0][0]
            .as_i64()
            .unwrap()
    };
    assert_eq!(count("k8s.label.tier_1 = 'backend'"), N as i64);
    assert_eq!(
        count("pod_ns_1 = 'shop' AND pod_group_1 = 'cart'"),
        N as i64
    );
    assert_eq!(count("pod_ns_1 = 'no-such-namespace'"), 0);
    assert_eq!(count("k8s.label.app_0 IS NOT NULL"), 0);
    // the pod columns are shown, derived (l7_flow_log stores only the process ids)
    let columns: Vec<String> = node
        .sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'l7_flow_log'")
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    assert!(
        columns.contains(&"pod_1".to_string()) && columns.contains(&"k8s_labels_1".to_string())
    );
    assert_eq!(node.metric("flowmesh_kubernetes_errors_total"), 0.0);
    let status: serde_json::Value =
        reqwest::blocking::get(format!("http://127.0.0.1:{node_port}/v1/status"))
            .unwrap()
            .json()
            .unwrap();
    assert_eq!(status["kubernetes"]["api_server"], json!(api));
    drop(nginx);
    drop(cgroup);
}
