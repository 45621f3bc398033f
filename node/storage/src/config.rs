//! Storage configuration.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::error::StorageError;

/// How the shard stores data. Every field has a default; see
/// `deploy/config/flowmesh.example.toml` for the documented keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory holding the WAL, Parquet segments and the catalog.
    pub data_dir: PathBuf,
    /// Longest an append waits for others to share its fsync (group commit).
    #[serde(with = "humantime_serde")]
    pub group_commit_delay: Duration,
    /// A WAL file is closed and a new one started past this size.
    pub wal_segment_bytes: u64,
    /// Buffered rows are written to Parquet at least this often.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// ...or as soon as the write buffer holds this many bytes.
    pub flush_threshold_bytes: usize,
    /// Appends are refused (retryable) while the write buffer holds more than this.
    pub buffer_cap_bytes: usize,
    /// Rows older than this are deleted, per table, unless overridden in `retention`.
    #[serde(with = "humantime_serde")]
    pub default_retention: Duration,
    /// Per-table retention, e.g. `"flow_log.l7_flow_log" = "3d"`.
    #[serde(with = "retention_map")]
    pub retention: BTreeMap<String, Duration>,
    /// How often retention and compaction run.
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/flowmesh"),
            group_commit_delay: Duration::from_millis(2),
            wal_segment_bytes: 64 << 20,
            flush_interval: Duration::from_secs(300),
            flush_threshold_bytes: 64 << 20,
            buffer_cap_bytes: 512 << 20,
            default_retention: Duration::from_secs(7 * 24 * 3600),
            retention: BTreeMap::new(),
            maintenance_interval: Duration::from_secs(60),
        }
    }
}

impl StorageConfig {
    /// Checks the values that parsing cannot.
    pub fn validate(&self) -> Result<(), StorageError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(StorageError::Config("data_dir must not be empty".into()));
        }
        if self.flush_threshold_bytes > self.buffer_cap_bytes {
            return Err(StorageError::Config(format!(
                "flush_threshold_bytes ({}) must not exceed buffer_cap_bytes ({})",
                self.flush_threshold_bytes, self.buffer_cap_bytes
            )));
        }
        if self.wal_segment_bytes < 4096 {
            return Err(StorageError::Config(
                "wal_segment_bytes must be at least 4096".into(),
            ));
        }
        if self.flush_interval.is_zero() || self.maintenance_interval.is_zero() {
            return Err(StorageError::Config(
                "flush_interval and maintenance_interval must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Retention for one table.
    pub fn retention_for(&self, table: &str) -> Duration {
        self.retention
            .get(table)
            .copied()
            .unwrap_or(self.default_retention)
    }
}

mod retention_map {
    use std::{collections::BTreeMap, time::Duration};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let text: BTreeMap<&str, String> = map
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    humantime_serde::re::humantime::format_duration(*v).to_string(),
                )
            })
            .collect();
        text.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        let text = BTreeMap::<String, String>::deserialize(d)?;
        text.into_iter()
            .map(|(k, v)| {
                humantime_serde::re::humantime::parse_duration(&v)
                    .map(|d| (k.clone(), d))
                    .map_err(|e| serde::de::Error::custom(format!("retention for {k}: {e}")))
            })
            .collect()
    }
}
