//! Kubernetes AutoTagging (DESIGN.md §5): pods from the API server become resources in the
//! tag dictionary, so rows show the pod, namespace, node, workload and labels of the
//! process on each side without storing any of them.
//!
//! - **Pods** are resources of kind `k8s_pod` keyed `namespace/name`, with the attributes
//!   [`tables::POD_ATTRIBUTES`]: name, namespace, node, workload (`pod_group`) and its kind,
//!   and the labels as one canonical string. A change (a label, a move) is a new version
//!   from the time it was seen; old rows keep the version they had.
//! - **Containers** are resources of kind `container_id` keyed by the 64-hex id the
//!   runtime reports (`containerd://<id>` → `<id>`), the same string the capture reads
//!   from a process's cgroup, with one attribute: their pod. A row reaches its pod as
//!   process → container → pod ([`tables::derived_tags`]).
//! - **Workloads:** the pod's controlling owner. A ReplicaSet made by a Deployment (the
//!   pod's `pod-template-hash` label ends its name) counts as that Deployment.
//!
//! The watcher lists pods (in pages), then watches from the list's resourceVersion. When
//! the watch expires (410 Gone) it lists again; on any other failure it waits (1 s,
//! doubling to 30 s) and lists again. Every failure is counted and logged, never fatal.
//! A single event larger than [`MAX_EVENT_BYTES`] is refused.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use datafusion::arrow::{
    array::{ArrayRef, Int64Array, StringArray},
    datatypes::{DataType, Field, Schema},
    error::ArrowError,
    record_batch::RecordBatch,
};
use flowmesh_consensus::TagKind;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    config::KubernetesSettings,
    dictionary::{EncodeError, TagEncoder},
    tables::{self, ingested::canonical_labels},
};

/// Largest watch event (one pod's JSON) accepted.
pub const MAX_EVENT_BYTES: usize = 4 << 20;
/// Longest label string kept per pod: the dictionary's longest string (consensus
/// `max_string_bytes`, 4096 by default). Labels past it, in name order, are left out and
/// counted in `flowmesh_kubernetes_labels_truncated_total`.
pub const MAX_LABELS_BYTES: usize = 4096;
/// Pods per page of a list.
const PAGE: usize = 500;
/// How long the API server keeps one watch open; we wait a little longer for its end.
const WATCH_SECONDS: u64 = 300;

/// Why a list or watch failed.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("kubernetes API {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("kubernetes API {url}: status {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("kubernetes API {url}: no answer for {0:?}", .timeout)]
    Timeout { url: String, timeout: Duration },
    #[error("kubernetes API: malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("kubernetes CA bundle {path}: {detail}")]
    Ca { path: String, detail: String },
    #[error("registering pods: {0}")]
    Encode(#[from] EncodeError),
    #[error("building pod batch: {0}")]
    Arrow(#[from] ArrowError),
}

/// Counters of the watcher (in `/metrics` as `flowmesh_kubernetes_*`).
#[derive(Debug, Default)]
pub struct K8sStats {
    /// Pod versions handed to the dictionary (from lists and watch events).
    pub pods_seen: AtomicU64,
    /// Watch events read (ADDED, MODIFIED, DELETED, BOOKMARK).
    pub watch_events: AtomicU64,
    /// Full lists: the first one and every relist.
    pub lists: AtomicU64,
    /// Failed lists or watches (each followed by a backoff and a relist).
    pub errors: AtomicU64,
    /// Pods whose labels did not all fit in [`MAX_LABELS_BYTES`].
    pub labels_truncated: AtomicU64,
}

/// The parts of a pod AutoTagging reads; everything else is ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
    pub status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: String,
    pub resource_version: String,
    pub labels: BTreeMap<String, String>,
    pub owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OwnerReference {
    pub kind: String,
    pub name: String,
    pub controller: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    pub node_name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodStatus {
    pub container_statuses: Vec<ContainerStatus>,
    pub init_container_statuses: Vec<ContainerStatus>,
    pub ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContainerStatus {
    #[serde(rename = "containerID")]
    pub container_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PodList {
    metadata: ListMeta,
    items: Vec<Pod>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ListMeta {
    resource_version: String,
    #[serde(rename = "continue")]
    continue_token: String,
}

#[derive(Debug, Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

/// What AutoTagging records of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTags {
    /// `namespace/name`: the pod resource's key.
    pub key: String,
    pub name: String,
    pub namespace: String,
    pub node: String,
    /// The workload: its name and kind (`Deployment`, `StatefulSet`, …), or empty.
    pub group: String,
    pub group_type: String,
    /// The labels in canonical form, `a="x",b="y"` sorted by name, at most
    /// [`MAX_LABELS_BYTES`] (whole labels only).
    pub labels: String,
    /// Labels left out to respect that bound.
    pub labels_dropped: usize,
    /// Ids of the pod's containers (init and ephemeral ones included) that have started.
    pub containers: Vec<String>,
}

impl PodTags {
    pub fn of(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let owner = meta
            .owner_references
            .iter()
            .find(|o| o.controller == Some(true))
            .or_else(|| meta.owner_references.first());
        let (group_type, group) = match owner {
            Some(o) if o.kind == "ReplicaSet" => {
                let deployment = meta
                    .labels
                    .get("pod-template-hash")
                    .filter(|h| !h.is_empty())
                    .and_then(|h| o.name.strip_suffix(h.as_str()))
                    .and_then(|n| n.strip_suffix('-'))
                    .filter(|n| !n.is_empty());
                match deployment {
                    Some(name) => ("Deployment".to_string(), name.to_string()),
                    None => (o.kind.clone(), o.name.clone()),
                }
            }
            Some(o) => (o.kind.clone(), o.name.clone()),
            None => (String::new(), String::new()),
        };
        let status = &pod.status;
        let containers = status
            .container_statuses
            .iter()
            .chain(&status.init_container_statuses)
            .chain(&status.ephemeral_container_statuses)
            .filter_map(|c| container_id(&c.container_id))
            .collect();
        let (labels, labels_dropped) = bounded_labels(&meta.labels);
        PodTags {
            key: format!("{}/{}", meta.namespace, meta.name),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            node: pod.spec.node_name.clone(),
            group,
            group_type,
            labels,
            labels_dropped,
            containers,
        }
    }
}

/// The canonical form of the most labels (in name order) that fit in
/// [`MAX_LABELS_BYTES`], and how many were left out.
fn bounded_labels(labels: &BTreeMap<String, String>) -> (String, usize) {
    let pairs: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut kept = pairs.len();
    let mut text = canonical_labels(pairs.iter().copied());
    while text.len() > MAX_LABELS_BYTES {
        kept -= 1;
        text = canonical_labels(pairs[..kept].iter().copied());
    }
    (text, pairs.len() - kept)
}

/// The id in a status's `containerID` (`<runtime>://<id>`), when it is the 64-hex form
/// the capture reads from cgroups; `None` for containers that have not started.
pub fn container_id(status_id: &str) -> Option<String> {
    let id = status_id.split_once("://").map_or(status_id, |(_, id)| id);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// The two resource batches for `pods` seen at `valid_from_us`: pods (key, time, then
/// [`tables::POD_ATTRIBUTES`]) and containers (key, time, pod key).
pub fn resource_batches(
    pods: &[PodTags],
    valid_from_us: i64,
) -> Result<(RecordBatch, RecordBatch), ArrowError> {
    let strings = |values: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(values)) };
    let times = |n: usize| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(
            valid_from_us,
            n,
        )))
    };
    let schema = |names: &[&str]| {
        let mut fields = vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("valid_from_us", DataType::Int64, false),
        ];
        fields.extend(names.iter().map(|n| Field::new(*n, DataType::Utf8, false)));
        Arc::new(Schema::new(fields))
    };
    let column = |f: fn(&PodTags) -> &str| strings(pods.iter().map(f).collect());
    let pod_batch = RecordBatch::try_new(
        schema(&[
            "pod",
            "pod_ns",
            "pod_node",
            "pod_group",
            "pod_group_type",
            "labels",
        ]),
        vec![
            column(|p| &p.key),
            times(pods.len()),
            column(|p| &p.name),
            column(|p| &p.namespace),
            column(|p| &p.node),
            column(|p| &p.group),
            column(|p| &p.group_type),
            column(|p| &p.labels),
        ],
    )?;
    let containers: Vec<(&str, &str)> = pods
        .iter()
        .flat_map(|p| p.containers.iter().map(|c| (c.as_str(), p.key.as_str())))
        .collect();
    let container_batch = RecordBatch::try_new(
        schema(&["k8s_pod"]),
        vec![
            strings(containers.iter().map(|c| c.0).collect()),
            times(containers.len()),
            strings(containers.iter().map(|c| c.1).collect()),
        ],
    )?;
    Ok((pod_batch, container_batch))
}

/// Watches one API server's pods and registers them.
pub struct PodWatcher {
    base: String,
    settings: KubernetesSettings,
    client: reqwest::Client,
    encoder: TagEncoder,
    stats: Arc<K8sStats>,
}

impl std::fmt::Debug for PodWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodWatcher")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl PodWatcher {
    /// A watcher of `base` (the API server's URL) that registers through `encoder`.
    pub fn new(
        base: String,
        settings: &KubernetesSettings,
        encoder: TagEncoder,
        stats: Arc<K8sStats>,
    ) -> Result<Self, K8sError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .use_rustls_tls();
        if base.starts_with("https://") && settings.ca_file.exists() {
            let ca_error = |detail: String| K8sError::Ca {
                path: settings.ca_file.display().to_string(),
                detail,
            };
            let pem = std::fs::read(&settings.ca_file).map_err(|e| ca_error(e.to_string()))?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|source| K8sError::Http {
            url: base.clone(),
            source,
        })?;
        Ok(Self {
            base,
            settings: settings.clone(),
            client,
            encoder,
            stats,
        })
    }

    /// Lists and watches until `cancel`, relisting after expiry and backing off after
    /// failures.
    pub async fn run(self, cancel: CancellationToken) {
        info!(api_server = %self.base, node = %self.settings.node_name, "watching Kubernetes pods");
        let mut backoff = Duration::from_secs(1);
        loop {
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return,
                outcome = self.list_and_watch() => outcome,
            };
            match outcome {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, retry_in = ?backoff, "kubernetes pod watch failed");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// One list, then watches from its version until the watch expires (`Ok`) or fails.
    async fn list_and_watch(&self) -> Result<(), K8sError> {
        let mut version = self.list().await?;
        loop {
            match self.watch(&version).await? {
                Some(next) => version = next,
                None => return Ok(()), // expired: list again
            }
        }
    }

    fn pods_url(&self, query: &[(&str, String)]) -> Result<reqwest::Url, K8sError> {
        let mut params: Vec<(&str, String)> = query.to_vec();
        if !self.settings.node_name.is_empty() {
            params.push((
                "fieldSelector",
                format!("spec.nodeName={}", self.settings.node_name),
            ));
        }
        reqwest::Url::parse_with_params(&format!("{}/api/v1/pods", self.base), &params).map_err(
            |e| K8sError::Malformed {
                what: "api_server URL",
                detail: e.to_string(),
            },
        )
    }

    async fn get(&self, url: reqwest::Url) -> Result<reqwest::Response, K8sError> {
        let mut request = self.client.get(url.clone());
        if let Ok(token) = std::fs::read_to_string(&self.settings.token_file) {
            request = request.bearer_auth(token.trim());
        }
        let response = tokio::time::timeout(self.settings.timeout, request.send())
            .await
            .map_err(|_| K8sError::Timeout {
                url: url.to_string(),
                timeout: self.settings.timeout,
            })?
            .map_err(|source| K8sError::Http {
                url: url.to_string(),
                source,
            })?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            return Err(K8sError::Status {
                url: url.to_string(),
                status,
                body: body.chars().take(512).collect(),
            });
        }
        Ok(response)
    }

    /// Lists every pod (page by page) and registers them; the list's resourceVersion.
    async fn list(&self) -> Result<String, K8sError> {
        self.stats.lists.fetch_add(1, Ordering::Relaxed);
        let mut continue_token = String::new();
        loop {
            let mut query = vec![("limit", PAGE.to_string())];
            if !continue_token.is_empty() {
                query.push(("continue", continue_token.clone()));
            }
            let url = self.pods_url(&query)?;
            let response = self.get(url.clone()).await?;
            let body = tokio::time::timeout(self.settings.timeout * 4, response.bytes())
                .await
                .map_err(|_| K8sError::Timeout {
                    url: url.to_string(),
                    timeout: self.settings.timeout * 4,
                })?
                .map_err(|source| K8sError::Http {
                    url: url.to_string(),
                    source,
                })?;
            let list: PodList = serde_json::from_slice(&body).map_err(|e| K8sError::Malformed {
                what: "pod list",
                detail: e.to_string(),
            })?;
            let pods: Vec<PodTags> = list.items.iter().map(PodTags::of).collect();
            self.register(&pods).await?;
            if list.metadata.continue_token.is_empty() {
                return Ok(list.metadata.resource_version);
            }
            continue_token = list.metadata.continue_token;
        }
    }

    /// Watches from `version`: the version to resume from when the server ends the watch,
    /// or `None` when it has expired (410 Gone) and a new list is needed.
    async fn watch(&self, version: &str) -> Result<Option<String>, K8sError> {
        let url = self.pods_url(&[
            ("watch", "1".into()),
            ("resourceVersion", version.to_string()),
            ("allowWatchBookmarks", "true".into()),
            ("timeoutSeconds", WATCH_SECONDS.to_string()),
        ])?;
        let mut response = self.get(url.clone()).await?;
        let idle = Duration::from_secs(WATCH_SECONDS) + self.settings.timeout;
        let mut version = version.to_string();
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::time::timeout(idle, response.chunk())
                .await
                .map_err(|_| K8sError::Timeout {
                    url: url.to_string(),
                    timeout: idle,
                })?
                .map_err(|source| K8sError::Http {
                    url: url.to_string(),
                    source,
                })?;
            let Some(chunk) = chunk else {
                return Ok(Some(version)); // the server closed the watch: resume
            };
            pending.extend_from_slice(&chunk);
            let mut pods = Vec::new();
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                match self.event(&line, &mut version, &mut pods)? {
                    EventOutcome::Continue => {}
                    EventOutcome::Expired => {
                        self.register(&pods).await?;
                        return Ok(None);
                    }
                }
            }
            if pending.len() > MAX_EVENT_BYTES {
                return Err(K8sError::Malformed {
                    what: "watch event",
                    detail: format!("longer than {MAX_EVENT_BYTES} bytes"),
                });
            }
            self.register(&pods).await?;
        }
    }

    /// Reads one watch line, collecting added or modified pods into `pods`.
    fn event(
        &self,
        line: &[u8],
        version: &mut String,
        pods: &mut Vec<PodTags>,
    ) -> Result<EventOutcome, K8sError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(EventOutcome::Continue);
        }
        let malformed = |e: serde_json::Error| K8sError::Malformed {
            what: "watch event",
            detail: e.to_string(),
        };
        let event: WatchEvent = serde_json::from_slice(line).map_err(malformed)?;
        self.stats.watch_events.fetch_add(1, Ordering::Relaxed);
        if event.kind == "ERROR" {
            let code = event.object.get("code").and_then(|c| c.as_u64());
            if code == Some(410) {
                return Ok(EventOutcome::Expired);
            }
            return Err(K8sError::Status {
                url: "watch".into(),
                status: code.unwrap_or(0) as u16,
                body: event.object.to_string().chars().take(512).collect(),
            });
        }
        let pod: Pod = serde_json::from_value(event.object).map_err(malformed)?;
        if !pod.metadata.resource_version.is_empty() {
            version.clone_from(&pod.metadata.resource_version);
        }
        // a deleted pod keeps its versions: older rows still show it
        if matches!(event.kind.as_str(), "ADDED" | "MODIFIED") {
            pods.push(PodTags::of(&pod));
        }
        Ok(EventOutcome::Continue)
    }

    async fn register(&self, pods: &[PodTags]) -> Result<(), K8sError> {
        if pods.is_empty() {
            return Ok(());
        }
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let (pod_batch, container_batch) = resource_batches(pods, now_us)?;
        self.encoder
            .register_resources(TagKind::K8S_POD, &tables::POD_ATTRIBUTES, &pod_batch)
            .await?;
        self.encoder
            .register_resources(
                TagKind::CONTAINER_ID,
                &tables::CONTAINER_ATTRIBUTES,
                &container_batch,
            )
            .await?;
        self.stats
            .pods_seen
            .fetch_add(pods.len() as u64, Ordering::Relaxed);
        let truncated = pods.iter().filter(|p| p.labels_dropped > 0).count();
        if truncated > 0 {
            self.stats
                .labels_truncated
                .fetch_add(truncated as u64, Ordering::Relaxed);
            warn!(
                pods = truncated,
                "pod labels longer than {MAX_LABELS_BYTES} bytes: the last labels by name are left out"
            );
        }
        Ok(())
    }
}

enum EventOutcome {
    Continue,
    Expired,
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::{
        Router,
        body::Body,
        extract::{Query, State},
        http::HeaderMap,
        routing::get,
    };
    use flowmesh_consensus::DictionaryClient;
    use serde_json::{Value, json};

    use super::*;
    use crate::dictionary::tests::single_node;

    const HEX_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const HEX_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const HEX_C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    /// A pod as the API server sends it (trimmed to what matters, plus noise).
    fn pod(name: &str, version: &str, labels: Value, owner: Value, container: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "shop",
                "uid": format!("uid-{name}"),
                "resourceVersion": version,
                "labels": labels,
                "ownerReferences": owner,
                "annotations": {"ignored": "yes"}
            },
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "x"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [{"name": "app", "containerID": container, "ready": true}]
            }
        })
    }

    fn replica_set(name: &str) -> Value {
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "controller": true}])
    }

    #[test]
    fn pods_give_workloads_labels_and_container_ids() {
        let tags = |v: Value| PodTags::of(&serde_json::from_value::<Pod>(v).unwrap());
        let cart = tags(pod(
            "cart-7d9f8b6c5-x2x4z",
            "1",
            json!({"app": "cart", "pod-template-hash": "7d9f8b6c5"}),
            replica_set("cart-7d9f8b6c5"),
            &format!("containerd://{HEX_A}"),
        ));
        assert_eq!(cart.key, "shop/cart-7d9f8b6c5-x2x4z");
        assert_eq!(
            (cart.group_type.as_str(), cart.group.as_str()),
            ("Deployment", "cart")
        );
        assert_eq!(cart.labels, r#"app="cart",pod-template-hash="7d9f8b6c5""#);
        assert_eq!(
            (cart.namespace.as_str(), cart.node.as_str()),
            ("shop", "node-1")
        );
        assert_eq!(cart.containers, vec![HEX_A.to_string()]);

        // a ReplicaSet without the template hash is its own workload
        let bare_rs = tags(pod("r-1", "1", json!({}), replica_set("r"), ""));
        assert_eq!(
            (bare_rs.group_type.as_str(), bare_rs.group.as_str()),
            ("ReplicaSet", "r")
        );
        assert!(
            bare_rs.containers.is_empty(),
            "a container that has not started has no id"
        );
        let db = tags(pod(
            "db-0",
            "1",
            json!({"app": "db"}),
            json!([{"kind": "StatefulSet", "name": "db", "controller": true}]),
            &format!("docker://{}", HEX_B.to_uppercase()),
        ));
        assert_eq!(
            (db.group_type.as_str(), db.group.as_str()),
            ("StatefulSet", "db")
        );
        assert_eq!(db.containers, vec![HEX_B.to_string()]);
        let lone = tags(json!({"metadata": {"name": "lone", "namespace": "default"}}));
        assert_eq!(
            (lone.key.as_str(), lone.group.as_str(), lone.labels.as_str()),
            ("default/lone", "", "")
        );

        // labels past the dictionary's string limit are left out whole, and counted
        let many: serde_json::Map<String, Value> = (0..100)
            .map(|i| (format!("label-{i:03}"), json!("v".repeat(60))))
            .collect();
        let big = tags(pod("big", "1", Value::Object(many), json!([]), ""));
        assert!(big.labels.len() <= MAX_LABELS_BYTES, "{}", big.labels.len());
        assert_eq!(
            big.labels_dropped,
            100 - big.labels.matches(",").count() - 1
        );
        assert!(big.labels_dropped > 0 && big.labels.starts_with(r#"label-000=""#));
        assert!(parse_labels_ok(&big.labels));

        assert_eq!(container_id("cri-o://abc"), None);
        assert_eq!(container_id(HEX_C).as_deref(), Some(HEX_C));
    }

    fn parse_labels_ok(text: &str) -> bool {
        flowmesh_query_planner::labels::parse_canonical_labels(text).is_ok()
    }

    /// What the fake API server saw, and what it answers.
    #[derive(Default)]
    struct Api {
        requests: Mutex<Vec<(String, HeaderMap)>>,
        watches: Mutex<u32>,
    }

    async fn pods(
        State(api): State<Arc<Api>>,
        Query(q): Query<BTreeMap<String, String>>,
        headers: HeaderMap,
    ) -> Body {
        let described = q
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        api.requests.lock().unwrap().push((described, headers));
        let cart = |version: &str, tier: &str| {
            pod(
                "cart-7d9f8b6c5-x2x4z",
                version,
                json!({"app": "cart", "tier": tier, "pod-template-hash": "7d9f8b6c5"}),
                replica_set("cart-7d9f8b6c5"),
                &format!("containerd://{HEX_A}"),
            )
        };
        if !q.contains_key("watch") {
            // two pages
            let page = match q.get("continue").map(String::as_str) {
                // after the watch's label change, a relist shows the pod as it is now
                None if *api.watches.lock().unwrap() > 0 => {
                    json!({"kind": "PodList", "metadata": {"resourceVersion": "105"}, "items": [cart("101", "backend")]})
                }
                None => {
                    json!({"kind": "PodList", "metadata": {"resourceVersion": "100", "continue": "p2"}, "items": [cart("90", "web")]})
                }
                Some(_) => {
                    json!({"kind": "PodList", "metadata": {"resourceVersion": "100"}, "items": [pod("db-0", "95", json!({"app": "db"}), json!([{"kind": "StatefulSet", "name": "db", "controller": true}]), &format!("containerd://{HEX_B}"))]})
                }
            };
            return Body::from(page.to_string());
        }
        let watch = {
            let mut n = api.watches.lock().unwrap();
            *n += 1;
            *n
        };
        let lines: Vec<Value> = match watch {
            // a label change, a new pod, a deletion and a bookmark; then the server ends
            // the watch
            1 => vec![
                json!({"type": "MODIFIED", "object": cart("101", "backend")}),
                json!({"type": "ADDED", "object": pod("lone", "102", json!({}), json!([]), &format!("containerd://{HEX_C}"))}),
                json!({"type": "DELETED", "object": pod("db-0", "103", json!({"app": "gone"}), json!([]), "")}),
                json!({"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "104"}}}),
            ],
            // resumed from the bookmark: expired
            2 => vec![
                json!({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}),
            ],
            _ => {
                return Body::from_stream(futures::stream::pending::<
                    Result<Vec<u8>, std::io::Error>,
                >());
            }
        };
        // split mid-line, as a network would
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let bytes = text.into_bytes();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(37).map(|c| Ok(c.to_vec())).collect();
        Body::from_stream(futures::stream::iter(chunks))
    }

    fn decode_attrs(
        client: &DictionaryClient,
        attrs: &BTreeMap<TagKind, u32>,
    ) -> BTreeMap<String, String> {
        attrs
            .iter()
            .map(|(kind, id)| (kind.to_string(), client.decode(*kind, *id).unwrap()))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watcher_registers_pods_and_containers_and_relists_when_expired() {
        let dir = tempfile::tempdir().unwrap();
        let dictionary = single_node(dir.path()).await;
        let client = dictionary.client();
        let api = Arc::new(Api::default());
        let app = Router::new()
            .route("/api/v1/pods", get(pods))
            .with_state(Arc::clone(&api));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let token = dir.path().join("token");
        std::fs::write(&token, "secret-token\n").unwrap();
        let settings = KubernetesSettings {
            api_server: format!("http://{addr}"),
            token_file: token,
            node_name: "node-1".into(),
            ..KubernetesSettings::default()
        };
        let stats = Arc::new(K8sStats::default());
        let watcher = PodWatcher::new(
            settings.api_server(|_| None).unwrap(),
            &settings,
            TagEncoder::new(client.clone(), &[]),
            Arc::clone(&stats),
        )
        .unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watcher.run(cancel.clone()));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while stats.lists.load(Ordering::Relaxed) < 2 || *api.watches.lock().unwrap() < 3 {
            assert!(std::time::Instant::now() < deadline, "no relist: {stats:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
        assert_eq!(stats.watch_events.load(Ordering::Relaxed), 5);

        // the pod: two versions, the label change the second
        let key = client
            .lookup(TagKind::K8S_POD, "shop/cart-7d9f8b6c5-x2x4z")
            .unwrap();
        let history = client.resource_history(TagKind::K8S_POD, key).unwrap();
        assert_eq!(history.len(), 2, "{history:?}");
        let attrs = |i: usize| decode_attrs(&client, &history[i].attrs);
        assert_eq!(
            attrs(0),
            BTreeMap::from([
                ("pod".to_string(), "cart-7d9f8b6c5-x2x4z".to_string()),
                ("pod_ns".into(), "shop".into()),
                ("pod_node".into(), "node-1".into()),
                ("pod_group".into(), "cart".into()),
                ("pod_group_type".into(), "Deployment".into()),
                (
                    "series".into(),
                    r#"app="cart",pod-template-hash="7d9f8b6c5",tier="web""#.into()
                ),
            ])
        );
        assert_eq!(
            attrs(1)["series"],
            r#"app="cart",pod-template-hash="7d9f8b6c5",tier="backend""#
        );
        // containers lead to their pods; the deleted pod keeps its last version
        for (hex, pod_key) in [
            (HEX_A, "shop/cart-7d9f8b6c5-x2x4z"),
            (HEX_B, "shop/db-0"),
            (HEX_C, "shop/lone"),
        ] {
            let container = client.lookup(TagKind::CONTAINER_ID, hex).unwrap();
            let at = client
                .resource_at(TagKind::CONTAINER_ID, container, i64::MAX)
                .unwrap();
            assert_eq!(
                client
                    .decode(TagKind::K8S_POD, at[&TagKind::K8S_POD])
                    .unwrap(),
                pod_key
            );
        }
        let db = client.lookup(TagKind::K8S_POD, "shop/db-0").unwrap();
        let db = client.resource_at(TagKind::K8S_POD, db, i64::MAX).unwrap();
        assert_eq!(
            client
                .decode(TagKind::SERIES, db[&TagKind::SERIES])
                .unwrap(),
            r#"app="db""#
        );

        // every request: the node's pods only, with the token; watches resume where the
        // list or the bookmark left off
        let requests = api.requests.lock().unwrap().clone();
        let described: Vec<&str> = requests.iter().map(|r| r.0.as_str()).collect();
        assert!(
            described
                .iter()
                .all(|d| d.contains("fieldSelector=spec.nodeName=node-1")),
            "{described:?}"
        );
        assert!(
            requests
                .iter()
                .all(|r| r.1["authorization"] == "Bearer secret-token")
        );
        assert!(described[0].contains("limit=500") && !described[0].contains("continue"));
        assert!(described[1].contains("continue=p2"));
        assert!(described[2].contains("resourceVersion=100") && described[2].contains("watch=1"));
        assert!(
            described[3].contains("resourceVersion=104"),
            "{described:?}"
        );
        assert!(
            !described[4].contains("watch"),
            "a relist after 410: {described:?}"
        );
        dictionary.shutdown().await;
    }

    #[tokio::test]
    async fn failures_are_counted_and_retried() {
        // nothing listens on this port: a connection error, counted, then a retry
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let dictionary = single_node(dir.path()).await;
        let settings = KubernetesSettings {
            api_server: format!("http://127.0.0.1:{port}"),
            ..KubernetesSettings::default()
        };
        let stats = Arc::new(K8sStats::default());
        let watcher = PodWatcher::new(
            settings.api_server.clone(),
            &settings,
            TagEncoder::new(dictionary.client(), &[]),
            Arc::clone(&stats),
        )
        .unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watcher.run(cancel.clone()));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stats.errors.load(Ordering::Relaxed) < 2 {
            assert!(std::time::Instant::now() < deadline, "{stats:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cancel.cancel();
        task.await.unwrap();
        assert!(stats.lists.load(Ordering::Relaxed) >= 2);
        dictionary.shutdown().await;
    }

    #[test]
    fn in_cluster_address_comes_from_the_environment() {
        let settings = KubernetesSettings::default();
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|v| v.0 == name).map(|v| v.1.to_string())
        };
        assert_eq!(settings.api_server(env(&[])), None);
        assert_eq!(
            settings.api_server(env(&[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("KUBERNETES_SERVICE_PORT", "6443")
            ])),
            Some("https://10.96.0.1:6443".into())
        );
        assert_eq!(
            settings.api_server(env(&[("KUBERNETES_SERVICE_HOST", "fd00::1")])),
            Some("https://[fd00::1]:443".into())
        );
        let off = KubernetesSettings {
            enabled: false,
            api_server: "http://x".into(),
            ..settings
        };
        assert_eq!(off.api_server(env(&[])), None);
    }
}
