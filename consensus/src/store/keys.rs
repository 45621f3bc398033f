//! Key layout of the `dictionary` tree.
//!
//! - `f` kind(2, BE) string-bytes → id (4, BE): forward map, (kind, string) → id
//! - `r` kind(2, BE) id(4, BE) → string-bytes: reverse map, (kind, id) → string
//! - `n` kind(2, BE) → next free id (4, BE)
//! - `v` kind(2, BE) id(4, BE) valid_from(8, i64 with the sign bit flipped, BE) → attrs:
//!   resource versions (resource tables), (kind, id, valid_from_us) → attribute ids, the
//!   value being one 6-byte record per attribute, kind(2, BE) id(4, BE), in kind order
//! - `m:applied` → last applied log id (JSON), `m:membership` → last membership (JSON)
//!
//! Big-endian numbers keep each kind's reverse entries in id order, so a snapshot is a
//! range scan per kind. Flipping the sign bit of `valid_from` makes its bytes sort like the
//! signed number, so one resource's versions are in time order and "the version in force
//! at t" is the last key at or before `v kind id t`.

use std::collections::BTreeMap;

use crate::types::{DictionaryId, TagKind};

pub(crate) const FORWARD: u8 = b'f';
pub(crate) const REVERSE: u8 = b'r';
pub(crate) const NEXT: u8 = b'n';
pub(crate) const RESOURCE: u8 = b'v';
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

const SIGN_BIT: u64 = 1 << 63;

/// The key of every version of one resource starts with these 7 bytes.
pub(crate) fn resource_prefix(kind: TagKind, id: DictionaryId) -> [u8; 7] {
    let mut key = reverse(kind, id);
    key[0] = RESOURCE;
    key
}

/// The key of every resource version of `kind` starts with these 3 bytes.
pub(crate) fn resource_kind_prefix(kind: TagKind) -> [u8; 3] {
    let mut key = next(kind);
    key[0] = RESOURCE;
    key
}

pub(crate) fn resource(kind: TagKind, id: DictionaryId, valid_from_us: i64) -> [u8; 15] {
    let mut key = [0u8; 15];
    key[..7].copy_from_slice(&resource_prefix(kind, id));
    // Reinterpreting the bits is the point: with the sign bit flipped, the unsigned
    // big-endian order is the signed order.
    key[7..].copy_from_slice(&((valid_from_us as u64) ^ SIGN_BIT).to_be_bytes());
    key
}

/// The (kind, id, valid_from_us) of a `v` key.
pub(crate) fn parse_resource(key: &[u8]) -> Option<(TagKind, DictionaryId, i64)> {
    let key = <&[u8; 15]>::try_from(key).ok()?;
    if key[0] != RESOURCE {
        return None;
    }
    let (_, id) = parse_reverse(&reverse_of(key))?;
    let kind = TagKind(u16::from_be_bytes([key[1], key[2]]));
    let mut time = [0u8; 8];
    time.copy_from_slice(&key[7..]);
    Some((kind, id, (u64::from_be_bytes(time) ^ SIGN_BIT) as i64))
}

fn reverse_of(key: &[u8; 15]) -> [u8; 7] {
    let mut reverse = [0u8; 7];
    reverse.copy_from_slice(&key[..7]);
    reverse[0] = REVERSE;
    reverse
}

const ATTR_BYTES: usize = 6;

/// A resource version's value: kind(2, BE) id(4, BE) per attribute, in kind order.
pub(crate) fn encode_attrs(attrs: &BTreeMap<TagKind, DictionaryId>) -> Vec<u8> {
    let mut value = Vec::with_capacity(attrs.len() * ATTR_BYTES);
    for (kind, id) in attrs {
        value.extend_from_slice(&kind.get().to_be_bytes());
        value.extend_from_slice(&id.to_be_bytes());
    }
    value
}

/// The attributes of a resource version's value; `None` if it is not a whole number of
/// records in strictly increasing kind order.
pub(crate) fn decode_attrs(value: &[u8]) -> Option<BTreeMap<TagKind, DictionaryId>> {
    if !value.len().is_multiple_of(ATTR_BYTES) {
        return None;
    }
    let mut attrs = BTreeMap::new();
    let mut last: Option<TagKind> = None;
    for record in value.chunks_exact(ATTR_BYTES) {
        let kind = TagKind(u16::from_be_bytes([record[0], record[1]]));
        if last.is_some_and(|last| last >= kind) {
            return None;
        }
        last = Some(kind);
        attrs.insert(kind, decode_id(&record[2..])?);
    }
    Some(attrs)
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

    #[test]
    fn resource_keys_sort_by_kind_id_then_signed_time() {
        let times = [
            i64::MIN,
            -1_000_000,
            -1,
            0,
            1,
            1_700_000_000_000_000,
            i64::MAX,
        ];
        for pair in times.windows(2) {
            assert!(resource(TagKind::POD, 3, pair[0]) < resource(TagKind::POD, 3, pair[1]));
        }
        for time in times {
            let key = resource(TagKind(513), 70_000, time);
            assert_eq!(parse_resource(&key), Some((TagKind(513), 70_000, time)));
            assert!(key.starts_with(&resource_prefix(TagKind(513), 70_000)));
            assert!(key.starts_with(&resource_kind_prefix(TagKind(513))));
        }
        assert!(resource(TagKind::POD, 3, i64::MAX) < resource(TagKind::POD, 4, i64::MIN));
        assert!(resource(TagKind::POD, u32::MAX, 0) < resource(TagKind::ENDPOINT, 0, 0));
        assert_eq!(parse_resource(&reverse(TagKind::POD, 3)), None);
        let mut wrong_prefix = resource(TagKind::POD, 3, 0);
        wrong_prefix[0] = REVERSE;
        assert_eq!(parse_resource(&wrong_prefix), None);
    }

    #[test]
    fn attrs_round_trip_and_reject_malformed_values() {
        let attrs = BTreeMap::from([(TagKind::NODE, 9), (TagKind::SERVICE, u32::MAX)]);
        let value = encode_attrs(&attrs);
        assert_eq!(value, vec![0, 1, 0, 0, 0, 9, 0, 4, 255, 255, 255, 255]);
        assert_eq!(decode_attrs(&value), Some(attrs));
        assert_eq!(decode_attrs(&[]), Some(BTreeMap::new()));
        assert_eq!(decode_attrs(&value[..7]), None);
        let mut unordered = value[6..].to_vec();
        unordered.extend_from_slice(&value[..6]);
        assert_eq!(decode_attrs(&unordered), None);
    }
}
