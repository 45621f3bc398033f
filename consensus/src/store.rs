//! The replica's durable state in one sled database: the Raft log and vote ([`LogStore`]),
//! the dictionary state machine (strings and resource tables) and its snapshots
//! ([`StateMachine`]), and a read-only view of both for local lookups ([`DictionaryView`]).
//!
//! Trees: `raft_log` (index → entry JSON), `raft_meta` (vote, committed, last purged),
//! `dictionary` (layout in `keys.rs`). The current snapshot is a file beside the database.

mod dictionary_view;
pub(crate) mod keys;
mod log_store;
mod state_machine;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

pub use dictionary_view::DictionaryView;
pub use log_store::{LogReader, LogStore};
pub use state_machine::{SnapshotBuilder, StateMachine};

use crate::error::{ConsensusError, Result};

/// The open database, shared by every part of the store. Dropping the last handle closes
/// sled (and releases its directory lock), which `StoreHandle::closed` lets a restart
/// wait for.
pub(crate) struct StoreInner {
    pub(crate) db: sled::Db,
    pub(crate) log: sled::Tree,
    pub(crate) raft_meta: sled::Tree,
    pub(crate) dictionary: sled::Tree,
    pub(crate) snapshot_path: PathBuf,
}

impl Drop for StoreInner {
    fn drop(&mut self) {
        if let Err(error) = self.db.flush() {
            tracing::warn!(%error, "failed to flush dictionary store on close");
        }
    }
}

/// A weak handle that tells when every user of the store has let go of it.
#[derive(Clone)]
pub(crate) struct StoreHandle(Weak<StoreInner>);

impl StoreHandle {
    pub(crate) fn closed(&self) -> bool {
        self.0.strong_count() == 0
    }
}

/// Opens (or creates) the store in `data_dir` and returns its log store, state machine and
/// a read view of the dictionary.
pub fn open_store(data_dir: &Path) -> Result<(LogStore, StateMachine, DictionaryView)> {
    let (log_store, state_machine, view, _) = open_store_with_handle(data_dir)?;
    Ok((log_store, state_machine, view))
}

pub(crate) fn open_store_with_handle(
    data_dir: &Path,
) -> Result<(LogStore, StateMachine, DictionaryView, StoreHandle)> {
    std::fs::create_dir_all(data_dir).map_err(|source| ConsensusError::Io {
        action: "create data directory",
        path: data_dir.to_path_buf(),
        source,
    })?;
    let db = sled::Config::new()
        .path(data_dir.join("sled"))
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(|e| ConsensusError::store("open database", e))?;
    let tree = |name: &'static str| {
        db.open_tree(name)
            .map_err(|e| ConsensusError::store("open tree", e))
    };
    let inner = Arc::new(StoreInner {
        log: tree("raft_log")?,
        raft_meta: tree("raft_meta")?,
        dictionary: tree("dictionary")?,
        snapshot_path: data_dir.join("snapshot.current"),
        db,
    });
    let handle = StoreHandle(Arc::downgrade(&inner));
    let state_machine = StateMachine::open(Arc::clone(&inner))?;
    let view = DictionaryView::new(Arc::clone(&inner));
    Ok((LogStore::new(inner), state_machine, view, handle))
}
