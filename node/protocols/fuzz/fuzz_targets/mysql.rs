//! Feeds a `Conversation` with a valid MySQL opening chunk (so that inference picks
//! MySQL) followed by chunks whose directions, boundaries, capture caps, sequence jumps
//! and uncaptured tails all come from the fuzzer's input, then checks every row.
//!
//! Input: as in `flowmesh_protocols_fuzz`; `ctl` bit 7 prepends the opening chunk to the
//! payload.

#![no_main]

use flowmesh_protocols::{Direction, L7Protocol, L7Record, ResponseStatus};
use flowmesh_protocols_fuzz::{Setup, check_session_row, run};
use libfuzzer_sys::fuzz_target;

/// The first chunk, the server greeting read by the client (ingress), as MariaDB 10.11
/// sent it while tests/fixtures/mysql was recorded (the scramble differs per connection).
const OPENING: &[u8] =
    b"d\x00\x00\x00\x0a5.5.5-10.11.19-MariaDB-0+deb12u1\x00\x0a\x00\x00\x00R\x22RW>n2L\x00\xfe\xf7-\x02\x00\xff\x81\x15\x00\x00\x00\x00\x00\x00\x1d\x00\x00\x00iL|OV@{n7fzT\x00mysql_native_password\x00";
const OPENING_DIRECTION: Direction = Direction::Ingress;
/// The commands' names, and the login.
const TYPES: [&str; 28] = [
    "LOGIN",
    "COM_QUIT",
    "COM_INIT_DB",
    "COM_QUERY",
    "COM_FIELD_LIST",
    "COM_CREATE_DB",
    "COM_DROP_DB",
    "COM_REFRESH",
    "COM_SHUTDOWN",
    "COM_STATISTICS",
    "COM_PROCESS_INFO",
    "COM_PROCESS_KILL",
    "COM_DEBUG",
    "COM_PING",
    "COM_CHANGE_USER",
    "COM_BINLOG_DUMP",
    "COM_TABLE_DUMP",
    "COM_CONNECT_OUT",
    "COM_REGISTER_SLAVE",
    "COM_STMT_PREPARE",
    "COM_STMT_EXECUTE",
    "COM_STMT_SEND_LONG_DATA",
    "COM_STMT_CLOSE",
    "COM_STMT_RESET",
    "COM_SET_OPTION",
    "COM_STMT_FETCH",
    "COM_BINLOG_DUMP_GTID",
    "COM_RESET_CONNECTION",
];
/// Requests without response (rows at once, status ok).
const NO_RESPONSE: [&str; 5] = [
    "COM_QUIT",
    "COM_STMT_CLOSE",
    "COM_STMT_SEND_LONG_DATA",
    "COM_BINLOG_DUMP",
    "COM_BINLOG_DUMP_GTID",
];
/// Bytes of the smallest request (a packet header and a command byte).
const MIN_REQUEST: usize = 5;

fn check(record: &L7Record) {
    assert_eq!(record.protocol, L7Protocol::MySql);
    assert!(
        TYPES.contains(&record.request_type.as_str())
            || record.request_type == "COM_STMT_BULK_EXECUTE",
        "{record:?}"
    );
    match record.response_code {
        Some(_) => assert!(matches!(
            record.response_status,
            ResponseStatus::ClientError | ResponseStatus::ServerError
        )),
        None => assert!(record.response_exception.is_empty()),
    }
    check_session_row(record, &NO_RESPONSE);
}

fuzz_target!(|data: &[u8]| {
    let setup = Setup {
        opening: Some((OPENING_DIRECTION, OPENING)),
        prefix: Some(OPENING),
        detected_after_opening: Some(L7Protocol::MySql),
        ..Setup::default()
    };
    let Some(outcome) = run(data, 2, &setup, check) else {
        return;
    };
    // every row needs a request of MIN_REQUEST captured bytes, but the opening's
    assert!(outcome.rows <= outcome.fed_bytes / MIN_REQUEST + 1);
});
