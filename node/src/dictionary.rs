//! SmartEncoding in the node (DESIGN.md §5): the node's replica of its region's tag
//! dictionary, the encoder the storage writer runs every batch through (tag strings → u32
//! ids, new strings interned through Raft in one batch per column), and the read-only view
//! the query engine decodes with.

use std::{collections::HashMap, sync::Arc, time::Duration};

use datafusion::arrow::{
    array::{Array, ArrayRef, AsArray, DictionaryArray, StringArray, UInt32Array},
    datatypes::{
        ArrowDictionaryKeyType, ArrowNativeType, DataType, Field, Int8Type, Int16Type, Int32Type,
        Int64Type, Schema, SchemaRef, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
    },
    record_batch::RecordBatch,
};
use flowmesh_consensus::{
    ConsensusConfig, ConsensusError, DictionaryClient, DictionaryId, DictionaryNode, NodeRole,
    ResourceVersion, TagKind,
};
use flowmesh_query_planner::tags::{TagDictionary, tag_kind};
use flowmesh_storage::TableDef;

use crate::tables::{self, snapshot::SnapshotTable};

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
        Self::start_with_routes(config, ready_within, axum::Router::new()).await
    }

    /// [`Dictionary::start`], also serving `routes` on the peer port (the peer Flight
    /// service of [`crate::mesh`]).
    pub async fn start_with_routes(
        config: ConsensusConfig,
        ready_within: Duration,
        routes: axum::Router,
    ) -> Result<Self, ConsensusError> {
        let node = DictionaryNode::start_with_routes(config, routes).await?;
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

    /// The peer port's TLS, when configured (query fragments to other nodes use it too).
    pub fn peer_tls(&self) -> Option<&flowmesh_consensus::tls::PeerTls> {
        self.node.peer_tls()
    }

    /// Where the peer port listens (Raft, forwarded interns, query fragments).
    pub fn peer_addr(&self) -> std::net::SocketAddr {
        self.node.local_addr()
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

    /// `batch` (tags as strings, or dictionaries of strings) in its table's stored schema
    /// (tags as ids). Strings the dictionary lacks are interned, one proposal per column at
    /// most (per 4096 new strings).
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
            let encoded = self
                .encode_any(table, schema.field(i).name(), *kind, column)
                .await?;
            columns.push(Arc::new(encoded));
        }
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }

    /// Registers the process resources of a [`tables::process_batch`] (AutoTagging).
    pub async fn register_processes(&self, batch: &RecordBatch) -> Result<(), EncodeError> {
        self.register_resources(TagKind::GPROCESS, &tables::PROCESS_ATTRIBUTES, batch)
            .await
    }

    /// Registers resources of `kind` from a batch whose columns are the resource key
    /// (a string), `valid_from_us` (Int64) and one string column per kind in `attributes`:
    /// each column's strings are interned in one call, then one version per row is
    /// recorded in the dictionary's resource tables (a no-op when that version is already
    /// in force).
    pub async fn register_resources(
        &self,
        kind: TagKind,
        attributes: &[TagKind],
        batch: &RecordBatch,
    ) -> Result<(), EncodeError> {
        let bad_column = |i: usize| EncodeError::NotStrings {
            table: format!("resource.{kind}"),
            column: batch
                .schema()
                .fields()
                .get(i)
                .map_or_else(|| format!("#{i}"), |f| f.name().clone()),
        };
        let strings = |i: usize| {
            batch
                .columns()
                .get(i)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| bad_column(i))
        };
        let keys = self.encode_column(kind, strings(0)?).await?;
        let valid_from = batch
            .columns()
            .get(1)
            .and_then(|c| c.as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>())
            .ok_or_else(|| bad_column(1))?;
        let mut ids = Vec::with_capacity(attributes.len());
        for (offset, attribute) in attributes.iter().enumerate() {
            ids.push((
                *attribute,
                self.encode_column(*attribute, strings(2 + offset)?).await?,
            ));
        }
        for row in 0..batch.num_rows() {
            let version = ResourceVersion {
                kind,
                id: keys.value(row),
                valid_from_us: valid_from.value(row),
                attrs: ids
                    .iter()
                    .map(|(attribute, ids)| (*attribute, ids.value(row)))
                    .collect(),
            };
            self.client.register_resource(version).await?;
        }
        Ok(())
    }

    /// A tag column (strings, or a dictionary of strings) as ids.
    async fn encode_any(
        &self,
        table: &str,
        column: &str,
        kind: TagKind,
        array: &ArrayRef,
    ) -> Result<UInt32Array, EncodeError> {
        let not_strings = || EncodeError::NotStrings {
            table: table.to_string(),
            column: column.to_string(),
        };
        if let Some(strings) = array.as_string_opt::<i32>() {
            return self.encode_column(kind, strings).await;
        }
        let DataType::Dictionary(key, _) = array.data_type() else {
            return Err(not_strings());
        };
        macro_rules! by_key {
            ($($variant:ident => $key:ty),*) => {
                match key.as_ref() {
                    $(DataType::$variant => {
                        self.encode_dictionary(kind, array.as_dictionary::<$key>())
                            .await?
                            .ok_or_else(not_strings)
                    })*
                    _ => Err(not_strings()),
                }
            };
        }
        by_key!(
            Int8 => Int8Type, Int16 => Int16Type, Int32 => Int32Type, Int64 => Int64Type,
            UInt8 => UInt8Type, UInt16 => UInt16Type, UInt32 => UInt32Type, UInt64 => UInt64Type
        )
    }

    /// Ids for a string column. Each distinct string is hashed once per row and interned
    /// once per batch, in first-seen order.
    async fn encode_column(
        &self,
        kind: TagKind,
        strings: &StringArray,
    ) -> Result<UInt32Array, EncodeError> {
        let mut distinct: hashbrown::HashMap<&str, u32> = hashbrown::HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        let mut slots: Vec<u32> = Vec::with_capacity(strings.len());
        for i in 0..strings.len() {
            if strings.is_null(i) {
                slots.push(0);
                continue;
            }
            let s = strings.value(i);
            let slot = *distinct.entry(s).or_insert_with(|| {
                order.push(s);
                (order.len() - 1) as u32
            });
            slots.push(slot);
        }
        let ids = self.intern_all(kind, &order).await?;
        for slot in slots.iter_mut() {
            // null rows keep slot 0, masked below; an all-null column has no ids
            *slot = ids.get(*slot as usize).copied().unwrap_or(0);
        }
        Ok(UInt32Array::new(slots.into(), strings.nulls().cloned()))
    }

    /// Ids for a dictionary-encoded string column: only the dictionary's values that rows
    /// use are interned, then every key is mapped, with no hashing per row. `None` if the
    /// dictionary's values are not strings.
    async fn encode_dictionary<K: ArrowDictionaryKeyType>(
        &self,
        kind: TagKind,
        dictionary: &DictionaryArray<K>,
    ) -> Result<Option<UInt32Array>, EncodeError> {
        let Some(values) = dictionary.values().as_string_opt::<i32>() else {
            return Ok(None);
        };
        let keys = dictionary.keys();
        let mut used = vec![false; values.len()];
        for key in keys.iter().flatten() {
            if let Some(u) = used.get_mut(key.as_usize()) {
                *u = true;
            }
        }
        let mut order: Vec<&str> = Vec::new();
        let mut first: hashbrown::HashMap<&str, usize> = hashbrown::HashMap::new();
        // per dictionary value: its position in `order`, or None (unused or null)
        let mut slot: Vec<Option<usize>> = vec![None; values.len()];
        for (v, used) in used.iter().enumerate() {
            if *used && values.is_valid(v) {
                let s = values.value(v);
                slot[v] = Some(*first.entry(s).or_insert_with(|| {
                    order.push(s);
                    order.len() - 1
                }));
            }
        }
        let ids = self.intern_all(kind, &order).await?;
        let by_value: Vec<Option<u32>> = slot.iter().map(|s| s.map(|s| ids[s])).collect();
        Ok(Some(
            keys.iter()
                .map(|key| key.and_then(|k| by_value.get(k.as_usize()).copied().flatten()))
                .collect(),
        ))
    }

    /// Ids for `strings` (distinct), interned in chunks the dictionary accepts.
    async fn intern_all(&self, kind: TagKind, strings: &[&str]) -> Result<Vec<u32>, EncodeError> {
        let mut ids: Vec<u32> = Vec::with_capacity(strings.len());
        for chunk in strings.chunks(INTERN_CHUNK) {
            ids.extend(self.client.intern(kind, chunk).await?);
        }
        Ok(ids)
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

/// `system.dictionary`: the node's replica of its region's tag dictionary, one row per
/// (kind, id, value) read at scan time, with `forward_id`, the id the string side of the
/// replica gives the value. A string side entry with no id side has a null `id`. In a
/// sound replica `id = forward_id` on every row; the chaos tests and operators check it
/// (and compare replicas across nodes) with SQL.
pub fn dictionary_table(client: DictionaryClient) -> SnapshotTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("id", DataType::UInt32, true),
        Field::new("value", DataType::Utf8, false),
        Field::new("forward_id", DataType::UInt32, true),
    ]));
    SnapshotTable::new(Arc::clone(&schema), move || {
        replica_batch(&client, Arc::clone(&schema))
    })
}

fn replica_batch(client: &DictionaryClient, schema: SchemaRef) -> Result<RecordBatch, String> {
    let (by_id, by_string) = client.replica_entries().map_err(|e| e.to_string())?;
    let mut forward: HashMap<(TagKind, String), DictionaryId> = by_string
        .into_iter()
        .map(|(kind, value, id)| ((kind, value), id))
        .collect();
    let mut kinds = Vec::new();
    let mut ids = Vec::new();
    let mut values = Vec::new();
    let mut forward_ids = Vec::new();
    for (kind, id, value) in by_id {
        let forward_id = forward.remove(&(kind, value.clone()));
        kinds.push(kind.to_string());
        ids.push(Some(id));
        values.push(value);
        forward_ids.push(forward_id);
    }
    let mut orphans: Vec<_> = forward.into_iter().collect();
    orphans.sort();
    for ((kind, value), id) in orphans {
        kinds.push(kind.to_string());
        ids.push(None);
        values.push(value);
        forward_ids.push(Some(id));
    }
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(kinds)),
            Arc::new(UInt32Array::from(ids)),
            Arc::new(StringArray::from(values)),
            Arc::new(UInt32Array::from(forward_ids)),
        ],
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A one-voter dictionary under `dir`, with its leader elected.
    pub(crate) async fn single_node(dir: &std::path::Path) -> Dictionary {
        let config = ConsensusConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.join("consensus"),
            ..ConsensusConfig::default()
        };
        Dictionary::start(config, Duration::from_secs(10))
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_round_trip_through_ids() {
        let dir = tempfile::tempdir().unwrap();
        let dictionary = single_node(dir.path()).await;
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

    /// A dictionary-encoded column gets the ids its strings get as plain strings: nulls stay
    /// null (a null key or a null value), unused values are not interned, and a value
    /// repeated in the dictionary gets one id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dictionary_columns_encode_like_strings() {
        use datafusion::arrow::datatypes::{Field, Schema};
        let dir = tempfile::tempdir().unwrap();
        let dictionary = single_node(dir.path()).await;
        let field = flowmesh_query_planner::tags::tag_field("endpoint", "endpoint", true);
        let def = TableDef {
            name: "t".into(),
            schema: Arc::new(Schema::new(vec![field])),
            sort_columns: vec![],
        };
        let encoder = TagEncoder::new(dictionary.client(), std::slice::from_ref(&def));
        let batch = |column: ArrayRef| {
            let schema = Schema::new(vec![Field::new(
                "endpoint",
                column.data_type().clone(),
                true,
            )]);
            RecordBatch::try_new(Arc::new(schema), vec![column]).unwrap()
        };
        let rows = [Some("/b"), None, Some("/a"), Some("/b"), None, Some("/a")];
        let plain: ArrayRef = Arc::new(StringArray::from(rows.to_vec()));
        // keys 0..: "/a", "/unused", "/b", null value, "/a" again
        let values = StringArray::from(vec![
            Some("/a"),
            Some("/unused"),
            Some("/b"),
            None,
            Some("/a"),
        ]);
        let keys = datafusion::arrow::array::Int32Array::from(vec![
            Some(2),
            None,
            Some(4),
            Some(2),
            Some(3),
            Some(0),
        ]);
        let dictionary_column: ArrayRef =
            Arc::new(DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values)).unwrap());
        let from_dictionary = encoder
            .encode("t", &batch(dictionary_column))
            .await
            .unwrap();
        let from_strings = encoder.encode("t", &batch(plain)).await.unwrap();
        let ids = from_dictionary.column(0).as_primitive::<UInt32Type>();
        assert_eq!(ids, from_strings.column(0).as_primitive::<UInt32Type>());
        assert_eq!(ids.null_count(), 2);
        assert!(ids.is_null(1) && ids.is_null(4));
        assert_eq!(ids.value(2), ids.value(5));
        assert_ne!(ids.value(0), ids.value(2));
        let q = QueryDictionary(dictionary.client());
        assert_eq!(q.decode("endpoint", ids.value(0)).as_deref(), Some("/b"));
        assert_eq!(q.lookup("endpoint", "/unused"), None);
        // a dictionary of numbers is not a tag column
        let numbers: ArrayRef = Arc::new(
            DictionaryArray::<Int32Type>::try_new(
                datafusion::arrow::array::Int32Array::from(vec![0]),
                Arc::new(UInt32Array::from(vec![7])),
            )
            .unwrap(),
        );
        assert!(matches!(
            encoder.encode("t", &batch(numbers)).await,
            Err(EncodeError::NotStrings { .. })
        ));
        dictionary.shutdown().await;
    }
}
