//! Loading the embedded object, attaching its tracepoints and draining the ring buffer.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use tracing::{debug, info, warn};

use crate::error::EbpfError;
use crate::event::{EventKind, HEADER_LEN, MAX_PAYLOAD, SocketEventHeader};
use crate::tls::{
    FileId, TLS_PROBES, TlsLibrary, UprobeAttach, attach_uprobe, detach_uprobe, find_libssl_paths,
    load_uprobe,
};

/// File name of the embedded object, for messages.
pub(crate) const OBJECT_NAME: &str = "socket_trace.bpf.o";

/// The object built by `bpf/build.sh`, 8-byte aligned as the ELF parser needs.
#[repr(C, align(8))]
struct AlignedObject<Bytes: ?Sized> {
    bytes: Bytes,
}

static SOCKET_TRACE_OBJECT: &AlignedObject<[u8]> = &AlignedObject {
    bytes: *include_bytes!("../bpf/socket_trace.bpf.o"),
};

const TRACEPOINT_CATEGORY: &str = "syscalls";

/// (program name in the object, tracepoint name). Exit programs come first so
/// that, while attaching, no entry is parked without a program to clear it.
const TRACEPOINTS: &[(&str, &str)] = &[
    ("fm_exit_read", "sys_exit_read"),
    ("fm_exit_write", "sys_exit_write"),
    ("fm_exit_readv", "sys_exit_readv"),
    ("fm_exit_writev", "sys_exit_writev"),
    ("fm_exit_sendto", "sys_exit_sendto"),
    ("fm_exit_recvfrom", "sys_exit_recvfrom"),
    ("fm_exit_sendmsg", "sys_exit_sendmsg"),
    ("fm_exit_recvmsg", "sys_exit_recvmsg"),
    ("fm_exit_sendfile64", "sys_exit_sendfile64"),
    ("fm_exit_connect", "sys_exit_connect"),
    ("fm_exit_accept", "sys_exit_accept"),
    ("fm_exit_accept4", "sys_exit_accept4"),
    ("fm_enter_read", "sys_enter_read"),
    ("fm_enter_write", "sys_enter_write"),
    ("fm_enter_readv", "sys_enter_readv"),
    ("fm_enter_writev", "sys_enter_writev"),
    ("fm_enter_sendto", "sys_enter_sendto"),
    ("fm_enter_recvfrom", "sys_enter_recvfrom"),
    ("fm_enter_sendmsg", "sys_enter_sendmsg"),
    ("fm_enter_recvmsg", "sys_enter_recvmsg"),
    ("fm_enter_sendfile64", "sys_enter_sendfile64"),
    ("fm_enter_connect", "sys_enter_connect"),
    ("fm_enter_accept", "sys_enter_accept"),
    ("fm_enter_accept4", "sys_enter_accept4"),
    ("fm_enter_close", "sys_enter_close"),
    ("fm_enter_sendmmsg", "sys_enter_sendmmsg"),
    ("fm_exit_sendmmsg", "sys_exit_sendmmsg"),
    ("fm_enter_recvmmsg", "sys_enter_recvmmsg"),
    ("fm_exit_recvmmsg", "sys_exit_recvmmsg"),
];

const EVENTS_MAP: &str = "events";
const LOST_EVENTS_MAP: &str = "lost_events";
const TLS_UNATTRIBUTED_MAP: &str = "tls_unattributed";
const EXCLUDE_TGID_GLOBAL: &str = "fm_exclude_tgid";
const PAYLOAD_CAP_GLOBAL: &str = "fm_payload_cap";
const NETNS_GLOBAL: &str = "fm_netns_ino";

/// Largest ring buffer accepted; larger requests are clamped to it.
pub const MAX_RING_BUFFER_BYTES: u32 = 1 << 30;

/// Settings of a [`SocketTracer`], fixed at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracerConfig {
    /// Bytes of payload copied per data event (a prefix of what was transferred).
    /// Default 1024; clamped to 4096 here and in the kernel.
    pub payload_cap: u32,
    /// Size of the ring buffer shared by all CPUs. Default 32 MiB; rounded up to
    /// a power of two of at least one page and at most [`MAX_RING_BUFFER_BYTES`].
    pub ring_buffer_bytes: u32,
    /// Process whose I/O is never captured: the agent itself, or its own sends of
    /// captured data would be captured again. Default: this process.
    pub exclude_tgid: u32,
    /// Inode number of the only network namespace whose sockets are traced (as
    /// `stat -L /proc/<pid>/ns/net` shows it); 0, the default, traces every namespace.
    pub netns_inode: u32,
}

impl Default for TracerConfig {
    fn default() -> Self {
        TracerConfig {
            payload_cap: 1024,
            ring_buffer_bytes: 32 << 20,
            exclude_tgid: std::process::id(),
            netns_inode: 0,
        }
    }
}

impl TracerConfig {
    /// The settings the kernel will actually use: payload cap clamped to
    /// [`MAX_PAYLOAD`], ring buffer size rounded up to a power of two between
    /// one page and [`MAX_RING_BUFFER_BYTES`].
    pub fn effective(&self) -> TracerConfig {
        let page = page_size();
        let ring = self
            .ring_buffer_bytes
            .clamp(page, MAX_RING_BUFFER_BYTES)
            .checked_next_power_of_two()
            .unwrap_or(MAX_RING_BUFFER_BYTES);
        TracerConfig {
            payload_cap: self.payload_cap.min(MAX_PAYLOAD),
            ring_buffer_bytes: ring,
            exclude_tgid: self.exclude_tgid,
            netns_inode: self.netns_inode,
        }
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// One record from the ring buffer.
#[derive(Debug, Clone, Copy)]
pub struct SocketEvent<'a> {
    /// The header, copied out of the ring buffer.
    pub header: SocketEventHeader,
    /// `header.payload_len` bytes: the prefix of the transferred bytes. Borrowed
    /// from the ring buffer, valid only during the callback.
    pub payload: &'a [u8],
}

/// The loaded and attached socket tracer.
///
/// Owns the kernel programs (dropping it detaches them), the `events` ring
/// buffer and the `lost_events` counter. It is `Send`, to be moved to a
/// dedicated capture thread; it is drained with [`SocketTracer::poll`].
///
/// TLS plaintext capture is off until libssl files are attached with
/// [`SocketTracer::attach_tls`] or [`SocketTracer::attach_tls_discovered`].
pub struct SocketTracer {
    events: RingBuf<MapData>,
    lost_events: PerCpuArray<MapData, u64>,
    tls_unattributed: PerCpuArray<MapData, u64>,
    /// libssl files with probes attached, by file identity.
    tls_libraries: HashMap<FileId, TlsLibrary>,
    /// Discovered files whose attachment failed; not retried by
    /// [`SocketTracer::attach_tls_discovered`] (a replaced file has a new identity).
    tls_failed: HashSet<FileId>,
    malformed_events: u64,
    /// Bytes drained per poll call at most, so a caller under sustained load
    /// still gets control back (to check for shutdown, flush, ...).
    drain_budget_bytes: usize,
    clock_offset_ns: i128,
    config: TracerConfig,
    /// Owns the programs and their tracepoint and uprobe links.
    ebpf: Ebpf,
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<SocketTracer>();
};

impl std::fmt::Debug for SocketTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketTracer")
            .field("config", &self.config)
            .field("tls_libraries", &self.tls_libraries.values())
            .field("malformed_events", &self.malformed_events)
            .field("clock_offset_ns", &self.clock_offset_ns)
            .finish_non_exhaustive()
    }
}

impl SocketTracer {
    /// Load the embedded object, set globals, create maps, attach every
    /// tracepoint, and load (without attaching) the OpenSSL uprobe programs.
    ///
    /// Needs root (CAP_BPF + CAP_PERFMON); without it the error is
    /// [`EbpfError::PermissionDenied`]. Mounts tracefs at /sys/kernel/tracing
    /// when no tracefs is mounted (tracepoint ids are read from it).
    ///
    /// Dropping the tracer detaches the programs; on kernels with faultable
    /// syscall tracepoints (6.14+) each detach waits for an RCU grace period,
    /// about 2 s in total here.
    pub fn load(config: &TracerConfig) -> Result<SocketTracer, EbpfError> {
        let config = config.effective();
        let clock_offset_ns = monotonic_to_unix_offset_ns();
        let mut ebpf = EbpfLoader::new()
            .override_global(EXCLUDE_TGID_GLOBAL, &config.exclude_tgid, true)
            .override_global(PAYLOAD_CAP_GLOBAL, &config.payload_cap, true)
            .override_global(NETNS_GLOBAL, &config.netns_inode, true)
            .map_max_entries(EVENTS_MAP, config.ring_buffer_bytes)
            .load(&SOCKET_TRACE_OBJECT.bytes)
            .map_err(|source| {
                EbpfError::classify(
                    || format!("load eBPF object {OBJECT_NAME}"),
                    source,
                    |source| EbpfError::Object {
                        object: OBJECT_NAME,
                        source,
                    },
                )
            })?;

        ensure_tracefs()?;
        for &(program_name, tracepoint) in TRACEPOINTS {
            attach(&mut ebpf, program_name, tracepoint)?;
        }
        // Loaded now so that a verifier rejection surfaces here, not on the
        // first attach_tls.
        for probe in &TLS_PROBES {
            load_uprobe(&mut ebpf, probe.entry_program)?;
            load_uprobe(&mut ebpf, probe.return_program)?;
        }

        let events = take_map(&mut ebpf, EVENTS_MAP).and_then(|map| {
            RingBuf::try_from(map).map_err(|source| map_error("open", EVENTS_MAP, source))
        })?;
        let lost_events = take_map(&mut ebpf, LOST_EVENTS_MAP).and_then(|map| {
            PerCpuArray::try_from(map).map_err(|source| map_error("open", LOST_EVENTS_MAP, source))
        })?;
        let tls_unattributed = take_map(&mut ebpf, TLS_UNATTRIBUTED_MAP).and_then(|map| {
            PerCpuArray::try_from(map)
                .map_err(|source| map_error("open", TLS_UNATTRIBUTED_MAP, source))
        })?;

        debug!(
            payload_cap = config.payload_cap,
            ring_buffer_bytes = config.ring_buffer_bytes,
            exclude_tgid = config.exclude_tgid,
            tracepoints = TRACEPOINTS.len(),
            "socket tracer attached"
        );
        Ok(SocketTracer {
            events,
            lost_events,
            tls_unattributed,
            tls_libraries: HashMap::new(),
            tls_failed: HashSet::new(),
            malformed_events: 0,
            drain_budget_bytes: config.ring_buffer_bytes as usize,
            clock_offset_ns,
            config,
            ebpf,
        })
    }

    /// Capture TLS plaintext of every process that uses the OpenSSL `library`
    /// (a libssl shared object), now and later: attaches uprobes to its
    /// `SSL_write`, `SSL_read`, `SSL_write_ex` and `SSL_read_ex` for all processes.
    ///
    /// Their data events carry [`FLAG_TLS`](crate::FLAG_TLS), the socket of the
    /// connection (fd, `sock_id`, addresses, as its syscall events) and
    /// `tcp_seq` 0. Functions the library lacks (no `_ex` before OpenSSL 1.1.1)
    /// are skipped; a library with none of them is an error
    /// ([`EbpfError::NoTlsSymbols`]). Idempotent per file: a second call for a
    /// path to an already attached file (same device and inode) does nothing.
    /// On error nothing stays attached for `library`.
    ///
    /// Calls already in progress when the probes are attached are not seen.
    /// Plaintext whose socket cannot be identified (see
    /// [`Self::unattributed_tls_events`]) is dropped.
    pub fn attach_tls(&mut self, library: &Path) -> Result<(), EbpfError> {
        let metadata = std::fs::metadata(library).map_err(|source| EbpfError::TlsLibrary {
            library: library.to_path_buf(),
            source,
        })?;
        if !metadata.is_file() {
            return Err(EbpfError::TlsLibrary {
                library: library.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        let file_id = FileId::of(&metadata);
        if self.tls_libraries.contains_key(&file_id) {
            return Ok(());
        }

        let mut links = Vec::new();
        let mut symbols = Vec::new();
        for probe in &TLS_PROBES {
            // Return probe first: an entry without its return probe would park
            // calls that nothing reports.
            let mut attached = Vec::with_capacity(2);
            for program in [probe.return_program, probe.entry_program] {
                match attach_uprobe(&mut self.ebpf, program, probe.symbol, library) {
                    Ok(UprobeAttach::Attached(link)) => attached.push((program, link)),
                    Ok(UprobeAttach::MissingSymbol) => break,
                    Err(error) => {
                        links.extend(attached);
                        self.detach_all(links);
                        return Err(error);
                    }
                }
            }
            if attached.len() == 2 {
                symbols.push(probe.symbol);
                links.extend(attached);
            } else {
                debug!(library = %library.display(), symbol = probe.symbol, "tls library lacks symbol");
                self.detach_all(attached);
            }
        }
        if symbols.is_empty() {
            self.detach_all(links);
            return Err(EbpfError::NoTlsSymbols {
                library: library.to_path_buf(),
            });
        }
        info!(library = %library.display(), ?symbols, "tls probes attached");
        self.tls_libraries.insert(
            file_id,
            TlsLibrary {
                path: library.to_path_buf(),
                symbols,
            },
        );
        Ok(())
    }

    fn detach_all(&mut self, links: Vec<(&'static str, aya::programs::uprobe::UProbeLinkId)>) {
        for (program, link) in links {
            detach_uprobe(&mut self.ebpf, program, link);
        }
    }

    /// Attaches TLS capture ([`Self::attach_tls`]) to every libssl file that
    /// [`find_libssl_paths`](crate::find_libssl_paths) finds and that is not
    /// attached yet; returns how many were newly attached.
    ///
    /// Meant to be called every few seconds, so that programs started later
    /// with a libssl of their own (containers, vendored OpenSSL) are covered.
    /// A file that fails to attach is logged and not tried again; only a
    /// permission error is returned.
    pub fn attach_tls_discovered(&mut self) -> Result<usize, EbpfError> {
        let mut attached = 0;
        for library in find_libssl_paths() {
            let Ok(metadata) = std::fs::metadata(&library) else {
                continue;
            };
            let file_id = FileId::of(&metadata);
            if self.tls_libraries.contains_key(&file_id) || self.tls_failed.contains(&file_id) {
                continue;
            }
            match self.attach_tls(&library) {
                Ok(()) => attached += 1,
                Err(error) if error.is_permission_denied() => return Err(error),
                Err(error) => {
                    warn!(library = %library.display(), %error, "tls capture not attached to library");
                    self.tls_failed.insert(file_id);
                }
            }
        }
        Ok(attached)
    }

    /// The libssl files TLS capture is attached to.
    pub fn tls_libraries(&self) -> impl Iterator<Item = &TlsLibrary> {
        self.tls_libraries.values()
    }

    /// TLS plaintext the kernel dropped because it could not tell the socket,
    /// summed over CPUs: a call on a connection whose earlier calls were not
    /// seen (already open when the probes were attached) that made no syscall,
    /// or OpenSSL over memory BIOs or non-inet sockets.
    pub fn unattributed_tls_events(&self) -> Result<u64, EbpfError> {
        let per_cpu = self
            .tls_unattributed
            .get(&0, 0)
            .map_err(|source| map_error("read", TLS_UNATTRIBUTED_MAP, source))?;
        Ok(per_cpu.iter().copied().fold(0u64, u64::wrapping_add))
    }

    /// Blocking: wait up to `timeout` for the ring buffer to become readable
    /// (poll(2) on its fd), then drain it, calling `on_event` for each record;
    /// returns how many were delivered.
    ///
    /// The kernel wakes a sleeping reader at most once per millisecond per CPU
    /// (waking on every record costs microseconds per traced syscall in a VM),
    /// so records that trail a burst can wait up to `timeout` before they are
    /// delivered: keep `timeout` at the latency the consumer can accept (e.g.
    /// 10-100 ms).
    ///
    /// One call drains at most about one ring buffer's worth of bytes, so it
    /// returns even if producers never let the buffer run empty. Malformed
    /// records are skipped and counted ([`Self::malformed_events`]). An
    /// interrupted poll(2) (EINTR) is not an error: whatever is ready is drained.
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut on_event: impl FnMut(SocketEvent<'_>),
    ) -> Result<usize, EbpfError> {
        self.wait_readable(timeout)?;

        let mut delivered = 0;
        let mut drained_bytes = 0usize;
        while drained_bytes < self.drain_budget_bytes {
            let Some(record) = self.events.next() else {
                break;
            };
            // 8-byte record header plus the record, 8-byte aligned, as in the kernel.
            drained_bytes += (record.len() + 8).next_multiple_of(8);
            match parse_record(&record) {
                Some(event) => {
                    on_event(event);
                    delivered += 1;
                }
                None => {
                    self.malformed_events += 1;
                    if self.malformed_events == 1 {
                        warn!(
                            record_len = record.len(),
                            "skipping malformed socket event record (further ones are only counted)"
                        );
                    }
                }
            }
        }
        Ok(delivered)
    }

    fn wait_readable(&self, timeout: Duration) -> Result<(), EbpfError> {
        let mut pollfd = libc::pollfd {
            fd: self.events.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Round sub-millisecond timeouts up so that a non-zero timeout never busy-polls.
        let timeout_ms = if timeout.is_zero() {
            0
        } else {
            i32::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
        };
        // SAFETY: `pollfd` is a valid, exclusively borrowed pollfd array of length 1
        // for the duration of the call.
        let rc = unsafe { libc::poll(&mut pollfd, 1, timeout_ms) };
        if rc < 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EINTR) {
                return Err(EbpfError::Poll {
                    map: EVENTS_MAP,
                    source: error,
                });
            }
        }
        Ok(())
    }

    /// Events the kernel could not put into the ring buffer, summed over CPUs.
    pub fn lost_events(&self) -> Result<u64, EbpfError> {
        let per_cpu = self
            .lost_events
            .get(&0, 0)
            .map_err(|source| map_error("read", LOST_EVENTS_MAP, source))?;
        Ok(per_cpu.iter().copied().fold(0u64, u64::wrapping_add))
    }

    /// Records that reached user space but were malformed (skipped).
    pub fn malformed_events(&self) -> u64 {
        self.malformed_events
    }

    /// Offset to add to the events' CLOCK_MONOTONIC ns to get Unix-epoch ns,
    /// measured once at load.
    pub fn clock_offset_ns(&self) -> i128 {
        self.clock_offset_ns
    }

    /// The settings in effect (after clamping and rounding).
    pub fn config(&self) -> &TracerConfig {
        &self.config
    }
}

fn attach(
    ebpf: &mut Ebpf,
    program_name: &'static str,
    tracepoint: &'static str,
) -> Result<(), EbpfError> {
    let program: &mut TracePoint = ebpf
        .program_mut(program_name)
        .ok_or(EbpfError::MissingProgram {
            object: OBJECT_NAME,
            program: program_name,
        })?
        .try_into()
        .map_err(|source| EbpfError::ProgramLoad {
            program: program_name,
            source,
        })?;
    program.load().map_err(|source| {
        EbpfError::classify(
            || format!("load program {program_name}"),
            source,
            |source| EbpfError::ProgramLoad {
                program: program_name,
                source,
            },
        )
    })?;
    program
        .attach(TRACEPOINT_CATEGORY, tracepoint)
        .map_err(|source| {
            EbpfError::classify(
                || format!("attach tracepoint {TRACEPOINT_CATEGORY}/{tracepoint}"),
                source,
                |source| EbpfError::Attach {
                    category: TRACEPOINT_CATEGORY,
                    name: tracepoint,
                    source,
                },
            )
        })?;
    Ok(())
}

/// Where aya looks for tracefs, in its order.
const TRACEFS_MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Mounts tracefs at /sys/kernel/tracing unless it is mounted already: attaching
/// a tracepoint needs its id from `events/<category>/<name>/id`, and minimal
/// hosts and VMs often boot without tracefs mounted. The mount is left in place
/// (other tools may start using it).
fn ensure_tracefs() -> Result<(), EbpfError> {
    static MOUNT_LOCK: Mutex<()> = Mutex::new(());
    let _serialised = MOUNT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let is_populated =
        |path: &str| std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_some());
    if TRACEFS_MOUNTS.iter().any(|path| is_populated(path)) {
        return Ok(());
    }
    let target = TRACEFS_MOUNTS[0];
    // SAFETY: all pointers are NUL-terminated C string literals that outlive the
    // call; a null `data` pointer is allowed.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let source = std::io::Error::last_os_error();
        return Err(EbpfError::classify(
            || format!("mount tracefs at {target}"),
            source,
            |source| EbpfError::Tracefs {
                path: target,
                source,
            },
        ));
    }
    info!(path = target, "mounted tracefs");
    Ok(())
}

fn take_map(ebpf: &mut Ebpf, map: &'static str) -> Result<aya::maps::Map, EbpfError> {
    ebpf.take_map(map).ok_or(EbpfError::MissingMap {
        object: OBJECT_NAME,
        map,
    })
}

fn map_error(action: &'static str, map: &'static str, source: aya::maps::MapError) -> EbpfError {
    EbpfError::classify(
        || format!("{action} map {map}"),
        source,
        |source| EbpfError::Map {
            action,
            map,
            source,
        },
    )
}

/// Splits a ring-buffer record into header and payload, or `None` when it is
/// malformed: shorter than a header, a payload length that disagrees with the
/// record length or exceeds the limits, or an unknown event kind.
fn parse_record(record: &[u8]) -> Option<SocketEvent<'_>> {
    let header = SocketEventHeader::read_from(record)?;
    let payload_len = header.payload_len as usize;
    let valid = record.len() == HEADER_LEN + payload_len
        && header.payload_len <= MAX_PAYLOAD
        && header.payload_len <= header.byte_count
        && EventKind::try_from(header.kind).is_ok();
    if !valid {
        return None;
    }
    Some(SocketEvent {
        header,
        payload: record.get(HEADER_LEN..)?,
    })
}

/// Offset to add to the events' CLOCK_MONOTONIC ns to get Unix-epoch ns.
///
/// Measured afresh on every call (the two clocks drift apart when NTP slews or
/// steps the wall clock, so a long-running consumer may refresh it);
/// [`SocketTracer::clock_offset_ns`] is the value measured at load.
pub fn monotonic_to_unix_offset_ns() -> i128 {
    // The sample whose two monotonic reads are closest brackets the wall-clock
    // read most tightly.
    let mut best: Option<(i128, i128)> = None; // (bracket width, offset)
    for _ in 0..5 {
        let (Some(before), Some(unix), Some(after)) = (monotonic_ns(), unix_ns(), monotonic_ns())
        else {
            continue;
        };
        let width = after - before;
        let offset = unix - (before + width / 2);
        if best.is_none_or(|(best_width, _)| width < best_width) {
            best = Some((width, offset));
        }
    }
    best.map_or(0, |(_, offset)| offset)
}

fn monotonic_ns() -> Option<i128> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (rc == 0).then(|| i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec))
}

fn unix_ns() -> Option<i128> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    i128::try_from(since_epoch.as_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::encode;

    fn data_header(payload_len: u32, byte_count: u32) -> SocketEventHeader {
        SocketEventHeader {
            kind: EventKind::Data as u8,
            direction: 1,
            byte_count,
            payload_len,
            ..SocketEventHeader::default()
        }
    }

    fn record(header: &SocketEventHeader, payload: &[u8]) -> Vec<u8> {
        let mut bytes = encode(header);
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn well_formed_records_split_into_header_and_payload() {
        let header = data_header(5, 9);
        let bytes = record(&header, b"hello");
        let event = parse_record(&bytes).expect("well-formed record");
        assert_eq!(event.header, header);
        assert_eq!(event.payload, b"hello");

        let close = SocketEventHeader {
            kind: EventKind::Close as u8,
            ..SocketEventHeader::default()
        };
        let bytes = record(&close, b"");
        let event = parse_record(&bytes).expect("header-only record");
        assert!(event.payload.is_empty());
    }

    #[test]
    fn malformed_records_are_rejected() {
        let good = record(&data_header(5, 9), b"hello");
        // shorter than a header
        assert!(parse_record(&good[..HEADER_LEN - 1]).is_none());
        assert!(parse_record(&[]).is_none());
        // payload_len larger than what the record holds
        assert!(parse_record(&good[..good.len() - 1]).is_none());
        // trailing bytes beyond payload_len
        let mut long = good.clone();
        long.push(0);
        assert!(parse_record(&long).is_none());
        // payload_len above byte_count
        assert!(parse_record(&record(&data_header(5, 4), b"hello")).is_none());
        // payload_len above the kernel limit
        let huge = vec![0u8; MAX_PAYLOAD as usize + 1];
        assert!(parse_record(&record(&data_header(MAX_PAYLOAD + 1, u32::MAX), &huge)).is_none());
        // unknown kind
        let mut bad_kind = data_header(5, 9);
        bad_kind.kind = 0;
        assert!(parse_record(&record(&bad_kind, b"hello")).is_none());
    }

    #[test]
    fn config_is_clamped_and_rounded() {
        let page = page_size();
        let config = TracerConfig {
            payload_cap: 100_000,
            ring_buffer_bytes: 3 * 1024 * 1024 + 1,
            exclude_tgid: 7,
            netns_inode: 4_026_531_840,
        }
        .effective();
        assert_eq!(config.payload_cap, MAX_PAYLOAD);
        assert_eq!(config.ring_buffer_bytes, 4 * 1024 * 1024);
        assert_eq!(config.exclude_tgid, 7);
        assert_eq!(config.netns_inode, 4_026_531_840);

        let tiny = TracerConfig {
            payload_cap: 0,
            ring_buffer_bytes: 1,
            exclude_tgid: 0,
            netns_inode: 0,
        }
        .effective();
        assert_eq!(tiny.payload_cap, 0);
        assert_eq!(tiny.ring_buffer_bytes, page);

        let huge = TracerConfig {
            ring_buffer_bytes: u32::MAX,
            ..TracerConfig::default()
        }
        .effective();
        assert_eq!(huge.ring_buffer_bytes, MAX_RING_BUFFER_BYTES);

        let default = TracerConfig::default();
        assert_eq!(default.payload_cap, 1024);
        assert_eq!(default.ring_buffer_bytes, 32 << 20);
        assert_eq!(default.exclude_tgid, std::process::id());
        assert_eq!(default.effective(), default);
    }

    #[test]
    fn clock_offset_maps_monotonic_now_to_unix_now() {
        let offset = monotonic_to_unix_offset_ns();
        let mono = monotonic_ns().expect("CLOCK_MONOTONIC");
        let unix = unix_ns().expect("system time after the epoch");
        let error_ns = (mono + offset - unix).abs();
        // Two measurements a few microseconds apart; allow for a slow CI machine.
        assert!(error_ns < 50_000_000, "offset off by {error_ns} ns");
        // Monotonic time starts near boot, far after the epoch: the offset is positive and large.
        assert!(offset > 1_000_000_000 * 1_000_000_000, "offset {offset}");
    }

    #[test]
    fn embedded_object_is_aligned_elf() {
        let bytes = &SOCKET_TRACE_OBJECT.bytes;
        assert_eq!(bytes.as_ptr() as usize % 8, 0);
        assert_eq!(&bytes[..4], b"\x7fELF");
    }
}
