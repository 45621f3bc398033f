//! Decodes arbitrary bytes as a captured frame and checks what a decoded packet promises.
//!
//! Input: one control byte (bit 0: raw IP instead of Ethernet), two bytes of extra wire
//! length (little endian, added to the captured length), then the frame.

#![no_main]

use flowmesh_packet::{LinkType, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [control, extra_lo, extra_hi, frame @ ..] = data else {
        return;
    };
    let link = if control & 1 != 0 {
        LinkType::RawIp
    } else {
        LinkType::Ethernet
    };
    let wire_len = frame.len() as u32 + u32::from(u16::from_le_bytes([*extra_lo, *extra_hi]));
    if let Ok(packet) = decode(link, frame, wire_len) {
        assert!(packet.payload.len() <= packet.payload_len as usize);
        assert!(packet.payload_len < packet.ip_len);
        assert!(packet.ip_len <= wire_len);
        // The captured payload lies inside the frame.
        let frame_range = frame.as_ptr_range();
        let payload_range = packet.payload.as_ptr_range();
        assert!(packet.payload.is_empty() || frame_range.start <= payload_range.start);
        assert!(packet.payload.is_empty() || payload_range.end <= frame_range.end);
    }
});
