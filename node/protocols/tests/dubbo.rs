//! Dubbo conversations: fixtures built from the Dubbo 2 and Hessian 2 specifications (see
//! tests/fixtures/dubbo/README.md), replayed through `Conversation`.

mod common;

use common::{Wire, directions, recorded};
use flowmesh_protocols::infer::{Detection, detect};
use flowmesh_protocols::{Direction, L7Protocol, L7Record, ResponseStatus, Role};

/// One record of a transcript: sent by the consumer (`true`) or the provider, and its bytes.
type Frame = recorded::Recorded;

fn load(name: &str) -> Vec<Frame> {
    recorded::load("dubbo", name)
}

fn replay(frames: &[Frame], server: bool, cap: usize) -> Wire {
    recorded::feed(frames, server, cap)
}

/// (request_type, resource, response_code, status, exception)
type Row<'a> = (&'a str, &'a str, Option<u16>, ResponseStatus, &'a str);

fn rows(records: &[L7Record]) -> Vec<Row<'_>> {
    records
        .iter()
        .map(|r| {
            (
                r.request_type.as_str(),
                r.request_resource.as_str(),
                r.response_code,
                r.response_status,
                r.response_exception.as_str(),
            )
        })
        .collect()
}

const DEMO: &str = "org.apache.dubbo.demo.DemoService";
const USERS: &str = "com.example.UserService";
const SERVER_ERROR: ResponseStatus = ResponseStatus::ServerError;

#[test]
fn first_request_is_detected() {
    let frames = load("spec_calls");
    assert!(matches!(detect(&frames[0].1, Direction::Egress),
        Detection::Match(i) if i.protocol == L7Protocol::Dubbo && i.role == Role::Client));
    assert!(matches!(detect(&frames[2].1, Direction::Ingress),
        Detection::Match(i) if i.protocol == L7Protocol::Dubbo && i.role == Role::Server));
}

#[test]
fn spec_built_calls() {
    let frames = load("spec_calls");
    let expected: &[Row<'_>] = &[
        ("sayHello", DEMO, Some(20), ResponseStatus::Ok, ""),
        (
            "getUser",
            USERS,
            Some(20),
            SERVER_ERROR,
            "java.lang.IllegalStateException",
        ),
        (
            "ping",
            "com.example.Missing",
            Some(60),
            SERVER_ERROR,
            "Not found exported service: com.example.Missing:1.0.0:20880",
        ),
        ("notify", USERS, None, ResponseStatus::Unknown, ""),
        (
            "slowQuery",
            USERS,
            Some(31),
            SERVER_ERROR,
            "Waiting server-side response timeout by scan timer.",
        ),
        ("touch", USERS, Some(20), ResponseStatus::Ok, ""),
        ("echo", DEMO, Some(20), ResponseStatus::Ok, ""),
    ];
    for server in [false, true] {
        for cap in [usize::MAX, 1024] {
            let wire = replay(&frames, server, cap);
            let records = &wire.records;
            assert_eq!(rows(records), expected, "server={server} cap={cap}");
            let role = if server { Role::Server } else { Role::Client };
            for r in records {
                assert_eq!((r.protocol, r.role), (L7Protocol::Dubbo, role));
                assert_eq!(r.version, "2.0.2");
                assert_eq!(
                    r.endpoint,
                    format!("{}/{}", r.request_resource, r.request_type)
                );
            }
            // the large call and its answer are skipped by length
            let echo = &records[6];
            assert_eq!(echo.request_length, frames[12].1.len() as u64);
            assert_eq!(echo.response_length, Some(frames[13].1.len() as u64));
            let stats = wire.stats();
            assert_eq!(stats.records, expected.len() as u64);
            assert_eq!(
                (stats.parse_errors, stats.resyncs, stats.unmatched_responses),
                (0, 0, 0)
            );
        }
    }
}

#[test]
fn resynchronises_after_garbage() {
    let frames = load("spec_calls");
    let mut wire = Wire::new();
    let (req, resp) = directions(false);
    wire.send(req, &frames[2].1);
    wire.send(resp, b"garbage that is not a dubbo header");
    wire.send(req, &frames[4].1);
    wire.send(resp, &frames[5].1);
    wire.close();
    let types: Vec<_> = wire
        .records
        .iter()
        .map(|r| r.request_type.as_str())
        .collect();
    assert_eq!(types, ["getUser", "sayHello"]);
    assert_eq!(wire.records[1].response_status, ResponseStatus::Unknown);
    assert_eq!((wire.stats().parse_errors, wire.stats().resyncs), (1, 1));
}
