//! AMQP 0-9-1 conversations: fixtures recorded from pika and built from the specification
//! (see tests/fixtures/amqp/README.md), replayed through `Conversation`.

mod common;

use common::{Wire, recorded};
use flowmesh_protocols::infer::{Detection, detect};
use flowmesh_protocols::{Direction, L7Protocol, L7Record, ResponseStatus, Role};

/// One record of a transcript: sent by the client (`true`) or the broker, and its bytes.
type Frame = recorded::Recorded;

fn load(name: &str) -> Vec<Frame> {
    recorded::load("amqp", name)
}

fn replay(frames: &[Frame], server: bool, cap: usize) -> Wire {
    recorded::feed(frames, server, cap)
}

/// (request_type, domain, resource, response_code, status, exception)
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
                r.request_domain.as_str(),
                r.request_resource.as_str(),
                r.response_code,
                r.response_status,
                r.response_exception.as_str(),
            )
        })
        .collect()
}

const OK: ResponseStatus = ResponseStatus::Ok;
const NONE: ResponseStatus = ResponseStatus::Unknown;

fn check(name: &str, expected: &[Row<'_>]) -> Vec<L7Record> {
    let frames = load(name);
    let mut first = Vec::new();
    for server in [false, true] {
        for cap in [usize::MAX, 1024] {
            let wire = replay(&frames, server, cap);
            let records = &wire.records;
            assert_eq!(rows(records), expected, "{name} server={server} cap={cap}");
            let role = if server { Role::Server } else { Role::Client };
            assert!(records.iter().all(|r| r.protocol == L7Protocol::Amqp
                && r.role == role
                && r.version == "0.9.1"
                && r.endpoint == r.request_resource));
            let stats = wire.stats();
            assert_eq!(stats.records, expected.len() as u64);
            assert_eq!((stats.parse_errors, stats.resyncs), (0, 0), "{name}");
            if first.is_empty() {
                first = records.clone();
            }
        }
    }
    first
}

#[test]
fn fixtures_are_detected_from_their_first_chunk() {
    let pika = load("pika_session");
    assert!(matches!(detect(&pika[0].1, Direction::Egress),
        Detection::Match(i) if i.protocol == L7Protocol::Amqp && i.role == Role::Client));
    // mid-stream: a Basic.Publish method frame
    let spec = load("spec_midstream");
    assert!(matches!(detect(&spec[0].1, Direction::Ingress),
        Detection::Match(i) if i.protocol == L7Protocol::Amqp && i.role == Role::Server));
}

#[test]
fn real_client_session() {
    let records = check(
        "pika_session",
        &[
            ("Connection.Open", "/", "", None, OK, ""),
            ("Channel.Open", "/", "", None, OK, ""),
            ("Queue.Declare", "/", "orders", None, OK, ""),
            ("Basic.Publish", "/", "orders", None, NONE, ""),
            ("Basic.Get", "/", "orders", None, OK, ""),
            ("Basic.Ack", "/", "", None, NONE, ""),
            (
                "Queue.Declare",
                "/",
                "missing",
                Some(404),
                ResponseStatus::ClientError,
                "NOT_FOUND - no queue 'missing' in vhost '/'",
            ),
            ("Channel.Open", "/", "", None, OK, ""),
            ("Channel.Close", "/", "", Some(0), OK, ""),
            ("Connection.Close", "/", "", Some(200), OK, ""),
        ],
    );
    // lengths: the publish is method + content header + body frames; the GetOk response
    // carries its content too
    let frames = load("pika_session");
    let publish_len: usize = frames[10..12].iter().map(|(_, b)| b.len()).sum::<usize>() + 16;
    assert_eq!(records[3].request_length, publish_len as u64);
    assert_eq!(records[4].response_length, Some(frames[13].1.len() as u64));
    assert!(records[3].response_length.is_none());
}

#[test]
fn spec_built_mid_stream_session() {
    let records = check(
        "spec_midstream",
        &[
            ("Basic.Publish", "", "metrics.cpu", None, NONE, ""),
            ("Exchange.Declare", "", "events", None, NONE, ""),
            ("Basic.Consume", "", "jobs", None, OK, ""),
            ("Queue.Delete", "", "old", None, OK, ""),
            ("Tx.Select", "", "", None, OK, ""),
            ("Queue.Bind", "", "jobs.new", None, OK, ""),
            (
                "Basic.Get",
                "",
                "secret",
                Some(403),
                ResponseStatus::ClientError,
                "ACCESS_REFUSED - access to queue 'secret' refused",
            ),
            (
                "Connection.Close",
                "",
                "",
                Some(541),
                ResponseStatus::ServerError,
                "INTERNAL_ERROR - client bug",
            ),
        ],
    );
    let frames = load("spec_midstream");
    assert_eq!(
        records[0].request_length,
        (frames[0].1.len() + frames[1].1.len()) as u64
    );
}
