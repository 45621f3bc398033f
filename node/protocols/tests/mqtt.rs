//! MQTT through `Conversation`: connections recorded from mosquitto and its clients
//! (tests/fixtures/mqtt), MQTT 3.1.1 and 5, seen from the client and from the broker, with
//! packets split the way libmosquitto reads them, cut by the capture, and with lost bytes.

mod common;

use common::Wire;
use flowmesh_protocols::{Direction, L7Protocol, L7Record, ResponseStatus, Role};

/// One connection of a fixture: (client sent it, bytes) per syscall.
type Connection = Vec<common::recorded::Recorded>;

/// The connections of `tests/fixtures/mqtt/<name>.txt`.
fn fixture(name: &str) -> Vec<Connection> {
    common::hex::load("mqtt", name)
}

/// A row as the tests expect it: type, resource, code, status, exception, and whether the
/// broker sent the request.
type Row = (
    &'static str,
    &'static str,
    Option<u16>,
    &'static str,
    &'static str,
    bool,
);

const T: &str = "sensors/room1/temp";

/// How the bytes of one recorded syscall are sent.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// As recorded.
    Whole,
    /// Every packet in three syscalls: the first byte, the Remaining Length, the rest (as
    /// libmosquitto reads).
    LibmosquittoReads,
    /// Byte by byte.
    Bytewise,
}

/// The packets of a syscall's bytes, each cut into (first byte, remaining length, rest).
fn packet_parts(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let mut len = 0usize;
        let mut i = at + 1;
        let mut shift = 0;
        loop {
            let b = bytes[i];
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        parts.push(bytes[at..at + 1].to_vec());
        parts.push(bytes[at + 1..i].to_vec());
        if len > 0 {
            parts.push(bytes[i..i + len].to_vec());
        }
        at = i + len;
    }
    parts
}

fn replay(connection: &Connection, client_side: bool, cut: Cut) -> Wire {
    let mut wire = Wire::new();
    for (from_client, bytes) in connection {
        let direction = if *from_client == client_side {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        let syscalls = match cut {
            Cut::Whole => vec![bytes.clone()],
            Cut::LibmosquittoReads => packet_parts(bytes),
            Cut::Bytewise => bytes.iter().map(|b| vec![*b]).collect(),
        };
        for syscall in syscalls {
            wire.send(direction, &syscall);
        }
    }
    wire.close();
    wire
}

/// Replays every connection of fixture `name` in every way and checks its rows.
fn check(name: &str, version: &str, expected: &[(&str, &[Row])]) {
    let connections = fixture(name);
    assert_eq!(connections.len(), expected.len(), "{name}");
    for (connection, (client_id, rows)) in connections.iter().zip(expected) {
        for client_side in [true, false] {
            for cut in [Cut::Whole, Cut::LibmosquittoReads, Cut::Bytewise] {
                let wire = replay(connection, client_side, cut);
                let what = format!("{name} {client_id} client_side={client_side} {cut:?}");
                let socket_role = if client_side {
                    Role::Client
                } else {
                    Role::Server
                };
                assert_eq!(
                    wire.conversation.protocol(),
                    Some(L7Protocol::Mqtt),
                    "{what}"
                );
                assert_eq!(wire.conversation.role(), Some(socket_role), "{what}");
                // in the order requests started (a write holding a response and the next
                // request completes them in a different order when split)
                let mut records = wire.records.clone();
                records.sort_by_key(|r| r.request_start_ns);
                let got: Vec<Row> = records.iter().map(|r| row(r, socket_role)).collect();
                assert_eq!(got, rows.to_vec(), "{what}");
                for record in &wire.records {
                    assert_eq!(record.version, version, "{what}");
                    assert_eq!(record.request_domain, *client_id, "{what}");
                    assert_eq!(record.endpoint, record.request_resource, "{what}");
                    assert!(record.req_tcp_seq.is_some(), "{what}");
                    assert_eq!(
                        record.response_tid.is_some(),
                        record.response_length.is_some(),
                        "{what}"
                    );
                }
                let stats = wire.stats();
                assert_eq!(stats.records, rows.len() as u64, "{what}");
                assert_eq!((stats.parse_errors, stats.resyncs), (0, 0), "{what}");
                assert_eq!(stats.unmatched_responses, 0, "{what}");
            }
        }
    }
}

fn row(record: &L7Record, socket_role: Role) -> Row {
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let by_broker = record.role != socket_role;
    let expected_status = record.response_status;
    assert!(matches!(
        expected_status,
        ResponseStatus::Ok
            | ResponseStatus::ClientError
            | ResponseStatus::ServerError
            | ResponseStatus::Unknown
    ));
    (
        leak(&record.request_type),
        leak(&record.request_resource),
        record.response_code,
        record.response_status.as_str(),
        leak(&record.response_exception),
        by_broker,
    )
}

#[test]
fn v311_publish_qos_0_1_2() {
    check(
        "v311_publish",
        "3.1.1",
        &[
            (
                "pub-v311-q0",
                &[
                    ("CONNECT", "", Some(0), "ok", "", false),
                    ("PUBLISH", T, None, "ok", "", false),
                    ("DISCONNECT", "", None, "ok", "", false),
                ],
            ),
            (
                "pub-v311-q1",
                &[
                    ("CONNECT", "", Some(0), "ok", "", false),
                    ("PUBLISH", T, None, "ok", "", false),
                    ("DISCONNECT", "", None, "ok", "", false),
                ],
            ),
            (
                "pub-v311-q2",
                &[
                    ("CONNECT", "", Some(0), "ok", "", false),
                    ("PUBLISH", T, None, "ok", "", false),
                    ("PUBREL", T, None, "ok", "", false),
                    ("DISCONNECT", "", None, "ok", "", false),
                ],
            ),
        ],
    );
}

#[test]
fn v5_publish_qos_0_1_2() {
    check(
        "v5_publish",
        "5.0",
        &[
            (
                "pub-v5-q0",
                &[
                    ("CONNECT", "", Some(0), "ok", "", false),
                    ("PUBLISH", T, None, "ok", "", false),
                    ("DISCONNECT", "", Some(0), "ok", "", false),
                ],
            ),
            (
                "pub-v5-q1",
                &[
                    ("CONNECT", "", Some(0), "ok", "", false),
                    ("PUBLISH", T, Some(0), "ok", "", false),
                    ("DISCONNECT", "", Some(0), "ok", "", false),
                ],
            ),
            (
                "pub-v5-q2",
                &[
                    ("CONNECT", "", Some(0), "ok", "", false),
                    ("PUBLISH", T, Some(0), "ok", "", false),
                    ("PUBREL", T, Some(0), "ok", "", false),
                    ("DISCONNECT", "", Some(0), "ok", "", false),
                ],
            ),
        ],
    );
}

#[test]
fn v311_subscriber_receives_the_brokers_publishes() {
    check(
        "v311_subscribe",
        "3.1.1",
        &[(
            "sub-v311",
            &[
                ("CONNECT", "", Some(0), "ok", "", false),
                ("SUBSCRIBE", "sensors/#", Some(2), "ok", "", false),
                ("PUBLISH", T, None, "ok", "", true),
                ("PUBLISH", T, None, "ok", "", true),
                ("PUBLISH", T, None, "ok", "", true),
                ("PUBREL", T, None, "ok", "", true),
                ("DISCONNECT", "", None, "ok", "", false),
            ],
        )],
    );
}

#[test]
fn v5_subscriber_receives_the_brokers_publishes() {
    check(
        "v5_subscribe",
        "5.0",
        &[(
            "sub-v5",
            &[
                ("CONNECT", "", Some(0), "ok", "", false),
                ("SUBSCRIBE", "sensors/#", Some(2), "ok", "", false),
                ("PUBLISH", T, None, "ok", "", true),
                ("PUBLISH", T, Some(0), "ok", "", true),
                ("PUBLISH", T, Some(0), "ok", "", true),
                ("PUBREL", T, Some(0), "ok", "", true),
                ("DISCONNECT", "", Some(0), "ok", "", false),
            ],
        )],
    );
}

#[test]
fn v311_ping_unsubscribe_and_acks() {
    check(
        "v311_raw",
        "3.1.1",
        &[(
            "raw-v311",
            &[
                ("CONNECT", "", Some(0), "ok", "", false),
                (
                    "SUBSCRIBE",
                    "sensors/+/temp,secret/+",
                    Some(1),
                    "ok",
                    "",
                    false,
                ),
                ("PINGREQ", "", None, "ok", "", false),
                (
                    "UNSUBSCRIBE",
                    "sensors/+/temp,never/subscribed",
                    None,
                    "ok",
                    "",
                    false,
                ),
                ("PUBLISH", "lonely/topic", None, "ok", "", false),
                ("PUBLISH", "secret/topic", None, "ok", "", false),
                ("DISCONNECT", "", None, "ok", "", false),
            ],
        )],
    );
}

#[test]
fn v5_reason_codes() {
    check(
        "v5_raw",
        "5.0",
        &[(
            "raw-v5",
            &[
                ("CONNECT", "", Some(0), "ok", "", false),
                (
                    "SUBSCRIBE",
                    "sensors/+/temp,secret/+",
                    Some(1),
                    "ok",
                    "",
                    false,
                ),
                ("PINGREQ", "", None, "ok", "", false),
                (
                    "UNSUBSCRIBE",
                    "sensors/+/temp,never/subscribed",
                    Some(0),
                    "ok",
                    "",
                    false,
                ),
                ("PUBLISH", "lonely/topic", Some(0x10), "ok", "", false),
                (
                    "PUBLISH",
                    "secret/topic",
                    Some(0x87),
                    "client_error",
                    "Not authorized",
                    false,
                ),
                ("DISCONNECT", "", Some(0), "ok", "", false),
            ],
        )],
    );
}

#[test]
fn refused_connections() {
    check(
        "v311_refused",
        "3.1.1",
        &[(
            "intruder",
            &[(
                "CONNECT",
                "",
                Some(5),
                "client_error",
                "not authorized",
                false,
            )],
        )],
    );
    check(
        "v5_refused",
        "5.0",
        &[(
            "intruder",
            &[(
                "CONNECT",
                "",
                Some(0x87),
                "client_error",
                "Not authorized",
                false,
            )],
        )],
    );
}

#[test]
fn broker_disconnects_a_malformed_subscribe() {
    check(
        "v5_malformed",
        "5.0",
        &[(
            "raw-bad",
            &[
                ("CONNECT", "", Some(0), "ok", "", false),
                // never answered: reported at close
                ("SUBSCRIBE", "alerts/#/bad", None, "unknown", "", false),
                (
                    "DISCONNECT",
                    "",
                    Some(0x81),
                    "client_error",
                    "Malformed Packet",
                    true,
                ),
            ],
        )],
    );
}

#[test]
fn lengths_and_timing_of_a_qos2_delivery() {
    let connection = &fixture("v311_subscribe")[0];
    let wire = replay(connection, true, Cut::Whole);
    let sizes: Vec<usize> = connection.iter().map(|(_, b)| b.len()).collect();
    // PUBLISH QoS 2 (s, line 7) → PUBREC (c, 8); PUBREL (s, 9) → PUBCOMP (c, 10, with DISCONNECT)
    let publish = &wire.records[4];
    assert_eq!(publish.request_type, "PUBLISH");
    assert_eq!(publish.request_length, sizes[7] as u64);
    assert_eq!(publish.response_length, Some(sizes[8] as u64));
    assert_eq!(publish.role, Role::Server);
    // the DISCONNECT in the client's last write comes first, then the PUBREL it answers
    assert_eq!(wire.records[5].request_type, "DISCONNECT");
    let pubrel = &wire.records[6];
    assert_eq!(pubrel.request_type, "PUBREL");
    assert_eq!(
        (pubrel.request_length, pubrel.response_length),
        (4, Some(4))
    );
    assert!(pubrel.request_start_ns > publish.response_end_ns.unwrap());
    assert!(pubrel.response_start_ns.unwrap() > pubrel.request_end_ns);
    // the PUBCOMP starts the client's write; the DISCONNECT follows it
    assert_eq!(
        wire.records[5].req_tcp_seq,
        Some(pubrel.resp_tcp_seq.unwrap() + 4)
    );
}

/// CONNECT `id`, MQTT 5, then CONNACK: a connection ready for more packets.
fn connected_v5() -> Wire {
    let mut wire = Wire::new();
    wire.send(
        Direction::Egress,
        b"\x10\x12\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x05dev-1",
    );
    wire.send(Direction::Ingress, b"\x20\x03\x00\x00\x00");
    assert_eq!(wire.records.len(), 1);
    wire
}

fn publish(first: u8, topic: &str, id: Option<u16>, props: &[u8], payload_len: usize) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    if let Some(id) = id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.push(props.len() as u8);
    body.extend_from_slice(props);
    body.extend(std::iter::repeat_n(b'x', payload_len));
    let mut packet = vec![first];
    let mut n = body.len();
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        packet.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    packet.extend(body);
    packet
}

#[test]
fn big_publishes_through_the_capture_cap_and_topic_aliases() {
    let mut wire = connected_v5();
    // QoS 1, 5000-byte payload, topic alias 1 set; 1 KiB captured
    let big = publish(0x32, "bulk/data", Some(3), &[0x23, 0, 1], 5000);
    wire.send_capped(Direction::Egress, &big, 1024);
    // the alias alone, QoS 0, 3000 bytes, 1 KiB captured
    let aliased = publish(0x30, "", None, &[0x23, 0, 1], 3000);
    wire.send_capped(Direction::Egress, &aliased, 1024);
    wire.send(Direction::Ingress, b"\x40\x02\x00\x03");
    let rows: Vec<(&str, u64, Option<u64>)> = wire.records[1..]
        .iter()
        .map(|r| {
            (
                r.request_resource.as_str(),
                r.request_length,
                r.response_length,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("bulk/data", aliased.len() as u64, None),
            ("bulk/data", big.len() as u64, Some(4))
        ]
    );
    assert_eq!(wire.stats().resyncs, 0);
}

#[test]
fn a_subscribe_cut_by_the_capture_names_the_filters_captured() {
    let mut wire = connected_v5();
    // a 2000-byte PUBLISH and a SUBSCRIBE in one write, the capture ends inside the
    // SUBSCRIBE's second filter
    let big = publish(0x30, "bulk", None, &[], 1990);
    let subscribe = b"\x82\x14\x00\x07\x00\x00\x05first\x01\x00\x06second\x02";
    let write = [big.as_slice(), subscribe].concat();
    wire.send_capped(Direction::Egress, &write, big.len() + 14);
    wire.send(Direction::Ingress, b"\x90\x05\x00\x07\x00\x01\x02");
    let rows: Vec<(&str, &str)> = wire.records[1..]
        .iter()
        .map(|r| (r.request_type.as_str(), r.request_resource.as_str()))
        .collect();
    eprintln!("{:?}", wire.stats());
    assert_eq!(rows, [("PUBLISH", "bulk"), ("SUBSCRIBE", "first")]);
    assert_eq!(wire.records[2].request_length, subscribe.len() as u64);
    assert_eq!(wire.stats().resyncs, 0);
}

#[test]
fn resynchronises_after_garbage_and_lost_bytes() {
    let mut wire = connected_v5();
    wire.send(Direction::Egress, b"\x00\x00garbage");
    wire.send(Direction::Egress, b"\xc0\x00");
    wire.send(Direction::Ingress, b"\xd0\x00");
    wire.lose(Direction::Egress, 100);
    wire.send(
        Direction::Egress,
        &publish(0x32, "after/gap", Some(9), &[], 10),
    );
    wire.send(Direction::Ingress, b"\x40\x02\x00\x09");
    let types: Vec<(&str, &str)> = wire.records[1..]
        .iter()
        .map(|r| (r.request_type.as_str(), r.request_resource.as_str()))
        .collect();
    assert_eq!(types, [("PINGREQ", ""), ("PUBLISH", "after/gap")]);
    let stats = wire.stats();
    assert_eq!(
        stats.parse_errors, 1,
        "counted once, not by both halves of the session"
    );
    assert_eq!(stats.resyncs, 2);
}

#[test]
fn unanswered_requests_time_out() {
    let mut wire = connected_v5();
    wire.send(Direction::Egress, &publish(0x34, "slow", Some(1), &[], 1));
    wire.send(Direction::Egress, b"\xc0\x00");
    let later = wire.now() + 60_000_000_000;
    wire.expire(later);
    let rows: Vec<(&str, ResponseStatus)> = wire.records[1..]
        .iter()
        .map(|r| (r.request_type.as_str(), r.response_status))
        .collect();
    assert_eq!(
        rows,
        [
            ("PUBLISH", ResponseStatus::Timeout),
            ("PINGREQ", ResponseStatus::Timeout)
        ]
    );
    // a late PUBREC finds no request
    wire.send(Direction::Ingress, b"\x50\x02\x00\x01");
    assert_eq!(wire.stats().unmatched_responses, 1);
    assert_eq!(wire.records.len(), 3);
}

#[test]
fn other_streams_are_not_mqtt() {
    let streams: [&[u8]; 6] = [
        b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        // MQTT packets other than CONNECT: a connection seen mid-way is not recognised
        b"\x30\x05\x00\x01tok",
        b"\x82\x06\x00\x01\x00\x01t\x00",
        b"\x10\x10\x00\x04MQTT\x06\x02\x00\x3c\x00\x04abcd",
    ];
    for stream in streams {
        let mut wire = Wire::new();
        wire.send(Direction::Egress, stream);
        assert_ne!(
            wire.conversation.protocol(),
            Some(L7Protocol::Mqtt),
            "{stream:?}"
        );
    }
    let mut x = 0x1234_5678_9abc_def1u64;
    for _ in 0..500 {
        let mut wire = Wire::new();
        for _ in 0..8 {
            let len = (x % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            wire.send(Direction::Egress, &[&[0x10], bytes.as_slice()].concat());
        }
        assert_ne!(wire.conversation.protocol(), Some(L7Protocol::Mqtt));
    }
}
