//! MongoDB conversations: fixtures recorded from pymongo and built from the wire-protocol
//! reference (see tests/fixtures/mongodb/README.md), replayed through `Conversation`.

mod common;

use common::{Wire, directions, recorded};
use flowmesh_protocols::infer::{Detection, detect};
use flowmesh_protocols::{Direction, L7Protocol, L7Record, ResponseStatus, Role};

/// One record of a transcript: sent by the client (`true`) or the server, and its bytes.
type Frame = recorded::Recorded;

fn load(name: &str) -> Vec<Frame> {
    recorded::load("mongodb", name)
}

fn replay(frames: &[Frame], server: bool, cap: usize) -> Wire {
    recorded::feed(frames, server, cap)
}

/// (request_type, resource, domain, response_code, status, exception)
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
                r.request_resource.as_str(),
                r.request_domain.as_str(),
                r.response_code,
                r.response_status,
                r.response_exception.as_str(),
            )
        })
        .collect()
}

const OK: ResponseStatus = ResponseStatus::Ok;
const ERR: ResponseStatus = ResponseStatus::ClientError;

fn check(name: &str, expected: &[Row<'_>]) {
    let frames = load(name);
    for server in [false, true] {
        for cap in [usize::MAX, 1024] {
            let wire = replay(&frames, server, cap);
            let records = &wire.records;
            assert_eq!(rows(records), expected, "{name} server={server} cap={cap}");
            let role = if server { Role::Server } else { Role::Client };
            assert!(
                records
                    .iter()
                    .all(|r| r.protocol == L7Protocol::MongoDb && r.role == role)
            );
            let stats = wire.stats();
            assert_eq!(stats.records, expected.len() as u64);
            assert_eq!(
                (stats.parse_errors, stats.resyncs, stats.unmatched_responses),
                (0, 0, 0),
                "{name}"
            );
        }
    }
}

#[test]
fn first_message_of_every_fixture_is_detected() {
    for name in ["pymongo_crud", "pymongo_monitor", "spec_legacy_and_errors"] {
        let frames = load(name);
        assert!(
            matches!(detect(&frames[0].1, Direction::Egress),
                Detection::Match(i) if i.protocol == L7Protocol::MongoDb && i.role == Role::Client),
            "{name}"
        );
        // replies identify the protocol too, the receiver being the client
        let reply = &frames[1].1;
        assert!(
            matches!(detect(reply, Direction::Ingress),
                Detection::Match(i) if i.protocol == L7Protocol::MongoDb && i.role == Role::Client),
            "{name}"
        );
    }
}

#[test]
fn real_client_crud_and_errors() {
    check(
        "pymongo_crud",
        &[
            ("ismaster", "", "admin", None, OK, ""),
            ("insert", "orders", "shop", None, OK, ""),
            (
                "insert",
                "orders",
                "shop",
                Some(11000),
                ERR,
                "E11000 duplicate key error collection: shop.orders index: _id_ dup key: { _id: 1 }",
            ),
            ("find", "orders", "shop", None, OK, ""),
            ("drop", "missing", "shop", Some(26), ERR, "ns not found"),
            // w:0 insert: moreToCome, no reply, a row at once
            (
                "insert",
                "orders",
                "shop",
                None,
                ResponseStatus::Unknown,
                "",
            ),
            ("endSessions", "", "admin", None, OK, ""),
        ],
    );
}

#[test]
fn real_client_monitor_handshake() {
    check(
        "pymongo_monitor",
        &[("ismaster", "", "admin", None, OK, "")],
    );
}

#[test]
fn spec_built_legacy_handshake_and_out_of_order_replies() {
    check(
        "spec_legacy_and_errors",
        &[
            ("isMaster", "", "admin", None, OK, ""),
            ("count", "orders", "shop", None, OK, ""),
            ("OP_QUERY", "orders", "shop", Some(13), ERR, "unauthorized"),
            ("ping", "", "admin", None, OK, ""),
            (
                "aggregate",
                "orders",
                "shop",
                Some(13),
                ERR,
                "not authorized on shop to execute command",
            ),
        ],
    );
}

#[test]
fn large_inserts_are_skipped_by_length_and_lengths_are_exact() {
    let frames = load("pymongo_crud");
    // the first insert, padded with a 20 KB document sequence (kind 1) after its body
    let insert = &frames[2].1;
    let mut big = insert.clone();
    let mut sequence = Vec::new();
    let filler = vec![b'x'; 20_000];
    sequence.push(1u8);
    sequence.extend_from_slice(&((4 + 5 + 4 + filler.len()) as i32).to_le_bytes());
    sequence.extend_from_slice(b"pad\0");
    sequence.extend_from_slice(&((4 + filler.len()) as i32).to_le_bytes());
    sequence.extend_from_slice(&filler);
    big.extend_from_slice(&sequence);
    let len = big.len() as i32;
    big[..4].copy_from_slice(&len.to_le_bytes());
    let mut wire = Wire::new();
    let (req, resp) = directions(false);
    wire.send_capped(req, &frames[0].1, 1024);
    wire.send_capped(resp, &frames[1].1, 1024);
    wire.send_capped(req, &big[..3000], 1024);
    wire.send_capped(req, &big[3000..], 1024);
    wire.send_capped(resp, &frames[3].1, 1024);
    assert_eq!(wire.records.len(), 2);
    let insert_row = &wire.records[1];
    assert_eq!(insert_row.request_type, "insert");
    assert_eq!(insert_row.request_length, big.len() as u64);
    assert_eq!(insert_row.response_length, Some(frames[3].1.len() as u64));
    assert_eq!(wire.stats().resyncs, 0);
}
