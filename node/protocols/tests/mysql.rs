//! Replays MySQL conversations recorded from a real MariaDB (see
//! tests/fixtures/mysql/README.md) through `Conversation`, from the client's and the
//! server's side, whole and with the agent's default 1 KiB capture per syscall, and checks
//! detection against other protocols and random bytes.

mod common;

use common::{
    Wire,
    recorded::{self, Recorded, total, views},
};
use flowmesh_protocols::infer::{Detection, detect};
use flowmesh_protocols::{Direction, L7Protocol, ResponseStatus};

fn load(name: &str) -> Vec<Recorded> {
    recorded::load("mysql", name)
}

fn replay(recorded: &[Recorded], server: bool, cap: usize) -> Wire {
    recorded::replay(recorded, server, cap, L7Protocol::MySql)
}

type Row<'a> = (&'a str, &'a str, ResponseStatus, Option<u16>);

fn rows(wire: &Wire) -> Vec<Row<'_>> {
    wire.records
        .iter()
        .map(|r| {
            let resource = r.request_resource.as_str();
            (
                r.request_type.as_str(),
                resource,
                r.response_status,
                r.response_code,
            )
        })
        .collect()
}

const OK: ResponseStatus = ResponseStatus::Ok;
const SERVER_ERROR: ResponseStatus = ResponseStatus::ServerError;
const LONG_SELECT: &str = "select seq, repeat('y', 20) from seq_1_to_400";

/// The mariadb client's statements (cli.sql) after the login; `long` is the status of the
/// 400-row select.
fn cli_statements(long: ResponseStatus) -> Vec<Row<'static>> {
    let q = |sql, status, code| ("COM_QUERY", sql, status, code);
    vec![
        q(
            "create table items (id int primary key, name varchar(20))",
            OK,
            None,
        ),
        q(
            "insert into items values (1, 'apple'), (2, 'pear')",
            OK,
            None,
        ),
        q(
            "insert into items values (1, 'dup')",
            SERVER_ERROR,
            Some(1062),
        ),
        q("select * from no_such_table", SERVER_ERROR, Some(1146)),
        q("selec 1", SERVER_ERROR, Some(1064)),
        q("update items set name = 'fig' where id = 2", OK, None),
        q("select id, name from items order by id", OK, None),
        // SQL-level prepared statements are COM_QUERYs
        q(
            "prepare s from 'select name from items where id = ?'",
            OK,
            None,
        ),
        q("set @i = 2", OK, None),
        q("execute s using @i", OK, None),
        q("deallocate prepare s", OK, None),
        q(LONG_SELECT, long, None),
        q("SELECT DATABASE()", OK, None),
        ("COM_INIT_DB", "mysql", OK, None),
        q("drop table shop.items", OK, None),
        ("COM_QUIT", "", OK, None),
    ]
}

#[test]
fn mariadb_client_statements_and_errors() {
    let recorded = load("mariadb_cli-1");
    for (server, cap) in views() {
        let at = format!("server side {server}, capture {cap}");
        let wire = replay(&recorded, server, cap);
        let long = if cap == 1024 {
            ResponseStatus::Unknown
        } else {
            OK
        };
        let mut expected = vec![("LOGIN", "Login username: app", OK, None)];
        expected.extend(cli_statements(long));
        assert_eq!(rows(&wire), expected, "{at}");
        let records = &wire.records;
        assert!(records.iter().all(|r| r.version == "10"), "{at}");
        // rows affected from the OK packets
        let effect = |sql: &str| {
            records
                .iter()
                .find(|r| r.request_resource == sql)
                .and_then(|r| r.row_effect)
        };
        assert_eq!(
            effect("insert into items values (1, 'apple'), (2, 'pear')"),
            Some(2),
            "{at}"
        );
        assert_eq!(
            effect("update items set name = 'fig' where id = 2"),
            Some(1),
            "{at}"
        );
        assert_eq!(effect("insert into items values (1, 'dup')"), None, "{at}");
        assert_eq!(
            records[3].response_exception,
            "Duplicate entry '1' for key 'PRIMARY'"
        );
        assert_eq!(
            records[4].response_exception,
            "Table 'shop.no_such_table' doesn't exist"
        );
        assert!(
            records[5]
                .response_exception
                .starts_with("You have an error in your SQL syntax")
        );
        assert!(
            records
                .iter()
                .filter(|r| r.response_code.is_none())
                .all(|r| r.response_exception.is_empty())
        );
        let stats = wire.stats();
        if cap == 1024 {
            // the 11 KB result set lost its framing: reported without response
            assert_eq!(records[12].response_length, None);
            assert_eq!((stats.parse_errors, stats.resyncs), (0, 1), "{at}");
        } else {
            // every byte is in a row but the greeting
            let requests: u64 = records.iter().map(|r| r.request_length).sum();
            let responses: u64 = records.iter().filter_map(|r| r.response_length).sum();
            assert_eq!(requests, total(&recorded, true), "{at}");
            assert_eq!(responses + 104, total(&recorded, false), "{at}");
            assert_eq!(records[12].response_length, Some(11_619));
            assert_eq!((stats.parse_errors, stats.resyncs), (0, 0), "{at}");
        }
        assert_eq!(stats.unmatched_responses, 0, "{at}");
    }
}

/// The connector's commands (connector_prepared.py) after the login.
fn connector_commands() -> Vec<Row<'static>> {
    let create = "create table t2 (id int primary key, name varchar(20))";
    let insert = "insert into t2 values (?, ?)";
    let select = "select id, name from t2 where id >= ?";
    vec![
        (
            "COM_QUERY",
            "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'",
            OK,
            None,
        ),
        ("COM_QUERY", "SET @@session.autocommit = OFF", OK, None),
        ("COM_PING", "", OK, None),
        ("COM_INIT_DB", "shop", OK, None),
        ("COM_PING", "", OK, None),
        ("COM_STMT_PREPARE", create, OK, None),
        ("COM_STMT_RESET", create, OK, None),
        ("COM_STMT_EXECUTE", create, OK, None),
        ("COM_STMT_CLOSE", create, OK, None),
        ("COM_STMT_PREPARE", insert, OK, None),
        ("COM_STMT_RESET", insert, OK, None),
        ("COM_STMT_EXECUTE", insert, OK, None),
        ("COM_STMT_RESET", insert, OK, None),
        ("COM_STMT_EXECUTE", insert, SERVER_ERROR, Some(1062)),
        ("COM_STMT_CLOSE", insert, OK, None),
        ("COM_STMT_PREPARE", select, OK, None),
        ("COM_STMT_RESET", select, OK, None),
        ("COM_STMT_EXECUTE", select, OK, None),
        ("COM_STMT_CLOSE", select, OK, None),
        (
            "COM_STMT_PREPARE",
            "select * from nope where id = ?",
            SERVER_ERROR,
            Some(1146),
        ),
        // the failed prepare gave no statement id: the connector closes its last one again
        ("COM_STMT_CLOSE", "", OK, None),
        ("COM_PING", "", OK, None),
        ("COM_QUERY", "drop table t2", OK, None),
        ("COM_QUERY", "COMMIT", OK, None),
        ("COM_QUIT", "", OK, None),
    ]
}

#[test]
fn connector_prepared_statements() {
    let recorded = load("connector_prepared-1");
    for (server, cap) in views() {
        let wire = replay(&recorded, server, cap);
        let mut expected = vec![("LOGIN", "Login username: app", OK, None)];
        expected.extend(connector_commands());
        assert_eq!(rows(&wire), expected, "server side {server}, capture {cap}");
        // the binary result set of the execute: column count, 2 definitions, EOF, 1 row, EOF
        assert_eq!(wire.records[18].response_length, Some(115));
        // closes have no response
        assert!(
            wire.records
                .iter()
                .filter(|r| r.request_type == "COM_STMT_CLOSE")
                .all(|r| r.response_length.is_none())
        );
        let stats = wire.stats();
        assert_eq!(
            (stats.parse_errors, stats.resyncs, stats.unmatched_responses),
            (0, 0, 0)
        );
        let requests: u64 = wire.records.iter().map(|r| r.request_length).sum();
        assert_eq!(requests, total(&recorded, true));
    }
}

#[test]
fn a_wrong_password_is_a_failed_login() {
    let recorded = load("mariadb_bad_password-1");
    for (server, cap) in views() {
        let wire = replay(&recorded, server, cap);
        assert_eq!(
            rows(&wire),
            [("LOGIN", "Login username: app", SERVER_ERROR, Some(1045))]
        );
        assert_eq!(
            wire.records[0].response_exception,
            "Access denied for user 'app'@'localhost' (using password: YES)"
        );
    }
}

#[test]
fn attaching_mid_connection() {
    // without greeting and login: the first COM_QUERY is recognised; the protocol version
    // is unknown, and CLIENT_DEPRECATE_EOF is learnt from the first result set
    let recorded = load("mariadb_cli-1");
    for (server, cap) in views() {
        let wire = replay(&recorded[3..], server, cap);
        let long = if cap == 1024 {
            ResponseStatus::Unknown
        } else {
            OK
        };
        assert_eq!(
            rows(&wire),
            cli_statements(long),
            "server side {server}, capture {cap}"
        );
        assert!(wire.records.iter().all(|r| r.version.is_empty()));
    }
    let recorded = load("connector_prepared-1");
    for (server, cap) in views() {
        let wire = replay(&recorded[3..], server, cap);
        assert_eq!(
            rows(&wire),
            connector_commands(),
            "server side {server}, capture {cap}"
        );
        assert_eq!(wire.stats().parse_errors, 0);
    }
}

#[test]
fn recorded_starts_are_detected_with_their_role() {
    for name in [
        "mariadb_cli-1",
        "connector_prepared-1",
        "mariadb_bad_password-1",
    ] {
        let recorded = load(name);
        // the greeting travels from the server; the login and the first query from the
        // client
        let firsts = recorded.iter().take(4).enumerate().filter(|(i, _)| *i != 2);
        for (bytes, sender) in firsts.map(|(_, (c, b))| (b, if *c { "client" } else { "server" })) {
            for direction in [Direction::Egress, Direction::Ingress] {
                let Detection::Match(inference) = detect(bytes, direction) else {
                    panic!("{name}: {sender}'s first message not detected");
                };
                assert_eq!(inference.protocol, L7Protocol::MySql);
                // a process that writes what the client sends is the client
                let writer_is_client = sender == "client";
                let observer_is_client = (direction == Direction::Egress) == writer_is_client;
                let expected = if observer_is_client {
                    "client"
                } else {
                    "server"
                };
                assert_eq!(
                    inference.role.observation_point(),
                    expected,
                    "{name} {sender} {direction:?}"
                );
            }
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

fn claims_mysql(bytes: &[u8]) -> bool {
    [Direction::Egress, Direction::Ingress]
        .into_iter()
        .any(|d| matches!(detect(bytes, d), Detection::Match(i) if i.protocol == L7Protocol::MySql))
}

#[test]
fn other_protocols_and_random_bytes_are_not_mysql() {
    let others: [&[u8]; 17] = [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"\x17\x03\x03\x00\x20",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
        b"+OK\r\n",
        b"PUB orders 5\r\nhello\r\n",
        b"get key\r\n",
        b"\x10\x12\x00\x04MQTT\x04\x02\x00\x3c\x00\x06client",
        b"\x00\x00\x00\x2a\x00\x12\x00\x03\x00\x00\x00\x01\x00\x07client",
        b"\x3a\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00",
        b"AMQP\x00\x00\x09\x01",
        b"\xda\xbb\xc2\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x10",
        // PostgreSQL: a startup, a query, a query whose length's low byte is COM_QUERY
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"Q\x00\x00\x00\x0bselect 1\x00",
        &[
            b"Q\x00\x00\x01\x03".as_slice(),
            &b"SELECT ".repeat(36),
            b"12345\0",
        ]
        .concat(),
    ];
    for bytes in others {
        assert!(!claims_mysql(bytes), "{bytes:?}");
    }
    let mut rng = Rng(0x0dd_ba11_5eed_0042);
    for _ in 0..50_000 {
        let n = 1 + (rng.next() % 96) as usize;
        let bytes = rng.bytes(n);
        assert!(!claims_mysql(&bytes), "{bytes:?}");
    }
    // random payloads behind plausible headers: greeting, query, prepare, login
    for (seq, first) in [(0, 10), (0, 3), (0, 0x16), (1, 0x8d)] {
        for _ in 0..20_000 {
            let n = 1 + (rng.next() % 80) as usize;
            let mut bytes = vec![n as u8 + 1, 0, 0, seq, first];
            bytes.extend(rng.bytes(n));
            assert!(!claims_mysql(&bytes), "{bytes:?}");
        }
    }
}
