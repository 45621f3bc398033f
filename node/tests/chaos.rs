//! Chaos (issue 7): the scenarios of the `flowmesh-chaos-tests` harness, each on its own
//! mesh from `deploy/mesh.sh` (a network namespace per node, the peer port in plain TCP).
//! A writer per node sends it Influx points at 10 per second, each with a
//! new tag value (so each one interns a string through the Raft leader), and logs what was
//! acknowledged. Faults are injected while it writes; after recovery every invariant of
//! `flowmesh_chaos_tests::check` must hold: every acknowledged point is found, the
//! dictionary replicas are one-to-one and agree, queries during a fault were complete or
//! named exactly the nodes at fault, no log shows a panic.
//!
//! Each scenario runs `CHAOS_RUNS` fault cycles (default 2) from seed `CHAOS_SEED` (default:
//! the scenario's own), printed with its report row; `CHAOS_REPORT=<file>` appends the row
//! to a file (chaos-tests/report.sh makes docs/RELIABILITY.md from them). Scenarios run one
//! at a time: they share the machine's two cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{sync::Mutex, thread::sleep, time::Duration};

use common::{mesh::Mesh, require};
use flowmesh_chaos_tests::{Report, Rng, Writer, check};

const TOKEN: &str = "chaos-token";
const MEASUREMENT: &str = "chaos";
/// Points per second per node.
const RATE: u32 = 10;
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a fault cycle works with.
struct Ctx<'a> {
    mesh: &'a Mesh,
    writer: &'a Writer,
    rng: Rng,
    report: Report,
}

impl Ctx<'_> {
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.range(lo, hi))
    }

    fn sample_rss(&mut self) {
        for i in 0..self.mesh.nodes.len() {
            let rss = self.mesh.rss_bytes(i).unwrap_or(0);
            self.report.peak_rss_bytes = self.report.peak_rss_bytes.max(rss);
        }
    }

    fn acked_so_far(&self) -> Vec<u64> {
        self.writer.snapshot().acked
    }

    /// A query at node `at` while `at_fault` are down, checked.
    fn query_during_fault(&mut self, at: usize, at_fault: &[usize], before: &[u64]) {
        let names: Vec<String> = at_fault.iter().map(|&i| self.mesh.name(i)).collect();
        let violations = check::during_fault(&self.mesh.base(at), MEASUREMENT, before, &names);
        self.report.violations.extend(violations);
    }

    /// kill -9 of `victim` for a drawn `lo..hi` ms, a query from the next node meanwhile,
    /// then its restart.
    fn kill_for(&mut self, victim: usize, what: &str, lo: u64, hi: u64) {
        let before = self.acked_so_far();
        self.mesh.kill9(victim);
        self.report
            .faults
            .push(format!("kill -9 {}{what}", self.mesh.name(victim)));
        let down = self.ms(lo, hi);
        sleep(down);
        self.query_during_fault((victim + 1) % self.mesh.nodes.len(), &[victim], &before);
        self.mesh.start(victim);
    }

    /// The region leader among all nodes, else a node drawn at random.
    fn leader_or_any(&mut self) -> (usize, &'static str) {
        let all: Vec<usize> = (0..self.mesh.nodes.len()).collect();
        match check::leader(self.mesh, &all) {
            Some(i) => (i, " (leader)"),
            None => (self.rng.range(0, all.len() as u64) as usize, ""),
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Brings up `nodes` nodes in `regions` regions, starts the writer, runs `cycle` the
/// configured number of times, stops the writer, lets the mesh heal and checks every
/// invariant.
fn scenario(
    name: &str,
    tag: u8,
    nodes: usize,
    regions: usize,
    seed: u64,
    mut cycle: impl FnMut(&mut Ctx<'_>),
) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    require(&["ip", "curl", "python3"]);
    let seed = env_u64("CHAOS_SEED").unwrap_or(seed);
    let runs = env_u64("CHAOS_RUNS").unwrap_or(2) as usize;
    let mesh = Mesh::up(tag, nodes, regions, TOKEN, &["--no-tls"]);
    mesh.wait_all_alive();
    let bases = (0..nodes).map(|i| mesh.base(i)).collect();
    let writer = Writer::start(bases, RATE, MEASUREMENT);
    sleep(Duration::from_millis(1500));
    let mut ctx = Ctx {
        mesh: &mesh,
        writer: &writer,
        rng: Rng::new(seed),
        report: Report {
            scenario: name.to_owned(),
            seed,
            runs,
            ..Report::default()
        },
    };
    for _ in 0..runs {
        cycle(&mut ctx);
        ctx.sample_rss();
        let pause = ctx.ms(500, 1500);
        sleep(pause);
    }
    ctx.sample_rss();
    let mut report = ctx.report;
    let log = writer.stop();
    if let Err(e) = check::wait_all_alive(&mesh, Duration::from_secs(60)) {
        report.violations.push(e);
    }
    let (found, lost) =
        check::acknowledged_found(&mesh, MEASUREMENT, &log.acked, Duration::from_secs(60));
    report.violations.extend(lost);
    report
        .violations
        .extend(check::dictionaries(&mesh, Duration::from_secs(30)));
    report.violations.extend(check::no_panics(&mesh));
    report.sent = log.sent;
    report.acked = log.acked.len();
    report.found = found;
    report.slowest_write = log.slowest;
    report.record();
    println!("{}\n{}", Report::header(), report.row());
    assert!(
        report.violations.is_empty(),
        "{name} (seed {seed}): {:#?}",
        report.violations
    );
    // the workload really ran, and most of it was acknowledged
    assert!(
        log.acked.len() as u64 * 2 >= log.sent && log.sent >= u64::from(RATE) * 10,
        "{name}: {} of {} points acknowledged",
        log.acked.len(),
        log.sent
    );
}

/// kill -9 of a node drawn at random while points are written, then its restart.
#[test]
fn node_kill_during_ingest() {
    scenario("node kill during ingest", 216, 3, 1, 0x5eed_0001, |ctx| {
        let victim = ctx.rng.range(0, ctx.mesh.nodes.len() as u64) as usize;
        ctx.kill_for(victim, "", 1000, 2500);
    });
}

/// kill -9 of the dictionary group's leader while every point interns a new string.
#[test]
fn leader_kill_during_interning() {
    scenario(
        "leader kill during interning",
        217,
        3,
        1,
        0x5eed_0002,
        |ctx| {
            let (victim, what) = ctx.leader_or_any();
            ctx.kill_for(victim, what, 1500, 3000);
        },
    );
}

/// SIGSTOP of the leader for longer than the election timeout (600–1200 ms), then SIGCONT.
#[test]
fn long_pause_of_the_leader() {
    scenario("long pause", 218, 3, 1, 0x5eed_0003, |ctx| {
        let (victim, what) = ctx.leader_or_any();
        let before = ctx.acked_so_far();
        let pause = ctx.ms(2500, 4000);
        ctx.mesh.pause(victim, true);
        ctx.report.faults.push(format!(
            "SIGSTOP {}{what} for {:.1} s",
            ctx.mesh.name(victim),
            pause.as_secs_f64()
        ));
        sleep(pause);
        // the query waits for the paused peer until its timeout, then answers partial
        ctx.query_during_fault((victim + 1) % 3, &[victim], &before);
        ctx.mesh.pause(victim, false);
    });
}

/// Every node killed with -9 at once, then all started again.
#[test]
fn restart_of_all_nodes() {
    scenario("restart of all nodes", 219, 3, 1, 0x5eed_0004, |ctx| {
        for i in 0..3 {
            ctx.mesh.kill9(i);
        }
        ctx.report.faults.push("kill -9 n1 n2 n3".into());
        let down = ctx.ms(500, 1500);
        sleep(down);
        for i in 0..3 {
            ctx.mesh.start(i);
        }
        ctx.mesh.wait_all_alive();
    });
}

/// Each node in turn stopped (SIGTERM) and started again, a query while it is down.
#[test]
fn rolling_restart() {
    scenario("rolling restart", 220, 3, 1, 0x5eed_0005, |ctx| {
        let first = ctx.rng.range(0, 3) as usize;
        for step in 0..3 {
            let i = (first + step) % 3;
            let before = ctx.acked_so_far();
            ctx.mesh.stop(i);
            ctx.report
                .faults
                .push(format!("SIGTERM {}", ctx.mesh.name(i)));
            ctx.query_during_fault((i + 1) % 3, &[i], &before);
            ctx.mesh.start(i);
            ctx.mesh.wait_all_alive();
        }
    });
}

/// Two regions of two cut apart with nftables inside every namespace; both sides keep
/// taking writes; a global query from either side names the other side's nodes.
#[test]
fn region_partition() {
    require(&["nft"]);
    scenario("region partition", 221, 4, 2, 0x5eed_0006, |ctx| {
        let region = |k: usize| (k - 1) / 2; // n1 n2 | n3 n4
        let before = ctx.acked_so_far();
        for k in 1..=4 {
            let others: Vec<String> = (1..=4)
                .filter(|&j| region(j) != region(k))
                .map(|j| ctx.mesh.ip(j))
                .collect();
            for command in [
                "add table inet chaos".to_owned(),
                "add chain inet chaos input { type filter hook input priority 0 ; policy accept ; }"
                    .to_owned(),
                format!("add rule inet chaos input ip saddr {{ {} }} drop", others.join(", ")),
            ] {
                common::run_ok(ctx.mesh.exec_in(k, "nft").arg(&command));
            }
        }
        let cut = ctx.ms(3000, 5000);
        ctx.report
            .faults
            .push(format!("partition r1 / r2 for {:.1} s", cut.as_secs_f64()));
        sleep(cut);
        let from = ctx.rng.range(0, 4) as usize;
        let far: Vec<usize> = (0..4)
            .filter(|&i| region(i + 1) != region(from + 1))
            .collect();
        ctx.query_during_fault(from, &far, &before);
        for k in 1..=4 {
            common::run_ok(
                ctx.mesh
                    .exec_in(k, "nft")
                    .args(["delete", "table", "inet", "chaos"]),
            );
        }
        ctx.mesh.wait_all_alive();
    });
}
