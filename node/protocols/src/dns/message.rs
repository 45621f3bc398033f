//! DNS messages (RFC 1035 §4.1): the header, the question and a summary of the answers, read
//! from a captured prefix without trusting any count or length in it.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 12;
/// Longest name on the wire, length octets included (RFC 1035 §3.1).
const MAX_NAME_WIRE_LEN: usize = 255;
/// The answer summary stops growing past this many bytes.
const MAX_ANSWERS_LEN: usize = 512;

/// Resource record types this module reads or names.
mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const DNAME: u16 = 39;
    pub const OPT: u16 = 41;
}

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The bytes end before the header and question do.
    Truncated,
    /// Not a DNS message: a label type, pointer, count or length that cannot be.
    Invalid,
}

/// The fixed header (RFC 1035 §4.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Transaction id, copied by the response.
    pub id: u16,
    /// QR, opcode, AA, TC, RD, RA, Z, AD, CD and RCODE.
    pub flags: u16,
    /// Entries in the question section.
    pub qdcount: u16,
    /// Records in the answer section.
    pub ancount: u16,
    /// Records in the authority section.
    pub nscount: u16,
    /// Records in the additional section.
    pub arcount: u16,
}

impl Header {
    /// Reads the header at the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Header, ParseError> {
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Err(ParseError::Truncated);
        };
        let word = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        Ok(Header {
            id: word(0),
            flags: word(2),
            qdcount: word(4),
            ancount: word(6),
            nscount: word(8),
            arcount: word(10),
        })
    }

    /// QR: a response.
    pub fn is_response(&self) -> bool {
        self.flags & 0x8000 != 0
    }

    /// The kind of query (0 QUERY, 4 NOTIFY, 5 UPDATE ...).
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }

    /// AA: an authoritative answer.
    pub fn authoritative(&self) -> bool {
        self.flags & 0x0400 != 0
    }

    /// TC: the message was truncated by its sender (the client retries over TCP).
    pub fn truncated(&self) -> bool {
        self.flags & 0x0200 != 0
    }

    /// The reserved Z bit, zero in every valid message.
    pub fn z(&self) -> bool {
        self.flags & 0x0040 != 0
    }

    /// The 4-bit response code of the header.
    pub fn rcode(&self) -> u8 {
        (self.flags & 0xf) as u8
    }
}

/// The question of a message (RFC 1035 §4.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name in presentation form, without the trailing dot (`"."` for the root).
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS (1 IN).
    pub qclass: u16,
}

/// How the resource record sections after the question ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sections {
    /// Every record was read; the message ends at this offset.
    Complete {
        /// Offset just past the last record.
        end: usize,
    },
    /// The bytes end inside a record (a captured prefix, or a split TCP read).
    Truncated,
    /// A record that cannot be: a bad name, pointer or rdata length.
    Malformed,
}

/// A DNS message as far as flowmesh reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// The first question (messages with none exist: some error responses, DNS cookies).
    pub question: Option<Question>,
    /// The response code: the header's 4 bits, extended by the OPT record's upper 8 bits
    /// (RFC 6891 §6.1.3) when the OPT record was captured.
    pub rcode: u16,
    /// The answer section's data, `;`-separated as DeepFlow does: addresses of A and AAAA,
    /// target names of CNAME, NS, PTR, DNAME and MX, `target:port` of SRV, the quoted strings
    /// of TXT, the primary server of SOA. Bounded to about 512 bytes; what was not captured is missing.
    pub answers: String,
    /// How the sections after the question ended.
    pub sections: Sections,
}

/// Reads the message at the start of `buf` (which may be a prefix of it). The header and the
/// question must be complete; the records after them are read as far as they go.
pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
    let header = Header::parse(buf)?;
    let mut pos = HEADER_LEN;
    let mut question = None;
    for i in 0..header.qdcount {
        let (q, next) = read_question(buf, pos, false)?;
        if i == 0 {
            question = Some(q);
        }
        pos = next;
    }
    let mut message = Message {
        header,
        question,
        rcode: u16::from(header.rcode()),
        answers: String::new(),
        sections: Sections::Truncated,
    };
    let counts = [header.ancount, header.nscount, header.arcount];
    for (section, &count) in counts.iter().enumerate() {
        for _ in 0..count {
            match read_record(buf, pos, section == 0, &mut message) {
                Ok(next) => pos = next,
                Err(ParseError::Truncated) => return Ok(message),
                Err(ParseError::Invalid) => {
                    message.sections = Sections::Malformed;
                    return Ok(message);
                }
            }
        }
    }
    message.sections = Sections::Complete { end: pos };
    Ok(message)
}

/// Reads a question entry at `pos`; `strict` also refuses compression pointers and labels
/// that are not printable ASCII (for protocol detection, where a name is evidence).
pub fn read_question(
    buf: &[u8],
    pos: usize,
    strict: bool,
) -> Result<(Question, usize), ParseError> {
    let mut name = String::new();
    let end = read_name(buf, pos, Some(&mut name), strict)?;
    let Some(tail) = buf.get(end..end + 4) else {
        return Err(ParseError::Truncated);
    };
    let question = Question {
        name,
        qtype: u16::from_be_bytes([tail[0], tail[1]]),
        qclass: u16::from_be_bytes([tail[2], tail[3]]),
    };
    Ok((question, end + 4))
}

/// Reads the (possibly compressed) name at `pos` into `out` in presentation form and returns
/// the offset just past it where it is written (not where its pointers lead).
///
/// Pointers must point strictly backwards, each before the previous one, and never into
/// the header: so following them always ends, and a message cannot make it loop.
fn read_name(
    buf: &[u8],
    pos: usize,
    mut out: Option<&mut String>,
    strict: bool,
) -> Result<usize, ParseError> {
    let mut at = pos;
    let mut end = None;
    let mut lowest = pos;
    let mut wire_len = 0usize;
    let mut labels = 0usize;
    loop {
        let len = *buf.get(at).ok_or(ParseError::Truncated)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                if labels == 0
                    && let Some(out) = out.as_deref_mut()
                {
                    out.push('.');
                }
                return Ok(end.unwrap_or(at + 1));
            }
            0x00 => {
                let len = usize::from(len);
                let label = buf.get(at + 1..at + 1 + len).ok_or(ParseError::Truncated)?;
                wire_len += 1 + len;
                if wire_len + 1 > MAX_NAME_WIRE_LEN {
                    return Err(ParseError::Invalid);
                }
                if strict && !label.iter().all(u8::is_ascii_graphic) {
                    return Err(ParseError::Invalid);
                }
                if let Some(out) = out.as_deref_mut() {
                    if labels > 0 {
                        out.push('.');
                    }
                    push_label(out, label);
                }
                labels += 1;
                at += 1 + len;
            }
            0xc0 => {
                if strict {
                    return Err(ParseError::Invalid);
                }
                let low = *buf.get(at + 1).ok_or(ParseError::Truncated)?;
                let target = (usize::from(len & 0x3f) << 8) | usize::from(low);
                if end.is_none() {
                    end = Some(at + 2);
                }
                if target >= lowest || target < HEADER_LEN {
                    return Err(ParseError::Invalid);
                }
                lowest = target;
                at = target;
            }
            // 0x40 (extended label types, RFC 6891 §5) and 0x80 are not in use
            _ => return Err(ParseError::Invalid),
        }
    }
}

/// Appends a label as `dig` presents it: `.` and `\` escaped, bytes outside printable ASCII
/// as `\DDD`.
fn push_label(out: &mut String, label: &[u8]) {
    for &b in label {
        match b {
            b'.' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x21..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\{b:03}");
            }
        }
    }
}

/// Reads the resource record at `pos`, adding answer data to `message.answers` and the
/// extended response code of an OPT record; returns the offset after it.
fn read_record(
    buf: &[u8],
    pos: usize,
    answer_section: bool,
    message: &mut Message,
) -> Result<usize, ParseError> {
    let name_end = read_name(buf, pos, None, false)?;
    let Some(fixed) = buf.get(name_end..name_end + 10) else {
        return Err(ParseError::Truncated);
    };
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let start = name_end + 10;
    let end = start + rdlen;
    if rtype == rtype::OPT {
        // RFC 6891 §6.1.3: the upper 8 bits of the 12-bit response code
        message.rcode = (((ttl >> 24) as u16) << 4) | u16::from(message.header.rcode());
    }
    let rdata = buf.get(start..end).ok_or(ParseError::Truncated)?;
    if answer_section {
        let mut data = String::new();
        summarize(buf, start, rtype, rdata, &mut data)?;
        if !data.is_empty() && message.answers.len() + data.len() < MAX_ANSWERS_LEN {
            if !message.answers.is_empty() {
                message.answers.push(';');
            }
            message.answers.push_str(&data);
        }
    }
    Ok(end)
}

/// The data of one answer, as `answers` shows it.
fn summarize(
    buf: &[u8],
    start: usize,
    rtype: u16,
    rdata: &[u8],
    out: &mut String,
) -> Result<(), ParseError> {
    let end = start + rdata.len();
    // a name inside rdata must end inside it
    let name_at = |offset: usize, out: &mut String| -> Result<(), ParseError> {
        let name_end = read_name(buf, start + offset, Some(out), false)?;
        if name_end > end {
            return Err(ParseError::Invalid);
        }
        Ok(())
    };
    match rtype {
        rtype::A => {
            let octets: [u8; 4] = rdata.try_into().map_err(|_| ParseError::Invalid)?;
            let _ = write!(out, "{}", Ipv4Addr::from(octets));
        }
        rtype::AAAA => {
            let octets: [u8; 16] = rdata.try_into().map_err(|_| ParseError::Invalid)?;
            let _ = write!(out, "{}", Ipv6Addr::from(octets));
        }
        rtype::CNAME | rtype::NS | rtype::PTR | rtype::DNAME | rtype::SOA => name_at(0, out)?,
        rtype::MX if rdata.len() > 2 => name_at(2, out)?,
        rtype::SRV if rdata.len() > 6 => {
            name_at(6, out)?;
            let _ = write!(out, ":{}", u16::from_be_bytes([rdata[4], rdata[5]]));
        }
        rtype::TXT => {
            // as dig shows it: each string quoted, separated by a space
            let mut rest = rdata;
            while let Some((&len, tail)) = rest.split_first() {
                let text = tail.get(..usize::from(len)).ok_or(ParseError::Invalid)?;
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push('"');
                out.push_str(&String::from_utf8_lossy(text));
                out.push('"');
                rest = &tail[usize::from(len)..];
            }
        }
        rtype::MX | rtype::SRV => return Err(ParseError::Invalid),
        _ => {}
    }
    Ok(())
}

/// The mnemonic of a resource record type (IANA "Resource Record (RR) TYPEs"), or
/// `TYPEnnn` (RFC 3597 §5) for the others.
pub fn type_name(qtype: u16) -> String {
    let name = match qtype {
        1 => "A",
        2 => "NS",
        3 => "MD",
        4 => "MF",
        5 => "CNAME",
        6 => "SOA",
        7 => "MB",
        8 => "MG",
        9 => "MR",
        10 => "NULL",
        11 => "WKS",
        12 => "PTR",
        13 => "HINFO",
        14 => "MINFO",
        15 => "MX",
        16 => "TXT",
        17 => "RP",
        18 => "AFSDB",
        24 => "SIG",
        25 => "KEY",
        28 => "AAAA",
        29 => "LOC",
        33 => "SRV",
        35 => "NAPTR",
        36 => "KX",
        37 => "CERT",
        39 => "DNAME",
        41 => "OPT",
        43 => "DS",
        44 => "SSHFP",
        45 => "IPSECKEY",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        49 => "DHCID",
        50 => "NSEC3",
        51 => "NSEC3PARAM",
        52 => "TLSA",
        53 => "SMIMEA",
        59 => "CDS",
        60 => "CDNSKEY",
        61 => "OPENPGPKEY",
        62 => "CSYNC",
        63 => "ZONEMD",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        249 => "TKEY",
        250 => "TSIG",
        251 => "IXFR",
        252 => "AXFR",
        253 => "MAILB",
        254 => "MAILA",
        255 => "ANY",
        256 => "URI",
        257 => "CAA",
        _ => return format!("TYPE{qtype}"),
    };
    name.to_string()
}

/// The mnemonic of a response code as `dig` prints it (IANA "DNS RCODEs"), or `RCODEnnn`.
pub fn rcode_name(rcode: u16) -> String {
    let name = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        11 => "DSOTYPENI",
        16 => "BADVERS",
        17 => "BADKEY",
        18 => "BADTIME",
        19 => "BADMODE",
        20 => "BADNAME",
        21 => "BADALG",
        22 => "BADTRUNC",
        23 => "BADCOOKIE",
        _ => return format!("RCODE{rcode}"),
    };
    name.to_string()
}

/// Whether `qtype` asks for an address (A or AAAA): DeepFlow fills `request_domain` only
/// for those.
pub fn is_address_query(qtype: u16) -> bool {
    qtype == rtype::A || qtype == rtype::AAAA
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name`/`qtype` with id 0x1234 (RFC 1035 §4.1), RD set.
    pub(crate) fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        push_name(&mut m, name);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    }

    fn push_name(m: &mut Vec<u8>, name: &str) {
        for label in name.split('.').filter(|l| !l.is_empty()) {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
    }

    #[test]
    fn query_head() {
        let m = parse(&query("www.example.com", 28)).unwrap();
        assert_eq!(m.header.id, 0x1234);
        assert!(!m.header.is_response());
        let q = m.question.unwrap();
        assert_eq!(
            (q.name.as_str(), q.qtype, q.qclass),
            ("www.example.com", 28, 1)
        );
        assert_eq!(m.sections, Sections::Complete { end: 33 });
        assert_eq!(type_name(q.qtype), "AAAA");
        assert_eq!(type_name(4242), "TYPE4242");
    }

    #[test]
    fn answers_with_compression_and_extended_rcode() {
        let mut m = query("a.test", 1);
        m[2] = 0x81; // QR, RD
        m[3] = 0x80; // RA
        m[7] = 3; // ancount
        m[11] = 1; // arcount
        // a.test CNAME b.a.test (pointer to the question name at 12)
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'b', 0xc0, 12]);
        // b.a.test A 10.1.2.3 (pointer to the CNAME target)
        let target = m.len() - 4;
        m.extend_from_slice(&[
            0xc0,
            target as u8,
            0,
            1,
            0,
            1,
            0,
            0,
            0,
            60,
            0,
            4,
            10,
            1,
            2,
            3,
        ]);
        // a.test MX 10 mx.a.test
        m.extend_from_slice(&[
            0xc0, 12, 0, 15, 0, 1, 0, 0, 0, 60, 0, 7, 0, 10, 2, b'm', b'x',
        ]);
        m.extend_from_slice(&[0xc0, 12]);
        // OPT with extended rcode 1 (BADVERS = 16 with header rcode 0)
        m.extend_from_slice(&[0, 0, 41, 0x10, 0, 1, 0, 0, 0, 0, 0]);
        let parsed = parse(&m).unwrap();
        assert_eq!(parsed.answers, "b.a.test;10.1.2.3;mx.a.test");
        assert_eq!(parsed.rcode, 16);
        assert_eq!(rcode_name(parsed.rcode), "BADVERS");
        assert_eq!(parsed.sections, Sections::Complete { end: m.len() });
        // every prefix after the question is a truncated message, never an error
        for cut in 24..m.len() {
            let p = parse(&m[..cut]).unwrap();
            assert_eq!(p.question, parsed.question);
            assert_ne!(p.sections, Sections::Malformed, "{cut}");
        }
        for cut in 0..24 {
            assert_eq!(parse(&m[..cut]), Err(ParseError::Truncated), "{cut}");
        }
    }

    #[test]
    fn pointer_loops_and_forward_pointers_are_invalid() {
        let mut m = query("a.test", 1);
        m[2] = 0x81;
        m[7] = 1;
        let at = m.len();
        // a name that points to itself
        m.extend_from_slice(&[0xc0, at as u8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(parse(&m).unwrap().sections, Sections::Malformed);
        // a pointer into the header
        m[at + 1] = 2;
        assert_eq!(parse(&m).unwrap().sections, Sections::Malformed);
        // a question that points anywhere is invalid
        let mut q = query("a.test", 1);
        q.truncate(12);
        q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&q), Err(ParseError::Invalid));
        // reserved label types
        let mut q = query("a.test", 1);
        q[12] = 0x41;
        assert_eq!(parse(&q), Err(ParseError::Invalid));
    }

    #[test]
    fn names_are_escaped_and_bounded() {
        let mut m = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[3, b'a', b'.', 0x07, 0, 0, 1, 0, 1]);
        assert_eq!(parse(&m).unwrap().question.unwrap().name, "a\\.\\007");
        assert_eq!(
            read_question(&m, 12, true),
            Err(ParseError::Invalid),
            "strict refuses non-printable labels"
        );
        // the root
        let root = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];
        assert_eq!(parse(&root).unwrap().question.unwrap().name, ".");
        // 5 labels of 63 bytes: longer than 255
        let mut long = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'x'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(parse(&long), Err(ParseError::Invalid));
    }
}
