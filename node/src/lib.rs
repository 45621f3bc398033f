//! flowmesh-node: the `flowmesh` binary's library.
//!
//! A [`Node`] composes the parts of DESIGN.md §3: eBPF capture ([`capture`]) feeding the
//! storage shard ([`flowmesh_storage::Shard`]) through a bounded queue, the SQL engine
//! ([`flowmesh_query_planner::QueryEngine`]) on its own runtime, and the HTTP front end
//! ([`server`]). Lifecycle: [`Node::start`] → running → [`Node::shutdown`], which stops in
//! order: capture → storage writer drains → flush to Parquet → WAL closed → HTTP and Flight SQL → mesh → dictionary.
//!
//! Invariants: rows are acknowledged by the WAL before they count as stored; every queue is
//! bounded and every drop is counted in [`metrics::Metrics`].

pub mod capture;
pub mod cli;
pub mod config;
pub mod dictionary;
pub mod error;
pub mod flight_sql;
pub mod ingest;
pub mod k8s;
pub mod mesh;
pub mod metrics;
pub mod otlp;
pub mod packet;
pub mod prom_api;
pub mod prom_source;
pub mod red;
pub mod server;
pub mod tables;
pub mod tempo;
pub mod trace;

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use flowmesh_query_planner::{QueryConfig, QueryEngine, tags::EncodedTable};
use flowmesh_storage::{Shard, ShardTable};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{error, info, warn};

use crate::{
    capture::{CaptureRunner, CaptureStats, RowBatches},
    config::NodeConfig,
    dictionary::{Dictionary, QueryDictionary, TagEncoder},
    error::NodeError,
    metrics::{HttpStats, Metrics},
    packet::{PacketRunner, PacketStats},
    server::ApiState,
    tables::NodeTags,
};

/// A running node.
pub struct Node {
    http_addr: SocketAddr,
    flight_sql_addr: Option<SocketAddr>,
    shard: Arc<Shard>,
    capture: Option<CaptureRunner>,
    packet: Option<PacketRunner>,
    capture_cancel: CancellationToken,
    background_cancel: CancellationToken,
    http_cancel: CancellationToken,
    writer: Option<tokio::task::JoinHandle<()>>,
    tasks: TaskTracker,
    query_runtime: Option<QueryRuntime>,
    dictionary: Option<Arc<Dictionary>>,
    mesh: Option<flowmesh_federation::Mesh>,
}

impl Node {
    /// Opens storage, starts capture (when enabled), the query engine and the HTTP server.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        let started = Instant::now();
        // Process-wide (the parsers have no per-node state): the first node of a process
        // sets it, as a process runs one node outside tests.
        if !flowmesh_protocols::trace_context::set_request_id_headers(
            &config.capture.request_id_headers,
        ) {
            tracing::debug!("capture.request_id_headers already set in this process");
        }
        let tags = NodeTags {
            region: config.node.region.as_str().into(),
            cluster: config.node.cluster.as_str().into(),
            node: config.node_name().into(),
        };
        let consensus_config = config
            .consensus
            .to_consensus_config(&config.storage.data_dir)?;
        // peers' query fragments arrive on the dictionary's peer port (Arrow Flight); the
        // service answers once the engine below exists
        let mesh_stats = Arc::new(mesh::MeshQueryStats::default());
        let mesh_query_slot: Arc<OnceLock<Arc<mesh::MeshQuery>>> = Arc::default();
        let peer_routes = mesh::PeerFlight::new(
            Arc::clone(&mesh_query_slot),
            config.consensus.cluster_token.clone(),
            Arc::clone(&mesh_stats),
        )
        .routes();
        let dictionary =
            Dictionary::start_with_routes(consensus_config, Duration::from_secs(10), peer_routes)
                .await?;
        let storage_config = config.storage.clone();
        let shard = Arc::new(
            tokio::task::spawn_blocking(move || Shard::open(storage_config, tables::table_defs()))
                .await
                .map_err(|e| NodeError::Io {
                    action: "open storage",
                    source: std::io::Error::other(e),
                })??,
        );
        let capture_stats = Arc::new(CaptureStats::default());
        let packet_stats = Arc::new(PacketStats::default());
        let metrics = Arc::new(Metrics {
            capture: Arc::clone(&capture_stats),
            packet: Arc::clone(&packet_stats),
            http: Arc::new(HttpStats::default()),
            shard: Arc::clone(&shard),
            storage_write_errors: Default::default(),
            dictionary: dictionary.client(),
            encode_retries: Default::default(),
            ingest: Arc::new(ingest::IngestStats::default()),
            flight_sql: Arc::new(flight_sql::FlightSqlStats::default()),
            otlp: Arc::new(otlp::OtlpStats::default()),
            kubernetes: Arc::new(k8s::K8sStats::default()),
            mesh: Arc::clone(&mesh_stats),
        });

        let mut providers: Vec<(String, Arc<dyn datafusion::catalog::TableProvider>)> = shard
            .tables()
            .map(|def| {
                let stored: Arc<dyn datafusion::catalog::TableProvider> =
                    Arc::new(ShardTable::new(Arc::clone(&shard), def.clone()));
                // tags as strings, plus the tags derived from each side's process resource
                let provider: Arc<dyn datafusion::catalog::TableProvider> = Arc::new(
                    EncodedTable::with_derived(stored, tables::derived_tags(&def.name)),
                );
                (def.name.clone(), provider)
            })
            .collect();
        providers.push((
            "system.metrics".into(),
            Arc::new(metrics::metrics_table(Arc::clone(&metrics))),
        ));
        providers.push((
            "system.dictionary".into(),
            Arc::new(dictionary::dictionary_table(dictionary.client())),
        ));
        let engine = Arc::new(
            QueryEngine::new(
                providers,
                &QueryConfig {
                    memory_limit_bytes: config.query.memory_limit_bytes,
                    target_partitions: config.query.threads,
                },
            )?
            .with_tags(Arc::new(QueryDictionary(dictionary.client())))
            .with_distributed_schemas(tables::DISTRIBUTED_SCHEMAS.iter().copied()),
        );
        let query_runtime = QueryRuntime::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.query.threads)
                .thread_name("flowmesh-query")
                .enable_all()
                .build()
                .map_err(|source| NodeError::Io {
                    action: "start query runtime",
                    source,
                })?,
        );

        let tasks = TaskTracker::new();
        let background_cancel = CancellationToken::new();
        let capture_cancel = CancellationToken::new();
        let http_cancel = CancellationToken::new();

        // storage writer: the only consumer of captured batches
        let (tx, mut rx) = mpsc::channel::<RowBatches>(config.capture.max_pending_batches);
        let writer_shard = Arc::clone(&shard);
        let writer_metrics = Arc::clone(&metrics);
        let encoder = TagEncoder::new(
            dictionary.client(),
            &shard.tables().cloned().collect::<Vec<_>>(),
        );
        let writer = tokio::spawn(async move {
            while let Some(batches) = rx.recv().await {
                let Some(batches) = encode_batches(&encoder, batches, &writer_metrics).await else {
                    continue;
                };
                if let Err(e) = writer_shard.append(batches).await {
                    writer_metrics
                        .storage_write_errors
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "failed to store captured rows");
                }
            }
        });

        let packet = if config.packet.interfaces.is_empty() {
            None
        } else {
            Some(PacketRunner::start(
                &config.packet,
                config.capture.batch_interval,
                tags.clone(),
                Arc::clone(&packet_stats),
                tx.clone(),
                capture_cancel.clone(),
            )?)
        };
        // one registry of processes for capture and OTLP, so both tag a process alike
        let processes: capture::procinfo::SharedProcesses = Arc::new(parking_lot::Mutex::new(
            capture::procinfo::Processes::new(Arc::clone(&tags.node)),
        ));
        let capture = if config.capture.enabled {
            Some(CaptureRunner::start(
                &config.capture,
                tags.clone(),
                capture_stats,
                Arc::clone(&processes),
                tx,
                capture_cancel.clone(),
            )?)
        } else {
            drop(tx);
            None
        };

        // maintenance: periodic flush, retention, compaction
        let maintenance_shard = Arc::clone(&shard);
        let maintenance_every = config.storage.maintenance_interval;
        let cancel = background_cancel.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last_maintenance = Instant::now();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Err(e) = maintenance_shard.flush_if_due().await {
                    error!(error = %e, "flush failed");
                }
                if last_maintenance.elapsed() >= maintenance_every {
                    last_maintenance = Instant::now();
                    if let Err(e) = maintenance_shard.enforce_retention(SystemTime::now()) {
                        error!(error = %e, "retention failed");
                    }
                    if let Err(e) = maintenance_shard.compact(SystemTime::now()).await {
                        error!(error = %e, "compaction failed");
                    }
                }
            }
        });

        // Kubernetes AutoTagging: pods from the API server, when there is one
        let api_server = config
            .kubernetes
            .api_server(|name| std::env::var(name).ok());
        if let Some(api_server) = api_server.clone() {
            let watcher = k8s::PodWatcher::new(
                api_server,
                &config.kubernetes,
                TagEncoder::new(dictionary.client(), &[]),
                Arc::clone(&metrics.kubernetes),
            )?;
            tasks.spawn(watcher.run(background_cancel.clone()));
        }

        let (listener, http_addr) = bind(config.http.listen, "bind the HTTP listener").await?;
        let flight_sql_addr = if config.flight_sql.enabled {
            let (listener, addr) =
                bind(config.flight_sql.listen, "bind the Flight SQL listener").await?;
            let service = flight_sql::FlightSql::new(
                &config.flight_sql,
                Arc::clone(&engine),
                query_runtime.handle(),
                Arc::clone(&metrics.flight_sql),
                Arc::clone(&mesh_query_slot),
                mesh::Scope::parse(&config.query.default_scope)?,
            )
            .map_err(|e| NodeError::Query(flowmesh_query_planner::QueryError::Internal(e)))?;
            let cancel = http_cancel.clone();
            tasks.spawn(async move {
                if let Err(e) = service.serve(listener, cancel).await {
                    error!(error = %e, "Flight SQL server failed");
                }
            });
            Some(addr)
        } else {
            None
        };
        // membership, and queries over it
        let mesh = if config.mesh.enabled {
            Some(
                mesh::start_membership(
                    &config,
                    &tags,
                    dictionary.peer_addr(),
                    http_addr,
                    Arc::clone(&shard),
                    &tasks,
                    background_cancel.clone(),
                )
                .await?,
            )
        } else {
            None
        };
        let mesh_query = Arc::new(mesh::MeshQuery::new(
            Arc::clone(&engine),
            query_runtime.handle(),
            mesh.clone(),
            tags.node.to_string(),
            tags.region.to_string(),
            tags.cluster.to_string(),
            config.consensus.cluster_token.clone(),
            config.query.peer_timeout,
            dictionary.peer_tls(),
            Arc::clone(&mesh_stats),
        ));
        let _ = mesh_query_slot.set(Arc::clone(&mesh_query));
        let default_scope = mesh::Scope::parse(&config.query.default_scope)?;
        let status_mesh = mesh.clone();
        let status_tags = tags.clone();
        let capture_enabled = capture.is_some();
        let packet_interfaces = config.packet.interfaces.clone();
        let status_shard = Arc::clone(&shard);
        let dictionary = Arc::new(dictionary);
        let status_dictionary = Arc::clone(&dictionary);
        let ingest = Arc::new(ingest::Ingest::new(
            tags.clone(),
            TagEncoder::new(
                status_dictionary.client(),
                &shard.tables().cloned().collect::<Vec<_>>(),
            ),
            Arc::clone(&shard),
            Arc::clone(&metrics.ingest),
            config.http.max_body_bytes,
            processes,
        ));
        let otlp_grpc_addr = if config.otlp.grpc_enabled {
            let (listener, addr) =
                bind(config.otlp.grpc_listen, "bind the OTLP/gRPC listener").await?;
            let service = otlp::GrpcTraces::server(Arc::clone(&ingest), Arc::clone(&metrics.otlp));
            let cancel = http_cancel.clone();
            tasks.spawn(async move {
                let served = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener),
                        cancel.cancelled_owned(),
                    )
                    .await;
                if let Err(e) = served {
                    error!(error = %e, "OTLP/gRPC server failed");
                }
            });
            Some(addr)
        } else {
            None
        };
        let state = ApiState {
            ingest,
            prom: Arc::new(prom_api::PromApi::new(
                Arc::clone(&engine),
                query_runtime.handle(),
            )),
            mesh: mesh_query,
            default_scope,
            metrics,
            status: Arc::new(move || {
                json!({
                    "node": &*status_tags.node,
                    "cluster": &*status_tags.cluster,
                    "region": &*status_tags.region,
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptime_seconds": started.elapsed().as_secs(),
                    "data_dir": status_shard.data_dir().display().to_string(),
                    "capture": { "enabled": capture_enabled },
                    "flight_sql": { "listen": flight_sql_addr.map(|a| a.to_string()) },
                    "otlp": { "grpc_listen": otlp_grpc_addr.map(|a| a.to_string()) },
                    "kubernetes": { "api_server": &api_server },
                    "packet": { "interfaces": &packet_interfaces },
                    "storage": { "buffered_bytes": status_shard.buffered_bytes() },
                    "dictionary": status_dictionary.status_json(),
                    "mesh": mesh::status_json(status_mesh.as_ref()),
                })
            }),
        };
        let app = server::router(state, config.http.max_body_bytes);
        let cancel = http_cancel.clone();
        tasks.spawn(async move {
            // each request knows its connection: OTLP finds the sending process by it
            let app = app.into_make_service_with_connect_info::<otlp::Connection>();
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
            {
                error!(error = %e, "http server failed");
            }
        });
        info!(%http_addr, flight_sql = ?flight_sql_addr, capture = capture_enabled, data_dir = %shard.data_dir().display(), "node started");
        Ok(Self {
            http_addr,
            flight_sql_addr,
            shard,
            capture,
            packet,
            capture_cancel,
            background_cancel,
            http_cancel,
            writer: Some(writer),
            tasks,
            query_runtime: Some(query_runtime),
            dictionary: Some(dictionary),
            mesh,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where Flight SQL listens, when enabled.
    pub fn flight_sql_addr(&self) -> Option<SocketAddr> {
        self.flight_sql_addr
    }

    /// Stops in order: capture → writer drains → flush → WAL closed → HTTP and Flight SQL → mesh → dictionary.
    pub async fn shutdown(mut self) {
        self.capture_cancel.cancel();
        if let Some(capture) = self.capture.take() {
            let _ = tokio::task::spawn_blocking(move || capture.join()).await;
        }
        if let Some(packet) = self.packet.take() {
            let _ = tokio::task::spawn_blocking(move || packet.join()).await;
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.await;
        }
        self.background_cancel.cancel();
        if let Err(e) = self.shard.flush().await {
            error!(error = %e, "final flush failed; rows stay in the WAL");
        }
        self.shard.close();
        self.http_cancel.cancel();
        if let Some(mesh) = self.mesh.take() {
            mesh.shutdown().await;
        }
        self.tasks.close();
        self.tasks.wait().await;
        drop(self.query_runtime.take());
        if let Some(dictionary) = self.dictionary.take().and_then(Arc::into_inner) {
            dictionary.shutdown().await;
        }
        info!("node stopped");
    }
}

/// The query runtime, shut down without blocking when dropped: a start that fails half-way
/// drops it inside the caller's async context, where a plain drop would panic.
struct QueryRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl QueryRuntime {
    fn new(runtime: tokio::runtime::Runtime) -> Self {
        Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        }
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A TCP listener on `addr` and the address it got (port 0 picks one).
async fn bind(
    addr: SocketAddr,
    action: &'static str,
) -> Result<(tokio::net::TcpListener, SocketAddr), NodeError> {
    let io = |source| NodeError::Io { action, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(io)?;
    let bound = listener.local_addr().map_err(io)?;
    Ok((listener, bound))
}

/// Encodes each batch's tags for storage. A dictionary that cannot assign ids right now (an
/// election, an unreachable leader) is retried with backoff while capture keeps queueing;
/// when the bounded queue fills, capture drops and counts. Batches that can never be
/// encoded are dropped and counted as write errors.
async fn encode_batches(
    encoder: &TagEncoder,
    batches: RowBatches,
    metrics: &Metrics,
) -> Option<RowBatches> {
    let mut backoff = Duration::from_millis(50);
    'retry: loop {
        let mut out = Vec::with_capacity(batches.len());
        for (table, batch) in &batches {
            let encoded = if table == tables::PROCESS_RESOURCES {
                encoder.register_processes(batch).await.map(|()| None)
            } else {
                encoder.encode(table, batch).await.map(Some)
            };
            match encoded {
                Ok(Some(encoded)) => out.push((table.clone(), encoded)),
                Ok(None) => {}
                Err(e) if e.is_retryable() => {
                    metrics.encode_retries.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "tag dictionary not ready; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue 'retry;
                }
                Err(e) => {
                    metrics.storage_write_errors.fetch_add(1, Ordering::Relaxed);
                    error!(error = %e, table, "cannot encode captured rows; dropped");
                    return None;
                }
            }
        }
        return Some(out);
    }
}
