//! Feeds a sequence of arbitrary frames through a `PacketProcessor` (with ticks and a final
//! flush) and checks the records it emits.
//!
//! Input: records of a 4-byte header and a frame: `len_lo, len_hi, time_step, control`
//! followed by `len` bytes. `control` bit 0 makes the frame outgoing, bit 1 ticks after
//! it, bit 2 uses raw IP.

#![no_main]

use std::time::Duration;

use flowmesh_packet::{
    Frame, LinkType, PacketConfig, PacketOrigin, PacketProcessor, ProcessorOutput,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = PacketConfig {
        max_flows: 4,
        closed_flow_linger: Duration::from_millis(5),
        flow_idle_timeout: Duration::from_millis(50),
        handshake_timeout: Duration::from_millis(20),
        report_interval: Duration::from_millis(30),
        reorder_timeout: Duration::from_millis(3),
        reorder_max_bytes: 2048,
        reorder_budget_bytes: 4096,
        ..PacketConfig::default()
    };
    let Ok(mut processor) = PacketProcessor::new(&config) else {
        return;
    };
    let mut out = ProcessorOutput::default();
    let mut now = 1_000_000_000_000u64;
    let mut rest = data;
    while let [len_lo, len_hi, step, control, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        now += u64::from(*step) * 100_000;
        processor.process_frame(
            &Frame {
                ifindex: 1,
                timestamp_ns: now,
                wire_len: frame.len() as u32,
                link: if control & 4 != 0 {
                    LinkType::RawIp
                } else {
                    LinkType::Ethernet
                },
                origin: if control & 1 != 0 {
                    PacketOrigin::Outgoing
                } else {
                    PacketOrigin::Incoming
                },
                offloaded_vlan: None,
                data: frame,
            },
            &mut out,
        );
        if control & 2 != 0 {
            processor.tick(now, &mut out);
        }
    }
    processor.flush(now, &mut out);
    let stats = processor.stats();
    assert_eq!(stats.flows_active, 0);
    assert_eq!(stats.reorder_bytes, 0);
    assert_eq!(stats.l4_records, out.l4.len() as u64);
    assert_eq!(stats.l7_records, out.l7.len() as u64);
    assert!(stats.flows_active + stats.flows_created >= stats.flows_evicted);
    for record in &out.l4 {
        assert!(record.start_ns <= record.end_ns);
        assert!(record.payload_bytes_tx <= record.total_payload_bytes_tx);
        assert!(record.payload_bytes_rx <= record.total_payload_bytes_rx);
        assert!(record.packets_tx <= record.total_packets_tx);
        assert!(record.total_payload_bytes_tx <= record.total_bytes_tx);
        assert!(record.total_payload_bytes_rx <= record.total_bytes_rx);
    }
    // Every flow's records end with exactly one final record.
    let mut finals = std::collections::HashMap::new();
    for record in &out.l4 {
        *finals.entry(record.flow_id).or_insert(0) += u32::from(record.close_type.is_final());
    }
    assert!(finals.values().all(|count| *count == 1));
});
