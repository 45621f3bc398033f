//! MySQL packet framing and the generic packets (OK, ERR, EOF, handshake), as specified in
//! the MySQL client/server protocol documentation ("Protocol Basics", "Generic Response
//! Packets", "Connection Phase Packets").

/// Bytes of a packet header: 3-byte little-endian payload length, 1-byte sequence id.
pub(crate) const HEADER_LEN: usize = 4;
/// A payload of this length continues in the next packet (payloads of 16 MiB and more).
pub(crate) const MAX_PAYLOAD: usize = 0xff_ffff;

/// `CLIENT_MYSQL` (`CLIENT_LONG_PASSWORD`): set by MySQL clients; MariaDB clients clear it
/// and send extended capabilities.
pub(crate) const CLIENT_MYSQL: u32 = 0x0001;
/// `CLIENT_PROTOCOL_41`: the 4.1 protocol (SQLSTATE in ERR, 5-byte EOF).
pub(crate) const CLIENT_PROTOCOL_41: u32 = 0x0200;
/// `CLIENT_COMPRESS`: packets are wrapped in the compressed protocol after the login.
pub(crate) const CLIENT_COMPRESS: u32 = 0x0020;
/// `CLIENT_SSL`: TLS follows the (short) handshake response.
pub(crate) const CLIENT_SSL: u32 = 0x0800;
/// `CLIENT_ZSTD_COMPRESSION_ALGORITHM`: compressed protocol with zstd.
pub(crate) const CLIENT_ZSTD: u32 = 1 << 26;
/// `CLIENT_DEPRECATE_EOF`: OK packets (header 0xFE) replace EOF packets.
pub(crate) const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;
/// `CLIENT_QUERY_ATTRIBUTES`: COM_QUERY carries a parameter count before the SQL.
pub(crate) const CLIENT_QUERY_ATTRIBUTES: u32 = 1 << 27;
/// `SERVER_MORE_RESULTS_EXISTS` in an OK or EOF packet's status flags.
pub(crate) const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;

/// A packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Payload length.
    pub(crate) len: usize,
    /// Sequence id.
    pub(crate) seq: u8,
}

impl Header {
    /// The header at the start of `buf`, if all four bytes are there.
    pub(crate) fn parse(buf: &[u8]) -> Option<Header> {
        let b = buf.get(..HEADER_LEN)?;
        Some(Header {
            len: usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16,
            seq: b[3],
        })
    }

    /// Header and payload.
    pub(crate) fn wire_len(&self) -> u64 {
        (HEADER_LEN + self.len) as u64
    }

    /// The payload's captured bytes in `buf` (which starts with this header).
    pub(crate) fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(HEADER_LEN..buf.len().min(HEADER_LEN + self.len))
            .unwrap_or_default()
    }
}

/// A length-encoded integer at the start of `b`: its value and size. `None` when `b` is too
/// short or starts with 0xFB (NULL) or 0xFF, which are not integers.
pub(crate) fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    let le = |n: usize| -> Option<u64> {
        let bytes = b.get(1..1 + n)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        )
    };
    match *b.first()? {
        x @ 0..=0xfa => Some((u64::from(x), 1)),
        0xfc => Some((le(2)?, 3)),
        0xfd => Some((le(3)?, 4)),
        0xfe => Some((le(8)?, 9)),
        _ => None,
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let x = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
}

/// The fields of an OK packet (header 0x00, or 0xFE with `CLIENT_DEPRECATE_EOF`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OkPacket {
    pub(crate) affected_rows: u64,
    pub(crate) status: u16,
}

/// Parses an OK packet's payload; fields cut off by the capture are left at zero.
pub(crate) fn ok_packet(payload: &[u8]) -> OkPacket {
    let mut ok = OkPacket::default();
    let rest = payload.get(1..).unwrap_or_default();
    let Some((affected, n1)) = lenenc(rest) else {
        return ok;
    };
    ok.affected_rows = affected;
    let Some((_last_insert_id, n2)) = rest.get(n1..).and_then(lenenc) else {
        return ok;
    };
    ok.status = u16_at(rest, n1 + n2).unwrap_or(0);
    ok
}

/// The status flags of a packet that ends a result set: an EOF packet (shorter than 7
/// bytes) or an OK packet with header 0xFE.
pub(crate) fn end_status(payload: &[u8], payload_len: usize) -> OkPacket {
    if payload_len < 7 {
        OkPacket {
            affected_rows: 0,
            status: u16_at(payload, 3).unwrap_or(0),
        }
    } else {
        ok_packet(payload)
    }
}

/// An ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrPacket {
    pub(crate) code: u16,
    pub(crate) sql_state: String,
    pub(crate) message: String,
}

/// MariaDB's progress report travels as an ERR packet with this code; it is not an error.
pub(crate) const PROGRESS_REPORT: u16 = 0xffff;

/// Parses an ERR packet's payload (header 0xFF); `None` if the code was not captured.
pub(crate) fn err_packet(payload: &[u8]) -> Option<ErrPacket> {
    let code = u16_at(payload, 1)?;
    let rest = payload.get(3..).unwrap_or_default();
    let (sql_state, message) = match rest {
        [b'#', state @ ..] if state.len() >= 5 => (&state[..5], &state[5..]),
        _ => (&rest[..0], rest),
    };
    Some(ErrPacket {
        code,
        sql_state: crate::text::lossy(sql_state),
        message: crate::text::lossy(message),
    })
}

/// What a protocol-10 server greeting says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Greeting {
    pub(crate) server_version: String,
    pub(crate) capabilities: u32,
}

/// How far a buffer goes towards being a message of some kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check<T> {
    Yes(T),
    /// Consistent so far; more bytes are needed.
    Prefix,
    No,
}

/// Checks a protocol-10 greeting payload (`payload_len` long, `payload` captured of it).
pub(crate) fn greeting(payload: &[u8], payload_len: usize) -> Check<Greeting> {
    if !(20..=1024).contains(&payload_len) {
        return Check::No;
    }
    let Some((&version, rest)) = payload.split_first() else {
        return Check::Prefix;
    };
    if version != 10 {
        return Check::No;
    }
    let nul = rest.iter().position(|&b| b == 0);
    let name = &rest[..nul.unwrap_or(rest.len())];
    let printable = name.iter().all(|b| (0x20..0x7f).contains(b));
    if !printable
        || name.len() > 64
        || name.first().is_some_and(|b| !b.is_ascii_digit())
        || nul == Some(0)
    {
        return Check::No;
    }
    let Some(nul) = nul else {
        return Check::Prefix;
    };
    // thread id (4), auth data part 1 (8), filler (1), capability flags low (2)
    let after = 1 + nul + 1;
    if after + 15 > payload_len {
        return Check::No;
    }
    let Some(tail) = payload.get(after..after + 15) else {
        return Check::Prefix;
    };
    let low = u32::from(u16::from_le_bytes([tail[13], tail[14]]));
    if tail[12] != 0 || low & CLIENT_PROTOCOL_41 == 0 {
        return Check::No;
    }
    // character set (1), status (2), capability flags high (2)
    let high = u16_at(payload, after + 18).map_or(0, u32::from);
    Check::Yes(Greeting {
        server_version: crate::text::lossy(name),
        capabilities: low | high << 16,
    })
}

/// What a HandshakeResponse41 says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Login {
    pub(crate) capabilities: u32,
    pub(crate) user: String,
    /// The short response that asks for TLS, without a user.
    pub(crate) ssl_request: bool,
}

/// Checks a HandshakeResponse41 payload: capability flags with `CLIENT_PROTOCOL_41`, max
/// packet size, character set, 23 zero bytes (19 and MariaDB's extended capabilities when
/// `CLIENT_MYSQL` is clear), then a NUL-terminated user name (absent in the
/// 32-byte SSL request).
pub(crate) fn login(payload: &[u8], payload_len: usize) -> Check<Login> {
    if !(32..=4096).contains(&payload_len) {
        return Check::No;
    }
    let Some(capabilities) = u32_at(payload, 0) else {
        return Check::Prefix;
    };
    if capabilities & CLIENT_PROTOCOL_41 == 0 {
        return Check::No;
    }
    // MariaDB keeps its extended capabilities in the last 4 filler bytes (when
    // CLIENT_MYSQL, bit 0, is clear)
    let zeros = if capabilities & CLIENT_MYSQL == 0 {
        28
    } else {
        32
    };
    let filler = payload.get(9..zeros.min(payload.len())).unwrap_or_default();
    if filler.iter().any(|&b| b != 0) {
        return Check::No;
    }
    if payload.len() < 32 {
        return Check::Prefix;
    }
    if payload_len == 32 {
        return if capabilities & CLIENT_SSL != 0 {
            Check::Yes(Login {
                capabilities,
                user: String::new(),
                ssl_request: true,
            })
        } else {
            Check::No
        };
    }
    let rest = &payload[32..];
    let nul = rest.iter().position(|&b| b == 0);
    let user = &rest[..nul.unwrap_or(rest.len())];
    if user.len() > 256 || !user.iter().all(|b| (0x20..0x7f).contains(b) || *b >= 0x80) {
        return Check::No;
    }
    if nul.is_none() {
        return if 32 + rest.len() < payload_len {
            Check::Prefix
        } else {
            Check::No
        };
    }
    Check::Yes(Login {
        capabilities,
        user: crate::text::lossy(user),
        ssl_request: false,
    })
}

/// The statement id of a COM_STMT_* payload (after the command byte).
pub(crate) fn statement_id(payload: &[u8]) -> Option<u32> {
    u32_at(payload, 1)
}

/// A COM_STMT_PREPARE OK: statement id, columns, parameters.
pub(crate) fn prepare_ok(payload: &[u8]) -> Option<(u32, u16, u16)> {
    Some((
        u32_at(payload, 1)?,
        u16_at(payload, 5)?,
        u16_at(payload, 7)?,
    ))
}

/// Command bytes (`COM_*`).
pub(crate) mod com {
    pub(crate) const QUIT: u8 = 0x01;
    pub(crate) const INIT_DB: u8 = 0x02;
    pub(crate) const QUERY: u8 = 0x03;
    pub(crate) const FIELD_LIST: u8 = 0x04;
    pub(crate) const PROCESS_INFO: u8 = 0x0a;
    pub(crate) const CHANGE_USER: u8 = 0x11;
    pub(crate) const BINLOG_DUMP: u8 = 0x12;
    pub(crate) const STMT_PREPARE: u8 = 0x16;
    pub(crate) const STMT_EXECUTE: u8 = 0x17;
    pub(crate) const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub(crate) const STMT_CLOSE: u8 = 0x19;
    pub(crate) const STMT_RESET: u8 = 0x1a;
    pub(crate) const STMT_FETCH: u8 = 0x1c;
    pub(crate) const BINLOG_DUMP_GTID: u8 = 0x1e;
    /// MariaDB's `COM_STMT_BULK_EXECUTE`.
    pub(crate) const STMT_BULK_EXECUTE: u8 = 0xfa;
}

/// DeepFlow's names of the commands (`COM_*`), `None` for bytes that are no command a
/// client sends.
pub(crate) fn command_name(command: u8) -> Option<&'static str> {
    const NAMES: [&str; 32] = [
        "COM_SLEEP",
        "COM_QUIT",
        "COM_INIT_DB",
        "COM_QUERY",
        "COM_FIELD_LIST",
        "COM_CREATE_DB",
        "COM_DROP_DB",
        "COM_REFRESH",
        "COM_SHUTDOWN",
        "COM_STATISTICS",
        "COM_PROCESS_INFO",
        "COM_CONNECT",
        "COM_PROCESS_KILL",
        "COM_DEBUG",
        "COM_PING",
        "COM_TIME",
        "COM_DELAYED_INSERT",
        "COM_CHANGE_USER",
        "COM_BINLOG_DUMP",
        "COM_TABLE_DUMP",
        "COM_CONNECT_OUT",
        "COM_REGISTER_SLAVE",
        "COM_STMT_PREPARE",
        "COM_STMT_EXECUTE",
        "COM_STMT_SEND_LONG_DATA",
        "COM_STMT_CLOSE",
        "COM_STMT_RESET",
        "COM_SET_OPTION",
        "COM_STMT_FETCH",
        "COM_DAEMON",
        "COM_BINLOG_DUMP_GTID",
        "COM_RESET_CONNECTION",
    ];
    match command {
        // COM_SLEEP, COM_CONNECT, COM_TIME, COM_DELAYED_INSERT and COM_DAEMON are internal
        0x00 | 0x0b | 0x0f | 0x10 | 0x1d => None,
        com::STMT_BULK_EXECUTE => Some("COM_STMT_BULK_EXECUTE"),
        _ => NAMES.get(usize::from(command)).copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_encoded_integers() {
        assert_eq!(lenenc(&[0xfa]), Some((250, 1)));
        assert_eq!(lenenc(&[0xfc, 0x01, 0x02]), Some((0x0201, 3)));
        assert_eq!(lenenc(&[0xfd, 1, 2, 3]), Some((0x030201, 4)));
        assert_eq!(
            lenenc(&[0xfe, 1, 0, 0, 0, 0, 0, 0, 0x80]),
            Some((0x8000_0000_0000_0001, 9))
        );
        assert_eq!(lenenc(&[0xfc, 0x01]), None);
        assert_eq!(lenenc(&[0xfb]), None);
        assert_eq!(lenenc(&[0xff]), None);
        assert_eq!(lenenc(&[]), None);
    }

    #[test]
    fn generic_packets() {
        // OK: 3 affected rows, last insert id 0, SERVER_MORE_RESULTS_EXISTS | AUTOCOMMIT
        let ok = ok_packet(&[0x00, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00]);
        assert_eq!((ok.affected_rows, ok.status), (3, 0x000a));
        assert_eq!(ok_packet(&[0x00]), OkPacket::default());
        // EOF: warnings 0, status 0x0022
        assert_eq!(end_status(&[0xfe, 0, 0, 0x22, 0], 5).status, 0x22);
        let err = err_packet(b"\xff\x26\x04#23000Duplicate entry").unwrap();
        assert_eq!((err.code, err.sql_state.as_str()), (1062, "23000"));
        assert_eq!(err.message, "Duplicate entry");
        let old = err_packet(b"\xff\x15\x04Access denied").unwrap();
        assert_eq!(
            (old.code, old.sql_state.as_str(), old.message.as_str()),
            (1045, "", "Access denied")
        );
        assert_eq!(err_packet(b"\xff\x26"), None);
    }

    #[test]
    fn names() {
        assert_eq!(command_name(0x03), Some("COM_QUERY"));
        assert_eq!(command_name(0x1f), Some("COM_RESET_CONNECTION"));
        assert_eq!(command_name(0x00), None);
        assert_eq!(command_name(0x20), None);
        assert_eq!(command_name(0xfa), Some("COM_STMT_BULK_EXECUTE"));
    }
}
