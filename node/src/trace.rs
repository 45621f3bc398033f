//! Trace assembly (issue 6, DESIGN.md §7): a distributed trace is a query.
//!
//! Starting from a trace id or a request id, [`assemble`] fetches the `l7_flow_log` rows of
//! every node in scope that share one of the current set's keys, adds them, and repeats
//! until the set stops growing:
//! - `trace_id` (W3C, B3, Jaeger, SkyWalking headers; OpenTelemetry spans);
//! - `x_request_id_0`;
//! - `(node, syscall trace id)` of server sessions: the kernel's per-thread id, which links
//!   the server session a thread serves to the client sessions it opens meanwhile
//!   (meaningful on one node only). A server row's id finds its calls; a call's id finds
//!   only the server row it was made for (so a trace found from below, by an app's trace
//!   id, grows upwards too);
//! - the TCP flow of the request's first byte `(req_tcp_seq, client_port, server_port)`,
//!   which links a client's row to the server's row of the same request, across hosts.
//!
//! Parents are then set from the same keys, never from clocks across hosts, so skew between
//! hosts does not change the tree:
//! - an eBPF server row's parent is the client row of the same TCP flow, else the
//!   OpenTelemetry span whose id its trace header names;
//! - an eBPF client row's parent is the OpenTelemetry span whose id its header names (the
//!   app span that made the call), else the server row of the same process and syscall
//!   trace id that contains it in time (one host, one clock);
//! - an OpenTelemetry server span's parent is the eBPF server row of its node that carried
//!   its parent id in a header (so the kernel's view sits between the caller and the app),
//!   else that parent span, else (a span the app started itself, behind a proxy that sets
//!   `X-Request-ID`) the eBPF server row of its node with the same request id; other spans'
//!   parent is their parent span.
//!
//! Rows of different observation points of one request stay separate spans, as in DeepFlow.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use datafusion::arrow::{
    array::AsArray,
    compute::cast,
    datatypes::{DataType, Int64Type},
    record_batch::RecordBatch,
};
use serde::Serialize;

/// Rounds of fetching at most; a trace that still grows after them is returned as it is,
/// flagged `truncated`.
pub const MAX_ROUNDS: usize = 8;
/// Spans in one trace at most.
pub const MAX_SPANS: usize = 2_000;
/// How far around the spans found so far later rounds look, for clock skew between hosts
/// and for requests that outlive their callers' rows.
pub const WINDOW_MARGIN_US: i64 = 5 * 60 * 1_000_000;

/// What a trace starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seed {
    TraceId(String),
    RequestId(String),
    /// A syscall trace id of one node.
    Syscall {
        node: String,
        id: u64,
    },
}

impl Seed {
    /// A trace id (hex), `x-request-id:<value>` or `syscall:<node>:<id>`.
    pub fn parse(s: &str) -> Result<Seed, String> {
        if let Some(v) = s.strip_prefix("x-request-id:") {
            return if v.is_empty() {
                Err("x-request-id: needs a value".into())
            } else {
                Ok(Seed::RequestId(v.to_owned()))
            };
        }
        if let Some(rest) = s.strip_prefix("syscall:") {
            let (node, id) = rest
                .rsplit_once(':')
                .ok_or("syscall:<node>:<id> expected")?;
            let id = id
                .parse()
                .map_err(|_| format!("syscall trace id {id:?} is not a number"))?;
            return Ok(Seed::Syscall {
                node: node.to_owned(),
                id,
            });
        }
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(format!(
                "{s:?} is not a trace id (or x-request-id:<value>, syscall:<node>:<id>)"
            ));
        }
        Ok(Seed::TraceId(s.to_ascii_lowercase()))
    }
}

/// One row of `l7_flow_log` as a span.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Span {
    /// The span's id in the assembled trace: its OpenTelemetry span id, or one derived from
    /// the row (16 hex digits).
    pub id: String,
    /// Index of the parent in [`Trace::spans`].
    pub parent: Option<usize>,
    pub node: String,
    pub signal_source: String,
    pub observation_point: String,
    pub span_kind: String,
    pub l7_protocol: String,
    pub request_type: String,
    pub request_resource: String,
    pub endpoint: String,
    pub response_code: Option<i64>,
    pub response_status: String,
    pub response_exception: String,
    pub start_us: i64,
    pub end_us: i64,
    pub ip_0: String,
    pub ip_1: String,
    pub client_port: i64,
    pub server_port: i64,
    pub process_id_0: Option<i64>,
    pub process_id_1: Option<i64>,
    pub process_kname_0: String,
    pub process_kname_1: String,
    pub auto_service_0: String,
    pub auto_service_1: String,
    pub app_service: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub x_request_id: String,
    pub syscall_trace_id_request: u64,
    pub syscall_trace_id_response: u64,
    pub req_tcp_seq: Option<i64>,
}

impl Span {
    fn is_otel(&self) -> bool {
        self.signal_source == "otel"
    }
    fn is_ebpf(&self) -> bool {
        self.signal_source == "ebpf"
    }
    fn is_server(&self) -> bool {
        self.observation_point == "server"
    }
    fn is_client(&self) -> bool {
        self.observation_point == "client"
    }

    /// The TCP flow of the request's first byte, where known.
    fn flow(&self) -> Option<(i64, i64, i64)> {
        self.req_tcp_seq
            .map(|seq| (seq, self.client_port, self.server_port))
    }

    /// The observing process (the client's for client rows, the server's otherwise).
    fn process(&self) -> Option<i64> {
        if self.is_client() {
            self.process_id_0
        } else {
            self.process_id_1
        }
    }

    /// The service the span belongs to, for display: the app's service name, else the
    /// observing process's service or name.
    pub fn service(&self) -> &str {
        let (service, name) = if self.is_client() {
            (&self.auto_service_0, &self.process_kname_0)
        } else {
            (&self.auto_service_1, &self.process_kname_1)
        };
        [&self.app_service, service, name]
            .into_iter()
            .find(|s| !s.is_empty())
            .map_or("unknown", String::as_str)
    }

    /// The span's name: its endpoint, else its request resource, else its protocol.
    pub fn name(&self) -> &str {
        [&self.endpoint, &self.request_resource, &self.l7_protocol]
            .into_iter()
            .find(|v| !v.is_empty())
            .map_or("span", String::as_str)
    }

    /// What identifies the row among all rows (rows have no id of their own).
    fn row_key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{:?}|{}|{}|{}",
            self.node,
            self.signal_source,
            self.observation_point,
            self.start_us,
            self.end_us,
            self.trace_id,
            self.span_id,
            self.req_tcp_seq,
            self.client_port,
            self.server_port,
            self.syscall_trace_id_request
        )
    }
}

/// An assembled trace.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trace {
    /// The trace id shown for the whole trace: the seed's, else the first found.
    pub trace_id: String,
    /// Sorted by start time; parents point into this list.
    pub spans: Vec<Span>,
    /// Rounds of fetching run.
    pub rounds: usize,
    /// The set was still growing after [`MAX_ROUNDS`] or reached [`MAX_SPANS`].
    pub truncated: bool,
    /// Nodes in scope that did not answer some round: their spans may be missing.
    pub missing_nodes: Vec<String>,
}

/// The keys by which rows join a trace.
#[derive(Debug, Default)]
struct Keys {
    trace_ids: BTreeSet<String>,
    request_ids: BTreeSet<String>,
    syscalls: BTreeSet<(String, u64)>,
    /// Client rows' `(node, syscall trace id)`: they match server rows only.
    sessions: BTreeSet<(String, u64)>,
    flows: BTreeSet<(i64, i64, i64)>,
}

impl Keys {
    fn of(spans: &[Span]) -> Keys {
        let mut keys = Keys::default();
        for s in spans {
            if !s.trace_id.is_empty() {
                keys.trace_ids.insert(s.trace_id.clone());
            }
            if !s.x_request_id.is_empty() {
                keys.request_ids.insert(s.x_request_id.clone());
            }
            // A server session's id is the one its thread got reading the request; the
            // client sessions it opened meanwhile carry it as their request's id. A client
            // row's id is a key for server rows only: a plain client thread's ids come from
            // reading earlier responses and would join its unrelated calls to each other,
            // but no server row has them (an id is made by one read, on one socket).
            if s.is_ebpf() && s.syscall_trace_id_request != 0 {
                let key = (s.node.clone(), s.syscall_trace_id_request);
                if s.is_server() {
                    keys.syscalls.insert(key);
                } else if s.is_client() {
                    keys.sessions.insert(key);
                }
            }
            if let Some(flow) = s.flow()
                && !s.is_otel()
            {
                keys.flows.insert(flow);
            }
        }
        keys
    }

    fn matches(&self, s: &Span) -> bool {
        (!s.trace_id.is_empty() && self.trace_ids.contains(&s.trace_id))
            || (!s.x_request_id.is_empty() && self.request_ids.contains(&s.x_request_id))
            || (s.is_ebpf() && s.syscall_trace_id_request != 0 && {
                let key = (s.node.clone(), s.syscall_trace_id_request);
                self.syscalls.contains(&key) || (s.is_server() && self.sessions.contains(&key))
            })
            || (!s.is_otel() && s.flow().is_some_and(|f| self.flows.contains(&f)))
    }

    /// The SQL condition that selects (a superset of) the matching rows.
    fn condition(&self) -> Option<String> {
        let mut any = Vec::new();
        if !self.trace_ids.is_empty() {
            any.push(format!("trace_id IN ({})", quoted(&self.trace_ids)));
        }
        if !self.request_ids.is_empty() {
            any.push(format!("x_request_id_0 IN ({})", quoted(&self.request_ids)));
        }
        let mut by_node: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
        for (node, id) in self.syscalls.iter().chain(&self.sessions) {
            by_node.entry(node).or_default().insert(*id);
        }
        for (node, ids) in by_node {
            let ids = ids
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            any.push(format!(
                "(node = {} AND syscall_trace_id_request IN ({ids}))",
                literal(node)
            ));
        }
        if !self.flows.is_empty() {
            let seqs: BTreeSet<i64> = self.flows.iter().map(|f| f.0).collect();
            let seqs = seqs
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            any.push(format!("req_tcp_seq IN ({seqs})"));
        }
        (!any.is_empty()).then(|| any.join(" OR "))
    }
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub fn quoted(values: &BTreeSet<String>) -> String {
    values
        .iter()
        .map(|v| literal(v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns [`spans_from_batches`] reads.
pub const COLUMNS: &str = "node, signal_source, observation_point, span_kind, l7_protocol, \
    request_type, request_resource, endpoint, response_code, response_status, \
    response_exception, start_time, end_time, ip_0, ip_1, client_port, server_port, \
    process_id_0, process_id_1, process_kname_0, process_kname_1, auto_service_0, \
    auto_service_1, app_service, trace_id, span_id, parent_span_id, x_request_id_0, \
    syscall_trace_id_request, syscall_trace_id_response, req_tcp_seq";

/// The query of one round: rows matching `keys` between `from_us` and `to_us`.
fn round_sql(keys: &Keys, from_us: i64, to_us: i64) -> Option<String> {
    let condition = keys.condition()?;
    Some(format!(
        "SELECT {COLUMNS} FROM flow_log.l7_flow_log \
         WHERE time >= to_timestamp_micros({from_us}) AND time <= to_timestamp_micros({to_us}) \
         AND ({condition}) LIMIT {}",
        MAX_SPANS * 4
    ))
}

/// A column of any string or dictionary type as strings (null: empty).
pub fn text_column(batch: &RecordBatch, name: &str) -> Result<Vec<String>, String> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| format!("column {name} missing"))?;
    let col = cast(col, &DataType::Utf8).map_err(|e| e.to_string())?;
    Ok(col
        .as_string::<i32>()
        .iter()
        .map(|v| v.unwrap_or_default().to_owned())
        .collect())
}

/// A column of any integer or timestamp type as i64 (timestamps: their raw unit).
pub fn int_column(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, String> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| format!("column {name} missing"))?;
    let col = cast(col, &DataType::Int64).map_err(|e| e.to_string())?;
    Ok(col.as_primitive::<Int64Type>().iter().collect())
}

/// Rows of a query over [`COLUMNS`] as spans.
pub fn spans_from_batches(batches: &[RecordBatch]) -> Result<Vec<Span>, String> {
    let mut spans = Vec::new();
    for batch in batches {
        let text = |name: &str| text_column(batch, name);
        let int = |name: &str| int_column(batch, name);
        let node = text("node")?;
        let signal_source = text("signal_source")?;
        let observation_point = text("observation_point")?;
        let span_kind = text("span_kind")?;
        let l7_protocol = text("l7_protocol")?;
        let request_type = text("request_type")?;
        let request_resource = text("request_resource")?;
        let endpoint = text("endpoint")?;
        let response_code = int("response_code")?;
        let response_status = text("response_status")?;
        let response_exception = text("response_exception")?;
        let start = int("start_time")?;
        let end = int("end_time")?;
        let ip_0 = text("ip_0")?;
        let ip_1 = text("ip_1")?;
        let client_port = int("client_port")?;
        let server_port = int("server_port")?;
        let pid_0 = int("process_id_0")?;
        let pid_1 = int("process_id_1")?;
        let kname_0 = text("process_kname_0")?;
        let kname_1 = text("process_kname_1")?;
        let service_0 = text("auto_service_0")?;
        let service_1 = text("auto_service_1")?;
        let app_service = text("app_service")?;
        let trace_id = text("trace_id")?;
        let span_id = text("span_id")?;
        let parent_span_id = text("parent_span_id")?;
        let x_request_id = text("x_request_id_0")?;
        let sys_req = int("syscall_trace_id_request")?;
        let sys_resp = int("syscall_trace_id_response")?;
        let req_tcp_seq = int("req_tcp_seq")?;
        for i in 0..batch.num_rows() {
            spans.push(Span {
                node: node[i].clone(),
                signal_source: signal_source[i].clone(),
                observation_point: observation_point[i].clone(),
                span_kind: span_kind[i].clone(),
                l7_protocol: l7_protocol[i].clone(),
                request_type: request_type[i].clone(),
                request_resource: request_resource[i].clone(),
                endpoint: endpoint[i].clone(),
                response_code: response_code[i],
                response_status: response_status[i].clone(),
                response_exception: response_exception[i].clone(),
                start_us: start[i].unwrap_or(0),
                end_us: end[i].unwrap_or(0),
                ip_0: ip_0[i].clone(),
                ip_1: ip_1[i].clone(),
                client_port: client_port[i].unwrap_or(0),
                server_port: server_port[i].unwrap_or(0),
                process_id_0: pid_0[i],
                process_id_1: pid_1[i],
                process_kname_0: kname_0[i].clone(),
                process_kname_1: kname_1[i].clone(),
                auto_service_0: service_0[i].clone(),
                auto_service_1: service_1[i].clone(),
                app_service: app_service[i].clone(),
                trace_id: trace_id[i].clone(),
                span_id: span_id[i].clone(),
                parent_span_id: parent_span_id[i].clone(),
                x_request_id: x_request_id[i].clone(),
                // the columns are UInt64: ids above i64::MAX come back negative; keep the bits
                syscall_trace_id_request: sys_req[i].unwrap_or(0) as u64,
                syscall_trace_id_response: sys_resp[i].unwrap_or(0) as u64,
                req_tcp_seq: req_tcp_seq[i],
                ..Span::default()
            });
        }
    }
    Ok(spans)
}

/// What a round's query returned: rows, and nodes in scope that did not answer.
pub struct Fetched {
    pub batches: Vec<RecordBatch>,
    pub missing: Vec<String>,
}

/// Assembles the trace of `seed`, running each round's SQL through `fetch` (over the
/// scope the caller chose). `seed_from_us..seed_to_us` bounds the first round.
pub async fn assemble<F, Fut>(
    seed: &Seed,
    seed_from_us: i64,
    seed_to_us: i64,
    mut fetch: F,
) -> Result<Trace, String>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<Fetched, String>>,
{
    let mut keys = Keys::default();
    match seed {
        Seed::TraceId(id) => {
            keys.trace_ids.insert(id.clone());
        }
        Seed::RequestId(id) => {
            keys.request_ids.insert(id.clone());
        }
        Seed::Syscall { node, id } => {
            keys.syscalls.insert((node.clone(), *id));
        }
    }
    let mut trace = Trace::default();
    let mut seen = HashSet::new();
    let mut spans: Vec<Span> = Vec::new();
    let mut missing = BTreeSet::new();
    let (mut from_us, mut to_us) = (seed_from_us, seed_to_us);
    loop {
        if trace.rounds == MAX_ROUNDS {
            trace.truncated = true;
            break;
        }
        let Some(sql) = round_sql(&keys, from_us, to_us) else {
            break;
        };
        trace.rounds += 1;
        let fetched = fetch(sql).await?;
        missing.extend(fetched.missing);
        let mut grew = false;
        for span in spans_from_batches(&fetched.batches)? {
            if keys.matches(&span) && seen.insert(span.row_key()) {
                if spans.len() == MAX_SPANS {
                    trace.truncated = true;
                    break;
                }
                spans.push(span);
                grew = true;
            }
        }
        if !grew || trace.truncated {
            break;
        }
        keys = Keys::of(&spans);
        from_us = spans.iter().map(|s| s.start_us).min().unwrap_or(from_us) - WINDOW_MARGIN_US;
        to_us = spans.iter().map(|s| s.end_us).max().unwrap_or(to_us) + WINDOW_MARGIN_US;
    }
    trace.trace_id = match seed {
        Seed::TraceId(id) => id.clone(),
        _ => spans
            .iter()
            .find(|s| !s.trace_id.is_empty())
            .map(|s| s.trace_id.clone())
            .unwrap_or_default(),
    };
    spans.sort_by(|a, b| {
        (a.start_us, &a.node, &a.observation_point).cmp(&(
            b.start_us,
            &b.node,
            &b.observation_point,
        ))
    });
    link(&mut spans);
    trace.spans = spans;
    trace.missing_nodes = missing.into_iter().collect();
    Ok(trace)
}

/// Gives every span an id and sets parents (see the module documentation).
pub fn link(spans: &mut [Span]) {
    for s in spans.iter_mut() {
        s.id = if s.is_otel() && !s.span_id.is_empty() {
            s.span_id.clone()
        } else {
            derived_id(&s.row_key())
        };
        s.parent = None;
    }
    let mut otel_by_id: HashMap<&str, usize> = HashMap::new();
    let mut client_by_flow: HashMap<(i64, i64, i64), usize> = HashMap::new();
    let mut servers_by_syscall: HashMap<(&str, u64), Vec<usize>> = HashMap::new();
    let mut server_by_header: HashMap<(&str, &str), usize> = HashMap::new();
    let mut servers_by_request_id: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        if s.is_otel() && !s.span_id.is_empty() {
            otel_by_id.entry(&s.span_id).or_insert(i);
        }
        if s.is_ebpf()
            && s.is_client()
            && let Some(flow) = s.flow()
        {
            client_by_flow.entry(flow).or_insert(i);
        }
        if s.is_ebpf() && s.is_server() {
            if s.syscall_trace_id_request != 0 {
                servers_by_syscall
                    .entry((&s.node, s.syscall_trace_id_request))
                    .or_default()
                    .push(i);
            }
            if !s.span_id.is_empty() {
                server_by_header.entry((&s.node, &s.span_id)).or_insert(i);
            }
            if !s.x_request_id.is_empty() {
                servers_by_request_id
                    .entry((&s.node, &s.x_request_id))
                    .or_default()
                    .push(i);
            }
        }
    }
    let mut parents = vec![None; spans.len()];
    for (i, s) in spans.iter().enumerate() {
        parents[i] = if s.is_otel() {
            let via_kernel = (s.span_kind == "server" && !s.parent_span_id.is_empty())
                .then(|| server_by_header.get(&(s.node.as_str(), s.parent_span_id.as_str())))
                .flatten()
                .copied();
            via_kernel
                .or_else(|| otel_by_id.get(s.parent_span_id.as_str()).copied())
                .or_else(|| {
                    // a server span the app started itself (no caller span in the trace):
                    // the kernel's server row of its node that carried the same request id,
                    // the latest one begun by the span's start (one host: one clock)
                    let candidates = (s.span_kind == "server" && !s.x_request_id.is_empty())
                        .then(|| {
                            servers_by_request_id.get(&(s.node.as_str(), s.x_request_id.as_str()))
                        })
                        .flatten()?;
                    candidates
                        .iter()
                        .copied()
                        .filter(|&j| spans[j].start_us <= s.start_us)
                        .max_by_key(|&j| spans[j].start_us)
                        .or_else(|| candidates.first().copied())
                })
        } else if s.is_ebpf() && s.is_server() {
            s.flow()
                .and_then(|f| client_by_flow.get(&f).copied())
                .or_else(|| {
                    (!s.span_id.is_empty())
                        .then(|| otel_by_id.get(s.span_id.as_str()).copied())
                        .flatten()
                })
        } else if s.is_ebpf() && s.is_client() {
            let via_app = (!s.span_id.is_empty())
                .then(|| otel_by_id.get(s.span_id.as_str()).copied())
                .flatten();
            via_app.or_else(|| {
                // the innermost server session of the same process and thread trace that
                // contains this request (one host: one clock)
                servers_by_syscall
                    .get(&(s.node.as_str(), s.syscall_trace_id_request))
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|&j| {
                        let p = &spans[j];
                        j != i
                            && p.process() == s.process()
                            && p.start_us <= s.start_us
                            && p.end_us >= s.start_us
                    })
                    .max_by_key(|&j| spans[j].start_us)
            })
        } else {
            None
        };
        if parents[i] == Some(i) {
            parents[i] = None;
        }
    }
    // no cycles: a parent link that would close one is dropped
    for i in 0..spans.len() {
        let mut at = parents[i];
        let mut steps = 0;
        while let Some(p) = at {
            if p == i || steps > spans.len() {
                parents[i] = None;
                break;
            }
            at = parents[p];
            steps += 1;
        }
    }
    for (s, p) in spans.iter_mut().zip(parents) {
        s.parent = p;
    }
}

/// 16 hex digits derived from a row's key, for spans without an id of their own.
fn derived_id(key: &str) -> String {
    format!("{:016x}", fnv1a(key).max(1))
}

/// FNV-1a: a stable 64-bit hash (ids derived from it must not change between builds).
pub fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The trace as an indented tree, one line per span.
pub fn render_tree(trace: &Trace) -> String {
    let mut children: HashMap<Option<usize>, Vec<usize>> = HashMap::new();
    for (i, s) in trace.spans.iter().enumerate() {
        children.entry(s.parent).or_default().push(i);
    }
    let mut out = format!(
        "trace {} — {} spans{}{}\n",
        if trace.trace_id.is_empty() {
            "(no trace id)"
        } else {
            &trace.trace_id
        },
        trace.spans.len(),
        if trace.truncated { ", truncated" } else { "" },
        if trace.missing_nodes.is_empty() {
            String::new()
        } else {
            format!(", partial: missing {}", trace.missing_nodes.join(", "))
        }
    );
    let mut stack: Vec<(usize, usize)> = children
        .get(&None)
        .into_iter()
        .flatten()
        .rev()
        .map(|&i| (i, 0))
        .collect();
    while let Some((i, depth)) = stack.pop() {
        let s = &trace.spans[i];
        let code = s.response_code.map(|c| format!(" {c}")).unwrap_or_default();
        out.push_str(&format!(
            "{}{} [{} {}] {} {} {}{} {} {:.3} ms\n",
            "  ".repeat(depth),
            s.service(),
            s.signal_source,
            s.observation_point,
            s.node,
            if s.l7_protocol.is_empty() {
                "-"
            } else {
                &s.l7_protocol
            },
            s.name(),
            code,
            s.response_status,
            (s.end_us - s.start_us) as f64 / 1000.0,
        ));
        for &c in children.get(&Some(i)).into_iter().flatten().rev() {
            stack.push((c, depth + 1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ebpf(node: &str, point: &str, start: i64, end: i64) -> Span {
        Span {
            node: node.into(),
            signal_source: "ebpf".into(),
            observation_point: point.into(),
            start_us: start,
            end_us: end,
            ..Span::default()
        }
    }

    /// client → nginx → app → redis, all eBPF; nginx and app on their own hosts.
    fn chain() -> Vec<Span> {
        let flow = |s: &mut Span, seq: i64, cport: i64, sport: i64| {
            s.req_tcp_seq = Some(seq);
            s.client_port = cport;
            s.server_port = sport;
        };
        let mut client = ebpf("h1", "client", 0, 100);
        flow(&mut client, 10, 5000, 80);
        client.process_id_0 = Some(1);
        let mut nginx_in = ebpf("h2", "server", 5, 95);
        flow(&mut nginx_in, 10, 5000, 80);
        nginx_in.process_id_1 = Some(2);
        nginx_in.syscall_trace_id_request = 77;
        let mut nginx_out = ebpf("h2", "client", 10, 90);
        flow(&mut nginx_out, 20, 6000, 8000);
        nginx_out.process_id_0 = Some(2);
        nginx_out.syscall_trace_id_request = 77;
        let mut app_in = ebpf("h3", "server", 12, 88);
        flow(&mut app_in, 20, 6000, 8000);
        app_in.process_id_1 = Some(3);
        app_in.syscall_trace_id_request = 5;
        let mut redis_out = ebpf("h3", "client", 20, 30);
        flow(&mut redis_out, 30, 7000, 6379);
        redis_out.process_id_0 = Some(3);
        redis_out.syscall_trace_id_request = 5;
        let mut redis_in = ebpf("h3", "server", 21, 29);
        flow(&mut redis_in, 30, 7000, 6379);
        redis_in.process_id_1 = Some(4);
        redis_in.syscall_trace_id_request = 9;
        vec![client, nginx_in, nginx_out, app_in, redis_out, redis_in]
    }

    #[test]
    fn kernel_keys_link_a_chain_across_hosts() {
        let mut spans = chain();
        link(&mut spans);
        let parents: Vec<_> = spans.iter().map(|s| s.parent).collect();
        assert_eq!(
            parents,
            vec![None, Some(0), Some(1), Some(2), Some(3), Some(4)]
        );
        let ids: HashSet<_> = spans.iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids.len(), spans.len(), "derived ids are distinct");
    }

    #[test]
    fn clock_skew_between_hosts_does_not_change_parents() {
        let mut spans = chain();
        for s in spans.iter_mut().filter(|s| s.node == "h3") {
            s.start_us += 1_000_000;
            s.end_us += 1_000_000;
        }
        link(&mut spans);
        let parents: Vec<_> = spans.iter().map(|s| s.parent).collect();
        assert_eq!(
            parents,
            vec![None, Some(0), Some(1), Some(2), Some(3), Some(4)]
        );
    }

    #[test]
    fn a_client_row_outside_its_server_session_or_process_is_not_adopted() {
        let mut spans = chain();
        spans[4].start_us = 200; // after app_in ended
        spans[4].end_us = 210;
        link(&mut spans);
        assert_eq!(spans[4].parent, None);
        let mut spans = chain();
        spans[4].process_id_0 = Some(99); // another process with the same id
        link(&mut spans);
        assert_eq!(spans[4].parent, None);
    }

    #[test]
    fn otel_spans_sit_around_the_kernel_rows() {
        // app server span (parent: the caller's client span "c1"), its redis client span,
        // and the kernel's rows: the server row carried "c1" in its traceparent, the redis
        // client row carries nothing (no headers in RESP)
        let mut spans = chain();
        let otel = |kind: &str, id: &str, parent: &str, start, end| Span {
            node: "h3".into(),
            signal_source: "otel".into(),
            observation_point: "app".into(),
            span_kind: kind.into(),
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.into(),
            start_us: start,
            end_us: end,
            ..Span::default()
        };
        spans[3].span_id = "c1".into(); // app_in's traceparent parent id
        spans[3].trace_id = "t".into();
        spans.push(otel("server", "s1", "c1", 13, 87));
        spans.push(otel("client", "r1", "s1", 19, 31));
        link(&mut spans);
        assert_eq!(
            spans[6].parent,
            Some(3),
            "app server span under the kernel's server row"
        );
        assert_eq!(
            spans[7].parent,
            Some(6),
            "app client span under its server span"
        );
        assert_eq!(spans[6].id, "s1");
    }

    #[test]
    fn an_app_root_span_sits_under_the_server_row_with_its_request_id() {
        // the proxy set X-Request-ID on its call: nginx's client row and the app's server
        // row carry it, and so does the app's own root server span (as an
        // http.request.header attribute); nginx's client row is not a server row
        let mut spans = chain();
        spans[2].x_request_id = "r9".into();
        spans[3].x_request_id = "r9".into();
        let root = Span {
            node: "h3".into(),
            signal_source: "otel".into(),
            observation_point: "app".into(),
            span_kind: "server".into(),
            trace_id: "t2".into(),
            span_id: "s2".into(),
            x_request_id: "r9".into(),
            start_us: 13,
            end_us: 87,
            ..Span::default()
        };
        spans.push(root.clone());
        link(&mut spans);
        assert_eq!(spans[6].parent, Some(3));
        // another node's server row with the same id is not its parent
        let mut spans = chain();
        spans[1].x_request_id = "r9".into();
        spans.push(root);
        link(&mut spans);
        assert_eq!(spans[6].parent, None);
    }

    #[test]
    fn keys_select_and_match_rows() {
        let spans = chain();
        let keys = Keys::of(&spans[1..3]);
        assert!(
            keys.matches(&spans[0]),
            "same TCP flow as nginx's server row"
        );
        assert!(
            keys.matches(&spans[3]),
            "same TCP flow as nginx's client row"
        );
        assert!(
            !keys.matches(&spans[4]),
            "another node's syscall id and another flow"
        );
        let mut other_ports = spans[0].clone();
        other_ports.client_port = 1;
        assert!(!keys.matches(&other_ports));
        let sql = round_sql(&keys, 0, 10).unwrap();
        assert!(
            sql.contains("(node = 'h2' AND syscall_trace_id_request IN (77))"),
            "{sql}"
        );
        // a client row's id finds the server row of its node it was made for, and no
        // other client row
        let up = Keys::of(&spans[2..3]);
        assert!(up.matches(&spans[1]), "nginx's server row, from its call");
        let mut sibling = spans[2].clone();
        sibling.req_tcp_seq = Some(99);
        assert!(!up.matches(&sibling), "another call with the same id");
        let mut elsewhere = spans[1].clone();
        elsewhere.node = "h9".into();
        elsewhere.req_tcp_seq = Some(98);
        assert!(!up.matches(&elsewhere), "another node's server row");
        assert!(sql.contains("req_tcp_seq IN (10, 20)"), "{sql}");
        let mut quote = Keys::default();
        quote.request_ids.insert("a'b".into());
        assert!(
            round_sql(&quote, 0, 1)
                .unwrap()
                .contains("x_request_id_0 IN ('a''b')")
        );
        assert!(round_sql(&Keys::default(), 0, 1).is_none());
    }

    #[test]
    fn seeds() {
        assert_eq!(Seed::parse("ABC123"), Ok(Seed::TraceId("abc123".into())));
        assert_eq!(
            Seed::parse("x-request-id:r 1"),
            Ok(Seed::RequestId("r 1".into()))
        );
        assert_eq!(
            Seed::parse("syscall:n1:42"),
            Ok(Seed::Syscall {
                node: "n1".into(),
                id: 42
            })
        );
        for bad in [
            "",
            "x-request-id:",
            "syscall:n1",
            "syscall:n1:x",
            "a b",
            "a'--",
        ] {
            assert!(Seed::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_tree_is_printed_depth_first() {
        let mut trace = Trace {
            trace_id: "t".into(),
            spans: chain(),
            ..Trace::default()
        };
        link(&mut trace.spans);
        let text = render_tree(&trace);
        let depths: Vec<usize> = text
            .lines()
            .skip(1)
            .map(|l| l.len() - l.trim_start().len())
            .collect();
        assert_eq!(depths, vec![0, 2, 4, 6, 8, 10], "{text}");
    }
}
