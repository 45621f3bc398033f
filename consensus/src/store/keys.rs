//! Key layout of the `dictionary` tree.
//!
//! - `f` kind(2, BE) string-bytes → id (4, BE): forward map, (kind, string) → id
//! - `r` kind(2, BE) id(4, BE) → string-bytes: reverse map, (kind, id) → string
//! - `n` kind(2, BE) → next free id (4, BE)
//! - `m:applied` → last applied log id (JSON), `m:membership` → last membership (JSON)
//!
//! Big-endian numbers keep each kind's reverse entries in id order, so a snapshot is a
//! range scan per kind.

use crate::types::{DictionaryId, TagKind};

pub(crate) const FORWARD: u8 = b'f';
pub(crate) const REVERSE: u8 = b'r';
pub(crate) const NEXT: u8 = b'n';
pub(crate) const APPLIED: &[u8] = b"m:applied";
pub(crate) const MEMBERSHIP: &[u8] = b"m:membership";

pub(crate) fn forward(kind: TagKind, string: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + string.len());
    key.push(FORWARD);
    key.extend_from_slice(&kind.get().to_be_bytes());
    key.extend_from_slice(string.as_bytes());
    key
}

pub(crate) fn reverse(kind: TagKind, id: DictionaryId) -> [u8; 7] {
    let mut key = [0u8; 7];
    key[0] = REVERSE;
    key[1..3].copy_from_slice(&kind.get().to_be_bytes());
    key[3..7].copy_from_slice(&id.to_be_bytes());
    key
}

pub(crate) fn next(kind: TagKind) -> [u8; 3] {
    let mut key = [0u8; 3];
    key[0] = NEXT;
    key[1..3].copy_from_slice(&kind.get().to_be_bytes());
    key
}

/// The kind of a `n` key.
pub(crate) fn kind_of_next(key: &[u8]) -> Option<TagKind> {
    match key {
        [NEXT, hi, lo] => Some(TagKind(u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    }
}

/// The (kind, id) of an `r` key.
pub(crate) fn parse_reverse(key: &[u8]) -> Option<(TagKind, DictionaryId)> {
    match key {
        [REVERSE, hi, lo, a, b, c, d] => Some((
            TagKind(u16::from_be_bytes([*hi, *lo])),
            u32::from_be_bytes([*a, *b, *c, *d]),
        )),
        _ => None,
    }
}

pub(crate) fn decode_id(value: &[u8]) -> Option<DictionaryId> {
    <[u8; 4]>::try_from(value).ok().map(u32::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_by_id() {
        let k = reverse(TagKind::POD, 258);
        assert_eq!(parse_reverse(&k), Some((TagKind::POD, 258)));
        assert!(reverse(TagKind::POD, 2) < reverse(TagKind::POD, 256));
        assert!(reverse(TagKind::POD, u32::MAX) < reverse(TagKind::ENDPOINT, 1));
        assert_eq!(kind_of_next(&next(TagKind(513))), Some(TagKind(513)));
        assert_eq!(forward(TagKind(1), "ab"), vec![b'f', 0, 1, b'a', b'b']);
        assert_eq!(decode_id(&7u32.to_be_bytes()), Some(7));
        assert_eq!(decode_id(&[1, 2]), None);
    }
}
