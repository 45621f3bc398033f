//! Writing buffered rows as Parquet segments: one file set per (table, hour), sorted by
//! time then tag columns, ZSTD-compressed, with page statistics for pruning.

use std::{fs::File, path::Path, sync::Arc};

use datafusion::{
    arrow::{
        array::{Array, TimestampMicrosecondArray},
        compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch},
        record_batch::RecordBatch,
    },
    parquet::{
        arrow::ArrowWriter,
        basic::{Compression, ZstdLevel},
        file::{
            metadata::SortingColumn,
            properties::{EnabledStatistics, WriterProperties},
        },
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
    let sort_columns: Vec<SortColumn> = def
        .sort_key()
        .filter_map(|name| all.column_by_name(name))
        .map(|values| SortColumn {
            values: Arc::clone(values),
            options: None,
        })
        .collect();
    let indices = lexsort_to_indices(&sort_columns, None).map_err(arrow_err)?;
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
        out.push(write_one(
            data_dir,
            def,
            &slice,
            hour,
            file_stem,
            times.value(start),
            times.value(end - 1),
        )?);
        start = end;
    }
    Ok(out)
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
