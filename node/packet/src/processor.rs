//! [`PacketProcessor`]: frames in, flow records out. Pure: no socket, no clock.

use crate::config::PacketConfig;
use crate::decode::{DecodeError, DecodedPacket, decode};
use crate::flows::record::{L4FlowRecord, L7PacketRecord};
use crate::flows::{FlowTable, PacketMeta};
use crate::{Frame, PacketError};

/// What one call produced. Callers drain the vectors (or [`ProcessorOutput::clear`] it)
/// between calls; the processor only appends.
#[derive(Debug, Default)]
pub struct ProcessorOutput {
    /// Rows of `flow_log.l4_flow_log`.
    pub l4: Vec<L4FlowRecord>,
    /// Rows of `flow_log.l7_flow_log` with `signal_source = packet`.
    pub l7: Vec<L7PacketRecord>,
}

impl ProcessorOutput {
    /// Whether nothing was produced.
    pub fn is_empty(&self) -> bool {
        self.l4.is_empty() && self.l7.is_empty()
    }

    /// Drops all records, keeping the allocations.
    pub fn clear(&mut self) {
        self.l4.clear();
        self.l7.clear();
    }
}

/// Counters of a [`PacketProcessor`], for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessorStats {
    /// Frames given to [`PacketProcessor::process_frame`].
    pub frames: u64,
    /// Frames decoded into TCP or UDP packets.
    pub packets: u64,
    /// Frames that were not IP (ARP, LLDP ...).
    pub not_ip: u64,
    /// IP fragments (skipped, not reassembled).
    pub fragments: u64,
    /// IP packets that were neither TCP nor UDP.
    pub other_transport: u64,
    /// Frames cut inside a header.
    pub truncated: u64,
    /// Frames with contradictory headers.
    pub malformed: u64,
    /// Flows tracked now.
    pub flows_active: u64,
    /// Flows created so far.
    pub flows_created: u64,
    /// Flows evicted because the table was full.
    pub flows_evicted: u64,
    /// L4 records emitted.
    pub l4_records: u64,
    /// L7 records emitted.
    pub l7_records: u64,
    /// Holes in TCP streams given up (fed to the L7 parser as gaps).
    pub reorder_gaps: u64,
    /// Out-of-order TCP payload held now, bytes.
    pub reorder_bytes: u64,
}

/// Decodes frames and runs the flow table (see [`crate::flows`]).
///
/// Single-threaded and deterministic: its only inputs are the frames (with their capture
/// timestamps) and the `now_ns` of [`PacketProcessor::tick`], so everything but the socket
/// is testable without privileges. Memory is bounded by the [`PacketConfig`].
#[derive(Debug)]
pub struct PacketProcessor {
    table: FlowTable,
    stats: ProcessorStats,
}

impl PacketProcessor {
    /// A processor with no flows.
    pub fn new(config: &PacketConfig) -> Result<Self, PacketError> {
        config.validate()?;
        Ok(PacketProcessor {
            table: FlowTable::new(config),
            stats: ProcessorStats::default(),
        })
    }

    /// Decodes one captured frame and accounts it. Frames that are not TCP or UDP over IP
    /// are counted and skipped.
    pub fn process_frame(&mut self, frame: &Frame<'_>, out: &mut ProcessorOutput) {
        self.stats.frames += 1;
        match decode(frame.link, frame.data, frame.wire_len) {
            Ok(mut packet) => {
                if packet.vlan.is_none() {
                    packet.vlan = frame.offloaded_vlan;
                }
                let meta = PacketMeta {
                    ifindex: frame.ifindex,
                    timestamp_ns: frame.timestamp_ns,
                    wire_len: frame.wire_len,
                    origin: frame.origin,
                };
                self.process_packet(&meta, &packet, out);
            }
            Err(error) => {
                let counter = match error {
                    DecodeError::NotIp { .. } => &mut self.stats.not_ip,
                    DecodeError::Fragment => &mut self.stats.fragments,
                    DecodeError::OtherTransport { .. } => &mut self.stats.other_transport,
                    DecodeError::Truncated { .. } => &mut self.stats.truncated,
                    DecodeError::Malformed { .. } => &mut self.stats.malformed,
                };
                *counter += 1;
            }
        }
    }

    /// Accounts one already decoded packet.
    pub fn process_packet(
        &mut self,
        meta: &PacketMeta,
        packet: &DecodedPacket<'_>,
        out: &mut ProcessorOutput,
    ) {
        self.stats.packets += 1;
        self.table.packet(meta, packet, out);
    }

    /// Periodic work; call it at least every few hundred milliseconds with the current
    /// Unix-epoch time (it does nothing when called more often than every 100 ms). Emits
    /// the final records of flows closed for `closed_flow_linger` or idle past their
    /// timeout, the periodic records of open flows at each `report_interval` boundary, and
    /// L7 timeout rows.
    pub fn tick(&mut self, now_ns: u64, out: &mut ProcessorOutput) {
        self.table.tick(now_ns, out);
    }

    /// Ends every flow (at shutdown), emitting final records and pending L7 rows.
    pub fn flush(&mut self, now_ns: u64, out: &mut ProcessorOutput) {
        self.table.flush(now_ns, out);
    }

    /// Counters so far.
    pub fn stats(&self) -> ProcessorStats {
        let table = self.table.stats();
        let (reorder_bytes, reorder_gaps) = self.table.reorder_stats();
        ProcessorStats {
            flows_active: self.table.len() as u64,
            flows_created: table.flows_created,
            flows_evicted: table.flows_evicted,
            l4_records: table.l4_records,
            l7_records: table.l7_records,
            reorder_gaps,
            reorder_bytes: reorder_bytes as u64,
            ..self.stats
        }
    }
}
