//! Turns socket events into rows: one [`Conversation`] per socket, rows for
//! `flow_log.l7_flow_log`, and 1-second RED aggregates for `flow_metrics.application` and
//! `application_map`. Pure logic with no kernel in the way, so it is tested with synthetic
//! events; [`super::CaptureRunner`] feeds it from the ring buffer.

use hashbrown::HashMap;
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
};

use datafusion::arrow::record_batch::RecordBatch;
use flowmesh_protocols::{Chunk, Conversation, ConversationConfig, Direction, L7Record, Role};
use tracing::warn;

use super::{
    CaptureStats,
    procinfo::{ProcessInfo, SharedProcesses, canonical},
};
use crate::{
    red::RedAggregator,
    tables::{
        IpStrings, L7_FLOW_LOG, L7Row, NodeTags, PROCESS_RESOURCES, l7_flow_log_batch,
        process_batch,
    },
};

/// How long a closed socket's owner stays known, so that the peer's late rows still find it.
const CLOSED_ENDPOINT_GRACE_NS: u64 = 10_000_000_000;

/// What happened on a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Data(Direction),
    Connect,
    Accept,
    Close,
}

/// Transport of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

/// One socket event with Unix-epoch timestamps, as the processor needs it.
#[derive(Debug, Clone, Copy)]
pub struct SocketEventView<'a> {
    pub kind: EventKind,
    pub enter_ns: u64,
    pub exit_ns: u64,
    pub sock_id: u64,
    pub tgid: u32,
    pub tid: u32,
    /// The thread's syscall trace id (0: none), see `flowmesh_ebpf::SocketEvent`.
    pub syscall_trace_id: u64,
    pub byte_count: u32,
    pub tcp_seq: Option<u32>,
    pub transport: Transport,
    /// Plaintext seen through the OpenSSL uprobes (kept apart from the socket's ciphertext).
    pub is_tls: bool,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The thread's name, used when /proc no longer knows the process.
    pub comm: &'a str,
    pub payload: &'a [u8],
}

/// Limits of the processor.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub max_sockets: usize,
    pub request_timeout_ns: u64,
    pub socket_idle_timeout_ns: u64,
}

struct SocketState {
    conversation: Conversation,
    tgid: u32,
    sock_id: u64,
    is_tls: bool,
    local: SocketAddr,
    remote: SocketAddr,
    transport: Transport,
    last_seen_ns: u64,
}

struct Endpoint {
    tgid: u32,
    process: Arc<ProcessInfo>,
    closed_at_ns: Option<u64>,
}

/// The capture pipeline's state between the ring buffer and storage.
pub struct CaptureProcessor {
    config: ProcessorConfig,
    tags: NodeTags,
    stats: Arc<CaptureStats>,
    sockets: HashMap<(u32, u64, bool), SocketState>,
    endpoints: HashMap<(SocketAddr, SocketAddr), Endpoint>,
    procs: SharedProcesses,
    rows: Vec<L7Row>,
    red: RedAggregator,
    records: Vec<L7Record>,
    ips: IpStrings,
}

impl CaptureProcessor {
    pub fn new(
        config: ProcessorConfig,
        tags: NodeTags,
        stats: Arc<CaptureStats>,
        procs: SharedProcesses,
    ) -> Self {
        Self {
            config,
            tags,
            stats,
            sockets: HashMap::new(),
            endpoints: HashMap::new(),
            procs,
            rows: Vec::new(),
            red: RedAggregator::default(),
            records: Vec::new(),
            ips: IpStrings::default(),
        }
    }

    /// Handles one event.
    pub fn on_event(&mut self, ev: &SocketEventView<'_>) {
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        let local = canonical(ev.local);
        let remote = canonical(ev.remote);
        let key = (ev.tgid, ev.sock_id, ev.is_tls);
        match ev.kind {
            EventKind::Connect | EventKind::Accept => {
                self.remember_endpoint(ev, local, remote);
            }
            EventKind::Close => {
                // a close ends both the ciphertext and the plaintext view of the socket
                for key in [(ev.tgid, ev.sock_id, false), (ev.tgid, ev.sock_id, true)] {
                    if let Some(mut state) = self.sockets.remove(&key) {
                        state.conversation.close(ev.exit_ns, &mut self.records);
                        self.retire(&state);
                        self.drain_records(&state);
                    }
                }
                if let Some(ep) = self.endpoints.get_mut(&(local, remote))
                    && ep.tgid == ev.tgid
                {
                    ep.closed_at_ns = Some(ev.exit_ns);
                }
            }
            EventKind::Data(direction) => {
                if ev.transport == Transport::Tcp {
                    self.remember_endpoint(ev, local, remote);
                }
                if !self.sockets.contains_key(&key) {
                    if self.sockets.len() >= self.config.max_sockets {
                        self.evict_oldest();
                    }
                    let conversation = Conversation::new(ConversationConfig {
                        request_timeout_ns: self.config.request_timeout_ns,
                        ..ConversationConfig::default()
                    });
                    self.sockets.insert(
                        key,
                        SocketState {
                            conversation,
                            tgid: ev.tgid,
                            sock_id: ev.sock_id,
                            is_tls: ev.is_tls,
                            local,
                            remote,
                            transport: ev.transport,
                            last_seen_ns: ev.exit_ns,
                        },
                    );
                }
                let Some(state) = self.sockets.get_mut(&key) else {
                    return;
                };
                state.last_seen_ns = ev.exit_ns;
                if state.conversation.is_ignored() {
                    self.stats.ignored_events.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if ev.transport == Transport::Udp {
                    // unconnected UDP sockets talk to many peers; keep the latest
                    state.remote = remote;
                }
                let chunk = Chunk {
                    direction,
                    enter_ns: ev.enter_ns,
                    exit_ns: ev.exit_ns,
                    tcp_seq: ev.tcp_seq,
                    byte_count: ev.byte_count,
                    payload: ev.payload,
                    tid: ev.tid,
                    syscall_trace_id: ev.syscall_trace_id,
                };
                state.conversation.feed(&chunk, &mut self.records);
                if !self.records.is_empty() {
                    let state = &self.sockets[&key];
                    let snapshot = SocketSnapshot::of(state);
                    self.drain_records_for(snapshot);
                }
            }
        }
    }

    fn remember_endpoint(
        &mut self,
        ev: &SocketEventView<'_>,
        local: SocketAddr,
        remote: SocketAddr,
    ) {
        if remote.port() == 0 {
            return;
        }
        match self.endpoints.get_mut(&(local, remote)) {
            Some(ep) if ep.tgid == ev.tgid && ep.closed_at_ns.is_none() => {}
            _ => {
                let process = self.procs.lock().get(ev.tgid, ev.comm, ev.exit_ns);
                self.endpoints.insert(
                    (local, remote),
                    Endpoint {
                        tgid: ev.tgid,
                        process,
                        closed_at_ns: None,
                    },
                );
            }
        }
    }

    fn evict_oldest(&mut self) {
        let Some((&key, _)) = self.sockets.iter().min_by_key(|(_, s)| s.last_seen_ns) else {
            return;
        };
        if let Some(state) = self.sockets.remove(&key) {
            self.stats.evicted_sockets.fetch_add(1, Ordering::Relaxed);
            self.retire(&state);
        }
    }

    /// Adds a finished socket's parser counters to the totals.
    fn retire(&self, state: &SocketState) {
        let s = state.conversation.stats();
        self.stats
            .parse_errors
            .fetch_add(s.parse_errors, Ordering::Relaxed);
        self.stats.resyncs.fetch_add(s.resyncs, Ordering::Relaxed);
        self.stats
            .dropped_requests
            .fetch_add(s.dropped_requests, Ordering::Relaxed);
        self.stats
            .unmatched_responses
            .fetch_add(s.unmatched_responses, Ordering::Relaxed);
    }

    fn drain_records(&mut self, state: &SocketState) {
        let snapshot = SocketSnapshot::of(state);
        self.drain_records_for(snapshot);
    }

    fn drain_records_for(&mut self, socket: SocketSnapshot) {
        let records = std::mem::take(&mut self.records);
        for record in &records {
            let row = self.row(&socket, record);
            if !self.red.add(&row) {
                self.stats.red_overflow_rows.fetch_add(1, Ordering::Relaxed);
            }
            self.rows.push(row);
        }
        self.stats
            .rows
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.records = records;
        self.records.clear();
    }

    fn row(&mut self, socket: &SocketSnapshot, r: &L7Record) -> L7Row {
        let mut procs = self.procs.lock();
        let me = procs.get(socket.tgid, "", r.request_start_ns);
        // the peer's current version (its endpoint entry may predate a rename)
        let peer = self.endpoints.get(&(socket.remote, socket.local)).map(|e| {
            (
                e.tgid,
                procs.get(e.tgid, &e.process.name, r.request_start_ns),
            )
        });
        drop(procs);
        let mine_is_client = r.role == Role::Client;
        let (client, server) = if mine_is_client {
            (socket.local, socket.remote)
        } else {
            (socket.remote, socket.local)
        };
        let mut row =
            L7Row::from_record(r, client, server, socket.transport.as_str(), &mut self.ips);
        row.signal_source = "ebpf";
        row.observation_point = r.role.observation_point();
        row.is_tls = socket.is_tls;
        let mine = (Some(socket.tgid), me);
        let theirs = peer.map_or((None, Arc::new(ProcessInfo::default())), |(pid, p)| {
            (Some(pid), p)
        });
        let ((pid_0, proc_0), (pid_1, proc_1)) = if mine_is_client {
            (mine, theirs)
        } else {
            (theirs, mine)
        };
        row.process_id_0 = pid_0;
        row.process_id_1 = pid_1;
        row.auto_service_0 = Arc::clone(&proc_0.service);
        row.auto_service_1 = Arc::clone(&proc_1.service);
        row.process_kname_0 = Arc::clone(&proc_0.name);
        row.process_kname_1 = Arc::clone(&proc_1.name);
        row.gprocess_0 = Arc::clone(&proc_0.key);
        row.gprocess_1 = Arc::clone(&proc_1.key);
        if mine_is_client {
            row.syscall_thread_0 = Some(r.request_tid);
        } else {
            row.syscall_thread_1 = Some(r.request_tid);
        }
        row
    }

    /// Periodic work: time out requests, forget idle sockets, and hand over the rows and
    /// the RED aggregates of every second before `now_ns` minus one (or all of them when
    /// `final_flush`).
    pub fn tick(&mut self, now_ns: u64, final_flush: bool) -> Vec<(String, RecordBatch)> {
        let idle = self.config.socket_idle_timeout_ns;
        let mut expired = Vec::new();
        for (key, state) in self.sockets.iter_mut() {
            state.conversation.expire(now_ns, &mut self.records);
            if !self.records.is_empty() {
                let records = std::mem::take(&mut self.records);
                expired.push((SocketSnapshot::of(state), records));
            }
            if now_ns.saturating_sub(state.last_seen_ns) > idle {
                expired.push((SocketSnapshot::of(state), Vec::new()));
                let _ = key;
            }
        }
        for (socket, records) in expired {
            if records.is_empty() {
                if let Some(mut state) =
                    self.sockets
                        .remove(&(socket.tgid, socket.sock_id, socket.is_tls))
                {
                    state.conversation.close(now_ns, &mut self.records);
                    self.retire(&state);
                    self.drain_records_for(socket);
                }
            } else {
                self.records = records;
                self.drain_records_for(socket);
            }
        }
        self.endpoints.retain(|_, e| {
            e.closed_at_ns
                .is_none_or(|t| now_ns.saturating_sub(t) < CLOSED_ENDPOINT_GRACE_NS)
        });
        // Sockets whose close was never seen leave entries behind: keep the map bounded.
        if self.endpoints.len() > self.config.max_sockets.saturating_mul(4) {
            self.stats
                .evicted_endpoints
                .fetch_add(self.endpoints.len() as u64, Ordering::Relaxed);
            self.endpoints.clear();
        }
        self.stats
            .sockets
            .store(self.sockets.len() as u64, Ordering::Relaxed);

        let mut out = Vec::new();
        // process resources first: the rows below name them
        let processes = self.procs.lock().take_new();
        if !processes.is_empty() {
            match process_batch(&processes) {
                Ok(batch) => out.push((PROCESS_RESOURCES.to_string(), batch)),
                Err(e) => warn!(error = %e, "failed to build the process resource batch"),
            }
        }
        if !self.rows.is_empty() {
            match l7_flow_log_batch(&self.tags, &self.rows) {
                Ok(batch) => out.push((L7_FLOW_LOG.to_string(), batch)),
                Err(e) => warn!(error = %e, "failed to build l7_flow_log batch"),
            }
            self.rows.clear();
        }
        let cutoff = if final_flush {
            i64::MAX
        } else {
            (now_ns / 1_000_000_000) as i64 - 1
        };
        self.red.drain(cutoff, &self.tags, &mut out);
        out
    }
}

/// What a row needs to know about its socket.
#[derive(Clone, Copy)]
struct SocketSnapshot {
    tgid: u32,
    sock_id: u64,
    is_tls: bool,
    local: SocketAddr,
    remote: SocketAddr,
    transport: Transport,
}

impl SocketSnapshot {
    fn of(state: &SocketState) -> Self {
        Self {
            tgid: state.tgid,
            sock_id: state.sock_id,
            is_tls: state.is_tls,
            local: state.local,
            remote: state.remote,
            transport: state.transport,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use datafusion::arrow::array::{AsArray, UInt32Array};

    use crate::tables::{APPLICATION, APPLICATION_MAP};

    use super::*;

    const SECOND: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * SECOND;

    fn processor() -> CaptureProcessor {
        CaptureProcessor::new(
            ProcessorConfig {
                max_sockets: 16,
                request_timeout_ns: 30 * SECOND,
                socket_idle_timeout_ns: 300 * SECOND,
            },
            NodeTags {
                region: "r".into(),
                cluster: "c".into(),
                node: "n".into(),
            },
            Arc::new(CaptureStats::default()),
            Arc::new(parking_lot::Mutex::new(
                crate::capture::procinfo::Processes::new("n".into()),
            )),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn ev<'a>(
        kind: EventKind,
        t: u64,
        tgid: u32,
        sock_id: u64,
        local: &str,
        remote: &str,
        seq: u32,
        payload: &'a [u8],
    ) -> SocketEventView<'a> {
        SocketEventView {
            kind,
            enter_ns: t,
            exit_ns: t + 1000,
            sock_id,
            tgid,
            tid: tgid,
            syscall_trace_id: t,
            byte_count: payload.len() as u32,
            tcp_seq: Some(seq),
            transport: Transport::Tcp,
            is_tls: false,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            comm: if tgid == 100 {
                "client-proc"
            } else {
                "server-proc"
            },
            payload,
        }
    }

    #[test]
    fn both_ends_on_one_host_give_two_rows_with_both_pids_and_red_metrics() {
        let mut p = processor();
        let (c, s) = ("127.0.0.1:40000", "[::ffff:127.0.0.1]:8080");
        let req = b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n";
        let resp = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno";
        use Direction::{Egress, Ingress};
        p.on_event(&ev(
            EventKind::Connect,
            T0,
            100,
            1,
            c,
            "127.0.0.1:8080",
            0,
            b"",
        ));
        p.on_event(&ev(
            EventKind::Data(Egress),
            T0 + 10,
            100,
            1,
            c,
            "127.0.0.1:8080",
            500,
            req,
        ));
        p.on_event(&ev(
            EventKind::Data(Ingress),
            T0 + 20,
            200,
            2,
            s,
            "[::ffff:127.0.0.1]:40000",
            500,
            req,
        ));
        p.on_event(&ev(
            EventKind::Data(Egress),
            T0 + 30,
            200,
            2,
            s,
            "[::ffff:127.0.0.1]:40000",
            900,
            resp,
        ));
        p.on_event(&ev(
            EventKind::Data(Ingress),
            T0 + 40,
            100,
            1,
            c,
            "127.0.0.1:8080",
            900,
            resp,
        ));

        // the RED second is still open: only the two flow-log rows come out, after the
        // two processes as resources (both exited here: known by their events' names)
        let out = p.tick(T0 + SECOND / 2, false);
        let (resources, out): (Vec<_>, Vec<_>) = out
            .into_iter()
            .partition(|(table, _)| table == PROCESS_RESOURCES);
        assert_eq!(resources.len(), 1);
        let keys = resources[0].1.column(0).clone();
        let mut keys: Vec<_> = keys.as_string::<i32>().iter().flatten().collect();
        keys.sort();
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(keys[0].contains("/100/exited/"), "{keys:?}");
        assert!(keys[1].contains("/200/exited/"), "{keys:?}");
        assert_eq!(out.len(), 1);
        let (table, batch) = &out[0];
        assert_eq!(table, L7_FLOW_LOG);
        assert_eq!(batch.num_rows(), 2);
        let col = |name: &str| batch.column_by_name(name).unwrap().clone();
        let points = col("observation_point");
        let points: Vec<_> = points.as_string::<i32>().iter().flatten().collect();
        assert_eq!(points, vec!["server", "client"]);
        for name in ["process_id_0", "process_id_1"] {
            let pids = col(name);
            let pids = pids.as_any().downcast_ref::<UInt32Array>().unwrap();
            let want = if name.ends_with('0') { 100 } else { 200 };
            assert!(pids.iter().all(|p| p == Some(want)), "{name}: {pids:?}");
        }
        // the kernel's syscall trace ids (here each event's time) of each side's first
        // request and response syscall
        let ids = |name: &str| {
            let ids = col(name);
            let ids = ids.as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
            ids.iter().flatten().collect::<Vec<_>>()
        };
        assert_eq!(ids("syscall_trace_id_request"), vec![T0 + 20, T0 + 10]);
        assert_eq!(ids("syscall_trace_id_response"), vec![T0 + 30, T0 + 40]);
        let ips = col("ip_1");
        assert!(
            ips.as_string::<i32>()
                .iter()
                .all(|ip| ip == Some("127.0.0.1")),
            "mapped IPv6 is shown as IPv4"
        );

        // once the second has closed, one application row per observation point
        let out = p.tick(T0 + 2 * SECOND + 1, false);
        let tables: Vec<&str> = out.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tables, vec![APPLICATION, APPLICATION_MAP]);
        let app = &out[0].1;
        assert_eq!(app.num_rows(), 2);
        let errors = app.column_by_name("server_error").unwrap();
        let errors = errors.as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
        assert_eq!(errors.iter().flatten().sum::<u64>(), 2);
        assert_eq!(p.stats.rows.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn sockets_over_the_limit_are_evicted_and_counted() {
        let mut p = processor();
        for i in 0..20u64 {
            let local = format!("127.0.0.1:{}", 41000 + i);
            p.on_event(&ev(
                EventKind::Data(Direction::Egress),
                T0 + i,
                100,
                i,
                &local,
                "127.0.0.1:80",
                1,
                b"x",
            ));
        }
        assert_eq!(p.sockets.len(), 16);
        assert_eq!(p.stats.evicted_sockets.load(Ordering::Relaxed), 4);
        // idle sockets are forgotten by tick
        let _ = p.tick(T0 + 400 * SECOND, false);
        assert!(p.sockets.is_empty());
    }
}
