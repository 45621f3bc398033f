//! [`MySqlCodec`]: the MySQL client protocol as a [`Codec`].

use std::collections::VecDeque;

use super::sql_text::until_nul;
use super::wire::{self, Check, HEADER_LEN, Header, MAX_PAYLOAD, com};
use crate::session::{Codec, Decode, WireLen};
use crate::text::lossy;
use crate::{L7Protocol, L7Record, ResponseStatus};

/// Prepared statements remembered per connection (the oldest is forgotten first).
const MAX_STATEMENTS: usize = 128;
/// Bytes of SQL remembered per prepared statement.
const MAX_STATEMENT_SQL: usize = 1024;
/// Payload bytes looked at to decode an OK packet's counters and status flags.
const OK_HEAD: usize = 32;
/// Payload bytes of an ERR packet needed for its code and SQLSTATE.
const ERR_HEAD: usize = 9;

/// What a client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MySqlCommand {
    /// The handshake response that logs in (connection phase).
    Login,
    /// A command-phase request: its `COM_*` byte.
    Command(u8),
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MySqlRequest {
    /// The command.
    pub command: MySqlCommand,
    /// The SQL of `COM_QUERY` and `COM_STMT_PREPARE`, and of the prepared statement that a
    /// `COM_STMT_*` command acts on (when its prepare was seen); the schema of
    /// `COM_INIT_DB`; the table of `COM_FIELD_LIST`; `Login username: <user>` for the
    /// login and `COM_CHANGE_USER`.
    pub resource: String,
    /// The statement id of `COM_STMT_*` commands.
    pub statement_id: Option<u32>,
    /// Identifies the request within its connection (to tell responses' state apart).
    serial: u64,
    /// Sequence id of the request's last packet: its response continues from it.
    last_seq: u8,
}

/// A server error (ERR packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MySqlError {
    /// The error code (1062 duplicate entry, 1146 no such table, 1064 syntax error ...).
    pub code: u16,
    /// The SQLSTATE (`23000`), empty when the packet has none.
    pub sql_state: String,
    /// The error message.
    pub message: String,
}

/// A decoded final response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MySqlResponse {
    /// The ERR packet that ended the exchange.
    pub error: Option<MySqlError>,
    /// Rows affected, summed over the OK packets of the response (several for
    /// multi-statement queries); `None` when the response had no OK packet (result sets).
    /// Not a column of [`L7Record`] (DeepFlow's `row_effect`), so kept here only.
    pub affected_rows: Option<u64>,
    /// The statement id a `COM_STMT_PREPARE` got.
    pub statement_id: Option<u32>,
}

/// Where in a response the next packet falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// First packet of a command that answers with OK, ERR or a result set.
    ResultStart,
    /// Column definitions still to come.
    ColumnDefs { left: u64 },
    /// After the column definitions: an EOF packet unless `CLIENT_DEPRECATE_EOF`.
    ColumnsEnd,
    /// Rows until an EOF/OK (0xFE) or ERR packet.
    Rows,
    /// After a LOCAL INFILE request: the client sends the file, then OK or ERR.
    Infile,
    /// Authentication exchange (login, COM_CHANGE_USER) until OK or ERR.
    Auth,
    /// First packet of a COM_STMT_PREPARE response.
    PrepareStart,
    /// Parameter definitions of a prepared statement, then column definitions.
    PrepareParams { left: u16, columns: u16 },
    /// After the parameter definitions: EOF unless `CLIENT_DEPRECATE_EOF`.
    PrepareParamsEnd { columns: u16 },
    /// Column definitions of a prepared statement.
    PrepareColumns { left: u16 },
    /// The EOF packet that ends a prepare response without `CLIENT_DEPRECATE_EOF`.
    PrepareEof,
    /// COM_FIELD_LIST: column definitions until EOF.
    FieldList,
    /// A single packet answers: OK, ERR, EOF or a string.
    Single,
}

impl Phase {
    fn first(command: MySqlCommand) -> Phase {
        match command {
            MySqlCommand::Login | MySqlCommand::Command(com::CHANGE_USER) => Phase::Auth,
            MySqlCommand::Command(
                com::QUERY | com::STMT_EXECUTE | com::PROCESS_INFO | com::STMT_BULK_EXECUTE,
            ) => Phase::ResultStart,
            MySqlCommand::Command(com::STMT_PREPARE) => Phase::PrepareStart,
            MySqlCommand::Command(com::FIELD_LIST) => Phase::FieldList,
            MySqlCommand::Command(com::STMT_FETCH) => Phase::Rows,
            MySqlCommand::Command(_) => Phase::Single,
        }
    }

    /// Phases in which packets of both directions interleave, so sequence ids jump.
    fn interleaved(self) -> bool {
        matches!(self, Phase::Auth | Phase::Infile)
    }
}

/// The response being decoded.
#[derive(Debug, Clone)]
struct ResponseState {
    /// The request it answers.
    serial: u64,
    phase: Phase,
    next_seq: u8,
    /// The previous packet had the maximal length: this one continues its payload.
    continued: bool,
    response: MySqlResponse,
}

/// A request longer than one packet: its packets after the first.
#[derive(Debug, Clone)]
struct LongRequest {
    request: MySqlRequest,
    next_seq: u8,
}

/// The MySQL/MariaDB client protocol (see the [module docs](super)).
///
/// State per connection: capabilities learnt from the handshake (or from the shape of
/// result sets when it was not seen), the prepared statements' SQL, and the position in
/// the response being decoded.
#[derive(Debug, Default)]
pub struct MySqlCodec {
    next_serial: u64,
    /// TLS, the compressed protocol or a binlog stream: nothing more can be parsed.
    opaque: bool,
    /// The login asked for compression: packets after its OK are compressed.
    compress_after_login: bool,
    server_capabilities: Option<u32>,
    deprecate_eof: Option<bool>,
    query_attributes: Option<bool>,
    protocol_version: Option<u8>,
    long_request: Option<LongRequest>,
    response: Option<ResponseState>,
    /// A prepare response ended at its last definition while `CLIENT_DEPRECATE_EOF` was
    /// unknown: an EOF packet with this sequence id may still follow.
    eof_may_follow: Option<u8>,
    /// The server asked for a LOCAL INFILE: the client's packets are the file, whatever
    /// their sequence ids, until the response ends.
    infile: bool,
    /// Prepared statements: id and SQL, oldest first.
    statements: VecDeque<(u32, String)>,
    last_prepared: Option<u32>,
}

impl MySqlCodec {
    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    fn statement_sql(&self, id: u32) -> Option<&str> {
        let id = if id == u32::MAX {
            // MariaDB: -1 is the statement prepared last
            self.last_prepared?
        } else {
            id
        };
        self.statements
            .iter()
            .find(|(s, _)| *s == id)
            .map(|(_, sql)| sql.as_str())
    }

    fn remember_statement(&mut self, id: u32, sql: &str) {
        self.statements.retain(|(s, _)| *s != id);
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.pop_front();
        }
        let mut end = sql.len().min(MAX_STATEMENT_SQL);
        while !sql.is_char_boundary(end) {
            end -= 1;
        }
        self.statements.push_back((id, sql[..end].to_owned()));
        self.last_prepared = Some(id);
    }

    fn command(&mut self, header: Header, payload: &[u8]) -> Decode<MySqlRequest> {
        let Some(&command) = payload.first() else {
            return if header.len == 0 {
                Decode::Invalid
            } else {
                Decode::NeedMore
            };
        };
        if wire::command_name(command).is_none() {
            return Decode::Invalid;
        }
        let args = &payload[1..];
        let mut statement_id = None;
        let resource = match command {
            com::QUERY => lossy(self.query_text(args)),
            com::STMT_PREPARE | com::INIT_DB => lossy(args),
            com::FIELD_LIST => lossy(until_nul(args)),
            com::CHANGE_USER => format!("Login username: {}", lossy(until_nul(args))),
            com::STMT_EXECUTE
            | com::STMT_SEND_LONG_DATA
            | com::STMT_CLOSE
            | com::STMT_RESET
            | com::STMT_FETCH
            | com::STMT_BULK_EXECUTE => {
                statement_id = wire::statement_id(payload);
                let sql = statement_id
                    .and_then(|id| self.statement_sql(id))
                    .map(str::to_owned)
                    .unwrap_or_default();
                if command == com::STMT_CLOSE
                    && let Some(id) = statement_id
                {
                    self.statements.retain(|(s, _)| *s != id);
                }
                sql
            }
            _ => String::new(),
        };
        if matches!(command, com::BINLOG_DUMP | com::BINLOG_DUMP_GTID) {
            // replication: an endless stream of events follows
            self.opaque = true;
        }
        let request = MySqlRequest {
            command: MySqlCommand::Command(command),
            resource,
            statement_id,
            serial: self.serial(),
            last_seq: header.seq,
        };
        self.whole_request(header, request)
    }

    /// The request in `header`'s packet, or its start when more packets follow.
    fn whole_request(&mut self, header: Header, request: MySqlRequest) -> Decode<MySqlRequest> {
        let len = WireLen::Exact(header.wire_len());
        if header.len == MAX_PAYLOAD {
            self.long_request = Some(LongRequest {
                request,
                next_seq: header.seq.wrapping_add(1),
            });
            return Decode::Continue { len };
        }
        Decode::Message { len, msg: request }
    }

    /// The SQL of a COM_QUERY payload: after the query attributes when there are some.
    fn query_text<'a>(&self, args: &'a [u8]) -> &'a [u8] {
        match self.query_attributes {
            Some(true) => {
                // parameter count, parameter set count (1): no parameters is the usual case
                match args {
                    [0, 1, sql @ ..] => sql,
                    _ => &args[..0],
                }
            }
            Some(false) => args,
            // DeepFlow's rule: MySQL 8 clients send `00 01` before the SQL
            None => match args {
                [0, 1, sql @ ..] => sql,
                _ => args,
            },
        }
    }

    fn login(&mut self, header: Header, login: wire::Login) -> Decode<MySqlRequest> {
        let len = WireLen::Exact(header.wire_len());
        let server = self.server_capabilities.unwrap_or(u32::MAX);
        let both = login.capabilities & server;
        if login.ssl_request {
            self.opaque = true;
            return Decode::Skip { len };
        }
        self.deprecate_eof = Some(both & wire::CLIENT_DEPRECATE_EOF != 0);
        self.query_attributes = Some(both & wire::CLIENT_QUERY_ATTRIBUTES != 0);
        self.compress_after_login = both & (wire::CLIENT_COMPRESS | wire::CLIENT_ZSTD) != 0;
        let request = MySqlRequest {
            command: MySqlCommand::Login,
            resource: format!("Login username: {}", login.user),
            statement_id: None,
            serial: self.serial(),
            last_seq: header.seq,
        };
        Decode::Message { len, msg: request }
    }
}

/// Bytes needed before a packet can be decoded: its header and `head` bytes of payload (or
/// the whole payload if shorter).
fn need(buf: &[u8], header: Header, head: usize) -> bool {
    buf.len() < HEADER_LEN + header.len.min(head)
}

impl Codec for MySqlCodec {
    type Request = MySqlRequest;
    type Response = MySqlResponse;

    fn protocol(&self) -> L7Protocol {
        L7Protocol::MySql
    }

    fn decode_request(&mut self, buf: &[u8]) -> Decode<MySqlRequest> {
        if self.opaque {
            return Decode::Skip {
                len: WireLen::ToChunkEnd,
            };
        }
        let Some(header) = Header::parse(buf) else {
            return Decode::NeedMore;
        };
        let len = WireLen::Exact(header.wire_len());
        if self.infile {
            return Decode::Skip { len };
        }
        if let Some(long) = &mut self.long_request {
            if header.seq != long.next_seq {
                self.long_request = None;
                return Decode::Invalid;
            }
            if header.len == MAX_PAYLOAD {
                long.next_seq = long.next_seq.wrapping_add(1);
                return Decode::Continue { len };
            }
            let Some(long) = self.long_request.take() else {
                return Decode::Invalid;
            };
            let mut request = long.request;
            request.last_seq = header.seq;
            return Decode::Message { len, msg: request };
        }
        let payload = header.payload(buf);
        match header.seq {
            0 => {
                if need(buf, header, 5) {
                    return Decode::NeedMore;
                }
                self.command(header, payload)
            }
            1 => match wire::login(payload, header.len) {
                Check::Yes(login) => self.login(header, login),
                // Connection-phase data we cannot use (an old handshake response).
                Check::No => Decode::Skip { len },
                Check::Prefix if need(buf, header, 36) => Decode::NeedMore,
                Check::Prefix => Decode::Skip { len },
            },
            // authentication data, LOCAL INFILE contents: part of an exchange in progress
            _ => Decode::Skip { len },
        }
    }

    fn decode_response(
        &mut self,
        buf: &[u8],
        pending: Option<&MySqlRequest>,
    ) -> Decode<MySqlResponse> {
        if self.opaque {
            return Decode::Skip {
                len: WireLen::ToChunkEnd,
            };
        }
        let Some(header) = Header::parse(buf) else {
            return Decode::NeedMore;
        };
        let len = WireLen::Exact(header.wire_len());
        if let Some(seq) = self.eof_may_follow {
            if need(buf, header, 1) {
                return Decode::NeedMore;
            }
            self.eof_may_follow = None;
            if header.seq == seq && header.len == 5 && buf.get(HEADER_LEN) == Some(&0xfe) {
                self.deprecate_eof = Some(false);
                return Decode::Skip { len };
            }
        }
        let Some(request) = pending else {
            return self.unsolicited(buf, header);
        };
        let state = match &mut self.response {
            Some(state) if state.serial == request.serial => state,
            slot => slot.insert(ResponseState {
                serial: request.serial,
                phase: Phase::first(request.command),
                next_seq: request.last_seq.wrapping_add(1),
                continued: false,
                response: MySqlResponse::default(),
            }),
        };
        if !state.phase.interleaved() && header.seq != state.next_seq {
            self.infile = false;
            return Decode::Invalid;
        }
        if state.continued || header.len == MAX_PAYLOAD {
            // a payload of 16 MiB or more: its packets after the first start mid-payload
            state.continued = header.len == MAX_PAYLOAD;
            state.next_seq = header.seq.wrapping_add(1);
            return Decode::Continue { len };
        }
        let Some(&first) = buf.get(HEADER_LEN) else {
            return if header.len == 0 {
                Decode::Invalid
            } else {
                Decode::NeedMore
            };
        };
        let head = match first {
            0x00 | 0xfe => OK_HEAD,
            0xff => ERR_HEAD,
            _ => 9,
        };
        if need(buf, header, head) {
            return Decode::NeedMore;
        }
        state.next_seq = header.seq.wrapping_add(1);
        let step = step(state, header, header.payload(buf), &mut self.deprecate_eof);
        self.infile = matches!(self.response.as_ref().map(|s| s.phase), Some(Phase::Infile))
            && matches!(step, Step::Continue);
        match step {
            Step::Continue => Decode::Continue { len },
            Step::Invalid => {
                self.response = None;
                Decode::Invalid
            }
            Step::Prepared { id, last } => {
                self.remember_statement(id, &request.resource);
                if last {
                    self.finish(len)
                } else {
                    Decode::Continue { len }
                }
            }
            Step::Done { eof_may_follow } => {
                if eof_may_follow {
                    self.eof_may_follow = Some(header.seq.wrapping_add(1));
                }
                if request.command == MySqlCommand::Login && self.compress_after_login {
                    self.opaque = true;
                }
                self.finish(len)
            }
        }
    }

    fn expects_response(&self, request: &MySqlRequest) -> bool {
        !matches!(
            request.command,
            MySqlCommand::Command(
                com::QUIT
                    | com::STMT_CLOSE
                    | com::STMT_SEND_LONG_DATA
                    | com::BINLOG_DUMP
                    | com::BINLOG_DUMP_GTID
            )
        )
    }

    fn fill(
        &self,
        request: &MySqlRequest,
        response: Option<&MySqlResponse>,
        record: &mut L7Record,
    ) {
        record.version = self
            .protocol_version
            .map(|v| v.to_string())
            .unwrap_or_default();
        record.request_type = match request.command {
            MySqlCommand::Login => "LOGIN".to_owned(),
            MySqlCommand::Command(c) => wire::command_name(c).unwrap_or_default().to_owned(),
        };
        record.request_resource = match (&request.resource[..], request.statement_id) {
            // a statement prepared after this request was decoded (MariaDB's pipelined
            // prepare and execute)
            ("", Some(id)) => self.statement_sql(id).unwrap_or_default().to_owned(),
            _ => request.resource.clone(),
        };
        if !self.expects_response(request) {
            // no response by design: DeepFlow counts these as successful
            record.response_status = ResponseStatus::Ok;
        }
        let Some(response) = response else {
            return;
        };
        match &response.error {
            Some(error) => {
                record.response_code = Some(error.code);
                record.response_status = error_status(error.code);
                record.response_exception = error.message.clone();
            }
            None => record.response_status = ResponseStatus::Ok,
        }
        record.row_effect = response.affected_rows;
    }
}

impl MySqlCodec {
    /// The response's last packet: the exchange is complete.
    fn finish(&mut self, len: WireLen) -> Decode<MySqlResponse> {
        let response = self.response.take().map(|s| s.response).unwrap_or_default();
        Decode::Message { len, msg: response }
    }

    /// A response packet while no request waits: the greeting, or bytes of an exchange
    /// whose request was not seen (or was reported already when framing was lost).
    fn unsolicited(&mut self, buf: &[u8], header: Header) -> Decode<MySqlResponse> {
        self.infile = false;
        if header.seq == 0 {
            match wire::greeting(header.payload(buf), header.len) {
                Check::Yes(greeting) => {
                    self.protocol_version = Some(10);
                    self.server_capabilities = Some(greeting.capabilities);
                    return Decode::Skip {
                        len: WireLen::Exact(header.wire_len()),
                    };
                }
                Check::Prefix if (buf.len() as u64) < header.wire_len() => {
                    return Decode::NeedMore;
                }
                Check::Prefix | Check::No => {}
            }
        }
        Decode::Skip {
            len: WireLen::ToChunkEnd,
        }
    }
}

/// DeepFlow's classification: codes 2000–2999 are client library errors, all others
/// the server's.
fn error_status(code: u16) -> ResponseStatus {
    if (2000..=2999).contains(&code) {
        ResponseStatus::ClientError
    } else {
        ResponseStatus::ServerError
    }
}

/// What a response packet does to the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Part of the response; more follows.
    Continue,
    /// A prepare OK with this statement id; `last` when no definitions follow.
    Prepared {
        id: u32,
        last: bool,
    },
    /// The last packet of the response.
    Done {
        eof_may_follow: bool,
    },
    Invalid,
}

const DONE: Step = Step::Done {
    eof_may_follow: false,
};

/// Advances `state` over one packet (`payload` is its captured part), learning whether
/// `CLIENT_DEPRECATE_EOF` is in effect where the shape of the response tells.
fn step(
    state: &mut ResponseState,
    header: Header,
    payload: &[u8],
    deprecate_eof: &mut Option<bool>,
) -> Step {
    let first = payload.first().copied().unwrap_or(0);
    let is_eof = first == 0xfe && header.len < 9;
    let response = &mut state.response;
    match state.phase {
        Phase::ResultStart => match first {
            0x00 => {
                let ok = wire::ok_packet(payload);
                let rows = response.affected_rows.unwrap_or(0);
                response.affected_rows = Some(rows.saturating_add(ok.affected_rows));
                more_results(ok.status)
            }
            0xff => error(response, payload),
            0xfb => {
                state.phase = Phase::Infile;
                Step::Continue
            }
            0xfe => DONE,
            _ => {
                let Some((columns, used)) = wire::lenenc(payload) else {
                    return Step::Invalid;
                };
                if columns == 0 || columns > 0xffff {
                    return Step::Invalid;
                }
                // MariaDB's metadata cache / MySQL's optional metadata: a trailing 0 byte
                // says no column definitions follow.
                let no_metadata = header.len > used && payload.get(used) == Some(&0);
                state.phase = if no_metadata {
                    Phase::ColumnsEnd
                } else {
                    Phase::ColumnDefs { left: columns }
                };
                Step::Continue
            }
        },
        Phase::ColumnDefs { left } => {
            state.phase = if left <= 1 {
                Phase::ColumnsEnd
            } else {
                Phase::ColumnDefs { left: left - 1 }
            };
            Step::Continue
        }
        Phase::ColumnsEnd => {
            state.phase = Phase::Rows;
            match *deprecate_eof {
                Some(false) if is_eof => Step::Continue,
                // without CLIENT_DEPRECATE_EOF an EOF (5 bytes) always follows the
                // definitions; an OK with header 0xFE is at least 7 bytes long
                None if first == 0xfe && header.len <= 5 => {
                    *deprecate_eof = Some(false);
                    Step::Continue
                }
                None => {
                    *deprecate_eof = Some(true);
                    row(state, header, payload)
                }
                _ => row(state, header, payload),
            }
        }
        Phase::Rows => row(state, header, payload),
        Phase::Auth => match first {
            0xff => error(response, payload),
            0x00 => DONE,
            // auth switch request, more authentication data
            _ => Step::Continue,
        },
        Phase::Infile | Phase::Single => match first {
            0xff => error(response, payload),
            0x00 => {
                response.affected_rows = Some(wire::ok_packet(payload).affected_rows);
                DONE
            }
            _ if state.phase == Phase::Single => DONE,
            _ => Step::Continue,
        },
        Phase::PrepareStart => match first {
            0xff => error(response, payload),
            0x00 => {
                let Some((id, columns, params)) = wire::prepare_ok(payload) else {
                    return Step::Invalid;
                };
                response.statement_id = Some(id);
                let last = params == 0 && columns == 0;
                state.phase = if params > 0 {
                    Phase::PrepareParams {
                        left: params,
                        columns,
                    }
                } else {
                    Phase::PrepareColumns { left: columns }
                };
                Step::Prepared { id, last }
            }
            _ => Step::Invalid,
        },
        Phase::PrepareParams { left, columns } => {
            if left > 1 {
                state.phase = Phase::PrepareParams {
                    left: left - 1,
                    columns,
                };
                Step::Continue
            } else if columns > 0 {
                state.phase = Phase::PrepareParamsEnd { columns };
                Step::Continue
            } else {
                last_definition(state, *deprecate_eof)
            }
        }
        Phase::PrepareParamsEnd { columns } => {
            state.phase = Phase::PrepareColumns { left: columns };
            match *deprecate_eof {
                Some(false) => Step::Continue,
                None if is_eof => {
                    *deprecate_eof = Some(false);
                    Step::Continue
                }
                // no EOF: this packet is the first column definition
                _ => {
                    *deprecate_eof = Some(true);
                    step(state, header, payload, deprecate_eof)
                }
            }
        }
        Phase::PrepareColumns { left } => {
            if left > 1 {
                state.phase = Phase::PrepareColumns { left: left - 1 };
                Step::Continue
            } else {
                last_definition(state, *deprecate_eof)
            }
        }
        Phase::PrepareEof if is_eof => DONE,
        Phase::PrepareEof => Step::Invalid,
        Phase::FieldList => match first {
            0xff => error(response, payload),
            0xfe if header.len < MAX_PAYLOAD => DONE,
            _ => Step::Continue,
        },
    }
}

/// The last parameter or column definition of a prepare response.
fn last_definition(state: &mut ResponseState, deprecate_eof: Option<bool>) -> Step {
    match deprecate_eof {
        Some(false) => {
            state.phase = Phase::PrepareEof;
            Step::Continue
        }
        Some(true) => DONE,
        // end here; an EOF that follows is skipped (and teaches the capability)
        None => Step::Done {
            eof_may_follow: true,
        },
    }
}

/// A packet in the rows of a result set.
fn row(state: &mut ResponseState, header: Header, payload: &[u8]) -> Step {
    match payload.first() {
        Some(0xff) => error(&mut state.response, payload),
        // a row never starts with 0xFE unless it is 16 MiB long
        Some(0xfe) if header.len < MAX_PAYLOAD => {
            let end = wire::end_status(payload, header.len);
            if end.status & wire::SERVER_MORE_RESULTS_EXISTS != 0 {
                state.phase = Phase::ResultStart;
                Step::Continue
            } else {
                DONE
            }
        }
        _ => Step::Continue,
    }
}

fn more_results(status: u16) -> Step {
    if status & wire::SERVER_MORE_RESULTS_EXISTS != 0 {
        Step::Continue
    } else {
        DONE
    }
}

fn error(response: &mut MySqlResponse, payload: &[u8]) -> Step {
    match wire::err_packet(payload) {
        Some(err) if err.code == wire::PROGRESS_REPORT => Step::Continue,
        Some(err) => {
            response.error = Some(MySqlError {
                code: err.code,
                sql_state: err.sql_state,
                message: err.message,
            });
            DONE
        }
        None => Step::Invalid,
    }
}
