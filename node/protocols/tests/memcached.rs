//! Memcached conversations recorded from a real memcached (tests/fixtures/memcached/README.md),
//! replayed through `Conversation`, whole and under the default 1 KiB capture cap.

mod common;

use common::chunks::{self as chunk_fixtures, Recorded, UNCAPPED, replay, replay_split};
use flowmesh_protocols::infer::{Detection, detect};
use flowmesh_protocols::{Direction, L7Protocol, L7Record, ResponseStatus, Role};
use proptest::prelude::*;

fn load(name: &str) -> Vec<Recorded> {
    chunk_fixtures::load("memcached", name)
}

type Row = (String, String, ResponseStatus, String);

fn rows(records: &[L7Record]) -> Vec<Row> {
    records
        .iter()
        .map(|r| {
            (
                r.request_type.clone(),
                r.request_resource.clone(),
                r.response_status,
                r.response_exception.clone(),
            )
        })
        .collect()
}

fn row(status: ResponseStatus, resource: &str, exception: &str) -> Row {
    let command = resource.split(' ').next().unwrap_or_default();
    (command.into(), resource.into(), status, exception.into())
}

use ResponseStatus::{ClientError, Ok, Unknown};

const CAP: usize = 1024;

fn session_rows() -> Vec<Row> {
    vec![
        row(Ok, "set greeting 0 0 5", ""),
        row(Ok, "get greeting", ""),
        row(Ok, "get missing", ""),
        row(Ok, "set other 42 0 3", ""),
        row(Ok, "get greeting missing other", ""),
        row(Ok, "gets greeting", ""),
        row(Ok, "cas greeting 0 0 3 1", ""),
        row(Ok, "add greeting 0 0 1", ""),
        row(Ok, "replace nothere 0 0 1", ""),
        row(Ok, "append greeting 0 0 6", ""),
        row(Ok, "prepend greeting 0 0 3", ""),
        row(Ok, "set counter 0 0 2", ""),
        row(Ok, "incr counter 5", ""),
        row(Ok, "decr counter 100", ""),
        row(
            ClientError,
            "incr greeting 1",
            "CLIENT_ERROR cannot increment or decrement non-numeric value",
        ),
        row(Ok, "incr nothere 1", ""),
        row(Ok, "touch greeting 100", ""),
        row(Ok, "gat 100 greeting other", ""),
        row(Ok, "delete other", ""),
        row(Ok, "delete other", ""),
        // noreply: a row at once, without reply
        row(Unknown, "set quiet 0 0 2 noreply", ""),
        row(Ok, "get quiet", ""),
        // `bogus command` is not a memcached command: no row, its ERROR is unmatched
        row(Ok, "set big 0 0 3000", ""),
        row(Ok, "get big", ""),
        // `set bad 0 0 3` sent 6 bytes: memcached reads 3 + CRLF, answers
        // CLIENT_ERROR, then reads `f` as a command (ERROR). `f` is no command here:
        // framing is lost, the waiting set is reported without reply
        row(Unknown, "set bad 0 0 3", ""),
        row(Ok, "version", ""),
        row(Ok, "verbosity 1", ""),
        row(Ok, "stats", ""),
        row(Ok, "flush_all", ""),
        row(Ok, "get greeting", ""),
    ]
}

#[test]
fn memcached_session() {
    let chunks = load("session");
    for server in [false, true] {
        for cap in [UNCAPPED, CAP] {
            let what = format!("server {server}, cap {cap}");
            let wire = replay(&chunks, server, cap);
            assert_eq!(rows(&wire.records), session_rows(), "{what}");
            let role = if server { Role::Server } else { Role::Client };
            assert!(
                wire.records
                    .iter()
                    .all(|r| r.protocol == L7Protocol::Memcached && r.role == role)
            );
            let find = |resource: &str| {
                wire.records
                    .iter()
                    .find(|r| r.request_resource == resource)
                    .unwrap_or_else(|| panic!("{resource}"))
            };
            // lengths: data blocks, VALUE blocks and END, through the 1 KiB cap
            assert_eq!(find("set greeting 0 0 5").request_length, 27);
            assert_eq!(find("get greeting missing other").response_length, Some(55));
            assert_eq!(find("gat 100 greeting other").response_length, Some(63));
            assert_eq!(find("set big 0 0 3000").request_length, 3020, "{what}");
            assert_eq!(find("get big").response_length, Some(3025), "{what}");
            assert_eq!(find("stats").response_length, Some(2219), "{what}");
            assert_eq!(find("set quiet 0 0 2 noreply").response_length, None);
            let stats = wire.stats();
            assert_eq!(stats.records, 30, "{what}");
            // bogus and `f`: two parse errors; ERROR, CLIENT_ERROR and ERROR unmatched
            assert_eq!(
                (stats.parse_errors, stats.resyncs, stats.unmatched_responses),
                (2, 2, 3),
                "{what}"
            );
        }
    }
}

#[test]
fn pipelined_commands_in_one_write() {
    let chunks = load("pipeline");
    let mut expected: Vec<Row> = (0..20)
        .map(|i| {
            row(
                Ok,
                &format!("set key:{i} 0 0 {}", format!("value-{i}").len()),
                "",
            )
        })
        .collect();
    let keys: Vec<String> = (0..24).step_by(2).map(|i| format!("key:{i}")).collect();
    expected.push(row(Ok, &format!("get {}", keys.join(" ")), ""));
    expected.insert(0, row(Unknown, "delete key:1 noreply", ""));
    expected.push(row(Ok, "get key:1", ""));
    expected.push(row(
        ClientError,
        "incr key:2 1",
        "CLIENT_ERROR cannot increment or decrement non-numeric value",
    ));
    // `mn` and `mg` (meta commands) are skipped, with their replies
    expected.push(row(Ok, "version", ""));
    for cap in [UNCAPPED, CAP] {
        let wire = replay(&chunks, false, cap);
        if cap == CAP {
            // the 696-byte write fits the cap; the 537-byte reply too
            assert!(chunks.iter().all(|c| c.bytes.len() <= CAP));
        }
        assert_eq!(rows(&wire.records), expected, "cap {cap}");
        let stats = wire.stats();
        assert_eq!(
            (stats.parse_errors, stats.resyncs, stats.unmatched_responses),
            (0, 0, 0)
        );
    }
}

/// A row with its lengths and sequence numbers.
type ExactRow = (Row, u64, Option<u64>, Option<u32>, Option<u32>);

fn exact_rows(records: &[L7Record]) -> Vec<ExactRow> {
    records
        .iter()
        .zip(rows(records))
        .map(|(r, row)| {
            (
                row,
                r.request_length,
                r.response_length,
                r.req_tcp_seq,
                r.resp_tcp_seq,
            )
        })
        .collect()
}

#[test]
fn every_split_point_of_the_pipeline_gives_the_same_rows() {
    let chunks = load("pipeline");
    let whole = exact_rows(&replay(&chunks, false, UNCAPPED).records);
    for side in 0..2 {
        for point in 1..chunks[side].bytes.len() {
            let mut cuts = vec![Vec::new(), Vec::new()];
            cuts[side].push(point);
            let wire = replay_split(&chunks, &cuts);
            assert_eq!(
                exact_rows(&wire.records),
                whole,
                "side {side} point {point}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_split_points_give_the_same_rows(
        cuts in proptest::collection::vec(proptest::collection::vec(0usize..8192, 0..8), 2),
    ) {
        let chunks = load("pipeline");
        let whole = exact_rows(&replay(&chunks, false, UNCAPPED).records);
        let wire = replay_split(&chunks, &cuts);
        prop_assert_eq!(exact_rows(&wire.records), whole);
    }

    #[test]
    fn random_split_points_of_the_session_give_the_same_rows(
        cuts in proptest::collection::vec(proptest::collection::vec(0usize..4096, 0..3), 61),
    ) {
        // every message of the session is shorter than 1 KiB but the 3000-byte value,
        // whose length its line gives, and the 2219-byte stats reply: split past its
        // first KiB it would end there (see the module docs), so it is left whole
        let chunks = load("session");
        let whole = exact_rows(&replay(&chunks, false, UNCAPPED).records);
        let mut cuts = cuts;
        for (chunk, cuts) in chunks.iter().zip(cuts.iter_mut()) {
            if chunk.bytes.starts_with(b"STAT ") {
                cuts.clear();
            }
        }
        let wire = replay_split(&chunks, &cuts);
        prop_assert_eq!(exact_rows(&wire.records), whole);
    }

    #[test]
    fn random_bytes_are_not_memcached(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        for direction in [Direction::Egress, Direction::Ingress] {
            if let Detection::Match(inference) = detect(&bytes, direction) {
                prop_assert_ne!(inference.protocol, L7Protocol::Memcached);
            }
        }
    }

    #[test]
    fn random_text_after_a_command_is_rarely_memcached(
        command in prop_oneof![Just("get "), Just("set "), Just("delete "), Just("incr ")],
        text in "[ -~]{0,40}",
    ) {
        // printable text after a command word matches only when it is a well-formed line
        let mut bytes = command.as_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        let words: Vec<&str> = text.split(' ').filter(|w| !w.is_empty()).collect();
        let plausible = match command {
            "get " => !words.is_empty(),
            "set " => words.len() >= 4,
            _ => !words.is_empty(),
        };
        if let Detection::Match(inference) = detect(&bytes, Direction::Egress)
            && inference.protocol == L7Protocol::Memcached
        {
            prop_assert!(plausible, "{:?}", text);
        }
    }
}

#[test]
fn detection_of_memcached_and_of_what_is_not() {
    let memcached = |bytes: &[u8], direction| match detect(bytes, direction) {
        Detection::Match(inference) if inference.protocol == L7Protocol::Memcached => {
            Some(inference.role)
        }
        _ => None,
    };
    for name in ["session", "pipeline"] {
        let first = &load(name)[0];
        assert_eq!(
            memcached(&first.bytes, Direction::Egress),
            Some(Role::Client)
        );
        assert_eq!(
            memcached(&first.bytes, Direction::Ingress),
            Some(Role::Server)
        );
        assert_eq!(
            detect(&first.bytes[..3], Direction::Egress),
            Detection::NeedMore
        );
    }
    let commands: [&[u8]; 14] = [
        b"get a\r\n",
        b"gets a b c\r\n",
        b"gat 10 a b\r\n",
        b"set k 0 0 5\r\nhello\r\n",
        b"set k 0 0 5 noreply\r\n",
        b"cas k 0 0 1 77\r\nx\r\n",
        b"delete k\r\n",
        b"delete k 0 noreply\r\n",
        b"incr k 1\r\n",
        b"touch k -1\r\n",
        b"flush_all 10\r\n",
        b"version\r\n",
        b"stats\r\n",
        b"stats slabs\r\n",
    ];
    for bytes in commands {
        assert_eq!(
            memcached(bytes, Direction::Egress),
            Some(Role::Client),
            "{bytes:?}"
        );
    }
    let others: [&[u8]; 22] = [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET a\r\n",
        b"get\r\n",
        b"get a\n",
        b"set k 0 0 five\r\n",
        b"set k 0 0 5\r\nhello!!\r\n",
        b"set k v\r\n",
        b"incr k\r\n",
        b"delete k 5\r\n",
        b"stats foo\r\n",
        b"quit\r\n",
        b"STORED\r\n",
        b"VALUE k 0 1\r\nx\r\nEND\r\n",
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"CONNECT {\"verbose\":false}\r\n",
        b"PUB foo 5\r\nhello\r\n",
        b"sub foo 1\r\n",
        b"ping\r\n",
        b"AMQP\x00\x00\x09\x01",
        b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c",
    ];
    for bytes in others {
        for direction in [Direction::Egress, Direction::Ingress] {
            assert_eq!(memcached(bytes, direction), None, "{bytes:?}");
        }
    }
}
