//! Memcached text protocol over TCP, pipelined, paired in FIFO order.
//!
//! # Detection
//!
//! A chunk matches when it starts with a complete, well-formed classic command line ending
//! in `\r\n`: `get`/`gets <key>+`, `gat`/`gats <exptime> <key>+`,
//! `set`/`add`/`replace`/`append`/`prepend <key> <flags> <exptime> <bytes> [noreply]`,
//! `cas ... <cas unique> [noreply]`, `delete <key> [0] [noreply]`,
//! `incr`/`decr <key> <value> [noreply]`, `touch <key> <exptime> [noreply]`,
//! `flush_all [delay] [noreply]`, `verbosity <level> [noreply]`, `version`, and `stats`
//! with no argument or a known one. Numbers must be numbers, keys at most 250 printable
//! bytes, and a storage command's data block, when captured, must end in `\r\n`. Command
//! names are lowercase (memcached answers `ERROR` to `GET`), so HTTP and NATS do not match;
//! a Redis inline `get k\r\n` does (Redis detection only takes RESP arrays). A prefix of
//! such a line needs more bytes. Replies are never used for detection.
//!
//! # Fields (DeepFlow's `protocol_logs/sql/memcached.rs`, and where flowmesh differs)
//!
//! - `request_type`: the command name as sent (`get`, `set`, `incr`), as in DeepFlow.
//! - `request_resource`: the command line without its data block, e.g. `set k 0 0 5`, as in
//!   DeepFlow, cut to 256 bytes (then ending in `...`).
//! - `response_status`: `client_error` for `ERROR` and `CLIENT_ERROR ...`, `server_error`
//!   for `SERVER_ERROR ...`, as in DeepFlow; `ok` for every other reply. DeepFlow reports
//!   `NOT_FOUND` as unknown; flowmesh keeps unknown for "no usable response", and a miss
//!   is a usable answer, like a `get` miss (`END` alone), which both report as `ok`.
//!   Commands sent with `noreply` (and `quit`) expect no reply: their rows come at once,
//!   with status unknown.
//! - `response_exception`: the whole error line (`CLIENT_ERROR bad data chunk`), cut to
//!   256 bytes. DeepFlow keeps only the word after the error keyword.
//! - `endpoint`, `request_domain`, `version` and `response_code` stay empty.
//!
//! # Framing
//!
//! A request is a line, plus for storage commands a data block whose length the line
//! gives: the whole length is known from the line, however little of the block was
//! captured. Replies are a line, or for retrievals `VALUE` blocks (each a continuation of
//! the exchange, its length known from its line) ended by `END`, or for `stats` `STAT` lines
//! ended by `END`. A `get` of n keys has at most n blocks, so after the n-th the `END` is
//! counted without being seen. Meta commands (`mg`, `ms` ...) and their replies are framed
//! and skipped: no rows, and no effect on the pairing of classic commands.
//!
//! A line cut by the end of the captured bytes is waited for until [`DECIDE_BYTES`] of the
//! message have been seen, then the message ends with its syscall (`WireLen::ToChunkEnd`);
//! the reasons are those of Redis (see [`crate::redis`]): a cut before 1 KiB is a syscall
//! boundary under the default capture, one after it is probably the capture's.

use crate::framed::FramedSession;
use crate::infer::{Detection, Inference};
use crate::session::{Codec, Decode, ProtocolSession, WireLen};
use crate::text::without_cut_char;
use crate::{ConversationConfig, Direction, L7Protocol, L7Record, ResponseStatus, Role};

/// Bytes of an incomplete message buffered before the codec stops waiting for the rest and
/// decides its length (see the module docs).
pub const DECIDE_BYTES: usize = 1024;
/// Longest line looked at for detection (memcached refuses longer lines but `get`'s).
const MAX_DETECT_LINE: usize = 2048;
/// Longest request line accepted in a session (a `get` of many keys).
const MAX_REQUEST_LINE: usize = 64 * 1024;
/// Longest reply line accepted.
const MAX_REPLY_LINE: usize = 8 * 1024;
/// Longest key (memcached's `KEY_MAX_LENGTH`).
const MAX_KEY: usize = 250;
/// Largest data block accepted.
const MAX_DATA: u64 = 1 << 40;
/// Bytes of `request_resource` and `response_exception` at most (before a final `...`).
const TEXT_MAX: usize = 256;

/// What a command does, as far as framing and pairing care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `get`, `gets`, `gat`, `gats`: `VALUE` blocks then `END`.
    Retrieval,
    /// `set` and friends: a data block follows the line.
    Storage,
    /// `stats`, `lru_crawler`: lines then `END`, or one line.
    Listing,
    /// `quit`, `shutdown`: no reply.
    Quit,
    /// A meta command: framed and skipped.
    Meta,
    /// One reply line.
    Other,
}

/// Commands memcached 1.6 knows, with whether detection accepts them.
const COMMANDS: [(&str, Kind, bool); 33] = [
    ("add", Kind::Storage, true),
    ("append", Kind::Storage, true),
    ("cache_memlimit", Kind::Other, false),
    ("cas", Kind::Storage, true),
    ("debugtime", Kind::Other, false),
    ("decr", Kind::Other, true),
    ("delete", Kind::Other, true),
    ("extstore", Kind::Other, false),
    ("flush_all", Kind::Other, true),
    ("gat", Kind::Retrieval, true),
    ("gats", Kind::Retrieval, true),
    ("get", Kind::Retrieval, true),
    ("gets", Kind::Retrieval, true),
    ("incr", Kind::Other, true),
    ("lru", Kind::Other, false),
    ("lru_crawler", Kind::Listing, false),
    ("ma", Kind::Meta, false),
    ("md", Kind::Meta, false),
    ("me", Kind::Meta, false),
    ("mg", Kind::Meta, false),
    ("misbehave", Kind::Other, false),
    ("mn", Kind::Meta, false),
    ("ms", Kind::Meta, false),
    ("prepend", Kind::Storage, true),
    ("quit", Kind::Quit, false),
    ("replace", Kind::Storage, true),
    ("set", Kind::Storage, true),
    ("shutdown", Kind::Quit, false),
    ("slabs", Kind::Other, false),
    ("stats", Kind::Listing, true),
    ("touch", Kind::Other, true),
    ("verbosity", Kind::Other, true),
    ("version", Kind::Other, true),
];

/// `stats` arguments detection accepts.
const STATS_ARGS: [&str; 9] = [
    "items",
    "slabs",
    "sizes",
    "settings",
    "conns",
    "extstore",
    "reset",
    "detail",
    "cachedump",
];

/// Reply lines that answer a command on their own (besides errors, `END` and numbers).
const ONE_LINE_REPLIES: [&str; 15] = [
    "STORED",
    "NOT_STORED",
    "EXISTS",
    "NOT_FOUND",
    "DELETED",
    "TOUCHED",
    "OK",
    "RESET",
    "VERSION",
    "BUSY",
    "BADCLASS",
    "NOSPARE",
    "NOTFULL",
    "UNSAFE",
    "SAME",
];

/// Meta protocol reply codes (skipped like their commands).
const META_REPLIES: [&str; 8] = ["VA", "HD", "EN", "NS", "EX", "NF", "MN", "ME"];

fn command(name: &[u8]) -> Option<(Kind, bool)> {
    COMMANDS
        .iter()
        .find(|(known, _, _)| known.as_bytes() == name)
        .map(|&(_, kind, detect)| (kind, detect))
}

fn is_command_prefix(prefix: &[u8], detectable_only: bool) -> bool {
    COMMANDS.iter().any(|(known, _, detect)| {
        (*detect || !detectable_only) && known.as_bytes().starts_with(prefix)
    })
}

/// A line at the start of a buffer.
enum Line<'a> {
    /// The line's text (without `\r\n` or `\n`) and the offset after its `\n`.
    Complete(&'a [u8], usize),
    /// No `\n` yet; the text so far.
    Incomplete(&'a [u8]),
    /// A control byte, or longer than allowed.
    Invalid,
}

fn line(buf: &[u8], max: usize) -> Line<'_> {
    for (i, &b) in buf.iter().enumerate() {
        if i > max {
            return Line::Invalid;
        }
        match b {
            b'\n' => {
                let text = &buf[..i];
                return Line::Complete(text.strip_suffix(b"\r").unwrap_or(text), i + 1);
            }
            b'\r' if buf.get(i + 1).is_some_and(|&next| next != b'\n') => return Line::Invalid,
            b'\r' => {}
            0..=0x1f | 0x7f => return Line::Invalid,
            _ => {}
        }
    }
    if buf.len() > max {
        return Line::Invalid;
    }
    Line::Incomplete(buf.strip_suffix(b"\r").unwrap_or(buf))
}

fn tokens(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|&b| b == b' ').filter(|t| !t.is_empty())
}

fn number<T: std::str::FromStr>(token: &[u8]) -> Option<T> {
    if token.is_empty() || !token.iter().all(|b| b.is_ascii_digit() || *b == b'-') {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// At most `max` bytes of `bytes` as text (cut between UTF-8 characters), `...` if cut.
fn text(bytes: &[u8], max: usize, cut: bool) -> String {
    let mut head = &bytes[..bytes.len().min(max)];
    if head.len() < bytes.len() {
        head = without_cut_char(head);
    }
    let mut text = String::from_utf8_lossy(head).into_owned();
    let mut cut = cut || head.len() < bytes.len();
    if text.len() > max {
        // each invalid byte became a 3-byte U+FFFD: keep the text within `max` bytes too
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        cut = true;
    }
    if cut {
        text.push_str("...");
    }
    text
}

/// Recognises a memcached command at the start of a chunk (see the module docs).
pub(crate) fn detect(bytes: &[u8], direction: Direction) -> Detection {
    let matched = Detection::Match(Inference {
        protocol: L7Protocol::Memcached,
        role: Role::from_request_direction(direction),
    });
    match line(bytes, MAX_DETECT_LINE) {
        Line::Invalid => Detection::NoMatch,
        Line::Incomplete(partial) => {
            let mut parts = partial.splitn(2, |&b| b == b' ');
            let name = parts.next().unwrap_or_default();
            let name_ok = match parts.next() {
                Some(_) => command(name).is_some_and(|(_, detect)| detect),
                None => is_command_prefix(name, true),
            };
            if name_ok {
                Detection::NeedMore
            } else {
                Detection::NoMatch
            }
        }
        Line::Complete(text, next) => {
            if next < 2 || bytes[next - 2] != b'\r' || !well_formed(text) {
                return Detection::NoMatch;
            }
            // a storage command's data block, as far as captured, ends in CRLF
            let words: Vec<&[u8]> = tokens(text).collect();
            if let Some((Kind::Storage, _)) = command(words[0])
                && let Some(len) = number::<u64>(words[4])
            {
                let end = next as u64 + len;
                if end + 2 <= bytes.len() as u64
                    && &bytes[end as usize..end as usize + 2] != b"\r\n"
                {
                    return Detection::NoMatch;
                }
            }
            matched
        }
    }
}

fn is_key(token: &[u8]) -> bool {
    !token.is_empty() && token.len() <= MAX_KEY && token.iter().all(|&b| b > 0x20 && b != 0x7f)
}

/// Whether a complete line is a classic command detection accepts.
fn well_formed(text: &[u8]) -> bool {
    let words: Vec<&[u8]> = tokens(text).take(MAX_DETECT_LINE).collect();
    let Some((&name, args)) = words.split_first() else {
        return false;
    };
    let noreply = args.last() == Some(&&b"noreply"[..]);
    let int = |t: &[u8]| number::<i64>(t).is_some();
    let unsigned = |t: &[u8]| number::<u64>(t).is_some();
    match name {
        b"get" | b"gets" => !args.is_empty() && args.iter().all(|k| is_key(k)),
        b"gat" | b"gats" => args.len() >= 2 && int(args[0]) && args[1..].iter().all(|k| is_key(k)),
        b"set" | b"add" | b"replace" | b"append" | b"prepend" => {
            (args.len() == 4 || (args.len() == 5 && noreply))
                && is_key(args[0])
                && number::<u32>(args[1]).is_some()
                && int(args[2])
                && unsigned(args[3])
        }
        b"cas" => {
            (args.len() == 5 || (args.len() == 6 && noreply))
                && is_key(args[0])
                && number::<u32>(args[1]).is_some()
                && int(args[2])
                && unsigned(args[3])
                && unsigned(args[4])
        }
        b"delete" => match args {
            [key] | [key, b"noreply"] | [key, b"0"] | [key, b"0", b"noreply"] => is_key(key),
            _ => false,
        },
        b"incr" | b"decr" => {
            (args.len() == 2 || (args.len() == 3 && noreply))
                && is_key(args[0])
                && unsigned(args[1])
        }
        b"touch" => {
            (args.len() == 2 || (args.len() == 3 && noreply)) && is_key(args[0]) && int(args[1])
        }
        b"flush_all" => match args {
            [] | [b"noreply"] => true,
            [delay] | [delay, b"noreply"] => int(delay),
            _ => false,
        },
        b"verbosity" => match args {
            [level] | [level, b"noreply"] => unsigned(level),
            _ => false,
        },
        b"version" => args.is_empty(),
        b"stats" => match args {
            [] => true,
            [sub, ..] if args.len() <= 3 => STATS_ARGS.iter().any(|s| s.as_bytes() == *sub),
            _ => false,
        },
        _ => false,
    }
}

/// The session of a socket this module's `detect` matched.
pub(crate) fn new_session(role: Role, config: &ConversationConfig) -> Box<dyn ProtocolSession> {
    Box::new(FramedSession::new(MemcachedCodec::default(), role, config))
}

/// A decoded command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// Which request of the connection this is, to tie reply progress to it.
    serial: u64,
    command: String,
    resource: String,
    kind: Kind,
    /// Keys of a retrieval, when the whole line was captured.
    keys: Option<u64>,
    /// No reply will come (`noreply`, `quit`).
    silent: bool,
}

/// A decoded reply: what the row needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    status: ResponseStatus,
    exception: String,
}

/// How far the reply in progress has got.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    /// The request it answers.
    serial: Option<u64>,
    /// `VALUE` blocks so far.
    values: u64,
    /// Captured bytes of it consumed so far.
    captured: u64,
}

/// The memcached text protocol for [`FramedSession`].
#[derive(Debug, Default)]
pub(crate) struct MemcachedCodec {
    requests: u64,
    progress: Progress,
}

impl MemcachedCodec {
    fn request(&mut self, text: &[u8], kind: Kind, cut: bool) -> Request {
        self.requests += 1;
        let words: Vec<&[u8]> = tokens(text).collect();
        let name = words.first().copied().unwrap_or_default();
        let keys = match (kind, cut, name) {
            (Kind::Retrieval, false, b"get" | b"gets") => Some(words.len() as u64 - 1),
            (Kind::Retrieval, false, _) => Some(words.len().saturating_sub(2) as u64),
            _ => None,
        };
        let noreply = !cut && words.len() > 1 && words.last() == Some(&&b"noreply"[..]);
        Request {
            serial: self.requests,
            command: String::from_utf8_lossy(name).into_owned(),
            resource: self::text(text.trim_ascii_start(), TEXT_MAX, cut),
            kind,
            keys,
            silent: noreply || kind == Kind::Quit,
        }
    }

    /// The progress of the reply to `pending`, restarted for a new request.
    fn progress(&mut self, pending: Option<&Request>) -> &mut Progress {
        let serial = pending.map(|p| p.serial);
        if self.progress.serial != serial {
            self.progress = Progress {
                serial,
                ..Progress::default()
            };
        }
        &mut self.progress
    }

    fn finish(&mut self, len: WireLen, status: ResponseStatus, exception: String) -> Decode<Reply> {
        self.progress = Progress::default();
        Decode::Message {
            len,
            msg: Reply { status, exception },
        }
    }
}

/// The status and exception of a reply line starting with `word`.
fn classify(word: &[u8], line: &[u8], cut: bool) -> (ResponseStatus, String) {
    match word {
        b"ERROR" | b"CLIENT_ERROR" => (ResponseStatus::ClientError, text(line, TEXT_MAX, cut)),
        b"SERVER_ERROR" => (ResponseStatus::ServerError, text(line, TEXT_MAX, cut)),
        _ => (ResponseStatus::Ok, String::new()),
    }
}

impl Codec for MemcachedCodec {
    type Request = Request;
    type Response = Reply;

    fn protocol(&self) -> L7Protocol {
        L7Protocol::Memcached
    }

    fn decode_request(&mut self, buf: &[u8]) -> Decode<Request> {
        let (text, next) = match line(buf, MAX_REQUEST_LINE) {
            Line::Invalid => return Decode::Invalid,
            Line::Complete(text, next) => (text, next),
            Line::Incomplete(partial) => {
                let mut parts = partial.splitn(2, |&b| b == b' ');
                let name = parts.next().unwrap_or_default();
                let known = command(name);
                return match (known, parts.next()) {
                    (None, Some(_)) => Decode::Invalid,
                    (None, None) if !is_command_prefix(name, false) => Decode::Invalid,
                    (Some((kind, _)), _) if buf.len() >= DECIDE_BYTES && kind != Kind::Meta => {
                        Decode::Message {
                            len: WireLen::ToChunkEnd,
                            msg: self.request(partial, kind, true),
                        }
                    }
                    _ if buf.len() >= DECIDE_BYTES => Decode::Invalid,
                    _ => Decode::NeedMore,
                };
            }
        };
        let words: Vec<&[u8]> = tokens(text).take(8).collect();
        let Some((kind, _)) = words.first().and_then(|name| command(name)) else {
            return Decode::Invalid;
        };
        let data = |at: usize| {
            words
                .get(at)
                .and_then(|t| number::<u64>(t))
                .filter(|&n| n <= MAX_DATA)
        };
        match kind {
            Kind::Meta => {
                // `ms <key> <datalen> <flags>*` carries a data block
                let block = match (words[0], data(2)) {
                    (b"ms", Some(len)) => len + 2,
                    _ => 0,
                };
                Decode::Skip {
                    len: WireLen::Exact(next as u64 + block),
                }
            }
            Kind::Storage => {
                // without a valid <bytes>, memcached refuses the line and reads no block
                let (fields, bytes_at) = if words[0] == b"cas" { (6, 4) } else { (5, 4) };
                let count = tokens(text).count();
                let block = match data(bytes_at) {
                    Some(len) if count == fields || count == fields + 1 => len + 2,
                    _ => 0,
                };
                Decode::Message {
                    len: WireLen::Exact(next as u64 + block),
                    msg: self.request(text, kind, false),
                }
            }
            _ => Decode::Message {
                len: WireLen::Exact(next as u64),
                msg: self.request(text, kind, false),
            },
        }
    }

    fn decode_response(&mut self, buf: &[u8], pending: Option<&Request>) -> Decode<Reply> {
        let pending_kind = pending.map(|p| p.kind);
        let keys = pending.and_then(|p| p.keys);
        let seen = self.progress(pending).captured;
        let decided = seen + buf.len() as u64 >= DECIDE_BYTES as u64;
        let (text, next) = match line(buf, MAX_REPLY_LINE) {
            Line::Invalid => return Decode::Invalid,
            Line::Complete(text, next) => (text, next),
            Line::Incomplete(partial) => {
                if !decided {
                    return Decode::NeedMore;
                }
                let word = partial.split(|&b| b == b' ').next().unwrap_or_default();
                let (status, exception) = classify(word, partial, true);
                return self.finish(WireLen::ToChunkEnd, status, exception);
            }
        };
        let words: Vec<&[u8]> = tokens(text).take(8).collect();
        let Some(&word) = words.first() else {
            return Decode::Invalid;
        };
        let line_len = next as u64;
        match word {
            b"VALUE" => {
                let Some(bytes) = words
                    .get(3)
                    .and_then(|t| number::<u64>(t))
                    .filter(|&n| n <= MAX_DATA && (4..=5).contains(&words.len()))
                else {
                    return Decode::Invalid;
                };
                let block = line_len + bytes + 2;
                let progress = self.progress(pending);
                progress.values += 1;
                let values = progress.values;
                if pending_kind == Some(Kind::Retrieval) && keys.is_some_and(|k| values >= k) {
                    // the last block a get of this many keys can have: END follows
                    let after = buf
                        .get(block.min(buf.len() as u64) as usize..)
                        .unwrap_or_default();
                    let end = &b"END\r\n"[..after.len().min(5)];
                    if after.starts_with(end) {
                        return self.finish(
                            WireLen::Exact(block + 5),
                            ResponseStatus::Ok,
                            String::new(),
                        );
                    }
                }
                if block > buf.len() as u64 && decided {
                    return self.finish(WireLen::ToChunkEnd, ResponseStatus::Ok, String::new());
                }
                self.progress(pending).captured += block.min(buf.len() as u64);
                Decode::Continue {
                    len: WireLen::Exact(block),
                }
            }
            b"END" => self.finish(WireLen::Exact(line_len), ResponseStatus::Ok, String::new()),
            b"ERROR" | b"CLIENT_ERROR" | b"SERVER_ERROR" => {
                let (status, exception) = classify(word, text, false);
                self.finish(WireLen::Exact(line_len), status, exception)
            }
            b"VA" => match words
                .get(1)
                .and_then(|t| number::<u64>(t))
                .filter(|&n| n <= MAX_DATA)
            {
                Some(bytes) => Decode::Skip {
                    len: WireLen::Exact(line_len + bytes + 2),
                },
                None => Decode::Invalid,
            },
            _ if META_REPLIES.iter().any(|m| m.as_bytes() == word) => Decode::Skip {
                len: WireLen::Exact(line_len),
            },
            _ if ONE_LINE_REPLIES.iter().any(|r| r.as_bytes() == word)
                || (number::<u64>(word).is_some() && words.len() == 1) =>
            {
                self.finish(WireLen::Exact(line_len), ResponseStatus::Ok, String::new())
            }
            // the lines of a listing: STAT, ITEM, PREFIX, key=...
            _ if pending_kind == Some(Kind::Listing)
                || (pending_kind.is_none() && matches!(word, b"STAT" | b"ITEM")) =>
            {
                self.progress(pending).captured += line_len;
                Decode::Continue {
                    len: WireLen::Exact(line_len),
                }
            }
            _ => Decode::Invalid,
        }
    }

    fn expects_response(&self, request: &Request) -> bool {
        !request.silent
    }

    fn fill(&self, request: &Request, reply: Option<&Reply>, record: &mut L7Record) {
        record.request_type.clone_from(&request.command);
        record.request_resource.clone_from(&request.resource);
        if let Some(reply) = reply {
            record.response_status = reply.status;
            record.response_exception.clone_from(&reply.exception);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framed::CodecWire;

    type Wire = CodecWire<MemcachedCodec>;

    impl CodecWire<MemcachedCodec> {
        fn rows(&self) -> Vec<(String, String, ResponseStatus, String)> {
            self.out
                .iter()
                .map(|r| {
                    (
                        r.request_type.clone(),
                        r.request_resource.clone(),
                        r.response_status,
                        r.response_exception.clone(),
                    )
                })
                .collect()
        }
    }

    fn row(
        command: &str,
        resource: &str,
        status: ResponseStatus,
        exception: &str,
    ) -> (String, String, ResponseStatus, String) {
        (command.into(), resource.into(), status, exception.into())
    }

    use ResponseStatus::{ClientError, Ok, ServerError, Unknown};

    #[test]
    fn replies_past_the_capture_cap() {
        let mut w = Wire::new(MemcachedCodec::default(), Role::Server);
        let big = vec![b'v'; 3000];
        // a single-key get: the END after the one block is counted unseen
        w.request(b"get a\r\n");
        let mut reply = b"VALUE a 0 3000\r\n".to_vec();
        reply.extend_from_slice(&big);
        reply.extend_from_slice(b"\r\nEND\r\n");
        w.send(Direction::Egress, &reply, 1024);
        // two keys: after the first block anything may follow, the reply ends with its
        // syscall
        w.request(b"get a b\r\n");
        let mut two = reply[..reply.len() - 5].to_vec();
        two.extend_from_slice(b"VALUE b 0 1\r\nx\r\nEND\r\n");
        w.send(Direction::Egress, &two, 1024);
        // a get of many keys cut by the cap: the line ends with its syscall
        let keys: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
        let line = format!("get {}\r\n", keys.join(" "));
        w.send(Direction::Ingress, line.as_bytes(), 1024);
        w.reply(b"VALUE key:7 0 1\r\nx\r\nEND\r\n");
        w.request(b"quit\r\n");
        let lengths: Vec<(u64, Option<u64>)> = w
            .out
            .iter()
            .map(|r| (r.request_length, r.response_length))
            .collect();
        assert_eq!(
            lengths,
            vec![
                (7, Some(reply.len() as u64)),
                (9, Some(two.len() as u64)),
                (line.len() as u64, Some(25)),
                (6, None),
            ]
        );
        assert!(w.out[2].request_resource.ends_with("..."));
        assert_eq!(w.out[2].request_resource.len(), TEXT_MAX + 3);
        assert_eq!(w.out[3].response_status, Unknown);
        assert_eq!(w.stats.parse_errors + w.stats.resyncs, 0);
    }

    #[test]
    fn texts_stay_within_their_bound() {
        assert_eq!(text(b"abc", 8, false), "abc");
        assert_eq!(text(b"abcdef", 3, false), "abc...");
        assert_eq!(text("é€".as_bytes(), 4, false), "é...");
        let invalid = text(&[0xff; 300], TEXT_MAX, false);
        assert!(invalid.len() <= TEXT_MAX + 3 && invalid.ends_with("..."));
    }

    #[test]
    fn detection_needs_a_whole_line() {
        let client = |b: &[u8]| detect(b, Direction::Egress);
        let line = b"set k 0 0 5\r\nhello\r\n";
        for cut in 0..13 {
            assert_eq!(client(&line[..cut]), Detection::NeedMore, "cut {cut}");
        }
        assert!(matches!(client(&line[..13]), Detection::Match(_)));
        assert_eq!(client(b"setx"), Detection::NoMatch);
        assert_eq!(client(b"quit"), Detection::NoMatch);
        assert_eq!(client(b"\n"), Detection::NoMatch);
        assert_eq!(client(&[b'g'; 3000]), Detection::NoMatch);
    }

    #[test]
    fn commands_and_replies() {
        let mut w = Wire::new(MemcachedCodec::default(), Role::Server);
        w.request(b"set a 0 0 5\r\nhello\r\nset b 1 0 1 noreply\r\nx\r\nget a b zz\r\n");
        w.reply(b"STORED\r\nVALUE a 0 5\r\nhello\r\nVALUE b 1 1\r\nx\r\nEND\r\n");
        w.request(b"incr a 1\r\n");
        w.reply(b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
        w.request(b"delete zz\r\nstats\r\nversion\r\n");
        w.reply(b"NOT_FOUND\r\nSTAT pid 1\r\nSTAT uptime 2\r\nEND\r\nVERSION 1.6.18\r\n");
        w.request(b"decr n 1\r\n");
        w.reply(b"SERVER_ERROR out of memory\r\n");
        assert_eq!(
            w.rows(),
            vec![
                row("set", "set b 1 0 1 noreply", Unknown, ""),
                row("set", "set a 0 0 5", Ok, ""),
                row("get", "get a b zz", Ok, ""),
                row(
                    "incr",
                    "incr a 1",
                    ClientError,
                    "CLIENT_ERROR cannot increment or decrement non-numeric value"
                ),
                row("delete", "delete zz", Ok, ""),
                row("stats", "stats", Ok, ""),
                row("version", "version", Ok, ""),
                row(
                    "decr",
                    "decr n 1",
                    ServerError,
                    "SERVER_ERROR out of memory"
                ),
            ]
        );
        assert_eq!(w.stats.parse_errors + w.stats.resyncs, 0);
        assert_eq!(w.out[1].request_length, 20);
        assert_eq!(w.out[2].response_length, Some(41));
    }
}
