//! The workload: Influx points at a fixed rate, with a log of what was acknowledged.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// What the writer sent and what the nodes acknowledged.
#[derive(Debug, Default, Clone)]
pub struct Log {
    /// Sequence numbers answered 204 (durable, by the node's contract).
    pub acked: Vec<u64>,
    /// Points sent.
    pub sent: u64,
    /// Points refused or unanswered (a dead or paused node): not promised, so not checked.
    pub failed: u64,
    /// The longest a write took to be answered, acknowledged or not.
    pub slowest: Duration,
}

/// One writer thread per node, each writing one point per tick to its node until stopped
/// (a stalled node holds up only its own writer, as with one Prometheus per node).
pub struct Writer {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    handles: Vec<JoinHandle<()>>,
}

impl Writer {
    /// `per_second` points per node. Node `i` of `n` writes the sequence numbers
    /// `i, i + n, i + 2n …`, point `seq` being `<measurement>,tag=t<seq> seq=<seq>`: the tag
    /// value is new each time, so each write interns a string through the region's leader.
    pub fn start(bases: Vec<String>, per_second: u32, measurement: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let n = bases.len() as u64;
        let handles = bases
            .into_iter()
            .enumerate()
            .map(|(i, base)| {
                let (flag, shared) = (Arc::clone(&stop), Arc::clone(&log));
                let measurement = measurement.to_owned();
                std::thread::spawn(move || {
                    write_loop(&base, i as u64, n, per_second, &measurement, &flag, &shared);
                })
            })
            .collect();
        Writer { stop, log, handles }
    }

    /// The log so far.
    pub fn snapshot(&self) -> Log {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops the writer and returns its log.
    pub fn stop(self) -> Log {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles {
            handle
                .join()
                .unwrap_or_else(|_| panic!("a writer thread panicked"));
        }
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        log.acked.sort_unstable();
        log
    }
}

fn write_loop(
    base: &str,
    first: u64,
    step: u64,
    per_second: u32,
    measurement: &str,
    stop: &AtomicBool,
    log: &Mutex<Log>,
) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap_or_else(|e| panic!("http client: {e}"));
    let tick = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
    let mut next = Instant::now();
    let mut seq = first;
    while !stop.load(Ordering::Relaxed) {
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let line = format!("{measurement},tag=t{seq} seq={seq} {now_ns}\n");
        let started = Instant::now();
        let ok = client
            .post(format!("{base}/api/v2/write"))
            .body(line)
            .send()
            .is_ok_and(|r| r.status().as_u16() == 204);
        {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            log.sent += 1;
            log.slowest = log.slowest.max(started.elapsed());
            if ok {
                log.acked.push(seq);
            } else {
                log.failed += 1;
            }
        }
        seq += step;
        next += tick;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now; // behind (a stalled request): no burst to catch up
        }
    }
}
