//! The Raft log and vote on sled (openraft's [`RaftLogStorage`]).
//!
//! Every write (append, vote, truncate, purge) is flushed before it is reported done, and
//! writes are serialized by openraft holding `&mut self`. Entries are JSON so the log stays
//! readable with a sled dump; the dictionary's entries are small batches of strings.

// `StorageError` is openraft's type, fixed by the storage traits; boxing it is not an option.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreInner;
use crate::types::{NodeId, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;
type StoreResult<T> = Result<T, StorageError<NodeId>>;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The log half of the store.
pub struct LogStore {
    inner: Arc<StoreInner>,
}

/// A cheap reader of the log for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    inner: Arc<StoreInner>,
}

impl LogStore {
    pub(crate) fn new(inner: Arc<StoreInner>) -> Self {
        Self { inner }
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        err: fn(AnyError) -> StorageIOError<NodeId>,
    ) -> StoreResult<Option<T>> {
        match self.inner.raft_meta.get(key) {
            Err(e) => Err(err(AnyError::new(&e)).into()),
            Ok(None) => Ok(None),
            Ok(Some(bytes)) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| err(AnyError::new(&e)).into()),
        }
    }

    async fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        err: fn(AnyError) -> StorageIOError<NodeId>,
    ) -> StoreResult<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| err(AnyError::new(&e)))?;
        self.inner
            .raft_meta
            .insert(key, bytes)
            .map_err(|e| err(AnyError::new(&e)))?;
        self.inner
            .db
            .flush_async()
            .await
            .map_err(|e| err(AnyError::new(&e)))?;
        Ok(())
    }

    fn last_purged(&self) -> StoreResult<Option<LogId<NodeId>>> {
        self.read_meta(LAST_PURGED, StorageIOError::read_logs)
    }

    /// Removes every entry with index ≥ `from` (`from..`) or in `..=upto`.
    async fn remove_range(&self, range: (Bound<u64>, Bound<u64>)) -> StoreResult<()> {
        let write_err =
            |e: &dyn std::error::Error| StorageIOError::<NodeId>::write_logs(AnyError::error(e));
        let mut batch = sled::Batch::default();
        for key in self.inner.log.range(key_range(range)) {
            let (key, _) = key.map_err(|e| write_err(&e))?;
            batch.remove(key);
        }
        self.inner
            .log
            .apply_batch(batch)
            .map_err(|e| write_err(&e))?;
        self.inner
            .db
            .flush_async()
            .await
            .map_err(|e| write_err(&e))?;
        Ok(())
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_range(range: (Bound<u64>, Bound<u64>)) -> (Bound<[u8; 8]>, Bound<[u8; 8]>) {
    let map = |b: Bound<u64>| match b {
        Bound::Included(i) => Bound::Included(index_key(i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(i)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (map(range.0), map(range.1))
}

fn decode_entry(bytes: &[u8]) -> StoreResult<Entry> {
    serde_json::from_slice(bytes)
        .map_err(|e| StorageIOError::<NodeId>::read_logs(AnyError::new(&e)).into())
}

impl LogReader {
    fn read_range<RB: RangeBounds<u64>>(&self, range: RB) -> StoreResult<Vec<Entry>> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        // An empty or inverted range is not an error, and sled panics on inverted ranges.
        let lo = match bounds.0 {
            Bound::Included(i) => Some(i),
            Bound::Excluded(i) => i.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let hi = match bounds.1 {
            Bound::Included(i) => Some(i),
            Bound::Excluded(i) => i.checked_sub(1),
            Bound::Unbounded => Some(u64::MAX),
        };
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return Ok(Vec::new());
        };
        if lo > hi {
            return Ok(Vec::new());
        }
        let mut entries = Vec::new();
        for item in self.inner.log.range(index_key(lo)..=index_key(hi)) {
            let (_, value) =
                item.map_err(|e| StorageIOError::<NodeId>::read_logs(AnyError::new(&e)))?;
            entries.push(decode_entry(&value)?);
        }
        Ok(entries)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry>> {
        self.read_range(range)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry>> {
        LogReader {
            inner: Arc::clone(&self.inner),
        }
        .read_range(range)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.last_purged()?;
        let last = self
            .inner
            .log
            .last()
            .map_err(|e| StorageIOError::<NodeId>::read_logs(AnyError::new(&e)))?;
        let last_log_id = match last {
            Some((_, value)) => Some(decode_entry(&value)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            inner: Arc::clone(&self.inner),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        self.write_meta(VOTE, vote, StorageIOError::write_vote)
            .await
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        self.read_meta(VOTE, StorageIOError::read_vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        // Not flushed on its own: losing the newest committed marker in a crash only means
        // re-learning it from the leader, while fsyncing it on every commit would double the
        // cost of each proposal.
        let bytes = serde_json::to_vec(&committed)
            .map_err(|e| StorageIOError::<NodeId>::write(AnyError::new(&e)))?;
        self.inner
            .raft_meta
            .insert(COMMITTED, bytes)
            .map_err(|e| StorageIOError::<NodeId>::write(AnyError::new(&e)))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(COMMITTED, StorageIOError::read)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(|e| {
                StorageIOError::<NodeId>::write_log_entry(entry.log_id, AnyError::new(&e))
            })?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        self.inner
            .log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::<NodeId>::write_logs(AnyError::new(&e)))?;
        // Entries are readable now; report them durable only once sled has fsynced them.
        let flushed = self
            .inner
            .db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(std::io::Error::other);
        callback.log_io_completed(flushed);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        self.remove_range((Bound::Included(log_id.index), Bound::Unbounded))
            .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        // Record the purge point first: a crash in between leaves extra entries, never a hole.
        self.write_meta(LAST_PURGED, &log_id, StorageIOError::write_logs)
            .await?;
        self.remove_range((Bound::Unbounded, Bound::Included(log_id.index)))
            .await
    }
}
