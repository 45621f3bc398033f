//! The packet path of flowmesh: AF_PACKET capture on configured interfaces, turned into
//! `flow_log.l4_flow_log` rows (the input of `flow_metrics.network` / `network_map`) and
//! `flow_log.l7_flow_log` rows with `signal_source = packet` (DESIGN.md §3, §4).
//!
//! # Role
//!
//! eBPF sees what processes on this host read and write; packets see what crosses an
//! interface — including hosts and processes eBPF cannot see, and TCP behaviour (handshake
//! RTT, retransmissions, resets, zero windows, failed connections) that syscalls do not
//! show. This crate owns that path up to the records; the node runs it on a thread, tags
//! the records and writes the tables.
//!
//! # Main types
//!
//! - [`PacketCapture`]: one `AF_PACKET` socket per interface with a TPACKET_V3 mmap'd ring
//!   and a classic BPF filter ([`FilterBuilder`] builds the default "IPv4/IPv6, TCP or
//!   UDP", optionally for a set of ports). [`PacketCapture::poll_frames`] hands out
//!   [`Frame`]s; [`PacketCapture::stats`] reports kernel drops. The only part that needs
//!   `CAP_NET_RAW`, and the only unsafe code.
//! - [`decode()`]: Ethernet/VLAN, IPv4/IPv6, TCP/UDP headers into a [`DecodedPacket`].
//! - [`PacketProcessor`]: pure and deterministic. Takes frames (or decoded packets) with
//!   their timestamps, runs the flow table ([`flows`]) and each flow's L7
//!   [`flowmesh_protocols::Conversation`], and yields [`L4FlowRecord`]s and
//!   [`L7PacketRecord`]s into a [`ProcessorOutput`].
//!
//! A node's loop is:
//!
//! ```no_run
//! # use flowmesh_packet::*;
//! # fn now_ns() -> u64 { 0 }
//! # fn run(config: &PacketConfig) -> Result<(), PacketError> {
//! let mut capture = PacketCapture::open(config)?;
//! let mut processor = PacketProcessor::new(config)?;
//! let mut out = ProcessorOutput::default();
//! loop {
//!     capture.poll_frames(|frame| processor.process_frame(frame, &mut out))?;
//!     processor.tick(now_ns(), &mut out);
//!     // write out.l4 and out.l7, then:
//!     out.clear();
//! }
//! # }
//! ```
//!
//! # Invariants
//!
//! - Byte counts are exact whatever the snap length: payload bytes come from the IP and
//!   TCP/UDP length fields, and for TCP only sequence space not seen before counts, so a
//!   flow's `payload_bytes_*` summed over its records equal what each side wrote, however
//!   often parts of it were retransmitted (wire bytes count every copy).
//! - On loopback each packet is counted once (the kernel shows it leaving and arriving;
//!   the arriving copy is kept).
//! - Traffic no parser recognises is still an L4 flow and never an L7 row; payload reaches
//!   the L7 parser in sequence order, each byte at most once, with holes as gaps.
//! - Nothing panics on any input; memory is bounded by [`PacketConfig`] (ring size, flow
//!   count, per-conversation limits, a shared budget for out-of-order payload). When a
//!   bound is hit, data is dropped and counted ([`CaptureStats`], [`ProcessorStats`]).

#![warn(missing_docs)]

pub mod capture;
mod config;
pub mod decode;
mod error;
pub mod filter;
pub mod flows;
mod frame;
mod processor;

pub use capture::{CaptureStats, InterfaceStats, PacketCapture};
pub use config::{MAX_SNAPLEN, PacketConfig};
pub use decode::{DecodeError, DecodedPacket, TcpFlags, TcpHeader, TransportProtocol, decode};
pub use error::PacketError;
pub use filter::FilterBuilder;
pub use flows::PacketMeta;
pub use flows::record::{
    CloseType, ConnectionResult, FlowKey, L4FlowRecord, L7PacketRecord, ObservationPoint,
};
pub use frame::{Frame, LinkType, PacketOrigin};
pub use processor::{PacketProcessor, ProcessorOutput, ProcessorStats};
