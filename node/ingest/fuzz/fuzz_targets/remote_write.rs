//! Feeds arbitrary bytes to the remote_write decoder, both as the body (a snappy block) and,
//! so that the fuzzer reaches the protobuf decoder and the validation without having to
//! learn snappy first, as the decompressed protobuf. Whatever decodes must re-encode and
//! decode to the same request, bit for bit.

#![no_main]

use flowmesh_ingest::remote_write::{
    Limits, WriteRequest, decode_uncompressed, decode_write_request, encode_write_request,
};
use libfuzzer_sys::fuzz_target;

fn check(request: &WriteRequest) {
    let body = encode_write_request(request).expect("a decoded request re-encodes");
    let again =
        decode_write_request(&body, &Limits::default()).expect("a decoded request decodes again");
    // Compare encodings, not values: NaN != NaN, and the staleness marker is a NaN. Snappy
    // compression is deterministic, so equal requests give equal bodies.
    assert_eq!(
        encode_write_request(&again.request).expect("re-encodes"),
        body
    );
    assert_eq!(again.stats.resorted_series, 0, "decoded labels are sorted");
}

fuzz_target!(|data: &[u8]| {
    // Small count limits so that the fuzzer also explores the limit paths.
    let limits = Limits {
        max_series: 64,
        max_samples: 256,
        max_labels_per_series: 16,
        ..Limits::default()
    };
    if let Ok(decoded) = decode_write_request(data, &limits) {
        check(&decoded.request);
    }
    if let Ok(decoded) = decode_uncompressed(data, &limits) {
        check(&decoded.request);
    }
});
