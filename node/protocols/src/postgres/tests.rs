//! Codec and detection tests with messages built from the protocol documentation.

use super::*;
use crate::ResponseStatus;
use crate::framed::CodecWire;

/// A typed message.
fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn q(sql: &str) -> Vec<u8> {
    msg(b'Q', &[sql.as_bytes(), b"\0"].concat())
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    msg(
        b'P',
        &[name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat(),
    )
}

fn bind(portal: &str, statement: &str) -> Vec<u8> {
    msg(
        b'B',
        &[
            portal.as_bytes(),
            b"\0",
            statement.as_bytes(),
            b"\0\0\0\0\0\0\0",
        ]
        .concat(),
    )
}

fn execute(portal: &str) -> Vec<u8> {
    msg(b'E', &[portal.as_bytes(), b"\0\0\0\0\0"].concat())
}

fn sync() -> Vec<u8> {
    msg(b'S', b"")
}

fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

fn complete(tag: &str) -> Vec<u8> {
    msg(b'C', &[tag.as_bytes(), b"\0"].concat())
}

fn error(severity: &str, code: &str, message: &str) -> Vec<u8> {
    let body = format!("S{severity}\0V{severity}\0C{code}\0M{message}\0Fpostgres.c\0L1\0\0");
    msg(b'E', body.as_bytes())
}

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut m = (body.len() as u32 + 4).to_be_bytes().to_vec();
    m.extend(body);
    m
}

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

fn row_set(rows: usize) -> Vec<u8> {
    let mut bytes = msg(
        b'T',
        b"\x00\x01abalance\0\0\0\0\0\0\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
    );
    for _ in 0..rows {
        bytes.extend(msg(b'D', b"\x00\x01\x00\x00\x00\x04-123"));
    }
    bytes
}

/// A server-side session fed syscall by syscall.
type Drive = CodecWire<PgCodec>;

fn drive() -> Drive {
    CodecWire::new(PgCodec::default(), Role::Server)
}

/// (request type, resource, status, exception) of every row.
fn rows(d: &Drive) -> Vec<(&str, &str, ResponseStatus, &str)> {
    d.out
        .iter()
        .map(|r| {
            (
                r.request_type.as_str(),
                r.request_resource.as_str(),
                r.response_status,
                r.response_exception.as_str(),
            )
        })
        .collect()
}

const OK: ResponseStatus = ResponseStatus::Ok;

#[test]
fn startup_and_simple_queries() {
    let mut d = drive();
    d.request(&SSL_REQUEST);
    d.reply(b"N");
    d.request(&startup(&[
        ("user", "app"),
        ("database", "bench"),
        ("application_name", "psql"),
    ]));
    d.reply(&msg(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0"));
    d.request(&msg(b'p', b"SCRAM-SHA-256\0\0\0\0\x04abcd"));
    let mut rest = msg(b'R', b"\0\0\0\0");
    rest.extend(msg(b'S', b"server_version\x0015.18\0"));
    rest.extend(msg(b'K', b"\0\0\x30\x39\x12\x34\x56\x78"));
    rest.extend(ready());
    d.reply(&rest);
    let mut select = row_set(2);
    select.extend(complete("SELECT 2"));
    select.extend(ready());
    d.request(&q("SELECT abalance FROM pgbench_accounts WHERE aid = 1;"));
    d.reply(&select);
    d.request(&q("selec 1"));
    let mut failed = error("ERROR", "42601", "syntax error at or near \"selec\"");
    failed.extend(ready());
    d.reply(&failed[..20]);
    d.reply(&failed[20..]);
    d.request(&q("BEGIN; UPDATE t SET a = 1; END"));
    let mut multi = complete("BEGIN");
    multi.extend(complete("UPDATE 3"));
    multi.extend(msg(b'N', b"SWARNING\0C01000\0Mnote\0\0"));
    multi.extend(complete("COMMIT"));
    multi.extend(ready());
    d.reply(&multi);
    d.request(&msg(b'X', b""));
    assert_eq!(
        rows(&d),
        [
            ("ssl request", "", OK, ""),
            ("startup", "user=app database=bench", OK, ""),
            (
                "simple query",
                "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
                OK,
                ""
            ),
            (
                "simple query",
                "selec 1",
                ResponseStatus::ClientError,
                "42601: syntax error at or near \"selec\""
            ),
            ("simple query", "BEGIN; UPDATE t SET a = 1; END", OK, ""),
        ]
    );
    assert_eq!(d.out[2].response_length, Some(select.len() as u64));
    assert_eq!(d.out[2].response_code, None);
    assert_eq!(d.out[3].response_length, Some(failed.len() as u64));
    assert!(d.clean(), "{:?}", d.stats);
}

#[test]
fn extended_and_prepared_queries() {
    let mut d = drive();
    // pgbench -M extended: unnamed statement, all in one write
    let sql = "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;";
    let mut batch = parse("", sql);
    batch.extend(bind("", ""));
    batch.extend(msg(b'D', b"P\0"));
    batch.extend(execute(""));
    batch.extend(sync());
    d.request(&batch);
    let mut answer = msg(b'1', b"");
    answer.extend(msg(b'2', b""));
    answer.extend(msg(b'n', b""));
    answer.extend(complete("UPDATE 1"));
    answer.extend(ready());
    d.reply(&answer);
    // pgbench -M prepared: Parse/Sync once, then Bind/Describe/Execute/Sync
    let select = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
    d.request(&[parse("P_2", select), sync()].concat());
    d.reply(&[msg(b'1', b""), ready()].concat());
    for _ in 0..2 {
        d.request(&[bind("", "P_2"), msg(b'D', b"P\0"), execute(""), sync()].concat());
        let mut rows = msg(b'2', b"");
        rows.extend(row_set(1));
        rows.extend(complete("SELECT 1"));
        rows.extend(ready());
        d.reply(&rows);
    }
    // an error in an extended exchange: the server skips to Sync
    d.request(
        &[
            parse("", "select * from nope"),
            bind("", ""),
            execute(""),
            sync(),
        ]
        .concat(),
    );
    d.reply(
        &[
            error("ERROR", "42P01", "relation \"nope\" does not exist"),
            ready(),
        ]
        .concat(),
    );
    // closing the statement forgets it
    d.request(&[msg(b'C', b"SP_2\0"), sync()].concat());
    d.reply(&[msg(b'3', b""), ready()].concat());
    d.request(&[bind("", "P_2"), execute(""), sync()].concat());
    d.reply(
        &[
            error(
                "ERROR",
                "26000",
                "prepared statement \"P_2\" does not exist",
            ),
            ready(),
        ]
        .concat(),
    );
    assert_eq!(
        rows(&d),
        [
            ("parse", sql, OK, ""),
            ("parse", select, OK, ""),
            ("execute", select, OK, ""),
            ("execute", select, OK, ""),
            (
                "parse",
                "select * from nope",
                ResponseStatus::ClientError,
                "42P01: relation \"nope\" does not exist"
            ),
            ("close", select, OK, ""),
            (
                "execute",
                "",
                ResponseStatus::ClientError,
                "26000: prepared statement \"P_2\" does not exist"
            ),
        ]
    );
    assert_eq!(d.out[0].request_length, batch.len() as u64);
    assert_eq!(d.out[0].response_length, Some(answer.len() as u64));
    assert!(d.clean(), "{:?}", d.stats);
}

#[test]
fn refused_logins_tls_and_cancel() {
    let mut d = drive();
    d.request(&startup(&[("user", "app")]));
    d.reply(&msg(b'R', b"\0\0\0\x05salt"));
    d.request(&msg(b'p', b"md5abcdef\0"));
    d.reply(&error(
        "FATAL",
        "28P01",
        "password authentication failed for user \"app\"",
    ));
    assert_eq!(
        rows(&d),
        [(
            "startup",
            "user=app",
            ResponseStatus::ServerError,
            "28P01: password authentication failed for user \"app\""
        )]
    );

    // a FATAL error ends any exchange (the server closes)
    let mut d = drive();
    d.request(&q("select pg_sleep(100)"));
    d.reply(&error(
        "FATAL",
        "57P01",
        "terminating connection due to administrator command",
    ));
    assert_eq!(d.out.len(), 1);
    assert_eq!(d.out[0].response_status, ResponseStatus::ServerError);

    let mut d = drive();
    d.request(&SSL_REQUEST);
    d.reply(b"S");
    d.request(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03");
    d.reply(b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03");
    d.request(&q("select 1"));
    assert_eq!(rows(&d), [("ssl request", "", OK, "")]);
    assert!(d.clean(), "{:?}", d.stats);

    let mut d = drive();
    let mut cancel = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    cancel.extend_from_slice(&[0, 0, 0x30, 0x39, 1, 2, 3, 4]);
    d.request(&cancel);
    assert_eq!(rows(&d), [("cancel request", "", OK, "")]);
}

#[test]
fn copy_and_unsolicited_messages() {
    let mut d = drive();
    // between exchanges: a notification and a parameter change, skipped
    d.reply(&msg(b'A', b"\0\0\0\x01chan\0\0"));
    d.request(&q("copy t from stdin"));
    d.reply(&msg(b'G', b"\0\0\x01\0\0"));
    d.request(&msg(b'd', b"1\tone\n"));
    d.request(&msg(b'd', b"2\ttwo\n"));
    d.request(&msg(b'c', b""));
    d.reply(&[complete("COPY 2"), ready()].concat());
    assert_eq!(rows(&d), [("simple query", "copy t from stdin", OK, "")]);
    assert!(d.clean(), "{:?}", d.stats);
}

#[test]
fn capture_prefixes_and_lost_framing() {
    let mut d = drive();
    // a long result set in 8 KiB syscalls, each captured to 1 KiB
    d.request(&q("select g from generate_series(1, 3000) g"));
    let mut rows = row_set(3000);
    rows.extend(complete("SELECT 3000"));
    rows.extend(ready());
    for part in rows.chunks(8192) {
        d.send(Direction::Egress, part, 1024);
    }
    assert_eq!(d.out.len(), 1);
    assert_eq!(d.out[0].response_status, ResponseStatus::Unknown);
    assert_eq!(d.stats.parse_errors, 0);
    // the next exchange is whole
    d.request(&q("select 1"));
    d.reply(&[row_set(1), complete("SELECT 1"), ready()].concat());
    assert_eq!(d.out.len(), 2);
    assert_eq!(d.out[1].response_status, OK);
    assert_eq!(d.stats.parse_errors, 0);

    // one long message captured to 1 KiB: skipped by its length
    let mut d = drive();
    let long = format!("insert into t values {}", "(1),".repeat(3000));
    d.send(Direction::Ingress, &q(&long), 1024);
    d.reply(&[complete("INSERT 0 3000"), ready()].concat());
    assert_eq!(d.out.len(), 1);
    assert!(
        d.out[0]
            .request_resource
            .starts_with("insert into t values (1),")
    );
    assert_eq!(d.out[0].request_length, q(&long).len() as u64);
    assert!(d.clean(), "{:?}", d.stats);
}

#[test]
fn garbage_loses_framing() {
    let mut d = drive();
    d.request(b"\x7fnot a message");
    assert_eq!(d.stats.parse_errors, 1);
    d.request(&q("select 1"));
    d.reply(b"?\0\0\0\x04");
    assert_eq!(d.stats.parse_errors, 2);
    assert_eq!(d.out.len(), 1);
    assert_eq!(d.out[0].response_status, ResponseStatus::Unknown);
}

fn matched(role: Role) -> Detection {
    Detection::Match(Inference {
        protocol: L7Protocol::PostgreSql,
        role,
    })
}

#[test]
fn detection() {
    let s = startup(&[("user", "postgres"), ("database", "bench")]);
    assert_eq!(detect(&s, Direction::Egress), matched(Role::Client));
    assert_eq!(detect(&s, Direction::Ingress), matched(Role::Server));
    assert_eq!(
        detect(&SSL_REQUEST, Direction::Egress),
        matched(Role::Client)
    );
    for cut in [1, 4, 8, 12, s.len() - 1] {
        assert_eq!(
            detect(&s[..cut], Direction::Egress),
            Detection::NeedMore,
            "{cut}"
        );
    }
    let query = q("BEGIN;");
    assert_eq!(detect(&query, Direction::Ingress), matched(Role::Server));
    assert_eq!(detect(&q("END"), Direction::Ingress), matched(Role::Server));
    assert_eq!(detect(&query[..7], Direction::Ingress), Detection::NeedMore);
    let extended = [
        parse("", "UPDATE t SET a = $1"),
        bind("", ""),
        execute(""),
        sync(),
    ]
    .concat();
    assert_eq!(detect(&extended, Direction::Egress), matched(Role::Client));
    assert_eq!(
        detect(&extended[..12], Direction::Egress),
        Detection::NeedMore
    );
    let prepared = [bind("", "P_1"), msg(b'D', b"P\0"), execute(""), sync()].concat();
    assert_eq!(detect(&prepared, Direction::Egress), matched(Role::Client));
    assert_eq!(
        detect(&prepared[..20], Direction::Egress),
        Detection::NeedMore
    );

    let no: [&[u8]; 13] = [
        b"\x16\x03\x01\x00\xf8\x01\x00\x00\xf4\x03\x03\x6b\x21\x9d",
        b"POST /api HTTP/1.1\r\n",
        b"PING\r\n",
        b"PUB subject 5\r\nhello\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"\x00\x00\x00\x4a\x00\x00\x00\x00",
        &q("hello"),
        &[q("select 1"), b"x".to_vec()].concat(),
        &msg(b'Q', b"select 1"),               // no NUL at its end
        &[bind("", ""), execute("")].concat(), // no Sync
        &ready(),
        &[SSL_REQUEST.to_vec(), b"x".to_vec()].concat(),
        // MySQL COM_QUERY
        b"\x09\x00\x00\x00\x03select 1",
    ];
    for bytes in no {
        assert_eq!(
            detect(bytes, Direction::Egress),
            Detection::NoMatch,
            "{bytes:?}"
        );
    }
}
