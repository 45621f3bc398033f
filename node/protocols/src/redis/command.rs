//! Client commands: RESP arrays of bulk strings, or inline lines (`PING\r\n`), read into the
//! fields of a row as far as they were captured.

use crate::text::without_cut_char;
use std::borrow::Cow;

use super::commands;
use super::resp::{self, Header, MAX_BLOB};

/// Longest command name accepted in a session (module commands such as `FT.AGGREGATE`
/// included); detection only knows Redis' own, see [`commands`].
const MAX_NAME: u64 = 128;
/// Longest inline command line (Redis' `PROTO_INLINE_MAX_SIZE`).
const MAX_INLINE: usize = 64 * 1024;
/// Most array elements in a command (Redis refuses more than `INT_MAX`).
const MAX_ELEMENTS: i64 = i32::MAX as i64;
/// Bytes of one argument shown in `request_resource` before `...`.
pub(super) const ARG_MAX: usize = 64;
/// Bytes of `request_resource` at most (before a final `...`).
pub(super) const RESOURCE_MAX: usize = 256;

/// What the start of a buffer holds in the request direction.
#[derive(Debug)]
pub(super) enum Parsed {
    /// A complete command of `len` bytes.
    Done { len: usize, args: Args },
    /// Something Redis reads and ignores (`*0`, `*-1`, an empty inline line).
    Empty { len: usize },
    /// The buffer ends inside a command. `total` is its length when only the payload of its
    /// last argument is missing; `resource_final` tells that the missing bytes would not
    /// change `args.resource`.
    Partial {
        args: Args,
        total: Option<u64>,
        resource_final: bool,
    },
    /// Not a command.
    Invalid,
}

/// The captured arguments of a command.
#[derive(Debug, Default)]
pub(super) struct Args {
    /// The command name, uppercased, once complete.
    pub(super) name: Option<String>,
    /// Array elements, the name included (from the array header; counted for inline).
    pub(super) elements: u64,
    /// The first two arguments after the name, uppercased and cut to 16 bytes, for the
    /// commands whose behaviour depends on them (`CLIENT REPLY OFF`).
    pub(super) words: Vec<String>,
    /// `request_resource` so far.
    pub(super) resource: Resource,
}

impl Args {
    fn push(&mut self, arg: &[u8], complete: bool) -> bool {
        let index = self.resource.index;
        if index == 0 && complete {
            self.name = Some(String::from_utf8_lossy(arg).to_ascii_uppercase());
        } else if (1..=2).contains(&index) && complete {
            let word = &arg[..arg.len().min(16)];
            self.words
                .push(String::from_utf8_lossy(word).to_ascii_uppercase());
        }
        let command = self.name.clone().unwrap_or_default();
        self.resource.push(&command, arg, complete)
    }
}

/// Parses the command at the start of `buf`.
pub(super) fn parse(buf: &[u8]) -> Parsed {
    match buf.first() {
        None => Parsed::Partial {
            args: Args::default(),
            total: None,
            resource_final: false,
        },
        Some(b'*') => multibulk(buf),
        Some(_) => inline(buf),
    }
}

fn partial(args: Args) -> Parsed {
    Parsed::Partial {
        args,
        total: None,
        resource_final: false,
    }
}

fn multibulk(buf: &[u8]) -> Parsed {
    let (count, mut next) = match resp::header(buf, 0) {
        Header::Value(count, next) if count <= 0 => return Parsed::Empty { len: next },
        Header::Value(count, next) if count <= MAX_ELEMENTS => (count.unsigned_abs(), next),
        Header::Value(..) | Header::Invalid => return Parsed::Invalid,
        Header::Incomplete => return partial(Args::default()),
    };
    let mut args = Args {
        elements: count,
        ..Args::default()
    };
    for index in 0..count {
        match buf.get(next) {
            None => return partial(args),
            Some(b'$') => {}
            Some(_) => return Parsed::Invalid,
        }
        let (len, start) = match resp::header(buf, next) {
            Header::Value(len, start) if len >= 0 && len.unsigned_abs() <= MAX_BLOB => {
                (len.unsigned_abs(), start)
            }
            Header::Value(..) | Header::Invalid => return Parsed::Invalid,
            Header::Incomplete => return partial(args),
        };
        if index == 0 && (len == 0 || len > MAX_NAME) {
            return Parsed::Invalid;
        }
        let end = start as u64 + len + 2;
        if end <= buf.len() as u64 {
            let end = end as usize;
            if &buf[end - 2..end] != b"\r\n" {
                return Parsed::Invalid;
            }
            args.push(&buf[start..end - 2], true);
            next = end;
            continue;
        }
        // the buffer ends inside this argument
        let payload_end = (start as u64 + len).min(buf.len() as u64) as usize;
        if payload_end < buf.len() && buf[payload_end] != b'\r' {
            return Parsed::Invalid;
        }
        let captured = &buf[start.min(buf.len())..payload_end];
        if index == 0 {
            return partial(args);
        }
        let shown_in_full = args.push(captured, captured.len() as u64 == len);
        let last = index + 1 == count;
        let resource_final = last && (shown_in_full || args.resource.is_saturated());
        return Parsed::Partial {
            args,
            total: last.then_some(end),
            resource_final,
        };
    }
    Parsed::Done { len: next, args }
}

fn inline(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(MAX_INLINE)];
    let newline = window.iter().position(|&b| b == b'\n');
    if newline.is_none() && buf.len() > MAX_INLINE {
        return Parsed::Invalid;
    }
    let mut line = &window[..newline.unwrap_or(window.len())];
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    // inline commands are text typed at a terminal
    if line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Parsed::Invalid;
    }
    let mut tokens = line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|t| !t.is_empty())
        .peekable();
    let Some(name) = tokens.peek().copied() else {
        return match newline {
            Some(at) => Parsed::Empty { len: at + 1 },
            None => partial(Args::default()),
        };
    };
    let name_complete = newline.is_some() || line.len() > name.len() + leading_blanks(line);
    if name_complete {
        if commands::arity(name).is_none() {
            return Parsed::Invalid;
        }
    } else if !commands::is_name_prefix(name) {
        return Parsed::Invalid;
    } else {
        return partial(Args::default());
    }
    let mut args = Args::default();
    let count = line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|t| !t.is_empty())
        .count();
    args.elements = count as u64;
    let last = count.saturating_sub(1);
    for (index, token) in tokens.enumerate() {
        // without the newline the last token may continue
        let complete = newline.is_some() || index < last;
        args.push(token, complete);
    }
    match newline {
        Some(at) => Parsed::Done { len: at + 1, args },
        None => partial(args),
    }
}

fn leading_blanks(line: &[u8]) -> usize {
    line.iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()
}

/// `request_resource` being built: the arguments as sent, joined by spaces (empty ones left
/// out, as DeepFlow does), each cut to [`ARG_MAX`] bytes and the whole to
/// [`RESOURCE_MAX`], credentials replaced by `?`.
#[derive(Debug, Default)]
pub(super) struct Resource {
    pub(super) text: String,
    /// Nothing more can be appended.
    saturated: bool,
    /// Arguments seen, the name included.
    index: usize,
    /// What the next arguments are, after a keyword that introduces a secret.
    upcoming: Upcoming,
    /// The subcommand, for `CONFIG SET` and `ACL SETUSER`.
    subcommand: String,
    /// The previous argument, uppercased (cut), for `CONFIG SET name value` pairs.
    previous: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Upcoming {
    #[default]
    Plain,
    /// The next argument is a secret.
    Secret,
    /// The next argument is shown, the one after it is a secret (`AUTH2 user password`).
    ThenSecret,
    /// The next argument is a secret and nothing after it is shown (`HELLO 3 AUTH user
    /// pass SETNAME x`: the password's position is not fixed enough to keep the rest).
    SecretThenNothing,
    /// Nothing more is shown.
    Nothing,
}

/// What becomes of one argument in `request_resource`.
enum Shown {
    Text,
    Secret,
    Nothing,
}

/// `CONFIG SET` parameters whose values are credentials.
const SECRET_CONFIG: [&str; 4] = [
    "REQUIREPASS",
    "MASTERAUTH",
    "TLS-KEY-FILE-PASS",
    "TLS-CLIENT-KEY-FILE-PASS",
];

impl Resource {
    /// Appends one argument of `command`; `complete` is false for an argument cut by the end
    /// of the captured bytes. Returns whether the argument's bytes shown would be the same had
    /// it been complete (it is hidden, or longer than [`ARG_MAX`], or complete).
    fn push(&mut self, command: &str, arg: &[u8], complete: bool) -> bool {
        let index = self.index;
        self.index += 1;
        let shown = self.classify(command, index, arg);
        let upper = String::from_utf8_lossy(&arg[..arg.len().min(32)]).to_ascii_uppercase();
        if index == 1 {
            self.subcommand.clone_from(&upper);
        }
        self.previous = upper;
        match shown {
            Shown::Nothing => true,
            Shown::Secret => {
                self.append("?", false);
                true
            }
            Shown::Text => {
                let (text, cut) = text_prefix(arg, ARG_MAX);
                self.append(&text, cut || !complete);
                complete || arg.len() >= ARG_MAX
            }
        }
    }

    fn classify(&mut self, command: &str, index: usize, arg: &[u8]) -> Shown {
        if index == 0 {
            return Shown::Text;
        }
        match std::mem::take(&mut self.upcoming) {
            Upcoming::Nothing => {
                self.upcoming = Upcoming::Nothing;
                return Shown::Nothing;
            }
            Upcoming::SecretThenNothing => {
                self.upcoming = Upcoming::Nothing;
                return Shown::Secret;
            }
            Upcoming::Secret => return Shown::Secret,
            Upcoming::ThenSecret => {
                self.upcoming = Upcoming::Secret;
                return Shown::Text;
            }
            Upcoming::Plain => {}
        }
        let is = |word: &str| arg.eq_ignore_ascii_case(word.as_bytes());
        match command {
            "AUTH" => {
                // AUTH [username] password: one `?` for all
                self.upcoming = Upcoming::Nothing;
                Shown::Secret
            }
            "HELLO" if is("AUTH") => {
                self.upcoming = Upcoming::SecretThenNothing;
                Shown::Text
            }
            "MIGRATE" if is("AUTH") => {
                self.upcoming = Upcoming::Secret;
                Shown::Text
            }
            "MIGRATE" if is("AUTH2") => {
                self.upcoming = Upcoming::ThenSecret;
                Shown::Text
            }
            "CONFIG"
                if self.subcommand == "SET"
                    && index >= 3
                    && index % 2 == 1
                    && SECRET_CONFIG.contains(&self.previous.as_str()) =>
            {
                Shown::Secret
            }
            "ACL"
                if self.subcommand == "SETUSER"
                    && index >= 3
                    && matches!(arg.first(), Some(b'>' | b'<' | b'#' | b'!')) =>
            {
                Shown::Secret
            }
            _ => Shown::Text,
        }
    }

    fn append(&mut self, text: &str, cut: bool) {
        if self.saturated || text.is_empty() {
            return;
        }
        let separator = usize::from(!self.text.is_empty());
        let room = RESOURCE_MAX.saturating_sub(self.text.len());
        if separator + text.len() <= room {
            if separator == 1 {
                self.text.push(' ');
            }
            self.text.push_str(text);
            if cut {
                self.text.push_str("...");
            }
            return;
        }
        // as much as fits, then `...` (once)
        self.saturated = true;
        if self.text.ends_with("...") {
            return;
        }
        if room > separator {
            if separator == 1 {
                self.text.push(' ');
            }
            let (head, _) = text_prefix(text.as_bytes(), room - separator);
            self.text.push_str(&head);
        }
        self.text.push_str("...");
    }

    /// Whether later arguments can no longer change the text.
    pub(super) fn is_saturated(&self) -> bool {
        self.saturated || self.upcoming == Upcoming::Nothing
    }
}

/// At most `max` bytes of `bytes` as text, cut at a character boundary when the bytes are
/// UTF-8 (invalid sequences become U+FFFD); and whether anything was left out.
pub(super) fn text_prefix(bytes: &[u8], max: usize) -> (Cow<'_, str>, bool) {
    let mut head = &bytes[..bytes.len().min(max)];
    if head.len() < bytes.len() {
        head = without_cut_char(head);
    }
    let text = String::from_utf8_lossy(head);
    if text.len() <= max {
        return (text, head.len() < bytes.len());
    }
    // each invalid byte became a 3-byte U+FFFD: keep the text within `max` bytes too
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (Cow::Owned(text[..end].to_owned()), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn done(buf: &[u8]) -> (usize, Args) {
        match parse(buf) {
            Parsed::Done { len, args } => (len, args),
            other => panic!("{buf:?}: {other:?}"),
        }
    }

    fn resource(args: &[&[u8]]) -> String {
        done(&encode(args)).1.resource.text
    }

    #[test]
    fn commands_and_their_resources() {
        let set = encode(&[b"set", b"key:1", b"hello"]);
        let (len, args) = done(&set);
        assert_eq!(len, set.len());
        assert_eq!(args.name.as_deref(), Some("SET"));
        assert_eq!(args.elements, 3);
        assert_eq!(args.resource.text, "set key:1 hello");
        assert_eq!(resource(&[b"GET", b""]), "GET");
        let long = [b'v'; 100];
        assert_eq!(
            resource(&[b"SET", b"k", &long, b"EX", b"60"]),
            format!("SET k {}... EX 60", "v".repeat(ARG_MAX))
        );
        let many: Vec<&[u8]> = std::iter::once(&b"MGET"[..])
            .chain(std::iter::repeat_n(&b"key:0123456789"[..], 40))
            .collect();
        let text = resource(&many);
        assert!(!text.ends_with("....."), "{text}");
        // a cut argument that fills the resource exactly, then more: one `...`
        let (a63, a59, snow) = ("a".repeat(63), "a".repeat(59), "❄".repeat(30));
        let args = [&a63, &a63, &a59, &snow, "c"].map(str::as_bytes);
        let text = resource(&[&b"MGET"[..]].into_iter().chain(args).collect::<Vec<_>>());
        assert_eq!(
            text,
            format!("MGET {a63} {a63} {a59} {}...", "❄".repeat(21))
        );
        assert_eq!(text.len(), RESOURCE_MAX + 3);
        // one that does not fit: as much as fits
        let text = resource(&[
            b"MGET",
            a63.as_bytes(),
            a63.as_bytes(),
            a63.as_bytes(),
            a63.as_bytes(),
        ]);
        assert_eq!(
            text,
            format!("MGET {a63} {a63} {a63} {}...", "a".repeat(59))
        );
        // invalid UTF-8 becomes U+FFFD, and the text stays within its bound
        let (text, cut) = text_prefix(&[0xff; 100], ARG_MAX);
        assert!(cut && text.len() <= ARG_MAX && text.chars().all(|c| c == '\u{fffd}'));
        let text = resource(&[b"SET", b"k", &[0xff; 100], &[0xfe; 100], &[0x80; 300]]);
        assert!(text.len() <= RESOURCE_MAX + 3, "{}", text.len());
        // UTF-8 is cut between characters
        let snow = "❄".repeat(30);
        let text = resource(&[b"SET", b"k", snow.as_bytes()]);
        assert_eq!(text, format!("SET k {}...", "❄".repeat(21)));
    }

    #[test]
    fn credentials_are_hidden() {
        assert_eq!(resource(&[b"AUTH", b"secret"]), "AUTH ?");
        assert_eq!(resource(&[b"auth", b"user", b"secret"]), "auth ?");
        assert_eq!(
            resource(&[b"HELLO", b"3", b"AUTH", b"user", b"pw", b"SETNAME", b"x"]),
            "HELLO 3 AUTH ?"
        );
        assert_eq!(
            resource(&[
                b"CONFIG",
                b"SET",
                b"requirepass",
                b"pw",
                b"maxmemory",
                b"1mb"
            ]),
            "CONFIG SET requirepass ? maxmemory 1mb"
        );
        assert_eq!(
            resource(&[
                b"MIGRATE", b"h", b"6379", b"", b"0", b"5000", b"AUTH2", b"u", b"pw"
            ]),
            "MIGRATE h 6379 0 5000 AUTH2 u ?"
        );
        assert_eq!(
            resource(&[b"ACL", b"SETUSER", b"alice", b"on", b">pw", b"~*"]),
            "ACL SETUSER alice on ? ~*"
        );
    }

    #[test]
    fn partial_commands() {
        let get = encode(&[b"GET", b"key"]);
        for cut in 0..get.len() {
            match parse(&get[..cut]) {
                Parsed::Partial { args, total, .. } => {
                    let name_seen = cut >= 13;
                    assert_eq!(args.name.is_some(), name_seen, "cut {cut}");
                    // only the last argument's payload (or terminator) missing
                    let known = cut >= 17;
                    assert_eq!(total, known.then_some(get.len() as u64), "cut {cut}");
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        // a long last argument: the resource is final once ARG_MAX bytes are in
        let mut set = encode(&[b"SET", b"k", &[b'x'; 5000]]);
        set.truncate(900);
        match parse(&set) {
            Parsed::Partial {
                args,
                total,
                resource_final,
            } => {
                assert_eq!(total, Some(27 + 5000 + 2));
                assert!(resource_final);
                assert_eq!(
                    args.resource.text,
                    format!("SET k {}...", "x".repeat(ARG_MAX))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_and_invalid() {
        assert!(matches!(parse(b"*0\r\n"), Parsed::Empty { len: 4 }));
        assert!(matches!(parse(b"*-1\r\n"), Parsed::Empty { len: 5 }));
        assert!(matches!(parse(b"\r\n"), Parsed::Empty { len: 2 }));
        for bad in [
            &b"*1\r\n:1\r\n"[..],
            b"*1\r\n$-1\r\n",
            b"*1\r\n$0\r\n\r\n",
            b"*1\r\n$3\r\nGETX\r\n",
            b"*2\r\n$3\r\nGET\r\n$1\r\nkX",
            b"*x\r\n",
            b"*3000000000\r\n",
            b"NOSUCHCOMMAND a\r\n",
            b"GET a\x00\r\n",
            b"xyz",
        ] {
            assert!(matches!(parse(bad), Parsed::Invalid), "{bad:?}");
        }
        let name = vec![b'A'; 200];
        assert!(matches!(parse(&encode(&[&name])), Parsed::Invalid));
    }

    #[test]
    fn inline_commands() {
        let (len, args) = done(b"PING\r\n");
        assert_eq!((len, args.name.as_deref()), (6, Some("PING")));
        let (len, args) = done(b"  set  a   b\n+more");
        assert_eq!(len, 13);
        assert_eq!(args.name.as_deref(), Some("SET"));
        assert_eq!(args.elements, 3);
        assert_eq!(args.resource.text, "set a b");
        assert!(matches!(parse(b"PI"), Parsed::Partial { .. }));
        match parse(b"SET a bc") {
            Parsed::Partial { args, total, .. } => {
                assert_eq!(total, None);
                assert_eq!(args.resource.text, "SET a bc...");
            }
            other => panic!("{other:?}"),
        }
    }
}
