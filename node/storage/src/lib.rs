//! flowmesh-storage: the node's shard of every table.
//!
//! Write path: [`Shard::append`] → WAL record (CRC-framed Arrow IPC), fsynced by one group
//! commit thread before the ack → in-memory Arrow buffers, visible to queries at once →
//! [`Shard::flush`] writes Parquet segments per (table, hour), sorted by time then tag
//! columns (or tags then time, per table: [`TableDef::sort_columns`]), ZSTD, page
//! statistics → the sled [`catalog::Catalog`] records them together with
//! the flushed WAL sequence, and wholly flushed WAL files are deleted.
//!
//! Read path: [`ShardTable`] is a DataFusion `TableProvider` that scans the buffers plus the
//! segments whose time range overlaps the query's `time` filters, with row-group pruning.
//!
//! Invariants: an acknowledged append survives `kill -9`; a row is in exactly one place
//! (buffers, frozen buffers or one segment); retention and compaction change the catalog
//! atomically before they touch files.

pub mod catalog;
mod config;
mod error;
mod provider;
pub mod segment;
mod shard;
pub mod wal;

use datafusion::arrow::datatypes::SchemaRef;

pub use config::StorageConfig;
pub use error::{Result, StorageError};
pub use provider::{ShardTable, TimeRange};
pub use shard::{Shard, StorageStats, TableSnapshot, now_micros};

/// A table the shard stores. Its schema must have a non-null `time` column of type
/// `Timestamp(Microsecond, _)`.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// Qualified name, `schema.table` (e.g. `flow_log.l7_flow_log`).
    pub name: String,
    pub schema: SchemaRef,
    /// Columns rows are sorted by in segments (low-cardinality tags first), after `time`
    /// unless `time` is named here: then it sorts where it is named, e.g. last, which keeps
    /// runs of equal tags long across the whole hour (better compression, slower time
    /// pruning inside a segment). Either way a segment holds one hour and its min/max time
    /// prunes scans.
    pub sort_columns: Vec<String>,
}

impl TableDef {
    /// The segment sort key: `time` followed by the table's sort columns, or the sort
    /// columns alone when they name `time`.
    pub fn sort_key(&self) -> impl Iterator<Item = &str> {
        let time_first = (!self.sort_columns.iter().any(|c| c == "time")).then_some("time");
        time_first
            .into_iter()
            .chain(self.sort_columns.iter().map(String::as_str))
    }

    /// Whether segments are sorted by `time` first.
    pub fn time_first(&self) -> bool {
        self.sort_key().next() == Some("time")
    }
}
