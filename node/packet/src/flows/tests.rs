//! Flow table behaviour from hand-built packets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use flowmesh_protocols::{L7Protocol, ResponseStatus, Role};

use crate::decode::build::{tcp_frame, udp_frame};
use crate::{
    CloseType, ConnectionResult, Frame, L4FlowRecord, LinkType, ObservationPoint, PacketConfig,
    PacketOrigin, PacketProcessor, ProcessorOutput, TcpFlags, TransportProtocol,
};

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;
const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * SEC;

fn flags(list: &[TcpFlags]) -> TcpFlags {
    list.iter()
        .fold(TcpFlags::default(), |acc, flag| acc.union(*flag))
}

/// A TCP connection between `client` and `server` seen by one processor.
struct Wire {
    processor: PacketProcessor,
    out: ProcessorOutput,
    now: u64,
    client: SocketAddr,
    server: SocketAddr,
    /// Next sequence number of each side.
    client_seq: u32,
    server_seq: u32,
    origin: PacketOrigin,
}

fn config() -> PacketConfig {
    PacketConfig {
        closed_flow_linger: Duration::from_millis(500),
        report_interval: Duration::from_secs(10),
        ..PacketConfig::default()
    }
}

impl Wire {
    fn new(config: PacketConfig) -> Wire {
        Wire {
            processor: PacketProcessor::new(&config).unwrap(),
            out: ProcessorOutput::default(),
            now: T0,
            client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 45000),
            server: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 8080),
            client_seq: 1_000,
            server_seq: 4_000_000_000,
            origin: PacketOrigin::Incoming,
        }
    }

    /// Sends a segment at `self.now` with explicit sequence numbers.
    fn raw(
        &mut self,
        from_client: bool,
        flags: TcpFlags,
        seq: u32,
        ack: u32,
        window: u16,
        payload: &[u8],
    ) {
        let (src, dst) = if from_client {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        let frame = tcp_frame(
            (src.ip(), src.port()),
            (dst.ip(), dst.port()),
            seq,
            ack,
            flags,
            window,
            payload,
            payload.len(),
        );
        self.process(&frame);
    }

    fn process(&mut self, frame: &[u8]) {
        self.processor.process_frame(
            &Frame {
                ifindex: 7,
                timestamp_ns: self.now,
                wire_len: frame.len() as u32,
                link: LinkType::Ethernet,
                origin: self.origin,
                offloaded_vlan: None,
                data: frame,
            },
            &mut self.out,
        );
    }

    /// Sends the next in-order segment of one side, advancing its sequence number.
    fn send(&mut self, from_client: bool, flags: TcpFlags, payload: &[u8]) {
        let (seq, ack) = if from_client {
            (self.client_seq, self.server_seq)
        } else {
            (self.server_seq, self.client_seq)
        };
        self.raw(from_client, flags, seq, ack, 1000, payload);
        let advance = payload.len() as u32
            + u32::from(flags.contains(SYN))
            + u32::from(flags.contains(TcpFlags::FIN));
        if from_client {
            self.client_seq = self.client_seq.wrapping_add(advance);
        } else {
            self.server_seq = self.server_seq.wrapping_add(advance);
        }
    }

    fn handshake(&mut self) {
        self.send(true, SYN, b"");
        self.now += 100 * US;
        self.send(false, flags(&[SYN, ACK]), b"");
        self.now += 50 * US;
        self.send(true, ACK, b"");
    }

    fn close_by_fin(&mut self) {
        let fin_ack = flags(&[TcpFlags::FIN, ACK]);
        self.send(true, fin_ack, b"");
        self.send(false, ACK, b"");
        self.send(false, fin_ack, b"");
        self.send(true, ACK, b"");
    }

    fn tick(&mut self, at: u64) {
        self.processor.tick(at, &mut self.out);
    }

    fn records(&self) -> &[L4FlowRecord] {
        &self.out.l4
    }

    fn only_record(&self) -> &L4FlowRecord {
        assert_eq!(self.out.l4.len(), 1, "{:#?}", self.out.l4);
        &self.out.l4[0]
    }
}

#[test]
fn handshake_rtt_bytes_and_fin_close() {
    let mut wire = Wire::new(config());
    wire.handshake();
    wire.now += MS;
    wire.send(true, flags(&[ACK, TcpFlags::PSH]), &[b'a'; 300]);
    wire.send(false, ACK, b"");
    wire.send(false, flags(&[ACK, TcpFlags::PSH]), &[b'b'; 700]);
    wire.send(true, ACK, b"");
    wire.close_by_fin();
    let closed_at = wire.now;

    // Closed, but lingering: no record yet.
    wire.tick(closed_at + 100 * MS);
    assert!(wire.records().is_empty());
    wire.tick(closed_at + 600 * MS);
    let record = wire.only_record();
    assert_eq!(record.key.client, wire.client);
    assert_eq!(record.key.server, wire.server);
    assert_eq!(record.key.protocol, TransportProtocol::Tcp);
    assert_eq!(record.key.ifindex, 7);
    assert_eq!(record.result, ConnectionResult::Established);
    assert_eq!(record.close_type, CloseType::Fin);
    assert_eq!(record.rtt_server_us, Some(100));
    assert_eq!(record.rtt_client_us, Some(50));
    assert_eq!(record.rtt_us, Some(150));
    assert!(record.rtt_sample && record.is_new_flow);
    assert_eq!(
        (record.payload_bytes_tx, record.payload_bytes_rx),
        (300, 700)
    );
    assert_eq!(
        (record.total_payload_bytes_tx, record.total_payload_bytes_rx),
        (300, 700)
    );
    // SYN, ACK, data, ACK, FIN, ACK from the client; SYN-ACK, ACK, data, ACK, FIN from
    // the server.
    assert_eq!((record.packets_tx, record.packets_rx), (6, 5));
    // Every frame is 14 + 20 + 20 bytes plus payload.
    assert_eq!(record.bytes_tx, 6 * 54 + 300);
    assert_eq!(record.l3_bytes_rx, 5 * 40 + 700);
    assert_eq!((record.syn_count, record.synack_count), (1, 1));
    assert_eq!((record.retrans_tx, record.retrans_rx), (0, 0));
    assert_eq!((record.rst_tx, record.rst_rx), (0, 0));
    assert!(record.tcp_flags_tx.contains(TcpFlags::FIN));
    assert!(record.tcp_flags_rx.contains(flags(&[SYN, ACK])));
    assert_eq!(record.start_ns, T0);
    assert_eq!(record.end_ns, closed_at);
    // The client's packets arrive on this interface: the server's NIC.
    assert_eq!(record.observation_point, ObservationPoint::ServerNic);
    assert_eq!(wire.processor.stats().flows_active, 0);
}

#[test]
fn retransmissions_are_overlaps_not_reordering() {
    let mut wire = Wire::new(config());
    wire.handshake();
    let base = wire.client_seq;
    let data = flags(&[ACK, TcpFlags::PSH]);
    // 100..200 arrives before 0..100: reordering, not a retransmission.
    wire.raw(true, data, base + 100, wire.server_seq, 1000, &[b'x'; 100]);
    wire.raw(true, data, base, wire.server_seq, 1000, &[b'x'; 100]);
    // The first segment again, then a partial overlap: two retransmissions.
    wire.raw(true, data, base, wire.server_seq, 1000, &[b'x'; 100]);
    wire.raw(true, data, base + 150, wire.server_seq, 1000, &[b'x'; 100]);
    // A retransmitted SYN-ACK.
    wire.raw(
        false,
        flags(&[SYN, ACK]),
        wire.server_seq - 1,
        base,
        1000,
        b"",
    );
    wire.processor.flush(wire.now, &mut wire.out);
    let record = wire.only_record();
    assert_eq!(record.retrans_tx, 2);
    assert_eq!(record.retrans_rx, 0);
    assert_eq!((record.synack_count, record.retrans_synack), (2, 1));
    // Payload bytes are what the client wrote (bytes 0..250 of its stream); the wire
    // carried every copy: SYN and ACK (40 IP bytes each), four 140-byte data segments.
    assert_eq!(record.payload_bytes_tx, 250);
    assert_eq!(record.total_payload_bytes_tx, 250);
    assert_eq!(record.l3_bytes_tx, 2 * 40 + 4 * 140);
    assert_eq!(record.close_type, CloseType::Flushed);
    assert_eq!(record.result, ConnectionResult::Established);
}

#[test]
fn rst_to_syn_is_refused() {
    let mut wire = Wire::new(config());
    wire.send(true, SYN, b"");
    wire.now += 20 * US;
    wire.raw(
        false,
        flags(&[TcpFlags::RST, ACK]),
        0,
        wire.client_seq,
        0,
        b"",
    );
    wire.tick(wire.now + 100 * MS);
    assert!(wire.records().is_empty(), "lingers first");
    wire.tick(wire.now + SEC);
    let record = wire.only_record();
    assert_eq!(record.result, ConnectionResult::Refused);
    assert!(record.result.is_failure());
    assert_eq!(record.close_type, CloseType::ServerRst);
    assert_eq!((record.rst_tx, record.rst_rx), (0, 1));
    // A RST carries window 0 but is not a zero-window advertisement.
    assert_eq!(record.zero_win_rx, 0);
    assert_eq!(record.rtt_us, None);
    assert!(!record.rtt_sample);
}

#[test]
fn syn_without_answer_times_out() {
    let mut wire = Wire::new(config());
    wire.send(true, SYN, b"");
    wire.now += SEC;
    wire.raw(true, SYN, wire.client_seq - 1, 0, 1000, b"");
    wire.tick(wire.now + 9 * SEC);
    assert!(wire.records().is_empty());
    wire.tick(wire.now + 10 * SEC);
    let record = wire.only_record();
    assert_eq!(record.result, ConnectionResult::Timeout);
    assert!(record.result.is_failure());
    assert_eq!(record.close_type, CloseType::Timeout);
    assert_eq!((record.syn_count, record.retrans_syn), (2, 1));
    assert_eq!(record.packets_tx, 2);
    assert_eq!(record.rtt_server_us, None);
}

#[test]
fn zero_windows_and_resets_per_direction() {
    let mut wire = Wire::new(config());
    wire.handshake();
    let (client_seq, server_seq) = (wire.client_seq, wire.server_seq);
    wire.raw(false, ACK, server_seq, client_seq, 0, b"");
    wire.raw(false, ACK, server_seq, client_seq, 0, b"");
    wire.raw(true, ACK, client_seq, server_seq, 0, b"");
    wire.raw(
        true,
        flags(&[TcpFlags::RST, ACK]),
        client_seq,
        server_seq,
        0,
        b"",
    );
    wire.tick(wire.now + SEC);
    let record = wire.only_record();
    assert_eq!((record.zero_win_tx, record.zero_win_rx), (1, 2));
    assert_eq!((record.rst_tx, record.rst_rx), (1, 0));
    assert_eq!(record.close_type, CloseType::ClientRst);
    assert_eq!(record.result, ConnectionResult::Established);
}

#[test]
fn http_from_packets_in_any_order() {
    let mut wire = Wire::new(config());
    wire.handshake();
    let request = b"GET /items/7?full=1 HTTP/1.1\r\nHost: shop\r\nX-Request-ID: abc\r\n\r\n";
    let (first, second) = request.split_at(20);
    let base = wire.client_seq;
    let data = flags(&[ACK, TcpFlags::PSH]);
    // The second half first, then a duplicate of it, then the first half.
    wire.raw(true, data, base + 20, wire.server_seq, 1000, second);
    wire.raw(true, data, base + 20, wire.server_seq, 1000, second);
    assert!(wire.out.l7.is_empty());
    wire.raw(true, data, base, wire.server_seq, 1000, first);
    wire.client_seq += request.len() as u32;
    let response = b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!";
    wire.now += 2 * MS;
    wire.send(false, data, response);
    assert_eq!(wire.out.l7.len(), 1, "{:#?}", wire.out.l7);
    let row = &wire.out.l7[0];
    assert_eq!(row.record.protocol, L7Protocol::Http1);
    assert_eq!(row.record.role, Role::Client);
    assert_eq!(row.record.request_type, "GET");
    assert_eq!(row.record.request_resource, "/items/7?full=1");
    assert_eq!(row.record.endpoint, "/items/7");
    assert_eq!(row.record.request_domain, "shop");
    assert_eq!(row.record.response_code, Some(404));
    assert_eq!(row.record.response_status, ResponseStatus::ClientError);
    assert_eq!(row.record.request_length, request.len() as u64);
    assert_eq!(row.record.response_length, Some(response.len() as u64));
    assert_eq!(row.record.req_tcp_seq, Some(base));
    assert_eq!(row.record.x_request_id.as_deref(), Some("abc"));
    assert_eq!(row.record.duration_us(), Some(2_000));
    assert_eq!(row.requester(), wire.client);
    assert_eq!(row.responder(), wire.server);
    assert_eq!(row.observation_point, ObservationPoint::ServerNic);
    wire.processor.flush(wire.now, &mut wire.out);
    let record = wire.only_record();
    assert_eq!(record.flow_id, wire.out.l7[0].flow_id);
    assert_eq!(record.l7_protocol, Some(L7Protocol::Http1));
    // The duplicate is a retransmission for L4 and invisible to L7.
    assert_eq!(record.retrans_tx, 1);
}

#[test]
fn a_hole_that_never_fills_becomes_a_gap_not_a_wrong_row() {
    let mut wire = Wire::new(PacketConfig {
        reorder_timeout: Duration::from_millis(200),
        ..config()
    });
    wire.handshake();
    let data = flags(&[ACK, TcpFlags::PSH]);
    let first = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n";
    wire.send(true, data, first);
    wire.send(false, data, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(wire.out.l7.len(), 1);
    // The second request's first 10 bytes are lost; the rest arrives.
    let second = b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n";
    let base = wire.client_seq;
    wire.raw(true, data, base + 10, wire.server_seq, 1000, &second[10..]);
    wire.client_seq += second.len() as u32;
    wire.now += 300 * MS;
    wire.tick(wire.now);
    wire.send(false, data, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    // A third request after the gap parses again.
    wire.send(true, data, b"GET /three HTTP/1.1\r\nHost: a\r\n\r\n");
    wire.send(
        false,
        data,
        b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
    );
    let paths: Vec<_> = wire
        .out
        .l7
        .iter()
        .map(|row| (row.record.endpoint.as_str(), row.record.response_code))
        .collect();
    assert_eq!(paths, vec![("/one", Some(200)), ("/three", Some(500))]);
    let stats = wire.processor.stats();
    assert_eq!(stats.reorder_gaps, 1);
    assert_eq!(stats.reorder_bytes, 0);
}

#[test]
fn unparseable_payload_is_an_l4_flow_without_l7_rows() {
    let mut wire = Wire::new(config());
    wire.handshake();
    let data = flags(&[ACK, TcpFlags::PSH]);
    let mut noise = 0x1234_5678u32;
    for _ in 0..20 {
        let bytes: Vec<u8> = (0..64)
            .map(|_| {
                noise ^= noise << 13;
                noise ^= noise >> 17;
                noise ^= noise << 5;
                noise as u8
            })
            .collect();
        wire.send(true, data, &bytes);
        wire.send(false, data, &bytes[..32]);
    }
    wire.close_by_fin();
    wire.tick(wire.now + SEC);
    assert!(wire.out.l7.is_empty());
    let record = wire.only_record();
    assert_eq!(record.l7_protocol, None);
    assert_eq!(
        (record.payload_bytes_tx, record.payload_bytes_rx),
        (20 * 64, 20 * 32)
    );
}

#[test]
fn mid_stream_flows_are_oriented_by_ports() {
    let mut wire = Wire::new(config());
    wire.client = SocketAddr::new(wire.client.ip(), 51000);
    wire.server = SocketAddr::new(wire.server.ip(), 443);
    // The first packet seen goes server → client.
    wire.send(false, flags(&[ACK, TcpFlags::PSH]), &[0x17; 100]);
    wire.send(true, ACK, b"");
    wire.processor.flush(wire.now, &mut wire.out);
    let record = wire.only_record();
    assert_eq!(record.key.server.port(), 443);
    assert_eq!(record.key.client.port(), 51000);
    assert_eq!((record.payload_bytes_tx, record.payload_bytes_rx), (0, 100));
    assert_eq!(record.result, ConnectionResult::Unknown);
    assert_eq!(record.rtt_us, None);
    // The client's packets were incoming, but the first packet (the server's) decides:
    // a server's packet arriving means this is the client's NIC.
    assert_eq!(record.observation_point, ObservationPoint::ClientNic);
}

#[test]
fn observation_point_follows_the_packet_origin() {
    for (origin, expected) in [
        (PacketOrigin::Outgoing, ObservationPoint::ClientNic),
        (PacketOrigin::Incoming, ObservationPoint::ServerNic),
        (PacketOrigin::Loopback, ObservationPoint::ServerNic),
    ] {
        let mut wire = Wire::new(config());
        wire.origin = origin;
        wire.send(true, SYN, b"");
        wire.processor.flush(wire.now, &mut wire.out);
        assert_eq!(wire.only_record().observation_point, expected);
        assert_eq!(wire.only_record().result, ConnectionResult::Pending);
    }
}

#[test]
fn periodic_records_sum_to_the_totals() {
    let mut wire = Wire::new(PacketConfig {
        report_interval: Duration::from_secs(1),
        ..config()
    });
    wire.tick(T0 - 10 * MS);
    wire.handshake();
    wire.send(true, flags(&[ACK, TcpFlags::PSH]), &[1; 10]);
    wire.tick(T0 + SEC);
    assert_eq!(wire.records().len(), 1);
    wire.now = T0 + SEC + MS;
    wire.send(true, flags(&[ACK, TcpFlags::PSH]), &[1; 30]);
    wire.send(false, flags(&[ACK, TcpFlags::PSH]), &[1; 5]);
    // Nothing happens in the next interval: no record for it.
    wire.tick(T0 + 2 * SEC);
    wire.tick(T0 + 3 * SEC);
    wire.now = T0 + 3 * SEC + MS;
    wire.close_by_fin();
    wire.tick(wire.now + SEC);
    let records = wire.records();
    assert_eq!(records.len(), 3, "{records:#?}");
    assert_eq!(
        records.iter().map(|r| r.close_type).collect::<Vec<_>>(),
        vec![CloseType::Open, CloseType::Open, CloseType::Fin]
    );
    assert_eq!(records.iter().map(|r| r.payload_bytes_tx).sum::<u64>(), 40);
    assert_eq!(records.iter().map(|r| r.payload_bytes_rx).sum::<u64>(), 5);
    assert_eq!(records[2].total_payload_bytes_tx, 40);
    assert_eq!(
        records
            .iter()
            .map(|r| r.packets_tx + r.packets_rx)
            .sum::<u64>(),
        records[2].total_packets_tx + records[2].total_packets_rx
    );
    assert_eq!(records.iter().filter(|r| r.is_new_flow).count(), 1);
    assert!(records[0].is_new_flow);
    assert_eq!(records.iter().filter(|r| r.rtt_sample).count(), 1);
    assert!(records.iter().all(|r| r.rtt_us == Some(150)));
    assert!(records.iter().all(|r| r.flow_id == records[0].flow_id));
}

#[test]
fn a_new_syn_on_a_closed_five_tuple_starts_a_new_flow() {
    let mut wire = Wire::new(config());
    wire.handshake();
    wire.close_by_fin();
    wire.client_seq = wire.client_seq.wrapping_add(100_000);
    wire.now += 10 * MS;
    wire.handshake();
    // The old flow ended at once, keeping its close type.
    let record = wire.only_record();
    assert_eq!(record.close_type, CloseType::Fin);
    wire.processor.flush(wire.now, &mut wire.out);
    assert_eq!(wire.records().len(), 2);
    let new = &wire.records()[1];
    assert_ne!(new.flow_id, wire.records()[0].flow_id);
    assert_eq!(new.result, ConnectionResult::Established);
    assert_eq!(new.syn_count, 1);
    assert_eq!(wire.processor.stats().flows_created, 2);
}

#[test]
fn the_table_is_bounded() {
    let mut wire = Wire::new(PacketConfig {
        max_flows: 2,
        ..config()
    });
    for port in [40001, 40002, 40003] {
        wire.client = SocketAddr::new(wire.client.ip(), port);
        wire.send(true, SYN, b"");
        wire.now += MS;
    }
    let stats = wire.processor.stats();
    assert_eq!((stats.flows_active, stats.flows_evicted), (2, 1));
    let record = wire.only_record();
    assert_eq!(record.close_type, CloseType::Evicted);
    assert_eq!(
        record.key.client.port(),
        40001,
        "the least recently active goes"
    );
}

#[test]
fn udp_flows_and_idle_timeout() {
    let mut wire = Wire::new(config());
    let client = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 53000);
    let server = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53)), 53);
    // The answer is seen first; the port decides who is the server anyway.
    wire.process(&udp_frame(server, client, &[0; 90]));
    wire.process(&udp_frame(client, server, &[0; 30]));
    wire.tick(wire.now + 59 * SEC);
    assert!(wire.records().is_empty());
    wire.tick(wire.now + 60 * SEC);
    let record = wire.only_record();
    assert_eq!(record.key.protocol, TransportProtocol::Udp);
    assert_eq!(record.key.server.port(), 53);
    assert_eq!((record.payload_bytes_tx, record.payload_bytes_rx), (30, 90));
    assert_eq!(record.close_type, CloseType::Timeout);
    assert_eq!(record.result, ConnectionResult::Unknown);
    assert_eq!(record.syn_count, 0);
}

#[test]
fn undecodable_frames_are_counted() {
    let mut wire = Wire::new(config());
    wire.process(&[0u8; 10]);
    let mut arp = vec![0u8; 42];
    arp[12] = 0x08;
    arp[13] = 0x06;
    wire.process(&arp);
    let stats = wire.processor.stats();
    assert_eq!((stats.frames, stats.packets), (2, 0));
    assert_eq!((stats.truncated, stats.not_ip), (1, 1));
    assert_eq!(stats.flows_active, 0);
}
