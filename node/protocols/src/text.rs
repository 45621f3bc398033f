//! Bytes from the wire as text, the same way in every parser: invalid UTF-8 replaced,
//! and a multi-byte character cut short by the capture cap dropped rather than shown as a
//! replacement character.

/// `bytes` without a multi-byte UTF-8 character cut short at its end.
pub(crate) fn without_cut_char(bytes: &[u8]) -> &[u8] {
    for back in 1..=bytes.len().min(4) {
        let b = bytes[bytes.len() - back];
        if b & 0xc0 != 0x80 {
            let len = match b {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                _ => 1,
            };
            return if len > back {
                &bytes[..bytes.len() - back]
            } else {
                bytes
            };
        }
    }
    bytes
}

/// `bytes` as text: invalid sequences replaced, a last character cut short dropped.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(without_cut_char(bytes)).into_owned()
}

/// [`lossy`] of `bytes` with ASCII whitespace trimmed at both ends (header values).
pub(crate) fn lossy_trimmed(bytes: &[u8]) -> String {
    lossy(bytes.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_characters_are_dropped_and_invalid_bytes_replaced() {
        let euro = "€".as_bytes();
        assert_eq!(lossy(&euro[..2]), "");
        assert_eq!(lossy(b"ab\xe2\x82"), "ab");
        assert_eq!(lossy(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(lossy("x€".as_bytes()), "x€");
        assert_eq!(lossy_trimmed(b"  v\r\n"), "v");
    }
}
