//! Storage shard behaviour through its public API and DataFusion.
#![allow(clippy::unwrap_used)]

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use datafusion::{
    arrow::{
        array::{Array, AsArray, Int64Array, StringArray, TimestampMicrosecondArray},
        datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType},
        record_batch::RecordBatch,
    },
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder,
    prelude::SessionContext,
};
use flowmesh_storage::{Shard, ShardTable, StorageConfig, StorageError, TableDef};

const HOUR_US: i64 = 3_600_000_000;

fn def() -> TableDef {
    TableDef {
        name: "t.events".into(),
        schema: Arc::new(Schema::new(vec![
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("service", DataType::Utf8, false),
            Field::new("value", DataType::Int64, false),
        ])),
        sort_columns: vec!["service".into()],
    }
}

fn batch(times: &[i64], service: &str, value: i64) -> RecordBatch {
    let d = def();
    RecordBatch::try_new(
        d.schema,
        vec![
            Arc::new(TimestampMicrosecondArray::from(times.to_vec()).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![service; times.len()])),
            Arc::new(Int64Array::from(vec![value; times.len()])),
        ],
    )
    .unwrap()
}

fn config(dir: &std::path::Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.to_path_buf(),
        ..StorageConfig::default()
    }
}

async fn query_i64(shard: &Arc<Shard>, sql: &str) -> Vec<i64> {
    let ctx = SessionContext::new();
    ctx.register_table(
        "events",
        Arc::new(ShardTable::new(Arc::clone(shard), def())),
    )
    .unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.unwrap_or(-1))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_rows_are_queryable_then_survive_flush_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let base = 1_700_000_000_000_000i64;
    {
        let shard = Arc::new(Shard::open(config(dir.path()), vec![def()]).unwrap());
        shard
            .append(vec![("t.events".into(), batch(&[base, base + 1], "a", 1))])
            .await
            .unwrap();
        shard
            .append(vec![("t.events".into(), batch(&[base + HOUR_US], "b", 10))])
            .await
            .unwrap();
        assert_eq!(
            query_i64(&shard, "SELECT sum(value) FROM events").await,
            vec![12]
        );
        shard.flush().await.unwrap();
        // one file per hour
        assert_eq!(shard.snapshot("t.events").segments.len(), 2);
        assert_eq!(shard.snapshot("t.events").buffered.len(), 0);
        shard
            .append(vec![("t.events".into(), batch(&[base + 2], "c", 100))])
            .await
            .unwrap();
        assert_eq!(
            query_i64(&shard, "SELECT sum(value) FROM events").await,
            vec![112]
        );
        assert_eq!(
            query_i64(&shard, "SELECT count(*) FROM events").await,
            vec![4]
        );
    }
    // reopen: flushed rows come from Parquet, the last append from the WAL, none twice
    let shard = Arc::new(Shard::open(config(dir.path()), vec![def()]).unwrap());
    assert_eq!(
        query_i64(&shard, "SELECT count(*) FROM events").await,
        vec![4]
    );
    assert_eq!(
        query_i64(&shard, "SELECT sum(value) FROM events").await,
        vec![112]
    );
    assert_eq!(
        shard
            .stats()
            .replayed_records
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let shard = Arc::new(Shard::open(config(dir.path()), vec![def()]).unwrap());
    let base = 1_700_000_000_000_000i64;
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let shard = Arc::clone(&shard);
        tasks.push(tokio::spawn(async move {
            shard
                .append(vec![("t.events".into(), batch(&[base + i], "s", 1))])
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let groups = shard
        .stats()
        .wal_groups
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(groups <= 200, "groups {groups}");
    drop(shard);
    let shard = Arc::new(Shard::open(config(dir.path()), vec![def()]).unwrap());
    assert_eq!(
        query_i64(&shard, "SELECT count(*) FROM events").await,
        vec![200]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_filters_prune_segments() {
    let dir = tempfile::tempdir().unwrap();
    let shard = Arc::new(Shard::open(config(dir.path()), vec![def()]).unwrap());
    let base = 1_700_000_000_000_000i64 / HOUR_US * HOUR_US;
    for h in 0..3 {
        shard
            .append(vec![(
                "t.events".into(),
                batch(&[base + h * HOUR_US + 5], "s", h + 1),
            )])
            .await
            .unwrap();
    }
    shard.flush().await.unwrap();
    let ctx = SessionContext::new();
    ctx.register_table(
        "events",
        Arc::new(ShardTable::new(Arc::clone(&shard), def())),
    )
    .unwrap();
    let lo = base + HOUR_US;
    let sql = format!("SELECT sum(value) FROM events WHERE time >= to_timestamp_micros({lo})");
    let df = ctx.sql(&format!("EXPLAIN {sql}")).await.unwrap();
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(&df.collect().await.unwrap())
        .unwrap()
        .to_string();
    let files = plan.matches(".parquet").count();
    assert_eq!(
        files, 2,
        "expected two of three segments in the plan:\n{plan}"
    );
    assert_eq!(query_i64(&shard, &sql).await, vec![5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_named_last_sorts_segments_by_tags_and_time_still_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let tags_first = TableDef {
        sort_columns: vec!["service".into(), "time".into()],
        ..def()
    };
    assert_eq!(
        tags_first.sort_key().collect::<Vec<_>>(),
        ["service", "time"]
    );
    assert!(!tags_first.time_first() && def().time_first());
    let shard = Arc::new(Shard::open(config(dir.path()), vec![tags_first.clone()]).unwrap());
    let base = 1_700_000_000_000_000i64 / HOUR_US * HOUR_US;
    // one append holding three hours, services interleaved and times out of order
    let mut batches = Vec::new();
    for h in 0..3 {
        let t = base + h * HOUR_US;
        batches.push(batch(&[t + 30, t + 10], "b", h + 1));
        batches.push(batch(&[t + 20], "a", 10 * (h + 1)));
    }
    let all = datafusion::arrow::compute::concat_batches(&def().schema, &batches).unwrap();
    shard.append(vec![("t.events".into(), all)]).await.unwrap();
    shard.flush().await.unwrap();

    let mut segments = shard.snapshot("t.events").segments;
    segments.sort_by_key(|m| m.hour);
    assert_eq!(segments.len(), 3, "one segment per hour");
    for (h, m) in (0..).zip(&segments) {
        let t = base + h * HOUR_US;
        // the extremes are not the first and last rows: min/max come from the whole file
        assert_eq!((m.min_time_us, m.max_time_us), (t + 10, t + 30));
        let file = std::fs::File::open(dir.path().join(&m.path)).unwrap();
        let rows: Vec<(String, i64)> = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .flat_map(|b| {
                let b = b.unwrap();
                let services = b.column(1).as_string::<i32>().clone();
                let times = b
                    .column(0)
                    .as_primitive::<TimestampMicrosecondType>()
                    .clone();
                (0..b.num_rows())
                    .map(|i| (services.value(i).to_string(), times.value(i) - t))
                    .collect::<Vec<_>>()
            })
            .collect();
        let expected = [("a", 20), ("b", 10), ("b", 30)].map(|(s, dt)| (s.to_string(), dt));
        assert_eq!(rows, expected, "hour {h}: sorted by service, then time");
    }

    let ctx = SessionContext::new();
    ctx.register_table(
        "events",
        Arc::new(ShardTable::new(Arc::clone(&shard), tags_first)),
    )
    .unwrap();
    let (lo, hi) = (base + HOUR_US + 15, base + 2 * HOUR_US);
    let sql = format!(
        "SELECT sum(value) FROM events WHERE time >= to_timestamp_micros({lo}) \
         AND time < to_timestamp_micros({hi})"
    );
    let plan = ctx.sql(&format!("EXPLAIN {sql}")).await.unwrap();
    let plan =
        datafusion::arrow::util::pretty::pretty_format_batches(&plan.collect().await.unwrap())
            .unwrap()
            .to_string();
    assert_eq!(
        plan.matches(".parquet").count(),
        1,
        "expected one of three segments in the plan:\n{plan}"
    );
    let result = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    // hour 1: "a" (20) at +20 and "b" (2) at +30; "b" at +10 is before `lo`
    assert_eq!(result[0].column(0).as_primitive::<Int64Type>().value(0), 22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_segments_and_compaction_merges_an_hour() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.retention
        .insert("t.events".into(), Duration::from_secs(3 * 3600));
    let shard = Arc::new(Shard::open(cfg, vec![def()]).unwrap());
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let old = now_us - 5 * HOUR_US;
    // the previous hour: closed (so compaction merges it) and 1–2 h old, within retention
    // whatever the minute now is
    let recent_hour = (now_us - HOUR_US) / HOUR_US * HOUR_US;
    shard
        .append(vec![("t.events".into(), batch(&[old], "old", 1))])
        .await
        .unwrap();
    shard.flush().await.unwrap();
    for i in 0..3 {
        shard
            .append(vec![(
                "t.events".into(),
                batch(&[recent_hour + i], "r", 10),
            )])
            .await
            .unwrap();
        shard.flush().await.unwrap();
    }
    assert_eq!(shard.snapshot("t.events").segments.len(), 4);
    assert_eq!(shard.enforce_retention(SystemTime::now()).unwrap(), 1);
    let merged = shard.compact(SystemTime::now()).await.unwrap();
    assert_eq!(merged, 3);
    let segs = shard.snapshot("t.events").segments;
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].rows, 3);
    assert_eq!(
        query_i64(&shard, "SELECT sum(value) FROM events").await,
        vec![30]
    );
    // files on disk match the catalog
    let parquet_files = walk(dir.path().join("segments"));
    assert_eq!(parquet_files, 1, "stale files left behind");
    drop(shard);
    let shard = Arc::new(Shard::open(config(dir.path()), vec![def()]).unwrap());
    assert_eq!(
        query_i64(&shard, "SELECT sum(value) FROM events").await,
        vec![30]
    );
}

fn walk(dir: std::path::PathBuf) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            n += walk(e.path());
        } else {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_appends_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let shard = Shard::open(config(dir.path()), vec![def()]).unwrap();
    let err = shard
        .append(vec![("nope".into(), batch(&[1], "a", 1))])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::UnknownTable { .. }), "{err}");
    let other = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .unwrap();
    let err = shard
        .append(vec![("t.events".into(), other)])
        .await
        .unwrap_err();
    assert!(err.is_client_error(), "{err}");
    assert!(err.to_string().contains("t.events"));
    assert_eq!(
        shard
            .snapshot("t.events")
            .buffered
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        0
    );
    let _ = std::any::type_name::<dyn Array>();
}
