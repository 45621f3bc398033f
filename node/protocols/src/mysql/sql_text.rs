//! SQL text as it appears in request messages: recognising a statement's first keyword (for
//! detection) and turning captured bytes into a `String`. Shared with
//! [`crate::postgres`], whose requests carry SQL the same way.

/// Whether `text` (the start of a statement, possibly cut short by the capture) begins with
/// one of `keywords` (uppercase), after whitespace, comments and opening parentheses, and is
/// plausible SQL text throughout: no control characters but tab, CR and LF, valid UTF-8 but
/// for a cut-off last character. `None`: the text ended before that could be decided.
///
/// `hash_comments` also skips MySQL's `# ...` line comments. `complete`: `text` is the
/// whole statement, so a word that ends it is whole.
pub(crate) fn starts_with_keyword(
    text: &[u8],
    keywords: &[&str],
    hash_comments: bool,
    complete: bool,
) -> Option<bool> {
    if !is_plain_text(text) {
        return Some(false);
    }
    let mut i = 0;
    // whitespace, comments and parentheses before the first word
    loop {
        match text.get(i..)? {
            [b' ' | b'\t' | b'\r' | b'\n' | b'(', ..] => i += 1,
            [b'/', b'*', ..] => {
                let Some(end) = find(&text[i + 2..], b"*/") else {
                    return if complete { Some(false) } else { None };
                };
                i += 2 + end + 2;
            }
            [b'-', b'-', ..] => i += 2 + line_end(&text[i + 2..], complete)?,
            [b'#', ..] if hash_comments => i += 1 + line_end(&text[i + 1..], complete)?,
            [b'/'] | [b'-'] | [] if !complete => return None,
            [] => return Some(false),
            _ => break,
        }
    }
    let start = i;
    while text.get(i).is_some_and(u8::is_ascii_alphabetic) {
        i += 1;
    }
    let word = &text[start..i];
    if word.is_empty() {
        return Some(false);
    }
    let Some(&after) = text.get(i) else {
        if complete {
            return Some(
                keywords
                    .iter()
                    .any(|k| k.as_bytes().eq_ignore_ascii_case(word)),
            );
        }
        // the word may go on: decide only if no keyword starts with it
        let prefix = keywords.iter().any(|k| {
            k.len() >= word.len() && k.as_bytes()[..word.len()].eq_ignore_ascii_case(word)
        });
        return if prefix { None } else { Some(false) };
    };
    if after.is_ascii_alphanumeric() || after == b'_' || after >= 0x80 {
        return Some(false);
    }
    Some(
        keywords
            .iter()
            .any(|k| k.as_bytes().eq_ignore_ascii_case(word)),
    )
}

/// Bytes up to and including the end of a line comment; a comment that runs to the end of
/// a complete text ends there.
fn line_end(text: &[u8], complete: bool) -> Option<usize> {
    match find(text, b"\n") {
        Some(end) => Some(end + 1),
        None if complete => Some(text.len()),
        None => None,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// No control characters but tab, CR and LF; valid UTF-8 except for a last character that
/// the capture cut short.
pub(crate) fn is_plain_text(bytes: &[u8]) -> bool {
    if bytes
        .iter()
        .any(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n')) || b == 0x7f)
    {
        return false;
    }
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

/// The bytes before the first NUL (all of them if there is none).
pub(crate) fn until_nul(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(end) => &bytes[..end],
        None => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::lossy;

    const KEYWORDS: [&str; 3] = ["SELECT", "SET", "BEGIN"];

    #[test]
    fn keywords_after_comments_and_parentheses() {
        let yes: [&[u8]; 6] = [
            b"select 1",
            b"  SELECT\n1",
            b"/* app=shop */ select 1",
            b"-- note\nBEGIN;",
            b"((select 1))",
            b"begin",
        ];
        for text in yes {
            assert_eq!(
                starts_with_keyword(text, &KEYWORDS, false, true),
                Some(true),
                "{text:?}"
            );
        }
        assert_eq!(
            starts_with_keyword(b"# c\nset x=1", &KEYWORDS, true, true),
            Some(true)
        );
        let no: [&[u8]; 6] = [
            b"selects 1",
            b"GET / HTTP/1.1",
            b"select\x001",
            b"1 + 1",
            b"set_x",
            b"\xff\xfe select",
        ];
        for text in no {
            assert_eq!(
                starts_with_keyword(text, &KEYWORDS, false, false),
                Some(false),
                "{text:?}"
            );
        }
        assert_eq!(
            starts_with_keyword(b"# c\nset x=1", &KEYWORDS, false, true),
            Some(false)
        );
        assert_eq!(
            starts_with_keyword(b"/* open", &KEYWORDS, false, true),
            Some(false)
        );
        assert_eq!(
            starts_with_keyword(b"-- only a comment", &KEYWORDS, false, true),
            Some(false)
        );
    }

    #[test]
    fn cut_text_is_undecided() {
        for text in [&b"sel"[..], b"  ", b"/* open", b"", b"SE", b"set", b"-- x"] {
            assert_eq!(
                starts_with_keyword(text, &KEYWORDS, false, false),
                None,
                "{text:?}"
            );
        }
        assert_eq!(
            starts_with_keyword(b"xy", &KEYWORDS, false, false),
            Some(false)
        );
        assert_eq!(
            starts_with_keyword(b"sel", &KEYWORDS, false, true),
            Some(false)
        );
        // a multi-byte character cut by the capture is fine
        assert_eq!(
            starts_with_keyword(
                "select 'é".as_bytes().split_last().unwrap().1,
                &KEYWORDS,
                false,
                false
            ),
            Some(true)
        );
    }

    #[test]
    fn lossy_drops_a_cut_character() {
        let bytes = "abé".as_bytes();
        assert_eq!(lossy(&bytes[..bytes.len() - 1]), "ab");
        assert_eq!(lossy(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(until_nul(b"ab\0cd"), b"ab");
    }
}
