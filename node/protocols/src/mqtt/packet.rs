//! MQTT control packets (3.1.1 §2–3, 5.0 §2–3): the fixed header and the fields of the
//! variable header and payload that flowmesh reads, from a captured prefix.

/// The control packet types (3.1.1 §2.2.1, 5.0 §2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// Client request to connect.
    Connect,
    /// Connect acknowledgment.
    Connack,
    /// Publish message (either way).
    Publish,
    /// Publish acknowledgment (QoS 1).
    Puback,
    /// Publish received (QoS 2, part 1).
    Pubrec,
    /// Publish release (QoS 2, part 2).
    Pubrel,
    /// Publish complete (QoS 2, part 3).
    Pubcomp,
    /// Subscribe request.
    Subscribe,
    /// Subscribe acknowledgment.
    Suback,
    /// Unsubscribe request.
    Unsubscribe,
    /// Unsubscribe acknowledgment.
    Unsuback,
    /// Ping request.
    Pingreq,
    /// Ping response.
    Pingresp,
    /// Disconnect notification (either way in MQTT 5).
    Disconnect,
    /// Authentication exchange (MQTT 5).
    Auth,
}

impl PacketType {
    fn from_nibble(nibble: u8) -> Option<Self> {
        Some(match nibble {
            1 => PacketType::Connect,
            2 => PacketType::Connack,
            3 => PacketType::Publish,
            4 => PacketType::Puback,
            5 => PacketType::Pubrec,
            6 => PacketType::Pubrel,
            7 => PacketType::Pubcomp,
            8 => PacketType::Subscribe,
            9 => PacketType::Suback,
            10 => PacketType::Unsubscribe,
            11 => PacketType::Unsuback,
            12 => PacketType::Pingreq,
            13 => PacketType::Pingresp,
            14 => PacketType::Disconnect,
            15 => PacketType::Auth,
            _ => return None,
        })
    }

    /// The name in `request_type` (DeepFlow's spelling).
    pub fn name(&self) -> &'static str {
        match self {
            PacketType::Connect => "CONNECT",
            PacketType::Connack => "CONNACK",
            PacketType::Publish => "PUBLISH",
            PacketType::Puback => "PUBACK",
            PacketType::Pubrec => "PUBREC",
            PacketType::Pubrel => "PUBREL",
            PacketType::Pubcomp => "PUBCOMP",
            PacketType::Subscribe => "SUBSCRIBE",
            PacketType::Suback => "SUBACK",
            PacketType::Unsubscribe => "UNSUBSCRIBE",
            PacketType::Unsuback => "UNSUBACK",
            PacketType::Pingreq => "PINGREQ",
            PacketType::Pingresp => "PINGRESP",
            PacketType::Disconnect => "DISCONNECT",
            PacketType::Auth => "AUTH",
        }
    }
}

/// Why a packet could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The bytes end before the fields flowmesh reads; the packet goes on.
    Incomplete,
    /// Not a valid packet.
    Invalid,
}

/// The fixed header (3.1.1 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// The packet type.
    pub kind: PacketType,
    /// The 4 flag bits (DUP, QoS, RETAIN for PUBLISH).
    pub flags: u8,
    /// The Remaining Length: bytes after the fixed header.
    pub remaining: u32,
    /// Bytes of the fixed header itself (2 to 5).
    pub len: usize,
}

impl FixedHeader {
    /// Reads the fixed header at the start of `buf`, checking the flags each type requires.
    pub fn parse(buf: &[u8]) -> Result<FixedHeader, Error> {
        let first = *buf.first().ok_or(Error::Incomplete)?;
        let kind = PacketType::from_nibble(first >> 4).ok_or(Error::Invalid)?;
        let flags = first & 0x0f;
        let flags_ok = match kind {
            PacketType::Publish => (flags >> 1) & 3 != 3,
            PacketType::Pubrel | PacketType::Subscribe | PacketType::Unsubscribe => flags == 2,
            _ => flags == 0,
        };
        if !flags_ok {
            return Err(Error::Invalid);
        }
        let (remaining, varint_len) = varint(&buf[1..])?;
        Ok(FixedHeader {
            kind,
            flags,
            remaining,
            len: 1 + varint_len,
        })
    }

    /// The whole packet's length on the wire.
    pub fn total_len(&self) -> u64 {
        self.len as u64 + u64::from(self.remaining)
    }

    /// The QoS of a PUBLISH.
    pub fn qos(&self) -> u8 {
        (self.flags >> 1) & 3
    }
}

/// A Variable Byte Integer (5.0 §1.5.5, the Remaining Length of 3.1.1): its value and
/// length. At most 4 bytes.
pub fn varint(buf: &[u8]) -> Result<(u32, usize), Error> {
    let mut value = 0u32;
    for i in 0..4 {
        let b = *buf.get(i).ok_or(Error::Incomplete)?;
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(Error::Invalid)
}

/// What flowmesh keeps of a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The packet type.
    pub kind: PacketType,
    /// The QoS of a PUBLISH, else 0.
    pub qos: u8,
    /// The Packet Identifier, for the types that have one.
    pub packet_id: Option<u16>,
    /// A PUBLISH's topic name, or the topic filters of a SUBSCRIBE or UNSUBSCRIBE joined with
    /// `,` (as far as captured). Empty for a PUBLISH that uses a topic alias only.
    pub topic: String,
    /// The Topic Alias property of an MQTT 5 PUBLISH.
    pub topic_alias: Option<u16>,
    /// The client identifier of a CONNECT, or the Assigned Client Identifier of a CONNACK.
    pub client_id: Option<String>,
    /// The protocol level of a CONNECT (3: 3.1, 4: 3.1.1, 5: 5.0).
    pub level: Option<u8>,
    /// The return or reason code: a CONNACK's; an MQTT 5 acknowledgment's, DISCONNECT's or
    /// AUTH's (0 when omitted); the first failure of a SUBACK or MQTT 5 UNSUBACK, else its
    /// first code. `None` where the packet has none.
    pub code: Option<u8>,
    /// Length on the wire.
    pub len: u64,
}

/// Reads fields from a packet's bytes after the fixed header, as far as captured.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// `buf` holds the whole packet: running out means the packet is malformed.
    whole: bool,
}

impl<'a> Reader<'a> {
    fn short(&self) -> Error {
        if self.whole {
            Error::Invalid
        } else {
            Error::Incomplete
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let bytes = self.buf.get(self.pos..self.pos + n).ok_or(self.short())?;
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn string(&mut self) -> Result<String, Error> {
        let len = usize::from(self.u16()?);
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn varint(&mut self) -> Result<u32, Error> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match varint(rest) {
            Ok((value, n)) => {
                self.pos += n;
                Ok(value)
            }
            Err(Error::Incomplete) => Err(self.short()),
            Err(e) => Err(e),
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// MQTT 5 properties (5.0 §2.2.2): those flowmesh keeps, read from what was captured of
    /// them. Leaves the reader after them; if they were not all captured, at the end of
    /// what was.
    fn properties(&mut self) -> Result<Properties, Error> {
        let len = self.varint()? as usize;
        let end = self.pos.saturating_add(len);
        if end > self.buf.len() && self.whole {
            return Err(Error::Invalid);
        }
        let block = &self.buf[self.pos..end.min(self.buf.len())];
        self.pos = end.min(self.buf.len());
        let mut props = Properties::default();
        let mut r = Reader {
            buf: block,
            pos: 0,
            whole: end <= self.buf.len(),
        };
        // stops at the first property that was not captured (or is unknown)
        while !r.at_end() {
            let Ok(id) = r.varint() else { break };
            let value = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => r.take(1).map(|_| ()),
                0x13 | 0x21 | 0x22 => r.take(2).map(|_| ()),
                0x23 => r.u16().map(|alias| props.topic_alias = Some(alias)),
                0x02 | 0x11 | 0x18 | 0x27 => r.take(4).map(|_| ()),
                0x0b => r.varint().map(|_| ()),
                0x12 => r.string().map(|id| props.assigned_client_id = Some(id)),
                0x03 | 0x08 | 0x09 | 0x15 | 0x16 | 0x1a | 0x1c | 0x1f => {
                    r.u16().and_then(|n| r.take(usize::from(n))).map(|_| ())
                }
                0x26 => r.string().and_then(|_| r.string()).map(|_| ()),
                _ if r.whole => Err(Error::Invalid),
                _ => break,
            };
            match value {
                Ok(()) => {}
                Err(Error::Invalid) => return Err(Error::Invalid),
                Err(Error::Incomplete) => break,
            }
        }
        Ok(props)
    }
}

/// The MQTT 5 properties flowmesh keeps.
#[derive(Debug, Default)]
struct Properties {
    topic_alias: Option<u16>,
    assigned_client_id: Option<String>,
}

/// The first failure code (≥ 0x80) of a list of per-topic codes, else the first code.
fn summary_code(codes: &[u8]) -> Option<u8> {
    codes
        .iter()
        .copied()
        .find(|&c| c >= 0x80)
        .or_else(|| codes.first().copied())
}

/// Reads the packet at the start of `buf` (a prefix of it may do) of a connection at
/// protocol `level` (0 before the CONNECT was seen, read as 3.1.1).
pub fn parse(buf: &[u8], level: u8) -> Result<Packet, Error> {
    let header = FixedHeader::parse(buf)?;
    let total = header.total_len();
    let whole = buf.len() as u64 >= total;
    let end = usize::try_from(total).map_or(buf.len(), |t| t.min(buf.len()));
    let mut r = Reader {
        buf: &buf[header.len..end],
        pos: 0,
        whole,
    };
    let v5 = level == 5;
    let mut packet = Packet {
        kind: header.kind,
        qos: 0,
        packet_id: None,
        topic: String::new(),
        topic_alias: None,
        client_id: None,
        level: None,
        code: None,
        len: total,
    };
    match header.kind {
        PacketType::Connect => {
            let name = r.string()?;
            let level = r.u8()?;
            let name_ok = match level {
                3 => name == "MQIsdp",
                4 | 5 => name == "MQTT",
                _ => false,
            };
            let flags = r.u8()?;
            if !name_ok || flags & 1 != 0 {
                return Err(Error::Invalid);
            }
            r.u16()?; // keep alive
            if level == 5 {
                r.properties()?;
            }
            packet.client_id = Some(r.string()?);
            packet.level = Some(level);
        }
        PacketType::Connack => {
            if r.u8()? & 0xfe != 0 {
                return Err(Error::Invalid);
            }
            packet.code = Some(r.u8()?);
            if v5 {
                packet.client_id = r.properties().ok().and_then(|p| p.assigned_client_id);
            }
        }
        PacketType::Publish => {
            packet.qos = header.qos();
            packet.topic = r.string()?;
            if packet.qos > 0 {
                packet.packet_id = Some(r.u16()?);
            }
            if v5 {
                packet.topic_alias = r.properties().ok().and_then(|p| p.topic_alias);
            }
        }
        PacketType::Puback | PacketType::Pubrec | PacketType::Pubrel | PacketType::Pubcomp => {
            packet.packet_id = Some(r.u16()?);
            if v5 {
                packet.code = Some(if r.at_end() && whole { 0 } else { r.u8()? });
            } else if header.remaining != 2 {
                return Err(Error::Invalid);
            }
        }
        PacketType::Subscribe | PacketType::Unsubscribe => {
            packet.packet_id = Some(r.u16()?);
            if v5 {
                r.properties()?;
            }
            let mut filters = Vec::new();
            loop {
                let filter = match r.string() {
                    Ok(filter) => filter,
                    // what was captured of the list is enough once it has a filter
                    Err(Error::Incomplete) if !filters.is_empty() => break,
                    Err(e) => return Err(e),
                };
                filters.push(filter);
                if header.kind == PacketType::Subscribe {
                    match r.u8() {
                        Ok(_) => {}
                        Err(Error::Incomplete) => break,
                        Err(e) => return Err(e),
                    }
                }
                if r.at_end() {
                    break;
                }
            }
            packet.topic = filters.join(",");
        }
        PacketType::Suback | PacketType::Unsuback => {
            packet.packet_id = Some(r.u16()?);
            if v5 {
                r.properties()?;
            }
            if v5 || header.kind == PacketType::Suback {
                let codes = &r.buf[r.pos..];
                if codes.is_empty() {
                    return Err(r.short());
                }
                packet.code = summary_code(codes);
            } else if header.remaining != 2 {
                return Err(Error::Invalid);
            }
        }
        PacketType::Pingreq | PacketType::Pingresp => {
            if header.remaining != 0 {
                return Err(Error::Invalid);
            }
        }
        PacketType::Disconnect | PacketType::Auth => {
            if v5 {
                packet.code = Some(if r.at_end() && whole { 0 } else { r.u8()? });
            } else if header.kind == PacketType::Auth || header.remaining != 0 {
                return Err(Error::Invalid);
            }
        }
    }
    Ok(packet)
}

/// Whether `bytes` start like a CONNECT (3.1.1 §3.1, 5.0 §3.1): `Some(true)` when they
/// are one, `Some(false)` when they are not, `None` when too few bytes are there to say.
///
/// The protocol name and level must agree (`MQIsdp` 3, `MQTT` 4 or 5), the reserved flag
/// must be clear, the Will QoS below 3, Will QoS and Retain clear without a Will, a password
/// only with a user name before MQTT 5, and the properties and the client identifier's
/// length must fit in the Remaining Length.
pub fn is_connect(bytes: &[u8]) -> Option<bool> {
    if *bytes.first()? != 0x10 {
        return Some(false);
    }
    let (remaining, varint_len) = match varint(&bytes[1..]) {
        Ok(v) => v,
        Err(Error::Incomplete) => return None,
        Err(Error::Invalid) => return Some(false),
    };
    let body = &bytes[1 + varint_len..];
    let remaining = remaining as usize;
    // the shortest CONNECT: "MQTT", level, flags, keep alive, an empty client identifier
    if remaining < 12 {
        return Some(false);
    }
    // name, level, flags, keep alive, client id length
    const MQTT: &[u8] = b"\x00\x04MQTT";
    const MQISDP: &[u8] = b"\x00\x06MQIsdp";
    let name = if body.get(1) == Some(&6) {
        MQISDP
    } else {
        MQTT
    };
    let seen = body.len().min(name.len());
    if body[..seen] != name[..seen] {
        return Some(false);
    }
    let level = *body.get(name.len())?;
    let level_ok = if name == MQTT {
        level == 4 || level == 5
    } else {
        level == 3
    };
    if !level_ok {
        return Some(false);
    }
    let flags = *body.get(name.len() + 1)?;
    let will = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 3;
    let will_retain = flags & 0x20 != 0;
    let password = flags & 0x40 != 0;
    let user = flags & 0x80 != 0;
    if flags & 1 != 0
        || will_qos == 3
        || (!will && (will_qos != 0 || will_retain))
        || (level < 5 && password && !user)
    {
        return Some(false);
    }
    // keep alive
    let mut at = name.len() + 4;
    if level == 5 {
        let (props, n) = match varint(body.get(at..).unwrap_or_default()) {
            Ok(v) => v,
            Err(Error::Incomplete) => return None,
            Err(Error::Invalid) => return Some(false),
        };
        at += n + props as usize;
    }
    // the client identifier's length must fit
    let Some(id_len) = body.get(at..at + 2) else {
        return if at + 2 > remaining {
            Some(false)
        } else {
            None
        };
    };
    let id_end = at + 2 + usize::from(u16::from_be_bytes([id_len[0], id_len[1]]));
    Some(id_end <= remaining)
}

/// The classes of MQTT 5 reason codes of 0x80 and above (5.0 §2.4): whether the sender of
/// the request is at fault (client error) or the receiver (server error).
pub fn v5_reason_is_server_error(code: u8) -> bool {
    matches!(
        code,
        0x80 | 0x83
            | 0x88
            | 0x89
            | 0x8b
            | 0x98
            | 0x9a
            | 0x9b
            | 0x9c
            | 0x9d
            | 0x9e
            | 0xa0
            | 0xa1
            | 0xa2
    )
}

/// The name of an MQTT 5 reason code (5.0 §2.4).
pub fn v5_reason_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x00 => "Success",
        0x01 => "Granted QoS 1",
        0x02 => "Granted QoS 2",
        0x04 => "Disconnect with Will Message",
        0x10 => "No matching subscribers",
        0x11 => "No subscription existed",
        0x18 => "Continue authentication",
        0x19 => "Re-authenticate",
        0x80 => "Unspecified error",
        0x81 => "Malformed Packet",
        0x82 => "Protocol Error",
        0x83 => "Implementation specific error",
        0x84 => "Unsupported Protocol Version",
        0x85 => "Client Identifier not valid",
        0x86 => "Bad User Name or Password",
        0x87 => "Not authorized",
        0x88 => "Server unavailable",
        0x89 => "Server busy",
        0x8a => "Banned",
        0x8b => "Server shutting down",
        0x8c => "Bad authentication method",
        0x8d => "Keep Alive timeout",
        0x8e => "Session taken over",
        0x8f => "Topic Filter invalid",
        0x90 => "Topic Name invalid",
        0x91 => "Packet Identifier in use",
        0x92 => "Packet Identifier not found",
        0x93 => "Receive Maximum exceeded",
        0x94 => "Topic Alias invalid",
        0x95 => "Packet too large",
        0x96 => "Message rate too high",
        0x97 => "Quota exceeded",
        0x98 => "Administrative action",
        0x99 => "Payload format invalid",
        0x9a => "Retain not supported",
        0x9b => "QoS not supported",
        0x9c => "Use another server",
        0x9d => "Server moved",
        0x9e => "Shared Subscriptions not supported",
        0x9f => "Connection rate exceeded",
        0xa0 => "Maximum connect time",
        0xa1 => "Subscription Identifiers not supported",
        0xa2 => "Wildcard Subscriptions not supported",
        _ => return None,
    })
}

/// The name of an MQTT 3.1 / 3.1.1 CONNACK return code (3.1.1 §3.2.2.3).
pub fn v3_connack_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0 => "Connection Accepted",
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "Server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![first];
        let mut n = body.len();
        loop {
            let b = (n % 128) as u8;
            n /= 128;
            p.push(if n > 0 { b | 0x80 } else { b });
            if n == 0 {
                break;
            }
        }
        p.extend_from_slice(body);
        p
    }

    fn s(text: &str) -> Vec<u8> {
        let mut v = (text.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(text.as_bytes());
        v
    }

    #[test]
    fn varints_and_flags() {
        assert_eq!(varint(&[0x40]), Ok((64, 1)));
        assert_eq!(varint(&[0xc1, 0x02]), Ok((321, 2)));
        assert_eq!(varint(&[0xff, 0xff, 0xff, 0x7f]), Ok((268_435_455, 4)));
        assert_eq!(varint(&[0xff, 0xff, 0xff, 0xff, 0x01]), Err(Error::Invalid));
        assert_eq!(varint(&[0x80]), Err(Error::Incomplete));
        assert_eq!(FixedHeader::parse(&[0x36, 0]), Err(Error::Invalid), "QoS 3");
        assert_eq!(
            FixedHeader::parse(&[0x80, 0]),
            Err(Error::Invalid),
            "SUBSCRIBE flags"
        );
        assert_eq!(
            FixedHeader::parse(&[0x00, 0]),
            Err(Error::Invalid),
            "type 0"
        );
        assert_eq!(FixedHeader::parse(&[0x3d, 0]).unwrap().qos(), 2);
    }

    #[test]
    fn v5_publish_with_alias_and_properties() {
        let mut body = s("a/b");
        body.extend_from_slice(&[0, 7]); // packet id
        // properties: payload format (1 byte), topic alias 3, user property
        let mut props = vec![0x01, 1, 0x23, 0, 3, 0x26];
        props.extend(s("k"));
        props.extend(s("v"));
        body.push(props.len() as u8);
        body.extend(props);
        body.extend_from_slice(b"payload");
        let p = packet(0x32, &body);
        let parsed = parse(&p, 5).unwrap();
        assert_eq!(
            (
                parsed.topic.as_str(),
                parsed.qos,
                parsed.packet_id,
                parsed.topic_alias
            ),
            ("a/b", 1, Some(7), Some(3))
        );
        assert_eq!(parsed.len, p.len() as u64);
        // cut inside the properties: still the head
        assert_eq!(parse(&p[..12], 5).unwrap().topic_alias, None);
        assert_eq!(parse(&p[..6], 5), Err(Error::Incomplete));
        // the same bytes read as 3.1.1 have no properties
        assert_eq!(parse(&p, 4).unwrap().topic_alias, None);
    }

    #[test]
    fn acknowledgments_and_codes() {
        assert_eq!(parse(&[0x40, 2, 0, 9], 5).unwrap().code, Some(0));
        assert_eq!(parse(&[0x40, 3, 0, 9, 0x87], 5).unwrap().code, Some(0x87));
        assert_eq!(parse(&[0x40, 2, 0, 9], 4).unwrap().code, None);
        assert_eq!(parse(&[0x40, 3, 0, 9, 0], 4), Err(Error::Invalid));
        assert_eq!(
            parse(&[0x90, 5, 0, 1, 0, 0x80, 1], 4).unwrap().code,
            Some(0x80)
        );
        assert_eq!(parse(&[0x90, 4, 0, 1, 1, 2], 4).unwrap().code, Some(1));
        assert_eq!(
            parse(&[0x90, 3, 0, 1, 0], 5),
            Err(Error::Invalid),
            "no codes"
        );
        assert_eq!(parse(&[0xb0, 2, 0, 1], 4).unwrap().code, None);
        assert_eq!(
            parse(&[0xb0, 4, 0, 1, 0, 0x11], 5).unwrap().code,
            Some(0x11)
        );
        assert_eq!(parse(&[0xe0, 1, 0x8e], 5).unwrap().code, Some(0x8e));
        assert_eq!(parse(&[0xe0, 0], 5).unwrap().code, Some(0));
        assert_eq!(
            parse(&[0xf0, 0], 4),
            Err(Error::Invalid),
            "no AUTH before 5"
        );
        assert_eq!(parse(&[0xc0, 1, 0], 4), Err(Error::Invalid));
        // CONNACK with an assigned client identifier
        let mut body = vec![0, 0];
        let mut props = vec![0x21, 0, 10, 0x12];
        props.extend(s("auto-1"));
        body.push(props.len() as u8);
        body.extend(props);
        let connack = parse(&packet(0x20, &body), 5).unwrap();
        assert_eq!(connack.client_id.as_deref(), Some("auto-1"));
        assert_eq!(connack.code, Some(0));
    }

    #[test]
    fn subscribe_lists_as_far_as_captured() {
        let mut body = vec![0, 5];
        for f in ["a/#", "b/+/c", "d"] {
            body.extend(s(f));
            body.push(1);
        }
        let p = packet(0x82, &body);
        assert_eq!(parse(&p, 4).unwrap().topic, "a/#,b/+/c,d");
        assert_eq!(parse(&p[..12], 4).unwrap().topic, "a/#");
        assert_eq!(parse(&p[..8], 4), Err(Error::Incomplete));
        // a complete packet whose list runs past its length
        let mut bad = p.clone();
        bad[1] -= 1;
        bad.pop();
        assert_eq!(parse(&bad, 4), Err(Error::Invalid));
    }

    #[test]
    fn connects() {
        let mut v4 = b"\x00\x04MQTT\x04\x02\x00\x3c".to_vec();
        v4.extend(s("client-1"));
        let p = packet(0x10, &v4);
        assert_eq!(is_connect(&p), Some(true));
        let parsed = parse(&p, 0).unwrap();
        assert_eq!(
            (parsed.level, parsed.client_id.as_deref()),
            (Some(4), Some("client-1"))
        );
        for cut in 0..12 {
            assert_eq!(is_connect(&p[..cut]), None, "{cut}");
        }
        let mut v3 = b"\x00\x06MQIsdp\x03\xc2\x00\x3c".to_vec();
        v3.extend(s("old"));
        assert_eq!(is_connect(&packet(0x10, &v3)), Some(true));
        let mut v5 = b"\x00\x04MQTT\x05\x02\x00\x3c\x05\x11\x00\x00\x00\x3c".to_vec();
        v5.extend(s("new"));
        assert_eq!(is_connect(&packet(0x10, &v5)), Some(true));
        assert_eq!(
            parse(&packet(0x10, &v5), 0).unwrap().client_id.as_deref(),
            Some("new")
        );
        let bad = |i: usize, v: u8| {
            let mut b = v4.clone();
            b[i] = v;
            is_connect(&packet(0x10, &b))
        };
        assert_eq!(bad(6, 5), Some(false), "level 5 without properties");
        assert_eq!(bad(6, 3), Some(false), "MQTT at level 3");
        assert_eq!(bad(7, 0x03), Some(false), "reserved flag");
        assert_eq!(bad(7, 0x18), Some(false), "will QoS 3");
        assert_eq!(bad(7, 0x08), Some(false), "will QoS without will");
        assert_eq!(bad(7, 0x42), Some(false), "password without user name");
        assert_eq!(
            bad(11, 0x20),
            Some(false),
            "client id longer than the packet"
        );
        assert_eq!(bad(2, b'X'), Some(false), "protocol name");
        assert_eq!(is_connect(b"\x10\xff\xff\xff\xff\x01"), Some(false));
        assert_eq!(is_connect(b"\x20\x02\x00\x00"), Some(false));
    }
}
