//! [`PacketConfig`]: what to capture and how the flow table is bounded.

use std::time::Duration;

use flowmesh_protocols::ConversationConfig;

use crate::PacketError;

/// Largest snap length accepted, in bytes (what `tcpdump` allows).
pub const MAX_SNAPLEN: u32 = 262_144;

/// Configuration of packet capture and of the [`crate::PacketProcessor`].
///
/// Memory is bounded by it: `ring_block_bytes * ring_blocks` of ring per interface, at
/// most `max_flows` flows, each with a bounded L7 [`flowmesh_protocols::Conversation`]
/// (`conversation`), and at most `reorder_budget_bytes` of out-of-order TCP payload held
/// for all flows together.
#[derive(Debug, Clone)]
pub struct PacketConfig {
    /// Interfaces to capture on, by name (`"eth0"`, `"lo"`). One socket and one ring per
    /// interface. Default: none (capture off).
    pub interfaces: Vec<String>,
    /// Size of one TPACKET_V3 ring block, bytes: a multiple of the page size, at least one
    /// snap length plus headers. The kernel hands blocks over whole, when full or after
    /// `block_timeout`. Default 1 MiB.
    pub ring_block_bytes: u32,
    /// Number of blocks in each interface's ring. Default 8 (8 MiB per interface).
    pub ring_blocks: u32,
    /// How long the kernel may keep a partly filled block before handing it over
    /// (`tp_retire_blk_tov`, whole milliseconds, at least 1). This is the capture latency
    /// at low packet rates. Default 20 ms.
    pub block_timeout: Duration,
    /// Bytes kept of each frame, from the link header. Byte counts do not depend on it
    /// (they come from the IP headers), but L7 parsing sees only this much of each
    /// segment; the rest becomes a gap. 128..=`MAX_SNAPLEN`. Default 65 535.
    pub snaplen: u32,
    /// A classic BPF program to attach instead of the default one ("IPv4 or IPv6, TCP or
    /// UDP", see [`crate::FilterBuilder`]). Its accept return values are capped at
    /// `snaplen`. Default `None`.
    pub filter: Option<Vec<libc::sock_filter>>,
    /// Longest wait in one [`crate::PacketCapture::poll_frames`] call when no block is
    /// ready. Default 100 ms.
    pub poll_timeout: Duration,
    /// A flow with no packet for this long ends with close type `timeout`. Default 60 s.
    pub flow_idle_timeout: Duration,
    /// A TCP flow whose handshake has not completed ends after this long without a packet,
    /// with connection result `timeout`. Default 10 s.
    pub handshake_timeout: Duration,
    /// A TCP flow closed by FIN (both ways) or RST stays in the table this long, so that
    /// the last ACKs and retransmitted FINs count towards it rather than start a new flow;
    /// its final record is emitted then. Default 2 s.
    pub closed_flow_linger: Duration,
    /// Most flows tracked at once; a new flow beyond it evicts an idle one (counted in
    /// [`crate::ProcessorStats::flows_evicted`]). Default 65 536.
    pub max_flows: usize,
    /// Flows still open emit a record of their counters every interval (close type
    /// `open`). Default 60 s.
    pub report_interval: Duration,
    /// Parse L7 (HTTP/1 and the other protocols of `flowmesh-protocols`) from packet
    /// payloads. Default true.
    pub l7_enabled: bool,
    /// Limits of each flow's L7 conversation.
    pub conversation: ConversationConfig,
    /// Out-of-order TCP payload held per flow direction while waiting for a hole to fill,
    /// bytes; beyond it the hole becomes a gap for the L7 parser. Default 64 KiB.
    pub reorder_max_bytes: usize,
    /// Out-of-order TCP payload held for all flows together, bytes. Default 16 MiB.
    pub reorder_budget_bytes: usize,
    /// A hole in a TCP stream not filled within this time becomes a gap. Default 1 s.
    pub reorder_timeout: Duration,
}

impl Default for PacketConfig {
    fn default() -> Self {
        PacketConfig {
            interfaces: Vec::new(),
            ring_block_bytes: 1 << 20,
            ring_blocks: 8,
            block_timeout: Duration::from_millis(20),
            snaplen: 65_535,
            filter: None,
            poll_timeout: Duration::from_millis(100),
            flow_idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            closed_flow_linger: Duration::from_secs(2),
            max_flows: 65_536,
            report_interval: Duration::from_secs(60),
            l7_enabled: true,
            conversation: ConversationConfig::default(),
            reorder_max_bytes: 64 * 1024,
            reorder_budget_bytes: 16 << 20,
            reorder_timeout: Duration::from_secs(1),
        }
    }
}

impl PacketConfig {
    /// Checks every field's range. [`crate::PacketCapture::open`] and
    /// [`crate::PacketProcessor::new`] call it.
    pub fn validate(&self) -> Result<(), PacketError> {
        let invalid =
            |field: &'static str, reason: String| Err(PacketError::InvalidConfig { field, reason });
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = u32::try_from(page).unwrap_or(4096).max(1);
        if !(128..=MAX_SNAPLEN).contains(&self.snaplen) {
            return invalid(
                "snaplen",
                format!("is {}, must be in 128..={MAX_SNAPLEN}", self.snaplen),
            );
        }
        if self.ring_block_bytes == 0 || !self.ring_block_bytes.is_multiple_of(page) {
            return invalid(
                "ring_block_bytes",
                format!(
                    "is {}, must be a non-zero multiple of the page size {page}",
                    self.ring_block_bytes
                ),
            );
        }
        // A frame (header, sockaddr_ll, padding and snaplen bytes) must fit in a block.
        if u64::from(self.ring_block_bytes) < u64::from(self.snaplen) + 256 {
            return invalid(
                "ring_block_bytes",
                format!(
                    "is {}, must hold one frame of snaplen {} plus 256 bytes of headers",
                    self.ring_block_bytes, self.snaplen
                ),
            );
        }
        if self.ring_blocks == 0 || self.ring_blocks > 4096 {
            return invalid(
                "ring_blocks",
                format!("is {}, must be in 1..=4096", self.ring_blocks),
            );
        }
        if u64::from(self.ring_block_bytes) * u64::from(self.ring_blocks) > 1 << 32 {
            return invalid(
                "ring_blocks",
                "times ring_block_bytes exceeds 4 GiB".to_string(),
            );
        }
        let block_timeout_ms = self.block_timeout.as_millis();
        if !(1..=60_000).contains(&block_timeout_ms) {
            return invalid(
                "block_timeout",
                format!("is {block_timeout_ms} ms, must be in 1..=60000 ms"),
            );
        }
        if let Some(filter) = &self.filter
            && (filter.is_empty() || filter.len() > usize::from(u16::MAX))
        {
            return invalid(
                "filter",
                format!("has {} instructions, must have 1..=65535", filter.len()),
            );
        }
        if self.max_flows == 0 {
            return invalid("max_flows", "must be at least 1".to_string());
        }
        for (field, value) in [
            ("poll_timeout", self.poll_timeout),
            ("flow_idle_timeout", self.flow_idle_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("report_interval", self.report_interval),
            ("reorder_timeout", self.reorder_timeout),
        ] {
            if value.is_zero() {
                return invalid(field, "must be positive".to_string());
            }
        }
        Ok(())
    }
}

/// A `Duration` in nanoseconds, saturating at `u64::MAX`.
pub(crate) fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        PacketConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_field() {
        type Mutation = fn(&mut PacketConfig);
        let cases: [(&str, Mutation); 7] = [
            ("snaplen", |c| c.snaplen = 10),
            ("ring_block_bytes", |c| c.ring_block_bytes = 4097),
            ("ring_block_bytes", |c| {
                c.ring_block_bytes = 64 * 1024;
                c.snaplen = MAX_SNAPLEN;
            }),
            ("ring_blocks", |c| c.ring_blocks = 0),
            ("block_timeout", |c| c.block_timeout = Duration::ZERO),
            ("filter", |c| c.filter = Some(Vec::new())),
            ("max_flows", |c| c.max_flows = 0),
        ];
        for (field, mutate) in cases {
            let mut config = PacketConfig::default();
            mutate(&mut config);
            match config.validate() {
                Err(PacketError::InvalidConfig { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
