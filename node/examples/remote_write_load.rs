//! The load generator of bench/remote_write.sh: sends the same Prometheus remote_write
//! requests to any receiver (flowmesh's `/api/v1/write`, Prometheus'
//! `--web.enable-remote-write-receiver`) and reports, as one JSON object on stdout, the
//! samples sent, the wall time and the receiver's CPU time (from `/proc/<pid>/stat`).
//!
//! Usage: `remote_write_load --url URL --pid PID [--series 10000] [--minutes 60]
//!         [--interval-s 15] [--senders 2] [--samples-per-request 2000]`
//!
//! The data imitates node_exporter scraped every `interval_s` seconds for `minutes` minutes
//! ending now (Prometheus refuses samples far in the past): `series` series spread over
//! 20 metric names, 50 instances and a few label values each; counters grow by random
//! steps, gauges wander. Each series belongs to one sender, which sends its samples in time
//! order, as Prometheus' shards do. Every request must be answered 2xx, or the run fails.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use flowmesh_ingest::remote_write::{
    Label, Sample, TimeSeries, WriteRequest, encode_write_request,
};
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// remote_write endpoint.
    #[arg(long)]
    url: String,
    /// The receiver's process id (its CPU time is measured).
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    #[arg(long, default_value_t = 60)]
    minutes: i64,
    #[arg(long, default_value_t = 15)]
    interval_s: i64,
    #[arg(long, default_value_t = 2)]
    senders: usize,
    #[arg(long, default_value_t = 2000)]
    samples_per_request: usize,
    /// Seed of the values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const METRICS: [(&str, bool); 20] = [
    ("node_cpu_seconds_total", true),
    ("node_network_receive_bytes_total", true),
    ("node_network_transmit_bytes_total", true),
    ("node_disk_read_bytes_total", true),
    ("node_disk_written_bytes_total", true),
    ("node_disk_io_time_seconds_total", true),
    ("node_context_switches_total", true),
    ("node_intr_total", true),
    ("node_forks_total", true),
    ("http_requests_total", true),
    ("node_memory_MemAvailable_bytes", false),
    ("node_memory_Cached_bytes", false),
    ("node_load1", false),
    ("node_load5", false),
    ("node_filesystem_avail_bytes", false),
    ("node_filesystem_free_bytes", false),
    ("process_resident_memory_bytes", false),
    ("process_open_fds", false),
    ("go_goroutines", false),
    ("node_sockstat_TCP_inuse", false),
];

/// splitmix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Series `i`'s labels, sorted by name, `__name__` first.
fn labels(i: usize) -> (Vec<Label>, bool) {
    let (name, counter) = METRICS[i % METRICS.len()];
    let rest = i / METRICS.len();
    let instance = format!("10.0.{}.{}:9100", rest % 50 / 10, rest % 50);
    let dimension = rest / 50;
    let mut labels = vec![
        Label::new("__name__", name),
        Label::new("instance", instance),
        Label::new("job", "node"),
    ];
    match name {
        "node_cpu_seconds_total" => {
            labels.push(Label::new("cpu", (dimension / 8).to_string()));
            let mode = [
                "idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice",
            ];
            labels.push(Label::new("mode", mode[dimension % 8]));
        }
        "http_requests_total" => {
            labels.push(Label::new("code", ["200", "404", "500"][dimension % 3]));
            labels.push(Label::new("handler", format!("/api/v{}", dimension / 3)));
        }
        _ => labels.push(Label::new("device", format!("dev{dimension}"))),
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    (labels, counter)
}

fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("no process {pid}"))?;
    let rest = stat.rsplit_once(')').context("bad stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let steps = (args.minutes * 60 / args.interval_s).max(1);
    let first_ms = now_ms - steps * args.interval_s * 1000;
    let cpu0 = cpu_seconds(args.pid)?;
    let started = Instant::now();
    let per_sender: Vec<Vec<usize>> = (0..args.senders)
        .map(|s| (s..args.series).step_by(args.senders).collect())
        .collect();
    let results: Vec<Result<(u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = per_sender
            .iter()
            .enumerate()
            .map(|(s, mine)| {
                let args = &args;
                scope.spawn(move || -> Result<(u64, u64)> {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(60))
                        .build()?;
                    let mut rng = Rng(args.seed.wrapping_add(s as u64));
                    let mut state: Vec<f64> = mine.iter().map(|_| rng.below(1000) as f64).collect();
                    let series: Vec<(Vec<Label>, bool)> = mine.iter().map(|&i| labels(i)).collect();
                    let (mut samples, mut requests) = (0u64, 0u64);
                    let mut batch: Vec<TimeSeries> = Vec::new();
                    let mut in_batch = 0usize;
                    let mut send = |batch: &mut Vec<TimeSeries>| -> Result<()> {
                        let body = encode_write_request(&WriteRequest {
                            timeseries: std::mem::take(batch),
                            ..WriteRequest::default()
                        })?;
                        let response = client
                            .post(&args.url)
                            .header("Content-Encoding", "snappy")
                            .header("Content-Type", "application/x-protobuf")
                            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                            .body(body)
                            .send()?;
                        let status = response.status();
                        ensure!(
                            status.is_success(),
                            "{status}: {}",
                            response.text().unwrap_or_default()
                        );
                        requests += 1;
                        Ok(())
                    };
                    for step in 0..steps {
                        let t = first_ms + step * args.interval_s * 1000;
                        for (k, (labels, counter)) in series.iter().enumerate() {
                            let v = &mut state[k];
                            if *counter {
                                *v += rng.below(100) as f64;
                            } else {
                                *v = (*v + rng.below(21) as f64 - 10.0).max(0.0);
                            }
                            batch.push(TimeSeries {
                                labels: labels.clone(),
                                samples: vec![Sample {
                                    value: *v,
                                    timestamp_ms: t,
                                }],
                                ..TimeSeries::default()
                            });
                            in_batch += 1;
                            samples += 1;
                            if in_batch == args.samples_per_request {
                                send(&mut batch)?;
                                in_batch = 0;
                            }
                        }
                    }
                    if !batch.is_empty() {
                        send(&mut batch)?;
                    }
                    Ok((samples, requests))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("sender panicked")))
            })
            .collect()
    });
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds(args.pid)? - cpu0;
    let (mut samples, mut requests) = (0u64, 0u64);
    for r in results {
        let (s, q) = r?;
        samples += s;
        requests += q;
    }
    println!(
        "{}",
        json!({
            "series": args.series,
            "samples": samples,
            "requests": requests,
            "wall_s": wall_s,
            "receiver_cpu_s": cpu_s,
            "samples_per_s": samples as f64 / wall_s,
            "samples_per_cpu_s": samples as f64 / cpu_s.max(1e-9),
            "first_ms": first_ms,
            "last_ms": first_ms + (steps - 1) * args.interval_s * 1000,
        })
    );
    Ok(())
}
