//! [`PgCodec`]: the PostgreSQL frontend/backend protocol 3 as a [`Codec`].

use std::collections::VecDeque;

use super::wire::{self, MAX_MESSAGE, MAX_STARTUP, u32_at};
use crate::mysql::sql_text::until_nul;
use crate::session::{Codec, Decode, WireLen};
use crate::text::lossy;
use crate::{L7Protocol, L7Record, ResponseStatus};

/// Prepared statements and portals remembered per connection (the oldest is forgotten
/// first).
const MAX_NAMES: usize = 128;
/// Bytes of SQL remembered per statement or portal.
const MAX_SQL: usize = 1024;
/// Bytes of a statement or portal name told apart (the server's own names are shorter).
const MAX_NAME: usize = 256;
/// Body bytes of an ErrorResponse needed for its code and message.
const ERROR_HEAD: usize = 512;
/// Body bytes of a CommandComplete needed for its tag.
const TAG_HEAD: usize = 64;

/// What an exchange is, named after the message DeepFlow names it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgRequestKind {
    /// StartupMessage: the exchange runs to the first ReadyForQuery (authentication,
    /// parameter status, backend key data) or to the error that refuses the connection.
    Startup,
    /// SSLRequest, answered by one byte, `S` or `N`.
    SslRequest,
    /// GSSENCRequest, answered by one byte, `G` or `N`.
    GssEncRequest,
    /// CancelRequest, sent on a new connection: no response.
    CancelRequest,
    /// Query (`Q`), the simple query protocol.
    SimpleQuery,
    /// Extended query messages up to a Sync, with a Parse among them.
    Parse,
    /// ... with an Execute but no Parse (a prepared statement's execution).
    Execute,
    /// ... with a Bind but neither Parse nor Execute.
    Bind,
    /// ... with a Describe only.
    Describe,
    /// ... with a Close only.
    Close,
    /// A Sync alone.
    Sync,
    /// FunctionCall (`F`).
    FunctionCall,
}

impl PgRequestKind {
    /// The `request_type` column: DeepFlow's names of the messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            PgRequestKind::Startup => "startup",
            PgRequestKind::SslRequest => "ssl request",
            PgRequestKind::GssEncRequest => "gssenc request",
            PgRequestKind::CancelRequest => "cancel request",
            PgRequestKind::SimpleQuery => "simple query",
            PgRequestKind::Parse => "parse",
            PgRequestKind::Execute => "execute",
            PgRequestKind::Bind => "bind",
            PgRequestKind::Describe => "describe",
            PgRequestKind::Close => "close",
            PgRequestKind::Sync => "sync",
            PgRequestKind::FunctionCall => "fastpath function call",
        }
    }
}

/// A decoded request: a whole exchange's frontend messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgRequest {
    /// What the exchange is.
    pub kind: PgRequestKind,
    /// The SQL (of the Query, of the Parse, or of the prepared statement or portal that a
    /// Bind, Execute, Describe or Close names); `user=<user> database=<db>` for a startup.
    pub resource: String,
    serial: u64,
}

/// An ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    /// `ERROR`, `FATAL` or `PANIC`.
    pub severity: String,
    /// The SQLSTATE code (`42P01`).
    pub code: String,
    /// The primary message.
    pub message: String,
}

/// A decoded final response (what the exchange's backend messages said, up to
/// ReadyForQuery).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgResponse {
    /// The first ErrorResponse of the exchange.
    pub error: Option<PgError>,
    /// Rows reported by the CommandComplete tags (`INSERT 0 1`, `UPDATE 3`, `SELECT 10`
    /// ...), summed; `None` without such a tag. Not a column of [`L7Record`] (DeepFlow's
    /// `row_effect`), so kept here only.
    pub affected_rows: Option<u64>,
}

/// Extended-query messages seen since the last Sync.
#[derive(Debug, Clone, Default)]
struct Extended {
    parse: bool,
    execute: bool,
    bind: bool,
    describe: bool,
    close: bool,
    sql: Option<String>,
}

impl Extended {
    fn kind(&self) -> PgRequestKind {
        if self.parse {
            PgRequestKind::Parse
        } else if self.execute {
            PgRequestKind::Execute
        } else if self.bind {
            PgRequestKind::Bind
        } else if self.describe {
            PgRequestKind::Describe
        } else if self.close {
            PgRequestKind::Close
        } else {
            PgRequestKind::Sync
        }
    }
}

/// Names (of prepared statements or portals) and their SQL, oldest first.
#[derive(Debug, Default)]
struct Names(VecDeque<(String, String)>);

impl Names {
    fn get(&self, name: &str) -> Option<&str> {
        let name = truncated(name, MAX_NAME);
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, sql)| sql.as_str())
    }

    fn insert(&mut self, name: String, sql: &str) {
        self.remove(&name);
        if self.0.len() >= MAX_NAMES {
            self.0.pop_front();
        }
        let name = truncated(&name, MAX_NAME).to_owned();
        self.0.push_back((name, truncated(sql, MAX_SQL).to_owned()));
    }

    fn remove(&mut self, name: &str) {
        let name = truncated(name, MAX_NAME);
        self.0.retain(|(n, _)| n != name);
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[derive(Debug)]
struct ResponseState {
    serial: u64,
    response: PgResponse,
}

/// The PostgreSQL protocol 3 (see the [module docs](super)).
///
/// State per connection: the extended-query messages since the last Sync, the SQL of named
/// (and the unnamed) prepared statements and portals, and what the response in progress
/// said so far.
#[derive(Debug, Default)]
pub struct PgCodec {
    next_serial: u64,
    /// TLS or GSS encryption was accepted: nothing more can be parsed.
    opaque: bool,
    extended: Option<Extended>,
    statements: Names,
    portals: Names,
    response: Option<ResponseState>,
}

/// A typed message's header: type, length (which counts itself, not the type).
fn typed_header(buf: &[u8]) -> Option<Result<(u8, u32), ()>> {
    let kind = *buf.first()?;
    let len = u32_at(buf, 1)?;
    Some(if (4..=MAX_MESSAGE).contains(&len) {
        Ok((kind, len))
    } else {
        Err(())
    })
}

impl PgCodec {
    fn request(&mut self, kind: PgRequestKind, resource: String) -> PgRequest {
        self.next_serial += 1;
        PgRequest {
            kind,
            resource,
            serial: self.next_serial,
        }
    }

    /// StartupMessage, SSLRequest, GSSENCRequest, CancelRequest: no type byte.
    fn untyped(&mut self, buf: &[u8]) -> Decode<PgRequest> {
        let (Some(len), Some(code)) = (u32_at(buf, 0), u32_at(buf, 4)) else {
            return Decode::NeedMore;
        };
        let kind = match (len, code) {
            (8, wire::SSL_REQUEST) => PgRequestKind::SslRequest,
            (8, wire::GSSENC_REQUEST) => PgRequestKind::GssEncRequest,
            (16, wire::CANCEL_REQUEST) => PgRequestKind::CancelRequest,
            (9..=MAX_STARTUP, code) if wire::is_protocol_3(code) => PgRequestKind::Startup,
            _ => return Decode::Invalid,
        };
        // a new connection: nothing from before applies
        self.extended = None;
        let resource = if kind == PgRequestKind::Startup {
            let end = buf.len().min(len as usize);
            wire::startup_resource(buf.get(8..end).unwrap_or_default())
        } else {
            String::new()
        };
        Decode::Message {
            len: WireLen::Exact(u64::from(len)),
            msg: self.request(kind, resource),
        }
    }

    /// The SQL of statement `name`, or of portal `name`.
    fn sql_of(&self, target: u8, name: &[u8]) -> Option<String> {
        let name = lossy(name);
        match target {
            b'S' => self.statements.get(&name),
            b'P' => self.portals.get(&name),
            _ => None,
        }
        .map(str::to_owned)
    }

    /// A message of the extended query protocol before its Sync.
    fn extended_part(&mut self, kind: u8, body: &[u8]) {
        let mut names = wire::strings(body);
        let ext = self.extended.get_or_insert_with(Extended::default);
        let sql = match kind {
            b'P' => {
                ext.parse = true;
                let name = lossy(names.next().unwrap_or_default());
                let sql = lossy(names.next().unwrap_or_default());
                self.statements.insert(name, &sql);
                Some(sql)
            }
            b'B' => {
                ext.bind = true;
                let portal = lossy(names.next().unwrap_or_default());
                let statement = lossy(names.next().unwrap_or_default());
                let sql = self.statements.get(&statement).map(str::to_owned);
                // binding replaces the portal, also when the statement is unknown
                match &sql {
                    Some(sql) => self.portals.insert(portal, sql),
                    None => self.portals.remove(&portal),
                }
                sql
            }
            b'E' => {
                ext.execute = true;
                let portal = lossy(until_nul(body));
                self.portals.get(&portal).map(str::to_owned)
            }
            b'D' | b'C' => {
                if kind == b'D' {
                    ext.describe = true;
                } else {
                    ext.close = true;
                }
                let (target, name) = body.split_first().unwrap_or((&0, &[]));
                let name = until_nul(name);
                let sql = self.sql_of(*target, name);
                if kind == b'C' {
                    match target {
                        b'S' => self.statements.remove(&lossy(name)),
                        _ => self.portals.remove(&lossy(name)),
                    }
                }
                sql
            }
            _ => None,
        };
        let ext = self.extended.get_or_insert_with(Extended::default);
        if ext.sql.is_none() {
            ext.sql = sql;
        }
    }
}

impl Codec for PgCodec {
    type Request = PgRequest;
    type Response = PgResponse;

    fn protocol(&self) -> L7Protocol {
        L7Protocol::PostgreSql
    }

    fn decode_request(&mut self, buf: &[u8]) -> Decode<PgRequest> {
        if self.opaque {
            return Decode::Skip {
                len: WireLen::ToChunkEnd,
            };
        }
        match buf.first() {
            None => return Decode::NeedMore,
            Some(0) => return self.untyped(buf),
            Some(_) => {}
        }
        let (kind, len) = match typed_header(buf) {
            None => return Decode::NeedMore,
            Some(Err(())) => return Decode::Invalid,
            Some(Ok(header)) => header,
        };
        let wire_len = WireLen::Exact(1 + u64::from(len));
        let body = buf
            .get(5..buf.len().min(1 + len as usize))
            .unwrap_or_default();
        match kind {
            b'Q' => {
                self.extended = None;
                let sql = lossy(until_nul(body));
                Decode::Message {
                    len: wire_len,
                    msg: self.request(PgRequestKind::SimpleQuery, sql),
                }
            }
            b'P' | b'B' | b'E' | b'D' | b'C' | b'H' => {
                self.extended_part(kind, body);
                Decode::Continue { len: wire_len }
            }
            b'S' => {
                let ext = self.extended.take().unwrap_or_default();
                let msg = self.request(ext.kind(), ext.sql.unwrap_or_default());
                Decode::Message { len: wire_len, msg }
            }
            b'F' => Decode::Message {
                len: wire_len,
                msg: self.request(PgRequestKind::FunctionCall, String::new()),
            },
            // Terminate; password, SASL and GSS responses (part of the startup exchange);
            // COPY data, done and fail (part of the COPY's exchange)
            b'X' | b'p' | b'd' | b'c' | b'f' => Decode::Skip { len: wire_len },
            _ => Decode::Invalid,
        }
    }

    fn decode_response(&mut self, buf: &[u8], pending: Option<&PgRequest>) -> Decode<PgResponse> {
        if self.opaque {
            return Decode::Skip {
                len: WireLen::ToChunkEnd,
            };
        }
        let Some(request) = pending else {
            // Nothing is waiting: notices, parameter status, or the rest of an exchange
            // whose request was not seen (or was reported when framing was lost).
            return Decode::Skip {
                len: WireLen::ToChunkEnd,
            };
        };
        let Some(&first) = buf.first() else {
            return Decode::NeedMore;
        };
        if matches!(
            request.kind,
            PgRequestKind::SslRequest | PgRequestKind::GssEncRequest
        ) && first != b'E'
        {
            // one byte: go ahead with encryption, or not
            let len = WireLen::Exact(1);
            return match first {
                b'S' | b'G' => {
                    self.opaque = true;
                    Decode::Message {
                        len,
                        msg: PgResponse::default(),
                    }
                }
                b'N' => Decode::Message {
                    len,
                    msg: PgResponse::default(),
                },
                _ => Decode::Invalid,
            };
        }
        let (kind, len) = match typed_header(buf) {
            None => return Decode::NeedMore,
            Some(Err(())) => return Decode::Invalid,
            Some(Ok(header)) => header,
        };
        if !wire::BACKEND_TYPES.contains(&kind) {
            return Decode::Invalid;
        }
        let wire_len = WireLen::Exact(1 + u64::from(len));
        let body_len = len as usize - 4;
        let head = match kind {
            b'E' => ERROR_HEAD,
            b'C' => TAG_HEAD,
            _ => 0,
        };
        if buf.len() < 5 + body_len.min(head) {
            return Decode::NeedMore;
        }
        let body = buf.get(5..buf.len().min(5 + body_len)).unwrap_or_default();
        let state = match &mut self.response {
            Some(state) if state.serial == request.serial => state,
            slot => slot.insert(ResponseState {
                serial: request.serial,
                response: PgResponse::default(),
            }),
        };
        match kind {
            b'Z' => {
                let response = self.response.take().map(|s| s.response).unwrap_or_default();
                Decode::Message {
                    len: wire_len,
                    msg: response,
                }
            }
            b'E' => {
                if state.response.error.is_none() {
                    let fields = wire::error_fields(body);
                    state.response.error = Some(PgError {
                        severity: fields.severity,
                        code: fields.code,
                        message: fields.message,
                    });
                }
                let severity = state.response.error.as_ref().map(|e| e.severity.as_str());
                if request.kind == PgRequestKind::Startup
                    || matches!(severity, Some("FATAL" | "PANIC"))
                {
                    // FATAL and PANIC end the connection: no ReadyForQuery follows
                    let response = self.response.take().map(|s| s.response).unwrap_or_default();
                    return Decode::Message {
                        len: wire_len,
                        msg: response,
                    };
                }
                Decode::Continue { len: wire_len }
            }
            b'C' => {
                if let Some(rows) = wire::tag_rows(body) {
                    let sum = state.response.affected_rows.unwrap_or(0);
                    state.response.affected_rows = Some(sum.saturating_add(rows));
                }
                Decode::Continue { len: wire_len }
            }
            _ => Decode::Continue { len: wire_len },
        }
    }

    fn expects_response(&self, request: &PgRequest) -> bool {
        request.kind != PgRequestKind::CancelRequest
    }

    fn fill(&self, request: &PgRequest, response: Option<&PgResponse>, record: &mut L7Record) {
        record.request_type = request.kind.as_str().to_owned();
        record.request_resource = request.resource.clone();
        if !self.expects_response(request) {
            record.response_status = ResponseStatus::Ok;
        }
        let Some(response) = response else {
            return;
        };
        match &response.error {
            Some(error) => {
                record.response_status = wire::sqlstate_status(&error.code);
                record.response_exception = if error.code.is_empty() {
                    error.message.clone()
                } else {
                    format!("{}: {}", error.code, error.message)
                };
            }
            None => record.response_status = ResponseStatus::Ok,
        }
        record.row_effect = response.affected_rows;
    }
}
