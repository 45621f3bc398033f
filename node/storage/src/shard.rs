//! The shard: appends go through the WAL (group commit, fsync before the ack) into
//! in-memory Arrow buffers, which are flushed to Parquet segments registered in the catalog.
//!
//! Invariants:
//! - An append is acknowledged only after its record is fsynced in the WAL, and its rows are
//!   visible to queries from the moment it is acknowledged.
//! - Rows live in exactly one of: the active buffers, the frozen buffers (being flushed), or
//!   a catalogued segment. Segments and the flushed WAL sequence change in one catalog batch,
//!   so replay after a crash never duplicates or loses a row.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, RecvTimeoutError, SyncSender, TryRecvError},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use datafusion::{
    arrow::record_batch::RecordBatch, parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::{
    StorageConfig, TableDef,
    catalog::{Catalog, SegmentMeta},
    error::{Result, StorageError},
    segment::{time_column, write_segments},
    wal::{self, WalWriter, encode_record},
};

/// Batches waiting in memory, per table.
#[derive(Default)]
struct Buffers {
    tables: HashMap<String, Vec<RecordBatch>>,
    bytes: usize,
    rows: u64,
    max_seq: u64,
}

impl Buffers {
    fn push(&mut self, table: &str, batch: RecordBatch, seq: u64) {
        self.bytes += batch.get_array_memory_size();
        self.rows += batch.num_rows() as u64;
        self.max_seq = self.max_seq.max(seq);
        self.tables
            .entry(table.to_string())
            .or_default()
            .push(batch);
    }
}

#[derive(Default)]
struct State {
    active: Buffers,
    frozen: Option<Arc<Buffers>>,
    segments: HashMap<String, Vec<SegmentMeta>>,
}

/// Counters a node exports at `/metrics`.
#[derive(Debug, Default)]
pub struct StorageStats {
    pub appended_rows: AtomicU64,
    pub wal_groups: AtomicU64,
    pub wal_records: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub rejected_appends: AtomicU64,
    pub flushes: AtomicU64,
    pub flushed_rows: AtomicU64,
    pub replayed_records: AtomicU64,
    pub torn_tail_bytes: AtomicU64,
    pub segments_deleted_by_retention: AtomicU64,
    pub segments_compacted: AtomicU64,
}

/// A view of what a table holds at one instant, for a scan.
pub struct TableSnapshot {
    pub buffered: Vec<RecordBatch>,
    pub segments: Vec<SegmentMeta>,
}

struct WalRequest {
    entries: Vec<(String, RecordBatch)>,
    ack: oneshot::Sender<Result<u64>>,
}

struct Shared {
    config: StorageConfig,
    defs: HashMap<String, TableDef>,
    state: RwLock<State>,
    catalog: Catalog,
    stats: StorageStats,
}

/// The node's storage shard. Cheap to share behind an `Arc`.
pub struct Shard {
    shared: Arc<Shared>,
    wal_tx: Mutex<Option<SyncSender<WalRequest>>>,
    wal_thread: Mutex<Option<JoinHandle<()>>>,
    flush_lock: tokio::sync::Mutex<()>,
    last_flush: Mutex<Instant>,
}

impl Shard {
    /// Opens (or creates) the shard in `config.data_dir`, replaying the WAL.
    pub fn open(config: StorageConfig, tables: Vec<TableDef>) -> Result<Self> {
        config.validate()?;
        let data_dir = config.data_dir.clone();
        let wal_dir = data_dir.join("wal");
        for dir in [&data_dir, &wal_dir, &data_dir.join("segments")] {
            std::fs::create_dir_all(dir)
                .map_err(|e| StorageError::io("create directory", dir, e))?;
        }
        let catalog = Catalog::open(&data_dir.join("catalog"))?;
        let flushed_seq = catalog.flushed_seq()?;
        let mut state = State::default();
        for meta in catalog.segments()? {
            state
                .segments
                .entry(meta.table.clone())
                .or_default()
                .push(meta);
        }
        remove_orphan_segments(&data_dir, &state.segments)?;

        let defs: HashMap<String, TableDef> =
            tables.into_iter().map(|d| (d.name.clone(), d)).collect();
        let stats = StorageStats::default();
        let mut max_seq = flushed_seq;
        let mut unknown = 0u64;
        let mut applied = 0u64;
        let report = wal::replay(&wal_dir, |record| {
            max_seq = max_seq.max(record.seq);
            if record.seq <= flushed_seq {
                return;
            }
            match defs.get(&record.table) {
                Some(def) if def.schema.fields() == record.batch.schema().fields() => {
                    applied += 1;
                    state.active.push(&record.table, record.batch, record.seq)
                }
                _ => unknown += 1,
            }
        })?;
        if unknown > 0 {
            warn!(
                records = unknown,
                "wal records for unknown tables or old schemas were skipped"
            );
        }
        stats.replayed_records.store(applied, Ordering::Relaxed);
        stats
            .torn_tail_bytes
            .store(report.torn_tail_bytes, Ordering::Relaxed);
        info!(
            data_dir = %data_dir.display(),
            flushed_seq,
            replayed = applied,
            buffered_rows = state.active.rows,
            torn_tail_bytes = report.torn_tail_bytes,
            "storage shard opened"
        );

        let shared = Arc::new(Shared {
            config,
            defs,
            state: RwLock::new(state),
            catalog,
            stats,
        });
        let writer = WalWriter::create(&wal_dir, max_seq + 1, shared.config.wal_segment_bytes)?;
        let (tx, rx) = mpsc::sync_channel::<WalRequest>(1024);
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("flowmesh-wal".into())
            .spawn(move || wal_loop(thread_shared, writer, rx, max_seq + 1))
            .map_err(|e| StorageError::io("spawn wal thread", &wal_dir, e))?;
        Ok(Self {
            shared,
            wal_tx: Mutex::new(Some(tx)),
            wal_thread: Mutex::new(Some(handle)),
            flush_lock: tokio::sync::Mutex::new(()),
            last_flush: Mutex::new(Instant::now()),
        })
    }

    /// The definitions of the tables this shard holds.
    pub fn tables(&self) -> impl Iterator<Item = &TableDef> {
        self.shared.defs.values()
    }

    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.shared.defs.get(name)
    }

    pub fn config(&self) -> &StorageConfig {
        &self.shared.config
    }

    pub fn stats(&self) -> &StorageStats {
        &self.shared.stats
    }

    /// Appends batches to their tables as one durable unit; returns the WAL sequence of the
    /// last record once all of them are fsynced and visible to queries.
    pub async fn append(&self, entries: Vec<(String, RecordBatch)>) -> Result<u64> {
        let entries: Vec<_> = entries
            .into_iter()
            .filter(|(_, b)| b.num_rows() > 0)
            .collect();
        if entries.is_empty() {
            return Ok(0);
        }
        for (table, batch) in &entries {
            let def = self
                .shared
                .defs
                .get(table)
                .ok_or_else(|| StorageError::UnknownTable {
                    table: table.clone(),
                })?;
            if def.schema.fields() != batch.schema().fields() {
                return Err(StorageError::SchemaMismatch {
                    table: table.clone(),
                    reason: format!("expected {:?}, got {:?}", def.schema, batch.schema()),
                });
            }
            time_column(def, batch)?;
        }
        let buffered = self.buffered_bytes();
        if buffered > self.shared.config.buffer_cap_bytes {
            self.shared
                .stats
                .rejected_appends
                .fetch_add(1, Ordering::Relaxed);
            return Err(StorageError::Backpressure {
                buffered_bytes: buffered,
                cap_bytes: self.shared.config.buffer_cap_bytes,
            });
        }
        let (ack, rx) = oneshot::channel();
        let tx = self
            .wal_tx
            .lock()
            .clone()
            .ok_or(StorageError::ShuttingDown)?;
        // The channel is bounded: a full queue blocks this task's thread only briefly, so
        // hand the send to the blocking pool rather than stall the executor.
        let request = WalRequest { entries, ack };
        tokio::task::spawn_blocking(move || tx.send(request))
            .await
            .map_err(|_| StorageError::ShuttingDown)?
            .map_err(|_| StorageError::ShuttingDown)?;
        rx.await.map_err(|_| StorageError::ShuttingDown)?
    }

    /// Bytes held in memory (active and frozen buffers).
    pub fn buffered_bytes(&self) -> usize {
        let st = self.shared.state.read();
        st.active.bytes + st.frozen.as_ref().map_or(0, |f| f.bytes)
    }

    /// Everything a scan of `table` needs, taken under one lock.
    pub fn snapshot(&self, table: &str) -> TableSnapshot {
        let st = self.shared.state.read();
        let mut buffered: Vec<RecordBatch> =
            st.active.tables.get(table).cloned().unwrap_or_default();
        if let Some(frozen) = &st.frozen {
            buffered.extend(frozen.tables.get(table).cloned().unwrap_or_default());
        }
        TableSnapshot {
            buffered,
            segments: st.segments.get(table).cloned().unwrap_or_default(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.config.data_dir
    }

    /// Flushes when the interval has passed or the buffers are over the threshold.
    pub async fn flush_if_due(&self) -> Result<()> {
        let due = self.last_flush.lock().elapsed() >= self.shared.config.flush_interval
            || self.shared.state.read().active.bytes >= self.shared.config.flush_threshold_bytes;
        if due { self.flush().await } else { Ok(()) }
    }

    /// Writes all buffered rows to Parquet segments, records them and the flushed WAL
    /// sequence in the catalog, then deletes WAL segments that are wholly flushed.
    pub async fn flush(&self) -> Result<()> {
        let _guard = self.flush_lock.lock().await;
        *self.last_flush.lock() = Instant::now();
        let frozen = {
            let mut st = self.shared.state.write();
            if st.active.rows == 0 {
                return Ok(());
            }
            let frozen = Arc::new(std::mem::take(&mut st.active));
            st.frozen = Some(Arc::clone(&frozen));
            frozen
        };
        let shared = Arc::clone(&self.shared);
        let to_write = Arc::clone(&frozen);
        let written = tokio::task::spawn_blocking(move || -> Result<Vec<SegmentMeta>> {
            let mut metas = Vec::new();
            for (table, batches) in &to_write.tables {
                if let Some(def) = shared.defs.get(table) {
                    let stem = format!("{:020}", to_write.max_seq);
                    metas.extend(write_segments(
                        &shared.config.data_dir,
                        def,
                        batches,
                        &stem,
                    )?);
                }
            }
            shared.catalog.commit(&metas, &[], Some(to_write.max_seq))?;
            Ok(metas)
        })
        .await
        .map_err(|_| StorageError::ShuttingDown)
        .and_then(|r| r);

        let mut st = self.shared.state.write();
        st.frozen = None;
        match written {
            Ok(metas) => {
                for meta in metas {
                    st.segments
                        .entry(meta.table.clone())
                        .or_default()
                        .push(meta);
                }
                drop(st);
                self.shared.stats.flushes.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .stats
                    .flushed_rows
                    .fetch_add(frozen.rows, Ordering::Relaxed);
                delete_flushed_wal(&self.shared.config.data_dir.join("wal"), frozen.max_seq)
            }
            Err(e) => {
                // Keep the rows queryable and flush them again later; the WAL still has them.
                let frozen = Arc::try_unwrap(frozen).unwrap_or_else(|shared| Buffers {
                    tables: shared.tables.clone(),
                    bytes: shared.bytes,
                    rows: shared.rows,
                    max_seq: shared.max_seq,
                });
                for (table, batches) in frozen.tables {
                    for batch in batches {
                        st.active.push(&table, batch, frozen.max_seq);
                    }
                }
                Err(e)
            }
        }
    }

    /// Deletes segments past their table's retention; returns how many were deleted.
    pub fn enforce_retention(&self, now: SystemTime) -> Result<usize> {
        let now_us = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let expired: Vec<SegmentMeta> = {
            let st = self.shared.state.read();
            st.segments
                .values()
                .flatten()
                .filter(|m| {
                    m.max_time_us
                        < now_us - self.shared.config.retention_for(&m.table).as_micros() as i64
                })
                .cloned()
                .collect()
        };
        if expired.is_empty() {
            return Ok(0);
        }
        self.shared.catalog.commit(&[], &expired, None)?;
        self.forget_and_delete(&expired);
        self.shared
            .stats
            .segments_deleted_by_retention
            .fetch_add(expired.len() as u64, Ordering::Relaxed);
        Ok(expired.len())
    }

    /// Merges the segments of each closed hour (before the hour `now` is in) that has more
    /// than one into one sorted file. Rows arriving late for that hour make a new file,
    /// merged by a later run. Returns how many files were merged away.
    pub async fn compact(&self, now: SystemTime) -> Result<usize> {
        let _guard = self.flush_lock.lock().await;
        let now_hour = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64 / 3600)
            .unwrap_or(0);
        let groups: Vec<Vec<SegmentMeta>> = {
            let st = self.shared.state.read();
            let mut by_hour: HashMap<(String, i64), Vec<SegmentMeta>> = HashMap::new();
            for m in st.segments.values().flatten().filter(|m| m.hour < now_hour) {
                by_hour
                    .entry((m.table.clone(), m.hour))
                    .or_default()
                    .push(m.clone());
            }
            by_hour.into_values().filter(|g| g.len() > 1).collect()
        };
        let mut merged = 0;
        for group in groups {
            let shared = Arc::clone(&self.shared);
            let inputs = group.clone();
            let added = tokio::task::spawn_blocking(move || -> Result<Vec<SegmentMeta>> {
                let table = &inputs[0].table;
                let def = shared
                    .defs
                    .get(table)
                    .ok_or_else(|| StorageError::UnknownTable {
                        table: table.clone(),
                    })?;
                let mut batches = Vec::new();
                for m in &inputs {
                    batches.extend(read_segment(&shared.config.data_dir, m)?);
                }
                let stem = format!(
                    "{}-compacted",
                    inputs
                        .iter()
                        .map(|m| file_stem(&m.path))
                        .max()
                        .unwrap_or_default()
                );
                let added = write_segments(&shared.config.data_dir, def, &batches, &stem)?;
                shared.catalog.commit(&added, &inputs, None)?;
                Ok(added)
            })
            .await
            .map_err(|_| StorageError::ShuttingDown)??;
            {
                let mut st = self.shared.state.write();
                for meta in added {
                    st.segments
                        .entry(meta.table.clone())
                        .or_default()
                        .push(meta);
                }
            }
            self.forget_and_delete(&group);
            merged += group.len();
        }
        self.shared
            .stats
            .segments_compacted
            .fetch_add(merged as u64, Ordering::Relaxed);
        Ok(merged)
    }

    fn forget_and_delete(&self, gone: &[SegmentMeta]) {
        let paths: HashSet<&str> = gone.iter().map(|m| m.path.as_str()).collect();
        {
            let mut st = self.shared.state.write();
            for list in st.segments.values_mut() {
                list.retain(|m| !paths.contains(m.path.as_str()));
            }
        }
        for m in gone {
            let path = self.shared.config.data_dir.join(&m.path);
            if let Err(e) = std::fs::remove_file(&path) {
                warn!(path = %path.display(), error = %e, "failed to delete segment file");
            }
        }
    }

    /// Stops the WAL thread after it has written everything already queued.
    pub fn close(&self) {
        self.wal_tx.lock().take();
        if let Some(handle) = self.wal_thread.lock().take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.close();
    }
}

fn file_stem(path: &str) -> String {
    Path::new(path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string()
}

fn read_segment(data_dir: &Path, meta: &SegmentMeta) -> Result<Vec<RecordBatch>> {
    let path = data_dir.join(&meta.path);
    let file =
        std::fs::File::open(&path).map_err(|e| StorageError::io("open segment", &path, e))?;
    let parquet_err = |source| StorageError::Parquet {
        path: path.clone(),
        source,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(parquet_err)?
        .build()
        .map_err(parquet_err)?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| StorageError::Arrow {
            table: meta.table.clone(),
            source,
        })
}

fn wal_loop(
    shared: Arc<Shared>,
    mut writer: WalWriter,
    rx: mpsc::Receiver<WalRequest>,
    mut next_seq: u64,
) {
    let delay = shared.config.group_commit_delay;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        let deadline = Instant::now() + delay;
        loop {
            let next = if delay.is_zero() {
                rx.try_recv()
                    .map_err(|e| matches!(e, TryRecvError::Disconnected))
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                rx.recv_timeout(left)
                    .map_err(|e| matches!(e, RecvTimeoutError::Disconnected))
            };
            match next {
                Ok(req) => group.push(req),
                Err(_) => break,
            }
            if group.len() >= 512 {
                break;
            }
        }
        let first_seq = next_seq;
        let mut framed = Vec::new();
        let mut seqs = Vec::with_capacity(group.len());
        let mut encode_error = None;
        for req in &group {
            for (table, batch) in &req.entries {
                match encode_record(next_seq, table, batch) {
                    Ok(bytes) => framed.push(bytes),
                    Err(e) => encode_error = Some(e),
                }
                next_seq += 1;
            }
            seqs.push(next_seq - 1);
        }
        let outcome = match encode_error {
            Some(e) => Err(e),
            None => writer.append_group(first_seq, &framed),
        };
        match outcome {
            Ok(()) => {
                let bytes: usize = framed.iter().map(Vec::len).sum();
                let stats = &shared.stats;
                stats.wal_groups.fetch_add(1, Ordering::Relaxed);
                stats
                    .wal_records
                    .fetch_add(framed.len() as u64, Ordering::Relaxed);
                stats.wal_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                let mut st = shared.state.write();
                let mut seq = first_seq;
                let mut acks = Vec::with_capacity(group.len());
                for (req, last) in group.into_iter().zip(seqs) {
                    for (table, batch) in req.entries {
                        stats
                            .appended_rows
                            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                        st.active.push(&table, batch, seq);
                        seq += 1;
                    }
                    acks.push((req.ack, last));
                }
                drop(st);
                for (ack, last) in acks {
                    let _ = ack.send(Ok(last));
                }
            }
            Err(e) => {
                warn!(error = %e, "wal append failed; starting a new segment");
                writer.force_new_segment();
                let message = e.to_string();
                for req in group {
                    let _ = req.ack.send(Err(StorageError::io(
                        "append to wal",
                        PathBuf::from("wal"),
                        std::io::Error::other(message.clone()),
                    )));
                }
            }
        }
    }
}

fn delete_flushed_wal(wal_dir: &Path, flushed_seq: u64) -> Result<()> {
    let segments = wal::list_segments(wal_dir)?;
    for pair in segments.windows(2) {
        let (_, path) = &pair[0];
        let (next_first, _) = pair[1];
        if next_first.saturating_sub(1) <= flushed_seq {
            std::fs::remove_file(path)
                .map_err(|e| StorageError::io("delete wal segment", path, e))?;
        }
    }
    Ok(())
}

fn remove_orphan_segments(
    data_dir: &Path,
    known: &HashMap<String, Vec<SegmentMeta>>,
) -> Result<()> {
    let known: HashSet<PathBuf> = known
        .values()
        .flatten()
        .map(|m| data_dir.join(&m.path))
        .collect();
    let mut stack = vec![data_dir.join("segments")];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| StorageError::io("list segment dir", &dir, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if !known.contains(&path) {
                warn!(path = %path.display(), "removing segment file not in the catalog");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    Ok(())
}

/// How long since the Unix epoch, in microseconds.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_micros() as i64
}
