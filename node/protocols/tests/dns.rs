//! DNS through `Conversation`: messages recorded from dnsmasq and dig (tests/fixtures/dns),
//! over UDP (no sequence numbers, one message per chunk) and TCP, seen from either end,
//! cut by the capture, with lost and reordered messages.

mod common;

use common::{Udp, Wire};
use flowmesh_protocols::{Direction, L7Protocol, L7Record, ResponseStatus, Role, dns};

/// One socket of a fixture: (client sent it, bytes) per message or syscall.
type Socket = Vec<common::recorded::Recorded>;

/// The sockets of `tests/fixtures/dns/<name>.txt`.
fn fixture(name: &str) -> Vec<Socket> {
    common::hex::load("dns", name)
}

fn direction(from_client: bool, client_side: bool) -> Direction {
    if from_client == client_side {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

/// What the rows of udp.txt say: (name, type, rcode).
const UDP_ROWS: [(&str, &str, u16); 9] = [
    ("www.example.test", "A", 0),
    ("www.example.test", "AAAA", 0),
    ("example.test", "MX", 0),
    ("example.test", "TXT", 0),
    ("_mqtt._tcp.example.test", "SRV", 0),
    ("alias.example.test", "A", 0),
    ("2.0.0.10.in-addr.arpa", "PTR", 0),
    ("nope.example.test", "A", 3),
    ("example.com", "A", 5),
];

fn check_row(record: &L7Record, (name, qtype, rcode): (&str, &str, u16)) {
    assert_eq!(record.protocol, L7Protocol::Dns);
    assert_eq!(record.request_resource, name);
    assert_eq!(record.endpoint, name);
    assert_eq!(record.request_type, qtype);
    let domain = if qtype == "A" || qtype == "AAAA" {
        name
    } else {
        ""
    };
    assert_eq!(record.request_domain, domain, "{name} {qtype}");
    assert_eq!(record.response_code, Some(rcode), "{name}");
    let (status, exception) = match rcode {
        0 => (ResponseStatus::Ok, ""),
        3 => (ResponseStatus::ClientError, "NXDOMAIN"),
        5 => (ResponseStatus::ServerError, "REFUSED"),
        _ => unreachable!(),
    };
    assert_eq!(record.response_status, status);
    assert_eq!(record.response_exception, exception);
    assert_eq!(record.version, "");
    assert!(
        record
            .response_start_ns
            .is_some_and(|t| t > record.request_end_ns)
    );
}

#[test]
fn udp_queries_from_dig_seen_by_the_client_and_the_server() {
    let datagrams = fixture("udp").concat();
    assert_eq!(datagrams.len(), 18);
    for client_side in [true, false] {
        let mut udp = Udp::new();
        for (from_client, datagram) in &datagrams {
            udp.send(direction(*from_client, client_side), datagram, usize::MAX);
        }
        let expected_role = if client_side {
            Role::Client
        } else {
            Role::Server
        };
        assert_eq!(udp.conversation.role(), Some(expected_role));
        assert_eq!(udp.records.len(), UDP_ROWS.len());
        for (i, (record, expected)) in udp.records.iter().zip(UDP_ROWS).enumerate() {
            check_row(record, expected);
            assert_eq!(record.role, expected_role);
            assert_eq!(record.request_length, datagrams[2 * i].1.len() as u64);
            assert_eq!(
                record.response_length,
                Some(datagrams[2 * i + 1].1.len() as u64)
            );
            assert_eq!((record.req_tcp_seq, record.resp_tcp_seq), (None, None));
        }
        let stats = udp.conversation.stats();
        assert_eq!(
            (stats.records, stats.parse_errors, stats.unmatched_responses),
            (9, 0, 0)
        );
    }
}

#[test]
fn answers_are_summarised() {
    let datagrams = fixture("udp").concat();
    let answers: Vec<String> = datagrams
        .iter()
        .filter(|(from_client, _)| !from_client)
        .map(|(_, bytes)| dns::parse(bytes).unwrap().answers)
        .collect();
    assert_eq!(
        answers,
        [
            "10.0.0.2",
            "fd00::2",
            "mail.example.test",
            "\"v=spf1 -all\" \"flowmesh fixture\"",
            "broker.example.test:1883",
            "www.example.test;10.0.0.2",
            "www.example.test",
            "",
            "",
        ]
    );
}

#[test]
fn udp_datagrams_cut_by_the_capture() {
    let datagrams = fixture("udp").concat();
    // 64 bytes hold every header and question (the longest query is 54 bytes before its
    // OPT record): every row, with the datagrams' full lengths
    let mut udp = Udp::new();
    for (from_client, datagram) in &datagrams {
        udp.send(direction(*from_client, true), datagram, 64);
    }
    assert_eq!(udp.records.len(), 9);
    for (i, record) in udp.records.iter().enumerate() {
        check_row(record, UDP_ROWS[i]);
        assert_eq!(
            record.response_length,
            Some(datagrams[2 * i + 1].1.len() as u64)
        );
    }
    // 30 bytes cut most questions: those datagrams are dropped one by one, the others
    // still pair
    let mut udp = Udp::new();
    for (from_client, datagram) in &datagrams {
        udp.send(direction(*from_client, true), datagram, 30);
    }
    let names: Vec<&str> = udp
        .records
        .iter()
        .map(|r| r.request_resource.as_str())
        .collect();
    assert_eq!(names, ["example.test", "example.test", "example.com"]);
    assert!(udp.conversation.stats().parse_errors > 0);
}

#[test]
fn reused_ids_pair_by_question() {
    // one socket asks two servers with the same id; the answers come back in reverse order
    let datagrams = fixture("udp").concat();
    let (www_q, www_r) = (&datagrams[0].1, &datagrams[1].1);
    let (mut nope_q, mut nope_r) = (datagrams[14].1.clone(), datagrams[15].1.clone());
    nope_q[..2].copy_from_slice(&www_q[..2]);
    nope_r[..2].copy_from_slice(&www_q[..2]);
    let mut udp = Udp::new();
    udp.send(Direction::Egress, www_q, usize::MAX);
    udp.send(Direction::Egress, &nope_q, usize::MAX);
    udp.send(Direction::Ingress, &nope_r, usize::MAX);
    udp.send(Direction::Ingress, www_r, usize::MAX);
    let rows: Vec<(&str, Option<u16>)> = udp
        .records
        .iter()
        .map(|r| (r.request_resource.as_str(), r.response_code))
        .collect();
    assert_eq!(
        rows,
        [
            ("nope.example.test", Some(3)),
            ("www.example.test", Some(0))
        ]
    );
}

#[test]
fn unanswered_queries_time_out_and_stray_datagrams_are_dropped() {
    let datagrams = fixture("udp").concat();
    let mut udp = Udp::new();
    udp.send(Direction::Egress, &datagrams[0].1, usize::MAX);
    udp.send(Direction::Egress, b"\x00\x01not dns at all", usize::MAX);
    udp.send(Direction::Egress, &datagrams[2].1, usize::MAX);
    udp.send(Direction::Ingress, &datagrams[3].1, usize::MAX);
    assert_eq!(udp.records.len(), 1);
    assert_eq!(udp.records[0].request_type, "AAAA");
    let now = udp.clock + 60_000_000_000;
    udp.conversation.expire(now, &mut udp.records);
    assert_eq!(udp.records.len(), 2);
    assert_eq!(udp.records[1].request_type, "A");
    assert_eq!(udp.records[1].response_status, ResponseStatus::Timeout);
    assert_eq!(udp.records[1].response_code, None);
    // the late answer finds no request
    udp.send(Direction::Ingress, &datagrams[1].1, usize::MAX);
    assert_eq!(udp.records.len(), 2);
    assert_eq!(udp.conversation.stats().unmatched_responses, 1);
    assert_eq!(udp.conversation.stats().parse_errors, 1);
}

/// What the rows of tcp.txt say, per connection.
const TCP_ROWS: [&[(&str, &str, u16)]; 3] = [
    &[("www.example.test", "A", 0)],
    &[("nope.example.test", "AAAA", 3)],
    &[("example.test", "TXT", 0), ("example.test", "MX", 0)],
];

/// Turns one syscall's bytes into the syscalls sent and the bytes captured of each.
type Cut = fn(&[u8]) -> Vec<(Vec<u8>, usize)>;

/// Replays a TCP connection; `cut` turns one syscall's bytes into the syscalls sent and the
/// bytes captured of each.
fn replay_tcp(socket: &Socket, client_side: bool, cut: Cut) -> Wire {
    let mut wire = Wire::new();
    for (from_client, bytes) in socket {
        for (syscall, cap) in cut(bytes) {
            wire.send_capped(direction(*from_client, client_side), &syscall, cap);
        }
    }
    wire.close();
    wire
}

#[test]
fn tcp_queries_from_dig() {
    let sockets = fixture("tcp");
    assert_eq!(sockets.len(), 3);
    // as recorded; the length prefix in a syscall of its own (as many resolvers read it);
    // byte by byte; and captured 40 bytes per syscall (every header and question)
    let cuts: [Cut; 4] = [
        |b| vec![(b.to_vec(), usize::MAX)],
        |b| vec![(b[..2].to_vec(), usize::MAX), (b[2..].to_vec(), usize::MAX)],
        |b| b.iter().map(|x| (vec![*x], 1)).collect(),
        |b| vec![(b.to_vec(), 40)],
    ];
    for (c, cut) in cuts.into_iter().enumerate() {
        for client_side in [true, false] {
            for (socket, expected) in sockets.iter().zip(TCP_ROWS) {
                let wire = replay_tcp(socket, client_side, cut);
                assert_eq!(wire.records.len(), expected.len(), "cut {c}");
                let messages: Vec<&Vec<u8>> = socket.iter().map(|(_, b)| b).collect();
                for (i, (record, row)) in wire.records.iter().zip(expected.iter()).enumerate() {
                    check_row(record, *row);
                    assert_eq!(record.request_length, messages[2 * i].len() as u64);
                    assert_eq!(
                        record.response_length,
                        Some(messages[2 * i + 1].len() as u64)
                    );
                    assert!(record.req_tcp_seq.is_some() && record.resp_tcp_seq.is_some());
                    let role = if client_side {
                        Role::Client
                    } else {
                        Role::Server
                    };
                    assert_eq!(record.role, role);
                }
                let stats = wire.stats();
                assert_eq!((stats.parse_errors, stats.resyncs), (0, 0), "cut {c}");
            }
        }
    }
}

#[test]
fn tcp_pipelined_queries_in_one_write_and_answers_out_of_order() {
    let sockets = fixture("tcp");
    let keepopen = &sockets[2];
    let (txt_q, txt_r, mx_q, mx_r) = (
        &keepopen[0].1,
        &keepopen[1].1,
        &keepopen[2].1,
        &keepopen[3].1,
    );
    let mut wire = Wire::new();
    wire.send(Direction::Egress, &[txt_q.as_slice(), mx_q].concat());
    wire.send(Direction::Ingress, &[mx_r.as_slice(), txt_r].concat());
    let types: Vec<&str> = wire
        .records
        .iter()
        .map(|r| r.request_type.as_str())
        .collect();
    assert_eq!(types, ["MX", "TXT"]);
    assert_eq!(wire.records[1].request_length, txt_q.len() as u64);
    assert_eq!(
        wire.records[1].resp_tcp_seq,
        Some(wire.records[0].resp_tcp_seq.unwrap() + mx_r.len() as u32)
    );
}

#[test]
fn tcp_resynchronises_after_lost_bytes() {
    let sockets = fixture("tcp");
    let keepopen = &sockets[2];
    let mut wire = Wire::new();
    wire.send(Direction::Egress, &keepopen[0].1);
    wire.lose(Direction::Ingress, keepopen[1].1.len() as u32); // the TXT answer is lost
    wire.send(Direction::Egress, &keepopen[2].1);
    wire.send(Direction::Ingress, &keepopen[3].1);
    assert_eq!(wire.records.len(), 1);
    assert_eq!(wire.records[0].request_type, "MX");
    wire.close();
    assert_eq!(wire.records.len(), 2);
    assert_eq!(wire.records[1].request_type, "TXT");
    assert_eq!(wire.records[1].response_status, ResponseStatus::Unknown);
}

#[test]
fn noise_never_becomes_dns() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..200 {
        let mut udp = Udp::new();
        for _ in 0..12 {
            let len = (next() % 600) as usize;
            let datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let d = if next() % 2 == 0 {
                Direction::Egress
            } else {
                Direction::Ingress
            };
            udp.send(d, &datagram, usize::MAX);
        }
        assert_eq!(udp.conversation.protocol(), None);
        assert!(udp.records.is_empty());
    }
    // text protocols on TCP
    for stream in [
        &b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"*1\r\n$4\r\nPING\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let mut wire = Wire::new();
        wire.send(Direction::Egress, stream);
        assert_ne!(wire.conversation.protocol(), Some(L7Protocol::Dns));
    }
}
