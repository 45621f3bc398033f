//! The packet pipeline: AF_PACKET on configured interfaces → [`PacketProcessor`] → rows for
//! `flow_log.l4_flow_log`, `flow_metrics.network`/`network_map`, and L7 rows from packets
//! (`signal_source = packet`) for `flow_log.l7_flow_log` and the RED tables. One thread, the
//! same bounded queue to storage as eBPF capture; drops are counted in [`PacketStats`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use flowmesh_packet::{
    FilterBuilder, PacketCapture, PacketConfig, PacketProcessor, ProcessorOutput, TransportProtocol,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    capture::RowBatches,
    config::PacketSettings,
    error::NodeError,
    red::RedAggregator,
    tables::{
        IpStrings, L7_FLOW_LOG, L7Row, NodeTags, l7_flow_log_batch,
        network::{L4_FLOW_LOG, NetworkAggregator, l4_flow_log_batch},
    },
};

/// Counters of the packet pipeline.
#[derive(Debug, Default)]
pub struct PacketStats {
    pub frames: AtomicU64,
    pub kernel_drops: AtomicU64,
    pub l4_rows: AtomicU64,
    pub l7_rows: AtomicU64,
    pub dropped_rows: AtomicU64,
    pub overflow_rows: AtomicU64,
}

/// A running packet capture thread.
pub struct PacketRunner {
    thread: Option<JoinHandle<()>>,
}

fn packet_config(settings: &PacketSettings) -> PacketConfig {
    let mut filter = FilterBuilder::new();
    for port in &settings.ports {
        filter = filter.port(*port);
    }
    let defaults = PacketConfig::default();
    PacketConfig {
        interfaces: settings.interfaces.clone(),
        filter: Some(filter.build(defaults.snaplen)),
        flow_idle_timeout: settings.flow_idle_timeout,
        max_flows: settings.max_flows,
        report_interval: settings.report_interval,
        l7_enabled: settings.l7,
        ..defaults
    }
}

impl PacketRunner {
    /// Opens the capture on every configured interface and starts the thread.
    pub fn start(
        settings: &PacketSettings,
        batch_interval: Duration,
        tags: NodeTags,
        stats: Arc<PacketStats>,
        output: mpsc::Sender<RowBatches>,
        cancel: CancellationToken,
    ) -> Result<Self, NodeError> {
        let config = packet_config(settings);
        let capture = PacketCapture::open(&config)?;
        let processor = PacketProcessor::new(&config)?;
        let thread = std::thread::Builder::new()
            .name("flowmesh-packet".into())
            .spawn(move || {
                run(
                    capture,
                    processor,
                    tags,
                    stats,
                    output,
                    cancel,
                    batch_interval,
                )
            })
            .map_err(|source| NodeError::Io {
                action: "spawn packet thread",
                source,
            })?;
        info!(interfaces = ?settings.interfaces, "packet capture started");
        Ok(Self {
            thread: Some(thread),
        })
    }

    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Turns processor output into rows and aggregates.
struct Collector {
    tags: NodeTags,
    stats: Arc<PacketStats>,
    l4: Vec<flowmesh_packet::L4FlowRecord>,
    l7: Vec<L7Row>,
    network: NetworkAggregator,
    red: RedAggregator,
    ips: IpStrings,
}

impl Collector {
    fn take(&mut self, out: &mut ProcessorOutput) {
        for r in out.l4.drain(..) {
            if !self.network.add(&r) {
                self.stats.overflow_rows.fetch_add(1, Ordering::Relaxed);
            }
            self.l4.push(r);
        }
        for r in out.l7.drain(..) {
            let transport = match r.key.protocol {
                TransportProtocol::Tcp => "TCP",
                TransportProtocol::Udp => "UDP",
            };
            let mut row = L7Row::from_record(
                &r.record,
                r.key.client,
                r.key.server,
                transport,
                &mut self.ips,
            );
            row.signal_source = "packet";
            row.observation_point = r.observation_point.as_str();
            if !self.red.add(&row) {
                self.stats.overflow_rows.fetch_add(1, Ordering::Relaxed);
            }
            self.l7.push(row);
        }
    }

    fn batches(&mut self, cutoff: i64) -> RowBatches {
        let mut out = Vec::new();
        if !self.l4.is_empty() {
            match l4_flow_log_batch(&self.tags, &self.l4) {
                Ok(b) => out.push((L4_FLOW_LOG.to_string(), b)),
                Err(e) => warn!(error = %e, "failed to build l4_flow_log batch"),
            }
            self.stats
                .l4_rows
                .fetch_add(self.l4.len() as u64, Ordering::Relaxed);
            self.l4.clear();
        }
        if !self.l7.is_empty() {
            match l7_flow_log_batch(&self.tags, &self.l7) {
                Ok(b) => out.push((L7_FLOW_LOG.to_string(), b)),
                Err(e) => warn!(error = %e, "failed to build l7_flow_log batch"),
            }
            self.stats
                .l7_rows
                .fetch_add(self.l7.len() as u64, Ordering::Relaxed);
            self.l7.clear();
        }
        if let Err(e) = self.network.drain(cutoff, &self.tags, &mut out) {
            warn!(error = %e, "failed to build network batches");
        }
        self.red.drain(cutoff, &self.tags, &mut out);
        out
    }
}

fn run(
    mut capture: PacketCapture,
    mut processor: PacketProcessor,
    tags: NodeTags,
    stats: Arc<PacketStats>,
    output: mpsc::Sender<RowBatches>,
    cancel: CancellationToken,
    interval: Duration,
) {
    let mut out = ProcessorOutput::default();
    let mut collector = Collector {
        tags,
        stats: Arc::clone(&stats),
        l4: Vec::new(),
        l7: Vec::new(),
        network: NetworkAggregator::default(),
        red: RedAggregator::default(),
        ips: IpStrings::default(),
    };
    let mut last_tick = Instant::now();
    while !cancel.is_cancelled() {
        match capture.poll_frames(|frame| processor.process_frame(frame, &mut out)) {
            Ok(n) => {
                stats.frames.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                warn!(error = %e, "packet capture poll failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        collector.take(&mut out);
        if last_tick.elapsed() >= interval {
            last_tick = Instant::now();
            let now = now_ns();
            processor.tick(now, &mut out);
            collector.take(&mut out);
            if let Ok(s) = capture.stats() {
                stats
                    .kernel_drops
                    .store(s.kernel_drops(), Ordering::Relaxed);
            }
            let batches = collector.batches((now / 1_000_000_000) as i64 - 1);
            send(&output, batches, &stats);
        }
    }
    // hand over every open flow and second
    processor.flush(now_ns(), &mut out);
    collector.take(&mut out);
    let batches = collector.batches(i64::MAX);
    if !batches.is_empty() {
        let _ = output.blocking_send(batches);
    }
    info!("packet capture stopped");
}

fn send(output: &mpsc::Sender<RowBatches>, batches: RowBatches, stats: &PacketStats) {
    if batches.is_empty() {
        return;
    }
    let rows: usize = batches.iter().map(|(_, b)| b.num_rows()).sum();
    if output.try_send(batches).is_err() {
        stats.dropped_rows.fetch_add(rows as u64, Ordering::Relaxed);
    }
}
