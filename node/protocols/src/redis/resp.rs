//! RESP2 and RESP3 framing: where a value ends, from the captured prefix of a buffer.
//!
//! Pure functions over `&[u8]`: no allocation, recursion bounded by [`MAX_DEPTH`], every
//! loop bounded by the buffer (each value takes at least three bytes).

/// Deepest nesting of aggregates accepted (Redis' own replies stay far below).
pub(super) const MAX_DEPTH: usize = 32;
/// Longest length or count line (`$`, `*` ...): a sign and 19 digits.
const MAX_NUMBER_LINE: usize = 20;
/// Longest simple string, error or number line accepted.
const MAX_SIMPLE_LINE: usize = 64 * 1024;
/// Largest blob accepted (Redis' `proto-max-bulk-len` defaults to 512 MiB).
pub(super) const MAX_BLOB: u64 = 1 << 40;

/// How far a value reaches in a buffer that starts with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scan {
    /// The value is complete and ends at this offset.
    Done(usize),
    /// The buffer ends inside the value. `total` is the value's length when only the payload
    /// of a blob is missing and nothing follows that blob inside the value.
    Partial { total: Option<u64> },
    /// Not RESP.
    Invalid,
}

/// Where a CRLF-terminated line starting at `start` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Line {
    /// The index of the line's `\r`.
    End(usize),
    /// The buffer ends inside the line.
    Incomplete,
    /// A bare `\r` or `\n`, or longer than allowed.
    Invalid,
}

/// Finds the CRLF ending the line that starts at `start`, at most `max` bytes on.
pub(super) fn line(buf: &[u8], start: usize, max: usize) -> Line {
    let rest = buf.get(start..).unwrap_or_default();
    for (i, &b) in rest.iter().enumerate() {
        if i > max {
            return Line::Invalid;
        }
        match b {
            b'\r' => {
                return match rest.get(i + 1) {
                    Some(b'\n') => Line::End(start + i),
                    Some(_) => Line::Invalid,
                    None => Line::Incomplete,
                };
            }
            b'\n' => return Line::Invalid,
            _ => {}
        }
    }
    if rest.len() > max {
        Line::Invalid
    } else {
        Line::Incomplete
    }
}

/// A decimal integer with an optional sign, as RESP writes lengths, counts and integers.
pub(super) fn parse_int(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

/// A length or count line after a type byte at `at`: its value and where the next byte is.
pub(super) enum Header {
    Value(i64, usize),
    Incomplete,
    Invalid,
}

/// Reads the number line that follows the type byte at `at`.
pub(super) fn header(buf: &[u8], at: usize) -> Header {
    match line(buf, at + 1, MAX_NUMBER_LINE) {
        Line::End(end) => match buf.get(at + 1..end).and_then(parse_int) {
            Some(value) => Header::Value(value, end + 2),
            None => Header::Invalid,
        },
        Line::Incomplete => {
            // a prefix of a number line is only digits (after an optional sign)
            let partial = buf.get(at + 1..).unwrap_or_default();
            let partial = partial.strip_suffix(b"\r").unwrap_or(partial);
            let digits = partial.strip_prefix(b"-").unwrap_or(partial);
            if digits.iter().all(u8::is_ascii_digit) {
                Header::Incomplete
            } else {
                Header::Invalid
            }
        }
        Line::Invalid => Header::Invalid,
    }
}

/// Scans the RESP value that starts at `buf[0]`.
pub(super) fn scan(buf: &[u8]) -> Scan {
    scan_at(buf, 0, 0)
}

fn scan_at(buf: &[u8], at: usize, depth: usize) -> Scan {
    let Some(&kind) = buf.get(at) else {
        return Scan::Partial { total: None };
    };
    if depth > MAX_DEPTH {
        return Scan::Invalid;
    }
    match kind {
        b'+' | b'-' => simple_line(buf, at, |_| true),
        b':' | b'(' => simple_line(buf, at, |text| parse_number(text, kind == b'(')),
        b',' => simple_line(buf, at, |text| {
            !text.is_empty()
                && text
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
        }),
        b'#' => fixed(buf, at, &[b"#t\r\n", b"#f\r\n"]),
        b'_' => fixed(buf, at, &[b"_\r\n"]),
        b'$' | b'!' | b'=' => blob(buf, at, kind == b'$'),
        b'*' | b'~' | b'>' | b'%' | b'|' => aggregate(buf, at, kind, depth),
        _ => Scan::Invalid,
    }
}

fn parse_number(text: &[u8], big: bool) -> bool {
    let digits = match text {
        [b'-' | b'+', rest @ ..] => rest,
        _ => text,
    };
    !digits.is_empty() && (big || digits.len() <= 19) && digits.iter().all(u8::is_ascii_digit)
}

fn simple_line(buf: &[u8], at: usize, valid: impl Fn(&[u8]) -> bool) -> Scan {
    match line(buf, at + 1, MAX_SIMPLE_LINE) {
        Line::End(end) if valid(&buf[at + 1..end]) => Scan::Done(end + 2),
        Line::End(_) | Line::Invalid => Scan::Invalid,
        Line::Incomplete => Scan::Partial { total: None },
    }
}

fn fixed(buf: &[u8], at: usize, forms: &[&[u8]]) -> Scan {
    let rest = &buf[at..];
    for form in forms {
        if rest.starts_with(form) {
            return Scan::Done(at + form.len());
        }
        if form.starts_with(rest) {
            return Scan::Partial { total: None };
        }
    }
    Scan::Invalid
}

fn blob(buf: &[u8], at: usize, nullable: bool) -> Scan {
    let (len, start) = match header(buf, at) {
        Header::Value(-1, next) if nullable => return Scan::Done(next),
        Header::Value(len, next) if len >= 0 && len.unsigned_abs() <= MAX_BLOB => {
            (len.unsigned_abs(), next)
        }
        Header::Value(..) | Header::Invalid => return Scan::Invalid,
        Header::Incomplete => return Scan::Partial { total: None },
    };
    let end = start as u64 + len + 2;
    if end <= buf.len() as u64 {
        let end = end as usize;
        return if &buf[end - 2..end] == b"\r\n" {
            Scan::Done(end)
        } else {
            Scan::Invalid
        };
    }
    // the captured part of the terminator must be right
    let terminator = start as u64 + len;
    if terminator < buf.len() as u64 && buf[terminator as usize] != b'\r' {
        return Scan::Invalid;
    }
    Scan::Partial { total: Some(end) }
}

fn aggregate(buf: &[u8], at: usize, kind: u8, depth: usize) -> Scan {
    let (count, mut next) = match header(buf, at) {
        Header::Value(-1, next) if kind == b'*' => return Scan::Done(next),
        Header::Value(count, next) if count >= 0 && count.unsigned_abs() <= MAX_BLOB => {
            (count.unsigned_abs(), next)
        }
        Header::Value(..) | Header::Invalid => return Scan::Invalid,
        Header::Incomplete => return Scan::Partial { total: None },
    };
    // maps and attributes hold key/value pairs
    let elements = if matches!(kind, b'%' | b'|') {
        count * 2
    } else {
        count
    };
    let mut index = 0;
    while index < elements {
        match scan_at(buf, next, depth + 1) {
            Scan::Done(end) => next = end,
            Scan::Partial { total } => {
                // only the last element's blob tail missing: the value's end is known
                let last = index + 1 == elements && kind != b'|';
                return Scan::Partial {
                    total: total.filter(|_| last),
                };
            }
            Scan::Invalid => return Scan::Invalid,
        }
        index += 1;
    }
    if kind == b'|' {
        // an attribute describes the value that follows it: together they are one value
        return scan_at(buf, next, depth + 1);
    }
    Scan::Done(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_values_of_every_type() {
        let values: [&[u8]; 18] = [
            b"+OK\r\n",
            b"-ERR unknown command 'foo'\r\n",
            b":-42\r\n",
            b"$5\r\nhello\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$3\r\nfoo\r\n:1\r\n",
            b"_\r\n",
            b"#t\r\n",
            b",3.14\r\n",
            b",-inf\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
            b"!21\r\nSYNTAX invalid syntax\r\n",
            b"=15\r\ntxt:Some string\r\n",
            b"%2\r\n+first\r\n:1\r\n+second\r\n~1\r\n_\r\n",
            b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:2039123\r\n",
        ];
        for value in values {
            assert_eq!(scan(value), Scan::Done(value.len()), "{value:?}");
            let mut longer = value.to_vec();
            longer.extend_from_slice(b"+next\r\n");
            assert_eq!(scan(&longer), Scan::Done(value.len()), "{value:?}");
        }
    }

    #[test]
    fn every_prefix_is_partial_and_blob_tails_have_a_total() {
        let value = b">3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$10\r\n0123456789\r\n";
        for cut in 0..value.len() {
            let expected_total = (cut >= 32).then_some(value.len() as u64);
            assert_eq!(
                scan(&value[..cut]),
                Scan::Partial {
                    total: expected_total
                },
                "cut at {cut}"
            );
        }
        // a blob that is not the last element does not tell where the value ends
        let value = b"*2\r\n$10\r\n0123456789\r\n:1\r\n";
        assert_eq!(scan(&value[..12]), Scan::Partial { total: None });
        // an attribute is followed by its value
        let value = b"|1\r\n+a\r\n$1\r\nb\r\n$3\r\nxyz\r\n";
        assert_eq!(scan(&value[..20]), Scan::Partial { total: Some(24) });
        assert_eq!(scan(&value[..14]), Scan::Partial { total: None });
    }

    #[test]
    fn malformed_values_are_invalid() {
        let values: [&[u8]; 14] = [
            b"?3\r\n",
            b"+OK\rX",
            b"+O\nK\r\n",
            b":12a\r\n",
            b"$3\r\nabcd\r\n",
            b"$-2\r\n",
            b"$x\r\n",
            b"*-2\r\n",
            b"*1\r\n?\r\n",
            b"#x\r\n",
            b"_x",
            b"!-1\r\n",
            b"$?\r\n;4\r\nHell\r\n",
            b"$3\r\nabcX",
        ];
        for value in values {
            assert_eq!(scan(value), Scan::Invalid, "{value:?}");
        }
        let mut deep = b"*1\r\n".repeat(MAX_DEPTH + 2);
        deep.extend_from_slice(b":1\r\n");
        assert_eq!(scan(&deep), Scan::Invalid);
        let long_header = b"$123456789012345678901234\r\n";
        assert_eq!(scan(long_header), Scan::Invalid);
    }

    #[test]
    fn huge_counts_do_not_loop_or_allocate() {
        assert_eq!(
            scan(b"*1099511627776\r\n:1\r\n:2\r\n"),
            Scan::Partial { total: None }
        );
        assert_eq!(scan(b"*1099511627777\r\n"), Scan::Invalid);
        assert_eq!(
            scan(b"$1099511627776\r\nab"),
            Scan::Partial {
                total: Some(1_099_511_627_776 + 18)
            }
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_int(b"-1"), Some(-1));
        assert_eq!(parse_int(b"+7"), Some(7));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert_eq!(parse_int(b""), None);
        assert_eq!(parse_int(b"-"), None);
        assert_eq!(parse_int(b"1 "), None);
    }
}
