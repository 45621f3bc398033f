//! The flowmesh side of the SmartEncoding storage benchmark (bench/smartencoding.sh): loads an
//! l7_flow_log Parquet file from bench/smartencoding/generate.py through a node's write path
//! and prints one JSON object on stdout (the contract of bench/smartencoding/report.py);
//! progress goes to stderr.
//!
//! Usage: `cargo run --release -p flowmesh-node --example smartencoding_load --
//!         --input FILE --data-dir DIR [--sort-columns l7_protocol,pod_1,endpoint,time]`
//! (`--help` for the rest).
//!
//! The write path is the node's: a single-node tag dictionary (Raft on sled) and the
//! [`TagEncoder`] turn tag strings into u32 ids, [`Shard::append`] writes the WAL (fsync before
//! the ack) and buffers, `flush_if_due` after every append flushes at the node's threshold
//! (64 MB of buffers) and a last [`Shard::flush`] writes the rest. Then [`Shard::compact`]
//! merges the hour into one segment, as chDB's `OPTIMIZE TABLE … FINAL` merges its parts.
//!
//! Meta tags, not copies: a row stores ids only for what identifies it (node, signal_source,
//! observation_point, l7_protocol, request_type, request_domain, endpoint, response_status,
//! pod_0, pod_1) besides its numbers. What follows from a pod (auto_service, pod_ns, pod_node,
//! ip, process_kname, process_id) is stored once per pod in `resource.pod`, and what follows
//! from a node (cluster, region) once per node in `resource.node`, built from the first row
//! naming each; every row is checked against them and disagreements are counted
//! (`mismatches`). A process follows from its pod only where the row has process information
//! (`signal_source = 'ebpf'`); `packet` rows must carry none (PID 0, empty name). Namespaces
//! and IPs have no well-known dictionary kind: they use `TagKind::custom(1)` (`kind-1025`) and
//! `TagKind::custom(2)` (`kind-1026`).
//!
//! Measured:
//! - `insert_cpu_s`: getrusage(RUSAGE_SELF) user + system, all threads (dictionary, WAL, flush),
//!   from before the Parquet file is opened until the last flush has finished; dictionary
//!   start-up is outside. The load is sequential, so the process CPU spent in each step is
//!   reported too (`insert_cpu_breakdown_s`), `flush_cpu_s` among them.
//! - `optimize_cpu_s`: the compaction that follows.
//! - Bytes, from the footers of the segments in the catalog after compaction: `tag_bytes` sums
//!   the compressed column chunks of the tag columns plus the whole resource table files,
//!   `row_bytes` the whole segment files plus the resource files. `after_flush` has the same
//!   before compaction. `disk_bytes` is what the storage directory holds (segments, the WAL
//!   segment still open, the catalog); the dictionary's directory is reported apart
//!   (`dictionary`), as it is shared by a region and not part of a table.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use datafusion::{
    arrow::{
        array::{Array, ArrayRef, AsArray, StringArray, TimestampMicrosecondArray, UInt32Array},
        datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit, UInt32Type},
        record_batch::RecordBatch,
    },
    parquet::{
        arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder},
        file::reader::{FileReader, SerializedFileReader},
    },
};
use flowmesh_consensus::{ConsensusConfig, DictionaryClient, TagKind};
use flowmesh_node::dictionary::{Dictionary, TagEncoder};
use flowmesh_query_planner::tags::{tag_field, tag_kind};
use flowmesh_storage::{Shard, StorageConfig, TableDef};
use serde_json::{Value, json};

const L7: &str = "flow_log.l7_flow_log";
const POD: &str = "resource.pod";
const NODE: &str = "resource.node";
/// Dictionary kinds without a well-known number.
const NAMESPACE: TagKind = TagKind::custom(1);
const IP: TagKind = TagKind::custom(2);

/// The l7_flow_log columns stored per row, in order: numbers, then tag ids with their kind.
const L7_NUMBERS: [(&str, DataType, bool); 8] = [
    ("response_duration", DataType::UInt64, false),
    ("request_length", DataType::UInt64, false),
    ("response_length", DataType::UInt64, false),
    ("response_code", DataType::Int32, true),
    ("client_port", DataType::UInt16, false),
    ("server_port", DataType::UInt16, false),
    ("process_id_0", DataType::UInt32, false),
    ("process_id_1", DataType::UInt32, false),
];
const L7_TAGS: [(&str, TagKind); 10] = [
    ("node", TagKind::NODE),
    ("signal_source", TagKind::SIGNAL_SOURCE),
    ("observation_point", TagKind::OBSERVATION_POINT),
    ("l7_protocol", TagKind::L7_PROTOCOL),
    ("request_type", TagKind::REQUEST_TYPE),
    ("request_domain", TagKind::REQUEST_DOMAIN),
    ("endpoint", TagKind::ENDPOINT),
    ("response_status", TagKind::RESPONSE_STATUS),
    ("pod_0", TagKind::POD),
    ("pod_1", TagKind::POD),
];
/// `resource.pod`: after `time` (first seen) and the pod, what follows from it.
const POD_TAGS: [(&str, TagKind); 6] = [
    ("pod", TagKind::POD),
    ("auto_service", TagKind::SERVICE),
    ("pod_ns", NAMESPACE),
    ("pod_node", TagKind::NODE),
    ("ip", IP),
    ("process_kname", TagKind::PROCESS),
];
/// `resource.node`: after `time` (first seen) and the node, what follows from it.
const NODE_TAGS: [(&str, TagKind); 3] = [
    ("node", TagKind::NODE),
    ("cluster", TagKind::CLUSTER),
    ("region", TagKind::REGION),
];

#[derive(Parser, Debug)]
#[command(about = "Loads generated l7_flow_log rows into a flowmesh shard; prints JSON")]
struct Args {
    /// Parquet file written by bench/smartencoding/generate.py.
    #[arg(long)]
    input: PathBuf,
    /// Directory for the shard (`storage/`) and the dictionary (`consensus/`); must not
    /// exist or be empty.
    #[arg(long)]
    data_dir: PathBuf,
    /// Segment sort columns of l7_flow_log. `time` sorts first unless named here (then
    /// where named), as in `TableDef::sort_columns`. The default gave the fewest bytes of
    /// the orders tried (docs/PERF.md).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "l7_protocol,pod_1,observation_point,pod_0,endpoint,time"
    )]
    sort_columns: Vec<String>,
    /// Rows per decoded batch (one encode and one WAL append each).
    #[arg(long, default_value_t = 65_536)]
    batch_rows: usize,
    /// Buffered bytes that trigger a flush (the node's default is 64 MiB).
    #[arg(long, default_value_t = StorageConfig::default().flush_threshold_bytes)]
    flush_threshold_bytes: usize,
    /// How the input's string columns are decoded and handed to the encoder: as Arrow
    /// dictionaries (Parquet's dictionary pages kept; the encoder interns each batch's
    /// dictionary values and maps the keys) or as plain strings (hashed per row).
    #[arg(long, value_enum, default_value_t = InputStrings::Dictionary)]
    strings: InputStrings,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum InputStrings {
    Dictionary,
    Plain,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    if args.data_dir.exists() && std::fs::read_dir(&args.data_dir)?.next().is_some() {
        bail!("data dir {} is not empty", args.data_dir.display());
    }
    let defs = table_defs(&args.sort_columns)?;

    let dictionary = Dictionary::start(
        ConsensusConfig {
            listen: "127.0.0.1:0".parse()?,
            data_dir: args.data_dir.join("consensus"),
            ..ConsensusConfig::default()
        },
        Duration::from_secs(10),
    )
    .await
    .context("failed to start the tag dictionary")?;
    let storage = StorageConfig {
        data_dir: args.data_dir.join("storage"),
        flush_threshold_bytes: args.flush_threshold_bytes,
        buffer_cap_bytes: StorageConfig::default()
            .buffer_cap_bytes
            .max(2 * args.flush_threshold_bytes),
        ..StorageConfig::default()
    };
    let shard_defs = defs.clone();
    let shard = tokio::task::spawn_blocking(move || Shard::open(storage, shard_defs))
        .await?
        .context("failed to open the shard")?;
    let encoder = TagEncoder::new(dictionary.client(), &defs);

    let loaded = load(&args, &shard, &encoder).await?;
    let after_flush = measure_segments(&shard)?;

    eprintln!("compacting");
    let (mark, wall0) = (CpuMark::now()?, Instant::now());
    let merged = shard.compact(SystemTime::now()).await?;
    let optimize_cpu_s = mark.elapsed()?;
    let optimize_wall_s = wall0.elapsed().as_secs_f64();
    let compacted = measure_segments(&shard)?;
    ensure!(
        compacted.rows == loaded.rows,
        "segments hold {} rows, {} were loaded",
        compacted.rows,
        loaded.rows
    );

    let client = dictionary.client();
    let dictionary_json = dictionary_summary(&client, &args.data_dir.join("consensus"))?;
    shard.close();
    let disk = dir_sizes(&args.data_dir.join("storage"))?;
    dictionary.shutdown().await;

    let rows = loaded.rows as f64;
    let sort_key: Vec<&str> = defs[0].sort_key().collect();
    eprintln!(
        "flowmesh: {} rows, insert {:.2} s CPU ({:.2} s wall), compaction {:.2} s CPU \
         ({merged} segments merged); {:.2} tag B/row, {:.2} row B/row; {} mismatching values",
        loaded.rows,
        loaded.cpu.total,
        loaded.wall_s,
        optimize_cpu_s,
        compacted.tag_bytes() as f64 / rows,
        compacted.row_bytes() as f64 / rows,
        loaded.mismatches.values().sum::<u64>(),
    );
    let output = json!({
        "engine": "flowmesh",
        "sort": sort_key.join(","),
        "rows": loaded.rows,
        "tag_bytes": compacted.tag_bytes(),
        "row_bytes": compacted.row_bytes(),
        "tag_bytes_per_row": compacted.tag_bytes() as f64 / rows,
        "row_bytes_per_row": compacted.row_bytes() as f64 / rows,
        "codec": "ZSTD(3)",
        "input_strings": format!("{:?}", args.strings).to_lowercase(),
        "insert_cpu_s": round3(loaded.cpu.total),
        "flush_cpu_s": round3(loaded.cpu.flush),
        "insert_cpu_breakdown_s": loaded.cpu.json(),
        "insert_wall_s": round3(loaded.wall_s),
        "optimize_cpu_s": round3(optimize_cpu_s),
        "optimize_wall_s": round3(optimize_wall_s),
        "segments": compacted.segments,
        "resource_rows": BTreeMap::from([(POD, loaded.pods), (NODE, loaded.nodes)]),
        "resource_bytes": compacted.resource_bytes,
        "per_column": compacted.per_column,
        "after_flush": after_flush.json(rows),
        "mismatches": loaded.mismatches,
        "dictionary": dictionary_json,
        "disk_bytes": disk,
    });
    println!("{output}");
    Ok(())
}

/// The stored tables: l7_flow_log sorted by `sort_columns`, and the resource tables.
fn table_defs(sort_columns: &[String]) -> Result<Vec<TableDef>> {
    let time = Field::new(
        "time",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    );
    let tags = |tags: &[(&str, TagKind)]| -> Vec<Field> {
        tags.iter()
            .map(|(name, kind)| tag_field(name, &kind.to_string(), false))
            .collect()
    };
    let mut l7 = vec![time.clone()];
    l7.extend(
        L7_NUMBERS
            .iter()
            .map(|(name, t, nullable)| Field::new(*name, t.clone(), *nullable)),
    );
    l7.extend(tags(&L7_TAGS));
    let mut pod = vec![time.clone()];
    pod.extend(tags(&POD_TAGS));
    pod.push(Field::new("process_id", DataType::UInt32, false));
    let mut node = vec![time];
    node.extend(tags(&NODE_TAGS));
    let def = |name: &str, fields: Vec<Field>, sort: Vec<String>| TableDef {
        name: name.to_string(),
        schema: Arc::new(Schema::new(fields)),
        sort_columns: sort,
    };
    let defs = vec![
        def(L7, l7, sort_columns.to_vec()),
        def(POD, pod, vec!["pod".into(), "time".into()]),
        def(NODE, node, vec!["node".into(), "time".into()]),
    ];
    for d in &defs {
        for column in d.sort_key() {
            ensure!(
                d.schema.index_of(column).is_ok(),
                "{} has no sort column {column}",
                d.name
            );
        }
    }
    Ok(defs)
}

/// Process CPU by step of the load. The steps run one after the other, so they add up to
/// nearly all of `total` (the rest: Raft heartbeats, the loop itself).
#[derive(Debug, Default)]
struct CpuSteps {
    total: f64,
    parquet_decode: f64,
    tag_encode: f64,
    resource_check: f64,
    wal_append: f64,
    flush: f64,
    resources_write: f64,
}

impl CpuSteps {
    fn json(&self) -> Value {
        json!({
            "parquet_decode": round3(self.parquet_decode),
            "tag_encode": round3(self.tag_encode),
            "resource_check": round3(self.resource_check),
            "wal_append": round3(self.wal_append),
            "flush": round3(self.flush),
            "resources_write": round3(self.resources_write),
        })
    }
}

/// A point in the process's CPU time.
struct CpuMark(f64);

impl CpuMark {
    fn now() -> Result<Self> {
        Ok(Self(process_cpu_s()?))
    }
    /// Process CPU seconds since the mark.
    fn elapsed(&self) -> Result<f64> {
        Ok(process_cpu_s()? - self.0)
    }
}

struct Loaded {
    rows: u64,
    pods: usize,
    nodes: usize,
    mismatches: BTreeMap<String, u64>,
    cpu: CpuSteps,
    wall_s: f64,
}

async fn load(args: &Args, shard: &Shard, encoder: &TagEncoder) -> Result<Loaded> {
    let wall0 = Instant::now();
    let start = CpuMark::now()?;
    let mut cpu = CpuSteps::default();
    let file = File::open(&args.input)
        .with_context(|| format!("failed to open {}", args.input.display()))?;
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    if args.strings == InputStrings::Dictionary {
        // string columns as Arrow dictionaries, straight from Parquet's dictionary pages
        let hint = Schema::new(
            builder
                .schema()
                .fields()
                .iter()
                .map(|f| match f.data_type() {
                    DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Dictionary(
                        Box::new(DataType::Int32),
                        Box::new(DataType::Utf8),
                    )),
                    _ => f.as_ref().clone(),
                })
                .collect::<Vec<_>>(),
        );
        let file = File::open(&args.input)?;
        builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
            file,
            ArrowReaderOptions::new().with_schema(Arc::new(hint)),
        )?;
    }
    let mut reader = builder.with_batch_size(args.batch_rows).build()?;
    let mut resources = Resources::default();
    let mut rows = 0u64;
    let mut next_report = 1_000_000u64;
    loop {
        let mark = CpuMark::now()?;
        let Some(input) = reader.next().transpose()? else {
            break;
        };
        cpu.parquet_decode += mark.elapsed()?;

        let mark = CpuMark::now()?;
        let stored = encoder.encode(L7, &l7_logical_batch(&input)?).await?;
        cpu.tag_encode += mark.elapsed()?;

        let mark = CpuMark::now()?;
        resources.check_batch(&input, &stored)?;
        cpu.resource_check += mark.elapsed()?;

        let mark = CpuMark::now()?;
        shard.append(vec![(L7.to_string(), stored)]).await?;
        cpu.wal_append += mark.elapsed()?;

        // the node's maintenance task does this periodically
        let mark = CpuMark::now()?;
        shard.flush_if_due().await?;
        cpu.flush += mark.elapsed()?;

        rows += input.num_rows() as u64;
        if rows >= next_report {
            eprintln!("loaded {rows} rows");
            next_report += 1_000_000;
        }
    }
    // A node learns resources from Kubernetes and writes each when it appears; here they
    // are known only once every row has been seen (a pod's process may first show in a
    // later row), so they are written once, at the end.
    let mark = CpuMark::now()?;
    let (pods, nodes) = resources.batches()?;
    let (pod_rows, node_rows) = (pods.num_rows(), nodes.num_rows());
    let pods = encoder.encode(POD, &pods).await?;
    let nodes = encoder.encode(NODE, &nodes).await?;
    shard
        .append(vec![(POD.to_string(), pods), (NODE.to_string(), nodes)])
        .await?;
    cpu.resources_write += mark.elapsed()?;

    let mark = CpuMark::now()?;
    shard.flush().await?;
    cpu.flush += mark.elapsed()?;
    cpu.total = start.elapsed()?;
    Ok(Loaded {
        rows,
        pods: pod_rows,
        nodes: node_rows,
        mismatches: resources.mismatches,
        cpu,
        wall_s: wall0.elapsed().as_secs_f64(),
    })
}

/// The columns of an input batch that l7_flow_log stores, in its order, tags as strings.
fn l7_logical_batch(input: &RecordBatch) -> Result<RecordBatch> {
    let schema = input.schema();
    let names = std::iter::once("time")
        .chain(L7_NUMBERS.iter().map(|(name, _, _)| *name))
        .chain(L7_TAGS.iter().map(|(name, _)| *name));
    let indices = names
        .map(|name| {
            schema
                .index_of(name)
                .with_context(|| format!("input has no column {name}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(input.project(&indices)?)
}

/// A string column of the input, plain or dictionary-encoded (`--strings`).
#[derive(Clone, Copy)]
enum Text<'a> {
    Plain(&'a StringArray),
    Dictionary(&'a [i32], &'a StringArray),
}

impl<'a> Text<'a> {
    fn value(&self, i: usize) -> &'a str {
        match self {
            Text::Plain(a) => a.value(i),
            Text::Dictionary(keys, values) => values.value(keys[i] as usize),
        }
    }
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<Text<'a>> {
    let column = batch
        .column_by_name(name)
        .with_context(|| format!("input has no column {name}"))?;
    if let Some(a) = column.as_string_opt::<i32>() {
        return Ok(Text::Plain(a));
    }
    let dictionary = column
        .as_dictionary_opt::<Int32Type>()
        .with_context(|| format!("column {name} is not a string column"))?;
    ensure!(dictionary.null_count() == 0, "column {name} has nulls");
    let values = dictionary
        .values()
        .as_string_opt::<i32>()
        .with_context(|| format!("column {name} is not a dictionary of strings"))?;
    Ok(Text::Dictionary(dictionary.keys().values(), values))
}

fn u32s<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a UInt32Array> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<UInt32Type>())
        .with_context(|| format!("column {name} is missing or not UInt32"))
}

/// What follows from a pod, from the first row naming it.
#[derive(Debug)]
struct PodResource {
    first_seen_us: i64,
    pod: String,
    service: String,
    namespace: String,
    node: String,
    ip: String,
    /// Process name and PID, from the first row with process information.
    process: Option<(String, u32)>,
}

/// What follows from a node (the observing host), from the first row naming it.
#[derive(Debug)]
struct NodeResource {
    first_seen_us: i64,
    node: String,
    cluster: String,
    region: String,
}

/// Resources by dictionary id (ids are dense per kind), and the values rows disagreed on.
#[derive(Default)]
struct Resources {
    pods: Vec<Option<PodResource>>,
    nodes: Vec<Option<NodeResource>>,
    mismatches: BTreeMap<String, u64>,
}

/// One side's derived columns in an input batch.
struct SideColumns<'a> {
    pod_ids: &'a UInt32Array,
    pod: Text<'a>,
    service: Text<'a>,
    namespace: Text<'a>,
    node: Text<'a>,
    ip: Text<'a>,
    kname: Text<'a>,
    pid: &'a UInt32Array,
}

impl<'a> SideColumns<'a> {
    fn new(input: &'a RecordBatch, stored: &'a RecordBatch, side: u8) -> Result<Self> {
        Ok(Self {
            pod_ids: u32s(stored, &format!("pod_{side}"))?,
            pod: strings(input, &format!("pod_{side}"))?,
            service: strings(input, &format!("auto_service_{side}"))?,
            namespace: strings(input, &format!("pod_ns_{side}"))?,
            node: strings(input, &format!("pod_node_{side}"))?,
            ip: strings(input, &format!("ip_{side}"))?,
            kname: strings(input, &format!("process_kname_{side}"))?,
            pid: u32s(input, &format!("process_id_{side}"))?,
        })
    }
}

fn grow<T>(v: &mut Vec<Option<T>>, id: usize) -> &mut Option<T> {
    if v.len() <= id {
        v.resize_with(id + 1, || None);
    }
    &mut v[id]
}

impl Resources {
    fn mismatch(&mut self, column: String) {
        *self.mismatches.entry(column).or_default() += 1;
    }

    /// Records the resources `input` names first and checks every row against them.
    fn check_batch(&mut self, input: &RecordBatch, stored: &RecordBatch) -> Result<()> {
        let times = input
            .column_by_name("time")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
            .context("input has no time column in microseconds")?;
        let signal_source = strings(input, "signal_source")?;
        for side in [0u8, 1] {
            let cols = SideColumns::new(input, stored, side)?;
            for i in 0..input.num_rows() {
                let id = cols.pod_ids.value(i) as usize;
                if id == 0 {
                    continue; // no pod
                }
                let process = (signal_source.value(i) != "packet")
                    .then(|| (cols.kname.value(i), cols.pid.value(i)));
                let slot = grow(&mut self.pods, id);
                let Some(pod) = slot else {
                    *slot = Some(PodResource {
                        first_seen_us: times.value(i),
                        pod: cols.pod.value(i).to_string(),
                        service: cols.service.value(i).to_string(),
                        namespace: cols.namespace.value(i).to_string(),
                        node: cols.node.value(i).to_string(),
                        ip: cols.ip.value(i).to_string(),
                        process: process.map(|(k, p)| (k.to_string(), p)),
                    });
                    continue;
                };
                let mut wrong: [(&str, bool); 6] = [
                    ("auto_service", pod.service != cols.service.value(i)),
                    ("pod_ns", pod.namespace != cols.namespace.value(i)),
                    ("pod_node", pod.node != cols.node.value(i)),
                    ("ip", pod.ip != cols.ip.value(i)),
                    ("process_kname", false),
                    ("process_id", false),
                ];
                match (process, &pod.process) {
                    (Some((k, p)), Some((kname, pid))) => {
                        wrong[4].1 = k != kname;
                        wrong[5].1 = p != *pid;
                    }
                    (Some((k, p)), None) => pod.process = Some((k.to_string(), p)),
                    // a packet row carries no process information
                    (None, _) => {
                        wrong[4].1 = !cols.kname.value(i).is_empty();
                        wrong[5].1 = cols.pid.value(i) != 0;
                    }
                }
                for (column, bad) in wrong {
                    if bad {
                        self.mismatch(format!("{column}_{side}"));
                    }
                }
            }
        }
        let node_ids = u32s(stored, "node")?;
        let (node, cluster, region) = (
            strings(input, "node")?,
            strings(input, "cluster")?,
            strings(input, "region")?,
        );
        for i in 0..input.num_rows() {
            let slot = grow(&mut self.nodes, node_ids.value(i) as usize);
            match slot.as_mut() {
                None => {
                    *slot = Some(NodeResource {
                        first_seen_us: times.value(i),
                        node: node.value(i).to_string(),
                        cluster: cluster.value(i).to_string(),
                        region: region.value(i).to_string(),
                    })
                }
                Some(n) => {
                    let wrong = [
                        ("cluster", n.cluster != cluster.value(i)),
                        ("region", n.region != region.value(i)),
                    ];
                    for (column, bad) in wrong {
                        if bad {
                            self.mismatch(column.to_string());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The resource tables' logical batches (tags as strings).
    fn batches(&self) -> Result<(RecordBatch, RecordBatch)> {
        let pods: Vec<&PodResource> = self.pods.iter().flatten().collect();
        let time = |v: Vec<i64>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
        };
        let text = |v: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(v)) };
        let pod_columns: Vec<ArrayRef> = vec![
            time(pods.iter().map(|p| p.first_seen_us).collect()),
            text(pods.iter().map(|p| p.pod.as_str()).collect()),
            text(pods.iter().map(|p| p.service.as_str()).collect()),
            text(pods.iter().map(|p| p.namespace.as_str()).collect()),
            text(pods.iter().map(|p| p.node.as_str()).collect()),
            text(pods.iter().map(|p| p.ip.as_str()).collect()),
            text(
                pods.iter()
                    .map(|p| p.process.as_ref().map_or("", |(k, _)| k.as_str()))
                    .collect(),
            ),
            Arc::new(UInt32Array::from(
                pods.iter()
                    .map(|p| p.process.as_ref().map_or(0, |(_, pid)| *pid))
                    .collect::<Vec<_>>(),
            )),
        ];
        let nodes: Vec<&NodeResource> = self.nodes.iter().flatten().collect();
        let node_columns: Vec<ArrayRef> = vec![
            time(nodes.iter().map(|n| n.first_seen_us).collect()),
            text(nodes.iter().map(|n| n.node.as_str()).collect()),
            text(nodes.iter().map(|n| n.cluster.as_str()).collect()),
            text(nodes.iter().map(|n| n.region.as_str()).collect()),
        ];
        Ok((
            RecordBatch::try_new(logical_schema(&pod_columns), pod_columns)?,
            RecordBatch::try_new(logical_schema(&node_columns), node_columns)?,
        ))
    }
}

/// A schema for columns handed to the encoder, which reads them by position.
fn logical_schema(columns: &[ArrayRef]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), false))
            .collect::<Vec<_>>(),
    ))
}

/// Bytes of the catalogued segments, from their Parquet footers.
#[derive(Debug, Default)]
struct SegmentBytes {
    rows: u64,
    segments: usize,
    /// l7_flow_log segment files.
    file_bytes: u64,
    /// Compressed column chunks of l7_flow_log, by column.
    per_column: BTreeMap<String, u64>,
    tag_columns: Vec<String>,
    /// Whole files, per resource table.
    resource_bytes: BTreeMap<String, u64>,
}

impl SegmentBytes {
    fn resources(&self) -> u64 {
        self.resource_bytes.values().sum()
    }
    fn tag_bytes(&self) -> u64 {
        let tags: u64 = self
            .tag_columns
            .iter()
            .filter_map(|c| self.per_column.get(c))
            .sum();
        tags + self.resources()
    }
    fn row_bytes(&self) -> u64 {
        self.file_bytes + self.resources()
    }
    fn json(&self, rows: f64) -> Value {
        json!({
            "segments": self.segments,
            "tag_bytes": self.tag_bytes(),
            "row_bytes": self.row_bytes(),
            "tag_bytes_per_row": self.tag_bytes() as f64 / rows,
            "row_bytes_per_row": self.row_bytes() as f64 / rows,
        })
    }
}

fn measure_segments(shard: &Shard) -> Result<SegmentBytes> {
    let mut out = SegmentBytes::default();
    let l7 = shard.table(L7).context("no l7_flow_log table")?;
    out.tag_columns = l7
        .schema
        .fields()
        .iter()
        .filter(|f| tag_kind(f).is_some())
        .map(|f| f.name().clone())
        .collect();
    for table in [L7, POD, NODE] {
        for meta in shard.snapshot(table).segments {
            let path = shard.data_dir().join(&meta.path);
            let file_bytes = std::fs::metadata(&path)
                .with_context(|| format!("failed to stat segment {}", path.display()))?
                .len();
            if table != L7 {
                *out.resource_bytes.entry(table.to_string()).or_default() += file_bytes;
                continue;
            }
            let reader = SerializedFileReader::new(File::open(&path)?)
                .with_context(|| format!("failed to read the footer of {}", path.display()))?;
            let metadata = reader.metadata();
            out.rows += metadata.file_metadata().num_rows() as u64;
            out.segments += 1;
            out.file_bytes += file_bytes;
            for row_group in metadata.row_groups() {
                for chunk in row_group.columns() {
                    *out.per_column
                        .entry(chunk.column_path().string())
                        .or_default() += chunk.compressed_size() as u64;
                }
            }
        }
    }
    Ok(out)
}

/// Strings per kind in the dictionary (ids are dense from 1) and its directory's size.
fn dictionary_summary(client: &DictionaryClient, dir: &Path) -> Result<Value> {
    let kinds: Vec<TagKind> = TagKind::WELL_KNOWN
        .into_iter()
        .chain([NAMESPACE, IP])
        .collect();
    let mut strings = BTreeMap::new();
    let (mut count, mut bytes) = (0u64, 0u64);
    for kind in kinds {
        let mut n = 0u64;
        while let Some(s) = client.decode(kind, n as u32 + 1) {
            n += 1;
            bytes += s.len() as u64;
        }
        if n > 0 {
            strings.insert(kind.to_string(), n);
        }
        count += n;
    }
    Ok(json!({
        "strings": count,
        "string_bytes": bytes,
        "strings_by_kind": strings,
        "dir_bytes": dir_sizes(dir)?.get("total").copied().unwrap_or(0),
        "stats": format!("{:?}", client.stats()),
    }))
}

/// Bytes under `dir`, in total and per top-level entry.
fn dir_sizes(dir: &Path) -> Result<BTreeMap<String, u64>> {
    fn walk(path: &Path) -> Result<u64> {
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.is_dir() {
            return Ok(meta.len());
        }
        let mut total = 0;
        for entry in std::fs::read_dir(path)? {
            total += walk(&entry?.path())?;
        }
        Ok(total)
    }
    let mut sizes = BTreeMap::new();
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let size = walk(&entry.path())?;
        total += size;
        sizes.insert(entry.file_name().to_string_lossy().into_owned(), size);
    }
    sizes.insert("total".to_string(), total);
    Ok(sizes)
}

/// User + system CPU seconds of this process, all threads.
fn process_cpu_s() -> Result<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes the struct it is given, which lives until the call ends.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        bail!("getrusage failed: {}", std::io::Error::last_os_error());
    }
    // SAFETY: zero-initialised and filled in by a successful getrusage
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
