//! Cheap recognisers for HTTP/1 start lines, used for inference and resynchronisation.
//!
//! They look only at the first line and accept a *prefix* of a valid line too, so that a
//! message split across syscalls can still be recognised once its first bytes arrive.

use super::head::Method;

/// How well bytes match the start of an HTTP/1 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineMatch {
    /// The bytes start with a complete, valid start line.
    Complete,
    /// The bytes are a strict prefix of a valid start line (more bytes needed to decide).
    Prefix,
    /// The bytes cannot start such a line.
    No,
}

/// Matches `METHOD SP request-target SP HTTP/1.(0|1) [CR] LF` with a known method.
pub fn match_request_line(bytes: &[u8]) -> LineMatch {
    if bytes.is_empty() {
        return LineMatch::Prefix;
    }
    // Method and the space after it.
    let mut method_end = None;
    let mut prefix_of_method = false;
    for method in Method::ALL {
        let name = method.as_str().as_bytes();
        let n = name.len().min(bytes.len());
        if bytes[..n] != name[..n] {
            continue;
        }
        if bytes.len() <= name.len() {
            prefix_of_method = true;
        } else if bytes[name.len()] == b' ' {
            method_end = Some(name.len() + 1);
            break;
        }
    }
    let Some(mut pos) = method_end else {
        return if prefix_of_method {
            LineMatch::Prefix
        } else {
            LineMatch::No
        };
    };
    // Request-target: at least one visible byte.
    let target_start = pos;
    while pos < bytes.len() && is_target_byte(bytes[pos]) {
        pos += 1;
    }
    if pos == bytes.len() {
        return LineMatch::Prefix;
    }
    if pos == target_start || bytes[pos] != b' ' {
        return LineMatch::No;
    }
    pos += 1;
    match match_version(&bytes[pos..]) {
        VersionMatch::Complete(n) => pos += n,
        VersionMatch::Prefix => return LineMatch::Prefix,
        VersionMatch::No => return LineMatch::No,
    }
    match_line_end(&bytes[pos..])
}

/// Matches `HTTP/1.(0|1) SP DIGIT DIGIT DIGIT [SP reason] [CR] LF`.
pub fn match_status_line(bytes: &[u8]) -> LineMatch {
    let mut pos = match match_version(bytes) {
        VersionMatch::Complete(n) => n,
        VersionMatch::Prefix => return LineMatch::Prefix,
        VersionMatch::No => return LineMatch::No,
    };
    let expect = |pos: &mut usize, ok: fn(u8) -> bool| -> Option<LineMatch> {
        match bytes.get(*pos) {
            None => Some(LineMatch::Prefix),
            Some(&b) if ok(b) => {
                *pos += 1;
                None
            }
            Some(_) => Some(LineMatch::No),
        }
    };
    if let Some(m) = expect(&mut pos, |b| b == b' ') {
        return m;
    }
    for _ in 0..3 {
        if let Some(m) = expect(&mut pos, |b| b.is_ascii_digit()) {
            return m;
        }
    }
    match bytes.get(pos) {
        None => LineMatch::Prefix,
        Some(b' ') => {
            pos += 1;
            while pos < bytes.len() && is_reason_byte(bytes[pos]) {
                pos += 1;
            }
            match_line_end(&bytes[pos..])
        }
        Some(_) => match_line_end(&bytes[pos..]),
    }
}

enum VersionMatch {
    Complete(usize),
    Prefix,
    No,
}

fn match_version(bytes: &[u8]) -> VersionMatch {
    const PREFIX: &[u8] = b"HTTP/1.";
    let n = PREFIX.len().min(bytes.len());
    if bytes[..n] != PREFIX[..n] {
        return VersionMatch::No;
    }
    match bytes.get(PREFIX.len()) {
        None => VersionMatch::Prefix,
        Some(b'0' | b'1') => VersionMatch::Complete(PREFIX.len() + 1),
        Some(_) => VersionMatch::No,
    }
}

fn match_line_end(bytes: &[u8]) -> LineMatch {
    match bytes {
        [] | [b'\r'] => LineMatch::Prefix,
        [b'\n', ..] | [b'\r', b'\n', ..] => LineMatch::Complete,
        _ => LineMatch::No,
    }
}

fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn is_reason_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            match_request_line(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            LineMatch::Complete
        );
        assert_eq!(
            match_request_line(b"OPTIONS * HTTP/1.0\n"),
            LineMatch::Complete
        );
        assert_eq!(
            match_request_line(b"CONNECT example.com:443 HTTP/1.1\r\n"),
            LineMatch::Complete
        );
        for n in 0..16 {
            let line = b"DELETE /x?y=1 HTTP/1.1\r\n";
            assert_eq!(match_request_line(&line[..n]), LineMatch::Prefix, "{n}");
        }
        assert_eq!(match_request_line(b"P"), LineMatch::Prefix);
        assert_eq!(match_request_line(b"PATCH"), LineMatch::Prefix);
        assert_eq!(match_request_line(b"GETX / HTTP/1.1\r\n"), LineMatch::No);
        assert_eq!(match_request_line(b"get / HTTP/1.1\r\n"), LineMatch::No);
        assert_eq!(match_request_line(b"GET  / HTTP/1.1\r\n"), LineMatch::No);
        assert_eq!(match_request_line(b"GET / HTTP/2.0\r\n"), LineMatch::No);
        assert_eq!(match_request_line(b"GET / HTTP/1.1x"), LineMatch::No);
        assert_eq!(match_request_line(b"*1\r\n$4\r\nPING\r\n"), LineMatch::No);
        assert_eq!(match_request_line(b"\x16\x03\x01\x02\x00"), LineMatch::No);
        assert_eq!(match_request_line(b"PRI * HTTP/2.0\r\n"), LineMatch::No);
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            match_status_line(b"HTTP/1.1 200 OK\r\n"),
            LineMatch::Complete
        );
        assert_eq!(match_status_line(b"HTTP/1.0 404\r\n"), LineMatch::Complete);
        assert_eq!(match_status_line(b"HTTP/1.1 204 \n"), LineMatch::Complete);
        for n in 0..17 {
            assert_eq!(
                match_status_line(&b"HTTP/1.1 503 Service Unavailable\r\n"[..n]),
                LineMatch::Prefix,
                "{n}"
            );
        }
        assert_eq!(match_status_line(b"HTTP/1.1 20x OK\r\n"), LineMatch::No);
        assert_eq!(match_status_line(b"HTTP/2 200\r\n"), LineMatch::No);
        assert_eq!(match_status_line(b"HTTP/1.1 2000 OK\r\n"), LineMatch::No);
        assert_eq!(match_status_line(b"HTTP/1.1 200 O\x01K\r\n"), LineMatch::No);
        assert_eq!(match_status_line(b"+OK\r\n"), LineMatch::No);
    }
}
