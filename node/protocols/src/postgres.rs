//! PostgreSQL frontend/backend protocol 3: [`PgCodec`] for
//! [`crate::framed::FramedSession`], and detection.
//!
//! # What becomes a row
//!
//! An exchange ends at the server's ReadyForQuery (`Z`), and is one row:
//!
//! - **Simple query**: a Query (`Q`), then RowDescription, DataRows, CommandComplete (one
//!   per statement of a multi-statement query), errors, notices ... up to ReadyForQuery.
//! - **Extended query**: Parse, Bind, Describe, Execute, Close and Flush are
//!   [`crate::session::Decode::Continue`]s of the request, which ends at its Sync; the
//!   server's ParseComplete, BindComplete, ... up to ReadyForQuery are the response. After
//!   an error the server skips to the Sync, so the exchange still ends at ReadyForQuery.
//!   `pgbench -M extended` makes one row per statement (Parse/Bind/Describe/Execute/Sync),
//!   `-M prepared` one row per statement prepared (Parse/Sync) and one per execution
//!   (Bind/Describe/Execute/Sync).
//! - **The startup** is a row (DeepFlow has none: it ignores the untyped startup messages):
//!   the StartupMessage is the request, `request_type` `startup`, `request_resource`
//!   `user=<user> database=<database>`; its response is everything up to the first
//!   ReadyForQuery: authentication requests, ParameterStatus, BackendKeyData. The client's
//!   password, SASL and GSS messages are skipped (neither a row nor counted), so the row
//!   times the whole login, and a refused login is a row with its error (`28P01` ...), which
//!   is what a connection-level view wants. An **SSLRequest** (GSSENCRequest) is a row of its
//!   own, answered by one byte: `N` goes on in clear, `S` (`G`) makes the rest of the
//!   connection opaque. A CancelRequest is a row without response.
//! - Terminate (`X`) and the client's COPY data are skipped, as in DeepFlow. Notices,
//!   ParameterStatus and notifications that arrive while no request waits are skipped.
//!
//! # Fields (DeepFlow's `protocol_logs/sql/postgresql.rs`)
//!
//! | field | value |
//! |---|---|
//! | `request_type` | DeepFlow's message names: `simple query`; `parse` for an extended-query exchange with a Parse; `execute`, `bind`, `describe`, `close` or `sync` for one without (by that precedence); `fastpath function call`; `startup`, `ssl request`, `gssenc request`, `cancel request` |
//! | `request_resource` | the SQL: of the Query, of the Parse, or of the prepared statement or portal a Bind, Execute, Describe or Close names |
//! | `response_code` | `None`: DeepFlow puts the SQLSTATE in its `response_result`, and a SQLSTATE (`42P01`) is no number |
//! | `response_status` | `ok` without ErrorResponse; else DeepFlow's classes of SQLSTATE: `client_error` for classes 03, 0A, 0B, 0F, 0L, 0P, 20, 22, 23, 26, 2F, 34, 3D, 3F, 42 and codes 40001, 40003, 40P01, `server_error` for the rest |
//! | `response_exception` | `<SQLSTATE>: <message>` of the exchange's first ErrorResponse, e.g. `42P01: relation "t" does not exist` |
//!
//! Where flowmesh differs from DeepFlow, and why:
//!
//! - DeepFlow's `response_exception` is the SQLSTATE's condition name (`undefined_table`)
//!   and its `response_result` the SQLSTATE. [`crate::L7Record`] has no result column, so
//!   flowmesh puts both the SQLSTATE and the server's message (which names the table,
//!   column or constraint) in `response_exception`.
//! - DeepFlow logs a Bind/Execute/Sync without Parse (a prepared statement's execution)
//!   not at all, having no SQL for it; flowmesh remembers the SQL of prepared statements
//!   (named and unnamed) and portals, at most 128 of each with 1 KiB of SQL per
//!   connection, and shows it.
//! - DeepFlow classifies SQLSTATE codes it does not list as neither error class; flowmesh
//!   classifies by class (an ErrorResponse is always an error), server errors for unknown
//!   classes.
//! - Rows affected go to `row_effect`, as in DeepFlow, from the CommandComplete tags
//!   (summed when a simple query runs several statements).
//!
//! # Capture prefixes
//!
//! A message is decoded from its 5-byte header; only ErrorResponse (first 512 bytes) and
//! CommandComplete (first 64) need more of their body. Long result sets are skipped by
//! message lengths; when the capture drops bytes in which a message header lay, framing is
//! lost, the waiting request is reported without a response, and the rest of the response
//! (bytes arriving while no request waits) is skipped to the end of each syscall.
//!
//! # Detection
//!
//! Requests only, in either direction (the direction they travel is the request direction):
//!
//! - the start of a connection: a StartupMessage (length up to 10 000, protocol 3.x,
//!   printable parameter names and values, ending with an empty name), an SSLRequest or
//!   GSSENCRequest (exactly the 8 bytes) or a CancelRequest (exactly 16 bytes);
//! - mid-connection: a Query whose SQL starts with a statement keyword (`SELECT`, `BEGIN`,
//!   `UPDATE` ... after comments and whitespace), has no control characters and, when the
//!   message is complete, ends the chunk with its NUL; or a run of extended-query messages
//!   (`P`, `B`, `D`, `E`, `C`, `H`, `S`) starting with a Parse whose SQL passes the same
//!   test, or with a Bind and complete up to a Sync that ends the chunk.
//!
//! Lengths above 1 MiB are not accepted at detection, which rules out text protocols
//! (`POST`, `PING` as a length) and MySQL packets, whose length bytes are little-endian.

mod codec;
mod wire;

pub use codec::{PgCodec, PgError, PgRequest, PgRequestKind, PgResponse};

use crate::framed::FramedSession;
use crate::infer::{Detection, Inference};
use crate::mysql::sql_text::{self, is_plain_text};
use crate::session::ProtocolSession;
use crate::{ConversationConfig, Direction, L7Protocol, Role};
use wire::u32_at;

/// Statement keywords a query may start with.
const KEYWORDS: &[&str] = &[
    "ABORT",
    "ALTER",
    "ANALYZE",
    "BEGIN",
    "CALL",
    "CHECKPOINT",
    "CLOSE",
    "CLUSTER",
    "COMMENT",
    "COMMIT",
    "COPY",
    "CREATE",
    "DEALLOCATE",
    "DECLARE",
    "DELETE",
    "DISCARD",
    "DO",
    "DROP",
    "END",
    "EXECUTE",
    "EXPLAIN",
    "FETCH",
    "GRANT",
    "IMPORT",
    "INSERT",
    "LISTEN",
    "LOAD",
    "LOCK",
    "MERGE",
    "MOVE",
    "NOTIFY",
    "PREPARE",
    "REASSIGN",
    "REFRESH",
    "REINDEX",
    "RELEASE",
    "RESET",
    "REVOKE",
    "ROLLBACK",
    "SAVEPOINT",
    "SECURITY",
    "SELECT",
    "SET",
    "SHOW",
    "START",
    "TABLE",
    "TRUNCATE",
    "UNLISTEN",
    "UPDATE",
    "VACUUM",
    "VALUES",
    "WITH",
];

/// Longest message accepted at detection.
const MAX_DETECT_LEN: u32 = 1 << 20;

/// Recognises a startup packet or a query (see the module docs).
pub(crate) fn detect(bytes: &[u8], direction: Direction) -> Detection {
    let found = match bytes.first() {
        None => Found::No,
        Some(0) => startup(bytes),
        Some(b'Q') => query(bytes),
        Some(b'P' | b'B') => extended(bytes),
        Some(_) => Found::No,
    };
    match found {
        Found::Yes => Detection::Match(Inference {
            protocol: L7Protocol::PostgreSql,
            role: Role::from_request_direction(direction),
        }),
        Found::Prefix => Detection::NeedMore,
        Found::No => Detection::NoMatch,
    }
}

/// The session of a socket [`detect`] matched.
pub(crate) fn new_session(role: Role, config: &ConversationConfig) -> Box<dyn ProtocolSession> {
    Box::new(FramedSession::new(PgCodec::default(), role, config))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Yes,
    Prefix,
    No,
}

fn decided(yes: bool) -> Found {
    if yes { Found::Yes } else { Found::No }
}

/// StartupMessage, SSLRequest, GSSENCRequest or CancelRequest.
fn startup(bytes: &[u8]) -> Found {
    let (Some(len), Some(code)) = (u32_at(bytes, 0), u32_at(bytes, 4)) else {
        // the length's high bytes are zero for every untyped message
        return decided_prefix(bytes.len() < 2 || bytes[1] == 0);
    };
    let exact = bytes.len() as u64 == u64::from(len);
    match (len, code) {
        (8, wire::SSL_REQUEST | wire::GSSENC_REQUEST) => decided(exact),
        (16, wire::CANCEL_REQUEST) => decided(exact),
        (9..=wire::MAX_STARTUP, code) if wire::is_protocol_3(code) => {
            if bytes.len() > len as usize {
                return Found::No;
            }
            startup_parameters(&bytes[8..], exact)
        }
        _ => Found::No,
    }
}

/// The parameters of a StartupMessage: NUL-terminated printable names and values, the
/// first a name of letters and underscores, ending with an empty name; `user` among them.
fn startup_parameters(params: &[u8], complete: bool) -> Found {
    let mut user = false;
    let mut rest = params;
    let mut index = 0;
    loop {
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            let plausible = is_plain_text(rest) && !complete;
            return decided_prefix(plausible);
        };
        let item = &rest[..end];
        rest = &rest[end + 1..];
        if !is_plain_text(item) {
            return Found::No;
        }
        let is_name = index % 2 == 0;
        if is_name {
            if item.is_empty() {
                // the terminator: it must end the packet
                return decided(user && complete && rest.is_empty());
            }
            if !item
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
            {
                return Found::No;
            }
            user |= item == b"user";
        }
        index += 1;
    }
}

fn decided_prefix(plausible: bool) -> Found {
    if plausible { Found::Prefix } else { Found::No }
}

/// A typed message's length, if plausible for detection.
fn detect_len(bytes: &[u8]) -> Option<Option<u32>> {
    match u32_at(bytes, 1) {
        None => {
            // high length bytes arrive first and are zero for any length we accept
            let zero = bytes.get(1).is_none_or(|&b| b == 0);
            zero.then_some(None)
        }
        Some(len) if (4..=MAX_DETECT_LEN).contains(&len) => Some(Some(len)),
        Some(_) => None,
    }
}

/// A Query: SQL starting with a keyword, ending with NUL where the message ends.
fn query(bytes: &[u8]) -> Found {
    let len = match detect_len(bytes) {
        None => return Found::No,
        Some(None) => return Found::Prefix,
        Some(Some(len)) => len as usize,
    };
    if bytes.len() > 1 + len {
        return Found::No;
    }
    let complete = bytes.len() == 1 + len;
    let text = &bytes[5..];
    let text = if complete {
        match text.split_last() {
            Some((0, sql)) => sql,
            _ => return Found::No,
        }
    } else {
        text
    };
    match sql_text::starts_with_keyword(text, KEYWORDS, false, complete) {
        Some(yes) => decided(yes),
        None => decided_prefix(!complete),
    }
}

/// Extended-query messages: a Parse with SQL, or a Bind run complete up to a Sync.
fn extended(bytes: &[u8]) -> Found {
    let mut at = 0;
    let mut parse_seen = false;
    let mut saw_execute = false;
    let mut last = 0u8;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let kind = rest[0];
        if !b"PBDECHS".contains(&kind) {
            return Found::No;
        }
        let len = match detect_len(rest) {
            None => return Found::No,
            Some(None) => return truncated(parse_seen),
            Some(Some(len)) => len as usize,
        };
        let body = &rest[5.min(rest.len())..rest.len().min(1 + len)];
        let complete = rest.len() > len;
        match kind {
            b'P' => {
                let name = sql_text::until_nul(body);
                if name.len() > 64 || !is_plain_text(name) {
                    return Found::No;
                }
                let after_name = body.get(name.len() + 1..).unwrap_or_default();
                let sql = sql_text::until_nul(after_name);
                let sql_complete = sql.len() < after_name.len();
                match sql_text::starts_with_keyword(sql, KEYWORDS, false, sql_complete) {
                    Some(true) => parse_seen = true,
                    None if !complete => return truncated(parse_seen),
                    Some(false) | None => return Found::No,
                }
            }
            b'B' => {
                let mut strings = wire::strings(body);
                for _ in 0..2 {
                    let name = strings.next().unwrap_or_default();
                    if name.len() > 64 || !is_plain_text(name) {
                        return Found::No;
                    }
                }
            }
            b'E' => saw_execute = true,
            _ => {}
        }
        if !complete {
            return truncated(parse_seen);
        }
        last = kind;
        at += 1 + len;
    }
    decided(parse_seen || (bytes[0] == b'B' && saw_execute && last == b'S'))
}

/// The chunk ends inside a message: a Parse with SQL before decides, else more is needed.
fn truncated(parse_seen: bool) -> Found {
    if parse_seen {
        Found::Yes
    } else {
        Found::Prefix
    }
}

#[cfg(test)]
mod tests;
