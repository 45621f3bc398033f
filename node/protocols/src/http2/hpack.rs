//! HPACK (RFC 7541): the decoder of the header blocks that travel in one direction of an
//! HTTP/2 connection, with its dynamic table.
//!
//! # Decoding with lost blocks
//!
//! The dynamic table is shared state between the peer's encoder and this decoder: every
//! header block can insert entries, so a block whose bytes were not captured leaves the table
//! with entries of unknown content. The decoder then keeps going instead of giving up:
//!
//! - [`Decoder::lose`] forgets every entry and records that the table may hold entries of
//!   unknown content. They are older than anything inserted afterwards.
//! - Entries inserted after the loss are known exactly: they are the newest, and eviction
//!   removes the oldest first, so a known entry is evicted only once the known entries alone
//!   exceed the table's size — which the decoder can tell.
//! - A reference to an index past the known entries is a field of unknown content
//!   ([`Field::Unknown`]), not an error, while unknown entries may remain. Static-table
//!   references and literals always decode.
//! - Once the known entries fill the table so far that no entry (at least 32 bytes) could
//!   remain beside them, or a size update to 0 empties it, the table is synchronised again
//!   ([`Decoder::is_synchronized`]) and out-of-range indices are errors again. This needs the
//!   table's size: a decoder that joined a connection in its middle does not know it until a
//!   size update, and stays unsynchronised (out-of-range indices are unknown fields) until
//!   then.
//!
//! So a decoded field is never wrong; fields that depend on lost state are reported as
//! unknown. A literal whose *name* refers to an unknown entry inserts an entry of unknown size,
//! so the table is lost again at that point.
//!
//! # Limits
//!
//! `SETTINGS_HEADER_TABLE_SIZE` (set with [`Decoder::set_limit`]) bounds the size updates
//! the decoder accepts; the table's size itself changes only through size updates in header
//! blocks (RFC 7541 §4.2, §6.3). At most [`MAX_TABLE_BYTES`] of entries are kept whatever
//! size the peers agree on: the oldest entries beyond it are forgotten as if lost.

use std::collections::VecDeque;

use super::huffman;

/// The dynamic table's size before any size update (RFC 9113 §6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Most bytes of entries (as RFC 7541 §4.1 counts them) a decoder keeps.
pub const MAX_TABLE_BYTES: usize = 64 * 1024;

/// The static table (RFC 7541 Appendix A); index 1 is `STATIC_TABLE[0]`.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Bytes an entry counts for beside its name and value (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Why a header block does not decode. The decoder's table is lost afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// An index that is 0 or past the tables (while the dynamic table is synchronised).
    #[error("hpack index {0} out of range")]
    InvalidIndex(u64),
    /// An integer longer than 32 bits.
    #[error("hpack integer overflows")]
    IntegerOverflow,
    /// A Huffman-coded string that does not decode.
    #[error("invalid hpack huffman string")]
    InvalidHuffman,
    /// A dynamic table size update larger than `SETTINGS_HEADER_TABLE_SIZE`.
    #[error("hpack table size update to {size} above the limit {limit}")]
    SizeUpdateTooLarge {
        /// The size asked for.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// A dynamic table size update after the first field of a block.
    #[error("hpack table size update after a header field")]
    LateSizeUpdate,
    /// A complete block that ends inside a representation.
    #[error("hpack header block ends inside a representation")]
    Truncated,
}

/// One decoded header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// A field whose name and value are known.
    Known {
        /// The name, as sent (HTTP/2 requires lowercase).
        name: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// A field that refers to a dynamic table entry whose content was lost.
    Unknown,
}

/// How a block's decoding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockSummary {
    /// Fields reported, known or not.
    pub fields: usize,
    /// Fields reported as [`Field::Unknown`].
    pub unknown_fields: usize,
    /// The block was a prefix and ended inside a representation, which was dropped.
    pub cut: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    name: Box<[u8]>,
    value: Box<[u8]>,
}

impl Entry {
    fn size(&self) -> usize {
        self.name.len() + self.value.len() + ENTRY_OVERHEAD
    }
}

/// An HPACK decoder: the dynamic table of one direction of a connection. See the module docs.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Known entries, newest first.
    entries: VecDeque<Entry>,
    /// Sum of the known entries' sizes.
    size: usize,
    /// The table's maximum size, from the last size update.
    max_size: usize,
    /// `max_size` is known: the connection was seen from its start, or a size update came.
    max_size_known: bool,
    /// `SETTINGS_HEADER_TABLE_SIZE` announced by the decoding peer, if seen.
    limit: Option<usize>,
    /// Entries of unknown content may remain, older than every known entry.
    unknown_entries: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

/// What a representation names: a known (name, value) pair, only a known name, or nothing
/// known.
enum Lookup<'t> {
    Known(&'t [u8], &'t [u8]),
    Unknown,
}

impl Decoder {
    /// The decoder of a connection seen from its first header block: an empty table of
    /// [`DEFAULT_TABLE_SIZE`] bytes, with the default `SETTINGS_HEADER_TABLE_SIZE`.
    pub fn new() -> Self {
        Decoder {
            entries: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            max_size_known: true,
            limit: Some(DEFAULT_TABLE_SIZE),
            unknown_entries: false,
        }
    }

    /// The decoder of a connection first seen in its middle: the table may hold entries of
    /// unknown content, and its size and the settings are unknown. Until a size update says
    /// how big the table is, it is never taken for synchronised again.
    pub fn unsynchronized() -> Self {
        Decoder {
            limit: None,
            max_size_known: false,
            unknown_entries: true,
            ..Decoder::new()
        }
    }

    /// Whether every entry of the table is known.
    pub fn is_synchronized(&self) -> bool {
        !self.unknown_entries
    }

    /// The table's maximum size in force.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Entries known, newest first: `(name, value)`.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.iter().map(|e| (&*e.name, &*e.value))
    }

    /// Sum of the known entries' sizes (RFC 7541 §4.1).
    pub fn known_size(&self) -> usize {
        self.size
    }

    /// The decoding peer announced `SETTINGS_HEADER_TABLE_SIZE = size`: later size updates
    /// may not exceed it.
    pub fn set_limit(&mut self, size: u32) {
        self.limit = Some(usize::try_from(size).unwrap_or(usize::MAX));
    }

    /// Header blocks (or parts of them) went by without being decoded: every entry becomes
    /// unknown.
    pub fn lose(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.unknown_entries = true;
    }

    /// Decodes a header block and reports each field to `on_field`, in order.
    ///
    /// `complete` tells whether `block` is the whole block. A prefix is decoded up to its last
    /// whole representation, and the table is then lost (the rest may have changed it). On an
    /// error, the fields reported so far stand and the table is lost.
    pub fn decode(
        &mut self,
        block: &[u8],
        complete: bool,
        on_field: &mut dyn FnMut(Field<'_>),
    ) -> Result<BlockSummary, HpackError> {
        let result = self.decode_fields(block, complete, on_field);
        match &result {
            Ok(summary) if summary.cut || !complete => self.lose(),
            Ok(_) => {}
            Err(_) => self.lose(),
        }
        result
    }

    fn decode_fields(
        &mut self,
        block: &[u8],
        complete: bool,
        on_field: &mut dyn FnMut(Field<'_>),
    ) -> Result<BlockSummary, HpackError> {
        let mut summary = BlockSummary::default();
        let mut name_buf = Vec::new();
        let mut value_buf = Vec::new();
        let mut pos = 0;
        while pos < block.len() {
            match self.representation(
                &block[pos..],
                summary.fields == 0,
                &mut name_buf,
                &mut value_buf,
                on_field,
            )? {
                Step::Done { used, field } => {
                    pos += used;
                    match field {
                        Some(true) => summary.fields += 1,
                        Some(false) => {
                            summary.fields += 1;
                            summary.unknown_fields += 1;
                        }
                        None => {}
                    }
                }
                Step::Cut if complete => return Err(HpackError::Truncated),
                Step::Cut => {
                    summary.cut = true;
                    break;
                }
            }
        }
        Ok(summary)
    }

    /// Decodes the representation at the start of `buf`.
    fn representation(
        &mut self,
        buf: &[u8],
        first: bool,
        name_buf: &mut Vec<u8>,
        value_buf: &mut Vec<u8>,
        on_field: &mut dyn FnMut(Field<'_>),
    ) -> Result<Step, HpackError> {
        let Some(&lead) = buf.first() else {
            return Ok(Step::Cut);
        };
        if lead & 0x80 != 0 {
            // Indexed field (§6.1).
            let Some((index, used)) = integer(buf, 7)? else {
                return Ok(Step::Cut);
            };
            let known = match self.lookup(index)? {
                Lookup::Known(name, value) => {
                    on_field(Field::Known { name, value });
                    true
                }
                Lookup::Unknown => {
                    on_field(Field::Unknown);
                    false
                }
            };
            return Ok(Step::Done {
                used,
                field: Some(known),
            });
        }
        if lead & 0xe0 == 0x20 {
            // Dynamic table size update (§6.3): only before the first field.
            let Some((size, used)) = integer(buf, 5)? else {
                return Ok(Step::Cut);
            };
            if !first {
                return Err(HpackError::LateSizeUpdate);
            }
            self.resize(usize::try_from(size).unwrap_or(usize::MAX))?;
            return Ok(Step::Done { used, field: None });
        }
        // Literal field: with incremental indexing (§6.2.1), without indexing (§6.2.2) or
        // never indexed (§6.2.3).
        let (indexing, prefix) = if lead & 0x40 != 0 {
            (true, 6)
        } else {
            (false, 4)
        };
        let Some((name_index, mut used)) = integer(buf, prefix)? else {
            return Ok(Step::Cut);
        };
        name_buf.clear();
        let name_known = if name_index == 0 {
            match string(&buf[used..], name_buf)? {
                Some(n) => used += n,
                None => return Ok(Step::Cut),
            }
            true
        } else {
            match self.lookup(name_index)? {
                Lookup::Known(name, _) => {
                    name_buf.extend_from_slice(name);
                    true
                }
                Lookup::Unknown => false,
            }
        };
        value_buf.clear();
        match string(&buf[used..], value_buf)? {
            Some(n) => used += n,
            None => return Ok(Step::Cut),
        }
        if name_known {
            on_field(Field::Known {
                name: name_buf,
                value: value_buf,
            });
        } else {
            on_field(Field::Unknown);
        }
        if indexing {
            if name_known {
                self.insert(name_buf, value_buf);
            } else {
                // An entry of unknown size: the table cannot be followed from here.
                self.lose();
            }
        }
        Ok(Step::Done {
            used,
            field: Some(name_known),
        })
    }

    fn lookup(&self, index: u64) -> Result<Lookup<'_>, HpackError> {
        let Ok(i) = usize::try_from(index) else {
            return Err(HpackError::InvalidIndex(index));
        };
        if i == 0 {
            return Err(HpackError::InvalidIndex(index));
        }
        if let Some((name, value)) = STATIC_TABLE.get(i - 1) {
            return Ok(Lookup::Known(name.as_bytes(), value.as_bytes()));
        }
        let dynamic = i - 1 - STATIC_TABLE.len();
        match self.entries.get(dynamic) {
            Some(entry) => Ok(Lookup::Known(&entry.name, &entry.value)),
            None if self.unknown_entries => Ok(Lookup::Unknown),
            None => Err(HpackError::InvalidIndex(index)),
        }
    }

    fn resize(&mut self, size: usize) -> Result<(), HpackError> {
        if let Some(limit) = self.limit
            && size > limit
        {
            return Err(HpackError::SizeUpdateTooLarge { size, limit });
        }
        self.max_size = size;
        self.max_size_known = true;
        self.evict_to(size);
        if size == 0 {
            self.unknown_entries = false;
        }
        self.check_synchronized();
        Ok(())
    }

    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            // RFC 7541 §4.4: the table is emptied, the entry not added.
            self.entries.clear();
            self.size = 0;
            self.unknown_entries &= !self.max_size_known;
            return;
        }
        self.evict_to(self.max_size - size);
        if size > MAX_TABLE_BYTES {
            // In the peers' table, but too big to keep.
            self.lose();
            return;
        }
        self.entries.push_front(Entry {
            name: name.into(),
            value: value.into(),
        });
        self.size += size;
        while self.size > MAX_TABLE_BYTES {
            // Still in the peers' table, forgotten here: the oldest become unknown.
            self.pop_oldest();
            self.unknown_entries = true;
        }
        self.check_synchronized();
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            if !self.pop_oldest() {
                break;
            }
        }
    }

    fn pop_oldest(&mut self) -> bool {
        match self.entries.pop_back() {
            Some(entry) => {
                self.size -= entry.size();
                true
            }
            None => false,
        }
    }

    /// Unknown entries are older than every known one and evicted first: none can remain
    /// once not even the smallest entry fits beside the known ones.
    fn check_synchronized(&mut self) {
        if self.unknown_entries && self.max_size_known && self.size + ENTRY_OVERHEAD > self.max_size
        {
            self.unknown_entries = false;
        }
    }
}

/// The outcome of decoding one representation.
enum Step {
    /// `used` bytes decoded; `field` tells whether a field was reported and if it was known.
    Done { used: usize, field: Option<bool> },
    /// The bytes end inside the representation.
    Cut,
}

/// Decodes an integer with an `prefix`-bit prefix (§5.1): `(value, bytes used)`, or `None`
/// when `buf` ends first.
fn integer(buf: &[u8], prefix: u32) -> Result<Option<(u64, usize)>, HpackError> {
    let Some(&lead) = buf.first() else {
        return Ok(None);
    };
    let mask = (1u8 << prefix) - 1;
    let mut value = u64::from(lead & mask);
    if value < u64::from(mask) {
        return Ok(Some((value, 1)));
    }
    let mut shift = 0u32;
    for (i, &byte) in buf.iter().enumerate().skip(1) {
        value += u64::from(byte & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return Err(HpackError::IntegerOverflow);
        }
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
        shift += 7;
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
    }
    Ok(None)
}

/// Decodes a string literal (§5.2) into `out`: the bytes used, or `None` when `buf` ends
/// first.
fn string(buf: &[u8], out: &mut Vec<u8>) -> Result<Option<usize>, HpackError> {
    let Some(&lead) = buf.first() else {
        return Ok(None);
    };
    let Some((len, used)) = integer(buf, 7)? else {
        return Ok(None);
    };
    let Some(end) = usize::try_from(len)
        .ok()
        .and_then(|len| used.checked_add(len))
        .filter(|&end| end <= buf.len())
    else {
        return Ok(None);
    };
    let bytes = &buf[used..end];
    if lead & 0x80 != 0 {
        huffman::decode(bytes, out).map_err(|_| HpackError::InvalidHuffman)?;
    } else {
        out.extend_from_slice(bytes);
    }
    Ok(Some(end))
}

/// A small HPACK encoder for tests: static and dynamic references for exact matches, literals
/// with incremental indexing otherwise, Huffman coding when it is shorter.
#[cfg(test)]
pub(crate) mod test_encoder {
    use super::*;

    #[derive(Debug, Default)]
    pub(crate) struct Encoder {
        entries: VecDeque<(Vec<u8>, Vec<u8>)>,
        pub(crate) size: usize,
        max_size: usize,
        pub(crate) huffman: bool,
    }

    impl Encoder {
        pub(crate) fn new(huffman: bool) -> Self {
            Encoder {
                max_size: DEFAULT_TABLE_SIZE,
                huffman,
                ..Encoder::default()
            }
        }

        pub(crate) fn size_update(&mut self, size: usize, out: &mut Vec<u8>) {
            self.max_size = size;
            self.evict_to(size);
            integer_out(size as u64, 5, 0x20, out);
        }

        pub(crate) fn encode(&mut self, fields: &[(&[u8], &[u8])], out: &mut Vec<u8>) {
            for &(name, value) in fields {
                let statics = STATIC_TABLE
                    .iter()
                    .map(|(n, v)| (n.as_bytes(), v.as_bytes()));
                let dynamics = self.entries.iter().map(|(n, v)| (&n[..], &v[..]));
                let all: Vec<(&[u8], &[u8])> = statics.chain(dynamics).collect();
                if let Some(i) = all.iter().position(|&(n, v)| n == name && v == value) {
                    integer_out(i as u64 + 1, 7, 0x80, out);
                    continue;
                }
                match all.iter().position(|&(n, _)| n == name) {
                    Some(i) => integer_out(i as u64 + 1, 6, 0x40, out),
                    None => {
                        out.push(0x40);
                        self.string_out(name, out);
                    }
                }
                self.string_out(value, out);
                let size = name.len() + value.len() + ENTRY_OVERHEAD;
                if size > self.max_size {
                    self.entries.clear();
                    self.size = 0;
                } else {
                    self.evict_to(self.max_size - size);
                    self.entries.push_front((name.to_vec(), value.to_vec()));
                    self.size += size;
                }
            }
        }

        fn evict_to(&mut self, target: usize) {
            while self.size > target {
                let Some((n, v)) = self.entries.pop_back() else {
                    break;
                };
                self.size -= n.len() + v.len() + ENTRY_OVERHEAD;
            }
        }

        fn string_out(&self, s: &[u8], out: &mut Vec<u8>) {
            let mut coded = Vec::new();
            huffman::encode(s, &mut coded);
            if self.huffman && coded.len() < s.len() {
                integer_out(coded.len() as u64, 7, 0x80, out);
                out.extend_from_slice(&coded);
            } else {
                integer_out(s.len() as u64, 7, 0, out);
                out.extend_from_slice(s);
            }
        }
    }

    pub(crate) fn integer_out(value: u64, prefix: u32, pattern: u8, out: &mut Vec<u8>) {
        let mask = (1u64 << prefix) - 1;
        if value < mask {
            out.push(pattern | value as u8);
            return;
        }
        out.push(pattern | mask as u8);
        let mut rest = value - mask;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::test_encoder::Encoder;
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("valid input"))
            .collect()
    }

    type Fields = Vec<Option<(String, String)>>;

    fn decode(decoder: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
        decode_with(decoder, block, true)
    }

    fn decode_with(
        decoder: &mut Decoder,
        block: &[u8],
        complete: bool,
    ) -> Result<Fields, HpackError> {
        let mut fields = Vec::new();
        decoder.decode(block, complete, &mut |field| {
            fields.push(match field {
                Field::Known { name, value } => Some((
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                )),
                Field::Unknown => None,
            })
        })?;
        Ok(fields)
    }

    fn known(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(n, v)| Some((n.to_string(), v.to_string())))
            .collect()
    }

    fn table(decoder: &Decoder) -> Vec<(String, String)> {
        decoder
            .entries()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn rfc7541_c2_single_representations() {
        // C.2.1 literal with indexing
        let mut d = Decoder::new();
        let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        assert_eq!(
            decode(&mut d, &block),
            Ok(known(&[("custom-key", "custom-header")]))
        );
        assert_eq!(d.known_size(), 55);
        // C.2.2 literal without indexing
        let mut d = Decoder::new();
        let block = hex("040c 2f73 616d 706c 652f 7061 7468");
        assert_eq!(
            decode(&mut d, &block),
            Ok(known(&[(":path", "/sample/path")]))
        );
        assert_eq!(d.known_size(), 0);
        // C.2.3 never indexed
        let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
        assert_eq!(decode(&mut d, &block), Ok(known(&[("password", "secret")])));
        assert_eq!(d.known_size(), 0);
        // C.2.4 indexed
        assert_eq!(decode(&mut d, &[0x82]), Ok(known(&[(":method", "GET")])));
    }

    fn requests(blocks: [&str; 3]) {
        let mut d = Decoder::new();
        let first = known(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ]);
        assert_eq!(decode(&mut d, &hex(blocks[0])), Ok(first));
        assert_eq!(d.known_size(), 57);
        let second = known(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache"),
        ]);
        assert_eq!(decode(&mut d, &hex(blocks[1])), Ok(second));
        assert_eq!(d.known_size(), 110);
        let third = known(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ]);
        assert_eq!(decode(&mut d, &hex(blocks[2])), Ok(third));
        assert_eq!(d.known_size(), 164);
        assert_eq!(
            table(&d),
            vec![
                ("custom-key".into(), "custom-value".into()),
                ("cache-control".into(), "no-cache".into()),
                (":authority".into(), "www.example.com".into()),
            ]
        );
    }

    #[test]
    fn rfc7541_c3_requests_without_huffman() {
        requests([
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ]);
    }

    #[test]
    fn rfc7541_c4_requests_with_huffman() {
        requests([
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ]);
    }

    fn responses(blocks: [&str; 3]) {
        let mut d = Decoder::new();
        // The examples use a 256-byte table: a size update, as a peer would send it.
        d.decode(&[0x3f, 0xe1, 0x01], true, &mut |_| {})
            .expect("valid input");
        assert_eq!(d.max_size(), 256);
        let first = known(&[
            (":status", "302"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ]);
        assert_eq!(decode(&mut d, &hex(blocks[0])), Ok(first));
        assert_eq!(d.known_size(), 222);
        let second = known(&[
            (":status", "307"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("location", "https://www.example.com"),
        ]);
        assert_eq!(decode(&mut d, &hex(blocks[1])), Ok(second));
        assert_eq!(d.known_size(), 222);
        let third = known(&[
            (":status", "200"),
            ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
            ("location", "https://www.example.com"),
            ("content-encoding", "gzip"),
            (
                "set-cookie",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ]);
        assert_eq!(decode(&mut d, &hex(blocks[2])), Ok(third));
        assert_eq!(d.known_size(), 215);
        assert_eq!(
            table(&d),
            vec![
                (
                    "set-cookie".into(),
                    "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1".into()
                ),
                ("content-encoding".into(), "gzip".into()),
                ("date".into(), "Mon, 21 Oct 2013 20:13:22 GMT".into()),
            ]
        );
    }

    #[test]
    fn rfc7541_c5_responses_without_huffman() {
        responses([
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
             2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
             6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
             54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
             5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
             3d31",
        ]);
    }

    #[test]
    fn rfc7541_c6_responses_with_huffman() {
        responses([
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
             77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
             9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ]);
    }

    #[test]
    fn errors_lose_the_table() {
        let mut d = Decoder::new();
        assert_eq!(decode(&mut d, &[0x80]), Err(HpackError::InvalidIndex(0)));
        assert!(!d.is_synchronized());
        let mut d = Decoder::new();
        assert_eq!(decode(&mut d, &[0xbe]), Err(HpackError::InvalidIndex(62)));
        let mut d = Decoder::new();
        assert_eq!(
            decode(&mut d, &[0x82, 0x20]),
            Err(HpackError::LateSizeUpdate)
        );
        let mut d = Decoder::new();
        d.set_limit(100);
        assert_eq!(
            decode(&mut d, &[0x3f, 0xe1, 0x01]),
            Err(HpackError::SizeUpdateTooLarge {
                size: 256,
                limit: 100
            })
        );
        let mut d = Decoder::new();
        assert_eq!(
            decode(&mut d, &[0x40, 0x05, b'a']),
            Err(HpackError::Truncated)
        );
        let mut d = Decoder::new();
        assert_eq!(
            decode(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(HpackError::IntegerOverflow)
        );
        let mut d = Decoder::new();
        assert_eq!(
            decode(&mut d, &[0x00, 0x81, 0x00, 0x00]),
            Err(HpackError::InvalidHuffman)
        );
    }

    #[test]
    fn a_cut_block_keeps_its_decodable_fields_and_loses_the_table() {
        let mut d = Decoder::new();
        let block = hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d");
        let fields = decode_with(&mut d, &block[..8], false).expect("valid input");
        assert_eq!(
            fields,
            known(&[(":method", "GET"), (":scheme", "http"), (":path", "/")])
        );
        assert!(!d.is_synchronized());
        // The next request refers to the lost entry: unknown, the rest decodes.
        let fields = decode(&mut d, &hex("8286 84be 5808 6e6f 2d63 6163 6865")).expect("ok");
        assert_eq!(
            fields,
            vec![
                Some((":method".into(), "GET".into())),
                Some((":scheme".into(), "http".into())),
                Some((":path".into(), "/".into())),
                None,
                Some(("cache-control".into(), "no-cache".into())),
            ]
        );
        // Entries inserted after the loss are known: `cache-control` is index 62.
        let fields = decode(&mut d, &[0xbe, 0xbf]).expect("ok");
        assert_eq!(
            fields,
            vec![Some(("cache-control".into(), "no-cache".into())), None]
        );
    }

    #[test]
    fn the_table_resynchronises_when_known_entries_fill_it() {
        let mut d = Decoder::new();
        d.lose();
        assert!(!d.is_synchronized());
        let mut e = Encoder::new(false);
        // 4096 bytes of table: 32 entries of 128 bytes fill it, no unknown entry can remain.
        let value = [b'v'; 87];
        let mut block = Vec::new();
        for i in 0..31 {
            let name = format!("x-name-{i:02}");
            e.encode(&[(name.as_bytes(), &value)], &mut block);
        }
        decode(&mut d, &block).expect("valid input");
        assert!(!d.is_synchronized(), "room for one more entry");
        let mut block = Vec::new();
        for i in 31..33 {
            let name = format!("x-name-{i:02}");
            e.encode(&[(name.as_bytes(), &value)], &mut block);
        }
        decode(&mut d, &block).expect("valid input");
        assert!(d.is_synchronized());
        assert_eq!(d.known_size(), 4096);
        // Seen from the middle of a connection, the table's size is a guess: no resync.
        let mut mid = Decoder::unsynchronized();
        decode(&mut mid, &block).expect("valid input");
        assert!(!mid.is_synchronized());
        // A size update to 0 empties the table: synchronised at once.
        decode(&mut mid, &[0x20]).expect("valid input");
        assert!(mid.is_synchronized());
    }

    #[test]
    fn a_literal_with_an_unknown_name_loses_the_table_again() {
        let mut d = Decoder::unsynchronized();
        decode(&mut d, &hex("400a 6375 7374 6f6d 2d6b 6579 0161")).expect("valid");
        assert_eq!(d.entries().count(), 1);
        // Literal with indexing whose name is entry 63 (unknown).
        let fields = decode(&mut d, &[0x7f, 0x00, 0x01, b'b', 0xbe]).expect("valid");
        assert_eq!(fields, vec![None, None]);
        assert_eq!(d.entries().count(), 0);
    }

    #[test]
    fn oversized_entries_empty_the_table() {
        let mut d = Decoder::new();
        decode(&mut d, &[0x3f, 0x21]).expect("size update to 64");
        decode(&mut d, &hex("400a 6375 7374 6f6d 2d6b 6579 0161")).expect("valid");
        assert_eq!(d.known_size(), 43);
        // 32 + 10 + 30 > 64: the table is emptied and stays synchronised.
        let mut block = hex("400a 6375 7374 6f6d 2d6b 6579 1e");
        block.extend([b'z'; 30]);
        decode(&mut d, &block).expect("valid");
        assert_eq!(d.known_size(), 0);
        assert!(d.is_synchronized());
        assert_eq!(decode(&mut d, &[0xbe]), Err(HpackError::InvalidIndex(62)));
    }

    #[test]
    fn kept_bytes_are_bounded() {
        let mut d = Decoder::unsynchronized();
        let mut block = Vec::new();
        super::test_encoder::integer_out(1 << 20, 5, 0x20, &mut block);
        let mut e = Encoder::new(false);
        e.size_update(1 << 20, &mut Vec::new());
        let value = vec![b'v'; 1000];
        for i in 0..200 {
            let name = format!("x-{i}");
            e.encode(&[(name.as_bytes(), &value)], &mut block);
        }
        decode(&mut d, &block).expect("valid input");
        assert!(d.known_size() <= MAX_TABLE_BYTES);
        assert!(!d.is_synchronized());
        // The newest entries are still right.
        let fields = decode(&mut d, &[0xbe]).expect("valid");
        assert_eq!(
            fields,
            vec![Some((
                "x-199".into(),
                String::from_utf8(value).expect("ascii")
            ))]
        );
    }

    fn field() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        let names = prop_oneof![
            Just(b":method".to_vec()),
            Just(b":path".to_vec()),
            Just(b":status".to_vec()),
            Just(b"content-type".to_vec()),
            Just(b"x-request-id".to_vec()),
            "[a-z-]{1,12}".prop_map(String::into_bytes),
        ];
        let values = prop_oneof![
            Just(b"GET".to_vec()),
            Just(b"200".to_vec()),
            Just(b"application/grpc".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ];
        (names, values)
    }

    proptest! {
        #[test]
        fn round_trip_through_the_dynamic_table(
            blocks in proptest::collection::vec(proptest::collection::vec(field(), 0..12), 1..8),
            huffman in any::<bool>(),
            table_size in prop_oneof![Just(4096usize), Just(256), Just(0), 0usize..600],
        ) {
            let mut encoder = Encoder::new(huffman);
            let mut decoder = Decoder::new();
            for (i, fields) in blocks.iter().enumerate() {
                let mut block = Vec::new();
                if i == 0 {
                    encoder.size_update(table_size, &mut block);
                }
                let pairs: Vec<(&[u8], &[u8])> =
                    fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
                encoder.encode(&pairs, &mut block);
                let decoded = decode(&mut decoder, &block).expect("encoder output decodes");
                let expected: Fields = fields
                    .iter()
                    .map(|(n, v)| Some((
                        String::from_utf8_lossy(n).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )))
                    .collect();
                prop_assert_eq!(decoded, expected);
                prop_assert!(decoder.is_synchronized());
                prop_assert_eq!(decoder.known_size(), encoder.size);
            }
        }

        #[test]
        fn after_a_loss_known_fields_are_right(
            blocks in proptest::collection::vec(proptest::collection::vec(field(), 1..10), 2..8),
            lost in 0usize..8,
        ) {
            // The decoder misses block `lost`; every field it reports later as known must
            // be the field that was sent.
            let mut encoder = Encoder::new(true);
            let mut decoder = Decoder::new();
            for (i, fields) in blocks.iter().enumerate() {
                let pairs: Vec<(&[u8], &[u8])> =
                    fields.iter().map(|(n, v)| (&n[..], &v[..])).collect();
                let mut block = Vec::new();
                encoder.encode(&pairs, &mut block);
                if i == lost {
                    decoder.lose();
                    continue;
                }
                let decoded = decode(&mut decoder, &block).expect("decodes");
                prop_assert_eq!(decoded.len(), fields.len());
                for (got, (n, v)) in decoded.iter().zip(fields) {
                    if let Some((gn, gv)) = got {
                        prop_assert_eq!(gn.as_bytes(), &n[..]);
                        prop_assert_eq!(gv, &String::from_utf8_lossy(v).into_owned());
                    }
                }
            }
        }

        #[test]
        fn any_bytes_are_safe(
            block in proptest::collection::vec(any::<u8>(), 0..256),
            complete in any::<bool>(),
            synced in any::<bool>(),
        ) {
            let mut decoder = if synced { Decoder::new() } else { Decoder::unsynchronized() };
            let _ = decoder.decode(&block, complete, &mut |_| {});
            let _ = decoder.decode(&block, complete, &mut |_| {});
            prop_assert!(decoder.known_size() <= MAX_TABLE_BYTES);
        }
    }
}
