//! A snappy header that claims a huge decompressed size is rejected without allocating it.
//!
//! This file is its own test binary so that its counting allocator sees only this test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowmesh_ingest::RemoteWriteError;
use flowmesh_ingest::remote_write::{Limits, decode_write_request};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Bytes requested by this thread while counting is on.
    static REQUESTED: Cell<Option<usize>> = const { Cell::new(None) };
}

struct CountingAllocator;

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// const-initialised thread local, which does not allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = REQUESTED.try_with(|r| r.set(r.get().map(|n| n + layout.size())));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = REQUESTED.try_with(|r| r.set(r.get().map(|n| n + new_size)));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    REQUESTED.with(|r| r.set(Some(0)));
    let result = f();
    let bytes = REQUESTED.with(|r| r.replace(None)).unwrap();
    (result, bytes)
}

#[test]
fn a_header_claiming_4_gib_is_rejected_without_allocating() {
    // Snappy block header: the decompressed length as a varint, here 2^32 - 1 (the largest a
    // block may declare), followed by a literal that is far too short for it.
    let mut body = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    body.extend_from_slice(b"\x0cabcd");
    assert_eq!(snap::raw::decompress_len(&body).unwrap(), u32::MAX as usize);

    let (result, bytes) = allocated_by(|| decode_write_request(&body, &Limits::default()));
    assert!(bytes < 4096, "allocated {bytes} bytes");
    let error = result.unwrap_err();
    assert!(
        matches!(error, RemoteWriteError::DecompressedTooLarge { declared, limit }
            if declared == u32::MAX as usize && limit == 32 * 1024 * 1024),
        "{error:?}"
    );
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above against a counter that never counts.
    let (_, bytes) = allocated_by(|| vec![0u8; 10_000]);
    assert!(bytes >= 10_000);
}
