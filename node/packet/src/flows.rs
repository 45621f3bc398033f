//! The flow table: decoded packets in, [`L4FlowRecord`]s and [`L7PacketRecord`]s out.
//!
//! # Flows
//!
//! A flow is keyed by its canonical 5-tuple (the two endpoints in a fixed order, so both
//! directions find it) and the capturing interface. Its client and server are decided
//! once, by its first packet:
//!
//! - a SYN (without ACK): the sender is the client; a SYN-ACK: the receiver is;
//! - otherwise (handshake not seen) by ports: a port below 1024 facing one that is not is
//!   the server's; else a port below the ephemeral range (32768) facing one in it is the
//!   server's; else, for TCP, the lower port is the server's, and for UDP the first
//!   packet's destination is.
//!
//! A SYN on the 5-tuple of a flow that closed (or whose client already used another
//! initial sequence number) ends that flow and starts a new one.
//!
//! # Lifetime and records
//!
//! A flow emits a record per `report_interval` in which it saw packets, and a final record
//! when it ends: `closed_flow_linger` after both FINs or a RST (so the last ACKs count
//! towards it), after `flow_idle_timeout` without packets (`handshake_timeout` while the
//! handshake is incomplete), when evicted to make room (the table holds at most
//! `max_flows`; the least recently active of a small sample is evicted), or at
//! [`crate::PacketProcessor::flush`].
//!
//! Time is the packets' capture time and the `now_ns` given to
//! [`crate::PacketProcessor::tick`]; nothing here reads a clock.

mod l7;
pub(crate) mod record;
pub(crate) mod tcp;

use std::collections::HashMap;
use std::net::SocketAddr;

use flowmesh_protocols::{ConversationConfig, L7Record};

use crate::config::{PacketConfig, duration_ns};
use crate::decode::{DecodedPacket, TcpFlags};
use crate::processor::ProcessorOutput;
use crate::{PacketOrigin, TransportProtocol};
use l7::{L7Flow, L7Limits, Piece, ReorderBudget};
use record::{
    CloseType, ConnectionResult, FlowKey, L4FlowRecord, L7PacketRecord, ObservationPoint,
};
use tcp::TcpTracker;

/// Index of the client → server direction in per-direction arrays (`_tx`).
pub(crate) const CLIENT_TO_SERVER: usize = 0;
/// Index of the server → client direction (`_rx`).
pub(crate) const SERVER_TO_CLIENT: usize = 1;

/// Periodic work runs at most this often, whatever the rate of `tick` calls.
const SWEEP_INTERVAL_NS: u64 = 100_000_000;
/// Flows looked at to choose one to evict.
const EVICTION_SAMPLE: usize = 8;
/// Ports below this are well known (servers').
const WELL_KNOWN_PORTS: u16 = 1024;
/// Ports from here up are ephemeral (clients') on Linux.
const EPHEMERAL_PORTS: u16 = 32768;

/// What the processor knows about a packet besides its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    /// Kernel index of the capturing interface.
    pub ifindex: u32,
    /// Capture time, Unix-epoch nanoseconds.
    pub timestamp_ns: u64,
    /// Frame length on the wire, link header included (0 if unknown: the IP length is
    /// used).
    pub wire_len: u32,
    /// Which way the packet crossed the interface.
    pub origin: PacketOrigin,
}

/// Counters of one direction over one reporting interval.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DirCounters {
    packets: u64,
    bytes: u64,
    l3_bytes: u64,
    payload_bytes: u64,
    pub(crate) retrans: u32,
    pub(crate) zero_win: u32,
    pub(crate) rst: u32,
}

/// Counters of a flow over one reporting interval.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub(crate) dir: [DirCounters; 2],
    pub(crate) syn: u32,
    pub(crate) synack: u32,
    pub(crate) retrans_syn: u32,
    pub(crate) retrans_synack: u32,
}

/// Running totals of one direction.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    packets: u64,
    bytes: u64,
    payload_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CanonicalKey {
    ifindex: u32,
    protocol: TransportProtocol,
    low: SocketAddr,
    high: SocketAddr,
}

impl CanonicalKey {
    fn new(ifindex: u32, protocol: TransportProtocol, a: SocketAddr, b: SocketAddr) -> Self {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        CanonicalKey {
            ifindex,
            protocol,
            low,
            high,
        }
    }
}

#[derive(Debug)]
struct Flow {
    id: u64,
    key: FlowKey,
    observation_point: ObservationPoint,
    vlan: Option<u16>,
    start_ns: u64,
    last_ns: u64,
    interval: Counters,
    totals: [Totals; 2],
    tcp: Option<TcpTracker>,
    l7: L7Flow,
    records: u64,
    rtt_reported: bool,
}

/// Limits and timeouts of the table, in nanoseconds.
#[derive(Debug, Clone)]
struct TableConfig {
    idle_ns: u64,
    handshake_ns: u64,
    linger_ns: u64,
    report_ns: u64,
    reorder_timeout_ns: u64,
    max_flows: usize,
    l7_enabled: bool,
    conversation: ConversationConfig,
    reorder_max_bytes: usize,
}

/// Counters of the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TableStats {
    pub(crate) flows_created: u64,
    pub(crate) flows_evicted: u64,
    pub(crate) l4_records: u64,
    pub(crate) l7_records: u64,
}

/// The flow table. See the module docs.
#[derive(Debug)]
pub(crate) struct FlowTable {
    config: TableConfig,
    flows: HashMap<CanonicalKey, Flow>,
    next_id: u64,
    next_sweep_ns: u64,
    next_report_ns: Option<u64>,
    budget: ReorderBudget,
    /// Reused buffer for the L7 records of one call.
    scratch: Vec<L7Record>,
    stats: TableStats,
}

/// The server side by ports: `Some(true)` if the source port is the server's.
fn source_is_server_by_ports(source: u16, destination: u16) -> Option<bool> {
    let well_known = |port: u16| port < WELL_KNOWN_PORTS;
    let ephemeral = |port: u16| port >= EPHEMERAL_PORTS;
    if well_known(source) != well_known(destination) {
        return Some(well_known(source));
    }
    if ephemeral(source) != ephemeral(destination) {
        return Some(!ephemeral(source));
    }
    None
}

/// `(client, server)` of a flow whose first packet is `packet`.
fn orient(packet: &DecodedPacket<'_>) -> (SocketAddr, SocketAddr) {
    let src = SocketAddr::new(packet.src, packet.src_port);
    let dst = SocketAddr::new(packet.dst, packet.dst_port);
    if let Some(tcp) = &packet.tcp
        && tcp.flags.contains(TcpFlags::SYN)
    {
        return if tcp.flags.contains(TcpFlags::ACK) {
            (dst, src)
        } else {
            (src, dst)
        };
    }
    let source_is_server = source_is_server_by_ports(packet.src_port, packet.dst_port).unwrap_or(
        match packet.protocol {
            TransportProtocol::Tcp => packet.src_port < packet.dst_port,
            TransportProtocol::Udp => false,
        },
    );
    if source_is_server {
        (dst, src)
    } else {
        (src, dst)
    }
}

fn observation_point(origin: PacketOrigin, from_client: bool) -> ObservationPoint {
    match origin {
        PacketOrigin::Outgoing if from_client => ObservationPoint::ClientNic,
        PacketOrigin::Incoming if !from_client => ObservationPoint::ClientNic,
        PacketOrigin::Outgoing
        | PacketOrigin::Incoming
        | PacketOrigin::Loopback
        | PacketOrigin::Other => ObservationPoint::ServerNic,
    }
}

fn to_us(ns: Option<u64>) -> Option<u64> {
    ns.map(|ns| ns / 1_000)
}

impl Flow {
    fn direction_of(&self, source: SocketAddr) -> usize {
        if source == self.key.client {
            CLIENT_TO_SERVER
        } else {
            SERVER_TO_CLIENT
        }
    }

    fn count_payload(&mut self, direction: usize, bytes: u32) {
        self.interval.dir[direction].payload_bytes += u64::from(bytes);
        self.totals[direction].payload_bytes += u64::from(bytes);
    }

    /// The connection's close, if it was seen: when and how.
    fn closed(&self) -> Option<(u64, CloseType)> {
        self.tcp.as_ref().and_then(|tcp| tcp.closed)
    }

    fn handshake_pending(&self) -> bool {
        self.tcp
            .as_ref()
            .is_some_and(|tcp| tcp.result == ConnectionResult::Pending)
    }

    /// Builds the record of the interval now ending, and starts a new interval.
    fn record(&mut self, close_type: CloseType, result: ConnectionResult) -> L4FlowRecord {
        let interval = std::mem::take(&mut self.interval);
        let [tx, rx] = interval.dir;
        let (rtt_client_us, rtt_server_us, flags) = match &self.tcp {
            Some(tcp) => (
                to_us(tcp.rtt_client_ns),
                to_us(tcp.rtt_server_ns),
                tcp.flags,
            ),
            None => (None, None, [TcpFlags::default(); 2]),
        };
        let rtt_us = rtt_client_us.zip(rtt_server_us).map(|(c, s)| c + s);
        let rtt_known = rtt_client_us.is_some() || rtt_server_us.is_some();
        let rtt_sample = rtt_known && !self.rtt_reported;
        self.rtt_reported |= rtt_known;
        let is_new_flow = self.records == 0;
        self.records += 1;
        L4FlowRecord {
            flow_id: self.id,
            key: self.key,
            observation_point: self.observation_point,
            vlan: self.vlan,
            l7_protocol: self.l7.protocol(),
            start_ns: self.start_ns,
            end_ns: self.last_ns,
            is_new_flow,
            packets_tx: tx.packets,
            packets_rx: rx.packets,
            bytes_tx: tx.bytes,
            bytes_rx: rx.bytes,
            l3_bytes_tx: tx.l3_bytes,
            l3_bytes_rx: rx.l3_bytes,
            payload_bytes_tx: tx.payload_bytes,
            payload_bytes_rx: rx.payload_bytes,
            total_packets_tx: self.totals[CLIENT_TO_SERVER].packets,
            total_packets_rx: self.totals[SERVER_TO_CLIENT].packets,
            total_bytes_tx: self.totals[CLIENT_TO_SERVER].bytes,
            total_bytes_rx: self.totals[SERVER_TO_CLIENT].bytes,
            total_payload_bytes_tx: self.totals[CLIENT_TO_SERVER].payload_bytes,
            total_payload_bytes_rx: self.totals[SERVER_TO_CLIENT].payload_bytes,
            syn_count: interval.syn,
            synack_count: interval.synack,
            retrans_syn: interval.retrans_syn,
            retrans_synack: interval.retrans_synack,
            retrans_tx: tx.retrans,
            retrans_rx: rx.retrans,
            zero_win_tx: tx.zero_win,
            zero_win_rx: rx.zero_win,
            rst_tx: tx.rst,
            rst_rx: rx.rst,
            tcp_flags_tx: flags[CLIENT_TO_SERVER],
            tcp_flags_rx: flags[SERVER_TO_CLIENT],
            rtt_us,
            rtt_client_us,
            rtt_server_us,
            rtt_sample,
            result,
            close_type,
        }
    }
}

/// Wraps a flow's L7 records with the flow's identity.
fn emit_l7(
    flow: &Flow,
    scratch: &mut Vec<L7Record>,
    out: &mut ProcessorOutput,
    stats: &mut TableStats,
) {
    stats.l7_records += scratch.len() as u64;
    out.l7
        .extend(scratch.drain(..).map(|record| L7PacketRecord {
            flow_id: flow.id,
            key: flow.key,
            observation_point: flow.observation_point,
            record,
        }));
}

/// Ends `flow` at `now_ns`: its L7 conversation closes and its final record is emitted.
fn finish(
    mut flow: Flow,
    close_type: CloseType,
    now_ns: u64,
    budget: &mut ReorderBudget,
    scratch: &mut Vec<L7Record>,
    out: &mut ProcessorOutput,
    stats: &mut TableStats,
) {
    flow.l7.close(now_ns, budget, scratch);
    emit_l7(&flow, scratch, out, stats);
    let result = match &flow.tcp {
        Some(tcp) if close_type == CloseType::Timeout => tcp.result_at_timeout(),
        Some(tcp) => tcp.result,
        None => ConnectionResult::Unknown,
    };
    out.l4.push(flow.record(close_type, result));
    stats.l4_records += 1;
}

impl FlowTable {
    pub(crate) fn new(config: &PacketConfig) -> Self {
        FlowTable {
            config: TableConfig {
                idle_ns: duration_ns(config.flow_idle_timeout),
                handshake_ns: duration_ns(config.handshake_timeout),
                linger_ns: duration_ns(config.closed_flow_linger),
                report_ns: duration_ns(config.report_interval).max(1),
                reorder_timeout_ns: duration_ns(config.reorder_timeout),
                max_flows: config.max_flows.max(1),
                l7_enabled: config.l7_enabled,
                conversation: config.conversation.clone(),
                reorder_max_bytes: config.reorder_max_bytes,
            },
            flows: HashMap::new(),
            next_id: 1,
            next_sweep_ns: 0,
            next_report_ns: None,
            budget: ReorderBudget::new(config.reorder_budget_bytes),
            scratch: Vec::new(),
            stats: TableStats::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    pub(crate) fn stats(&self) -> TableStats {
        self.stats
    }

    /// Out-of-order payload held now, and holes given up so far.
    pub(crate) fn reorder_stats(&self) -> (usize, u64) {
        (self.budget.in_use, self.budget.gaps)
    }

    /// Accounts one packet.
    pub(crate) fn packet(
        &mut self,
        meta: &PacketMeta,
        packet: &DecodedPacket<'_>,
        out: &mut ProcessorOutput,
    ) {
        let ts = meta.timestamp_ns;
        let source = SocketAddr::new(packet.src, packet.src_port);
        let destination = SocketAddr::new(packet.dst, packet.dst_port);
        let key = CanonicalKey::new(meta.ifindex, packet.protocol, source, destination);

        // A SYN that starts a new connection on the 5-tuple ends the old flow.
        if let Some(tcp) = &packet.tcp
            && tcp.flags.contains(TcpFlags::SYN)
            && !tcp.flags.contains(TcpFlags::ACK)
            && let Some(flow) = self.flows.get(&key)
            && (flow.key.client != source
                || flow
                    .tcp
                    .as_ref()
                    .is_none_or(|t| t.is_new_connection(tcp.seq)))
            && let Some(old) = self.flows.remove(&key)
        {
            let close_type = old
                .closed()
                .map_or(CloseType::PortReused, |(_, close)| close);
            finish(
                old,
                close_type,
                ts,
                &mut self.budget,
                &mut self.scratch,
                out,
                &mut self.stats,
            );
        }

        if !self.flows.contains_key(&key) {
            if self.flows.len() >= self.config.max_flows {
                self.evict_one(ts, out);
            }
            let (client, server) = orient(packet);
            let opened_by_syn = packet.tcp.is_some_and(|tcp| {
                tcp.flags.contains(TcpFlags::SYN) && !tcp.flags.contains(TcpFlags::ACK)
            });
            let flow = Flow {
                id: self.next_id,
                key: FlowKey {
                    ifindex: meta.ifindex,
                    protocol: packet.protocol,
                    client,
                    server,
                },
                observation_point: observation_point(meta.origin, source == client),
                vlan: packet.vlan,
                start_ns: ts,
                last_ns: ts,
                interval: Counters::default(),
                totals: Default::default(),
                tcp: (packet.protocol == TransportProtocol::Tcp)
                    .then(|| TcpTracker::new(opened_by_syn)),
                l7: L7Flow::new(self.config.l7_enabled),
                records: 0,
                rtt_reported: false,
            };
            self.next_id += 1;
            self.stats.flows_created += 1;
            self.flows.insert(key, flow);
        }
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };

        let direction = flow.direction_of(source);
        flow.start_ns = flow.start_ns.min(ts);
        flow.last_ns = flow.last_ns.max(ts);
        let wire_len = u64::from(meta.wire_len.max(packet.ip_len));
        let counters = &mut flow.interval.dir[direction];
        counters.packets += 1;
        counters.bytes += wire_len;
        counters.l3_bytes += u64::from(packet.ip_len);
        let totals = &mut flow.totals[direction];
        totals.packets += 1;
        totals.bytes += wire_len;

        let limits = L7Limits {
            conversation: &self.config.conversation,
            reorder_max_bytes: self.config.reorder_max_bytes,
        };
        match (&packet.tcp, flow.tcp.as_mut()) {
            (Some(header), Some(tracker)) => {
                let info = tracker.segment(
                    direction,
                    header,
                    packet.payload_len,
                    ts,
                    &mut flow.interval,
                );
                // Retransmitted copies are not counted again: payload is what was written.
                flow.count_payload(direction, info.new_payload);
                if info.syn {
                    flow.l7.streams[direction].start_at(info.data_seq);
                }
                if packet.payload_len > 0 && !flow.l7.is_done() {
                    let seq = if info.syn {
                        header.seq.wrapping_add(1)
                    } else {
                        header.seq
                    };
                    let piece = Piece {
                        seq,
                        byte_count: packet.payload_len,
                        payload: packet.payload,
                        ts,
                    };
                    flow.l7.tcp_segment(
                        direction,
                        info.data_seq,
                        piece,
                        limits,
                        &mut self.budget,
                        &mut self.scratch,
                    );
                }
            }
            _ => {
                flow.count_payload(direction, packet.payload_len);
                let piece = Piece {
                    seq: 0,
                    byte_count: packet.payload_len,
                    payload: packet.payload,
                    ts,
                };
                flow.l7.datagram(
                    direction,
                    piece,
                    limits,
                    &mut self.budget,
                    &mut self.scratch,
                );
            }
        }
        if !self.scratch.is_empty() {
            emit_l7(flow, &mut self.scratch, out, &mut self.stats);
        }
    }

    /// Periodic work at `now_ns`: final records of flows closed for the linger time or
    /// idle for their timeout, periodic records of open flows, L7 timeouts.
    pub(crate) fn tick(&mut self, now_ns: u64, out: &mut ProcessorOutput) {
        if now_ns < self.next_sweep_ns {
            return;
        }
        self.next_sweep_ns = now_ns.saturating_add(SWEEP_INTERVAL_NS);
        let report_ns = self.config.report_ns;
        let next_boundary = (now_ns / report_ns)
            .saturating_add(1)
            .saturating_mul(report_ns);
        let report_due = match self.next_report_ns {
            Some(due) if now_ns >= due => {
                self.next_report_ns = Some(next_boundary);
                true
            }
            Some(_) => false,
            None => {
                self.next_report_ns = Some(next_boundary);
                false
            }
        };
        let FlowTable {
            config,
            flows,
            budget,
            scratch,
            stats,
            ..
        } = self;
        let mut ended = Vec::new();
        for (key, flow) in flows.iter_mut() {
            if let Some((closed_ns, close_type)) = flow.closed() {
                if now_ns >= closed_ns.saturating_add(config.linger_ns) {
                    ended.push((*key, close_type));
                    continue;
                }
            } else {
                let timeout = if flow.handshake_pending() {
                    config.handshake_ns
                } else {
                    config.idle_ns
                };
                if now_ns >= flow.last_ns.saturating_add(timeout) {
                    ended.push((*key, CloseType::Timeout));
                    continue;
                }
            }
            flow.l7
                .tick(now_ns, config.reorder_timeout_ns, budget, scratch);
            if !scratch.is_empty() {
                emit_l7(flow, scratch, out, stats);
            }
            let [tx, rx] = &flow.interval.dir;
            if report_due && tx.packets + rx.packets > 0 {
                let result = flow
                    .tcp
                    .as_ref()
                    .map_or(ConnectionResult::Unknown, |tcp| tcp.result);
                out.l4.push(flow.record(CloseType::Open, result));
                stats.l4_records += 1;
            }
        }
        for (key, close_type) in ended {
            if let Some(flow) = self.flows.remove(&key) {
                finish(
                    flow,
                    close_type,
                    now_ns,
                    &mut self.budget,
                    &mut self.scratch,
                    out,
                    &mut self.stats,
                );
            }
        }
    }

    /// Ends every flow now (shutdown): flows seen closing keep their close type, the
    /// others get [`CloseType::Flushed`].
    pub(crate) fn flush(&mut self, now_ns: u64, out: &mut ProcessorOutput) {
        let flows: Vec<Flow> = self.flows.drain().map(|(_, flow)| flow).collect();
        for flow in flows {
            let close_type = flow.closed().map_or(CloseType::Flushed, |(_, close)| close);
            finish(
                flow,
                close_type,
                now_ns,
                &mut self.budget,
                &mut self.scratch,
                out,
                &mut self.stats,
            );
        }
    }

    /// Makes room for one flow: ends the least recently active of a few flows (the
    /// `HashMap`'s iteration order is as good as random here).
    fn evict_one(&mut self, now_ns: u64, out: &mut ProcessorOutput) {
        let victim = self
            .flows
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|(_, flow)| (flow.closed().is_none(), flow.last_ns))
            .map(|(key, _)| *key);
        if let Some(flow) = victim.and_then(|key| self.flows.remove(&key)) {
            let close_type = flow.closed().map_or(CloseType::Evicted, |(_, close)| close);
            self.stats.flows_evicted += 1;
            finish(
                flow,
                close_type,
                now_ns,
                &mut self.budget,
                &mut self.scratch,
                out,
                &mut self.stats,
            );
        }
    }
}

#[cfg(test)]
mod tests;
