//! AF_PACKET capture with a TPACKET_V3 memory-mapped receive ring and a classic BPF
//! filter, one socket per configured interface.
//!
//! # How a ring works
//!
//! The kernel fills the ring block by block. A block belongs to the kernel while its
//! `block_status` is `TP_STATUS_KERNEL`; when it is full, or after `block_timeout`, the
//! kernel sets `TP_STATUS_USER` and the block is ours until we write `TP_STATUS_KERNEL`
//! back. Blocks are handed over in ring order, so the reader keeps the index of the next
//! block. When every block is ours the kernel drops packets and counts them
//! (`PACKET_STATISTICS`): capture never slows the host down.
//!
//! # Safety
//!
//! The unsafe code is the socket set-up (`setsockopt`, `mmap`, `bind`), reading a block's
//! status word atomically, and viewing a block we own as a byte slice. Frames are parsed
//! from that slice with bounds-checked reads only, so a corrupt block cannot make us read
//! outside the ring.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tracing::{debug, warn};

use crate::config::PacketConfig;
use crate::filter::{FilterBuilder, cap_snaplen};
use crate::{Frame, LinkType, PacketError, PacketOrigin};

// Layout of the structures the kernel writes (linux/if_packet.h), checked against the
// `libc` definitions by a test.
/// `tpacket_block_desc.hdr.bh1.block_status`.
const BLOCK_STATUS: usize = 8;
/// `tpacket_block_desc.hdr.bh1.num_pkts`.
const BLOCK_NUM_PKTS: usize = 12;
/// `tpacket_block_desc.hdr.bh1.offset_to_first_pkt`.
const BLOCK_FIRST_PKT: usize = 16;
/// Offsets in `tpacket3_hdr`.
const HDR_NEXT_OFFSET: usize = 0;
const HDR_SEC: usize = 4;
const HDR_NSEC: usize = 8;
const HDR_SNAPLEN: usize = 12;
const HDR_LEN: usize = 16;
const HDR_STATUS: usize = 20;
const HDR_MAC: usize = 24;
const HDR_VLAN_TCI: usize = 32;
/// `TPACKET_ALIGN(sizeof(struct tpacket3_hdr))`: where the `sockaddr_ll` follows.
const HDR_SOCKADDR: usize = 48;
/// Offsets in `sockaddr_ll`.
const SLL_IFINDEX: usize = 4;
const SLL_HATYPE: usize = 8;
const SLL_PKTTYPE: usize = 10;
/// Bytes of `tpacket3_hdr` plus `sockaddr_ll` a frame must have.
const FRAME_HEADER_BYTES: usize = HDR_SOCKADDR + 20;
/// Nominal frame size of the ring request (TPACKET_V3 frames are variable; the kernel only
/// checks the arithmetic).
const NOMINAL_FRAME_BYTES: u32 = 2048;

const ARPHRD_RAWIP: u16 = 519;
const ARPHRD_PPP: u16 = 512;
const ARPHRD_TUNNEL: u16 = 768;
const ARPHRD_TUNNEL6: u16 = 769;
const ARPHRD_IPGRE: u16 = 778;

/// Counters of one interface's socket. Kernel counters are summed over every
/// [`PacketCapture::stats`] call (reading them resets them in the kernel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    /// The interface name.
    pub interface: String,
    /// Its kernel index.
    pub ifindex: u32,
    /// Frames handed to the caller.
    pub frames: u64,
    /// Frames not handed over because they were the outgoing copy of a loopback packet.
    pub loopback_duplicates: u64,
    /// Frames whose ring header did not add up (skipped, with the rest of their block).
    pub bad_frames: u64,
    /// Socket errors reported by poll (the interface went down ...).
    pub socket_errors: u64,
    /// Blocks read and returned to the kernel.
    pub blocks: u64,
    /// Packets the kernel accepted through the filter (`tp_packets`).
    pub kernel_packets: u64,
    /// Packets the kernel dropped because the ring was full (`tp_drops`).
    pub kernel_drops: u64,
    /// Times the ring was frozen because every block was ours (`tp_freeze_q_cnt`).
    pub kernel_freeze_queue: u64,
}

/// Counters of every interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// One entry per configured interface, in configuration order.
    pub interfaces: Vec<InterfaceStats>,
}

impl CaptureStats {
    /// Packets dropped by the kernel on all interfaces.
    pub fn kernel_drops(&self) -> u64 {
        self.interfaces.iter().map(|stats| stats.kernel_drops).sum()
    }

    /// Frames handed to the caller on all interfaces.
    pub fn frames(&self) -> u64 {
        self.interfaces.iter().map(|stats| stats.frames).sum()
    }
}

/// Packet capture on the configured interfaces. See the module docs.
///
/// Not `Sync`: one thread polls it. It is `Send`, so it can be opened on one thread and
/// run on another.
#[derive(Debug)]
pub struct PacketCapture {
    rings: Vec<RingSocket>,
    poll_timeout: Duration,
}

/// A memory mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by exactly one `RingSocket`; nothing else holds its address,
// and all access goes through `&mut self` methods of that socket.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly what mmap returned, and no slice into the
        // mapping outlives `&mut self` borrows of the owning socket.
        let result = unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
        if result != 0 {
            warn!(error = %io::Error::last_os_error(), "failed to unmap packet ring");
        }
    }
}

#[derive(Debug)]
struct RingSocket {
    stats: InterfaceStats,
    // Field order matters for drop: the mapping is unmapped before the socket closes.
    mapping: Mapping,
    fd: OwnedFd,
    block_bytes: usize,
    blocks: usize,
    next_block: usize,
}

impl PacketCapture {
    /// Opens one socket per configured interface, attaches the filter (the config's, or
    /// the default "IPv4/IPv6 TCP or UDP"), sets up and maps the ring, and binds it.
    /// Needs `CAP_NET_RAW`.
    pub fn open(config: &PacketConfig) -> Result<PacketCapture, PacketError> {
        config.validate()?;
        if config.interfaces.is_empty() {
            return Err(PacketError::InvalidConfig {
                field: "interfaces",
                reason: "is empty: name at least one interface to capture on".to_string(),
            });
        }
        let program = match &config.filter {
            Some(program) => cap_snaplen(program, config.snaplen),
            None => FilterBuilder::new().build(config.snaplen),
        };
        let mut rings = Vec::with_capacity(config.interfaces.len());
        for interface in &config.interfaces {
            rings.push(RingSocket::open(interface, config, &program)?);
        }
        Ok(PacketCapture {
            rings,
            poll_timeout: config.poll_timeout,
        })
    }

    /// Hands every frame of the blocks ready now to `on_frame`, then returns the blocks
    /// to the kernel. When no block is ready, waits up to the configured `poll_timeout`
    /// for one first. Reads at most one ring's worth of blocks per interface per call, so
    /// it returns regularly under load. Returns the number of frames handed over.
    pub fn poll_frames(
        &mut self,
        mut on_frame: impl FnMut(&Frame<'_>),
    ) -> Result<usize, PacketError> {
        let mut frames = self.drain(&mut on_frame)?;
        if frames == 0 && !self.any_ready() {
            self.wait(self.poll_timeout)?;
            frames = self.drain(&mut on_frame)?;
        }
        Ok(frames)
    }

    /// Reads the kernel counters (and resets them there), adding them to the totals.
    pub fn stats(&mut self) -> Result<CaptureStats, PacketError> {
        let mut stats = CaptureStats::default();
        for ring in &mut self.rings {
            ring.read_kernel_stats()?;
            stats.interfaces.push(ring.stats.clone());
        }
        Ok(stats)
    }

    fn drain(&mut self, on_frame: &mut impl FnMut(&Frame<'_>)) -> Result<usize, PacketError> {
        let mut frames = 0;
        for ring in &mut self.rings {
            for _ in 0..ring.blocks {
                match ring.read_block(on_frame)? {
                    Some(count) => frames += count,
                    None => break,
                }
            }
        }
        Ok(frames)
    }

    fn any_ready(&self) -> bool {
        self.rings
            .iter()
            .any(|ring| ring.block_ready(ring.next_block))
    }

    fn wait(&mut self, timeout: Duration) -> Result<(), PacketError> {
        let mut fds: Vec<libc::pollfd> = self
            .rings
            .iter()
            .map(|ring| libc::pollfd {
                fd: ring.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(PacketError::Socket {
                action: "poll",
                interface: self
                    .rings
                    .iter()
                    .map(|ring| ring.stats.interface.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                source: error,
            });
        }
        for (ring, fd) in self.rings.iter_mut().zip(&fds) {
            if fd.revents & libc::POLLERR != 0 {
                // A pending socket error (the interface went down ...) keeps POLLERR set,
                // and poll returning at once, until it is read.
                ring.take_socket_error();
            }
        }
        Ok(())
    }
}

impl RingSocket {
    fn open(
        interface: &str,
        config: &PacketConfig,
        program: &[libc::sock_filter],
    ) -> Result<RingSocket, PacketError> {
        let socket_error = |action: &'static str, source: io::Error| PacketError::Socket {
            action,
            interface: interface.to_string(),
            source,
        };
        let name = CString::new(interface).map_err(|_| PacketError::InterfaceNotFound {
            interface: interface.to_string(),
        })?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(PacketError::InterfaceNotFound {
                interface: interface.to_string(),
            });
        }
        // Protocol 0: the socket receives nothing until `bind` below, so no packet gets in
        // before the filter and the ring are in place.
        // SAFETY: plain socket(2) call.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::PermissionDenied {
                return Err(PacketError::PermissionDenied {
                    interface: interface.to_string(),
                });
            }
            return Err(socket_error("create socket", error));
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version)
            .map_err(|error| socket_error("set tpacket_v3", error))?;

        let fprog = libc::sock_fprog {
            len: u16::try_from(program.len()).unwrap_or(u16::MAX),
            filter: program.as_ptr().cast_mut(),
        };
        // The kernel copies the program during the call; `program` outlives it.
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog).map_err(|source| {
            PacketError::InvalidFilter {
                interface: interface.to_string(),
                instructions: program.len(),
                source,
            }
        })?;

        let block_bytes = config.ring_block_bytes;
        let request = libc::tpacket_req3 {
            tp_block_size: block_bytes,
            tp_block_nr: config.ring_blocks,
            tp_frame_size: NOMINAL_FRAME_BYTES,
            tp_frame_nr: (block_bytes / NOMINAL_FRAME_BYTES) * config.ring_blocks,
            tp_retire_blk_tov: u32::try_from(config.block_timeout.as_millis()).unwrap_or(u32::MAX),
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &request)
            .map_err(|error| socket_error("set up rx ring", error))?;

        let len = block_bytes as usize * config.ring_blocks as usize;
        // SAFETY: maps the ring the kernel just allocated for this socket; the result is
        // checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(socket_error("map rx ring", io::Error::last_os_error()));
        }
        let Some(base) = NonNull::new(base.cast::<u8>()) else {
            return Err(socket_error(
                "map rx ring",
                io::Error::other("null mapping"),
            ));
        };
        let mapping = Mapping { base, len };

        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        address.sll_ifindex = i32::try_from(ifindex).unwrap_or(i32::MAX);
        // SAFETY: `address` is a valid sockaddr_ll and the length is its size.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if bound != 0 {
            return Err(socket_error("bind", io::Error::last_os_error()));
        }
        debug!(
            interface,
            ifindex,
            block_bytes,
            blocks = config.ring_blocks,
            "packet ring open"
        );
        Ok(RingSocket {
            stats: InterfaceStats {
                interface: interface.to_string(),
                ifindex,
                ..InterfaceStats::default()
            },
            mapping,
            fd,
            block_bytes: block_bytes as usize,
            blocks: config.ring_blocks as usize,
            next_block: 0,
        })
    }

    /// The status word of block `index`.
    fn block_status(&self, index: usize) -> &AtomicU32 {
        debug_assert!(index < self.blocks);
        // SAFETY: `index < blocks`, so the word lies inside the mapping; it is 4-byte
        // aligned (blocks are page-aligned, the offset is 8); the kernel only accesses it
        // as a whole u32, and the returned reference cannot outlive `self`'s mapping.
        unsafe {
            let word = self
                .mapping
                .base
                .as_ptr()
                .add(index * self.block_bytes + BLOCK_STATUS);
            AtomicU32::from_ptr(word.cast::<u32>())
        }
    }

    fn block_ready(&self, index: usize) -> bool {
        self.block_status(index).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// Reads the next block if the kernel has handed it over: `None` if not.
    fn read_block(
        &mut self,
        on_frame: &mut impl FnMut(&Frame<'_>),
    ) -> Result<Option<usize>, PacketError> {
        let index = self.next_block;
        // Acquire pairs with the kernel's release when it set TP_STATUS_USER: the block's
        // contents are visible from here on.
        if !self.block_ready(index) {
            return Ok(None);
        }
        // SAFETY: block `index` lies inside the mapping, and it is ours (TP_STATUS_USER):
        // the kernel does not write to it until we store TP_STATUS_KERNEL below, after the
        // last use of `block`.
        let block = unsafe {
            std::slice::from_raw_parts(
                self.mapping.base.as_ptr().add(index * self.block_bytes),
                self.block_bytes,
            )
        };
        let walked = walk_block(block, &mut self.stats, on_frame);
        // Release: our reads of the block happen before the kernel may refill it.
        self.block_status(index)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next_block = (index + 1) % self.blocks;
        self.stats.blocks += 1;
        match walked {
            Ok(frames) => Ok(Some(frames)),
            Err(reason) => {
                self.stats.bad_frames += 1;
                warn!(interface = %self.stats.interface, block = index, reason, "corrupt packet ring block skipped");
                Ok(Some(0))
            }
        }
    }

    /// Reads and clears the socket's pending error, counting and logging it.
    fn take_socket_error(&mut self) {
        let mut error: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `error` is a writable c_int and `len` its size.
        let result = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut error).cast(),
                &mut len,
            )
        };
        self.stats.socket_errors += 1;
        if result == 0 && error != 0 {
            warn!(
                interface = %self.stats.interface,
                error = %io::Error::from_raw_os_error(error),
                "packet socket error"
            );
        }
    }

    fn read_kernel_stats(&mut self) -> Result<(), PacketError> {
        let mut stats = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `stats` is a writable buffer of `len` bytes, the size the kernel
        // expects for TPACKET_V3 sockets.
        let result = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut stats).cast(),
                &mut len,
            )
        };
        if result != 0 {
            return Err(PacketError::Socket {
                action: "read packet statistics",
                interface: self.stats.interface.clone(),
                source: io::Error::last_os_error(),
            });
        }
        self.stats.kernel_packets += u64::from(stats.tp_packets);
        self.stats.kernel_drops += u64::from(stats.tp_drops);
        self.stats.kernel_freeze_queue += u64::from(stats.tp_freeze_q_cnt);
        Ok(())
    }
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let field = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([field[0], field[1]]))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([field[0], field[1], field[2], field[3]]))
}

/// Hands the frames of one block to `on_frame`. Loopback frames are kept only once: the
/// kernel shows each loopback packet as it leaves (`PACKET_OUTGOING`) and as it arrives
/// (`PACKET_HOST`); the arriving copy is kept.
fn walk_block(
    block: &[u8],
    stats: &mut InterfaceStats,
    on_frame: &mut impl FnMut(&Frame<'_>),
) -> Result<usize, &'static str> {
    let packets = read_u32(block, BLOCK_NUM_PKTS).ok_or("block header cut")?;
    let mut offset = read_u32(block, BLOCK_FIRST_PKT).ok_or("block header cut")? as usize;
    let mut frames = 0;
    for remaining in (0..packets).rev() {
        let header = block
            .get(
                offset
                    ..offset
                        .checked_add(FRAME_HEADER_BYTES)
                        .ok_or("offset overflow")?,
            )
            .ok_or("frame header outside the block")?;
        let field = |at| read_u32(header, at).ok_or("frame header cut");
        let next_offset = field(HDR_NEXT_OFFSET)? as usize;
        let seconds = u64::from(field(HDR_SEC)?);
        let nanos = u64::from(field(HDR_NSEC)?);
        let snaplen = field(HDR_SNAPLEN)? as usize;
        let wire_len = field(HDR_LEN)?;
        let status = field(HDR_STATUS)?;
        let vlan_tci = field(HDR_VLAN_TCI)?;
        let mac = usize::from(read_u16(header, HDR_MAC).ok_or("frame header cut")?);
        let ifindex = field(HDR_SOCKADDR + SLL_IFINDEX)?;
        let hatype = read_u16(header, HDR_SOCKADDR + SLL_HATYPE).ok_or("frame header cut")?;
        let pkttype = header[HDR_SOCKADDR + SLL_PKTTYPE];
        let data_start = offset.checked_add(mac).ok_or("offset overflow")?;
        let data = block
            .get(data_start..data_start.checked_add(snaplen).ok_or("offset overflow")?)
            .ok_or("frame data outside the block")?;

        let loopback = hatype == libc::ARPHRD_LOOPBACK;
        if loopback && pkttype == libc::PACKET_OUTGOING {
            stats.loopback_duplicates += 1;
        } else {
            let link = match hatype {
                libc::ARPHRD_NONE
                | ARPHRD_RAWIP
                | ARPHRD_PPP
                | ARPHRD_TUNNEL
                | ARPHRD_TUNNEL6
                | ARPHRD_IPGRE => LinkType::RawIp,
                _ => LinkType::Ethernet,
            };
            let origin = match pkttype {
                _ if loopback => PacketOrigin::Loopback,
                libc::PACKET_OUTGOING => PacketOrigin::Outgoing,
                libc::PACKET_HOST | libc::PACKET_BROADCAST | libc::PACKET_MULTICAST => {
                    PacketOrigin::Incoming
                }
                _ => PacketOrigin::Other,
            };
            let offloaded_vlan =
                (status & libc::TP_STATUS_VLAN_VALID != 0).then_some((vlan_tci & 0x0fff) as u16);
            on_frame(&Frame {
                ifindex,
                timestamp_ns: seconds * 1_000_000_000 + nanos,
                wire_len,
                link,
                origin,
                offloaded_vlan,
                data,
            });
            stats.frames += 1;
            frames += 1;
        }
        if remaining == 0 {
            break;
        }
        if next_offset == 0 {
            return Err("frame count exceeds the frame chain");
        }
        offset = offset.checked_add(next_offset).ok_or("offset overflow")?;
    }
    Ok(frames)
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of `size_of::<T>()` bytes for the call; the
    // kernel copies it and keeps no pointer to it.
    let result = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn layout_matches_the_kernel_headers() {
        assert_eq!(
            offset_of!(libc::tpacket_block_desc, hdr)
                + offset_of!(libc::tpacket_hdr_v1, block_status),
            BLOCK_STATUS
        );
        assert_eq!(
            offset_of!(libc::tpacket_block_desc, hdr) + offset_of!(libc::tpacket_hdr_v1, num_pkts),
            BLOCK_NUM_PKTS
        );
        assert_eq!(
            offset_of!(libc::tpacket_block_desc, hdr)
                + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt),
            BLOCK_FIRST_PKT
        );
        assert_eq!(
            offset_of!(libc::tpacket3_hdr, tp_next_offset),
            HDR_NEXT_OFFSET
        );
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_sec), HDR_SEC);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_nsec), HDR_NSEC);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_snaplen), HDR_SNAPLEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_len), HDR_LEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_status), HDR_STATUS);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_mac), HDR_MAC);
        assert_eq!(
            offset_of!(libc::tpacket3_hdr, hv1)
                + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci),
            HDR_VLAN_TCI
        );
        let aligned = size_of::<libc::tpacket3_hdr>().next_multiple_of(libc::TPACKET_ALIGNMENT);
        assert_eq!(aligned, HDR_SOCKADDR);
        assert_eq!(offset_of!(libc::sockaddr_ll, sll_ifindex), SLL_IFINDEX);
        assert_eq!(offset_of!(libc::sockaddr_ll, sll_hatype), SLL_HATYPE);
        assert_eq!(offset_of!(libc::sockaddr_ll, sll_pkttype), SLL_PKTTYPE);
        assert_eq!(libc::TPACKET3_HDRLEN, FRAME_HEADER_BYTES);
    }

    /// Writes a frame header at `offset` of `block`.
    #[allow(clippy::too_many_arguments)]
    fn put_frame(
        block: &mut [u8],
        offset: usize,
        next: u32,
        data: &[u8],
        wire_len: u32,
        hatype: u16,
        pkttype: u8,
    ) {
        let put32 = |block: &mut [u8], at: usize, value: u32| {
            block[offset + at..offset + at + 4].copy_from_slice(&value.to_ne_bytes());
        };
        put32(block, HDR_NEXT_OFFSET, next);
        put32(block, HDR_SEC, 7);
        put32(block, HDR_NSEC, 5);
        put32(block, HDR_SNAPLEN, data.len() as u32);
        put32(block, HDR_LEN, wire_len);
        put32(block, HDR_STATUS, libc::TP_STATUS_USER);
        let mac = 80u16;
        block[offset + HDR_MAC..offset + HDR_MAC + 2].copy_from_slice(&mac.to_ne_bytes());
        put32(block, HDR_SOCKADDR + SLL_IFINDEX, 3);
        block[offset + HDR_SOCKADDR + SLL_HATYPE..offset + HDR_SOCKADDR + SLL_HATYPE + 2]
            .copy_from_slice(&hatype.to_ne_bytes());
        block[offset + HDR_SOCKADDR + SLL_PKTTYPE] = pkttype;
        let start = offset + usize::from(mac);
        block[start..start + data.len()].copy_from_slice(data);
    }

    fn block_with(frames: &[(&[u8], u16, u8)]) -> Vec<u8> {
        let mut block = vec![0u8; 4096];
        block[BLOCK_NUM_PKTS..BLOCK_NUM_PKTS + 4]
            .copy_from_slice(&(frames.len() as u32).to_ne_bytes());
        block[BLOCK_FIRST_PKT..BLOCK_FIRST_PKT + 4].copy_from_slice(&48u32.to_ne_bytes());
        let mut offset = 48;
        for (index, (data, hatype, pkttype)) in frames.iter().enumerate() {
            let size = (80 + data.len()).next_multiple_of(16);
            let next = if index + 1 == frames.len() {
                0
            } else {
                size as u32
            };
            put_frame(
                &mut block,
                offset,
                next,
                data,
                data.len() as u32 + 10,
                *hatype,
                *pkttype,
            );
            offset += size;
        }
        block
    }

    #[test]
    fn blocks_are_walked_and_loopback_copies_dropped() {
        let block = block_with(&[
            (b"first", libc::ARPHRD_ETHER, libc::PACKET_OUTGOING),
            (b"loop-out", libc::ARPHRD_LOOPBACK, libc::PACKET_OUTGOING),
            (b"loop-in", libc::ARPHRD_LOOPBACK, libc::PACKET_HOST),
            (b"tun", libc::ARPHRD_NONE, libc::PACKET_HOST),
        ]);
        let mut stats = InterfaceStats::default();
        let mut seen = Vec::new();
        let frames = walk_block(&block, &mut stats, &mut |frame: &Frame<'_>| {
            seen.push((
                frame.data.to_vec(),
                frame.origin,
                frame.link,
                frame.wire_len,
            ));
            assert_eq!(frame.timestamp_ns, 7_000_000_005);
            assert_eq!(frame.ifindex, 3);
        })
        .unwrap();
        assert_eq!(frames, 3);
        assert_eq!(stats.loopback_duplicates, 1);
        assert_eq!(
            seen,
            vec![
                (
                    b"first".to_vec(),
                    PacketOrigin::Outgoing,
                    LinkType::Ethernet,
                    15
                ),
                (
                    b"loop-in".to_vec(),
                    PacketOrigin::Loopback,
                    LinkType::Ethernet,
                    17
                ),
                (b"tun".to_vec(), PacketOrigin::Incoming, LinkType::RawIp, 13),
            ]
        );
    }

    #[test]
    fn corrupt_blocks_are_rejected_without_reading_outside() {
        let good = block_with(&[(b"abc", libc::ARPHRD_ETHER, libc::PACKET_HOST)]);
        let mut stats = InterfaceStats::default();
        // More frames claimed than chained.
        let mut bad = good.clone();
        bad[BLOCK_NUM_PKTS] = 2;
        assert!(walk_block(&bad, &mut stats, &mut |_: &Frame<'_>| {}).is_err());
        // A snap length beyond the block.
        let mut bad = good.clone();
        bad[48 + HDR_SNAPLEN..48 + HDR_SNAPLEN + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(walk_block(&bad, &mut stats, &mut |_: &Frame<'_>| {}).is_err());
        // A first-frame offset beyond the block.
        let mut bad = good.clone();
        bad[BLOCK_FIRST_PKT..BLOCK_FIRST_PKT + 4].copy_from_slice(&4090u32.to_ne_bytes());
        assert!(walk_block(&bad, &mut stats, &mut |_: &Frame<'_>| {}).is_err());
        // Any bytes at all: no panic.
        for seed in 0..200u32 {
            let mut random = good.clone();
            let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
            for _ in 0..16 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let at = (state as usize) % 200;
                random[at] = (state >> 24) as u8;
            }
            let _ = walk_block(&random, &mut stats, &mut |_: &Frame<'_>| {});
        }
    }

    #[test]
    fn capture_needs_an_interface() {
        let config = PacketConfig::default();
        assert!(matches!(
            PacketCapture::open(&config),
            Err(PacketError::InvalidConfig {
                field: "interfaces",
                ..
            })
        ));
        let config = PacketConfig {
            interfaces: vec!["no-such-interface0".to_string()],
            ..PacketConfig::default()
        };
        assert!(matches!(
            PacketCapture::open(&config),
            Err(PacketError::InterfaceNotFound { .. })
        ));
    }

    #[test]
    fn capture_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<PacketCapture>();
    }
}
