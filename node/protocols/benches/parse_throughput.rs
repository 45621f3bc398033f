//! Parse throughput per protocol, on one thread: every recorded fixture of a protocol
//! (tests/fixtures), loaded once by the tests' own loaders, replayed over and over into
//! fresh `Conversation`s for a fixed time.
//!
//! `cargo bench -p flowmesh-protocols --bench parse_throughput [-- PROTOCOL...]`, with
//! `FLOWMESH_BENCH_SECONDS` (default 1) seconds per protocol. Prints a table, then one JSON
//! object a protocol.
//!
//! A replay is every socket of the protocol's fixtures seen from the client, with the first
//! 1 KiB of each syscall captured, as the kernel side captures by default. Its bytes are the
//! captured bytes, the ones the parsers read. Rates are given per second of wall time and
//! per second of this thread's CPU time (`/proc/thread-self/schedstat`); on a busy machine
//! only the second is steady. The benchmark stops if a socket yields no rows or a row of
//! another protocol, or if a replay yields another number of rows than the first did.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Udp, chunks, directions, fixture_dir, hex, nginx, recorded};
use flowmesh_protocols::{L7Protocol, L7Record};

/// Bytes captured per syscall (the capture's default).
const CAPTURE_BYTES: usize = 1024;

/// One recorded socket, as its loader gives it.
enum Socket {
    /// A TCP connection.
    Tcp(Vec<recorded::Recorded>),
    /// A TCP connection from a `.chunks` fixture, which keeps lengths apart from bytes.
    Chunks(Vec<chunks::Recorded>),
    /// A UDP socket: datagrams without sequence numbers.
    Udp(Vec<recorded::Recorded>),
}

impl Socket {
    /// Feeds the socket into a fresh `Conversation` and returns its rows.
    fn replay(&self) -> Vec<L7Record> {
        match self {
            Socket::Tcp(syscalls) => recorded::feed(syscalls, false, CAPTURE_BYTES).records,
            Socket::Chunks(syscalls) => chunks::replay(syscalls, false, CAPTURE_BYTES).records,
            Socket::Udp(datagrams) => {
                let (requests, responses) = directions(false);
                let mut udp = Udp::new();
                for (from_client, datagram) in datagrams {
                    let direction = if *from_client { requests } else { responses };
                    udp.send(direction, datagram, CAPTURE_BYTES);
                }
                udp.records
            }
        }
    }

    /// The bytes a replay hands to the parsers.
    fn captured_bytes(&self) -> u64 {
        let captured = |len: usize| len.min(CAPTURE_BYTES) as u64;
        match self {
            Socket::Tcp(syscalls) | Socket::Udp(syscalls) => syscalls
                .iter()
                .map(|(_, bytes)| captured(bytes.len()))
                .sum(),
            Socket::Chunks(syscalls) => syscalls
                .iter()
                .map(|syscall| captured(syscall.bytes.len()))
                .sum(),
        }
    }
}

/// One table line: a protocol and the sockets of its fixtures.
struct Protocol {
    name: &'static str,
    /// The protocols its rows may name.
    rows: &'static [L7Protocol],
    sockets: Vec<Socket>,
}

impl Protocol {
    /// Replays every socket once; returns the number of rows, checking that every socket
    /// gave some, all of this protocol.
    fn replay(&self) -> u64 {
        let mut rows = 0;
        for (i, socket) in self.sockets.iter().enumerate() {
            let records = socket.replay();
            assert!(
                !records.is_empty(),
                "{}: no rows from socket {i}",
                self.name
            );
            for record in &records {
                assert!(
                    self.rows.contains(&record.protocol),
                    "{}: a {:?} row from socket {i}",
                    self.name,
                    record.protocol
                );
            }
            rows += records.len() as u64;
        }
        rows
    }
}

/// The names (file names without `.ext`) of the fixtures in `tests/fixtures/<dir>`.
fn fixture_names(dir: &str, ext: &str) -> Vec<String> {
    let path = fixture_dir(dir);
    let suffix = format!(".{ext}");
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("failed to list {}: {e}", path.display()))
        .map(|entry| entry.expect("a directory entry").file_name())
        .filter_map(|file| Some(file.to_str()?.strip_suffix(&suffix)?.to_owned()))
        .collect();
    names.sort();
    assert!(
        !names.is_empty(),
        "no {suffix} fixtures in {}",
        path.display()
    );
    names
}

/// Every `.bin` fixture of `dir`, one TCP connection each.
fn bin_sockets(dir: &str) -> Vec<Socket> {
    fixture_names(dir, "bin")
        .iter()
        .map(|name| Socket::Tcp(recorded::load(dir, name)))
        .collect()
}

/// Every `.chunks` fixture of `dir`, one TCP connection each.
fn chunks_sockets(dir: &str) -> Vec<Socket> {
    fixture_names(dir, "chunks")
        .iter()
        .map(|name| Socket::Chunks(chunks::load(dir, name)))
        .collect()
}

/// The connections of `tests/fixtures/<dir>/<name>.txt`, made sockets by `socket`.
fn txt_sockets(
    dir: &str,
    name: &str,
    socket: fn(Vec<recorded::Recorded>) -> Socket,
) -> impl Iterator<Item = Socket> {
    hex::load(dir, name).into_iter().map(socket)
}

fn protocols() -> Vec<Protocol> {
    use L7Protocol::*;
    let http1 = fixture_names("http1", "request")
        .iter()
        .map(|name| {
            let (request, response) = nginx::load(name);
            Socket::Tcp(vec![(true, request), (false, response)])
        })
        .collect();
    let dns = txt_sockets("dns", "udp", Socket::Udp)
        .chain(txt_sockets("dns", "tcp", Socket::Tcp))
        .collect();
    let mqtt = fixture_names("mqtt", "txt")
        .iter()
        .flat_map(|name| txt_sockets("mqtt", name, Socket::Tcp))
        .collect();
    let protocol = |name, rows, sockets| Protocol {
        name,
        rows,
        sockets,
    };
    vec![
        protocol("http1", &[Http1], http1),
        protocol("http2/grpc", &[Http2, Grpc], bin_sockets("http2")),
        protocol("redis", &[Redis], chunks_sockets("redis")),
        protocol("memcached", &[Memcached], chunks_sockets("memcached")),
        protocol("mysql", &[MySql], bin_sockets("mysql")),
        protocol("postgres", &[PostgreSql], bin_sockets("postgres")),
        protocol("dns", &[Dns], dns),
        protocol("mqtt", &[Mqtt], mqtt),
        protocol("kafka", &[Kafka], bin_sockets("kafka")),
        protocol("mongodb", &[MongoDb], bin_sockets("mongodb")),
        protocol("amqp", &[Amqp], bin_sockets("amqp")),
        protocol("nats", &[Nats], bin_sockets("nats")),
        protocol("dubbo", &[Dubbo], bin_sockets("dubbo")),
    ]
}

/// This thread's CPU time in nanoseconds, where the kernel reports it.
fn thread_cpu_ns() -> Option<u64> {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    schedstat.split_whitespace().next()?.parse().ok()
}

struct Measurement {
    rows_per_replay: u64,
    bytes_per_replay: u64,
    replays: u64,
    wall: Duration,
    cpu: Option<Duration>,
}

fn measure(protocol: &Protocol, budget: Duration) -> Measurement {
    let rows_per_replay = protocol.replay();
    let cpu_start = thread_cpu_ns();
    let start = Instant::now();
    let mut replays = 0;
    while start.elapsed() < budget {
        let rows = protocol.replay();
        assert_eq!(
            rows, rows_per_replay,
            "{}: a replay gave another number of rows than the first",
            protocol.name
        );
        replays += 1;
    }
    let wall = start.elapsed();
    let cpu = cpu_start
        .zip(thread_cpu_ns())
        .map(|(start, end)| Duration::from_nanos(end - start));
    Measurement {
        rows_per_replay,
        bytes_per_replay: protocol.sockets.iter().map(Socket::captured_bytes).sum(),
        replays,
        wall,
        cpu,
    }
}

impl Measurement {
    fn rows_per_s(&self, time: Duration) -> f64 {
        (self.rows_per_replay * self.replays) as f64 / time.as_secs_f64()
    }

    fn mb_per_s(&self, time: Duration) -> f64 {
        (self.bytes_per_replay * self.replays) as f64 / time.as_secs_f64() / 1e6
    }

    /// Rows and MB per second of CPU time, and the share of the wall time the thread was
    /// on a CPU (below 1 when it waited for one).
    fn cpu_rates(&self) -> Option<(f64, f64, f64)> {
        let cpu = self.cpu?;
        let share = cpu.as_secs_f64() / self.wall.as_secs_f64();
        Some((self.rows_per_s(cpu), self.mb_per_s(cpu), share))
    }
}

const HEADER: [&str; 10] = [
    "protocol",
    "sockets",
    "rows/replay",
    "bytes/replay",
    "replays",
    "rows/s",
    "MB/s",
    "rows/cpu-s",
    "MB/cpu-s",
    "cpu/wall",
];

fn print_row(cells: [String; 10]) {
    let widths = [11, 7, 11, 12, 8, 10, 7, 10, 8, 8];
    let mut line = format!("{:<w$}", cells[0], w = widths[0]);
    for (cell, width) in cells.iter().zip(widths).skip(1) {
        line += &format!(" {cell:>width$}");
    }
    println!("{line}");
}

/// One JSON object with the figures of `protocol`.
fn json(protocol: &Protocol, m: &Measurement) -> String {
    let cpu = m.cpu_rates();
    let or_null = |value: Option<String>| value.unwrap_or_else(|| "null".to_owned());
    format!(
        concat!(
            r#"{{"protocol":"{}","sockets":{},"rows_per_replay":{},"bytes_per_replay":{},"#,
            r#""replays":{},"wall_s":{:.3},"cpu_s":{},"rows_per_s":{:.0},"mb_per_s":{:.3},"#,
            r#""rows_per_cpu_s":{},"mb_per_cpu_s":{}}}"#
        ),
        protocol.name,
        protocol.sockets.len(),
        m.rows_per_replay,
        m.bytes_per_replay,
        m.replays,
        m.wall.as_secs_f64(),
        or_null(m.cpu.map(|cpu| format!("{:.3}", cpu.as_secs_f64()))),
        m.rows_per_s(m.wall),
        m.mb_per_s(m.wall),
        or_null(cpu.map(|(rows, _, _)| format!("{rows:.0}"))),
        or_null(cpu.map(|(_, mb, _)| format!("{mb:.3}"))),
    )
}

/// `FLOWMESH_BENCH_SECONDS`, 1 when unset.
fn seconds_per_protocol() -> f64 {
    let Ok(text) = std::env::var("FLOWMESH_BENCH_SECONDS") else {
        return 1.0;
    };
    text.parse()
        .ok()
        .filter(|seconds: &f64| seconds.is_finite() && *seconds > 0.0)
        .unwrap_or_else(|| panic!("FLOWMESH_BENCH_SECONDS={text:?} is not a positive number"))
}

fn main() {
    let seconds = seconds_per_protocol();
    // cargo passes `--bench`; other arguments choose protocols by name ("http2" or "grpc"
    // for "http2/grpc")
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let is_wanted = |protocol: &Protocol| {
        wanted.is_empty()
            || protocol
                .name
                .split('/')
                .any(|name| wanted.iter().any(|w| w == name))
    };
    let protocols: Vec<Protocol> = protocols().into_iter().filter(is_wanted).collect();
    assert!(!protocols.is_empty(), "no protocol named {wanted:?}");

    println!(
        "parse throughput on one thread, {seconds} s per protocol: fixtures seen from the \
         client, {CAPTURE_BYTES} bytes captured per syscall"
    );
    print_row(HEADER.map(str::to_owned));
    let mut summary = Vec::new();
    for protocol in &protocols {
        let m = measure(protocol, Duration::from_secs_f64(seconds));
        let cpu = m.cpu_rates();
        let cpu_cell = |cell: fn((f64, f64, f64)) -> String| cpu.map_or("-".to_owned(), cell);
        print_row([
            protocol.name.to_owned(),
            protocol.sockets.len().to_string(),
            m.rows_per_replay.to_string(),
            m.bytes_per_replay.to_string(),
            m.replays.to_string(),
            format!("{:.0}", m.rows_per_s(m.wall)),
            format!("{:.1}", m.mb_per_s(m.wall)),
            cpu_cell(|(rows, _, _)| format!("{rows:.0}")),
            cpu_cell(|(_, mb, _)| format!("{mb:.1}")),
            cpu_cell(|(_, _, share)| format!("{share:.2}")),
        ]);
        summary.push(json(protocol, &m));
    }
    println!();
    for line in summary {
        println!("{line}");
    }
}
