//! Decoding of captured frames: Ethernet (with VLAN tags), IPv4, IPv6, TCP and UDP headers.
//!
//! Decoding reads only bytes that were captured and trusts lengths only after checking
//! them against each other: the IP total length (not the captured length) decides how many
//! payload bytes a segment carried, so byte counts stay exact when the snap length cut the
//! frame, and Ethernet padding is never counted as payload. Nothing here panics or
//! allocates; every frame that cannot be decoded yields a [`DecodeError`] saying why.
//!
//! Fragments are not reassembled: an IPv4 packet with MF set or a non-zero fragment offset,
//! and an IPv6 packet with a Fragment header (other than an atomic fragment), is
//! [`DecodeError::Fragment`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::LinkType;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
/// VLAN tags followed at most (QinQ and one more).
const MAX_VLAN_TAGS: usize = 3;
/// IPv6 extension headers followed at most.
const MAX_IPV6_EXTENSIONS: usize = 8;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// The transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportProtocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl TransportProtocol {
    /// The IP protocol number, the `protocol` column.
    pub fn number(self) -> u8 {
        match self {
            TransportProtocol::Tcp => IPPROTO_TCP,
            TransportProtocol::Udp => IPPROTO_UDP,
        }
    }

    /// `"TCP"` or `"UDP"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportProtocol::Tcp => "TCP",
            TransportProtocol::Udp => "UDP",
        }
    }
}

/// TCP header flags (the low 8 bits of byte 13).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from the sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronise sequence numbers (connection start).
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// The acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// The urgent pointer is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of both sets.
    pub fn union(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | other.0)
    }
}

/// The TCP fields flow tracking needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader {
    /// Sequence number of the first payload byte (of the SYN, for a SYN).
    pub seq: u32,
    /// Acknowledgment number (meaningful with ACK).
    pub ack: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// Advertised receive window, unscaled.
    pub window: u16,
}

/// A decoded TCP or UDP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedPacket<'a> {
    /// The outermost VLAN id in the frame, if tagged.
    pub vlan: Option<u16>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Bytes of the IP packet (header, extension headers and payload) per its header.
    pub ip_len: u32,
    /// TCP or UDP.
    pub protocol: TransportProtocol,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// TCP header fields; `None` for UDP.
    pub tcp: Option<TcpHeader>,
    /// Bytes of transport payload the packet carried, per the IP (and UDP) length fields:
    /// what the sender wrote, whether or not it was all captured.
    pub payload_len: u32,
    /// The captured prefix of the payload (`payload.len() <= payload_len`).
    pub payload: &'a [u8],
}

/// The layer at which decoding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Ethernet and VLAN headers.
    Ethernet,
    /// The IPv4 header.
    Ipv4,
    /// The IPv6 header and its extension headers.
    Ipv6,
    /// The TCP header.
    Tcp,
    /// The UDP header.
    Udp,
}

/// Why a frame was not decoded into a [`DecodedPacket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    /// Not IPv4 or IPv6 (ARP, LLDP ...); `ethertype` 0 for a raw-IP frame of another IP
    /// version.
    #[error("not an ip packet (ethertype {ethertype:#06x})")]
    NotIp {
        /// The frame's (innermost) ethertype.
        ethertype: u16,
    },
    /// An IP fragment; fragments are counted and skipped, not reassembled.
    #[error("ip fragment")]
    Fragment,
    /// An IP packet carrying neither TCP nor UDP (ICMP, ESP ...).
    #[error("ip protocol {protocol} is neither tcp nor udp")]
    OtherTransport {
        /// The IP protocol (next header) number.
        protocol: u8,
    },
    /// The captured bytes end inside a header.
    #[error("frame truncated in the {layer:?} header")]
    Truncated {
        /// Which header.
        layer: Layer,
    },
    /// A header contradicts itself or the frame.
    #[error("malformed {layer:?} header: {reason}")]
    Malformed {
        /// Which header.
        layer: Layer,
        /// What is wrong.
        reason: &'static str,
    },
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let field = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([field[0], field[1]]))
}

/// Decodes `data`, a frame of type `link` whose length on the wire was `wire_len` bytes.
pub fn decode(
    link: LinkType,
    data: &[u8],
    wire_len: u32,
) -> Result<DecodedPacket<'_>, DecodeError> {
    let wire_len = (wire_len as usize).max(data.len());
    let (ethertype, vlan, l3_offset) = match link {
        LinkType::Ethernet => ethernet(data)?,
        LinkType::RawIp => match data.first().map(|byte| byte >> 4) {
            Some(4) => (ETHERTYPE_IPV4, None, 0),
            Some(6) => (ETHERTYPE_IPV6, None, 0),
            Some(_) => return Err(DecodeError::NotIp { ethertype: 0 }),
            None => {
                return Err(DecodeError::Truncated { layer: Layer::Ipv4 });
            }
        },
    };
    // `l3_offset <= data.len() <= wire_len` holds: `ethernet` checked the headers it read.
    let l3 = &data[l3_offset..];
    let l3_wire_len = wire_len - l3_offset;
    let ip = match ethertype {
        ETHERTYPE_IPV4 => ipv4(l3, l3_wire_len)?,
        ETHERTYPE_IPV6 => ipv6(l3, l3_wire_len)?,
        other => return Err(DecodeError::NotIp { ethertype: other }),
    };
    // The transport segment: `ip.header_len..ip.total_len` of the IP packet, of which the
    // part within `l3` was captured.
    let captured_end = l3.len().min(ip.total_len);
    let segment = l3.get(ip.header_len..captured_end).unwrap_or_default();
    let segment_len = ip.total_len - ip.header_len;
    let ip_len = u32::try_from(ip.total_len).map_err(|_| DecodeError::Malformed {
        layer: Layer::Ipv4,
        reason: "packet longer than 4 GiB",
    })?;
    let transport = match ip.protocol {
        IPPROTO_TCP => tcp(segment, segment_len)?,
        IPPROTO_UDP => udp(segment, segment_len)?,
        protocol => return Err(DecodeError::OtherTransport { protocol }),
    };
    Ok(DecodedPacket {
        vlan,
        src: ip.src,
        dst: ip.dst,
        ip_len,
        protocol: transport.protocol,
        src_port: transport.src_port,
        dst_port: transport.dst_port,
        tcp: transport.tcp,
        payload_len: transport.payload_len,
        payload: transport.payload,
    })
}

/// Returns the ethertype after any VLAN tags, the outermost VLAN id and the offset of the
/// network header.
fn ethernet(data: &[u8]) -> Result<(u16, Option<u16>, usize), DecodeError> {
    let truncated = DecodeError::Truncated {
        layer: Layer::Ethernet,
    };
    let mut ethertype = be16(data, 12).ok_or(truncated)?;
    let mut offset = 14;
    let mut vlan = None;
    for _ in 0..MAX_VLAN_TAGS {
        if !matches!(
            ethertype,
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
        ) {
            break;
        }
        let tci = be16(data, offset).ok_or(truncated)?;
        ethertype = be16(data, offset + 2).ok_or(truncated)?;
        vlan.get_or_insert(tci & 0x0fff);
        offset += 4;
    }
    if offset > data.len() {
        return Err(truncated);
    }
    Ok((ethertype, vlan, offset))
}

struct IpInfo {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    /// IP header plus extension headers.
    header_len: usize,
    /// The whole IP packet per its length fields (`>= header_len`).
    total_len: usize,
}

fn ipv4(l3: &[u8], l3_wire_len: usize) -> Result<IpInfo, DecodeError> {
    let malformed = |reason| DecodeError::Malformed {
        layer: Layer::Ipv4,
        reason,
    };
    let header = l3
        .get(..20)
        .ok_or(DecodeError::Truncated { layer: Layer::Ipv4 })?;
    if header[0] >> 4 != 4 {
        return Err(malformed("version is not 4"));
    }
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if header_len < 20 {
        return Err(malformed("header length below 20 bytes"));
    }
    if l3.len() < header_len {
        return Err(DecodeError::Truncated { layer: Layer::Ipv4 });
    }
    let mut total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if total_len == 0 {
        // TSO / BIG TCP super-packets captured before segmentation carry total length 0:
        // the frame's length is the packet's.
        total_len = l3_wire_len;
    }
    if total_len < header_len {
        return Err(malformed("total length below header length"));
    }
    if total_len > l3_wire_len {
        return Err(malformed("total length beyond the frame"));
    }
    let fragment = u16::from_be_bytes([header[6], header[7]]);
    let more_fragments = fragment & 0x2000 != 0;
    let fragment_offset = fragment & 0x1fff;
    if more_fragments || fragment_offset != 0 {
        return Err(DecodeError::Fragment);
    }
    let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    Ok(IpInfo {
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        protocol: header[9],
        header_len,
        total_len,
    })
}

fn ipv6(l3: &[u8], l3_wire_len: usize) -> Result<IpInfo, DecodeError> {
    let truncated = DecodeError::Truncated { layer: Layer::Ipv6 };
    let malformed = |reason| DecodeError::Malformed {
        layer: Layer::Ipv6,
        reason,
    };
    let header = l3.get(..40).ok_or(truncated)?;
    if header[0] >> 4 != 6 {
        return Err(malformed("version is not 6"));
    }
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let total_len = if payload_len == 0 {
        // Jumbograms and BIG TCP: the length is the frame's.
        l3_wire_len
    } else {
        40 + payload_len
    };
    if total_len > l3_wire_len {
        return Err(malformed("payload length beyond the frame"));
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&header[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&header[24..40]);
    let mut next = header[6];
    let mut offset = 40;
    for _ in 0..MAX_IPV6_EXTENSIONS {
        let extension_len = match next {
            // Hop-by-hop, routing, destination options, mobility: 8-octet units after
            // the first 8.
            0 | 43 | 60 | 135 => {
                let length = *l3.get(offset + 1).ok_or(truncated)?;
                (usize::from(length) + 1) * 8
            }
            // Authentication header: 4-octet units, minus 2.
            51 => {
                let length = *l3.get(offset + 1).ok_or(truncated)?;
                (usize::from(length) + 2) * 4
            }
            44 => {
                let fragment = be16(l3, offset + 2).ok_or(truncated)?;
                // An atomic fragment (offset 0, no more fragments) is a whole packet.
                if fragment & 0xfff9 != 0 {
                    return Err(DecodeError::Fragment);
                }
                8
            }
            _ => break,
        };
        next = *l3.get(offset).ok_or(truncated)?;
        offset += extension_len;
        if offset > total_len {
            return Err(malformed("extension headers beyond the payload length"));
        }
        if offset > l3.len() {
            return Err(truncated);
        }
    }
    Ok(IpInfo {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        protocol: next,
        header_len: offset,
        total_len,
    })
}

struct Transport<'a> {
    protocol: TransportProtocol,
    src_port: u16,
    dst_port: u16,
    tcp: Option<TcpHeader>,
    payload_len: u32,
    payload: &'a [u8],
}

/// `segment` is the captured part of a transport segment of `segment_len` bytes.
fn tcp(segment: &[u8], segment_len: usize) -> Result<Transport<'_>, DecodeError> {
    let malformed = |reason| DecodeError::Malformed {
        layer: Layer::Tcp,
        reason,
    };
    if segment_len < 20 {
        return Err(malformed("segment shorter than a tcp header"));
    }
    let header = segment
        .get(..20)
        .ok_or(DecodeError::Truncated { layer: Layer::Tcp })?;
    let header_len = usize::from(header[12] >> 4) * 4;
    if header_len < 20 {
        return Err(malformed("data offset below 20 bytes"));
    }
    if header_len > segment_len {
        return Err(malformed("data offset beyond the segment"));
    }
    let payload_len = u32::try_from(segment_len - header_len).map_err(|_| malformed("too long"))?;
    let payload = segment.get(header_len..).unwrap_or_default();
    Ok(Transport {
        protocol: TransportProtocol::Tcp,
        src_port: u16::from_be_bytes([header[0], header[1]]),
        dst_port: u16::from_be_bytes([header[2], header[3]]),
        tcp: Some(TcpHeader {
            seq: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
            ack: u32::from_be_bytes([header[8], header[9], header[10], header[11]]),
            flags: TcpFlags(header[13]),
            window: u16::from_be_bytes([header[14], header[15]]),
        }),
        payload_len,
        payload,
    })
}

fn udp(segment: &[u8], segment_len: usize) -> Result<Transport<'_>, DecodeError> {
    let malformed = |reason| DecodeError::Malformed {
        layer: Layer::Udp,
        reason,
    };
    if segment_len < 8 {
        return Err(malformed("segment shorter than a udp header"));
    }
    let header = segment
        .get(..8)
        .ok_or(DecodeError::Truncated { layer: Layer::Udp })?;
    let udp_len = match usize::from(u16::from_be_bytes([header[4], header[5]])) {
        // UDP jumbograms (IPv6) carry length 0: the IP length rules.
        0 => segment_len,
        length if length < 8 => return Err(malformed("length below 8 bytes")),
        length if length > segment_len => return Err(malformed("length beyond the packet")),
        length => length,
    };
    let payload_len = u32::try_from(udp_len - 8).map_err(|_| malformed("too long"))?;
    let captured = segment.len().min(udp_len);
    let payload = segment.get(8..captured).unwrap_or_default();
    Ok(Transport {
        protocol: TransportProtocol::Udp,
        src_port: u16::from_be_bytes([header[0], header[1]]),
        dst_port: u16::from_be_bytes([header[2], header[3]]),
        tcp: None,
        payload_len,
        payload,
    })
}

/// Builders of hand-made frames, for tests here and in the flow table.
#[cfg(test)]
pub(crate) mod build {
    use std::net::IpAddr;

    use super::TcpFlags;

    /// A TCP segment in an Ethernet frame (IPv4 or IPv6 after the addresses), checksums
    /// left zero. `payload_len` may exceed `payload.len()`: the IP length then claims
    /// bytes that were not captured.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tcp_frame(
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        seq: u32,
        ack: u32,
        flags: TcpFlags,
        window: u16,
        payload: &[u8],
        payload_len: usize,
    ) -> Vec<u8> {
        let mut tcp = Vec::with_capacity(20 + payload.len());
        tcp.extend_from_slice(&src.1.to_be_bytes());
        tcp.extend_from_slice(&dst.1.to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&ack.to_be_bytes());
        tcp.push(5 << 4);
        tcp.push(flags.0);
        tcp.extend_from_slice(&window.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        let segment_len = 20 + payload_len;
        tcp.extend_from_slice(payload);
        ip_frame(src.0, dst.0, 6, &tcp, segment_len)
    }

    /// A UDP datagram in an Ethernet frame.
    pub(crate) fn udp_frame(src: (IpAddr, u16), dst: (IpAddr, u16), payload: &[u8]) -> Vec<u8> {
        let mut udp = Vec::with_capacity(8 + payload.len());
        udp.extend_from_slice(&src.1.to_be_bytes());
        udp.extend_from_slice(&dst.1.to_be_bytes());
        udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        ip_frame(src.0, dst.0, 17, &udp, udp.len())
    }

    /// An Ethernet frame carrying `segment` (captured part of a `segment_len`-byte
    /// transport segment) in IPv4 or IPv6.
    pub(crate) fn ip_frame(
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        segment: &[u8],
        segment_len: usize,
    ) -> Vec<u8> {
        let mut frame = vec![0u8; 12];
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                frame.extend_from_slice(&0x0800u16.to_be_bytes());
                frame.extend_from_slice(&[0x45, 0]);
                frame.extend_from_slice(&((20 + segment_len) as u16).to_be_bytes());
                frame.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
                frame.extend_from_slice(&src.octets());
                frame.extend_from_slice(&dst.octets());
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                frame.extend_from_slice(&0x86ddu16.to_be_bytes());
                frame.extend_from_slice(&[0x60, 0, 0, 0]);
                frame.extend_from_slice(&(segment_len as u16).to_be_bytes());
                frame.extend_from_slice(&[protocol, 64]);
                frame.extend_from_slice(&src.octets());
                frame.extend_from_slice(&dst.octets());
            }
            _ => panic!("mixed address families"),
        }
        frame.extend_from_slice(segment);
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use proptest::prelude::*;

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn wire(frame: &[u8]) -> u32 {
        frame.len() as u32
    }

    #[test]
    fn tcp_over_ipv4() {
        let frame = tcp_frame(
            (v4(1), 40000),
            (v4(2), 80),
            1000,
            2000,
            TcpFlags::ACK.union(TcpFlags::PSH),
            512,
            b"hello",
            5,
        );
        let packet = decode(LinkType::Ethernet, &frame, wire(&frame)).unwrap();
        assert_eq!(packet.src, v4(1));
        assert_eq!(packet.dst, v4(2));
        assert_eq!((packet.src_port, packet.dst_port), (40000, 80));
        assert_eq!(packet.protocol, TransportProtocol::Tcp);
        assert_eq!(packet.ip_len, 20 + 20 + 5);
        let tcp = packet.tcp.unwrap();
        assert_eq!((tcp.seq, tcp.ack, tcp.window), (1000, 2000, 512));
        assert!(tcp.flags.contains(TcpFlags::PSH) && !tcp.flags.contains(TcpFlags::SYN));
        assert_eq!(packet.payload_len, 5);
        assert_eq!(packet.payload, b"hello");
        assert_eq!(packet.vlan, None);
    }

    #[test]
    fn udp_over_ipv6_and_vlan_tags() {
        let src: IpAddr = "fd00::1".parse().unwrap();
        let dst: IpAddr = "fd00::2".parse().unwrap();
        let plain = udp_frame((src, 5353), (dst, 53), b"query");
        // Insert an 802.1ad and an 802.1Q tag after the MAC addresses.
        let mut tagged = plain[..12].to_vec();
        tagged.extend_from_slice(&[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00, 0x07]);
        tagged.extend_from_slice(&plain[12..]);
        for frame in [&plain, &tagged] {
            let packet = decode(LinkType::Ethernet, frame, wire(frame)).unwrap();
            assert_eq!((packet.src, packet.dst), (src, dst));
            assert_eq!(packet.protocol, TransportProtocol::Udp);
            assert_eq!((packet.src_port, packet.dst_port), (5353, 53));
            assert_eq!(packet.payload, b"query");
            assert_eq!(packet.payload_len, 5);
            assert_eq!(packet.ip_len, 40 + 8 + 5);
            assert_eq!(packet.tcp, None);
        }
        let packet = decode(LinkType::Ethernet, &tagged, wire(&tagged)).unwrap();
        assert_eq!(packet.vlan, Some(100));
        // The same packet without a link header.
        let packet = decode(LinkType::RawIp, &plain[14..], wire(&plain) - 14).unwrap();
        assert_eq!(packet.payload, b"query");
    }

    #[test]
    fn lengths_come_from_ip_not_from_capture() {
        // 1000 bytes of payload of which 10 were captured (snap length).
        let frame = tcp_frame(
            (v4(1), 40000),
            (v4(2), 80),
            1,
            1,
            TcpFlags::ACK,
            100,
            &[b'x'; 10],
            1000,
        );
        let packet = decode(LinkType::Ethernet, &frame, wire(&frame) + 990).unwrap();
        assert_eq!(packet.payload_len, 1000);
        assert_eq!(packet.payload.len(), 10);
        // Ethernet padding after a short packet is not payload.
        let mut padded = tcp_frame(
            (v4(1), 40000),
            (v4(2), 80),
            1,
            1,
            TcpFlags::ACK,
            100,
            b"",
            0,
        );
        padded.extend_from_slice(&[0u8; 6]);
        let packet = decode(LinkType::Ethernet, &padded, wire(&padded)).unwrap();
        assert_eq!(packet.payload_len, 0);
        assert!(packet.payload.is_empty());
        // An IP length beyond the frame on the wire is a lie.
        let frame = tcp_frame(
            (v4(1), 40000),
            (v4(2), 80),
            1,
            1,
            TcpFlags::ACK,
            100,
            b"",
            50,
        );
        assert!(matches!(
            decode(LinkType::Ethernet, &frame, wire(&frame)),
            Err(DecodeError::Malformed {
                layer: Layer::Ipv4,
                ..
            })
        ));
    }

    #[test]
    fn zero_total_length_uses_the_frame_length() {
        let mut frame = tcp_frame(
            (v4(1), 40000),
            (v4(2), 80),
            1,
            1,
            TcpFlags::ACK,
            100,
            &[b'y'; 100],
            100,
        );
        frame[16] = 0;
        frame[17] = 0;
        let packet = decode(LinkType::Ethernet, &frame, wire(&frame)).unwrap();
        assert_eq!(packet.payload_len, 100);
    }

    #[test]
    fn what_is_skipped_and_why() {
        let frame = tcp_frame((v4(1), 1), (v4(2), 2), 0, 0, TcpFlags::SYN, 0, b"", 0);
        // Fragments: MF set, or an offset.
        for (byte_6, byte_7) in [(0x20, 0x00), (0x00, 0x10)] {
            let mut fragment = frame.clone();
            fragment[20] = byte_6;
            fragment[21] = byte_7;
            assert_eq!(
                decode(LinkType::Ethernet, &fragment, wire(&fragment)),
                Err(DecodeError::Fragment)
            );
        }
        // ICMP.
        let mut icmp = frame.clone();
        icmp[23] = 1;
        assert_eq!(
            decode(LinkType::Ethernet, &icmp, wire(&icmp)),
            Err(DecodeError::OtherTransport { protocol: 1 })
        );
        // ARP.
        let mut arp = frame.clone();
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(
            decode(LinkType::Ethernet, &arp, wire(&arp)),
            Err(DecodeError::NotIp { ethertype: 0x0806 })
        );
        // Cut inside the TCP header.
        assert_eq!(
            decode(LinkType::Ethernet, &frame[..40], wire(&frame)),
            Err(DecodeError::Truncated { layer: Layer::Tcp })
        );
        // Cut inside the Ethernet header.
        assert_eq!(
            decode(LinkType::Ethernet, &frame[..10], 10),
            Err(DecodeError::Truncated {
                layer: Layer::Ethernet
            })
        );
        // A data offset below 5 words.
        let mut bad = frame.clone();
        bad[14 + 20 + 12] = 4 << 4;
        assert!(matches!(
            decode(LinkType::Ethernet, &bad, wire(&bad)),
            Err(DecodeError::Malformed {
                layer: Layer::Tcp,
                ..
            })
        ));
    }

    #[test]
    fn ipv6_extension_headers_and_fragments() {
        let src: IpAddr = "fd00::1".parse().unwrap();
        let dst: IpAddr = "fd00::2".parse().unwrap();
        let udp = udp_frame((src, 1000), (dst, 2000), b"abc");
        let build = |extension: &[u8], first_next: u8| {
            let mut frame = udp[..54].to_vec();
            let payload_len = (udp.len() - 54 + extension.len()) as u16;
            frame[18..20].copy_from_slice(&payload_len.to_be_bytes());
            frame[20] = first_next;
            frame.extend_from_slice(extension);
            frame.extend_from_slice(&udp[54..]);
            frame
        };
        // Hop-by-hop options (8 bytes) then UDP.
        let frame = build(&[17, 0, 1, 4, 0, 0, 0, 0], 0);
        let packet = decode(LinkType::Ethernet, &frame, wire(&frame)).unwrap();
        assert_eq!(packet.payload, b"abc");
        assert_eq!(packet.ip_len, 40 + 8 + 8 + 3);
        // An atomic fragment is a whole packet; a real one is skipped.
        let frame = build(&[17, 0, 0, 0, 0, 0, 0, 1], 44);
        assert!(decode(LinkType::Ethernet, &frame, wire(&frame)).is_ok());
        let frame = build(&[17, 0, 0, 1, 0, 0, 0, 1], 44);
        assert_eq!(
            decode(LinkType::Ethernet, &frame, wire(&frame)),
            Err(DecodeError::Fragment)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Any bytes: no panic, and a decoded packet never claims more captured payload
        /// than its length fields allow, or more than the frame holds.
        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            extra in 0u32..3000,
            raw in any::<bool>(),
        ) {
            let link = if raw { LinkType::RawIp } else { LinkType::Ethernet };
            let wire_len = data.len() as u32 + extra;
            if let Ok(packet) = decode(link, &data, wire_len) {
                prop_assert!(packet.payload.len() <= packet.payload_len as usize);
                prop_assert!(packet.ip_len <= wire_len);
                prop_assert!(packet.payload_len < packet.ip_len);
            }
        }

        /// Valid frames mutated at one byte and cut anywhere: no panic, same invariants.
        #[test]
        fn mutated_frames_never_panic(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            position in any::<prop::sample::Index>(),
            value in any::<u8>(),
            cut in any::<prop::sample::Index>(),
            six in any::<bool>(),
            udp in any::<bool>(),
        ) {
            let (src, dst): (IpAddr, IpAddr) = if six {
                ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
            } else {
                (v4(1), v4(2))
            };
            let mut frame = if udp {
                udp_frame((src, 1), (dst, 2), &payload)
            } else {
                tcp_frame((src, 1), (dst, 2), 7, 9, TcpFlags::ACK, 3, &payload, payload.len())
            };
            let wire_len = frame.len() as u32;
            let intact = decode(LinkType::Ethernet, &frame, wire_len).unwrap();
            prop_assert_eq!(intact.payload, &payload[..]);
            prop_assert_eq!(intact.payload_len as usize, payload.len());
            let at = position.index(frame.len());
            frame[at] = value;
            let end = cut.index(frame.len() + 1);
            if let Ok(packet) = decode(LinkType::Ethernet, &frame[..end], wire_len) {
                prop_assert!(packet.payload.len() <= packet.payload_len as usize);
                prop_assert!(packet.ip_len <= wire_len);
            }
        }
    }
}
