//! The record header the kernel programs emit, mirrored from `bpf/socket_trace.h`.
//!
//! `tests/layout.rs` compiles the C header and checks that every size and offset
//! here matches it; change both together and rebuild the object with
//! `ebpf/bpf/build.sh`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Largest payload prefix the kernel copies per event (`FM_MAX_PAYLOAD`).
pub const MAX_PAYLOAD: u32 = 4096;

/// `AF_INET` as carried in [`SocketEventHeader::family`].
pub const AF_INET: u8 = 2;
/// `AF_INET6` as carried in [`SocketEventHeader::family`].
pub const AF_INET6: u8 = 10;
/// `IPPROTO_TCP` as carried in [`SocketEventHeader::l4_proto`].
pub const IPPROTO_TCP: u8 = 6;
/// `IPPROTO_UDP` as carried in [`SocketEventHeader::l4_proto`].
pub const IPPROTO_UDP: u8 = 17;

/// [`SocketEventHeader::flags`] bit `FM_FLAG_TLS`: a data event whose payload is
/// TLS plaintext, captured in OpenSSL (`SSL_write`, `SSL_read` and their `_ex`
/// variants) for the socket the header names.
///
/// The same socket also produces unflagged data events for the ciphertext its
/// syscalls carry. The two are separate byte streams: reassemble and parse
/// them apart, keyed by `(sock_id, is_tls())`.
pub const FLAG_TLS: u8 = 1;

/// `struct fm_socket_event`: the fixed header of every ring-buffer record; the
/// record continues with `payload_len` payload bytes.
///
/// Fields stay raw (`u8` for the enums) so that any record can be copied out
/// without validation; use the typed accessors ([`Self::event_kind`], ...) or
/// `TryFrom<u8>` on the enums to interpret them.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SocketEventHeader {
    /// `bpf_ktime_get_ns()` at syscall entry (CLOCK_MONOTONIC).
    pub enter_ns: u64,
    /// `bpf_ktime_get_ns()` at syscall exit.
    pub exit_ns: u64,
    /// Kernel address of the `struct sock`: unique while the socket lives.
    pub sock_id: u64,
    /// Data events: the thread's syscall trace id, 0 for none. A thread's read from a
    /// socket starts a trace unless it continues the request or is a reply to a request
    /// the thread sent during the trace; the thread's writes to other sockets carry the
    /// id until it writes to the socket the trace started on (the response). Unique
    /// within one kernel boot. Always 0 for other kinds.
    pub syscall_trace_id: u64,
    /// Process id (thread-group id).
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// The socket's file descriptor in `tgid` (the new fd for accept).
    pub fd: i32,
    /// Data events: bytes transferred (the syscall's return value, or the
    /// plaintext bytes of a [`FLAG_TLS`] event); otherwise 0.
    pub byte_count: u32,
    /// Payload bytes following the header: `<= byte_count` and `<=` the payload cap.
    pub payload_len: u32,
    /// TCP only: sequence number of the first transferred byte (`write_seq` at
    /// entry for egress, `copied_seq` at entry for ingress); 0 otherwise. The
    /// sender's egress value equals the receiver's ingress value for the same byte.
    /// Always 0 for [`FLAG_TLS`] events: plaintext has no sequence numbers.
    pub tcp_seq: u32,
    /// [`EventKind`] as `u8`.
    pub kind: u8,
    /// [`Direction`] as `u8`.
    pub direction: u8,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub l4_proto: u8,
    /// [`SyscallKind`] as `u8` (for [`FLAG_TLS`] events, the OpenSSL function).
    pub syscall: u8,
    /// `FLAG_*` bits ([`FLAG_TLS`]); unknown bits are reserved, 0 today.
    pub flags: u8,
    /// Local port, host byte order.
    pub local_port: u16,
    /// Remote port, host byte order (0 for an unconnected UDP socket without a
    /// sockaddr argument, and for a listener).
    pub remote_port: u16,
    /// IPv4: first 4 bytes in network order; IPv6: all 16 bytes.
    pub local_addr: [u8; 16],
    /// Same encoding as `local_addr`.
    pub remote_addr: [u8; 16],
    /// `comm` of the task, NUL-padded.
    pub comm: [u8; 16],
}

/// Size of [`SocketEventHeader`] in a record: the payload starts at this offset.
pub const HEADER_LEN: usize = std::mem::size_of::<SocketEventHeader>();

impl SocketEventHeader {
    /// Copies a header out of the start of `record` (no alignment needed), or
    /// `None` when the record is shorter than a header.
    pub fn read_from(record: &[u8]) -> Option<SocketEventHeader> {
        if record.len() < HEADER_LEN {
            return None;
        }
        // SAFETY: the length check above makes the read in bounds;
        // read_unaligned has no alignment requirement, and every bit pattern is a
        // valid SocketEventHeader (integers and byte arrays only).
        Some(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<SocketEventHeader>()) })
    }

    /// The event kind, or `None` for an unknown value.
    pub fn event_kind(&self) -> Option<EventKind> {
        EventKind::try_from(self.kind).ok()
    }

    /// The data direction, or `None` for an unknown value.
    pub fn data_direction(&self) -> Option<Direction> {
        Direction::try_from(self.direction).ok()
    }

    /// The syscall that produced the event, or `None` for an unknown value.
    pub fn syscall_kind(&self) -> Option<SyscallKind> {
        SyscallKind::try_from(self.syscall).ok()
    }

    /// Local address of the socket (unspecified when the socket is bound to any).
    pub fn local_ip(&self) -> IpAddr {
        addr_to_ip(self.family, &self.local_addr)
    }

    /// Remote address of the socket (for unconnected UDP, the syscall's peer).
    pub fn remote_ip(&self) -> IpAddr {
        addr_to_ip(self.family, &self.remote_addr)
    }

    /// The task's `comm` up to the first NUL, lossily decoded as UTF-8.
    pub fn comm_str(&self) -> std::borrow::Cow<'_, str> {
        let end = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        String::from_utf8_lossy(&self.comm[..end])
    }

    /// Whether this is a TCP socket.
    pub fn is_tcp(&self) -> bool {
        self.l4_proto == IPPROTO_TCP
    }

    /// Whether this is a UDP socket.
    pub fn is_udp(&self) -> bool {
        self.l4_proto == IPPROTO_UDP
    }

    /// Whether this data event carries TLS plaintext ([`FLAG_TLS`]) rather than
    /// the bytes a syscall moved.
    pub fn is_tls(&self) -> bool {
        self.flags & FLAG_TLS != 0
    }
}

/// IPv4 when `family` is `AF_INET`; otherwise the 16 bytes as IPv6 (v4-mapped
/// addresses of dual-stack sockets are left as they are).
fn addr_to_ip(family: u8, addr: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*addr))
    }
}

/// A `u8` that is not a valid value of the named enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidEnumValue {
    /// The enum that was being decoded.
    pub type_name: &'static str,
    /// The value found in the record.
    pub value: u8,
}

impl std::fmt::Display for InvalidEnumValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid {} value {}", self.type_name, self.value)
    }
}

impl std::error::Error for InvalidEnumValue {}

macro_rules! u8_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:expr,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)+
        }

        impl TryFrom<u8> for $name {
            type Error = InvalidEnumValue;

            fn try_from(value: u8) -> Result<Self, Self::Error> {
                match value {
                    $($value => Ok($name::$variant),)+
                    _ => Err(InvalidEnumValue { type_name: stringify!($name), value }),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(value: $name) -> u8 {
                value as u8
            }
        }
    };
}

u8_enum! {
    /// `enum fm_kind`.
    EventKind {
        /// Bytes were read or written ([`Direction`] says which).
        Data = 1,
        /// `connect` succeeded or is in progress.
        Connect = 2,
        /// `accept`/`accept4` returned a new socket (addresses are the new socket's).
        Accept = 3,
        /// `close` of a traced socket (reported at entry).
        Close = 4,
    }
}

u8_enum! {
    /// `enum fm_direction`.
    Direction {
        /// Not a data event.
        None = 0,
        /// The process wrote/sent.
        Egress = 1,
        /// The process read/received.
        Ingress = 2,
    }
}

u8_enum! {
    /// `enum fm_syscall`: the call that moved the bytes, a syscall or (for
    /// [`FLAG_TLS`] events) an OpenSSL function.
    SyscallKind {
        /// `read(2)`.
        Read = 0,
        /// `write(2)`.
        Write = 1,
        /// `readv(2)`.
        Readv = 2,
        /// `writev(2)`.
        Writev = 3,
        /// `sendto(2)` (also `send(3)`).
        Sendto = 4,
        /// `recvfrom(2)` (also `recv(3)`).
        Recvfrom = 5,
        /// `sendmsg(2)`.
        Sendmsg = 6,
        /// `recvmsg(2)`.
        Recvmsg = 7,
        /// `sendfile(2)`: egress data without payload.
        Sendfile = 8,
        /// `connect(2)`.
        Connect = 9,
        /// `accept(2)`.
        Accept = 10,
        /// `accept4(2)`.
        Accept4 = 11,
        /// `close(2)`.
        Close = 12,
        /// OpenSSL `SSL_write` ([`FLAG_TLS`] events only).
        SslWrite = 13,
        /// OpenSSL `SSL_read` ([`FLAG_TLS`] events only).
        SslRead = 14,
        /// OpenSSL `SSL_write_ex` ([`FLAG_TLS`] events only).
        SslWriteEx = 15,
        /// OpenSSL `SSL_read_ex` ([`FLAG_TLS`] events only).
        SslReadEx = 16,
        /// `sendmmsg(2)`: one event per message sent.
        Sendmmsg = 17,
        /// `recvmmsg(2)`: one event per message received.
        Recvmmsg = 18,
    }
}

/// Serialises a header field by field (padding zeroed), as the kernel lays it out.
#[cfg(test)]
pub(crate) fn encode(h: &SocketEventHeader) -> Vec<u8> {
    use std::mem::offset_of;
    let mut out = vec![0u8; HEADER_LEN];
    let mut put = |offset: usize, bytes: &[u8]| {
        out[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    put(
        offset_of!(SocketEventHeader, enter_ns),
        &h.enter_ns.to_ne_bytes(),
    );
    put(
        offset_of!(SocketEventHeader, exit_ns),
        &h.exit_ns.to_ne_bytes(),
    );
    put(
        offset_of!(SocketEventHeader, sock_id),
        &h.sock_id.to_ne_bytes(),
    );
    put(
        offset_of!(SocketEventHeader, syscall_trace_id),
        &h.syscall_trace_id.to_ne_bytes(),
    );
    put(offset_of!(SocketEventHeader, tgid), &h.tgid.to_ne_bytes());
    put(offset_of!(SocketEventHeader, tid), &h.tid.to_ne_bytes());
    put(offset_of!(SocketEventHeader, fd), &h.fd.to_ne_bytes());
    put(
        offset_of!(SocketEventHeader, byte_count),
        &h.byte_count.to_ne_bytes(),
    );
    put(
        offset_of!(SocketEventHeader, payload_len),
        &h.payload_len.to_ne_bytes(),
    );
    put(
        offset_of!(SocketEventHeader, tcp_seq),
        &h.tcp_seq.to_ne_bytes(),
    );
    put(offset_of!(SocketEventHeader, kind), &[h.kind]);
    put(offset_of!(SocketEventHeader, direction), &[h.direction]);
    put(offset_of!(SocketEventHeader, family), &[h.family]);
    put(offset_of!(SocketEventHeader, l4_proto), &[h.l4_proto]);
    put(offset_of!(SocketEventHeader, syscall), &[h.syscall]);
    put(offset_of!(SocketEventHeader, flags), &[h.flags]);
    put(
        offset_of!(SocketEventHeader, local_port),
        &h.local_port.to_ne_bytes(),
    );
    put(
        offset_of!(SocketEventHeader, remote_port),
        &h.remote_port.to_ne_bytes(),
    );
    put(offset_of!(SocketEventHeader, local_addr), &h.local_addr);
    put(offset_of!(SocketEventHeader, remote_addr), &h.remote_addr);
    put(offset_of!(SocketEventHeader, comm), &h.comm);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SocketEventHeader {
        SocketEventHeader {
            enter_ns: 1_000_000_007,
            exit_ns: 1_000_000_900,
            sock_id: 0xffff_8880_1234_5678,
            syscall_trace_id: 0x0123_4567_89ab_cdef,
            tgid: 4242,
            tid: 4243,
            fd: -3,
            byte_count: 9,
            payload_len: 5,
            tcp_seq: 0xdead_beef,
            local_port: 8080,
            remote_port: 51000,
            kind: 1,
            direction: 2,
            family: AF_INET,
            l4_proto: IPPROTO_TCP,
            syscall: 5,
            local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [10, 1, 2, 3, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9],
            comm: *b"python3\0\0\0\0\0\0\0\0\0",
            ..SocketEventHeader::default()
        }
    }

    #[test]
    fn enums_round_trip_and_reject_unknown_values() {
        for v in 0..=u8::MAX {
            if let Ok(kind) = EventKind::try_from(v) {
                assert_eq!(u8::from(kind), v);
            }
            if let Ok(dir) = Direction::try_from(v) {
                assert_eq!(u8::from(dir), v);
            }
            if let Ok(sys) = SyscallKind::try_from(v) {
                assert_eq!(u8::from(sys), v);
            }
        }
        assert_eq!(EventKind::try_from(4), Ok(EventKind::Close));
        assert!(EventKind::try_from(0).is_err());
        assert!(EventKind::try_from(5).is_err());
        assert_eq!(Direction::try_from(1), Ok(Direction::Egress));
        assert!(Direction::try_from(3).is_err());
        assert_eq!(SyscallKind::try_from(8), Ok(SyscallKind::Sendfile));
        assert_eq!(SyscallKind::try_from(12), Ok(SyscallKind::Close));
        assert_eq!(SyscallKind::try_from(16), Ok(SyscallKind::SslReadEx));
        assert_eq!(SyscallKind::try_from(18), Ok(SyscallKind::Recvmmsg));
        let err = SyscallKind::try_from(19)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(err, Err("invalid SyscallKind value 19".to_string()));
    }

    #[test]
    fn ipv4_addresses_use_the_first_four_bytes() {
        let h = header();
        assert_eq!(h.local_ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(h.remote_ip(), IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    }

    #[test]
    fn ipv6_addresses_use_all_sixteen_bytes() {
        let mut h = header();
        h.family = AF_INET6;
        h.local_addr = Ipv6Addr::LOCALHOST.octets();
        let remote = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
        h.remote_addr = remote.octets();
        assert_eq!(h.local_ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(h.remote_ip(), IpAddr::V6(remote));
    }

    #[test]
    fn comm_stops_at_nul_and_tolerates_a_full_buffer() {
        let mut h = header();
        assert_eq!(h.comm_str(), "python3");
        h.comm = *b"0123456789abcdef";
        assert_eq!(h.comm_str(), "0123456789abcdef");
        h.comm = [0; 16];
        assert_eq!(h.comm_str(), "");
    }

    #[test]
    fn read_from_copies_unaligned_bytes_and_rejects_short_records() {
        let h = header();
        let mut bytes = vec![0u8; 1];
        bytes.extend_from_slice(&encode(&h));
        assert_eq!(SocketEventHeader::read_from(&bytes[1..]), Some(h));
        assert_eq!(SocketEventHeader::read_from(&bytes[1..HEADER_LEN]), None);
        assert_eq!(h.event_kind(), Some(EventKind::Data));
        assert_eq!(h.data_direction(), Some(Direction::Ingress));
        assert_eq!(h.syscall_kind(), Some(SyscallKind::Recvfrom));
        assert!(h.is_tcp() && !h.is_udp());
        assert!(!h.is_tls());
    }

    #[test]
    fn the_tls_flag_survives_a_round_trip() {
        let mut h = header();
        h.flags = FLAG_TLS;
        h.syscall = SyscallKind::SslWriteEx.into();
        h.direction = Direction::Egress.into();
        h.tcp_seq = 0;
        let bytes = encode(&h);
        let copied = SocketEventHeader::read_from(&bytes).expect("a full header");
        assert!(copied.is_tls());
        assert_eq!(copied.syscall_kind(), Some(SyscallKind::SslWriteEx));
        assert_eq!(copied, h);
    }
}
