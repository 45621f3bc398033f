//! One captured frame as the capture hands it to the processor.

/// The link layer in front of the network header of a [`Frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// An Ethernet header (also what `lo` carries: all-zero MAC addresses), possibly with
    /// 802.1Q / 802.1ad tags.
    Ethernet,
    /// No link header: the frame starts with the IPv4 or IPv6 header (tun devices,
    /// WireGuard, `ARPHRD_NONE`, `ARPHRD_RAWIP`).
    RawIp,
}

/// Which way a frame crossed the capturing host's interface (from `sll_pkttype`).
///
/// This decides a flow's observation point: a client's packets leaving the host mean the
/// interface is the client's NIC; a client's packets arriving mean it is the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketOrigin {
    /// Sent by this host (`PACKET_OUTGOING`).
    Outgoing,
    /// Addressed to this host (`PACKET_HOST`, broadcast, multicast).
    Incoming,
    /// Seen on the loopback interface: both ends are on this host. The capture keeps only
    /// the receive-side copy of each loopback packet.
    Loopback,
    /// Neither (`PACKET_OTHERHOST`: promiscuous or mirrored traffic), or unknown.
    Other,
}

/// One frame: its bytes (as far as captured) and what the kernel said about it.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Kernel interface index the frame was captured on.
    pub ifindex: u32,
    /// Capture time, Unix-epoch nanoseconds.
    pub timestamp_ns: u64,
    /// Length of the frame on the wire, link header included (may exceed `data.len()`
    /// when the snap length cut it).
    pub wire_len: u32,
    /// The link header type of `data`.
    pub link: LinkType,
    /// Which way the frame went.
    pub origin: PacketOrigin,
    /// VLAN id the NIC stripped from the frame (hardware VLAN offload), if any. Tags still
    /// in `data` are decoded by [`crate::decode()`].
    pub offloaded_vlan: Option<u16>,
    /// The captured bytes, from the link header on.
    pub data: &'a [u8],
}
