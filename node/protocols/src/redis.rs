//! Redis: RESP2 and RESP3 over TCP, pipelined, paired in FIFO order.
//!
//! # Detection
//!
//! Only a client command is recognised, never a reply: `+OK\r\n` is also a NATS reply and an
//! array reply looks like a command. A chunk matches when it starts with a RESP array of
//! bulk strings (`*N\r\n$L\r\nNAME\r\n`) whose first element is a Redis 7 command name (any
//! case) and whose element count fits that command's arity, and the elements captured after
//! it are well-formed bulk strings. Inline commands (`PING\r\n`) are parsed inside a session
//! but do not start one: `get k\r\n` is also memcached.
//!
//! # Fields (DeepFlow's `protocol_logs/sql/redis.rs`, and where flowmesh differs)
//!
//! - `request_type`: the command name, uppercased (`SET`, `CONFIG`). DeepFlow keeps it as
//!   sent; uppercase makes `set` and `SET` one value, as Redis treats them.
//! - `request_resource`: the command line as DeepFlow shows it, name as sent and arguments
//!   joined by spaces (empty arguments left out), e.g. `SET key:1 hello`. flowmesh cuts each
//!   argument to 64 bytes and the whole to 256 (cut parts end in `...`), so large values do
//!   not fill the column, and always replaces credentials by `?` (`AUTH ?`,
//!   `HELLO 3 AUTH ?`, `CONFIG SET requirepass ?`, `MIGRATE ... AUTH2 user ?`,
//!   `ACL SETUSER name on ?`), where DeepFlow does so only with obfuscation enabled.
//! - `response_status`: `server_error` for error replies (`-ERR ...`, `-WRONGTYPE ...`,
//!   RESP3 `!` blob errors), `ok` for every other reply, nil (`$-1`, `_`) included, as in
//!   DeepFlow. Errors nested inside an array (an `EXEC` result) leave the reply `ok`.
//! - `response_exception`: the error text without its `-` type byte, e.g.
//!   `ERR value is not an integer or out of range`, cut to 256 bytes. DeepFlow keeps the `-`.
//! - `endpoint`, `request_domain`, `version` and `response_code` stay empty, as in DeepFlow.
//!
//! # Framing
//!
//! Pairing is FIFO: one reply per command, in order, so a pipeline of N commands in one
//! syscall gives N rows (DeepFlow reads one command per packet). The exceptions are handled in the codec: RESP3 push messages
//! (`>`), pub/sub messages and the extra confirmations of a multi-channel `SUBSCRIBE` are
//! skipped, `MONITOR`'s stream is skipped, and commands after `CLIENT REPLY OFF` (or the
//! one after `CLIENT REPLY SKIP`) expect no reply.
//!
//! RESP has no length for a whole message: an array's end is known only by reading its
//! elements. When the captured bytes end inside a message the codec cannot tell whether
//! the syscall was longer than the capture (the rest will never be seen) or the message
//! was split across syscalls (the rest comes next). It decides like this:
//!
//! - When only the payload of the message's last bulk string is missing, the length is
//!   known: `WireLen::Exact` (a big `SET` value, a big `GET` reply), once the row's fields
//!   no longer depend on the missing bytes.
//! - Otherwise it waits for more (`NeedMore`) until [`DECIDE_BYTES`] of the message are
//!   buffered, then ends the message at the end of the syscall (`WireLen::ToChunkEnd`).
//!   The capture keeps the first 1 KiB of every syscall by default, so a message that
//!   started at its syscall's start and stops before 1 KiB was split, not cut, and exact
//!   framing waits for its rest; past 1 KiB it was probably cut, and the row keeps its
//!   command or reply type. Known limits: with a capture cap below 1 KiB, or for a message
//!   that starts less than 1 KiB before the cap in a pipelined syscall, a cut loses framing
//!   (the direction resynchronises at a later syscall and waiting commands become rows
//!   without reply); a message split across syscalls after more than 1 KiB of it arrived
//!   is ended early, and the next syscall starts inside it: usually a parse error and a
//!   resync, but the inside of an array reply can also read as stray replies (counted as
//!   unmatched, or paired with later pipelined commands).

mod command;
mod commands;
mod resp;

use crate::framed::FramedSession;
use crate::infer::{Detection, Inference};
use crate::session::{Codec, Decode, ProtocolSession, WireLen};
use crate::{ConversationConfig, Direction, L7Protocol, L7Record, ResponseStatus, Role};

use command::{Args, Parsed, text_prefix};
use resp::{Header, Line, Scan};

/// Bytes of an incomplete message buffered before the codec stops waiting for the rest and
/// decides its length (see the module docs).
pub const DECIDE_BYTES: usize = 1024;
/// Bytes of `response_exception` at most (before a final `...`).
const EXCEPTION_MAX: usize = 256;
/// Longest simple-string line looked at for an error text.
const MAX_ERROR_LINE: usize = 64 * 1024;

/// Recognises a Redis command at the start of a chunk (see the module docs).
pub(crate) fn detect(bytes: &[u8], direction: Direction) -> Detection {
    match detect_command(bytes) {
        Detection::Match(_) => Detection::Match(Inference {
            protocol: L7Protocol::Redis,
            role: Role::from_request_direction(direction),
        }),
        other => other,
    }
}

fn detect_command(bytes: &[u8]) -> Detection {
    let matched = Detection::Match(Inference {
        protocol: L7Protocol::Redis,
        role: Role::Client,
    });
    match bytes.first() {
        None => return Detection::NeedMore,
        Some(b'*') => {}
        Some(_) => return Detection::NoMatch,
    }
    let (count, next) = match resp::header(bytes, 0) {
        Header::Value(count, next) if count >= 1 => (count.unsigned_abs(), next),
        Header::Incomplete if !bytes.starts_with(b"*-") => return Detection::NeedMore,
        _ => return Detection::NoMatch,
    };
    match bytes.get(next) {
        None => return Detection::NeedMore,
        Some(b'$') => {}
        Some(_) => return Detection::NoMatch,
    }
    let (len, start) = match resp::header(bytes, next) {
        Header::Value(len, start) if (1..=commands::MAX_NAME as i64).contains(&len) => {
            (len.unsigned_abs() as usize, start)
        }
        Header::Incomplete if !bytes[next..].starts_with(b"$-") => return Detection::NeedMore,
        _ => return Detection::NoMatch,
    };
    let name = &bytes[start.min(bytes.len())..(start + len).min(bytes.len())];
    if name.len() < len {
        return if commands::is_name_prefix(name) {
            Detection::NeedMore
        } else {
            Detection::NoMatch
        };
    }
    let Some(arity) = commands::arity(name) else {
        return Detection::NoMatch;
    };
    match bytes.get(start + len..start + len + 2) {
        Some(b"\r\n") => {}
        None if bytes.len() == start + len => return Detection::NeedMore,
        None if bytes[start + len] == b'\r' => return Detection::NeedMore,
        _ => return Detection::NoMatch,
    }
    if !commands::arity_fits(arity, count) {
        return Detection::NoMatch;
    }
    // what was captured of the other arguments must be bulk strings too
    match command::parse(bytes) {
        Parsed::Done { .. } | Parsed::Partial { .. } => matched,
        Parsed::Empty { .. } | Parsed::Invalid => Detection::NoMatch,
    }
}

/// The session of a socket this module's `detect` matched.
pub(crate) fn new_session(role: Role, config: &ConversationConfig) -> Box<dyn ProtocolSession> {
    Box::new(FramedSession::new(RedisCodec::default(), role, config))
}

/// A decoded command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// The command name, uppercased.
    command: String,
    /// `request_resource`.
    resource: String,
    kind: CommandKind,
    /// No reply will come (`CLIENT REPLY OFF` or `SKIP` in effect).
    silent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommandKind {
    Plain,
    /// `(P|S)SUBSCRIBE` with this many channels: one confirmation each.
    Subscribe(Family, u64),
    /// `(P|S)UNSUBSCRIBE` with this many channels (0: all of them, count unknown).
    Unsubscribe(Family, u64),
    Monitor,
    Reset,
}

/// Which kind of pub/sub subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Channel,
    Pattern,
    Shard,
}

/// A decoded reply: what the row needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The error text of an error reply.
    error: Option<String>,
}

/// RESP2/RESP3 for [`FramedSession`]; the state tracks the connection modes that change
/// how replies pair with commands.
#[derive(Debug, Default)]
pub(crate) struct RedisCodec {
    /// Confirmations still to skip of a multi-channel (un)subscribe already answered.
    confirmations_left: u64,
    /// A RESP2 connection in subscribed mode, where arrays may be pushed messages.
    subscribed: bool,
    /// After `MONITOR`: `+<timestamp> ...` lines are the monitor stream.
    monitoring: bool,
    /// `CLIENT REPLY OFF` in effect.
    replies_off: bool,
    /// `CLIENT REPLY SKIP`: the next command gets no reply.
    skip_next_reply: bool,
}

impl RedisCodec {
    fn request(&mut self, args: Args) -> Request {
        let command = args.name.unwrap_or_default();
        let channels = args.elements.saturating_sub(1);
        let family = match command.as_str() {
            "SUBSCRIBE" | "UNSUBSCRIBE" => Some(Family::Channel),
            "PSUBSCRIBE" | "PUNSUBSCRIBE" => Some(Family::Pattern),
            "SSUBSCRIBE" | "SUNSUBSCRIBE" => Some(Family::Shard),
            _ => None,
        };
        let kind = match (command.as_str(), family) {
            (name, Some(family)) if name.contains("UNSUB") => {
                CommandKind::Unsubscribe(family, channels)
            }
            (_, Some(family)) => CommandKind::Subscribe(family, channels),
            ("MONITOR", _) => CommandKind::Monitor,
            ("RESET", _) => CommandKind::Reset,
            _ => CommandKind::Plain,
        };
        let words: Vec<&str> = args.words.iter().map(String::as_str).collect();
        let silent = match (command.as_str(), words.as_slice()) {
            ("CLIENT", ["REPLY", "OFF"]) => {
                self.replies_off = true;
                true
            }
            ("CLIENT", ["REPLY", "ON"]) => {
                self.replies_off = false;
                false
            }
            ("CLIENT", ["REPLY", "SKIP"]) => {
                self.skip_next_reply = true;
                true
            }
            _ => self.replies_off || std::mem::take(&mut self.skip_next_reply),
        };
        Request {
            command,
            resource: args.resource.text,
            kind,
            silent,
        }
    }

    /// Whether a pub/sub reply answers `pending` (`Some(true)`), is to be skipped
    /// (`Some(false)`), or is not a pub/sub reply (`None`).
    fn pubsub(&mut self, buf: &[u8], pending: Option<&Request>) -> Option<bool> {
        let event = pubsub_event(buf)?;
        let push = buf.first() == Some(&b'>');
        let expected = pending.and_then(|p| match p.kind {
            CommandKind::Subscribe(family, n) => Some((family, true, n)),
            CommandKind::Unsubscribe(family, n) => Some((family, false, n)),
            _ => None,
        });
        // a RESP2 array is pub/sub only where the connection can be in that mode
        if !push && !self.subscribed && self.confirmations_left == 0 && expected.is_none() {
            return None;
        }
        let Event::Confirmation {
            family,
            subscribe,
            count,
        } = event
        else {
            return Some(false);
        };
        if subscribe {
            self.subscribed = true;
        } else if count == Some(0) {
            self.subscribed = false;
        }
        if self.confirmations_left > 0 {
            self.confirmations_left -= 1;
            return Some(false);
        }
        match expected {
            Some((f, s, channels)) if f == family && s == subscribe => {
                self.confirmations_left = channels.saturating_sub(1);
                Some(true)
            }
            _ => Some(false),
        }
    }

    /// A reply answers `pending`: the connection modes it starts or ends.
    fn answered(&mut self, pending: Option<&Request>, reply: &Reply) {
        if reply.error.is_some() {
            return;
        }
        match pending.map(|p| p.kind) {
            Some(CommandKind::Monitor) => self.monitoring = true,
            Some(CommandKind::Reset) => *self = RedisCodec::default(),
            _ => {}
        }
    }
}

impl Codec for RedisCodec {
    type Request = Request;
    type Response = Reply;

    fn protocol(&self) -> L7Protocol {
        L7Protocol::Redis
    }

    fn decode_request(&mut self, buf: &[u8]) -> Decode<Request> {
        let (len, args) = match command::parse(buf) {
            Parsed::Invalid => return Decode::Invalid,
            Parsed::Empty { len } => {
                return Decode::Skip {
                    len: WireLen::Exact(len as u64),
                };
            }
            Parsed::Done { len, args } => (WireLen::Exact(len as u64), args),
            Parsed::Partial {
                args,
                total,
                resource_final,
            } => {
                if args.name.is_none() {
                    return if buf.len() >= DECIDE_BYTES {
                        Decode::Invalid
                    } else {
                        Decode::NeedMore
                    };
                }
                let decided = buf.len() >= DECIDE_BYTES;
                match total {
                    Some(total) if resource_final || decided => (WireLen::Exact(total), args),
                    None if decided => (WireLen::ToChunkEnd, args),
                    _ => return Decode::NeedMore,
                }
            }
        };
        Decode::Message {
            len,
            msg: self.request(args),
        }
    }

    fn decode_response(&mut self, buf: &[u8], pending: Option<&Request>) -> Decode<Reply> {
        let decided = buf.len() >= DECIDE_BYTES;
        if self.monitoring && buf.first() == Some(&b'+') {
            if buf.get(1).is_some_and(u8::is_ascii_digit) {
                let len = match resp::scan(buf) {
                    Scan::Done(len) => WireLen::Exact(len as u64),
                    Scan::Partial { .. } if decided => WireLen::ToChunkEnd,
                    Scan::Partial { .. } => return Decode::NeedMore,
                    Scan::Invalid => return Decode::Invalid,
                };
                return Decode::Skip { len };
            }
            if buf.len() < 2 {
                return Decode::NeedMore;
            }
        }
        let head = reply_head(buf);
        let len = match resp::scan(buf) {
            Scan::Invalid => return Decode::Invalid,
            Scan::Done(len) => WireLen::Exact(len as u64),
            Scan::Partial { .. } if !head.complete => {
                if !decided {
                    return Decode::NeedMore;
                }
                WireLen::ToChunkEnd
            }
            Scan::Partial { total: Some(total) } => WireLen::Exact(total),
            Scan::Partial { total: None } if decided => WireLen::ToChunkEnd,
            Scan::Partial { total: None } => return Decode::NeedMore,
        };
        match self.pubsub(buf, pending) {
            Some(false) => return Decode::Skip { len },
            Some(true) => {
                return Decode::Message {
                    len,
                    msg: Reply { error: None },
                };
            }
            None if buf.first() == Some(&b'>') => return Decode::Skip { len },
            None => {}
        }
        let reply = Reply { error: head.error };
        self.answered(pending, &reply);
        Decode::Message { len, msg: reply }
    }

    fn expects_response(&self, request: &Request) -> bool {
        !request.silent
    }

    fn fill(&self, request: &Request, reply: Option<&Reply>, record: &mut L7Record) {
        record.request_type.clone_from(&request.command);
        record.request_resource.clone_from(&request.resource);
        if let Some(reply) = reply {
            match &reply.error {
                Some(error) => {
                    record.response_status = ResponseStatus::ServerError;
                    record.response_exception.clone_from(error);
                }
                None => record.response_status = ResponseStatus::Ok,
            }
        }
    }
}

/// What the first line of a reply says.
struct Head {
    /// The fields of the row are known: the type line (and a blob error's text, up to
    /// [`EXCEPTION_MAX`]) is in.
    complete: bool,
    /// The error text of `-` and `!` replies.
    error: Option<String>,
}

fn reply_head(buf: &[u8]) -> Head {
    let exception = |bytes: &[u8], cut: bool| {
        let (text, more) = text_prefix(bytes, EXCEPTION_MAX);
        let mut text = text.into_owned();
        if more || cut {
            text.push_str("...");
        }
        Some(text)
    };
    match buf.first() {
        Some(b'-') => match resp::line(buf, 1, MAX_ERROR_LINE) {
            Line::End(end) => Head {
                complete: true,
                error: exception(&buf[1..end], false),
            },
            Line::Incomplete | Line::Invalid => Head {
                complete: false,
                error: exception(buf.get(1..).unwrap_or_default(), true),
            },
        },
        Some(b'!') => match resp::header(buf, 0) {
            Header::Value(len, start) => {
                let len = len.max(0).unsigned_abs();
                let end = (start as u64 + len).min(buf.len() as u64) as usize;
                let text = &buf[start.min(end)..end];
                let whole = text.len() as u64 == len;
                Head {
                    complete: whole || text.len() >= EXCEPTION_MAX,
                    error: exception(text, !whole),
                }
            }
            Header::Incomplete | Header::Invalid => Head {
                complete: false,
                error: Some(String::new()),
            },
        },
        Some(b'+' | b':' | b',' | b'(' | b'#' | b'_') => Head {
            complete: matches!(resp::line(buf, 1, MAX_ERROR_LINE), Line::End(_)),
            error: None,
        },
        _ => Head {
            complete: matches!(resp::header(buf, 0), Header::Value(..)),
            error: None,
        },
    }
}

/// A pub/sub reply or push.
enum Event {
    /// A published message (`message`, `pmessage`, `smessage`).
    Message,
    /// The confirmation of one channel of a (un)subscribe, with the subscription count.
    Confirmation {
        family: Family,
        subscribe: bool,
        count: Option<i64>,
    },
}

/// Reads an array or push whose first element names a pub/sub event.
fn pubsub_event(buf: &[u8]) -> Option<Event> {
    if !matches!(buf.first(), Some(b'*' | b'>')) {
        return None;
    }
    let Header::Value(elements @ 1.., first) = resp::header(buf, 0) else {
        return None;
    };
    if buf.get(first) != Some(&b'$') {
        return None;
    }
    let Header::Value(len @ 0..=16, start) = resp::header(buf, first) else {
        return None;
    };
    let end = start + len.unsigned_abs() as usize;
    let word = buf.get(start..end)?;
    let (family, subscribe) = match word {
        b"message" | b"pmessage" | b"smessage" => return Some(Event::Message),
        b"subscribe" => (Family::Channel, true),
        b"psubscribe" => (Family::Pattern, true),
        b"ssubscribe" => (Family::Shard, true),
        b"unsubscribe" => (Family::Channel, false),
        b"punsubscribe" => (Family::Pattern, false),
        b"sunsubscribe" => (Family::Shard, false),
        _ => return None,
    };
    // [kind, channel, count]: the count is the third element, an integer
    let count = (elements == 3)
        .then(|| {
            let channel = end.checked_add(2)?;
            let Scan::Done(skip) = resp::scan(buf.get(channel..)?) else {
                return None;
            };
            let at = channel + skip;
            let Line::End(stop) = resp::line(buf, at + 1, 20) else {
                return None;
            };
            match buf.get(at) {
                Some(b':') => resp::parse_int(&buf[at + 1..stop]),
                _ => None,
            }
        })
        .flatten();
    Some(Event::Confirmation {
        family,
        subscribe,
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framed::CodecWire;

    fn cmd(args: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        out
    }

    type Wire = CodecWire<RedisCodec>;

    impl CodecWire<RedisCodec> {
        fn rows(&self) -> Vec<(String, ResponseStatus, String)> {
            self.out
                .iter()
                .map(|r| {
                    (
                        r.request_resource.clone(),
                        r.response_status,
                        r.response_exception.clone(),
                    )
                })
                .collect()
        }
    }

    fn row(
        resource: &str,
        status: ResponseStatus,
        exception: &str,
    ) -> (String, ResponseStatus, String) {
        (resource.into(), status, exception.into())
    }

    use ResponseStatus::{Ok, ServerError, Unknown};

    #[test]
    fn pipelined_commands_pair_in_order() {
        let mut w = Wire::new(RedisCodec::default(), Role::Client);
        let mut pipeline = cmd(&["SET", "a", "1"]);
        pipeline.extend(cmd(&["INCR", "a"]));
        pipeline.extend(cmd(&["LPUSH", "a", "x"]));
        pipeline.extend(cmd(&["GET", "nope"]));
        w.request(&pipeline);
        w.reply(
            b"+OK\r\n:2\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n$-1\r\n",
        );
        assert_eq!(
            w.rows(),
            vec![
                row("SET a 1", Ok, ""),
                row("INCR a", Ok, ""),
                row(
                    "LPUSH a x",
                    ServerError,
                    "WRONGTYPE Operation against a key holding the wrong kind of value"
                ),
                row("GET nope", Ok, ""),
            ]
        );
        assert_eq!(w.out[2].request_type, "LPUSH");
        assert_eq!(w.out[0].request_length, 27);
        assert_eq!(w.out[2].response_length, Some(68));
        assert_eq!(w.stats.parse_errors + w.stats.resyncs, 0);
    }

    #[test]
    fn resp3_types_and_pushes() {
        let mut w = Wire::new(RedisCodec::default(), Role::Client);
        w.request(&cmd(&["HELLO", "3"]));
        w.reply(b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n");
        w.request(&cmd(&["GET", "k"]));
        // an invalidation push arrives before the reply: skipped
        w.reply(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n_\r\n");
        w.request(&cmd(&["ZSCORE", "z", "m"]));
        w.reply(b",1.5\r\n");
        w.request(&cmd(&["BOGUS"]));
        w.reply(b"!21\r\nSYNTAX invalid syntax\r\n");
        assert_eq!(
            w.rows(),
            vec![
                row("HELLO 3", Ok, ""),
                row("GET k", Ok, ""),
                row("ZSCORE z m", Ok, ""),
                row("BOGUS", ServerError, "SYNTAX invalid syntax"),
            ]
        );
        assert_eq!(w.stats.unmatched_responses, 0);
    }

    #[test]
    fn pubsub_confirmations_and_messages() {
        let mut w = Wire::new(RedisCodec::default(), Role::Client);
        w.request(&cmd(&["SUBSCRIBE", "a", "b"]));
        w.request(&cmd(&["PSUBSCRIBE", "p*"]));
        w.reply(
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
        );
        w.reply(b"*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:3\r\n");
        w.reply(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n");
        w.reply(b"*4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$2\r\npq\r\n$2\r\nhi\r\n");
        w.request(&cmd(&["PING"]));
        w.reply(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
        w.request(&cmd(&["UNSUBSCRIBE"]));
        w.reply(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:2\r\n");
        w.reply(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n");
        w.request(&cmd(&["PUNSUBSCRIBE"]));
        w.reply(b"*3\r\n$12\r\npunsubscribe\r\n$2\r\np*\r\n:0\r\n");
        // out of subscribed mode, an array starting with "message" is a plain reply
        w.request(&cmd(&["LRANGE", "l", "0", "-1"]));
        w.reply(b"*1\r\n$7\r\nmessage\r\n");
        assert_eq!(
            w.rows(),
            vec![
                row("SUBSCRIBE a b", Ok, ""),
                row("PSUBSCRIBE p*", Ok, ""),
                row("PING", Ok, ""),
                row("UNSUBSCRIBE", Ok, ""),
                row("PUNSUBSCRIBE", Ok, ""),
                row("LRANGE l 0 -1", Ok, ""),
            ]
        );
        assert_eq!(w.stats.unmatched_responses, 0);
    }

    #[test]
    fn monitor_and_client_reply() {
        let mut w = Wire::new(RedisCodec::default(), Role::Client);
        w.request(&cmd(&["CLIENT", "REPLY", "OFF"]));
        w.request(&cmd(&["SET", "a", "1"]));
        w.request(&cmd(&["CLIENT", "REPLY", "ON"]));
        w.reply(b"+OK\r\n");
        w.request(&cmd(&["CLIENT", "REPLY", "SKIP"]));
        w.request(&cmd(&["SET", "b", "2"]));
        w.request(&cmd(&["GET", "b"]));
        w.reply(b"$1\r\n2\r\n");
        w.request(&cmd(&["MONITOR"]));
        w.reply(b"+OK\r\n");
        w.reply(b"+1700000000.123456 [0 127.0.0.1:5000] \"get\" \"b\"\r\n");
        w.request(&cmd(&["RESET"]));
        w.reply(b"+1700000000.223456 [0 127.0.0.1:5000] \"set\" \"b\" \"3\"\r\n+RESET\r\n");
        assert_eq!(
            w.rows(),
            vec![
                row("CLIENT REPLY OFF", Unknown, ""),
                row("SET a 1", Unknown, ""),
                row("CLIENT REPLY ON", Ok, ""),
                row("CLIENT REPLY SKIP", Unknown, ""),
                row("SET b 2", Unknown, ""),
                row("GET b", Ok, ""),
                row("MONITOR", Ok, ""),
                row("RESET", Ok, ""),
            ]
        );
        assert_eq!(w.stats.unmatched_responses, 0);
    }

    #[test]
    fn big_values_through_the_capture_cap() {
        let mut w = Wire::new(RedisCodec::default(), Role::Client);
        let value = "v".repeat(5000);
        w.send(Direction::Egress, &cmd(&["SET", "big", &value]), 1024);
        w.reply(b"+OK\r\n");
        w.request(&cmd(&["GET", "big"]));
        w.send(
            Direction::Ingress,
            format!("$5000\r\n{value}\r\n").as_bytes(),
            1024,
        );
        // an array reply past the cap ends with its syscall
        w.request(&cmd(&["LRANGE", "l", "0", "-1"]));
        let mut array = b"*100\r\n".to_vec();
        for i in 0..100 {
            array.extend_from_slice(format!("$10\r\nelement{i:03}\r\n").as_bytes());
        }
        w.send(Direction::Ingress, &array, 1024);
        w.request(&cmd(&["PING"]));
        w.reply(b"+PONG\r\n");
        assert_eq!(w.out.len(), 4);
        assert_eq!(w.out[0].request_length, 5031);
        assert_eq!(
            w.out[0].request_resource,
            format!("SET big {}...", "v".repeat(64))
        );
        assert_eq!(w.out[1].response_length, Some(5009));
        assert_eq!(w.out[2].response_length, Some(array.len() as u64));
        assert_eq!(w.out[2].response_status, Ok);
        assert_eq!(w.out[3].request_type, "PING");
        assert_eq!(w.stats.parse_errors + w.stats.resyncs, 0);
    }

    #[test]
    fn split_commands_wait_for_their_rest() {
        let mut pipeline = cmd(&["SET", "key:1", "abc"]);
        pipeline.extend(cmd(&["LRANGE", "l", "0", "1"]));
        let replies = b"+OK\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        let mut whole = Wire::new(RedisCodec::default(), Role::Client);
        whole.request(&pipeline);
        whole.reply(replies);
        for cut in 1..pipeline.len() {
            for reply_cut in [1, 7, 12, replies.len() - 1] {
                let mut w = Wire::new(RedisCodec::default(), Role::Client);
                w.request(&pipeline[..cut]);
                w.request(&pipeline[cut..]);
                w.reply(&replies[..reply_cut]);
                w.reply(&replies[reply_cut..]);
                assert_eq!(w.rows(), whole.rows(), "cut {cut} {reply_cut}");
                let lengths = |w: &Wire| {
                    w.out
                        .iter()
                        .map(|r| (r.request_length, r.response_length))
                        .collect::<Vec<_>>()
                };
                assert_eq!(lengths(&w), lengths(&whole));
            }
        }
    }

    #[test]
    fn detection() {
        let client = |b: &[u8]| detect(b, Direction::Egress);
        let redis = Detection::Match(Inference {
            protocol: L7Protocol::Redis,
            role: Role::Client,
        });
        assert_eq!(client(&cmd(&["SET", "k", "v"])), redis);
        assert_eq!(client(&cmd(&["ping"])), redis);
        assert_eq!(client(&cmd(&["CONFIG", "GET", "save"])), redis);
        assert_eq!(
            detect(&cmd(&["GET", "k"]), Direction::Ingress),
            Detection::Match(Inference {
                protocol: L7Protocol::Redis,
                role: Role::Server,
            })
        );
        // a big value cut by the capture still names the command
        let mut big = cmd(&["SET", "k", &"x".repeat(4000)]);
        big.truncate(1024);
        assert_eq!(client(&big), redis);
        let full = cmd(&["GET", "key"]);
        for cut in 0..full.len() {
            let expected = if cut >= 13 {
                redis
            } else {
                Detection::NeedMore
            };
            assert_eq!(client(&full[..cut]), expected, "cut {cut}");
        }
        let no: [&[u8]; 12] = [
            b"+OK\r\n",
            b"$5\r\nhello\r\n",
            b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n", // a CONFIG GET reply: SAVE takes no argument
            b"*1\r\n$3\r\nFOO\r\n",
            b"*3\r\n$3\r\nGET\r\n$1\r\nk\r\n$1\r\nv\r\n", // GET takes one argument
            b"*2\r\n$3\r\nGET\r\n:1\r\n",
            b"*0\r\n",
            b"*-1\r\n",
            b"* 3\r\n",
            b"PING\r\n",
            b"get k\r\n",
            b"*2\r\n$3\r\nGETX",
        ];
        for bytes in no {
            assert_eq!(client(bytes), Detection::NoMatch, "{bytes:?}");
        }
    }
}
