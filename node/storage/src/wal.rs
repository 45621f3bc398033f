//! The write-ahead log: length- and CRC-framed records in numbered segment files.
//!
//! A record is `[len: u32 LE][crc32 of body: u32 LE][body]`, the body
//! `[seq: u64 LE][table name len: u16 LE][table name][Arrow IPC stream]`. Records are written
//! by one thread ([`WalWriter`]) and made durable with one `fdatasync` per group. On open, a
//! torn or corrupt tail of the last segment (an append that was never acknowledged) is cut
//! off; corruption anywhere else is reported and the rest of that segment skipped.

use std::{
    fs::{File, OpenOptions},
    io::{BufReader, Read, Write},
    path::{Path, PathBuf},
};

use datafusion::arrow::{
    ipc::{reader::StreamReader, writer::StreamWriter},
    record_batch::RecordBatch,
};
use tracing::warn;

use crate::error::{Result, StorageError};

const HEADER_LEN: usize = 8;
/// Refuse to read a record claiming more than this (a corrupt length).
const MAX_RECORD_LEN: u32 = 1 << 30;

/// One decoded WAL record.
#[derive(Debug)]
pub struct WalRecord {
    pub seq: u64,
    pub table: String,
    pub batch: RecordBatch,
}

/// What replay found besides records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    pub records: u64,
    pub torn_tail_bytes: u64,
    pub corrupt_segments: u64,
}

/// Encodes a batch as the body of a record.
pub fn encode_record(seq: u64, table: &str, batch: &RecordBatch) -> Result<Vec<u8>> {
    let name = table.as_bytes();
    let mut body = Vec::with_capacity(16 + name.len() + batch.get_array_memory_size());
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(&(name.len() as u16).to_le_bytes());
    body.extend_from_slice(name);
    let arrow_err = |source| StorageError::Arrow {
        table: table.to_string(),
        source,
    };
    let mut writer = StreamWriter::try_new(&mut body, &batch.schema()).map_err(arrow_err)?;
    writer.write(batch).map_err(arrow_err)?;
    writer.finish().map_err(arrow_err)?;
    drop(writer);
    let mut framed = Vec::with_capacity(HEADER_LEN + body.len());
    framed.extend_from_slice(&(body.len() as u32).to_le_bytes());
    framed.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    framed.extend_from_slice(&body);
    Ok(framed)
}

fn decode_body(body: &[u8]) -> std::result::Result<WalRecord, String> {
    if body.len() < 10 {
        return Err("record shorter than its header".into());
    }
    let seq = u64::from_le_bytes(body[0..8].try_into().map_err(|_| "bad seq")?);
    let name_len =
        u16::from_le_bytes(body[8..10].try_into().map_err(|_| "bad name length")?) as usize;
    let name = body
        .get(10..10 + name_len)
        .ok_or("table name past end of record")?;
    let table = std::str::from_utf8(name)
        .map_err(|_| "table name is not utf-8")?
        .to_string();
    let ipc = &body[10 + name_len..];
    let mut reader = StreamReader::try_new(ipc, None).map_err(|e| format!("arrow ipc: {e}"))?;
    let batch = reader
        .next()
        .ok_or("record holds no batch")?
        .map_err(|e| format!("arrow ipc: {e}"))?;
    Ok(WalRecord { seq, table, batch })
}

/// Segment files in `dir`, ordered by the first sequence number they hold.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("list wal dir", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list wal dir", dir, e))?;
        let path = entry.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
        else {
            continue;
        };
        if let Ok(first_seq) = stem.parse::<u64>() {
            out.push((first_seq, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every record of every segment in order, calling `on_record` for each. A torn tail
/// of the last segment is truncated away so new writes never follow garbage.
pub fn replay(dir: &Path, mut on_record: impl FnMut(WalRecord)) -> Result<ReplayReport> {
    let segments = list_segments(dir)?;
    let mut report = ReplayReport::default();
    let last = segments.len().saturating_sub(1);
    for (i, (_, path)) in segments.iter().enumerate() {
        let file = File::open(path).map_err(|e| StorageError::io("open wal segment", path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| StorageError::io("stat wal segment", path, e))?
            .len();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut offset: u64 = 0;
        let mut header = [0u8; HEADER_LEN];
        let bad = loop {
            match read_full(&mut reader, &mut header) {
                Ok(0) => break None,
                Ok(n) if n < HEADER_LEN => break Some("partial record header".to_string()),
                Ok(_) => {}
                Err(e) => return Err(StorageError::io("read wal segment", path, e)),
            }
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if len > MAX_RECORD_LEN || offset + HEADER_LEN as u64 + len as u64 > file_len {
                break Some(format!("record length {len} runs past the end"));
            }
            let mut body = vec![0u8; len as usize];
            match read_full(&mut reader, &mut body) {
                Ok(n) if n == body.len() => {}
                Ok(_) => break Some("partial record body".to_string()),
                Err(e) => return Err(StorageError::io("read wal segment", path, e)),
            }
            if crc32fast::hash(&body) != crc {
                break Some("crc mismatch".to_string());
            }
            match decode_body(&body) {
                Ok(record) => {
                    report.records += 1;
                    on_record(record);
                }
                Err(reason) => break Some(reason),
            }
            offset += HEADER_LEN as u64 + len as u64;
        };
        if let Some(reason) = bad {
            if i == last {
                warn!(path = %path.display(), offset, %reason, "truncating torn wal tail");
                report.torn_tail_bytes += file_len - offset;
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| StorageError::io("open wal segment", path, e))?;
                file.set_len(offset)
                    .map_err(|e| StorageError::io("truncate wal segment", path, e))?;
                file.sync_all()
                    .map_err(|e| StorageError::io("sync wal segment", path, e))?;
            } else {
                warn!(path = %path.display(), offset, %reason, "corrupt record in wal segment; rest skipped");
                report.corrupt_segments += 1;
            }
        }
    }
    Ok(report)
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Appends framed records to the current segment and rolls segments by size.
pub struct WalWriter {
    dir: PathBuf,
    segment_bytes: u64,
    file: File,
    path: PathBuf,
    written: u64,
}

impl WalWriter {
    /// Starts a new segment whose name is `next_seq`, the first sequence it will hold.
    pub fn create(dir: &Path, next_seq: u64, segment_bytes: u64) -> Result<Self> {
        let (file, path) = Self::new_segment(dir, next_seq)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            segment_bytes,
            file,
            path,
            written: 0,
        })
    }

    fn new_segment(dir: &Path, first_seq: u64) -> Result<(File, PathBuf)> {
        let path = dir.join(format!("{first_seq:020}.wal"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StorageError::io("create wal segment", &path, e))?;
        sync_dir(dir)?;
        Ok((file, path))
    }

    /// Makes the next group start a new segment, so that whatever a failed write left
    /// behind stays at the tail of a segment that nothing follows.
    pub fn force_new_segment(&mut self) {
        self.written = self.segment_bytes;
    }

    /// Writes already-framed records and makes them durable. `first_seq` is the sequence of
    /// the first record, used to name a new segment when this group starts one.
    pub fn append_group(&mut self, first_seq: u64, records: &[Vec<u8>]) -> Result<()> {
        if self.written >= self.segment_bytes {
            let (file, path) = Self::new_segment(&self.dir, first_seq)?;
            self.file = file;
            self.path = path;
            self.written = 0;
        }
        let total: usize = records.iter().map(Vec::len).sum();
        let mut buf = Vec::with_capacity(total);
        for r in records {
            buf.extend_from_slice(r);
        }
        self.file
            .write_all(&buf)
            .map_err(|e| StorageError::io("append to wal segment", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| StorageError::io("fsync wal segment", &self.path, e))?;
        self.written += total as u64;
        Ok(())
    }
}

/// Makes a directory's entries (new or renamed files) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::{
        array::{Int64Array, StringArray},
        datatypes::{DataType, Field, Schema},
    };

    use super::*;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![n, n + 1])),
                Arc::new(StringArray::from(vec!["a", "b"])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn records_round_trip_and_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1, 1 << 20).unwrap();
        let recs: Vec<_> = (1..=3)
            .map(|s| encode_record(s, "t.x", &batch(s as i64)).unwrap())
            .collect();
        w.append_group(1, &recs).unwrap();
        // a half-written fourth record, as a crash mid-append leaves it
        let torn = encode_record(4, "t.x", &batch(4)).unwrap();
        w.append_group(4, &[torn[..torn.len() / 2].to_vec()])
            .unwrap();
        drop(w);

        let mut seen = Vec::new();
        let report = replay(dir.path(), |r| seen.push((r.seq, r.table, r.batch))).unwrap();
        assert_eq!(report.records, 3);
        assert!(report.torn_tail_bytes > 0);
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(seen[2].2, batch(3));
        assert_eq!(seen[0].1, "t.x");

        // after truncation the segment replays cleanly and can be appended to
        let report = replay(dir.path(), |_| {}).unwrap();
        assert_eq!(
            report,
            ReplayReport {
                records: 3,
                torn_tail_bytes: 0,
                corrupt_segments: 0
            }
        );
    }

    #[test]
    fn crc_mismatch_in_the_middle_stops_that_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1, 1 << 20).unwrap();
        let recs: Vec<_> = (1..=3)
            .map(|s| encode_record(s, "t", &batch(s as i64)).unwrap())
            .collect();
        w.append_group(1, &recs).unwrap();
        drop(w);
        let path = &list_segments(dir.path()).unwrap()[0].1;
        let mut bytes = std::fs::read(path).unwrap();
        let second = recs[0].len() + HEADER_LEN + 3;
        bytes[second] ^= 0xff;
        std::fs::write(path, &bytes).unwrap();
        let mut seqs = Vec::new();
        replay(dir.path(), |r| seqs.push(r.seq)).unwrap();
        assert_eq!(seqs, vec![1]);
    }

    #[test]
    fn segments_roll_by_size_and_list_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(dir.path(), 1, 4096).unwrap();
        for s in 1..=20u64 {
            let r = encode_record(s, "t", &batch(s as i64)).unwrap();
            w.append_group(s, &[r]).unwrap();
        }
        let segs = list_segments(dir.path()).unwrap();
        assert!(
            segs.len() > 1,
            "expected several segments, got {}",
            segs.len()
        );
        assert_eq!(segs[0].0, 1);
        let mut seqs = Vec::new();
        replay(dir.path(), |r| seqs.push(r.seq)).unwrap();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    }
}
