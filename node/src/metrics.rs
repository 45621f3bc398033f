//! The node's counters, rendered in the Prometheus text format at `/metrics` and exposed
//! to SQL as `system.metrics` (so drops are visible wherever users look).

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use datafusion::arrow::{
    array::{StringArray, UInt64Array},
    datatypes::{DataType, Field, Schema},
    record_batch::RecordBatch,
};
use flowmesh_storage::Shard;

use crate::{capture::CaptureStats, packet::PacketStats, tables::snapshot::SnapshotTable};

/// HTTP front-end counters.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub sql_queries: AtomicU64,
    pub sql_client_errors: AtomicU64,
    pub sql_server_errors: AtomicU64,
}

/// One registry, created by the node and shared by its parts.
pub struct Metrics {
    pub capture: Arc<CaptureStats>,
    pub packet: Arc<PacketStats>,
    pub http: Arc<HttpStats>,
    pub shard: Arc<Shard>,
    pub storage_write_errors: AtomicU64,
    /// The tag dictionary's counters.
    pub dictionary: flowmesh_consensus::DictionaryClient,
    /// Batches whose tags could not be encoded (retried while the queue has room).
    pub encode_retries: AtomicU64,
    /// remote_write and line protocol counters.
    pub ingest: Arc<crate::ingest::IngestStats>,
    /// OTLP trace ingest counters.
    pub otlp: Arc<crate::otlp::OtlpStats>,
    /// Flight SQL counters.
    pub flight_sql: Arc<crate::flight_sql::FlightSqlStats>,
    /// Kubernetes pod watcher counters.
    pub kubernetes: Arc<crate::k8s::K8sStats>,
    /// Queries over the mesh, and fragments served for peers.
    pub mesh: Arc<crate::mesh::MeshQueryStats>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// (name, type, help, value)
type Sample = (&'static str, &'static str, &'static str, u64);

impl Metrics {
    /// Every metric's current value.
    pub fn samples(&self) -> Vec<Sample> {
        let c = &self.capture;
        let s = self.shard.stats();
        let h = &self.http;
        let f = &self.flight_sql;
        let k = &self.kubernetes;
        let m = &self.mesh;
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let p = &self.packet;
        let d = self.dictionary.stats();
        let i = &self.ingest;
        vec![
            (
                "flowmesh_ingest_remote_write_requests_total",
                "counter",
                "remote_write requests received.",
                v(&i.remote_write_requests),
            ),
            (
                "flowmesh_ingest_remote_write_samples_total",
                "counter",
                "remote_write samples stored.",
                v(&i.remote_write_samples),
            ),
            (
                "flowmesh_ingest_remote_write_rejected_requests_total",
                "counter",
                "remote_write requests refused as malformed, oversized or of another encoding.",
                v(&i.remote_write_rejected),
            ),
            (
                "flowmesh_ingest_remote_write_out_of_order_samples_total",
                "counter",
                "remote_write samples refused as older than their series' newest stored sample.",
                v(&i.remote_write_out_of_order),
            ),
            (
                "flowmesh_ingest_remote_write_duplicate_samples_total",
                "counter",
                "remote_write samples skipped as equal in time to their series' newest (resends).",
                v(&i.remote_write_duplicates),
            ),
            (
                "flowmesh_ingest_line_protocol_requests_total",
                "counter",
                "Influx line protocol write requests received.",
                v(&i.line_protocol_requests),
            ),
            (
                "flowmesh_ingest_line_protocol_rows_total",
                "counter",
                "ext_metrics.metrics rows stored from line protocol (one per field).",
                v(&i.line_protocol_rows),
            ),
            (
                "flowmesh_ingest_line_protocol_rejected_lines_total",
                "counter",
                "Line protocol lines refused as malformed.",
                v(&i.line_protocol_rejected_lines),
            ),
            (
                "flowmesh_ingest_otlp_trace_requests_total",
                "counter",
                "OTLP trace export requests received (HTTP and gRPC).",
                v(&self.otlp.requests),
            ),
            (
                "flowmesh_ingest_otlp_spans_total",
                "counter",
                "OpenTelemetry spans stored in flow_log.l7_flow_log.",
                v(&self.otlp.spans),
            ),
            (
                "flowmesh_ingest_otlp_rejected_requests_total",
                "counter",
                "OTLP trace export requests refused (malformed, unsupported or not stored).",
                v(&self.otlp.rejected_requests),
            ),
            (
                "flowmesh_ingest_store_errors_total",
                "counter",
                "Ingest requests answered 5xx because encoding or storage failed (senders retry).",
                v(&i.store_errors),
            ),
            (
                "flowmesh_ingest_series_memory_resets_total",
                "counter",
                "Times the per-series newest-sample memory was full and cleared.",
                v(&i.series_memory_resets),
            ),
            (
                "flowmesh_dictionary_proposals_total",
                "counter",
                "Raft proposals of new tag strings made through this node.",
                d.proposals,
            ),
            (
                "flowmesh_dictionary_proposed_strings_total",
                "counter",
                "New tag strings proposed through this node.",
                d.proposed_strings,
            ),
            (
                "flowmesh_dictionary_cache_hits_total",
                "counter",
                "Tag encodes and decodes served by the local cache.",
                d.cache_hits,
            ),
            (
                "flowmesh_dictionary_cache_misses_total",
                "counter",
                "Tag encodes and decodes the local cache missed.",
                d.cache_misses,
            ),
            (
                "flowmesh_dictionary_replica_errors_total",
                "counter",
                "Local dictionary replica reads that failed.",
                d.replica_errors,
            ),
            (
                "flowmesh_peer_rejected_requests_total",
                "counter",
                "Peer-port requests (Raft, dictionary) refused for a missing or wrong cluster token.",
                d.rejected_peer_requests,
            ),
            (
                "flowmesh_peer_tls_refused_connections_total",
                "counter",
                "Peer-port connections refused by TLS: no certificate of the mesh's CA, or not TLS.",
                d.tls_refused_connections,
            ),
            (
                "flowmesh_dictionary_encode_retries_total",
                "counter",
                "Captured batches whose tags could not be encoded yet and were retried.",
                v(&self.encode_retries),
            ),
            (
                "flowmesh_capture_events_total",
                "counter",
                "Socket events read from the kernel ring buffer.",
                v(&c.events),
            ),
            (
                "flowmesh_capture_kernel_lost_events_total",
                "counter",
                "Events the kernel dropped because the ring buffer was full.",
                v(&c.kernel_lost_events),
            ),
            (
                "flowmesh_capture_malformed_events_total",
                "counter",
                "Ring buffer records that failed validation.",
                v(&c.malformed_events),
            ),
            (
                "flowmesh_capture_ignored_events_total",
                "counter",
                "Events on sockets whose protocol is not parsed.",
                v(&c.ignored_events),
            ),
            (
                "flowmesh_capture_rows_total",
                "counter",
                "l7_flow_log rows produced.",
                v(&c.rows),
            ),
            (
                "flowmesh_capture_dropped_rows_total",
                "counter",
                "Rows dropped because the storage queue was full.",
                v(&c.dropped_rows),
            ),
            (
                "flowmesh_capture_dropped_batches_total",
                "counter",
                "Batches dropped because the storage queue was full.",
                v(&c.dropped_batches),
            ),
            (
                "flowmesh_capture_sockets",
                "gauge",
                "Sockets tracked now.",
                v(&c.sockets),
            ),
            (
                "flowmesh_capture_evicted_sockets_total",
                "counter",
                "Sockets forgotten because max_sockets was reached.",
                v(&c.evicted_sockets),
            ),
            (
                "flowmesh_capture_evicted_endpoints_total",
                "counter",
                "Socket owners forgotten because the endpoint map was full.",
                v(&c.evicted_endpoints),
            ),
            (
                "flowmesh_capture_red_overflow_rows_total",
                "counter",
                "Rows not aggregated into RED metrics because a second had too many keys.",
                v(&c.red_overflow_rows),
            ),
            (
                "flowmesh_capture_parse_errors_total",
                "counter",
                "Protocol parse errors on closed sockets.",
                v(&c.parse_errors),
            ),
            (
                "flowmesh_capture_resyncs_total",
                "counter",
                "Times a parser lost framing and resynchronized.",
                v(&c.resyncs),
            ),
            (
                "flowmesh_capture_dropped_requests_total",
                "counter",
                "Requests dropped because too many were pending on a socket.",
                v(&c.dropped_requests),
            ),
            (
                "flowmesh_capture_unmatched_responses_total",
                "counter",
                "Responses seen without a request.",
                v(&c.unmatched_responses),
            ),
            (
                "flowmesh_packet_frames_total",
                "counter",
                "Frames read from the AF_PACKET rings.",
                v(&p.frames),
            ),
            (
                "flowmesh_packet_kernel_drops_total",
                "counter",
                "Frames the kernel dropped because the ring was full.",
                v(&p.kernel_drops),
            ),
            (
                "flowmesh_packet_l4_rows_total",
                "counter",
                "l4_flow_log rows produced.",
                v(&p.l4_rows),
            ),
            (
                "flowmesh_packet_l7_rows_total",
                "counter",
                "l7_flow_log rows produced from packets.",
                v(&p.l7_rows),
            ),
            (
                "flowmesh_packet_dropped_rows_total",
                "counter",
                "Packet-path rows dropped because the storage queue was full.",
                v(&p.dropped_rows),
            ),
            (
                "flowmesh_packet_overflow_rows_total",
                "counter",
                "Packet-path rows not aggregated because a second had too many keys.",
                v(&p.overflow_rows),
            ),
            (
                "flowmesh_storage_appended_rows_total",
                "counter",
                "Rows acknowledged by the WAL.",
                v(&s.appended_rows),
            ),
            (
                "flowmesh_storage_wal_groups_total",
                "counter",
                "WAL group commits (fsyncs).",
                v(&s.wal_groups),
            ),
            (
                "flowmesh_storage_wal_bytes_total",
                "counter",
                "Bytes appended to the WAL.",
                v(&s.wal_bytes),
            ),
            (
                "flowmesh_storage_rejected_appends_total",
                "counter",
                "Appends refused because the write buffer was full.",
                v(&s.rejected_appends),
            ),
            (
                "flowmesh_storage_write_errors_total",
                "counter",
                "Captured batches storage failed to append.",
                v(&self.storage_write_errors),
            ),
            (
                "flowmesh_storage_flushes_total",
                "counter",
                "Flushes of buffered rows to Parquet.",
                v(&s.flushes),
            ),
            (
                "flowmesh_storage_flushed_rows_total",
                "counter",
                "Rows written to Parquet.",
                v(&s.flushed_rows),
            ),
            (
                "flowmesh_storage_buffered_bytes",
                "gauge",
                "Bytes of rows buffered in memory.",
                self.shard.buffered_bytes() as u64,
            ),
            (
                "flowmesh_storage_replayed_records_total",
                "counter",
                "WAL records replayed at start.",
                v(&s.replayed_records),
            ),
            (
                "flowmesh_storage_segments_deleted_total",
                "counter",
                "Segments deleted by retention.",
                v(&s.segments_deleted_by_retention),
            ),
            (
                "flowmesh_storage_segments_compacted_total",
                "counter",
                "Segments merged by compaction.",
                v(&s.segments_compacted),
            ),
            (
                "flowmesh_http_sql_queries_total",
                "counter",
                "SQL queries received.",
                v(&h.sql_queries),
            ),
            (
                "flowmesh_http_sql_client_errors_total",
                "counter",
                "SQL queries rejected as invalid.",
                v(&h.sql_client_errors),
            ),
            (
                "flowmesh_http_sql_server_errors_total",
                "counter",
                "SQL queries that failed in execution.",
                v(&h.sql_server_errors),
            ),
            (
                "flowmesh_flight_sql_queries_total",
                "counter",
                "Flight SQL statements run (plain and prepared).",
                v(&f.queries),
            ),
            (
                "flowmesh_flight_sql_client_errors_total",
                "counter",
                "Flight SQL statements rejected as invalid.",
                v(&f.client_errors),
            ),
            (
                "flowmesh_flight_sql_server_errors_total",
                "counter",
                "Flight SQL statements that failed in execution.",
                v(&f.server_errors),
            ),
            (
                "flowmesh_flight_sql_unauthenticated_total",
                "counter",
                "Flight SQL calls refused for a missing or wrong token.",
                v(&f.unauthenticated),
            ),
            (
                "flowmesh_mesh_queries_total",
                "counter",
                "Queries this node coordinated over more than itself.",
                v(&m.queries),
            ),
            (
                "flowmesh_mesh_partial_queries_total",
                "counter",
                "Queries answered without some node in scope (named in the answer).",
                v(&m.partial_queries),
            ),
            (
                "flowmesh_mesh_fragments_sent_total",
                "counter",
                "Query fragments sent to other nodes.",
                v(&m.fragments_sent),
            ),
            (
                "flowmesh_mesh_fragment_failures_total",
                "counter",
                "Fragments another node failed to answer, or answered too late.",
                v(&m.fragment_failures),
            ),
            (
                "flowmesh_mesh_fragments_served_total",
                "counter",
                "Query fragments this node answered for other nodes.",
                v(&m.fragments_served),
            ),
            (
                "flowmesh_mesh_unauthenticated_total",
                "counter",
                "Peer query requests refused for a missing or wrong cluster token.",
                v(&m.unauthenticated),
            ),
            (
                "flowmesh_mesh_cross_region_received_bytes_total",
                "counter",
                "Arrow bytes received from nodes of other regions.",
                v(&m.cross_region_bytes),
            ),
            (
                "flowmesh_mesh_in_region_received_bytes_total",
                "counter",
                "Arrow bytes received from other nodes of this region.",
                v(&m.in_region_bytes),
            ),
            (
                "flowmesh_kubernetes_pods_seen_total",
                "counter",
                "Pod versions from the Kubernetes API registered as resources.",
                v(&k.pods_seen),
            ),
            (
                "flowmesh_kubernetes_watch_events_total",
                "counter",
                "Pod watch events read from the Kubernetes API.",
                v(&k.watch_events),
            ),
            (
                "flowmesh_kubernetes_lists_total",
                "counter",
                "Full pod lists (the first and every relist).",
                v(&k.lists),
            ),
            (
                "flowmesh_kubernetes_errors_total",
                "counter",
                "Failed pod lists or watches (each retried after a backoff).",
                v(&k.errors),
            ),
            (
                "flowmesh_kubernetes_labels_truncated_total",
                "counter",
                "Pod versions whose labels were cut to the dictionary's string limit.",
                v(&k.labels_truncated),
            ),
        ]
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, value) in self.samples() {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

/// `system.metrics`: the same counters as rows (name, value), read at scan time.
pub fn metrics_table(metrics: Arc<Metrics>) -> SnapshotTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::UInt64, false),
    ]));
    SnapshotTable::new(Arc::clone(&schema), move || {
        let samples = metrics.samples();
        RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from_iter_values(samples.iter().map(|s| s.0))),
                Arc::new(UInt64Array::from_iter_values(samples.iter().map(|s| s.3))),
            ],
        )
        .map_err(|e| e.to_string())
    })
}
