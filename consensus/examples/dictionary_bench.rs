//! Dictionary benchmark: three replicas on loopback, each in its own temp directory.
//!
//! 1. Interning through Raft: concurrent callers intern batches of strings never seen
//!    before, through the leader's client and through followers' (forwarded); reports new
//!    strings per second (wall clock), the process CPU time per string (all three nodes
//!    together) and the batching achieved.
//! 2. Cached encode/decode: `lookup`, `intern` (all hits) and `decode` on warm caches;
//!    reports nanoseconds per string, wall clock and thread CPU time.
//!
//! On a shared machine the CPU figures are the stable ones: wall clock includes the time
//! other processes hold the cores.
//!
//! Run: `cargo run --release -p flowmesh-consensus --example dictionary_bench`
//! Options: `--strings N` (default 100000), `--batch N` (default 64), `--callers N`
//! (default 24).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use flowmesh_consensus::{ConsensusConfig, DictionaryClient, DictionaryNode, NodeRole, TagKind};

struct Options {
    strings: usize,
    batch: usize,
    callers: usize,
}

fn options() -> Options {
    let mut opts = Options {
        strings: 100_000,
        batch: 64,
        callers: 24,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair
            .get(1)
            .and_then(|v| v.parse().ok())
            .expect("numeric option value");
        match pair[0].as_str() {
            "--strings" => opts.strings = value,
            "--batch" => opts.batch = value,
            "--callers" => opts.callers = value,
            other => panic!("unknown option {other}"),
        }
    }
    opts
}

async fn start_cluster(dirs: &[tempfile::TempDir]) -> Vec<DictionaryNode> {
    let addrs: Vec<std::net::SocketAddr> = (0..dirs.len())
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap())
        .collect();
    let peers: BTreeMap<u64, std::net::SocketAddr> = (1..).zip(addrs.iter().copied()).collect();
    let mut nodes = Vec::new();
    for (id, dir) in (1..).zip(dirs) {
        let config = ConsensusConfig {
            node_id: id,
            listen: peers[&id],
            data_dir: dir.path().to_path_buf(),
            peers: peers.clone(),
            cluster_token: "bench-token".into(),
            ..ConsensusConfig::default()
        };
        nodes.push(DictionaryNode::start(config).await.unwrap());
    }
    let started = Instant::now();
    while !nodes.iter().any(|n| n.status().role == NodeRole::Leader) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no leader elected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes
}

/// `callers` tasks intern `total` distinct new strings in batches of `batch`, using the
/// clients round-robin. Returns strings per second.
async fn intern_new(
    clients: &[DictionaryClient],
    label: &str,
    total: usize,
    batch: usize,
    callers: usize,
) -> f64 {
    let per_caller = total / callers;
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let client = clients[caller % clients.len()].clone();
            let label = label.to_string();
            tokio::spawn(async move {
                let mut done = 0;
                while done < per_caller {
                    let n = batch.min(per_caller - done);
                    let strings: Vec<String> = (done..done + n)
                        .map(|i| format!("{label}-pod-{caller}-{i}-checkout-7f9c4d"))
                        .collect();
                    let ids = client.intern(TagKind::POD, &strings).await.unwrap();
                    assert_eq!(ids.len(), n);
                    done += n;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    (per_caller * callers) as f64 / elapsed.as_secs_f64()
}

fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn process_cpu() -> Duration {
    cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn thread_cpu() -> Duration {
    cpu_time(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Wall and thread-CPU nanoseconds per operation of `body`, which runs `ops` operations
/// without yielding to the runtime.
async fn measure<F: std::future::Future<Output = ()>>(ops: usize, body: F) -> (f64, f64) {
    let wall = Instant::now();
    let cpu = thread_cpu();
    body.await;
    let cpu = thread_cpu() - cpu;
    let wall = wall.elapsed();
    (
        wall.as_nanos() as f64 / ops as f64,
        cpu.as_nanos() as f64 / ops as f64,
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let opts = options();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = start_cluster(&dirs).await;
    let leader = nodes
        .iter()
        .position(|n| n.status().role == NodeRole::Leader)
        .unwrap();
    let all: Vec<DictionaryClient> = nodes.iter().map(|n| n.client()).collect();
    let followers: Vec<DictionaryClient> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, n)| n.client())
        .collect();

    // Warm up connections and the JIT-free paths.
    intern_new(&all, "warmup", 2_000, opts.batch, 4).await;

    println!(
        "interning through raft: 3 voters on loopback, {} new strings, batch {}, {} callers",
        opts.strings, opts.batch, opts.callers
    );
    let before: Vec<_> = all.iter().map(|c| c.stats()).collect();
    let cpu_before = process_cpu();
    let leader_rate = intern_new(
        &all[leader..=leader],
        "leader",
        opts.strings,
        opts.batch,
        opts.callers,
    )
    .await;
    println!("  via the leader's client:       {leader_rate:>10.0} new strings/s");
    let follower_rate = intern_new(
        &followers,
        "follower",
        opts.strings,
        opts.batch,
        opts.callers,
    )
    .await;
    println!("  via followers (forwarded):     {follower_rate:>10.0} new strings/s");
    let mixed_rate = intern_new(&all, "mixed", opts.strings, opts.batch, opts.callers).await;
    println!("  via all three nodes:           {mixed_rate:>10.0} new strings/s");
    let (proposals, proposed): (u64, u64) = all
        .iter()
        .zip(&before)
        .map(|(c, b)| {
            let s = c.stats();
            (
                s.proposals - b.proposals,
                s.proposed_strings - b.proposed_strings,
            )
        })
        .fold((0, 0), |(p, s), (dp, ds)| (p + dp, s + ds));
    let cpu_per_string =
        (process_cpu() - cpu_before).as_secs_f64() * 1e6 / (3 * opts.strings) as f64;
    println!(
        "  raft proposals: {proposals}, strings per proposal: {:.0}",
        proposed as f64 / proposals.max(1) as f64
    );
    println!("  process CPU (3 nodes): {cpu_per_string:.1} µs per new string");

    // Cached encode: the leader-phase strings are all in the leader's cache.
    let client = &all[leader];
    let per_caller = opts.strings / opts.callers;
    let hot: Vec<String> = (0..10_000)
        .map(|i| {
            let caller = i % opts.callers;
            let index = (i / opts.callers) % per_caller;
            format!("leader-pod-{caller}-{index}-checkout-7f9c4d")
        })
        .collect();
    // One untimed pass fills the caches (the phases above may have evicted these).
    let ids: Vec<u32> = hot
        .iter()
        .map(|s| {
            client
                .lookup(TagKind::POD, s)
                .expect("interned string is known")
        })
        .collect();
    for id in &ids {
        client
            .decode(TagKind::POD, *id)
            .expect("interned id is known");
    }
    let warm = client.stats();
    let rounds = 100;
    let ops = rounds * hot.len();
    let (lookup_wall, lookup_cpu) = measure(ops, async {
        for _ in 0..rounds {
            for s in &hot {
                black_box(client.lookup(TagKind::POD, black_box(s)));
            }
        }
    })
    .await;
    let batches: Vec<Vec<&str>> = hot
        .chunks(100)
        .map(|c| c.iter().map(|s| s.as_str()).collect())
        .collect();
    // All hits: `intern` completes without awaiting anything, so it stays on this thread.
    let (intern_wall, intern_cpu) = measure(ops, async {
        for _ in 0..rounds {
            for b in &batches {
                black_box(client.intern(TagKind::POD, b).await.unwrap());
            }
        }
    })
    .await;
    let (decode_wall, decode_cpu) = measure(ops, async {
        for _ in 0..rounds {
            for id in &ids {
                black_box(client.decode(TagKind::POD, black_box(*id)));
            }
        }
    })
    .await;
    let after = client.stats();
    let misses = after.cache_misses - warm.cache_misses;
    println!(
        "cached encode/decode, 10000 hot strings, one thread ({} hits, {misses} misses), wall / thread CPU:",
        after.cache_hits - warm.cache_hits
    );
    println!(
        "  lookup(kind, str):              {lookup_wall:>7.1} / {lookup_cpu:>6.1} ns per lookup"
    );
    println!(
        "  intern(kind, 100 strings), hit: {intern_wall:>7.1} / {intern_cpu:>6.1} ns per string"
    );
    println!(
        "  decode(kind, id):               {decode_wall:>7.1} / {decode_cpu:>6.1} ns per decode"
    );

    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
