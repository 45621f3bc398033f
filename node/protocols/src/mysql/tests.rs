//! Codec and detection tests with packets built from the protocol documentation.

use super::*;
use crate::ResponseStatus;
use crate::framed::CodecWire;

/// A packet: header and payload.
fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut p = len.to_le_bytes()[..3].to_vec();
    p.push(seq);
    p.extend_from_slice(payload);
    p
}

fn packets(first_seq: u8, payloads: &[&[u8]]) -> Vec<u8> {
    payloads
        .iter()
        .enumerate()
        .flat_map(|(i, p)| packet(first_seq.wrapping_add(i as u8), p))
        .collect()
}

fn query(sql: &str) -> Vec<u8> {
    let mut payload = vec![0x03];
    payload.extend_from_slice(sql.as_bytes());
    packet(0, &payload)
}

fn ok(affected: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0x00, affected, 0x00];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    p
}

fn eof(status: u16) -> Vec<u8> {
    let mut p = vec![0xfe, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p
}

fn err(code: u16, state: &str, message: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(state.as_bytes());
    p.extend_from_slice(message.as_bytes());
    p
}

const COLUMN_DEF: &[u8] =
    b"\x03def\x04shop\x01t\x01t\x02id\x02id\x0c\x3f\x00\x0b\x00\x00\x00\x03\x03\x50\x00\x00\x00";
const ROW: &[u8] = b"\x011";

/// A result set with `columns` columns and `rows` rows (EOF packets unless `deprecate`).
fn result_set(first_seq: u8, columns: u8, rows: usize, deprecate: bool) -> Vec<u8> {
    let mut payloads: Vec<Vec<u8>> = vec![vec![columns]];
    payloads.extend((0..columns).map(|_| COLUMN_DEF.to_vec()));
    if !deprecate {
        payloads.push(eof(0x0002));
    }
    payloads.extend((0..rows).map(|_| ROW.to_vec()));
    if deprecate {
        let mut end = ok(0, 0x0002);
        end[0] = 0xfe;
        payloads.push(end);
    } else {
        payloads.push(eof(0x0002));
    }
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    packets(first_seq, &refs)
}

/// A protocol-10 greeting with `capabilities`.
fn greeting(capabilities: u32) -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(b"10.11.19-MariaDB\0");
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(b"abcdefgh\0");
    p.extend_from_slice(&(capabilities as u16).to_le_bytes());
    p.push(0x2d);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((capabilities >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    packet(0, &p)
}

/// A HandshakeResponse41 for `user`.
fn login(capabilities: u32, user: &str) -> Vec<u8> {
    let mut p = capabilities.to_le_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(0x2d);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.extend_from_slice(b"\x14abcdefghijklmnopqrst");
    p.extend_from_slice(b"mysql_native_password\0");
    packet(1, &p)
}

const CAPS: u32 = wire::CLIENT_PROTOCOL_41 | 0x0008_0000 | 0x8000;

/// A client-side session fed syscall by syscall.
type Drive = CodecWire<MySqlCodec>;

fn drive() -> Drive {
    CodecWire::new(MySqlCodec::default(), Role::Client)
}

#[test]
fn login_query_and_errors() {
    let mut d = drive();
    d.reply(&greeting(CAPS));
    d.request(&login(CAPS, "app"));
    d.reply(&packet(2, &ok(0, 2)));
    assert_eq!(d.out.len(), 1);
    let login = d.last();
    assert_eq!(login.request_type, "LOGIN");
    assert_eq!(login.request_resource, "Login username: app");
    assert_eq!(login.version, "10");
    assert_eq!(login.response_status, ResponseStatus::Ok);

    d.request(&query("insert into t values (1)"));
    d.reply(&packet(1, &ok(1, 2)));
    let insert = d.last();
    assert_eq!(
        (
            insert.request_type.as_str(),
            insert.request_resource.as_str()
        ),
        ("COM_QUERY", "insert into t values (1)")
    );
    assert_eq!(
        (insert.response_code, insert.response_status),
        (None, ResponseStatus::Ok)
    );

    d.request(&query("insert into t values (1)"));
    d.reply(&packet(
        1,
        &err(1062, "23000", "Duplicate entry '1' for key 'PRIMARY'"),
    ));
    let dup = d.last();
    assert_eq!(dup.response_code, Some(1062));
    assert_eq!(dup.response_status, ResponseStatus::ServerError);
    assert_eq!(
        dup.response_exception,
        "Duplicate entry '1' for key 'PRIMARY'"
    );

    // a client library error code is the client's
    d.request(&query("select 1"));
    d.reply(&packet(1, &err(2013, "HY000", "Lost connection")));
    assert_eq!(d.last().response_status, ResponseStatus::ClientError);
    assert_eq!(d.out.len(), 4);
    assert!(d.clean(), "{:?}", d.stats);
}

#[test]
fn result_sets_with_and_without_eof_packets() {
    for deprecate in [false, true] {
        let mut d = drive();
        // mid-connection: capabilities learnt from the first result set
        d.request(&query("select id from t"));
        let rs = result_set(1, 2, 3, deprecate);
        d.reply(&rs[..7]); // split inside a packet
        d.reply(&rs[7..]);
        d.request(&query("select id from t where false"));
        d.reply(&result_set(1, 1, 0, deprecate));
        d.request(&query("select 2"));
        d.reply(&result_set(1, 1, 1, deprecate));
        assert_eq!(d.out.len(), 3, "deprecate {deprecate}");
        assert!(
            d.out
                .iter()
                .all(|r| r.response_status == ResponseStatus::Ok)
        );
        assert_eq!(d.out[0].response_length, Some(rs.len() as u64));
        assert!(d.clean(), "deprecate {deprecate}: {:?}", d.stats);
    }
}

#[test]
fn multi_results_error_mid_rows_and_progress_reports() {
    let mut d = drive();
    // a multi-statement query: OK (more results), a result set (more results), OK
    d.request(&query("update t set a = 1; select a from t; delete from t"));
    let mut rs = result_set(2, 1, 1, false);
    let last_eof = rs.len() - 5;
    rs[last_eof + 3] |= wire::SERVER_MORE_RESULTS_EXISTS as u8;
    let mut bytes = packet(1, &ok(2, 0x000a));
    bytes.extend(&rs);
    let next_seq = 2 + 5;
    bytes.extend(packet(next_seq, &ok(3, 0x0002)));
    d.reply(&bytes);
    assert_eq!(d.out.len(), 1);
    assert_eq!(d.last().response_length, Some(bytes.len() as u64));

    // an error after some rows ends the response
    d.request(&query("select a from big"));
    let mut bytes = packets(1, &[b"\x01", COLUMN_DEF, &eof(2), ROW, ROW]);
    bytes.extend(packet(
        6,
        &err(1317, "70100", "Query execution was interrupted"),
    ));
    d.reply(&bytes);
    assert_eq!(d.last().response_code, Some(1317));

    // MariaDB's progress report (ERR 0xFFFF) is not the end
    d.request(&query("alter table t add column b int"));
    d.reply(&packet(1, b"\xff\xff\xff\x01\x01\x00\x00\x00\x00stage"));
    assert_eq!(d.out.len(), 2);
    d.reply(&packet(2, &ok(0, 2)));
    assert_eq!(d.out.len(), 3);
    assert_eq!(d.last().response_status, ResponseStatus::Ok);
    assert!(d.clean(), "{:?}", d.stats);
}

fn prepare(sql: &str) -> Vec<u8> {
    let mut payload = vec![0x16];
    payload.extend_from_slice(sql.as_bytes());
    packet(0, &payload)
}

fn stmt(command: u8, id: u32, rest: &[u8]) -> Vec<u8> {
    let mut payload = vec![command];
    payload.extend_from_slice(&id.to_le_bytes());
    payload.extend_from_slice(rest);
    packet(0, &payload)
}

fn prepare_ok(id: u32, columns: u16, params: u16) -> Vec<u8> {
    let mut p = vec![0];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&columns.to_le_bytes());
    p.extend_from_slice(&params.to_le_bytes());
    p.extend_from_slice(&[0, 0, 0]);
    p
}

/// A prepare response: OK, parameter definitions, column definitions.
fn prepare_response(id: u32, columns: u16, params: u16, deprecate: bool) -> Vec<u8> {
    let mut payloads = vec![prepare_ok(id, columns, params)];
    for count in [params, columns] {
        if count > 0 {
            payloads.extend((0..count).map(|_| COLUMN_DEF.to_vec()));
            if !deprecate {
                payloads.push(eof(2));
            }
        }
    }
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    packets(1, &refs)
}

#[test]
fn prepared_statements_carry_their_sql() {
    for (deprecate, handshake) in [(false, true), (true, true), (false, false), (true, false)] {
        let mut d = drive();
        if handshake {
            let caps = CAPS
                | if deprecate {
                    wire::CLIENT_DEPRECATE_EOF
                } else {
                    0
                };
            d.reply(&greeting(caps));
            d.request(&login(caps, "app"));
            d.reply(&packet(2, &ok(0, 2)));
        }
        let sql = "select name from t where id = ? and kind = ?";
        d.request(&prepare(sql));
        d.reply(&prepare_response(5, 1, 2, deprecate));
        d.request(&prepare("insert into t values (?)"));
        d.reply(&prepare_response(6, 0, 1, deprecate));
        d.request(&prepare("commit"));
        d.reply(&prepare_response(7, 0, 0, deprecate));
        d.request(&stmt(0x17, 5, b"\x00\x01\x00\x00\x00"));
        d.reply(&result_set(1, 1, 2, deprecate));
        d.request(&stmt(0x1a, 6, b""));
        d.reply(&packet(1, &ok(0, 2)));
        d.request(&stmt(0x19, 5, b""));
        d.request(&stmt(0x17, 5, b"\x00\x01\x00\x00\x00"));
        d.reply(&packet(
            1,
            &err(1243, "HY000", "Unknown prepared statement handler"),
        ));
        let rows: Vec<(&str, &str, ResponseStatus)> = d
            .out
            .iter()
            .skip(usize::from(handshake))
            .map(|r| {
                (
                    r.request_type.as_str(),
                    r.request_resource.as_str(),
                    r.response_status,
                )
            })
            .collect();
        let ok = ResponseStatus::Ok;
        assert_eq!(
            rows,
            [
                ("COM_STMT_PREPARE", sql, ok),
                ("COM_STMT_PREPARE", "insert into t values (?)", ok),
                ("COM_STMT_PREPARE", "commit", ok),
                ("COM_STMT_EXECUTE", sql, ok),
                ("COM_STMT_RESET", "insert into t values (?)", ok),
                ("COM_STMT_CLOSE", sql, ok),
                ("COM_STMT_EXECUTE", "", ResponseStatus::ServerError),
            ],
            "deprecate {deprecate} handshake {handshake}"
        );
        assert!(
            d.clean(),
            "deprecate {deprecate} handshake {handshake}: {:?}",
            d.stats
        );
        // a close has no response: its row has no response fields
        assert_eq!(d.out[usize::from(handshake) + 5].response_length, None);
    }
}

#[test]
fn mariadb_direct_execution_uses_the_statement_prepared_last() {
    let mut d = drive();
    let mut pipelined = prepare("select ? + 1");
    pipelined.extend(stmt(0x17, u32::MAX, b"\x00\x01\x00\x00\x00"));
    d.request(&pipelined);
    d.reply(&prepare_response(9, 1, 1, false));
    d.reply(&result_set(1, 1, 1, false));
    assert_eq!(d.out.len(), 2);
    assert_eq!(d.out[1].request_type, "COM_STMT_EXECUTE");
    assert_eq!(d.out[1].request_resource, "select ? + 1");
    assert!(d.clean(), "{:?}", d.stats);
}

#[test]
fn authentication_exchanges_and_login_errors() {
    let mut d = drive();
    d.reply(&greeting(CAPS));
    d.request(&login(CAPS, "root"));
    // auth switch request, the client's answer, more data, OK
    d.reply(&packet(
        2,
        b"\xfemysql_native_password\0abcdefghijklmnopqrst\0",
    ));
    d.request(&packet(3, b"01234567890123456789"));
    d.reply(&packet(4, b"\x01\x03"));
    assert!(d.out.is_empty());
    d.reply(&packet(5, &ok(0, 2)));
    assert_eq!(d.out.len(), 1);
    assert_eq!(d.last().response_status, ResponseStatus::Ok);
    assert_eq!(d.last().request_length, login(CAPS, "root").len() as u64);

    let mut d = drive();
    d.reply(&greeting(CAPS));
    d.request(&login(CAPS, "app"));
    d.reply(&packet(
        2,
        &err(1045, "28000", "Access denied for user 'app'"),
    ));
    assert_eq!(d.last().response_code, Some(1045));
    assert_eq!(d.last().response_status, ResponseStatus::ServerError);
    assert!(d.clean(), "{:?}", d.stats);
}

#[test]
fn tls_and_compression_make_the_connection_opaque() {
    let mut d = drive();
    d.reply(&greeting(CAPS | wire::CLIENT_SSL));
    let mut ssl = login(CAPS | wire::CLIENT_SSL, "x");
    ssl.truncate(4 + 32);
    ssl[0] = 32;
    d.request(&ssl);
    d.request(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03");
    d.reply(b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03");
    d.request(&query("select 1"));
    d.close();
    assert!(d.out.is_empty());
    assert!(d.clean(), "{:?}", d.stats);

    let mut d = drive();
    let caps = CAPS | wire::CLIENT_COMPRESS;
    d.reply(&greeting(caps));
    d.request(&login(caps, "app"));
    d.reply(&packet(2, &ok(0, 2)));
    // compressed packets: 7-byte header
    d.request(b"\x0d\x00\x00\x00\x00\x00\x00\x09\x00\x00\x00\x03select 1");
    d.close();
    assert_eq!(d.out.len(), 1, "the login only");
    assert!(d.clean(), "{:?}", d.stats);
}

#[test]
fn capture_prefixes_and_lost_framing() {
    let mut d = drive();
    // a 20 KB query captured to 1 KiB: its tail is skipped by length
    let long_sql = format!("insert into t values {}", "(1),".repeat(5000));
    let long = query(&long_sql);
    d.send(Direction::Egress, &long, 1024);
    d.reply(&packet(1, &ok(200, 2)));
    assert_eq!(d.out.len(), 1);
    assert_eq!(d.last().request_length, long.len() as u64);
    assert!(d.last().request_resource.len() < 1024);
    assert!(
        d.last()
            .request_resource
            .starts_with("insert into t values (1),")
    );
    assert!(d.clean(), "{:?}", d.stats);

    // a long result set in one syscall captured to 1 KiB: framing is lost inside it, the
    // query is reported without response, and the next exchange parses
    d.request(&query("select a from big"));
    let big = result_set(1, 1, 2000, false);
    d.send(Direction::Ingress, &big, 1024);
    assert_eq!(d.out.len(), 2);
    assert_eq!(d.last().response_status, ResponseStatus::Unknown);
    assert_eq!(d.last().response_length, None);
    d.request(&query("select 1"));
    d.reply(&packet(1, &ok(0, 2)));
    assert_eq!(d.out.len(), 3);
    assert_eq!(d.last().response_status, ResponseStatus::Ok);
    assert_eq!(d.stats.parse_errors, 0);

    // a result set whose one long row is captured to 1 KiB: skipped by its length
    let mut d = drive();
    d.request(&query("select doc from docs"));
    let mut row = vec![0xfc, 0x20, 0x4e]; // a 20000-byte column
    row.resize(3 + 20_000, b'd');
    let mut long = packets(1, &[b"\x01", COLUMN_DEF, &eof(2)]);
    long.extend(packet(4, &row));
    d.send(Direction::Ingress, &long, 1024);
    d.reply(&packet(5, &eof(2)));
    assert_eq!(d.out.len(), 1);
    assert_eq!(d.last().response_status, ResponseStatus::Ok);
    assert_eq!(d.last().response_length, Some(long.len() as u64 + 9));
    assert!(d.clean(), "{:?}", d.stats);
}

#[test]
fn requests_of_16_mib_and_more_span_packets() {
    let mut d = drive();
    let mut first = vec![0xff, 0xff, 0xff, 0x00, 0x03];
    first.extend_from_slice(b"insert into blobs values ('");
    // the first packet, captured to 1 KiB, then the second and last
    let mut head = first.clone();
    head.resize(4 + wire::MAX_PAYLOAD, b'x');
    d.send(Direction::Egress, &head, 1024);
    d.request(&packet(1, b"')"));
    d.reply(&packet(2, &ok(1, 2)));
    assert_eq!(d.out.len(), 1);
    assert_eq!(d.last().request_length, head.len() as u64 + 6);
    assert!(d.last().request_resource.starts_with("insert into blobs"));
    assert!(d.clean(), "{:?}", d.stats);
}

#[test]
fn unexpected_sequence_ids_lose_framing() {
    let mut d = drive();
    d.request(&query("select 1"));
    d.reply(&packet(7, &ok(0, 2)));
    assert_eq!(d.stats.parse_errors, 1);
    assert_eq!(d.out.len(), 1);
    assert_eq!(d.last().response_status, ResponseStatus::Unknown);
    // the next exchange is fine
    d.request(&query("select 2"));
    d.reply(&packet(1, &ok(0, 2)));
    assert_eq!(d.last().response_status, ResponseStatus::Ok);
}

#[test]
fn other_commands() {
    let mut d = drive();
    d.request(&packet(0, b"\x02shop"));
    d.reply(&packet(1, &ok(0, 2)));
    d.request(&packet(0, b"\x0e"));
    d.reply(&packet(1, &ok(0, 2)));
    d.request(&packet(0, b"\x04items\0"));
    d.reply(&packets(1, &[COLUMN_DEF, COLUMN_DEF, &eof(2)]));
    d.request(&packet(0, b"\x09"));
    d.reply(&packet(1, b"Uptime: 100  Threads: 1"));
    d.request(&packet(0, b"\x1b\x01\x00"));
    d.reply(&packet(1, &eof(2)));
    d.request(&packet(0, b"\x01"));
    let rows: Vec<(&str, &str)> = d
        .out
        .iter()
        .map(|r| (r.request_type.as_str(), r.request_resource.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("COM_INIT_DB", "shop"),
            ("COM_PING", ""),
            ("COM_FIELD_LIST", "items"),
            ("COM_STATISTICS", ""),
            ("COM_SET_OPTION", ""),
            ("COM_QUIT", ""),
        ]
    );
    assert!(
        d.out
            .iter()
            .all(|r| r.response_status == ResponseStatus::Ok)
    );
    assert!(d.clean(), "{:?}", d.stats);
    // a command byte no client sends loses framing
    d.request(&packet(0, b"\x40abc"));
    assert_eq!(d.stats.parse_errors, 1);
}

#[test]
fn local_infile_contents_are_part_of_the_exchange() {
    let mut d = drive();
    d.request(&query("load data local infile '/tmp/rows' into table t"));
    d.reply(&packet(1, b"\xfb/tmp/rows"));
    // the file: 300 packets, so that sequence ids wrap to 0 (not a command)
    for i in 0..300u32 {
        d.request(&packet((2 + i) as u8, b"\x031,2\n"));
    }
    d.request(&packet(46, b""));
    d.reply(&packet(47, &ok(200, 2)));
    assert_eq!(d.out.len(), 1);
    assert_eq!(d.last().response_status, ResponseStatus::Ok);
    d.request(&query("select 1"));
    d.reply(&packet(1, &ok(0, 2)));
    assert_eq!(d.out.len(), 2);
    assert!(d.clean(), "{:?}", d.stats);
}

#[test]
fn query_attributes_are_skipped() {
    let mut d = drive();
    d.request(&packet(0, b"\x03\x00\x01select 1"));
    d.reply(&packet(1, &ok(0, 2)));
    assert_eq!(d.last().request_resource, "select 1");
}

fn detect_at(bytes: &[u8], direction: Direction) -> Detection {
    detect(bytes, direction)
}

fn matched(role: Role) -> Detection {
    Detection::Match(Inference {
        protocol: L7Protocol::MySql,
        role,
    })
}

#[test]
fn detection() {
    let g = greeting(CAPS);
    // the greeting travels to the client: a process that reads it is the client
    assert_eq!(detect_at(&g, Direction::Ingress), matched(Role::Client));
    assert_eq!(detect_at(&g, Direction::Egress), matched(Role::Server));
    for cut in [1, 4, 5, 12, 30] {
        assert_eq!(
            detect_at(&g[..cut], Direction::Ingress),
            Detection::NeedMore,
            "{cut}"
        );
    }
    let q = query("SELECT abalance FROM accounts WHERE aid = 1");
    assert_eq!(detect_at(&q, Direction::Egress), matched(Role::Client));
    assert_eq!(detect_at(&q, Direction::Ingress), matched(Role::Server));
    assert_eq!(detect_at(&q[..7], Direction::Egress), Detection::NeedMore);
    assert_eq!(
        detect_at(
            &prepare("/* x */ insert into t values (?)"),
            Direction::Egress
        ),
        matched(Role::Client)
    );
    assert_eq!(
        detect_at(
            &packet(0, b"\x03\x00\x01set autocommit=1"),
            Direction::Egress
        ),
        matched(Role::Client)
    );
    let l = login(CAPS, "app");
    assert_eq!(detect_at(&l, Direction::Egress), matched(Role::Client));

    let no: [&[u8]; 12] = [
        // TLS records
        b"\x16\x03\x01\x00\xf8\x01\x00\x00\xf4\x03\x03\x6b\x21\x9d",
        b"\x17\x03\x03\x00\x20",
        // a query with more bytes than its packet
        &[q.clone(), b"junk".to_vec()].concat(),
        // not SQL
        &query("hello world"),
        &query("select\x01"),
        // other sequence ids and commands
        &packet(2, b"\x03select 1"),
        &packet(0, b"\x0e"),
        &packet(0, b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00"),
        // an OK packet
        &packet(1, &ok(0, 2)),
        // a greeting of another protocol version
        &packet(0, b"\x09 5.0\0"),
        // an empty packet
        &packet(0, b""),
        // PostgreSQL's Query with a length whose low byte is 0x03 (259 bytes)
        &[
            b"Q\x00\x00\x01\x03".to_vec(),
            b"SELECT ".repeat(36),
            b"12345\0".to_vec(),
        ]
        .concat(),
    ];
    for bytes in no {
        assert_eq!(
            detect_at(bytes, Direction::Egress),
            Detection::NoMatch,
            "{bytes:?}"
        );
    }
}
