//! The capture pipeline: kernel ring buffer → [`CaptureProcessor`] → row batches → storage.
//!
//! One dedicated thread polls the ring buffer and runs the processor (parsing is cheap and
//! keeps the consumer in one place, which matters on small hosts); every `batch_interval`
//! it hands finished rows and closed RED seconds to the storage writer through a bounded
//! queue. Nothing here blocks the traced applications: when the kernel ring buffer or the
//! queue is full, events or batches are dropped and counted in [`CaptureStats`].

pub mod processor;
pub mod procinfo;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use datafusion::arrow::record_batch::RecordBatch;
use flowmesh_ebpf::{EventKind as KernelKind, SocketEvent, SocketTracer, TracerConfig};
use flowmesh_protocols::Direction;
pub use processor::{CaptureProcessor, EventKind, ProcessorConfig, SocketEventView, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{config::CaptureConfig, error::NodeError, tables::NodeTags};

/// Counters of the capture pipeline, exported at `/metrics` and in `system.metrics`.
#[derive(Debug, Default)]
pub struct CaptureStats {
    pub events: AtomicU64,
    pub kernel_lost_events: AtomicU64,
    pub malformed_events: AtomicU64,
    pub ignored_events: AtomicU64,
    pub rows: AtomicU64,
    pub dropped_batches: AtomicU64,
    pub dropped_rows: AtomicU64,
    pub sockets: AtomicU64,
    pub evicted_sockets: AtomicU64,
    pub evicted_endpoints: AtomicU64,
    pub red_overflow_rows: AtomicU64,
    pub parse_errors: AtomicU64,
    pub resyncs: AtomicU64,
    pub dropped_requests: AtomicU64,
    pub unmatched_responses: AtomicU64,
}

/// Batches for storage: `(table, batch)` pairs appended as one unit.
pub type RowBatches = Vec<(String, RecordBatch)>;

/// A running capture thread.
pub struct CaptureRunner {
    thread: Option<JoinHandle<()>>,
}

impl CaptureRunner {
    /// Loads the kernel programs (errors surface here, before the node reports ready) and
    /// starts the capture thread.
    pub fn start(
        config: &CaptureConfig,
        tags: NodeTags,
        stats: Arc<CaptureStats>,
        processes: procinfo::SharedProcesses,
        output: mpsc::Sender<RowBatches>,
        cancel: CancellationToken,
    ) -> Result<Self, NodeError> {
        let tracer = SocketTracer::load(&TracerConfig {
            payload_cap: config.payload_cap_bytes,
            ring_buffer_bytes: config.ring_buffer_bytes,
            exclude_tgid: std::process::id(),
            netns_inode: if config.own_netns_only {
                own_netns_inode()?
            } else {
                0
            },
        })?;
        let processor = CaptureProcessor::new(
            ProcessorConfig {
                max_sockets: config.max_sockets,
                request_timeout_ns: config.request_timeout.as_nanos() as u64,
                socket_idle_timeout_ns: config.socket_idle_timeout.as_nanos() as u64,
            },
            tags,
            Arc::clone(&stats),
            processes,
        );
        let interval = config.batch_interval;
        let tls = config.tls;
        let thread = std::thread::Builder::new()
            .name("flowmesh-capture".into())
            .spawn(move || run(tracer, processor, stats, output, cancel, interval, tls))
            .map_err(|source| NodeError::Io {
                action: "spawn capture thread",
                source,
            })?;
        info!("capture started");
        Ok(Self {
            thread: Some(thread),
        })
    }

    /// Waits for the thread to hand over its last rows and detach the kernel programs.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The inode number of this process's network namespace.
fn own_netns_inode() -> Result<u32, NodeError> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata("/proc/self/ns/net")
        .map_err(|source| NodeError::Io {
            action: "stat /proc/self/ns/net (capture.own_netns_only)",
            source,
        })?
        .ino();
    // namespace inodes come from the kernel's 32-bit proc inode allocator
    u32::try_from(inode).map_err(|_| NodeError::Io {
        action: "use /proc/self/ns/net (capture.own_netns_only)",
        source: std::io::Error::other(format!("inode {inode} is wider than 32 bits")),
    })
}

fn unix_ns(mono_ns: u64, offset: i128) -> u64 {
    (mono_ns as i128 + offset).clamp(0, u64::MAX as i128) as u64
}

/// Converts a kernel event; `None` for a kind or direction this build does not know.
pub fn view<'a>(ev: &SocketEvent<'a>, comm: &'a str, offset: i128) -> Option<SocketEventView<'a>> {
    let h = &ev.header;
    let kind = match h.event_kind()? {
        KernelKind::Data => EventKind::Data(match h.data_direction()? {
            flowmesh_ebpf::Direction::Egress => Direction::Egress,
            flowmesh_ebpf::Direction::Ingress => Direction::Ingress,
            flowmesh_ebpf::Direction::None => return None,
        }),
        KernelKind::Connect => EventKind::Connect,
        KernelKind::Accept => EventKind::Accept,
        KernelKind::Close => EventKind::Close,
    };
    let enter_ns = unix_ns(h.enter_ns, offset);
    let exit_ns = if h.exit_ns == 0 {
        enter_ns
    } else {
        unix_ns(h.exit_ns, offset)
    };
    let transport = if h.is_udp() {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    Some(SocketEventView {
        kind,
        enter_ns,
        exit_ns,
        sock_id: h.sock_id,
        tgid: h.tgid,
        tid: h.tid,
        syscall_trace_id: h.syscall_trace_id,
        byte_count: h.byte_count,
        // plaintext from the TLS uprobes has no TCP sequence of its own
        tcp_seq: if transport == Transport::Tcp && !h.is_tls() {
            Some(h.tcp_seq)
        } else {
            None
        },
        transport,
        is_tls: h.is_tls(),
        local: SocketAddr::new(h.local_ip(), h.local_port),
        remote: SocketAddr::new(h.remote_ip(), h.remote_port),
        comm,
        payload: ev.payload,
    })
}

/// Unix-epoch ns now: the clock of the events as capture sees them (see [`view`]), and so
/// of the process registry.
pub(crate) fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// How often /proc is scanned for newly loaded libssl copies.
const TLS_SCAN_INTERVAL: Duration = Duration::from_secs(5);

#[allow(clippy::too_many_arguments)]
fn run(
    mut tracer: SocketTracer,
    mut processor: CaptureProcessor,
    stats: Arc<CaptureStats>,
    output: mpsc::Sender<RowBatches>,
    cancel: CancellationToken,
    interval: Duration,
    tls: bool,
) {
    let offset = tracer.clock_offset_ns();
    let mut last_tick = Instant::now();
    let mut last_tls_scan: Option<Instant> = None;
    let poll_timeout = interval.min(Duration::from_millis(100));
    while !cancel.is_cancelled() {
        let polled = tracer.poll(poll_timeout, |ev| {
            let comm = ev.header.comm_str();
            match view(&ev, &comm, offset) {
                Some(v) => processor.on_event(&v),
                None => {
                    stats.malformed_events.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        if let Err(e) = polled {
            warn!(error = %e, "ring buffer poll failed");
            std::thread::sleep(Duration::from_millis(100));
        }
        if tls && last_tls_scan.is_none_or(|t| t.elapsed() >= TLS_SCAN_INTERVAL) {
            // processes that load libssl later are covered by the next scan
            last_tls_scan = Some(Instant::now());
            match tracer.attach_tls_discovered() {
                Ok(0) => {}
                Ok(n) => info!(libraries = n, "attached TLS uprobes"),
                Err(e) => warn!(error = %e, "failed to attach TLS uprobes"),
            }
        }
        if last_tick.elapsed() >= interval {
            last_tick = Instant::now();
            if let Ok(lost) = tracer.lost_events() {
                stats.kernel_lost_events.store(lost, Ordering::Relaxed);
            }
            stats
                .malformed_events
                .store(tracer.malformed_events(), Ordering::Relaxed);
            let batches = processor.tick(now_unix_ns(), false);
            send(&output, batches, &stats);
        }
    }
    // Drain what the kernel still holds, then hand over everything, waiting for room.
    let _ = tracer.poll(Duration::from_millis(10), |ev| {
        let comm = ev.header.comm_str();
        if let Some(v) = view(&ev, &comm, offset) {
            processor.on_event(&v);
        }
    });
    let batches = processor.tick(now_unix_ns(), true);
    if !batches.is_empty() {
        let _ = output.blocking_send(batches);
    }
    drop(tracer);
    info!("capture stopped");
}

fn send(output: &mpsc::Sender<RowBatches>, batches: RowBatches, stats: &CaptureStats) {
    if batches.is_empty() {
        return;
    }
    let rows: usize = batches.iter().map(|(_, b)| b.num_rows()).sum();
    match output.try_send(batches) {
        Ok(()) => {}
        Err(_) => {
            stats.dropped_batches.fetch_add(1, Ordering::Relaxed);
            stats.dropped_rows.fetch_add(rows as u64, Ordering::Relaxed);
        }
    }
}
