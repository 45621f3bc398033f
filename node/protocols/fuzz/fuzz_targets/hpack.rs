//! Decodes fuzzer-chosen header blocks with one HPACK decoder, checking that decoding is safe,
//! bounded, and consistent: a prefix of a block decodes to a prefix of the block's fields.
//!
//! Input: one config byte (bit 0: a decoder of a connection seen from the middle, bit 1: a
//! `SETTINGS_HEADER_TABLE_SIZE` of `config * 64`), then blocks of `len, cut` followed by `len`
//! bytes; each block is also decoded cut to its first `cut` bytes, by a copy of the decoder.

#![no_main]

use flowmesh_protocols::http2::hpack::{Decoder, Field, MAX_TABLE_BYTES};
use libfuzzer_sys::fuzz_target;

type Fields = Vec<Option<(Vec<u8>, Vec<u8>)>>;

fn decode(decoder: &mut Decoder, block: &[u8], complete: bool) -> Result<Fields, ()> {
    let mut fields = Vec::new();
    decoder
        .decode(block, complete, &mut |field| {
            fields.push(match field {
                Field::Known { name, value } => Some((name.to_vec(), value.to_vec())),
                Field::Unknown => None,
            })
        })
        .map_err(|_| ())?;
    Ok(fields)
}

fuzz_target!(|data: &[u8]| {
    let [config, rest @ ..] = data else {
        return;
    };
    let mut rest = rest;
    let mut decoder = if config & 1 != 0 {
        Decoder::unsynchronized()
    } else {
        Decoder::new()
    };
    if config & 2 != 0 {
        decoder.set_limit(u32::from(*config) * 64);
    }
    while let [len, cut, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (block, next) = tail.split_at(len);
        rest = next;
        let mut copy = decoder.clone();
        let whole = decode(&mut decoder, block, true);
        let cut = usize::from(*cut).min(block.len());
        let prefix = decode(&mut copy, &block[..cut], false);
        if let Ok(fields) = &whole {
            let prefix = prefix.expect("a prefix of a valid block decodes");
            assert!(prefix.len() <= fields.len());
            assert_eq!(&fields[..prefix.len()], &prefix[..]);
        }
        assert!(decoder.known_size() <= MAX_TABLE_BYTES);
        let sizes: usize = decoder.entries().map(|(n, v)| n.len() + v.len() + 32).sum();
        assert_eq!(sizes, decoder.known_size());
        assert!(decoder.known_size() <= decoder.max_size());
    }
});
