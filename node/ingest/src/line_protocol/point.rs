//! A parsed point and its line protocol form.

use super::{MAX_TIMESTAMP_NS, MIN_TIMESTAMP_NS};
use crate::error::{SerializeError, excerpt};
use std::fmt::Write as _;

/// One field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A 64-bit float (`1`, `1.5`, `-2e10`); always finite.
    Float(f64),
    /// A signed integer (`1i`).
    Integer(i64),
    /// An unsigned integer (`1u`).
    UInteger(u64),
    /// A boolean (`t`, `true`, `F`, …).
    Boolean(bool),
    /// A string (`"text"`), unescaped.
    String(String),
}

/// One point: a line of line protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The measurement, unescaped.
    pub measurement: String,
    /// Tags as (key, value), sorted by key, keys unique, values non-empty.
    pub tags: Vec<(String, String)>,
    /// Fields as (key, value) in line order, keys unique, at least one.
    pub fields: Vec<(String, FieldValue)>,
    /// Nanoseconds since the Unix epoch, or `None` if the line had no timestamp.
    pub timestamp_ns: Option<i64>,
}

impl Point {
    /// The timestamp, or `now_ns` if the line had none.
    pub fn timestamp_or(&self, now_ns: i64) -> i64 {
        self.timestamp_ns.unwrap_or(now_ns)
    }

    /// The point as one line of line protocol (no newline), timestamp in nanoseconds.
    ///
    /// Every backslash is written as `\\`, so any text that line protocol can hold reads back
    /// unchanged; tags are written in the order given.
    ///
    /// # Errors
    ///
    /// A [`SerializeError`] for what line protocol cannot hold: empty names or tag values,
    /// newlines, no fields, a non-finite float, a measurement that would read as a comment.
    pub fn to_line(&self) -> Result<String, SerializeError> {
        let mut line = String::new();
        self.write_line(&mut line)?;
        Ok(line)
    }

    /// As [`Point::to_line`], appending to `out`. On error `out` may hold part of the line.
    ///
    /// # Errors
    ///
    /// As [`Point::to_line`].
    pub fn write_line(&self, out: &mut String) -> Result<(), SerializeError> {
        check_text(&self.measurement, "measurement")?;
        if self.measurement.starts_with(['#', '\t']) {
            return Err(SerializeError::MeasurementStart {
                measurement: excerpt(&self.measurement),
            });
        }
        escape_into(out, &self.measurement, &[',', ' ']);
        for (key, value) in &self.tags {
            check_text(key, "tag key")?;
            check_text(value, "tag value")?;
            out.push(',');
            escape_into(out, key, &[',', '=', ' ']);
            out.push('=');
            escape_into(out, value, &[',', '=', ' ']);
        }
        if self.fields.is_empty() {
            return Err(SerializeError::NoFields);
        }
        for (index, (key, value)) in self.fields.iter().enumerate() {
            check_text(key, "field key")?;
            out.push(if index == 0 { ' ' } else { ',' });
            escape_into(out, key, &[',', '=', ' ']);
            out.push('=');
            match value {
                FieldValue::Float(value) => {
                    if !value.is_finite() {
                        return Err(SerializeError::NonFiniteFloat { key: excerpt(key) });
                    }
                    // `Display` for f64 is the shortest text that reads back to the same
                    // bits, and never uses an exponent or `inf`.
                    let _ = write!(out, "{value}");
                }
                FieldValue::Integer(value) => {
                    let _ = write!(out, "{value}i");
                }
                FieldValue::UInteger(value) => {
                    let _ = write!(out, "{value}u");
                }
                FieldValue::Boolean(value) => out.push_str(if *value { "true" } else { "false" }),
                FieldValue::String(value) => {
                    if value.contains('\n') {
                        return Err(SerializeError::Newline {
                            element: "string field value",
                        });
                    }
                    out.push('"');
                    escape_into(out, value, &['"']);
                    out.push('"');
                }
            }
        }
        if let Some(ns) = self.timestamp_ns {
            if !(MIN_TIMESTAMP_NS..=MAX_TIMESTAMP_NS).contains(&ns) {
                return Err(SerializeError::TimestampOutOfRange(ns));
            }
            let _ = write!(out, " {ns}");
        }
        Ok(())
    }
}

fn check_text(text: &str, element: &'static str) -> Result<(), SerializeError> {
    if text.is_empty() {
        return Err(SerializeError::Empty { element });
    }
    if text.contains('\n') {
        return Err(SerializeError::Newline { element });
    }
    Ok(())
}

/// Appends `text` with a backslash before every backslash and every character in `special`.
fn escape_into(out: &mut String, text: &str, special: &[char]) {
    for c in text.chars() {
        if c == '\\' || special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}
