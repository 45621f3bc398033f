//! Replays PostgreSQL conversations recorded from a real server (see
//! tests/fixtures/postgres/README.md) through `Conversation`, from the client's and the
//! server's side, whole and with the agent's default 1 KiB capture per syscall, and checks
//! detection against other protocols and random bytes.

mod common;

use common::{
    Wire,
    recorded::{self, Recorded, total, views},
};
use flowmesh_protocols::infer::{Detection, detect};
use flowmesh_protocols::{Direction, L7Protocol, L7Record, ResponseStatus};

fn load(name: &str) -> Vec<Recorded> {
    recorded::load("postgres", name)
}

fn replay(recorded: &[Recorded], server: bool, cap: usize) -> Wire {
    recorded::replay(recorded, server, cap, L7Protocol::PostgreSql)
}

/// The seven statements of pgbench's TPC-B-like script.
const STATEMENTS: [&str; 7] = [
    "BEGIN",
    "UPDATE pgbench_accounts",
    "SELECT abalance",
    "UPDATE pgbench_tellers",
    "UPDATE pgbench_branches",
    "INSERT INTO pgbench_history",
    "END",
];

fn count(records: &[L7Record], request_type: &str, statement: &str) -> usize {
    records
        .iter()
        .filter(|r| {
            r.request_type == request_type && r.request_resource.trim_start().starts_with(statement)
        })
        .count()
}

#[test]
fn pgbench_rows_per_statement_equal_the_transactions() {
    // -c 2 -t 20: connections 2 and 3 run 20 transactions each; connection 1 is pgbench's
    // setup connection
    for (mode, request_type) in [
        ("simple", "simple query"),
        ("extended", "parse"),
        ("prepared", "execute"),
    ] {
        for (server, cap) in views() {
            let at = format!("{mode}, server side {server}, capture {cap}");
            let setup = replay(&load(&format!("pgbench_{mode}-1")), server, cap);
            let setup_rows: Vec<&str> = setup
                .records
                .iter()
                .map(|r| r.request_type.as_str())
                .collect();
            assert_eq!(
                setup_rows,
                ["startup", "simple query", "simple query"],
                "{at}"
            );
            let mut per_statement = [0; 7];
            for connection in [2, 3] {
                let recorded = load(&format!("pgbench_{mode}-{connection}"));
                let wire = replay(&recorded, server, cap);
                let records = &wire.records;
                let stats = wire.stats();
                assert_eq!(
                    (
                        stats.parse_errors,
                        stats.resyncs,
                        stats.unmatched_responses,
                        stats.gap_bytes
                    ),
                    (0, 0, 0, 0),
                    "{at}"
                );
                let prepares = if mode == "prepared" { 7 } else { 0 };
                assert_eq!(records.len(), 1 + 7 * 20 + prepares, "{at}");
                assert_eq!(records[0].request_type, "startup", "{at}");
                assert_eq!(
                    records[0].request_resource, "user=postgres database=bench",
                    "{at}"
                );
                assert!(
                    records
                        .iter()
                        .all(|r| r.response_status == ResponseStatus::Ok),
                    "{at}"
                );
                // each pgbench write touches one row: the CommandComplete tag says so
                let writes: Vec<_> = records
                    .iter()
                    .filter(|r| {
                        r.request_type == request_type
                            && (r.request_resource.starts_with("UPDATE")
                                || r.request_resource.starts_with("INSERT"))
                    })
                    .collect();
                assert_eq!(writes.len(), 4 * 20, "{at}");
                for r in writes {
                    assert_eq!(r.row_effect, Some(1), "{at}: {}", r.request_resource);
                }
                for (n, statement) in per_statement.iter_mut().zip(STATEMENTS) {
                    let rows = count(records, request_type, statement);
                    assert_eq!(rows, 20, "{at} connection {connection}: {statement}");
                    *n += rows;
                    if mode == "prepared" {
                        assert_eq!(count(records, "parse", statement), 1, "{at}: {statement}");
                    }
                }
                // every byte is in a row but the client's Terminate (5 bytes)
                let requests: u64 = records.iter().map(|r| r.request_length).sum();
                let responses: u64 = records.iter().filter_map(|r| r.response_length).sum();
                assert_eq!(requests + 5, total(&recorded, true), "{at}");
                assert_eq!(responses, total(&recorded, false), "{at}");
                for r in records {
                    assert!(r.response_end_ns >= Some(r.request_end_ns), "{at}: {r:?}");
                    assert_eq!(
                        r.role.observation_point(),
                        if server { "server" } else { "client" }
                    );
                }
            }
            assert_eq!(per_statement, [40; 7], "{at}");
        }
    }
}

#[test]
fn psql_errors_carry_sqlstate_and_message() {
    let recorded = load("psql_errors-1");
    let ok = ResponseStatus::Ok;
    let client = ResponseStatus::ClientError;
    let long = "select g, repeat('x', 20) from generate_series(1, 300) g;";
    for (server, cap) in views() {
        let wire = replay(&recorded, server, cap);
        let rows: Vec<(&str, &str, ResponseStatus, &str)> = wire
            .records
            .iter()
            .map(|r| {
                assert_eq!(r.response_code, None);
                let resource = r.request_resource.as_str();
                (
                    r.request_type.as_str(),
                    resource,
                    r.response_status,
                    r.response_exception.as_str(),
                )
            })
            .collect();
        // the 300-row result arrives in one 11 KB syscall: captured to 1 KiB, its framing is
        // lost and the query is reported without a response
        let long_status = if cap == 1024 {
            ResponseStatus::Unknown
        } else {
            ok
        };
        assert_eq!(
            rows,
            [
                ("startup", "user=postgres database=bench", ok, ""),
                ("simple query", "select 1 as one, 'two' as two;", ok, ""),
                (
                    "simple query",
                    "selec 1;",
                    client,
                    "42601: syntax error at or near \"selec\""
                ),
                (
                    "simple query",
                    "select * from no_such_table;",
                    client,
                    "42P01: relation \"no_such_table\" does not exist"
                ),
                (
                    "simple query",
                    "create table uniq (id int primary key);",
                    ok,
                    ""
                ),
                ("simple query", "insert into uniq values (1);", ok, ""),
                (
                    "simple query",
                    "insert into uniq values (1);",
                    client,
                    "23505: duplicate key value violates unique constraint \"uniq_pkey\""
                ),
                (
                    "simple query",
                    "select 1/0;",
                    client,
                    "22012: division by zero"
                ),
                ("simple query", long, long_status, ""),
                ("simple query", "drop table uniq;", ok, ""),
            ],
            "server side {server}, capture {cap}"
        );
        let stats = wire.stats();
        let long_row = &wire.records[8];
        if cap == 1024 {
            assert_eq!(long_row.response_length, None);
            assert_eq!((stats.parse_errors, stats.resyncs), (0, 1));
        } else {
            let last = recorded.iter().rev().find(|(c, b)| !c && b.len() > 8192);
            assert_eq!(long_row.response_length, last.map(|(_, b)| b.len() as u64));
            assert_eq!((stats.parse_errors, stats.resyncs), (0, 0));
        }
        // the error and its ReadyForQuery came in two syscalls: the row spans both
        assert!(wire.records[2].response_end_ns > wire.records[2].response_start_ns);
    }
}

#[test]
fn refused_ssl_and_scram_login() {
    let recorded = load("psql_auth-1");
    for (server, cap) in views() {
        let wire = replay(&recorded, server, cap);
        let rows: Vec<(&str, &str, Option<u64>)> = wire
            .records
            .iter()
            .map(|r| {
                (
                    r.request_type.as_str(),
                    r.request_resource.as_str(),
                    r.response_length,
                )
            })
            .collect();
        // the SASL exchange's two client messages are no rows and count in none
        let sasl: u64 = recorded
            .iter()
            .filter(|(c, b)| *c && b[0] == b'p')
            .map(|(_, b)| b.len() as u64)
            .sum();
        let startup_response = total(&recorded, false) - 1 - 72;
        assert_eq!(
            rows,
            [
                ("ssl request", "", Some(1)),
                ("startup", "user=app database=bench", Some(startup_response)),
                ("simple query", "select current_user", Some(72)),
            ],
            "server side {server}, capture {cap}"
        );
        assert_eq!(sasl, 55 + 109);
        assert!(
            wire.records
                .iter()
                .all(|r| r.response_status == ResponseStatus::Ok)
        );
    }
}

#[test]
fn attaching_mid_connection() {
    // after the startup: the first query is recognised
    for mode in ["simple", "extended"] {
        let recorded = load(&format!("pgbench_{mode}-2"));
        for (server, cap) in views() {
            let wire = replay(&recorded[2..], server, cap);
            assert_eq!(wire.records.len(), 140, "{mode}");
            assert!(
                wire.records
                    .iter()
                    .all(|r| r.response_status == ResponseStatus::Ok)
            );
            assert_eq!(wire.stats().parse_errors, 0);
        }
    }
    // prepared statements whose Parse was missed execute without SQL: after the first
    // transaction (startup, then Parse/Sync and Bind/Describe/Execute/Sync per statement)
    let recorded = load("pgbench_prepared-2");
    for (server, cap) in views() {
        let wire = replay(&recorded[2 + 7 * 4..], server, cap);
        assert_eq!(wire.records.len(), 7 * 19);
        assert!(
            wire.records
                .iter()
                .all(|r| r.request_type == "execute" && r.request_resource.is_empty())
        );
        assert!(
            wire.records
                .iter()
                .all(|r| r.response_status == ResponseStatus::Ok)
        );
    }
    // psql: the failing queries after the startup
    let wire = replay(&load("psql_errors-1")[2..], false, usize::MAX);
    assert_eq!(wire.records.len(), 9);
    assert_eq!(
        wire.records[1].response_exception,
        "42601: syntax error at or near \"selec\""
    );
}

#[test]
fn recorded_starts_are_detected_with_their_role() {
    for name in ["pgbench_simple-2", "pgbench_extended-2", "psql_auth-1"] {
        let first = &load(name)[0].1;
        for (direction, role) in [
            (Direction::Egress, "client"),
            (Direction::Ingress, "server"),
        ] {
            let Detection::Match(inference) = detect(first, direction) else {
                panic!("{name} not detected");
            };
            assert_eq!(inference.protocol, L7Protocol::PostgreSql, "{name}");
            assert_eq!(inference.role.observation_point(), role);
        }
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn claims_postgres(bytes: &[u8]) -> bool {
    [Direction::Egress, Direction::Ingress].into_iter().any(
        |d| matches!(detect(bytes, d), Detection::Match(i) if i.protocol == L7Protocol::PostgreSql),
    )
}

#[test]
fn other_protocols_and_random_bytes_are_not_postgres() {
    let others: [&[u8]; 16] = [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /api/v1/items HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
        b"+OK\r\n",
        b"PING\r\n",
        b"PUB orders 5\r\nhello\r\n",
        b"get key\r\n",
        b"\x10\x12\x00\x04MQTT\x04\x02\x00\x3c\x00\x06client",
        b"\x00\x00\x00\x2a\x00\x12\x00\x03\x00\x00\x00\x01\x00\x07client",
        b"\x3a\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00",
        b"AMQP\x00\x00\x09\x01",
        b"\xda\xbb\xc2\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x10",
        // MySQL: a greeting and a COM_QUERY
        b"\x21\x00\x00\x00\x03SELECT abalance FROM pgbench_accounts",
    ];
    for bytes in others {
        assert!(!claims_postgres(bytes), "{bytes:?}");
    }
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    for _ in 0..50_000 {
        let n = 1 + (rng.next() % 96) as usize;
        let bytes = rng.bytes(n);
        assert!(!claims_postgres(&bytes), "{bytes:?}");
    }
    // random bodies behind plausible headers
    for kind in [b'Q', b'P', b'B'] {
        for _ in 0..20_000 {
            let n = (rng.next() % 60) as usize;
            let mut bytes = vec![kind, 0, 0, 0, n as u8 + 4];
            bytes.extend(rng.bytes(n));
            assert!(!claims_postgres(&bytes), "{bytes:?}");
        }
    }
    for _ in 0..20_000 {
        let n = (rng.next() % 60) as usize;
        let mut bytes = (n as u32 + 8).to_be_bytes().to_vec();
        bytes.extend([0, 3, 0, 0]);
        bytes.extend(rng.bytes(n));
        assert!(!claims_postgres(&bytes), "{bytes:?}");
    }
}
