//! The parser for one line.
//!
//! It works on the line's bytes after checking they are UTF-8. Every delimiter is ASCII, so
//! every slice boundary falls between characters; a backslash always takes the next byte with
//! it while scanning (so `\\,` is an escaped backslash followed by a real comma), and
//! [`unescape`] then decides per element which escapes mean something.

use super::{Limits, MAX_TIMESTAMP_NS, MIN_TIMESTAMP_NS, Point, Precision, point::FieldValue};
use crate::error::{LineErrorKind, excerpt};

/// Characters escaped in a measurement.
const MEASUREMENT_ESCAPES: &[char] = &[',', ' '];
/// Characters escaped in tag keys, tag values and field keys.
const KEY_ESCAPES: &[char] = &[',', '=', ' '];
/// Characters escaped in string field values.
const STRING_ESCAPES: &[char] = &['"'];

/// Parses one trimmed, non-empty, non-comment line.
pub(super) fn parse_line(
    line: &[u8],
    precision: Precision,
    limits: &Limits,
) -> Result<Point, LineErrorKind> {
    if line.len() > limits.max_line_bytes {
        return Err(LineErrorKind::LineTooLong {
            len: line.len(),
            limit: limits.max_line_bytes,
        });
    }
    let text = std::str::from_utf8(line).map_err(|_| LineErrorKind::InvalidUtf8)?;
    let bytes = text.as_bytes();
    let len = bytes.len();

    let end = scan(bytes, 0, |b| b == b',' || b == b' ');
    if end == 0 {
        return Err(LineErrorKind::MissingMeasurement);
    }
    let measurement = unescape(&text[..end], MEASUREMENT_ESCAPES);
    let mut pos = end;

    let mut tags = Vec::new();
    while pos < len && bytes[pos] == b',' {
        pos += 1;
        let key_end = scan(bytes, pos, |b| b == b'=' || b == b',' || b == b' ');
        if key_end == pos {
            return Err(LineErrorKind::MissingTagKey);
        }
        if key_end == len || bytes[key_end] != b'=' {
            return Err(LineErrorKind::MissingTagValue);
        }
        let value_start = key_end + 1;
        let value_end = scan(bytes, value_start, |b| b == b'=' || b == b',' || b == b' ');
        if value_end < len && bytes[value_end] == b'=' {
            return Err(LineErrorKind::InvalidTagFormat);
        }
        if value_end == value_start {
            return Err(LineErrorKind::MissingTagValue);
        }
        tags.push((
            unescape(&text[pos..key_end], KEY_ESCAPES),
            unescape(&text[value_start..value_end], KEY_ESCAPES),
        ));
        pos = value_end;
    }
    tags.sort_by(|a: &(String, String), b| a.0.cmp(&b.0));
    if let Some(pair) = tags.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(LineErrorKind::DuplicateTag {
            key: excerpt(&pair[0].0),
        });
    }

    pos = skip_spaces(bytes, pos);
    if pos == len {
        return Err(LineErrorKind::MissingFields);
    }

    let mut fields = Vec::new();
    loop {
        let key_end = scan(bytes, pos, |b| b == b'=' || b == b',' || b == b' ');
        if key_end == pos {
            return Err(LineErrorKind::MissingFieldKey);
        }
        if key_end == len || bytes[key_end] != b'=' {
            return Err(LineErrorKind::InvalidFieldFormat);
        }
        let key = unescape(&text[pos..key_end], KEY_ESCAPES);
        pos = key_end + 1;
        if pos == len || bytes[pos] == b',' || bytes[pos] == b' ' {
            return Err(LineErrorKind::MissingFieldValue { key: excerpt(&key) });
        }
        let value = if bytes[pos] == b'"' {
            let close = scan(bytes, pos + 1, |b| b == b'"');
            if close >= len {
                return Err(LineErrorKind::UnbalancedQuotes);
            }
            let value = unescape(&text[pos + 1..close], STRING_ESCAPES);
            if value.len() > limits.max_string_field_bytes {
                return Err(LineErrorKind::StringTooLong {
                    key: excerpt(&key),
                    len: value.len(),
                    limit: limits.max_string_field_bytes,
                });
            }
            pos = close + 1;
            if pos < len && bytes[pos] != b',' && bytes[pos] != b' ' {
                return Err(LineErrorKind::InvalidFieldFormat);
            }
            FieldValue::String(value)
        } else {
            let end = bytes[pos..]
                .iter()
                .position(|&b| b == b',' || b == b' ')
                .map_or(len, |offset| pos + offset);
            let value = scalar_value(&text[pos..end])?;
            pos = end;
            value
        };
        fields.push((key, value));
        if pos < len && bytes[pos] == b',' {
            pos += 1;
            continue;
        }
        break;
    }
    keep_last_of_each_field(&mut fields);

    pos = skip_spaces(bytes, pos);
    let timestamp_ns = if pos == len {
        None
    } else {
        Some(timestamp(text[pos..].trim_end_matches(' '), precision)?)
    };

    Ok(Point {
        measurement,
        tags,
        fields,
        timestamp_ns,
    })
}

/// The index of the first byte at or after `start` for which `stop` holds, stepping over
/// backslash escapes; `bytes.len()` if there is none.
fn scan(bytes: &[u8], start: usize, stop: impl Fn(u8) -> bool) -> usize {
    let mut i = start;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if stop(bytes[i]) {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

fn skip_spaces(bytes: &[u8], mut pos: usize) -> usize {
    while pos < bytes.len() && bytes[pos] == b' ' {
        pos += 1;
    }
    pos
}

/// Removes the backslash of `\\` and of `\c` for every `c` in `escapes`; any other backslash
/// is kept.
fn unescape(raw: &str, escapes: &[char]) -> String {
    if !raw.contains('\\') {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && (next == '\\' || escapes.contains(&next))
        {
            out.push(next);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

/// A field value that is not a quoted string.
fn scalar_value(raw: &str) -> Result<FieldValue, LineErrorKind> {
    let invalid = || LineErrorKind::InvalidFieldValue {
        value: excerpt(raw),
    };
    let out_of_range = || LineErrorKind::ValueOutOfRange {
        value: excerpt(raw),
    };
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Boolean(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Boolean(false)),
        _ => {}
    }
    if let Some(digits) = raw.strip_suffix('i') {
        if !is_integer(digits, true) {
            return Err(invalid());
        }
        return digits
            .parse()
            .map(FieldValue::Integer)
            .map_err(|_| out_of_range());
    }
    if let Some(digits) = raw.strip_suffix('u') {
        if !is_integer(digits, false) {
            return Err(invalid());
        }
        return digits
            .parse()
            .map(FieldValue::UInteger)
            .map_err(|_| out_of_range());
    }
    if !is_float(raw) {
        return Err(invalid());
    }
    let value: f64 = raw.parse().map_err(|_| invalid())?;
    if value.is_finite() {
        Ok(FieldValue::Float(value))
    } else {
        Err(out_of_range())
    }
}

/// `-?[0-9]+` (or without the sign when `signed` is false).
fn is_integer(text: &str, signed: bool) -> bool {
    let digits = if signed {
        text.strip_prefix('-').unwrap_or(text)
    } else {
        text
    };
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?`: Rust's float parser alone would also
/// take `inf`, `NaN` and a leading `+`, which line protocol does not.
fn is_float(text: &str) -> bool {
    let bytes = text.strip_prefix('-').unwrap_or(text).as_bytes();
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(bytes.len() - from)
    };
    let mut pos = 0;
    let integer = digits(pos);
    pos += integer;
    let mut fraction = 0;
    if bytes.get(pos) == Some(&b'.') {
        pos += 1;
        fraction = digits(pos);
        pos += fraction;
    }
    if integer == 0 && fraction == 0 {
        return false;
    }
    if matches!(bytes.get(pos), Some(b'e' | b'E')) {
        pos += 1;
        if matches!(bytes.get(pos), Some(b'+' | b'-')) {
            pos += 1;
        }
        let exponent = digits(pos);
        if exponent == 0 {
            return false;
        }
        pos += exponent;
    }
    pos == bytes.len()
}

fn timestamp(raw: &str, precision: Precision) -> Result<i64, LineErrorKind> {
    if !is_integer(raw, true) {
        return Err(LineErrorKind::InvalidTimestamp {
            value: excerpt(raw),
        });
    }
    let value: i64 = raw.parse().map_err(|_| LineErrorKind::InvalidTimestamp {
        value: excerpt(raw),
    })?;
    value
        .checked_mul(precision.nanos_per_unit())
        .filter(|ns| (MIN_TIMESTAMP_NS..=MAX_TIMESTAMP_NS).contains(ns))
        .ok_or(LineErrorKind::TimestampOutOfRange { value, precision })
}

/// Keeps only the last value of each repeated field key, in the order of those last values.
fn keep_last_of_each_field(fields: &mut Vec<(String, FieldValue)>) {
    if fields.len() < 2 {
        return;
    }
    let mut order: Vec<usize> = (0..fields.len()).collect();
    // Stable, so equal keys stay in input order and the last of a run is the last written.
    order.sort_by(|&a, &b| fields[a].0.cmp(&fields[b].0));
    let mut keep = vec![true; fields.len()];
    let mut any_dropped = false;
    for pair in order.windows(2) {
        if fields[pair[0]].0 == fields[pair[1]].0 {
            keep[pair[0]] = false;
            any_dropped = true;
        }
    }
    if any_dropped {
        let mut index = 0;
        fields.retain(|_| {
            let kept = keep[index];
            index += 1;
            kept
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_syntax() {
        for ok in ["1", "-1.5", "1.", ".5", "1e3", "1E-3", "-1.234456e+78", "0"] {
            assert!(is_float(ok), "{ok}");
        }
        for bad in [
            "", "-", ".", "e3", "1e", "+1", "inf", "NaN", "1.2.3", "1e+", "0x10",
        ] {
            assert!(!is_float(bad), "{bad}");
        }
    }

    #[test]
    fn backslash_rules_follow_the_reference_table() {
        // The reference's table: \ → \, \\ → \, \\\ → \\, \\\\ → \\, \\\\\ → \\\.
        assert_eq!(unescape(r"a\b", KEY_ESCAPES), r"a\b");
        assert_eq!(unescape(r"a\\b", KEY_ESCAPES), r"a\b");
        assert_eq!(unescape(r"a\\\b", KEY_ESCAPES), r"a\\b");
        assert_eq!(unescape(r"a\\\\b", KEY_ESCAPES), r"a\\b");
        assert_eq!(unescape(r"a\\\\\b", KEY_ESCAPES), r"a\\\b");
        assert_eq!(unescape(r"a\=b", MEASUREMENT_ESCAPES), r"a\=b");
        assert_eq!(unescape(r"a\=b", KEY_ESCAPES), "a=b");
    }

    #[test]
    fn repeated_fields_keep_the_last_value() {
        let mut fields = vec![
            ("b".to_owned(), FieldValue::Integer(1)),
            ("a".to_owned(), FieldValue::Integer(2)),
            ("b".to_owned(), FieldValue::Integer(3)),
        ];
        keep_last_of_each_field(&mut fields);
        assert_eq!(
            fields,
            vec![
                ("a".to_owned(), FieldValue::Integer(2)),
                ("b".to_owned(), FieldValue::Integer(3)),
            ]
        );
    }
}
