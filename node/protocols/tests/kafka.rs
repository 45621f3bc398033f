//! Kafka conversations: fixtures recorded from kafka-python and built from the protocol
//! guide (see tests/fixtures/kafka/README.md), replayed through `Conversation`.

mod common;

use common::{Wire, directions, recorded};
use flowmesh_protocols::infer::{Detection, detect};
use flowmesh_protocols::{L7Protocol, L7Record, ResponseStatus, Role};

/// One frame of a transcript: sent by the client (`true`) or the broker, and its bytes.
type Frame = recorded::Recorded;

fn load(name: &str) -> Vec<Frame> {
    recorded::load("kafka", name)
}

/// Replays `frames` seen from the client (or the broker), each frame one syscall of which
/// the first `cap` bytes are captured, then closes the socket.
fn replay(frames: &[Frame], server: bool, cap: usize) -> (Vec<L7Record>, Wire) {
    let mut wire = recorded::feed(frames, server, cap);
    (std::mem::take(&mut wire.records), wire)
}

/// The lengths of the size-prefixed messages in the frames of one side.
fn message_lengths(frames: &[Frame], client: bool) -> Vec<u64> {
    let mut lengths = Vec::new();
    for (_, bytes) in frames.iter().filter(|(c, _)| *c == client) {
        let mut rest = &bytes[..];
        while let [a, b, c, d, ..] = rest {
            let len = 4 + i32::from_be_bytes([*a, *b, *c, *d]) as usize;
            lengths.push(len as u64);
            rest = &rest[len.min(rest.len())..];
        }
    }
    lengths
}

/// (request_type, version, resource, response_code, status, exception)
type Row<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<u16>,
    ResponseStatus,
    &'a str,
);

fn rows(records: &[L7Record]) -> Vec<Row<'_>> {
    records
        .iter()
        .map(|r| {
            (
                r.request_type.as_str(),
                r.version.as_str(),
                r.request_resource.as_str(),
                r.response_code,
                r.response_status,
                r.response_exception.as_str(),
            )
        })
        .collect()
}

const OK: ResponseStatus = ResponseStatus::Ok;
const UNKNOWN: ResponseStatus = ResponseStatus::Unknown;

/// Every fixture, every way of seeing it: client and server role, whole frames and the
/// default 1 KiB capture cap.
fn check(name: &str, expected: &[Row<'_>]) {
    let frames = load(name);
    for server in [false, true] {
        for cap in [usize::MAX, 1024] {
            let (records, wire) = replay(&frames, server, cap);
            assert_eq!(rows(&records), expected, "{name} server={server} cap={cap}");
            let role = if server { Role::Server } else { Role::Client };
            assert!(
                records
                    .iter()
                    .all(|r| r.protocol == L7Protocol::Kafka && r.role == role)
            );
            let stats = wire.stats();
            assert_eq!(stats.records, expected.len() as u64, "{name}");
            assert_eq!(
                (stats.parse_errors, stats.resyncs, stats.unmatched_responses),
                (0, 0, 0),
                "{name}"
            );
            // lengths are whole messages
            for r in &records {
                assert!(message_lengths(&frames, true).contains(&r.request_length));
                if let Some(len) = r.response_length {
                    assert!(message_lengths(&frames, false).contains(&len));
                }
            }
        }
    }
}

#[test]
fn first_request_of_every_fixture_is_detected() {
    for name in [
        "producer_acks1.conn0",
        "producer_acks1.conn1",
        "producer_acks0.conn1",
        "consumer_coordinator_error.conn1",
        "spec_mixed",
    ] {
        let frames = load(name);
        assert!(frames[0].0, "{name} starts with a request");
        assert!(
            matches!(detect(&frames[0].1, flowmesh_protocols::Direction::Egress),
                Detection::Match(i) if i.protocol == L7Protocol::Kafka && i.role == Role::Client),
            "{name}"
        );
        // a response is never taken for a Kafka request
        let response = frames
            .iter()
            .find(|(c, _)| !c)
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        assert!(!matches!(
            detect(&response, flowmesh_protocols::Direction::Ingress),
            Detection::Match(i) if i.protocol == L7Protocol::Kafka
        ));
    }
}

#[test]
fn real_client_bootstrap_connection() {
    // kafka-python: ApiVersions v4 (flexible request header), then Metadata v12
    for name in [
        "producer_acks1.conn0",
        "producer_acks0.conn0",
        "consumer_coordinator_error.conn0",
    ] {
        check(
            name,
            &[
                ("ApiVersions", "4", "", Some(0), OK, ""),
                ("Metadata", "12", "", None, OK, ""),
            ],
        );
    }
}

#[test]
fn real_client_produce_acks_1() {
    check(
        "producer_acks1.conn1",
        &[
            ("ApiVersions", "3", "", Some(0), OK, ""),
            ("Produce", "9", "flowmesh-test", None, OK, ""),
            ("Produce", "9", "flowmesh-test", None, OK, ""),
            ("Produce", "9", "flowmesh-test", None, OK, ""),
        ],
    );
}

#[test]
fn real_client_produce_acks_0_expects_no_response() {
    check(
        "producer_acks0.conn1",
        &[
            ("ApiVersions", "3", "", Some(0), OK, ""),
            ("Produce", "9", "flowmesh-test", None, UNKNOWN, ""),
            ("Produce", "9", "flowmesh-test", None, UNKNOWN, ""),
            ("Produce", "9", "flowmesh-test", None, UNKNOWN, ""),
        ],
    );
    // the one-way rows are emitted at once, before close
    let frames = load("producer_acks0.conn1");
    let mut wire = Wire::new();
    let (req, resp) = directions(false);
    for (from_client, bytes) in &frames {
        wire.send(if *from_client { req } else { resp }, bytes);
    }
    assert_eq!(wire.records.len(), 4);
    assert!(
        wire.records[1..]
            .iter()
            .all(|r| r.response_length.is_none())
    );
}

#[test]
fn real_client_find_coordinator_errors() {
    check(
        "consumer_coordinator_error.conn1",
        &[
            ("ApiVersions", "3", "", Some(0), OK, ""),
            (
                "FindCoordinator",
                "3",
                "",
                Some(15),
                ResponseStatus::ServerError,
                "COORDINATOR_NOT_AVAILABLE",
            ),
            (
                "FindCoordinator",
                "3",
                "",
                Some(15),
                ResponseStatus::ServerError,
                "COORDINATOR_NOT_AVAILABLE",
            ),
            ("Metadata", "12", "", None, OK, ""),
        ],
    );
}

#[test]
fn spec_built_fetch_heartbeat_and_out_of_order_responses() {
    check(
        "spec_mixed",
        &[
            ("Fetch", "4", "flowmesh-test", None, OK, ""),
            (
                "Fetch",
                "11",
                "flowmesh-test",
                Some(1),
                ResponseStatus::ServerError,
                "OFFSET_OUT_OF_RANGE",
            ),
            ("Produce", "3", "flowmesh-test", None, OK, ""),
            (
                "Heartbeat",
                "4",
                "",
                Some(27),
                ResponseStatus::ServerError,
                "REBALANCE_IN_PROGRESS",
            ),
        ],
    );
}

/// A Produce v2 request of `records` bytes of record data.
fn produce_v2(correlation_id: i32, records: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&0i16.to_be_bytes()); // Produce
    payload.extend_from_slice(&2i16.to_be_bytes());
    payload.extend_from_slice(&correlation_id.to_be_bytes());
    payload.extend_from_slice(&4i16.to_be_bytes());
    payload.extend_from_slice(b"big1");
    payload.extend_from_slice(&1i16.to_be_bytes()); // acks
    payload.extend_from_slice(&1000i32.to_be_bytes());
    payload.extend_from_slice(&1i32.to_be_bytes());
    payload.extend_from_slice(&3i16.to_be_bytes());
    payload.extend_from_slice(b"big");
    payload.extend_from_slice(&1i32.to_be_bytes());
    payload.extend_from_slice(&0i32.to_be_bytes());
    payload.extend_from_slice(&(records as i32).to_be_bytes());
    payload.extend(std::iter::repeat_n(0xab, records));
    let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
    frame.extend(payload);
    frame
}

fn produce_v2_response(correlation_id: i32) -> Vec<u8> {
    let mut payload = correlation_id.to_be_bytes().to_vec();
    payload.extend_from_slice(&1i32.to_be_bytes());
    payload.extend_from_slice(&3i16.to_be_bytes());
    payload.extend_from_slice(b"big");
    payload.extend_from_slice(&1i32.to_be_bytes());
    payload.extend_from_slice(&[0; 4 + 2 + 8 + 8]);
    payload.extend_from_slice(&0i32.to_be_bytes());
    let mut frame = (payload.len() as i32).to_be_bytes().to_vec();
    frame.extend(payload);
    frame
}

#[test]
fn uncaptured_record_data_is_skipped_by_length() {
    // 10 KiB produce requests, 1 KiB captured, some split over two syscalls
    let mut wire = Wire::new();
    let (req, resp) = directions(false);
    for id in 1..=3 {
        let frame = produce_v2(id, 10_000);
        if id == 2 {
            wire.send_capped(req, &frame[..5000], 1024);
            wire.send_capped(req, &frame[5000..], 1024);
        } else {
            wire.send_capped(req, &frame, 1024);
        }
        wire.send_capped(resp, &produce_v2_response(id), 1024);
    }
    let records = &wire.records;
    assert_eq!(records.len(), 3);
    for r in records {
        assert_eq!(r.request_type, "Produce");
        assert_eq!(r.request_resource, "big");
        assert_eq!(r.request_length, produce_v2(1, 10_000).len() as u64);
        assert_eq!(r.response_status, OK);
    }
    assert_eq!(wire.stats().resyncs, 0);
}

#[test]
fn pending_requests_time_out_and_late_responses_are_not_misattributed() {
    let mut wire = Wire::new();
    let (req, resp) = directions(true);
    wire.send(req, &produce_v2(1, 10));
    let now = wire.now();
    wire.expire(now + 31_000_000_000);
    assert_eq!(wire.records.len(), 1);
    assert_eq!(wire.records[0].response_status, ResponseStatus::Timeout);
    wire.send(req, &produce_v2(2, 10));
    wire.send(resp, &produce_v2_response(1)); // the timed-out request's answer
    wire.send(resp, &produce_v2_response(2));
    assert_eq!(wire.records.len(), 2);
    assert_eq!(wire.records[1].response_status, OK);
    assert_eq!(wire.stats().unmatched_responses, 1);
}
