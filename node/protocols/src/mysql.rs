//! MySQL and MariaDB client/server protocol: [`MySqlCodec`] for
//! [`crate::framed::FramedSession`], and detection.
//!
//! # What becomes a row
//!
//! - **Every command** (`COM_QUERY`, `COM_STMT_PREPARE`, `COM_STMT_EXECUTE`, `COM_INIT_DB`,
//!   `COM_PING`, `COM_STMT_RESET` ...) with its response. A response is one packet (OK,
//!   ERR, EOF) or many: a result set is a column count, column definitions, an EOF unless
//!   `CLIENT_DEPRECATE_EOF`, rows, and an EOF or OK (header 0xFE); a prepare response is
//!   an OK with the statement id, then parameter and column definitions (each list followed
//!   by an EOF unless `CLIENT_DEPRECATE_EOF`). Every packet but the last is a
//!   [`crate::session::Decode::Continue`], so `response_length` and the response times
//!   cover the whole result. Multi-statement queries and stored procedures chain result
//!   sets with `SERVER_MORE_RESULTS_EXISTS`: one row for the command. An ERR ends any
//!   response; MariaDB's progress reports (ERR code 0xFFFF) do not.
//! - `COM_QUIT`, `COM_STMT_CLOSE` and `COM_STMT_SEND_LONG_DATA` get no response: they are
//!   rows at once, with status `ok` (DeepFlow counts `COM_QUIT` and `COM_STMT_CLOSE` as
//!   successful sessions).
//! - **The login** is a row (as in DeepFlow): the handshake response (sequence id 1) is
//!   the request, `request_type` `LOGIN`, `request_resource` `Login username: <user>`;
//!   the response is the OK or ERR that ends the authentication, however many auth-switch
//!   and auth-more-data packets come before it (a wrong password is a row with error 1045).
//!   `COM_CHANGE_USER` is treated the same way. The server greeting is no row: it only
//!   gives the protocol version and the server's capabilities. A client that asks for TLS
//!   (the 32-byte SSL request) makes the rest of the connection opaque: no rows, as for the
//!   compressed protocol (`CLIENT_COMPRESS`, zstd) after the login and binlog streams after
//!   `COM_BINLOG_DUMP`.
//!
//! # Fields (DeepFlow's `protocol_logs/sql/mysql.rs`)
//!
//! | field | value |
//! |---|---|
//! | `version` | the greeting's protocol version, `10`; empty when the greeting was not seen |
//! | `request_type` | the command's name: `COM_QUERY`, `COM_STMT_EXECUTE` ...; `LOGIN` |
//! | `request_resource` | the SQL of `COM_QUERY` and `COM_STMT_PREPARE`; the schema of `COM_INIT_DB`; for `COM_STMT_EXECUTE`, `_FETCH`, `_RESET`, `_CLOSE`, `_SEND_LONG_DATA` the SQL of the prepared statement; the table of `COM_FIELD_LIST`; `Login username: <user>` |
//! | `response_code` | the ERR packet's error code (1062, 1146, 1064 ...); `None` for other responses |
//! | `response_status` | `ok` without ERR; with ERR `client_error` for codes 2000–2999 (the client library's range) and `server_error` for all others, DeepFlow's rule |
//! | `response_exception` | the ERR packet's message (without the `#SQLSTATE` marker) |
//!
//! Where flowmesh differs from DeepFlow, and why:
//!
//! - DeepFlow leaves `request_type` empty for the login (it has no command byte);
//!   flowmesh says `LOGIN` so that logins can be selected.
//! - DeepFlow shows a `COM_STMT_EXECUTE`'s parameter values (when SQL obfuscation is off)
//!   or nothing; flowmesh remembers each prepared statement's SQL (the prepare's request,
//!   paired with the statement id of its OK) and shows it for the commands that name the
//!   statement, so executions can be grouped by statement. At most 128 statements of at
//!   most 1 KiB of SQL are remembered per connection; `COM_STMT_CLOSE` forgets one.
//!   MariaDB's statement id -1 (the one prepared last) is understood.
//! - DeepFlow logs only the commands it parses (query, prepare, execute, init db, ping,
//!   field list, fetch, quit, close); flowmesh makes a row of every command, e.g. the
//!   `COM_STMT_RESET` some connectors send before each execution.
//! - DeepFlow drops ERR packets whose code is outside 1000–2999; flowmesh keeps them
//!   (MySQL 8 has codes above 3000) as server errors.
//! - Rows affected go to `row_effect`, as in DeepFlow, summed over the OK packets of a
//!   response (multi-statement queries send several).
//! - DeepFlow's statement id (`request_id`) has no column either: it is
//!   [`MySqlRequest::statement_id`] and [`MySqlResponse::statement_id`].
//!
//! # Capture prefixes
//!
//! A packet is decoded from its 4-byte header and at most its first 32 payload bytes (an
//! OK's counters and status flags, an ERR's code and SQLSTATE; the message as far as it
//! was captured), so result sets whose rows were not captured are skipped by their packet
//! lengths. When the capture drops bytes in which a packet header lay (a long result set
//! written by a few large syscalls, each captured only up to 1 KiB), framing is lost: the
//! session reports the waiting request without a response and resynchronises. Response
//! bytes that arrive while no request waits are skipped to the end of their syscall, so
//! the rest of such a result set is neither parsed as packets nor counted as an error.
//!
//! # Capabilities
//!
//! The handshake fixes `CLIENT_DEPRECATE_EOF` and `CLIENT_QUERY_ATTRIBUTES` (a COM_QUERY
//! parameter count before the SQL). When the agent attached after the handshake, the
//! first result set tells `CLIENT_DEPRECATE_EOF` (an EOF packet, 5 bytes, follows the
//! column definitions or not), and a COM_QUERY payload starting `00 01` is taken to carry
//! query attributes, DeepFlow's rule. A prepare response seen before that ends at its last
//! definition, and an EOF packet right after it is skipped.
//!
//! # Sequence ids
//!
//! Commands have sequence id 0 and the packets of their response count on from the last
//! packet of the request; a response packet with another id is not part of the exchange
//! and loses framing (the authentication exchange and LOCAL INFILE, where both directions
//! interleave, are not checked). Client packets with an id above 1 (authentication data)
//! are skipped, and so is every client packet while a LOCAL INFILE transfer runs (its ids
//! wrap to 0 in long files). Requests and payloads of 16 MiB or more span
//! several packets, decoded as one.
//!
//! # Detection
//!
//! MySQL is server-speaks-first, and the greeting is recognised in either direction (the
//! direction it travels is the response direction): sequence id 0, protocol version 10, a
//! printable server version starting with a digit, the zero filler and
//! `CLIENT_PROTOCOL_41`. Mid-connection (no greeting seen) a request is recognised from a
//! `COM_QUERY` or `COM_STMT_PREPARE` packet: sequence id 0, and SQL text that starts with
//! a statement keyword (`SELECT`, `INSERT`, `SET`, `BEGIN` ... after comments and
//! whitespace) and holds no control characters; or from a handshake response (sequence id
//! 1, `CLIENT_PROTOCOL_41`, 23 zero bytes (19 for MariaDB clients, which put extended
//! capabilities in the last 4), a printable user name). The chunk must not be
//! longer than the packet its header announces, which rules out PostgreSQL messages whose
//! length bytes happen to read as a MySQL header. Responses alone (OK packets, rows) and
//! binary commands (`COM_STMT_EXECUTE`, `COM_PING`) are too weak to detect from: a
//! connection that only executes prepared statements is recognised at its next
//! `COM_QUERY` or `COM_STMT_PREPARE` (pools' `SELECT 1`, `SET`, `COMMIT`), and the
//! executions of statements prepared before the agent attached have no SQL.

mod codec;
pub(crate) mod sql_text;
mod wire;

pub use codec::{MySqlCodec, MySqlCommand, MySqlError, MySqlRequest, MySqlResponse};

use crate::framed::FramedSession;
use crate::infer::{Detection, Inference};
use crate::session::ProtocolSession;
use crate::{ConversationConfig, Direction, L7Protocol, Role};
use wire::{Check, Header};

/// Statement keywords a `COM_QUERY` may start with.
const KEYWORDS: &[&str] = &[
    "ALTER",
    "ANALYZE",
    "BEGIN",
    "BINLOG",
    "CACHE",
    "CALL",
    "CHANGE",
    "CHECK",
    "CHECKSUM",
    "COMMIT",
    "CREATE",
    "DEALLOCATE",
    "DELETE",
    "DESC",
    "DESCRIBE",
    "DO",
    "DROP",
    "EXECUTE",
    "EXPLAIN",
    "FLUSH",
    "GET",
    "GRANT",
    "HANDLER",
    "HELP",
    "INSERT",
    "INSTALL",
    "KILL",
    "LOAD",
    "LOCK",
    "OPTIMIZE",
    "PREPARE",
    "PURGE",
    "RELEASE",
    "RENAME",
    "REPAIR",
    "REPLACE",
    "RESET",
    "RESIGNAL",
    "REVOKE",
    "ROLLBACK",
    "SAVEPOINT",
    "SELECT",
    "SET",
    "SHOW",
    "SIGNAL",
    "START",
    "TABLE",
    "TRUNCATE",
    "UNINSTALL",
    "UNLOCK",
    "UPDATE",
    "USE",
    "VALUES",
    "WITH",
    "XA",
];

/// Recognises a greeting, a query or prepare command, or a handshake response at the start
/// of a chunk (see the module docs).
pub(crate) fn detect(bytes: &[u8], direction: Direction) -> Detection {
    let Some(header) = Header::parse(bytes) else {
        return Detection::NeedMore;
    };
    if bytes.len() as u64 > header.wire_len() || header.len < 2 {
        return Detection::NoMatch;
    }
    let complete = bytes.len() as u64 == header.wire_len();
    let payload = header.payload(bytes);
    let matched = |request_direction: Direction| {
        Detection::Match(Inference {
            protocol: L7Protocol::MySql,
            role: Role::from_request_direction(request_direction),
        })
    };
    let undecided = |complete: bool| {
        if complete {
            Detection::NoMatch
        } else {
            Detection::NeedMore
        }
    };
    match (header.seq, payload.first()) {
        (0 | 1, None) => Detection::NeedMore,
        (0, Some(10)) => match wire::greeting(payload, header.len) {
            Check::Yes(_) => matched(direction.opposite()),
            Check::Prefix => undecided(complete),
            Check::No => Detection::NoMatch,
        },
        (0, Some(&(wire::com::QUERY | wire::com::STMT_PREPARE))) => {
            let text = match &payload[1..] {
                // query attributes: no parameters, one parameter set
                [0, 1, sql @ ..] => sql,
                sql => sql,
            };
            match sql_text::starts_with_keyword(text, KEYWORDS, true, complete) {
                Some(true) => matched(direction),
                Some(false) => Detection::NoMatch,
                None => undecided(complete),
            }
        }
        (1, Some(_)) => match wire::login(payload, header.len) {
            Check::Yes(_) => matched(direction),
            Check::Prefix => undecided(complete),
            Check::No => Detection::NoMatch,
        },
        _ => Detection::NoMatch,
    }
}

/// The session of a socket [`detect`] matched.
pub(crate) fn new_session(role: Role, config: &ConversationConfig) -> Box<dyn ProtocolSession> {
    Box::new(FramedSession::new(MySqlCodec::default(), role, config))
}

#[cfg(test)]
mod tests;
