//! Influx line protocol: what Telegraf's `outputs.influxdb_v2` and the InfluxDB v2 client
//! libraries send to `/api/v2/write?precision=ns|us|ms|s`.
//!
//! ```text
//! measurement[,tag_key=tag_value…] field_key=field_value[,field_key=field_value…] [timestamp]
//! ```
//!
//! [`parse`] turns a body into [`Point`]s; [`Point::to_line`] writes one back.
//!
//! # Syntax accepted
//!
//! - Lines end with `\n` or `\r\n`. Leading spaces and tabs are ignored; blank lines and lines
//!   whose first other character is `#` are skipped. Line numbers count every line.
//! - Escapes with `\`: in the measurement, comma and space; in tag keys, tag values and field
//!   keys, comma, equals sign and space; in string field values, `"` and `\`. `\\` is one
//!   backslash everywhere; a backslash before any other character is kept as it is.
//! - Field values: floats (`1`, `-1.5`, `1e-3`, `.5`; `inf` and `NaN` are rejected, as
//!   InfluxDB does), integers with `i`, unsigned integers with `u`, booleans (`t`, `T`,
//!   `true`, `True`, `TRUE`, and the same for false) and double-quoted strings.
//! - One or more spaces between the sections; an optional integer timestamp in the request's
//!   [`Precision`], converted to nanoseconds with overflow checks and limited to InfluxDB's
//!   range of ±9223372036854775806 ns. A point without one has `timestamp_ns: None`: the
//!   caller stamps it with the time the request arrived, once for the whole request.
//! - Tags are sorted by key (byte order, as InfluxDB's canonical form); a repeated tag key is
//!   an error. A repeated field key keeps the last value, as InfluxDB does.
//! - Names starting with `_` are accepted: the reservation of that prefix is InfluxDB's, for
//!   its own columns, and means nothing here.
//!
//! # Partial writes
//!
//! A bad line rejects only that line. [`parse`] returns every good point together with the
//! rejected lines ([`ParsedBody`]); the HTTP layer stores the good points and answers 400
//! listing the bad lines, as InfluxDB v2 does. This is what a Telegraf user expects: Telegraf
//! batches metrics from every input into one request and drops the whole batch on a 400
//! without retrying it, so rejecting the body on its first bad line would silently lose every
//! other input's metrics because of one malformed value. Limits on the body as a whole
//! ([`Limits::max_body_bytes`], [`Limits::max_lines`]) reject it entirely with a 413, on which
//! Telegraf splits the batch and retries. [`ParsedBody::into_strict`] gives all-or-nothing
//! semantics to callers that want them.

mod parser;
mod point;

pub use point::{FieldValue, Point};

use crate::error::{LineError, LineErrorKind, LineProtocolError};

/// The unit of the timestamps in a body: the `precision` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// `ns`, the default.
    #[default]
    Nanoseconds,
    /// `us`.
    Microseconds,
    /// `ms`.
    Milliseconds,
    /// `s`.
    Seconds,
}

impl Precision {
    /// Reads the `precision` query parameter of `/api/v2/write`.
    ///
    /// # Errors
    ///
    /// [`LineProtocolError::UnknownPrecision`] for anything but `ns`, `us`, `ms` and `s`.
    pub fn from_query_param(value: &str) -> Result<Self, LineProtocolError> {
        match value {
            "ns" => Ok(Self::Nanoseconds),
            "us" => Ok(Self::Microseconds),
            "ms" => Ok(Self::Milliseconds),
            "s" => Ok(Self::Seconds),
            other => Err(LineProtocolError::UnknownPrecision(crate::error::excerpt(
                other,
            ))),
        }
    }

    /// Nanoseconds in one unit.
    pub fn nanos_per_unit(self) -> i64 {
        match self {
            Self::Nanoseconds => 1,
            Self::Microseconds => 1_000,
            Self::Milliseconds => 1_000_000,
            Self::Seconds => 1_000_000_000,
        }
    }

    /// The query parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nanoseconds => "ns",
            Self::Microseconds => "us",
            Self::Milliseconds => "ms",
            Self::Seconds => "s",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The earliest timestamp InfluxDB accepts, in nanoseconds.
pub const MIN_TIMESTAMP_NS: i64 = i64::MIN + 2;
/// The latest timestamp InfluxDB accepts, in nanoseconds.
pub const MAX_TIMESTAMP_NS: i64 = i64::MAX - 1;

/// Limits for [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest body, in bytes (after any `Content-Encoding` is undone).
    pub max_body_bytes: usize,
    /// Most lines holding a point; blank and comment lines are not counted.
    pub max_lines: usize,
    /// Longest line, in bytes; a longer line is rejected on its own.
    pub max_line_bytes: usize,
    /// Longest string field value after unescaping (InfluxDB's limit is 64 KiB).
    pub max_string_field_bytes: usize,
    /// Most rejected lines described in [`ParsedBody::rejected`]; the rest are only counted.
    pub max_reported_errors: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            max_lines: 500_000,
            max_line_bytes: 1024 * 1024,
            max_string_field_bytes: 64 * 1024,
            max_reported_errors: 100,
        }
    }
}

/// The outcome of [`parse`]: the good points and the rejected lines.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedBody {
    /// Points from the lines that parsed, in body order.
    pub points: Vec<Point>,
    /// The first [`Limits::max_reported_errors`] rejected lines, in body order.
    pub rejected: Vec<LineError>,
    /// How many lines were rejected in all.
    pub rejected_lines: usize,
}

impl ParsedBody {
    /// Whether some lines were rejected (the response is then a 400 "partial write").
    pub fn is_partial(&self) -> bool {
        self.rejected_lines > 0
    }

    /// The points if every line parsed, else the first rejected line.
    ///
    /// # Errors
    ///
    /// The first [`LineError`].
    pub fn into_strict(self) -> Result<Vec<Point>, LineError> {
        match self.rejected.into_iter().next() {
            Some(error) => Err(error),
            None => Ok(self.points),
        }
    }
}

/// Parses a line protocol body whose timestamps are in `precision`.
///
/// Bad lines are collected in [`ParsedBody::rejected`]; see the module docs on partial writes.
///
/// # Errors
///
/// [`LineProtocolError::BodyTooLarge`] or [`LineProtocolError::TooManyLines`]: the body is
/// rejected as a whole.
pub fn parse(
    body: &[u8],
    precision: Precision,
    limits: &Limits,
) -> Result<ParsedBody, LineProtocolError> {
    if body.len() > limits.max_body_bytes {
        return Err(LineProtocolError::BodyTooLarge {
            size: body.len(),
            limit: limits.max_body_bytes,
        });
    }
    let mut parsed = ParsedBody::default();
    let mut point_lines = 0usize;
    for (index, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = trim_line(raw);
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        point_lines += 1;
        if point_lines > limits.max_lines {
            return Err(LineProtocolError::TooManyLines {
                limit: limits.max_lines,
            });
        }
        match parser::parse_line(line, precision, limits) {
            Ok(point) => parsed.points.push(point),
            Err(kind) => {
                parsed.rejected_lines += 1;
                if parsed.rejected.len() < limits.max_reported_errors {
                    parsed.rejected.push(LineError {
                        line: index + 1,
                        kind,
                    });
                }
            }
        }
    }
    Ok(parsed)
}

/// Parses one line, without its newline: `Ok(None)` for a blank or comment line.
///
/// # Errors
///
/// The [`LineError`] (numbered 1) if the line does not parse or contains a newline.
pub fn parse_line(line: &str, precision: Precision) -> Result<Option<Point>, LineError> {
    let trimmed = trim_line(line.as_bytes());
    if trimmed.is_empty() || trimmed[0] == b'#' {
        return Ok(None);
    }
    let result = if trimmed.contains(&b'\n') {
        Err(LineErrorKind::Newline)
    } else {
        parser::parse_line(trimmed, precision, &Limits::default())
    };
    result.map(Some).map_err(|kind| LineError { line: 1, kind })
}

/// Drops a trailing `\r` and leading spaces and tabs.
fn trim_line(raw: &[u8]) -> &[u8] {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let start = raw
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(raw.len());
    &raw[start..]
}
