//! The shard's catalog on sled: which Parquet segments exist and how far the WAL has been
//! flushed. Both change in one atomic sled batch, so a crash never leaves a segment counted
//! twice (once in Parquet, once replayed from the WAL).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};

const FLUSHED_SEQ_KEY: &[u8] = b"meta/flushed_seq";
const SEGMENT_PREFIX: &str = "seg/";

/// One Parquet file of one table and one hour.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentMeta {
    pub table: String,
    /// Path relative to the data directory.
    pub path: String,
    /// Hours since the Unix epoch that this segment's rows fall into.
    pub hour: i64,
    pub rows: u64,
    pub bytes: u64,
    pub min_time_us: i64,
    pub max_time_us: i64,
}

impl SegmentMeta {
    fn key(&self) -> String {
        format!("{SEGMENT_PREFIX}{}/{}", self.table, self.path)
    }
}

/// Handle on the sled catalog.
#[derive(Clone)]
pub struct Catalog {
    db: sled::Db,
}

fn catalog_err(action: &'static str) -> impl FnOnce(sled::Error) -> StorageError {
    move |source| StorageError::Catalog { action, source }
}

impl Catalog {
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(catalog_err("open"))?;
        Ok(Self { db })
    }

    /// The highest WAL sequence number whose rows are in Parquet.
    pub fn flushed_seq(&self) -> Result<u64> {
        match self
            .db
            .get(FLUSHED_SEQ_KEY)
            .map_err(catalog_err("read flushed_seq"))?
        {
            None => Ok(0),
            Some(v) => {
                let bytes: [u8; 8] =
                    v.as_ref()
                        .try_into()
                        .map_err(|_| StorageError::CorruptCatalog {
                            key: "meta/flushed_seq".into(),
                            reason: format!("{} bytes instead of 8", v.len()),
                        })?;
                Ok(u64::from_be_bytes(bytes))
            }
        }
    }

    pub fn segments(&self) -> Result<Vec<SegmentMeta>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(SEGMENT_PREFIX) {
            let (k, v) = item.map_err(catalog_err("scan segments"))?;
            let meta: SegmentMeta =
                serde_json::from_slice(&v).map_err(|e| StorageError::CorruptCatalog {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: e.to_string(),
                })?;
            out.push(meta);
        }
        Ok(out)
    }

    /// Atomically adds `added`, removes `removed` and (if given) advances the flushed
    /// sequence; durable when this returns.
    pub fn commit(
        &self,
        added: &[SegmentMeta],
        removed: &[SegmentMeta],
        flushed_seq: Option<u64>,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for m in added {
            let value = serde_json::to_vec(m).map_err(|e| StorageError::CorruptCatalog {
                key: m.key(),
                reason: e.to_string(),
            })?;
            batch.insert(m.key().as_bytes(), value);
        }
        for m in removed {
            batch.remove(m.key().as_bytes());
        }
        if let Some(seq) = flushed_seq {
            batch.insert(FLUSHED_SEQ_KEY, &seq.to_be_bytes());
        }
        self.db
            .apply_batch(batch)
            .map_err(catalog_err("apply batch"))?;
        self.db.flush().map_err(catalog_err("flush"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let meta = SegmentMeta {
            table: "t".into(),
            path: "segments/t/1/a.parquet".into(),
            hour: 1,
            rows: 2,
            bytes: 3,
            min_time_us: 4,
            max_time_us: 5,
        };
        {
            let c = Catalog::open(dir.path()).unwrap();
            c.commit(std::slice::from_ref(&meta), &[], Some(7)).unwrap();
            assert_eq!(c.flushed_seq().unwrap(), 7);
        }
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(c.flushed_seq().unwrap(), 7);
        assert_eq!(c.segments().unwrap(), vec![meta.clone()]);
        c.commit(&[], std::slice::from_ref(&meta), None).unwrap();
        assert!(c.segments().unwrap().is_empty());
    }
}
