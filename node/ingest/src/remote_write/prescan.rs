//! A counting pass over the protobuf wire format, run before `prost` decodes anything.
//!
//! `prost` allocates as it decodes, and the decoded form of a message can be far larger than
//! its encoding: an empty `TimeSeries` is 2 bytes on the wire and about 100 in memory. Counting
//! series, samples, labels, exemplars and metadata first lets every count limit be enforced
//! before any of that memory is taken. The pass only reads varints and skips bytes.
//!
//! Malformed input is not reported here: the pass stops counting where it cannot go on, and
//! the `prost` decode that follows fails with its own, more precise error. Everything before
//! that point has been counted, so the decode cannot allocate for more than the limits allow.

use super::Limits;
use crate::error::RemoteWriteError;

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LENGTH_DELIMITED: u64 = 2;
const FIXED32: u64 = 5;

/// What the counting pass found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub series: usize,
    pub samples: usize,
    pub exemplars: usize,
    pub histograms: usize,
    pub metadata: usize,
}

/// Counts the entries of an encoded `WriteRequest`, failing as soon as one passes its limit.
pub(super) fn check_counts(buf: &[u8], limits: &Limits) -> Result<Counts, RemoteWriteError> {
    let mut counts = Counts::default();
    let mut reader = Reader { buf, pos: 0 };
    while let Some((field, payload)) = reader.next_field() {
        match (field, payload) {
            (1, Some(series)) => {
                let index = counts.series;
                counts.series += 1;
                if counts.series > limits.max_series {
                    return Err(RemoteWriteError::TooManySeries {
                        limit: limits.max_series,
                    });
                }
                count_series(series, index, limits, &mut counts)?;
            }
            (3, Some(_)) => {
                counts.metadata += 1;
                if counts.metadata > limits.max_metadata {
                    return Err(RemoteWriteError::TooManyMetadata {
                        limit: limits.max_metadata,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(counts)
}

fn count_series(
    buf: &[u8],
    series: usize,
    limits: &Limits,
    counts: &mut Counts,
) -> Result<(), RemoteWriteError> {
    let mut labels = 0usize;
    let mut reader = Reader { buf, pos: 0 };
    while let Some((field, payload)) = reader.next_field() {
        match (field, payload) {
            (1, Some(_)) => {
                labels += 1;
                if labels > limits.max_labels_per_series {
                    return Err(RemoteWriteError::TooManyLabels {
                        series,
                        limit: limits.max_labels_per_series,
                    });
                }
            }
            (2, Some(_)) => {
                counts.samples += 1;
                if counts.samples > limits.max_samples {
                    return Err(RemoteWriteError::TooManySamples {
                        limit: limits.max_samples,
                    });
                }
            }
            (3, Some(exemplar)) => {
                counts.exemplars += 1;
                if counts.exemplars > limits.max_exemplars {
                    return Err(RemoteWriteError::TooManyExemplars {
                        limit: limits.max_exemplars,
                    });
                }
                let exemplar_labels = Reader {
                    buf: exemplar,
                    pos: 0,
                }
                .count_field(1);
                if exemplar_labels > limits.max_labels_per_series {
                    return Err(RemoteWriteError::TooManyLabels {
                        series,
                        limit: limits.max_labels_per_series,
                    });
                }
            }
            (4, Some(_)) => counts.histograms += 1,
            _ => {}
        }
    }
    Ok(())
}

/// A cursor over the fields of one message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The next field's number and, for a length-delimited field, its payload. `None` at the
    /// end of the message or where the encoding is malformed.
    fn next_field(&mut self) -> Option<(u64, Option<&'a [u8]>)> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let key = self.varint()?;
        let field = key >> 3;
        let payload = match key & 7 {
            VARINT => {
                self.varint()?;
                None
            }
            FIXED64 => {
                self.skip(8)?;
                None
            }
            LENGTH_DELIMITED => {
                let len = usize::try_from(self.varint()?).ok()?;
                let start = self.pos;
                self.skip(len)?;
                Some(&self.buf[start..self.pos])
            }
            FIXED32 => {
                self.skip(4)?;
                None
            }
            // Groups (3, 4) and the unused wire types: `prost` rejects them or skips them
            // itself; either way there is nothing here to count.
            _ => return None,
        };
        Some((field, payload))
    }

    /// How many length-delimited fields numbered `wanted` the message holds.
    fn count_field(mut self, wanted: u64) -> usize {
        let mut count = 0;
        while let Some((field, payload)) = self.next_field() {
            if field == wanted && payload.is_some() {
                count += 1;
            }
        }
        count
    }

    fn skip(&mut self, len: usize) -> Option<()> {
        let end = self.pos.checked_add(len)?;
        if end > self.buf.len() {
            return None;
        }
        self.pos = end;
        Some(())
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_reads_multi_byte_values_and_rejects_overlong_ones() {
        let mut reader = Reader {
            buf: &[0xac, 0x02],
            pos: 0,
        };
        assert_eq!(reader.varint(), Some(300));
        let overlong = [0xff; 11];
        let mut reader = Reader {
            buf: &overlong,
            pos: 0,
        };
        assert_eq!(reader.varint(), None);
    }

    #[test]
    fn a_truncated_length_stops_the_count_without_error() {
        // Field 1, length 5, but only 2 bytes follow.
        let buf = [0x0a, 0x05, 0x0a, 0x00];
        let counts = check_counts(&buf, &Limits::default()).ok();
        assert_eq!(counts.map(|c| c.series), Some(0));
    }
}
