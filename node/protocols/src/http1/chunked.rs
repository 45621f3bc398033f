//! Streaming decoder of `Transfer-Encoding: chunked` framing that never copies data.

use crate::error::ParseError;

/// Longest chunk-size line (size, extensions, CRLF) accepted.
const MAX_SIZE_LINE: usize = 1024;

/// Where the decoder is in the chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line: the size so far and what may come next.
    Size {
        value: u64,
        tail: SizeTail,
        line_len: usize,
    },
    /// In chunk data.
    Data { remaining: u64 },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// In the trailer section (after the last chunk), at the start of a line or inside one.
    Trailer { line_start: bool },
    /// Saw CR on an empty trailer line.
    TrailerEndLf,
    /// The body is complete.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizeTail {
    /// Reading hex digits (`digits` read so far is `line_len`).
    Digits,
    /// After the size: whitespace and extensions until CRLF.
    Extension,
    /// Saw CR, expecting LF.
    Lf,
}

/// Progress of a chunked body, consumed in pieces as bytes arrive.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
    max_trailer_bytes: usize,
}

impl ChunkedDecoder {
    pub(crate) fn new(max_trailer_bytes: usize) -> Self {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                tail: SizeTail::Digits,
                line_len: 0,
            },
            trailer_bytes: 0,
            max_trailer_bytes,
        }
    }

    /// Consumes known bytes. Returns how many belong to the body (all of `data` unless the
    /// body ends inside it) and whether the body is complete.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), ParseError> {
        let mut pos = 0;
        while pos < data.len() {
            match &mut self.state {
                State::Done => break,
                State::Data { remaining } => {
                    let available = (data.len() - pos) as u64;
                    let take = available.min(*remaining);
                    *remaining -= take;
                    // `take <= available`, which came from a usize.
                    pos += take as usize;
                    if *remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    self.step(data[pos])?;
                    pos += 1;
                }
            }
        }
        Ok((pos, self.state == State::Done))
    }

    /// Consumes `n` bytes that were not captured. Only chunk data may be skipped; returns how
    /// many bytes were consumed, less than `n` when framing falls into the gap.
    pub(crate) fn skip(&mut self, n: u64) -> u64 {
        match &mut self.state {
            State::Data { remaining } => {
                let take = n.min(*remaining);
                *remaining -= take;
                if *remaining == 0 {
                    self.state = State::DataCr;
                }
                take
            }
            _ => 0,
        }
    }

    fn step(&mut self, byte: u8) -> Result<(), ParseError> {
        self.state = match self.state {
            State::Size {
                value,
                tail,
                line_len,
            } => {
                let line_len = line_len + 1;
                if line_len > MAX_SIZE_LINE {
                    return Err(ParseError::InvalidChunkSize);
                }
                let end_of_line = || {
                    if value == 0 {
                        State::Trailer { line_start: true }
                    } else {
                        State::Data { remaining: value }
                    }
                };
                match (tail, byte) {
                    (SizeTail::Digits, _) if byte.is_ascii_hexdigit() => {
                        let digit = u64::from(hex_value(byte));
                        let value = value
                            .checked_mul(16)
                            .and_then(|v| v.checked_add(digit))
                            .ok_or(ParseError::InvalidChunkSize)?;
                        State::Size {
                            value,
                            tail,
                            line_len,
                        }
                    }
                    // At least one digit is required.
                    (SizeTail::Digits, _) if line_len == 1 => {
                        return Err(ParseError::InvalidChunkSize);
                    }
                    (SizeTail::Digits | SizeTail::Extension, b'\r') => State::Size {
                        value,
                        tail: SizeTail::Lf,
                        line_len,
                    },
                    (SizeTail::Digits | SizeTail::Extension, b'\n') | (SizeTail::Lf, b'\n') => {
                        end_of_line()
                    }
                    (SizeTail::Digits, b';' | b' ' | b'\t') => State::Size {
                        value,
                        tail: SizeTail::Extension,
                        line_len,
                    },
                    (SizeTail::Extension, b'\t' | 0x20..=0x7e | 0x80..=0xff) => State::Size {
                        value,
                        tail,
                        line_len,
                    },
                    _ => return Err(ParseError::InvalidChunkSize),
                }
            }
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                // Tolerate a bare LF, as common parsers do.
                b'\n' => Self::new(self.max_trailer_bytes).state,
                _ => return Err(ParseError::MissingChunkTerminator),
            },
            State::DataLf => match byte {
                b'\n' => Self::new(self.max_trailer_bytes).state,
                _ => return Err(ParseError::MissingChunkTerminator),
            },
            State::Trailer { line_start } => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > self.max_trailer_bytes {
                    return Err(ParseError::TrailersTooLong {
                        limit: self.max_trailer_bytes,
                    });
                }
                match (line_start, byte) {
                    (true, b'\r') => State::TrailerEndLf,
                    (true, b'\n') => State::Done,
                    (_, b'\n') => State::Trailer { line_start: true },
                    _ => State::Trailer { line_start: false },
                }
            }
            State::TrailerEndLf => match byte {
                b'\n' => State::Done,
                _ => return Err(ParseError::MissingChunkTerminator),
            },
            // `feed` handles these without stepping.
            State::Data { .. } | State::Done => self.state,
        };
        Ok(())
    }
}

fn hex_value(byte: u8) -> u8 {
    match byte {
        b'0'..=b'9' => byte - b'0',
        b'a'..=b'f' => byte - b'a' + 10,
        b'A'..=b'F' => byte - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` split at every position and checks the body ends after `expected` bytes.
    fn assert_body_len(body: &[u8], expected: usize) {
        for split in 0..=body.len() {
            let mut decoder = ChunkedDecoder::new(1024);
            let (first, done_first) = decoder.feed(&body[..split]).expect("valid input");
            assert_eq!(first, split.min(expected), "split {split}");
            if done_first {
                assert_eq!(first, expected);
                continue;
            }
            let (second, done) = decoder.feed(&body[split..]).expect("valid input");
            assert!(done, "split {split}");
            assert_eq!(first + second, expected, "split {split}");
        }
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let body = b"5\r\nhello\r\n1a; name=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nExpires: never\r\nX-A: b\r\n\r\n";
        let mut with_next = body.to_vec();
        with_next.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_body_len(&with_next, body.len());
        assert_body_len(b"0\r\n\r\n", 5);
        assert_body_len(b"0000\n\n", 6);
        assert_body_len(b"A\r\n0123456789\r\n0\r\n\r\n", 20);
    }

    #[test]
    fn skips_data_but_not_framing() {
        let mut decoder = ChunkedDecoder::new(1024);
        assert_eq!(decoder.feed(b"10\r\n").expect("valid input"), (4, false));
        assert_eq!(decoder.skip(10), 10);
        assert_eq!(decoder.skip(10), 6);
        assert_eq!(
            decoder.feed(b"\r\n0\r\n\r\n").expect("valid input"),
            (7, true)
        );

        let mut decoder = ChunkedDecoder::new(1024);
        assert_eq!(decoder.skip(1), 0);
    }

    #[test]
    fn rejects_bad_framing() {
        let bad: [&[u8]; 6] = [
            b"\r\n",
            b"x\r\n",
            b"5\r\nhelloX",
            b"5\r\nhello\rX",
            b"11111111111111111\r\n",
            b"5 \x01\r\n",
        ];
        for body in bad {
            assert!(ChunkedDecoder::new(1024).feed(body).is_err(), "{body:?}");
        }
        let mut long_trailer = b"0\r\n".to_vec();
        long_trailer.extend(std::iter::repeat_n(b'a', 100));
        assert_eq!(
            ChunkedDecoder::new(64).feed(&long_trailer),
            Err(ParseError::TrailersTooLong { limit: 64 })
        );
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'a', 2000));
        assert_eq!(
            ChunkedDecoder::new(64).feed(&long_ext),
            Err(ParseError::InvalidChunkSize)
        );
        // The largest size fits.
        let mut decoder = ChunkedDecoder::new(64);
        assert_eq!(
            decoder.feed(b"ffffffffffffffff\r\n").expect("valid input"),
            (18, false)
        );
        assert_eq!(decoder.skip(u64::MAX), u64::MAX);
    }
}
