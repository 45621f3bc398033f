//! SmartEncoding in the node (DESIGN.md §5): the node's replica of its region's tag
//! dictionary, the encoder the storage writer runs every batch through (tag strings → u32
//! ids, new strings interned through Raft in one batch per column), and the read-only view
//! the query engine decodes with.

use std::{collections::HashMap, sync::Arc, time::Duration};

use datafusion::arrow::{
    array::{ArrayRef, AsArray, UInt32Array},
    datatypes::SchemaRef,
    record_batch::RecordBatch,
};
use flowmesh_consensus::{
    ConsensusConfig, ConsensusError, DictionaryClient, DictionaryNode, NodeRole, ResourceVersion,
    TagKind,
};
use flowmesh_query_planner::tags::{TagDictionary, tag_kind};
use flowmesh_storage::TableDef;

use crate::tables;

/// Why a batch could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("table {0} is not stored here")]
    UnknownTable(String),
    #[error("table {table}: column {column} is not a string column")]
    NotStrings { table: String, column: String },
    #[error("dictionary: {0}")]
    Dictionary(#[from] ConsensusError),
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

impl EncodeError {
    /// Worth retrying the same batch later (an election, an unreachable leader).
    pub fn is_retryable(&self) -> bool {
        matches!(self, EncodeError::Dictionary(e) if e.is_retryable())
    }
}

/// The node's dictionary replica.
pub struct Dictionary {
    node: DictionaryNode,
}

impl Dictionary {
    /// Starts the replica and waits (up to `ready_within`) until its group has a leader, so
    /// the first captured batch need not wait for an election.
    pub async fn start(
        config: ConsensusConfig,
        ready_within: Duration,
    ) -> Result<Self, ConsensusError> {
        let node = DictionaryNode::start(config).await?;
        let deadline = tokio::time::Instant::now() + ready_within;
        while node.status().leader.is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if node.status().leader.is_none() {
            tracing::warn!("no dictionary leader yet; writes wait for one");
        }
        Ok(Self { node })
    }

    pub fn client(&self) -> DictionaryClient {
        self.node.client()
    }

    /// Role, leader and counters, for `/v1/status` and `/metrics`.
    pub fn status_json(&self) -> serde_json::Value {
        let status = self.node.status();
        let stats = self.client().stats();
        serde_json::json!({
            "node_id": status.node_id,
            "role": role_name(status.role),
            "leader": status.leader,
            "term": status.term,
            "voters": status.voters,
            "learners": status.learners,
            "last_applied_index": status.last_applied_index,
            "proposals": stats.proposals,
            "proposed_strings": stats.proposed_strings,
            "cache_hits": stats.cache_hits,
            "cache_misses": stats.cache_misses,
        })
    }

    pub async fn shutdown(self) {
        if let Err(e) = self.node.shutdown().await {
            tracing::warn!(error = %e, "dictionary shutdown");
        }
    }
}

pub fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Leader => "leader",
        NodeRole::Follower => "follower",
        NodeRole::Candidate => "candidate",
        NodeRole::Learner => "learner",
        NodeRole::Shutdown => "shutdown",
    }
}

/// Turns batches built with string tags into the stored form of their table.
#[derive(Clone)]
pub struct TagEncoder {
    client: DictionaryClient,
    tables: Arc<HashMap<String, StoredTable>>,
}

/// A table's stored schema and each column's dictionary (if it is a tag).
type StoredTable = (SchemaRef, Vec<Option<TagKind>>);

/// Most strings sent in one intern call (the dictionary refuses more than its limit).
const INTERN_CHUNK: usize = 4096;

impl TagEncoder {
    pub fn new(client: DictionaryClient, defs: &[TableDef]) -> Self {
        let tables = defs
            .iter()
            .map(|d| {
                let kinds = d
                    .schema
                    .fields()
                    .iter()
                    .map(|f| tag_kind(f).and_then(TagKind::from_name))
                    .collect();
                (d.name.clone(), (d.schema.clone(), kinds))
            })
            .collect();
        Self {
            client,
            tables: Arc::new(tables),
        }
    }

    /// `batch` (tags as strings) in its table's stored schema (tags as ids). Strings the
    /// dictionary lacks are interned, one proposal per column at most.
    pub async fn encode(
        &self,
        table: &str,
        batch: &RecordBatch,
    ) -> Result<RecordBatch, EncodeError> {
        let (schema, kinds) = self
            .tables
            .get(table)
            .ok_or_else(|| EncodeError::UnknownTable(table.to_string()))?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(kinds.len());
        for (i, kind) in kinds.iter().enumerate() {
            let column = batch.column(i);
            let Some(kind) = kind else {
                columns.push(Arc::clone(column));
                continue;
            };
            let strings = column
                .as_string_opt::<i32>()
                .ok_or_else(|| EncodeError::NotStrings {
                    table: table.to_string(),
                    column: schema.field(i).name().clone(),
                })?;
            columns.push(Arc::new(self.encode_column(*kind, strings).await?));
        }
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }

    /// Registers the process resources of a [`tables::process_batch`] (AutoTagging): their
    /// attributes are interned, then one version per process is recorded in the
    /// dictionary's resource tables (a no-op when that version is already in force).
    pub async fn register_processes(&self, batch: &RecordBatch) -> Result<(), EncodeError> {
        let strings = |i: usize| {
            batch
                .column(i)
                .as_string_opt::<i32>()
                .ok_or_else(|| EncodeError::NotStrings {
                    table: tables::PROCESS_RESOURCES.to_string(),
                    column: batch.schema().field(i).name().clone(),
                })
        };
        let keys = self.encode_column(TagKind::GPROCESS, strings(0)?).await?;
        let valid_from = batch
            .column(1)
            .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()
            .ok_or_else(|| EncodeError::NotStrings {
                table: tables::PROCESS_RESOURCES.to_string(),
                column: "valid_from_us".into(),
            })?;
        let mut attributes = Vec::with_capacity(tables::PROCESS_ATTRIBUTES.len());
        for (offset, kind) in tables::PROCESS_ATTRIBUTES.iter().enumerate() {
            attributes.push((
                *kind,
                self.encode_column(*kind, strings(2 + offset)?).await?,
            ));
        }
        for row in 0..batch.num_rows() {
            let version = ResourceVersion {
                kind: TagKind::GPROCESS,
                id: keys.value(row),
                valid_from_us: valid_from.value(row),
                attrs: attributes
                    .iter()
                    .map(|(kind, ids)| (*kind, ids.value(row)))
                    .collect(),
            };
            self.client.register_resource(version).await?;
        }
        Ok(())
    }

    async fn encode_column(
        &self,
        kind: TagKind,
        strings: &datafusion::arrow::array::StringArray,
    ) -> Result<UInt32Array, EncodeError> {
        // a batch repeats few distinct tags: intern each once, in first-seen order
        let mut distinct: HashMap<&str, usize> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        for s in strings.iter().flatten() {
            distinct.entry(s).or_insert_with(|| {
                order.push(s);
                order.len() - 1
            });
        }
        let mut ids: Vec<u32> = Vec::with_capacity(order.len());
        for chunk in order.chunks(INTERN_CHUNK) {
            ids.extend(self.client.intern(kind, chunk).await?);
        }
        Ok(strings
            .iter()
            .map(|s| s.map(|s| ids[distinct[s]]))
            .collect::<UInt32Array>())
    }
}

/// What the query engine decodes and looks literals up with: the local replica only.
#[derive(Debug, Clone)]
pub struct QueryDictionary(pub DictionaryClient);

impl TagDictionary for QueryDictionary {
    fn lookup(&self, kind: &str, value: &str) -> Option<u32> {
        self.0.lookup(TagKind::from_name(kind)?, value)
    }
    fn decode(&self, kind: &str, id: u32) -> Option<Arc<str>> {
        self.0.decode(TagKind::from_name(kind)?, id).map(Arc::from)
    }
    fn attribute_versions(&self, resource_kind: &str, id: u32, attribute: &str) -> Vec<(i64, u32)> {
        let (Some(kind), Some(attribute)) = (
            TagKind::from_name(resource_kind),
            TagKind::from_name(attribute),
        ) else {
            return Vec::new();
        };
        match self.0.resource_history(kind, id) {
            Ok(versions) => versions
                .into_iter()
                .map(|v| {
                    (
                        v.valid_from_us,
                        v.attrs.get(&attribute).copied().unwrap_or(0),
                    )
                })
                .collect(),
            Err(error) => {
                tracing::warn!(%error, %kind, id, "resource history read failed");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_round_trip_through_ids() {
        let dir = tempfile::tempdir().unwrap();
        let config = ConsensusConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("consensus"),
            ..ConsensusConfig::default()
        };
        let dictionary = Dictionary::start(config, Duration::from_secs(10))
            .await
            .unwrap();
        let defs = tables::table_defs();
        let encoder = TagEncoder::new(dictionary.client(), &defs);
        let tags = tables::NodeTags {
            region: "eu".into(),
            cluster: "c1".into(),
            node: "host-a".into(),
        };
        let row = |process: &str, endpoint: &str| tables::L7Row {
            l7_protocol: "HTTP",
            response_status: "ok",
            gprocess_1: process.into(),
            endpoint: endpoint.into(),
            ..tables::L7Row::default()
        };
        let batch = tables::l7_flow_log_batch(
            &tags,
            &[
                row("host-a/7/1", "/a"),
                row("host-a/8/1", "/b"),
                row("host-a/7/1", "/a"),
            ],
        )
        .unwrap();
        let stored = encoder.encode(tables::L7_FLOW_LOG, &batch).await.unwrap();
        let schema = stored.schema();
        let column = schema.index_of("endpoint").unwrap();
        assert_eq!(tag_kind(schema.field(column)), Some("endpoint"));
        let ids = stored
            .column(column)
            .as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
        assert_eq!(ids.value(0), ids.value(2));
        assert_ne!(ids.value(0), ids.value(1));
        let process = schema.index_of("gprocess_id_1").unwrap();
        assert_eq!(tag_kind(schema.field(process)), Some("gprocess"));
        // the query side reads the same ids back
        let q = QueryDictionary(dictionary.client());
        assert_eq!(q.lookup("endpoint", "/a"), Some(ids.value(0)));
        assert_eq!(q.decode("endpoint", ids.value(1)).as_deref(), Some("/b"));
        assert_eq!(q.lookup("endpoint", "never-seen"), None);
        // resources: a pod's service as registered through Raft, versioned by time
        let client = dictionary.client();
        let pod = client.intern(TagKind::POD, &["pod-a"]).await.unwrap()[0];
        let services = client
            .intern(TagKind::SERVICE, &["cart", "checkout"])
            .await
            .unwrap();
        for (from, service) in [(100, services[0]), (200, services[1])] {
            let version = flowmesh_consensus::ResourceVersion {
                kind: TagKind::POD,
                id: pod,
                valid_from_us: from,
                attrs: [(TagKind::SERVICE, service)].into_iter().collect(),
            };
            assert!(client.register_resource(version).await.unwrap());
        }
        assert_eq!(
            q.attribute_versions("pod", pod, "service"),
            vec![(100, services[0]), (200, services[1])]
        );
        assert!(q.attribute_versions("pod", pod + 1, "service").is_empty());
        // non-tag columns are untouched; a batch of another shape is refused
        let ip = schema.index_of("ip_0").unwrap();
        assert_eq!(stored.column(ip).data_type(), batch.column(ip).data_type());
        assert!(matches!(
            encoder.encode("flow_log.nope", &batch).await,
            Err(EncodeError::UnknownTable(_))
        ));
        dictionary.shutdown().await;
    }
}
