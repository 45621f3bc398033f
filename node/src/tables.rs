//! The tables a node stores (DESIGN.md §4) and the row types that fill them. Each table's
//! schema and the function that turns rows into a batch sit side by side so their column
//! order cannot drift apart (a test builds every table once).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use datafusion::arrow::{
    array::{
        ArrayRef, BooleanArray, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
        UInt16Array, UInt32Array, UInt64Array,
    },
    datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit},
    error::ArrowError,
    record_batch::RecordBatch,
};
use flowmesh_consensus::TagKind;
use flowmesh_protocols::L7Record;
use flowmesh_query_planner::tags::{DerivedTag, tag_field};
use flowmesh_storage::TableDef;

pub mod ingested;
pub mod network;
pub mod snapshot;

use crate::capture::procinfo::ProcessInfo;

pub const L7_FLOW_LOG: &str = "flow_log.l7_flow_log";
/// Schemas whose tables every node holds its own shard of: a query over them reads every
/// node in its scope (query-planner `distributed`). `system` tables answer for one node.
pub const DISTRIBUTED_SCHEMAS: [&str; 4] =
    ["flow_log", "flow_metrics", "prometheus", "ext_metrics"];
pub const APPLICATION: &str = "flow_metrics.application";
pub const APPLICATION_MAP: &str = "flow_metrics.application_map";

fn ts(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}
fn s(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}
fn opt(name: &str, t: DataType) -> Field {
    Field::new(name, t, true)
}
fn req(name: &str, t: DataType) -> Field {
    Field::new(name, t, false)
}

/// The tags every row carries about where it was stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NodeTags {
    pub region: Arc<str>,
    pub cluster: Arc<str>,
    pub node: Arc<str>,
}

/// One request/response session seen at one observation point.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct L7Row {
    pub time_us: i64,
    pub start_time_us: i64,
    pub end_time_us: i64,
    pub signal_source: &'static str,
    pub observation_point: &'static str,
    pub l7_protocol: &'static str,
    pub version: String,
    pub request_type: String,
    pub request_domain: String,
    pub request_resource: String,
    pub endpoint: String,
    pub response_code: Option<i32>,
    pub response_status: &'static str,
    pub response_exception: String,
    pub response_result: String,
    pub row_effect: Option<u64>,
    pub response_duration_us: Option<u64>,
    pub request_length: u64,
    pub response_length: Option<u64>,
    /// A response was seen (some protocols' responses carry no code, e.g. MQTT 3 PUBACK).
    pub has_response: bool,
    pub ip_0: String,
    pub ip_1: String,
    pub client_port: u16,
    pub server_port: u16,
    pub protocol: &'static str,
    pub is_tls: bool,
    pub process_id_0: Option<u32>,
    pub process_id_1: Option<u32>,
    /// Shown (derived from the process resource), not stored: see [`derived_tags`].
    pub process_kname_0: Arc<str>,
    pub process_kname_1: Arc<str>,
    pub auto_service_0: Arc<str>,
    pub auto_service_1: Arc<str>,
    /// The process instance on each side (`node/pid/start`), a resource key; empty when
    /// the process is not on this host or already gone.
    pub gprocess_0: Arc<str>,
    pub gprocess_1: Arc<str>,
    /// OpenTelemetry spans: the span kind (server, client, internal …); "" otherwise.
    pub span_kind: &'static str,
    /// OpenTelemetry spans: the resource's `service.name`; "" otherwise.
    pub app_service: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub x_request_id_0: String,
    pub x_request_id_1: String,
    /// The observing thread's syscall trace ids at the request's and the response's first
    /// syscall (0: none); set by the kernel programs, so meaningful within one node.
    pub syscall_trace_id_request: u64,
    pub syscall_trace_id_response: u64,
    pub syscall_thread_0: Option<u32>,
    pub syscall_thread_1: Option<u32>,
    pub req_tcp_seq: Option<u32>,
    pub resp_tcp_seq: Option<u32>,
}

/// Addresses as row strings, formatted once per address rather than once per row: a
/// pipeline's rows mostly repeat a few addresses. Bounded: emptied when full.
#[derive(Default)]
pub struct IpStrings(hashbrown::HashMap<IpAddr, String>);

impl IpStrings {
    const MAX: usize = 4096;

    pub fn get(&mut self, ip: IpAddr) -> String {
        if let Some(s) = self.0.get(&ip) {
            return s.clone();
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        let s = ip.to_string();
        self.0.insert(ip, s.clone());
        s
    }
}

impl L7Row {
    /// The row's protocol fields, times and addresses from a parsed record; the caller
    /// adds what its pipeline knows (observation point, signal source, processes, threads).
    pub fn from_record(
        r: &L7Record,
        client: SocketAddr,
        server: SocketAddr,
        protocol: &'static str,
        ips: &mut IpStrings,
    ) -> Self {
        let end_ns = r.response_end_ns.unwrap_or(r.request_end_ns);
        L7Row {
            time_us: (r.request_start_ns / 1000) as i64,
            start_time_us: (r.request_start_ns / 1000) as i64,
            end_time_us: (end_ns / 1000) as i64,
            l7_protocol: r.protocol.as_str(),
            version: r.version.clone(),
            request_type: r.request_type.clone(),
            request_domain: r.request_domain.clone(),
            request_resource: r.request_resource.clone(),
            endpoint: r.endpoint.clone(),
            response_code: r.response_code.map(i32::from),
            response_status: r.response_status.as_str(),
            response_exception: r.response_exception.clone(),
            response_result: r.response_result.clone(),
            row_effect: r.row_effect,
            response_duration_us: r.duration_us(),
            request_length: r.request_length,
            response_length: r.response_length,
            has_response: r.response_end_ns.is_some(),
            ip_0: ips.get(client.ip()),
            ip_1: ips.get(server.ip()),
            client_port: client.port(),
            server_port: server.port(),
            protocol,
            trace_id: r.trace_id.clone().unwrap_or_default(),
            span_id: r.span_id.clone().unwrap_or_default(),
            parent_span_id: r.parent_span_id.clone().unwrap_or_default(),
            // DeepFlow: x_request_id_0 is the request's header, _1 the response's; the parser
            // reports one (the request's, else the response's)
            x_request_id_0: r.x_request_id.clone().unwrap_or_default(),
            req_tcp_seq: r.req_tcp_seq,
            resp_tcp_seq: r.resp_tcp_seq,
            syscall_trace_id_request: r.request_syscall_trace_id,
            syscall_trace_id_response: r.response_syscall_trace_id,
            ..L7Row::default()
        }
    }
}

pub fn l7_flow_log_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        ts("time"),
        ts("start_time"),
        ts("end_time"),
        s("region"),
        s("cluster"),
        s("node"),
        s("signal_source"),
        s("observation_point"),
        s("l7_protocol"),
        s("version"),
        s("request_type"),
        s("request_domain"),
        s("request_resource"),
        s("endpoint"),
        opt("response_code", DataType::Int32),
        s("response_status"),
        s("response_exception"),
        s("response_result"),
        opt("row_effect", DataType::UInt64),
        opt("response_duration", DataType::UInt64),
        req("request_length", DataType::UInt64),
        opt("response_length", DataType::UInt64),
        s("ip_0"),
        s("ip_1"),
        req("client_port", DataType::UInt16),
        req("server_port", DataType::UInt16),
        s("protocol"),
        req("is_tls", DataType::Boolean),
        opt("process_id_0", DataType::UInt32),
        opt("process_id_1", DataType::UInt32),
        s("gprocess_id_0"),
        s("gprocess_id_1"),
        s("trace_id"),
        s("span_id"),
        s("parent_span_id"),
        s("x_request_id_0"),
        s("x_request_id_1"),
        req("syscall_trace_id_request", DataType::UInt64),
        req("syscall_trace_id_response", DataType::UInt64),
        opt("syscall_thread_0", DataType::UInt32),
        opt("syscall_thread_1", DataType::UInt32),
        opt("req_tcp_seq", DataType::UInt32),
        opt("resp_tcp_seq", DataType::UInt32),
        s("span_kind"),
        s("app_service"),
    ]))
}

fn strs<'a>(rows: &'a [L7Row], f: impl Fn(&'a L7Row) -> &'a str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
}
fn times<T>(rows: &[T], f: impl Fn(&T) -> i64) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(rows.iter().map(f)).with_timezone("UTC"))
}
fn repeat(value: &str, n: usize) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(value, n)))
}

pub fn l7_flow_log_batch(tags: &NodeTags, rows: &[L7Row]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let columns: Vec<ArrayRef> = vec![
        times(rows, |r| r.time_us),
        times(rows, |r| r.start_time_us),
        times(rows, |r| r.end_time_us),
        repeat(&tags.region, n),
        repeat(&tags.cluster, n),
        repeat(&tags.node, n),
        strs(rows, |r| r.signal_source),
        strs(rows, |r| r.observation_point),
        strs(rows, |r| r.l7_protocol),
        strs(rows, |r| &r.version),
        strs(rows, |r| &r.request_type),
        strs(rows, |r| &r.request_domain),
        strs(rows, |r| &r.request_resource),
        strs(rows, |r| &r.endpoint),
        Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.response_code))),
        strs(rows, |r| r.response_status),
        strs(rows, |r| &r.response_exception),
        strs(rows, |r| &r.response_result),
        Arc::new(UInt64Array::from_iter(rows.iter().map(|r| r.row_effect))),
        Arc::new(UInt64Array::from_iter(
            rows.iter().map(|r| r.response_duration_us),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.request_length),
        )),
        Arc::new(UInt64Array::from_iter(
            rows.iter().map(|r| r.response_length),
        )),
        strs(rows, |r| &r.ip_0),
        strs(rows, |r| &r.ip_1),
        Arc::new(UInt16Array::from_iter_values(
            rows.iter().map(|r| r.client_port),
        )),
        Arc::new(UInt16Array::from_iter_values(
            rows.iter().map(|r| r.server_port),
        )),
        strs(rows, |r| r.protocol),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.is_tls)))),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.process_id_0))),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.process_id_1))),
        strs(rows, |r| &r.gprocess_0),
        strs(rows, |r| &r.gprocess_1),
        strs(rows, |r| &r.trace_id),
        strs(rows, |r| &r.span_id),
        strs(rows, |r| &r.parent_span_id),
        strs(rows, |r| &r.x_request_id_0),
        strs(rows, |r| &r.x_request_id_1),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.syscall_trace_id_request),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.syscall_trace_id_response),
        )),
        Arc::new(UInt32Array::from_iter(
            rows.iter().map(|r| r.syscall_thread_0),
        )),
        Arc::new(UInt32Array::from_iter(
            rows.iter().map(|r| r.syscall_thread_1),
        )),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.req_tcp_seq))),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.resp_tcp_seq))),
        strs(rows, |r| r.span_kind),
        strs(rows, |r| &r.app_service),
    ];
    RecordBatch::try_new(l7_flow_log_schema(), columns)
}

/// Not a stored table: process resources first seen by capture, which the storage writer
/// registers in the dictionary's resource tables (one version per change).
pub const PROCESS_RESOURCES: &str = "resource.gprocess";

/// The attributes of a process resource, by dictionary kind, in [`process_batch`] column
/// order after `gprocess` and `valid_from_us`.
pub const PROCESS_ATTRIBUTES: [TagKind; 5] = [
    TagKind::PROCESS,
    TagKind::SERVICE,
    TagKind::CMDLINE,
    TagKind::EXE,
    TagKind::CONTAINER_ID,
];

pub fn process_batch(processes: &[Arc<ProcessInfo>]) -> Result<RecordBatch, ArrowError> {
    let col = |f: fn(&ProcessInfo) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            processes.iter().map(|p| f(p)),
        ))
    };
    let schema = Arc::new(Schema::new(vec![
        s("gprocess"),
        req("valid_from_us", DataType::Int64),
        s("process"),
        s("service"),
        s("cmdline"),
        s("exe"),
        s("container_id"),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            col(|p| &p.key),
            Arc::new(Int64Array::from_iter_values(
                processes.iter().map(|p| p.valid_from_us),
            )),
            col(|p| &p.name),
            col(|p| &p.service),
            col(|p| &p.cmdline),
            col(|p| &p.exe),
            col(|p| &p.container_id),
        ],
    )
}

/// The attributes of a Kubernetes pod resource (key `namespace/name`), in
/// [`crate::k8s`]'s pod batch column order after the key and `valid_from_us`.
pub const POD_ATTRIBUTES: [TagKind; 6] = [
    TagKind::POD,
    TagKind::POD_NS,
    TagKind::POD_NODE,
    TagKind::POD_GROUP,
    TagKind::POD_GROUP_TYPE,
    TagKind::SERIES,
];

/// The attribute of a container resource (key: the container id): its pod.
pub const CONTAINER_ATTRIBUTES: [TagKind; 1] = [TagKind::K8S_POD];

/// Columns a table shows but does not store (DESIGN.md §5, meta tags), each as it was at
/// the row's time:
/// - attributes of the process resource on each side (`auto_service_1`, …);
/// - attributes of the Kubernetes pod that process's container belongs to (`pod_1`,
///   `pod_ns_1`, `pod_group_1`, `k8s_labels_1` …), reached process → container → pod.
///   `k8s.label.<name>_<side>` in SQL reads one label from `k8s_labels_<side>`.
pub fn derived_tags(table: &str) -> Vec<DerivedTag> {
    if table != L7_FLOW_LOG {
        return Vec::new();
    }
    let process = [
        ("process_kname", TagKind::PROCESS),
        ("auto_service", TagKind::SERVICE),
        ("process_cmdline", TagKind::CMDLINE),
        ("process_exe", TagKind::EXE),
        ("container_id", TagKind::CONTAINER_ID),
    ];
    let pod = [
        ("pod", TagKind::POD),
        ("pod_ns", TagKind::POD_NS),
        ("pod_node", TagKind::POD_NODE),
        ("pod_group", TagKind::POD_GROUP),
        ("pod_group_type", TagKind::POD_GROUP_TYPE),
        ("k8s_labels", TagKind::SERIES),
    ];
    let to_pod = vec![
        TagKind::CONTAINER_ID.to_string(),
        TagKind::K8S_POD.to_string(),
    ];
    process
        .iter()
        .map(|(name, kind)| (name, kind, Vec::new()))
        .chain(pod.iter().map(|(name, kind)| (name, kind, to_pod.clone())))
        .flat_map(|(name, kind, via)| {
            ["0", "1"].map(|side| DerivedTag {
                name: format!("{name}_{side}"),
                kind: kind.to_string(),
                resource_column: format!("gprocess_id_{side}"),
                via: via.clone(),
            })
        })
        .collect()
}

/// RED counters of one aggregation key over one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedCounters {
    pub request: u64,
    pub response: u64,
    pub client_error: u64,
    pub server_error: u64,
    pub timeout: u64,
    pub rrt_sum_us: u64,
    pub rrt_count: u64,
    pub rrt_max_us: u64,
}

impl RedCounters {
    /// Counts one session with the given status and duration.
    pub fn add(&mut self, status: &str, duration_us: Option<u64>, has_response: bool) {
        self.request += 1;
        if has_response {
            self.response += 1;
        }
        match status {
            "client_error" => self.client_error += 1,
            "server_error" => self.server_error += 1,
            "timeout" => self.timeout += 1,
            _ => {}
        }
        if let Some(d) = duration_us {
            self.rrt_sum_us += d;
            self.rrt_count += 1;
            self.rrt_max_us = self.rrt_max_us.max(d);
        }
    }
}

/// The key of a `flow_metrics.application_map` row; `application` rows use its server half.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EdgeKey {
    pub second: i64,
    pub observation_point: &'static str,
    pub signal_source: &'static str,
    pub l7_protocol: &'static str,
    pub endpoint: String,
    pub ip_0: String,
    pub ip_1: String,
    pub server_port: u16,
    pub process_kname_0: Arc<str>,
    pub process_kname_1: Arc<str>,
    pub auto_service_0: Arc<str>,
    pub auto_service_1: Arc<str>,
}

fn metric_fields() -> Vec<Field> {
    [
        "request",
        "response",
        "client_error",
        "server_error",
        "timeout",
        "rrt_sum",
        "rrt_count",
        "rrt_max",
    ]
    .into_iter()
    .map(|n| req(n, DataType::UInt64))
    .collect()
}

fn metric_columns(rows: &[(EdgeKey, RedCounters)]) -> Vec<ArrayRef> {
    let col = |f: fn(&RedCounters) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|(_, c)| f(c)),
        ))
    };
    vec![
        col(|c| c.request),
        col(|c| c.response),
        col(|c| c.client_error),
        col(|c| c.server_error),
        col(|c| c.timeout),
        col(|c| c.rrt_sum_us),
        col(|c| c.rrt_count),
        col(|c| c.rrt_max_us),
    ]
}

fn key_strs<'a>(
    rows: &'a [(EdgeKey, RedCounters)],
    f: impl Fn(&'a EdgeKey) -> &'a str,
) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        rows.iter().map(|(k, _)| f(k)),
    ))
}

/// The key columns every metrics table starts with: time, where, and what.
fn leading_key_columns(tags: &NodeTags, rows: &[(EdgeKey, RedCounters)]) -> Vec<ArrayRef> {
    let n = rows.len();
    vec![
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|(k, _)| k.second * 1_000_000),
            )
            .with_timezone("UTC"),
        ),
        repeat(&tags.region, n),
        repeat(&tags.cluster, n),
        repeat(&tags.node, n),
        key_strs(rows, |k| k.observation_point),
        key_strs(rows, |k| k.signal_source),
        key_strs(rows, |k| k.l7_protocol),
    ]
}

fn leading_key_fields() -> Vec<Field> {
    vec![
        ts("time"),
        s("region"),
        s("cluster"),
        s("node"),
        s("observation_point"),
        s("signal_source"),
        s("l7_protocol"),
    ]
}

pub fn application_schema() -> SchemaRef {
    let mut fields = leading_key_fields();
    fields.extend([
        s("ip"),
        req("server_port", DataType::UInt16),
        s("process_kname"),
        s("auto_service"),
        s("endpoint"),
    ]);
    fields.extend(metric_fields());
    Arc::new(Schema::new(fields))
}

/// `rows` are already aggregated per server-side key.
pub fn application_batch(
    tags: &NodeTags,
    rows: &[(EdgeKey, RedCounters)],
) -> Result<RecordBatch, ArrowError> {
    let mut columns = leading_key_columns(tags, rows);
    columns.extend::<[ArrayRef; 5]>([
        key_strs(rows, |k| &k.ip_1),
        Arc::new(UInt16Array::from_iter_values(
            rows.iter().map(|(k, _)| k.server_port),
        )),
        key_strs(rows, |k| &k.process_kname_1),
        key_strs(rows, |k| &k.auto_service_1),
        key_strs(rows, |k| &k.endpoint),
    ]);
    columns.extend(metric_columns(rows));
    RecordBatch::try_new(application_schema(), columns)
}

pub fn application_map_schema() -> SchemaRef {
    let mut fields = leading_key_fields();
    fields.extend([
        s("ip_0"),
        s("ip_1"),
        req("server_port", DataType::UInt16),
        s("process_kname_0"),
        s("process_kname_1"),
        s("auto_service_0"),
        s("auto_service_1"),
        s("endpoint"),
    ]);
    fields.extend(metric_fields());
    Arc::new(Schema::new(fields))
}

pub fn application_map_batch(
    tags: &NodeTags,
    rows: &[(EdgeKey, RedCounters)],
) -> Result<RecordBatch, ArrowError> {
    let mut columns = leading_key_columns(tags, rows);
    columns.extend::<[ArrayRef; 8]>([
        key_strs(rows, |k| &k.ip_0),
        key_strs(rows, |k| &k.ip_1),
        Arc::new(UInt16Array::from_iter_values(
            rows.iter().map(|(k, _)| k.server_port),
        )),
        key_strs(rows, |k| &k.process_kname_0),
        key_strs(rows, |k| &k.process_kname_1),
        key_strs(rows, |k| &k.auto_service_0),
        key_strs(rows, |k| &k.auto_service_1),
        key_strs(rows, |k| &k.endpoint),
    ]);
    columns.extend(metric_columns(rows));
    RecordBatch::try_new(application_map_schema(), columns)
}

/// The dictionary a tag column's strings are encoded in (DESIGN.md §4: tags are stored as
/// u32 ids); `None` for columns stored as they are. `_0`/`_1` sides share one dictionary.
pub fn tag_kind_of(column: &str) -> Option<TagKind> {
    let base = column
        .strip_suffix("_0")
        .or_else(|| column.strip_suffix("_1"))
        .unwrap_or(column);
    Some(match base {
        "region" => TagKind::REGION,
        "cluster" => TagKind::CLUSTER,
        "node" => TagKind::NODE,
        "signal_source" => TagKind::SIGNAL_SOURCE,
        "observation_point" => TagKind::OBSERVATION_POINT,
        "l7_protocol" => TagKind::L7_PROTOCOL,
        "response_status" => TagKind::RESPONSE_STATUS,
        "protocol" => TagKind::PROTOCOL,
        "version" => TagKind::VERSION,
        "request_type" => TagKind::REQUEST_TYPE,
        "request_domain" => TagKind::REQUEST_DOMAIN,
        "endpoint" => TagKind::ENDPOINT,
        "process_kname" => TagKind::PROCESS,
        "auto_service" | "app_service" => TagKind::SERVICE,
        "pod" => TagKind::POD,
        "gprocess_id" => TagKind::GPROCESS,
        "metric" | "measurement" | "field" => TagKind::METRIC,
        "labels" | "tags" => TagKind::SERIES,
        _ => return None,
    })
}

/// How a table is stored: its string tag columns become dictionary ids (`UInt32` marked
/// with their kind, see [`flowmesh_query_planner::tags`]); every other column is unchanged.
pub fn stored_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match tag_kind_of(f.name()) {
            Some(kind) if f.data_type() == &DataType::Utf8 => {
                tag_field(f.name(), &kind.to_string(), f.is_nullable())
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Every table of a node as stored, with the tag columns its segments are sorted by.
pub fn table_defs() -> Vec<TableDef> {
    let def = |name: &str, schema: SchemaRef, sort: &[&str]| TableDef {
        name: name.to_string(),
        schema: stored_schema(&schema),
        sort_columns: sort.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        def(
            L7_FLOW_LOG,
            l7_flow_log_schema(),
            &["l7_protocol", "gprocess_id_1", "endpoint"],
        ),
        def(
            APPLICATION,
            application_schema(),
            &["l7_protocol", "auto_service", "endpoint"],
        ),
        def(
            APPLICATION_MAP,
            application_map_schema(),
            &["l7_protocol", "auto_service_1", "auto_service_0"],
        ),
        def(
            network::L4_FLOW_LOG,
            network::l4_flow_log_schema(),
            &["protocol", "ip_1", "server_port"],
        ),
        def(
            network::NETWORK,
            network::network_schema(),
            &["protocol", "ip", "server_port"],
        ),
        def(
            network::NETWORK_MAP,
            network::network_map_schema(),
            &["protocol", "ip_1", "ip_0"],
        ),
        // series-major, as a TSDB stores chunks: each series' samples sit together
        def(
            ingested::PROM_SAMPLES,
            ingested::samples_schema(),
            &["metric", "labels", "time"],
        ),
        def(
            ingested::EXT_METRICS,
            ingested::ext_metrics_schema(),
            &["measurement", "field", "tags", "time"],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_builds_a_batch_matching_its_schema() {
        let tags = NodeTags {
            region: "r".into(),
            cluster: "c".into(),
            node: "n".into(),
        };
        let row = L7Row {
            response_code: Some(200),
            response_status: "ok",
            ..L7Row::default()
        };
        assert_eq!(
            l7_flow_log_batch(&tags, &[row.clone(), row])
                .unwrap()
                .num_rows(),
            2
        );
        let mut c = RedCounters::default();
        c.add("server_error", Some(7), true);
        let rows = vec![(EdgeKey::default(), c)];
        let app = application_batch(&tags, &rows).unwrap();
        assert_eq!(app.num_rows(), 1);
        assert_eq!(application_map_batch(&tags, &rows).unwrap().num_rows(), 1);
        assert_eq!(
            c,
            RedCounters {
                request: 1,
                response: 1,
                server_error: 1,
                rrt_sum_us: 7,
                rrt_count: 1,
                rrt_max_us: 7,
                ..RedCounters::default()
            }
        );
        for d in table_defs() {
            for col in d.sort_key() {
                assert!(
                    d.schema.index_of(col).is_ok(),
                    "{} sorts by missing column {col}",
                    d.name
                );
            }
        }
    }
}
