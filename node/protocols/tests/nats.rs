//! NATS conversations: fixtures recorded from nats-py and built from the protocol
//! reference (see tests/fixtures/nats/README.md), replayed through `Conversation`.

mod common;

use common::{Wire, recorded};
use flowmesh_protocols::infer::{Detection, detect};
use flowmesh_protocols::{Direction, L7Protocol, L7Record, ResponseStatus, Role};

/// One record of a transcript: sent by the client (`true`) or the server, and its bytes.
type Frame = recorded::Recorded;

fn load(name: &str) -> Vec<Frame> {
    recorded::load("nats", name)
}

fn replay(frames: &[Frame], server: bool, cap: usize) -> Wire {
    recorded::feed(frames, server, cap)
}

/// (request_type, resource, endpoint, status, exception)
type Row<'a> = (&'a str, &'a str, &'a str, ResponseStatus, &'a str);

fn rows(records: &[L7Record]) -> Vec<Row<'_>> {
    records
        .iter()
        .map(|r| {
            (
                r.request_type.as_str(),
                r.request_resource.as_str(),
                r.endpoint.as_str(),
                r.response_status,
                r.response_exception.as_str(),
            )
        })
        .collect()
}

const OK: ResponseStatus = ResponseStatus::Ok;
const NONE: ResponseStatus = ResponseStatus::Unknown;

fn check(name: &str, expected: &[Row<'_>], unmatched: u64, domain: &str, version: &str) {
    let frames = load(name);
    for server in [false, true] {
        for cap in [usize::MAX, 1024] {
            let wire = replay(&frames, server, cap);
            let records = &wire.records;
            assert_eq!(rows(records), expected, "{name} server={server} cap={cap}");
            let role = if server { Role::Server } else { Role::Client };
            assert!(records.iter().all(|r| r.protocol == L7Protocol::Nats
                && r.role == role
                && r.request_domain == domain
                && r.version == version
                && r.response_code.is_none()));
            let stats = wire.stats();
            assert_eq!(stats.records, expected.len() as u64);
            assert_eq!(
                (stats.parse_errors, stats.resyncs, stats.unmatched_responses),
                (0, 0, unmatched),
                "{name}"
            );
        }
    }
}

#[test]
fn fixtures_are_detected_from_their_first_chunk() {
    for (name, direction, role) in [
        // the server's INFO received: a client
        ("natspy_default", Direction::Ingress, Role::Client),
        ("natspy_verbose", Direction::Egress, Role::Server),
        // mid-stream: a PUB sent
        ("spec_midstream", Direction::Egress, Role::Client),
    ] {
        let frames = load(name);
        assert!(
            matches!(detect(&frames[0].1, direction),
                Detection::Match(i) if i.protocol == L7Protocol::Nats && i.role == role),
            "{name}"
        );
    }
}

#[test]
fn real_client_default_is_one_way_except_ping() {
    let inbox = "_INBOX.4Cm71B67iKMMWWV27fPOE4";
    let sub_inbox = format!("{inbox}.*");
    let reply_inbox = format!("{inbox}.4Cm71B67iKMMWWV27fPOGC4022");
    check(
        "natspy_default",
        &[
            ("CONNECT", "", "", NONE, ""),
            ("PING", "", "", OK, ""),
            ("PING", "", "", OK, ""),
            ("SUB", "orders.*", "orders", NONE, ""),
            ("PING", "", "", OK, ""),
            ("PUB", "orders.new", "orders", NONE, ""),
            ("PING", "", "", OK, ""),
            ("HPUB", "orders.new", "orders", NONE, ""),
            ("SUB", "svc.echo", "svc", NONE, ""),
            ("SUB", &sub_inbox, "_INBOX", NONE, ""),
            ("PUB", "svc.echo", "svc", NONE, ""),
            ("PUB", &reply_inbox, "_INBOX", NONE, ""),
            ("PING", "", "", OK, ""),
            ("PUB", "secret.plans", "secret", NONE, ""),
            ("PING", "", "", OK, ""),
            ("UNSUB", "", "", NONE, ""),
        ],
        // the -ERR about the publish finds no request waiting
        1,
        "flowmesh-fake",
        "2.10.22",
    );
}

#[test]
fn real_client_verbose_waits_for_ok() {
    check(
        "natspy_verbose",
        &[
            ("CONNECT", "", "", OK, ""),
            ("PING", "", "", OK, ""),
            ("PING", "", "", OK, ""),
            ("SUB", "orders.*", "orders", OK, ""),
            ("PING", "", "", OK, ""),
            ("PUB", "orders.new", "orders", OK, ""),
            ("PING", "", "", OK, ""),
            ("UNSUB", "", "", OK, ""),
        ],
        0,
        "flowmesh-fake",
        "2.10.22",
    );
}

#[test]
fn spec_built_mid_stream() {
    check(
        "spec_midstream",
        &[
            ("PUB", "metrics.cpu.host1", "metrics", NONE, ""),
            ("HPUB", "events.login", "events", NONE, ""),
            ("SUB", "jobs.*", "jobs", NONE, ""),
            ("PING", "", "", OK, ""),
            ("UNSUB", "", "", NONE, ""),
            (
                "PING",
                "",
                "",
                ResponseStatus::ServerError,
                "Stale Connection",
            ),
        ],
        0,
        "",
        "",
    );
    let frames = load("spec_midstream");
    let wire = replay(&frames, false, 1024);
    assert_eq!(wire.records[0].request_length, frames[0].1.len() as u64);
}
