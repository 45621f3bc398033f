//! Offers fuzzer-chosen header values to every trace-context parser, checking that parsing is
//! safe and that what comes out is well formed: hex ids of exactly 32 and 16 lowercase digits,
//! not all zero (SkyWalking's string ids non-empty), and that a header block's choice does
//! not depend on the order of headers of different formats.
//!
//! Input: blocks of `name index, len` followed by `len` bytes of value.

#![no_main]

use flowmesh_protocols::trace_context::{TraceContext, TraceHeaders};
use libfuzzer_sys::fuzz_target;

const NAMES: [&[u8]; 8] = [
    b"traceparent",
    b"b3",
    b"X-B3-TraceId",
    b"x-b3-spanid",
    b"X-B3-ParentSpanId",
    b"uber-trace-id",
    b"sw8",
    b"host",
];

fn check_hex(id: &str, width: usize) {
    assert_eq!(id.len(), width, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");
    assert!(id.bytes().any(|b| b != b'0'), "{id}");
}

fn check(ctx: &TraceContext, sw8: bool) {
    if sw8 {
        assert!(!ctx.trace_id.is_empty() && !ctx.span_id.is_empty());
    } else {
        check_hex(&ctx.trace_id, 32);
        check_hex(&ctx.span_id, 16);
    }
    if let Some(parent) = &ctx.parent_span_id {
        check_hex(parent, 16);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut headers = Vec::new();
    let mut rest = data;
    while let [name, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        headers.push((NAMES[usize::from(*name) % NAMES.len()], &tail[..len]));
        rest = &tail[len..];
    }
    for (_, value) in &headers {
        for (parsed, sw8) in [
            (TraceContext::from_traceparent(value), false),
            (TraceContext::from_b3(value), false),
            (TraceContext::from_uber_trace_id(value), false),
            (TraceContext::from_sw8(value), true),
        ] {
            if let Some(ctx) = parsed {
                check(&ctx, sw8);
            }
        }
    }
    let collect = |order: &mut dyn Iterator<Item = &(&[u8], &[u8])>| {
        let mut block = TraceHeaders::default();
        for (name, value) in order {
            block.offer(name, value);
        }
        block.finish()
    };
    let forward = collect(&mut headers.iter());
    // Reordering headers of *different* names keeps the choice: a stable sort by name
    // keeps each name's own values in order.
    let mut by_name = headers.clone();
    by_name.sort_by_key(|(name, _)| name.to_ascii_lowercase());
    assert_eq!(forward, collect(&mut by_name.iter()));
    if let Some(ctx) = &forward {
        check(ctx, !ctx.trace_id.bytes().all(|b| b.is_ascii_hexdigit()) || ctx.span_id.contains('-'));
    }
});
