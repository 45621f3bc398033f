//! The packet path's tables: `flow_log.l4_flow_log` (one row per flow per reporting
//! interval), and 1-second L4 metrics `flow_metrics.network` (per server side) and
//! `flow_metrics.network_map` (per client → server edge). Column names follow DeepFlow's
//! (`byte_tx`/`byte_rx` whole frames, `l4_byte_*` payload, `rtt_client`/`rtt_server` …);
//! `_tx` is client → server.

use std::{collections::HashMap, sync::Arc};

use datafusion::arrow::{
    array::{
        ArrayRef, BooleanArray, StringArray, TimestampMicrosecondArray, UInt16Array, UInt64Array,
    },
    datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit},
    error::ArrowError,
    record_batch::RecordBatch,
};
use flowmesh_packet::{L4FlowRecord, TransportProtocol};

use super::NodeTags;

pub const L4_FLOW_LOG: &str = "flow_log.l4_flow_log";
pub const NETWORK: &str = "flow_metrics.network";
pub const NETWORK_MAP: &str = "flow_metrics.network_map";

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
fn u64f(name: &str) -> Field {
    Field::new(name, DataType::UInt64, false)
}

fn transport(p: TransportProtocol) -> &'static str {
    match p {
        TransportProtocol::Tcp => "TCP",
        TransportProtocol::Udp => "UDP",
    }
}

/// A counter column: its name and how it is read.
type Counter<T> = (&'static str, fn(&T) -> u64);

/// Counter columns of `l4_flow_log`, with how each is read from a record.
const L4_COUNTERS: &[Counter<L4FlowRecord>] = &[
    ("packet_tx", |r| r.packets_tx),
    ("packet_rx", |r| r.packets_rx),
    ("byte_tx", |r| r.bytes_tx),
    ("byte_rx", |r| r.bytes_rx),
    ("l3_byte_tx", |r| r.l3_bytes_tx),
    ("l3_byte_rx", |r| r.l3_bytes_rx),
    ("l4_byte_tx", |r| r.payload_bytes_tx),
    ("l4_byte_rx", |r| r.payload_bytes_rx),
    ("total_packet_tx", |r| r.total_packets_tx),
    ("total_packet_rx", |r| r.total_packets_rx),
    ("total_byte_tx", |r| r.total_bytes_tx),
    ("total_byte_rx", |r| r.total_bytes_rx),
    ("total_l4_byte_tx", |r| r.total_payload_bytes_tx),
    ("total_l4_byte_rx", |r| r.total_payload_bytes_rx),
    ("syn_count", |r| u64::from(r.syn_count)),
    ("synack_count", |r| u64::from(r.synack_count)),
    ("retrans_syn", |r| u64::from(r.retrans_syn)),
    ("retrans_synack", |r| u64::from(r.retrans_synack)),
    ("retrans_tx", |r| u64::from(r.retrans_tx)),
    ("retrans_rx", |r| u64::from(r.retrans_rx)),
    ("zero_win_tx", |r| u64::from(r.zero_win_tx)),
    ("zero_win_rx", |r| u64::from(r.zero_win_rx)),
    ("rst_tx", |r| u64::from(r.rst_tx)),
    ("rst_rx", |r| u64::from(r.rst_rx)),
];

pub fn l4_flow_log_schema() -> SchemaRef {
    let mut fields = vec![
        ts("time"),
        ts("start_time"),
        ts("end_time"),
        s("region"),
        s("cluster"),
        s("node"),
        s("signal_source"),
        s("observation_point"),
        s("protocol"),
        s("ip_0"),
        s("ip_1"),
        Field::new("client_port", DataType::UInt16, false),
        Field::new("server_port", DataType::UInt16, false),
        s("l7_protocol"),
        u64f("flow_id"),
        Field::new("is_new_flow", DataType::Boolean, false),
    ];
    fields.extend(L4_COUNTERS.iter().map(|(name, _)| u64f(name)));
    fields.extend([
        Field::new("rtt", DataType::UInt64, true),
        Field::new("rtt_client", DataType::UInt64, true),
        Field::new("rtt_server", DataType::UInt64, true),
        Field::new("rtt_sample", DataType::Boolean, false),
        s("status"),
        s("close_type"),
    ]);
    Arc::new(Schema::new(fields))
}

fn us(ns: u64) -> i64 {
    (ns / 1000) as i64
}

pub fn l4_flow_log_batch(
    tags: &NodeTags,
    rows: &[L4FlowRecord],
) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let time = |f: fn(&L4FlowRecord) -> u64| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| us(f(r))))
                .with_timezone("UTC"),
        )
    };
    let text = |f: &dyn Fn(&L4FlowRecord) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let repeat = |v: &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, n)))
    };
    let mut columns: Vec<ArrayRef> = vec![
        time(|r| r.end_ns),
        time(|r| r.start_ns),
        time(|r| r.end_ns),
        repeat(&tags.region),
        repeat(&tags.cluster),
        repeat(&tags.node),
        repeat("packet"),
        text(&|r| r.observation_point.as_str().to_string()),
        text(&|r| transport(r.key.protocol).to_string()),
        text(&|r| r.key.client.ip().to_string()),
        text(&|r| r.key.server.ip().to_string()),
        Arc::new(UInt16Array::from_iter_values(
            rows.iter().map(|r| r.key.client.port()),
        )),
        Arc::new(UInt16Array::from_iter_values(
            rows.iter().map(|r| r.key.server.port()),
        )),
        text(&|r| r.l7_protocol.map_or("", |p| p.as_str()).to_string()),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.flow_id),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.is_new_flow)),
        )),
    ];
    for (_, get) in L4_COUNTERS {
        columns.push(Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(get),
        )));
    }
    columns.extend::<[ArrayRef; 6]>([
        Arc::new(UInt64Array::from_iter(rows.iter().map(|r| r.rtt_us))),
        Arc::new(UInt64Array::from_iter(rows.iter().map(|r| r.rtt_client_us))),
        Arc::new(UInt64Array::from_iter(rows.iter().map(|r| r.rtt_server_us))),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.rtt_sample)),
        )),
        text(&|r| r.result.as_str().to_string()),
        text(&|r| r.close_type.as_str().to_string()),
    ]);
    RecordBatch::try_new(l4_flow_log_schema(), columns)
}

/// The key of a `network_map` row; `network` rows leave `ip_0` empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct L4Key {
    pub second: i64,
    pub observation_point: &'static str,
    pub protocol: &'static str,
    pub ip_0: String,
    pub ip_1: String,
    pub server_port: u16,
}

/// L4 counters of one key over one second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct L4Counters {
    pub packet_tx: u64,
    pub packet_rx: u64,
    pub byte_tx: u64,
    pub byte_rx: u64,
    pub l4_byte_tx: u64,
    pub l4_byte_rx: u64,
    pub new_flow: u64,
    pub closed_flow: u64,
    pub retrans_tx: u64,
    pub retrans_rx: u64,
    pub zero_win_tx: u64,
    pub zero_win_rx: u64,
    pub rst_tx: u64,
    pub rst_rx: u64,
    pub conn_failed: u64,
    pub rtt_sum: u64,
    pub rtt_count: u64,
    pub rtt_max: u64,
}

impl L4Counters {
    pub fn add(&mut self, r: &L4FlowRecord) {
        self.packet_tx += r.packets_tx;
        self.packet_rx += r.packets_rx;
        self.byte_tx += r.bytes_tx;
        self.byte_rx += r.bytes_rx;
        self.l4_byte_tx += r.payload_bytes_tx;
        self.l4_byte_rx += r.payload_bytes_rx;
        self.new_flow += u64::from(r.is_new_flow);
        self.closed_flow += u64::from(r.close_type.is_final());
        self.retrans_tx += u64::from(r.retrans_tx);
        self.retrans_rx += u64::from(r.retrans_rx);
        self.zero_win_tx += u64::from(r.zero_win_tx);
        self.zero_win_rx += u64::from(r.zero_win_rx);
        self.rst_tx += u64::from(r.rst_tx);
        self.rst_rx += u64::from(r.rst_rx);
        self.conn_failed += u64::from(r.close_type.is_final() && r.result.is_failure());
        if let (true, Some(rtt)) = (r.rtt_sample, r.rtt_us) {
            self.rtt_sum += rtt;
            self.rtt_count += 1;
            self.rtt_max = self.rtt_max.max(rtt);
        }
    }
}

const NETWORK_COUNTERS: &[Counter<L4Counters>] = &[
    ("packet_tx", |c| c.packet_tx),
    ("packet_rx", |c| c.packet_rx),
    ("byte_tx", |c| c.byte_tx),
    ("byte_rx", |c| c.byte_rx),
    ("l4_byte_tx", |c| c.l4_byte_tx),
    ("l4_byte_rx", |c| c.l4_byte_rx),
    ("new_flow", |c| c.new_flow),
    ("closed_flow", |c| c.closed_flow),
    ("retrans_tx", |c| c.retrans_tx),
    ("retrans_rx", |c| c.retrans_rx),
    ("zero_win_tx", |c| c.zero_win_tx),
    ("zero_win_rx", |c| c.zero_win_rx),
    ("rst_tx", |c| c.rst_tx),
    ("rst_rx", |c| c.rst_rx),
    ("conn_failed", |c| c.conn_failed),
    ("rtt_sum", |c| c.rtt_sum),
    ("rtt_count", |c| c.rtt_count),
    ("rtt_max", |c| c.rtt_max),
];

fn network_schema_with(edge: bool) -> SchemaRef {
    let mut fields = vec![
        ts("time"),
        s("region"),
        s("cluster"),
        s("node"),
        s("observation_point"),
        s("protocol"),
    ];
    if edge {
        fields.extend([s("ip_0"), s("ip_1")]);
    } else {
        fields.push(s("ip"));
    }
    fields.push(Field::new("server_port", DataType::UInt16, false));
    fields.extend(NETWORK_COUNTERS.iter().map(|(name, _)| u64f(name)));
    Arc::new(Schema::new(fields))
}

pub fn network_schema() -> SchemaRef {
    network_schema_with(false)
}

pub fn network_map_schema() -> SchemaRef {
    network_schema_with(true)
}

fn network_batch_with(
    tags: &NodeTags,
    rows: &[(L4Key, L4Counters)],
    edge: bool,
) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let key = |f: fn(&L4Key) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(k, _)| f(k)),
        ))
    };
    let repeat = |v: &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, n)))
    };
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|(k, _)| k.second * 1_000_000),
            )
            .with_timezone("UTC"),
        ),
        repeat(&tags.region),
        repeat(&tags.cluster),
        repeat(&tags.node),
        key(|k| k.observation_point),
        key(|k| k.protocol),
    ];
    if edge {
        columns.push(key(|k| &k.ip_0));
    }
    columns.push(key(|k| &k.ip_1));
    columns.push(Arc::new(UInt16Array::from_iter_values(
        rows.iter().map(|(k, _)| k.server_port),
    )));
    for (_, get) in NETWORK_COUNTERS {
        columns.push(Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|(_, c)| get(c)),
        )));
    }
    RecordBatch::try_new(
        if edge {
            network_map_schema()
        } else {
            network_schema()
        },
        columns,
    )
}

/// Distinct keys held per table between drains.
const MAX_L4_KEYS: usize = 100_000;

/// 1-second L4 aggregation into `network` and `network_map`.
#[derive(Default)]
pub struct NetworkAggregator {
    network: HashMap<L4Key, L4Counters>,
    network_map: HashMap<L4Key, L4Counters>,
}

impl NetworkAggregator {
    /// Counts a flow record in the second its interval ended; false if not aggregated.
    pub fn add(&mut self, r: &L4FlowRecord) -> bool {
        let edge = L4Key {
            second: (r.end_ns / 1_000_000_000) as i64,
            observation_point: r.observation_point.as_str(),
            protocol: transport(r.key.protocol),
            ip_0: r.key.client.ip().to_string(),
            ip_1: r.key.server.ip().to_string(),
            server_port: r.key.server.port(),
        };
        let server = L4Key {
            ip_0: String::new(),
            ..edge.clone()
        };
        let full = |m: &HashMap<L4Key, L4Counters>, k: &L4Key| {
            m.len() >= MAX_L4_KEYS && !m.contains_key(k)
        };
        if full(&self.network_map, &edge) || full(&self.network, &server) {
            return false;
        }
        self.network_map.entry(edge).or_default().add(r);
        self.network.entry(server).or_default().add(r);
        true
    }

    /// Moves every second before `cutoff` out as batches of both tables.
    pub fn drain(
        &mut self,
        cutoff: i64,
        tags: &NodeTags,
        out: &mut Vec<(String, RecordBatch)>,
    ) -> Result<(), ArrowError> {
        for (table, map, edge) in [
            (NETWORK, &mut self.network, false),
            (NETWORK_MAP, &mut self.network_map, true),
        ] {
            let closed: Vec<L4Key> = map.keys().filter(|k| k.second < cutoff).cloned().collect();
            if closed.is_empty() {
                continue;
            }
            let rows: Vec<(L4Key, L4Counters)> = closed
                .into_iter()
                .filter_map(|k| map.remove(&k).map(|c| (k, c)))
                .collect();
            out.push((table.to_string(), network_batch_with(tags, &rows, edge)?));
        }
        Ok(())
    }
}
