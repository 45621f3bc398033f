//! Queries over the mesh (DESIGN.md §6, docs/decisions/0005).
//!
//! [`MeshQuery`] answers a statement for a scope: `node` runs it here; `cluster`, `region`
//! and `global` split it into fragments (query-planner `distributed`) and run each on the
//! nodes of the scope that the membership directory (flowmesh-federation) lists. Nodes of
//! this node's region are asked directly, each for its own shard; every other region is
//! asked through one of its nodes, which merges its region's partials first, so only
//! partials cross a region boundary.
//!
//! Peer requests are Arrow Flight `DoGet`s on the peer port (the dictionary's listener),
//! authenticated by the cluster token: the ticket names the SQL and the scope, the stream
//! carries the batches and ends with a message whose app metadata lists the nodes that did
//! not answer. A node that does not answer within the timeout makes the answer partial,
//! naming it; `strict` turns that into an error.

use std::{
    collections::BTreeMap,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
    decode::{DecodedPayload, FlightDataDecoder},
    encode::FlightDataEncoderBuilder,
    error::FlightError,
    flight_service_client::FlightServiceClient,
    flight_service_server::{FlightService, FlightServiceServer},
};
use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use flowmesh_federation::{Mesh, NodeRecord};
use flowmesh_query_planner::{
    QueryEngine, QueryError, QueryOutput,
    distributed::{Fragment, FragmentRunner},
};
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status, Streaming, metadata::MetadataValue};

use crate::server::on_query_runtime;

/// The gRPC metadata key of the cluster token (the dictionary's peer header, same value).
pub const TOKEN_METADATA: &str = "x-flowmesh-cluster-token";

/// Largest peer answer accepted, in bytes (partials are small; raw rows are bounded by the
/// query's own limits).
const MAX_PEER_MESSAGE_BYTES: usize = 256 << 20;

/// Which nodes a query reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// This node's shard only.
    Node,
    /// The nodes of this node's cluster.
    Cluster,
    /// The nodes of a region: `None` is this node's, unless the query's filters name
    /// regions (`WHERE region = 'eu'`), which then choose.
    Region(Option<String>),
    /// Every node.
    Global,
}

impl Scope {
    /// `node`, `cluster`, `region`, `region:<name>` or `global`.
    pub fn parse(s: &str) -> Result<Self, QueryError> {
        match s {
            "node" => Ok(Self::Node),
            "cluster" => Ok(Self::Cluster),
            "region" => Ok(Self::Region(None)),
            "global" => Ok(Self::Global),
            other => match other.strip_prefix("region:") {
                Some(r) if !r.is_empty() => Ok(Self::Region(Some(r.to_string()))),
                _ => Err(QueryError::Invalid(format!(
                    "unknown scope {other:?}: use node, cluster, region, region:<name> or global"
                ))),
            },
        }
    }
}

/// What a request's leading `SET flowmesh.scope = '…';` / `SET flowmesh.strict = true;`
/// statements chose for the one statement after them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StatementSettings {
    pub scope: Option<Scope>,
    pub strict: Option<bool>,
}

impl StatementSettings {
    /// The scope and strictness a statement runs at: its own settings, else the request's
    /// (`scope` as text, from a parameter or header), else `default` and not strict.
    pub fn resolve(
        self,
        scope: Option<&str>,
        strict: Option<bool>,
        default: &Scope,
    ) -> Result<(Scope, bool), QueryError> {
        let scope = match (self.scope, scope) {
            (Some(scope), _) => scope,
            (None, Some(s)) => Scope::parse(s)?,
            (None, None) => default.clone(),
        };
        Ok((scope, self.strict.or(strict).unwrap_or(false)))
    }
}

/// Splits leading flowmesh settings off `sql`: `SET flowmesh.scope = 'global'; SELECT …`
/// (`=` or `TO`, the value quoted or not) sets the scope of that `SELECT` only, as the
/// `scope` parameter or header would. Other settings, or settings with no statement after
/// them, are errors.
pub fn statement_settings(sql: &str) -> Result<(StatementSettings, &str), QueryError> {
    let mut settings = StatementSettings::default();
    let mut rest = sql.trim_start();
    while rest
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("set "))
    {
        // the SET ends at the first `;` outside quotes
        let mut quoted = false;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                if c == '\'' {
                    quoted = !quoted;
                }
                c == ';' && !quoted
            })
            .map(|(i, _)| i)
            .ok_or_else(|| {
                QueryError::Invalid(
                    "SET flowmesh.… applies to the statement after it, in the same request: \
                     `SET flowmesh.scope = 'global'; SELECT …`"
                        .into(),
                )
            })?;
        let body = rest[4..end].trim();
        let (name, value) = body
            .split_once('=')
            .or_else(|| {
                let lower = body.to_ascii_lowercase();
                lower.find(" to ").map(|i| (&body[..i], &body[i + 4..]))
            })
            .ok_or_else(|| QueryError::Invalid(format!("SET {body}: expected SET name = value")))?;
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        let value = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or(value);
        match name.as_str() {
            "flowmesh.scope" => settings.scope = Some(Scope::parse(value)?),
            "flowmesh.strict" => {
                settings.strict = Some(match value.to_ascii_lowercase().as_str() {
                    "true" | "on" => true,
                    "false" | "off" => false,
                    other => {
                        return Err(QueryError::Invalid(format!(
                            "SET flowmesh.strict: {other:?} is not true or false"
                        )));
                    }
                })
            }
            other => {
                return Err(QueryError::Invalid(format!(
                    "SET {other}: the settings are flowmesh.scope and flowmesh.strict"
                )));
            }
        }
        rest = rest[end + 1..].trim_start();
    }
    if rest.is_empty() && settings != StatementSettings::default() {
        return Err(QueryError::Invalid(
            "SET flowmesh.… applies to the statement after it, in the same request: \
             `SET flowmesh.scope = 'global'; SELECT …`"
                .into(),
        ));
    }
    Ok((settings, rest))
}

/// A peer's request: run `sql` for `scope` (`node`: its shard; a region: merged over it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PeerTicket {
    sql: String,
    scope: Scope,
    strict: bool,
    timeout_ms: u64,
}

/// The last message of a peer's answer.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PeerTrailer {
    /// Nodes whose rows are missing from the answer.
    missing: Vec<String>,
    /// Nodes whose rows are in it.
    answered: Vec<String>,
}

/// A query's answer over the mesh.
#[derive(Debug)]
pub struct MeshAnswer {
    pub output: QueryOutput,
    /// Nodes in scope that did not answer: the answer lacks their rows.
    pub missing: Vec<String>,
    /// Nodes whose rows are in the answer.
    pub answered: Vec<String>,
    /// Fragments run on the nodes.
    pub fragments: usize,
}

/// Mesh query counters (`/metrics`).
#[derive(Debug, Default)]
pub struct MeshQueryStats {
    /// Queries that read more than this node.
    pub queries: AtomicU64,
    /// Queries answered partially (some node missing).
    pub partial_queries: AtomicU64,
    /// Fragments sent to peers.
    pub fragments_sent: AtomicU64,
    /// Fragment requests that failed or timed out.
    pub fragment_failures: AtomicU64,
    /// Fragment requests this node served for peers.
    pub fragments_served: AtomicU64,
    /// Peer requests refused for a missing or wrong cluster token.
    pub unauthenticated: AtomicU64,
    /// Bytes of Arrow data received from nodes of other regions.
    pub cross_region_bytes: AtomicU64,
    /// Bytes of Arrow data received from nodes of this region.
    pub in_region_bytes: AtomicU64,
}

/// Answers statements for a scope, here or over the mesh.
pub struct MeshQuery {
    engine: Arc<QueryEngine>,
    runtime: tokio::runtime::Handle,
    mesh: Option<Mesh>,
    name: String,
    region: String,
    cluster: String,
    token: String,
    timeout: Duration,
    channels: Mutex<BTreeMap<String, tonic::transport::Channel>>,
    /// Mutual TLS to other nodes' peer ports, when the node has peer certificates.
    tls: Option<tonic::transport::ClientTlsConfig>,
    pub stats: Arc<MeshQueryStats>,
}

impl std::fmt::Debug for MeshQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshQuery")
            .field("name", &self.name)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Where a node is and how to reach it.
#[derive(Debug, Clone)]
struct Target {
    name: String,
    peer_id: String,
    region: String,
    query_addr: String,
    alive: bool,
}

impl MeshQuery {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: Arc<QueryEngine>,
        runtime: tokio::runtime::Handle,
        mesh: Option<Mesh>,
        name: String,
        region: String,
        cluster: String,
        token: String,
        timeout: Duration,
        tls: Option<&flowmesh_consensus::tls::PeerTls>,
        stats: Arc<MeshQueryStats>,
    ) -> Self {
        let tls = tls.map(|t| {
            let (cert, key) = t.identity_pem();
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(t.ca_pem()))
                .identity(tonic::transport::Identity::from_pem(cert, key))
        });
        Self {
            engine,
            runtime,
            mesh,
            name,
            region,
            cluster,
            token,
            timeout,
            channels: Mutex::new(BTreeMap::new()),
            tls,
            stats,
        }
    }

    /// Runs `sql` over the nodes of `scope` (on the query runtime).
    pub async fn sql(
        self: &Arc<Self>,
        sql: &str,
        scope: Scope,
        strict: bool,
    ) -> Result<MeshAnswer, QueryError> {
        let this = Arc::clone(self);
        let sql = sql.to_string();
        on_query_runtime(&self.runtime, async move {
            this.answer(&sql, scope, strict, this.timeout).await
        })
        .await
    }

    async fn answer(
        self: &Arc<Self>,
        sql: &str,
        scope: Scope,
        strict: bool,
        timeout: Duration,
    ) -> Result<MeshAnswer, QueryError> {
        if scope == Scope::Node || self.mesh.is_none() {
            let output = self.engine.sql(sql).await?;
            return Ok(MeshAnswer {
                output,
                missing: Vec::new(),
                answered: vec![self.name.clone()],
                fragments: 0,
            });
        }
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        let runner = Arc::new(MeshRunner {
            query: Arc::clone(self),
            scope,
            strict,
            timeout,
            missing: Mutex::new(Vec::new()),
            answered: Mutex::new(Vec::new()),
        });
        let (output, fragments) = self
            .engine
            .sql_distributed(sql, Arc::clone(&runner) as Arc<dyn FragmentRunner>)
            .await?;
        let mut missing = std::mem::take(&mut *runner.missing.lock());
        let mut answered = std::mem::take(&mut *runner.answered.lock());
        missing.sort();
        missing.dedup();
        answered.sort();
        answered.dedup();
        if fragments.is_empty() {
            answered = vec![self.name.clone()];
        }
        if !missing.is_empty() {
            self.stats.partial_queries.fetch_add(1, Ordering::Relaxed);
        }
        Ok(MeshAnswer {
            output,
            missing,
            answered,
            fragments: fragments.len(),
        })
    }

    /// The nodes of `scope` that can hold rows of `fragment`, this node included.
    fn targets(&self, scope: &Scope, fragment: &Fragment) -> Vec<Target> {
        let Some(mesh) = &self.mesh else {
            return Vec::new();
        };
        let me = mesh.peer_id();
        let regions: Option<Vec<String>> = match scope {
            Scope::Node => Some(vec![self.region.clone()]),
            Scope::Cluster => Some(vec![self.region.clone()]),
            Scope::Region(Some(r)) => Some(vec![r.clone()]),
            Scope::Region(None) => fragment
                .regions
                .clone()
                .or_else(|| Some(vec![self.region.clone()])),
            Scope::Global => fragment.regions.clone(),
        };
        let allowed = |record: &NodeRecord| {
            regions.as_ref().is_none_or(|r| r.contains(&record.region))
                && fragment
                    .regions
                    .as_ref()
                    .is_none_or(|r| r.contains(&record.region))
                && fragment
                    .clusters
                    .as_ref()
                    .is_none_or(|c| c.contains(&record.cluster))
                && (*scope != Scope::Cluster
                    || (record.region == self.region && record.cluster == self.cluster))
        };
        let mut out: Vec<Target> = mesh
            .directory()
            .into_iter()
            .filter(|p| allowed(&p.record))
            .map(|p| Target {
                alive: p.alive || p.record.peer_id == me,
                name: p.record.name.clone(),
                peer_id: p.record.peer_id.clone(),
                region: p.record.region.clone(),
                query_addr: p.record.query_addr.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        out
    }

    /// Asks one node for `sql` at `scope`; `None` for this node.
    async fn ask(
        &self,
        target: &Target,
        sql: &str,
        scope: Scope,
        strict: bool,
        timeout: Duration,
    ) -> Result<(Vec<RecordBatch>, PeerTrailer), QueryError> {
        let is_me = self
            .mesh
            .as_ref()
            .is_some_and(|m| m.peer_id() == target.peer_id);
        if is_me && scope == Scope::Node {
            let out = self.engine.sql(sql).await?;
            return Ok((
                out.batches,
                PeerTrailer {
                    missing: Vec::new(),
                    answered: vec![self.name.clone()],
                },
            ));
        }
        self.stats.fragments_sent.fetch_add(1, Ordering::Relaxed);
        let ticket = PeerTicket {
            sql: sql.to_string(),
            scope,
            strict,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let cross_region = target.region != self.region;
        let call = self.fetch(&target.query_addr, &ticket, cross_region);
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(QueryError::Unavailable(format!(
                "node {} did not answer within {} ms",
                target.name,
                timeout.as_millis()
            ))),
        }
    }

    fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, QueryError> {
        if let Some(c) = self.channels.lock().get(addr) {
            return Ok(c.clone());
        }
        let bad = |e: &dyn std::fmt::Display| {
            QueryError::Internal(format!("bad peer address {addr}: {e}"))
        };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| bad(&e))?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| bad(&e))?;
        }
        let channel = endpoint.connect_lazy();
        self.channels
            .lock()
            .insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    async fn fetch(
        &self,
        addr: &str,
        ticket: &PeerTicket,
        cross_region: bool,
    ) -> Result<(Vec<RecordBatch>, PeerTrailer), QueryError> {
        let unavailable =
            |e: &dyn std::fmt::Display| QueryError::Unavailable(format!("node at {addr}: {e}"));
        let mut client = FlightServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES);
        let body = serde_json::to_vec(ticket)
            .map_err(|e| QueryError::Internal(format!("peer ticket: {e}")))?;
        let mut request = Request::new(Ticket {
            ticket: body.into(),
        });
        let token = MetadataValue::try_from(self.token.as_str())
            .map_err(|_| QueryError::Internal("the cluster token is not ASCII".into()))?;
        request.metadata_mut().insert(TOKEN_METADATA, token);
        let stream = match client.do_get(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => return Err(status_error(addr, &status)),
        };
        let stats = Arc::clone(&self.stats);
        // the trailer (no IPC header, only app metadata) is taken out before decoding
        let trailer_slot: Arc<Mutex<Option<bytes::Bytes>>> = Arc::default();
        let slot = Arc::clone(&trailer_slot);
        let data = stream.try_filter_map(move |d: FlightData| {
            let bytes = if cross_region {
                &stats.cross_region_bytes
            } else {
                &stats.in_region_bytes
            };
            bytes.fetch_add(
                (d.data_body.len() + d.data_header.len() + d.app_metadata.len()) as u64,
                Ordering::Relaxed,
            );
            let out = if d.data_header.is_empty() && !d.app_metadata.is_empty() {
                *slot.lock() = Some(d.app_metadata);
                None
            } else {
                Some(d)
            };
            futures::future::ready(Ok(out))
        });
        let mut decoder = FlightDataDecoder::new(data.map_err(|s| FlightError::Tonic(Box::new(s))));
        let mut batches = Vec::new();
        while let Some(message) = decoder.next().await {
            let message = message.map_err(|e| match e {
                FlightError::Tonic(status) => status_error(addr, &status),
                other => unavailable(&other),
            })?;
            if let DecodedPayload::RecordBatch(b) = message.payload {
                batches.push(b);
            }
        }
        let trailer = trailer_slot
            .lock()
            .take()
            .map(|t| {
                serde_json::from_slice::<PeerTrailer>(&t)
                    .map_err(|e| unavailable(&format!("bad trailer: {e}")))
            })
            .transpose()?;
        // an answer without its trailer was cut short
        let trailer = trailer.ok_or_else(|| unavailable(&"the answer ended early"))?;
        Ok((batches, trailer))
    }
}

/// A query error as the gRPC status a peer reads back with [`status_error`].
fn query_status(e: QueryError) -> Status {
    let message = e.to_string();
    match e {
        QueryError::Invalid(_) => Status::invalid_argument(message),
        QueryError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        QueryError::Unavailable(_) => Status::unavailable(message),
        QueryError::Internal(_) => Status::internal(message),
    }
}

/// A peer's gRPC status as a query error of the same class.
fn status_error(addr: &str, status: &Status) -> QueryError {
    let message = format!("node at {addr}: {}", status.message());
    match status.code() {
        tonic::Code::InvalidArgument => QueryError::Invalid(message),
        tonic::Code::ResourceExhausted => QueryError::ResourcesExhausted(message),
        tonic::Code::Internal => QueryError::Internal(message),
        _ => QueryError::Unavailable(message),
    }
}

/// Runs one query's fragments on the nodes of its scope, noting who answered.
struct MeshRunner {
    query: Arc<MeshQuery>,
    scope: Scope,
    strict: bool,
    timeout: Duration,
    missing: Mutex<Vec<String>>,
    answered: Mutex<Vec<String>>,
}

impl std::fmt::Debug for MeshRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshRunner")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl FragmentRunner for MeshRunner {
    async fn run(&self, fragment: &Fragment) -> Result<Vec<RecordBatch>, QueryError> {
        let q = &self.query;
        let targets = q.targets(&self.scope, fragment);
        // this region's nodes (or the asked region's, at its merger) one by one; every other
        // region through one of its nodes
        let home = match &self.scope {
            Scope::Region(Some(r)) => r.clone(),
            _ => q.region.clone(),
        };
        let mut by_region: BTreeMap<String, Vec<Target>> = BTreeMap::new();
        for t in targets {
            by_region.entry(t.region.clone()).or_default().push(t);
        }
        let mut calls = Vec::new();
        let mut missing = Vec::new();
        for (region, nodes) in by_region {
            if region == home {
                for t in nodes {
                    if t.alive {
                        calls.push((vec![t.clone()], Scope::Node, vec![t.name.clone()]));
                    } else {
                        missing.push(t.name.clone());
                    }
                }
            } else {
                let everyone: Vec<String> = nodes.iter().map(|t| t.name.clone()).collect();
                let mergers: Vec<Target> = nodes.into_iter().filter(|t| t.alive).collect();
                if mergers.is_empty() {
                    missing.extend(everyone);
                } else {
                    calls.push((mergers, Scope::Region(Some(region)), everyone));
                }
            }
        }
        let deadline = self.timeout;
        let results = futures::future::join_all(calls.into_iter().map(
            |(candidates, scope, covers)| async move {
                // a region's merger that fails is replaced by the next of its region's nodes
                let mut last_error = QueryError::Unavailable("no node to ask".into());
                for t in &candidates {
                    // never strict downstream: a merger answers what its region has and
                    // names who is missing, and strictness is judged here on those names
                    // (a strict merger's error would hide which of its nodes failed)
                    match q
                        .ask(t, &fragment.sql, scope.clone(), false, deadline)
                        .await
                    {
                        Ok(answer) => return Ok(answer),
                        // bad SQL fails everywhere alike: no point asking another node
                        Err(e) if e.is_client_error() => return Err((covers, e)),
                        Err(e) => {
                            q.stats.fragment_failures.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(node = %t.name, error = %e, "fragment failed");
                            last_error = e;
                        }
                    }
                }
                Err((covers, last_error))
            },
        ))
        .await;
        let mut batches = Vec::new();
        let mut answered = Vec::new();
        for result in results {
            match result {
                Ok((b, trailer)) => {
                    batches.extend(b);
                    missing.extend(trailer.missing);
                    answered.extend(trailer.answered);
                }
                Err((_, e)) if e.is_client_error() => return Err(e),
                Err((covers, _)) => missing.extend(covers),
            }
        }
        if self.strict && !missing.is_empty() {
            missing.sort();
            missing.dedup();
            return Err(QueryError::Unavailable(format!(
                "nodes did not answer (strict): {}",
                missing.join(", ")
            )));
        }
        self.missing.lock().extend(missing);
        self.answered.lock().extend(answered);
        Ok(batches)
    }
}

/// Joins the mesh: publishes this node's record (its query address is the peer port) and
/// keeps its tables' time ranges and load current in it.
pub async fn start_membership(
    config: &crate::config::NodeConfig,
    tags: &crate::tables::NodeTags,
    peer_addr: std::net::SocketAddr,
    http_addr: std::net::SocketAddr,
    shard: Arc<flowmesh_storage::Shard>,
    tasks: &tokio_util::task::TaskTracker,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<Mesh, crate::error::NodeError> {
    let mut mesh_config = config.mesh.clone();
    // one secret for the mesh: the consensus token keys libp2p's private network too
    if mesh_config.cluster_token.is_empty() {
        mesh_config.cluster_token = config.consensus.cluster_token.clone();
    }
    let key_path = if mesh_config.key_file.is_empty() {
        config.storage.data_dir.join("mesh").join("node.key")
    } else {
        std::path::PathBuf::from(&mesh_config.key_file)
    };
    // the address peers reach the peer port at: the configured one, else the bound one
    let query_addr = if config.consensus.advertise.is_empty() {
        peer_addr.to_string()
    } else {
        config.consensus.advertise.clone()
    };
    let record = NodeRecord {
        name: tags.node.to_string(),
        region: tags.region.to_string(),
        cluster: tags.cluster.to_string(),
        query_addr,
        http_addr: http_addr.to_string(),
        tables: table_ranges(&shard),
        load: load_average(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..NodeRecord::default()
    };
    let mesh = Mesh::start(&mesh_config, &key_path, record).await?;
    let updater = mesh.clone();
    let every = mesh_config.publish_interval;
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let tables = table_ranges(&shard);
            let load = load_average();
            updater.update_record(|r| {
                r.tables = tables;
                r.load = load;
            });
        }
    });
    Ok(mesh)
}

/// Each table's rows and time range on this node (buffers and segments).
fn table_ranges(shard: &flowmesh_storage::Shard) -> Vec<flowmesh_federation::TableRange> {
    use datafusion::arrow::{array::AsArray, datatypes::TimestampMicrosecondType};
    let mut out = Vec::new();
    for def in shard.tables() {
        let snapshot = shard.snapshot(&def.name);
        let mut rows = 0u64;
        let (mut min, mut max) = (i64::MAX, i64::MIN);
        for s in &snapshot.segments {
            rows += s.rows;
            min = min.min(s.min_time_us);
            max = max.max(s.max_time_us);
        }
        for b in &snapshot.buffered {
            rows += b.num_rows() as u64;
            if let Some(t) = b
                .column_by_name("time")
                .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            {
                if let Some(v) = datafusion::arrow::compute::min(t) {
                    min = min.min(v);
                }
                if let Some(v) = datafusion::arrow::compute::max(t) {
                    max = max.max(v);
                }
            }
        }
        if rows > 0 {
            out.push(flowmesh_federation::TableRange {
                table: def.name.clone(),
                min_time_ns: min.saturating_mul(1000),
                max_time_ns: max.saturating_mul(1000),
                rows,
            });
        }
    }
    out
}

/// The one-minute load average, or 0 where it cannot be read.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// `/v1/status`'s `mesh` object: this node's peer id and every node it knows.
pub fn status_json(mesh: Option<&Mesh>) -> serde_json::Value {
    let Some(mesh) = mesh else {
        return serde_json::json!({ "enabled": false });
    };
    let stats = mesh.stats();
    let nodes: Vec<serde_json::Value> = mesh
        .directory()
        .into_iter()
        .map(|p| {
            serde_json::json!({
                "peer_id": p.record.peer_id,
                "name": p.record.name,
                "region": p.record.region,
                "cluster": p.record.cluster,
                "query_addr": p.record.query_addr,
                "http_addr": p.record.http_addr,
                "alive": p.alive,
                "connected": p.connected,
                "last_seen_ms_ago": p.last_seen_ms_ago,
                "load": p.record.load,
                "version": p.record.version,
                "tables": p.record.tables,
            })
        })
        .collect();
    serde_json::json!({
        "enabled": true,
        "peer_id": mesh.peer_id(),
        "listen": mesh.listen_addrs(),
        "nodes": nodes,
        "stats": stats,
    })
}

/// A boxed gRPC response stream.
type PeerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The peer Flight service: fragments from other nodes.
#[derive(Clone)]
pub struct PeerFlight {
    query: Arc<OnceLock<Arc<MeshQuery>>>,
    token: String,
    stats: Arc<MeshQueryStats>,
}

impl PeerFlight {
    /// A service that answers once `query` is set (before, peers get UNAVAILABLE).
    pub fn new(
        query: Arc<OnceLock<Arc<MeshQuery>>>,
        token: String,
        stats: Arc<MeshQueryStats>,
    ) -> Self {
        Self {
            query,
            token,
            stats,
        }
    }

    /// The routes to serve on the peer port.
    pub fn routes(self) -> axum::Router {
        tonic::service::Routes::new(
            FlightServiceServer::new(self)
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
        )
        .into_axum_router()
    }

    #[allow(clippy::result_large_err)]
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get(TOKEN_METADATA)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if self.token.is_empty() || !crate::flight_sql::same_secret(presented, &self.token) {
            self.stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
            return Err(Status::unauthenticated(
                "peer request without the cluster token",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl FlightService for PeerFlight {
    type HandshakeStream = PeerStream<HandshakeResponse>;
    type ListFlightsStream = PeerStream<FlightInfo>;
    type DoGetStream = PeerStream<FlightData>;
    type DoPutStream = PeerStream<PutResult>;
    type DoActionStream = PeerStream<arrow_flight::Result>;
    type ListActionsStream = PeerStream<ActionType>;
    type DoExchangeStream = PeerStream<FlightData>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.authorize(&request)?;
        let Some(query) = self.query.get().cloned() else {
            return Err(Status::unavailable("the node is starting"));
        };
        let ticket: PeerTicket = serde_json::from_slice(&request.get_ref().ticket)
            .map_err(|e| Status::invalid_argument(format!("bad peer ticket: {e}")))?;
        if matches!(
            ticket.scope,
            Scope::Global | Scope::Cluster | Scope::Region(None)
        ) {
            return Err(Status::invalid_argument(
                "a peer asks for a node or a named region",
            ));
        }
        self.stats.fragments_served.fetch_add(1, Ordering::Relaxed);
        // a merger leaves itself a little less time than its caller gave it
        let timeout = Duration::from_millis(ticket.timeout_ms.saturating_mul(9) / 10);
        let q = Arc::clone(&query);
        let answer = on_query_runtime(&query.runtime, async move {
            q.answer(&ticket.sql, ticket.scope, ticket.strict, timeout)
                .await
        })
        .await
        .map_err(query_status)?;
        let trailer = serde_json::to_vec(&PeerTrailer {
            missing: answer.missing,
            answered: answer.answered,
        })
        .map_err(|e| Status::internal(e.to_string()))?;
        let data = FlightDataEncoderBuilder::new()
            .with_schema(Arc::clone(&answer.output.schema))
            .build(futures::stream::iter(
                answer.output.batches.into_iter().map(Ok),
            ))
            .map_err(Status::from);
        let end =
            futures::stream::once(async move { Ok(FlightData::new().with_app_metadata(trailer)) });
        Ok(Response::new(Box::pin(data.chain(end))))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("peers need no handshake"))
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("list_flights"))
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("get_flight_info"))
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info"))
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("get_schema"))
    }
    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("do_put"))
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("do_action"))
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("list_actions"))
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_unknown_ones_are_client_errors() {
        assert_eq!(Scope::parse("node").unwrap(), Scope::Node);
        assert_eq!(Scope::parse("global").unwrap(), Scope::Global);
        assert_eq!(Scope::parse("region").unwrap(), Scope::Region(None));
        assert_eq!(
            Scope::parse("region:eu").unwrap(),
            Scope::Region(Some("eu".into()))
        );
        for bad in ["", "world", "region:"] {
            assert!(Scope::parse(bad).unwrap_err().is_client_error(), "{bad}");
        }
    }

    #[test]
    fn leading_settings_choose_the_scope_of_the_statement_after_them() {
        let (s, sql) = statement_settings("SELECT 1").unwrap();
        assert_eq!((s, sql), (StatementSettings::default(), "SELECT 1"));
        // text that is not a SET, multi-byte at the start included, passes through whole
        for other in ["é€ SELECT 1", "sé", "se", "SETTINGS", ""] {
            assert_eq!(statement_settings(other).unwrap().1, other.trim_start());
        }
        let (s, sql) =
            statement_settings("  set flowmesh.scope = 'global';\nSELECT ';' AS x").unwrap();
        assert_eq!(s.scope, Some(Scope::Global));
        assert_eq!(s.strict, None);
        assert_eq!(sql, "SELECT ';' AS x");
        let (s, sql) = statement_settings(
            "SET flowmesh.scope TO region:eu; SET FLOWMESH.STRICT = on; SELECT 2",
        )
        .unwrap();
        assert_eq!(s.scope, Some(Scope::Region(Some("eu".into()))));
        assert_eq!(s.strict, Some(true));
        assert_eq!(sql, "SELECT 2");
        // no input panics: every string of up to five of these pieces
        let pieces = [
            "set ",
            "SET ",
            "flowmesh.scope",
            "flowmesh.strict",
            "=",
            " to ",
            "'",
            ";",
            "é",
            "€",
            "global",
            "true",
            " ",
        ];
        let mut texts = vec![String::new()];
        for _ in 0..5 {
            texts = texts
                .iter()
                .flat_map(|t| pieces.iter().map(move |p| format!("{t}{p}")))
                .collect();
            for t in &texts {
                let _ = statement_settings(t);
            }
        }
        for (bad, says) in [
            ("SET flowmesh.scope = 'global'", "statement after it"),
            ("SET flowmesh.scope = 'global';", "statement after it"),
            (
                "SET datafusion.x = 1; SELECT 1",
                "flowmesh.scope and flowmesh.strict",
            ),
            ("SET flowmesh.scope = 'world'; SELECT 1", "unknown scope"),
            ("SET flowmesh.strict = maybe; SELECT 1", "not true or false"),
            ("SET flowmesh.scope; SELECT 1", "expected SET name = value"),
        ] {
            let e = statement_settings(bad).unwrap_err();
            assert!(e.is_client_error(), "{bad}");
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }
}
