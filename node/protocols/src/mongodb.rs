//! MongoDB wire protocol: a [`Codec`] for [`FramedSession`].
//!
//! Every message starts with a 16-byte little-endian header — `messageLength`, `requestID`,
//! `responseTo`, `opCode` (<https://www.mongodb.com/docs/manual/reference/mongodb-wire-protocol/>).
//! Since MongoDB 3.6 commands travel as `OP_MSG` (2013): `flagBits`, then sections, of which
//! one is the command's body document (kind 0). Drivers still send the connection handshake
//! (`hello`/`isMaster`) as the legacy `OP_QUERY` (2004) on `admin.$cmd`, answered by
//! `OP_REPLY` (1). A response's `responseTo` is its request's `requestID`: pairing is by id.
//!
//! # Detection
//!
//! A chunk is MongoDB when its header has a length of 21..=48 000 000 bytes (the server's
//! `maxMessageSizeBytes`) and a known op code, and the start of its body is well formed:
//! for `OP_MSG`, only defined flag bits, a kind-0 or kind-1 first section and a BSON
//! document whose length fits the message and whose first element has a known type and a
//! printable name; for `OP_QUERY`, a printable `db.collection` name; for `OP_REPLY`, only
//! defined response flags and a document count that fits. A request (`OP_MSG` with
//! `responseTo` 0, `OP_QUERY` …) makes the sender the client; a response (`OP_MSG` with a
//! `responseTo`, `OP_REPLY`) makes it the server. Fewer than 16 bytes with a plausible
//! length are `NeedMore` (fewer than 4 bytes are not looked at).
//!
//! # Fields (DeepFlow's `sql/mongo.rs`)
//!
//! | column | value |
//! |---|---|
//! | `request_type` | the command name, the first key of the body document (`find`, `insert`, `hello`, `isMaster` …); for legacy opcodes without a command, the op name (`OP_INSERT`, `OP_GET_MORE`, `OP_COMPRESSED` …) |
//! | `request_resource` | the command's collection, the value of its first key when that is a string (`find: "users"` → `users`); the collection of a legacy op |
//! | `request_domain` | the database, `$db` of an `OP_MSG` (when captured) or the prefix of an `OP_QUERY` namespace |
//! | `response_code` | `code` of the reply document (or of its first `writeErrors` entry) |
//! | `response_status` | `ok: 0`, an `errmsg`, a `$err` or `writeErrors` → `client_error`; otherwise `ok` |
//! | `response_exception` | `errmsg` (or `$err`, or the first write error's `errmsg`) |
//!
//! An `OP_MSG` request with `moreToCome` (unacknowledged write), `OP_INSERT`, `OP_UPDATE`,
//! `OP_DELETE` and `OP_KILL_CURSORS` expect no response and become rows at once.
//!
//! Where flowmesh differs from DeepFlow, and why:
//! - DeepFlow's `request_type` is the op code name (`OP_MSG`) and its `request_resource` the
//!   whole command document rendered as text. flowmesh names the command and its collection,
//!   which is what one groups by, and does not copy document contents (unbounded, and they
//!   hold user data).
//! - DeepFlow has no `request_domain`; flowmesh reports the database.
//! - `writeErrors` of an `ok: 1` reply (duplicate keys, validation) count as errors too.
//! - Status classes stay DeepFlow's: every error is `client_error`.
//! - `OP_COMPRESSED` bodies are not decompressed: such rows carry only the op name, and a
//!   compressed reply counts as `ok`.
//! - Replies of an exhaust cursor or streaming `hello` after the first answer no request
//!   and are counted as unmatched.

use crate::framed::FramedSession;
use crate::infer::{Detection, Inference};
use crate::session::{Codec, Decode, ProtocolSession, WireLen};
use crate::{ConversationConfig, Direction, L7Protocol, L7Record, ResponseStatus, Role};

const OP_REPLY: i32 = 1;
const OP_UPDATE: i32 = 2001;
const OP_INSERT: i32 = 2002;
const OP_QUERY: i32 = 2004;
const OP_GET_MORE: i32 = 2005;
const OP_DELETE: i32 = 2006;
const OP_KILL_CURSORS: i32 = 2007;
const OP_COMPRESSED: i32 = 2012;
const OP_MSG: i32 = 2013;

const HEADER_LEN: usize = 16;
/// The server's `maxMessageSizeBytes`.
const MAX_MESSAGE: i32 = 48_000_000;
/// Bytes of a response waited for before decoding it (all of a shorter one): error replies
/// are short, and their fields must not be missed because a syscall was split.
const RESPONSE_WANT: usize = 512;
/// Longest name, collection, database or error message kept.
const MAX_TEXT: usize = 256;

/// `OP_MSG` flag bits: checksumPresent, moreToCome, exhaustAllowed.
const MSG_CHECKSUM_PRESENT: u32 = 1;
const MSG_MORE_TO_COME: u32 = 1 << 1;
const MSG_KNOWN_FLAGS: u32 = MSG_CHECKSUM_PRESENT | MSG_MORE_TO_COME | (1 << 16);

fn i32_le(buf: &[u8], at: usize) -> Option<i32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_TEXT)]).into_owned()
}

/// A C string at `at`: its bytes and the position after its NUL, if the NUL is in `buf`.
fn cstring(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    Some((&rest[..nul], at + nul + 1))
}

fn printable(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|b| (0x20..0x7f).contains(b))
}

/// A BSON element's value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'a> {
    Double(f64),
    String(&'a [u8]),
    Document(&'a [u8]),
    Array(&'a [u8]),
    Bool(bool),
    Int32(i32),
    Int64(i64),
    Other,
}

impl Value<'_> {
    fn as_number(&self) -> Option<f64> {
        match *self {
            Value::Double(v) => Some(v),
            Value::Int32(v) => Some(f64::from(v)),
            Value::Int64(v) => Some(v as f64),
            Value::Bool(v) => Some(if v { 1.0 } else { 0.0 }),
            _ => None,
        }
    }
}

/// The elements of a BSON document as far as `doc` holds them: `doc` starts with the
/// document's `int32` length (the elements stop at that length or at the end of `doc`,
/// whichever comes first). A value cut by the end of `doc` ends the iteration; so does a
/// malformed element.
struct Elements<'a> {
    doc: &'a [u8],
    pos: usize,
}

fn elements(doc: &[u8]) -> Elements<'_> {
    let end = i32_le(doc, 0).map_or(0, |len| usize::try_from(len).unwrap_or(0));
    let doc = &doc[..doc.len().min(end)];
    Elements {
        doc,
        pos: if doc.len() >= 4 { 4 } else { doc.len() },
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = (&'a [u8], Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let kind = *self.doc.get(self.pos)?;
        if kind == 0 {
            return None;
        }
        let (key, at) = cstring(self.doc, self.pos + 1)?;
        let fixed = |n: usize| self.doc.get(at..at.checked_add(n)?);
        let length_prefixed = |extra: usize| {
            let len = usize::try_from(i32_le(self.doc, at)?).ok()?;
            self.doc
                .get(at..at.checked_add(4)?.checked_add(len)?.checked_add(extra)?)
        };
        let (value, size) = match kind {
            0x01 => {
                let b = fixed(8)?;
                let v = f64::from_le_bytes(b.try_into().ok()?);
                (Value::Double(v), 8)
            }
            0x02 => {
                let b = length_prefixed(0)?;
                let s = &b[4..];
                (Value::String(s.strip_suffix(&[0]).unwrap_or(s)), b.len())
            }
            0x03 | 0x04 => {
                let len = usize::try_from(i32_le(self.doc, at)?).ok()?;
                if len < 5 {
                    return None;
                }
                let b = fixed(len)?;
                let v = if kind == 0x03 {
                    Value::Document(b)
                } else {
                    Value::Array(b)
                };
                (v, len)
            }
            0x05 => (Value::Other, length_prefixed(1)?.len()),
            0x06 | 0x0a | 0xff | 0x7f => (Value::Other, 0),
            0x07 => (Value::Other, fixed(12)?.len()),
            0x08 => (Value::Bool(fixed(1)?[0] != 0), 1),
            0x09 | 0x11 => (Value::Other, fixed(8)?.len()),
            0x0b => {
                let (_, after_pattern) = cstring(self.doc, at)?;
                let (_, after_options) = cstring(self.doc, after_pattern)?;
                (Value::Other, after_options - at)
            }
            0x0c => (Value::Other, length_prefixed(12)?.len()),
            0x0d | 0x0e => (Value::Other, length_prefixed(0)?.len()),
            0x0f => {
                let len = usize::try_from(i32_le(self.doc, at)?).ok()?;
                (Value::Other, fixed(len)?.len())
            }
            0x10 => (Value::Int32(i32_le(self.doc, at)?), 4),
            0x12 => {
                let b = fixed(8)?;
                (Value::Int64(i64::from_le_bytes(b.try_into().ok()?)), 8)
            }
            0x13 => (Value::Other, fixed(16)?.len()),
            _ => return None,
        };
        self.pos = at + size;
        Some((key, value))
    }
}

/// Whether a BSON element type byte is defined.
fn known_type(kind: u8) -> bool {
    matches!(kind, 0x01..=0x13 | 0x7f | 0xff)
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MongoRequest {
    request_id: i32,
    /// Command name or op name.
    command: String,
    collection: String,
    database: String,
    expects_response: bool,
}

/// A decoded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MongoResponse {
    response_to: i32,
    error: bool,
    code: Option<i32>,
    message: String,
}

/// The MongoDB codec (stateless).
#[derive(Debug, Default)]
pub(crate) struct MongoCodec;

/// The message header at the start of `buf`, if complete.
#[derive(Debug, Clone, Copy)]
struct Header {
    length: usize,
    request_id: i32,
    response_to: i32,
    op_code: i32,
}

fn header(buf: &[u8]) -> Option<Header> {
    let length = i32_le(buf, 0)?;
    Some(Header {
        length: usize::try_from(length).unwrap_or(0),
        request_id: i32_le(buf, 4)?,
        response_to: i32_le(buf, 8)?,
        op_code: i32_le(buf, 12)?,
    })
}

/// The kind-0 body document of an `OP_MSG` whose sections start at `at` (the first kind-0
/// section among the captured ones), as far as it is captured.
fn msg_body(msg: &[u8], mut at: usize) -> Option<&[u8]> {
    loop {
        match *msg.get(at)? {
            0 => return msg.get(at + 1..),
            1 => {
                let size = usize::try_from(i32_le(msg, at + 1)?).ok()?;
                at = at.checked_add(1 + size)?;
            }
            _ => return None,
        }
    }
}

/// `db.collection` split at its first dot.
fn split_namespace(namespace: &[u8]) -> (String, String) {
    match namespace.iter().position(|b| *b == b'.') {
        Some(dot) => (text(&namespace[..dot]), text(&namespace[dot + 1..])),
        None => (text(namespace), String::new()),
    }
}

/// Command name, collection and `$db` of a command document.
fn command_of(doc: &[u8]) -> (String, String, String) {
    let mut command = String::new();
    let mut collection = String::new();
    let mut database = String::new();
    // the name even when its value is cut short
    if let Some(len) = i32_le(doc, 0)
        && len > 5
        && doc.get(4).is_some_and(|kind| *kind != 0)
        && let Some((key, _)) = cstring(&doc[..doc.len().min(len as usize)], 5)
    {
        command = text(key);
    }
    for (i, (key, value)) in elements(doc).enumerate() {
        if i == 0 {
            if let Value::String(s) = value {
                collection = text(s);
            }
        } else if key == b"$db"
            && let Value::String(s) = value
        {
            database = text(s);
        }
    }
    (command, collection, database)
}

/// Error facts of a reply document.
fn reply_status(doc: &[u8]) -> (bool, Option<i32>, String) {
    let mut error = false;
    let mut code = None;
    let mut message = String::new();
    for (key, value) in elements(doc) {
        match (key, value) {
            (b"ok", v) => error |= v.as_number() == Some(0.0),
            (b"errmsg" | b"$err", Value::String(s)) => {
                error = true;
                message = text(s);
            }
            (b"code", v) => code = v.as_number().map(|n| n as i32),
            (b"writeErrors", Value::Array(array)) => {
                if let Some((_, Value::Document(first))) = elements(array).next() {
                    error = true;
                    let (_, first_code, first_message) = reply_status(first);
                    code = code.or(first_code);
                    if message.is_empty() {
                        message = first_message;
                    }
                }
            }
            _ => {}
        }
    }
    (error, code, message)
}

impl MongoCodec {
    fn request(header: &Header, msg: &[u8]) -> Option<MongoRequest> {
        let op_name = |name: &str| name.to_string();
        let mut request = MongoRequest {
            request_id: header.request_id,
            command: String::new(),
            collection: String::new(),
            database: String::new(),
            expects_response: true,
        };
        match header.op_code {
            OP_MSG => {
                let flags = i32_le(msg, HEADER_LEN)? as u32;
                request.expects_response = flags & MSG_MORE_TO_COME == 0;
                let body = msg_body(msg, HEADER_LEN + 4)?;
                (request.command, request.collection, request.database) = command_of(body);
                if request.command.is_empty() {
                    return None;
                }
            }
            OP_QUERY => {
                let (namespace, at) = cstring(msg, HEADER_LEN + 4)?;
                let (database, collection) = split_namespace(namespace);
                request.database = database;
                let query = msg.get(at + 8..)?;
                if collection == "$cmd" {
                    // a command; a wrapped query ({$query: {...}}) names it inside
                    let (command, target, _) = command_of(query);
                    (request.command, request.collection) = match elements(query).next() {
                        Some((b"$query" | b"query", Value::Document(inner))) => {
                            let (command, target, _) = command_of(inner);
                            (command, target)
                        }
                        _ => (command, target),
                    };
                    if request.command.is_empty() {
                        return None;
                    }
                } else {
                    request.command = op_name("OP_QUERY");
                    request.collection = collection;
                }
            }
            OP_UPDATE | OP_INSERT | OP_GET_MORE | OP_DELETE => {
                // (ZERO or flags) int32, then fullCollectionName
                let (namespace, _) = cstring(msg, HEADER_LEN + 4)?;
                (request.database, request.collection) = split_namespace(namespace);
                request.command = op_name(match header.op_code {
                    OP_UPDATE => "OP_UPDATE",
                    OP_INSERT => "OP_INSERT",
                    OP_GET_MORE => "OP_GET_MORE",
                    _ => "OP_DELETE",
                });
                request.expects_response = header.op_code == OP_GET_MORE;
            }
            OP_KILL_CURSORS => {
                request.command = op_name("OP_KILL_CURSORS");
                request.expects_response = false;
            }
            OP_COMPRESSED => request.command = op_name("OP_COMPRESSED"),
            _ => return None,
        }
        Some(request)
    }

    fn response(header: &Header, msg: &[u8]) -> Option<MongoResponse> {
        let mut response = MongoResponse {
            response_to: header.response_to,
            error: false,
            code: None,
            message: String::new(),
        };
        let doc = match header.op_code {
            OP_MSG => msg_body(msg, HEADER_LEN + 4),
            OP_REPLY => {
                let flags = i32_le(msg, HEADER_LEN)?;
                // QueryFailure: the document is {$err: ...}
                response.error = flags & 2 != 0;
                let returned = i32_le(msg, HEADER_LEN + 16)?;
                if returned > 0 {
                    msg.get(HEADER_LEN + 20..)
                } else {
                    None
                }
            }
            OP_COMPRESSED => None,
            _ => return None,
        };
        if let Some(doc) = doc {
            let (error, code, message) = reply_status(doc);
            response.error |= error;
            response.code = code;
            response.message = message;
        }
        Some(response)
    }
}

impl Codec for MongoCodec {
    type Request = MongoRequest;
    type Response = MongoResponse;

    fn protocol(&self) -> L7Protocol {
        L7Protocol::MongoDb
    }

    fn decode_request(&mut self, buf: &[u8]) -> Decode<MongoRequest> {
        let Some(header) = header(buf) else {
            return Decode::NeedMore;
        };
        if header.length < HEADER_LEN {
            return Decode::Invalid;
        }
        let msg = &buf[..buf.len().min(header.length)];
        match Self::request(&header, msg) {
            Some(request) => Decode::Message {
                len: WireLen::Exact(header.length as u64),
                msg: request,
            },
            // the fields are cut short inside the message: wait; past its end: malformed
            None if buf.len() < header.length => Decode::NeedMore,
            None => Decode::Invalid,
        }
    }

    fn decode_response(
        &mut self,
        buf: &[u8],
        _pending: Option<&MongoRequest>,
    ) -> Decode<MongoResponse> {
        let Some(header) = header(buf) else {
            return Decode::NeedMore;
        };
        if header.length < HEADER_LEN {
            return Decode::Invalid;
        }
        if buf.len() < header.length.min(RESPONSE_WANT) {
            return Decode::NeedMore;
        }
        let msg = &buf[..buf.len().min(header.length)];
        match Self::response(&header, msg) {
            Some(response) => Decode::Message {
                len: WireLen::Exact(header.length as u64),
                msg: response,
            },
            None if buf.len() < header.length => Decode::NeedMore,
            None => Decode::Invalid,
        }
    }

    fn request_key(&self, request: &MongoRequest) -> Option<u64> {
        Some(u64::from(request.request_id as u32))
    }

    fn response_key(&self, response: &MongoResponse) -> Option<u64> {
        Some(u64::from(response.response_to as u32))
    }

    fn expects_response(&self, request: &MongoRequest) -> bool {
        request.expects_response
    }

    fn fill(
        &self,
        request: &MongoRequest,
        response: Option<&MongoResponse>,
        record: &mut L7Record,
    ) {
        record.request_type = request.command.clone();
        record.request_resource = request.collection.clone();
        record.request_domain = request.database.clone();
        let Some(response) = response else {
            return;
        };
        record.response_code = response.code.and_then(|c| u16::try_from(c).ok());
        if response.error {
            record.response_status = ResponseStatus::ClientError;
            record.response_exception = if response.message.is_empty() {
                "error".to_string()
            } else {
                response.message.clone()
            };
        } else {
            record.response_status = ResponseStatus::Ok;
        }
    }
}

/// Checks the message at the start of `bytes` strictly: `Some(true)` a request, `Some(false)`
/// a response, `None` not MongoDB (see the module docs).
fn probe(bytes: &[u8]) -> Option<bool> {
    let header = header(bytes)?;
    if !(21..=MAX_MESSAGE as usize).contains(&header.length) {
        return None;
    }
    let msg = &bytes[..bytes.len().min(header.length)];
    let is_request = match header.op_code {
        OP_MSG => {
            let flags = i32_le(msg, HEADER_LEN)? as u32;
            if flags & !MSG_KNOWN_FLAGS != 0 {
                return None;
            }
            let kind = *msg.get(HEADER_LEN + 4)?;
            let doc_at = match kind {
                0 => HEADER_LEN + 5,
                // a document sequence: size, identifier; the body follows later
                1 => {
                    let size = i32_le(msg, HEADER_LEN + 5)?;
                    let (identifier, at) = cstring(msg, HEADER_LEN + 9)?;
                    if size < 5 || !printable(identifier) {
                        return None;
                    }
                    at
                }
                _ => return None,
            };
            let doc_len = i32_le(msg, doc_at)?;
            if doc_len < 5 || doc_at + doc_len as usize > header.length {
                return None;
            }
            let kind = *msg.get(doc_at + 4)?;
            let (key, _) = cstring(msg, doc_at + 5)?;
            if !known_type(kind) || !printable(key) {
                return None;
            }
            header.response_to == 0
        }
        OP_QUERY | OP_UPDATE | OP_INSERT | OP_GET_MORE | OP_DELETE => {
            let flags = i32_le(msg, HEADER_LEN)?;
            let (namespace, _) = cstring(msg, HEADER_LEN + 4)?;
            if !(0..1 << 8).contains(&flags)
                || !printable(namespace)
                || !namespace.contains(&b'.')
                || header.response_to != 0
            {
                return None;
            }
            true
        }
        OP_REPLY => {
            let flags = i32_le(msg, HEADER_LEN)?;
            let returned = i32_le(msg, HEADER_LEN + 16)?;
            if !(0..1 << 4).contains(&flags)
                || header.response_to == 0
                || returned < 0
                || returned as usize > header.length / 5
            {
                return None;
            }
            false
        }
        _ => return None,
    };
    Some(is_request)
}

/// Recognises a MongoDB message at the start of a chunk (see the module docs).
pub(crate) fn detect(bytes: &[u8], direction: Direction) -> Detection {
    if bytes.len() < HEADER_LEN {
        // a plausible little-endian length so far
        let plausible = i32_le(bytes, 0).is_some_and(|len| (21..=MAX_MESSAGE).contains(&len));
        return if plausible {
            Detection::NeedMore
        } else {
            Detection::NoMatch
        };
    }
    match probe(bytes) {
        Some(is_request) => Detection::Match(Inference {
            protocol: L7Protocol::MongoDb,
            role: Role::from_request_direction(if is_request {
                direction
            } else {
                direction.opposite()
            }),
        }),
        // the start of a body not captured yet
        None if bytes.len() < 64 && header(bytes).is_some_and(|h| h.length > bytes.len()) => {
            let h = header(bytes);
            let known = h.is_some_and(|h| {
                (21..=MAX_MESSAGE as usize).contains(&h.length)
                    && matches!(h.op_code, OP_MSG | OP_QUERY | OP_REPLY)
            });
            if known {
                Detection::NeedMore
            } else {
                Detection::NoMatch
            }
        }
        None => Detection::NoMatch,
    }
}

/// The session of a socket `detect` recognised.
pub(crate) fn new_session(role: Role, config: &ConversationConfig) -> Box<dyn ProtocolSession> {
    Box::new(FramedSession::new(MongoCodec, role, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `OP_MSG` with `body` as its kind-0 section (a BSON document built by hand).
    fn op_msg(request_id: i32, response_to: i32, flags: u32, body: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&((HEADER_LEN + 5 + body.len()) as i32).to_le_bytes());
        msg.extend_from_slice(&request_id.to_le_bytes());
        msg.extend_from_slice(&response_to.to_le_bytes());
        msg.extend_from_slice(&OP_MSG.to_le_bytes());
        msg.extend_from_slice(&flags.to_le_bytes());
        msg.push(0);
        msg.extend_from_slice(body);
        msg
    }

    /// A BSON document from (type, key, encoded value) elements.
    fn doc(elements: &[(u8, &str, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, key, value) in elements {
            body.push(*kind);
            body.extend_from_slice(key.as_bytes());
            body.push(0);
            body.extend_from_slice(value);
        }
        let mut d = ((body.len() + 5) as i32).to_le_bytes().to_vec();
        d.extend(body);
        d.push(0);
        d
    }

    fn string(s: &str) -> Vec<u8> {
        let mut v = ((s.len() + 1) as i32).to_le_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        v
    }

    fn is_mongo(bytes: &[u8]) -> bool {
        matches!(detect(bytes, Direction::Egress), Detection::Match(i) if i.protocol == L7Protocol::MongoDb)
    }

    #[test]
    fn detects_requests_and_responses() {
        let find = op_msg(
            7,
            0,
            0,
            &doc(&[
                (0x02, "find", string("users")),
                (0x02, "$db", string("app")),
            ]),
        );
        assert_eq!(
            detect(&find, Direction::Egress),
            Detection::Match(Inference {
                protocol: L7Protocol::MongoDb,
                role: Role::Client
            })
        );
        let reply = op_msg(8, 7, 0, &doc(&[(0x01, "ok", 1f64.to_le_bytes().to_vec())]));
        // a reply received: the receiver is the client
        assert_eq!(
            detect(&reply, Direction::Ingress),
            Detection::Match(Inference {
                protocol: L7Protocol::MongoDb,
                role: Role::Client
            })
        );
        for n in 4..HEADER_LEN {
            assert_eq!(detect(&find[..n], Direction::Egress), Detection::NeedMore);
        }
        assert!(is_mongo(&find[..31]));
        assert_eq!(detect(&find[..30], Direction::Egress), Detection::NeedMore);
    }

    #[test]
    fn detection_rejects_everything_else() {
        let find = op_msg(7, 0, 0, &doc(&[(0x02, "find", string("users"))]));
        let mut bad_flags = find.clone();
        bad_flags[16] = 0x08;
        let mut bad_kind = find.clone();
        bad_kind[20] = 2;
        let mut bad_type = find.clone();
        bad_type[25] = 0x20;
        let mut too_long_doc = find.clone();
        too_long_doc[21] = 0xf0;
        let others: [&[u8]; 10] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00\x00\x00\x00\x00\x00\x00",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
            b"AMQP\x00\x00\x09\x01",
            b"INFO {\"server_id\":\"x\",\"version\":\"2.10\"}\r\n",
            b"\xda\xbb\xc2\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x10\x05\x32\x2e\x30\x2e\x32",
            // Kafka ApiVersions request
            b"\x00\x00\x00\x30\x00\x12\x00\x03\x00\x00\x00\x01\x00\x10flowmesh-fixture\x00\x0dkafka-python\x073.0.12\x00",
            // PostgreSQL StartupMessage
            b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00postgres\x00database\x00postgres\x00\x00",
            // MySQL handshake
            b"\x4a\x00\x00\x00\x0a8.0.36\x00\x08\x00\x00\x00\x3a\x2f\x7e\x29\x10\x2c\x5f\x51\x00\xff\xff",
        ];
        for bytes in others.iter().copied().chain([
            &bad_flags[..],
            &bad_kind[..],
            &bad_type[..],
            &too_long_doc[..],
        ]) {
            assert!(!is_mongo(bytes), "{bytes:?}");
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut bytes = [0u8; 64];
            for b in &mut bytes {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            assert!(!is_mongo(&bytes));
            // even with a plausible length and the OP_MSG op code
            bytes[..4].copy_from_slice(&64i32.to_le_bytes());
            bytes[12..16].copy_from_slice(&OP_MSG.to_le_bytes());
            assert!(!is_mongo(&bytes), "{bytes:?}");
        }
    }

    #[test]
    fn bson_iteration_stops_at_the_captured_end() {
        let d = doc(&[
            (0x02, "insert", string("orders")),
            (
                0x03,
                "lsid",
                doc(&[(0x10, "x", 5i32.to_le_bytes().to_vec())]),
            ),
            (0x10, "code", 11000i32.to_le_bytes().to_vec()),
            (0x02, "$db", string("shop")),
        ]);
        assert_eq!(
            command_of(&d),
            ("insert".into(), "orders".into(), "shop".into())
        );
        for n in 0..d.len() {
            let _ = command_of(&d[..n]);
            let _ = reply_status(&d[..n]);
        }
        assert_eq!(
            command_of(&d[..23]),
            ("insert".into(), "orders".into(), String::new())
        );
        assert_eq!(
            command_of(&d[..20]),
            ("insert".into(), String::new(), String::new())
        );
        assert_eq!(reply_status(&d), (false, Some(11000), String::new()));
    }

    #[test]
    fn decodes_commands_replies_and_one_way_writes() {
        let mut codec = MongoCodec;
        let insert = op_msg(
            9,
            0,
            MSG_MORE_TO_COME,
            &doc(&[
                (0x02, "insert", string("orders")),
                (0x02, "$db", string("shop")),
            ]),
        );
        for n in 0..26 {
            assert_eq!(codec.decode_request(&insert[..n]), Decode::NeedMore, "{n}");
        }
        let Decode::Message { len, msg } = codec.decode_request(&insert) else {
            panic!("not decoded");
        };
        assert_eq!(len, WireLen::Exact(insert.len() as u64));
        assert_eq!(
            (msg.command.as_str(), msg.collection.as_str()),
            ("insert", "orders")
        );
        assert!(!codec.expects_response(&msg));
        let error = op_msg(
            10,
            9,
            0,
            &doc(&[
                (0x01, "ok", 0f64.to_le_bytes().to_vec()),
                (0x02, "errmsg", string("boom")),
                (0x10, "code", 8000i32.to_le_bytes().to_vec()),
            ]),
        );
        for n in 0..error.len() {
            assert_eq!(
                codec.decode_response(&error[..n], None),
                Decode::NeedMore,
                "{n}"
            );
        }
        let Decode::Message { msg: reply, .. } = codec.decode_response(&error, None) else {
            panic!("not decoded");
        };
        assert_eq!(codec.response_key(&reply), codec.request_key(&msg));
        assert_eq!(
            (reply.error, reply.code, reply.message.as_str()),
            (true, Some(8000), "boom")
        );
        // garbage op code inside a complete message
        let mut bad = insert.clone();
        bad[12..16].copy_from_slice(&77i32.to_le_bytes());
        assert_eq!(codec.decode_request(&bad), Decode::Invalid);
    }
}
