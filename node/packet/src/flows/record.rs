//! What the flow table emits: [`L4FlowRecord`] rows of `flow_log.l4_flow_log` (and the
//! input of `flow_metrics.network` / `network_map`), and [`L7PacketRecord`] rows of
//! `flow_log.l7_flow_log` with `signal_source = packet`.

use std::net::SocketAddr;

use flowmesh_protocols::{L7Protocol, L7Record, Role};

use crate::TransportProtocol;
use crate::decode::TcpFlags;

/// Where a flow was observed: the `observation_point` column.
///
/// A capture on a host's interface sees a flow either at the client's NIC (the client's
/// packets leave through it) or at the server's NIC (they arrive through it). On loopback
/// both ends are local; flowmesh reports `server_nic` there, the point at which
/// per-service metrics are normally counted. Mirrored traffic addressed to neither the
/// host nor from it is also reported as `server_nic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObservationPoint {
    /// `client_nic`: the capturing interface is the client's.
    ClientNic,
    /// `server_nic`: the capturing interface is the server's.
    ServerNic,
}

impl ObservationPoint {
    /// The value of the `observation_point` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ObservationPoint::ClientNic => "client_nic",
            ObservationPoint::ServerNic => "server_nic",
        }
    }
}

/// A flow's 5-tuple, oriented: `client` opened the connection (sent the SYN), or — when
/// the handshake was not seen — is the side the port heuristic picked (see
/// [`crate::flows`]). `client` gives `ip_0` / `client_port`, `server` gives `ip_1` /
/// `server_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Kernel index of the interface the flow was captured on: the same 5-tuple seen on
    /// two interfaces is two flows.
    pub ifindex: u32,
    /// TCP or UDP.
    pub protocol: TransportProtocol,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The server's address and port.
    pub server: SocketAddr,
}

/// How the TCP handshake went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionResult {
    /// SYN, SYN-ACK and the client's ACK were seen (or SYN-ACK and ACK, when capture
    /// started after the SYN).
    Established,
    /// The server answered the SYN with a RST (nothing listening): a failed connection.
    Refused,
    /// SYNs without a completed handshake until the flow timed out (no SYN-ACK, or no
    /// ACK to it): a failed connection.
    Timeout,
    /// The handshake began but a RST from the client, or a FIN, ended it before it
    /// completed.
    Aborted,
    /// A SYN was seen and the handshake is still under way (records of open flows).
    Pending,
    /// No SYN was seen: a TCP flow picked up mid-stream, or a UDP flow.
    Unknown,
}

impl ConnectionResult {
    /// Lowercase name, the value of the result column.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionResult::Established => "established",
            ConnectionResult::Refused => "refused",
            ConnectionResult::Timeout => "timeout",
            ConnectionResult::Aborted => "aborted",
            ConnectionResult::Pending => "pending",
            ConnectionResult::Unknown => "unknown",
        }
    }

    /// Whether this counts as a failed connection in `flow_metrics.network`.
    pub fn is_failure(self) -> bool {
        matches!(self, ConnectionResult::Refused | ConnectionResult::Timeout)
    }
}

/// Why a record was emitted: the flow is still open, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseType {
    /// The flow is still open; this is its periodic report.
    Open,
    /// Both sides sent FIN.
    Fin,
    /// The client sent RST.
    ClientRst,
    /// The server sent RST (including a RST refusing a SYN).
    ServerRst,
    /// No packet for the idle (or handshake) timeout.
    Timeout,
    /// Removed to make room for a new flow (the table was full).
    Evicted,
    /// A new SYN reused the 5-tuple of a flow that had not been seen closing.
    PortReused,
    /// The processor was flushed (shutdown) while the flow was open.
    Flushed,
}

impl CloseType {
    /// Lowercase name, the value of the `close_type` column.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseType::Open => "open",
            CloseType::Fin => "fin",
            CloseType::ClientRst => "client_rst",
            CloseType::ServerRst => "server_rst",
            CloseType::Timeout => "timeout",
            CloseType::Evicted => "evicted",
            CloseType::PortReused => "port_reused",
            CloseType::Flushed => "flushed",
        }
    }

    /// Whether this is the flow's last record.
    pub fn is_final(self) -> bool {
        self != CloseType::Open
    }
}

/// One row of `flow_log.l4_flow_log`: a flow's counters over one reporting interval.
///
/// A flow emits one record per `report_interval` in which it saw packets (close type
/// [`CloseType::Open`]) and a final one when it ends. Interval counters (`packets_*`,
/// `bytes_*`, `retrans_*` ...) cover only the packets since the previous record, so summing
/// a flow's records gives its totals; `total_*` fields carry the running totals.
///
/// `_tx` is the client-to-server direction, `_rx` server-to-client (DeepFlow's convention,
/// with `_0` the client and `_1` the server).
#[derive(Debug, Clone, PartialEq)]
pub struct L4FlowRecord {
    /// Identifier of the flow, unique within one processor's lifetime; the same in every
    /// record of the flow and in its [`L7PacketRecord`]s.
    pub flow_id: u64,
    /// The oriented 5-tuple and the capturing interface.
    pub key: FlowKey,
    /// `client_nic` or `server_nic`.
    pub observation_point: ObservationPoint,
    /// The outermost VLAN id of the flow's first packet, if tagged.
    pub vlan: Option<u16>,
    /// The application protocol the L7 parser recognised, if any.
    pub l7_protocol: Option<L7Protocol>,
    /// Capture time of the flow's first packet, Unix-epoch nanoseconds.
    pub start_ns: u64,
    /// Capture time of the flow's latest packet so far, Unix-epoch nanoseconds.
    pub end_ns: u64,
    /// True in the flow's first record (counts new connections).
    pub is_new_flow: bool,
    /// Packets client → server in this interval.
    pub packets_tx: u64,
    /// Packets server → client in this interval.
    pub packets_rx: u64,
    /// Frame bytes on the wire (link header included) client → server in this interval.
    pub bytes_tx: u64,
    /// Frame bytes on the wire server → client in this interval.
    pub bytes_rx: u64,
    /// IP bytes (IP header to end of payload) client → server in this interval.
    pub l3_bytes_tx: u64,
    /// IP bytes server → client in this interval.
    pub l3_bytes_rx: u64,
    /// Transport payload bytes client → server in this interval: what the client's
    /// application wrote. For TCP only bytes of sequence space not seen before count, so
    /// retransmitted copies do not (they are in `bytes_tx` and `retrans_tx`).
    pub payload_bytes_tx: u64,
    /// Transport payload bytes server → client in this interval (as `payload_bytes_tx`).
    pub payload_bytes_rx: u64,
    /// Packets client → server since the flow began.
    pub total_packets_tx: u64,
    /// Packets server → client since the flow began.
    pub total_packets_rx: u64,
    /// Frame bytes client → server since the flow began.
    pub total_bytes_tx: u64,
    /// Frame bytes server → client since the flow began.
    pub total_bytes_rx: u64,
    /// Payload bytes client → server since the flow began.
    pub total_payload_bytes_tx: u64,
    /// Payload bytes server → client since the flow began.
    pub total_payload_bytes_rx: u64,
    /// SYNs (without ACK) from the client in this interval, retransmissions included.
    pub syn_count: u32,
    /// SYN-ACKs from the server in this interval, retransmissions included.
    pub synack_count: u32,
    /// SYNs in this interval beyond the flow's first.
    pub retrans_syn: u32,
    /// SYN-ACKs in this interval beyond the flow's first.
    pub retrans_synack: u32,
    /// Client data segments in this interval whose sequence range had (partly) been seen
    /// before: retransmissions.
    pub retrans_tx: u32,
    /// Server data segments in this interval that were retransmissions.
    pub retrans_rx: u32,
    /// Client segments in this interval advertising a zero receive window.
    pub zero_win_tx: u32,
    /// Server segments in this interval advertising a zero receive window.
    pub zero_win_rx: u32,
    /// RST segments from the client in this interval.
    pub rst_tx: u32,
    /// RST segments from the server in this interval.
    pub rst_rx: u32,
    /// Union of the TCP flags the client sent, since the flow began.
    pub tcp_flags_tx: TcpFlags,
    /// Union of the TCP flags the server sent, since the flow began.
    pub tcp_flags_rx: TcpFlags,
    /// Handshake round trip seen from the capture point: `rtt_client_us + rtt_server_us`,
    /// once both are known.
    pub rtt_us: Option<u64>,
    /// The client-side half: from the SYN-ACK to the client's handshake ACK (the round
    /// trip between the capture point and the client).
    pub rtt_client_us: Option<u64>,
    /// The server-side half: from the (latest) SYN to the first SYN-ACK (the round trip
    /// between the capture point and the server).
    pub rtt_server_us: Option<u64>,
    /// True in exactly one record of a flow whose handshake RTT was measured: the first
    /// record carrying it. RTT aggregates (`rtt_sum`, `rtt_count`) use only these records;
    /// later records repeat the values for readers of single rows.
    pub rtt_sample: bool,
    /// How the handshake went.
    pub result: ConnectionResult,
    /// Open, or how the flow ended.
    pub close_type: CloseType,
}

/// One L7 request/response parsed from a flow's packets: a row of `flow_log.l7_flow_log`
/// with `signal_source = packet`.
///
/// The flow's L7 conversation models the flow's client process: bytes from `key.client`
/// are [`flowmesh_protocols::Direction::Egress`]. So `record.role` is
/// [`Role::Client`] when requests travel client → server (the usual case), and
/// [`Role::Server`] when the flow's server sends the requests (a mid-stream flow whose
/// orientation the port heuristic got backwards, or a server-initiated protocol).
/// [`L7PacketRecord::requester`] and [`L7PacketRecord::responder`] resolve this into
/// `ip_0` / `ip_1`. The `observation_point` column comes from `observation_point`, not
/// from `record.role`. Timestamps are packet capture times; `request_tid` and
/// `response_tid` are 0.
#[derive(Debug, Clone, PartialEq)]
pub struct L7PacketRecord {
    /// The flow the request belongs to.
    pub flow_id: u64,
    /// The flow's oriented 5-tuple.
    pub key: FlowKey,
    /// `client_nic` or `server_nic`.
    pub observation_point: ObservationPoint,
    /// The parsed request/response.
    pub record: L7Record,
}

impl L7PacketRecord {
    /// The side that sent the request: `ip_0` and `client_port`.
    pub fn requester(&self) -> SocketAddr {
        match self.record.role {
            Role::Client => self.key.client,
            Role::Server => self.key.server,
        }
    }

    /// The side that answered: `ip_1` and `server_port`.
    pub fn responder(&self) -> SocketAddr {
        match self.record.role {
            Role::Client => self.key.server,
            Role::Server => self.key.client,
        }
    }
}
