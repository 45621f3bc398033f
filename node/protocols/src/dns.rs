//! DNS over UDP (one message per datagram) and over TCP (each message behind a 2-byte
//! length, RFC 1035 §4.2.2).
//!
//! # Sessions
//!
//! A socket without TCP sequence numbers is UDP: every chunk is one datagram, so a message
//! is the whole chunk (`WireLen::ToChunkEnd`) and a datagram that is not a message is
//! dropped on its own. A TCP socket is framed by the length prefix. The session of a DNS
//! socket holds one [`FramedSession`] of each kind and hands each chunk to the one its
//! transport calls for (`tcp_seq` is `None` exactly for non-TCP sockets).
//!
//! Requests and responses are paired by key, not by order: the DNS id together with the
//! question (name, type and class), which every response copies. An unconnected UDP socket
//! may query many servers, and a client may reuse an id with different servers: the
//! question tells those exchanges apart. Responses without a question (some `FORMERR`s)
//! therefore find no request; the request is reported when it times out.
//!
//! # Detection
//!
//! Only a chunk that starts with a well-formed message is DNS, either bare (UDP) or behind
//! its length (TCP):
//!
//! - opcode QUERY, the reserved Z bit clear, exactly one question whose name has only
//!   printable-ASCII labels and no compression pointer, a QTYPE other than 0, a QCLASS of
//!   IN, CH, HS, NONE or ANY (with the mDNS unicast bit allowed);
//! - a query also has AA, TC and RCODE clear, no answer or authority records and at most
//!   two additional ones (OPT, TSIG); a response has an RCODE of the header range 0–10;
//! - every record after the question parses (names, pointers, rdata lengths) and the
//!   records end exactly where the datagram (or the TCP length) does; only a capture that
//!   stops inside a record may end early.
//!
//! A TCP length alone (or half of one), or followed by up to 3 bytes when it is at most
//! 4096, or by a header prefix that passes the checks it can, or by a whole header and part
//! of the question, is `NeedMore`. A query makes the sender the client; a response makes
//! its receiver the client.
//!
//! # Fields (DeepFlow's `dns.rs`)
//!
//! | field | value |
//! |---|---|
//! | `request_type` | QTYPE mnemonic: `A`, `AAAA`, `MX`, `TXT`, `SRV` ... |
//! | `request_resource`, `endpoint` | the query name, without trailing dot |
//! | `request_domain` | the query name for `A` and `AAAA` queries, else `""` |
//! | `response_code` | RCODE, extended by the OPT record when captured |
//! | `response_status` | `ok` for NOERROR, `client_error` for FORMERR and NXDOMAIN, `server_error` for every other code |
//! | `response_exception` | RCODE mnemonic (`NXDOMAIN`, `SERVFAIL`, `REFUSED` ...) when not NOERROR |
//!
//! Where flowmesh differs: types DeepFlow does not name get their IANA mnemonic or
//! `TYPEnnn` rather than `""`; the root is `"."` rather than `""`; queries with other
//! opcodes (NOTIFY, UPDATE) are parsed once the socket is known to be DNS but never detect
//! it. As in DeepFlow, `response_result` holds the answers (addresses, CNAME targets ...)
//! from [`Message::answers`].

mod message;

pub use message::{Header, Message, ParseError, Question, Sections, parse, rcode_name, type_name};

use crate::{
    ConversationConfig, ConversationStats, Direction, L7Protocol, L7Record, ResponseStatus, Role,
    framed::FramedSession,
    infer::{Detection, Inference},
    session::{Codec, Decode, ProtocolSession, SeqStep, SyscallMeta, WireLen},
};

/// Bytes of the TCP length prefix.
const TCP_PREFIX_LEN: usize = 2;
/// The shortest message with a question: header, the root name, type and class.
const MIN_MESSAGE_LEN: usize = message::HEADER_LEN + 5;
/// Up to this TCP length, a message whose first header bytes are still to come is waited
/// for.
const SMALL_MESSAGE_LEN: usize = 4096;

/// How messages are framed on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One message per datagram.
    Udp,
    /// Each message behind a 2-byte big-endian length.
    Tcp,
}

/// The [`Codec`] of DNS on one transport.
#[derive(Debug, Clone)]
pub struct DnsCodec {
    transport: Transport,
}

impl DnsCodec {
    /// A codec for messages framed by `transport`.
    pub fn new(transport: Transport) -> Self {
        DnsCodec { transport }
    }

    /// Decodes the message at the start of `buf`; `want_response` is the QR bit the
    /// direction carries (a message with the other is skipped).
    fn decode(&self, buf: &[u8], want_response: bool) -> Decode<Message> {
        let (body, len) = match self.transport {
            Transport::Udp => (buf, WireLen::ToChunkEnd),
            Transport::Tcp => {
                let Some(prefix) = buf.get(..TCP_PREFIX_LEN) else {
                    return Decode::NeedMore;
                };
                let declared = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
                if declared < message::HEADER_LEN {
                    return Decode::Invalid;
                }
                let end = (TCP_PREFIX_LEN + declared).min(buf.len());
                (
                    &buf[TCP_PREFIX_LEN..end],
                    WireLen::Exact((TCP_PREFIX_LEN + declared) as u64),
                )
            }
        };
        let whole = match len {
            WireLen::Exact(n) => buf.len() as u64 >= n,
            // a datagram is whole, or cut by the capture: either way no more will come
            WireLen::ToChunkEnd => true,
        };
        match message::parse(body) {
            Ok(msg) if msg.header.is_response() == want_response => Decode::Message { len, msg },
            Ok(_) => Decode::Skip { len },
            Err(ParseError::Truncated) if !whole => Decode::NeedMore,
            Err(_) => Decode::Invalid,
        }
    }
}

impl Codec for DnsCodec {
    type Request = Message;
    type Response = Message;

    fn protocol(&self) -> L7Protocol {
        L7Protocol::Dns
    }

    fn decode_request(&mut self, buf: &[u8]) -> Decode<Message> {
        self.decode(buf, false)
    }

    fn decode_response(&mut self, buf: &[u8], _pending: Option<&Message>) -> Decode<Message> {
        self.decode(buf, true)
    }

    fn request_key(&self, request: &Message) -> Option<u64> {
        Some(exchange_key(request))
    }

    fn response_key(&self, response: &Message) -> Option<u64> {
        Some(exchange_key(response))
    }

    fn fill(&self, request: &Message, response: Option<&Message>, record: &mut L7Record) {
        if let Some(q) = &request.question {
            record.request_type = type_name(q.qtype);
            record.request_resource = q.name.clone();
            record.endpoint = q.name.clone();
            if message::is_address_query(q.qtype) {
                record.request_domain = q.name.clone();
            }
        }
        let Some(response) = response else {
            return;
        };
        record.response_code = Some(response.rcode);
        record.response_status = status(response.rcode);
        record.response_result = response.answers.clone();
        if response.rcode != 0 {
            record.response_exception = rcode_name(response.rcode);
        }
    }
}

/// DeepFlow's classes: NOERROR ok, FORMERR and NXDOMAIN the client's fault, any other code
/// the server's.
fn status(rcode: u16) -> ResponseStatus {
    match rcode {
        0 => ResponseStatus::Ok,
        1 | 3 => ResponseStatus::ClientError,
        _ => ResponseStatus::ServerError,
    }
}

/// The id and the question, hashed (FNV-1a; names compared case-insensitively, as
/// resolvers may randomise the case of queries, the "0x20" technique).
fn exchange_key(message: &Message) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut eat = |b: u8| {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(PRIME);
    };
    message
        .header
        .id
        .to_be_bytes()
        .into_iter()
        .for_each(&mut eat);
    if let Some(q) = &message.question {
        q.qtype.to_be_bytes().into_iter().for_each(&mut eat);
        q.qclass.to_be_bytes().into_iter().for_each(&mut eat);
        q.name
            .bytes()
            .map(|b| b.to_ascii_lowercase())
            .for_each(&mut eat);
    }
    hash
}

/// The session of a DNS socket: UDP and TCP framing, chosen per chunk by its transport.
#[derive(Debug)]
struct DnsSession {
    udp: FramedSession<DnsCodec>,
    tcp: FramedSession<DnsCodec>,
}

impl ProtocolSession for DnsSession {
    fn protocol(&self) -> L7Protocol {
        L7Protocol::Dns
    }

    fn role(&self) -> Role {
        self.udp.role()
    }

    fn feed(
        &mut self,
        direction: Direction,
        meta: &SyscallMeta,
        step: SeqStep,
        payload: &[u8],
        gap_after: u64,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        let session = if meta.seq.is_none() {
            &mut self.udp
        } else {
            &mut self.tcp
        };
        session.feed(direction, meta, step, payload, gap_after, stats, out);
    }

    fn expire(
        &mut self,
        now_ns: u64,
        timeout_ns: u64,
        stats: &mut ConversationStats,
        out: &mut Vec<L7Record>,
    ) {
        self.udp.expire(now_ns, timeout_ns, stats, out);
        self.tcp.expire(now_ns, timeout_ns, stats, out);
    }

    fn close(&mut self, now_ns: u64, stats: &mut ConversationStats, out: &mut Vec<L7Record>) {
        self.udp.close(now_ns, stats, out);
        self.tcp.close(now_ns, stats, out);
    }
}

/// Recognises a DNS message at the start of a chunk, bare or behind a TCP length; see the
/// module docs for the rules.
pub(crate) fn detect(bytes: &[u8], direction: Direction) -> Detection {
    let matched = |is_response: bool| {
        let request_direction = if is_response {
            direction.opposite()
        } else {
            direction
        };
        Detection::Match(Inference {
            protocol: L7Protocol::Dns,
            role: Role::from_request_direction(request_direction),
        })
    };
    // bare (UDP): the chunk is the datagram, or a capture of its head
    match judge(bytes, None) {
        Judgement::Query => return matched(false),
        Judgement::Response => return matched(true),
        Judgement::Prefix | Judgement::No => {}
    }
    // behind a TCP length
    let Some(prefix) = bytes.get(..TCP_PREFIX_LEN) else {
        // half a TCP length
        return if bytes.is_empty() {
            Detection::NoMatch
        } else {
            Detection::NeedMore
        };
    };
    let declared = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    if declared < MIN_MESSAGE_LEN {
        return Detection::NoMatch;
    }
    let body = &bytes[TCP_PREFIX_LEN..];
    match judge(body, Some(declared)) {
        Judgement::Query => matched(false),
        Judgement::Response => matched(true),
        Judgement::Prefix => Detection::NeedMore,
        Judgement::No => Detection::NoMatch,
    }
}

/// What [`judge`] makes of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judgement {
    Query,
    Response,
    /// Could be the head of a message, but too little of it is there (TCP only).
    Prefix,
    No,
}

/// Judges `msg` against the detection rules. `declared` is the TCP length (the message is
/// `msg[..declared]`, and `msg` may be shorter); `None` for a bare datagram.
fn judge(msg: &[u8], declared: Option<usize>) -> Judgement {
    let available = declared.map_or(msg.len(), |d| d.min(msg.len()));
    let msg = &msg[..available];
    // Only a TCP message known to continue can be a prefix.
    let short = match declared {
        Some(d) if available < d => Judgement::Prefix,
        _ => Judgement::No,
    };
    let header = match Header::parse(msg) {
        Ok(h) => h,
        // The length alone (resolvers read it apart); a few bytes more behind a length a
        // query or common response has (text protocols' first two bytes read as a length
        // are above 8000); or enough of the header to check.
        Err(_)
            if msg.is_empty()
                || (msg.len() < 4 && declared.is_some_and(|d| d <= SMALL_MESSAGE_LEN))
                || (msg.len() >= 4 && header_prefix_ok(msg)) =>
        {
            return short;
        }
        Err(_) => return Judgement::No,
    };
    if !header_ok(&header) {
        return Judgement::No;
    }
    let question = match message::read_question(msg, message::HEADER_LEN, true) {
        Ok((q, _)) => q,
        Err(ParseError::Truncated) => return short,
        Err(ParseError::Invalid) => return Judgement::No,
    };
    if question.qtype == 0 || !matches!(question.qclass & 0x7fff, 1 | 3 | 4 | 254 | 255) {
        return Judgement::No;
    }
    let Ok(parsed) = parse(msg) else {
        return Judgement::No;
    };
    let ends_right = match parsed.sections {
        Sections::Complete { end } => end == declared.unwrap_or(msg.len()),
        Sections::Truncated => short == Judgement::Prefix || declared.is_none(),
        Sections::Malformed => false,
    };
    match (ends_right, header.is_response()) {
        (false, _) => Judgement::No,
        (true, false) => Judgement::Query,
        (true, true) => Judgement::Response,
    }
}

fn header_ok(h: &Header) -> bool {
    if h.opcode() != 0 || h.z() || h.qdcount != 1 {
        return false;
    }
    if h.is_response() {
        h.rcode() <= 10
    } else {
        !h.authoritative()
            && !h.truncated()
            && h.rcode() == 0
            && h.ancount == 0
            && h.nscount == 0
            && h.arcount <= 2
    }
}

/// The first bytes of a header (fewer than 12) pass the checks they can.
fn header_prefix_ok(msg: &[u8]) -> bool {
    let word = |i: usize| msg.get(i..i + 2).map(|w| u16::from_be_bytes([w[0], w[1]]));
    if let Some(flags) = word(2) {
        let h = Header {
            id: 0,
            flags,
            qdcount: 1,
            ancount: 0,
            nscount: 0,
            arcount: 0,
        };
        if !header_ok(&h) {
            return false;
        }
        let is_query = !h.is_response();
        if word(4).is_some_and(|qd| qd != 1)
            || (is_query && word(6).is_some_and(|an| an != 0))
            || (is_query && word(8).is_some_and(|ns| ns != 0))
        {
            return false;
        }
    }
    true
}

/// The session of a socket [`detect`] matched.
pub(crate) fn new_session(role: Role, config: &ConversationConfig) -> Box<dyn ProtocolSession> {
    Box::new(DnsSession {
        udp: FramedSession::new(DnsCodec::new(Transport::Udp), role, config),
        tcp: FramedSession::new(DnsCodec::new(Transport::Tcp), role, config),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_name(m: &mut Vec<u8>, name: &str) {
        for label in name.split('.').filter(|l| !l.is_empty()) {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
    }

    /// A query as `dig` sends it: RD and AD, an EDNS OPT record (RFC 6891).
    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1]);
        push_name(&mut m, name);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        m
    }

    /// The response to `query` with `rcode` and one A record per address.
    fn response(query: &[u8], rcode: u8, addrs: &[[u8; 4]]) -> Vec<u8> {
        let question_end = query.len() - 11;
        let mut m = query[..question_end].to_vec();
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m[7] = addrs.len() as u8;
        m[11] = 0;
        for a in addrs {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
            m.extend_from_slice(a);
        }
        m
    }

    fn tcp(msg: &[u8]) -> Vec<u8> {
        let mut m = (msg.len() as u16).to_be_bytes().to_vec();
        m.extend_from_slice(msg);
        m
    }

    fn dns(role: Role) -> Detection {
        Detection::Match(Inference {
            protocol: L7Protocol::Dns,
            role,
        })
    }

    #[test]
    fn detects_queries_and_responses_bare_and_framed() {
        let q = query(7, "www.example.com", 1);
        let r = response(&q, 0, &[[10, 0, 0, 1]]);
        let out = Direction::Egress;
        assert_eq!(detect(&q, out), dns(Role::Client));
        assert_eq!(detect(&q, Direction::Ingress), dns(Role::Server));
        assert_eq!(detect(&r, Direction::Ingress), dns(Role::Client));
        assert_eq!(detect(&r, out), dns(Role::Server));
        assert_eq!(detect(&tcp(&q), out), dns(Role::Client));
        assert_eq!(detect(&tcp(&r), out), dns(Role::Server));
        // two pipelined TCP queries in one write
        let two = [tcp(&q), tcp(&query(8, "a.b", 28))].concat();
        assert_eq!(detect(&two, out), dns(Role::Client));
        // a response cut by the capture
        assert_eq!(detect(&r[..r.len() - 3], out), dns(Role::Server));
        // the length alone, or with part of the header, or a question cut short
        for cut in [1, 2, 6, 9, 14, 20] {
            assert_eq!(detect(&tcp(&q)[..cut], out), Detection::NeedMore, "{cut}");
        }
        for cut in 3..6 {
            assert_eq!(detect(&tcp(&q)[..cut], out), Detection::NeedMore, "{cut}");
        }
        // too little of a header to check is not worth waiting for behind a long length
        assert_eq!(detect(b"+OK\r\n", out), Detection::NoMatch);
        assert_eq!(detect(b"\x10\x01\x00", out), Detection::NoMatch);
    }

    #[test]
    fn rejects_what_is_not_a_sane_message() {
        let q = query(7, "www.example.com", 1);
        let out = Direction::Egress;
        let mutate = |i: usize, v: u8| {
            let mut m = q.clone();
            m[i] = v;
            m
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (mutate(2, 0x29), "opcode UPDATE"),
            (mutate(3, 0x60), "Z bit"),
            (mutate(3, 0x03), "rcode in a query"),
            (mutate(2, 0x05), "AA in a query"),
            (mutate(5, 2), "two questions"),
            (mutate(5, 0), "no question"),
            (mutate(7, 1), "an answer count in a query"),
            (mutate(12, 0xc0), "a pointer in the question"),
            (mutate(13, 0x01), "a control byte in a label"),
            (mutate(32, 9), "QCLASS 9"),
            ([q.clone(), vec![0]].concat(), "a trailing byte"),
            (
                q[..q.len() - 2].to_vec(),
                "a bare datagram cut in its OPT record is fine",
            ),
            (
                tcp(&q[..q.len() - 2]),
                "a TCP length longer than its message",
            ),
        ];
        for (bytes, what) in &cases {
            let expected = if what.ends_with("is fine") {
                dns(Role::Client)
            } else {
                Detection::NoMatch
            };
            assert_eq!(detect(bytes, out), expected, "{what}");
        }
        // a TCP length that declares more than the records take
        let mut long = tcp(&q);
        long[1] += 1;
        assert_eq!(detect(&long, out), Detection::NoMatch);
        long.push(0);
        assert_eq!(detect(&long, out), Detection::NoMatch);
    }

    #[test]
    fn other_protocols_and_noise_are_not_dns() {
        let streams: [&[u8]; 10] = [
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
            b"+OK\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x01\x02\x03\x04\x05\x06\x07\x08",
            b"\x17\x03\x03\x00\x45\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06",
            b"\x10\x14\x00\x04MQTT\x04\x02\x00\x1e\x00\x08raw-v311",
            b"\x00\x00\x00\x4a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            b"SSH-2.0-OpenSSH_9.6\r\n",
        ];
        for stream in streams {
            for direction in [Direction::Egress, Direction::Ingress] {
                assert!(
                    !matches!(detect(stream, direction), Detection::Match(_)),
                    "{stream:?}"
                );
            }
        }
        // pseudo-random bytes (xorshift), many lengths
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..4000usize {
            let bytes: Vec<u8> = (0..len % 300)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert!(!matches!(
                detect(&bytes, Direction::Egress),
                Detection::Match(_)
            ));
            if bytes.len() >= 20 {
                assert_eq!(detect(&bytes, Direction::Egress), Detection::NoMatch);
            }
        }
    }

    #[test]
    fn codec_frames_tcp_and_skips_the_wrong_direction() {
        let q = query(7, "www.example.com", 1);
        let r = response(&q, 3, &[]);
        let mut codec = DnsCodec::new(Transport::Tcp);
        let framed = tcp(&q);
        assert_eq!(codec.decode_request(&framed[..1]), Decode::NeedMore);
        assert_eq!(codec.decode_request(&framed[..20]), Decode::NeedMore);
        let Decode::Message { len, msg } = codec.decode_request(&framed) else {
            panic!("no message");
        };
        assert_eq!(len, WireLen::Exact(framed.len() as u64));
        assert_eq!(msg.question.unwrap().name, "www.example.com");
        assert_eq!(
            codec.decode_request(&tcp(&r)),
            Decode::Skip {
                len: WireLen::Exact(r.len() as u64 + 2)
            }
        );
        assert_eq!(codec.decode_request(&[0, 3, 1, 2, 3]), Decode::Invalid);
        let mut udp = DnsCodec::new(Transport::Udp);
        assert!(matches!(
            udp.decode_response(&r, None),
            Decode::Message {
                len: WireLen::ToChunkEnd,
                ..
            }
        ));
        assert_eq!(udp.decode_request(&q[..20]), Decode::Invalid);
    }

    #[test]
    fn fields_follow_deepflow() {
        let codec = DnsCodec::new(Transport::Udp);
        let q = parse(&query(7, "mail.example.com", 15)).unwrap();
        let mut record = L7Record::new(L7Protocol::Dns, Role::Client);
        codec.fill(&q, None, &mut record);
        assert_eq!(record.request_type, "MX");
        assert_eq!(record.request_resource, "mail.example.com");
        assert_eq!(record.endpoint, "mail.example.com");
        assert_eq!(
            record.request_domain, "",
            "only address queries have a domain"
        );
        assert_eq!(record.response_status, ResponseStatus::Unknown);
        let a = query(7, "www.example.com", 1);
        let q = parse(&a).unwrap();
        for (rcode, status, exception) in [
            (0, ResponseStatus::Ok, ""),
            (1, ResponseStatus::ClientError, "FORMERR"),
            (2, ResponseStatus::ServerError, "SERVFAIL"),
            (3, ResponseStatus::ClientError, "NXDOMAIN"),
            (5, ResponseStatus::ServerError, "REFUSED"),
        ] {
            let r = parse(&response(&a, rcode, &[[1, 2, 3, 4]])).unwrap();
            let mut record = L7Record::new(L7Protocol::Dns, Role::Client);
            codec.fill(&q, Some(&r), &mut record);
            assert_eq!(record.request_domain, "www.example.com");
            assert_eq!(record.response_code, Some(u16::from(rcode)));
            assert_eq!(record.response_status, status);
            assert_eq!(record.response_exception, exception);
            assert_eq!(r.answers, "1.2.3.4");
            assert_eq!(record.response_result, "1.2.3.4");
        }
    }

    #[test]
    fn keys_tell_reused_ids_apart() {
        let a = parse(&query(9, "a.example", 1)).unwrap();
        let b = parse(&query(9, "b.example", 1)).unwrap();
        let a_upper = parse(&query(9, "A.Example", 1)).unwrap();
        assert_ne!(exchange_key(&a), exchange_key(&b));
        assert_eq!(exchange_key(&a), exchange_key(&a_upper));
        let a_resp = parse(&response(&query(9, "a.example", 1), 0, &[])).unwrap();
        assert_eq!(exchange_key(&a), exchange_key(&a_resp));
    }
}
