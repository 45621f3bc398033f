//! Storage errors and what a client should make of them.

use std::path::PathBuf;

/// Everything that can go wrong in the storage shard.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("unknown table {table}")]
    UnknownTable { table: String },
    #[error("batch for table {table} does not match its schema: {reason}")]
    SchemaMismatch { table: String, reason: String },
    #[error("batch for table {table} has a null or non-timestamp `time` column")]
    BadTimeColumn { table: String },
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to encode or decode arrow data for table {table}: {source}")]
    Arrow {
        table: String,
        #[source]
        source: datafusion::arrow::error::ArrowError,
    },
    #[error("failed to write parquet segment {path}: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: datafusion::parquet::errors::ParquetError,
    },
    #[error("catalog operation {action} failed: {source}")]
    Catalog {
        action: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("catalog entry {key} is corrupt: {reason}")]
    CorruptCatalog { key: String, reason: String },
    #[error("write buffer is full ({buffered_bytes} bytes buffered, cap {cap_bytes}); retry later")]
    Backpressure {
        buffered_bytes: usize,
        cap_bytes: usize,
    },
    #[error("storage is shutting down")]
    ShuttingDown,
    #[error("invalid storage config: {0}")]
    Config(String),
}

impl StorageError {
    /// Whether the same request may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Backpressure { .. } | Self::Io { .. })
    }

    /// Whether the error was caused by the caller's input (maps to HTTP 4xx).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::UnknownTable { .. } | Self::SchemaMismatch { .. } | Self::BadTimeColumn { .. }
        )
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
