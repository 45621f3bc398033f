//! Go semantics for byte escapes in string literals.
//!
//! In PromQL (Go), `\xHH` and octal `\NNN` escapes are raw bytes: `"\xc3\xa9"` is `é`,
//! and `"\xff"` is a byte string that is not UTF-8. The parser we use decodes each such
//! escape as a Unicode code point instead (`"\xc3\xa9"` → `Ã©`). Before parsing, string
//! literals holding byte escapes ≥ 0x80 are decoded Go-style and rewritten with the
//! resulting characters; bytes that are not valid UTF-8 become U+FFFD, which label-name
//! validation then rejects, as Prometheus does.

use std::borrow::Cow;

/// Rewrites string literals whose byte escapes differ between Go and the parser.
pub(crate) fn normalize(query: &str) -> Cow<'_, str> {
    if !query.contains('\\') {
        return Cow::Borrowed(query);
    }
    let bytes = query.as_bytes();
    let mut out = String::with_capacity(query.len());
    let mut changed = false;
    let mut last = 0;
    let mut i = 0;
    while i < bytes.len() {
        let q = bytes[i];
        if q != b'"' && q != b'\'' && q != b'`' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < bytes.len() && bytes[i] != q {
            if bytes[i] == b'\\' && q != b'`' {
                i += 1;
            }
            i += 1;
        }
        let end = (i + 1).min(bytes.len());
        i = end;
        if q == b'`' || end - start < 2 || bytes[end - 1] != q {
            continue;
        }
        let inner = &query[start + 1..end - 1];
        if let Some(decoded) = decode_if_byte_escapes(inner) {
            out.push_str(&query[last..start]);
            out.push('"');
            for c in decoded.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
            last = end;
            changed = true;
        }
    }
    if !changed {
        return Cow::Borrowed(query);
    }
    out.push_str(&query[last..]);
    Cow::Owned(out)
}

/// Decodes a literal body Go-style if it has a byte escape ≥ 0x80; `None` otherwise or
/// when the escapes are malformed (the parser reports those).
fn decode_if_byte_escapes(inner: &str) -> Option<String> {
    let b = inner.as_bytes();
    let mut bytes = Vec::with_capacity(b.len());
    let mut high_byte = false;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            bytes.push(b[i]);
            i += 1;
            continue;
        }
        let c = *b.get(i + 1)?;
        i += 2;
        match c {
            b'a' => bytes.push(0x07),
            b'b' => bytes.push(0x08),
            b'f' => bytes.push(0x0c),
            b'n' => bytes.push(b'\n'),
            b'r' => bytes.push(b'\r'),
            b't' => bytes.push(b'\t'),
            b'v' => bytes.push(0x0b),
            b'\\' | b'"' | b'\'' => bytes.push(c),
            b'x' => {
                let v = u8::from_str_radix(inner.get(i..i + 2)?, 16).ok()?;
                high_byte |= v >= 0x80;
                bytes.push(v);
                i += 2;
            }
            b'0'..=b'7' => {
                let v = u16::from_str_radix(inner.get(i - 1..i + 2)?, 8).ok()?;
                let v = u8::try_from(v).ok()?;
                high_byte |= v >= 0x80;
                bytes.push(v);
                i += 2;
            }
            b'u' | b'U' => {
                let n = if c == b'u' { 4 } else { 8 };
                let v = u32::from_str_radix(inner.get(i..i + n)?, 16).ok()?;
                let ch = char::from_u32(v)?;
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                i += n;
            }
            _ => return None,
        }
    }
    high_byte.then(|| String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_escapes_follow_go() {
        assert_eq!(normalize(r#"x{a="\xc3\xa9"}"#), "x{a=\"é\"}");
        assert_eq!(normalize(r#"f("\xff")"#), "f(\"\u{fffd}\")");
        assert_eq!(normalize(r#"f("\u00e9\n")"#), r#"f("\u00e9\n")"#);
        assert_eq!(normalize(r#"f('\x41', "\303\251")"#), "f('\\x41', \"é\")");
    }
}
