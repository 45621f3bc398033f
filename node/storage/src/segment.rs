//! Writing buffered rows as Parquet segments: one file set per (table, hour), sorted by
//! the table's sort key (time then tag columns, or tags then time, see
//! [`TableDef::sort_columns`]), ZSTD-compressed, with page statistics for pruning.

use std::{fs::File, path::Path, sync::Arc};

use datafusion::{
    arrow::{
        array::{Array, ArrayRef, Int64Array, TimestampMicrosecondArray, UInt32Array},
        compute::{concat_batches, max, min, take_record_batch},
        error::ArrowError,
        record_batch::RecordBatch,
        row::{RowConverter, Rows, SortField},
    },
    parquet::{
        arrow::ArrowWriter,
        basic::{Compression, Encoding, ZstdLevel},
        file::{
            metadata::SortingColumn,
            properties::{EnabledStatistics, WriterProperties},
        },
        schema::types::ColumnPath,
    },
};

use crate::{
    TableDef,
    catalog::SegmentMeta,
    error::{Result, StorageError},
    wal::sync_dir,
};

const MICROS_PER_HOUR: i64 = 3_600_000_000;

/// The `time` column of a batch of a [`TableDef`].
pub fn time_column<'a>(
    def: &TableDef,
    batch: &'a RecordBatch,
) -> Result<&'a TimestampMicrosecondArray> {
    let bad = || StorageError::BadTimeColumn {
        table: def.name.clone(),
    };
    let col = batch.column_by_name("time").ok_or_else(bad)?;
    let times = col
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(bad)?;
    if times.null_count() > 0 {
        return Err(bad());
    }
    Ok(times)
}

/// Sorts `batches` of one table and writes one Parquet file per hour into `data_dir`.
/// `file_stem` makes names unique (the flush sequence). Files are fsynced, renamed into
/// place and their directories fsynced before this returns.
pub fn write_segments(
    data_dir: &Path,
    def: &TableDef,
    batches: &[RecordBatch],
    file_stem: &str,
) -> Result<Vec<SegmentMeta>> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(Vec::new());
    }
    let arrow_err = |source| StorageError::Arrow {
        table: def.name.clone(),
        source,
    };
    let all = concat_batches(&def.schema, batches).map_err(arrow_err)?;
    let mut sort_columns: Vec<ArrayRef> = Vec::new();
    if !def.time_first() {
        // the hour goes first, so that each hour's rows are contiguous whatever the key
        let times = time_column(def, &all)?;
        let hours: Int64Array = times.unary(|t| t.div_euclid(MICROS_PER_HOUR));
        if min(&hours) != max(&hours) {
            sort_columns.push(Arc::new(hours));
        }
    }
    sort_columns.extend(
        def.sort_key()
            .filter_map(|name| all.column_by_name(name))
            .cloned(),
    );
    let indices = sort_indices(&sort_columns).map_err(arrow_err)?;
    let sorted = take_record_batch(&all, &indices).map_err(arrow_err)?;
    let times = time_column(def, &sorted)?;

    let mut out = Vec::new();
    let mut start = 0usize;
    while start < sorted.num_rows() {
        let hour = times.value(start).div_euclid(MICROS_PER_HOUR);
        let mut end = start + 1;
        while end < sorted.num_rows() && times.value(end).div_euclid(MICROS_PER_HOUR) == hour {
            end += 1;
        }
        let slice = sorted.slice(start, end - start);
        // the first and last rows hold the extremes only when time sorts first
        let slice_times = times.slice(start, end - start);
        let (min_time_us, max_time_us) = match (min(&slice_times), max(&slice_times)) {
            (Some(lo), Some(hi)) => (lo, hi),
            _ => (times.value(start), times.value(end - 1)),
        };
        out.push(write_one(
            data_dir,
            def,
            &slice,
            hour,
            file_stem,
            min_time_us,
            max_time_us,
        )?);
        start = end;
    }
    Ok(out)
}

/// The permutation that sorts rows by `columns` (ascending, nulls first). The columns are
/// converted once to the row format, whose bytes compare in the columns' order. Keys of
/// fixed width (the usual case: tag ids and times) are then sorted as arrays of big-endian
/// words, directly rather than through indices, which is several times faster than a
/// dynamic comparison per column (lexsort_to_indices) or a `memcmp` per comparison; that
/// sort had been the largest part of a flush with several tag columns in the key.
fn sort_indices(columns: &[ArrayRef]) -> std::result::Result<UInt32Array, ArrowError> {
    let fields = columns
        .iter()
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    let rows = RowConverter::new(fields)?.convert_columns(columns)?;
    let n = rows.num_rows();
    let width = if n == 0 {
        0
    } else {
        rows.row(0).as_ref().len()
    };
    let fixed = (0..n).all(|i| rows.row(i).as_ref().len() == width);
    let indices = match (fixed, width.div_ceil(8)) {
        (true, 1) => sort_words::<1>(&rows),
        (true, 2) => sort_words::<2>(&rows),
        (true, 3) => sort_words::<3>(&rows),
        (true, 4) => sort_words::<4>(&rows),
        (true, 5) => sort_words::<5>(&rows),
        (true, 6) => sort_words::<6>(&rows),
        _ => {
            let mut indices: Vec<u32> = (0..n as u32).collect();
            indices.sort_unstable_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
            indices
        }
    };
    Ok(UInt32Array::from(indices))
}

/// Sorts rows of at most `W` × 8 bytes, each read as `W` big-endian words (zero-padded),
/// which compare as the bytes do.
fn sort_words<const W: usize>(rows: &Rows) -> Vec<u32> {
    let mut keys: Vec<([u64; W], u32)> = (0..rows.num_rows())
        .map(|i| {
            let mut words = [0u64; W];
            for (word, chunk) in words.iter_mut().zip(rows.row(i).as_ref().chunks(8)) {
                let mut bytes = [0u8; 8];
                bytes[..chunk.len()].copy_from_slice(chunk);
                *word = u64::from_be_bytes(bytes);
            }
            (words, i as u32)
        })
        .collect();
    keys.sort_unstable();
    keys.into_iter().map(|(_, i)| i).collect()
}

fn write_one(
    data_dir: &Path,
    def: &TableDef,
    batch: &RecordBatch,
    hour: i64,
    file_stem: &str,
    min_time_us: i64,
    max_time_us: i64,
) -> Result<SegmentMeta> {
    let rel_dir = format!("segments/{}/{hour}", def.name);
    let dir = data_dir.join(&rel_dir);
    std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("create segment dir", &dir, e))?;
    let rel_path = format!("{rel_dir}/{file_stem}.parquet");
    let path = data_dir.join(&rel_path);
    let tmp = dir.join(format!("{file_stem}.parquet.tmp"));

    let sorting: Vec<SortingColumn> = def
        .sort_key()
        .filter_map(|name| def.schema.index_of(name).ok())
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: true,
        })
        .collect();
    let zstd = ZstdLevel::try_new(3).map_err(|source| StorageError::Parquet {
        path: path.clone(),
        source,
    })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(sorting))
        .set_max_row_group_row_count(Some(256 * 1024))
        // `time` is nearly unique: a dictionary only costs CPU and space before the writer
        // falls back, while deltas between neighbours (sorted, or sorted within tag runs)
        // are small
        .set_column_dictionary_enabled(ColumnPath::from("time"), false)
        .set_column_encoding(ColumnPath::from("time"), Encoding::DELTA_BINARY_PACKED)
        .build();
    let file = File::create(&tmp).map_err(|e| StorageError::io("create segment", &tmp, e))?;
    let parquet_err = |source| StorageError::Parquet {
        path: path.clone(),
        source,
    };
    let mut writer =
        ArrowWriter::try_new(file, Arc::clone(&def.schema), Some(props)).map_err(parquet_err)?;
    writer.write(batch).map_err(parquet_err)?;
    let file = writer.into_inner().map_err(parquet_err)?;
    file.sync_all()
        .map_err(|e| StorageError::io("fsync segment", &tmp, e))?;
    let bytes = file
        .metadata()
        .map_err(|e| StorageError::io("stat segment", &tmp, e))?
        .len();
    std::fs::rename(&tmp, &path).map_err(|e| StorageError::io("rename segment", &path, e))?;
    sync_dir(&dir)?;
    Ok(SegmentMeta {
        table: def.name.clone(),
        path: rel_path,
        hour,
        rows: batch.num_rows() as u64,
        bytes,
        min_time_us,
        max_time_us,
    })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::{
        array::{StringArray, UInt32Array},
        compute::{SortColumn, lexsort_to_indices, take},
    };

    use super::*;

    /// Pseudo-random values in 0..modulo (few distinct, so that keys tie often).
    fn values(n: usize, seed: u64, modulo: u64) -> Vec<u64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) % modulo
            })
            .collect()
    }

    fn ids(n: usize, seed: u64, modulo: u64, with_nulls: bool) -> ArrayRef {
        Arc::new(
            values(n, seed, modulo)
                .into_iter()
                .map(|v| (!with_nulls || v != 0).then_some(v as u32))
                .collect::<UInt32Array>(),
        )
    }

    fn int64s(n: usize, seed: u64, modulo: u64) -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            values(n, seed, modulo).into_iter().map(|v| v as i64 - 3),
        ))
    }

    /// Our permutation orders the keys exactly as lexsort_to_indices does (ties may differ
    /// in order, but then the keys are equal).
    fn assert_sorts_like_lexsort(columns: &[ArrayRef]) {
        let ours = sort_indices(columns).unwrap();
        let reference = lexsort_to_indices(
            &columns
                .iter()
                .map(|c| SortColumn {
                    values: Arc::clone(c),
                    options: None,
                })
                .collect::<Vec<_>>(),
            None,
        )
        .unwrap();
        for column in columns {
            assert_eq!(
                take(column, &ours, None).unwrap().to_data(),
                take(column, &reference, None).unwrap().to_data(),
                "{:?}",
                column.data_type()
            );
        }
        let mut seen: Vec<u32> = ours.values().to_vec();
        seen.sort_unstable();
        assert_eq!(seen, (0..columns[0].len() as u32).collect::<Vec<_>>());
    }

    #[test]
    fn sort_indices_orders_like_lexsort() {
        let n = 2000;
        // fixed width, one word: a tag id with nulls
        assert_sorts_like_lexsort(&[ids(n, 1, 7, true)]);
        // fixed width, several words: hour, tag ids (nulls first), then negative times
        let mut key = vec![int64s(n, 2, 2)];
        key.extend((0..5).map(|i| ids(n, 10 + i, 3 + i, i % 2 == 0)));
        key.push(int64s(n, 3, 1000));
        assert_sorts_like_lexsort(&key);
        // wider than the word sort handles
        assert_sorts_like_lexsort(&(0..8).map(|i| int64s(n, 20 + i, 3)).collect::<Vec<_>>());
        // variable width
        let strings: ArrayRef = Arc::new(StringArray::from_iter_values(
            values(n, 4, 50)
                .into_iter()
                .map(|v| "x".repeat(v as usize % 9)),
        ));
        assert_sorts_like_lexsort(&[strings, ids(n, 5, 4, false)]);
        assert_sorts_like_lexsort(&[ids(0, 6, 4, false)]);
    }
}
